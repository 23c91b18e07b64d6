"""Sessions: messages, state (versioned), summaries; deleting a session."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import Query

from memlane.access import Action
from memlane.errors import NotFoundError
from memlane.models import MemoryRecord, Run
from memlane.server.responses import (
    DeletedOut,
    MemoryOut,
    RunOut,
    RunsOut,
    SessionPage,
    StateHistoryOut,
    StateOut,
)
from memlane.server.routes.common import AgentCall, Area, Call, UserCall
from memlane.server.schemas import MessagesBody, SessionId, StateBody

area = Area("sessions")
router = area.router


@area.route("GET", "/sessions")
async def list_sessions(
    call: UserCall,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> SessionPage:
    stored = call.scope(Action.READ_ALL).user_id
    page = await call.memory.list_sessions(user_id=stored, cursor=cursor, limit=limit)
    items = [s.to_dict() for s in page.items]
    return call.out(SessionPage, {"items": items, "next_cursor": page.next_cursor})


@area.route("POST", "/sessions/{session_id}/messages", status_code=201)
async def add_messages(session_id: SessionId, body: MessagesBody, call: UserCall) -> RunOut:
    where = await call.session(Action.WRITE, session_id, agent_id=body.agent_id, writing=True)
    run = await call.acting(where).add_messages(
        session_id,
        [(m.role, m.content) for m in body.messages],
        user_id=where.user_id,
        agent_id=where.agent_id,
        run_id=body.run_id,
    )
    return call.out(RunOut, _run(run))


@area.route("GET", "/sessions/{session_id}/messages")
async def get_messages(
    session_id: SessionId,
    call: AgentCall,
    last_runs: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
) -> RunsOut:
    where = await call.session(Action.READ, session_id)
    runs = await call.memory.get_history(session_id, user_id=where.user_id, last_runs=last_runs)
    return call.out(RunsOut, {"runs": [_run(r) for r in runs]})


def _run(run: Run) -> dict[str, Any]:
    return {"run_id": run.run_id, "messages": [m.to_dict() for m in run.messages]}


@area.route("GET", "/sessions/{session_id}/state")
async def get_state(session_id: SessionId, call: AgentCall, name: str = "default") -> StateOut:
    where = await call.session(Action.READ, session_id)
    state = await call.memory.get_state(session_id, user_id=where.user_id, name=name)
    return call.out(StateOut, state.to_dict())


@area.route("PUT", "/sessions/{session_id}/state", 409)
async def set_state(session_id: SessionId, body: StateBody, call: AgentCall) -> StateOut:
    where = await call.session(Action.WRITE, session_id, writing=True)
    state = await call.memory.set_state(
        session_id,
        body.data,
        user_id=where.user_id,
        name=body.name,
        expected_version=body.expected_version,
        agent_id=where.agent_id,  # a session this creates belongs to the key's agent
    )
    return call.out(StateOut, state.to_dict())


@area.route("GET", "/sessions/{session_id}/state/history")
async def state_history(
    session_id: SessionId, call: AgentCall, name: str = "default"
) -> StateHistoryOut:
    where = await call.session(Action.READ, session_id)
    versions = await call.memory.state_history(session_id, user_id=where.user_id, name=name)
    return call.out(StateHistoryOut, {"versions": [v.to_dict() for v in versions]})


# Superseding the previous summary can lose a race: 409.
@area.route("POST", "/sessions/{session_id}/summary", 409)
async def summarize(session_id: SessionId, call: AgentCall) -> MemoryOut:
    where = await call.session(Action.WRITE, session_id)
    return call.out(MemoryOut, (await _summarize(call, session_id, where.user_id)).to_dict())


async def _summarize(call: Call, session_id: str, stored: str) -> MemoryRecord:
    """The session's summary by the manager's chat model if there is one, else
    extractive."""
    manager = call.srv.manager
    if manager is None or manager.llm is None:
        return await call.memory.summarize_session(session_id, user_id=stored)
    acting = manager.with_actor(call.actor)
    with call.srv.metrics.timing("manager.summarize_session"):  # the chat model's time
        record: MemoryRecord = await asyncio.get_running_loop().run_in_executor(
            None, lambda: acting.summarize_session(session_id, user_id=stored)
        )
    return record


@area.route("GET", "/sessions/{session_id}/summary")
async def get_summary(session_id: SessionId, call: AgentCall) -> MemoryOut:
    where = await call.session(Action.READ, session_id)
    record = await call.memory.get_summary(session_id, user_id=where.user_id)
    if record is None:
        raise NotFoundError(f"session {session_id!r} has no summary")
    return call.out(MemoryOut, record.to_dict())


@area.route("DELETE", "/sessions/{session_id}")
async def delete_session(session_id: SessionId, call: UserCall) -> DeletedOut:
    stored = call.scope(Action.WRITE_ALL).user_id
    return DeletedOut(deleted=await call.memory.delete_session(session_id, user_id=stored))
