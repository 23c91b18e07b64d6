"""bench/scale.py at a tiny size writes every figure it promises to its --json file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIMING = {"p50_ms", "p95_ms", "cpu_p50_ms", "cpu_p95_ms", "runs"}


def _scale(*args: str) -> subprocess.CompletedProcess[str]:
    """bench/scale.py run with these arguments on this checkout's memlane; it succeeded."""
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "scale.py"), *args],
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_scale_bench_json_has_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    sizes = ["--sizes", "200", "--stores", "sqlite", "--queries", "8", "--runs", "2"]
    done = _scale(*sizes, "--dir", str(tmp_path / "data"), "--json", str(out))
    assert "| store | memories |" in done.stdout  # the table is still printed
    report = json.loads(out.read_text())
    assert report["meta"]["embedder"] == "fake" and report["meta"]["runs"] == 2
    (row,) = report["results"]
    assert row["store"] == "sqlite" and row["memories"] == 200
    assert row["ingest"]["per_s"] > 0 and row["ingest"]["path"] == "add_many"
    disk = row["disk"]
    assert disk["bytes"] == sum(disk["files"].values()) and "scale.db" in disk["files"]
    assert disk["bytes_per_memory"] > disk["text_bytes_per_memory"] > 50
    first = row["first_search"]["excluded"]
    assert len(first["runs"]) == 3 and first["wall_ms"] > 0 and first["cpu_ms"] > 0
    search = row["search"]["excluded"]
    assert search["peak_rss_mb"] > 0
    for recipe in ("hybrid", "semantic", "lexical"):
        assert set(search[recipe]) >= TIMING and len(search[recipe]["runs"]) == 2
    assert 0.0 <= search["semantic"]["recall_at_10"] <= 1.0
    assert "effects" not in search  # only with --effects
    assert not (tmp_path / "data").exists()  # removed without --keep


def test_scale_bench_says_where_a_search_s_time_goes(tmp_path: Path) -> None:
    out = tmp_path / "effects.json"
    args = ["--sizes", "150", "--stores", "sqlite", "--queries", "5", "--runs", "2"]
    done = _scale(*args, "--effects", "--dir", str(tmp_path / "data"), "--json", str(out))
    assert "| effect | per search | p50 ms | p95 ms |" in done.stdout
    (row,) = json.loads(out.read_text())["results"]
    effects = row["search"]["excluded"]["effects"]
    # one candidate batch a search (SQLite reads the lexical list set aside in the vector
    # search's transaction), the query's vector, the records ranked, and the core's own
    # work between them
    assert effects["VectorSearch+LexicalSearch"]["per_search"] == 1.0
    assert effects["ReadAside"]["per_search"] == 1.0
    assert effects["Embed"]["per_search"] == 1.0
    assert effects["GetRecords"]["per_search"] >= 1.0
    whole = effects["whole search"]
    assert whole["per_search"] == 1.0 and whole["p95_ms"] >= whole["p50_ms"] > 0
    for name, e in effects.items():
        assert 0 <= e["p50_ms"] <= e["p95_ms"], name
        if name != "whole search":
            assert e["p50_ms"] <= whole["p95_ms"], name  # a part of a search


def test_scale_bench_stores_and_searches_with_sparse_terms(tmp_path: Path) -> None:
    import importlib.util

    from memlane import CoreConfig, Memory

    data = tmp_path / "data"
    args = ["--sizes", "300", "--stores", "sqlite", "--bulk", "--sparse", "--queries", "6"]
    _scale(*args, "--runs", "1", "--dir", str(data), "--keep", "--json", str(tmp_path / "s.json"))
    assert json.loads((tmp_path / "s.json").read_text())["meta"]["sparse_terms"] is True
    spec = importlib.util.spec_from_file_location("scale_bench", REPO / "bench" / "scale.py")
    assert spec is not None and spec.loader is not None
    scale = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = scale  # its dataclasses look their module up
    try:
        spec.loader.exec_module(scale)
    finally:
        del sys.modules[spec.name]
    queries = json.loads((data / "queries.json").read_text())
    effects: list[str] = []
    for mode in ("excluded", "included"):  # terms made before timing, or by the model
        terms = scale.WordTerms(data, mode)
        with Memory(
            f"sqlite:///{data / 'scale.db'}",
            embedder=scale.FakeEmbedder(dim=scale.DIM, model_id=scale.FAKE_MODEL_ID),
            sparse=terms,
            config=CoreConfig(query_cache_size=0),
        ) as memory:
            hits = memory.search(queries[0], user_id="bench", explain=True)
            # every memory has terms, so the sparse list scores the candidates
            assert any("sparse" in (h.explanation or {}) for h in hits)
            effects.clear()
            memory.on_effect = lambda effect, _: effects.append(type(effect).__name__)
            memory.search(queries[1], user_id="bench")
            # the query's terms are made beside its vector, as with the model itself
            assert "EmbedQuery" in effects and "EncodeSparse" not in effects
        (memory_terms,) = terms.encode(["memory 1: w0000x w0001x"])
        assert 0 < len(memory_terms) <= 64


def test_scale_bench_bulk_loads_postgres_with_sparse_terms(tmp_path: Path, pg_url: str) -> None:
    import psycopg

    data = tmp_path / "data"
    args = ["--sizes", "300", "--stores", "postgres", "--postgres", pg_url, "--bulk"]
    out = tmp_path / "pg.json"
    copies = ["--lexical-dir", str(tmp_path / "copies"), "--json", str(out)]
    done = _scale(*args, "--sparse", "--queries", "6", "--runs", "1", "--dir", str(data), *copies)
    assert "| postgres | 300 |" in done.stdout
    (result,) = json.loads(out.read_text())["results"]
    hybrid = result["search"]["excluded"]["hybrid"]
    assert hybrid["server_cpu_p50_ms"] > 0  # the server's CPU, also with lexical copies
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE s.content_hash IS NOT NULL) FROM records r "
            "LEFT JOIN sparse_terms s ON s.content_hash = r.content_hash"
        ).fetchone()
    assert row == (300, 300)  # every memory has its terms, copied with its vector


def test_a_batch_that_joins_reads_made_aside_is_named_by_both() -> None:
    """In the effects table, a batch joining reads that ran beside it (PostgreSQL) says
    so; one that ran them itself (SQLite) is named as the one batch it is."""
    import importlib.util

    import numpy as np

    from memlane.core.flow import Aside, Batch, ReadAside
    from memlane.models import Filters
    from memlane.ports import store as ops

    spec = importlib.util.spec_from_file_location("scale_bench", REPO / "bench" / "scale.py")
    assert spec is not None and spec.loader is not None
    scale = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = scale
    try:
        spec.loader.exec_module(scale)
    finally:
        del sys.modules[spec.name]
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    vector = ops.VectorSearch("u", Filters(), now, "m", np.zeros(4, dtype=np.float32), 10)
    lexical = (ops.LexicalSearch("u", Filters(), now, "q", 10),)
    assert scale.effect_name(Batch((vector,), Aside(lexical))) == "VectorSearch+LexicalSearch"
    running = Aside(lexical, started=lambda: [])
    assert scale.effect_name(Batch((vector,), running)) == "VectorSearch (joins LexicalSearch)"
    assert scale.effect_name(Batch((vector,))) == "VectorSearch"
    assert scale.effect_name(ReadAside(lexical)) == "ReadAside"
