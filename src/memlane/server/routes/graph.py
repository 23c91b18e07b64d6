"""The knowledge graph of a user: entities, relations, neighbors, mentions.

The graph is the user's as a whole (an entity gathers the mentions of every agent's
memories), so reading it takes a key not limited to agents, as reading a user's whole
history does (``Action.READ_ALL``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from memlane.access import Action
from memlane.core.graph import MAX_DEPTH
from memlane.server.responses import EntitiesOut, MentionsOut, NeighborsOut, RelationsOut
from memlane.server.routes.common import Area, UserCall
from memlane.server.schemas import AsOfQuery

area = Area("graph")
router = area.router

_ENTITY = "An entity's id, or one of its names (any case)."
_MEMORIES = "Memories whose mentions to list (repeat the parameter for several)."
Limit = Annotated[int, Query(ge=1, le=1000)]


@area.route("GET", "/entities")
async def list_entities(
    call: UserCall, cursor: str | None = None, limit: Limit = 100
) -> EntitiesOut:
    where = call.scope(Action.READ_ALL)
    found = await call.memory.entities(user_id=where.user_id, limit=limit, after=cursor)
    return call.out(EntitiesOut, {"entities": [e.to_dict() for e in found]})


@area.route("GET", "/relations", 404)
async def list_relations(
    call: UserCall,
    entity: Annotated[str | None, Query(description=_ENTITY)] = None,
    current: bool = False,
    cursor: str | None = None,
    limit: Limit = 100,
    as_of: AsOfQuery = None,
) -> RelationsOut:
    where = call.scope(Action.READ_ALL)
    found = await call.memory.relations(
        entity, user_id=where.user_id, current=current, limit=limit, after=cursor, as_of=as_of
    )
    return call.out(RelationsOut, {"relations": [r.to_dict() for r in found]})


@area.route("GET", "/entities/{entity}/neighbors", 404)
async def entity_neighbors(
    entity: str,
    call: UserCall,
    depth: Annotated[int, Query(ge=1, le=MAX_DEPTH)] = 1,
    limit: Limit = 100,
    as_of: AsOfQuery = None,
) -> NeighborsOut:
    where = call.scope(Action.READ_ALL)
    found = await call.memory.neighbors(
        entity, depth, user_id=where.user_id, limit=limit, as_of=as_of
    )
    return call.out(NeighborsOut, {"neighbors": [n.to_dict() for n in found]})


@area.route("GET", "/mentions", 404)
async def list_mentions(
    call: UserCall,
    memory_id: Annotated[
        list[str] | None, Query(description="Memories whose mentions to list.")
    ] = None,
    entity: Annotated[str | None, Query(description=_ENTITY)] = None,
    limit: Limit = 1000,
) -> MentionsOut:
    where = call.scope(Action.READ_ALL)
    found = await call.memory.mentions(
        user_id=where.user_id, record_ids=memory_id or (), entity=entity, limit=limit
    )
    return call.out(MentionsOut, {"mentions": [m.to_dict() for m in found]})
