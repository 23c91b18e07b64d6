"""Memories: add, read, list, search, update, supersede, delete, restore, keyed facts."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from memlane.core.base import BEFORE_ANY_EXPIRY, Core, MemoryInput, checked_trust, periods_of
from memlane.core.flow import Flow, many, one, pause
from memlane.core.mentions import reindex_op
from memlane.core.retrieval import _filters
from memlane.errors import ConflictError, ValidationError, no_history, no_memory
from memlane.ids import stable_id
from memlane.models import (
    Filters,
    HistoryAction,
    HistoryEvent,
    MemoryKind,
    MemoryRecord,
    Page,
    Trust,
    check_id,
)
from memlane.ports import store as ops


def _same_json(a: Any, b: Any) -> bool:
    """Equal as JSON documents: "5" is not 5, 1 is not True, key order does not matter."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


REMEMBER_ATTEMPTS = 16
"""How often remember() tries when concurrent writers of the same key keep winning."""


def _backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2 ...): doubling from 4 ms up to
    0.5 s, jittered so the writers that collided do not collide again in step (at most
    about 5 s over all attempts)."""
    return min(0.5, 0.002 * 2.0**attempt) * (0.5 + random.random())


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()
"""Marks an argument the caller did not give (distinct from an explicit None)."""


def add(
    core: Core,
    text: str,
    *,
    user_id: str,
    kind: MemoryKind | str = MemoryKind.FACT,
    topics: Sequence[str] = (),
    metadata: Mapping[str, Any] | None = None,
    importance: float = 0.5,
    event_at: datetime | None = None,
    expires_at: datetime | None = None,
    ttl: timedelta | None = None,
    session_id: str | None = None,
    agent_id: str | None = None,
    team: str | None = None,
    source_ids: Sequence[str] = (),
    actor: str | None = None,
    idempotency_key: str | None = None,
    trust: Trust | str = Trust.USER,
) -> Flow[MemoryRecord]:
    """Store one memory for ``user_id`` and return it.

    ``trust`` says whose word it is (:class:`~memlane.models.Trust`): ``user`` (stated
    by the user, the default), ``inferred`` (by the agent or a model), ``tool`` (tool or
    web content) or ``imported``. Text holding instruction-like content is handled by the
    scope's injection policy (``CoreConfig.injection``): by default the memory is stored
    quarantined (``record.quarantine`` names what was found) and is not recalled until
    :meth:`release`; a refusing policy raises InjectionRefusedError and stores nothing.

    With ``idempotency_key``, adding again with the same key (a retry after a timeout,
    from any process) returns the memory stored the first time instead of a duplicate.
    The key is scoped to the user and the agent (``agent_id``; none is a scope of its
    own): another agent's use of the same key neither returns nor blocks this add.
    Such a memory's id is derived from user, agent and key, so it does not sort by
    creation time like other ids.

    Raises ValidationError for empty or oversize text, a missing user id, or bad
    fields; nothing is stored then.
    """
    item = MemoryInput(
        text=text,
        kind=kind,
        topics=topics,
        metadata=metadata or {},
        importance=importance,
        event_at=event_at,
        expires_at=expires_at,
        ttl=ttl,
        session_id=session_id,
        agent_id=agent_id,
        team=team,
        source_ids=source_ids,
        actor=actor,
        trust=trust,
    )
    _check_addable(item)
    if idempotency_key is None:
        (record,) = yield from add_many(core, [item], user_id=user_id)
        return record
    check_id("idempotency_key", idempotency_key)
    return (yield from _add_once(core, item, user_id, idempotency_key))


def _add_once(core: Core, item: MemoryInput, user_id: str, key: str) -> Flow[MemoryRecord]:
    """Add ``item`` under idempotency ``key``: the memory an earlier add with the key
    stored, if there is one, else the new one."""
    found, rid = yield from _added_before(core, user_id, item.agent_id, key)
    if found is not None:
        return found
    record = replace(core.new_record(user_id, item, core.now()), id=rid)
    try:
        (record,) = yield from core.insert([record])
    except ConflictError:
        # Another process stored it between our look and our write: return theirs.
        existing = yield from one(ops.GetRecords(user_id, (rid,)))
        if not existing:
            raise
        return existing[0]
    return record


def _added_before(
    core: Core, user_id: str, agent_id: str | None, key: str
) -> Flow[tuple[MemoryRecord | None, str]]:
    """The memory an add with idempotency ``key`` stored before (or None), and the id
    a new one gets."""
    rid = _idempotent_id(user_id, agent_id, key)
    # An agent's memory added before idempotency was keyed per agent has the
    # user-level id: the same agent's retry still finds it, another agent's never.
    # That id is also the agent-less scope's own; where such a memory holds it, the
    # agent-less scope's memory gets a second id of its own.
    legacy = stable_id("add", user_id, key)
    second = stable_id("add", user_id, "no agent", key)
    ids = (rid, legacy) if agent_id is not None else (rid, second)
    found = {r.id: r for r in (yield from one(ops.GetRecords(user_id, ids)))}
    for candidate in ids:
        r = found.get(candidate)
        if r is not None and (r.agent_id == agent_id or candidate != legacy):
            return r, rid
    if agent_id is None and rid in found:  # an agent's memory from before holds rid
        rid = second
    return None, rid


def add_many(core: Core, items: Iterable[MemoryInput], *, user_id: str) -> Flow[list[MemoryRecord]]:
    """Store many memories in one transaction, embedding them in batches.

    All items are validated before anything is written: one bad item stores none.
    """
    if isinstance(items, MemoryInput | str):
        raise ValidationError("add_many takes a sequence of MemoryInput")
    items = list(items)  # a generator would be used up by the check below
    if not all(isinstance(i, MemoryInput) for i in items):
        raise ValidationError("add_many takes a sequence of MemoryInput")
    for item in items:
        _check_addable(item)
    now = core.now()
    records = [core.new_record(user_id, item, now) for item in items]
    if not records:
        return []
    return (yield from core.insert(records))


def get(
    core: Core, record_id: str, *, user_id: str, include_quarantined: bool = False
) -> Flow[MemoryRecord]:
    """The memory with this id in the user's scope. A quarantined memory is found only
    with ``include_quarantined`` (for operators: its text is instruction-like content).
    Raises NotFoundError."""
    record = yield from core.load(record_id, user_id)
    if record.quarantine and not include_quarantined:
        raise no_memory(record_id, user_id)
    return record


def release(
    core: Core,
    record_id: str,
    *,
    user_id: str,
    reason: str | None = None,
    actor: str | None = None,
) -> Flow[MemoryRecord]:
    """Let a quarantined memory be recalled: its quarantine is cleared (a new version),
    recorded in its history as ``release`` with ``reason`` and ``actor``. Returns the
    released memory. Raises NotFoundError, or ValidationError when the memory is not
    quarantined."""
    old = yield from core.load(record_id, user_id)
    if not old.quarantine:
        raise ValidationError(f"memory {record_id} is not quarantined")
    now = core.now()
    new = core.bump(old, now, quarantine=())
    event = core.event(new, HistoryAction.RELEASE, now, actor=actor, reason=reason)
    graph = [reindex_op(new, now)] if core.config.graph else []  # now it may be named
    yield from many([ops.WriteRecord(new, old.version), ops.AppendHistory((event,)), *graph])
    return new


def update(
    core: Core,
    record_id: str,
    *,
    user_id: str,
    text: str = UNSET,
    topics: Sequence[str] = UNSET,
    metadata: Mapping[str, Any] = UNSET,
    importance: float = UNSET,
    event_at: datetime | None = UNSET,
    expires_at: datetime | None = UNSET,
    expected_version: int | None = None,
    reason: str | None = None,
    actor: str | None = None,
) -> Flow[MemoryRecord]:
    """Change a memory in place (its history keeps the old version). Returns the new one.

    With ``expected_version`` the update fails with ConflictError if someone else
    changed the memory first. Raises NotFoundError, ValidationError.
    """
    old = yield from core.load(record_id, user_id)
    _check_updatable(old, expected_version, edits_text=text is not UNSET or metadata is not UNSET)
    if metadata is None:
        raise ValidationError("metadata must be a mapping; pass {} to clear it")
    now = core.now()
    item = MemoryInput(
        text=old.text if text is UNSET else text,
        kind=old.kind,
        topics=old.topics if topics is UNSET else topics,
        metadata=old.metadata if metadata is UNSET else metadata,
        importance=old.importance if importance is UNSET else importance,
        event_at=old.event_at if event_at is UNSET else event_at,
        expires_at=old.expires_at if expires_at is UNSET else expires_at,
    )
    new = _edited(old, core.new_record(user_id, item, now), now)
    _, cache_write = yield from core.vectors([new.text])
    event = core.event(new, HistoryAction.UPDATE, now, actor=actor, reason=reason)
    # New text names other things: the graph reads it again, in the same batch.
    graph = [reindex_op(new, now)] if core.config.graph and new.text != old.text else []
    yield from many(
        [cache_write, ops.WriteRecord(new, old.version), ops.AppendHistory((event,)), *graph]
    )
    return new


def supersede(
    core: Core,
    record_id: str,
    text: str,
    *,
    user_id: str,
    reason: str | None = None,
    actor: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    trust: Trust | str | None = None,
) -> Flow[MemoryRecord]:
    """Replace a memory by a new one; the old stays, marked ``superseded_by``.

    The new memory keeps the old one's kind, topics, scope, key, importance and expiry
    (a memory that was to expire in an hour still does), and its trust unless ``trust``
    says whose word the new text is. Returns the new memory. Both changes are recorded
    in history with ``reason``. A keyed fact changes its value through
    :meth:`remember`, which keeps the stored value and the text in step.
    """
    old = yield from core.load(record_id, user_id)
    if not old.is_current:
        raise ValidationError(f"memory {record_id} is not current; supersede the newest one")
    if old.kind is MemoryKind.KEYED_FACT and (metadata is None or "value" not in metadata):
        raise ValidationError(f"memory {record_id} is a keyed fact: change it with remember()")
    return (yield from _replace(core, old, text, reason, actor, metadata, trust=trust))


def _replace(
    core: Core,
    old: MemoryRecord,
    text: str,
    reason: str | None,
    actor: str | None,
    metadata: Mapping[str, Any] | None,
    *,
    vector: ops.PutEmbeddings | None = None,
    trust: Trust | str | None = None,
) -> Flow[MemoryRecord]:
    """Close ``old`` (as read, at its version) and store its successor (``vector``: its
    cache write, if the caller has it). Raises ConflictError when ``old`` changed since
    it was read (superseded, deleted or purged by another writer): the version check
    of the write is the compare-and-swap."""
    now = core.now()
    item = MemoryInput(
        text=text,
        kind=old.kind,
        topics=old.topics,
        metadata=old.metadata if metadata is None else metadata,
        importance=old.importance,
        session_id=old.session_id,
        agent_id=old.agent_id,
        team=old.team,
        key=old.key,
        actor=actor,
        expires_at=old.expires_at,
        trust=old.trust if trust is None else trust,
    )
    new = core.new_record(old.user_id, item, now)
    closed = core.bump(old, now, valid_to=now, superseded_by=new.id)
    event = core.event(closed, HistoryAction.SUPERSEDE, now, actor=actor, reason=reason)
    yield from core.insert(
        [new], [ops.WriteRecord(closed, old.version), ops.AppendHistory((event,))],
        reason=reason, vector=vector,
    )  # fmt: skip
    return new


def delete(
    core: Core, record_id: str, *, user_id: str, reason: str | None = None, actor: str | None = None
) -> Flow[MemoryRecord]:
    """Delete a memory (recorded, restorable with :meth:`restore`). Returns it."""
    old = yield from core.load(record_id, user_id)
    if old.deleted_at is not None:
        return old
    return (yield from _set_deleted(core, old, True, actor, reason))


def restore(
    core: Core, record_id: str, *, user_id: str, reason: str | None = None, actor: str | None = None
) -> Flow[MemoryRecord]:
    """Undo :meth:`delete`. Raises ValidationError if the memory is not deleted."""
    old = yield from core.load(record_id, user_id)
    if old.deleted_at is None:
        raise ValidationError(f"memory {record_id} is not deleted")
    if old.key is not None and old.is_current is False and old.superseded_by is None:
        newer = yield from _keyed(core, old.key, user_id, include_quarantined=True)
        if newer is not None:
            raise ValidationError(
                f"keyed fact {old.key!r} has a newer value ({newer.id}); remember() it instead"
            )
    return (yield from _set_deleted(core, old, False, actor, reason))


def _set_deleted(
    core: Core, old: MemoryRecord, deleted: bool, actor: str | None, reason: str | None
) -> Flow[MemoryRecord]:
    """Mark ``old`` deleted (or restored), recorded in its history; returns the new version."""
    now = core.now()
    new = core.bump(old, now, deleted_at=now if deleted else None)
    action = HistoryAction.DELETE if deleted else HistoryAction.RESTORE
    event = core.event(new, action, now, actor=actor, reason=reason)
    yield from many([ops.WriteRecord(new, old.version), ops.AppendHistory((event,))])
    return new


def history(
    core: Core, record_id: str, *, user_id: str, as_of: datetime | None = None
) -> Flow[list[HistoryEvent]]:
    """Every recorded change of a memory, oldest first. Raises NotFoundError.

    A memory purged by the TTL sweep, or deleted with its session, still has its
    history: the events (action, time, version, actor, reason), with no snapshot of
    its content. With ``as_of`` only the changes made at or before that time: the last
    one's snapshot is the memory as it stood then (empty when it did not exist yet).
    A superseding memory's own history starts with its ``add``; the closing event of
    the one it replaced names it in ``superseded_by``. Raises ValidationError for a
    naive ``as_of``.
    """
    check_id("user_id", user_id)
    check_id("record id", record_id)
    as_of = _filters(None, as_of).as_of
    events = yield from one(ops.GetHistory(user_id, record_id))
    if not events:
        raise no_history(record_id, user_id)
    return events_by(events, as_of)


def events_by(events: Sequence[HistoryEvent], as_of: datetime | None) -> list[HistoryEvent]:
    """The ``events`` made at or before ``as_of`` (all of them without it). Raises
    ValidationError for a naive ``as_of``."""
    as_of = _filters(None, as_of).as_of
    return list(events) if as_of is None else [e for e in events if e.at <= as_of]


# ------------------------------------------------------------------ keyed facts


def remember(
    core: Core,
    key: str,
    value: Any,
    *,
    user_id: str,
    category: str | None = None,
    actor: str | None = None,
    trust: Trust | str = Trust.USER,
) -> Flow[MemoryRecord]:
    """Set the keyed fact ``key`` to a JSON value. A changed value supersedes the old
    one (history keeps it); the same value again changes nothing. Returns the current
    record (quarantined, and not returned by :meth:`recall`, when the text holds
    instruction-like content: see :meth:`add`, which also says what ``trust`` is).

    Writers of the same key in other processes may get in between this call's read and
    its write; such a lost race is tried again (with a growing, jittered pause), and
    ConflictError is raised only if it keeps losing. Raises ValidationError for a bad
    key or a value that is not JSON."""
    check_id("user_id", user_id)
    check_id("key", key)
    check_id("category", category, required=False)
    try:
        rendered = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"value of {key!r} must be JSON-serializable: {exc}") from exc
    text = core.private(user_id, core.check_text(f"{key}: {rendered}"))
    core.screen(user_id, text)  # a refusing injection policy refuses before any write
    trust = checked_trust(trust)
    # JSON-normalized (int keys too)
    meta = core.private_json(user_id, core.check_json({"value": value}, "value"), "value")
    # Embedded once, before the race: an attempt is one read and one write, so the
    # window another writer can slip into is short, and a retry embeds nothing.
    _, vector = yield from core.vectors([text])
    for attempt in range(REMEMBER_ATTEMPTS):
        if attempt:
            yield from pause(_backoff(attempt))
        try:
            return (yield from _remember(
                core, key, text, meta, _Setter(user_id, category, actor, trust), vector
            ))  # fmt: skip
        except ConflictError:
            continue
    raise ConflictError(
        f"keyed fact {key!r} kept changing under {REMEMBER_ATTEMPTS} attempts to set it",
        expected=None,
        actual=None,
    )


@dataclass(frozen=True, slots=True)
class _Setter:
    """Who sets a keyed fact, and how it is filed."""

    user_id: str
    category: str | None
    actor: str | None
    trust: Trust


def _remember(
    core: Core,
    key: str,
    text: str,
    meta: dict[str, Any],
    setter: _Setter,
    vector: ops.PutEmbeddings,
) -> Flow[MemoryRecord]:
    # One attempt. A concurrent writer of the same key between our read and our write
    # makes the store raise ConflictError: the value we read changed version, or a
    # second current value would break the one-per-key rule. remember() tries again.
    user_id, category, actor = setter.user_id, setter.category, setter.actor
    # A quarantined value still holds the key's one current slot: it is read here too.
    current = yield from _keyed(core, key, user_id, purge_expired=True, include_quarantined=True)
    if current is not None and _same_json(current.metadata.get("value"), meta["value"]):
        return current  # exactly this value (case, spacing and type included)
    if current is not None:
        # Not supersede(): it reads the memory again and would call one that another
        # writer superseded meanwhile "not current", a caller's mistake; a lost race
        # is not one.
        return (yield from _replace(
            core, current, text, f"{key} changed", actor, meta, vector=vector,
            trust=setter.trust,
        ))  # fmt: skip
    item = MemoryInput(
        text=text,
        kind=MemoryKind.KEYED_FACT,
        key=key,
        topics=(category,) if category else (),
        metadata=meta,
        actor=actor,
        trust=setter.trust,
    )
    new = core.new_record(user_id, item, core.now())
    (record,) = yield from core.insert([new], vector=vector)
    return record


def recall(core: Core, key: str, *, user_id: str) -> Flow[Any]:
    """The current value of keyed fact ``key``, or None if it was never set (or its
    value is quarantined: it is not handed to an agent until released)."""
    check_id("key", key)
    current = yield from _keyed(core, key, user_id)
    return None if current is None else current.metadata.get("value")


def _keyed(
    core: Core,
    key: str,
    user_id: str,
    *,
    purge_expired: bool = False,
    include_quarantined: bool = False,
) -> Flow[MemoryRecord | None]:
    """The current value of ``key`` (a quarantined one only with
    ``include_quarantined``). With ``purge_expired`` (before a write), one that has
    expired but was not swept yet is purged (recorded as ``expire``): it would otherwise
    hold the key's one current slot until the next sweep."""
    check_id("user_id", user_id)
    now = core.now()
    f = Filters(kinds=(MemoryKind.KEYED_FACT,), key=key, include_quarantined=include_quarantined)
    rows = yield from one(ops.ListRecords(user_id, f, now, None, 1, descending=True))
    if rows or not purge_expired:
        return rows[0] if rows else None
    expired = yield from one(
        ops.ListRecords(user_id, f, BEFORE_ANY_EXPIRY, None, 1, descending=True)
    )
    if expired and expired[0].is_expired(now):
        yield from _purge_expired(core, expired, now)
    return None


def _purge_expired(core: Core, records: Sequence[MemoryRecord], now: datetime) -> Flow[None]:
    """Remove expired records now, as :meth:`sweep` would (history keeps ``expire``)."""
    events = core.removal_events(records, HistoryAction.EXPIRE, now, "ttl")
    yield from many(
        [
            ops.AppendHistory(events),
            ops.RemoveRecords(records[0].user_id, tuple(r.id for r in records)),
            ops.PruneEmbeddings(),
        ]
    )


def list_records(
    core: Core,
    *,
    user_id: str,
    filters: Filters | None = None,
    cursor: str | None = None,
    limit: int = 50,
    newest_first: bool = True,
    as_of: datetime | None = None,
) -> Flow[Page[MemoryRecord]]:
    """One page of the user's memories; ``next_cursor`` is None on the last page.

    With ``as_of`` (timezone-aware) the memories valid at that moment, as
    :meth:`search` says (``filters.as_of`` alike). Raises ValidationError."""
    check_id("user_id", user_id)
    check_id("cursor", cursor, required=False)
    limit = core.check_limit(limit)
    f = _filters(filters, as_of)
    rows = yield from one(
        ops.ListRecords(user_id, f, core.now(), cursor, limit + 1, descending=newest_first)
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(tuple(rows), rows[-1].id if more else None)


def _check_addable(item: MemoryInput) -> None:
    """A keyed fact is made only by remember(): it alone gives the record its key and
    stored value, without which recall() cannot find it and update() cannot change it."""
    if item.kind in (MemoryKind.KEYED_FACT, MemoryKind.KEYED_FACT.value):
        raise ValidationError("a keyed fact is set with remember(key, value), not added")
    if item.key is not None:
        raise ValidationError("a memory gets a key only through remember(key, value)")


def check_keyed(record: MemoryRecord) -> None:
    """A stored memory has a key exactly when it is a keyed fact, and a keyed fact has
    its value (what remember() makes): anything else would stall remember() on that key
    or make recall() disagree with the text. Raises ValidationError."""
    if record.kind is MemoryKind.KEYED_FACT:
        check_id("key", record.key)
        if "value" not in record.metadata:
            raise ValidationError("a keyed fact needs its value in metadata['value']")
    elif record.key is not None:
        raise ValidationError(f"only a keyed fact has a key, not a {record.kind.value}")


def _idempotent_id(user_id: str, agent_id: str | None, key: str) -> str:
    """The id of an idempotent add: one per user, agent and key."""
    if agent_id is None:
        return stable_id("add", user_id, key)
    return stable_id("add", user_id, "agent", agent_id, key)


def _check_updatable(old: MemoryRecord, expected_version: int | None, *, edits_text: bool) -> None:
    """``old`` may be updated in place (with a text or metadata edit if ``edits_text``).
    Raises ValidationError, or ConflictError if it is not at ``expected_version``."""
    if old.deleted_at is not None:
        raise ValidationError(f"memory {old.id} is deleted; restore it first")
    if not old.is_current:
        raise ValidationError(f"memory {old.id} was superseded; update the current one")
    if expected_version is not None and expected_version != old.version:
        raise ConflictError(
            f"memory {old.id} is at version {old.version}, expected {expected_version}",
            expected=expected_version,
            actual=old.version,
        )
    if old.kind is MemoryKind.KEYED_FACT and edits_text:
        # recall() reads the stored value; a text edit would leave it behind.
        raise ValidationError(f"memory {old.id} is a keyed fact: change it with remember()")


def _edited(old: MemoryRecord, checked: MemoryRecord, now: datetime) -> MemoryRecord:
    """The next version of ``old`` carrying the checked fields of ``checked``."""
    return replace(
        old,
        version=old.version + 1,
        updated_at=now,
        text=checked.text,
        content_hash=checked.content_hash,
        topics=checked.topics,
        metadata=checked.metadata,
        importance=checked.importance,
        event_at=checked.event_at,
        expires_at=checked.expires_at,
        # A context embedded with the old words no longer describes this memory.
        context_hash=old.context_hash if checked.text == old.text else None,
        # New words are screened anew; the same words keep the memory's quarantine (or
        # its release).
        quarantine=old.quarantine if checked.text == old.text else checked.quarantine,
        # Periods are read again only from new words or a new date, against the
        # memory's own date (its event time, else when it was first written).
        periods=old.periods
        if (old.text, old.event_at) == (checked.text, checked.event_at)
        else periods_of(checked.text, checked.event_at or old.created_at),
    )
