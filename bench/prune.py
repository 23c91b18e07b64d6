"""The prune of vectors no record holds, at a million memories: every vector
(``PRUNE_EVERYTHING``, what each TTL purge and deleted session ran before schema 22 on
SQLite and migration 11 on PostgreSQL) against the texts records let go of
(``PRUNE_LET_GO``; on PostgreSQL ``TAKE_LET_GO`` then ``PRUNE_TAKEN``), each timed five
times right after 100 random records are deleted, in a transaction then rolled back
(nothing is changed).

    # SQLite: a copy of a store bench/scale.py made (--keep); the list is made in the copy
    # if its schema is older (the migration's time is printed)
    cp /work/bench1m/scale.db /work/scratch/prune1m.db
    PYTHONPATH=src .venv/bin/python bench/prune.py sqlite /work/scratch/prune1m.db

    # PostgreSQL: an embedded server of its own under --dir, N records with random 384-d
    # vectors loaded by COPY (no history, no HNSW index: the prune reads neither)
    PYTHONPATH=src:. .venv/bin/python bench/prune.py postgres --n 1000000

Results: bench/scale.md (2026-12-06, seventh session).
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from memlane.settings import default_data_dir

ROUNDS, DELETED = 5, 100


def report(name: str, times: list[float], pruned: int) -> None:
    rounded = ", ".join(f"{t:.1f}" for t in times)
    print(f"{name}: {rounded} ms, median {statistics.median(times):.1f} ({pruned} vectors)")


def timed_prunes(
    delete: Callable[[Sequence[object]], None],
    prune: Callable[[], int],
    rollback: Callable[[], None],
    keys: list[object],
) -> tuple[list[float], int]:
    times, pruned = [], 0
    for i in range(ROUNDS):
        delete(keys[i * DELETED : (i + 1) * DELETED])
        began = time.perf_counter()
        pruned = prune()
        times.append((time.perf_counter() - began) * 1000)
        rollback()
    return times, pruned


def sqlite_bench(path: Path) -> None:
    from memlane.stores.sqlite_sql import _LET_GO_SQL, PRUNE_EVERYTHING, PRUNE_LET_GO, split_sql

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'let_go'").fetchone():
        began = time.perf_counter()
        conn.execute("BEGIN")
        for statement in split_sql(_LET_GO_SQL):
            conn.execute(statement)
        conn.execute("COMMIT")
        print(f"the list made (schema 22's migration) in {time.perf_counter() - began:.2f} s")
    (n,) = conn.execute("SELECT count(*) FROM records").fetchone()
    rids = [r for (r,) in conn.execute("SELECT rid FROM records ORDER BY random() LIMIT 1000")]
    print(f"SQLite, {n:,} records")

    def delete(batch: Sequence[object]) -> None:
        conn.execute("BEGIN")
        conn.execute(f"DELETE FROM records WHERE rid IN ({','.join(map(str, batch))})")

    for name, statements in (("let go of", PRUNE_LET_GO), ("every vector", PRUNE_EVERYTHING)):

        def prune(statements: tuple[str, ...] = statements) -> int:
            count = int(conn.execute(statements[0]).rowcount)
            for statement in statements[1:]:
                conn.execute(statement)
            return count

        report(name, *timed_prunes(delete, prune, lambda: conn.execute("ROLLBACK"), rids))


def postgres_bench(n: int, root: Path) -> None:
    import psycopg
    from pgvector.psycopg import register_vector
    from tests.servers import start_postgres

    from memlane.models import content_hash, utcnow
    from memlane.stores.postgres import PostgresStore
    from memlane.stores.postgres_sql import PRUNE_EVERYTHING, PRUNE_TAKEN, TAKE_LET_GO

    root.mkdir(parents=True, exist_ok=True)
    server = start_postgres(root)
    try:
        url = server.new_database("prune")
        store = PostgresStore(url)
        store.setup()
        store.close()
        rng = np.random.default_rng(0)
        began = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            register_vector(conn)
            conn.execute("CREATE TEMP TABLE load (id text, text text, hash text)")
            for lo in range(0, n, 50_000):
                size = min(n, lo + 50_000) - lo
                texts = [f"memory {lo + i} about thing {rng.integers(10**9)}" for i in range(size)]
                hashes = [content_hash(t) for t in texts]
                with conn.cursor().copy("COPY load FROM STDIN") as copy:
                    for text, h in zip(texts, hashes, strict=True):
                        copy.write_row((uuid.uuid4().hex, text, h))
                vectors = rng.standard_normal((size, 384)).astype(np.float32)
                with conn.cursor().copy(
                    "COPY embeddings (model, content_hash, dim, vector) FROM STDIN "
                    "WITH (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(["text", "text", "int4", "vector"])
                    for h, v in zip(hashes, vectors, strict=True):
                        copy.write_row(("bench-model", h, 384, v))
            now = utcnow()
            conn.execute(
                "INSERT INTO records (id, user_id, kind, text, importance, created_at, "
                "updated_at, valid_from, content_hash, version, search) SELECT id, 'bench', "
                "'fact', text, 0.5, %s, %s, %s, hash, 1, to_tsvector('english', text) FROM load",
                (now, now, now),
            )
            conn.execute("ANALYZE")
            ids = [
                r for (r,) in conn.execute("SELECT id FROM records ORDER BY random() LIMIT 1000")
            ]
        print(f"PostgreSQL, {n:,} records loaded in {time.perf_counter() - began:.0f} s")
        with psycopg.connect(url) as conn:

            def delete(batch: Sequence[object]) -> None:
                conn.execute(
                    "DELETE FROM records WHERE user_id = 'bench' AND id = ANY(%s)", (list(batch),)
                )

            def let_go() -> int:
                taken = {"taken": sorted(h for (h,) in conn.execute(TAKE_LET_GO.encode()))}
                lock_vectors, lock_terms, vectors, terms = PRUNE_TAKEN
                conn.execute(lock_vectors.encode(), taken)
                conn.execute(lock_terms.encode(), taken)
                count = int(conn.execute(vectors.encode(), taken).rowcount)
                conn.execute(terms.encode(), taken)
                return count

            def everything() -> int:
                conn.execute(TAKE_LET_GO.encode())
                count = int(conn.execute(PRUNE_EVERYTHING[0].encode()).rowcount)
                conn.execute(PRUNE_EVERYTHING[1].encode())
                return count

            for name, prune in (("let go of", let_go), ("every vector", everything)):
                report(name, *timed_prunes(delete, prune, conn.rollback, list(ids)))
    finally:
        server.handle.cleanup()  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", choices=("sqlite", "postgres"))
    parser.add_argument("db", nargs="?", type=Path, help="sqlite: the copy of a store to use")
    parser.add_argument("--n", type=int, default=1_000_000, help="postgres: records")
    parser.add_argument(
        "--dir", type=Path, default=default_data_dir() / "bench-prune", help="postgres: its data"
    )
    args = parser.parse_args()
    if args.store == "sqlite":
        if args.db is None:
            parser.error("sqlite: give the copy of a store")
        sqlite_bench(args.db)
    else:
        postgres_bench(args.n, args.dir)


if __name__ == "__main__":
    main()
