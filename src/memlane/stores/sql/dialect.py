"""What differs between the SQL databases memlane stores in, as far as the SQL written
once for both (:mod:`.filters`, :mod:`.statements`) needs to know."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

Clauses = tuple[list[str], list[Any]]
"""SQL conditions (joined with AND) and their parameters, in order."""


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one database spells what the shared SQL needs."""

    mark: str
    """The parameter placeholder (``?``, ``%s``)."""
    time: Callable[[datetime], Any]
    """A time as the database's parameter."""
    any_of: Callable[[str, list[Any]], Clauses]
    """``column`` holds one of the values."""
    any_topic: Callable[[list[str]], Clauses]
    """The record (alias ``r``) has one of the topics."""
    metadata_equals: Callable[[str, Any], Clauses]
    """The record's metadata has ``key`` equal to ``value`` (JSON types compared)."""
    record_columns: tuple[str, ...]
    """The columns of a whole record row, in the order its row codec reads them."""
    unquarantined: str
    """The record (alias ``r``) is not quarantined: its ``quarantine`` list is empty."""
    history_select: str = "*"
    """The select list of a whole history row (of table ``history``, not aliased)."""
    lock: str = ""
    """What ends a read of a row the transaction then writes (`` FOR UPDATE``), if the
    database locks rows."""
    lateral: bool = False
    """Whether a recursive query's step reads its rows through ``CROSS JOIN LATERAL``
    (PostgreSQL, which allows one reference to the recursive table in a step) rather than
    through two recursive steps (SQLite, which has no LATERAL)."""

    column_reads: tuple[tuple[str, str], ...] = ()
    """Record columns read through an expression over alias ``r`` (by name) rather than
    as stored: SQLite keeps a time equal to ``created_at`` as ``''``."""
    valid_from: str = "COALESCE(r.valid_from, r.created_at)"
    """When the record (alias ``r``) became valid: its ``valid_from``, else its
    creation."""

    @property
    def record_select(self) -> str:
        """The select list of a whole record row over alias ``r``."""
        reads = dict(self.column_reads)
        return ", ".join(reads.get(c, f"r.{c}") for c in self.record_columns)
