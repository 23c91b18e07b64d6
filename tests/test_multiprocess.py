"""Eight processes adding, retrying, updating and searching at once, on PostgreSQL and on
one SQLite file: nothing lost, no duplicate from a retried add, no lock error seen."""

from __future__ import annotations

import multiprocessing
import traceback
from pathlib import Path

from tests.servers import PostgresServer

from memlane import Memory
from memlane.errors import ConflictError
from memlane.models import Filters
from memlane.testing import FakeEmbedder

WORKERS = 8
ROUNDS = 12


def _work(url: str, worker: int) -> list[str]:
    """One process's share; returns the errors it met (as text), if any."""
    errors: list[str] = []
    m = Memory(url, embedder=FakeEmbedder())
    try:
        for i in range(ROUNDS):
            user = f"user{i % 2}"
            text = f"worker {worker} note {i} about topic{i % 5}"
            key = f"w{worker}-{i}"
            rec = m.add(text, user_id=user, idempotency_key=key)
            retry = m.add(text, user_id=user, idempotency_key=key)  # the client retried
            if retry.id != rec.id:
                errors.append(f"retry of {key} made {retry.id}, not {rec.id}")
            m.update(rec.id, user_id=user, text=f"worker {worker} note {i} updated")
            # Every worker adds the same shared items: one of them stores each.
            m.add(f"shared item {i}", user_id="shared", idempotency_key=f"shared-{i}")
            if i % 3 == 0:
                m.search(f"topic{i % 5} note", user_id=user, limit=5)
            _increment(m)
    except Exception:
        errors.append(traceback.format_exc())
    finally:
        m.close()
    return errors


def _increment(m: Memory) -> None:
    """Add one to a shared counter with compare-and-swap (no lost update)."""
    while True:
        current = m.get_state("tally", user_id="shared")
        n = int(current.data.get("n", 0)) + 1
        try:
            m.set_state("tally", {"n": n}, user_id="shared", expected_version=current.version)
            return
        except ConflictError:
            continue


def _run_everywhere(url: str) -> None:
    with Memory(url, embedder=FakeEmbedder()) as m:
        m.add("warm up the schema", user_id="setup")  # migrate once, before the race
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(WORKERS) as pool:
        results = pool.starmap(_work, [(url, w) for w in range(WORKERS)])
    errors = [e for result in results for e in result]
    assert errors == [], "\n".join(errors)
    assert not any("locked" in e for e in errors)
    with Memory(url, embedder=FakeEmbedder()) as m:
        for user in ("user0", "user1"):
            rows = m.list(user_id=user, limit=1000).items
            assert len(rows) == WORKERS * ROUNDS // 2  # nothing lost, no duplicates
            assert all(r.text.endswith("updated") and r.version == 2 for r in rows)
            every = m.list(user_id=user, limit=1000, filters=Filters(include_superseded=True))
            assert len(every.items) == len(rows)
        shared = m.list(user_id="shared", limit=1000).items
        assert sorted(r.text for r in shared) == sorted(f"shared item {i}" for i in range(ROUNDS))
        assert m.get_state("tally", user_id="shared").data == {"n": WORKERS * ROUNDS}
        hits = m.search("topic3 note", user_id="user1", limit=5)
        assert hits and all(h.record.user_id == "user1" for h in hits)


def test_eight_processes_on_postgres(postgres_server: PostgresServer) -> None:
    _run_everywhere(postgres_server.new_database("multi"))


def test_eight_processes_on_one_sqlite_file(tmp_path: Path) -> None:
    _run_everywhere(f"sqlite:///{tmp_path}/multi.db")


def test_one_worker_alone_counts_exactly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/one.db"
    assert _work(url, 0) == []
    with Memory(url, embedder=FakeEmbedder()) as m:
        assert m.get_state("tally", user_id="shared").data == {"n": ROUNDS}


KEY_WORKERS = 6
KEY_ROUNDS = 15


def _remember_one_key(url: str, worker: int, start: object, out: object) -> None:
    """Set one shared keyed fact KEY_ROUNDS times, each time to a value of its own, after
    every process is ready; puts the errors it met (as text) on ``out``."""
    errors: list[str] = []
    m = Memory(url, embedder=FakeEmbedder())
    try:
        start.wait()  # type: ignore[attr-defined]
        for i in range(KEY_ROUNDS):
            value = f"w{worker}-{i}"
            try:
                rec = m.remember("status", value, user_id="u")
            except ConflictError as exc:  # a contended write that could not be resolved
                errors.append(f"ConflictError: {exc}")
                continue
            except Exception:
                errors.append(traceback.format_exc())
                continue
            if rec.metadata.get("value") != value:
                errors.append(f"remember({value!r}) returned {rec.metadata.get('value')!r}")
    finally:
        m.close()
        out.put(errors)  # type: ignore[attr-defined]


def _race_one_key(url: str) -> None:
    with Memory(url, embedder=FakeEmbedder()) as m:
        m.add("warm up the schema", user_id="setup")
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Barrier(KEY_WORKERS), ctx.Queue()
    procs = [
        ctx.Process(target=_remember_one_key, args=(url, w, start, out)) for w in range(KEY_WORKERS)
    ]
    for p in procs:
        p.start()
    errors = [e for _ in procs for e in out.get(timeout=120)]
    for p in procs:
        p.join(timeout=30)
    # A lost race is retried: no ValidationError ("not current"), and none left unresolved.
    assert errors == [], "\n".join(errors)
    with Memory(url, embedder=FakeEmbedder()) as m:
        every = m.list(
            user_id="u", limit=1000, filters=Filters(key="status", include_superseded=True)
        ).items
        # Every call stored its own value (all values differ): one chain, one current.
        assert len(every) == KEY_WORKERS * KEY_ROUNDS
        assert len([r for r in every if r.is_current]) == 1
        assert m.recall("status", user_id="u") in {r.metadata["value"] for r in every}


def test_processes_remembering_one_key_on_postgres(postgres_server: PostgresServer) -> None:
    _race_one_key(postgres_server.new_database("key"))


def test_processes_remembering_one_key_on_one_sqlite_file(tmp_path: Path) -> None:
    _race_one_key(f"sqlite:///{tmp_path}/key.db")
