"""Objects that start afresh in a child forked from their process.

A thread of the parent does not exist in the child, and a lock such a thread held at the
fork stays held there for ever; SQLite's connections must not be used (or closed) on
both sides of a fork. Each object that keeps threads, locks or connections registers
with :func:`start_afresh_when_forked`; in the child, its ``_forked()`` lets go of what
was the parent's. (The checkpoint thread of :mod:`memlane.stores.sqlite_wal` also waits
before a fork, and keeps a hook of its own.)
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol


class Forked(Protocol):
    def _forked(self) -> None:
        """In a forked child: let go of the parent's threads, locks and connections."""
        ...


_LIVE: weakref.WeakSet[Forked] = weakref.WeakSet()
_PARKED: list[object] = []


def park(*connections: object) -> None:
    """Keep a forked child's copies of its parent's connections for the life of the
    process: never used, never closed (closing one here would touch the parent's
    locks)."""
    _PARKED.extend(connections)


def start_afresh_when_forked(obj: Forked) -> None:
    """Call ``obj._forked()`` in each child this process forks while ``obj`` lives."""
    _LIVE.add(obj)


def _in_child() -> None:
    for obj in list(_LIVE):
        obj._forked()


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_in_child)
