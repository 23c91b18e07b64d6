"""The memory manager's flows: extract, deduplicate, decide, apply.

Written once as flows (:mod:`memlane.core.flow`) over the store, the embedder and the chat
model; :class:`~memlane.manager.MemoryManager` and
:class:`~memlane.manager.AsyncMemoryManager` only pick how the I/O is done.

One pass of :meth:`ManagerFlows.process`:

1. **extract** candidate memories from the messages (one LLM call);
2. **pre-pass**, no LLM: a candidate whose normalized text equals a current memory's, or
   whose embedding is within ``duplicate_threshold`` of one, or of an earlier candidate,
   is a duplicate;
3. **decide** ADD / UPDATE / DELETE / NOOP for the candidates with related memories —
   similar ones (cosine at least ``related_threshold``) and a few about the same subject
   (:func:`memlane.manager.subjects.choose_related`), since a contradiction often
   resembles what it replaces too little — in one LLM call for all of them; the others
   are added;
4. **apply** every change in one transaction. Nothing is destroyed: a contradiction
   supersedes the old memory (``valid_to``/``superseded_by`` set, history says why), a
   refinement is an in-place update whose history keeps the old text, a delete is a
   restorable soft delete.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from functools import partial
from typing import Any

from memlane.access import visible_filters
from memlane.core.base import MemoryInput
from memlane.core.flow import Flow, many, one
from memlane.core.memory import MemoryCore
from memlane.errors import ConflictError, LLMOutputError, UnsupportedError, ValidationError
from memlane.ids import new_id
from memlane.llm.structured import ask
from memlane.manager import prompts, subjects
from memlane.manager.jobs import JobLease
from memlane.manager.strategies import Change, PlanContext, Strategy
from memlane.models import (
    Filters,
    HistoryAction,
    HistoryEvent,
    JobStatus,
    MemoryKind,
    MemoryRecord,
    Message,
    Scope,
    check_count,
    check_id,
    content_hash,
    normalize_text,
)
from memlane.ports import store as ops
from memlane.ports.embedder import Vector
from memlane.ports.llm import ChatMessage, Usage
from memlane.tokens import TokenCounter, count_tokens

LEARNABLE_KINDS = (MemoryKind.FACT, MemoryKind.PREFERENCE)
SUBJECT_POOL = 20
"""How many memories each search of :meth:`ManagerFlows._related` brings back to choose from."""


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


@dataclass(slots=True)
class _Plan:
    """Pending changes of one pass, applied together."""

    new: list[MemoryRecord] = field(default_factory=list)
    writes: list[ops.Op[Any]] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # embed with the batch (updates)
    touched: set[str] = field(default_factory=set)


MessageLike = Message | Mapping[str, Any] | tuple[str, str]


def _topics(c: prompts.ExtractedMemory) -> tuple[str, ...]:
    return tuple(dict.fromkeys(t.strip() for t in c.topics if t.strip()))


def _ids(hits: Sequence[tuple[str, float] | MemoryRecord]) -> list[str]:
    return [h.id if isinstance(h, MemoryRecord) else h[0] for h in hits]


def _cosine(v: Vector, w: Vector | None) -> float:
    """Cosine of two normalized vectors; 0 (unrelated) for a memory whose vector is gone."""
    return 0.0 if w is None else float(v @ w)


def conversation_text(messages: Sequence[MessageLike]) -> str:
    """Messages as ``role: content`` lines. Raises ValidationError on a bad message."""
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
            lines.append(f"{role}: {content.strip()}")
    if not lines:
        raise ValidationError("no message with content to learn from")
    return "\n".join(lines)


class ManagerFlows:
    """The manager's behaviour as flows over a :class:`MemoryCore`."""

    def __init__(self, core: MemoryCore, config: ManagerConfig, llm_name: str) -> None:
        self.core = core
        self.config = config
        self.llm_name = llm_name

    # ------------------------------------------------------------------ process

    def process(
        self,
        messages: Sequence[MessageLike],
        *,
        user_id: str,
        session_id: str | None = None,
        agent_id: str | None = None,
        team: str | None = None,
        lease: JobLease | None = None,
    ) -> Flow[ManagerResult]:
        """Learn from ``messages``: extract, deduplicate, decide, apply (one transaction).

        With ``lease`` (a claimed background job) the job is marked done in the same
        transaction, so a job's changes land exactly once even if a worker dies.
        Raises LLMOutputError when the extraction answer stays invalid, LLMError when the
        model cannot be reached, ValidationError for bad messages.
        """
        core = self.core
        if not isinstance(messages, Sequence) or isinstance(messages, str):
            raise ValidationError("messages must be a list")
        text = conversation_text(messages)
        core._check_text(text, "conversation")
        extraction = yield from ask(
            prompts.Extraction,
            self._extract_prompt(text),
            operation="extract",
            repairs=self.config.repairs,
        )
        usage = extraction.usage
        versions = [prompts.EXTRACT_VERSION]
        results: list[CandidateResult | None] = []
        candidates: list[prompts.ExtractedMemory] = []
        for n, c in enumerate(extraction.value.memories):
            if n >= self.config.max_candidates:
                reason = f"over max_candidates ({self.config.max_candidates})"
                results.append(CandidateResult(c.text, Outcome.SKIPPED, reason))
                continue
            try:
                core._check_text(c.text)
            except ValidationError as exc:
                results.append(CandidateResult(c.text, Outcome.FAILED, str(exc)))
                continue
            candidates.append(c)
            results.append(None)
        slots = [i for i, r in enumerate(results) if r is None]

        vectors, cache_write = yield from core._vectors([c.text for c in candidates])
        known = {content_hash(c.text): v for c, v in zip(candidates, vectors, strict=True)}
        now = core._now()
        # Only memories of the same team are compared with (and may be changed by) a pass,
        # and an agent's pass only with its own and shared ones (memlane.access's rule, as
        # for MemoryTools and API keys), asked of the store so none crowd out the limit.
        f = visible_filters(Scope(user_id, agent_id), Filters(kinds=LEARNABLE_KINDS, team=team))
        related: list[list[tuple[MemoryRecord, float]]] = []
        for c, v in zip(candidates, vectors, strict=True):
            rel = yield from self._related(c, v, user_id, f, now)
            related.append(rel)

        plan = _Plan()
        to_decide: list[int] = []
        seen: list[tuple[str, Any]] = []  # (normalized text, vector) of earlier candidates
        for n, (c, v, rel) in enumerate(zip(candidates, vectors, related, strict=True)):
            slot = slots[n]
            norm = normalize_text(c.text)
            dup = next(
                (
                    r
                    for r, s in rel
                    if normalize_text(r.text) == norm or s >= self.config.duplicate_threshold
                ),
                None,
            )
            if dup is not None:
                results[slot] = CandidateResult(
                    c.text, Outcome.DUPLICATE, "matches an existing memory", dup.id
                )
                continue
            if any(t == norm or float(v @ w) >= self.config.duplicate_threshold for t, w in seen):
                results[slot] = CandidateResult(
                    c.text, Outcome.DUPLICATE, "repeats an earlier candidate"
                )
                continue
            seen.append((norm, v))
            if rel:
                to_decide.append(n)
            else:
                results[slot] = self._guard(
                    c, partial(self._add, plan, c, c.text, user_id, session_id, agent_id, team)
                )

        if to_decide:
            versions.append(prompts.DECIDE_VERSION)
            try:
                answer = yield from ask(
                    prompts.Decisions,
                    self._decide_prompt(
                        [candidates[n] for n in to_decide], [related[n] for n in to_decide]
                    ),
                    operation="decide",
                    repairs=self.config.repairs,
                )
            except LLMOutputError as exc:
                if isinstance(exc.usage, Usage):  # the failed attempts were paid for too
                    usage = usage + exc.usage
                for n in to_decide:
                    results[slots[n]] = CandidateResult(
                        candidates[n].text, Outcome.FAILED, f"no valid decision: {exc.problems}"
                    )
            else:
                usage = usage + answer.usage
                decided = self._decisions(answer.value, len(to_decide))
                for k, n in enumerate(to_decide):
                    results[slots[n]] = self._guard(
                        candidates[n],
                        partial(
                            self._apply_decision,
                            plan,
                            candidates[n],
                            decided.get(k),
                            [r for r, _ in related[n]],
                            user_id,
                            session_id,
                            agent_id,
                            team,
                        ),
                    )

        final = tuple(r for r in results if r is not None)
        result = ManagerResult(final, usage, tuple(versions))
        _, update_cache = yield from core._vectors(plan.texts, known)
        extra: list[ops.Op[Any]] = [
            cache_write,
            update_cache,
            *plan.writes,
            ops.AppendHistory(tuple(plan.events)),
        ]
        if lease is None:
            yield from core._insert(plan.new, extra, known)
            return result
        # The job's "done" commits with its changes; the lease's lock keeps the heartbeat
        # from renewing (changing the job's version) in between.
        with lease.lock:
            job = lease.job
            done = job.evolve(
                status=JobStatus.DONE,
                version=job.version + 1,
                updated_at=core._now(),
                lease_until=None,
                result=result.to_dict(),
                error=None,
            )
            yield from core._insert(plan.new, [*extra, ops.PutJob(done, job.version)], known)
            lease.job = done
        return result

    def _related(
        self,
        c: prompts.ExtractedMemory,
        v: Vector,
        user_id: str,
        f: Filters,
        now: datetime,
    ) -> Flow[list[tuple[MemoryRecord, float]]]:
        """The existing memories to show the decider with candidate ``c`` (vector ``v``),
        each with its cosine: see :func:`subjects.choose_related`. They come from a vector
        search, a lexical search on the candidate's subject (:func:`subjects.search_words`)
        and the newest memories sharing one of its topics."""
        core, cfg = self.core, self.config
        subject = subjects.subject_of(c.text, _topics(c))
        depth = max(cfg.related_limit, SUBJECT_POOL)
        searches: list[ops.Op[Any]] = [ops.VectorSearch(user_id, f, now, core.model_id, v, depth)]
        if cfg.subject_limit:
            query = subjects.search_words(subject)
            if query:
                searches.append(ops.LexicalSearch(user_id, f, now, query, depth))
            if subject.topics:
                by_topic = replace(f, topics=_topics(c))
                searches.append(ops.ListRecords(user_id, by_topic, now, None, depth, True))
        found = yield from many(searches)
        scores: dict[str, float] = dict(found[0])
        ids = [*scores, *(i for hits in found[1:] for i in _ids(hits))]
        records = yield from one(ops.GetRecords(user_id, tuple(dict.fromkeys(ids))))
        unscored = tuple(dict.fromkeys(r.content_hash for r in records if r.id not in scores))
        stored = (yield from one(ops.GetEmbeddings(core.model_id, unscored))) if unscored else {}
        pool = [
            (r, scores[r.id] if r.id in scores else _cosine(v, stored.get(r.content_hash)))
            for r in records
        ]
        return subjects.choose_related(pool, subject, cfg)

    def _guard(
        self, c: prompts.ExtractedMemory, apply: Callable[[], CandidateResult]
    ) -> CandidateResult:
        """Run one candidate's planning; bad model output fails that candidate alone."""
        try:
            return apply()
        except ValidationError as exc:
            return CandidateResult(c.text, Outcome.FAILED, f"invalid model output: {exc}")

    # ------------------------------------------------------------------ decisions

    def _decisions(self, answer: prompts.Decisions, count: int) -> dict[int, prompts.Decision]:
        out: dict[int, prompts.Decision] = {}
        for d in answer.decisions:
            if 0 <= d.candidate < count and d.candidate not in out:
                out[d.candidate] = d
        return out

    def _apply_decision(
        self,
        plan: _Plan,
        c: prompts.ExtractedMemory,
        d: prompts.Decision | None,
        existing: list[MemoryRecord],
        user_id: str,
        session_id: str | None,
        agent_id: str | None,
        team: str | None,
    ) -> CandidateResult:
        if d is None:
            return CandidateResult(c.text, Outcome.FAILED, "the model gave no decision for it")
        reason = d.reason or d.action.lower()
        if d.action == "NOOP":
            return CandidateResult(c.text, Outcome.SKIPPED, reason)
        if d.action == "ADD":
            return self._add(plan, c, d.text or c.text, user_id, session_id, agent_id, team, reason)
        if d.target is None or not 0 <= d.target < len(existing):
            return CandidateResult(
                c.text, Outcome.FAILED, f"{d.action} names no existing memory shown to it"
            )
        target = existing[d.target]
        if target.id in plan.touched:
            return CandidateResult(
                c.text, Outcome.FAILED, "another candidate already changed that memory"
            )
        now = self.core._now()
        actor = f"memlane-manager:{self.llm_name}"
        if d.action == "DELETE":
            if not self.config.allow_delete:
                return CandidateResult(c.text, Outcome.SKIPPED, "deleting is switched off")
            plan.touched.add(target.id)
            gone = self.core._bump(target, now, deleted_at=now)
            plan.writes.append(ops.WriteRecord(gone, target.version))
            plan.events.append(
                self.core._event(gone, HistoryAction.DELETE, now, actor=actor, reason=reason)
            )
            return CandidateResult(c.text, Outcome.DELETED, reason, None, target.id)
        if not self.config.allow_update:
            return CandidateResult(c.text, Outcome.SKIPPED, "updating is switched off")
        text = self.core._check_text(d.text or c.text)
        topics = _topics(c)
        if d.mode == "refine":
            new = self.core._bump(
                target,
                now,
                text=text,
                content_hash=content_hash(text),
                topics=tuple(dict.fromkeys([*target.topics, *topics])),
                importance=max(target.importance, c.importance),
                context_hash=None,
            )
            plan.touched.add(target.id)
            plan.texts.append(text)
            plan.writes.append(ops.WriteRecord(new, target.version))
            plan.events.append(
                self.core._event(new, HistoryAction.UPDATE, now, actor=actor, reason=reason)
            )
            return CandidateResult(c.text, Outcome.UPDATED, reason, new.id, target.id)
        item = MemoryInput(
            text=text,
            kind=target.kind,
            topics=tuple(dict.fromkeys([*topics, *target.topics])),
            importance=c.importance,
            session_id=session_id,
            agent_id=target.agent_id,  # a shared memory stays shared, an agent's stays its
            team=team or target.team,
            metadata=self._provenance(),
            actor=actor,
        )
        new = self.core._new_record(user_id, item, now)
        closed = self.core._bump(target, now, valid_to=now, superseded_by=new.id)
        plan.touched.add(target.id)
        plan.new.append(new)
        plan.writes.append(ops.WriteRecord(closed, target.version))
        plan.events.append(
            self.core._event(closed, HistoryAction.SUPERSEDE, now, actor=actor, reason=reason)
        )
        return CandidateResult(c.text, Outcome.SUPERSEDED, reason, new.id, target.id)

    def _add(
        self,
        plan: _Plan,
        c: prompts.ExtractedMemory,
        text: str,
        user_id: str,
        session_id: str | None,
        agent_id: str | None,
        team: str | None,
        reason: str = "new information",
    ) -> CandidateResult:
        if not self.config.allow_add:
            return CandidateResult(c.text, Outcome.SKIPPED, "adding is switched off")
        item = MemoryInput(
            text=text,
            kind=c.kind,
            topics=_topics(c),
            importance=c.importance,
            session_id=session_id,
            agent_id=agent_id,
            team=team,
            metadata=self._provenance(),
            actor=f"memlane-manager:{self.llm_name}",
        )
        record = self.core._new_record(user_id, item, self.core._now())
        plan.new.append(record)
        return CandidateResult(c.text, Outcome.ADDED, reason, record.id)

    def _provenance(self) -> dict[str, Any]:
        return {"source": "manager", "model": self.llm_name, "prompt": prompts.EXTRACT_VERSION}

    # ------------------------------------------------------------------ prompts

    def _extract_prompt(self, conversation: str) -> list[ChatMessage]:
        system = self.config.system_message or prompts.EXTRACT_SYSTEM
        if self.config.capture_instructions:
            system += "\nWhat to capture: " + self.config.capture_instructions
        if self.config.additional_instructions:
            system += "\n" + self.config.additional_instructions
        return [
            ChatMessage("system", system),
            ChatMessage("user", "<conversation>\n" + conversation + "\n</conversation>"),
        ]

    def _decide_prompt(
        self,
        candidates: list[prompts.ExtractedMemory],
        related: list[list[tuple[MemoryRecord, float]]],
    ) -> list[ChatMessage]:
        system = prompts.DECIDE_SYSTEM
        if self.config.additional_instructions:
            system += "\n" + self.config.additional_instructions
        blocks = []
        for k, (c, rel) in enumerate(zip(candidates, related, strict=True)):
            shown = [
                {"number": j, "memory": r.text, "since": f"{r.effective_time:%Y-%m-%d}"}
                for j, (r, _) in enumerate(rel)
            ]
            blocks.append({"candidate": k, "new_fact": c.text, "existing": shown})
        body = json.dumps(blocks, ensure_ascii=False, indent=1)
        return [ChatMessage("system", system), ChatMessage("user", body)]

    # ------------------------------------------------------------------ clear

    def clear(self, *, user_id: str, reason: str = "cleared") -> Flow[int]:
        """Soft-delete every current fact and preference of the user (restorable, in
        history). Raises UnsupportedError unless ``allow_clear`` is on."""
        if not self.config.allow_clear:
            raise UnsupportedError("clearing memories is switched off (allow_clear=False)")
        core = self.core
        now = core._now()
        f = Filters(kinds=LEARNABLE_KINDS)
        cursor: str | None = None
        writes: list[ops.Op[Any]] = []
        events = []
        while True:
            page = yield from one(ops.ListRecords(user_id, f, now, cursor, 500))
            for r in page:
                gone = core._bump(r, now, deleted_at=now)
                writes.append(ops.WriteRecord(gone, r.version))
                events.append(core._event(gone, HistoryAction.DELETE, now, reason=reason))
            if len(page) < 500:
                break
            cursor = page[-1].id
        if writes:
            yield from many([*writes, ops.AppendHistory(tuple(events))])
        return len(writes)

    # ------------------------------------------------------------------ optimization

    def optimize(
        self,
        strategies: Sequence[Strategy],
        *,
        user_id: str,
        dry_run: bool = True,
        use_llm: bool = False,
        counter: TokenCounter | None = None,
    ) -> Flow[OptimizationReport]:
        """Plan (and unless ``dry_run``, apply in one transaction) each strategy in turn
        over the user's current facts and preferences. Returns the report with its diff."""
        core = self.core
        check_id("user_id", user_id)
        if isinstance(strategies, str) or not strategies:
            raise ValidationError("give at least one strategy")
        count = counter or count_tokens
        now = core._now()
        memories = yield from self._current(user_id, now)
        before = list(memories)
        ctx = PlanContext(core, now, count, use_llm, repairs=self.config.repairs)
        changes: list[Change] = []
        remaining = list(memories)
        for strategy in strategies:
            planned = yield from strategy.plan(remaining, ctx)
            changes += planned
            gone = {i for c in planned for i in c.sources}
            remaining = [r for r in remaining if r.id not in gone]
            ctx.pending_tokens += sum(count(c.text) for c in planned if c.text is not None)
        by_id = {r.id: r for r in before}
        run_id = new_id()
        actor = "memlane-optimizer"
        created: list[MemoryRecord] = []
        writes: list[ops.Op[Any]] = []
        events: list[HistoryEvent] = []
        written: list[tuple[str, int]] = []
        after_texts = [r.text for r in remaining]
        for c in changes:
            reason = f"optimize {run_id} {c.strategy}: {c.reason}"
            target_id = c.keep
            if c.action == "replace" and c.text is not None:
                first = by_id[c.sources[0]]
                item = MemoryInput(
                    text=c.text,
                    kind=first.kind,
                    topics=tuple(dict.fromkeys(t for i in c.sources for t in by_id[i].topics)),
                    importance=max(by_id[i].importance for i in c.sources),
                    metadata={"source": "optimizer", "optimization": run_id},
                    source_ids=c.sources,
                    actor=actor,
                    team=first.team,
                    agent_id=first.agent_id,
                )
                new = core._new_record(user_id, item, now)
                created.append(new)
                after_texts.append(new.text)
                target_id = new.id
            for i in c.sources:
                old = by_id[i]
                if c.action == "evict":
                    changed = core._bump(old, now, deleted_at=now)
                    action = HistoryAction.DELETE
                else:
                    changed = core._bump(old, now, valid_to=now, superseded_by=target_id)
                    action = HistoryAction.SUPERSEDE
                writes.append(ops.WriteRecord(changed, old.version))
                written.append((changed.id, changed.version))
                events.append(core._event(changed, action, now, actor=actor, reason=reason))
        report = OptimizationReport(
            id=run_id,
            user_id=user_id,
            changes=tuple(changes),
            created=tuple(r.id for r in created),
            memories_before=len(before),
            memories_after=len(after_texts),
            tokens_before=sum(count(r.text) for r in before),
            tokens_after=sum(count(t) for t in after_texts),
            diff=_diff(changes, by_id, {r.id: r for r in created}),
            applied=not dry_run and bool(changes),
            usage=ctx.usage,
            written=tuple(written) + tuple((r.id, r.version) for r in created),
        )
        if not dry_run and changes:
            yield from core._insert(created, [*writes, ops.AppendHistory(tuple(events))])
        return report

    def revert(self, report: OptimizationReport) -> Flow[int]:
        """Undo an applied optimization: its new memories are deleted and every memory it
        superseded or evicted is current again, all recorded in history. Returns how many
        memories changed. Raises ConflictError if one was changed since."""
        core = self.core
        if not report.applied:
            raise ValidationError("that optimization was not applied (dry run)")
        sources = tuple(i for c in report.changes for i in c.sources)
        records = yield from one(ops.GetRecords(report.user_id, (*sources, *report.created)))
        by_id = {r.id: r for r in records}
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
        now = core._now()
        reason = f"revert optimization {report.id}"
        writes: list[ops.Op[Any]] = []
        events: list[HistoryEvent] = []
        for rid in report.created:
            r = by_id.get(rid)
            if r is not None and r.deleted_at is None:
                gone = core._bump(r, now, deleted_at=now)
                writes.append(ops.WriteRecord(gone, r.version))
                events.append(core._event(gone, HistoryAction.DELETE, now, reason=reason))
        for rid in sources:
            r = by_id.get(rid)
            if r is None:
                continue
            back = core._bump(r, now, deleted_at=None, valid_to=None, superseded_by=None)
            writes.append(ops.WriteRecord(back, r.version))
            events.append(core._event(back, HistoryAction.RESTORE, now, reason=reason))
        yield from many([*writes, ops.AppendHistory(tuple(events))])
        return len(writes)

    def _current(self, user_id: str, now: datetime) -> Flow[list[MemoryRecord]]:
        f = Filters(kinds=LEARNABLE_KINDS)
        out: list[MemoryRecord] = []
        cursor: str | None = None
        while True:
            page = yield from one(ops.ListRecords(user_id, f, now, cursor, 1000))
            out += page
            if len(page) < 1000:
                return out
            cursor = page[-1].id


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


def _diff(
    changes: Sequence[Change],
    before: Mapping[str, MemoryRecord],
    created: Mapping[str, MemoryRecord],
) -> str:
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
