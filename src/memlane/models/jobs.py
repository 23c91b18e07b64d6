"""Background jobs: units of work persisted before they run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from memlane.models.codec import DictCodec


class JobStatus(StrEnum):
    """Where a background job is. ``pending`` and ``running`` jobs are unfinished."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # gave up after its last attempt; kept with the error


@dataclass(frozen=True, slots=True)
class Job(DictCodec):
    """A unit of background work, persisted before it runs.

    Jobs of one user run one at a time, oldest first. A ``running`` job whose lease has
    passed belongs to a worker that died; the next claim takes it over.
    """

    _label: ClassVar[str] = "job"

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
