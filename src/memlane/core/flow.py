"""Effects and the two runners that carry them out (sync and async)."""

from __future__ import annotations

import contextlib
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
    """Run these store operations in one transaction; resumes with their results. With
    ``joined`` (what a :class:`ReadAside` gave), then the results of the reads it set
    aside, after this batch's own: read beside it, or in this batch where the store
    reads nothing aside."""

    ops: tuple[Op[Any], ...]
    joined: Aside | None = None


@dataclass(frozen=True, slots=True)
class ReadAside:
    """Store reads that need nothing the flow is about to make (a hybrid search's
    lexical list, while its query is embedded): where the store allows it
    (:attr:`~memlane.ports.store.Store.reads_aside`) they start now, as a batch of their
    own on a thread (a task on an event loop), and where not they are held for the
    batch that joins them. Resumes with an :class:`Aside`, to be handed to exactly one
    later :class:`Batch` (``joined``), which resumes with their results. Reads a flow
    ends without joining (an error, a cancellation) are waited for or cancelled by the
    runner before it returns: none outlives the call."""

    ops: tuple[Op[Any], ...]


@dataclass(eq=False, slots=True)
class Aside:
    """Reads set aside by a :class:`ReadAside`: running (``started``: the runner's way of
    waiting for them), or held (``started`` None) for the batch that joins them.
    ``joined`` once a batch took their results (or their error)."""

    ops: tuple[Op[Any], ...]
    started: Any = None
    joined: bool = False


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


Effect = Batch | ReadAside | Embed | EmbedQuery | EncodeSparse | Chat | Pause
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


def read_aside(ops: Sequence[Op[Any]]) -> Flow[Aside]:
    """Set ``ops`` aside (:class:`ReadAside`); join them with :func:`joined`."""
    aside = yield ReadAside(tuple(ops))
    return cast(Aside, aside)


def joined(ops: Sequence[Op[Any]], aside: Aside) -> Flow[tuple[list[Any], list[Any]]]:
    """Run ``ops`` in one transaction, and collect the reads ``aside`` set apart: the
    results of each."""
    results = yield Batch(tuple(ops), aside)
    results = cast(list[Any], results)
    return results[: len(ops)], results[len(ops) :]


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
    started: list[Aside] = []  # reads set aside: waited for if the flow ends first

    def handle(effect: Effect) -> Any:
        if isinstance(effect, Batch):
            return _batch(store, effect)
        if isinstance(effect, ReadAside):
            aside = _aside(store, effect.ops)
            started.append(aside)
            return aside
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

    try:
        return drive(flow, handle if io.observe is None else _timed(handle, io.observe))
    finally:
        for aside in started:  # none outlives the call (a store closed after it, say)
            if not aside.joined and aside.started is not None:
                with contextlib.suppress(BaseException):
                    aside.started()


async def run_async(flow: Flow[R], io: Runtime) -> R:
    """Drive a flow to completion on the running event loop, yielding to it after each
    effect (also one that failed). ``io.observe`` is told each effect and its duration."""
    import asyncio  # here, not at import: the blocking API and the CLI never need it

    store, embedder, llm = io.store, io.embedder, io.llm
    started: list[Aside] = []  # reads set aside: cancelled if the flow ends first

    async def carry_out(effect: Effect) -> Any:
        if isinstance(effect, Batch):
            return await _abatch(store, effect)
        if isinstance(effect, ReadAside):
            aside = _aaside(store, effect.ops)
            started.append(aside)
            return aside
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

    try:
        return await adrive(flow, handle)
    finally:  # a search that failed or was cancelled while its query was embedded
        tasks = [a.started for a in started if not a.joined and a.started is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def _run(store: Store, ops_: tuple[Op[Any], ...]) -> list[Any]:
    """``ops_`` in one batch, with the embedding-model check in front where they need it;
    their results without the check's."""
    todo, guarded = _guarded(ops_)
    reply = store.batch(todo) if todo else []
    return reply[1:] if guarded else reply


async def _arun(store: Store, ops_: tuple[Op[Any], ...]) -> list[Any]:
    """:func:`_run` on the event loop."""
    todo, guarded = _guarded(ops_)
    reply = await store.abatch(todo) if todo else []
    return reply[1:] if guarded else reply


def _with_held(effect: Batch) -> tuple[Op[Any], ...]:
    """A batch's ops, and the reads it joins where they were held rather than started."""
    aside = effect.joined
    return effect.ops if aside is None or aside.started else (*effect.ops, *aside.ops)


def _batch(store: Store, effect: Batch) -> list[Any]:
    """A :class:`Batch`, the reads it joins after its own results: those set aside
    running meanwhile (waited for also when this batch fails; what they left in their
    context taken over only when both succeeded), or held ones run in this batch."""
    aside = effect.joined
    wait: Callable[[], _Done] | None = None if aside is None else aside.started
    if aside is not None:
        aside.joined = True
    try:
        reply = _run(store, _with_held(effect))
    except BaseException:
        if wait is not None:
            with contextlib.suppress(BaseException):  # this batch's error is the one told
                wait()
        raise
    return reply if wait is None else [*reply, *wait().taken_over()]


async def _abatch(store: Store, effect: Batch) -> list[Any]:
    """:func:`_batch` on the event loop: reads set aside that are still running when this
    batch fails, or when the search is cancelled meanwhile, are cancelled."""
    import asyncio

    aside = effect.joined
    task: asyncio.Task[_Done] | None = None if aside is None else aside.started
    if aside is not None:
        aside.joined = True
    try:
        reply = await _arun(store, _with_held(effect))
        if task is None:
            return reply
        done = await task
    except BaseException:
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        raise
    return [*reply, *done.taken_over()]


@dataclass(frozen=True, slots=True)
class _Done:
    """What reads set aside answered, and the context they ran in: what they changed in
    it (``context`` against ``before``) is set in the caller's context when they are
    joined, as if they had run on the caller's thread (a store may hand what it read on
    to the next batch, as PostgreSQL does with its hits' sparse terms)."""

    reply: list[Any]
    context: contextvars.Context
    before: dict[Any, Any]

    def taken_over(self) -> list[Any]:
        for var, value in self.context.items():
            if self.before.get(var, _UNSET) is not value:
                var.set(value)
        return self.reply


_UNSET = object()


def _aside(store: Store, ops_: tuple[Op[Any], ...]) -> Aside:
    """Start ``ops_`` as a batch of their own on a thread, in a copy of the caller's
    context, where the store allows it (and a thread can be had); else hold them."""
    if not ops_ or not getattr(store, "reads_aside", False):
        return Aside(ops_)
    context = contextvars.copy_context()
    box: list[tuple[bool, Any]] = []

    def run() -> None:
        before = dict(contextvars.copy_context().items())
        try:
            box.append((True, _Done(_run(store, ops_), context, before)))
        except BaseException as exc:  # raised where the batch is joined
            box.append((False, exc))

    thread = threading.Thread(
        target=context.run, args=(run,), name="memlane-read-aside", daemon=True
    )
    try:
        thread.start()
    except RuntimeError:  # no thread to be had (a process at its limit)
        return Aside(ops_)

    def wait() -> _Done:
        thread.join()
        done, value = box[0]
        if not done:
            raise value
        return cast(_Done, value)

    return Aside(ops_, wait)


def _aaside(store: Store, ops_: tuple[Op[Any], ...]) -> Aside:
    """:func:`_aside` on the event loop: a task (which runs in a copy of the caller's
    context, handed back with its answer)."""
    import asyncio

    if not ops_ or not getattr(store, "reads_aside", False):
        return Aside(ops_)

    async def run() -> _Done:
        before = dict(contextvars.copy_context().items())
        reply = await _arun(store, ops_)
        return _Done(reply, contextvars.copy_context(), before)

    task = asyncio.ensure_future(run())
    task.add_done_callback(_retrieved)  # (an error is told where it is joined)
    return Aside(ops_, task)


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
