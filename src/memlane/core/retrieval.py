"""The search flow: gather candidates, fuse, spread to neighbours, boost, diversify."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from memlane.core.base import Core, check_aware
from memlane.core.flow import Flow, joined, many, one, read_aside
from memlane.core.mentions import entity_key
from memlane.core.mentions import names as mention_names
from memlane.core.search import (
    METHODS,
    RECIPES,
    RESCORING,
    SearchRecipe,
    as_statement,
    below_durable,
    boosts,
    feedback_terms,
    fuse,
    graph_scores,
    graph_seeds,
    hop_entities,
    mmr,
    query_parts,
    spread_to_neighbors,
    time_window,
)
from memlane.errors import UnsupportedError, ValidationError
from memlane.models import Filters, MemoryKind, MemoryRecord, SearchHit, check_id
from memlane.models.graph import EntityType
from memlane.ports import store as ops
from memlane.ports.embedder import Vector
from memlane.ports.sparse import SparseTerms, own_score
from memlane.ports.sparse import score as sparse_scores
from memlane.text import tokenize

_log = logging.getLogger("memlane.search")


@dataclass(frozen=True, slots=True)
class _Query:
    """One search request, checked."""

    text: str
    user_id: str
    filters: Filters
    now: datetime
    recipe: SearchRecipe
    limit: int

    @property
    def depth(self) -> int:
        """How many candidates each method returns."""
        return max(self.recipe.candidates, self.limit)


def search(
    core: Core,
    query: str,
    *,
    user_id: str,
    limit: int = 10,
    filters: Filters | None = None,
    recipe: str | SearchRecipe = "hybrid",
    explain: bool = False,
    as_of: datetime | None = None,
) -> Flow[list[SearchHit]]:
    """The user's memories most relevant to ``query``, best first.

    With ``as_of`` (a timezone-aware time; past, present or future) only the memories
    valid at that moment are searched: begun by then, and not superseded, deleted or
    expired by then (:func:`memlane.models.queries.valid_at`); "where did she live as of
    March 2024" is then answered by the memory true in March 2024, not today's. A time
    the query names ("in March 2024") is something else: it boosts memories whose
    event time falls in it, as without ``as_of``. Same as ``filters.as_of``.

    The default recipe (``hybrid``) fuses two candidate lists by score — dense vectors
    of each memory and BM25 (an episode also matched through the turn before it) —
    each scaled by its best hit, then lets the turns beside strong hits share their
    score, and boosts memories of a speaker the query names and memories inside a
    period it names ("in May 2023", "last week"). With ``explain=True`` each hit says
    how its score was made.
    Raises ValidationError for an empty query, a bad limit, an unknown recipe or a
    naive ``as_of``.
    """
    check_id("user_id", user_id)
    query = core.check_text(query, "query")
    policy = core.pii_policy(user_id)
    if policy is not None:  # the stored pseudonyms, so that a search finds them
        query = policy.apply(query, "query", query=True)
    limit = core.check_limit(limit)
    checked = _recipe(recipe)
    q = _Query(query, user_id, _filters(filters, as_of), core.now(), checked, limit)
    fused, second = yield from _fused(core, q)
    scores = {rid: score for rid, score, _ in fused}
    floor = yield from _neighbor_floor(core, q, fused, scores)
    pool = tuple(dict.fromkeys([*scores, *floor]))
    window = time_window(query, q.now) if q.recipe.time_weight else None
    records, (ranked, terms_of, capped) = yield from _rank(q, pool, scores, floor, window)
    if core.config.track_access and ranked:
        yield from one(ops.TouchRecords(user_id, tuple(rid for rid, _ in ranked), q.now))
    hits = []
    for rid, score in ranked:
        record = records[rid]
        if core.config.track_access:
            record = replace(record, access_count=record.access_count + 1, last_accessed_at=q.now)
        explanation = None
        if explain:
            explanation = _explanation(
                q.recipe, rid, fused, scores, floor, terms_of, window, capped
            )
            explanation.update(_round(rid, fused, second))
        hits.append(SearchHit(record, score, explanation))
    return hits


def _fused(core: Core, q: _Query) -> Flow[tuple[list[tuple[str, float, dict[str, Any]]], _Second]]:
    """The candidate lists of the recipe's methods fused (with a feedback round, an
    entity hop and a graph round when the recipe asks for them), and the entities the
    second round searched with (``hop_entities``, ``graph_entities``)."""
    recipe = q.recipe
    wanted = [m for m in METHODS if recipe.methods.get(m, 0.0) > 0]
    methods = [m for m in wanted if m not in RESCORING]
    rescore = "sparse" in wanted and core.sparse_model_id is not None
    # The lexical read tells the store that the candidates' sparse terms come next.
    model = core.sparse_model_id
    terms_next = (model, core.model_id) if rescore and model is not None else None
    dense = [m for m in methods if m in ("vector", "context")]
    aside = None
    if dense and "lexical" in methods:  # read while the query is embedded, where it can be
        aside = yield from read_aside([_candidates(core, q, "lexical", None, terms_next)])
    vector = terms = None
    if dense:
        dense_query = as_statement(q.text) if recipe.rewrite_query else q.text
        if rescore:  # the query's terms made beside its vector, where that is likely of use
            vector, terms = yield from core.query_vector_and_terms(dense_query, q.text, q.user_id)
        else:
            vector = yield from core.query_vector(dense_query)
    if aside is None:
        results = yield from many([_candidates(core, q, m, vector, terms_next) for m in methods])
        found = dict(zip(methods, results, strict=True))
    else:
        read, (lexical,) = yield from joined(
            [_candidates(core, q, m, vector, terms_next) for m in dense], aside
        )
        found = {**dict(zip(dense, read, strict=True)), "lexical": lexical}
    lists = {m: found[m] for m in methods}
    weights = dict(recipe.methods)
    floors: dict[str, float] = {}
    if rescore:
        rescored, own = yield from _sparse(core, q, lists, terms)
        if rescored:
            lists["sparse"] = rescored
            floors["sparse"] = recipe.sparse_floor * own
    fused = fuse(lists, weights, recipe, floors)
    if recipe.feedback_docs > 0 and fused:
        extra = yield from _feedback(core, q, vector, fused)
        lists.update(extra)
        weights["vector_feedback"] = recipe.feedback_vector_weight
        weights["lexical_feedback"] = recipe.feedback_lexical_weight
        fused = fuse(lists, weights, recipe, floors)
    second = _Second()
    if recipe.hop_weight > 0 and fused:
        hop, found = yield from _hop(q, fused)
        if hop:
            second.hop = hop
        for name, candidates in found.items():
            lists[name] = candidates
            weights[name] = recipe.hop_weight
        if found:
            fused = fuse(lists, weights, recipe, floors)
    if recipe.graph_weight > 0 and fused:
        try:
            via, graph = yield from _graph(q, fused)
        except UnsupportedError:  # a plugin store without the knowledge graph
            via, graph = {}, []
        if graph:
            lists["graph"], weights["graph"] = graph, recipe.graph_weight
            fused = fuse(lists, weights, recipe, floors)
            second.graph = via
    return fused, second


def _sparse(
    core: Core,
    q: _Query,
    lists: dict[str, list[tuple[str, float]]],
    terms: SparseTerms | None = None,
) -> Flow[tuple[list[tuple[str, float]], float]]:
    """The candidates of ``lists`` scored by their sparse terms' dot product with the
    query's (``terms`` when made already), best first (those sharing no term are left
    out), and the query's own score (its terms with themselves). Empty when a candidate
    has no terms (written without the encoder, before ``memlane reindex`` gave it
    some): a list that scored only some candidates would rank the others down."""
    model = core.sparse_model_id
    pool = tuple(dict.fromkeys(rid for candidates in lists.values() for rid, _ in candidates))
    if model is None or not pool:
        return [], 0.0
    try:
        stored = yield from one(ops.SparseOf(q.user_id, model, pool, core.model_id))
    except UnsupportedError:  # a plugin store that keeps no sparse terms
        core.note_terms(q.user_id, False)
        return [], 0.0
    core.note_terms(q.user_id, len(stored) == len(pool))
    if len(stored) < len(pool):  # checked first: then the query is not encoded for nothing
        if core.warn_once("unscored"):
            _log.warning(
                "%d search candidates have no sparse terms, so searches skip the sparse "
                "list where they are among the candidates; `memlane reindex` gives them terms",
                len(pool) - len(stored),
            )
        return [], 0.0
    if terms is None:
        terms = yield from core.query_terms(q.text)
    if terms is None or not len(terms):
        return [], 0.0
    try:
        return sparse_scores(terms, stored), own_score(terms)
    except ValueError as exc:  # a damaged row: search on without the list
        if core.warn_once("damaged"):
            _log.warning("stored sparse terms are damaged (%s); `memlane reindex`", exc)
        return [], 0.0


def _graph(
    q: _Query, fused: list[tuple[str, float, dict[str, Any]]]
) -> Flow[tuple[dict[str, list[str]], list[tuple[str, float]]]]:
    """The graph round: the memories that name the entities the query names, the
    entities the first round's top hits name, and the entities one edge from the query's
    (:func:`graph_seeds`), scored by :func:`graph_scores`; with, per memory found, the
    seeds it names. Dates are left to the time boost, and an entity named by more
    than ``graph_mentions`` memories is not followed (each entity's mentions are read up
    to one past that)."""
    recipe = q.recipe
    keys = tuple(dict.fromkeys(k for n in mention_names(q.text) if (k := entity_key(n))))
    top = fused[: recipe.graph_docs]
    asked, mentioned = yield from many(
        [
            ops.FindEntities(q.user_id, keys),
            ops.ListMentions(q.user_id, record_ids=tuple(rid for rid, _, _ in top)),
        ]
    )
    asked_ids = tuple(dict.fromkeys(asked[k] for k in keys if k in asked))
    related: list[str] = []
    if asked_ids:
        near = yield from many(
            [ops.EntityNeighbors(q.user_id, e, 1, recipe.graph_entities) for e in asked_ids]
        )
        related = [e for found in near for e, _ in found]
    named: dict[str, list[str]] = {}
    for m in mentioned:
        named.setdefault(m.record_id, []).append(m.entity_id)
    hits = [(score, named.get(rid, [])) for rid, score, _ in top]
    seeds = graph_seeds(asked_ids, hits, related, len(asked_ids) + recipe.graph_entities)
    if not seeds:
        return {}, []
    entities = yield from one(ops.ListEntities(q.user_id, ids=tuple(seeds)))
    kept = {e.id: e for e in entities if e.merged_into is None and e.type is not EntityType.DATE}
    seeds = {e: w for e, w in seeds.items() if e in kept}
    cap = recipe.graph_mentions
    found = yield from many(
        [ops.ListMentions(q.user_id, entity_ids=(e,), limit=cap + 1) for e in seeds]
    )
    named_by = {
        e: [m.record_id for m in ms] for e, ms in zip(seeds, found, strict=True) if len(ms) <= cap
    }
    scored = graph_scores(seeds, named_by, q.depth)
    via: dict[str, list[str]] = {}  # each found memory: the seeds it names (its own names)
    for e in seeds:
        for rid in named_by.get(e, ()):
            via.setdefault(rid, []).append(kept[e].name)
    return via, scored


def _hop(
    q: _Query, fused: list[tuple[str, float, dict[str, Any]]]
) -> Flow[tuple[list[str], dict[str, list[tuple[str, float]]]]]:
    """The second round: the entities the first round's top hits name that the query
    does not (speakers left out), and the BM25 candidates of the query with them and of
    each half of a question about two (:func:`query_parts`), by list name."""
    records = yield from _top_records(q, fused, q.recipe.hop_docs)
    speakers = {r.actor for r in records if r.actor}
    names = hop_entities(q.text, [r.text for r in records], q.recipe.hop_entities, speakers)
    queries = {f"lexical_part{i}": part for i, part in enumerate(query_parts(q.text), 1)}
    if names:
        queries["lexical_hop"] = q.text + " " + " ".join(names)
    if not queries:
        return names, {}
    found = yield from many([_lexical(q, text) for text in queries.values()])
    return names, dict(zip(queries, found, strict=True))


@dataclass(slots=True)
class _Second:
    """What a second round searched with: the names the lexical hop added to the query
    (read from the first round's top hits), and per memory the graph round found, the
    seed entities it names (never a name only a memory outside the search's filters says)."""

    hop: list[str] = field(default_factory=list)
    graph: dict[str, list[str]] = field(default_factory=dict)


def _round(
    rid: str, fused: list[tuple[str, float, dict[str, Any]]], second: _Second
) -> dict[str, Any]:
    """Which round found hit ``rid``: 2 when only the second round's lists hold it (a
    neighbour lifted by a hit counts as the first round's), with the entities it used:
    the hop's, and the graph entities this hit names."""
    parts = next((p for r, _, p in fused if r == rid), {})
    late = bool(parts) and all(m.startswith(_SECOND_ROUND) for m in parts)
    out: dict[str, Any] = {"round": 2 if late else 1}
    if second.hop:
        out["hop_entities"] = second.hop
    if rid in second.graph:
        out["graph_entities"] = second.graph[rid]
    return out


_SECOND_ROUND = ("lexical_hop", "lexical_part", "graph")


def _candidates(
    core: Core,
    q: _Query,
    method: str,
    vector: Vector | None,
    terms_next: tuple[str, str] | None = None,
) -> ops.Op[Any]:
    """The store read that finds candidates by ``method`` (``terms_next``: see
    :attr:`ops.LexicalSearch.terms_next`)."""
    if method == "lexical":
        return _lexical(q, q.text, terms_next)
    assert vector is not None
    field = "content" if method == "vector" else "context"
    return ops.VectorSearch(q.user_id, q.filters, q.now, core.model_id, vector, q.depth, field)


def _neighbor_floor(
    core: Core,
    q: _Query,
    fused: list[tuple[str, float, dict[str, Any]]],
    scores: dict[str, float],
) -> Flow[dict[str, float]]:
    """The score the turns beside the strongest hits get from them."""
    recipe = q.recipe
    if recipe.neighbor_weight <= 0 or not fused:
        return {}
    top = tuple(rid for rid, _, _ in fused[: recipe.neighbor_top])
    neighbors = yield from one(ops.GetNeighbors(q.user_id, top, recipe.neighbor_window, q.now))
    return spread_to_neighbors(scores, neighbors, recipe.neighbor_weight)


def _lexical(q: _Query, text: str, terms_next: tuple[str, str] | None = None) -> ops.LexicalSearch:
    """The BM25 read of ``text`` in the query's scope (every round's lexical list)."""
    return ops.LexicalSearch(
        q.user_id, q.filters, q.now, text, q.depth, q.recipe.lexical_context_weight, terms_next
    )


def _top_records(
    q: _Query, fused: list[tuple[str, float, dict[str, Any]]], n: int
) -> Flow[list[MemoryRecord]]:
    """The records of the first round's ``n`` best hits (what a second round reads)."""
    top = tuple(rid for rid, _, _ in fused[:n])
    return (yield from one(ops.GetRecords(q.user_id, top)))


def _feedback(
    core: Core, q: _Query, vector: Vector | None, fused: list[tuple[str, float, dict[str, Any]]]
) -> Flow[dict[str, list[tuple[str, float]]]]:
    """Second-round candidate lists from the first round's top hits."""
    recipe = q.recipe
    records = yield from _top_records(q, fused, recipe.feedback_docs)
    wanted: list[ops.Op[Any]] = []
    names: list[str] = []
    if vector is not None and recipe.feedback_vector_weight > 0:
        hashes = tuple(r.content_hash for r in records)
        cached = yield from one(ops.GetEmbeddings(core.model_id, hashes))
        vs = [cached[h] for h in hashes if h in cached]
        if vs:
            import numpy as np

            moved = vector + recipe.feedback_beta * np.mean(np.vstack(vs), axis=0)
            moved = (moved / float(np.linalg.norm(moved))).astype(np.float32)
            wanted.append(
                ops.VectorSearch(q.user_id, q.filters, q.now, core.model_id, moved, q.depth)
            )
            names.append("vector_feedback")
    if recipe.feedback_lexical_weight > 0:
        terms = feedback_terms(q.text, [r.text for r in records], recipe.feedback_terms)
        if terms:
            wanted.append(_lexical(q, q.text + " " + " ".join(terms)))
            names.append("lexical_feedback")
    if not wanted:
        return {}
    results = yield from many(wanted)
    return dict(zip(names, results, strict=True))


def _recipe(recipe: str | SearchRecipe) -> SearchRecipe:
    if isinstance(recipe, SearchRecipe):
        return recipe
    if recipe not in RECIPES:
        raise ValidationError(f"unknown search recipe {recipe!r}; one of {sorted(RECIPES)}")
    return RECIPES[recipe]


def _filters(filters: object, as_of: datetime | None = None) -> Filters:
    """``filters`` (none: every current memory), at ``as_of`` when given. Raises
    ValidationError for what is not a Filters, a naive ``as_of``, or an ``as_of`` that
    differs from the one ``filters`` already has."""
    if filters is None:
        filters = Filters()
    if not isinstance(filters, Filters):
        raise ValidationError(f"filters must be a memlane.Filters, got {type(filters).__name__}")
    if as_of is None:
        return filters
    check_aware("as_of", as_of)
    if filters.as_of is not None and filters.as_of != as_of:
        raise ValidationError("as_of is given twice, differently (argument and filters)")
    return replace(filters, as_of=as_of)


FIRST_READ = 32
"""Records read in the first round of ranking at least (and 3x the limit, and a quarter
of the pool); each further round reads twice as many as the one before."""


def _first_read(limit: int, pool: int) -> int:
    """How many records the first round of ranking reads: a quarter of a large pool (a
    hybrid search's few hundred candidates read ~140 records at a million memories, in
    2.3 rounds from 32, 1.7 from a quarter: one round trip fewer), else
    :data:`FIRST_READ` or 3x the limit."""
    return max(FIRST_READ, 3 * limit, pool // 4)


def _rank(
    q: _Query,
    pool: tuple[str, ...],
    scores: dict[str, float],
    floor: dict[str, float],
    window: tuple[datetime, datetime] | None,
) -> Flow[tuple[dict[str, MemoryRecord], _Ranking]]:
    """The pool ranked as :func:`_ranked` ranks it, reading only the records that can
    reach the top: best base score (fused, or a neighbour's floor) first, in rounds,
    until no record left unread could enter the top ``limit`` or change a score in it
    (:func:`_settled`). A few dozen records of a pool of hundreds, as search reads full
    rows. MMR compares every candidate's text, so it reads them all."""
    base = {rid: max(scores.get(rid, 0.0), floor.get(rid, 0.0)) for rid in pool}
    order = sorted(pool, key=lambda rid: -base[rid])
    most = _boost_bound(q.recipe, window)
    records: dict[str, MemoryRecord] = {}
    size = len(order) if q.recipe.mmr_lambda is not None else _first_read(q.limit, len(order))
    read = 0
    while True:
        chunk = tuple(order[read : read + size])
        read += len(chunk)
        records.update((r.id, r) for r in (yield from one(ops.GetRecords(q.user_id, chunk))))
        ranking = _ranked(q, tuple(records), records, scores, floor, window)
        if read >= len(order) or _settled(ranking, scores, base[order[read]] * most, q.limit):
            return records, ranking
        size = _next_read(ranking, scores, order, read, base, most, q.limit, size)


def _next_read(
    ranking: _Ranking,
    scores: dict[str, float],
    order: list[str],
    read: int,
    base: dict[str, float],
    most: float,
    limit: int,
    size: int,
) -> int:
    """How many records the next round of ranking reads: the unread ones (best base
    first) that could still enter the top as it stands (:func:`_threshold`), at least a
    few, at most twice the last round."""
    threshold = _threshold(ranking, scores, limit)
    if threshold is None:
        return size * 2
    could = read
    while could < len(order) and base[order[could]] * most >= threshold:
        could += 1
    return max(8, min(size * 2, could - read))


def _boost_bound(recipe: SearchRecipe, window: tuple[datetime, datetime] | None) -> float:
    """The largest factor :func:`boosts` can give any record for this query, with a
    margin for rounding (the factor's terms are summed in another order)."""
    time = max(recipe.time_weight, 0.0) if window is not None else 0.0
    terms = (
        time
        + max(recipe.speaker_weight, 0.0)
        + max(recipe.recency_weight, 0.0)
        + abs(recipe.importance_weight)
    )
    return (1.0 + terms) * (1.0 + 1e-9)


def _settled(ranking: _Ranking, scores: dict[str, float], unread: float, limit: int) -> bool:
    """Whether records not read yet, each scoring at most ``unread``, leave the top
    ``limit`` of ``ranking`` as it is: none can pass its last hit, and none can be a
    durable memory that a turn in it was capped below (:func:`below_durable` caps a
    turn lifted by a neighbour below the durable memories that score more than its own
    evidence, ``own``)."""
    threshold = _threshold(ranking, scores, limit)
    return threshold is not None and unread < threshold


def _threshold(ranking: _Ranking, scores: dict[str, float], limit: int) -> float | None:
    """The score an unread record must reach to change the top ``limit`` of ``ranking``:
    its last hit's, or lower where a turn in it was capped below a durable memory that
    scores more than the turn's own evidence (see :func:`_settled`). None while the top
    is not full."""
    ranked, terms_of, _ = ranking
    if len(ranked) < limit:
        return None
    threshold = ranked[-1][1]
    for rid, _score in ranked:
        threshold = min(threshold, scores.get(rid, 0.0) * (1.0 + sum(terms_of[rid].values())))
    return threshold


_Ranking = tuple[list[tuple[str, float]], dict[str, dict[str, float]], dict[str, float]]


def _ranked(
    q: _Query,
    pool: tuple[str, ...],
    records: dict[str, MemoryRecord],
    scores: dict[str, float],
    floor: dict[str, float],
    window: tuple[datetime, datetime] | None,
) -> _Ranking:
    """The pool's ids with their final scores, best first and cut to the limit (after
    MMR when the recipe asks for it), each one's boost terms, and the turns whose
    neighbour floor was capped below a durable memory (:func:`below_durable`) with the
    score it would have had: capped turns that tie keep their floors' order."""
    recipe, now = q.recipe, q.now
    query_tokens = frozenset(tokenize(q.text))
    own: dict[str, float] = {}
    final: dict[str, float] = {}
    terms_of: dict[str, dict[str, float]] = {}
    for rid in pool:
        record = records.get(rid)
        if record is None or not q.filters.matches(record, now):
            continue  # gone since the first read, or a neighbour outside the filters
        terms = boosts(record, recipe, now=now, window=window, query_tokens=query_tokens)
        terms_of[rid] = terms
        factor = 1.0 + sum(terms.values())
        own[rid] = scores.get(rid, 0.0) * factor
        final[rid] = max(scores.get(rid, 0.0), floor.get(rid, 0.0)) * factor
    durable = sorted(final[r] for r in final if records[r].kind is not MemoryKind.EPISODE)
    ranked = [
        (rid, below_durable(score, own[rid], durable) if score > own[rid] else score)
        for rid, score in final.items()
    ]
    capped = {rid: final[rid] for rid, score in ranked if score < final[rid]}
    ranked.sort(key=lambda item: (-item[1], -final[item[0]], item[0]))
    if recipe.mmr_lambda is not None:
        top = ranked[: max(q.depth, q.limit)]
        texts = {rid: records[rid].text for rid, _ in top}
        ranked = mmr(top, texts, lam=recipe.mmr_lambda, limit=q.limit)
    return ranked[: q.limit], terms_of, capped


def _explanation(
    recipe: SearchRecipe,
    rid: str,
    fused: list[tuple[str, float, dict[str, Any]]],
    scores: dict[str, float],
    floor: dict[str, float],
    terms_of: dict[str, dict[str, float]],
    window: tuple[datetime, datetime] | None,
    capped: dict[str, float],
) -> dict[str, Any]:
    """How the score of hit ``rid`` was made. ``floor_capped``: the score the neighbour
    floor would have given, had it not been kept below a durable memory."""
    parts = {r: p for r, _, p in fused}
    return {
        "recipe": recipe.name,
        "fusion": recipe.fusion,
        "rrf_k": recipe.rrf_k,
        **parts.get(rid, {}),
        "fused": scores.get(rid, 0.0),
        "neighbor_floor": floor.get(rid, 0.0),
        "boosts": terms_of[rid],
        "time_window": None if window is None else [w.isoformat() for w in window],
        **({"floor_capped": capped[rid]} if rid in capped else {}),
    }
