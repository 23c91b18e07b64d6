"""Store conformance, sessions: history, state, workflows, summaries, cleanup
and forgetting a user."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from memlane.api import Memory
from memlane.core.base import MemoryInput
from memlane.errors import (
    ConflictError,
    NotFoundError,
    ValidationError,
)
from memlane.models import Filters, HistoryAction, MemoryKind
from memlane.ports import store as ops
from memlane.ports.embedder import Vector
from memlane.testing.conformance._base import ConformanceBase, _raises
from memlane.testing.fakes import FakeEmbedder, FixedClock


class SessionsConformance(ConformanceBase):
    """Conformance tests of sessions."""

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
