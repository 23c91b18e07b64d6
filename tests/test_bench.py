"""Benchmark scripts say what they need instead of crashing without it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from memlane.core.search import RECIPES

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["latency.py", "audit.py", "encryption.py"])
def test_a_bench_without_locomo_data_says_what_it_needs(tmp_path: Path, name: str) -> None:
    # A checkout with no ../shared/data next to it (the script's default data directory).
    (tmp_path / "repo" / "bench").mkdir(parents=True)
    for script in {"latency.py", name}:  # the others take their corpus from latency.py
        shutil.copy(REPO / "bench" / script, tmp_path / "repo" / "bench" / script)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    flags = ["--sizes", "10"] if name != "encryption.py" else ["--size", "10"]
    done = subprocess.run(
        [sys.executable, str(tmp_path / "repo" / "bench" / name), *flags, "--queries", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert str(tmp_path / "shared" / "data" / "locomo-dev") in done.stderr
    assert "--data" in done.stderr and "locomo" in done.stderr.lower()


@pytest.mark.parametrize("name", ["graph_recall.py", "sparse_recall.py", "embedder_recall.py"])
def test_a_recall_bench_without_locomo_data_says_what_it_needs(tmp_path: Path, name: str) -> None:
    (tmp_path / "repo" / "bench").mkdir(parents=True)
    shutil.copy(REPO / "bench" / name, tmp_path / "repo" / "bench")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    script = tmp_path / "repo" / "bench" / name
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert str(tmp_path / "shared" / "data" / "locomo-dev") in done.stderr
    assert "--data" in done.stderr and "locomo" in done.stderr.lower()


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


def test_upkeep_bench_runs_on_a_little_data(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    script = str(REPO / "bench" / "upkeep.py")
    codes = subprocess.run(
        [sys.executable, script, "codes", "--n", "5000", "--extra", "500", "--idle", "0.2",
         "--dir", str(tmp_path), "--json", str(tmp_path / "codes.json")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert codes.returncode == 0, codes.stderr
    result = json.loads((tmp_path / "codes.json").read_text())
    assert result["n"] == 5000 and result["compact"]["longest_lock_hold_ms"] > 0
    assert result["make_lists"]["wall_s"] >= 0 and result["searches_ms"]["idle"]["n"] > 0
    writes = subprocess.run(
        [sys.executable, script, "writes", "--n", "3000", "--dir", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert writes.returncode == 0, writes.stderr
    result = json.loads(writes.stdout)
    assert result["batch_ms"]["n"] == 3 and len(result["slowest"]) == 3


def test_disk_bench_runs_on_a_little_data(tmp_path: Path) -> None:
    from memlane import Memory
    from memlane.core.base import MemoryInput
    from memlane.testing import FakeEmbedder

    db = tmp_path / "little.db"
    with Memory(f"sqlite:///{db}", embedder=FakeEmbedder()) as memory:
        items = [MemoryInput(text=f"memory number {i} about bees") for i in range(300)]
        memory.add_many(items, user_id="u")
        memory.search("bees", user_id="u")  # the index folder is made
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    script = str(REPO / "bench" / "disk.py")
    done = subprocess.run(
        [sys.executable, script, "breakdown", str(db)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["memories"] == 300 and result["text_bytes_per_memory"] > 20
    assert result["database"]["records"] > 0 and result["index_folder"]["lexical"] > 0
    assert result["bytes_per_memory"] > result["database"]["records"]
    done = subprocess.run(
        [sys.executable, script, "rerank", "--n", "2000", "--dir", str(tmp_path / "rr")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["sqlite_int8"]["bytes_per_row"] < result["sqlite_float16"]["bytes_per_row"]
    assert all(len(result[k]["800"]) == 2 for k in ("sqlite_int8", "mapped_float16"))


def _bench(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A bench script run on this checkout's source, offline."""
    return subprocess.run(
        [sys.executable, script, *args],
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_embedder_recall_bench_runs_on_a_little_data(tmp_path: Path) -> None:
    """Two embedders, both modes, dense alone and the hybrid at two vector weights; with
    the real model the kitten question finds its turn first under each. A spec that
    cannot load, a name given twice or a weight of 0 is refused before any ingest."""
    from test_eval_locomo import CONVERSATION

    data = tmp_path / "locomo"
    data.mkdir()
    (data / "c1.json").write_text(json.dumps(CONVERSATION))
    out = tmp_path / "found.json"
    script = str(REPO / "bench" / "embedder_recall.py")
    args = ["--data", str(data), "--vector-weights", "1", "2", "--json", str(out)]
    done = _bench(script, *args, "--embedder", "a=onnx", "--embedder", "b=fake:64")
    assert done.returncode == 0, done.stderr
    found = json.loads(out.read_text())
    assert set(found) == {"a", "b"}
    for modes in found.values():
        assert set(modes) == {"turns", "observations"}
        for by_variant in modes.values():
            assert set(by_variant) == {"semantic", "hybrid-v1", "hybrid-v2"}
    for by_variant in (found["a"]["turns"], found["a"]["observations"]):
        for per_conversation in by_variant.values():
            assert (4, 1.0, 1.0) in [tuple(r) for r in per_conversation["c1"]]
    assert "| a | turns | hybrid-v1 |" in done.stdout and "| b | facts | semantic |" in done.stdout
    refused = {
        "NAME=SPEC": ["--embedder", "nospec"],
        "no model.onnx": ["--embedder", f"x=onnx:{tmp_path}"],
        "given twice": ["--embedder", "a=fake", "--embedder", "a=fake:8"],
        "must be positive": ["--embedder", "a=fake", "--vector-weights", "0"],
    }
    for says, extra in refused.items():
        bad = _bench(script, *args, *extra)
        assert bad.returncode == 2 and says in bad.stderr and "Traceback" not in bad.stderr


def test_sparse_recall_bench_runs_on_a_little_data(tmp_path: Path) -> None:
    from test_eval_locomo import CONVERSATION

    data = tmp_path / "locomo"
    data.mkdir()
    for name in ("c1", "c2"):
        (data / f"{name}.json").write_text(json.dumps(CONVERSATION))
    out = tmp_path / "found.json"
    script = str(REPO / "bench" / "sparse_recall.py")
    done = _bench(script, "--data", str(data), "--weights", "0", "1", "--json", str(out))
    assert done.returncode == 0, done.stderr
    found = json.loads(out.read_text())
    shipped = f"{RECIPES['hybrid'].methods['sparse']:g}"  # always measured too
    assert set(found) == {"turns", "observations"} and set(found["turns"]) == {"0", "1", shipped}
    # the kitten question finds its turn first with the list off and on, in both files
    for mode in found.values():
        for per_conversation in mode.values():
            for conversation in per_conversation.values():
                assert (4, 1.0, 1.0) in [tuple(r) for r in conversation["rows"]]
    assert "| held out | picked |" in done.stdout
