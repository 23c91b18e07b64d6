"""The knowledge graph: which people, places, organizations, dates and things each memory
names, resolved to entities of the user's scope, and the edges between them.

Without a model (the default) a memory's names are its proper-noun runs
(:func:`memlane.text.entities`, chosen by measuring: ``bench/graph.md``) and its dates
the periods read from it at add time; every two entities one memory names are linked by
a co-occurrence edge. Resolution is by normalized name and alias; within a session a
first name said alone ("Jon") is the full name said earlier in it ("Jon Ross").
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from memlane.core.base import Core, check_aware
from memlane.core.flow import Flow, one
from memlane.core.mentions import entity_key
from memlane.errors import NotFoundError, ValidationError
from memlane.models import check_id
from memlane.models.graph import Entity, Mention, Neighbor, Relation
from memlane.ports import store as ops

_MERGE_CHAIN = 64
"""The most merges followed from an entity to the one that holds it now."""

MAX_DEPTH = 4
"""The deepest :func:`neighbors` walks: past a few hops everything is related."""


# ---------------------------------------------------------------------------- reads


def _entity(user_id: str, entity: str) -> Flow[Entity]:
    """The entity with id ``entity``, else the one named ``entity`` (a merged entity's
    names lead to the entity it was merged into). Raises NotFoundError."""
    if not isinstance(entity, str) or not entity.strip():
        raise ValidationError("entity must be an entity id or name")
    found = yield from one(ops.ListEntities(user_id, ids=(entity,)))
    if not found:
        owners = yield from one(ops.FindEntities(user_id, (entity_key(entity),)))
        ids = tuple(owners.values())
        found = (yield from one(ops.ListEntities(user_id, ids=ids))) if ids else []
    for _ in range(_MERGE_CHAIN):  # merged into one merged later: follow to its end
        if not found or found[0].merged_into is None:
            break
        found = yield from one(ops.ListEntities(user_id, ids=(found[0].merged_into,)))
    if not found:
        raise NotFoundError(f"no entity {entity!r} for user {user_id!r}")
    return found[0]


def entities(
    core: Core,
    *,
    user_id: str,
    ids: Sequence[str] = (),
    limit: int = 100,
    after: str | None = None,
) -> Flow[list[Entity]]:
    """The user's entities by id, after the cursor id ``after`` (merged ones left out);
    with ``ids``, those entities (merged ones too; unknown ids left out), in no order.
    Raises ValidationError."""
    check_id("user_id", user_id)
    if isinstance(ids, str):
        raise ValidationError("ids must be a list of entity ids, not one string")
    for i in ids:
        check_id("entity id", i)
    op = ops.ListEntities(user_id, tuple(ids), _cursor(after), core.check_limit(limit))
    return (yield from one(op))


def relations(
    core: Core,
    entity: str | None = None,
    *,
    user_id: str,
    current: bool = False,
    limit: int = 100,
    after: str | None = None,
    as_of: datetime | None = None,
) -> Flow[list[Relation]]:
    """The relations of ``entity`` (an id or a name; None: all the user's), by id after
    the cursor id ``after``, with the memories that state each (``sources``); only those
    still valid with ``current``, only those valid at ``as_of`` (a timezone-aware time:
    ``valid_from <= as_of < valid_to``) with it. Raises NotFoundError, ValidationError."""
    check_id("user_id", user_id)
    check_aware("as_of", as_of)
    _cursor(after)
    entity_id = None if entity is None else (yield from _entity(user_id, entity)).id
    cursor, limit = _cursor(after), core.check_limit(limit)
    op = ops.ListRelations(user_id, entity_id, cursor, limit, ended=not current, as_of=as_of)
    return (yield from one(op))


def _cursor(after: object) -> str | None:
    """``after`` checked: None, or an entity or relation id. Raises ValidationError."""
    if after is not None and not isinstance(after, str):
        raise ValidationError(f"after must be an id (a string), got {type(after).__name__}")
    return after


def neighbors(
    core: Core,
    entity: str,
    depth: int = 1,
    *,
    user_id: str,
    limit: int = 100,
    as_of: datetime | None = None,
) -> Flow[list[Neighbor]]:
    """The entities at most ``depth`` (1 to :data:`MAX_DEPTH`) current edges (with
    ``as_of``: edges valid then) away from ``entity`` (an id or a name), nearest first.
    Raises NotFoundError, ValidationError."""
    check_id("user_id", user_id)
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
        raise ValidationError(f"depth must be an integer from 1 to {MAX_DEPTH}")
    check_aware("as_of", as_of)
    start = yield from _entity(user_id, entity)
    op = ops.EntityNeighbors(user_id, start.id, depth, core.check_limit(limit), as_of=as_of)
    found = yield from one(op)
    if not found:
        return []
    rows = yield from one(ops.ListEntities(user_id, ids=tuple(i for i, _ in found)))
    by_id = {e.id: e for e in rows}
    return [Neighbor(by_id[i], d) for i, d in found if i in by_id]


def mentions(
    core: Core,
    *,
    user_id: str,
    record_ids: Sequence[str] = (),
    entity: str | None = None,
    limit: int = 1000,
) -> Flow[list[Mention]]:
    """Which entities the memories ``record_ids`` name, and (with ``entity``, an id or a
    name) which memories name that entity. Raises NotFoundError, ValidationError."""
    check_id("user_id", user_id)
    if isinstance(record_ids, str):
        raise ValidationError("record_ids must be a list of memory ids, not one string")
    ids = tuple(record_ids)
    for rid in ids:
        check_id("record id", rid)
    entity_ids = () if entity is None else ((yield from _entity(user_id, entity)).id,)
    if not ids and not entity_ids:
        return []
    op = ops.ListMentions(user_id, ids, entity_ids, core.check_limit(limit))
    return (yield from one(op))


def merge_entities(core: Core, source: str, target: str, *, user_id: str) -> Flow[Entity]:
    """Merge entity ``source`` into ``target`` (ids or names): the target takes its
    mentions, edges, names (as aliases); the source is kept, ``merged_into`` the target.
    Returns the target. Raises NotFoundError, ValidationError."""
    check_id("user_id", user_id)
    a = yield from _entity(user_id, source)
    b = yield from _entity(user_id, target)
    if a.id == b.id:
        return b
    merged = yield from one(ops.MergeEntities(user_id, a.id, b.id, core.now()))
    if merged is None:
        raise NotFoundError(f"entity {source!r} or {target!r} was merged meanwhile")
    return merged
