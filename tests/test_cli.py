"""The CLI, in-process with click's runner, on a real SQLite file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from memlane.cli import cli


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MEMLANE_EMBEDDER", "fake")
    store = f"sqlite:///{tmp_path}/cli.db"
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, ok: bool = True):  # type: ignore[no-untyped-def]
        result = runner.invoke(cli, ["--store", store, *args], input=input)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return invoke


def test_add_search_get_history_forget(run) -> None:  # type: ignore[no-untyped-def]
    rid = run(
        "add", "Alice is vegetarian", "--user", "alice", "--kind", "preference"
    ).output.strip()
    run("add", "Bob is allergic to peanuts", "--user", "bob")
    found = json.loads(run("search", "vegetarian food", "--user", "alice", "--json").output)
    assert [h["record"]["id"] for h in found] == [rid]
    assert found[0]["explanation"]["lexical"]["rank"] == 1
    text = run("search", "peanuts", "--user", "alice").output
    assert "peanuts" not in text
    got = json.loads(run("get", rid, "--user", "alice", "--json").output)
    assert got["kind"] == "preference"
    assert run("get", rid, "--user", "bob", ok=False).exit_code == 1
    run("forget", rid, "--user", "alice", "--reason", "asked")
    history = json.loads(run("history", rid, "--user", "alice", "--json").output)
    assert [e["action"] for e in history] == ["add", "delete"]
    listed = json.loads(run("list", "--user", "alice", "--json").output)
    assert listed["items"] == []


def test_list_pages(run) -> None:  # type: ignore[no-untyped-def]
    for i in range(5):
        run("add", f"note {i}", "--user", "u", "--topic", "notes")
    first = json.loads(run("list", "--user", "u", "--limit", "2", "--json").output)
    second = json.loads(
        run(
            "list", "--user", "u", "--limit", "2", "--cursor", first["next_cursor"], "--json"
        ).output
    )
    assert len(first["items"]) == len(second["items"]) == 2
    assert {i["id"] for i in first["items"]}.isdisjoint(i["id"] for i in second["items"])


def test_errors_are_one_line_without_traceback(run) -> None:  # type: ignore[no-untyped-def]
    result = run("add", "   ", "--user", "u", ok=False)
    assert result.exit_code == 1
    assert "ValidationError" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    missing_user = run("add", "text", ok=False)
    assert missing_user.exit_code == 2 and "--user" in missing_user.output
    bad_filter = run("search", "x", "--user", "u", "--meta", "nokey", ok=False)
    assert bad_filter.exit_code == 1


def test_export_import_round_trip_and_bad_file(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rid = run("add", "likes sailing", "--user", "u").output.strip()
    run("add", "likes chess", "--user", "v")
    out = tmp_path / "dump.jsonl"
    run("export", "-o", str(out))
    lines = out.read_text().splitlines()
    assert json.loads(lines[0])["type"] == "header" and len(lines) >= 5
    run("forget", "--user", "u", "--all", "--yes")
    assert run("get", rid, "--user", "u", ok=False).exit_code == 1
    broken = tmp_path / "broken.jsonl"
    broken.write_text(lines[0] + "\n" + lines[1] + "\n{not json\n")
    bad = run("import", str(broken), ok=False)
    assert bad.exit_code == 1 and "line 3" in bad.output
    assert run("get", rid, "--user", "u", ok=False).exit_code == 1  # nothing landed
    blanks = tmp_path / "blanks.jsonl"  # a row-level error names the file's own line
    blanks.write_text(lines[0] + "\n\n\n" + '{"type": "bogus", "data": {}}\n')
    bad = run("import", str(blanks), ok=False)
    assert bad.exit_code == 1 and "line 4" in bad.output
    imported = json.loads(run("import", str(out), "--json").output)
    assert imported["record"] == 2
    assert json.loads(run("get", rid, "--user", "u", "--json").output)["text"] == "likes sailing"


def test_corrupt_store_file_is_a_clean_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMLANE_EMBEDDER", "fake")
    path = tmp_path / "bad.db"
    path.write_bytes(b"garbage" * 1000)
    result = CliRunner().invoke(cli, ["--store", f"sqlite:///{path}", "list", "--user", "u"])
    assert result.exit_code == 1 and "CorruptStoreError" in result.output
    assert "Traceback" not in result.output


def test_demo_runs_two_processes(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = run("demo", "--store", f"sqlite:///{tmp_path}/demo.db")
    assert "process 2: recall" in result.output
    assert "sees none of demo-bob's memories" in result.output
    assert "resumes at step 'book-train'" in result.output


def test_odd_input_is_one_line_not_a_traceback(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    huge = run("add", "x", "--user", "u", "--ttl-days", "1e300", ok=False)
    # CliRunner reports a crash as exit 1 too: a handled error leaves SystemExit.
    assert huge.exit_code == 1 and isinstance(huge.exception, SystemExit)
    latin = tmp_path / "latin1.jsonl"
    latin.write_bytes('{"type": "header", "note": "caf\u00e9"}\n'.encode("latin-1"))
    bad = run("import", str(latin), ok=False)
    assert bad.exit_code == 1 and isinstance(bad.exception, SystemExit)
    assert "UTF-8" in bad.output
    assert run("jobs", "--status", "bogus", ok=False).exit_code == 2  # a usage error
