"""A deterministic stand-in for the embedding model: the ``fake`` and ``fake:DIM`` embedder
specs (:mod:`memlane.embedders.spec`). Also exported as :class:`memlane.testing.FakeEmbedder`."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence

import numpy as np

from memlane.errors import EmbeddingError
from memlane.ports.embedder import Vector
from memlane.text import STOPWORDS, tokenize


class FakeEmbedder:
    """Hashed bag of words: texts sharing words get similar vectors. No model, no I/O.

    ``calls`` counts the texts embedded, so tests can prove the cache works.
    """

    def __init__(self, dim: int = 256, *, model_id: str = "fake-bow-256") -> None:
        self.dim = dim
        self.model_id = model_id
        self.batch_size = 64
        self.calls = 0
        self.fail = False

    def _vector(self, text: str) -> Vector:
        v = np.zeros(self.dim, dtype=np.float32)
        words = [w for w in tokenize(text) if w not in STOPWORDS] or tokenize(text) or [text]
        for word in words:
            digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
            v[int.from_bytes(digest[:4], "big") % self.dim] += 1.0
        return v / float(np.linalg.norm(v))

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        if self.fail:
            raise EmbeddingError("fake embedder told to fail")
        self.calls += len(texts)
        return [self._vector(t) for t in texts]

    async def aembed(self, texts: Sequence[str]) -> list[Vector]:
        await asyncio.sleep(0)
        return self.embed(texts)
