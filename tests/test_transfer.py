"""Export and import of JSONL: batched embedding inside one all-or-nothing import, and a
progress bar on a terminal (none when piped)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from collections.abc import Sequence
from pathlib import Path

import pytest

from memlane import Memory
from memlane.errors import EmbeddingError
from memlane.models import content_hash
from memlane.ports.embedder import Vector
from memlane.testing import FakeEmbedder

SRC = Path(__file__).resolve().parents[1] / "src"


class CountingEmbedder(FakeEmbedder):
    """The fake embedder, recording the size of each call; fails on call ``fail_on``."""

    def __init__(self, fail_on: int | None = None) -> None:
        super().__init__()
        self.sizes: list[int] = []
        self.fail_on = fail_on

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        self.sizes.append(len(texts))
        if self.fail_on is not None and len(self.sizes) == self.fail_on:
            raise EmbeddingError("the model went away")
        return super().embed(texts)


def _export(n_messages: int) -> list[dict[str, object]]:
    with Memory("memory://", embedder=FakeEmbedder()) as memory:
        for s in range(0, n_messages, 50):
            turns = [("user", f"message {s + i} about the trip") for i in range(50)]
            memory.add_messages(f"s{s}", turns, user_id=f"u{s % 3}")
        return memory.export_rows()


def test_import_embeds_in_batches_reports_every_line_and_stays_all_or_nothing(
    tmp_path: Path,
) -> None:
    rows = _export(600)  # 600 episodes: three embedding batches
    url = f"sqlite:///{tmp_path}/m.db"
    failing = CountingEmbedder(fail_on=2)
    with Memory(url, embedder=failing) as memory, pytest.raises(EmbeddingError):
        memory.import_rows(rows)
    with Memory(url, embedder=FakeEmbedder()) as memory:
        assert memory.list_users() == []  # the first batch's work was not kept
    counting = CountingEmbedder()
    done: list[int] = []
    with Memory(url, embedder=counting) as memory:
        memory.import_rows(rows, progress=done.append)
        assert sum(done) == len(rows) and len(done) > 3
        assert max(counting.sizes) <= 256 and sum(counting.sizes) == 600
        assert _strip(memory.export_rows()) == _strip(rows)
        counting.sizes.clear()
        memory.import_rows(rows, progress=done.append)  # again: safe, nothing re-embedded
        assert counting.sizes == []
        assert _strip(memory.export_rows()) == _strip(rows)


def test_export_reports_its_lines(tmp_path: Path) -> None:
    rows = _export(100)
    with Memory(f"sqlite:///{tmp_path}/m.db", embedder=FakeEmbedder()) as memory:
        memory.import_rows(rows)
        done: list[int] = []
        assert _strip(memory.export_rows(progress=done.append)) == _strip(rows)
        assert sum(done) == len(rows)


def _strip(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return [r for r in rows if r["type"] != "header"]


def _cli(args: list[str], tmp_path: Path, *, tty: bool) -> tuple[int, str, str]:
    """Run ``python -m memlane.cli`` with stderr on a pseudo-terminal or a pipe."""
    env = {
        **os.environ,
        "PYTHONPATH": str(SRC),
        "MEMLANE_EMBEDDER": "fake",
        "MEMLANE_STORE": f"sqlite:///{tmp_path}/cli.db",
    }
    if not tty:
        done = subprocess.run(
            [sys.executable, "-m", "memlane.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return done.returncode, done.stdout, done.stderr
    controller, terminal = pty.openpty()
    # A terminal 100 columns wide (a fresh pseudo-terminal has 0, and tqdm fits its
    # line to the width).
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "memlane.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=terminal,
        text=True,
    )
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the process is gone
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    stdout = proc.stdout.read() if proc.stdout else ""
    proc.wait(timeout=120)
    return proc.returncode, stdout, b"".join(chunks).decode("utf-8", "replace")


def test_import_and_export_show_progress_on_a_terminal_only(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    rows = _export(300)
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    code, out, err = _cli(["import", str(source)], tmp_path, tty=True)
    assert code == 0, err
    assert "imported 300 history, 300 message, 300 record, 6 session" in out
    assert f"{len(rows)}/{len(rows)}" in err and "100%" in err and "line" in err

    code, out, err = _cli(["import", str(source)], tmp_path, tty=False)
    assert code == 0, err
    assert "imported 300 history" in out and err == ""  # piped: no bar, nothing on stderr

    target = tmp_path / "out.jsonl"
    code, out, err = _cli(["export", "-o", str(target)], tmp_path, tty=True)
    assert code == 0, err
    assert f"{len(rows)} line" in err and f"exported {len(rows)} lines" in err
    assert len(target.read_text(encoding="utf-8").splitlines()) == len(rows)
    code, out, err = _cli(["export", "-o", str(target)], tmp_path, tty=False)
    assert code == 0 and err == f"exported {len(rows)} lines\n"


def test_import_refuses_a_file_that_repeats_an_id(tmp_path: Path) -> None:
    """Two rows naming the same memory (or event, message) of one user cannot both be
    imported: the file is refused at the repeat, nothing is stored, instead of keeping one
    silently and counting both."""
    with Memory("memory://", embedder=FakeEmbedder()) as memory:
        memory.add("Alice keeps bees", user_id="alice")
        memory.add_messages("s1", [("user", "hello there")], user_id="alice")
        rows = memory.export_rows()
    for kind in ("record", "history", "message"):
        first = next(i for i, r in enumerate(rows) if r["type"] == kind)
        twin = json.loads(json.dumps(rows[first]))
        if kind == "record":
            twin["data"]["text"] = "Alice keeps wasps"
            twin["data"]["content_hash"] = content_hash("Alice keeps wasps")
        bad = [*rows, twin]
        source = tmp_path / f"{kind}.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in bad), encoding="utf-8")
        code, out, err = _cli(["import", str(source)], tmp_path, tty=False)
        assert code == 1, (out, err)
        assert f"line {len(bad)}" in err and "repeats" in err, err
        code, out, err = _cli(["list", "--user", "alice"], tmp_path, tty=False)
        assert "Alice" not in out, out  # nothing was stored


@pytest.mark.parametrize(
    ("kind", "key", "metadata"),
    [
        ("fact", "timezone", {}),  # a key on another kind: remember("timezone") stalls
        ("keyed_fact", None, {"value": "UTC"}),  # no key: nothing can recall or edit it
        ("keyed_fact", "timezone", {}),  # no value: recall() disagrees with the text
    ],
)
def test_import_refuses_a_keyed_fact_remember_could_not_have_made(
    tmp_path: Path, kind: str, key: str | None, metadata: dict[str, object]
) -> None:
    with Memory("memory://", embedder=FakeEmbedder()) as memory:
        memory.remember("timezone", "UTC", user_id="alice")
        rows = memory.export_rows()
    row = next(r for r in rows if r["type"] == "record")
    row["data"].update(kind=kind, key=key, metadata=metadata)  # type: ignore[union-attr]
    source = tmp_path / "bad.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    code, out, err = _cli(["import", str(source)], tmp_path, tty=False)
    assert code == 1 and "bad record row" in err, (out, err)
    # Nothing was stored: the key is free and recall agrees with remember.
    with Memory(f"sqlite:///{tmp_path}/cli.db", embedder=FakeEmbedder()) as memory:
        memory.remember("timezone", "Europe/Paris", user_id="alice")
        assert memory.recall("timezone", user_id="alice") == "Europe/Paris"


def test_add_many_refuses_a_key() -> None:
    """Only remember() gives a memory a key (add_many took MemoryInput(key=...) and the
    key's remember() then failed with ConflictError on every call)."""
    from memlane import MemoryInput
    from memlane.errors import ValidationError

    with Memory("memory://", embedder=FakeEmbedder()) as memory:
        with pytest.raises(ValidationError):
            memory.add_many([MemoryInput(text="tz is UTC", key="timezone")], user_id="alice")
        memory.remember("timezone", "UTC", user_id="alice")
        assert memory.recall("timezone", user_id="alice") == "UTC"


def test_migrate_shows_progress_on_a_terminal_only(tmp_path: Path) -> None:
    """Like import and export: a piped or logged migrate gets no tqdm bar on stderr."""
    with Memory(f"sqlite:///{tmp_path}/cli.db", embedder=FakeEmbedder()) as memory:
        memory.add("Alice keeps bees", user_id="alice")
    code, out, err = _cli(
        ["migrate", str(tmp_path / "cli.db"), str(tmp_path / "a.db")], tmp_path, tty=False
    )
    assert code == 0 and "verified: ok" in out, (out, err)
    assert "users" not in err, err
    code, out, err = _cli(
        ["migrate", str(tmp_path / "cli.db"), str(tmp_path / "b.db")], tmp_path, tty=True
    )
    assert code == 0 and "users: 100%" in err, (out, err)


def test_a_dict_made_from_a_record_is_a_copy_all_the_way_down() -> None:
    from datetime import UTC, datetime

    from memlane.models import MemoryKind, MemoryRecord, Message, content_hash

    now = datetime(2024, 1, 1, tzinfo=UTC)
    record = MemoryRecord(
        "r1", "u", MemoryKind.FACT, "t", content_hash("t"), now, now,
        metadata={"nested": {"tags": ["a"]}},
    )  # fmt: skip
    out = record.to_dict()
    out["metadata"]["nested"]["tags"].append("b")
    assert record.metadata == {"nested": {"tags": ["a"]}}
    message = Message("m1", "u", "s1", "r1", 1, "user", "hi", now, metadata={"k": ["v"]})
    message.to_dict()["metadata"]["k"].append("w")
    assert message.metadata == {"k": ["v"]}


@pytest.mark.parametrize(
    "periods",
    [
        [5],
        ["junk"],
        ["2023-05-08T00:00:00.000000Z/2023-05-07T00:00:00.000000Z"],  # ends before it starts
        "2023-05-07T00:00:00.000000Z/2023-05-08T00:00:00.000000Z",  # not a list
        ["2023-05-07T00:00:00.000000Z/2023-05-08T00:00:00.000000Z"] * 33,
    ],
)
def test_an_imported_record_with_bad_periods_is_refused_with_its_line(periods: object) -> None:
    from memlane import Memory
    from memlane.errors import ImportFormatError
    from memlane.testing import FakeEmbedder

    with Memory("memory://", embedder=FakeEmbedder()) as m:
        good = m.add("I went there yesterday", user_id="u")
        data = {**good.to_dict(), "id": "other", "periods": periods}
        with pytest.raises(ImportFormatError) as raised:
            m.import_rows([{"type": "record", "data": data}])
        assert raised.value.line == 1
        assert [r.id for r in m.list(user_id="u").items] == [good.id]
