"""Time of one ``add_messages`` call (two messages) by how long the session already is.

    .venv/bin/python bench/append.py [--lengths 2,40,2040,8040] [--calls 15]

Each session is filled to the length first (in runs of 1,000 messages), then the median
of ``--calls`` appends of a user and an assistant message is printed, one JSON line per
length. Store: a SQLite file (WAL) in a temporary directory; episodes are recorded (the
default); the fake embedder keeps the model's cost out, so what is left is memlane's and
SQLite's. Run it against other code with PYTHONPATH=that/src to compare.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from memlane import Memory
from memlane.testing import FakeEmbedder


def fill(m: Memory, session: str, length: int) -> None:
    done = 0
    while done < length:
        n = min(1000, length - done)
        turns = [("user" if (done + i) % 2 == 0 else "assistant", f"turn {done + i} of a chat")
                 for i in range(n)]  # fmt: skip
        m.add_messages(session, turns, user_id="u")
        done += n


def median_ms(m: Memory, session: str, calls: int) -> float:
    times = []
    for i in range(calls):
        start = time.perf_counter()
        m.add_messages(session, [("user", f"question {i}"), ("assistant", f"answer {i}")],
                       user_id="u")  # fmt: skip
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="2,40,2040,8040")
    parser.add_argument("--calls", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        m = Memory(f"sqlite:///{Path(tmp) / 'append.db'}", embedder=FakeEmbedder())
        for length in (int(x) for x in args.lengths.split(",")):
            session = f"s{length}"
            fill(m, session, length)
            ms = median_ms(m, session, args.calls)
            print(json.dumps({"messages": length, "add_messages_ms_median": round(ms, 2)}))
        m.close()


if __name__ == "__main__":
    main()
