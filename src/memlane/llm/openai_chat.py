"""Any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, Ollama, vLLM, llama.cpp
server, LiteLLM ...).

Request building and response parsing are pure functions; moving the bytes, and the
retry policy (backoff on 408/409/429/5xx and transport errors, honouring ``Retry-After``,
within per-attempt and total time limits), are :mod:`memlane.http`'s, shared with the
embeddings adapter.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any, Literal, Self

from memlane.errors import ConfigurationError, LLMError
from memlane.http import JsonEndpoint, JsonReply, RetryPolicy, Service
from memlane.ports.llm import ChatRequest, ChatResponse, Usage

log = logging.getLogger("memlane.llm")

_SERVICE = Service("chat", LLMError)

StructuredMode = Literal["json_schema", "tools", "json_object"]


def build_body(model: str, request: ChatRequest, mode: StructuredMode) -> dict[str, Any]:
    """The JSON body for one request.

    ``json_schema``: ``response_format`` with the JSON schema (OpenAI, vLLM, Ollama,
    llama.cpp; not in OpenAI's strict mode, which forbids optional fields: memlane
    validates every answer itself and asks for a repair). ``tools``: one function whose
    parameters are the schema, and the model is made to call it. ``json_object``: JSON
    mode, with the schema in the system prompt, for servers that know nothing better.
    """
    messages = [{"role": m.role, "content": m.content} for m in request.messages]
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "temperature": request.temperature,
    }
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.schema is None:
        return body
    schema = dict(request.schema)
    if mode == "json_schema":
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": request.schema_name, "schema": schema, "strict": False},
        }
    elif mode == "tools":
        body["tools"] = [
            {
                "type": "function",
                "function": {"name": request.schema_name, "parameters": schema},
            }
        ]
        body["tool_choice"] = {"type": "function", "function": {"name": request.schema_name}}
    else:
        body["response_format"] = {"type": "json_object"}
        hint = "Answer with one JSON object matching this JSON schema:\n" + json.dumps(schema)
        body["messages"] = [{"role": "system", "content": hint}, *messages]
    return body


def parse_body(payload: Any, *, latency_ms: float, retries: int) -> ChatResponse:
    """The answer of a chat completion. Raises LLMError on a malformed payload (an empty
    answer is not malformed here: the structured layer reports it)."""
    try:
        choice = payload["choices"][0]
        message = choice["message"]
        calls = message.get("tool_calls") or []
        content = calls[0]["function"]["arguments"] if calls else message.get("content") or ""
        if not isinstance(content, str):
            content = json.dumps(content)
        usage = payload.get("usage") or {}
        return ChatResponse(
            content=content,
            model=str(payload.get("model", "")),
            usage=Usage(
                calls=1,
                prompt_tokens=_count(usage.get("prompt_tokens")),
                completion_tokens=_count(usage.get("completion_tokens")),
                latency_ms=latency_ms,
                retries=retries,
            ),
            finish_reason=choice.get("finish_reason"),
        )
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise LLMError(f"malformed chat completion: {exc!r}") from exc


def chat_endpoint(
    base_url: str | None, model: str | None, api_key: str | None = None
) -> dict[str, Any] | None:
    """The keywords ``base_url``, ``model`` and ``api_key`` of the chat model that
    ``MEMLANE_LLM_BASE_URL``, ``MEMLANE_LLM_MODEL`` and ``MEMLANE_LLM_API_KEY`` name, or None
    when neither the URL nor the model is given. Raises ConfigurationError when only one is."""
    if not base_url and not model:
        return None
    if not base_url or not model:
        missing = "MEMLANE_LLM_MODEL" if base_url else "MEMLANE_LLM_BASE_URL"
        raise ConfigurationError(
            f"a chat model needs MEMLANE_LLM_BASE_URL and MEMLANE_LLM_MODEL; {missing} is not set"
        )
    return {"base_url": base_url, "model": model, "api_key": api_key}


class OpenAIChat:
    """Calls ``POST {base_url}/chat/completions``.

    ``timeout_s`` bounds each HTTP attempt (the whole answer read included) and
    ``deadline_s``, if set, the whole call; ``max_retries`` retries 408/409/429/5xx and
    transport errors with jittered exponential backoff (or the server's ``Retry-After``),
    capped at ``max_backoff_s``: the policy of :mod:`memlane.http`. Every call's tokens
    and latency are in its response's ``usage`` and summed in :attr:`usage` and, per
    operation (``extract``, ``decide`` ...), in :attr:`usage_by_operation`.
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        mode: StructuredMode = "json_schema",
        timeout_s: float = 60.0,
        max_retries: int = 3,
        max_backoff_s: float = 8.0,
        deadline_s: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if mode not in ("json_schema", "tools", "json_object"):
            raise LLMError(f"unknown structured output mode {mode!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.model_id = f"openai-chat:{model}"
        self.mode: StructuredMode = mode
        self.usage = Usage()
        self.usage_by_operation: dict[str, Usage] = {}
        self._lock = threading.Lock()
        self._endpoint = JsonEndpoint.at(
            base_url, "chat/completions", _SERVICE, api_key=api_key, headers=headers,
            max_retries=max_retries, timeout_s=timeout_s, deadline_s=deadline_s,
            max_backoff_s=max_backoff_s,
        )  # fmt: skip
        self.policy: RetryPolicy = self._endpoint.policy

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> Self:
        """The endpoint of ``MEMLANE_LLM_BASE_URL``, ``MEMLANE_LLM_MODEL`` and
        ``MEMLANE_LLM_API_KEY`` in ``environ`` (default: ``os.environ``); ``options`` are
        the constructor's other keywords. Raises ConfigurationError when a variable is
        missing."""
        env = os.environ if environ is None else environ
        endpoint = chat_endpoint(
            env.get("MEMLANE_LLM_BASE_URL") or None,
            env.get("MEMLANE_LLM_MODEL") or None,
            env.get("MEMLANE_LLM_API_KEY") or None,
        )
        if endpoint is None:
            raise ConfigurationError("set MEMLANE_LLM_BASE_URL and MEMLANE_LLM_MODEL")
        return cls(**endpoint, **options)

    def __repr__(self) -> str:
        return f"OpenAIChat(base_url={self.base_url!r}, model={self.model!r})"

    @property
    def url(self) -> str:
        return self._endpoint.url

    def close(self) -> None:
        """Close pooled connections (a later call opens new ones)."""
        self._endpoint.close()

    def complete(self, request: ChatRequest) -> ChatResponse:
        """The model's answer to ``request``. Raises LLMError when the endpoint fails
        for good (see :mod:`memlane.http` for what is retried) or answers malformed."""
        reply = self._endpoint.post(build_body(self.model, request, self.mode))
        return self._received(request, reply)

    async def acomplete(self, request: ChatRequest) -> ChatResponse:
        """:meth:`complete` on the running event loop."""
        reply = await self._endpoint.apost(build_body(self.model, request, self.mode))
        return self._received(request, reply)

    def _received(self, request: ChatRequest, reply: JsonReply) -> ChatResponse:
        """The parsed answer, its usage added to the adapter's totals."""
        response = parse_body(
            reply.payload, latency_ms=reply.latency_s * 1000, retries=reply.retries
        )
        op = request.operation
        with self._lock:
            self.usage = self.usage + response.usage
            self.usage_by_operation[op] = self.usage_by_operation.get(op, Usage()) + (
                response.usage
            )
        log.debug(
            "%s: %d+%d tokens in %.0f ms (%d retries)",
            op,
            response.usage.prompt_tokens,
            response.usage.completion_tokens,
            response.usage.latency_ms,
            reply.retries,
        )
        return response


def _count(value: Any) -> int:
    """A token count from a provider's ``usage``: a non-negative int, or 0 for anything
    else (Infinity, negatives, booleans, strings)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    try:
        return max(0, int(value))
    except (OverflowError, ValueError):  # inf, nan
        return 0
