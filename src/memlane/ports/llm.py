"""The chat model seam: one request in, one answer out, with its cost.

memlane needs an LLM only for the memory manager (extraction, conflict decisions, LLM
summaries, merges). Everything else works without one. An adapter turns a
:class:`ChatRequest` into a call to some model and returns a :class:`ChatResponse`;
retries, timeouts and backoff belong to the adapter, schema validation and repair to the
core (:mod:`memlane.llm.structured`), so every adapter gets them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str  # system | user | assistant
    content: str


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One chat completion. With ``schema`` the answer must be a JSON object matching it."""

    messages: tuple[ChatMessage, ...]
    schema: Mapping[str, Any] | None = None
    schema_name: str = "answer"
    temperature: float = 0.0
    max_tokens: int | None = None
    operation: str = "chat"
    """What the call is for (``extract``, ``decide``, ``summarize`` ...), for accounting."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens and time spent; adds up across calls."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    retries: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.calls + other.calls,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.latency_ms + other.latency_ms,
            self.retries + other.retries,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "latency_ms": round(self.latency_ms, 3),
            "retries": self.retries,
        }


@dataclass(frozen=True, slots=True)
class ChatResponse:
    """The model's answer text (for tool-call adapters: the call's JSON arguments)."""

    content: str
    model: str
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None


@runtime_checkable
class LLM(Protocol):
    """A chat model. ``model_id`` names it in accounting and job records."""

    model_id: str

    def complete(self, request: ChatRequest) -> ChatResponse: ...

    async def acomplete(self, request: ChatRequest) -> ChatResponse: ...
