"""Sessions: messages, state (versioned), summaries; deleting a session."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query

from memlane.access import Action
from memlane.errors import NotFoundError
from memlane.server.auth import CallerDep
from memlane.server.routes.common import State, operation_id, v1
from memlane.server.schemas import (
    AgentQuery,
    MessagesBody,
    SessionId,
    StateBody,
    UserId,
    errors,
)

router = APIRouter(generate_unique_id_function=operation_id)


@v1(router, "GET", "/v1/users/{user_id}/sessions", tags=["sessions"])
async def list_sessions(
    user_id: UserId,
    caller: CallerDep,
    srv: State,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> dict[str, Any]:
    page = await srv.memory.list_sessions(
        user_id=caller.scope(Action.READ_ALL, user_id).user_id, cursor=cursor, limit=limit
    )
    return {
        "items": [caller.out(s.to_dict()) for s in page.items],
        "next_cursor": page.next_cursor,
    }


@v1(
    router,
    "POST",
    "/v1/users/{user_id}/sessions/{session_id}/messages",
    status_code=201,
    tags=["sessions"],
)
async def add_messages(
    user_id: UserId, session_id: SessionId, body: MessagesBody, caller: CallerDep, srv: State
) -> dict[str, Any]:
    where = caller.scope(Action.WRITE, user_id, body.agent_id)
    await srv.session_scope(where, session_id, writing=True)
    run = await srv.memory.add_messages(
        session_id,
        [(m.role, m.content) for m in body.messages],
        user_id=where.user_id,
        agent_id=where.agent_id,
        run_id=body.run_id,
    )
    return {"run_id": run.run_id, "messages": [caller.out(m.to_dict()) for m in run.messages]}


@v1(router, "GET", "/v1/users/{user_id}/sessions/{session_id}/messages", tags=["sessions"])
async def get_messages(
    user_id: UserId,
    session_id: SessionId,
    caller: CallerDep,
    srv: State,
    last_runs: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
    agent_id: AgentQuery = None,
) -> dict[str, Any]:
    where = caller.scope(Action.READ, user_id, agent_id)
    await srv.session_scope(where, session_id)
    runs = await srv.memory.get_history(session_id, user_id=where.user_id, last_runs=last_runs)
    return {
        "runs": [
            {"run_id": r.run_id, "messages": [caller.out(m.to_dict()) for m in r.messages]}
            for r in runs
        ]
    }


@v1(router, "GET", "/v1/users/{user_id}/sessions/{session_id}/state", tags=["sessions"])
async def get_state(
    user_id: UserId,
    session_id: SessionId,
    caller: CallerDep,
    srv: State,
    name: str = "default",
    agent_id: AgentQuery = None,
) -> dict[str, Any]:
    where = caller.scope(Action.READ, user_id, agent_id)
    await srv.session_scope(where, session_id)
    state = await srv.memory.get_state(session_id, user_id=where.user_id, name=name)
    return caller.out(state.to_dict())


@v1(
    router,
    "PUT",
    "/v1/users/{user_id}/sessions/{session_id}/state",
    tags=["sessions"],
    responses=errors(409),
)
async def set_state(
    user_id: UserId,
    session_id: SessionId,
    body: StateBody,
    caller: CallerDep,
    srv: State,
    agent_id: AgentQuery = None,
) -> dict[str, Any]:
    where = caller.scope(Action.WRITE, user_id, agent_id)
    await srv.session_scope(where, session_id, writing=True)
    state = await srv.memory.set_state(
        session_id,
        body.data,
        user_id=where.user_id,
        name=body.name,
        expected_version=body.expected_version,
        agent_id=where.agent_id,  # a session this creates belongs to the key's agent
    )
    return caller.out(state.to_dict())


@v1(router, "GET", "/v1/users/{user_id}/sessions/{session_id}/state/history", tags=["sessions"])
async def state_history(
    user_id: UserId,
    session_id: SessionId,
    caller: CallerDep,
    srv: State,
    name: str = "default",
    agent_id: AgentQuery = None,
) -> dict[str, Any]:
    where = caller.scope(Action.READ, user_id, agent_id)
    await srv.session_scope(where, session_id)
    versions = await srv.memory.state_history(session_id, user_id=where.user_id, name=name)
    return {"versions": [caller.out(v.to_dict()) for v in versions]}


@v1(
    router,
    "POST",
    "/v1/users/{user_id}/sessions/{session_id}/summary",
    tags=["sessions"],
    responses=errors(409),  # superseding the previous summary can lose a race
)
async def summarize(
    user_id: UserId,
    session_id: SessionId,
    caller: CallerDep,
    srv: State,
    agent_id: AgentQuery = None,
) -> dict[str, Any]:
    where = caller.scope(Action.WRITE, user_id, agent_id)
    await srv.session_scope(where, session_id)
    stored = where.user_id
    manager = srv.manager
    if manager is not None and manager.llm is not None:
        with srv.metrics.timing("manager.summarize_session"):  # the chat model's time
            record = await asyncio.get_running_loop().run_in_executor(
                None, lambda: manager.summarize_session(session_id, user_id=stored)
            )
    else:
        record = await srv.memory.summarize_session(session_id, user_id=stored)
    return caller.out(record.to_dict())


@v1(router, "GET", "/v1/users/{user_id}/sessions/{session_id}/summary", tags=["sessions"])
async def get_summary(
    user_id: UserId,
    session_id: SessionId,
    caller: CallerDep,
    srv: State,
    agent_id: AgentQuery = None,
) -> dict[str, Any]:
    where = caller.scope(Action.READ, user_id, agent_id)
    await srv.session_scope(where, session_id)
    record = await srv.memory.get_summary(session_id, user_id=where.user_id)
    if record is None:
        raise NotFoundError(f"session {session_id!r} has no summary")
    return caller.out(record.to_dict())


@v1(router, "DELETE", "/v1/users/{user_id}/sessions/{session_id}", tags=["sessions"])
async def delete_session(
    user_id: UserId, session_id: SessionId, caller: CallerDep, srv: State
) -> dict[str, Any]:
    stored = caller.scope(Action.WRITE_ALL, user_id).user_id
    n = await srv.memory.delete_session(session_id, user_id=stored)
    return {"deleted": n}
