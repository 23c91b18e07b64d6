"""PostgreSQL + pgvector: the shared source of truth for many processes and machines.

Every batch is one transaction on a connection of a :class:`psycopg_pool.ConnectionPool`
(psycopg 3). Operations are written once, sans I/O, in :mod:`memlane.stores.postgres_ops`:
each handler is a generator that yields :class:`Sql` statements and gets back their rows.
Two small runners here execute them:
a blocking one for :meth:`PostgresStore.batch` and an ``async`` one over
:class:`psycopg.AsyncConnection` for :meth:`PostgresStore.abatch`.

Concurrency: compare-and-swap writes lock the row they check (``SELECT ... FOR UPDATE``);
unique constraints turn lost races into ConflictError; messages of one session are
numbered under a transaction-scoped advisory lock; ``ClaimJob`` takes the next due job
with ``FOR UPDATE SKIP LOCKED``; deadlocks and serialization failures re-run the whole
batch. Schema changes are ordered migrations recorded in ``schema_migrations`` and applied
under an advisory lock, so many processes may call :meth:`PostgresStore.setup` at once.

Vectors: pgvector ``vector`` values in ``embeddings`` keyed by (model, content hash), with
one HNSW index (cosine) per model and dimension. A user with at most ``exact_search_limit``
records is searched exactly (a scan of that user's rows); above it the HNSW index answers
with an iterative scan, so filters still get enough candidates, and a search the index
cannot fill (a very selective filter) is answered exactly.

psycopg is imported only when the store is set up: ``import memlane`` stays cheap.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import nullcontext
from contextvars import ContextVar
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from memlane.effects import adrive, drive
from memlane.errors import (
    ConfigurationError,
    ConflictError,
    ForeignStoreError,
    StoreError,
    ValidationError,
    require_extra,
)
from memlane.ports import store as ops
from memlane.ports.store import Op
from memlane.stores.base import Retries, aretrying, refuse_unencodable, retrying
from memlane.stores.postgres_lexical import LEXICAL_BUDGET
from memlane.stores.postgres_ops import CopySearch, PostgresOps, TermsAhead
from memlane.stores.postgres_sql import (
    MIGRATION_LOCK,
    MIGRATIONS,
    RawSql,
    Reply,
    Rows,
    Sql,
    Step,
    check_postgres_url,
)
from memlane.stores.sql.codecs import APPLICATION, WRITE_OPS
from memlane.stores.sql.migrations import MigrationTarget, apply_migrations
from memlane.urls import redact_url

# The drivers are the `postgres` extra; they are imported when a store connects.
require_extra("postgres", "a postgresql:// store", "psycopg", "psycopg_pool", "pgvector")

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

    from memlane.stores.postgres_copy import LexicalCopies

log = logging.getLogger(__name__)


class PostgresStore(PostgresOps):
    """A memlane store in a PostgreSQL database with the pgvector extension."""

    reads_aside = True
    """A hybrid search's lexical read starts while its query is embedded, on a connection
    of its own (:class:`memlane.core.flow.ReadAside`): at a million memories its ~5 ms
    leave the wait of a search with the embedding (bench/scale_pg.md)."""

    def __init__(
        self,
        url: str,
        *,
        min_connections: int = 1,
        max_connections: int = 10,
        connect_timeout_s: float = 10.0,
        exact_search_limit: int = 5_000,
        lexical_budget: int = LEXICAL_BUDGET,
        retries: int = 8,
        lexical_dir: str | Path | None = None,
    ) -> None:
        """``lexical_dir`` (also ``?lexical_dir=`` in the URL): a folder where this
        process keeps copies of the lexical index, one per user it searches, kept in
        step with the database (:mod:`memlane.stores.postgres_copy`). Lexical search
        then ranks by BM25 with tantivy, as the SQLite store does, instead of
        ``ts_rank`` over PostgreSQL's GIN index: at a million memories its p95 goes from
        ~35 to ~n ms (bench/scale_pg.md). Processes on one host may share the folder."""
        url, from_url = _without_lexical_dir(url)
        lexical_dir = lexical_dir if lexical_dir is not None else from_url
        self._conninfo = check_postgres_url(url)
        self.url = redact_url(url)
        self.lexical_dir = None if lexical_dir is None else Path(lexical_dir).expanduser()
        self._copies: LexicalCopies | None = None
        if self.lexical_dir is not None:
            from memlane.stores.postgres_copy import LexicalCopies

            self._copies = LexicalCopies(self.lexical_dir, timeout_s=connect_timeout_s)
        self.min_connections = min_connections
        self.max_connections = max_connections
        self.connect_timeout_s = connect_timeout_s
        self.exact_search_limit = exact_search_limit
        self.lexical_budget = lexical_budget
        self.retries = retries
        self._lock = threading.Lock()
        self._pool: psycopg_pool.ConnectionPool[Any] | None = None
        self._async: dict[asyncio.AbstractEventLoop, _AsyncConnections] = {}
        self._indexed: set[tuple[str, int]] = set()
        self._large_users: set[str] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._token = object()  # names this store in what a batch leaves to the next

    @classmethod
    def from_url(cls, url: str, *, create: bool = True) -> PostgresStore:
        """The store a ``postgresql://`` URL names. ``create`` changes nothing here:
        memlane never creates a PostgreSQL database, the URL's database must exist."""
        return cls(url)

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"

    # ------------------------------------------------------------------ lifecycle

    def setup(self) -> None:
        """Connect, create the schema or apply pending migrations, open the pool.

        Raises StoreError (cannot connect), ForeignStoreError, SchemaVersionError."""
        with self._lock:
            if self._pool is not None:
                return
            psycopg, psycopg_pool = _drivers()
            try:
                with psycopg.connect(
                    self._conninfo, autocommit=True, connect_timeout=int(self.connect_timeout_s)
                ) as conn:
                    self._migrate(conn)
                pool = psycopg_pool.ConnectionPool(
                    self._conninfo,
                    min_size=self.min_connections,
                    max_size=self.max_connections,
                    kwargs={"autocommit": True, "connect_timeout": int(self.connect_timeout_s)},
                    configure=_configure,
                    check=psycopg_pool.ConnectionPool.check_connection,  # survive PG restarts
                    timeout=self.connect_timeout_s,
                    open=False,
                )
                pool.open(wait=True, timeout=self.connect_timeout_s)
            except psycopg.Error as exc:
                raise StoreError(
                    f"cannot open PostgreSQL at {self.url}: {scrub(exc, self._conninfo)}"
                ) from exc
            except psycopg_pool.PoolTimeout as exc:
                raise StoreError(
                    f"cannot connect to PostgreSQL at {self.url}: {scrub(exc, self._conninfo)}"
                ) from exc
            self._pool = pool

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            tables = {
                row[0]
                for row in conn.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = current_schema()"
                )
            }
            ours = {"records", "history", "embeddings", "sessions", "messages", "states", "jobs"}
            if tables & ours and "memlane_meta" not in tables:
                raise ForeignStoreError(
                    f"{self.url} has tables ({', '.join(sorted(tables & ours))}) that memlane "
                    "did not create; refusing to touch them"
                )
            if "memlane_meta" in tables:
                app = conn.execute(
                    "SELECT value FROM memlane_meta WHERE key = 'application'"
                ).fetchone()
                if app is None or app[0] != APPLICATION:
                    raise ForeignStoreError(f"{self.url} is not a memlane database")
            apply_migrations(_migration_target(conn), MIGRATIONS, self.url)

    def close(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown()
                self._executor = None
            if self._pool is not None:
                self._pool.close()
                self._pool = None
            for idle in self._async.values():
                idle.close()
            self._async.clear()
            if self._copies is not None:
                self._copies.close()

    def schema_versions(self) -> list[tuple[int, str]]:
        """The migrations applied to this database, in order."""
        rows = self._run_sync([RawSql("SELECT version, name FROM schema_migrations ORDER BY 1")])
        return [(int(v), str(n)) for v, n in rows[0]]

    # ------------------------------------------------------------------ runners

    def batch(self, ops_: Sequence[Op[Any]]) -> list[Any]:
        return self._run_sync(ops_)

    def _run_sync(self, ops_: Sequence[Op[Any]]) -> list[Any]:
        self.check_supported(ops_)
        ops_, known = self._narrowed(ops_)
        if _all_known(ops_):
            return [{} if read is None else read for read in known]
        if self._pool is None:
            self.setup()
        pool = self._pool
        assert pool is not None
        ops_ = self._with_copies(ops_)

        def attempt() -> list[Any]:
            with pool.connection() as conn:
                spare = self._spare_connections(pool, ops_) if _concurrent(ops_) else []
                try:
                    if spare:
                        return self._reads_at_once(conn, spare, ops_)
                    tx = nullcontext() if _untransacted(ops_) else conn.transaction()
                    with tx, conn.cursor() as cur:
                        if _one_snapshot(ops_):
                            cur.execute(_SNAPSHOT)
                        return [_drive(cur, self._handler(op)(op)) for op in ops_]
                finally:
                    for extra in spare:
                        pool.putconn(extra)

        try:
            done = retrying(attempt, self._retries())
        except UnicodeEncodeError as exc:  # rolled back by the transaction
            raise refuse_unencodable(exc) from exc
        self._after_copies(ops_)
        return self._kept(done, known)

    def _narrowed(self, ops_: Sequence[Op[Any]]) -> tuple[Sequence[Op[Any]], list[Any]]:
        """``ops_`` with each :class:`~memlane.ports.store.SparseOf` asking only for the
        records whose terms the batch just before (in this thread, or this task on an
        event loop) did not read ahead (:class:`TermsAhead`), and per op what was read
        (None for the other ops). What a batch reads ahead serves the next batch only:
        the search's own, made of its candidates (so they are as its candidates were)."""
        ahead = _AHEAD.get()
        if ahead is None:
            return ops_, [None] * len(ops_)
        _AHEAD.set(None)
        owner, reads = ahead
        out: list[Op[Any]] = []
        known: list[Any] = []
        for op in ops_:
            found: dict[str, bytes] | None = None
            if type(op) is ops.SparseOf and owner is self._token:
                found, rest = {}, []
                for rid in op.ids:
                    read = next((r for r in reads if r.covers(op, rid)), None)
                    if read is None:
                        rest.append(rid)
                    elif rid in read.terms:
                        found[rid] = read.terms[rid]
                op = replace(op, ids=tuple(rest))
            out.append(op)
            known.append(found)
        return out, known

    def _kept(self, done: list[Any], known: list[Any]) -> list[Any]:
        """The batch's answers for the core: each :class:`TermsAhead` is its hits, its
        terms kept for the next batch (:meth:`_narrowed`); each narrowed
        :class:`~memlane.ports.store.SparseOf` with what was read ahead for it."""
        reads = [one for one in done if isinstance(one, TermsAhead)]
        if reads:
            _AHEAD.set((self._token, reads))
        return [
            one.hits if isinstance(one, TermsAhead) else one if extra is None else {**extra, **one}
            for one, extra in zip(done, known, strict=True)
        ]

    def _with_copies(self, ops_: Sequence[Op[Any]]) -> Sequence[Op[Any]]:
        """``ops_`` with each lexical search answered by its user's copy of the lexical
        index, brought in step first (with ``lexical_dir``). A search whose copy cannot
        be had now, or whose sync fails (a connection lost: the batch itself is then
        retried), reads PostgreSQL's own index."""
        copies = self._copies
        if copies is None or not any(type(op) is ops.LexicalSearch for op in ops_):
            return ops_
        psycopg, _ = _drivers()
        assert self._pool is not None
        out: list[Op[Any]] = []
        try:
            with self._pool.connection() as conn:
                for op in ops_:
                    if type(op) is ops.LexicalSearch:
                        copy = copies.sync(conn, op.user_id)
                        if copy is not None:
                            values = {f.name: getattr(op, f.name) for f in fields(op)}
                            op = CopySearch(**values, copy=copy)
                    out.append(op)
        except (psycopg.Error, _pool_timeout()) as exc:
            log.warning("a lexical copy could not be synced (%s): PostgreSQL's index answers", exc)
            return ops_
        return out

    def _after_copies(self, ops_: Sequence[Op[Any]]) -> None:
        """After a committed batch: a forgotten user's copy in this process's folder
        leaves the disk now (other folders' copies find themselves unregistered at their
        next search, or when their store is next opened)."""
        forgotten = [op.user_id for op in ops_ if isinstance(op, ops.DeleteUser)]
        if self._copies is None or not forgotten or self._pool is None:
            return
        psycopg, _ = _drivers()
        try:
            with self._pool.connection() as conn:
                for user_id in forgotten:
                    self._copies.discard(conn, user_id)
        except (psycopg.Error, _pool_timeout()) as exc:  # swept at a later start
            log.warning("a forgotten user's lexical copy is left for later: %s", exc)

    @staticmethod
    def _spare_connections(
        pool: psycopg_pool.ConnectionPool[Any], ops_: Sequence[Op[Any]]
    ) -> list[psycopg.Connection[Any]]:
        """Connections for the reads of a search batch after its first, as many as the
        pool has idle now (never waited for, so that batches cannot wait on each other's
        connections, and a pool of one reads in turn at no cost). A pool below its size
        is asked once, briefly, so that it opens one for the next search."""
        from psycopg_pool import PoolTimeout

        spare: list[psycopg.Connection[Any]] = []
        for _ in ops_[_guards(ops_) + 1 :]:
            stats = pool.get_stats()
            idle, size = stats.get("pool_available", 0), stats.get("pool_size", 0)
            if idle == 0 and size >= pool.max_size:
                break
            try:
                spare.append(pool.getconn(timeout=_SPARE_WAIT_S))
            except PoolTimeout:
                break
        return spare

    def _reads_at_once(
        self,
        conn: psycopg.Connection[Any],
        spare: list[psycopg.Connection[Any]],
        ops_: Sequence[Op[Any]],
    ) -> list[Any]:
        """Search reads of one snapshot, each on its own connection at once: a hybrid
        search's index scan and lexical statement take the larger of the two instead of
        their sum, on a server with a core for each.

        The first read runs on ``conn`` (after the model check in front, if any) in a
        transaction that exports its snapshot; the next ones on ``spare`` connections in
        threads, importing it; the rest after the first on ``conn``. Results in the order
        of ``ops_``. ``conn``'s transaction ends once every import is done, not when the
        other reads are (it would sit idle in a transaction meanwhile). When this side
        fails (a model check that refuses, say), the other reads still running are
        cancelled, and this returns once every thread let go of its connection."""
        from psycopg import sql

        imported = [threading.Event() for _ in spare]
        others: list[Future[Any]] = []

        def other(extra: psycopg.Connection[Any], op: Op[Any], done: threading.Event) -> Any:
            try:
                with extra.transaction(), extra.cursor() as cur:
                    cur.execute(_SNAPSHOT)
                    cur.execute(importing)
                    done.set()
                    return _drive(cur, self._handler(op)(op))
            finally:
                done.set()

        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(_SNAPSHOT)
                cur.execute("SELECT pg_export_snapshot()")
                row = cur.fetchone()
                assert row is not None
                importing = sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(row[0]))
                first = _guards(ops_) + 1  # the ops run here before the others' answers
                moved = ops_[first : first + len(spare)]
                threads = self._threads()
                for extra, op, done in zip(spare, moved, imported, strict=True):
                    others.append(threads.submit(other, extra, op, done))
                here = [_drive(cur, self._handler(op)(op)) for op in ops_[:first]]
                here += [_drive(cur, self._handler(op)(op)) for op in ops_[first + len(spare) :]]
                for done in imported[: len(others)]:
                    done.wait()  # the snapshot is taken over before this transaction ends
        except BaseException:
            for extra, future in zip(spare, others, strict=False):
                if not future.done():
                    extra.cancel_safe()
            raise
        finally:
            wait(others)
        return [*here[:first], *(f.result() for f in others), *here[first:]]

    def _threads(self) -> ThreadPoolExecutor:
        """The threads that run a batch's concurrent reads (made on first use)."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=_CONCURRENT_MAX, thread_name_prefix="memlane-pg"
                )
            return self._executor

    async def abatch(self, ops_: Sequence[Op[Any]]) -> list[Any]:
        """:meth:`batch` on the running event loop: the same handlers, driven over an
        async connection."""
        self.check_supported(ops_)
        ops_, known = self._narrowed(ops_)
        if _all_known(ops_):
            return [{} if read is None else read for read in known]
        if self._pool is None:  # open and migrate once (blocking), off the loop
            await asyncio.get_running_loop().run_in_executor(None, self.setup)
        if self._copies is not None:  # (blocking: the copies' files and statements)
            ops_ = await asyncio.get_running_loop().run_in_executor(None, self._with_copies, ops_)
        idle = self._async_connections()

        async def attempt() -> list[Any]:
            conn = await idle.get()
            spare: list[psycopg.AsyncConnection[Any]] = []
            try:
                if _concurrent(ops_):
                    for _ in ops_[_guards(ops_) + 1 :]:
                        extra = await idle.spare()
                        if extra is None:
                            break
                        spare.append(extra)
                if spare:
                    return await self._areads_at_once(conn, spare, ops_)
                tx = nullcontext() if _untransacted(ops_) else conn.transaction()
                async with tx, conn.cursor() as cur:
                    if _one_snapshot(ops_):
                        await cur.execute(_SNAPSHOT)
                    return [await _drive_async(cur, self._handler(op)(op)) for op in ops_]
            finally:
                for extra in spare:
                    idle.put(extra)
                idle.put(conn)

        try:
            done = await aretrying(attempt, self._retries())
        except UnicodeEncodeError as exc:  # rolled back by the transaction
            raise refuse_unencodable(exc) from exc
        if self._copies is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._after_copies, ops_)
        return self._kept(done, known)

    async def _areads_at_once(
        self,
        conn: psycopg.AsyncConnection[Any],
        spare: list[psycopg.AsyncConnection[Any]],
        ops_: Sequence[Op[Any]],
    ) -> list[Any]:
        """:meth:`_reads_at_once` on the event loop: the reads moved to ``spare``
        connections run as tasks beside the first one; when this side fails or is
        cancelled (a timeout), those still running are cancelled too."""
        from psycopg import sql

        imported = [asyncio.Event() for _ in spare]
        others: list[asyncio.Future[Any]] = []

        async def other(
            extra: psycopg.AsyncConnection[Any], op: Op[Any], done: asyncio.Event
        ) -> Any:
            try:
                async with extra.transaction(), extra.cursor() as cur:
                    await cur.execute(_SNAPSHOT)
                    await cur.execute(importing)
                    done.set()
                    return await _drive_async(cur, self._handler(op)(op))
            finally:
                done.set()

        try:
            async with conn.transaction(), conn.cursor() as cur:
                await cur.execute(_SNAPSHOT)
                await cur.execute("SELECT pg_export_snapshot()")
                row = await cur.fetchone()
                assert row is not None
                importing = sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(row[0]))
                first = _guards(ops_) + 1
                moved = ops_[first : first + len(spare)]
                for extra, op, done in zip(spare, moved, imported, strict=True):
                    others.append(asyncio.ensure_future(other(extra, op, done)))
                here = [await _drive_async(cur, self._handler(op)(op)) for op in ops_[:first]]
                for op in ops_[first + len(spare) :]:
                    here.append(await _drive_async(cur, self._handler(op)(op)))
                for done in imported:
                    await done.wait()  # the snapshot is taken over before this ends
        except BaseException:
            for task in others:
                task.cancel()
            raise
        finally:  # the spare connections are free again once this returns
            await asyncio.gather(*others, return_exceptions=True)
        return [*here[:first], *(task.result() for task in others), *here[first:]]

    def _async_connections(self) -> _AsyncConnections:
        loop = asyncio.get_running_loop()
        with self._lock:
            for old in [lp for lp in self._async if lp.is_closed()]:
                self._async.pop(old).close()
            if loop not in self._async:
                self._async[loop] = _AsyncConnections(
                    self._conninfo, self.max_connections, int(self.connect_timeout_s)
                )
            return self._async[loop]

    def _retries(self) -> Retries:
        """Deadlocks and serialization failures re-run the whole batch, up to
        ``retries`` times with backoff; any other driver error is mapped and raised."""
        psycopg, _ = _drivers()
        transient = (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)

        def retry_after(exc: Exception, attempts: int) -> float | None:
            if isinstance(exc, transient) and attempts <= self.retries:
                return _backoff(attempts)
            return None

        return Retries(psycopg.Error, retry_after, lambda exc: _mapped(exc, self.url))


# ---------------------------------------------------------------------------- helpers


def _drivers() -> tuple[Any, Any]:
    """psycopg and psycopg_pool, imported on first use. Raises MissingExtraError."""
    import psycopg
    import psycopg_pool

    return psycopg, psycopg_pool


def _configure(conn: psycopg.Connection[Any]) -> None:
    from pgvector.psycopg import register_vector
    from psycopg.types.json import set_json_loads

    register_vector(conn)
    set_json_loads(_json_loads, conn)
    conn.execute(_READ_COMMITTED)


_READ_COMMITTED = "SET default_transaction_isolation = 'read committed'"
"""memlane's writes are made for READ COMMITTED (row locks, retried conflicts), whatever
the database's default; the triggers that feed the lexical copies rely on it too (a
writer whose snapshot predates a copy's registration would not see it)."""


def _pool_timeout() -> type[Exception]:
    """psycopg_pool's error for a pool with no connection to give in time."""
    from psycopg_pool import PoolTimeout

    return PoolTimeout


def _json_loads(data: str | bytes) -> Any:
    """A JSON column's value (psycopg hands over bytes). A record row holds five
    (topics, metadata, sources ...), most often ``[]`` or ``{}``: those are made without
    the parser (reading 125 rows, what a hybrid search reads at a million memories, took
    2.0 ms of client CPU, 0.9 ms so)."""
    if data == b"[]":
        return []
    if data == b"{}":
        return {}
    return json.loads(data)


def _migration_target(conn: psycopg.Connection[Any]) -> MigrationTarget:
    def query(sql: str, params: Sequence[Any]) -> Rows:
        cur = conn.execute(sql.encode(), params)
        return cur.fetchall() if cur.description else []

    def run_script(script: str) -> None:
        conn.execute(script.encode())

    return MigrationTarget(
        query=query,
        run_script=run_script,
        mark="%s",
        create_table="CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY "
        "KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
    )


def _drive(cur: psycopg.Cursor[Any], steps: Step) -> Any:
    """Run an op's statements on ``cur``; nothing is caught (errors propagate)."""

    def handle(sql: Sql) -> Reply:
        if sql.many:
            cur.executemany(sql.text.encode(), sql.params)
            return ([], cur.rowcount)
        cur.execute(sql.text.encode(), sql.params or None)
        return (cur.fetchall() if cur.description else [], cur.rowcount)

    return drive(steps, handle, catch=())


async def _drive_async(cur: psycopg.AsyncCursor[Any], steps: Step) -> Any:
    """:func:`_drive` with awaited statements."""

    async def handle(sql: Sql) -> Reply:
        if sql.many:
            await cur.executemany(sql.text.encode(), sql.params)
            return ([], cur.rowcount)
        await cur.execute(sql.text.encode(), sql.params or None)
        return (await cur.fetchall() if cur.description else [], cur.rowcount)

    return await adrive(steps, handle, catch=())


def scrub(exc: BaseException, conninfo: str) -> str:
    """The error's message without the connection's password (libpq may echo it)."""
    message = str(exc)
    try:
        password = urlsplit(conninfo).password
    except ValueError:
        password = None
    for secret in filter(None, (password, password and unquote(password))):
        message = message.replace(secret, "***")
    return message


class _AsyncConnections:
    """Idle async connections of one event loop, at most ``limit`` in use at once.

    A pool without background tasks: an event loop may end without closing it (the
    connections are closed when the store closes or notices that the loop has ended)."""

    def __init__(self, conninfo: str, limit: int, connect_timeout_s: int = 10) -> None:
        self.conninfo = conninfo
        self.connect_timeout_s = connect_timeout_s
        self.idle: list[psycopg.AsyncConnection[Any]] = []
        self.slots = asyncio.Semaphore(limit)
        self.warned = False
        """Whether a spare connection failed to open (said once)."""

    async def get(self) -> psycopg.AsyncConnection[Any]:
        pg, _ = _drivers()
        await self.slots.acquire()
        try:
            while self.idle:
                conn = self.idle.pop()
                if not conn.closed:
                    return conn
            conn = await pg.AsyncConnection.connect(
                self.conninfo, autocommit=True, connect_timeout=self.connect_timeout_s
            )
            try:
                from pgvector.psycopg import register_vector_async
                from psycopg.types.json import set_json_loads

                await register_vector_async(conn)
                set_json_loads(_json_loads, conn)
                await conn.execute(_READ_COMMITTED)
            except BaseException:
                await conn.close()
                raise
            return conn  # type: ignore[no-any-return]
        except pg.Error as exc:
            self.slots.release()
            raise StoreError(f"cannot connect to PostgreSQL: {scrub(exc, self.conninfo)}") from exc
        except BaseException:
            self.slots.release()
            raise

    async def spare(self) -> psycopg.AsyncConnection[Any] | None:
        """Another connection for reads at once, only if one may be in use without
        waiting (opened if none is idle); None otherwise, so that batches never wait on
        each other's connections."""
        if self.slots.locked():
            return None
        try:
            return await self.get()
        except StoreError as exc:  # the server takes no more connections: read in turn
            if not self.warned:
                self.warned = True
                log.warning("searches read in turn: no further connection (%s)", exc)
            return None

    def put(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Take a connection back (kept only if it is healthy and outside a transaction)."""
        pg, _ = _drivers()
        if not conn.closed and conn.info.transaction_status == pg.pq.TransactionStatus.IDLE:
            self.idle.append(conn)
        else:
            conn.pgconn.finish()
        self.slots.release()

    def close(self) -> None:
        for conn in self.idle:
            conn.pgconn.finish()  # synchronous: works with or without the event loop
        self.idle.clear()


_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"


_SEARCH_READS = (
    ops.GetRecords,
    ops.VectorSearch,
    ops.LexicalSearch,
    ops.GetNeighbors,
    ops.SparseOf,
)
"""Reads that need no transaction of their own: one statement each (a vector search: its
settings, then the index scan or the exact scan, each answering alone)."""


def _without_lexical_dir(url: str) -> tuple[str, str | None]:
    """``url`` without its ``lexical_dir`` query parameter (memlane's, not libpq's),
    and that parameter's value; the other parameters are kept as written."""
    parts = urlsplit(url)
    items = parts.query.split("&") if parts.query else []
    found = [unquote(i.partition("=")[2]) for i in items if i.partition("=")[0] == "lexical_dir"]
    if not found:
        return url, None
    if len(found) > 1 or not found[0]:
        raise ConfigurationError("lexical_dir is given more than once, or empty, in the URL")
    kept = "&".join(i for i in items if i.partition("=")[0] != "lexical_dir")
    return urlunsplit(parts._replace(query=kept)), found[0]


_AHEAD: ContextVar[tuple[object, list[TermsAhead]] | None] = ContextVar(
    "memlane_postgres_terms_ahead", default=None
)
"""What the last batch of this thread (or task) read ahead, and the store that read it."""


def _all_known(ops_: Sequence[Op[Any]]) -> bool:
    """Whether a batch is only :class:`~memlane.ports.store.SparseOf` of no records (or
    narrowed to none): answered from what was read ahead, if anything, with no
    statement."""
    return bool(ops_) and all(type(op) is ops.SparseOf and not op.ids for op in ops_)


def _untransacted(ops_: Sequence[Op[Any]]) -> bool:
    """Whether a batch is one search read, run without BEGIN and COMMIT: two round trips
    of each of a search's few batches (the statements see one snapshot each, as they
    would in a READ COMMITTED transaction)."""
    return len(ops_) == 1 and isinstance(ops_[0], _SEARCH_READS)


_CONCURRENT_MAX = 4
"""Search reads run at once at most, beyond the caller's own (a hybrid search has 2)."""

_SPARE_WAIT_S = 0.001
"""How long a batch of concurrent reads asks a pool below its size for a further
connection (an idle one comes at once): it answers the next search, opening one
meanwhile. (It was 50 ms, paid by every search of a busy or one-connection pool.)"""


def _concurrent(ops_: Sequence[Op[Any]]) -> bool:
    """Whether a batch is several search reads, run at once on as many connections
    (:meth:`PostgresStore._reads_at_once`), after the embedding-model check that the
    runners put in front of a vector search (a read too)."""
    reads = ops_[_guards(ops_) :]
    return 1 < len(reads) <= _CONCURRENT_MAX + 1 and all(
        isinstance(op, _SEARCH_READS) for op in reads
    )


def _guards(ops_: Sequence[Op[Any]]) -> int:
    """How many ops in front of a batch are the embedding-model check of a search (0 or
    1): it reads and records nothing, and runs first on the batch's own connection."""
    first = ops_[0] if ops_ else None
    return int(isinstance(first, ops.CheckEmbeddingModel) and not first.record)


def _one_snapshot(ops_: Sequence[Op[Any]]) -> bool:
    """Whether a batch reads several things and writes nothing: it then reads one
    snapshot, as on SQLite (under READ COMMITTED each statement would see its own)."""
    return len(ops_) > 1 and not any(isinstance(op, WRITE_OPS) for op in ops_)


def _mapped(exc: Exception, url: str) -> Exception:
    """A memlane error for a driver error."""
    psycopg, _ = _drivers()
    # Only the primary message: its DETAIL line quotes the row's values (user ids with
    # their tenant, keys), which clients of the server must not see.
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) or str(exc).split("\n", 1)[0]
    if isinstance(exc, psycopg.errors.IntegrityError):
        return ConflictError(
            f"a concurrent write got there first: {primary}", expected=None, actual=None
        )
    if isinstance(exc, psycopg.errors.DataError):
        return ValidationError(f"PostgreSQL cannot store this value: {primary}")
    return StoreError(f"PostgreSQL error at {url}: {exc}")


def _backoff(attempt: int) -> float:
    return float(min(0.5, 0.005 * 2**attempt) * (0.5 + random.random()))


__all__ = ["PostgresStore", "Sql"]
