"""The prune of vectors no record holds (SQLite schema 22, PostgreSQL 11): a TTL purge, a
deleted session or a rewritten text checks only the texts records let go of, listed by
triggers in ``let_go``, not every vector of the store; forgetting a user still reads them
all. Real SQLite files in tmp_path and a real PostgreSQL server."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from tests.servers import PostgresServer

from memlane import CoreConfig, Memory, MemoryInput, MemoryKind
from memlane.models import Filters, content_hash
from memlane.ports import store as ops
from memlane.ports.store import Store
from memlane.stores import postgres_sql
from memlane.stores.postgres import PostgresStore
from memlane.stores.sqlite import SqliteStore
from memlane.stores.sqlite_sql import MIGRATIONS, PRUNE_LET_GO
from memlane.testing import FakeEmbedder, FixedClock

EPISODE = MemoryKind.EPISODE


class Backend:
    """A new store of one kind, and its tables read by their own client."""

    def __init__(
        self,
        make: Callable[[], Store],
        rows: Callable[[str], list[Any]],
        run: Callable[[str], None],
    ) -> None:
        self.make, self.rows, self.run = make, rows, run


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        path = tmp_path / "m.db"

        def sqlite_rows(sql: str) -> list[Any]:
            with sqlite3.connect(path) as conn:
                return conn.execute(sql).fetchall()

        def sqlite_run(script: str) -> None:
            with sqlite3.connect(path) as conn:
                conn.executescript(script)

        return Backend(lambda: SqliteStore(path), sqlite_rows, sqlite_run)
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.new_database("prune")

    def postgres_rows(sql: str) -> list[Any]:
        with psycopg.connect(url, autocommit=True) as conn:
            return conn.execute(sql.encode()).fetchall()

    def postgres_run(script: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(script.encode())

    return Backend(lambda: PostgresStore(url, max_connections=2), postgres_rows, postgres_run)


def _rows_of(url: str, sql: str) -> list[Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql.encode()).fetchall()


def _hashes(backend: Backend) -> set[str]:
    """The texts the store keeps a vector of."""
    return {h for (h,) in backend.rows("SELECT content_hash FROM embeddings")}


def _terms(backend: Backend) -> int:
    (n,) = backend.rows("SELECT count(*) FROM sparse_terms")[0]
    return int(n)


def _let_go(backend: Backend) -> set[str]:
    return {h for (h,) in backend.rows("SELECT content_hash FROM let_go")}


def _put_unheld(memory: Memory, text: str) -> str:
    """A vector of ``text`` that no record holds or ever held (as the manager's cache
    write leaves for a candidate it then skips)."""
    embedder = FakeEmbedder()
    vector = np.asarray(embedder.embed([text])[0], dtype=np.float32)
    memory.store.batch([ops.PutEmbeddings(embedder.model_id, ((content_hash(text), vector),))])
    return content_hash(text)


def test_a_purge_prunes_what_records_let_go_of_and_forgetting_prunes_everything(
    backend: Backend,
) -> None:
    clock = FixedClock()
    m = Memory(backend.make(), embedder=FakeEmbedder(), sparse=None, clock=clock)
    kept = m.add("I'm vegetarian", user_id="alice")
    shared = m.add("we share this text", user_id="alice")
    m.add("we share this text", user_id="bob")
    gone = m.add("door code 4512", user_id="alice", ttl=timedelta(hours=1))
    skipped = _put_unheld(m, "a candidate the manager skipped")
    assert _let_go(backend) == {skipped}  # written, and no record took it
    unlisted = _put_unheld(m, "written by a memlane before the list")
    backend.run("DELETE FROM let_go;")  # as a vector from before the list: not named
    terms = tuple((r.content_hash, b"\x01\x00\x00<") for r in (kept, gone))
    m.store.batch([ops.PutEmbeddings(FakeEmbedder().model_id, (), sparse_model="t", sparse=terms)])
    assert _let_go(backend) == set() and _terms(backend) == 2
    skipped = _put_unheld(m, "another candidate the manager skipped")
    clock.advance(hours=2)
    assert m.sweep() == 1
    assert _terms(backend) == 1  # the purged text's terms went with it
    held = _hashes(backend)
    assert gone.content_hash not in held and skipped not in held
    assert {kept.content_hash, shared.content_hash, unlisted} <= held  # not listed: kept
    assert _let_go(backend) == set()
    m.forget_user("bob")  # every vector no record holds, listed or not
    held = _hashes(backend)
    assert unlisted not in held and {kept.content_hash, shared.content_hash} <= held
    m.forget_user("alice")
    assert _hashes(backend) == set()
    m.close()


def test_a_rewritten_text_and_a_deleted_session_let_their_vectors_go(backend: Backend) -> None:
    config = CoreConfig(context_window=1)
    m = Memory(backend.make(), embedder=FakeEmbedder(), sparse=None, config=config)
    fact = m.add("my bike is red", user_id="u")
    m.update(fact.id, text="my bike is blue", user_id="u")
    assert _let_go(backend) == {fact.content_hash}  # listed, pruned at the next prune
    assert fact.content_hash in _hashes(backend)
    turns = [
        m.add(text, user_id="u", kind=EPISODE, session_id="s")
        for text in ("my sister lives in Oslo", "ok")
    ]
    contexts = {r.context_hash for r in turns if r.context_hash}
    assert contexts and contexts <= _hashes(backend)
    also = m.add("ok", user_id="u")  # a turn's text a fact still holds
    m.delete_session("s", user_id="u")
    assert not m.list(user_id="u", filters=Filters(session_id="s")).items
    held = _hashes(backend)
    assert fact.content_hash not in held and not contexts & held
    assert also.content_hash in held and content_hash("my bike is blue") in held
    assert content_hash("my sister lives in Oslo") not in held
    assert _let_go(backend) == set()
    m.close()


def test_the_prune_reads_no_table_whole_but_its_list(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    with Memory(SqliteStore(path), embedder=FakeEmbedder()) as m:
        m.add_many([MemoryInput(f"note {i}") for i in range(300)], user_id="u")
    with sqlite3.connect(path) as conn:
        conn.execute("ANALYZE")
        for statement in PRUNE_LET_GO:
            plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {statement}")]
            scans = [step for step in plan if step.startswith("SCAN")]
            assert set(scans) <= {"SCAN g", "SCAN models", "SCAN CONSTANT ROW", "SCAN let_go"}


REWIND = {
    "sqlite": (
        "DROP TRIGGER records_let_go_ad; DROP TRIGGER records_let_go_au; "
        "DROP TRIGGER records_held_ai; DROP TRIGGER embeddings_let_go_ai; DROP TABLE let_go;",
        next(v for v, name, _ in MIGRATIONS if "let go of" in name),
    ),
    "postgres": (
        "DROP TRIGGER records_let_go_deleted ON records; "
        "DROP TRIGGER records_let_go_rewritten ON records; "
        "DROP TRIGGER records_let_go_held ON records; "
        "DROP TRIGGER embeddings_let_go_written ON embeddings; "
        "DROP TRIGGER sparse_terms_let_go_written ON sparse_terms; "
        "DROP FUNCTION memlane_let_go_deleted(); DROP FUNCTION memlane_let_go_rewritten(); "
        "DROP FUNCTION memlane_let_go_held(); DROP FUNCTION memlane_let_go_written(); "
        "DROP TABLE let_go; "
        # (and the migrations after it)
        "DROP TRIGGER records_lexical_born ON records; "
        "DROP TRIGGER records_lexical_gone ON records; "
        "DROP TRIGGER records_lexical_changed ON records; "
        "DROP FUNCTION memlane_lexical_rows(); DROP FUNCTION memlane_lexical_changed(); "
        "DROP TABLE lexical_changes; DROP TABLE lexical_copies; "
        "DELETE FROM memlane_meta WHERE key = 'store_id';",
        next(v for v, name, _ in postgres_sql.MIGRATIONS if "let go of" in name),
    ),
}


def test_the_migration_lists_every_text_no_record_holds(
    backend: Backend, request: pytest.FixtureRequest
) -> None:
    """A database from before the list: the vectors no record holds then (a context's
    kept for its record aside) go at the first prune after the upgrade."""
    m = Memory(
        backend.make(), embedder=FakeEmbedder(), sparse=None, config=CoreConfig(context_window=1)
    )
    turns = [
        m.add(text, user_id="u", kind=EPISODE, session_id="s")
        for text in ("first turn", "second turn")
    ]
    never = _put_unheld(m, "never held by a record")
    m.close()
    contexts = {r.context_hash for r in turns if r.context_hash}
    assert contexts
    drop, version = REWIND[request.node.callspec.params["backend"]]
    backend.run(f"{drop} DELETE FROM schema_migrations WHERE version >= {version};")
    m = Memory(backend.make(), embedder=FakeEmbedder())
    assert version in {v for v, _ in m.store.schema_versions()}  # type: ignore[attr-defined]
    assert never in _let_go(backend)
    (pruned,) = m.store.batch([ops.PruneEmbeddings()])
    m.close()
    assert pruned == 1
    held = _hashes(backend)
    assert never not in held and contexts <= held  # their records still hold them
    assert {r.content_hash for r in turns} <= held
    assert _let_go(backend) == set()


def test_postgres_prunes_through_its_indexes(postgres_server: PostgresServer) -> None:
    """With sequential scans off, the plan of each statement still reads no table whole:
    an index serves every read (the planner may scan small tables
    anyway; at a million rows it must not have to)."""
    url = postgres_server.new_database("plan")
    with Memory(PostgresStore(url), embedder=FakeEmbedder()) as m:
        m.add_many([MemoryInput(f"note {i}") for i in range(50)], user_id="u")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        taken = {"taken": [content_hash(f"note {i}") for i in range(5)]}
        for statement in postgres_sql.PRUNE_TAKEN:
            explained = conn.execute(f"EXPLAIN {statement}".encode(), taken)
            plan = "\n".join(row[0] for row in explained)
            scanned = {
                line.split(" on ")[1].split()[0]
                for line in plan.splitlines()
                if "Seq Scan on" in line
            }
            assert not scanned, plan


# ---------------------------------------------------------------------- races and leftovers


def _waiting(url: str, n: int = 1) -> bool:
    """Whether ``n`` sessions of the server wait on a lock, within 4 s."""
    for _ in range(200):
        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute(
                b"SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            ).fetchone()
        if rows and rows[0] >= n:
            return True
        time.sleep(0.02)
    return False


def test_a_text_let_go_of_while_a_postgres_prune_runs_is_pruned_later(
    postgres_server: PostgresServer,
) -> None:
    """A text another transaction lists while a prune runs is not taken from the list
    unchecked: a later prune removes its vector."""
    url = postgres_server.new_database("race")
    m = Memory(PostgresStore(url, max_connections=3), embedder=FakeEmbedder(), sparse=None)
    purged = m.add("door code 4512", user_id="u")
    fact = m.add("my bike is red", user_id="u")
    m.store.batch([ops.RemoveRecords("u", (purged.id,))])  # listed: the prune has work
    holder = psycopg.connect(url)  # holds the purged text's vector: the prune waits on it
    holder.execute(
        b"SELECT 1 FROM embeddings WHERE content_hash = %s FOR UPDATE", (purged.content_hash,)
    )
    pruned: list[object] = []
    prune = threading.Thread(target=lambda: pruned.append(m.store.batch([ops.PruneEmbeddings()])))
    prune.start()
    assert _waiting(url), "the prune never waited"
    m.update(fact.id, text="my bike is blue", user_id="u")  # commits: lists the red bike
    holder.commit()
    holder.close()
    prune.join(10)
    assert pruned == [[1]]  # the purged text's vector
    m.store.batch([ops.RemoveRecords("u", (fact.id,)), ops.PruneEmbeddings()])
    held = {h for (h,) in _rows_of(url, "SELECT content_hash FROM embeddings")}
    m.close()
    assert fact.content_hash not in held and purged.content_hash not in held


def test_a_record_written_while_a_postgres_prune_runs_keeps_its_vector(
    postgres_server: PostgresServer,
) -> None:
    """A writer keeps a stored vector for its record (``PutEmbeddings.keep``) while a
    prune in another transaction, which cannot see the writer's record yet, checks the
    same text: the prune waits for the writer, then sees the record."""
    url = postgres_server.new_database("keep")
    m = Memory(PostgresStore(url, max_connections=4), embedder=FakeEmbedder(), sparse=None)
    first = m.add("my sister lives in Oslo", user_id="a")
    m.store.batch([ops.RemoveRecords("a", (first.id,))])  # listed, not yet pruned
    holder = psycopg.connect(url)  # holds back the writer's record insert for a moment
    holder.execute(b"LOCK TABLE records IN SHARE MODE")
    added: list[object] = []
    writer = threading.Thread(
        target=lambda: added.append(m.add("my sister lives in Oslo", user_id="b"))
    )
    writer.start()
    assert _waiting(url), "the writer never waited"
    pruned: list[object] = []
    prune = threading.Thread(target=lambda: pruned.append(m.store.batch([ops.PruneEmbeddings()])))
    prune.start()
    assert _waiting(url, 2), "the prune never waited for the writer"
    holder.commit()
    holder.close()
    writer.join(10)
    prune.join(10)
    assert added and pruned == [[0]]
    held = {h for (h,) in _rows_of(url, "SELECT content_hash FROM embeddings")}
    m.close()
    assert first.content_hash in held  # user b's memory holds this text


def test_a_vector_no_record_takes_goes_at_the_next_purge(backend: Backend) -> None:
    """The manager caches the vector of every candidate it extracts, also of one it then
    skips: that vector goes with the next deleted session or TTL purge."""
    from memlane.manager import MemoryManager, Outcome
    from memlane.testing import CannedLLM

    secret = "The user's door code is 4512"
    with Memory(backend.make(), embedder=FakeEmbedder(), sparse=None) as m:
        m.add("The user's door code changed", user_id="u")
        m.add("hello", user_id="u", kind=EPISODE, session_id="s")
        llm = CannedLLM(
            {"memories": [{"text": secret}]},
            {"decisions": [{"candidate": 0, "action": "NOOP", "reason": "known"}]},
        )
        result = MemoryManager(m, llm).process(
            [("user", "my door code is 4512")], user_id="u", session_id="s"
        )
        assert result.candidates[0].outcome is Outcome.SKIPPED
        assert content_hash(secret) in _hashes(backend)  # cached; no record holds it
        m.delete_session("s", user_id="u")
        assert content_hash(secret) not in _hashes(backend)
        assert content_hash("The user's door code changed") in _hashes(backend)


def test_a_text_purged_during_a_reembed_leaves_no_new_vector(tmp_path: Path) -> None:
    """A reembed stages the new model's vectors of the texts it read; a record another
    process purges meanwhile leaves its new vector unheld, and the next prune removes it."""
    from collections.abc import Sequence

    from memlane.ports.embedder import Vector

    path, clock = tmp_path / "m.db", FixedClock()
    secret = "door code 4512"
    old = FakeEmbedder(model_id="old-model")
    with Memory(SqliteStore(path), embedder=old, sparse=None, clock=clock) as m:
        m.add("I'm vegetarian", user_id="u")
        m.add(secret, user_id="u", ttl=timedelta(hours=1))

    class SweepsFirst:
        """The new model; when first asked, another process's sweep runs."""

        def __init__(self) -> None:
            self.inner = FakeEmbedder(model_id="new-model")
            self.model_id, self.dim, self.batch_size = "new-model", self.inner.dim, 64
            self.swept = False

        def embed(self, texts: Sequence[str]) -> list[Vector]:
            if not self.swept:
                self.swept = True
                later = FixedClock(clock.now + timedelta(hours=2))
                with Memory(SqliteStore(path), embedder=old, sparse=None, clock=later) as other:
                    assert other.sweep() == 1
            return self.inner.embed(texts)

    with Memory(SqliteStore(path), embedder=SweepsFirst(), sparse=None) as m:
        m.reembed()
        m.store.batch([ops.PruneEmbeddings()])  # as the next sweep or deleted session
        assert [r.text for r in m.list(user_id="u").items] == ["I'm vegetarian"]
    with sqlite3.connect(path) as conn:
        held = set(conn.execute("SELECT model, content_hash FROM embeddings"))
    assert held == {("new-model", content_hash("I'm vegetarian"))}
