"""Context: a token-budgeted block about the user, for a prompt."""

from __future__ import annotations

from memlane.access import Action
from memlane.server.responses import ContextOut
from memlane.server.routes.common import Area, UserCall
from memlane.server.schemas import ContextBody

area = Area("context")
router = area.router


@area.route("POST", "/context")
async def build_context(body: ContextBody, call: UserCall) -> ContextOut:
    stored = call.scope(Action.READ_ALL).user_id
    # Unset fields (None) are the defaults of Memory.build_context.
    ctx = await call.memory.build_context(user_id=stored, **body.model_dump(exclude_none=True))
    return ContextOut.model_validate(ctx.to_dict())
