"""REST latency of `memlane serve` over loopback: what HTTP, auth and JSON add to a call.

    .venv/bin/python bench/serve.py --memories 1000 --requests 200 --repeats 3 [--fake]

Starts the ASGI app on a real uvicorn server on 127.0.0.1 (one process, SQLite file),
creates a key, loads ``--memories`` facts through the library, then times sequential
``POST /v1/users/u/memories`` calls, then ``POST /v1/users/u/search`` calls, from one
httpx client (keep-alive), then the same searches in-process through AsyncMemory.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import tempfile
import threading
import time

import httpx
import uvicorn

from memlane import AsyncMemory, Memory, MemoryInput
from memlane.server import KeyStore, create_app
from memlane.testing import FakeEmbedder


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(memories: int, requests: int, fake: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/serve.db"
        embedder = FakeEmbedder() if fake else None
        seed = Memory(url, embedder=embedder)
        texts = [
            f"Fact {i}: the user mentioned topic {i % 37} with friend {i % 101}"
            for i in range(memories)
        ]
        for start in range(0, memories, 500):
            seed.add_many([MemoryInput(t) for t in texts[start : start + 500]], user_id="acme::u")
        memory = AsyncMemory(seed.store, embedder=seed.embedder)
        keys = KeyStore(seed.store)
        key, _ = keys.create("acme")
        app = create_app(memory, keys, mcp=False)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}/v1/users/u"
        add, search = [], []
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
            for i in range(requests):
                t0 = time.perf_counter()
                client.post(
                    base + "/memories", json={"text": f"New fact {i} about kites"}
                ).raise_for_status()
                add.append((time.perf_counter() - t0) * 1000)
            # Searches after the adds, so both paths see the same warm vector cache.
            for i in range(requests):
                t0 = time.perf_counter()
                client.post(
                    base + "/search", json={"query": f"topic {i % 37} friend"}
                ).raise_for_status()
                search.append((time.perf_counter() - t0) * 1000)

        async def direct() -> list[float]:
            out = []
            for i in range(requests):
                t0 = time.perf_counter()
                await memory.search(f"topic {i % 37} friend", user_id="acme::u")
                out.append((time.perf_counter() - t0) * 1000)
            return out

        lib = asyncio.run(direct())
        server.should_exit = True
        thread.join(10)
        seed.close()
    return {
        "add_p50": statistics.median(add),
        "add_p95": _pct(add, 0.95),
        "search_p50": statistics.median(search),
        "search_p95": _pct(search, 0.95),
        "library_search_p50": statistics.median(lib),
        "library_search_p95": _pct(lib, 0.95),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--memories", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fake", action="store_true")
    args = ap.parse_args()
    runs = [run(args.memories, args.requests, args.fake) for _ in range(args.repeats)]
    print(
        f"memories={args.memories} requests={args.requests} repeats={args.repeats} fake={args.fake}"
    )
    for key in runs[0]:
        print(f"{key:>20}: {statistics.median(r[key] for r in runs):7.1f} ms")


if __name__ == "__main__":
    main()
