"""One compiler from :class:`~memlane.models.Filters` to a SQL WHERE clause, for every
SQL dialect; what differs between databases is in the :class:`Dialect`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from memlane.models import Filters
from memlane.stores.sql.dialect import Clauses, Dialect


def filter_sql(dialect: Dialect, user_id: str, f: Filters, now: datetime) -> tuple[str, list[Any]]:
    """WHERE clause (over alias ``r``) equivalent to :meth:`Filters.matches`."""
    m = dialect.mark
    clauses = [f"r.user_id = {m}", f"(r.expires_at IS NULL OR r.expires_at > {m})"]
    params: list[Any] = [user_id, dialect.time(now)]

    def add(more: Clauses) -> None:
        clauses.extend(more[0])
        params.extend(more[1])

    add(_visibility(f) if f.as_of is None else _valid_at(dialect, f, f.as_of))
    add(_quarantine(dialect, f))
    if f.kinds:
        add(dialect.any_of("r.kind", [k.value for k in f.kinds]))
    if f.topics:
        add(dialect.any_topic(list(f.topics)))
    add(_scope(m, f))
    if f.since is not None:
        add(([f"COALESCE(r.event_at, r.created_at) >= {m}"], [dialect.time(f.since)]))
    if f.until is not None:
        add(([f"COALESCE(r.event_at, r.created_at) <= {m}"], [dialect.time(f.until)]))
    for key, value in f.metadata.items():
        add(dialect.metadata_equals(key, value))
    return " AND ".join(clauses), params


def _visibility(f: Filters) -> Clauses:
    clauses = []
    if not f.include_deleted:
        clauses.append("r.deleted_at IS NULL")
    if not f.include_superseded:
        clauses.append(
            "(r.deleted_at IS NOT NULL OR (r.superseded_by IS NULL AND r.valid_to IS NULL))"
        )
    return clauses, []


def _valid_at(dialect: Dialect, f: Filters, as_of: datetime) -> Clauses:
    """What :func:`memlane.models.queries.valid_at` says, with the ends that
    ``include_deleted`` and ``include_superseded`` lift lifted, as ``_visibility`` does
    for the present."""
    m = dialect.mark
    t = dialect.time(as_of)
    clauses = [
        f"{dialect.valid_from} <= {m}",
        f"(r.expires_at IS NULL OR r.expires_at > {m})",
    ]
    params = [t, t]
    if not f.include_deleted:
        clauses.append(f"(r.deleted_at IS NULL OR r.deleted_at > {m})")
        params.append(t)
    if not f.include_superseded:
        # Deleted by then (matched only with include_deleted), or not closed by then.
        clauses.append(
            f"((r.deleted_at IS NOT NULL AND r.deleted_at <= {m}) OR r.valid_to > {m} "
            "OR (r.valid_to IS NULL AND r.superseded_by IS NULL))"
        )
        params += [t, t]
    return clauses, params


def _quarantine(dialect: Dialect, f: Filters) -> Clauses:
    if f.quarantined_only:
        return [f"NOT ({dialect.unquarantined})"], []
    if f.include_quarantined:
        return [], []
    return [dialect.unquarantined], []


def _scope(m: str, f: Filters) -> Clauses:
    clauses: list[str] = []
    params: list[Any] = []
    for name in ("agent_id", "team", "session_id", "key"):
        value = getattr(f, name)
        if value is not None:
            if name == "agent_id" and f.include_shared:  # the agent's and the shared ones
                clauses.append(f"(r.agent_id = {m} OR r.agent_id IS NULL)")
            else:
                clauses.append(f"r.{name} = {m}")
            params.append(value)
    if f.shared_only:
        clauses.append("r.agent_id IS NULL")
    return clauses, params
