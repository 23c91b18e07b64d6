"""The Agents SDK's own session tests, run against :class:`MemlaneSession`.

Adapted from openai/openai-agents-python ``tests/memory/test_session.py`` and
``tests/memory/test_session_limit.py`` (each test keeps its upstream name, with
``sqlite_session`` read as ``memlane_session``). Two changes apply throughout: the SDK's
in-process ``ScriptedModel`` is replaced by a real ``OpenAIChatCompletionsModel`` on the
loopback chat server (``model.calls[-1].input`` becomes the messages of the server's last
request, in chat-completions form: an assistant reply is a string there), and
``SQLiteSession(id, path)`` becomes ``MemlaneSession(id, memory, user_id=...)`` over a
memlane SQLite file. Upstream tests not carried over, and why, are listed in
docs/integrations/openai-agents.md.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

pytest.importorskip("agents")

from agents import (
    Agent,
    OpenAIChatCompletionsModel,
    RunConfig,
    Runner,
    SessionSettings,
    TResponseInputItem,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

from chat_server import ChatServer
from memlane import Memory
from memlane.errors import ValidationError
from memlane.integrations.openai_agents import MemlaneSession
from memlane.testing import FakeEmbedder

set_tracing_disabled(True)

RUNNERS = ["run", "run_sync", "run_streamed"]


@pytest.fixture
def agent(server: ChatServer) -> Iterator[Agent[Any]]:
    server.reset()
    client = AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)
    yield Agent(name="test", model=OpenAIChatCompletionsModel("scripted", client))
    server.reset()


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[Memory]:
    with Memory(f"sqlite:///{tmp_path / 'memory.db'}", embedder=FakeEmbedder()) as m:
        yield m


def session_of(memory: Memory, session_id: str, **kw: Any) -> MemlaneSession:
    return MemlaneSession(session_id, memory, user_id="tester", **kw)


def last_input(server: ChatServer) -> list[dict[str, Any]]:
    """What the model was sent last (upstream: ``model.calls[-1].input``)."""
    return cast(list[dict[str, Any]], server.requests[-1]["messages"])


def _run_sync_wrapper(agent: Agent[Any], input_data: Any, **kwargs: Any) -> Any:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return Runner.run_sync(agent, input_data, **kwargs)
    finally:
        loop.close()


async def run_agent_async(runner_method: str, agent: Agent[Any], input_data: Any, **kw: Any) -> Any:
    if runner_method == "run":
        return await Runner.run(agent, input_data, **kw)
    if runner_method == "run_sync":
        return await asyncio.to_thread(_run_sync_wrapper, agent, input_data, **kw)
    result = Runner.run_streamed(agent, input_data, **kw)
    async for _ in result.stream_events():
        pass
    return result


# ---------------------------------------------------------------- tests/memory/test_session.py


@pytest.mark.parametrize("runner_method", RUNNERS)
def test_session_memory_basic_functionality_parametrized(
    runner_method: str, server: ChatServer, agent: Agent[Any], memory: Memory
) -> None:
    async def go() -> None:
        session = session_of(memory, "test_session_123")
        server.queue("San Francisco")
        r1 = await run_agent_async(
            runner_method, agent, "What city is the Golden Gate Bridge in?", session=session
        )
        assert r1.final_output == "San Francisco"
        server.queue("California")
        r2 = await run_agent_async(runner_method, agent, "What state is it in?", session=session)
        assert r2.final_output == "California"
        assert len(last_input(server)) > 1

    asyncio.run(go())


@pytest.mark.parametrize("runner_method", RUNNERS)
def test_session_memory_with_explicit_instance_parametrized(
    runner_method: str, server: ChatServer, agent: Agent[Any], memory: Memory
) -> None:
    async def go() -> None:
        session = session_of(memory, "test_session_456")
        server.queue("Hello")
        r1 = await run_agent_async(runner_method, agent, "Hi there", session=session)
        assert r1.final_output == "Hello"
        server.queue("I remember you said hi")
        r2 = await run_agent_async(
            runner_method, agent, "Do you remember what I said?", session=session
        )
        assert r2.final_output == "I remember you said hi"

    asyncio.run(go())


@pytest.mark.parametrize("runner_method", RUNNERS)
def test_session_memory_different_sessions_parametrized(
    runner_method: str, server: ChatServer, agent: Agent[Any], memory: Memory
) -> None:
    async def go() -> None:
        session_1 = session_of(memory, "session_1")
        server.queue("I like cats")
        r1 = await run_agent_async(runner_method, agent, "I like cats", session=session_1)
        assert r1.final_output == "I like cats"
        session_2 = session_of(memory, "session_2")
        server.queue("I like dogs")
        r2 = await run_agent_async(runner_method, agent, "I like dogs", session=session_2)
        assert r2.final_output == "I like dogs"
        server.queue("Yes, you mentioned cats")
        r3 = await run_agent_async(
            runner_method, agent, "What did I say I like?", session=session_1
        )
        assert r3.final_output == "Yes, you mentioned cats"
        # memlane addition: the model really saw session 1's history and not session 2's
        contents = [m["content"] for m in last_input(server)]
        assert contents == ["I like cats", "I like cats", "What did I say I like?"]

    asyncio.run(go())


def test_memlane_session_memory_direct(memory: Memory) -> None:
    async def go() -> None:
        session = session_of(memory, "direct_test")
        items: list[TResponseInputItem] = [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi there!"},
        ]
        await session.add_items(items)
        retrieved = await session.get_items()
        assert len(retrieved) == 2
        assert retrieved[0].get("role") == "user"
        assert retrieved[0].get("content") == "Hello"
        assert retrieved[1].get("role") == "assistant"
        assert retrieved[1].get("content") == "Hi there!"
        await session.clear_session()
        assert len(await session.get_items()) == 0

    asyncio.run(go())


def test_memlane_session_memory_pop_item(memory: Memory) -> None:
    async def go() -> None:
        session = session_of(memory, "pop_test")
        assert await session.pop_item() is None
        items: list[TResponseInputItem] = [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi there!"},
            {"role": "user", "content": "How are you?"},
        ]
        await session.add_items(items)
        assert len(await session.get_items()) == 3
        popped = await session.pop_item()
        assert popped is not None
        assert popped.get("role") == "user"
        assert popped.get("content") == "How are you?"
        after = await session.get_items()
        assert len(after) == 2
        assert after[-1].get("content") == "Hi there!"
        popped2 = await session.pop_item()
        assert popped2 is not None and popped2.get("content") == "Hi there!"
        popped3 = await session.pop_item()
        assert popped3 is not None and popped3.get("content") == "Hello"
        assert await session.pop_item() is None
        assert len(await session.get_items()) == 0

    asyncio.run(go())


def test_session_memory_pop_different_sessions(memory: Memory) -> None:
    async def go() -> None:
        session_1 = session_of(memory, "session_1")
        session_2 = session_of(memory, "session_2")
        await session_1.add_items([{"role": "user", "content": "Session 1 message"}])
        await session_2.add_items(
            [
                {"role": "user", "content": "Session 2 message 1"},
                {"role": "user", "content": "Session 2 message 2"},
            ]
        )
        popped = await session_2.pop_item()
        assert popped is not None and popped.get("content") == "Session 2 message 2"
        s1 = await session_1.get_items()
        assert len(s1) == 1 and s1[0].get("content") == "Session 1 message"
        s2 = await session_2.get_items()
        assert len(s2) == 1 and s2[0].get("content") == "Session 2 message 1"

    asyncio.run(go())


def test_memlane_session_get_items_with_limit(memory: Memory) -> None:
    async def go() -> None:
        session = session_of(memory, "count_test")
        items: list[TResponseInputItem] = []
        for i in (1, 2, 3):
            items += [
                {"role": "user", "content": f"Message {i}"},
                {"role": "assistant", "content": f"Response {i}"},
            ]
        await session.add_items(items)
        all_items = await session.get_items()
        assert len(all_items) == 6
        assert all_items[0].get("content") == "Message 1"
        assert all_items[-1].get("content") == "Response 3"
        latest_2 = await session.get_items(limit=2)
        assert [i.get("content") for i in latest_2] == ["Message 3", "Response 3"]
        latest_4 = await session.get_items(limit=4)
        assert [i.get("content") for i in latest_4] == [
            "Message 2",
            "Response 2",
            "Message 3",
            "Response 3",
        ]
        latest_10 = await session.get_items(limit=10)
        assert len(latest_10) == 6
        assert latest_10[0].get("content") == "Message 1"
        assert len(await session.get_items(limit=0)) == 0

    asyncio.run(go())


@pytest.mark.parametrize("runner_method", RUNNERS)
def test_session_memory_appends_list_input_by_default(
    runner_method: str, server: ChatServer, agent: Agent[Any], memory: Memory
) -> None:
    async def go() -> None:
        session = session_of(memory, "test_validation_parametrized")
        initial_history: list[TResponseInputItem] = [
            {"role": "user", "content": "Earlier message"},
            {"role": "assistant", "content": "Saved reply"},
        ]
        await session.add_items(initial_history)
        list_input = [{"role": "user", "content": "Test message"}]
        server.queue("This should run")
        await run_agent_async(runner_method, agent, list_input, session=session)
        assert last_input(server) == [*initial_history, *list_input]

    asyncio.run(go())


@pytest.mark.parametrize("runner_method", RUNNERS)
def test_session_callback_prepared_input(
    runner_method: str, server: ChatServer, agent: Agent[Any], memory: Memory
) -> None:
    async def go() -> None:
        session = session_of(memory, "session_1")
        initial_history: list[TResponseInputItem] = [
            {"role": "user", "content": "Hello there."},
            {"role": "assistant", "content": "Hi, I'm here to assist you."},
        ]
        await session.add_items(initial_history)

        def filter_assistant_messages(history: Any, new_input: Any) -> Any:
            return [item for item in history if item["role"] == "user"] + new_input

        new_turn_input = [{"role": "user", "content": "What your name?"}]
        server.queue("I'm gpt-4o")
        await run_agent_async(
            runner_method,
            agent,
            new_turn_input,
            session=session,
            run_config=RunConfig(session_input_callback=filter_assistant_messages),
        )
        assert last_input(server) == [initial_history[0], new_turn_input[0]]

    asyncio.run(go())


@pytest.mark.parametrize("runner_method", RUNNERS)
def test_session_callback_repeating_history_does_not_grow_session(
    runner_method: str, server: ChatServer, agent: Agent[Any], memory: Memory
) -> None:
    async def go() -> None:
        session = session_of(memory, "session_repeat")

        def repeat_first(history: Any, new_input: Any) -> Any:
            return new_input if not history else [*history, history[0], *new_input]

        for turn in range(3):
            server.queue(f"assistant {turn}")
            await run_agent_async(
                runner_method,
                agent,
                f"user {turn}",
                session=session,
                run_config=RunConfig(session_input_callback=repeat_first),
            )
        stored = await session.get_items()
        users = [item.get("content") for item in stored if item.get("role") == "user"]
        assert users == ["user 0", "user 1", "user 2"]
        assert len(stored) == 6

    asyncio.run(go())


def test_memlane_session_unicode_content(memory: Memory) -> None:
    async def go() -> None:
        session = session_of(memory, "unicode_test")
        await session.add_items(
            [
                {"role": "user", "content": "こんにちは"},
                {"role": "assistant", "content": "😊👍"},
                {"role": "user", "content": "Привет"},
            ]
        )
        got = [i.get("content") for i in await session.get_items()]
        assert got == ["こんにちは", "😊👍", "Привет"]

    asyncio.run(go())


def test_memlane_session_special_characters_and_sql_injection(memory: Memory) -> None:
    async def go() -> None:
        session = session_of(memory, "special_chars_test")
        texts = [
            "O'Reilly",
            "DROP TABLE sessions;",
            '"SELECT * FROM users WHERE name = "admin";"',
            "Robert'); DROP TABLE students;--",
            "Normal message",
        ]
        items: list[TResponseInputItem] = [
            {"role": "user" if i % 2 == 0 else "assistant", "content": t}
            for i, t in enumerate(texts)
        ]
        await session.add_items(items)
        assert [i.get("content") for i in await session.get_items()] == texts

    asyncio.run(go())


def test_memlane_session_concurrent_access(memory: Memory) -> None:
    session = session_of(memory, "concurrent_test")
    items: list[TResponseInputItem] = [
        {"role": "user", "content": f"Message {i}"} for i in range(10)
    ]

    def add_item(item: TResponseInputItem) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.run_until_complete(session.add_items([item]))
        loop.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=5) as executor:
        list(executor.map(add_item, items))  # list(): re-raise any failure
    retrieved = asyncio.run(session.get_items())
    assert {i.get("content") for i in retrieved} == {f"Message {i}" for i in range(10)}


def test_memlane_session_failed_add_items_stores_nothing(memory: Memory) -> None:
    """Upstream ``test_sqlite_session_failed_add_items_releases_write_lock``: an
    unserializable item fails (memlane: ValidationError, upstream: TypeError), leaves no
    session behind and the session stays usable."""

    async def go() -> None:
        session = session_of(memory, "rollback_test")
        unserializable = cast(TResponseInputItem, {"role": "user", "content": object()})
        with pytest.raises(ValidationError):
            await session.add_items([unserializable])
        assert not memory.list_sessions(user_id="tester").items
        await session.add_items([{"role": "user", "content": "after failure"}])
        assert [i.get("content") for i in await session.get_items()] == ["after failure"]

    asyncio.run(go())


def test_session_add_items_exception_propagates_in_streamed(
    server: ChatServer, agent: Agent[Any], memory: Memory
) -> None:
    session = session_of(memory, "test_exception_session")

    async def _failing_add_items(_items: Any) -> None:
        raise RuntimeError("Simulated session.add_items failure")

    session.add_items = _failing_add_items  # type: ignore[method-assign]
    server.queue("This should not be reached")

    async def go() -> None:
        result = Runner.run_streamed(agent, "Hello", session=session)

        async def consume() -> None:
            async for _ in result.stream_events():
                pass

        with pytest.raises(RuntimeError, match=r"Simulated session\.add_items failure"):
            await asyncio.wait_for(consume(), timeout=5.0)

    asyncio.run(go())


def test_session_settings_default(memory: Memory) -> None:
    session = session_of(memory, "default_settings_test")
    assert isinstance(session.session_settings, SessionSettings)
    assert session.session_settings.limit is None


def test_session_settings_constructor(memory: Memory) -> None:
    session = session_of(
        memory, "constructor_settings_test", session_settings=SessionSettings(limit=5)
    )
    assert session.session_settings is not None
    assert session.session_settings.limit == 5


def test_session_settings_constructor_normalizes_dictionary(memory: Memory) -> None:
    session = session_of(memory, "dictionary_settings_test", session_settings={"limit": 0})
    assert isinstance(session.session_settings, SessionSettings)
    assert session.session_settings.limit == 0
    assert session.session_settings.resolve({"limit": 4}).limit == 4


def test_session_settings_rejects_unknown_dictionary_fields(memory: Memory) -> None:
    with pytest.raises(TypeError, match="Unknown session settings: limitt"):
        session_of(memory, "invalid_settings_test", session_settings={"limitt": 1})


def test_get_items_uses_session_settings_limit(memory: Memory) -> None:
    async def go() -> None:
        session = session_of(memory, "uses_limit", session_settings=SessionSettings(limit=3))
        await session.add_items([{"role": "user", "content": f"Message {i}"} for i in range(5)])
        got = [i.get("content") for i in await session.get_items()]
        assert got == ["Message 2", "Message 3", "Message 4"]

    asyncio.run(go())


def test_get_items_explicit_limit_overrides_session_settings(memory: Memory) -> None:
    async def go() -> None:
        session = session_of(memory, "explicit", session_settings=SessionSettings(limit=5))
        await session.add_items([{"role": "user", "content": f"Message {i}"} for i in range(10)])
        got = [i.get("content") for i in await session.get_items(limit=2)]
        assert got == ["Message 8", "Message 9"]

    asyncio.run(go())


def test_runner_with_session_settings_override(
    server: ChatServer, agent: Agent[Any], memory: Memory
) -> None:
    async def go() -> None:
        session = session_of(memory, "override", session_settings=SessionSettings(limit=100))
        await session.add_items([{"role": "user", "content": f"Turn {i}"} for i in range(10)])
        server.queue("Got it")
        await Runner.run(
            agent,
            "New question",
            session=session,
            run_config=RunConfig(session_settings=SessionSettings(limit=2)),
        )
        history = [m for m in last_input(server) if m.get("content") != "New question"]
        assert [m["content"] for m in history] == ["Turn 8", "Turn 9"]

    asyncio.run(go())


# ---------------------------------------------------------- tests/memory/test_session_limit.py


@pytest.mark.parametrize("runner_method", RUNNERS)
def test_session_limit_parameter(
    runner_method: str, server: ChatServer, agent: Agent[Any], memory: Memory
) -> None:
    async def go() -> None:
        session = session_of(memory, "limit_test")
        for i in (1, 2, 3):
            server.queue(f"Reply {i}")
            await run_agent_async(runner_method, agent, f"Message {i}", session=session)
        assert len(await session.get_items()) == 6
        server.queue("Reply 4")
        await run_agent_async(
            runner_method,
            agent,
            "Message 4",
            session=session,
            run_config=RunConfig(session_settings=SessionSettings(limit=2)),
        )
        sent = last_input(server)
        assert len(sent) == 3
        assert sent[0].get("content") == "Message 3"
        assert sent[1].get("content") == "Reply 3"  # upstream: content[0]["text"]
        assert sent[2].get("content") == "Message 4"

    asyncio.run(go())


@pytest.mark.parametrize("runner_method", RUNNERS)
def test_session_limit_drops_unmatched_history_function_call_output(
    runner_method: str, server: ChatServer, agent: Agent[Any], memory: Memory
) -> None:
    async def go() -> None:
        session = session_of(memory, "limit_tool_pair")
        history = cast(
            list[TResponseInputItem],
            [
                {"role": "user", "content": "What is the weather?"},
                {
                    "type": "function_call",
                    "call_id": "call_1",
                    "name": "get_weather",
                    "arguments": "{}",
                },
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
                {
                    # memlane adaptation: with the id and status of an output message (as the
                    # SDK writes them), since the chat-completions converter refuses an
                    # output_text part in an input-style message
                    "id": "msg_1",
                    "status": "completed",
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "It is sunny.", "annotations": []}],
                },
            ],
        )
        await session.add_items(history)
        assert await session.get_items(limit=2) == history[-2:]
        server.queue("Tomorrow is sunny too.")
        await run_agent_async(
            runner_method,
            agent,
            "What about tomorrow?",
            session=session,
            run_config=RunConfig(session_settings=SessionSettings(limit=2)),
        )
        # upstream compares Responses items; the chat-completions model sends them as
        assert last_input(server) == [
            {"role": "assistant", "content": "It is sunny."},
            {"role": "user", "content": "What about tomorrow?"},
        ]

    asyncio.run(go())


@pytest.mark.parametrize("runner_method", RUNNERS)
def test_session_limit_zero(
    runner_method: str, server: ChatServer, agent: Agent[Any], memory: Memory
) -> None:
    async def go() -> None:
        session = session_of(memory, "limit_zero_test")
        for i in (1, 2):
            server.queue(f"Reply {i}")
            await run_agent_async(runner_method, agent, f"Message {i}", session=session)
        server.queue("Reply 3")
        await run_agent_async(
            runner_method,
            agent,
            "Message 3",
            session=session,
            run_config=RunConfig(session_settings=SessionSettings(limit=0)),
        )
        assert [m.get("content") for m in last_input(server)] == ["Message 3"]

    asyncio.run(go())


@pytest.mark.parametrize("runner_method", RUNNERS)
def test_session_limit_none_gets_all_history(
    runner_method: str, server: ChatServer, agent: Agent[Any], memory: Memory
) -> None:
    async def go() -> None:
        session = session_of(memory, "limit_none_test")
        for i in range(1, 6):
            server.queue(f"Reply {i}")
            await run_agent_async(runner_method, agent, f"Message {i}", session=session)
        assert len(await session.get_items()) == 10
        server.queue("Reply 6")
        await run_agent_async(
            runner_method,
            agent,
            "Message 6",
            session=session,
            run_config=RunConfig(session_settings=SessionSettings(limit=None)),
        )
        sent = last_input(server)
        assert len(sent) == 11
        assert sent[0].get("content") == "Message 1"
        assert sent[-1].get("content") == "Message 6"

    asyncio.run(go())


@pytest.mark.parametrize("runner_method", RUNNERS)
def test_session_limit_larger_than_history(
    runner_method: str, server: ChatServer, agent: Agent[Any], memory: Memory
) -> None:
    async def go() -> None:
        session = session_of(memory, "limit_large_test")
        server.queue("Reply 1")
        await run_agent_async(runner_method, agent, "Message 1", session=session)
        server.queue("Reply 2")
        await run_agent_async(
            runner_method,
            agent,
            "Message 2",
            session=session,
            run_config=RunConfig(session_settings=SessionSettings(limit=100)),
        )
        sent = last_input(server)
        assert [m.get("content") for m in sent] == ["Message 1", "Reply 1", "Message 2"]

    asyncio.run(go())
