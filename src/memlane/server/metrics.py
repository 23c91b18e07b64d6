"""The server's Prometheus metrics (``GET /metrics``), through ``prometheus_client``.

Each app has its own registry, so several apps in one process (tests) keep apart:

- ``memlane_requests_total{route, method, status}``: requests served;
- ``memlane_request_seconds{route, method}``: a latency histogram per route;
- ``memlane_memory_call_seconds{op}``: time in memlane's library per call the routes make
  (``search``, ``add``, ``build_context`` …: store, embedding and, for summaries with a
  chat model, the model), measured at the server's edge;
- inside those calls, what the library waited for: ``memlane_store_seconds{op}`` per store
  transaction (``op``: the batch's first operation, e.g. ``VectorSearch`` for a search),
  ``memlane_embedding_seconds`` per embedding call (``memlane_embedded_texts`` counts the
  texts; a query's call includes its sparse terms when they are made beside its vector:
  the time the search waited for both), ``memlane_sparse_seconds`` per call of the sparse
  encoder alone (a memory's terms, or a query's made after its candidates) and
  ``memlane_llm_seconds`` per chat-model call (the memory manager's learning);
- ``memlane_uptime_seconds`` and, with a memory manager, ``memlane_jobs_unfinished``.

Labels name the route's template (``/v1/users/{user_id}/memories``), never the raw path:
no user or memory id reaches a label, and methods outside the standard ones share
``OTHER``.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from memlane.core.flow import Batch, Chat, Effect, Embed, EmbedQuery, EncodeSparse
from memlane.errors import require_extra

require_extra("server", "memlane's metrics", "prometheus_client")

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """One app's metrics and their registry."""

    def __init__(self, manager: Any | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "memlane_requests", "HTTP requests by route, method and status.",
            ("route", "method", "status"), registry=r,
        )  # fmt: skip
        self.seconds = Histogram(
            "memlane_request_seconds", "Time spent serving requests, by route.",
            ("route", "method"), buckets=_BUCKETS, registry=r,
        )  # fmt: skip
        self.calls = Histogram(
            "memlane_memory_call_seconds", "Time in memlane's library per call a route makes.",
            ("op",), buckets=_BUCKETS, registry=r,
        )  # fmt: skip
        self.store = Histogram(
            "memlane_store_seconds", "Time per store transaction, by its first operation.",
            ("op",), buckets=_BUCKETS, registry=r,
        )  # fmt: skip
        self.embedding = Histogram(
            "memlane_embedding_seconds", "Time per embedding call.",
            buckets=_BUCKETS, registry=r,
        )  # fmt: skip
        self.embedded = Counter("memlane_embedded_texts", "Texts embedded.", registry=r)
        self.sparse = Histogram(
            "memlane_sparse_seconds", "Time per call of the sparse encoder alone.",
            buckets=_BUCKETS, registry=r,
        )  # fmt: skip
        self.llm = Histogram(
            "memlane_llm_seconds", "Time per chat-model call.", buckets=_BUCKETS, registry=r
        )
        started = time.time()
        uptime = Gauge("memlane_uptime_seconds", "Seconds since the app started.", registry=r)
        uptime.set_function(lambda: round(time.time() - started, 3))
        if manager is not None:
            jobs = Gauge("memlane_jobs_unfinished", "Learning jobs not yet done.", registry=r)
            jobs.set_function(lambda: float(manager.jobs.unfinished()))

    def observe(self, request: Request, status: int, seconds: float) -> None:
        """Count one served request under its route's template."""
        route = getattr(request.scope.get("route"), "path", "unmatched")
        method = request.method if request.method in _METHODS else "OTHER"
        self.requests.labels(route, method, str(status)).inc()
        self.seconds.labels(route, method).observe(seconds)

    def effect(self, effect: Effect, seconds: float) -> None:
        """Record one effect the library carried out (an
        :data:`~memlane.core.flow.EffectObserver`); pauses are not timed, nor the start
        of reads set aside (their time is in the batch that joins them)."""
        if isinstance(effect, Batch):  # (one that joins reads set aside waits for them too)
            op = type(effect.ops[0]).__name__ if effect.ops else "empty"
            self.store.labels(op).observe(seconds)
        elif isinstance(effect, Embed):
            self.embedding.observe(seconds)
            self.embedded.inc(len(effect.texts))
        elif isinstance(effect, EmbedQuery):  # a query's vector, its sparse terms beside it
            self.embedding.observe(seconds)
            self.embedded.inc()
        elif isinstance(effect, EncodeSparse):
            self.sparse.observe(seconds)
        elif isinstance(effect, Chat):
            self.llm.observe(seconds)

    @contextlib.contextmanager
    def timing(self, op: str) -> Iterator[None]:
        """Time a block as the library call ``op``."""
        with self.calls.labels(op).time():
            yield

    def render(self) -> Response:
        """The exposition ``/metrics`` answers."""
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class TimedMemory:
    """An :class:`~memlane.api.AsyncMemory` whose coroutine methods are timed as
    ``memlane_memory_call_seconds{op=<method>}``; everything else passes through."""

    def __init__(self, memory: Any, metrics: Metrics) -> None:
        self._memory = memory
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._memory, name)
        if name.startswith("_") or not callable(value):
            return value
        return _timed(value, name, self._metrics)

    def with_actor(self, actor: str) -> TimedMemory:
        """The memory acting for ``actor``, timed like this one."""
        return TimedMemory(self._memory.with_actor(actor), self._metrics)


def _timed(fn: Callable[..., Any], op: str, metrics: Metrics) -> Callable[..., Any]:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        result = fn(*args, **kwargs)
        if not isinstance(result, Awaitable):
            return result
        return _awaited(result, op, metrics)

    return call


async def _awaited(result: Awaitable[Any], op: str, metrics: Metrics) -> Any:
    with metrics.timing(op):
        return await result


def observe_effects(memory: Any, metrics: Metrics) -> None:
    """Have ``memory`` report its store, embedding and model timings to ``metrics``,
    besides any observer it already has."""
    before = memory.on_effect
    if before is None:
        memory.on_effect = metrics.effect
        return

    def both(effect: Effect, seconds: float) -> None:
        before(effect, seconds)
        metrics.effect(effect, seconds)

    memory.on_effect = both


def install(app: FastAPI, metrics: Metrics) -> None:
    """Measure every request ``app`` serves."""

    @app.middleware("http")
    async def measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Any:
        start = time.perf_counter()
        response = await call_next(request)
        metrics.observe(request, response.status_code, time.perf_counter() - start)
        return response
