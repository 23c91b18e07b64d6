"""The MCP server as a client sees it, through the MCP SDK's own client: tool names and
annotations, the user's memories as resources, and servers bound to one user (stdio
``memlane mcp --user U``, HTTP ``/mcp/me/``) whose tools have no ``user_id`` and reach no
one else. Real subprocesses on stdio and real uvicorn on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.servers import memlane_serve

from helpers import example_env, run_example
from memlane import AsyncMemory, Memory
from memlane.testing import FakeEmbedder

pytest.importorskip("mcp")

TOOLS = [
    "add_memory", "build_context", "entity_neighbors", "entity_relations", "forget_memory",
    "list_entities", "recall", "remember", "search_memories",
]  # fmt: skip
WHOLE_USER = {"build_context", "list_entities", "entity_relations", "entity_neighbors"}
READ_ONLY = {"search_memories", "recall", *WHOLE_USER}
DESTRUCTIVE = {"forget_memory", "remember"}
IDEMPOTENT = {*READ_ONLY, "forget_memory", "remember"}


def _data(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content[0].text
    data: dict[str, Any] = result.structured_content
    return data


def _error(result: Any) -> str:
    assert result.is_error
    text: str = result.content[0].text
    return text


def _check_tools(tools: list[Any], *, takes_user: bool) -> None:
    """Every tool is annotated as what it does, and declares user_id only when it may
    name a user."""
    assert sorted(t.name for t in tools) == TOOLS
    for tool in tools:
        hints = tool.annotations
        assert hints is not None and hints.title, tool.name
        assert hints.read_only_hint is (tool.name in READ_ONLY), tool.name
        assert hints.open_world_hint is False, tool.name
        assert hints.idempotent_hint is (tool.name in IDEMPOTENT), tool.name
        if tool.name not in READ_ONLY:
            assert hints.destructive_hint is (tool.name in DESTRUCTIVE), tool.name
        assert ("user_id" in tool.input_schema["properties"]) is takes_user, tool.name
        if takes_user:
            assert "user_id" not in tool.input_schema.get("required", [])  # checked by the key


def _seed(store: str) -> dict[str, str]:
    """Two users' memories in one store, written through the Python API."""
    with Memory(store, embedder=FakeEmbedder()) as memory:
        return {
            "alice": memory.add("Alice plays the cello", user_id="alice").id,
            "bob": memory.add("Bob's cello is a secret", user_id="bob").id,
            "bob_fact": memory.remember("locker_code", "4711", user_id="bob").id,
        }


# ---------------------------------------------------------------------------- stdio


def _stdio(store: str, *args: str) -> Any:
    from mcp import StdioServerParameters

    env = {k: v for k, v in os.environ.items() if k.startswith(("PATH", "PYTHONPATH", "HF_"))}
    env.update(MEMLANE_STORE=store, MEMLANE_EMBEDDER="fake", HF_HUB_OFFLINE="1")
    return StdioServerParameters(
        command=sys.executable, args=["-m", "memlane.cli", "mcp", *args], env=env
    )


Scenario = Callable[[Any, dict[str, str]], Awaitable[None]]


def _as_alice(tmp_path: Path, scenario: Scenario) -> tuple[str, dict[str, str]]:
    """Seed a store, run ``scenario(client, ids)`` against `memlane mcp --user alice` on
    stdio, and return the store and the seeded ids."""
    from mcp import Client

    store = f"sqlite:///{tmp_path / 'm.db'}"
    ids = _seed(store)

    async def run() -> None:
        async with Client(_stdio(store, "--user", "alice")) as c:
            await scenario(c, ids)

    asyncio.run(run())
    return store, ids


def test_stdio_server_bound_to_a_user_has_no_user_argument_and_finds_only_hers(
    tmp_path: Path,
) -> None:
    async def scenario(c: Any, ids: dict[str, str]) -> None:
        _check_tools((await c.list_tools()).tools, takes_user=False)
        found = _data(await c.call_tool("search_memories", {"query": "cello", "limit": 10}))
        assert [m["memory_id"] for m in found["memories"]] == [ids["alice"]]

    _as_alice(tmp_path, scenario)


def test_stdio_remember_is_idempotent_and_recall_reads_only_the_users_facts(
    tmp_path: Path,
) -> None:
    async def scenario(c: Any, ids: dict[str, str]) -> None:
        # remember is Memory.remember: a keyed fact, key -> value, read back by recall.
        first = _data(await c.call_tool("remember", {"key": "seat", "value": "aisle"}))
        again = _data(await c.call_tool("remember", {"key": "seat", "value": "aisle"}))
        assert again["memory_id"] == first["memory_id"]  # idempotent, as annotated
        _data(await c.call_tool("remember", {"key": "seat", "value": {"row": 12}}))
        assert _data(await c.call_tool("recall", {"key": "seat"}))["value"] == {"row": 12}
        # Bob's keyed fact of the same store is not Alice's.
        assert _data(await c.call_tool("recall", {"key": "locker_code"}))["value"] is None

    store, _ = _as_alice(tmp_path, scenario)
    with Memory(store, embedder=FakeEmbedder()) as memory:  # nothing of Bob's changed
        assert memory.recall("locker_code", user_id="bob") == "4711"
        assert memory.recall("seat", user_id="alice") == {"row": 12}


def test_stdio_search_as_of_finds_what_was_true_then(tmp_path: Path) -> None:
    """Alice lived in London until June 2024 (written then), then in Paris: the tool's
    ``as_of`` finds each in its time, never Bob's, and a bad date is an error."""
    from datetime import UTC, datetime

    from mcp import Client

    from memlane.testing import FixedClock

    store = f"sqlite:///{tmp_path / 'm.db'}"
    clock = FixedClock(datetime(2024, 1, 10, tzinfo=UTC))
    with Memory(store, embedder=FakeEmbedder(), clock=clock) as memory:
        london = memory.add("Alice lives in London", user_id="alice")
        memory.add("Bob lives in London", user_id="bob")
        clock.now = datetime(2024, 6, 1, tzinfo=UTC)
        paris = memory.supersede(london.id, "Alice lives in Paris", user_id="alice")

    async def ids(c: Any, when: str) -> list[str]:
        said = {"query": "who lives in London", "limit": 10, "as_of": when}
        return [
            m["memory_id"] for m in _data(await c.call_tool("search_memories", said))["memories"]
        ]

    async def run() -> None:
        async with Client(_stdio(store, "--user", "alice")) as c:
            assert await ids(c, "2024-03-01") == [london.id]
            assert await ids(c, "2024-07-01T00:00:00+02:00") == [paris.id]
            assert await ids(c, "2023-12-31") == []
            said = {"query": "London", "as_of": "last spring"}
            error = _error(await c.call_tool("search_memories", said))
            assert "ValidationError" in error and "as_of" in error

    asyncio.run(run())


def test_stdio_server_bound_to_a_user_refuses_a_user_id_argument(tmp_path: Path) -> None:
    async def scenario(c: Any, ids: dict[str, str]) -> None:
        # Naming another user is refused, not ignored.
        for call in (
            ("search_memories", {"query": "cello", "user_id": "bob"}),
            ("recall", {"key": "locker_code", "user_id": "bob"}),
        ):
            assert "unknown argument(s) ['user_id']" in _error(await c.call_tool(*call))

    _as_alice(tmp_path, scenario)


def test_stdio_forget_is_idempotent_and_cannot_reach_another_user(tmp_path: Path) -> None:
    async def scenario(c: Any, ids: dict[str, str]) -> None:
        added = _data(await c.call_tool("add_memory", {"text": "Alice takes the train"}))
        for _ in range(2):  # idempotent, as annotated
            gone = {"memory_id": added["memory_id"], "reason": "test"}
            assert _data(await c.call_tool("forget_memory", gone)) == {
                "forgotten": added["memory_id"]
            }
        theirs = _error(await c.call_tool("forget_memory", {"memory_id": ids["bob"]}))
        assert "NotFoundError" in theirs

    store, ids = _as_alice(tmp_path, scenario)
    with Memory(store, embedder=FakeEmbedder()) as memory:  # nothing of Bob's changed
        assert memory.get(ids["bob"], user_id="bob").deleted_at is None


def test_stdio_resources_are_the_users_current_memories_only(tmp_path: Path) -> None:
    async def scenario(c: Any, ids: dict[str, str]) -> None:
        added = _data(await c.call_tool("add_memory", {"text": "Alice takes the train"}))
        await c.call_tool("forget_memory", {"memory_id": added["memory_id"], "reason": "test"})
        listed = [r.uri for r in (await c.list_resources()).resources]
        assert listed == ["memlane://memories"]
        page = json.loads((await c.read_resource("memlane://memories")).contents[0].text)
        mine = {m["memory_id"] for m in page["memories"]}
        assert ids["alice"] in mine and added["memory_id"] not in mine  # forgotten
        assert not mine & {ids["bob"], ids["bob_fact"]}
        one = await c.read_resource(f"memlane://memories/{ids['alice']}")
        assert json.loads(one.contents[0].text)["text"] == "Alice plays the cello"
        for other in (ids["bob"], ids["bob_fact"]):
            with pytest.raises(Exception, match="NotFoundError"):
                await c.read_resource(f"memlane://memories/{other}")

    _as_alice(tmp_path, scenario)


def test_stdio_graph_tools_read_the_bound_users_entities_only(tmp_path: Path) -> None:
    from mcp import Client

    store = f"sqlite:///{tmp_path / 'm.db'}"
    with Memory(store, embedder=FakeEmbedder()) as memory:
        met = memory.add("I met Jon Ross in Paris.", user_id="alice")
        memory.add("Everyone in Paris knows Bob Hart.", user_id="alice")
        memory.add("Carla Diaz moved to Rome.", user_id="bob")

    async def scenario() -> None:
        async with Client(_stdio(store, "--user", "alice")) as c:
            listed = _data(await c.call_tool("list_entities", {}))
            assert {e["name"] for e in listed["entities"]} == {"Jon Ross", "Paris", "Bob Hart"}
            related = _data(await c.call_tool("entity_relations", {"entity": "jon ross"}))
            (edge,) = related["relations"]
            assert {edge["subject"], edge["object"]} == {"Jon Ross", "Paris"}
            assert edge["memory_ids"] == [met.id]
            near = _data(await c.call_tool("entity_neighbors", {"entity": "Jon Ross", "depth": 2}))
            assert [(n["name"], n["depth"]) for n in near["neighbors"]] == [
                ("Paris", 1),
                ("Bob Hart", 2),
            ]
            assert "NotFoundError" in _error(
                await c.call_tool("entity_neighbors", {"entity": "Carla Diaz"})
            )

    asyncio.run(scenario())


def test_stdio_server_bound_to_an_agent(tmp_path: Path) -> None:
    """`--agent` binds the agent too: no agent_id argument, and another agent's memory is
    as absent as one that never existed."""
    from mcp import Client

    store = f"sqlite:///{tmp_path / 'm.db'}"
    with Memory(store, embedder=FakeEmbedder()) as memory:
        other = memory.add("Erin's cello, planner's note", user_id="erin", agent_id="planner")
        shared = memory.add("Erin's cello is old", user_id="erin")

    async def scenario() -> None:
        async with Client(_stdio(store, "--user", "erin", "--agent", "bot")) as c:
            tools = (await c.list_tools()).tools
            # A whole-user read is not the agent's to make (memlane.access): not offered.
            assert sorted(t.name for t in tools) == [n for n in TOOLS if n not in WHOLE_USER]
            for tool in tools:
                assert not {"user_id", "agent_id"} & set(tool.input_schema["properties"])
            mine = _data(await c.call_tool("add_memory", {"text": "Erin's cello, bot's note"}))
            found = _data(await c.call_tool("search_memories", {"query": "cello", "limit": 10}))
            assert {m["memory_id"] for m in found["memories"]} == {mine["memory_id"], shared.id}
            page = json.loads((await c.read_resource("memlane://memories")).contents[0].text)
            assert {m["memory_id"] for m in page["memories"]} == {mine["memory_id"], shared.id}
            assert page["memories"][0]["agent_id"] == "bot"
            with pytest.raises(Exception, match="NotFoundError"):
                await c.read_resource(f"memlane://memories/{other.id}")

    asyncio.run(scenario())


def test_bad_bound_user_is_refused_before_serving(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "memlane.cli", "mcp", "--user", ""],
        env={**os.environ, "MEMLANE_STORE": f"sqlite:///{tmp_path / 'm.db'}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "user_id" in done.stderr
    assert not (tmp_path / "m.db").exists()


def test_list_resource_pages(tmp_path: Path) -> None:
    """The list resource says where the next page starts: no silent cap."""
    from mcp import Client

    from memlane.server.mcp import PAGE_SIZE, build_mcp, stdio_resolver

    memory = AsyncMemory("memory://", embedder=FakeEmbedder())

    async def scenario() -> set[str]:
        for i in range(PAGE_SIZE + 3):
            await memory.add(f"note number {i}", user_id="carol")
        seen: set[str] = set()
        async with Client(build_mcp(memory, stdio_resolver("carol"))) as c:
            uri: str | None = "memlane://memories"
            while uri is not None:
                page = json.loads((await c.read_resource(uri)).contents[0].text)
                seen |= {m["memory_id"] for m in page["memories"]}
                uri = page.get("next")
        return seen

    assert len(asyncio.run(scenario())) == PAGE_SIZE + 3


# ---------------------------------------------------------------------------- HTTP


@dataclass
class Served:
    base: str
    store: str
    ids: dict[str, str]
    alice_key: str  # tenant local, limited to alice
    all_key: str  # tenant local, every user


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from memlane.server.keys import KeyStore

    tmp = tmp_path_factory.mktemp("mcp-http")
    store = f"sqlite:///{tmp / 'served.db'}"
    ids = _seed(store)
    with Memory(store, embedder=FakeEmbedder()) as memory:
        keys = KeyStore(memory.store)
        alice_key = keys.create("local", users=["alice"])[0]
        all_key = keys.create("local")[0]
    env = {
        **os.environ,
        "MEMLANE_STORE": store,
        "MEMLANE_EMBEDDER": "fake",
        "MEMLANE_DATA_DIR": str(tmp / "data"),
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("MEMLANE_LLM_BASE_URL", None)
    env.pop("MEMLANE_REDIS_URL", None)
    with memlane_serve(env) as base:
        yield Served(base, store, ids, alice_key, all_key)


def _http(served: Served, path: str, key: str) -> Any:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"})
    return Client(streamable_http_client(served.base + path, http_client=http))


def test_http_endpoint_bound_to_the_keys_user(served: Served) -> None:
    ids = served.ids

    async def scenario() -> None:
        async with _http(served, "/mcp/me/", served.alice_key) as c:
            _check_tools((await c.list_tools()).tools, takes_user=False)
            found = _data(await c.call_tool("search_memories", {"query": "cello", "limit": 10}))
            assert [m["memory_id"] for m in found["memories"]] == [ids["alice"]]
            bob = await c.call_tool("search_memories", {"query": "cello", "user_id": "bob"})
            assert "unknown argument(s) ['user_id']" in _error(bob)
            assert "NotFoundError" in _error(
                await c.call_tool("forget_memory", {"memory_id": ids["bob"]})
            )
            page = json.loads((await c.read_resource("memlane://memories")).contents[0].text)
            assert [m["memory_id"] for m in page["memories"]] == [ids["alice"]]
            with pytest.raises(Exception, match="NotFoundError"):
                await c.read_resource(f"memlane://memories/{ids['bob']}")
        # A key reaching every user cannot use the one-user endpoint: who would it serve?
        async with _http(served, "/mcp/me/", served.all_key) as c:
            refused = await c.call_tool("search_memories", {"query": "cello"})
            assert "key limited to one user" in _error(refused)
            with pytest.raises(Exception, match="AccessDeniedError"):
                await c.read_resource("memlane://memories")

    asyncio.run(scenario())
    anonymous = httpx.post(
        served.base + "/mcp/me/", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}
    )
    assert anonymous.status_code == 401


def test_http_multi_user_endpoint(served: Served) -> None:
    ids = served.ids

    async def scenario() -> None:
        async with _http(served, "/mcp/", served.alice_key) as c:
            _check_tools((await c.list_tools()).tools, takes_user=True)
            templates = {
                t.uri_template for t in (await c.list_resource_templates()).resource_templates
            }
            assert templates == {
                "memlane://users/{user_id}/memories{?cursor}",
                "memlane://users/{user_id}/memories/{memory_id}",
            }
            page = await c.read_resource("memlane://users/alice/memories")
            assert [m["memory_id"] for m in json.loads(page.contents[0].text)["memories"]] == [
                ids["alice"]
            ]
            for uri in (
                "memlane://users/bob/memories",
                f"memlane://users/bob/memories/{ids['bob']}",
            ):
                with pytest.raises(Exception, match="may not access user 'bob'"):
                    await c.read_resource(uri)
            bob = await c.call_tool("recall", {"user_id": "bob", "key": "locker_code"})
            assert "may not access user 'bob'" in _error(bob)
            unnamed = await c.call_tool("recall", {"key": "locker_code"})
            assert "user_id is required" in _error(unnamed)
        async with _http(served, "/mcp/", served.all_key) as c:
            fact = _data(await c.call_tool("recall", {"user_id": "bob", "key": "locker_code"}))
            assert fact["value"] == "4711"
            one = await c.read_resource(f"memlane://users/bob/memories/{ids['bob_fact']}")
            view = json.loads(one.contents[0].text)
            assert view["key"] == "locker_code" and view["value"] == "4711"
            assert "user_id" not in view  # the store's id (a tenant's prefix) is not shown

    asyncio.run(scenario())


def test_example_mcp_client_runs(tmp_path: Path) -> None:
    """examples/mcp_client.py, as docs/integrations/mcp.md points to it."""
    env = example_env(tmp_path / "m.db")
    done = run_example("mcp_client.py", "--user", "alice", env=env)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "tool forget_memory    destructive" in out and "tool recall           read-only" in out
    assert "'value': 'Zurich HB'" in out and "Prefers aisle seats on trains" in out
    assert "resource memlane://memories: 2 memories" in out
    with Memory(env["MEMLANE_STORE"], embedder=FakeEmbedder()) as memory:
        assert memory.recall("home_station", user_id="alice") == "Zurich HB"


def test_tool_errors_follow_the_rest_error_table() -> None:
    """An embedding failure's text (it can name a model, a host or a path) reaches neither
    a REST client nor an MCP client: both say only what failed, from one error table."""
    from mcp import Client

    from memlane.server.mcp import build_mcp, stdio_resolver

    embedder = FakeEmbedder()
    memory = AsyncMemory("memory://", embedder=embedder)

    async def scenario() -> tuple[str, str]:
        async with Client(build_mcp(memory, stdio_resolver("carol"))) as c:
            denied = _error(await c.call_tool("add_memory", {"text": "x", "kind": "summary"}))
            embedder.fail = True
            failed = _error(await c.call_tool("search_memories", {"query": "cello"}))
        return denied, failed

    invalid, failed = asyncio.run(scenario())
    assert invalid.endswith(": ValidationError: kind must be fact, preference or procedure")
    assert failed.endswith(": EmbeddingError: the server's embedding model or configuration failed")
    assert "fake embedder" not in failed


def test_http_calls_are_recorded_as_the_client_and_its_key(served: Served) -> None:
    async def scenario() -> None:
        async with _http(served, "/mcp/", served.all_key) as c:
            _data(await c.call_tool("recall", {"key": "locker_code", "user_id": "bob"}))

    asyncio.run(scenario())
    with Memory(served.store, embedder=FakeEmbedder()) as memory:
        last = memory.audit("bob", limit=1000).items[-1]
    key_id = hashlib.sha256(served.all_key.encode()).hexdigest()[:16]
    client, key = last.actor.split(" ")
    assert last.action == "recall" and last.counts == {"results": 1}
    assert client.startswith("mcp:") and key == f"api:{key_id}"
