"""Memories: add, list, get, update, supersede, delete, restore, release, history, search.

A call acting as an agent sees that agent's memories and the user's shared ones
(:func:`memlane.access.visible`); anything else is not found. Quarantined memories
(instruction-like content) are for operators: listed or read only when asked for, with a
key not limited to agents, and released only by such a key."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from memlane.access import Action, visible, visible_filters
from memlane.core.records import events_by
from memlane.errors import no_history
from memlane.models import Filters
from memlane.server.responses import HistoryOut, HitsOut, MemoryOut, MemoryPage
from memlane.server.routes.common import AgentCall, Area, UserCall
from memlane.server.schemas import (
    AddBody,
    AsOfQuery,
    MemoryId,
    SearchBody,
    SupersedeBody,
    UpdateBody,
)

area = Area("memories")
router = area.router

_WITH_QUARANTINED = (
    "Also quarantined memories (instruction-like content, held back from search and "
    "context): for operators, with a key not limited to agents."
)
_ONLY_QUARANTINED = "Only quarantined memories (as include_quarantined, for operators)."


@area.route("POST", "/memories", 409, status_code=201)
async def add_memory(body: AddBody, call: UserCall) -> MemoryOut:
    # An agent writes to its own or shared sessions.
    where = await call.session(Action.WRITE, body.session_id, agent_id=body.agent_id, writing=True)
    record = await call.acting(where).add(
        **body.arguments(), user_id=where.user_id, agent_id=where.agent_id, actor=call.caller.actor
    )
    return call.out(MemoryOut, record.to_dict())


@area.route("GET", "/memories")
async def list_memories(
    call: AgentCall,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    kind: Annotated[list[str] | None, Query()] = None,
    include_superseded: bool = False,
    include_deleted: bool = False,
    newest_first: bool = True,
    include_quarantined: Annotated[bool, Query(description=_WITH_QUARANTINED)] = False,
    quarantined_only: Annotated[bool, Query(description=_ONLY_QUARANTINED)] = False,
    as_of: AsOfQuery = None,
) -> MemoryPage:
    operator = include_quarantined or quarantined_only
    where = call.scope(Action.READ_ALL if operator else Action.READ)
    f = Filters(
        kinds=tuple(kind or ()),  # type: ignore[arg-type]  # Filters validates
        include_superseded=include_superseded,
        include_deleted=include_deleted,
        include_quarantined=include_quarantined,
        quarantined_only=quarantined_only,
        as_of=as_of,
    )
    page = await call.memory.list(
        user_id=where.user_id,
        filters=visible_filters(where, f),
        cursor=cursor,
        limit=limit,
        newest_first=newest_first,
    )
    items = [r.to_dict() for r in page.items]
    return call.out(MemoryPage, {"items": items, "next_cursor": page.next_cursor})


@area.route("GET", "/memories/{memory_id}")
async def get_memory(
    memory_id: MemoryId,
    call: AgentCall,
    include_quarantined: Annotated[bool, Query(description=_WITH_QUARANTINED)] = False,
) -> MemoryOut:
    action = Action.READ_ALL if include_quarantined else Action.READ
    record = await call.owned(action, memory_id, include_quarantined=include_quarantined)
    return call.out(MemoryOut, record.to_dict())


@area.route("PATCH", "/memories/{memory_id}", 409)
async def update_memory(memory_id: MemoryId, body: UpdateBody, call: AgentCall) -> MemoryOut:
    # An operator may rewrite a quarantined memory (its new text is screened anew).
    old = await call.owned(Action.WRITE, memory_id, include_quarantined=call.operator)
    changes = body.model_dump(exclude_none=True, exclude={"expected_version", "reason"})
    record = await call.memory.update(
        memory_id,
        user_id=old.user_id,
        expected_version=body.expected_version,
        reason=body.reason,
        actor=call.caller.actor,
        **changes,
    )
    return call.out(MemoryOut, record.to_dict())


@area.route("POST", "/memories/{memory_id}/supersede", 409)
async def supersede_memory(memory_id: MemoryId, body: SupersedeBody, call: AgentCall) -> MemoryOut:
    old = await call.owned(Action.WRITE, memory_id)
    record = await call.memory.supersede(
        memory_id, body.text, user_id=old.user_id, reason=body.reason, actor=call.caller.actor
    )
    return call.out(MemoryOut, record.to_dict())


# A write that lost a race to a concurrent one (two deletes at once) answers 409.
@area.route("DELETE", "/memories/{memory_id}", 409)
async def delete_memory(
    memory_id: MemoryId, call: AgentCall, reason: str | None = None
) -> MemoryOut:
    old = await call.owned(Action.WRITE, memory_id, include_quarantined=call.operator)
    record = await call.memory.delete(
        memory_id, user_id=old.user_id, reason=reason, actor=call.caller.actor
    )
    return call.out(MemoryOut, record.to_dict())


@area.route("POST", "/memories/{memory_id}/restore", 409)
async def restore_memory(memory_id: MemoryId, call: AgentCall) -> MemoryOut:
    old = await call.owned(Action.WRITE, memory_id, include_quarantined=call.operator)
    record = await call.memory.restore(memory_id, user_id=old.user_id, actor=call.caller.actor)
    return call.out(MemoryOut, record.to_dict())


@area.route("POST", "/memories/{memory_id}/release", 409)
async def release_memory(
    memory_id: MemoryId, call: AgentCall, reason: str | None = None
) -> MemoryOut:
    """Let a quarantined memory be searched and put in a context (an operator's
    decision, recorded in its history): a key limited to agents may not."""
    old = await call.owned(Action.WRITE_ALL, memory_id, include_quarantined=True)
    record = await call.memory.release(
        memory_id, user_id=old.user_id, reason=reason, actor=call.caller.actor
    )
    return call.out(MemoryOut, record.to_dict())


@area.route("GET", "/memories/{memory_id}/history")
async def memory_history(
    memory_id: MemoryId, call: AgentCall, as_of: AsOfQuery = None
) -> HistoryOut:
    where = call.scope(Action.READ)
    events = await call.memory.history(memory_id, user_id=where.user_id)
    # Whose it is is read from its whole history, before as_of narrows what is shown.
    last = next((e.snapshot for e in reversed(events) if e.snapshot is not None), None)
    # A purged memory's events keep no snapshot, so no owner: an agent is not shown them.
    hidden = last is None and where.agent_id is not None
    if hidden or not visible(where, (last or {}).get("agent_id")):
        raise no_history(memory_id, where.user_id)
    shown = events_by(events, as_of)
    return call.out(HistoryOut, {"events": [e.to_dict() for e in shown]})


@area.route("POST", "/search")
async def search(body: SearchBody, call: UserCall) -> HitsOut:
    where = call.scope(Action.READ, body.agent_id)
    hits = await call.acting(where).search(
        body.query,
        user_id=where.user_id,
        limit=body.limit,
        filters=visible_filters(where, body.filters()),
        recipe=body.recipe,
        explain=body.explain,
    )
    return call.out(HitsOut, {"hits": [h.to_dict() for h in hits]})
