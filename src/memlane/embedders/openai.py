"""Embeddings from any OpenAI-compatible ``/embeddings`` endpoint (OpenAI, Ollama, vLLM,
llama.cpp server, LiteLLM ...).

Request building and response parsing are pure functions; the sync and async drivers
only move bytes and apply the same retry policy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator, Mapping, Sequence
from typing import Any

import httpx
import numpy as np

from memlane.errors import EmbeddingError
from memlane.ports.embedder import Vector

_Step = tuple[str, Any]

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


def build_request(model: str, texts: Sequence[str]) -> dict[str, Any]:
    return {"model": model, "input": list(texts), "encoding_format": "float"}


def parse_response(payload: Any, expected: int) -> list[Vector]:
    """Vectors in input order, L2-normalized. Raises EmbeddingError on a bad payload."""
    try:
        items = sorted(payload["data"], key=lambda item: item["index"])
        vectors = [np.asarray(item["embedding"], dtype=np.float32) for item in items]
    except (KeyError, TypeError, ValueError) as exc:
        raise EmbeddingError(f"malformed embeddings response: {exc}") from exc
    if len(vectors) != expected:
        raise EmbeddingError(f"asked for {expected} embeddings, got {len(vectors)}")
    out = []
    for v in vectors:
        norm = float(np.linalg.norm(v))
        if v.ndim != 1 or norm == 0.0:
            raise EmbeddingError("endpoint returned an empty or zero vector")
        out.append(v / norm)
    return out


class OpenAIEmbedder:
    """Calls ``POST {base_url}/embeddings``; retries 429/5xx with exponential backoff."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        batch_size: int = 128,
        timeout_s: float = 30.0,
        max_retries: int = 3,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.model_id = f"openai:{model}"
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self._headers = dict(headers or {})
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"

    @property
    def _url(self) -> str:
        return f"{self.base_url}/embeddings"

    def _check(self, response: httpx.Response) -> bool:
        """True when the response is final; raise on a final error."""
        if response.status_code in RETRY_STATUS:
            return False
        if response.status_code >= 400:
            raise EmbeddingError(
                f"embeddings endpoint answered {response.status_code}: {response.text[:200]}"
            )
        return True

    def _exchange(self, chunk: Sequence[str]) -> Generator[_Step, Any, list[Vector]]:
        """The retry policy for one request, sans I/O.

        Yields ``("post", body)`` and receives the response or the transport exception;
        yields ``("sleep", seconds)`` and receives None.
        """
        body = build_request(self.model, chunk)
        for attempt in range(self.max_retries + 1):
            outcome = yield ("post", body)
            if isinstance(outcome, httpx.HTTPError):
                problem = f"embeddings endpoint failed: {outcome}"
            elif self._check(outcome):
                return parse_response(outcome.json(), len(chunk))
            else:
                problem = f"embeddings endpoint answered {outcome.status_code}"
            if attempt == self.max_retries:
                raise EmbeddingError(f"{problem}; gave up after {attempt + 1} attempts")
            yield ("sleep", _backoff(attempt))
        raise AssertionError("unreachable")

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        out: list[Vector] = []
        with httpx.Client(timeout=self.timeout_s, headers=self._headers) as client:
            for start in range(0, len(texts), self.batch_size):
                steps = self._exchange(texts[start : start + self.batch_size])
                reply: Any = None
                try:
                    while True:
                        kind, arg = steps.send(reply)
                        if kind == "sleep":
                            time.sleep(arg)
                            reply = None
                            continue
                        try:
                            reply = client.post(self._url, json=arg)
                        except httpx.HTTPError as exc:
                            reply = exc
                except StopIteration as done:
                    out += done.value
        return out

    async def aembed(self, texts: Sequence[str]) -> list[Vector]:
        out: list[Vector] = []
        async with httpx.AsyncClient(timeout=self.timeout_s, headers=self._headers) as client:
            for start in range(0, len(texts), self.batch_size):
                steps = self._exchange(texts[start : start + self.batch_size])
                reply: Any = None
                try:
                    while True:
                        kind, arg = steps.send(reply)
                        if kind == "sleep":
                            await asyncio.sleep(arg)
                            reply = None
                            continue
                        try:
                            reply = await client.post(self._url, json=arg)
                        except httpx.HTTPError as exc:
                            reply = exc
                except StopIteration as done:
                    out += done.value
        return out


def _backoff(attempt: int) -> float:
    return float(min(0.25 * 2**attempt, 8.0))
