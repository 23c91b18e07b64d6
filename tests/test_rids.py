"""A record's rid (the number the search indexes beside a SQLite file know it by) is
never given to another record, even after the record with the largest rid is gone, so a
search that reads the indexes while another process deletes and writes finds nothing
under a deleted record's rid."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from memlane import Memory, MemoryKind, NotFoundError
from memlane.stores.sqlite import SqliteStore
from memlane.testing import FakeEmbedder


def _rids(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT text, rid FROM records").fetchall())
    finally:
        conn.close()


def test_the_rid_of_the_newest_record_is_not_given_again_after_it_is_gone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "m.db"
    m = Memory(SqliteStore(path), embedder=FakeEmbedder())
    m.add("gardening notes", user_id="u")
    last = m.add("door code", user_id="u", kind=MemoryKind.EPISODE, session_id="s")
    m.delete_session("s", user_id="u")  # the record with the largest rid, removed
    with pytest.raises(NotFoundError):
        m.get(last.id, user_id="u")
    m.close()
    m = Memory(SqliteStore(path), embedder=FakeEmbedder())  # and after a restart
    m.add("lunch at noon", user_id="u")
    m.close()
    assert _rids(path) == {"gardening notes": 1, "lunch at noon": 3}


@pytest.mark.parametrize("recipe", ["lexical", "semantic", "hybrid"])
def test_a_search_racing_another_process_never_finds_a_new_record_by_a_deleted_ones_words(
    tmp_path: Path, recipe: str
) -> None:
    """The other process deletes a session and writes a record between this process's
    bringing the user's indexes up to date and its search's read."""
    path = tmp_path / "m.db"
    ours_store, theirs_store = SqliteStore(path), SqliteStore(path)
    ours = Memory(ours_store, embedder=FakeEmbedder())
    theirs = Memory(theirs_store, embedder=FakeEmbedder())
    ours.add("gardening notes", user_id="u")
    code = ours.add("door code zanzibarquux", user_id="u", kind=MemoryKind.EPISODE, session_id="s")
    assert ours.search("zanzibarquux", user_id="u", recipe=recipe)[0].record.id == code.id
    synced = ours_store._sync_searched
    new: list[Any] = []

    def then_the_other_process(conn: Any, ops_: Any) -> None:
        synced(conn, ops_)
        if not new:
            theirs.delete_session("s", user_id="u")
            new.append(theirs.add("lunch at noon", user_id="u"))

    ours_store._sync_searched = then_the_other_process  # type: ignore[method-assign]
    hits = ours.search("zanzibarquux", user_id="u", recipe=recipe)
    ours.close()
    theirs.close()
    # The new record is not in the indexes this search read (it came after): under a
    # rid given again it was found by the deleted record's word, or scored by its vector.
    assert new and [h.record.text for h in hits] == ["gardening notes"] * (recipe != "lexical")


def test_a_rid_the_indexes_may_still_hold_is_not_given_after_an_upgrade(tmp_path: Path) -> None:
    """A store from before schema 17 whose newest record was deleted, the deletion not yet
    taken into the index folder (still queued in the outbox): the upgrade starts the
    rids after it."""
    from memlane.stores.sqlite import MIGRATIONS

    (once,) = [v for v, name, _ in MIGRATIONS if "never given twice" in name]
    path = tmp_path / "m.db"
    m = Memory(SqliteStore(path), embedder=FakeEmbedder())
    m.add("gardening notes", user_id="u")
    m.add("door code", user_id="u")
    m.close()
    conn = sqlite3.connect(path)  # as the code before schema 17 left it, then a delete
    conn.execute("DROP TRIGGER records_rid_given")
    conn.execute("DROP TRIGGER records_rid_taken")
    conn.execute("DELETE FROM memlane_meta WHERE key = 'records_rid'")
    conn.execute("DELETE FROM schema_migrations WHERE version = ?", (once,))
    conn.execute("DELETE FROM records WHERE text = 'door code'")  # queued for the indexes
    conn.commit()
    conn.close()
    m = Memory(SqliteStore(path), embedder=FakeEmbedder())
    m.add("lunch at noon", user_id="u")
    m.close()
    assert _rids(path) == {"gardening notes": 1, "lunch at noon": 3}


def test_a_record_written_by_older_code_is_refused_not_given_a_used_rid(tmp_path: Path) -> None:
    """A process still running the code before schema 17 lets SQLite choose the rid (the
    largest plus one): after the newest record is gone that is a used one."""
    from memlane.stores.sqlite_sql import RECORD_COLUMNS

    path = tmp_path / "m.db"
    m = Memory(SqliteStore(path), embedder=FakeEmbedder())
    m.add("gardening notes", user_id="u")
    m.add("door code", user_id="u", kind=MemoryKind.EPISODE, session_id="s")  # rid 2
    m.delete_session("s", user_id="u")
    m.close()
    conn = sqlite3.connect(path)
    row = conn.execute(
        f"SELECT {', '.join(RECORD_COLUMNS)} FROM records WHERE text = 'gardening notes'"
    ).fetchone()
    values = dict(zip(RECORD_COLUMNS, row, strict=True)) | {"id": "another"}
    marks = ", ".join("?" * len(RECORD_COLUMNS))
    with pytest.raises(sqlite3.IntegrityError, match="upgrade"):
        conn.execute(
            f"INSERT INTO records ({', '.join(RECORD_COLUMNS)}) VALUES ({marks})",
            tuple(values.values()),
        )
    conn.close()
    assert _rids(path) == {"gardening notes": 1}  # the refused row is not there
