"""Store conformance, transfer: export and import."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from memlane.core.base import MemoryInput
from memlane.errors import (
    ImportFormatError,
    ValidationError,
)
from memlane.models import Job, JobStatus
from memlane.ports import store as ops
from memlane.testing.conformance._base import ConformanceBase, _day, _raises, _strip_header


class TransferConformance(ConformanceBase):
    """Conformance tests of transfer."""

    def test_export_import_round_trip(self) -> None:
        m, _, _ = self._memory()
        rec = m.add("likes tea", user_id="u", topics=["drinks"], metadata={"k": 1})
        m.update(rec.id, user_id="u", text="likes green tea")
        current = m.supersede(rec.id, "likes coffee now", user_id="u")
        m.add_messages("s", [("user", "hello"), ("assistant", "hi")], user_id="u")
        m.set_state("s", {"a": 1}, user_id="u", expected_version=0)
        m.set_state("s", {"a": 2}, user_id="u", expected_version=1)
        t0 = _day(2024, 1, 1)
        job = Job("J1", "u", "extract", {"x": [1]}, JobStatus.PENDING, t0, t0, t0)
        m.store.batch([ops.PutJob(job, 0)])
        rows = m.export_rows()
        assert sum(r["type"] == "job" for r in rows) == 1
        other, _, _ = self._memory()
        other.import_rows(rows)
        again = other.export_rows()
        assert _strip_header(again) == _strip_header(rows)
        other.import_rows(rows)  # idempotent
        assert _strip_header(other.export_rows()) == _strip_header(rows)
        newer = other.update(current.id, user_id="u", importance=0.9)
        other.import_rows(rows)  # an older export never rolls a record back
        assert other.get(current.id, user_id="u").version == newer.version
        assert other.search("coffee", user_id="u")[0].record.text == "likes coffee now"
        m.close()
        other.close()

    def test_odd_arguments_are_typed_errors_or_work(self) -> None:
        m, _, _ = self._memory()
        stored = m.add_many((MemoryInput(text=f"note {i}") for i in range(3)), user_id="u")
        assert len(stored) == 3  # a generator is fine
        for bad in (
            lambda: m.add("x", user_id="u", topics=None),  # type: ignore[arg-type]
            lambda: m.add("x", user_id="u", source_ids=None),  # type: ignore[arg-type]
            lambda: m.add("x", user_id="u", ttl=timedelta(days=3_000_000)),
            lambda: m.update(stored[0].id, user_id="u", metadata=None),  # type: ignore[arg-type]
            lambda: m.sweep(now=datetime(2024, 1, 1)),  # naive on purpose
            lambda: m.sweep(batch_size=0),
            lambda: m.export_rows(user_id="u", page=0),
            lambda: m.update_state("s", {"a": 1}, user_id="u", retries=-1),
        ):
            with _raises(ValidationError):
                bad()
        assert len(m.list(user_id="u").items) == 3
        m.close()

    def test_bad_import_changes_nothing(self) -> None:
        m, _, _ = self._memory()
        m.add("already here", user_id="u")
        before = m.export_rows()
        good = m.export_rows()[1]
        rows: list[dict[str, Any]] = [
            {**good, "data": {**good["data"], "id": "NEWID"}},
            {"type": "record", "data": {"id": "x"}},
        ]
        with _raises(ImportFormatError):
            m.import_rows(rows)
        assert _strip_header(m.export_rows()) == _strip_header(before)
        m.set_state("s", {"a": 1}, user_id="u", expected_version=0)
        before = m.export_rows()
        state = next(r for r in before if r["type"] == "state")
        record = next(r for r in before if r["type"] == "record")
        for bad in (
            {**state, "data": {**state["data"], "data": "oops"}},
            {**state, "data": {**state["data"], "version": -5}},
            {**record, "data": {**record["data"], "metadata": {"x": float("nan")}}},
            {**record, "data": {**record["data"], "topics": "food"}},
            {**record, "data": {**record["data"], "version": "7"}},
        ):
            with _raises(ImportFormatError):
                m.import_rows([bad])
        assert _strip_header(m.export_rows()) == _strip_header(before)
        m.close()
