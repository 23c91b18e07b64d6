"""Generators that yield effects, and the one pair of drivers that carry them out.

A *flow* is a generator: it yields an effect (a plain value saying what to do: run these
store ops, POST this body, sleep this long), and is resumed with the effect's result, or
has the handler's exception raised at its ``yield``. The flow decides; a handler does the
I/O. :func:`drive` runs a flow with a blocking handler, :func:`adrive` with an awaitable
one, so one flow serves the sync and the async API alike (sans I/O, as httpx's auth
flows). Which effects exist is up to each flow's module; this one knows none of them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

E = TypeVar("E")
R = TypeVar("R")

Catch = type[BaseException] | tuple[type[BaseException], ...]
_Outcome = tuple[Any, BaseException | None]  # the handler's result, or what it raised


def drive(flow: Generator[E, Any, R], handle: Callable[[E], Any], catch: Catch = Exception) -> R:
    """Run ``flow`` to its end: each effect it yields goes to ``handle``, whose result is
    sent back; an exception of type ``catch`` from ``handle`` is raised inside the flow
    (which may handle it). Returns the flow's return value; raises what the flow raises."""
    step = _resume(flow, None, None)
    while not isinstance(step, _Done):
        step = _resume(flow, *_outcome(handle, step, catch))
    return cast(R, step.value)


async def adrive(
    flow: Generator[E, Any, R], handle: Callable[[E], Awaitable[Any]], catch: Catch = Exception
) -> R:
    """:func:`drive` with an awaitable handler, on the running event loop."""
    step = _resume(flow, None, None)
    while not isinstance(step, _Done):
        step = _resume(flow, *await _aoutcome(handle, step, catch))
    return cast(R, step.value)


@dataclass(frozen=True, slots=True)
class _Done:
    value: Any


def _resume(flow: Generator[E, Any, Any], reply: Any, error: BaseException | None) -> Any:
    """The flow's next effect after ``reply`` (or ``error`` raised at its ``yield``), or
    :class:`_Done` with its return value."""
    try:
        return flow.throw(error) if error is not None else flow.send(reply)
    except StopIteration as done:
        return _Done(done.value)


def _outcome(handle: Callable[[E], Any], effect: E, catch: Catch) -> _Outcome:
    try:
        return handle(effect), None
    except catch as exc:
        return None, exc


async def _aoutcome(handle: Callable[[E], Awaitable[Any]], effect: E, catch: Catch) -> _Outcome:
    try:
        return await handle(effect), None
    except catch as exc:
        return None, exc
