"""Import and export speed of JSONL exports, in lines per second (SQLite file).

    .venv/bin/python bench/import_export.py [--lines 10000] [--repeats 3] [--embedder fake,local]

Builds an export of about ``--lines`` lines: 20-turn conversations (each turn is a
message, an episode memory and its history event) of five users, in generated English
(about 30 words a turn, like LoCoMo's). Each repeat imports it into a new SQLite file
(``Memory.import_rows``, one transaction), imports it again (everything present:
nothing embedded), then exports it (``export_rows`` + ``write_jsonl``). The model is
loaded before timing. Prints one JSON line per embedder with medians; ``cpu`` figures
divide by this process's CPU time (steadier than wall time on a shared machine). Runs
against whichever memlane is on ``PYTHONPATH`` (so the same script times an older
checkout).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corpus import WORDS

from memlane import Memory
from memlane.ports.embedder import Embedder
from memlane.testing import FakeEmbedder
from memlane.transfer import write_jsonl


def build_export(lines: int) -> list[dict[str, Any]]:
    """An export of at least ``lines`` lines (whole conversations)."""
    rng = random.Random(12)
    with Memory("memory://", embedder=FakeEmbedder()) as memory:
        n = 0
        while 1 + n * 61 < lines:  # header + per session: 20 x (record, history, message) + 1
            turns = [
                ("user" if t % 2 == 0 else "assistant", " ".join(rng.choices(WORDS, k=30)))
                for t in range(20)
            ]
            memory.add_messages(f"s{n}", turns, user_id=f"user{n % 5}")
            n += 1
        return memory.export_rows()


def timed(work: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def run(rows: list[dict[str, Any]], embedder: Embedder, scratch: Path) -> dict[str, float]:
    n = len(rows)
    with Memory(f"sqlite:///{scratch}/bench.db", embedder=embedder) as memory:
        wall, cpu = timed(lambda: memory.import_rows(rows))
        again, _ = timed(lambda: memory.import_rows(rows))
        with open(scratch / "out.jsonl", "w", encoding="utf-8") as out:
            export, _ = timed(lambda: write_jsonl(memory.export_rows(), out))
    return {
        "import_lines_per_s": n / wall,
        "import_cpu_lines_per_s": n / cpu,
        "reimport_lines_per_s": n / again,
        "export_lines_per_s": n / export,
    }


def make_embedder(name: str) -> Embedder:
    if name == "fake":
        return FakeEmbedder()
    from memlane.embedders.onnx import OnnxEmbedder

    local = OnnxEmbedder()
    local.embed(["load the model before timing"])
    return local


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--embedder", default="fake", help="fake, local or both: fake,local")
    args = parser.parse_args()
    rows = build_export(args.lines)
    kinds: dict[str, int] = {}
    for row in rows:
        kinds[row["type"]] = kinds.get(row["type"], 0) + 1
    for name in args.embedder.split(","):
        embedder = make_embedder(name)
        runs = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as scratch:
                runs.append(run(rows, embedder, Path(scratch)))
        medians = {k: round(statistics.median(r[k] for r in runs), 1) for k in runs[0]}
        print(
            json.dumps(
                {"embedder": name, "lines": len(rows), "rows": kinds, "repeats": args.repeats}
                | medians
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
