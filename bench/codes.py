"""Sign-bit codes (memlane.stores.codes): recall of the vector half on real embeddings,
and speed at 100k and 1M codes.

    HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python bench/codes.py recall
    HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python bench/codes.py speed --n 100000 1000000
    HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python bench/codes.py centre --extra 10000
    HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python bench/codes.py lists --extra 10000 \
        --n 200000 1000000

recall: every turn of the five LoCoMo dev conversations ("<speaker>: <text>") and every
question, embedded with memlane's default embedder (OnnxEmbedder, all-MiniLM-L6-v2
int8-stored ONNX). For each question: exact float32 cosine top-10 and top-100 over the
scope, against the codes' top-C (Hamming) reranked by exact float32 cosine. Scopes: each
conversation on its own (its own questions), and all five pooled (all questions).

centre: recall@10 of the codes' top C reranked, with codes taken plain and against the
vectors' mean (what compaction does), on the real vectors pooled with ``--extra``
docstring sentences and on 200,000 synthetic ones grown from them.

lists: recall@10 and @100 of ``CodeFile.scored`` (the top ``candidate_count(k)`` codes,
then the top k by their exact scores) against exact float32 cosine, and its CPU and wall
p50/p95 on one thread, with the codes as a compaction leaves them (centred, sorted into
lists: ``LISTS_AT`` set to 1 so that the lists engage below 262,144 rows) scanned whole and
through the lists at PROBE_SHARE 4, 8, 16 (memlane's) and 32; on the real vectors (LoCoMo
turns + ``--extra`` docstring sentences, the LoCoMo questions) and on ``--n`` synthetic
ones grown from them (the questions, and ``--held-out`` synthetic queries grown with
another seed).

speed: synthetic unit vectors grown from the real turn vectors (see ``synthetic``), written
to a CodeFile under --dir; ``candidates`` CPU time (time.process_time) and wall per query,
one faiss thread, with 0 % and 10 % of the rows dead; append rate; open time of the file.
Vectors are cached under --dir (embeddings.npz) so later runs skip the model.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path("/work/shared/data/locomo-dev")
SCRATCH = Path("/work/scratch/codes")
CS = (100, 200, 400, 800)


def locomo_texts(path: Path) -> tuple[list[str], list[str]]:
    """(turns as "<speaker>: <text>", questions) of one conversation file."""
    data = json.loads(path.read_text())
    turns: list[str] = []
    sessions = sorted(
        (k for k in data if re.fullmatch(r"session_\d+", k)), key=lambda k: int(k.split("_")[1])
    )
    for key in sessions:
        turns.extend(f"{t['speaker']}: {t['text']}" for t in data[key])
    questions = [str(q["question"]) for q in data["qa"]]
    return turns, questions


def embeddings(cache: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Conversation name -> (turn vectors, question vectors), float32 unit rows."""
    if cache.exists():
        npz = np.load(cache)
        names = sorted({k.split(".")[0] for k in npz.files})
        return {n: (npz[n + ".turns"], npz[n + ".questions"]) for n in names}
    from memlane.embedders import OnnxEmbedder

    embedder = OnnxEmbedder()
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for path in sorted(DATA.glob("*.json")):
        turns, questions = locomo_texts(path)
        began = time.perf_counter()
        t = np.asarray(embedder.embed(turns), dtype=np.float32)
        q = np.asarray(embedder.embed(questions), dtype=np.float32)
        print(
            f"{path.stem}: {len(t)} turns, {len(q)} questions, {time.perf_counter() - began:.0f} s"
        )
        out[path.stem] = (t, q)
    flat = {
        f"{n}.{part}": arr
        for n, (t, q) in out.items()
        for part, arr in (("turns", t), ("questions", q))
    }
    np.savez(cache, **flat)
    return out


def docstring_sentences(limit: int, seed: int = 0) -> list[str]:
    """Up to ``limit`` distinct English sentences (6 to 40 words) from the docstrings of the
    standard library, shuffled: real text unrelated to LoCoMo, to grow a scope."""
    import ast
    import sysconfig

    found: set[str] = set()
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if "test" in path.parts or "site-packages" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(errors="replace"))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node) or ""
                for sentence in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                    if 6 <= len(sentence.split()) <= 40 and sentence[:1].isupper():
                        found.add(sentence)
    texts = sorted(found)
    order = np.random.default_rng(seed).permutation(len(texts))[:limit]
    return [texts[i] for i in order]


def distractors(cache: Path, limit: int) -> np.ndarray:
    """The vectors of :func:`docstring_sentences`, cached."""
    if cache.exists():
        return np.load(cache)
    from memlane.embedders import OnnxEmbedder

    texts = docstring_sentences(limit)
    began = time.perf_counter()
    vectors = np.asarray(OnnxEmbedder().embed(texts), dtype=np.float32)
    print(f"{len(texts)} docstring sentences embedded in {time.perf_counter() - began:.0f} s")
    np.save(cache, vectors)
    return vectors


# --- recall -------------------------------------------------------------------------------


def as_stored(vectors: np.ndarray, form: str) -> np.ndarray:
    """``vectors`` as a store gives them back when it keeps them in ``form`` (float32:
    as they are; float16 or int8: :func:`memlane.stores.vector_cache.to_blob`, read back
    by ``from_blobs``)."""
    if form == "float32":
        return vectors
    from memlane.stores.vector_cache import from_blobs, to_blob

    dim = vectors.shape[1]
    return from_blobs([to_blob(v, form) for v in vectors], dim)


def scope_recall(
    turns: np.ndarray, questions: np.ndarray, pairs: set[tuple[int, int]], stored: str
) -> dict[tuple[int, int], float]:
    """(k, C) -> mean recall@k against exact float32 cosine of the codes' top C reranked
    by the cosine of the vectors as ``stored`` (C = 0: the codes' own top k, no rerank).
    The codes are taken from the stored vectors too, as a store takes them."""
    from memlane.stores.codes import CodeFile

    exact = np.argsort(-(questions @ turns.T), axis=1, kind="stable")
    turns = as_stored(turns, stored)
    codes = CodeFile.open(None, turns.shape[1])
    codes.append(np.arange(len(turns)), turns)
    out: dict[tuple[int, int], list[float]] = {pair: [] for pair in pairs}
    for q, row in zip(questions, exact, strict=True):
        for c in sorted({c for _, c in pairs}):
            ks = [k for k, c2 in pairs if c2 == c]
            candidates = codes.candidates(q, c or max(ks))
            if c:
                candidates = candidates[np.argsort(-(turns[candidates] @ q), kind="stable")]
            for k in ks:
                kk = min(k, len(turns))
                got = len(set(candidates[:kk].tolist()) & set(row[:kk].tolist())) / kk
                out[k, c].append(got)
    return {pair: float(np.mean(v)) for pair, v in out.items()}


RULES: dict[str, Callable[[int], int]] = {
    "max(200, 4k)": lambda k: max(200, 4 * k),
    "max(200, 8k)": lambda k: max(200, 8 * k),
    "200 + 6k": lambda k: 200 + 6 * k,
}
KS = (10, 25, 50, 100)


def recall(directory: Path, extra: int, stored: str) -> None:
    data = embeddings(directory / "embeddings.npz")
    scopes = {name: (t, q) for name, (t, q) in data.items()}
    turns = np.vstack([t for t, _ in data.values()])
    questions = np.vstack([q for _, q in data.values()])
    scopes["all five pooled"] = (turns, questions)
    if extra:
        noise = distractors(directory / f"docstrings-{extra}.npy", extra)
        scopes[f"pooled + {len(noise):,} docstring sentences"] = (
            np.vstack([turns, noise]),
            questions,
        )
    pairs = {(k, c) for k in (10, 100) for c in CS} | {(10, 0)}
    pairs |= {(k, rule(k)) for rule in RULES.values() for k in KS}
    results = {name: scope_recall(t, q, pairs, stored) for name, (t, q) in scopes.items()}
    print(f"vectors stored as {stored}")
    header = " | ".join(f"C={c}" for c in CS)
    print(
        f"\n| scope | turns | questions | recall@10: {header} | codes only | recall@100: {header} |"
    )
    print("| --- | --- | --- |" + " --- |" * (2 * len(CS) + 1))
    for name, (t, q) in scopes.items():
        r = results[name]
        at10 = " | ".join(f"{r[10, c]:.4f}" for c in CS)
        at100 = " | ".join(f"{r[100, c]:.4f}" for c in CS)
        print(f"| {name} | {len(t):,} | {len(q):,} | {at10} | {r[10, 0]:.3f} | {at100} |")
    header = " | ".join(f"recall@{k}" for k in KS)
    print(f"\n| scope | rule for C | {header} |")
    print("| --- | --- |" + " --- |" * len(KS))
    for name in scopes:
        for label, rule in RULES.items():
            row = " | ".join(f"{results[name][k, rule(k)]:.4f}" for k in KS)
            print(f"| {name} | {label} | {row} |")


def centre(directory: Path, extra: int) -> None:
    from memlane.stores.codes import CodeFile

    data = embeddings(directory / "embeddings.npz")
    real = np.vstack(
        [t for t, _ in data.values()] + [distractors(directory / f"docstrings-{extra}.npy", extra)]
    )
    questions = np.vstack([q for _, q in data.values()])
    print("| vectors | C | plain | centred |\n| --- | --- | --- | --- |")
    for name, vectors in (
        (f"real ({len(real):,})", real),
        ("synthetic (200,000)", synthetic(real, 200_000)),
    ):
        vectors = vectors.astype(np.float32)
        exact = [set(np.argpartition(-(vectors @ q), 10)[:10].tolist()) for q in questions]
        for c in (100, 260):
            found = []
            for compact in (False, True):
                codes = CodeFile.open(None, vectors.shape[1])
                codes.append(np.arange(len(vectors)), vectors)
                if compact:
                    codes.compact()  # the centre: the live vectors' mean
                hits = 0
                for q, best in zip(questions, exact, strict=True):
                    rids, scores = codes.scored(q, c)
                    hits += len(best & set(rids[np.argsort(-scores)][:10].tolist()))
                found.append(hits / (10 * len(questions)))
            print(f"| {name} | {c} | {found[0]:.4f} | {found[1]:.4f} |")


# --- speed --------------------------------------------------------------------------------


def synthetic(real: np.ndarray, n: int, seed: int = 0, noise: float = 0.75) -> np.ndarray:
    """``n`` unit vectors: a random real vector plus Gaussian noise of norm ``noise``
    (about; isotropic), normalised. At 0.75 a synthetic vector sits at cosine ~0.8 from its
    source, so the set keeps the real vectors' directions (and their skewed sign bits)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        rows = real[rng.integers(0, len(real), stop - start)]
        rows = rows + rng.standard_normal(rows.shape, dtype=np.float32) * (
            noise / np.sqrt(real.shape[1])
        )
        out[start:stop] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out


def timed(call: Callable[[], object]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    call()
    return time.process_time() - cpu, time.perf_counter() - wall


def percentiles(samples: list[tuple[float, float]]) -> str:
    cpu = np.array([c for c, _ in samples]) * 1e3
    wall = np.array([w for _, w in samples]) * 1e3
    return (
        f"{np.percentile(cpu, 50):.2f} / {np.percentile(cpu, 95):.2f} | "
        f"{np.percentile(wall, 50):.2f} / {np.percentile(wall, 95):.2f}"
    )


def medians(samples: list[tuple[float, float]]) -> str:
    cpu, wall = (np.median([s[i] for s in samples]) * 1e3 for i in (0, 1))
    return f"{cpu:.0f} / {wall:.0f}"


def query_times(
    codes: Any, vectors: np.ndarray, queries: np.ndarray, cs: tuple[int, ...]
) -> dict[int, tuple[str, str]]:
    """C -> p50/p95 of candidates(q, C) alone and with the float32 rerank of its rows to a
    top 10. The C values take turns query by query, so a change in the machine's load
    falls on all of them alike."""
    samples: dict[int, tuple[list[tuple[float, float]], list[tuple[float, float]]]] = {
        c: ([], []) for c in cs
    }

    def both(q: np.ndarray, c: int) -> None:
        candidates = codes.candidates(q, c)
        scores = vectors[candidates] @ q
        candidates[np.argsort(-scores, kind="stable")[:10]]

    for q in queries:
        for c in cs:
            samples[c][0].append(timed(lambda q=q, c=c: codes.candidates(q, c)))
            samples[c][1].append(timed(lambda q=q, c=c: both(q, c)))
    return {c: (percentiles(scan), percentiles(full)) for c, (scan, full) in samples.items()}


def speed(directory: Path, n: int, queries: np.ndarray, real: np.ndarray, c: int) -> None:
    """One row set of the speed tables for ``n`` codes."""
    import faiss

    from memlane.stores.codes import CodeFile

    path = directory / f"speed-{n}.codes"
    path.unlink(missing_ok=True)
    vectors = synthetic(real, n)
    # The vectors a store's database would hold, by vid (here a vector's row).
    kept = vectors.astype(np.float16)
    codes = CodeFile.open(path, vectors.shape[1], vectors=lambda vids: kept[vids])
    batch = 1000
    cpu, wall = timed(
        lambda: [
            codes.append(
                np.arange(s, min(n, s + batch)),
                vectors[s : s + batch],
                np.arange(s, min(n, s + batch)),
            )
            for s in range(0, n, batch)
        ]
    )
    sync = timed(codes.sync)
    print(f"\n### {n:,} codes ({path.stat().st_size / 1e6:.1f} MB file)\n")
    print(
        f"- append in batches of {batch}: {n / cpu:,.0f} rows per CPU-s, "
        f"{n / wall:,.0f} per wall-s; sync {sync[1] * 1e3:.0f} ms wall"
    )
    one = [timed(lambda i=i: codes.append([n + i], vectors[i : i + 1], [i])) for i in range(200)]
    print(
        f"- append one new rid (above all others), CPU p50 / p95 | wall p50 / p95: "
        f"{percentiles(one)} ms"
    )
    again = [
        timed(lambda i=i: codes.append([i * 997 % n], vectors[i : i + 1], [i])) for i in range(200)
    ]
    print(
        f"- append one existing rid (an update: finds and kills its old row): "
        f"{percentiles(again)} ms"
    )
    codes.kill(np.arange(n, n + 200))
    codes.compact()
    print(
        "\n| state | scan: CPU p50 / p95 ms | wall p50 / p95 ms "
        "| scan + rerank: CPU p50 / p95 ms | wall p50 / p95 ms |"
    )
    print("| --- | --- | --- | --- | --- |")
    print(f"| bare faiss.knn_hamming, OpenMP 2 threads, k={c} | {bare_scan(codes, queries, c)} | |")
    calls = count_calls(faiss)
    for other, (scan, both) in query_times(codes, vectors, queries, (100, 200, 400, 800)).items():
        print(f"| 0 % dead, C={other} | {scan} | {both} |")
    rng = np.random.default_rng(1)
    dead = rng.choice(n, n // 10, replace=False)
    kill = timed(lambda: [codes.kill(part) for part in np.array_split(dead, 100)])
    ((scan, both),) = query_times(codes, vectors, queries, (c,)).values()
    print(f"| 10 % dead (dropped from memory), C={c} | {scan} | {both} |")
    survivors = np.setdiff1d(np.arange(n), dead)
    codes.kill(rng.choice(survivors, 1000, replace=False))  # kept in memory: under the limit
    ((scan, both),) = query_times(codes, vectors, queries, (c,)).values()
    print(f"| 10 % dead + 1,000 dead still in memory, C={c} | {scan} | {both} |")
    restore(faiss)
    print(
        f"\n- faiss scans per candidates call: {calls[0] / calls[1]:.3f} "
        "(above 1: a tie at the boundary ran past the spare rows)"
    )
    print(
        f"- kill 10 % ({len(dead):,} rows) in 100 calls: {kill[0]:.2f} s CPU, {kill[1]:.2f} s wall"
    )
    open_times(codes, path, vectors.shape[1])
    codes.close()
    path.unlink()


def bare_scan(codes: Any, queries: np.ndarray, k: int) -> str:
    """p50/p95 of faiss.knn_hamming over the codes with faiss's default OpenMP team (2
    threads here): why CodeFile scans with one."""
    import faiss

    from memlane.stores.codes import sign_codes

    base = codes._codes[: codes._size]
    samples = []
    for q in sign_codes(queries):
        faiss.omp_set_num_threads(2)
        samples.append(timed(lambda q=q: faiss.knn_hamming(q[None, :], base, k)))
    faiss.omp_set_num_threads(1)
    return percentiles(samples)


_ORIGINAL: dict[str, Any] = {}


def count_calls(faiss: Any) -> list[int]:
    """Count faiss.knn_hamming calls (index 0) and CodeFile.candidates calls (index 1)
    until :func:`restore`."""
    from memlane.stores.codes import CodeFile

    calls = [0, 0]
    scan, candidates = faiss.knn_hamming, CodeFile.candidates
    _ORIGINAL.update(scan=scan, candidates=candidates)

    def counted_scan(*args: Any, **kw: Any) -> Any:
        calls[0] += 1
        return scan(*args, **kw)

    def counted(self: CodeFile, query: np.ndarray, n: int) -> np.ndarray:
        calls[1] += 1
        return candidates(self, query, n)

    faiss.knn_hamming = counted_scan
    CodeFile.candidates = counted  # type: ignore[method-assign]
    return calls


def restore(faiss: Any) -> None:
    from memlane.stores.codes import CodeFile

    faiss.knn_hamming = _ORIGINAL["scan"]
    CodeFile.candidates = _ORIGINAL["candidates"]  # type: ignore[method-assign]


def open_times(codes: object, path: Path, dim: int) -> None:
    """Compact, then open the file warm (in the page cache) and cold-ish (its pages
    dropped from the cache with posix_fadvise)."""
    from memlane.stores.codes import CodeFile

    cpu, wall = timed(codes.compact)  # type: ignore[attr-defined]
    source = codes._floats.source  # type: ignore[attr-defined]
    print(f"- compact (10 % dead, rewrite + fsync + rename): {cpu:.2f} s CPU, {wall:.2f} s wall")
    warm = [timed(lambda: CodeFile.open(path, dim, vectors=source).close()) for _ in range(5)]
    cold = []
    for _ in range(5):
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
        cold.append(timed(lambda: CodeFile.open(path, dim, vectors=source).close()))
    print(f"- open, CPU / wall median ms: warm {medians(warm)}; cold-ish {medians(cold)}")


# --- lists --------------------------------------------------------------------------------

PROBES = (4, 8, 16, 32)
"""The PROBE_SHARE values tried (16 is memlane's)."""


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> list[set[int]]:
    """The rows of the exact float32 cosine top ``k`` for each query (vectors are unit)."""
    out: list[set[int]] = []
    for start in range(0, len(queries), 50):
        sims = queries[start : start + 50] @ vectors.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        out.extend(set(row.tolist()) for row in top)
    return out


def lists_table(name: str, vectors: np.ndarray, query_sets: dict[str, np.ndarray]) -> None:
    """Rows of the lists table for one vector set: the codes built as a compaction leaves
    them (centred, sorted into lists), then every query asked of the whole scan and of the
    lists at each PROBE_SHARE in turn, so a change in the machine's load falls on all."""
    from memlane.stores import codes as module

    codes = module.CodeFile.open(None, vectors.shape[1])
    began = time.perf_counter()
    for start in range(0, len(vectors), 10_000):
        codes.append(np.arange(start, min(len(vectors), start + 10_000)), vectors[start:][:10_000])
    codes.compact()  # the centre, and the lists (LISTS_AT is 1 here)
    lists = codes._lists
    assert lists is not None
    built = time.perf_counter() - began
    count = len(lists.centres)
    print(f"\n{name}: {count} lists, built (append + compact + k-means) in {built:.1f} s")
    grouped = codes._grouping()
    configs: list[tuple[str, int]] = [("whole scan", 0)] + [(f"1/{p}", p) for p in PROBES]
    ks = (10, 100)
    for label, queries in query_sets.items():
        exact = {k: exact_top(vectors, queries, k) for k in ks}
        hits = {(c, k): 0 for c, _ in configs for k in ks}
        share = dict.fromkeys((c for c, _ in configs), 0.0)
        times: dict[tuple[str, int], list[tuple[float, float]]] = {
            (c, k): [] for c, _ in configs for k in ks
        }
        for i, q in enumerate(queries):
            for config, probe in configs:
                codes._lists = lists if probe else None
                if probe:
                    module.PROBE_SHARE = probe
                    near = lists.nearest(q, max(1, count // probe))
                    rows = grouped.bounds[near + 1] - grouped.bounds[near]
                    share[config] += float(rows.sum()) / len(vectors)
                else:
                    share[config] += 1.0
                for k in ks:
                    cpu, wall = time.process_time(), time.perf_counter()
                    rids, scores = codes.scored(q, module.candidate_count(k))
                    times[config, k].append((time.process_time() - cpu, time.perf_counter() - wall))
                    top = rids[np.argsort(-scores, kind="stable")[:k]]
                    hits[config, k] += len(exact[k][i] & set(top.tolist()))
        module.PROBE_SHARE = 16
        codes._lists = lists
        n = len(queries)
        for config, _ in configs:
            recalls = " | ".join(f"{hits[config, k] / (k * n):.4f}" for k in ks)
            spent = " | ".join(percentiles(times[config, k]) for k in ks)
            print(
                f"| {name} | {label} ({n:,}) | {config} | {100 * share[config] / n:.1f} % "
                f"| {recalls} | {spent} |"
            )
    codes.close()


def lists_bench(directory: Path, extra: int, sizes: list[int], held_out: int) -> None:
    """Recall@10 and @100 of scored() (top C = candidate_count(k), then the top k by its
    exact scores) against exact float32 cosine, and its latency, with the lists and
    without, on the real vectors and on synthetic ones grown from them."""
    from memlane.stores import codes as module

    data = embeddings(directory / "embeddings.npz")
    real = np.vstack(
        [t for t, _ in data.values()] + [distractors(directory / f"docstrings-{extra}.npy", extra)]
    ).astype(np.float32)
    questions = np.vstack([q for _, q in data.values()]).astype(np.float32)
    module.LISTS_AT = 1  # lists at any size (memlane makes them from 262,144 live rows)
    print(
        f"real: {len(real):,} vectors (LoCoMo dev turns + docstring sentences), "
        f"{len(questions)} LoCoMo questions; held-out synthetic queries: {held_out} "
        "(grown from the real vectors with another seed)"
    )
    print(
        "\n| vectors | queries | scan | rows scanned (mean) | recall@10 | recall@100 "
        "| scored(q, 260) CPU p50 / p95 ms | wall p50 / p95 ms "
        "| scored(q, 800) CPU p50 / p95 ms | wall p50 / p95 ms |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    lists_table(f"real ({len(real):,})", real, {"LoCoMo questions": questions})
    held = synthetic(real, held_out, seed=1)
    for n in sizes:
        vectors = synthetic(real, n)
        lists_table(
            f"synthetic ({n:,})",
            vectors,
            {"LoCoMo questions": questions, "held-out synthetic": held},
        )
        del vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["recall", "speed", "centre", "lists"])
    parser.add_argument("--dir", type=Path, default=SCRATCH)
    parser.add_argument(
        "--extra",
        type=int,
        default=30_000,
        help="docstring sentences added to the pooled scope (recall)",
    )
    parser.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--c", type=int, default=200, help="candidates per query (speed)")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument(
        "--stored",
        choices=["float32", "float16", "int8"],
        default="float32",
        help="the form the reranked vectors are kept in (recall)",
    )
    parser.add_argument("--held-out", type=int, default=500, help="synthetic queries (lists)")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.what == "recall":
        recall(args.dir, args.extra, args.stored)
        return
    if args.what == "centre":
        centre(args.dir, args.extra)
        return
    if args.what == "lists":
        lists_bench(args.dir, args.extra, args.n, args.held_out)
        return
    data = embeddings(args.dir / "embeddings.npz")
    real = np.vstack([t for t, _ in data.values()])
    extra = args.dir / f"docstrings-{args.extra}.npy"
    if extra.exists():
        real = np.vstack([real, np.load(extra)])
    questions = np.vstack([q for _, q in data.values()])[: args.queries]
    print(
        f"synthetic vectors grown from {len(real):,} real ones; "
        f"{len(questions)} LoCoMo questions as queries"
    )
    for n in args.n:
        speed(args.dir, n, questions, real, args.c)
    for leftover in args.dir.glob("speed-*"):
        leftover.unlink()


if __name__ == "__main__":
    main()
