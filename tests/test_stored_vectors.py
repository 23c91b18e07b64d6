"""The index folder keeps no vector: its codes name the database's vectors by vid and a
search reads the ones it reranks from there (memlane.stores.stored_vectors). Real SQLite
files in tmp_path, real searches, a real forked process."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memlane import Memory, MemoryInput
from memlane.errors import StoreError
from memlane.stores.sqlite import SqliteStore
from memlane.stores.stored_vectors import StoredVectors
from memlane.testing import FakeEmbedder, FixedClock

WORDS = [f"w{i:03d}" for i in range(400)]


def _texts(n: int, seed: int, k: int = 6) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, k)) for _ in range(n)]


def _stored(path: Path) -> dict[int, bytes]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT vid, vector FROM vectors").fetchall())
    finally:
        conn.close()


def _counted_reads(store: SqliteStore) -> list[int]:
    """How many vectors each read of the store's database vectors asks for, from now on
    (the reads themselves go on as before)."""
    vectors = store._sidecar.vectors
    assert vectors is not None
    reads: list[int] = []
    real = vectors.read

    def counted(vids: np.ndarray, dim: int) -> np.ndarray:
        reads.append(len(vids))
        return real(vids, dim)

    vectors.read = counted  # type: ignore[method-assign]
    return reads


def test_reads_vectors_by_vid_with_nan_for_vids_it_does_not_hold(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    m = Memory(SqliteStore(path, vectors="float16"), embedder=FakeEmbedder(dim=64), sparse=None)
    m.add_many([MemoryInput(t) for t in _texts(30, seed=1)], user_id="u")
    m.close()
    stored = _stored(path)
    vids = sorted(stored)
    reader = StoredVectors(path, timeout_s=5.0)
    asked = np.array([vids[5], 10**9, vids[0], vids[5], 0], dtype=np.int64)
    got = reader.read(asked, 64)
    assert got.shape == (5, 64) and got.dtype == np.float16
    assert got[0].tobytes() == stored[vids[5]] and got[3].tobytes() == stored[vids[5]]
    assert got[2].tobytes() == stored[vids[0]]
    assert np.isnan(got[1]).all() and np.isnan(got[4]).all()
    assert reader.read(np.empty(0, dtype=np.int64), 64).shape == (0, 64)
    assert np.isnan(reader.read(asked[:1], 32)).all()  # a vector of another size is not read
    reader.close()
    with pytest.raises(StoreError, match="closed"):
        reader.read(asked, 64)


def test_reads_int8_vectors_as_float16_at_unit_length(tmp_path: Path) -> None:
    """A new database's int8 vectors come back as the float16 of their unit-length
    float32 reading, which is what the matrix of a scope holds."""
    from memlane.stores.vector_cache import from_blobs

    path = tmp_path / "m.db"
    embedder = FakeEmbedder(dim=64)
    m = Memory(SqliteStore(path), embedder=embedder, sparse=None)
    texts = _texts(20, seed=3)
    m.add_many([MemoryInput(t) for t in texts], user_id="u")
    m.close()
    stored = _stored(path)
    vids = sorted(stored)
    assert {len(b) for b in stored.values()} == {64}
    reader = StoredVectors(path, timeout_s=5.0)
    got = reader.read(np.array(vids[::-1], dtype=np.int64), 64)
    reader.close()
    want = from_blobs([stored[v] for v in vids[::-1]], 64).astype(np.float16)
    assert got.dtype == np.float16 and np.array_equal(got, want)
    real = np.stack(embedder.embed(texts))  # vids in the order the texts came
    assert float(np.min(np.sum(got[::-1].astype(np.float32) * real, axis=1))) > 0.999


def test_a_database_it_cannot_read_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "not.db"
    path.write_bytes(b"this is not a database" * 200)
    with pytest.raises(StoreError, match="cannot read vectors"):
        StoredVectors(path, timeout_s=1.0).read(np.array([1]), 8)


def test_the_folder_holds_no_vector_and_a_few_bytes_a_row(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    m = Memory(SqliteStore(path), embedder=FakeEmbedder(dim=384), sparse=None)
    m.add_many([MemoryInput(t) for t in _texts(2000, seed=2)], user_id="u")
    hits = m.search("w001 w002", user_id="u", recipe="semantic")
    m.close()
    assert hits
    folder = Path(f"{path}.index")
    files = [p for p in folder.rglob("*") if p.is_file()]
    held = b"".join(p.read_bytes() for p in files)
    stored = _stored(path)
    assert len(stored) == 2000
    assert not any(vector in held for vector in list(stored.values())[:200])
    vids = [p for p in files if p.name == "codes-content.vids"]
    assert len(vids) == 1 and vids[0].stat().st_size <= 16 + 8 * 2000
    codes = sum(p.stat().st_size for p in files if p.name.startswith("codes-"))
    assert codes / 2000 < 100  # a row: rid, vid and 48 bytes of signs (was 824 with floats)


def test_a_row_whose_vector_left_the_database_is_left_out_not_misread(tmp_path: Path) -> None:
    """Between a sync and the rerank's read another process purges a record (and with it
    its vector): the codes still hold the row until the next sync, and the rerank reads
    NaN for it, never another vector; the search leaves it out. (No copies kept: a
    copy would be read instead until the row is killed.)"""
    path, clock = tmp_path / "m.db", FixedClock()
    texts = _texts(300, seed=3)
    store = SqliteStore(path, vector_cache_bytes=0)
    m = Memory(store, embedder=FakeEmbedder(dim=64), sparse=None, clock=clock)
    m.add_many([MemoryInput(t) for t in texts], user_id="u")
    brief = m.add("w399 w398 w397 w396", user_id="u", ttl=timedelta(hours=1))
    query = m.embedder.embed([brief.text])[0]
    assert m.search(brief.text, user_id="u", recipe="semantic")[0].record.id == brief.id  # synced
    codes = store._sidecar.codes("u", m.embedder.model_id, "content")
    assert codes is not None
    rids, scores = codes.scored(query, 20)
    assert not np.isnan(scores).any()
    clock.advance(hours=2)
    other = Memory(SqliteStore(path), embedder=FakeEmbedder(dim=64), sparse=None, clock=clock)
    assert other.sweep() == 1
    other.close()
    again_rids, again = codes.scored(query, 20)  # the same codes: not synced since
    assert again_rids.tolist() == rids.tolist()
    gone = np.isnan(again)
    assert gone.sum() == 1 and float(scores[gone][0]) == pytest.approx(float(scores.max()))
    assert np.array_equal(again[~gone], scores[~gone])
    hits = m.search(brief.text, user_id="u", recipe="semantic", limit=5)
    assert hits and brief.id not in [h.record.id for h in hits]
    m.close()


def test_searches_on_many_threads_read_the_same_vectors(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    texts = _texts(500, seed=4)
    m = Memory(SqliteStore(path), embedder=FakeEmbedder(dim=64), sparse=None)
    m.add_many([MemoryInput(t) for t in texts], user_id="u")
    queries = _texts(12, seed=5, k=2)
    alone = [[h.record.id for h in m.search(q, user_id="u", limit=8)] for q in queries]
    found: dict[int, list[list[str]]] = {}

    def run(n: int) -> None:
        found[n] = [[h.record.id for h in m.search(q, user_id="u", limit=8)] for q in queries]

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    m.close()
    assert all(found[n] == alone for n in range(4))


def _read_forked(reader: StoredVectors, vids: np.ndarray, out: Any) -> None:
    got = reader.read(vids, 64).tobytes()
    out.put((got, [id(conn) for conn in reader._idle]))
    reader.close()  # the child's own connections only


def test_a_forked_child_reads_on_connections_of_its_own(tmp_path: Path) -> None:
    """The parent's pooled connections are not the child's (SQLite forbids using one
    across a fork): a child forked after reads opens its own, and closing the reader
    there leaves the parent's open."""
    path = tmp_path / "m.db"
    m = Memory(SqliteStore(path), embedder=FakeEmbedder(dim=64), sparse=None)
    m.add_many([MemoryInput(t) for t in _texts(50, seed=6)], user_id="u")
    m.close()
    vids = np.array(sorted(_stored(path))[:10], dtype=np.int64)
    reader = StoredVectors(path, timeout_s=5.0)
    first = reader.read(vids, 64)  # the pool now holds a connection
    pooled = list(reader._idle)
    assert len(pooled) == 1
    fork = multiprocessing.get_context("fork")
    out = fork.Queue()
    child = fork.Process(target=_read_forked, args=(reader, vids, out))
    child.start()
    got, used = out.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0 and got == first.tobytes()
    assert used and not set(used) & {id(conn) for conn in pooled}
    assert reader._idle == pooled  # the parent's connection is still its own, and open
    assert reader.read(vids, 64).tobytes() == first.tobytes()
    reader.close()


def test_copies_are_kept_within_the_budget_and_dropped_with_their_rows(tmp_path: Path) -> None:
    """A search keeps float16 copies of the vectors it read (within the store's budget)
    and reads them again from memory; closing the store gives their bytes back."""
    path, clock = tmp_path / "m.db", FixedClock()
    dim, n = 64, 400
    store = SqliteStore(path, vector_cache_bytes=2 * dim * 300)  # room for 300 of 401
    m = Memory(store, embedder=FakeEmbedder(dim=dim), sparse=None, clock=clock)
    m.add_many([MemoryInput(t) for t in _texts(n, seed=8)], user_id="u")
    m.close()  # the rows' copies go with the process that wrote them
    store = SqliteStore(path, vector_cache_bytes=2 * dim * 300)
    m = Memory(store, embedder=FakeEmbedder(dim=dim), sparse=None, clock=clock)
    brief = m.add("w399 w398 w397 w396", user_id="u", ttl=timedelta(hours=1))
    budget = store._sidecar.copies
    assert budget.used == 0  # (the folder takes the write in at the next search)
    reads = _counted_reads(store)
    first = [h.record.id for h in m.search("w001 w002", user_id="u", recipe="semantic")]
    # 401 rows, room for 300 copies: the budget is full, the rest is read each time
    assert budget.used == budget.max_bytes and sum(reads) >= 401 - 300
    before = sum(reads)
    again = [h.record.id for h in m.search("w001 w002", user_id="u", recipe="semantic")]
    assert again == first and sum(reads) - before == 401 - 300
    assert budget.used == budget.max_bytes
    clock.advance(hours=2)
    assert m.sweep() == 1
    hits = m.search("w399 w398", user_id="u", recipe="semantic")  # after a purge's rebuild
    assert hits and brief.id not in [h.record.id for h in hits]
    assert 0 < budget.used <= budget.max_bytes
    m.close()
    assert budget.used == 0


def test_a_process_that_opens_a_scope_reads_copies_after_a_while_not_in_a_short_call(
    tmp_path: Path,
) -> None:
    """Opening a scope asks for copies of its vectors a moment later, on the upkeep
    thread: a short-lived process (one search, then close) does not wait for them; one
    that stays has them, and its searches read nothing from the database."""
    path = tmp_path / "m.db"
    m = Memory(SqliteStore(path), embedder=FakeEmbedder(dim=64), sparse=None)
    m.add_many([MemoryInput(t) for t in _texts(3000, seed=9)], user_id="u")
    m.close()

    store = SqliteStore(path)
    m = Memory(store, embedder=FakeEmbedder(dim=64), sparse=None)
    short_reads = _counted_reads(store)
    m.search("w001", user_id="u")
    m.close()
    assert 0 < sum(short_reads) <= 800  # the search's own candidates, no more

    store = SqliteStore(path)
    m = Memory(store, embedder=FakeEmbedder(dim=64), sparse=None)
    m.search("w001", user_id="u")
    sidecar = store._sidecar
    assert sidecar.wait_for_upkeep(60)
    assert sidecar.copies.used == 3000 * 2 * 64
    reads = _counted_reads(store)
    for q in _texts(5, seed=10, k=2):
        assert m.search(q, user_id="u")
    assert reads == []
    m.close()


def _hybrid_in_child(m: Memory, out: Any) -> None:
    out.put([h.record.id for h in m.search("w007 w008", user_id="u")])


def test_a_child_forked_from_a_process_that_searched_searches_the_same_store(
    tmp_path: Path,
) -> None:
    """A server forks its workers after the store was opened and searched (a pre-forking
    server that loads its app first): the child's hybrid search opens a connection, scan
    thread and indexes of its own (it waited for ever on the parent's scan thread), and
    finds what the parent finds; the parent goes on with its own."""
    path = tmp_path / "m.db"
    m = Memory(SqliteStore(path), embedder=FakeEmbedder(dim=64), sparse=None)
    m.add_many([MemoryInput(t) for t in _texts(300, seed=11)], user_id="u")
    m.search("w001", user_id="u")  # the hybrid search starts the scan thread
    parent = [h.record.id for h in m.search("w007 w008", user_id="u")]
    fork = multiprocessing.get_context("fork")
    out = fork.Queue()
    child = fork.Process(target=_hybrid_in_child, args=(m, out))
    child.start()
    got = out.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0 and got == parent
    assert [h.record.id for h in m.search("w007 w008", user_id="u")] == parent
    m.close()
