"""Values both SQL stores write the same way."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Generic, TypeVar

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

T = TypeVar("T")

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


class Stored(Enum):
    """How a column holds its field, where the two stores differ or a value needs
    converting (a column not named in a :class:`Layout` holds its field as it is)."""

    TIME = "time"
    """A datetime: ISO text on SQLite, ``timestamptz`` on PostgreSQL."""
    DOC = "doc"
    """A mapping as memlane's canonical JSON text on both stores."""
    MAP = "map"
    """A mapping as JSON that PostgreSQL keeps as ``jsonb`` (the driver decodes it)."""
    LIST = "list"
    """A tuple of strings as a JSON array, ``jsonb`` on PostgreSQL."""


Column = Stored | type[Enum]
"""How one column is stored; an enum class: the member's value."""


@dataclass(frozen=True, slots=True)
class Layout(Generic[T]):
    """The columns of one table, in order, each named after the model field it holds:
    what ``INSERT ... VALUES`` and ``SELECT *`` of that table rely on, written once."""

    model: Callable[..., T]
    columns: tuple[str, ...]
    stored: tuple[Column | None, ...]


def layout(model: Callable[..., T], columns: str, **stored: Column) -> Layout[T]:
    """A :class:`Layout` of the space-separated ``columns``, ``stored`` naming how the
    columns that need converting are held."""
    names = tuple(columns.split())
    return Layout(model, names, tuple(stored.get(c) for c in names))


RECORDS = layout(
    MemoryRecord,
    "id user_id agent_id team session_id kind key text topics metadata importance "
    "created_at updated_at event_at valid_from valid_to superseded_by expires_at deleted_at "
    "access_count last_accessed_at source_ids actor content_hash version context_hash",
    kind=MemoryKind, topics=Stored.LIST, metadata=Stored.MAP, source_ids=Stored.LIST,
    created_at=Stored.TIME, updated_at=Stored.TIME, event_at=Stored.TIME,
    valid_from=Stored.TIME, valid_to=Stored.TIME, expires_at=Stored.TIME,
    deleted_at=Stored.TIME, last_accessed_at=Stored.TIME,
)  # fmt: skip
EVENTS = layout(
    HistoryEvent,
    "id record_id user_id action version at actor reason snapshot",
    action=HistoryAction, at=Stored.TIME, snapshot=Stored.DOC,
)  # fmt: skip
MESSAGES = layout(
    Message,
    "user_id session_id seq id run_id role content created_at metadata",
    created_at=Stored.TIME, metadata=Stored.DOC,
)  # fmt: skip
SESSIONS = layout(
    Session,
    "user_id session_id agent_id team created_at updated_at metadata",
    created_at=Stored.TIME, updated_at=Stored.TIME, metadata=Stored.DOC,
)  # fmt: skip
STATES = layout(
    StateVersion,
    "user_id session_id name version data updated_at",
    data=Stored.DOC, updated_at=Stored.TIME,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class RowCodec:
    """Rows of the tables both SQL stores lay out alike (:class:`Layout`); only how a
    time is stored (``write_time``/``read_time``) and whether the driver decodes JSON
    columns (``read_json``) differ."""

    write_time: Callable[[datetime], Any]
    read_time: Callable[[Any], datetime]
    read_json: Callable[[Any], Any] = json.loads
    """A ``MAP`` or ``LIST`` column's value as stored (text, or already decoded by the
    driver)."""

    def values(self, table: Layout[Any], item: Any) -> tuple[Any, ...]:
        """The row that stores ``item``, in ``table``'s column order."""
        return tuple(
            self._encode(how, getattr(item, c))
            for c, how in zip(table.columns, table.stored, strict=True)
        )

    def fields(self, table: Layout[Any], row: Sequence[Any]) -> dict[str, Any]:
        """The model fields stored in ``row``, by name."""
        return {
            c: self._decode(how, v)
            for c, how, v in zip(table.columns, table.stored, row, strict=True)
        }

    def read(self, table: Layout[T], row: Sequence[Any]) -> T:
        """The model stored in ``row``."""
        return table.model(**self.fields(table, row))

    def _encode(self, how: Column | None, value: Any) -> Any:
        if how is None or value is None:
            return value
        if how is Stored.TIME:
            return self.write_time(value)
        if how is Stored.LIST:
            return to_json(list(value))
        if how is Stored.DOC or how is Stored.MAP:
            return to_json(dict(value))
        return value.value

    def _decode(self, how: Column | None, value: Any) -> Any:
        if how is None or value is None:
            return value
        if how is Stored.TIME:
            return self.read_time(value)
        if how is Stored.LIST:
            return tuple(self.read_json(value))
        if how is Stored.MAP:
            return self.read_json(value)
        if how is Stored.DOC:
            return json.loads(value)
        return how(value)

    def job_values(self, job: Job) -> tuple[Any, ...]:
        """A job's row: its id, owner and what claiming reads as columns, the whole job
        as JSON in ``body``."""
        lease = None if job.lease_until is None else self.write_time(job.lease_until)
        return (job.id, job.user_id, job.status.value, self.write_time(job.run_after), lease,
                job.version, to_json(job.to_dict()))  # fmt: skip

    @staticmethod
    def row_job(row: Sequence[Any]) -> Job:
        return Job.from_dict(json.loads(row[-1]))
