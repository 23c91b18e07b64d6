"""Who is calling: the request's API key, turned once into a :class:`Caller` (its
:class:`~memlane.access.Grant` plus the key id that signs its writes).

REST routes take :data:`CallerDep`; the MCP endpoint is gated by :class:`KeyGate` and its
tools ask :func:`key_from_headers` — one token rule (``Authorization: Bearer <key>``,
else ``X-API-Key``) and one access rule (:func:`memlane.access.authorize`) for both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from memlane.access import Action, Grant, authorize, check_action, visible
from memlane.api import AsyncMemory
from memlane.errors import AccessDeniedError, no_memory
from memlane.models import MemoryRecord
from memlane.models import Scope as UserScope
from memlane.server.keys import ApiKey, KeyStore


class Unauthorized(Exception):
    """No valid API key: the error table answers 401 with ``WWW-Authenticate: Bearer``."""


def token_from_headers(headers: Mapping[str, str]) -> str:
    """The API key a request carries (lower-case header names): the Bearer token, else
    ``X-API-Key``; "" if none."""
    auth = headers.get("authorization", "")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    return token or headers.get("x-api-key", "")


async def key_from_headers(keys: KeyStore, headers: Mapping[str, str] | None) -> ApiKey:
    """The key in ``headers`` (an MCP call's HTTP request): its grant and id. Raises
    AccessDeniedError for no request, or a missing, invalid or revoked key."""
    if headers is None:
        raise AccessDeniedError("no HTTP request: an API key is required")
    key = await keys.acheck(token_from_headers(headers))
    if key is None:
        raise AccessDeniedError("missing, invalid or revoked API key")
    return key


async def own_record(
    memory: AsyncMemory, where: UserScope, memory_id: str, *, include_quarantined: bool = False
) -> MemoryRecord:
    """The memory if a call in ``where`` sees it (:func:`memlane.access.visible`); else
    NotFoundError, as if absent: nothing to tell apart (a quarantined one is absent
    unless ``include_quarantined``). REST and MCP both ask this."""
    record = await memory.get(
        memory_id, user_id=where.user_id, include_quarantined=include_quarantined
    )
    if not visible(where, record.agent_id):
        raise no_memory(memory_id, where.user_id)
    return record


# ---------------------------------------------------------------------------- REST


@dataclass(frozen=True, slots=True)
class Caller:
    """A REST request's caller: what its key may touch, and the key's id."""

    grant: Grant
    key_id: str

    @property
    def tenant(self) -> str:
        assert self.grant.tenant is not None  # every API key belongs to a tenant
        return self.grant.tenant

    @property
    def actor(self) -> str:
        """Who history and the audit trail record as having made a call."""
        return f"api:{self.key_id}"

    def scope(self, action: Action, user_id: str, agent_id: str | None = None) -> UserScope:
        """Where the caller may do ``action`` for ``user_id`` as ``agent_id``: the one
        rule of :func:`memlane.access.authorize`. Raises AccessDeniedError."""
        return authorize(self.grant, action, user_id, agent_id)

    def check(self, action: Action) -> None:
        """:func:`memlane.access.check_action` (a call not about one user)."""
        check_action(self.grant, action)


_bearer = HTTPBearer(auto_error=False, description="An API key from `memlane keys create`.")
_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="The same key, for clients without Bearer."
)


async def caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    x_api_key: Annotated[str | None, Depends(_header)],
) -> Caller:
    """The dependency every /v1 route takes: the request's key as a :class:`Caller`.
    Raises Unauthorized (401)."""
    token = (credentials.credentials.strip() if credentials else "") or x_api_key or ""
    if not token:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    keys: KeyStore = request.app.state.memlane.keys
    found = await keys.acheck(token)
    if found is None:
        raise Unauthorized("invalid or revoked API key")
    request.state.tenant = found.grant.tenant  # how errors name the users (errors.py)
    return Caller(found.grant, found.key_id)


CallerDep = Annotated[Caller, Depends(caller)]


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
            if await self.keys.acheck(token_from_headers(headers)) is None:
                await _refuse(send)
                return
        await self.app(scope, receive, send)


async def _refuse(send: Send) -> None:
    body = json.dumps({"error": "invalid or missing API key", "type": "Unauthorized"})
    headers = [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": body.encode()})
