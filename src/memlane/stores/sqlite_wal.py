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
        self.path = path
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
                    return
                self._thread = thread
            self._cond.notify_all()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._due or self._closed, IDLE_S)
                    if self._closed or not self._due:
                        return
                    # Let the writes of the next moment gather (woken early by close).
                    self._cond.wait_for(lambda: self._closed, DELAY_S)
                    if self._closed:
                        return
                    self._cond.wait_for(lambda: not self._paused or self._closed)
                    if self._closed:
                        return
                    self._due, self._running = False, True
                try:
                    if conn is None:
                        uri = f"{Path(self.path).absolute().as_uri()}?mode=rw"
                        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=0)
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
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
                if self._thread is threading.current_thread():
                    self._thread = None
                self._running = False
                self._cond.notify_all()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No checkpoint runs here meanwhile (one under way is waited for): the store's
        own checkpoint that empties the log after an erasure must not find the log busy."""
        with self._cond:
            self._paused += 1
            self._cond.wait_for(lambda: not self._running)
        try:
            yield
        finally:
            with self._cond:
                self._paused -= 1
                self._cond.notify_all()

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

    def _forked(self) -> None:
        """In a child forked from this process: the parent's thread is not here, and a
        lock it held would stay held for ever; start afresh (the connection it used
        belongs to the parent and is never touched here)."""
        self._cond = threading.Condition()
        self._thread = None
        self._due = self._running = False
        self._paused = 0


_LIVE: weakref.WeakSet[WalCheckpoints] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for checkpoints in list(_LIVE):
        checkpoints._forked()


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
