"""The memory manager's behaviour, written once as flows (:mod:`memlane.core.flow`) over
the store, the embedder and the chat model. :class:`~memlane.manager.MemoryManager` and
:class:`~memlane.manager.AsyncMemoryManager` bind each public flow to a blocking or an
async runner, the way :mod:`memlane.api` binds :class:`~memlane.Memory`.

A learning pass is in :mod:`memlane.manager.learning` (extract, gather, triage, decide,
plan, apply), optimization in :mod:`memlane.manager.optimizing`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from memlane.core import sessions
from memlane.core.base import Core
from memlane.core.flow import Flow
from memlane.errors import UnsupportedError, ValidationError
from memlane.llm.structured import ask
from memlane.manager import learning, optimizing, planning, prompts
from memlane.manager.jobs import JobLease
from memlane.manager.optimizing import OptimizationReport
from memlane.manager.results import (
    CandidateResult,
    ManagerConfig,
    ManagerResult,
    MessageLike,
    Outcome,
    conversation_text,
)
from memlane.manager.strategies import Strategy
from memlane.models import MemoryRecord
from memlane.ports.llm import ChatMessage
from memlane.tokens import TokenCounter, count_tokens

__all__ = [
    "CandidateResult",
    "ManagerConfig",
    "ManagerFlows",
    "ManagerResult",
    "MessageLike",
    "OptimizationReport",
    "Outcome",
    "conversation_text",
]

MAX_SUMMARY_INPUT_CHARS = 24_000


class ManagerFlows:
    """The manager's behaviour as flows over a :class:`Core`. ``llm_id``: the chat
    model's name, None when there is none (summaries and optimization are extractive)."""

    def __init__(self, core: Core, config: ManagerConfig, llm_id: str | None) -> None:
        self.core = core
        self.config = config
        self.llm_id = llm_id

    # ------------------------------------------------------------------ learning

    def process(
        self,
        messages: Sequence[MessageLike],
        *,
        user_id: str,
        session_id: str | None = None,
        agent_id: str | None = None,
        team: str | None = None,
    ) -> Flow[ManagerResult]:
        """Extract memories from ``messages`` and apply ADD/UPDATE/DELETE/NOOP decisions
        in one transaction. See :class:`ManagerResult` for the per-candidate outcomes.
        What is extracted is ``inferred`` (its trust). Under the default injection policy
        a message holding instruction-like content is withheld from the model, and an
        extracted memory holding some is added quarantined without being shown to the
        decider; a refusing policy raises InjectionRefusedError for such a message.

        Raises LLMOutputError when the extraction answer stays invalid, LLMError when the
        model cannot be reached (NoModelError without one), ValidationError for bad
        messages, ConflictError when a memory changed while the pass ran (nothing written).
        """
        scope = learning.PassScope(user_id, session_id, agent_id, team)
        return (yield from self.learn(messages, scope))

    def run_job(self, lease: JobLease) -> Flow[ManagerResult]:
        """:meth:`process` a claimed background job's messages; the job is marked done in
        the same transaction as its changes, so they land exactly once."""
        job = lease.job
        p = job.payload
        messages = [(str(role), str(content)) for role, content in p["messages"]]
        scope = learning.PassScope(
            job.user_id, p.get("session_id"), p.get("agent_id"), p.get("team")
        )
        return (yield from self.learn(messages, scope, lease))

    def learn(
        self,
        messages: Sequence[MessageLike],
        scope: learning.PassScope,
        lease: JobLease | None = None,
    ) -> Flow[ManagerResult]:
        """One pass, phase by phase (see :mod:`memlane.manager.learning`)."""
        core, config = self.core, self.config
        if not isinstance(messages, Sequence) or isinstance(messages, str):
            raise ValidationError("messages must be a list")
        shown = learning.shown(scope.user_id, core)
        conversation = core.check_text(conversation_text(messages, shown), "conversation")
        # What the model reads is what the scope's PII policy would store.
        conversation = core.private(scope.user_id, conversation, "conversation")
        extraction = yield from learning.extract(conversation, config)
        prepare = learning.prepared(scope.user_id, core)
        candidates, settled = learning.screen(extraction.value.memories, config, prepare)
        candidates = [replace(c, quarantine=core.screen(scope.user_id, c.text)) for c in candidates]
        gathered = yield from learning.gather(candidates, scope, core.now(), core, config)
        triaged = learning.triage(gathered.candidates, config.duplicate_threshold)
        decided = learning.Decided()
        if triaged.to_decide:
            decided = yield from learning.decide(triaged.to_decide, config)
        rules = planning.Rules(scope, config, core.now(), self.llm_id or "none", core)
        plan = planning.plan(triaged, decided, rules)
        versions = [prompts.EXTRACT_VERSION]
        if triaged.to_decide:
            versions.append(prompts.DECIDE_VERSION)
        outcomes = tuple(r for _, r in sorted({**settled, **plan.results}.items()))
        result = ManagerResult(outcomes, extraction.usage + decided.usage, tuple(versions))
        yield from planning.apply(plan, gathered, core, result, lease)
        return result

    # ------------------------------------------------------------------ summaries

    def summarize_session(
        self, session_id: str, *, user_id: str, max_words: int = 150
    ) -> Flow[MemoryRecord]:
        """Summarize a session with the LLM (extractively without one); the summary
        supersedes the previous one and can stand in for old history in a prompt."""
        core = self.core
        messages = (
            []
            if self.llm_id is None
            else (yield from sessions.summarizable(core, session_id, user_id=user_id))
        )
        if not messages:
            return (yield from sessions.summarize_session(core, session_id, user_id=user_id))
        # Summarize incrementally: the previous summary stands in for what it covered.
        previous = yield from sessions.get_summary(core, session_id, user_id=user_id)
        covered = -1 if previous is None else int(previous.metadata.get("covers_until_seq", -1))
        text = conversation_text([m for m in messages if m.seq > covered] or messages[-1:])
        if len(text) > MAX_SUMMARY_INPUT_CHARS:  # keep the newest part
            text = "...\n" + text[-MAX_SUMMARY_INPUT_CHARS:]
        if previous is not None:
            text = f"(summary so far: {previous.text})\n{text}"
        answer = yield from ask(
            prompts.Summary,
            [
                ChatMessage("system", prompts.SUMMARY_SYSTEM.format(max_words=max_words)),
                ChatMessage("user", "<conversation>\n" + text + "\n</conversation>"),
            ],
            operation="summarize",
            repairs=self.config.repairs,
        )
        summary = answer.value.summary.strip()
        extra = {"model": self.llm_id, "prompt": prompts.SUMMARY_VERSION}
        return (
            yield from sessions.store_summary(
                core, session_id, user_id, summary, messages, "llm", extra
            )
        )

    # ------------------------------------------------------------------ optimization

    def optimize(
        self,
        strategies: Sequence[Strategy],
        *,
        user_id: str,
        dry_run: bool = True,
        use_llm: bool | None = None,
        counter: TokenCounter | None = None,
    ) -> Flow[OptimizationReport]:
        """Run optimization strategies over the user's current facts and preferences,
        each planning over what the ones before left; ``dry_run`` (default) only reports
        the diff, else every change is applied in one transaction. ``use_llm`` defaults
        to whether a chat model is configured. Raises ValidationError with no strategy."""
        return (
            yield from optimizing.optimize(
                self.core,
                strategies,
                user_id,
                dry_run=dry_run,
                use_llm=self.llm_id is not None if use_llm is None else use_llm,
                count=counter or count_tokens,
                repairs=self.config.repairs,
            )
        )

    def revert(self, report: OptimizationReport) -> Flow[int]:
        """Undo an applied optimization: its new memories are deleted and every memory it
        superseded or evicted is current again, all recorded in history. Returns how many
        memories changed. Raises ConflictError if one was changed since."""
        return (yield from optimizing.revert(self.core, report))

    def clear(self, *, user_id: str, reason: str = "cleared") -> Flow[int]:
        """Soft-delete every current fact and preference of the user (restorable, in
        history); returns how many. Raises UnsupportedError unless ``allow_clear`` is on."""
        if not self.config.allow_clear:
            raise UnsupportedError("clearing memories is switched off (allow_clear=False)")
        return (yield from optimizing.clear(self.core, user_id, reason))
