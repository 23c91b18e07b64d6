"""What every router shares: the server's state (the memory, keys, manager, metrics) as
a dependency, an area's ``/v1/users/{user_id}`` route decorator, and :class:`Call`, the
one dependency a user's route takes (who calls, for which user, as which agent)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel

from memlane.access import Action, visible
from memlane.api import AsyncMemory
from memlane.errors import NotFoundError, no_session
from memlane.models import MemoryRecord
from memlane.models import Scope as UserScope
from memlane.server.auth import Caller, CallerDep, own_record
from memlane.server.keys import KeyStore
from memlane.server.metrics import Metrics
from memlane.server.responses import public
from memlane.server.schemas import V1_ERRORS, AgentQuery, UserId, errors

_Handler = TypeVar("_Handler", bound=Callable[..., Any])
_Model = TypeVar("_Model", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class ServerState:
    """What the routes work on (``app.state.memlane``). ``memory`` is timed per call
    (:class:`~memlane.server.metrics.TimedMemory`); ``manager`` (a MemoryManager over
    the same store) enables learning and LLM summaries."""

    memory: AsyncMemory
    keys: KeyStore
    metrics: Metrics
    manager: Any | None = None


def operation_id(route: APIRoute) -> str:
    """Operation ids are the handlers' names (add_memory, search ...): what a generated
    client calls its methods."""
    return route.name


def server_state(request: Request) -> ServerState:
    """The dependency giving a route the server's state."""
    state: ServerState = request.app.state.memlane
    return state


State = Annotated[ServerState, Depends(server_state)]


class Area:
    """One area's router (``memories``, ``sessions`` ...): its routes are tagged with the
    area's name and, under ``/v1/users/{user_id}``, documented with every error they can
    answer."""

    def __init__(self, tag: str) -> None:
        self.router = APIRouter(generate_unique_id_function=operation_id, tags=[tag])

    def route(
        self,
        method: str,
        path: str,
        *codes: int,
        responses: dict[int | str, Any] | None = None,
        **kw: Any,
    ) -> Callable[[_Handler], _Handler]:
        """A route at ``/v1/users/{user_id}`` + ``path``; ``codes`` are the errors it
        answers beyond every such route's (409, 501)."""
        documented = {**V1_ERRORS, **errors(*codes), **(responses or {})}
        full = "/v1/users/{user_id}" + path
        return self.router.api_route(full, methods=[method], responses=documented, **kw)


@dataclass(frozen=True, slots=True)
class Call:
    """A request about one user: the user as the key's tenant names them, the caller,
    the server's state, and the agent the call acts as (the ``agent_id`` query
    parameter, on the routes that take one)."""

    user_id: str
    caller: Caller
    srv: ServerState
    agent_id: str | None = None

    @property
    def actor(self) -> str:
        """Who the audit trail records as making this call: the API key, and the agent
        the call acts as, if any."""
        agent = f" agent:{self.agent_id}" if self.agent_id is not None else ""
        return self.caller.actor + agent

    @property
    def memory(self) -> AsyncMemory:
        """The server's memory acting for this call's :attr:`actor`."""
        return self.srv.memory.with_actor(self.actor)

    def actor_for(self, where: UserScope) -> str:
        """:attr:`actor` acting as the agent of ``where`` (a body's ``agent_id``, checked
        by :meth:`scope`)."""
        return replace(self, agent_id=where.agent_id).actor

    def acting(self, where: UserScope) -> AsyncMemory:
        """The server's memory acting for :meth:`actor_for` ``where``."""
        return self.srv.memory.with_actor(self.actor_for(where))

    def out(self, model: type[_Model], value: dict[str, Any]) -> _Model:
        """``value`` (memlane objects' ``to_dict()``) as the response ``model``, naming
        users as the caller's tenant does (:func:`~memlane.server.responses.public`)."""
        return public(model, value, self.caller.tenant)

    @property
    def operator(self) -> bool:
        """Whether the call acts as no agent with a key not limited to agents: the one
        that may reach quarantined memories to forget or restore them."""
        return self.agent_id is None and self.caller.grant.agents is None

    def scope(self, action: Action, agent_id: str | None = None) -> UserScope:
        """Where the caller may do ``action`` for the user as ``agent_id`` (else the
        query's agent): :meth:`Caller.scope`. Raises AccessDeniedError."""
        return self.caller.scope(action, self.user_id, agent_id or self.agent_id)

    async def owned(
        self, action: Action, memory_id: str, *, include_quarantined: bool = False
    ) -> MemoryRecord:
        """The memory, if the call may do ``action`` (:meth:`scope`) and sees it; else
        not found, as if absent (a quarantined one unless ``include_quarantined``). Its
        ``user_id`` is the store's id of the user."""
        where = self.scope(action)
        return await own_record(
            self.memory, where, memory_id, include_quarantined=include_quarantined
        )

    async def session(
        self,
        action: Action,
        session_id: str | None,
        *,
        agent_id: str | None = None,
        writing: bool = False,
    ) -> UserScope:
        """:meth:`scope`, for a call about ``session_id`` (None: about no session):
        acting as an agent, a call reaches that agent's sessions and shared ones (the
        rule of memlane.access); ``writing`` may also create a new one."""
        where = self.scope(action, agent_id)
        if session_id is not None and where.agent_id is not None:
            await self._check_session(where, session_id, writing)
        return where

    async def _check_session(self, where: UserScope, session_id: str, writing: bool) -> None:
        try:
            session = await self.memory.get_session(session_id, user_id=where.user_id)
        except NotFoundError:
            if writing:
                return
            raise
        if not visible(where, session.agent_id):
            raise no_session(session_id, where.user_id)


def _user_call(user_id: UserId, caller: CallerDep, srv: State) -> Call:
    return Call(user_id, caller, srv)


UserCall = Annotated[Call, Depends(_user_call)]
"""A route about a user as a whole, or whose body names the agent."""


def _agent_call(call: UserCall, agent_id: AgentQuery = None) -> Call:
    return replace(call, agent_id=agent_id)


AgentCall = Annotated[Call, Depends(_agent_call)]
"""A route that may act as an agent named by the ``agent_id`` query parameter."""
