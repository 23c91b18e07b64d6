"""Deterministic stand-ins for the embedding model and the clock."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np

from memlane.errors import EmbeddingError, LLMError
from memlane.ports.embedder import Vector
from memlane.ports.llm import ChatRequest, ChatResponse, Usage
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


class FixedClock:
    """A clock that stands still until moved: ``clock.advance(days=1)``."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


class CannedLLM:
    """A chat model that answers from a list, in order: for unit-testing decision logic
    without a server. Each answer is a string, or an object sent as its JSON text.
    ``requests`` keeps what was asked. Raises LLMError when it runs out of answers."""

    def __init__(self, *answers: object, model_id: str = "canned") -> None:
        self.answers = list(answers)
        self.requests: list[ChatRequest] = []
        self.model_id = model_id

    def complete(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        if not self.answers:
            raise LLMError("the canned model has no answer left")
        answer = self.answers.pop(0)
        text = answer if isinstance(answer, str) else json.dumps(answer)
        return ChatResponse(text, self.model_id, Usage(calls=1, completion_tokens=len(text) // 4))

    async def acomplete(self, request: ChatRequest) -> ChatResponse:
        await asyncio.sleep(0)
        return self.complete(request)
