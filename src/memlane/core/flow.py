"""Effects and the two runners that carry them out (sync and async)."""

from __future__ import annotations

import contextvars
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
    time, on a thread of their own when the encoder allows it; resumes with ``(vector,
    terms)``. ``terms`` is None when the encoder failed or may not run beside the
    embedder: a terms-only :class:`EncodeSparse` after the candidates then makes them
    (and tells an error)."""

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


def _beside(io: Runtime, text: str) -> Callable[[], SparseTerms | None]:
    """Start encoding ``text``'s query terms on a thread of its own, in the caller's
    context (its context variables), when the encoder allows it (``concurrent``) and is
    not the embedder too; the returned function waits for them: None if the encoder
    failed, and at once if it may not run beside the embedder or no thread could be
    started (the terms are then made after the search's candidates, by the terms-only
    effect that also tells an error)."""
    encoder = _sparse(io)
    box: list[SparseTerms] = []

    def run() -> None:
        try:
            box.extend(encoder.encode([text], query=True))
        except BaseException:  # on its own thread; told by the terms-only effect after
            _log.debug("query terms beside the query vector failed", exc_info=True)

    if not _side_by_side(encoder, io.embedder):
        return lambda: None
    thread = threading.Thread(
        target=contextvars.copy_context().run,
        args=(run,),
        name="memlane-query-terms",
        daemon=True,
    )
    try:
        thread.start()
    except RuntimeError:  # no thread to be had (a process at its limit)
        return lambda: None

    def wait() -> SparseTerms | None:
        thread.join()
        return box[0] if box else None

    return wait


def _side_by_side(encoder: object, embedder: object) -> bool:
    """Whether the encoder may run beside the embedder: it says so (``concurrent``),
    and it is not the same object (one model serving both, perhaps on one session)."""
    return bool(getattr(encoder, "concurrent", False)) and encoder is not embedder


def _retrieved(task: Any) -> None:
    """Mark a side task's error as seen (it is told again by the terms-only effect)."""
    if not task.cancelled():
        task.exception()


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
            wait = _beside(io, effect.terms_of)
            (vector,) = embedder.embed([effect.text])  # an error: raised, not waited on
            return vector, wait()
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
            return await _embed_query(effect, io)
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


async def _embed_query(effect: EmbedQuery, io: Runtime) -> tuple[Vector, SparseTerms | None]:
    """The async :class:`EmbedQuery`: the terms as a task beside the embedding when the
    encoder allows it (see :func:`_beside`); an embedding error or a cancellation
    cancels them rather than wait."""
    import asyncio

    encoder = _sparse(io)
    if not _side_by_side(encoder, io.embedder):
        (vector,) = await io.embedder.aembed([effect.text])
        return vector, None  # made after the candidates, one after the other
    side = asyncio.ensure_future(encoder.aencode([effect.terms_of], query=True))
    side.add_done_callback(_retrieved)
    try:
        (vector,) = await io.embedder.aembed([effect.text])
    except BaseException:
        side.cancel()
        raise
    try:
        (terms,) = await side
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the search itself was cancelled
        return vector, None  # only the side encoding was
    except Exception:
        _log.debug("query terms beside the query vector failed", exc_info=True)
        return vector, None
    return vector, terms


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
