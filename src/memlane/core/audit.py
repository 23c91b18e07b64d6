"""The audit trail: who read or changed which user's data, never what it said.

Every public call runs through :func:`audited` (``Memory.run`` does it), which watches
the flow's store batches. A batch that changes a user's data (records, history, sessions,
messages, state, jobs: :func:`changes` reads it off the ops) gets an
:class:`~memlane.ports.store.AppendAudit` appended, so the change and its entry commit
together or not at all. A read (:data:`READS`) appends its entry once it has its result,
from what the caller was given (ids and counts, never text): in a batch of its own, or
with the access counts a search wrote last (one write a search, not two).
:class:`~memlane.models.AuditLevel` says which of the two happen.

Forgetting a user removes the user's entries and leaves one tombstone (when, by whom,
what was removed) under :func:`tombstone_id`: a keyed hash of the user id, so the store
keeps no trace of the id itself, while whoever knows the id (and the key) still finds
the tombstone through :func:`audit`.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypeGuard, TypeVar

from memlane.core.base import Core
from memlane.core.flow import Batch, Flow, many
from memlane.errors import ValidationError
from memlane.ids import new_id
from memlane.models import (
    TOMBSTONE_ACTION,
    AuditEvent,
    AuditLevel,
    Job,
    MemoryRecord,
    Page,
    check_id,
)
from memlane.ports import store as ops

_log = logging.getLogger("memlane.audit")

R = TypeVar("R")

TOMBSTONE_PREFIX = "forgotten:"
"""How the user id of a tombstone starts (then 32 hex digits of the keyed hash)."""

_UNKEYED = b"memlane audit tombstone"
"""The hash key when the configuration names none (a public one: see ``audit_key``)."""


@dataclass(frozen=True, slots=True)
class Touched:
    """What one call did to one user's data: ids of memories and sessions, and counts."""

    record_ids: tuple[str, ...] = ()
    session_ids: tuple[str, ...] = ()
    counts: Mapping[str, int] = field(default_factory=dict)


Reading = Callable[[Any, Mapping[str, Any]], dict[str, Touched]]
"""What a read gave its caller, by user, from its result and its arguments by name."""


def _no_arguments() -> Mapping[str, Any]:
    return {}


@dataclass(frozen=True, slots=True)
class Call:
    """A public call as the audit trail names it: its action (the method's name), how
    its result is read if it is a read, and its arguments by name (worked out only when
    a read's entry needs them)."""

    action: str
    reading: Reading | None = None
    arguments: Callable[[], Mapping[str, Any]] = _no_arguments


class Method:
    """A flow function bound as a public method, described once: each call of the method
    is then a :class:`Call` (see :mod:`memlane.api`)."""

    def __init__(self, flow: Callable[..., Any], action: str, reading: Reading | None) -> None:
        self.action = action
        self.reading = reading
        self.signature = inspect.signature(flow) if reading is not None else None

    def call(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Call:
        """This method called with ``args`` and ``kwargs`` (after the core or ``self``)."""
        signature = self.signature
        if signature is None:
            return Call(self.action)

        def arguments() -> Mapping[str, Any]:
            bound = signature.bind(None, *args, **kwargs)
            bound.apply_defaults()
            return bound.arguments

        return Call(self.action, self.reading, arguments)


# ---------------------------------------------------------------------------- running


def audited(core: Core, call: Call, flow: Flow[R]) -> Flow[R]:
    """``flow`` with its changes and (at level ``all``) its read recorded in the audit
    trail as ``call`` by ``core.actor``; the flow itself when auditing is off."""
    level = AuditLevel(core.config.audit)
    if level is AuditLevel.OFF:
        return flow
    return _audited(core, call, flow, reads=level is AuditLevel.ALL)


def _audited(core: Core, call: Call, flow: Flow[R], *, reads: bool) -> Flow[R]:
    """Drive ``flow``, passing its effects on: a batch that changes data goes with its
    entries appended (their result taken off again), what the runner raises goes back
    into the flow. Then the read's entry, in a batch of its own, or with the access
    counts the flow wrote last: a search's are held back (answered at once) and written
    with its entry, one transaction where they took two. Held counts go out before
    anything the flow asks next, and before its error; should they fail to be written
    once the flow has gone on, the call fails with their error (the flow, which
    believes them written, is not asked to handle it at a step of its own)."""
    reply: Any = None
    error: Exception | None = None
    held: Batch | None = None
    try:
        try:
            while True:
                try:
                    effect = flow.throw(error) if error is not None else flow.send(reply)
                except StopIteration as done:
                    result: R = done.value
                    break
                reply, error = None, None
                if held is not None:  # the flow went on: its counts first
                    written, held = held, None
                    yield written
                if reads and _access_counts(effect):
                    held = effect
                    reply = [None] * len(held.ops)
                    continue
                write = _with_entries(core, call.action, effect)
                try:
                    reply = yield (effect if write is None else write)
                except Exception as exc:  # the runner's: the flow may handle it
                    error = exc
                else:
                    if write is not None:  # the entries' result, after the batch's own ops
                        at = len(write.ops) - 1
                        reply = [*reply[:at], *reply[at + 1 :]]
        finally:
            flow.close()
        last: tuple[ops.Op[Any], ...] = () if held is None else held.ops
        if reads and call.reading is not None:
            touched = call.reading(result, call.arguments())
            events = _events(core, call.action, touched)
            if events:
                last += (ops.AppendAudit(events),)
    except Exception:
        if held is not None:  # what a failing call wrote before it failed stays written
            yield from _written_anyway(held)
        raise
    if last:
        yield Batch(last)
    return result


def _written_anyway(held: Batch) -> Flow[None]:
    """Write counts held back from a call that is failing: its own error is the one
    told, so theirs is only logged."""
    try:
        yield held
    except Exception:
        _log.debug("the access counts of a failing call were not written", exc_info=True)


def _access_counts(effect: Any) -> TypeGuard[Batch]:
    """Whether ``effect`` is a batch of access counts only (a search's last write), whose
    result no flow reads (each op answers None)."""
    return (
        isinstance(effect, Batch)
        and bool(effect.ops)
        and all(isinstance(op, ops.TouchRecords) for op in effect.ops)
    )


def _with_entries(core: Core, action: str, effect: Any) -> Batch | None:
    """``effect`` with the entries of the changes it makes appended, if it is a batch
    that makes any."""
    if not isinstance(effect, Batch):
        return None
    events = _events(core, action, changes(effect.ops))
    return replace(effect, ops=(*effect.ops, ops.AppendAudit(events))) if events else None


def recorded(core: Core, action: str, batch: Sequence[ops.Op[Any]]) -> tuple[ops.Op[Any], ...]:
    """``batch`` with the entries of its changes appended, as :func:`audited` does for a
    flow's: for a write made outside a flow (queueing a background job)."""
    if AuditLevel(core.config.audit) is AuditLevel.OFF:
        return tuple(batch)
    write = _with_entries(core, action, Batch(tuple(batch)))
    return tuple(batch) if write is None else write.ops


def read_jobs(
    core: Core, action: str, jobs: Iterable[Job], user_id: str | None = None
) -> tuple[ops.Op[Any], ...]:
    """The batch recording a read of background jobs made outside a flow (their payloads
    hold queued messages), per user (``user_id``'s even when none was found); empty
    unless reads are recorded."""
    if AuditLevel(core.config.audit) is not AuditLevel.ALL:
        return ()
    gathered: dict[str, _Gathered] = {}
    if user_id is not None:
        gathered[user_id] = _Gathered()
        gathered[user_id].add(jobs=0)
    for job in jobs:
        gathered.setdefault(job.user_id, _Gathered()).add(session_ids=(job.session_id,), jobs=1)
    events = _events(core, action, {u: g.touched() for u, g in gathered.items()})
    return (ops.AppendAudit(events),) if events else ()


def _events(core: Core, action: str, touched: Mapping[str, Touched]) -> tuple[AuditEvent, ...]:
    now = core.now()
    return tuple(
        AuditEvent(
            id=new_id(),
            user_id=user_id,
            at=now,
            actor=core.actor,
            action=action,
            record_ids=t.record_ids,
            session_ids=t.session_ids,
            counts=dict(t.counts),
        )
        for user_id, t in touched.items()
    )


# ---------------------------------------------------------------------------- changes


class _Gathered:
    """One user's changes in a batch, gathered op by op."""

    def __init__(self) -> None:
        self.records: dict[str, None] = {}
        self.sessions: dict[str, None] = {}
        self.counts: dict[str, int] = {}

    def add(
        self,
        record_ids: Iterable[str] = (),
        session_ids: Iterable[str | None] = (),
        **counts: int,
    ) -> None:
        self.records.update(dict.fromkeys(record_ids))
        self.sessions.update(dict.fromkeys(s for s in session_ids if s is not None))
        for name, n in counts.items():
            self.counts[name] = self.counts.get(name, 0) + n

    def touched(self) -> Touched:
        return Touched(tuple(self.records), tuple(self.sessions), self.counts)


_Change = Callable[[Any, Callable[[str], _Gathered]], None]
"""Records what one op changes, on the gathering of the user it names."""


def _write_record(op: ops.WriteRecord, user: Callable[[str], _Gathered]) -> None:
    r = op.record
    user(r.user_id).add((r.id,), (r.session_id,), records=1)


def _append_history(op: ops.AppendHistory, user: Callable[[str], _Gathered]) -> None:
    for e in op.events:  # each event is a change of its record (a removal's too)
        user(e.user_id).add((e.record_id,))


def _append_messages(op: ops.AppendMessages, user: Callable[[str], _Gathered]) -> None:
    for m in op.messages:
        user(m.user_id).add(session_ids=(m.session_id,), messages=1)


def _put_relations(op: ops.PutRelations, user: Callable[[str], _Gathered]) -> None:
    for r in op.relations:
        user(r.user_id).add(r.sources, relations=1)


CHANGES: dict[type[ops.Op[Any]], _Change] = {
    ops.WriteRecord: _write_record,
    ops.AppendHistory: _append_history,
    ops.RemoveRecords: lambda op, user: user(op.user_id).add(op.ids, removed=len(op.ids)),
    ops.SetPeriods: lambda op, user: user(op.user_id).add(
        (rid for rid, _ in op.items), reindexed=len(op.items)
    ),
    ops.UpsertSession: lambda op, user: user(op.session.user_id).add(
        session_ids=(op.session.session_id,)
    ),
    ops.AppendMessages: _append_messages,
    ops.DeleteSessions: lambda op, user: user(op.user_id).add(
        session_ids=op.session_ids, sessions_deleted=len(op.session_ids)
    ),
    ops.PutState: lambda op, user: user(op.state.user_id).add(
        session_ids=(op.state.session_id,), states=1
    ),
    ops.PutJob: lambda op, user: user(op.job.user_id).add(session_ids=(op.job.session_id,), jobs=1),
    ops.MergeEntities: lambda op, user: user(op.user_id).add(entities_merged=1),
    ops.PutRelations: _put_relations,
}
"""The ops that change a user's data, and what each records in the trail."""

UNRECORDED: frozenset[type[ops.Op[Any]]] = frozenset(
    {
        # Reads: recorded, if at all, as the call's read (READS), from what it returned.
        ops.GetRecords, ops.ListRecords, ops.LexicalSearch, ops.VectorSearch,
        ops.GetNeighbors, ops.GetHistory, ops.ListUserHistory, ops.FindExpired,
        ops.GetEmbeddings, ops.GetSparse, ops.SparseOf, ops.GetEmbeddingModel,
        ops.GetSession, ops.ListSessions,
        ops.GetMessages, ops.GetState, ops.ListStateVersions, ops.ListStates, ops.GetJob,
        ops.ListJobs, ops.ListUsers, ops.ListAudit,
        # Bookkeeping no one reads as a change of the user's data: access counts, the
        # vector cache and its model, index rebuilds, a worker claiming a job.
        ops.TouchRecords, ops.PutEmbeddings, ops.CheckEmbeddingModel, ops.SetEmbeddingModel,
        ops.DropEmbeddings, ops.PruneEmbeddings, ops.RebuildIndexes, ops.ClaimJob,
        # The knowledge graph: its reads, and mentions recorded beside the writes of the
        # memories they are read from (the records' own entries name those).
        ops.ListEntities, ops.FindEntities, ops.ListMentions, ops.ListRelations,
        ops.EntityNeighbors, ops.IndexMentions,
        # The trail itself, and forgetting a user: its tombstone is its entry.
        ops.AppendAudit, ops.DeleteUser,
    }
)  # fmt: skip
"""The ops that change no user's data as the trail sees it."""


def changes(batch: Sequence[ops.Op[Any]]) -> dict[str, Touched]:
    """What ``batch`` changes, by user (users in the order the batch first names them).
    An op neither in :data:`CHANGES` nor in :data:`UNRECORDED` (a store's own op)
    changes nothing the trail records."""
    gathered: dict[str, _Gathered] = {}

    def user(user_id: str) -> _Gathered:
        found = gathered.get(user_id)
        if found is None:
            found = gathered[user_id] = _Gathered()
        return found

    for op in batch:
        change = CHANGES.get(type(op))
        if change is not None:
            change(op, user)
    return {user_id: g.touched() for user_id, g in gathered.items()}


# ---------------------------------------------------------------------------- reads


def _of_user(read: Callable[[Any, Mapping[str, Any]], Touched]) -> Reading:
    """A :data:`Reading` of a call about the one user its ``user_id`` argument names."""

    def reading(result: Any, arguments: Mapping[str, Any]) -> dict[str, Touched]:
        user_id = arguments.get("user_id")
        return {user_id: read(result, arguments)} if isinstance(user_id, str) else {}

    return reading


def _records(records: Iterable[MemoryRecord]) -> Touched:
    ids = tuple(dict.fromkeys(r.id for r in records))
    return Touched(ids, counts={"results": len(ids)})


def _session(arguments: Mapping[str, Any], **counts: int) -> Touched:
    session_id = arguments.get("session_id")
    return Touched(session_ids=(session_id,) if isinstance(session_id, str) else (), counts=counts)


def _context(built: Any, arguments: Mapping[str, Any]) -> Touched:
    """A context block: the memories in it (pinned, relevant, the summary) and how many
    messages of the session."""
    ids: Mapping[str, Sequence[str]] = built.ids
    records = tuple(dict.fromkeys(i for tier in ("pinned", "memories", "summary")
                                  for i in ids.get(tier, ())))  # fmt: skip
    session = _session(arguments)
    counts = {"results": len(records), "messages": len(ids.get("history", ()))}
    return Touched(records, session.session_ids, counts)


def _exported(
    rows: Sequence[Mapping[str, Any]], arguments: Mapping[str, Any]
) -> dict[str, Touched]:
    """An export: per user, how many rows of each type (every user's, for a whole store)."""
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        data = row.get("data")
        user_id = data.get("user_id") if isinstance(data, Mapping) else None
        if isinstance(user_id, str):
            mine = counts.setdefault(user_id, {})
            mine[row["type"]] = mine.get(row["type"], 0) + 1
    return {user_id: Touched(counts=c) for user_id, c in counts.items()}


READS: dict[str, Reading] = {
    "get": _of_user(lambda record, a: _records([record])),
    "search": _of_user(lambda hits, a: _records(h.record for h in hits)),
    "list": _of_user(lambda page, a: _records(page.items)),
    "history": _of_user(
        lambda events, a: Touched((a["record_id"],), counts={"events": len(events)})
    ),
    "recall": _of_user(lambda value, a: Touched(counts={"results": int(value is not None)})),
    "get_history": _of_user(
        lambda runs, a: _session(a, messages=sum(len(r.messages) for r in runs))
    ),
    "get_session": _of_user(lambda session, a: _session(a)),
    "list_sessions": _of_user(
        lambda page, a: Touched(
            session_ids=tuple(s.session_id for s in page.items),
            counts={"results": len(page.items)},
        )
    ),
    "get_state": _of_user(lambda state, a: _session(a, states=int(state.version > 0))),
    "state_history": _of_user(lambda versions, a: _session(a, states=len(versions))),
    "load_workflow": _of_user(lambda state, a: _session(a, states=int(state is not None))),
    "list_workflows": _of_user(lambda states, a: _session(a, states=len(states))),
    "get_summary": _of_user(
        lambda record, a: Touched(
            () if record is None else (record.id,),
            _session(a).session_ids,
            {"results": int(record is not None)},
        )
    ),
    "build_context": _of_user(_context),
    "entities": _of_user(lambda found, a: Touched(counts={"entities": len(found)})),
    "relations": _of_user(
        lambda found, a: Touched(
            tuple(dict.fromkeys(s for r in found for s in r.sources)),
            counts={"relations": len(found)},
        )
    ),
    "neighbors": _of_user(lambda found, a: Touched(counts={"entities": len(found)})),
    "mentions": _of_user(
        lambda found, a: Touched(
            tuple(dict.fromkeys(m.record_id for m in found)), counts={"mentions": len(found)}
        )
    ),
    "export_rows": _exported,
}
"""The reads of the public API (by method name) and what each gave its caller. A call
neither here nor changing anything (``list_users``, ``audit``) is not recorded."""


# ---------------------------------------------------------------------------- forgetting


def tombstone_id(core: Core, user_id: str) -> str:
    """The user id a forgotten user's tombstone is kept under: ``forgotten:`` and a hash
    of ``user_id`` keyed by ``config.audit_key`` (unkeyed without one)."""
    key = core.config.audit_key or _UNKEYED
    digest = hmac.new(key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return TOMBSTONE_PREFIX + digest[:32]


def tombstone(core: Core, user_id: str) -> AuditEvent | None:
    """The entry forgetting ``user_id`` leaves (the store adds the counts of what it
    removed), or None when auditing is off."""
    if AuditLevel(core.config.audit) is AuditLevel.OFF:
        return None
    return AuditEvent(
        id=new_id(),
        user_id=tombstone_id(core, user_id),
        at=core.now(),
        actor=core.actor,
        action=TOMBSTONE_ACTION,
    )


# ---------------------------------------------------------------------------- querying


def audit(
    core: Core,
    user_id: str,
    *,
    since: datetime | None = None,
    after: str | None = None,
    limit: int = 100,
) -> Flow[Page[AuditEvent]]:
    """One page of the user's audit trail, oldest first: who read or changed the user's
    data, when, and which memories and sessions (never their content). ``since`` keeps
    entries at or after a time; ``after`` is the ``next_cursor`` of the page before. A
    user forgotten earlier shows the tombstone of that forgetting (its ``user_id`` is
    :func:`tombstone_id`). Reading the trail is not itself recorded. Raises
    ValidationError for a missing user id, a naive ``since`` or a bad limit."""
    check_id("user_id", user_id)
    check_id("after", after, required=False)
    limit = core.check_limit(limit)
    if since is not None and (not isinstance(since, datetime) or since.tzinfo is None):
        raise ValidationError("since must be a timezone-aware datetime")
    trails = (user_id, tombstone_id(core, user_id))
    found = yield from many([ops.ListAudit(t, after, limit + 1, since) for t in trails])
    rows = sorted((e for events in found for e in events), key=lambda e: e.id)
    page = rows[:limit]
    return Page(tuple(page), page[-1].id if len(rows) > limit else None)
