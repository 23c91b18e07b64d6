"""Planning and applying a learning pass's changes (phases 5 and 6 of
:mod:`memlane.manager.learning`).

:func:`plan` is pure: from the triage and the decider's answer it makes every
candidate's outcome and the records, version-checked writes and history events they
need. :func:`apply` writes them in one store batch (one transaction): nothing is
destroyed — a contradiction supersedes the old memory (``valid_to``/``superseded_by``
set, history says why), a refinement is an in-place update whose history keeps the old
text, a delete is a restorable soft delete — and a memory changed by someone else since
it was gathered fails the whole batch (ConflictError) instead of being overwritten.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from memlane.core.base import Core, MemoryInput, periods_of
from memlane.core.flow import Flow
from memlane.core.mentions import triple_drafts
from memlane.errors import InjectionRefusedError, PiiRefusedError, ValidationError
from memlane.manager import prompts
from memlane.manager.jobs import JobLease, completed
from memlane.manager.learning import (
    Candidate,
    Decided,
    Gathered,
    PassScope,
    Settled,
    Triage,
)
from memlane.manager.results import CandidateResult, ManagerConfig, ManagerResult, Outcome
from memlane.models import (
    EntityType,
    HistoryAction,
    HistoryEvent,
    MemoryRecord,
    Trust,
    content_hash,
)
from memlane.ports import store as ops

# ---------------------------------------------------------------------------- data


@dataclass(frozen=True, slots=True)
class Rules:
    """Everything :func:`plan` needs besides the triage and the decisions."""

    scope: PassScope
    config: ManagerConfig
    now: datetime
    model: str
    """The chat model's name, recorded as the changes' actor and provenance."""
    records: Core
    """The core whose validation new records pass (no I/O)."""

    @property
    def actor(self) -> str:
        return f"memlane-manager:{self.model}"

    def provenance(self) -> dict[str, Any]:
        return {"source": "manager", "model": self.model, "prompt": prompts.EXTRACT_VERSION}


@dataclass(slots=True)
class Plan:
    """The outcome of every candidate and the store writes they need."""

    results: Settled
    new: list[MemoryRecord] = field(default_factory=list)
    writes: list[ops.Op[Any]] = field(default_factory=list)
    events: list[HistoryEvent] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    """Texts of in-place updates, to embed with the batch."""
    touched: set[str] = field(default_factory=set)
    triples: dict[str, tuple[ops.TripleDraft, ...]] = field(default_factory=dict)
    """The typed relations each new memory states (by its id), for the graph."""

    def state(self, record: MemoryRecord, c: Candidate) -> None:
        """Record ``record`` (new, for ``c``) as stating ``c``'s relations."""
        relations = (
            (r.subject, EntityType(r.subject_type), r.predicate, r.object,
             EntityType(r.object_type), r.exclusive)
            for r in c.memory.relations
        )  # fmt: skip
        drafts = triple_drafts(relations, record.session_id)
        if drafts:
            self.triples[record.id] = drafts

    def change(self, old: MemoryRecord, new: MemoryRecord, event: HistoryEvent) -> None:
        """Write ``new`` over ``old`` (only if ``old`` is still the stored version)."""
        self.touched.add(old.id)
        self.writes.append(ops.WriteRecord(new, old.version))
        self.events.append(event)


# ---------------------------------------------------------------------------- plan


def plan(triaged: Triage, decided: Decided, rules: Rules) -> Plan:
    """Every candidate's outcome and the writes it needs: additions first, then the
    decided candidates in order. Bad model output (say, an empty text) fails its
    candidate alone."""
    out = Plan(dict(triaged.settled))
    for c in triaged.to_add:
        adding = partial(plan_add, out, c, c.text, "new information", rules)
        out.results[c.index] = _guarded(c, adding)
    for k, c in enumerate(triaged.to_decide):
        if decided.failure is not None:
            out.results[c.index] = CandidateResult(c.text, Outcome.FAILED, decided.failure)
        else:
            deciding = partial(plan_decision, out, c, decided.choices.get(k), rules)
            out.results[c.index] = _guarded(c, deciding)
    return out


def _guarded(c: Candidate, make: Callable[[], CandidateResult]) -> CandidateResult:
    try:
        return make()
    except ValidationError as exc:
        return CandidateResult(c.text, Outcome.FAILED, f"invalid model output: {exc}")


def plan_add(out: Plan, c: Candidate, text: str, reason: str, rules: Rules) -> CandidateResult:
    """Add ``text`` as a new memory for ``c`` (unless adding is switched off)."""
    if not rules.config.allow_add:
        return CandidateResult(c.text, Outcome.SKIPPED, "adding is switched off")
    scope = rules.scope
    item = MemoryInput(
        text=text,
        kind=c.memory.kind,
        topics=c.topics,
        importance=c.memory.importance,
        session_id=scope.session_id,
        agent_id=scope.agent_id,
        team=scope.team,
        metadata=rules.provenance(),
        actor=rules.actor,
        trust=Trust.INFERRED,
    )
    record = rules.records.new_record(scope.user_id, item, rules.now)
    out.new.append(record)
    out.state(record, c)
    return CandidateResult(c.text, Outcome.ADDED, reason, record.id)


def plan_decision(
    out: Plan, c: Candidate, d: prompts.Decision | None, rules: Rules
) -> CandidateResult:
    """Carry out the model's decision ``d`` for ``c``, if it is one that can be."""
    if d is None:
        return CandidateResult(c.text, Outcome.FAILED, "the model gave no decision for it")
    reason = d.reason or d.action.lower()
    if d.action == "NOOP":
        return CandidateResult(c.text, Outcome.SKIPPED, reason)
    if d.action == "ADD":
        return plan_add(out, c, d.text or c.text, reason, rules)
    if d.target is None or not 0 <= d.target < len(c.related):
        problem = f"{d.action} names no existing memory shown to it"
        return CandidateResult(c.text, Outcome.FAILED, problem)
    target = c.related[d.target][0]
    if target.id in out.touched:
        problem = "another candidate already changed that memory"
        return CandidateResult(c.text, Outcome.FAILED, problem)
    if d.action == "DELETE":
        return _plan_delete(out, c, target, reason, rules)
    if not rules.config.allow_update:
        return CandidateResult(c.text, Outcome.SKIPPED, "updating is switched off")
    try:  # the decision's own text goes through the scope's policies too
        text = rules.records.private(
            rules.scope.user_id, rules.records.check_text(d.text or c.text)
        )
        rules.records.screen(rules.scope.user_id, text)
    except (PiiRefusedError, InjectionRefusedError) as exc:
        return CandidateResult(c.text, Outcome.FAILED, str(exc))
    change = _plan_refine if d.mode == "refine" else _plan_supersede
    return change(out, c, target, text, reason, rules)


def _plan_delete(
    out: Plan, c: Candidate, target: MemoryRecord, reason: str, rules: Rules
) -> CandidateResult:
    if not rules.config.allow_delete:
        return CandidateResult(c.text, Outcome.SKIPPED, "deleting is switched off")
    now = rules.now
    gone = Core.bump(target, now, deleted_at=now)
    event = Core.event(gone, HistoryAction.DELETE, now, actor=rules.actor, reason=reason)
    out.change(target, gone, event)
    return CandidateResult(c.text, Outcome.DELETED, reason, None, target.id)


def _plan_refine(
    out: Plan, c: Candidate, target: MemoryRecord, text: str, reason: str, rules: Rules
) -> CandidateResult:
    """An in-place update: same memory, next version; its history keeps the old text."""
    now = rules.now
    new = Core.bump(
        target,
        now,
        text=text,
        content_hash=content_hash(text),
        periods=periods_of(text, target.event_at or target.created_at),
        topics=tuple(dict.fromkeys([*target.topics, *c.topics])),
        importance=max(target.importance, c.memory.importance),
        context_hash=None,
        quarantine=rules.records.screen(rules.scope.user_id, text),
        trust=Trust.INFERRED,
    )
    event = Core.event(new, HistoryAction.UPDATE, now, actor=rules.actor, reason=reason)
    out.change(target, new, event)
    out.texts.append(text)
    return CandidateResult(c.text, Outcome.UPDATED, reason, new.id, target.id)


def _plan_supersede(
    out: Plan, c: Candidate, target: MemoryRecord, text: str, reason: str, rules: Rules
) -> CandidateResult:
    """A contradiction: a new memory, and the old one closed (``valid_to``) pointing to it."""
    now = rules.now
    item = MemoryInput(
        text=text,
        kind=target.kind,
        topics=tuple(dict.fromkeys([*c.topics, *target.topics])),
        importance=c.memory.importance,
        session_id=rules.scope.session_id,
        agent_id=target.agent_id,  # a shared memory stays shared, an agent's stays its
        team=rules.scope.team or target.team,
        metadata=rules.provenance(),
        actor=rules.actor,
        trust=Trust.INFERRED,
    )
    new = rules.records.new_record(rules.scope.user_id, item, now)
    closed = Core.bump(target, now, valid_to=now, superseded_by=new.id)
    event = Core.event(closed, HistoryAction.SUPERSEDE, now, actor=rules.actor, reason=reason)
    out.change(target, closed, event)
    out.new.append(new)
    out.state(new, c)
    return CandidateResult(c.text, Outcome.SUPERSEDED, reason, new.id, target.id)


# ---------------------------------------------------------------------------- apply


def apply(
    out: Plan,
    gathered: Gathered,
    core: Core,
    result: ManagerResult,
    lease: JobLease | None = None,
) -> Flow[None]:
    """Write the plan in one batch, with the embeddings of every new text. With
    ``lease`` (a claimed job) the job is marked done (with ``result``) in the same batch,
    so its changes land exactly once. Raises ConflictError when a memory (or the job)
    changed since it was read; then nothing is written."""
    texts = [*out.texts, *(r.text for r in out.new)]
    _, cache_write = yield from core.vectors(texts, gathered.known)
    extra = [gathered.cache_write, *out.writes, ops.AppendHistory(tuple(out.events))]
    if lease is None:
        yield from core.insert(out.new, extra, vector=cache_write, triples=out.triples)
        return
    # No lock is held across the batch: the lease is put on hold (the heartbeat stops
    # renewing it, which would change the job's version) and released after it.
    job = lease.hold()
    done = completed(job, result.to_dict(), core.now())
    committed = None
    try:
        yield from core.insert(
            out.new,
            [*extra, ops.PutJob(done, job.version)],
            vector=cache_write,
            triples=out.triples,
        )
        committed = done
    finally:
        lease.release(committed)
