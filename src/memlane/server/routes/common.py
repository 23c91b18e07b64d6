"""What every router shares: the server's state (the memory, keys, manager, metrics) as
a dependency, the ``/v1`` route decorator, and the visibility checks of the agent rule."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.routing import APIRoute

from memlane.access import visible
from memlane.api import AsyncMemory
from memlane.errors import NotFoundError, no_session
from memlane.models import MemoryRecord
from memlane.models import Scope as UserScope
from memlane.server.auth import own_record
from memlane.server.keys import KeyStore
from memlane.server.metrics import Metrics
from memlane.server.schemas import V1_ERRORS

_Handler = TypeVar("_Handler", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class ServerState:
    """What the routes work on (``app.state.memlane``). ``memory`` is timed per call
    (:class:`~memlane.server.metrics.TimedMemory`); ``manager`` (a MemoryManager over
    the same store) enables learning and LLM summaries."""

    memory: AsyncMemory
    keys: KeyStore
    metrics: Metrics
    manager: Any | None = None

    async def own_record(self, where: UserScope, memory_id: str) -> MemoryRecord:
        """The memory if ``where`` sees it; else not found, as if absent."""
        return await own_record(self.memory, where, memory_id)

    async def session_scope(
        self, where: UserScope, session_id: str, *, writing: bool = False
    ) -> None:
        """A call acting as an agent reaches that agent's sessions and shared ones (the
        rule of memlane.access); writing may also create a new one."""
        if where.agent_id is None:
            return
        try:
            session = await self.memory.get_session(session_id, user_id=where.user_id)
        except NotFoundError:
            if writing:
                return
            raise
        if not visible(where, session.agent_id):
            raise no_session(session_id, where.user_id)


def operation_id(route: APIRoute) -> str:
    """Operation ids are the handlers' names (add_memory, search ...): what a generated
    client calls its methods."""
    return route.name


def server_state(request: Request) -> ServerState:
    """The dependency giving a route the server's state."""
    state: ServerState = request.app.state.memlane
    return state


State = Annotated[ServerState, Depends(server_state)]


def v1(
    router: APIRouter,
    method: str,
    path: str,
    *,
    responses: dict[int | str, Any] | None = None,
    **kw: Any,
) -> Callable[[_Handler], _Handler]:
    """A /v1/users/{user_id} route, documented with every error it can answer."""
    return router.api_route(
        path, methods=[method], responses={**V1_ERRORS, **(responses or {})}, **kw
    )
