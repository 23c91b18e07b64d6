"""The database's vectors read by vid, for the codes in the index folder beside it.

The folder keeps no copy of a vector: its code files name each row's vector by the
``vid`` of the database's ``vectors`` table (a vid is never given twice, so a vid names
one vector for good), and a search reads the few hundred it reranks from there, as a
compaction reads the ones it codes again. The reads run on connections of their own (a
small pool, one taken per read), so the scan thread can read while the store's own
connection serves the rest of a search. Each read sees what was committed when it
began: a vector deleted since the folder was synced reads as NaN (the next sync kills
its row), never as another vector.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from memlane.errors import StoreError
from memlane.stores.forks import park, start_afresh_when_forked

if TYPE_CHECKING:
    import numpy as np

    from memlane.stores.codes import VectorSource

__all__ = ["StoredVectors"]

READ = "SELECT vid, vector FROM vectors WHERE vid IN (SELECT value FROM json_each(?))"

IDLE_CONNECTIONS = 4
"""Connections kept for the next read (a read takes one, or opens one when none is
free; one past this many is closed when its read is done)."""


class StoredVectors:
    """Reads vectors from the SQLite database at ``database`` by vid."""

    def __init__(self, database: Path, *, timeout_s: float) -> None:
        self.database = Path(database)
        self.timeout_s = timeout_s
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False
        start_afresh_when_forked(self)

    def _forked(self) -> None:
        """In a forked child: the parent's connections are parked for the life of the
        process, never used or closed here (SQLite's connections do not cross a fork,
        and closing one would touch the parent's locks), and the lock is new."""
        park(*self._idle)
        self._idle, self._pid = [], os.getpid()
        self._lock = threading.Lock()

    def source(self, dim: int) -> VectorSource:
        """A :data:`~memlane.stores.codes.VectorSource` of ``dim``-d vectors."""

        def read(vids: np.ndarray) -> np.ndarray:
            return self.read(vids, dim)

        return read

    def read(self, vids: np.ndarray, dim: int) -> np.ndarray:
        """The float16 vectors (len(vids), dim) of ``vids``: a row of NaN for a vid the
        database does not hold (or holds a vector of another size under). A vector
        stored as int8 is read back at unit length. Raises
        StoreError if the database cannot be read."""
        import numpy as np

        wanted = np.asarray(vids, dtype=np.int64).reshape(-1)
        out = np.full((len(wanted), dim), np.nan, dtype=np.float16)
        if not len(wanted):
            return out
        try:
            with self._connection() as conn:
                rows = conn.execute(READ, (json.dumps(wanted.tolist()),)).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read vectors from {self.database}: {exc}") from exc
        rows = [
            (vid, blob)
            for vid, blob in rows
            if isinstance(blob, bytes) and len(blob) in (2 * dim, dim)  # float16, int8
        ]
        if not rows:
            return out
        found = np.fromiter((vid for vid, _ in rows), dtype=np.int64, count=len(rows))
        if all(len(blob) == 2 * dim for _, blob in rows):  # as written, no rounding again
            matrix = np.frombuffer(b"".join(blob for _, blob in rows), dtype="<f2")
            matrix = matrix.reshape(-1, dim)
        else:
            from memlane.stores.vector_cache import from_blobs

            matrix = from_blobs([blob for _, blob in rows], dim).astype(np.float16)
        order = np.argsort(found, kind="stable")
        found, matrix = found[order], matrix[order]
        at = np.minimum(np.searchsorted(found, wanted), len(found) - 1)
        hit = found[at] == wanted
        out[hit] = matrix[at[hit]]
        return out

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """A connection of the pool for one read, given back after it."""
        with self._lock:
            if self._closed:
                raise StoreError(f"the vectors of {self.database} are closed")
            if self._pid != os.getpid():  # (forked where the hook did not run)
                park(*self._idle)
                self._idle, self._pid = [], os.getpid()
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        finally:
            with self._lock:
                keep = not self._closed and self._pid == os.getpid()
                if keep and len(self._idle) < IDLE_CONNECTIONS:
                    self._idle.append(conn)
                    conn = None
            if conn is not None and self._pid == os.getpid():
                conn.close()

    def _connect(self) -> sqlite3.Connection:
        uri = f"{self.database.absolute().as_uri()}?mode=rw"
        conn = sqlite3.connect(
            uri, uri=True, timeout=self.timeout_s, isolation_level=None, check_same_thread=False
        )
        try:
            # No memory map: each commit of another connection (every search writes)
            # had SQLite map the file afresh, and 800 reads took ~7 ms instead of ~3.
            conn.execute("PRAGMA query_only = ON")
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        """Close the pooled connections; later reads raise StoreError."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            mine = self._pid == os.getpid()
        if mine:
            for conn in idle:
                conn.close()
