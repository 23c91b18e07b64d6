"""Where a SQLite store's bytes go, and what keeping each memory's vector once would cost.

    PYTHONPATH=src .venv/bin/python bench/disk.py breakdown /work/b100k/scale.db
    PYTHONPATH=src .venv/bin/python bench/disk.py rerank --n 1000000 --dir /work/rr
    PYTHONPATH=src .venv/bin/python bench/disk.py quantize --data ../shared/data/locomo-dev

breakdown: the bytes of every table and index of the database (SQLite's ``dbstat``: pages
in use, so free space inside pages counts) and of the search-index folder beside it, per
memory (rows of ``records``).

rerank: what a search would pay to read the vectors it reranks (the 800 candidates of a
top 100) from the database instead of the float16 file beside the codes: a table of
``--n`` rows keyed by rowid (the packed layout a single copy would have) with BLOBs of one
vector each, float16 (768 B) or int8 plus its scale (388 B), read by ``rowid IN`` after the
table was read once (in the page cache, as a busy store's would be); against
``np.take`` from a mapped float16 array, the way a search reads them today. p50 / p95 of
50 reads of random rows each.

quantize: recall@10 of the nearest stored vectors when the stored form is float16, int8
(one scale a vector) or int4, against float32, over the LoCoMo turns of ``--data``
(embedded by the bundled ONNX model) and their questions.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

DIM = 384


def breakdown(db: Path) -> dict[str, Any]:
    """Bytes per memory of each table and index, and of the index folder's files."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (memories,) = conn.execute("SELECT count(*) FROM records").fetchone()
        (text,) = conn.execute("SELECT coalesce(sum(length(CAST(text AS BLOB))), 0) FROM records")
        rows = conn.execute(
            "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"
        ).fetchall()
    finally:
        conn.close()
    per = max(memories, 1)
    tables = {name: round(size / per, 1) for name, size in rows if size >= per}
    folder: dict[str, float] = {}
    index = db.with_name(db.name + ".index")
    for path in index.rglob("*") if index.is_dir() else []:
        if path.is_file():
            kind = "lexical" if "lexical" in path.parts else path.name
            folder[kind] = folder.get(kind, 0.0) + path.stat().st_size / per
    files = sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())
    total = files + sum(folder.values()) * per
    return {
        "memories": memories,
        "text_bytes_per_memory": round(text[0] / per, 1),
        "bytes_per_memory": round(total / per, 1),
        "database": tables,
        "index_folder": {
            k: round(v, 1) for k, v in sorted(folder.items(), key=lambda kv: -kv[1]) if v >= 0.1
        },
    }


def rerank(n: int, workdir: Path, reads: int = 50) -> dict[str, Any]:
    """Milliseconds to read k vectors of random rows: from SQLite by rowid, or mapped."""
    workdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    out: dict[str, Any] = {"n": n}
    for name, width in (("sqlite_float16", 2 * DIM), ("sqlite_int8", DIM + 4)):
        path = workdir / f"rerank-{width}.db"
        if not path.exists():
            conn = sqlite3.connect(path)
            conn.execute("CREATE TABLE vec (rid INTEGER PRIMARY KEY, v BLOB NOT NULL)")
            blob = os.urandom(width)
            for lo in range(0, n, 100_000):
                rows = ((i, blob) for i in range(lo, min(n, lo + 100_000)))
                conn.executemany("INSERT INTO vec VALUES (?, ?)", rows)
            conn.commit()
            conn.close()
        conn = sqlite3.connect(path)
        conn.execute("SELECT sum(length(v)) FROM vec").fetchone()  # warm, as a busy store is
        out[name] = {"bytes_per_row": round(path.stat().st_size / n, 1)}
        for k in (200, 400, 800):
            times = []
            for _ in range(reads):
                ids = sorted(rng.choice(n, k, replace=False).tolist())
                began = time.perf_counter()
                got = conn.execute(
                    "SELECT rid, v FROM vec WHERE rid IN (SELECT value FROM json_each(?))",
                    (json.dumps(ids),),
                ).fetchall()
                np.frombuffer(b"".join(v for _, v in got), dtype=np.uint8)
                times.append((time.perf_counter() - began) * 1000)
            out[name][str(k)] = _p50_p95(times)
        conn.close()
    mapped_path = workdir / "rerank.f16"
    if not mapped_path.exists():
        np.lib.format.open_memmap(mapped_path, mode="w+", dtype="<f2", shape=(n, DIM)).flush()
    mapped = np.load(mapped_path, mmap_mode="r")
    np.asarray(mapped).sum()  # in the page cache, as a search's populated map
    out["mapped_float16"] = {}
    for k in (200, 400, 800):
        times = []
        for _ in range(reads):
            ids = np.sort(rng.choice(n, k, replace=False))
            began = time.perf_counter()
            np.take(mapped, ids, axis=0).astype(np.float32)
            times.append((time.perf_counter() - began) * 1000)
        out["mapped_float16"][str(k)] = _p50_p95(times)
    return out


def quantize(data: Path) -> dict[str, Any]:
    """Recall@10 against float32 of the nearest stored vectors in each stored form."""
    from memlane.embedders.onnx import OnnxEmbedder

    turns: list[str] = []
    questions: list[str] = []
    for file in sorted(data.glob("*.json")):
        conversation = json.loads(file.read_text())
        for key, value in conversation.items():
            if key.startswith("session_") and isinstance(value, list):
                turns += [f"{t['speaker']}: {t['text']}" for t in value]
        questions += [q["question"] for q in conversation.get("qa", [])]
    if not turns or not questions:
        raise SystemExit(f"no LoCoMo turns and questions in {data}: pass --data DIR")
    embedder = OnnxEmbedder()
    stored = np.asarray(embedder.embed(turns), dtype=np.float32)
    queries = np.asarray(embedder.embed(questions), dtype=np.float32)
    exact = np.argsort(-(queries @ stored.T), axis=1)[:, :10]

    def symmetric(levels: int) -> Any:
        def apply(x: np.ndarray) -> np.ndarray:
            scale = np.abs(x).max(axis=1, keepdims=True) / levels
            return np.clip(np.round(x / scale), -levels, levels) * scale

        return apply

    forms = {
        "float16": lambda x: x.astype(np.float16).astype(np.float32),
        "int8": symmetric(127),
        "int4": symmetric(7),
    }
    out: dict[str, Any] = {"turns": len(turns), "questions": len(questions)}
    for name, form in forms.items():
        approx = form(stored)
        approx /= np.linalg.norm(approx, axis=1, keepdims=True)
        found = np.argsort(-(queries @ approx.T), axis=1)[:, :10]
        overlap = [len(set(a) & set(b)) / 10 for a, b in zip(exact, found, strict=True)]
        out[name] = {"recall_at_10": round(float(np.mean(overlap)), 4)}
    return out


def _p50_p95(times: list[float]) -> list[float]:
    return [round(statistics.median(times), 2), round(float(np.percentile(times, 95)), 2)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    one = sub.add_parser("breakdown")
    one.add_argument("db", type=Path)
    two = sub.add_parser("rerank")
    two.add_argument("--n", type=int, default=1_000_000)
    two.add_argument("--dir", type=Path, default=Path("bench-disk"))
    three = sub.add_parser("quantize")
    default_data = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo-dev"
    three.add_argument("--data", type=Path, default=default_data)
    args = parser.parse_args(argv)
    if args.what == "breakdown":
        result = breakdown(args.db)
    elif args.what == "rerank":
        result = rerank(args.n, args.dir)
    else:
        result = quantize(args.data)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
