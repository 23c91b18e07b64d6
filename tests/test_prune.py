"""The prune of vectors no record holds (schema 22): a TTL purge, a deleted session or a
rewritten text checks only the texts records let go of, listed by triggers in ``let_go``,
not every vector of the store; forgetting a user still reads them all. Real SQLite files
in tmp_path."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import numpy as np

from memlane import CoreConfig, Memory, MemoryInput, MemoryKind
from memlane.models import Filters, content_hash
from memlane.ports import store as ops
from memlane.stores.sqlite import SqliteStore
from memlane.stores.sqlite_sql import MIGRATIONS, PRUNE_LET_GO
from memlane.testing import FakeEmbedder, FixedClock

EPISODE = MemoryKind.EPISODE


def _hashes(path: Path) -> set[str]:
    """The texts the store keeps a vector of."""
    with sqlite3.connect(path) as conn:
        return {h for (h,) in conn.execute("SELECT content_hash FROM embeddings")}


def _let_go(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {h for (h,) in conn.execute("SELECT content_hash FROM let_go")}


def _put_unheld(memory: Memory, text: str) -> str:
    """A vector of ``text`` that no record holds or ever held (as the manager's cache
    write leaves for a candidate it then skips)."""
    embedder = FakeEmbedder()
    vector = np.asarray(embedder.embed([text])[0], dtype=np.float32)
    memory.store.batch([ops.PutEmbeddings(embedder.model_id, ((content_hash(text), vector),))])
    return content_hash(text)


def test_a_purge_prunes_what_records_let_go_of_and_forgetting_prunes_everything(
    tmp_path: Path,
) -> None:
    path, clock = tmp_path / "m.db", FixedClock()
    m = Memory(SqliteStore(path), embedder=FakeEmbedder(), clock=clock)
    kept = m.add("I'm vegetarian", user_id="alice")
    shared = m.add("we share this text", user_id="alice")
    m.add("we share this text", user_id="bob")
    gone = m.add("door code 4512", user_id="alice", ttl=timedelta(hours=1))
    never = _put_unheld(m, "a candidate the manager skipped")
    assert _let_go(path) == set()
    clock.advance(hours=2)
    assert m.sweep() == 1
    held = _hashes(path)
    assert gone.content_hash not in held
    assert {kept.content_hash, shared.content_hash, never} <= held  # not let go of: kept
    assert _let_go(path) == set()
    m.forget_user("bob")  # every vector no record holds: the one never held too
    held = _hashes(path)
    assert never not in held and {kept.content_hash, shared.content_hash} <= held
    m.forget_user("alice")
    assert _hashes(path) == set()
    m.close()


def test_a_rewritten_text_and_a_deleted_session_let_their_vectors_go(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    m = Memory(SqliteStore(path), embedder=FakeEmbedder(), config=CoreConfig(context_window=1))
    fact = m.add("my bike is red", user_id="u")
    m.update(fact.id, text="my bike is blue", user_id="u")
    assert _let_go(path) == {fact.content_hash}  # listed, pruned at the next prune
    assert fact.content_hash in _hashes(path)
    turns = [
        m.add(text, user_id="u", kind=EPISODE, session_id="s")
        for text in ("my sister lives in Oslo", "ok")
    ]
    contexts = {r.context_hash for r in turns if r.context_hash}
    assert contexts and contexts <= _hashes(path)
    also = m.add("ok", user_id="u")  # a turn's text a fact still holds
    m.delete_session("s", user_id="u")
    assert not m.list(user_id="u", filters=Filters(session_id="s")).items
    held = _hashes(path)
    assert fact.content_hash not in held and not contexts & held
    assert also.content_hash in held and content_hash("my bike is blue") in held
    assert content_hash("my sister lives in Oslo") not in held
    assert _let_go(path) == set()
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


def test_migration_22_lists_every_text_no_record_holds(tmp_path: Path) -> None:
    """A file from before the list: the vectors no record holds then (a context's kept
    for its record aside) go at the first prune after the upgrade."""
    (version,) = [v for v, name, _ in MIGRATIONS if "let go of" in name]
    path = tmp_path / "m.db"
    m = Memory(SqliteStore(path), embedder=FakeEmbedder(), config=CoreConfig(context_window=1))
    turns = [
        m.add(text, user_id="u", kind=EPISODE, session_id="s")
        for text in ("first turn", "second turn")
    ]
    never = _put_unheld(m, "never held by a record")
    m.close()
    contexts = {r.context_hash for r in turns if r.context_hash}
    assert contexts
    with sqlite3.connect(path) as conn:
        conn.executescript(
            "DROP TRIGGER records_let_go_ad; DROP TRIGGER records_let_go_au; DROP TABLE let_go;"
        )
        conn.execute("DELETE FROM schema_migrations WHERE version = ?", (version,))
    m = Memory(SqliteStore(path), embedder=FakeEmbedder())
    assert m.store.schema_versions()[-1][0] == version  # opened: migrated
    assert never in _let_go(path)
    (pruned,) = m.store.batch([ops.PruneEmbeddings()])
    m.close()
    assert pruned == 1
    held = _hashes(path)
    assert never not in held and contexts <= held  # their records still hold them
    assert {r.content_hash for r in turns} <= held
