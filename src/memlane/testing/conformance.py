"""The store conformance suite: behaviour every backend must show.

Subclass :class:`StoreConformance` in a pytest module and implement ``make_store``; every
``test_*`` method then runs against your backend through the public API::

    class TestMyStore(StoreConformance):
        def make_store(self) -> Store:
            return MyStore(...)

Each test gets a fresh, empty store. The suite uses :class:`FakeEmbedder` and a
:class:`FixedClock`, so it is deterministic and needs no model.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from memlane.api import AsyncMemory, Memory
from memlane.core.base import CoreConfig, MemoryInput
from memlane.core.search import RECIPES, SearchRecipe
from memlane.errors import (
    ConflictError,
    EmbeddingError,
    EmbeddingModelMismatchError,
    ImportFormatError,
    NotFoundError,
    ValidationError,
)
from memlane.ids import stable_id
from memlane.models import Filters, HistoryAction, Job, JobStatus, MemoryKind, StateVersion
from memlane.ports import store as ops
from memlane.ports.embedder import Vector
from memlane.ports.store import Store
from memlane.testing.fakes import FakeEmbedder, FixedClock


@contextmanager
def _raises(kind: type[BaseException]) -> Iterator[None]:
    try:
        yield
    except kind:
        return
    raise AssertionError(f"{kind.__name__} was not raised")


class StoreConformance:
    """Mix-in test class; see the module docstring."""

    def make_store(self) -> Store:
        raise NotImplementedError("subclasses return a fresh, empty store")

    def _memory(self, store: Store | None = None) -> tuple[Memory, FixedClock, FakeEmbedder]:
        clock = FixedClock()
        embedder = FakeEmbedder()
        return Memory(store or self.make_store(), embedder=embedder, clock=clock), clock, embedder

    # ------------------------------------------------------------------ records

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

    def test_episodes_are_found_through_their_context(self) -> None:
        m = Memory(
            self.make_store(),
            embedder=FakeEmbedder(),
            clock=FixedClock(),
            config=CoreConfig(context_window=1),
        )
        m.add_messages(
            "s1",
            [
                ("user", "What did you name the new puppy?"),
                ("assistant", "Biscuit!"),
                ("user", "Lovely. Unrelated: taxes are due."),
            ],
            user_id="u",
        )
        episodes = m.list(user_id="u", newest_first=False).items
        assert all(r.context_hash for r in episodes)
        only_context = SearchRecipe("ctx", {"context": 1.0}, time_weight=0.0)
        hits = m.search("puppy name", user_id="u", recipe=only_context, limit=2)
        assert "Biscuit!" in [h.record.text for h in hits]
        fact = m.add("The puppy sleeps a lot", user_id="u")
        assert fact.context_hash is None
        words_before = SearchRecipe("w", {"lexical": 1.0}, time_weight=0.0, neighbor_weight=0.0)
        texts = [h.record.text for h in m.search("name puppy", user_id="u", recipe=words_before)]
        assert "Biscuit!" in texts  # matched through the turn before it
        own_words_only = dataclasses.replace(words_before, lexical_context_weight=0.0)
        texts = [h.record.text for h in m.search("name puppy", user_id="u", recipe=own_words_only)]
        assert "Biscuit!" not in texts
        m.close()

    def test_a_removed_or_rewritten_turn_stops_matching_through_the_next(self) -> None:
        """The turn after an episode is also indexed with its words (lexical context);
        deleting, purging or rewriting the episode takes them out of that index too."""
        m, clock, _ = self._memory()
        words = SearchRecipe("w", {"lexical": 1.0}, time_weight=0.0, neighbor_weight=0.0)

        def found(query: str) -> set[str]:
            return {h.record.id for h in m.search(query, user_id="u", recipe=words)}

        said = ["my card PIN is zebra4411", "ok, noted", "my dog is called rex", "lovely name"]
        m.add_messages("s", [("user", t) for t in said], user_id="u")
        pin, noted, dog, lovely = m.list(user_id="u", newest_first=False).items
        assert found("zebra4411") == {pin.id, noted.id}
        m.delete(pin.id, user_id="u")
        assert found("zebra4411") == set()
        m.restore(pin.id, user_id="u")
        assert found("zebra4411") == {pin.id, noted.id}
        m.update(dog.id, user_id="u", text="my cat is called tom")
        assert found("rex") == set() and found("tom") == {dog.id, lovely.id}
        for text in ("the door code is kiwi77", "got it"):
            m.add(
                text, user_id="u", kind=MemoryKind.EPISODE, session_id="s2", ttl=timedelta(hours=1)
            )
        assert len(found("kiwi77")) == 2
        clock.advance(hours=2)
        assert m.sweep() == 2 and found("kiwi77") == set()
        m.close()

    def test_another_agents_turn_never_shapes_a_turns_score(self) -> None:
        """An episode is indexed with the previous turn of its session by the same agent
        (no agent counts as one), as reads by agent are limited: a turn of another agent
        in between is skipped, never read through the one after it."""
        m, _, _ = self._memory()
        words = SearchRecipe("w", {"lexical": 1.0}, time_weight=0.0, neighbor_weight=0.0)

        def found(query: str, agent: str | None) -> set[str]:
            f = Filters(agent_id=agent)
            return {h.record.id for h in m.search(query, user_id="u", filters=f, recipe=words)}

        def turn(text: str, agent: str | None) -> str:
            kind = MemoryKind.EPISODE
            return m.add(text, user_id="u", kind=kind, session_id="s", agent_id=agent).id

        alpha = turn("planning the alpha route", "planner")
        code = turn("the vault code is zebra4411", "other")
        beta = turn("booking the beta flights", "planner")
        loose = turn("a note with kiwi77", None)
        after = turn("planning more", "planner")
        assert found("zebra4411", "planner") == set()
        assert found("zebra4411", None) == {code}
        assert found("alpha", "planner") == {alpha, beta}  # its own previous turn counts
        assert found("kiwi77", None) == {loose}
        assert found("beta", "planner") == {beta, after}
        m.delete(alpha, user_id="u")  # beta loses its context, not the other agent's turn
        assert found("alpha", None) == set()
        m.update(beta, user_id="u", text="booking the gamma flights")
        assert found("beta", None) == set() and found("gamma", None) == {beta, after}
        m.close()

    def test_another_agents_turn_is_no_context_embedding(self) -> None:
        m = Memory(
            self.make_store(),
            embedder=FakeEmbedder(),
            clock=FixedClock(),
            config=CoreConfig(context_window=1),
        )
        m.add_messages("s", [("user", "the vault code is zebra4411")], user_id="u", agent_id="o")

        def turn(session: str, agent: str | None) -> str | None:
            kind = MemoryKind.EPISODE
            r = m.add("ok, planning", user_id="u", kind=kind, session_id=session, agent_id=agent)
            return r.context_hash

        assert turn("s", "planner") == turn("fresh", "planner")
        assert turn("s", None) == turn("fresh2", None)
        m.close()

    def test_words_beyond_ascii_match_lexically(self) -> None:
        m, _, _ = self._memory()
        street = m.add("Ich wohne in der Hauptstraße", user_id="u")
        m.add("Je bois un café au lait", user_id="u")
        words = SearchRecipe("w", {"lexical": 1.0}, time_weight=0.0, neighbor_weight=0.0)
        assert [h.record.id for h in m.search("Hauptstraße", user_id="u", recipe=words)] == [
            street.id
        ]
        m.close()

    def test_neighbors_stay_in_session_and_scope(self) -> None:
        m, clock, _ = self._memory()
        m.add_messages("s1", [("user", f"turn {i}") for i in range(5)], user_id="u")
        m.add_messages("s2", [("user", "other session")], user_id="u")
        m.add_messages("s1", [("user", "not yours")], user_id="v")
        turns = m.list(user_id="u", newest_first=False, filters=Filters(session_id="s1")).items
        ids = [r.id for r in turns]
        m.delete(ids[3], user_id="u")
        got = m.store.batch([ops.GetNeighbors("u", (ids[2], ids[0]), 1, clock.now)])[0]
        assert got == {ids[2]: [(ids[1], -1), (ids[4], 1)], ids[0]: [(ids[1], 1)]}
        wide = m.store.batch([ops.GetNeighbors("u", (ids[4],), 2, clock.now)])[0]
        assert wide == {ids[4]: [(ids[1], -2), (ids[2], -1)]}
        assert m.store.batch([ops.GetNeighbors("v", (ids[2],), 1, clock.now)])[0] == {ids[2]: []}
        # A fact filed under the session is not a turn: it neither takes a neighbour's
        # place nor has neighbours of its own.
        fact = m.add("u likes tea", user_id="u", session_id="s1")
        m.add_messages("s1", [("user", "turn 5")], user_id="u")
        last = m.list(user_id="u", limit=1, filters=Filters(session_id="s1")).items[0]
        got = m.store.batch([ops.GetNeighbors("u", (last.id, fact.id), 1, clock.now)])[0]
        assert got == {last.id: [(ids[4], -1)], fact.id: []}
        m.close()

    def test_neighbors_are_turns_of_the_same_agent(self) -> None:
        """A turn the reader of one agent cannot see never takes a place in the window."""
        m, clock, _ = self._memory()
        ids = [
            m.add(f"turn {i}", user_id="u", kind=MemoryKind.EPISODE, session_id="s", agent_id=a).id
            for i, a in enumerate(("p", "o", "o", "p", None, "p"))
        ]
        got = m.store.batch([ops.GetNeighbors("u", (ids[0], ids[4], ids[1]), 1, clock.now)])[0]
        assert got == {ids[0]: [(ids[3], 1)], ids[4]: [], ids[1]: [(ids[2], 1)]}
        wide = m.store.batch([ops.GetNeighbors("u", (ids[5],), 2, clock.now)])[0]
        assert wide == {ids[5]: [(ids[0], -2), (ids[3], -1)]}
        m.close()

    def test_search_time_window_and_explain(self) -> None:
        m, _, _ = self._memory()
        may = m.add("went hiking with friends", user_id="u", event_at=_day(2023, 5, 20))
        m.add("went hiking alone", user_id="u", event_at=_day(2023, 7, 2))
        hits = m.search("hiking in May 2023", user_id="u", explain=True)
        assert hits[0].record.id == may.id
        explanation = hits[0].explanation or {}
        assert explanation["boosts"] == {"time": RECIPES["hybrid"].time_weight}
        assert explanation["time_window"][0].startswith("2023-05-01")
        neighbourly = SearchRecipe("n", neighbor_weight=0.5)
        assert m.search("hiking", user_id="u", recipe=neighbourly)
        with _raises(ValidationError):
            m.search("hiking", user_id="u", recipe="nope")
        m.close()

    # ------------------------------------------------------------------ sessions

    def test_session_history_and_episodes(self) -> None:
        m, clock, _ = self._memory()
        m.add_messages(
            "s1", [("user", "Hi, I adopted a puppy"), ("assistant", "Congrats!")], user_id="u"
        )
        clock.advance(minutes=5)
        m.add_messages("s1", [{"role": "user", "content": "Her name is Biscuit"}], user_id="u")
        runs = m.get_history("s1", user_id="u")
        assert [len(r.messages) for r in runs] == [2, 1]
        assert [msg.seq for r in runs for msg in r.messages] == [1, 2, 3]
        last = m.get_history("s1", user_id="u", last_runs=1)
        assert [msg.content for msg in last[0].messages] == ["Her name is Biscuit"]
        hits = m.search("puppy", user_id="u", filters=Filters(kinds=(MemoryKind.EPISODE,)))
        assert hits and hits[0].record.session_id == "s1" and hits[0].record.actor == "user"
        assert m.get_history("s1", user_id="other") == []
        assert m.get_session("s1", user_id="u").updated_at == clock.now
        assert [s.session_id for s in m.list_sessions(user_id="u").items] == ["s1"]
        m.close()

    def test_state_compare_and_swap(self) -> None:
        m, _, _ = self._memory()
        assert m.get_state("s1", user_id="u").version == 0
        v1 = m.set_state("s1", {"step": 1}, user_id="u", expected_version=0)
        with _raises(ConflictError):
            m.set_state("s1", {"step": 99}, user_id="u", expected_version=0)
        m.update_state("s1", {"extra": True}, user_id="u")
        current = m.get_state("s1", user_id="u")
        assert current.version == 2 and dict(current.data) == {"step": 1, "extra": True}
        versions = m.state_history("s1", user_id="u")
        assert [v.version for v in versions] == [1, 2] and versions[0].data == v1.data
        with _raises(ValidationError):
            m.set_state("s1", {"bad": object()}, user_id="u", expected_version=2)
        assert m.get_state("s1", user_id="other").version == 0
        m.close()

    def test_workflow_resume(self) -> None:
        m, _, _ = self._memory()
        assert m.load_workflow("wf", user_id="u", session_id="s") is None
        w1 = m.save_workflow("wf", user_id="u", session_id="s", step="fetch", expected_version=0)
        m.save_workflow(
            "wf",
            user_id="u",
            session_id="s",
            step="write",
            data={"n": 2},
            expected_version=w1.version,
        )
        loaded = m.load_workflow("wf", user_id="u", session_id="s")
        assert loaded is not None and loaded.step == "write" and loaded.data == {"n": 2}
        assert [w.workflow_id for w in m.list_workflows("s", user_id="u")] == ["wf"]
        m.close()

    def test_summaries(self) -> None:
        m, _, _ = self._memory()
        with _raises(NotFoundError):
            m.summarize_session("s1", user_id="u")
        m.add_messages(
            "s1",
            [
                ("user", "We are planning the launch of the mobile app in June."),
                ("assistant", "The launch needs a beta test first. I will draft a plan."),
                ("user", "Also the weather is nice today."),
            ],
            user_id="u",
        )
        first = m.summarize_session("s1", user_id="u", max_sentences=2)
        assert first.kind == MemoryKind.SUMMARY and "launch" in first.text
        m.add_messages("s1", [("user", "The launch date moved to July.")], user_id="u")
        second = m.summarize_session("s1", user_id="u", max_sentences=2)
        assert m.get(first.id, user_id="u").superseded_by == second.id
        got = m.get_summary("s1", user_id="u")
        assert got is not None and got.id == second.id
        m.add_messages("long", [("user", "x " * 700)], user_id="u")  # one long sentence
        cut = m.summarize_session("long", user_id="u", max_chars=100)
        assert 0 < len(cut.text) <= 100 and cut.text.endswith("…")
        with _raises(ValidationError):
            m.summarize_session("long", user_id="u", max_sentences=0)
        # A summary quotes its session, so it belongs to the session's agent (shared
        # only when the session is): no other agent reads the session through it.
        m.add_messages("mine", [("user", "Pay invoice 4471.")], user_id="u", agent_id="bot")
        assert m.summarize_session("mine", user_id="u").agent_id == "bot"
        assert first.agent_id is None
        m.close()

    def test_session_cleanup(self) -> None:
        m, clock, _ = self._memory()
        fact = m.add("keeps bees", user_id="u")
        said = m.add("learned in the old chat: bees sting", user_id="u", session_id="old")
        m.add_messages("old", [("user", "old chat about bees")], user_id="u")
        m.set_state("old", {"x": 1}, user_id="u", expected_version=0)
        clock.advance(days=10)
        m.add_messages("new", [("user", "new chat")], user_id="u")
        assert m.delete_sessions(user_id="u", older_than=clock.now - timedelta(days=5)) == 1
        assert m.get_history("old", user_id="u") == []
        assert m.get_state("old", user_id="u").version == 0
        assert m.get(fact.id, user_id="u").text == "keeps bees"
        assert m.get(said.id, user_id="u").session_id == "old"  # facts outlive their session
        assert [s.session_id for s in m.list_sessions(user_id="u").items] == ["new"]
        assert m.delete_session("new", user_id="u") == 1
        assert m.delete_sessions(user_id="u") == 0
        kinds = {r.kind for r in m.list(user_id="u").items}
        assert kinds == {MemoryKind.FACT}
        m.add_messages("s3", [("user", "my secret is swordfish")], user_id="u")
        (episode,) = m.list(user_id="u", filters=Filters(session_id="s3")).items
        assert m.delete_session("s3", user_id="u") == 1
        events = m.history(episode.id, user_id="u")
        assert [(e.action, e.reason) for e in events][-1] == (
            HistoryAction.DELETE,
            "session deleted",
        )
        # The episode's words left with it: its history keeps the events, not the text.
        assert [e.action for e in events] == [HistoryAction.ADD, HistoryAction.DELETE]
        assert all(e.snapshot is None for e in events)
        assert m.history(fact.id, user_id="u")[0].snapshot is not None
        assert m.history(said.id, user_id="u")[0].snapshot is not None  # not session-bound
        assert (
            m.store.batch([ops.GetEmbeddings(m.embedder.model_id, (episode.content_hash,))])[0]
            == {}
        )  # its vector went with it
        with _raises(ValidationError):
            m.delete_sessions(user_id="u", page_size=0)
        m.close()

    def test_forget_user_removes_everything(self) -> None:
        m, _, _ = self._memory()
        rec = m.add("secret of alice", user_id="alice")
        m.add_messages("s", [("user", "hello from alice")], user_id="alice")
        m.set_state("s", {"k": 1}, user_id="alice", expected_version=0)
        bob = m.add("bob's note", user_id="bob")
        counts = m.forget_user("alice")
        assert counts["records"] >= 2 and counts["sessions"] == 1
        assert "alice" not in m.list_users()
        with _raises(NotFoundError):
            m.history(rec.id, user_id="alice")
        cached = m.store.batch([ops.GetEmbeddings(m.embedder.model_id, (rec.content_hash,))])
        assert cached == [{}]
        assert m.get(bob.id, user_id="bob").text == "bob's note"
        m.close()

    def test_a_vector_pruned_mid_write_is_written_back(self) -> None:
        # Alice adds two texts; one has a cached vector (Bob wrote it), the other must be
        # embedded. While it is, Bob is forgotten, which prunes the cached vector. Alice's
        # record must still commit with its vector.
        store = self.make_store()
        m, _, embedder = self._memory(store)
        m.add("shared words about tea", user_id="bob")

        class PruningEmbedder(FakeEmbedder):
            def embed(self, texts: Sequence[str]) -> list[Vector]:
                m.forget_user("bob")  # another writer, between lookup and commit
                return super().embed(texts)

        alice = Memory(store, embedder=PruningEmbedder(), clock=FixedClock())
        added = alice.add_many(
            [MemoryInput(text="shared words about tea"), MemoryInput(text="fresh words")],
            user_id="alice",
        )
        cached = m.store.batch([ops.GetEmbeddings(embedder.model_id, (added[0].content_hash,))])
        assert set(cached[0]) == {added[0].content_hash}
        hits = alice.search("shared words about tea", user_id="alice", recipe="semantic")
        assert hits and hits[0].record.id == added[0].id
        m.close()

    # ------------------------------------------------------------------ transfer

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

    # ------------------------------------------------------------------ jobs

    def test_jobs_run_in_order_per_user_and_leases_expire(self) -> None:
        store = self.make_store()
        store.setup()
        t0 = _day(2024, 1, 1)

        def job(jid: str, user: str) -> Job:
            return Job(jid, user, "extract", {"n": jid}, JobStatus.PENDING, t0, t0, t0)

        store.batch([ops.PutJob(job(j, u), 0) for j, u in (("J1", "a"), ("J2", "a"), ("J3", "b"))])
        with _raises(ConflictError):
            store.batch([ops.PutJob(job("J4", "a"), 0), ops.PutJob(job("J1", "a"), 0)])
        assert store.batch([ops.GetJob("a", "J4")]) == [None]  # the batch rolled back
        assert store.batch([ops.GetJob("b", "J1")]) == [None]  # other scope
        lease = t0 + timedelta(minutes=1)
        first = store.batch([ops.ClaimJob(t0, lease)])[0]
        assert first.id == "J1" and first.status is JobStatus.RUNNING and first.attempts == 1
        second = store.batch([ops.ClaimJob(t0, lease)])[0]
        assert second.id == "J3"  # J2 waits behind J1 of the same user
        assert store.batch([ops.ClaimJob(t0, lease)]) == [None]
        # J1's worker died: after its lease another claim takes it over.
        later = lease + timedelta(seconds=1)
        again = store.batch([ops.ClaimJob(later, later + timedelta(minutes=1), "a")])[0]
        assert again.id == "J1" and again.attempts == 2 and again.version == first.version + 1
        done = again.evolve(status=JobStatus.DONE, version=again.version + 1, lease_until=None)
        with _raises(ConflictError):
            store.batch([ops.PutJob(done, first.version)])  # stale worker loses
        store.batch([ops.PutJob(done, again.version)])
        nxt = store.batch([ops.ClaimJob(later, later + timedelta(minutes=1), "a")])[0]
        assert nxt.id == "J2"
        delayed = job("J5", "c").evolve(run_after=t0 + timedelta(hours=1))
        store.batch([ops.PutJob(delayed, 0)])
        assert store.batch([ops.ClaimJob(later, later, "c")]) == [None]
        pending = store.batch([ops.ListJobs(None, (JobStatus.PENDING,))])[0]
        assert [j.id for j in pending] == ["J5"]
        assert [j.id for j in store.batch([ops.ListJobs("a")])[0]] == ["J1", "J2"]
        assert store.batch([ops.ListJobs("a", (), "J1")])[0][0].id == "J2"
        assert store.batch([ops.DeleteUser("a")])[0]["jobs"] == 2
        assert store.batch([ops.ListJobs("a")]) == [[]]
        store.close()

    # ------------------------------------------------------------------ async

    def test_async_api_shares_behaviour(self) -> None:
        store = self.make_store()

        async def scenario() -> None:
            async with AsyncMemory(store, embedder=FakeEmbedder(), clock=FixedClock()) as m:
                rec = await m.add("async memory about sailing", user_id="u")
                hits = await m.search("sailing", user_id="u")
                assert hits[0].record.id == rec.id
                state = await m.set_state("s", {"n": 1}, user_id="u", expected_version=0)
                assert isinstance(state, StateVersion)
                results = await asyncio.gather(
                    *(m.add(f"parallel {i}", user_id="u") for i in range(5))
                )
                assert len({r.id for r in results}) == 5
                page = await m.list(user_id="u", limit=10)
                assert len(page.items) == 6
                try:
                    await m.get("nope", user_id="u")
                except NotFoundError:
                    pass
                else:
                    raise AssertionError("NotFoundError was not raised")

        asyncio.run(scenario())

    def test_vectors_are_unit_length(self) -> None:
        m, _, _ = self._memory()
        rec = m.add("vector check", user_id="u")
        cached = m.store.batch([ops.GetEmbeddings(m.embedder.model_id, (rec.content_hash,))])[0]
        assert abs(float(np.linalg.norm(cached[rec.content_hash])) - 1.0) < 1e-5
        m.close()

    # ------------------------------------------------------------------ embedding models

    def test_a_store_refuses_vectors_of_another_model(self) -> None:
        m, _, _ = self._memory()
        assert m.store.batch([ops.GetEmbeddingModel()]) == [None]
        m.search("nothing yet", user_id="u")  # searching an empty store records nothing
        assert m.store.batch([ops.GetEmbeddingModel()]) == [None]
        m.add("the cat sat on the mat", user_id="u")
        assert m.store.batch([ops.GetEmbeddingModel()]) == [("fake-bow-256", 256)]
        other = Memory(m.store, embedder=FakeEmbedder(64, model_id="fake-bow-64"))
        for attempt in (
            lambda: other.search("cat", user_id="u"),
            lambda: other.add("a dog sat on the rug", user_id="u"),
            lambda: asyncio.run(
                AsyncMemory(m.store, embedder=other.embedder).search("cat", user_id="u")
            ),
        ):
            try:
                attempt()
            except EmbeddingModelMismatchError as exc:
                assert "fake-bow-256" in str(exc) and "fake-bow-64" in str(exc)
                assert "memlane reembed" in str(exc)
            else:
                raise AssertionError("EmbeddingModelMismatchError was not raised")
        assert [r.text for r in m.list(user_id="u").items] == ["the cat sat on the mat"]
        assert m.search("cat", user_id="u")  # the store's own model still works
        m.close()

    def test_a_store_without_a_record_adopts_the_model_of_its_vectors(self) -> None:
        store = self.make_store()
        older = FakeEmbedder(64, model_id="older-64")
        vector = older.embed(["old words"])[0]
        store.setup()
        store.batch([ops.PutEmbeddings("older-64", (("h-old", vector),))])  # before records
        assert store.batch([ops.GetEmbeddingModel()]) == [("older-64", 64)]
        m, _, _ = self._memory(store)
        with _raises(EmbeddingModelMismatchError):
            m.add("new words", user_id="u")
        adopted = Memory(store, embedder=older)
        adopted.add("new words", user_id="u")
        assert adopted.search("new words", user_id="u", recipe="semantic")
        with _raises(EmbeddingModelMismatchError):
            m.search("new words", user_id="u")
        store.close()

    def _reembed_fixture(self, n: int) -> tuple[Memory, list[str]]:
        m = Memory(
            self.make_store(),
            embedder=FakeEmbedder(),
            clock=FixedClock(),
            config=CoreConfig(context_window=2),
        )
        m.add_messages(
            "s1",
            [("user", "What did you name the new puppy?"), ("assistant", "Biscuit!")],
            user_id="u",
        )
        m.add_many(
            [MemoryInput(text=f"note {i} about topic {i % 7}") for i in range(n)], user_id="u"
        )
        gone = m.add("tea is gone", user_id="w")
        m.delete(gone.id, user_id="w")
        texts = [r.text for r in m.list(user_id="u", limit=1000).items]
        return m, texts

    def test_reembed_moves_the_store_to_another_model(self) -> None:
        m, _ = self._reembed_fixture(5)
        before = [h.record.id for h in m.search("note 3 topic", user_id="u", recipe="semantic")]
        target = FakeEmbedder(64, model_id="fake-bow-64")
        moved = Memory(m.store, embedder=target)  # no context window of its own
        with _raises(EmbeddingModelMismatchError):
            moved.search("note 3", user_id="u")
        seen: list[int] = []
        counts = moved.reembed(progress=seen.append)
        # 2 episodes + 5 notes + the deleted one; both episodes' contexts rebuilt
        assert counts == {"memories": 8, "contexts": 2, "embedded": 10, "removed": 10}
        assert sum(seen) == 10
        assert m.store.batch([ops.GetEmbeddingModel()]) == [("fake-bow-64", 64)]
        hashes = tuple(r.content_hash for r in m.list(user_id="u", limit=1000).items)
        assert m.store.batch([ops.GetEmbeddings("fake-bow-256", hashes)]) == [{}]
        after = [h.record.id for h in moved.search("note 3 topic", user_id="u", recipe="semantic")]
        assert after and after[0] == before[0]
        only_context = SearchRecipe("ctx", {"context": 1.0}, time_weight=0.0)
        hits = moved.search("puppy name", user_id="u", recipe=only_context, limit=2)
        assert "Biscuit!" in [h.record.text for h in hits]
        with _raises(EmbeddingModelMismatchError):
            m.search("note 3", user_id="u")
        again = moved.reembed()
        assert again == {"memories": 8, "contexts": 2, "embedded": 0, "removed": 0}
        m.close()

    def test_an_interrupted_reembed_changes_nothing_and_resumes(self) -> None:
        m, _ = self._reembed_fixture(300)

        class Interrupted(FakeEmbedder):
            def embed(self, texts: Sequence[str]) -> list[Vector]:
                if self.calls:  # the second batch fails
                    raise EmbeddingError("interrupted")
                return super().embed(texts)

        broken = Interrupted(64, model_id="fake-bow-64")
        with _raises(EmbeddingError):
            Memory(m.store, embedder=broken, config=CoreConfig(context_window=1)).reembed()
        assert broken.calls == 256  # one batch written
        assert m.search("note 3 topic", user_id="u", recipe="semantic")  # still the old model
        target = FakeEmbedder(64, model_id="fake-bow-64")
        moved = Memory(m.store, embedder=target, config=CoreConfig(context_window=1))
        counts = moved.reembed()
        assert counts["embedded"] == 305 - 256 and target.calls == 305 - 256
        assert counts["removed"] == 305
        hits = moved.search("note 3 topic", user_id="u", recipe="semantic")
        assert hits and hits[0].record.text.startswith("note 3 ")
        m.close()


def _strip_header(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        (r for r in rows if r["type"] != "header"),
        key=lambda r: (r["type"], str(sorted(r["data"].items()))),
    )


def _day(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, 12, tzinfo=UTC)
