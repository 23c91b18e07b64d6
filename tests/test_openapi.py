"""The OpenAPI document describes the API a client meets: a client that knows only
/openapi.json (operation ids, security scheme, parameters, bodies, media types, error
codes) drives a live server on loopback; /docs works with no network."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from jsonschema import Draft202012Validator

from memlane import AsyncMemory
from memlane.server import KeyStore, create_app
from memlane.testing import FakeEmbedder

ERRORS = {"400", "401", "403", "404", "413", "422", "503"}


class Live:
    def __init__(self, base: str, key: str) -> None:
        self.base = base
        self.key = key
        self.schema: dict[str, Any] = httpx.get(base + "/openapi.json", timeout=10).json()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    db = tmp_path_factory.mktemp("openapi") / "api.db"
    memory = AsyncMemory(f"sqlite:///{db}", embedder=FakeEmbedder())
    keys = KeyStore(memory.store)
    key, _ = keys.create("acme")
    app = create_app(memory, keys, mcp=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise AssertionError("the server did not start")
        time.sleep(0.05)
    try:
        yield Live(f"http://127.0.0.1:{port}", key)
    finally:
        server.should_exit = True
        thread.join(10)


def _operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in schema["paths"].items():
        for method, op in item.items():
            yield path, method, op


def test_every_v1_operation_declares_its_key_and_its_errors(live: Live) -> None:
    schema = live.schema
    schemes = schema["components"]["securitySchemes"]
    bearer = [n for n, s in schemes.items() if (s["type"], s.get("scheme")) == ("http", "bearer")]
    assert bearer, schemes
    error = schema["components"]["schemas"]["ErrorBody"]
    assert set(error["required"]) == {"error", "type"}
    v1 = [(p, m, op) for p, m, op in _operations(schema) if p.startswith("/v1")]
    assert len(v1) >= 25
    for path, method, op in v1:
        where = f"{method.upper()} {path}"
        assert any(bearer[0] in req for req in op.get("security", [])), where
        codes = set(op["responses"])
        wanted = ERRORS if "{user_id}" in path else {"401", "403", "503"}
        assert wanted <= codes, (where, wanted - codes)
        for code in wanted:
            content = op["responses"][code]["content"]["application/json"]["schema"]
            assert content == {"$ref": "#/components/schemas/ErrorBody"}, (where, code)
        # Its answer is a documented model, not a bare object.
        for code, answer in op["responses"].items():
            if code.startswith("2") and "application/json" in answer.get("content", {}):
                assert "$ref" in answer["content"]["application/json"]["schema"], (where, code)
    ops = {op["operationId"]: op for _, _, op in _operations(schema)}
    assert len(ops) == sum(1 for _ in _operations(schema))  # unique, client-friendly ids
    for name in ("add_memory", "update_memory", "set_state", "import_rows"):
        assert "409" in ops[name]["responses"], name
    # A compare-and-swap write can lose a race (two DELETEs of one memory at once: one
    # gets 409), not only one given an expected_version.
    for name in ("delete_memory", "restore_memory", "supersede_memory", "summarize"):
        assert "409" in ops[name]["responses"], name
    assert "501" in ops["learn"]["responses"]
    # Export is NDJSON, import takes NDJSON: said so, and nothing else.
    assert set(ops["export"]["responses"]["200"]["content"]) == {"application/x-ndjson"}
    assert set(ops["import_rows"]["requestBody"]["content"]) == {"application/x-ndjson"}
    # The constraints the server enforces are in the schema.
    bodies = schema["components"]["schemas"]
    text = bodies["AddBody"]["properties"]["text"]
    assert text["minLength"] == 1 and text["pattern"] == r"\S"
    assert "64" in json.dumps(bodies["AddBody"]["properties"]["metadata"])
    user = next(p for p in ops["add_memory"]["parameters"] if p["name"] == "user_id")
    assert user["schema"]["maxLength"] == 256 and "pattern" in user["schema"]


class SchemaClient:
    """A client that knows only the OpenAPI document."""

    def __init__(self, live: Live) -> None:
        self.live = live
        self.ops = {
            op["operationId"]: (path, method, op) for path, method, op in _operations(live.schema)
        }
        schemes = live.schema["components"]["securitySchemes"]
        self.scheme = next(n for n, s in schemes.items() if s.get("scheme") == "bearer")

    def call(
        self,
        operation: str,
        params: dict[str, Any],
        body: Any = None,
        *,
        key: str | None = "own",
    ) -> httpx.Response:
        path, method, op = self.ops[operation]
        declared = {p["name"]: p for p in op.get("parameters", [])}
        assert set(params) <= set(declared), set(params) - set(declared)
        for name, p in declared.items():
            assert not p.get("required") or name in params, f"{operation} needs {name}"
        url = re.sub(r"{(\w+)}", lambda m: str(params[m.group(1)]), path)
        query = {k: v for k, v in params.items() if declared[k]["in"] == "query"}
        headers: dict[str, str] = {}
        if any(self.scheme in req for req in op.get("security", [])) and key:
            headers["Authorization"] = f"Bearer {self.live.key if key == 'own' else key}"
        content = None
        if body is not None:
            media = next(iter(op["requestBody"]["content"]))
            headers["Content-Type"] = media
            if media == "application/json":
                ref = op["requestBody"]["content"][media]["schema"]["$ref"].split("/")[-1]
                model = self.live.schema["components"]["schemas"][ref]
                assert set(body) <= set(model["properties"]), (operation, body)
                assert set(model.get("required", [])) <= set(body), (operation, body)
                content = json.dumps(body).encode()
            else:
                content = body.encode()
        r = httpx.request(
            method, self.live.base + url, params=query, content=content, headers=headers
        )
        documented = op["responses"]
        assert str(r.status_code) in documented, (operation, r.status_code, r.text)
        media = r.headers["content-type"].split(";")[0]
        content = documented[str(r.status_code)].get("content", {media: {}})
        assert media in content, (operation, media)
        schema = content[media].get("schema", {})
        if media == "application/json" and schema:
            # The body fits the documented schema (OpenAPI 3.1 schemas are JSON Schema).
            whole = {**schema, "components": self.live.schema["components"]}
            Draft202012Validator(whole).validate(r.json())
        return r


def test_a_client_built_from_the_schema_works(live: Live) -> None:
    client = SchemaClient(live)
    made = client.call("add_memory", {"user_id": "alice"}, {"text": "Alice keeps bees"})
    assert made.status_code == 201
    found = client.call("search", {"user_id": "alice"}, {"query": "bees", "limit": 5})
    assert [h["record"]["id"] for h in found.json()["hits"]] == [made.json()["id"]]
    exported = client.call("export", {"user_id": "alice"})
    rows = [json.loads(line) for line in exported.text.splitlines()]
    assert any(row.get("data", {}).get("id") == made.json()["id"] for row in rows)
    # Forget alice, then bring her back from the export.
    assert client.call("forget_user", {"user_id": "alice"}).status_code == 200
    gone = client.call("get_memory", {"user_id": "alice", "memory_id": made.json()["id"]})
    assert gone.status_code == 404
    imported = client.call("import_rows", {"user_id": "alice"}, exported.text)
    assert imported.json()["imported"], imported.text
    back = client.call("get_memory", {"user_id": "alice", "memory_id": made.json()["id"]})
    assert back.json()["text"] == "Alice keeps bees"
    # Documented errors are the ones served.
    assert client.call("add_memory", {"user_id": "alice"}, {"text": " "}).status_code == 422
    assert client.call("get_memory", {"user_id": "alice", "memory_id": "nope"}).status_code == 404
    assert client.call("list_memories", {"user_id": "alice"}, key=None).status_code == 401
    assert client.call("list_memories", {"user_id": "alice"}, key="ml_bogus").status_code == 401


def test_wrong_methods_say_which_are_allowed(live: Live) -> None:
    r = httpx.put(live.base + "/v1/users/alice/search", headers={"X-API-Key": live.key})
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert r.json()["type"] == "MethodNotAllowed"


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/v1/users/alice/memories", {"GET", "POST"}),
        ("/v1/users/alice/memories/M1", {"GET", "PATCH", "DELETE"}),
        ("/v1/users/alice/sessions/s1/state", {"GET", "PUT"}),
        ("/v1/users/alice/sessions/s1/summary", {"GET", "POST"}),
        ("/v1/users/alice/sessions/s1/messages", {"GET", "POST"}),
    ],
)
def test_allow_lists_every_method_of_a_path(live: Live, path: str, allowed: set[str]) -> None:
    """A path served by several routes (GET and POST /memories ...) names all their
    methods in `Allow`, not only the first route's."""
    r = httpx.request("OPTIONS", live.base + path, headers={"X-API-Key": live.key})
    assert r.status_code == 405
    assert {m.strip() for m in r.headers["allow"].split(",")} == allowed


@pytest.mark.parametrize(("page", "script"), [("/docs", "swagger-ui-bundle.js"),
                                               ("/redoc", "redoc.standalone.js")])  # fmt: skip
def test_docs_work_offline(live: Live, page: str, script: str) -> None:
    html = httpx.get(live.base + page).text
    urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", html)
    assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls), urls
    for u in urls:
        r = httpx.get(live.base + u)
        assert r.status_code == 200 and len(r.content) > 0, u
    assert any(u.endswith(script) for u in urls)
    assert "http://" not in html and "https://" not in html
    assert httpx.get(live.base + "/docs/assets/core.py").status_code == 404
