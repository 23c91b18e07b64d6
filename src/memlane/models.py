"""The values memlane stores and returns.

All are immutable dataclasses. Times are timezone-aware UTC ``datetime`` objects; on disk
they are ISO-8601 strings in one fixed format, so they sort as text.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Generic, Self, TypeVar

from memlane.errors import ValidationError

T = TypeVar("T")

ANONYMOUS_USER = "anonymous"
"""The user id of the explicit anonymous scope (see :meth:`Scope.anonymous`)."""

MAX_ID_CHARS = 256


class MemoryKind(StrEnum):
    """What a memory record holds."""

    FACT = "fact"
    PREFERENCE = "preference"
    EPISODE = "episode"  # one raw message or turn, as said
    SUMMARY = "summary"
    PROCEDURE = "procedure"
    KEYED_FACT = "keyed_fact"


class HistoryAction(StrEnum):
    """A change recorded in a memory's history."""

    ADD = "add"
    UPDATE = "update"
    SUPERSEDE = "supersede"
    DELETE = "delete"
    RESTORE = "restore"
    EXPIRE = "expire"


# ---------------------------------------------------------------------------- time


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_iso(value: datetime) -> str:
    """Render a time in memlane's one on-disk format (UTC, microseconds, sortable)."""
    if value.tzinfo is None:
        raise ValidationError(f"naive datetime {value!r}: pass a timezone-aware time")
    # isoformat pads the year to four digits (strftime's %Y does not on every platform).
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def from_iso(value: str) -> datetime:
    """Parse an ISO-8601 time; a time without zone is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"not an ISO-8601 time: {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def opt_iso(value: datetime | None) -> str | None:
    return None if value is None else to_iso(value)


def opt_time(value: str | None) -> datetime | None:
    return None if value is None else from_iso(value)


# ---------------------------------------------------------------------------- text


def normalize_text(text: str) -> str:
    """Canonical form used for hashing: NFC, collapsed whitespace, case-folded."""
    return " ".join(unicodedata.normalize("NFC", text).split()).casefold()


def content_hash(text: str) -> str:
    """A stable hash of the normalized text; equal hashes mean 'the same words'."""
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()


def check_id(name: str, value: object, *, required: bool = True) -> str | None:
    """Validate an identifier argument (user id, session id ...)."""
    if value is None:
        if required:
            raise ValidationError(f"{name} is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{name} must be a non-empty string, got {value!r}")
    if len(value) > MAX_ID_CHARS:
        raise ValidationError(f"{name} is longer than {MAX_ID_CHARS} characters")
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ValidationError(f"{name} contains control characters")
    return value


def check_count(name: str, value: object, *, minimum: int = 1) -> int:
    """Validate a count argument (page size, retries ...): an int of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive" if minimum == 1 else "a non-negative" if minimum == 0 else "an"
        raise ValidationError(f"{name} must be {kind} integer (>= {minimum}), got {value!r}")
    return value


# ---------------------------------------------------------------------------- scope


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose memory a read or write touches.

    ``user_id`` is always required; use :meth:`anonymous` to say on purpose that the
    memory belongs to nobody in particular. ``agent_id``, ``team`` and ``session_id``
    narrow the scope further when given.
    """

    user_id: str
    agent_id: str | None = None
    team: str | None = None
    session_id: str | None = None

    def __post_init__(self) -> None:
        check_id("user_id", self.user_id)
        check_id("agent_id", self.agent_id, required=False)
        check_id("team", self.team, required=False)
        check_id("session_id", self.session_id, required=False)

    @classmethod
    def anonymous(cls, **kwargs: str | None) -> Scope:
        """The explicit anonymous scope: memory that is shared by every anonymous caller."""
        return cls(ANONYMOUS_USER, **kwargs)


# ---------------------------------------------------------------------------- records


def _dict_to_json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class MemoryRecord:
    """One memory: a fact, preference, episode, summary, procedure or keyed fact."""

    id: str
    user_id: str
    kind: MemoryKind
    text: str
    content_hash: str
    created_at: datetime
    updated_at: datetime
    version: int = 1
    agent_id: str | None = None
    team: str | None = None
    session_id: str | None = None
    key: str | None = None
    topics: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    importance: float = 0.5
    event_at: datetime | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    superseded_by: str | None = None
    expires_at: datetime | None = None
    deleted_at: datetime | None = None
    access_count: int = 0
    last_accessed_at: datetime | None = None
    source_ids: tuple[str, ...] = ()
    actor: str | None = None
    context_hash: str | None = None
    """Hash of the text embedded as this memory's context (an episode with the turns
    before it); None when the memory has no context of its own."""

    @property
    def is_current(self) -> bool:
        """True while the record is neither superseded nor deleted."""
        return self.superseded_by is None and self.valid_to is None and self.deleted_at is None

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    @property
    def effective_time(self) -> datetime:
        """When the content happened if known, else when it was recorded."""
        return self.event_at or self.created_at

    def evolve(self, **changes: Any) -> MemoryRecord:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (times as ISO strings); inverse of :meth:`from_dict`."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, datetime):
                value = to_iso(value)
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            elif isinstance(value, MemoryKind):
                value = value.value
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build a record from :meth:`to_dict` output; raises ValidationError on bad data."""
        try:
            known = {f.name for f in fields(cls)}
            unknown = set(data) - known
            if unknown:
                raise ValidationError(f"unknown record fields: {sorted(unknown)}")
            kw: dict[str, Any] = dict(data)
            kw["kind"] = MemoryKind(kw["kind"])
            for name in ("created_at", "updated_at"):
                kw[name] = from_iso(kw[name])
            for name in (
                "event_at",
                "valid_from",
                "valid_to",
                "expires_at",
                "deleted_at",
                "last_accessed_at",
            ):
                kw[name] = opt_time(kw.get(name))
            kw["topics"] = tuple(kw.get("topics") or ())
            kw["source_ids"] = tuple(kw.get("source_ids") or ())
            kw["metadata"] = dict(kw.get("metadata") or {})
            return cls(**kw)
        except ValidationError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError(f"malformed memory record: {exc}") from exc

    def metadata_json(self) -> str:
        return _dict_to_json(self.metadata)


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """One recorded change of a memory. ``snapshot`` is the record after the change."""

    id: str
    record_id: str
    user_id: str
    action: HistoryAction
    version: int
    at: datetime
    actor: str | None = None
    reason: str | None = None
    snapshot: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["action"] = self.action.value
        out["at"] = to_iso(self.at)
        out["snapshot"] = None if self.snapshot is None else dict(self.snapshot)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        try:
            kw = dict(data)
            kw["action"] = HistoryAction(kw["action"])
            kw["at"] = from_iso(kw["at"])
            return cls(**kw)
        except ValidationError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError(f"malformed history event: {exc}") from exc


# ---------------------------------------------------------------------------- sessions


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a session, as appended; never rewritten."""

    id: str
    user_id: str
    session_id: str
    run_id: str
    seq: int
    role: str
    content: str
    created_at: datetime
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["created_at"] = to_iso(self.created_at)
        out["metadata"] = dict(self.metadata)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        try:
            kw = dict(data)
            kw["created_at"] = from_iso(kw["created_at"])
            kw["metadata"] = dict(kw.get("metadata") or {})
            return cls(**kw)
        except ValidationError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError(f"malformed message: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Run:
    """One agent run: the messages appended together, in order."""

    run_id: str
    session_id: str
    messages: tuple[Message, ...]

    @property
    def created_at(self) -> datetime:
        return self.messages[0].created_at


@dataclass(frozen=True, slots=True)
class Session:
    """A conversation of one user."""

    session_id: str
    user_id: str
    created_at: datetime
    updated_at: datetime
    agent_id: str | None = None
    team: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["created_at"] = to_iso(self.created_at)
        out["updated_at"] = to_iso(self.updated_at)
        out["metadata"] = dict(self.metadata)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        try:
            kw = dict(data)
            kw["created_at"] = from_iso(kw["created_at"])
            kw["updated_at"] = from_iso(kw["updated_at"])
            kw["metadata"] = dict(kw.get("metadata") or {})
            return cls(**kw)
        except ValidationError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError(f"malformed session: {exc}") from exc


@dataclass(frozen=True, slots=True)
class StateVersion:
    """One version of a named state dict of a session (``name='default'`` is session state)."""

    user_id: str
    session_id: str
    name: str
    version: int
    data: Mapping[str, Any]
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["updated_at"] = to_iso(self.updated_at)
        out["data"] = dict(self.data)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        try:
            kw = dict(data)
            kw["updated_at"] = from_iso(kw["updated_at"])
            return cls(**kw)
        except ValidationError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError(f"malformed state version: {exc}") from exc


@dataclass(frozen=True, slots=True)
class WorkflowState:
    """A resumable multi-step process: where it is and what it carries."""

    workflow_id: str
    session_id: str
    step: str
    status: str
    data: Mapping[str, Any]
    version: int
    updated_at: datetime


class JobStatus(StrEnum):
    """Where a background job is. ``pending`` and ``running`` jobs are unfinished."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # gave up after its last attempt; kept with the error


@dataclass(frozen=True, slots=True)
class Job:
    """A unit of background work, persisted before it runs.

    Jobs of one user run one at a time, oldest first. A ``running`` job whose lease has
    passed belongs to a worker that died; the next claim takes it over.
    """

    id: str
    user_id: str
    kind: str
    payload: Mapping[str, Any]
    status: JobStatus
    created_at: datetime
    updated_at: datetime
    run_after: datetime
    attempts: int = 0
    max_attempts: int = 5
    version: int = 1
    lease_until: datetime | None = None
    error: str | None = None
    result: Mapping[str, Any] = field(default_factory=dict)
    agent_id: str | None = None
    session_id: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in (JobStatus.DONE, JobStatus.FAILED)

    def evolve(self, **changes: Any) -> Job:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("created_at", "updated_at", "run_after"):
            out[name] = to_iso(getattr(self, name))
        out["lease_until"] = opt_iso(self.lease_until)
        out["status"] = self.status.value
        out["payload"] = dict(self.payload)
        out["result"] = dict(self.result)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        try:
            kw = dict(data)
            for name in ("created_at", "updated_at", "run_after"):
                kw[name] = from_iso(kw[name])
            kw["lease_until"] = opt_time(kw.get("lease_until"))
            kw["status"] = JobStatus(kw["status"])
            kw["payload"] = dict(kw.get("payload") or {})
            kw["result"] = dict(kw.get("result") or {})
            return cls(**kw)
        except ValidationError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError(f"malformed job: {exc}") from exc


# ---------------------------------------------------------------------------- queries


@dataclass(frozen=True, slots=True)
class Filters:
    """Which records a list or search considers, within a user's scope.

    ``since``/``until`` bound the record's effective time (event time when known, else
    creation time), inclusive. ``metadata`` matches top-level keys by equality.
    ``topics`` matches records having any of the given topics. ``include_shared`` with
    ``agent_id`` also matches the user's shared records (of no agent): what that agent
    may see (:mod:`memlane.access`). ``shared_only`` matches only the shared records
    (``agent_id`` None alone means any agent).
    """

    kinds: tuple[MemoryKind, ...] = ()
    topics: tuple[str, ...] = ()
    agent_id: str | None = None
    team: str | None = None
    session_id: str | None = None
    key: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    include_superseded: bool = False
    include_deleted: bool = False
    include_shared: bool = False
    shared_only: bool = False

    def __post_init__(self) -> None:
        try:
            kinds = tuple(MemoryKind(k) for k in self.kinds)
        except ValueError as exc:
            allowed = ", ".join(k.value for k in MemoryKind)
            raise ValidationError(f"unknown kind in filter ({allowed} allowed): {exc}") from exc
        object.__setattr__(self, "kinds", kinds)
        if isinstance(self.topics, str) or not all(isinstance(t, str) for t in self.topics):
            raise ValidationError("filter topics must be a sequence of strings")
        object.__setattr__(self, "topics", tuple(self.topics))
        # No stored text holds a NUL (writes refuse it), and PostgreSQL cannot even compare
        # one: every backend refuses it here alike instead of erring or matching nothing.
        if any("\x00" in t for t in self.topics):
            raise ValidationError("filter topics cannot contain a NUL character (\\x00)")
        for name in ("agent_id", "team", "session_id", "key"):
            check_id(name, getattr(self, name), required=False)
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
                raise ValidationError(f"filter {name} must be a timezone-aware datetime")
        if self.since and self.until and self.since > self.until:
            raise ValidationError("filter since is after until")
        if not isinstance(self.metadata, Mapping):
            raise ValidationError("filter metadata must be a mapping of key to value")
        for k, v in self.metadata.items():
            if not isinstance(k, str) or not k or '"' in k or "\\" in k:
                raise ValidationError(
                    'filter metadata keys must be non-empty strings without " or \\'
                )
            if "\x00" in k or (isinstance(v, str) and "\x00" in v):
                raise ValidationError(
                    f"filter metadata for {k!r} cannot contain a NUL character (\\x00)"
                )
            if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**63:
                raise ValidationError(f"filter metadata value for {k!r} is out of range")
            if not isinstance(v, str | int | float | bool) or v is None:
                raise ValidationError(
                    f"filter metadata value for {k!r} must be a string, number or bool"
                )

    def matches(self, record: MemoryRecord, now: datetime) -> bool:
        """The reference predicate every store must agree with (conformance-tested)."""
        if record.is_expired(now):
            return False
        if record.deleted_at is not None and not self.include_deleted:
            return False
        if not record.is_current and record.deleted_at is None and not self.include_superseded:
            return False
        if self.kinds and record.kind not in self.kinds:
            return False
        if self.topics and not set(self.topics) & set(record.topics):
            return False
        for name in ("agent_id", "team", "session_id", "key"):
            wanted = getattr(self, name)
            shared = name == "agent_id" and self.include_shared and record.agent_id is None
            if wanted is not None and getattr(record, name) != wanted and not shared:
                return False
        if self.shared_only and record.agent_id is not None:
            return False
        t = record.effective_time
        if self.since is not None and t < self.since:
            return False
        if self.until is not None and t > self.until:
            return False
        return all(
            k in record.metadata and _same(record.metadata[k], v) for k, v in self.metadata.items()
        )


def _same(a: Any, b: Any) -> bool:
    # bool is an int in Python but not in JSON: keep them apart, as SQL does.
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A record found by search, its score and, when asked, how the score was made."""

    record: MemoryRecord
    score: float
    explanation: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "record": self.record.to_dict(),
            "score": self.score,
            "explanation": None if self.explanation is None else dict(self.explanation),
        }


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; pass ``next_cursor`` back to get the next page."""

    items: tuple[T, ...]
    next_cursor: str | None
