"""History snapshots stored compactly (:mod:`memlane.stores.sql.snapshots`): the pure
packing against what reading gave before it, then what real SQLite and PostgreSQL hold
and give back (the conformance suite checks every backend's reads)."""

from __future__ import annotations

import dataclasses
import json
import random
import sqlite3
import string
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.servers import PostgresServer

from memlane import Memory
from memlane.ciphers import AesGcmCipher, Keyring, LocalMasterKey, generate_key
from memlane.errors import CorruptStoreError, SchemaVersionError
from memlane.models import (
    HistoryAction,
    HistoryEvent,
    MemoryKind,
    MemoryRecord,
    Trust,
    content_hash,
    to_iso,
)
from memlane.ports import store as ops
from memlane.ports.store import Store
from memlane.stores.postgres import PostgresStore
from memlane.stores.sealed import SEALED, SealedStore
from memlane.stores.sql.codecs import to_json
from memlane.stores.sql.snapshots import DEFAULTS, DERIVED, FIELDS, FORMAT, pack, unpack
from memlane.stores.sqlite import SqliteStore
from memlane.testing import FakeEmbedder, FixedClock

AT = datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=UTC)


def _record(**changes: Any) -> MemoryRecord:
    text = changes.pop("text", "Alice lives in London")
    return MemoryRecord(
        "01REC", "alice", MemoryKind.FACT, text, content_hash(text), AT, AT, valid_from=AT
    ).evolve(**changes)


def _row(event: HistoryEvent) -> dict[str, Any]:
    return {
        "record_id": event.record_id,
        "user_id": event.user_id,
        "version": event.version,
        "at": event.at,
    }


def _event(snapshot: Any, n: int = 0, **changes: Any) -> HistoryEvent:
    fields: dict[str, Any] = {"record_id": "01REC", "user_id": "alice", "version": 1, "at": AT}
    fields.update(changes)
    return HistoryEvent(f"01EV{n:04d}", action=HistoryAction.ADD, snapshot=snapshot, **fields)


def _stored_and_read(snapshot: Any, write: dict[str, Any], read: dict[str, Any]) -> Any:
    """What reading gives after writing ``snapshot``, through the JSON text stored."""
    return unpack(json.loads(to_json(pack(snapshot, write))), read)


def _as_before(snapshot: Any) -> Any:
    """What reading gave before packing: the snapshot's canonical JSON, parsed."""
    return json.loads(to_json(snapshot))


def _same(got: Any, want: Any) -> bool:
    """Equal as JSON text, keys in the same order: types too (0, 0.0, False differ)."""
    return json.dumps(got) == json.dumps(want)


# ---------------------------------------------------------------------------- pure


def test_format_1_is_the_records_fields_and_defaults_as_to_dict_writes_them() -> None:
    """Format 1 pins MemoryRecord's fields and defaults: if a default changes or a field
    comes or goes, old rows must still read as written: make a format 2, keep this one."""
    as_dict = MemoryRecord("i", "u", MemoryKind.FACT, "t", "h", AT, AT).to_dict()
    assert tuple(sorted(as_dict)) == FIELDS
    defaulted = {
        f.name: as_dict[f.name]
        for f in dataclasses.fields(MemoryRecord)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }
    assert _same(DEFAULTS, {k: defaulted[k] for k in DEFAULTS})
    # Derived instead: the event's version; valid from creation (a null is kept).
    assert set(defaulted) - set(DEFAULTS) == {"version", "valid_from"}
    assert set(FIELDS) - set(DEFAULTS) - {n for n, _ in DERIVED} == {"kind", "text"}


def test_the_hash_rule_is_content_hash_for_ascii_and_nothing_else() -> None:
    rng = random.Random(7)
    hash_rule = dict(DERIVED)["content_hash"]
    letters = string.printable + "\x1c\x1d\x1e\x1f\x00"
    for _ in range(500):
        text = "".join(rng.choice(letters) for _ in range(rng.randrange(0, 40)))
        assert hash_rule({"text": text}, {}) == content_hash(text)
    assert hash_rule({"text": "Zoë"}, {}) is None
    assert hash_rule({"text": None}, {}) is None


def test_a_typical_snapshot_keeps_only_what_nothing_else_says() -> None:
    event = _event(_record().to_dict())
    packed = pack(event.snapshot or {}, _row(event))
    assert packed == [FORMAT, {"kind": "fact", "text": "Alice lives in London"}]
    assert _same(unpack(packed, _row(event)), _as_before(event.snapshot))
    said = AT - timedelta(days=2)  # valid from when it happened, as Memory.add has it
    event = _event(_record(event_at=said, valid_from=said, updated_at=AT).to_dict(), version=1)
    assert set(pack(event.snapshot or {}, _row(event))[1]) == {"kind", "text", "event_at"}


def test_other_shapes_are_stored_as_they_are() -> None:
    sealed = {SEALED: "c2VhbGVk"}
    partial = {k: v for k, v in _record().to_dict().items() if k != "quarantine"}
    for snapshot in (sealed, partial, {}, {"text": "x", "~": 1}):
        assert pack(snapshot, _row(_event(snapshot))) is snapshot
        assert unpack(_as_before(snapshot), _row(_event(snapshot))) == snapshot


def test_a_naive_event_time_keeps_the_snapshot_whole() -> None:
    snapshot = _record().to_dict()
    row = {**_row(_event(snapshot)), "at": AT.replace(tzinfo=None)}
    assert pack(snapshot, row) is snapshot


def test_unknown_or_broken_packing_is_a_typed_error() -> None:
    row = _row(_event(None))
    with pytest.raises(SchemaVersionError):
        unpack([FORMAT + 1, {}], row)
    for broken in ([FORMAT], [FORMAT, []], ["1", {}], [FORMAT, {}]):
        with pytest.raises(CorruptStoreError):
            unpack(broken, row)


_CONFUSABLE: list[Any] = [None, 0, 0.0, -0.0, False, True, 1, 1.0, 0.5, 0.50000001, "",
                          "user", "fact", [], {}, [None], {"": None}, "01REC", "alice", 2,
                          to_iso(AT), AT.isoformat()]  # fmt: skip


def _random_record(rng: random.Random) -> MemoryRecord:
    def when() -> datetime:
        return AT + timedelta(microseconds=rng.randrange(-(10**12), 10**12))

    def maybe(value: Any, default: Any = None) -> Any:
        return value if rng.random() < 0.4 else default

    created = rng.choice([AT, when()])
    event_at = maybe(when())
    text = rng.choice(["tea", "Café  Zürich", "A  b\tC", "", "x" * 300])
    return MemoryRecord(
        rng.choice(["01REC", "01OTHER"]), rng.choice(["alice", "bob"]),
        rng.choice(list(MemoryKind)), text,
        rng.choice([content_hash(text), content_hash("else")]), created,
        rng.choice([created, AT, when()]), version=rng.choice([1, 2, 7]),
        agent_id=maybe("a"), team=maybe("t"), session_id=maybe("s"), key=maybe("k"),
        topics=maybe(("x", "y"), ()), metadata=maybe({"n": 1, "e": {}, "l": []}, {}),
        importance=rng.choice([0.5, 0.0, 1.0, 0.50000001]), event_at=event_at,
        valid_from=rng.choice([None, created, event_at, when()]), valid_to=maybe(when()),
        superseded_by=maybe("01NEXT"), expires_at=maybe(when()), deleted_at=maybe(when()),
        access_count=rng.choice([0, 0, 3]), last_accessed_at=maybe(when()),
        source_ids=maybe(("m",), ()), actor=maybe("bot"), context_hash=maybe("c"),
        periods=maybe(("2025-01-01T00:00:00.000000Z/2025-01-02T00:00:00.000000Z",), ()),
        trust=rng.choice(list(Trust)), quarantine=maybe(("hidden_text",), ()),
    )  # fmt: skip


def test_random_snapshots_read_back_exactly_as_before() -> None:
    """Property: whatever the snapshot (a record's, a record's with values swapped for
    look-alikes of other types, keys missing or added) and whatever the event's row, reading
    what is stored gives what reading the whole JSON gave, key order included; the event's
    time written in any zone and read in UTC, as a store gives it back."""
    rng = random.Random(20261203)
    packed = 0
    for n in range(3000):
        snapshot: dict[str, Any] = _random_record(rng).to_dict()
        for _ in range(rng.choice([0, 0, 1, 3])):
            snapshot[rng.choice(sorted(snapshot))] = rng.choice(_CONFUSABLE)
        if rng.random() < 0.1:
            del snapshot[rng.choice(sorted(snapshot))]
        if rng.random() < 0.1:
            snapshot[rng.choice(["~", "new_field", "memlane:sealed"])] = rng.choice(_CONFUSABLE)
        at = rng.choice([AT, AT + timedelta(microseconds=1)])
        event = _event(
            snapshot, n,
            record_id=rng.choice(["01REC", "01OTHER"]), user_id=rng.choice(["alice", "bob"]),
            version=rng.choice([1, 2, 7]),
            at=at.astimezone(timezone(timedelta(hours=rng.choice([0, 5, -8])))),
        )  # fmt: skip
        write = _row(event)
        read = {**write, "at": at.astimezone(UTC)}
        got = _stored_and_read(snapshot, write, read)
        assert _same(got, _as_before(snapshot)), (n, snapshot)
        packed += isinstance(pack(snapshot, write), list)
    assert 1500 < packed < 3000  # both paths taken


# ---------------------------------------------------------------------------- stores


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Any, str]]:
    """A store, a raw connection to its database and its parameter mark."""
    if request.param == "sqlite":
        path = tmp_path / "s.db"
        store: Store = SqliteStore(path)
        store.batch([ops.ListUsers()])  # creates the schema
        conn: Any = sqlite3.connect(path, isolation_level=None)
        mark = "?"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.new_database("snap")
        store = PostgresStore(url, max_connections=2)
        store.batch([ops.ListUsers()])
        conn = psycopg.connect(url, autocommit=True)
        mark = "%s"
    yield store, conn, mark
    conn.close()
    store.close()


def _raw(conn: Any, mark: str, event_id: str) -> str:
    sql = f"SELECT snapshot FROM history WHERE id = {mark}"
    row = conn.execute(sql, (event_id,)).fetchone()
    return str(row[0])


def test_stores_keep_a_snapshot_short_and_read_it_whole(backend: tuple[Store, Any, str]) -> None:
    store, conn, mark = backend
    plain = _record()
    full = _record(
        text="Zoë in Zürich", version=3, agent_id="a", team="t", session_id="s", key="k",
        topics=("home",), metadata={"a": {"b": [1, None]}}, importance=0.50000001,
        event_at=AT - timedelta(days=1), valid_from=AT - timedelta(days=1), valid_to=AT,
        superseded_by="01NEXT", access_count=2, last_accessed_at=AT, source_ids=("m",),
        actor="bot", context_hash="c", trust=Trust.TOOL, quarantine=("hidden_text",),
        created_at=AT - timedelta(days=2),
    )  # fmt: skip
    events = (_event(plain.to_dict(), 1), _event(full.to_dict(), 2, version=3))
    store.batch([ops.AppendHistory(events)])
    got = [e.snapshot for e in store.batch([ops.GetHistory("alice", "01REC")])[0]]
    assert _same(got, [_as_before(plain.to_dict()), _as_before(full.to_dict())])
    short, long = _raw(conn, mark, "01EV0001"), _raw(conn, mark, "01EV0002")
    assert short == '[1,{"kind":"fact","text":"Alice lives in London"}]'
    assert len(short) * 8 < len(to_json(plain.to_dict()))
    assert long.startswith("[1,{") and len(long) < len(to_json(full.to_dict()))


def test_stores_read_a_snapshot_written_whole_as_before(backend: tuple[Store, Any, str]) -> None:
    """A row written before packing (the whole JSON object) reads as it did."""
    store, conn, mark = backend
    snapshot = _record(metadata={"z": 1, "a": 2}).to_dict()
    marks = ", ".join([mark] * 9)
    conn.execute(
        f"INSERT INTO history VALUES ({marks})",
        ("01EV0009", "01REC", "alice", "add", 1, to_iso(AT), None, None, to_json(snapshot)),
    )
    (event,) = store.batch([ops.GetHistory("alice", "01REC")])[0]
    assert _same(event.snapshot, _as_before(snapshot))
    assert event.at == AT


def test_encrypted_history_is_sealed_whole_and_reads_back(
    backend: tuple[Store, Any, str],
) -> None:
    """The sealing store's snapshot is its ``{SEALED: ...}`` mapping: stored as it is."""
    store, conn, mark = backend
    key = LocalMasterKey.parse(generate_key())
    m = Memory(
        SealedStore(store, AesGcmCipher(Keyring(None, key))),
        embedder=FakeEmbedder(),
        clock=FixedClock(),
    )
    rec = m.add("likes green tea", user_id="alice", topics=["tea"])
    (event,) = m.history(rec.id, user_id="alice")
    assert _same(event.snapshot, _as_before(rec.to_dict()))
    raw = json.loads(_raw(conn, mark, event.id))
    assert list(raw) == [SEALED] and "green" not in json.dumps(raw)


# ------------------------------------------------------- SQLite: the text kept once


def _raw_history(db: Path) -> list[tuple[str, int, str | None]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT action, version, snapshot FROM history ORDER BY id").fetchall()
    finally:
        conn.close()


ODD_TEXTS = ['Zoë said "hi"\n\tthen \\ left', "emoji 😀 and \u2028 and \x01", "plain"]


def test_an_event_keeps_no_copy_of_the_text_its_record_holds(tmp_path: Path) -> None:
    """SQLite: an event whose text is the record's text keeps none (format 2); when the
    text changes, the events before get theirs written in, and every event reads the
    record as it was at its version."""
    db = tmp_path / "m.db"
    first, second, third = ODD_TEXTS
    with Memory(f"sqlite:///{db}", embedder=FakeEmbedder(), clock=FixedClock()) as m:
        rec = m.add(first, user_id="alice")
        ((_, _, added),) = _raw_history(db)
        assert json.loads(added)[0] == 2 and "text" not in json.loads(added)[1]
        m.add("plain", user_id="bob")
        assert _raw_history(db)[-1][2] == '[2,{"kind":"fact"}]'  # an ASCII text's hash too
        m.update(rec.id, text=second, user_id="alice")
        m.update(rec.id, text=third, user_id="alice")
        m.update(rec.id, metadata={"n": 1}, user_id="alice")  # the text as it was
        m.delete(rec.id, user_id="alice")
        events = m.history(rec.id, user_id="alice")
        current = m.get(rec.id, user_id="alice")
    assert [e.version for e in events] == [1, 2, 3, 4, 5]
    assert [e.snapshot["text"] for e in events] == [first, second, third, third, third]
    assert events[-1].snapshot == current.to_dict()
    raw = _raw_history(db)[:1] + _raw_history(db)[2:]  # alice's
    assert [json.loads(s)[0] for _, _, s in raw] == [1, 1, 2, 2, 2]  # the last three: none
    assert [json.loads(s)[1]["text"] for _, _, s in raw[:2]] == [first, second]
    assert all("text" not in json.loads(s)[1] for _, _, s in raw[2:])


def test_a_record_removed_leaves_no_text_in_its_history(tmp_path: Path) -> None:
    """Removing records scrubs their history (as before), and no trigger writes the
    text back in: neither the text nor its old versions stay in the file's history."""
    db = tmp_path / "m.db"
    with Memory(f"sqlite:///{db}", embedder=FakeEmbedder()) as m:
        gone = m.add("my secret plan", user_id="alice")
        m.update(gone.id, text="my secret plan, revised", user_id="alice")
        kept = m.add("my public plan", user_id="alice")
        m.store.batch([ops.RemoveRecords("alice", (gone.id,))])
        assert [e.snapshot for e in m.history(gone.id, user_id="alice")] == [None, None]
        assert m.history(kept.id, user_id="alice")[0].snapshot["text"] == "my public plan"
    assert not any("secret" in (s or "") for _, _, s in _raw_history(db))


def test_a_record_deleted_without_its_history_scrubbed_hands_its_text_over(
    tmp_path: Path,
) -> None:
    """A row deleted by a path that does not scrub first (none does today; SQL from
    outside could) leaves its events whole: nothing is lost."""
    db = tmp_path / "m.db"
    with Memory(f"sqlite:///{db}", embedder=FakeEmbedder()) as m:
        rec = m.add(ODD_TEXTS[0], user_id="alice")
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("DELETE FROM records WHERE id = ?", (rec.id,))
    conn.close()
    ((_, _, raw),) = _raw_history(db)
    assert json.loads(raw)[1]["text"] == ODD_TEXTS[0]
    with Memory(f"sqlite:///{db}", embedder=FakeEmbedder()) as m:
        (event,) = m.history(rec.id, user_id="alice")
    assert event.snapshot == rec.to_dict()


def test_an_event_written_before_its_record_changes_keeps_its_own_text(
    tmp_path: Path,
) -> None:
    """Within one batch the event may come before the record's new row, or after: each
    event reads the text it was written with."""
    db = tmp_path / "m.db"
    store = SqliteStore(db)
    old = _record(id="01REC", text="before")
    new = dataclasses.replace(old, text="after", version=2)
    store.batch([ops.WriteRecord(old, None), ops.AppendHistory((_event(old.to_dict(), 1),))])
    ahead = _event(new.to_dict(), 2, version=2)  # written while the row still says "before"
    store.batch([ops.AppendHistory((ahead,)), ops.WriteRecord(new, 1)])
    later = _event(new.to_dict(), 3, version=2)
    store.batch([ops.AppendHistory((later,))])
    events = store.batch([ops.GetHistory("alice", "01REC")])[0]
    store.close()
    assert [e.snapshot["text"] for e in events] == ["before", "after", "after"]
    assert [json.loads(s)[0] for _, _, s in _raw_history(db)] == [1, 1, 2]


def test_history_written_before_migration_19_reads_as_it_did(tmp_path: Path) -> None:
    from memlane.stores.sqlite_sql import MIGRATIONS

    (version,) = [v for v, name, _ in MIGRATIONS if "text while it holds it" in name]
    db = tmp_path / "m.db"
    with Memory(f"sqlite:///{db}", embedder=FakeEmbedder()) as m:
        rec = m.add("written before", user_id="alice")
    conn = sqlite3.connect(db)
    with conn:  # as memlane wrote it before: the text in the snapshot
        conn.execute("DROP TRIGGER history_text_au")
        conn.execute("DROP TRIGGER history_text_ad")
        conn.execute("DELETE FROM schema_migrations WHERE version = ?", (version,))
        conn.execute(
            "UPDATE history SET snapshot = ?", ('[1,{"kind":"fact","text":"written before"}]',)
        )
    conn.close()
    with Memory(f"sqlite:///{db}", embedder=FakeEmbedder()) as m:
        m.update(rec.id, text="written after", user_id="alice")
        events = m.history(rec.id, user_id="alice")
    assert [e.snapshot["text"] for e in events] == ["written before", "written after"]
    assert [json.loads(s)[0] for _, _, s in _raw_history(db)] == [1, 2]


def test_migration_20_keys_history_by_user_record_and_event(tmp_path: Path) -> None:
    """A file whose history is a rowid table (schema 19) is copied into the keyed
    table as it is, event for event; its text triggers still act after the copy, and
    an event id stays unique in its scope."""
    from memlane.stores.sqlite_sql import MIGRATIONS

    (version,) = [v for v, name, _ in MIGRATIONS if "without a rowid" in name]
    db = tmp_path / "m.db"
    with Memory(f"sqlite:///{db}", embedder=FakeEmbedder()) as m:
        first = m.add("first text", user_id="alice")
        m.update(first.id, text="first text, changed", user_id="alice")
        second = m.add("second text", user_id="bob")
    before = _raw_history(db)
    conn = sqlite3.connect(db)
    with conn:  # history as schema 19 kept it
        conn.executescript(
            """
            DROP TRIGGER history_text_au;
            DROP TRIGGER history_text_ad;
            CREATE TABLE history_rowid (
                id TEXT NOT NULL, record_id TEXT NOT NULL, user_id TEXT NOT NULL,
                action TEXT NOT NULL, version INTEGER NOT NULL, at TEXT NOT NULL,
                actor TEXT, reason TEXT, snapshot TEXT, PRIMARY KEY (user_id, id));
            INSERT INTO history_rowid SELECT * FROM history ORDER BY id;
            DROP TABLE history;
            ALTER TABLE history_rowid RENAME TO history;
            CREATE INDEX history_record ON history(user_id, record_id, id);
            """
        )
        rewound = (version - 1, version)
        conn.execute("DELETE FROM schema_migrations WHERE version IN (?, ?)", rewound)
    conn.close()
    with Memory(f"sqlite:///{db}", embedder=FakeEmbedder()) as m:
        assert _raw_history(db) == before
        m.update(second.id, text="second text, changed", user_id="bob")
        texts = [e.snapshot["text"] for e in m.history(second.id, user_id="bob")]
        assert texts == ["second text", "second text, changed"]
        (event,) = m.history(first.id, user_id="alice")[:1]
        again = dataclasses.replace(event, record_id=second.id)  # the same id, elsewhere
        m.store.batch([ops.AppendHistory((again,))])
        assert m.store.batch([ops.GetHistory("alice", second.id)])[0] == []
    conn = sqlite3.connect(db)
    sql = "SELECT sql FROM sqlite_master WHERE tbl_name = 'history' AND type = 'table'"
    (table,) = conn.execute(sql).fetchone()
    conn.close()
    assert "WITHOUT ROWID" in table and "PRIMARY KEY (user_id, record_id, id)" in table


def test_forgetting_a_user_deletes_history_without_writing_texts_in_first(
    tmp_path: Path,
) -> None:
    """History goes before records: the records' deletion finds no event to hand its
    text to (a write an event for nothing, a million at a million memories)."""
    with Memory(f"sqlite:///{tmp_path}/m.db", embedder=FakeEmbedder()) as m:
        for i in range(20):
            m.add(f"note number {i}", user_id="u")
        conn = m.store._conn  # type: ignore[attr-defined]
        conn.executescript(
            "CREATE TEMP TABLE hits(n INTEGER); INSERT INTO hits VALUES (0);"
            "CREATE TEMP TRIGGER count_updates AFTER UPDATE ON main.history "
            "BEGIN UPDATE hits SET n = n + 1; END;"
        )
        m.forget_user("u")
        (rewritten,) = conn.execute("SELECT n FROM temp.hits").fetchone()
        (left,) = conn.execute("SELECT count(*) FROM history").fetchone()
    assert rewritten == 0 and left == 0
