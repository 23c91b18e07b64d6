"""memlane inside LangChain's runtime: a real ``RunnableWithMessageHistory`` around a real
``ChatOpenAI`` on the loopback chat server keeps its history in
:class:`MemlaneChatMessageHistory`; :class:`MemlaneRetriever` feeds a real chain; and
langchain-tests' standard retriever suite runs against the retriever."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_openai")

from langchain_core._api import LangChainDeprecationWarning
from langchain_core.documents import Document
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnablePassthrough
from langchain_core.runnables.history import RunnableWithMessageHistory
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from chat_server import ChatServer, Scripted
from helpers import example_env, run_example
from memlane import AsyncMemory, Memory
from memlane.errors import UnsupportedError, ValidationError
from memlane.integrations.langchain import MemlaneChatMessageHistory, MemlaneRetriever
from memlane.testing import FakeEmbedder


@pytest.fixture
def llm(server: ChatServer) -> Iterator[Any]:
    server.reset()
    yield ChatOpenAI(base_url=server.base_url, api_key="test", model="scripted", max_retries=0)
    server.reset()


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'chat.db'}"


@pytest.fixture
def memory(db: str) -> Iterator[Memory]:
    with Memory(db, embedder=FakeEmbedder()) as m:
        yield m


def history(memory: Memory | AsyncMemory, session_id: str, user_id: str = "ada") -> Any:
    with pytest.warns(LangChainDeprecationWarning, match="BaseChatMessageHistory"):
        return MemlaneChatMessageHistory(memory=memory, user_id=user_id, session_id=session_id)


PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "You are a travel assistant."),
        MessagesPlaceholder("history"),
        ("human", "{question}"),
    ]
)

EVERY_KIND: list[BaseMessage] = [
    SystemMessage("be brief", id="sys-1"),
    HumanMessage(
        content=[
            {"type": "text", "text": "what is in this picture?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
        ],
        id="h-1",
        name="ada",
        additional_kwargs={"lang": "en"},
    ),
    AIMessage(
        content="",
        id="ai-1",
        tool_calls=[
            {"name": "get_weather", "args": {"city": "Zürich"}, "id": "call_7", "type": "tool_call"}
        ],
        invalid_tool_calls=[
            {
                "name": "broken",
                "args": "{not json",
                "id": "call_8",
                "error": "bad",
                "type": "invalid_tool_call",
            }
        ],
        additional_kwargs={"refusal": None},
        response_metadata={"model_name": "m", "finish_reason": "tool_calls", "n": [1, 2.5, None]},
        usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
    ),
    ToolMessage("sunny", tool_call_id="call_7", id="t-1", status="success", artifact={"raw": [1]}),
    ToolMessage("failed", tool_call_id="call_8", status="error"),
    AIMessage(content=[{"type": "text", "text": "Sunny 😊"}], id="ai-2"),
    ChatMessage(role="critic", content="fine"),
    FunctionMessage(name="legacy", content="{}"),
    HumanMessage("plain"),
]


# ---------------------------------------------------------------------- history in the runtime


TRIP = {"configurable": {"session_id": "trip"}}


def _chain(llm: Any, memory: Memory | AsyncMemory) -> Any:
    """PROMPT | llm with its history in memlane (LangChain warns the class is deprecated)."""
    with pytest.warns(LangChainDeprecationWarning, match="RunnableWithMessageHistory"):
        return RunnableWithMessageHistory(
            PROMPT | llm,
            lambda session_id: history(memory, session_id),
            input_messages_key="question",
            history_messages_key="history",
        )


def _two_turns(server: ChatServer, llm: Any, db: str) -> Any:
    """Two turns of session "trip" through the chain, in a process of their own; returns
    the model's first answer."""
    with Memory(db, embedder=FakeEmbedder()) as memory:
        chain = _chain(llm, memory)
        server.queue("Noted: Oslo on 3 June.")
        first = chain.invoke({"question": "I fly to Oslo on 3 June."}, config=TRIP)
        server.queue("You fly to Oslo.")
        chain.invoke({"question": "Where do I fly?"}, config=TRIP)
    return first


def test_runnable_with_message_history_sends_and_stores_the_history(
    server: ChatServer, llm: Any, db: str
) -> None:
    first = _two_turns(server, llm, db)
    assert [(m["role"], m["content"]) for m in server.requests[1]["messages"]] == [
        ("system", "You are a travel assistant."),
        ("user", "I fly to Oslo on 3 June."),
        ("assistant", "Noted: Oslo on 3 June."),
        ("user", "Where do I fly?"),
    ]
    with Memory(db, embedder=FakeEmbedder()) as memory:
        stored = history(memory, "trip").messages
        assert stored[1] == first  # the model's AIMessage, id and metadata included
        assert stored[1].response_metadata["model_name"] == "scripted"
        assert [m.type for m in stored] == ["human", "ai", "human", "ai"]


def test_runnable_with_message_history_continues_after_a_restart(
    server: ChatServer, llm: Any, db: str
) -> None:
    _two_turns(server, llm, db)

    # a new process: a fresh Memory on the same file, async this time
    async def later() -> None:
        async with AsyncMemory(db, embedder=FakeEmbedder()) as amemory:
            chain = _chain(llm, amemory)
            server.queue("Still Oslo.")
            await chain.ainvoke({"question": "And?"}, config=TRIP)
            assert len(await history(amemory, "trip").aget_messages()) == 6

    asyncio.run(later())
    assert len(server.requests[-1]["messages"]) == 6  # system + 4 earlier + the question


def test_runnable_with_message_history_turns_are_searchable_by_their_user_only(
    server: ChatServer, llm: Any, db: str
) -> None:
    _two_turns(server, llm, db)
    with Memory(db, embedder=FakeEmbedder()) as memory:
        found = [h.record.text for h in memory.search("Oslo June", user_id="ada", limit=3)]
        assert "I fly to Oslo on 3 June." in found
        assert history(memory, "trip", user_id="bob").messages == []


def test_tool_calls_from_the_model_round_trip(server: ChatServer, llm: Any, memory: Memory) -> None:
    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    chat = history(memory, "tools")
    chat.add_user_message("Weather in Oslo?")
    server.queue(Scripted(content='{"city": "Oslo"}', tool_call=True, tool_name="get_weather"))
    call = llm.bind_tools([get_weather]).invoke(chat.messages)
    assert call.tool_calls[0]["args"] == {"city": "Oslo"}
    result = get_weather.invoke(call.tool_calls[0])  # a ToolMessage with its tool_call_id
    chat.add_messages([call, result])
    server.queue("Sunny in Oslo.")
    answer = llm.invoke(chat.messages)
    chat.add_message(answer)
    assert chat.messages == [HumanMessage("Weather in Oslo?"), call, result, answer]
    sent = server.requests[-1]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == sent[2]["tool_call_id"] == call.tool_calls[0]["id"]


# ---------------------------------------------------------------------- history, direct


def test_every_message_kind_round_trips_exactly(memory: Memory, db: str) -> None:
    chat = history(memory, "kinds")
    chat.add_messages(EVERY_KIND)
    assert chat.messages == EVERY_KIND
    with Memory(db, embedder=FakeEmbedder()) as again:
        assert history(again, "kinds").messages == EVERY_KIND
    # only what was said (text of user and assistant messages) became searchable episodes
    episodes = sorted(r.text for r in memory.list(user_id="ada").items)
    assert episodes == ["Sunny 😊", "plain", "what is in this picture?"]


def test_async_methods_with_async_memory(db: str) -> None:
    async def go() -> list[BaseMessage]:
        async with AsyncMemory(db, embedder=FakeEmbedder()) as amemory:
            chat = history(amemory, "a")
            await chat.aadd_messages(EVERY_KIND[:3])
            await chat.aadd_messages(EVERY_KIND[3:])
            got = await chat.aget_messages()
            with pytest.raises(UnsupportedError):
                _ = chat.messages
            await chat.aclear()
            assert await chat.aget_messages() == []
            return got

    assert asyncio.run(go()) == EVERY_KIND


def test_clear_deletes_the_session_and_its_episodes(memory: Memory) -> None:
    chat = history(memory, "gone")
    chat.add_messages([HumanMessage("secret walrus"), AIMessage("noted walrus")])
    history(memory, "kept").add_user_message("other walrus")
    chat.clear()
    assert chat.messages == []
    assert [h.record.text for h in memory.search("walrus", user_id="ada")] == ["other walrus"]


def test_messages_written_through_memlane_read_back(memory: Memory) -> None:
    memory.add_messages(
        "mixed", [("user", "hi"), ("assistant", "hello"), ("tool", "x")], user_id="ada"
    )
    assert history(memory, "mixed").messages == [HumanMessage("hi"), AIMessage("hello")]


def test_bad_input_is_refused_and_nothing_is_stored(memory: Memory) -> None:
    with pytest.raises(TypeError):
        MemlaneChatMessageHistory(memory=memory, session_id="s")  # type: ignore[call-arg]
    for bad_user in (None, ""):
        with pytest.raises(ValidationError):
            MemlaneChatMessageHistory(memory=memory, user_id=bad_user, session_id="s")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        MemlaneChatMessageHistory(memory=object(), user_id="ada", session_id="s")  # type: ignore[arg-type]
    chat = history(memory, "bad")
    chat.add_user_message("before")
    for bad in (
        [HumanMessage("ok"), "not a message"],
        [HumanMessage("ok", additional_kwargs={"x": object()})],
        [HumanMessage("ok", additional_kwargs={"x": float("nan")})],
        HumanMessage("not a list"),
    ):
        with pytest.raises(ValidationError):
            chat.add_messages(bad)  # type: ignore[arg-type]
    assert chat.messages == [HumanMessage("before")]
    assert len(memory.list(user_id="ada").items) == 1


# ---------------------------------------------------------------------- retriever


def seeded(memory: Memory) -> None:
    memory.add("Ada is vegetarian", user_id="ada", kind="preference", topics=["food"])
    memory.add("Ada lives in Oslo", user_id="ada")
    memory.add("Ada cooks Italian food on Fridays", user_id="ada", topics=["food"])
    memory.add("Bob eats only fish food", user_id="bob")
    memory.add_messages("s1", [("user", "find me vegetarian food in Oslo")], user_id="ada")


def test_retriever_documents_carry_id_and_score(memory: Memory) -> None:
    seeded(memory)
    retriever = MemlaneRetriever(memory=memory, user_id="ada", k=3)
    docs = retriever.invoke("vegetarian food")
    assert len(docs) == 3
    assert all(isinstance(d, Document) for d in docs)
    by_id = {r.id: r for r in memory.list(user_id="ada").items}
    for d in docs:
        assert d.id == d.metadata["id"] and d.page_content == by_id[d.id].text
    scores = [d.metadata["score"] for d in docs]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    assert "Bob eats only fish food" not in [d.page_content for d in docs]
    assert len(retriever.invoke("food", k=1)) == 1
    only_s1 = MemlaneRetriever(memory=memory, user_id="ada", session_id="s1", k=5).invoke("food")
    assert [d.page_content for d in only_s1] == ["find me vegetarian food in Oslo"]
    assert only_s1[0].metadata["kind"] == "episode" and only_s1[0].metadata["session_id"] == "s1"


def test_retriever_feeds_a_real_chain(server: ChatServer, llm: Any, memory: Memory) -> None:
    seeded(memory)
    retriever = MemlaneRetriever(memory=memory, user_id="ada", k=2)
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Known about the user:\n{context}"), ("human", "{question}")]
    )
    chain = (
        {
            "context": retriever | (lambda docs: "\n".join(d.page_content for d in docs)),
            "question": RunnablePassthrough(),
        }
        | prompt
        | llm
        | StrOutputParser()
    )
    server.queue("Try the vegetarian place.")
    assert chain.invoke("vegetarian dinner?") == "Try the vegetarian place."
    system = server.requests[-1]["messages"][0]["content"]
    assert "Ada is vegetarian" in system and "Bob" not in system


def test_retriever_async_and_bad_input(db: str, memory: Memory) -> None:
    seeded(memory)

    async def go() -> list[Document]:
        async with AsyncMemory(db, embedder=FakeEmbedder()) as amemory:
            retriever = MemlaneRetriever(memory=amemory, user_id="ada", k=2)
            with pytest.raises(UnsupportedError):
                retriever.invoke("food")
            return await retriever.ainvoke("vegetarian")

    assert asyncio.run(go())[0].page_content == "Ada is vegetarian"
    assert len(asyncio.run(MemlaneRetriever(memory=memory, user_id="ada").ainvoke("Oslo"))) == 4
    for bad in (
        {"user_id": ""},
        {"user_id": "ada", "k": 0},
        {"user_id": "ada", "memory": 1},
        {"user_id": 5},
        {"user_id": "ada", "k": "many"},
        {},
    ):
        with pytest.raises(ValidationError):
            MemlaneRetriever(**{"memory": memory, **bad})
    with pytest.raises(ValidationError):
        MemlaneRetriever(memory=memory, user_id="ada").invoke("x", k=-1)
    with pytest.raises(ValidationError):
        MemlaneRetriever(memory=memory, user_id="ada").invoke("   ")


# ---------------------------------------------------------------------- langchain-tests


try:
    from langchain_tests.integration_tests import RetrieversIntegrationTests
except ImportError:  # pragma: no cover - langchain-tests not installed
    RetrieversIntegrationTests = None  # type: ignore[assignment,misc]

if RetrieversIntegrationTests is not None:

    class TestMemlaneRetrieverStandard(RetrieversIntegrationTests):  # type: ignore[misc]
        """langchain-tests' standard retriever suite, on an in-memory memlane store."""

        @property
        def retriever_constructor(self) -> type[BaseRetriever]:
            return MemlaneRetriever

        @property
        def retriever_constructor_params(self) -> dict[str, Any]:
            memory = Memory("memory://", embedder=FakeEmbedder())
            seeded(memory)
            return {"memory": memory, "user_id": "ada"}

        @property
        def retriever_query_example(self) -> str:
            return "what food does Ada like?"

        # The async standard test expects pytest-asyncio's auto mode; anyio runs it here
        # (on asyncio), without overriding any standard test.
        pytestmark = pytest.mark.anyio

        @pytest.fixture
        def anyio_backend(self) -> str:
            return "asyncio"


# ---------------------------------------------------------------------- the example


def test_example_keeps_history_and_recalls_across_processes(
    server: ChatServer, llm: Any, tmp_path: Path
) -> None:
    env = example_env(tmp_path / "trip.db", server)
    server.queue("Noted: vegetarian, Oslo on 3 June.")
    first = run_example(
        "langchain_history.py", "I'm vegetarian and I fly to Oslo on 3 June.", env=env
    )
    assert first.returncode == 0, first.stderr
    assert "[assistant] Noted: vegetarian, Oslo on 3 June." in first.stdout
    assert "LangChainDeprecationWarning" in first.stderr  # left on, as LangChain emits it
    server.queue("Try a vegetarian place near the station.")
    second = run_example("langchain_history.py", "Where should a vegetarian eat in Oslo?", env=env)
    assert second.returncode == 0, second.stderr
    assert "2 turns" in second.stdout
    sent = server.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    # the first turn, recalled from memlane by the retriever into the system prompt
    assert "- I'm vegetarian and I fly to Oslo on 3 June." in sent[0]["content"]
