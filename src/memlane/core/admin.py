"""Whole-user and whole-store work: TTL sweep, forgetting a user, export and import."""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from memlane.core import audit as trail
from memlane.core.base import BEFORE_ANY_EXPIRY, Core, periods_of
from memlane.core.flow import Flow, embed, encode_sparse, many, one
from memlane.core.mentions import index_op
from memlane.core.records import check_keyed
from memlane.errors import (
    EmbeddingModelMismatchError,
    EncryptionError,
    ImportFormatError,
    UnsupportedError,
    ValidationError,
)
from memlane.models import (
    Filters,
    HistoryAction,
    HistoryEvent,
    Job,
    MemoryRecord,
    Message,
    Session,
    StateVersion,
    Trust,
    check_count,
    check_id,
    content_hash,
    parse_period,
    to_iso,
)
from memlane.ports import store as ops
from memlane.ports.embedder import Vector
from memlane.ports.sparse import pack
from memlane.when import MAX_PERIODS

EXPORT_FORMAT = "memlane-export"
# Texts per embedding call on import: large enough for the model to batch well, small
# enough that progress shows every few seconds with a CPU model.
IMPORT_EMBED_BATCH = 256
MAX_REEMBED_WINDOW = 8
"""``reembed`` rebuilds context texts written with a context window of up to this."""
EXPORT_VERSION = 1
_ALL = Filters(include_superseded=True, include_deleted=True, include_quarantined=True)
"""Every record of a user, for the work that must see all (export, reembed, reindex)."""

Progress = Callable[[int], object]
"""Called with how many more rows are done (export read, import ready to write)."""


def _report(progress: Progress | None, n: int) -> None:
    if progress is not None and n > 0:
        progress(n)


@dataclass(frozen=True, slots=True)
class ImportResult:
    """How many rows of each type an import wrote (rows already present count too)."""

    counts: Mapping[str, int] = field(default_factory=dict)


def sweep(core: Core, *, now: datetime | None = None, batch_size: int = 500) -> Flow[int]:
    """Purge expired memories of every user; each purge is recorded in history as
    ``expire``, and the memory's earlier snapshots there lose its content (on SQLite
    the text also leaves the lexical index and the log). Returns how many were
    purged."""
    if now is not None and (not isinstance(now, datetime) or now.tzinfo is None):
        raise ValidationError("now must be a timezone-aware datetime")
    check_count("batch_size", batch_size)
    now = now or core.now()
    purged = 0
    while True:
        expired = yield from one(ops.FindExpired(now, batch_size))
        if not expired:
            break
        by_user: dict[str, list[MemoryRecord]] = {}
        for r in expired:
            by_user.setdefault(r.user_id, []).append(r)
        batch: list[ops.Op[Any]] = []
        for user_id, records in by_user.items():
            batch.append(ops.RemoveRecords(user_id, tuple(r.id for r in records)))
            events = core.removal_events(records, HistoryAction.EXPIRE, now, "ttl")
            batch.append(ops.AppendHistory(events))
        batch.append(ops.PruneEmbeddings())
        yield from many(batch)
        purged += len(expired)
    return purged


def forget_user(core: Core, user_id: str) -> Flow[dict[str, int]]:
    """Remove everything stored for a user: memories, history, sessions, messages,
    state, vectors no other memory uses and the user's audit trail, which keeps one
    tombstone saying when and by whom the user was forgotten and how much went (see
    :mod:`memlane.core.audit`). Returns counts per kind of row."""
    check_id("user_id", user_id)
    return (yield from one(ops.DeleteUser(user_id, trail.tombstone(core, user_id))))


def list_users(core: Core) -> Flow[list[str]]:
    """Every user id with something stored."""
    return (yield from one(ops.ListUsers()))


# ------------------------------------------------------------------ export


def export_rows(
    core: Core,
    *,
    user_id: str | None = None,
    page: int = 500,
    progress: Progress | None = None,
    plaintext: bool = False,
) -> Flow[list[dict[str, Any]]]:
    """Everything of one user (or every user) as export rows, history included.

    The first row is a header; the rest are ``{"type": ..., "data": ...}``. Each
    user's records, history, sessions and jobs are one consistent read. The audit trail
    is not exported (nor imported): it is the record of what happened in this store. ``page`` is
    checked but no longer used (lists were read in pages before). ``progress(n)`` is
    called with the number of rows read after the header and after each user.

    From an encrypted store (a memory with a cipher) each row is sealed under its
    user's key, ``{"type": "sealed", "user_id": ..., "data": ...}``, unless
    ``plaintext``: only a memory with the same keyring imports it, and forgetting the
    user makes it unreadable like the store's own copy.
    """
    check_count("page", page)
    if user_id is not None:
        check_id("user_id", user_id)
        users = [user_id]
    else:
        users = yield from list_users(core)
    rows: list[dict[str, Any]] = [
        {
            "type": "header",
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "exported_at": to_iso(core.now()),
            "embedding_model": core.model_id,
        }
    ]
    _report(progress, 1)
    seal = core.cipher is not None and not plaintext
    if seal:
        rows[0]["sealed"] = True
    for uid in users:
        user_rows = yield from _export_user(core, uid, page)
        if seal:
            user_rows = _sealed_rows(core, uid, user_rows)
        rows += user_rows
        _report(progress, len(user_rows))
    return rows


def _sealed_rows(
    core: Core, user_id: str, rows: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """One user's export rows, each sealed under the user's key (looked up once)."""
    assert core.cipher is not None
    key = core.cipher.user_key(user_id, create=True)
    assert key is not None
    context = _export_context(user_id)
    out = []
    for row in rows:
        data = json.dumps(row, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        sealed = base64.b64encode(key.seal(data.encode("utf-8"), context)).decode()
        out.append({"type": "sealed", "user_id": user_id, "data": sealed})
    return out


def _export_context(user_id: str) -> bytes:
    return f"export\x00{user_id}".encode()


def _opened_row(core: Core, row: Mapping[str, Any]) -> Mapping[str, Any]:
    """The row a sealed export row holds. Raises ValidationError."""
    user_id, data = row.get("user_id"), row.get("data")
    check_id("user_id", user_id)
    assert isinstance(user_id, str)
    if not isinstance(data, str):
        raise ValidationError("'data' of a sealed row must be a base64 text")
    if core.cipher is None:
        raise ValidationError(
            "a sealed row: import it into a memory with the master key and keyring it was "
            "exported under (MEMLANE_MASTER_KEY, MEMLANE_KEYRING)"
        )
    key = core.cipher.user_key(user_id, create=False)
    if key is None:
        raise ValidationError(f"a sealed row of user {user_id!r}, whose key this keyring lacks")
    try:
        opened = json.loads(
            key.open(base64.b64decode(data, validate=True), _export_context(user_id))
        )
    except (EncryptionError, ValueError) as exc:
        raise ValidationError(f"a sealed row did not open: {exc}") from exc
    if not isinstance(opened, dict) or opened.get("type") in ("sealed", "header"):
        raise ValidationError("a sealed row must hold one data row")
    if (opened.get("data") or {}).get("user_id", user_id) != user_id:
        raise ValidationError("a sealed row holds another user's data")
    return opened


def _export_user(core: Core, user_id: str, page: int) -> Flow[list[dict[str, Any]]]:
    """One user's rows. Records, history, sessions and jobs are read in one batch, so
    they are one snapshot (a record never shows a version its history lacks); each
    session's messages and state versions are read after it."""
    del page  # every list is read whole: the rows are all held in memory anyway
    whole = 2**62
    records, events, sessions, jobs = yield from many(
        [
            ops.ListRecords(user_id, _ALL, core.now(), None, whole),
            ops.ListUserHistory(user_id, None, whole),
            ops.ListSessions(user_id, None, whole),
            ops.ListJobs(user_id, (), None, whole),
        ]
    )
    rows: list[dict[str, Any]] = [{"type": "record", "data": r.to_dict()} for r in records]
    rows += ({"type": "history", "data": e.to_dict()} for e in events)
    for s in sessions:
        rows.append({"type": "session", "data": s.to_dict()})
        rows += yield from _export_session(core, user_id, s.session_id)
    rows += ({"type": "job", "data": j.to_dict()} for j in jobs)
    return rows


def _export_session(core: Core, user_id: str, session_id: str) -> Flow[list[dict[str, Any]]]:
    messages = yield from one(ops.GetMessages(user_id, session_id))
    rows = [{"type": "message", "data": m.to_dict()} for m in messages]
    for current in (yield from one(ops.ListStates(user_id, session_id))):
        versions = yield from one(ops.ListStateVersions(user_id, session_id, current.name))
        rows += ({"type": "state", "data": v.to_dict()} for v in versions)
    return rows


# ------------------------------------------------------------------ reembed


def reembed(core: Core, *, progress: Progress | None = None) -> Flow[dict[str, int]]:
    """Move the store to this Memory's embedding model: embed every memory's text
    (deleted and superseded ones too: they can be restored) and its context text,
    then record this model and remove every other model's vectors.

    Vectors are written a batch at a time and the switch comes last, so an
    interrupted run changes nothing that searches see, and running it again finishes
    the job (texts already embedded are not embedded again). Writers using the old
    model should be stopped meanwhile. ``progress(n)`` hears how many more texts are
    done. Returns counts: ``memories``, ``contexts`` (context texts that could be
    rebuilt, with a window of up to :data:`MAX_REEMBED_WINDOW` turns; the rest fall
    back to their memory's own vector), ``embedded`` (by this
    run) and ``removed`` (old vectors)."""
    texts: dict[str, str] = {}  # content hash -> text
    n_records = n_contexts = 0
    for user_id in (yield from list_users(core)):
        records = yield from one(ops.ListRecords(user_id, _ALL, BEFORE_ANY_EXPIRY, None, 2**62))
        n_records += len(records)
        texts.update((r.content_hash, r.text) for r in records)
        contexts = yield from _rebuilt_contexts(core, records)
        n_contexts += len(contexts)
        texts.update(contexts)
    embedded, dim = yield from _embed_staged(core.model_id, texts, progress)
    if dim is None:  # nothing stored yet: the model's dimension from one probe
        dim = len((yield from embed(["memlane"]))[0])
    _, removed = yield from many(
        [ops.SetEmbeddingModel(core.model_id, dim), ops.DropEmbeddings(core.model_id)]
    )
    return {
        "memories": n_records,
        "contexts": n_contexts,
        "embedded": embedded,
        "removed": int(removed),
    }


REINDEX_BATCH = 500
"""Records whose periods :func:`reindex` writes in one transaction."""


def reindex(core: Core, *, progress: Progress | None = None) -> Flow[dict[str, int]]:
    """Read again what memlane derives from each memory's text for search: the periods
    its time expressions name (:attr:`MemoryRecord.periods`) and their words in the
    lexical index, against the memory's own date. Memories written before memlane read
    time (or by an older reader) gain them; nothing else changes (no new version, no
    history). The knowledge graph gains what each memory names (memories written before
    it, or with it off; what it holds already stays). Then the search indexes a store
    keeps beside its database (SQLite) are
    built afresh from the records. With a sparse encoder, memories without sparse terms
    (written before it, or without it) gain them. Safe to run again and to interrupt.
    ``progress(n)`` hears how many more memories were read. Returns counts: ``memories``
    read, ``updated`` and ``indexed`` (records put in rebuilt indexes; 0 for a store whose
    indexes live in its database) and ``sparse`` (texts given sparse terms). Raises
    EmbeddingModelMismatchError, having changed nothing, when the store's vectors are of
    another model than the core's: its indexes and terms are kept beside that model's
    vectors."""
    try:
        stored = yield from one(ops.GetEmbeddingModel())
    except UnsupportedError:  # a plugin store that records no model
        stored = None
    if stored is not None and stored[0] != core.model_id:
        raise EmbeddingModelMismatchError(stored[0], core.model_id)
    n_records = n_updated = n_indexed = n_sparse = 0
    for user_id in (yield from list_users(core)):
        records = yield from one(ops.ListRecords(user_id, _ALL, BEFORE_ANY_EXPIRY, None, 2**62))
        n_records += len(records)
        changed = [
            (r.id, periods)
            for r in records
            if (periods := periods_of(r.text, r.event_at or r.created_at)) != r.periods
        ]
        for start in range(0, len(changed), REINDEX_BATCH):
            batch = tuple(changed[start : start + REINDEX_BATCH])
            n_updated += yield from one(ops.SetPeriods(user_id, batch))
        yield from _index_graph(core, records, dict(changed))
        n_sparse += yield from _backfill_sparse(core, records)
        n_indexed += yield from one(ops.RebuildIndexes(user_id))
        _report(progress, len(records))
    return {
        "memories": n_records,
        "updated": n_updated,
        "indexed": n_indexed,
        "sparse": n_sparse,
    }


def _backfill_sparse(core: Core, records: Sequence[MemoryRecord]) -> Flow[int]:
    """Sparse terms for the texts of ``records`` that have none (of the core's sparse
    model), :data:`REINDEX_BATCH` texts a transaction; returns how many were made."""
    model = core.sparse_model_id
    if model is None:
        return 0
    texts = {r.content_hash: r.text for r in records}
    made = 0
    hashes = list(texts)
    for start in range(0, len(hashes), REINDEX_BATCH):
        chunk = hashes[start : start + REINDEX_BATCH]
        try:
            have = yield from one(ops.GetSparse(model, tuple(chunk), core.model_id))
        except UnsupportedError:  # a plugin store that keeps no sparse terms
            return 0
        lacking = [h for h in chunk if h not in have]
        if not lacking:
            continue
        encoded = yield from encode_sparse([texts[h] for h in lacking])
        items = tuple(zip(lacking, map(pack, encoded), strict=True))
        yield from one(ops.PutEmbeddings(core.model_id, (), sparse_model=model, sparse=items))
        made += len(items)
    return made


def _index_graph(
    core: Core, records: Sequence[MemoryRecord], periods: Mapping[str, tuple[str, ...]]
) -> Flow[None]:
    """Record what ``records`` (one user's, with their new ``periods`` by id) name in
    the knowledge graph, a batch at a time."""
    if not core.config.graph:
        return
    live = [replace(r, periods=periods.get(r.id, r.periods)) for r in records]
    for start in range(0, len(live), REINDEX_BATCH):
        op = index_op(live[start : start + REINDEX_BATCH])
        if op is not None:
            yield from one(op)


def _rebuilt_contexts(core: Core, records: Sequence[MemoryRecord]) -> Flow[dict[str, str]]:
    """The context texts of ``records`` (one user's) that can be rebuilt, by hash."""
    wanted = {r.context_hash for r in records if r.context_hash is not None}
    ordered = sorted(records, key=lambda r: r.id)
    texts: dict[str, str] = {}
    # This memory's window first, then others: the store may have been written
    # with another one (the CLI uses none).
    windows = [core.config.context_window, *range(1, MAX_REEMBED_WINDOW + 1)]
    for window in dict.fromkeys(w for w in windows if w >= 1):
        if not wanted:
            break
        _, contexts = yield from core.with_context(ordered, look_back=False, window=window)
        rebuilt = {content_hash(t): t for t in contexts}
        found = {h: rebuilt[h] for h in wanted if h in rebuilt}
        texts.update(found)
        wanted -= set(found)
    return texts


def _embed_staged(
    model: str, texts: Mapping[str, str], progress: Progress | None
) -> Flow[tuple[int, int | None]]:
    """Stage vectors of ``model`` for the texts (by hash) it lacks, a batch at a time.
    Returns how many were embedded and the vectors' dimension (None: no texts)."""
    hashes = list(texts)
    embedded = 0
    dim: int | None = None
    for start in range(0, len(hashes), IMPORT_EMBED_BATCH):
        chunk = hashes[start : start + IMPORT_EMBED_BATCH]
        done = yield from one(ops.GetEmbeddings(model, tuple(chunk)))
        if done and dim is None:
            dim = len(next(iter(done.values())))
        missing = [h for h in chunk if h not in done]
        if missing:
            vectors = yield from embed([texts[h] for h in missing])
            dim = len(vectors[0])
            items = tuple(zip(missing, vectors, strict=True))
            yield from one(ops.PutEmbeddings(model, items, staged=True))
            embedded += len(missing)
        _report(progress, len(chunk))
    return embedded, dim


# ------------------------------------------------------------------ import


def import_rows(
    core: Core,
    rows: Iterable[Mapping[str, Any]],
    *,
    lines: Sequence[int] | None = None,
    progress: Progress | None = None,
) -> Flow[ImportResult]:
    """Write export rows back, in one transaction, keeping ids, versions and history.

    A record row keeps the quarantine it states (an export says what its store
    decided, a release included, and its history shows it: a store moved by ``memlane
    migrate`` keeps them); a row that does not state one is screened for
    instruction-like content as a new memory is, and a row that does not say its trust
    is ``imported``. Under a refusing injection policy a flagged record or message
    refuses the whole file.

    Every row is checked before anything is written: a bad row raises
    ImportFormatError (with its 1-based line number, or ``lines[i]`` for row ``i``
    when the rows came from a file with blank lines) and nothing changes. Vectors the
    cache lacks are embedded in batches of :data:`IMPORT_EMBED_BATCH` texts; the rows
    and vectors are then written together, so a failure anywhere (a bad row, the
    model, the store) leaves the store as it was. Importing the same rows twice
    leaves the store as after the first time (and embeds nothing the second time).

    ``progress(n)``, if given, is called as rows become ready to write: the rows
    other than records once all are checked, then records as their vectors arrive.
    """
    parsed = _Parsed()
    n_rows = 0
    for index, row in enumerate(rows):
        n_rows += 1
        line = lines[index] if lines is not None and index < len(lines) else index + 1
        parsed.add(*_parse_row(core, row, line), line)
    _report(progress, n_rows - len(parsed.records))
    # Context vectors are derived data: rebuild them from the imported sessions.
    records = sorted(parsed.records, key=lambda r: r.id)
    records, contexts = yield from core.with_context(records, look_back=False)
    cache_write = yield from _vectors_in_batches(
        core, [r.text for r in records] + contexts, len(records), progress
    )
    yield from many([cache_write, *parsed.batch(records), *_graph_ops(core, records)])
    parsed.counts.pop("header", None)
    return ImportResult(parsed.counts)


def _graph_ops(core: Core, records: Sequence[MemoryRecord]) -> list[ops.IndexMentions]:
    """What the imported records name, per user, for the knowledge graph: it is derived
    from the memories (as their vectors are), so an import rebuilds it rather than
    carrying rows; mentions and edges already there are left as they are."""
    if not core.config.graph:
        return []
    by_user: dict[str, list[MemoryRecord]] = {}
    for r in records:
        by_user.setdefault(r.user_id, []).append(r)
    found = (index_op(rows) for rows in by_user.values())
    return [op for op in found if op is not None]


def _vectors_in_batches(
    core: Core, texts: Sequence[str], n_reported: int, progress: Progress | None
) -> Flow[ops.PutEmbeddings]:
    """The cache write holding vectors for ``texts``, embedding what the cache lacks
    :data:`IMPORT_EMBED_BATCH` texts at a time. After each batch ``progress`` hears
    how many of the first ``n_reported`` texts (the records'; the rest are context
    texts) it covered."""
    known: dict[str, Vector] = {}
    items: list[tuple[str, Vector]] = []
    keep: list[tuple[str, Vector]] = []
    terms: dict[str, bytes] = {}
    for start in range(0, len(texts), IMPORT_EMBED_BATCH):
        chunk = texts[start : start + IMPORT_EMBED_BATCH]
        records_in_chunk = max(0, min(len(chunk), n_reported - start))
        _, write = yield from core.vectors(chunk, known, terms_for=records_in_chunk)
        items += write.items
        keep += write.keep
        known.update(write.items)
        known.update(write.keep)
        terms.update(write.sparse)
        _report(progress, max(0, min(len(chunk), n_reported - start)))
    return ops.PutEmbeddings(
        core.model_id,
        tuple(items),
        tuple(keep),
        sparse_model=core.sparse_model_id or "",
        sparse=tuple(terms.items()),
    )


def _parse_row(core: Core, row: Mapping[str, Any], line: int) -> tuple[str, Any]:
    if not isinstance(row, Mapping) or "type" not in row:
        raise ImportFormatError("each line must be an object with a 'type'", line=line)
    kind = row["type"]
    try:
        if kind == "header":
            _check_header(row)
            return kind, None
        if kind == "sealed":
            row = _opened_row(core, row)
            kind = row.get("type")
        data = row.get("data")
        if not isinstance(data, Mapping):
            raise ValidationError("'data' must be an object")
        parse = _row_parsers(core).get(kind)
        if parse is not None:
            return kind, parse(data)
    except ValidationError as exc:
        raise ImportFormatError(f"bad {kind} row: {exc}", line=line) from exc
    except (TypeError, ValueError, KeyError, OverflowError, AttributeError) as exc:
        # from_dict on a field of the wrong type or an impossible date.
        raise ImportFormatError(f"bad {kind} row: {exc!r}", line=line) from exc
    raise ImportFormatError(f"unknown row type {kind!r}", line=line)


def _row_parsers(core: Core) -> dict[str, Callable[[Mapping[str, Any]], Any]]:
    """How the ``data`` of each row type is checked and turned into what is written."""
    return {
        "record": functools.partial(_record_row, core),
        "history": functools.partial(_history_row, core),
        "session": functools.partial(_session_row, core),
        "message": functools.partial(_message_row, core),
        "state": functools.partial(_state_row, core),
        "job": functools.partial(_job_row, core),
    }


def _record_row(core: Core, data: Mapping[str, Any]) -> MemoryRecord:
    topics = data.get("topics", [])
    if not isinstance(topics, list) or not all(isinstance(t, str) and t for t in topics):
        raise ValidationError("topics must be a list of non-empty strings")
    _check_periods(data.get("periods", []))
    stated = data.get("quarantine", [])
    if not isinstance(stated, list) or not all(isinstance(k, str) and k for k in stated):
        raise ValidationError("quarantine must be a list of non-empty strings")
    # A row that does not say whose word it is came from elsewhere: "imported".
    record = MemoryRecord.from_dict({"trust": Trust.IMPORTED, **data})
    check_id("user_id", record.user_id)
    core.check_text(record.text)
    core.check_json(record.metadata, "metadata")
    check_count("version", record.version)
    if not 0.0 <= float(record.importance) <= 1.0:
        raise ValidationError("importance must be between 0 and 1")
    _check_row_id("id", record.id)
    check_keyed(record)
    if record.superseded_by is not None:
        _check_row_id("superseded_by", record.superseded_by)
    if record.content_hash != content_hash(record.text):
        # A hash that is not the text's would read another text's cached vector.
        raise ValidationError("content_hash does not match the text")
    if core.config.context_window < 1 and record.context_hash is not None:
        record = replace(record, context_hash=None)
    text = core.private(record.user_id, record.text)
    metadata = core.private_json(record.user_id, dict(record.metadata), "metadata")
    if text != record.text or metadata != record.metadata:  # the PII policy changed it
        record = replace(record, text=text, content_hash=content_hash(text), metadata=metadata)
    found = core.screen(record.user_id, text, "imported memory")  # refuse: the file is refused
    if "quarantine" not in data:  # not said: screened as a new memory is
        record = replace(record, quarantine=found)
    return record


def _check_periods(periods: object) -> None:
    """A record's periods as an export writes them: at most :data:`MAX_PERIODS` ISO 8601
    intervals ``"<start>/<end>"``, each ending after it starts."""
    if not isinstance(periods, list) or len(periods) > MAX_PERIODS:
        raise ValidationError(f"periods must be a list of at most {MAX_PERIODS} intervals")
    for period in periods:
        if not isinstance(period, str):
            raise ValidationError(f"a period is '<start>/<end>' in ISO 8601, got {period!r}")
        start, end = parse_period(period)
        if not start < end:
            raise ValidationError(f"period {period!r} ends before it starts")


def _session_row(core: Core, data: Mapping[str, Any]) -> ops.UpsertSession:
    session = Session.from_dict(data)
    check_id("user_id", session.user_id)
    check_id("session_id", session.session_id)
    core.check_json(session.metadata, "session metadata")
    metadata = core.private_json(session.user_id, dict(session.metadata), "session metadata")
    return ops.UpsertSession(replace(session, metadata=metadata))


def _state_row(core: Core, data: Mapping[str, Any]) -> ops.PutState:
    state = StateVersion.from_dict(data)
    check_id("user_id", state.user_id)
    check_id("session_id", state.session_id)
    check_id("name", state.name)
    core.check_json(state.data, "state")
    check_count("version", state.version)
    data = core.private_json(state.user_id, dict(state.data), "state")
    return ops.PutState(replace(state, data=data), None)


def _check_header(row: Mapping[str, Any]) -> None:
    if row.get("format") != EXPORT_FORMAT or row.get("version") != EXPORT_VERSION:
        raise ValidationError(f"unsupported export header (want {EXPORT_FORMAT} v{EXPORT_VERSION})")


def _history_row(core: Core, data: Mapping[str, Any]) -> HistoryEvent:
    event = HistoryEvent.from_dict(data)
    _check_row_id("id", event.id)
    _check_row_id("record_id", event.record_id)
    snapshot = event.snapshot
    if snapshot is not None and core.pii_policy(event.user_id) is not None:
        private = dict(snapshot)  # the version's text and metadata, as a new one's would be
        if isinstance(private.get("text"), str):
            private["text"] = core.private(event.user_id, private["text"], "history snapshot")
        if isinstance(private.get("metadata"), Mapping):
            private["metadata"] = core.private_json(
                event.user_id, dict(private["metadata"]), "history snapshot"
            )
        event = replace(event, snapshot=private)
    return event


def _message_row(core: Core, data: Mapping[str, Any]) -> Message:
    message = Message.from_dict(data)
    _check_row_id("id", message.id)
    content = core.private(message.user_id, message.content, "message")
    core.screen(message.user_id, content, "message")  # a refusing policy refuses the file
    metadata = core.private_json(message.user_id, dict(message.metadata), "message metadata")
    return replace(message, content=content, metadata=metadata)


def _job_row(core: Core, data: Mapping[str, Any]) -> ops.PutJob:
    job = Job.from_dict(data)
    _check_row_id("id", job.id)
    if core.pii_policy(job.user_id) is not None:  # queued messages and results hold text
        job = replace(
            job,
            payload=core.private_json(job.user_id, dict(job.payload), "job payload"),
            result=core.private_json(job.user_id, dict(job.result), "job result"),
        )
    return ops.PutJob(job, None)


@dataclass(slots=True)
class _Parsed:
    """The checked rows of an import, sorted by what they become."""

    records: list[MemoryRecord] = field(default_factory=list)
    writes: list[ops.Op[Any]] = field(default_factory=list)
    events: list[HistoryEvent] = field(default_factory=list)
    messages: dict[tuple[str, str], list[Message]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    seen: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def add(self, kind: str, op: Any, line: int) -> None:
        """Take the row of ``kind`` at ``line``, parsed into ``op``."""
        if isinstance(op, MemoryRecord | HistoryEvent | Message):
            # Two rows for one id: the store would keep one silently; refuse the file.
            first = self.seen.setdefault((kind, op.user_id, op.id), line)
            if first != line:
                raise ImportFormatError(f"{kind} {op.id!r} repeats line {first}", line=line)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if isinstance(op, MemoryRecord):
            self.records.append(op)
        elif isinstance(op, HistoryEvent):
            self.events.append(op)
        elif isinstance(op, Message):
            self.messages.setdefault((op.user_id, op.session_id), []).append(op)
        elif op is not None:
            self.writes.append(op)

    def batch(self, records: Sequence[MemoryRecord]) -> list[ops.Op[Any]]:
        """The writes of the import after the cache write: ``records`` (as prepared),
        history, sessions, then one append per session (not per message: a session's
        messages in one statement batch, after the sessions they belong to), then the rest."""
        sessions = [w for w in self.writes if isinstance(w, ops.UpsertSession)]
        rest = [w for w in self.writes if not isinstance(w, ops.UpsertSession)]
        appends = [ops.AppendMessages(tuple(m), assign_seq=False) for m in self.messages.values()]
        return [
            *(ops.WriteRecord(r, None) for r in records),
            ops.AppendHistory(tuple(self.events)),
            *sessions,
            *appends,
            *rest,
        ]


_ROW_ID = re.compile(r"[0-9A-Za-z]{1,64}")


def _check_row_id(name: str, value: object) -> None:
    """Ids memlane generates are letters and digits; an imported one must be too (so it
    can never smuggle a path or an empty name into a URL)."""
    if not isinstance(value, str) or not _ROW_ID.fullmatch(value):
        raise ValidationError(f"{name} must be 1-64 letters or digits, got {value!r}")
