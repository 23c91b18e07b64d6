"""Encryption at rest under attack: secrets said through the adapters, the REST API and
MCP reach no file; a wrong master key or keyring writes nothing; a forget cut short or
raced by another writer; a rotation while another process runs; swapped index columns.

Each test is one way someone could try to break the promises of
:mod:`memlane.stores.sealed` and :mod:`memlane.ciphers` (README "Privacy and security").
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import tempfile
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from chat_server import ChatServer
from memlane import AsyncMemory, Memory
from memlane.ciphers import AesGcmCipher, Keyring, LocalMasterKey, generate_key
from memlane.errors import ConfigurationError, DecryptionError, EncryptionError
from memlane.llm import OpenAIChat
from memlane.manager import MemoryManager
from memlane.testing import FakeEmbedder

SECRETS = (
    "Quagmirehollow",
    "Zenobiaflint",
    "Marrowdeepvale",
    "Thistlewhorl",
    "Pennywhistlebay",
    "Okeechobrine",
    "Vastergrimm",
    "Juniperquell",
    "Halcyonrift",
    "Brackenmoor",
)
"""One distinctive word per path; none may reach a file in any form."""


def _hits(root: Path) -> dict[str, list[str]]:
    """Which secret (as written, lower, upper or capitalized; UTF-8 or UTF-16) each file
    under ``root`` holds."""
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        for secret in SECRETS:
            forms = {secret, secret.lower(), secret.upper(), secret.capitalize()}
            encoded = [f.encode(codec) for f in forms for codec in ("utf-8", "utf-16-le")]
            if any(e in data for e in encoded):
                found.setdefault(secret, []).append(str(path.relative_to(root)))
    return found


def _master(text: str | None = None) -> LocalMasterKey:
    return LocalMasterKey.parse(text or generate_key())


# ---------------------------------------------------------------------------- what files hold


def _through_the_adapters(m: Memory) -> None:
    """Secrets 0-3 through LangGraph, Agno, LangChain and the OpenAI Agents SDK."""
    from agno.db.schemas.memory import UserMemory
    from agno.session import AgentSession

    from memlane.integrations.agno import MemlaneDb
    from memlane.integrations.langchain import MemlaneChatMessageHistory
    from memlane.integrations.langgraph import MemlaneStore
    from memlane.integrations.openai_agents import MemlaneSession

    lg, ag, lc, oa = SECRETS[:4]
    store = MemlaneStore(m)
    store.put(("u", "notes"), f"key-{lg}", {"text": f"lives by {lg}", "tag": lg})
    assert store.get(("u", "notes"), f"key-{lg}").value["tag"] == lg  # type: ignore[union-attr]
    db = MemlaneDb(m)
    db.upsert_user_memory(UserMemory(memory=f"friend of {ag}", user_id="u", topics=[ag]))
    db.upsert_session(
        AgentSession(session_id="agno", agent_id="a", user_id="u", session_data={"n": ag})
    )
    said = [{"role": "user", "content": f"hi {ag}"}]
    run = {"run_id": "r1", "agent_id": "a", "session_id": "agno", "status": "COMPLETED",
           "content": f"told {ag}", "messages": said}  # fmt: skip
    db.upsert_run(run, session_id="agno", user_id="u", run_index=0)
    with pytest.warns(DeprecationWarning):
        history = MemlaneChatMessageHistory(memory=m, user_id="u", session_id="lc")
    from langchain_core.messages import AIMessage, HumanMessage

    history.add_messages([HumanMessage(f"about {lc}"), AIMessage(f"noted {lc}")])
    session = MemlaneSession("oa", m, user_id="u")
    asyncio.run(session.add_items([{"role": "user", "content": f"ask {oa}"}]))
    assert oa in json.dumps(asyncio.run(session.get_items()))


def _through_the_server(m: AsyncMemory, blocking: Memory, chat: ChatServer) -> None:
    """Secrets 4-7 through the REST API (and its memory manager) and MCP."""
    from fastapi.testclient import TestClient
    from mcp import Client

    from memlane.server import KeyStore, create_app
    from memlane.server.mcp import build_mcp, stdio_resolver

    rest, reason, learned, mcp = SECRETS[4:8]
    manager = MemoryManager(blocking, OpenAIChat(base_url=chat.base_url, model="scripted"))
    keys = KeyStore(m.store)
    key, _ = keys.create("acme")
    app = create_app(m, keys, manager=manager, mcp=False)
    h = {"Authorization": f"Bearer {key}"}
    u = "/v1/users/ann"
    with TestClient(app) as client:
        made = client.post(
            f"{u}/memories",
            headers=h,
            json={"text": f"at {rest}", "topics": [rest], "metadata": {"place": rest}},
        )
        assert made.status_code == 201, made.text
        mid = made.json()["id"]
        new = client.post(
            f"{u}/memories/{mid}/supersede",
            headers=h,
            json={"text": f"near {rest}", "reason": reason},
        ).json()
        client.delete(f"{u}/memories/{new['id']}", headers=h, params={"reason": reason})
        said = [{"role": "user", "content": f"my {rest}"}]
        client.post(f"{u}/sessions/s/messages", headers=h, json={"messages": said})
        client.put(
            f"{u}/sessions/s/state", headers=h, json={"data": {"p": rest}, "expected_version": 0}
        )
        chat.reset()
        chat.queue({"summary": f"ann said {rest}"})  # the manager's model summarizes
        client.post(f"{u}/sessions/s/summary", headers=h)
        chat.queue(
            {"memories": [{"text": f"Knows {learned}", "kind": "fact", "topics": [learned]}]},
            {"decisions": [{"candidate": 0, "action": "ADD", "reason": f"new {learned}"}]},
        )
        learn = [{"role": "user", "content": f"I know {learned}"}]
        job = client.post(f"{u}/learn", headers=h, json={"messages": learn}).json()
        manager.flush()
        done = client.get(f"{u}/jobs/{job['id']}", headers=h).json()
        assert done["status"] == "done", done
    manager.close()

    async def tools() -> None:
        async with Client(build_mcp(m, stdio_resolver("mo"))) as c:
            added = await c.call_tool("add_memory", {"text": f"with {mcp}", "topics": [mcp]})
            assert not added.is_error, added.content
            kept = await c.call_tool("remember", {"key": f"k-{mcp}", "value": mcp})
            assert not kept.is_error, kept.content

    asyncio.run(tools())


def _through_the_core(m: Memory) -> None:
    """Secrets 8-9 through workflows, summaries and keyed facts."""
    wf, fact = SECRETS[8:]
    m.save_workflow(
        "w", user_id="c", session_id="s", step="one", data={"x": wf}, expected_version=0
    )
    m.add_messages("s", [{"role": "user", "content": wf, "metadata": {"m": wf}}], user_id="c")
    m.summarize_session("s", user_id="c")
    m.remember("diet", fact, user_id="c", category=fact)


def test_no_secret_reaches_a_file_through_the_adapters_the_server_or_mcp(
    tmp_path: Path, server: ChatServer
) -> None:
    folder = tmp_path / "store"
    master = _master()
    cipher = AesGcmCipher(Keyring(folder / "m.keys", master))
    m = Memory(str(folder / "m.db"), embedder=FakeEmbedder(), cipher=cipher)
    _through_the_adapters(m)
    _through_the_core(m)
    am = AsyncMemory(m.store, embedder=m.embedder, cipher=cipher)
    _through_the_server(am, Memory(m.store, embedder=m.embedder), server)
    assert _hits(folder) == {}  # the store still open: WAL and SHM included
    found = m.search(SECRETS[4], user_id="acme::ann", recipe="lexical")
    assert found and SECRETS[4] in found[0].record.text
    assert m.recall("diet", user_id="c") == SECRETS[9]
    m.close()
    assert _hits(folder) == {}


def test_no_secret_reaches_a_file_of_postgresql(tmp_path: Path) -> None:
    from tests.servers import start_postgres

    from memlane.stores.postgres import PostgresStore

    # A server of its own, so its files hold only this test's writes (the tests' shared
    # one holds every module's plaintext); outside pytest's 0700 tmp, as tests/servers.py.
    root = Path(tempfile.mkdtemp(prefix="memlane-pg-"))
    server = start_postgres(root)
    try:
        cipher = AesGcmCipher(Keyring(tmp_path / "m.keys", _master()))
        store = PostgresStore(server.new_database("sealed"))
        m = Memory(store, embedder=FakeEmbedder(), cipher=cipher)
        note = m.add(
            f"at {SECRETS[0]}", user_id="c", topics=[SECRETS[1]], metadata={"k": SECRETS[2]}
        )
        m.update(note.id, user_id="c", text=f"by {SECRETS[0]}", reason=SECRETS[3])
        _through_the_core(m)
        assert m.search(SECRETS[0], user_id="c", recipe="lexical")[0].record.id == note.id
        with psycopg.connect(server.uri, autocommit=True) as conn:
            conn.execute("CHECKPOINT")  # the tables' files as well as the WAL
        m.close()
        assert _hits(root) == {}
    finally:
        server.handle.cleanup()  # type: ignore[attr-defined]
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------- wrong key material


def _memory(folder: Path, keyring: Keyring) -> Memory:
    return Memory(str(folder / "m.db"), embedder=FakeEmbedder(), cipher=AesGcmCipher(keyring))


def test_a_wrong_master_key_makes_no_key_for_a_new_user(tmp_path: Path) -> None:
    keys, right = tmp_path / "m.keys", generate_key()
    m = _memory(tmp_path, Keyring(keys, _master(right)))
    m.add("the office opens at nine", user_id="a")
    m.close()
    # A typo'd or stale MEMLANE_MASTER_KEY: reads fail loudly, and a write for a user
    # with no key yet must too, or it is sealed under a key the right master cannot open.
    wrong = _memory(tmp_path, Keyring(keys, _master()))
    with pytest.raises(EncryptionError):
        wrong.set_state("s", {"ticket": 1}, user_id="newcomer", expected_version=0)
    wrong.close()
    assert Keyring(keys, _master(right)).get("user", "newcomer") is None
    m = _memory(tmp_path, Keyring(keys, _master(right)))
    assert m.get_state("s", user_id="newcomer").version == 0
    assert [r.text for r in m.list(user_id="a").items] == ["the office opens at nine"]
    m.close()


def test_a_process_on_a_rotated_out_master_key_makes_no_key_the_new_one_cannot_open(
    tmp_path: Path,
) -> None:
    keys, old, new = tmp_path / "m.keys", generate_key(), generate_key()
    running = _memory(tmp_path, Keyring(keys, _master(old)))  # a server, still running
    running.add("the office opens at nine", user_id="a")
    rotating = Keyring(keys, _master(old))  # `memlane keys rotate` meanwhile
    rotating.rotate(_master(new))
    rotating.close()
    with pytest.raises(EncryptionError):  # its new users' keys would be wrapped by `old`
        running.set_state("s", {"ticket": 1}, user_id="newcomer", expected_version=0)
    running.close()
    restarted = _memory(tmp_path, Keyring(keys, _master(new)))  # old key retired
    assert restarted.get_state("s", user_id="newcomer").version == 0
    assert [r.text for r in restarted.list(user_id="a").items] == ["the office opens at nine"]
    restarted.close()


def test_an_encrypted_store_refuses_a_keyring_it_was_not_sealed_with(tmp_path: Path) -> None:
    master = generate_key()
    m = _memory(tmp_path, Keyring(tmp_path / "m.keys", _master(master)))
    m.add("the office opens at nine", user_id="a")
    m.close()
    # MEMLANE_KEYRING pointing elsewhere (a fresh file, another store's keyring): every
    # write would make new keys there, sealing the user's data under two keys at once.
    for other in ("fresh.keys", "other.keys"):
        if other == "other.keys":
            _memory(tmp_path / "elsewhere", Keyring(tmp_path / other, _master(master))).add(
                "another store", user_id="a"
            )
        stray = _memory(tmp_path, Keyring(tmp_path / other, _master(master)))
        with pytest.raises(ConfigurationError, match="keyring"):
            stray.add("written under a stray key", user_id="a")
        stray.close()
    m = _memory(tmp_path, Keyring(tmp_path / "m.keys", _master(master)))
    assert [r.text for r in m.list(user_id="a").items] == ["the office opens at nine"]
    m.close()


def test_a_store_holding_unencrypted_data_is_not_encrypted_in_place(tmp_path: Path) -> None:
    db = str(tmp_path / "m.db")
    with Memory(db, embedder=FakeEmbedder()) as plain:
        plain.add(f"my locker code is {SECRETS[0]}", user_id="u", topics=["gym"])
        plain.remember("pin", "4711", user_id="u")
    # MEMLANE_MASTER_KEY set on an existing deployment: taken in place, the old rows stay
    # in the clear, and once u writes sealed rows the old ones no longer match u's
    # blinded filters (recall("pin") forgets 4711, remember("pin") makes a second one).
    sealed = _memory(tmp_path, Keyring(tmp_path / "m.keys", _master()))
    with pytest.raises(ConfigurationError, match="migrate"):
        sealed.add("the office opens at nine", user_id="u")
    sealed.close()
    with Memory(db, embedder=FakeEmbedder()) as plain:  # unchanged, and not marked
        assert plain.recall("pin", user_id="u") == "4711"
        assert len(plain.list(user_id="u").items) == 2


def test_an_api_key_made_on_an_encrypted_store_is_listed_and_revoked_by_the_cli(
    tmp_path: Path,
) -> None:
    from click.testing import CliRunner

    from memlane.cli import cli
    from memlane.server import KeyStore

    master = generate_key()
    m = _memory(tmp_path, Keyring(tmp_path / "m.db.keys", _master(master)))
    m.setup()
    _, made = KeyStore(m.store).create("acme", label="ops")  # sealed, as the store is
    m.close()
    env = {
        "MEMLANE_MASTER_KEY": master,
        "MEMLANE_KEYRING": str(tmp_path / "m.db.keys"),
        "MEMLANE_EMBEDDER": "fake",
    }
    store = f"sqlite:///{tmp_path / 'm.db'}"

    def run(*args: str) -> Any:
        return CliRunner().invoke(cli, ["--store", store, "keys", *args], env=env)

    listed = run("list")
    assert listed.exit_code == 0 and json.loads(listed.output)["key_id"] == made.key_id
    revoked = run("revoke", made.key_id)  # a leaked key must be revocable
    assert revoked.exit_code == 0, revoked.output
    m = _memory(tmp_path, Keyring(tmp_path / "m.db.keys", _master(master)))
    assert [k.revoked for k in KeyStore(m.store).list()] == [True]
    m.close()


def test_a_master_key_given_as_text_is_not_echoed_in_the_error(tmp_path: Path) -> None:
    master = generate_key()
    with pytest.raises(ConfigurationError) as made:
        Keyring(tmp_path / "m.keys", master)  # type: ignore[arg-type]  # not parsed
    with pytest.raises(ConfigurationError) as rotated:
        Keyring(tmp_path / "m.keys", _master()).rotate(master.encode())  # type: ignore[arg-type]
    for caught in (made, rotated):
        assert master not in str(caught.value) and master[:12] not in repr(caught.value)


# ---------------------------------------------------------------------------- forgetting


def test_a_forget_cut_short_after_the_key_leaves_sweep_working_for_everyone(
    tmp_path: Path,
) -> None:
    cipher = AesGcmCipher(Keyring(tmp_path / "m.keys", _master()))
    m = Memory(str(tmp_path / "m.db"), embedder=FakeEmbedder(), cipher=cipher)
    m.add("a one-time code", user_id="gone", ttl=timedelta(seconds=1))
    m.add("a parking spot for today", user_id="stays", ttl=timedelta(seconds=1))
    # forget_user destroys the key first; a crash before the rows are deleted leaves
    # this (forget_user again finishes it). Until then, every user's sweep still runs.
    assert cipher.forget("gone")
    later = m.core.now() + timedelta(minutes=1)
    assert m.sweep(now=later) == 1
    assert m.list(user_id="stays", filters=None).items == ()
    m.forget_user("gone")
    assert m.list_users() == ["stays"]  # its history of the expiry
    m.close()


def test_a_copy_of_the_data_folder_from_before_a_forget_does_not_open_after_it(
    tmp_path: Path,
) -> None:
    from memlane.errors import ConfigurationError, KeyDestroyedError

    env = {
        "MEMLANE_STORE": str(tmp_path / "data" / "m.db"),
        "MEMLANE_MASTER_KEY": generate_key(),
        "MEMLANE_EMBEDDER": "fake",
    }
    with pytest.raises(ConfigurationError, match="needs MEMLANE_KEYRING"):
        Memory.from_env(env)  # no default place: beside the data it would be copied along
    env["MEMLANE_KEYRING"] = str(tmp_path / "secrets" / "m.keys")
    with Memory.from_env(env) as m:
        m.add(f"my locker code is {SECRETS[0]}", user_id="gone")
    shutil.copytree(tmp_path / "data", tmp_path / "backup")  # last night's backup
    with Memory.from_env(env) as m:
        m.forget_user("gone")
    backup = {**env, "MEMLANE_STORE": str(tmp_path / "backup" / "m.db")}
    with Memory.from_env(backup) as old, pytest.raises(KeyDestroyedError):
        old.list(user_id="gone")  # the master key is still the one in use


@pytest.mark.xfail(
    strict=True,
    reason="not fixed: content hashes are keyed by one key of the whole store, which "
    "forget_user keeps, so a copy still confirms a guessed text (the vectors, in the "
    "clear by design, do too, given the embedding model)",
)
def test_a_forgotten_users_copied_rows_confirm_no_guess_with_the_keys_in_use(
    tmp_path: Path,
) -> None:
    from memlane.models import content_hash
    from memlane.stores.sealed import SealedStore
    from memlane.stores.sqlite import SqliteStore

    ring = Keyring(tmp_path / "m.keys", _master())
    m = _memory(tmp_path / "live", ring)
    m.add("my locker code is 4711", user_id="gone")
    m.close()
    shutil.copytree(tmp_path / "live", tmp_path / "backup")
    m = _memory(tmp_path / "live", ring)
    m.forget_user("gone")
    m.close()
    # The copy's rows of the forgotten user, and the key material as it is now.
    with sqlite3.connect(tmp_path / "backup" / "m.db") as conn:
        query = "SELECT content_hash FROM records WHERE user_id = 'gone'"
        stored = {h for (h,) in conn.execute(query)}
    now = SealedStore(SqliteStore(tmp_path / "live" / "m.db"), AesGcmCipher(ring))
    guesses = (f"my locker code is {n:04d}" for n in range(10_000))
    assert [g for g in guesses if now.digest(content_hash(g)) in stored] == []


class _SlowKms:
    """A key service in the test (AES-GCM under its own key) whose unwraps of one user's
    key, in threads other than the main one, wait until released: the round trip a real
    KMS takes, during which another process may forget that user."""

    def __init__(self, user_id: str) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.aead = AESGCM(os.urandom(32))
        self.suffix = f"\x00user\x00{user_id}".encode()
        self.waiting = threading.Event()
        self.release = threading.Event()

    def wrap(self, key: bytes, context: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self.aead.encrypt(nonce, key, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        key = self.aead.decrypt(wrapped[:12], wrapped[12:], context)
        if (
            context.endswith(self.suffix)
            and threading.current_thread() is not threading.main_thread()
        ):
            self.waiting.set()
            assert self.release.wait(10)
        return key


@pytest.mark.xfail(
    strict=True,
    reason="not fixed: a write holding a key that forget_user then destroys lands sealed "
    "under it, and the user's reads fail from then on (sealed values carry no key id)",
)
def test_a_write_racing_forget_user_leaves_the_user_readable(tmp_path: Path) -> None:
    from memlane.ciphers import KmsMasterKey

    kms = _SlowKms("u")

    def cipher() -> AesGcmCipher:
        master = KmsMasterKey("test-kms", wrap=kms.wrap, unwrap=kms.unwrap)
        return AesGcmCipher(Keyring(tmp_path / "m.keys", master))

    writer = Memory(str(tmp_path / "m.db"), embedder=FakeEmbedder(), cipher=cipher())
    other = Memory(str(tmp_path / "m.db"), embedder=FakeEmbedder(), cipher=cipher())
    other.set_state("s", {"step": 1}, user_id="u", expected_version=0)
    writer.setup()
    racing = threading.Thread(
        target=lambda: writer.set_state("t", {"step": 2}, user_id="u", expected_version=0)
    )
    racing.start()  # it has read u's key from the keyring and waits on the key service
    assert kms.waiting.wait(10)
    other.forget_user("u")  # another process forgets u meanwhile
    kms.release.set()
    racing.join()
    # Whatever became of the racing write, u is a user like any other afterwards.
    other.set_state("later", {"step": 3}, user_id="u", expected_version=0)
    assert "later" in [s.session_id for s in other.list_sessions(user_id="u").items]
    writer.close()
    other.close()


# ---------------------------------------------------------------------------- tampering


def test_swapped_index_columns_do_not_make_recall_answer_another_key(tmp_path: Path) -> None:
    keys, master = tmp_path / "m.keys", generate_key()
    m = _memory(tmp_path, Keyring(keys, _master(master)))
    pin = m.remember("pin", "4711", user_id="u")
    mail = m.remember("email", "ann@example.com", user_id="u")
    m.close()
    # Someone who can write the file swaps the two keyed facts' blinded keys: each row's
    # sealed part is intact, so it opens; it must not answer for the other key.
    with sqlite3.connect(tmp_path / "m.db") as conn:
        rows = dict(conn.execute("SELECT id, key FROM records WHERE user_id='u'"))
        conn.execute("UPDATE records SET key=? WHERE id=?", ("x", pin.id))
        conn.execute("UPDATE records SET key=? WHERE id=?", (rows[pin.id], mail.id))
        conn.execute("UPDATE records SET key=? WHERE id=?", (rows[mail.id], pin.id))
    m = _memory(tmp_path, Keyring(keys, _master(master)))
    with pytest.raises(DecryptionError, match="altered"):
        m.recall("pin", user_id="u")
    m.close()
