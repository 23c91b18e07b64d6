"""Memories: add, list, get, update, supersede, delete, restore, history, search.

A call acting as an agent sees that agent's memories and the user's shared ones
(:func:`memlane.access.visible`); anything else is not found."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query

from memlane.access import Action, visible, visible_filters
from memlane.errors import no_history
from memlane.models import Filters, MemoryKind
from memlane.server.auth import CallerDep
from memlane.server.routes.common import State, operation_id, v1
from memlane.server.schemas import (
    AddBody,
    AgentQuery,
    MemoryId,
    SearchBody,
    SupersedeBody,
    UpdateBody,
    UserId,
    errors,
)

router = APIRouter(generate_unique_id_function=operation_id)


@v1(
    router,
    "POST",
    "/v1/users/{user_id}/memories",
    status_code=201,
    tags=["memories"],
    responses=errors(409),
)
async def add_memory(
    user_id: UserId, body: AddBody, caller: CallerDep, srv: State
) -> dict[str, Any]:
    where = caller.scope(Action.WRITE, user_id, body.agent_id)
    if body.session_id is not None:  # an agent writes to its own or shared sessions
        await srv.session_scope(where, body.session_id, writing=True)
    extra: dict[str, Any] = {}
    if body.idempotency_key:
        extra["idempotency_key"] = body.idempotency_key
    record = await srv.memory.add(
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
        actor=caller.actor,
        **extra,
    )
    return caller.out(record.to_dict())


@v1(router, "GET", "/v1/users/{user_id}/memories", tags=["memories"])
async def list_memories(
    user_id: UserId,
    caller: CallerDep,
    srv: State,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    kind: Annotated[list[str] | None, Query()] = None,
    agent_id: AgentQuery = None,
    include_superseded: bool = False,
    include_deleted: bool = False,
    newest_first: bool = True,
) -> dict[str, Any]:
    where = caller.scope(Action.READ, user_id, agent_id)
    f = Filters(
        kinds=tuple(kind or ()),  # type: ignore[arg-type]  # Filters validates
        include_superseded=include_superseded,
        include_deleted=include_deleted,
    )
    page = await srv.memory.list(
        user_id=where.user_id,
        filters=visible_filters(where, f),
        cursor=cursor,
        limit=limit,
        newest_first=newest_first,
    )
    return {
        "items": [caller.out(r.to_dict()) for r in page.items],
        "next_cursor": page.next_cursor,
    }


@v1(router, "GET", "/v1/users/{user_id}/memories/{memory_id}", tags=["memories"])
async def get_memory(
    user_id: UserId, memory_id: MemoryId, caller: CallerDep, srv: State, agent_id: AgentQuery = None
) -> dict[str, Any]:
    record = await srv.own_record(caller.scope(Action.READ, user_id, agent_id), memory_id)
    return caller.out(record.to_dict())


@v1(
    router,
    "PATCH",
    "/v1/users/{user_id}/memories/{memory_id}",
    tags=["memories"],
    responses=errors(409),
)
async def update_memory(
    user_id: UserId,
    memory_id: MemoryId,
    body: UpdateBody,
    caller: CallerDep,
    srv: State,
    agent_id: AgentQuery = None,
) -> dict[str, Any]:
    where = caller.scope(Action.WRITE, user_id, agent_id)
    await srv.own_record(where, memory_id)
    changes = body.model_dump(exclude_none=True, exclude={"expected_version", "reason"})
    record = await srv.memory.update(
        memory_id,
        user_id=where.user_id,
        expected_version=body.expected_version,
        reason=body.reason,
        actor=caller.actor,
        **changes,
    )
    return caller.out(record.to_dict())


@v1(
    router,
    "POST",
    "/v1/users/{user_id}/memories/{memory_id}/supersede",
    tags=["memories"],
    responses=errors(409),
)
async def supersede_memory(
    user_id: UserId,
    memory_id: MemoryId,
    body: SupersedeBody,
    caller: CallerDep,
    srv: State,
    agent_id: AgentQuery = None,
) -> dict[str, Any]:
    where = caller.scope(Action.WRITE, user_id, agent_id)
    await srv.own_record(where, memory_id)
    record = await srv.memory.supersede(
        memory_id,
        body.text,
        user_id=where.user_id,
        reason=body.reason,
        actor=caller.actor,
    )
    return caller.out(record.to_dict())


# A write that lost a race to a concurrent one (two deletes at once) answers 409.
@v1(
    router,
    "DELETE",
    "/v1/users/{user_id}/memories/{memory_id}",
    tags=["memories"],
    responses=errors(409),
)
async def delete_memory(
    user_id: UserId,
    memory_id: MemoryId,
    caller: CallerDep,
    srv: State,
    reason: str | None = None,
    agent_id: AgentQuery = None,
) -> dict[str, Any]:
    where = caller.scope(Action.WRITE, user_id, agent_id)
    await srv.own_record(where, memory_id)
    record = await srv.memory.delete(
        memory_id, user_id=where.user_id, reason=reason, actor=caller.actor
    )
    return caller.out(record.to_dict())


@v1(
    router,
    "POST",
    "/v1/users/{user_id}/memories/{memory_id}/restore",
    tags=["memories"],
    responses=errors(409),
)
async def restore_memory(
    user_id: UserId, memory_id: MemoryId, caller: CallerDep, srv: State, agent_id: AgentQuery = None
) -> dict[str, Any]:
    where = caller.scope(Action.WRITE, user_id, agent_id)
    await srv.own_record(where, memory_id)
    record = await srv.memory.restore(memory_id, user_id=where.user_id, actor=caller.actor)
    return caller.out(record.to_dict())


@v1(router, "GET", "/v1/users/{user_id}/memories/{memory_id}/history", tags=["memories"])
async def memory_history(
    user_id: UserId, memory_id: MemoryId, caller: CallerDep, srv: State, agent_id: AgentQuery = None
) -> dict[str, Any]:
    where = caller.scope(Action.READ, user_id, agent_id)
    events = await srv.memory.history(memory_id, user_id=where.user_id)
    last = next((e.snapshot for e in reversed(events) if e.snapshot is not None), None)
    # A purged memory's events keep no snapshot, so no owner: an agent is not shown them.
    hidden = last is None and where.agent_id is not None
    if hidden or not visible(where, (last or {}).get("agent_id")):
        raise no_history(memory_id, where.user_id)
    return {"events": [caller.out(e.to_dict()) for e in events]}


@v1(router, "POST", "/v1/users/{user_id}/search", tags=["memories"])
async def search(
    user_id: UserId, body: SearchBody, caller: CallerDep, srv: State
) -> dict[str, Any]:
    where = caller.scope(Action.READ, user_id, body.agent_id)
    f = Filters(
        kinds=tuple(body.kinds),  # type: ignore[arg-type]  # Filters validates
        topics=tuple(body.topics),
        session_id=body.session_id,
        include_superseded=body.include_superseded,
    )
    hits = await srv.memory.search(
        body.query,
        user_id=where.user_id,
        limit=body.limit,
        filters=visible_filters(where, f),
        recipe=body.recipe,
        explain=body.explain,
    )
    return {"hits": [caller.out(h.to_dict()) for h in hits]}
