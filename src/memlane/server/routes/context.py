"""Context: a token-budgeted block about the user, for a prompt."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from memlane.access import Action
from memlane.server.auth import CallerDep
from memlane.server.routes.common import State, operation_id, v1
from memlane.server.schemas import ContextBody, UserId

router = APIRouter(generate_unique_id_function=operation_id)


@v1(router, "POST", "/v1/users/{user_id}/context", tags=["context"])
async def build_context(
    user_id: UserId, body: ContextBody, caller: CallerDep, srv: State
) -> dict[str, Any]:
    stored = caller.scope(Action.READ_ALL, user_id).user_id
    extra: dict[str, Any] = {} if body.tiers is None else {"tiers": body.tiers}
    ctx = await srv.memory.build_context(
        user_id=stored,
        budget=body.budget,
        query=body.query,
        session_id=body.session_id,
        last_runs=body.last_runs,
        max_memories=body.max_memories,
        **extra,
    )
    return ctx.to_dict()
