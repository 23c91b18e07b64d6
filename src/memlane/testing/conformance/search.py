"""Store conformance, search: episodes, context, neighbours and time windows."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from memlane.api import Memory
from memlane.core.base import CoreConfig
from memlane.core.search import RECIPES, SearchRecipe
from memlane.errors import ValidationError
from memlane.models import Filters, MemoryKind
from memlane.ports import store as ops
from memlane.testing.conformance._base import ConformanceBase, _day, _raises
from memlane.testing.fakes import FakeEmbedder, FixedClock


class SearchConformance(ConformanceBase):
    """Conformance tests of search."""

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

    def test_a_purged_turn_takes_the_context_vectors_made_with_it(self) -> None:
        """A turn after an episode is also embedded with it (its context vector); once
        the episode is purged, that vector would go on matching its words. The turns
        after it are then scored by their own vectors, and the context vector goes
        with the sweep's prune."""
        clock = FixedClock()
        m = Memory(
            self.make_store(),
            embedder=FakeEmbedder(),
            clock=clock,
            config=CoreConfig(context_window=1),
        )
        kind = MemoryKind.EPISODE
        day = timedelta(days=1)
        m.add("door code zanzibarquux", user_id="u", kind=kind, session_id="s", ttl=day)
        clock.advance(minutes=1)
        # An idempotent add's id is a hash: "after" the purged turn by time, not by id.
        reply = m.add("ok noted", user_id="u", kind=kind, session_id="s", idempotency_key="a")
        other = m.add("ok noted", user_id="u", kind=kind, session_id="t")  # another session
        made_with = reply.context_hash
        assert made_with is not None and other.context_hash is not None
        only_context = SearchRecipe("ctx", {"context": 1.0}, time_weight=0.0)
        hits = m.search("zanzibarquux", user_id="u", recipe=only_context, limit=5)
        assert {h.record.id: h.score > 0.5 for h in hits}[reply.id]  # through its context
        clock.advance(days=2)
        assert m.sweep() == 1
        assert m.get(reply.id, user_id="u").context_hash is None
        assert m.get(other.id, user_id="u").context_hash == other.context_hash
        hits = m.search("zanzibarquux", user_id="u", recipe=only_context, limit=5)
        assert hits and all(h.score < 0.1 for h in hits)
        model = FakeEmbedder().model_id
        assert m.store.batch([ops.GetEmbeddings(model, (made_with,))]) == [{}]
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

    def test_the_periods_a_memory_names_are_stored_and_match_by_their_words(self) -> None:
        """ "yesterday", said on 8 May 2023, is stored as 7 May 2023 and found by "May";
        rewriting the text reads its periods again (and takes the old words out)."""
        m, _, _ = self._memory()
        said = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
        kind = MemoryKind.EPISODE
        turn = m.add("I went to the support group yesterday", user_id="u", event_at=said, kind=kind)
        m.add("I like the support group", user_id="u", event_at=said, kind=kind)
        assert m.get(turn.id, user_id="u").periods == (
            "2023-05-07T00:00:00.000000Z/2023-05-08T00:00:00.000000Z",
        )
        words = SearchRecipe("w", {"lexical": 1.0}, time_weight=0.0, neighbor_weight=0.0)

        def found(query: str) -> list[str]:
            return [h.record.id for h in m.search(query, user_id="u", recipe=words)]

        assert found("May 2023") == [turn.id]
        m.update(turn.id, user_id="u", text="I went to the support group last month")
        assert m.get(turn.id, user_id="u").periods == (
            "2023-04-01T00:00:00.000000Z/2023-05-01T00:00:00.000000Z",
        )
        assert found("April") == [turn.id] and found("May") == []
        m.close()

    def test_reindex_reads_periods_again_without_a_new_version(self) -> None:
        """A record stored without periods (written before memlane read time: here
        cleared with SetPeriods) gains them from ``reindex``, and its words match again;
        its version and history stay as they were, and other users are untouched."""
        m, _, _ = self._memory()
        said = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
        turn = m.add("We hiked last weekend", user_id="u", event_at=said)
        other = m.add("We hiked last weekend", user_id="v", event_at=said)
        words = SearchRecipe("w", {"lexical": 1.0}, time_weight=0.0, neighbor_weight=0.0)
        assert m.store.batch([ops.SetPeriods("u", ((turn.id, ()), ("missing", ())))]) == [1]
        assert m.get(turn.id, user_id="u").periods == ()
        assert m.search("May", user_id="u", recipe=words) == []
        counts = m.reindex()
        assert (counts["memories"], counts["updated"]) == (2, 1)
        assert counts["indexed"] in (0, 2)  # 0: the store's indexes live in its database
        again = m.get(turn.id, user_id="u")
        assert again.periods == turn.periods and again.version == turn.version
        assert len(m.history(turn.id, user_id="u")) == 1
        assert [h.record.id for h in m.search("May", user_id="u", recipe=words)] == [turn.id]
        assert m.get(other.id, user_id="v") == other
        counts = m.reindex()
        assert (counts["memories"], counts["updated"]) == (2, 0)
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
