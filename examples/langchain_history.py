"""A LangChain chat chain whose history and long-term memories live in memlane.

    MEMLANE_LLM_BASE_URL=http://localhost:11434/v1 MEMLANE_LLM_MODEL=llama3.1 \\
        python examples/langchain_history.py "I'm vegetarian and I fly to Oslo on 3 June."
    python examples/langchain_history.py "Where should I eat when I land?"   # remembers

``RunnableWithMessageHistory`` (deprecated since langchain-core 1.3.3, like
``BaseChatMessageHistory`` since 1.6.4: both warn, and these warnings are left on) reads
and appends the conversation through ``MemlaneChatMessageHistory``; ``MemlaneRetriever``
puts the user's most relevant memories into the system prompt. Store and embedder come
from the environment like the CLI's (``Memory.from_env``); the model is any
OpenAI-compatible endpoint (``MEMLANE_LLM_BASE_URL``, ``MEMLANE_LLM_MODEL``,
``MEMLANE_LLM_API_KEY``) through ``langchain-openai``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from langchain_core.documents import Document
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnablePassthrough
from langchain_core.runnables.history import RunnableWithMessageHistory
from langchain_openai import ChatOpenAI

from memlane import Memory
from memlane.integrations.langchain import MemlaneChatMessageHistory, MemlaneRetriever

USER = "traveller-1"
SESSION = "trip-chat"

PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "You are a travel assistant. What you know about the user:\n{memories}"),
        MessagesPlaceholder("history"),
        ("human", "{question}"),
    ]
)


def lines(docs: list[Document]) -> str:
    return "\n".join(f"- {d.page_content}" for d in docs) or "(nothing yet)"


def build(memory: Memory, llm: ChatOpenAI) -> Any:
    retriever = MemlaneRetriever(memory=memory, user_id=USER, k=4)
    chain = (
        RunnablePassthrough.assign(memories=(lambda x: x["question"]) | retriever | lines)
        | PROMPT
        | llm
    )
    return RunnableWithMessageHistory(
        chain,
        lambda session_id: MemlaneChatMessageHistory(
            memory=memory, user_id=USER, session_id=session_id
        ),
        input_messages_key="question",
        history_messages_key="history",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("question", help="what the user says this turn")
    args = parser.parse_args()
    base_url = os.environ.get("MEMLANE_LLM_BASE_URL")
    if not base_url:
        print(
            "set MEMLANE_LLM_BASE_URL (and MEMLANE_LLM_MODEL) to a chat endpoint", file=sys.stderr
        )
        return 2
    llm = ChatOpenAI(
        base_url=base_url,
        api_key=os.environ.get("MEMLANE_LLM_API_KEY", "none"),  # type: ignore[arg-type]
        model=os.environ.get("MEMLANE_LLM_MODEL", "llama3.1"),
    )
    with Memory.from_env() as memory:
        chain = build(memory, llm)
        config = {"configurable": {"session_id": SESSION}}
        answer = chain.invoke({"question": args.question}, config=config)
        print(f"[assistant] {answer.content}")
        turns = len(memory.get_history(SESSION, user_id=USER))
        print(f"[history] {turns} turns in memlane session {SESSION!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
