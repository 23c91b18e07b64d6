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


def _counts(sizes: np.ndarray) -> np.ndarray:
    """How many terms stored blobs of ``sizes`` bytes hold (:func:`pack`): the form
    before is a multiple of 4 (none: ``b""``), the byte weights' form odd; -1 for a size
    no blob has."""
    import numpy as np

    odd = (sizes & 1).astype(bool)
    counts = np.where(odd, (sizes - 2) // 3, sizes // 4)
    expected = np.where(odd, 3 * counts + 2 + (1 - counts % 2), 4 * counts)
    return np.where((expected == sizes) & ((counts > 0) | ~odd), counts, -1)


def unpack(blob: bytes) -> SparseTerms:
    """The terms :func:`pack` stored. Raises ValueError on a blob of the wrong size."""
    import numpy as np

    n = int(_counts(np.array([len(blob)], dtype=np.int64))[0])
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
    if not rids:
        return []
    blobs = [memories[rid] for rid in rids]
    sizes = np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs))
    counts = _counts(sizes)
    if np.any(counts <= 0):  # (an empty blob, the only one of no terms, is left out above)
        raise ValueError("sparse terms not of a form pack() writes")
    odd = (sizes & 1).astype(bool)
    ns = counts.tolist()
    ids = np.frombuffer(b"".join([b[: 2 * n] for b, n in zip(blobs, ns, strict=True)]), "<u2")
    if not odd.any():  # every blob in the form before: float16 weights
        part = b"".join([b[2 * n :] for b, n in zip(blobs, ns, strict=True)])
        weights = np.frombuffer(part, "<f2").astype(np.float32)
    elif odd.all():  # a byte a weight, and each blob's step
        part = b"".join([b[2 * n : 3 * n] for b, n in zip(blobs, ns, strict=True)])
        steps = b"".join([b[3 * n : 3 * n + 2] for b, n in zip(blobs, ns, strict=True)])
        each = np.frombuffer(steps, "<f2").astype(np.float32)
        weights = np.repeat(each, counts) * np.frombuffer(part, np.uint8)
    else:  # both forms (terms written before and after the byte weights)
        weights = np.concatenate([unpack(b).weights for b in blobs])
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
