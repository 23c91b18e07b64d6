"""The index folder beside a SQLite file when something outside memlane damaged it, or
the database was put back to an older copy: the folder is built again from the database
(the source of truth), never served short, from another timeline, or with an untyped
error; one user's damaged folder leaves every other user's searches alone. And names the
folder could not be made from (a user id that is not valid Unicode) are refused first."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from memlane import Filters, Memory, MemoryInput, StoreError, ValidationError
from memlane.stores.sqlite import SqliteStore
from memlane.testing import FakeEmbedder

N = 12


def _folder(path: Path, user_id: str) -> Path:
    return Path(f"{path}.index") / hashlib.sha256(user_id.encode()).hexdigest()[:32]


def _generation(path: Path, user_id: str) -> str:
    return str(json.loads((_folder(path, user_id) / "state.json").read_text())["generation"])


def _texts(m: Memory, query: str, user_id: str, recipe: str = "lexical") -> list[str]:
    return sorted(h.record.text for h in m.search(query, user_id=user_id, recipe=recipe, limit=50))


def _store(tmp_path: Path) -> Path:
    path = tmp_path / "m.db"
    m = Memory(SqliteStore(path), embedder=FakeEmbedder())
    m.add_many([MemoryInput(f"note {i} about the heron") for i in range(N)], user_id="u")
    m.add("bob keeps goats", user_id="v")
    assert len(_texts(m, "heron", "u")) == N
    m.close()
    return path


def _execute(path: Path, sql: str) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(sql)
        conn.commit()
    finally:
        conn.close()


def _counted_rebuilds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The users whose folders are built afresh from now on, in order."""
    from memlane.stores.sidecar import Sidecar

    rebuilds: list[str] = []
    real = Sidecar.rebuild

    def counting(self: Sidecar, conn: sqlite3.Connection, user_id: str, *a: Any) -> int:
        rebuilds.append(user_id)
        return real(self, conn, user_id, *a)

    monkeypatch.setattr(Sidecar, "rebuild", counting)
    return rebuilds


def _tear_lexical(path: Path) -> None:
    (_folder(path, "u") / "lexical" / "meta.json").write_text("{ torn")


@pytest.mark.parametrize("recipe", ["lexical", "semantic", "hybrid"])
def test_a_damaged_lexical_index_is_built_again(tmp_path: Path, recipe: str) -> None:
    path = _store(tmp_path)
    _tear_lexical(path)
    m = Memory(SqliteStore(path), embedder=FakeEmbedder())
    assert len(_texts(m, "heron", "u", recipe)) == N
    m.close()


@pytest.mark.parametrize("damage", ["folder removed", "meta.json removed", "a file in its place"])
def test_a_missing_lexical_index_is_built_again_not_served_empty(
    tmp_path: Path, damage: str
) -> None:
    path = _store(tmp_path)
    lexical = _folder(path, "u") / "lexical"
    if damage == "meta.json removed":
        (lexical / "meta.json").unlink()
    else:
        shutil.rmtree(lexical)
        if damage == "a file in its place":
            lexical.write_text("foreign")
    m = Memory(SqliteStore(path), embedder=FakeEmbedder())
    m.add("one more heron", user_id="u")
    assert len(_texts(m, "heron", "u")) == N + 1
    m.close()


def test_reindex_and_forget_user_get_past_a_damaged_lexical_index(tmp_path: Path) -> None:
    path = _store(tmp_path)
    _tear_lexical(path)
    m = Memory(SqliteStore(path), embedder=FakeEmbedder())
    m.reindex()
    assert len(_texts(m, "heron", "u")) == N
    m.close()
    _tear_lexical(path)
    m = Memory(SqliteStore(path), embedder=FakeEmbedder())
    m.forget_user("u")
    assert not _folder(path, "u").exists()
    m.close()
    m = Memory(SqliteStore(path), embedder=FakeEmbedder())  # the store opens for the others
    assert _texts(m, "goats", "v") == ["bob keeps goats"]
    assert _texts(m, "heron", "u") == []
    m.close()


def test_a_database_put_back_to_an_older_copy_never_serves_the_newer_folder(
    tmp_path: Path,
) -> None:
    path = tmp_path / "m.db"
    m = Memory(SqliteStore(path), embedder=FakeEmbedder())
    a = m.add("the heron nests by the quarry", user_id="u")
    m.add("bob keeps goats", user_id="v")
    assert _texts(m, "heron", "u") == [a.text]
    m.close()
    shutil.copy(path, tmp_path / "backup.db")

    m = Memory(SqliteStore(path), embedder=FakeEmbedder())
    m.update(a.id, user_id="u", text="the kestrel nests by the quarry")
    assert _texts(m, "kestrel", "u") == ["the kestrel nests by the quarry"]
    m.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    shutil.copy(tmp_path / "backup.db", path)

    m = Memory(SqliteStore(path), embedder=FakeEmbedder())
    for i in range(12):  # another user's writes take the outbox past the folder's position
        m.add(f"bob note {i}", user_id="v")
    assert _texts(m, "heron", "u") == [a.text]
    assert _texts(m, "kestrel", "u") == []
    m.close()


def test_a_folder_whose_nonce_the_database_does_not_hold_is_built_again(tmp_path: Path) -> None:
    """What a crash between the folder's state and the database's record of it leaves."""
    path = _store(tmp_path)
    before = _generation(path, "u")
    _execute(path, "UPDATE index_state SET nonce = 'another' WHERE user_id = 'u'")
    m = Memory(SqliteStore(path), embedder=FakeEmbedder())
    assert len(_texts(m, "heron", "u")) == N
    m.close()
    assert _generation(path, "u") != before


def test_a_folder_recorded_before_nonces_is_taken_as_it_is(tmp_path: Path) -> None:
    """Schema 16 adds the nonce: rows from before hold none, and their folders are judged
    by their position alone (not all built again at the first open after an upgrade)."""
    path = _store(tmp_path)
    before = _generation(path, "u")
    _execute(path, "UPDATE index_state SET nonce = NULL")
    m = Memory(SqliteStore(path), embedder=FakeEmbedder())
    assert len(_texts(m, "heron", "u")) == N
    m.add("one more heron", user_id="u")
    assert len(_texts(m, "heron", "u")) == N + 1
    m.close()
    assert _generation(path, "u") == before


LONE = "x\ud800"
"""A lone surrogate: what Python makes of undecodable bytes (surrogateescape), which no
store can write."""


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.add("the heron nests", user_id=LONE),
        lambda m: m.search("heron", user_id=LONE),
        lambda m: m.add("the heron nests", user_id="u", topics=[LONE]),
        lambda m: m.add("the heron nests", user_id="u", metadata={LONE: 1}),
        lambda m: m.add("the heron nests", user_id="u", metadata={"k": [LONE]}),
        lambda m: m.search("heron", user_id="u", filters=Filters(topics=[LONE])),
        lambda m: m.search("heron", user_id="u", filters=Filters(metadata={"k": LONE})),
        lambda m: m.search("heron", user_id="u", filters=Filters(metadata={LONE: "v"})),
    ],
    ids=[
        "add user",
        "search user",
        "topic",
        "metadata key",
        "metadata value",
        "filter topic",
        "filter value",
        "filter key",
    ],
)
def test_a_lone_surrogate_gives_a_typed_error_and_stores_nothing(
    tmp_path: Path, call: Callable[[Memory], object]
) -> None:
    m = Memory(SqliteStore(tmp_path / "m.db"), embedder=FakeEmbedder())
    with pytest.raises(ValidationError, match="not valid Unicode"):
        call(m)
    assert m.export_rows()[1:] == []
    m.close()


def test_a_file_where_the_index_folder_goes_is_refused_with_a_typed_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "m.db"
    Path(f"{path}.index").write_text("not a folder")
    with pytest.raises(StoreError, match="not a folder"):
        Memory(SqliteStore(path), embedder=FakeEmbedder()).add("the heron", user_id="u")
    assert not path.exists()  # refused before the database was made


@pytest.mark.parametrize("damage", ["removed", "emptied"])
def test_a_missing_code_file_is_built_again_not_served_empty(tmp_path: Path, damage: str) -> None:
    path = _store(tmp_path)
    codes = _folder(path, "u") / "codes-content.bin"
    if damage == "removed":
        codes.unlink()
    else:
        codes.write_bytes(b"")
    m = Memory(SqliteStore(path), embedder=FakeEmbedder())
    assert len(_texts(m, "heron", "u", "semantic")) == N
    m.close()


@pytest.mark.xfail(
    strict=True,
    reason="not fixed: a code file cut to whole rows reads as one a crash left short (its "
    "torn last row cut away, the rows lost applied again from the outbox); the folder "
    "records no row count to tell an outside cut from that",
)
def test_a_code_file_cut_to_whole_rows_is_built_again(tmp_path: Path) -> None:
    path = _store(tmp_path)
    codes = _folder(path, "u") / "codes-content.bin"
    data = codes.read_bytes()
    codes.write_bytes(data[: len(data) // 2])
    m = Memory(SqliteStore(path), embedder=FakeEmbedder())
    assert len(_texts(m, "heron", "u", "semantic")) == N
    m.close()


def test_a_busy_database_at_the_end_of_a_sync_costs_no_rebuild(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recording the applied position meets another process's write lock past the busy
    timeout: the search fails, and the next one applies the same rows again rather than
    building the user's whole folder afresh (the folder must not be a nonce ahead)."""
    path = tmp_path / "m.db"
    m = Memory(SqliteStore(path, busy_timeout_s=0.3), embedder=FakeEmbedder(), sparse=None)
    m.add_many([MemoryInput(f"memory {i} about apples") for i in range(N)], user_id="u")
    assert len(_texts(m, "apples", "u")) == N
    rebuilds = _counted_rebuilds(monkeypatch)
    m.add("one more about pears", user_id="u")
    other = sqlite3.connect(path, isolation_level=None, timeout=0.1)
    other.execute("BEGIN IMMEDIATE")  # another process, writing for a while
    try:
        with pytest.raises(StoreError):
            m.search("pears", user_id="u", recipe="lexical")
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert _texts(m, "pears", "u") == ["one more about pears"]
    assert rebuilds == []
    m.close()


def test_a_busy_database_fails_a_rebuild_before_it_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rebuild records the new folder's nonce first: with the database busy it fails
    before building, leaves the folder it had, and the next search builds it once."""
    path = _store(tmp_path)
    _tear_lexical(path)  # the next search must build the folder again
    before = _generation(path, "u")
    m = Memory(SqliteStore(path, busy_timeout_s=0.3), embedder=FakeEmbedder())
    assert _texts(m, "goats", "v") == ["bob keeps goats"]  # the store is open
    rebuilds = _counted_rebuilds(monkeypatch)
    other = sqlite3.connect(path, isolation_level=None, timeout=0.1)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError):
            m.search("heron", user_id="u", recipe="lexical")
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert _generation(path, "u") == before  # nothing built, nothing put in place
    assert not [p for p in Path(f"{path}.index").iterdir() if ".new-" in p.name]
    assert len(_texts(m, "heron", "u")) == N
    assert len(_texts(m, "heron", "u")) == N
    assert rebuilds == ["u", "u"]  # the one refused, then the one that built it
    m.close()


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.import_rows([{"type": "record", "data": {**_row(), "topics": [LONE]}}]),
        lambda m: m.import_rows([{"type": "record", "data": {**_row(), "actor": LONE}}]),
        lambda m: m.add("the heron nests", user_id="u", actor=LONE),
        lambda m: m.delete(m.list(user_id="u").items[0].id, user_id="u", reason=LONE),
    ],
    ids=["import topic", "import actor", "add actor", "delete reason"],
)
def test_what_no_check_saw_is_refused_by_the_store_and_nothing_is_stored(
    tmp_path: Path, call: Callable[[Memory], object]
) -> None:
    m = Memory(SqliteStore(tmp_path / "m.db"), embedder=FakeEmbedder())
    m.add("bob keeps goats", user_id="u")
    before = m.export_rows()[1:]  # after the header
    with pytest.raises(ValidationError, match="not valid Unicode"):
        call(m)
    assert m.export_rows()[1:] == before
    m.close()


def _row() -> dict[str, Any]:
    """The data of a record row as an export writes it."""
    with Memory("memory://", embedder=FakeEmbedder()) as scratch:
        return dict(scratch.add("the heron nests", user_id="u").to_dict())
