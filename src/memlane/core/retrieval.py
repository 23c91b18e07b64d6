"""The search flow: gather candidates, fuse, spread to neighbours, boost, diversify."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from memlane.core.base import CoreBase
from memlane.core.flow import Flow, many, one
from memlane.core.search import (
    METHODS,
    RECIPES,
    SearchRecipe,
    as_statement,
    boosts,
    feedback_terms,
    fuse,
    mmr,
    spread_to_neighbors,
    time_window,
)
from memlane.errors import ValidationError
from memlane.models import Filters, SearchHit, check_id
from memlane.ports import store as ops
from memlane.ports.embedder import Vector
from memlane.text import tokenize


class SearchMixin(CoreBase):
    """Hybrid retrieval over a user's memories."""

    def search(
        self,
        query: str,
        *,
        user_id: str,
        limit: int = 10,
        filters: Filters | None = None,
        recipe: str | SearchRecipe = "hybrid",
        explain: bool = False,
    ) -> Flow[list[SearchHit]]:
        """The user's memories most relevant to ``query``, best first.

        The default recipe (``hybrid``) fuses two candidate lists by score — dense vectors
        of each memory and BM25 (an episode also matched through the turn before it) —
        each scaled by its best hit, then lets the turns beside strong hits share their
        score, and boosts memories of a speaker the query names and memories inside a
        period it names ("in May 2023", "last week"). With ``explain=True`` each hit says
        how its score was made.
        Raises ValidationError for an empty query, a bad limit or an unknown recipe.
        """
        check_id("user_id", user_id)
        query = self.check_text(query, "query")
        limit = self._check_limit(limit)
        recipe = _recipe(recipe)
        f = _filters(filters)
        now = self.now()
        depth = max(recipe.candidates, limit)

        methods = [m for m in METHODS if recipe.methods.get(m, 0.0) > 0]
        wanted: list[ops.Op[Any]] = []
        vector = None
        if "vector" in methods or "context" in methods:
            dense_query = as_statement(query) if recipe.rewrite_query else query
            vector = yield from self._query_vector(dense_query)
        for method in methods:
            if method == "lexical":
                wanted.append(
                    ops.LexicalSearch(user_id, f, now, query, depth, recipe.lexical_context_weight)
                )
            else:
                assert vector is not None
                field = "content" if method == "vector" else "context"
                wanted.append(
                    ops.VectorSearch(user_id, f, now, self.model_id, vector, depth, field)
                )
        results = yield from many(wanted)
        lists = dict(zip(methods, results, strict=True))
        weights = dict(recipe.methods)
        fused = fuse(lists, weights, recipe)
        if recipe.feedback_docs > 0 and fused:
            extra = yield from self._feedback(query, vector, fused, recipe, user_id, f, now, depth)
            lists.update(extra)
            weights["vector_feedback"] = recipe.feedback_vector_weight
            weights["lexical_feedback"] = recipe.feedback_lexical_weight
            fused = fuse(lists, weights, recipe)
        scores = {rid: score for rid, score, _ in fused}
        parts = {rid: p for rid, _, p in fused}

        floor: dict[str, float] = {}
        if recipe.neighbor_weight > 0 and fused:
            top = tuple(rid for rid, _, _ in fused[: recipe.neighbor_top])
            neighbors = yield from one(ops.GetNeighbors(user_id, top, recipe.neighbor_window, now))
            floor = spread_to_neighbors(scores, neighbors, recipe.neighbor_weight)

        pool = tuple(dict.fromkeys([*scores, *floor]))
        records = {r.id: r for r in (yield from one(ops.GetRecords(user_id, pool)))}
        window = time_window(query, now) if recipe.time_weight else None
        query_tokens = frozenset(tokenize(query))
        ranked: list[tuple[str, float]] = []
        terms_of: dict[str, dict[str, float]] = {}
        for rid in pool:
            record = records.get(rid)
            if record is None or not f.matches(record, now):
                continue  # gone since the first read, or a neighbour outside the filters
            terms = boosts(record, recipe, now=now, window=window, query_tokens=query_tokens)
            terms_of[rid] = terms
            base = max(scores.get(rid, 0.0), floor.get(rid, 0.0))
            ranked.append((rid, base * (1.0 + sum(terms.values()))))
        ranked.sort(key=lambda item: (-item[1], item[0]))
        if recipe.mmr_lambda is not None:
            texts = {rid: records[rid].text for rid, _ in ranked[: max(depth, limit)]}
            ranked = mmr(ranked[: max(depth, limit)], texts, lam=recipe.mmr_lambda, limit=limit)
        ranked = ranked[:limit]

        if self.config.track_access and ranked:
            yield from one(ops.TouchRecords(user_id, tuple(rid for rid, _ in ranked), now))
        hits = []
        for rid, score in ranked:
            record = records[rid]
            if self.config.track_access:
                record = replace(record, access_count=record.access_count + 1, last_accessed_at=now)
            explanation = None
            if explain:
                explanation = {
                    "recipe": recipe.name,
                    "fusion": recipe.fusion,
                    "rrf_k": recipe.rrf_k,
                    **parts.get(rid, {}),
                    "fused": scores.get(rid, 0.0),
                    "neighbor_floor": floor.get(rid, 0.0),
                    "boosts": terms_of[rid],
                    "time_window": None if window is None else [w.isoformat() for w in window],
                }
            hits.append(SearchHit(record, score, explanation))
        return hits

    def _feedback(
        self,
        query: str,
        vector: Vector | None,
        fused: list[tuple[str, float, dict[str, Any]]],
        recipe: SearchRecipe,
        user_id: str,
        f: Filters,
        now: datetime,
        depth: int,
    ) -> Flow[dict[str, list[tuple[str, float]]]]:
        """Second-round candidate lists from the first round's top hits."""
        top = tuple(rid for rid, _, _ in fused[: recipe.feedback_docs])
        records = yield from one(ops.GetRecords(user_id, top))
        wanted: list[ops.Op[Any]] = []
        names: list[str] = []
        if vector is not None and recipe.feedback_vector_weight > 0:
            hashes = tuple(r.content_hash for r in records)
            cached = yield from one(ops.GetEmbeddings(self.model_id, hashes))
            vs = [cached[h] for h in hashes if h in cached]
            if vs:
                import numpy as np

                moved = vector + recipe.feedback_beta * np.mean(np.vstack(vs), axis=0)
                moved = (moved / float(np.linalg.norm(moved))).astype(np.float32)
                wanted.append(
                    ops.VectorSearch(user_id, f, now, self.model_id, moved, depth, "content")
                )
                names.append("vector_feedback")
        if recipe.feedback_lexical_weight > 0:
            terms = feedback_terms(query, [r.text for r in records], recipe.feedback_terms)
            if terms:
                expanded = query + " " + " ".join(terms)
                wanted.append(
                    ops.LexicalSearch(
                        user_id, f, now, expanded, depth, recipe.lexical_context_weight
                    )
                )
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


def _filters(filters: object) -> Filters:
    if filters is None:
        return Filters()
    if not isinstance(filters, Filters):
        raise ValidationError(f"filters must be a memlane.Filters, got {type(filters).__name__}")
    return filters
