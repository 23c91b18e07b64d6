"""`memlane migrate`: a real SQLite file into a real PostgreSQL database, verified."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from tests.servers import PostgresServer

from memlane import Memory
from memlane.cli import cli
from memlane.migrate import checksum, migrate, verify
from memlane.models import Job, JobStatus, MemoryKind
from memlane.ports import store as ops
from memlane.testing import FakeEmbedder, FixedClock


def _fill(url: str) -> dict[str, int]:
    """A store with every kind of row, for two users; returns the row counts."""
    with Memory(url, embedder=FakeEmbedder(), clock=FixedClock()) as m:
        # Numbers PostgreSQL's jsonb would renormalize (1e16 -> int, -0.0 -> 0.0): the
        # checksum fails unless they come back exactly.
        meta = {"k": 1, "zz": 1e16, "a": -0.0, "m": 0.1}
        rec = m.add("likes tea", user_id="ann", topics=["drinks"], metadata=meta)
        m.update(rec.id, user_id="ann", text="likes green tea", reason="precise")
        m.supersede(rec.id, "likes coffee now", user_id="ann")
        gone = m.add("old phone number", user_id="ann")
        m.delete(gone.id, user_id="ann")
        m.remember("plan", {"tier": "pro"}, user_id="ann")
        m.add_messages("s1", [("user", "I adopted a puppy"), ("assistant", "Nice!")], user_id="ann")
        m.add_messages("s1", [("user", "Her name is Biscuit")], user_id="ann")
        m.set_state("s1", {"step": 1}, user_id="ann", expected_version=0)
        m.set_state("s1", {"step": 2}, user_id="ann", expected_version=1)
        m.add("bob plays chess", user_id="bob", ttl=timedelta(days=36500))
        t0 = datetime(2024, 1, 1, tzinfo=UTC)
        job = Job("J1", "bob", "extract", {"x": [1]}, JobStatus.PENDING, t0, t0, t0)
        m.store.batch([ops.PutJob(job, 0)])
        rows = m.export_rows()
    counts: dict[str, int] = {}
    for row in rows[1:]:
        counts[row["type"]] = counts.get(row["type"], 0) + 1
    return counts


def test_sqlite_to_postgres_copies_and_verifies(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    src = f"sqlite:///{tmp_path}/src.db"
    dst = postgres_server.new_database("migrate")
    expected = _fill(src)
    assert set(expected) == {"record", "history", "session", "message", "state", "job"}
    embedder = FakeEmbedder()
    report = migrate(src, dst, embedder=embedder)
    assert report.ok and report.mismatches == []
    assert dict(report.counts) == dict(sorted(expected.items()))
    assert embedder.calls == 0  # every vector came from the source's cache
    assert report.vectors_copied > 0
    for check in report.users:
        assert check.source_counts == check.target_counts
    again = migrate(src, dst, embedder=FakeEmbedder())  # re-running is safe
    assert again.ok and dict(again.counts) == dict(report.counts)
    assert again.to_dict()["checksum"] == report.to_dict()["checksum"]
    with Memory(dst, embedder=FakeEmbedder(), clock=FixedClock()) as m:
        assert m.search("coffee", user_id="ann")[0].record.text == "likes coffee now"
        assert m.recall("plan", user_id="ann") == {"tier": "pro"}
        assert [msg.seq for r in m.get_history("s1", user_id="ann") for msg in r.messages] == [
            1,
            2,
            3,
        ]
        assert m.get_state("s1", user_id="ann").data == {"step": 2}
        assert m.store.batch([ops.GetJob("bob", "J1")])[0].payload == {"x": [1]}
        kinds = {r.kind for r in m.list(user_id="ann").items}
        assert MemoryKind.EPISODE in kinds and MemoryKind.KEYED_FACT in kinds
    with psycopg.connect(dst) as conn:
        (n,) = conn.execute("SELECT count(*) FROM history").fetchone() or (0,)
    assert n == expected["history"]  # nothing duplicated


def test_verify_reports_a_difference(tmp_path: Path, postgres_server: PostgresServer) -> None:
    src = f"sqlite:///{tmp_path}/src.db"
    dst = postgres_server.new_database("verify")
    _fill(src)
    assert migrate(src, dst, embedder=FakeEmbedder()).ok
    with Memory(dst, embedder=FakeEmbedder()) as m:
        m.add("written only to the target", user_id="bob")
    report = verify(src, dst, embedder=FakeEmbedder())
    assert not report.ok and report.mismatches == ["bob"]
    bob = next(u for u in report.users if u.user_id == "bob")
    assert bob.target_counts["record"] == bob.source_counts["record"] + 1


def test_a_catch_up_run_reports_a_user_forgotten_on_the_source(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    src = f"sqlite:///{tmp_path}/src.db"
    dst = postgres_server.new_database("catchup")
    _fill(src)
    assert migrate(src, dst, embedder=FakeEmbedder()).ok
    with Memory(src, embedder=FakeEmbedder()) as m:
        m.forget_user("bob")
    again = migrate(src, dst, embedder=FakeEmbedder())
    assert not again.ok and again.mismatches == ["bob"]  # the target still holds bob


def test_checksum_ignores_order_and_header() -> None:
    a = [{"type": "header", "exported_at": "x"}, {"type": "record", "data": {"a": 1, "b": 2}}]
    b = [{"type": "record", "data": {"b": 2, "a": 1}}, {"type": "header", "exported_at": "y"}]
    assert checksum(a) == checksum(b)
    assert checksum(a) != checksum([{"type": "record", "data": {"a": 1, "b": 3}}])


def test_cli_migrate(
    tmp_path: Path, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMLANE_EMBEDDER", "fake")
    src = f"sqlite:///{tmp_path}/cli.db"
    dst = postgres_server.new_database("climigrate")
    _fill(src)
    runner = CliRunner()
    result = runner.invoke(cli, ["migrate", src, dst, "--no-progress", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["ok"] is True and out["users"] == 2 and out["counts"]["job"] == 1
    text = runner.invoke(cli, ["migrate", src, dst, "--no-progress"])
    assert text.exit_code == 0 and "verified: ok" in text.output
    same = runner.invoke(cli, ["migrate", src, src])
    assert same.exit_code != 0 and "same store" in same.output
    plain = runner.invoke(cli, ["migrate", src, f"{tmp_path}/cli.db"])  # one file, two spellings
    assert plain.exit_code != 0 and "same store" in plain.output


def test_nul_characters_are_refused_on_every_backend(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    from memlane.errors import ValidationError

    for url in (f"sqlite:///{tmp_path}/n.db", postgres_server.new_database("nul")):
        with Memory(url, embedder=FakeEmbedder()) as m:
            with pytest.raises(ValidationError, match="NUL"):
                m.add("bad\x00text", user_id="ann")
            with pytest.raises(ValidationError, match="NUL"):
                m.add("fine", user_id="ann", metadata={"k": ["ok", "b\x00d"]})
            assert len(m.list(user_id="ann").items) == 0


def test_a_user_the_target_refuses_is_reported_and_the_others_copied(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    import sqlite3

    src = f"sqlite:///{tmp_path}/src.db"
    dst = postgres_server.new_database("refused")
    _fill(src)
    with sqlite3.connect(tmp_path / "src.db") as conn:  # damage one of ann's rows by hand
        conn.execute("UPDATE records SET text = 'likes ' || char(0) || 'tea' WHERE user_id = 'ann'")
    report = migrate(src, dst, embedder=FakeEmbedder())
    assert not report.ok and report.mismatches == ["ann"]
    ann = next(u for u in report.users if u.user_id == "ann")
    assert ann.error and report.to_dict()["errors"] == {"ann": ann.error}
    bob = next(u for u in report.users if u.user_id == "bob")
    assert bob.ok and bob.target_counts["record"] == 1


def test_a_missing_source_is_an_error_and_never_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from memlane.errors import StoreError

    missing = tmp_path / "typo" / "memlane.db"
    dst = tmp_path / "dst.db"
    with pytest.raises(StoreError, match="no SQLite database"):
        migrate(f"sqlite:///{missing}", f"sqlite:///{dst}", embedder=FakeEmbedder())
    monkeypatch.setenv("MEMLANE_EMBEDDER", "fake")
    result = CliRunner().invoke(cli, ["migrate", str(missing), str(dst), "--no-progress"])
    assert result.exit_code == 1 and "StoreError" in result.output
    assert "verified" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not missing.parent.exists()
    memory_source = CliRunner().invoke(cli, ["migrate", "memory://", str(dst), "--no-progress"])
    assert memory_source.exit_code == 1 and "nothing to read" in memory_source.output


def test_a_foreign_target_is_refused_and_left_byte_for_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    src = f"sqlite:///{tmp_path}/src.db"
    _fill(src)
    target = tmp_path / "other.db"
    conn = sqlite3.connect(target)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    before = target.read_bytes()
    names = sorted(p.name for p in tmp_path.iterdir())
    monkeypatch.setenv("MEMLANE_EMBEDDER", "fake")
    result = CliRunner().invoke(cli, ["migrate", src, str(target), "--no-progress"])
    assert result.exit_code == 1 and "ForeignStoreError" in result.output
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # no -wal, -shm
