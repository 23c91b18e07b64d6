"""Conformance: the sparse terms a store keeps beside each text's vector
(:mod:`memlane.ports.sparse`): kept by model and content hash, first writer wins, read
by hash and by a user's record ids, never across users, pruned with the texts. Terms
are written beside a vector of the text (a store may key them by it: SQLite does). A
store that keeps none (an encrypted one: the terms are the text's words) sets
``keeps_sparse_terms = False`` and must then return none."""

from __future__ import annotations

import numpy as np

from memlane.ports import store as ops
from memlane.testing.conformance._base import ConformanceBase

_MODEL = "terms-test"


def _vectors(*hashes: str) -> tuple[tuple[str, np.ndarray], ...]:
    return tuple((h, np.full(4, i + 1.0, dtype=np.float32)) for i, h in enumerate(hashes))


class SparseConformance(ConformanceBase):
    keeps_sparse_terms = True

    def _kept(self, expected: dict[str, bytes]) -> dict[str, bytes]:
        return expected if self.keeps_sparse_terms else {}

    def test_sparse_terms_are_kept_by_hash_first_writer_wins(self) -> None:
        store = self.make_store()
        store.setup()
        store.batch(
            [
                ops.PutEmbeddings(
                    "m", _vectors("h1"), sparse_model=_MODEL, sparse=(("h1", b"\x01\x00\x00<"),)
                )
            ]
        )
        store.batch(
            [
                ops.PutEmbeddings(
                    "m",
                    (),
                    _vectors("h1", "h2"),  # h1's is kept, h2's is new
                    sparse_model=_MODEL,
                    sparse=(("h1", b"\x02\x00\x00<"), ("h2", b"\x03\x00\x00<")),
                )
            ]
        )
        (found,) = store.batch([ops.GetSparse(_MODEL, ("h1", "h2", "h3"), "m")])
        assert found == self._kept({"h1": b"\x01\x00\x00<", "h2": b"\x03\x00\x00<"})
        (other,) = store.batch([ops.GetSparse("another-model", ("h1", "h2"), "m")])
        assert other == {}
        store.close()

    def test_sparse_terms_of_a_users_records_and_no_other_users(self) -> None:
        m, _, _ = self._memory()
        mine = m.add("the cat sleeps on the sofa", user_id="u")
        theirs = m.add("the cat sleeps on the sofa", user_id="v")  # same text, same hash
        other = m.add("rain all week", user_id="u")
        vectors = m.core.model_id  # the text's vector is of the memory's embedder
        m.store.batch(
            [
                ops.PutEmbeddings(
                    vectors,
                    (),
                    sparse_model=_MODEL,
                    sparse=((mine.content_hash, b"\x05\x00\x00<"),),
                )
            ]
        )
        ids = (mine.id, theirs.id, other.id, "no-such-id")
        (found,) = m.store.batch([ops.SparseOf("u", _MODEL, ids, vectors)])
        assert found == self._kept({mine.id: b"\x05\x00\x00<"})  # theirs is v's; other: none
        (found_v,) = m.store.batch([ops.SparseOf("v", _MODEL, ids)])  # the store's model
        assert found_v == self._kept({theirs.id: b"\x05\x00\x00<"})
        m.close()

    def test_sparse_terms_of_texts_no_record_holds_are_pruned(self) -> None:
        m, _, _ = self._memory()
        kept = m.add("kept words", user_id="u")
        gone = m.add("forgotten words", user_id="w")
        vectors = m.core.model_id
        m.store.batch(
            [
                ops.PutEmbeddings(
                    vectors,
                    (),
                    (("never-a-record", m.embedder.embed(["never a record"])[0]),),
                    sparse_model=_MODEL,
                    sparse=(
                        (kept.content_hash, b"\x01\x00\x00<"),
                        (gone.content_hash, b"\x02\x00\x00<"),
                        ("never-a-record", b"\x03\x00\x00<"),
                    ),
                )
            ]
        )
        hashes = (kept.content_hash, gone.content_hash, "never-a-record")
        (before,) = m.store.batch([ops.GetSparse(_MODEL, hashes, vectors)])
        written = (b"\x01\x00\x00<", b"\x02\x00\x00<", b"\x03\x00\x00<")
        assert before == self._kept(dict(zip(hashes, written, strict=True)))
        m.forget_user("w")
        m.store.batch([ops.PruneEmbeddings()])
        (found,) = m.store.batch([ops.GetSparse(_MODEL, hashes, vectors)])
        assert found == self._kept({kept.content_hash: b"\x01\x00\x00<"})
        m.close()
