"""The keyring: each user's data key, wrapped by a master key, in a file of its own.

Keys live apart from the store on purpose: a copy or backup of the database holds only
sealed data, and destroying a user's entry here (``forget_user``) leaves every copy of
their data unreadable. Back the keyring up with the care of a secret, and know that a
backup of it taken before a forget can still open that user's old data.

The file is SQLite with ``secure_delete`` on and a rollback journal (no WAL): a destroyed
key is overwritten in the file, not left in a free page or a log.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from memlane.ciphers.keys import KEY_BYTES, MasterKey
from memlane.errors import ConfigurationError, DecryptionError, EncryptionError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    scope TEXT NOT NULL,          -- 'user' or 'store'
    name TEXT NOT NULL,           -- the user id, or the store key's name
    master_id TEXT NOT NULL,      -- which master key wrapped it
    wrapped BLOB NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (scope, name)
) WITHOUT ROWID;
"""


def _not_a_master_key(value: object) -> str:
    # Never the value itself: a key given as text or bytes, unparsed, is the secret.
    return (
        f"not a master key: a {type(value).__name__} (give LocalMasterKey.parse(text), "
        "LocalMasterKey.from_file(path) or a KmsMasterKey)"
    )


def _context(scope: str, name: str) -> bytes:
    # Binds a wrapped key to its owner: an entry copied onto another user does not open.
    return f"memlane data key\x00{scope}\x00{name}".encode()


class Keyring:
    """Wrapped data keys in the SQLite file at ``path`` (``None``: in memory, gone with
    the process). ``master`` wraps new keys; ``previous`` master keys still unwrap the
    entries they wrapped (during a rotation). Construction does no I/O."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        master: MasterKey,
        *,
        previous: Sequence[MasterKey] = (),
    ) -> None:
        if not isinstance(master, MasterKey):
            raise ConfigurationError(_not_a_master_key(master))
        self.path = None if path is None else Path(path).expanduser()
        self.master = master
        self._masters = {k.key_id: k for k in (*previous, master)}
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._cache: dict[tuple[str, str], bytes | None] = {}
        self._cached_at: bytes | None = None

    def __repr__(self) -> str:
        return f"Keyring({str(self.path) if self.path else ':memory:'!r}, {self.master!r})"

    # ------------------------------------------------------------------ keys

    def get(self, scope: str, name: str) -> bytes | None:
        """The unwrapped key, or None when there is none. Answered from memory while
        the file is unchanged: its change counter, which every commit of any process
        bumps, is read each time, so a key destroyed elsewhere is never served."""
        version = self._version()
        with self._lock:
            fresh = version is not None and version == self._cached_at
            if fresh and (scope, name) in self._cache:
                return self._cache[(scope, name)]
        row = self._query(
            "SELECT master_id, wrapped FROM keys WHERE scope=? AND name=?", scope, name
        )
        key = None if row is None else self._unwrap(scope, name, row[0], row[1])
        with self._lock:
            if version != self._cached_at:
                self._cache.clear()
                self._cached_at = version
            if version is not None:
                self._cache[(scope, name)] = key
        return key

    def get_or_create(self, scope: str, name: str) -> bytes:
        """The key, made (random, wrapped by the master key) when there is none. Two
        processes making the same key at once agree on one. Raises EncryptionError,
        making nothing, when the keyring's keys are wrapped by a master key this one was
        not given (a wrong key, or one a rotation retired): a key made then would not
        open with the right one."""
        found = self.get(scope, name)
        if found is not None:
            return found
        key = secrets.token_bytes(KEY_BYTES)
        wrapped = self.master.wrap(key, _context(scope, name))
        now = datetime.now(UTC).isoformat()
        with self._write() as conn:
            self._check_master(conn)
            conn.execute(
                "INSERT OR IGNORE INTO keys VALUES (?, ?, ?, ?, ?)",
                (scope, name, self.master.key_id, wrapped, now),
            )
        stored = self.get(scope, name)
        if stored is None:  # destroyed between the insert and the read: try once more
            raise EncryptionError("a data key was destroyed while it was being made")
        return stored

    def destroy(self, scope: str, name: str) -> bool:
        """Delete the key (overwritten in the file). Returns whether there was one."""
        with self._write() as conn:
            gone = conn.execute("DELETE FROM keys WHERE scope=? AND name=?", (scope, name))
        return gone.rowcount > 0

    def names(self, scope: str) -> list[str]:
        """The names of the keys of a scope (user ids for ``"user"``), sorted."""
        conn = self._connect()
        with self._lock:
            rows = conn.execute("SELECT name FROM keys WHERE scope=? ORDER BY name", (scope,))
            return [r[0] for r in rows]

    def rotate(self, new_master: MasterKey) -> int:
        """Wrap every key afresh under ``new_master`` in one transaction, so the old
        master key can be retired; the data keys, and so the data, stay as they are.
        Every entry must unwrap with a master key this keyring knows. Returns how many
        keys were rewrapped; afterwards this keyring wraps new keys with ``new_master``."""
        if not isinstance(new_master, MasterKey):
            raise ConfigurationError(_not_a_master_key(new_master))
        with self._write() as conn:
            rows = conn.execute("SELECT scope, name, master_id, wrapped FROM keys").fetchall()
            for scope, name, master_id, wrapped in rows:
                key = self._unwrap(scope, name, master_id, wrapped)
                conn.execute(
                    "UPDATE keys SET master_id=?, wrapped=? WHERE scope=? AND name=?",
                    (new_master.key_id, new_master.wrap(key, _context(scope, name)), scope, name),
                )
        self._masters[new_master.key_id] = new_master
        self.master = new_master
        return len(rows)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._cache.clear()
            self._cached_at = None

    def _version(self) -> bytes | None:
        """The file's change counter (bytes 24-27 of a SQLite header: every commit
        changes it), or None for a keyring in memory (never cached)."""
        if self.path is None:
            return None
        self._connect()
        with self._lock:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY)
            return os.pread(self._fd, 4, 24)

    # ------------------------------------------------------------------ internals

    def _check_master(self, conn: sqlite3.Connection) -> None:
        # Every entry is wrapped by one master key, or by the ones a rotation in progress
        # was given: the first entry (the store key once there is one) says which.
        row = conn.execute("SELECT master_id FROM keys LIMIT 1").fetchone()
        if row is not None and row[0] not in self._masters:
            raise EncryptionError(
                f"the keyring's keys are wrapped by master key {row[0]}, which was not "
                f"given (given: {', '.join(sorted(self._masters))}); no new key is made "
                "under another (after `memlane keys rotate`, restart with the new key)"
            )

    def _unwrap(self, scope: str, name: str, master_id: str, wrapped: bytes) -> bytes:
        master = self._masters.get(master_id)
        if master is None:
            raise DecryptionError(
                f"a key in the keyring was wrapped by master key {master_id}, which was not "
                f"given (given: {', '.join(sorted(self._masters))})"
            )
        return master.unwrap(bytes(wrapped), _context(scope, name))

    def _connect(self) -> sqlite3.Connection:
        with self._lock:
            if self._conn is None:
                target = ":memory:" if self.path is None else str(self.path)
                if self.path is not None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    conn = sqlite3.connect(
                        target, timeout=30, check_same_thread=False, isolation_level=None
                    )
                    conn.execute("PRAGMA secure_delete=ON")
                    conn.execute("PRAGMA journal_mode=DELETE")
                    conn.executescript(_SCHEMA)
                except sqlite3.DatabaseError as exc:
                    raise EncryptionError(f"cannot open the keyring {target}: {exc}") from exc
                if self.path is not None:
                    os.chmod(self.path, 0o600)
                self._conn = conn
            return self._conn

    def _query(self, sql: str, *params: object) -> tuple[str, bytes] | None:
        conn = self._connect()
        with self._lock:
            try:
                row = conn.execute(sql, params).fetchone()
            except sqlite3.DatabaseError as exc:
                raise EncryptionError(f"cannot read the keyring: {exc}") from exc
        return None if row is None else (row[0], row[1])

    def _write(self) -> _WriteTx:
        return _WriteTx(self._connect(), self._lock, self._cache)


class _WriteTx:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` under the keyring's lock (rolled back on error)."""

    def __init__(
        self, conn: sqlite3.Connection, lock: threading.Lock, cache: dict[Any, Any]
    ) -> None:
        self.conn = conn
        self.lock = lock
        self.cache = cache

    def __enter__(self) -> sqlite3.Connection:
        self.lock.acquire()
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            self.lock.release()
            raise EncryptionError(f"cannot write the keyring: {exc}") from exc
        return self.conn

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        try:
            self.cache.clear()
            if kind is None:
                self.conn.execute("COMMIT")
            else:
                self.conn.execute("ROLLBACK")
        except sqlite3.DatabaseError as error:
            raise EncryptionError(f"cannot write the keyring: {error}") from error
        finally:
            self.lock.release()
