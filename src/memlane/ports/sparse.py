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
    """The stored form: the ids as little-endian uint16, then each weight as a byte (its
    share of the largest, rounded, at least 1), then the largest weight / 255 as float16,
    then a zero byte where the length would be even; no terms, no bytes. 3 bytes a term
    (a weight within 0.2 % of the largest of its text); the form before, whose weights
    took 2 bytes each, is never odd in length, this one always is, and :func:`unpack` and
    :func:`score` read both. Weights float16 cannot scale are kept in that form."""
    import numpy as np

    ids = bytes(terms.ids.astype("<u2").tobytes())
    weights = np.asarray(terms.weights, dtype=np.float32)
    if not weights.shape[0]:
        return b""
    step = np.float16(float(weights.max()) / 255.0)
    if not np.isfinite(step) or step < np.finfo(np.float16).smallest_normal:
        # beyond float16, or so small that float16 holds the step coarsely (a largest
        # weight under ~0.016): the weights as they were kept before
        return ids + bytes(weights.astype("<f2").tobytes())
    levels = np.clip(np.rint(weights / np.float32(step)), 1, 255).astype(np.uint8)
    out = ids + bytes(levels.tobytes()) + bytes(step.astype("<f2").tobytes())
    return out if len(out) % 2 else out + b"\0"


def _count(size: int) -> int:
    """How many terms a stored blob of ``size`` bytes holds (:func:`pack`); -1 for a
    size no blob has."""
    if not size % 2:
        return size // 4 if not size % 4 else -1
    n = (size - 2) // 3
    return n if n > 0 and 3 * n + 2 + (1 - n % 2) == size else -1  # none: b""


def unpack(blob: bytes) -> SparseTerms:
    """The terms :func:`pack` stored. Raises ValueError on a blob of the wrong size."""
    import numpy as np

    n = _count(len(blob))
    if n < 0:
        raise ValueError(f"sparse terms of {len(blob)} bytes: not a form pack() writes")
    ids = np.frombuffer(blob, dtype="<u2", count=n)
    if not len(blob) % 2:
        weights = np.frombuffer(blob, dtype="<f2", count=n, offset=2 * n).astype(np.float32)
    else:
        step = np.frombuffer(blob, dtype="<f2", count=1, offset=3 * n).astype(np.float32)
        weights = np.frombuffer(blob, dtype=np.uint8, count=n, offset=2 * n) * step
    return SparseTerms(ids, weights.astype(np.float32))


def score(query: SparseTerms, memories: Mapping[str, bytes]) -> list[tuple[str, float]]:
    """(id, dot product with ``query``) of the memories whose stored terms share one with
    it, best first (ties by id). Raises ValueError on a blob :func:`unpack` refuses."""
    import numpy as np

    if not len(query) or not memories:
        return []
    rids = [rid for rid, blob in memories.items() if blob]  # no terms: no score
    blobs = [memories[rid] for rid in rids]
    counts = np.fromiter((_count(len(b)) for b in blobs), dtype=np.int64, count=len(blobs))
    if np.any(counts < 0):
        raise ValueError("sparse terms not of a form pack() writes")
    if not np.all(counts):  # no terms: no score
        keep = np.flatnonzero(counts)
        rids, blobs, counts = [rids[i] for i in keep], [blobs[i] for i in keep], counts[keep]
    if not rids:
        return []
    ids = np.frombuffer(b"".join(b[: 2 * n] for b, n in zip(blobs, counts, strict=True)), "<u2")
    weights = np.empty(ids.shape[0], dtype=np.float32)
    ends = np.cumsum(counts)
    starts = ends - counts
    old = np.fromiter((not len(b) % 2 for b in blobs), dtype=bool, count=len(blobs))
    for form, which in ((True, np.flatnonzero(old)), (False, np.flatnonzero(~old))):
        if not len(which):
            continue
        at = np.concatenate([np.arange(starts[i], ends[i]) for i in which])
        if form:  # float16 weights
            part = b"".join(blobs[i][2 * counts[i] :] for i in which)
            weights[at] = np.frombuffer(part, "<f2")
        else:  # a byte a weight, and the step
            part = b"".join(blobs[i][2 * counts[i] : 3 * counts[i]] for i in which)
            steps = b"".join(blobs[i][3 * counts[i] : 3 * counts[i] + 2] for i in which)
            each = np.frombuffer(steps, "<f2").astype(np.float32)
            weights[at] = np.frombuffer(part, np.uint8) * np.repeat(each, counts[which])
    dense = np.zeros(65536, dtype=np.float32)  # every uint16 id: no bounds to check
    dense[query.ids] = query.weights
    products = dense[ids] * weights
    totals = np.add.reduceat(products, starts)
    out = [(rid, float(v)) for rid, v in zip(rids, totals.tolist(), strict=True) if v > 0]
    out.sort(key=lambda item: (-item[1], item[0]))
    return out


def own_score(terms: SparseTerms) -> float:
    """The dot product of ``terms`` with themselves (in float64: no overflow), the most
    a text with the same terms could score; 0 for none."""
    import numpy as np

    weights = np.asarray(terms.weights, dtype=np.float64)
    return float(weights @ weights)
