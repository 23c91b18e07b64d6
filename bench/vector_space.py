"""Bytes on disk per stored vector in a SQLite file, before and after float16 storage
(and, since migration 15, with the vectors in a table of their own).

    .venv/bin/python bench/vector_space.py --n 10000
    .venv/bin/python bench/vector_space.py --n 10000 --layouts   # the options compared

Vectors are random unit vectors of 384 dimensions (the bundled MiniLM's size) keyed like
the embedding cache (model id, SHA-256 hex of a text), written through the store in
batches of 500. Reported per vector: the pages of the ``embeddings`` and ``vectors``
tables (``dbstat``, overflow pages included) and the growth of the file. Steps, on one file:

1. a new file as this memlane writes it (float16);
2. the same rows as memlane wrote them before migration 8 (float32), the migration's row
   taken out again, as a file from an older version looks;
3. that file opened by this memlane: migration 8 rewrites the rows in place, and
   migration 15 moves the vectors into a table of their own;
4. ``VACUUM``, which gives the pages the migration freed back to the file system.

``--layouts`` also measures bare tables of the same columns: page sizes, with and without
``WITHOUT ROWID``, float32 and float16. Files go under ``--dir`` (default: the memlane
data directory's ``bench-vector-space``), removed afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sqlite3
import time
from pathlib import Path

import numpy as np

from memlane.ports import store as ops
from memlane.settings import default_data_dir
from memlane.stores.sqlite import MIGRATIONS, SqliteStore

MODEL = "all-MiniLM-L6-v2"
DIM = 384


def vectors(n: int, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((n, DIM)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return [(hashlib.sha256(str(i).encode()).hexdigest(), v) for i, v in enumerate(matrix)]


def table_bytes(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        (size,) = conn.execute(
            "SELECT SUM(pgsize) FROM dbstat WHERE name IN ('embeddings', 'vectors')"
        ).fetchone()
        return int(size)
    finally:
        conn.close()


def free_bytes(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        (pages,) = conn.execute("PRAGMA freelist_count").fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        return int(pages) * int(page_size)
    finally:
        conn.close()


def report(step: str, path: Path, n: int, empty: int, seconds: float | None = None) -> None:
    took = "" if seconds is None else f"{seconds:.2f} s"
    print(
        f"| {step} | {table_bytes(path) / n:,.0f} | {(path.stat().st_size - empty) / n:,.0f} "
        f"| {free_bytes(path) / 1e6:.1f} MB | {took} |"
    )


def schema_7_file(path: Path, items: list[tuple[str, np.ndarray]]) -> None:
    """A file as memlane wrote it before migration 8: float32 rows, inserted as the old
    store did (INSERT OR REPLACE, 500 a transaction)."""
    (half,) = [v for v, name, _ in MIGRATIONS if "float16" in name]
    (apart,) = [v for v, name, _ in MIGRATIONS if "table of their own" in name]
    SqliteStore(path).setup()
    conn = sqlite3.connect(path, isolation_level=None)
    # Before migration 15 each vector sat in its key's row.
    conn.execute("DROP TABLE embeddings")
    conn.execute("DROP TABLE vectors")
    conn.execute(
        "CREATE TABLE embeddings (model TEXT NOT NULL, content_hash TEXT NOT NULL, "
        "dim INTEGER NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (model, content_hash)) "
        "WITHOUT ROWID"
    )
    conn.execute("DELETE FROM schema_migrations WHERE version IN (?, ?)", (half, apart))
    for start in range(0, len(items), 500):
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)",
            [
                (MODEL, h, DIM, np.asarray(v, "<f4").tobytes())
                for h, v in items[start : start + 500]
            ],
        )
        conn.execute("COMMIT")
    conn.close()


def new_file(path: Path, items: list[tuple[str, np.ndarray]]) -> None:
    store = SqliteStore(path)
    for start in range(0, len(items), 500):
        store.batch([ops.PutEmbeddings(MODEL, tuple(items[start : start + 500]))])
    store.close()


def empty_size(path: Path) -> int:
    """The size of a new store's file before any vector (the file is removed again)."""
    store = SqliteStore(path)
    store.setup()
    store.close()  # the last connection checkpoints the log into the file
    size = path.stat().st_size
    for file in path.parent.glob(path.name + "*"):
        file.unlink()
    return size


def store_steps(directory: Path, n: int) -> None:
    for leftover in directory.glob("*.db*"):  # from an interrupted run
        leftover.unlink()
    new, old = directory / "new.db", directory / "old.db"
    empty = empty_size(new)
    items = vectors(n)
    print(f"{n:,} vectors of {DIM} dimensions\n")
    print(
        "| file | vectors and their keys, bytes/vector | file growth, bytes/vector "
        "| free pages | time |"
    )
    print("| --- | --- | --- | --- | --- |")
    new_file(new, items)
    report("new file (float16)", new, n, empty)
    schema_7_file(old, items)
    report("before: float32 rows (schema 7)", old, n, empty)
    began = time.perf_counter()
    store = SqliteStore(old)
    store.setup()
    store.close()
    report("after migrations 8 and 15", old, n, empty, time.perf_counter() - began)
    began = time.perf_counter()
    conn = sqlite3.connect(old)
    conn.execute("VACUUM")
    conn.close()
    report("after VACUUM", old, n, empty, time.perf_counter() - began)


LAYOUT = (
    "CREATE TABLE embeddings (model TEXT NOT NULL, content_hash TEXT NOT NULL, "
    "dim INTEGER NOT NULL, vector BLOB NOT NULL, {key})"
)


def layouts(directory: Path, n: int) -> None:
    """The options compared, as bare tables (no memlane code)."""
    items = vectors(n)
    print("\n| page size | table | vector | embeddings bytes/vector |")
    print("| --- | --- | --- | --- |")
    for page_size in (4096, 8192, 16384, 65536):
        for rowid in (False, True):
            for dtype in ("<f4", "<f2"):
                path = directory / f"layout-{page_size}-{rowid}-{dtype[-1]}.db"
                conn = sqlite3.connect(path, isolation_level=None)
                conn.execute(f"PRAGMA page_size = {page_size}")
                conn.execute("PRAGMA journal_mode = WAL")
                key = (
                    "UNIQUE (model, content_hash)" if rowid else "PRIMARY KEY (model, content_hash)"
                )
                conn.execute(LAYOUT.format(key=key) + ("" if rowid else " WITHOUT ROWID"))
                for start in range(0, n, 500):
                    conn.execute("BEGIN")
                    conn.executemany(
                        "INSERT INTO embeddings VALUES (?, ?, ?, ?)",
                        [
                            (MODEL, h, DIM, v.astype(dtype).tobytes())
                            for h, v in items[start : start + 500]
                        ],
                    )
                    conn.execute("COMMIT")
                (size,) = conn.execute(
                    "SELECT SUM(pgsize) FROM dbstat WHERE name = 'embeddings' "
                    "OR name LIKE 'sqlite_autoindex_embeddings%'"
                ).fetchone()
                conn.close()
                table = "rowid + unique index" if rowid else "WITHOUT ROWID"
                kind = "float16" if dtype == "<f2" else "float32"
                print(f"| {page_size} | {table} | {kind} | {size / n:,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--layouts", action="store_true", help="also compare bare layouts")
    parser.add_argument("--dir", type=Path, default=default_data_dir() / "bench-vector-space")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    try:
        store_steps(args.dir, args.n)
        if args.layouts:
            layouts(args.dir, args.n)
    finally:
        shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
