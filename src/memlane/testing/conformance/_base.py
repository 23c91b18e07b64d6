"""Shared helpers of the store conformance suite: the base class every area's
mix-in builds on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from memlane.api import Memory
from memlane.ports.store import Store
from memlane.testing.fakes import FakeEmbedder, FixedClock


@contextmanager
def _raises(kind: type[BaseException]) -> Iterator[None]:
    try:
        yield
    except kind:
        return
    raise AssertionError(f"{kind.__name__} was not raised")


def _strip_header(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        (r for r in rows if r["type"] != "header"),
        key=lambda r: (r["type"], str(sorted(r["data"].items()))),
    )


def _day(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, 12, tzinfo=UTC)


class ConformanceBase:
    """What every area's tests use: a fresh store and a memory over it."""

    def make_store(self) -> Store:
        raise NotImplementedError("subclasses return a fresh, empty store")

    def _memory(self, store: Store | None = None) -> tuple[Memory, FixedClock, FakeEmbedder]:
        clock = FixedClock()
        embedder = FakeEmbedder()
        return Memory(store or self.make_store(), embedder=embedder, clock=clock), clock, embedder
