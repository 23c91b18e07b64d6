"""Users: the tenant's users the key reaches; forgetting a user."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from memlane.access import Action
from memlane.server.auth import CallerDep
from memlane.server.keys import public_user
from memlane.server.routes.common import State, operation_id, v1
from memlane.server.schemas import UserId, errors

router = APIRouter(generate_unique_id_function=operation_id)


@router.get("/v1/users", tags=["users"], responses=errors(401, 403, 413, 503))
async def list_users(caller: CallerDep, srv: State) -> dict[str, Any]:
    caller.check(Action.READ_ALL)
    users = [public_user(caller.tenant, u) for u in await srv.memory.list_users()]
    return {"users": [u for u in users if u is not None and caller.grant.allows_user(u)]}


@v1(router, "DELETE", "/v1/users/{user_id}", tags=["users"])
async def forget_user(user_id: UserId, caller: CallerDep, srv: State) -> dict[str, Any]:
    counts = await srv.memory.forget_user(caller.scope(Action.WRITE_ALL, user_id).user_id)
    return {"forgotten": user_id, "counts": counts}
