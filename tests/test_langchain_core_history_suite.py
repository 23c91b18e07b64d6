"""langchain-core's own ``RunnableWithMessageHistory`` tests, run on
:class:`MemlaneChatMessageHistory`.

Adapted from langchain-ai/langchain ``libs/core/tests/unit_tests/runnables/test_history.py``
(upstream names kept). Changes: the session factory returns a
``MemlaneChatMessageHistory`` over a memlane SQLite file (upstream:
``InMemoryChatMessageHistory`` in a dict); ``assert store == {...}`` reads the memlane
histories back; upstream's ``LengthChatModel`` (a fake ``BaseChatModel``) is a real
``ChatOpenAI`` on the loopback chat server answering the number of messages it was sent;
async tests run under ``asyncio.run``. Not carried over: the three input/output schema
tests and the two output-validation tests (``test_get_output_messages_*``), which never
read or write a history.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_openai")

from langchain_core._api import LangChainDeprecationWarning
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.runnables.config import RunnableConfig
from langchain_core.runnables.history import RunnableWithMessageHistory
from langchain_core.runnables.utils import ConfigurableFieldSpec
from langchain_openai import ChatOpenAI

from chat_server import ChatServer
from memlane import Memory
from memlane.integrations.langchain import MemlaneChatMessageHistory
from memlane.testing import FakeEmbedder

USER = "tester"


@pytest.fixture(autouse=True)
def _expected_deprecations() -> Iterator[None]:
    # Both classes under test warn LangChainDeprecationWarning on purpose; each test
    # checks that they still do, then lets the run go on (not silenced in the library).
    with pytest.warns(LangChainDeprecationWarning):
        yield


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[Memory]:
    with Memory(f"sqlite:///{tmp_path / 'history.db'}", embedder=FakeEmbedder()) as m:
        yield m


def _get_get_session_history(memory: Memory) -> Callable[..., MemlaneChatMessageHistory]:
    def get_session_history(session_id: str, **kwargs: Any) -> MemlaneChatMessageHistory:
        return MemlaneChatMessageHistory(memory=memory, user_id=USER, session_id=session_id)

    return get_session_history


def stored(memory: Memory, session_id: str, user_id: str = USER) -> list[BaseMessage]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LangChainDeprecationWarning)  # checked by the fixture
        chat = MemlaneChatMessageHistory(memory=memory, user_id=user_id, session_id=session_id)
    return chat.messages


def said(messages: list[BaseMessage]) -> str:
    return "you said: " + "\n".join(str(m.content) for m in messages if isinstance(m, HumanMessage))


def said_with_history(input: dict[str, Any]) -> str:
    return "you said: " + "\n".join(
        [str(m.content) for m in input["history"] if isinstance(m, HumanMessage)] + [input["input"]]
    )


def test_interfaces(memory: Memory) -> None:
    history = MemlaneChatMessageHistory(memory=memory, user_id=USER, session_id="i")
    history.add_message(SystemMessage(content="system"))
    history.add_user_message("human 1")
    history.add_ai_message("ai")
    history.add_message(HumanMessage(content="human 2"))
    assert str(history) == "System: system\nHuman: human 1\nAI: ai\nHuman: human 2"


def test_input_messages(memory: Memory) -> None:
    with_history = RunnableWithMessageHistory(
        RunnableLambda(said), _get_get_session_history(memory)
    )
    config: RunnableConfig = {"configurable": {"session_id": "1"}}
    assert with_history.invoke([HumanMessage(content="hello")], config) == "you said: hello"
    output = with_history.invoke([HumanMessage(content="good bye")], config)
    assert output == "you said: hello\ngood bye"
    output = [*with_history.stream([HumanMessage(content="hi again")], config)]
    assert output == ["you said: hello\ngood bye\nhi again"]
    assert stored(memory, "1") == [
        HumanMessage(content="hello"),
        AIMessage(content="you said: hello"),
        HumanMessage(content="good bye"),
        AIMessage(content="you said: hello\ngood bye"),
        HumanMessage(content="hi again"),
        AIMessage(content="you said: hello\ngood bye\nhi again"),
    ]


def test_input_messages_async(memory: Memory) -> None:
    async def go() -> None:
        with_history = RunnableWithMessageHistory(
            RunnableLambda(said), _get_get_session_history(memory)
        )
        config: Any = {"session_id": "1_async"}
        assert await with_history.ainvoke([HumanMessage(content="hello")], config) == (
            "you said: hello"
        )
        output = await with_history.ainvoke([HumanMessage(content="good bye")], config)
        assert output == "you said: hello\ngood bye"
        chunks = [c async for c in with_history.astream([HumanMessage("hi again")], config)]
        assert chunks == ["you said: hello\ngood bye\nhi again"]

    asyncio.run(go())
    assert [m.content for m in stored(memory, "1_async")] == [
        "hello",
        "you said: hello",
        "good bye",
        "you said: hello\ngood bye",
        "hi again",
        "you said: hello\ngood bye\nhi again",
    ]


@pytest.mark.parametrize("is_async", [False, True])
def test_input_dict(memory: Memory, is_async: bool) -> None:
    with_history = RunnableWithMessageHistory(
        RunnableLambda(lambda input: said(input["messages"])),
        _get_get_session_history(memory),
        input_messages_key="messages",
    )
    config: RunnableConfig = {"configurable": {"session_id": f"2_{is_async}"}}
    run = _runner(with_history, is_async)
    assert run({"messages": [HumanMessage(content="hello")]}, config) == "you said: hello"
    output = run({"messages": [HumanMessage(content="good bye")]}, config)
    assert output == "you said: hello\ngood bye"


@pytest.mark.parametrize("is_async", [False, True])
def test_input_dict_with_history_key(memory: Memory, is_async: bool) -> None:
    with_history = RunnableWithMessageHistory(
        RunnableLambda(said_with_history),
        _get_get_session_history(memory),
        input_messages_key="input",
        history_messages_key="history",
    )
    config: RunnableConfig = {"configurable": {"session_id": f"3_{is_async}"}}
    run = _runner(with_history, is_async)
    assert run({"input": "hello"}, config) == "you said: hello"
    assert run({"input": "good bye"}, config) == "you said: hello\ngood bye"


@pytest.mark.parametrize("is_async", [False, True])
def test_output_message(memory: Memory, is_async: bool) -> None:
    with_history = RunnableWithMessageHistory(
        RunnableLambda(lambda input: AIMessage(content=said_with_history(input))),
        _get_get_session_history(memory),
        input_messages_key="input",
        history_messages_key="history",
    )
    config: RunnableConfig = {"configurable": {"session_id": f"4_{is_async}"}}
    run = _runner(with_history, is_async)
    assert run({"input": "hello"}, config) == AIMessage(content="you said: hello")
    assert run({"input": "good bye"}, config) == AIMessage(content="you said: hello\ngood bye")


@pytest.mark.parametrize("is_async", [False, True])
def test_input_messages_output_message(memory: Memory, is_async: bool) -> None:
    server = ChatServer().start()
    try:
        server.responder = lambda body: str(len(body["messages"]))  # upstream LengthChatModel
        model = ChatOpenAI(base_url=server.base_url, api_key="test", model="m", max_retries=0)
        with_history = RunnableWithMessageHistory(model, _get_get_session_history(memory))
        config: RunnableConfig = {"configurable": {"session_id": f"5_{is_async}"}}
        run = _runner(with_history, is_async)
        assert run([HumanMessage(content="hi")], config).content == "1"
        assert run([HumanMessage(content="hi")], config).content == "3"
    finally:
        server.stop()


@pytest.mark.parametrize("is_async", [False, True])
def test_output_messages(memory: Memory, is_async: bool) -> None:
    with_history = RunnableWithMessageHistory(
        RunnableLambda(lambda input: [AIMessage(content=said_with_history(input))]),
        _get_get_session_history(memory),
        input_messages_key="input",
        history_messages_key="history",
    )
    config: RunnableConfig = {"configurable": {"session_id": f"6_{is_async}"}}
    run = _runner(with_history, is_async)
    assert run({"input": "hello"}, config) == [AIMessage(content="you said: hello")]
    assert run({"input": "good bye"}, config) == [AIMessage(content="you said: hello\ngood bye")]


@pytest.mark.parametrize("is_async", [False, True])
def test_output_dict(memory: Memory, is_async: bool) -> None:
    with_history = RunnableWithMessageHistory(
        RunnableLambda(lambda input: {"output": [AIMessage(content=said_with_history(input))]}),
        _get_get_session_history(memory),
        input_messages_key="input",
        history_messages_key="history",
        output_messages_key="output",
    )
    config: RunnableConfig = {"configurable": {"session_id": f"7_{is_async}"}}
    run = _runner(with_history, is_async)
    assert run({"input": "hello"}, config) == {"output": [AIMessage(content="you said: hello")]}
    assert run({"input": "good bye"}, config) == {
        "output": [AIMessage(content="you said: hello\ngood bye")]
    }


@pytest.mark.parametrize("is_async", [False, True])
def test_using_custom_config_specs(memory: Memory, is_async: bool) -> None:
    """The factory's keys are memlane's: ``user_id`` is the memlane user and
    ``conversation_id`` the session."""

    def _fake_llm(input: dict[str, Any]) -> list[BaseMessage]:
        return [AIMessage(content=said(input["messages"]))]

    def get_session_history(user_id: str, conversation_id: str) -> MemlaneChatMessageHistory:
        return MemlaneChatMessageHistory(memory=memory, user_id=user_id, session_id=conversation_id)

    with_message_history = RunnableWithMessageHistory(
        RunnableLambda(_fake_llm),
        get_session_history=get_session_history,
        input_messages_key="messages",
        history_messages_key="history",
        history_factory_config=[
            ConfigurableFieldSpec(id="user_id", annotation=str, default="", is_shared=True),
            ConfigurableFieldSpec(
                id="conversation_id", annotation=str, default=None, is_shared=True
            ),
        ],
    )
    run = _runner(with_message_history, is_async)
    user1 = {"configurable": {"user_id": "user1", "conversation_id": "1"}}
    assert run({"messages": [HumanMessage(content="hello")]}, user1) == [
        AIMessage(content="you said: hello")
    ]
    assert stored(memory, "1", "user1") == [
        HumanMessage(content="hello"),
        AIMessage(content="you said: hello"),
    ]
    assert run({"messages": [HumanMessage(content="goodbye")]}, user1) == [
        AIMessage(content="you said: goodbye")
    ]
    user2 = {"configurable": {"user_id": "user2", "conversation_id": "1"}}
    assert run({"messages": [HumanMessage(content="meow")]}, user2) == [
        AIMessage(content="you said: meow")
    ]
    assert stored(memory, "1", "user1") == [
        HumanMessage(content="hello"),
        AIMessage(content="you said: hello"),
        HumanMessage(content="goodbye"),
        AIMessage(content="you said: goodbye"),
    ]
    assert stored(memory, "1", "user2") == [
        HumanMessage(content="meow"),
        AIMessage(content="you said: meow"),
    ]


def test_ignore_session_id(memory: Memory) -> None:
    def _fake_llm(input: list[BaseMessage]) -> list[BaseMessage]:
        return [AIMessage(content=said(input))]

    history = MemlaneChatMessageHistory(memory=memory, user_id=USER, session_id="fixed")
    with_message_history = RunnableWithMessageHistory(RunnableLambda(_fake_llm), lambda: history)
    _ = with_message_history.invoke("hello")
    _ = with_message_history.invoke("hello again")
    assert len(history.messages) == 4


def _runner(runnable: Any, is_async: bool) -> Callable[[Any, Any], Any]:
    if not is_async:
        return lambda value, config: runnable.invoke(value, config)
    return lambda value, config: asyncio.run(runnable.ainvoke(value, config))
