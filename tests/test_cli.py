"""The CLI, in-process with click's runner, on a real SQLite file."""

from __future__ import annotations

import json
import shutil
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


@pytest.fixture
def alice(run):  # type: ignore[no-untyped-def]
    """Alice's one memory (its id) and Bob's, through the CLI."""
    rid = run(
        "add", "Alice is vegetarian", "--user", "alice", "--kind", "preference"
    ).output.strip()
    run("add", "Bob is allergic to peanuts", "--user", "bob")
    return rid


def test_search_finds_the_users_memory_with_its_explanation(run, alice) -> None:  # type: ignore[no-untyped-def]
    found = json.loads(run("search", "vegetarian food", "--user", "alice", "--json").output)
    assert [h["record"]["id"] for h in found] == [alice]
    assert found[0]["explanation"]["lexical"]["rank"] == 1


def test_search_never_shows_another_users_memory(run, alice) -> None:  # type: ignore[no-untyped-def]
    text = run("search", "peanuts", "--user", "alice").output
    assert "peanuts" not in text


def test_get_returns_the_memory_to_its_user_only(run, alice) -> None:  # type: ignore[no-untyped-def]
    got = json.loads(run("get", alice, "--user", "alice", "--json").output)
    assert got["kind"] == "preference"
    assert run("get", alice, "--user", "bob", ok=False).exit_code == 1


def test_forget_is_in_the_history_and_empties_the_list(run, alice) -> None:  # type: ignore[no-untyped-def]
    run("forget", alice, "--user", "alice", "--reason", "asked")
    history = json.loads(run("history", alice, "--user", "alice", "--json").output)
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


def test_an_error_is_one_line_without_traceback(run) -> None:  # type: ignore[no-untyped-def]
    result = run("add", "   ", "--user", "u", ok=False)
    assert result.exit_code == 1
    assert "ValidationError" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_missing_user_is_a_usage_error(run) -> None:  # type: ignore[no-untyped-def]
    missing_user = run("add", "text", ok=False)
    assert missing_user.exit_code == 2 and "--user" in missing_user.output


def test_a_metadata_filter_without_a_value_is_refused(run) -> None:  # type: ignore[no-untyped-def]
    bad_filter = run("search", "x", "--user", "u", "--meta", "nokey", ok=False)
    assert bad_filter.exit_code == 1


@pytest.fixture
def dump(run, tmp_path: Path):  # type: ignore[no-untyped-def]
    """An export of two users' memories (its id of u's memory, its lines), after which u's
    memories are forgotten."""
    rid = run("add", "likes sailing", "--user", "u").output.strip()
    run("add", "likes chess", "--user", "v")
    out = tmp_path / "dump.jsonl"
    run("export", "-o", str(out))
    run("forget", "--user", "u", "--all", "--yes")
    assert run("get", rid, "--user", "u", ok=False).exit_code == 1
    return rid, out


def test_export_then_import_brings_the_memories_back(run, dump) -> None:  # type: ignore[no-untyped-def]
    rid, out = dump
    lines = out.read_text().splitlines()
    assert json.loads(lines[0])["type"] == "header" and len(lines) >= 5
    imported = json.loads(run("import", str(out), "--json").output)
    assert imported["record"] == 2
    assert json.loads(run("get", rid, "--user", "u", "--json").output)["text"] == "likes sailing"


def test_an_import_with_a_bad_line_names_it_and_lands_nothing(run, dump, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rid, out = dump
    lines = out.read_text().splitlines()
    broken = tmp_path / "broken.jsonl"
    broken.write_text(lines[0] + "\n" + lines[1] + "\n{not json\n")
    bad = run("import", str(broken), ok=False)
    assert bad.exit_code == 1 and "line 3" in bad.output
    assert run("get", rid, "--user", "u", ok=False).exit_code == 1  # nothing landed


def test_a_row_level_import_error_names_the_files_own_line(run, dump, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, out = dump
    header = out.read_text().splitlines()[0]
    blanks = tmp_path / "blanks.jsonl"  # a row-level error names the file's own line
    blanks.write_text(header + "\n\n\n" + '{"type": "bogus", "data": {}}\n')
    bad = run("import", str(blanks), ok=False)
    assert bad.exit_code == 1 and "line 4" in bad.output


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


def test_a_huge_ttl_is_a_handled_error(run) -> None:  # type: ignore[no-untyped-def]
    huge = run("add", "x", "--user", "u", "--ttl-days", "1e300", ok=False)
    # CliRunner reports a crash as exit 1 too: a handled error leaves SystemExit.
    assert huge.exit_code == 1 and isinstance(huge.exception, SystemExit)


def test_an_import_file_not_in_utf8_is_a_handled_error(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    latin = tmp_path / "latin1.jsonl"
    latin.write_bytes('{"type": "header", "note": "caf\u00e9"}\n'.encode("latin-1"))
    bad = run("import", str(latin), ok=False)
    assert bad.exit_code == 1 and isinstance(bad.exception, SystemExit)
    assert "UTF-8" in bad.output


def test_an_unknown_job_status_is_a_usage_error(run) -> None:  # type: ignore[no-untyped-def]
    assert run("jobs", "--status", "bogus", ok=False).exit_code == 2  # a usage error


@pytest.fixture
def bare(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The CLI without a preset --store."""
    monkeypatch.setenv("MEMLANE_EMBEDDER", "fake")
    runner = CliRunner()
    return lambda *args: runner.invoke(cli, list(args))


@pytest.fixture
def plain(bare, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A store made as the plain path plain.db in the working directory (tmp_path)."""
    monkeypatch.chdir(tmp_path)
    added = bare("add", "likes tea", "--user", "u", "--store", "plain.db")
    assert added.exit_code == 0, added.output
    assert (tmp_path / "plain.db").is_file()
    return bare


def test_store_is_accepted_before_and_after_the_command_in_any_spelling(  # type: ignore[no-untyped-def]
    plain, tmp_path: Path
) -> None:
    for store in ("plain.db", "./plain.db", str(tmp_path / "plain.db"), "sqlite:///plain.db"):
        after = plain("list", "--user", "u", "--json", "--store", store)
        before = plain("--store", store, "list", "--user", "u", "--json")
        assert after.exit_code == before.exit_code == 0, after.output + before.output
        assert [i["text"] for i in json.loads(after.output)["items"]] == ["likes tea"]
        assert json.loads(before.output) == json.loads(after.output)


def test_store_after_a_subgroups_command_is_accepted(plain) -> None:  # type: ignore[no-untyped-def]
    keys = plain("keys", "list", "--store", "plain.db")  # a subgroup's command too
    assert keys.exit_code == 0, keys.output


def test_the_same_store_twice_is_accepted_and_two_stores_refused(plain, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    same = plain("--store", "plain.db", "list", "--user", "u", "--store", "plain.db")
    assert same.exit_code == 0
    both = plain("--store", "plain.db", "list", "--user", "u", "--store", "other.db")
    assert both.exit_code == 2 and "--store" in both.output
    assert not (tmp_path / "other.db").exists()
    assert not (tmp_path / "data").exists()  # the default store was never touched


def test_reading_a_mistyped_store_is_an_error_and_never_creates_it(plain, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for read in (
        ["list", "--user", "u"],
        ["search", "x", "--user", "u"],
        ["export"],
        ["context", "--user", "u", "--query", "tea"],
        ["jobs", "--user", "u"],
    ):
        missing = plain(*read, "--store", "typo.db")
        assert missing.exit_code == 1 and "no SQLite database" in missing.output, missing.output
    assert not (tmp_path / "typo.db").exists()  # reading a store never creates it
    assert not (tmp_path / "data").exists()  # the default store was never touched


def test_no_command_that_only_reads_creates_a_missing_store(  # type: ignore[no-untyped-def]
    bare, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for read in (
        ["get", "01NOSUCHMEMORY", "--user", "u"],
        ["history", "01NOSUCHMEMORY", "--user", "u"],
        ["context", "--user", "u"],
        ["jobs"],
        ["jobs", "--run"],
        ["optimize", "--user", "u", "--strategy", "decay"],
        ["keys", "list"],
        ["keys", "revoke", "0123456789abcdef"],
    ):
        missing = bare(*read, "--store", "typo.db")
        assert missing.exit_code == 1 and "no SQLite database" in missing.output, (read, missing)
        assert not (tmp_path / "typo.db").exists(), read


def test_migrate_refuses_store_before_and_after_the_command(  # type: ignore[no-untyped-def]
    bare, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert bare("add", "likes tea", "--user", "u", "--store", "a.db").exit_code == 0
    for args in (
        ["--store", "a.db", "migrate", "a.db", "b.db", "--no-progress"],
        ["migrate", "a.db", "b.db", "--no-progress", "--store", "a.db"],
    ):
        refused = bare(*args)
        assert refused.exit_code == 2, (args, refused.output)
        assert "SOURCE_URL TARGET_URL" in refused.output, refused.output
        assert not (tmp_path / "b.db").exists()


def test_keys_no_call_could_use_are_refused(  # type: ignore[no-untyped-def]
    bare, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for limits in (
        ["--tenant", "local", "--users", "acme::bob"],  # another tenant's stored user
        ["--tenant", "acme", "--users", "a/b"],  # no route can name this user
        ["--tenant", "acme", "--users", " , "],  # no user at all
        ["--tenant", "acme", "--agents", ""],  # no agent at all
    ):
        refused = bare("keys", "create", *limits, "--store", "k.db")
        assert refused.exit_code == 1 and "ValidationError" in refused.output, (limits, refused)
        assert not refused.output.startswith("ml_")
    listed = bare("keys", "list", "--store", "k.db")
    assert listed.exit_code == 1 or listed.output.strip() == "", listed.output


def test_an_empty_store_is_a_usage_error_not_the_default_store(  # type: ignore[no-untyped-def]
    bare, tmp_path: Path
) -> None:
    for args in (["--store", "", "list", "--user", "u"], ["list", "--user", "u", "--store", ""]):
        empty = bare(*args)
        assert empty.exit_code == 2 and "--store" in empty.output, empty.output
    assert not (tmp_path / "data").exists()  # no silent fall back to the default store


def test_a_store_path_that_cannot_be_made_is_a_one_line_error(  # type: ignore[no-untyped-def]
    bare, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    bad = bare("--store", f"sqlite:///{blocker}/sub/m.db", "list", "--user", "u")
    assert bad.exit_code == 1 and isinstance(bad.exception, SystemExit)
    assert "StoreError" in bad.output and len(bad.output.strip().splitlines()) == 1


def test_a_mistyped_store_url_is_a_configuration_error(bare) -> None:  # type: ignore[no-untyped-def]
    typo = bare("--store", "memory:", "list", "--user", "u")
    assert typo.exit_code == 1 and "ConfigurationError" in typo.output


def test_a_refused_store_file_is_left_byte_for_byte(  # type: ignore[no-untyped-def]
    bare, tmp_path: Path
) -> None:
    import sqlite3

    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    zero = tmp_path / "zero.db"
    zero.touch()
    before = {p: p.read_bytes() for p in (path, zero)}
    names = sorted(p.name for p in tmp_path.iterdir())
    for target in (path, zero):
        result = bare("add", "x", "--user", "u", "--store", str(target))
        assert result.exit_code == 1 and "ForeignStoreError" in result.output, result.output
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == names


def test_a_damaged_store_is_one_line(bare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import sqlite3

    path = tmp_path / "m.db"
    assert bare("add", "likes tea", "--user", "u", "--store", str(path)).exit_code == 0
    conn = sqlite3.connect(path)
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'memlane_meta'").fetchone()
    conn.close()
    with path.open("r+b") as f:
        f.seek((root[0] - 1) * size)
        f.write(b"\x0d" + b"\xa5" * (size - 1))
    result = bare("list", "--user", "u", "--store", str(path))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "CorruptStoreError" in result.output


@pytest.fixture
def store_exists(run) -> None:  # type: ignore[no-untyped-def]
    """The store exists (another user's memory is in it), so a list can tell whether a
    refused add stored anything: reading a missing store is an error."""
    run("add", "someone else's note", "--user", "v")


def _nothing_stored(run) -> None:  # type: ignore[no-untyped-def]
    assert json.loads(run("list", "--user", "u", "--json").output)["items"] == []


@pytest.mark.usefixtures("store_exists")
def test_a_ttl_that_is_not_a_positive_number_is_refused(run) -> None:  # type: ignore[no-untyped-def]
    for days in ("nan", "inf", "-inf", "-1", "0"):
        bad = run("add", "x", "--user", "u", "--ttl-days", days, ok=False)
        assert bad.exit_code == 2 and "--ttl-days" in bad.output, (days, bad.output)
    _nothing_stored(run)


@pytest.mark.usefixtures("store_exists")
def test_text_that_is_not_utf8_is_refused(run) -> None:  # type: ignore[no-untyped-def]
    # Python hands undecodable argv bytes over as lone surrogates (surrogateescape).
    latin = run("add", "caf\udce9", "--user", "u", ok=False)
    assert latin.exit_code == 1 and isinstance(latin.exception, SystemExit)
    assert "UTF-8" in latin.output
    _nothing_stored(run)


@pytest.mark.usefixtures("store_exists")
def test_a_keyed_fact_through_add_is_refused_and_points_to_remember(run) -> None:  # type: ignore[no-untyped-def]
    keyed = run("add", "plan: pro", "--user", "u", "--kind", "keyed_fact", ok=False)
    assert keyed.exit_code == 1 and "remember" in keyed.output
    _nothing_stored(run)


def test_tracebacks_never_reach_a_real_terminal(tmp_path: Path) -> None:
    """The same inputs through a real process and real argv bytes: one line, no traceback."""
    import os
    import subprocess
    import sys

    store = f"sqlite:///{tmp_path}/p.db"
    env = {**os.environ, "MEMLANE_EMBEDDER": "fake"}
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cases: list[list[str | bytes]] = [
        ["--store", store, "add", b"caf\xe9", "--user", "u"],
        ["--store", store, "add", "x", "--user", "u", "--ttl-days", "nan"],
        ["--store", f"sqlite:///{blocker}/sub/m.db", "list", "--user", "u"],
        ["migrate", f"sqlite:///{tmp_path}/nope.db", store, "--no-progress"],
    ]
    for args in cases:
        done = subprocess.run(
            [sys.executable, "-m", "memlane.cli", *args], env=env, capture_output=True
        )
        err = done.stderr.decode("utf-8", "replace")
        assert done.returncode in (1, 2) and "Traceback" not in err, (args, err)
    assert not (tmp_path / "nope.db").exists()


def test_the_library_refuses_the_same_input() -> None:
    from memlane import Memory, MemoryInput, ValidationError
    from memlane.testing import FakeEmbedder

    with Memory("memory://", embedder=FakeEmbedder()) as m:
        with pytest.raises(ValidationError, match="Unicode"):
            m.add("caf\udce9", user_id="u")
        with pytest.raises(ValidationError, match="remember"):
            m.add("plan: pro", user_id="u", kind="keyed_fact")
        with pytest.raises(ValidationError, match="remember"):
            m.add_many([MemoryInput("plan: pro", kind="keyed_fact", key="plan")], user_id="u")
        assert m.list(user_id="u").items == ()
        assert m.remember("plan", "pro", user_id="u").key == "plan"


def test_another_embedder_is_a_one_line_error_naming_both_models(run) -> None:  # type: ignore[no-untyped-def]
    run("add", "the cat sat on the mat", "--user", "u")
    for args in (
        ("--embedder", "fake:64", "search", "cat", "--user", "u"),
        ("search", "cat", "--user", "u", "--embedder", "fake:64"),
        ("add", "a dog", "--user", "u", "--embedder", "fake:64"),
    ):
        result = run(*args, ok=False)
        assert result.exit_code == 1
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "EmbeddingModelMismatchError" in lines[0]
        assert "'fake-bow-256'" in lines[0] and "'fake-bow-64'" in lines[0]
        assert "memlane reembed" in lines[0]


def test_after_reembed_the_new_embedder_finds_and_the_old_is_refused(run) -> None:  # type: ignore[no-untyped-def]
    rid = run("add", "the cat sat on the mat", "--user", "u").output.strip()
    run("reembed", "--embedder", "fake:64")
    again = json.loads(run("reembed", "--embedder", "fake:64", "--json").output)
    assert again == {"memories": 1, "contexts": 0, "embedded": 0, "removed": 0}
    found = json.loads(
        run("--embedder", "fake:64", "search", "cat", "--user", "u", "--json").output
    )
    assert [h["record"]["id"] for h in found] == [rid]
    result = run("search", "cat", "--user", "u", ok=False)  # the old model is refused now
    assert "'fake-bow-64'" in result.output and result.exit_code == 1


def test_embedder_given_twice_is_a_usage_error(run) -> None:  # type: ignore[no-untyped-def]
    twice = run("--embedder", "fake", "list", "--user", "u", "--embedder", "fake:64", ok=False)
    assert twice.exit_code == 2 and "--embedder is given twice" in twice.output


def test_reindex_reads_time_again_and_says_how_many_changed(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from memlane import Memory
    from memlane.ports import store as ops
    from memlane.testing import FakeEmbedder

    url = f"sqlite:///{tmp_path / 'm.db'}"
    with Memory(url, embedder=FakeEmbedder(), sparse=None) as m:  # no sparse terms yet
        said = datetime(2023, 5, 8, tzinfo=UTC)
        r = m.add("I went there yesterday", user_id="alice", event_at=said)
        m.store.batch([ops.SetPeriods("alice", ((r.id, ()),))])  # as written before
    args = ["--store", url, "--embedder", "fake", "reindex"]
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    counts = {"memories": 1, "updated": 1, "indexed": 1, "sparse": 1}
    assert json.loads(result.output) == counts
    index = tmp_path / "m.db.index"
    shutil.rmtree(index)
    plain = CliRunner().invoke(cli, args)
    assert plain.exit_code == 0, plain.output
    said_again = "read 1 memories again; 0 changed; 1 indexed afresh; 0 given sparse terms"
    assert said_again in plain.output
    assert [p for p in index.iterdir() if p.is_dir()]  # built again, not on a search
    with Memory(url, embedder=FakeEmbedder()) as m:
        assert m.get(r.id, user_id="alice").periods == r.periods != ()
        assert [h.record.id for h in m.search("May 2023", user_id="alice", recipe="lexical")] == [
            r.id
        ]


def test_as_of_lists_searches_and_shows_history_as_it_stood(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Alice lived in London until June 2024 (written then, by the API), then in Paris."""
    from datetime import UTC, datetime

    from memlane import Memory
    from memlane.testing import FakeEmbedder, FixedClock

    clock = FixedClock(datetime(2024, 1, 10, tzinfo=UTC))
    m = Memory(f"sqlite:///{tmp_path}/cli.db", embedder=FakeEmbedder(), clock=clock)
    london = m.add("Alice lives in London", user_id="alice")
    clock.now = datetime(2024, 6, 1, tzinfo=UTC)
    paris = m.supersede(london.id, "Alice lives in Paris", user_id="alice")
    m.close()

    def listed(*args: str) -> list[str]:
        page = json.loads(run("list", "--user", "alice", "--json", *args).output)
        return [r["id"] for r in page["items"]]

    def found(when: str) -> list[str]:
        hits = run("search", "where Alice lives", "--user", "alice", "--as-of", when, "--json")
        return [h["record"]["id"] for h in json.loads(hits.output)]

    assert listed("--as-of", "2024-03-01") == [london.id]
    assert listed("--as-of", "2024-06-01T01:00:00+02:00") == [london.id]  # 23:00 UTC before
    assert listed("--as-of", "2024-06-01T00:00:00Z") == [paris.id]
    assert listed("--as-of", "2023-12-31") == []
    assert listed() == [paris.id]
    assert found("2024-03-01") == [london.id] and found("2025-01-01") == [paris.id]
    plain = run("list", "--user", "alice", "--as-of", "2024-03-01").output
    assert "Alice lives in London" in plain and "Paris" not in plain
    shown = json.loads(run("history", london.id, "--user", "alice", "--json").output)
    assert [e["action"] for e in shown] == ["add", "supersede"]
    then = run("history", london.id, "--user", "alice", "--json", "--as-of", "2024-03-01")
    assert [e["action"] for e in json.loads(then.output)] == ["add"]
    for command in (("list",), ("search", "Alice"), ("history", london.id)):
        bad = run(*command, "--user", "alice", "--as-of", "last spring", ok=False)
        assert bad.exit_code == 1 and "--as-of" in bad.output and "Traceback" not in bad.output


def test_graph_lists_entities_and_relations_and_walks_from_one(run) -> None:  # type: ignore[no-untyped-def]
    first = run("add", "I met Jon Ross in Paris.", "--user", "u").output.strip()
    second = run("add", "Everyone in Paris knows Bob Hart.", "--user", "u").output.strip()
    run("add", "Carla Diaz lives in Rome.", "--user", "other")
    listed = json.loads(run("graph", "--user", "u", "--json").output)
    assert {e["name"] for e in listed["entities"]} == {"Jon Ross", "Paris", "Bob Hart"}
    assert {r["predicate"] for r in listed["relations"]} == {"mentioned_with"}
    assert len(listed["relations"]) == 2
    text = run("graph", "--user", "u").output
    assert (
        "Jon Ross --mentioned_with--> Paris" in text or "Paris --mentioned_with--> Jon Ross" in text
    )
    walked = json.loads(
        run("graph", "--user", "u", "--entity", "jon ross", "--depth", "2", "--json").output
    )
    assert {n["name"]: n["depth"] for n in walked["neighbors"]} == {"Paris": 1, "Bob Hart": 2}
    assert walked["memories"] == [first]
    around_paris = json.loads(run("graph", "--user", "u", "--entity", "Paris", "--json").output)
    assert sorted(around_paris["memories"]) == sorted([first, second])
    missing = run("graph", "--user", "other", "--entity", "Jon Ross", ok=False)
    assert missing.exit_code == 1 and "NotFoundError" in missing.output
    before = json.loads(run("graph", "--user", "u", "--as-of", "2000-01-01", "--json").output)
    assert before["relations"] == [] and len(before["entities"]) == 3  # no edge held yet
    bad = run("graph", "--user", "u", "--as-of", "someday", ok=False)
    assert bad.exit_code == 1 and "--as-of" in bad.output


def test_graph_never_creates_a_store(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.db"
    result = CliRunner().invoke(cli, ["--store", str(missing), "graph", "--user", "u"])
    assert result.exit_code == 1 and not missing.exists()
