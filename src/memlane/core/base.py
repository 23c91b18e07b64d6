"""The shared core every flow runs over: configuration, the embedding model id, the clock,
and the helpers every area needs (input checks, new records, history events, vectors,
inserts). The areas (records, sessions, search, context, admin) are module-level flow
functions taking this :class:`Core` first."""

from __future__ import annotations

import copy
import functools
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from memlane import injection
from memlane.core.flow import Flow, embed, embed_query, encode_sparse, many, one
from memlane.core.mentions import index_op
from memlane.errors import UnsupportedError, ValidationError, no_memory
from memlane.ids import new_id
from memlane.models import (
    AuditLevel,
    Filters,
    HistoryAction,
    HistoryEvent,
    MemoryKind,
    MemoryRecord,
    Trust,
    check_id,
    content_hash,
    utcnow,
)
from memlane.models.basics import is_unicode
from memlane.pii import PiiPolicy, PolicyFor
from memlane.ports import store as ops
from memlane.ports.cipher import Cipher
from memlane.ports.embedder import Vector
from memlane.ports.sparse import SparseTerms, pack
from memlane.when import resolve

log = logging.getLogger("memlane")

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Behaviour switches of a memory; every field has a sane default."""

    max_text_chars: int = 20_000
    max_metadata_bytes: int = 64_000
    record_episodes: bool = True
    episode_roles: frozenset[str] = frozenset({"user", "assistant"})
    track_access: bool = True
    context_window: int = 0
    """How many earlier turns of its session an episode is also embedded with, for the
    ``context`` search method (0: none). Off by default: with lexical context on, it added
    0.001 recall@10 on LoCoMo for three times the embedding work (bench/recall.md)."""
    query_cache_size: int = 1024
    max_page_size: int = 1000
    pii: PiiPolicy | PolicyFor | None = None
    """What happens to personal data before it is stored (:class:`memlane.pii.PiiPolicy`):
    one policy for every scope, or a function from a user id to that scope's policy (None:
    keep everything). Applied to memory texts and metadata, messages, session state and
    imports; a search's query gets the same pseudonyms. Default: none, text is stored as
    given."""
    injection: injection.Action | injection.PolicyFor = "quarantine"
    """What happens to instruction-like content (:mod:`memlane.injection`: "ignore previous
    instructions", role-play jailbreaks, fake system prompts and tool calls, hidden text)
    before it is stored: ``"quarantine"`` (the default: stored with the kinds found in
    :attr:`MemoryRecord.quarantine`, shown to operators, never returned by search nor put
    in a context until :meth:`Memory.release`), ``"refuse"``
    (:class:`~memlane.errors.InjectionRefusedError`, nothing stored) or ``"keep"``; or a
    function from a user id to that scope's action. Applied where the PII policy is:
    memory texts, messages (a flagged message is kept as a quarantined episode whatever
    its role), keyed facts, summaries, imports, and the memory manager's input (flagged
    messages are withheld from the model) and output."""

    graph: bool = True
    """Whether each memory's entities are recorded as it is written (the knowledge graph,
    :mod:`memlane.core.graph`): mentions and co-occurrence edges, in the write's own
    transaction. Off, :meth:`Memory.entities` finds only what was recorded before."""
    audit: AuditLevel | str = AuditLevel.ALL
    """What the audit trail records (:class:`memlane.models.AuditLevel`): ``"all"`` (the
    default: every change, in its own transaction, and every read of a user's data),
    ``"writes"`` or ``"off"``. Reading with ``"all"`` costs one small write per call
    (bench/audit.md)."""
    audit_key: bytes | None = None
    """The key (16 bytes or more) of the hash that names a forgotten user in the
    tombstone their trail keeps (:func:`memlane.core.audit.tombstone_id`). Without one
    the hash is unkeyed: whoever can guess a user id can tell it was forgotten."""

    def __post_init__(self) -> None:
        if not callable(self.injection):
            injection.check_action(self.injection)
        try:
            object.__setattr__(self, "audit", AuditLevel(self.audit))
        except ValueError:
            levels = ", ".join(level.value for level in AuditLevel)
            raise ValidationError(f"audit must be one of {levels}, got {self.audit!r}") from None
        key = self.audit_key
        if key is not None and (not isinstance(key, bytes) or len(key) < 16):
            raise ValidationError("audit_key must be bytes, 16 or more")


UNNAMED_ACTOR = "unnamed"
"""The actor of a core built without one (the API always names one)."""


def check_actor(actor: object) -> str:
    """``actor`` if it can name who acts in the audit trail: a non-empty string of at
    most 256 characters without control characters. Raises ValidationError."""
    check_id("actor", actor)
    assert isinstance(actor, str)
    return actor


@dataclass(frozen=True, slots=True)
class MemoryInput:
    """What a caller supplies for one new memory (see :meth:`Memory.add`)."""

    text: str
    kind: MemoryKind | str = MemoryKind.FACT
    topics: Sequence[str] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    importance: float = 0.5
    event_at: datetime | None = None
    expires_at: datetime | None = None
    ttl: timedelta | None = None
    session_id: str | None = None
    agent_id: str | None = None
    team: str | None = None
    key: str | None = None
    source_ids: Sequence[str] = ()
    actor: str | None = None
    trust: Trust | str = Trust.USER
    """Whose word this is (:class:`~memlane.models.Trust`): ``user`` unless said."""


T = TypeVar("T")

_USERS_NOTED = 4096
"""Users whose last search :meth:`Core.note_terms` remembers."""


def _query_terms_of(query: str) -> Flow[SparseTerms]:
    (terms,) = yield from encode_sparse([query], query=True)
    return terms


def _query_vector_of(query: str) -> Flow[Vector]:
    (vector,) = yield from embed([query])
    return vector


class Core:
    """The state and helpers every area of the core uses: one per Memory (``memory.core``)."""

    def __init__(
        self,
        *,
        model_id: str,
        sparse_model_id: str | None = None,
        clock: Clock | None,
        config: CoreConfig,
        cipher: Cipher | None = None,
        actor: str = UNNAMED_ACTOR,
    ) -> None:
        self.model_id = model_id
        self.sparse_model_id = sparse_model_id
        """The sparse encoder's model (:mod:`memlane.ports.sparse`), None without one."""
        self.cipher = cipher
        """Seals exports when the store is encrypted (:mod:`memlane.stores.sealed`)."""
        self.clock: Clock = clock or utcnow
        self.config = config
        self.actor = check_actor(actor)
        """Who the audit trail records as doing what this memory does."""
        self._query_vectors: OrderedDict[str, Vector] = OrderedDict()
        self._query_terms: OrderedDict[str, SparseTerms] = OrderedDict()
        self._query_lock = threading.Lock()  # one Memory may serve many threads
        self._warned: set[str] = set()
        # Users whose last search found every candidate with sparse terms (True) or not
        # (False): a few thousand, least recently searched first; shared with with_actor
        # copies, as the caches are.
        self._terms_found: OrderedDict[str, bool] = OrderedDict()

    def warn_once(self, key: str) -> bool:
        """True the first time this core (and its :meth:`with_actor` copies) asks for
        ``key``: for a warning a memory logs once, not on every call."""
        with self._query_lock:
            first = key not in self._warned
            self._warned.add(key)
            return first

    def with_actor(self, actor: str) -> Core:
        """This core (configuration, clock, query cache) acting for another ``actor``.
        Raises ValidationError for an actor that is not a short, printable name."""
        other = copy.copy(self)
        other.actor = check_actor(actor)
        return other

    # ------------------------------------------------------------------ validation

    def now(self) -> datetime:
        """The current time of this memory's clock."""
        return self.clock()

    def check_text(self, text: object, what: str = "text") -> str:
        """``text`` if it is a storable text; raises ValidationError naming ``what``."""
        if not isinstance(text, str):
            raise ValidationError(f"{what} must be a string, got {type(text).__name__}")
        if not text.strip():
            raise ValidationError(f"{what} is empty")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates, e.g. undecodable argv bytes
            raise ValidationError(f"{what} is not valid Unicode: {exc.reason}") from exc
        if "\x00" in text:  # PostgreSQL cannot store it; refused on every backend alike
            raise ValidationError(f"{what} contains a NUL character (\\x00)")
        if len(text) > self.config.max_text_chars:
            raise ValidationError(
                f"{what} has {len(text)} characters; the limit is {self.config.max_text_chars}"
            )
        return text

    def pii_policy(self, user_id: str) -> PiiPolicy | None:
        """The PII policy of the user's scope, if any."""
        policy = self.config.pii
        if policy is None or isinstance(policy, PiiPolicy):
            return policy
        found = policy(user_id)
        if found is not None and not isinstance(found, PiiPolicy):
            raise ValidationError(f"the PII policy of a scope must be a PiiPolicy, got {found!r}")
        return found

    def private(self, user_id: str, text: str, what: str = "text") -> str:
        """``text`` as the scope's PII policy stores it (PiiRefusedError if it refuses)."""
        policy = self.pii_policy(user_id)
        return text if policy is None else policy.apply(text, what)

    def private_json(self, user_id: str, value: dict[str, Any], what: str) -> dict[str, Any]:
        """A checked JSON document with the scope's PII policy applied to its strings."""
        policy = self.pii_policy(user_id)
        return value if policy is None else dict(policy.apply_json(value, what))

    def injection_action(self, user_id: str) -> injection.Action:
        """What the injection policy of the user's scope does with instruction-like content."""
        policy = self.config.injection
        return injection.check_action(policy(user_id) if callable(policy) else policy)

    def screen(self, user_id: str, text: str, what: str = "text") -> tuple[str, ...]:
        """The kinds of instruction-like content in ``text`` that the scope's injection
        policy quarantines: () when none is found or the policy keeps it. Raises
        InjectionRefusedError (naming the kinds, never the text) when it refuses."""
        action = self.injection_action(user_id)
        if action == "keep":
            return ()
        found = _injection_kinds(text)
        if found and action == "refuse":
            raise injection.refused(found, what)
        return found

    def check_json(self, value: object, what: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise ValidationError(f"{what} must be a mapping, got {type(value).__name__}")
        try:
            encoded = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"{what} must be JSON-serializable: {exc}") from exc
        except RecursionError as exc:
            raise ValidationError(f"{what} is nested too deeply") from exc
        try:
            size = len(encoded.encode("utf-8"))
        except UnicodeEncodeError as exc:  # lone surrogates in a key or a string
            raise ValidationError(f"{what} is not valid Unicode: {exc.reason}") from exc
        if size > self.config.max_metadata_bytes:
            raise ValidationError(f"{what} is larger than {self.config.max_metadata_bytes} bytes")
        decoded = dict(json.loads(encoded))
        depth, nul = json_shape(decoded)
        if depth > MAX_JSON_DEPTH:
            # Deeper documents store fine but break every reader that recurses over them
            # (JSON encoders in servers, pydantic), taking the user's listings down.
            raise ValidationError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
        if nul:
            raise ValidationError(f"{what} contains a NUL character (\\x00) in a key or string")
        return decoded

    def check_limit(self, limit: object) -> int:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValidationError(f"limit must be a positive integer, got {limit!r}")
        if limit > self.config.max_page_size:
            raise ValidationError(
                f"limit {limit} is above the maximum of {self.config.max_page_size}; page with "
                "the cursor instead"
            )
        return limit

    def new_record(self, user_id: str, item: MemoryInput, now: datetime) -> MemoryRecord:
        """A new (unsaved) record of ``user_id`` from ``item``, created at ``now``.
        Raises ValidationError for bad input."""
        check_id("user_id", user_id)
        text = self.private(user_id, self.check_text(item.text))
        quarantine = self.screen(user_id, text)
        kind = _checked_kind(item.kind)
        trust = checked_trust(item.trust)
        importance = _checked_importance(item.importance)
        _check_strings("topics", item.topics, non_empty=True)
        topics = [self.private(user_id, t, "topic") for t in item.topics]
        expires_at = _expiry(item, now)
        for name in ("event_at", "expires_at"):
            check_aware(name, getattr(item, name))
        for name in ("session_id", "agent_id", "team", "key"):
            check_id(name, getattr(item, name), required=False)
        _check_strings("source_ids", item.source_ids, non_empty=False)
        return MemoryRecord(
            id=new_id(),
            user_id=user_id,
            kind=kind,
            text=text,
            content_hash=content_hash(text),
            created_at=now,
            updated_at=now,
            agent_id=item.agent_id,
            team=item.team,
            session_id=item.session_id,
            key=item.key,
            topics=tuple(dict.fromkeys(topics)),
            metadata=self.private_json(
                user_id, self.check_json(item.metadata or {}, "metadata"), "metadata"
            ),
            importance=importance,
            event_at=item.event_at,
            valid_from=item.event_at or now,
            expires_at=expires_at,
            source_ids=tuple(str(s) for s in item.source_ids),
            actor=item.actor,
            periods=periods_of(text, item.event_at or now),
            trust=trust,
            quarantine=quarantine,
        )

    # ------------------------------------------------------------------ history

    @staticmethod
    def event(
        record: MemoryRecord,
        action: HistoryAction,
        now: datetime,
        *,
        actor: str | None = None,
        reason: str | None = None,
        snapshot: bool = True,
    ) -> HistoryEvent:
        """The history event recording that ``record`` (as it is now) went through ``action``."""
        return HistoryEvent(
            id=new_id(),
            record_id=record.id,
            user_id=record.user_id,
            action=action,
            version=record.version,
            at=now,
            actor=actor if actor is not None else record.actor,
            reason=reason,
            snapshot=record.to_dict() if snapshot else None,
        )

    def removal_events(
        self, records: Iterable[MemoryRecord], action: HistoryAction, now: datetime, reason: str
    ) -> tuple[HistoryEvent, ...]:
        """History events for records leaving the store for good (purged, their session
        deleted): one version past the last, no snapshot (the store erases the earlier
        snapshots too: see ``RemoveRecords``)."""
        return tuple(
            self.event(self.bump(r, now), action, now, reason=reason, snapshot=False)
            for r in records
        )

    @staticmethod
    def bump(record: MemoryRecord, now: datetime, **changes: Any) -> MemoryRecord:
        """The next version of ``record`` (updated at ``now``) with ``changes``."""
        return replace(record, version=record.version + 1, updated_at=now, **changes)

    # ------------------------------------------------------------------ embeddings

    def vectors(
        self,
        texts: Sequence[str],
        known: Mapping[str, Vector] | None = None,
        *,
        terms_for: int | None = None,
    ) -> Flow[tuple[list[Vector], ops.PutEmbeddings]]:
        """Vectors for texts, embedding only what the cache (and ``known``, vectors by
        content hash computed earlier in the same flow) lacks.

        Returns the vectors and the cache write to include in the caller's batch, so a
        record and its vector land in the same transaction.

        With a sparse encoder the write also holds the sparse terms of the first
        ``terms_for`` texts (default: all; the others are context texts, which search never
        reads by terms), those stored already included (written where absent, so a prune
        racing this write cannot leave its record without them); texts in ``known`` were
        given theirs by the write that computed their vectors.
        """
        hashes = [content_hash(t) for t in texts]
        unique = [h for h in dict.fromkeys(hashes) if not known or h not in known]
        sparse = self.sparse_model_id
        termed = hashes if terms_for is None else hashes[:terms_for]
        wanted = [h for h in dict.fromkeys(termed) if not known or h not in known]
        if not wanted:
            sparse = None
        reads: list[ops.Op[Any]] = [ops.GetEmbeddings(self.model_id, tuple(unique))]
        if sparse is not None:
            reads.append(ops.GetSparse(sparse, tuple(wanted), self.model_id))
        found_now: list[Any] = []
        if unique or sparse is not None:
            try:
                found_now = yield from many(reads)
            except UnsupportedError:  # a plugin store that keeps no sparse terms
                if sparse is None:
                    raise
                sparse = None
                found_now = yield from many(reads[:1])
        stored: dict[str, Vector] = found_now[0] if found_now else {}
        cached = {**(known or {}), **stored}
        missing = {h: t for h, t in zip(hashes, texts, strict=True) if h not in cached}
        fresh: dict[str, Vector] = {}
        if missing:
            vectors = yield from embed(list(missing.values()))
            fresh = dict(zip(missing, vectors, strict=True))
        found = {**cached, **fresh}
        terms: tuple[tuple[str, bytes], ...] = ()
        if sparse is not None:
            have: dict[str, bytes] = found_now[1] if len(found_now) > 1 else {}
            text_of = dict(zip(hashes, texts, strict=True))
            lacking = [h for h in wanted if h not in have]
            made: list[bytes] = []
            if lacking:
                made = [pack(t) for t in (yield from encode_sparse([text_of[h] for h in lacking]))]
            terms = (*have.items(), *zip(lacking, made, strict=True))
        write = ops.PutEmbeddings(
            self.model_id,
            tuple(fresh.items()),
            tuple(stored.items()),
            sparse_model=sparse or "",
            sparse=terms,
        )
        return [found[h] for h in hashes], write

    def query_terms(self, query: str) -> Flow[SparseTerms | None]:
        """A query's sparse terms (None without a sparse encoder), from a small LRU."""
        if self.sparse_model_id is None:
            return None
        return (yield from self._cached(self._query_terms, query, _query_terms_of))

    def query_vector(self, query: str) -> Flow[Vector]:
        """A query's vector, from a small in-process LRU (queries are not persisted)."""
        return (yield from self._cached(self._query_vectors, query, _query_vector_of))

    def query_vector_and_terms(
        self, query: str, terms_of: str, user_id: str
    ) -> Flow[tuple[Vector, SparseTerms | None]]:
        """``query``'s vector (:meth:`query_vector`) and, when they can be had at no extra
        wait, ``terms_of``'s sparse terms: from the LRU, or encoded on a second thread
        while the vector is made, once the user's last search found its candidates'
        stored terms (:meth:`note_terms`; until then a search would often not use them).
        None for the terms otherwise: :meth:`query_terms` makes them when they are needed."""
        vector = self._lookup(self._query_vectors, query)
        terms = None if self.sparse_model_id is None else self._lookup(self._query_terms, terms_of)
        if vector is not None:
            return vector, terms
        with self._query_lock:
            found = self._terms_found.get(user_id, False)
        if terms is not None or self.sparse_model_id is None or not found:
            return (yield from self.query_vector(query)), terms
        vector, terms = yield from embed_query(query, terms_of)
        self._keep(self._query_vectors, query, vector)
        if terms is not None:
            self._keep(self._query_terms, terms_of, terms)
        return vector, terms

    def note_terms(self, user_id: str, found: bool) -> None:
        """Tell the core whether a search of ``user_id``'s memories found every candidate's
        sparse terms: while it does, that user's queries have their terms encoded beside
        their vectors (:meth:`query_vector_and_terms`)."""
        with self._query_lock:
            self._terms_found[user_id] = found
            self._terms_found.move_to_end(user_id)
            while len(self._terms_found) > _USERS_NOTED:
                self._terms_found.popitem(last=False)

    def _cached(
        self, cache: OrderedDict[str, T], query: str, compute: Callable[[str], Flow[T]]
    ) -> Flow[T]:
        """What ``compute`` gives for ``query``, kept in ``cache`` (least recently used
        first, at most ``config.query_cache_size``)."""
        cached = self._lookup(cache, query)
        if cached is not None:
            return cached
        value = yield from compute(query)
        self._keep(cache, query, value)
        return value

    def _lookup(self, cache: OrderedDict[str, T], query: str) -> T | None:
        key = content_hash(query)
        with self._query_lock:
            cached = cache.get(key)
            if cached is not None:
                cache.move_to_end(key)
            return cached

    def _keep(self, cache: OrderedDict[str, T], query: str, value: T) -> None:
        with self._query_lock:
            cache[content_hash(query)] = value
            while len(cache) > self.config.query_cache_size:
                cache.popitem(last=False)

    # ------------------------------------------------------------------ records

    def insert(
        self,
        records: Sequence[MemoryRecord],
        extra: Iterable[ops.Op[Any]] = (),
        *,
        reason: str | None = None,
        vector: ops.PutEmbeddings | None = None,
        triples: Mapping[str, tuple[ops.TripleDraft, ...]] | None = None,
    ) -> Flow[list[MemoryRecord]]:
        """Write new records with their history and vectors in one batch (``extra`` ops
        too); returns them. ``vector``: the cache write from :meth:`vectors` for their
        texts, when the caller has it already (records without a session context).
        ``triples``: typed relations some records state (by record id), for the graph.
        Raises ConflictError when a write in the batch lost a race."""
        written, _ = yield from self.insert_with(
            records, extra, reason=reason, vector=vector, triples=triples
        )
        return written

    def insert_with(
        self,
        records: Sequence[MemoryRecord],
        extra: Iterable[ops.Op[Any]] = (),
        *,
        reason: str | None = None,
        vector: ops.PutEmbeddings | None = None,
        triples: Mapping[str, tuple[ops.TripleDraft, ...]] | None = None,
    ) -> Flow[tuple[list[MemoryRecord], list[Any]]]:
        """:meth:`insert`, returning the records and the results of the ``extra`` ops."""
        extra = list(extra)
        records, contexts = yield from self.with_context(records)
        if vector is not None and not contexts:
            cache_write = vector
        else:
            texts = [r.text for r in records] + contexts
            _, cache_write = yield from self.vectors(texts, terms_for=len(records))
        events = tuple(
            self.event(r, HistoryAction.ADD, r.created_at, reason=reason) for r in records
        )
        index = index_op(records, triples) if self.config.graph else None
        results = yield from many(
            [
                cache_write,
                *extra,
                *(ops.WriteRecord(r, 0) for r in records),
                ops.AppendHistory(events),
                *(() if index is None else (index,)),
            ]
        )
        return list(records), results[1 : 1 + len(extra)]

    def with_context(
        self,
        records: Sequence[MemoryRecord],
        *,
        look_back: bool = True,
        window: int | None = None,
    ) -> Flow[tuple[list[MemoryRecord], list[str]]]:
        """Give each new episode that belongs to a session a context: the text of the
        episodes just before it in that session, then its own, under its date. Its
        context is embedded too, so a reply like "Yes, last Tuesday!" can be found by
        what it replied to. Returns the records and the context texts to embed.

        Only turns by the episode's own agent count (no agent is one too): reads are
        limited by agent, and another agent's words must not make this episode match.

        With ``look_back=False`` only earlier records of the same batch count (import,
        where the batch is the whole session in id order)."""
        window = self.config.context_window if window is None else window
        out = list(records)
        contexts: list[str] = []
        if window < 1:
            return out, contexts
        turns = {
            (r.user_id, r.session_id, r.agent_id)
            for r in records
            if r.kind == MemoryKind.EPISODE and r.session_id
        }
        before: dict[tuple[str, str | None, str | None], list[str]] = {k: [] for k in turns}
        for turn in sorted(turns, key=str) if look_back else ():
            before[turn] = yield from self.last_turns(*turn, window)
        for i, r in enumerate(out):
            key = (r.user_id, r.session_id, r.agent_id)
            if r.kind != MemoryKind.EPISODE or key not in before:
                continue
            # On import, an episode stored without a context (its text was edited) stays so.
            if look_back or r.context_hash is not None:
                previous = before[key][-window:]
                text = f"{r.effective_time:%d %B %Y}: " + "\n".join([*previous, r.text])
                contexts.append(text)
                out[i] = replace(r, context_hash=content_hash(text))
            before[key].append(r.text)
        return out, contexts

    def last_turns(
        self, user_id: str, session_id: str | None, agent_id: str | None, window: int
    ) -> Flow[list[str]]:
        """Texts of the last ``window`` current episodes of the session by ``agent_id``
        (None: by no agent), oldest first."""
        f = Filters(
            kinds=(MemoryKind.EPISODE,),
            session_id=session_id,
            agent_id=agent_id,
            shared_only=agent_id is None,  # agent_id None alone would mean any agent
        )
        rows = yield from one(
            ops.ListRecords(user_id, f, self.now(), None, window, descending=True)
        )
        return [r.text for r in reversed(rows)]

    def load(self, record_id: str, user_id: str) -> Flow[MemoryRecord]:
        check_id("user_id", user_id)
        check_id("record id", record_id)
        found = yield from one(ops.GetRecords(user_id, (record_id,)))
        if not found or found[0].is_expired(self.now()):
            raise no_memory(record_id, user_id)
        return found[0]


BEFORE_ANY_EXPIRY = datetime(1970, 1, 1, tzinfo=UTC)
"""A ``now`` for store reads that should see expired-but-unswept records too."""

MAX_JSON_DEPTH = 64
"""How deeply metadata and state documents may nest."""


def json_shape(value: object) -> tuple[int, bool]:
    """Nesting depth of a decoded JSON value (a scalar is 0) and whether any key or string
    holds a NUL character, in one walk without recursion."""
    deepest, nul, stack = 0, False, [(value, 0)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, str):
            nul = nul or "\x00" in item
        elif isinstance(item, dict):
            nul = nul or any("\x00" in k for k in item)
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest, nul


@functools.lru_cache(maxsize=256)
def _injection_kinds(text: str) -> tuple[str, ...]:
    """:func:`memlane.injection.kinds`, remembered for the texts seen last: a message is
    screened as it arrives and again as its episode is made."""
    return injection.kinds(text)


def checked_trust(trust: Trust | str) -> Trust:
    """``trust`` as a :class:`Trust`; raises ValidationError naming the levels."""
    try:
        return Trust(trust)
    except ValueError as exc:
        allowed = ", ".join(t.value for t in Trust)
        raise ValidationError(f"unknown trust {trust!r}; one of {allowed}") from exc


def _checked_kind(kind: MemoryKind | str) -> MemoryKind:
    try:
        return MemoryKind(kind)
    except ValueError as exc:
        allowed = ", ".join(k.value for k in MemoryKind)
        raise ValidationError(f"unknown kind {kind!r}; one of {allowed}") from exc


def _checked_importance(importance: object) -> float:
    if isinstance(importance, bool) or not isinstance(importance, int | float):
        raise ValidationError("importance must be a number between 0 and 1")
    if not 0.0 <= float(importance) <= 1.0:
        raise ValidationError(f"importance must be between 0 and 1, got {importance}")
    return float(importance)


def _check_strings(name: str, values: Any, *, non_empty: bool) -> None:
    """``values`` is a list of strings (non-empty ones with ``non_empty``), not one string."""
    ok = (
        values is not None
        and not isinstance(values, str)
        and all(isinstance(v, str) and (v or not non_empty) for v in values)
    )
    if not ok:
        what = "non-empty strings" if non_empty else "strings"
        raise ValidationError(f"{name} must be a list of {what}")
    if not all(is_unicode(v) for v in values):
        raise ValidationError(f"{name} are not valid Unicode (a lone surrogate)")


def _expiry(item: MemoryInput, now: datetime) -> datetime | None:
    """When a new memory expires: its ``expires_at``, or ``now`` plus its ``ttl``."""
    if item.ttl is not None and item.expires_at is not None:
        raise ValidationError("give expires_at or ttl, not both")
    if item.ttl is None:
        return item.expires_at
    if not isinstance(item.ttl, timedelta):
        raise ValidationError(f"ttl must be a timedelta, got {type(item.ttl).__name__}")
    if item.ttl <= timedelta(0):
        raise ValidationError("ttl must be positive")
    try:
        return now + item.ttl
    except OverflowError as exc:
        raise ValidationError("ttl reaches past the year 9999") from exc


def check_aware(name: str, value: object) -> None:
    """``value`` is None or a timezone-aware datetime that can be stored in UTC."""
    if value is None:
        return
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValidationError(f"{name} must be a timezone-aware datetime")
    try:
        value.astimezone(UTC)  # stored in UTC: 9999-12-31T23:00-12:00 is not
    except OverflowError as exc:
        raise ValidationError(f"{name} is out of range in UTC") from exc


def periods_of(text: str, said: datetime) -> tuple[str, ...]:
    """The periods ``text`` names ("yesterday", "last week"), resolved against ``said``
    (when it was said or written), as :attr:`MemoryRecord.periods` holds them. Never
    raises: a text the parser cannot read is stored without periods, never refused."""
    try:
        return tuple(dict.fromkeys(span.iso() for span in resolve(text, said)))
    except Exception:  # the parser is a third party's: a memory must always be storable
        log.warning("time expressions of a memory could not be read", exc_info=True)
        return ()
