"""Search as data plus pure functions.

A :class:`SearchRecipe` says which candidate lists to gather and how to weigh them; the
functions below fuse candidate lists (:func:`rrf`), spread score to a hit's neighbouring
turns (:func:`spread_to_neighbors`), apply explicit boosts (:func:`boosts`) and diversify
(:func:`mmr`). Each is small and tested on its own.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from memlane.models import MemoryKind, MemoryRecord
from memlane.text import entities, query_terms, tokenize

Candidates = Sequence[tuple[str, float]]
"""(record id, raw score) pairs, best first, from one retrieval method."""

METHODS = ("vector", "context", "lexical", "sparse")
RESCORING = frozenset({"sparse"})
"""Methods that score the candidates the others found rather than find their own."""
FUSIONS = ("score", "rrf")


@dataclass(frozen=True, slots=True)
class SearchRecipe:
    """How search finds and ranks.

    ``methods`` weighs each candidate list in the fusion: ``vector`` (the memory's own
    text), ``context`` (an episode embedded with the turns before it) and ``lexical``
    (BM25), and ``sparse``: the candidates the others found scored by their learned
    sparse terms (:mod:`memlane.ports.sparse`; skipped by a memory without a sparse
    encoder). ``fusion`` is how the lists combine: ``"score"`` (default) sums each list's
    scores divided by its best (:func:`score_fusion`; the sparse list's by at least
    ``sparse_floor`` of the query's own score), ``"rrf"`` sums reciprocal ranks
    with ``rrf_k`` (:func:`rrf`). The remaining fields are multiplicative boosts and
    re-ranking steps; a weight of 0 turns a step off. See :func:`boosts` for the exact
    terms.

    What each signal applies to (a technique that helps over dialog turns must not rank
    noise above a fact, so none reaches further than this):

    - ``context`` vectors and ``lexical_context_weight`` (a turn also matched through the
      turn before it): episodes in a session, the previous live turn of the same agent;
    - ``neighbor_*`` (a strong hit's neighbours share its score): episodes in a session,
      by the same agent, and never lifted above a durable memory (fact, preference,
      summary …) their own score did not beat (:func:`below_durable`);
    - ``speaker_weight``: episodes whose speaker (``actor``) the query names;
    - ``time_weight``: every memory whose event time, or a period its text names
      (:attr:`MemoryRecord.periods`), lies in the period the query names;
    - ``recency_weight``, ``importance_weight``: every memory;
    - ``sparse`` (the learned terms): every memory, with ``sparse_floor`` keeping a weak
      match from counting fully.
    """

    name: str
    methods: Mapping[str, float] = field(
        default_factory=lambda: {"vector": 1.0, "lexical": 3.0, "sparse": 2.0}
    )
    candidates: int = 100
    fusion: str = "score"
    rrf_k: int = 10
    neighbor_weight: float = 0.9
    neighbor_window: int = 2
    neighbor_top: int = 20
    time_weight: float = 1.0
    speaker_weight: float = 0.2
    lexical_context_weight: float = 1.0
    recency_weight: float = 0.0
    recency_half_life_days: float = 30.0
    importance_weight: float = 0.0
    mmr_lambda: float | None = None
    rewrite_query: bool = False
    feedback_docs: int = 0
    """Pseudo-relevance feedback: with N > 0 the top N hits of the first fusion expand
    the query — the query vector moves toward their mean (``feedback_beta``) for a
    ``vector_feedback`` list, and their most frequent new words are added to a
    ``lexical_feedback`` BM25 query — and every list is fused again."""
    feedback_beta: float = 0.5
    feedback_terms: int = 8
    feedback_vector_weight: float = 1.0
    feedback_lexical_weight: float = 1.0
    hop_weight: float = 0.0
    """A second round without an LLM: with a weight > 0 the people, places and things
    (:func:`hop_entities`) named in the top ``hop_docs`` hits of the first fusion but not
    in the query, at most ``hop_entities`` of them, are added to the query for a
    ``lexical_hop`` BM25 list ("Where did Caroline move from?" finds "my home country,
    Sweden", then the turns about Sweden), each half of a question about two
    (:func:`query_parts`) gets a ``lexical_part1``/``lexical_part2`` list, and each list
    is fused with this weight. Off by default: on LoCoMo it changed nothing measurable
    (bench/recall.md)."""
    hop_docs: int = 5
    hop_entities: int = 4
    graph_weight: float = 0.0
    """Graph-aware recall (the knowledge graph, :mod:`memlane.core.graph`): with a weight
    > 0 the entities the query names, the entities named by the top ``graph_docs`` hits of
    the first fusion, and the entities one edge away from the query's seed a ``graph``
    list — the memories that name them, scored by :func:`graph_scores` (an entity named by
    more than ``graph_mentions`` memories is too common to follow) — fused with this
    weight. ``explain`` says ``"round": 2`` and the ``graph_entities`` that led to a hit
    only this list found. Off by default: see bench/recall.md for what it does on LoCoMo."""
    graph_docs: int = 5
    graph_entities: int = 8
    graph_mentions: int = 50
    sparse_floor: float = 0.4
    """Score fusion divides the sparse list's scores by the larger of its best and this
    share of the query's own score (its terms' dot product with themselves). So when the
    best match is weak (a term or two in common), the list gives less than its full
    weight, and SPLADE-tiny's loose associations do not outvote the vectors on everyday
    questions. 0 divides by the best alone, as for every other list. Chosen with the
    weight (2) in bench/recall.md: on LoCoMo 0 to 0.4 give the same recall; on ordinary
    memories 0.4 keeps every answer where the list-free search ranks it."""

    def __post_init__(self) -> None:
        unknown = set(self.methods) - set(METHODS)
        if unknown or not self.methods:
            raise ValueError(f"search methods must be among {METHODS}, got {sorted(unknown)}")
        if not any(w > 0 for m, w in self.methods.items() if m not in RESCORING):
            raise ValueError(
                "a recipe needs a method that finds candidates: vector, context or lexical"
            )
        if any(not w >= 0 for w in self.methods.values()):
            raise ValueError("method weights must not be negative")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.candidates < 1 or self.rrf_k < 1:
            raise ValueError("candidates and rrf_k must be positive")
        counts = (
            self.neighbor_window,
            self.neighbor_top,
            self.feedback_docs,
            self.hop_docs,
            self.hop_entities,
            self.graph_docs,
            self.graph_entities,
        )
        if min(counts) < 0 or min(self.hop_weight, self.graph_weight) < 0:
            raise ValueError("window, top, docs, entities and weights must not be negative")
        if self.graph_mentions < 1:
            raise ValueError("graph_mentions must be positive")
        if not 0.0 <= self.sparse_floor <= 1.0:
            raise ValueError("sparse_floor must be between 0 and 1")
        if not self.recency_half_life_days > 0:
            raise ValueError("recency_half_life_days must be positive")
        if self.mmr_lambda is not None and not 0.0 <= self.mmr_lambda <= 1.0:
            raise ValueError("mmr_lambda must be between 0 and 1")


def _plain(name: str, methods: Mapping[str, float]) -> SearchRecipe:
    """A recipe with no boosts or neighbour spreading: fusion only (RRF k=60)."""
    return SearchRecipe(
        name,
        methods,
        fusion="rrf",
        rrf_k=60,
        neighbor_weight=0.0,
        time_weight=0.0,
        speaker_weight=0.0,
        lexical_context_weight=0.0,
    )


RECIPES: dict[str, SearchRecipe] = {
    "hybrid": SearchRecipe("hybrid"),
    "fast": SearchRecipe("fast", {"vector": 1.0, "lexical": 3.0}, neighbor_weight=0.0),
    "semantic": _plain("semantic", {"vector": 1.0}),
    "lexical": _plain("lexical", {"lexical": 1.0}),
    "rrf": _plain("rrf", {"vector": 1.0, "lexical": 1.0}),
}
"""Named recipes. ``hybrid`` (default): every technique that measurably helped (see
bench/recall.md). ``fast``: one vector list and BM25, no neighbour lookups. ``semantic``,
``lexical``: one method alone, no boosts. ``rrf``: plain vector + BM25 fusion (k=60)."""


# ---------------------------------------------------------------------------- fusion


def rrf(
    ranked: Mapping[str, Candidates], weights: Mapping[str, float], k: int = 60
) -> list[tuple[str, float, dict[str, Any]]]:
    """Weighted reciprocal rank fusion.

    Each method contributes ``weight / (k + rank)`` for every id it ranks (rank from 1).
    Returns (id, fused score, per-method breakdown) best first; ties break by id.
    """
    return _weighted_sum(ranked, weights, lambda _m, _c: lambda rank, _s: 1.0 / (k + rank))


def score_fusion(
    ranked: Mapping[str, Candidates],
    weights: Mapping[str, float],
    floors: Mapping[str, float] | None = None,
) -> list[tuple[str, float, dict[str, Any]]]:
    """Weighted sum of scores scaled by each method's best score ("theoretical min-max":
    0 stays 0, the best becomes 1; negative scores count as 0).

    BM25 and cosine scores of any scale combine, and unlike RRF the gaps between scores
    survive: a memory almost as good as the best keeps almost all of its method's weight.
    Unlike scaling from the worst candidate (plain min-max), a short list does not push
    its last candidate to 0. A method that did not return an id contributes 0 for it.
    ``floors``: a method's scores are divided by at least this (its best is then below 1).
    Returns (id, fused score, per-method breakdown) best first; ties break by id.
    """
    floors = floors or {}

    def by_best(method: str, candidates: Candidates) -> Callable[[int, float], float]:
        best = max((score for _, score in candidates), default=0.0)
        if not best > 0:  # none positive, or NaN: the list counts for nothing
            return lambda _rank, _score: 0.0
        floor = floors.get(method, 0.0)
        scale = max(best, floor) if math.isfinite(floor) else best
        return lambda _rank, score: max(score, 0.0) / scale

    return _weighted_sum(ranked, weights, by_best)


def _weighted_sum(
    ranked: Mapping[str, Candidates],
    weights: Mapping[str, float],
    scale_for: Callable[[str, Candidates], Callable[[int, float], float]],
) -> list[tuple[str, float, dict[str, Any]]]:
    """Sum over methods of ``weight * scale(rank, raw score)``, where each method's list
    gets its scale from ``scale_for``; with the per-method breakdown, best first, ties
    by id."""
    scores: dict[str, float] = {}
    parts: dict[str, dict[str, Any]] = {}
    for method, candidates in ranked.items():
        weight = weights.get(method, 0.0)
        scale = scale_for(method, candidates)
        for rank, (rid, raw) in enumerate(candidates, start=1):
            contribution = weight * scale(rank, raw)
            scores[rid] = scores.get(rid, 0.0) + contribution
            parts.setdefault(rid, {})[method] = {
                "rank": rank,
                "score": raw,
                "contribution": contribution,
            }
    ordered = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(rid, score, parts[rid]) for rid, score in ordered]


def fuse(
    ranked: Mapping[str, Candidates],
    weights: Mapping[str, float],
    recipe: SearchRecipe,
    floors: Mapping[str, float] | None = None,
) -> list[tuple[str, float, dict[str, Any]]]:
    """The recipe's fusion of candidate lists (``floors``: see :func:`score_fusion`)."""
    if recipe.fusion == "rrf":
        return rrf(ranked, weights, recipe.rrf_k)
    return score_fusion(ranked, weights, floors)


def feedback_terms(query: str, texts: Sequence[str], limit: int) -> list[str]:
    """The ``limit`` words most frequent across ``texts`` (counted once per text) that
    are not stopwords and not already in the query; ties by first appearance."""
    seen = set(query_terms(query))
    counts: dict[str, int] = {}
    for text in texts:
        for term in dict.fromkeys(query_terms(text)):
            if term not in seen and len(term) > 2 and not term.isdigit():
                counts[term] = counts.get(term, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    return [t for t, n in ranked if n > 1][:limit] or [t for t, _ in ranked][:limit]


def hop_entities(
    query: str, texts: Sequence[str], limit: int, known: Collection[str] = ()
) -> list[str]:
    """The ``limit`` entities (:func:`memlane.text.entities`) named most often across
    ``texts`` (counted once per text; ties by first appearance) that the query does not
    already name, leaving out the ``known`` names (the speakers: who talks, not what they
    talk about, and their short forms: "Mel" for Melanie), compared by their words."""
    asked = set(tokenize(query))
    skip = [word for name in known for word in tokenize(name)]
    counts: dict[str, int] = {}
    for text in texts:
        for name in entities(text):
            words = tokenize(name)
            short = len(words) == 1 and any(k.startswith(words[0]) for k in skip)
            if words and not short and not set(words) <= asked:
                counts[name] = counts.get(name, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    return [name for name, _ in ranked[:limit]]


HIT_SEED = 0.5
"""How much an entity named by a first-round hit seeds the graph round, relative to one
the query names (times the hit's share of the best fused score); an entity one edge from
the query's gets this share of the query's."""


def graph_seeds(
    asked: Sequence[str],
    hits: Sequence[tuple[float, Sequence[str]]],
    related: Sequence[str],
    limit: int,
) -> dict[str, float]:
    """The entities that seed the graph round, by weight, at most ``limit``: each entity
    the query names (``asked``) 1.0; each one a first-round hit names :data:`HIT_SEED`
    times the hit's fused score over the best one (``hits``: (score, entity ids), best
    first); each entity one edge from the asked ones (``related``) :data:`HIT_SEED`. An
    entity reached several ways keeps its largest weight; ties by first reached."""
    weights: dict[str, float] = {e: 1.0 for e in asked}
    top = max((score for score, _ in hits), default=0.0) or 1.0
    offers = [(HIT_SEED * score / top, e) for score, names in hits for e in names]
    offers += [(HIT_SEED, e) for e in related]
    for weight, entity in offers:
        if weight > weights.get(entity, 0.0):
            weights[entity] = weight
    ranked = sorted(weights.items(), key=lambda kv: -kv[1])  # stable: first reached first
    return dict(ranked[:limit])


def graph_scores(
    seeds: Mapping[str, float],
    named_by: Mapping[str, Sequence[str]],
    limit: int,
) -> list[tuple[str, float]]:
    """Activation spread one step from entities to the memories that name them: a
    memory's score is the sum, over the seed entities it names, of the seed's weight over
    ``log2(1 + n)`` where ``n`` is how many memories name the entity (``named_by``: entity
    -> memory ids) — a name every memory says tells little. The ``limit`` best, ties by
    id; entities missing from ``named_by`` (too common to follow) add nothing."""
    scores: dict[str, float] = {}
    for entity, weight in seeds.items():
        memories = set(named_by.get(entity, ()))
        if not memories or weight <= 0:
            continue
        share = weight / math.log2(1 + len(memories))
        for rid in memories:
            scores[rid] = scores.get(rid, 0.0) + share
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return ranked[:limit]


_CONJUNCT = re.compile(r"\b([A-Z][\w']*) and ((?:[A-Z]|her |his |their )[\w']*)")


def query_parts(query: str) -> list[str]:
    """The two halves of a question about two people ("What have Jon and Gina both
    done?" -> "What have Jon both done?", "What have Gina both done?"), or none."""
    m = _CONJUNCT.search(query)
    if m is None:
        return []
    return [query[: m.start()] + part + query[m.end() :] for part in (m[1], m[2])]


def spread_to_neighbors(
    scores: Mapping[str, float],
    neighbors: Mapping[str, Sequence[tuple[str, int]]],
    weight: float,
) -> dict[str, float]:
    """The score floor each neighbouring turn of a hit is offered:
    ``weight ** distance`` times the score of the hit, the best offer kept.

    A turn that answers a question often sits beside the turn that matched it ("What
    did you name her?" / "Biscuit!"). Search ranks a neighbour by the larger of its own
    score and this floor, so with ``weight < 1`` it never overtakes the hit that lifted it,
    and turns further away are offered less.
    """
    floor: dict[str, float] = {}
    for rid, neighbor_ids in neighbors.items():
        base = scores.get(rid, 0.0)
        for n, distance in neighbor_ids:
            share = base * weight ** abs(distance)
            if n != rid and share > floor.get(n, 0.0):
                floor[n] = share
    return floor


def below_durable(lifted: float, own: float, durable: Sequence[float]) -> float:
    """A neighbour floor's final score ``lifted`` for a turn whose own evidence scored
    ``own``, kept below every durable memory (a fact, preference, summary …: anything
    but a turn; ``durable`` sorted ascending) that ``own`` did not beat.

    The floor is evidence about where a turn sits in its conversation ("Biscuit!" right
    after "What did you name her?"), so it reorders turns among themselves; it is no
    evidence that the turn matters more than a fact that matched the query better on its
    own ("Also remind me to bring the gift" must not pass "I'm vegetarian" for "what
    should I cook?"). In a store of turns only, or of facts only, nothing changes."""
    at = bisect.bisect_right(durable, own)
    if at < len(durable) and durable[at] <= lifted:
        return math.nextafter(durable[at], -math.inf)
    return lifted


_QUESTION_HEAD = re.compile(
    r"^\s*(?:(?:what|when|where|who|whom|whose|which|why|how)(?: (?:many|much|long|often|"
    r"old|far|kind|type|sort))?(?: of)?\s+)?(?:(?:do|does|did|is|are|was|were|has|have|had|"
    r"can|could|would|will|should|might)\s+)?",
    re.I,
)


def as_statement(query: str) -> str:
    """A question reworded toward the statement that answers it, for the dense query:
    the leading question word and auxiliary verb go, and so does the question mark
    ("When did Caroline go to the support group?" -> "Caroline go to the support group").
    Returns the query unchanged when nothing would remain."""
    rest = _QUESTION_HEAD.sub("", query, count=1).strip().rstrip("?").strip()
    return rest or query


# ---------------------------------------------------------------------------- time

_MONTHS = {
    name: i
    for i, names in enumerate(
        [("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"),
         ("may",), ("jun", "june"), ("jul", "july"), ("aug", "august"),
         ("sep", "sept", "september"), ("oct", "october"), ("nov", "november"),
         ("dec", "december")],
        start=1,
    )
    for name in names
}  # fmt: skip
_MONTH = (
    r"(jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sept?(?:ember)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
_DAY_MONTH_YEAR = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)? {_MONTH},? (\d{{4}})\b", re.I)
_MONTH_DAY_YEAR = re.compile(rf"\b{_MONTH} (\d{{1,2}})(?:st|nd|rd|th)?,? (\d{{4}})\b", re.I)
_MONTH_YEAR = re.compile(rf"\b{_MONTH},? (\d{{4}})\b", re.I)
_YEAR = re.compile(r"\b(in|during|of|since) ((?:19|20)\d{2})\b", re.I)
_AGO = re.compile(r"\b(\d+|a|an|one|two|three|four|five|six) (day|week|month|year)s? ago\b", re.I)
_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
_UNIT_DAYS = {"day": 1, "week": 7, "month": 30, "year": 365}
_RELATIVE = {
    "yesterday": (1, 1),
    "today": (0, 0),
    "last week": (13, 7),
    "this week": (6, 0),
    "last month": (60, 30),
    "this month": (30, 0),
    "last year": (730, 365),
    "this year": (365, 0),
    "recently": (30, 0),
}


def time_window(query: str, now: datetime) -> tuple[datetime, datetime] | None:
    """The period a query refers to, if it names one: an explicit date, month or year
    ("on 8 May 2023", "in May 2023", "in 2022", "since 2022": from then until now) or a
    relative one ("yesterday", "last week", "3 days ago", relative to ``now``). Returns
    [start, end) or None, also for dates no calendar has ("May 0000", "9999 years ago")."""
    try:
        return _time_window(query, now)
    except (ValueError, OverflowError):
        return None


def _time_window(query: str, now: datetime) -> tuple[datetime, datetime] | None:
    if m := _DAY_MONTH_YEAR.search(query):
        start = _date(int(m[3]), _MONTHS[m[2].lower()[:3]], int(m[1]))
        return (start, start + timedelta(days=1)) if start else None
    if m := _MONTH_DAY_YEAR.search(query):
        start = _date(int(m[3]), _MONTHS[m[1].lower()[:3]], int(m[2]))
        return (start, start + timedelta(days=1)) if start else None
    if m := _MONTH_YEAR.search(query):
        year, month = int(m[2]), _MONTHS[m[1].lower()[:3]]
        start = datetime(year, month, 1, tzinfo=UTC)
        end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
        return start, end
    if m := _YEAR.search(query):
        year = int(m[2])
        start = datetime(year, 1, 1, tzinfo=UTC)
        if m[1].lower() == "since":
            return start, max(start, now.astimezone(UTC)) + timedelta(days=1)
        return start, datetime(year + 1, 1, 1, tzinfo=UTC)
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if m := _AGO.search(query):
        n = _WORDS.get(m[1].lower()) or int(m[1])
        days = n * _UNIT_DAYS[m[2].lower()]
        slack = max(1, days // 4)
        return today - timedelta(days=days + slack), today - timedelta(days=days - slack - 1)
    lowered = query.lower()
    for phrase, (back, until_back) in _RELATIVE.items():
        if re.search(rf"\b{phrase}\b", lowered):
            return today - timedelta(days=back), today - timedelta(days=until_back - 1)
    return None


def _date(year: int, month: int, day: int) -> datetime | None:
    try:
        return datetime(year, month, day, tzinfo=UTC)
    except ValueError:
        return None


# ---------------------------------------------------------------------------- boosts


def boosts(
    record: MemoryRecord,
    recipe: SearchRecipe,
    *,
    now: datetime,
    window: tuple[datetime, datetime] | None,
    query_tokens: frozenset[str],
) -> dict[str, float]:
    """The explicit re-ranking terms of one record; the final score is
    ``fused * (1 + sum(terms))``.

    - ``time``: ``time_weight`` when the record's effective time, or a period its text
      names (:attr:`MemoryRecord.periods`), falls in the period the query names.
    - ``speaker``: ``speaker_weight`` when the record is a turn (an episode) and the
      query names its speaker (the record's actor); a fact's actor is who wrote it.
    - ``recency``: ``recency_weight * 0.5 ** (age_days / recency_half_life_days)``.
    - ``importance``: ``importance_weight * (2 * importance - 1)``, in [-w, w].
    """
    terms: dict[str, float] = {}
    if recipe.time_weight and window is not None and in_window(record, window):
        terms["time"] = recipe.time_weight
    if recipe.speaker_weight and record.actor and record.kind is MemoryKind.EPISODE:
        speaker = set(tokenize(record.actor))
        if speaker and speaker <= query_tokens:  # an actor like "🙂" has no words to name
            terms["speaker"] = recipe.speaker_weight
    if recipe.recency_weight:
        age = max(0.0, (now - record.effective_time).total_seconds() / 86400)
        terms["recency"] = recipe.recency_weight * 0.5 ** (age / recipe.recency_half_life_days)
    if recipe.importance_weight:
        terms["importance"] = recipe.importance_weight * (2 * record.importance - 1)
    return terms


def in_window(record: MemoryRecord, window: tuple[datetime, datetime]) -> bool:
    """Whether ``record`` happened in ``window`` ([start, end)): its effective time lies
    in it, or a period its text names overlaps it ("we went camping last week", said
    on 3 July, was in the week of 26 June)."""
    start, end = window
    if start <= record.effective_time < end:
        return True
    return any(s < end and e > start for s, e in record.period_bounds())


# ---------------------------------------------------------------------------- diversity


def mmr(
    ranked: Sequence[tuple[str, float]],
    texts: Mapping[str, str],
    *,
    lam: float,
    limit: int,
) -> list[tuple[str, float]]:
    """Maximal marginal relevance over word sets: each pick maximizes
    ``lam * relevance - (1 - lam) * max Jaccard similarity to what was already picked``,
    with relevance scaled to [0, 1]. Keeps near-duplicates from filling the top."""
    if not ranked:
        return []
    top = ranked[0][1] or 1.0
    words = {rid: set(tokenize(texts.get(rid, ""))) for rid, _ in ranked}
    pool = list(ranked)
    picked: list[tuple[str, float]] = []
    while pool and len(picked) < limit:

        def value(item: tuple[str, float]) -> float:
            rid, score = item
            overlap = max((_jaccard(words[rid], words[p]) for p, _ in picked), default=0.0)
            return lam * score / top - (1 - lam) * overlap

        best = max(pool, key=value)
        pool.remove(best)
        picked.append(best)
    return picked


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0
