"""Deterministic stand-ins for the clock and the chat model. The fake embedder lives in
:mod:`memlane.embedders.fake` (the ``fake`` embedder spec) and is re-exported here."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from memlane.embedders.fake import FakeEmbedder
from memlane.errors import LLMError
from memlane.ports.llm import ChatRequest, ChatResponse, Usage

__all__ = ["CannedLLM", "FakeEmbedder", "FixedClock"]


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
