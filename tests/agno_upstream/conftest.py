"""Fixtures that give Agno's own db tests a MemlaneDb where they expect a SqliteDb.

tests/test_agno_upstream.py copies Agno's db test files (from an Agno checkout, never
vendored here) next to this file and runs them. Their ``sqlite_db_real`` is a MemlaneDb
over a fresh in-memory memlane store; the SQLAlchemy hooks their clean-up fixtures call
(``Session()``, ``_get_table``) are inert stand-ins, since every test gets a new store.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from memlane import Memory
from memlane.integrations.agno import MemlaneDb
from memlane.testing import FakeEmbedder


class _NoSqlSession:
    def __enter__(self) -> _NoSqlSession:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, *args: Any) -> None:
        return None

    def commit(self) -> None:
        return None

    def rollback(self) -> None:
        return None


class UpstreamMemlaneDb(MemlaneDb):
    """MemlaneDb with the SQLAlchemy attributes Agno's clean-up fixtures touch."""

    def Session(self) -> _NoSqlSession:  # the name Agno's clean-up fixtures call
        return _NoSqlSession()

    def _get_table(self, *args: Any, **kwargs: Any) -> None:
        return None


@pytest.fixture
def sqlite_db_real() -> Iterator[MemlaneDb]:
    with Memory("memory://", embedder=FakeEmbedder()) as memory:
        yield UpstreamMemlaneDb(memory)
