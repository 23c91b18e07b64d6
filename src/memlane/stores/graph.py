"""What every store does alike with the knowledge graph's rows (pure functions): the
co-occurrence edges of one memory and their ids, and an entity's edges and names as a
merge moves them to another entity."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import replace

from memlane.models.graph import MENTIONED_WITH, Entity, Relation


def co_id(a: str, b: str) -> str:
    """The id of the co-occurrence edge between entities ``a`` and ``b`` (either order)."""
    lo, hi = sorted((a, b))
    return f"co:{lo}:{hi}"


def co_occurrences(entity_ids: Sequence[str]) -> Iterator[tuple[str, str]]:
    """Every two distinct entities of one memory, lesser id first."""
    yield from itertools.combinations(sorted(set(entity_ids)), 2)


def moved_relation(r: Relation, source_id: str, target_id: str) -> Relation | None:
    """``r`` with entity ``source_id`` replaced by ``target_id`` (a merge), or None when it
    would then join the target to itself. A co-occurrence edge takes the id of the edge
    between its new ends, so it joins one that is there already."""
    subject = target_id if r.subject_id == source_id else r.subject_id
    obj = target_id if r.object_id == source_id else r.object_id
    if subject == obj:
        return None
    if r.predicate == MENTIONED_WITH:
        lo, hi = sorted((subject, obj))
        return replace(r, id=co_id(lo, hi), subject_id=lo, object_id=hi)
    return replace(r, subject_id=subject, object_id=obj)


def merged_aliases(target: Entity, source: Entity) -> tuple[str, ...]:
    """The target's aliases after a merge: its own, then the source's name and aliases."""
    names = (*target.aliases, source.name, *source.aliases)
    return tuple(n for n in dict.fromkeys(names) if n != target.name)
