"""memlane as an MCP server (the official ``mcp`` SDK): remember, search, forget, and a
context block, for desktop assistants, IDE agents and agent frameworks.

Two ways to run it:

- **stdio** (``memlane mcp --user U``): one local client, bound to one user; the tools'
  ``user_id`` argument may be left out and may not name anyone else.
- **streamable HTTP**, mounted by ``memlane serve`` at ``/mcp``: every call must carry an
  API key (``Authorization: Bearer``), and ``user_id`` is checked against the key's scope
  exactly as the REST routes check it.

Both ask :mod:`memlane.access`: acting as an agent, a tool sees and changes that agent's
memories and the user's shared ones, never another agent's.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from memlane.errors import require_extra

require_extra("server", "memlane's MCP server", "mcp")

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from memlane.access import Action, Grant, authorize, visible, visible_filters
from memlane.api import AsyncMemory
from memlane.errors import (
    AccessDeniedError,
    LLMError,
    MemlaneError,
    StoreError,
    ValidationError,
    no_memory,
)
from memlane.models import MemoryKind, Scope
from memlane.server.keys import KeyStore

log = logging.getLogger("memlane.mcp")

Resolver = Callable[[Context[Any, Any], Action, str | None, str | None], Awaitable[Scope]]
"""(ctx, action, user_id, agent_id) -> where the call acts; raises AccessDeniedError."""


def stdio_resolver(user_id: str) -> Resolver:
    """Every call acts for the one bound ``user_id`` (a local user id, as the CLI uses)."""
    grant = Grant(None, users=(user_id,))

    async def resolve(
        ctx: Context[Any, Any], action: Action, asked: str | None, agent: str | None
    ) -> Scope:
        if asked is not None and asked != user_id:
            raise AccessDeniedError(f"this server is bound to user {user_id!r}")
        return authorize(grant, action, user_id, agent)

    return resolve


def key_resolver(keys: KeyStore) -> Resolver:
    """Every call acts within the grant of the request's API key."""

    async def resolve(
        ctx: Context[Any, Any], action: Action, asked: str | None, agent: str | None
    ) -> Scope:
        request = ctx.request_context.request
        headers = getattr(request, "headers", None)
        if headers is None:
            raise AccessDeniedError("no HTTP request: an API key is required")
        header = headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        key = await keys.acheck(token or headers.get("x-api-key", ""))
        if key is None:
            raise AccessDeniedError("missing, invalid or revoked API key")
        if asked is None:
            raise AccessDeniedError("user_id is required")
        return authorize(key.grant, action, asked, agent)

    return resolve


def build_mcp(memory: AsyncMemory, resolve: Resolver) -> MCPServer:
    """An MCP server whose tools act on ``memory`` within the scope ``resolve`` grants."""
    server: MCPServer = MCPServer(
        name="memlane",
        instructions=(
            "Long-term memory for the user. Call search_memories before answering questions "
            "about the user, remember to store durable facts or preferences, forget_memory to "
            "drop what is wrong, and get_context for a ready-made context block."
        ),
    )

    def _fail(exc: Exception) -> ToolError:
        # Raised, so the client sees an error result (isError) with a readable message.
        # Store and model failures say only what failed, as REST does: their text can
        # name hosts, databases or the provider's answer; the detail goes to the log.
        if isinstance(exc, StoreError):
            log.error("store error in an MCP tool", exc_info=exc)
            return ToolError("StoreError: the store is unavailable; try again")
        if isinstance(exc, LLMError):
            log.error("model error in an MCP tool", exc_info=exc)
            return ToolError("LLMError: the language model failed; try again")
        message = re.sub(r"[A-Za-z0-9_.-]{1,64}::", "", str(exc))  # no tenant prefixes
        return ToolError(f"{type(exc).__name__}: {message}")

    @server.tool()
    async def remember(
        text: str,
        ctx: Context[Any, Any],
        user_id: str | None = None,
        kind: str = "fact",
        topics: list[str] | None = None,
        agent_id: str | None = None,
    ) -> dict[str, Any]:
        """Store one durable fact or preference about the user."""
        try:
            where = await resolve(ctx, Action.WRITE, user_id, agent_id)
            if kind not in ("fact", "preference", "procedure"):
                raise ValidationError("kind must be fact, preference or procedure")
            record = await memory.add(
                text, user_id=where.user_id, kind=MemoryKind(kind), topics=topics or (),
                agent_id=where.agent_id, actor="mcp",
            )  # fmt: skip
            return {"memory_id": record.id, "stored": record.text}
        except MemlaneError as exc:
            raise _fail(exc) from exc

    @server.tool()
    async def search_memories(
        query: str,
        ctx: Context[Any, Any],
        user_id: str | None = None,
        limit: int = 5,
        agent_id: str | None = None,
    ) -> dict[str, Any]:
        """The user's memories most relevant to a query, best first."""
        try:
            where = await resolve(ctx, Action.READ, user_id, agent_id)
            f = visible_filters(where)
            hits = await memory.search(query, user_id=where.user_id, limit=limit, filters=f)
            return {
                "memories": [
                    {
                        "memory_id": h.record.id,
                        "text": h.record.text,
                        "date": f"{h.record.effective_time:%Y-%m-%d}",
                        "score": round(h.score, 4),
                    }
                    for h in hits
                ]
            }
        except MemlaneError as exc:
            raise _fail(exc) from exc

    @server.tool()
    async def forget_memory(
        memory_id: str,
        ctx: Context[Any, Any],
        user_id: str | None = None,
        reason: str | None = None,
        agent_id: str | None = None,
    ) -> dict[str, Any]:
        """Forget one memory (kept in history; an operator can restore it)."""
        try:
            where = await resolve(ctx, Action.WRITE, user_id, agent_id)
            record = await memory.get(memory_id, user_id=where.user_id)
            if not visible(where, record.agent_id):
                raise no_memory(memory_id, where.user_id)  # as if absent
            await memory.delete(
                memory_id, user_id=where.user_id, reason=reason or "forgotten via MCP"
            )
            return {"forgotten": memory_id}
        except MemlaneError as exc:
            raise _fail(exc) from exc

    @server.tool()
    async def get_context(
        ctx: Context[Any, Any],
        user_id: str | None = None,
        query: str | None = None,
        session_id: str | None = None,
        budget: int = 800,
        agent_id: str | None = None,
    ) -> dict[str, Any]:
        """A context block about the user (pinned facts, relevant memories, session
        summary and recent turns) that fits ``budget`` tokens; memories are quoted data."""
        try:
            where = await resolve(ctx, Action.READ_ALL, user_id, agent_id)
            built = await memory.build_context(
                user_id=where.user_id, budget=budget, query=query, session_id=session_id
            )
            return {"text": built.text, "tokens": built.tokens, "breakdown": built.breakdown}
        except MemlaneError as exc:
            raise _fail(exc) from exc

    return server
