"""Appending to a session costs the same at any session length: add_messages builds its
result from what it appended, and reads nothing that grows with the session.

Measured without a clock: a real store, wrapped to count the rows its reads hand back
to the core, on a session of 2 messages and on one of 2,000. (Time per call at 2 / 40 /
2,040 / 8,040 messages is in bench/append.md.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.servers import PostgresServer

from memlane import Memory
from memlane.core.base import CoreConfig
from memlane.ports.store import Store
from memlane.stores import open_store
from memlane.testing import FakeEmbedder


class RowCounter:
    """A real store that notes each op it runs and how many rows (items of list or
    mapping results) its answers hold."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.ops: list[str] = []
        self.rows = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def batch(self, ops_: Any) -> list[Any]:
        results = self.inner.batch(ops_)
        self.ops += [type(op).__name__ for op in ops_]
        self.rows += sum(len(r) for r in results if isinstance(r, list | dict))
        return results

    def reset(self) -> None:
        self.ops, self.rows = [], 0


def _reads_per_append(
    url: str, context_window: int, length: int = 2000, earlier_agent: str | None = None
) -> None:
    """``earlier_agent``: who wrote the session so far (the appends are by no agent)."""
    counter = RowCounter(open_store(url))
    config = CoreConfig(context_window=context_window)
    m = Memory(counter, embedder=FakeEmbedder(), config=config)  # type: ignore[arg-type]
    turns = [("user" if i % 2 else "assistant", f"turn {i} of a long chat") for i in range(length)]
    m.add_messages("long", turns, user_id="u", agent_id=earlier_agent)
    m.add_messages(
        "short", [("user", "hello"), ("assistant", "hi")], user_id="u", agent_id=earlier_agent
    )
    seen: dict[str, tuple[list[str], int]] = {}
    for session in ("short", "long"):
        counter.reset()
        said = [f"one more to {session}", f"ok, {session}"]  # new words: embedded alike
        run = m.add_messages(session, [("user", said[0]), ("assistant", said[1])], user_id="u")
        seen[session] = (counter.ops, counter.rows)
        assert [msg.content for msg in run.messages] == said
    assert [msg.seq for msg in run.messages] == [length + 1, length + 2]
    assert "GetMessages" not in seen["long"][0]  # no read of the session's messages
    assert seen["long"] == seen["short"]  # the same ops, the same number of rows read
    history = m.get_history("long", user_id="u")
    assert history[-1].messages == run.messages
    m.close()


@pytest.mark.parametrize("context_window", [0, 2])
def test_appending_reads_the_same_at_any_length_in_memory(context_window: int) -> None:
    _reads_per_append("memory://", context_window)


@pytest.mark.parametrize("context_window", [0, 2])
def test_appending_reads_the_same_at_any_length_on_sqlite(
    tmp_path: Path, context_window: int
) -> None:
    _reads_per_append(f"sqlite:///{tmp_path}/cost.db", context_window)


def test_appending_reads_the_same_at_any_length_on_postgres(
    postgres_server: PostgresServer,
) -> None:
    _reads_per_append(postgres_server.new_database("append"), 2, length=400)


@pytest.mark.parametrize("url", ["memory://", "sqlite"])
def test_appending_without_an_agent_after_an_agents_turns_reads_the_same(
    tmp_path: Path, url: str
) -> None:
    """The context of a turn by no agent is the last turns by no agent: found with one
    read, not by paging back through every turn other agents wrote in the session."""
    url = f"sqlite:///{tmp_path}/cost.db" if url == "sqlite" else url
    _reads_per_append(url, 1, earlier_agent="planner")
