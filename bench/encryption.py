"""What encryption at rest costs: the same work on a plain and on an encrypted SQLite store.

    .venv/bin/python bench/encryption.py [--size 10000] [--queries 200] [--repeats 3]
        [--data DIR]

Memories are LoCoMo dialog turns from DIR (default ../shared/data/locomo-dev next to the
checkout), cycled with a numbered prefix to reach ``--size``; queries are LoCoMo
questions. The embedder is memlane's deterministic bag-of-words fake, so the numbers are
the store's and the cipher's (sealing, blinding, keyring reads), not the model's: with
the local model an add costs ~10 ms more on both sides alike. Each repeat builds both
stores afresh; prints one JSON line per store and repeat, then the medians. Recall with
encryption on is measured by ``memlane eval locomo DIR --encrypted`` (bench/encryption.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from latency import DATA, corpus, pct

from memlane import Memory, MemoryInput
from memlane.ciphers import AesGcmCipher, Keyring, LocalMasterKey, generate_key
from memlane.testing import FakeEmbedder


def run(sealed: bool, size: int, turns: list[str], queries: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cipher = None
        if sealed:
            master = LocalMasterKey.parse(generate_key())
            cipher = AesGcmCipher(Keyring(Path(tmp) / "bench.keys", master))
        memory = Memory(f"sqlite:///{tmp}/bench.db", embedder=FakeEmbedder(), cipher=cipher)
        texts = [f"[{i}] {turns[i % len(turns)]}" for i in range(size)]
        start = time.perf_counter()
        for chunk in range(0, size, 1000):
            memory.add_many([MemoryInput(t) for t in texts[chunk : chunk + 1000]], user_id="u")
        out: dict[str, Any] = {
            "store": "encrypted" if sealed else "plain",
            "ingest_per_s": round(size / (time.perf_counter() - start)),
        }
        adds = []
        for i in range(50):
            t0 = time.perf_counter()
            memory.add(f"single add number {i}: {turns[i]}", user_id="u")
            adds.append((time.perf_counter() - t0) * 1000)
        out["add_p50_ms"] = round(statistics.median(adds), 2)
        for recipe in ("hybrid", "lexical", "semantic"):
            times = []
            for q in queries:
                t0 = time.perf_counter()
                memory.search(q, user_id="u", recipe=recipe, limit=10)
                times.append((time.perf_counter() - t0) * 1000)
            out[f"{recipe}_p50_ms"] = round(statistics.median(times), 2)
            out[f"{recipe}_p95_ms"] = round(pct(times, 0.95), 2)
        t0 = time.perf_counter()
        listed = memory.list(user_id="u", limit=1000).items
        out["list_1000_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        assert len(listed) == 1000
        memory.close()
        out["db_bytes_per_memory"] = round(
            sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file()) / (size + 50)
        )
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"needs the LoCoMo dev conversations in {args.data} (--data DIR)", file=sys.stderr)
        return 2
    turns, questions = corpus(args.data)
    queries = questions[: args.queries]
    rows: dict[str, list[dict[str, Any]]] = {"plain": [], "encrypted": []}
    for _ in range(args.repeats):
        for sealed in (False, True):
            row = run(sealed, args.size, turns, queries)
            print(json.dumps(row), flush=True)
            rows[row["store"]].append(row)
    for store, found in rows.items():
        medians = {k: statistics.median(r[k] for r in found) for k in found[0] if k != "store"}
        print(json.dumps({"store": store, "median_of": len(found), **medians}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
