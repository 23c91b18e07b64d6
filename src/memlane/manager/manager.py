"""MemoryManager (blocking) and AsyncMemoryManager: the flows of
:mod:`memlane.manager.flows` run over a :class:`~memlane.Memory` and a chat model."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any, Self

from memlane.api import AsyncMemory, Memory
from memlane.core.flow import Flow, run_async, run_sync
from memlane.errors import LLMError, NoModelError, ValidationError
from memlane.llm.structured import ask
from memlane.manager import prompts
from memlane.manager.flows import (
    ManagerConfig,
    ManagerFlows,
    ManagerResult,
    MessageLike,
    OptimizationReport,
    conversation_text,
)
from memlane.manager.jobs import JobLease, JobQueue
from memlane.manager.strategies import Strategy
from memlane.models import Job, JobStatus, MemoryRecord, Message, check_id
from memlane.ports.llm import LLM, ChatMessage
from memlane.tokens import TokenCounter

PROCESS_JOB = "process"
MAX_SUMMARY_INPUT_CHARS = 24_000

log = logging.getLogger("memlane.manager")


def _llm_from_env(environ: Mapping[str, str] | None) -> LLM | None:
    from memlane.settings import Settings

    return Settings.from_env(environ).build_llm()


def _payload(
    messages: Sequence[MessageLike],
    session_id: str | None,
    agent_id: str | None,
    team: str | None,
) -> dict[str, Any]:
    conversation_text(messages)  # validate now, not in the worker
    rows = []
    for m in messages:
        if isinstance(m, Message):
            rows.append([m.role, m.content])
        elif isinstance(m, tuple):
            rows.append([m[0], m[1]])
        else:
            rows.append([m.get("role", "user"), m["content"]])
    return {"messages": rows, "session_id": session_id, "agent_id": agent_id, "team": team}


class _ManagerBase:
    def __init__(
        self,
        llm: LLM | None,
        config: ManagerConfig | None,
        overrides: dict[str, Any],
        memory: Memory | AsyncMemory,
    ) -> None:
        self.llm = llm
        config = config or ManagerConfig()
        try:
            self.config = replace(config, **overrides)
        except TypeError as exc:
            raise ValidationError(f"unknown manager option: {exc}") from exc
        name = self.llm.model_id if self.llm is not None else "none"
        self.flows = ManagerFlows(memory.core, self.config, name)

    def _summary_flow(self, session_id: str, user_id: str, max_words: int) -> Flow[MemoryRecord]:
        core = self.flows.core
        if self.llm is None:
            return (yield from core.summarize_session(session_id, user_id=user_id))
        runs = yield from core.get_history(session_id, user_id=user_id)
        messages = [m for run in runs for m in run.messages]
        if not messages:
            return (yield from core.summarize_session(session_id, user_id=user_id))
        # Summarize incrementally: the previous summary stands in for what it covered.
        previous = yield from core.get_summary(session_id, user_id=user_id)
        covered = -1 if previous is None else int(previous.metadata.get("covers_until_seq", -1))
        new = [m for m in messages if m.seq > covered] or messages[-1:]
        text = conversation_text(new)
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
        extra = {"model": self.llm.model_id, "prompt": prompts.SUMMARY_VERSION}
        return (
            yield from core._store_summary(
                session_id, user_id, answer.value.summary.strip(), messages, "llm", extra
            )
        )


class MemoryManager(_ManagerBase):
    """Learns memories from conversations with a chat model, without ever destroying one.

    ``llm``: any :class:`~memlane.ports.llm.LLM`, or None for no model (the environment
    is not read; :meth:`from_env` takes the model from ``MEMLANE_LLM_*``). Keyword options override
    fields of :class:`ManagerConfig` (``allow_delete=False``, ``capture_instructions=...``).
    Without an LLM, :meth:`process` raises LLMError; summaries and optimization fall back
    to extractive methods.
    """

    def __init__(
        self,
        memory: Memory,
        llm: LLM | None = None,
        *,
        config: ManagerConfig | None = None,
        lease: timedelta = timedelta(minutes=5),
        max_attempts: int = 5,
        base_backoff_s: float = 1.0,
        **overrides: Any,
    ) -> None:
        super().__init__(llm, config, overrides, memory)
        self.memory = memory
        self.jobs = JobQueue(
            memory.store,
            {PROCESS_JOB: self._run_job},
            clock=memory.core.clock,
            lease=lease,
            max_attempts=max_attempts,
            base_backoff_s=base_backoff_s,
        )

    @classmethod
    def from_env(
        cls, memory: Memory, environ: Mapping[str, str] | None = None, **options: Any
    ) -> Self:
        """A manager whose chat model comes from ``environ`` (default: ``os.environ``):
        ``MEMLANE_LLM_BASE_URL``, ``MEMLANE_LLM_MODEL``, ``MEMLANE_LLM_API_KEY``; none when
        neither of the first two is set. ``options`` are the constructor's keywords.
        Raises ConfigurationError when only one of them is set."""
        return cls(memory, _llm_from_env(environ), **options)

    def _run(self, flow: Flow[Any]) -> Any:
        self.memory._ensure_setup()
        return run_sync(flow, self.memory.store, self.memory.embedder, self.llm)

    def process(
        self,
        messages: Sequence[MessageLike],
        *,
        user_id: str,
        session_id: str | None = None,
        agent_id: str | None = None,
        team: str | None = None,
    ) -> ManagerResult:
        """Extract memories from ``messages`` and apply ADD/UPDATE/DELETE/NOOP decisions
        in one transaction. See :class:`ManagerResult` for the per-candidate outcomes."""
        result: ManagerResult = self._run(
            self.flows.process(
                messages, user_id=user_id, session_id=session_id, agent_id=agent_id, team=team
            )
        )
        return result

    # ------------------------------------------------------------------ background

    def process_in_background(
        self,
        messages: Sequence[MessageLike],
        *,
        user_id: str,
        session_id: str | None = None,
        agent_id: str | None = None,
        team: str | None = None,
    ) -> Job:
        """Persist a job that will :meth:`process` these messages, and return at once.

        The job survives crashes and restarts; see :meth:`flush`, :meth:`job`. Raises
        ValidationError for bad messages (checked first), NoModelError with no chat model."""
        check_id("user_id", user_id)
        payload = _payload(messages, session_id, agent_id, team)  # bad input first: 4xx
        if self.llm is None:
            raise NoModelError(
                "no chat model: pass llm=, or use MemoryManager.from_env with "
                "MEMLANE_LLM_BASE_URL and MEMLANE_LLM_MODEL set"
            )
        self.memory._ensure_setup()
        job = self.jobs.enqueue(
            PROCESS_JOB,
            payload,
            user_id=user_id,
            session_id=session_id,
            agent_id=agent_id,
        )
        self.jobs.start()
        return job

    def _run_job(self, lease: JobLease) -> None:
        job = lease.job
        p = job.payload
        messages = [(str(role), str(content)) for role, content in p["messages"]]
        self._run(
            self.flows.process(
                messages,
                user_id=job.user_id,
                session_id=p.get("session_id"),
                agent_id=p.get("agent_id"),
                team=p.get("team"),
                lease=lease,
            )
        )

    def start(self) -> None:
        """Start the background worker (also started by the first background job); it
        picks up jobs left unfinished by an earlier process. Without a chat model no
        worker starts: jobs stay pending (each would fail for want of a model) until a
        manager with one runs."""
        self.memory._ensure_setup()
        if self.llm is None:
            log.info("no chat model configured: background jobs wait for a manager with one")
            return
        self.jobs.start()

    def flush(self, timeout: float | None = None, *, user_id: str | None = None) -> bool:
        """Wait for background jobs; False if some were unfinished after ``timeout`` s.
        Raises LLMError when jobs are waiting and this manager has no chat model."""
        self.memory._ensure_setup()
        if self.llm is None and self.jobs.unfinished(user_id):
            raise LLMError(
                "background jobs need a chat model: pass llm=, or use MemoryManager.from_env "
                "with MEMLANE_LLM_BASE_URL and MEMLANE_LLM_MODEL set"
            )
        return self.jobs.flush(timeout, user_id=user_id)

    def job(self, job_id: str, *, user_id: str) -> Job | None:
        """A background job's current status, result or error."""
        self.memory._ensure_setup()
        return self.jobs.get(job_id, user_id=user_id)

    def list_jobs(
        self, *, user_id: str | None = None, statuses: Sequence[JobStatus | str] = ()
    ) -> list[Job]:
        self.memory._ensure_setup()
        return self.jobs.list(user_id=user_id, statuses=tuple(JobStatus(s) for s in statuses))

    def close(self) -> None:
        """Stop the worker; unfinished jobs stay stored and resume on the next start."""
        self.jobs.stop()

    def __enter__(self) -> MemoryManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ others

    def clear(self, *, user_id: str, reason: str = "cleared") -> int:
        """Soft-delete all the user's facts and preferences (needs ``allow_clear``)."""
        n: int = self._run(self.flows.clear(user_id=user_id, reason=reason))
        return n

    def summarize_session(
        self, session_id: str, *, user_id: str, max_words: int = 150
    ) -> MemoryRecord:
        """Summarize a session with the LLM (extractively without one); the summary
        supersedes the previous one and can stand in for old history in a prompt."""
        record: MemoryRecord = self._run(self._summary_flow(session_id, user_id, max_words))
        return record

    def optimize(
        self,
        strategies: Sequence[Strategy],
        *,
        user_id: str,
        dry_run: bool = True,
        use_llm: bool | None = None,
        counter: TokenCounter | None = None,
    ) -> OptimizationReport:
        """Run optimization strategies; ``dry_run`` (default) only reports the diff.
        ``use_llm`` defaults to whether an LLM is configured."""
        llm = self.llm is not None if use_llm is None else use_llm
        report: OptimizationReport = self._run(
            self.flows.optimize(
                strategies, user_id=user_id, dry_run=dry_run, use_llm=llm, counter=counter
            )
        )
        return report

    def revert(self, report: OptimizationReport) -> int:
        """Undo an applied optimization (see :meth:`ManagerFlows.revert`)."""
        n: int = self._run(self.flows.revert(report))
        return n


class AsyncMemoryManager(_ManagerBase):
    """The ``async`` form of :class:`MemoryManager` (same flows, same behaviour).
    Background jobs: use a :class:`MemoryManager` worker over the same store."""

    def __init__(
        self,
        memory: AsyncMemory,
        llm: LLM | None = None,
        *,
        config: ManagerConfig | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__(llm, config, overrides, memory)
        self.memory = memory

    @classmethod
    def from_env(
        cls, memory: AsyncMemory, environ: Mapping[str, str] | None = None, **options: Any
    ) -> Self:
        """Like :meth:`MemoryManager.from_env`."""
        return cls(memory, _llm_from_env(environ), **options)

    async def _run(self, flow: Flow[Any]) -> Any:
        await self.memory._ensure_setup()
        return await run_async(flow, self.memory.store, self.memory.embedder, self.llm)

    async def process(
        self,
        messages: Sequence[MessageLike],
        *,
        user_id: str,
        session_id: str | None = None,
        agent_id: str | None = None,
        team: str | None = None,
    ) -> ManagerResult:
        result: ManagerResult = await self._run(
            self.flows.process(
                messages, user_id=user_id, session_id=session_id, agent_id=agent_id, team=team
            )
        )
        return result

    async def summarize_session(
        self, session_id: str, *, user_id: str, max_words: int = 150
    ) -> MemoryRecord:
        record: MemoryRecord = await self._run(self._summary_flow(session_id, user_id, max_words))
        return record

    async def optimize(
        self,
        strategies: Sequence[Strategy],
        *,
        user_id: str,
        dry_run: bool = True,
        use_llm: bool | None = None,
        counter: TokenCounter | None = None,
    ) -> OptimizationReport:
        llm = self.llm is not None if use_llm is None else use_llm
        report: OptimizationReport = await self._run(
            self.flows.optimize(
                strategies, user_id=user_id, dry_run=dry_run, use_llm=llm, counter=counter
            )
        )
        return report

    async def revert(self, report: OptimizationReport) -> int:
        n: int = await self._run(self.flows.revert(report))
        return n

    async def clear(self, *, user_id: str, reason: str = "cleared") -> int:
        n: int = await self._run(self.flows.clear(user_id=user_id, reason=reason))
        return n
