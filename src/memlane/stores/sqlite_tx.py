"""Transactions on a SQLite connection opened in autocommit mode (``isolation_level=None``):
the store's batches and its search indexes' bookkeeping run in them."""

from __future__ import annotations

import sqlite3


class transaction:
    """BEGIN (IMMEDIATE when writing) ... COMMIT, or ROLLBACK on any error."""

    def __init__(self, conn: sqlite3.Connection, *, write: bool) -> None:
        self.conn = conn
        self.write = write

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE" if self.write else "BEGIN")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        elif self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
