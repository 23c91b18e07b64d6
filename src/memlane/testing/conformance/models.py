"""Store conformance, embedding models: unit vectors, model records and re-embedding."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from memlane.api import AsyncMemory, Memory
from memlane.core.base import CoreConfig, MemoryInput
from memlane.core.search import SearchRecipe
from memlane.errors import (
    EmbeddingError,
    EmbeddingModelMismatchError,
)
from memlane.ports import store as ops
from memlane.ports.embedder import Vector
from memlane.testing.conformance._base import ConformanceBase, _raises
from memlane.testing.fakes import FakeEmbedder, FixedClock


class ModelsConformance(ConformanceBase):
    """Conformance tests of embedding models."""

    # ------------------------------------------------------------------ embedding models

    def test_a_store_refuses_vectors_of_another_model(self) -> None:
        m, _, _ = self._memory()
        assert m.store.batch([ops.GetEmbeddingModel()]) == [None]
        m.search("nothing yet", user_id="u")  # searching an empty store records nothing
        assert m.store.batch([ops.GetEmbeddingModel()]) == [None]
        m.add("the cat sat on the mat", user_id="u")
        assert m.store.batch([ops.GetEmbeddingModel()]) == [("fake-bow-256", 256)]
        other = Memory(m.store, embedder=FakeEmbedder(64, model_id="fake-bow-64"))
        for attempt in (
            lambda: other.search("cat", user_id="u"),
            lambda: other.add("a dog sat on the rug", user_id="u"),
            lambda: asyncio.run(
                AsyncMemory(m.store, embedder=other.embedder).search("cat", user_id="u")
            ),
        ):
            try:
                attempt()
            except EmbeddingModelMismatchError as exc:
                assert "fake-bow-256" in str(exc) and "fake-bow-64" in str(exc)
                assert "memlane reembed" in str(exc)
            else:
                raise AssertionError("EmbeddingModelMismatchError was not raised")
        assert [r.text for r in m.list(user_id="u").items] == ["the cat sat on the mat"]
        assert m.search("cat", user_id="u")  # the store's own model still works
        m.close()

    def test_a_store_without_a_record_adopts_the_model_of_its_vectors(self) -> None:
        store = self.make_store()
        older = FakeEmbedder(64, model_id="older-64")
        vector = older.embed(["old words"])[0]
        store.setup()
        store.batch([ops.PutEmbeddings("older-64", (("h-old", vector),))])  # before records
        assert store.batch([ops.GetEmbeddingModel()]) == [("older-64", 64)]
        m, _, _ = self._memory(store)
        with _raises(EmbeddingModelMismatchError):
            m.add("new words", user_id="u")
        adopted = Memory(store, embedder=older)
        adopted.add("new words", user_id="u")
        assert adopted.search("new words", user_id="u", recipe="semantic")
        with _raises(EmbeddingModelMismatchError):
            m.search("new words", user_id="u")
        store.close()

    def _reembed_fixture(self, n: int) -> tuple[Memory, list[str]]:
        m = Memory(
            self.make_store(),
            embedder=FakeEmbedder(),
            clock=FixedClock(),
            config=CoreConfig(context_window=2),
        )
        m.add_messages(
            "s1",
            [("user", "What did you name the new puppy?"), ("assistant", "Biscuit!")],
            user_id="u",
        )
        m.add_many(
            [MemoryInput(text=f"note {i} about topic {i % 7}") for i in range(n)], user_id="u"
        )
        gone = m.add("tea is gone", user_id="w")
        m.delete(gone.id, user_id="w")
        texts = [r.text for r in m.list(user_id="u", limit=1000).items]
        return m, texts

    def test_reembed_moves_the_store_to_another_model(self) -> None:
        m, _ = self._reembed_fixture(5)
        before = [h.record.id for h in m.search("note 3 topic", user_id="u", recipe="semantic")]
        target = FakeEmbedder(64, model_id="fake-bow-64")
        moved = Memory(m.store, embedder=target)  # no context window of its own
        with _raises(EmbeddingModelMismatchError):
            moved.search("note 3", user_id="u")
        seen: list[int] = []
        counts = moved.reembed(progress=seen.append)
        # 2 episodes + 5 notes + the deleted one; both episodes' contexts rebuilt
        assert counts == {"memories": 8, "contexts": 2, "embedded": 10, "removed": 10}
        assert sum(seen) == 10
        assert m.store.batch([ops.GetEmbeddingModel()]) == [("fake-bow-64", 64)]
        hashes = tuple(r.content_hash for r in m.list(user_id="u", limit=1000).items)
        assert m.store.batch([ops.GetEmbeddings("fake-bow-256", hashes)]) == [{}]
        after = [h.record.id for h in moved.search("note 3 topic", user_id="u", recipe="semantic")]
        assert after and after[0] == before[0]
        only_context = SearchRecipe("ctx", {"context": 1.0}, time_weight=0.0)
        hits = moved.search("puppy name", user_id="u", recipe=only_context, limit=2)
        assert "Biscuit!" in [h.record.text for h in hits]
        with _raises(EmbeddingModelMismatchError):
            m.search("note 3", user_id="u")
        again = moved.reembed()
        assert again == {"memories": 8, "contexts": 2, "embedded": 0, "removed": 0}
        m.close()

    def test_an_interrupted_reembed_changes_nothing_and_resumes(self) -> None:
        m, _ = self._reembed_fixture(300)

        class Interrupted(FakeEmbedder):
            def embed(self, texts: Sequence[str]) -> list[Vector]:
                if self.calls:  # the second batch fails
                    raise EmbeddingError("interrupted")
                return super().embed(texts)

        broken = Interrupted(64, model_id="fake-bow-64")
        with _raises(EmbeddingError):
            Memory(m.store, embedder=broken, config=CoreConfig(context_window=1)).reembed()
        assert broken.calls == 256  # one batch written
        assert m.search("note 3 topic", user_id="u", recipe="semantic")  # still the old model
        target = FakeEmbedder(64, model_id="fake-bow-64")
        moved = Memory(m.store, embedder=target, config=CoreConfig(context_window=1))
        counts = moved.reembed()
        assert counts["embedded"] == 305 - 256 and target.calls == 305 - 256
        assert counts["removed"] == 305
        hits = moved.search("note 3 topic", user_id="u", recipe="semantic")
        assert hits and hits[0].record.text.startswith("note 3 ")
        m.close()
