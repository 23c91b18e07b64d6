"""The graph round of search (issue 18 item 3) on LoCoMo, in both memory modes.

    .venv/bin/python bench/graph_recall.py [--data DIR] [--weights 0.25,0.5,1.0]
        [--variant graph_docs=0 --variant graph_mentions=20 ...]

Each mode (``turns``: one episode per dialog turn; ``observations``: one fact per
observation) is ingested once into bench/results/graph-{mode}.db (kept, so later runs
skip ingest; the knowledge graph is recorded as the memories are written), then every
question is asked under the default recipe, the default with ``graph_weight`` at each of
``--weights``, and the default with ``graph_weight`` 0.5 and each ``--variant``. Prints
one line per mode and recipe: recall@5 and @10 over every question with evidence, @10 of
categories 1-4 (multi-hop, temporal, open-domain, single-hop), single-hop @5, and the
search latency p50 / p95 (ms, query embedding included).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from pathlib import Path
from typing import Any

from memlane import CoreConfig, Memory
from memlane.core.search import RECIPES, SearchRecipe
from memlane.embedders.onnx import OnnxEmbedder
from memlane.evals.locomo import ask, ingest, load_dir

ROOT = Path(__file__).resolve().parent
DEFAULT_DATA = ROOT.parents[1] / "shared" / "data" / "locomo-dev"


def recipes(weights: list[float], variants: list[str]) -> dict[str, SearchRecipe]:
    base = RECIPES["hybrid"]
    out = {"default (graph off)": base}
    for w in weights:
        out[f"graph w {w}"] = dataclasses.replace(base, graph_weight=w)
    for variant in variants:
        name, _, value = variant.partition("=")
        out[f"graph w 0.5, {name}={value}"] = dataclasses.replace(
            base, graph_weight=0.5, **{name: int(value)}
        )
    return out


def row(per_question: list[tuple[int, dict[str, float]]], latencies: list[float]) -> dict[str, Any]:
    def mean(category: int | None, k: int) -> float:
        xs = [s[f"recall@{k}"] for c, s in per_question if category in (None, c)]
        return round(sum(xs) / len(xs), 3) if xs else float("nan")

    ordered = sorted(latencies)
    out: dict[str, Any] = {"R@5": mean(None, 5), "R@10": mean(None, 10)}
    out.update({f"cat{c} R@10": mean(c, 10) for c in (1, 2, 3, 4)})
    out["cat4 R@5"] = mean(4, 5)
    out["p50 ms"] = round(statistics.median(ordered), 1)
    out["p95 ms"] = round(ordered[max(0, int(0.95 * len(ordered)) - 1)], 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="LoCoMo JSON files")
    parser.add_argument("--weights", default="0.25,0.5,1.0")
    parser.add_argument("--variant", action="append", default=[], help="FIELD=INT")
    args = parser.parse_args()
    if not args.data.is_dir():
        parser.error(f"no LoCoMo data at {args.data}: pass --data DIR (the locomo-dev folder)")
    conversations = load_dir(args.data)
    chosen = recipes([float(w) for w in args.weights.split(",") if w], args.variant)
    embedder = OnnxEmbedder()
    (ROOT / "results").mkdir(exist_ok=True)
    for mode in ("turns", "observations"):
        path = ROOT / "results" / f"graph-{mode}.db"
        fresh = not path.exists()
        config = CoreConfig(query_cache_size=0)
        with Memory(f"sqlite:///{path}", embedder=embedder, config=config) as memory:
            if fresh:
                ingest(memory, conversations, memories=mode)
            for name, recipe in chosen.items():
                per_question, latencies, _ = ask(
                    memory, conversations, recipe=recipe, memories=mode
                )
                print(mode, "|", name, "|", row(per_question, latencies), flush=True)


if __name__ == "__main__":
    main()
