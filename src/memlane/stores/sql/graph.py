"""The knowledge graph's ops on both SQL stores, written once, sans I/O: each handler is a
generator that yields :data:`~memlane.stores.sql.statements.Statement` values and is
sent back each one's rows; SQLite runs it on its connection (:func:`run`), PostgreSQL
through its own runners. Traversal is one recursive CTE."""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from memlane.models import from_iso
from memlane.models.graph import MENTIONED_WITH, Entity, EntityType, Mention, Relation
from memlane.ports import store as ops
from memlane.stores.graph import (
    co_id,
    co_occurrences,
    merged_aliases,
    moved_relation,
    triple_id,
)
from memlane.stores.sql.dialect import Dialect
from memlane.stores.sql.statements import Statement

Rows = list[Any]
Steps = Generator[Statement, Rows, Any]

GRAPH_TABLES = ("relation_sources", "relations", "mentions", "entity_keys", "entities")
"""The tables of the graph, in the order forgetting a user deletes them."""

_ENTITY = "id, name, type, aliases, created_at, updated_at, merged_into"


def _time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return from_iso(value)


def _entity(user_id: str, row: Sequence[Any]) -> Entity:
    aliases = row[3] if isinstance(row[3], list) else json.loads(row[3])
    return Entity(
        user_id, row[0], row[1], EntityType(row[2]), tuple(aliases),
        _time(row[4]), _time(row[5]), row[6],
    )  # fmt: skip


def _marks(d: Dialect, n: int) -> str:
    return ", ".join([d.mark] * n)


# ---------------------------------------------------------------------------- writes


def index_mentions(d: Dialect, op: ops.IndexMentions) -> Steps:
    touched, edges = yield from _unmention(d, op.user_id, op.replace)
    for item in op.items:
        linked: list[str] = []
        for draft in item.entities:
            entity_id = yield from _resolve(d, op.user_id, draft, op.at)
            yield (
                f"INSERT INTO mentions (user_id, entity_id, record_id, session_id) "
                f"VALUES ({_marks(d, 4)}) ON CONFLICT DO NOTHING",
                [op.user_id, entity_id, item.record_id, item.session_id],
            )
            if entity_id not in linked and len(linked) < op.max_edges:
                linked.append(entity_id)
        for a, b in co_occurrences(linked):
            edge = Relation(op.user_id, co_id(a, b), a, MENTIONED_WITH, b, item.said, None, op.at)
            yield from _put_relation(d, replace(edge, sources=(item.record_id,)))
        for t in item.triples:
            yield from _put_triple(d, op.user_id, item, t, op.at)
    yield from _drop_unused(d, op.user_id, touched, edges)
    return None


def _unmention(d: Dialect, user_id: str, record_ids: Sequence[str]) -> Steps:
    """Take back what the text of ``record_ids`` named (see IndexMentions.replace);
    returns the entities they mentioned and the co-occurrence edges they were sources of."""
    m = d.mark
    touched: list[str] = []
    edges: list[str] = []
    for rid in record_ids:
        rows = yield (
            f"SELECT entity_id FROM mentions WHERE user_id = {m} AND record_id = {m}",
            [user_id, rid],
        )
        touched += [row[0] for row in rows]
        rows = yield (
            f"SELECT s.relation_id FROM relation_sources s JOIN relations x "
            f"ON x.user_id = s.user_id AND x.id = s.relation_id "
            f"WHERE s.user_id = {m} AND s.record_id = {m} AND x.predicate = {m}",
            [user_id, rid, MENTIONED_WITH],
        )
        co = [row[0] for row in rows]
        edges += co
        typed = (
            f"SELECT x.{{end}} FROM relations x JOIN relation_sources s "
            f"ON s.user_id = x.user_id AND s.relation_id = x.id "
            f"WHERE s.user_id = {m} AND s.record_id = {m} AND x.predicate <> {m}"
        )
        yield (
            f"DELETE FROM mentions WHERE user_id = {m} AND record_id = {m} "
            f"AND entity_id NOT IN ({typed.format(end='subject_id')}) "
            f"AND entity_id NOT IN ({typed.format(end='object_id')})",
            [user_id, rid, user_id, rid, MENTIONED_WITH, user_id, rid, MENTIONED_WITH],
        )
        if co:
            yield (
                f"DELETE FROM relation_sources WHERE user_id = {m} AND record_id = {m} "
                f"AND relation_id IN ({_marks(d, len(co))})",
                [user_id, rid, *co],
            )
    return list(dict.fromkeys(touched)), list(dict.fromkeys(edges))


def _drop_unused(d: Dialect, user_id: str, entity_ids: list[str], edges: list[str]) -> Steps:
    """Delete the co-occurrence ``edges`` left with no source, then the ``entity_ids``
    (and their keys) that no mention or edge names any more."""
    m = d.mark
    if edges:
        yield (
            f"DELETE FROM relations WHERE user_id = {m} AND id IN ({_marks(d, len(edges))}) "
            "AND NOT EXISTS (SELECT 1 FROM relation_sources s "
            "WHERE s.user_id = relations.user_id AND s.relation_id = relations.id)",
            [user_id, *edges],
        )
    if not entity_ids:
        return None
    marks = _marks(d, len(entity_ids))
    yield (
        f"DELETE FROM entities WHERE user_id = {m} AND id IN ({marks}) AND merged_into IS NULL "
        f"AND NOT EXISTS (SELECT 1 FROM mentions x WHERE x.user_id = {m} "
        "AND x.entity_id = entities.id) "
        f"AND NOT EXISTS (SELECT 1 FROM relations x WHERE x.user_id = {m} "
        "AND (x.subject_id = entities.id OR x.object_id = entities.id)) "
        f"AND NOT EXISTS (SELECT 1 FROM entities y WHERE y.user_id = {m} "
        "AND y.merged_into = entities.id)",
        [user_id, *entity_ids, user_id, user_id, user_id],
    )
    yield (
        f"DELETE FROM entity_keys WHERE user_id = {m} AND entity_id IN ({marks}) "
        "AND NOT EXISTS (SELECT 1 FROM entities e "
        "WHERE e.user_id = entity_keys.user_id AND e.id = entity_keys.entity_id)",
        [user_id, *entity_ids],
    )
    return None


def _put_triple(
    d: Dialect, user_id: str, item: ops.MentionDraft, t: ops.TripleDraft, at: datetime
) -> Steps:
    m = d.mark
    ends = []
    for draft in (t.subject, t.object):
        entity_id = yield from _resolve(d, user_id, draft, at)
        ends.append(entity_id)
        yield (
            f"INSERT INTO mentions (user_id, entity_id, record_id, session_id) "
            f"VALUES ({_marks(d, 4)}) ON CONFLICT DO NOTHING",
            [user_id, entity_id, item.record_id, item.session_id],
        )
    subject, obj = ends
    if subject == obj:
        return None
    ends_at = None
    if t.exclusive:
        # The subject's other objects of the predicate: those begun before this is said
        # end now; one begun later (learned out of order) ends this one instead.
        said = d.time(item.said)
        others = f"user_id = {m} AND subject_id = {m} AND predicate = {m} AND object_id <> {m}"
        key = [user_id, subject, t.predicate, obj]
        yield (
            f"UPDATE relations SET valid_to = {m} WHERE {others} AND valid_to IS NULL "
            f"AND (valid_from IS NULL OR valid_from <= {m})",
            [said, *key, said],
        )
        rows = yield (
            f"SELECT MIN(valid_from) FROM relations WHERE {others} AND valid_from > {m}",
            [*key, said],
        )
        ends_at = _time(rows[0][0]) if rows and rows[0][0] is not None else None
    edge = Relation(user_id, triple_id(subject, t.predicate, obj), subject, t.predicate, obj)
    edge = replace(
        edge, valid_from=item.said, valid_to=ends_at, created_at=at, sources=(item.record_id,)
    )
    yield from _put_relation(d, edge)
    return None


def _resolve(d: Dialect, user_id: str, draft: ops.EntityDraft, at: datetime) -> Steps:
    m = d.mark
    keys = tuple(dict.fromkeys((*draft.lookup, *draft.keys)))
    rows = yield (
        f"SELECT key, entity_id FROM entity_keys WHERE user_id = {m} "
        f"AND key IN ({_marks(d, len(keys))})",
        [user_id, *keys],
    )
    owners = {k: e for k, e in rows}
    found = next((owners[k] for k in draft.lookup if k in owners), None)
    if found is None:
        found = draft.id
        yield (
            f"INSERT INTO entities (user_id, {_ENTITY}) VALUES ({_marks(d, 8)})",
            [user_id, draft.id, draft.name, draft.type.value, "[]",
             d.time(at), d.time(at), None],
        )  # fmt: skip
    elif draft.type is not EntityType.NAME:
        yield (
            f"UPDATE entities SET type = {m} WHERE user_id = {m} AND id = {m} AND type = 'name'",
            [draft.type.value, user_id, found],
        )
    if found != draft.id and draft.keys and draft.keys[0] not in owners:
        rows = yield (
            f"SELECT aliases FROM entities WHERE user_id = {m} AND id = {m}",
            [user_id, found],
        )
        aliases = rows[0][0] if isinstance(rows[0][0], list) else json.loads(rows[0][0])
        yield (
            f"UPDATE entities SET aliases = {m}, updated_at = {m} WHERE user_id = {m} AND id = {m}",
            [json.dumps([*aliases, draft.name]), d.time(at), user_id, found],
        )
    for k in draft.keys:
        if k not in owners:
            yield (
                f"INSERT INTO entity_keys (user_id, key, entity_id) VALUES ({_marks(d, 3)}) "
                "ON CONFLICT DO NOTHING",
                [user_id, k, found],
            )
    if found == draft.id and draft.keys:
        # A concurrent writer (PostgreSQL) may have made the same entity first: its key
        # won, so the entity is that one and the one just made goes.
        rows = yield (
            f"SELECT entity_id FROM entity_keys WHERE user_id = {m} AND key = {m}",
            [user_id, draft.keys[0]],
        )
        if rows and rows[0][0] != found:
            yield (f"DELETE FROM entities WHERE user_id = {m} AND id = {m}", [user_id, found])
            yield (
                f"DELETE FROM entity_keys WHERE user_id = {m} AND entity_id = {m}",
                [user_id, found],
            )
            found = rows[0][0]
    return found


def _put_relation(d: Dialect, r: Relation) -> Steps:
    m = d.mark
    yield (
        "INSERT INTO relations (user_id, id, subject_id, predicate, object_id, valid_from, "
        f"valid_to, created_at) VALUES ({_marks(d, 8)}) ON CONFLICT (user_id, id) DO UPDATE "
        "SET valid_to = COALESCE(relations.valid_to, excluded.valid_to), "
        # said of an earlier time too: it held from then (an open start is earliest)
        "valid_from = CASE WHEN relations.valid_from IS NULL OR excluded.valid_from IS NULL "
        "THEN NULL WHEN excluded.valid_from < relations.valid_from THEN excluded.valid_from "
        "ELSE relations.valid_from END",
        [r.user_id, r.id, r.subject_id, r.predicate, r.object_id,
         d.time(r.valid_from) if r.valid_from else None,
         d.time(r.valid_to) if r.valid_to else None,
         d.time(r.created_at) if r.created_at else None],
    )  # fmt: skip
    for source in r.sources:
        yield (
            "INSERT INTO relation_sources (user_id, relation_id, record_id) "
            f"VALUES ({m}, {m}, {m}) ON CONFLICT DO NOTHING",
            [r.user_id, r.id, source],
        )
    return None


def put_relations(d: Dialect, op: ops.PutRelations) -> Steps:
    for r in op.relations:
        yield from _put_relation(d, r)
    return None


def merge_entities(d: Dialect, op: ops.MergeEntities) -> Steps:
    m, u = d.mark, op.user_id
    rows = yield (
        f"SELECT {_ENTITY} FROM entities WHERE user_id = {m} AND id IN ({m}, {m})",
        [u, op.source_id, op.target_id],
    )
    found = {e.id: e for e in (_entity(u, row) for row in rows)}
    source, target = found.get(op.source_id), found.get(op.target_id)
    if source is None or target is None or source.merged_into or target.merged_into:
        return None
    if source.id == target.id:
        return target
    key = [target.id, u, source.id]
    yield (f"UPDATE entity_keys SET entity_id = {m} WHERE user_id = {m} AND entity_id = {m}", key)
    yield (
        "INSERT INTO mentions (user_id, entity_id, record_id, session_id) "
        f"SELECT user_id, {m}, record_id, session_id FROM mentions "
        f"WHERE user_id = {m} AND entity_id = {m} ON CONFLICT DO NOTHING",
        key,
    )
    yield (f"DELETE FROM mentions WHERE user_id = {m} AND entity_id = {m}", [u, source.id])
    edges = yield from list_relations(d, ops.ListRelations(u, source.id, None, 1_000_000))
    for r in edges:
        yield (f"DELETE FROM relation_sources WHERE user_id = {m} AND relation_id = {m}", [u, r.id])
        yield (f"DELETE FROM relations WHERE user_id = {m} AND id = {m}", [u, r.id])
        moved = moved_relation(r, source.id, target.id)
        if moved is not None:
            yield from _put_relation(d, moved)
    merged = replace(target, aliases=merged_aliases(target, source), updated_at=op.at)
    yield (
        f"UPDATE entities SET aliases = {m}, updated_at = {m} WHERE user_id = {m} AND id = {m}",
        [json.dumps(list(merged.aliases)), d.time(op.at), u, target.id],
    )
    yield (
        f"UPDATE entities SET merged_into = {m}, updated_at = {m} WHERE user_id = {m} AND id = {m}",
        [target.id, d.time(op.at), u, source.id],
    )
    return merged


def prune(d: Dialect, user_id: str) -> Steps:
    """Drop what no stored memory of the user states any more (after records went):
    mentions and sources of removed memories, edges left with no source, entities left
    with no mention nor edge (with the entities merged into them), their keys."""
    m = d.mark
    gone = (
        "NOT EXISTS (SELECT 1 FROM records r "
        "WHERE r.user_id = {t}.user_id AND r.id = {t}.record_id)"
    )
    yield (f"DELETE FROM mentions WHERE user_id = {m} AND " + gone.format(t="mentions"), [user_id])
    yield (
        f"DELETE FROM relation_sources WHERE user_id = {m} AND "
        + gone.format(t="relation_sources"),
        [user_id],
    )
    yield (
        f"DELETE FROM relations WHERE user_id = {m} AND NOT EXISTS (SELECT 1 FROM "
        "relation_sources s WHERE s.user_id = relations.user_id AND s.relation_id = relations.id)",
        [user_id],
    )
    used = (
        "(EXISTS (SELECT 1 FROM mentions x WHERE x.user_id = {m} AND x.entity_id = {c}) "
        "OR EXISTS (SELECT 1 FROM relations x WHERE x.user_id = {m} "
        "AND (x.subject_id = {c} OR x.object_id = {c})))"
    )
    target = "COALESCE(entities.merged_into, entities.id)"
    yield (
        f"DELETE FROM entities WHERE user_id = {m} AND NOT " + used.format(m=m, c=target),
        [user_id, user_id, user_id],
    )
    yield (
        f"DELETE FROM entity_keys WHERE user_id = {m} AND NOT EXISTS (SELECT 1 FROM entities e "
        "WHERE e.user_id = entity_keys.user_id AND e.id = entity_keys.entity_id)",
        [user_id],
    )
    return None


# ---------------------------------------------------------------------------- reads


def list_entities(d: Dialect, op: ops.ListEntities) -> Steps:
    m = d.mark
    if op.ids:
        among = _marks(d, len(op.ids))
        sql = f"SELECT {_ENTITY} FROM entities WHERE user_id = {m} AND id IN ({among})"
        rows = yield (sql, [op.user_id, *op.ids])
    else:
        rows = yield (
            f"SELECT {_ENTITY} FROM entities WHERE user_id = {m} AND id > {m} "
            f"AND merged_into IS NULL ORDER BY id LIMIT {m}",
            [op.user_id, op.after_id or "", op.limit],
        )
    return [_entity(op.user_id, row) for row in rows]


def find_entities(d: Dialect, op: ops.FindEntities) -> Steps:
    if not op.keys:
        return {}
    rows = yield (
        f"SELECT key, entity_id FROM entity_keys WHERE user_id = {d.mark} "
        f"AND key IN ({_marks(d, len(op.keys))})",
        [op.user_id, *op.keys],
    )
    return {k: e for k, e in rows}


def list_mentions(d: Dialect, op: ops.ListMentions) -> Steps:
    m = d.mark
    records = f"record_id IN ({_marks(d, len(op.record_ids))})" if op.record_ids else "1 = 0"
    entities = f"entity_id IN ({_marks(d, len(op.entity_ids))})" if op.entity_ids else "1 = 0"
    rows = yield (
        f"SELECT entity_id, record_id, session_id FROM mentions WHERE user_id = {m} "
        f"AND ({records} OR {entities}) ORDER BY record_id, entity_id LIMIT {m}",
        [op.user_id, *op.record_ids, *op.entity_ids, op.limit],
    )
    return [Mention(op.user_id, e, r, s) for e, r, s in rows]


def list_relations(d: Dialect, op: ops.ListRelations) -> Steps:
    m = d.mark
    where, params = f"user_id = {m} AND id > {m}", [op.user_id, op.after_id or ""]
    if op.entity_id is not None:
        where += f" AND (subject_id = {m} OR object_id = {m})"
        params += [op.entity_id, op.entity_id]
    if op.as_of is not None:
        valid, times = _valid_at(d, op.as_of)
        where, params = f"{where} AND {valid}", [*params, *times]
    elif not op.ended:
        where += " AND valid_to IS NULL"
    rows = yield (
        "SELECT id, subject_id, predicate, object_id, valid_from, valid_to, created_at "
        f"FROM relations WHERE {where} ORDER BY id LIMIT {m}",
        [*params, op.limit],
    )
    if not rows:
        return []
    ids = [row[0] for row in rows]
    sources = yield (
        f"SELECT relation_id, record_id FROM relation_sources WHERE user_id = {m} "
        f"AND relation_id IN ({_marks(d, len(ids))}) ORDER BY record_id",
        [op.user_id, *ids],
    )
    by_relation: dict[str, list[str]] = {}
    for rid, record_id in sources:
        by_relation.setdefault(rid, []).append(record_id)
    return [
        Relation(
            op.user_id,
            row[0],
            row[1],
            row[2],
            row[3],
            _time(row[4]),
            _time(row[5]),
            _time(row[6]),
            tuple(by_relation.get(row[0], ())),
        )
        for row in rows
    ]


def entity_neighbors(d: Dialect, op: ops.EntityNeighbors) -> Steps:
    """The walk as one recursive query over current edges (or those valid at ``as_of``),
    both directions, each step reading only the edges of the entities just reached
    (through the subject and object indexes): the cost follows the walk, not the number
    of the user's edges."""
    m = d.mark
    valid, times = "valid_to IS NULL", list[Any]()
    if op.as_of is not None:
        valid, times = _valid_at(d, op.as_of)
    u = op.user_id
    if d.lateral:
        step = (
            "SELECT e.b, w.depth + 1 FROM walk w CROSS JOIN LATERAL ("
            f"SELECT object_id AS b FROM relations WHERE user_id = {m} AND subject_id = w.id"
            f" AND {valid} UNION ALL SELECT subject_id FROM relations WHERE user_id = {m}"
            f" AND object_id = w.id AND {valid}) e WHERE w.depth < {m}"
        )
        params = [u, *times, u, *times, op.depth]
    else:
        step = (
            # Without statistics SQLite would read the step's edges by the primary key's
            # user prefix (every edge of the user, each step): the indexes are named.
            "SELECT r.object_id, w.depth + 1 FROM walk w JOIN relations r"
            " INDEXED BY relations_subject"
            f" ON r.user_id = {m} AND r.subject_id = w.id WHERE w.depth < {m} AND {valid}"
            " UNION SELECT r.subject_id, w.depth + 1 FROM walk w JOIN relations r"
            " INDEXED BY relations_object"
            f" ON r.user_id = {m} AND r.object_id = w.id WHERE w.depth < {m} AND {valid}"
        )
        params = [u, op.depth, *times, u, op.depth, *times]
    rows = yield (
        f"WITH RECURSIVE walk(id, depth) AS (SELECT CAST({m} AS TEXT), 0 UNION {step})"
        f" SELECT id, MIN(depth) FROM walk WHERE id <> {m} GROUP BY id"
        f" ORDER BY MIN(depth), id LIMIT {m}",
        [op.entity_id, *params, op.entity_id, op.limit],
    )
    return [(i, int(depth)) for i, depth in rows]


def _valid_at(d: Dialect, at: datetime) -> tuple[str, list[Any]]:
    """The condition (and its parameters) of an edge valid at ``at``."""
    m, t = d.mark, d.time(at)
    return (
        f"(valid_from IS NULL OR valid_from <= {m}) AND (valid_to IS NULL OR valid_to > {m})",
        [t, t],
    )


HANDLERS: dict[type[ops.Op[Any]], Callable[[Dialect, Any], Steps]] = {
    ops.IndexMentions: index_mentions,
    ops.PutRelations: put_relations,
    ops.MergeEntities: merge_entities,
    ops.ListEntities: list_entities,
    ops.FindEntities: find_entities,
    ops.ListMentions: list_mentions,
    ops.ListRelations: list_relations,
    ops.EntityNeighbors: entity_neighbors,
}
"""The graph's op types and their step functions."""


def run(execute: Any, steps: Steps) -> Any:
    """Drive ``steps`` with ``execute(sql, params) -> rows`` (a blocking runner)."""
    try:
        statement = next(steps)
        while True:
            statement = steps.send(execute(*statement))
    except StopIteration as done:
        return done.value


# The SQL of the tables, per database: created by SQLite migration 13, PostgreSQL's 9.
SCHEMA = """
        CREATE TABLE entities (
            user_id TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, type TEXT NOT NULL,
            aliases TEXT NOT NULL DEFAULT '[]', created_at {time}, updated_at {time},
            merged_into TEXT,
            PRIMARY KEY (user_id, id)
        ){rowid};
        CREATE TABLE entity_keys (
            user_id TEXT NOT NULL, key TEXT NOT NULL, entity_id TEXT NOT NULL,
            PRIMARY KEY (user_id, key)
        ){rowid};
        CREATE INDEX entity_keys_entity ON entity_keys(user_id, entity_id);
        CREATE TABLE mentions (
            user_id TEXT NOT NULL, entity_id TEXT NOT NULL, record_id TEXT NOT NULL,
            session_id TEXT,
            PRIMARY KEY (user_id, record_id, entity_id)
        ){rowid};
        CREATE INDEX mentions_entity ON mentions(user_id, entity_id, record_id);
        CREATE TABLE relations (
            user_id TEXT NOT NULL, id TEXT NOT NULL, subject_id TEXT NOT NULL,
            predicate TEXT NOT NULL, object_id TEXT NOT NULL,
            valid_from {time}, valid_to {time}, created_at {time},
            PRIMARY KEY (user_id, id)
        ){rowid};
        CREATE INDEX relations_subject ON relations(user_id, subject_id);
        CREATE INDEX relations_object ON relations(user_id, object_id);
        CREATE TABLE relation_sources (
            user_id TEXT NOT NULL, relation_id TEXT NOT NULL, record_id TEXT NOT NULL,
            PRIMARY KEY (user_id, relation_id, record_id)
        ){rowid};
        CREATE INDEX relation_sources_record ON relation_sources(user_id, record_id);
"""
