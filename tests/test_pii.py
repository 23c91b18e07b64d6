"""PII policies: the built-in detectors on known positives and look-alikes, and the policy
applied before anything is stored, on a real SQLite file (every file it wrote searched for
the raw values), through every write path: add, update, add_messages, state, remember,
import, and the memory manager against the loopback chat server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chat_server import ChatServer
from memlane import CoreConfig, Memory, MemoryInput, PiiPolicy, PiiRefusedError
from memlane.errors import ValidationError
from memlane.llm import OpenAIChat
from memlane.manager import MemoryManager
from memlane.pii import Span, find, iban, luhn
from memlane.testing import FakeEmbedder

KEY = b"0123456789abcdef-test-key"
TOKEN = "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("write to jane.doe+work@example.co.uk soon", "email", "jane.doe+work@example.co.uk"),
        ("card 4111 1111 1111 1111 on file", "card", "4111 1111 1111 1111"),
        ("paid with 5500-0000-0000-0004", "card", "5500-0000-0000-0004"),
        ("IBAN DE89 3704 0044 0532 0130 00 for rent", "iban", "DE89 3704 0044 0532 0130 00"),
        ("GB82WEST12345698765432", "iban", "GB82WEST12345698765432"),
        ("SSN 123-45-6789", "ssn", "123-45-6789"),
        ("the box is at 192.168.1.20 now", "ip", "192.168.1.20"),
        ("v6 2001:db8::8a2e:370:7334 here", "ip", "2001:db8::8a2e:370:7334"),
        ("call +1 415 555 0134 tomorrow", "phone", "+1 415 555 0134"),
        ("office (020) 7946 0958", "phone", "(020) 7946 0958"),
        ("key sk-proj-abcDEF1234567890ghijKLMN ok", "secret", "sk-proj-abcDEF1234567890ghijKLMN"),
        ("AKIAIOSFODNN7EXAMPLE leaked", "secret", "AKIAIOSFODNN7EXAMPLE"),
        ("my password is hunter2!", "secret", "hunter2!"),
        (f"token: {TOKEN}", "secret", TOKEN),
        ("db postgresql://app:hunter2pass@db.example.com/x", "secret", "hunter2pass"),
        ("my ssn is 123 45 6789", "ssn", "123 45 6789"),
        ("iban de89 3704 0044 0532 0130 00 for rent", "iban", "de89 3704 0044 0532 0130 00"),
        ("mobile 07700 900123", "phone", "07700 900123"),
        ("server 10.0.0.1:8080 is up", "ip", "10.0.0.1"),
    ],
)  # fmt: skip
def test_each_kind_is_found(text: str, kind: str, value: str) -> None:
    spans = find(text)
    assert [(s.kind, text[s.start : s.end]) for s in spans] == [(kind, value)]


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 fails its Luhn digit",
        "IBAN DE89 3704 0044 0532 0130 01 fails its checksum",
        "SSN 000-12-3456 and 666-12-3456 were never issued",
        "we met on 2023-05-08 at 10:30 and paid 1 000 000",
        "version 1.2.3 of the app, and 300.1.1.1 is no address",
        "commit 3f9a1c0b2e4d5f60718293a4b5c6d7e8f9012345 fixed it",
        "order 12345 shipped; room 404; call me at 5 pm",
        "I went to the LGBTQ support group yesterday with my 3 kids.",
        "The password is stored in the vault now.",
        "My password is invalid, the token is missing, the secret is patience.",
        "Version 10.2.3.4 is out; batch 2023-11-05-007 passed QA; SKU 4006381333931.",
        "The lottery numbers were 12 23 34 45 56 61 and the meeting id 845 1234 5678.",
    ],
)
def test_look_alikes_are_not_personal_data(text: str) -> None:
    assert find(text) == []


def test_checksums() -> None:
    assert luhn("4111111111111111") and not luhn("4111111111111112")
    assert not luhn("0000000000000000")  # one digit repeated: a placeholder
    assert iban("FR14 2004 1010 0505 0001 3M02 606") and not iban(
        "FR14 2004 1010 0505 0001 3M02 607"
    )


def test_a_policy_masks_pseudonymizes_keeps_and_refuses() -> None:
    policy = PiiPolicy({"email": "pseudonymize", "card": "mask", "secret": "refuse"}, key=KEY)
    out = policy.apply("Jane.Doe@Example.com, jane.doe@example.com; card 4111-1111-1111-1111")
    token = out.split(",")[0]
    assert token.startswith("[EMAIL:") and out.count(token) == 2  # the same address twice
    assert "[CARD]" in out and "4111" not in out and "example" not in out.lower()
    with pytest.raises(PiiRefusedError, match="secret") as refused:
        policy.apply("my password is hunter22")
    assert "hunter22" not in str(refused.value)
    other = PiiPolicy({"email": "pseudonymize"}, key=b"another key, 16+ bytes")
    assert other.apply("jane.doe@example.com") != policy.apply("jane.doe@example.com")
    assert PiiPolicy().apply("jane.doe@example.com") == "jane.doe@example.com"  # keep


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ValidationError, match="one of"):
        PiiPolicy({"email": "shred"})  # type: ignore[dict-item]
    with pytest.raises(ValidationError, match="key"):
        PiiPolicy({"email": "pseudonymize"})
    with pytest.raises(ValidationError, match="key"):
        PiiPolicy(default="pseudonymize", key=b"short")
    with pytest.raises(ValidationError, match="detector"):
        PiiPolicy(detectors=[object()])  # type: ignore[list-item]


def test_a_detector_of_ones_own_plugs_in() -> None:
    class CustomerNumbers:
        kind = "customer"

        def find(self, text: str) -> list[Span]:
            at = text.find("CUST-")
            return [] if at < 0 else [Span(self.kind, at, at + 11)]

    policy = PiiPolicy({"customer": "mask"}, detectors=[CustomerNumbers()])
    assert policy.apply("ticket from CUST-004211 today") == "ticket from [CUSTOMER] today"


SECRETS = {
    "email": "zora.quill@example.org",
    "card": "4539 1488 0343 6467",
    "iban": "GB82 WEST 1234 5698 7654 32",
    "phone": "+44 20 7946 0991",
}
POLICY = PiiPolicy(
    {"email": "pseudonymize", "card": "mask", "iban": "mask", "phone": "mask", "secret": "refuse"},
    key=KEY,
)


def _raw_hits(folder: Path) -> dict[str, list[str]]:
    """Which raw values appear in which file the store wrote (db, WAL, index folder)."""
    found: dict[str, list[str]] = {}
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for name, value in SECRETS.items():
                for form in {value, value.replace(" ", "")}:
                    if form.encode() in data:
                        found.setdefault(name, []).append(path.name)
    return found


def test_nothing_the_policy_masks_reaches_any_file(tmp_path: Path, server: ChatServer) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    m = Memory(f"sqlite:///{folder}/m.db", embedder=FakeEmbedder(), config=CoreConfig(pii=POLICY))
    said = " ".join(f"my {k} is {v}." for k, v in SECRETS.items())
    added = m.add(said, user_id="u", metadata={"note": f"card {SECRETS['card']}"})
    m.add_many([MemoryInput(text=f"backup email {SECRETS['email']}")], user_id="u")
    m.update(added.id, user_id="u", text=f"now: {said}")
    m.add_messages("s1", [("user", said), ("assistant", "noted")], user_id="u")
    m.set_state("s1", {"contact": {"phone": SECRETS["phone"]}}, user_id="u", expected_version=0)
    m.remember("billing", SECRETS["iban"], user_id="u")
    rows = _export(m, "u")
    other = Memory("memory://", embedder=FakeEmbedder())  # an export made without a policy
    other.add(f"old card {SECRETS['card']}", user_id="u")
    m.import_rows(_export(other, "u"))
    server.reset()
    server.queue(
        {
            "memories": [
                {"text": "Their IBAN is noted", "kind": "fact", "topics": [], "importance": 0.6}
            ]
        },
        {"decisions": [{"candidate": 0, "action": "ADD", "reason": "new"}]},
    )
    manager = MemoryManager(m, OpenAIChat(base_url=server.base_url, model="scripted"))
    manager.process([("user", said)], user_id="u")
    manager.close()
    sent = json.dumps(server.requests)
    assert not [v for v in SECRETS.values() if v in sent]  # the model saw no raw value
    assert "[EMAIL:" in json.dumps(rows)
    found = m.search(f"what is {SECRETS['email']}?", user_id="u", limit=3, recipe="lexical")
    assert found and "[EMAIL:" in found[0].record.text  # the query got the same pseudonym
    m.close()
    other.close()
    assert _raw_hits(folder) == {}


def _export(m: Memory, user_id: str) -> list[dict[str, object]]:
    return list(m.export_rows(user_id=user_id))


def test_a_refused_kind_stores_nothing(tmp_path: Path) -> None:
    m = Memory(f"sqlite:///{tmp_path}/m.db", embedder=FakeEmbedder(), config=CoreConfig(pii=POLICY))
    m.add("a harmless fact", user_id="u")
    for attempt in (
        lambda: m.add("my password is swordfish42", user_id="u"),
        lambda: m.add_messages("s", [("user", f"token: {TOKEN}")], user_id="u"),
        lambda: m.set_state("s", {"k": "AKIAIOSFODNN7EXAMPLE"}, user_id="u", expected_version=0),
        lambda: m.add("fine text", user_id="u", metadata={"pw": "password: swordfish42"}),
    ):  # fmt: skip
        with pytest.raises(PiiRefusedError):
            attempt()
    assert [r.text for r in m.list(user_id="u").items] == ["a harmless fact"]
    assert m.get_history("s", user_id="u") == []
    m.close()


def test_each_scope_has_its_own_policy(tmp_path: Path) -> None:
    strict = PiiPolicy(default="mask")
    config = CoreConfig(pii=lambda user_id: strict if user_id.startswith("eu-") else None)
    m = Memory(f"sqlite:///{tmp_path}/m.db", embedder=FakeEmbedder(), config=config)
    text = f"reach me at {SECRETS['email']}"
    assert m.add(text, user_id="eu-anna").text == "reach me at [EMAIL]"
    assert m.add(text, user_id="us-bob").text == text
    m.close()


class RecordingEmbedder(FakeEmbedder):
    """The fake embedder, keeping every text it was asked to embed."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def embed(self, texts):  # type: ignore[no-untyped-def]
        self.seen.extend(texts)
        return super().embed(texts)


def test_numbers_keys_topics_and_queries_go_through_the_policy(tmp_path: Path) -> None:
    embedder = RecordingEmbedder()
    m = Memory(f"sqlite:///{tmp_path}/m.db", embedder=embedder, config=CoreConfig(pii=POLICY))
    card_number = int(SECRETS["card"].replace(" ", ""))
    saved = m.add(
        "billing details",
        user_id="u",
        metadata={"card": card_number, "4539 1488 0343 6467": 1, "5500 0000 0000 0004": 2},
        topics=[SECRETS["email"]],
    )
    assert saved.metadata == {"card": "[CARD]", "[CARD]": 1, "[CARD] 2": 2}
    assert saved.topics[0].startswith("[EMAIL:")
    m.set_state("s", {"n": card_number}, user_id="u", expected_version=0)
    assert m.get_state("s", user_id="u").data == {"n": "[CARD]"}
    m.remember("card", card_number, user_id="u")
    assert m.recall("card", user_id="u") == "[CARD]"
    m.search(f"card {SECRETS['card']} or password: swordfish42?", user_id="u")
    assert not [t for t in embedder.seen if "4539" in t or "swordfish42" in t]
    m.close()


def test_pseudonyms_tell_values_apart_and_spellings_together() -> None:
    policy = PiiPolicy(default="pseudonymize", key=KEY)
    assert policy.apply("jane.doe@example.com") != policy.apply("janedoe@example.com")
    assert policy.apply("JANE.DOE@example.com") == policy.apply("jane.doe@example.com")
    assert policy.apply("1.11.1.1") != policy.apply("11.1.1.1")
    card_ascii = "4111 1111 1111 1111"
    card_wide = card_ascii.translate({c: c + 0xFEE0 for c in range(ord("0"), ord("9") + 1)})
    assert (
        policy.apply(card_ascii) == policy.apply(card_wide) == policy.apply("4111-1111-1111-1111")
    )


def test_a_model_decision_goes_through_the_policy(tmp_path: Path, server: ChatServer) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    m = Memory(f"sqlite:///{folder}/m.db", embedder=FakeEmbedder(), config=CoreConfig(pii=POLICY))
    manager = MemoryManager(m, OpenAIChat(base_url=server.base_url, model="scripted"))
    old = m.add("The user's address is unknown", user_id="u")
    server.reset()
    refine = f"The user's mail is {SECRETS['email']}, phone {SECRETS['phone']}"
    found = {"text": "the user gave a mail address", "kind": "fact", "topics": [SECRETS["iban"]]}
    decided = {"candidate": 0, "action": "UPDATE", "target": 0, "mode": "refine", "text": refine}
    server.queue({"memories": [found]}, {"decisions": [{**decided, "reason": "more"}]})
    manager.process([("user", "here is how to reach me")], user_id="u")
    stored = m.get(old.id, user_id="u")
    assert stored.version == 2 and "[EMAIL:" in stored.text and "[PHONE]" in stored.text
    manager.close()
    m.close()
    assert _raw_hits(folder) == {}


def test_a_background_job_stores_its_messages_as_the_policy_does(
    tmp_path: Path, server: ChatServer
) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    m = Memory(f"sqlite:///{folder}/m.db", embedder=FakeEmbedder(), config=CoreConfig(pii=POLICY))
    manager = MemoryManager(m, OpenAIChat(base_url=server.base_url, model="scripted"))
    server.reset()
    server.queue({"memories": []})  # the pass the job runs: nothing to learn
    job = manager.process_in_background([("user", f"card {SECRETS['card']}")], user_id="u")
    assert "[CARD]" in json.dumps(job.payload)
    with pytest.raises(PiiRefusedError):  # a refused kind is not even queued
        manager.process_in_background([("user", "my password is swordfish42")], user_id="u")
    manager.flush()
    manager.close()
    m.close()
    assert _raw_hits(folder) == {}


@pytest.mark.parametrize(
    "chunk", ["+1" + "2" * 30 + "x ", "+123" + "4" * 30 + "- ", "+1 (" + "5" * 20 + "y "]
)
def test_an_adversarial_text_is_not_a_denial_of_service(chunk: str) -> None:
    """Runs of digits a pattern could split many ways (5 s a text before a fix, 0.01 s
    after): a generous bound, to catch catastrophic backtracking coming back."""
    import time

    text = (chunk * (20_000 // len(chunk)))[:20_000]
    began = time.perf_counter()
    find(text)
    assert time.perf_counter() - began < 1.0


def test_a_card_number_stored_as_a_float_is_a_card_number() -> None:
    policy = PiiPolicy({"card": "mask"})
    assert policy.apply_json({"n": 4.539148803436467e15, "ok": True, "x": 2.5}, "metadata") == {
        "n": "[CARD]",
        "ok": True,
        "x": 2.5,
    }


def test_the_environment_names_a_policy_for_the_cli_and_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from memlane.cli import cli
    from memlane.errors import ConfigurationError
    from memlane.settings import Settings, pii_policy

    policy = pii_policy(" email = pseudonymize, card=mask ,default=keep", "k" * 16)
    assert policy.action("email") == "pseudonymize" and policy.action("ip") == "keep"
    for bad in ("email", "email=shred", "=mask"):
        with pytest.raises(ConfigurationError, match="kind=action"):
            pii_policy(bad, None)
    with pytest.raises(ConfigurationError, match="MEMLANE_PII_KEY"):
        pii_policy("email=pseudonymize", "short")
    env = {"MEMLANE_PII": "card=mask", "MEMLANE_PII_KEY": "do-not-print-me-0123"}
    assert "do-not-print-me" not in repr(Settings.from_env(env))
    monkeypatch.setenv("MEMLANE_EMBEDDER", "fake")
    monkeypatch.setenv("MEMLANE_PII", "card=mask,secret=refuse")
    store = ["--store", f"sqlite:///{tmp_path}/cli.db"]
    runner = CliRunner()
    added = runner.invoke(cli, [*store, "add", f"card {SECRETS['card']}", "--user", "u"])
    assert added.exit_code == 0, added.output
    listed = runner.invoke(cli, [*store, "list", "--user", "u", "--json"])
    assert "[CARD]" in listed.output and "4539" not in listed.output
    refused = runner.invoke(cli, [*store, "add", "my password is swordfish42", "--user", "u"])
    assert refused.exit_code != 0 and "secret" in refused.output
    assert "swordfish42" not in refused.output
