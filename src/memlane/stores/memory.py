"""An in-process store: dictionaries behind a lock. For tests and ephemeral agents.

Every batch is atomic: each change is written through a small undo log that is replayed
backwards if any operation fails.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from memlane.errors import ConflictError
from memlane.models import AuditEvent, Job, JobStatus, MemoryKind, MemoryRecord, Message
from memlane.models.graph import MENTIONED_WITH, Entity, EntityType, Mention, Relation
from memlane.ports import store as ops
from memlane.ports.embedder import Vector
from memlane.ports.store import SESSION_BOUND_KINDS, Op
from memlane.stores.base import OpDispatch, check_expected, claim, handles, should_apply
from memlane.stores.graph import (
    co_id,
    co_occurrences,
    merged_aliases,
    moved_relation,
    triple_id,
)
from memlane.text import bm25_scores, query_terms, tokenize

_MISSING = object()
_APPENDED = object()  # undo: drop the list's last item


class _Tx:
    """Writes to dict tables, remembering how to undo them."""

    def __init__(self) -> None:
        self.undo: list[tuple[dict[Any, Any], Any, Any]] = []

    def set(self, table: dict[Any, Any], key: Any, value: Any) -> None:
        self.undo.append((table, key, table.get(key, _MISSING)))
        table[key] = value

    def pop(self, table: dict[Any, Any], key: Any) -> None:
        if key in table:
            self.undo.append((table, key, table[key]))
            del table[key]

    def append(self, table: dict[Any, list[Any]], key: Any, item: Any) -> None:
        """Add ``item`` to the end of the list at ``key`` (without copying the list)."""
        if key not in table:
            self.set(table, key, [])
        table[key].append(item)
        self.undo.append((table, key, _APPENDED))

    def rollback(self) -> None:
        for table, key, old in reversed(self.undo):
            if old is _APPENDED:
                table[key].pop()
            elif old is _MISSING:
                table.pop(key, None)
            else:
                table[key] = old


class MemoryStore(OpDispatch):
    """Keeps everything in this process; gone when the process ends."""

    def __init__(self) -> None:
        self.url = "memory://"
        self._lock = threading.RLock()
        # Ids are unique within a user's scope only, so every table is keyed by user too:
        # another scope holding the same id can neither block nor reveal anything.
        self._records: dict[tuple[str, str], MemoryRecord] = {}  # (user, record id)
        self._history: dict[tuple[str, str], tuple[Any, ...]] = {}  # (user, record id)
        self._event_ids: dict[tuple[str, str], str] = {}  # (user, event id): record id
        self._embeddings: dict[tuple[str, str], Vector] = {}
        self._sparse: dict[tuple[str, str], bytes] = {}  # (model, content hash)
        self._meta: dict[str, tuple[str, int]] = {}  # "embedding_model": (model, dim)
        self._sessions: dict[tuple[str, str], Any] = {}
        self._messages: dict[tuple[str, str], list[Message]] = {}  # in seq order
        self._states: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        self._jobs: dict[tuple[str, str], Job] = {}  # (user, job id)
        self._audit: dict[str, dict[str, AuditEvent]] = {}  # user: {entry id: entry}
        self._entities: dict[tuple[str, str], Entity] = {}  # (user, entity id)
        self._entity_keys: dict[tuple[str, str], str] = {}  # (user, key): entity id
        self._mentions: dict[tuple[str, str, str], Mention] = {}  # (user, record, entity)
        self._relations: dict[tuple[str, str], Relation] = {}  # (user, relation id)

    def setup(self) -> None:
        """Nothing to open; present for the protocol."""

    def close(self) -> None:
        """Nothing to release; the data stays until the object is dropped."""

    def batch(self, ops_: Sequence[Op[Any]]) -> list[Any]:
        self.check_supported(ops_)
        with self._lock:
            tx = _Tx()
            try:
                return [self._handler(op)(op, tx) for op in ops_]
            except BaseException:
                tx.rollback()
                raise

    async def abatch(self, ops_: Sequence[Op[Any]]) -> list[Any]:
        # Pure in-memory work never waits on I/O; yield once so callers interleave fairly.
        await asyncio.sleep(0)
        return self.batch(ops_)

    # ------------------------------------------------------------------ records

    def _user_records(self, user_id: str) -> list[MemoryRecord]:
        return [r for r in self._records.values() if r.user_id == user_id]

    @handles(ops.WriteRecord)
    def _op_WriteRecord(self, op: ops.WriteRecord, tx: _Tx) -> None:
        key = (op.record.user_id, op.record.id)
        old = self._records.get(key)
        if not should_apply(op, None if old is None else old.version):
            return
        r = op.record
        if r.key is not None and r.is_current:
            for other in self._user_records(r.user_id):
                if other.id != r.id and other.key == r.key and other.is_current:
                    raise ConflictError(
                        f"keyed fact {r.key!r} already has a current value",
                        expected=None,
                        actual=None,
                    )
        tx.set(self._records, key, op.record)

    @handles(ops.AppendHistory)
    def _op_AppendHistory(self, op: ops.AppendHistory, tx: _Tx) -> None:
        for event in op.events:
            if (event.user_id, event.id) in self._event_ids:
                continue
            tx.set(self._event_ids, (event.user_id, event.id), event.record_id)
            key = (event.user_id, event.record_id)
            tx.set(self._history, key, (*self._history.get(key, ()), event))

    @handles(ops.GetRecords)
    def _op_GetRecords(self, op: ops.GetRecords, tx: _Tx) -> list[MemoryRecord]:
        found = (self._records.get((op.user_id, i)) for i in op.ids)
        return [r for r in found if r is not None]

    def _matching(self, user_id: str, f: Any, now: Any) -> list[MemoryRecord]:
        return [r for r in self._user_records(user_id) if f.matches(r, now)]

    @handles(ops.ListRecords)
    def _op_ListRecords(self, op: ops.ListRecords, tx: _Tx) -> list[MemoryRecord]:
        rows = sorted(self._matching(op.user_id, op.filters, op.now), key=lambda r: r.id)
        if op.descending:
            rows.reverse()
        if op.after_id is not None:
            after = op.after_id
            rows = [r for r in rows if (r.id < after if op.descending else r.id > after)]
        return rows[: op.limit]

    @handles(ops.LexicalSearch)
    def _op_LexicalSearch(self, op: ops.LexicalSearch, tx: _Tx) -> list[tuple[str, float]]:
        docs = [
            (r.id, tokenize(f"{r.text} {r.period_words}"))
            for r in self._matching(op.user_id, op.filters, op.now)
        ]
        contexts: dict[str, list[str]] = {}
        if op.context_weight > 0:
            # A turn's context is the previous live turn of its session by the same agent
            # (reads are limited by agent: another agent's words must not score it).
            last: dict[tuple[str, str | None], MemoryRecord] = {}
            for r in sorted(self._user_records(op.user_id), key=lambda r: r.id):
                if r.kind == MemoryKind.EPISODE and r.session_id is not None:
                    turn = (r.session_id, r.agent_id)
                    if turn in last:
                        contexts[r.id] = tokenize(last[turn].text)
                    if r.deleted_at is None:  # a deleted turn is no one's context
                        last[turn] = r
        scores = bm25_scores(
            query_terms(op.query), docs, contexts=contexts, context_weight=op.context_weight
        )
        return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[: op.limit]

    @handles(ops.VectorSearch)
    def _op_VectorSearch(self, op: ops.VectorSearch, tx: _Tx) -> list[tuple[str, float]]:
        def key(r: MemoryRecord) -> tuple[str, str]:
            h = r.context_hash if op.field == "context" and r.context_hash else r.content_hash
            return (op.model, h)

        pairs = [
            (r.id, self._embeddings[key(r)])
            for r in self._matching(op.user_id, op.filters, op.now)
            if key(r) in self._embeddings
        ]
        if not pairs:
            return []
        sims = np.stack([v for _, v in pairs]) @ op.vector
        order = np.argsort(-sims, kind="stable")[: op.limit]
        return [(pairs[i][0], float(sims[i])) for i in order]

    @handles(ops.GetNeighbors)
    def _op_GetNeighbors(self, op: ops.GetNeighbors, tx: _Tx) -> dict[str, list[tuple[str, int]]]:
        out: dict[str, list[tuple[str, int]]] = {}
        for rid in op.ids:
            r = self._records.get((op.user_id, rid))
            if r is None or r.session_id is None or r.kind is not MemoryKind.EPISODE:
                out[rid] = []
                continue
            same = sorted(
                x.id
                for x in self._user_records(op.user_id)
                if x.session_id == r.session_id
                and x.agent_id == r.agent_id  # the reader of one agent sees only its turns
                and x.kind is MemoryKind.EPISODE
                and (x.id == rid or (x.is_current and not x.is_expired(op.now)))
            )
            i = same.index(rid)
            before = same[max(0, i - op.window) : i]
            after = same[i + 1 : i + 1 + op.window]
            out[rid] = [(n, j - len(before)) for j, n in enumerate(before)] + [
                (n, j + 1) for j, n in enumerate(after)
            ]
        return out

    @handles(ops.GetHistory)
    def _op_GetHistory(self, op: ops.GetHistory, tx: _Tx) -> list[Any]:
        return list(self._history.get((op.user_id, op.record_id), ()))

    @handles(ops.ListUserHistory)
    def _op_ListUserHistory(self, op: ops.ListUserHistory, tx: _Tx) -> list[Any]:
        events = sorted(
            (e for evs in self._history.values() for e in evs if e.user_id == op.user_id),
            key=lambda e: e.id,
        )
        if op.after_id is not None:
            events = [e for e in events if e.id > op.after_id]
        return events[: op.limit]

    @handles(ops.TouchRecords)
    def _op_TouchRecords(self, op: ops.TouchRecords, tx: _Tx) -> None:
        for rid in op.ids:
            r = self._records.get((op.user_id, rid))
            if r is not None:
                touched = replace(r, access_count=r.access_count + 1, last_accessed_at=op.at)
                tx.set(self._records, (op.user_id, rid), touched)

    @handles(ops.RebuildIndexes)
    def _op_RebuildIndexes(self, op: ops.RebuildIndexes, tx: _Tx) -> int:
        return 0  # searched from the records themselves: nothing to rebuild

    @handles(ops.SetPeriods)
    def _op_SetPeriods(self, op: ops.SetPeriods, tx: _Tx) -> int:
        found = 0
        for rid, periods in op.items:
            r = self._records.get((op.user_id, rid))
            if r is not None:
                tx.set(self._records, (op.user_id, rid), replace(r, periods=periods))
                found += 1
        return found

    @handles(ops.FindExpired)
    def _op_FindExpired(self, op: ops.FindExpired, tx: _Tx) -> list[MemoryRecord]:
        rows = [r for r in self._records.values() if r.is_expired(op.now)]
        return sorted(rows, key=lambda r: r.id)[: op.limit]

    @handles(ops.RemoveRecords)
    def _op_RemoveRecords(self, op: ops.RemoveRecords, tx: _Tx) -> int:
        n = 0
        for rid in op.ids:
            removed = self._records.get((op.user_id, rid))
            if removed is not None:
                tx.pop(self._records, (op.user_id, rid))
                n += 1
                if removed.kind == MemoryKind.EPISODE and removed.session_id is not None:
                    self._drop_contexts_after(removed, tx)
            self._erase_history(op.user_id, rid, tx)
        self._prune_graph(op.user_id, tx)
        return n

    def _drop_contexts_after(self, removed: MemoryRecord, tx: _Tx) -> None:
        """The turns after a removed turn of its session by its agent (by id or by time
        written) lose their context vectors: each was embedded with the turns before it,
        maybe the removed one."""
        for r in self._user_records(removed.user_id):
            if (
                r.kind == MemoryKind.EPISODE
                and r.session_id == removed.session_id
                and r.agent_id == removed.agent_id
                and (r.id > removed.id or r.created_at >= removed.created_at)
                and r.context_hash is not None
            ):
                tx.set(self._records, (r.user_id, r.id), replace(r, context_hash=None))

    def _erase_history(self, user_id: str, record_id: str, tx: _Tx) -> None:
        """Keep a removed record's history events, without their snapshots."""
        key = (user_id, record_id)
        if key in self._history:
            events = tuple(replace(e, snapshot=None) for e in self._history[key])
            tx.set(self._history, key, events)

    # ------------------------------------------------------------------ embeddings

    @handles(ops.GetEmbeddings)
    def _op_GetEmbeddings(self, op: ops.GetEmbeddings, tx: _Tx) -> dict[str, Vector]:
        return {
            h: self._embeddings[(op.model, h)]
            for h in op.hashes
            if (op.model, h) in self._embeddings
        }

    @handles(ops.PutEmbeddings)
    def _op_PutEmbeddings(self, op: ops.PutEmbeddings, tx: _Tx) -> None:
        for h, v in op.items:
            tx.set(self._embeddings, (op.model, h), np.asarray(v, dtype=np.float32))
        for h, v in op.keep:
            if (op.model, h) not in self._embeddings:
                tx.set(self._embeddings, (op.model, h), np.asarray(v, dtype=np.float32))
        for h, blob in op.sparse:
            if (op.sparse_model, h) not in self._sparse:
                tx.set(self._sparse, (op.sparse_model, h), bytes(blob))

    @handles(ops.GetSparse)
    def _op_GetSparse(self, op: ops.GetSparse, tx: _Tx) -> dict[str, bytes]:
        return {h: self._sparse[(op.model, h)] for h in op.hashes if (op.model, h) in self._sparse}

    @handles(ops.SparseOf)
    def _op_SparseOf(self, op: ops.SparseOf, tx: _Tx) -> dict[str, bytes]:
        out = {}
        for rid in op.ids:
            record = self._records.get((op.user_id, rid))
            if record is not None and (op.model, record.content_hash) in self._sparse:
                out[rid] = self._sparse[(op.model, record.content_hash)]
        return out

    def _adopted_model(self) -> tuple[str, int] | None:
        models = {m for m, _ in self._embeddings}
        if len(models) != 1:
            return None
        ((model, h),) = [next(iter(self._embeddings))]
        return model, int(self._embeddings[(model, h)].shape[0])

    @handles(ops.CheckEmbeddingModel)
    def _op_CheckEmbeddingModel(self, op: ops.CheckEmbeddingModel, tx: _Tx) -> None:
        recorded = self._meta.get("embedding_model")
        new = ops.embedding_model_to_record(op, recorded, self._adopted_model)
        if new is not None:
            tx.set(self._meta, "embedding_model", new)

    @handles(ops.GetEmbeddingModel)
    def _op_GetEmbeddingModel(self, op: ops.GetEmbeddingModel, tx: _Tx) -> tuple[str, int] | None:
        return self._meta.get("embedding_model") or self._adopted_model()

    @handles(ops.SetEmbeddingModel)
    def _op_SetEmbeddingModel(self, op: ops.SetEmbeddingModel, tx: _Tx) -> None:
        tx.set(self._meta, "embedding_model", (op.model, op.dim))

    @handles(ops.DropEmbeddings)
    def _op_DropEmbeddings(self, op: ops.DropEmbeddings, tx: _Tx) -> int:
        dead = [k for k in self._embeddings if k[0] != op.keep]
        for k in dead:
            tx.pop(self._embeddings, k)
        return len(dead)

    @handles(ops.PruneEmbeddings)
    def _op_PruneEmbeddings(self, op: ops.PruneEmbeddings, tx: _Tx) -> int:
        live = {r.content_hash for r in self._records.values()}
        live |= {r.context_hash for r in self._records.values() if r.context_hash}
        dead = [k for k in self._embeddings if k[1] not in live]
        for k in dead:
            tx.pop(self._embeddings, k)
        texts = {r.content_hash for r in self._records.values()}
        for k in [k for k in self._sparse if k[1] not in texts]:
            tx.pop(self._sparse, k)
        return len(dead)

    # ------------------------------------------------------------------ sessions

    @handles(ops.UpsertSession)
    def _op_UpsertSession(self, op: ops.UpsertSession, tx: _Tx) -> None:
        s = op.session
        old = self._sessions.get((s.user_id, s.session_id))
        if old is not None:
            s = replace(
                old,
                updated_at=max(old.updated_at, s.updated_at),
                metadata=s.metadata or old.metadata,
            )
        tx.set(self._sessions, (s.user_id, s.session_id), s)

    @handles(ops.GetSession)
    def _op_GetSession(self, op: ops.GetSession, tx: _Tx) -> Any:
        return self._sessions.get((op.user_id, op.session_id))

    @handles(ops.ListSessions)
    def _op_ListSessions(self, op: ops.ListSessions, tx: _Tx) -> list[Any]:
        rows = sorted(
            (s for (u, _), s in self._sessions.items() if u == op.user_id),
            key=lambda s: s.session_id,
        )
        if op.after_id is not None:
            rows = [s for s in rows if s.session_id > op.after_id]
        if op.updated_before is not None:
            cutoff = op.updated_before
            rows = [s for s in rows if s.updated_at < cutoff]
        return rows[: op.limit]

    @handles(ops.AppendMessages)
    def _op_AppendMessages(self, op: ops.AppendMessages, tx: _Tx) -> list[Message]:
        out: list[Message] = []
        for m in op.messages:
            key = (m.user_id, m.session_id)
            existing = self._messages.get(key, [])
            if op.assign_seq:
                m = replace(m, seq=(existing[-1].seq + 1) if existing else 1)
            elif any(e.seq == m.seq for e in existing):
                continue
            if existing and existing[-1].seq > m.seq:  # import: an earlier number
                tx.set(self._messages, key, sorted((*existing, m), key=lambda x: x.seq))
            else:  # appending costs the same at any session length
                tx.append(self._messages, key, m)
            out.append(m)
        return out

    @handles(ops.GetMessages)
    def _op_GetMessages(self, op: ops.GetMessages, tx: _Tx) -> list[Message]:
        rows = list(self._messages.get((op.user_id, op.session_id), ()))
        if op.last_runs is not None:
            runs: list[str] = []
            for m in reversed(rows):
                if m.run_id not in runs:
                    runs.append(m.run_id)
            keep = set(runs[: op.last_runs])
            rows = [m for m in rows if m.run_id in keep]
        return rows

    @handles(ops.DeleteSessions)
    def _op_DeleteSessions(self, op: ops.DeleteSessions, tx: _Tx) -> int:
        n = 0
        for sid in op.session_ids:
            if (op.user_id, sid) in self._sessions:
                n += 1
            tx.pop(self._sessions, (op.user_id, sid))
            tx.pop(self._messages, (op.user_id, sid))
            for key in [k for k in self._states if k[:2] == (op.user_id, sid)]:
                tx.pop(self._states, key)
            for r in self._user_records(op.user_id):
                if r.session_id == sid and r.kind in SESSION_BOUND_KINDS:
                    tx.pop(self._records, (r.user_id, r.id))
                    self._erase_history(op.user_id, r.id, tx)
        self._prune_graph(op.user_id, tx)
        return n

    # ------------------------------------------------------------------ state

    @handles(ops.GetState)
    def _op_GetState(self, op: ops.GetState, tx: _Tx) -> Any:
        versions = self._states.get((op.user_id, op.session_id, op.name), ())
        if op.version is None:
            return versions[-1] if versions else None
        return next((v for v in versions if v.version == op.version), None)

    @handles(ops.PutState)
    def _op_PutState(self, op: ops.PutState, tx: _Tx) -> None:
        s = op.state
        key = (s.user_id, s.session_id, s.name)
        versions = self._states.get(key, ())
        current = versions[-1].version if versions else 0
        if op.expected_version is None:
            if any(v.version == s.version for v in versions):
                return
        else:
            check_expected(
                f"state {s.name!r} of session {s.session_id!r}", op.expected_version, current
            )
        tx.set(self._states, key, tuple(sorted((*versions, s), key=lambda v: v.version)))

    @handles(ops.ListStateVersions)
    def _op_ListStateVersions(self, op: ops.ListStateVersions, tx: _Tx) -> list[Any]:
        return list(self._states.get((op.user_id, op.session_id, op.name), ()))

    @handles(ops.ListStates)
    def _op_ListStates(self, op: ops.ListStates, tx: _Tx) -> list[Any]:
        return sorted(
            (
                versions[-1]
                for (u, s, name), versions in self._states.items()
                if u == op.user_id and s == op.session_id and name.startswith(op.prefix)
            ),
            key=lambda v: v.name,
        )

    # ------------------------------------------------------------------ jobs

    @handles(ops.PutJob)
    def _op_PutJob(self, op: ops.PutJob, tx: _Tx) -> None:
        key = (op.job.user_id, op.job.id)
        old = self._jobs.get(key)
        actual = None if old is None else old.version
        if not should_apply(op, actual):
            return
        tx.set(self._jobs, key, op.job)

    @handles(ops.GetJob)
    def _op_GetJob(self, op: ops.GetJob, tx: _Tx) -> Job | None:
        return self._jobs.get((op.user_id, op.job_id))

    @handles(ops.ListJobs)
    def _op_ListJobs(self, op: ops.ListJobs, tx: _Tx) -> list[Job]:
        jobs = sorted(
            (
                j
                for j in self._jobs.values()
                if (op.user_id is None or j.user_id == op.user_id)
                and (not op.statuses or j.status in op.statuses)
                and (op.after_id is None or j.id > op.after_id)
            ),
            key=lambda j: (j.id, j.user_id),
        )
        return jobs[: op.limit]

    @handles(ops.ClaimJob)
    def _op_ClaimJob(self, op: ops.ClaimJob, tx: _Tx) -> Job | None:
        heads: dict[str, Job] = {}
        for job in sorted(self._jobs.values(), key=lambda j: (j.id, j.user_id)):
            if not job.finished and job.user_id not in heads:
                heads[job.user_id] = job
        due = [
            j
            for j in heads.values()
            if (op.user_id is None or j.user_id == op.user_id)
            and (
                (j.status is JobStatus.PENDING and j.run_after <= op.now)
                or (
                    j.status is JobStatus.RUNNING
                    and j.lease_until is not None
                    and j.lease_until < op.now
                )
            )
        ]
        if not due:
            return None
        job = min(due, key=lambda j: (j.id, j.user_id))
        claimed = claim(job, op)
        tx.set(self._jobs, (job.user_id, job.id), claimed)
        return claimed

    # ------------------------------------------------------------------ graph

    @handles(ops.IndexMentions)
    def _op_IndexMentions(self, op: ops.IndexMentions, tx: _Tx) -> None:
        u = op.user_id
        touched, edges = self._unmention(u, op.replace, tx)
        for item in op.items:
            linked: list[str] = []
            for draft in item.entities:
                entity_id = self._resolve(u, draft, op.at, tx)
                key = (u, item.record_id, entity_id)
                if key not in self._mentions:
                    tx.set(
                        self._mentions, key, Mention(u, entity_id, item.record_id, item.session_id)
                    )
                if entity_id not in linked and len(linked) < op.max_edges:
                    linked.append(entity_id)
            for a, b in co_occurrences(linked):
                edge = Relation(u, co_id(a, b), a, MENTIONED_WITH, b, item.said, None, op.at)
                self._put_relation(replace(edge, sources=(item.record_id,)), tx)
            for t in item.triples:
                self._put_triple(u, item, t, op.at, tx)
        self._drop_unused(u, touched, edges, tx)

    def _unmention(
        self, user_id: str, record_ids: Sequence[str], tx: _Tx
    ) -> tuple[set[str], set[str]]:
        """Take back what the text of ``record_ids`` named (IndexMentions.replace): the
        entities they mentioned and the co-occurrence edges they were sources of."""
        records = set(record_ids)
        if not records:
            return set(), set()
        relations = self._user_relations(user_id)
        keep = {
            end
            for r in relations
            if r.predicate != MENTIONED_WITH and records & set(r.sources)
            for end in (r.subject_id, r.object_id)
        }
        touched: set[str] = set()
        for key in [k for k in self._mentions if k[0] == user_id and k[1] in records]:
            touched.add(key[2])
            if key[2] not in keep:
                tx.pop(self._mentions, key)
        edges: set[str] = set()
        for r in relations:
            if r.predicate == MENTIONED_WITH and records & set(r.sources):
                edges.add(r.id)
                sources = tuple(s for s in r.sources if s not in records)
                tx.set(self._relations, (user_id, r.id), replace(r, sources=sources))
        return touched, edges

    def _drop_unused(self, user_id: str, entities: set[str], edges: set[str], tx: _Tx) -> None:
        """Delete the ``edges`` left with no source, then the ``entities`` no mention,
        edge or merged entity names any more (with their keys)."""
        for edge in edges:
            r = self._relations.get((user_id, edge))
            if r is not None and not r.sources:
                tx.pop(self._relations, (user_id, edge))
        if not entities:
            return
        used = {e for (u, _, e) in self._mentions if u == user_id}
        for r in self._user_relations(user_id):
            used |= {r.subject_id, r.object_id}
        used |= {
            e.merged_into for (u, _), e in self._entities.items() if u == user_id and e.merged_into
        }
        for entity in entities - used:
            current = self._entities.get((user_id, entity))
            if current is not None and current.merged_into is None:
                tx.pop(self._entities, (user_id, entity))
        for kkey, owner in list(self._entity_keys.items()):
            if kkey[0] == user_id and owner in entities and (user_id, owner) not in self._entities:
                tx.pop(self._entity_keys, kkey)

    def _put_triple(
        self, user_id: str, item: ops.MentionDraft, t: ops.TripleDraft, at: Any, tx: _Tx
    ) -> None:
        ends = [self._resolve(user_id, d, at, tx) for d in (t.subject, t.object)]
        for entity_id in ends:
            key = (user_id, item.record_id, entity_id)
            if key not in self._mentions:
                mention = Mention(user_id, entity_id, item.record_id, item.session_id)
                tx.set(self._mentions, key, mention)
        subject, obj = ends
        if subject == obj:
            return
        ends_at = None
        if t.exclusive:
            # The subject's other objects of the predicate: those begun before this is said
            # end now; one begun later (learned out of order) ends this one instead.
            later: list[Any] = []
            for r in self._user_relations(user_id):
                if (r.subject_id, r.predicate) != (subject, t.predicate) or r.object_id == obj:
                    continue
                if r.valid_from is not None and r.valid_from > item.said:
                    later.append(r.valid_from)
                elif r.is_current:
                    tx.set(self._relations, (user_id, r.id), replace(r, valid_to=item.said))
            ends_at = min(later, default=None)
        edge_id = triple_id(subject, t.predicate, obj)
        edge = Relation(user_id, edge_id, subject, t.predicate, obj, item.said, ends_at, at)
        self._put_relation(replace(edge, sources=(item.record_id,)), tx)

    def _resolve(self, user_id: str, draft: ops.EntityDraft, at: Any, tx: _Tx) -> str:
        """The id of the entity ``draft`` names (made when none is found)."""
        found = next(
            (
                self._entity_keys[(user_id, k)]
                for k in draft.lookup
                if (user_id, k) in self._entity_keys
            ),
            None,
        )
        if found is None:
            entity = Entity(user_id, draft.id, draft.name, draft.type, (), at, at)
            tx.set(self._entities, (user_id, draft.id), entity)
            found = draft.id
        else:
            entity = self._entities[(user_id, found)]
            if draft.keys and (user_id, draft.keys[0]) not in self._entity_keys:
                entity = replace(entity, aliases=(*entity.aliases, draft.name), updated_at=at)
            if entity.type is EntityType.NAME and draft.type is not EntityType.NAME:
                entity = replace(entity, type=draft.type, updated_at=at)
            tx.set(self._entities, (user_id, found), entity)
        for k in draft.keys:
            if (user_id, k) not in self._entity_keys:
                tx.set(self._entity_keys, (user_id, k), found)
        return found

    def _put_relation(self, r: Relation, tx: _Tx) -> None:
        old = self._relations.get((r.user_id, r.id))
        if old is not None:
            sources = tuple(dict.fromkeys((*old.sources, *r.sources)))
            began = _earlier(old.valid_from, r.valid_from)  # said of an earlier time too
            r = replace(old, sources=sources, valid_from=began, valid_to=old.valid_to or r.valid_to)
        tx.set(self._relations, (r.user_id, r.id), r)

    @handles(ops.PutRelations)
    def _op_PutRelations(self, op: ops.PutRelations, tx: _Tx) -> None:
        for r in op.relations:
            self._put_relation(r, tx)

    @handles(ops.ListEntities)
    def _op_ListEntities(self, op: ops.ListEntities, tx: _Tx) -> list[Entity]:
        if op.ids:
            found = (self._entities.get((op.user_id, i)) for i in op.ids)
            return [e for e in found if e is not None]
        after = op.after_id or ""
        rows = sorted(
            (e for (u, i), e in self._entities.items() if u == op.user_id and i > after),
            key=lambda e: e.id,
        )
        return [e for e in rows if e.merged_into is None][: op.limit]

    @handles(ops.FindEntities)
    def _op_FindEntities(self, op: ops.FindEntities, tx: _Tx) -> dict[str, str]:
        keys = ((k, self._entity_keys.get((op.user_id, k))) for k in op.keys)
        return {k: e for k, e in keys if e is not None}

    @handles(ops.ListMentions)
    def _op_ListMentions(self, op: ops.ListMentions, tx: _Tx) -> list[Mention]:
        records, entities = set(op.record_ids), set(op.entity_ids)
        rows = [
            m
            for (u, r, e), m in self._mentions.items()
            if u == op.user_id and (r in records or e in entities)
        ]
        return sorted(rows, key=lambda m: (m.record_id, m.entity_id))[: op.limit]

    def _user_relations(self, user_id: str) -> list[Relation]:
        return [r for (u, _), r in self._relations.items() if u == user_id]

    @handles(ops.ListRelations)
    def _op_ListRelations(self, op: ops.ListRelations, tx: _Tx) -> list[Relation]:
        after = op.after_id or ""
        rows = sorted(
            (
                r
                for r in self._user_relations(op.user_id)
                if r.id > after
                and (op.entity_id is None or op.entity_id in (r.subject_id, r.object_id))
                and (r.valid_at(op.as_of) if op.as_of is not None else op.ended or r.is_current)
            ),
            key=lambda r: r.id,
        )
        return rows[: op.limit]

    @handles(ops.EntityNeighbors)
    def _op_EntityNeighbors(self, op: ops.EntityNeighbors, tx: _Tx) -> list[tuple[str, int]]:
        edges: dict[str, set[str]] = {}
        for r in self._user_relations(op.user_id):
            if r.valid_at(op.as_of) if op.as_of is not None else r.is_current:
                edges.setdefault(r.subject_id, set()).add(r.object_id)
                edges.setdefault(r.object_id, set()).add(r.subject_id)
        seen = {op.entity_id: 0}
        frontier = [op.entity_id]
        for depth in range(1, op.depth + 1):
            frontier = sorted({n for e in frontier for n in edges.get(e, ()) if n not in seen})
            seen.update((n, depth) for n in frontier)
        del seen[op.entity_id]
        return sorted(seen.items(), key=lambda kv: (kv[1], kv[0]))[: op.limit]

    @handles(ops.MergeEntities)
    def _op_MergeEntities(self, op: ops.MergeEntities, tx: _Tx) -> Entity | None:
        u = op.user_id
        source = self._entities.get((u, op.source_id))
        target = self._entities.get((u, op.target_id))
        if source is None or target is None or source.merged_into or target.merged_into:
            return None
        if source.id == target.id:
            return target
        for key, owner in list(self._entity_keys.items()):
            if key[0] == u and owner == source.id:
                tx.set(self._entity_keys, key, target.id)
        for (mu, rid, eid), m in list(self._mentions.items()):
            if mu == u and eid == source.id:
                tx.pop(self._mentions, (u, rid, eid))
                tx.set(self._mentions, (u, rid, target.id), replace(m, entity_id=target.id))
        for r in self._user_relations(u):
            if source.id in (r.subject_id, r.object_id):
                tx.pop(self._relations, (u, r.id))
                moved = moved_relation(r, source.id, target.id)
                if moved is not None:
                    self._put_relation(moved, tx)
        merged = replace(
            target,
            aliases=merged_aliases(target, source),
            updated_at=op.at,
        )
        tx.set(self._entities, (u, target.id), merged)
        tx.set(
            self._entities, (u, source.id), replace(source, merged_into=target.id, updated_at=op.at)
        )
        return merged

    def _prune_graph(self, user_id: str, tx: _Tx) -> None:
        """Drop what no stored memory states any more: mentions and sources of removed
        memories, edges left with no source, entities left with no mention nor edge."""
        live = {i for (u, i) in self._records if u == user_id}
        for key in [k for k in self._mentions if k[0] == user_id and k[1] not in live]:
            tx.pop(self._mentions, key)
        for r in self._user_relations(user_id):
            sources = tuple(s for s in r.sources if s in live)
            if not sources:
                tx.pop(self._relations, (user_id, r.id))
            elif sources != r.sources:
                tx.set(self._relations, (user_id, r.id), replace(r, sources=sources))
        used = {e for (u, _, e) in self._mentions if u == user_id}
        for r in self._user_relations(user_id):
            used |= {r.subject_id, r.object_id}
        for ekey, e in list(self._entities.items()):
            # A merged entity is its target's history: it goes with its target.
            if ekey[0] == user_id and (e.merged_into or e.id) not in used:
                tx.pop(self._entities, ekey)
        for kkey, owner in list(self._entity_keys.items()):
            if kkey[0] == user_id and (user_id, owner) not in self._entities:
                tx.pop(self._entity_keys, kkey)

    # ------------------------------------------------------------------ users

    @handles(ops.ListUsers)
    def _op_ListUsers(self, op: ops.ListUsers, tx: _Tx) -> list[str]:
        users = {r.user_id for r in self._records.values()}
        users |= {u for u, _ in self._sessions}
        users |= {e.user_id for events in self._history.values() for e in events}
        users |= {j.user_id for j in self._jobs.values()}
        return sorted(users)

    @handles(ops.DeleteUser)
    def _op_DeleteUser(self, op: ops.DeleteUser, tx: _Tx) -> dict[str, int]:
        u = op.user_id
        counts = {"records": 0, "history": 0, "sessions": 0, "messages": 0, "states": 0}
        counts["jobs"] = 0
        for job in [j for j in self._jobs.values() if j.user_id == u]:
            tx.pop(self._jobs, (u, job.id))
            counts["jobs"] += 1
        for r in self._user_records(u):
            tx.pop(self._records, (u, r.id))
            counts["records"] += 1
        for key, events in list(self._history.items()):
            if key[0] == u:
                counts["history"] += len(events)
                for e in events:
                    tx.pop(self._event_ids, (u, e.id))
                tx.pop(self._history, key)
        for key in [k for k in self._sessions if k[0] == u]:
            tx.pop(self._sessions, key)
            counts["sessions"] += 1
        for key in [k for k in self._messages if k[0] == u]:
            counts["messages"] += len(self._messages[key])
            tx.pop(self._messages, key)
        for state_key in [k for k in self._states if k[0] == u]:
            counts["states"] += len(self._states[state_key])
            tx.pop(self._states, state_key)
        graph = (
            ("entities", self._entities),
            ("entity_keys", self._entity_keys),
            ("mentions", self._mentions),
            ("relations", self._relations),
        )
        for name, table in graph:
            rows = [k for k in table if k[0] == u]
            counts[name] = len(rows)
            for row in rows:
                tx.pop(table, row)
        counts["embeddings"] = self._op_PruneEmbeddings(ops.PruneEmbeddings(), tx)
        counts["audit"] = sum(len(self._audit.get(trail, {})) for trail in op.trails)
        for trail in op.trails:
            tx.pop(self._audit, trail)
        if op.tombstone is not None:
            self._op_AppendAudit(ops.AppendAudit((replace(op.tombstone, counts=counts),)), tx)
        return counts

    # ------------------------------------------------------------------ audit

    @handles(ops.AppendAudit)
    def _op_AppendAudit(self, op: ops.AppendAudit, tx: _Tx) -> None:
        for event in op.events:
            trail = self._audit.get(event.user_id)
            if trail is None:
                tx.set(self._audit, event.user_id, {})
                trail = self._audit[event.user_id]
            if event.id not in trail:
                tx.set(trail, event.id, event)

    @handles(ops.ListAudit)
    def _op_ListAudit(self, op: ops.ListAudit, tx: _Tx) -> list[AuditEvent]:
        after, since = op.after_id or "", op.since
        events = sorted(
            (e for e in self._audit.get(op.user_id, {}).values() if e.id > after),
            key=lambda e: e.id,
        )
        return [e for e in events if since is None or e.at >= since][: op.limit]


def _earlier(a: Any, b: Any) -> Any:
    """The earlier of two starts of validity; None (unbounded) is earliest."""
    return None if a is None or b is None else min(a, b)
