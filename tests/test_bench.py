"""Benchmark scripts say what they need instead of crashing without it."""

from __future__ import annotations

import json
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


def test_audit_bench_without_locomo_data_says_what_it_needs(tmp_path: Path) -> None:
    (tmp_path / "repo" / "bench").mkdir(parents=True)
    script = tmp_path / "repo" / "bench" / "audit.py"
    shutil.copy(REPO / "bench" / "audit.py", script)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, str(script), "--sizes", "10", "--queries", "1", "--repeats", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "--data" in done.stderr
    assert str(tmp_path / "shared" / "data" / "locomo-dev") in done.stderr


def test_audit_bench_runs_on_a_little_data(tmp_path: Path) -> None:
    conversation = {
        "session_1": [{"speaker": "A", "text": f"I keep bees number {i}"} for i in range(30)],
        "qa": [{"question": f"How many bees, {i}?"} for i in range(6)],
    }
    (tmp_path / "conv.json").write_text(json.dumps(conversation))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "audit.py"), "--sizes", "30", "--queries", "3",
         "--repeats", "1", "--data", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout)
    assert line["size"] == 30 and line["search_all_p50"] > 0 and "add_writes_p50" in line
