"""Neighbouring turns in one statement, shared by the SQL backends.

Search offers the turns just before and after its strongest hits a share of their score
(:func:`memlane.core.search.spread_to_neighbors`). Looking them up hit by hit took three
statements per hit (60 round trips per search on PostgreSQL); this builds one
``UNION ALL`` statement per chunk of hits, each part an index range scan.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

CHUNK = 100
"""Hits per statement (two compound parts each; SQLite allows 500 parts)."""

_PART = (
    # The hit's session as a scalar subquery (NULL unless the hit is an episode), so the
    # planner walks the (user_id, session_id, id) index from the hit outwards: a join
    # let SQLite scan all of the user's records by id instead (80 ms at 10k memories).
    "SELECT * FROM (SELECT CAST({p} AS text) AS hit, n.id AS nid FROM records n "
    "WHERE n.user_id = {p} AND n.session_id = (SELECT h.session_id FROM records h "
    "WHERE h.user_id = {p} AND h.id = {p} AND h.kind = 'episode') "
    # Only the hit's own agent's turns (no agent: turns of no agent): reads are limited
    # by agent, so a turn the reader cannot see must not count towards the window.
    "AND n.agent_id {same} (SELECT h.agent_id FROM records h WHERE h.user_id = {p} "
    "AND h.id = {p}) "
    "AND n.kind = 'episode' AND n.id {cmp} {p} AND n.deleted_at IS NULL "
    "AND n.superseded_by IS NULL AND n.valid_to IS NULL "
    "AND (n.expires_at IS NULL OR n.expires_at > {p}) "
    "ORDER BY n.id {order} LIMIT {p}) AS {alias}"
)


def neighbors_sql(
    user_id: str, ids: Sequence[str], window: int, now: Any, placeholder: str, same: str
) -> list[tuple[str, tuple[Any, ...]]]:
    """Statements (with their parameters) returning ``(hit, neighbour)`` rows: up to
    ``window`` current, unexpired episodes either side of each episode hit in its session
    by the hit's agent. ``now`` is in the backend's own time representation; ``same`` is
    the dialect's null-safe equality (``IS``, ``IS NOT DISTINCT FROM``)."""
    statements = []
    for start in range(0, len(ids), CHUNK):
        parts: list[str] = []
        params: list[Any] = []
        for i, rid in enumerate(ids[start : start + CHUNK]):
            for side, cmp, order in (("b", "<", "DESC"), ("a", ">", "ASC")):
                alias = f"{side}{i}"
                parts.append(
                    _PART.format(cmp=cmp, order=order, p=placeholder, alias=alias, same=same)
                )
                params += [rid, user_id, user_id, rid, user_id, rid, rid, now, window]
        statements.append((" UNION ALL ".join(parts), tuple(params)))
    return statements


def collect_neighbors(
    ids: Sequence[str], rows: Iterable[tuple[str, str]]
) -> dict[str, list[tuple[str, int]]]:
    """``(hit, neighbour)`` rows as :class:`~memlane.ports.store.GetNeighbors` answers:
    per hit, ``(id, distance)`` in id order, before (-k .. -1) then after (1 .. k)."""
    found: dict[str, list[str]] = defaultdict(list)
    for hit, nid in rows:
        found[hit].append(nid)
    out: dict[str, list[tuple[str, int]]] = {}
    for rid in ids:
        before = sorted(n for n in found[rid] if n < rid)
        after = sorted(n for n in found[rid] if n > rid)
        out[rid] = [(n, j - len(before)) for j, n in enumerate(before)] + [
            (n, j + 1) for j, n in enumerate(after)
        ]
    return out
