"""Recall of the default search with another embedding model, in both modes (turns and
facts), with the vector list weighed 1-4 and dense search alone for comparison.

    PYTHONPATH=src HF_HUB_OFFLINE=1 .venv/bin/python bench/embedder_recall.py \
        --embedder minilm=onnx --embedder "bge=onnx:/work/bge?model_id=bge-small-en-v1.5-int8" \
        [--vector-weights 1 2 3 4] [--data DIR] [--json out.json]

Each embedder ingests each mode once into a scratch SQLite store (with the default
sparse encoder); every question with evidence is then asked under the ``semantic``
recipe and under ``hybrid`` with the vector weight set to each value. Prints one row per
(embedder, mode, variant): R@5 and R@10 over categories 1-4, multi-hop (category 1)
R@10, and R@10 per conversation. Numbers go to bench/recall.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from memlane import Memory
from memlane.core.search import RECIPES, SearchRecipe
from memlane.embedders.spec import build_embedder
from memlane.errors import MemlaneError
from memlane.evals.locomo import HEADLINE_CATEGORIES, ask, ingest, load_dir
from memlane.ports.embedder import Embedder

ROOT = Path(__file__).resolve().parent
DEFAULT_DATA = ROOT.parents[1] / "shared" / "data" / "locomo-dev"


def variants(weights: list[float]) -> dict[str, SearchRecipe]:
    """``semantic``, then ``hybrid`` with each vector weight (``hybrid-v1`` is the default)."""
    base = RECIPES["hybrid"]
    out = {"semantic": RECIPES["semantic"]}
    for w in weights:
        methods = {**base.methods, "vector": w}
        out[f"hybrid-v{w:g}"] = dataclasses.replace(base, name=f"hybrid-v{w:g}", methods=methods)
    return out


def measure(data: Path, embedders: dict[str, Embedder], weights: list[float]) -> dict[str, Any]:
    """Per embedder, mode, variant and conversation: (category, R@5, R@10) of each question."""
    conversations = load_dir(data)
    out: dict[str, Any] = {}
    for name, embedder in embedders.items():
        for mode in ("turns", "observations"):
            with (
                tempfile.TemporaryDirectory(dir=ROOT) as scratch,
                Memory(f"sqlite:///{scratch}/e.db", embedder=embedder) as memory,
            ):
                ingest(memory, conversations, memories=mode)  # type: ignore[arg-type]
                for label, recipe in variants(weights).items():
                    per = {}
                    for conv in conversations:
                        rows, _, _ = ask(memory, [conv], recipe=recipe, memories=mode)  # type: ignore[arg-type]
                        per[conv.name] = [(c, s["recall@5"], s["recall@10"]) for c, s in rows]
                    out.setdefault(name, {}).setdefault(mode, {})[label] = per
                    print(f"{name} {mode} {label}: done", flush=True)
    return out


def _mean(rows: list[tuple[int, float, float]], k: int, category: int | None = None) -> float:
    picked = [
        r[1 if k == 5 else 2]
        for r in rows
        if r[0] in HEADLINE_CATEGORIES and (category is None or r[0] == category)
    ]
    return statistics.fmean(picked) if picked else 0.0


def summarize(found: dict[str, Any]) -> str:
    lines = [
        "| embedder | mode | search | R@5 | R@10 | multi-hop R@10 | R@10 per conversation |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, modes in found.items():
        for mode, by_variant in modes.items():
            for label, per in by_variant.items():
                pooled = [r for rows in per.values() for r in rows]
                each = " ".join(f"{_mean(rows, 10):.3f}" for rows in per.values())
                lines.append(
                    f"| {name} | {'facts' if mode == 'observations' else mode} | {label} | "
                    f"{_mean(pooled, 5):.3f} | {_mean(pooled, 10):.3f} | "
                    f"{_mean(pooled, 10, 1):.3f} | {each} |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="LoCoMo JSON files")
    parser.add_argument(
        "--embedder",
        action="append",
        metavar="NAME=SPEC",
        help="a name for the table and an embedder spec (memlane.embedders.spec); "
        "repeatable; default minilm=onnx",
    )
    parser.add_argument("--vector-weights", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not any(args.data.glob("*.json")):
        parser.error(f"no LoCoMo data at {args.data}: pass --data DIR (the locomo-dev folder)")
    if any(not w > 0 for w in args.vector_weights):
        parser.error("--vector-weights must be positive")
    if args.json and not args.json.parent.is_dir():
        parser.error(f"--json: no folder {args.json.parent}")
    embedders: dict[str, Embedder] = {}
    for item in args.embedder or ["minilm=onnx"]:
        name, sep, spec = item.partition("=")
        if not sep or not name or not spec:
            parser.error(f"--embedder takes NAME=SPEC, got {item!r}")
        if name in embedders:
            parser.error(f"--embedder: the name {name!r} is given twice")
        try:  # every model loads before the first long ingest, not after it
            embedders[name] = build_embedder(spec)
            embedders[name].embed(["a first text"])
        except MemlaneError as exc:
            parser.error(f"--embedder {item!r}: {exc}")
    found = measure(args.data, embedders, args.vector_weights)
    print(summarize(found))
    if args.json:
        args.json.write_text(json.dumps(found))


if __name__ == "__main__":
    main()
