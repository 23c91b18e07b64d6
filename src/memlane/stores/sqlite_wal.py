"""The SQLite store's write-ahead log, copied into the database file on a thread of the
process instead of in the write that filled it.

SQLite copies the log into the database (a checkpoint) inside the commit that leaves the
log past ``wal_autocheckpoint`` pages (1,000 by default). Every search writes (its hits'
access counts, its audit entry), so at a million memories one search in ~80 paid that
copy, ~24 ms of page writes and a sync, and the search p99 was 29 ms instead of 19
(bench/scale.md, 2026-12-06). The store's connection now checkpoints by itself only past
:data:`BACKSTOP_PAGES`; below that, :class:`WalCheckpoints` runs a passive checkpoint
(which waits for no reader or writer) on a connection and thread of its own, shortly
after writes. Nothing changes for durability: a commit is durable in the log either way,
and a checkpoint cut short by a crash is redone by SQLite at the next open.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

BACKSTOP_PAGES = 10_000
"""Pages (~40 MB) past which a commit of the store's own connection still checkpoints, as
SQLite does by default at 1,000: the log stays bounded if the thread cannot keep up or
cannot start."""

DELAY_S = 0.2
"""How long after a write the thread checkpoints: the writes of that time (a few dozen
searches') are copied in one go."""

IDLE_S = 5.0
"""How long the thread waits for another write before it ends (a new write starts it
again)."""


class WalCheckpoints:
    """Passive checkpoints of the database at ``path`` on one thread, asked for by
    :meth:`wrote` after each committed write."""

    def __init__(self, path: str) -> None:
        # Absolute now, as the store's own connection opened it: a later chdir must not
        # point the thread at another file.
        self.path = os.path.abspath(path)
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._due = False
        self._paused = 0
        self._running = False
        self._closed = False
        self.checkpoints = 0
        """Checkpoints run (for tests and the curious)."""
        _LIVE.add(self)

    def wrote(self) -> None:
        """A write committed: checkpoint soon (on the thread; started if need be)."""
        with self._cond:
            if self._closed or (self._due and self._thread is not None):
                return  # asked already: waking the thread for nothing costs the GIL
            self._due = True
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="memlane-wal", daemon=True)
                try:
                    thread.start()
                except RuntimeError:  # a process shutting down: the backstop stays
                    self._due = False
                    return
                self._thread = thread
            self._cond.notify_all()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._due or self._closed, IDLE_S)
                    if not self._closed and self._due:
                        # Let the writes of the next moment gather (woken early by close).
                        self._cond.wait_for(lambda: self._closed, DELAY_S)
                        self._cond.wait_for(lambda: not self._paused or self._closed)
                    if self._closed or not self._due:
                        # Gone before the lock is let go: a write after this starts a
                        # new thread rather than count on this one.
                        self._thread = None
                        return
                    self._due, self._running = False, True
                try:
                    if conn is None:
                        uri = f"{Path(self.path).as_uri()}?mode=rw"
                        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=0)
                    (busy, _, _) = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if not busy:  # else another connection was checkpointing: it copies
                        self.checkpoints += 1
                except sqlite3.Error as exc:  # the backstop covers what is not copied here
                    log.debug("a background checkpoint of %s failed: %s", self.path, exc)
                finally:
                    with self._cond:
                        self._running = False
                        self._cond.notify_all()
        finally:
            if conn is not None:
                conn.close()
            with self._cond:
                if self._thread is threading.current_thread():  # ended by an error
                    self._thread = None
                    self._running = False
                self._cond.notify_all()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No checkpoint runs here meanwhile (one under way is waited for): the store's
        own checkpoint that empties the log after an erasure must not find the log busy."""
        self._hold()
        try:
            yield
        finally:
            self._release()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until no checkpoint is due or under way (True), or ``timeout_s`` passed."""
        with self._cond:
            return self._cond.wait_for(lambda: not (self._due or self._running), timeout_s)

    def close(self) -> None:
        """Stop: a checkpoint under way is finished, none is started (closing the last
        connection to the database checkpoints it anyway)."""
        with self._cond:
            self._closed = True
            thread = self._thread
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _hold(self) -> None:
        """No checkpoint under way (one is waited for) and none started until
        :meth:`_release`: around an erasure's own checkpoint (:meth:`paused`) and a fork
        of the process. SQLite keeps the locks of a process's connections in memory the
        child copies: a fork in mid-checkpoint left the child's view of the database
        checkpoint-locked for good (every later checkpoint refused, erased text kept in
        the log, the log growing)."""
        with self._cond:
            self._paused += 1
            self._cond.wait_for(lambda: not self._running)

    def _release(self) -> None:
        with self._cond:
            self._paused -= 1
            self._cond.notify_all()

    def _forked(self) -> None:
        """In a child forked from this process: the parent's thread is not here, and a
        lock it held would stay held for ever; start afresh (the connection it used
        belongs to the parent and is never touched here)."""
        self._cond = threading.Condition()
        self._thread = None
        self._due = self._running = False
        self._paused = 0


_LIVE: weakref.WeakSet[WalCheckpoints] = weakref.WeakSet()


_HELD: list[WalCheckpoints] = []
"""Those held off while this process forks (strong references until it has)."""


def _before_fork() -> None:
    _HELD[:] = list(_LIVE)
    for checkpoints in _HELD:
        checkpoints._hold()


def _after_fork_in_parent() -> None:
    for checkpoints in _HELD:
        checkpoints._release()
    _HELD.clear()


def _after_fork_in_child() -> None:
    for checkpoints in list(_LIVE):
        checkpoints._forked()
    _HELD.clear()


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
