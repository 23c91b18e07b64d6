"""Conformance: the knowledge graph (entities, mentions, relations, traversal)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from memlane.api import Memory
from memlane.core.base import CoreConfig
from memlane.core.flow import many
from memlane.core.mentions import triple_drafts
from memlane.errors import NotFoundError, ValidationError
from memlane.models import MENTIONED_WITH, EntityType, Relation
from memlane.ports import store as ops
from memlane.testing.conformance._base import ConformanceBase, _day, _raises
from memlane.testing.fakes import FakeEmbedder


def _ops(mem: Memory, *ops_: ops.Op[Any]) -> list[Any]:
    """Run store ops in one batch through the memory (what the core's flows do)."""
    return mem.run(many(list(ops_)))


def _lives_in(record_id: str, said: Any, city: str) -> ops.MentionDraft:
    """A memory stating, as a typed exclusive triple, that Alice Smith lives in ``city``."""
    triple = ("Alice Smith", EntityType.PERSON, "lives in", city, EntityType.PLACE, True)
    return ops.MentionDraft(record_id, None, (), said, triple_drafts([triple], None))


class GraphConformance(ConformanceBase):
    def test_an_entity_named_in_three_sessions_links_their_memories(self) -> None:
        mem, _, _ = self._memory()
        ids = [
            mem.add("We hiked near Lake Tahoe with Jon Ross.", user_id="u", session_id="s1").id,
            mem.add("Later I sent Jon Ross the photos.", user_id="u", session_id="s2").id,
            mem.add("I think Jon Ross moved to Berlin.", user_id="u", session_id="s3").id,
            mem.add("Nothing about anyone here.", user_id="u", session_id="s4").id,
        ]
        names = {e.name: e for e in mem.entities(user_id="u")}
        assert {"Lake Tahoe", "Jon Ross", "Berlin"} <= set(names)
        jon = names["Jon Ross"]
        found = mem.mentions(user_id="u", entity="jon ross")  # by name, any case
        assert sorted(m.record_id for m in found) == sorted(ids[:3])
        by_id = mem.mentions(user_id="u", entity=jon.id)
        assert [m.record_id for m in by_id] == [m.record_id for m in found]
        assert {m.session_id for m in found} == {"s1", "s2", "s3"}
        of_memory = mem.mentions(user_id="u", record_ids=[ids[2], ids[3]])
        named = {m.entity_id for m in of_memory}
        assert named == {jon.id, names["Berlin"].id}

    def test_co_occurrence_edges_carry_the_memories_that_state_them(self) -> None:
        mem, _, _ = self._memory()
        a = mem.add("I met Jon Ross in Paris.", user_id="u").id
        b = mem.add("Then Jon Ross showed me around Paris again.", user_id="u").id
        names = {e.name: e.id for e in mem.entities(user_id="u")}
        (edge,) = mem.relations("Paris", user_id="u")
        assert edge.predicate == MENTIONED_WITH
        assert {edge.subject_id, edge.object_id} == {names["Jon Ross"], names["Paris"]}
        assert sorted(edge.sources) == sorted([a, b])
        assert edge.is_current and edge.valid_from is not None

    def test_a_first_name_in_a_session_is_the_full_name_said_before_in_it(self) -> None:
        mem, _, _ = self._memory()
        mem.add("Our new neighbour is Maria Lopez.", user_id="u", session_id="s1")
        mem.add("Yesterday, Maria brought us a cake.", user_id="u", session_id="s1")
        mem.add("At work, Maria is my manager.", user_id="u", session_id="other")
        (maria_lopez,) = (e for e in mem.entities(user_id="u") if e.name == "Maria Lopez")
        assert "Maria" in maria_lopez.aliases
        assert len(mem.mentions(user_id="u", entity=maria_lopez.id)) >= 2

    def test_dates_are_entities(self) -> None:
        mem, clock, _ = self._memory()
        clock.now = _day(2023, 5, 8)
        mem.add("Yesterday I went to the support group.", user_id="u")
        mem.add("On 7 May 2023 it rained.", user_id="u")
        dates = [e for e in mem.entities(user_id="u") if e.type is EntityType.DATE]
        assert [d.name for d in dates] == ["7 May 2023"]
        assert len(mem.mentions(user_id="u", entity=dates[0].id)) == 2

    def test_relations_have_validity(self) -> None:
        mem, _, _ = self._memory()
        first = mem.add("Alice Smith lives in London.", user_id="u").id
        moved = mem.add("Alice Smith lives in Paris now.", user_id="u").id
        names = {e.name: e.id for e in mem.entities(user_id="u")}
        alice, london, paris = names["Alice Smith"], names["London"], names["Paris"]
        start, end = _day(2020, 1, 1), _day(2025, 3, 1)
        _ops(
            mem,
            ops.PutRelations(
                (
                    Relation("u", "r-london", alice, "lives_in", london, start, end, end, (first,)),
                    Relation("u", "r-paris", alice, "lives_in", paris, end, None, end, (moved,)),
                )
            ),
        )
        typed = {
            r.id: r for r in mem.relations("Alice Smith", user_id="u") if r.predicate == "lives_in"
        }
        assert typed["r-london"].valid_from == start and typed["r-london"].valid_to == end
        assert typed["r-london"].sources == (first,) and not typed["r-london"].is_current
        assert typed["r-paris"].is_current
        current = mem.relations("Alice Smith", user_id="u", current=True)
        assert "r-london" not in {r.id for r in current} and "r-paris" in {r.id for r in current}
        # A second statement adds a source; an end once set is not moved.
        later = end + timedelta(days=9)
        _ops(
            mem,
            ops.PutRelations(
                (
                    Relation(
                        "u", "r-london", alice, "lives_in", london, start, later, later, (moved,)
                    ),
                )
            ),
        )
        (again,) = (r for r in mem.relations("London", user_id="u") if r.id == "r-london")
        assert sorted(again.sources) == sorted([first, moved]) and again.valid_to == end

    def test_neighbors_by_depth(self) -> None:
        mem, _, _ = self._memory()
        mem.add("I know Ann Lee from Oslo.", user_id="u")
        mem.add("Everyone in Oslo knows Bob Hart.", user_id="u")
        mem.add("Bob Hart works at Acme Corp.", user_id="u")
        one_hop = [(n.entity.name, n.depth) for n in mem.neighbors("Ann Lee", 1, user_id="u")]
        assert one_hop == [("Oslo", 1)]
        two = {n.entity.name: n.depth for n in mem.neighbors("Ann Lee", 2, user_id="u")}
        assert two == {"Oslo": 1, "Bob Hart": 2}
        three = {n.entity.name: n.depth for n in mem.neighbors("Ann Lee", 3, user_id="u")}
        assert three == {"Oslo": 1, "Bob Hart": 2, "Acme Corp": 3}
        with _raises(NotFoundError):
            mem.neighbors("Nobody Known", 1, user_id="u")

    def test_one_users_entities_are_never_seen_by_another(self) -> None:
        mem, _, _ = self._memory()
        mem.add("I met Jon Ross in Paris.", user_id="alice")
        mem.add("Bob met Carla Diaz in Rome.", user_id="bob")
        assert {e.name for e in mem.entities(user_id="alice")} == {"Jon Ross", "Paris"}
        assert "Jon Ross" not in {e.name for e in mem.entities(user_id="bob")}
        with _raises(NotFoundError):
            mem.relations("Jon Ross", user_id="bob")
        jon = next(e for e in mem.entities(user_id="alice") if e.name == "Jon Ross")
        with _raises(NotFoundError):  # not even by its id
            mem.neighbors(jon.id, 1, user_id="bob")
        assert mem.mentions(user_id="bob", entity="Carla Diaz")
        assert not _ops(mem, ops.ListMentions("bob", entity_ids=(jon.id,)))[0]

    def test_merging_two_entities_keeps_history(self) -> None:
        mem, _, _ = self._memory()
        a = mem.add("I called Robert Brown about Tokyo.", user_id="u").id
        b = mem.add("Dinner with Bob Brown in Tokyo.", user_id="u").id
        merged = mem.merge_entities("Bob Brown", "Robert Brown", user_id="u")
        assert merged.name == "Robert Brown" and "Bob Brown" in merged.aliases
        names = {e.name for e in mem.entities(user_id="u")}
        assert "Bob Brown" not in names and "Robert Brown" in names
        found = mem.mentions(user_id="u", entity="Bob Brown")  # the old name leads on
        assert sorted(m.record_id for m in found) == sorted([a, b])
        (edge,) = [r for r in mem.relations("Robert Brown", user_id="u")]
        assert sorted(edge.sources) == sorted([a, b])
        old = [
            e for e in _ops(mem, ops.ListEntities("u", ids=(edge.subject_id, edge.object_id)))[0]
        ]
        assert all(e.merged_into is None for e in old)

    def test_forgetting_and_removing_erase_the_graph(self) -> None:
        mem, clock, _ = self._memory()
        keep = mem.add("I met Jon Ross in Paris.", user_id="u")
        gone = mem.add("Tina Fox visited Madrid.", user_id="u", ttl=timedelta(hours=1))
        mem.add("I met Jon Ross in Paris.", user_id="other")
        mem.add_messages(
            "s9", [{"role": "user", "content": "Greta Holm flew to Lisbon."}], user_id="u"
        )
        assert "Greta Holm" in {e.name for e in mem.entities(user_id="u")}
        mem.delete_session("s9", user_id="u")
        clock.advance(hours=2)
        mem.sweep()
        names = {e.name for e in mem.entities(user_id="u")}
        assert names == {"Jon Ross", "Paris"}, names
        assert not mem.mentions(user_id="u", record_ids=[gone.id])
        assert mem.mentions(user_id="u", record_ids=[keep.id])
        mem.forget_user("u")
        assert mem.entities(user_id="u") == []
        assert _ops(mem, ops.ListRelations("u"), ops.ListMentions("u", entity_ids=("x",)))[0] == []
        assert {e.name for e in mem.entities(user_id="other")} == {"Jon Ross", "Paris"}

    def test_an_edited_memory_names_what_its_new_text_names(self) -> None:
        mem, clock, _ = self._memory()
        edited = mem.add("I met Jon Ross in Paris.", user_id="u")
        other = mem.add("Everyone in Paris knows Bob Hart.", user_id="u")
        mem.add("I met Jon Ross in Paris.", user_id="elsewhere")
        jon = {e.name: e.id for e in mem.entities(user_id="u")}["Jon Ross"]
        clock.advance(hours=1)
        mem.update(edited.id, user_id="u", text="Later I met Jon Ross in Lyon.")
        entities = {e.name: e.id for e in mem.entities(user_id="u")}
        assert set(entities) == {"Jon Ross", "Lyon", "Paris", "Bob Hart"}, entities
        assert entities["Jon Ross"] == jon  # still named: the same entity, not a new one
        named = {m.entity_id for m in mem.mentions(user_id="u", record_ids=[edited.id])}
        assert named == {entities["Jon Ross"], entities["Lyon"]}
        pairs = {
            frozenset((r.subject_id, r.object_id)): r.sources for r in mem.relations(user_id="u")
        }
        assert pairs[frozenset((entities["Jon Ross"], entities["Lyon"]))] == (edited.id,)
        assert frozenset((entities["Jon Ross"], entities["Paris"])) not in pairs
        assert pairs[frozenset((entities["Paris"], entities["Bob Hart"]))] == (other.id,)
        mem.update(edited.id, user_id="u", text="nothing to name here")
        assert {e.name for e in mem.entities(user_id="u")} == {"Paris", "Bob Hart"}
        assert {e.name for e in mem.entities(user_id="elsewhere")} == {"Jon Ross", "Paris"}

    def test_an_import_rebuilds_the_graph_of_its_memories(self) -> None:
        mem, _, _ = self._memory()
        mem.add("I met Jon Ross in Paris.", user_id="u", session_id="s1")
        mem.add("Later, Jon showed me Paris.", user_id="u", session_id="s1")
        rows = mem.export_rows(user_id="u")
        other, _, _ = self._memory()
        other.import_rows(rows)
        other.import_rows(rows)  # again: nothing doubles
        names = {e.name: e for e in other.entities(user_id="u")}
        assert set(names) == {"Jon Ross", "Paris"} and names["Jon Ross"].aliases == ("Jon",)
        (edge,) = other.relations("Paris", user_id="u")
        assert len(edge.sources) == 2
        assert other.reindex()["memories"] == 2
        assert {e.name for e in other.entities(user_id="u")} == set(names)

    def test_a_typed_exclusive_triple_ends_the_edge_it_replaces(self) -> None:
        mem, clock, _ = self._memory()
        clock.now = _day(2024, 3, 1)
        london = mem.add("Alice Smith lives in London.", user_id="u")
        clock.now = _day(2025, 6, 1)
        paris = mem.add("Alice Smith moved to Paris.", user_id="u")

        _ops(
            mem,
            ops.IndexMentions("u", (_lives_in(london.id, london.created_at, "London"),), clock.now),
        )
        _ops(
            mem,
            ops.IndexMentions("u", (_lives_in(paris.id, paris.created_at, "Paris"),), clock.now),
        )
        names = {e.name: e for e in mem.entities(user_id="u")}
        assert names["Alice Smith"].type is EntityType.PERSON  # the triple typed the name
        lives = {
            r.object_id: r
            for r in mem.relations("Alice Smith", user_id="u")
            if r.predicate == "lives_in"
        }
        old, new = lives[names["London"].id], lives[names["Paris"].id]
        assert old.valid_from == london.created_at and old.valid_to == paris.created_at
        assert old.sources == (london.id,) and new.sources == (paris.id,)
        assert new.valid_from == paris.created_at and new.is_current
        current = mem.relations("Alice Smith", user_id="u", current=True)
        assert old.id not in {r.id for r in current} and new.id in {r.id for r in current}

    def test_edges_as_of_a_moment_are_those_that_held_then(self) -> None:
        mem, clock, _ = self._memory()
        clock.now = _day(2024, 3, 1)
        london = mem.add("Alice Smith lives in London.", user_id="u")
        clock.now = _day(2025, 6, 1)
        paris = mem.add("Alice Smith moved to Paris.", user_id="u")
        mem.add("Alice Smith lives in London.", user_id="other")

        for record in (london, paris):
            city = "London" if record is london else "Paris"
            item = _lives_in(record.id, record.created_at, city)
            _ops(mem, ops.IndexMentions("u", (item,), clock.now))
        names = {e.id: e.name for e in mem.entities(user_id="u")}

        def lives(when: Any) -> list[str]:
            found = mem.relations("Alice Smith", user_id="u", as_of=when)
            return [names[r.object_id] for r in found if r.predicate == "lives_in"]

        def near(when: Any) -> set[str]:
            return {n.entity.name for n in mem.neighbors("Alice Smith", user_id="u", as_of=when)}

        assert lives(_day(2024, 1, 1)) == []  # before anything was said
        assert lives(_day(2024, 3, 1)) == ["London"]  # from the moment it was said
        assert lives(_day(2025, 5, 31)) == ["London"]
        assert lives(_day(2025, 6, 1)) == ["Paris"]  # the move ends London as Paris begins
        assert "Paris" not in near(_day(2024, 6, 1)) and "London" in near(_day(2024, 6, 1))
        assert "Paris" in near(_day(2025, 7, 1))
        both = {names[r.object_id] for r in mem.relations("Alice Smith", user_id="u")}
        assert {"London", "Paris"} <= both  # the edge history keeps both
        with _raises(ValidationError):
            mem.relations("Alice Smith", user_id="u", as_of=_day(2024, 6, 1).replace(tzinfo=None))
        with _raises(NotFoundError):
            mem.relations("Alice Smith", user_id="nobody", as_of=_day(2024, 6, 1))

    def test_edges_learned_out_of_order_hold_when_they_were_said_to(self) -> None:
        mem, clock, _ = self._memory()
        clock.now = _day(2026, 1, 1)
        paris = mem.add("Alice Smith lives in Paris.", user_id="u", event_at=_day(2025, 6, 1))
        london = mem.add("Alice Smith lived in London.", user_id="u", event_at=_day(2020, 1, 1))

        for record, city in ((paris, "Paris"), (london, "London")):  # learned newest first
            _ops(
                mem,
                ops.IndexMentions("u", (_lives_in(record.id, record.event_at, city),), clock.now),
            )
        names = {e.id: e.name for e in mem.entities(user_id="u")}

        def lives(when: Any) -> list[str]:
            found = mem.relations("Alice Smith", user_id="u", as_of=when)
            return [names[r.object_id] for r in found if r.predicate == "lives_in"]

        assert lives(_day(2021, 1, 1)) == ["London"]
        assert lives(_day(2026, 1, 1)) == ["Paris"]  # the older fact did not end the newer
        # A co-occurrence said of an earlier time holds from then.
        mem.add("Then Jon Ross met Bea Kahn.", user_id="u", event_at=_day(2024, 1, 1))
        mem.add("Then Jon Ross met Bea Kahn.", user_id="u", event_at=_day(2019, 1, 1))
        near = mem.neighbors("Jon Ross", user_id="u", as_of=_day(2020, 1, 1))
        assert [n.entity.name for n in near] == ["Bea Kahn"]

    def test_reindex_fills_the_graph_of_memories_written_without_it(self) -> None:
        store = self.make_store()
        before = Memory(store, embedder=FakeEmbedder(), config=CoreConfig(graph=False))
        before.add("I met Jon Ross in Paris.", user_id="u")
        assert before.entities(user_id="u") == []  # recorded nothing: the graph is off
        after = Memory(store, embedder=FakeEmbedder())
        assert after.reindex()["memories"] == 1
        assert {e.name for e in after.entities(user_id="u")} == {"Jon Ross", "Paris"}
        after.close()
