"""Optimization strategies: keep a user's memories small, sharp and within a token cap.

A strategy looks at the user's current facts and preferences and *plans* changes; it
never writes. :meth:`MemoryManager.optimize` shows the plan as a diff (``dry_run``) or
applies every change of every strategy in one transaction, through history, so
:meth:`MemoryManager.revert` can undo it. Nothing is destroyed: a merged or deduplicated
memory is superseded by what replaces it, an evicted one is soft-deleted.

Strategies are plain objects with a ``name`` and a ``plan`` flow; write your own by
implementing :class:`Strategy`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

import numpy as np

from memlane.core.base import Core
from memlane.core.flow import Flow
from memlane.errors import ValidationError
from memlane.llm.structured import ask
from memlane.manager import prompts
from memlane.models import MemoryRecord, normalize_text
from memlane.ports.embedder import Vector
from memlane.ports.llm import ChatMessage, Usage
from memlane.tokens import TokenCounter, count_tokens


@dataclass(frozen=True, slots=True)
class Change:
    """One planned change.

    ``replace``: the ``sources`` are superseded by a new memory with ``text`` (merge,
    summarize) or, with ``keep`` set, by that existing memory (deduplicate).
    ``evict``: the ``sources`` are soft-deleted.
    """

    strategy: str
    action: Literal["replace", "evict"]
    sources: tuple[str, ...]
    reason: str
    text: str | None = None
    keep: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "action": self.action,
            "sources": list(self.sources),
            "reason": self.reason,
            "text": self.text,
            "keep": self.keep,
        }


@dataclass(slots=True)
class PlanContext:
    """What a strategy may use while planning."""

    core: Core
    now: datetime
    counter: TokenCounter
    use_llm: bool
    usage: Usage = field(default_factory=Usage)
    pending_tokens: int = 0
    """Tokens of memories that earlier strategies of this run will create."""
    repairs: int = 2
    """How many times an invalid model answer is sent back (ManagerConfig.repairs)."""

    def vectors(self, records: Sequence[MemoryRecord]) -> Flow[list[Vector]]:
        # only the vectors: the write is not made, so no sparse terms are wanted
        vectors, _ = yield from self.core.vectors([r.text for r in records], terms_for=0)
        return vectors

    def merged_text(self, records: Sequence[MemoryRecord], instruction: str) -> Flow[str]:
        """One text holding what ``records`` say: by the LLM when allowed, else the
        distinct sentences joined."""
        if self.use_llm:
            body = "\n".join(f"- {r.text}" for r in records)
            answer = yield from ask(
                prompts.Merged,
                [ChatMessage("system", instruction), ChatMessage("user", body)],
                operation="merge",
                repairs=self.repairs,
            )
            self.usage = self.usage + answer.usage
            return answer.value.text.strip()
        seen: dict[str, str] = {}
        for r in records:
            for part in r.text.replace("\n", " ").split(". "):
                part = part.strip().rstrip(".")
                if part and normalize_text(part) not in seen:
                    seen[normalize_text(part)] = part
        return "; ".join(seen.values()) + "."


class Strategy(Protocol):
    @property
    def name(self) -> str: ...

    def plan(self, memories: Sequence[MemoryRecord], ctx: PlanContext) -> Flow[list[Change]]:
        """Changes for ``memories`` (current, not yet touched by an earlier strategy)."""
        ...


def scope_of(record: MemoryRecord) -> tuple[str | None, str | None, str]:
    """Memories are only combined with memories of the same team, agent and kind."""
    return (record.team, record.agent_id, record.kind.value)


def _clusters(
    vectors: list[Vector], threshold: float, scopes: Sequence[Hashable]
) -> list[list[int]]:
    """Single-link groups of items of the same scope whose cosine similarity is at least
    ``threshold``."""
    n = len(vectors)
    if n == 0:
        return []
    m = np.vstack(vectors)
    sims = m @ m.T
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            if sims[i, j] >= threshold and scopes[i] == scopes[j]:
                parent[find(j)] = find(i)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def priority(record: MemoryRecord, now: datetime, half_life_days: float) -> float:
    """Importance, decayed by age since last use, raised by how often it was used."""
    last = record.last_accessed_at or record.updated_at
    age_days = max(0.0, (now - last).total_seconds() / 86400)
    decay = float(0.5 ** (age_days / half_life_days))
    return record.importance * decay * (1 + math.log1p(record.access_count))


@dataclass(frozen=True, slots=True)
class Deduplicate:
    """Near-identical memories (same normalized text, or cosine ≥ threshold) collapse
    into the most important (then most used, then oldest) of them."""

    threshold: float = 0.95
    name: str = "deduplicate"

    def plan(self, memories: Sequence[MemoryRecord], ctx: PlanContext) -> Flow[list[Change]]:
        vectors = yield from ctx.vectors(memories)
        # Identical normalized text counts as similarity 1 whatever the embedder says.
        by_text: dict[tuple[Hashable, str], int] = {}
        for i, r in enumerate(memories):
            j = by_text.setdefault((scope_of(r), normalize_text(r.text)), i)
            if j != i:
                vectors[i] = vectors[j]
        changes = []
        for group in _clusters(vectors, self.threshold, [scope_of(r) for r in memories]):
            rs = sorted(
                (memories[i] for i in group),
                key=lambda r: (-r.importance, -r.access_count, r.id),
            )
            keep, rest = rs[0], rs[1:]
            changes.append(
                Change(
                    self.name,
                    "replace",
                    tuple(r.id for r in rest),
                    f"duplicates of {keep.id}",
                    keep=keep.id,
                )
            )
        return changes


@dataclass(frozen=True, slots=True)
class Merge:
    """Memories about the same thing (cosine ≥ threshold) become one memory that keeps
    every distinct detail (LLM when configured, else their distinct sentences)."""

    threshold: float = 0.8
    name: str = "merge"

    def plan(self, memories: Sequence[MemoryRecord], ctx: PlanContext) -> Flow[list[Change]]:
        vectors = yield from ctx.vectors(memories)
        changes = []
        for group in _clusters(vectors, self.threshold, [scope_of(r) for r in memories]):
            rs = [memories[i] for i in sorted(group)]
            text = yield from ctx.merged_text(rs, prompts.MERGE_SYSTEM)
            changes.append(
                Change(self.name, "replace", tuple(r.id for r in rs), "overlapping", text=text)
            )
        return changes


@dataclass(frozen=True, slots=True)
class Summarize:
    """Each topic with at least ``min_group`` memories becomes one summary memory."""

    min_group: int = 5
    name: str = "summarize"

    def plan(self, memories: Sequence[MemoryRecord], ctx: PlanContext) -> Flow[list[Change]]:
        groups: dict[tuple[str, str, str, str], list[MemoryRecord]] = {}
        for r in memories:
            team, agent, kind = scope_of(r)
            key = (r.topics[0] if r.topics else "", team or "", agent or "", kind)
            groups.setdefault(key, []).append(r)
        changes = []
        for (topic, *_), rs in sorted(groups.items()):
            if len(rs) < self.min_group:
                continue
            text = yield from ctx.merged_text(rs, prompts.MERGE_SYSTEM)
            reason = f"summarized {len(rs)} memories" + (f" about {topic}" if topic else "")
            changes.append(Change(self.name, "replace", tuple(r.id for r in rs), reason, text=text))
        return changes


@dataclass(frozen=True, slots=True)
class Decay:
    """Evict memories by priority (importance x age decay x use): those below
    ``min_priority``, and the lowest beyond ``max_memories``."""

    max_memories: int | None = None
    min_priority: float | None = None
    half_life_days: float = 90.0
    name: str = "decay"

    def __post_init__(self) -> None:
        if self.max_memories is not None and self.max_memories < 0:
            raise ValidationError("max_memories must not be negative")
        if not self.half_life_days > 0:
            raise ValidationError("half_life_days must be positive")

    def plan(self, memories: Sequence[MemoryRecord], ctx: PlanContext) -> Flow[list[Change]]:
        ranked = sorted(
            memories, key=lambda r: (priority(r, ctx.now, self.half_life_days), r.id), reverse=True
        )
        out = []
        for n, r in enumerate(ranked):
            p = priority(r, ctx.now, self.half_life_days)
            if self.min_priority is not None and p < self.min_priority:
                out.append(Change(self.name, "evict", (r.id,), f"priority {p:.3f} below minimum"))
            elif self.max_memories is not None and n >= self.max_memories:
                out.append(
                    Change(self.name, "evict", (r.id,), f"over {self.max_memories} memories")
                )
        return out
        yield  # a flow, though it needs no I/O


@dataclass(frozen=True, slots=True)
class TokenCap:
    """Evict the lowest-priority memories until the user's memories total at most
    ``max_tokens`` tokens."""

    max_tokens: int
    half_life_days: float = 90.0
    name: str = "token_cap"

    def __post_init__(self) -> None:
        if self.max_tokens < 0 or not self.half_life_days > 0:
            raise ValidationError("max_tokens must not be negative, half_life_days positive")

    def plan(self, memories: Sequence[MemoryRecord], ctx: PlanContext) -> Flow[list[Change]]:
        total = sum(ctx.counter(r.text) for r in memories) + ctx.pending_tokens
        ranked = sorted(memories, key=lambda r: (priority(r, ctx.now, self.half_life_days), r.id))
        out = []
        for r in ranked:
            if total <= self.max_tokens:
                break
            total -= ctx.counter(r.text)
            out.append(Change(self.name, "evict", (r.id,), f"over the {self.max_tokens}-token cap"))
        return out
        yield  # a flow, though it needs no I/O


DEFAULT_COUNTER = count_tokens
