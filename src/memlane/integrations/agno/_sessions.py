"""Agno sessions and runs as memlane sessions.

An Agno session of user U is the memlane session of the same id of user U: its row
(``session_data`` with Agno's session state, metadata, agent/team data, summary) is
the session's state ``agno:session``; each run is the session's workflow
``agno-run:<run_id>`` (step: the run's status), complete with its messages, tool calls
and metrics, so a session reads back as Agno wrote it. Both are versioned by memlane.

On top of that, memlane's own tiers are fed so its search, history and context see the
conversation: a completed run's user and assistant messages are appended to the
session's history (one memlane run per Agno run, same run id; each message is also a
searchable episode), and Agno's session summary is the session's memlane summary
(a new Agno summary supersedes the previous one).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping
from typing import Any, Union

from agno.db.base import SessionType
from agno.db.utils import deserialize_run, deserialize_session, filter_context_runs, get_run_type
from agno.run.agent import RunOutput
from agno.run.base import RunStatus
from agno.run.team import TeamRunOutput
from agno.run.workflow import WorkflowRunOutput
from agno.session import AgentSession, TeamSession, WorkflowSession

from memlane.api import Memory
from memlane.errors import ConflictError, ValidationError
from memlane.integrations.agno._memories import ACTOR, page_bounds, sort_rows
from memlane.integrations.agno._scope import ATTEMPTS, Documents, _kept_changing, unsupported
from memlane.models import MemoryKind

log = logging.getLogger(__name__)

AgnoSession = Union[AgentSession, TeamSession, WorkflowSession]  # noqa: UP007
AgnoRun = Union[RunOutput, TeamRunOutput, WorkflowRunOutput]  # noqa: UP007

SESSION_DOC = "agno:session"
RUN_PREFIX = "agno-run:"
RECORDED_ROLES = ("user", "assistant")


def session_type_of(session: AgnoSession) -> str:
    if isinstance(session, TeamSession):
        return SessionType.TEAM.value
    if isinstance(session, WorkflowSession):
        return SessionType.WORKFLOW.value
    return SessionType.AGENT.value


def _wanted_type(session_type: SessionType | str | None) -> str | None:
    if session_type is None:
        return None
    return session_type.value if isinstance(session_type, SessionType) else str(session_type)


def _conversation(run: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The run's own user and assistant messages with text (not those replayed from
    history, not system prompts or tool results), for memlane's session history."""
    out = []
    for m in run.get("messages") or []:
        content = m.get("content") if isinstance(m, Mapping) else None
        fresh = m.get("role") in RECORDED_ROLES and not m.get("from_history")
        if fresh and isinstance(content, str) and content.strip():
            out.append({"role": m["role"], "content": content})
    return out


class SessionsMixin:
    """Agno's session and run methods over :class:`memlane.Memory`."""

    memory: Memory
    docs: Documents

    def _user(self, user_id: str | None, what: str) -> str:
        raise NotImplementedError  # provided by MemoriesMixin

    # ------------------------------------------------------------------ sessions

    def get_session(
        self,
        session_id: str,
        session_type: SessionType | None = None,
        user_id: str | None = None,
        deserialize: bool | None = True,
        runs_limit: int | None = None,
    ) -> AgnoSession | dict[str, Any] | None:
        """The user's session with its runs (the last ``runs_limit`` context runs when
        given), or None. Raises MissingUserError."""
        user = self._user(user_id, "get_session")
        row = self._row(user, session_id, session_type)
        if row is None:
            return None
        row["runs"] = self._run_dicts(user, session_id, runs_limit)
        return row if not deserialize else deserialize_session(session_type, row)

    def _row(
        self, user: str, session_id: str, session_type: SessionType | str | None
    ) -> dict[str, Any] | None:
        row = self.docs.read(user, session_id, SESSION_DOC)
        wanted = _wanted_type(session_type)
        if not isinstance(row, dict) or (wanted and row.get("session_type") != wanted):
            return None
        return row

    def get_sessions(
        self,
        session_type: SessionType | None = None,
        user_id: str | None = None,
        component_id: str | None = None,
        session_name: str | None = None,
        start_timestamp: int | None = None,
        end_timestamp: int | None = None,
        limit: int | None = None,
        page: int | None = None,
        sort_by: str | None = None,
        sort_order: str | None = None,
        deserialize: bool | None = True,
        include_runs: bool = True,
    ) -> list[AgnoSession] | tuple[list[dict[str, Any]], int]:
        """The user's Agno sessions, filtered as Agno's adapters do (type, agent/team/
        workflow id, name contains, created between), sorted and paged (1-based).
        Sessions made in memlane without Agno are not listed. Raises MissingUserError."""
        user = self._user(user_id, "get_sessions")
        start, end = page_bounds(limit, page)
        rows = [
            row
            for sid in self._session_ids(user)
            if (row := self._row(user, sid, session_type)) is not None
            and _matches(row, component_id, session_name, start_timestamp, end_timestamp)
        ]
        sort_rows(rows, sort_by, sort_order)
        total = len(rows)
        rows = rows[start:end]
        for row in rows:
            row["runs"] = self._run_dicts(user, row["session_id"], None) if include_runs else None
        if not deserialize:
            return rows, total
        return [deserialize_session(session_type, row) for row in rows]

    def _session_ids(self, user: str) -> list[str]:
        ids: list[str] = []
        cursor = None
        while True:
            page = self.memory.list_sessions(user_id=user, cursor=cursor, limit=1000)
            ids += [s.session_id for s in page.items]
            if page.next_cursor is None:
                return ids
            cursor = page.next_cursor

    def rename_session(
        self,
        session_id: str,
        session_type: SessionType | None,
        session_name: str,
        user_id: str | None = None,
        deserialize: bool | None = True,
    ) -> AgnoSession | dict[str, Any] | None:
        """Set the session's name (``session_data['session_name']``); None if there is
        no such session of that type. Raises MissingUserError."""
        user = self._user(user_id, "rename_session")
        row = self._row(user, session_id, session_type)
        if row is None:
            return None
        row["session_data"] = {**(row.get("session_data") or {}), "session_name": session_name}
        row["updated_at"] = int(time.time())
        self.docs.write(user, session_id, SESSION_DOC, row, agent_id=row.get("agent_id"))
        row["runs"] = self._run_dicts(user, session_id, None)
        return row if not deserialize else deserialize_session(session_type, row)

    def upsert_session(
        self, session: AgnoSession, deserialize: bool | None = True
    ) -> AgnoSession | dict[str, Any] | None:
        """Write the session row (runs are written by :meth:`upsert_run`; a new
        session's runs are written with it). Keeps its ``created_at``; mirrors its
        summary into memlane. Returns the stored session with the caller's runs.
        Raises MissingUserError."""
        user = self._user(session.user_id, "upsert_session")
        row = session.to_dict(include_runs=False)
        row.pop("runs", None)
        row["session_type"] = session_type_of(session)
        before = self.docs.read(user, session.session_id, SESSION_DOC)
        now = int(time.time())
        created = before.get("created_at") if isinstance(before, dict) else None
        row["created_at"] = created or row.get("created_at") or now
        row["updated_at"] = now
        self.docs.write(user, session.session_id, SESSION_DOC, row, agent_id=row.get("agent_id"))
        if before is None:
            for i, run in enumerate(session.runs or []):
                self.upsert_run(run, session.session_id, session.user_id, run_index=i)
        self._mirror_summary(user, row)
        if not deserialize:
            row["runs"] = [r.to_dict() for r in session.runs or []]
            return row
        stored = deserialize_session(None, copy.deepcopy(row))
        stored.runs = session.runs
        return stored

    def upsert_sessions(
        self,
        sessions: list[AgnoSession],
        deserialize: bool | None = True,
        preserve_updated_at: bool = False,
    ) -> list[AgnoSession | dict[str, Any]]:
        """:meth:`upsert_session` for each session. ``preserve_updated_at`` has no
        effect: memlane records when it wrote."""
        out: list[AgnoSession | dict[str, Any]] = []
        for session in sessions:
            stored = self.upsert_session(session, deserialize=deserialize)
            if stored is not None:
                out.append(stored)
        return out

    def delete_session(self, session_id: str, user_id: str | None = None) -> bool:
        """Delete the session and everything memlane keeps of it (runs, state, history,
        episodes, summary; see ``Memory.delete_session``). True if it existed.
        Raises MissingUserError."""
        user = self._user(user_id, "delete_session")
        return bool(self.memory.delete_session(session_id, user_id=user))

    def delete_sessions(self, session_ids: list[str], user_id: str | None = None) -> None:
        """:meth:`delete_session` for each id."""
        user = self._user(user_id, "delete_sessions")
        for session_id in session_ids:
            self.memory.delete_session(session_id, user_id=user)

    def _mirror_summary(self, user: str, row: Mapping[str, Any]) -> None:
        summary = row.get("summary") or {}
        text = summary.get("summary") if isinstance(summary, Mapping) else None
        if not isinstance(text, str) or not text.strip():
            return
        sid = str(row["session_id"])
        previous = self.memory.get_summary(sid, user_id=user)
        meta = {"method": "agno"}
        if previous is None:
            self.memory.add(
                text, user_id=user, kind=MemoryKind.SUMMARY, session_id=sid, metadata=meta,
                topics=tuple(summary.get("topics") or ()), agent_id=row.get("agent_id"),
                team=row.get("team_id"), actor=ACTOR,
            )  # fmt: skip
        elif previous.text != text:
            self.memory.supersede(
                previous.id, text, user_id=user, metadata=meta, actor=ACTOR,
                reason="Agno summarized the session again",
            )  # fmt: skip

    # ------------------------------------------------------------------ runs

    def _run_heads(self, user: str, session_id: str) -> list[tuple[str, Mapping[str, Any]]]:
        flows = self.memory.list_workflows(session_id, user_id=user)
        return [
            (f.workflow_id, f.data)
            for f in flows
            if f.workflow_id.startswith(RUN_PREFIX) and "json" in f.data
        ]

    def _run_dicts(self, user: str, session_id: str, limit: int | None) -> list[dict[str, Any]]:
        runs = [
            self.docs.decode(user, session_id, name, head)
            for name, head in self._run_heads(user, session_id)
        ]
        runs.sort(key=lambda r: (r.get("run_index") or 0, r.get("created_at") or 0))
        if limit is not None:
            runs = filter_context_runs(runs)[-limit:] if limit > 0 else []
        return runs

    def upsert_run(
        self,
        run: AgnoRun | dict[str, Any],
        session_id: str,
        user_id: str | None = None,
        run_index: int | None = None,
    ) -> None:
        """Write a run of the session (a new version of its workflow; its first
        ``run_index`` is kept). When the run has completed, its user and assistant
        messages are appended once to memlane's session history. Raises
        MissingUserError, ValidationError (no run id)."""
        user = self._user(user_id, "upsert_run")
        data = copy.deepcopy(run) if isinstance(run, dict) else run.to_dict()
        run_id = data.get("run_id")
        if not isinstance(run_id, str) or not run_id:
            raise ValidationError("an Agno run needs a run_id")
        name = RUN_PREFIX + run_id
        before = self.memory.load_workflow(name, user_id=user, session_id=session_id)
        old = self.docs.decode(user, session_id, name, before.data) if before else {}
        if "run_index" in old:
            data["run_index"] = old["run_index"]
        elif run_index is not None and "run_index" not in data:
            data["run_index"] = run_index
        recorded = bool(before and before.data.get("recorded"))
        if not recorded and data.get("status") == RunStatus.completed.value:
            recorded = self._record_conversation(user, session_id, data)
        agent_id = data.get("agent_id") if get_run_type(data) == "agent" else None
        head = self.docs.encode(user, session_id, name, data, agent_id=agent_id)
        self._save_run(user, session_id, name, head | {"recorded": recorded}, data)

    def _save_run(
        self, user: str, session_id: str, name: str, head: dict[str, Any], data: Mapping[str, Any]
    ) -> None:
        status = str(data.get("status") or RunStatus.running.value)
        done = status not in (RunStatus.pending.value, RunStatus.running.value)
        for _ in range(ATTEMPTS):
            current = self.memory.load_workflow(name, user_id=user, session_id=session_id)
            try:
                self.memory.save_workflow(
                    name, user_id=user, session_id=session_id, step=status, data=head,
                    status="done" if done else "running",
                    expected_version=current.version if current else 0,
                )  # fmt: skip
                return
            except ConflictError:
                continue
        raise _kept_changing(name)

    def _record_conversation(self, user: str, session_id: str, run: Mapping[str, Any]) -> bool:
        messages = _conversation(run)
        if not messages:
            return False
        try:
            self.memory.add_messages(
                session_id, messages, user_id=user, run_id=str(run["run_id"]),
                agent_id=run.get("agent_id"), team=run.get("team_id"),
            )  # fmt: skip
        except ValidationError as exc:
            # The run itself is kept whole; only memlane's searchable copy is missing.
            log.warning("run %s: messages not added to memlane history: %s", run["run_id"], exc)
            return False
        return True

    def get_runs(
        self,
        session_id: str | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        team_id: str | None = None,
        workflow_id: str | None = None,
        status: RunStatus | None = None,
        limit: int | None = None,
        page: int | None = None,
        sort_by: str | None = None,
        sort_order: str | None = None,
        deserialize: bool | None = True,
    ) -> list[AgnoRun] | tuple[list[dict[str, Any]], int]:
        """The user's runs (of one session, or of all), filtered and paged as Agno's
        adapters do. Raises MissingUserError."""
        user = self._user(user_id, "get_runs")
        start, end = page_bounds(limit, page)
        sessions = [session_id] if session_id is not None else self._session_ids(user)
        wanted = status.value if isinstance(status, RunStatus) else status
        rows = [
            r
            for sid in sessions
            for r in self._run_dicts(user, sid, None)
            if (agent_id is None or r.get("agent_id") == agent_id)
            and (team_id is None or r.get("team_id") == team_id)
            and (workflow_id is None or r.get("workflow_id") == workflow_id)
            and (wanted is None or r.get("status") == wanted)
        ]
        sort_rows(rows, sort_by, sort_order)
        total = len(rows)
        rows = rows[start:end]
        if not deserialize:
            return rows, total
        return [deserialize_run(get_run_type(r), r) for r in rows]

    def cancel_pending_run(
        self,
        run_id: str,
        *,
        session_id: str,
        reason: str,
        user_id: str | None = None,
        expected_status: str = "PENDING",
    ) -> bool:
        """Mark the run cancelled if it is still ``expected_status``, by compare-and-swap
        on its version; True if this call changed it. Raises MissingUserError."""
        user = self._user(user_id, "cancel_pending_run")
        name = RUN_PREFIX + run_id
        current = self.memory.load_workflow(name, user_id=user, session_id=session_id)
        if current is None:
            return False
        data = self.docs.decode(user, session_id, name, current.data)
        if data.get("status") != expected_status:
            return False
        data["status"] = RunStatus.cancelled.value
        data["content"] = data.get("content") or reason
        head = self.docs.encode(user, session_id, name, data, agent_id=None)
        try:
            self.memory.save_workflow(
                name, user_id=user, session_id=session_id, step=RunStatus.cancelled.value,
                data=head | {"recorded": bool(current.data.get("recorded"))}, status="done",
                expected_version=current.version,
            )  # fmt: skip
        except ConflictError:
            return False
        return True

    def get_run(
        self, run_id: str, deserialize: bool | None = True
    ) -> AgnoRun | dict[str, Any] | None:
        """Not kept: a run belongs to a user's session in memlane, and this call names
        neither. Raises UnsupportedByMemlaneError; use ``get_session(...)`` or
        :meth:`get_runs` with the user."""
        raise unsupported("run lookup by id alone", "use get_runs(session_id=..., user_id=...)")

    def delete_run(self, run_id: str) -> bool:
        """Not kept: memlane never rewrites a session's history, and this call names no
        user. Raises UnsupportedByMemlaneError; delete the session instead."""
        raise unsupported("run deletion", "runs go with their session (delete_session)")

    def delete_runs(self, run_ids: list[str]) -> None:
        """As :meth:`delete_run`."""
        raise unsupported("run deletion", "runs go with their session (delete_session)")

    def reassign_session_owner(
        self, session_id: str, *, previous_user_id: str, user_id: str | None
    ) -> bool:
        """Not kept: a memlane session belongs to one user for good."""
        raise unsupported("session owner transfer", "a memlane session keeps its user")


def _matches(
    row: Mapping[str, Any],
    component_id: str | None,
    session_name: str | None,
    start: int | None,
    end: int | None,
) -> bool:
    if component_id is not None and component_id not in (
        row.get("agent_id"),
        row.get("team_id"),
        row.get("workflow_id"),
    ):
        return False
    created = row.get("created_at") or 0
    if (start is not None and created < start) or (end is not None and created > end):
        return False
    if session_name is not None:
        name = str((row.get("session_data") or {}).get("session_name") or "")
        if session_name.lower() not in name.lower():
            return False
    return True
