"""Store conformance, time travel: lists, searches and histories ``as_of`` a moment
return what was valid then (:func:`memlane.models.queries.valid_at`), on every path."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from memlane.api import Memory
from memlane.errors import ValidationError
from memlane.models import Filters, HistoryAction, MemoryKind, MemoryRecord, content_hash
from memlane.models.queries import valid_at
from memlane.ports import store as ops
from memlane.testing.conformance._base import ConformanceBase, _day, _raises

RECIPES = ("semantic", "lexical", "hybrid")
"""One recipe per way of finding candidates: vectors, BM25, and both fused."""


def _listed(m: Memory, user_id: str, as_of: datetime, **filters: object) -> list[str]:
    """The texts of the user's memories valid at ``as_of``, oldest first."""
    f = Filters(**filters)  # type: ignore[arg-type]
    page = m.list(user_id=user_id, as_of=as_of, filters=f, newest_first=False, limit=100)
    return [r.text for r in page.items]


def _found(m: Memory, query: str, user_id: str, as_of: datetime, recipe: str) -> list[str]:
    return [h.record.text for h in m.search(query, user_id=user_id, as_of=as_of, recipe=recipe)]


def _grid() -> list[MemoryRecord]:
    """Records with every way a validity can begin and end around days 1 to 3 of
    January 2026: from creation or a later ``valid_from``; open, closed by ``valid_to``
    with or without ``superseded_by``, or marked superseded with no ``valid_to``;
    deleted or not; expiring or not."""
    t0, t1, t2 = _day(2026, 1, 1), _day(2026, 1, 2), _day(2026, 1, 3)
    ends = [(None, None), (t2, "X"), (None, "X"), (t2, None), (t1, "X")]
    records = []
    for n, (start, (valid_to, by), deleted, expires) in enumerate(
        itertools.product((None, t1), ends, (None, t1, t2), (None, t2, _day(2030, 1, 1)))
    ):
        text = f"grid record {n}"
        records.append(
            MemoryRecord(
                id=f"G{n:04d}", user_id="g", kind=MemoryKind.FACT, text=text,
                content_hash=content_hash(text), created_at=t0, updated_at=t0,
                valid_from=start, valid_to=valid_to, superseded_by=by, deleted_at=deleted,
                expires_at=expires,
            )
        )  # fmt: skip
    return records


class TimeTravelConformance(ConformanceBase):
    """Conformance tests of ``as_of``."""

    def test_as_of_agrees_with_the_reference_predicate_on_every_validity(self) -> None:
        """The store's filter and :meth:`Filters.matches` agree at every moment around
        each record's begin and ends, with each include flag, before and after expiry;
        and with neither flag both are :func:`valid_at`."""
        m, _, _ = self._memory()
        records = _grid()
        m.store.batch([ops.WriteRecord(r, 0) for r in records])
        t0 = _day(2026, 1, 1)
        moments = [t0 + timedelta(hours=h) for h in (-1, 0, 12, 24, 25, 48, 49, 24 * 365)]
        for now, as_of, superseded, deleted in itertools.product(
            (t0, t0 + timedelta(days=3)), moments, (False, True), (False, True)
        ):
            f = Filters(as_of=as_of, include_superseded=superseded, include_deleted=deleted)
            listed = m.store.batch([ops.ListRecords("g", f, now, None, 1000)])[0]
            want = [r.id for r in records if f.matches(r, now)]
            assert [r.id for r in listed] == want, (now, as_of, superseded, deleted)
            if not (superseded or deleted):
                assert want == [
                    r.id for r in records if valid_at(r, as_of) and not r.is_expired(now)
                ]
        m.close()

    def test_as_of_before_a_move_finds_the_old_home_and_after_it_the_new(self) -> None:
        m, clock, _ = self._memory()
        start = clock.now
        london = m.add("Alice lives in London", user_id="alice")
        moved = clock.advance(days=30)
        paris = m.supersede(london.id, "Alice lives in Paris", user_id="alice", reason="moved")
        clock.advance(days=30)
        before, after = moved - timedelta(days=1), moved + timedelta(days=1)
        assert _listed(m, "alice", before) == ["Alice lives in London"]
        assert _listed(m, "alice", after) == ["Alice lives in Paris"]
        assert _listed(m, "alice", moved) == ["Alice lives in Paris"]  # [valid_from, valid_to)
        assert _listed(m, "alice", start - timedelta(seconds=1)) == []
        assert _listed(m, "alice", clock.now + timedelta(days=365)) == ["Alice lives in Paris"]
        both = _listed(m, "alice", after, include_superseded=True)
        assert sorted(both) == ["Alice lives in London", "Alice lives in Paris"]
        assert _listed(m, "alice", before, include_superseded=True) == ["Alice lives in London"]
        for recipe in RECIPES:
            assert _found(m, "where Alice lives", "alice", before, recipe) == [london.text]
            assert _found(m, "where Alice lives", "alice", after, recipe) == [paris.text]
        for recipe in RECIPES:
            assert london.text not in _found(m, "London", "alice", after, recipe)
            assert paris.text not in _found(m, "Paris", "alice", before, recipe)
        assert _found(m, "London", "alice", after, "lexical") == []
        # The same filter given in Filters, and the present as today.
        hits = m.search("Alice", user_id="alice", filters=Filters(as_of=before))
        assert [h.record.id for h in hits] == [london.id]
        assert [h.record.id for h in m.search("Alice", user_id="alice")] == [paris.id]
        # History shows both: the old home closed and pointing at the new, which starts.
        old = m.history(london.id, user_id="alice")
        assert [e.action for e in old] == [HistoryAction.ADD, HistoryAction.SUPERSEDE]
        assert old[0].snapshot and old[0].snapshot["text"] == "Alice lives in London"
        assert old[1].snapshot and old[1].snapshot["superseded_by"] == paris.id
        assert [e.action for e in m.history(paris.id, user_id="alice")] == [HistoryAction.ADD]
        assert [e.action for e in m.history(london.id, user_id="alice", as_of=before)] == [
            HistoryAction.ADD
        ]
        assert m.history(paris.id, user_id="alice", as_of=before) == []
        m.close()

    def test_as_of_follows_a_keyed_fact_through_its_values(self) -> None:
        m, clock, _ = self._memory()
        m.remember("home_city", "London", user_id="u")
        changed = clock.advance(days=10)
        m.remember("home_city", "Paris", user_id="u")
        clock.advance(days=10)
        keyed = {"kinds": (MemoryKind.KEYED_FACT,), "key": "home_city"}
        assert _listed(m, "u", changed - timedelta(hours=1), **keyed) == ["home_city: London"]
        assert _listed(m, "u", changed + timedelta(hours=1), **keyed) == ["home_city: Paris"]
        m.close()

    def test_a_deleted_memory_is_valid_until_it_was_deleted(self) -> None:
        m, clock, _ = self._memory()
        tea = m.add("Bob drinks green tea", user_id="bob")
        deleted = clock.advance(days=5)
        m.delete(tea.id, user_id="bob")
        restored = clock.advance(days=5)
        before, between = deleted - timedelta(hours=1), deleted + timedelta(hours=1)
        assert _listed(m, "bob", before) == [tea.text]
        assert _listed(m, "bob", between) == []
        assert _listed(m, "bob", between, include_deleted=True) == [tea.text]
        for recipe in RECIPES:
            assert _found(m, "green tea", "bob", before, recipe) == [tea.text]
            assert _found(m, "green tea", "bob", between, recipe) == []
        # A restored memory keeps no deletion time: it counts as never deleted.
        m.restore(tea.id, user_id="bob")
        assert _listed(m, "bob", between) == [tea.text]
        assert _listed(m, "bob", restored + timedelta(hours=1)) == [tea.text]
        m.close()

    def test_expiry_ends_validity_and_an_expired_memory_is_never_returned(self) -> None:
        m, clock, _ = self._memory()
        start = clock.now
        code = m.add("the door code is kiwi77", user_id="u", ttl=timedelta(hours=2))
        clock.advance(hours=1)
        assert _listed(m, "u", start + timedelta(minutes=30)) == [code.text]
        assert _listed(m, "u", start + timedelta(hours=3)) == []  # expired by then
        for recipe in RECIPES:
            assert _found(m, "door code", "u", start + timedelta(hours=3), recipe) == []
        clock.advance(hours=2)  # expired now, not swept yet: gone from every moment
        assert _listed(m, "u", start + timedelta(minutes=30)) == []
        for recipe in RECIPES:
            assert _found(m, "door code", "u", start + timedelta(minutes=30), recipe) == []
        m.close()

    def test_memories_written_after_as_of_are_absent_unless_valid_earlier(self) -> None:
        m, clock, _ = self._memory()
        first = clock.now
        m.add("Carol plays the cello", user_id="c")
        second = clock.advance(days=3)
        m.add("Carol plays the violin", user_id="c")
        # Written now about a time before both: valid from its event time.
        m.add("Carol played the piano as a child", user_id="c", event_at=first - timedelta(days=9))
        between = first + timedelta(days=1)
        assert sorted(_listed(m, "c", between)) == [
            "Carol played the piano as a child",
            "Carol plays the cello",
        ]
        assert _listed(m, "c", first - timedelta(days=1)) == ["Carol played the piano as a child"]
        assert len(_listed(m, "c", second)) == 3
        for recipe in RECIPES:
            assert "Carol plays the violin" not in _found(m, "Carol plays", "c", between, recipe)
        m.close()

    def test_turns_said_later_are_not_lifted_in_by_their_neighbours(self) -> None:
        m, clock, _ = self._memory()
        m.add_messages("s", [("user", "I adopted a puppy named Biscuit")], user_id="u")
        said = clock.now
        clock.advance(days=2)
        m.add_messages("s", [("user", "Biscuit chewed my shoes")], user_id="u")
        for recipe in RECIPES:
            found = _found(m, "Biscuit puppy", "u", said, recipe)
            assert found == ["I adopted a puppy named Biscuit"], (recipe, found)
        m.close()

    def test_as_of_never_leaks_another_users_or_agents_memories(self) -> None:
        m, clock, _ = self._memory()
        m.add("Alice lives in London", user_id="alice", agent_id="a1")
        m.add("Bob lives in London", user_id="bob")
        m.add("Alice's travel agent lives in London", user_id="alice", agent_id="a2")
        t = clock.advance(days=1)
        assert _listed(m, "bob", t) == ["Bob lives in London"]
        assert _listed(m, "alice", t, agent_id="a1") == ["Alice lives in London"]
        assert _listed(m, "nobody", t) == []
        for recipe in RECIPES:
            assert _found(m, "London", "bob", t, recipe) == ["Bob lives in London"]
            assert _found(m, "London", "nobody", t, recipe) == []
            hits = m.search(
                "London", user_id="alice", as_of=t, recipe=recipe, filters=Filters(agent_id="a1")
            )
            assert [h.record.text for h in hits] == ["Alice lives in London"]
        m.close()

    def test_a_naive_or_conflicting_as_of_is_a_validation_error(self) -> None:
        m, clock, _ = self._memory()
        rec = m.add("Dan likes jazz", user_id="d")
        naive = clock.now.replace(tzinfo=None)
        with _raises(ValidationError):
            m.list(user_id="d", as_of=naive)
        with _raises(ValidationError):
            m.search("jazz", user_id="d", as_of=naive)
        with _raises(ValidationError):
            m.history(rec.id, user_id="d", as_of=naive)
        with _raises(ValidationError):
            Filters(as_of=naive)
        with _raises(ValidationError):
            m.list(user_id="d", as_of="2026-01-01")  # type: ignore[arg-type]
        with _raises(ValidationError):
            later = clock.now + timedelta(days=1)
            m.list(user_id="d", as_of=clock.now, filters=Filters(as_of=later))
        m.close()
