"""Benchmark scripts say what they need instead of crashing without it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_latency_without_locomo_data_says_what_it_needs(tmp_path: Path) -> None:
    # A checkout with no ../shared/data next to it (the script's default data directory).
    (tmp_path / "repo" / "bench").mkdir(parents=True)
    script = tmp_path / "repo" / "bench" / "latency.py"
    shutil.copy(REPO / "bench" / "latency.py", script)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, str(script), "--sizes", "10", "--queries", "1", "--repeats", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert str(tmp_path / "shared" / "data" / "locomo-dev") in done.stderr
    assert "--data" in done.stderr and "locomo" in done.stderr.lower()
