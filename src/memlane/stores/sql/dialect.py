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

    @property
    def record_select(self) -> str:
        """The select list of a whole record row over alias ``r``."""
        return ", ".join(f"r.{c}" for c in self.record_columns)
