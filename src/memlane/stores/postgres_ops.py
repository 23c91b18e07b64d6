"""The op handlers of :class:`memlane.stores.postgres.PostgresStore`, written once, sans
I/O: each is a generator that yields :class:`Sql` statements and gets back their rows;
the store's two runners (blocking and ``async``) execute them in the batch's transaction."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from memlane.models import Job, Message
from memlane.ports import store as ops
from memlane.ports.embedder import Vector
from memlane.ports.store import SESSION_BOUND_KINDS, Op
from memlane.stores.base import OpDispatch, check_expected, claim, handles, should_apply
from memlane.stores.lexical import next_lookups, next_read
from memlane.stores.neighbors import collect_neighbors
from memlane.stores.postgres_lexical import lexical_sql
from memlane.stores.postgres_sql import (
    APPEND_AUDIT,
    CLAIM_JOB,
    DIALECT,
    DROP_CONTEXTS_AFTER,
    HOLD_VECTORS,
    INSERT_RECORD,
    NEIGHBORS,
    PRUNE_EVERYTHING,
    PRUNE_TAKEN,
    REINDEX_DELETED_AFTER,
    REINDEX_ONE,
    ROWS,
    TAKE_LET_GO,
    UPDATE_RECORD,
    RawSql,
    Sql,
    Step,
    record_params,
)
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
from memlane.text import query_terms

if TYPE_CHECKING:
    from memlane.stores.lexical import LexicalIndex


@dataclass(frozen=True, slots=True)
class CopySearch(ops.LexicalSearch):
    """A lexical search answered by the user's copy of the lexical index beside this
    process (:mod:`memlane.stores.postgres_copy`), brought in step just before: the
    runners put it in place of a :class:`~memlane.ports.store.LexicalSearch`."""

    copy: LexicalIndex | None = None


@dataclass(frozen=True, slots=True)
class TermsAhead:
    """A lexical search's answer when it was told that its candidates' sparse terms
    come next (:attr:`~memlane.ports.store.LexicalSearch.terms_next`): its ``hits``, and
    the stored ``terms`` of ``model`` of those hits (those without terms left out), read
    on the search's own connection while the batch's other reads run. The runner hands
    the core ``hits`` and keeps the terms for the :class:`~memlane.ports.store.SparseOf`
    that follows."""

    hits: list[tuple[str, float]]
    user_id: str
    model: str
    terms: dict[str, bytes]
    read: frozenset[str]
    """The hits' ids: those whose terms were read (some may have none)."""

    def covers(self, op: ops.SparseOf, rid: str) -> bool:
        """Whether ``op`` asks for ``rid``'s terms as read here."""
        return op.user_id == self.user_id and op.model == self.model and rid in self.read


class PostgresOps(OpDispatch):
    """The handlers of every store op on PostgreSQL, marked with :func:`handles`."""

    url: str
    exact_search_limit: int
    lexical_budget: int
    _indexed: set[tuple[str, int]]
    _large_users: set[str]

    @handles(RawSql)
    def _op_Raw(self, op: RawSql) -> Step:
        rows, _ = yield Sql(op.sql)
        return rows

    @handles(*QUERIES)
    def _op_query(self, op: Op[Any]) -> Step:
        """An op both SQL stores answer with one shared statement (see QUERIES)."""
        query = QUERIES[type(op)]
        rows, _ = yield Sql(*query.statement(DIALECT, op))
        return query.result(ROWS, rows)

    @handles(*graph_sql.HANDLERS)
    def _op_graph(self, op: Op[Any]) -> Step:
        """A knowledge-graph op, run by its shared steps (:mod:`memlane.stores.sql.graph`)."""
        return (yield from self._graph(graph_sql.HANDLERS[type(op)](DIALECT, op)))

    @staticmethod
    def _graph(steps: graph_sql.Steps) -> Step:
        """Run shared graph steps as this store's statements."""
        try:
            statement = next(steps)
            while True:
                rows, _ = yield Sql(*statement)
                statement = steps.send(list(rows))
        except StopIteration as done:
            return done.value

    # ------------------------------------------------------------------ records

    @handles(ops.WriteRecord)
    def _op_WriteRecord(self, op: ops.WriteRecord) -> Step:
        r = op.record
        # Ids are unique per user: the same id in another scope is another record.
        rows, _ = yield Sql(*st.stored_version(DIALECT, "records", r.user_id, r.id))
        actual = rows[0][0] if rows else None
        if not should_apply(op, actual):
            return None
        yield Sql(INSERT_RECORD if actual is None else UPDATE_RECORD, record_params(r))
        return None

    @handles(ops.AppendHistory)
    def _op_AppendHistory(self, op: ops.AppendHistory) -> Step:
        if op.events:
            yield Sql(
                "INSERT INTO history VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                [ROWS.values(EVENTS, e) for e in sorted(op.events, key=lambda e: e.id)],
                many=True,
            )
        return None

    @handles(ops.GetRecords)
    def _op_GetRecords(self, op: ops.GetRecords) -> Step:
        rows, _ = yield Sql(*st.get_records(DIALECT, op.user_id, op.ids))
        found = {rec.id: rec for rec in map(ROWS.record, rows)}
        return [found[i] for i in op.ids if i in found]

    @handles(ops.LexicalSearch)
    def _op_LexicalSearch(self, op: ops.LexicalSearch) -> Step:
        """The best matches of the query's rare terms, or of every term when those are
        too few; at most ``lexical_budget`` rows read per term (:mod:`.postgres_lexical`)."""
        terms = query_terms(op.query)
        if not terms:
            return []
        # The memory's own words (weight A) only, unless the context counts too.
        label = "" if op.context_weight > 0 else ":A"
        where, params = filter_sql(DIALECT, op.user_id, op.filters, op.now)
        weights = [min(float(op.context_weight), 1.0), 0.0, 0.0, 1.0]
        # ts_rank's weights go up to 1: scale the context weight against the text's.
        if op.context_weight > 1:
            weights = [1.0, 0.0, 0.0, 1.0 / float(op.context_weight)]
        budget = self.lexical_budget
        rows, _ = yield Sql(*lexical_sql(terms, label, weights, where, params, op.limit, budget))
        return (yield from self._terms_ahead(op, [(rid, float(score)) for rid, score in rows]))

    def _terms_ahead(self, op: ops.LexicalSearch, hits: list[tuple[str, float]]) -> Step:
        """``hits``, with their sparse terms when the search says that those come next."""
        if op.terms_next is None or not hits:
            return hits
        model = op.terms_next[0]
        ids = tuple(rid for rid, _ in hits)
        terms = yield from self._op_SparseOf(ops.SparseOf(op.user_id, model, ids))
        return TermsAhead(hits, op.user_id, model, terms, frozenset(ids))

    @handles(CopySearch)
    def _op_CopySearch(self, op: CopySearch) -> Step:
        """BM25 from the copy (as the SQLite store ranks), its best hits checked against
        the filters in the database (the copy holds every record of the user, deleted
        and expired ones too), read further while too few pass. A tie at the cut-off is
        read past only where one read holds every match (as on SQLite), decided by id."""
        index = op.copy
        assert index is not None
        terms = index.terms(op.query)
        if not terms or op.limit < 1:
            return []
        where, params = filter_sql(DIALECT, op.user_id, op.filters, op.now)
        want = max(64, 3 * op.limit)
        checked: set[str] = set()
        passed: set[str] = set()
        while True:
            hits = index.search_ids(terms, want, op.context_weight)
            found = yield from self._checked(op, hits, checked, passed, (where, params))
            further = next_read(
                index,
                terms,
                op.context_weight,
                want=want,
                limit=op.limit,
                kept=[score for _, score in found],
                read=[score for _, score in hits],
            )
            if further is None:
                return (yield from self._terms_ahead(op, found[: op.limit]))
            want = further

    def _checked(
        self,
        op: ops.LexicalSearch,
        hits: list[tuple[str, float]],
        checked: set[str],
        passed: set[str],
        where: tuple[str, list[Any]],
    ) -> Step:
        """The hits read that pass the filters, as (id, score) best first, ties by id,
        as far as the limit-th: looked up best first, a slice at a time, until no hit
        not looked up could still enter (a score above the limit-th kept, or equal with
        an id not above its id). Most searches look up one slice of 1.5 times the limit
        where every hit read (3 times) was looked up before: at a million memories
        ~1.7 ms of the server's CPU less. ``checked`` and ``passed`` carry what earlier
        reads looked up."""
        order = sorted(((id_, id_, score) for id_, score in hits), key=lambda h: (-h[2], h[0]))
        step, at = op.limit + op.limit // 2 + 8, 0
        while True:
            found = [(id_, score) for id_, _, score in order if id_ in passed]
            cut = None if len(found) < op.limit else found[op.limit - 1][::-1]
            new, at = next_lookups(order, at, step, cut, checked)
            if not new:
                return found[: op.limit] if cut is not None else found
            checked.update(new)
            sql, params = where
            rows, _ = yield Sql(
                f"SELECT r.id FROM records r WHERE r.id = ANY(%s) AND {sql}", (new, *params)
            )
            passed.update(row[0] for row in rows)
            step *= 2

    @handles(ops.VectorSearch)
    def _op_VectorSearch(self, op: ops.VectorSearch) -> Step:
        query = np.asarray(op.vector, dtype=np.float32)
        dim = int(query.shape[0])
        where, params = filter_sql(DIALECT, op.user_id, op.filters, op.now)
        hash_of = (
            "COALESCE(r.context_hash, r.content_hash)"
            if op.field == "context"
            else "r.content_hash"
        )
        exact = (
            "SELECT r.id, 1 - (e.vector <=> %s) AS sim FROM records r JOIN embeddings e "
            f"ON e.model = %s AND e.dim = %s AND e.content_hash = {hash_of} WHERE {where} "
            "ORDER BY e.vector <=> %s, r.id LIMIT %s",
            (query, op.model, dim, *params, query, op.limit),
        )
        if (yield from self._large_user(op.user_id)):
            found = yield from self._approximate(op, query, hash_of, where, params)
            if len(found) >= op.limit:
                return found
            # Too few candidates passed the filters within the index scan's budget:
            # answer exactly rather than return less than there is.
        # Exact: the distance expression does not match the HNSW index, so the planner
        # reads this user's rows (by the user index) and sorts them.
        rows, _ = yield Sql(*exact)
        return [(rid, float(sim)) for rid, sim in rows]

    def _large_user(self, user_id: str) -> Step:
        """Whether the user has more than ``exact_search_limit`` records, so that the HNSW
        index answers. Counted once (an index scan of that many entries, ~2 ms a search at
        1M) and then remembered while the process lives: a user that shrinks again is still
        answered right (the approximate path falls back to the exact one when the index
        scan finds too few), only slower; forgetting the user forgets the mark."""
        if user_id in self._large_users:
            return True
        rows, _ = yield Sql(
            "SELECT count(*) FROM (SELECT 1 FROM records WHERE user_id = %s LIMIT %s) t",
            (user_id, self.exact_search_limit + 1),
        )
        if rows[0][0] <= self.exact_search_limit:
            return False
        self._large_users.add(user_id)
        return True

    def _approximate(
        self, op: ops.VectorSearch, query: Any, hash_of: str, where: str, params: list[Any]
    ) -> Step:
        """The HNSW index's nearest records (iterative scan, so filters still fill it).
        Its settings are the session's, as a search alone in its batch runs without a
        transaction (see ``_untransacted``): every index scan sets them first."""
        dim = int(query.shape[0])
        yield Sql(
            "SELECT set_config('hnsw.ef_search', %s, false), "
            "set_config('hnsw.iterative_scan', 'relaxed_order', false)",
            (str(max(40, min(1000, 2 * op.limit))),),
        )
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
        if op.window > 0 and ids:
            params = {"user_id": op.user_id, "ids": list(ids), "now": op.now, "window": op.window}
            rows, _ = yield Sql(NEIGHBORS, params)
            found = [(hit, nid) for hit, nid in rows]
        return collect_neighbors(ids, found)

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

    @handles(ops.RebuildIndexes)
    def _op_RebuildIndexes(self, op: ops.RebuildIndexes) -> Step:
        """The indexes are PostgreSQL's own, kept by it: nothing to rebuild."""
        yield from ()
        return 0

    @handles(ops.SetPeriods)
    def _op_SetPeriods(self, op: ops.SetPeriods) -> Step:
        found = 0
        for rid, periods in sorted(op.items):  # one lock order, as for touches
            _, n = yield Sql(
                "UPDATE records SET periods = %s::jsonb, period_words = %s "
                "WHERE user_id = %s AND id = %s",
                (to_json(list(periods)), words_of(periods), op.user_id, rid),
            )
            yield Sql(REINDEX_ONE, (op.user_id, rid))
            found += n
        return found

    @handles(ops.RemoveRecords)
    def _op_RemoveRecords(self, op: ops.RemoveRecords) -> Step:
        scrub, removed_turns, delete = st.remove_records(DIALECT, op.user_id, op.ids)
        yield Sql(*scrub)
        turns, _ = yield Sql(*removed_turns)
        _, n = yield Sql(*delete)
        for session_id, agent_id, rid, created in turns:  # the words leave every search vector
            yield Sql(REINDEX_DELETED_AFTER, (op.user_id, session_id, agent_id, rid, rid))
            yield Sql(DROP_CONTEXTS_AFTER, (op.user_id, session_id, agent_id, rid, created))
        yield from self._graph(graph_sql.prune(DIALECT, op.user_id))
        return n

    # ------------------------------------------------------------------ embeddings

    @handles(ops.GetEmbeddings)
    def _op_GetEmbeddings(self, op: ops.GetEmbeddings) -> Step:
        rows, _ = yield Sql(*st.get_embeddings(DIALECT, op.model, op.hashes))
        return {h: _as_array(v) for h, v in rows}

    @handles(ops.PutEmbeddings)
    def _op_PutEmbeddings(self, op: ops.PutEmbeddings) -> Step:
        hold_vectors, hold_terms = HOLD_VECTORS
        if op.sparse:
            terms = sorted(dict(op.sparse).items())  # one order for every writer: no deadlocks
            yield Sql(hold_terms, (op.sparse_model, [h for h, _ in terms]))
            yield Sql(
                "INSERT INTO sparse_terms VALUES (%s, %s, %s) "
                "ON CONFLICT (model, content_hash) DO NOTHING",
                [(op.sparse_model, h, blob) for h, blob in terms],
                many=True,
            )
        if op.keep:
            kept = sorted(dict(op.keep).items())  # one order for every writer: no deadlocks
            yield Sql(hold_vectors, (op.model, [h for h, _ in kept]))
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
        rows, _ = yield Sql(st.RECORDED_MODEL)
        if not rows:
            return None
        model, dim = json.loads(rows[0][0])
        return str(model), int(dim)

    def _adopted_model(self) -> Step:
        rows, _ = yield Sql(st.MODEL_RANGE)
        low, high = rows[0]
        if low is None or low != high:
            return None
        rows, _ = yield Sql(*st.model_dim(DIALECT, low))
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

    @handles(ops.GetSparse)
    def _op_GetSparse(self, op: ops.GetSparse) -> Step:
        rows, _ = yield Sql(
            "SELECT content_hash, terms FROM sparse_terms WHERE model = %s "
            "AND content_hash = ANY(%s)",
            (op.model, list(op.hashes)),
        )
        return {h: bytes(blob) for h, blob in rows}

    @handles(ops.SparseOf)
    def _op_SparseOf(self, op: ops.SparseOf) -> Step:
        rows, _ = yield Sql(
            "SELECT r.id, s.terms FROM records r JOIN sparse_terms s "
            "ON s.model = %s AND s.content_hash = r.content_hash "
            "WHERE r.user_id = %s AND r.id = ANY(%s)",
            (op.model, op.user_id, list(op.ids)),
        )
        return {rid: bytes(blob) for rid, blob in rows}

    @handles(ops.DropEmbeddings)
    def _op_DropEmbeddings(self, op: ops.DropEmbeddings) -> Step:
        _, n = yield Sql(*st.drop_embeddings(DIALECT, op))
        return n

    @handles(ops.PruneEmbeddings)
    def _op_PruneEmbeddings(self, op: ops.PruneEmbeddings) -> Step:
        rows, _ = yield Sql(TAKE_LET_GO)
        if op.everything:
            vectors, terms = PRUNE_EVERYTHING
            _, n = yield Sql(vectors)
            yield Sql(terms)
            return n
        if not rows:
            return 0
        taken = {"taken": sorted(h for (h,) in rows)}
        lock_vectors, lock_terms, vectors, terms = PRUNE_TAKEN
        yield Sql(lock_vectors, taken)
        yield Sql(lock_terms, taken)
        _, n = yield Sql(vectors, taken)
        yield Sql(terms, taken)
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
            ROWS.values(SESSIONS, op.session),
        )
        return None

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
                rows, _ = yield Sql(*st.last_seq(DIALECT, *key))
                m = Message(**{**m.to_dict(), "created_at": m.created_at, "seq": rows[0][0] + 1})
            _, n = yield Sql(
                "INSERT INTO messages VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                ROWS.values(MESSAGES, m),
            )
            if n:
                out.append(m)
        return out

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
        yield from self._graph(graph_sql.prune(DIALECT, op.user_id))
        return n

    # ------------------------------------------------------------------ state

    @handles(ops.PutState)
    def _op_PutState(self, op: ops.PutState) -> Step:
        s = op.state
        rows, _ = yield Sql(*st.newest_state_version(DIALECT, s))
        current = rows[0][0]
        check_expected(
            f"state {s.name!r} of session {s.session_id!r}", op.expected_version, current
        )
        # A concurrent writer of the same version trips the primary key: ConflictError.
        conflict = "ON CONFLICT DO NOTHING" if op.expected_version is None else ""
        yield Sql(
            f"INSERT INTO states VALUES (%s, %s, %s, %s, %s, %s) {conflict}", ROWS.values(STATES, s)
        )
        return None

    @handles(ops.ListStates)
    def _op_ListStates(self, op: ops.ListStates) -> Step:
        rows, _ = yield Sql(
            "SELECT DISTINCT ON (name) * FROM states WHERE user_id = %s AND session_id = %s "
            "AND starts_with(name, %s) ORDER BY name, version DESC",
            (op.user_id, op.session_id, op.prefix),
        )
        return [ROWS.read(STATES, row) for row in rows]

    # ------------------------------------------------------------------ jobs

    @handles(ops.PutJob)
    def _op_PutJob(self, op: ops.PutJob) -> Step:
        rows, _ = yield Sql(*st.stored_version(DIALECT, "jobs", op.job.user_id, op.job.id))
        row = rows[0] if rows else None
        actual = None if row is None else row[0]
        if not should_apply(op, actual):
            return None
        yield from self._write_job(op.job, insert=row is None)
        return None

    def _write_job(self, job: Job, *, insert: bool) -> Step:
        if insert:
            yield Sql("INSERT INTO jobs VALUES (%s, %s, %s, %s, %s, %s, %s)", ROWS.job_values(job))
        else:
            yield Sql(
                "UPDATE jobs SET status = %s, run_after = %s, lease_until = %s, "
                "version = %s, body = %s WHERE user_id = %s AND id = %s",
                (*ROWS.job_values(job)[2:], job.user_id, job.id),
            )
        return None

    @handles(ops.ClaimJob)
    def _op_ClaimJob(self, op: ops.ClaimJob) -> Step:
        rows, _ = yield Sql(CLAIM_JOB, {"user_id": op.user_id, "now": op.now})
        if not rows:
            return None
        job = ROWS.row_job(rows[0])
        claimed = claim(job, op)
        yield from self._write_job(claimed, insert=False)
        return claimed

    # ------------------------------------------------------------------ users

    @handles(ops.DeleteUser)
    def _op_DeleteUser(self, op: ops.DeleteUser) -> Step:
        self._large_users.discard(op.user_id)
        counts: dict[str, int] = {}
        for table, statement in st.delete_user(DIALECT, op.user_id):
            _, counts[table] = yield Sql(*statement)
        # The copies of the user's lexical index (and the ids their changes name): each
        # finds itself unregistered at its next search and leaves the disk.
        for table in ("lexical_changes", "lexical_copies"):
            yield Sql(f"DELETE FROM {table} WHERE user_id = %s", (op.user_id,))
        # Every vector no record holds: also those no record ever held, the manager's
        # skipped candidates among them, which may carry the forgotten user's words.
        counts["embeddings"] = yield from self._op_PruneEmbeddings(
            ops.PruneEmbeddings(everything=True)
        )
        permit, delete, revoke = st.erase_audit(DIALECT, op.trails)
        yield Sql(*permit)
        _, counts["audit"] = yield Sql(*delete)
        yield Sql(*revoke)
        if op.tombstone is not None:
            yield from self._op_AppendAudit(
                ops.AppendAudit((replace(op.tombstone, counts=counts),))
            )
        return counts

    # ------------------------------------------------------------------ audit

    @handles(ops.AppendAudit)
    def _op_AppendAudit(self, op: ops.AppendAudit) -> Step:
        if op.events:
            yield Sql(APPEND_AUDIT, [ROWS.values(AUDIT, e) for e in op.events], many=True)
        return None


def hnsw_index_name(model: str, dim: int) -> str:
    """The name of the HNSW index over one model's vectors of one dimension."""
    return "embeddings_hnsw_" + hashlib.sha256(f"{model}\0{dim}".encode()).hexdigest()[:16]


def _lock_key(*parts: str) -> int:
    """A signed 64-bit advisory lock key for these parts."""
    digest = hashlib.blake2b("\0".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _as_array(value: Any) -> Vector:
    if hasattr(value, "to_numpy"):
        return np.asarray(value.to_numpy(), dtype=np.float32)
    return np.asarray(value, dtype=np.float32)
