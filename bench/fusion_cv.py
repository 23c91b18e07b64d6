"""Fusion weights re-fit honestly: leave one conversation out (LOCO) on LoCoMo dev.

    .venv/bin/python bench/fusion_cv.py [--data DIR] [--first-round] [--only NAME;NAME]

Both modes of bench/recall.md are ingested once with the default ONNX embedder into
bench/results/fusion-{turns,observations}.db (kept, so later runs skip ingest): turns
(one episode per dialog turn) and facts (one fact per LoCoMo observation). Every grid
point below (one factor at a time around the shipped default ``hybrid``, plus a few
pairs) then asks every question of categories 1-4 through ``Memory.search``; per-question
recall@5 and recall@10 are kept with the question's conversation in
bench/results/fusion-cv.json (a later run asks only grid points it has not seen).

For each held-out conversation the grid point best on the other four is picked (by turns
R@10 pooled over their questions; ties go to the shipped default, then to grid order) and
scored on the held-out one; so is the pick by facts R@5. Prints Markdown: the grid in
sample, the folds, and the mean and spread (min/max over folds) of held-out scores of
the LOCO picks against the shipped default. Nothing is tuned to single questions.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from memlane import CoreConfig, Memory
from memlane.core.search import RECIPES, SearchRecipe
from memlane.embedders.onnx import OnnxEmbedder
from memlane.evals.locomo import (
    HEADLINE_CATEGORIES,
    MEMORIES,
    Conversation,
    Memories,
    ask,
    ingest,
    load_dir,
)

ROOT = Path(__file__).resolve().parent
DEFAULT_DATA = ROOT.parents[1] / "shared" / "data" / "locomo-dev"
RESULTS = ROOT / "results"
BASE = RECIPES["hybrid"]
SHIPPED = "default"
FIRST_ROUND = 20
"""How many grid points (in order) the first round had, decided before any was measured."""

Scores = dict[str, list[tuple[float, float]]]
"""Conversation name -> (recall@5, recall@10) of each of its headline questions."""
Table = dict[str, dict[str, Scores]]
"""Grid point name -> mode -> scores."""
Metric = tuple[Memories, int]
"""(mode, k): which recall a pick is judged by."""


def grid() -> dict[str, SearchRecipe]:
    """One factor at a time around the default, then pairs; a second round (the last six)
    goes past the edge of the grid the first round's picks sat on."""
    v = dataclasses.replace

    def lexical(w: float) -> dict[str, float]:
        return {"vector": 1.0, "lexical": w}

    points = {
        SHIPPED: BASE,
        "lexical 1": v(BASE, methods=lexical(1.0)),
        "lexical 2": v(BASE, methods=lexical(2.0)),
        "lexical 4": v(BASE, methods=lexical(4.0)),
        "neighbour 0": v(BASE, neighbor_weight=0.0),
        "neighbour 0.8": v(BASE, neighbor_weight=0.8),
        "time 0": v(BASE, time_weight=0.0),
        "time 1.0": v(BASE, time_weight=1.0),
        "lexical context 0": v(BASE, lexical_context_weight=0.0),
        "lexical context 0.5": v(BASE, lexical_context_weight=0.5),
        "speaker 0": v(BASE, speaker_weight=0.0),
        "speaker 0.4": v(BASE, speaker_weight=0.4),
        "RRF k=10": v(BASE, fusion="rrf"),
        "lexical 2, neighbour 0.8": v(BASE, methods=lexical(2.0), neighbor_weight=0.8),
        "lexical 4, neighbour 0.8": v(BASE, methods=lexical(4.0), neighbor_weight=0.8),
        "lexical 2, time 1.0": v(BASE, methods=lexical(2.0), time_weight=1.0),
        "lexical 4, time 1.0": v(BASE, methods=lexical(4.0), time_weight=1.0),
        "lexical 2, lexical context 0.5": v(BASE, methods=lexical(2.0), lexical_context_weight=0.5),
        "neighbour 0.8, lexical context 0.5": v(
            BASE, neighbor_weight=0.8, lexical_context_weight=0.5
        ),
        "time 1.0, speaker 0.4": v(BASE, time_weight=1.0, speaker_weight=0.4),
        # Second round, added after the first: beyond the edge the first round picked.
        "speaker 0.6": v(BASE, speaker_weight=0.6),
        "time 1.5": v(BASE, time_weight=1.5),
        "time 1.0, speaker 0.6": v(BASE, time_weight=1.0, speaker_weight=0.6),
        "time 1.5, speaker 0.4": v(BASE, time_weight=1.5, speaker_weight=0.4),
        "lexical 2, time 1.0, speaker 0.4": v(
            BASE, methods=lexical(2.0), time_weight=1.0, speaker_weight=0.4
        ),
        "lexical 4, time 1.0, speaker 0.4": v(
            BASE, methods=lexical(4.0), time_weight=1.0, speaker_weight=0.4
        ),
    }
    return {name: v(recipe, name=name) for name, recipe in points.items()}


# ---------------------------------------------------------------------------- measure


def headline_only(conv: Conversation) -> Conversation:
    """The conversation with only its category 1-4 questions (5 is not the headline)."""
    kept = tuple(q for q in conv.questions if q.category in HEADLINE_CATEGORIES)
    return dataclasses.replace(conv, questions=kept)


def measure(
    memory: Memory, conversations: Sequence[Conversation], recipe: SearchRecipe, mode: Memories
) -> Scores:
    """(R@5, R@10) of every headline question, by conversation, through Memory.search."""
    out: Scores = {}
    for conv in conversations:
        per_question, _, _ = ask(memory, [conv], recipe=recipe, memories=mode)
        out[conv.name] = [(s["recall@5"], s["recall@10"]) for _, s in per_question]
    return out


def fill(
    table: Table, conversations: Sequence[Conversation], points: Mapping[str, SearchRecipe]
) -> None:
    """Ask every grid point not yet in ``table`` in both modes (ingesting a mode's store
    the first time), saving the table after each point."""
    embedder = OnnxEmbedder()
    config = CoreConfig(track_access=False)
    for mode in MEMORIES:
        todo = [n for n in points if mode not in table.get(n, {})]
        if not todo:
            continue
        path = RESULTS / f"fusion-{mode}.db"
        fresh = not path.exists()
        with Memory(f"sqlite:///{path}", embedder=embedder, config=config) as memory:
            if fresh:
                ingest(memory, conversations, memories=mode)
            for name in todo:
                table.setdefault(name, {})[mode] = measure(
                    memory, conversations, points[name], mode
                )
                save(table)
                print(f"<!-- measured {mode}: {name} -->", flush=True)


def save(table: Table) -> None:
    (RESULTS / "fusion-cv.json").write_text(json.dumps(table), encoding="utf-8")


def load() -> Table:
    path = RESULTS / "fusion-cv.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


# ---------------------------------------------------------------------------- LOCO


def recall(scores: Scores, convs: Sequence[str], k: int) -> float:
    """Recall@k pooled over the questions of ``convs``."""
    index = 0 if k == 5 else 1
    return statistics.fmean(row[index] for c in convs for row in scores[c])


def score(table: Table, point: str, metric: Metric, convs: Sequence[str]) -> float:
    mode, k = metric
    return recall(table[point][mode], convs, k)


def pick(table: Table, names: Sequence[str], metric: Metric, train: Sequence[str]) -> str:
    """The grid point best on ``train`` by ``metric``; a tie keeps the earliest in
    ``names`` (the shipped default first)."""
    best = max(score(table, n, metric, train) for n in names)
    return next(n for n in names if score(table, n, metric, train) >= best - 1e-12)


REPORTED: tuple[tuple[str, Metric], ...] = (
    ("turns R@5", ("turns", 5)),
    ("turns R@10", ("turns", 10)),
    ("facts R@5", ("observations", 5)),
    ("facts R@10", ("observations", 10)),
)


def loco(table: Table, names: Sequence[str], convs: Sequence[str], by: Metric) -> list[str]:
    """Per held-out conversation: the grid point picked on the other four by ``by``."""
    return [pick(table, names, by, [c for c in convs if c != held]) for held in convs]


def spread(values: Sequence[float]) -> str:
    return f"{statistics.fmean(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def pooled_held_out(table: Table, picks: Sequence[str], convs: Sequence[str], m: Metric) -> float:
    """Every question scored under its own fold's pick, pooled like the headline."""
    mode, k = m
    index = 0 if k == 5 else 1
    rows = [r[index] for p, c in zip(picks, convs, strict=True) for r in table[p][mode][c]]
    return statistics.fmean(rows)


# ---------------------------------------------------------------------------- print


def print_grid(table: Table, names: Sequence[str], convs: Sequence[str]) -> None:
    print("| grid point | " + " | ".join(label for label, _ in REPORTED) + " |")
    print("|---|" + "---|" * len(REPORTED))
    for n in names:
        cells = [f"{score(table, n, m, convs):.3f}" for _, m in REPORTED]
        print(f"| {n} | " + " | ".join(cells) + " |")


def print_folds(table: Table, names: Sequence[str], convs: Sequence[str], by: Metric) -> None:
    picks = loco(table, names, convs, by)
    head = " | ".join(f"{label} pick / default" for label, _ in REPORTED)
    print(f"| held out | picked on the other four | {head} |")
    print("|---|---|" + "---|" * len(REPORTED))
    for held, chosen in zip(convs, picks, strict=True):
        cells = [
            f"{score(table, chosen, m, [held]):.3f} / {score(table, SHIPPED, m, [held]):.3f}"
            for _, m in REPORTED
        ]
        print(f"| {held} | {chosen} | " + " | ".join(cells) + " |")
    print()
    summary(table, picks, convs)


def summary(table: Table, picks: Sequence[str], convs: Sequence[str]) -> None:
    print("| held-out | mean over folds (min-max), LOCO pick | same, shipped default "
          "| pooled questions, LOCO pick | pooled, default |")  # fmt: skip
    print("|---|---|---|---|---|")
    for label, m in REPORTED:
        chosen = [score(table, p, m, [c]) for p, c in zip(picks, convs, strict=True)]
        shipped = [score(table, SHIPPED, m, [c]) for c in convs]
        print(
            f"| {label} | {spread(chosen)} | {spread(shipped)} | "
            f"{pooled_held_out(table, picks, convs, m):.3f} | "
            f"{score(table, SHIPPED, m, convs):.3f} |"
        )
    counts: dict[str, int] = {}
    for p in picks:
        counts[p] = counts.get(p, 0) + 1
    print("\npicked: " + "; ".join(f"{n} x{c}" for n, c in sorted(counts.items(), key=_by_count)))


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return (-item[1], item[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--only", default="", help="grid point names separated by ';'")
    parser.add_argument("--first-round", action="store_true", help="the first round's grid only")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    conversations = [headline_only(c) for c in load_dir(args.data)]
    points = dict(list(grid().items())[: FIRST_ROUND if args.first_round else None])
    if args.only:
        points = {n: r for n, r in points.items() if n in args.only.split(";")}
    table = load()
    fill(table, conversations, points)
    names = [n for n in points if all(m in table[n] for m in MEMORIES)]
    convs = [c.name for c in conversations]
    sections: list[tuple[str, Callable[[], None]]] = [
        ("Grid, pooled over all five (in sample)", lambda: print_grid(table, names, convs)),
        ("LOCO, picked by turns R@10", lambda: print_folds(table, names, convs, ("turns", 10))),
        (
            "LOCO, picked by facts R@5",
            lambda: print_folds(table, names, convs, ("observations", 5)),
        ),
    ]
    for title, show in sections:
        print(f"\n### {title}\n")
        show()


if __name__ == "__main__":
    main()
