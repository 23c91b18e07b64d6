"""Memory-manager overhead: what memlane itself adds around the model calls.

    .venv/bin/python bench/manager.py --memories 1000 --passes 50 --repeats 3

A loopback OpenAI-compatible server (the tests' scripted server) answers instantly, so
the times are memlane's: embedding candidates, the duplicate pre-pass, similarity lookups,
prompt building, validation and the one-transaction apply. Also measured: the context
builder at the same size, and background-job throughput (enqueue -> done). Store: a SQLite
file; embedder: the bundled local model (``--fake`` for the hashing fake).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from chat_server import ChatServer
from memlane import Memory, MemoryInput
from memlane.llm import OpenAIChat
from memlane.manager import MemoryManager
from memlane.testing import FakeEmbedder

TOPICS = ["hiking", "cooking", "jazz", "chess", "sailing", "painting", "running", "coffee"]


def _facts(n: int) -> list[str]:
    return [
        f"The user mentioned {TOPICS[i % len(TOPICS)]} plan number {i} with friend {i % 97}"
        for i in range(n)
    ]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(memories: int, passes: int, fake: bool) -> dict[str, float]:
    server = ChatServer().start()
    pass_no = {"n": 0}

    def respond(body: dict[str, object]) -> object:
        name = body["response_format"]["json_schema"]["name"]  # type: ignore[index]
        if name == "Extraction":
            pass_no["n"] += 1
            n = pass_no["n"]
            return {
                "memories": [
                    {"text": _facts(memories)[n % memories]},  # duplicate of a stored one
                    {"text": f"The user now prefers {TOPICS[n % len(TOPICS)]} on weekends {n}"},
                    {"text": f"Brand new fact number {n} about a kayak called K{n}"},
                ]
            }
        return {"decisions": [{"candidate": 0, "action": "ADD", "reason": "bench"}]}

    server.responder = respond
    embedder = FakeEmbedder() if fake else None
    with tempfile.TemporaryDirectory() as tmp:
        memory = Memory(f"sqlite:///{tmp}/bench.db", embedder=embedder)
        llm = OpenAIChat(base_url=server.base_url, model="bench")
        manager = MemoryManager(memory, llm)
        facts = _facts(memories)
        for start in range(0, memories, 500):
            memory.add_many([MemoryInput(t) for t in facts[start : start + 500]], user_id="u")
        memory.add_messages("s", [("user", "plan a trip"), ("assistant", "where to?")], user_id="u")
        times = []
        for i in range(passes):
            t0 = time.perf_counter()
            manager.process([("user", f"message {i}")], user_id="u")
            times.append((time.perf_counter() - t0) * 1000)
        ctx_times = []
        for i in range(passes):
            t0 = time.perf_counter()
            memory.build_context(
                user_id="u", session_id="s", query=f"{TOPICS[i % 8]} plans {i}", budget=1000
            )
            ctx_times.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        for i in range(passes):
            manager.process_in_background([("user", f"bg {i}")], user_id=f"bg{i % 4}")
        manager.flush(timeout=600)
        jobs_per_s = passes / (time.perf_counter() - t0)
        manager.close()
        memory.close()
    server.stop()
    return {
        "process_p50": statistics.median(times),
        "process_p95": _pct(times, 0.95),
        "context_p50": statistics.median(ctx_times),
        "context_p95": _pct(ctx_times, 0.95),
        "jobs_per_s": jobs_per_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--memories", type=int, default=1000)
    ap.add_argument("--passes", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fake", action="store_true", help="hashing fake embedder instead of MiniLM")
    args = ap.parse_args()
    runs = [run(args.memories, args.passes, args.fake) for _ in range(args.repeats)]
    print(f"memories={args.memories} passes={args.passes} repeats={args.repeats} fake={args.fake}")
    for key in runs[0]:
        print(f"{key:>12}: {statistics.median(r[key] for r in runs):8.1f}")


if __name__ == "__main__":
    main()
