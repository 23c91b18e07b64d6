"""The op handlers of :class:`memlane.stores.sqlite.SqliteStore`: each runs its op's SQL
(built by :mod:`memlane.stores.sqlite_sql`) on the batch's connection. The store class
owns the file, the connection and the transaction around them."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NamedTuple

from memlane.errors import StoreError
from memlane.models import (
    Job,
    MemoryRecord,
    Message,
    StateVersion,
    to_iso,
)
from memlane.ports import store as ops
from memlane.ports.embedder import Vector
from memlane.ports.store import SESSION_BOUND_KINDS, Op
from memlane.stores.base import OpDispatch, check_expected, claim, handles, should_apply
from memlane.stores.lexical import TIE_READ_MATCHES, next_lookups, next_read, order_key
from memlane.stores.neighbors import collect_neighbors, neighbors_sql
from memlane.stores.sql import graph as graph_sql
from memlane.stores.sql import statements as st
from memlane.stores.sql.codecs import (
    AUDIT,
    EVENTS,
    MESSAGES,
    SESSIONS,
    STATES,
    to_json,
    words_of,
)
from memlane.stores.sql.filters import filter_sql
from memlane.stores.sql.queries import QUERIES
from memlane.stores.sqlite_sql import (
    BY_RIDS,
    DIALECT,
    DROP_CONTEXTS_AFTER,
    NEXT_RID,
    PRUNE_EVERYTHING,
    PRUNE_LET_GO,
    RECORD_COLUMNS,
    REINDEX_DELETED_AFTER,
    ROWS,
    chunks,
    record_row,
    vectors_by_hash,
)

if TYPE_CHECKING:
    from concurrent.futures import Future

    from memlane.stores.codes import CodeFile
    from memlane.stores.sidecar import Sidecar
    from memlane.stores.vector_cache import VectorCache


def _sparse_model_no(conn: sqlite3.Connection, name: str) -> int | None:
    """The number ``sparse_terms`` knows a sparse model by (schema 18); None for a model
    never numbered."""
    row = conn.execute("SELECT no FROM sparse_models WHERE name = ?", (name,)).fetchone()
    return None if row is None else int(row[0])


def _numbered_sparse_model(conn: sqlite3.Connection, name: str) -> int:
    """The number of a sparse model, given it one if it has none."""
    conn.execute("INSERT OR IGNORE INTO sparse_models(name) VALUES (?)", (name,))
    no = _sparse_model_no(conn, name)
    assert no is not None  # written just now, in this transaction
    return no


FOUND_PER_USER = 8192
"""Content hashes of the records searches found, kept per user (see ``_found``)."""
FOUND_USERS = 64
"""Users whose found hashes are kept at once."""

_TURN = "(r.kind = 'episode' AND r.session_id IS NOT NULL)"
"""Whether a record is a turn, one that can have neighbours (:class:`ops.GetNeighbors`)."""


class _Found(NamedTuple):
    """What a search found of a record (:meth:`SqliteOps._found`)."""

    hash: str
    turn: bool
    """Whether it is a turn (:data:`_TURN`), one that can have neighbours."""


_HAS_CONTEXT = (
    "r.context_hash IS NOT NULL AND EXISTS (SELECT 1 FROM embeddings c "
    "WHERE c.model = ? AND c.content_hash = r.context_hash)"
)
"""Whether a record has a context vector under the model (``?``): the context codes hold
exactly those."""


def _without_text(snapshot: str | None) -> tuple[str | None, str | None]:
    """(text, the snapshot without it as format 2) of a packed snapshot (format 1) that
    holds a text and more; (None, None) for any other."""
    if snapshot is None or not snapshot.startswith("[1,{"):
        return None, None
    _, kept = json.loads(snapshot)
    text = kept.pop("text", None)
    if type(text) is not str or not kept:
        return None, None
    return text, to_json([2, kept])


class SqliteOps(OpDispatch):
    """The handlers of every store op on SQLite, marked with :func:`handles`."""

    _vector_cache_bytes: int | None
    _vector_cache: VectorCache | None
    _vector_form: str
    """The form vectors are written in (:data:`~memlane.stores.vector_cache.VECTOR_FORMS`)."""
    _data_version: int | None

    _sidecar_: Sidecar | None
    _scan_thread: ThreadPoolExecutor | None
    _early_scans: dict[int, Future[tuple[dict[int, tuple[float, bool]], bool]]]
    _found_rows: dict[str, dict[str, _Found]]
    """Per user, what searches found of each record by id: its content hash, and whether
    it is a turn (an episode in a session); see :meth:`_found`."""
    _found_terms: dict[tuple[str, int, str], bytes]
    """Sparse terms read ahead (:meth:`_read_ahead`) by (vectors model, sparse model
    number, content hash), forgotten with the hashes searches found."""
    _found_version: int | None
    _found_off: bool
    _found_checked: bool

    @property
    def _sidecar(self) -> Sidecar:
        """The search indexes beside the database, open while the store is."""
        if self._sidecar_ is None:
            raise StoreError("the SQLite store is closed: its search indexes are not open")
        return self._sidecar_

    @property
    def _vectors(self) -> VectorCache:
        """The vector matrices, made on first use: numpy is imported only by commands that
        read or write vectors (``memlane list`` never pays for it)."""
        if self._vector_cache is None:
            from memlane.stores.vector_cache import VectorCache

            self._vector_cache = VectorCache(self._vector_cache_bytes)
        return self._vector_cache

    @handles(*QUERIES)
    def _op_query(self, conn: sqlite3.Connection, op: Op[Any]) -> Any:
        """An op both SQL stores answer with one shared statement (see QUERIES)."""
        query = QUERIES[type(op)]
        return query.result(ROWS, conn.execute(*query.statement(DIALECT, op)).fetchall())

    @handles(*graph_sql.HANDLERS)
    def _op_graph(self, conn: sqlite3.Connection, op: Op[Any]) -> Any:
        """A knowledge-graph op, run by its shared steps (:mod:`memlane.stores.sql.graph`)."""
        return self._graph(conn, graph_sql.HANDLERS[type(op)](DIALECT, op))

    @staticmethod
    def _graph(conn: sqlite3.Connection, steps: graph_sql.Steps) -> Any:
        return graph_sql.run(lambda sql, params: conn.execute(sql, params).fetchall(), steps)

    # ------------------------------------------------------------------ records

    @handles(ops.WriteRecord)
    def _op_WriteRecord(self, conn: sqlite3.Connection, op: ops.WriteRecord) -> None:
        r = op.record
        # Ids are unique per user: the same id in another scope is another record.
        row = conn.execute(*st.stored_version(DIALECT, "records", r.user_id, r.id)).fetchone()
        if not should_apply(op, None if row is None else row[0]):
            return
        values = record_row(r)
        if row is None:
            marks = ", ".join("?" * len(RECORD_COLUMNS))
            conn.execute(
                f"INSERT INTO records (rid, {', '.join(RECORD_COLUMNS)}) "
                f"VALUES ({NEXT_RID}, {marks})",
                values,
            )
        else:
            sets = ", ".join(f"{c} = ?" for c in RECORD_COLUMNS[2:])
            conn.execute(
                f"UPDATE records SET {sets} WHERE user_id = ? AND id = ?",
                (*values[2:], r.user_id, r.id),
            )

    @handles(ops.AppendHistory)
    def _op_AppendHistory(self, conn: sqlite3.Connection, op: ops.AppendHistory) -> None:
        # An event whose snapshot's text is the record's text now keeps none (format 2:
        # the record's row holds it until it changes; sqlite_sql.HISTORY_TEXT_SQL).
        rows = []
        for e in op.events:
            row = ROWS.values(EVENTS, e)
            text, textless = _without_text(row[-1])
            rows.append((*row[:-1], e.user_id, e.record_id, text, textless, row[-1]))
        conn.executemany(
            "INSERT OR IGNORE INTO history VALUES (?, ?, ?, ?, ?, ?, ?, ?, CASE WHEN "
            "(SELECT text FROM records WHERE user_id = ? AND id = ?) = ? THEN ? ELSE ? END)",
            rows,
        )

    @handles(ops.GetRecords)
    def _op_GetRecords(self, conn: sqlite3.Connection, op: ops.GetRecords) -> list[MemoryRecord]:
        found: dict[str, MemoryRecord] = {}
        for chunk in chunks(op.ids, 500):
            rows = conn.execute(*st.get_records(DIALECT, op.user_id, chunk))
            found.update((rec.id, rec) for rec in map(ROWS.record, rows))
        return [found[i] for i in op.ids if i in found]

    @handles(ops.LexicalSearch)
    def _op_LexicalSearch(
        self, conn: sqlite3.Connection, op: ops.LexicalSearch
    ) -> list[tuple[str, float]]:
        index = self._sidecar.lexical(op.user_id)
        if index is None or op.limit < 1:
            return []
        terms = index.terms(op.query)
        where, params = filter_sql(DIALECT, op.user_id, op.filters, op.now)
        # Three times the limit at first: short memories that share the query's words tie
        # by the hundred, and a first read of twice the limit read again past the tie at
        # the cut-off in half the searches (at 1M: lexical p95 11.1 -> 9.0 ms, hybrid
        # 18.5 -> 16.5; four times gave no more).
        want = max(64, 3 * op.limit)
        ids: dict[int, str] = {}  # rid -> id of the hits that pass the filters
        checked: set[int] = set()
        # The order keys are the ids' only while the index is in step with what this
        # transaction reads: another process's commit since this search synced it may
        # have given a rid to another record (then every hit of a tie is looked up).
        keyed = self._sidecar.in_step(conn, op.user_id)
        while terms:
            hits = index.search(terms, want, op.context_weight)
            if not keyed:
                hits = [(rid, 0, score) for rid, _, score in hits]
            found = self._lexical_hits(conn, op, hits, ids, checked, (where, params))
            further = next_read(
                index,
                terms,
                op.context_weight,
                want=want,
                limit=op.limit,
                kept=[score for _, score in found],
                read=[score for _, _, score in hits],
                bound=TIE_READ_MATCHES,
            )
            if further is None:
                return found[: op.limit]
            want = further
        return []

    def _lexical_hits(
        self,
        conn: sqlite3.Connection,
        op: ops.LexicalSearch,
        hits: list[tuple[int, int, float]],
        ids: dict[int, str],
        checked: set[int],
        where: tuple[str, list[Any]],
    ) -> list[tuple[str, float]]:
        """The hits read (rid, order key, score) that pass the filters, as (id, score)
        best first, ties by id, as far as the limit-th: looked up best first, equal
        scores in id order (by order key), a slice at a time, until no hit not looked
        up could still enter (score above the limit-th kept, or equal with a key not
        above its id's). A tie of hundreds at the cut-off then costs the few lookups
        that decide it, not one a hit. ``ids`` (rid -> id) and ``checked`` carry what
        earlier reads looked up."""
        order = sorted(hits, key=lambda hit: (-hit[2], hit[1], hit[0]))
        score_of = {rid: score for rid, _, score in hits}
        step, at = op.limit + op.limit // 2 + 8, 0
        while True:
            found = sorted(
                ((ids[rid], score_of[rid]) for rid in score_of if rid in ids),
                key=lambda hit: (-hit[1], hit[0]),
            )
            cut = None
            if len(found) >= op.limit:
                cut_id, cut_score = found[op.limit - 1]
                cut = (cut_score, order_key(cut_id))
            new, at = next_lookups(order, at, step, cut, checked)
            if not new:
                return found[: op.limit] if cut is not None else found
            checked.update(new)
            sql, params = where
            rows = conn.execute(
                f"SELECT r.rid, r.id, r.content_hash, {_TURN} FROM {BY_RIDS} WHERE {sql}",
                (json.dumps(new), *params),
            ).fetchall()
            ids.update((rid, id_) for rid, id_, _, _ in rows)
            self._found(conn, op.user_id, (row[1:] for row in rows))
            step *= 2

    @handles(ops.VectorSearch)
    def _op_VectorSearch(
        self, conn: sqlite3.Connection, op: ops.VectorSearch
    ) -> list[tuple[str, float]]:
        """The nearest of the user's records by the codes' Hamming distance, reranked by
        exact cosine from the database's float16 vectors, then filtered in SQL, best
        first, a slice at a time until enough pass; more candidates are read while the
        filter leaves too few. A ``context`` search scores a record by its context vector
        where it has one (those are in the context codes) and by its own vector otherwise.
        Vectors of a model the codes do not hold (a store moving to another model) are
        scored exactly instead."""
        codes = self._code_files(op)
        if codes is None:
            return self._exact_vector_search(conn, op)
        from memlane.stores.codes import SPLIT_AT, candidate_count

        want = candidate_count(op.limit)
        early = self._early_scans.pop(id(op), None)
        while True:
            if early is not None:
                (scored, exhausted), early = early.result(), None
            else:  # the scan thread is free: it scans half of a large scope
                helper = self._scanner if len(codes[0]) >= SPLIT_AT else None
                scored, exhausted = _code_scores(*codes, op, want, helper)
            found = self._filtered(conn, op, sorted(scored.items(), key=lambda kv: -kv[1][0]))
            if exhausted or len(found) >= op.limit:
                return found[: op.limit]
            want *= 4

    def _code_files(self, op: ops.VectorSearch) -> tuple[CodeFile, CodeFile] | None:
        """The content and context codes a vector search reads, or None when the codes
        do not hold the model it searches with (then it scores every vector exactly)."""
        content = self._sidecar.codes(op.user_id, op.model, "content")
        context = self._sidecar.codes(op.user_id, op.model, "context")
        return None if content is None or context is None else (content, context)

    def _start_scans(self, batch: Sequence[Op[Any]]) -> None:
        """When a batch holds a vector search beside another search (hybrid search asks
        for both in one batch), start each vector search's first code scan on the scan
        thread while this one runs the batch: the scan leaves the GIL (faiss), so at a
        million memories its ~4 ms overlap the BM25 read and its SQL instead of adding
        to them. A batch with one search runs it on this thread alone."""
        searches = [op for op in batch if isinstance(op, ops.VectorSearch | ops.LexicalSearch)]
        if len(searches) < 2:
            return
        from memlane.stores.codes import candidate_count

        for op in searches:
            if isinstance(op, ops.VectorSearch) and (codes := self._code_files(op)):
                want = candidate_count(op.limit)
                self._early_scans[id(op)] = self._scanner.submit(_code_scores, *codes, op, want)

    def _finish_scans(self) -> None:
        """Wait for scans a batch started and did not use (an op before them failed), so
        none outlives its batch."""
        early, self._early_scans = self._early_scans, {}
        for future in early.values():
            future.exception()

    @property
    def _scanner(self) -> ThreadPoolExecutor:
        """The store's scan thread, started on first use."""
        if self._scan_thread is None:
            self._scan_thread = ThreadPoolExecutor(1, thread_name_prefix="memlane-scan")
        return self._scan_thread

    def _filtered(
        self,
        conn: sqlite3.Connection,
        op: ops.VectorSearch,
        ranked: list[tuple[int, tuple[float, bool]]],
    ) -> list[tuple[str, float]]:
        """The best ``op.limit`` of ``ranked`` (rid, (score, drop-if-it-has-a-context-
        vector)), best first) that pass the filters, as (id, score) best first, ties by id;
        fewer when fewer pass. Slices are checked best first, ties never split, until the
        hits found outrank every candidate not checked."""
        where, params = filter_sql(DIALECT, op.user_id, op.filters, op.now)
        model = [op.model] if op.field == "context" else []
        found: list[tuple[str, float]] = []
        start, step = 0, op.limit + op.limit // 2 + 8
        while start < len(ranked) and len(found) < op.limit:
            end = min(start + step, len(ranked))
            while end < len(ranked) and ranked[end][1][0] == ranked[end - 1][1][0]:
                end += 1
            chunk = dict(ranked[start:end])
            rows = conn.execute(
                f"SELECT r.rid, r.id, {_HAS_CONTEXT if model else '0'}, r.content_hash, "
                f"{_TURN} FROM {BY_RIDS} WHERE {where}",
                (*model, json.dumps(list(chunk)), *params),
            ).fetchall()
            found += [
                (rid, chunk[key][0])
                for key, rid, with_context, _, _ in rows
                if not (with_context and chunk[key][1])
            ]
            self._found(conn, op.user_id, ((rid, h, turn) for _, rid, _, h, turn in rows))
            start, step = end, 2 * step
        return sorted(found, key=lambda hit: (-hit[1], hit[0]))[: op.limit]

    def _exact_vector_search(
        self, conn: sqlite3.Connection, op: ops.VectorSearch
    ) -> list[tuple[str, float]]:
        """Every vector of the user scored (an in-process matrix, kept while the user's
        records do not change)."""
        (version,) = conn.execute("PRAGMA data_version").fetchone()
        if version != self._data_version:  # another process committed: start afresh
            self._vectors.clear()
            self._data_version = version
        key = (op.user_id, op.model, op.field)
        matrix = self._vectors.get(key)
        if matrix is None:
            from memlane.stores.vector_cache import Matrix

            dim = int(op.vector.shape[0])
            rows = self._user_vectors(conn, op.user_id, op.model, op.field, dim)
            matrix = Matrix.build(rows, dim)
            self._vectors.put(key, matrix)
        now = to_iso(op.now)
        filter_key = repr(op.filters)
        allowed = self._vectors.allowed(key, filter_key, now)
        if allowed is None:
            where, params = filter_sql(DIALECT, op.user_id, op.filters, op.now)
            ids = conn.execute(f"SELECT r.id FROM records r WHERE {where}", params)
            allowed = matrix.rows_of(row[0] for row in ids)
            # A moment in time (as_of) is one of many (a slider's): not worth a slot.
            if op.filters.as_of is None:
                (next_expiry,) = conn.execute(
                    "SELECT MIN(expires_at) FROM records WHERE user_id = ? AND expires_at > ?",
                    (op.user_id, now),
                ).fetchone()
                self._vectors.remember_allowed(key, filter_key, allowed, now, next_expiry)
        return matrix.top_k(op.vector, allowed, op.limit)

    @staticmethod
    def _user_vectors(
        conn: sqlite3.Connection, user_id: str, model: str, field: str, dim: int
    ) -> list[tuple[str, bytes]]:
        """(record id, vector) of every record of a user with a ``dim``-d vector (one of
        another size cannot be scored with the query's). The vectors are looked
        up in batches of hashes in key order rather than joined record by record: random
        lookups into the vector table dominated (about 1.5x slower at 100k memories)."""
        hash_of = "COALESCE(context_hash, content_hash)" if field == "context" else "content_hash"
        wanted = conn.execute(
            f"SELECT id, {hash_of} FROM records WHERE user_id = ? ORDER BY id", (user_id,)
        ).fetchall()
        found: dict[str, bytes] = {}
        for chunk in chunks(sorted({h for _, h in wanted}), 900):
            rows = conn.execute(vectors_by_hash(len(chunk)), (model, *chunk))
            found.update((h, blob) for h, blob, size in rows if size == dim)
        return [(rid, found[h]) for rid, h in wanted if h in found]

    @handles(ops.GetNeighbors)
    def _op_GetNeighbors(
        self, conn: sqlite3.Connection, op: ops.GetNeighbors
    ) -> dict[str, list[tuple[str, int]]]:
        ids = tuple(dict.fromkeys(op.ids))
        # Not asked for records a search here found not to be turns: they have none.
        known = self._found_current(conn).get(op.user_id, {})
        turns = tuple(i for i in ids if (f := known.get(i)) is None or f.turn)
        rows: list[tuple[str, str]] = []
        if op.window > 0 and turns:
            now = to_iso(op.now)
            for sql, params in neighbors_sql(op.user_id, turns, op.window, now, "?", "IS"):
                rows += conn.execute(sql, params).fetchall()
        return collect_neighbors(ids, rows)

    @handles(ops.TouchRecords)
    def _op_TouchRecords(self, conn: sqlite3.Connection, op: ops.TouchRecords) -> None:
        conn.executemany(
            "UPDATE records SET access_count = access_count + 1, last_accessed_at = ? "
            "WHERE user_id = ? AND id = ?",
            [(to_iso(op.at), op.user_id, rid) for rid in op.ids],
        )

    @handles(ops.RebuildIndexes)
    def _op_RebuildIndexes(self, conn: sqlite3.Connection, op: ops.RebuildIndexes) -> int:
        """Asks for the rebuild (an outbox row the batch applies after its commit, see
        SqliteStore._run); returns how many records the user has."""
        (n,) = conn.execute(
            "SELECT COUNT(*) FROM records WHERE user_id = ?", (op.user_id,)
        ).fetchone()
        return int(n)

    @handles(ops.SetPeriods)
    def _op_SetPeriods(self, conn: sqlite3.Connection, op: ops.SetPeriods) -> int:
        # The update trigger re-indexes a record whose period words changed.
        found = 0
        for rid, periods in op.items:
            found += conn.execute(
                "UPDATE records SET periods = ?, period_words = ? WHERE user_id = ? AND id = ?",
                (to_json(list(periods)), words_of(periods), op.user_id, rid),
            ).rowcount
        return found

    @handles(ops.RemoveRecords)
    def _op_RemoveRecords(self, conn: sqlite3.Connection, op: ops.RemoveRecords) -> int:
        n = 0
        for chunk in chunks(op.ids, 500):
            scrub, removed_turns, delete = st.remove_records(DIALECT, op.user_id, chunk)
            conn.execute(*scrub)
            turns = conn.execute(*removed_turns).fetchall()
            n += conn.execute(*delete).rowcount
            for session_id, agent_id, rid, created in turns:  # the words leave every index
                conn.execute(REINDEX_DELETED_AFTER, (op.user_id, session_id, agent_id, rid, rid))
                dropped = (op.user_id, session_id, agent_id, rid, created)
                conn.execute(DROP_CONTEXTS_AFTER, dropped)
        self._graph(conn, graph_sql.prune(DIALECT, op.user_id))
        return n

    # ------------------------------------------------------------------ embeddings

    @handles(ops.GetEmbeddings)
    def _op_GetEmbeddings(
        self, conn: sqlite3.Connection, op: ops.GetEmbeddings
    ) -> dict[str, Vector]:
        from memlane.stores.vector_cache import from_blobs

        out: dict[str, Vector] = {}
        for chunk in chunks(op.hashes, 500):
            rows = conn.execute(vectors_by_hash(len(chunk)), (op.model, *chunk))
            out.update((h, from_blobs([blob], dim)[0]) for h, blob, dim in rows)
        return out

    @handles(ops.PutEmbeddings)
    def _op_PutEmbeddings(self, conn: sqlite3.Connection, op: ops.PutEmbeddings) -> None:
        from memlane.stores.vector_cache import to_blobs

        # A vector goes into ``vectors`` (appended: rows in the order they came fill
        # their pages) and its key into ``embeddings``. A key is never replaced in place
        # (REPLACE would not fire the trigger that deletes its vector): it is deleted,
        # vector and all, and written again.
        fresh = dict(op.items)  # the last of a hash given twice wins, as REPLACE did
        carried: list[tuple[str, int, bytes]] = []
        if fresh:
            # The terms of a vector written again move to its new row.
            for chunk in chunks(list(fresh), 500):
                carried += conn.execute(
                    "SELECT e.content_hash, s.model, s.terms FROM embeddings e "
                    "JOIN sparse_terms s ON s.vid = e.vid "
                    f"WHERE e.model = ? AND e.content_hash IN ({', '.join('?' * len(chunk))})",
                    (op.model, *chunk),
                ).fetchall()
            conn.executemany(
                "DELETE FROM embeddings WHERE model = ? AND content_hash = ?",
                [(op.model, h) for h in fresh],
            )
        kept: dict[str, Vector] = {}
        for h, v in op.keep:  # written only where absent: the first of a hash wins
            if h not in fresh:
                kept.setdefault(h, v)
        for chunk in chunks(list(kept), 500):
            for (h,) in conn.execute(
                "SELECT content_hash FROM embeddings WHERE model = ? "
                f"AND content_hash IN ({', '.join('?' * len(chunk))})",
                (op.model, *chunk),
            ):
                del kept[h]
        new = list(fresh.items()) + list(kept.items())
        if new:
            # Numbered after every vid ever given (none is given twice).
            (first,) = conn.execute(
                "SELECT coalesce(max(seq), 0) + 1 FROM sqlite_sequence WHERE name = 'vectors'"
            ).fetchone()
            blobs = to_blobs([v for _, v in new], self._vector_form)
            conn.executemany(
                "INSERT INTO vectors VALUES (?, ?)",
                [(first + i, blob) for i, blob in enumerate(blobs)],
            )
            conn.executemany(
                "INSERT INTO embeddings VALUES (?, ?, ?, ?)",
                [(op.model, h, int(v.shape[0]), first + i) for i, (h, v) in enumerate(new)],
            )
        terms = [(no, h, blob) for h, no, blob in carried]
        if op.sparse:
            no = _numbered_sparse_model(conn, op.sparse_model)
            terms += [(no, h, blob) for h, blob in op.sparse]
        if terms:
            # Beside the hash's vector of this model (none: not kept); the first terms
            # of a sparse model written for it stay.
            conn.executemany(
                "INSERT OR IGNORE INTO sparse_terms SELECT e.vid, ?, ? FROM embeddings e "
                "WHERE e.model = ? AND e.content_hash = ?",
                [(no, blob, op.model, h) for no, h, blob in terms],
            )

    @handles(ops.GetSparse)
    def _op_GetSparse(self, conn: sqlite3.Connection, op: ops.GetSparse) -> dict[str, bytes]:
        key = self._terms_key(conn, op.model, op.vectors_model)
        return {} if key is None else self._terms_by_hash(conn, op.hashes, *key)

    def _terms_key(
        self, conn: sqlite3.Connection, model: str, vectors_model: str
    ) -> tuple[str, int] | None:
        """The embedding model and sparse model number terms are kept under (schema 18),
        or None when the store holds none of them."""
        no = _sparse_model_no(conn, model)
        vectors = vectors_model or self._vectors_model(conn)
        return None if no is None or vectors is None else (vectors, no)

    def _terms_by_hash(
        self, conn: sqlite3.Connection, hashes: Sequence[str], vectors: str, no: int
    ) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for chunk in chunks(hashes, 500):
            # The list as the outer loop, one key lookup a hash (an IN over the JSON
            # list took ~0.2 ms more for the ~200 hashes of a search's candidates).
            rows = conn.execute(
                "SELECT e.content_hash, s.terms FROM json_each(?) AS j "
                "CROSS JOIN embeddings e ON e.model = ? AND e.content_hash = j.value "
                "JOIN sparse_terms s ON s.vid = e.vid AND s.model = ?",
                (json.dumps(list(chunk)), vectors, no),
            )
            out.update((h, bytes(blob)) for h, blob in rows)
        return out

    def _vectors_model(self, conn: sqlite3.Connection) -> str | None:
        """The store's embedding model (recorded, else the one its vectors are of)."""
        model = self._op_GetEmbeddingModel(conn, ops.GetEmbeddingModel())
        return None if model is None else model[0]

    def _found(
        self, conn: sqlite3.Connection, user_id: str, rows: Iterable[tuple[str, str, int]]
    ) -> None:
        """Remember what a search found of each record (id, content hash, whether it is a
        turn): the search's next reads use it. The candidates' sparse terms
        (:class:`ops.SparseOf`) are looked up by hash without finding each record again
        (at a million memories ~0.6 of its ~1.9 ms), and the neighbours
        (:class:`ops.GetNeighbors`) are looked up only for turns, as a record that is
        not one has none (a search of facts asks for none: ~0.4 ms of statements).
        Forgotten when this store writes (any write batch: :meth:`_forget_found`) or
        another connection commits (``PRAGMA data_version``), and kept for a few
        thousand records of a few dozen users."""
        if self._found_off:
            return
        remembered = self._found_current(conn)
        found = {id_: _Found(h, bool(turn)) for id_, h, turn in rows}
        known = remembered.get(user_id)
        if known is None or len(known) + len(found) > FOUND_PER_USER:
            if len(remembered) >= FOUND_USERS:
                remembered.clear()
            remembered[user_id] = found
        else:
            known.update(found)

    def _found_current(self, conn: sqlite3.Connection) -> dict[str, dict[str, _Found]]:
        """What searches found, per user (:attr:`_found_rows`), emptied first if another connection
        committed since they were found (``PRAGMA data_version``, read once a batch,
        inside its transaction: the store's ``_run`` marks each batch unchecked)."""
        if not self._found_checked:
            self._found_checked = True
            (version,) = conn.execute("PRAGMA data_version").fetchone()
            if version != self._found_version:
                self._found_rows, self._found_version = {}, version
                self._found_terms = {}
        return self._found_rows

    def _forget_found(self, *, off: bool = False) -> None:
        """Forget the hashes searches found and the terms read ahead for them (around a
        batch that writes, and when the connection opens or closes); with ``off``
        remember none until called again."""
        self._found_rows, self._found_version, self._found_off = {}, None, off
        self._found_terms = {}
        self._found_checked = False

    def _read_ahead(
        self, conn: sqlite3.Connection, op: ops.LexicalSearch, ids: Iterable[str]
    ) -> None:
        """Read the sparse terms of ``op``'s hits ``ids`` (found by it: their hashes are
        known) ahead of the :class:`ops.SparseOf` that ``op.terms_next`` says comes next.
        A hybrid search reads them here while the scan thread finishes the code scan, a
        time this thread would otherwise wait (:meth:`SqliteStore._run`); its SparseOf
        then reads only the rest."""
        if op.terms_next is None or self._found_off:
            return
        key = self._terms_key(conn, *op.terms_next)
        if key is None:
            return
        known = self._found_current(conn).get(op.user_id, {})
        memo = self._found_terms
        hashes = {f.hash for i in ids if (f := known.get(i)) and (*key, f.hash) not in memo}
        if hashes:
            found = self._terms_by_hash(conn, sorted(hashes), *key)
            if len(memo) + len(found) > FOUND_PER_USER:  # kept while no write comes
                memo.clear()
            memo.update(((*key, h), blob) for h, blob in found.items())

    @handles(ops.SparseOf)
    def _op_SparseOf(self, conn: sqlite3.Connection, op: ops.SparseOf) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        key = self._terms_key(conn, op.model, op.vectors_model)
        if key is None:
            return out
        vectors, no = key
        known = self._found_current(conn).get(op.user_id, {})
        hashes = {rid: f.hash for rid in op.ids if (f := known.get(rid)) is not None}
        if hashes:
            memo = self._found_terms
            terms = {h: blob for h in hashes.values() if (blob := memo.get((*key, h)))}
            unread = sorted({h for h in hashes.values() if h not in terms})
            if unread:
                terms.update(self._terms_by_hash(conn, unread, vectors, no))
            out = {rid: terms[h] for rid, h in hashes.items() if h in terms}
        # The rest through their records (not found by a search here, or a hash without
        # terms: then the record, looked up again, may have changed since).
        rest = [rid for rid in op.ids if rid not in out] if out else list(op.ids)
        for chunk in chunks(rest, 500) if rest else ():
            rows = conn.execute(
                "SELECT r.id, s.terms FROM json_each(?) AS j "
                "CROSS JOIN records r ON r.user_id = ? AND r.id = j.value "
                "JOIN embeddings e ON e.model = ? AND e.content_hash = r.content_hash "
                "JOIN sparse_terms s ON s.vid = e.vid AND s.model = ?",
                (json.dumps(list(chunk)), op.user_id, vectors, no),
            )
            out.update((rid, bytes(blob)) for rid, blob in rows)
        return out

    def _recorded_model(self, conn: sqlite3.Connection) -> tuple[str, int] | None:
        row = conn.execute(st.RECORDED_MODEL).fetchone()
        if row is None:
            return None
        model, dim = json.loads(row[0])
        return str(model), int(dim)

    def _adopted_model(self, conn: sqlite3.Connection) -> tuple[str, int] | None:
        low, high = conn.execute(st.MODEL_RANGE).fetchone()
        if low is None or low != high:
            return None
        (dim,) = conn.execute(*st.model_dim(DIALECT, low)).fetchone()
        return str(low), int(dim)

    @handles(ops.CheckEmbeddingModel)
    def _op_CheckEmbeddingModel(
        self, conn: sqlite3.Connection, op: ops.CheckEmbeddingModel
    ) -> None:
        recorded = self._recorded_model(conn)
        new = ops.embedding_model_to_record(op, recorded, lambda: self._adopted_model(conn))
        if new is not None:
            self._op_SetEmbeddingModel(conn, ops.SetEmbeddingModel(*new))

    @handles(ops.GetEmbeddingModel)
    def _op_GetEmbeddingModel(
        self, conn: sqlite3.Connection, op: ops.GetEmbeddingModel
    ) -> tuple[str, int] | None:
        return self._recorded_model(conn) or self._adopted_model(conn)

    @handles(ops.SetEmbeddingModel)
    def _op_SetEmbeddingModel(self, conn: sqlite3.Connection, op: ops.SetEmbeddingModel) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO memlane_meta VALUES ('embedding_model', ?)",
            (json.dumps([op.model, op.dim]),),
        )

    @handles(ops.DropEmbeddings)
    def _op_DropEmbeddings(self, conn: sqlite3.Connection, op: ops.DropEmbeddings) -> int:
        # A text's terms are the text's: the kept model's vector of each text takes
        # them before the other models' vectors go, and their terms with them (the
        # end of a reembed, which stages the new vectors without terms).
        conn.execute(
            "INSERT OR IGNORE INTO sparse_terms SELECT k.vid, s.model, s.terms "
            "FROM embeddings o JOIN sparse_terms s ON s.vid = o.vid "
            "JOIN embeddings k ON k.model = ? AND k.content_hash = o.content_hash "
            "WHERE o.model <> ?",
            (op.keep, op.keep),
        )
        return conn.execute(*st.drop_embeddings(DIALECT, op)).rowcount

    @handles(ops.PruneEmbeddings)
    def _op_PruneEmbeddings(self, conn: sqlite3.Connection, op: ops.PruneEmbeddings) -> int:
        vectors, terms, done = PRUNE_EVERYTHING if op.everything else PRUNE_LET_GO
        count = conn.execute(vectors).rowcount
        conn.execute(terms)  # of a text no record holds (its vector may stay, a context's)
        conn.execute(done)
        return count

    # ------------------------------------------------------------------ sessions

    @handles(ops.UpsertSession)
    def _op_UpsertSession(self, conn: sqlite3.Connection, op: ops.UpsertSession) -> None:
        s = op.session
        conn.execute(
            "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(user_id, session_id) DO UPDATE SET "
            "updated_at = MAX(updated_at, excluded.updated_at), "
            "metadata = CASE WHEN excluded.metadata = '{}' THEN metadata "
            "ELSE excluded.metadata END",
            ROWS.values(SESSIONS, s),
        )

    @handles(ops.AppendMessages)
    def _op_AppendMessages(self, conn: sqlite3.Connection, op: ops.AppendMessages) -> list[Message]:
        out: list[Message] = []
        for m in op.messages:
            if op.assign_seq:
                (last,) = conn.execute(*st.last_seq(DIALECT, m.user_id, m.session_id)).fetchone()
                m = Message(**{**m.to_dict(), "created_at": m.created_at, "seq": last + 1})
            cur = conn.execute(
                "INSERT OR IGNORE INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ROWS.values(MESSAGES, m),
            )
            if cur.rowcount:
                out.append(m)
        return out

    @handles(ops.DeleteSessions)
    def _op_DeleteSessions(self, conn: sqlite3.Connection, op: ops.DeleteSessions) -> int:
        n = 0
        for sid in op.session_ids:
            key = (op.user_id, sid)
            n += conn.execute(
                "DELETE FROM sessions WHERE user_id = ? AND session_id = ?", key
            ).rowcount
            conn.execute("DELETE FROM messages WHERE user_id = ? AND session_id = ?", key)
            conn.execute("DELETE FROM states WHERE user_id = ? AND session_id = ?", key)
            bound = (*key, *sorted(k.value for k in SESSION_BOUND_KINDS))
            conn.execute(
                "UPDATE history SET snapshot = NULL WHERE snapshot IS NOT NULL AND user_id = ? "
                "AND record_id IN (SELECT id FROM records WHERE user_id = ? AND session_id = ? "
                "AND kind IN (?, ?))",
                (op.user_id, *bound),
            )
            conn.execute(
                "DELETE FROM records WHERE user_id = ? AND session_id = ? AND kind IN (?, ?)",
                bound,
            )
        self._graph(conn, graph_sql.prune(DIALECT, op.user_id))
        return n

    # ------------------------------------------------------------------ state

    @handles(ops.PutState)
    def _op_PutState(self, conn: sqlite3.Connection, op: ops.PutState) -> None:
        s = op.state
        (current,) = conn.execute(*st.newest_state_version(DIALECT, s)).fetchone()
        check_expected(
            f"state {s.name!r} of session {s.session_id!r}", op.expected_version, current
        )
        conn.execute(
            "INSERT OR IGNORE INTO states VALUES (?, ?, ?, ?, ?, ?)",
            ROWS.values(STATES, s),
        )

    @handles(ops.ListStates)
    def _op_ListStates(self, conn: sqlite3.Connection, op: ops.ListStates) -> list[StateVersion]:
        rows = conn.execute(
            "SELECT s.* FROM states s WHERE s.user_id = ? AND s.session_id = ? "
            "AND substr(s.name, 1, ?) = ? AND s.version = (SELECT MAX(version) FROM states t "
            "WHERE t.user_id = s.user_id AND t.session_id = s.session_id AND t.name = s.name) "
            "ORDER BY s.name",
            (op.user_id, op.session_id, len(op.prefix), op.prefix),
        )
        return [ROWS.read(STATES, row) for row in rows]

    # ------------------------------------------------------------------ jobs

    @handles(ops.PutJob)
    def _op_PutJob(self, conn: sqlite3.Connection, op: ops.PutJob) -> None:
        job = op.job
        row = conn.execute(*st.stored_version(DIALECT, "jobs", job.user_id, job.id)).fetchone()
        actual = None if row is None else row[0]
        if not should_apply(op, actual):
            return
        conn.execute(
            "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?)", ROWS.job_values(job)
        )

    @handles(ops.ClaimJob)
    def _op_ClaimJob(self, conn: sqlite3.Connection, op: ops.ClaimJob) -> Job | None:
        now = to_iso(op.now)
        row = conn.execute(
            "SELECT j.body FROM jobs j WHERE j.status IN ('pending', 'running') "
            "AND (? IS NULL OR j.user_id = ?) "
            "AND NOT EXISTS (SELECT 1 FROM jobs e WHERE e.user_id = j.user_id "
            "  AND e.status IN ('pending', 'running') AND e.id < j.id) "
            "AND ((j.status = 'pending' AND j.run_after <= ?) "
            "  OR (j.status = 'running' AND j.lease_until < ?)) "
            "ORDER BY j.id, j.user_id LIMIT 1",
            (op.user_id, op.user_id, now, now),
        ).fetchone()
        if row is None:
            return None
        job = ROWS.row_job(row)
        claimed = claim(job, op)
        conn.execute(
            "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?)", ROWS.job_values(claimed)
        )
        return claimed

    # ------------------------------------------------------------------ users

    @handles(ops.DeleteUser)
    def _op_DeleteUser(self, conn: sqlite3.Connection, op: ops.DeleteUser) -> dict[str, int]:
        counts: dict[str, int] = {}
        for table, statement in st.delete_user(DIALECT, op.user_id):
            counts[table] = conn.execute(*statement).rowcount
        # Every vector no record holds: also those no record ever held, the manager's
        # skipped candidates among them, which may carry the forgotten user's words.
        counts["embeddings"] = self._op_PruneEmbeddings(conn, ops.PruneEmbeddings(everything=True))
        # What the deletes queued for the index goes: the batch asks for the user's
        # indexes to be rebuilt, which removes them (see SqliteStore._run).
        conn.execute("DELETE FROM index_outbox WHERE user_id = ?", (op.user_id,))
        permit, delete, revoke = st.erase_audit(DIALECT, op.trails)
        conn.execute(*permit)
        counts["audit"] = conn.execute(*delete).rowcount
        conn.execute(*revoke)
        if op.tombstone is not None:
            self._op_AppendAudit(conn, ops.AppendAudit((replace(op.tombstone, counts=counts),)))
        return counts

    # ------------------------------------------------------------------ audit

    @handles(ops.AppendAudit)
    def _op_AppendAudit(self, conn: sqlite3.Connection, op: ops.AppendAudit) -> None:
        columns = ", ".join(AUDIT.columns)
        marks = ", ".join("?" * len(AUDIT.columns))
        conn.executemany(
            f"INSERT OR IGNORE INTO audit ({columns}) VALUES ({marks})",
            [ROWS.values(AUDIT, e) for e in op.events],
        )


def _code_scores(
    content: CodeFile,
    context: CodeFile,
    op: ops.VectorSearch,
    want: int,
    helper: ThreadPoolExecutor | None = None,
) -> tuple[dict[int, tuple[float, bool]], bool]:
    """The ``want`` nearest records of a vector search by code, each with its exact score
    and whether a context vector of the record replaces it (a ``context`` search scores a
    record by its context vector where it has one), and whether the codes ran out; a
    ``helper`` thread scans half of a large scope. A row whose vector the database no
    longer holds (deleted since the codes were synced: NaN) is left out."""
    import numpy as np

    rids, sims = content.scored(op.vector, want, helper)
    exhausted = len(rids) < want
    held = ~np.isnan(sims)
    pairs = zip(rids[held].tolist(), sims[held].tolist(), strict=True)
    scored = {k: (s, op.field == "context") for k, s in pairs}
    if op.field == "context":
        rids, sims = context.scored(op.vector, want, helper)
        exhausted = exhausted and len(rids) < want
        held = ~np.isnan(sims)
        pairs = zip(rids[held].tolist(), sims[held].tolist(), strict=True)
        scored.update((k, (s, False)) for k, s in pairs)
    return scored, exhausted
