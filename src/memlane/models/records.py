"""Memories and their history: what :meth:`Memory.add` writes and search returns."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from memlane.models.basics import parse_period, period_words
from memlane.models.codec import DictCodec


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
    RELEASE = "release"  # an operator let a quarantined memory be recalled


class Trust(StrEnum):
    """Whose word a memory is, most trusted first; the context builder labels each
    memory with it.

    - ``user``: stated by the user (:meth:`Memory.add` and :meth:`Memory.remember` by
      default, the user's turns of a conversation).
    - ``inferred``: written or inferred by the agent or a model (the assistant's and the
      system's turns, what the memory manager extracts, summaries, agent tools).
    - ``tool``: content from outside the conversation: tool results, web pages, any role
      that is not the user's or the agent's.
    - ``imported``: came in through an import that did not say.
    """

    USER = "user"
    INFERRED = "inferred"
    TOOL = "tool"
    IMPORTED = "imported"


ROLE_TRUST: dict[str, Trust] = {
    "user": Trust.USER,
    "human": Trust.USER,
    "assistant": Trust.INFERRED,
    "ai": Trust.INFERRED,
    "model": Trust.INFERRED,
    "system": Trust.INFERRED,
    "developer": Trust.INFERRED,
}
"""The trust of an episode by its message's role (case ignored). A system or developer
message is the application's own text, on the agent's side of the conversation:
``inferred`` (not the user's word, and not outside content). Any other role (``tool``,
``function``, ``ipython``, a name of one's own) brings content from outside the
conversation: ``tool``."""


def trust_of_role(role: str) -> Trust:
    """The trust of an episode said in ``role`` (:data:`ROLE_TRUST`, else ``tool``)."""
    return ROLE_TRUST.get(role.lower(), Trust.TOOL)


def _dict_to_json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class MemoryRecord(DictCodec):
    """One memory: a fact, preference, episode, summary, procedure or keyed fact."""

    _label: ClassVar[str] = "memory record"

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
    periods: tuple[str, ...] = ()
    """The periods the text names, resolved when it was written against the memory's own
    date (``event_at``, else ``created_at``): "yesterday" said on 8 May 2023 is
    ``"2023-05-07T00:00:00.000000Z/2023-05-08T00:00:00.000000Z"`` (ISO 8601 intervals, see
    :mod:`memlane.when`). Search matches them in a query's time window and by their words
    (:attr:`period_words`)."""
    trust: Trust = Trust.USER
    """Whose word this is (:class:`Trust`)."""
    quarantine: tuple[str, ...] = ()
    """The kinds of instruction-like content found in the text when it was written
    (:mod:`memlane.injection`), while the memory is quarantined: stored and shown to
    operators, never returned by search nor put in a context. Empty: not quarantined
    (never flagged, or released with :meth:`Memory.release`)."""

    @property
    def is_quarantined(self) -> bool:
        """True while the memory is held back from search and context."""
        return bool(self.quarantine)

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

    def period_bounds(self) -> list[tuple[datetime, datetime]]:
        """:attr:`periods` as ``[start, end)`` pairs."""
        return [parse_period(p) for p in self.periods]

    @property
    def period_words(self) -> str:
        """The periods in words ("7 May 2023", "May 2023"), indexed beside the text."""
        return " ".join(period_words(*bounds) for bounds in self.period_bounds())

    def evolve(self, **changes: Any) -> MemoryRecord:
        return replace(self, **changes)

    def metadata_json(self) -> str:
        return _dict_to_json(self.metadata)


@dataclass(frozen=True, slots=True)
class HistoryEvent(DictCodec):
    """One recorded change of a memory. ``snapshot`` is the record after the change."""

    _label: ClassVar[str] = "history event"

    id: str
    record_id: str
    user_id: str
    action: HistoryAction
    version: int
    at: datetime
    actor: str | None = None
    reason: str | None = None
    snapshot: Mapping[str, Any] | None = None
