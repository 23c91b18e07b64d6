"""The REST API's routers, one per area, in the order the OpenAPI document lists them.

To add a REST route: put it in its area's module (or a new one listed in
:data:`ROUTERS`) under ``area.route(method, path, *codes)``, take ``call: UserCall``
(or ``AgentCall``: the key's caller, the user, the memory), ask ``call.scope(action)``
first and return a response model of :mod:`memlane.server.responses` through
``call.out(Model, obj.to_dict())``, which names users as the tenant does."""

from fastapi import APIRouter

from memlane.server.routes import (
    context,
    graph,
    jobs,
    memories,
    service,
    sessions,
    transfer,
    users,
)

ROUTERS: tuple[APIRouter, ...] = (
    service.router,
    users.router,
    memories.router,
    sessions.router,
    context.router,
    graph.router,
    transfer.router,
    jobs.router,
)

__all__ = ["ROUTERS"]
