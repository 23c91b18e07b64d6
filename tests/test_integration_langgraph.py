"""MemlaneStore inside LangGraph's own runtime, and directly: TTL, filters, paging,
namespaces, index fields, scores, async, isolation, bad input."""

from __future__ import annotations

import asyncio
import operator
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.store.base import (
    BaseStore,
    GetOp,
    InvalidNamespaceError,
    PutOp,
    SearchOp,
)

from helpers import run_example
from memlane import AsyncMemory, CoreConfig, Filters, HistoryAction, Memory
from memlane.errors import ConfigurationError, ValidationError
from memlane.integrations.langgraph import MemlaneStore, NamespaceError
from memlane.testing.fakes import FakeEmbedder, FixedClock


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[Memory]:
    # Without the sparse terms: these tests pin which words are indexed and matched, with
    # the fake embedder's word-count vectors; the terms' related words (penguins ~ whales)
    # are tested in tests/test_sparse.py.
    with Memory(f"sqlite:///{tmp_path / 'lg.db'}", embedder=FakeEmbedder(), sparse=None) as m:
        yield m


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def timed(tmp_path: Path, clock: FixedClock) -> Iterator[Memory]:
    """A memory whose time moves only when the test moves ``clock``."""
    with Memory(f"sqlite:///{tmp_path / 't.db'}", embedder=FakeEmbedder(), clock=clock) as m:
        yield m


# ---------------------------------------------------------------------------- the runtime


@dataclass
class UserContext:
    user_id: str


class ChatState(TypedDict):
    message: str
    recalled: Annotated[list[str], operator.add]


def remember_node(state: ChatState, runtime: Runtime[UserContext]) -> dict[str, Any]:
    """Stores what the user says as a memory, under the user's namespace."""
    assert runtime.store is not None
    namespace = (runtime.context.user_id, "memories")
    if state["message"].startswith("remember:"):
        fact = state["message"].removeprefix("remember:").strip()
        key = f"m{len(runtime.store.search(namespace, limit=100))}"
        runtime.store.put(namespace, key, {"text": fact, "source": "chat"})
    return {}


def recall_node(
    state: ChatState, runtime: Runtime[UserContext], store: BaseStore
) -> dict[str, Any]:
    """Recalls through the injected ``store`` (the same MemlaneStore as runtime.store)."""
    assert store is runtime.store
    hits = store.search((runtime.context.user_id,), query=state["message"], limit=1)
    found = store.get(hits[0].namespace, hits[0].key) if hits and hits[0].score else None
    return {"recalled": [found.value["text"]] if found else []}


def chat_graph(store: BaseStore) -> Any:
    builder = StateGraph(ChatState, context_schema=UserContext)
    builder.add_node("remember", remember_node)
    builder.add_node("recall", recall_node)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", "recall")
    builder.add_edge("recall", END)
    return builder.compile(checkpointer=InMemorySaver(), store=store)


def test_a_graph_remembers_in_one_thread_and_recalls_in_another(memory: Memory) -> None:
    graph = chat_graph(MemlaneStore(memory, index={"fields": ["text"]}))
    alice, bob = UserContext("alice"), UserContext("bob")
    t1 = {"configurable": {"thread_id": "t1"}}
    t2 = {"configurable": {"thread_id": "t2"}}
    t3 = {"configurable": {"thread_id": "t3"}}

    first = graph.invoke(
        {"message": "remember: my cat is called Miso", "recalled": []}, t1, context=alice
    )
    assert first["recalled"] == ["my cat is called Miso"]
    later = graph.invoke({"message": "what is my cat called?", "recalled": []}, t2, context=alice)
    assert later["recalled"] == ["my cat is called Miso"]
    # Another user's thread finds nothing of alice's.
    other = graph.invoke({"message": "what is my cat called?", "recalled": []}, t3, context=bob)
    assert other["recalled"] == []
    # Threads keep their own checkpoints; the memory is in memlane, under alice.
    assert graph.get_state(t1).values["message"].startswith("remember:")
    assert graph.get_state(t2).values["message"] == "what is my cat called?"
    (hit,) = memory.search("cat Miso", user_id="alice")
    assert hit.record.text == "my cat is called Miso"
    assert hit.record.metadata["lg_value"] == {"text": "my cat is called Miso", "source": "chat"}
    assert memory.search("cat Miso", user_id="bob") == []


def test_an_async_graph_uses_the_store_through_abatch(memory: Memory) -> None:
    asyncio.run(_async_graph(MemlaneStore(memory)))


async def _async_graph(store: MemlaneStore) -> None:

    async def remember(state: ChatState, runtime: Runtime[UserContext]) -> dict[str, Any]:
        assert runtime.store is not None
        await runtime.store.aput(
            (runtime.context.user_id, "notes"), "n1", {"text": state["message"]}
        )
        return {}

    async def recall(state: ChatState, runtime: Runtime[UserContext]) -> dict[str, Any]:
        assert runtime.store is not None
        hits = await runtime.store.asearch((runtime.context.user_id,), query="dentist")
        return {"recalled": [h.value["text"] for h in hits]}

    builder = StateGraph(ChatState, context_schema=UserContext)
    builder.add_node("remember", remember)
    builder.add_node("recall", recall)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", "recall")
    graph = builder.compile(checkpointer=InMemorySaver(), store=store)
    out = await graph.ainvoke(
        {"message": "dentist on Tuesday", "recalled": []},
        {"configurable": {"thread_id": "a1"}},
        context=UserContext("carol"),
    )
    assert out["recalled"] == ["dentist on Tuesday"]
    item = await store.aget(("carol", "notes"), "n1")
    assert item is not None and item.value == {"text": "dentist on Tuesday"}


# ---------------------------------------------------------------------------- items


def test_items_come_back_exactly_as_put_with_their_times(timed: Memory, clock: FixedClock) -> None:
    store = MemlaneStore(timed)
    value = {
        "text": "Zoë prefers tea 🍵",
        "n": 3,
        "ratio": 0.25,
        "ok": True,
        "none": None,
        "tags": ["a", "b"],
        "nested": {"deep": {"x": [1, {"y": "z"}]}},
    }
    store.put(("u", "profile"), "p", value)
    first = store.get(("u", "profile"), "p")
    assert first is not None
    assert first.value == value and first.key == "p" and first.namespace == ("u", "profile")
    assert first.created_at == first.updated_at == clock.now
    clock.advance(minutes=5)
    store.put(("u", "profile"), "p", {**value, "n": 4})
    second = store.get(("u", "profile"), "p")
    assert second is not None and second.value["n"] == 4
    assert second.created_at == first.created_at
    assert second.updated_at == clock.now > first.updated_at
    # memlane keeps the versions: a put is an update, a delete is recorded.
    store.delete(("u", "profile"), "p")
    assert store.get(("u", "profile"), "p") is None
    page = timed.list(user_id="u", filters=None)
    assert page.items == ()
    (record,) = timed.list(user_id="u", filters=Filters(include_deleted=True)).items
    actions = [e.action for e in timed.history(record.id, user_id="u")]
    assert actions == [HistoryAction.ADD, HistoryAction.UPDATE, HistoryAction.DELETE]
    assert {e.actor for e in timed.history(record.id, user_id="u")} == {"langgraph"}
    # Put again after a delete: a new item, created now.
    store.put(("u", "profile"), "p", {"text": "back"})
    again = store.get(("u", "profile"), "p")
    assert again is not None and again.value == {"text": "back"}


def test_the_store_survives_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with Memory(url, embedder=FakeEmbedder()) as m:
        MemlaneStore(m).put(("dora", "facts"), "f", {"text": "allergic to peanuts"})
    with Memory(url, embedder=FakeEmbedder()) as m:
        (hit,) = MemlaneStore(m).search(("dora",), query="peanuts")
        assert hit.value == {"text": "allergic to peanuts"} and hit.score


# ---------------------------------------------------------------------------- TTL


def test_ttl_expires_and_reads_refresh_it(timed: Memory, clock: FixedClock) -> None:
    store = MemlaneStore(timed)
    ns = ("u", "ttl")
    store.put(ns, "k", {"text": "short lived"}, ttl=1)  # minutes
    store.put(ns, "forever", {"text": "long lived"})
    clock.advance(seconds=50)
    item = store.get(ns, "k")  # refresh_on_read defaults to True: 60 s from now
    assert item is not None
    clock.advance(seconds=50)
    assert [i.key for i in store.search(ns, query="short")][:1] == ["k"]  # refreshes too
    clock.advance(seconds=50)
    assert store.get(ns, "k", refresh_ttl=False) is not None  # 50 s after the search
    clock.advance(seconds=11)
    assert store.get(ns, "k", refresh_ttl=False) is None
    assert [i.key for i in store.search(ns, query="lived")] == ["forever"]
    assert store.list_namespaces() == [ns]
    # A refresh does not change the item's updated_at; sweep purges what expired.
    assert item.updated_at == item.created_at
    assert store.sweep() == 1


def test_ttl_config_default_and_no_refresh_on_read(timed: Memory, clock: FixedClock) -> None:
    store = MemlaneStore(timed, ttl={"default_ttl": 2, "refresh_on_read": False})
    assert store.supports_ttl and store.ttl_config == {"default_ttl": 2.0, "refresh_on_read": False}
    ns = ("u", "cfg")
    store.put(ns, "default", {"text": "a"})
    store.put(ns, "never", {"text": "b"}, ttl=None)
    store.put(ns, "longer", {"text": "c"}, ttl=10)
    clock.advance(seconds=90)
    assert store.get(ns, "default") is not None  # read, not refreshed (config)
    clock.advance(seconds=40)
    assert store.get(ns, "default") is None
    assert store.get(ns, "default", refresh_ttl=True) is None  # expired stays expired
    assert {i.key for i in store.search(ns)} == {"never", "longer"}
    # An explicit refresh_ttl=True overrides the config.
    store.put(ns, "default", {"text": "a"})
    clock.advance(seconds=100)
    assert store.get(ns, "default", refresh_ttl=True) is not None
    clock.advance(seconds=100)
    assert store.get(ns, "default") is not None
    # A put restarts the TTL; a put with ttl=None removes it.
    store.put(ns, "default", {"text": "a"}, ttl=None)
    clock.advance(hours=1)
    assert store.get(ns, "default") is not None


# ---------------------------------------------------------------------------- search


def _stock(store: MemlaneStore) -> None:
    rows = [
        ("apple", {"kind": "fruit", "price": 1.5, "stock": 10, "color": "red", "ok": True}),
        ("banana", {"kind": "fruit", "price": 0.5, "stock": 0, "color": "yellow", "ok": False}),
        ("carrot", {"kind": "veg", "price": 0.8, "stock": 5, "color": "orange", "ok": True}),
        ("durian", {"kind": "fruit", "price": 9.0, "stock": 1, "meta": {"smell": "strong"}}),
    ]
    for key, value in rows:
        store.put(("shop", "items"), key, {"name": key, **value})


@pytest.mark.parametrize("query", [None, "fruit"])
def test_filters_with_every_operator(memory: Memory, query: str | None) -> None:
    store = MemlaneStore(memory, user_id="shopkeeper")
    _stock(store)

    def keys(f: dict[str, Any]) -> set[str]:
        return {i.key for i in store.search(("shop",), query=query, filter=f, limit=50)}

    assert keys({"kind": "fruit"}) == {"apple", "banana", "durian"}
    assert keys({"kind": {"$eq": "veg"}}) == {"carrot"}
    assert keys({"kind": {"$ne": "fruit"}}) == {"carrot"}
    assert keys({"price": {"$gt": 1.5}}) == {"durian"}
    assert keys({"price": {"$gte": 1.5}}) == {"apple", "durian"}
    assert keys({"price": {"$lt": 0.8}}) == {"banana"}
    assert keys({"price": {"$lte": 0.8}}) == {"banana", "carrot"}
    assert keys({"price": {"$gt": 0.5, "$lt": 9}, "kind": "fruit"}) == {"apple"}
    assert keys({"stock": 0}) == {"banana"}
    assert keys({"ok": True}) == {"apple", "carrot"}
    assert keys({"ok": 1}) == set()  # JSON: true is not 1
    assert keys({"meta": {"smell": "strong"}}) == {"durian"}
    assert keys({"color": {"$gt": "r"}}) == {"apple", "banana"}  # text compares as text
    assert keys({"color": {"$gt": 1}}) == set()  # text never compares with a number
    assert keys({"missing": "x"}) == set()
    with pytest.raises(ValidationError, match=r"unknown operator '\$regex'"):
        store.search(("shop",), query=query, filter={"name": {"$regex": "a.*"}})
    with pytest.raises(ValidationError, match="mixes operators"):
        store.search(("shop",), query=query, filter={"name": {"$eq": "a", "b": 1}})


def test_equality_filters_run_in_the_store_beyond_the_ranked_page() -> None:
    # 120 items match the query; the one item the filter wants matches it least. An
    # equality filter on a top-level field is applied by memlane's store, so the item is
    # found although it ranks past the most hits a ranked search may return (100 here).
    config = CoreConfig(max_page_size=100)
    with Memory("memory://", embedder=FakeEmbedder(), config=config) as m:
        store = MemlaneStore(m, user_id="many")
        ops = [
            PutOp(("n",), f"k{i}", {"text": f"weekly report {i}", "tag": "x"}) for i in range(120)
        ]
        store.batch([*ops, PutOp(("n",), "rare", {"text": "gardening", "tag": "rare"})])
        assert "rare" not in [i.key for i in store.search(("n",), query="weekly report", limit=100)]
        (hit,) = store.search(("n",), query="weekly report", filter={"tag": "rare"})
        assert hit.key == "rare"
        (hit,) = store.search(("n",), query="weekly report", filter={"tag": {"$eq": "rare"}})
        assert hit.key == "rare"


def test_offset_and_limit_page_through_listings_and_ranked_searches(memory: Memory) -> None:
    store = MemlaneStore(memory, user_id="pager")
    for n in range(23):
        store.put(("docs", f"g{n % 3}"), f"d{n:02}", {"text": f"report number {n}", "n": n})
    for query in (None, "report"):
        pages = [store.search(("docs",), query=query, limit=5, offset=o) for o in range(0, 30, 5)]
        keys = [i.key for page in pages for i in page]
        assert [len(p) for p in pages] == [5, 5, 5, 5, 3, 0]
        assert sorted(keys) == [f"d{n:02}" for n in range(23)]  # each once
        whole = [i.key for i in store.search(("docs",), query=query, limit=23)]
        assert keys == whole  # pages are slices of one order
    assert [i.key for i in store.search(("docs",), limit=3)] == ["d22", "d21", "d20"]  # newest
    odd = store.search(("docs",), filter={"n": {"$gte": 10}}, limit=4, offset=2)
    assert [i.value["n"] for i in odd] == [20, 19, 18, 17]
    assert store.search(("docs",), limit=0) == []
    with pytest.raises(ValidationError, match="maximum page"):
        store.search(("docs",), query="report", limit=1000, offset=1)


def test_index_fields_decide_what_is_searched(memory: Memory) -> None:
    store = MemlaneStore(memory, user_id="idx", index={"fields": ["title"]})
    ns = ("lib",)
    store.put(ns, "a", {"title": "whales of the arctic", "body": "penguins"})
    store.put(ns, "b", {"title": "desert plants", "body": "whales"})
    store.put(ns, "c", {"title": "no index", "body": "whales"}, index=False)
    store.put(ns, "d", {"title": "other", "body": "whales in the body"}, index=["body"])
    store.put(ns, "e", {"body": "no title field"})  # nothing to index
    hits = store.search(ns, query="whales", limit=10)
    by_key = {h.key: h.score for h in hits}
    assert [h.key for h in hits][:2] in (["a", "d"], ["d", "a"])
    assert by_key["a"] and by_key["d"] and by_key["b"] == 0.0  # b's words are not indexed
    assert by_key["c"] is None and by_key["e"] is None  # unindexed: after the ranked ones
    assert [h.key for h in hits][-2:] in (["c", "e"], ["e", "c"])
    (record,) = [r for r in memory.list(user_id="idx").items if r.metadata["lg_key"] == "a"]
    assert record.text == "whales of the arctic"
    assert store.search(ns, query="penguins", limit=1)[0].score == 0.0  # body of a: not indexed


def test_whole_value_is_indexed_by_default_and_array_paths_work(memory: Memory) -> None:
    store = MemlaneStore(memory, user_id="arr")
    store.put(("x",), "whole", {"note": "quokka sighting"})
    store.put(("x",), "arr", {"msgs": [{"c": "kakapo"}, {"c": "kea"}]}, index=["msgs[*].c"])
    assert store.search(("x",), query="quokka")[0].key == "whole"
    assert store.search(("x",), query="kea")[0].key == "arr"
    (record,) = [r for r in memory.list(user_id="arr").items if r.metadata["lg_key"] == "arr"]
    assert record.text == "kakapo\nkea"


def test_one_score_scale_across_namespaces(memory: Memory) -> None:
    store = MemlaneStore(memory, user_id="scores")
    store.put(("kb", "a"), "best", {"text": "rust borrow checker lifetimes"})
    store.put(("kb", "b"), "second", {"text": "rust borrow checker"})
    store.put(("kb", "a"), "third", {"text": "rust"})
    store.put(("kb", "b"), "none", {"text": "gardening tips"})
    hits = store.search(("kb",), query="rust borrow checker lifetimes", limit=4)
    assert [h.key for h in hits] == ["best", "second", "third", "none"]
    assert [h.namespace[1] for h in hits] == ["a", "b", "a", "b"]
    scores = [h.score for h in hits]
    assert all(isinstance(s, float) for s in scores)
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[1] > scores[2]  # type: ignore[operator]
    # A narrower prefix sees the same items with the same score.
    within_a = {
        h.key: h.score for h in store.search(("kb", "a"), query="rust borrow checker lifetimes")
    }
    assert within_a["best"] == pytest.approx(scores[0])


# ---------------------------------------------------------------------------- namespaces


def test_list_namespaces_prefix_suffix_wildcards_depth_and_paging(memory: Memory) -> None:
    store = MemlaneStore(memory, user_id="ns")
    spaces = [
        ("a", "docs", "public"),
        ("a", "docs", "private"),
        ("a", "img", "public"),
        ("b", "docs", "public"),
        ("b",),
    ]
    for ns in spaces:
        store.put(ns, "k", {"v": 1})
    store.put(("a", "docs", "public"), "k2", {"v": 2})  # a namespace is listed once
    assert store.list_namespaces() == sorted(spaces)
    assert store.list_namespaces(prefix=("a",)) == sorted(spaces[:3])
    assert store.list_namespaces(suffix=("public",)) == sorted([spaces[0], spaces[2], spaces[3]])
    assert store.list_namespaces(prefix=("*", "docs")) == sorted([spaces[0], spaces[1], spaces[3]])
    assert store.list_namespaces(prefix=("a",), suffix=("*", "public")) == sorted(
        [spaces[0], spaces[2]]
    )
    assert store.list_namespaces(max_depth=2) == [
        ("a", "docs"),
        ("a", "img"),
        ("b",),
        ("b", "docs"),
    ]
    assert store.list_namespaces(limit=2, offset=1) == sorted(spaces)[1:3]
    store.delete(("b",), "k")
    assert ("b",) not in store.list_namespaces()
    # "*" is a wildcard in a listing only: a search prefix is literal.
    store.put(("*", "docs"), "star", {"v": 3})
    assert [i.key for i in store.search(("*",))] == ["star"]
    assert [i.key for i in store.search(("*", "docs"))] == ["star"]


# ---------------------------------------------------------------------------- users


def test_users_never_see_each_other(memory: Memory) -> None:
    store = MemlaneStore(memory)  # user = namespace[0]
    store.put(("alice", "m"), "k", {"text": "alice secret plan"})
    store.put(("bob", "m"), "k", {"text": "bob plan"})
    assert store.get(("bob", "m"), "k").value == {"text": "bob plan"}  # type: ignore[union-attr]
    assert [h.value["text"] for h in store.search(("bob",), query="secret plan")] == ["bob plan"]
    assert store.list_namespaces(prefix=("bob",)) == [("bob", "m")]
    assert store.list_namespaces() == [("alice", "m"), ("bob", "m")]  # an admin walk, by user
    assert [r.metadata["lg_value"] for r in memory.list(user_id="alice").items] == [
        {"text": "alice secret plan"}
    ]
    with pytest.raises(NamespaceError, match="names no user"):
        store.search((), query="plan")  # would mix users' scores
    # user_position=1 and user_id= stores
    second = MemlaneStore(memory, user_position=1)
    second.put(("memories", "carol"), "k", {"text": "carol's"})
    assert memory.list(user_id="carol").items[0].metadata["lg_value"] == {"text": "carol's"}
    with pytest.raises(NamespaceError, match=r"label 1 .*user_position=1"):
        second.put(("memories",), "k", {"text": "whose?"})
    dave, erin = MemlaneStore(memory, user_id="dave"), MemlaneStore(memory, user_id="erin")
    dave.put(("notes",), "k", {"text": "dave's note"})
    assert erin.get(("notes",), "k") is None and erin.search(("notes",), query="note") == []
    assert erin.list_namespaces() == []
    assert dave.get(("notes",), "k") is not None
    # Other memlane memories of the user are not store items.
    memory.add("a plain memlane memory about notes", user_id="dave")
    assert [i.key for i in dave.search(("notes",), query="memlane memory notes")] == ["k"]


def test_async_calls_share_the_store_with_sync_ones(tmp_path: Path) -> None:
    asyncio.run(_async_calls(tmp_path))


async def _async_calls(tmp_path: Path) -> None:
    async with AsyncMemory(f"sqlite:///{tmp_path / 'a.db'}", embedder=FakeEmbedder()) as am:
        store = MemlaneStore(am, user_id="async")
        await asyncio.gather(
            *(store.aput(("q",), f"k{n}", {"text": f"async item {n}", "n": n}) for n in range(5))
        )
        assert {i.key for i in await store.asearch(("q",), query="async item", limit=10)} == {
            f"k{n}" for n in range(5)
        }
        assert (await store.aget(("q",), "k3")).value["n"] == 3  # type: ignore[union-attr]
        assert await store.alist_namespaces() == [("q",)]
        await store.adelete(("q",), "k3")
        assert await store.aget(("q",), "k3") is None
        # The same store object answers blocking calls too (here from a thread).
        item = await asyncio.to_thread(store.get, ("q",), "k4")
        assert item is not None and item.value["n"] == 4
        results = await store.abatch(
            [PutOp(("q",), "z", {"text": "zed"}), GetOp(("q",), "z"), SearchOp(("q",), query="zed")]
        )
        assert results[0] is None and results[1].value == {"text": "zed"}  # type: ignore[union-attr]
        assert results[2][0].key == "z"  # type: ignore[index]


# ---------------------------------------------------------------------------- bad input


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"v": value}
    return value


BAD_BATCHES: list[tuple[list[Any], type[Exception], str]] = [
    ([PutOp((), "k", {"a": 1})], NamespaceError, "empty"),
    ([PutOp(("a.b",), "k", {"a": 1})], InvalidNamespaceError, "periods"),
    ([PutOp(("ok",), 5, {"a": 1})], ValidationError, "key must be a string"),  # type: ignore[arg-type]
    ([PutOp(("ok",), "k", ["not", "a", "dict"])], ValidationError, "must be a dict"),  # type: ignore[arg-type]
    ([PutOp(("ok",), "k", {"a": {1, 2}})], ValidationError, "must be JSON"),
    ([PutOp(("ok",), "k", {"a": "nul\x00"})], ValidationError, "NUL"),
    ([PutOp(("ok",), "k", _nested(70))], ValidationError, "nests 70 levels"),
    ([PutOp(("ok",), "k", _nested(5000))], ValidationError, "nested too deeply"),
    ([PutOp(("ok",), "k\x00", {"a": 1})], ValidationError, "NUL"),
    ([PutOp(("ok",), "k", {"a": 1}, ttl=-1)], ValidationError, "positive"),
    ([PutOp(("ok",), "k", {"a": 1}, index="text")], ValidationError, "list of field"),  # type: ignore[arg-type]
    ([PutOp(("ok",), "k", {"a": "x" * 30_000})], ValidationError, "limit"),
    ([SearchOp(("ok",), limit=-1)], ValidationError, "limit"),
    ([SearchOp(("ok",), offset=-2)], ValidationError, "offset"),
    ([SearchOp(("ok",), filter={"a": {"$in": [1]}})], ValidationError, "unknown operator"),
]


@pytest.mark.parametrize(
    ("ops", "error", "message"), BAD_BATCHES, ids=[m for _, _, m in BAD_BATCHES]
)
def test_a_bad_op_raises_a_typed_error_and_its_batch_writes_nothing(
    memory: Memory, ops: list[Any], error: type[Exception], message: str
) -> None:
    store = MemlaneStore(memory, user_id="strict")
    store.put(("ok",), "keep", {"text": "kept"})
    # Each bad op comes after a good put: the batch is refused before anything runs.
    with pytest.raises(error, match=message):
        store.batch([PutOp(("ok",), "new", {"text": "should not exist"}), *ops])
    assert store.get(("ok",), "new") is None
    assert [i.key for i in store.search(("ok",))] == ["keep"]


def test_namespace_error_is_a_validation_error_and_langgraphs() -> None:
    assert isinstance(NamespaceError("x"), ValidationError | InvalidNamespaceError)


def test_a_store_misconfigured_is_refused_at_construction(memory: Memory) -> None:
    with pytest.raises(ConfigurationError, match="embedder"):
        MemlaneStore(memory, user_id="u", index={"dims": 3, "embed": lambda t: [[0.0] * 3]})
    with pytest.raises(ConfigurationError, match="omit_expired"):
        MemlaneStore(memory, user_id="u", ttl={"omit_expired": False})
    with pytest.raises(ConfigurationError, match="unknown ttl"):
        MemlaneStore(memory, user_id="u", ttl={"default": 5})  # type: ignore[typeddict-unknown-key]
    with pytest.raises(ValidationError, match="not both"):
        MemlaneStore(memory, user_id="u", user_position=1)
    with pytest.raises(ValidationError, match="user_id"):
        MemlaneStore(memory, user_id="")
    with pytest.raises(ValidationError, match="Memory"):
        MemlaneStore("sqlite:///x.db")  # type: ignore[arg-type]


def test_ttl_sweeper_thread_purges_expired_items(timed: Memory, clock: FixedClock) -> None:
    store = MemlaneStore(timed, user_id="sw", ttl={"sweep_interval_minutes": 5})
    store.put(("s",), "old", {"text": "expires"}, ttl=1)
    store.put(("s",), "new", {"text": "stays"})
    (record,) = [r for r in timed.list(user_id="sw").items if r.metadata["lg_key"] == "old"]
    clock.advance(minutes=2)
    store.start_ttl_sweeper(sweep_interval_minutes=0.001)  # every 60 ms
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if timed.history(record.id, user_id="sw")[-1].action is HistoryAction.EXPIRE:
            break
        time.sleep(0.05)
    assert store.stop_ttl_sweeper(timeout=5)
    assert timed.history(record.id, user_id="sw")[-1].action is HistoryAction.EXPIRE
    assert [i.key for i in store.search(("s",))] == ["new"]
    with pytest.raises(ValidationError, match="sweep_interval_minutes"):
        MemlaneStore(timed, user_id="sw").start_ttl_sweeper()


# ---------------------------------------------------------------------------- example


@pytest.mark.parametrize("embedder", ["fake", pytest.param("local", marks=pytest.mark.slow)])
def test_example_runs(tmp_path: Path, embedder: str) -> None:
    env = {**os.environ, "MEMLANE_EMBEDDER": embedder, "HF_HUB_OFFLINE": "1"}
    out = run_example("langgraph_store.py", str(tmp_path / "ex.db"), env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "recalled: I prefer aisle seats" in out.stdout
    assert "other user recalled: nothing" in out.stdout
