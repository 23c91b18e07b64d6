"""The REST API in-process (ASGI client): every route, auth, tenant isolation, bad bodies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from chat_server import ChatServer
from memlane import AsyncMemory, Memory
from memlane.llm import OpenAIChat
from memlane.manager import MemoryManager
from memlane.server import KeyStore, create_app
from memlane.testing import FakeEmbedder


class Env:
    def __init__(self, client: TestClient, keys: KeyStore, server: ChatServer) -> None:
        self.client = client
        self.keys = keys
        self.server = server
        self.acme, _ = keys.create("acme")
        self.acme_alice, _ = keys.create("acme", users=["alice"])
        self.acme_bot, _ = keys.create("acme", agents=["bot"])
        self.rival, _ = keys.create("rival")

    def call(self, key: str | None, method: str, path: str, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        headers.update(kw.pop("headers", {}))
        return self.client.request(method, path, headers=headers, **kw)


@pytest.fixture()
def env(tmp_path: Any) -> Iterator[Env]:
    chat = ChatServer().start()
    memory = AsyncMemory(f"sqlite:///{tmp_path / 'srv.db'}", embedder=FakeEmbedder())
    blocking = Memory(memory.store, embedder=memory.embedder)
    manager = MemoryManager(blocking, OpenAIChat(base_url=chat.base_url, model="m"))
    keys = KeyStore(memory.store)
    app = create_app(memory, keys, manager=manager, max_body_bytes=50_000)
    with TestClient(app) as client:
        yield Env(client, keys, chat)
    manager.close()
    blocking.close()
    chat.stop()


def _seed(env: Env, key: str, user: str = "alice") -> dict[str, Any]:
    r = env.call(key, "POST", f"/v1/users/{user}/memories", json={"text": "Likes green tea"})
    assert r.status_code == 201, r.text
    env.call(
        key,
        "POST",
        f"/v1/users/{user}/sessions/s1/messages",
        json={"messages": [{"role": "user", "content": "Plan my trip to Oslo"}]},
    )
    body: dict[str, Any] = r.json()
    return body


U = "/v1/users/alice"


def _edit_history(env: Env) -> tuple[str, dict[str, Any]]:
    """Alice's seeded memory updated once, then superseded: its id and the new record."""
    k = env.acme
    mid = _seed(env, k)["id"]
    env.call(
        k, "PATCH", f"{U}/memories/{mid}", json={"text": "Likes jasmine tea", "expected_version": 1}
    )
    new = env.call(
        k, "POST", f"{U}/memories/{mid}/supersede", json={"text": "Likes coffee now"}
    ).json()
    return mid, new


def test_memory_routes_work_for_their_owner(env: Env) -> None:
    k, u = env.acme, U
    rec = _seed(env, k)
    assert rec["user_id"] == "alice" and "::" not in json.dumps(rec)
    mid = rec["id"]
    assert env.call(k, "GET", f"{u}/memories/{mid}").json()["text"] == "Likes green tea"
    page = env.call(k, "GET", f"{u}/memories", params={"limit": 10, "kind": ["fact"]}).json()
    assert [m["id"] for m in page["items"]] == [mid]
    upd = env.call(
        k, "PATCH", f"{u}/memories/{mid}", json={"text": "Likes jasmine tea", "expected_version": 1}
    )
    assert upd.status_code == 200 and upd.json()["version"] == 2
    stale = env.call(k, "PATCH", f"{u}/memories/{mid}", json={"text": "x", "expected_version": 1})
    assert stale.status_code == 409 and stale.json()["type"] == "ConflictError"
    new = env.call(
        k, "POST", f"{u}/memories/{mid}/supersede", json={"text": "Likes coffee now"}
    ).json()
    hist = env.call(k, "GET", f"{u}/memories/{mid}/history").json()["events"]
    assert [e["action"] for e in hist] == ["add", "update", "supersede"]
    hits = env.call(k, "POST", f"{u}/search", json={"query": "coffee", "explain": True}).json()[
        "hits"
    ]
    assert hits[0]["record"]["id"] == new["id"] and hits[0]["explanation"]
    assert env.call(k, "DELETE", f"{u}/memories/{new['id']}").json()["deleted_at"]
    assert env.call(k, "POST", f"{u}/memories/{new['id']}/restore").json()["deleted_at"] is None


def test_session_routes_work_for_their_owner(env: Env) -> None:
    k, u = env.acme, U
    _seed(env, k)
    sessions = env.call(k, "GET", f"{u}/sessions").json()["items"]
    assert [s["session_id"] for s in sessions] == ["s1"]
    runs = env.call(k, "GET", f"{u}/sessions/s1/messages", params={"last_runs": 1}).json()["runs"]
    assert runs[0]["messages"][0]["content"] == "Plan my trip to Oslo"
    st = env.call(
        k, "PUT", f"{u}/sessions/s1/state", json={"data": {"step": 1}, "expected_version": 0}
    )
    assert st.json()["version"] == 1
    lost = env.call(
        k, "PUT", f"{u}/sessions/s1/state", json={"data": {"step": 9}, "expected_version": 0}
    )
    assert lost.status_code == 409
    assert env.call(k, "GET", f"{u}/sessions/s1/state").json()["data"] == {"step": 1}
    assert len(env.call(k, "GET", f"{u}/sessions/s1/state/history").json()["versions"]) == 1


def test_summary_route_writes_and_reads_the_sessions_summary(env: Env) -> None:
    k, u = env.acme, U
    _seed(env, k)
    env.server.queue({"summary": "Trip to Oslo being planned."})
    summary = env.call(k, "POST", f"{u}/sessions/s1/summary").json()
    assert summary["text"] == "Trip to Oslo being planned."
    assert env.call(k, "GET", f"{u}/sessions/s1/summary").json()["id"] == summary["id"]


def test_context_route_fits_its_budget(env: Env) -> None:
    k, u = env.acme, U
    _seed(env, k)
    ctx = env.call(
        k, "POST", f"{u}/context", json={"budget": 400, "query": "tea", "session_id": "s1"}
    )
    assert ctx.status_code == 200 and ctx.json()["tokens"] <= 400


def test_learn_route_queues_a_job_the_jobs_routes_show(env: Env) -> None:
    k, u = env.acme, U
    env.server.queue({"memories": [{"text": "Alice is flying to Oslo"}]})
    job = env.call(
        k, "POST", f"{u}/learn", json={"messages": [{"role": "user", "content": "Oslo!"}]}
    )
    assert job.status_code == 202 and job.json()["user_id"] == "alice"
    assert env.call(k, "GET", f"{u}/jobs/{job.json()['id']}").json()["kind"] == "process"
    assert len(env.call(k, "GET", f"{u}/jobs").json()["jobs"]) == 1


def test_export_delete_and_import_bring_a_user_back(env: Env) -> None:
    k, u = env.acme, U
    mid, new = _edit_history(env)
    exported = env.call(k, "GET", f"{u}/export")
    assert exported.headers["content-type"].startswith("application/x-ndjson")
    assert "acme::" not in exported.text
    assert env.call(k, "GET", "/v1/users").json()["users"] == ["alice"]
    assert env.call(k, "DELETE", f"{u}/sessions/s1").json()["deleted"] == 1
    gone = env.call(k, "DELETE", u).json()
    assert gone["counts"]["records"] >= 1
    again = env.call(k, "POST", "/v1/users/alice/import", content=exported.content)
    assert again.status_code == 200, again.text
    assert env.call(k, "GET", f"{u}/memories/{mid}").json()["superseded_by"] == new["id"]
    assert env.call(k, "GET", f"{u}/memories/{new['id']}").json()["text"] == "Likes coffee now"


def test_service_routes(env: Env) -> None:
    assert env.client.get("/health").json()["status"] == "ok"
    spec = env.client.get("/openapi.json").json()
    assert "/v1/users/{user_id}/search" in spec["paths"] and spec["info"]["title"] == "memlane"
    env.call(env.acme, "GET", "/v1/users")
    text = env.client.get("/metrics").text
    # prometheus_client writes labels in alphabetical order and values as floats ("1.0").
    assert 'memlane_requests_total{method="GET",route="/v1/users",status="200"} 1.0' in text
    assert 'memlane_request_seconds_bucket{le="0.005",method="GET",route="/v1/users"}' in text
    assert "memlane_request_seconds_count" in text and "memlane_jobs_unfinished 0" in text
    assert "<title>memlane dashboard</title>" in env.client.get("/dashboard").text


def test_authentication(env: Env) -> None:
    for key in (None, "ml_wrong", "not-even-a-key"):
        r = env.call(key, "GET", "/v1/users")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.json()["type"] == "Unauthorized"
    (record,) = [r for r in env.keys.list() if r.tenant == "rival"]
    assert env.call(env.rival, "GET", "/v1/users").status_code == 200
    env.keys.revoke(record.key_id)
    assert env.call(env.rival, "GET", "/v1/users").status_code == 401
    assert env.client.post("/mcp/", json={}).status_code == 401


def _rows(env: Env, key: str, user: str) -> list[str]:
    """The user's export without its header line (which carries the export time)."""
    lines = env.call(key, "GET", f"/v1/users/{user}/export").text.splitlines()
    assert json.loads(lines[0])["type"] == "header"
    return lines[1:]


def _routes(env: Env) -> list[tuple[str, str]]:
    out = []
    for route in env.client.app.routes:  # type: ignore[attr-defined]
        if isinstance(route, APIRoute) and "{user_id}" in route.path:
            out += [(m, route.path) for m in sorted(route.methods)]
    return out


def _body_for(path: str) -> dict[str, Any]:
    if path.endswith("/memories") or path.endswith("/supersede"):
        return {"text": "pwned"}
    if path.endswith("/search"):
        return {"query": "tea"}
    if path.endswith("/messages") or path.endswith("/learn"):
        return {"messages": [{"role": "user", "content": "pwned"}]}
    if path.endswith("/state"):
        return {"data": {"x": 1}, "expected_version": 0}
    if path.endswith("/context"):
        return {"budget": 100}
    return {}


def test_no_route_crosses_a_scope(env: Env) -> None:
    env.server.responder = lambda body: {"summary": "a summary", "memories": []}
    victim = _seed(env, env.acme, "bob")
    rival_rec = _seed(env, env.rival, "alice")  # same user name, other tenant
    job = env.call(env.acme, "GET", "/v1/users/bob/jobs").json()
    ids = {
        "memory_id": victim["id"],
        "session_id": "s1",
        "job_id": job["jobs"][0]["id"] if job["jobs"] else "01JOBGUESS",
    }
    before = _rows(env, env.acme, "bob")
    routes = _routes(env)
    assert len(routes) >= 25
    for method, path in routes:
        filled = path
        for name, value in ids.items():
            filled = filled.replace("{" + name + "}", value)
        # A key limited to alice may not touch bob through any route.
        r = env.call(
            env.acme_alice, method, filled.replace("{user_id}", "bob"), json=_body_for(path)
        )
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        # Another tenant's key never sees acme's bob: its "bob" is empty, its ids unknown.
        r = env.call(env.rival, method, filled.replace("{user_id}", "bob"), json=_body_for(path))
        assert r.status_code < 500, (method, path, r.text)
        assert "Likes green tea" not in r.text and "Plan my trip" not in r.text, (method, path)
    # Guessed ids across tenants: 404, and acme's data is unchanged.
    r = env.call(env.rival, "GET", f"/v1/users/alice/memories/{victim['id']}")
    assert r.status_code == 404
    r = env.call(env.acme, "GET", f"/v1/users/bob/memories/{rival_rec['id']}")
    assert r.status_code == 404
    assert _rows(env, env.acme, "bob") == before
    assert env.call(env.rival, "GET", "/v1/users").json()["users"] == ["alice", "bob"]
    assert "bob" not in env.call(env.acme_alice, "GET", "/v1/users").json()["users"]


def test_agent_limited_keys(env: Env) -> None:
    k = env.acme_bot
    assert env.call(k, "POST", "/v1/users/carol/memories", json={"text": "x"}).status_code == 403
    mine = env.call(
        k, "POST", "/v1/users/carol/memories", json={"text": "Bot note", "agent_id": "bot"}
    )
    assert mine.status_code == 201
    # The one rule (memlane.access): the bot sees its own and the shared memories, never
    # another agent's — in listings, search and by id alike.
    shared = env.call(
        env.acme, "POST", "/v1/users/carol/memories", json={"text": "Human note"}
    ).json()
    other = env.call(
        env.acme, "POST", "/v1/users/carol/memories", json={"text": "Other note", "agent_id": "o"}
    ).json()
    bot = {"agent_id": "bot"}
    listed = env.call(k, "GET", "/v1/users/carol/memories", params=bot).json()
    assert sorted(m["text"] for m in listed["items"]) == ["Bot note", "Human note"]
    found = env.call(k, "POST", "/v1/users/carol/search", json={"query": "note", **bot}).json()
    assert sorted(h["record"]["text"] for h in found["hits"]) == ["Bot note", "Human note"]
    got = env.call(k, "GET", f"/v1/users/carol/memories/{shared['id']}", params=bot)
    assert got.status_code == 200
    got = env.call(k, "GET", f"/v1/users/carol/memories/{other['id']}", params=bot)
    assert got.status_code == 404
    # A read-only key reads and is refused every write.
    reader, _ = env.keys.create("acme", permissions=["read"])
    assert env.call(reader, "GET", "/v1/users/carol/memories").status_code == 200
    gone = env.call(reader, "DELETE", f"/v1/users/carol/memories/{shared['id']}")
    assert gone.status_code == 403 and gone.json()["type"] == "Forbidden"
    assert env.call(k, "POST", "/v1/users/carol/context", json={"budget": 50}).status_code == 403
    assert env.call(k, "GET", "/v1/users").status_code == 403


JSON = {"Content-Type": "application/json"}
BAD_BODIES = {
    "text not a string": ("POST", f"{U}/memories", {"json": {"text": 42}}),
    "importance a word": ("POST", f"{U}/memories", {"json": {"text": "x", "importance": "high"}}),
    "unknown kind": ("POST", f"{U}/memories", {"json": {"text": "x", "kind": "spell"}}),
    "unknown field": ("POST", f"{U}/memories", {"json": {"text": "x", "unknown": 1}}),
    "empty text": ("POST", f"{U}/memories", {"json": {"text": ""}}),
    "importance over 1": ("POST", f"{U}/memories", {"json": {"text": "x", "importance": 7}}),
    "not utf-8": (
        "POST", f"{U}/memories", {"content": b'{"text": "caf\xe9 \xff"}', "headers": JSON}
    ),
    "not json": ("POST", f"{U}/memories", {"content": b"{not json", "headers": JSON}),
    "search limit 0": ("POST", f"{U}/search", {"json": {"query": "x", "limit": 0}}),
    "list limit a word": ("GET", f"{U}/memories", {"params": {"limit": "many"}}),
    "list unknown kind": ("GET", f"{U}/memories", {"params": {"kind": "spell"}}),
    "state not an object": (
        "PUT", f"{U}/sessions/s1/state", {"json": {"data": [1, 2], "expected_version": 1}}
    ),
    "negative budget": ("POST", f"{U}/context", {"json": {"budget": -5}}),
    "import bad record": (
        "POST", f"{U}/import", {"content": b'{"type": "record", "data": {"id": 1}}\n'}
    ),
    "import garbage": ("POST", f"{U}/import", {"content": b"\xff\xfe garbage"}),
    "blank user": ("POST", "/v1/users/%20/memories", {"json": {"text": "x"}}),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_a_bad_body_gets_a_4xx_and_changes_nothing(env: Env, case: str) -> None:
    method, path, kw = BAD_BODIES[case]
    _seed(env, env.acme)
    before = _rows(env, env.acme, "alice")
    r = env.call(env.acme, method, path, **kw)
    assert 400 <= r.status_code < 500, (method, path, kw, r.status_code, r.text)
    assert "Traceback" not in r.text and "error" in r.json()
    assert _rows(env, env.acme, "alice") == before


def test_a_body_over_the_limit_gets_413_even_when_chunked(env: Env) -> None:
    k, u = env.acme, U
    _seed(env, k)
    before = _rows(env, k, "alice")
    huge = {"text": "x" * 60_000}
    r = env.call(k, "POST", f"{u}/memories", json=huge)
    assert r.status_code == 413 and r.json()["type"] == "TooLarge"
    chunked = env.client.post(
        f"{u}/memories",
        content=iter([b'{"text": "', b"y" * 60_000, b'"}']),
        headers={"Authorization": f"Bearer {k}", "Content-Type": "application/json"},
    )
    assert chunked.status_code == 413
    assert _rows(env, k, "alice") == before


def test_an_import_of_another_users_rows_is_refused(env: Env) -> None:
    k, u = env.acme, U
    _seed(env, k)
    before = _rows(env, k, "alice")
    other_user_rows = env.call(k, "GET", f"{u}/export").text.replace('"alice"', '"mallory"')
    assert env.call(k, "POST", f"{u}/import", content=other_user_rows).status_code == 422
    assert _rows(env, k, "alice") == before


def test_import_cannot_borrow_another_texts_vector_or_smuggle_odd_ids(env: Env) -> None:
    k, u = env.acme, "/v1/users/alice"
    rival = env.call(env.rival, "POST", "/v1/users/bob/memories", json={"text": "PIN is 4821"})
    assert rival.status_code == 201
    from memlane.models import content_hash

    rec = _seed(env, k)
    exported = env.call(k, "GET", f"{u}/export").text.splitlines()
    line = next(r for r in exported if rec["id"] in r and '"type": "record"' in r)
    forged = json.loads(line)
    forged["data"].update(id="DECOY1", content_hash=content_hash("PIN is 4821"), text="decoy")
    r = env.call(k, "POST", f"{u}/import", content=json.dumps(forged).encode())
    assert r.status_code == 422 and "content_hash" in r.json()["error"]
    forged["data"].update(id="../../bob/memories/X", content_hash=content_hash("decoy"))
    r = env.call(k, "POST", f"{u}/import", content=json.dumps(forged).encode())
    assert r.status_code == 422 and "letters or digits" in r.json()["error"]


def test_out_of_range_numbers_dates_and_deep_json_are_4xx_not_crashes(env: Env) -> None:
    k, u, c = env.acme, "/v1/users/alice", "/v1/users/carol"
    for raw in (b'{"text": "x", "ttl_seconds": 1e300}', b'{"text": "lone \\ud800 surrogate"}'):
        r = env.call(
            k, "POST", f"{u}/memories", content=raw, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 422, (raw, r.text)
    deep = b"[" * 40_000  # under the 50 kB limit of this app, deeper than the parser goes
    assert env.call(k, "POST", f"{u}/import", content=deep).status_code == 422
    # Out-of-range numbers and dates.
    said = {"messages": [{"role": "user", "content": "hi"}]}
    env.call(k, "POST", f"{c}/sessions/s-o2/messages", json=said)
    r = env.call(k, "GET", f"{c}/sessions/s-o2/messages", params={"last_runs": 2**63})
    assert r.status_code == 422
    late = {"text": "x", "event_at": "9999-12-31T23:59:59-12:00"}
    assert env.call(k, "POST", f"{c}/memories", json=late).status_code == 422


def test_errors_never_show_a_store_side_user_id(env: Env) -> None:
    k, u = env.acme, "/v1/users/alice"
    r = env.call(k, "GET", f"{u}/memories/NOPE/history")
    assert r.status_code == 404 and "acme::" not in r.text
    # User data keeps its own "user_id".
    meta = env.call(
        k, "POST", f"{u}/memories", json={"text": "note", "metadata": {"user_id": "acme::bob"}}
    )
    assert meta.json()["metadata"] == {"user_id": "acme::bob"}


def test_errors_name_the_user_as_the_tenant_does(env: Env) -> None:
    u = "/v1/users/alice"
    for path, said in (
        (f"{u}/memories/NOPE", "no memory 'NOPE' for user 'alice'"),
        (f"{u}/memories/NOPE/history", "no history for memory 'NOPE' of user 'alice'"),
    ):
        r = env.call(env.acme, "GET", path)
        assert r.status_code == 404 and r.json() == {"error": said, "type": "NotFoundError"}
    summary = env.call(env.acme, "POST", f"{u}/sessions/empty/summary")
    assert summary.json()["error"] == "session 'empty' of user 'alice' has no messages"


def test_bogus_keys_are_not_cached_and_odd_methods_share_one_metrics_series(env: Env) -> None:
    before = len(env.keys._cache)
    for i in range(50):
        env.call(f"ml_bogus{i}", "GET", "/v1/users")
    assert len(env.keys._cache) == before
    env.client.request("X0'|~", "/health")
    assert "X0'" not in env.client.get("/metrics").text


def test_an_agent_key_cannot_write_into_another_agents_session(env: Env) -> None:
    k, bot = env.acme, env.acme_bot
    env.call(
        k,
        "POST",
        "/v1/users/carol/sessions/s-other/messages",
        json={"messages": [{"role": "user", "content": "hi"}], "agent_id": "other"},
    )
    other = "/v1/users/carol/sessions/s-other"
    said = {"messages": [{"role": "user", "content": "x"}], "agent_id": "bot"}
    assert env.call(bot, "POST", f"{other}/messages", json=said).status_code == 404
    state = {"data": {}, "expected_version": 0}
    assert env.call(bot, "PUT", f"{other}/state?agent_id=bot", json=state).status_code == 404
    runs = env.call(k, "GET", "/v1/users/carol/sessions/s-other/messages").json()["runs"]
    assert len(runs) == 1
    ok = env.call(
        bot,
        "POST",
        "/v1/users/carol/sessions/s-bot/messages",
        json={"messages": [{"role": "user", "content": "mine"}], "agent_id": "bot"},
    )
    assert ok.status_code == 201
    # Nor file a memory under another agent's session.
    sneaky = {"text": "injected", "kind": "episode", "session_id": "s-other", "agent_id": "bot"}
    assert env.call(bot, "POST", "/v1/users/carol/memories", json=sneaky).status_code == 404


def test_idempotency_keys_are_per_agent_and_reveal_nothing(env: Env) -> None:
    k, bot, c = env.acme, env.acme_bot, "/v1/users/carol"
    first = {"text": "Carol's bank PIN is 4821", "idempotency_key": "turn-1", "agent_id": "o"}
    made = env.call(k, "POST", f"{c}/memories", json=first)
    assert made.status_code == 201
    again = {"text": "hello", "agent_id": "bot", "idempotency_key": "turn-1"}
    r = env.call(bot, "POST", f"{c}/memories", json=again)
    assert r.status_code == 201 and "4821" not in r.text and r.json()["agent_id"] == "bot"
    assert r.json()["id"] != made.json()["id"]
    retry = env.call(bot, "POST", f"{c}/memories", json=again)
    assert retry.status_code == 201 and retry.json() == r.json()


def test_state_an_agent_key_writes_on_a_new_session_is_that_agents(env: Env) -> None:
    bot, c = env.acme_bot, "/v1/users/carol"
    state = {"data": {"a": 1}, "expected_version": 0}
    put = env.call(bot, "PUT", f"{c}/sessions/s-new/state?agent_id=bot", json=state)
    assert put.status_code == 200
    got = env.call(bot, "GET", f"{c}/sessions/s-new/state", params={"agent_id": "bot"})
    assert got.status_code == 200 and got.json()["data"] == {"a": 1}


def test_metadata_nested_past_the_limit_is_refused_and_listings_keep_working(env: Env) -> None:
    k, c = env.acme, "/v1/users/carol"
    deep: dict[str, Any] = {}
    cur = deep
    for _ in range(100):
        cur["a"] = {}
        cur = cur["a"]
    r = env.call(k, "POST", f"{c}/memories", json={"text": "deep", "metadata": deep})
    assert r.status_code == 422 and "nested" in r.json()["error"]
    assert env.call(k, "GET", f"{c}/memories").status_code == 200


def test_a_model_providers_error_text_stays_in_the_log(env: Env) -> None:
    from chat_server import Scripted

    k, c = env.acme, "/v1/users/carol"
    env.call(
        k,
        "POST",
        f"{c}/sessions/s1/messages",
        json={"messages": [{"role": "user", "content": "hi"}]},
    )
    env.server.queue(Scripted(status=401, content='{"error": "Incorrect API key sk-live-SECRET"}'))
    r = env.call(k, "POST", f"{c}/sessions/s1/summary")
    assert r.status_code == 503 and "SECRET" not in r.text


def test_local_users_are_reachable_with_a_local_tenant_key(env: Env) -> None:
    # Written through Python (or the CLI) as plain "alice" — no tenant prefix — on the
    # store the server serves.
    plain = Memory(env.keys.store, embedder=FakeEmbedder())
    local, _ = env.keys.create("local")
    written = plain.add("Alice keeps bees", user_id="alice")
    got = env.call(local, "GET", f"/v1/users/alice/memories/{written.id}")
    assert got.status_code == 200 and got.json()["user_id"] == "alice"
    # Other tenants' users and the key store's own records stay out of reach.
    env.call(env.acme, "POST", "/v1/users/bob/memories", json={"text": "acme's bob"})
    assert env.call(local, "GET", "/v1/users").json()["users"] == ["alice"]
    assert env.call(local, "GET", "/v1/users/acme::bob/memories").status_code == 422
    # What a local key writes is what Python reads as "alice".
    env.call(local, "POST", "/v1/users/alice/memories", json={"text": "Alice sells honey"})
    texts = {r.text for r in plain.list(user_id="alice").items}
    assert texts == {"Alice keeps bees", "Alice sells honey"}


def test_as_of_lists_searches_and_shows_history_as_it_stood(tmp_path: Any) -> None:
    """London until June 2024, then Paris: ``as_of`` on the listing, the search body and
    the history; a time without zone is a 422 that says so; an agent's key never sees
    another agent's past either."""
    from datetime import UTC, datetime

    from memlane.testing import FixedClock

    clock = FixedClock(datetime(2024, 1, 10, tzinfo=UTC))
    memory = AsyncMemory(f"sqlite:///{tmp_path / 'asof.db'}", embedder=FakeEmbedder(), clock=clock)
    keys = KeyStore(memory.store)
    key, _ = keys.create("acme")
    bot, _ = keys.create("acme", agents=["bot"])
    with TestClient(create_app(memory, keys)) as client:

        def call(method: str, path: str, k: str = key, **kw: Any) -> Any:
            return client.request(method, U + path, headers={"Authorization": f"Bearer {k}"}, **kw)

        london = call("POST", "/memories", json={"text": "Alice lives in London"}).json()
        other = {"text": "Alice's other agent lives in London", "agent_id": "other"}
        call("POST", "/memories", json=other)
        clock.now = datetime(2024, 6, 1, tzinfo=UTC)
        moved = {"text": "Alice lives in Paris"}
        paris = call("POST", f"/memories/{london['id']}/supersede", json=moved).json()

        def listed(when: str, k: str = key, **params: Any) -> list[str]:
            r = call("GET", "/memories", k, params={"as_of": when, **params})
            assert r.status_code == 200, r.text
            return sorted(m["text"] for m in r.json()["items"])

        def found(when: str, k: str = key, **body: Any) -> list[str]:
            said = {"query": "where Alice lives", "as_of": when, **body}
            r = call("POST", "/search", k, json=said)
            assert r.status_code == 200, r.text
            return [h["record"]["text"] for h in r.json()["hits"]]

        march, july = "2024-03-01T00:00:00Z", "2024-07-01T00:00:00+02:00"
        assert listed(march) == ["Alice lives in London", "Alice's other agent lives in London"]
        assert listed(july) == ["Alice lives in Paris", "Alice's other agent lives in London"]
        assert listed("2024-01-01T00:00:00Z") == []
        assert listed(march, bot, agent_id="bot") == ["Alice lives in London"]
        for recipe in ("semantic", "lexical", "hybrid"):
            assert found(march, recipe=recipe)[0] == "Alice lives in London"
            assert "Alice lives in London" not in found(july, recipe=recipe)
            assert found(march, bot, agent_id="bot", recipe=recipe) == ["Alice lives in London"]
        history = call("GET", f"/memories/{london['id']}/history", params={"as_of": march})
        assert [e["action"] for e in history.json()["events"]] == ["add"]
        whole = call("GET", f"/memories/{london['id']}/history").json()["events"]
        assert [e["action"] for e in whole] == ["add", "supersede"]
        assert whole[1]["snapshot"]["superseded_by"] == paris["id"]
        for bad in ("2024-03-01", "2024-03-01T00:00:00", "next spring"):
            r = call("GET", "/memories", params={"as_of": bad})
            assert r.status_code == 422 and "as_of" in r.text, (bad, r.text)
            r = call("POST", "/search", json={"query": "Alice", "as_of": bad})
            assert r.status_code == 422 and "as_of" in r.text, (bad, r.text)
        r = call("GET", f"/memories/{london['id']}/history", params={"as_of": "2024-03-01"})
        assert r.status_code == 422 and "as_of" in r.text
