"""Copies of the lexical index beside the processes of a PostgreSQL store
(``lexical_dir``, memlane.stores.postgres_copy), on a real server: the conformance suite
through them, and how they stay in step with the database (transactions committed out
of their id order, writers open since before a copy registered, other processes,
erasures, the upkeep of the change table)."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from tests.servers import PostgresServer

from memlane import AsyncMemory, Memory
from memlane.errors import ConfigurationError
from memlane.ports.store import Store
from memlane.stores import open_store, postgres_copy
from memlane.stores.postgres import PostgresStore
from memlane.stores.postgres_sql import RawSql
from memlane.testing import FakeEmbedder, FixedClock, StoreConformance


class TestPostgresStoreWithCopies(StoreConformance):
    """Every store behaviour holds when lexical searches are answered by the copies."""

    @pytest.fixture(autouse=True)
    def _server(self, postgres_server: PostgresServer, tmp_path: Path) -> None:
        self.server = postgres_server
        self.folder = tmp_path / "copies"

    def make_store(self) -> Store:
        url = self.server.new_database("cc")
        return PostgresStore(url, max_connections=4, lexical_dir=self.folder)


@pytest.fixture
def url(postgres_server: PostgresServer) -> str:
    return postgres_server.new_database("cp")


def _memory(url: str, folder: Path | None) -> Memory:
    store = PostgresStore(url, max_connections=4, lexical_dir=folder)
    return Memory(store, embedder=FakeEmbedder(), clock=FixedClock())


def _texts(memory: Memory, query: str, user: str = "u") -> list[str]:
    return [h.record.text for h in memory.search(query, user_id=user, recipe="lexical", limit=20)]


def _copies(memory: Memory) -> postgres_copy.LexicalCopies:
    copies = memory.store._copies  # type: ignore[attr-defined]
    assert copies is not None
    return copies  # type: ignore[no-any-return]


def _state(memory: Memory, user: str = "u") -> postgres_copy.CopyState | None:
    return _copies(memory)._read_state(user)


def _rewriting(url: str, record_id: str, text: str) -> psycopg.Connection[Any]:
    """A connection whose open transaction has rewritten user u's record ``record_id``
    to ``text`` (commit it to end it; searches touch their hits: not this record)."""
    conn = psycopg.connect(url)
    conn.execute("UPDATE records SET text = %s WHERE user_id = 'u' AND id = %s", (text, record_id))
    return conn


def _rows(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def test_a_search_is_answered_by_a_copy_that_follows_every_write(url: str, tmp_path: Path) -> None:
    m = _memory(url, tmp_path / "copies")
    m.add("I am vegetarian and cook lentils", user_id="u")
    m.add("Remind me to bring the gift", user_id="u")
    assert _texts(m, "what do vegetarians cook") == ["I am vegetarian and cook lentils"]
    state = _state(m)
    assert state is not None and (tmp_path / "copies").is_dir()
    # A change after the build reaches the copy before the next search.
    rec = m.add("Lentil soup on Fridays", user_id="u")
    assert "Lentil soup on Fridays" in _texts(m, "lentils")
    m.update(rec.id, user_id="u", text="Bean soup on Fridays")
    assert _texts(m, "lentils") == ["I am vegetarian and cook lentils"]
    assert _texts(m, "bean soup") == ["Bean soup on Fridays"]
    m.delete(rec.id, user_id="u")  # (deleted, kept: the filters leave it out)
    assert _texts(m, "soup") == []
    after = _state(m)
    assert after is not None and after.copy == state.copy  # taken in, not rebuilt
    m.close()


def test_a_transaction_that_commits_after_a_later_one_is_still_taken_in(
    url: str, tmp_path: Path
) -> None:
    """Transaction ids are given in start order: a copy that read while an older
    transaction was open reads its changes once it commits."""
    m = _memory(url, tmp_path / "copies")
    m.add("the first note", user_id="u")
    other = m.add("a placeholder", user_id="u")  # (searches touch their hits: not this)
    assert _texts(m, "note") == ["the first note"]
    # The older transaction writes first and commits last.
    with _rewriting(url, other.id, "zebra crossing ahead") as slow:
        m.add("a second note", user_id="u")  # younger, committed first
        assert _texts(m, "second note") == ["a second note", "the first note"]
        assert _texts(m, "zebra") == []
        state = _state(m)
        assert state is not None and state.taken  # the younger one, taken in
        slow.commit()
    assert _texts(m, "zebra crossing") == ["zebra crossing ahead"]
    m.close()


def test_a_copy_waits_for_writers_open_since_before_it_registered(url: str, tmp_path: Path) -> None:
    """A writer that wrote before any copy existed logged nothing: until it ends a new
    copy is not built (the search reads PostgreSQL's index), then it is, with its
    change."""
    plain = _memory(url, None)
    plain.add("the first note", user_id="u")
    other = plain.add("a placeholder", user_id="u")
    plain.close()
    m = _memory(url, tmp_path / "copies")
    with _rewriting(url, other.id, "zebra crossing ahead") as slow:
        assert _texts(m, "note") == ["the first note"]  # PostgreSQL's own index
        assert _state(m) is None
        slow.commit()
    assert _texts(m, "zebra") == ["zebra crossing ahead"]
    assert _state(m) is not None
    m.close()


def test_processes_sharing_a_folder_or_not_see_each_others_writes(url: str, tmp_path: Path) -> None:
    a = _memory(url, tmp_path / "shared")
    b = _memory(url, tmp_path / "shared")
    c = _memory(url, tmp_path / "own")
    a.add("apples from the market", user_id="u")
    assert _texts(b, "apples") == ["apples from the market"]
    b.add("apples for the pie", user_id="u")
    assert sorted(_texts(a, "apples")) == ["apples for the pie", "apples from the market"]
    assert sorted(_texts(c, "apples")) == ["apples for the pie", "apples from the market"]
    c.add("green apples", user_id="u")
    assert len(_texts(a, "apples")) == len(_texts(b, "apples")) == 3
    registered = _rows(url, "SELECT count(*) FROM lexical_copies WHERE user_id = 'u'")
    assert registered == [(2,)]  # one a folder
    for m in (a, b, c):
        m.close()


def test_users_and_databases_are_kept_apart(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    folder = tmp_path / "copies"
    one = _memory(postgres_server.new_database("cp"), folder)
    two = _memory(postgres_server.new_database("cp"), folder)
    one.add("the secret plan", user_id="u")
    one.add("the other plan", user_id="v")
    two.add("a plan of the second database", user_id="u")
    assert _texts(one, "plan") == ["the secret plan"]
    assert _texts(one, "plan", user="v") == ["the other plan"]
    assert _texts(two, "plan") == ["a plan of the second database"]
    assert len([p for p in folder.iterdir() if p.is_dir()]) == 3
    one.close()
    two.close()


def test_a_record_gone_for_good_rebuilds_the_copy_and_a_forgotten_user_leaves_nothing(
    url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "copies"
    m = _memory(url, folder)
    keep = m.add("the kept note", user_id="u")
    gone = m.add("the purged zebra note", user_id="u")
    assert len(_texts(m, "note")) == 2
    before = _state(m)
    _rows(url, "DELETE FROM records WHERE user_id = 'u' AND id = %s RETURNING id", gone.id)
    assert _texts(m, "note") == ["the kept note"]
    after = _state(m)
    assert before is not None and after is not None and after.copy != before.copy
    # (the folders of the old copy went: only the new one is left)
    assert [p.name for p in folder.iterdir() if p.is_dir()] == [_copies(m)._folder("u").name]
    assert _copies(m)._opened("u", after).index.ids() == [keep.id]
    elsewhere = _memory(url, tmp_path / "elsewhere")  # another host's copy
    assert _texts(elsewhere, "note") == ["the kept note"]
    elsewhere.close()
    m.forget_user("u")
    assert list(folder.iterdir()) == []  # at once, here
    assert _rows(url, "SELECT count(*) FROM lexical_copies WHERE user_id = 'u'") == [(0,)]
    assert _rows(url, "SELECT count(*) FROM lexical_changes WHERE user_id = 'u'") == [(0,)]
    assert _texts(m, "note") == []
    assert list(folder.iterdir()) == []
    m.close()
    # The other folder's copy goes when a store next syncs there (its registration gone).
    assert len([p for p in (tmp_path / "elsewhere").iterdir() if p.is_dir()]) == 1
    elsewhere = _memory(url, tmp_path / "elsewhere")
    assert _texts(elsewhere, "anything", user="v") == []
    assert [p for p in (tmp_path / "elsewhere").iterdir() if p.is_dir()] == []
    elsewhere.close()


def test_what_a_build_stopped_midway_left_is_removed(url: str, tmp_path: Path) -> None:
    folder = tmp_path / "copies"
    m = _memory(url, folder)
    m.add("a zebra note", user_id="u")
    assert _texts(m, "zebra") == ["a zebra note"]
    home = _copies(m)._folder("u")
    m.close()
    for name in (f"{home.name}.new-0badf00d", f"{home.name}.old-0badf00d"):
        (folder / name / "index").mkdir(parents=True)
        (folder / name / "index" / "words").write_text("zebra")
    m = _memory(url, folder)
    assert _texts(m, "zebra") == ["a zebra note"]
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == [home.name]
    m.close()


def test_a_registration_never_built_stops_holding_the_changes(url: str, tmp_path: Path) -> None:
    m = _memory(url, tmp_path / "copies")
    m.add("a note", user_id="u")
    assert _texts(m, "note") == ["a note"]
    # A process that registered and stopped before building (its row never built).
    _rows(
        url,
        "INSERT INTO lexical_copies VALUES ('dead', 'u', '1'::xid8, now() - interval '2 hours') "
        "RETURNING copy",
    )
    m.add("another note", user_id="u")
    copies = _copies(m)
    copies._open["u"].reported = 0.0  # (reports at most once a minute)
    assert len(_texts(m, "note")) == 2
    assert _rows(url, "SELECT copy FROM lexical_copies WHERE user_id = 'u'") == [
        (copies._read_state("u").copy,)  # type: ignore[union-attr]
    ]
    assert _rows(url, "SELECT count(*) FROM lexical_changes WHERE user_id = 'u'") == [(0,)]
    m.close()


def test_a_database_copied_from_another_keeps_its_own_copies(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    source = postgres_server.new_database("cp")
    folder = tmp_path / "copies"
    m = _memory(source, folder)
    m.add("the shared note", user_id="u")
    assert _texts(m, "note") == ["the shared note"]
    m.close()
    name = urlsplit(source).path.lstrip("/")
    with psycopg.connect(postgres_server.uri, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}_clone" TEMPLATE "{name}"'.encode())
    clone = postgres_server.url(f"{name}_clone")
    a, b = _memory(source, folder), _memory(clone, folder)
    b.add("a zebra only in the clone", user_id="u")
    a.add("a giraffe only in the source", user_id="u")
    assert _texts(b, "zebra giraffe") == ["a zebra only in the clone"]
    assert _texts(a, "zebra giraffe") == ["a giraffe only in the source"]
    assert len([p for p in folder.iterdir() if p.is_dir()]) == 2
    a.close()
    b.close()


def test_memlane_writes_at_read_committed_whatever_the_database_default(url: str) -> None:
    """The triggers that feed the copies see a registration from the statement on
    (READ COMMITTED); a writer at REPEATABLE READ would miss one made after its snapshot."""
    _rows(url, "SELECT 1")
    with psycopg.connect(url, autocommit=True) as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        conn.execute(
            f"ALTER DATABASE \"{name}\" SET default_transaction_isolation = 'repeatable read'"
        )
    store = PostgresStore(url)
    try:
        (rows,) = store.batch([RawSql("SHOW default_transaction_isolation")])
        assert rows == [("read committed",)]
    finally:
        store.close()


def test_the_change_table_is_kept_short_and_unseen_copies_are_dropped(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_copy, "REPORT_EVERY_S", 0.0)
    m = _memory(url, tmp_path / "copies")
    for i in range(5):
        m.add(f"note number {i}", user_id="u")
        assert len(_texts(m, "note")) == i + 1
    # Every change below the copy's horizon is deleted when it reports.
    assert _rows(url, "SELECT count(*) FROM lexical_changes WHERE user_id = 'u'") == [(0,)]
    first = _state(m)
    assert first is not None
    other = _memory(url, tmp_path / "other")
    assert len(_texts(other, "note")) == 5
    _rows(
        url,
        "UPDATE lexical_copies SET seen_at = now() - interval '8 days' WHERE copy = %s "
        "RETURNING copy",
        first.copy,
    )
    other.add("note number 5", user_id="u")
    assert len(_texts(other, "note")) == 6  # (its report drops the unseen copy)
    assert _rows(url, "SELECT count(*) FROM lexical_copies WHERE copy = %s", first.copy) == [(0,)]
    assert len(_texts(m, "note")) == 6  # dropped: built afresh
    again = _state(m)
    assert again is not None and again.copy != first.copy
    m.close()
    other.close()


def test_users_without_a_copy_log_nothing(url: str) -> None:
    m = _memory(url, None)
    m.add("a note", user_id="u")
    assert _texts(m, "note") == ["a note"]
    assert _rows(url, "SELECT count(*) FROM lexical_changes") == [(0,)]
    m.close()


def test_a_damaged_or_foreign_copy_is_built_afresh(url: str, tmp_path: Path) -> None:
    m = _memory(url, tmp_path / "copies")
    m.add("a zebra note", user_id="u")
    assert _texts(m, "zebra") == ["a zebra note"]
    folder = _copies(m)._folder("u")
    m.close()
    (folder / "index" / "meta.json").write_text("{not json")
    m = _memory(url, tmp_path / "copies")
    assert _texts(m, "zebra") == ["a zebra note"]
    state = json.loads((folder / "state.json").read_text())
    state["store_id"] = "another"
    (folder / "state.json").write_text(json.dumps(state))
    m.close()
    m = _memory(url, tmp_path / "copies")
    assert _texts(m, "zebra") == ["a zebra note"]
    assert _state(m) is not None and _state(m).store_id != "another"  # type: ignore[union-attr]
    m.close()


def test_the_url_names_the_folder(url: str, tmp_path: Path) -> None:
    store = open_store(
        f"{url}&lexical_dir={tmp_path / 'copies'}"
        if "?" in url
        else f"{url}?lexical_dir={tmp_path / 'copies'}"
    )
    assert isinstance(store, PostgresStore) and store.lexical_dir == tmp_path / "copies"
    assert "lexical_dir" not in store.url
    m = Memory(store, embedder=FakeEmbedder(), clock=FixedClock())
    m.add("a note", user_id="u")
    assert _texts(m, "note") == ["a note"]
    assert (tmp_path / "copies").is_dir()
    m.close()
    # libpq's own parameters stay as written (a space encoded as %20, not +)
    options = "options=-c%20statement_timeout%3D5000"
    store = PostgresStore(f"{url}{'&' if '?' in url else '?'}{options}&lexical_dir=x%20y")
    assert store.lexical_dir == Path("x y")
    (rows,) = store.batch([RawSql("SHOW statement_timeout")])
    assert rows == [("5s",)]
    store.close()
    with pytest.raises(ConfigurationError):
        PostgresStore("postgresql://u@127.0.0.1:1/db?lexical_dir=a&lexical_dir=b")
    with pytest.raises(ConfigurationError):
        PostgresStore("postgresql://u@127.0.0.1:1/db?lexical_dir=")


def test_an_async_memory_searches_through_the_copy(url: str, tmp_path: Path) -> None:
    async def run() -> list[str]:
        store = PostgresStore(url, max_connections=4, lexical_dir=tmp_path / "copies")
        async with AsyncMemory(store, embedder=FakeEmbedder(), clock=FixedClock()) as memory:
            await memory.add("apples from the market", user_id="u")
            await memory.add("pears for the pie", user_id="u")
            hits = await memory.search("apples", user_id="u", recipe="lexical")
            assert store._copies is not None and store._copies._read_state("u") is not None
            await memory.add("green apples", user_id="u")
            hits += await memory.search("green apples", user_id="u", recipe="lexical")
            return [h.record.text for h in hits]

    assert asyncio.run(run()) == [
        "apples from the market",
        "green apples",
        "apples from the market",
    ]


def test_the_sweep_keeps_a_copy_another_process_built_after_it_looked(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "copies"
    b = _memory(url, folder)
    b.add("lentil soup", user_id="u")
    assert _texts(b, "lentil") == ["lentil soup"]
    _rows(url, "DELETE FROM lexical_copies RETURNING copy")  # (unseen for a week, say)
    a = _memory(url, folder)
    a.add("other", user_id="v")
    real = postgres_copy.try_lock_here
    rebuilt: list[str] = []

    def rebuilding_first(path: Path) -> int | None:  # B rebuilds between A's look and lock
        if not rebuilt:
            assert _texts(b, "lentil") == ["lentil soup"]
            rebuilt.append(_state(b).copy)  # type: ignore[union-attr]
        return real(path)

    monkeypatch.setattr(postgres_copy, "try_lock_here", rebuilding_first)
    assert _texts(a, "other", user="v") == ["other"]  # A's first sync sweeps
    assert rebuilt and _state(b) is not None and _state(b).copy == rebuilt[0]  # type: ignore[union-attr]
    a.close()
    b.close()


def test_a_lost_folders_registration_goes_with_its_rebuild(url: str, tmp_path: Path) -> None:
    m = _memory(url, tmp_path / "copies")
    m.add("lentil soup", user_id="u")
    assert _texts(m, "lentil") == ["lentil soup"]
    shutil.rmtree(_copies(m)._folder("u"))
    assert _texts(m, "lentil") == ["lentil soup"]
    assert _rows(url, "SELECT copy FROM lexical_copies WHERE user_id = 'u'") == [
        (_state(m).copy,)  # type: ignore[union-attr]
    ]
    m.close()


def test_forgetting_in_a_process_that_never_searched_removes_the_copy(
    url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "copies"
    searcher = _memory(url, folder)
    searcher.add("my secret diagnosis", user_id="u")
    assert _texts(searcher, "diagnosis") == ["my secret diagnosis"]
    searcher.close()
    admin = _memory(url, folder)
    admin.forget_user("u")
    assert list(folder.iterdir()) == []
    admin.close()


def test_one_users_build_does_not_hold_up_another_users_search(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = _memory(url, tmp_path / "copies")
    m.add("a note of v", user_id="v")
    assert _texts(m, "note", user="v") == ["a note of v"]
    plain = _memory(url, None)
    other = plain.add("a placeholder", user_id="u")
    plain.close()
    monkeypatch.setattr(postgres_copy, "BUILD_WAIT_S", 30.0)
    with _rewriting(url, other.id, "zebra") as slow:  # u's copy waits for it (up to 30 s)
        waiting = threading.Thread(target=_texts, args=(m, "placeholder"), daemon=True)
        waiting.start()
        while "u" not in _copies(m)._waiting:
            time.sleep(0.01)
        assert _texts(m, "note", user="v") == ["a note of v"]
        assert waiting.is_alive()  # v was answered while u's build still waited
        slow.commit()
    waiting.join(60)
    assert _texts(m, "zebra") == ["zebra"]
    m.close()


def test_a_copy_that_takes_nothing_in_leaves_its_state_alone(url: str, tmp_path: Path) -> None:
    """While an open transaction holds the horizon back, syncs that find only changes
    already taken in write nothing (other processes would read the copy again)."""
    m = _memory(url, tmp_path / "copies")
    m.add("a note", user_id="u")
    assert _texts(m, "note") == ["a note"]
    with psycopg.connect(url) as idle:
        idle.execute("SELECT pg_current_xact_id()")  # holds the oldest open transaction
        m.add("another note", user_id="u")
        assert len(_texts(m, "note")) == 2
        before = _state(m)
        assert len(_texts(m, "note")) == 2
        assert _state(m) == before
        idle.rollback()
    m.close()


@pytest.mark.parametrize(
    ("deleted", "looked_up"),
    [
        # None filtered: one slice (1.5 times the limit and 8) decides the top 10.
        ((), [23]),
        # The five above the tie and every other of the tie's lowest ids filtered: a
        # further slice (twice as large; here the rest of the first read, 64 hits).
        (("A0", "A1", "A2", "A3", "A4", *(f"T{i:03d}" for i in range(0, 40, 2))), [23, 41]),
    ],
)
def test_a_copy_search_looks_up_only_the_hits_that_can_reach_the_top(
    url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    deleted: tuple[str, ...],
    looked_up: list[int],
) -> None:
    """The copy's hits are checked against the filters best first, a slice at a time,
    not all of the read (three times the limit): the answer is the one every hit
    looked up would give (the best that pass, a tie ordered by id), found with fewer
    lookups."""
    from memlane import Filters
    from memlane.ports import store as ops
    from memlane.stores import postgres_ops

    m = _memory(url, tmp_path / "copies")
    store = m.store
    template = m.add("a river", user_id="u")
    tie = [template.evolve(id=f"T{i:03d}", text=f"heron note x{i:03d}") for i in range(99, -1, -1)]
    above = [template.evolve(id=f"A{i}", text=f"heron heron y{i}") for i in range(5)]
    store.batch([ops.WriteRecord(r, 0) for r in [*tie, *above]])
    for rid in deleted:
        m.delete(rid, user_id="u")
    statements: list[tuple[str, Any]] = []
    real = postgres_ops.Sql

    def recorded(text: str, params: Any = None, **kwargs: Any) -> Any:
        statements.append((text, params))
        return real(text, params, **kwargs)

    monkeypatch.setattr(postgres_ops, "Sql", recorded)
    (hits,) = store.batch([ops.LexicalSearch("u", Filters(), m.core.now(), "heron", 10)])
    checks = [len(params[0]) for text, params in statements if "r.id = ANY" in text]
    assert checks == looked_up
    live = [r for r in [*above, *tie] if r.id not in deleted]
    copy = _copies(m).sync  # every hit of the copy, filtered here: the answer expected
    with psycopg.connect(url, autocommit=True) as conn:
        index = copy(conn, "u")
    assert index is not None
    every = dict(index.search_ids(index.terms("heron"), 1000, 0.0))
    expected = sorted(((r.id, every[r.id]) for r in live), key=lambda h: (-h[1], h[0]))[:10]
    assert hits == expected
    tied = sorted(r.id for r in live if r.id.startswith("T"))
    from_tie = [rid for rid, _ in hits if rid.startswith("T")]
    assert from_tie == tied[: len(from_tie)] and len(from_tie) >= 5
    m.close()


def test_a_tie_read_deeper_is_decided_by_id_across_the_reads(url: str, tmp_path: Path) -> None:
    """The copy's first read holds the tie's highest ids (taken in first, so first in
    the index's order) and the filters leave out the lowest ones it holds: the deeper
    read brings ids below the tenth kept of the first, which are looked up before it,
    and the top is the tie's lowest ids that pass, as if every hit were read."""
    from memlane import Filters
    from memlane.ports import store as ops

    m = _memory(url, tmp_path / "copies")
    store = m.store
    template = m.add("a river", user_id="u")

    def tied(i: int) -> Any:  # the first nine of the tie have no topic: filtered out
        topics = ("birds",) if i >= 9 else ()
        return template.evolve(id=f"T{i:03d}", text=f"heron note x{i:03d}", topics=topics)

    tie = [tied(i) for i in range(100)]
    above = [
        template.evolve(id=f"A{i}", text=f"heron heron y{i}", topics=("birds",)) for i in range(5)
    ]
    search = ops.LexicalSearch("u", Filters(topics=("birds",)), m.core.now(), "heron", 10)
    for part in (above + tie[50:], tie[:50]):  # each taken in by a search of its own
        store.batch([ops.WriteRecord(r, 0) for r in part])
        store.batch([search])
    with psycopg.connect(url, autocommit=True) as conn:
        index = _copies(m).sync(conn, "u")
    assert index is not None
    first = [i for i, _ in index.search_ids(index.terms("heron"), 64, 0.0)]
    assert "T050" in first and "T009" not in first
    (hits,) = store.batch([search])
    tops = [*(f"A{i}" for i in range(5)), *(f"T{i:03d}" for i in range(9, 14))]
    assert [rid for rid, _ in hits] == tops
    m.close()
