"""memlane inside the OpenAI Agents SDK's runtime: a real ``Runner`` with a chat-completions
model on the loopback chat server keeps its conversation in :class:`MemlaneSession` on a
real SQLite file, and calls memlane's tools as SDK function tools."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("agents")

from agents import (
    Agent,
    OpenAIChatCompletionsModel,
    Runner,
    TResponseInputItem,
    function_tool,
    set_tracing_disabled,
)
from agents.memory import Session
from openai import AsyncOpenAI

from chat_server import ChatServer, Scripted
from helpers import example_env, run_example
from memlane import AsyncMemory, Memory
from memlane.errors import ValidationError
from memlane.integrations.openai_agents import (
    POPPED_STATE,
    MemlaneSession,
    memory_tools,
)
from memlane.testing import FakeEmbedder

set_tracing_disabled(True)  # the SDK would otherwise export traces to api.openai.com


@pytest.fixture
def model(server: ChatServer) -> Iterator[OpenAIChatCompletionsModel]:
    server.reset()
    client = AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)
    yield OpenAIChatCompletionsModel(model="scripted", openai_client=client)
    server.reset()


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'agent.db'}"


@pytest.fixture
def memory(db: str) -> Iterator[Memory]:
    with Memory(db, embedder=FakeEmbedder()) as m:
        yield m


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


ALL_KINDS: list[Any] = [
    {"role": "user", "content": "plain text"},
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "parts"}]},
    {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_image", "image_url": "data:image/png;base64,iVBORw0K"}],
    },
    {"role": "system", "content": "be brief"},
    {"role": "developer", "content": "dev note"},
    {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [{"type": "summary_text", "text": "thinking ✓"}],
        "encrypted_content": "gAAA",
    },
    {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "call_9",
        "name": "get_weather",
        "arguments": '{"city": "Zürich"}',
        "status": "completed",
    },
    {"type": "function_call_output", "call_id": "call_9", "output": "sunny"},
    {
        "type": "function_call_output",
        "call_id": "call_10",
        "output": [{"type": "input_text", "text": "structured"}],
    },
    {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [
            {"type": "output_text", "text": "Hi 😊", "annotations": [], "logprobs": []},
            {"type": "refusal", "refusal": "no"},
        ],
        "provider_data": {"model": "m", "nested": {"n": [1, 2.5, None, True]}},
    },
    {"type": "item_reference", "id": "ref_1"},
    {"type": "compaction", "encrypted_content": "xyz"},
]


# ---------------------------------------------------------------------- the runtime


def _two_runs(server: ChatServer, model: OpenAIChatCompletionsModel, db: str) -> Any:
    """Two runs of the planner in session "trip" of ada, in a process of their own: both
    results and the session's items after them."""

    async def first() -> Any:
        with Memory(db, embedder=FakeEmbedder()) as memory:
            session = MemlaneSession("trip", memory, user_id="ada")
            agent = Agent(name="planner", model=model)
            server.queue("Noted: Oslo on 3 June.")
            r1 = await Runner.run(agent, "I fly to Oslo on 3 June.", session=session)
            server.queue("You said Oslo.")
            r2 = await Runner.run(agent, "Where do I fly?", session=session)
            return r1, r2, await session.get_items()

    return asyncio.run(first())


def test_runner_sends_the_earlier_runs_from_the_session(
    server: ChatServer, model: OpenAIChatCompletionsModel, db: str
) -> None:
    r1, r2, items = _two_runs(server, model, db)
    assert (r1.final_output, r2.final_output) == ("Noted: Oslo on 3 June.", "You said Oslo.")
    # the second request carried the first run's turns, from memlane
    sent = [(m["role"], m["content"]) for m in server.requests[1]["messages"]]
    assert sent == [
        ("user", "I fly to Oslo on 3 June."),
        ("assistant", "Noted: Oslo on 3 June."),
        ("user", "Where do I fly?"),
    ]
    assert items == r2.to_input_list()


def test_runner_continues_the_conversation_after_a_restart(
    server: ChatServer, model: OpenAIChatCompletionsModel, db: str
) -> None:
    _, _, items = _two_runs(server, model, db)

    # a fresh process: new Memory on the same file, new session object
    async def after_restart() -> list[TResponseInputItem]:
        async with AsyncMemory(db, embedder=FakeEmbedder()) as memory:
            session = MemlaneSession("trip", memory, user_id="ada")
            server.queue("Still Oslo.")
            r3 = await Runner.run(Agent(name="planner", model=model), "And?", session=session)
            assert r3.final_output == "Still Oslo."
            return await session.get_items()

    later = asyncio.run(after_restart())
    assert later[:4] == items
    assert [m["role"] for m in server.requests[-1]["messages"]] == ["user", "assistant"] * 2 + [
        "user"
    ]


def test_runner_turns_are_episodes_only_their_user_finds(
    server: ChatServer, model: OpenAIChatCompletionsModel, db: str
) -> None:
    _two_runs(server, model, db)
    # the user's words are memlane episodes, found by search; another user sees none
    with Memory(db, embedder=FakeEmbedder()) as memory:
        assert any("Oslo" in h.record.text for h in memory.search("Oslo", user_id="ada"))
        assert memory.search("Oslo", user_id="bob") == []  # bob has no memories at all


@pytest.mark.parametrize("streamed", [False, True])
def test_tool_calls_are_stored_exactly_and_replayed(
    server: ChatServer, model: OpenAIChatCompletionsModel, memory: Memory, streamed: bool
) -> None:
    session = MemlaneSession("weather", memory, user_id="ada")
    agent = Agent(name="w", model=model, tools=[get_weather])

    async def run(text: str) -> Any:
        if not streamed:
            return await Runner.run(agent, text, session=session)
        result = Runner.run_streamed(agent, text, session=session)
        async for _ in result.stream_events():
            pass
        return result

    server.queue(
        Scripted(content='{"city": "Oslo"}', tool_call=True, tool_name="get_weather"),
        "Sunny in Oslo.",
    )
    result = asyncio.run(run("Weather in Oslo?"))
    items = asyncio.run(session.get_items())
    assert items == result.to_input_list()
    assert [i.get("type", "message") for i in items] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]
    server.queue("Yes.")
    asyncio.run(run("Sure?"))
    replayed = server.requests[-1]["messages"]
    assert replayed[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert replayed[2] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny in Oslo"}


def test_memory_tools_name_four_functions_without_a_user_id(memory: Memory) -> None:
    tools = memory_tools(memory, user_id="ada")
    assert [t.name for t in tools] == [
        "add_memory",
        "update_memory",
        "forget_memory",
        "search_memories",
    ]
    assert all("user_id" not in json.dumps(t.params_json_schema) for t in tools)


def test_memory_tools_in_a_run_add_and_find_only_their_users_memories(
    server: ChatServer, model: OpenAIChatCompletionsModel, memory: Memory
) -> None:
    memory.add("Bob drinks coffee", user_id="bob")
    agent = Agent(name="m", model=model, tools=memory_tools(memory, user_id="ada"))
    server.queue(
        Scripted(
            content='{"text": "Ada drinks green tea"}', tool_call=True, tool_name="add_memory"
        ),
        "Noted.",
        Scripted(content='{"query": "drinks"}', tool_call=True, tool_name="search_memories"),
        "You drink green tea.",
    )
    asyncio.run(Runner.run(agent, "I drink green tea."))
    asyncio.run(Runner.run(agent, "What do I drink?"))
    stored = [h.record.text for h in memory.search("green tea", user_id="ada")]
    assert stored[0] == "Ada drinks green tea"
    tool_answer = json.loads(server.requests[-1]["messages"][-1]["content"])
    texts = [m["text"] for m in tool_answer["memories"]]
    assert "Ada drinks green tea" in texts and "Bob drinks coffee" not in texts


def test_a_bad_memory_tool_call_answers_an_error_and_stores_nothing(
    server: ChatServer, model: OpenAIChatCompletionsModel, memory: Memory
) -> None:
    agent = Agent(name="m", model=model, tools=memory_tools(memory, user_id="ada"))
    server.queue(
        Scripted(content='{"text": ""}', tool_call=True, tool_name="add_memory"),
        "Sorry.",
    )
    before = memory.list(user_id="ada").items
    asyncio.run(Runner.run(agent, "remember nothing"))
    assert "error" in json.loads(server.requests[-1]["messages"][-1]["content"])
    assert memory.list(user_id="ada").items == before


# ---------------------------------------------------------------------- the protocol


def test_is_the_sdk_session_protocol(memory: Memory) -> None:
    assert isinstance(MemlaneSession("s", memory, user_id="ada"), Session)


def test_every_item_type_round_trips_exactly(memory: Memory) -> None:
    session = MemlaneSession("kinds", memory, user_id="ada")
    asyncio.run(session.add_items(ALL_KINDS))
    assert asyncio.run(session.get_items()) == ALL_KINDS
    assert asyncio.run(session.get_items(limit=3)) == ALL_KINDS[-3:]
    assert asyncio.run(session.get_items(limit=0)) == []
    # a fresh Memory on the file reads the same
    again = Memory(memory.store.url, embedder=FakeEmbedder())
    try:
        assert asyncio.run(MemlaneSession("kinds", again, user_id="ada").get_items()) == ALL_KINDS
    finally:
        again.close()


def test_limit_reads_across_runs_and_pops(memory: Memory) -> None:
    session = MemlaneSession("runs", memory, user_id="ada")
    for i in range(5):  # five runs of two items
        asyncio.run(
            session.add_items(
                [{"role": "user", "content": f"u{i}"}, {"role": "assistant", "content": f"a{i}"}]
            )
        )
    for _ in range(3):
        asyncio.run(session.pop_item())
    got = asyncio.run(session.get_items(limit=4))
    assert [i["content"] for i in got] == ["a1", "u2", "a2", "u3"]


def test_pop_is_recorded_and_takes_the_episode_out_of_search(memory: Memory) -> None:
    session = MemlaneSession("pop", memory, user_id="ada")
    items: list[Any] = [
        {"role": "user", "content": "keep this zebra"},
        {"role": "assistant", "content": "drop this giraffe"},
    ]
    asyncio.run(session.add_items(items))
    assert asyncio.run(session.pop_item()) == items[1]
    assert asyncio.run(session.get_items()) == items[:1]
    found = [h.record.text for h in memory.search("giraffe zebra", user_id="ada")]
    assert found == ["keep this zebra"]
    # nothing rewritten: the message is still in memlane's history, its pop in state
    history = memory.get_history("pop", user_id="ada")
    assert [m.content for r in history for m in r.messages] == [
        "keep this zebra",
        "drop this giraffe",
    ]
    state = memory.get_state("pop", user_id="ada", name=POPPED_STATE)
    assert state.data["message_ids"] == [history[0].messages[1].id]
    assert asyncio.run(session.pop_item()) == items[0]
    assert asyncio.run(session.pop_item()) is None


def test_concurrent_pops_each_get_their_own_item(memory: Memory) -> None:
    session = MemlaneSession("race", memory, user_id="ada")
    items: list[Any] = [{"role": "user", "content": f"m{i}"} for i in range(6)]
    asyncio.run(session.add_items(items))

    async def pop_four() -> list[Any]:
        return list(await asyncio.gather(*(session.pop_item() for _ in range(4))))

    popped = asyncio.run(pop_four())
    assert sorted(p["content"] for p in popped) == ["m2", "m3", "m4", "m5"]
    assert asyncio.run(session.get_items()) == items[:2]


def test_clear_session_deletes_it_in_memlane(memory: Memory) -> None:
    session = MemlaneSession("gone", memory, user_id="ada")
    other = MemlaneSession("kept", memory, user_id="ada")
    asyncio.run(session.add_items([{"role": "user", "content": "secret walrus"}]))
    asyncio.run(other.add_items([{"role": "user", "content": "other walrus"}]))
    asyncio.run(session.pop_item())
    asyncio.run(session.add_items([{"role": "user", "content": "second walrus"}]))
    asyncio.run(session.clear_session())
    assert asyncio.run(session.get_items()) == []
    assert [s.session_id for s in memory.list_sessions(user_id="ada").items] == ["kept"]
    assert [h.record.text for h in memory.search("walrus", user_id="ada")] == ["other walrus"]
    # usable again, with no stale pop state
    asyncio.run(session.add_items([{"role": "user", "content": "fresh"}]))
    assert asyncio.run(session.get_items()) == [{"role": "user", "content": "fresh"}]


def test_users_and_sessions_never_see_each_other(memory: Memory) -> None:
    ada = MemlaneSession("s", memory, user_id="ada")
    bob = MemlaneSession("s", memory, user_id="bob")
    asyncio.run(ada.add_items([{"role": "user", "content": "ada's"}]))
    assert asyncio.run(bob.get_items()) == []
    assert asyncio.run(bob.pop_item()) is None
    asyncio.run(bob.clear_session())
    assert asyncio.run(ada.get_items()) == [{"role": "user", "content": "ada's"}]


def test_messages_written_through_memlane_read_as_messages(memory: Memory) -> None:
    memory.add_messages("mixed", [("user", "from the CLI"), ("tool", "not an item")], user_id="ada")
    session = MemlaneSession("mixed", memory, user_id="ada")
    assert asyncio.run(session.get_items()) == [{"role": "user", "content": "from the CLI"}]


def test_async_memory_works_the_same(db: str) -> None:
    async def go() -> list[TResponseInputItem]:
        async with AsyncMemory(db, embedder=FakeEmbedder()) as memory:
            session = MemlaneSession("a", memory, user_id="ada")
            await session.add_items(ALL_KINDS)
            assert await session.pop_item() == ALL_KINDS[-1]
            return await session.get_items()

    assert asyncio.run(go()) == ALL_KINDS[:-1]


# ---------------------------------------------------------------------- bad input


def test_user_id_is_required(memory: Memory) -> None:
    with pytest.raises(TypeError):
        MemlaneSession("s", memory)  # type: ignore[call-arg]
    for bad in (None, "", "  "):
        with pytest.raises(ValidationError):
            MemlaneSession("s", memory, user_id=bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        MemlaneSession("", memory, user_id="ada")
    with pytest.raises(ValidationError):
        MemlaneSession("s", object(), user_id="ada")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        memory_tools(memory, user_id="")


@pytest.mark.parametrize(
    "bad",
    [
        {"content": "no type, no role"},
        {"role": "user", "content": object()},
        {"role": "user", "content": float("nan")},
        "just a string",
        {"role": "user", "content": "x" * 70_000},  # above the metadata limit
    ],
)
def test_bad_items_are_refused_and_nothing_is_stored(memory: Memory, bad: Any) -> None:
    session = MemlaneSession("bad", memory, user_id="ada")
    asyncio.run(session.add_items([{"role": "user", "content": "before"}]))
    with pytest.raises(ValidationError):
        asyncio.run(session.add_items([{"role": "user", "content": "ok"}, bad]))
    assert asyncio.run(session.get_items()) == [{"role": "user", "content": "before"}]
    assert len(memory.list(user_id="ada").items) == 1
    with pytest.raises(ValidationError):
        asyncio.run(session.get_items(limit=-1))


def test_long_text_is_cut_for_search_but_returned_whole(memory: Memory) -> None:
    session = MemlaneSession("long", memory, user_id="ada")
    item: Any = {"role": "user", "content": "word " * 8_000}  # 40k chars: over the text limit
    asyncio.run(session.add_items([item]))
    assert asyncio.run(session.get_items()) == [item]
    episode = memory.list(user_id="ada").items[0]
    assert len(episode.text) == memory.core.config.max_text_chars


# ---------------------------------------------------------------------- the example


def test_example_keeps_the_conversation_across_processes(
    server: ChatServer, model: OpenAIChatCompletionsModel, tmp_path: Path
) -> None:
    env = example_env(tmp_path / "trip.db", server)
    server.queue(
        Scripted(
            content='{"text": "Flies to Oslo on 3 June for the trip"}',
            tool_call=True,
            tool_name="add_memory",
        ),
        "Noted: Oslo, 3 June.",
    )
    first = run_example("openai_agents_session.py", "I fly to Oslo on 3 June.", env=env)
    assert first.returncode == 0, first.stderr
    assert "[agent] Noted: Oslo, 3 June." in first.stdout
    assert "4 items" in first.stdout  # user, function call, its output, answer
    assert "Flies to Oslo on 3 June for the trip" in first.stdout
    server.queue("On 3 June.")
    second = run_example("openai_agents_session.py", "When do I fly?", env=env)
    assert second.returncode == 0, second.stderr
    assert "[agent] On 3 June." in second.stdout and "6 items" in second.stdout
    sent = server.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert sent[1]["content"] == "I fly to Oslo on 3 June."
