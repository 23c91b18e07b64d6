"""What the memory manager is told (:class:`ManagerConfig`) and what it reports
(:class:`ManagerResult`, one :class:`CandidateResult` per extracted candidate)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from memlane.errors import ValidationError
from memlane.models import Message, check_count
from memlane.ports.llm import Usage


class Outcome(StrEnum):
    ADDED = "added"
    UPDATED = "updated"
    SUPERSEDED = "superseded"
    DELETED = "deleted"
    DUPLICATE = "duplicate"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class CandidateResult:
    """What happened to one extracted candidate."""

    text: str
    outcome: Outcome
    reason: str = ""
    record_id: str | None = None
    """The memory written (added, updated, superseding) or matched (duplicate)."""
    target_id: str | None = None
    """The existing memory that was updated, superseded or deleted."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "outcome": self.outcome.value,
            "reason": self.reason,
            "record_id": self.record_id,
            "target_id": self.target_id,
        }


@dataclass(frozen=True, slots=True)
class ManagerResult:
    """The result of one :meth:`MemoryManager.process` call."""

    candidates: tuple[CandidateResult, ...]
    usage: Usage = field(default_factory=Usage)
    prompt_versions: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """Whether any memory was written."""
        written = {Outcome.ADDED, Outcome.UPDATED, Outcome.SUPERSEDED, Outcome.DELETED}
        return any(c.outcome in written for c in self.candidates)

    @property
    def failed(self) -> tuple[CandidateResult, ...]:
        return tuple(c for c in self.candidates if c.outcome is Outcome.FAILED)

    def to_dict(self) -> dict[str, Any]:
        return {
            "changed": self.changed,
            "candidates": [c.to_dict() for c in self.candidates],
            "usage": self.usage.to_dict(),
            "prompt_versions": list(self.prompt_versions),
        }


@dataclass(frozen=True, slots=True)
class ManagerConfig:
    """How the manager behaves. Every field has a sane default."""

    system_message: str | None = None
    """Replaces the extraction prompt's instructions entirely."""
    capture_instructions: str | None = None
    """What to capture (e.g. "only dietary needs and allergies"); added to the prompt."""
    additional_instructions: str | None = None
    """Anything else the extraction and decision prompts should obey."""
    allow_add: bool = True
    allow_update: bool = True
    allow_delete: bool = True
    allow_clear: bool = False
    duplicate_threshold: float = 0.95
    """Cosine similarity at or above which a candidate is a duplicate without asking."""
    related_threshold: float = 0.45
    """Cosine similarity at or above which an existing memory is shown to the decider."""
    related_limit: int = 5
    change_threshold: float = 0.35
    """The lower cosine at which a candidate that announces a change or denies something
    ("switched to", "no longer") is shown a memory (within ``subject_limit``)."""
    subject_limit: int = 3
    """How many more memories about the same subject as a candidate (a shared name, place
    or object, attribute such as home or job, or topic: :mod:`memlane.manager.subjects`)
    are shown to the decider besides the similar ones, however low their cosine: a
    contradiction often resembles what it replaces too little. 0: similar ones only."""
    repairs: int = 2
    """How many times an invalid model answer is sent back for correction."""
    max_candidates: int = 50

    def __post_init__(self) -> None:
        for name in ("related_limit", "subject_limit", "repairs", "max_candidates"):
            check_count(name, getattr(self, name), minimum=0)
        for name in ("duplicate_threshold", "related_threshold", "change_threshold"):
            if not -1.0 <= getattr(self, name) <= 1.0:
                raise ValidationError(f"{name} must be a cosine between -1 and 1")


MessageLike = Message | Mapping[str, Any] | tuple[str, str]


WITHHELD = "[withheld: instruction-like content]"
"""What the model reads in place of a message the injection policy quarantines."""


def conversation_text(
    messages: Sequence[MessageLike], shown: Callable[[str], str] | None = None
) -> str:
    """Messages as ``role: content`` lines, each content as ``shown`` returns it (the
    manager passes one that replaces what it must not read by :data:`WITHHELD`). Raises
    ValidationError on a bad message."""
    lines = []
    for m in messages:
        if isinstance(m, Message):
            role, content = m.role, m.content
        elif isinstance(m, tuple) and len(m) == 2:
            role, content = m
        elif isinstance(m, Mapping) and "content" in m:
            role, content = m.get("role", "user"), m["content"]
        else:
            raise ValidationError(
                "each message must be a Message, a (role, content) pair or a mapping "
                f"with 'role' and 'content', not {type(m).__name__}"
            )
        if not isinstance(role, str) or not isinstance(content, str):
            raise ValidationError("message role and content must be strings")
        if content.strip():
            lines.append(f"{role}: {(content if shown is None else shown(content)).strip()}")
    if not lines:
        raise ValidationError("no message with content to learn from")
    return "\n".join(lines)
