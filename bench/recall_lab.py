"""Recall lab: try a retrieval idea on LoCoMo in seconds instead of minutes.

    .venv/bin/python bench/recall_lab.py [--data DIR] [--check] [--sentences]

The first run ingests the dev conversations through the public API and dumps, per
question, the candidate lists the default search gathers (the store's own vector and BM25
lists), the neighbours of every turn and the records themselves to
bench/results/lab-<key>.pkl (one per data directory; its store beside it). Later runs
recombine those lists with the library's own pure functions (``fuse``,
``spread_to_neighbors``, ``boosts``), so a new fusion, boost or diversification idea is
one function below and a run takes seconds. ``--check`` asks every question through
``Memory.search`` too and reports how often the simulated top 50 equals the real one
(it should be all of them). ``--sentences`` also embeds every turn sentence by sentence
for the sentence-level dense variants (about two minutes on a 2-core CPU).

Variants are measured against the shipped default; numbers go to bench/recall.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import pickle
import re
import statistics
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from memlane import CoreConfig, Memory
from memlane.core.search import RECIPES, SearchRecipe, boosts, fuse, spread_to_neighbors
from memlane.core.search import time_window as parse_window
from memlane.embedders.onnx import OnnxEmbedder
from memlane.evals.locomo import HEADLINE_CATEGORIES, KS, ingest, load_dir
from memlane.models import Filters
from memlane.ports import store as ops
from memlane.text import tokenize

ROOT = Path(__file__).resolve().parent
DEFAULT_DATA = ROOT.parents[1] / "shared" / "data" / "locomo-dev"
BASE = RECIPES["hybrid"]
Ranker = Callable[["Conv", int], list[str]]


@dataclasses.dataclass
class Conv:
    """One conversation's dump: records, neighbours, and per question the lists."""

    user: str
    records: dict[str, Any]  # id -> MemoryRecord
    neighbors: dict[str, list[tuple[str, int]]]
    questions: list[tuple[str, int, frozenset[str]]]
    lists: list[dict[str, list[tuple[str, float]]]]  # per question: method -> candidates
    query_vectors: np.ndarray
    now: Any
    sentence_sims: np.ndarray | None = None  # questions x records, best sentence cosine

    def dia(self, rid: str) -> str:
        return str(self.records[rid].metadata["dia_id"])


# ---------------------------------------------------------------------------- dump


def dump(data: Path, path: Path) -> list[Conv]:
    conversations = load_dir(data)
    db = path.with_suffix(".db")
    db.parent.mkdir(exist_ok=True)
    fresh = not db.exists()
    embedder = OnnxEmbedder()
    out = []
    config = CoreConfig(track_access=False)
    # The lab recombines the vector and BM25 lists; the sparse list is measured by
    # bench/sparse_recall.py, so the lab's store and its check search without it.
    with Memory(f"sqlite:///{db}", embedder=embedder, config=config, sparse=None) as memory:
        if fresh:
            ingest(memory, conversations)
        now = memory.core.now()
        for conv in conversations:
            user = "locomo-" + conv.name
            records = memory.store.batch([ops.ListRecords(user, Filters(), now, None, 10**6)])[0]
            ids = tuple(r.id for r in records)
            window = BASE.neighbor_window
            neighbors = memory.store.batch([ops.GetNeighbors(user, ids, window, now)])[0]
            asked = [(q.text, q.category, q.evidence) for q in conv.questions if q.evidence]
            vectors = embedder.embed([q for q, _, _ in asked])
            wanted: list[ops.Op[Any]] = []
            for (q, _, _), v in zip(asked, vectors, strict=True):
                wanted.append(
                    ops.VectorSearch(user, Filters(), now, embedder.model_id, v, BASE.candidates)
                )
                wanted.append(
                    ops.LexicalSearch(
                        user, Filters(), now, q, BASE.candidates, BASE.lexical_context_weight
                    )
                )
            found = memory.store.batch(wanted)
            lists = [
                {"vector": found[2 * i], "lexical": found[2 * i + 1]} for i in range(len(asked))
            ]
            out.append(
                Conv(
                    user,
                    {r.id: r for r in records},
                    neighbors,
                    asked,
                    lists,
                    np.asarray(vectors, dtype=np.float32),
                    now,
                )
            )
    path.write_bytes(pickle.dumps(out))
    return out


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(\[])|\s+(?=\[image:)")


def add_sentence_sims(convs: list[Conv]) -> None:
    """Each turn split into sentences ("<speaker>: <sentence>"), each sentence embedded;
    a turn's score is its best sentence's cosine with the question."""
    embedder = OnnxEmbedder()
    for conv in convs:
        ids = list(conv.records)
        units: list[str] = []
        owner: list[int] = []
        for i, rid in enumerate(ids):
            r = conv.records[rid]
            prefix = f"{r.actor}: " if r.actor and r.text.startswith(f"{r.actor}: ") else ""
            body = r.text[len(prefix) :]
            for sentence in filter(None, (s.strip() for s in _SENTENCE.split(body))):
                units.append(prefix + sentence)
                owner.append(i)
        vectors = np.asarray(embedder.embed(units), dtype=np.float32)
        sims = conv.query_vectors @ vectors.T
        best = np.full((len(conv.questions), len(ids)), -1.0, dtype=np.float32)
        for j, i in enumerate(owner):
            np.maximum(best[:, i], sims[:, j], out=best[:, i])
        conv.sentence_sims = best


# ---------------------------------------------------------------------------- simulate


def ranked_scores(
    conv: Conv,
    qi: int,
    recipe: SearchRecipe = BASE,
    *,
    lists: dict[str, list[tuple[str, float]]] | None = None,
    window_slack_days: float = 0.0,
) -> list[tuple[str, float]]:
    """The default search's ordering, recombined from the dump (no store round trips)."""
    query = conv.questions[qi][0]
    lists = lists if lists is not None else conv.lists[qi]
    fused = fuse(lists, {m: recipe.methods.get(m, 0.0) for m in lists}, recipe)
    scores = {rid: score for rid, score, _ in fused}
    floor: dict[str, float] = {}
    if recipe.neighbor_weight > 0:
        top = [rid for rid, _, _ in fused[: recipe.neighbor_top]]
        reach = recipe.neighbor_window
        near = {rid: [(n, d) for n, d in conv.neighbors[rid] if abs(d) <= reach] for rid in top}
        floor = spread_to_neighbors(scores, near, recipe.neighbor_weight)
    window = parse_window(query, conv.now) if recipe.time_weight else None
    if window is not None and window_slack_days:
        window = (window[0], window[1] + timedelta(days=window_slack_days))
    tokens = frozenset(tokenize(query))
    ranked = []
    for rid in dict.fromkeys([*scores, *floor]):
        terms = boosts(conv.records[rid], recipe, now=conv.now, window=window, query_tokens=tokens)
        base = max(scores.get(rid, 0.0), floor.get(rid, 0.0))
        ranked.append((rid, base * (1.0 + sum(terms.values()))))
    ranked.sort(key=lambda item: (-item[1], item[0]))
    return ranked


def default(conv: Conv, qi: int) -> list[str]:
    return [rid for rid, _ in ranked_scores(conv, qi)]


def with_recipe(**changes: Any) -> Ranker:
    recipe = dataclasses.replace(BASE, **changes)
    return lambda conv, qi: [rid for rid, _ in ranked_scores(conv, qi, recipe)]


def window_slack(days: float) -> Ranker:
    """The period a query names, extended by ``days`` at its end: a chat on day X often
    reports what happened in the days before X."""
    return lambda conv, qi: [rid for rid, _ in ranked_scores(conv, qi, window_slack_days=days)]


def session_diversity(decay: float) -> Ranker:
    """The n-th hit from the same session has its score multiplied by decay ** (n - 1)."""

    def rank(conv: Conv, qi: int) -> list[str]:
        seen: dict[str | None, int] = defaultdict(int)
        out = []
        for rid, score in ranked_scores(conv, qi):
            session = conv.records[rid].session_id
            out.append((rid, score * decay ** seen[session]))
            seen[session] += 1
        out.sort(key=lambda item: (-item[1], item[0]))
        return [rid for rid, _ in out]

    return rank


def sentence_vectors(mode: str, lexical_weight: float = 3.0) -> Ranker:
    """The vector list from sentence-level cosines: ``"replace"`` the turn's own vector by
    its best sentence, or add the best sentence as a ``"third"`` list (weight 1)."""
    methods = {"vector": 1.0, "lexical": lexical_weight}
    if mode == "third":
        methods["context"] = 1.0  # the slot a third list is fused under
    recipe = dataclasses.replace(BASE, methods=methods)

    def rank(conv: Conv, qi: int) -> list[str]:
        assert conv.sentence_sims is not None, "run with --sentences"
        ids = list(conv.records)
        sims = conv.sentence_sims[qi]
        order = np.argsort(-sims, kind="stable")[: BASE.candidates]
        sentence_list = [(ids[j], float(sims[j])) for j in order]
        lists = dict(conv.lists[qi])
        if mode == "replace":
            lists["vector"] = sentence_list
        else:
            lists["context"] = sentence_list
        return [rid for rid, _ in ranked_scores(conv, qi, recipe, lists=lists)]

    return rank


def dense_only(sentences: bool) -> Ranker:
    def rank(conv: Conv, qi: int) -> list[str]:
        if not sentences:
            return [rid for rid, _ in conv.lists[qi]["vector"]]
        assert conv.sentence_sims is not None, "run with --sentences"
        ids = list(conv.records)
        order = np.argsort(-conv.sentence_sims[qi], kind="stable")[: BASE.candidates]
        return [ids[j] for j in order]

    return rank


# ---------------------------------------------------------------------------- score


def evaluate(convs: list[Conv], ranker: Ranker) -> dict[str, float]:
    rows: dict[int, list[dict[int, float]]] = defaultdict(list)
    for conv in convs:
        for qi, (_, category, evidence) in enumerate(conv.questions):
            top = [conv.dia(rid) for rid in ranker(conv, qi)[: max(KS)]]
            rows[category].append({k: len(evidence & set(top[:k])) / len(evidence) for k in KS})
    pooled = [r for c in HEADLINE_CATEGORIES for r in rows[c]]
    out = {f"R@{k}": statistics.fmean(r[k] for r in pooled) for k in KS}
    out.update({f"c{c}": statistics.fmean(r[10] for r in rows[c]) for c in sorted(rows)})
    return out


def per_question_recall10(convs: list[Conv], ranker: Ranker) -> list[list[float]]:
    """Recall@10 of every headline question, grouped by conversation."""
    out = []
    for conv in convs:
        row = []
        for qi, (_, category, evidence) in enumerate(conv.questions):
            if category in HEADLINE_CATEGORIES:
                top = {conv.dia(rid) for rid in ranker(conv, qi)[:10]}
                row.append(len(evidence & top) / len(evidence))
        out.append(row)
    return out


def cross_validate(convs: list[Conv]) -> None:
    """Leave one conversation out: pick the best grid point on the other four, score it on
    the fifth. Estimates what tuning the fusion weights on dev data is worth on unseen
    conversations (the lexical candidate lists are fixed by the dump, so the previous-turn
    weight is not in the grid)."""
    grid = [
        dict(methods={"vector": 1.0, "lexical": lw}, fusion=fu, neighbor_weight=nw,
             speaker_weight=sw, time_weight=tw)
        for lw in (1.0, 2.0, 3.0, 4.0) for fu in ("score", "rrf") for nw in (0.8, 0.9)
        for sw in (0.1, 0.2, 0.3) for tw in (0.25, 0.5, 1.0)
    ]  # fmt: skip
    table = [per_question_recall10(convs, with_recipe(**g)) for g in grid]
    shipped = per_question_recall10(convs, default)
    held_out: list[float] = []
    for fold in range(len(convs)):

        def train(rows: list[list[float]], fold: int = fold) -> float:
            return statistics.fmean(x for i, r in enumerate(rows) if i != fold for x in r)

        best = max(range(len(grid)), key=lambda g: train(table[g]))
        held_out += table[best][fold]
        print(f"fold {convs[fold].user}: picked {grid[best]}; held-out R@10 "
              f"{statistics.fmean(table[best][fold]):.3f}, shipped default "
              f"{statistics.fmean(shipped[fold]):.3f}")  # fmt: skip
    in_sample = max(statistics.fmean(x for r in rows for x in r) for rows in table)
    print(f"leave-one-conversation-out R@10 {statistics.fmean(held_out):.3f}; best grid point "
          f"on all five (in-sample) {in_sample:.3f}; shipped default "
          f"{statistics.fmean(x for r in shipped for x in r):.3f}")  # fmt: skip


def check(convs: list[Conv], path: Path) -> None:
    """Ask every question through Memory.search and compare with the simulation."""
    same = total = 0
    db = path.with_suffix(".db")
    with Memory(
        f"sqlite:///{db}",
        embedder=OnnxEmbedder(),
        config=CoreConfig(track_access=False),
        sparse=None,
    ) as memory:
        for conv in convs:
            for qi, (query, _, _) in enumerate(conv.questions):
                hits = memory.search(query, user_id=conv.user, limit=max(KS))
                same += [h.record.id for h in hits] == default(conv, qi)[: max(KS)]
                total += 1
    print(f"simulated top {max(KS)} equals Memory.search for {same} of {total} questions")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--sentences", action="store_true")
    parser.add_argument("--cv", action="store_true", help="leave-one-conversation-out grid")
    args = parser.parse_args()
    key = hashlib.sha256(str(args.data.resolve()).encode()).hexdigest()[:8]
    path = ROOT / "results" / f"lab-{key}.pkl"  # one dump per data directory
    convs: list[Conv] = pickle.loads(path.read_bytes()) if path.exists() else dump(args.data, path)
    if args.check:
        check(convs, path)
    if args.cv:
        cross_validate(convs)
        return
    variants: dict[str, Ranker] = {
        "shipped default (hybrid)": default,
        "dense only, turn vectors": dense_only(False),
        "speaker boost 0.3": with_recipe(speaker_weight=0.3),
        "speaker boost 0.5": with_recipe(speaker_weight=0.5),
        "time boost 1.0": with_recipe(time_weight=1.0),
        "named period extended 7 days at its end": window_slack(7),
        "session diversity 0.9": session_diversity(0.9),
        "session diversity 0.7": session_diversity(0.7),
    }
    if args.sentences:
        add_sentence_sims(convs)
        variants |= {
            "dense only, best sentence": dense_only(True),
            "vector list = best sentence": sentence_vectors("replace"),
            "vector list = best sentence, BM25 x2": sentence_vectors("replace", 2.0),
            "best sentence as a third list": sentence_vectors("third"),
        }
    print("| variant | R@1 | R@5 | R@10 | R@20 | R@50 | multi-hop | temporal | open | single |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, ranker in variants.items():
        m = evaluate(convs, ranker)
        cells = [m[f"R@{k}"] for k in KS] + [m["c1"], m["c2"], m["c3"], m["c4"]]
        print(f"| {name} | " + " | ".join(f"{x:.3f}" for x in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
