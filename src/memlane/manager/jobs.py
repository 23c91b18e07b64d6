"""Background jobs that never block the agent and never lose work.

A job is written to the store before anything runs (``enqueue`` returns once it is
durable). A worker thread claims due jobs (:class:`~memlane.ports.store.ClaimJob`: jobs
of one user run one at a time, oldest first), runs them, and marks them done in the
same transaction as their effect. A failed attempt is retried with exponential backoff
until ``max_attempts``; then the job is ``failed`` with its error, kept for inspection.
A worker that dies leaves its job ``running`` with a lease; once the lease has passed,
any worker — in this process after a restart, or in another — takes it over.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from memlane.errors import ConflictError, LLMError, ValidationError
from memlane.ids import new_id
from memlane.models import Job, JobStatus, check_id
from memlane.ports import store as ops
from memlane.ports.store import Op, Store

log = logging.getLogger("memlane.jobs")


class JobLease:
    """A claimed job as it is now: a heartbeat renews the lease (a new job version)
    while the handler runs. To commit against ``job.version``, :meth:`hold` the lease
    (the heartbeat leaves it alone) and :meth:`release` it after the commit."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.lock = threading.Lock()
        """Guards ``job`` and ``held`` (never held across I/O of the handler)."""
        self.lost = False
        self.held = False

    def hold(self) -> Job:
        """Stop renewing the lease until :meth:`release`; returns the job as stored now,
        whose version a commit must name. Waits for a renewal under way to finish."""
        with self.lock:
            self.held = True
            return self.job

    def release(self, committed: Job | None) -> None:
        """Let the heartbeat renew again; ``committed``: the job as the commit wrote it
        (None when the commit failed)."""
        with self.lock:
            if committed is not None:
                self.job = committed
            self.held = False


def completed(job: Job, result: dict[str, Any], now: datetime) -> Job:
    """``job`` marked done with ``result``, at ``now``: the next version, to be written in
    the transaction that applies the job's effect."""
    return job.evolve(
        status=JobStatus.DONE,
        version=job.version + 1,
        updated_at=now,
        lease_until=None,
        result=result,
        error=None,
    )


Handler = Callable[[JobLease], None]
"""Runs a claimed job; it must mark the job done itself (in the transaction that applies
its effect, with ``PutJob(completed(job, ...), job.version)`` for the job returned by
:meth:`JobLease.hold`), or raise."""


class JobQueue:
    """Persisted jobs plus an optional worker thread that runs them."""

    def __init__(
        self,
        store: Store,
        handlers: dict[str, Handler],
        *,
        clock: Callable[[], datetime],
        lease: timedelta = timedelta(minutes=5),
        poll_s: float = 0.5,
        base_backoff_s: float = 1.0,
        max_backoff_s: float = 300.0,
        max_attempts: int = 5,
    ) -> None:
        self.store = store
        self.handlers = handlers
        self.clock = clock
        self.lease = lease
        self.poll_s = poll_s
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_attempts = max_attempts
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._start_lock = threading.Lock()

    # ------------------------------------------------------------------ producing

    def enqueue(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        user_id: str,
        session_id: str | None = None,
        agent_id: str | None = None,
        delay: timedelta = timedelta(0),
        recorded: Callable[[Sequence[Op[Any]]], Sequence[Op[Any]]] | None = None,
    ) -> Job:
        """Persist a job and wake the worker. Returns the stored job. ``recorded`` is
        given the batch that writes the job and returns what to write in its place (the
        batch with its audit entries, :func:`memlane.core.audit.recorded`)."""
        check_id("user_id", user_id)
        if kind not in self.handlers:
            raise ValidationError(f"unknown job kind {kind!r}")
        now = self.clock()
        job = Job(
            id=new_id(),
            user_id=user_id,
            kind=kind,
            payload=payload,
            status=JobStatus.PENDING,
            created_at=now,
            updated_at=now,
            run_after=now + delay,
            max_attempts=self.max_attempts,
            session_id=session_id,
            agent_id=agent_id,
        )
        batch: Sequence[Op[Any]] = [ops.PutJob(job, 0)]
        self.store.batch(batch if recorded is None else recorded(batch))
        with self._wake:
            self._idle.clear()
            self._wake.notify_all()
        return job

    def get(self, job_id: str, *, user_id: str) -> Job | None:
        check_id("user_id", user_id)
        result: Job | None = self.store.batch([ops.GetJob(user_id, job_id)])[0]
        return result

    def list(
        self, *, user_id: str | None = None, statuses: tuple[JobStatus, ...] = (), limit: int = 100
    ) -> list[Job]:
        result: list[Job] = self.store.batch([ops.ListJobs(user_id, statuses, None, limit)])[0]
        return result

    def unfinished(self, user_id: str | None = None) -> int:
        open_ = (JobStatus.PENDING, JobStatus.RUNNING)
        return len(self.store.batch([ops.ListJobs(user_id, open_, None, 10_000)])[0])

    # ------------------------------------------------------------------ consuming

    def run_once(self, user_id: str | None = None) -> Job | None:
        """Claim and run one due job (of ``user_id``, or of anyone) in this thread.
        Returns it as stored afterwards, or None when nothing was due."""
        now = self.clock()
        claimed: Job | None = self.store.batch([ops.ClaimJob(now, now + self.lease, user_id)])[0]
        if claimed is None:
            return None
        lease = JobLease(claimed)
        if claimed.attempts > claimed.max_attempts:
            # Its worker died during each attempt (or it would have been marked failed).
            return self._failed(lease, RuntimeError("the worker died during the last attempt"))
        handler = self.handlers.get(claimed.kind)
        beat = threading.Event()
        heart = threading.Thread(target=self._heartbeat, args=(lease, beat), daemon=True)
        heart.start()
        try:
            if handler is None:
                raise ValidationError(f"no handler for job kind {claimed.kind!r}")
            handler(lease)
        except Exception as exc:
            beat.set()
            heart.join()
            return self._failed(lease, exc)
        beat.set()
        heart.join()
        after: Job | None = self.store.batch([ops.GetJob(claimed.user_id, claimed.id)])[0]
        return after

    def _heartbeat(self, lease: JobLease, stop: threading.Event) -> None:
        """Renew the lease every third of its length while the job runs."""
        interval = max(self.lease.total_seconds() / 3, 0.05)
        while not stop.wait(interval):
            with lease.lock:
                job = lease.job
                if job.status is not JobStatus.RUNNING:
                    return
                if lease.held:  # a commit against this version is under way
                    continue
                now = self.clock()
                renewed = job.evolve(
                    lease_until=now + self.lease, version=job.version + 1, updated_at=now
                )
                try:
                    self.store.batch([ops.PutJob(renewed, job.version)])
                except ConflictError:
                    lease.lost = True
                    log.warning("job %s: lease lost to another worker", job.id)
                    return
                except Exception:
                    log.exception("job %s: could not renew the lease", job.id)
                    continue
                lease.job = renewed

    def _failed(self, lease: JobLease, exc: Exception) -> Job:
        job = lease.job
        now = self.clock()
        final = job.attempts >= job.max_attempts or isinstance(exc, ValidationError)
        if lease.lost:  # another worker owns the job now; leave it to that one
            owned: Job = self.store.batch([ops.GetJob(job.user_id, job.id)])[0]
            return owned
        wait = min(self.base_backoff_s * 2 ** (job.attempts - 1), self.max_backoff_s)
        wait *= 0.75 + random.random() / 2  # jitter, so retries of many jobs spread out
        error = f"{type(exc).__name__}: {exc}"
        updated = job.evolve(
            status=JobStatus.FAILED if final else JobStatus.PENDING,
            version=job.version + 1,
            updated_at=now,
            lease_until=None,
            run_after=now if final else now + timedelta(seconds=wait),
            error=error,
        )
        level = logging.ERROR if final else logging.WARNING
        log.log(level, "job %s (%s) attempt %d failed: %s", job.id, job.kind, job.attempts, error)
        if not isinstance(exc, LLMError | ConflictError | ValidationError):
            log.debug("job %s traceback", job.id, exc_info=exc)
        try:
            self.store.batch([ops.PutJob(updated, job.version)])
        except ConflictError:  # our lease ran out and another worker took the job over
            current: Job = self.store.batch([ops.GetJob(job.user_id, job.id)])[0]
            return current
        return updated

    def start(self) -> None:
        """Start the worker thread (idempotent; a stopping worker is waited for)."""
        with self._start_lock:
            if self._thread is not None and self._thread.is_alive():
                if not self._stop.is_set():
                    return
                self._thread.join()  # finish the old worker's job before starting anew
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="memlane-jobs", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                ran = self.run_once()
            except Exception:  # the store is down: keep the worker alive, try again later
                log.exception("job worker could not reach the store")
                ran = None
            if ran is None:
                self._idle.set()
                with self._wake:
                    self._wake.wait(self.poll_s)

    def flush(self, timeout: float | None = None, *, user_id: str | None = None) -> bool:
        """Wait until no job (of ``user_id``, or of anyone) is pending or running.

        Without a ``timeout``, runs due jobs in this thread when no worker is started.
        With one, starts the worker (a job in this thread could run past the deadline)
        and returns False if jobs were still unfinished at ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if deadline is not None and (self._thread is None or not self._thread.is_alive()):
            self.start()
        while True:
            if self.unfinished(user_id) == 0:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if self._thread is None or not self._thread.is_alive():
                if self.run_once(user_id) is None:
                    time.sleep(min(self.poll_s, 0.05))
            else:
                with self._wake:
                    self._wake.notify_all()
                time.sleep(0.02)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the worker thread; unfinished jobs stay in the store for later. Returns
        False if the worker was still inside a job after ``timeout`` seconds (it stops
        once that job ends)."""
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        if self._thread.is_alive():
            return False
        self._thread = None
        return True
