"""Effects and the two runners that carry them out (sync and async)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from memlane.effects import adrive, drive
from memlane.errors import NoModelError
from memlane.ports.embedder import Embedder, Vector
from memlane.ports.llm import LLM, ChatRequest, ChatResponse
from memlane.ports.store import Op, Store, guard_vectors

if TYPE_CHECKING:
    from memlane.ports.sparse import SparseEncoder, SparseTerms

R = TypeVar("R")
_log = logging.getLogger("memlane.search")


@dataclass(frozen=True, slots=True)
class Batch:
    """Run these store operations in one transaction; resumes with their results."""

    ops: tuple[Op[Any], ...]


@dataclass(frozen=True, slots=True)
class Embed:
    """Embed these texts; resumes with one vector per text."""

    texts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EncodeSparse:
    """Find these texts' weighted terms (:mod:`memlane.ports.sparse`); resumes with one
    :class:`~memlane.sparse.SparseTerms` per text. ``query``: keep all of a query's."""

    texts: tuple[str, ...]
    query: bool = False


@dataclass(frozen=True, slots=True)
class EmbedQuery:
    """Embed a query (``text``) and find the sparse terms of ``terms_of`` at the same
    time, on a thread of their own; resumes with ``(vector, terms)``. ``terms`` is None
    when the encoder failed: a terms-only :class:`EncodeSparse` later tells the error."""

    text: str
    terms_of: str


@dataclass(frozen=True, slots=True)
class Chat:
    """Ask the chat model; resumes with its :class:`ChatResponse`."""

    request: ChatRequest


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait this many seconds (a back-off before retrying a lost race); resumes with None."""

    seconds: float


Effect = Batch | Embed | EmbedQuery | EncodeSparse | Chat | Pause
Flow = Generator[Effect, Any, R]

EffectObserver = Callable[[Effect, float], None]
"""Told each effect a runner carried out and the seconds it took, also when it failed
(the server's store, embedding and model timings). It must not raise."""


def one(op: Op[R]) -> Flow[R]:
    """Run a single store operation and return its typed result."""
    results = yield Batch((op,))
    return cast(R, results[0])


def many(ops: Sequence[Op[Any]]) -> Flow[list[Any]]:
    """Run several store operations in one transaction."""
    results = yield Batch(tuple(ops))
    return cast(list[Any], results)


def embed(texts: Sequence[str]) -> Flow[list[Vector]]:
    vectors = yield Embed(tuple(texts))
    return cast(list[Vector], vectors)


def encode_sparse(texts: Sequence[str], *, query: bool = False) -> Flow[list[SparseTerms]]:
    terms = yield EncodeSparse(tuple(texts), query)
    return cast(list["SparseTerms"], terms)


def embed_query(text: str, terms_of: str) -> Flow[tuple[Vector, SparseTerms | None]]:
    """``text``'s vector and ``terms_of``'s query terms, computed side by side."""
    both = yield EmbedQuery(text, terms_of)
    return cast("tuple[Vector, SparseTerms | None]", both)


def chat(request: ChatRequest) -> Flow[ChatResponse]:
    response = yield Chat(request)
    return cast(ChatResponse, response)


def pause(seconds: float) -> Flow[None]:
    yield Pause(seconds)


def _no_llm() -> NoModelError:
    return NoModelError(
        "this needs a chat model: pass llm=, or use MemoryManager.from_env with "
        "MEMLANE_LLM_BASE_URL and MEMLANE_LLM_MODEL set"
    )


def _sparse(io: Runtime) -> SparseEncoder:
    if io.sparse is None:  # a core asks only when it was given an encoder
        raise NoModelError("this needs a sparse encoder (memlane.embedders.splade): pass sparse=")
    return io.sparse


def _beside(encoder: SparseEncoder, text: str) -> Callable[[], SparseTerms | None]:
    """Start encoding ``text``'s query terms on a thread of its own (a thread per call:
    searches on several threads never queue behind one another); the returned function
    waits for them, None if the encoder failed."""
    box: list[SparseTerms] = []

    def run() -> None:
        try:
            box.extend(encoder.encode([text], query=True))
        except Exception:  # told by the terms-only effect the caller falls back to
            _log.debug("query terms beside the query vector failed", exc_info=True)

    thread = threading.Thread(target=run, name="memlane-query-terms", daemon=True)
    thread.start()

    def wait() -> SparseTerms | None:
        thread.join()
        return box[0] if box else None

    return wait


def _guarded(batch: tuple[Op[Any], ...]) -> tuple[tuple[Op[Any], ...], bool]:
    """``batch`` with the store's embedding-model check in front when it writes or
    searches vectors (so a store never mixes models), and whether it was added."""
    guard = guard_vectors(batch)
    return (batch, False) if guard is None else ((guard, *batch), True)


@dataclass(frozen=True, slots=True)
class Runtime:
    """What a runner carries effects out with: the store, the embedder, the chat model
    (for flows that ask one), who is told each effect's duration and the sparse encoder
    (for flows of a core that has one)."""

    store: Store
    embedder: Embedder
    llm: LLM | None = None
    observe: EffectObserver | None = None
    sparse: SparseEncoder | None = None


def run_sync(flow: Flow[R], io: Runtime) -> R:
    """Drive a flow to completion with blocking I/O; an effect's error is raised in the
    flow. ``io.observe`` is told each effect and its duration."""
    store, embedder, llm = io.store, io.embedder, io.llm

    def handle(effect: Effect) -> Any:
        if isinstance(effect, Batch):
            todo, guarded = _guarded(effect.ops)
            reply = store.batch(todo)
            return reply[1:] if guarded else reply
        if isinstance(effect, Embed):
            return embedder.embed(effect.texts)
        if isinstance(effect, EncodeSparse):
            return _sparse(io).encode(effect.texts, query=effect.query)
        if isinstance(effect, EmbedQuery):
            wait = _beside(_sparse(io), effect.terms_of)
            try:
                (vector,) = embedder.embed([effect.text])
            finally:
                terms = wait()
            return vector, terms
        if isinstance(effect, Pause):
            time.sleep(effect.seconds)
            return None
        if llm is None:
            raise _no_llm()
        return llm.complete(effect.request)

    return drive(flow, handle if io.observe is None else _timed(handle, io.observe))


async def run_async(flow: Flow[R], io: Runtime) -> R:
    """Drive a flow to completion on the running event loop, yielding to it after each
    effect (also one that failed). ``io.observe`` is told each effect and its duration."""
    import asyncio  # here, not at import: the blocking API and the CLI never need it

    store, embedder, llm = io.store, io.embedder, io.llm

    async def carry_out(effect: Effect) -> Any:
        if isinstance(effect, Batch):
            todo, guarded = _guarded(effect.ops)
            reply = await store.abatch(todo)
            return reply[1:] if guarded else reply
        if isinstance(effect, Embed):
            return await embedder.aembed(effect.texts)
        if isinstance(effect, EncodeSparse):
            return await _sparse(io).aencode(effect.texts, query=effect.query)
        if isinstance(effect, EmbedQuery):
            vectors, terms = await asyncio.gather(
                embedder.aembed([effect.text]),
                _sparse(io).aencode([effect.terms_of], query=True),
                return_exceptions=True,
            )
            if isinstance(vectors, BaseException):
                raise vectors
            if isinstance(terms, BaseException):
                if not isinstance(terms, Exception):
                    raise terms  # a cancellation, not a failed encoder
                _log.debug("query terms beside the query vector failed", exc_info=terms)
                return vectors[0], None
            return vectors[0], terms[0]
        if isinstance(effect, Pause):
            await asyncio.sleep(effect.seconds)
            return None
        if llm is None:
            raise _no_llm()
        return await llm.acomplete(effect.request)

    run_one = carry_out if io.observe is None else _atimed(carry_out, io.observe)

    async def handle(effect: Effect) -> Any:
        try:
            reply = await run_one(effect)
        except Exception:
            await asyncio.sleep(0)
            raise
        await asyncio.sleep(0)
        return reply

    return await adrive(flow, handle)


def _timed(handle: Callable[[Effect], Any], observe: EffectObserver) -> Callable[[Effect], Any]:
    """``handle`` telling ``observe`` how long each effect took."""

    def timed(effect: Effect) -> Any:
        start = time.perf_counter()
        try:
            return handle(effect)
        finally:
            observe(effect, time.perf_counter() - start)

    return timed


def _atimed(
    handle: Callable[[Effect], Awaitable[Any]], observe: EffectObserver
) -> Callable[[Effect], Awaitable[Any]]:
    """The awaitable ``handle`` telling ``observe`` how long each effect took."""

    async def timed(effect: Effect) -> Any:
        start = time.perf_counter()
        try:
            return await handle(effect)
        finally:
            observe(effect, time.perf_counter() - start)

    return timed
