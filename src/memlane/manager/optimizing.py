"""Optimization passes over a user's facts and preferences (plan, apply, revert) and
clearing them: flows over the core, with the planning and the writes as small functions.

Nothing is destroyed: a merged or deduplicated memory is superseded by what replaces it,
an evicted or cleared one is soft-deleted, every change is in history, and an applied
optimization can be reverted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from memlane.core.base import Core, MemoryInput
from memlane.core.flow import Flow, many, one
from memlane.errors import ConflictError, ValidationError
from memlane.ids import new_id
from memlane.manager.learning import LEARNABLE_KINDS
from memlane.manager.strategies import Change, PlanContext, Strategy
from memlane.models import Filters, HistoryAction, HistoryEvent, MemoryRecord, Trust, check_id
from memlane.ports import store as ops
from memlane.ports.llm import Usage
from memlane.tokens import TokenCounter

ACTOR = "memlane-optimizer"


@dataclass(frozen=True, slots=True)
class OptimizationReport:
    """What an optimization planned (and maybe applied), with a readable diff."""

    id: str
    user_id: str
    changes: tuple[Change, ...]
    created: tuple[str, ...]
    memories_before: int
    memories_after: int
    tokens_before: int
    tokens_after: int
    diff: str
    applied: bool
    usage: Usage = field(default_factory=Usage)
    written: tuple[tuple[str, int], ...] = ()
    """(memory id, version) the optimization left; :meth:`revert` checks them."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user_id": self.user_id,
            "changes": [c.to_dict() for c in self.changes],
            "created": list(self.created),
            "memories_before": self.memories_before,
            "memories_after": self.memories_after,
            "tokens_before": self.tokens_before,
            "tokens_after": self.tokens_after,
            "diff": self.diff,
            "applied": self.applied,
            "usage": self.usage.to_dict(),
        }


@dataclass(slots=True)
class Writes:
    """Records to create, record writes (each naming the version it replaces) and the
    history events that explain them: one batch."""

    created: list[MemoryRecord] = field(default_factory=list)
    writes: list[ops.Op[Any]] = field(default_factory=list)
    events: list[HistoryEvent] = field(default_factory=list)

    def change(self, old: MemoryRecord, new: MemoryRecord, event: HistoryEvent) -> None:
        self.writes.append(ops.WriteRecord(new, old.version))
        self.events.append(event)

    def ops(self) -> list[ops.Op[Any]]:
        return [*self.writes, ops.AppendHistory(tuple(self.events))]


def current(user_id: str, now: datetime, page: int = 1000) -> Flow[list[MemoryRecord]]:
    """All the user's current facts and preferences, page by page."""
    f = Filters(kinds=LEARNABLE_KINDS)
    out: list[MemoryRecord] = []
    cursor: str | None = None
    while True:
        rows = yield from one(ops.ListRecords(user_id, f, now, cursor, page))
        out += rows
        if len(rows) < page:
            return out
        cursor = rows[-1].id


def clear(core: Core, user_id: str, reason: str) -> Flow[int]:
    """Soft-delete every current fact and preference of the user in one batch; returns
    how many."""
    now = core.now()
    out = Writes()
    for r in (yield from current(user_id, now, 500)):
        gone = core.bump(r, now, deleted_at=now)
        out.change(r, gone, core.event(gone, HistoryAction.DELETE, now, reason=reason))
    if out.writes:
        yield from many(out.ops())
    return len(out.writes)


def optimize(
    core: Core,
    strategies: Sequence[Strategy],
    user_id: str,
    *,
    dry_run: bool,
    use_llm: bool,
    count: TokenCounter,
    repairs: int,
) -> Flow[OptimizationReport]:
    """Plan each strategy in turn over what the ones before left, then (unless
    ``dry_run``) apply every change in one batch. Returns the report with its diff."""
    check_id("user_id", user_id)
    if isinstance(strategies, str) or not strategies:
        raise ValidationError("give at least one strategy")
    now = core.now()
    before = yield from current(user_id, now)
    ctx = PlanContext(core, now, count, use_llm, repairs=repairs)
    changes, remaining = yield from plan_strategies(strategies, before, ctx)
    run_id = new_id()
    out, written = changes_to_writes(core, changes, before, user_id, run_id, now)
    after = [r.text for r in remaining] + [r.text for r in out.created]
    report = OptimizationReport(
        id=run_id,
        user_id=user_id,
        changes=tuple(changes),
        created=tuple(r.id for r in out.created),
        memories_before=len(before),
        memories_after=len(after),
        tokens_before=sum(count(r.text) for r in before),
        tokens_after=sum(count(t) for t in after),
        diff=diff(changes, {r.id: r for r in before}, {r.id: r for r in out.created}),
        applied=not dry_run and bool(changes),
        usage=ctx.usage,
        written=tuple(written) + tuple((r.id, r.version) for r in out.created),
    )
    if report.applied:
        yield from core.insert(out.created, out.ops())
    return report


def plan_strategies(
    strategies: Sequence[Strategy], memories: list[MemoryRecord], ctx: PlanContext
) -> Flow[tuple[list[Change], list[MemoryRecord]]]:
    """The changes of every strategy, each planning over what the earlier ones left, and
    the memories no change touches."""
    changes: list[Change] = []
    remaining = list(memories)
    for strategy in strategies:
        planned = yield from strategy.plan(remaining, ctx)
        changes += planned
        gone = {i for c in planned for i in c.sources}
        remaining = [r for r in remaining if r.id not in gone]
        ctx.pending_tokens += sum(ctx.counter(c.text) for c in planned if c.text is not None)
    return changes, remaining


def changes_to_writes(
    core: Core,
    changes: Sequence[Change],
    before: Sequence[MemoryRecord],
    user_id: str,
    run_id: str,
    now: datetime,
) -> tuple[Writes, list[tuple[str, int]]]:
    """The records, writes and history of ``changes`` (pure), and the (id, version) each
    changed memory is left at."""
    by_id = {r.id: r for r in before}
    out = Writes()
    written: list[tuple[str, int]] = []
    for c in changes:
        reason = f"optimize {run_id} {c.strategy}: {c.reason}"
        target_id = c.keep
        if c.action == "replace" and c.text is not None:
            new = core.new_record(user_id, _merged(c, c.text, by_id, run_id), now)
            out.created.append(new)
            target_id = new.id
        for i in c.sources:
            old = by_id[i]
            if c.action == "evict":
                changed, action = core.bump(old, now, deleted_at=now), HistoryAction.DELETE
            else:
                changed = core.bump(old, now, valid_to=now, superseded_by=target_id)
                action = HistoryAction.SUPERSEDE
            out.change(old, changed, core.event(changed, action, now, actor=ACTOR, reason=reason))
            written.append((changed.id, changed.version))
    return out, written


def _merged(c: Change, text: str, by_id: Mapping[str, MemoryRecord], run_id: str) -> MemoryInput:
    """The memory that replaces ``c``'s sources: their topics, their highest importance,
    the first one's kind, team and agent."""
    first = by_id[c.sources[0]]
    return MemoryInput(
        text=text,
        kind=first.kind,
        topics=tuple(dict.fromkeys(t for i in c.sources for t in by_id[i].topics)),
        importance=max(by_id[i].importance for i in c.sources),
        metadata={"source": "optimizer", "optimization": run_id},
        source_ids=c.sources,
        actor=ACTOR,
        team=first.team,
        agent_id=first.agent_id,
        trust=Trust.INFERRED,
    )


def revert(core: Core, report: OptimizationReport) -> Flow[int]:
    """Undo an applied optimization: its new memories are deleted and every memory it
    superseded or evicted is current again, all recorded in history. Returns how many
    memories changed. Raises ConflictError if one was changed since."""
    if not report.applied:
        raise ValidationError("that optimization was not applied (dry run)")
    sources = tuple(i for c in report.changes for i in c.sources)
    records = yield from one(ops.GetRecords(report.user_id, (*sources, *report.created)))
    by_id = {r.id: r for r in records}
    check_unchanged(report, by_id)
    now = core.now()
    reason = f"revert optimization {report.id}"
    out = Writes()
    for r in (by_id[i] for i in report.created if i in by_id):
        if r.deleted_at is None:
            gone = core.bump(r, now, deleted_at=now)
            out.change(r, gone, core.event(gone, HistoryAction.DELETE, now, reason=reason))
    for r in (by_id[i] for i in sources if i in by_id):
        back = core.bump(r, now, deleted_at=None, valid_to=None, superseded_by=None)
        out.change(r, back, core.event(back, HistoryAction.RESTORE, now, reason=reason))
    yield from many(out.ops())
    return len(out.writes)


def check_unchanged(report: OptimizationReport, by_id: Mapping[str, MemoryRecord]) -> None:
    """Raise ConflictError unless every memory is still at the version ``report`` left."""
    for rid, version in report.written:
        found = by_id.get(rid)
        if found is None or found.version != version:
            actual = None if found is None else found.version
            raise ConflictError(
                f"memory {rid} changed after the optimization (version {actual}, it left "
                f"{version}); nothing was reverted",
                expected=version,
                actual=actual,
            )


def diff(
    changes: Sequence[Change],
    before: Mapping[str, MemoryRecord],
    created: Mapping[str, MemoryRecord],
) -> str:
    """The changes as a readable diff: ``-`` a memory that goes, ``+`` its replacement,
    ``=`` the existing memory that replaces it."""
    lines = []
    new_ids = iter(created)
    for c in changes:
        lines.append(f"# {c.strategy}: {c.reason}")
        lines += [f"- {before[i].text}  [{i}]" for i in c.sources]
        if c.action == "replace" and c.text is not None:
            lines.append(f"+ {c.text}  [{next(new_ids, 'new')}]")
        elif c.keep is not None:
            lines.append(f"= {before[c.keep].text}  [{c.keep}]")
    return "\n".join(lines)
