"""/metrics (prometheus_client): latency histograms and counts per route template — never
a raw path with user or memory ids — and the time routes spend in memlane's library."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from chat_server import ChatServer
from memlane import AsyncMemory, Memory
from memlane.llm import OpenAIChat
from memlane.manager import MemoryManager
from memlane.server import KeyStore, create_app
from memlane.testing import FakeEmbedder

Sample = tuple[str, dict[str, str], float]


def _samples(text: str) -> list[Sample]:
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


ONE = "/v1/users/{user_id}/memories/{memory_id}"


@pytest.fixture(scope="module")
def metrics() -> tuple[str, list[Sample]]:
    """/metrics after alice and bob each added, got and searched a memory, one get of a
    missing memory and one unmatched route: its text and its samples."""
    memory = AsyncMemory("memory://", embedder=FakeEmbedder())
    keys = KeyStore(memory.store)
    key, _ = keys.create("acme")
    client = TestClient(create_app(memory, keys, mcp=False))
    auth = {"Authorization": f"Bearer {key}"}
    for user in ("alice", "bob"):
        made = client.post(f"/v1/users/{user}/memories", json={"text": "Likes tea"}, headers=auth)
        assert made.status_code == 201, made.text
        got = client.get(f"/v1/users/{user}/memories/{made.json()['id']}", headers=auth)
        assert got.status_code == 200
        hits = client.post(f"/v1/users/{user}/search", json={"query": "tea"}, headers=auth)
        assert hits.status_code == 200
    assert client.get("/v1/users/alice/memories/NOPE", headers=auth).status_code == 404
    client.get("/no/such/route")
    text = client.get("/metrics").text
    return text, _samples(text)


def test_requests_are_counted_per_route_template_and_status(
    metrics: tuple[str, list[Sample]],
) -> None:
    # One series per route template and status: both users' calls land in it.
    count = {
        (labels["route"], labels["status"]): value
        for name, labels, value in metrics[1]
        if name == "memlane_requests_total" and labels["method"] in ("GET", "POST")
    }
    assert count[("/v1/users/{user_id}/memories", "201")] == 2
    assert count[(ONE, "200")] == 2 and count[(ONE, "404")] == 1
    assert count[("unmatched", "404")] == 1


def test_latency_is_a_histogram_per_route(metrics: tuple[str, list[Sample]]) -> None:
    buckets = [
        labels["le"]
        for name, labels, _ in metrics[1]
        if name == "memlane_request_seconds_bucket" and labels["route"] == ONE
    ]
    assert "+Inf" in buckets and len(buckets) > 5


def test_metric_labels_carry_no_user_memory_or_tenant_id(
    metrics: tuple[str, list[Sample]],
) -> None:
    assert not re.search(r"alice|bob|acme|NOPE|/no/such", metrics[0])


def test_the_library_calls_of_the_routes_are_timed_by_name(
    metrics: tuple[str, list[Sample]],
) -> None:
    ops = {
        labels["op"]: value
        for name, labels, value in metrics[1]
        if name == "memlane_memory_call_seconds_count"
    }
    assert ops["add"] == 2 and ops["search"] == 2 and ops["get"] == 3


def test_store_transactions_and_embedding_calls_inside_them_are_timed(
    metrics: tuple[str, list[Sample]],
) -> None:
    samples = metrics[1]
    store = {
        labels["op"]: value
        for name, labels, value in samples
        if name == "memlane_store_seconds_count"
    }
    assert store["VectorSearch"] == 2 and store["GetRecords"] >= 3, store
    embedded = {name: value for name, _, value in samples if name.startswith("memlane_embed")}
    # "Likes tea" and "tea" are embedded once each: the second user's add and search find
    # their vectors in the store's embedding cache (GetEmbeddings).
    assert embedded["memlane_embedding_seconds_count"] == 2
    assert embedded["memlane_embedded_texts_total"] == 2
    # The sparse encoder alone: alice's memory's terms, then her query's (her first search
    # learns that her memories have terms; bob's finds the query's in the cache).
    sparse = {name: value for name, _, value in samples if name.startswith("memlane_sparse")}
    assert sparse["memlane_sparse_seconds_count"] == 2


def test_a_summary_by_the_chat_model_is_timed(tmp_path: Path) -> None:
    chat = ChatServer().start()
    memory = AsyncMemory(f"sqlite:///{tmp_path / 'm.db'}", embedder=FakeEmbedder())
    blocking = Memory(memory.store, embedder=memory.embedder)
    manager = MemoryManager(blocking, OpenAIChat(base_url=chat.base_url, model="m"))
    keys = KeyStore(memory.store)
    key, _ = keys.create("acme")
    auth = {"Authorization": f"Bearer {key}"}
    try:
        with TestClient(create_app(memory, keys, manager=manager, mcp=False)) as client:
            said = {"messages": [{"role": "user", "content": "Plan my trip to Oslo"}]}
            client.post("/v1/users/alice/sessions/s1/messages", json=said, headers=auth)
            chat.queue({"summary": "Trip to Oslo being planned."})
            made = client.post("/v1/users/alice/sessions/s1/summary", headers=auth)
            assert made.status_code == 200, made.text
            samples = _samples(client.get("/metrics").text)
    finally:
        manager.close()
        blocking.close()
        chat.stop()
    timed = {
        labels["op"]: value
        for name, labels, value in samples
        if name == "memlane_memory_call_seconds_count"
    }
    assert timed["manager.summarize_session"] == 1 and timed["add_messages"] == 1
    # The model call itself, under the library call.
    assert ("memlane_llm_seconds_count", {}, 1.0) in samples
    assert ("memlane_jobs_unfinished", {}, 0.0) in samples
