"""Queries: which records a list or search considers, and what it returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from memlane.errors import ValidationError
from memlane.models.basics import check_id, is_unicode
from memlane.models.records import MemoryKind, MemoryRecord

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Filters:
    """Which records a list or search considers, within a user's scope.

    ``since``/``until`` bound the record's effective time (event time when known, else
    creation time), inclusive. ``metadata`` matches top-level keys by equality.
    ``topics`` matches records having any of the given topics. ``include_shared`` with
    ``agent_id`` also matches the user's shared records (of no agent): what that agent
    may see (:mod:`memlane.access`). ``shared_only`` matches only the shared records
    (``agent_id`` None alone means any agent). Quarantined records
    (:attr:`MemoryRecord.quarantine`) match only with ``include_quarantined`` (with the
    others) or ``quarantined_only`` (alone): for operators, never for recall.

    ``as_of`` (time travel) matches what was valid at that moment, by the record's
    validity, not its event time (:func:`valid_at` says exactly what that is):
    ``include_superseded`` and ``include_deleted`` then also match records superseded or
    deleted by that moment, never ones not yet valid then. It is an exact filter, apart
    from the time a query names ("in March 2024"), which only boosts event time.
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
    include_quarantined: bool = False
    quarantined_only: bool = False
    as_of: datetime | None = None

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
        if not all(is_unicode(t) for t in self.topics):
            raise ValidationError("filter topics are not valid Unicode (a lone surrogate)")
        for name in ("agent_id", "team", "session_id", "key"):
            check_id(name, getattr(self, name), required=False)
        for name in ("since", "until", "as_of"):
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
            if not is_unicode(k) or (isinstance(v, str) and not is_unicode(v)):
                raise ValidationError(
                    f"filter metadata for {k!r} is not valid Unicode (a lone surrogate)"
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
        if not self._visible(record):
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
        if record.quarantine and not (self.include_quarantined or self.quarantined_only):
            return False
        if self.quarantined_only and not record.quarantine:
            return False
        t = record.effective_time
        if self.since is not None and t < self.since:
            return False
        if self.until is not None and t > self.until:
            return False
        return all(
            k in record.metadata and _same(record.metadata[k], v) for k, v in self.metadata.items()
        )

    def _visible(self, record: MemoryRecord) -> bool:
        """Whether the record's validity lets it match: current (or deleted, superseded
        as the flags allow), or valid at ``as_of`` (:meth:`_was_visible`)."""
        if self.as_of is not None:
            return self._was_visible(record, self.as_of)
        if record.deleted_at is not None:
            return self.include_deleted
        return record.is_current or self.include_superseded

    def _was_visible(self, record: MemoryRecord, t: datetime) -> bool:
        """:func:`valid_at` ``t``, with ``include_deleted`` and ``include_superseded``
        lifting the end that a deletion and a supersession put to it (as without
        ``as_of``, a record deleted by ``t`` matches with ``include_deleted`` whether or
        not it was also superseded)."""
        if not began_by(record, t) or expired_by(record, t):
            return False
        if deleted_by(record, t):
            return self.include_deleted
        return self.include_superseded or not ended_by(record, t)


def began_by(record: MemoryRecord, t: datetime) -> bool:
    """Whether the record's validity started at or before ``t``: its ``valid_from`` (its
    event time when it was written with one, else when it was written), else, for a
    record without one, its creation time."""
    return (record.valid_from or record.created_at) <= t


def ended_by(record: MemoryRecord, t: datetime) -> bool:
    """Whether the record was superseded (closed) at or before ``t``: its ``valid_to``
    is at or before ``t``, or it is marked ``superseded_by`` with no ``valid_to`` (closed
    at a time no one recorded: never placed in the past)."""
    if record.valid_to is not None:
        return record.valid_to <= t
    return record.superseded_by is not None


def deleted_by(record: MemoryRecord, t: datetime) -> bool:
    """Whether the record was deleted at or before ``t`` (and not restored since: a
    restore clears ``deleted_at``)."""
    return record.deleted_at is not None and record.deleted_at <= t


def expired_by(record: MemoryRecord, t: datetime) -> bool:
    """Whether the record's expiry is at or before ``t``."""
    return record.expires_at is not None and record.expires_at <= t


def valid_at(record: MemoryRecord, t: datetime) -> bool:
    """Whether ``record`` was valid at ``t`` (what ``Filters(as_of=t)`` matches, expiry
    at the time of asking aside): its validity had begun (:func:`began_by`), it was not
    superseded by then (:func:`ended_by`), not deleted by then (``deleted_at`` after
    ``t``; a restored memory has none and counts as never deleted) and not expired by
    then (``expires_at`` after ``t``). That is the half-open interval ``[valid_from,
    min(valid_to, deleted_at, expires_at))``. Its content is the record as stored now: an
    in-place :meth:`~memlane.Memory.update` corrects a record rather than recording a
    change in the world (that is :meth:`~memlane.Memory.supersede`), so it opens no new
    interval; ``history(..., as_of=t)`` shows the version stored at ``t``."""
    return (
        began_by(record, t)
        and not ended_by(record, t)
        and not deleted_by(record, t)
        and not expired_by(record, t)
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
