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
from typing import Any, TypeVar

E = TypeVar("E")
R = TypeVar("R")

Catch = type[BaseException] | tuple[type[BaseException], ...]


def drive(flow: Generator[E, Any, R], handle: Callable[[E], Any], catch: Catch = Exception) -> R:
    """Run ``flow`` to its end: each effect it yields goes to ``handle``, whose result is
    sent back; an exception of type ``catch`` from ``handle`` is raised inside the flow
    (which may handle it). Returns the flow's return value; raises what the flow raises."""
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = flow.throw(error) if error is not None else flow.send(reply)
        except StopIteration as done:
            result: R = done.value
            return result
        reply, error = None, None
        try:
            reply = handle(effect)
        except catch as exc:
            error = exc


async def adrive(
    flow: Generator[E, Any, R], handle: Callable[[E], Awaitable[Any]], catch: Catch = Exception
) -> R:
    """:func:`drive` with an awaitable handler, on the running event loop."""
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = flow.throw(error) if error is not None else flow.send(reply)
        except StopIteration as done:
            result: R = done.value
            return result
        reply, error = None, None
        try:
            reply = await handle(effect)
        except catch as exc:
            error = exc
