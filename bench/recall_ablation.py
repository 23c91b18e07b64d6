"""Ablation of memlane's retrieval on LoCoMo: what each technique does to recall.

    .venv/bin/python bench/recall_ablation.py [--data DIR] [--windows 0,1,2] [--only NAME,...]

For each context window (how many earlier turns an episode is embedded with) the
conversations are ingested once into bench/results/locomo-w{N}.db (kept, so later runs
skip ingest), then every recipe variant below asks every question through
Memory.search. Prints a Markdown table of recall@k (categories 1-4) and latency.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from memlane import CoreConfig, Memory
from memlane.core.search import RECIPES, SearchRecipe
from memlane.embedders.onnx import OnnxEmbedder
from memlane.evals.locomo import ask, ingest, load_dir, report

ROOT = Path(__file__).resolve().parent
DEFAULT_DATA = ROOT.parents[1] / "shared" / "data" / "locomo-dev"

BASE = RECIPES["hybrid"]


def variants() -> dict[str, SearchRecipe]:
    """Cumulative steps from plain fusion to the default, then leave-one-out from it."""
    v = dataclasses.replace
    plain = SearchRecipe(
        "plain",
        {"vector": 1.0, "lexical": 1.0},
        fusion="rrf",
        rrf_k=60,
        neighbor_weight=0.0,
        time_weight=0.0,
        speaker_weight=0.0,
        lexical_context_weight=0.0,
    )
    lex2 = v(plain, methods={"vector": 1.0, "lexical": 2.0})
    k10 = v(lex2, rrf_k=10)
    ctx = v(k10, methods={"vector": 1.0, "context": 1.0, "lexical": 2.0})
    speaker = v(ctx, speaker_weight=BASE.speaker_weight)
    time = v(speaker, time_weight=BASE.time_weight)
    # Rows up to "= previous default" use RRF (the default until session 3) with the
    # session-2 parameters (neighbour floor 0.8, lexical context 0.5); then the fusion
    # changes (S3: score fusion with those parameters), then the two parameters. Context
    # vector rows need an ingest with --windows 1.
    old = v(BASE, neighbor_weight=0.8, lexical_context_weight=0.5)
    rrf_base = v(old, fusion="rrf", methods={"vector": 1.0, "context": 1.0, "lexical": 2.0})
    previous = v(old, fusion="rrf", methods={"vector": 1.0, "lexical": 2.0})
    s3 = old  # score fusion, BM25 x3, neighbour 0.8, lexical context 0.5
    return {
        "dense only (MiniLM)": v(plain, methods={"vector": 1.0}),
        "BM25 only (FTS5, porter)": v(plain, methods={"lexical": 1.0}),
        "RRF dense + BM25 (k=60)": plain,
        "+ BM25 weight 2": lex2,
        "+ RRF k=10": k10,
        "+ context vectors (episode with the turn before)": ctx,
        "+ speaker boost 0.2": speaker,
        "+ time-window boost 0.5": time,
        "+ neighbour floors 0.8, window 2": v(rrf_base, lexical_context_weight=0.0),
        "+ lexical context 0.5 (previous turn, 2nd FTS5 column)": rrf_base,
        "= previous default: without context vectors (RRF k=10, BM25 x2)": previous,
        "+ score fusion (each list / its best) instead of RRF, BM25 x2": v(
            previous, fusion="score"
        ),
        "+ BM25 x3 (S3)": s3,
        "+ neighbour floor 0.9": v(s3, neighbor_weight=0.9),
        "+ lexical context 1.0 = shipped default (hybrid)": BASE,
        "S3, BM25 x1": v(s3, methods={"vector": 1.0, "lexical": 1.0}),
        "S3 with RRF k=10 instead of score fusion": v(s3, fusion="rrf"),
        "S3 + context vectors": v(s3, methods={"vector": 1.0, "context": 1.0, "lexical": 3.0}),
        "default + context vectors": v(
            BASE, methods={"vector": 1.0, "context": 1.0, "lexical": 3.0}
        ),
        "S3, lexical context 0.3": v(s3, lexical_context_weight=0.3),
        "S3, lexical context 1.0": v(s3, lexical_context_weight=1.0),
        "S3, lexical context 1.5": v(s3, lexical_context_weight=1.5),
        "S3, lexical context 2.0": v(s3, lexical_context_weight=2.0),
        "S3, neighbour weight 0.5": v(s3, neighbor_weight=0.5),
        "S3, neighbour weight 1.0": v(s3, neighbor_weight=1.0),
        "S3, neighbour window 1": v(s3, neighbor_window=1),
        "S3, neighbour window 3": v(s3, neighbor_window=3),
        "S3, 50 candidates per list": v(s3, candidates=50),
        "S3 without neighbour floors": v(s3, neighbor_weight=0.0),
        "S3 without speaker boost": v(s3, speaker_weight=0.0),
        "S3 without time boost": v(s3, time_weight=0.0),
        "row 10 without neighbour floors": v(rrf_base, neighbor_weight=0.0),
        "row 10 without speaker boost": v(rrf_base, speaker_weight=0.0),
        "row 10 without time boost": v(rrf_base, time_weight=0.0),
        "row 10, RRF k=60": v(rrf_base, rrf_k=60),
        "row 10, neighbour window 1": v(rrf_base, neighbor_window=1),
        "row 10, neighbour window 3": v(rrf_base, neighbor_window=3),
        "row 10, neighbour weight 0.5": v(rrf_base, neighbor_weight=0.5),
        "row 10, 50 candidates per list": v(rrf_base, candidates=50),
        "row 10 + recency 0.1 (half-life 30 d)": v(rrf_base, recency_weight=0.1),
        "row 10 + MMR 0.8": v(rrf_base, mmr_lambda=0.8),
        "row 10 + dense query reworded as a statement": v(rrf_base, rewrite_query=True),
        "row 10 + feedback 3 docs (vector + lexical)": v(rrf_base, feedback_docs=3),
        "row 10 + feedback 5 docs (vector + lexical)": v(rrf_base, feedback_docs=5),
        "row 10 + feedback 3 docs, vector only": v(
            rrf_base, feedback_docs=3, feedback_lexical_weight=0.0
        ),
        "row 10 + feedback 3 docs, lexical only": v(
            rrf_base, feedback_docs=3, feedback_vector_weight=0.0
        ),
        "recipe fast": RECIPES["fast"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--windows", default="1")
    parser.add_argument("--db", type=Path, help="evaluate this already ingested store")
    parser.add_argument(
        "--cold", action="store_true", help="embed every query anew (latency with embedding)"
    )
    parser.add_argument("--only", default="", help="variant names separated by ';'")
    args = parser.parse_args()
    conversations = load_dir(args.data)
    embedder = OnnxEmbedder()
    (ROOT / "results").mkdir(exist_ok=True)
    chosen = {k: r for k, r in variants().items() if not args.only or k in args.only.split(";")}
    print("| window | variant | R@1 | R@5 | R@10 | R@50 | hit@10 | p50 ms | p95 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for window in (int(w) for w in args.windows.split(",")):
        path = args.db or ROOT / "results" / f"locomo-w{window}.db"
        fresh = not path.exists()
        with Memory(
            f"sqlite:///{path}",
            embedder=embedder,
            config=CoreConfig(
                context_window=window,
                track_access=False,
                query_cache_size=0 if args.cold else 1024,
            ),
        ) as memory:
            turns, seconds = ingest(memory, conversations) if fresh else (0, 0.0)
            for name, recipe in chosen.items():
                scores, latencies, skipped = ask(memory, conversations, recipe=recipe)
                r = report(scores, latencies, skipped, turns, seconds, conversations, recipe)
                o = r.overall
                print(
                    f"| {window} | {name} | {o['recall@1']:.3f} | {o['recall@5']:.3f} | "
                    f"{o['recall@10']:.3f} | {o['recall@50']:.3f} | {o['hit@10']:.3f} | "
                    f"{r.latency_ms['p50']:.1f} | {r.latency_ms['p95']:.1f} |",
                    flush=True,
                )
            if fresh:
                print(f"<!-- ingest w={window}: {turns / seconds:.1f} turns/s -->", flush=True)


if __name__ == "__main__":
    main()
