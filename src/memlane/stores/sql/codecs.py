"""Values both SQL stores write the same way."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from memlane.models import (
    HistoryAction,
    HistoryEvent,
    Job,
    MemoryKind,
    MemoryRecord,
    Message,
    Session,
    StateVersion,
)
from memlane.ports import store as ops

APPLICATION = "memlane"
"""Recorded in a database memlane created; a database without it is never adopted."""

WRITE_OPS = (
    ops.WriteRecord,
    ops.AppendHistory,
    ops.TouchRecords,
    ops.RemoveRecords,
    ops.PutEmbeddings,
    ops.PruneEmbeddings,
    ops.SetEmbeddingModel,
    ops.DropEmbeddings,
    ops.UpsertSession,
    ops.AppendMessages,
    ops.DeleteSessions,
    ops.PutState,
    ops.DeleteUser,
    ops.PutJob,
    ops.ClaimJob,
)
"""The ops that write: a batch with none of them runs as a read-only transaction."""


def to_json(value: Any) -> str:
    """memlane's canonical JSON text: sorted keys, UTF-8 as is, no spaces."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class RowCodec:
    """Rows of the session, message, state, history and job tables, which both SQL stores
    lay out alike; only how a time is stored differs (``write_time``/``read_time``)."""

    write_time: Callable[[datetime], Any]
    read_time: Callable[[Any], datetime]
    read_json: Callable[[Any], Any] = json.loads
    """A JSON column's value as stored (text, or already decoded by the driver)."""

    def _time(self, value: Any) -> datetime | None:
        return None if value is None else self.read_time(value)

    def row_record(self, columns: Sequence[str], row: Sequence[Any]) -> MemoryRecord:
        """A record from a row of ``columns``; a ``metadata_text`` column, when present and
        set, is the metadata's exact JSON text."""
        d = dict(zip(columns, row, strict=True))
        exact = d.get("metadata_text")
        return MemoryRecord(
            id=d["id"],
            user_id=d["user_id"],
            agent_id=d["agent_id"],
            team=d["team"],
            session_id=d["session_id"],
            kind=MemoryKind(d["kind"]),
            key=d["key"],
            text=d["text"],
            topics=tuple(self.read_json(d["topics"])),
            metadata=self.read_json(d["metadata"]) if exact is None else json.loads(exact),
            importance=d["importance"],
            created_at=self.read_time(d["created_at"]),
            updated_at=self.read_time(d["updated_at"]),
            event_at=self._time(d["event_at"]),
            valid_from=self._time(d["valid_from"]),
            valid_to=self._time(d["valid_to"]),
            superseded_by=d["superseded_by"],
            expires_at=self._time(d["expires_at"]),
            deleted_at=self._time(d["deleted_at"]),
            access_count=d["access_count"],
            last_accessed_at=self._time(d["last_accessed_at"]),
            source_ids=tuple(self.read_json(d["source_ids"])),
            actor=d["actor"],
            content_hash=d["content_hash"],
            version=d["version"],
            context_hash=d["context_hash"],
        )

    def event_values(self, e: HistoryEvent) -> tuple[Any, ...]:
        snapshot = None if e.snapshot is None else to_json(dict(e.snapshot))
        at = self.write_time(e.at)
        return (e.id, e.record_id, e.user_id, e.action.value, e.version, at, e.actor, e.reason,
                snapshot)  # fmt: skip

    def row_event(self, row: Sequence[Any]) -> HistoryEvent:
        eid, rid, uid, action, version, at, actor, reason, snapshot = row
        return HistoryEvent(
            id=eid,
            record_id=rid,
            user_id=uid,
            action=HistoryAction(action),
            version=version,
            at=self.read_time(at),
            actor=actor,
            reason=reason,
            snapshot=None if snapshot is None else json.loads(snapshot),
        )

    def message_values(self, m: Message) -> tuple[Any, ...]:
        return (m.user_id, m.session_id, m.seq, m.id, m.run_id, m.role, m.content,
                self.write_time(m.created_at), to_json(dict(m.metadata)))  # fmt: skip

    def row_message(self, row: Sequence[Any]) -> Message:
        uid, sid, seq, mid, run_id, role, content, created_at, metadata = row
        return Message(
            id=mid,
            user_id=uid,
            session_id=sid,
            run_id=run_id,
            seq=seq,
            role=role,
            content=content,
            created_at=self.read_time(created_at),
            metadata=json.loads(metadata),
        )

    def session_values(self, s: Session) -> tuple[Any, ...]:
        return (s.user_id, s.session_id, s.agent_id, s.team, self.write_time(s.created_at),
                self.write_time(s.updated_at), to_json(dict(s.metadata)))  # fmt: skip

    def row_session(self, row: Sequence[Any]) -> Session:
        uid, sid, agent_id, team, created_at, updated_at, metadata = row
        return Session(
            session_id=sid,
            user_id=uid,
            agent_id=agent_id,
            team=team,
            created_at=self.read_time(created_at),
            updated_at=self.read_time(updated_at),
            metadata=json.loads(metadata),
        )

    def state_values(self, s: StateVersion) -> tuple[Any, ...]:
        data = to_json(dict(s.data))
        return (s.user_id, s.session_id, s.name, s.version, data, self.write_time(s.updated_at))

    def row_state(self, row: Sequence[Any]) -> StateVersion:
        uid, sid, name, version, data, updated_at = row
        return StateVersion(
            user_id=uid,
            session_id=sid,
            name=name,
            version=version,
            data=json.loads(data),
            updated_at=self.read_time(updated_at),
        )

    def job_values(self, job: Job) -> tuple[Any, ...]:
        lease = None if job.lease_until is None else self.write_time(job.lease_until)
        return (job.id, job.user_id, job.status.value, self.write_time(job.run_after), lease,
                job.version, to_json(job.to_dict()))  # fmt: skip

    @staticmethod
    def row_job(row: Sequence[Any]) -> Job:
        return Job.from_dict(json.loads(row[-1]))
