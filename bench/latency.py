"""Add and search latency of the default stack (SQLite file + local MiniLM model).

    .venv/bin/python bench/latency.py [--sizes 1000,10000] [--queries 200] [--repeats 3]
        [--data DIR]

Memories are LoCoMo dialog turns from DIR (default ../shared/data/locomo-dev next to the
checkout: real conversational text), cycled with a numbered prefix to reach each size.
Queries are LoCoMo questions, so every query embedding is a cache miss. Prints one JSON
line per size; quote medians. Without the data it says what it needs and exits with 2.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from memlane import Memory, MemoryInput
from memlane.embedders.onnx import OnnxEmbedder

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo-dev"


def corpus(data: Path) -> tuple[list[str], list[str]]:
    turns, questions = [], []
    for path in sorted(data.glob("*.json")):
        conv = json.loads(path.read_text())
        for key, value in conv.items():
            if key.startswith("session_") and isinstance(value, list):
                turns += [f"{t['speaker']}: {t['text']}" for t in value]
        questions += [q["question"] for q in conv["qa"]]
    return turns, questions


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(
    size: int, queries: list[str], turns: list[str], embedder: OnnxEmbedder, recipes: list[str]
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        memory = Memory(f"sqlite:///{tmp}/bench.db", embedder=embedder)
        texts = [f"[{i}] {turns[i % len(turns)]}" for i in range(size)]
        start = time.perf_counter()
        for chunk in range(0, size, 1000):
            memory.add_many([MemoryInput(t) for t in texts[chunk : chunk + 1000]], user_id="u")
        ingest = size / (time.perf_counter() - start)
        adds = []
        for i in range(50):
            t0 = time.perf_counter()
            memory.add(f"single add number {i}: {turns[i]}", user_id="u")
            adds.append((time.perf_counter() - t0) * 1000)
        out = {
            "size": size,
            "ingest_per_s": round(ingest, 1),
            "add_ms_p50": round(statistics.median(adds), 2),
        }
        memory.search("warm the vector matrices", user_id="u")
        for recipe in recipes:
            searches = []
            for q in queries:
                memory.core._query_vectors.clear()  # every query pays for its embedding
                t0 = time.perf_counter()
                memory.search(q, user_id="u", limit=10, recipe=recipe)
                searches.append((time.perf_counter() - t0) * 1000)
            out[f"{recipe}_ms_p50"] = round(statistics.median(searches), 2)
            out[f"{recipe}_ms_p95"] = round(pct(searches, 0.95), 2)
        memory.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--recipes", default="hybrid,semantic", help="search recipes to time")
    parser.add_argument("--data", type=Path, default=DATA, help="LoCoMo-format directory")
    args = parser.parse_args()
    turns, questions = corpus(args.data)
    if not turns or not questions:
        print(
            f"bench/latency.py needs LoCoMo conversations: no *.json file with dialog turns and "
            f"questions in {args.data}. Put the LoCoMo dev conversations there (one JSON "
            "object per conversation, with session_N turn lists and a qa list, as in "
            "https://github.com/snap-research/locomo) or pass --data DIR.",
            file=sys.stderr,
        )
        sys.exit(2)
    embedder = OnnxEmbedder()
    embedder.embed(["warm up"])
    for size in (int(s) for s in args.sizes.split(",")):
        runs = []
        for r in range(args.repeats):
            qs = questions[r * args.queries : (r + 1) * args.queries] or questions[: args.queries]
            runs.append(run(size, qs, turns, embedder, args.recipes.split(",")))
        med = {k: statistics.median(run[k] for run in runs) for k in runs[0]}
        print(json.dumps({"repeats": args.repeats, **med}))


if __name__ == "__main__":
    main()
