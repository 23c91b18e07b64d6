"""Statements both SQL stores run, written once over a :class:`Dialect`: each builder
returns the SQL text and its parameters for the backend to execute in its own way (a
cursor on SQLite, a yielded statement on PostgreSQL). Statements whose text really
differs between the databases (full-text search, upserts, claiming a job) stay in the
backend's ``*_sql`` / ``*_ops`` module."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from memlane.models import StateVersion
from memlane.ports import store as ops
from memlane.stores.sql.codecs import AUDIT
from memlane.stores.sql.dialect import Dialect
from memlane.stores.sql.filters import filter_sql

Statement = tuple[str, list[Any]]
"""SQL text and its parameters, in order."""

RECORDED_MODEL = "SELECT value FROM memlane_meta WHERE key = 'embedding_model'"
"""The embedding model and dimension recorded for the store (JSON), if any."""

MODEL_RANGE = "SELECT (SELECT min(model) FROM embeddings), (SELECT max(model) FROM embeddings)"
"""The least and greatest model with stored vectors: equal when there is one model."""

LIST_USERS = (
    "SELECT user_id FROM records UNION SELECT user_id FROM sessions "
    "UNION SELECT user_id FROM history UNION SELECT user_id FROM jobs ORDER BY 1"
)

USER_TABLES = (
    "history", "records", "sessions", "messages", "states", "jobs",
    "relation_sources", "relations", "mentions", "entity_keys", "entities",
)  # fmt: skip
"""The tables holding a user's rows, in the order forgetting a user deletes them
(history before records: on SQLite deleting a record writes its text into the events
that keep none, which would be deleted right after)."""


def _any_of(d: Dialect, column: str, values: Sequence[Any]) -> Statement:
    clauses, params = d.any_of(column, list(values))
    return " AND ".join(clauses), params


def _select(d: Dialect, what: str, table: str, key: dict[str, Any], tail: str = "") -> Statement:
    """``SELECT what FROM table`` of the rows whose ``key`` columns have its values."""
    where = " AND ".join(f"{column} = {d.mark}" for column in key)
    return f"SELECT {what} FROM {table} WHERE {where}{tail}", list(key.values())


# ---------------------------------------------------------------------------- records


def stored_version(d: Dialect, table: str, user_id: str, item_id: str) -> Statement:
    """The version of one record or job (``table``), locked for the write that follows
    where the database locks rows."""
    return _select(d, "version", table, {"user_id": user_id, "id": item_id}, d.lock)


def get_records(d: Dialect, user_id: str, ids: Sequence[str]) -> Statement:
    """The records of a user with one of ``ids``, in no order."""
    where, params = _any_of(d, "r.id", ids)
    sql = f"SELECT {d.record_select} FROM records r WHERE r.user_id = {d.mark} AND {where}"
    return sql, [user_id, *params]


def list_records(d: Dialect, op: ops.ListRecords) -> Statement:
    """One page of records matching the filters, by id, after the cursor."""
    where, params = filter_sql(d, op.user_id, op.filters, op.now)
    if op.after_id is not None:
        where += f" AND r.id < {d.mark}" if op.descending else f" AND r.id > {d.mark}"
        params.append(op.after_id)
    order = "DESC" if op.descending else "ASC"
    sql = f"SELECT {d.record_select} FROM records r WHERE {where} ORDER BY r.id {order} LIMIT "
    return sql + d.mark, [*params, op.limit]


def find_expired(d: Dialect, op: ops.FindExpired) -> Statement:
    """Records of any user expired at ``op.now``, by id."""
    return (
        f"SELECT {d.record_select} FROM records r "
        f"WHERE r.expires_at IS NOT NULL AND r.expires_at <= {d.mark} ORDER BY r.id "
        f"LIMIT {d.mark}",
        [d.time(op.now), op.limit],
    )


def remove_records(d: Dialect, user_id: str, ids: Sequence[str]) -> tuple[Statement, ...]:
    """Removing records, in order: erase their content from their history, read the
    removed turns (session, agent, id, created: the turns after them are re-indexed, and
    lose the context vectors that may hold their words), delete."""
    of_records, params = _any_of(d, "record_id", ids)
    by_id, _ = _any_of(d, "id", ids)
    key, m = [user_id, *params], d.mark
    return (
        (
            "UPDATE history SET snapshot = NULL WHERE snapshot IS NOT NULL "
            f"AND user_id = {m} AND {of_records}",
            key,
        ),
        (
            f"SELECT session_id, agent_id, id, created_at FROM records WHERE user_id = {m} "
            f"AND {by_id} "
            "AND kind = 'episode' AND session_id IS NOT NULL ORDER BY id",
            key,
        ),
        (f"DELETE FROM records WHERE user_id = {m} AND {by_id}", key),
    )


# ---------------------------------------------------------------------------- history


def get_history(d: Dialect, op: ops.GetHistory) -> Statement:
    """A record's history events, oldest first."""
    key = {"user_id": op.user_id, "record_id": op.record_id}
    return _select(d, d.history_select, "history", key, " ORDER BY id")


def user_history(d: Dialect, op: ops.ListUserHistory) -> Statement:
    """One page of a user's history events, by id, after the cursor."""
    m = d.mark
    sql = (
        f"SELECT {d.history_select} FROM history WHERE user_id = {m} AND id > {m} "
        f"ORDER BY id LIMIT {m}"
    )
    return sql, [op.user_id, op.after_id or "", op.limit]


# ---------------------------------------------------------------------------- embeddings


def get_embeddings(d: Dialect, model: str, hashes: Sequence[str]) -> Statement:
    """(content hash, vector) of the stored vectors of ``model`` among ``hashes``."""
    where, params = _any_of(d, "content_hash", hashes)
    sql = f"SELECT content_hash, vector FROM embeddings WHERE model = {d.mark} AND {where}"
    return sql, [model, *params]


def model_dim(d: Dialect, model: str) -> Statement:
    """The dimension of one stored vector of ``model``."""
    return _select(d, "dim", "embeddings", {"model": model}, " LIMIT 1")


def drop_embeddings(d: Dialect, op: ops.DropEmbeddings) -> Statement:
    """Delete the vectors of every model but ``op.keep``."""
    return f"DELETE FROM embeddings WHERE model <> {d.mark}", [op.keep]


# ---------------------------------------------------------------------------- sessions


def get_session(d: Dialect, op: ops.GetSession) -> Statement:
    return _select(d, "*", "sessions", {"user_id": op.user_id, "session_id": op.session_id})


def list_sessions(d: Dialect, op: ops.ListSessions) -> Statement:
    """One page of a user's sessions, by id, after the cursor."""
    m = d.mark
    where, params = f"user_id = {m}", [op.user_id]
    if op.after_id is not None:
        where += f" AND session_id > {m}"
        params.append(op.after_id)
    if op.updated_before is not None:
        where += f" AND updated_at < {m}"
        params.append(d.time(op.updated_before))
    sql = f"SELECT * FROM sessions WHERE {where} ORDER BY session_id LIMIT {m}"
    return sql, [*params, op.limit]


def get_messages(d: Dialect, op: ops.GetMessages) -> Statement:
    """The session's messages in order, or those of its last ``op.last_runs`` runs."""
    mark = d.mark
    sql = f"SELECT * FROM messages WHERE user_id = {mark} AND session_id = {mark}"
    params: list[Any] = [op.user_id, op.session_id]
    if op.last_runs is not None:
        sql += (
            f" AND run_id IN (SELECT run_id FROM messages WHERE user_id = {mark} "
            f"AND session_id = {mark} GROUP BY run_id ORDER BY MAX(seq) DESC LIMIT {mark})"
        )
        params += [op.user_id, op.session_id, op.last_runs]
    return sql + " ORDER BY seq", params


def last_seq(d: Dialect, user_id: str, session_id: str) -> Statement:
    """The highest message number of one session (0 for none)."""
    key = {"user_id": user_id, "session_id": session_id}
    return _select(d, "COALESCE(MAX(seq), 0)", "messages", key)


# ---------------------------------------------------------------------------- state


def _state_of(d: Dialect, what: str, user_id: str, session_id: str, name: str) -> Statement:
    key = {"user_id": user_id, "session_id": session_id, "name": name}
    return _select(d, what, "states", key)


def get_state(d: Dialect, op: ops.GetState) -> Statement:
    """The newest version of a state, or the version ``op.version``."""
    sql, params = _state_of(d, "*", op.user_id, op.session_id, op.name)
    if op.version is not None:
        sql += f" AND version = {d.mark}"
        params.append(op.version)
    return sql + " ORDER BY version DESC LIMIT 1", params


def state_versions(d: Dialect, op: ops.ListStateVersions) -> Statement:
    """Every version of a state, oldest first."""
    sql, params = _state_of(d, "*", op.user_id, op.session_id, op.name)
    return sql + " ORDER BY version", params


def newest_state_version(d: Dialect, s: StateVersion) -> Statement:
    """The newest stored version number of the state ``s`` is a version of (0: none)."""
    return _state_of(d, "COALESCE(MAX(version), 0)", s.user_id, s.session_id, s.name)


# ---------------------------------------------------------------------------- jobs


def get_job(d: Dialect, op: ops.GetJob) -> Statement:
    return _select(d, "body", "jobs", {"id": op.job_id, "user_id": op.user_id})


def list_jobs(d: Dialect, op: ops.ListJobs) -> Statement:
    """One page of jobs (of one user, in some statuses), by id, after the cursor."""
    clauses, params = ["1 = 1"], list[Any]()
    if op.user_id is not None:
        clauses.append(f"user_id = {d.mark}")
        params.append(op.user_id)
    if op.statuses:
        where, values = _any_of(d, "status", [s.value for s in op.statuses])
        clauses.append(where)
        params.extend(values)
    if op.after_id is not None:
        clauses.append(f"id > {d.mark}")
        params.append(op.after_id)
    sql = f"SELECT body FROM jobs WHERE {' AND '.join(clauses)} ORDER BY id, user_id LIMIT "
    return sql + d.mark, [*params, op.limit]


# ---------------------------------------------------------------------------- users


def delete_user(d: Dialect, user_id: str) -> list[tuple[str, Statement]]:
    """Per table holding a user's rows, the statement deleting them."""
    return [(t, (f"DELETE FROM {t} WHERE user_id = {d.mark}", [user_id])) for t in USER_TABLES]


# ---------------------------------------------------------------------------- audit

APPEND_ONLY = "the audit trail is append-only: only forgetting its user removes an entry"
"""What the database answers a statement that would change or remove an audit entry
(the tables' triggers, migrations SQLite 12 and PostgreSQL 8)."""


def list_audit(d: Dialect, op: ops.ListAudit) -> Statement:
    """One page of a user's audit entries, by id, after the cursor, since a time."""
    m = d.mark
    where, params = f"user_id = {m} AND id > {m}", [op.user_id, op.after_id or ""]
    if op.since is not None:
        where += f" AND at >= {m}"
        params.append(d.time(op.since))
    sql = f"SELECT {', '.join(AUDIT.columns)} FROM audit WHERE {where} ORDER BY id LIMIT {m}"
    return sql, [*params, op.limit]


def erase_audit(d: Dialect, user_ids: Sequence[str]) -> tuple[Statement, ...]:
    """Removing the audit entries of ``user_ids`` (a user forgotten, and the tombstone of
    an earlier forgetting), in order: permit it (the append-only trigger lets only the
    rows of users named in ``audit_erasures`` go), delete, take the permit back. The
    delete's row count is the second statement's."""
    where, params = _any_of(d, "user_id", user_ids)
    marks = ", ".join(f"({d.mark})" for _ in user_ids)
    return (
        (f"INSERT INTO audit_erasures (user_id) VALUES {marks}", list(user_ids)),
        (f"DELETE FROM audit WHERE {where}", params),
        (f"DELETE FROM audit_erasures WHERE {where}", params),
    )
