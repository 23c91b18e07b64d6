"""SQLite specifics: the file on disk, migrations, refusing files that aren't ours."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from helpers import (
    SQLITE_VECTORS_APART,
    SQLITE_VECTORS_BACK,
    check_scoped_ids_kept_every_row,
    store_files,
    write_before_scoped_ids,
)
from memlane import (
    CorruptStoreError,
    ForeignStoreError,
    Memory,
    MemoryInput,
    SchemaVersionError,
)
from memlane.errors import ConfigurationError, ConflictError, StoreError, UnsupportedError
from memlane.models import Filters
from memlane.ports import store as ops
from memlane.settings import default_store_url
from memlane.stores import open_store
from memlane.stores.sqlite import MIGRATIONS, SqliteStore, parse_sqlite_url
from memlane.testing import FakeEmbedder


def test_a_new_process_sees_what_the_last_one_stored(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/m.db"
    script = (
        "import sys\n"
        "from memlane import Memory\n"
        "from memlane.testing import FakeEmbedder\n"
        "m = Memory(sys.argv[1], embedder=FakeEmbedder())\n"
        "if sys.argv[2] == 'write':\n"
        "    m.add('remembers across restarts', user_id='u')\n"
        "    m.set_state('s', {'step': 3}, user_id='u', expected_version=0)\n"
        "else:\n"
        "    hits = m.search('restarts', user_id='u')\n"
        "    print(hits[0].record.text, m.get_state('s', user_id='u').data['step'])\n"
    )
    subprocess.run([sys.executable, "-c", script, url, "write"], check=True)
    out = subprocess.run(
        [sys.executable, "-c", script, url, "read"], check=True, capture_output=True, text=True
    )
    assert out.stdout.strip() == "remembers across restarts 3"


def test_wal_and_recorded_migrations(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "m.db")
    store.setup()
    assert store.schema_versions() == [(v, n) for v, n, _ in MIGRATIONS]
    store.close()
    conn = sqlite3.connect(tmp_path / "m.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    store.setup()  # reopening applies nothing twice
    assert len(store.schema_versions()) == len(MIGRATIONS)
    store.close()


def test_corrupt_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    payload = b"this is not a database at all" * 100
    path.write_bytes(payload)
    with pytest.raises(CorruptStoreError):
        Memory(SqliteStore(path), embedder=FakeEmbedder()).list(user_id="u")
    assert path.read_bytes() == payload


def test_foreign_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers (name) VALUES ('Ada')")
    conn.commit()
    conn.close()
    with pytest.raises(ForeignStoreError):
        Memory(SqliteStore(path), embedder=FakeEmbedder()).add("x", user_id="u")
    conn = sqlite3.connect(path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"customers"}
    conn.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    store = SqliteStore(path)
    store.setup()
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_migrations VALUES (999, 'from the future', 'x')")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaVersionError):
        SqliteStore(path).setup()


def test_default_store_is_in_the_user_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_DATA_HOME")
    url = default_store_url()
    assert url.startswith("sqlite:///") and url.endswith("memlane.db")
    assert not url.startswith("sqlite:///tmp") and "/tmp/" not in url


def test_store_urls(tmp_path: Path) -> None:
    assert parse_sqlite_url("sqlite:///rel/m.db") == ("rel/m.db", {})
    assert parse_sqlite_url("sqlite:////abs/m.db") == ("/abs/m.db", {})
    int8 = ("/abs/m.db", {"vectors": "int8"})
    assert parse_sqlite_url("sqlite:////abs/m.db?vectors=int8") == int8
    assert isinstance(open_store("sqlite:///:memory:"), SqliteStore)
    assert open_store(f"sqlite:///{tmp_path}/x.db").path == f"{tmp_path}/x.db"  # type: ignore[attr-defined]
    odd = open_store(f"{tmp_path}/what?100%.db")  # a plain path takes no options
    assert odd.path == f"{tmp_path}/what?100%.db"  # type: ignore[attr-defined]
    assert open_store(odd.url).path == odd.path  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError):
        open_store("mongodb://localhost")
    with pytest.raises(UnsupportedError):
        parse_sqlite_url("sqlite://")


def test_construction_does_no_io(tmp_path: Path) -> None:
    path = tmp_path / "never" / "m.db"
    Memory(f"sqlite:///{path}", embedder=FakeEmbedder())
    assert not path.parent.exists()


def test_vector_cache_sees_writes_from_another_connection(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    reader = Memory(url, embedder=FakeEmbedder())
    writer = Memory(url, embedder=FakeEmbedder())
    first = writer.add("the lighthouse keeper", user_id="u")
    recipe = "semantic"
    assert [h.record.id for h in reader.search("lighthouse", user_id="u", recipe=recipe)] == [
        first.id
    ]
    second = writer.add("a lighthouse on the cliff", user_id="u")
    writer.delete(first.id, user_id="u")
    found = [h.record.id for h in reader.search("lighthouse", user_id="u", recipe=recipe)]
    assert found == [second.id]
    reader.close()
    writer.close()


def test_vector_search_without_room_in_the_cache_reads_the_same_vectors(tmp_path: Path) -> None:
    from memlane.stores.vector_cache import VectorCache, default_cache_bytes

    texts = [f"note {i} about {word}" for i, word in enumerate(["tea", "cello", "paris"] * 40)]
    results = []
    for cache in (None, 0):  # the default budget, and none (matrix rebuilt every query)
        m = Memory(
            SqliteStore(tmp_path / f"c{cache}.db", vector_cache_bytes=cache),
            embedder=FakeEmbedder(),
        )
        m.add_many([MemoryInput(text=t) for t in texts], user_id="u")
        m.add("context only vectors", user_id="other")
        hits = m.search("cello", user_id="u", limit=5, recipe="semantic")
        results.append([h.record.text for h in hits])
        m.close()
    assert results[0] == results[1] and all("cello" in t for t in results[0])
    assert 256 * 1024 * 1024 <= default_cache_bytes() <= 16 * 1024**3
    with pytest.raises(ValueError, match=">= 0"):
        VectorCache(-1)


def test_small_matrices_score_with_one_blas_thread_and_restore_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The one-thread limit (against torch's spinning OpenMP workers) holds only during
    the product, on the BLAS numpy uses, and both paths rank the same."""
    from threadpoolctl import threadpool_info  # type: ignore[import-untyped]

    from memlane.stores import vector_cache
    from memlane.stores.vector_cache import Matrix, to_blob

    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((500, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    matrix = Matrix.build(((f"r{i:03d}", to_blob(v)) for i, v in enumerate(vectors)), 16)
    query, rows = vectors[3], np.arange(500)

    def numpy_blas_threads() -> list[int]:  # numpy's own BLAS, wherever it was installed
        return [i["num_threads"] for i in threadpool_info() if "numpy" in i["filepath"]]

    before = numpy_blas_threads()
    assert before, "numpy's BLAS (numpy.libs) not found"
    seen: list[int] = []
    real_limit = vector_cache._scoring_threads

    def spy(floats: int):  # type: ignore[no-untyped-def]
        with real_limit(floats):
            seen.extend(numpy_blas_threads())
            yield

    monkeypatch.setattr(vector_cache, "_scoring_threads", vector_cache.contextmanager(spy))
    small = matrix.top_k(query, rows, 5)
    assert small[0][0] == "r003" and small[0][1] == pytest.approx(1.0, abs=1e-5)
    assert seen == [1] * len(before)
    monkeypatch.setattr(vector_cache, "ONE_THREAD_MAX_FLOATS", 0)
    seen.clear()
    assert matrix.top_k(query, rows, 5) == small
    assert seen == before  # above the limit: left as configured
    assert numpy_blas_threads() == before


def test_forget_user_takes_the_users_words_off_the_disk(tmp_path: Path) -> None:
    """Not only unreachable: the text is gone from the database file and its log
    (secure_delete, an FTS5 merge, a WAL checkpoint)."""
    path = tmp_path / "m.db"
    m = Memory(f"sqlite:///{path}", embedder=FakeEmbedder())
    for i in range(50):
        m.add(f"bob note {i} about gardening", user_id="bob")
    m.add("alice secret zanzibarquux", user_id="alice")
    m.add_messages("s", [("user", "my pin is qwertyzork")], user_id="alice")
    m.forget_user("alice")
    assert [h.record.text for h in m.search("gardening", user_id="bob", limit=1)]
    m.close()
    files = store_files(tmp_path)
    assert files and all(b"zanzibarquux" not in p.read_bytes() for p in files)
    assert all(b"qwertyzork" not in p.read_bytes() for p in files)


def test_a_purge_or_a_session_delete_takes_the_words_off_the_disk(tmp_path: Path) -> None:
    """Purged (TTL) memories and deleted sessions leave no text behind either: not in
    their history (the events stay, without snapshots), not in the lexical index, not in
    the write-ahead log. Other memories stay findable."""
    from memlane.testing import FixedClock

    path = tmp_path / "m.db"
    clock = FixedClock()
    m = Memory(SqliteStore(path), embedder=FakeEmbedder(), clock=clock)
    for i in range(50):
        m.add(f"bob note {i} about gardening", user_id="bob")
    short = m.add("door code zanzibarquux", user_id="alice", ttl=timedelta(hours=1))
    m.update(short.id, user_id="alice", text="door code quokkaflorp")
    m.add_messages(
        "s", [("user", "my pin is qwertyzork"), ("assistant", "noted xylowhimsy")], user_id="alice"
    )
    kept = m.add("alice keeps her gardening notes", user_id="alice")
    clock.advance(hours=2)
    assert m.sweep() == 1
    assert m.delete_session("s", user_id="alice") == 1
    assert [e.action.value for e in m.history(short.id, user_id="alice")] == [
        "add", "update", "expire",
    ]  # fmt: skip
    assert [h.record.id for h in m.search("gardening notes", user_id="alice", limit=1)] == [kept.id]
    for _ in ("open", "closed"):  # the log is emptied at once, not only when closing
        files = store_files(tmp_path)
        assert files
        for word in (b"zanzibarquux", b"quokkaflorp", b"qwertyzork", b"xylowhimsy"):
            assert [p.name for p in files if word in p.read_bytes()] == [], word
        m.close()


def test_a_session_delete_erases_episodes_of_a_session_never_opened(tmp_path: Path) -> None:
    """An episode added with add(kind="episode", session_id=...) belongs to a session that
    has no session row: deleting that session counts 0 sessions but still deletes the
    episode, and its words must leave the index and the log as for any session."""
    path = tmp_path / "m.db"
    m = Memory(SqliteStore(path), embedder=FakeEmbedder())
    for i in range(50):
        m.add(f"bob note {i} about gardening", user_id="bob")
    turn = m.add("the okapi said zanzibarquux", user_id="alice", kind="episode", session_id="s9")
    assert m.delete_session("s9", user_id="alice") == 0  # no session row
    assert [e.snapshot for e in m.history(turn.id, user_id="alice")] == [None, None]
    for _ in ("open", "closed"):
        files = store_files(tmp_path)
        assert files and [p.name for p in files if b"zanzibarquux" in p.read_bytes()] == []
        m.close()


def test_a_purged_turn_leaves_no_text_in_a_deleted_turn_after_it(tmp_path: Path) -> None:
    """A deleted (restorable) turn keeps the previous live turn of its agent as lexical
    context; when that turn is purged, the deleted one is re-indexed too, not only the
    next live turn, or the purged words stay on disk in its index row."""
    from memlane.testing import FixedClock

    path = tmp_path / "m.db"
    clock = FixedClock()
    m = Memory(SqliteStore(path), embedder=FakeEmbedder(), clock=clock)
    for i in range(50):
        m.add(f"bob note {i} about gardening", user_id="bob")
    turn = {"user_id": "alice", "kind": "episode", "session_id": "s"}
    m.add("door code zanzibarquux", ttl=timedelta(hours=1), **turn)  # type: ignore[arg-type]
    hidden = m.add("and the second turn", **turn)  # type: ignore[arg-type]
    m.add("a third turn", **turn)  # type: ignore[arg-type]
    m.delete(hidden.id, user_id="alice")
    clock.advance(hours=2)
    assert m.sweep() == 1
    for _ in ("open", "closed"):
        files = store_files(tmp_path)
        assert files and [p.name for p in files if b"zanzibarquux" in p.read_bytes()] == []
        m.close()


def test_an_export_is_one_snapshot_of_records_and_history(tmp_path: Path) -> None:
    """A write landing between the export's reads cannot pair a record with history
    from after it (records and history are read in one batch, one transaction)."""

    url = f"sqlite:///{tmp_path}/snap.db"
    writer = Memory(url, embedder=FakeEmbedder())
    rec = writer.add("version one", user_id="u")
    inner = SqliteStore(tmp_path / "snap.db")

    class Interleaving:  # a store whose first record read is followed by another write
        def __init__(self) -> None:
            self.done = False

        def __getattr__(self, name: str) -> object:
            return getattr(inner, name)

        def batch(self, ops_: list[object]) -> list[object]:
            result = inner.batch(ops_)  # type: ignore[arg-type]
            if not self.done and any(isinstance(op, ops.ListRecords) for op in ops_):
                self.done = True
                writer.update(rec.id, user_id="u", text="version two")
            return result

    reader = Memory(Interleaving(), embedder=FakeEmbedder())  # type: ignore[arg-type]
    rows = reader.export_rows(user_id="u")
    (record,) = [r["data"] for r in rows if r["type"] == "record"]
    versions = [r["data"]["version"] for r in rows if r["type"] == "history"]
    assert max(versions) == record["version"]
    writer.close()
    reader.close()


def test_forget_user_does_not_wait_for_another_connections_reader(tmp_path: Path) -> None:
    """The log checkpoint after forget_user is best effort: a reader elsewhere must not
    hold the store (and everything queued behind its lock) for the busy timeout."""
    import time

    path = tmp_path / "r.db"
    m = Memory(SqliteStore(path, busy_timeout_s=20), embedder=FakeEmbedder())
    m.add("alice note", user_id="alice")
    m.add("bob note", user_id="bob")
    reader = sqlite3.connect(path)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM records").fetchall()  # holds a read snapshot
    start = time.monotonic()
    m.forget_user("alice")
    assert time.monotonic() - start < 10  # not the 20 s busy timeout
    assert [r.text for r in m.list(user_id="bob").items] == ["bob note"]
    reader.close()
    m.close()


def test_a_store_from_before_scoped_ids_keeps_working(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migration 7 (ids unique per user, lexical context only from the same agent's turn)
    keeps every row, an idempotent add retried after it finds its first write, and
    re-indexes turns written before it."""
    from memlane.stores import sqlite as sqlite_module

    path = tmp_path / "old.db"
    monkeypatch.setattr(sqlite_module, "MIGRATIONS", tuple(m for m in MIGRATIONS if m[0] <= 6))

    def execute(sql: str) -> None:
        with sqlite3.connect(path) as conn:
            conn.execute(sql)

    paid, before = write_before_scoped_ids(
        SqliteStore(path), execute, "TEXT", later=SQLITE_VECTORS_APART, undo=SQLITE_VECTORS_BACK
    )
    monkeypatch.undo()

    store = SqliteStore(path)
    m = Memory(store, embedder=FakeEmbedder())
    assert [v for v, _ in store.schema_versions()][:7] == list(range(1, 8))
    check_scoped_ids_kept_every_row(m, paid, before)
    m.close()


def _foreign_db(path: Path) -> bytes:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers (name) VALUES ('Ada')")
    conn.commit()
    conn.close()
    return path.read_bytes()


def _siblings(path: Path) -> set[str]:
    return {p.name for p in path.parent.iterdir()}


def test_a_refused_file_is_byte_identical_afterwards(tmp_path: Path) -> None:
    """No pragma, journal or log touches a file before it is known to be memlane's."""
    foreign = tmp_path / "other.db"
    before = _foreign_db(foreign)
    empty_db = tmp_path / "empty.db"  # a valid SQLite header and no schema at all
    sqlite3.connect(empty_db).execute("VACUUM").connection.close()
    wal_db = tmp_path / "wal.db"  # another application's database in WAL mode
    conn = sqlite3.connect(wal_db)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"SQLite format 3\x00" + b"\xff" * 5000)
    empty = tmp_path / "zero.db"
    empty.touch()
    files = {p: p.read_bytes() for p in (foreign, empty_db, wal_db, garbage, empty)}
    names = _siblings(foreign)
    for path, error in [
        (foreign, ForeignStoreError),
        (empty_db, ForeignStoreError),
        (wal_db, ForeignStoreError),
        (garbage, CorruptStoreError),
        (empty, ForeignStoreError),
    ]:
        with pytest.raises(error):
            Memory(SqliteStore(path), embedder=FakeEmbedder()).add("x", user_id="u")
        with pytest.raises(error):
            SqliteStore(path).setup()
    assert {p: p.read_bytes() for p in files} == files
    assert foreign.read_bytes() == before
    assert _siblings(foreign) == names  # no -wal, -shm or -journal left behind


def test_a_new_store_appears_only_when_it_is_complete(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    store = SqliteStore(path)
    store.setup()
    assert _siblings(path) >= {"new.db"}
    assert not [n for n in _siblings(path) if not n.startswith("new.db")]
    store.close()
    # A second store opens what the first created; no temporary files are left.
    again = SqliteStore(path)
    again.setup()
    assert again.schema_versions() == [(v, n) for v, n, _ in MIGRATIONS]
    again.close()
    assert _siblings(path) == {"new.db"}


def test_concurrent_first_opens_of_one_new_file_all_succeed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/race.db"
    script = (
        "import sys\n"
        "from memlane import Memory\n"
        "from memlane.testing import FakeEmbedder\n"
        "Memory(sys.argv[1], embedder=FakeEmbedder()).add('hi', user_id=sys.argv[2])\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, url, f"u{i}"], stderr=subprocess.PIPE)
        for i in range(4)
    ]
    errors = [p.communicate()[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    with Memory(url, embedder=FakeEmbedder()) as m:
        assert m.list_users() == ["u0", "u1", "u2", "u3"]


def test_a_store_opened_for_reading_is_never_created(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "m.db"
    with pytest.raises(StoreError, match="no SQLite database"):
        SqliteStore(path, create=False).setup()
    with pytest.raises(StoreError, match="no SQLite database"):
        open_store(f"sqlite:///{path}", create=False).setup()
    assert not path.parent.exists()
    SqliteStore(path).setup()  # the default creates it
    existing = SqliteStore(path, create=False)
    existing.setup()
    existing.close()


def test_a_folder_that_cannot_be_created_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot create"):
        SqliteStore(blocker / "sub" / "m.db").setup()


def _corrupt_one_page(path: Path, table: str) -> None:
    """Overwrite the root b-tree page of ``table`` (never page 1) with garbage."""
    conn = sqlite3.connect(path)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    conn.close()
    with path.open("r+b") as f:
        f.seek((root[0] - 1) * page_size)
        f.write(b"\x0d" + b"\xa5" * (page_size - 1))


@pytest.mark.parametrize("table", ["records", "schema_migrations", "memlane_meta"])
def test_a_damaged_page_is_a_corrupt_store_error_on_every_path(tmp_path: Path, table: str) -> None:
    path = tmp_path / "m.db"
    with Memory(SqliteStore(path), embedder=FakeEmbedder()) as m:
        rid = m.add("alice likes tea", user_id="alice").id
        for i in range(300):
            m.add(f"note number {i} with some words to fill pages", user_id="alice")
    _corrupt_one_page(path, table)
    with Memory(SqliteStore(path), embedder=FakeEmbedder()) as m:
        calls = [
            lambda: m.list(user_id="alice"),
            lambda: m.get(rid, user_id="alice"),
            lambda: m.search("tea", user_id="alice"),
            lambda: m.add("more", user_id="alice"),
            lambda: m.export_rows(user_id="alice"),
            lambda: m.forget_user("alice"),
        ]
        for call in calls:
            with pytest.raises(CorruptStoreError):
                call()


def test_plain_paths_are_sqlite_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for given, expected in [
        ("x.db", "x.db"),
        ("./sub/x.db", "sub/x.db"),
        (f"{tmp_path}/abs.db", f"{tmp_path}/abs.db"),
    ]:
        store = open_store(given)
        assert isinstance(store, SqliteStore)
        assert Path(store.path).resolve() == (tmp_path / expected).resolve()
    with pytest.raises(ConfigurationError):
        open_store("memory:")  # a mistyped URL, not a file to create
    with pytest.raises(ConfigurationError):
        open_store("")


class _KeyRacer:
    """A real store through which every read of keyed fact ``status`` is followed by
    another writer setting it (a second Memory on the same file): ``times`` races lost."""

    def __init__(self, inner: SqliteStore, rival: Memory, times: int) -> None:
        self.inner, self.rival, self.left, self.rival_values = inner, rival, times, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def batch(self, ops_: list[object]) -> list[object]:

        result = self.inner.batch(ops_)  # type: ignore[arg-type]
        reads_key = any(isinstance(op, ops.ListRecords) and op.filters.key for op in ops_)
        if reads_key and self.left:
            self.left -= 1
            self.rival_values += 1
            self.rival.remember("status", f"rival {self.rival_values}", user_id="u")
        return result


def test_remember_retries_a_race_lost_to_another_writer(tmp_path: Path) -> None:
    """Another writer changes the key between remember's read and its write: that is a
    lost race, tried again (it was a ValidationError, "not current"), not bad input."""
    path = tmp_path / "race.db"
    rival = Memory(f"sqlite:///{path}", embedder=FakeEmbedder())
    rival.remember("status", "first", user_id="u")
    racer = _KeyRacer(SqliteStore(path), rival, times=2)
    m = Memory(racer, embedder=FakeEmbedder())  # type: ignore[arg-type]
    rec = m.remember("status", "mine", user_id="u")
    assert rec.metadata["value"] == "mine" and rec.is_current
    assert m.recall("status", user_id="u") == "mine"
    chain = m.list(user_id="u", filters=Filters(key="status", include_superseded=True)).items
    assert sorted(r.metadata["value"] for r in chain) == ["first", "mine", "rival 1", "rival 2"]
    assert [r.metadata["value"] for r in chain if r.is_current] == ["mine"]
    m.close()
    rival.close()


def test_remember_gives_up_with_conflict_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A race lost on every attempt ends in ConflictError (REST: 409, worth retrying),
    and the other writer's value stands."""
    from memlane.core import records

    monkeypatch.setattr(records, "REMEMBER_ATTEMPTS", 3)
    path = tmp_path / "race.db"
    rival = Memory(f"sqlite:///{path}", embedder=FakeEmbedder())
    rival.remember("status", "first", user_id="u")
    m = Memory(_KeyRacer(SqliteStore(path), rival, times=99), embedder=FakeEmbedder())  # type: ignore[arg-type]
    with pytest.raises(ConflictError, match="kept changing under 3 attempts"):
        m.remember("status", "mine", user_id="u")
    assert rival.recall("status", user_id="u") == "rival 3"
    m.close()
    rival.close()


def test_a_neighbors_walk_reads_edges_by_their_ends_not_every_edge(tmp_path: Path) -> None:
    """Each step of the walk looks up the edges of the entities just reached through the
    subject and object indexes: at a million edges a scan of the user's edges per call
    took 18 s for one neighbour."""
    from memlane.ports import store as ops
    from memlane.stores.sql import graph as graph_sql
    from memlane.stores.sqlite_sql import DIALECT

    store = SqliteStore(tmp_path / "m.db")
    store.setup()
    sql, params = next(graph_sql.entity_neighbors(DIALECT, ops.EntityNeighbors("u", "e1", 2)))
    with store._lock:
        plan = " | ".join(
            row[3] for row in store._connection().execute(f"EXPLAIN QUERY PLAN {sql}", params)
        )
    assert "relations_subject" in plan and "relations_object" in plan, plan
    assert "PRIMARY KEY (user_id=?)" not in plan, plan
    store.close()


def test_the_log_is_copied_into_the_file_on_a_thread_not_in_the_writes(tmp_path: Path) -> None:
    """Writes leave the log to a thread of the process (a search's writes used to pay
    the copy, ~24 ms in one search of ~80 at a million memories): soon after them the
    database file alone holds them, while the store is open; the store's own
    connection copies only past the backstop; closing the store ends the thread."""
    import shutil
    import threading

    from memlane.stores.sqlite_wal import BACKSTOP_PAGES

    path = tmp_path / "m.db"
    store = SqliteStore(path)
    m = Memory(store, embedder=FakeEmbedder())
    added = [m.add(f"heron note {i}", user_id="u") for i in range(30)]
    conn = store._connection()
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == BACKSTOP_PAGES
    assert store._wal is not None and store._wal.wait(10)
    assert store._wal.checkpoints >= 1
    shutil.copyfile(path, tmp_path / "copy.db")  # the file alone, without its log
    copy = sqlite3.connect(f"{(tmp_path / 'copy.db').as_uri()}?immutable=1", uri=True)
    (count,) = copy.execute("SELECT count(*) FROM records WHERE user_id = 'u'").fetchone()
    copy.close()
    assert count == len(added)
    m.close()
    assert not [t for t in threading.enumerate() if t.name == "memlane-wal"]


def test_forget_user_empties_the_log_while_checkpoints_run_beside_it(tmp_path: Path) -> None:
    """The erasure's own checkpoint (which empties the log) holds this process's
    checkpoint thread off: the words are off the disk before the store is closed."""
    path = tmp_path / "m.db"
    m = Memory(f"sqlite:///{path}", embedder=FakeEmbedder())
    for i in range(40):
        m.add(f"bob note {i} about gardening", user_id="bob")
        m.add(f"alice note {i} zanzibarquux", user_id="alice")
    m.forget_user("alice")
    assert [h.record.text for h in m.search("gardening", user_id="bob", limit=1)]
    files = store_files(tmp_path)
    assert files and all(b"zanzibarquux" not in p.read_bytes() for p in files)
    m.close()


def test_a_forked_child_checkpoints_on_a_thread_of_its_own(tmp_path: Path) -> None:
    """Forked while the parent's checkpoint thread runs, a child that writes gets its
    own connection and thread (the parent's, and any lock it held, are not in the
    child: the store starts afresh there on first use)."""
    import multiprocessing

    store = SqliteStore(tmp_path / "m.db")
    m = Memory(store, embedder=FakeEmbedder())
    m.add("heron note", user_id="u")
    parents = store._wal

    def child() -> None:
        assert store._wal is None  # let go at the fork
        m.add("a child's note", user_id="u")
        assert store._wal is not None and store._wal is not parents
        assert store._wal.wait(10)
        assert store._wal.checkpoints > 0

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(30)
    assert process.exitcode == 0
    m.close()


def _log_to_copy(store: SqliteStore, megabytes: int) -> None:
    """Fill the store's write-ahead log with ``megabytes`` of pages for a checkpoint to
    copy (a scratch table), then tell its checkpoint thread of the write."""
    conn = store._connection()
    with store._lock:
        conn.execute("CREATE TABLE IF NOT EXISTS scratch (b BLOB)")
        conn.execute("BEGIN")
        for _ in range(megabytes):
            conn.execute("INSERT INTO scratch VALUES (randomblob(1000000))")
        conn.execute("COMMIT")
    assert store._wal is not None
    store._wal.wrote()


def _until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.0005)


def test_a_fork_in_mid_checkpoint_leaves_the_child_able_to_empty_the_log(
    tmp_path: Path,
) -> None:
    """SQLite keeps a process's locks in memory a forked child copies: forked while the
    checkpoint thread copied the log, the child found the log checkpoint-locked for good
    (an erasure's words stayed in it). The fork now waits for the copy to end."""
    import multiprocessing

    path = tmp_path / "m.db"
    store = SqliteStore(path)
    m = Memory(store, embedder=FakeEmbedder())
    m.add("heron note", user_id="u")
    assert store._wal is not None and store._wal.wait(10)
    _log_to_copy(store, 24)
    _until(lambda: store._wal is not None and store._wal._running)

    def child() -> None:
        for i in range(10):
            m.add(f"alice secret zanzibarquux{i}", user_id="alice")
        m.forget_user("alice")
        wal = Path(f"{path}-wal")
        assert not wal.exists() or b"zanzibarquux" not in wal.read_bytes()
        assert b"zanzibarquux" not in path.read_bytes()

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(60)
    assert process.exitcode == 0
    m.close()


def test_an_erasure_waits_out_another_connections_checkpoint(tmp_path: Path) -> None:
    """Another store on the file (another process's, say) copies its log on its thread
    after its writes; an erasure meeting that copy tries again to empty the log, rather
    than leave the erased words in it while the stores stay open."""
    path = tmp_path / "m.db"
    a = Memory(SqliteStore(path), embedder=FakeEmbedder())
    other = SqliteStore(path)
    b = Memory(other, embedder=FakeEmbedder())
    for i in range(10):
        a.add(f"alice secret zanzibarquux{i}", user_id="alice")
    b.add("bob's note", user_id="bob")
    assert other._wal is not None and other._wal.wait(10)
    _log_to_copy(other, 24)
    _until(lambda: other._wal is not None and other._wal._running)
    a.forget_user("alice")
    wal = Path(f"{path}-wal")
    assert not wal.exists() or b"zanzibarquux" not in wal.read_bytes()
    assert b"zanzibarquux" not in path.read_bytes()
    a.close()
    b.close()


def test_the_checkpoint_thread_keeps_to_the_file_the_store_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store opened by a relative path, then a change of directory: the thread (which
    opens its connection each time it starts) still names the store's own file, not one
    of that name in the new directory (a foreign database there was checkpointed)."""
    import os

    monkeypatch.chdir(tmp_path)
    store = SqliteStore("m.db")
    m = Memory(store, embedder=FakeEmbedder())
    m.add("heron note", user_id="u")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.chdir(elsewhere)
    assert store._wal is not None and store._wal.path == str(tmp_path / "m.db")
    m.add("another note", user_id="u")
    assert store._wal.wait(10) and store._wal.checkpoints >= 1
    m.close()


def test_the_session_index_holds_only_records_in_a_session_and_serves_each_lookup(
    tmp_path: Path,
) -> None:
    """Schema 21: a memory outside any session takes no room in the session index, and
    every lookup of a session's turns (neighbours, the turn before, a session's
    removal) still walks it rather than the user's every record."""
    from memlane.stores.neighbors import neighbors_sql

    path = tmp_path / "m.db"
    with Memory(f"sqlite:///{path}", embedder=FakeEmbedder()) as m:
        for i in range(30):
            m.add(f"fact {i}", user_id="u")
        for i in range(5):
            m.add(f"turn {i}", user_id="u", session_id="s1", kind="episode")
    conn = sqlite3.connect(path)
    try:
        conn.execute("ANALYZE records")  # counts each index's entries
        (stat,) = conn.execute(
            "SELECT stat FROM sqlite_stat1 WHERE idx = 'records_user_session'"
        ).fetchone()
        entries = int(stat.split()[0])
        (size,) = conn.execute(
            "SELECT count(*) FROM records WHERE session_id IS NOT NULL"
        ).fetchone()
        plans = []
        for sql, params in [
            *neighbors_sql("u", ["x"], 2, "now", "?", "IS"),
            ("DELETE FROM records WHERE user_id = ? AND session_id = ? AND kind IN (?, ?)",
             ("u", "s1", "episode", "summary")),
            ("SELECT text FROM records p WHERE p.user_id = ? AND p.session_id = ? "
             "AND p.kind = 'episode' AND p.id < ? ORDER BY p.id DESC LIMIT 1", ("u", "s1", "z")),
        ]:  # fmt: skip
            plans.append(" ".join(r[-1] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)))
    finally:
        conn.close()
    assert entries == size == 5
    assert all("USING INDEX records_user_session (user_id=? AND session_id=?" in p for p in plans)


def test_times_equal_to_the_creation_are_kept_once_and_read_back_whole(tmp_path: Path) -> None:
    """A record's ``updated_at`` and ``valid_from`` equal to its ``created_at`` are
    written as ``''`` and read back as that time; a ``valid_from`` of its own, or none,
    stays itself, and "valid at" reads each as before."""
    from dataclasses import replace
    from datetime import UTC, datetime

    path = tmp_path / "m.db"
    with Memory(f"sqlite:///{path}", embedder=FakeEmbedder()) as m:
        new = m.add("new today", user_id="u")
        said = m.add("said in 2020", user_id="u", event_at=datetime(2020, 1, 1, tzinfo=UTC))
        changed = m.update(new.id, text="new today, changed", user_id="u")
        bare = replace(said, id="01BARE", text="no start of its own", valid_from=None)
        m.store.batch([ops.WriteRecord(bare, None)])
        got = {r.id: r for r in m.list(user_id="u").items}
        before = {r.id for r in m.list(user_id="u", as_of=datetime(2021, 1, 1, tzinfo=UTC)).items}
        later = {r.id for r in m.list(user_id="u", as_of=datetime(2100, 1, 1, tzinfo=UTC)).items}
    assert got[new.id] == changed and got[said.id] == said and got[bare.id] == bare
    assert got[new.id].valid_from == new.created_at != got[new.id].updated_at
    assert got[bare.id].valid_from is None
    assert before == {said.id}  # the others are valid from their creation, today
    assert later == {new.id, said.id, bare.id}
    conn = sqlite3.connect(path)
    rows = dict(
        (
            (rid, (u, v))
            for rid, u, v in conn.execute("SELECT id, updated_at, valid_from FROM records")
        )
    )
    conn.close()
    assert rows[new.id][0].startswith(str(changed.updated_at.year)) and rows[new.id][1] == ""
    assert rows[said.id][0] == "" and rows[said.id][1].startswith("2020-01-01")
    assert rows[bare.id] == ("", None)
