"""LoCoMo retrieval evaluation: does search return the memories that hold the answer?

Each conversation is ingested into its own user scope through the public API, in one of
two modes (``memories``):

- ``turns``: one ``episode`` memory per dialog turn, text ``"<speaker>: <text>"`` plus
  ``" [image: <caption>]"`` when the turn shared an image, in its session, timestamped
  with the session's date: what an agent keeping transcripts stores;
- ``observations``: one ``fact`` memory per *observation* LoCoMo's files hold for each
  session (a short fact about a speaker, e.g. "Caroline attended an LGBTQ support group
  recently", with the ids of the turns it came from), no session, the session's date as
  its event time: what most users store, facts rather than transcripts.

Every question is then asked through the same :meth:`Memory.search` a user calls. A hit
covers the turns it came from (a turn: itself; an observation: its source turns).
recall@k is the fraction of a question's evidence turns covered by the top k; hit@k is 1
when at least one is. In ``observations`` mode only evidence turns some observation came
from count (the others cannot be found in that mode), and a question none of whose
evidence turns has an observation is skipped. Categories 1-4 are pooled as the headline;
5 (adversarial) is separate.
"""

from __future__ import annotations

import json
import math
import re
import resource
import statistics
import sys
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypedDict, Unpack

from memlane.api import Memory
from memlane.core.base import MemoryInput
from memlane.core.search import SearchRecipe
from memlane.errors import ValidationError
from memlane.models import MemoryKind

KS = (1, 5, 10, 20, 50)
HEADLINE_CATEGORIES = frozenset({1, 2, 3, 4})
_DIA = re.compile(r"D(\d+):(\d+)")

Progress = Callable[[Iterable[Any], str, int], Iterable[Any]]
Memories = Literal["turns", "observations"]
MEMORIES: tuple[Memories, ...] = ("turns", "observations")


@dataclass(frozen=True, slots=True)
class Turn:
    dia_id: str
    speaker: str
    text: str
    session: int
    at: datetime


@dataclass(frozen=True, slots=True)
class Observation:
    """A short fact LoCoMo records about a speaker after a session, with the turns it
    came from."""

    text: str
    speaker: str
    session: int
    at: datetime
    sources: frozenset[str]


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    category: int
    evidence: frozenset[str]


@dataclass(frozen=True, slots=True)
class Conversation:
    name: str
    turns: tuple[Turn, ...]
    questions: tuple[Question, ...]
    observations: tuple[Observation, ...] = ()

    def memories(self, mode: Memories) -> Sequence[Turn | Observation]:
        """What ``mode`` stores of this conversation."""
        return self.turns if mode == "turns" else self.observations


@dataclass
class Report:
    """Everything one evaluation measured."""

    overall: dict[str, float]
    by_category: dict[str, dict[str, float]]
    latency_ms: dict[str, float]
    ingest_turns_per_s: float
    peak_rss_mb: float
    questions: int
    skipped_questions: int
    conversations: int
    recipe: str
    memories: Memories = "turns"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Every measurement by its field name, with ``extra``'s entries beside them."""
        measured = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**measured, **self.extra}

    def to_markdown(self) -> str:
        head = "| scope | n | " + " | ".join(f"R@{k}" for k in KS) + " | "
        head += " | ".join(f"hit@{k}" for k in KS) + " |"
        lines = [head, "|" + "---|" * (2 + 2 * len(KS))]
        rows = [("categories 1-4", self.overall)] + [
            (f"category {c}", v) for c, v in sorted(self.by_category.items())
        ]
        for name, m in rows:
            cells = [f"{m[f'recall@{k}']:.3f}" for k in KS] + [f"{m[f'hit@{k}']:.3f}" for k in KS]
            lines.append(f"| {name} | {int(m['n'])} | " + " | ".join(cells) + " |")
        lines += [
            "",
            f"search latency p50 {self.latency_ms['p50']:.1f} ms, "
            f"p95 {self.latency_ms['p95']:.1f} ms (query embedding included); "
            f"ingest {self.ingest_turns_per_s:.0f} {self.memories}/s; "
            f"peak RSS {self.peak_rss_mb:.0f} MB; recipe {self.recipe}; "
            f"memories: {self.memories}",
        ]
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- loading


def parse_session_time(value: str) -> datetime:
    """LoCoMo's ``"1:56 pm on 8 May, 2023"`` as a UTC time."""
    try:
        return datetime.strptime(value.strip(), "%I:%M %p on %d %B, %Y").replace(tzinfo=UTC)
    except ValueError as exc:
        raise ValidationError(f"unrecognized LoCoMo session time {value!r}") from exc


def parse_evidence(raw: Iterable[str], known: set[str]) -> frozenset[str]:
    """Evidence ids, read leniently: several per string, zero-padded turns, unknown dropped."""
    found = set()
    for item in raw:
        for session, turn in _DIA.findall(str(item).replace("D:", "D")):
            dia = f"D{int(session)}:{int(turn)}"
            if dia in known:
                found.add(dia)
    return frozenset(found)


def load_conversation(path: Path) -> Conversation:
    """Read one LoCoMo conversation file. Raises ValidationError on a malformed file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        turns: list[Turn] = []
        n = 1
        while f"session_{n}" in data or f"session_{n}_date_time" in data:
            session = data.get(f"session_{n}") or []
            at = parse_session_time(data[f"session_{n}_date_time"]) if session else None
            for raw in session:
                text = f"{raw['speaker']}: {raw['text']}"
                if raw.get("blip_caption"):
                    text += f" [image: {raw['blip_caption']}]"
                assert at is not None
                turns.append(Turn(raw["dia_id"], raw["speaker"], text, n, at))
            n += 1
        known = {t.dia_id for t in turns}
        questions = tuple(
            Question(
                q["question"], int(q["category"]), parse_evidence(q.get("evidence", []), known)
            )
            for q in data["qa"]
        )
        observations = load_observations(data, known)
    except (OSError, KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise ValidationError(f"{path} is not a LoCoMo conversation file: {exc}") from exc
    return Conversation(path.stem, tuple(turns), questions, observations)


def load_observations(data: dict[str, Any], known: set[str]) -> tuple[Observation, ...]:
    """Every ``session_N_observation`` (``{speaker: [[text, source ids], ...]}``) of a
    conversation, in session order; source ids are read like evidence (a list or a
    string of several, unknown ids dropped)."""
    found: list[Observation] = []
    n = 1
    while f"session_{n}_date_time" in data:
        by_speaker = data.get(f"session_{n}_observation") or {}
        at = parse_session_time(data[f"session_{n}_date_time"]) if by_speaker else None
        for speaker, items in by_speaker.items():
            for text, raw in items:
                sources = parse_evidence([raw] if isinstance(raw, str) else raw, known)
                assert at is not None
                found.append(Observation(str(text), str(speaker), n, at, sources))
        n += 1
    return tuple(found)


def load_dir(directory: Path) -> list[Conversation]:
    files = sorted(Path(directory).glob("*.json"))
    if not files:
        raise ValidationError(f"no LoCoMo *.json files in {directory}")
    return [load_conversation(f) for f in files]


# ---------------------------------------------------------------------------- scoring


def score_question(
    ranked: Sequence[str | Collection[str]], evidence: frozenset[str]
) -> dict[str, float]:
    """recall@k and hit@k of one question: ``ranked`` holds, best first, the turn each hit
    is or the turns it came from."""
    out: dict[str, float] = {}
    for k in KS:
        top: set[str] = set()
        for covered in ranked[:k]:
            top.update((covered,) if isinstance(covered, str) else covered)
        found = len(evidence & top)
        out[f"recall@{k}"] = found / len(evidence)
        out[f"hit@{k}"] = 1.0 if found else 0.0
    return out


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    if not rows:
        return {"n": 0.0, **{f"{m}@{k}": 0.0 for m in ("recall", "hit") for k in KS}}
    keys = rows[0].keys()
    return {
        "n": float(len(rows)),
        **{k: round(statistics.fmean(r[k] for r in rows), 4) for k in keys},
    }


def _identity(items: Iterable[Any], desc: str, total: int) -> Iterable[Any]:
    return items


def ingest(
    memory: Memory,
    conversations: Sequence[Conversation],
    *,
    progress: Progress = _identity,
    user_prefix: str = "locomo-",
    memories: Memories = "turns",
) -> tuple[int, float]:
    """Store every turn (or observation, see ``memories``) of every conversation, one user
    per conversation (replacing what that user had). Returns (memories, seconds)."""
    seconds = 0.0
    stored = 0
    for conv in progress(conversations, "ingest", len(conversations)):
        user = user_prefix + conv.name
        memory.forget_user(user)
        items = [memory_input(m) for m in conv.memories(memories)]
        start = time.perf_counter()
        memory.add_many(items, user_id=user)
        seconds += time.perf_counter() - start
        stored += len(items)
    return stored, seconds


def memory_input(m: Turn | Observation) -> MemoryInput:
    """How a turn (an episode in its session) or an observation (a fact) is stored; its
    source turns ride along as ``source_ids``."""
    if isinstance(m, Turn):
        return MemoryInput(
            text=m.text,
            kind=MemoryKind.EPISODE,
            session_id=f"session_{m.session}",
            event_at=m.at,
            actor=m.speaker,
            source_ids=(m.dia_id,),
            metadata={"dia_id": m.dia_id},
        )
    return MemoryInput(
        text=m.text,
        kind=MemoryKind.FACT,
        event_at=m.at,
        source_ids=tuple(sorted(m.sources)),
        metadata={"speaker": m.speaker, "session": m.session},
    )


def findable(conv: Conversation, memories: Memories) -> frozenset[str] | None:
    """The turns some stored memory covers in ``memories`` mode (None: every turn)."""
    if memories == "turns":
        return None
    return frozenset(t for o in conv.observations for t in o.sources)


def ask(
    memory: Memory,
    conversations: Sequence[Conversation],
    *,
    recipe: str | SearchRecipe = "hybrid",
    progress: Progress = _identity,
    user_prefix: str = "locomo-",
    memories: Memories = "turns",
) -> tuple[list[tuple[int, dict[str, float]]], list[float], int]:
    """Ask every question with evidence (findable in ``memories`` mode). Returns
    (category, scores) per question, the search latencies in ms, and how many questions
    had no usable evidence."""
    per_question: list[tuple[int, dict[str, float]]] = []
    latencies: list[float] = []
    skipped = 0
    reachable = {c.name: findable(c, memories) for c in conversations}
    asked = [(c, q) for c in conversations for q in c.questions]
    for conv, question in progress(asked, "search", len(asked)):
        scope = reachable[conv.name]
        evidence = question.evidence if scope is None else question.evidence & scope
        if not evidence:
            skipped += 1
            continue
        start = time.perf_counter()
        hits = memory.search(
            question.text, user_id=user_prefix + conv.name, limit=max(KS), recipe=recipe
        )
        latencies.append((time.perf_counter() - start) * 1000)
        ranked = [h.record.source_ids for h in hits]
        per_question.append((question.category, score_question(ranked, evidence)))
    return per_question, latencies, skipped


class Options(TypedDict, total=False):
    """What :func:`evaluate` passes on to :func:`ingest` and :func:`ask`."""

    progress: Progress
    user_prefix: str
    memories: Memories


def evaluate(
    memory: Memory,
    conversations: Sequence[Conversation],
    *,
    recipe: str | SearchRecipe = "hybrid",
    **options: Unpack[Options],
) -> Report:
    """Ingest, ask, score. Each conversation gets its own user scope; ``options`` are
    :func:`ask`'s (progress, user_prefix, memories)."""
    n_stored, ingest_s = ingest(memory, conversations, **options)
    per_question, latencies, skipped = ask(memory, conversations, recipe=recipe, **options)
    found = report(per_question, latencies, skipped, n_stored, ingest_s, conversations, recipe)
    found.memories = options.get("memories", "turns")
    return found


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def report(
    per_question: list[tuple[int, dict[str, float]]],
    latencies: list[float],
    skipped: int,
    n_turns: int,
    ingest_s: float,
    conversations: Sequence[Conversation],
    recipe: str | SearchRecipe,
) -> Report:
    """Pool per-question scores into a :class:`Report`."""
    by_category = {
        str(c): _mean([s for cat, s in per_question if cat == c])
        for c in sorted({cat for cat, _ in per_question})
    }
    ordered = sorted(latencies)
    return Report(
        overall=_mean([s for cat, s in per_question if cat in HEADLINE_CATEGORIES]),
        by_category=by_category,
        latency_ms={
            "p50": round(statistics.median(ordered), 2) if ordered else 0.0,
            "p95": round(ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)], 2)
            if ordered
            else 0.0,
        },
        ingest_turns_per_s=round(n_turns / ingest_s, 1) if ingest_s else 0.0,
        peak_rss_mb=_peak_rss_mb(),
        questions=len(per_question),
        skipped_questions=skipped,
        conversations=len(conversations),
        recipe=recipe if isinstance(recipe, str) else recipe.name,
    )
