"""The read-only ops both SQL stores answer with one shared statement, as a table from op
type to :class:`Query`: how to build the statement (:mod:`.statements`) and how its rows
become the op's result. Each store runs every op of the table with one handler."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from memlane.ports import store as ops
from memlane.ports.store import Op
from memlane.stores.sql import statements as st
from memlane.stores.sql.codecs import AUDIT, EVENTS, MESSAGES, SESSIONS, STATES, Layout, RowCodec
from memlane.stores.sql.dialect import Dialect

Rows = Sequence[Sequence[Any]]
Result = Callable[[RowCodec, Rows], Any]


@dataclass(frozen=True, slots=True)
class Query:
    """One read-only op as a statement and a reading of its rows."""

    statement: Callable[[Dialect, Any], st.Statement]
    result: Result


def _every(table: Layout[Any]) -> Result:
    return lambda codec, rows: [codec.read(table, row) for row in rows]


def _first(table: Layout[Any]) -> Result:
    return lambda codec, rows: codec.read(table, rows[0]) if rows else None


def _records(codec: RowCodec, rows: Rows) -> list[Any]:
    return [codec.record(row) for row in rows]


def _jobs(codec: RowCodec, rows: Rows) -> list[Any]:
    return [codec.row_job(row) for row in rows]


def _job(codec: RowCodec, rows: Rows) -> Any:
    return codec.row_job(rows[0]) if rows else None


def _users(codec: RowCodec, rows: Rows) -> list[str]:
    return [row[0] for row in rows]


def _list_users(d: Dialect, op: ops.ListUsers) -> st.Statement:
    return st.LIST_USERS, []


QUERIES: dict[type[Op[Any]], Query] = {
    ops.ListRecords: Query(st.list_records, _records),
    ops.FindExpired: Query(st.find_expired, _records),
    ops.GetHistory: Query(st.get_history, _every(EVENTS)),
    ops.ListUserHistory: Query(st.user_history, _every(EVENTS)),
    ops.GetSession: Query(st.get_session, _first(SESSIONS)),
    ops.ListSessions: Query(st.list_sessions, _every(SESSIONS)),
    ops.GetMessages: Query(st.get_messages, _every(MESSAGES)),
    ops.GetState: Query(st.get_state, _first(STATES)),
    ops.ListStateVersions: Query(st.state_versions, _every(STATES)),
    ops.GetJob: Query(st.get_job, _job),
    ops.ListJobs: Query(st.list_jobs, _jobs),
    ops.ListUsers: Query(_list_users, _users),
    ops.ListAudit: Query(st.list_audit, _every(AUDIT)),
}
