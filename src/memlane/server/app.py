"""The REST API: the whole public API over HTTP, scoped by API key.

Every route under ``/v1/users/{user_id}/...`` asks :func:`memlane.access.authorize` with
the caller's key first: the key's tenant namespaces the user id, a key limited to some
users gets 403 for any other, and a key limited to some agents acts only as those agents
(``agent_id`` required; whole-user routes refused). Acting as an agent, a call sees that
agent's memories and sessions and the user's shared ones (:func:`memlane.access.visible`).
Errors are JSON ``{"error", "type"}`` with 400/401/403/404/405/409/413/422/501/503;
nothing internal (no stack trace) reaches a client.
"""

import contextlib
import json
import logging
import re
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from importlib import resources
from typing import Annotated, Any, Literal, TypeVar

from memlane.errors import require_extra

require_extra("server", "memlane's REST server", "fastapi", "fastapi_offline", "uvicorn")

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
)
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from memlane.access import Action, authorize, check_action, visible, visible_filters
from memlane.api import AsyncMemory
from memlane.errors import (
    AccessDeniedError,
    ConfigurationError,
    ConflictError,
    EmbeddingError,
    LLMError,
    MemlaneError,
    NoModelError,
    NotFoundError,
    StoreError,
    UnsupportedError,
    ValidationError,
    no_history,
    no_memory,
    no_session,
)
from memlane.manager.flows import conversation_text
from memlane.models import Filters, MemoryKind, MemoryRecord, SearchHit
from memlane.models import Scope as UserScope
from memlane.server.keys import ApiKey, KeyStore, public_user
from memlane.transfer import read_numbered_jsonl

log = logging.getLogger("memlane.server")

MAX_BODY_BYTES = 1_000_000


# ---------------------------------------------------------------------------- bodies


ID_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
"""An identifier: not blank, no control characters (what ``check_id`` accepts)."""

Id = Annotated[str, Field(min_length=1, max_length=256, pattern=ID_PATTERN)]
"""A user, agent, session, run or idempotency id in a body."""

Text = Annotated[
    str,
    Field(
        min_length=1,
        pattern=r"\S",
        description="Not blank, no NUL; at most 20,000 characters (the store's limit).",
    ),
]
JSONObject = Annotated[
    dict[str, Any],
    Field(description="A JSON object nested at most 64 levels deep, with no NUL characters."),
]


def _path_id(what: str) -> Any:
    return Path(min_length=1, max_length=256, pattern=ID_PATTERN, description=what)


UserId = Annotated[str, _path_id("The user, as the key's tenant names them; no '/'.")]
MemoryId = Annotated[str, _path_id("A memory id.")]
SessionId = Annotated[str, _path_id("A session id.")]
JobId = Annotated[str, _path_id("A job id.")]
AgentQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=256,
        pattern=ID_PATTERN,
        description="The agent making the call: it sees its own and shared objects only. "
        "Required with an agent-limited key.",
    ),
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    """Every error answer."""

    error: str = Field(description="What went wrong, for a person.")
    type: str = Field(description="The error's kind, e.g. ValidationError, Forbidden.")
    details: list[dict[str, Any]] | None = Field(
        default=None, description="For invalid requests: where and what (at most 20)."
    )


_WHY = {
    400: "The store or configuration cannot do this (e.g. an unsupported search recipe).",
    401: "Missing, invalid or revoked API key (`WWW-Authenticate: Bearer`).",
    403: "The key may not act for this user, as this agent, or write.",
    404: "No such object for this user (or not visible to the calling agent).",
    405: "Method not allowed; `Allow` lists the allowed ones.",
    409: "A compare-and-swap lost: the object changed since it was read (the current "
    "version differs from `expected_version`, or a concurrent write got there first).",
    413: "The request body is over the server's limit (`--max-body-bytes`).",
    422: "Invalid request: `details` says where and what.",
    501: "Learning needs a chat model and this server has none configured.",
    503: "The store or the language model is unavailable; retry later.",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses for error ``codes``, each an :class:`ErrorBody`."""
    return {code: {"model": ErrorBody, "description": _WHY[code]} for code in codes}


V1_CODES = (400, 401, 403, 404, 413, 422, 503)
V1_ERRORS = _errors(*V1_CODES)
"""What any route under /v1/users/{user_id} can answer besides success."""

JSON_ERRORS: dict[int | str, Any] = {
    code: {
        "description": _WHY[code],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    for code in V1_CODES
}
"""V1_ERRORS for a route whose success is not JSON (given a model, FastAPI would file the
errors under the route's own media type)."""


class NDJSONResponse(Response):
    media_type = "application/x-ndjson"


_NDJSON = {"application/x-ndjson": {"schema": {"type": "string", "description": (
    "One JSON object per line: a header row, then the user's records, history, sessions, "
    "runs, state and jobs, as `memlane export` writes them."
)}}}  # fmt: skip


_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def _operation_id(route: APIRoute) -> str:
    """Operation ids are the handlers' names (add_memory, search ...): what a generated
    client calls its methods."""
    return route.name


def _docs_assets() -> Any:
    """Swagger UI's files, shipped by the fastapi-offline package: /docs needs no CDN."""
    return resources.files("fastapi_offline") / "static"


class AddBody(_Body):
    text: Text
    kind: Literal["fact", "preference", "episode", "summary", "procedure"] = "fact"
    topics: list[str] = Field(default_factory=list)
    metadata: JSONObject = Field(default_factory=dict)
    importance: float = 0.5
    event_at: datetime | None = None
    ttl_seconds: float | None = Field(default=None, gt=0, le=100 * 365 * 86400)
    session_id: Id | None = None
    agent_id: Id | None = None
    idempotency_key: Id | None = None


class UpdateBody(_Body):
    text: Text | None = None
    topics: list[str] | None = None
    metadata: JSONObject | None = None
    importance: float | None = None
    expected_version: int | None = None
    reason: str | None = None


class SupersedeBody(_Body):
    text: Text
    reason: str | None = None


class SearchBody(_Body):
    query: Text
    limit: int = Field(default=10, ge=1, le=1000)
    recipe: str = "hybrid"
    explain: bool = False
    kinds: list[str] = Field(default_factory=list)
    topics: list[str] = Field(default_factory=list)
    session_id: Id | None = None
    agent_id: Id | None = None
    include_superseded: bool = False


class MessageBody(_Body):
    role: str
    content: str


class MessagesBody(_Body):
    messages: list[MessageBody] = Field(min_length=1)
    agent_id: Id | None = None
    run_id: Id | None = None


class StateBody(_Body):
    data: JSONObject
    expected_version: int = Field(ge=0)
    name: Id = "default"


class ContextBody(_Body):
    budget: int = Field(ge=1, le=1_000_000)
    query: str | None = None
    session_id: Id | None = None
    last_runs: int = Field(default=3, ge=0, le=1000)
    max_memories: int = Field(default=20, ge=0, le=1000)
    tiers: list[str] | None = None


class LearnBody(_Body):
    messages: list[MessageBody] = Field(min_length=1)
    session_id: Id | None = None
    agent_id: Id | None = None


# ---------------------------------------------------------------------------- helpers


_NESTED = ("record", "snapshot", "data")
"""Where memlane's own objects nest others that carry a ``user_id`` (a search hit's
record, a history event's snapshot, an export row's data)."""


def _map_user_ids(value: dict[str, Any], tenant: str) -> dict[str, Any]:
    """Replace store user ids by the tenant's public ones in memlane's own fields only —
    never inside user data such as metadata or state."""
    out = dict(value)
    if isinstance(out.get("user_id"), str):
        out["user_id"] = public_user(tenant, out["user_id"]) or out["user_id"]
    # "data" nests a memlane object only in an export row ({"type", "data"}); elsewhere
    # (state) it is the caller's own data and is left alone.
    nested = _NESTED if "type" in out else _NESTED[:2]
    for name in nested:
        inner = out.get(name)
        if isinstance(inner, dict):
            out[name] = _map_user_ids(inner, tenant)
    return out


_TENANT_PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,64}::")
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class _Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.count: dict[tuple[str, str], int] = defaultdict(int)
        self.started = time.time()

    def render(self, extra: dict[str, float]) -> str:
        lines = [
            "# HELP memlane_requests_total HTTP requests by route, method and status.",
            "# TYPE memlane_requests_total counter",
        ]
        for (route, method, status), n in sorted(self.requests.items()):
            lines.append(
                f'memlane_requests_total{{route="{route}",method="{method}",status="{status}"}} {n}'
            )
        lines += [
            "# HELP memlane_request_seconds Time spent serving requests.",
            "# TYPE memlane_request_seconds summary",
        ]
        for (route, method), s in sorted(self.seconds.items()):
            labels = f'route="{route}",method="{method}"'
            lines.append(f"memlane_request_seconds_sum{{{labels}}} {s:.6f}")
            lines.append(f"memlane_request_seconds_count{{{labels}}} {self.count[(route, method)]}")
        for name, value in extra.items():
            lines += [f"# TYPE {name} gauge", f"{name} {value}"]
        return "\n".join(lines) + "\n"


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(send, self.limit)
            return
        # Read the whole body first (it is small by definition), then replay it.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                await _too_large(send, self.limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class KeyGate:
    """Only requests with a valid API key reach the wrapped app (the MCP endpoint); the
    tools check each call's user against the key again."""

    def __init__(self, app: ASGIApp, keys: KeyStore) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
            }
            auth = headers.get("authorization", "")
            token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
            if await self.keys.acheck(token or headers.get("x-api-key", "")) is None:
                body = json.dumps({"error": "invalid or missing API key", "type": "Unauthorized"})
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", b"Bearer"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body.encode()})
                return
        await self.app(scope, receive, send)


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps({"error": f"request body over {limit} bytes", "type": "TooLarge"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------- app


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
    mcp_apps: list[tuple[str, Any, ASGIApp]] = []  # (mount path, server, app)
    if mcp:
        from memlane.server.mcp import build_mcp, key_resolver, key_user_resolver

        security = None
        if host not in ("127.0.0.1", "localhost", "::1"):
            from mcp.server.transport_security import TransportSecuritySettings

            security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
        # /mcp/me first: the /mcp mount would otherwise take its requests.
        for path, resolver in (("/mcp/me", key_user_resolver(keys)), ("/mcp", key_resolver(keys))):
            server = build_mcp(memory, resolver)
            endpoint = server.streamable_http_app(
                streamable_http_path="/", host=host, transport_security=security
            )
            mcp_apps.append((path, server, endpoint))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for _mount, mcp_server, _asgi in mcp_apps:
                await stack.enter_async_context(mcp_server.session_manager.run())
            yield

    app = FastAPI(
        title="memlane",
        version="0.1.0",
        description=(
            "Memory for AI agents: memories, sessions, state, context, jobs. Every /v1 "
            "route needs an API key (`memlane keys create`), sent as `Authorization: "
            "Bearer <key>` or `X-API-Key`. Errors are JSON `{error, type}`."
        ),
        lifespan=lifespan,
        docs_url=None,  # served below from local files, not a CDN
        redoc_url=None,
        generate_unique_id_function=_operation_id,
    )

    def v1(
        method: str, path: str, *, responses: dict[int | str, Any] | None = None, **kw: Any
    ) -> Callable[[_Handler], _Handler]:
        """A /v1/users/{user_id} route, documented with every error it can answer."""
        return app.api_route(
            path, methods=[method], responses={**V1_ERRORS, **(responses or {})}, **kw
        )

    for mount, _server, asgi in mcp_apps:
        app.mount(mount, KeyGate(asgi, keys))
    metrics = _Metrics()

    # ------------------------------------------------------------------ errors

    def problem(status: int, message: str, kind: str) -> JSONResponse:
        return JSONResponse({"error": message, "type": kind}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed"}.get(
            exc.status_code, "HTTPError"
        )
        response = problem(exc.status_code, str(exc.detail), kind)
        response.headers.update(exc.headers or {})  # 405's Allow, 401's WWW-Authenticate
        if exc.status_code == 405:
            # Starlette names only the first route whose path matched; a path served by
            # several routes (GET and POST /memories) allows all of their methods.
            response.headers["Allow"] = ", ".join(_allowed_methods(app, request))
        return response

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in exc.errors()[:20]
        ]
        body = {"error": "invalid request", "type": "ValidationError", "details": details}
        return JSONResponse(body, status_code=422)

    warned: list[bool] = []

    def no_model() -> JSONResponse:
        """501: a setting this server lacks, not a failure to retry; logged once."""
        if not warned:
            warned.append(True)
            log.warning(
                "learn was called but no chat model is configured: set MEMLANE_LLM_BASE_URL "
                "and MEMLANE_LLM_MODEL to enable it"
            )
        message = (
            "learning needs a chat model and this server has none configured "
            "(its operator sets MEMLANE_LLM_BASE_URL and MEMLANE_LLM_MODEL)"
        )
        return problem(501, message, "NoModelError")

    @app.exception_handler(MemlaneError)
    async def _on_memlane(request: Request, exc: MemlaneError) -> JSONResponse:
        status = 500
        if isinstance(exc, ValidationError):
            status = 422
        elif isinstance(exc, NotFoundError):
            status = 404
        elif isinstance(exc, ConflictError):
            status = 409
        elif isinstance(exc, AccessDeniedError):
            return problem(403, str(exc), "Forbidden")
        elif isinstance(exc, UnsupportedError):
            status = 400
        elif isinstance(exc, LLMError | StoreError | EmbeddingError | ConfigurationError):
            status = 503
        if status == 500:
            log.error("unexpected memlane error", exc_info=exc)
            return problem(500, "internal error", "InternalError")
        if isinstance(exc, NoModelError):
            return no_model()
        if isinstance(exc, StoreError):
            log.error("store error on %s %s", request.method, request.url.path, exc_info=exc)
            return problem(503, "the store is unavailable; try again", "StoreError")
        if isinstance(exc, EmbeddingError | ConfigurationError):
            # An operator's matter (e.g. a store written by another embedding model): the
            # details go to the log; the client learns the server cannot serve this now.
            log.error(
                "server misconfigured on %s %s", request.method, request.url.path, exc_info=exc
            )
            return problem(
                503, "the server's embedding model or configuration failed", type(exc).__name__
            )
        if isinstance(exc, LLMError):
            # The provider's answer can echo keys or prompts: it goes to the log only.
            log.error("model error on %s %s", request.method, request.url.path, exc_info=exc)
            return problem(503, "the language model failed; try again", type(exc).__name__)
        # Never show a store-side user id ("tenant::user") to a client.
        return problem(status, _TENANT_PREFIX.sub("", str(exc)), type(exc).__name__)

    @app.exception_handler(UnicodeError)
    async def _on_unicode(request: Request, exc: UnicodeError) -> JSONResponse:
        return problem(
            422, "text is not valid Unicode (lone surrogate or bad bytes)", "ValidationError"
        )

    @app.exception_handler(Exception)
    async def _on_crash(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem(500, "internal error", "InternalError")

    @app.middleware("http")
    async def _measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        method = request.method if request.method in _METHODS else "OTHER"
        metrics.requests[(path, method, response.status_code)] += 1
        metrics.seconds[(path, method)] += time.perf_counter() - start
        metrics.count[(path, method)] += 1
        return response

    # ------------------------------------------------------------------ auth

    bearer = HTTPBearer(auto_error=False, description="An API key from `memlane keys create`.")
    header = APIKeyHeader(
        name="X-API-Key", auto_error=False, description="The same key, for clients without Bearer."
    )

    async def api_key(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        x_api_key: Annotated[str | None, Depends(header)],
    ) -> ApiKey:
        token = (credentials.credentials.strip() if credentials else "") or x_api_key or ""
        if not token:
            raise _Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        found = await keys.acheck(token)
        if found is None:
            raise _Unauthorized("invalid or revoked API key")
        return found

    @app.exception_handler(_Unauthorized)
    async def _on_unauthorized(request: Request, exc: _Unauthorized) -> JSONResponse:
        response = problem(401, str(exc), "Unauthorized")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    Key = Annotated[ApiKey, Depends(api_key)]

    def scope(key: ApiKey, action: Action, user_id: str, agent_id: str | None = None) -> UserScope:
        """Where the key may do ``action`` for ``user_id`` as ``agent_id``: the one rule."""
        return authorize(key.grant, action, user_id, agent_id)

    def out(key: ApiKey, value: dict[str, Any]) -> dict[str, Any]:
        return _map_user_ids(value, key.tenant)

    async def own_record(where: UserScope, memory_id: str) -> MemoryRecord:
        record = await memory.get(memory_id, user_id=where.user_id)
        if not visible(where, record.agent_id):
            raise no_memory(memory_id, where.user_id)  # as if absent: nothing to tell apart
        return record

    def hit_dict(key: ApiKey, hit: SearchHit) -> dict[str, Any]:
        return out(key, hit.to_dict())

    # ------------------------------------------------------------------ service

    @app.get("/health", tags=["service"])
    async def health() -> dict[str, Any]:
        try:
            await memory.store.abatch([])
            ok = True
        except Exception:
            ok = False
        backend = memory.store.url.split(":", 1)[0]
        body: dict[str, Any] = {"status": "ok" if ok else "degraded", "store": backend}
        health_of = getattr(memory.store, "health", None)
        if callable(health_of):  # a Redis tier: its state and counters, not its URLs
            tiers = {k: v for k, v in health_of().items() if k != "store"}
            body["tiers"] = tiers
            if tiers.get("redis") == "degraded":
                body["status"] = "degraded"
        return body

    @app.get("/metrics", tags=["service"], response_class=PlainTextResponse)
    async def prometheus() -> str:
        extra = {"memlane_uptime_seconds": round(time.time() - metrics.started, 3)}
        if manager is not None:
            extra["memlane_jobs_unfinished"] = manager.jobs.unfinished()
        return metrics.render(extra)

    @app.get("/dashboard", include_in_schema=False, response_class=HTMLResponse)
    async def dashboard() -> str:
        return resources.files("memlane.server").joinpath("dashboard.html").read_text("utf-8")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="memlane API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title="memlane API",
            redoc_js_url="/docs/assets/redoc.standalone.js",
            redoc_favicon_url="/docs/assets/favicon.png",
            with_google_fonts=False,
        )

    assets = {
        f.name: f for f in _docs_assets().iterdir() if f.name.endswith((".js", ".css", ".png"))
    }

    @app.get("/docs/assets/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> Response:
        if name not in assets:
            raise StarletteHTTPException(404, "no such file")
        return FileResponse(str(assets[name]))

    @app.get("/", include_in_schema=False)
    async def root() -> dict[str, str]:
        return {"service": "memlane", "docs": "/docs", "openapi": "/openapi.json"}

    # ------------------------------------------------------------------ users

    @app.get("/v1/users", tags=["users"], responses=_errors(401, 403, 413, 503))
    async def list_users(key: Key) -> dict[str, Any]:
        check_action(key.grant, Action.READ_ALL)
        users = [public_user(key.tenant, u) for u in await memory.list_users()]
        return {"users": [u for u in users if u is not None and key.grant.allows_user(u)]}

    @v1("DELETE", "/v1/users/{user_id}", tags=["users"])
    async def forget_user(user_id: UserId, key: Key) -> dict[str, Any]:
        counts = await memory.forget_user(scope(key, Action.WRITE_ALL, user_id).user_id)
        return {"forgotten": user_id, "counts": counts}

    # ------------------------------------------------------------------ memories

    @v1(
        "POST",
        "/v1/users/{user_id}/memories",
        status_code=201,
        tags=["memories"],
        responses=_errors(409),
    )
    async def add_memory(user_id: UserId, body: AddBody, key: Key) -> dict[str, Any]:
        where = scope(key, Action.WRITE, user_id, body.agent_id)
        if body.session_id is not None:  # an agent writes to its own or shared sessions
            await session_scope(where, body.session_id, writing=True)
        extra: dict[str, Any] = {}
        if body.idempotency_key:
            extra["idempotency_key"] = body.idempotency_key
        record = await memory.add(
            body.text,
            user_id=where.user_id,
            kind=MemoryKind(body.kind),
            topics=body.topics,
            metadata=body.metadata,
            importance=body.importance,
            event_at=body.event_at,
            ttl=None if body.ttl_seconds is None else timedelta(seconds=body.ttl_seconds),
            session_id=body.session_id,
            agent_id=where.agent_id,
            actor=f"api:{key.key_id}",
            **extra,
        )
        return out(key, record.to_dict())

    @v1("GET", "/v1/users/{user_id}/memories", tags=["memories"])
    async def list_memories(
        user_id: UserId,
        key: Key,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        kind: Annotated[list[str] | None, Query()] = None,
        agent_id: AgentQuery = None,
        include_superseded: bool = False,
        include_deleted: bool = False,
        newest_first: bool = True,
    ) -> dict[str, Any]:
        where = scope(key, Action.READ, user_id, agent_id)
        f = Filters(
            kinds=tuple(kind or ()),  # type: ignore[arg-type]  # Filters validates
            include_superseded=include_superseded,
            include_deleted=include_deleted,
        )
        page = await memory.list(
            user_id=where.user_id,
            filters=visible_filters(where, f),
            cursor=cursor,
            limit=limit,
            newest_first=newest_first,
        )
        return {
            "items": [out(key, r.to_dict()) for r in page.items],
            "next_cursor": page.next_cursor,
        }

    @v1("GET", "/v1/users/{user_id}/memories/{memory_id}", tags=["memories"])
    async def get_memory(
        user_id: UserId, memory_id: MemoryId, key: Key, agent_id: AgentQuery = None
    ) -> dict[str, Any]:
        record = await own_record(scope(key, Action.READ, user_id, agent_id), memory_id)
        return out(key, record.to_dict())

    @v1(
        "PATCH",
        "/v1/users/{user_id}/memories/{memory_id}",
        tags=["memories"],
        responses=_errors(409),
    )
    async def update_memory(
        user_id: UserId,
        memory_id: MemoryId,
        body: UpdateBody,
        key: Key,
        agent_id: AgentQuery = None,
    ) -> dict[str, Any]:
        where = scope(key, Action.WRITE, user_id, agent_id)
        await own_record(where, memory_id)
        changes = body.model_dump(exclude_none=True, exclude={"expected_version", "reason"})
        record = await memory.update(
            memory_id,
            user_id=where.user_id,
            expected_version=body.expected_version,
            reason=body.reason,
            actor=f"api:{key.key_id}",
            **changes,
        )
        return out(key, record.to_dict())

    @v1(
        "POST",
        "/v1/users/{user_id}/memories/{memory_id}/supersede",
        tags=["memories"],
        responses=_errors(409),
    )
    async def supersede_memory(
        user_id: UserId,
        memory_id: MemoryId,
        body: SupersedeBody,
        key: Key,
        agent_id: AgentQuery = None,
    ) -> dict[str, Any]:
        where = scope(key, Action.WRITE, user_id, agent_id)
        await own_record(where, memory_id)
        record = await memory.supersede(
            memory_id,
            body.text,
            user_id=where.user_id,
            reason=body.reason,
            actor=f"api:{key.key_id}",
        )
        return out(key, record.to_dict())

    # A write that lost a race to a concurrent one (two deletes at once) answers 409.
    @v1(
        "DELETE",
        "/v1/users/{user_id}/memories/{memory_id}",
        tags=["memories"],
        responses=_errors(409),
    )
    async def delete_memory(
        user_id: UserId,
        memory_id: MemoryId,
        key: Key,
        reason: str | None = None,
        agent_id: AgentQuery = None,
    ) -> dict[str, Any]:
        where = scope(key, Action.WRITE, user_id, agent_id)
        await own_record(where, memory_id)
        record = await memory.delete(
            memory_id, user_id=where.user_id, reason=reason, actor=f"api:{key.key_id}"
        )
        return out(key, record.to_dict())

    @v1(
        "POST",
        "/v1/users/{user_id}/memories/{memory_id}/restore",
        tags=["memories"],
        responses=_errors(409),
    )
    async def restore_memory(
        user_id: UserId, memory_id: MemoryId, key: Key, agent_id: AgentQuery = None
    ) -> dict[str, Any]:
        where = scope(key, Action.WRITE, user_id, agent_id)
        await own_record(where, memory_id)
        record = await memory.restore(memory_id, user_id=where.user_id, actor=f"api:{key.key_id}")
        return out(key, record.to_dict())

    @v1("GET", "/v1/users/{user_id}/memories/{memory_id}/history", tags=["memories"])
    async def memory_history(
        user_id: UserId, memory_id: MemoryId, key: Key, agent_id: AgentQuery = None
    ) -> dict[str, Any]:
        where = scope(key, Action.READ, user_id, agent_id)
        events = await memory.history(memory_id, user_id=where.user_id)
        last = next((e.snapshot for e in reversed(events) if e.snapshot is not None), None)
        # A purged memory's events keep no snapshot, so no owner: an agent is not shown them.
        hidden = last is None and where.agent_id is not None
        if hidden or not visible(where, (last or {}).get("agent_id")):
            raise no_history(memory_id, where.user_id)
        return {"events": [out(key, e.to_dict()) for e in events]}

    @v1("POST", "/v1/users/{user_id}/search", tags=["memories"])
    async def search(user_id: UserId, body: SearchBody, key: Key) -> dict[str, Any]:
        where = scope(key, Action.READ, user_id, body.agent_id)
        f = Filters(
            kinds=tuple(body.kinds),  # type: ignore[arg-type]  # Filters validates
            topics=tuple(body.topics),
            session_id=body.session_id,
            include_superseded=body.include_superseded,
        )
        hits = await memory.search(
            body.query,
            user_id=where.user_id,
            limit=body.limit,
            filters=visible_filters(where, f),
            recipe=body.recipe,
            explain=body.explain,
        )
        return {"hits": [hit_dict(key, h) for h in hits]}

    # ------------------------------------------------------------------ sessions

    async def session_scope(where: UserScope, session_id: str, *, writing: bool = False) -> None:
        """A call acting as an agent reaches that agent's sessions and shared ones (the
        rule of memlane.access); writing may also create a new one."""
        if where.agent_id is None:
            return
        try:
            session = await memory.get_session(session_id, user_id=where.user_id)
        except NotFoundError:
            if writing:
                return
            raise
        if not visible(where, session.agent_id):
            raise no_session(session_id, where.user_id)

    @v1("GET", "/v1/users/{user_id}/sessions", tags=["sessions"])
    async def list_sessions(
        user_id: UserId,
        key: Key,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> dict[str, Any]:
        page = await memory.list_sessions(
            user_id=scope(key, Action.READ_ALL, user_id).user_id, cursor=cursor, limit=limit
        )
        return {
            "items": [out(key, s.to_dict()) for s in page.items],
            "next_cursor": page.next_cursor,
        }

    @v1(
        "POST",
        "/v1/users/{user_id}/sessions/{session_id}/messages",
        status_code=201,
        tags=["sessions"],
    )
    async def add_messages(
        user_id: UserId, session_id: SessionId, body: MessagesBody, key: Key
    ) -> dict[str, Any]:
        where = scope(key, Action.WRITE, user_id, body.agent_id)
        await session_scope(where, session_id, writing=True)
        run = await memory.add_messages(
            session_id,
            [(m.role, m.content) for m in body.messages],
            user_id=where.user_id,
            agent_id=where.agent_id,
            run_id=body.run_id,
        )
        return {"run_id": run.run_id, "messages": [out(key, m.to_dict()) for m in run.messages]}

    @v1("GET", "/v1/users/{user_id}/sessions/{session_id}/messages", tags=["sessions"])
    async def get_messages(
        user_id: UserId,
        session_id: SessionId,
        key: Key,
        last_runs: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
        agent_id: AgentQuery = None,
    ) -> dict[str, Any]:
        where = scope(key, Action.READ, user_id, agent_id)
        await session_scope(where, session_id)
        runs = await memory.get_history(session_id, user_id=where.user_id, last_runs=last_runs)
        return {
            "runs": [
                {"run_id": r.run_id, "messages": [out(key, m.to_dict()) for m in r.messages]}
                for r in runs
            ]
        }

    @v1("GET", "/v1/users/{user_id}/sessions/{session_id}/state", tags=["sessions"])
    async def get_state(
        user_id: UserId,
        session_id: SessionId,
        key: Key,
        name: str = "default",
        agent_id: AgentQuery = None,
    ) -> dict[str, Any]:
        where = scope(key, Action.READ, user_id, agent_id)
        await session_scope(where, session_id)
        state = await memory.get_state(session_id, user_id=where.user_id, name=name)
        return out(key, state.to_dict())

    @v1(
        "PUT",
        "/v1/users/{user_id}/sessions/{session_id}/state",
        tags=["sessions"],
        responses=_errors(409),
    )
    async def set_state(
        user_id: UserId,
        session_id: SessionId,
        body: StateBody,
        key: Key,
        agent_id: AgentQuery = None,
    ) -> dict[str, Any]:
        where = scope(key, Action.WRITE, user_id, agent_id)
        await session_scope(where, session_id, writing=True)
        state = await memory.set_state(
            session_id,
            body.data,
            user_id=where.user_id,
            name=body.name,
            expected_version=body.expected_version,
            agent_id=where.agent_id,  # a session this creates belongs to the key's agent
        )
        return out(key, state.to_dict())

    @v1("GET", "/v1/users/{user_id}/sessions/{session_id}/state/history", tags=["sessions"])
    async def state_history(
        user_id: UserId,
        session_id: SessionId,
        key: Key,
        name: str = "default",
        agent_id: AgentQuery = None,
    ) -> dict[str, Any]:
        where = scope(key, Action.READ, user_id, agent_id)
        await session_scope(where, session_id)
        versions = await memory.state_history(session_id, user_id=where.user_id, name=name)
        return {"versions": [out(key, v.to_dict()) for v in versions]}

    @v1(
        "POST",
        "/v1/users/{user_id}/sessions/{session_id}/summary",
        tags=["sessions"],
        responses=_errors(409),  # superseding the previous summary can lose a race
    )
    async def summarize(
        user_id: UserId, session_id: SessionId, key: Key, agent_id: AgentQuery = None
    ) -> dict[str, Any]:
        where = scope(key, Action.WRITE, user_id, agent_id)
        await session_scope(where, session_id)
        stored = where.user_id
        if manager is not None and manager.llm is not None:
            import asyncio

            record = await asyncio.get_running_loop().run_in_executor(
                None, lambda: manager.summarize_session(session_id, user_id=stored)
            )
        else:
            record = await memory.summarize_session(session_id, user_id=stored)
        return out(key, record.to_dict())

    @v1("GET", "/v1/users/{user_id}/sessions/{session_id}/summary", tags=["sessions"])
    async def get_summary(
        user_id: UserId, session_id: SessionId, key: Key, agent_id: AgentQuery = None
    ) -> dict[str, Any]:
        where = scope(key, Action.READ, user_id, agent_id)
        await session_scope(where, session_id)
        record = await memory.get_summary(session_id, user_id=where.user_id)
        if record is None:
            raise NotFoundError(f"session {session_id!r} has no summary")
        return out(key, record.to_dict())

    @v1("DELETE", "/v1/users/{user_id}/sessions/{session_id}", tags=["sessions"])
    async def delete_session(user_id: UserId, session_id: SessionId, key: Key) -> dict[str, Any]:
        stored = scope(key, Action.WRITE_ALL, user_id).user_id
        n = await memory.delete_session(session_id, user_id=stored)
        return {"deleted": n}

    # ------------------------------------------------------------------ context

    @v1("POST", "/v1/users/{user_id}/context", tags=["context"])
    async def build_context(user_id: UserId, body: ContextBody, key: Key) -> dict[str, Any]:
        stored = scope(key, Action.READ_ALL, user_id).user_id
        extra: dict[str, Any] = {} if body.tiers is None else {"tiers": body.tiers}
        ctx = await memory.build_context(
            user_id=stored,
            budget=body.budget,
            query=body.query,
            session_id=body.session_id,
            last_runs=body.last_runs,
            max_memories=body.max_memories,
            **extra,
        )
        return ctx.to_dict()

    # ------------------------------------------------------------------ transfer

    @v1(
        "GET",
        "/v1/users/{user_id}/export",
        tags=["transfer"],
        response_class=NDJSONResponse,
        responses={
            200: {"description": "The user's data as NDJSON.", "content": _NDJSON},
            **JSON_ERRORS,
        },
    )
    async def export(user_id: UserId, key: Key) -> Response:
        rows = await memory.export_rows(user_id=scope(key, Action.READ_ALL, user_id).user_id)
        lines = [json.dumps(out(key, row), ensure_ascii=False) for row in rows]
        return NDJSONResponse("\n".join(lines) + "\n")

    @v1(
        "POST",
        "/v1/users/{user_id}/import",
        tags=["transfer"],
        responses=_errors(409),
        openapi_extra={"requestBody": {"required": True, "content": _NDJSON}},
    )
    async def import_rows(user_id: UserId, request: Request, key: Key) -> dict[str, Any]:
        stored = scope(key, Action.WRITE_ALL, user_id).user_id
        raw = await request.body()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationError(f"body is not UTF-8: {exc.reason}") from exc
        numbered = list(read_numbered_jsonl(text.splitlines()))
        rows = [_into_scope(row, user_id, stored, n) for n, row in numbered]
        result = await memory.import_rows(rows, lines=[n for n, _ in numbered])
        return {"imported": dict(result.counts)}

    # ------------------------------------------------------------------ jobs

    @v1("POST", "/v1/users/{user_id}/learn", status_code=202, tags=["jobs"], responses=_errors(501))
    async def learn(user_id: UserId, body: LearnBody, key: Key) -> dict[str, Any]:
        where = scope(key, Action.WRITE, user_id, body.agent_id)
        if body.session_id is not None:
            await session_scope(where, body.session_id, writing=True)
        messages = [(m.role, m.content) for m in body.messages]
        if manager is None:
            conversation_text(messages)  # a bad body is a 422, with or without a model
            raise NoModelError("no memory manager")
        job = manager.process_in_background(  # validates, then needs the model
            messages,
            user_id=where.user_id,
            session_id=body.session_id,
            agent_id=where.agent_id,
        )
        return out(key, job.to_dict())

    @v1("GET", "/v1/users/{user_id}/jobs/{job_id}", tags=["jobs"])
    async def get_job(
        user_id: UserId, job_id: JobId, key: Key, agent_id: AgentQuery = None
    ) -> dict[str, Any]:
        where = scope(key, Action.READ, user_id, agent_id)
        from memlane.ports import store as ops

        job = (await memory.store.abatch([ops.GetJob(where.user_id, job_id)]))[0]
        if job is None or not visible(where, job.agent_id):
            raise NotFoundError(f"no job {job_id!r}")
        return out(key, _job_dict(job))

    @v1("GET", "/v1/users/{user_id}/jobs", tags=["jobs"])
    async def list_jobs(user_id: UserId, key: Key) -> dict[str, Any]:
        stored = scope(key, Action.READ_ALL, user_id).user_id
        from memlane.ports import store as ops

        jobs = (await memory.store.abatch([ops.ListJobs(stored)]))[0]
        return {"jobs": [out(key, _job_dict(j)) for j in jobs]}

    return _with_limit(app, max_body_bytes)


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route serves at the request's path, in a stable order."""
    from starlette.routing import Match

    methods: set[str] = set()
    for route in app.router.routes:
        route_methods = getattr(route, "methods", None)
        if route_methods and route.matches(request.scope)[0] is not Match.NONE:
            methods |= set(route_methods)
    order = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    return sorted(methods, key=lambda m: (order.index(m) if m in order else len(order), m))


_PLAIN_ERRORS = ("ValidationError:", "ConflictError:", "NotFoundError:")


def _job_dict(job: Any) -> dict[str, Any]:
    """A job for a client. Errors of memlane's own checks keep their text; others (a
    model provider's answer can echo keys or prompts, a store's names hosts) say only
    their kind. `memlane jobs` on the machine shows everything."""
    d: dict[str, Any] = job.to_dict()
    error = d.get("error")
    if error and not str(error).startswith(_PLAIN_ERRORS):
        d["error"] = str(error).split(":", 1)[0][:80]
    return d


class _Unauthorized(Exception):
    pass


def _into_scope(row: Any, public: str, stored: str, line: int) -> Any:
    """An export row of ``public`` with store user ids; any other user is refused."""
    if not isinstance(row, dict):
        raise ValidationError(f"line {line}: each line must be a JSON object")
    data = row.get("data")
    if isinstance(data, dict) and "user_id" in data:
        if data["user_id"] != public:
            raise ValidationError(f"line {line}: row of another user ({data['user_id']!r})")
        data = {**data, "user_id": stored}
        snapshot = data.get("snapshot")
        if isinstance(snapshot, dict) and "user_id" in snapshot:
            if snapshot["user_id"] != public:
                raise ValidationError(f"line {line}: snapshot of another user")
            data["snapshot"] = {**snapshot, "user_id": stored}
        row = {**row, "data": data}
    return row


def _with_limit(app: FastAPI, limit: int) -> FastAPI:
    app.add_middleware(BodyLimit, limit=limit)
    return app
