"""What the built-in stores share: dispatch from op type to handler, the batch check done
before any work starts, the record version check and the retry loop around a transaction.

A backend marks each handler with :func:`handles`; :class:`OpDispatch` builds the table
from op type to handler once per class, so a batch holding an op the backend cannot run
is refused with UnsupportedError before its transaction begins. Per-dialect I/O (what a
handler executes, how a transaction opens) stays in the backend.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, TypeVar

from memlane.errors import ConflictError, UnsupportedError, ValidationError
from memlane.models import Job, JobStatus
from memlane.ports import store as ops
from memlane.ports.store import Op

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

_MARK = "__memlane_handles__"


def handles(*op_types: type[Op[Any]]) -> Callable[[F], F]:
    """Mark a method as the handler of ``op_types`` in an :class:`OpDispatch` subclass
    (one method may run several ops that are alike, e.g. those built from one table)."""

    def mark(method: F) -> F:
        setattr(method, _MARK, op_types)
        return method

    return mark


class OpDispatch:
    """Base of a store whose handlers are marked with :func:`handles`."""

    _handlers: ClassVar[dict[type[Op[Any]], Callable[..., Any]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        by_name: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):  # a subclass's method replaces its base's
            by_name.update(vars(klass))
        # Later names win: a subclass's new handler of an op replaces its base's.
        cls._handlers = {
            op_type: fn for fn in by_name.values() for op_type in getattr(fn, _MARK, ())
        }

    @classmethod
    def supported_ops(cls) -> frozenset[type[Op[Any]]]:
        """The op types this store can run."""
        return frozenset(cls._handlers)

    def check_supported(self, batch: Sequence[Op[Any]]) -> None:
        """Raise UnsupportedError naming the first op in ``batch`` this store cannot run;
        called before a batch starts, so nothing is written."""
        for op in batch:
            if type(op) not in self._handlers:
                raise UnsupportedError(f"{type(self).__name__} cannot run {type(op).__name__}")

    def _handler(self, op: Op[Any]) -> Callable[..., Any]:
        """The bound handler of ``op``. Raises UnsupportedError."""
        fn = self._handlers.get(type(op))
        if fn is None:
            raise UnsupportedError(f"{type(self).__name__} cannot run {type(op).__name__}")
        bound: Callable[..., Any] = fn.__get__(self, type(self))
        return bound


def check_expected(what: str, expected: int | None, actual: int) -> None:
    """Raise ConflictError when ``what`` (e.g. ``"job j1"``) is stored at version
    ``actual`` and the writer expected another; ``expected=None`` checks nothing."""
    if expected is not None and actual != expected:
        raise ConflictError(
            f"{what} is at version {actual}, expected {expected}",
            expected=expected,
            actual=actual,
        )


def should_write(what: str, expected: int | None, version: int, actual: int | None) -> bool:
    """Whether a write of ``what`` at ``version`` goes over the stored row at version
    ``actual`` (None: no row). Expecting a version is compare-and-swap (0: must not
    exist yet); expecting none is an import, which never replaces a row as new or newer.
    Raises ConflictError when the stored version is not the expected one."""
    check_expected(what, expected, 0 if actual is None else actual)
    return expected is not None or actual is None or actual < version


def refuse_unencodable(exc: UnicodeEncodeError) -> ValidationError:
    """The error for a value the database driver could not encode (a lone surrogate in a
    string the checks before did not see): the batch wrote nothing (its transaction is
    rolled back), and the caller gave bad input."""
    return ValidationError(f"a value is not valid Unicode ({exc.reason}); nothing was stored")


def should_apply(op: ops.WriteRecord | ops.PutJob, actual: int | None) -> bool:
    """:func:`should_write` for a record or job write over the stored version ``actual``."""
    if isinstance(op, ops.WriteRecord):
        return should_write(
            f"record {op.record.id}", op.expected_version, op.record.version, actual
        )
    return should_write(f"job {op.job.id}", op.expected_version, op.job.version, actual)


def claim(job: Job, op: ops.ClaimJob) -> Job:
    """``job`` as ``op`` claims it: running, one more attempt, leased until
    ``op.lease_until``."""
    return job.evolve(
        status=JobStatus.RUNNING,
        attempts=job.attempts + 1,
        lease_until=op.lease_until,
        updated_at=op.now,
        version=job.version + 1,
    )


RetryAfter = Callable[[Exception, int], "float | None"]
"""Given a driver error and the number of attempts made, seconds to wait before running
the transaction again, or None to give up."""


class Retries:
    """The retry policy of one batch: which driver errors may be retried, how long to wait,
    and the typed error raised when giving up."""

    def __init__(
        self,
        driver_errors: type[Exception] | tuple[type[Exception], ...],
        retry_after: RetryAfter,
        mapped: Callable[[Exception], Exception],
    ) -> None:
        self.driver_errors = driver_errors
        self.retry_after = retry_after
        self.mapped = mapped
        self.attempts = 0

    def delay(self, exc: Exception) -> float:
        """Seconds to wait before the next attempt after ``exc``; raises ``mapped(exc)``
        when the policy gives up."""
        self.attempts += 1
        delay = self.retry_after(exc, self.attempts)
        if delay is None:
            raise self.mapped(exc) from exc
        return delay


def retrying(attempt: Callable[[], T], retries: Retries) -> T:
    """Run ``attempt`` (one whole transaction) until it succeeds or ``retries`` gives up."""
    while True:
        try:
            return attempt()
        except retries.driver_errors as exc:
            time.sleep(retries.delay(exc))


async def aretrying(attempt: Callable[[], Awaitable[T]], retries: Retries) -> T:
    """:func:`retrying` for a transaction run on the event loop."""
    while True:
        try:
            return await attempt()
        except retries.driver_errors as exc:
            await asyncio.sleep(retries.delay(exc))
