"""Vectors held in process memory as one matrix per (user, model, field), and the
compact form SQLite stores them in.

Reading thousands of vectors out of a database for every query dominates search time;
scoring them in memory takes about a millisecond. The owning store decides when a matrix
is stale (its own writes for a user; any write by another process) and evicts it.

On disk a vector is int8 in a new database (384 bytes at 384 dimensions) or float16 (768
bytes; every vector of a database made before 2026-12-07): a float32 BLOB does not fit in
a 4 KiB page beside its key and spilled into an overflow page of its own, about 4.7 KB
per vector (bench/vector_space.md). Scoring stays float32: stored vectors are widened
and brought back to unit length when read. Rounding moves a cosine by about 1e-4
(float16) or 1e-3 (int8); LoCoMo recall is the same with either (bench/scale.md).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from memlane.blas import one_blas_thread
from memlane.ports.embedder import Vector

Key = tuple[str, str, str]
"""(user id, model id, field)."""

MIB = 1024 * 1024

STORED = np.dtype("<f2")
"""How a vector is stored by default: little-endian float16."""

VECTOR_FORMS = ("float16", "int8")
"""The forms a SQLite store keeps vectors in (``SqliteStore(vectors=...)``): float16, 2
bytes a dimension; int8, 1 byte a dimension (each vector scaled so that its largest
component is ±127; a vector is read back at unit length, so the scale is not kept), the
form of a new database."""


_FORM_OF: dict[float, np.dtype[Any]] = {2.0: STORED, 1.0: np.dtype(np.int8)}
"""The dtype of a stored vector by its bytes a dimension."""


def to_blob(vector: Vector, form: str = "float16") -> bytes:
    """A vector in its stored ``form`` (:data:`VECTOR_FORMS`). A vector int8 cannot hold
    (a component not finite) is kept as float16. Raises ValueError for another form."""
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    if form == "float16":
        return v.astype(STORED).tobytes()
    if form != "int8":
        raise ValueError(f"unknown vector form {form!r}: one of {', '.join(VECTOR_FORMS)}")
    if not np.isfinite(v).all():
        return v.astype(STORED).tobytes()
    peak = float(np.abs(v).max(initial=0.0))
    if peak == 0.0:
        return bytes(v.shape[0])
    return bytes(np.rint(v * (127.0 / peak)).astype(np.int8).tobytes())


def to_blobs(vectors: Sequence[Vector], form: str = "float16") -> list[bytes]:
    """:func:`to_blob` of each vector, the vectors of one size rounded together (a
    vector int8 cannot hold kept as float16, as there). Raises ValueError for another
    form."""
    if form not in VECTOR_FORMS:
        raise ValueError(f"unknown vector form {form!r}: one of {', '.join(VECTOR_FORMS)}")
    rows = [np.asarray(v, dtype=np.float32).reshape(-1) for v in vectors]
    if form != "int8" or len({r.shape[0] for r in rows}) != 1 or not rows:
        return [to_blob(r, form) for r in rows]
    matrix = np.stack(rows)
    peaks = np.abs(matrix).max(axis=1, keepdims=True, initial=0.0)
    finite = [bool(np.isfinite(r).all()) for r in rows]
    scale = np.divide(127.0, peaks, out=np.zeros_like(peaks), where=peaks > 0)
    with np.errstate(invalid="ignore", over="ignore"):
        codes = np.rint(matrix * scale).astype(np.int8)
    return [
        codes[i].tobytes() if finite[i] else rows[i].astype(STORED).tobytes()
        for i in range(len(rows))
    ]


def from_blobs(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    """Stored ``dim``-d vectors as float32 rows of unit length, one per blob, each read
    by its length (float16: 2 bytes a dimension; int8: 1); a zero vector stays zero.
    Raises ValueError for a blob of another length."""
    lengths = {len(b) for b in blobs}
    if len(lengths) == 1 and (dtype := _FORM_OF.get(lengths.pop() / max(dim, 1))):
        rows = np.frombuffer(b"".join(blobs), dtype=dtype).astype(np.float32)
        rows = rows.reshape(len(blobs), dim)
    else:  # mixed forms (a store whose form changed), or a wrong length
        rows = np.empty((len(blobs), dim), dtype=np.float32)
        for i, blob in enumerate(blobs):
            dtype = _FORM_OF.get(len(blob) / max(dim, 1))
            if dtype is None:
                raise ValueError(f"a stored vector of {len(blob)} bytes is not {dim}-d")
            rows[i] = np.frombuffer(blob, dtype=dtype)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    np.divide(rows, norms, out=rows, where=norms > 0)
    return rows


def default_cache_bytes() -> int:
    """A quarter of physical memory, between 256 MiB and 16 GiB (512 MiB where the
    platform does not say how much memory it has).

    One user's matrix takes about 1.5 KiB per memory at 384 dimensions, so on a 16 GiB
    machine one user's million memories stay in memory. A matrix larger than the budget
    is rebuilt from the database on every query, which is slow (seconds per 100k).
    """
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 512 * MIB
    return max(256 * MIB, min(16 * 1024 * MIB, total // 4))


ONE_THREAD_MAX_FLOATS = 1 << 26
"""Matrices up to this many floats (256 MiB; about 175k memories at 384 dimensions) are
scored with one BLAS thread. Right after the local model embeds a query, torch's OpenMP
workers keep spinning on the cores for a while; a multi-threaded BLAS product started then
competes with them, and on a 2-core machine that put search p95 at 10k memories at
118 ms instead of 15 ms (bench/README.md). One thread costs 0.2 ms at 10k memories and
4 ms at 100k when nothing competes; above the limit the product is long enough that
two threads win anyway (1M: 69 ms with two, 123 ms with one)."""


@contextmanager
def _scoring_threads(floats: int) -> Iterator[None]:
    """One BLAS thread for the duration of a small product, many for a large one (the
    limit is process-wide and counted: :mod:`memlane.blas`; a large product while another
    caller holds it runs on one thread)."""
    if floats > ONE_THREAD_MAX_FLOATS:
        yield
        return
    with one_blas_thread():
        yield


@dataclass(frozen=True, slots=True)
class Matrix:
    """Every embedded record of one user, one row each."""

    ids: tuple[str, ...]
    index: dict[str, int]
    vectors: np.ndarray

    @classmethod
    def build(cls, rows: Iterable[tuple[str, bytes]], dim: int) -> Matrix:
        """The matrix of ``(record id, stored dim-d vector)`` rows (see :func:`to_blob`)."""
        pairs = list(rows)
        ids = tuple(rid for rid, _ in pairs)
        if not pairs:
            return cls((), {}, np.zeros((0, dim), dtype=np.float32))
        vectors = from_blobs([blob for _, blob in pairs], dim)
        return cls(ids, {rid: i for i, rid in enumerate(ids)}, vectors)

    @property
    def nbytes(self) -> int:
        return int(self.vectors.nbytes) + 100 * len(self.ids)

    def rows_of(self, ids: Iterable[str]) -> np.ndarray:
        """Row numbers of the given ids (ids without a vector are left out)."""
        index = self.index
        return np.fromiter((index[i] for i in ids if i in index), dtype=np.int64)

    def top_k(self, query: Vector, rows: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The ``k`` rows most similar to ``query`` (cosine; rows are unit length)."""
        if rows.size == 0 or k < 1 or self.vectors.shape[1] != query.shape[0]:
            return []
        with _scoring_threads(self.vectors.size):
            sims = (self.vectors @ query)[rows]
        if k < rows.size:  # every row tied with the k-th too, so ties go by id
            part = np.flatnonzero(sims >= -np.partition(-sims, k - 1)[k - 1])
        else:
            part = np.arange(rows.size)
        ordered = sorted(part, key=lambda j: (-sims[j], self.ids[rows[j]]))[:k]
        return [(self.ids[rows[j]], float(sims[j])) for j in ordered]


class VectorCache:
    """Least-recently-used matrices within a memory budget (bytes), and for each the rows a
    recent filter allowed (valid until the next expiry among the user's records)."""

    def __init__(self, max_bytes: int | None = None) -> None:
        if max_bytes is not None and max_bytes < 0:
            raise ValueError(f"vector cache size must be >= 0 bytes, got {max_bytes}")
        self.max_bytes = default_cache_bytes() if max_bytes is None else max_bytes
        self._items: OrderedDict[Key, Matrix] = OrderedDict()
        self._bytes = 0
        self._allowed: dict[tuple[Key, str], tuple[np.ndarray, str, str | None]] = {}

    def allowed(self, key: Key, filter_key: str, now: str) -> np.ndarray | None:
        """Cached allowed rows for a filter, if they hold at ``now``: no earlier than when
        they were computed, and before the next expiry among the user's records."""
        found = self._allowed.get((key, filter_key))
        if found is None:
            return None
        rows, computed_at, next_expiry = found
        if now < computed_at or (next_expiry is not None and next_expiry <= now):
            return None
        return rows

    def remember_allowed(
        self, key: Key, filter_key: str, rows: np.ndarray, now: str, next_expiry: str | None
    ) -> None:
        if key in self._items and len(self._allowed) < 4096:
            self._allowed[(key, filter_key)] = (rows, now, next_expiry)

    def get(self, key: Key) -> Matrix | None:
        matrix = self._items.get(key)
        if matrix is not None:
            self._items.move_to_end(key)
        return matrix

    def put(self, key: Key, matrix: Matrix) -> None:
        self._drop(key)
        if matrix.nbytes > self.max_bytes:
            return  # too big to keep; the caller still uses it for this query
        self._items[key] = matrix
        self._bytes += matrix.nbytes
        while self._bytes > self.max_bytes:
            oldest = next(iter(self._items))
            self._drop(oldest)

    def invalidate_user(self, user_id: str) -> None:
        for key in [k for k in self._items if k[0] == user_id]:
            self._drop(key)

    def clear(self) -> None:
        self._items.clear()
        self._allowed.clear()
        self._bytes = 0

    def _drop(self, key: Key) -> None:
        for allowed_key in [a for a in self._allowed if a[0] == key]:
            del self._allowed[allowed_key]
        matrix = self._items.pop(key, None)
        if matrix is not None:
            self._bytes -= matrix.nbytes
