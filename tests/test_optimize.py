"""MemoryManager.optimize: strategies (deduplicate, merge, decay, token cap) as a dry run,
applied, and reverted, on an in-memory store; merge's model is the loopback chat server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chat_server import ChatServer
from memlane import ConflictError, HistoryAction, LLMOutputError, Memory, MemoryRecord
from memlane.llm import OpenAIChat
from memlane.manager import Decay, Deduplicate, MemoryManager, Merge, TokenCap
from memlane.testing import FakeEmbedder, FixedClock


@pytest.fixture()
def chocolates() -> Iterator[tuple[Memory, MemoryManager, list[MemoryRecord]]]:
    """Four memories: a, an exact duplicate b of it, c close enough to merge with a, and
    an unrelated d; a manager without a model (deduplicate and merge need none)."""
    with Memory("memory://", embedder=FakeEmbedder(), clock=FixedClock()) as memory:
        records = [
            memory.add("The user likes dark chocolate", user_id="u", importance=0.9),
            memory.add("the user likes dark chocolate!", user_id="u"),
            memory.add("The user likes dark chocolate and coffee", user_id="u"),
            memory.add("The user has a dentist appointment", user_id="u"),
        ]
        yield memory, MemoryManager(memory, None), records


def test_a_dedupe_dry_run_shows_the_change_and_makes_none(chocolates) -> None:  # type: ignore[no-untyped-def]
    memory, manager, (a, b, _, _) = chocolates
    dry = manager.optimize([Deduplicate()], user_id="u")
    assert not dry.applied and len(dry.changes) == 1
    assert dry.changes[0].keep == a.id and dry.changes[0].sources == (b.id,)
    assert "- the user likes dark chocolate!" in dry.diff
    assert memory.get(b.id, user_id="u").is_current  # a dry run changes nothing


def test_dedupe_and_merge_apply_and_revert_restores_every_memory(chocolates) -> None:  # type: ignore[no-untyped-def]
    memory, manager, (a, b, c, d) = chocolates
    report = manager.optimize([Deduplicate(), Merge(threshold=0.8)], user_id="u", dry_run=False)
    assert report.applied and report.memories_after < report.memories_before
    assert report.tokens_after < report.tokens_before
    current = {r.id: r for r in memory.list(user_id="u").items}
    assert b.id not in current and d.id in current
    merged = [current[i] for i in report.created]
    assert merged and "coffee" in merged[0].text and set(merged[0].source_ids) == {a.id, c.id}
    assert memory.get(b.id, user_id="u").superseded_by == a.id
    assert manager.revert(report) > 0
    after = {r.id for r in memory.list(user_id="u").items}
    assert after == {a.id, b.id, c.id, d.id}
    assert memory.history(b.id, user_id="u")[-1].action is HistoryAction.RESTORE
    with pytest.raises(ConflictError):
        manager.revert(report)  # twice: the memories moved on since


def test_a_revert_never_undoes_what_happened_after_the_optimization(chocolates) -> None:  # type: ignore[no-untyped-def]
    memory, manager, (_, b, _, _) = chocolates
    again = manager.optimize([Deduplicate()], user_id="u", dry_run=False)
    memory.delete(b.id, user_id="u", reason="the user asked to forget it")
    with pytest.raises(ConflictError):
        manager.revert(again)
    assert memory.get(b.id, user_id="u").deleted_at is not None  # nothing was reverted


@pytest.fixture()
def ranked() -> Iterator[tuple[Memory, MemoryManager, list[MemoryRecord]]]:
    """An old trivial memory, then a year later a key one and a middling one."""
    clock = FixedClock()
    with Memory("memory://", embedder=FakeEmbedder(), clock=clock) as memory:
        old = memory.add("An old trivial remark about weather", user_id="u", importance=0.1)
        clock.advance(days=365)
        key = memory.add("The user is diabetic", user_id="u", importance=1.0)
        mid = memory.add("The user likes trains", user_id="u", importance=0.5)
        yield memory, MemoryManager(memory, None), [old, key, mid]


def test_decay_evicts_the_old_trivial_memory(ranked) -> None:  # type: ignore[no-untyped-def]
    _, manager, (old, _, _) = ranked
    report = manager.optimize([Decay(max_memories=2)], user_id="u")
    assert [c.sources for c in report.changes] == [(old.id,)]


def test_a_token_cap_evicts_the_lowest_priority_and_reverts(ranked) -> None:  # type: ignore[no-untyped-def]
    memory, manager, (old, key, mid) = ranked
    capped = manager.optimize([TokenCap(max_tokens=6)], user_id="u", dry_run=False)
    evicted = {i for ch in capped.changes for i in ch.sources}
    assert key.id not in evicted and {old.id, mid.id} <= evicted
    assert capped.tokens_after <= 6
    assert memory.get(old.id, user_id="u").deleted_at is not None
    manager.revert(capped)
    assert memory.get(old.id, user_id="u").deleted_at is None


def test_a_cap_after_a_merge_counts_the_merged_memory(ranked) -> None:  # type: ignore[no-untyped-def]
    memory, manager, _ = ranked
    manager.optimize([TokenCap(max_tokens=6)], user_id="u", dry_run=False)
    memory.add("The user likes trains and trams", user_id="u", importance=0.5)
    memory.add("The user likes trains and buses", user_id="u", importance=0.5)
    both = manager.optimize([Merge(threshold=0.5), TokenCap(max_tokens=22)], user_id="u")
    assert [c.strategy for c in both.changes] == ["merge", "token_cap"]
    assert both.tokens_after <= 22


def test_merge_obeys_the_managers_repairs(server: ChatServer) -> None:
    server.reset()
    with Memory("memory://", embedder=FakeEmbedder(), clock=FixedClock()) as memory:
        llm = OpenAIChat(base_url=server.base_url, model="scripted", max_backoff_s=0.01)
        manager = MemoryManager(memory, llm, repairs=0)
        memory.add("The user likes trains and trams", user_id="u")
        memory.add("The user likes trains and buses", user_id="u")
        server.queue("{", "{", "{")
        with pytest.raises(LLMOutputError):
            manager.optimize([Merge(threshold=0.5)], user_id="u")
        assert len(server.requests) == 1  # no repair round: repairs=0
        manager.close()
