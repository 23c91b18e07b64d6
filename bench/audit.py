"""What the audit trail costs: search, get and add latency at each audit level, SQLite.

    .venv/bin/python bench/audit.py [--sizes 1000,10000] [--queries 300] [--repeats 5]
        [--embedder fake|onnx] [--no-track-access] [--data DIR]

One SQLite file (WAL) per size, filled with that many LoCoMo dialog turns (cycled with a
numbered prefix) with auditing off; then three memories over the same store, audit
``off``, ``writes`` and ``all``, take turns on every query (the order rotating), so drift
of the machine hits the three alike. Queries are LoCoMo questions, hybrid recipe,
limit 10. With the fake embedder (default) the query's embedding costs microseconds and
what is measured is memlane and SQLite; with ``onnx`` each query is embedded again
(its cache cleared), as an agent's search would be. ``get`` is one memory by id; ``add``
one new memory (at ``off`` and ``writes``: ``all`` adds nothing to a write). Prints one
JSON line per size: the median over ``--repeats`` runs of each run's median (and p95) in
ms. Without the LoCoMo data it says what it needs and exits with 2.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from latency import DATA, corpus, pct

from memlane import CoreConfig, Memory, MemoryInput
from memlane.ports.embedder import Embedder
from memlane.stores.sqlite import SqliteStore
from memlane.testing import FakeEmbedder

LEVELS = ("off", "writes", "all")


def timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def one_run(
    memories: dict[str, Memory], queries: list[str], ids: list[str], fresh_queries: bool
) -> dict[str, float]:
    """Each level's median and p95 of one pass over the queries, the order rotating."""
    times: dict[str, dict[str, list[float]]] = {lv: {"search": [], "get": []} for lv in LEVELS}
    for i, query in enumerate(queries):
        order = LEVELS[i % 3 :] + LEVELS[: i % 3]
        for level in order:
            m = memories[level]
            if fresh_queries:
                m.core._query_vectors.clear()  # the query is embedded again, as it is live
            times[level]["search"].append(
                timed(lambda: m.search(query, user_id="u", limit=10))  # noqa: B023
            )
            rid = ids[i % len(ids)]
            times[level]["get"].append(timed(lambda: m.get(rid, user_id="u")))  # noqa: B023
    for i in range(len(queries) // 3):
        for level in ("off", "writes"):
            add = lambda: memories[level].add(f"note {i} at {level}", user_id="u")  # noqa: B023, E731
            times[level].setdefault("add", []).append(timed(add))
    out: dict[str, float] = {}
    for level, by_call in times.items():
        for call, values in by_call.items():
            out[f"{call}_{level}_p50"] = statistics.median(values)
            out[f"{call}_{level}_p95"] = pct(values, 0.95)
    return out


def run_size(
    size: int, turns: list[str], questions: list[str], embedder: Embedder, args: Any
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "audit.db")
        config = {"track_access": not args.no_track_access}
        memories = {
            level: Memory(store, embedder=embedder, config=CoreConfig(audit=level, **config))
            for level in LEVELS
        }
        texts = [f"[{i}] {turns[i % len(turns)]}" for i in range(size)]
        ids: list[str] = []
        for start in range(0, size, 1000):
            chunk = [MemoryInput(t) for t in texts[start : start + 1000]]
            ids += [r.id for r in memories["off"].add_many(chunk, user_id="u")]
        for m in memories.values():  # warm the indexes and each memory's query cache
            for q in questions[: args.queries]:
                m.search(q, user_id="u", limit=10)
        runs = []
        for r in range(args.repeats):
            qs = questions[r * args.queries : (r + 1) * args.queries] or questions[: args.queries]
            runs.append(one_run(memories, qs, ids, args.embedder == "onnx"))
        store.close()
    med = {k: round(statistics.median(run[k] for run in runs), 3) for k in runs[0]}
    for call in ("search", "get"):
        med[f"{call}_all_minus_off_p50"] = round(med[f"{call}_all_p50"] - med[f"{call}_off_p50"], 3)
    med["add_writes_minus_off_p50"] = round(med["add_writes_p50"] - med["add_off_p50"], 3)
    return {"size": size, "repeats": args.repeats, "queries": args.queries, **med}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--embedder", choices=("fake", "onnx"), default="fake")
    parser.add_argument("--no-track-access", action="store_true", help="searches write nothing")
    parser.add_argument("--data", type=Path, default=DATA, help="LoCoMo-format directory")
    args = parser.parse_args()
    turns, questions = corpus(args.data)
    if not turns or not questions:
        print(
            f"bench/audit.py needs LoCoMo conversations: no *.json file with dialog turns and "
            f"questions in {args.data}. Put the LoCoMo dev conversations there "
            "(https://github.com/snap-research/locomo) or pass --data DIR.",
            file=sys.stderr,
        )
        sys.exit(2)
    embedder: Embedder = FakeEmbedder()
    if args.embedder == "onnx":
        from memlane.embedders.onnx import OnnxEmbedder

        embedder = OnnxEmbedder()
        embedder.embed(["warm up"])
    for size in (int(s) for s in args.sizes.split(",")):
        print(json.dumps(run_size(size, turns, questions, embedder, args)), flush=True)


if __name__ == "__main__":
    main()
