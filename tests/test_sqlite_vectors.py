"""SQLite's vectors on disk, in a table of their own in the order they came: float16 (under
1,000 bytes for 384 dimensions, key included) ranking as float32 vectors do; int8, the form
of a new database, at a byte a dimension; the migrations that converted float32 files in
place and moved the vectors apart."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memlane import Memory, MemoryInput
from memlane.models import Filters, content_hash, utcnow
from memlane.ports import store as ops
from memlane.stores.sqlite import MIGRATIONS, SqliteStore
from memlane.testing import FakeEmbedder

MODEL = "all-MiniLM-L6-v2"
MODEL_OF_FAKE = FakeEmbedder(dim=384).model_id


def _random_vectors(n: int, dim: int, seed: int) -> dict[str, Any]:
    """``n`` unit vectors keyed like the embedding cache (SHA-256 hex of a text)."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return {hashlib.sha256(str(i).encode()).hexdigest(): v for i, v in enumerate(vectors)}


def _vector_bytes_on_disk(path: Path) -> int:
    """Bytes of the pages holding the vectors and their keys, overflow pages included."""
    conn = sqlite3.connect(path)
    try:
        (size,) = conn.execute(
            "SELECT SUM(pgsize) FROM dbstat WHERE name IN ('embeddings', 'vectors')"
        ).fetchone()
    finally:
        conn.close()
    return int(size)


def _count(path: Path, table: str) -> int:
    conn = sqlite3.connect(path)
    try:
        (n,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    finally:
        conn.close()
    return int(n)


def test_a_384_dimension_vector_takes_at_most_2000_bytes_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    store = SqliteStore(path)
    vectors = _random_vectors(2000, 384, seed=1)
    items = list(vectors.items())
    for start in range(0, len(items), 250):  # in batches, as add_many writes them
        store.batch([ops.PutEmbeddings(MODEL, tuple(items[start : start + 250]))])
    store.close()
    assert _vector_bytes_on_disk(path) / len(vectors) <= 2000


def test_vectors_arriving_in_random_key_order_take_under_1000_bytes_each(
    tmp_path: Path,
) -> None:
    """Keyed by content hash, vectors arrive in random key order; kept in a table of their
    own, in the order they came, a 768-byte vector and its key take under 1,000 bytes
    (1,211 when the vectors sat in the table ordered by key: pages ~70 % full)."""
    path = tmp_path / "m.db"
    store = SqliteStore(path)
    items = list(_random_vectors(5000, 384, seed=11).items())
    for start in range(0, len(items), 250):
        store.batch([ops.PutEmbeddings(MODEL, tuple(items[start : start + 250]))])
    store.close()
    assert _vector_bytes_on_disk(path) / len(items) < 1000


def test_a_replaced_or_deleted_vector_leaves_no_row_behind(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    store = SqliteStore(path)
    first = _random_vectors(20, 384, seed=12)
    second = dict(zip(first, _random_vectors(20, 384, seed=13).values(), strict=True))
    store.batch([ops.PutEmbeddings(MODEL, tuple(first.items()))])
    store.batch([ops.PutEmbeddings(MODEL, tuple(second.items()))])  # replaces each
    # kept only where absent: these change nothing
    store.batch([ops.PutEmbeddings(MODEL, (), keep=tuple(first.items()))])
    (back,) = store.batch([ops.GetEmbeddings(MODEL, tuple(first))])
    assert all(float(back[h] @ v) > 0.9999 for h, v in second.items())
    assert _count(path, "vectors") == _count(path, "embeddings") == 20
    store.batch([ops.DropEmbeddings(keep="another-model")])
    store.close()
    assert _count(path, "vectors") == _count(path, "embeddings") == 0


def test_a_vid_is_never_given_twice(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    store = SqliteStore(path)
    a, b, c = _random_vectors(3, 384, seed=18).items()
    store.batch([ops.PutEmbeddings(MODEL, (a, b))])
    store.batch([ops.PutEmbeddings("another-model", (c,), staged=True)])  # the last vid
    store.batch([ops.DropEmbeddings(keep=MODEL)])
    store.batch([ops.PutEmbeddings(MODEL, (c,))])
    store.close()
    conn = sqlite3.connect(path)
    vids = dict(conn.execute("SELECT content_hash, vid FROM embeddings").fetchall())
    conn.close()
    assert vids == {a[0]: 1, b[0]: 2, c[0]: 4}


def test_forgetting_a_user_deletes_the_vectors_only_that_user_held(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    m = Memory(SqliteStore(path), embedder=FakeEmbedder(dim=384))
    m.add_many([MemoryInput(text=t) for t in _texts(30, seed=14, k=6)], user_id="a")
    shared = m.add("a text both users wrote", user_id="a")
    m.add_many([MemoryInput(text=t) for t in _texts(10, seed=15, k=6)], user_id="b")
    m.add("a text both users wrote", user_id="b")
    assert _count(path, "vectors") == 41
    m.forget_user("a")
    assert _count(path, "vectors") == _count(path, "embeddings") == 11
    hits = m.search("a text both users wrote", user_id="b", recipe="semantic", limit=1)
    assert hits[0].record.text == shared.text
    m.close()


def test_stored_vectors_round_trip_within_float16_rounding(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "m.db", vectors="float16")
    vectors = _random_vectors(50, 384, seed=2)
    store.batch([ops.PutEmbeddings(MODEL, tuple(vectors.items()))])
    (back,) = store.batch([ops.GetEmbeddings(MODEL, tuple(vectors))])
    store.close()
    assert back.keys() == vectors.keys()
    for h, v in vectors.items():
        assert back[h].dtype == np.float32 and back[h].shape == v.shape
        assert float(np.max(np.abs(back[h] - v))) < 5e-4
        assert abs(float(np.linalg.norm(back[h])) - 1.0) < 1e-6
        assert float(back[h] @ v) > 0.99999
    conn = sqlite3.connect(tmp_path / "m.db")
    lengths = {row[0] for row in conn.execute("SELECT length(vector) FROM vectors")}
    conn.close()
    assert lengths == {2 * 384}


WORDS = [f"word{i}" for i in range(120)]


def _texts(n: int, seed: int, k: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=k, replace=False)) for _ in range(n)]


def _semantic_ids(m: Memory, queries: list[str]) -> list[list[str]]:
    return [[h.record.id for h in m.search(q, user_id="u", recipe="semantic")] for q in queries]


def test_search_ranks_as_float32_vectors_do(tmp_path: Path) -> None:
    """Float16 storage leaves dense search's order what float32 cosines give (ties by id)."""
    embedder = FakeEmbedder(dim=384)
    texts, queries = _texts(300, seed=3, k=8), _texts(40, seed=4, k=3)
    m = Memory(f"sqlite:///{tmp_path}/m.db?vectors=float16", embedder=embedder)
    ids = [r.id for r in m.add_many([MemoryInput(text=t) for t in texts], user_id="u")]
    matrix = np.stack(embedder.embed(texts))
    for query in queries:
        sims = matrix @ embedder.embed([query])[0]
        expected = sorted(range(len(ids)), key=lambda i: (-sims[i], ids[i]))[:20]
        hits = m.search(query, user_id="u", limit=20, recipe="semantic")
        assert [h.record.id for h in hits] == [ids[i] for i in expected]
        vector = embedder.embed([query])[0]
        op = ops.VectorSearch("u", Filters(), utcnow(), MODEL_OF_FAKE, vector, 20, "content")
        (scored,) = m.store.batch([op])
        assert [rid for rid, _ in scored] == [ids[i] for i in expected]
        assert [s for _, s in scored] == pytest.approx([sims[i] for i in expected], abs=1e-3)
    m.close()


def test_migration_converts_float32_vectors_in_place(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    embedder = FakeEmbedder(dim=384)
    texts = _texts(400, seed=5, k=8)
    m = Memory(SqliteStore(path), embedder=embedder)
    m.add_many([MemoryInput(text=t) for t in texts], user_id="u")
    before = _semantic_ids(m, _texts(20, seed=6, k=3))
    m.close()
    _as_schema_7(
        path, {content_hash(t): v for t, v in zip(texts, embedder.embed(texts), strict=True)}
    )
    assert _vector_bytes_on_disk(path) / len(texts) > 2000  # one overflow page each

    m = Memory(SqliteStore(path), embedder=embedder)
    after = _semantic_ids(m, _texts(20, seed=6, k=3))
    m.close()
    assert after == before
    assert _vector_bytes_on_disk(path) / len(texts) <= 2000
    conn = sqlite3.connect(path)
    assert {row[0] for row in conn.execute("SELECT length(vector) FROM vectors")} == {768}
    with pytest.raises(sqlite3.IntegrityError, match="upgrade"):  # a float32 row from old code
        conn.execute(
            "INSERT INTO embeddings VALUES ('m', 'h', 384, ?)", (np.zeros(384, "<f4").tobytes(),)
        )
    conn.close()


def test_migration_moves_the_vectors_into_a_table_of_their_own(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    embedder = FakeEmbedder(dim=384)
    texts = _texts(300, seed=16, k=8)
    m = Memory(SqliteStore(path), embedder=embedder)
    m.add_many([MemoryInput(text=t) for t in texts], user_id="u")
    queries = _texts(20, seed=17, k=3)
    before = _semantic_ids(m, queries)
    hashes = tuple(content_hash(t) for t in texts)
    (vectors,) = m.store.batch([ops.GetEmbeddings(MODEL_OF_FAKE, hashes)])
    m.close()
    _as_schema_14(path)
    assert _count(path, "embeddings") == 300

    m = Memory(SqliteStore(path), embedder=embedder)
    after = _semantic_ids(m, queries)
    (moved,) = m.store.batch([ops.GetEmbeddings(MODEL_OF_FAKE, hashes)])
    m.add("one more text", user_id="u")
    m.close()
    assert after == before
    assert moved.keys() == vectors.keys()
    assert all(np.array_equal(moved[h], vectors[h]) for h in hashes)
    assert _count(path, "vectors") == _count(path, "embeddings") == 301
    conn = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError, match="upgrade"):  # a vector from old code
        conn.execute(
            "INSERT INTO embeddings VALUES ('m', 'h', 384, ?)", (np.zeros(384, "<f2").tobytes(),)
        )
    conn.close()


def _as_schema_14(path: Path) -> None:
    """Turn a file back into what memlane wrote before migration 15: each vector in the
    row of its key."""
    (apart,) = [v for v, name, _ in MIGRATIONS if "table of their own" in name]
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE old_embeddings (
            model TEXT NOT NULL, content_hash TEXT NOT NULL, dim INTEGER NOT NULL,
            vector BLOB NOT NULL, PRIMARY KEY (model, content_hash)
        ) WITHOUT ROWID;
        INSERT INTO old_embeddings
            SELECT e.model, e.content_hash, e.dim, v.vector FROM embeddings e
            JOIN vectors v ON v.vid = e.vid;
        DROP TABLE embeddings;
        DROP TABLE vectors;
        ALTER TABLE old_embeddings RENAME TO embeddings;
        """
    )
    conn.execute("DELETE FROM schema_migrations WHERE version = ?", (apart,))
    conn.commit()
    conn.close()
    # Its folder was of an older format (rebuilt when opened): none names a vid yet.
    shutil.rmtree(f"{path}.index", ignore_errors=True)


def _as_schema_7(path: Path, vectors: dict[str, Any]) -> None:
    """Turn a file back into what memlane wrote before migration 8: float32 vectors."""
    (half,) = [v for v, name, _ in MIGRATIONS if "float16" in name]
    _as_schema_14(path)
    conn = sqlite3.connect(path)
    conn.executemany(
        "UPDATE embeddings SET vector = ? WHERE model = ? AND content_hash = ?",
        [(np.asarray(v, "<f4").tobytes(), MODEL_OF_FAKE, h) for h, v in vectors.items()],
    )
    conn.execute("DELETE FROM schema_migrations WHERE version = ?", (half,))
    conn.commit()
    conn.close()


def test_context_search_uses_a_records_context_vector_where_it_has_one(tmp_path: Path) -> None:
    """The context codes hold only records with a context vector; a ``context`` search
    still scores every other record by its own vector, as the in-memory store does."""
    from memlane import CoreConfig
    from memlane.core.search import SearchRecipe

    recipe = SearchRecipe("ctx", {"context": 1.0}, neighbor_weight=0.0, time_weight=0.0)
    config = CoreConfig(context_window=2)
    facts = _texts(60, seed=7, k=6)
    turns = _texts(40, seed=8, k=5)
    answers = []
    for url in (f"sqlite:///{tmp_path}/m.db?vectors=float16", "memory://"):
        m = Memory(url, embedder=FakeEmbedder(dim=384), config=config)
        m.add_many([MemoryInput(text=t) for t in facts], user_id="u")
        for s in range(4):
            batch = turns[s * 10 : (s + 1) * 10]
            m.add_messages(f"s{s}", [("user", t) for t in batch], user_id="u")
        answers.append(
            [
                {
                    h.record.text: round(h.score, 4)
                    for h in m.search(q, user_id="u", limit=100, recipe=recipe)
                }
                for q in _texts(25, seed=9, k=3)
            ]
        )
        m.close()
    sqlite_answers, memory_answers = answers
    for on_sqlite, in_memory in zip(sqlite_answers, memory_answers, strict=True):
        assert on_sqlite.keys() == in_memory.keys()  # every record, each once
        assert on_sqlite == {t: pytest.approx(s, abs=2e-3) for t, s in in_memory.items()}
    found = [text for hits in sqlite_answers for text, score in hits.items() if score > 0]
    assert set(found) & set(turns) and set(found) & set(facts)
    folder = next((tmp_path / "m.db.index").glob("*/"))
    from memlane.stores.codes import code_header_bytes

    rows = (folder / "codes-context.bin").stat().st_size - code_header_bytes(384)
    assert rows == 40 * (8 + 384 // 8)  # the turns only: facts have no context vector


# ---------------------------------------------------------------------------- int8


def _lengths(path: Path) -> dict[int, int]:
    """How many stored vectors have each length in bytes."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT length(vector), count(*) FROM vectors GROUP BY 1").fetchall()
    finally:
        conn.close()
    return dict(rows)


def test_int8_vectors_take_a_byte_a_dimension_and_read_back_at_unit_length(
    tmp_path: Path,
) -> None:
    path = tmp_path / "m.db"
    store = SqliteStore(path, vectors="int8")
    vectors = _random_vectors(2000, 384, seed=21)
    items = list(vectors.items())
    for start in range(0, len(items), 250):
        store.batch([ops.PutEmbeddings(MODEL, tuple(items[start : start + 250]))])
    (back,) = store.batch([ops.GetEmbeddings(MODEL, tuple(vectors))])
    store.close()
    assert _lengths(path) == {384: 2000}
    # a 384-byte vector and its key: ten to a 4 KiB page (float16: under 1,000 bytes)
    assert _vector_bytes_on_disk(path) / len(items) < 560
    for h, v in vectors.items():
        assert back[h].dtype == np.float32 and back[h].shape == v.shape
        assert abs(float(np.linalg.norm(back[h])) - 1.0) < 1e-6
        assert float(back[h] @ v) > 0.9995


def test_int8_search_finds_what_float32_vectors_find(tmp_path: Path) -> None:
    """Rounded to a byte a dimension, the nearest ten are still (nearly all) the nearest
    ten of the float32 vectors, through the codes and their rerank and through a matrix."""
    embedder = FakeEmbedder(dim=384)
    texts, queries = _texts(400, seed=22, k=8), _texts(40, seed=23, k=3)
    m = Memory(SqliteStore(tmp_path / "m.db", vectors="int8"), embedder=embedder)
    ids = [r.id for r in m.add_many([MemoryInput(text=t) for t in texts], user_id="u")]
    matrix = np.stack(embedder.embed(texts))
    overlap = []
    for query in queries:
        vector = embedder.embed([query])[0]
        sims = matrix @ vector
        expected = {ids[i] for i in np.argsort(-sims, kind="stable")[:10]}
        hits = m.search(query, user_id="u", limit=10, recipe="semantic")
        op = ops.VectorSearch("u", Filters(), utcnow(), MODEL_OF_FAKE, vector, 10, "content")
        (scored,) = m.store.batch([op])
        assert [s for _, s in scored] == pytest.approx(
            [float(sims[ids.index(rid)]) for rid, _ in scored], abs=3e-3
        )
        overlap.append(len(expected & {h.record.id for h in hits}) / 10)
        overlap.append(len(expected & {rid for rid, _ in scored}) / 10)
    m.close()
    assert float(np.mean(overlap)) >= 0.97
    assert _lengths(tmp_path / "m.db") == {384: 400}


def test_the_vector_form_is_recorded_and_both_forms_are_read(tmp_path: Path) -> None:
    """The form given is recorded and kept by an open that gives none; changed, new
    vectors take the new form while the old keep theirs, and search (the index folder
    rebuilt from the file too) reads both."""
    path = tmp_path / "m.db"
    embedder = FakeEmbedder(dim=384)
    first, second, third = _texts(30, seed=24, k=6), _texts(30, seed=25, k=6), _texts(30, 26, 6)
    with Memory(SqliteStore(path, vectors="int8"), embedder=embedder) as m:
        m.add_many([MemoryInput(text=t) for t in first], user_id="u")
    with Memory(SqliteStore(path), embedder=embedder) as m:  # int8, as recorded
        m.add_many([MemoryInput(text=t) for t in second], user_id="u")
    assert _lengths(path) == {384: 60}
    with Memory(f"sqlite:///{path}?vectors=float16", embedder=embedder) as m:
        m.add_many([MemoryInput(text=t) for t in third], user_id="u")
        before = {t: m.search(t, user_id="u", limit=3, recipe="semantic") for t in first[:5]}
        before |= {t: m.search(t, user_id="u", limit=3, recipe="semantic") for t in third[:5]}
    assert _lengths(path) == {384: 60, 768: 30}
    shutil.rmtree(Path(f"{path}.index"))  # rebuilt from the file's two forms
    with Memory(SqliteStore(path), embedder=embedder) as m:
        for text, hits in before.items():
            again = m.search(text, user_id="u", limit=3, recipe="semantic")
            assert again[0].record.text == text
            assert [h.record.id for h in again] == [h.record.id for h in hits]
        m.add("one more", user_id="u")
    assert _lengths(path) == {384: 60, 768: 31}  # float16 now recorded


def _recorded_form(path: Path) -> str | None:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT value FROM memlane_meta WHERE key = 'vector_form'").fetchone()
    finally:
        conn.close()
    return None if row is None else str(row[0])


def test_a_new_database_keeps_int8_vectors_unless_asked_otherwise(tmp_path: Path) -> None:
    embedder = FakeEmbedder(dim=384)
    texts = _texts(20, seed=27, k=6)
    for name, url in [("a.db", "sqlite:///{}"), ("b.db", "{}")]:  # a URL, a plain path
        path = tmp_path / name
        with Memory(url.format(path), embedder=embedder) as m:
            m.add_many([MemoryInput(text=t) for t in texts], user_id="u")
        assert _recorded_form(path) == "int8" and _lengths(path) == {384: 20}
    path = tmp_path / "c.db"
    with Memory(SqliteStore(path, vectors="float16"), embedder=embedder) as m:
        m.add_many([MemoryInput(text=t) for t in texts], user_id="u")
    with Memory(SqliteStore(path), embedder=embedder) as m:  # float16, as recorded
        m.add("one more", user_id="u")
    assert _recorded_form(path) == "float16" and _lengths(path) == {768: 21}
    memory = SqliteStore(":memory:")
    memory.batch([ops.PutEmbeddings(MODEL, tuple(_random_vectors(3, 384, seed=28).items()))])
    (lengths,) = memory._connection().execute("SELECT DISTINCT length(vector) FROM vectors")
    memory.close()
    assert lengths == (384,)


def test_a_database_from_before_the_form_was_recorded_keeps_float16(tmp_path: Path) -> None:
    """Every vector of a file made before the form was recorded is float16, and so are
    the ones written after: opening it never changes the form it writes."""
    path = tmp_path / "m.db"
    embedder = FakeEmbedder(dim=384)
    with Memory(SqliteStore(path, vectors="float16"), embedder=embedder) as m:
        m.add_many([MemoryInput(text=t) for t in _texts(10, seed=29, k=6)], user_id="u")
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM memlane_meta WHERE key = 'vector_form'")
    conn.commit()
    conn.close()
    for _ in range(2):
        with Memory(SqliteStore(path), embedder=embedder) as m:
            m.add(f"written after {_}", user_id="u")
            assert m.search("written after", user_id="u", recipe="semantic")
    assert _recorded_form(path) is None and _lengths(path) == {768: 12}


@pytest.mark.parametrize("form", ["int4", "float32", "", "INT8"])
def test_an_unknown_vector_form_is_refused_before_any_file_is_made(
    tmp_path: Path, form: str
) -> None:
    from memlane.errors import ConfigurationError, UnsupportedError

    with pytest.raises(ConfigurationError, match="vectors="):
        SqliteStore(tmp_path / "m.db", vectors=form)
    with pytest.raises(ConfigurationError, match="vectors="):
        Memory(f"sqlite:///{tmp_path}/m.db?vectors={form}", embedder=FakeEmbedder())
    for url in (f"sqlite:///{tmp_path}/m.db?form=int8", f"sqlite:///{tmp_path}/m.db?vectors"):
        with pytest.raises(UnsupportedError, match="option"):
            Memory(url, embedder=FakeEmbedder())
    assert list(tmp_path.iterdir()) == []


def test_a_vector_of_another_size_under_the_model_is_never_scored(tmp_path: Path) -> None:
    """An embedder that keeps one model name for two sizes: an 8-d float16 vector has
    a 16-d int8 vector's length, and must not be read as one (the codes and their
    rerank, like the exact scan, leave it out of a 16-d search)."""
    url = f"sqlite:///{tmp_path}/m.db"
    texts = ["apples and pears", "the cat sat", "london weather", "python code", "green tea"]
    with Memory(url, embedder=FakeEmbedder(16, model_id="m")) as m:
        for text in texts:
            m.add(text, user_id="u")
    with Memory(url, embedder=FakeEmbedder(8, model_id="m")) as m:
        m.add("zebra crossing", user_id="u")
    with Memory(url, embedder=FakeEmbedder(16, model_id="m")) as m:
        hits = m.search("green tea", user_id="u", limit=10, recipe="semantic")
        (missing, ghosts) = m.store._sidecar.check(m.store._conn, "u")  # type: ignore[attr-defined]
    assert sorted(h.record.text for h in hits) == sorted(texts)
    assert missing == ghosts == set()


def test_a_float16_store_converted_to_int8_searches_as_before(tmp_path: Path) -> None:
    """Every vector rewritten at a byte a dimension, the form recorded (later writes and
    opens take it), search's nearest ten nearly all kept; run again, nothing to do."""
    path = tmp_path / "m.db"
    embedder = FakeEmbedder(dim=384)
    texts, queries = _texts(300, seed=31, k=8), _texts(30, seed=32, k=3)
    m = Memory(SqliteStore(path, vectors="float16"), embedder=embedder)
    m.add_many([MemoryInput(text=t) for t in texts], user_id="u")
    before = _semantic_ids(m, queries)
    assert _lengths(path) == {768: 300}
    seen: list[int] = []
    store = m.store
    assert isinstance(store, SqliteStore)
    assert store.convert_vectors("int8", progress=seen.append, chunk=128) == 300
    assert seen == [128, 128, 44] and _lengths(path) == {384: 300}
    after = _semantic_ids(m, queries)  # the matrix read before is not used again
    overlap = [len(set(a) & set(b)) / len(a) for a, b in zip(before, after, strict=True)]
    assert float(np.mean(overlap)) >= 0.97
    m.add("one more note", user_id="u")
    assert store.convert_vectors("int8") == 0
    m.close()
    assert _recorded_form(path) == "int8" and _lengths(path) == {384: 301}
    with Memory(SqliteStore(path), embedder=embedder) as again:
        again.add("and another", user_id="u")
        assert _semantic_ids(again, queries[:3]) == after[:3]
    assert _lengths(path) == {384: 302}
    back = SqliteStore(path)
    assert back.convert_vectors("float16") == 302
    back.close()
    assert _recorded_form(path) == "float16" and _lengths(path) == {768: 302}


def test_converting_to_an_unknown_form_changes_nothing(tmp_path: Path) -> None:
    from memlane.errors import ConfigurationError

    path = tmp_path / "m.db"
    with Memory(SqliteStore(path), embedder=FakeEmbedder(dim=384)) as m:
        m.add("I'm vegetarian", user_id="u")
        store = m.store
        assert isinstance(store, SqliteStore)
        with pytest.raises(ConfigurationError, match="vectors="):
            store.convert_vectors("int4")
    assert _recorded_form(path) == "int8" and _lengths(path) == {384: 1}


def test_the_cli_converts_a_stores_vectors(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from memlane.cli import cli

    path = tmp_path / "m.db"
    with Memory(SqliteStore(path, vectors="float16"), embedder=FakeEmbedder()) as m:
        m.add_many([MemoryInput(text=t) for t in _texts(20, seed=33, k=5)], user_id="u")
    result = CliRunner().invoke(
        cli, ["--store", f"sqlite:///{path}", "convert-vectors", "int8", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"vectors": 20, "rewritten": 20}
    assert _recorded_form(path) == "int8" and _lengths(path) == {256: 20}
    again = CliRunner().invoke(cli, ["--store", f"sqlite:///{path}", "convert-vectors", "int8"])
    assert again.exit_code == 0 and "0 of 20 vectors rewritten as int8" in again.output
    elsewhere = "postgresql://u@127.0.0.1:1/db"  # refused before any connection
    other = CliRunner().invoke(cli, ["--store", elsewhere, "convert-vectors", "int8"])
    assert other.exit_code != 0 and "only a SQLite store" in other.output
    gone = CliRunner().invoke(
        cli, ["--store", f"sqlite:///{tmp_path}/none.db", "convert-vectors", "int8"]
    )
    assert gone.exit_code != 0 and not (tmp_path / "none.db").exists()


def test_vectors_rounded_together_are_rounded_as_one_by_one() -> None:
    from memlane.stores.vector_cache import to_blob, to_blobs

    rng = np.random.default_rng(34)
    vectors = list(rng.standard_normal((50, 64)).astype(np.float32))
    vectors[3] = np.zeros(64, dtype=np.float32)
    vectors[7] = np.full(64, np.inf, dtype=np.float32)  # int8 cannot hold it: float16
    vectors[9] = vectors[9] * 1e-30  # tiny, still rounded against its own peak
    for form in ("int8", "float16"):
        assert to_blobs(vectors, form) == [to_blob(v, form) for v in vectors]
    assert len(to_blobs(vectors, "int8")[7]) == 128 and to_blobs([], "int8") == []
    mixed = [vectors[0], vectors[1][:32]]
    assert to_blobs(mixed, "int8") == [to_blob(v, "int8") for v in mixed]
    with pytest.raises(ValueError, match="form"):
        to_blobs(vectors, "int4")
