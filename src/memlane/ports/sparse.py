"""Learned sparse terms: SPLADE, the third opinion a search asks about its candidates.

A SPLADE model reads a text and gives each word of its vocabulary a weight: the words
the text says, and words it implies ("what should I cook for dinner?" also weighs
*food*, *lunch*, *meal*). A memory's terms are computed once, when it is written, and
kept with its vector; a search scores the candidates its vector and BM25 lists found by
the dot product of their terms with the query's, and fuses that as one more list
(``SearchRecipe.methods["sparse"]``). On LoCoMo this reorders what the other two found:
bench/recall.md.

The encoder that ships is SPLADE-tiny (:mod:`memlane.embedders.splade`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # numpy loads on first use: importing memlane (a CLI call) stays light
    import numpy as np

__all__ = ["SparseEncoder", "SparseTerms", "own_score", "pack", "score", "unpack"]


@dataclass(frozen=True, slots=True)
class SparseTerms:
    """One text's terms: vocabulary ids (ascending) and their weights (> 0)."""

    ids: np.ndarray  # uint16
    weights: np.ndarray  # float32

    def __len__(self) -> int:
        return int(self.ids.shape[0])


@runtime_checkable
class SparseEncoder(Protocol):
    """What turns texts into weighted vocabulary terms. ``model_id`` names the model (a
    store keeps terms by model, and never scores one model's terms with another's).

    An encoder may also say ``concurrent = True``: its ``encode`` may run on a thread of
    its own while the embedder embeds, so a search encodes the query's terms while it
    embeds the query. Without it (or when one object is both embedder and encoder) the
    two run one after the other."""

    model_id: str

    def encode(self, texts: Sequence[str], *, query: bool = False) -> list[SparseTerms]:
        """The terms of each text. ``query=True`` keeps every term (a memory keeps its
        strongest ``max_terms``)."""
        ...

    async def aencode(self, texts: Sequence[str], *, query: bool = False) -> list[SparseTerms]:
        """:meth:`encode` without blocking the event loop."""
        ...


def pack(terms: SparseTerms) -> bytes:
    """The stored form: the ids as little-endian uint16, then the weights as float16."""
    return terms.ids.astype("<u2").tobytes() + terms.weights.astype("<f2").tobytes()


def unpack(blob: bytes) -> SparseTerms:
    """The terms :func:`pack` stored. Raises ValueError on a blob of the wrong size."""
    import numpy as np

    if len(blob) % 4:
        raise ValueError(f"sparse terms of {len(blob)} bytes: not pairs of uint16 and float16")
    n = len(blob) // 4
    ids = np.frombuffer(blob, dtype="<u2", count=n)
    weights = np.frombuffer(blob, dtype="<f2", count=n, offset=2 * n).astype(np.float32)
    return SparseTerms(ids, weights)


def score(query: SparseTerms, memories: Mapping[str, bytes]) -> list[tuple[str, float]]:
    """(id, dot product with ``query``) of the memories whose stored terms share one with
    it, best first (ties by id). Raises ValueError on a blob :func:`unpack` refuses."""
    import numpy as np

    if not len(query) or not memories:
        return []
    rids = [rid for rid, blob in memories.items() if blob]  # no terms: no score
    blobs = [memories[rid] for rid in rids]
    sizes = np.fromiter((len(b) for b in blobs), dtype=np.int64, count=len(blobs))
    if np.any(sizes % 4):
        raise ValueError("sparse terms not made of pairs of uint16 and float16")
    if not rids:
        return []
    counts = sizes // 4
    ids = np.frombuffer(b"".join(b[: 2 * n] for b, n in zip(blobs, counts, strict=True)), "<u2")
    weights = np.frombuffer(
        b"".join(b[2 * n :] for b, n in zip(blobs, counts, strict=True)), "<f2"
    ).astype(np.float32)
    dense = np.zeros(65536, dtype=np.float32)  # every uint16 id: no bounds to check
    dense[query.ids] = query.weights
    totals = np.add.reduceat(dense[ids] * weights, np.cumsum(counts) - counts)
    out = [(rid, float(v)) for rid, v in zip(rids, totals.tolist(), strict=True) if v > 0]
    out.sort(key=lambda item: (-item[1], item[0]))
    return out


def own_score(terms: SparseTerms) -> float:
    """The dot product of ``terms`` with themselves (in float64: no overflow), the most
    a text with the same terms could score; 0 for none."""
    import numpy as np

    weights = np.asarray(terms.weights, dtype=np.float64)
    return float(weights @ weights)
