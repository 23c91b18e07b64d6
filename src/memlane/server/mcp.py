"""memlane as an MCP server (the official ``mcp`` SDK), for desktop assistants, IDE agents
and agent frameworks.

Tools, named as the Python API names the same thing (each annotated: read-only, or
whether it is destructive and idempotent; none reaches outside memlane):

- ``add_memory`` (``Memory.add``): a write; not idempotent (each call adds a memory).
  What an agent stores through MCP is ``inferred`` (its trust); one holding
  instruction-like content comes back with ``quarantined`` (the kinds found).
- ``search_memories`` (``Memory.search``): read-only; ``as_of`` searches what was true
  at a date (time travel).
- ``forget_memory`` (``Memory.delete``): destructive, idempotent (history keeps it).
- ``remember`` (``Memory.remember``, a keyed fact): destructive (replaces the key's value;
  history keeps the old one), idempotent.
- ``recall`` (``Memory.recall``) and ``build_context`` (``Memory.build_context``): read-only.

Resources: the user's memories, ``memlane://memories`` (newest first, a page at a time:
``memlane://memories?cursor=...``) and ``memlane://memories/{memory_id}``; on the
multi-user endpoint ``memlane://users/{user_id}/memories...``. They are checked exactly
as the tools are.

Three ways to run it (a :class:`Resolver` says who a call acts for):

- **stdio, bound to one user** (``memlane mcp --user U``, :func:`stdio_resolver`): the
  tools have no ``user_id`` argument at all.
- **streamable HTTP, bound to the key's user** (``/mcp/me/`` of ``memlane serve``,
  :func:`key_user_resolver`): the API key must be limited to exactly one user, who every
  call acts for; no ``user_id`` argument either.
- **streamable HTTP, multi-user** (``/mcp/`` of ``memlane serve``, :func:`key_resolver`):
  every call names ``user_id``, checked against the key's scope as the REST routes check it.

An argument a tool does not declare is refused, never ignored (a ``user_id`` sent to a
bound server is an error, not a silent write to the bound user). Every server asks
:mod:`memlane.access`: acting as an agent, a call sees and changes that agent's memories
and the user's shared ones, never another agent's.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from memlane.errors import require_extra

require_extra("server", "memlane's MCP server", "mcp")

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.types import ToolAnnotations

from memlane.access import Action, Grant, authorize, visible_filters
from memlane.api import AsyncMemory
from memlane.errors import AccessDeniedError, MemlaneError, ValidationError
from memlane.manager.tools import found, quarantined
from memlane.models import (
    Entity,
    MemoryKind,
    MemoryRecord,
    Relation,
    Scope,
    Trust,
    check_id,
    from_iso,
    opt_iso,
)
from memlane.server.auth import key_from_headers, own_record
from memlane.server.errors import client_text, matching
from memlane.server.keys import ApiKey, KeyStore

log = logging.getLogger("memlane.mcp")


@dataclass(frozen=True, slots=True)
class Resolved:
    """Who a call is: the grant it has, where it acts, and the id of its API key (None
    on stdio, where the process is the caller)."""

    grant: Grant
    scope: Scope
    key_id: str | None = None


ResolveFn = Callable[[Context[Any, Any], Action, str | None, str | None], Awaitable[Resolved]]
"""(ctx, action, user_id, agent_id) -> who the call is (:class:`Resolved`); raises
AccessDeniedError."""

PAGE_SIZE = 50
"""Memories per page of the list resource (``next_cursor`` says where the next starts)."""


@dataclass(frozen=True, slots=True)
class Resolver:
    """Who a server's calls act for. ``takes_user``/``takes_agent``: whether the tools
    declare a ``user_id``/``agent_id`` argument (a server bound to one user or agent does
    not). ``whole_user``: whether tools that read the whole user (``build_context``) are
    offered (not to a server bound to an agent: the access rule refuses them)."""

    resolve: ResolveFn
    takes_user: bool
    takes_agent: bool = True
    whole_user: bool = True


def stdio_resolver(user_id: str, agent_id: str | None = None) -> Resolver:
    """Every call acts for the one bound ``user_id`` (a local user id, as the CLI uses),
    and with ``agent_id`` always as that agent (which, as for an agent-limited key, rules
    out whole-user reads). Raises ValidationError for a bad id."""
    check_id("user_id", user_id)
    check_id("agent_id", agent_id, required=False)
    grant = Grant(None, users=(user_id,), agents=None if agent_id is None else (agent_id,))

    async def resolve(
        ctx: Context[Any, Any], action: Action, asked: str | None, agent: str | None
    ) -> Resolved:
        agent = agent_id if agent_id is not None else agent
        return Resolved(grant, authorize(grant, action, user_id, agent))

    bound = agent_id is not None
    return Resolver(resolve, takes_user=False, takes_agent=not bound, whole_user=not bound)


def key_resolver(keys: KeyStore) -> Resolver:
    """Every call names its user, within the grant of the request's API key."""

    async def resolve(
        ctx: Context[Any, Any], action: Action, asked: str | None, agent: str | None
    ) -> Resolved:
        key = await _key(ctx, keys)
        if asked is None:
            raise AccessDeniedError("user_id is required")
        return Resolved(key.grant, authorize(key.grant, action, asked, agent), key.key_id)

    return Resolver(resolve, takes_user=True)


def key_user_resolver(keys: KeyStore) -> Resolver:
    """Every call acts for the one user the request's API key is limited to (``memlane
    keys create --tenant T --users U``); a key reaching more users is refused."""

    async def resolve(
        ctx: Context[Any, Any], action: Action, asked: str | None, agent: str | None
    ) -> Resolved:
        key = await _key(ctx, keys)
        grant = key.grant
        if grant.users is None or len(grant.users) != 1:
            raise AccessDeniedError(
                "this endpoint serves one user: use a key limited to one user "
                "(memlane keys create --users U), or the multi-user endpoint /mcp/"
            )
        return Resolved(grant, authorize(grant, action, grant.users[0], agent), key.key_id)

    return Resolver(resolve, takes_user=False)


async def _key(ctx: Context[Any, Any], keys: KeyStore) -> ApiKey:
    """The API key on the call's HTTP request (the REST routes' token rule)."""
    request = ctx.request_context.request
    return await key_from_headers(keys, getattr(request, "headers", None))


def client_name(ctx: Context[Any, Any]) -> str:
    """The name the MCP client gave for itself when it connected (printable, at most
    64 characters), or ``unknown``."""
    try:
        params = ctx.session.client_params
    except Exception:  # no session (a resource read outside a request)
        params = None
    name = getattr(getattr(params, "client_info", None), "name", None)
    if not isinstance(name, str):
        return "unknown"
    return "".join(ch for ch in name if ch.isprintable() and not ch.isspace())[:64] or "unknown"


# ---------------------------------------------------------------------------- annotations


def _reads(title: str) -> ToolAnnotations:
    return ToolAnnotations(
        title=title, read_only_hint=True, idempotent_hint=True, open_world_hint=False
    )


def _writes(title: str, *, destructive: bool, idempotent: bool) -> ToolAnnotations:
    return ToolAnnotations(
        title=title,
        read_only_hint=False,
        destructive_hint=destructive,
        idempotent_hint=idempotent,
        open_world_hint=False,
    )


TOOL_ANNOTATIONS: dict[str, ToolAnnotations] = {
    "add_memory": _writes("Add a memory", destructive=False, idempotent=False),
    "search_memories": _reads("Search memories"),
    "forget_memory": _writes("Forget a memory", destructive=True, idempotent=True),
    "remember": _writes("Set a keyed fact", destructive=True, idempotent=True),
    "recall": _reads("Read a keyed fact"),
    "build_context": _reads("Build a context block"),
    "list_entities": _reads("List the people, places and things the user's memories name"),
    "entity_relations": _reads("Show how an entity is related to others"),
    "entity_neighbors": _reads("Find the entities around an entity"),
}
WHOLE_USER_TOOLS = frozenset(
    {"build_context", "list_entities", "entity_relations", "entity_neighbors"}
)
"""Tools that read the user as a whole (every agent's memories): not offered to a
resolver limited to agents."""

"""Each tool's MCP annotations. Forgetting and replacing a keyed fact's value are marked
destructive even though history keeps what they replace: the agent no longer sees it."""


# ---------------------------------------------------------------------------- server


_reading: ContextVar[Context[Any, Any] | None] = ContextVar("memlane_mcp_read", default=None)


class _MemlaneMCP(MCPServer):
    """MCPServer that refuses undeclared tool arguments and lets static resources see the
    request (the SDK injects a Context only into templates)."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> Any:
        declared = {t.name: t.input_schema.get("properties", {}) for t in await self.list_tools()}
        unknown = sorted(set(arguments) - set(declared.get(name, arguments)))
        if unknown:
            hint = " (this server is bound to one user)" if "user_id" in unknown else ""
            raise ToolError(f"ValidationError: unknown argument(s) {unknown} for {name}{hint}")
        return await super().call_tool(name, arguments, context)

    async def read_resource(self, uri: Any, context: Context[Any, Any] | None = None) -> Any:
        token = _reading.set(context)
        try:
            return await super().read_resource(uri, context)
        finally:
            _reading.reset(token)


def build_mcp(memory: AsyncMemory, resolver: Resolver) -> MCPServer:
    """An MCP server whose tools and resources act on ``memory`` within the scope
    ``resolver`` grants."""
    server = _MemlaneMCP(
        name="memlane",
        instructions=(
            "Long-term memory for the user. Call search_memories before answering questions "
            "about the user, add_memory to store a durable fact or preference, "
            "forget_memory to drop what is wrong, remember/recall for exact key -> value "
            "facts (settings, IDs), and build_context for a ready-made context block."
        ),
    )
    hidden = set() if resolver.takes_user else {"user_id"}
    if not resolver.takes_agent:
        hidden.add("agent_id")
    tools = _Tools(memory, resolver.resolve)
    for name, fn in tools.all():
        if name in WHOLE_USER_TOOLS and not resolver.whole_user:
            continue
        server.add_tool(_without(fn, hidden), name=name, annotations=TOOL_ANNOTATIONS[name])
    _add_resources(server, tools, hidden)
    return server


def _without(fn: Callable[..., Awaitable[Any]], hidden: set[str]) -> Callable[..., Any]:
    """``fn`` as a tool whose schema lacks the ``hidden`` parameters (they keep their
    defaults: None, so the resolver decides who the call acts for)."""
    if not hidden:
        return fn
    sig = inspect.signature(fn, eval_str=True)

    @functools.wraps(fn)
    async def tool(**kwargs: Any) -> Any:
        return await fn(**kwargs)

    params = [p for p in sig.parameters.values() if p.name not in hidden]
    tool.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    return tool


def _fail(exc: MemlaneError, error: type[Exception], tenant: str | None) -> Exception:
    """The error the client sees (an error result, or a failed resource read) with a
    readable message, by the REST API's error table: failures whose text can name hosts,
    databases or the provider's answer (store, embedding, configuration, model) say only
    what failed, under the kind they matched; the detail goes to the log."""
    matched, rule = matching(exc)
    if rule.logged is None:
        return error(f"{type(exc).__name__}: {client_text(exc, tenant)}")
    log.error("%s in an MCP call", rule.logged, exc_info=exc)
    return error(f"{matched.__name__}: {rule.message}")


def _as_of(value: str | None) -> datetime | None:
    """The moment a tool's ``as_of`` names (a date is its midnight; no zone: UTC).
    Raises ValidationError naming the argument."""
    if value is None:
        return None
    try:
        return from_iso(value)
    except ValidationError as exc:
        raise ValidationError(f"as_of wants an ISO date or time, got {value!r}") from exc


def _entity_view(e: Entity) -> dict[str, Any]:
    return {"id": e.id, "name": e.name, "type": e.type.value, "aliases": list(e.aliases)}


def _relation_view(r: Relation, names: Mapping[str, str]) -> dict[str, Any]:
    return {
        "subject": names.get(r.subject_id, r.subject_id),
        "predicate": r.predicate,
        "object": names.get(r.object_id, r.object_id),
        "valid_from": opt_iso(r.valid_from),
        "valid_to": opt_iso(r.valid_to),
        "memory_ids": list(r.sources),
    }


def _memory_view(record: MemoryRecord, uri: str) -> dict[str, Any]:
    """What a client sees of one memory (never the store's user id: it names the tenant)."""
    full = record.to_dict()
    view = {k: full[k] for k in _VIEW_FIELDS if full.get(k) not in (None, (), [], {})}
    if record.kind is MemoryKind.KEYED_FACT:
        view["value"] = record.metadata.get("value")
    return {"memory_id": record.id, "uri": uri, **view}


_VIEW_FIELDS = (
    "text", "kind", "key", "topics", "agent_id", "team", "session_id", "importance",
    "event_at", "created_at", "updated_at", "version", "superseded_by", "expires_at",
    "deleted_at", "trust", "quarantine",
)  # fmt: skip


class _Tools:
    """The tool and resource functions over one memory, each scoped by ``resolve``."""

    def __init__(self, memory: AsyncMemory, resolve: ResolveFn) -> None:
        self.memory = memory
        self.resolve = resolve

    def all(self) -> Iterable[tuple[str, Callable[..., Awaitable[Any]]]]:
        yield "add_memory", self.add_memory
        yield "search_memories", self.search_memories
        yield "forget_memory", self.forget_memory
        yield "remember", self.remember
        yield "recall", self.recall
        yield "build_context", self.build_context
        yield "list_entities", self.list_entities
        yield "entity_relations", self.entity_relations
        yield "entity_neighbors", self.entity_neighbors

    @contextlib.asynccontextmanager
    async def _acting(
        self,
        ctx: Context[Any, Any],
        action: Action,
        user_id: str | None,
        agent_id: str | None,
        error: type[Exception] = ToolError,
    ) -> AsyncIterator[tuple[Scope, AsyncMemory]]:
        """Where the call acts (:attr:`resolve`) and the memory acting for it (the
        audit trail's actor: ``mcp:<client>``, then the API key or, on stdio, this
        process, and the agent); memlane's errors inside, the resolver's included,
        become ``error`` (:func:`_fail`), naming users as the caller's tenant does."""
        tenant = None
        try:
            found = await self.resolve(ctx, action, user_id, agent_id)
            tenant = found.grant.tenant
            yield found.scope, self.memory.with_actor(self._actor(ctx, found))
        except MemlaneError as exc:
            raise _fail(exc, error, tenant) from exc

    def _actor(self, ctx: Context[Any, Any], found: Resolved) -> str:
        caller = self.memory.core.actor if found.key_id is None else f"api:{found.key_id}"
        agent = "" if found.scope.agent_id is None else f" agent:{found.scope.agent_id}"
        return f"mcp:{client_name(ctx)} {caller}{agent}"

    async def add_memory(
        self,
        text: str,
        ctx: Context[Any, Any],
        user_id: str | None = None,
        kind: str = "fact",
        topics: list[str] | None = None,
        agent_id: str | None = None,
    ) -> dict[str, Any]:
        """Store one durable fact, preference or procedure about the user, as one
        self-contained sentence. Each call adds a new memory."""
        async with self._acting(ctx, Action.WRITE, user_id, agent_id) as (where, memory):
            if kind not in ("fact", "preference", "procedure"):
                raise ValidationError("kind must be fact, preference or procedure")
            record = await memory.add(
                text, user_id=where.user_id, kind=MemoryKind(kind), topics=topics or (),
                agent_id=where.agent_id, actor="mcp", trust=Trust.INFERRED,
            )  # fmt: skip
        return {"memory_id": record.id, "stored": record.text, **quarantined(record)}

    async def search_memories(
        self,
        query: str,
        ctx: Context[Any, Any],
        user_id: str | None = None,
        limit: int = 5,
        agent_id: str | None = None,
        as_of: str | None = None,
    ) -> dict[str, Any]:
        """Search the user's memories: the ones most relevant to ``query``, best first.
        With ``as_of`` (an ISO date or time, e.g. "2024-03-01"; no zone: UTC) only what
        was true then: memories since superseded, forgotten or expired count, later ones
        do not ("where did she live in March 2024")."""
        async with self._acting(ctx, Action.READ, user_id, agent_id) as (where, memory):
            f = replace(visible_filters(where), as_of=_as_of(as_of))
            hits = await memory.search(query, user_id=where.user_id, limit=limit, filters=f)
        return found(hits)

    async def forget_memory(
        self,
        memory_id: str,
        ctx: Context[Any, Any],
        user_id: str | None = None,
        reason: str | None = None,
        agent_id: str | None = None,
    ) -> dict[str, Any]:
        """Forget one memory: it is no longer recalled (history keeps it; an operator can
        restore it). Forgetting it again changes nothing."""
        async with self._acting(ctx, Action.WRITE, user_id, agent_id) as (where, memory):
            await own_record(memory, where, memory_id)
            await memory.delete(
                memory_id, user_id=where.user_id, reason=reason or "forgotten via MCP"
            )
        return {"forgotten": memory_id}

    async def remember(
        self,
        key: str,
        value: Any,
        ctx: Context[Any, Any],
        user_id: str | None = None,
        category: str | None = None,
        agent_id: str | None = None,
    ) -> dict[str, Any]:
        """Set the user's keyed fact ``key`` (e.g. "home_airport") to a JSON ``value``,
        replacing its previous value (kept in history). The same value again changes
        nothing. Read it back with recall."""
        async with self._acting(ctx, Action.WRITE, user_id, agent_id) as (where, memory):
            record = await memory.remember(
                key, value, user_id=where.user_id, category=category, actor="mcp",
                trust=Trust.INFERRED,
            )  # fmt: skip
        value = record.metadata.get("value")
        return {"memory_id": record.id, "key": key, "value": value, **quarantined(record)}

    async def recall(
        self,
        key: str,
        ctx: Context[Any, Any],
        user_id: str | None = None,
        agent_id: str | None = None,
    ) -> dict[str, Any]:
        """The current value of the user's keyed fact ``key`` (null if it was never set)."""
        async with self._acting(ctx, Action.READ, user_id, agent_id) as (where, memory):
            value = await memory.recall(key, user_id=where.user_id)
        return {"key": key, "value": value}

    async def build_context(
        self,
        ctx: Context[Any, Any],
        user_id: str | None = None,
        query: str | None = None,
        session_id: str | None = None,
        budget: int = 800,
        agent_id: str | None = None,
    ) -> dict[str, Any]:
        """A context block about the user (pinned facts, relevant memories, session
        summary and recent turns) that fits ``budget`` tokens; memories are quoted data."""
        async with self._acting(ctx, Action.READ_ALL, user_id, agent_id) as (where, memory):
            built = await memory.build_context(
                user_id=where.user_id, budget=budget, query=query, session_id=session_id
            )
        return {"text": built.text, "tokens": built.tokens, "breakdown": built.breakdown}

    async def list_entities(
        self,
        ctx: Context[Any, Any],
        user_id: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        agent_id: str | None = None,
    ) -> dict[str, Any]:
        """The people, places, organizations, dates and things the user's memories name
        (by id; pass the last id as ``cursor`` for the next page)."""
        async with self._acting(ctx, Action.READ_ALL, user_id, agent_id) as (where, memory):
            found = await memory.entities(user_id=where.user_id, limit=limit, after=cursor)
        return {"entities": [_entity_view(e) for e in found]}

    async def entity_relations(
        self,
        entity: str,
        ctx: Context[Any, Any],
        user_id: str | None = None,
        current: bool = False,
        limit: int = 100,
        agent_id: str | None = None,
        as_of: str | None = None,
    ) -> dict[str, Any]:
        """How ``entity`` (a name or an id) is related to other entities: each edge, when
        it held, and the ids of the memories that state it; with ``as_of`` (an ISO date or
        time) only the edges that held then."""
        moment = _as_of(as_of)
        async with self._acting(ctx, Action.READ_ALL, user_id, agent_id) as (where, memory):
            found = await memory.relations(
                entity, user_id=where.user_id, current=current, limit=limit, as_of=moment
            )
            ids = {i for r in found for i in (r.subject_id, r.object_id)}
            ends = await memory.entities(user_id=where.user_id, ids=sorted(ids)) if ids else []
            names = {e.id: e.name for e in ends}
        return {"relations": [_relation_view(r, names) for r in found]}

    async def entity_neighbors(
        self,
        entity: str,
        ctx: Context[Any, Any],
        user_id: str | None = None,
        depth: int = 1,
        limit: int = 100,
        agent_id: str | None = None,
        as_of: str | None = None,
    ) -> dict[str, Any]:
        """The entities at most ``depth`` (1 to 4) edges away from ``entity`` (a name or
        an id), nearest first; with ``as_of`` over the edges that held then."""
        moment = _as_of(as_of)
        async with self._acting(ctx, Action.READ_ALL, user_id, agent_id) as (where, memory):
            found = await memory.neighbors(
                entity, depth, user_id=where.user_id, limit=limit, as_of=moment
            )
        return {"neighbors": [{**_entity_view(n.entity), "depth": n.depth} for n in found]}

    # ------------------------------------------------------------------ resources

    async def read_memory(
        self, ctx: Context[Any, Any], base: str, user_id: str | None, memory_id: str
    ) -> str:
        """One memory as JSON (a deleted one shows ``deleted_at``)."""
        async with self._acting(ctx, Action.READ, user_id, None, ResourceError) as acting:
            where, memory = acting
            record = await own_record(memory, where, memory_id)
        return json.dumps(_memory_view(record, f"{base}/{memory_id}"), ensure_ascii=False)

    async def list_memories(
        self, ctx: Context[Any, Any] | None, base: str, user_id: str | None, cursor: str | None
    ) -> str:
        """One page of the user's current memories, newest first, as JSON with
        ``next_cursor`` (and ``next``, the page's URI) while more remain."""
        if ctx is None:
            raise ResourceError("AccessDeniedError: no request to read this resource for")
        async with self._acting(ctx, Action.READ, user_id, None, ResourceError) as acting:
            where, memory = acting
            page = await memory.list(
                user_id=where.user_id, filters=visible_filters(where), cursor=cursor,
                limit=PAGE_SIZE,
            )  # fmt: skip
        out: dict[str, Any] = {
            "memories": [_memory_view(r, f"{base}/{r.id}") for r in page.items],
            "next_cursor": page.next_cursor,
        }
        if page.next_cursor is not None:
            out["next"] = f"{base}?cursor={page.next_cursor}"
        return json.dumps(out, ensure_ascii=False)


def _add_resources(server: MCPServer, tools: _Tools, hidden: set[str]) -> None:
    """The user's memories as resources: a list (paged) and one memory by id."""
    kw: dict[str, Any] = {"mime_type": "application/json"}
    if "user_id" in hidden:
        base = "memlane://memories"

        @server.resource(
            base, name="memories", description="The user's memories, newest first", **kw
        )
        async def memories() -> str:
            return await tools.list_memories(_reading.get(), base, None, None)

        @server.resource(
            base + "{?cursor}", name="memories_page", description="A further page", **kw
        )
        async def memories_page(ctx: Context[Any, Any], cursor: str | None = None) -> str:
            return await tools.list_memories(ctx, base, None, cursor)

        @server.resource(base + "/{memory_id}", name="memory", description="One memory", **kw)
        async def memory(memory_id: str, ctx: Context[Any, Any]) -> str:
            return await tools.read_memory(ctx, base, None, memory_id)

        return
    user_base = "memlane://users/{user_id}/memories"

    @server.resource(
        user_base + "{?cursor}", name="memories", description="A user's memories", **kw
    )
    async def user_memories(user_id: str, ctx: Context[Any, Any], cursor: str | None = None) -> str:
        return await tools.list_memories(
            ctx, f"memlane://users/{user_id}/memories", user_id, cursor
        )

    @server.resource(user_base + "/{memory_id}", name="memory", description="One memory", **kw)
    async def user_memory(user_id: str, memory_id: str, ctx: Context[Any, Any]) -> str:
        base = f"memlane://users/{user_id}/memories"
        return await tools.read_memory(ctx, base, user_id, memory_id)
