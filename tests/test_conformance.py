"""The shipped conformance suite, run against every built-in backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from memlane.ports.store import Store
from memlane.stores.memory import MemoryStore
from memlane.stores.sqlite import SqliteStore
from memlane.testing import StoreConformance


class TestMemoryStore(StoreConformance):
    def make_store(self) -> Store:
        return MemoryStore()


class TestSqliteInMemory(StoreConformance):
    def make_store(self) -> Store:
        return SqliteStore(":memory:")


class TestSqliteFile(StoreConformance):
    @pytest.fixture(autouse=True)
    def _dir(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.n = 0

    def make_store(self) -> Store:
        self.n += 1
        return SqliteStore(self.dir / f"store{self.n}.db")


class TestSqliteFileFloat16(TestSqliteFile):
    """Vectors kept at two bytes a dimension (``vectors="float16"``; a new database's
    form is int8)."""

    def make_store(self) -> Store:
        self.n += 1
        return SqliteStore(self.dir / f"store{self.n}.db", vectors="float16")
