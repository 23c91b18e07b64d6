"""Encryption at rest: the conformance suite through the sealing store, what the files
hold, crypto-shredding, key rotation, sealed exports and migration in and out."""

from __future__ import annotations

import json
import shutil
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from tests.servers import PostgresServer, free_port, start_redis

from chat_server import ChatServer
from memlane import Memory, MemoryInput
from memlane.ciphers import AesGcmCipher, Keyring, LocalMasterKey, generate_key
from memlane.cli import cli
from memlane.errors import ConfigurationError, DecryptionError, KeyDestroyedError
from memlane.llm import OpenAIChat
from memlane.manager import MemoryManager
from memlane.models import Filters
from memlane.ports.store import Store
from memlane.settings import Settings
from memlane.stores.memory import MemoryStore
from memlane.stores.postgres import PostgresStore
from memlane.stores.redis_tier import RedisTier
from memlane.stores.sealed import SealedStore
from memlane.stores.sqlite import SqliteStore
from memlane.testing import FakeEmbedder, StoreConformance
from memlane.transfer import write_jsonl


def _cipher(path: Path | None = None, key: str | None = None) -> AesGcmCipher:
    return AesGcmCipher(Keyring(path, LocalMasterKey.parse(key or generate_key())))


class TestSealedMemoryStore(StoreConformance):
    keeps_sparse_terms = False  # the terms are the text's words

    def make_store(self) -> Store:
        return SealedStore(MemoryStore(), _cipher())


class TestSealedSqliteFile(StoreConformance):
    keeps_sparse_terms = False  # the terms are the text's words

    @pytest.fixture(autouse=True)
    def _dir(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.n = 0

    def make_store(self) -> Store:
        self.n += 1
        return SealedStore(
            SqliteStore(self.dir / f"store{self.n}.db"), _cipher(self.dir / f"store{self.n}.keys")
        )


class TestSealedPostgres(StoreConformance):
    keeps_sparse_terms = False  # the terms are the text's words

    @pytest.fixture(autouse=True)
    def _server(self, postgres_server: PostgresServer) -> None:
        self.server = postgres_server

    def make_store(self) -> Store:
        store = PostgresStore(self.server.new_database("sealed"), max_connections=4)
        return SealedStore(store, _cipher())


class TestSealedRedisTier(StoreConformance):
    keeps_sparse_terms = False  # the terms are the text's words

    @pytest.fixture(autouse=True)
    def _setup(self, tmp_path: Path, redis_url: str) -> None:
        self.dir, self.redis_url, self.n = tmp_path, redis_url, 0

    def make_store(self) -> Store:
        self.n += 1
        prefix = f"memlane-test:{uuid.uuid4().hex}:"
        tier = RedisTier(SqliteStore(self.dir / f"s{self.n}.db"), self.redis_url, prefix=prefix)
        return SealedStore(tier, _cipher(self.dir / f"s{self.n}.keys"))


# ---------------------------------------------------------------------------- what files hold

SECRETS = ("Quetzalmarigold", "Xylophane77", "vermilion-okapi", "Brindlewick")
"""Distinctive words said through every path; none may reach a file in any form."""


def _hits(paths: list[Path]) -> dict[str, list[str]]:
    """Which secret (as written, lowercased or capitalized) each file holds."""
    found: dict[str, list[str]] = {}
    for root in paths:
        for path in [root] if root.is_file() else sorted(root.rglob("*")):
            if not path.is_file():
                continue
            data = path.read_bytes()
            for secret in SECRETS:
                forms = {secret, secret.lower(), secret.capitalize(), secret.split("-")[0]}
                if any(f.encode() in data for f in forms):
                    found.setdefault(secret, []).append(str(path.relative_to(root.parent)))
    return found


def _say_everything(m: Memory, server: ChatServer) -> None:
    q, x, v, b = SECRETS
    added = m.add(
        f"My pharmacist is {q} and my locker code is {x}",
        user_id="u",
        topics=[v],
        metadata={"doctor": b, "visits": 3},
        event_at=datetime(2024, 5, 7, tzinfo=UTC),
    )
    m.update(added.id, user_id="u", text=f"My pharmacist is {q}; locker code {x} changed")
    m.add_many([MemoryInput(text=f"the {v} sleeps at noon", kind="preference")], user_id="u")
    m.add_messages(
        "s1", [("user", f"call {b} tomorrow"), ("assistant", f"noted, {b}")], user_id="u"
    )
    m.set_state("s1", {"step": f"ask {q}", "note": [x]}, user_id="u", expected_version=0)
    m.remember("pharmacist", q, user_id="u")
    other = Memory("memory://", embedder=FakeEmbedder())  # an export made elsewhere, imported
    other.add(f"imported: {v} and {b}", user_id="u")
    m.import_rows(other.export_rows(user_id="u"))
    other.close()
    server.reset()
    server.queue(
        {
            "memories": [
                {"text": f"Sees {q} weekly", "kind": "fact", "topics": [v], "importance": 0.6}
            ]
        },
        {"decisions": [{"candidate": 0, "action": "ADD", "reason": f"new: {x}"}]},
        {"memories": []},
    )
    manager = MemoryManager(m, OpenAIChat(base_url=server.base_url, model="scripted"))
    manager.process([("user", f"I see {q} weekly")], user_id="u")
    manager.process_in_background([("user", f"and {b} on Fridays")], user_id="u")
    manager.flush()
    manager.close()


def test_no_secret_reaches_any_file_through_any_path(tmp_path: Path, server: ChatServer) -> None:
    folder = tmp_path / "store"
    keys = tmp_path / "keys" / "m.keys"
    port = free_port()
    (tmp_path / "redis").mkdir()
    redis_proc = start_redis(
        shutil.which("redis-server") or "redis-server", port, tmp_path / "redis"
    )
    try:
        redis_url = f"redis://127.0.0.1:{port}/0"
        store = RedisTier(SqliteStore(folder / "m.db"), redis_url)
        m = Memory(store, embedder=FakeEmbedder(), cipher=_cipher(keys))
        _say_everything(m, server)
        # Everything reads back as said, and search finds it by its words.
        q, x, v, b = SECRETS
        found = m.search(f"who is {q}?", user_id="u", recipe="lexical")
        assert found and q in found[0].record.text
        assert m.search(x, user_id="u", recipe="lexical")[0].record.text.endswith("changed")
        assert [r.text for r in m.list(user_id="u", filters=Filters(topics=(v,))).items]
        assert m.list(user_id="u", filters=Filters(metadata={"doctor": b})).items[0].metadata == {
            "doctor": b,
            "visits": 3,
        }
        assert m.recall("pharmacist", user_id="u") == q
        # The knowledge graph holds the names (sealed, found by blinded keys).
        assert {q, b} <= {e.name for e in m.entities(user_id="u")}
        assert m.mentions(user_id="u", entity=q.lower())
        assert m.get_state("s1", user_id="u").data == {"step": f"ask {q}", "note": [x]}
        history = m.get_history("s1", user_id="u")
        assert b in history[0].messages[0].content
        assert any(
            x in (e.snapshot or {}).get("text", "")
            for r in m.list(user_id="u").items
            for e in m.history(r.id, user_id="u")
        )
        export = tmp_path / "export.jsonl"
        with export.open("w") as out:
            write_jsonl(m.export_rows(), out)
        redis.Redis.from_url(redis_url).save()
        open_files = [folder, keys, tmp_path / "redis", export]
        assert _hits(open_files) == {}  # WAL and SHM included: the store is still open
        m.close()
        assert _hits(open_files) == {}
    finally:
        redis_proc.kill()
        redis_proc.wait()
    assert list(folder.glob("m.db*")) and (tmp_path / "redis" / "dump.rdb").exists()


# ---------------------------------------------------------------------------- keys


def _sealed_memory(folder: Path, keyring: Keyring) -> Memory:
    return Memory(str(folder / "m.db"), embedder=FakeEmbedder(), cipher=AesGcmCipher(keyring))


def _copy(folder: Path, to: Path) -> Path:
    """A file copy of a closed store: the database and its index folder."""
    shutil.copytree(folder, to)
    return to


def test_forgetting_a_user_leaves_every_copy_of_their_data_unreadable(tmp_path: Path) -> None:
    master = LocalMasterKey.parse(generate_key())
    keyring = Keyring(tmp_path / "m.keys", master)
    m = _sealed_memory(tmp_path / "live", keyring)
    m.add(f"my locker code is {SECRETS[1]}", user_id="gone")
    m.add_messages("s", [("user", f"remember {SECRETS[0]}")], user_id="gone")
    m.add("the office opens at nine", user_id="stays")
    m.close()
    backup = _copy(tmp_path / "live", tmp_path / "backup")
    m = _sealed_memory(tmp_path / "live", keyring)
    m.forget_user("gone")
    assert m.list_users() == ["stays"]
    m.close()
    # The backup, opened with the key material there is now: the forgotten user's rows
    # are still in it, and nothing opens them; the other user's are intact.
    old = _sealed_memory(backup, Keyring(tmp_path / "m.keys", master))
    assert "gone" in old.list_users()
    with pytest.raises(KeyDestroyedError):
        old.list(user_id="gone")
    with pytest.raises(KeyDestroyedError):
        old.get_history("s", user_id="gone")
    assert [r.text for r in old.list(user_id="stays").items] == ["the office opens at nine"]
    old.close()
    # Nor does the keyring file hold the destroyed key's bytes anywhere (secure delete).
    assert _hits([backup]) == {}
    # memlane's own system user keeps a key too: the store's mark is sealed under it.
    assert Keyring(tmp_path / "m.keys", master).names("user") == ["::memlane", "stays"]


def test_the_keyring_overwrites_a_destroyed_key(tmp_path: Path) -> None:
    master = LocalMasterKey.parse(generate_key())
    keyring = Keyring(tmp_path / "k.keys", master)
    keyring.get_or_create("user", "a")
    keyring.get_or_create("user", "b")
    with sqlite3.connect(tmp_path / "k.keys") as conn:
        wrapped_before = dict(conn.execute("SELECT name, wrapped FROM keys WHERE scope='user'"))
    assert keyring.destroy("user", "a") and not keyring.destroy("user", "a")
    keyring.close()
    data = (tmp_path / "k.keys").read_bytes()
    assert wrapped_before["a"] not in data and wrapped_before["b"] in data
    assert not list(tmp_path.glob("k.keys-*"))  # no journal or WAL left holding it


def test_rotating_the_master_key_rewraps_keys_and_leaves_the_data_alone(tmp_path: Path) -> None:
    old_key, new_key = generate_key(), generate_key()
    keys = tmp_path / "m.keys"
    m = _sealed_memory(tmp_path / "s", Keyring(keys, LocalMasterKey.parse(old_key)))
    m.add(f"locker {SECRETS[1]}", user_id="u")
    m.add("another note", user_id="v")
    m.close()
    before = (tmp_path / "s" / "m.db").read_bytes()
    ring = Keyring(keys, LocalMasterKey.parse(old_key))
    # Two users, memlane's system user (the store's mark) and the store key.
    assert ring.rotate(LocalMasterKey.parse(new_key)) == 4
    ring.close()
    assert (tmp_path / "s" / "m.db").read_bytes() == before
    m = _sealed_memory(tmp_path / "s", Keyring(keys, LocalMasterKey.parse(new_key)))
    assert [r.text for r in m.list(user_id="u").items] == [f"locker {SECRETS[1]}"]
    m.close()
    stale = _sealed_memory(tmp_path / "s", Keyring(keys, LocalMasterKey.parse(old_key)))
    with pytest.raises(DecryptionError, match="was not given"):
        stale.list(user_id="u")
    stale.close()
    # During a rotation a process can hold both keys and read either entry.
    both = Keyring(
        keys, LocalMasterKey.parse(generate_key()), previous=[LocalMasterKey.parse(new_key)]
    )
    assert both.get("user", "u") is not None


def test_a_wrong_master_key_or_altered_data_opens_nothing(tmp_path: Path) -> None:
    keys, master = tmp_path / "m.keys", generate_key()
    m = _sealed_memory(tmp_path / "s", Keyring(keys, LocalMasterKey.parse(master)))
    a = m.add("first private note", user_id="u")
    b = m.add("second private note", user_id="u")
    m.close()
    db = tmp_path / "s" / "m.db"
    with sqlite3.connect(db) as conn:  # move one memory's sealed part onto the other
        (meta,) = conn.execute("SELECT metadata FROM records WHERE id=?", (a.id,)).fetchone()
        conn.execute("UPDATE records SET metadata=? WHERE id=?", (meta, b.id))
    right = LocalMasterKey.parse(master)
    m = _sealed_memory(tmp_path / "s", Keyring(keys, right))
    assert m.get(a.id, user_id="u").text == "first private note"
    with pytest.raises(DecryptionError):  # sealed for a, not for b: it does not open there
        m.get(b.id, user_id="u")
    m.close()
    m = _sealed_memory(tmp_path / "s", Keyring(keys, LocalMasterKey.parse(generate_key())))
    with pytest.raises(DecryptionError):  # a master key that is not the keyring's
        m.get(a.id, user_id="u")
    m.close()


# ---------------------------------------------------------------------------- the CLI


def _cli(env: dict[str, str]):  # type: ignore[no-untyped-def]
    runner = CliRunner()

    def invoke(*args: str, ok: bool = True, **extra: str):  # type: ignore[no-untyped-def]
        result = runner.invoke(cli, list(args), env={"MEMLANE_EMBEDDER": "fake", **env, **extra})
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return invoke


def test_the_cli_encrypts_exports_sealed_and_migrates_in_and_out(tmp_path: Path) -> None:
    key = _cli({})("keys", "generate").output.strip()
    assert len(key) == 44 and key != _cli({})("keys", "generate").output.strip()
    plain, sealed, back = (f"sqlite:///{tmp_path}/{n}.db" for n in ("plain", "sealed", "back"))
    keyring = tmp_path / "secrets" / "m.keys"  # apart from the data folder
    run = _cli({"MEMLANE_MASTER_KEY": key, "MEMLANE_KEYRING": str(keyring)})
    # A plain store with two users, moved into encryption.
    _cli({})("--store", plain, "add", f"locker {SECRETS[1]}", "--user", "u")
    _cli({})("--store", plain, "add", "the office opens at nine", "--user", "v")
    moved = run("migrate", plain, sealed, "--encrypt", "--json")
    assert json.loads(moved.stdout)["ok"] is True
    assert keyring.exists()
    unkeyed = _cli({"MEMLANE_MASTER_KEY": key})("--store", sealed, "list", "--user", "u", ok=False)
    assert unkeyed.exit_code != 0 and "needs MEMLANE_KEYRING" in unkeyed.output
    assert _hits([tmp_path / "sealed.db"]) == {}
    found = json.loads(run("--store", sealed, "search", SECRETS[1], "--user", "u", "--json").output)
    assert found[0]["record"]["text"] == f"locker {SECRETS[1]}"
    # Exports are sealed unless asked; a sealed export imports only with the keyring.
    export = run("--store", sealed, "export").stdout
    assert SECRETS[1] not in export and '"sealed"' in export
    assert SECRETS[1] in run("--store", sealed, "export", "--plaintext").output
    (tmp_path / "x.jsonl").write_text(export)
    refused = _cli({})("--store", back, "import", str(tmp_path / "x.jsonl"), ok=False)
    assert refused.exit_code != 0 and "master key" in refused.output
    # And out of encryption again, verified row by row.
    out = run("migrate", sealed, back, "--decrypt", "--json")
    assert json.loads(out.stdout)["ok"] is True
    texts = _cli({})("--store", back, "list", "--user", "u", "--json").output
    assert SECRETS[1] in texts
    # Without the master key the sealed store is refused, for reads and for writes.
    for args in (("list", "--user", "u"), ("add", "left in the clear", "--user", "u")):
        refused = _cli({})("--store", sealed, *args, ok=False)
        assert refused.exit_code != 0 and "is encrypted" in refused.output


def test_the_cli_rotates_the_master_key(tmp_path: Path) -> None:
    old, new = generate_key(), generate_key()
    store = f"sqlite:///{tmp_path}/m.db"
    ring = {"MEMLANE_KEYRING": str(tmp_path / "secrets" / "m.keys")}
    _cli({"MEMLANE_MASTER_KEY": old, **ring})(
        "--store", store, "add", "a private note", "--user", "u"
    )
    (tmp_path / "new.key").write_text(new + "\n")
    done = _cli({"MEMLANE_MASTER_KEY": old, **ring})(
        "--store", store, "keys", "rotate", "--new-key-file", str(tmp_path / "new.key")
    )
    assert "rewrapped 3 keys" in done.output  # the user's, memlane's own and the store's
    listed = _cli({"MEMLANE_MASTER_KEY_FILE": str(tmp_path / "new.key"), **ring})(
        "--store", store, "list", "--user", "u", "--json"
    )
    assert "a private note" in listed.output
    stale = _cli({"MEMLANE_MASTER_KEY": old, **ring})(
        "--store", store, "list", "--user", "u", ok=False
    )
    assert stale.exit_code != 0 and "was not given" in stale.output


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MEMLANE_MASTER_KEY": "too-short"}, "MEMLANE_MASTER_KEY is not a 32-byte key"),
        ({"MEMLANE_KEYRING": "/nowhere/k.keys"}, "without a master key"),
        (
            {"MEMLANE_MASTER_KEY": generate_key(), "MEMLANE_STORE": "postgresql://u@h/db"},
            "needs MEMLANE_KEYRING",
        ),
        ({"MEMLANE_MASTER_KEY_FILE": "/nowhere/master.key"}, "cannot read the master key file"),
    ],
)
def test_bad_encryption_settings_are_refused_clearly(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        Settings.from_env(env).build_cipher()
    assert "too-short" not in str(caught.value)
    assert "'***'" in repr(Settings.from_env({"MEMLANE_MASTER_KEY": "secret-value"}))


# ---------------------------------------------------------------------------- search


ORDINARY = (
    "I'm vegetarian",
    "Also remind me to bring the gift",
    "My sister lives in Lisbon and visits in June",
    "Allergic to peanuts, carries an epipen",
    "Prefers short answers without emojis",
    "Runs 10 km every Sunday morning",
    "Working on the quarterly budget report for the finance team",
    "Favourite cuisine is Japanese, especially ramen",
)


@pytest.mark.parametrize("recipe", ["lexical", "hybrid", "semantic"])
def test_a_sealed_store_ranks_as_a_plain_one(tmp_path: Path, recipe: str) -> None:
    # Sealing changes no ranking: compared with a plain store without the sparse terms an
    # encrypted store cannot keep (tests/test_sparse.py)
    plain = Memory(str(tmp_path / "plain.db"), embedder=FakeEmbedder(), sparse=None)
    sealed = Memory(str(tmp_path / "sealed.db"), embedder=FakeEmbedder(), cipher=_cipher(None))
    for m in (plain, sealed):
        m.add_many([MemoryInput(text=t) for t in ORDINARY], user_id="u")
    queries = ("what should I cook?", "vegetarian food", "peanut allergy", "my sister", "running")
    for query in queries:
        a = [
            (h.record.text, round(h.score, 9))
            for h in plain.search(query, user_id="u", recipe=recipe)
        ]
        b = [
            (h.record.text, round(h.score, 9))
            for h in sealed.search(query, user_id="u", recipe=recipe)
        ]
        assert a == b, query
    found = sealed.search("vegetarian food", user_id="u", recipe=recipe)
    assert found[0].record.text == "I'm vegetarian"
    plain.close()
    sealed.close()


def test_blinded_words_match_only_under_their_users_key(tmp_path: Path) -> None:
    m = Memory(str(tmp_path / "m.db"), embedder=FakeEmbedder(), cipher=_cipher(tmp_path / "k"))
    m.add("the zeppelin hangar is at gate nine", user_id="a")
    m.add("the zeppelin is grounded", user_id="b")
    found = {u: m.search("zeppelin", user_id=u, recipe="lexical") for u in ("a", "b")}
    assert [h.record.user_id for h in found["a"]] == ["a"]
    assert [h.record.user_id for h in found["b"]] == ["b"]
    with sqlite3.connect(tmp_path / "m.db") as conn:
        texts = dict(conn.execute("SELECT user_id, text FROM records"))
    assert texts["a"].split()[1] != texts["b"].split()[1]  # "zeppelin" differs per user
    assert all(word.isdigit() for text in texts.values() for word in text.split())
    m.close()


def test_a_key_destroyed_by_another_process_is_never_served_from_memory(tmp_path: Path) -> None:
    master = LocalMasterKey.parse(generate_key())
    here, there = Keyring(tmp_path / "k.keys", master), Keyring(tmp_path / "k.keys", master)
    made = here.get_or_create("user", "u")
    assert here.get("user", "u") == made == there.get("user", "u")  # both remember it
    assert there.destroy("user", "u")
    assert here.get("user", "u") is None  # the file changed: not the remembered key
    again = there.get_or_create("user", "u")
    assert again != made and here.get("user", "u") == again
    here.close()
    there.close()
