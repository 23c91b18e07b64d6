"""MemoryManager (blocking) and AsyncMemoryManager: each public method is the flow of
the same name in :class:`~memlane.manager.flows.ManagerFlows`, run over a
:class:`~memlane.Memory` (or :class:`~memlane.AsyncMemory`) and a chat model, the way
:mod:`memlane.api` binds the core's flows. Background jobs are the blocking manager's."""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

from memlane.api import AsyncMemory, Memory
from memlane.core import audit as trail
from memlane.core.audit import Reading, Touched
from memlane.core.flow import Flow
from memlane.errors import LLMError, NoModelError, ValidationError
from memlane.manager.flows import ManagerConfig, ManagerFlows, MessageLike, conversation_text
from memlane.manager.jobs import JobLease, JobQueue
from memlane.manager.optimizing import OptimizationReport
from memlane.models import Job, JobStatus, Message, check_id
from memlane.ports.llm import LLM

PROCESS_JOB = "process"
_PROCESS = trail.Call("process")
"""A background job's run, as the audit trail names it (the work of ``process``)."""

P = ParamSpec("P")
R = TypeVar("R")

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


_FlowMethod = Callable[Concatenate[ManagerFlows, P], Flow[R]]


def _optimized(report: OptimizationReport, arguments: Mapping[str, Any]) -> dict[str, Touched]:
    """A dry run of :meth:`MemoryManager.optimize` read the user's memories (an applied
    one is recorded by its changes)."""
    if report.applied:
        return {}
    return {report.user_id: Touched(counts={"memories": report.memories_before})}


_READS: dict[str, Reading] = {"optimize": _optimized}
"""The manager's calls that read (and what they gave), as :data:`memlane.core.audit.READS`."""


def _audited(flow: Callable[..., Any]) -> trail.Method:
    return trail.Method(flow, flow.__name__, _READS.get(flow.__name__))


def _blocking(flow: _FlowMethod[P, R]) -> Callable[Concatenate[MemoryManager, P], R]:
    audited = _audited(flow)

    def method(self: MemoryManager, /, *args: P.args, **kwargs: P.kwargs) -> R:
        call = audited.call(args, kwargs)
        return self.memory.run(flow(self.flows, *args, **kwargs), self.llm, call=call)

    functools.update_wrapper(method, flow)
    return method


def _awaitable(
    flow: _FlowMethod[P, R],
) -> Callable[Concatenate[AsyncMemoryManager, P], Coroutine[Any, Any, R]]:
    audited = _audited(flow)

    async def method(self: AsyncMemoryManager, /, *args: P.args, **kwargs: P.kwargs) -> R:
        call = audited.call(args, kwargs)
        return await self.memory.run(flow(self.flows, *args, **kwargs), self.llm, call=call)

    functools.update_wrapper(method, flow)
    return method


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
        name = None if llm is None else llm.model_id
        self.flows = ManagerFlows(memory.core, self.config, name)


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
        # The queued messages are stored: they go through the scope's PII policy now.
        core = self.memory.core
        payload["messages"] = [
            [role, core.private(user_id, str(content), "message")]
            for role, content in payload["messages"]
        ]
        for _, content in payload["messages"]:  # a refusing injection policy refuses now
            core.screen(user_id, content, "message")
        if self.llm is None:
            raise NoModelError(
                "no chat model: pass llm=, or use MemoryManager.from_env with "
                "MEMLANE_LLM_BASE_URL and MEMLANE_LLM_MODEL set"
            )
        self.memory.setup()
        job = self.jobs.enqueue(
            PROCESS_JOB,
            payload,
            user_id=user_id,
            session_id=session_id,
            agent_id=agent_id,
            recorded=functools.partial(trail.recorded, core, "process_in_background"),
        )
        self.jobs.start()
        return job

    def with_actor(self, actor: str) -> Self:
        """This manager (same model, configuration and job queue) over its memory
        :meth:`~memlane.Memory.with_actor`: the calls it makes are recorded in the audit
        trail as ``actor``'s. Background jobs run as the actor of the manager that
        started the worker. Raises ValidationError."""
        other = copy.copy(self)
        other.memory = self.memory.with_actor(actor)
        return other

    def _run_job(self, lease: JobLease) -> None:
        self.memory.run(self.flows.run_job(lease), self.llm, call=_PROCESS)

    def start(self) -> None:
        """Start the background worker (also started by the first background job); it
        picks up jobs left unfinished by an earlier process. Without a chat model no
        worker starts: jobs stay pending (each would fail for want of a model) until a
        manager with one runs."""
        self.memory.setup()
        if self.llm is None:
            log.info("no chat model configured: background jobs wait for a manager with one")
            return
        self.jobs.start()

    def flush(self, timeout: float | None = None, *, user_id: str | None = None) -> bool:
        """Wait for background jobs; False if some were unfinished after ``timeout`` s.
        Raises LLMError when jobs are waiting and this manager has no chat model."""
        self.memory.setup()
        if self.llm is None and self.jobs.unfinished(user_id):
            raise LLMError(
                "background jobs need a chat model: pass llm=, or use MemoryManager.from_env "
                "with MEMLANE_LLM_BASE_URL and MEMLANE_LLM_MODEL set"
            )
        return self.jobs.flush(timeout, user_id=user_id)

    def job(self, job_id: str, *, user_id: str) -> Job | None:
        """A background job's current status, result or error (its read is recorded in
        the audit trail, as a memory's is)."""
        self.memory.setup()
        found = self.jobs.get(job_id, user_id=user_id)
        self._read_jobs("job", [] if found is None else [found], user_id)
        return found

    def list_jobs(
        self, *, user_id: str | None = None, statuses: Sequence[JobStatus | str] = ()
    ) -> list[Job]:
        """Background jobs (of one user, or of all), oldest first, optionally in some
        statuses; recorded in the audit trail as a read of each user's."""
        self.memory.setup()
        found = self.jobs.list(user_id=user_id, statuses=tuple(JobStatus(s) for s in statuses))
        self._read_jobs("list_jobs", found, user_id)
        return found

    def _read_jobs(self, action: str, jobs: Sequence[Job], user_id: str | None) -> None:
        batch = trail.read_jobs(self.memory.core, action, jobs, user_id)
        if batch:
            self.memory.store.batch(batch)

    def close(self) -> None:
        """Stop the worker; unfinished jobs stay stored and resume on the next start."""
        self.jobs.stop()

    def __enter__(self) -> MemoryManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    process = _blocking(ManagerFlows.process)
    summarize_session = _blocking(ManagerFlows.summarize_session)
    optimize = _blocking(ManagerFlows.optimize)
    revert = _blocking(ManagerFlows.revert)
    clear = _blocking(ManagerFlows.clear)


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

    def with_actor(self, actor: str) -> Self:
        """As :meth:`MemoryManager.with_actor`."""
        other = copy.copy(self)
        other.memory = self.memory.with_actor(actor)
        return other

    process = _awaitable(ManagerFlows.process)
    summarize_session = _awaitable(ManagerFlows.summarize_session)
    optimize = _awaitable(ManagerFlows.optimize)
    revert = _awaitable(ManagerFlows.revert)
    clear = _awaitable(ManagerFlows.clear)
