"""How many CPU threads a local embedder (ONNX Runtime, torch) uses when none are given;
shared by both, so neither embedder imports the other."""

from __future__ import annotations

import os


def default_threads() -> int:
    """Threads when none are given: the CPUs this process may use, at most 2."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(2, cpus))
