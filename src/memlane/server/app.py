"""The REST API: the whole public API over HTTP, scoped by API key.

Every route under ``/v1/users/{user_id}/...`` asks :func:`memlane.access.authorize` with
the caller's key first: the key's tenant namespaces the user id, a key limited to some
users gets 403 for any other, and a key limited to some agents acts only as those agents
(``agent_id`` required; whole-user routes refused). Acting as an agent, a call sees that
agent's memories and sessions and the user's shared ones (:func:`memlane.access.visible`).
Errors are JSON ``{"error", "type"}`` with 400/401/403/404/405/409/413/422/501/503;
nothing internal (no stack trace) reaches a client.

Where things are: :mod:`~memlane.server.routes` (one router per area),
:mod:`~memlane.server.auth` (the key as a :class:`~memlane.server.auth.Caller`),
:mod:`~memlane.server.errors` (the error table), :mod:`~memlane.server.schemas`
(bodies, documented errors), :mod:`~memlane.server.responses` (response models),
:mod:`~memlane.server.metrics` (Prometheus),
:mod:`~memlane.server.middleware` (body limit), :mod:`~memlane.server.mcp` (MCP).
"""

import contextlib
import functools
from collections.abc import AsyncIterator
from typing import Any, cast

from memlane.errors import require_extra

require_extra("server", "memlane's REST server", "fastapi", "fastapi_offline", "uvicorn")

from fastapi import FastAPI
from starlette.types import ASGIApp

from memlane.api import AsyncMemory
from memlane.server import errors
from memlane.server import metrics as metrics_
from memlane.server.auth import KeyGate
from memlane.server.keys import KeyStore
from memlane.server.middleware import MAX_BODY_BYTES, BodyLimit
from memlane.server.routes import ROUTERS
from memlane.server.routes.common import ServerState, operation_id

__all__ = ["MAX_BODY_BYTES", "create_app"]

_DESCRIPTION = (
    "Memory for AI agents: memories, sessions, state, context, jobs. Every /v1 "
    "route needs an API key (`memlane keys create`), sent as `Authorization: "
    "Bearer <key>` or `X-API-Key`. Errors are JSON `{error, type}`."
)


def create_app(
    memory: AsyncMemory,
    keys: KeyStore,
    *,
    manager: Any | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    mcp: bool = True,
    host: str = "127.0.0.1",
) -> FastAPI:
    """The ASGI app over ``memory``. ``manager`` (a :class:`MemoryManager` over the same
    store) enables ``/learn`` and LLM summaries. With ``mcp`` the MCP servers (streamable
    HTTP, API key required) are mounted: ``/mcp/`` (every call names its user) and
    ``/mcp/me/`` (bound to the one user the key is limited to; no ``user_id`` argument)."""
    metrics = metrics_.Metrics(manager)
    metrics_.observe_effects(memory, metrics)
    if manager is not None and manager.memory is not memory:
        metrics_.observe_effects(manager.memory, metrics)  # its chat calls and writes
    timed = cast(AsyncMemory, metrics_.TimedMemory(memory, metrics))
    mcp_apps = _mcp_apps(timed, keys, host) if mcp else []

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for _mount, mcp_server, _asgi in mcp_apps:
                await stack.enter_async_context(mcp_server.session_manager.run())
            yield

    app = FastAPI(
        title="memlane",
        version="0.1.0",
        description=_DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by routes.service from local files, not a CDN
        redoc_url=None,
        generate_unique_id_function=operation_id,
    )
    app.state.memlane = ServerState(timed, keys, metrics, manager)
    for mount, _server, asgi in mcp_apps:
        app.mount(mount, KeyGate(asgi, keys))
    errors.install(app)
    metrics_.install(app, metrics)
    for router in ROUTERS:
        # The routes themselves, not an included router: app.routes lists every route
        # (the 405 answer's Allow header and the tests read it).
        app.router.routes.extend(router.routes)
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.openapi = functools.partial(_openapi, app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with each operation's path parameters in the order its path
    names them (FastAPI lists a handler's own before its dependencies': the user id, taken
    by :data:`~memlane.server.routes.common.UserCall`, would come after the memory id),
    so a generated client's positional arguments follow the path."""
    schema = FastAPI.openapi(app)
    for path, item in schema["paths"].items():
        for op in item.values():
            op.get("parameters", []).sort(
                key=lambda p: path.find("{" + p["name"] + "}") if p["in"] == "path" else len(path)
            )
    return schema


def _mcp_apps(memory: AsyncMemory, keys: KeyStore, host: str) -> list[tuple[str, Any, ASGIApp]]:
    """(mount path, MCP server, its ASGI app) for ``/mcp/me`` and ``/mcp``."""
    from memlane.server.mcp import build_mcp, key_resolver, key_user_resolver

    security = None
    if host not in ("127.0.0.1", "localhost", "::1"):
        from mcp.server.transport_security import TransportSecuritySettings

        security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    apps: list[tuple[str, Any, ASGIApp]] = []
    # /mcp/me first: the /mcp mount would otherwise take its requests.
    for path, resolver in (("/mcp/me", key_user_resolver(keys)), ("/mcp", key_resolver(keys))):
        server = build_mcp(memory, resolver)
        endpoint = server.streamable_http_app(
            streamable_http_path="/", host=host, transport_security=security
        )
        apps.append((path, server, endpoint))
    return apps
