"""Store conformance, records: adding, reading, listing, filtering, updating,
expiring and batches."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from typing import Any

from memlane.core.base import MemoryInput
from memlane.errors import (
    ConflictError,
    NotFoundError,
    ValidationError,
)
from memlane.ids import stable_id
from memlane.models import (
    Filters,
    HistoryAction,
    HistoryEvent,
    Job,
    JobStatus,
    MemoryKind,
    MemoryRecord,
    Trust,
    content_hash,
)
from memlane.ports import store as ops
from memlane.testing.conformance._base import ConformanceBase, _day, _raises


def _canonical(snapshot: Any) -> str:
    return json.dumps(snapshot, sort_keys=True)


class RecordsConformance(ConformanceBase):
    """Conformance tests of records."""

    def test_add_get_round_trip(self) -> None:
        m, clock, _ = self._memory()
        event = clock.now - timedelta(days=3)
        rec = m.add(
            "Alice lives in London",
            user_id="alice",
            kind="fact",
            topics=["home", "city"],
            metadata={"source": "chat", "n": 3, "ok": True},
            importance=0.8,
            event_at=event,
            session_id="s1",
            agent_id="a1",
            team="t1",
            source_ids=["m1"],
            actor="user",
        )
        got = m.get(rec.id, user_id="alice")
        assert got == rec
        assert got.topics == ("home", "city") and got.metadata["n"] == 3
        assert got.event_at == event and got.version == 1 and got.is_current
        m.close()

    def test_scopes_never_leak(self) -> None:
        m, _, _ = self._memory()
        a = m.add("Alice likes green tea", user_id="alice")
        m.add("Bob likes green tea too", user_id="bob")
        with _raises(NotFoundError):
            m.get(a.id, user_id="bob")
        with _raises(NotFoundError):
            m.history(a.id, user_id="bob")
        with _raises(NotFoundError):
            m.update(a.id, user_id="bob", text="hijacked")
        assert all(h.record.user_id == "bob" for h in m.search("green tea", user_id="bob"))
        assert [r.user_id for r in m.list(user_id="bob").items] == ["bob"]
        assert m.get(a.id, user_id="alice").text == "Alice likes green tea"
        m.close()

    def test_missing_user_is_an_error(self) -> None:
        m, _, _ = self._memory()
        for bad in (None, "", "   "):
            with _raises(ValidationError):
                m.add("text", user_id=bad)  # type: ignore[arg-type]
        with _raises(ValidationError):
            m.add("", user_id="u")
        with _raises(ValidationError):
            m.add("x" * 20_001, user_id="u")
        assert m.list(user_id="u").items == ()
        m.close()

    def test_add_with_idempotency_key_never_duplicates(self) -> None:
        m, _, _ = self._memory()
        first = m.add("paid the invoice", user_id="u", idempotency_key="req-1")
        retry = m.add("paid the invoice", user_id="u", idempotency_key="req-1")
        assert retry == first
        other_user = m.add("paid the invoice", user_id="v", idempotency_key="req-1")
        assert other_user.id != first.id and other_user.user_id == "v"
        second = m.add("paid the invoice", user_id="u", idempotency_key="req-2")
        assert second.id != first.id
        assert len(m.list(user_id="u").items) == 2
        assert len(m.history(first.id, user_id="u")) == 1
        with _raises(ValidationError):
            m.add("x", user_id="u", idempotency_key="")
        m.close()

    def test_idempotency_keys_are_per_agent(self) -> None:
        """Two agents of one user using the same key get a memory each; a retry by either
        returns its own, and the agent-less scope is a third one."""
        m, _, _ = self._memory()
        a = m.add("a's note", user_id="u", agent_id="a", idempotency_key="turn-1")
        b = m.add("b's note", user_id="u", agent_id="b", idempotency_key="turn-1")
        shared = m.add("shared note", user_id="u", idempotency_key="turn-1")
        assert len({a.id, b.id, shared.id}) == 3
        assert (b.agent_id, b.text, shared.agent_id) == ("b", "b's note", None)
        assert m.add("again", user_id="u", agent_id="a", idempotency_key="turn-1") == a
        assert m.add("again", user_id="u", agent_id="b", idempotency_key="turn-1") == b
        assert m.add("again", user_id="u", idempotency_key="turn-1") == shared
        assert len(m.list(user_id="u").items) == 3
        # A memory an agent added before keys were per agent has the user-level id: that
        # agent's retry still finds it, another agent's does not.
        old = m.add("old note", user_id="w", agent_id="a")
        rows = [r for r in m.export_rows(user_id="w") if r.get("type") == "record"]
        legacy = stable_id("add", "w", "turn-9")
        m.import_rows([{"type": "record", "data": {**rows[0]["data"], "id": legacy}}])
        assert m.add("x", user_id="w", agent_id="a", idempotency_key="turn-9").id == legacy
        fresh = m.add("x", user_id="w", agent_id="b", idempotency_key="turn-9")
        assert fresh.id not in (legacy, old.id) and fresh.agent_id == "b"
        # Nor the agent-less scope's, whose own id that legacy memory holds: it gets a
        # memory of its own, found again by its retry.
        mine = m.add("no agent's note", user_id="w", idempotency_key="turn-9")
        assert mine.id not in (legacy, old.id, fresh.id)
        assert (mine.agent_id, mine.text) == (None, "no agent's note")
        assert m.add("again", user_id="w", idempotency_key="turn-9") == mine
        assert m.add("again", user_id="w", agent_id="a", idempotency_key="turn-9").id == legacy
        m.close()

    def test_an_id_in_one_scope_never_touches_another(self) -> None:
        """Ids are per user scope: another scope holding the same id (an import keeps
        ids) neither blocks nor reveals anything, idempotent adds included."""
        m, _, _ = self._memory()
        planned = m.add("draft", user_id="u", idempotency_key="order-17").id
        m.forget_user("u")  # so v can take the id u's next add with this key uses
        seed = m.add("v's own note", user_id="v")
        m.import_rows([{"type": "record", "data": seed.evolve(id=planned).to_dict()}])
        first = m.add("u paid", user_id="u", idempotency_key="order-17")
        assert (first.user_id, first.text) == ("u", "u paid")
        assert m.add("u paid", user_id="u", idempotency_key="order-17") == first
        assert m.get(planned, user_id="v").text == "v's own note"
        # An id u uses, imported by v: stored for v exactly as a free id would be.
        theirs = m.add("u's secret", user_id="u")
        (added,) = m.history(theirs.id, user_id="u")
        echo = dataclasses.replace(added, user_id="v", snapshot=None)
        result = m.import_rows(
            [
                {"type": "record", "data": seed.evolve(id=theirs.id).to_dict()},
                {"type": "history", "data": echo.to_dict()},
            ]
        )
        assert dict(result.counts) == {"record": 1, "history": 1}
        assert [e.id for e in m.history(theirs.id, user_id="v")] == [added.id]
        m.update(theirs.id, user_id="v", text="v rewrote it")
        m.store.batch([ops.TouchRecords("v", (theirs.id,), first.created_at)])
        assert m.get(theirs.id, user_id="u") == theirs
        assert m.history(theirs.id, user_id="u") == [added]
        m.forget_user("v")
        assert m.get(theirs.id, user_id="u") == theirs
        hits = m.search("secret", user_id="u", recipe="lexical")
        assert [h.record.id for h in hits] == [theirs.id]
        m.close()

    def test_a_job_id_in_one_scope_never_touches_another(self) -> None:
        m, _, _ = self._memory()
        t0 = _day(2024, 1, 1)
        mine = Job("J1", "u", "extract", {"n": 1}, JobStatus.PENDING, t0, t0, t0)
        m.store.batch([ops.PutJob(mine, 0)])
        copy = mine.evolve(user_id="v", payload={"n": 2})
        assert dict(m.import_rows([{"type": "job", "data": copy.to_dict()}]).counts) == {"job": 1}
        assert m.store.batch([ops.GetJob("u", "J1"), ops.GetJob("v", "J1")]) == [mine, copy]
        claimed = m.store.batch([ops.ClaimJob(t0, t0 + timedelta(minutes=1), "v")])[0]
        assert claimed.user_id == "v"
        assert m.store.batch([ops.GetJob("u", "J1")]) == [mine]
        assert m.store.batch([ops.DeleteUser("v")])[0]["jobs"] == 1
        assert m.store.batch([ops.ListJobs(None)])[0] == [mine]
        m.close()

    def test_list_pages_with_cursor(self) -> None:
        m, _, _ = self._memory()
        ids = [m.add(f"memory number {i}", user_id="u").id for i in range(7)]
        seen: list[str] = []
        cursor = None
        while True:
            page = m.list(user_id="u", limit=3, cursor=cursor)
            seen += [r.id for r in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == list(reversed(ids))
        oldest = m.list(user_id="u", limit=10, newest_first=False)
        assert [r.id for r in oldest.items] == ids and oldest.next_cursor is None
        with _raises(ValidationError):
            m.list(user_id="u", limit=100_000)
        m.close()

    def test_filters(self) -> None:
        m, clock, _ = self._memory()
        old = m.add("old trip to Rome", user_id="u", event_at=clock.now - timedelta(days=30))
        pref = m.add("prefers aisle seats", user_id="u", kind="preference", topics=["travel"])
        flag = m.add("flagged", user_id="u", metadata={"flag": True, "n": 1, "src": "crm"})
        one = m.add("numbered", user_id="u", metadata={"flag": 1})
        sess = m.add("in session", user_id="u", session_id="s9")

        def ids(f: Filters) -> set[str]:
            return {r.id for r in m.list(user_id="u", filters=f).items}

        assert ids(Filters(kinds=(MemoryKind.PREFERENCE,))) == {pref.id}
        assert ids(Filters(topics=("travel", "nope"))) == {pref.id}
        assert ids(Filters(until=clock.now - timedelta(days=1))) == {old.id}
        assert old.id not in ids(Filters(since=clock.now - timedelta(days=1)))
        assert ids(Filters(metadata={"flag": True})) == {flag.id}
        assert ids(Filters(metadata={"flag": 1})) == {one.id}
        assert ids(Filters(metadata={"src": "crm", "n": 1})) == {flag.id}
        assert ids(Filters(session_id="s9")) == {sess.id}
        with _raises(ValidationError):
            Filters(kinds=("nonsense",))  # type: ignore[arg-type]
        with _raises(ValidationError):
            Filters(metadata={"k": [1, 2]})
        # A NUL can never have been stored: every backend refuses it alike.
        for bad in ({"src": "c\x00rm"}, {"s\x00rc": "crm"}):
            with _raises(ValidationError):
                Filters(metadata=bad)
        with _raises(ValidationError):
            Filters(topics=("tra\x00vel",))
        m.close()

    def test_agent_filter_with_shared_records(self) -> None:
        m, _, _ = self._memory()
        mine = m.add("bot notes the cello lesson", user_id="u", agent_id="bot")
        shared = m.add("the cello lesson is on Friday", user_id="u")
        m.add("other agent's cello lesson note", user_id="u", agent_id="other")
        f = Filters(agent_id="bot", include_shared=True)
        assert {r.id for r in m.list(user_id="u", filters=f).items} == {mine.id, shared.id}
        assert {h.record.id for h in m.search("cello lesson", user_id="u", filters=f)} == {
            mine.id,
            shared.id,
        }
        only = Filters(agent_id="bot")
        assert [r.id for r in m.list(user_id="u", filters=only).items] == [mine.id]
        for shared_f in (Filters(shared_only=True), dataclasses.replace(f, shared_only=True)):
            assert [r.id for r in m.list(user_id="u", filters=shared_f).items] == [shared.id]
            found = m.search("cello lesson", user_id="u", filters=shared_f)
            assert [h.record.id for h in found] == [shared.id]
        m.close()

    def test_search_ranks_and_explains(self) -> None:
        m, _, _ = self._memory()
        m.add("The cat sleeps on the sofa", user_id="u")
        target = m.add("Alice is allergic to peanuts", user_id="u", topics=["health"])
        m.add("Bob plays chess on Thursdays", user_id="u")
        hits = m.search("peanuts allergic", user_id="u", explain=True)
        assert hits[0].record.id == target.id
        assert hits[0].explanation is not None and "vector" in hits[0].explanation
        assert hits[0].score >= hits[-1].score
        only = m.search("peanuts", user_id="u", filters=Filters(topics=("nope",)))
        assert only == []
        lexical = m.search("chess", user_id="u", recipe="lexical")
        assert [h.record.text for h in lexical] == ["Bob plays chess on Thursdays"]
        assert m.get(target.id, user_id="u").access_count == 1
        with _raises(ValidationError):
            m.search("", user_id="u")
        m.close()

    def test_update_keeps_history_and_checks_version(self) -> None:
        m, clock, _ = self._memory()
        rec = m.add("likes tea", user_id="u")
        clock.advance(minutes=1)
        new = m.update(rec.id, user_id="u", text="likes coffee", reason="corrected")
        assert new.version == 2 and new.text == "likes coffee" and new.updated_at == clock.now
        with _raises(ConflictError):
            m.update(rec.id, user_id="u", importance=0.9, expected_version=1)
        events = m.history(rec.id, user_id="u")
        assert [e.action for e in events] == [HistoryAction.ADD, HistoryAction.UPDATE]
        assert events[0].snapshot is not None and events[0].snapshot["text"] == "likes tea"
        assert events[1].reason == "corrected"
        assert m.search("coffee", user_id="u")[0].record.id == rec.id
        m.close()

    def test_history_snapshots_are_each_version_as_it_was(self) -> None:
        """Every event's snapshot is its version's record (``to_dict``), whatever fields
        are set, however the store keeps it."""
        m, clock, _ = self._memory()
        rec = m.add(
            "Zoë lives in Zürich since last May",
            user_id="u",
            kind="preference",
            topics=["home"],
            metadata={"source": "chat", "nested": {"list": [1, 2.5, None]}, "empty": {}},
            importance=0.50000001,
            event_at=clock.now - timedelta(days=3),
            ttl=timedelta(days=30),
            session_id="s1",
            agent_id="a1",
            team="t1",
            source_ids=["m1", "m2"],
            actor="assistant",
            trust="inferred",
        )
        plain = m.add("likes tea", user_id="u")
        clock.advance(minutes=1)
        updated = m.update(rec.id, user_id="u", text="Zoë lives in Bern", importance=0.5)
        events = m.history(rec.id, user_id="u") + m.history(plain.id, user_id="u")
        assert [_canonical(e.snapshot) for e in events] == [
            _canonical(r.to_dict()) for r in (rec, updated, plain)
        ]
        m.close()

    def test_history_snapshots_read_back_as_written(self) -> None:
        """A store gives back each snapshot exactly: records' with every field set, none
        set, values that look like defaults or like the event's own fields, and mappings
        of other shapes."""
        store = self.make_store()
        at = _day(2026, 3, 1) + timedelta(microseconds=123456)
        full = MemoryRecord(
            "r1", "u", MemoryKind.KEYED_FACT, "Café at 8", content_hash("x"), _day(2026, 1, 1),
            at, version=3, agent_id="a", team="t", session_id="s", key="k",
            topics=("a", "b"), metadata={"n": 1, "f": 0.5, "z": {}}, importance=0.25,
            event_at=_day(2025, 1, 1), valid_from=_day(2025, 2, 1), valid_to=at,
            superseded_by="r2", expires_at=_day(2027, 1, 1), deleted_at=at, access_count=7,
            last_accessed_at=at, source_ids=("m",), actor="bot", context_hash="c",
            periods=("2025-01-01T00:00:00.000000Z/2025-01-02T00:00:00.000000Z",),
            trust=Trust.TOOL, quarantine=("instruction_override",),
        ).to_dict()  # fmt: skip
        bare = MemoryRecord("r1", "u", MemoryKind.FACT, "tea", content_hash("tea"), at, at)
        looks = {
            **bare.to_dict(),
            "importance": 1,
            "access_count": 0.0,
            "agent_id": False,
            "topics": [],
            "metadata": {},
            "trust": "user",
            "id": "r9",
            "version": 1.0,
            "valid_from": at.isoformat(),
        }
        snapshots = [full, bare.to_dict(), looks, {"text": "partial"}, {}]
        events = tuple(
            HistoryEvent(f"e{n}", "r1", "u", HistoryAction.UPDATE, 3, at, snapshot=snap)
            for n, snap in enumerate(snapshots)
        )
        store.batch([ops.AppendHistory(events)])
        got, page = store.batch([ops.GetHistory("u", "r1"), ops.ListUserHistory("u", None, 9)])
        # As JSON text: equal dicts may still differ in a value's type (0, 0.0, False).
        assert [_canonical(e.snapshot) for e in got] == [_canonical(s) for s in snapshots]
        assert page == got
        store.close()

    def test_supersede_keeps_old_version(self) -> None:
        m, _, _ = self._memory()
        old = m.add("lives in London", user_id="u")
        new = m.supersede(old.id, "moved to Paris", user_id="u", reason="moved")
        old_now = m.get(old.id, user_id="u")
        assert old_now.superseded_by == new.id and old_now.valid_to is not None
        assert [r.id for r in m.list(user_id="u").items] == [new.id]
        everything = m.list(user_id="u", filters=Filters(include_superseded=True))
        assert {r.id for r in everything.items} == {old.id, new.id}
        actions = [e.action for e in m.history(old.id, user_id="u")]
        assert actions == [HistoryAction.ADD, HistoryAction.SUPERSEDE]
        with _raises(ValidationError):
            m.supersede(old.id, "again", user_id="u")
        m.close()

    def test_delete_and_restore(self) -> None:
        m, _, _ = self._memory()
        rec = m.add("temporary note", user_id="u")
        m.delete(rec.id, user_id="u", reason="user asked")
        assert m.list(user_id="u").items == ()
        assert m.search("temporary note", user_id="u") == []
        m.restore(rec.id, user_id="u")
        assert [r.id for r in m.list(user_id="u").items] == [rec.id]
        actions = [e.action for e in m.history(rec.id, user_id="u")]
        assert actions == [HistoryAction.ADD, HistoryAction.DELETE, HistoryAction.RESTORE]
        m.close()

    def test_ttl_hides_then_sweep_purges(self) -> None:
        m, clock, _ = self._memory()
        short = m.add("door code is 1234", user_id="u", ttl=timedelta(hours=1))
        keep = m.add("door code policy", user_id="u")
        clock.advance(hours=2)
        with _raises(NotFoundError):
            m.get(short.id, user_id="u")
        assert [r.id for r in m.list(user_id="u").items] == [keep.id]
        assert all(h.record.id != short.id for h in m.search("door code", user_id="u"))
        assert m.sweep() == 1
        assert m.sweep() == 0
        assert [e.action for e in m.history(short.id, user_id="u")][-1] == HistoryAction.EXPIRE
        m.close()

    def test_purged_memories_keep_their_events_but_not_their_content(self) -> None:
        """A TTL purge erases: the memory's history still says what happened and when
        (action, time, ids, versions), but no snapshot of its words is left. A memory
        that was not purged keeps its snapshots."""
        m, clock, _ = self._memory()
        short = m.add("door code is 1234", user_id="u", ttl=timedelta(hours=1))
        m.update(short.id, user_id="u", text="door code is 5678")
        kept = m.add("door code policy", user_id="u")
        other = m.add("door code is 9999", user_id="v", ttl=timedelta(days=9))
        clock.advance(hours=2)
        assert m.sweep() == 1
        events = m.history(short.id, user_id="u")
        assert [(e.action, e.version) for e in events] == [
            (HistoryAction.ADD, 1),
            (HistoryAction.UPDATE, 2),
            (HistoryAction.EXPIRE, 3),
        ]
        assert all(e.snapshot is None and e.record_id == short.id for e in events)
        assert m.history(kept.id, user_id="u")[0].snapshot is not None
        assert m.history(other.id, user_id="v")[0].snapshot is not None
        rows = [r for r in m.export_rows(user_id="u") if r["type"] == "history"]
        assert "1234" not in str(rows) and "5678" not in str(rows)
        m.close()

    def test_keyed_facts(self) -> None:
        m, _, _ = self._memory()
        assert m.recall("plan", user_id="u") is None
        first = m.remember("plan", "pro", user_id="u", category="billing")
        assert m.remember("plan", "pro", user_id="u").id == first.id
        second = m.remember("plan", {"tier": "enterprise", "seats": 40}, user_id="u")
        assert m.recall("plan", user_id="u") == {"tier": "enterprise", "seats": 40}
        assert m.get(first.id, user_id="u").superseded_by == second.id
        assert m.recall("plan", user_id="other") is None
        m.close()

    def test_keyed_facts_store_exact_values_and_change_only_through_remember(self) -> None:
        m, clock, _ = self._memory()
        m.remember("code", "AbC123", user_id="u")
        m.remember("code", "abc123", user_id="u")  # only the case differs: a new value
        assert m.recall("code", user_id="u") == "abc123"
        m.remember("n", "5", user_id="u")
        m.remember("n", 5, user_id="u")  # a number, not the string
        assert m.recall("n", user_id="u") == 5
        same = m.remember("d", {"a": 1, "b": 2}, user_id="u")
        assert m.remember("d", {"b": 2, "a": 1}, user_id="u").id == same.id  # key order
        mixed = m.remember("m", {1: "a", "b": 2}, user_id="u")  # stored as JSON: "1"
        assert m.remember("m", {1: "a", "b": 2}, user_id="u").id == mixed.id
        tz = m.remember("tz", "Europe/Paris", user_id="u")
        with _raises(ValidationError):
            m.update(tz.id, user_id="u", text="tz: UTC")
        with _raises(ValidationError):
            m.supersede(tz.id, "tz: Asia/Tokyo", user_id="u")
        assert m.recall("tz", user_id="u") == "Europe/Paris"
        otp = m.remember("otp", "1234", user_id="u")
        m.update(otp.id, user_id="u", expires_at=clock.now + timedelta(minutes=1))
        clock.advance(minutes=2)  # expired, not swept yet: the key is free again
        assert m.recall("otp", user_id="u") is None
        assert [e.action for e in m.history(otp.id, user_id="u")][-1] != HistoryAction.EXPIRE
        assert m.remember("otp", "5678", user_id="u").id != otp.id
        assert m.recall("otp", user_id="u") == "5678"
        assert [e.action for e in m.history(otp.id, user_id="u")][-1] == HistoryAction.EXPIRE
        m.close()

    def test_supersede_keeps_expiry_and_records_why_on_both(self) -> None:
        m, _, _ = self._memory()
        old = m.add("door code is 4411", user_id="u", ttl=timedelta(hours=1))
        new = m.supersede(old.id, "door code is 5522", user_id="u", reason="code changed")
        assert new.expires_at == old.expires_at
        assert [(e.action, e.reason) for e in m.history(new.id, user_id="u")] == [
            (HistoryAction.ADD, "code changed")
        ]
        m.close()

    def test_one_current_value_per_key(self) -> None:
        m, _, _ = self._memory()
        first = m.remember("city", "Paris", user_id="u")
        rival = first.evolve(id="RIVAL", text="city: Rome", version=1)
        with _raises(ConflictError):
            m.store.batch([ops.WriteRecord(rival, 0)])
        m.delete(first.id, user_id="u")
        m.remember("city", "Berlin", user_id="u")
        with _raises(ValidationError):
            m.restore(first.id, user_id="u")
        assert m.recall("city", user_id="u") == "Berlin"
        m.close()

    def test_bad_arguments_are_validation_errors(self) -> None:
        m, _, _ = self._memory()
        old = m.add("first version", user_id="u")
        m.supersede(old.id, "second version", user_id="u")
        with _raises(ValidationError):
            m.update(old.id, user_id="u", text="rewrite the past")
        with _raises(ValidationError):
            m.search("x", user_id="u", filters={"kinds": ["fact"]})  # type: ignore[arg-type]
        with _raises(ValidationError):
            m.list(user_id="u", filters="fact")  # type: ignore[arg-type]
        ancient = m.add("a very old event", user_id="u", event_at=_day(999, 1, 2))
        assert m.get(ancient.id, user_id="u").event_at == _day(999, 1, 2)
        assert len(m.list(user_id="u").items) == 2
        m.close()

    def test_add_many_is_all_or_nothing(self) -> None:
        m, _, _ = self._memory()
        with _raises(ValidationError):
            m.add_many([MemoryInput("fine"), MemoryInput("")], user_id="u")
        assert m.list(user_id="u").items == ()
        records = m.add_many([MemoryInput("one"), MemoryInput("two")], user_id="u")
        assert len(m.list(user_id="u").items) == len(records) == 2
        m.close()

    def test_identical_text_is_embedded_once(self) -> None:
        m, _, embedder = self._memory()
        m.add("the same words", user_id="u")
        m.add("The  same words", user_id="v")
        assert embedder.calls == 1
        m.close()

    def test_batch_is_atomic(self) -> None:
        m, _, _ = self._memory()
        rec = m.add("original", user_id="u")
        bad = rec.evolve(text="changed", version=5)
        other = rec.evolve(id="someotherid", text="should not land")
        store = m.store
        with _raises(ConflictError):
            store.batch([ops.WriteRecord(other, 0), ops.WriteRecord(bad, 3)])
        assert store.batch([ops.GetRecords("u", ("someotherid",))]) == [[]]
        assert m.get(rec.id, user_id="u").text == "original"
        m.close()
