"""Dispatch shared by the built-in stores (memlane.stores.base): every op of the seam has a
handler on every backend, and a batch holding an op a backend cannot run is refused before
anything is written."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.servers import PostgresServer

from memlane.errors import ConflictError, UnsupportedError
from memlane.models import MemoryKind, MemoryRecord
from memlane.ports import store as ops
from memlane.ports.store import Op
from memlane.stores.base import OpDispatch, handles, should_apply, should_write
from memlane.stores.memory import MemoryStore
from memlane.stores.postgres import PostgresStore
from memlane.stores.sqlite import SqliteStore

SEAM_OPS = {
    value
    for value in vars(ops).values()
    if inspect.isclass(value) and issubclass(value, Op) and value is not Op
}


@dataclass(frozen=True, slots=True)
class Unknown(Op[None]):
    """An op no built-in store handles."""

    user_id: str


def _record(record_id: str = "r1", version: int = 1) -> MemoryRecord:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return MemoryRecord(
        id=record_id,
        user_id="u",
        kind=MemoryKind.FACT,
        text="the sky is blue",
        content_hash="h",
        created_at=now,
        updated_at=now,
        version=version,
    )


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[MemoryStore | SqliteStore | PostgresStore]:
    made: MemoryStore | SqliteStore | PostgresStore
    if request.param == "memory":
        made = MemoryStore()
    elif request.param == "sqlite":
        made = SqliteStore(tmp_path / "s.db")
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        made = PostgresStore(server.new_database("d"), max_connections=2)
    made.setup()
    yield made
    made.close()


@pytest.mark.parametrize("backend", [MemoryStore, SqliteStore, PostgresStore])
def test_every_seam_op_has_a_handler(backend: type[OpDispatch]) -> None:
    assert backend.supported_ops() >= SEAM_OPS, SEAM_OPS - backend.supported_ops()


def test_a_batch_with_an_unknown_op_fails_before_any_write(
    store: MemoryStore | SqliteStore | PostgresStore,
) -> None:
    write = ops.WriteRecord(_record(), expected_version=0)
    with pytest.raises(UnsupportedError, match="cannot run Unknown"):
        store.batch([write, Unknown("u")])
    assert store.batch([ops.GetRecords("u", ("r1",))]) == [[]]


def test_an_async_batch_with_an_unknown_op_fails_before_any_write(
    store: MemoryStore | SqliteStore | PostgresStore,
) -> None:
    write = ops.WriteRecord(_record(), expected_version=0)

    async def run() -> list[object]:
        with pytest.raises(UnsupportedError, match="cannot run Unknown"):
            await store.abatch([write, Unknown("u")])
        return await store.abatch([ops.GetRecords("u", ("r1",))])

    assert asyncio.run(run()) == [[]]


def test_a_subclass_handler_replaces_its_base_handler() -> None:
    class Counting(MemoryStore):
        calls = 0

        @handles(ops.ListUsers)
        def _op_ListUsers(self, op: ops.ListUsers, tx: object) -> list[str]:
            type(self).calls += 1
            return ["from-subclass"]

    store = Counting()
    assert store.batch([ops.ListUsers()]) == [["from-subclass"]]
    assert Counting.calls == 1
    assert MemoryStore().batch([ops.ListUsers()]) == [[]]


def test_version_check() -> None:
    new = ops.WriteRecord(_record(version=1), expected_version=0)
    assert should_apply(new, None)
    with pytest.raises(ConflictError, match="record r1 is at version 1, expected 0") as caught:
        should_apply(new, 1)
    assert (caught.value.expected, caught.value.actual) == (0, 1)
    imported = ops.WriteRecord(_record(version=3), expected_version=None)
    assert should_apply(imported, None) and should_apply(imported, 2)
    assert not should_apply(imported, 3) and not should_apply(imported, 4)
    assert should_write("job j", 2, 3, 2)
    with pytest.raises(ConflictError, match="job j is at version 0, expected 2"):
        should_write("job j", 2, 3, None)
