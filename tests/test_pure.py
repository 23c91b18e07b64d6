"""Pure pieces: ids, models, fusion, summaries, text."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from memlane import Filters, MemoryRecord, Scope, ValidationError
from memlane.core.search import rrf
from memlane.core.summary import extractive_summary
from memlane.ids import new_id
from memlane.models import content_hash, from_iso, to_iso
from memlane.text import bm25_scores, query_terms


def test_ids_sort_by_time_and_are_unique() -> None:
    ids = [new_id() for _ in range(2000)]
    assert ids == sorted(ids) and len(set(ids)) == 2000 and all(len(i) == 26 for i in ids)
    assert new_id(1_000) < new_id(2_000_000_000_000)


def test_processes_forked_from_one_state_make_different_ids() -> None:
    """Two children forked after the parent made an id (in the same millisecond, or with
    the parent's clock ahead of theirs) each make ids the other never makes."""
    import multiprocessing

    fork = multiprocessing.get_context("fork")
    new_id(2_000_000_000_000)  # the parent's last id: in the future, so both continue it
    with fork.Pool(2) as pool:
        first, second = pool.map(_ids, [100, 100])
    assert len(set(first) | set(second)) == 200
    assert first == sorted(first) and second == sorted(second)


def _ids(n: int) -> list[str]:
    return [new_id() for _ in range(n)]


def test_scope_needs_a_user() -> None:
    with pytest.raises(ValidationError):
        Scope("")
    assert Scope.anonymous().user_id == "anonymous"
    with pytest.raises(ValidationError):
        Scope("u\x00x")


def test_times_round_trip() -> None:
    t = datetime(2023, 5, 8, 13, 56, 1, 123, tzinfo=UTC)
    assert from_iso(to_iso(t)) == t
    assert from_iso("2023-05-08T13:56:00") == datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
    with pytest.raises(ValidationError):
        to_iso(datetime(2023, 5, 8))
    with pytest.raises(ValidationError):
        from_iso("last tuesday")


def test_record_dict_round_trip_and_bad_input() -> None:
    now = datetime.now(UTC)
    rec = MemoryRecord(
        id="x", user_id="u", kind="fact", text="t", content_hash=content_hash("t"),  # type: ignore[arg-type]
        created_at=now, updated_at=now, topics=("a",), expires_at=now + timedelta(days=1),
    )  # fmt: skip
    assert MemoryRecord.from_dict(rec.to_dict()).to_dict() == rec.to_dict()
    with pytest.raises(ValidationError):
        MemoryRecord.from_dict({**rec.to_dict(), "surprise": 1})
    with pytest.raises(ValidationError):
        MemoryRecord.from_dict({**rec.to_dict(), "created_at": "soon"})


def test_filters_validate() -> None:
    now = datetime.now(UTC)
    with pytest.raises(ValidationError):
        Filters(since=now, until=now - timedelta(days=1))
    with pytest.raises(ValidationError):
        Filters(since=datetime(2020, 1, 1))
    with pytest.raises(ValidationError):
        Filters(topics="single")  # type: ignore[arg-type]


def test_content_hash_normalizes() -> None:
    assert content_hash("Hello   World") == content_hash("hello world")
    assert content_hash("hello world") != content_hash("hello, world")


def test_rrf_fuses_and_explains() -> None:
    fused = rrf(
        {"vector": [("a", 0.9), ("b", 0.8)], "lexical": [("b", 5.0), ("c", 1.0)]},
        {"vector": 1.0, "lexical": 1.0},
        k=60,
    )
    assert [rid for rid, _, _ in fused] == ["b", "a", "c"]
    assert fused[0][2]["lexical"]["rank"] == 1 and fused[0][2]["vector"]["rank"] == 2
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)


def test_extractive_summary_keeps_order_and_budget() -> None:
    lines = [
        ("user", "The budget for the garden project is tight. I like tulips."),
        ("assistant", "For the garden project, start with the budget plan."),
        ("user", "Unrelated: my cat is asleep."),
    ]
    summary = extractive_summary(lines, max_sentences=2, max_chars=500)
    picked = summary.splitlines()
    assert len(picked) == 2 and all("garden" in p or "budget" in p for p in picked)
    assert picked[0].startswith("user:") and picked[1].startswith("assistant:")
    assert extractive_summary([], max_sentences=3) == ""
    assert len(extractive_summary(lines, max_sentences=5, max_chars=80)) <= 80


def test_bm25_prefers_rare_terms() -> None:
    docs = [("1", ["the", "cat"]), ("2", ["the", "dog"]), ("3", ["the", "cat", "dog"])]
    scores = bm25_scores(["dog"], docs)
    assert set(scores) == {"2", "3"} and scores["2"] > scores["3"]
    assert query_terms("What is the?") == ["what", "is", "the"]
    assert query_terms("Where does Alice live?") == ["alice", "live"]


def test_redact_url_hides_every_password_and_keeps_other_urls() -> None:
    from memlane.urls import redact_url

    assert redact_url("postgresql://app:s3cret@db:5432/m") == "postgresql://app:***@db:5432/m"
    assert redact_url("redis://:s3cret@cache:6379/0") == "redis://:***@cache:6379/0"
    hidden = redact_url("postgresql:///m?host=/run/pg&Password=s3cret&sslmode=require")
    assert hidden == "postgresql:///m?host=/run/pg&Password=***&sslmode=require"
    assert "s3cret" not in redact_url("postgresql://app:s3cret@db:port/m")
    assert redact_url("sqlite:////var/lib/memlane.db") == "sqlite:////var/lib/memlane.db"


def test_row_codec_reads_a_row_by_position_as_by_name() -> None:
    """Rows are decoded straight into the model's arguments (no dict of fields); the
    result is the record written, every field set, on both stores' codecs, and the same
    as reading the fields by name."""
    from memlane.models import MemoryKind, Trust
    from memlane.stores.sql.codecs import EVENTS, RECORDS, RowCodec
    from memlane.stores.sqlite_sql import ROWS as SQLITE_ROWS

    t = datetime(2023, 5, 8, 13, 56, 1, 123, tzinfo=UTC)
    record = MemoryRecord(
        id="r1", user_id="u", kind=MemoryKind.EPISODE, text="said it", content_hash="h",
        created_at=t, updated_at=t + timedelta(1), version=3, agent_id="a", team="t",
        session_id="s", key="k", topics=("x", "y"), metadata={"n": 1, "d": {"e": [1]}},
        importance=0.7, event_at=t, valid_from=t, valid_to=t + timedelta(2),
        superseded_by="r2", expires_at=t + timedelta(3), deleted_at=t + timedelta(4),
        access_count=5, last_accessed_at=t, source_ids=("m1",), actor="Ann",
        context_hash="c", periods=("2023-05-07T00:00:00.000000Z/2023-05-08T00:00:00.000000Z",),
        trust=Trust.TOOL, quarantine=("instruction_override",),
    )  # fmt: skip
    assert SQLITE_ROWS.record(SQLITE_ROWS.values(RECORDS, record)) == record
    # PostgreSQL's rows end with the metadata's exact JSON text, read over the column's.
    exact = RowCodec(write_time=to_iso, read_time=from_iso, exact_metadata=True)
    row = (*exact.values(RECORDS, record), '{"n":1,"d":{"e":[1]},"z":null}')
    assert exact.record(row) == replace(record, metadata={"n": 1, "d": {"e": [1]}, "z": None})
    assert exact.record((*row[:-1], None)) == record
    plain = RowCodec(write_time=to_iso, read_time=from_iso)
    row = plain.values(RECORDS, record)
    assert plain.read(RECORDS, row) == MemoryRecord(**plain.fields(RECORDS, row)) == record
    event = plain.read(EVENTS, ("e1", "r1", "u", "add", 1, to_iso(t), None, None, '{"a":1}'))
    assert event.snapshot == {"a": 1} and event.at == t
