"""The REST API's routers, one per area, in the order the OpenAPI document lists them.

To add a REST route: put it in its area's module (or a new one listed in
XX
memory), ask ``caller.scope(action, user_id, agent_id)`` first and return
``caller.out(...)`` for anything holding a store user id."""

from fastapi import APIRouter

from memlane.server.routes import context, jobs, memories, service, sessions, transfer, users

ROUTERS: tuple[APIRouter, ...] = (
    service.router,
    users.router,
    memories.router,
    sessions.router,
    context.router,
    transfer.router,
    jobs.router,
)

__all__ = ["ROUTERS"]
