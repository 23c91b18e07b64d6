"""Values both SQL stores write the same way."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Generic, NamedTuple, TypeVar

from memlane.models import (
    ROLE_TRUST,
    AuditEvent,
    HistoryAction,
    HistoryEvent,
    Job,
    MemoryKind,
    MemoryRecord,
    Message,
    Session,
    StateVersion,
    Trust,
    parse_period,
    period_words,
)
from memlane.ports import store as ops
from memlane.stores.sql import snapshots

T = TypeVar("T")

APPLICATION = "memlane"
"""Recorded in a database memlane created; a database without it is never adopted."""

WRITE_OPS = (
    ops.WriteRecord,
    ops.AppendHistory,
    ops.TouchRecords,
    ops.SetPeriods,
    ops.RebuildIndexes,
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
    ops.AppendAudit,
)
"""The ops that write: a batch with none of them runs as a read-only transaction."""


def _trust_of_old_rows() -> str:
    roles = {t: ", ".join(f"'{r}'" for r, v in ROLE_TRUST.items() if v is t) for t in Trust}
    return (
        "UPDATE records SET trust = CASE "
        "WHEN kind = 'episode' AND actor IS NOT NULL THEN CASE "
        f"WHEN lower(actor) IN ({roles[Trust.USER]}) THEN 'user' "
        f"WHEN lower(actor) IN ({roles[Trust.INFERRED]}) THEN 'inferred' ELSE 'tool' END "
        "WHEN actor IN ('memlane', 'mcp', 'agent') OR actor LIKE 'memlane-%' "
        "OR actor LIKE 'agent:%' THEN 'inferred' ELSE 'user' END;"
    )


TRUST_OF_OLD_ROWS = _trust_of_old_rows()
"""The migration (SQLite and PostgreSQL alike) that gives records written before trust
existed the trust their writer implies: an episode by its role (:data:`ROLE_TRUST`, any
other role ``tool``, no role ``user``); what memlane wrote itself (summaries
``memlane``, the memory manager and optimizer ``memlane-…``) and agents (``mcp``,
``agent``, ``agent:…``) ``inferred``; everything else ``user``, as
:meth:`Memory.add` would have it."""


def words_of(periods: Sequence[str]) -> str:
    """The words of ``periods`` (ISO 8601 intervals) as the lexical index holds them
    (:attr:`MemoryRecord.period_words`)."""
    return " ".join(period_words(*parse_period(p)) for p in periods)


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
    DERIVED = "derived"
    """Written from the model's property of that name for the database to index (a
    record's ``period_words``), never read back: the fields it comes from are."""
    SNAPSHOT = "snapshot"
    """A history event's snapshot as memlane's canonical JSON text, a record's packed
    (:mod:`.snapshots`: what the event's row and the snapshot's other keys say left
    out), so written and read with the event's other fields."""


Decode = Callable[[Any], Any]
DecodeInRow = Callable[[Any, dict[str, Any]], Any]
"""How a stored (not None) value is read given the row's other fields, decoded."""

Column = Stored | type[Enum]
"""How one column is stored; an enum class: the member's value."""


@dataclass(frozen=True, slots=True)
class Layout(Generic[T]):
    """The columns of one table, in order, each named after the model field it holds:
    what ``INSERT ... VALUES`` and ``SELECT *`` of that table rely on, written once."""

    model: Callable[..., T]
    columns: tuple[str, ...]
    stored: tuple[Column | None, ...]

    @property
    def derived(self) -> tuple[str, ...]:
        """The columns written for the database only, never read back."""
        pairs = zip(self.columns, self.stored, strict=True)
        return tuple(c for c, how in pairs if how is Stored.DERIVED)


def layout(model: Callable[..., T], columns: str, **stored: Column) -> Layout[T]:
    """A :class:`Layout` of the space-separated ``columns``, ``stored`` naming how the
    columns that need converting are held."""
    names = tuple(columns.split())
    return Layout(model, names, tuple(stored.get(c) for c in names))


TIME, DOC, MAP, LIST = Stored.TIME, Stored.DOC, Stored.MAP, Stored.LIST
SNAPSHOT = Stored.SNAPSHOT

RECORDS = layout(
    MemoryRecord,
    "id user_id agent_id team session_id kind key text topics metadata importance "
    "created_at updated_at event_at valid_from valid_to superseded_by expires_at deleted_at "
    "access_count last_accessed_at source_ids actor content_hash version context_hash "
    "periods period_words trust quarantine",
    kind=MemoryKind, topics=LIST, metadata=MAP, source_ids=LIST, periods=LIST, trust=Trust,
    quarantine=LIST,
    period_words=Stored.DERIVED, created_at=TIME,
    updated_at=TIME, event_at=TIME, valid_from=TIME, valid_to=TIME, expires_at=TIME,
    deleted_at=TIME, last_accessed_at=TIME,
)  # fmt: skip
_RECORD_METADATA = [f.name for f in dataclasses.fields(MemoryRecord)].index("metadata")
"""Where a record's metadata is among its dataclass's arguments."""
EVENTS = layout(HistoryEvent, "id record_id user_id action version at actor reason snapshot",
                action=HistoryAction, at=TIME, snapshot=SNAPSHOT)  # fmt: skip
MESSAGES = layout(Message, "user_id session_id seq id run_id role content created_at metadata",
                  created_at=TIME, metadata=DOC)  # fmt: skip
SESSIONS = layout(Session, "user_id session_id agent_id team created_at updated_at metadata",
                  created_at=TIME, updated_at=TIME, metadata=DOC)  # fmt: skip
STATES = layout(StateVersion, "user_id session_id name version data updated_at",
                data=DOC, updated_at=TIME)  # fmt: skip
AUDIT = layout(AuditEvent, "user_id id at actor action record_ids session_ids counts",
               at=TIME, record_ids=LIST, session_ids=LIST, counts=MAP)  # fmt: skip


class _Reading(NamedTuple):
    """How a layout's rows are read: the decoder of each column that needs one, then of
    each read with the row's other fields, then the derived columns to drop."""

    decoders: list[tuple[str, Decode]]
    in_row: list[tuple[str, DecodeInRow]]
    derived: tuple[str, ...]


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
    exact_metadata: bool = False
    """Whether a record row ends with ``metadata_text``: the metadata's exact JSON, kept
    beside a column that renormalizes it (NULL in rows written before it was added)."""

    def values(self, table: Layout[Any], item: Any) -> tuple[Any, ...]:
        """The row that stores ``item``, in ``table``'s column order."""
        return tuple(
            self._encode(how, getattr(item, c), item)
            for c, how in zip(table.columns, table.stored, strict=True)
        )

    decoders: dict[tuple[str, ...], _Reading] = field(
        default_factory=dict, compare=False, repr=False
    )
    """Per layout (by its columns), how its rows are read: worked out once, as search
    reads hundreds of rows a query."""

    def fields(self, table: Layout[Any], row: Sequence[Any]) -> dict[str, Any]:
        """The model fields stored in ``row``, by name."""
        out = dict(zip(table.columns, row, strict=True))
        reading = self._reading(table)
        for name, decode in reading.decoders:
            value = out[name]
            if value is not None:
                out[name] = decode(value)
        for name, decode_in_row in reading.in_row:
            value = out[name]
            if value is not None:
                out[name] = decode_in_row(value, out)
        for name in reading.derived:
            del out[name]
        return out

    def _reading(self, table: Layout[Any]) -> _Reading:
        found = self.decoders.get(table.columns)
        if found is not None:
            return found
        pairs = list(zip(table.columns, table.stored, strict=True))
        reading = _Reading(
            [(c, self._reader(how)) for c, how in pairs if how not in _NOT_PER_VALUE],
            [(c, _unpack_snapshot) for c, how in pairs if how is SNAPSHOT],
            table.derived,
        )
        self.decoders[table.columns] = reading
        return reading

    def read(self, table: Layout[T], row: Sequence[Any]) -> T:
        """The model stored in ``row``."""
        plan = self._plan(table)
        if plan is None:
            return table.model(**self.fields(table, row))
        return table.model(*self._decoded(plan, row))

    @staticmethod
    def _decoded(
        plan: tuple[list[tuple[int, Decode]], tuple[int, ...]], row: Sequence[Any]
    ) -> list[Any]:
        """The model's arguments in order, from ``row`` decoded by ``plan``."""
        decoders, order = plan
        values = list(row)
        for i, decode in decoders:
            value = values[i]
            if value is not None:
                values[i] = decode(value)
        return [values[i] for i in order]

    def record(self, row: Sequence[Any]) -> MemoryRecord:
        """The record stored in ``row`` (the columns of :data:`RECORDS`, then
        ``metadata_text`` when ``exact_metadata``)."""
        if not self.exact_metadata:
            return self.read(RECORDS, row)
        *stored, exact = row
        plan = self._plan(RECORDS)
        assert plan is not None  # RECORDS holds every field of a record, each by value
        args = self._decoded(plan, stored)
        if exact is not None:
            args[_RECORD_METADATA] = json.loads(exact)
        return MemoryRecord(*args)

    plans: dict[tuple[str, ...], tuple[list[tuple[int, Decode]], tuple[int, ...]] | None] = field(
        default_factory=dict, compare=False, repr=False
    )
    """Per layout (by its columns), how :meth:`read` makes the model from a row without a
    dict of its fields: each decoded column's position and decoder, and the column
    positions in the order of the model's parameters. None for a model whose
    parameters are not exactly the layout's stored columns, or with a column read with
    the row (read through :meth:`fields`)."""

    def _plan(self, table: Layout[Any]) -> tuple[list[tuple[int, Decode]], tuple[int, ...]] | None:
        if table.columns in self.plans:
            return self.plans[table.columns]
        params = [f.name for f in dataclasses.fields(table.model) if f.init]  # type: ignore[arg-type]
        kept = [c for c, how in zip(table.columns, table.stored, strict=True)
                if how is not Stored.DERIVED]  # fmt: skip
        plan = None
        # A column read with the row's other fields (a history snapshot) goes by name.
        if sorted(params) == sorted(kept) and SNAPSHOT not in table.stored:
            decoders = [
                (i, self._reader(how))
                for i, how in enumerate(table.stored)
                if how not in _NOT_PER_VALUE
            ]
            plan = (decoders, tuple(table.columns.index(p) for p in params))
        self.plans[table.columns] = plan
        return plan

    def _reader(self, how: Column) -> Decode:
        """How a stored (not None) value of a column stored ``how`` is read: direct
        callables (no per-value dispatch), and the empty JSON list and object most rows
        hold read without the JSON parser."""
        if not isinstance(how, Stored):
            return how
        if how is TIME:
            return self.read_time
        read_json = self.read_json
        if how is LIST:
            return lambda v: () if v == "[]" else tuple(read_json(v))
        if how is MAP:
            return lambda v: {} if v == "{}" else read_json(v)
        return json.loads  # DOC

    def _encode(self, how: Column | None, value: Any, item: Any) -> Any:
        if how is None or value is None:
            return value
        return _WRITE[how](self, value, item) if isinstance(how, Stored) else value.value

    def job_values(self, job: Job) -> tuple[Any, ...]:
        """A job's row: its id, owner and what claiming reads as columns, the whole job
        as JSON in ``body``."""
        lease = None if job.lease_until is None else self.write_time(job.lease_until)
        return (job.id, job.user_id, job.status.value, self.write_time(job.run_after), lease,
                job.version, to_json(job.to_dict()))  # fmt: skip

    @staticmethod
    def row_job(row: Sequence[Any]) -> Job:
        return Job.from_dict(json.loads(row[-1]))


_NOT_PER_VALUE = (None, Stored.DERIVED, SNAPSHOT)
"""Columns :attr:`_Reading.decoders` leaves out: held as they are, never read, or read
with the row."""

_EVENT_ROW = ("record_id", "user_id", "version", "at")
"""The fields of a history event its snapshot's packing reads (:data:`snapshots.Row`)."""


def _pack_snapshot(snapshot: Any, event: Any) -> str:
    packed = snapshots.pack(snapshot, {name: getattr(event, name) for name in _EVENT_ROW})
    return to_json(packed if isinstance(packed, list) else dict(packed))


def _unpack_snapshot(stored: Any, row: dict[str, Any]) -> Any:
    return snapshots.unpack(json.loads(stored), row)


Convert = Callable[[RowCodec, Any, Any], Any]

_WRITE: dict[Stored, Convert] = {
    TIME: lambda codec, v, item: codec.write_time(v),
    DOC: lambda codec, v, item: to_json(dict(v)),
    MAP: lambda codec, v, item: to_json(dict(v)),
    LIST: lambda codec, v, item: to_json(list(v)),
    Stored.DERIVED: lambda codec, v, item: v,
    SNAPSHOT: lambda codec, v, item: _pack_snapshot(v, item),
}
"""How a stored (not None) value is written, by how its column stores it, given the
model the row stores."""
