"""The audit trail: who read or changed which user's data, and when.

An entry names the actor (an API key, an MCP client, an agent, a process), the call
(``add``, ``search``, ``forget_user`` ...), the ids of the memories and sessions it
touched and counts. It never holds content: no memory text, no query, no message, no
metadata or state value. Entries are only ever appended; forgetting a user removes that
user's entries and leaves one tombstone saying that the user was forgotten.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from memlane.models.codec import DictCodec

TOMBSTONE_ACTION = "forget_user"
"""The action of the one entry a forgotten user's trail keeps."""


class AuditLevel(StrEnum):
    """What a memory records in the audit trail."""

    OFF = "off"
    """Nothing (forgetting a user still removes the user's entries)."""
    WRITES = "writes"
    """Every change, in the transaction that makes it."""
    ALL = "all"
    """Every change and every read of a user's data (the default)."""


@dataclass(frozen=True, slots=True)
class AuditEvent(DictCodec):
    """One entry of a user's audit trail. ``id`` sorts by time (like record ids);
    ``action`` is the name of the call (the Python API's method name); ``counts`` says
    how many items of each kind the call wrote or read (``records``, ``messages``,
    ``results`` ...). The tombstone of a forgotten user has action ``forget_user``, the
    counts of what was removed, and a keyed hash of the user id as ``user_id``
    (:func:`memlane.core.audit.tombstone_id`)."""

    _label: ClassVar[str] = "audit event"

    id: str
    user_id: str
    at: datetime
    actor: str
    action: str
    record_ids: tuple[str, ...] = ()
    session_ids: tuple[str, ...] = ()
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def tombstone(self) -> bool:
        """Whether this entry records that its user was forgotten."""
        return self.action == TOMBSTONE_ACTION
