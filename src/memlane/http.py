"""One HTTP layer for memlane's adapters of OpenAI-compatible endpoints (chat, embeddings).

The retry policy is sans I/O: :func:`exchange` is a flow (see :mod:`memlane.effects`) that
yields :class:`Send` and :class:`Sleep` and decides from what comes back; a
:class:`JsonEndpoint` runs it over httpx, blocking or on the event loop, with the same
outcome either way.

- **What retries:** HTTP 408, 409, 429, 500, 502, 503, 504 and transport errors
  (connection refused or dropped, timeouts). Any other 4xx fails at once.
- **How long to wait:** the server's ``Retry-After`` (seconds or an HTTP date) when it
  sends one, else exponential backoff with jitter (``base_backoff_s * 2**attempt``,
  scaled by a random factor in [0.5, 1]); either capped at ``max_backoff_s``.
- **When to stop:** after ``max_retries`` retries; ``timeout_s`` bounds each attempt, the
  whole answer read included (a server trickling its answer cannot hold a call); the
  optional ``deadline_s`` bounds the whole call, attempts and waits included: no attempt
  runs past it and no wait is begun that would end after it.

Failures raise the adapter's own error type (``LLMError``, ``EmbeddingError``) with a
message naming the endpoint and what happened.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from functools import partial
from typing import Any

import httpx

from memlane.effects import adrive, drive
from memlane.errors import MemlaneError

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How one call retries and how long it may take (see the module docstring)."""

    max_retries: int = 3
    timeout_s: float = 60.0
    deadline_s: float | None = None
    base_backoff_s: float = 0.25
    max_backoff_s: float = 8.0
    retry_status: frozenset[int] = RETRY_STATUS

    def __post_init__(self) -> None:
        retries = self.max_retries
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError("max_retries must be a non-negative integer")
        if not self.timeout_s > 0 or not self.max_backoff_s >= 0:
            raise ValueError("timeout_s must be positive and max_backoff_s not negative")
        if self.deadline_s is not None and not self.deadline_s > 0:
            raise ValueError("deadline_s must be positive (or None for no deadline)")
        if not self.base_backoff_s >= 0:
            raise ValueError("base_backoff_s must not be negative")

    def wait(self, attempt: int, retry_after: float | None, rand: float) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based): the server's
        ``retry_after`` if given, else backoff jittered by ``rand`` in [0, 1); capped."""
        if retry_after is None:
            retry_after = self.base_backoff_s * 2**attempt * (0.5 + rand / 2)
        return float(min(retry_after, self.max_backoff_s))

    def attempt_timeout(self, elapsed: float) -> float:
        """The time the next attempt may take, ``elapsed`` seconds into the call."""
        if self.deadline_s is None:
            return self.timeout_s
        return max(min(self.timeout_s, self.deadline_s - elapsed), 0.001)

    def out_of_time(self, elapsed: float, wait: float) -> bool:
        """Whether waiting ``wait`` more seconds would end past the deadline."""
        return self.deadline_s is not None and elapsed + wait >= self.deadline_s


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait at epoch time ``now``: its
    delay-seconds, or the time until its HTTP date (0 for one in the past); None when
    absent or unreadable."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive one is read as such
        return None
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True, slots=True)
class Send:
    """POST ``body`` as JSON and read the whole answer within ``timeout_s``; resumes with
    the :class:`httpx.Response`, or raises the transport's :class:`httpx.HTTPError`."""

    body: Any
    timeout_s: float


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait ``seconds`` before the next attempt; resumes with None."""

    seconds: float


HttpEffect = Send | Sleep


@dataclass(frozen=True, slots=True)
class Service:
    """Who calls: ``name`` appears in messages (``"chat endpoint answered 503"``), and
    every failure is raised as ``error``."""

    name: str
    error: type[MemlaneError]


@dataclass(frozen=True, slots=True)
class JsonReply:
    """A successful call's decoded JSON, how many retries it took, and the seconds spent
    in attempts (waits between them excluded)."""

    payload: Any
    retries: int
    latency_s: float


def exchange(
    body: Any,
    policy: RetryPolicy,
    service: Service,
    *,
    clock: Callable[[], float] = time.perf_counter,
    wall: Callable[[], float] = time.time,
    rand: Callable[[], float] = random.random,
) -> Generator[HttpEffect, Any, JsonReply]:
    """One call of a JSON endpoint under ``policy``, as a flow of :data:`HttpEffect`.
    Returns the reply; raises ``service.error`` on a final failure."""
    started, spent = clock(), 0.0
    for attempt in range(policy.max_retries + 1):
        budget = policy.attempt_timeout(clock() - started)
        sent = clock()
        outcome = yield from _attempt(body, budget)
        spent += clock() - sent
        verdict = _verdict(outcome, policy, service, budget, wall)
        if verdict is None:
            assert isinstance(outcome, httpx.Response)
            return JsonReply(_json(outcome, service), retries=attempt, latency_s=spent)
        problem, hint = verdict
        wait = policy.wait(attempt, hint, rand())
        if attempt == policy.max_retries:
            raise service.error(f"{problem}; gave up after {attempt + 1} attempts")
        if policy.out_of_time(clock() - started, wait):
            raise service.error(
                f"{problem}; gave up after {attempt + 1} attempts: "
                f"the {policy.deadline_s:g} s deadline would pass"
            )
        yield Sleep(wait)
    raise AssertionError("unreachable")


def _attempt(
    body: Any, timeout_s: float
) -> Generator[HttpEffect, Any, httpx.Response | httpx.HTTPError]:
    try:
        response: httpx.Response = yield Send(body, timeout_s)
    except httpx.HTTPError as exc:
        return exc
    return response


def _verdict(
    outcome: httpx.Response | httpx.HTTPError,
    policy: RetryPolicy,
    service: Service,
    budget: float,
    wall: Callable[[], float],
) -> tuple[str, float | None] | None:
    """None for a final answer; for one worth retrying, what went wrong and the wait the
    server asked for. Raises ``service.error`` for a final failure."""
    if isinstance(outcome, httpx.TimeoutException):
        return f"{service.name} endpoint timed out after {budget:.3g} s", None
    if isinstance(outcome, httpx.HTTPError):
        return f"{service.name} endpoint failed: {outcome}", None
    status = outcome.status_code
    if status in policy.retry_status:
        return f"{service.name} endpoint answered {status}", retry_after(
            outcome.headers.get("Retry-After"), wall()
        )
    if status >= 400:
        raise service.error(f"{service.name} endpoint answered {status}: {outcome.text[:300]}")
    return None


def _json(response: httpx.Response, service: Service) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise service.error(f"{service.name} endpoint sent invalid JSON: {exc}") from exc


def endpoint_url(base_url: str, path: str, service: Service) -> str:
    """``base_url`` (without a trailing slash) joined to ``path``; raises
    ``service.error`` unless it is an http:// or https:// URL with a host."""
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise service.error(f"base_url is not a URL: {exc}") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise service.error("base_url must be an http:// or https:// URL with a host")
    return f"{base_url.rstrip('/')}/{path}"


class JsonEndpoint:
    """POSTs JSON to ``url`` under ``policy``: :meth:`post` blocks (on a pooled client
    unless given one), :meth:`apost` awaits (on a client of its own unless given one)."""

    def __init__(
        self,
        url: str,
        service: Service,
        policy: RetryPolicy,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url
        self.service = service
        self.policy = policy
        self._headers = dict(headers or {})
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    @classmethod
    def at(
        cls,
        base_url: str,
        path: str,
        service: Service,
        *,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        **policy: Any,
    ) -> JsonEndpoint:
        """The endpoint ``path`` below ``base_url``, sending ``api_key`` as a bearer
        token; ``policy`` are :class:`RetryPolicy`'s fields. Raises ``service.error`` for
        a URL that is not http(s) or a policy out of range."""
        try:
            retry = RetryPolicy(**policy)
        except ValueError as exc:
            raise service.error(str(exc)) from exc
        url = endpoint_url(base_url, path, service)
        auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return cls(url, service, retry, {**(headers or {}), **auth})

    def client(self) -> httpx.Client:
        """A new blocking client with this endpoint's headers (the caller closes it)."""
        return httpx.Client(timeout=self.policy.timeout_s, headers=self._headers)

    def async_client(self) -> httpx.AsyncClient:
        """A new async client with this endpoint's headers (the caller closes it)."""
        return httpx.AsyncClient(timeout=self.policy.timeout_s, headers=self._headers)

    def pooled(self) -> httpx.Client:
        """The endpoint's own blocking client, opened on first use (building one costs
        ~25 ms of TLS setup, so a long-lived adapter keeps one)."""
        with self._lock:
            if self._client is None or self._client.is_closed:
                self._client = self.client()
            return self._client

    def close(self) -> None:
        """Close the pooled client's connections (a later call opens new ones)."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def post(self, body: Any, client: httpx.Client | None = None) -> JsonReply:
        """One call, blocking. Returns the reply; raises ``service.error``."""
        handle = partial(_run, client or self.pooled(), self.url)
        return drive(exchange(body, self.policy, self.service), handle, httpx.HTTPError)

    async def apost(self, body: Any, client: httpx.AsyncClient | None = None) -> JsonReply:
        """One call on the running event loop. Returns the reply; raises ``service.error``."""
        if client is None:
            async with self.async_client() as own:
                return await self.apost(body, own)
        handle = partial(_arun, client, self.url)
        return await adrive(exchange(body, self.policy, self.service), handle, httpx.HTTPError)


def _run(client: httpx.Client, url: str, effect: HttpEffect) -> httpx.Response | None:
    if isinstance(effect, Sleep):
        time.sleep(effect.seconds)
        return None
    return read_within(client, url, effect)


async def _arun(client: httpx.AsyncClient, url: str, effect: HttpEffect) -> httpx.Response | None:
    if isinstance(effect, Sleep):
        await asyncio.sleep(effect.seconds)
        return None
    return await aread_within(client, url, effect)


def read_within(client: httpx.Client, url: str, send: Send) -> httpx.Response:
    """POST and read the whole answer within ``send.timeout_s``: httpx's own timeout
    bounds each read, so a server trickling its answer could hold a call for ever; the
    clock is checked after every chunk (a stalled read still ends by httpx's timeout)."""
    deadline = time.monotonic() + send.timeout_s
    with client.stream("POST", url, json=send.body, timeout=send.timeout_s) as response:
        chunks = []
        for chunk in response.iter_raw():
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout("answer took too long", request=response.request)
        return _buffered(response, chunks)


async def aread_within(client: httpx.AsyncClient, url: str, send: Send) -> httpx.Response:
    """:func:`read_within` on the event loop, where the bound is exact (cancellation)."""
    try:
        async with asyncio.timeout(send.timeout_s):
            async with client.stream(
                "POST", url, json=send.body, timeout=send.timeout_s
            ) as response:
                chunks = [chunk async for chunk in response.aiter_raw()]
                return _buffered(response, chunks)
    except TimeoutError as exc:
        raise httpx.ReadTimeout("answer took too long") from exc


def _buffered(response: httpx.Response, raw: list[bytes]) -> httpx.Response:
    # Raw bytes: the Response built here decodes them (gzip, br) once, by the
    # Content-Encoding it keeps; decoded bytes would be decoded a second time.
    return httpx.Response(
        response.status_code,
        headers=response.headers,
        content=b"".join(raw),
        request=response.request,
    )
