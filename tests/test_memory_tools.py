"""MemoryTools: the memory functions an agent's model may call, bound to one user (and
team and agent), so no call can reach anyone else's memories."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from memlane import Memory, MemoryRecord
from memlane.manager import MemoryTools
from memlane.testing import FakeEmbedder


@pytest.fixture()
def tools() -> Iterator[tuple[Memory, MemoryTools, MemoryRecord]]:
    """Alice's planner's tools, and Bob's memory next to them in the same store."""
    with Memory("memory://", embedder=FakeEmbedder()) as memory:
        secret = memory.add("Bob's bank PIN hint", user_id="bob")
        yield memory, MemoryTools(memory, user_id="alice", agent_id="planner"), secret


def test_tool_definitions_are_four_functions_without_a_user_id(tools) -> None:  # type: ignore[no-untyped-def]
    _, bound, _ = tools
    names = [d["function"]["name"] for d in bound.definitions]
    assert names == ["add_memory", "update_memory", "forget_memory", "search_memories"]
    assert all(d["type"] == "function" for d in bound.definitions)
    assert "user_id" not in json.dumps(bound.definitions)


def test_tools_add_find_update_and_forget_a_memory(tools) -> None:  # type: ignore[no-untyped-def]
    memory, bound, _ = tools
    stored = bound.execute(
        "add_memory", '{"text": "Alice prefers aisle seats", "kind": "preference"}'
    )
    found = bound.execute("search_memories", {"query": "aisle seats"})
    assert found["memories"][0]["memory_id"] == stored["memory_id"]
    new = bound.execute(
        "update_memory",
        {"memory_id": stored["memory_id"], "text": "Alice prefers window seats"},
    )
    assert memory.get(stored["memory_id"], user_id="alice").superseded_by == new["memory_id"]
    assert bound.execute("forget_memory", {"memory_id": new["memory_id"]})["forgotten"]


def test_tools_cannot_see_change_or_forget_another_users_memory(tools) -> None:  # type: ignore[no-untyped-def]
    memory, bound, secret = tools
    for name, args in [
        ("forget_memory", {"memory_id": secret.id}),
        ("update_memory", {"memory_id": secret.id, "text": "pwned"}),
    ]:
        assert bound.execute(name, args)["type"] == "NotFoundError"
    assert "PIN" not in json.dumps(bound.execute("search_memories", {"query": "bank PIN hint"}))
    assert memory.get(secret.id, user_id="bob").text == "Bob's bank PIN hint"


def test_tools_answer_bad_arguments_and_unknown_tools_with_an_error(tools) -> None:  # type: ignore[no-untyped-def]
    _, bound, _ = tools
    assert "error" in bound.execute("add_memory", "{not json")
    assert "error" in bound.execute("add_memory", {"txt": "typo"})
    assert "error" in bound.execute("drop_tables", {})


def test_team_tools_cannot_forget_another_teams_memory_or_an_episode(tools) -> None:  # type: ignore[no-untyped-def]
    # Bound to a team: another team's memories, episodes and other agents' notes are off
    # limits even within the same user.
    memory, _, _ = tools
    team_b = memory.add("Team b's launch plan", user_id="alice", team="b")
    memory.add_messages("s", [("user", "an episode")], user_id="alice")
    episode = memory.list(user_id="alice", filters=None).items[0]
    team_tools = MemoryTools(memory, user_id="alice", team="a", agent_id="planner")
    for target in (team_b.id, episode.id):
        result = team_tools.execute("forget_memory", {"memory_id": target})
        assert result["type"] == "NotFoundError", result
    assert memory.get(team_b.id, user_id="alice").deleted_at is None


def test_tools_limited_by_allow_offer_nothing_else(tools) -> None:  # type: ignore[no-untyped-def]
    memory, _, _ = tools
    read_only = MemoryTools(memory, user_id="alice", allow=("search_memories",))
    assert read_only.execute("add_memory", {"text": "x"}) == {"error": "unknown tool 'add_memory'"}


def test_agent_tools_answer_errors_whatever_the_model_sends() -> None:
    with Memory("memory://", embedder=FakeEmbedder()) as plain:
        tools = MemoryTools(plain, user_id="u")
        for name in ("add_memory", "search_memories"):
            deep = tools.execute(name, "[" * 5000)
            assert "error" in deep and "unknown tool" not in deep["error"]
        surrogate = tools.execute("add_memory", '{"text": "x\\ud800"}')
        assert "error" in surrogate and "unknown tool" not in surrogate["error"]
        assert not plain.list(user_id="u").items
