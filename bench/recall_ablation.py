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
from memlane.embedders import LocalEmbedder
from memlane.evals.locomo import ask, ingest, load_dir, report

ROOT = Path(__file__).resolve().parent
DEFAULT_DATA = ROOT.parents[1] / "shared" / "data" / "locomo-dev"

BASE = RECIPES["hybrid"]


def variants() -> dict[str, SearchRecipe]:
    v = dataclasses.replace
    plain = SearchRecipe("plain", {"vector": 1.0, "lexical": 1.0}, candidates=100, time_weight=0)
    return {
        "dense only": v(plain, name="dense", methods={"vector": 1.0}),
        "bm25 only": v(plain, name="bm25", methods={"lexical": 1.0}),
        "rrf dense+bm25": plain,
        "+ context vectors": v(
            plain, name="ctx", methods={"vector": 1, "context": 1, "lexical": 1}
        ),
        "default (hybrid)": BASE,
        "default, no time boost": v(BASE, time_weight=0.0),
        "default + neighbours 0.3": v(BASE, neighbor_weight=0.3),
        "default + neighbours 0.6": v(BASE, neighbor_weight=0.6),
        "default + speaker 0.2": v(BASE, speaker_weight=0.2),
        "default + recency 0.1": v(BASE, recency_weight=0.1),
        "default + mmr 0.8": v(BASE, mmr_lambda=0.8),
        "default, lexical x2": v(BASE, methods={"vector": 1, "context": 1, "lexical": 2}),
        "default, rrf k=20": v(BASE, rrf_k=20),
        "A: k=20, lexical x2, speaker 0.2": v(
            BASE, rrf_k=20, methods={"vector": 1, "context": 1, "lexical": 2}, speaker_weight=0.2
        ),
        "A without context vectors": v(
            BASE, rrf_k=20, methods={"vector": 1, "lexical": 2}, speaker_weight=0.2
        ),
        "A + neighbour floor 0.5": v(
            BASE,
            rrf_k=20,
            methods={"vector": 1, "context": 1, "lexical": 2},
            speaker_weight=0.2,
            neighbor_weight=0.5,
        ),
        "A + neighbour floor 0.8": v(
            BASE,
            rrf_k=20,
            methods={"vector": 1, "context": 1, "lexical": 2},
            speaker_weight=0.2,
            neighbor_weight=0.8,
        ),
        "A + floor 0.9": v(
            BASE,
            rrf_k=20,
            methods={"vector": 1, "context": 1, "lexical": 2},
            speaker_weight=0.2,
            neighbor_weight=0.9,
        ),
        "A + floor 0.8, window 2": v(
            BASE,
            rrf_k=20,
            methods={"vector": 1, "context": 1, "lexical": 2},
            speaker_weight=0.2,
            neighbor_weight=0.8,
            neighbor_window=2,
        ),
        "A + floor 0.8, top 40": v(
            BASE,
            rrf_k=20,
            methods={"vector": 1, "context": 1, "lexical": 2},
            speaker_weight=0.2,
            neighbor_weight=0.8,
            neighbor_top=40,
        ),
        "A + floor 0.8, no context vectors": v(
            BASE,
            rrf_k=20,
            methods={"vector": 1, "lexical": 2},
            speaker_weight=0.2,
            neighbor_weight=0.8,
        ),
        "B: k=10, lexical x2, speaker 0.2, neighbours 0.8 (decaying, window 2)": v(
            BASE,
            rrf_k=10,
            methods={"vector": 1, "context": 1, "lexical": 2},
            speaker_weight=0.2,
            neighbor_weight=0.8,
            neighbor_window=2,
        ),
        "B, window 3": v(
            BASE,
            rrf_k=10,
            methods={"vector": 1, "context": 1, "lexical": 2},
            speaker_weight=0.2,
            neighbor_weight=0.8,
            neighbor_window=3,
        ),
        "B, weight 0.9": v(
            BASE,
            rrf_k=10,
            methods={"vector": 1, "context": 1, "lexical": 2},
            speaker_weight=0.2,
            neighbor_weight=0.9,
            neighbor_window=2,
        ),
        "B, no context vectors": v(
            BASE,
            rrf_k=10,
            methods={"vector": 1, "lexical": 2},
            speaker_weight=0.2,
            neighbor_weight=0.8,
            neighbor_window=2,
        ),
        "B, k=20": v(
            BASE,
            rrf_k=20,
            methods={"vector": 1, "context": 1, "lexical": 2},
            speaker_weight=0.2,
            neighbor_weight=0.8,
            neighbor_window=2,
        ),
        "A, k=10": v(
            BASE, rrf_k=10, methods={"vector": 1, "context": 1, "lexical": 2}, speaker_weight=0.2
        ),
        "A, speaker 0.5": v(
            BASE, rrf_k=20, methods={"vector": 1, "context": 1, "lexical": 2}, speaker_weight=0.5
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--windows", default="1")
    parser.add_argument("--db", type=Path, help="evaluate this already ingested store")
    parser.add_argument("--only", default="", help="variant names separated by ';'")
    args = parser.parse_args()
    conversations = load_dir(args.data)
    embedder = LocalEmbedder()
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
            config=CoreConfig(context_window=window, track_access=False),
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
