"""CLI commands around the manager: context, optimize, learn (loopback chat server), jobs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from chat_server import ChatServer
from memlane.cli import cli

Run = Callable[..., str]
CONVERSATION = '{"role": "user", "content": "I moved to Oslo"}\n'


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    """The CLI on a SQLite file with the fake embedder and no chat model; the store holds
    two near-identical memories of user u. Checks each command's exit code."""
    monkeypatch.setenv("MEMLANE_EMBEDDER", "fake")
    monkeypatch.delenv("MEMLANE_LLM_BASE_URL", raising=False)
    store = f"sqlite:///{tmp_path}/cli.db"
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, code: int = 0) -> str:
        result = runner.invoke(cli, ["--store", store, *args], input=input)
        assert result.exit_code == code, result.output
        return result.output

    invoke("add", "I like tea", "--user", "u")
    invoke("add", "i like tea!", "--user", "u")
    return invoke


@pytest.fixture
def with_model(server: ChatServer, monkeypatch: pytest.MonkeyPatch) -> ChatServer:
    """The scripted chat server as the CLI's model."""
    server.reset()
    monkeypatch.setenv("MEMLANE_LLM_BASE_URL", server.base_url)
    monkeypatch.setenv("MEMLANE_LLM_MODEL", "scripted")
    return server


def _count(run: Run) -> int:
    return len(json.loads(run("list", "--user", "u", "--json"))["items"])


def test_optimize_dry_run_shows_the_diff_and_changes_nothing(run: Run) -> None:
    dry = run("optimize", "--user", "u", "--strategy", "deduplicate")
    assert "- i like tea!" in dry and "dry run" in dry
    assert _count(run) == 2


def test_optimize_apply_removes_the_duplicate(run: Run) -> None:
    run("optimize", "--user", "u", "--strategy", "deduplicate", "--apply")
    assert _count(run) == 1


def test_optimize_json_reports_nothing_to_do_once_deduplicated(run: Run) -> None:
    run("optimize", "--user", "u", "--strategy", "deduplicate", "--apply")
    report = json.loads(run("optimize", "--user", "u", "--strategy", "deduplicate", "--json"))
    assert report["memories_before"] == report["memories_after"] and not report["applied"]


def test_context_fits_its_budget_and_names_its_memories(run: Run) -> None:
    ctx = json.loads(run("context", "--user", "u", "--budget", "80", "--query", "tea", "--json"))
    assert ctx["tokens"] <= 80 and ctx["ids"]["memories"]


def test_learn_without_a_model_names_the_setting(run: Run) -> None:
    failed = run("learn", "--user", "u", input=CONVERSATION, code=1)
    assert "MEMLANE_LLM_BASE_URL" in failed


def test_learn_adds_what_the_model_extracts_as_text_or_json(
    run: Run, with_model: ChatServer
) -> None:
    with_model.queue({"memories": [{"text": "The user lives in Oslo"}]})
    learned = run("learn", "--user", "u", input=CONVERSATION)
    assert "added" in learned and "The user lives in Oslo" in learned
    with_model.queue({"memories": [{"text": "The user cycles to work"}]})
    as_json = json.loads(run("learn", "--user", "u", "--json", input=CONVERSATION))
    assert [c["outcome"] for c in as_json["candidates"]] == ["added"]


@pytest.mark.usefixtures("with_model")
def test_learn_from_input_that_is_not_json_lines_is_an_error(run: Run) -> None:
    assert "Error" in run("learn", "--user", "u", input="{broken\n", code=1)


def test_jobs_of_a_user_without_any_lists_nothing(run: Run) -> None:
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
