"""The ONNX Runtime embedder against the torch one: query CPU time, batch throughput, load.

    .venv/bin/python bench/onnx_embedder.py [--queries 50] [--batch-texts 256] [--repeats 1]
        [--threads 1,2] [--embedders onnx,torch]

Every measurement runs in a fresh process (so imports and thread pools start clean), one
per embedder and thread count, interleaved so that both embedders see the same machine
load. Each child prints one JSON line:

* ``load_cpu_s`` / ``load_wall_s``: import of the embedder's module and runtime, and the
  model load, up to the first vector of a one-word text (a cold start; the page cache is
  warm after the first run).
* ``query_cpu_ms``: median ``time.process_time`` of embedding one short query, over
  ``--queries`` different questions (after one warm-up call). CPU time counts every
  thread of the process, so it is the cost a query adds to the machine.
* ``query_wall_ms``: the same calls' median wall time.
* ``batch_texts_per_s``: texts/s of one ``embed`` call on ``--batch-texts`` chat turns
  (about 20-40 words, like LoCoMo's), wall time; ``batch_cpu_texts_per_s`` per CPU second.

torch's threads are capped with ``torch.set_num_threads``; ONNX Runtime's with
``OnnxEmbedder(threads=...)``. Texts are generated, so no data is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from typing import Any

from corpus import WORDS

QUESTIONS = [
    "When did {} go to the lake?",
    "What does {} like to paint?",
    "Where did {} go camping with the kids?",
    "Why is {}'s new job stressful?",
    "Who brought the dog on the hike with {}?",
]
NAMES = ["Caroline", "Melanie", "Jon", "Gina", "Maria", "John", "Tim", "Audrey", "Andrew", "Joanna"]


def queries(n: int) -> list[str]:
    return [QUESTIONS[i % len(QUESTIONS)].format(NAMES[(i // 5) % len(NAMES)]) for i in range(n)]


def turns(n: int) -> list[str]:
    rng = random.Random(7)
    return [" ".join(rng.choices(WORDS, k=rng.randint(20, 40))) for _ in range(n)]


def child(name: str, threads: int, n_queries: int, n_batch: int) -> dict[str, Any]:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if name == "onnx":
        from memlane.embedders.onnx import OnnxEmbedder

        embedder: Any = OnnxEmbedder(threads=threads)
    else:
        import torch

        from memlane.embedders.torch import TorchEmbedder

        torch.set_num_threads(threads)
        embedder = TorchEmbedder(threads=threads)
    embedder.embed(["hello"])
    load_cpu, load_wall = time.process_time() - cpu0, time.perf_counter() - wall0
    embedder.embed(["warm-up question about the weekend"])
    cpu_ms, wall_ms = [], []
    for q in queries(n_queries):
        c, w = time.process_time(), time.perf_counter()
        embedder.embed([q])
        cpu_ms.append((time.process_time() - c) * 1000)
        wall_ms.append((time.perf_counter() - w) * 1000)
    texts = turns(n_batch)
    c, w = time.process_time(), time.perf_counter()
    embedder.embed(texts)
    batch_cpu, batch_wall = time.process_time() - c, time.perf_counter() - w
    return {
        "embedder": name,
        "model_id": embedder.model_id,
        "threads": threads,
        "load_cpu_s": round(load_cpu, 2),
        "load_wall_s": round(load_wall, 2),
        "query_cpu_ms": round(statistics.median(cpu_ms), 1),
        "query_wall_ms": round(statistics.median(wall_ms), 1),
        "batch_texts_per_s": round(n_batch / batch_wall, 1),
        "batch_cpu_texts_per_s": round(n_batch / batch_cpu, 1),
        "loadavg_1m": round(os.getloadavg()[0], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--batch-texts", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--embedders", default="onnx,torch")
    parser.add_argument("--child", nargs=2, metavar=("EMBEDDER", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, threads = args.child[0], int(args.child[1])
        print(json.dumps(child(name, threads, args.queries, args.batch_texts)), flush=True)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for _ in range(args.repeats):
        for threads in [int(t) for t in args.threads.split(",")]:
            for name in args.embedders.split(","):
                sizes = ["--queries", str(args.queries), "--batch-texts", str(args.batch_texts)]
                cmd = [sys.executable, __file__, "--child", name, str(threads), *sizes]
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    sys.exit(f"{name} with {threads} threads failed:\n{done.stderr}")
                print(done.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
