"""How the REST API answers errors: one table from exception type to status, type and
message policy, and the handlers that apply it.

Every error is JSON ``{"error", "type"}`` (422s add ``details``). Failures whose text can
name hosts, databases, keys or a model provider's answer (store, embedding, configuration,
model) say only what failed; their detail goes to the operator's log. Nothing internal
(no stack trace, no store user id ``tenant::user``) reaches a client.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

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
)
from memlane.server.auth import Unauthorized
from memlane.server.keys import public_user

log = logging.getLogger("memlane.server")

NO_MODEL = (
    "learning needs a chat model and this server has none configured "
    "(its operator sets MEMLANE_LLM_BASE_URL and MEMLANE_LLM_MODEL)"
)


@dataclass(frozen=True, slots=True)
class Answer:
    """How one kind of error is answered. ``kind`` None: the exception's class name;
    ``message`` None: the exception's own text (:func:`client_text`); ``logged``:
    what the operator's log says (with the traceback), or None."""

    status: int
    kind: str | None = None
    message: str | None = None
    logged: str | None = None


_UNAVAILABLE = "the server's embedding model or configuration failed"

ERROR_TABLE: tuple[tuple[type[BaseException], Answer], ...] = (
    (Unauthorized, Answer(401, "Unauthorized")),
    (AccessDeniedError, Answer(403, "Forbidden")),
    (ValidationError, Answer(422)),
    (NotFoundError, Answer(404)),
    (ConflictError, Answer(409)),
    (UnsupportedError, Answer(400)),
    (NoModelError, Answer(501, "NoModelError", NO_MODEL)),
    (StoreError, Answer(503, "StoreError", "the store is unavailable; try again", "store error")),
    (EmbeddingError, Answer(503, None, _UNAVAILABLE, "server misconfigured")),
    (ConfigurationError, Answer(503, None, _UNAVAILABLE, "server misconfigured")),
    (LLMError, Answer(503, None, "the language model failed; try again", "model error")),
    (MemlaneError, Answer(500, "InternalError", "internal error", "unexpected memlane error")),
    (
        UnicodeError,
        Answer(422, "ValidationError", "text is not valid Unicode (lone surrogate or bad bytes)"),
    ),
    (Exception, Answer(500, "InternalError", "internal error", "unhandled error")),
)
"""First match wins (subclasses before their bases)."""

_HTTP_KINDS = {400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed"}


def problem(status: int, message: str, kind: str) -> JSONResponse:
    """An error answer."""
    return JSONResponse({"error": message, "type": kind}, status_code=status)


def matching(exc: BaseException) -> tuple[type[BaseException], Answer]:
    """The table's first row for ``exc``: the type it matched, and the answer."""
    return next((t, a) for t, a in ERROR_TABLE if isinstance(exc, t))


def answer_for(exc: BaseException) -> Answer:
    """The table's answer for ``exc``."""
    return matching(exc)[1]


def client_text(exc: BaseException, tenant: str | None) -> str:
    """``exc``'s text for a client of ``tenant``: a user it names (a not-found's
    ``user_id``, the store's ``tenant::user``) is called by the tenant's name for them."""
    if tenant is None or not isinstance(exc, NotFoundError) or exc.user_id is None:
        return str(exc)
    return exc.naming(public_user(tenant, exc.user_id) or "?")


async def on_error(request: Request, exc: Exception) -> JSONResponse:
    """Answer ``exc`` as :data:`ERROR_TABLE` says."""
    rule = answer_for(exc)
    if rule.logged is not None:
        log.error("%s on %s %s", rule.logged, request.method, request.url.path, exc_info=exc)
    if isinstance(exc, NoModelError):
        _warn_no_model(request.app)
    # The caller dependency leaves the key's tenant on the request.
    message = rule.message or client_text(exc, getattr(request.state, "tenant", None))
    response = problem(rule.status, message, rule.kind or type(exc).__name__)
    if rule.status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def _warn_no_model(app: FastAPI) -> None:
    """501 is a setting this server lacks, not a failure to retry: logged once."""
    if getattr(app.state, "warned_no_model", False):
        return
    app.state.warned_no_model = True
    log.warning(
        "learn was called but no chat model is configured: set MEMLANE_LLM_BASE_URL "
        "and MEMLANE_LLM_MODEL to enable it"
    )


async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's own errors (no route, wrong method) in the same shape."""
    kind = _HTTP_KINDS.get(exc.status_code, "HTTPError")
    response = problem(exc.status_code, str(exc.detail), kind)
    response.headers.update(exc.headers or {})  # 405's Allow, 401's WWW-Authenticate
    if exc.status_code == 405:
        # Starlette names only the first route whose path matched; a path served by
        # several routes (GET and POST /memories) allows all of their methods.
        response.headers["Allow"] = ", ".join(_allowed_methods(request))
    return response


async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A request that does not fit the route's parameters or body: 422 with details."""
    details = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
        for e in exc.errors()[:20]
    ]
    body = {"error": "invalid request", "type": "ValidationError", "details": details}
    return JSONResponse(body, status_code=422)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path, in a stable order."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        route_methods = getattr(route, "methods", None)
        if route_methods and route.matches(request.scope)[0] is not Match.NONE:
            methods |= set(route_methods)
    order = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    return sorted(methods, key=lambda m: (order.index(m) if m in order else len(order), m))


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(StarletteHTTPException, on_http)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, on_invalid)  # type: ignore[arg-type]
    for kind in (MemlaneError, Unauthorized, UnicodeError, Exception):
        app.add_exception_handler(kind, on_error)
