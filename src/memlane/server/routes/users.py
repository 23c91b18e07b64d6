"""Users: the tenant's users the key reaches; forgetting a user."""

from __future__ import annotations

from memlane.access import Action
from memlane.server.auth import CallerDep
from memlane.server.keys import public_user
from memlane.server.responses import ForgottenOut, UsersOut
from memlane.server.routes.common import Area, State, UserCall
from memlane.server.schemas import errors

area = Area("users")
router = area.router


@router.get("/v1/users", responses=errors(401, 403, 413, 503))
async def list_users(caller: CallerDep, srv: State) -> UsersOut:
    caller.check(Action.READ_ALL)
    users = [public_user(caller.tenant, u) for u in await srv.memory.list_users()]
    return UsersOut(users=[u for u in users if u is not None and caller.grant.allows_user(u)])


@area.route("DELETE", "")
async def forget_user(call: UserCall) -> ForgottenOut:
    counts = await call.memory.forget_user(call.scope(Action.WRITE_ALL).user_id)
    return ForgottenOut(forgotten=call.user_id, counts=counts)
