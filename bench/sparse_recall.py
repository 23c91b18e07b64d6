"""What the sparse list (SPLADE-tiny terms, memlane.ports.sparse) does to recall, per
conversation, in both modes (turns and facts), and which weight a leave-one-conversation-
out pick would choose.

    PYTHONPATH=src HF_HUB_OFFLINE=1 .venv/bin/python bench/sparse_recall.py \
        [--data DIR] [--weights 0 0.5 1 2] [--floor F] [--json out.json]

Each mode is ingested once into a scratch SQLite store (the default embedder and the
sparse encoder, so every memory has its terms); every question with evidence is then
asked under the default ``hybrid`` recipe with the sparse weight set to each value
(0: the list off). For each held-out conversation the weight best on the other four
(turns R@10 pooled over their questions; ties to the shipped default) is scored on it.
Numbers go to bench/recall.md.
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
from memlane.core.search import RECIPES
from memlane.evals.locomo import HEADLINE_CATEGORIES, ask, ingest, load_dir

ROOT = Path(__file__).resolve().parent
DEFAULT_DATA = ROOT.parents[1] / "shared" / "data" / "locomo-dev"
SHIPPED = RECIPES["hybrid"].methods.get("sparse", 0.0)


def _recipe(weight: float, floor: float | None = None) -> Any:
    base = RECIPES["hybrid"]
    methods = {m: w for m, w in base.methods.items() if m != "sparse"}
    if weight > 0:
        methods["sparse"] = weight
    floor = base.sparse_floor if floor is None else floor
    return dataclasses.replace(base, name=f"sparse-{weight:g}", methods=methods, sparse_floor=floor)


def measure(data: Path, weights: list[float], floor: float | None = None) -> dict[str, Any]:
    """Per mode, per weight, per conversation: (category, R@5, R@10) of every question."""
    conversations = load_dir(data)
    out: dict[str, Any] = {}
    for mode in ("turns", "observations"):
        with (
            tempfile.TemporaryDirectory(dir=ROOT) as scratch,
            Memory(f"sqlite:///{scratch}/sparse.db") as memory,
        ):
            ingest(memory, conversations, memories=mode)  # type: ignore[arg-type]
            for weight in weights:
                per_conv = {}
                for conv in conversations:
                    rows, latencies, _ = ask(
                        memory,
                        [conv],
                        recipe=_recipe(weight, floor),
                        memories=mode,  # type: ignore[arg-type]
                    )
                    per_conv[conv.name] = {
                        "rows": [(c, s["recall@5"], s["recall@10"]) for c, s in rows],
                        "p50_ms": statistics.median(latencies),
                    }
                out.setdefault(mode, {})[f"{weight:g}"] = per_conv
                print(f"{mode} w={weight:g}: done", flush=True)
    return out


def _mean(rows: list[tuple[int, float, float]], k: int) -> float:
    picked = [r[1 if k == 5 else 2] for r in rows if r[0] in HEADLINE_CATEGORIES]
    return statistics.fmean(picked) if picked else 0.0


def summarize(found: dict[str, Any], weights: list[float]) -> str:
    names = list(next(iter(found["turns"].values())))
    lines = ["| sparse weight | mode | R@5 | R@10 | per conversation R@5 | per conversation R@10 |"]
    lines.append("|---|---|---|---|---|---|")
    for mode in ("turns", "observations"):
        for w in weights:
            per = found[mode][f"{w:g}"]
            pooled = [r for n in names for r in per[n]["rows"]]
            r5 = " ".join(f"{_mean(per[n]['rows'], 5):.3f}" for n in names)
            r10 = " ".join(f"{_mean(per[n]['rows'], 10):.3f}" for n in names)
            lines.append(
                f"| {w:g} | {'facts' if mode == 'observations' else mode} | "
                f"{_mean(pooled, 5):.3f} | {_mean(pooled, 10):.3f} | {r5} | {r10} |"
            )
    lines.append("")
    lines.append(f"conversations: {' '.join(names)}")
    # leave one conversation out, picked by turns R@10 on the other four
    lines.append("")
    lines.append("| held out | picked | turns R@10 picked / shipped | facts R@5 picked / shipped |")
    lines.append("|---|---|---|---|")
    shipped = f"{SHIPPED:g}"
    for held in names:

        def train(w: float, held: str = held) -> float:
            rows = [r for n in names if n != held for r in found["turns"][f"{w:g}"][n]["rows"]]
            return _mean(rows, 10)

        best = max(weights, key=lambda w: (train(w), f"{w:g}" == shipped))
        t_pick = _mean(found["turns"][f"{best:g}"][held]["rows"], 10)
        t_ship = _mean(found["turns"][shipped][held]["rows"], 10)
        f_pick = _mean(found["observations"][f"{best:g}"][held]["rows"], 5)
        f_ship = _mean(found["observations"][shipped][held]["rows"], 5)
        lines.append(
            f"| {held} | {best:g} | {t_pick:.3f} / {t_ship:.3f} | {f_pick:.3f} / {f_ship:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="LoCoMo JSON files")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0])
    parser.add_argument(
        "--floor",
        type=float,
        help="the sparse list's score floor (SearchRecipe.sparse_floor; default the shipped one)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not sorted(args.data.glob("*.json")):
        parser.error(f"no LoCoMo data at {args.data}: pass --data DIR (the locomo-dev folder)")
    weights = sorted(set(args.weights) | {SHIPPED})
    found = measure(args.data, weights, args.floor)
    if args.json:
        args.json.write_text(json.dumps(found) + "\n")
    print(summarize(found, weights))


if __name__ == "__main__":
    main()
