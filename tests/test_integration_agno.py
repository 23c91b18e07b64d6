"""memlane inside the real Agno runtime: agents, teams and tools whose model is the
loopback chat server (scripted answers, tool calls included), over real SQLite."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("agno")

from agno.agent import Agent
from agno.db.base import SessionType
from agno.db.in_memory import InMemoryDb
from agno.db.schemas.memory import UserMemory
from agno.models.openai import OpenAIChat
from agno.models.openai.like import OpenAILike
from agno.session import AgentSession
from agno.team import Team

from chat_server import ChatServer, Scripted
from helpers import example_env, run_example
from memlane import ANONYMOUS_USER, Filters, HistoryAction, Memory, MemoryKind, MemoryRecord
from memlane.errors import UnsupportedError, ValidationError
from memlane.integrations.agno import (
    MemlaneDb,
    MemlaneTools,
    MissingUserError,
    UnsupportedByMemlaneError,
)
from memlane.testing import FakeEmbedder

Responder = Callable[[dict[str, Any]], Any]


@pytest.fixture(autouse=True)
def _no_agno_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Agno reports runs to its cloud by default; tests talk to loopback only."""
    monkeypatch.setenv("AGNO_TELEMETRY", "false")


@pytest.fixture()
def chat(server: ChatServer) -> Iterator[ChatServer]:
    server.reset()
    yield server
    server.reset()


@pytest.fixture()
def memory(tmp_path: Path) -> Iterator[Memory]:
    with Memory(f"sqlite:///{tmp_path / 'agno.db'}", embedder=FakeEmbedder()) as m:
        yield m


def model(server: ChatServer) -> OpenAIChat:
    return OpenAIChat(id="scripted", base_url=server.base_url, api_key="test-key")


def system_of(body: dict[str, Any]) -> str:
    return next(
        (m.get("content") or "" for m in body["messages"] if m["role"] in ("system", "developer")),
        "",
    )


def tools_of(body: dict[str, Any]) -> list[str]:
    return [t["function"]["name"] for t in body.get("tools") or []]


def call(name: str, args: dict[str, Any], call_id: str = "call_1") -> Scripted:
    return Scripted(content=args, tool_call=True, tool_name=name, call_id=call_id)


def memory_manager_adds(fact: str, topics: list[str]) -> Responder:
    """Answers Agno's memory manager with an add_memory call (unless the fact is known),
    and the agent with whether its prompt carries the fact."""

    def respond(body: dict[str, Any]) -> Any:
        last = body["messages"][-1]
        if "delete_memory" in tools_of(body):  # Agno's memory manager
            if last["role"] == "tool" or fact in system_of(body):
                return "nothing to change"
            return call("add_memory", {"memory": fact, "topics": topics})
        if fact in system_of(body):
            return "Try a mushroom risotto: you are vegetarian."
        return "Noted."

    return respond


# ------------------------------------------------------------------ the agent


def test_agent_remembers_across_a_process_restart(chat: ChatServer, tmp_path: Path) -> None:
    """The example, run twice as two processes: the first run's memory manager writes a
    fact through MemlaneDb; the second process, in a new session, gets it in its prompt."""
    chat.responder = memory_manager_adds("Alice is vegetarian", ["food"])
    store = tmp_path / "restart.db"
    env = {**example_env(store), "MEMLANE_LLM_MODEL": "scripted"}
    run = ("agno_agent.py", "--user", "alice")
    first = run_example(
        *run, "--session", "s1", "--base-url", chat.base_url, "I'm vegetarian", env=env, timeout=180
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "Noted."
    chat.requests.clear()
    second = run_example(
        *run, "--session", "s2", "What should I cook tonight?",
        env={**env, "MEMLANE_LLM_BASE_URL": chat.base_url}, timeout=180,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert "vegetarian" in second.stdout  # the scripted model saw the memory in its prompt
    agent_calls = [r for r in chat.requests if "search_memories" in tools_of(r)]
    assert "Alice is vegetarian" in system_of(agent_calls[0])

    # What Agno wrote is memlane's: a fact with Agno's id, episodes, two sessions.
    with Memory(f"sqlite:///{store}", embedder=FakeEmbedder()) as memory:
        facts = memory.list(user_id="alice").items
        fact = next(r for r in facts if r.kind is MemoryKind.FACT)
        assert fact.text == "Alice is vegetarian" and fact.topics == ("food",)
        assert "agno_memory_id" in fact.metadata and fact.actor == "agno"
        hits = memory.search("vegetarian", user_id="alice")
        # the fact, beside the turn that said the same ("I'm vegetarian"): near a tie
        assert fact.id in [h.record.id for h in hits[:2]]
        history = memory.get_history("s1", user_id="alice")
        assert [(m.role, m.content) for m in history[0].messages] == [
            ("user", "I'm vegetarian"),
            ("assistant", "Noted."),
        ]
        assert {s.session_id for s in memory.list_sessions(user_id="alice").items} == {"s1", "s2"}
        db = MemlaneDb(memory)
        session = db.get_session("s1", SessionType.AGENT, user_id="alice")
        assert isinstance(session, AgentSession) and session.runs
        assert session.runs[0].content == "Noted."


def test_session_history_reaches_the_next_run(chat: ChatServer, memory: Memory) -> None:
    chat.responder = lambda body: f"turns seen: {len(body['messages'])}"
    db = MemlaneDb(memory)
    agent = Agent(model=model(chat), db=db, add_history_to_context=True, num_history_runs=3)
    agent.run("My flight is on Friday", user_id="alice", session_id="trip")
    # A new Agent object (as after a restart) reads the history back from memlane.
    again = Agent(model=model(chat), db=db, add_history_to_context=True, num_history_runs=3)
    again.run("When do I fly?", user_id="alice", session_id="trip")
    contents = [m.get("content") for m in chat.requests[-1]["messages"]]
    assert "My flight is on Friday" in contents and "When do I fly?" in contents
    runs = db.get_session("trip", user_id="alice", runs_limit=1)
    assert isinstance(runs, AgentSession) and len(runs.runs or []) == 1
    assert [len(r.messages) for r in memory.get_history("trip", user_id="alice")] == [2, 2]
    # Every session row write is a memlane state version.
    assert len(memory.state_history("trip", user_id="alice", name="agno:session")) >= 2


def test_arun_keeps_memory_in_memlane_too(chat: ChatServer, memory: Memory) -> None:
    """Agno drives a sync db from ``arun`` as well: same memory, same sessions."""
    chat.responder = memory_manager_adds("Bob plays chess", ["hobbies"])
    db = MemlaneDb(memory)
    agent = Agent(model=model(chat), db=db, update_memory_on_run=True)
    reply = asyncio.run(agent.arun("I play chess", user_id="bob", session_id="a1"))
    assert reply.content == "Noted."
    assert [m.memory for m in db.get_user_memories(user_id="bob")] == ["Bob plays chess"]
    assert [m.content for m in memory.get_history("a1", user_id="bob")[0].messages] == [
        "I play chess",
        "Noted.",
    ]


def _agno_updates_london_to_paris(chat: ChatServer, memory: Memory) -> tuple[MemlaneDb, Any]:
    """Alice's memory "Lives in London", written through MemlaneDb, then updated by Agno's
    memory manager in a run ("I moved to Paris"). Returns the db and the first memory."""
    db = MemlaneDb(memory)
    first = db.upsert_user_memory(
        UserMemory(memory="Lives in London", user_id="alice", topics=["home"], input="hi")
    )
    assert isinstance(first, UserMemory) and first.memory_id

    def respond(body: dict[str, Any]) -> Any:
        if "delete_memory" in tools_of(body):
            if body["messages"][-1]["role"] == "tool":
                return "updated"
            assert f"ID: {first.memory_id}" in system_of(body)  # Agno shows its own id
            args = {"memory_id": first.memory_id, "memory": "Lives in Paris", "topics": ["home"]}
            return call("update_memory", args)
        return "Congratulations on the move."

    chat.responder = respond
    agent = Agent(model=model(chat), db=db, update_memory_on_run=True)
    agent.run("I moved to Paris", user_id="alice", session_id="s1")
    return db, first


def _current_fact(memory: Memory) -> MemoryRecord:
    page = memory.list(user_id="alice", filters=None)
    return next(r for r in page.items if r.kind is MemoryKind.FACT)


def test_an_updated_memory_supersedes_and_keeps_its_agno_id(
    chat: ChatServer, memory: Memory
) -> None:
    db, first = _agno_updates_london_to_paris(chat, memory)
    (current,) = db.get_user_memories(user_id="alice")
    assert isinstance(current, UserMemory)
    assert (current.memory_id, current.memory) == (first.memory_id, "Lives in Paris")
    assert current.created_at == first.created_at and current.input == "I moved to Paris"
    new = _current_fact(memory)
    assert [e.action for e in memory.history(new.id, user_id="alice")] == [HistoryAction.ADD]
    everything = Filters(include_superseded=True, kinds=(MemoryKind.FACT,))
    superseded = memory.list(user_id="alice", filters=everything).items
    closed = next(r for r in superseded if r.superseded_by == new.id)
    assert closed.text == "Lives in London"
    actions = [e.action for e in memory.history(closed.id, user_id="alice")]
    assert actions == [HistoryAction.ADD, HistoryAction.SUPERSEDE]


def test_deleting_through_agno_is_a_recorded_restorable_delete(
    chat: ChatServer, memory: Memory
) -> None:
    db, first = _agno_updates_london_to_paris(chat, memory)
    new = _current_fact(memory)
    db.delete_user_memory(first.memory_id, user_id="alice")
    assert db.get_user_memories(user_id="alice") == []
    assert memory.restore(new.id, user_id="alice").text == "Lives in Paris"


def test_session_summary_becomes_the_memlane_summary(chat: ChatServer, memory: Memory) -> None:
    def respond(body: dict[str, Any]) -> Any:
        if "summar" in system_of(body).lower():
            return json.dumps({"summary": "Alice plans a trip to Oslo.", "topics": ["travel"]})
        return "Sure."

    chat.responder = respond
    agent = Agent(model=model(chat), db=MemlaneDb(memory), enable_session_summaries=True)
    agent.run("Plan my Oslo trip", user_id="alice", session_id="s1")
    summary = memory.get_summary("s1", user_id="alice")
    assert summary is not None and summary.text == "Alice plans a trip to Oslo."
    assert summary.kind is MemoryKind.SUMMARY and summary.topics == ("travel",)
    context = memory.build_context(user_id="alice", session_id="s1", query="trip", budget=400)
    assert "Alice plans a trip to Oslo." in context.text


# ------------------------------------------------------------------ users


def test_a_run_without_a_user_is_refused_and_stores_nothing(
    chat: ChatServer, memory: Memory
) -> None:
    chat.responder = memory_manager_adds("Likes jazz", ["music"])
    agent = Agent(model=model(chat), db=MemlaneDb(memory), update_memory_on_run=True)
    with pytest.raises(MissingUserError, match="anonymous=True"):
        agent.run("I like jazz", session_id="s1")
    db = MemlaneDb(memory)
    # Agno's memory manager calls an unset user "default": refused the same way.
    with pytest.raises(MissingUserError):
        db.upsert_user_memory(UserMemory(memory="Likes jazz", user_id="default"))
    for read in (
        lambda: db.get_user_memories(),
        lambda: db.get_sessions(),
        lambda: db.get_all_memory_topics(),
        lambda: db.delete_user_memory("x"),
    ):
        with pytest.raises(MissingUserError):
            read()
    assert memory.list_users() == []
    assert isinstance(MissingUserError("x"), ValidationError)


def test_anonymous_use_is_the_explicit_anonymous_scope(chat: ChatServer, memory: Memory) -> None:
    chat.responder = memory_manager_adds("Likes jazz", ["music"])
    db = MemlaneDb(memory, anonymous=True)
    agent = Agent(model=model(chat), db=db, update_memory_on_run=True)
    agent.run("I like jazz", session_id="s1")
    assert memory.list_users() == [ANONYMOUS_USER]
    assert [m.memory for m in db.get_user_memories(user_id=None)] == ["Likes jazz"]
    assert memory.list(user_id=ANONYMOUS_USER).items  # visible as memlane's anonymous user
    assert MemlaneDb(memory).get_user_memories(user_id="alice") == []


def test_users_are_isolated_even_with_the_same_session_id(chat: ChatServer, memory: Memory) -> None:
    chat.responder = lambda body: "ok"
    db = MemlaneDb(memory)
    agent = Agent(model=model(chat), db=db, add_history_to_context=True)
    agent.run("alice's secret plan", user_id="alice", session_id="shared")
    agent.run("bob's question", user_id="bob", session_id="shared")
    sent = [m.get("content") for m in chat.requests[-1]["messages"]]
    assert "alice's secret plan" not in sent
    a = db.upsert_user_memory(UserMemory(memory="Alice's PIN is 4411", user_id="alice"))
    assert isinstance(a, UserMemory) and a.memory_id
    assert db.get_user_memory(a.memory_id, user_id="bob") is None
    db.delete_user_memory(a.memory_id, user_id="bob")  # not bob's: nothing happens
    assert db.get_user_memory(a.memory_id, user_id="alice") is not None
    assert db.get_user_memories(user_id="bob", search_content="PIN") == []
    bob = db.get_session("shared", user_id="bob")
    assert isinstance(bob, AgentSession)
    assert [r.content for r in bob.runs or []] == ["ok"] and bob.user_id == "bob"
    assert db.delete_session("shared", user_id="bob") is True
    assert db.get_session("shared", user_id="alice") is not None


# ------------------------------------------------------------------ listing


def test_memories_page_sort_filter_and_search(memory: Memory) -> None:
    db = MemlaneDb(memory)
    for i in range(7):
        db.upsert_user_memory(
            UserMemory(
                memory=f"fact number {i} about {'tea' if i % 2 else 'coffee'}",
                memory_id=f"m{i}",
                user_id="alice",
                topics=["drinks", "tea" if i % 2 else "coffee"],
                agent_id="a1" if i < 5 else "a2",
                team_id="t1" if i == 6 else None,
            )
        )
    pages = [db.get_user_memories(user_id="alice", limit=3, page=p) for p in (1, 2, 3)]
    ids = [m.memory_id for page in pages for m in page]
    assert ids == [f"m{i}" for i in range(7)]  # creation order, nothing lost or repeated
    rows, total = db.get_user_memories(user_id="alice", limit=2, page=2, deserialize=False)
    assert total == 7 and [r["memory_id"] for r in rows] == ["m2", "m3"]
    by_text = db.get_user_memories(user_id="alice", sort_by="memory", sort_order="asc")
    assert [m.memory_id for m in by_text][:2] == ["m0", "m1"]
    desc = db.get_user_memories(user_id="alice", sort_by="memory", sort_order="desc")
    assert desc[0].memory_id == "m6"
    tea = db.get_user_memories(user_id="alice", topics=["tea"])
    assert {m.memory_id for m in tea} == {"m1", "m3", "m5"}
    assert len(db.get_user_memories(user_id="alice", agent_id="a2")) == 2
    assert [m.memory_id for m in db.get_user_memories(user_id="alice", team_id="t1")] == ["m6"]
    found = db.get_user_memories(user_id="alice", search_content="coffee", limit=2)
    assert len(found) == 2 and all("coffee" in m.memory for m in found)
    assert db.get_all_memory_topics(user_id="alice") == ["coffee", "drinks", "tea"]
    stats, count = db.get_user_memory_stats()
    assert count == 1 and stats[0]["user_id"] == "alice" and stats[0]["total_memories"] == 7
    with pytest.raises(ValidationError):
        db.get_user_memories(user_id="alice", limit=0)
    with pytest.raises(ValidationError):
        db.get_user_memories(user_id="alice", limit=2, page=0)


def test_sessions_page_filter_rename_and_runs(chat: ChatServer, memory: Memory) -> None:
    chat.responder = lambda body: "ok"
    db = MemlaneDb(memory)
    agent = Agent(id="planner", model=model(chat), db=db)
    for i in range(5):
        agent.run(f"message {i}", user_id="alice", session_id=f"s{i}")
    sessions = db.get_sessions(SessionType.AGENT, user_id="alice", limit=2, page=3)
    assert [s.session_id for s in sessions] == ["s4"]
    rows, total = db.get_sessions(user_id="alice", sort_by="created_at", deserialize=False)
    assert total == 5 and len(rows) == 5
    assert db.get_sessions(SessionType.TEAM, user_id="alice") == []
    assert len(db.get_sessions(user_id="alice", component_id="planner")) == 5
    renamed = db.rename_session("s1", SessionType.AGENT, "Trip to Oslo", user_id="alice")
    assert isinstance(renamed, AgentSession) and renamed.runs
    named = db.get_sessions(user_id="alice", session_name="oslo")
    assert [s.session_id for s in named] == ["s1"]
    runs = db.get_runs(user_id="alice", agent_id="planner", limit=10)
    assert len(runs) == 5
    one_session = db.get_runs(session_id="s2", user_id="alice")
    assert [r.content for r in one_session] == ["ok"]
    db.delete_sessions(["s0", "s1"], user_id="alice")
    assert len(db.get_sessions(user_id="alice")) == 3
    assert memory.get_history("s0", user_id="alice") == []


def test_a_run_larger_than_one_state_version_round_trips(memory: Memory) -> None:
    db = MemlaneDb(memory)
    db.upsert_session(AgentSession(session_id="big", agent_id="a", user_id="alice"))
    long_text = 'é\n"' * 40_000  # escapes to far more than one 64 KB state document
    run = {"run_id": "r1", "agent_id": "a", "session_id": "big", "status": "COMPLETED",
           "content": long_text, "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    db.upsert_run(run, session_id="big", user_id="alice", run_index=0)
    session = db.get_session("big", user_id="alice", deserialize=False)
    assert isinstance(session, dict) and session["runs"][0]["content"] == long_text
    # A later, smaller write replaces it whole; the first run_index is kept.
    db.upsert_run({**run, "content": "short"}, session_id="big", user_id="alice", run_index=7)
    (stored,) = db.get_runs(session_id="big", user_id="alice", deserialize=False)[0]
    assert stored["content"] == "short" and stored["run_index"] == 0


def test_a_pending_run_is_cancelled_by_compare_and_swap(memory: Memory) -> None:
    db = MemlaneDb(memory)
    db.upsert_session(AgentSession(session_id="s", agent_id="a", user_id="alice"))
    run = {"run_id": "r1", "agent_id": "a", "session_id": "s", "status": "PENDING"}
    db.upsert_run(run, session_id="s", user_id="alice")
    assert db.cancel_pending_run("r1", session_id="s", reason="user left", user_id="alice")
    assert not db.cancel_pending_run("r1", session_id="s", reason="again", user_id="alice")
    (stored,) = db.get_runs(session_id="s", user_id="alice", deserialize=False)[0]
    assert stored["status"] == "CANCELLED"


def test_what_memlane_does_not_keep_says_so(memory: Memory) -> None:
    db = MemlaneDb(memory)
    for unsupported in (
        db.get_metrics,
        db.calculate_metrics,
        db.clear_memories,
        lambda: db.get_knowledge_contents(),
        lambda: db.get_eval_runs(),
        lambda: db.get_traces(),
        lambda: db.get_learnings(),
        lambda: db.get_run("r1"),
        lambda: db.delete_run("r1"),
    ):
        with pytest.raises(UnsupportedByMemlaneError) as caught:
            unsupported()
        assert isinstance(caught.value, NotImplementedError)
        assert isinstance(caught.value, UnsupportedError)
        assert "MemlaneDb does not keep" in str(caught.value)


# ------------------------------------------------------------------ tools and teams


def test_memlane_tools_act_for_the_runs_user_only(chat: ChatServer, memory: Memory) -> None:
    script = iter(
        [
            call("add_memory", {"text": "Prefers aisle seats", "topics": ["travel"]}, "c1"),
            call("remember", {"key": "timezone", "value": "Europe/Paris"}, "c2"),
            call("update_session_state", {"changes": {"step": "book"}}, "c3"),
            call("search_memories", {"query": "seat preference"}, "c4"),
            "done",
        ]
    )
    chat.responder = lambda body: next(script)
    agent = Agent(model=model(chat), db=MemlaneDb(memory), tools=[MemlaneTools(memory)])
    reply = agent.run("Book me a flight", user_id="alice", session_id="s1")
    assert reply.content == "done"
    # No tool lets the model name a user.
    schemas = {
        t["function"]["name"]: t["function"]["parameters"] for t in chat.requests[0]["tools"]
    }
    assert "search_memories" in schemas
    assert all("user_id" not in (p.get("properties") or {}) for p in schemas.values())
    search_result = json.loads(chat.requests[-1]["messages"][-1]["content"])
    assert search_result["memories"][0]["text"] == "Prefers aisle seats"
    assert memory.recall("timezone", user_id="alice") == "Europe/Paris"
    assert memory.get_state("s1", user_id="alice").data == {"step": "book"}
    assert memory.list(user_id="bob").items == ()
    # Bob's run with the same tools finds nothing of Alice's.
    script = iter([call("search_memories", {"query": "seat preference"}), "nothing"])
    chat.responder = lambda body: next(script)
    agent.run("What do I prefer?", user_id="bob", session_id="s2")
    assert json.loads(chat.requests[-1]["messages"][-1]["content"]) == {"memories": []}


def test_memlane_tools_refuse_a_run_without_user(chat: ChatServer, memory: Memory) -> None:
    script = iter([call("add_memory", {"text": "Likes jazz"}), "ok"])
    chat.responder = lambda body: next(script)
    agent = Agent(model=model(chat), db=InMemoryDb(), tools=[MemlaneTools(memory)])
    agent.run("I like jazz", session_id="s1")
    answer = json.loads(chat.requests[-1]["messages"][-1]["content"])
    assert answer["type"] == "MissingUserError" and "anonymous" in answer["error"]
    assert memory.list_users() == []


def _support_team_runs(chat: ChatServer, memory: Memory) -> Any:
    """Team "support" of carol: the writer stores a note through MemlaneTools bound to the
    team, then the reader is asked for it. Returns the second run's reply."""

    def respond(body: dict[str, Any]) -> Any:
        last = body["messages"][-1]
        system = system_of(body)
        users = [m.get("content") or "" for m in body["messages"] if m["role"] == "user"]
        if "delegate_task_to_member" in tools_of(body):  # the team leader
            if last["role"] == "tool":
                return f"Team answer: {last['content']}"
            member = "writer" if "remember" in users[-1] else "reader"
            return call("delegate_task_to_member", {"member_id": member, "task": users[-1]})
        if last["role"] == "tool":
            return last["content"]
        if "You write notes" in system:
            return call("add_memory", {"text": "Customer prefers email", "topics": ["contact"]})
        return call("search_memories", {"query": "how to contact the customer"})

    chat.responder = respond

    def member(name: str, role: str) -> Agent:
        tools = MemlaneTools(memory, team="support")
        return Agent(id=name, name=name, model=model(chat), tools=[tools], instructions=role)

    team = Team(
        id="support",
        name="support",
        model=model(chat),
        members=[member("writer", "You write notes."), member("reader", "You answer.")],
        db=MemlaneDb(memory),
    )
    team.run("Please remember: the customer prefers email", user_id="carol", session_id="t1")
    return team.run("How should we contact the customer?", user_id="carol", session_id="t1")


def test_two_agents_of_a_team_share_memories_through_one_scope(
    chat: ChatServer, memory: Memory
) -> None:
    reply = _support_team_runs(chat, memory)
    assert "Customer prefers email" in str(reply.content)
    stored = [r for r in memory.list(user_id="carol").items if r.kind is MemoryKind.FACT]
    assert [(r.text, r.team) for r in stored] == [("Customer prefers email", "support")]


def test_another_team_of_the_same_user_does_not_see_the_teams_memories(
    chat: ChatServer, memory: Memory
) -> None:
    _support_team_runs(chat, memory)
    outsider = MemlaneTools(memory, team="sales")
    script = iter([call("search_memories", {"query": "contact the customer"}), "x"])
    chat.responder = lambda body: next(script)
    db = MemlaneDb(memory)
    Agent(model=model(chat), db=db, tools=[outsider]).run("?", user_id="carol", session_id="o")
    assert json.loads(chat.requests[-1]["messages"][-1]["content"]) == {"memories": []}


def test_the_teams_session_and_runs_are_kept_in_memlane(chat: ChatServer, memory: Memory) -> None:
    _support_team_runs(chat, memory)
    session = MemlaneDb(memory).get_session("t1", SessionType.TEAM, user_id="carol")
    assert session is not None and len(session.runs or []) >= 2


def test_a_teams_memory_manager_writes_memories_every_agent_of_the_user_reads(
    chat: ChatServer, memory: Memory
) -> None:
    chat.responder = memory_manager_adds("Carol's order ships Friday", ["orders"])
    db = MemlaneDb(memory)
    member = Agent(id="clerk", name="clerk", model=model(chat))
    team = Team(id="support", model=model(chat), members=[member], db=db, update_memory_on_run=True)
    team.run("My order ships Friday", user_id="carol", session_id="t1")
    (stored,) = db.get_user_memories(user_id="carol", team_id="support")
    assert (stored.memory, stored.team_id) == ("Carol's order ships Friday", "support")
    # Another agent of the same user gets it in its prompt; another user does not.
    other = Agent(id="billing", model=model(chat), db=db, add_memories_to_context=True)
    other.run("When?", user_id="carol", session_id="b")
    assert "Carol's order ships Friday" in system_of(chat.requests[-1])
    other.run("When?", user_id="dave", session_id="d")
    assert "Carol's order" not in system_of(chat.requests[-1])


def test_a_workflow_session_is_kept(chat: ChatServer, memory: Memory) -> None:
    from agno.session import WorkflowSession
    from agno.workflow import Step, Workflow

    chat.responder = lambda body: "step done"
    db = MemlaneDb(memory)
    step = Step(name="draft", agent=Agent(name="drafter", model=model(chat)))
    flow = Workflow(name="flow", db=db, steps=[step])
    assert flow.run("go", user_id="alice", session_id="wf1").content == "step done"
    session = db.get_session("wf1", SessionType.WORKFLOW, user_id="alice")
    assert isinstance(session, WorkflowSession)
    assert [r.content for r in session.runs or []] == ["step done"]
    assert db.get_session("wf1", SessionType.AGENT, user_id="alice") is None


def test_openai_like_model_works_too(chat: ChatServer, memory: Memory) -> None:
    chat.responder = lambda body: "hello"
    like = OpenAILike(id="scripted", base_url=chat.base_url, api_key="k")
    reply = Agent(model=like, db=MemlaneDb(memory)).run("hi", user_id="alice", session_id="s")
    assert reply.content == "hello"
