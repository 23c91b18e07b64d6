"""PostgreSQL + pgvector: the shared source of truth for many processes and machines.

Every batch is one transaction on a connection of a :class:`psycopg_pool.ConnectionPool`
(psycopg 3). Operations are written once, sans I/O: each handler is a generator that
yields :class:`Sql` statements and gets back their rows. Two small runners execute them:
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
import hashlib
import json
import logging
import random
import threading
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import numpy as np

from memlane.errors import (
    ConflictError,
    ForeignStoreError,
    StoreError,
    ValidationError,
    require_extra,
)
from memlane.models import Job, JobStatus, Message
from memlane.ports import store as ops
from memlane.ports.embedder import Vector
from memlane.ports.store import SESSION_BOUND_KINDS, Op
from memlane.stores.base import (
    OpDispatch,
    Retries,
    aretrying,
    handles,
    retrying,
    should_write,
)
from memlane.stores.neighbors import collect_neighbors, neighbors_sql
from memlane.stores.postgres_sql import (
    CLAIM_JOB,
    INSERT_RECORD,
    MIGRATION_LOCK,
    MIGRATIONS,
    RECORD_SELECT,
    REINDEX_DELETED_AFTER,
    TS_CONFIG,
    UPDATE_RECORD,
    check_postgres_url,
    event_params,
    filter_sql,
    job_params,
    message_params,
    record_params,
    row_event,
    row_job,
    row_message,
    row_record,
    row_session,
    row_state,
    session_params,
    state_params,
    ts_query,
)
from memlane.stores.sql.codecs import APPLICATION, WRITE_OPS
from memlane.stores.sql.migrations import MigrationTarget, apply_migrations
from memlane.urls import redact_url

# The drivers are the `postgres` extra; they are imported when a store connects.
require_extra("postgres", "a postgresql:// store", "psycopg", "psycopg_pool", "pgvector")

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Sql:
    """One statement for a runner to execute; ``many`` runs it once per parameter set."""

    text: str
    params: Any = ()
    many: bool = False


Rows = list[tuple[Any, ...]]
Reply = tuple[Rows, int]
"""What a runner sends back for a statement: its rows (if any) and its row count."""

Step = Generator[Sql, Reply, Any]


@dataclass(frozen=True, slots=True)
class _Raw(Op[list[tuple[Any, ...]]]):
    """A read-only statement for the store's own introspection."""

    sql: str


class PostgresStore(OpDispatch):
    """A memlane store in a PostgreSQL database with the pgvector extension."""

    def __init__(
        self,
        url: str,
        *,
        min_connections: int = 1,
        max_connections: int = 10,
        connect_timeout_s: float = 10.0,
        exact_search_limit: int = 5_000,
        retries: int = 8,
    ) -> None:
        self._conninfo = check_postgres_url(url)
        self.url = redact_url(url)
        self.min_connections = min_connections
        self.max_connections = max_connections
        self.connect_timeout_s = connect_timeout_s
        self.exact_search_limit = exact_search_limit
        self.retries = retries
        self._lock = threading.Lock()
        self._pool: psycopg_pool.ConnectionPool[Any] | None = None
        self._async: dict[asyncio.AbstractEventLoop, _AsyncConnections] = {}
        self._indexed: set[tuple[str, int]] = set()

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
            if self._pool is not None:
                self._pool.close()
                self._pool = None
            for idle in self._async.values():
                idle.close()
            self._async.clear()

    def schema_versions(self) -> list[tuple[int, str]]:
        """The migrations applied to this database, in order."""
        rows = self._run_sync([_Raw("SELECT version, name FROM schema_migrations ORDER BY 1")])
        return [(int(v), str(n)) for v, n in rows[0]]

    # ------------------------------------------------------------------ runners

    def batch(self, ops_: Sequence[Op[Any]]) -> list[Any]:
        return self._run_sync(ops_)

    def _run_sync(self, ops_: Sequence[Op[Any]]) -> list[Any]:
        self.check_supported(ops_)
        if self._pool is None:
            self.setup()
        pool = self._pool
        assert pool is not None

        def attempt() -> list[Any]:
            with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                if _one_snapshot(ops_):
                    cur.execute(_SNAPSHOT)
                return [_drive(cur, self._handler(op)(op)) for op in ops_]

        return retrying(attempt, self._retries())

    async def abatch(self, ops_: Sequence[Op[Any]]) -> list[Any]:
        """:meth:`batch` on the running event loop: the same handlers, driven over an
        async connection."""
        self.check_supported(ops_)
        if self._pool is None:  # open and migrate once (blocking), off the loop
            await asyncio.get_running_loop().run_in_executor(None, self.setup)
        idle = self._async_connections()

        async def attempt() -> list[Any]:
            conn = await idle.get()
            try:
                async with conn.transaction(), conn.cursor() as cur:
                    if _one_snapshot(ops_):
                        await cur.execute(_SNAPSHOT)
                    return [await _drive_async(cur, self._handler(op)(op)) for op in ops_]
            finally:
                idle.put(conn)

        return await aretrying(attempt, self._retries())

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

    @handles(_Raw)
    def _op_Raw(self, op: _Raw) -> Step:
        rows, _ = yield Sql(op.sql)
        return rows

    # ------------------------------------------------------------------ records

    @handles(ops.WriteRecord)
    def _op_WriteRecord(self, op: ops.WriteRecord) -> Step:
        r = op.record
        # Ids are unique per user: the same id in another scope is another record.
        rows, _ = yield Sql(
            "SELECT version FROM records WHERE user_id = %s AND id = %s FOR UPDATE",
            (r.user_id, r.id),
        )
        actual = rows[0][0] if rows else None
        if not should_write(op, actual):
            return None
        yield Sql(INSERT_RECORD if actual is None else UPDATE_RECORD, record_params(r))
        return None

    @handles(ops.AppendHistory)
    def _op_AppendHistory(self, op: ops.AppendHistory) -> Step:
        if op.events:
            yield Sql(
                "INSERT INTO history VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                [event_params(e) for e in sorted(op.events, key=lambda e: e.id)],
                many=True,
            )
        return None

    @handles(ops.GetRecords)
    def _op_GetRecords(self, op: ops.GetRecords) -> Step:
        rows, _ = yield Sql(
            f"SELECT {RECORD_SELECT} FROM records r WHERE r.user_id = %s AND r.id = ANY(%s)",
            (op.user_id, list(op.ids)),
        )
        found = {rec.id: rec for rec in map(row_record, rows)}
        return [found[i] for i in op.ids if i in found]

    @handles(ops.ListRecords)
    def _op_ListRecords(self, op: ops.ListRecords) -> Step:
        where, params = filter_sql(op.user_id, op.filters, op.now)
        if op.after_id is not None:
            where += " AND r.id < %s" if op.descending else " AND r.id > %s"
            params.append(op.after_id)
        order = "DESC" if op.descending else "ASC"
        rows, _ = yield Sql(
            f"SELECT {RECORD_SELECT} FROM records r WHERE {where} ORDER BY r.id {order} LIMIT %s",
            (*params, op.limit),
        )
        return [row_record(row) for row in rows]

    @handles(ops.LexicalSearch)
    def _op_LexicalSearch(self, op: ops.LexicalSearch) -> Step:
        with_context = op.context_weight > 0
        query = ts_query(op.query, with_context=with_context)
        if query is None:
            return []
        where, params = filter_sql(op.user_id, op.filters, op.now)
        weights = [min(float(op.context_weight), 1.0), 0.0, 0.0, 1.0]
        # ts_rank's weights go up to 1: scale the context weight against the text's.
        if op.context_weight > 1:
            weights = [1.0, 0.0, 0.0, 1.0 / float(op.context_weight)]
        rows, _ = yield Sql(
            f"SELECT r.id, ts_rank(%s::float4[], r.search, q, 1) AS score "
            f"FROM records r, to_tsquery('{TS_CONFIG}', %s) q "
            f"WHERE r.search @@ q AND {where} ORDER BY score DESC, r.id LIMIT %s",
            (weights, query, *params, op.limit),
        )
        return [(rid, float(score)) for rid, score in rows]

    @handles(ops.VectorSearch)
    def _op_VectorSearch(self, op: ops.VectorSearch) -> Step:
        query = np.asarray(op.vector, dtype=np.float32)
        dim = int(query.shape[0])
        where, params = filter_sql(op.user_id, op.filters, op.now)
        hash_of = (
            "COALESCE(r.context_hash, r.content_hash)"
            if op.field == "context"
            else "r.content_hash"
        )
        rows, _ = yield Sql(
            "SELECT count(*) FROM (SELECT 1 FROM records WHERE user_id = %s LIMIT %s) t",
            (op.user_id, self.exact_search_limit + 1),
        )
        exact = (
            "SELECT r.id, 1 - (e.vector <=> %s) AS sim FROM records r JOIN embeddings e "
            f"ON e.model = %s AND e.dim = %s AND e.content_hash = {hash_of} WHERE {where} "
            "ORDER BY e.vector <=> %s, r.id LIMIT %s",
            (query, op.model, dim, *params, query, op.limit),
        )
        if rows[0][0] > self.exact_search_limit:
            found = yield from self._approximate(op, query, hash_of, where, params)
            if len(found) >= op.limit:
                return found
            # Too few candidates passed the filters within the index scan's budget:
            # answer exactly rather than return less than there is.
        # Exact: the distance expression does not match the HNSW index, so the planner
        # reads this user's rows (by the user index) and sorts them.
        rows, _ = yield Sql(*exact)
        return [(rid, float(sim)) for rid, sim in rows]

    def _approximate(
        self, op: ops.VectorSearch, query: Any, hash_of: str, where: str, params: list[Any]
    ) -> Step:
        """The HNSW index's nearest records (iterative scan, so filters still fill it)."""
        dim = int(query.shape[0])
        yield Sql(f"SET LOCAL hnsw.ef_search = {max(40, min(1000, 2 * op.limit))}")
        yield Sql("SET LOCAL hnsw.iterative_scan = relaxed_order")
        typed = f"(e.vector::vector({dim}))"
        rows, _ = yield Sql(
            f"SELECT r.id, 1 - ({typed} <=> %s::vector({dim})) AS sim FROM embeddings e "
            f"JOIN records r ON {hash_of} = e.content_hash WHERE e.model = %s "
            f"AND e.dim = {dim} AND {where} "
            f"ORDER BY {typed} <=> %s::vector({dim}) LIMIT %s",
            (query, op.model, *params, query, op.limit),
        )
        # relaxed_order may return near-ties slightly out of order: sort them here.
        return sorted(((rid, float(sim)) for rid, sim in rows), key=lambda p: (-p[1], p[0]))

    @handles(ops.GetNeighbors)
    def _op_GetNeighbors(self, op: ops.GetNeighbors) -> Step:
        ids = tuple(dict.fromkeys(op.ids))
        found: list[tuple[str, str]] = []
        if op.window > 0:
            same = "IS NOT DISTINCT FROM"
            for sql, params in neighbors_sql(op.user_id, ids, op.window, op.now, "%s", same):
                rows, _ = yield Sql(sql, params)
                found += [(hit, nid) for hit, nid in rows]
        return collect_neighbors(ids, found)

    @handles(ops.GetHistory)
    def _op_GetHistory(self, op: ops.GetHistory) -> Step:
        rows, _ = yield Sql(
            "SELECT * FROM history WHERE user_id = %s AND record_id = %s ORDER BY id",
            (op.user_id, op.record_id),
        )
        return [row_event(row) for row in rows]

    @handles(ops.ListUserHistory)
    def _op_ListUserHistory(self, op: ops.ListUserHistory) -> Step:
        rows, _ = yield Sql(
            "SELECT * FROM history WHERE user_id = %s AND id > %s ORDER BY id LIMIT %s",
            (op.user_id, op.after_id or "", op.limit),
        )
        return [row_event(row) for row in rows]

    @handles(ops.TouchRecords)
    def _op_TouchRecords(self, op: ops.TouchRecords) -> Step:
        if op.ids:
            # Sorted, so concurrent touches lock rows in one order and cannot deadlock.
            yield Sql(
                "UPDATE records SET access_count = access_count + 1, last_accessed_at = %s "
                "WHERE user_id = %s AND id IN (SELECT id FROM records WHERE user_id = %s "
                "AND id = ANY(%s) ORDER BY id FOR UPDATE)",
                (op.at, op.user_id, op.user_id, sorted(set(op.ids))),
            )
        return None

    @handles(ops.FindExpired)
    def _op_FindExpired(self, op: ops.FindExpired) -> Step:
        rows, _ = yield Sql(
            f"SELECT {RECORD_SELECT} FROM records r "
            "WHERE r.expires_at IS NOT NULL AND r.expires_at <= %s ORDER BY r.id LIMIT %s",
            (op.now, op.limit),
        )
        return [row_record(row) for row in rows]

    @handles(ops.RemoveRecords)
    def _op_RemoveRecords(self, op: ops.RemoveRecords) -> Step:
        key = (op.user_id, list(op.ids))
        yield Sql(
            "UPDATE history SET snapshot = NULL WHERE snapshot IS NOT NULL "
            "AND user_id = %s AND record_id = ANY(%s)",
            key,
        )
        turns, _ = yield Sql(
            "SELECT session_id, agent_id, id FROM records WHERE user_id = %s AND id = ANY(%s) "
            "AND kind = 'episode' AND session_id IS NOT NULL ORDER BY id",
            key,
        )
        _, n = yield Sql("DELETE FROM records WHERE user_id = %s AND id = ANY(%s)", key)
        for session_id, agent_id, rid in turns:  # the words leave every search vector
            yield Sql(REINDEX_DELETED_AFTER, (op.user_id, session_id, agent_id, rid, rid))
        return n

    # ------------------------------------------------------------------ embeddings

    @handles(ops.GetEmbeddings)
    def _op_GetEmbeddings(self, op: ops.GetEmbeddings) -> Step:
        rows, _ = yield Sql(
            "SELECT content_hash, vector FROM embeddings "
            "WHERE model = %s AND content_hash = ANY(%s)",
            (op.model, list(op.hashes)),
        )
        return {h: _as_array(v) for h, v in rows}

    @handles(ops.PutEmbeddings)
    def _op_PutEmbeddings(self, op: ops.PutEmbeddings) -> Step:
        if op.keep:
            kept = sorted(dict(op.keep).items())  # one order for every writer: no deadlocks
            yield Sql(
                "INSERT INTO embeddings VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (model, content_hash) DO NOTHING",
                [(op.model, h, len(v), np.asarray(v, dtype=np.float32)) for h, v in kept],
                many=True,
            )
        if not op.items:
            return None
        items = sorted(dict(op.items).items())  # one order for every writer: no deadlocks
        vectors = [(h, np.asarray(v, dtype=np.float32)) for h, v in items]
        for dim in sorted({int(v.shape[0]) for _, v in vectors}):
            if (op.model, dim) not in self._indexed and (
                yield from self._ensure_hnsw(op.model, dim)
            ):
                self._indexed.add((op.model, dim))
        yield Sql(
            "INSERT INTO embeddings VALUES (%s, %s, %s, %s) ON CONFLICT (model, content_hash) "
            "DO UPDATE SET dim = excluded.dim, vector = excluded.vector",
            [(op.model, h, int(v.shape[0]), v) for h, v in vectors],
            many=True,
        )
        return None

    def _ensure_hnsw(self, model: str, dim: int) -> Step:
        """An HNSW index (cosine) over this model's vectors of this dimension. Returns
        True when it was there already (committed, so the process may remember it); an
        index created here is only remembered once a later batch finds it, so a rolled
        back creation is retried rather than forgotten."""
        if not 0 < dim <= 2000:
            return True  # beyond what pgvector indexes: searched exactly
        name = hnsw_index_name(model, dim)
        digest = name.removeprefix("embeddings_hnsw_")
        rows, _ = yield Sql("SELECT 1 FROM pg_indexes WHERE indexname = %s", (name,))
        if rows:
            return True
        yield Sql("SELECT pg_advisory_xact_lock(%s)", (int(digest[:15], 16),))
        literal = "'" + model.replace("'", "''") + "'"
        yield Sql(
            f"CREATE INDEX IF NOT EXISTS {name} ON embeddings USING hnsw "
            f"((vector::vector({dim})) vector_cosine_ops) "
            f"WHERE model = {literal} AND dim = {dim}"
        )
        return False

    def _recorded_model(self) -> Step:
        rows, _ = yield Sql("SELECT value FROM memlane_meta WHERE key = 'embedding_model'")
        if not rows:
            return None
        model, dim = json.loads(rows[0][0])
        return str(model), int(dim)

    def _adopted_model(self) -> Step:
        rows, _ = yield Sql(
            "SELECT (SELECT min(model) FROM embeddings), (SELECT max(model) FROM embeddings)"
        )
        low, high = rows[0]
        if low is None or low != high:
            return None
        rows, _ = yield Sql("SELECT dim FROM embeddings WHERE model = %s LIMIT 1", (low,))
        return str(low), int(rows[0][0])

    @handles(ops.CheckEmbeddingModel)
    def _op_CheckEmbeddingModel(self, op: ops.CheckEmbeddingModel) -> Step:
        recorded = yield from self._recorded_model()
        adopted = (yield from self._adopted_model()) if recorded is None else None
        new = ops.embedding_model_to_record(op, recorded, lambda: adopted)
        if new is not None:
            yield Sql(
                "INSERT INTO memlane_meta VALUES ('embedding_model', %s) "
                "ON CONFLICT (key) DO NOTHING",
                (json.dumps(list(new)),),
            )
            # Another process may have recorded a model first (the insert waited for its
            # commit and did nothing): check against what is recorded now.
            now = yield from self._recorded_model()
            ops.embedding_model_to_record(op, now, lambda: None)
        return None

    @handles(ops.GetEmbeddingModel)
    def _op_GetEmbeddingModel(self, op: ops.GetEmbeddingModel) -> Step:
        recorded = yield from self._recorded_model()
        return recorded if recorded is not None else (yield from self._adopted_model())

    @handles(ops.SetEmbeddingModel)
    def _op_SetEmbeddingModel(self, op: ops.SetEmbeddingModel) -> Step:
        yield Sql(
            "INSERT INTO memlane_meta VALUES ('embedding_model', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (json.dumps([op.model, op.dim]),),
        )
        return None

    @handles(ops.DropEmbeddings)
    def _op_DropEmbeddings(self, op: ops.DropEmbeddings) -> Step:
        _, n = yield Sql("DELETE FROM embeddings WHERE model <> %s", (op.keep,))
        return n

    @handles(ops.PruneEmbeddings)
    def _op_PruneEmbeddings(self, op: ops.PruneEmbeddings) -> Step:
        _, n = yield Sql(
            "DELETE FROM embeddings e WHERE NOT EXISTS "
            "(SELECT 1 FROM records r WHERE r.content_hash = e.content_hash) "
            "AND NOT EXISTS (SELECT 1 FROM records r WHERE r.context_hash = e.content_hash)"
        )
        return n

    # ------------------------------------------------------------------ sessions

    @handles(ops.UpsertSession)
    def _op_UpsertSession(self, op: ops.UpsertSession) -> Step:
        yield Sql(
            "INSERT INTO sessions VALUES (%s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (user_id, session_id) DO UPDATE SET "
            "updated_at = GREATEST(sessions.updated_at, excluded.updated_at), "
            "metadata = CASE WHEN excluded.metadata = '{}' THEN sessions.metadata "
            "ELSE excluded.metadata END",
            session_params(op.session),
        )
        return None

    @handles(ops.GetSession)
    def _op_GetSession(self, op: ops.GetSession) -> Step:
        rows, _ = yield Sql(
            "SELECT * FROM sessions WHERE user_id = %s AND session_id = %s",
            (op.user_id, op.session_id),
        )
        return row_session(rows[0]) if rows else None

    @handles(ops.ListSessions)
    def _op_ListSessions(self, op: ops.ListSessions) -> Step:
        where, params = "user_id = %s", list[Any]([op.user_id])
        if op.after_id is not None:
            where += " AND session_id > %s"
            params.append(op.after_id)
        if op.updated_before is not None:
            where += " AND updated_at < %s"
            params.append(op.updated_before)
        rows, _ = yield Sql(
            f"SELECT * FROM sessions WHERE {where} ORDER BY session_id LIMIT %s",
            (*params, op.limit),
        )
        return [row_session(row) for row in rows]

    @handles(ops.AppendMessages)
    def _op_AppendMessages(self, op: ops.AppendMessages) -> Step:
        out: list[Message] = []
        locked: set[tuple[str, str]] = set()
        for m in op.messages:
            key = (m.user_id, m.session_id)
            if op.assign_seq and key not in locked:
                # Writers of one session take turns numbering its messages.
                yield Sql("SELECT pg_advisory_xact_lock(%s)", (_lock_key("messages", *key),))
                locked.add(key)
            if op.assign_seq:
                rows, _ = yield Sql(
                    "SELECT COALESCE(MAX(seq), 0) FROM messages "
                    "WHERE user_id = %s AND session_id = %s",
                    key,
                )
                m = Message(**{**m.to_dict(), "created_at": m.created_at, "seq": rows[0][0] + 1})
            _, n = yield Sql(
                "INSERT INTO messages VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                message_params(m),
            )
            if n:
                out.append(m)
        return out

    @handles(ops.GetMessages)
    def _op_GetMessages(self, op: ops.GetMessages) -> Step:
        sql = "SELECT * FROM messages WHERE user_id = %s AND session_id = %s"
        params: list[Any] = [op.user_id, op.session_id]
        if op.last_runs is not None:
            sql += (
                " AND run_id IN (SELECT run_id FROM messages WHERE user_id = %s "
                "AND session_id = %s GROUP BY run_id ORDER BY MAX(seq) DESC LIMIT %s)"
            )
            params += [op.user_id, op.session_id, op.last_runs]
        rows, _ = yield Sql(sql + " ORDER BY seq", params)
        return [row_message(row) for row in rows]

    @handles(ops.DeleteSessions)
    def _op_DeleteSessions(self, op: ops.DeleteSessions) -> Step:
        if not op.session_ids:
            return 0
        key = (op.user_id, list(op.session_ids))
        _, n = yield Sql("DELETE FROM sessions WHERE user_id = %s AND session_id = ANY(%s)", key)
        yield Sql("DELETE FROM messages WHERE user_id = %s AND session_id = ANY(%s)", key)
        yield Sql("DELETE FROM states WHERE user_id = %s AND session_id = ANY(%s)", key)
        bound = (*key, sorted(k.value for k in SESSION_BOUND_KINDS))
        yield Sql(
            "UPDATE history SET snapshot = NULL WHERE snapshot IS NOT NULL AND user_id = %s "
            "AND record_id IN (SELECT id FROM records WHERE user_id = %s "
            "AND session_id = ANY(%s) AND kind = ANY(%s))",
            (op.user_id, *bound),
        )
        yield Sql(
            "DELETE FROM records WHERE user_id = %s AND session_id = ANY(%s) AND kind = ANY(%s)",
            bound,
        )
        return n

    # ------------------------------------------------------------------ state

    @handles(ops.GetState)
    def _op_GetState(self, op: ops.GetState) -> Step:
        sql = "SELECT * FROM states WHERE user_id = %s AND session_id = %s AND name = %s"
        params: list[Any] = [op.user_id, op.session_id, op.name]
        if op.version is not None:
            sql += " AND version = %s"
            params.append(op.version)
        rows, _ = yield Sql(sql + " ORDER BY version DESC LIMIT 1", params)
        return row_state(rows[0]) if rows else None

    @handles(ops.PutState)
    def _op_PutState(self, op: ops.PutState) -> Step:
        s = op.state
        rows, _ = yield Sql(
            "SELECT COALESCE(MAX(version), 0) FROM states "
            "WHERE user_id = %s AND session_id = %s AND name = %s",
            (s.user_id, s.session_id, s.name),
        )
        current = rows[0][0]
        if op.expected_version is not None and current != op.expected_version:
            raise ConflictError(
                f"state {s.name!r} of session {s.session_id!r} is at version {current}, "
                f"expected {op.expected_version}",
                expected=op.expected_version,
                actual=current,
            )
        # A concurrent writer of the same version trips the primary key: ConflictError.
        conflict = "ON CONFLICT DO NOTHING" if op.expected_version is None else ""
        yield Sql(f"INSERT INTO states VALUES (%s, %s, %s, %s, %s, %s) {conflict}", state_params(s))
        return None

    @handles(ops.ListStateVersions)
    def _op_ListStateVersions(self, op: ops.ListStateVersions) -> Step:
        rows, _ = yield Sql(
            "SELECT * FROM states WHERE user_id = %s AND session_id = %s AND name = %s "
            "ORDER BY version",
            (op.user_id, op.session_id, op.name),
        )
        return [row_state(row) for row in rows]

    @handles(ops.ListStates)
    def _op_ListStates(self, op: ops.ListStates) -> Step:
        rows, _ = yield Sql(
            "SELECT DISTINCT ON (name) * FROM states WHERE user_id = %s AND session_id = %s "
            "AND starts_with(name, %s) ORDER BY name, version DESC",
            (op.user_id, op.session_id, op.prefix),
        )
        return [row_state(row) for row in rows]

    # ------------------------------------------------------------------ jobs

    @handles(ops.PutJob)
    def _op_PutJob(self, op: ops.PutJob) -> Step:
        rows, _ = yield Sql(
            "SELECT version FROM jobs WHERE user_id = %s AND id = %s FOR UPDATE",
            (op.job.user_id, op.job.id),
        )
        row = rows[0] if rows else None
        actual = 0 if row is None else row[0]
        if op.expected_version is None:
            if row is not None and actual >= op.job.version:
                return None
        elif actual != op.expected_version:
            raise ConflictError(
                f"job {op.job.id} is at version {actual}, expected {op.expected_version}",
                expected=op.expected_version,
                actual=actual,
            )
        yield from self._write_job(op.job, insert=row is None)
        return None

    def _write_job(self, job: Job, *, insert: bool) -> Step:
        if insert:
            yield Sql("INSERT INTO jobs VALUES (%s, %s, %s, %s, %s, %s, %s)", job_params(job))
        else:
            yield Sql(
                "UPDATE jobs SET status = %s, run_after = %s, lease_until = %s, "
                "version = %s, body = %s WHERE user_id = %s AND id = %s",
                (*job_params(job)[2:], job.user_id, job.id),
            )
        return None

    @handles(ops.GetJob)
    def _op_GetJob(self, op: ops.GetJob) -> Step:
        rows, _ = yield Sql(
            "SELECT body FROM jobs WHERE id = %s AND user_id = %s", (op.job_id, op.user_id)
        )
        return row_job(rows[0]) if rows else None

    @handles(ops.ListJobs)
    def _op_ListJobs(self, op: ops.ListJobs) -> Step:
        clauses, params = ["TRUE"], list[Any]()
        if op.user_id is not None:
            clauses.append("user_id = %s")
            params.append(op.user_id)
        if op.statuses:
            clauses.append("status = ANY(%s)")
            params.append([s.value for s in op.statuses])
        if op.after_id is not None:
            clauses.append("id > %s")
            params.append(op.after_id)
        rows, _ = yield Sql(
            f"SELECT body FROM jobs WHERE {' AND '.join(clauses)} ORDER BY id, user_id LIMIT %s",
            (*params, op.limit),
        )
        return [row_job(row) for row in rows]

    @handles(ops.ClaimJob)
    def _op_ClaimJob(self, op: ops.ClaimJob) -> Step:
        rows, _ = yield Sql(CLAIM_JOB, {"user_id": op.user_id, "now": op.now})
        if not rows:
            return None
        job = row_job(rows[0])
        claimed = job.evolve(
            status=JobStatus.RUNNING,
            attempts=job.attempts + 1,
            lease_until=op.lease_until,
            updated_at=op.now,
            version=job.version + 1,
        )
        yield from self._write_job(claimed, insert=False)
        return claimed

    # ------------------------------------------------------------------ users

    @handles(ops.ListUsers)
    def _op_ListUsers(self, op: ops.ListUsers) -> Step:
        rows, _ = yield Sql(
            "SELECT user_id FROM records UNION SELECT user_id FROM sessions "
            "UNION SELECT user_id FROM history UNION SELECT user_id FROM jobs ORDER BY 1"
        )
        return [row[0] for row in rows]

    @handles(ops.DeleteUser)
    def _op_DeleteUser(self, op: ops.DeleteUser) -> Step:
        counts: dict[str, int] = {}
        for table in ("records", "history", "sessions", "messages", "states", "jobs"):
            _, counts[table] = yield Sql(f"DELETE FROM {table} WHERE user_id = %s", (op.user_id,))
        counts["embeddings"] = yield from self._op_PruneEmbeddings(ops.PruneEmbeddings())
        return counts


# ---------------------------------------------------------------------------- helpers


def _drivers() -> tuple[Any, Any]:
    """psycopg and psycopg_pool, imported on first use. Raises MissingExtraError."""
    import psycopg
    import psycopg_pool

    return psycopg, psycopg_pool


def _configure(conn: psycopg.Connection[Any]) -> None:
    from pgvector.psycopg import register_vector

    register_vector(conn)


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
    reply: Reply | None = None
    while True:
        try:
            sql = steps.send(reply) if reply is not None else next(steps)
        except StopIteration as done:
            return done.value
        if sql.many:
            cur.executemany(sql.text.encode(), sql.params)
            reply = ([], cur.rowcount)
        else:
            cur.execute(sql.text.encode(), sql.params or None)
            reply = (cur.fetchall() if cur.description else [], cur.rowcount)


async def _drive_async(cur: psycopg.AsyncCursor[Any], steps: Step) -> Any:
    reply: Reply | None = None
    while True:
        try:
            sql = steps.send(reply) if reply is not None else next(steps)
        except StopIteration as done:
            return done.value
        if sql.many:
            await cur.executemany(sql.text.encode(), sql.params)
            reply = ([], cur.rowcount)
        else:
            await cur.execute(sql.text.encode(), sql.params or None)
            reply = (await cur.fetchall() if cur.description else [], cur.rowcount)


def hnsw_index_name(model: str, dim: int) -> str:
    """The name of the HNSW index over one model's vectors of one dimension."""
    return "embeddings_hnsw_" + hashlib.sha256(f"{model}\0{dim}".encode()).hexdigest()[:16]


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
            from pgvector.psycopg import register_vector_async

            await register_vector_async(conn)
            return conn  # type: ignore[no-any-return]
        except pg.Error as exc:
            self.slots.release()
            raise StoreError(f"cannot connect to PostgreSQL: {scrub(exc, self.conninfo)}") from exc
        except BaseException:
            self.slots.release()
            raise

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


def _lock_key(*parts: str) -> int:
    """A signed 64-bit advisory lock key for these parts."""
    digest = hashlib.blake2b("\0".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _as_array(value: Any) -> Vector:
    if hasattr(value, "to_numpy"):
        return np.asarray(value.to_numpy(), dtype=np.float32)
    return np.asarray(value, dtype=np.float32)


__all__ = ["PostgresStore", "Sql"]
