"""A Redis tier in front of a durable store: hot session history, state and sessions.

:class:`RedisTier` is itself a Store. Reads of session data (``GetMessages``,
``GetState``, ``GetSession``) are answered from Redis when warm and filled from the
durable store when not, each entry with a TTL. Every other operation goes to the durable
store. Writes go to the durable store first; only after it committed are the affected
Redis entries retired, so Redis never holds anything the durable store does not.

Cache keys carry generations, so a stale fill can never be read: each session and each
user has a counter in Redis that a write increments, and an entry is stored under the
counters it was read at. A global epoch does the same for everything at once; it is
bumped when Redis comes back after an outage, since writes made meanwhile could not
retire entries.

Redis is optional at run time. When it does not answer, the tier logs one warning, says
``degraded`` in :meth:`RedisTier.health`, serves everything from the durable store (so
nothing is lost or stale) and tries Redis again every ``retry_s`` seconds. When Redis
answers again the tier re-warms the sessions read most recently.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import logging
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from memlane.errors import ConfigurationError, ConflictError, require_extra
from memlane.models import Message, Session, StateVersion
from memlane.ports import store as ops
from memlane.ports.store import Op, Store
from memlane.urls import redact_url

# The client is the `redis` extra; it is imported when the tier connects.
require_extra("redis", "the Redis tier (MEMLANE_REDIS_URL)", "redis")

log = logging.getLogger(__name__)

CACHED_READS = (ops.GetMessages, ops.GetState, ops.GetSession)
_MISSING = object()


class RedisTier:
    """Session data from Redis, everything durable in ``store``; see the module docstring.

    Keys start with ``prefix``; by default ``memlane:<digest of the store's URL>:``, so
    tiers in front of different stores can share one Redis database without reading each
    other's entries (see :func:`default_prefix` for what identifies a store). Processes in
    front of the same store must agree on the prefix: the default does for the same file
    on one machine and for the same PostgreSQL host, port and database; behind proxies or
    aliases that name one database differently, pass the same ``prefix`` to all of them.
    """

    def __init__(
        self,
        store: Store,
        redis_url: str,
        *,
        ttl_s: int = 60,
        prefix: str | None = None,
        timeout_s: float = 0.25,
        retry_s: float = 2.0,
        rewarm_sessions: int = 256,
    ) -> None:
        if not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError(
                f"not a Redis URL: {redact_url(redis_url)!r} (try redis://host:6379/0)"
            )
        self.store = store
        self.url = store.url
        self._redis_url = redis_url
        self.redis_url = redact_url(redis_url)
        """The Redis URL without its password (for messages and logs)."""
        self.ttl_s = ttl_s
        self.prefix = default_prefix(store.url) if prefix is None else prefix
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.rewarm_sessions = rewarm_sessions
        self.counters = {
            "hits": 0,
            "misses": 0,
            "fills": 0,
            "invalidations": 0,
            "errors": 0,
            "outages": 0,
            "rewarmed": 0,
        }
        self._client: Any = None
        self._healthy = True
        self._unretired = False
        self._retry_at = 0.0
        self._lock = threading.Lock()
        self._recent: OrderedDict[Op[Any], None] = OrderedDict()
        self._executor: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ lifecycle

    def setup(self) -> None:
        self.store.setup()
        if self._client is None:
            import redis

            self._client = redis.Redis.from_url(
                self._redis_url,
                socket_timeout=self.timeout_s,
                socket_connect_timeout=self.timeout_s,
            )

    def close(self) -> None:
        if self._unretired and self._client is not None:
            try:  # last chance to tell other processes this one wrote meanwhile
                self._client.incr(self._k("epoch"))
                self._unretired = False
            except Exception:
                log.warning(
                    "closing with writes Redis was not told of; other processes may serve "
                    "their old session data for up to %s s",
                    self.ttl_s,
                )
        self.store.close()
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def health(self) -> dict[str, Any]:
        """``{"redis": "ok" | "degraded", "store": url, **counters}``."""
        return {"redis": "ok" if self._healthy else "degraded", "store": self.url, **self.counters}

    # ------------------------------------------------------------------ batches

    def batch(self, ops_: Sequence[Op[Any]]) -> list[Any]:
        if self._client is None:
            self.setup()
        if ops_ and all(isinstance(op, CACHED_READS) for op in ops_) and self._redis_ready():
            return [self._cached_read(op) for op in ops_]
        retire = _retired(ops_)
        try:
            results = self.store.batch(ops_)
        except ConflictError:
            # A compare-and-swap lost: the version it expected may have come from a stale
            # entry, so retire it rather than serve it again to the caller's retry.
            if retire:
                self._retire_after_write(retire)
            raise
        if retire:
            self._retire_after_write(retire)
        return results

    def _retire_after_write(self, scopes: set[tuple[str, ...]]) -> None:
        """Retire the entries a committed write changed; one retry on a transient error.
        Scopes that still could not be retired are remembered: a new epoch is started
        (retiring everything) as soon as Redis answers this process again, or at close."""
        if self._redis_ready():
            try:
                self._retire(scopes)
                return
            except Exception:
                if self._guard(lambda: self._retire(scopes)) is not _MISSING:
                    return
        with self._lock:
            self._unretired = True

    async def abatch(self, ops_: Sequence[Op[Any]]) -> list[Any]:
        # Both redis-py's and the durable store's blocking calls run on worker threads.
        if self._executor is None:
            self._executor = ThreadPoolExecutor(8, thread_name_prefix="memlane-redis")
        # In a copy of the caller's context: what a store leaves in its context for the
        # next batch (PostgreSQL's hits' sparse terms) must not stay with a worker thread
        # that serves other tasks next.
        run = contextvars.copy_context().run
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, run, self.batch, ops_
        )

    def _cached_read(self, op: Op[Any]) -> Any:
        self._remember(op)
        found = self._guard(lambda: self._lookup(op))
        if found is not _MISSING and found[1] is not None:
            self.counters["hits"] += 1
            return _decode(op, found[1])
        self.counters["misses"] += 1
        (value,) = self.store.batch([op])
        if found is not _MISSING:
            self._fill(found[0], value)
        return value

    def _lookup(self, op: Op[Any]) -> tuple[str, bytes | None]:
        """The key of ``op``'s entry at the current generations, and its bytes if any."""
        user_id, session_id = op.user_id, op.session_id  # type: ignore[attr-defined]
        epoch, user_gen, session_gen = self._client.mget(
            self._k("epoch"), self._k("gen", user_id), self._k("gen", user_id, session_id)
        )
        gens = [_num(epoch), _num(user_gen), _num(session_gen)]
        key = self._k("v", *gens, repr(op))
        return key, self._client.get(key)

    def _fill(self, key: str, value: Any) -> None:
        if self._guard(lambda: self._client.set(key, _encode(value), ex=self.ttl_s)) is True:
            self.counters["fills"] += 1

    def _retire(self, scopes: set[tuple[str, ...]]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for scope in sorted(scopes):
            pipe.incr(self._k("gen", *scope))
            pipe.expire(self._k("gen", *scope), max(self.ttl_s * 2, 60))
        pipe.execute()
        self.counters["invalidations"] += len(scopes)

    # ------------------------------------------------------------------ health

    def _redis_ready(self) -> bool:
        if self._healthy:
            return True
        if time.monotonic() < self._retry_at:
            return False
        try:
            self._client.ping()
            # Writes made during the outage could not retire entries: start a new epoch.
            self._client.incr(self._k("epoch"))
            self._unretired = False
        except Exception:
            self._retry_at = time.monotonic() + self.retry_s
            return False
        log.warning("Redis at %s answers again; re-warming the session tier", self.redis_url)
        self._healthy = True
        self._rewarm()
        return True

    def _guard(self, call: Any) -> Any:
        """Run a Redis call; on failure switch to degraded and return ``_MISSING``."""
        if not self._healthy:
            return _MISSING
        try:
            return call()
        except Exception as exc:
            self.counters["errors"] += 1
            with self._lock:
                if self._healthy:
                    self._healthy = False
                    self.counters["outages"] += 1
                    log.warning(
                        "Redis at %s is unreachable (%s); serving from %s until it is back",
                        self.redis_url,
                        exc,
                        self.url,
                    )
                self._retry_at = time.monotonic() + self.retry_s
            return _MISSING

    def _remember(self, op: Op[Any]) -> None:
        with self._lock:
            self._recent[op] = None
            self._recent.move_to_end(op)
            while len(self._recent) > self.rewarm_sessions:
                self._recent.popitem(last=False)

    def _rewarm(self) -> None:
        with self._lock:
            recent = list(self._recent)
        for op in recent:
            found = self._guard(lambda op=op: self._lookup(op))
            if found is _MISSING:
                return
            if found[1] is None:
                (value,) = self.store.batch([op])
                self._fill(found[0], value)
                self.counters["rewarmed"] += 1

    def _k(self, *parts: Any) -> str:
        digest = hashlib.blake2b(json.dumps(parts[1:]).encode(), digest_size=12).hexdigest()
        return f"{self.prefix}{parts[0]}:{digest}" if len(parts) > 1 else f"{self.prefix}{parts[0]}"


# ---------------------------------------------------------------------------- helpers


def default_prefix(store_url: str) -> str:
    """``memlane:<12 hex>:`` from what identifies the store: for a SQLite file this machine's
    name and the resolved path (so two spellings of one file agree, and two machines'
    files of the same name do not); for PostgreSQL host, port and database (scheme
    spelling and the default port normalized, user and password left out); an in-memory
    store, which no other process can see, gets a prefix of its own."""
    url = redact_url(store_url)
    if url.startswith("memory:") or ":memory:" in url:
        canonical = url + uuid.uuid4().hex
    elif url.startswith("sqlite:///"):
        from memlane.stores.sqlite_sql import parse_sqlite_url

        path = Path(parse_sqlite_url(url)[0]).resolve()  # options aside
        canonical = f"sqlite://{socket.gethostname()}{path}"
    elif url.startswith(("postgresql", "postgres")):
        parts = urlsplit(url)
        host = parts.hostname or ",".join(parse_qs(parts.query).get("host", []))
        canonical = f"postgresql://{host}:{parts.port or 5432}{parts.path}"
    else:
        canonical = url
    return f"memlane:{hashlib.blake2b(canonical.encode(), digest_size=6).hexdigest()}:"


def _retired(ops_: Sequence[Op[Any]]) -> set[tuple[str, ...]]:
    """The (user,) and (user, session) scopes whose cached entries these writes change."""
    scopes: set[tuple[str, ...]] = set()
    for op in ops_:
        if isinstance(op, ops.AppendMessages):
            scopes |= {(m.user_id, m.session_id) for m in op.messages}
        elif isinstance(op, ops.PutState):
            scopes.add((op.state.user_id, op.state.session_id))
        elif isinstance(op, ops.UpsertSession):
            scopes.add((op.session.user_id, op.session.session_id))
        elif isinstance(op, ops.DeleteSessions):
            scopes |= {(op.user_id, sid) for sid in op.session_ids}
        elif isinstance(op, ops.DeleteUser):
            scopes.add((op.user_id,))
    return scopes


def _num(raw: bytes | None) -> int:
    return 0 if raw is None else int(raw)


def _encode(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return json.dumps([m.to_dict() for m in value], ensure_ascii=False)
    return json.dumps(value.to_dict(), ensure_ascii=False)


def _decode(op: Op[Any], raw: bytes) -> Any:
    data = json.loads(raw)
    if isinstance(op, ops.GetMessages):
        return [Message.from_dict(m) for m in data]
    if data is None:
        return None
    if isinstance(op, ops.GetState):
        return StateVersion.from_dict(data)
    return Session.from_dict(data)
