"""Sign-bit code files (memlane.stores.codes): real files in tmp_path, answers checked
against a brute-force Hamming scan, kills and replays, torn tails, reopen and compaction."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memlane.errors import CorruptStoreError, StoreError, ValidationError
from memlane.stores.codes import (
    DEAD_IN_MEMORY,
    HEADER_BYTES,
    CodeFile,
    CopyBudget,
    candidate_count,
    code_header_bytes,
    sign_codes,
    vids_path,
)

DIM = 64
ROW = 8 + DIM // 8
CODE_HEADER = code_header_bytes(DIM)


class _Stored:
    """What the database is to a code file on disk: each vector kept under a vid that is
    never given twice, read back as float16 (NaN rows for vids it does not hold)."""

    def __init__(self) -> None:
        self.vectors: dict[int, np.ndarray] = {}
        self.next = 1

    def put(self, vectors: np.ndarray) -> list[int]:
        vids = list(range(self.next, self.next + len(vectors)))
        self.next += len(vectors)
        for vid, vector in zip(vids, np.asarray(vectors), strict=True):
            self.vectors[vid] = vector.astype("<f2")
        return vids

    def source(self, dim: int) -> Any:
        def read(vids: np.ndarray) -> np.ndarray:
            out = np.full((len(vids), dim), np.nan, dtype=np.float16)
            for i, vid in enumerate(np.asarray(vids).tolist()):
                if vid in self.vectors:
                    out[i] = self.vectors[vid]
            return out

        return read


STORED = _Stored()


def _open(path: Path | None, dim: int, **kwargs: Any) -> CodeFile:
    """A code file reading its vectors from STORED."""
    return CodeFile.open(path, dim, vectors=None if path is None else STORED.source(dim), **kwargs)


def _add(codes: CodeFile, rids: Any, vectors: np.ndarray) -> None:
    """Append ``vectors`` under ``rids``, kept in STORED first (as a write keeps them in the
    database before the codes are synced)."""
    matrix = np.asarray(vectors)
    vids = STORED.put(matrix) if matrix.ndim == 2 and matrix.shape[1] == codes.dim else []
    codes.append(rids, vectors, vids if len(vids) == len(matrix) else None)


def _vectors(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _brute(
    live: dict[int, np.ndarray], query: np.ndarray, n: int, centre: np.ndarray | None = None
) -> list[int]:
    """The reference answer: every live row's Hamming distance (codes of the float16 copy
    minus the centre), sorted by (distance, rid)."""
    at = np.zeros(len(query), dtype=np.float32) if centre is None else centre

    def code(v: np.ndarray) -> np.ndarray:
        return sign_codes((v.astype(np.float16).astype(np.float32) - at)[None, :])[0]

    mine = sign_codes((query - at)[None, :])[0]
    scored = sorted((int(np.unpackbits(code(v) ^ mine).sum()), rid) for rid, v in live.items())
    return [rid for _, rid in scored[:n]]


def test_sign_codes_packs_positive_components_msb_first() -> None:
    vector = np.array([[1.0, -1, 0, 2, -3, 0.5, 0.1, -0.1] + [-1.0] * 7 + [3.0]])
    assert sign_codes(vector).tolist() == [[0b10010110, 0b00000001]]
    assert sign_codes(_vectors(5, dim=384)).shape == (5, 48)


@pytest.mark.parametrize("shape", [(3, 10), (3, 0), (8,), (2, 2, 8)])
def test_sign_codes_rejects_bad_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        sign_codes(np.ones(shape))


@pytest.mark.parametrize("dim", [0, 12, -8])
def test_open_rejects_bad_dims(tmp_path: Path, dim: int) -> None:
    with pytest.raises(ValidationError):
        _open(tmp_path / "c.codes", dim)
    assert not (tmp_path / "c.codes").exists()


def test_candidates_on_known_distances(tmp_path: Path) -> None:
    """Row i differs from the query in i signs, so its distance is i."""
    query = np.ones(DIM, dtype=np.float32)
    rids = [40, 7, 13, 2, 99, 5]
    vectors = np.ones((len(rids), DIM), dtype=np.float32)
    for i in range(len(rids)):
        vectors[i, :i] = -1.0
    with _open(tmp_path / "c.codes", DIM) as codes:
        _add(codes, rids, vectors)
        assert codes.candidates(query, 3).tolist() == [40, 7, 13]
        assert codes.candidates(query, 100).tolist() == rids
        assert codes.candidates(-query, 2).tolist() == [5, 99]
        assert codes.candidates(query, 0).tolist() == []


def test_ties_break_by_rid_whatever_the_append_order(tmp_path: Path) -> None:
    """200 equal codes: the tie runs past the rows asked of faiss, which asks again."""
    same = np.ones((200, DIM), dtype=np.float32)
    rids = np.random.default_rng(1).permutation(np.arange(1000, 1200))
    with _open(tmp_path / "c.codes", DIM) as codes:
        _add(codes, rids, same)
        far = np.ones((1, DIM), dtype=np.float32)
        far[0, :5] = -1
        _add(codes, [3], far)
        assert codes.candidates(same[0], 10).tolist() == list(range(1000, 1010))
        assert codes.candidates(-same[0], 3).tolist() == [3, 1000, 1001]


def test_candidates_match_a_brute_force_scan(tmp_path: Path) -> None:
    vectors = _vectors(3000, seed=2)
    live = {rid: vectors[rid] for rid in range(3000)}
    with _open(tmp_path / "c.codes", DIM) as codes:
        _add(codes, np.arange(3000), vectors)
        killed = np.random.default_rng(3).choice(3000, DEAD_IN_MEMORY + 500, replace=False)
        for chunk in np.array_split(killed, 7):
            codes.kill(chunk)
        for rid in killed:
            del live[int(rid)]
        assert len(codes) == len(live) and codes.dead == len(killed)
        for query in _vectors(20, seed=4):
            assert codes.candidates(query, 25).tolist() == _brute(live, query, 25)
    with _open(tmp_path / "c.codes", DIM) as again:  # the kills reached their rows
        assert again.rids().tolist() == sorted(live)


def test_replaying_an_append_leaves_one_live_row_per_rid(tmp_path: Path) -> None:
    vectors = _vectors(3, seed=5)
    with _open(tmp_path / "c.codes", DIM) as codes:
        _add(codes, [1, 2, 3], vectors)
        _add(codes, [1, 2, 3], vectors)
        assert len(codes) == 3 and codes.dead == 3
        assert sorted(codes.rids().tolist()) == [1, 2, 3]
        assert codes.candidates(vectors[1], 3).tolist() == _brute(
            dict(zip([1, 2, 3], vectors, strict=True)), vectors[1], 3
        )
        assert codes.kill([2, 77]) == 1
        assert codes.kill([2]) == 0
        assert codes.rids().tolist() == [1, 3] and codes.dead == 4


def test_a_rid_repeated_in_one_append_keeps_its_last_vector() -> None:
    vectors = _vectors(3, seed=6)
    codes = _open(None, DIM)
    _add(codes, [8, 9, 8], vectors)
    assert len(codes) == 2
    assert codes.candidates(vectors[2], 1).tolist() == [8]
    assert codes.candidates(vectors[0], 2).tolist() == _brute(
        {8: vectors[2], 9: vectors[1]}, vectors[0], 2
    )


def test_an_update_replaces_the_old_code(tmp_path: Path) -> None:
    old, new = np.ones((1, DIM), dtype=np.float32), -np.ones((1, DIM), dtype=np.float32)
    with _open(tmp_path / "c.codes", DIM) as codes:
        _add(codes, [5, 6], np.vstack([old, new]))
        _add(codes, [5], new)
        assert codes.candidates(old[0], 2).tolist() == [5, 6]  # equal distances: by rid
        assert codes.candidates(old[0], 1).tolist() == [5]
        assert len(codes) == 2


def test_reopen_sees_the_same_live_rows(tmp_path: Path) -> None:
    path = tmp_path / "c.codes"
    vectors = _vectors(500, seed=7)
    with _open(path, DIM) as codes:
        _add(codes, np.arange(500), vectors)
        codes.kill(np.arange(0, 500, 3))
        _add(codes, [1, 2], vectors[:2])  # replayed: rows 1 and 2 now hold vectors 0, 1
        codes.sync()
        rids, answers = codes.rids(), [codes.candidates(q, 10) for q in vectors[:5]]
    with _open(path, DIM) as again:
        assert again.rids().tolist() == rids.tolist()
        assert again.dead == 167 + 2
        assert [again.candidates(q, 10).tolist() for q in vectors[:5]] == [
            a.tolist() for a in answers
        ]


def test_a_torn_last_row_is_cut_away(tmp_path: Path) -> None:
    path = tmp_path / "c.codes"
    vectors = _vectors(4, seed=8)
    with _open(path, DIM) as codes:
        _add(codes, [1, 2, 3], vectors[:3])
    with open(path, "ab") as file:
        file.write((4).to_bytes(8, "little") + bytes(3))  # a row cut after 11 bytes
    with _open(path, DIM) as codes:
        assert path.stat().st_size == CODE_HEADER + 3 * ROW
        assert codes.rids().tolist() == [1, 2, 3]
        _add(codes, [4], vectors[3:])
    with _open(path, DIM) as codes:
        assert codes.rids().tolist() == [1, 2, 3, 4]
        assert codes.candidates(vectors[3], 1).tolist() == [4]


@pytest.mark.parametrize("kept", [4, CODE_HEADER - 3])  # in the fixed part, in the centre
def test_a_torn_header_starts_an_empty_file(tmp_path: Path, kept: int) -> None:
    path = tmp_path / "c.codes"
    with _open(path, DIM) as codes:
        _add(codes, [1], _vectors(1))
    path.write_bytes(path.read_bytes()[:kept])
    with _open(path, DIM) as codes:
        assert len(codes) == 0
        _add(codes, [2], _vectors(1))
    with _open(path, DIM) as codes:
        assert codes.rids().tolist() == [2]


def test_two_live_rows_of_one_rid_left_by_a_crash_keep_the_later(tmp_path: Path) -> None:
    path = tmp_path / "c.codes"
    first, second = np.ones((1, DIM), dtype=np.float32), -np.ones((1, DIM), dtype=np.float32)
    with _open(path, DIM) as codes:
        _add(codes, [4], first)
    with open(path, "ab") as file:  # the replay's row, its kill of row 0 lost
        file.write((4).to_bytes(8, "little") + sign_codes(second).tobytes())
    with open(vids_path(path), "ab") as file:
        file.write(STORED.put(second)[0].to_bytes(8, "little"))
    with _open(path, DIM) as codes:
        assert len(codes) == 1 and codes.dead == 1
        _add(codes, [5], first)
        assert codes.candidates(first[0], 2).tolist() == [5, 4]
    with _open(path, DIM) as codes:  # the duplicate's kill reached the file
        assert codes.dead == 1


def test_compact_keeps_the_answers_and_drops_dead_rows(tmp_path: Path) -> None:
    path = tmp_path / "c.codes"
    vectors = _vectors(2000, seed=9)
    queries = _vectors(10, seed=10)
    with _open(path, DIM) as codes:
        _add(codes, np.arange(2000), vectors)
        codes.kill(np.random.default_rng(11).choice(2000, 700, replace=False))
        _add(codes, [5, 6], vectors[7:9])
        live = codes.rids().tolist()
        kept = {r: vectors[r + 2] if r in (5, 6) else vectors[r] for r in live}
        codes.compact()
        assert codes.dead == 0 and len(codes) == len(live)
        assert path.stat().st_size == CODE_HEADER + len(live) * ROW
        centre = codes.centre
        assert np.allclose(centre, np.mean([v for v in kept.values()], axis=0), atol=1e-3)
        for q in queries:
            assert codes.candidates(q, 30).tolist() == _brute(kept, q, 30, centre)
        codes.kill([live[0]])  # the file rows were renumbered: kill finds the right one
        _add(codes, [5000], vectors[:1])
    with _open(path, DIM) as codes:
        assert codes.rids().tolist() == [*live[1:], 5000]
        assert codes.dead == 1
    assert not list(tmp_path.glob("*.compact"))


def test_in_memory_codes_count_and_compact() -> None:
    codes = _open(None, DIM)
    vectors = _vectors(10, seed=12)
    _add(codes, np.arange(10), vectors)
    codes.kill([1, 2])
    assert (len(codes), codes.dead) == (8, 2)
    codes.compact()
    assert (len(codes), codes.dead) == (8, 0)
    live = {r: vectors[r] for r in range(10) if r not in (1, 2)}
    assert codes.candidates(vectors[0], 8).tolist() == _brute(live, vectors[0], 8, codes.centre)
    assert not np.allclose(codes.centre, 0)


def test_a_file_of_another_dim_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.codes"
    with _open(path, DIM) as codes:
        _add(codes, [1], _vectors(1))
    with pytest.raises(CorruptStoreError, match="64-d vectors, not 384-d"):
        _open(path, 384)


def test_a_file_that_is_not_a_code_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.codes"
    path.write_bytes(b"SQLite format 3\x00" + bytes(100))
    with pytest.raises(CorruptStoreError, match="not a memlane code file"):
        _open(path, DIM)
    path.write_bytes(b"xy")
    with pytest.raises(CorruptStoreError):
        _open(path, DIM)


def test_bad_inputs_are_refused_and_change_nothing(tmp_path: Path) -> None:
    with _open(tmp_path / "c.codes", DIM) as codes:
        _add(codes, [1], _vectors(1))
        with pytest.raises(ValidationError):
            _add(codes, [2, 3], _vectors(1))
        with pytest.raises(ValidationError):
            _add(codes, [2], _vectors(1, dim=DIM * 2))
        with pytest.raises(ValidationError, match="non-negative"):
            _add(codes, [-1], _vectors(1))
        with pytest.raises(ValidationError):
            codes.candidates(np.ones(DIM + 8), 3)
        assert codes.rids().tolist() == [1] and codes.dead == 0
    assert (tmp_path / "c.codes").stat().st_size == CODE_HEADER + ROW


def test_a_closed_code_file_refuses_work(tmp_path: Path) -> None:
    codes = _open(tmp_path / "c.codes", DIM)
    codes.close()
    codes.close()
    with pytest.raises(StoreError, match="closed"):
        codes.candidates(np.ones(DIM), 1)
    with pytest.raises(StoreError, match="closed"):
        _add(codes, [1], _vectors(1))


def test_importing_the_module_loads_neither_numpy_nor_faiss() -> None:
    code = "import sys, memlane.stores.codes; print(sorted({'numpy', 'faiss'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_candidate_count_grows_with_k() -> None:
    assert [candidate_count(k) for k in (0, 10, 100)] == [200, 260, 800]


def _distances(live: dict[int, np.ndarray], query: np.ndarray) -> dict[int, int]:
    """Each live row's Hamming distance to the query (codes of the float16 copies)."""
    mine = sign_codes(query[None, :])[0]
    return {
        rid: int(
            np.unpackbits(
                sign_codes(v.astype(np.float16)[None, :].astype(np.float32))[0] ^ mine
            ).sum()
        )
        for rid, v in live.items()
    }


def _exact(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """What scored() must give: the float16 copy of each vector against the query."""
    return vectors.astype(np.float16).astype(np.float32) @ query


@pytest.mark.parametrize("on_disk", [True, False])
def test_scored_gives_the_candidates_with_exact_scores(tmp_path: Path, on_disk: bool) -> None:
    path = tmp_path / "c.codes" if on_disk else None
    vectors = _vectors(3000, seed=20)
    queries = _vectors(5, seed=21)
    with _open(path, DIM) as codes:
        _add(codes, np.arange(0, 6000, 2), vectors)
        codes.kill([0, 2, 4])
        _add(codes, [2], vectors[:1] * -1)  # an update: the new vector is scored
        live = {r: vectors[r // 2] for r in range(6, 6000, 2)} | {2: -vectors[0]}
        for q in queries:
            rids, scores = codes.scored(q, 50)
            exact = codes.candidates(q, 50).tolist()  # every tie at the 50th read
            # The same rows, but for which of the rows tied at the 50th distance stand in.
            assert len(rids) == 50 and len(set(rids.tolist())) == 50
            nearest = _distances(live, q)
            assert sorted(nearest[r] for r in rids.tolist()) == sorted(nearest[r] for r in exact)
            expected = [
                float(_exact((-vectors[0] if r == 2 else vectors[r // 2])[None, :], q)[0])
                for r in rids
            ]
            assert scores == pytest.approx(expected, rel=1e-6, abs=1e-6)
        empty_rids, empty_scores = codes.scored(queries[0], 0)
        assert len(empty_rids) == len(empty_scores) == 0
        with pytest.raises(ValidationError):
            codes.scored(np.ones(DIM + 8), 3)


def test_scores_survive_reopen_and_compaction(tmp_path: Path) -> None:
    path = tmp_path / "c.codes"
    vectors = _vectors(2000, seed=22)
    queries = _vectors(5, seed=23)
    with _open(path, DIM) as codes:
        _add(codes, np.arange(2000), vectors)
        codes.kill(np.arange(0, 2000, 3))
        before = [codes.scored(q, 40) for q in queries]
        codes.sync()
    with _open(path, DIM) as codes:
        for q, (rids, scores) in zip(queries, before, strict=True):
            again = codes.scored(q, 40)
            assert again[0].tolist() == rids.tolist() and again[1].tolist() == scores.tolist()
        codes.compact()
        assert vids_path(path).stat().st_size == HEADER_BYTES + len(codes) * 8
        live = {int(r): vectors[r] for r in codes.rids()}
        for q in queries:  # new codes against the centre; the same exact scores
            rids, scores = codes.scored(q, 40)
            assert rids.tolist() == _brute(live, q, 40, codes.centre)
            assert scores.tolist() == pytest.approx(_exact(vectors[rids], q).tolist(), abs=1e-6)
        _add(codes, [5000], vectors[:1])
        assert codes.scored(vectors[0], 1)[0].tolist() == [5000]
        after = [codes.scored(q, 40) for q in queries]
    with _open(path, DIM) as codes:  # the centre was kept with the codes
        assert codes.scored(vectors[0], 1)[0].tolist() == [5000]
        for q, (rids, scores) in zip(queries, after, strict=True):
            again = codes.scored(q, 40)
            assert again[0].tolist() == rids.tolist() and again[1].tolist() == scores.tolist()
    assert not list(tmp_path.glob("*.compact"))


def test_vid_rows_past_the_codes_are_cut_away(tmp_path: Path) -> None:
    """An append killed after writing its vids and before its codes."""
    path = tmp_path / "c.codes"
    vectors = _vectors(3, seed=24)
    with _open(path, DIM) as codes:
        _add(codes, [1, 2], vectors[:2])
    with open(vids_path(path), "ab") as file:
        file.write(STORED.put(vectors[2:])[0].to_bytes(8, "little") + bytes(5))
    with _open(path, DIM) as codes:
        assert vids_path(path).stat().st_size == HEADER_BYTES + 2 * 8
        _add(codes, [3], vectors[2:])
        rids, scores = codes.scored(vectors[2], 1)
        assert rids.tolist() == [3]
        assert scores[0] == pytest.approx(float(_exact(vectors[2:], vectors[2])[0]), rel=1e-6)


def test_a_vids_file_missing_short_or_of_another_pair_is_refused(tmp_path: Path) -> None:
    path, other = tmp_path / "c.codes", tmp_path / "d.codes"
    with _open(path, DIM) as codes, _open(other, DIM) as second:
        _add(codes, [1, 2], _vectors(2))
        _add(second, [1, 2], _vectors(2))
    saved = vids_path(path).read_bytes()
    vids_path(path).write_bytes(vids_path(other).read_bytes())  # same rows, other tag
    with pytest.raises(CorruptStoreError, match="does not belong"):
        _open(path, DIM)
    vids_path(path).write_bytes(saved[: HEADER_BYTES + 8])
    with pytest.raises(CorruptStoreError, match="holds 1 vids for 2 codes"):
        _open(path, DIM)
    vids_path(path).unlink()
    with pytest.raises(CorruptStoreError, match="missing"):
        _open(path, DIM)


def test_a_code_file_of_the_older_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.codes"
    path.write_bytes(b"MLCODES\x01" + DIM.to_bytes(4, "little") + bytes(4))
    with pytest.raises(CorruptStoreError, match="another format version"):
        _open(path, DIM)


def test_a_code_file_knows_when_another_rewrote_or_extended_its_files(tmp_path: Path) -> None:
    path = tmp_path / "c.codes"
    vectors = _vectors(10, seed=30)
    with _open(path, DIM) as first, _open(path, DIM) as second:
        assert not first.replaced() and not second.replaced()
        _add(first, [1, 2], vectors[:2])  # rows the second has not read
        first.sync()
        assert second.replaced() and not first.replaced()
        second.close()
    with _open(path, DIM) as first, _open(path, DIM) as second:
        first.kill([1])
        assert not second.replaced()  # a kill rewrites a rid in place: nothing to miss
        first.compact()  # new files at the paths
        assert second.replaced() and not first.replaced()
    assert not _open(None, DIM).replaced()


def test_codes_of_vectors_sharing_a_large_component_are_centred(tmp_path: Path) -> None:
    """Unit vectors that all lean one way (mean cosine 0.87, as some models' embeddings
    do) have nearly the same signs; centred codes find about twice as many of the exact
    top 10 among their top 100."""
    rng = np.random.default_rng(31)
    lean = rng.standard_normal(DIM).astype(np.float32) * 3

    def unit(m: np.ndarray) -> np.ndarray:
        return (m / np.linalg.norm(m, axis=-1, keepdims=True)).astype(np.float32)

    vectors = unit(lean + rng.standard_normal((3000, DIM)).astype(np.float32))
    queries = unit(lean + rng.standard_normal((20, DIM)).astype(np.float32))

    def recall(codes: CodeFile) -> float:
        found = 0
        for q in queries:
            exact = set(np.argsort(-(vectors @ q))[:10].tolist())
            rids, scores = codes.scored(q, 100)
            found += len(exact & set(rids[np.argsort(-scores)][:10].tolist()))
        return found / (10 * len(queries))

    with _open(tmp_path / "c.codes", DIM) as codes:
        _add(codes, np.arange(3000), vectors)
        assert codes.wants_centre() and np.allclose(codes.centre, 0)
        before = recall(codes)
        codes.compact()
        assert not codes.wants_centre()
        assert np.allclose(codes.centre, vectors.mean(axis=0), atol=1e-3)
        after = recall(codes)
        assert after >= before + 0.15, (before, after)
        _add(codes, np.arange(3000, 6000), vectors)  # doubled since: centre again
        assert codes.wants_centre()


def test_a_vector_float16_cannot_hold_does_not_spoil_the_centre(tmp_path: Path) -> None:
    vectors = _vectors(2000, seed=40) + 3.0
    vectors[5, 0] = np.nan
    vectors[6, 1] = 1e6  # infinity in float16
    with _open(tmp_path / "c.codes", DIM) as codes:
        _add(codes, np.arange(2000), vectors)
        codes.compact()
        centre = codes.centre
        assert np.isfinite(centre).all()
        kept = np.delete(vectors, [5, 6], axis=0)
        assert np.allclose(
            centre, kept.astype(np.float16).astype(np.float32).mean(axis=0), atol=0.05
        )
        assert codes.scored(vectors[100], 1)[0].tolist() == [100]


def test_a_compaction_that_fails_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of disk while writing the new files: the old pair stays as it was, in step,
    and appends go on against the old centre (the next settle tries again)."""
    import memlane.stores.codes as codes_module

    path = tmp_path / "c.codes"
    vectors = _vectors(1500, seed=41) + 2.0
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with _open(path, DIM) as codes:
        _add(codes, np.arange(1200), vectors[:1200])
        codes.kill(np.arange(0, 100))  # dead rows: both files are rewritten
        codes.sync()

        def no_space(*_: object, **__: object) -> None:
            raise OSError(28, "No space left on device")

        with monkeypatch.context() as patch:
            patch.setattr(codes_module._Floats, "rewritten", no_space)
            with pytest.raises(StoreError, match="No space"):
                codes.compact()
        assert np.allclose(codes.centre, 0) and codes.wants_centre()
        assert codes.dead == 100 and len(codes) == 1100
        _add(codes, np.arange(1200, 1500), vectors[1200:])
        codes.sync()
        rids, scores = codes.scored(vectors[1400], 1400)
        assert int(rids[np.argmax(scores)]) == 1400
    assert not list(tmp_path.glob("*.compact"))
    with _open(path, DIM) as codes:  # what the files hold agrees
        rids, scores = codes.scored(vectors[1400], 1400)
        assert int(rids[np.argmax(scores)]) == 1400 and len(codes) == 1400


def test_growth_recentres_the_codes_and_keeps_the_vectors_file(tmp_path: Path) -> None:
    path = tmp_path / "c.codes"
    vectors = _vectors(2000, seed=42) + 2.0
    with _open(path, DIM) as codes:
        for start in range(0, 1100, 100):  # appends leave spare room in the arrays
            _add(codes, np.arange(start, start + 100), vectors[start : start + 100])
        codes.sync()
        inode = vids_path(path).stat().st_ino
        assert codes.wants_centre()
        codes.compact()
        assert vids_path(path).stat().st_ino == inode  # no dead row: not rewritten
        _add(codes, np.arange(1100, 2000), vectors[1100:])  # after a growth compaction
        assert codes.scored(vectors[1999], 1)[0].tolist() == [1999]
    with _open(path, DIM) as codes:
        assert len(codes) == 2000 and not np.allclose(codes.centre, 0)
        assert codes.scored(vectors[1500], 1)[0].tolist() == [1500]


def test_a_scan_split_over_two_threads_finds_what_one_thread_finds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Halves scanned on a helper thread and this one, merged: the same distances as one
    scan, each at a row that lies at it, and the same exact scores at the top."""
    from concurrent.futures import ThreadPoolExecutor

    from memlane.stores import codes as codes_module

    monkeypatch.setattr(codes_module, "SPLIT_AT", 1000)
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((4001, 64)).astype(np.float32)  # an odd count: uneven halves
    base = sign_codes(vectors)
    with ThreadPoolExecutor(1) as helper:
        for q in rng.standard_normal((5, 64)).astype(np.float32):
            code = sign_codes(q[None, :])
            alone_d, _ = codes_module._knn(code, base, 300, None)
            split_d, split_p = codes_module._knn(code, base, 300, helper)
            assert split_d.tolist() == alone_d.tolist()
            bits = np.unpackbits(base[split_p[0]] ^ code, axis=1).sum(axis=1)
            assert bits.tolist() == split_d[0].tolist()
            assert split_p[0].max() >= 2000 and split_p[0].min() < 2000  # both halves
        dense = rng.standard_normal((3000, 384)).astype(np.float32)
        with _open(None, 384) as file:
            _add(file, np.arange(3000), dense)
            query = dense[7] + 0.1 * rng.standard_normal(384).astype(np.float32)
            alone = file.scored(query, 50)
            split = file.scored(query, 50, helper)
            assert split[0].tolist() == alone[0].tolist()
            assert np.allclose(split[1], alone[1])


def _clustered(n: int, seed: int, dim: int = DIM, clusters: int = 40) -> np.ndarray:
    """Vectors around ``clusters`` directions, as embeddings of many topics lie."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    out = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, dim))
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def _exact_top(live: dict[int, np.ndarray], query: np.ndarray, k: int) -> set[int]:
    rids = list(live)
    scores = np.stack([live[r].astype(np.float16).astype(np.float32) for r in rids]) @ query
    return {rids[i] for i in np.argsort(-scores)[:k]}


def test_lists_scan_the_nearest_lists_and_keep_recall(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From LISTS_AT live rows the codes are sorted into lists and a search scans the
    lists nearest the query and every row appended since: the answers hold about what a
    scan of every code holds (exact top 10 among them), no killed row is ever returned,
    new rows are found before they are in a list, and the lists are saved beside the
    codes and read again on open."""
    from memlane.stores import codes as module

    monkeypatch.setattr(module, "LISTS_AT", 3000)
    path = tmp_path / "c.bin"
    vectors = _clustered(6000, 1)
    live = dict(enumerate(vectors))
    with _open(path, DIM) as codes:
        _add(codes, range(5000), vectors[:5000])
        assert codes.wants_lists()
        codes.make_lists()
        assert not codes.wants_lists() and module.lists_path(path).exists()
        _add(codes, range(5000, 6000), vectors[5000:])  # in no list yet: the tail
        killed = list(range(0, 6000, 7))
        codes.kill(killed)
        for r in killed:
            del live[r]
        queries = _clustered(40, 2)
        found = whole = 0
        for q in queries:
            rids, scores = codes.scored(q, 260)
            assert len(rids) == 260 and not set(rids.tolist()) & set(killed)
            kept = {int(r) for r in rids[np.argsort(-scores)[:10]]}
            found += len(kept & _exact_top(live, q, 10))
            saved, codes._lists = codes._lists, None  # the same search over every code
            rids, scores = codes.scored(q, 260)
            codes._lists = saved
            best = {int(r) for r in rids[np.argsort(-scores)[:10]]}
            whole += len(best & _exact_top(live, q, 10))
        assert found >= max(whole - 8, 0.6 * 400)  # 64-bit codes: a scan of all ~0.6
        # A row appended after the lists were made is found by a query equal to it.
        rids, scores = codes.scored(vectors[5998], 200)
        assert int(rids[np.argmax(scores)]) == 5998
        codes.sync()
    with _open(path, DIM) as again:
        assert again._lists is not None and len(again._lists.assign) == 5000
        rids, scores = again.scored(vectors[5998], 200)
        assert int(rids[np.argmax(scores)]) == 5998


@pytest.mark.parametrize("on_disk", [True, False])
def test_a_search_with_lists_scores_every_live_row_it_scans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_disk: bool
) -> None:
    """A search with lists copies the codes of the lists it scans from their grouped
    copy and those of the tail from memory: each scanned code is the code of the row it
    names, and asked for more rows than the scan holds, a search returns every live row
    it scanned (none killed: counted, as the bound on dead rows leaves too few), each
    with its exact score against the row's own vector."""
    from memlane.stores import codes as module

    monkeypatch.setattr(module, "LISTS_AT", 2000)
    vectors = _clustered(4300, 5)
    with _open(tmp_path / "c.bin" if on_disk else None, DIM) as codes:
        _add(codes, range(4000), vectors[:4000])
        codes.make_lists()
        _add(codes, range(4000, 4300), vectors[4000:])  # the tail
        killed = [*range(1, 4000, 9), *range(4001, 4300, 5)]
        codes.kill(killed)
        assert 0 < codes.dead < module.DEAD_IN_MEMORY  # kept in memory, dead
        for q in _clustered(6, 6):
            with codes._lock:
                probe = codes._listed(q)
                positions = probe.positions()
                assert np.array_equal(probe.codes(codes._codes), codes._codes[positions])
                scanned = {int(r) for r in codes._rids[positions] if r >= 0}
            assert set(range(4000, 4300)) - set(killed) <= scanned < set(range(4300))
            rids, scores = codes.scored(q, len(scanned) + 40)
            assert sorted(rids.tolist()) == sorted(scanned)
            exact = vectors[rids].astype(np.float16).astype(np.float32) @ q
            assert np.allclose(scores, exact, rtol=1e-5, atol=1e-6)


def test_killing_the_rid_of_a_dead_row_kills_nothing(tmp_path: Path) -> None:
    """-1 marks a dead row; asked to kill it, a code file finds no live row (before, it
    counted every dead row in memory off the live ones a second time)."""
    with _open(tmp_path / "c.bin", DIM) as codes:
        _add(codes, range(100), _clustered(100, 9))
        assert codes.kill(range(60)) == 60
        assert codes.kill([-1, -5]) == 0
        assert len(codes) == 40 and sorted(codes.rids().tolist()) == list(range(60, 100))


def test_widened_is_numpys_float16_to_float32_conversion() -> None:
    from memlane.stores.codes import widened

    rng = np.random.default_rng(3)
    halves = rng.standard_normal((50, 384)).astype(np.float16)
    halves[7, :] = np.nan  # a row the database no longer holds
    halves[8, :3] = [np.inf, -np.inf, 0.0]
    wide = widened(halves)
    assert wide.dtype == np.float32 and wide.shape == halves.shape
    assert np.array_equal(wide, halves.astype(np.float32), equal_nan=True)
    assert widened(halves[:0]).shape == (0, 384)
    wide32 = rng.standard_normal((3, 8)).astype(np.float32)  # already wide: as it is
    assert widened(wide32).dtype == np.float32 and np.array_equal(widened(wide32), wide32)
    assert np.array_equal(
        widened(halves[:, :64]), halves[:, :64].astype(np.float32), equal_nan=True
    )


def test_lists_follow_compaction_and_a_stale_or_torn_lists_file_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compaction that drops dead rows renumbers the rows: the lists are renumbered
    with them and saved under the new pair's tag. A lists file of another pair (a crash
    after the codes were rewritten) or a torn one is ignored: every code is scanned."""
    from memlane.stores import codes as module

    monkeypatch.setattr(module, "LISTS_AT", 2000)
    path = tmp_path / "c.bin"
    vectors = _clustered(4000, 3)
    with _open(path, DIM) as codes:
        _add(codes, range(4000), vectors)
        codes.make_lists()
        old = module.lists_path(path).read_bytes()
        codes.kill(range(0, 4000, 2))
        codes.compact()  # dead rows dropped: a new tag, the lists renumbered
        assert codes._lists is not None and len(codes._lists.assign) == 2000
        for rid in (1, 1999, 3999):
            rids, scores = codes.scored(vectors[rid], 200)
            assert int(rids[np.argmax(scores)]) == rid
        codes.sync()
    with _open(path, DIM) as again:
        assert again._lists is not None
    module.lists_path(path).write_bytes(old)  # the lists of the pair before
    with _open(path, DIM) as stale:
        rids, scores = stale.scored(vectors[3], 200)
        assert stale._lists is None and int(rids[np.argmax(scores)]) == 3
    module.lists_path(path).write_bytes(old[:100])
    with _open(path, DIM) as torn:
        assert torn._lists is None and torn.wants_lists()
        torn.make_lists()
    whole = bytearray(module.lists_path(path).read_bytes())
    whole[28:32] = np.array([np.nan], dtype="<f4").tobytes()  # a centre that is not a number
    module.lists_path(path).write_bytes(bytes(whole))
    with _open(path, DIM) as hostile:
        assert hostile._lists is None
    monkeypatch.setattr(module, "LISTS_AT", 10**6)
    with _open(path, DIM) as small:
        small.compact()  # below LISTS_AT: no lists, and no file left
        assert small._lists is None and not module.lists_path(path).exists()


def test_list_count_is_a_power_of_two_near_the_square_root() -> None:
    from memlane.stores.codes import list_count

    assert list_count(1_000_000) == 1024 and list_count(262_144) == 512
    assert list_count(10) == 256 and list_count(10**9) == 4096


@pytest.mark.parametrize("rows", [150, 600])
def test_lists_are_made_when_fewer_rows_than_lists_can_place_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: int
) -> None:
    """Lists are made from however few vectors there are to place them: fewer live rows
    than list_count asks for (150 for 256 lists), or rows whose vectors float16 cannot
    hold (left out of the k-means: here all but 40 of 600). A compaction then still
    succeeds and every row is found again by its own vector."""
    from memlane.stores import codes as module

    monkeypatch.setattr(module, "LISTS_AT", 100)
    vectors = _clustered(rows, 7)
    if rows == 600:
        vectors[40:] *= 1e6  # infinity in float16
    with _open(tmp_path / "c.bin", DIM) as codes:
        _add(codes, range(rows), vectors)
        codes.compact()
        assert codes._lists is not None and 1 <= len(codes._lists.centres) <= min(rows, 256)
        for rid in range(0, 40, 3):  # (scores against infinite rows are not numbers)
            assert rid in codes.scored(vectors[rid], 20)[0].tolist()
        _add(codes, [rows], vectors[:1])  # a later pass places new rows in those lists
        codes.make_lists()
        assert len(codes._lists.assign) == rows + 1


def _wrote_between(codes: CodeFile, change: Any) -> Any:
    """A ``holding`` for :meth:`CodeFile.compact`: makes ``change`` just before the new
    files are put in place (after they were made from the rows taken at the start)."""

    @contextmanager
    def holding() -> Iterator[bool]:
        change()
        yield True

    return holding


def _compacted_by_another_handle(path: Path) -> Any:
    def compacted() -> None:
        with _open(path, DIM) as other:
            other.compact()

    return compacted


@pytest.mark.parametrize("dead_first", [False, True])
def test_a_compaction_brings_in_what_changed_while_it_ran(tmp_path: Path, dead_first: bool) -> None:
    """Rows appended, killed and replaced after a compaction took its rows (by this code
    file, and a kill by another handle on the files, as another process would) are in the
    new files: live rows are found with their exact scores, killed ones never, in memory
    and after reopening; both with the vectors file rewritten (dead rows at the start)
    and kept (none)."""
    path = tmp_path / "c.bin"
    vectors = _vectors(3000, seed=51)
    with _open(path, DIM) as codes:
        _add(codes, np.arange(2000), vectors[:2000])
        if dead_first:
            codes.kill(np.arange(0, 2000, 3))
        codes.sync()
        live = {int(r): vectors[int(r)] for r in codes.rids()}

        def change() -> None:
            _add(codes, np.arange(2000, 2600), vectors[2000:2600])
            codes.kill([1, 2000, 2001])
            _add(codes, [4], vectors[2999:])  # a rewrite: the old row of 4 dies
            codes.sync()
            with _open(path, DIM) as other:  # another process's kill
                other.kill([5])
                other.sync()
            live.update({r: vectors[r] for r in range(2000, 2600)})
            live[4] = vectors[2999]
            for r in (1, 2000, 2001, 5):
                live.pop(r, None)

        assert codes.compact(holding=_wrote_between(codes, change))
        # Rows killed meanwhile stay in the new files as dead rows (the old rows of 1,
        # 4 and 5, and 2000 and 2001): the next compaction drops them.
        assert codes.dead == 5 and len(codes) == len(live)
        assert sorted(codes.rids().tolist()) == sorted(live)
        for rid in (4, 7, 1999, 2002, 2599):
            if rid not in live:
                continue
            rids, scores = codes.scored(live[rid], 300)
            assert int(rids[np.argmax(scores)]) == rid
        for q in _vectors(5, seed=52):
            rids, scores = codes.scored(q, 40)
            assert rids.tolist() == _brute(live, q, 40, codes.centre)
            assert scores.tolist() == pytest.approx(_exact(vectors_of(live, rids), q), abs=1e-3)
        codes.sync()
    with _open(path, DIM) as again:
        assert sorted(again.rids().tolist()) == sorted(live) and again.dead == 5
    assert not list(tmp_path.glob("*.compact"))


def vectors_of(live: dict[int, np.ndarray], rids: np.ndarray) -> np.ndarray:
    return np.array([live[int(r)] for r in rids])


def test_a_compaction_gives_way_when_another_process_appended_or_compacted(
    tmp_path: Path,
) -> None:
    """Rows another handle appended (or a compaction it made) after this compaction took
    its rows: it changes nothing, removes its new files and says so; the next one
    succeeds."""
    path = tmp_path / "c.bin"
    vectors = _vectors(1500, seed=53)
    with _open(path, DIM) as codes:
        _add(codes, np.arange(1200), vectors[:1200])
        codes.kill(np.arange(0, 1200, 2))
        codes.sync()

        def appended() -> None:
            with _open(path, DIM) as other:
                _add(other, np.arange(1200, 1300), vectors[1200:1300])
                other.sync()

        assert not codes.compact(holding=_wrote_between(codes, appended))
        assert codes.dead == 600 and codes.replaced()
        assert not list(tmp_path.glob("*.compact"))

        compacted = _compacted_by_another_handle(path)
        with _open(path, DIM) as fresh:
            assert not fresh.compact(holding=_wrote_between(fresh, compacted))
            assert fresh.dead == 600 and fresh.replaced()
        with _open(path, DIM) as fresh:
            assert fresh.dead == 0 and len(fresh) == 700
            assert fresh.compact() and fresh.dead == 0
    assert not list(tmp_path.glob("*.compact"))


def test_searches_go_on_while_a_compaction_makes_its_files(tmp_path: Path) -> None:
    """While a compaction writes its new files, another thread searches and appends
    without waiting for it (the lock is free), and a cancelled compaction changes
    nothing."""
    path = tmp_path / "c.bin"
    vectors = _vectors(5000, seed=54)
    with _open(path, DIM) as codes:
        _add(codes, np.arange(4000), vectors[:4000])
        codes.kill(np.arange(0, 4000, 4))
        seen: list[int] = []

        class Probe(threading.Event):
            """Asked between chunks of the compaction's work: meanwhile a search and an
            append on another thread must finish."""

            def is_set(self) -> bool:
                def work() -> None:
                    rids, scores = codes.scored(vectors[7], 100)
                    seen.append(int(rids[np.argmax(scores)]))
                    _add(codes, [4000 + len(seen)], vectors[4000 + len(seen) :][:1])

                other = threading.Thread(target=work)
                other.start()
                other.join(10)
                assert not other.is_alive(), "the search waited for the compaction"
                return False

        assert codes.compact(Probe())
        assert seen and set(seen) == {7}
        assert codes.dead == 0 and len(codes) == 3000 + len(seen)
        assert 4000 + len(seen) in codes.rids().tolist()

        stop = threading.Event()
        stop.set()
        codes.kill(np.arange(1, 2000, 4))
        before = (codes.dead, len(codes), path.stat().st_ino)
        assert not codes.compact(stop)
        assert (codes.dead, len(codes), path.stat().st_ino) == before
    assert not list(tmp_path.glob("*.compact"))


def test_lists_made_while_rows_come_and_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lists made from the rows at the start: rows appended meanwhile are the tail every
    search scans, killed ones are never returned; lists made by another handle since
    make this one give way."""
    from memlane.stores import codes as module

    monkeypatch.setattr(module, "LISTS_AT", 2000)
    path = tmp_path / "c.bin"
    vectors = _clustered(4000, 9)
    with _open(path, DIM) as codes:
        _add(codes, range(3000), vectors[:3000])
        codes.sync()

        def change() -> None:
            _add(codes, range(3000, 3500), vectors[3000:3500])
            codes.kill(range(0, 3500, 10))

        assert codes.make_lists(holding=_wrote_between(codes, change))
        assert codes._lists is not None and len(codes._lists.assign) == 3000
        for rid in (3, 2999, 3001, 3499):
            rids, scores = codes.scored(vectors[rid], 200)
            assert int(rids[np.argmax(scores)]) == rid
        assert not set(codes.scored(vectors[10], 200)[0].tolist()) & set(range(0, 3500, 10))

        compacted = _compacted_by_another_handle(path)
        _add(codes, range(3500, 4000), vectors[3500:])
        codes.sync()
        assert not codes.make_lists(holding=_wrote_between(codes, compacted))
        assert len(codes._lists.assign) == 3000


def test_a_compaction_removes_the_files_of_compactions_that_never_finished(
    tmp_path: Path,
) -> None:
    """Files of a killed process's compaction are removed when the next one starts
    (before it could fail), once they went unchanged for an hour; a running process's,
    or one unseen here that wrote its file just now, only once a compaction put its own
    files in place (that one then gives way)."""
    import memlane.stores.codes as codes_module

    path = tmp_path / "c.bin"
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    killed = [tmp_path / f"c.bin.{gone}-0a1b2c3d.compact", tmp_path / f"c.vids.{gone}-0a1b.compact"]
    running = tmp_path / f"c.bin.{os.getppid()}-99.compact"
    other = tmp_path / f"d.bin.{gone}-0a1b2c3d.compact"  # another file's: not to remove
    # A process that is not running here but wrote its file just now may run where this
    # one cannot see it (another process namespace on the same volume): kept.
    unseen = tmp_path / f"c.bin.{gone}-4e5f.compact"
    for file in (*killed, running, other, unseen):
        file.write_bytes(b"half written")
    hours_ago = time.time() - 2 * 3600
    for file in killed:
        os.utime(file, (hours_ago, hours_ago))
    with _open(path, DIM) as codes:
        _add(codes, np.arange(1500), _vectors(1500, seed=55))
        codes.kill(np.arange(0, 1500, 2))

        def no_space(*_: object, **__: object) -> None:
            raise OSError(28, "No space left on device")

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(codes_module._Floats, "rewritten", no_space)
            with pytest.raises(StoreError):
                codes.compact()
        assert not any(f.exists() for f in killed)
        assert running.exists() and other.exists() and unseen.exists()
        assert codes.compact()
    assert not running.exists() and not unseen.exists() and other.exists()


def test_a_compaction_never_writes_into_a_folder_put_in_place_meanwhile(tmp_path: Path) -> None:
    """A rebuild replaces the user's folder (renamed away, a new one at its path) while a
    compaction writes its new files: they are made in the folder it was taken from, never
    in the new one (the rebuild erased what they hold), and removed when it gives way."""
    folder = tmp_path / "user"
    folder.mkdir()
    path = folder / "c.bin"
    vectors = _vectors(3000, seed=56)
    moved = tmp_path / "user.old"
    with _open(path, DIM) as codes:
        _add(codes, np.arange(3000), vectors)
        codes.kill(np.arange(0, 3000, 2))
        codes.sync()

        class Rebuild(threading.Event):
            """Asked between chunks of the compaction's work: the first time, the
            folder is replaced as a rebuild would replace it."""

            def is_set(self) -> bool:
                if not moved.exists():
                    folder.rename(moved)
                    folder.mkdir()
                    (folder / "state.json").write_text("{}")
                return False

        seen: list[list[str]] = []

        @contextmanager
        def holding() -> Iterator[bool]:  # the new files are all made by now
            seen.append(sorted(p.name for p in folder.iterdir()))
            yield True

        assert not codes.compact(Rebuild(), holding)  # its files are not there any more
        assert seen == [["state.json"]]
        assert [p.name for p in folder.iterdir()] == ["state.json"]
        assert not list(moved.glob("*.compact"))


def test_copies_are_kept_within_a_budget_read_first_and_dropped_with_their_rows(
    tmp_path: Path,
) -> None:
    """A file keeps float16 copies of the vectors appended or read, as far as its budget
    allows, and reads them before its source; a killed row's copy is zeroed and its
    bytes given back; a compaction's new file takes the copies of the rows it keeps;
    closing gives back the rest."""
    path = tmp_path / "c.codes"
    budget = CopyBudget(2 * DIM * 150)
    vectors = _vectors(200, seed=61)
    asked: list[int] = []
    source = STORED.source(DIM)

    def counted(vids: np.ndarray) -> np.ndarray:
        asked.append(len(vids))
        return source(vids)

    with CodeFile.open(path, DIM, vectors=counted, budget=budget) as codes:
        codes.append(np.arange(200), vectors, STORED.put(vectors))
        assert budget.used == 2 * DIM * 150  # the first 150 rows fit
        rids, scores = codes.scored(vectors[0], 200)
        assert asked == [50]  # the other 50 from the source, and none kept (no room)
        assert np.allclose(scores, _exact(vectors[rids], vectors[0]), atol=1e-2)
        codes.kill(np.arange(0, 100))
        assert budget.used == 2 * DIM * 50
        rids_again, again = codes.scored(vectors[150], 100)
        assert asked[-1] == 0 or len(asked) == 2  # rows 150..199 took the freed room
        codes.compact()
        held = budget.used
        assert held == 2 * DIM * 100  # the 100 live rows' copies moved to the new file
        asked.clear()
        rids, scores = codes.scored(vectors[150], 100)
        assert asked == [] and sorted(rids.tolist()) == list(range(100, 200))
        # the same rows and scores (in another order: the codes were taken again)
        assert dict(zip(rids_again.tolist(), again.tolist(), strict=True)) == dict(
            zip(rids.tolist(), scores.tolist(), strict=True)
        )
    assert budget.used == 0


def test_warm_reads_the_rows_without_copies_and_stops_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "c.codes"
    vectors = _vectors(3000, seed=62)
    vids = STORED.put(vectors)
    with CodeFile.open(path, DIM, vectors=STORED.source(DIM)) as codes:  # no budget: no copies
        codes.append(np.arange(3000), vectors, vids)
        codes.kill([5, 6])
        codes.sync()
    asked: list[int] = []
    source = STORED.source(DIM)

    def counted(vids: np.ndarray) -> np.ndarray:
        asked.append(len(vids))
        return source(vids)

    budget = CopyBudget(1 << 30)
    with CodeFile.open(path, DIM, vectors=counted, budget=budget) as codes:
        stop = threading.Event()
        stop.set()
        assert codes.warm(stop) is False and asked == [] and budget.used == 0
        assert codes.warm() is True
        assert sum(asked) == 2998 and budget.used == 2998 * 2 * DIM  # the live rows
        asked.clear()
        rids, _ = codes.scored(vectors[7], 50)
        assert asked == [] and 7 in rids.tolist()
        assert codes.warm() is True and asked == []  # nothing left to read
    assert budget.used == 0


def test_a_row_killed_while_its_vector_is_read_gets_no_copy(tmp_path: Path) -> None:
    """warm() and scored() read vectors without the lock: a row killed meanwhile (a sync
    on another thread) gets no copy, and only live rows' copies count in the budget."""
    path = tmp_path / "c.codes"
    vectors = _vectors(100, seed=63)
    vids = STORED.put(vectors)
    with CodeFile.open(path, DIM, vectors=STORED.source(DIM)) as codes:
        codes.append(np.arange(100), vectors, vids)
    source = STORED.source(DIM)
    for how in ("warm", "scored"):
        budget = CopyBudget(1 << 30)
        killing: list[CodeFile] = []

        def read(vids: np.ndarray, killing: list[CodeFile] = killing) -> np.ndarray:
            if killing:
                killing.pop().kill([7])  # the kill lands while the vectors are read
            return source(vids)

        with CodeFile.open(path, DIM, vectors=read, budget=budget) as codes:
            killing.append(codes)
            if how == "warm":
                assert codes.warm()
            else:
                assert 7 in codes.scored(vectors[7], 20)[0].tolist()
            held, _ = codes._floats.copies(np.arange(100))
            assert not held[7] and budget.used == int(held.sum()) * 2 * DIM
            assert held.sum() == (99 if how == "warm" else 19)
        codes = CodeFile.open(path, DIM, vectors=STORED.source(DIM))
        codes.append([7], vectors[7:8], vids[7:8])  # alive again for the next round
        codes.close()


def test_a_file_opened_again_takes_over_the_copies_unless_compacted(tmp_path: Path) -> None:
    path = tmp_path / "c.codes"
    vectors = _vectors(1500, seed=64)
    vids = STORED.put(vectors)
    budget = CopyBudget(1 << 30)
    first = CodeFile.open(path, DIM, vectors=STORED.source(DIM), budget=budget)
    first.append(np.arange(1000), vectors[:1000], vids[:1000])
    first.sync()
    assert budget.used == 1000 * 2 * DIM
    with CodeFile.open(path, DIM, vectors=STORED.source(DIM)) as other:  # another process
        other.append(np.arange(1000, 1200), vectors[1000:1200], vids[1000:1200])
        other.kill([3])
        other.sync()
    again = CodeFile.open(path, DIM, vectors=STORED.source(DIM), budget=budget)
    assert again.take_copies(first)
    first.close()
    assert budget.used == 999 * 2 * DIM  # row 3 died: its copy went
    held, _ = again._floats.copies(np.arange(1200))
    assert held[:1000].sum() == 999 and not held[3] and not held[1000:].any()
    with CodeFile.open(path, DIM, vectors=STORED.source(DIM)) as other:
        other.kill(np.arange(0, 900))
        assert other.compact()  # a new pair: rows renumbered
    third = CodeFile.open(path, DIM, vectors=STORED.source(DIM), budget=budget)
    assert not third.take_copies(again)
    again.close()
    third.close()
    assert budget.used == 0
