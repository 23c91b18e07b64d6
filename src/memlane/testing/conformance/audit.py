"""Store conformance, audit trail: every change and read recorded with who made it and
which ids it touched, never content; entries commit with their change; forgetting a user
leaves one tombstone; one user's trail never shows another's."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import datetime, timedelta

from memlane.api import AsyncMemory, Memory
from memlane.core.audit import tombstone_id
from memlane.core.base import CoreConfig
from memlane.errors import ConflictError, NotFoundError, ValidationError
from memlane.models import AuditEvent
from memlane.ports import store as ops
from memlane.ports.store import Store
from memlane.testing.conformance._base import ConformanceBase, _raises
from memlane.testing.fakes import FakeEmbedder, FixedClock

ACTOR = "agent:conformance"


class AuditConformance(ConformanceBase):
    """Conformance tests of the audit trail."""

    def _audited(self, level: str = "all", store: Store | None = None) -> tuple[Memory, FixedClock]:
        clock = FixedClock()
        memory = Memory(
            store or self.make_store(),
            embedder=FakeEmbedder(),
            clock=clock,
            config=CoreConfig(audit=level),
            actor=ACTOR,
        )
        return memory, clock

    @staticmethod
    def _trail(m: Memory, user_id: str) -> list[AuditEvent]:
        """Every entry stored under ``user_id`` itself (no tombstone), oldest first."""
        return list(m.store.batch([ops.ListAudit(user_id, None, 10_000)])[0])

    def test_every_change_is_recorded_with_its_ids(self) -> None:
        m, clock = self._audited("writes")
        rec = m.add("likes tea", user_id="u", session_id="s0")
        m.update(rec.id, user_id="u", importance=0.9)
        new = m.supersede(rec.id, "likes coffee", user_id="u")
        m.delete(new.id, user_id="u")
        m.restore(new.id, user_id="u")
        fact = m.remember("city", "Paris", user_id="u")
        run = m.add_messages("s1", [("user", "hi there"), ("assistant", "hello")], user_id="u")
        m.set_state("s1", {"step": 1}, user_id="u", expected_version=0)
        m.update_state("s1", {"step": 2}, user_id="u")
        m.save_workflow("w1", user_id="u", session_id="s1", step="a", expected_version=0)
        summary = m.summarize_session("s1", user_id="u")
        m.delete_session("s1", user_id="u")
        entries = m.audit("u", limit=100).items
        assert [e.action for e in entries] == [
            "add", "update", "supersede", "delete", "restore", "remember", "add_messages",
            "set_state", "update_state", "save_workflow", "summarize_session", "delete_session",
        ]  # fmt: skip
        assert all(e.actor == ACTOR and e.at == clock.now and e.user_id == "u" for e in entries)
        by = {e.action: e for e in entries}
        assert by["add"].record_ids == (rec.id,) and by["add"].session_ids == ("s0",)
        assert dict(by["add"].counts) == {"records": 1}
        assert by["update"].record_ids == (rec.id,)
        assert set(by["supersede"].record_ids) == {rec.id, new.id}
        assert by["delete"].record_ids == by["restore"].record_ids == (new.id,)
        assert by["remember"].record_ids == (fact.id,)
        episodes = by["add_messages"].record_ids
        assert by["add_messages"].session_ids == ("s1",) and len(run.messages) == 2
        assert by["add_messages"].counts == {"messages": 2, "records": 2} and len(episodes) == 2
        for action in ("set_state", "update_state", "save_workflow"):
            assert by[action].session_ids == ("s1",) and by[action].counts == {"states": 1}
        assert by["summarize_session"].record_ids == (summary.id,)
        deleted = by["delete_session"]
        assert deleted.session_ids == ("s1",) and deleted.counts == {"sessions_deleted": 1}
        assert set(deleted.record_ids) == {*episodes, summary.id}  # they went with it
        m.close()

    def test_whole_store_work_is_recorded_per_user(self) -> None:
        source, clock = self._audited("off")
        source.add("tea", user_id="u")
        source.add("short lived", user_id="v", ttl=timedelta(hours=1))
        source.add_messages("s", [("user", "hi")], user_id="v")
        rows = source.export_rows()
        m, clock = self._audited("writes")
        m.import_rows(rows)
        (imported,) = m.audit("u").items
        assert imported.action == "import_rows" and imported.counts["records"] == 1
        (into_v,) = m.audit("v").items
        assert into_v.counts["records"] == 2 and into_v.counts["messages"] == 1
        assert into_v.session_ids == ("s",)
        clock.advance(hours=2)
        assert m.sweep() == 1
        swept = m.audit("v").items[-1]
        assert swept.action == "sweep" and swept.counts == {"removed": 1}
        assert [e.action for e in m.audit("u").items] == ["import_rows"]
        source.close()
        m.close()

    def test_reads_are_recorded_from_what_they_returned(self) -> None:
        m, _ = self._audited("all")
        bees = m.add("Alice keeps bees", user_id="u")
        m.add("Alice likes tea", user_id="u", metadata={"pinned": True})
        m.add_messages("s1", [("user", "the bees swarmed")], user_id="u")
        m.set_state("s1", {"step": 1}, user_id="u", expected_version=0)
        before = len(self._trail(m, "u"))
        hits = m.search("bees", user_id="u", limit=2)
        m.get(bees.id, user_id="u")
        page = m.list(user_id="u", limit=2)
        m.history(bees.id, user_id="u")
        m.get_history("s1", user_id="u")
        m.get_state("s1", user_id="u")
        built = m.build_context(user_id="u", budget=2000, query="bees", session_id="s1")
        m.recall("nothing", user_id="u")
        m.export_rows(user_id="u")
        reads = self._trail(m, "u")[before:]
        assert [e.action for e in reads] == [
            "search", "get", "list", "history", "get_history", "get_state", "build_context",
            "recall", "export_rows",
        ]  # fmt: skip
        by = {e.action: e for e in reads}
        assert by["search"].record_ids == tuple(h.record.id for h in hits)
        assert by["search"].counts == {"results": len(hits)} and hits
        assert by["get"].record_ids == (bees.id,)
        assert by["list"].record_ids == tuple(r.id for r in page.items)
        assert by["history"].record_ids == (bees.id,) and by["history"].counts == {"events": 1}
        assert by["get_history"].session_ids == ("s1",)
        assert by["get_history"].counts == {"messages": 1}
        assert by["get_state"].counts == {"states": 1}
        in_context = {i for tier in ("pinned", "memories") for i in built.ids.get(tier, ())}
        assert set(by["build_context"].record_ids) == in_context and in_context
        assert by["build_context"].counts["messages"] == 1
        assert by["recall"].counts == {"results": 0}
        assert by["export_rows"].counts["record"] == 3 and not by["export_rows"].record_ids
        # At level "writes" the same reads leave nothing.
        quiet = Memory(m.store, embedder=m.embedder, config=CoreConfig(audit="writes"))
        quiet.search("bees", user_id="u")
        quiet.get(bees.id, user_id="u")
        assert len(self._trail(m, "u")) == before + len(reads)
        m.close()

    def test_no_content_reaches_the_trail(self) -> None:
        secret = "zanzibarquux"
        m, _ = self._audited("all")
        rec = m.add(f"my pin is {secret}", user_id="u", topics=[secret], metadata={"k": secret})
        m.update(rec.id, user_id="u", metadata={"k": secret + "2"})
        m.search(f"what is {secret}", user_id="u")
        m.add_messages("s", [("user", f"the {secret} code")], user_id="u")
        m.set_state("s", {"k": secret}, user_id="u", expected_version=0)
        m.remember("pin", secret, user_id="u")
        m.recall("pin", user_id="u")
        m.build_context(user_id="u", budget=500, query=secret, session_id="s")
        m.export_rows(user_id="u")
        entries = self._trail(m, "u")
        assert len(entries) == 9
        stored = json.dumps([e.to_dict() for e in entries])
        assert secret not in stored and "pin" not in stored
        m.close()

    def test_forget_user_leaves_only_the_tombstone(self) -> None:
        m, clock = self._audited("all")
        m.add("alice's note", user_id="alice@example.com")
        m.search("note", user_id="alice@example.com")
        m.add("bob's note", user_id="bob")
        counts = m.forget_user("alice@example.com")
        assert counts["audit"] == 2 and counts["records"] == 1
        assert self._trail(m, "alice@example.com") == []
        (tomb,) = m.audit("alice@example.com").items
        assert tomb.tombstone and tomb.action == "forget_user"
        assert tomb.actor == ACTOR and tomb.at == clock.now
        assert tomb.user_id == tombstone_id(m.core, "alice@example.com")
        assert "alice" not in tomb.user_id and tomb.counts == counts
        assert "alice@example.com" not in m.list_users()
        assert [e.action for e in m.audit("bob").items] == ["add"]
        # Forgotten again (after new data): still exactly one tombstone, the newest.
        clock.advance(days=1)
        m.add("back again", user_id="alice@example.com")
        m.forget_user("alice@example.com")
        (again,) = m.audit("alice@example.com").items
        assert again.at == clock.now and again.counts["records"] == 1
        assert again.counts["audit"] == 2  # the add and the earlier tombstone
        m.close()

    def test_one_users_trail_never_shows_anothers(self) -> None:
        m, _ = self._audited("all")
        mine = m.add("mine", user_id="u")
        theirs = m.add("theirs", user_id="v")
        m.search("theirs", user_id="v")
        m.get(theirs.id, user_id="v")
        m.add_messages("shared-name", [("user", "hello")], user_id="v")
        entries = m.audit("u").items
        assert [e.action for e in entries] == ["add"] and entries[0].record_ids == (mine.id,)
        assert all(e.user_id == "v" for e in m.audit("v").items)
        assert len(m.audit("v").items) == 4
        assert m.audit("nobody").items == ()
        m.forget_user("v")
        assert [e.action for e in m.audit("u").items] == ["add"]
        m.close()

    def test_bad_input_writes_no_entry(self) -> None:
        m, _ = self._audited("all")
        rec = m.add("kept", user_id="u")
        m.set_state("s", {"a": 1}, user_id="u", expected_version=0)
        before = self._trail(m, "u")
        naive = datetime(2024, 1, 1)
        for bad, error in (
            (lambda: m.add("", user_id="u"), ValidationError),
            (lambda: m.add("x", user_id=""), ValidationError),
            (lambda: m.search("", user_id="u"), ValidationError),
            (lambda: m.search("x", user_id="u", limit=0), ValidationError),
            (lambda: m.get("nosuchid", user_id="u"), NotFoundError),
            (lambda: m.update(rec.id, user_id="u", text="y", expected_version=9), ConflictError),
            (lambda: m.set_state("s", {"a": 2}, user_id="u", expected_version=0), ConflictError),
            (lambda: m.set_state("s", {"a": object()}, user_id="u", expected_version=1),
             ValidationError),
            (lambda: m.import_rows([{"type": "record", "data": {"id": "x"}}]), ValidationError),
            (lambda: m.audit("u", limit=0), ValidationError),
            (lambda: m.audit(""), ValidationError),
            (lambda: m.audit("u", since=naive), ValidationError),
            (lambda: m.with_actor(""), ValidationError),
            (lambda: m.with_actor("two\nlines"), ValidationError),
        ):  # fmt: skip
            with _raises(error):
                bad()
        assert self._trail(m, "u") == before
        m.close()

    def test_an_entry_commits_with_its_change_or_not_at_all(self) -> None:
        store = self.make_store()
        store.setup()
        m, clock = self._audited("all", store)
        rec = m.add("first", user_id="u")
        entry = AuditEvent("E1", "u", clock.now, "someone", "add", (rec.id,))
        with _raises(ConflictError):  # the record exists: the write and its entry go
            store.batch([ops.AppendAudit((entry,)), ops.WriteRecord(rec, 0)])
        assert "E1" not in {e.id for e in self._trail(m, "u")}
        store.batch([ops.AppendAudit((entry,))])
        store.batch([ops.AppendAudit((replace(entry, actor="forger"),))])  # same id: kept
        assert [e.actor for e in self._trail(m, "u") if e.id == "E1"] == ["someone"]
        counts = store.batch([ops.DeleteUser("u")])[0]  # no tombstone: nothing stays
        assert counts["audit"] == 2 and self._trail(m, "u") == []
        m.close()

    def test_audit_pages_and_since(self) -> None:
        m, clock = self._audited("writes")
        times = []
        for i in range(5):
            times.append(clock.advance(minutes=1))
            m.add(f"note {i}", user_id="u")
        seen: list[AuditEvent] = []
        after = None
        while True:
            page = m.audit("u", limit=2, after=after)
            seen += page.items
            if page.next_cursor is None:
                break
            after = page.next_cursor
        assert [e.at for e in seen] == times and len({e.id for e in seen}) == 5
        assert [e.at for e in m.audit("u", since=times[2]).items] == times[2:]
        m.close()

    def test_off_records_nothing_and_forgetting_still_erases(self) -> None:
        loud, _ = self._audited("all")
        loud.add("recorded", user_id="u")
        m, _ = self._audited("off", loud.store)
        rec = m.add("not recorded", user_id="u")
        m.search("recorded", user_id="u")
        m.get(rec.id, user_id="u")
        assert [e.action for e in self._trail(m, "u")] == ["add"]
        assert m.forget_user("u")["audit"] == 1
        assert m.audit("u").items == ()  # no tombstone either
        m.close()

    def test_actors_and_the_async_api(self) -> None:
        m, _ = self._audited("all")
        m.with_actor("api:key1 agent:a1").add("from a key", user_id="u")
        m.add("from the process", user_id="u")

        async def scenario() -> list[AuditEvent]:
            async with AsyncMemory(
                m.store, embedder=FakeEmbedder(), config=CoreConfig(), actor="async"
            ) as am:
                await am.with_actor("mcp:client").search("key", user_id="u")
                return list((await am.audit("u")).items)

        entries = asyncio.run(scenario())
        assert [(e.actor, e.action) for e in entries] == [
            ("api:key1 agent:a1", "add"),
            (ACTOR, "add"),
            ("mcp:client", "search"),
        ]
        assert m.core.actor == ACTOR  # with_actor left the memory as it was
        m.close()
