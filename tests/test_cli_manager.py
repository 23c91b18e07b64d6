"""CLI commands around the manager: context, optimize, learn (loopback chat server), jobs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from chat_server import ChatServer
from memlane.cli import cli


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    server = ChatServer().start()
    yield server
    server.stop()


def test_context_optimize_learn_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chat: ChatServer
) -> None:
    monkeypatch.setenv("MEMLANE_EMBEDDER", "fake")
    monkeypatch.delenv("MEMLANE_LLM_BASE_URL", raising=False)
    store = f"sqlite:///{tmp_path}/cli.db"
    runner = CliRunner()

    def run(*args: str, input: str | None = None, code: int = 0) -> str:
        result = runner.invoke(cli, ["--store", store, *args], input=input)
        assert result.exit_code == code, result.output
        return result.output

    run("add", "I like tea", "--user", "u")
    run("add", "i like tea!", "--user", "u")
    dry = run("optimize", "--user", "u", "--strategy", "deduplicate")
    assert "- i like tea!" in dry and "dry run" in dry
    assert len(json.loads(run("list", "--user", "u", "--json"))["items"]) == 2
    run("optimize", "--user", "u", "--strategy", "deduplicate", "--apply")
    assert len(json.loads(run("list", "--user", "u", "--json"))["items"]) == 1
    ctx = json.loads(run("context", "--user", "u", "--budget", "80", "--query", "tea", "--json"))
    assert ctx["tokens"] <= 80 and ctx["ids"]["memories"]
    conversation = '{"role": "user", "content": "I moved to Oslo"}\n'
    failed = run("learn", "--user", "u", input=conversation, code=1)
    assert "MEMLANE_LLM_BASE_URL" in failed
    monkeypatch.setenv("MEMLANE_LLM_BASE_URL", chat.base_url)
    monkeypatch.setenv("MEMLANE_LLM_MODEL", "scripted")
    chat.queue({"memories": [{"text": "The user lives in Oslo"}]})
    learned = run("learn", "--user", "u", input=conversation)
    assert "added" in learned and "The user lives in Oslo" in learned
    chat.queue({"memories": [{"text": "The user cycles to work"}]})
    as_json = json.loads(run("learn", "--user", "u", "--json", input=conversation))
    assert [c["outcome"] for c in as_json["candidates"]] == ["added"]
    report = json.loads(run("optimize", "--user", "u", "--strategy", "deduplicate", "--json"))
    assert report["memories_before"] == report["memories_after"] and not report["applied"]
    assert "Error" in run("learn", "--user", "u", input="{broken\n", code=1)
    assert run("jobs", "--user", "u").strip() == ""


def test_learn_without_a_model_checks_input_first_and_touches_no_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMLANE_EMBEDDER", "fake")
    for name in ("MEMLANE_LLM_BASE_URL", "MEMLANE_LLM_MODEL"):
        monkeypatch.delenv(name, raising=False)
    store = tmp_path / "never.db"
    runner = CliRunner()

    def learn(conversation: str) -> str:
        result = runner.invoke(
            cli, ["learn", "--user", "u", "--store", str(store)], input=conversation
        )
        assert result.exit_code == 1, result.output
        return result.output

    assert "ValidationError" in learn('{"role": "user", "content": " "}\n')
    assert "NoModelError" in learn('{"role": "user", "content": "I moved to Oslo"}\n')
    assert not store.exists()
