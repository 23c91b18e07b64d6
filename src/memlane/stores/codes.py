"""One user's vectors as sign-bit codes in an append-only file, scanned with faiss, and
reranked exactly from the vectors the database keeps, found by the vids in a second file
beside the codes.

Vector search at a million memories in one scope cannot score every float32 vector per
query (160 ms CPU at 1M). A vector's signs alone, one bit per dimension (48 bytes at 384
dimensions), keep the order of its neighbours well enough that exact scoring of the few
hundred codes nearest by Hamming distance finds the exact top 10 (bench/codes.md). The
exact scores come from the database's own float16 vectors, read by vid (a few hundred
rows a query, ~2 ms at a million): the folder keeps no second copy of them.

A :class:`CodeFile` holds the codes of one (user, model, field). On disk it is a header
and then fixed rows, each a record id (little-endian int64) and the code bytes, in the
order they were appended::

    b"MLCODES" + version byte (2) | dim (uint32 LE) | tag (4 bytes)   16 bytes
    rows live when centred (uint64 LE) | centre (float32 LE x dim)   8 + 4 x dim bytes
    rid (int64 LE) | code (dim / 8 bytes)                            one row per vector

and the vids file (same name, suffix ``.vids``) row for row where the database keeps
each row's vector (the ``vid`` of its ``vectors`` table, never given twice)::

    b"MLVIDS\x00" + version byte (1) | dim (uint32 LE) | tag (4 bytes)  16 bytes
    vid (int64 LE)                                                   one row per vector

The vectors are read through a :data:`VectorSource` the caller gives (a file of codes
holds no vector itself); a vid the source no longer has (its vector was deleted since
the row was written, which the caller's next sync kills) reads as NaN.

A code holds the signs of the vector minus the centre, the mean of the vectors when
the file was last compacted (zero before): embeddings that share a large common
component (most models' do, some by far) would otherwise give every row nearly the same
signs. Compaction comes with growth too, each time the live rows double from 1,024 on
(:meth:`CodeFile.wants_centre`), so the centre follows the data at a cost of about two
rewrites of the file over its life.

The tag is drawn when the pair is made and again at each compaction, so a pair whose
halves do not belong together (a crash between the two renames) is refused, never read
out of step. A row is killed by overwriting its rid with -1; :meth:`CodeFile.compact`
rewrites both files without dead rows (new files beside the old ones, named for the
process that writes them: what a killed process leaves is removed by the next
compaction). Rows are only ever appended (vids first) or killed, so a crash leaves at
worst a torn last code row, cut away on open, and vid rows past the last code row,
ignored. numpy and faiss load on first use, not when memlane is imported.
"""

from __future__ import annotations

import contextlib
import functools
import mmap
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from memlane.errors import CorruptStoreError, StoreError, ValidationError

if TYPE_CHECKING:
    from concurrent.futures import Executor

    import numpy as np

MAGIC = b"MLCODES\x02"
"""The first 8 bytes of a code file: a name and the format's version."""
VIDS_MAGIC = b"MLVIDS\x00\x01"
"""The first 8 bytes of a vids file."""
HEADER_BYTES = 16
"""The vids file's header, and the fixed start of the code file's
(:func:`code_header_bytes`)."""
CENTRE_AFTER = 1024
"""Live rows from which growth recentres the codes (each time they double)."""
CHUNK = 65536
"""Rows read at a time when a compaction passes over the vectors."""
WARM_CHUNK = 8192
"""Rows whose vectors :meth:`CodeFile.warm` reads at a time (~25 ms of reading)."""
WARM_PAUSE_S = 0.01
"""The pause between two chunks of :meth:`CodeFile.warm`: searches meanwhile get the
interpreter and a core (searches run during the reading, before it paused, took ~1.7x
as long)."""
DEAD = -1
"""The rid of a killed row."""
DEAD_IN_MEMORY = 1024
"""Killed rows kept in the scanned arrays before they are dropped from memory (a copy of
the live rows). Each query asks faiss for this many more rows at most, which costs about
0.1 ms at 1M codes; dropping them costs about 30 ms at 1M, once per this many kills."""

LISTS_AT = 262144
"""Live rows from which a compaction also sorts the codes into lists (an inverted file,
:class:`_Lists`): a search then scans the lists whose centres are nearest the query
instead of every code (at a million codes `scored()` 21 -> 3.6 ms; recall@10 of the
vector half within 0.001 of a scan of every code on real MiniLM vectors from 200k rows,
0.617 -> 0.610 on bench/scale.py's sums of word vectors: bench/codes.md, bench/scale.md)."""
LISTS_MAGIC = b"MLLISTS\x01"
"""The first 8 bytes of a lists file."""
MAX_LISTS = 4096
"""The most lists :func:`list_count` gives (and a lists file may hold: the grouping sorts
list numbers as 16-bit keys)."""
PROBE_SHARE = 16
"""A search scans the nearest 1/16 of the lists (~6 % of the codes)."""
TAIL_SHARE = 32
"""Rows appended since the lists were made are placed in them once they pass 1/32 of
the rows the lists hold (:meth:`CodeFile.wants_lists`)."""
TRAIN_PER_LIST = 64
"""Vectors sampled per list to place the lists' centres (k-means)."""

__all__ = ["CodeFile", "CopyBudget", "VectorSource", "candidate_count", "list_count", "sign_codes"]

VectorSource = Callable[["np.ndarray"], "np.ndarray"]
"""Where a code file on disk reads its rows' vectors: given vids (int64, n), their
vectors as float16 (n, dim), a row of NaN for a vid it does not have."""


def candidate_count(k: int) -> int:
    """How many code candidates to rerank exactly for a top ``k``: 200 + 6k (260 for a
    top 10). On LoCoMo's real MiniLM vectors (17k in one scope) this kept recall@k within
    0.005 of exact float32 search for k = 10, 25, 50 and 100; 200 flat or max(200, 8k)
    fell short at k = 25 (0.990), 4k at k = 50 and 100 (bench/codes.md)."""
    return 200 + 6 * max(k, 0)


def list_count(rows: int) -> int:
    """How many lists to sort ``rows`` codes into: the power of two nearest sqrt(rows),
    from 256 to 4,096 (1,024 at a million)."""
    import math

    return int(min(MAX_LISTS, max(256, 2 ** round(math.log2(math.sqrt(max(rows, 1)))))))


def sign_codes(vectors: np.ndarray) -> np.ndarray:
    """The sign-bit codes of ``vectors`` (n, dim): (n, dim / 8) uint8, bit set where a
    component is > 0, packed most significant bit first. Raises ValidationError (a
    ValueError) unless ``vectors`` is 2-d with dim a positive multiple of 8."""
    import numpy as np

    matrix = np.asarray(vectors)
    if matrix.ndim != 2 or matrix.shape[1] == 0 or matrix.shape[1] % 8:
        raise ValidationError(
            f"sign codes need an (n, dim) array with dim a multiple of 8, got {matrix.shape}"
        )
    return np.packbits(matrix > 0, axis=1)


def _row_dtype(dim: int) -> Any:
    """A file row as a numpy record: rid, then the code."""
    import numpy as np

    return np.dtype([("rid", "<i8"), ("code", "u1", (dim // 8,))])


def _header(dim: int, tag: bytes, magic: bytes = MAGIC) -> bytes:
    return magic + dim.to_bytes(4, "little") + tag


def code_header_bytes(dim: int) -> int:
    """The size of a code file's header: the fixed start, then the centre."""
    return HEADER_BYTES + 8 + 4 * dim


def _code_header(dim: int, tag: bytes, centred: int, centre: np.ndarray) -> bytes:
    import numpy as np

    return (
        _header(dim, tag)
        + centred.to_bytes(8, "little")
        + np.asarray(centre, dtype="<f4").tobytes()
    )


def vids_path(path: Path) -> Path:
    """The vids file that goes with the code file ``path``."""
    return path.with_suffix(".vids")


class CodeFile:
    """The sign-bit codes of one user's vectors of one (model, field), on disk and in
    memory; nearest rows by Hamming distance with :meth:`candidates`.

    Build one with :meth:`open`. Every method takes one lock, so a CodeFile may be shared
    by threads; a query holds it for the scan (about 1.5 ms at 1M codes). :meth:`compact`
    and :meth:`make_lists` (seconds at 1M) hold it only to start and to finish (~80 ms
    at 1M): searches, appends and kills go on while they work. Writes reach the files
    when made and are durable after :meth:`sync`.
    """

    def __init__(self, path: Path | None, dim: int, file: BinaryIO | None, floats: _Floats) -> None:
        """Use :meth:`open`."""
        import numpy as np

        self.path = path
        self.dim = dim
        self._file = file
        self._floats = floats
        self._header_bytes = code_header_bytes(dim)
        self._tag = b""  # the pair's tag (files only)
        self._centre = np.zeros(dim, dtype=np.float32)
        self._centred = 0  # live rows when the centre was computed
        self._lock = threading.Lock()
        self._row = _row_dtype(dim)
        self._size = 0  # rows in the memory arrays, live and dead
        self._rids = np.empty(0, dtype=np.int64)
        self._codes = np.empty((0, dim // 8), dtype=np.uint8)
        self._rows = np.empty(0, dtype=np.int64)  # each memory row's row in the file
        self._file_rows = 0
        self._live = 0
        self._max_rid = -1  # no rid above this was ever appended: new rids skip the lookup
        self._closed = False
        self._lists: _Lists | None = None  # the inverted file, from LISTS_AT live rows
        self._grouped: _Grouped | None = None  # the lists' memory positions and codes

    @classmethod
    def open(
        cls,
        path: Path | None,
        dim: int,
        *,
        existing: bool = False,
        vectors: VectorSource | None = None,
        budget: CopyBudget | None = None,
    ) -> CodeFile:
        """The codes in ``path`` and the vids beside it (both created if the code file is
        missing, unless ``existing`` says it must be there: then CorruptStoreError),
        reading the rows' vectors from ``vectors`` (which a file needs) and keeping
        float16 copies of them in memory as ``budget`` allows (None: none); ``path``
        None keeps the codes and float16 copies of the vectors in memory only.

        A torn last row (the file cut mid-row, e.g. by kill -9) is truncated away; where a
        crash left two live rows for one rid, the later one stays. Raises ValidationError
        for a ``dim`` that is not a positive multiple of 8 or a file without ``vectors``,
        CorruptStoreError for a file that is not a code file, holds codes of another dim,
        or whose vids file is missing, short or of another pair, StoreError if they cannot
        be read or written."""
        if dim <= 0 or dim % 8:
            raise ValidationError(f"dim must be a positive multiple of 8, got {dim}")
        if path is None:
            return cls(None, dim, None, _Floats(None, dim, None))
        if vectors is None:
            raise ValidationError("a code file on disk needs the source of its vectors")
        path = Path(path)
        if existing and (not path.is_file() or path.stat().st_size < HEADER_BYTES):
            raise CorruptStoreError(f"code file {path} is missing or cut short")
        try:
            file, tag, created, centred, centre = _open_file(path, dim)
        except OSError as exc:
            raise StoreError(f"cannot open code file {path}: {exc}") from exc
        try:
            floats = _Floats.open(
                vids_path(path), dim, tag, create=created, source=vectors, budget=budget
            )
        except BaseException:
            file.close()
            raise
        codes = cls(path, dim, file, floats)
        codes._centre, codes._centred, codes._tag = centre, centred, tag
        try:
            codes._load()
            floats.keep(codes._file_rows)
        except BaseException:
            file.close()
            floats.close()
            raise
        codes._lists = _Lists.load(lists_path(path), dim, tag, codes._file_rows)
        return codes

    def _load(self) -> None:
        """Read the file's rows into memory (the file is positioned after the header)."""
        import numpy as np

        assert self._file is not None
        records = np.fromfile(self._file, dtype=self._row)
        self._file_rows = len(records)
        live = np.flatnonzero(records["rid"] >= 0)
        rids = records["rid"][live]
        self._rids, self._rows = rids, live.astype(np.int64)
        self._codes = np.ascontiguousarray(records["code"][live])
        self._size = self._live = len(live)
        self._max_rid = int(rids.max()) if len(rids) else -1
        if len(rids) > 1 and not bool(np.all(rids[1:] > rids[:-1])):
            self._drop_duplicates()
            self._drop_dead_from_memory()

    def _drop_duplicates(self) -> None:
        """Kill all but the last live row of each rid (a crash between an append and the
        kill before it reaching the disk can leave two)."""
        import numpy as np

        rids = self._rids[: self._size]
        _, last_reversed = np.unique(rids[::-1], return_index=True)
        keep = np.zeros(self._size, dtype=bool)
        keep[self._size - 1 - last_reversed] = True
        if not keep.all():
            self._kill_positions(np.flatnonzero(~keep))

    def __len__(self) -> int:
        """The number of live rows."""
        with self._lock:
            return self._live

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (or a failed compaction left it unusable)."""
        return self._closed

    @property
    def dead(self) -> int:
        """The number of killed rows that :meth:`compact` would drop."""
        with self._lock:
            return self._file_rows - self._live

    def rids(self) -> np.ndarray:
        """The live rids (int64), in the order they were appended."""
        with self._lock:
            rids = self._rids[: self._size]
            return rids[rids >= 0].copy()

    def append(self, rids: Any, vectors: np.ndarray, vids: Any = None) -> None:
        """Add the codes of ``vectors`` (n, dim) under ``rids`` (n non-negative ints); a
        file also keeps ``vids`` (n non-negative ints: where its source keeps each
        vector, which must be the same vector as float16).

        Idempotent: live rows with any of these rids are killed first, so replaying a
        change leaves one live row per rid; within one call the last vector of a repeated
        rid wins. Raises ValidationError for mismatched shapes, negative rids or vids, or
        a file's missing vids, StoreError if the file cannot be written."""
        import numpy as np

        ids = np.asarray(rids, dtype=np.int64).reshape(-1)
        matrix = np.asarray(vectors)
        if matrix.ndim != 2 or matrix.shape != (len(ids), self.dim):
            raise ValidationError(
                f"append needs one {self.dim}-d vector per rid: {len(ids)} rids, "
                f"vectors of shape {matrix.shape}"
            )
        if len(ids) and int(ids.min()) < 0:
            raise ValidationError("rids must be non-negative (-1 marks a dead row)")
        where = None
        if vids is not None:
            where = np.asarray(vids, dtype=np.int64).reshape(-1)
            if len(where) != len(ids) or (len(where) and int(where.min()) < 0):
                raise ValidationError("append needs one non-negative vid per rid")
        elif self._file is not None:
            raise ValidationError("a code file on disk needs the vid of each vector")
        ids, kept = _last_of_each(ids, np.arange(len(ids)))
        matrix = matrix[kept]
        halves = np.asarray(matrix, dtype="<f2")  # codes of the copy a recentring reads
        with self._lock:
            self._check_open()
            codes = sign_codes(halves.astype(np.float32) - self._centre)
            self._kill_positions(self._positions(ids))
            self._floats.write(self._file_rows, halves, None if where is None else where[kept])
            self._write_rows(ids, codes)
            self._push(ids, codes)
            self._drop_dead_from_memory()

    def kill(self, rids: Any) -> int:
        """Mark the live rows of ``rids`` dead, in memory and in the file; rids with no
        live row are ignored. Returns how many rows died. Raises StoreError if the file
        cannot be written."""
        import numpy as np

        ids = np.asarray(rids, dtype=np.int64).reshape(-1)
        with self._lock:
            self._check_open()
            positions = self._positions(ids)
            self._kill_positions(positions)
            self._drop_dead_from_memory()
            return len(positions)

    def candidates(self, query: np.ndarray, n: int) -> np.ndarray:
        """The rids (int64) of the ``n`` live rows whose codes are nearest to the code of
        ``query`` (a float vector of ``dim``) by Hamming distance: nearest first, equal
        distances by rid ascending, so the answer depends only on the live rows. Fewer
        when fewer rows live. Raises ValidationError for a query of another shape."""
        import numpy as np

        vector = self._checked_query(query)
        with self._lock:
            return np.asarray(self._rids[self._ordered(vector, n, whole_ties=True)])

    def scored(
        self, query: np.ndarray, n: int, helper: Executor | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` live rows nearest to ``query`` by Hamming distance with their exact
        scores: (rids, the dot product of ``query`` with each one's stored vector as
        float32; NaN where the source no longer has it), nearest first; a file's vectors
        are read from its source after the lock is let go. Unlike :meth:`candidates` one
        scan decides: where more rows than it kept lie at the n-th distance, the ones it
        kept stand for them (a second scan of a million codes for a tie the exact scores
        then reorder anyway cost 5 ms in one search of seven). With a ``helper`` thread a
        large scan is split in two halves, one on each thread (:data:`SPLIT_AT`). Raises
        ValidationError for a query of another shape."""
        import numpy as np

        vector = self._checked_query(query)
        with self._lock:
            listed = self._lists is not None and self._live >= LISTS_AT
            probe = self._listed(vector) if listed else None
            positions = self._ordered(vector, n, whole_ties=False, helper=helper, probe=probe)
            rows, rids, floats = self._rows[positions], self._rids[positions], self._floats
            if floats.source is None:
                return rids, widened(floats.read(rows)) @ vector
            held, halves = floats.copies(rows)
            missing = rows[~held]
            vids = floats.vids(missing)
        stored = np.empty((len(rows), self.dim), dtype=np.float16)
        stored[held] = halves
        if len(missing):
            fetched = floats.source(vids)
            stored[~held] = fetched
            with self._lock:
                if self._floats is floats and not self._closed:
                    floats.keep_copies(missing, fetched)
        return rids, widened(stored) @ vector

    def _checked_query(self, query: np.ndarray) -> np.ndarray:
        """``query`` as one float32 vector of ``dim``; raises ValidationError otherwise."""
        import numpy as np

        vector = np.asarray(query, dtype=np.float32)
        if vector.size != self.dim or vector.ndim > 2:
            raise ValidationError(f"the query must be one {self.dim}-d vector, got {vector.shape}")
        return vector.reshape(self.dim)

    def _ordered(
        self,
        vector: np.ndarray,
        n: int,
        *,
        whole_ties: bool,
        helper: Executor | None = None,
        probe: _Probe | None = None,
    ) -> np.ndarray:
        """Under the lock: the memory positions of the ``n`` live rows nearest to
        ``vector`` (see :meth:`_nearest`) among the rows ``probe`` names (None: every
        row), nearest first, equal distances by rid."""
        import numpy as np

        self._check_open()
        if probe is None:
            base, live = self._codes[: self._size], self._live
        else:
            base = probe.codes(self._codes)
            # Every dead row in memory may be among them (at most DEAD_IN_MEMORY): a
            # bound, not a count, as counting gathers a rid per row scanned (~0.5 ms at
            # 1M); counted only where the bound could leave fewer than n.
            live = len(base) - min(self._size - self._live, len(base))
            if live < n:
                live = int(np.count_nonzero(self._rids[probe.positions()] >= 0))
        if n <= 0 or live == 0:
            return np.empty(0, dtype=np.int64)
        code = sign_codes(vector.reshape(1, self.dim) - self._centre)
        distances, positions = self._nearest(
            code, base, min(n, live), live, whole_ties=whole_ties, helper=helper, probe=probe
        )
        return positions[np.lexsort((self._rids[positions], distances))[:n]]

    def _nearest(
        self,
        code: np.ndarray,
        base: np.ndarray,
        n: int,
        live: int,
        *,
        whole_ties: bool = True,
        helper: Executor | None = None,
        probe: _Probe | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(distances, memory positions) of live rows of ``base`` (the codes of every row,
        or of the rows ``probe`` names; at least ``live`` of them live): every row nearer
        than the n-th nearest live row, and every row as near (the whole tie at the
        boundary, so that the caller can break it by rid). The scan asks faiss for spare
        rows; if the tie runs past them, it asks again for twice as many, unless
        ``whole_ties`` is False (then the rows of the tie it found stand for it)."""
        import numpy as np

        want = n + len(base) - live + max(32, n // 2)
        while True:
            k = min(want, len(base))
            found, positions = _knn(code, base, k, helper)
            at = positions[0] if probe is None else probe.positions(positions[0])
            # Rows left out are at least as far as the farthest row found, dead or live.
            farthest = int(found[0, -1])
            alive = self._rids[at] >= 0
            distances, at = found[0][alive], at[alive]
            boundary = np.partition(distances, n - 1)[n - 1]
            if k == len(base) or farthest > boundary or not whole_ties:
                keep = distances <= boundary
                return distances[keep], at[keep]
            want *= 2

    def _listed(self, vector: np.ndarray) -> _Probe:
        """Under the lock: the rows a search scans, those of the lists whose centres are
        nearest to ``vector`` (:data:`PROBE_SHARE` of them) and those appended since
        the lists were made."""
        lists, grouped = self._lists, self._grouping()
        assert lists is not None
        near = lists.nearest(vector, max(1, len(lists.centres) // PROBE_SHARE))
        starts, ends = grouped.bounds[near], grouped.bounds[near + 1]
        held = ends > starts
        return _Probe(grouped, starts[held], ends[held], self._size)

    def _grouping(self) -> _Grouped:
        """Under the lock: the memory positions of the rows the lists hold, sorted by list,
        with their codes in that order, and where the rows appended since begin (made
        again after memory drops dead rows or the lists change; 30 to 56 ms at 1M)."""
        import numpy as np

        if self._grouped is not None:
            return self._grouped
        lists = self._lists
        assert lists is not None
        rows = self._rows[: self._size]
        tail = int(np.searchsorted(rows, len(lists.assign)))  # rows ascend with positions
        which = lists.assign[rows[:tail]].astype(np.uint16)  # at most 4,096 lists
        positions = np.argsort(which, kind="stable")  # a radix sort for 16-bit keys
        bounds = np.searchsorted(which[positions], np.arange(len(lists.centres) + 1))
        codes = np.take(self._codes, positions, 0)
        self._grouped = _Grouped(positions, bounds, tail, codes)
        return self._grouped

    def wants_lists(self) -> bool:
        """Whether :meth:`make_lists` is due: from :data:`LISTS_AT` live rows, when there
        are no lists yet or the rows appended since they were made (which every search
        scans) passed :data:`TAIL_SHARE` of the rows they hold (and 4,096). Placing them
        costs ~9 µs a row; a tail of a quarter (190k rows at 1M) added ~2 ms of scan to
        every search."""
        with self._lock:
            if self._live < LISTS_AT:
                return False
            if self._lists is None:
                return True
            held = len(self._lists.assign)
            return self._file_rows - held > max(4096, held // TAIL_SHARE)

    def make_lists(
        self, cancel: threading.Event | None = None, holding: Holding | None = None
    ) -> bool:
        """Sort the rows into lists (see :data:`LISTS_AT`): place the lists' centres by
        k-means over a sample of the stored vectors when there are none yet, then put
        every row not yet in a list into the list of the nearest centre, and write the
        lists file (atomically, under the pair's tag: lists of another pair are never
        read). Seconds at a million rows, once; later calls place only the new rows
        (~10 µs a row). Searches, appends and kills go on meanwhile: the lock is held
        only to take the rows at the start and to put the lists in place at the end.

        Returns False if it gave way without changing anything: the files were
        compacted or replaced since it began, this file was closed, ``cancel`` was set,
        or ``holding`` said no (see :meth:`compact`). Raises StoreError if the file
        cannot be written."""
        with self._lock:
            self._check_open()
            if self.path is None:
                self._make_lists()
                return True
            base, tag, rows = self._lists, self._tag, self._file_rows
            live = self._live_rows_if(base is None)
        try:
            floats = self._floats.again(tag)
        except (CorruptStoreError, StoreError):  # compacted or replaced meanwhile
            return False
        try:
            made = _extended(floats.read, base, live, rows, self.dim, cancel)
        except _GaveWay:
            return False
        finally:
            floats.close()
        with _held(holding) as current:
            if not current or _set(cancel):
                return False
            with self._lock:
                if self._closed or self._tag != tag or self._lists is not base:
                    return False
                if self._replaced():  # compacted by another process: not our rows
                    return False
                self._lists, self._grouped = made, None
                made.save(lists_path(self.path), self._tag)
                return True

    def _make_lists(self) -> None:
        """Under the lock, in memory: :meth:`make_lists`."""
        live = self._live_rows_if(self._lists is None)
        self._lists = _extended(self._floats.read, self._lists, live, self._file_rows, self.dim)
        self._grouped = None

    def _live_rows(self) -> np.ndarray:
        """Under the lock: the file rows of the live rows, ascending."""
        return self._rows[: self._size][self._rids[: self._size] >= 0].copy()

    def _live_rows_if(self, wanted: bool) -> np.ndarray:
        """Under the lock: :meth:`_live_rows` if ``wanted`` (new lists are trained on
        them), else none (8 MB a copy at a million rows, under the lock)."""
        import numpy as np

        return self._live_rows() if wanted else np.empty(0, dtype=np.int64)

    def replaced(self) -> bool:
        """Whether the files at this code file's paths are not the ones it holds open (a
        compaction by another process put new ones there) or hold rows it has not read
        (another process appended and stopped before saying so): open it again before
        writing, or its rows would land where no one reads them."""
        with self._lock:
            return self._replaced()

    def _replaced(self) -> bool:
        """Under the lock: :meth:`replaced` (this code file's own writes flushed first)."""
        if self._file is None or self.path is None or self._closed:
            return False
        try:
            self._file.flush()
        except OSError as exc:
            raise StoreError(f"cannot write code file {self.path}: {exc}") from exc
        on_disk = _if_same_file(self.path, self._file)
        size = self._header_bytes + self._file_rows * self._row.itemsize
        return on_disk is None or on_disk.st_size != size or self._floats.replaced()

    def sync(self) -> None:
        """Flush the files and fsync them (the vectors first): every append and kill made so
        far is durable. Raises StoreError if the operating system fails."""
        with self._lock:
            self._check_open()
            if self._file is None:
                return
            self._floats.sync()
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as exc:
                raise StoreError(f"cannot sync code file {self.path}: {exc}") from exc

    @property
    def centre(self) -> np.ndarray:
        """The vector the codes are taken against (a copy)."""
        with self._lock:
            return self._centre.copy()

    def wants_centre(self) -> bool:
        """Whether the live rows doubled since the centre was computed (from
        :data:`CENTRE_AFTER` rows on): time to :meth:`compact`."""
        with self._lock:
            return self._wants_centre()

    def _wants_centre(self) -> bool:
        return self._live >= max(CENTRE_AFTER, 2 * self._centred)

    def wants_compaction(self) -> bool:
        """Whether :meth:`compact` is due: the dead rows outgrew half the live ones (and
        1,024), or :meth:`wants_centre`."""
        with self._lock:
            dead = self._file_rows - self._live
            return dead > max(1024, self._live // 2) or self._wants_centre()

    def take_copies(self, other: CodeFile) -> bool:
        """Take over the copies of vectors ``other`` keeps, if it is this file as another
        handle read it (the same pair, so the same rows: a file opened again after
        another process appended or killed rows, or moved with its folder); the copies
        of rows dead here are dropped. Returns whether it did (else ``other`` keeps them
        until closed)."""
        import numpy as np

        with self._lock, other._lock:
            mine, theirs = self._floats, other._floats
            if self._closed or other._closed or self._tag != other._tag or not self._tag:
                return False
            if mine._copies is None or theirs._copies is None:
                return False
            if other._file_rows > self._file_rows:
                return False
            mine._copies, theirs._copies = theirs._copies, None
            live = np.zeros(self._file_rows, dtype=bool)
            live[self._rows[: self._size][self._rids[: self._size] >= 0]] = True
            mine.drop_copies(np.flatnonzero(~live))
            return True

    def warm(self, cancel: threading.Event | None = None) -> bool:
        """Read the live rows' vectors a file keeps no copy of from its source, and keep
        copies of them as far as the budget allows, :data:`WARM_CHUNK` rows at a time
        with a pause between (3 to 5 s at a million rows, on the caller's thread): searches
        then rerank from memory. The lock is held only to take each chunk's vids and to
        keep its copies. Returns False if it stopped early (``cancel`` set, the file
        closed or compacted meanwhile), True when done or when there is nothing to read."""

        with self._lock:
            floats = self._floats
            if self._closed or floats.source is None or floats.budget is None:
                return not self._closed
            rows = self._live_rows()
            held, _ = floats.copies(rows)
            rows = rows[~held]
        for start in range(0, len(rows), WARM_CHUNK):
            if start:
                time.sleep(WARM_PAUSE_S)
            if _set(cancel):
                return False
            with self._lock:
                if self._closed or self._floats is not floats:
                    return False
                if floats.budget.used >= floats.budget.max_bytes:
                    return True
                part = rows[start : start + WARM_CHUNK]
                vids = floats.vids(part)
            fetched = floats.source(vids)
            with self._lock:
                if self._closed or self._floats is not floats:
                    return False
                held, _ = floats.copies(part)
                floats.keep_copies(part[~held], fetched[~held])
        return True

    def upkeep(self, holding: Holding | None = None) -> bool:
        """:meth:`compact` if it is due, else :meth:`make_lists` if that is. Returns
        False if it gave way, True when done or when neither was due."""
        if self.wants_compaction():
            return self.compact(holding=holding)
        if self.wants_lists():
            return self.make_lists(holding=holding)
        return True

    def compact(
        self, cancel: threading.Event | None = None, holding: Holding | None = None
    ) -> bool:
        """Rewrite both files without dead rows and with every code made again against
        the live vectors' mean, and drop dead rows from memory. Worth it when dead rows
        pass ~25 % or :meth:`wants_centre`.

        Searches, appends and kills go on meanwhile (seconds at a million rows): the
        lock is held to take the live rows at the start and, at the end, to bring in
        what changed since (rows appended, rows killed: read from the file, so another
        process's kills count too) and put the new files in place (new files in the
        same directory under a new tag, then ``os.replace``: a crash leaves the old
        pair, the new pair, or a pair whose tags differ, which :meth:`open` refuses).

        ``holding()``, when given, is entered around that last step (a context that
        yields whether to go on): the caller's own lock, e.g. one that keeps other
        processes from writing these files meanwhile.

        Returns False if it gave way without changing anything: the files were
        compacted, replaced or extended by another process since it began, this file
        was closed, ``cancel`` was set or ``holding`` said no. Raises StoreError if the
        new files cannot be written (the old pair stays as it was, in step)."""
        with self._lock:
            self._check_open()
            if self._file is None or self.path is None:
                self._compact_in_memory()
                return True
            plan = self._plan()
        try:
            _sweep(self.path, dead_only=True)
            try:
                self._prepare(plan, cancel)
            except _GaveWay:
                return False
            with _held(holding) as current:
                if not current or _set(cancel):
                    return False
                with self._lock:
                    installed = self._install(plan)
                if installed:  # (another process's gives way: it finds them gone)
                    _sweep(self.path, dead_only=False, keep=plan.old_vectors)
            if installed:
                self._prime()
        finally:
            plan.discard()
        return installed

    def _prime(self) -> None:
        """Map the vectors file with its pages populated before a search needs it (a
        compaction's new file: ~0.3 s at a million rows, which the first search after it
        would otherwise pay under the lock)."""
        with self._lock:
            if self._closed:
                return
            floats, rows = self._floats, self._file_rows
        floats.prime(rows)

    def _compact_in_memory(self) -> None:
        """Under the lock, in memory: :meth:`compact`."""
        import numpy as np

        self._drop_dead_from_memory(force=True)
        size = self._size
        rows = self._rows[:size]
        centre = _mean(self._floats.read, rows, self.dim)
        codes = np.empty((size, self.dim // 8), dtype=np.uint8)
        for start in range(0, size, CHUNK):
            part = self._floats.read(rows[start : start + CHUNK])
            codes[start : start + len(part)] = _centred_codes(part, centre)
        lists = _lists_after(self._floats.read, rows, self._lists, self.dim)  # old rows
        self._floats.keep_rows(rows)
        self._rids = self._rids[:size].copy()
        self._codes = codes
        self._rows = np.arange(size, dtype=np.int64)
        self._centre, self._centred = centre, size
        self._file_rows = size
        self._grouped = None
        self._lists = lists

    def _plan(self) -> _Plan:
        """Under the lock: what a compaction starts from."""
        rows = self._live_rows()
        whole = len(rows) == self._file_rows  # no dead row: the vectors file stays
        plan = _Plan(
            tag=self._tag,
            new_tag=self._tag if whole else os.urandom(4),
            file_rows=self._file_rows,
            rows=rows,
            rids=self._rids[: self._size][self._rids[: self._size] >= 0].copy(),
            whole=whole,
            lists=self._lists,
        )
        if self.path is not None and os.open in os.supports_dir_fd:
            try:
                plan.folder = os.open(self.path.parent, os.O_RDONLY)
            except OSError as exc:
                raise StoreError(f"cannot open the folder of {self.path}: {exc}") from exc
        return plan

    def _prepare(self, plan: _Plan, cancel: threading.Event | None) -> None:
        """Without the lock: the new centre, the codes of the rows taken, the new files
        (temporaries beside the old ones, durable) and the lists of the rows taken.
        Reads the vectors through a handle of its own. Raises _GaveWay when the files
        changed under it or ``cancel`` was set, StoreError when it cannot write."""
        import numpy as np

        assert self.path is not None
        path, n = self.path, len(plan.rows)
        try:
            floats = self._floats.again(plan.tag)
        except (CorruptStoreError, StoreError):
            raise _GaveWay from None
        try:
            centre = _mean(floats.read, plan.rows, self.dim)
            codes = np.empty((n, self.dim // 8), dtype=np.uint8)

            def code(start: int, part: np.ndarray) -> None:
                if _set(cancel):
                    raise _GaveWay
                codes[start : start + len(part)] = _centred_codes(part, centre)

            unique = f"{os.getpid()}-{os.urandom(4).hex()}"
            try:
                if plan.whole:
                    for start in range(0, n, CHUNK):
                        code(start, floats.read(plan.rows[start : start + CHUNK]))
                else:
                    plan.vector_temp = _temporary(vids_path(path), unique)
                    floats.rewritten(
                        plan.rows, plan.new_tag, code, plan.vector_temp, opener=plan.opener
                    )
                plan.code_temp = _temporary(path, unique)
                records = np.empty(n, dtype=self._row)
                records["rid"], records["code"] = plan.rids, codes
                with open(plan.code_temp, "wb", opener=plan.opener) as out:
                    out.write(_code_header(self.dim, plan.new_tag, n, centre))
                    out.write(records.tobytes())
                    out.flush()
                    os.fsync(out.fileno())
            except OSError as exc:
                raise StoreError(f"cannot compact code file {path}: {exc}") from exc
            plan.centre, plan.codes = centre, codes
            plan.new_lists = _lists_after(floats.read, plan.rows, plan.lists, self.dim, cancel)
        finally:
            floats.close()

    def _install(self, plan: _Plan) -> bool:
        """Under the lock: bring what changed since ``plan`` was taken into its new
        files and put them in place of the old ones; False (nothing changed) if the
        files are no longer the ones it was taken from."""
        import numpy as np

        assert self._file is not None and self.path is not None
        assert plan.codes is not None and plan.centre is not None and plan.code_temp is not None
        if self._closed or self._tag != plan.tag:
            return False
        path, stride = self.path, self._row.itemsize
        if self._replaced():  # another process compacted or appended: taken again later
            return False
        try:
            self._file.seek(self._header_bytes)
            now = np.fromfile(self._file, dtype=self._row)["rid"]
        except OSError as exc:
            raise StoreError(f"cannot read code file {path}: {exc}") from exc
        kept = np.where(now[plan.rows] == plan.rids, plan.rids, DEAD)  # killed since: dead
        later = np.arange(plan.file_rows, self._file_rows)
        later_vids = self._floats.vids(later)
        later_codes = _centred_codes(self._floats.read(later), plan.centre)
        records = np.empty(len(later), dtype=self._row)
        records["rid"], records["code"] = now[later], later_codes
        dead = DEAD.to_bytes(8, "little", signed=True)
        try:
            if plan.vector_temp is not None:
                with open(plan.vector_temp, "r+b") as out:
                    out.seek(0, os.SEEK_END)
                    out.write(np.ascontiguousarray(later_vids, dtype="<i8").tobytes())
                    out.flush()
                    os.fsync(out.fileno())
            with open(plan.code_temp, "r+b") as out:
                for at in np.flatnonzero(kept < 0).tolist():
                    out.seek(self._header_bytes + at * stride)
                    out.write(dead)
                out.seek(0, os.SEEK_END)
                out.write(records.tobytes())
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            raise StoreError(f"cannot compact code file {path}: {exc}") from exc
        rids = np.concatenate([kept, now[later]])
        codes = np.concatenate([plan.codes, later_codes])
        alive = rids >= 0
        self._file.close()  # before the renames: Windows renames no open file
        before = self._floats
        if not plan.whole:
            before.close_file()
        try:
            if plan.vector_temp is not None:
                old = _temporary(vids_path(path), f"{os.getpid()}-{os.urandom(4).hex()}-old")
                try:
                    os.link(vids_path(path), old)
                    plan.old_vectors = old
                except OSError:  # no hard links here: the blocks are freed in the rename
                    pass
                os.replace(plan.vector_temp, vids_path(path))
                plan.vector_temp = None
            os.replace(plan.code_temp, path)
            plan.code_temp = None
            _sync_directory(path.parent)
            self._file = open(path, "r+b")  # noqa: SIM115 (held until close())
            if not plan.whole:
                floats = vids_path(path)
                self._floats = _Floats.open(
                    floats,
                    self.dim,
                    plan.new_tag,
                    create=False,
                    source=before.source,
                    budget=before.budget,
                )
                self._floats.adopt(before, np.concatenate([plan.rows, later]))
                before.close()
        except BaseException as exc:  # the files may be out of step: open() tells
            self._closed = True
            self._floats.close()  # (their copies' bytes go back to the budget)
            before.close()
            raise StoreError(f"cannot compact code file {path}: {exc}") from exc
        self._rids = rids[alive]
        self._codes = np.ascontiguousarray(codes[alive])
        self._rows = np.flatnonzero(alive).astype(np.int64)
        self._size = self._live = len(self._rids)
        self._file_rows = len(rids)
        self._centre, self._centred = plan.centre, len(plan.rows)
        self._tag = plan.new_tag
        self._grouped = None
        self._lists = plan.new_lists
        if self._lists is None:
            lists_path(path).unlink(missing_ok=True)
        else:
            self._lists.save(lists_path(path), self._tag)
        return True

    def close(self) -> None:
        """Flush and close the file (without fsync: call :meth:`sync` first for that).
        Later calls raise StoreError; closing twice does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._floats.close()
            if self._file is not None:
                self._file.close()

    def __enter__(self) -> CodeFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Under the lock from here on.

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"code file {self.path or '(in memory)'} is closed")

    def _positions(self, ids: np.ndarray) -> np.ndarray:
        """The memory positions of the live rows of ``ids``."""
        import numpy as np

        candidates = ids[(ids >= 0) & (ids <= self._max_rid)]  # a dead row's rid is -1
        if not len(candidates):
            return np.empty(0, dtype=np.int64)
        return np.flatnonzero(np.isin(self._rids[: self._size], candidates))

    def _kill_positions(self, positions: np.ndarray) -> None:
        """Mark rows dead: -1 over their rids in the file, then in memory."""
        if not len(positions):
            return
        if self._file is not None:
            self._floats.drop_copies(self._rows[positions])
            dead = DEAD.to_bytes(8, "little", signed=True)
            stride = self._row.itemsize
            try:
                for row in sorted(int(r) for r in self._rows[positions]):
                    self._file.seek(self._header_bytes + row * stride)
                    self._file.write(dead)
            except OSError as exc:
                raise StoreError(f"cannot write code file {self.path}: {exc}") from exc
        self._rids[positions] = DEAD
        self._live -= len(positions)

    def _write_rows(self, ids: np.ndarray, codes: np.ndarray) -> None:
        """Append rows to the file."""
        import numpy as np

        if self._file is None or not len(ids):
            return
        records = np.empty(len(ids), dtype=self._row)
        records["rid"], records["code"] = ids, codes
        offset = self._header_bytes + self._file_rows * self._row.itemsize
        try:
            self._file.seek(offset)
            self._file.write(records.tobytes())
        except OSError as exc:
            raise StoreError(f"cannot write code file {self.path}: {exc}") from exc

    def _push(self, ids: np.ndarray, codes: np.ndarray) -> None:
        """Append rows to the memory arrays, doubling their capacity when full."""
        import numpy as np

        end = self._size + len(ids)
        if end > len(self._rids):
            capacity = max(end, 2 * len(self._rids), 1024)
            self._rids = _grown(self._rids, self._size, capacity)
            self._codes = _grown(self._codes, self._size, capacity)
            self._rows = _grown(self._rows, self._size, capacity)
        self._rids[self._size : end] = ids
        self._codes[self._size : end] = codes
        self._rows[self._size : end] = np.arange(self._file_rows, self._file_rows + len(ids))
        self._size = end
        self._file_rows += len(ids)
        self._live += len(ids)
        if len(ids):
            self._max_rid = max(self._max_rid, int(ids.max()))

    def _drop_dead_from_memory(self, *, force: bool = False) -> None:
        """Copy the live rows to new memory arrays once enough are dead that skipping
        them costs each query more than the copy is worth (:data:`DEAD_IN_MEMORY`)."""
        import numpy as np

        dead = self._size - self._live
        if dead == 0 or (dead <= DEAD_IN_MEMORY and not force):
            return
        live = np.flatnonzero(self._rids[: self._size] >= 0)
        self._rids, self._codes = self._rids[live], np.ascontiguousarray(self._codes[live])
        self._rows = self._rows[live]
        self._size = len(live)
        self._grouped = None  # memory positions moved


def lists_path(path: Path) -> Path:
    """The lists file that goes with the code file ``path``."""
    return path.with_suffix(".lists")


class _Lists:
    """An inverted file over a code file's rows: unit centres (lists, float32) and, for
    each file row from the first, the list it is in (``assign``: rows past its end were
    appended since and are scanned with every search). Made from the stored vectors
    and saved beside the codes; a file that is missing, torn or of another pair is not
    read (the codes are then scanned whole until the lists are made again)."""

    def __init__(self, centres: np.ndarray, assign: np.ndarray) -> None:
        self.centres = centres
        self.assign = assign

    def nearest(self, vector: np.ndarray, count: int) -> np.ndarray:
        """The ``count`` lists whose centres are nearest to ``vector`` (cosine)."""
        import numpy as np

        scores = self.centres @ vector
        if count >= len(scores):
            return np.arange(len(scores))
        return np.argpartition(-scores, count - 1)[:count]

    @classmethod
    def load(cls, path: Path, dim: int, tag: bytes, rows: int) -> _Lists | None:
        """The lists saved at ``path`` for the pair tagged ``tag``, or None."""
        import numpy as np

        try:
            data = path.read_bytes()
        except OSError:
            return None
        head = len(LISTS_MAGIC) + 20
        if len(data) < head or data[: len(LISTS_MAGIC)] != LISTS_MAGIC:
            return None
        at = len(LISTS_MAGIC)
        if int.from_bytes(data[at : at + 4], "little") != dim or data[at + 4 : at + 8] != tag:
            return None
        count = int.from_bytes(data[at + 8 : at + 12], "little")
        assigned = int.from_bytes(data[at + 12 : at + 20], "little")
        if not 0 < count <= MAX_LISTS or assigned > rows:
            return None
        if len(data) != head + 4 * count * dim + 4 * assigned:
            return None
        centres = np.frombuffer(data, "<f4", count * dim, head).reshape(count, dim)
        assign = np.frombuffer(data, "<i4", assigned, head + 4 * count * dim)
        if assigned and (int(assign.min()) < 0 or int(assign.max()) >= count):
            return None
        if not np.isfinite(centres).all():
            return None
        return cls(centres.astype(np.float32), assign.astype(np.int32))

    def save(self, path: Path, tag: bytes) -> None:
        """Write the lists to ``path`` for the pair tagged ``tag``: a new file, made
        durable, then put in place. Raises StoreError if it cannot be written."""
        import numpy as np

        count, dim = self.centres.shape
        head = (
            LISTS_MAGIC
            + dim.to_bytes(4, "little")
            + tag
            + count.to_bytes(4, "little")
            + len(self.assign).to_bytes(8, "little")
        )
        temporary = path.with_name(path.name + ".new")
        try:
            with open(temporary, "wb") as out:
                out.write(head)
                out.write(np.asarray(self.centres, dtype="<f4").tobytes())
                out.write(np.asarray(self.assign, dtype="<i4").tobytes())
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
            _sync_directory(path.parent)
        except OSError as exc:
            raise StoreError(f"cannot write lists file {path}: {exc}") from exc


class _Grouped:
    """A code file's rows as its lists hold them, in memory (see ``_grouping``)."""

    __slots__ = ("bounds", "codes", "positions", "tail")

    def __init__(
        self, positions: np.ndarray, bounds: np.ndarray, tail: int, codes: np.ndarray
    ) -> None:
        self.positions = positions  # memory positions, list by list
        self.bounds = bounds  # list i holds positions[bounds[i]:bounds[i + 1]]
        self.tail = tail  # memory positions from here on are in no list yet
        # The codes at ``positions``, in their order: a second copy of the listed codes
        # (48 MB at a million 384-d rows), so that a search copies the lists it scans in
        # a few runs of memory rather than a row at a time (at 1M, the ~78k rows a
        # search scans: 0.13 ms against 1.0).
        self.codes = codes


class _Probe:
    """The rows one search scans: the spans ``starts``/``ends`` of a grouping's lists and
    the rows from its tail to ``size`` (every row appended since the lists were made)."""

    __slots__ = ("ends", "grouped", "offsets", "size", "starts")

    def __init__(self, grouped: _Grouped, starts: np.ndarray, ends: np.ndarray, size: int) -> None:
        import numpy as np

        self.grouped, self.starts, self.ends, self.size = grouped, starts, ends, size
        lengths = np.append(ends - starts, size - grouped.tail)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])  # where each span begins

    def codes(self, codes: np.ndarray) -> np.ndarray:
        """The scanned rows' codes, span by span, the tail's from ``codes`` (the memory
        array, in position order) last."""
        import numpy as np

        g = self.grouped
        bounds = zip(self.starts.tolist(), self.ends.tolist(), strict=True)
        return np.concatenate([*(g.codes[a:b] for a, b in bounds), codes[g.tail : self.size]])

    def positions(self, at: np.ndarray | None = None) -> np.ndarray:
        """The memory positions of the scanned rows at ``at`` (indexes into
        :meth:`codes`; None: every one)."""
        import numpy as np

        g = self.grouped
        if at is None:
            at = np.arange(int(self.offsets[-1]))
        span = np.searchsorted(self.offsets, at, side="right") - 1
        local = at - self.offsets[span]
        listed = span < len(self.starts)
        out = np.empty(len(at), dtype=np.int64)
        out[listed] = g.positions[self.starts[span[listed]] + local[listed]]
        out[~listed] = g.tail + local[~listed]
        return out


def widened(halves: np.ndarray) -> np.ndarray:
    """float16 rows (n, dim) as float32, exactly (NaN stays NaN): faiss's fp16 decoder,
    with the CPU's conversion instructions where it has them (800 rows of 384 in 0.17
    ms, numpy's ``astype`` 0.5)."""
    import numpy as np

    if halves.dtype != np.float16 or halves.ndim != 2 or not len(halves):
        return halves.astype(np.float32)
    decode = _fp16_decoder(int(halves.shape[1]))
    _one_faiss_thread()
    return np.asarray(decode(np.ascontiguousarray(halves).view(np.uint8)), dtype=np.float32)


@functools.cache
def _fp16_decoder(dim: int) -> Callable[[np.ndarray], np.ndarray]:
    """faiss's float16 decoder of ``dim``-d rows (made once per size)."""
    import faiss

    quantizer = faiss.ScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16)
    return quantizer.decode


class _Floats:
    """The vectors of a code file's rows, row for row: in memory, float16 copies in an
    array; on disk, a file of the vids under which ``source`` finds each row's vector
    (the database's own copy), written in place and read through a memory map, with
    float16 copies of the rows appended or read kept in memory as ``budget`` allows
    (reading 800 vectors from SQLite costs ~3 ms, from memory ~0.3 ms)."""

    def __init__(
        self,
        path: Path | None,
        dim: int,
        file: BinaryIO | None,
        source: VectorSource | None = None,
        budget: CopyBudget | None = None,
    ) -> None:
        """Use :meth:`open` for a file."""
        import numpy as np

        self.path = path
        self.dim = dim
        self.source = source
        self.budget = budget
        self._file = file
        self._stride = 8  # a vid, int64
        self._array = np.empty((0, dim), dtype=np.float16)  # in memory: the rows
        self._copies = None if file is None or budget is None else _Copies(dim, budget)
        self._map: np.ndarray | None = None  # a file: its vids when last mapped

    @classmethod
    def open(
        cls,
        path: Path,
        dim: int,
        tag: bytes,
        *,
        create: bool,
        source: VectorSource | None,
        budget: CopyBudget | None = None,
    ) -> _Floats:
        """The vids file of a code file whose header holds ``tag`` (made anew when
        ``create``), its vectors read from ``source``. Raises CorruptStoreError if it is
        missing or of another pair."""
        header = _header(dim, tag, VIDS_MAGIC)
        if create:
            _create(path, header, replace=True)
        try:
            file = open(path, "r+b")  # noqa: SIM115 (held until close())
        except FileNotFoundError:
            raise CorruptStoreError(f"{path} is missing beside its code file") from None
        except OSError as exc:
            raise StoreError(f"cannot open vids file {path}: {exc}") from exc
        if file.read(HEADER_BYTES) != header:
            file.close()
            raise CorruptStoreError(f"{path} does not belong with its code file")
        return cls(path, dim, file, source, budget)

    def again(self, tag: bytes) -> _Floats:
        """The vids file at this one's path, opened anew (a handle of its own for work
        done without the code file's lock), if it still belongs to the pair ``tag``.
        Raises CorruptStoreError or StoreError if it does not, or cannot be read."""
        if self.path is None:
            raise StoreError("vectors in memory have no file to open again")
        return _Floats.open(self.path, self.dim, tag, create=False, source=self.source)

    def replaced(self) -> bool:
        """Whether the file at this path is not the one held open."""
        if self._file is None or self.path is None:
            return False
        return _if_same_file(self.path, self._file) is None

    def keep(self, rows: int) -> None:
        """Check the file holds ``rows`` rows, and cut away rows past them (written by an
        append whose code rows never were). Raises CorruptStoreError if it holds fewer."""
        if self._file is None:
            return
        held = (self._file.seek(0, os.SEEK_END) - HEADER_BYTES) // self._stride
        if held < rows:
            raise CorruptStoreError(f"{self.path} holds {held} vids for {rows} codes")
        if held > rows or self._file.tell() != HEADER_BYTES + rows * self._stride:
            self._file.truncate(HEADER_BYTES + rows * self._stride)

    def write(self, first: int, vectors: np.ndarray, vids: np.ndarray | None) -> None:
        """Write rows ``first`` onwards: in memory ``vectors``, in a file their ``vids``
        (and copies of ``vectors`` as the budget allows)."""
        import numpy as np

        halves = np.ascontiguousarray(vectors, dtype="<f2")
        if self._file is None:
            end = first + len(halves)
            if end > len(self._array):
                self._array = _grown(self._array, first, max(end, 2 * len(self._array), 1024))
            self._array[first:end] = halves
            return
        assert vids is not None
        try:
            self._file.seek(HEADER_BYTES + first * self._stride)
            self._file.write(np.ascontiguousarray(vids, dtype="<i8").tobytes())
            self._file.flush()  # the map reads the file, not this buffer
        except OSError as exc:
            raise StoreError(f"cannot write vids file {self.path}: {exc}") from exc
        self.keep_copies(np.arange(first, first + len(halves)), halves)

    def _rows_now(self) -> int:
        """The rows a file holds now."""
        assert self._file is not None
        return (os.fstat(self._file.fileno()).st_size - HEADER_BYTES) // self._stride

    def copies(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A file's copies of ``rows``: (which rows have one, their copies)."""
        import numpy as np

        if self._copies is None:
            return np.zeros(len(rows), dtype=bool), np.empty((0, self.dim), dtype=np.float16)
        return self._copies.get(rows)

    def keep_copies(self, rows: np.ndarray, halves: np.ndarray) -> None:
        """Keep copies of the float16 vectors ``halves`` of a file's ``rows`` as far as the
        budget allows (never of a vector the source did not have, NaN, nor of a row
        killed meanwhile)."""
        if self._copies is not None and len(rows):
            self._copies.put(rows, halves, self._rows_now())

    def drop_copies(self, rows: np.ndarray) -> None:
        """Forget the copies of a file's ``rows``, killed: zeroed, their bytes given back,
        and none kept of them later."""
        if self._copies is not None:
            self._copies.drop(rows)

    def adopt(self, other: _Floats, rows: np.ndarray) -> None:
        """Take over the copies ``other`` kept of its ``rows``, which are this file's rows
        0 onwards (a compaction's new file): their slots move, not their bytes (4 bytes
        a row under the lock); the copies of rows left behind are dropped."""
        if other._copies is not None and self._copies is not None:
            self._copies = other._copies.moved(rows)

    def vids(self, rows: np.ndarray) -> np.ndarray:
        """The vids (int64) of ``rows`` (file rows) of a file."""
        import numpy as np

        assert self._file is not None
        if not len(rows):
            return np.empty(0, dtype=np.int64)
        need = int(rows.max()) + 1
        mapped = self._map  # once: prime() may put another in place meanwhile
        if mapped is None or len(mapped) < need:
            held = (os.fstat(self._file.fileno()).st_size - HEADER_BYTES) // self._stride
            if held < need:
                raise CorruptStoreError(f"{self.path} holds {held} vids, row {need - 1} asked")
            # Mapped again as the file grows, its pages populated the first time (8 MB
            # at a million rows). A plain array over it: np.memmap's own indexing costs
            # more than the read.
            length = HEADER_BYTES + held * self._stride
            whole = _map_read_only(self._file, length, populate=mapped is None)
            mapped = np.frombuffer(whole, dtype="<i8", count=held, offset=HEADER_BYTES)
            self._map = mapped
        return np.take(mapped, rows).astype(np.int64)

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The float16 vectors of ``rows`` (file rows), (len(rows), dim); a file's from
        its copies, else its source (NaN rows where it no longer has the vector), kept
        as copies as the budget allows."""
        import numpy as np

        if self._file is None:
            return np.asarray(self._array[rows])
        if not len(rows):
            return np.empty((0, self.dim), dtype=np.float16)
        assert self.source is not None
        held, halves = self.copies(rows)
        if held.all():
            return halves
        out = np.empty((len(rows), self.dim), dtype=np.float16)
        out[held] = halves
        missing = rows[~held]
        fetched = self.source(self.vids(missing))
        out[~held] = fetched
        self.keep_copies(missing, fetched)
        return out

    def prime(self, rows: int) -> None:
        """Without the code file's lock: map the file's first ``rows`` rows with their
        pages populated, unless a map as long is in place already (a search that maps it
        meanwhile, under the lock, does the same; either map serves)."""
        import numpy as np

        if self._file is None or rows <= 0 or (self._map is not None and len(self._map) >= rows):
            return
        try:
            whole = _map_read_only(self._file, HEADER_BYTES + rows * self._stride, populate=True)
        except (OSError, ValueError):  # closed or cut meanwhile: the next read maps it
            return
        mapped = np.frombuffer(whole, dtype="<i8", count=rows, offset=HEADER_BYTES)
        if self._map is None or len(self._map) < rows:
            self._map = mapped

    def keep_rows(self, rows: np.ndarray) -> None:
        """In memory: keep only ``rows``, renumbered from 0 (a compaction)."""
        self._array = self._array[rows]

    def rewritten(
        self,
        rows: np.ndarray,
        tag: bytes,
        each: Callable[[int, np.ndarray], None],
        temporary: Path,
        *,
        opener: Callable[[str, int], int] | None = None,
    ) -> None:
        """Write the vids of ``rows`` in order to a new file at ``temporary`` (beside this
        one, not yet in its place) under ``tag``, made durable (``opener`` as
        :func:`open`'s). ``each(start, vectors)`` sees the vectors of every chunk (read
        from the source) before its vids are written (one pass over the file)."""
        assert self.source is not None
        with open(temporary, "wb", opener=opener) as out:
            out.write(_header(self.dim, tag, VIDS_MAGIC))
            for start in range(0, len(rows), CHUNK):
                vids = self.vids(rows[start : start + CHUNK])
                each(start, self.source(vids))
                out.write(vids.tobytes())
            out.flush()
            os.fsync(out.fileno())

    def sync(self) -> None:
        if self._file is None:
            return
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise StoreError(f"cannot sync vids file {self.path}: {exc}") from exc

    def close_file(self) -> None:
        """Close the file, keeping the copies (for :meth:`adopt`)."""
        self._map = None
        if self._file is not None:
            self._file.close()

    def close(self) -> None:
        self._map = None
        if self._file is not None:
            self._file.close()
        if self._copies is not None:
            self._copies.release()


class _Copies:
    """Float16 copies of some of a file's rows' vectors: in slots of one array in
    anonymous memory (its pages taken as slots are first written, so it holds about what
    the budget counts), found through each row's slot (-1: none, -2: killed, none ever)."""

    def __init__(self, dim: int, budget: CopyBudget) -> None:
        import numpy as np

        self.dim = dim
        self.budget = budget
        self.slot = np.full(0, -1, dtype=np.int32)  # each file row's slot
        self.store = _anonymous(0, dim)  # the slots
        self.top = 0  # slots ever used
        self.free = np.empty(0, dtype=np.int32)  # used slots given up (zeroed)
        self.held = 0  # slots holding a copy

    @property
    def row_bytes(self) -> int:
        return 2 * self.dim

    def _cover(self, end: int, rows_now: int = 0) -> None:
        """Make ``slot`` long enough for rows up to ``end`` (new rows: -1)."""
        import numpy as np

        if end > len(self.slot):
            grown = np.full(max(end, rows_now, 2 * len(self.slot), 1024), -1, dtype=np.int32)
            grown[: len(self.slot)] = self.slot
            self.slot = grown

    def get(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np

        slots = np.full(len(rows), -1, dtype=np.int32)
        inside = rows < len(self.slot)
        slots[inside] = self.slot[rows[inside]]
        held = slots >= 0
        return held, self.store[slots[held]]

    def put(self, rows: np.ndarray, halves: np.ndarray, rows_now: int) -> None:
        import numpy as np

        self._cover(int(rows.max()) + 1, rows_now)
        wanted = np.flatnonzero((self.slot[rows] == -1) & ~np.isnan(halves[:, 0]))
        # one copy a row even when ``rows`` names one twice
        _, first = np.unique(rows[wanted], return_index=True)
        wanted = wanted[np.sort(first)]
        count = self.budget.take(len(wanted), self.row_bytes)
        if not count:
            return
        wanted = wanted[:count]
        reused = self.free[len(self.free) - min(count, len(self.free)) :]
        self.free = self.free[: len(self.free) - len(reused)]
        fresh = np.arange(self.top, self.top + count - len(reused), dtype=np.int32)
        slots = np.concatenate([reused, fresh])
        if self.top + len(fresh) > len(self.store):
            most = self.budget.max_bytes // self.row_bytes
            size = max(
                self.top + len(fresh), 2 * len(self.store), min(rows_now + rows_now // 8, most)
            )
            store = _anonymous(size, self.dim)
            store[: self.top] = self.store[: self.top]
            self.store = store
        self.top += len(fresh)
        self.store[slots] = halves[wanted]
        self.slot[rows[wanted]] = slots
        self.held += count

    def drop(self, rows: np.ndarray) -> None:
        import numpy as np

        if not len(rows):
            return
        self._cover(int(rows.max()) + 1)  # the mark stays for a copy read meanwhile
        slots = self.slot[rows]
        held = slots[slots >= 0]
        self.slot[rows] = -2
        if len(held):
            self.store[held] = 0
            self.free = np.concatenate([self.free, held])
            self.held -= len(held)
            self.budget.give(len(held) * self.row_bytes)

    def moved(self, rows: np.ndarray) -> _Copies:
        """These copies as those of a new file whose rows 0 onwards are ``rows``; the
        copies of other rows are dropped, and this object holds none after."""
        import numpy as np

        new = _Copies(self.dim, self.budget)
        new.slot = np.full(max(len(rows), 1024), -1, dtype=np.int32)
        inside = rows < len(self.slot)
        new.slot[: len(rows)][inside] = self.slot[rows[inside]]
        kept = np.zeros(self.top, dtype=bool)
        kept_slots = new.slot[new.slot >= 0]
        kept[kept_slots] = True
        used = np.ones(self.top, dtype=bool)
        used[self.free] = False
        left = np.flatnonzero(used & ~kept).astype(np.int32)
        if len(left):
            self.store[left] = 0
        new.store, new.top = self.store, self.top
        new.free = np.concatenate([self.free, left])
        new.held = len(kept_slots)
        if self.held > new.held:
            self.budget.give((self.held - new.held) * self.row_bytes)
        self.held, self.top = 0, 0
        self.slot = np.full(0, -1, dtype=np.int32)
        self.store = _anonymous(0, self.dim)
        self.free = np.empty(0, dtype=np.int32)
        return new

    def release(self) -> None:
        """Give every copy's bytes back and let their memory go."""
        if self.held:
            self.budget.give(self.held * self.row_bytes)
        self.__init__(self.dim, self.budget)  # type: ignore[misc]


class CopyBudget:
    """How many bytes the float16 copies kept by the code files of a store (or any set
    of them) may take in memory, shared by threads."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self._lock = threading.Lock()
        from memlane.stores.forks import start_afresh_when_forked

        start_afresh_when_forked(self)

    def _forked(self) -> None:
        """In a forked child: a lock of its own (a thread of the parent may have held
        this one at the fork, and would never let it go here)."""
        self._lock = threading.Lock()

    def take(self, count: int, size: int) -> int:
        """Count as many of ``count`` more items of ``size`` bytes as fit; how many."""
        with self._lock:
            fit = min(count, max(0, self.max_bytes - self.used) // max(size, 1))
            self.used += fit * size
            return fit

    def give(self, n: int) -> None:
        """Count ``n`` bytes as freed."""
        with self._lock:
            self.used = max(0, self.used - n)


class _GaveWay(Exception):
    """A compaction or list making stops: the files changed under it, or it was
    cancelled."""


def _set(cancel: threading.Event | None) -> bool:
    return cancel is not None and cancel.is_set()


Holding = Callable[[], AbstractContextManager[bool]]
"""A caller's lock around the last step of a compaction or list making: entered, it
yields whether to go on."""


@contextmanager
def _held(holding: Holding | None) -> Iterator[bool]:
    if holding is None:
        yield True
        return
    with holding() as current:
        yield current


class _Plan:
    """A compaction under way: the rows it took under the lock, then what it made of
    them without it (new files at temporary paths, removed unless put in place)."""

    def __init__(
        self,
        *,
        tag: bytes,
        new_tag: bytes,
        file_rows: int,
        rows: np.ndarray,
        rids: np.ndarray,
        whole: bool,
        lists: _Lists | None,
    ) -> None:
        self.tag = tag  # the pair's tag when taken
        self.new_tag = new_tag  # the tag of the new pair (the same when ``whole``)
        self.file_rows = file_rows  # rows in the files when taken
        self.rows = rows  # the live file rows when taken, ascending
        self.rids = rids  # their rids
        self.whole = whole  # no dead row when taken: the vectors file stays
        self.lists = lists  # the lists when taken
        self.centre: np.ndarray | None = None
        self.codes: np.ndarray | None = None  # of ``rows``, against ``centre``
        self.new_lists: _Lists | None = None
        self.code_temp: Path | None = None
        self.vector_temp: Path | None = None
        self.old_vectors: Path | None = None
        self.folder: int | None = None
        """The folder of the code file when taken, open (where the system allows)."""
        """A second name of the vectors file replaced, so that the replacement does not
        free its blocks under the lock (~0.15 s at a million rows): freed after."""

    def opener(self, path: str, flags: int) -> int:
        """Make a new file in the folder the code file was in when taken, whatever is
        at its path now (a rebuild may have put a new folder there: the vectors of rows
        it erased must not land in it)."""
        name = os.path.basename(path)
        if self.folder is None:
            return os.open(path, flags, 0o644)
        return os.open(name, flags, 0o644, dir_fd=self.folder)

    def discard(self) -> None:
        """Remove the new files not put in place (from the folder they were made in),
        and the old vectors file's last name."""
        for temporary in (self.code_temp, self.vector_temp):
            if temporary is not None:
                with contextlib.suppress(FileNotFoundError):
                    if self.folder is None:
                        os.unlink(temporary)
                    else:
                        os.unlink(temporary.name, dir_fd=self.folder)
        if self.old_vectors is not None:
            self.old_vectors.unlink(missing_ok=True)
        self.code_temp = self.vector_temp = self.old_vectors = None
        if self.folder is not None:
            os.close(self.folder)
            self.folder = None


def _temporary(path: Path, unique: str) -> Path:
    """A compaction's new file for ``path``: beside it, named for this compaction only
    (``unique`` begins with the process id: processes may compact the same files at
    once, and one puts its files in place)."""
    return path.with_name(f"{path.name}.{unique}.compact")


STRAY_AGE_S = 3600.0
"""How long a compaction's file must have gone unchanged before it is taken for a dead
process's (see :func:`_sweep`)."""


def _sweep(path: Path, *, dead_only: bool, keep: Path | None = None) -> None:
    """Remove the files of compactions of the code file ``path`` (and its vectors file)
    that will never be put in place: those of processes no longer running, or with
    ``dead_only`` False, every one but ``keep`` (a compaction just put its own in
    place).

    A process is taken for dead only when no process has its id here *and* its file
    went unchanged for :data:`STRAY_AGE_S`: a folder shared with another machine or
    another process namespace (containers on one volume) holds files of processes this
    one cannot see (a compaction writes its files in seconds and puts them in place
    right after)."""
    older = [
        path.with_name(f"{path.name}.compact"),
        vids_path(path).with_name(f"{vids_path(path).name}.compact"),
    ]  # named by memlane before 2026-12-03
    for stray in [*path.parent.glob(f"{path.stem}.*.*.compact"), *older]:
        if stray == keep or not stray.exists():
            continue
        owner = stray.name.split(".")[-2].partition("-")[0]
        if dead_only and owner.isdigit() and (_running(int(owner)) or _recent(stray)):
            continue
        stray.unlink(missing_ok=True)


def _recent(file: Path) -> bool:
    """Whether ``file`` changed in the last :data:`STRAY_AGE_S` (or is gone)."""
    try:
        return time.time() - file.stat().st_mtime < STRAY_AGE_S
    except FileNotFoundError:
        return True


def _running(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # running, as another user
        return True
    return True


Reader = Callable[["np.ndarray"], "np.ndarray"]
"""Reads the float16 vectors of file rows."""


def _mean(read: Reader, rows: np.ndarray, dim: int) -> np.ndarray:
    """The mean of the stored vectors of ``rows`` (zero for none), estimated from at
    most :data:`CHUNK` of them spread evenly (a centre needs no more, and reading every
    float16 vector again cost a second at a million); rows with a value float16 cannot
    hold (NaN, infinity) are left out, so one cannot spoil every code."""
    import numpy as np

    if len(rows) > CHUNK:
        rows = rows[np.linspace(0, len(rows) - 1, CHUNK).astype(np.int64)]
    part = read(rows).astype(np.float32)
    finite = np.isfinite(part.sum(axis=1))
    if not finite.all():
        part = part[finite]
    if not len(part):
        return np.zeros(dim, dtype=np.float32)
    return np.asarray(part.mean(axis=0, dtype=np.float64), dtype=np.float32)


def _train(read: Reader, live: np.ndarray, count: int, dim: int) -> np.ndarray:
    """Centres of ``count`` lists over the vectors of the file rows ``live``: spherical
    k-means over at most :data:`TRAIN_PER_LIST` sampled vectors a list (rows that
    float16 cannot hold left out), unit length, float32. Fewer lists when fewer vectors
    are left to place them (k-means needs one a list at least), one when none is."""
    import faiss
    import numpy as np

    rng = np.random.default_rng(len(live))
    take = min(len(live), TRAIN_PER_LIST * count)
    sample = np.sort(rng.choice(live, take, replace=False))
    vectors = read(sample).astype(np.float32)
    vectors = vectors[np.isfinite(vectors.sum(axis=1))]
    count = min(count, len(vectors))
    if not count:  # one list, scanned with every search
        return np.eye(1, dim, dtype=np.float32)
    kmeans = faiss.Kmeans(dim, count, niter=12, spherical=True, seed=7)
    kmeans.train(np.ascontiguousarray(vectors))
    centres = np.asarray(kmeans.centroids, dtype=np.float32)
    norms = np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    return np.asarray(centres / norms, dtype=np.float32)


def _extended(
    read: Reader,
    base: _Lists | None,
    live: np.ndarray,
    rows: int,
    dim: int,
    cancel: threading.Event | None = None,
) -> _Lists:
    """Lists over file rows 0 .. ``rows`` - 1: ``base``'s, with the rows past them
    placed; without ``base``, centres placed first by k-means over the vectors of the
    ``live`` file rows."""
    import numpy as np

    if base is None:
        centres = _train(read, live, list_count(len(live)), dim)
        assign = np.empty(0, dtype=np.int32)
    else:
        centres, assign = base.centres, base.assign
    placed = _placed(read, np.arange(len(assign), rows), centres, cancel)
    return _Lists(centres, np.concatenate([assign, placed]))


def _lists_after(
    read: Reader,
    rows: np.ndarray,
    old: _Lists | None,
    dim: int,
    cancel: threading.Event | None = None,
) -> _Lists | None:
    """The lists of a compaction that keeps the file rows ``rows`` (ascending, read by
    their numbers before it), renumbered 0 .. len - 1; None below :data:`LISTS_AT`. The
    rows keep their lists and the rest are placed; the centres are placed again once
    the rows doubled since they were, so that they follow what is stored."""
    import numpy as np

    n = len(rows)
    if n < LISTS_AT:
        return None
    if old is not None and 2 * len(old.assign) > n:
        centres = old.centres
        assign = old.assign[rows[rows < len(old.assign)]]
    else:
        centres = _train(read, rows, list_count(n), dim)
        assign = np.empty(0, dtype=np.int32)
    placed = _placed(read, rows[len(assign) :], centres, cancel)
    return _Lists(centres, np.concatenate([assign, placed]))


def _placed(
    read: Reader, rows: np.ndarray, centres: np.ndarray, cancel: threading.Event | None = None
) -> np.ndarray:
    """The list of each of ``rows`` (file rows): the nearest centre (int32)."""
    import numpy as np

    placed = np.zeros(len(rows), dtype=np.int32)
    for at in range(0, len(rows), CHUNK):
        if _set(cancel):
            raise _GaveWay
        part = read(rows[at : at + CHUNK]).astype(np.float32)
        placed[at : at + len(part)] = np.argmax(part @ centres.T, axis=1)
    return placed


SPLIT_AT = 262144
"""Codes from which a scan given a helper thread is split in two halves, one per thread
(about 1 ms a half at this size: below it the hand-over costs more than it saves)."""


def _knn(
    code: np.ndarray, base: np.ndarray, k: int, helper: Executor | None
) -> tuple[np.ndarray, np.ndarray]:
    """faiss's (distances, positions) of the ``k`` rows of ``base`` nearest to ``code``
    by Hamming distance, nearest first; on two threads when a ``helper`` is given and
    ``base`` is large (the scan leaves the GIL). Rows of a tie at the k-th distance may
    be any of the tie's."""
    import numpy as np

    half = len(base) // 2
    if helper is None or len(base) < SPLIT_AT or half < k:
        return _scan(code, base, k)
    upper = helper.submit(_scan, code, base[half:], k)
    low_d, low_p = _scan(code, base[:half], k)
    high_d, high_p = upper.result()
    distances = np.concatenate([low_d[0], high_d[0]])
    positions = np.concatenate([low_p[0], high_p[0] + half])
    nearest = np.argsort(distances, kind="stable")[:k]
    return distances[nearest][None, :], positions[nearest][None, :]


def _scan(code: np.ndarray, base: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """One thread's faiss scan of ``base`` for the ``k`` rows nearest to ``code``."""
    import faiss

    _one_faiss_thread()
    found: tuple[np.ndarray, np.ndarray] = faiss.knn_hamming(code, base, k)
    return found


def _one_faiss_thread() -> None:
    """Keep faiss's calls on this thread to this thread: one query is scanned (or its
    rows widened) by one thread, and faiss would still open an OpenMP team whose idle
    members spin at the barrier (at 100k codes on a loaded 2-core machine, a scan took
    30 ms CPU and 108 ms wall instead of 0.9 ms: bench/codes.md). The setting belongs
    to the calling thread only."""
    import faiss

    if faiss.omp_get_max_threads() != 1:
        faiss.omp_set_num_threads(1)


def _map_read_only(file: BinaryIO, length: int, *, populate: bool) -> mmap.mmap:
    """The first ``length`` bytes of ``file`` mapped read-only, with ``populate`` its
    pages populated where the system can (Linux's ``MAP_POPULATE``)."""
    if not hasattr(mmap, "MAP_SHARED"):  # Windows
        return mmap.mmap(file.fileno(), length, access=mmap.ACCESS_READ)
    flags = mmap.MAP_SHARED | (getattr(mmap, "MAP_POPULATE", 0) if populate else 0)
    return mmap.mmap(file.fileno(), length, flags=flags, prot=mmap.PROT_READ)


def _if_same_file(path: Path, file: BinaryIO) -> os.stat_result | None:
    """The status of the file at ``path`` if it is the one ``file`` has open; None when
    another file, or none, is there now."""
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return None
    mine = os.fstat(file.fileno())
    return on_disk if (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino) else None


def _open_file(path: Path, dim: int) -> tuple[BinaryIO, bytes, bool, int, np.ndarray]:
    """The file opened for reading and writing, positioned after its header, with its tag,
    whether it was made now, and its centre (rows live when computed, the centre):
    created with a header if missing or shorter than one, its torn last row cut away."""
    import numpy as np

    full = code_header_bytes(dim)
    zero = np.zeros(dim, dtype=np.float32)
    created = not path.exists() or path.stat().st_size < HEADER_BYTES
    if created:
        _create(path, _code_header(dim, os.urandom(4), 0, zero))
    file = open(path, "r+b")  # noqa: SIM115 (held by the CodeFile until close())
    try:
        found = file.read(HEADER_BYTES)
        if found[:7] == MAGIC[:7] and found[:8] != MAGIC:
            raise CorruptStoreError(f"{path} is a code file of another format version")
        if found[:8] != MAGIC:
            raise CorruptStoreError(f"{path} is not a memlane code file")
        tag = found[12:HEADER_BYTES]
        if found != _header(dim, tag):
            other = int.from_bytes(found[8:12], "little")
            raise CorruptStoreError(f"{path} holds codes of {other}-d vectors, not {dim}-d")
        if file.seek(0, os.SEEK_END) < full:  # a header cut short: no rows yet
            file.close()
            _create(path, _code_header(dim, os.urandom(4), 0, zero), replace=True)
            return (*_open_file(path, dim)[:2], True, 0, zero)
        file.seek(HEADER_BYTES)
        rest = file.read(full - HEADER_BYTES)
        centred = int.from_bytes(rest[:8], "little")
        centre = np.frombuffer(rest[8:], dtype="<f4").astype(np.float32)
        stride = 8 + dim // 8
        torn = (file.seek(0, os.SEEK_END) - full) % stride
        if torn:
            file.truncate(file.tell() - torn)
        file.seek(full)
        return file, tag, created, centred, centre
    except BaseException:
        file.close()
        raise


def _create(path: Path, header: bytes, *, replace: bool = False) -> None:
    """A file holding only the header (replacing a torn one, or with ``replace`` any
    file), durable with its entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    found = path.read_bytes() if path.exists() and not replace else b""
    if not MAGIC.startswith(found[: len(MAGIC)]):
        raise CorruptStoreError(f"{path} is not a memlane code file")
    with open(path, "wb") as file:
        file.write(header)
        file.flush()
        os.fsync(file.fileno())
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    """fsync a directory so a new or renamed entry in it survives a crash (where the
    platform allows opening directories)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _centred_codes(halves: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """The codes of float16 vectors taken against ``centre``."""
    import numpy as np

    return sign_codes(halves.astype(np.float32) - centre)


def _last_of_each(ids: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of the last occurrence of each rid, in their order."""
    import numpy as np

    if len(ids) < 2 or bool(np.all(ids[1:] > ids[:-1])):
        return ids, rows
    _, first_reversed = np.unique(ids[::-1], return_index=True)
    keep = np.sort(len(ids) - 1 - first_reversed)
    return ids[keep], rows[keep]


def _anonymous(rows: int, dim: int) -> np.ndarray:
    """A float16 array (rows, dim) in anonymous memory of its own, whose pages are taken
    when first written, 4 KiB at a time. (numpy asks Linux for huge pages for a large
    array: copying a search's 800 scattered rows into one then zeroed a 2 MiB page for
    each, and took seconds.)"""
    import numpy as np

    size = max(rows * dim * 2, 1)
    return np.frombuffer(mmap.mmap(-1, size), dtype=np.float16, count=rows * dim).reshape(rows, dim)


def _grown(array: np.ndarray, used: int, capacity: int) -> np.ndarray:
    """A new array of ``capacity`` rows holding the first ``used`` rows of ``array``."""
    import numpy as np

    grown = np.empty((capacity, *array.shape[1:]), dtype=array.dtype)
    grown[:used] = array[:used]
    return grown
