"""Encryption at rest in front of any store: :class:`SealedStore`.

It rewrites each operation on its way to the store it wraps and each result on its way
back, so the backend (SQLite, PostgreSQL, a Redis tier, a plugin) only ever holds:

- **sealed** (AES-GCM under the user's key, bound to where it is stored): a memory's text,
  metadata, topics and key, history snapshots and reasons, messages' content and
  metadata, session metadata, session state, jobs' payloads, results and errors;
- **blinded** (HMAC under the user's key): the words of a memory's text as the lexical
  index sees them (one keyed token per word, so BM25 ranks as before), its topics, its
  key and its metadata keys and values, so filters and keyword search still match;
- **digested** (HMAC under a store key): the content hashes that name cached vectors;
- **in the clear**: ids (user, memory, session, agent, team), kinds, roles, times,
  versions, importance, counters, the periods a text names (and their words in the
  lexical index), and the vectors. Embeddings leak meaning: anyone with the file can
  compare them with vectors of guessed texts. Keeping them sealed too would cost the
  in-database vector search, so they are not; leave out the embedder (lexical search
  only) where that matters.

Sparse terms (:mod:`memlane.ports.sparse`: the weighted words of a text) are not kept at
all: an encrypted store searches without the sparse list.

Reads of a user with no key return what is stored as it is. A store that already holds
unencrypted data is not encrypted in place (``memlane migrate`` moves a store into and out
of encryption).
:class:`~memlane.ports.store.DeleteUser` destroys the user's key before the rows, so what
any copy of the store holds of that user can no longer be opened (crypto-shredding).
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from memlane.errors import (
    ConfigurationError,
    DecryptionError,
    KeyDestroyedError,
    UnsupportedError,
)
from memlane.models import Filters, HistoryEvent, Job, MemoryRecord, Message, Session, StateVersion
from memlane.models.basics import month_names, utcnow
from memlane.models.graph import Entity
from memlane.ports import store as ops
from memlane.ports.cipher import Cipher, UserKey
from memlane.ports.store import Op, Store
from memlane.text import query_terms

SEALED = "memlane:sealed"
"""The metadata key (of a memory, session, state or job) that holds its sealed part."""
SEALED_TEXT = "memlane:sealed:"
"""The prefix of a sealed string (a message's content, a job's error, a history reason)."""
BLIND = "~"
"""The prefix of a blinded topic, key, metadata key or metadata value."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _context(*parts: str) -> bytes:
    return "\x00".join(parts).encode("utf-8")


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


class _Sealer:
    """One user's key applied to memlane's values."""

    def __init__(
        self, key: UserKey, analyze: Callable[[str], list[str]], period_terms: frozenset[str]
    ) -> None:
        self.key = key
        self.analyze = analyze
        self.period_terms = period_terms

    # -------------------------------------------------------------- sealing

    def seal(self, value: Any, context: bytes) -> str:
        return _b64(self.key.seal(_json(value), context))

    def open(self, sealed: str, context: bytes) -> Any:
        try:
            raw = base64.b64decode(sealed, validate=True)
        except (ValueError, TypeError) as exc:
            raise DecryptionError("a sealed value is not base64: it was altered") from exc
        return json.loads(self.key.open(raw, context))

    def seal_text(self, text: str | None, context: bytes) -> str | None:
        return None if text is None else SEALED_TEXT + self.seal(text, context)

    def open_text(self, text: str | None, context: bytes) -> str | None:
        if text is None or not text.startswith(SEALED_TEXT):
            return text
        opened = self.open(text[len(SEALED_TEXT) :], context)
        if not isinstance(opened, str):
            raise DecryptionError("a sealed text did not hold a text")
        return opened

    def seal_dict(self, value: Mapping[str, Any], context: bytes) -> dict[str, Any]:
        return {SEALED: self.seal(dict(value), context)}

    def open_dict(self, value: Mapping[str, Any], context: bytes) -> Mapping[str, Any]:
        sealed = value.get(SEALED) if isinstance(value, Mapping) else None
        if not isinstance(sealed, str):
            return value
        opened = self.open(sealed, context)
        if not isinstance(opened, dict):
            raise DecryptionError("a sealed mapping did not hold a mapping")
        return opened

    # -------------------------------------------------------------- blinding

    def _mac(self, label: str, value: str, digits: int) -> str:
        return self.key.blind(f"{label}\x00{value}".encode()).hex()[:digits]

    def word(self, term: str) -> str:
        # Digits only: every analyzer (tantivy's stemmer, PostgreSQL's 'english') keeps a
        # number as it is, so the store indexes the token it was given.
        mac = self.key.blind(b"w\x00" + term.encode("utf-8"))
        return f"{int.from_bytes(mac[:8], 'big'):020d}"

    def text(self, text: str) -> str:
        """The text as the lexical index will hold it: one keyed token per word."""
        return " ".join(self.word(t) for t in self.analyze(text))

    def query(self, query: str) -> str:
        """A lexical query's words blinded as :meth:`text` blinds a memory's; the words
        periods are indexed with (month names, numbers) also as they are, to match them."""
        out: list[str] = []
        for word in query_terms(query):
            for term in self.analyze(word):
                out.append(self.word(term))
                if term in self.period_terms or (term.isdigit() and len(term) <= 4):
                    out.append(term)
        return " ".join(dict.fromkeys(out))

    def name(self, label: str, value: str) -> str:
        return BLIND + self._mac(label, value, 32)

    def value(self, key: str, value: Any) -> str:
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
            value = int(value)  # 1 and 1.0 are equal to a filter, as in Python and SQL
        tag = "b" if isinstance(value, bool) else "v"
        return BLIND + self._mac("m", f"{key}\x00{tag}\x00{_json(value).decode()}", 32)

    def filters(self, filters: Filters) -> Filters:
        if not (filters.topics or filters.key or filters.metadata):
            return filters
        return replace(
            filters,
            topics=tuple(self.name("t", t) for t in filters.topics),
            key=None if filters.key is None else self.name("k", filters.key),
            metadata={self.name("mk", k): self.value(k, v) for k, v in filters.metadata.items()},
        )

    def matched(self, filters: Filters, r: MemoryRecord) -> MemoryRecord:
        """``r`` (opened), which the store matched by its blinded columns against
        ``filters``: its sealed content must match them too, else those columns were
        altered (swapped from another row) and r is not returned. Raises
        DecryptionError."""
        metadata = {k: self.value(k, v) for k, v in r.metadata.items()}
        if (
            (filters.key is not None and r.key != filters.key)
            or (filters.topics and set(filters.topics).isdisjoint(r.topics))
            or any(metadata.get(k) != self.value(k, v) for k, v in filters.metadata.items())
        ):
            raise DecryptionError(
                f"memory {r.id}: its index columns do not match its sealed content (altered)"
            )
        return r

    # -------------------------------------------------------------- rows

    def record(self, r: MemoryRecord, digest: Callable[[str | None], str | None]) -> MemoryRecord:
        inner = {
            "text": r.text,
            "metadata": dict(r.metadata),
            "topics": list(r.topics),
            "key": r.key,
            "content_hash": r.content_hash,
            "context_hash": r.context_hash,
        }
        metadata: dict[str, Any] = {
            self.name("mk", k): self.value(k, v) for k, v in r.metadata.items()
        }
        metadata[SEALED] = self.seal(inner, _context("record", r.user_id, r.id))
        return replace(
            r,
            text=self.text(r.text),
            metadata=metadata,
            topics=tuple(self.name("t", t) for t in r.topics),
            key=None if r.key is None else self.name("k", r.key),
            content_hash=digest(r.content_hash) or "",
            context_hash=digest(r.context_hash),
        )

    def open_record(self, r: MemoryRecord) -> MemoryRecord:
        inner = self.open(r.metadata[SEALED], _context("record", r.user_id, r.id))
        return replace(
            r,
            text=inner["text"],
            metadata=inner["metadata"],
            topics=tuple(inner["topics"]),
            key=inner["key"],
            content_hash=inner["content_hash"],
            # The store drops a context by its column (a purged turn before it): the
            # sealed copy keeps the hash it was written with.
            context_hash=None if r.context_hash is None else inner["context_hash"],
        )

    def event(self, e: HistoryEvent) -> HistoryEvent:
        where = ("history", e.user_id, e.id)
        return replace(
            e,
            reason=self.seal_text(e.reason, _context(*where, "reason")),
            snapshot=None if e.snapshot is None else self.seal_dict(e.snapshot, _context(*where)),
        )

    def open_event(self, e: HistoryEvent) -> HistoryEvent:
        where = ("history", e.user_id, e.id)
        return replace(
            e,
            reason=self.open_text(e.reason, _context(*where, "reason")),
            snapshot=None if e.snapshot is None else self.open_dict(e.snapshot, _context(*where)),
        )

    def message(self, m: Message) -> Message:
        inner = {"content": m.content, "metadata": dict(m.metadata)}
        sealed = SEALED_TEXT + self.seal(inner, _context("message", m.user_id, m.id))
        return replace(m, content=sealed, metadata={})

    def open_message(self, m: Message) -> Message:
        if not m.content.startswith(SEALED_TEXT):
            return m
        inner = self.open(m.content[len(SEALED_TEXT) :], _context("message", m.user_id, m.id))
        return replace(m, content=inner["content"], metadata=inner["metadata"])

    def session(self, s: Session) -> Session:
        where = _context("session", s.user_id, s.session_id)
        return replace(s, metadata=self.seal_dict(s.metadata, where))

    def open_session(self, s: Session) -> Session:
        where = _context("session", s.user_id, s.session_id)
        return replace(s, metadata=self.open_dict(s.metadata, where))

    def state(self, s: StateVersion) -> StateVersion:
        where = _context("state", s.user_id, s.session_id, s.name, str(s.version))
        return replace(s, data=self.seal_dict(s.data, where))

    def open_state(self, s: StateVersion) -> StateVersion:
        where = _context("state", s.user_id, s.session_id, s.name, str(s.version))
        return replace(s, data=self.open_dict(s.data, where))

    def job(self, j: Job) -> Job:
        where = ("job", j.user_id, j.id)
        return replace(
            j,
            payload=self.seal_dict(j.payload, _context(*where, "payload")),
            result=self.seal_dict(j.result, _context(*where, "result")),
            error=self.seal_text(j.error, _context(*where, "error")),
        )

    def open_job(self, j: Job) -> Job:
        where = ("job", j.user_id, j.id)
        return replace(
            j,
            payload=self.open_dict(j.payload, _context(*where, "payload")),
            result=self.open_dict(j.result, _context(*where, "result")),
            error=self.open_text(j.error, _context(*where, "error")),
        )


T = TypeVar("T")

_MARKER = ("::memlane", "::store", "encryption")
"""Where a store records that it is encrypted: a state of memlane's own (system) user."""
_CHECK = b"memlane: sealed with this keyring"
"""What the marker holds sealed under the system user's key: whether a keyring is the
store's is whether it opens."""


def is_encrypted(store: Store) -> bool:
    """Whether ``store`` (set up) was ever written through a :class:`SealedStore`."""
    return store.batch([ops.GetState(*_MARKER)])[0] is not None


def is_sealed_record(r: MemoryRecord) -> bool:
    return isinstance(r.metadata.get(SEALED), str)


class SealedStore:
    """``store`` with everything personal sealed under per-user keys from ``cipher``
    (see the module docstring for what is and is not). ``analyze`` splits a text into
    the terms the lexical index holds (default: the analyzer of
    :mod:`memlane.stores.lexical`); a blinded word stands for each."""

    def __init__(
        self,
        store: Store,
        cipher: Cipher,
        *,
        analyze: Callable[[str], list[str]] | None = None,
    ) -> None:
        self.store = store
        self.cipher = cipher
        self.url = store.url
        self._analyze = analyze
        self._analyze_lock = threading.Lock()
        self._period_terms: frozenset[str] | None = None

    def __repr__(self) -> str:
        return f"SealedStore({self.store!r}, {self.cipher!r})"

    def __getattr__(self, name: str) -> Any:
        if name == "health":  # a Redis tier's state, for the server's /health
            return getattr(self.store, name)
        raise AttributeError(name)

    # ------------------------------------------------------------------ Store

    def setup(self) -> None:
        """Set up the store and mark it encrypted (once), so that a memory without the
        cipher refuses it (:func:`is_encrypted`). The mark holds a value sealed under a
        key of the keyring: a keyring that is not the store's (a fresh file, another
        store's) is refused with ConfigurationError before it makes keys of its own for
        the store's users; a wrong master key fails with DecryptionError. A store not
        marked yet that holds data (written unencrypted) is refused with
        ConfigurationError: ``memlane migrate --encrypt`` copies it into encryption."""
        self.store.setup()
        marker = self.store.batch([ops.GetState(*_MARKER)])[0]
        if marker is not None and isinstance(marker.data.get("check"), str):
            self._check_keyring(marker.data["check"])
            return
        if marker is None and self._holds_unsealed():
            # Sealing from here on would leave the rows there are in the clear, and no
            # longer matched by their users' blinded filters once those write.
            raise ConfigurationError(
                f"the store {self.url} holds unencrypted data: it is not encrypted in "
                "place; copy it into encryption with `memlane migrate <it> <new store> "
                "--encrypt`"
            )
        key = self.cipher.user_key(_MARKER[0], create=True)
        assert key is not None
        data = {"sealed": True, "check": _b64(key.seal(_CHECK, _context(*_MARKER)))}
        version = 1 if marker is None else marker.version + 1  # marked before the check
        self.store.batch([ops.PutState(StateVersion(*_MARKER, version, data, utcnow()), None)])

    def _holds_unsealed(self) -> bool:
        # A user without a key wrote unsealed (what was written through this store
        # before its first setup has its users' keys).
        users = self.store.batch([ops.ListUsers()])[0]
        return any(self.cipher.user_key(u, create=False) is None for u in users)

    def _check_keyring(self, check: str) -> None:
        key = self.cipher.user_key(_MARKER[0], create=False)
        try:
            if key is None:
                raise DecryptionError("no key of the store")
            key.open(base64.b64decode(check), _context(*_MARKER))
        except (DecryptionError, ValueError) as exc:
            raise ConfigurationError(
                f"the store {self.url} was encrypted with another keyring than "
                f"{self.cipher!r}: give it its own (MEMLANE_KEYRING)"
            ) from exc

    def close(self) -> None:
        self.store.close()
        close = getattr(self.cipher, "close", None)
        if callable(close):
            close()

    def batch(self, batch: Sequence[Op[Any]]) -> list[Any]:
        plan = _Plan(self)
        sealed = [plan.op(op) for op in batch]
        return plan.results(self.store.batch(sealed))

    async def abatch(self, batch: Sequence[Op[Any]]) -> list[Any]:
        plan = _Plan(self)
        sealed = [plan.op(op) for op in batch]
        return plan.results(await self.store.abatch(sealed))

    # ------------------------------------------------------------------ helpers

    def analyze(self, text: str) -> list[str]:
        with self._analyze_lock:
            if self._analyze is None:
                from memlane.stores.lexical import analyzer

                self._analyze = analyzer()
            return self._analyze(text)

    def period_terms(self) -> frozenset[str]:
        """The month names as the lexical index holds them ("January" is "januari")."""
        if self._period_terms is None:
            self._period_terms = frozenset(t for m in month_names() for t in self.analyze(m))
        return self._period_terms

    def digest(self, content_hash: str | None) -> str | None:
        if not content_hash:
            return content_hash
        return self.cipher.digest(b"content\x00" + content_hash.encode()).hex()


class _Plan:
    """One batch on its way through: the sealed ops, and how to open each result."""

    def __init__(self, owner: SealedStore) -> None:
        self.owner = owner
        self.openers: list[Callable[[Any], Any]] = []
        self._sealers: dict[tuple[str, bool], _Sealer | None] = {}

    def sealer(self, user_id: str, *, create: bool) -> _Sealer | None:
        """The user's sealer; None (for reads) when the user has no key."""
        found = self._sealers.get((user_id, create))
        if found is None and (user_id, create) not in self._sealers:
            key = self.owner.cipher.user_key(user_id, create=create)
            found = (
                None if key is None else _Sealer(key, self.owner.analyze, self.owner.period_terms())
            )
            self._sealers[(user_id, create)] = found
        return found

    def writer(self, user_id: str) -> _Sealer:
        sealer = self.sealer(user_id, create=True)
        assert sealer is not None
        return sealer

    def reader(self, user_id: str) -> _Sealer | None:
        return self.sealer(user_id, create=False) or self._sealers.get((user_id, True))

    def op(self, op: Op[Any]) -> Op[Any]:
        handler = _HANDLERS.get(type(op))
        if handler is None:
            raise UnsupportedError(
                f"the encrypted store does not know the operation {type(op).__name__}; "
                "it refuses rather than write it unsealed"
            )
        sealed, opener = handler(self, op)
        self.openers.append(opener)
        return sealed

    def results(self, results: Sequence[Any]) -> list[Any]:
        return [open_(r) for open_, r in zip(self.openers, results, strict=True)]

    # -------------------------------------------------------------- opening rows

    def open_record(self, r: MemoryRecord) -> MemoryRecord:
        if not is_sealed_record(r):
            return r
        return self._must(r.user_id).open_record(r)

    def open_records(self, rows: Iterable[MemoryRecord]) -> list[MemoryRecord]:
        return [self.open_record(r) for r in rows]

    def _must(self, user_id: str) -> _Sealer:
        sealer = self.reader(user_id)
        if sealer is None:
            raise KeyDestroyedError(
                "this data was sealed with a key that no longer exists (the user was forgotten)"
            )
        return sealer

    def open_row(
        self, user_id: str, row: T, sealed: Callable[[T], bool], open_: Callable[[_Sealer, T], T]
    ) -> T:
        """``row`` of a user opened by ``open_`` (a :class:`_Sealer` method) when
        ``sealed(row)``; a row from before the store was encrypted as it is."""
        return open_(self._must(user_id), row) if sealed(row) else row

    def forget(self, user_id: str) -> None:
        """Destroy the user's key, and forget it in this batch too."""
        self.owner.cipher.forget(user_id)
        self._sealers.pop((user_id, True), None)
        self._sealers.pop((user_id, False), None)


# ---------------------------------------------------------------------------- handlers

_Handler = Callable[[_Plan, Any], tuple[Op[Any], Callable[[Any], Any]]]
_HANDLERS: dict[type, _Handler] = {}


def _same(result: Any) -> Any:
    return result


def _handles(*types: type) -> Callable[[_Handler], _Handler]:
    def register(fn: _Handler) -> _Handler:
        for t in types:
            _HANDLERS[t] = fn
        return fn

    return register


def _passes(*types: type) -> None:
    for t in types:
        _HANDLERS[t] = lambda plan, op: (op, _same)


_passes(
    ops.TouchRecords,
    ops.SetPeriods,
    ops.RebuildIndexes,
    ops.RemoveRecords,
    ops.GetNeighbors,
    ops.CheckEmbeddingModel,
    ops.GetEmbeddingModel,
    ops.SetEmbeddingModel,
    ops.DropEmbeddings,
    ops.PruneEmbeddings,
    ops.DeleteSessions,
    ops.ListUsers,
    ops.AppendAudit,  # ids, counts and actors: never content (memlane.core.audit)
    ops.ListAudit,
)


def _sealed_dict(value: Mapping[str, Any]) -> bool:
    return isinstance(value.get(SEALED), str)


def _sealed_text(value: str | None) -> bool:
    return value is not None and value.startswith(SEALED_TEXT)


@_handles(ops.WriteRecord)
def _write_record(plan: _Plan, op: ops.WriteRecord) -> tuple[Op[Any], Callable[[Any], Any]]:
    sealer = plan.writer(op.record.user_id)
    return replace(op, record=sealer.record(op.record, plan.owner.digest)), _same


@_handles(ops.AppendHistory)
def _append_history(plan: _Plan, op: ops.AppendHistory) -> tuple[Op[Any], Callable[[Any], Any]]:
    events = tuple(plan.writer(e.user_id).event(e) for e in op.events)
    return replace(op, events=events), _same


@_handles(ops.GetRecords, ops.ListRecords)
def _read_records(plan: _Plan, op: Any) -> tuple[Op[Any], Callable[[Any], Any]]:
    if isinstance(op, ops.ListRecords):
        sealer = plan.reader(op.user_id)
        if sealer is not None:
            wanted = op.filters

            def opener(rows: list[MemoryRecord]) -> list[MemoryRecord]:
                return [sealer.matched(wanted, r) for r in plan.open_records(rows)]

            return replace(op, filters=sealer.filters(wanted)), opener
    return op, plan.open_records


@_handles(ops.FindExpired)
def _find_expired(plan: _Plan, op: ops.FindExpired) -> tuple[Op[Any], Callable[[Any], Any]]:
    # Every user's expired rows. Sealed rows of a user with no key are what a forget cut
    # short after the key left (forget_user again removes them): nothing can open them,
    # and they must not stop the sweep of every other user.
    def opener(rows: list[MemoryRecord]) -> list[MemoryRecord]:
        kept = [r for r in rows if not is_sealed_record(r) or plan.reader(r.user_id)]
        return plan.open_records(kept)

    return op, opener


@_handles(ops.LexicalSearch)
def _lexical(plan: _Plan, op: ops.LexicalSearch) -> tuple[Op[Any], Callable[[Any], Any]]:
    sealer = plan.reader(op.user_id)
    if sealer is None:  # nothing sealed to find: rows from before the store was encrypted
        return op, _same
    query = sealer.query(op.query)
    if not query:
        return replace(op, limit=0), lambda _: []
    return replace(op, query=query, filters=sealer.filters(op.filters)), _same


@_handles(ops.VectorSearch)
def _vector(plan: _Plan, op: ops.VectorSearch) -> tuple[Op[Any], Callable[[Any], Any]]:
    sealer = plan.reader(op.user_id)
    return (op if sealer is None else replace(op, filters=sealer.filters(op.filters))), _same


@_handles(ops.GetHistory, ops.ListUserHistory)
def _history(plan: _Plan, op: Any) -> tuple[Op[Any], Callable[[Any], Any]]:
    def opener(events: list[HistoryEvent]) -> list[HistoryEvent]:
        return [plan.open_row(e.user_id, e, _event_sealed, _Sealer.open_event) for e in events]

    return op, opener


def _event_sealed(e: HistoryEvent) -> bool:
    return _sealed_text(e.reason) or (e.snapshot is not None and _sealed_dict(e.snapshot))


@_handles(ops.GetEmbeddings)
def _get_embeddings(plan: _Plan, op: ops.GetEmbeddings) -> tuple[Op[Any], Callable[[Any], Any]]:
    keyed = {plan.owner.digest(h) or h: h for h in op.hashes}

    def opener(found: dict[str, Any]) -> dict[str, Any]:
        return {keyed[h]: v for h, v in found.items() if h in keyed}

    return replace(op, hashes=tuple(keyed)), opener


@_handles(ops.PutEmbeddings)
def _put_embeddings(plan: _Plan, op: ops.PutEmbeddings) -> tuple[Op[Any], Callable[[Any], Any]]:
    def keyed(items: tuple[tuple[str, Any], ...]) -> tuple[tuple[str, Any], ...]:
        return tuple((plan.owner.digest(h) or h, v) for h, v in items)

    # Sparse terms are weighted words of the text: never kept in an encrypted store.
    return replace(op, items=keyed(op.items), keep=keyed(op.keep), sparse=()), _same


@_handles(ops.GetSparse)
def _get_sparse(plan: _Plan, op: ops.GetSparse) -> tuple[Op[Any], Callable[[Any], Any]]:
    return replace(op, hashes=()), _same  # none are kept (see PutEmbeddings)


@_handles(ops.SparseOf)
def _sparse_of(plan: _Plan, op: ops.SparseOf) -> tuple[Op[Any], Callable[[Any], Any]]:
    return replace(op, ids=()), _same


@_handles(ops.UpsertSession)
def _upsert_session(plan: _Plan, op: ops.UpsertSession) -> tuple[Op[Any], Callable[[Any], Any]]:
    return replace(op, session=plan.writer(op.session.user_id).session(op.session)), _same


@_handles(ops.GetSession, ops.ListSessions)
def _sessions(plan: _Plan, op: Any) -> tuple[Op[Any], Callable[[Any], Any]]:
    def one(s: Session | None) -> Session | None:
        if s is None:
            return None
        return plan.open_row(op.user_id, s, _session_sealed, _Sealer.open_session)

    return op, (lambda found: [one(s) for s in found] if isinstance(found, list) else one(found))


@_handles(ops.AppendMessages)
def _append_messages(plan: _Plan, op: ops.AppendMessages) -> tuple[Op[Any], Callable[[Any], Any]]:
    messages = tuple(plan.writer(m.user_id).message(m) for m in op.messages)
    return replace(op, messages=messages), lambda found: _open_messages(plan, found)


@_handles(ops.GetMessages)
def _get_messages(plan: _Plan, op: ops.GetMessages) -> tuple[Op[Any], Callable[[Any], Any]]:
    return op, lambda found: _open_messages(plan, found)


def _open_messages(plan: _Plan, found: list[Message]) -> list[Message]:
    return [
        plan.open_row(m.user_id, m, lambda m: _sealed_text(m.content), _Sealer.open_message)
        for m in found
    ]


@_handles(ops.PutState)
def _put_state(plan: _Plan, op: ops.PutState) -> tuple[Op[Any], Callable[[Any], Any]]:
    return replace(op, state=plan.writer(op.state.user_id).state(op.state)), _same


@_handles(ops.GetState, ops.ListStateVersions, ops.ListStates)
def _states(plan: _Plan, op: Any) -> tuple[Op[Any], Callable[[Any], Any]]:
    def one(s: StateVersion | None) -> StateVersion | None:
        if s is None:
            return None
        return plan.open_row(op.user_id, s, _state_sealed, _Sealer.open_state)

    return op, (lambda found: [one(s) for s in found] if isinstance(found, list) else one(found))


@_handles(ops.PutJob)
def _put_job(plan: _Plan, op: ops.PutJob) -> tuple[Op[Any], Callable[[Any], Any]]:
    return replace(op, job=plan.writer(op.job.user_id).job(op.job)), _same


@_handles(ops.GetJob, ops.ListJobs, ops.ClaimJob)
def _jobs(plan: _Plan, op: Any) -> tuple[Op[Any], Callable[[Any], Any]]:
    def one(j: Job | None) -> Job | None:
        return None if j is None else plan.open_row(j.user_id, j, _job_sealed, _Sealer.open_job)

    return op, (lambda found: [one(j) for j in found] if isinstance(found, list) else one(found))


def _session_sealed(s: Session) -> bool:
    return _sealed_dict(s.metadata)


def _state_sealed(s: StateVersion) -> bool:
    return _sealed_dict(s.data)


def _job_sealed(j: Job) -> bool:
    return _sealed_dict(j.payload) or _sealed_dict(j.result) or _sealed_text(j.error)


@_handles(ops.DeleteUser)
def _delete_user(plan: _Plan, op: ops.DeleteUser) -> tuple[Op[Any], Callable[[Any], Any]]:
    # The key first: once it is gone, every copy of the user's data is unreadable, even
    # if deleting the rows then fails (forget_user again finishes it).
    plan.forget(op.user_id)
    return op, _same


# ---------------------------------------------------------------------------- graph
# An entity's names and aliases are the user's words: sealed (bound to the user's graph,
# so an alias moved by a merge still opens). The keys names are resolved by are blinded,
# so resolution still matches; ids, types, predicates and validity stay in the clear.

_passes(ops.ListMentions, ops.ListRelations, ops.EntityNeighbors, ops.PutRelations)


def _entity_names(user_id: str) -> bytes:
    return _context("entity", user_id)


def _open_entity(plan: _Plan, e: Entity) -> Entity:
    if not _sealed_text(e.name) and not any(map(_sealed_text, e.aliases)):
        return e
    sealer, where = plan._must(e.user_id), _entity_names(e.user_id)
    opened = (sealer.open_text(a, where) or "" for a in e.aliases)
    return replace(e, name=sealer.open_text(e.name, where) or "", aliases=tuple(opened))


@_handles(ops.IndexMentions)
def _index_mentions(plan: _Plan, op: ops.IndexMentions) -> tuple[Op[Any], Callable[[Any], Any]]:
    sealer, where = plan.writer(op.user_id), _entity_names(op.user_id)

    def draft(d: ops.EntityDraft) -> ops.EntityDraft:
        return replace(
            d,
            name=sealer.seal_text(d.name, where) or "",
            lookup=tuple(sealer.name("e", k) for k in d.lookup),
            keys=tuple(sealer.name("e", k) for k in d.keys),
        )

    def triple(t: ops.TripleDraft) -> ops.TripleDraft:
        return replace(t, subject=draft(t.subject), object=draft(t.object))

    items = tuple(
        replace(i, entities=tuple(map(draft, i.entities)), triples=tuple(map(triple, i.triples)))
        for i in op.items
    )
    return replace(op, items=items), _same


@_handles(ops.ListEntities)
def _list_entities(plan: _Plan, op: ops.ListEntities) -> tuple[Op[Any], Callable[[Any], Any]]:
    return op, lambda rows: [_open_entity(plan, e) for e in rows]


@_handles(ops.MergeEntities)
def _merge_entities(plan: _Plan, op: ops.MergeEntities) -> tuple[Op[Any], Callable[[Any], Any]]:
    return op, lambda e: None if e is None else _open_entity(plan, e)


@_handles(ops.FindEntities)
def _find_entities(plan: _Plan, op: ops.FindEntities) -> tuple[Op[Any], Callable[[Any], Any]]:
    sealer = plan.reader(op.user_id)
    if sealer is None:
        return op, _same
    blind = {sealer.name("e", k): k for k in op.keys}

    def opener(found: dict[str, str]) -> dict[str, str]:
        return {blind.get(k, k): e for k, e in found.items()}

    return replace(op, keys=tuple(blind)), opener
