"""The upkeep of the vector codes (compaction, lists) while searches and writes go on.

    PYTHONPATH=src .venv/bin/python bench/upkeep.py codes --n 1000000 --json codes.json
    PYTHONPATH=src .venv/bin/python bench/upkeep.py writes --n 300000 --json writes.json

codes: one CodeFile of ``--n`` synthetic unit vectors (384 dimensions: a shared component
plus noise, as sentence embeddings have) under ``--dir``, a tenth of its rows killed. A
searching thread runs ``scored(query, 800)`` (the candidates of a top 100) back to back;
the main thread then compacts the file (both files rewritten without dead rows, every
code made again), and later sorts the rows into lists and places ``--extra`` rows
appended since. Reported: each step's wall time, how long it held the code file's lock
(what a search can wait for), and the searches' wall p50 / p95 / max before and during
it. Run it with ``PYTHONPATH`` pointing at an older ``src`` to see the code before (its
compaction holds the lock throughout; it has no lock timing).

writes: a SQLite store with the fake embedder (256 dimensions), filled by ``add_many``
batches of 1,000 memories to ``--n``; every batch's wall time. The batches that cross
1,024 x 2^k rows make a compaction due (and from 262,144 the lists), which the code
before paid in the batch itself. Reported: the batches' p50 and the slowest five, and
the close (which finishes upkeep still under way).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

DIM = 384


def _vectors(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    common = np.random.default_rng(0).standard_normal(DIM).astype(np.float32)
    common /= np.linalg.norm(common)
    v = rng.standard_normal((n, DIM)).astype(np.float32) / np.sqrt(DIM) + 0.6 * common
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _quantiles(ms: list[float]) -> dict[str, float]:
    if not ms:
        return {"n": 0}
    ordered = sorted(ms)
    return {
        "n": len(ms),
        "p50": round(statistics.median(ordered), 2),
        "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
        "max": round(ordered[-1], 2),
    }


class _Searcher:
    """Searches back to back on a thread; latencies are kept by phase."""

    def __init__(self, codes: Any, queries: np.ndarray) -> None:
        self.codes, self.queries = codes, queries
        self.phase = "idle"
        self.ms: dict[str, list[float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            query = self.queries[i % len(self.queries)]
            start = time.perf_counter()
            self.codes.scored(query, 800)
            self.ms.setdefault(self.phase, []).append(1000 * (time.perf_counter() - start))
            i += 1
            time.sleep(0.002)  # a little room: searches arrive, not a saturating loop

    def __enter__(self) -> _Searcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _timed_lock(codes: Any) -> tuple[list[float], Any]:
    """Wrap the code file's lock so that each hold by this thread is timed (ms); returns
    the times and the lock to put back."""
    held: list[float] = []
    real = codes._lock
    me = threading.current_thread()

    class Timed:
        def __enter__(self) -> None:
            real.acquire()
            self.start = time.perf_counter()

        def __exit__(self, *exc: object) -> None:
            if threading.current_thread() is me:
                held.append(1000 * (time.perf_counter() - self.start))
            real.release()

    codes._lock = Timed()
    return held, real


def bench_codes(args: argparse.Namespace) -> dict[str, Any]:
    from memlane.stores import codes as module

    folder = Path(args.dir) / "codes"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    # The vectors a store's database would hold, by vid (here a vid is the rid).
    kept = np.zeros((args.n + args.extra, DIM), dtype=np.float16)
    codes = module.CodeFile.open(folder / "c.bin", DIM, vectors=lambda vids: kept[vids])
    start = time.perf_counter()
    for at in range(0, args.n, 100_000):
        part = _vectors(min(100_000, args.n - at), seed=at + 1)
        kept[at : at + len(part)] = part
        codes.append(np.arange(at, at + len(part)), part, np.arange(at, at + len(part)))
    codes.sync()
    built = time.perf_counter() - start
    codes.kill(np.arange(0, args.n, 10))
    codes.sync()
    queries = _vectors(200, seed=99)
    result: dict[str, Any] = {"n": args.n, "append_s": round(built, 1)}
    with _Searcher(codes, queries) as searcher:
        time.sleep(args.idle)
        for step, work in (
            ("compact", codes.compact),
            ("extra", None),
            ("make_lists", codes.make_lists),
        ):
            if work is None:  # rows appended after the lists' centres: placed next
                extra = _vectors(args.extra, seed=7)
                searcher.phase = "append"  # one append call of them all holds the lock
                kept[args.n :] = extra
                rids = np.arange(args.n, args.n + args.extra)
                codes.append(rids, extra, rids)
                codes.sync()
                searcher.phase = "after append"
                time.sleep(args.idle)
                continue
            held, real = _timed_lock(codes)
            searcher.phase = step
            start = time.perf_counter()
            work()
            wall = time.perf_counter() - start
            searcher.phase = f"after {step}"
            codes._lock = real
            result[step] = {
                "wall_s": round(wall, 2),
                "longest_lock_hold_ms": round(max(held), 1) if held else None,
            }
            time.sleep(args.idle)
    codes.close()
    result["searches_ms"] = {phase: _quantiles(ms) for phase, ms in searcher.ms.items()}
    return result


def bench_writes(args: argparse.Namespace) -> dict[str, Any]:
    from memlane import Memory, MemoryInput
    from memlane.testing import FakeEmbedder

    folder = Path(args.dir) / "writes"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    m = Memory(f"sqlite:///{folder}/m.db", embedder=FakeEmbedder())
    batches: list[tuple[int, float]] = []
    for at in range(0, args.n, 1000):
        texts = [
            MemoryInput(text=f"note {k} about w{k}x and v{k % 977}y") for k in range(at, at + 1000)
        ]
        start = time.perf_counter()
        m.add_many(texts, user_id="u")
        batches.append((at + 1000, 1000 * (time.perf_counter() - start)))
    start = time.perf_counter()
    m.close()
    closed = time.perf_counter() - start
    ms = [b for _, b in batches]
    slowest = sorted(batches, key=lambda b: -b[1])[:5]
    return {
        "n": args.n,
        "batch_ms": _quantiles(ms),
        "slowest": [{"rows_after": rows, "ms": round(b, 1)} for rows, b in slowest],
        "close_s": round(closed, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["codes", "writes"])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--extra", type=int, default=60_000)
    parser.add_argument("--idle", type=float, default=2.0, help="seconds of searches between steps")
    parser.add_argument("--dir", default="/work/scratch/upkeep")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args()
    result = bench_codes(args) if args.what == "codes" else bench_writes(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
