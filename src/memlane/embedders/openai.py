"""Embeddings from any OpenAI-compatible ``/embeddings`` endpoint (OpenAI, Ollama, vLLM,
llama.cpp server, LiteLLM ...).

Request building and response parsing are pure functions; moving the bytes, and the
retry policy, are :mod:`memlane.http`'s, shared with the chat adapter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from memlane.errors import EmbeddingError
from memlane.http import JsonEndpoint, RetryPolicy, Service
from memlane.ports.embedder import Vector

_SERVICE = Service("embeddings", EmbeddingError)


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
    """Calls ``POST {base_url}/embeddings``, ``batch_size`` texts a request.

    ``timeout_s`` bounds each HTTP attempt (the whole answer read included) and
    ``deadline_s``, if set, each request; ``max_retries`` retries 408/409/429/5xx and
    transport errors with jittered exponential backoff (or the server's ``Retry-After``),
    capped at ``max_backoff_s``: the policy of :mod:`memlane.http`, shared with the chat
    adapter.
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        batch_size: int = 128,
        timeout_s: float = 30.0,
        max_retries: int = 3,
        max_backoff_s: float = 8.0,
        deadline_s: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.model_id = f"openai:{model}"
        self._endpoint = JsonEndpoint.at(
            base_url, "embeddings", _SERVICE, api_key=api_key, headers=headers,
            max_retries=max_retries, timeout_s=timeout_s, deadline_s=deadline_s,
            max_backoff_s=max_backoff_s,
        )  # fmt: skip
        self.batch_size = batch_size
        self.policy: RetryPolicy = self._endpoint.policy

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        """One L2-normalized vector per text, in order. Raises EmbeddingError."""
        out: list[Vector] = []
        with self._endpoint.client() as client:
            for chunk in self._chunks(texts):
                reply = self._endpoint.post(build_request(self.model, chunk), client)
                out += parse_response(reply.payload, len(chunk))
        return out

    async def aembed(self, texts: Sequence[str]) -> list[Vector]:
        """:meth:`embed` on the running event loop."""
        out: list[Vector] = []
        async with self._endpoint.async_client() as client:
            for chunk in self._chunks(texts):
                reply = await self._endpoint.apost(build_request(self.model, chunk), client)
                out += parse_response(reply.payload, len(chunk))
        return out

    def _chunks(self, texts: Sequence[str]) -> list[Sequence[str]]:
        return [texts[i : i + self.batch_size] for i in range(0, len(texts), self.batch_size)]
