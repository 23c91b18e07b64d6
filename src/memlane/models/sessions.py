"""Sessions: conversations, their append-only messages and runs, and versioned state."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from memlane.models.codec import DictCodec


@dataclass(frozen=True, slots=True)
class Message(DictCodec):
    """One message of a session, as appended; never rewritten."""

    _label: ClassVar[str] = "message"

    id: str
    user_id: str
    session_id: str
    run_id: str
    seq: int
    role: str
    content: str
    created_at: datetime
    metadata: Mapping[str, Any] = field(default_factory=dict)


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
class Session(DictCodec):
    """A conversation of one user."""

    _label: ClassVar[str] = "session"

    session_id: str
    user_id: str
    created_at: datetime
    updated_at: datetime
    agent_id: str | None = None
    team: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StateVersion(DictCodec):
    """One version of a named state dict of a session (``name='default'`` is session state)."""

    _label: ClassVar[str] = "state version"

    user_id: str
    session_id: str
    name: str
    version: int
    data: Mapping[str, Any]
    updated_at: datetime


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
