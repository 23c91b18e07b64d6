"""The REST server as it is set up: over a store the CLI or Python wrote (local keys,
another embedding model), with keys the CLI makes, and without a chat model."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from memlane import AsyncMemory, Memory
from memlane.manager import MemoryManager
from memlane.server import KeyStore, create_app
from memlane.testing import FakeEmbedder


def test_a_served_user_id_cannot_contain_a_slash() -> None:
    # No route could name that user again; MCP tools map user ids through the same function.
    from memlane.errors import ValidationError
    from memlane.server.keys import storage_user

    with pytest.raises(ValidationError):
        storage_user("acme", "a/b")


@pytest.mark.parametrize("with_manager", [False, True])
def test_learn_without_a_model_validates_then_says_so_once(
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    with_manager: bool,
) -> None:
    for name in ("MEMLANE_LLM_BASE_URL", "MEMLANE_LLM_MODEL", "MEMLANE_LLM_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    memory = AsyncMemory(f"sqlite:///{tmp_path / 'nomodel.db'}", embedder=FakeEmbedder())
    blocking = Memory(memory.store, embedder=memory.embedder)
    manager = MemoryManager(blocking) if with_manager else None
    keys = KeyStore(memory.store)
    key, _ = keys.create("acme")
    auth = {"Authorization": f"Bearer {key}"}
    url = "/v1/users/alice/learn"
    with TestClient(create_app(memory, keys, manager=manager, mcp=False)) as client:
        # A bad body is the caller's mistake whether or not a model is configured.
        blank = {"messages": [{"role": "user", "content": "   "}]}
        r = client.post(url, json=blank, headers=auth)
        assert r.status_code == 422 and r.json()["type"] == "ValidationError", r.text
        assert client.post(url, json={"messages": []}, headers=auth).status_code == 422
        # A good one: not a transient failure to retry, but a feature this server lacks.
        good = {"messages": [{"role": "user", "content": "I moved to Oslo"}]}
        with caplog.at_level("WARNING", logger="memlane"):
            answers = [client.post(url, json=good, headers=auth) for _ in range(3)]
        for r in answers:
            assert r.status_code == 501, r.text
            assert r.json()["type"] == "NoModelError"
            assert "MEMLANE_LLM_BASE_URL" in r.json()["error"]
            assert "try again" not in r.json()["error"]
    said = [rec for rec in caplog.records if "model" in rec.getMessage()]
    assert len(said) == 1 and said[0].exc_info is None
    if manager is not None:
        manager.close()
    blocking.close()


def test_cli_written_users_are_served_to_a_local_key(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from memlane.cli import cli

    monkeypatch.setenv("MEMLANE_EMBEDDER", "fake")
    store = f"sqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()

    def run(*args: str) -> str:
        done = runner.invoke(cli, ["--store", store, *args])
        assert done.exit_code == 0, done.output
        return done.stdout.strip()

    mid = run("add", "Alice keeps bees", "--user", "alice")
    key = run("keys", "create", "--tenant", "local", "--permissions", "read")
    refused = runner.invoke(cli, ["--store", store, "keys", "create", "--tenant", "local",
                                  "--permissions", "admin"])  # fmt: skip
    assert refused.exit_code != 0 and "permission" in refused.output
    memory = AsyncMemory(store, embedder=FakeEmbedder())
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(memory, KeyStore(memory.store), mcp=False)) as client:
        got = client.get(f"/v1/users/alice/memories/{mid}", headers=auth)
        assert got.status_code == 200 and got.json()["text"] == "Alice keeps bees"
        wrote = client.post("/v1/users/alice/memories", json={"text": "x"}, headers=auth)
        assert wrote.status_code == 403  # the key was made read-only


@pytest.mark.parametrize(
    "limits",
    [
        ["--users", ""],  # an unset shell variable: a key for nobody, made without a word
        ["--users", " , "],
        ["--agents", ""],
        ["--tenant", "local", "--users", "acme::alice"],  # no local user has '::'
        ["--users", "a/b"],  # no route can name this user
    ],
)
def test_keys_create_refuses_a_key_that_could_reach_no_one(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, limits: list[str]
) -> None:
    from click.testing import CliRunner

    from memlane.cli import cli

    monkeypatch.setenv("MEMLANE_EMBEDDER", "fake")
    store = f"sqlite:///{tmp_path / 'cli.db'}"
    tenant = [] if "--tenant" in limits else ["--tenant", "acme"]
    made = CliRunner().invoke(cli, ["--store", store, "keys", "create", *tenant, *limits])
    assert made.exit_code == 1 and "Error" in made.output, made.output
    assert "ml_" not in made.output
    # Refused before the store is opened: nothing was written, not even a new file.
    assert not (tmp_path / "cli.db").exists()


def test_a_store_of_another_embedding_model_is_a_503_not_a_crash(tmp_path: Any) -> None:
    db = f"sqlite:///{tmp_path / 'other-model.db'}"
    with Memory(db, embedder=FakeEmbedder(8, model_id="fake-8")) as written:
        written.add("Likes green tea", user_id="alice")
    memory = AsyncMemory(db, embedder=FakeEmbedder(16, model_id="fake-16"))
    keys = KeyStore(memory.store)
    key, _ = keys.create("local")
    with TestClient(create_app(memory, keys)) as client:
        r = client.post(
            "/v1/users/alice/search",
            json={"query": "tea"},
            headers={"Authorization": f"Bearer {key}"},
        )
    assert r.status_code == 503, r.text
    assert r.json()["type"] == "EmbeddingModelMismatchError"
    assert "fake-8" not in r.text  # the details are for the operator's log
