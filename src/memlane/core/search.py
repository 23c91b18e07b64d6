"""Search as data plus pure functions: candidate lists in, fused ranking out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Candidates = Sequence[tuple[str, float]]
"""(record id, raw score) pairs, best first, from one retrieval method."""


@dataclass(frozen=True, slots=True)
class SearchRecipe:
    """How search finds and ranks. Weights scale each method's RRF contribution."""

    name: str
    methods: Mapping[str, float] = field(default_factory=lambda: {"vector": 1.0, "lexical": 1.0})
    candidates: int = 50
    rrf_k: int = 60

    def __post_init__(self) -> None:
        unknown = set(self.methods) - {"vector", "lexical"}
        if unknown or not self.methods:
            raise ValueError(f"search methods must be vector and/or lexical, got {unknown}")


RECIPES: dict[str, SearchRecipe] = {
    "hybrid": SearchRecipe("hybrid"),
    "semantic": SearchRecipe("semantic", {"vector": 1.0}),
    "lexical": SearchRecipe("lexical", {"lexical": 1.0}),
}


def rrf(
    ranked: Mapping[str, Candidates], weights: Mapping[str, float], k: int = 60
) -> list[tuple[str, float, dict[str, Any]]]:
    """Weighted reciprocal rank fusion.

    Each method contributes ``weight / (k + rank)`` for every id it ranks (rank from 1).
    Returns (id, fused score, per-method breakdown) best first; ties break by id.
    """
    scores: dict[str, float] = {}
    parts: dict[str, dict[str, Any]] = {}
    for method, candidates in ranked.items():
        weight = weights.get(method, 0.0)
        for rank, (rid, raw) in enumerate(candidates, start=1):
            contribution = weight / (k + rank)
            scores[rid] = scores.get(rid, 0.0) + contribution
            parts.setdefault(rid, {})[method] = {
                "rank": rank,
                "score": raw,
                "contribution": contribution,
            }
    ordered = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(rid, score, parts[rid]) for rid, score in ordered]
