"""A LangGraph graph whose long-term memory is memlane.

    pip install 'memlane[langgraph]'
    python examples/langgraph_store.py [STORE.db]

Two nodes share one ``MemlaneStore``: ``remember`` stores what the user asks to be
remembered under the user's namespace, ``recall`` searches it (memlane's hybrid search)
in any later thread. Threads are LangGraph's (checkpointed conversation state); the
memory is memlane's, per user, so a new thread of the same user recalls it and another
user's does not. The store is the SQLite file given (default ``langgraph_store.db`` here)
and the embedder comes from ``MEMLANE_EMBEDDER`` (default: the bundled local model).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, TypedDict

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from memlane import Memory
from memlane.integrations.langgraph import MemlaneStore


@dataclass
class Context:
    user_id: str


class State(TypedDict, total=False):
    message: str
    recalled: str


def remember(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    assert runtime.store is not None
    text = state["message"]
    if text.lower().startswith("remember that "):
        fact = text[len("remember that ") :]
        namespace = (runtime.context.user_id, "preferences")  # the first label is the user
        key = str(len(runtime.store.search(namespace, limit=100)))
        runtime.store.put(namespace, key, {"text": fact}, ttl=60 * 24 * 30)  # 30 days
    return {}


def recall(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    assert runtime.store is not None
    hits = runtime.store.search((runtime.context.user_id,), query=state["message"], limit=1)
    best = hits[0] if hits and hits[0].score else None
    return {"recalled": best.value["text"] if best else "nothing"}


def build(store: MemlaneStore) -> Any:
    graph = StateGraph(State, context_schema=Context)
    graph.add_node("remember", remember)
    graph.add_node("recall", recall)
    graph.add_edge(START, "remember")
    graph.add_edge("remember", "recall")
    graph.add_edge("recall", END)
    return graph.compile(checkpointer=InMemorySaver(), store=store)


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "langgraph_store.db"
    with Memory.from_env({**os.environ, "MEMLANE_STORE": f"sqlite:///{path}"}) as memory:
        store = MemlaneStore(memory, index={"fields": ["text"]})
        graph = build(store)
        me, other = Context("traveller-1"), Context("traveller-2")
        graph.invoke(
            {"message": "Remember that I prefer aisle seats"},
            {"configurable": {"thread_id": "booking-1"}},
            context=me,
        )
        later = graph.invoke(
            {"message": "Which seats do I prefer?"},
            {"configurable": {"thread_id": "booking-2"}},
            context=me,
        )
        print("recalled:", later["recalled"])
        theirs = graph.invoke(
            {"message": "Which seats do I prefer?"},
            {"configurable": {"thread_id": "booking-3"}},
            context=other,
        )
        print("other user recalled:", theirs["recalled"])


if __name__ == "__main__":
    main()
