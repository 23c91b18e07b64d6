"""The prune of vectors no record holds (SQLite schema 22, PostgreSQL 11): a TTL purge, a
deleted session or a rewritten text checks only the texts records let go of, listed by
triggers in ``let_go``, not every vector of the store; forgetting a user still reads them
all. Real SQLite files in tmp_path and a real PostgreSQL server."""

from __future__ import annotations

import sqlite3
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
    never = _put_unheld(m, "a candidate the manager skipped")
    terms = tuple((r.content_hash, b"\x01\x00\x00<") for r in (kept, gone))
    m.store.batch([ops.PutEmbeddings(FakeEmbedder().model_id, (), sparse_model="t", sparse=terms)])
    assert _let_go(backend) == set() and _terms(backend) == 2
    clock.advance(hours=2)
    assert m.sweep() == 1
    assert _terms(backend) == 1  # the purged text's terms went with it
    held = _hashes(backend)
    assert gone.content_hash not in held
    assert {kept.content_hash, shared.content_hash, never} <= held  # not let go of: kept
    assert _let_go(backend) == set()
    m.forget_user("bob")  # every vector no record holds: the one never held too
    held = _hashes(backend)
    assert never not in held and {kept.content_hash, shared.content_hash} <= held
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
        "DROP TRIGGER records_let_go_ad; DROP TRIGGER records_let_go_au; DROP TABLE let_go;",
        next(v for v, name, _ in MIGRATIONS if "let go of" in name),
    ),
    "postgres": (
        "DROP TRIGGER records_let_go_deleted ON records; "
        "DROP TRIGGER records_let_go_rewritten ON records; "
        "DROP FUNCTION memlane_let_go_deleted(); DROP FUNCTION memlane_let_go_rewritten(); "
        "DROP TABLE let_go;",
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
    backend.run(f"{drop} DELETE FROM schema_migrations WHERE version = {version};")
    m = Memory(backend.make(), embedder=FakeEmbedder())
    assert m.store.schema_versions()[-1][0] == version  # type: ignore[attr-defined]
    assert never in _let_go(backend)
    (pruned,) = m.store.batch([ops.PruneEmbeddings()])
    m.close()
    assert pruned == 1
    held = _hashes(backend)
    assert never not in held and contexts <= held  # their records still hold them
    assert {r.content_hash for r in turns} <= held
    assert _let_go(backend) == set()


def test_postgres_prunes_through_its_indexes(postgres_server: PostgresServer) -> None:
    """With sequential scans off, the plan of each statement still reads no table whole
    but the list: an index serves every other read (the planner may scan small tables
    anyway; at a million rows it must not have to)."""
    url = postgres_server.new_database("plan")
    with Memory(PostgresStore(url), embedder=FakeEmbedder()) as m:
        m.add_many([MemoryInput(f"note {i}") for i in range(50)], user_id="u")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        for statement in postgres_sql.PRUNE_LET_GO[:2]:
            plan = "\n".join(row[0] for row in conn.execute(f"EXPLAIN {statement}".encode()))
            scanned = {
                line.split(" on ")[1].split()[0]
                for line in plan.splitlines()
                if "Seq Scan on" in line
            }
            assert scanned <= {"let_go"}, plan
