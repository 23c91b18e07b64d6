"""The public Python API: :class:`Memory` (blocking) and :class:`AsyncMemory` (asyncio).

Both expose the same methods with the same signatures; each method is the core flow of
the same name (see :mod:`memlane.core`), driven by a blocking or an async runner. There
is one implementation of behaviour; these classes only pick how I/O is done.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Generator, Mapping
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

from memlane.core.base import Clock, CoreConfig
from memlane.core.flow import Flow, run_async, run_sync
from memlane.core.memory import MemoryCore
from memlane.ports.embedder import Embedder
from memlane.ports.llm import LLM
from memlane.ports.store import Store
from memlane.stores import open_store

P = ParamSpec("P")
R = TypeVar("R")

_FlowMethod = Callable[Concatenate[MemoryCore, P], Generator[Any, Any, R]]


def _blocking(flow: _FlowMethod[P, R]) -> Callable[Concatenate[Memory, P], R]:
    def method(self: Memory, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.run(flow(self.core, *args, **kwargs))

    functools.update_wrapper(method, flow)
    return method


def _awaitable(
    flow: _FlowMethod[P, R],
) -> Callable[Concatenate[AsyncMemory, P], Coroutine[Any, Any, R]]:
    async def method(self: AsyncMemory, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await self.run(flow(self.core, *args, **kwargs))

    functools.update_wrapper(method, flow)
    return method


class _MemoryBase:
    def __init__(
        self,
        store: Store | str | None = None,
        *,
        embedder: Embedder | str | None = None,
        clock: Clock | None = None,
        config: CoreConfig | None = None,
    ) -> None:
        """Build a memory over ``store`` (a Store or a URL; default: ``memlane.db`` in the
        platform's user data directory) and ``embedder`` (an Embedder or a spec such as
        ``"torch"``, see :mod:`memlane.embedders.spec`; default: the bundled local model
        on ONNX Runtime). The environment is not read (see :meth:`from_env`). Nothing is
        opened or loaded until the first call."""
        if store is None:
            from memlane.settings import default_store_url

            store = default_store_url()
        self.store: Store = open_store(store) if isinstance(store, str) else store
        if embedder is None:
            from memlane.embedders.onnx import OnnxEmbedder

            embedder = OnnxEmbedder()
        elif isinstance(embedder, str):
            from memlane.embedders.spec import build_embedder

            embedder = build_embedder(embedder)
        self.embedder: Embedder = embedder
        self.core = MemoryCore(
            model_id=embedder.model_id, clock=clock, config=config or CoreConfig()
        )
        self._ready = False

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
        ``MEMLANE_EMBEDDING_*`` (see :mod:`memlane.settings`). Raises ConfigurationError."""
        from memlane.settings import Settings

        settings = Settings.from_env(environ)
        return cls(
            settings.build_store(), embedder=settings.build_embedder(), clock=clock, config=config
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(store={self.store.url!r}, embedder={self.embedder.model_id!r})"
        )


class Memory(_MemoryBase):
    """Long-term memory for agents, with blocking calls. Use as a context manager or
    call :meth:`close` when done."""

    def setup(self) -> None:
        """Open the store and bring its schema up to date (once; every call does it first)."""
        if not self._ready:
            self.store.setup()
            self._ready = True

    def run(self, flow: Flow[R], llm: LLM | None = None) -> R:
        """Run a flow (see :mod:`memlane.core.flow`) over this memory's store and
        embedder, and ``llm`` when it asks the chat model; returns what the flow returns."""
        self.setup()
        return run_sync(flow, self.store, self.embedder, llm)

    def close(self) -> None:
        """Release the store's connections."""
        self.store.close()
        self._ready = False

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    add = _blocking(MemoryCore.add)
    add_many = _blocking(MemoryCore.add_many)
    get = _blocking(MemoryCore.get)
    search = _blocking(MemoryCore.search)
    update = _blocking(MemoryCore.update)
    supersede = _blocking(MemoryCore.supersede)
    delete = _blocking(MemoryCore.delete)
    restore = _blocking(MemoryCore.restore)
    history = _blocking(MemoryCore.history)
    remember = _blocking(MemoryCore.remember)
    recall = _blocking(MemoryCore.recall)
    add_messages = _blocking(MemoryCore.add_messages)
    get_history = _blocking(MemoryCore.get_history)
    get_session = _blocking(MemoryCore.get_session)
    list_sessions = _blocking(MemoryCore.list_sessions)
    get_state = _blocking(MemoryCore.get_state)
    set_state = _blocking(MemoryCore.set_state)
    update_state = _blocking(MemoryCore.update_state)
    state_history = _blocking(MemoryCore.state_history)
    save_workflow = _blocking(MemoryCore.save_workflow)
    load_workflow = _blocking(MemoryCore.load_workflow)
    list_workflows = _blocking(MemoryCore.list_workflows)
    summarize_session = _blocking(MemoryCore.summarize_session)
    get_summary = _blocking(MemoryCore.get_summary)
    build_context = _blocking(MemoryCore.build_context)
    delete_session = _blocking(MemoryCore.delete_session)
    delete_sessions = _blocking(MemoryCore.delete_sessions)
    sweep = _blocking(MemoryCore.sweep)
    forget_user = _blocking(MemoryCore.forget_user)
    list_users = _blocking(MemoryCore.list_users)
    export_rows = _blocking(MemoryCore.export_rows)
    import_rows = _blocking(MemoryCore.import_rows)
    reembed = _blocking(MemoryCore.reembed)
    list = _blocking(MemoryCore.list)  # last: shadows the builtin in this class body


class AsyncMemory(_MemoryBase):
    """Long-term memory for agents, with ``async`` calls. Use ``async with`` or await
    :meth:`aclose` when done."""

    async def setup(self) -> None:
        """Open the store and bring its schema up to date (once; every call does it first)."""
        if not self._ready:
            import asyncio

            # One-time open + migrate; run off the loop since drivers may block.
            await asyncio.get_running_loop().run_in_executor(None, self.store.setup)
            self._ready = True

    async def run(self, flow: Flow[R], llm: LLM | None = None) -> R:
        """Run a flow over this memory's store and embedder (and ``llm``) on the running
        event loop; returns what the flow returns."""
        await self.setup()
        return await run_async(flow, self.store, self.embedder, llm)

    async def aclose(self) -> None:
        """Release the store's connections."""
        self.store.close()
        self._ready = False

    async def __aenter__(self) -> AsyncMemory:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    add = _awaitable(MemoryCore.add)
    add_many = _awaitable(MemoryCore.add_many)
    get = _awaitable(MemoryCore.get)
    search = _awaitable(MemoryCore.search)
    update = _awaitable(MemoryCore.update)
    supersede = _awaitable(MemoryCore.supersede)
    delete = _awaitable(MemoryCore.delete)
    restore = _awaitable(MemoryCore.restore)
    history = _awaitable(MemoryCore.history)
    remember = _awaitable(MemoryCore.remember)
    recall = _awaitable(MemoryCore.recall)
    add_messages = _awaitable(MemoryCore.add_messages)
    get_history = _awaitable(MemoryCore.get_history)
    get_session = _awaitable(MemoryCore.get_session)
    list_sessions = _awaitable(MemoryCore.list_sessions)
    get_state = _awaitable(MemoryCore.get_state)
    set_state = _awaitable(MemoryCore.set_state)
    update_state = _awaitable(MemoryCore.update_state)
    state_history = _awaitable(MemoryCore.state_history)
    save_workflow = _awaitable(MemoryCore.save_workflow)
    load_workflow = _awaitable(MemoryCore.load_workflow)
    list_workflows = _awaitable(MemoryCore.list_workflows)
    summarize_session = _awaitable(MemoryCore.summarize_session)
    get_summary = _awaitable(MemoryCore.get_summary)
    build_context = _awaitable(MemoryCore.build_context)
    delete_session = _awaitable(MemoryCore.delete_session)
    delete_sessions = _awaitable(MemoryCore.delete_sessions)
    sweep = _awaitable(MemoryCore.sweep)
    forget_user = _awaitable(MemoryCore.forget_user)
    list_users = _awaitable(MemoryCore.list_users)
    export_rows = _awaitable(MemoryCore.export_rows)
    import_rows = _awaitable(MemoryCore.import_rows)
    reembed = _awaitable(MemoryCore.reembed)
    list = _awaitable(MemoryCore.list)  # last: shadows the builtin in this class body
