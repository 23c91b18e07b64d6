"""Any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, Ollama, vLLM, llama.cpp
server, LiteLLM ...).

Request building and response parsing are pure functions; the sync and async drivers
only move bytes through the same sans-IO retry policy (backoff on 408/409/429/5xx and
transport errors, honouring ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Generator, Mapping
from typing import Any, Literal, Self

import httpx

from memlane.errors import ConfigurationError, LLMError
from memlane.ports.llm import ChatRequest, ChatResponse, Usage

_Step = tuple[str, Any]

log = logging.getLogger("memlane.llm")

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})

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

    ``timeout_s`` bounds each HTTP attempt; ``max_retries`` retries 408/409/429/5xx and
    transport errors with exponential backoff (or the server's ``Retry-After``, capped at
    ``max_backoff_s``). Every call's tokens and latency are in its response's ``usage``
    and summed in :attr:`usage` and, per operation (``extract``, ``decide`` ...), in
    :attr:`usage_by_operation`.
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
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if mode not in ("json_schema", "tools", "json_object"):
            raise LLMError(f"unknown structured output mode {mode!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise LLMError("max_retries must be a non-negative integer")
        if not timeout_s > 0 or not max_backoff_s >= 0:
            raise LLMError("timeout_s must be positive and max_backoff_s not negative")
        try:
            url = httpx.URL(base_url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise LLMError(f"base_url is not a URL: {exc}") from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise LLMError("base_url must be an http:// or https:// URL with a host")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.model_id = f"openai-chat:{model}"
        self.mode: StructuredMode = mode
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_backoff_s = max_backoff_s
        self.usage = Usage()
        self.usage_by_operation: dict[str, Usage] = {}
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()
        self._headers = dict(headers or {})
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"

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
        return f"{self.base_url}/chat/completions"

    def _exchange(self, request: ChatRequest) -> Generator[_Step, Any, ChatResponse]:
        """The retry policy for one request, sans I/O.

        Yields ``("post", body)`` and receives ``(response | exception, seconds)``;
        yields ``("sleep", seconds)`` and receives None.
        """
        body = build_body(self.model, request, self.mode)
        spent = 0.0
        for attempt in range(self.max_retries + 1):
            outcome, elapsed = yield ("post", body)
            spent += elapsed
            wait = _backoff(attempt)
            if isinstance(outcome, httpx.TimeoutException):
                problem = f"chat endpoint timed out after {self.timeout_s:g} s"
            elif isinstance(outcome, httpx.HTTPError):
                problem = f"chat endpoint failed: {outcome}"
            elif outcome.status_code in RETRY_STATUS:
                problem = f"chat endpoint answered {outcome.status_code}"
                wait = _retry_after(outcome, wait)
            elif outcome.status_code >= 400:
                raise LLMError(
                    f"chat endpoint answered {outcome.status_code}: {outcome.text[:300]}"
                )
            else:
                try:
                    payload = outcome.json()
                except ValueError as exc:
                    raise LLMError(f"chat endpoint sent invalid JSON: {exc}") from exc
                response = parse_body(payload, latency_ms=spent * 1000, retries=attempt)
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
                    attempt,
                )
                return response
            if attempt == self.max_retries:
                raise LLMError(f"{problem}; gave up after {attempt + 1} attempts")
            yield ("sleep", min(wait, self.max_backoff_s))
        raise AssertionError("unreachable")

    def _sync_client(self) -> httpx.Client:
        # One pooled client for the adapter's life: building one costs ~25 ms (TLS setup).
        with self._lock:
            if self._client is None or self._client.is_closed:
                self._client = httpx.Client(timeout=self.timeout_s, headers=self._headers)
            return self._client

    def close(self) -> None:
        """Close pooled connections (a later call opens new ones)."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def complete(self, request: ChatRequest) -> ChatResponse:
        steps = self._exchange(request)
        reply: Any = None
        client = self._sync_client()
        try:
            while True:
                kind, arg = steps.send(reply)
                if kind == "sleep":
                    time.sleep(arg)
                    reply = None
                    continue
                start = time.perf_counter()
                try:
                    outcome: Any = self._post_within(client, arg)
                except httpx.HTTPError as exc:
                    outcome = exc
                reply = (outcome, time.perf_counter() - start)
        except StopIteration as done:
            result: ChatResponse = done.value
            return result

    def _post_within(self, client: httpx.Client, body: Any) -> httpx.Response:
        """POST and read the answer within ``timeout_s`` in all: httpx's own timeout
        bounds each read, so a server trickling its answer could hold a call for ever."""
        deadline = time.monotonic() + self.timeout_s
        with client.stream("POST", self.url, json=body) as response:
            chunks = []
            # Raw bytes: the Response built below decodes them (gzip, br) once, by the
            # Content-Encoding it keeps; decoded bytes would be decoded a second time.
            for chunk in response.iter_raw():
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("answer took too long", request=response.request)
            return httpx.Response(
                response.status_code,
                headers=response.headers,
                content=b"".join(chunks),
                request=response.request,
            )

    async def acomplete(self, request: ChatRequest) -> ChatResponse:
        steps = self._exchange(request)
        reply: Any = None
        async with httpx.AsyncClient(timeout=self.timeout_s, headers=self._headers) as client:
            try:
                while True:
                    kind, arg = steps.send(reply)
                    if kind == "sleep":
                        await asyncio.sleep(arg)
                        reply = None
                        continue
                    start = time.perf_counter()
                    try:
                        outcome: Any = await asyncio.wait_for(
                            client.post(self.url, json=arg), self.timeout_s
                        )
                    except TimeoutError:  # the whole attempt, not one read
                        outcome = httpx.ReadTimeout("answer took too long")
                    except httpx.HTTPError as exc:
                        outcome = exc
                    reply = (outcome, time.perf_counter() - start)
            except StopIteration as done:
                result: ChatResponse = done.value
                return result


def _count(value: Any) -> int:
    """A token count from a provider's ``usage``: a non-negative int, or 0 for anything
    else (Infinity, negatives, booleans, strings)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    try:
        return max(0, int(value))
    except (OverflowError, ValueError):  # inf, nan
        return 0


def _backoff(attempt: int) -> float:
    return float(min(0.25 * 2**attempt, 8.0))


def _retry_after(response: httpx.Response, default: float) -> float:
    value = response.headers.get("Retry-After")
    if value is None:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        return default
