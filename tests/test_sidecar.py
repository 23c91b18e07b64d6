"""The search indexes beside a SQLite store (memlane.stores.sidecar): kept in step with
the database through the outbox, rebuilt when missing or stale, consistent after kill -9
at any point of an ingest."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
import shutil
import signal
import threading
import time
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from helpers import TermedScope
from memlane import Memory, MemoryInput, MemoryKind
from memlane.ports import store as ops
from memlane.stores import sidecar as sidecar_module
from memlane.stores.sqlite import SqliteStore
from memlane.testing import FakeEmbedder


def _lexical(m: Memory, query: str, user_id: str = "u") -> list[str]:
    return [h.record.id for h in m.search(query, user_id=user_id, recipe="lexical")]


def _check(store: SqliteStore, user_id: str) -> tuple[set[int], set[int]]:
    with store._lock:
        return store._sidecar.check(store._connection(), user_id)


def _folders(path: Path) -> list[Path]:
    index = Path(f"{path}.index")
    return sorted(p for p in index.iterdir() if p.is_dir()) if index.exists() else []


def test_every_change_reaches_the_index(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    store = SqliteStore(path)
    m = Memory(store, embedder=FakeEmbedder())
    a = m.add("the heron nests by the quarry", user_id="u")
    b = m.add("otters play in the estuary", user_id="u")
    assert _lexical(m, "heron", "u") == [a.id]
    m.update(a.id, user_id="u", text="the kestrel nests by the quarry")
    m.delete(b.id, user_id="u")
    assert m.search("heron", user_id="u", recipe="lexical") == []
    assert _lexical(m, "kestrel", "u") == [a.id]
    assert (
        m.search("otters", user_id="u", recipe="lexical") == []
    )  # deleted: filtered, still indexed
    assert _check(store, "u") == (set(), set())
    m.close()


def test_a_missing_or_stale_index_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    m = Memory(SqliteStore(path), embedder=FakeEmbedder())
    first = m.add("the heron nests by the quarry", user_id="u")
    assert m.search("heron", user_id="u", recipe="lexical")
    m.close()
    (folder,) = _folders(path)
    saved = tmp_path / "saved"
    shutil.copytree(folder, saved)

    m = Memory(SqliteStore(path), embedder=FakeEmbedder())
    second = m.add("a heron again, at dusk", user_id="u")
    assert set(_lexical(m, "heron", "u")) == {
        first.id,
        second.id,
    }
    m.close()
    # An older copy of the folder is behind what the database says was applied.
    shutil.rmtree(folder)
    shutil.copytree(saved, folder)
    m = Memory(SqliteStore(path), embedder=FakeEmbedder())
    assert set(_lexical(m, "heron", "u")) == {
        first.id,
        second.id,
    }
    m.close()
    # No folder at all.
    shutil.rmtree(Path(f"{path}.index"))
    m = Memory(SqliteStore(path), embedder=FakeEmbedder())
    assert set(_lexical(m, "heron", "u")) == {
        first.id,
        second.id,
    }
    m.close()


def test_a_folder_names_no_user_and_forgetting_removes_it(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    m = Memory(SqliteStore(path), embedder=FakeEmbedder())
    m.add("alice likes herons", user_id="alice@example.com")
    m.add("bob likes otters", user_id="bob")
    m.search("herons", user_id="alice@example.com", recipe="lexical")
    m.search("otters", user_id="bob", recipe="lexical")
    assert len(_folders(path)) == 2
    assert not any("alice" in p.name or "bob" in p.name for p in Path(f"{path}.index").iterdir())
    m.forget_user("alice@example.com")
    assert len(_folders(path)) == 1
    digest = hashlib.sha256(b"alice@example.com").hexdigest()[:32]
    assert not [p for p in Path(f"{path}.index").iterdir() if p.name.startswith(digest)]
    assert [h.record.text for h in m.search("otters", user_id="bob", recipe="lexical")] == [
        "bob likes otters"
    ]
    m.close()


def test_one_users_index_never_answers_for_another(tmp_path: Path) -> None:
    m = Memory(SqliteStore(tmp_path / "m.db"), embedder=FakeEmbedder())
    m.add("alice keeps bees", user_id="alice")
    m.add("bob keeps goats", user_id="bob")
    assert m.search("bees", user_id="bob", recipe="lexical") == []
    assert [h.record.text for h in m.search("keeps", user_id="bob", recipe="lexical")] == [
        "bob keeps goats"
    ]
    m.close()


def test_another_process_sees_what_this_one_indexed_and_wrote(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    ours = Memory(SqliteStore(path), embedder=FakeEmbedder())
    theirs = Memory(SqliteStore(path), embedder=FakeEmbedder())
    a = ours.add("the heron nests by the quarry", user_id="u")
    assert _lexical(theirs, "heron", "u") == [a.id]
    b = theirs.add("a heron at dusk", user_id="u")
    assert set(_lexical(ours, "heron", "u")) == {
        a.id,
        b.id,
    }
    theirs.forget_user("u")  # rebuilt without the user: the folder goes
    assert ours.search("heron", user_id="u", recipe="lexical") == []
    ours.close()
    theirs.close()


def test_a_filter_that_keeps_few_hits_reads_deeper(tmp_path: Path) -> None:
    """Post-filtering the index's best hits never loses a match further down."""
    m = Memory(SqliteStore(tmp_path / "m.db"), embedder=FakeEmbedder())
    m.add_many([MemoryInput(f"heron heron note {i}") for i in range(300)], user_id="u")
    rare = m.add("a heron, once", user_id="u", kind=MemoryKind.EPISODE, session_id="s")
    from memlane import Filters

    hits = m.search(
        "heron", user_id="u", filters=Filters(kinds=(MemoryKind.EPISODE,)), recipe="lexical"
    )
    assert [h.record.id for h in hits] == [rare.id]
    m.close()


def test_as_of_reaches_the_post_filter_of_lexical_and_vector_hits(tmp_path: Path) -> None:
    """The index's best hits are all written after ``as_of``: the post-filter in SQL
    drops them and reads deeper until it finds the one valid then, by words and by
    vector codes alike."""
    from memlane.testing import FixedClock

    clock = FixedClock()
    m = Memory(SqliteStore(tmp_path / "m.db"), embedder=FakeEmbedder(), clock=clock)
    early = m.add("a heron, once", user_id="u")
    then = clock.now
    clock.advance(days=1)
    m.add_many([MemoryInput(f"heron heron note {i}") for i in range(300)], user_id="u")
    clock.advance(days=1)
    for recipe in ("lexical", "semantic", "hybrid"):
        hits = m.search("heron heron", user_id="u", as_of=then, recipe=recipe)
        assert [h.record.id for h in hits] == [early.id], recipe
        assert len(m.search("heron heron", user_id="u", recipe=recipe)) == 10
    m.close()


def _ingest_forever(url: str, seed: int, n: int, ready: Any) -> None:
    """A child's work until it is killed: adds in batches, rewrites, deleted sessions and
    searches (which apply the outbox); a short outbox threshold makes the applies often."""
    sidecar_module.SYNC_AFTER_WRITES = 15
    m = Memory(url, embedder=FakeEmbedder())
    rng = random.Random(seed)
    ready.set()
    while True:
        batch = [MemoryInput(f"tok{n + i}x note") for i in range(rng.randint(1, 12))]
        recs = m.add_many(batch, user_id="u")
        n += len(batch)
        r = rng.random()
        if r < 0.2:
            m.update(recs[0].id, user_id="u", text=f"tok{n}x rewritten")
        elif r < 0.3:
            m.add(f"tok{n}x said once", user_id="u", kind=MemoryKind.EPISODE, session_id=f"s{n}")
            m.delete_session(f"s{n}", user_id="u")
        elif r < 0.5:
            m.search(f"tok{n - 1}x", user_id="u", recipe="lexical")
        n += 1


def _killed_and_reopened(
    child: Any, path: Path, round_: int, n: int
) -> tuple[Memory, list[tuple[str, str]]]:
    """Kill the child with SIGKILL, reopen the store, check its index agrees with the
    database, and sample ``n`` live records (id, text)."""
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    store = SqliteStore(path)
    m = Memory(store, embedder=FakeEmbedder())
    assert _check(store, "u") == (set(), set()), f"round {round_}"
    with store._lock:
        sample = (
            store._connection()
            .execute(
                "SELECT id, text FROM records WHERE user_id = 'u' AND deleted_at IS NULL "
                "ORDER BY random() LIMIT ?",
                (n,),
            )
            .fetchall()
        )
    return m, sample


def test_kill_9_during_ingest_leaves_index_and_database_in_agreement(tmp_path: Path) -> None:
    """50 kill -9 at random points of an ingest (adds, rewrites, deleted sessions,
    searches that apply the outbox): after each, the reopened store's index holds exactly
    the database's records, and live records are found by their own word."""
    path = tmp_path / "m.db"
    rng = random.Random(7)
    fork = multiprocessing.get_context("fork")
    for round_ in range(50):
        ready = fork.Event()
        child = fork.Process(
            target=_ingest_forever, args=(f"sqlite:///{path}", round_, round_ * 100_000, ready)
        )
        child.start()
        assert ready.wait(30)
        time.sleep(rng.uniform(0.01, 0.3))
        m, sample = _killed_and_reopened(child, path, round_, 5)
        for rid, text in sample:
            hits = m.search(text.split()[0], user_id="u", recipe="lexical")
            assert rid in [h.record.id for h in hits], f"round {round_}"
        m.close()


@pytest.mark.parametrize("erase", ["purge", "delete_session"])
def test_erased_words_leave_the_index_folder(tmp_path: Path, erase: str) -> None:
    from memlane.testing import FixedClock

    path = tmp_path / "m.db"
    clock = FixedClock()
    m = Memory(SqliteStore(path), embedder=FakeEmbedder(), clock=clock)
    for i in range(20):
        m.add(f"bob note {i} about gardening", user_id="u")
    m.add(
        "door code zanzibarquux",
        user_id="u",
        kind=MemoryKind.EPISODE,
        session_id="s",
        ttl=timedelta(hours=1),
    )
    assert m.search("zanzibarquux", user_id="u", recipe="lexical")
    if erase == "purge":
        clock.advance(hours=2)
        assert m.sweep() == 1
    else:
        m.delete_session("s", user_id="u")
    files = [p for p in Path(f"{path}.index").rglob("*") if p.is_file()]
    assert files and all(b"zanzibarquux" not in p.read_bytes() for p in files)
    assert _folders_holding(path, "zanzibarquux") == []
    assert m.search("gardening", user_id="u", recipe="lexical")
    m.close()


def _folders_holding(path: Path, term: str) -> list[str]:
    """The folders beside ``path`` whose lexical index holds ``term`` (tantivy compresses
    its term dictionary: a grep of the files' bytes does not find indexed words)."""
    from memlane.stores.lexical import LexicalIndex

    index = Path(f"{path}.index")
    return [
        folder.name
        for folder in sorted(index.iterdir())
        if (folder / "lexical").is_dir() and LexicalIndex(folder / "lexical").search([term], 1, 0)
    ]


class _Died(BaseException):
    """Stands for a process killed at that point (its locks are released)."""


@pytest.mark.parametrize("point", ["before_sync", "after_swap", "mid_swap"])
def test_an_erasure_cut_short_is_finished_at_the_next_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    path = tmp_path / "m.db"
    m = Memory(SqliteStore(path), embedder=FakeEmbedder())
    for i in range(5):
        m.add(f"bob note {i} about gardening", user_id="u")
    m.add("door code zanzibarquux", user_id="u", kind=MemoryKind.EPISODE, session_id="s")
    assert m.search("zanzibarquux", user_id="u", recipe="lexical")
    assert _folders_holding(path, "zanzibarquux")

    def die(*args: Any, **kwargs: Any) -> None:
        raise _Died

    with monkeypatch.context() as patch:
        if point == "before_sync":
            patch.setattr(sidecar_module.Sidecar, "sync", die)
        elif point == "after_swap":  # the old folder renamed aside, not yet removed
            patch.setattr(sidecar_module.Sidecar, "_discard", staticmethod(die))
        else:  # the old folder renamed aside, the new one not yet in its place
            patch.setattr(Path, "rename", lambda self, target: os.rename(self, target) or die())
        with pytest.raises(_Died):
            m.delete_session("s", user_id="u")
    m = Memory(SqliteStore(path), embedder=FakeEmbedder())
    m.add("another user opens the store", user_id="v")
    assert _folders_holding(path, "zanzibarquux") == []
    assert [p.name for p in Path(f"{path}.index").iterdir() if "-" in p.name] == []
    assert len(m.search("gardening", user_id="u", recipe="lexical")) == 5
    m.close()


def test_bulk_writes_apply_the_outbox_as_they_go(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "m.db")
    m = Memory(store, embedder=FakeEmbedder())
    m.add_many(
        [MemoryInput(f"note {i}") for i in range(sidecar_module.SYNC_AFTER_WRITES + 10)],
        user_id="u",
    )
    with store._lock:
        (pending,) = store._connection().execute("SELECT COUNT(*) FROM index_outbox").fetchone()
    assert pending < sidecar_module.SYNC_AFTER_WRITES
    m.close()


def test_a_plain_write_is_applied_not_rebuilt(tmp_path: Path) -> None:
    """Only erasures, a missing or stale folder, or another model rebuild: a new memory
    is applied to the indexes in place (same folder generation, the outbox position moves
    on), and the codes hold its vector."""
    import json

    path = tmp_path / "m.db"
    store = SqliteStore(path)
    m = Memory(store, embedder=FakeEmbedder())
    m.add("the heron nests by the quarry", user_id="u")
    assert _lexical(m, "heron")
    (folder,) = _folders(path)
    before = json.loads((folder / "state.json").read_text())
    second = m.add("a heron at dusk", user_id="u")
    assert second.id in _lexical(m, "dusk")
    after = json.loads((folder / "state.json").read_text())
    assert after["generation"] == before["generation"] and after["seq"] > before["seq"]
    assert after["model"] == m.store.batch([ops.GetEmbeddingModel()])[0][0]
    assert _check(store, "u") == (set(), set())
    m.close()


def test_a_store_with_vectors_applies_the_outbox_without_rebuilding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """state.json keeps the model its codes hold: read back, it must not look stale (a
    full rebuild per search after a write), nor leave a second store without codes."""
    rebuilt: list[str] = []
    original = sidecar_module.Sidecar.rebuild

    def counting(self: Any, conn: Any, user_id: str, progress: Any = None) -> int:
        rebuilt.append(user_id)
        return original(self, conn, user_id, progress)

    monkeypatch.setattr(sidecar_module.Sidecar, "rebuild", counting)
    path = tmp_path / "m.db"
    first, second = SqliteStore(path), SqliteStore(path)
    m, other = Memory(first, embedder=FakeEmbedder()), Memory(second, embedder=FakeEmbedder())
    for i in range(3):
        m.add(f"the heron number {i}", user_id="u")
        assert m.search("heron", user_id="u", recipe="lexical")
    assert len(rebuilt) == 1
    other.search("heron", user_id="u")
    m.add("one more heron", user_id="u")
    for _ in range(2):
        m.search("heron", user_id="u")
        other.search("heron", user_id="u")
    assert len(rebuilt) == 1
    assert second._sidecar.codes("u", "fake-bow-256", "content") is not None
    m.close()
    other.close()


def test_long_words_are_indexed(tmp_path: Path) -> None:
    """A Chinese clause is one word up to its punctuation (3 bytes a character), a hash
    or an identifier one word too: FTS5 found them, so must the index."""
    m = Memory(SqliteStore(tmp_path / "m.db"), embedder=FakeEmbedder())
    clause = "我今天在公园里看到了一只非常漂亮的苍鹭它站在水边一动不动"
    digest = "9f" * 40
    a = m.add(f"{clause}。", user_id="u")
    b = m.add(f"the build hash was {digest}", user_id="u")
    assert _lexical(m, clause) == [a.id]
    assert _lexical(m, digest) == [b.id]
    m.close()


def test_a_lock_met_while_indexing_does_not_run_a_committed_batch_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outbox is applied after the commit; a "database is locked" there is retried
    alone (run again, the batch found its records written: a ConflictError)."""
    import sqlite3

    original = sidecar_module.Sidecar._applied
    failures = [sqlite3.OperationalError("database is locked")]

    def flaky(self: Any, *args: Any, **kwargs: Any) -> None:
        if failures:
            raise failures.pop()
        original(self, *args, **kwargs)

    m = Memory(SqliteStore(tmp_path / "m.db"), embedder=FakeEmbedder())
    m.add("first", user_id="u")
    monkeypatch.setattr(sidecar_module.Sidecar, "_applied", flaky)
    n = sidecar_module.SYNC_AFTER_WRITES
    added = m.add_many([MemoryInput(f"note {i}") for i in range(n)], user_id="u")
    assert len(added) == n and not failures
    assert len(m.search("note", user_id="u", recipe="lexical", limit=5)) == 5
    m.close()


def test_an_index_that_cannot_be_written_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 mid-commit can leave tantivy a file it then refuses to write again
    (FileAlreadyExists ... .del): the user's folder is rebuilt, searches go on."""
    from memlane.stores import lexical

    m = Memory(SqliteStore(tmp_path / "m.db"), embedder=FakeEmbedder())
    a = m.add("the heron nests", user_id="u")
    assert _lexical(m, "heron") == [a.id]
    b = m.add("a heron again", user_id="u")
    original = lexical.LexicalIndex.write

    def refuses(self: Any, removed: Any, docs: Any) -> None:
        if list(removed):
            raise ValueError("Failed to open file for write: FileAlreadyExists(x.1.del)")
        original(self, removed, docs)

    monkeypatch.setattr(lexical.LexicalIndex, "write", refuses)
    assert set(_lexical(m, "heron")) == {a.id, b.id}
    m.close()


def test_a_compaction_whose_writer_died_is_seen_by_the_other_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One process compacts the codes (new files at the paths) and dies before saying so
    in the folder's state; a second process, holding the old files open, must open the
    new ones before it writes, or its vectors land in files no one reads."""
    path = tmp_path / "m.db"
    ours, theirs = SqliteStore(path), SqliteStore(path)
    m, other = Memory(ours, embedder=FakeEmbedder()), Memory(theirs, embedder=FakeEmbedder())
    records = [m.add(f"the heron number {i}", user_id="u") for i in range(20)]
    m.search("heron", user_id="u")
    other.search("heron", user_id="u")  # both hold the user's indexes open
    other.update(records[0].id, user_id="u", text="a kestrel now")  # a dead row

    def compact(self: Any, *, later: bool = False) -> list[str]:  # as dead rows pile up
        for codes in self.codes.values():
            codes.sync()
            codes.compact()
        return []

    def die(*_: Any, **__: Any) -> None:
        raise _Died

    with monkeypatch.context() as patch:
        patch.setattr(sidecar_module._Indexes, "_settle_codes", compact)
        patch.setattr(sidecar_module.Sidecar, "_write_state", die)
        with pytest.raises(_Died):
            other.search("kestrel", user_id="u")
    new = m.add("otters play in the estuary", user_id="u")
    assert m.search("otters", user_id="u")  # ours applies the outbox
    fresh = SqliteStore(path)
    try:
        assert _check(fresh, "u") == (set(), set())
        hits = Memory(fresh, embedder=FakeEmbedder()).search(
            "otters play in the estuary", user_id="u", recipe="semantic", limit=1
        )
        assert [h.record.id for h in hits] == [new.id]
    finally:
        fresh.close()
        m.close()
        theirs.close()


@pytest.mark.parametrize("where", ["file", "memory"])
def test_growing_scopes_recentre_their_codes_without_rebuilding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Records added 150 at a time: the codes are recentred as the rows double (1,024,
    2,048), in place; nothing is rebuilt from the database after the first build."""
    rebuilds: list[int] = []
    real = sidecar_module.Sidecar.rebuild

    def counted(self: Any, conn: Any, user_id: str, progress: Any = None) -> int:
        rebuilds.append(real(self, conn, user_id, progress))
        return rebuilds[-1]

    monkeypatch.setattr(sidecar_module.Sidecar, "rebuild", counted)
    url = f"sqlite:///{tmp_path}/m.db" if where == "file" else "sqlite:///:memory:"
    m = Memory(url, embedder=FakeEmbedder())
    centres = []
    for batch in range(16):
        texts = [f"note b{batch}n{i} about herons" for i in range(150)]
        m.add_many([MemoryInput(text=t) for t in texts], user_id="u")
        assert m.store._sidecar.wait_for_upkeep(60)  # type: ignore[attr-defined]
        hits = m.search(texts[3], user_id="u", recipe="semantic", limit=1, explain=True)
        assert hits[0].explanation is not None  # its own vector, or one its words share:
        assert hits[0].explanation["vector"]["score"] > 0.999  # (hashed words collide)
        codes = m.store._sidecar.codes("u", FakeEmbedder().model_id, "content")  # type: ignore[attr-defined]
        assert codes is not None
        centres.append(bool(codes.centre.any()))
    m.close()
    assert rebuilds[1:] == []
    assert not centres[5]  # 900 rows: not centred yet
    assert all(centres[7:])  # 1,050 rows on: centred


def test_a_tie_at_the_cut_off_is_ordered_by_id_when_read_deeper(tmp_path: Path) -> None:
    """Equal BM25 scores past the first read: the deeper read looks up the tie, and the
    top is the tie's lowest ids (filtered ones left out), as if every hit were read. The
    tie is written highest id first, so the index's first hits are its highest ids."""
    store = SqliteStore(tmp_path / "m.db")
    m = Memory(store, embedder=FakeEmbedder())
    template = m.add("a river", user_id="u")
    tie = [template.evolve(id=f"T{i:03d}", text=f"heron note x{i:03d}") for i in range(99, -1, -1)]
    store.batch([ops.WriteRecord(r, 0) for r in tie])
    m.add_many([MemoryInput(f"heron heron y{i:03d}") for i in range(5)], user_id="u")
    for rid in ("T000", "T002"):
        m.delete(rid, user_id="u")
    from memlane import Filters

    (hits,) = store.batch([ops.LexicalSearch("u", Filters(), m.core.now(), "heron", 10)])
    scores = [score for _, score in hits]
    assert [rid for rid, _ in hits[5:]] == ["T001", "T003", "T004", "T005", "T006"]
    assert min(scores[:5]) > max(scores[5:]) and len(set(scores[5:])) == 1
    m.close()


def _reads_of(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the reads the store's lexical searches ask of their index, in order."""
    from memlane.stores.lexical import LexicalIndex

    sizes: list[int] = []
    real = LexicalIndex.search

    def counted(self: Any, terms: Any, limit: int, context_weight: float) -> Any:
        sizes.append(limit)
        return real(self, terms, limit, context_weight)

    monkeypatch.setattr(LexicalIndex, "search", counted)
    return sizes


def _tied_scope(tmp_path: Path, tied: int, words: str) -> tuple[SqliteStore, Memory]:
    """A scope of ``tied`` memories that tie on ``words`` (each holds them once), written
    highest id first (T{n:03d}: the index's first hits are the tie's highest ids), five
    that score above them (the first word twice) and one that does not match."""
    store = SqliteStore(tmp_path / "m.db")
    m = Memory(store, embedder=FakeEmbedder())
    template = m.add("a river", user_id="u")
    store.batch(
        [
            ops.WriteRecord(template.evolve(id=f"T{i:03d}", text=f"{words} note x{i:03d}"), 0)
            for i in range(tied - 1, -1, -1)
        ]
    )
    first = words.split()[0]
    m.add_many([MemoryInput(f"{words} {first} y{i:03d}") for i in range(5)], user_id="u")
    return store, m


@pytest.mark.parametrize(
    ("tied", "words", "bound", "weight", "reads"),
    [
        # Past a read of four times the first (the rule before): 405 matches, one read.
        (400, "heron", None, 0.0, [64, 406]),
        # The words' counts add up to 180, over a bound of 100, but the scope holds 96.
        (90, "heron egret", 100, 0.0, [64, 128]),
        # The words' counts add up to 1,365 over the bound, but 455 memories match
        # (counted), in the field that holds the context's words too.
        (450, "heron egret kite", None, 1.0, [64, 456]),
    ],
)
def test_a_tie_is_decided_by_id_where_one_read_holds_every_match(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tied: int,
    words: str,
    bound: int | None,
    weight: float,
    reads: list[int],
) -> None:
    """A tie at the cut-off of a top 10 whose matches one read can hold: the first read
    (64) ends inside it, one more takes every match, and the top is the tie's lowest ids
    as if every hit were read (the first read held only its highest)."""
    from memlane import Filters
    from memlane.stores import sqlite_ops

    if bound is not None:
        monkeypatch.setattr(sqlite_ops, "TIE_READ_MATCHES", bound)
    store, m = _tied_scope(tmp_path, tied, words)
    sizes = _reads_of(store, monkeypatch)
    search = ops.LexicalSearch("u", Filters(), m.core.now(), words, 10, weight)
    (hits,) = store.batch([search])
    assert [rid for rid, _ in hits[5:]] == ["T000", "T001", "T002", "T003", "T004"]
    assert sizes == reads
    m.close()


def test_an_index_counts_the_matches_of_the_field_a_search_reads() -> None:
    """Words held only in a memory's context match when the context counts (the "all"
    field), not otherwise; summed, each term's documents count once per term (at most
    the index's 30), and counted exactly up to ``exact_to``."""
    from memlane.stores.lexical import Doc, LexicalIndex

    index = LexicalIndex(None)
    docs = [Doc(i, f"heron egret {i}", None, i) for i in range(6)]
    docs += [Doc(10 + i, f"river {i}", "a heron and an egret", 10 + i) for i in range(4)]
    docs += [Doc(20 + i, f"lake {i}", None, 20 + i) for i in range(20)]
    index.write([], docs)
    terms = index.terms("heron egret")
    assert index.matches(terms, 0.0) == 12 and index.matches(terms, 0.0, exact_to=100) == 6
    assert index.matches(terms, 1.0) == 20 and index.matches(terms, 1.0, exact_to=100) == 10
    assert index.matches(terms, 0.5, exact_to=100) == 10
    assert index.matches(terms, 1.0, exact_to=20) == 10
    assert index.matches(terms, 1.0, exact_to=19) == 20 == index.matches(terms, 1.0, exact_to=0)
    assert index.matches(index.terms("absent"), 1.0, exact_to=100) == 0


def test_a_tie_among_more_matches_than_one_read_may_hold_is_decided_among_the_first_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the query's terms match more documents than ``TIE_READ_MATCHES``, a tie at the
    cut-off is not read past: every hit that scores above the tie is in the top, and
    the rest are the tie's lowest ids among the first read's hits, in id order."""
    from memlane import Filters
    from memlane.stores import sqlite_ops

    monkeypatch.setattr(sqlite_ops, "TIE_READ_MATCHES", 100)
    store, m = _tied_scope(tmp_path, 150, "heron")
    search = ops.LexicalSearch("u", Filters(), m.core.now(), "heron", 10)
    store.batch([search])  # brings the index in step
    index = store._sidecar.lexical("u")  # type: ignore[attr-defined]
    assert index is not None
    first = index.search(index.terms("heron"), 64, 0.0)
    import sqlite3

    with closing(sqlite3.connect(tmp_path / "m.db")) as conn:
        rid_to_id = dict(conn.execute("SELECT rid, id FROM records").fetchall())
        texts = dict(conn.execute("SELECT id, text FROM records").fetchall())
    tied = sorted(rid_to_id[rid] for rid, _, score in first if score == first[-1][2])
    assert tied != [f"T{i:03d}" for i in range(len(tied))]  # not the tie's lowest: a real test

    reads = _reads_of(store, monkeypatch)
    (hits,) = store.batch([search])
    assert sorted(texts[i] for i, _ in hits[:5]) == [f"heron heron y{i:03d}" for i in range(5)]
    assert [rid for rid, _ in hits[5:]] == tied[:5]
    assert reads == [64]
    m.close()


def _tie_ids(rng: Any, n: int) -> list[str]:
    """Ids of many shapes that sort apart from their order keys: sharing their first 8
    bytes, shorter than 8 bytes (prefixes of one another), differing in their first
    byte only, non-ASCII, and either side of U+FFFF (UTF-16 would order those the other
    way round)."""
    shapes = [
        lambda: f"PREFIX00{rng.randrange(10**4):04d}",
        lambda: f"PREFIX00Z{rng.randrange(10**4):04d}",
        lambda: "K" + "".join(rng.choice("AB") for _ in range(rng.randrange(4))),
        lambda: f"{rng.randrange(10)}" + "".join(rng.choice("AZ") for _ in range(9)),
        lambda: f"Ü{rng.randrange(10**3):03d}",
        lambda: f"\uffff{rng.randrange(100):02d}",
        lambda: f"\U0001f600{rng.randrange(100):02d}",
    ]
    ids: set[str] = set()
    while len(ids) < n:
        ids.add(rng.choice(shapes)())
    return sorted(ids, key=lambda _: rng.random())


@pytest.mark.parametrize("limit", [1, 10, 30])
def test_a_tie_is_decided_by_ids_that_share_their_first_bytes_and_sort_apart(
    tmp_path: Path, limit: int
) -> None:
    """Hits of one score are looked up in id order by a key of each id's first 8 bytes;
    ids that share those bytes tie on the key and are all looked up. A tie of 150 ids of
    many shapes (:func:`_tie_ids`), written in random order, some deleted: the top is
    the tie's lowest ids, as if every hit were read."""
    import random

    rng = random.Random(limit)
    store = SqliteStore(tmp_path / "m.db")
    m = Memory(store, embedder=FakeEmbedder())
    template = m.add("a river", user_id="u")
    ids = _tie_ids(rng, 150)
    store.batch(
        [
            ops.WriteRecord(template.evolve(id=i, text=f"heron note {n:03d}"), 0)
            for n, i in enumerate(ids)
        ]
    )
    m.add_many([MemoryInput(f"heron heron y{i:03d}") for i in range(3)], user_id="u")
    deleted = set(rng.sample(sorted(ids)[:40], 8))
    for rid in deleted:
        m.delete(rid, user_id="u")
    from memlane import Filters

    (hits,) = store.batch([ops.LexicalSearch("u", Filters(), m.core.now(), "heron", limit + 3)])
    live = sorted(i for i in ids if i not in deleted)
    assert [rid for rid, _ in hits[3:]] == live[:limit]
    assert len({score for _, score in hits[3:]}) == 1
    assert store.batch([ops.LexicalSearch("u", Filters(), m.core.now(), "heron", 0)]) == [[]]
    m.close()


def test_a_record_another_process_swaps_in_mid_search_takes_a_new_rid(
    tmp_path: Path,
) -> None:
    """Another process deletes the record of the highest rid and adds one between a
    search's index sync and its transaction. Before schema 17 the new record took the
    deleted one's rid, and the search looked the whole tie up instead of trusting the
    index's order keys; now it takes a new rid (an insert letting SQLite choose, as older
    code did, is refused), the search answers from what it synced, and the next search
    finds the new record, whose lower id wins the tie."""
    import sqlite3

    from memlane import Filters

    db = tmp_path / "m.db"
    store, theirs = SqliteStore(db), SqliteStore(db)
    m = Memory(store, embedder=FakeEmbedder())
    template = m.add("a river", user_id="u")
    ids = [f"T{i:02d}" for i in range(40)] + ["zzz"]
    store.batch([ops.WriteRecord(template.evolve(id=i, text="heron note"), 0) for i in ids])
    search = ops.LexicalSearch("u", Filters(), m.core.now(), "heron", 1)
    assert store.batch([search])[0][0][0] == "T00"
    synced = store._sync_searched
    (zzz,) = store.batch([ops.GetRecords("u", ("zzz",))])[0]

    def then_another_process_commits(conn: Any, ops_: Any) -> None:
        synced(conn, ops_)
        theirs.batch([ops.RemoveRecords("u", ("zzz",)), ops.WriteRecord(zzz.evolve(id="A00"), 0)])
        other = sqlite3.connect(db)
        with pytest.raises(sqlite3.IntegrityError, match="upgrade"):  # older code's insert
            other.executescript(
                "CREATE TEMP TABLE c AS SELECT * FROM records WHERE id = 'A00';"
                "UPDATE c SET id = 'B00', rid = NULL;"
                "INSERT INTO records SELECT * FROM c;"
            )
        other.close()

    store._sync_searched = then_another_process_commits  # type: ignore[method-assign]
    (hits,) = store.batch([search])
    store._sync_searched = synced  # type: ignore[method-assign]
    rid = sqlite3.connect(db).execute("SELECT rid FROM records WHERE id = 'A00'").fetchone()
    assert rid == (len(ids) + 2,)  # after every rid given, not the one 'zzz' had
    assert [i for i, _ in hits] == ["T00"]
    assert [i for i, _ in store.batch([search])[0]] == ["A00"]
    theirs.close()
    m.close()


def test_terms_by_remembered_hashes_never_outlive_a_change(tmp_path: Path) -> None:
    """SparseOf reads the terms by the hashes the store's searches remembered only while
    they hold: not across a write in the same batch, not across a close and reopen
    (another process changed the record meanwhile), not for another user's record of
    the same id; and a user another process forgot is not kept in memory."""
    import sqlite3

    from memlane import Filters

    model = "terms-model"
    db = tmp_path / "m.db"
    store = SqliteStore(db)
    m = Memory(store, embedder=FakeEmbedder())
    record = m.add("heron by the river", user_id="u")
    twin = m.add("heron of bob", user_id="bob")
    store.batch([ops.WriteRecord(twin.evolve(id=record.id), 0)])  # bob's, under u's id
    terms = {record.content_hash: b"U-TERMS", "hash-new": b"NEW-TERMS"}
    terms[twin.content_hash] = b"BOB-TERMS"
    new_vector = ("hash-new", FakeEmbedder().embed(["new"])[0])
    store.batch([ops.PutEmbeddings(m.core.model_id, (), (new_vector,))])
    store.batch(
        [ops.PutEmbeddings(m.core.model_id, (), sparse_model=model, sparse=tuple(terms.items()))]
    )
    search = ops.LexicalSearch("u", Filters(), m.core.now(), "heron", 5)
    sparse = ops.SparseOf("u", model, (record.id,))
    assert store.batch([search, sparse])[1] == {record.id: b"U-TERMS"}
    # Another user's record of the same id, right after u's search.
    store.batch([search])
    assert store.batch([ops.SparseOf("bob", model, (record.id,))])[0] == {record.id: b"BOB-TERMS"}
    # A write in the same batch.
    changed = record.evolve(content_hash="hash-new", version=record.version + 1)
    write = ops.WriteRecord(changed, record.version)
    assert store.batch([search, write, sparse])[2] == {record.id: b"NEW-TERMS"}
    # Closed, changed by another process, opened again by the next batch.
    store.batch([search])
    store.close()
    other = sqlite3.connect(db)
    other.execute(
        "UPDATE records SET content_hash = ? WHERE id = ? AND user_id = 'u'",
        (record.content_hash, record.id),
    )
    other.commit()
    assert store.batch([sparse])[0] == {record.id: b"U-TERMS"}
    # Forgotten by another process: SparseOf drops what it remembered.
    store.batch([search])
    with Memory(f"sqlite:///{db}", embedder=FakeEmbedder()) as elsewhere:
        elsewhere.forget_user("u")
    assert store.batch([sparse])[0] == {}
    assert "u" not in store._found_rows
    other.close()
    m.close()


def test_a_hybrid_batch_reads_its_bm25_hits_terms_ahead(tmp_path: Path) -> None:
    """A batch holding a vector search and a lexical search that says the candidates'
    sparse terms come next (``terms_next``, as hybrid search with its sparse list says)
    reads the BM25 hits' terms while the code scan runs, and the SparseOf that follows
    takes them from there and reads only the rest: the same answer as without. A search
    that does not say so (``fast``, ``rrf``) has none read, a batch whose scan failed
    keeps none, and a write forgets them."""
    from memlane import Filters
    from memlane.errors import ValidationError

    store = SqliteStore(tmp_path / "m.db")
    scope = TermedScope(store, 200)
    m, embedder, made, hash_of = scope.memory, scope.embedder, scope.made, scope.hash_of
    model, now, vector, hint = scope.model, scope.now, scope.vector, scope.hint

    def searches(terms_next: tuple[str, str] | None = hint, dim: int = 256) -> list[Any]:
        return [
            ops.VectorSearch("u", Filters(), now, embedder.model_id, vector[:dim], 20),
            ops.LexicalSearch("u", Filters(), now, "river 3", 20, terms_next=terms_next),
        ]

    vector_hits, lexical_hits = store.batch(searches(None))
    assert not store._found_terms  # not said: none read
    pool = tuple(dict.fromkeys(i for i, _ in [*vector_hits, *lexical_hits]))
    assert len(pool) > len(lexical_hits)  # some found by their vectors alone
    expected = {i: made[hash_of[i]] for i in pool}
    sparse = ops.SparseOf("u", model, pool, m.core.model_id)
    assert store.batch([sparse])[0] == expected
    assert store.batch(searches()) == [vector_hits, lexical_hits]
    ahead = {key[-1]: blob for key, blob in store._found_terms.items()}
    assert ahead == {hash_of[i]: made[hash_of[i]] for i, _ in lexical_hits}
    assert store.batch([sparse])[0] == expected
    # What was read ahead is what SparseOf answers for those records.
    store.batch(searches())
    first = lexical_hits[0][0]
    key = next(k for k in store._found_terms if k[-1] == hash_of[first])
    store._found_terms[key] = b"READ-AHEAD"
    assert store.batch([sparse])[0] == {**expected, first: b"READ-AHEAD"}
    # A write forgets them.
    store.batch(searches())
    assert store._found_terms
    m.add("a crane", user_id="u")
    assert not store._found_terms
    assert store.batch([sparse])[0] == expected
    # A batch whose scan fails keeps none read ahead.
    with pytest.raises(ValidationError):
        store.batch(searches(dim=8))
    assert not store._found_terms
    m.close()


def test_neighbours_are_asked_for_only_where_a_search_found_a_turn(tmp_path: Path) -> None:
    """GetNeighbors asks the database about a record only if it may be a turn: one a
    search here found to be a fact, or an episode outside any session, has no neighbours
    and costs no statement; the turns found get the same neighbours as from a store that
    found nothing; and what was found is forgotten once another connection changes the
    records (a fact made a turn then has its neighbours)."""
    import sqlite3

    from memlane import Filters

    db = tmp_path / "m.db"
    store = SqliteStore(db)
    m = Memory(store, embedder=FakeEmbedder())
    facts = m.add_many([MemoryInput(f"heron fact {i}") for i in range(3)], user_id="u")
    loose = m.add("heron said once", user_id="u", kind=MemoryKind.EPISODE)
    turns = [
        m.add(f"heron turn {i}", user_id="u", kind=MemoryKind.EPISODE, session_id="s")
        for i in range(5)
    ]
    now = m.core.now()
    (hits,) = store.batch([ops.LexicalSearch("u", Filters(), now, "heron", 20)])
    assert len(hits) == 9
    statements: list[str] = []
    store._connection().set_trace_callback(statements.append)
    plain = (*(r.id for r in facts), loose.id)
    assert store.batch([ops.GetNeighbors("u", plain, 2, now)])[0] == {i: [] for i in plain}
    assert not any("session_id" in sql for sql in statements)
    ids = (*plain, *(r.id for r in turns))
    asked = ops.GetNeighbors("u", ids, 2, now)
    got = store.batch([asked])[0]
    assert any("session_id" in sql for sql in statements)
    t = [r.id for r in turns]
    assert got[t[2]] == [(t[0], -2), (t[1], -1), (t[3], 1), (t[4], 2)]
    fresh = SqliteStore(db)  # a store whose searches found nothing
    assert fresh.batch([asked])[0] == got
    fresh.close()
    # Another connection makes a fact a turn of the session.
    other = sqlite3.connect(db)
    other.execute(
        "UPDATE records SET kind = 'episode', session_id = 's' WHERE id = ?", (facts[0].id,)
    )
    other.commit()
    other.close()
    (now_a_turn,) = store.batch([ops.GetNeighbors("u", (facts[0].id,), 2, now)])[0].values()
    assert [n for n, _ in now_a_turn] == [t[0], t[1]]
    m.close()


def test_a_hybrid_batch_scans_codes_beside_the_lexical_read(tmp_path: Path) -> None:
    """A batch asking for a vector and a lexical search gives each the answer it gives
    alone (the scan runs on the store's scan thread, its op last); a failing scan fails
    its batch and leaves nothing behind for the next."""
    store = SqliteStore(tmp_path / "m.db")
    embedder = FakeEmbedder()
    m = Memory(store, embedder=embedder)
    m.add_many([MemoryInput(f"heron note {i} river {i % 7}") for i in range(200)], user_id="u")
    from memlane import Filters
    from memlane.errors import ValidationError

    now = m.core.now()
    vector = embedder.embed(["heron river 3"])[0]
    search = ops.VectorSearch("u", Filters(), now, embedder.model_id, vector, 20)
    lexical = ops.LexicalSearch("u", Filters(), now, "river 3", 20)
    alone = [store.batch([search])[0], store.batch([lexical])[0]]
    assert store._scan_thread is None  # one search per batch: no thread
    assert store.batch([search, lexical]) == alone
    assert store.batch([lexical, search]) == alone[::-1]
    assert store._scan_thread is not None and not store._early_scans
    bad = ops.VectorSearch("u", Filters(), now, embedder.model_id, vector[:8], 20)
    with pytest.raises(ValidationError):
        store.batch([bad, lexical])
    assert not store._early_scans
    assert store.batch([search, lexical]) == alone
    m.close()


def test_a_large_scope_searches_through_lists_made_and_kept_as_it_grows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the public API, with the lists' threshold lowered: writes make the lists
    beside the codes (again at the compaction when the rows double), and searches
    through them (and the rows appended since) find each memory by its own words;
    deleted memories are never
    returned; a new process reads the saved lists instead of making them again."""
    from memlane.stores import codes as codes_module

    monkeypatch.setattr(codes_module, "LISTS_AT", 1000)
    url = f"sqlite:///{tmp_path}/m.db"
    model = FakeEmbedder().model_id
    m = Memory(url, embedder=FakeEmbedder())
    ids: list[str] = []
    for batch in range(12):
        texts = [f"heron {batch} note {i} w{batch * 300 + i}x" for i in range(300)]
        ids += [r.id for r in m.add_many([MemoryInput(text=t) for t in texts], user_id="u")]
        assert m.store._sidecar.wait_for_upkeep(60)  # type: ignore[attr-defined]
    codes = m.store._sidecar.codes("u", model, "content")  # type: ignore[attr-defined]
    assert codes is not None and codes._lists is not None
    assert codes_module.lists_path(codes.path).exists()
    # Made again when the rows doubled (2,400); the 1,200 since are the tail every search
    # scans (placed from 4,096 on).
    assert len(codes._lists.assign) == 2400 and len(codes) == 3600
    gone = set(ids[::5])
    for rid in gone:
        m.delete(rid, user_id="u")
    for i in range(1, 3600, 97):
        text = m.get(ids[i], user_id="u").text if ids[i] not in gone else None
        if text is None:
            continue
        hits = m.search(text, user_id="u", recipe="semantic", limit=3, explain=True)
        assert hits[0].explanation is not None
        assert hits[0].explanation["vector"]["score"] > 0.999  # its own vector
        assert not {h.record.id for h in hits} & gone
    m.close()
    made: list[bool] = []
    real = codes_module._train

    def counted(*args: Any) -> Any:
        made.append(True)
        return real(*args)

    monkeypatch.setattr(codes_module, "_train", counted)
    again = Memory(url, embedder=FakeEmbedder())
    hits = again.search(f"heron 5 note 7 w{5 * 300 + 7}x", user_id="u", recipe="semantic")
    assert hits and hits[0].record.id == ids[5 * 300 + 7]
    codes = again.store._sidecar.codes("u", model, "content")  # type: ignore[attr-defined]
    assert codes is not None and codes._lists is not None and made == []
    again.close()


def test_a_write_leaves_the_compaction_it_made_due_to_the_upkeep_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that makes the codes due for a compaction returns before the compaction
    is made (it runs on the upkeep thread); meanwhile searches and writes go on and see
    every record; once done, the codes are centred, in step with the database, and
    nothing was rebuilt."""
    from memlane.stores import codes as codes_module

    real = codes_module.CodeFile.compact
    threads: list[str] = []
    started, go = threading.Event(), threading.Event()

    def held_back(self: Any, *args: Any, **kwargs: Any) -> bool:
        threads.append(threading.current_thread().name)
        started.set()
        assert go.wait(30)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(codes_module.CodeFile, "compact", held_back)
    rebuilds: list[int] = []
    monkeypatch.setattr(
        sidecar_module.Sidecar, "rebuild", _counted(sidecar_module.Sidecar.rebuild, rebuilds)
    )
    path = tmp_path / "m.db"
    m = Memory(SqliteStore(path), embedder=FakeEmbedder())
    model = FakeEmbedder().model_id
    m.add("the first heron", user_id="u")
    m.search("heron", user_id="u")  # the folder is built: later writes are applied
    texts = [f"note {i} about the w{i}x heron" for i in range(1100)]
    m.add_many([MemoryInput(text=t) for t in texts], user_id="u")  # past 1,024 rows
    assert started.wait(30) and threads == ["memlane-codes-upkeep"]
    codes = m.store._sidecar.codes("u", model, "content")  # type: ignore[attr-defined]
    assert codes is not None and not codes.centre.any()  # not centred yet
    later = m.add("a kestrel over the w5000x field", user_id="u")
    hits = m.search("a kestrel over the w5000x field", user_id="u", recipe="semantic")
    assert hits[0].record.id == later.id
    go.set()
    assert m.store._sidecar.wait_for_upkeep(60)  # type: ignore[attr-defined]
    assert codes.centre.any() and not codes.wants_compaction()
    assert _check(m.store, "u") == (set(), set())  # type: ignore[arg-type]
    for text in (texts[7], texts[1099], "a kestrel over the w5000x field"):
        hits = m.search(text, user_id="u", recipe="semantic", limit=1, explain=True)
        assert hits[0].record.text == text
    m.close()
    assert rebuilds == [1]  # the first build only


def _counted(real: Any, calls: list[int]) -> Any:
    def counted(self: Any, conn: Any, user_id: str, progress: Any = None) -> int:
        calls.append(real(self, conn, user_id, progress))
        return calls[-1]

    return counted


def test_closing_the_store_finishes_the_upkeep_it_made_due(tmp_path: Path) -> None:
    """A short-lived process (a CLI call) that makes a compaction due and closes at once
    leaves the codes compacted, as the write would have before."""
    path = tmp_path / "m.db"
    m = Memory(SqliteStore(path), embedder=FakeEmbedder())
    m.add_many([MemoryInput(text=f"note {i} w{i}x") for i in range(1100)], user_id="u")
    m.close()
    store = SqliteStore(path)
    again = Memory(store, embedder=FakeEmbedder())
    again.search("note", user_id="u")
    codes = store._sidecar.codes("u", FakeEmbedder().model_id, "content")
    assert codes is not None and codes.centre.any() and not codes.wants_compaction()
    again.close()


def _compact_until_killed(url: str, n: int, ready: Any, compacting: Any) -> None:
    """A child's work until it is killed: batches of adds and rewrites (the old rows
    die), with each compaction slowed down and announced."""
    from memlane.stores import codes as codes_module

    sidecar_module.SYNC_AFTER_WRITES = 50
    codes_module.CHUNK = 256
    real = codes_module._centred_codes

    def slow(*args: Any) -> Any:
        compacting.set()
        time.sleep(0.002)
        return real(*args)

    codes_module._centred_codes = slow  # type: ignore[assignment]
    # Due far more often than the store's thresholds make it (half the rows dead), so
    # that kills land in compactions of every size as the scope grows.
    codes_module.CodeFile.wants_compaction = lambda self: self.dead > 300  # type: ignore[method-assign]
    m = Memory(url, embedder=FakeEmbedder())
    ready.set()
    while True:
        batch = [MemoryInput(f"tok{k}x w{k}y v{k}z u{k}q") for k in range(n, n + 200)]
        recs = m.add_many(batch, user_id="u")
        for k, rec in enumerate(recs[:150], start=n):  # a new vector: the old row dies
            m.update(rec.id, user_id="u", text=f"tok{k}x w{k}y v{k}z u{k}q again")
        n += 200


def test_kill_9_during_a_background_compaction_leaves_index_and_database_in_agreement(
    tmp_path: Path,
) -> None:
    """15 kill -9 while the upkeep thread compacts (making its new files, or putting
    them in place): after each, the reopened store's codes hold exactly the database's
    records and live ones are found by their own vector."""
    path = tmp_path / "m.db"
    rng = random.Random(11)
    fork = multiprocessing.get_context("fork")
    for round_ in range(15):
        ready, compacting = fork.Event(), fork.Event()
        child = fork.Process(
            target=_compact_until_killed,
            args=(f"sqlite:///{path}", round_ * 100_000, ready, compacting),
        )
        child.start()
        assert ready.wait(30) and compacting.wait(60), f"round {round_}: {child.exitcode}"
        time.sleep(rng.uniform(0, 0.08))
        m, sample = _killed_and_reopened(child, path, round_, 3)
        for rid, text in sample:  # (hashed words collide: any hit of the same vector)
            hits = m.search(text, user_id="u", recipe="semantic", limit=10, explain=True)
            same = [h.record.id for h in hits if h.explanation["vector"]["score"] > 0.999]  # type: ignore[index]
            assert rid in same, f"round {round_}"
        m.close()
    # What the killed compactions left is removed by the next one.
    store = SqliteStore(path)
    store._sidecar.sync(store._connection(), "u", FakeEmbedder().model_id)
    codes = store._sidecar.codes("u", FakeEmbedder().model_id, "content")
    assert codes is not None and codes.compact()
    assert not list(tmp_path.rglob("*.compact"))
    store.close()


def test_a_child_forked_while_the_upkeep_holds_a_users_lock_does_not_keep_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process forks (a worker pool, say) while its upkeep thread holds a user's lock
    file: once the parent is done with it, other processes take the lock, while the
    child still lives (its copy of the descriptor is closed at the fork)."""
    from memlane.stores import codes as codes_module

    real = codes_module.CodeFile._install
    entered, go = threading.Event(), threading.Event()

    def held(self: Any, plan: Any) -> bool:
        entered.set()
        assert go.wait(30)
        return bool(real(self, plan))

    monkeypatch.setattr(codes_module.CodeFile, "_install", held)
    path = tmp_path / "m.db"
    m = Memory(SqliteStore(path), embedder=FakeEmbedder())
    m.add("the first heron", user_id="u")
    m.search("heron", user_id="u")
    m.add_many([MemoryInput(text=f"note {i} w{i}x") for i in range(1100)], user_id="u")
    assert entered.wait(30)  # the upkeep thread holds the user's lock file now
    child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(30,))
    child.start()
    try:
        go.set()
        assert m.store._sidecar.wait_for_upkeep(60)  # type: ignore[attr-defined]
        other = Memory(SqliteStore(path, busy_timeout_s=3), embedder=FakeEmbedder())
        other.add("a kestrel in the w9999x field", user_id="u")
        hits = other.search("kestrel", user_id="u", recipe="lexical")  # takes the lock
        assert [h.record.text for h in hits] == ["a kestrel in the w9999x field"]
        assert child.is_alive()
        other.close()
    finally:
        child.kill()
        child.join()
        m.close()


def test_an_upkeep_that_keeps_giving_way_is_done_under_the_users_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process writes the user while each compaction is being made, so each
    gives way; after GIVE_WAY_LIMIT of them the next is done under the user's lock (the
    other process waits) and the codes end up centred and in step."""
    from memlane.stores import codes as codes_module

    path = tmp_path / "m.db"
    m = Memory(SqliteStore(path), embedder=FakeEmbedder())
    other = Memory(SqliteStore(path), embedder=FakeEmbedder())
    # The other process writes and never compacts (one whose upkeep is elsewhere).
    other.store._sidecar._upkeep = sidecar_module._Upkeep(lambda *_: None)  # type: ignore[attr-defined]
    m.add("the first heron", user_id="u")
    m.search("heron", user_id="u")
    real = codes_module.CodeFile._prepare
    prepared: list[int] = []

    def interrupted(self: Any, plan: Any, cancel: Any) -> None:
        real(self, plan, cancel)
        prepared.append(1)
        if len(prepared) <= sidecar_module.GIVE_WAY_LIMIT:  # (then it holds the lock)
            other.add(f"a kestrel number {len(prepared)}", user_id="u")
            other.search("kestrel", user_id="u", recipe="lexical")  # applied: state moves

    monkeypatch.setattr(codes_module.CodeFile, "_prepare", interrupted)
    model = FakeEmbedder().model_id
    m.add_many([MemoryInput(text=f"note {i} w{i}x") for i in range(1100)], user_id="u")
    for attempt in range(sidecar_module.GIVE_WAY_LIMIT):
        assert m.store._sidecar.wait_for_upkeep(60)  # type: ignore[attr-defined]
        codes = m.store._sidecar.codes("u", model, "content")  # type: ignore[attr-defined]
        assert codes is not None and not codes.centre.any(), f"attempt {attempt}"
        m.add_many([MemoryInput(text=f"more {attempt} {i}") for i in range(3)], user_id="u")
        m.search("note", user_id="u")  # applies the outbox: asks for the upkeep again
    assert m.store._sidecar.wait_for_upkeep(60)  # type: ignore[attr-defined]
    assert len(prepared) == sidecar_module.GIVE_WAY_LIMIT + 1
    codes = m.store._sidecar.codes("u", model, "content")  # type: ignore[attr-defined]
    assert codes is not None and codes.centre.any() and not codes.wants_compaction()
    assert _check(m.store, "u") == (set(), set())  # type: ignore[arg-type]
    other.close()
    m.close()


def test_where_no_thread_can_start_the_write_does_the_upkeep_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write at interpreter shutdown (Python 3.12 starts no thread then) makes the
    upkeep due: it is done in the write, and closing the store does not wait for a
    thread that never ran."""
    real = threading.Thread.start

    def refused(self: threading.Thread) -> None:
        if self.name == "memlane-codes-upkeep":
            raise RuntimeError("can't create new thread at interpreter shutdown")
        real(self)

    monkeypatch.setattr(threading.Thread, "start", refused)
    m = Memory(SqliteStore(tmp_path / "m.db"), embedder=FakeEmbedder())
    m.add_many([MemoryInput(text=f"note {i} w{i}x") for i in range(1100)], user_id="u")
    codes = m.store._sidecar.codes("u", FakeEmbedder().model_id, "content")  # type: ignore[attr-defined]
    assert codes is not None and codes.centre.any() and not codes.wants_compaction()
    assert m.store._sidecar.wait_for_upkeep(5)  # type: ignore[attr-defined]
    m.close()


def test_a_compaction_that_fails_half_way_in_the_background_is_healed_by_the_next_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The upkeep puts the new vectors file in place and then cannot put the codes
    there (the pair is out of step): it says so, lets go of the user's indexes, and the
    next search opens them again (rebuilt from the database) and finds every memory."""
    real = os.replace

    def broken(src: Any, dst: Any) -> None:
        if str(src).endswith(".compact") and str(dst).endswith(".bin"):
            raise OSError(5, "Input/output error")
        real(src, dst)

    path = tmp_path / "m.db"
    m = Memory(SqliteStore(path), embedder=FakeEmbedder())
    first = m.add_many([MemoryInput(text=f"note {i} w{i}x") for i in range(1100)], user_id="u")
    assert m.store._sidecar.wait_for_upkeep(60)  # type: ignore[attr-defined]
    monkeypatch.setattr(os, "replace", broken)
    for record in first:  # 1,100 dead rows: a compaction, which rewrites both files
        m.update(record.id, user_id="u", text=f"{record.text} again")
    m.search("note", user_id="u")  # applies the outbox: the upkeep is due
    assert m.store._sidecar.wait_for_upkeep(60)  # type: ignore[attr-defined]
    assert "upkeep of a user's vector codes stopped" in caplog.text
    monkeypatch.setattr(os, "replace", real)
    hits = m.search("note 5 w5x again", user_id="u", recipe="semantic", limit=1)
    assert hits[0].record.id == first[5].id
    assert _check(m.store, "u") == (set(), set())  # type: ignore[arg-type]
    m.close()


def test_a_purged_turn_leaves_no_context_vector_made_with_it_in_the_folder(
    tmp_path: Path,
) -> None:
    """The turn after a purged episode was embedded with it (context_window=1): that
    vector leaves the database, and the index folder (every file, byte for byte) never
    held it."""
    import sqlite3

    from memlane import CoreConfig
    from memlane.testing import FixedClock

    path, clock = tmp_path / "m.db", FixedClock()
    config = CoreConfig(context_window=1)
    m = Memory(SqliteStore(path), embedder=FakeEmbedder(), clock=clock, config=config)
    kind = MemoryKind.EPISODE
    m.add("door code zanzibarquux", user_id="u", kind=kind, session_id="s", ttl=timedelta(hours=1))
    clock.advance(minutes=1)
    reply = m.add("ok noted", user_id="u", kind=kind, session_id="s")
    m.add_many([MemoryInput(f"note {i} about gardening") for i in range(5)], user_id="u")
    m.search("gardening", user_id="u")  # the folder takes the writes in
    with sqlite3.connect(path) as conn:
        (vector,) = conn.execute(
            "SELECT v.vector FROM embeddings e JOIN vectors v ON v.vid = e.vid "
            "WHERE e.content_hash = ?",
            (reply.context_hash,),
        ).fetchone()
    folder = Path(f"{path}.index")
    # The folder keeps no vector (its codes name the database's by vid), before or after.
    assert not any(bytes(vector) in p.read_bytes() for p in folder.rglob("*") if p.is_file())
    assert len(list(folder.rglob("codes-context.vids"))) == 1
    clock.advance(hours=2)
    assert m.sweep() == 1
    m.search("zanzibarquux", user_id="u")
    m.close()
    assert not any(bytes(vector) in p.read_bytes() for p in folder.rglob("*") if p.is_file())
    with sqlite3.connect(path) as conn:
        assert conn.execute(
            "SELECT count(*) FROM vectors WHERE vector = ?", (vector,)
        ).fetchone() == (0,)
