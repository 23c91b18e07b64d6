"""Users: the tenant's users the key reaches; forgetting a user; a user's audit trail."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from memlane.access import Action
from memlane.models import from_iso
from memlane.server.auth import CallerDep
from memlane.server.keys import public_user
from memlane.server.responses import AuditPage, ForgottenOut, UsersOut
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


@area.route("GET", "/audit")
async def audit(
    call: UserCall,
    since: Annotated[str | None, Query(description="Entries at or after this ISO time.")] = None,
    after: Annotated[str | None, Query(description="The next_cursor of the page before.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    """Who read or changed the user's data (which key, MCP client or process; which
    memories and sessions; never their content), oldest first."""
    stored = call.scope(Action.READ_ALL).user_id
    when = None if since is None else from_iso(since)
    page = await call.memory.audit(stored, since=when, after=after, limit=limit)
    items = [e.to_dict() for e in page.items]
    return call.out(AuditPage, {"items": items, "next_cursor": page.next_cursor})
