"""The storage seam.

A store implements one primitive, :meth:`Store.batch`: it runs a sequence of operations
in one transaction and returns one result per operation. The operations are immutable
values defined here; every convenience (add, search, sessions, state) is written once in
the core on top of them. Adding a backend means interpreting these operations and passing
the conformance suite in :mod:`memlane.testing`.

``now`` is passed into operations that depend on it, so a store never reads a clock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from memlane.errors import EmbeddingModelMismatchError
from memlane.models import (
    AuditEvent,
    Filters,
    HistoryEvent,
    Job,
    JobStatus,
    MemoryKind,
    MemoryRecord,
    Message,
    Session,
    StateVersion,
)
from memlane.models.graph import Entity, EntityType, Mention, Relation
from memlane.ports.embedder import Vector

R = TypeVar("R")

SESSION_BOUND_KINDS = frozenset({MemoryKind.EPISODE, MemoryKind.SUMMARY})
"""Kinds of memory that belong to their session and are deleted with it."""


class Op(Generic[R]):
    """Base of every store operation; ``R`` is the type of its result."""

    __slots__ = ()


# ---------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class WriteRecord(Op[None]):
    """Insert or replace a record.

    A record is named by its user and id together: ids are unique within a user only, so
    the same id in another user's scope is another record, never a conflict.
    ``expected_version`` is the version the stored row must have: 0 means the record must
    not exist yet; a mismatch raises ConflictError and the whole batch is rolled back.
    ``None`` (import) inserts the record, or replaces a stored row only if that row has an
    older version; a stored version as new or newer is left as it is.
    """

    record: MemoryRecord
    expected_version: int | None


@dataclass(frozen=True, slots=True)
class AppendHistory(Op[None]):
    """Record history events; an event whose id its user already has is left as it is."""

    events: tuple[HistoryEvent, ...]


@dataclass(frozen=True, slots=True)
class GetRecords(Op[list[MemoryRecord]]):
    """The user's records with these ids (missing ones left out), in the given order."""

    user_id: str
    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ListRecords(Op[list[MemoryRecord]]):
    """The user's records matching ``filters``, ordered by id, after the cursor id."""

    user_id: str
    filters: Filters
    now: datetime
    after_id: str | None
    limit: int
    descending: bool = False


@dataclass(frozen=True, slots=True)
class LexicalSearch(Op[list[tuple[str, float]]]):
    """(id, score) of records matching ``query`` by BM25, best first; higher is better.
    A record matches through its text and the words of the periods it names
    (:attr:`MemoryRecord.period_words`: "yesterday" said on 8 May 2023 matches "May").

    With ``context_weight > 0`` an episode also matches through the text of the last
    episode before it in its session by the same agent (no agent matches no agent) that
    is not deleted, whose term frequencies count ``context_weight`` times."""

    user_id: str
    filters: Filters
    now: datetime
    query: str
    limit: int
    context_weight: float = 0.0
    terms_next: tuple[str, str] | None = None
    """A hint, never a change to the answer: the search asks next for the sparse terms of
    its candidates, of this (sparse model, embedding model) (:class:`SparseOf`); a store
    may read the hits' terms ahead (SQLite does while its code scan runs, PostgreSQL on
    the lexical read's connection while the vector search runs on another)."""


@dataclass(frozen=True, slots=True)
class VectorSearch(Op[list[tuple[str, float]]]):
    """(id, cosine similarity) of the nearest records embedded by ``model``, best first."""

    user_id: str
    filters: Filters
    now: datetime
    model: str
    vector: Vector
    limit: int
    field: str = "content"
    """``content`` compares with the memory's own text; ``context`` with its context
    embedding where it has one (else its text)."""


@dataclass(frozen=True, slots=True)
class GetNeighbors(Op[dict[str, list[tuple[str, int]]]]):
    """For each episode id, (id, distance) of up to ``window`` episodes just before
    (distance -1, -2 ...) and just after (1, 2 ...) it in the same session (by id order,
    same user, current and unexpired): the turns around a turn. Only turns by the same
    agent count (no agent matches no agent), as reads are limited by agent. Facts,
    summaries and other kinds that share the session are not turns and are skipped; ids
    that are not episodes, or have no session, map to an empty list."""

    user_id: str
    ids: tuple[str, ...]
    window: int
    now: datetime


@dataclass(frozen=True, slots=True)
class GetHistory(Op[list[HistoryEvent]]):
    """A record's history, oldest first."""

    user_id: str
    record_id: str


@dataclass(frozen=True, slots=True)
class ListUserHistory(Op[list[HistoryEvent]]):
    """All history events of a user ordered by event id, after the cursor id."""

    user_id: str
    after_id: str | None
    limit: int


@dataclass(frozen=True, slots=True)
class TouchRecords(Op[None]):
    """Count one access of each record and set its last access time."""

    user_id: str
    ids: tuple[str, ...]
    at: datetime


@dataclass(frozen=True, slots=True)
class SetPeriods(Op[int]):
    """Set the periods of these records (``(id, periods)`` pairs) and index their words,
    keeping every other field and the version: they are read again from the text, not
    changed by anyone (``Memory.reindex``). Returns how many records were found."""

    user_id: str
    items: tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True, slots=True)
class RebuildIndexes(Op[int]):
    """Build the user's search indexes afresh from the stored records, where a store
    keeps them beside its database (SQLite: ``memlane reindex``); a store whose indexes
    live in its database has nothing to do. Returns how many records were indexed (0
    when nothing was rebuilt)."""

    user_id: str


@dataclass(frozen=True, slots=True)
class FindExpired(Op[list[MemoryRecord]]):
    """Records of any user whose ``expires_at`` is at or before ``now``."""

    now: datetime
    limit: int


@dataclass(frozen=True, slots=True)
class RemoveRecords(Op[int]):
    """Delete records outright (rows and index entries) and erase their content from
    their history: its events stay (action, time, ids, versions) with no snapshot.
    Returns how many records were deleted."""

    user_id: str
    ids: tuple[str, ...]


# ---------------------------------------------------------------------------- embeddings


@dataclass(frozen=True, slots=True)
class GetEmbeddings(Op[dict[str, Vector]]):
    """Cached vectors by content hash for one model; hashes not cached are left out."""

    model: str
    hashes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PutEmbeddings(Op[None]):
    """Cache vectors by content hash for one model.

    ``keep`` are vectors the writer read from the cache earlier: written only where
    absent, so a record never commits without its vector when a concurrent prune (a
    sweep, another user's ``forget_user``) removed it in between."""

    model: str
    items: tuple[tuple[str, Vector], ...]
    keep: tuple[tuple[str, Vector], ...] = ()
    staged: bool = False
    """Vectors of a model the store is moving to (``reembed``): the runner does not
    check them against the store's recorded model."""
    sparse_model: str = ""
    sparse: tuple[tuple[str, bytes], ...] = ()
    """Sparse terms (:func:`memlane.ports.sparse.pack`) of ``sparse_model`` by content
    hash, kept beside the vectors: written where absent (the terms of a hash never
    change). A store may keep a text's terms only beside its vector of ``model`` (SQLite
    keys them by the vector's row): terms of a hash it holds no such vector for, in the
    store or in this write, may be dropped."""


@dataclass(frozen=True, slots=True)
class GetSparse(Op[dict[str, bytes]]):
    """Stored sparse terms of one model by content hash; hashes without are left out."""

    model: str
    hashes: tuple[str, ...]
    vectors_model: str = ""
    """The embedding model whose vectors the terms were written beside
    (:attr:`PutEmbeddings.model`); empty: the store's recorded model."""


@dataclass(frozen=True, slots=True)
class SparseOf(Op[dict[str, bytes]]):
    """The stored sparse terms of ``model`` of these records of the user (by record id,
    through their content hash); records without terms, of another user or not stored
    are left out."""

    user_id: str
    model: str
    ids: tuple[str, ...]
    vectors_model: str = ""
    """As :attr:`GetSparse.vectors_model`."""


@dataclass(frozen=True, slots=True)
class CheckEmbeddingModel(Op[None]):
    """Refuse vectors of another model than the store's.

    The store's model is the one it recorded; a store without a record (older than the
    record, or without vectors yet) adopts the model of its vectors when they are all
    of one model. Raises EmbeddingModelMismatchError when that model is not ``model``.
    With ``record`` (a vector write follows) a store without a record records the model
    it adopted, else ``model`` with ``dim``. The runners put this op in front of every
    batch that writes or searches vectors."""

    model: str
    dim: int
    record: bool = False


@dataclass(frozen=True, slots=True)
class GetEmbeddingModel(Op[tuple[str, int] | None]):
    """The recorded (model, dimension), else the one adopted from the stored vectors
    when they are all of one model, else None."""


@dataclass(frozen=True, slots=True)
class SetEmbeddingModel(Op[None]):
    """Record the store's embedding model (``reembed`` switching it)."""

    model: str
    dim: int


@dataclass(frozen=True, slots=True)
class DropEmbeddings(Op[int]):
    """Delete every cached vector not made by model ``keep``. Returns the count."""

    keep: str


@dataclass(frozen=True, slots=True)
class PruneEmbeddings(Op[int]):
    """Drop cached vectors (and sparse terms) that no record refers to any more: at
    least those of the texts records let go of (deleted, purged, rewritten, their context
    dropped) since the last prune; with ``everything``, every vector no record holds,
    those no record ever held included (a read of all of them: 0.75 to 0.96 s at a million
    memories on SQLite). Returns the count of vectors."""

    everything: bool = False


# ---------------------------------------------------------------------------- sessions


@dataclass(frozen=True, slots=True)
class UpsertSession(Op[None]):
    """Create a session, or update its ``updated_at`` and metadata."""

    session: Session


@dataclass(frozen=True, slots=True)
class GetSession(Op[Session | None]):
    user_id: str
    session_id: str


@dataclass(frozen=True, slots=True)
class ListSessions(Op[list[Session]]):
    """The user's sessions ordered by session id, after the cursor, optionally only
    those last updated before ``updated_before``."""

    user_id: str
    after_id: str | None
    limit: int
    updated_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class AppendMessages(Op[list[Message]]):
    """Append messages to their session and return them with their sequence numbers.

    With ``assign_seq`` the store numbers them after the session's last message; without
    it (import) they keep their numbers and ones already present are left as they are.
    """

    messages: tuple[Message, ...]
    assign_seq: bool = True


@dataclass(frozen=True, slots=True)
class GetMessages(Op[list[Message]]):
    """A session's messages in order; with ``last_runs`` only those of the last N runs."""

    user_id: str
    session_id: str
    last_runs: int | None = None


@dataclass(frozen=True, slots=True)
class DeleteSessions(Op[int]):
    """Delete sessions with their messages, states and session-bound records (kinds in
    ``SESSION_BOUND_KINDS``: episodes, summaries), erasing those records' content from
    their history as :class:`RemoveRecords` does; other memories that name the session
    stay. Returns how many sessions were deleted."""

    user_id: str
    session_ids: tuple[str, ...]


# ---------------------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class GetState(Op[StateVersion | None]):
    """The newest version of a named state (or the given version), if any."""

    user_id: str
    session_id: str
    name: str
    version: int | None = None


@dataclass(frozen=True, slots=True)
class PutState(Op[None]):
    """Write a new state version.

    The current version must equal ``expected_version`` (0 when none exists) or the
    batch fails with ConflictError. ``None`` (import) inserts the version if absent.
    """

    state: StateVersion
    expected_version: int | None


@dataclass(frozen=True, slots=True)
class ListStateVersions(Op[list[StateVersion]]):
    """Every version of one named state, oldest first."""

    user_id: str
    session_id: str
    name: str


@dataclass(frozen=True, slots=True)
class ListStates(Op[list[StateVersion]]):
    """The newest version of each named state of a session whose name starts with prefix."""

    user_id: str
    session_id: str
    prefix: str = ""


# ---------------------------------------------------------------------------- jobs


@dataclass(frozen=True, slots=True)
class PutJob(Op[None]):
    """Insert or replace a job (named, like a record, by its user and id together).

    The stored job must be at ``expected_version`` (0: must not exist) or the batch fails
    with ConflictError. ``None`` (import) inserts it, or replaces an older version.
    """

    job: Job
    expected_version: int | None


@dataclass(frozen=True, slots=True)
class GetJob(Op[Job | None]):
    user_id: str
    job_id: str


@dataclass(frozen=True, slots=True)
class ListJobs(Op[list[Job]]):
    """Jobs ordered by id after the cursor; of one user or (``None``) of all users,
    optionally only those with one of ``statuses``. Ids are unique per user only, so
    the cursor pages one user's jobs."""

    user_id: str | None
    statuses: tuple[JobStatus, ...] = ()
    after_id: str | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class ClaimJob(Op[Job | None]):
    """Take the next job that is due and return it, now ``running``.

    Only the oldest unfinished job of each user can be claimed (jobs of one user run in
    order). It is due when it is ``pending`` with ``run_after <= now``, or ``running``
    with ``lease_until < now`` (its worker died). The claimed job gets one more attempt,
    ``lease_until``, ``updated_at = now`` and a new version. With ``user_id`` only that
    user's queue is considered. ``None`` when nothing is due.
    """

    now: datetime
    lease_until: datetime
    user_id: str | None = None


# ---------------------------------------------------------------------------- graph


@dataclass(frozen=True, slots=True)
class EntityDraft:
    """An entity as one memory names it, before it is resolved to a stored one.

    ``lookup`` are the keys tried in order (normalized names: ``"jon ross"``; a session's
    first name: ``"session:S:jon"``): the first one stored names the entity. With none
    stored, a new entity ``id`` is made with this ``name`` and ``type``. ``keys`` are
    then registered for the entity (where no other entity holds them); when ``keys[0]``
    (the draft's own name) is new to a found entity, ``name`` becomes one of its aliases."""

    id: str
    name: str
    type: EntityType
    lookup: tuple[str, ...]
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TripleDraft:
    """A typed relation a memory states (the memory manager's extraction): both ends are
    resolved as entity drafts are. ``exclusive``: its subject has one such object at a
    time, so the edge ends (``valid_to``) every other current edge of the subject with
    this predicate: a move supersedes the old home."""

    subject: EntityDraft
    predicate: str
    object: EntityDraft
    exclusive: bool = False


@dataclass(frozen=True, slots=True)
class MentionDraft:
    """The entities one memory names, in order (the first ``max_edges`` are linked);
    ``said`` is when the memory says it was so (its event time, else its creation): its
    co-occurrence edges are valid from then."""

    record_id: str
    session_id: str | None
    entities: tuple[EntityDraft, ...]
    said: datetime
    triples: tuple[TripleDraft, ...] = ()
    """Typed relations the memory states: edges ``rel:<subject>:<predicate>:<object>``
    valid from ``said``, their ends mentioned by the memory too."""


@dataclass(frozen=True, slots=True)
class IndexMentions(Op[None]):
    """Resolve each memory's entity drafts to the user's entities (making new ones),
    record the mentions, and link every two entities one memory names with a
    co-occurrence edge (:data:`~memlane.models.graph.MENTIONED_WITH`, id
    ``co:<lesser id>:<greater id>``, valid from the first memory's ``said``, created
    ``at``) whose sources gain the memory. Only the first ``max_edges`` distinct entities
    of a memory are linked. ``at`` is also when new entities are made or gain aliases.
    Then each item's typed triples are written (see :class:`TripleDraft`). A found entity
    of type ``name`` takes the more precise type a draft gives it."""

    user_id: str
    items: tuple[MentionDraft, ...]
    at: datetime
    max_edges: int = 12
    replace: tuple[str, ...] = ()
    """Memories whose text changed: what their text named before is taken back first —
    their mentions (but of the ends of the typed edges they state) and their place among
    the sources of co-occurrence edges — and, once the items are written, the edges and
    entities that nothing states any more go (ids of entities still named are kept)."""


@dataclass(frozen=True, slots=True)
class ListEntities(Op[list[Entity]]):
    """The user's entities by id after the cursor (merged ones left out); with ``ids``,
    those entities (merged ones too), in no order."""

    user_id: str
    ids: tuple[str, ...] = ()
    after_id: str | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class FindEntities(Op[dict[str, str]]):
    """For each of ``keys`` (normalized names and aliases) that an entity of the user
    holds, that entity's id."""

    user_id: str
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ListMentions(Op[list[Mention]]):
    """The user's mentions of these memories or of these entities (either may be empty),
    ordered by record id then entity id, at most ``limit``."""

    user_id: str
    record_ids: tuple[str, ...] = ()
    entity_ids: tuple[str, ...] = ()
    limit: int = 1000


@dataclass(frozen=True, slots=True)
class PutRelations(Op[None]):
    """Insert relations (by user and id); a stored one keeps its fields but gains the
    new one's sources, and its end of validity when it had none."""

    relations: tuple[Relation, ...]


@dataclass(frozen=True, slots=True)
class ListRelations(Op[list[Relation]]):
    """The user's relations with ``entity_id`` at either end (every relation with
    None), ordered by id, after the cursor; only current ones unless ``ended``. With
    ``as_of``, only those valid then (``valid_from <= as_of < valid_to``, an open end
    unbounded), ended since or not."""

    user_id: str
    entity_id: str | None = None
    after_id: str | None = None
    limit: int = 100
    ended: bool = True
    as_of: datetime | None = None


@dataclass(frozen=True, slots=True)
class EntityNeighbors(Op[list[tuple[str, int]]]):
    """(entity id, depth) of the entities reachable from ``entity_id`` over current
    relations (either direction) in at most ``depth`` edges, each at its least depth,
    nearest first then by id, at most ``limit``; the entity itself left out. With
    ``as_of``, over the relations valid then instead (see :class:`ListRelations`)."""

    user_id: str
    entity_id: str
    depth: int
    limit: int = 100
    as_of: datetime | None = None


@dataclass(frozen=True, slots=True)
class MergeEntities(Op[Entity | None]):
    """Merge entity ``source_id`` into ``target_id``: the target takes its keys (its
    names resolve to the target), mentions and relations (an edge that would then join
    the target to itself is dropped), and its name and aliases as aliases. The source
    stays, ``merged_into`` the target: its history. Returns the target (None when either
    is missing or already merged)."""

    user_id: str
    source_id: str
    target_id: str
    at: datetime


# ---------------------------------------------------------------------------- users


@dataclass(frozen=True, slots=True)
class ListUsers(Op[list[str]]):
    """Every user id that has anything stored, sorted."""


@dataclass(frozen=True, slots=True)
class DeleteUser(Op[dict[str, int]]):
    """Remove everything of one user, derived data included, and the user's audit trail
    (entries under ``user_id``, and under ``tombstone.user_id`` the tombstone of an
    earlier forgetting). Returns counts per table (``audit``: the entries removed).

    With ``tombstone`` the store then appends it, with ``counts`` set to the counts it
    returns: the one entry the forgotten user's trail keeps."""

    user_id: str
    tombstone: AuditEvent | None = None

    @property
    def trails(self) -> tuple[str, ...]:
        """The user ids whose audit entries go: the user's, and the tombstone's (the
        tombstone of an earlier forgetting is replaced)."""
        if self.tombstone is None or self.tombstone.user_id == self.user_id:
            return (self.user_id,)
        return (self.user_id, self.tombstone.user_id)


# ---------------------------------------------------------------------------- audit


@dataclass(frozen=True, slots=True)
class AppendAudit(Op[None]):
    """Append entries to users' audit trails; an entry whose id its user already has is
    left as it is. The trail is append-only: no op changes an entry, and only
    :class:`DeleteUser` removes any."""

    events: tuple[AuditEvent, ...]


@dataclass(frozen=True, slots=True)
class ListAudit(Op[list[AuditEvent]]):
    """A user's audit entries ordered by id, after the cursor id, at or after ``since``."""

    user_id: str
    after_id: str | None
    limit: int
    since: datetime | None = None


def embedding_model_to_record(
    op: CheckEmbeddingModel,
    recorded: tuple[str, int] | None,
    adopt: Callable[[], tuple[str, int] | None],
) -> tuple[str, int] | None:
    """What every store does for :class:`CheckEmbeddingModel`, given its ``recorded``
    model and ``adopt()`` (the model of its vectors when they are all of one model).
    Raises EmbeddingModelMismatchError; returns the (model, dim) to record, or None."""
    current = recorded if recorded is not None else adopt()
    if current is not None and current[0] != op.model:
        raise EmbeddingModelMismatchError(current[0], op.model)
    if recorded is None and op.record:
        return current if current is not None else (op.model, op.dim)
    return None


def guard_vectors(batch: Sequence[Op[Any]]) -> CheckEmbeddingModel | None:
    """The :class:`CheckEmbeddingModel` to run in front of ``batch``, or None when it
    neither writes (unstaged) nor searches vectors."""
    guard: CheckEmbeddingModel | None = None
    for op in batch:
        if isinstance(op, PutEmbeddings) and not op.staged and (op.items or op.keep):
            dim = len((op.items or op.keep)[0][1])
            return CheckEmbeddingModel(op.model, dim, record=True)
        if isinstance(op, VectorSearch) and guard is None:
            guard = CheckEmbeddingModel(op.model, len(op.vector))
    return guard


@runtime_checkable
class Store(Protocol):
    """A storage backend. Construction does no I/O; :meth:`setup` opens and migrates.

    Optional: a store whose reads gain from starting early, a batch of their own beside
    other work, sets ``reads_aside = True`` (PostgreSQL: a hybrid search's lexical read
    then runs while its query is embedded, on another connection). Its :meth:`batch`
    must then take calls from several threads at once. Without it, reads set aside
    (:class:`memlane.core.flow.ReadAside`) run in the batch that joins them."""

    url: str

    def setup(self) -> None:
        """Open connections and apply pending migrations. Idempotent."""
        ...

    def batch(self, ops: Sequence[Op[Any]]) -> list[Any]:
        """Run ``ops`` in one transaction; return one result per op. All or nothing."""
        ...

    async def abatch(self, ops: Sequence[Op[Any]]) -> list[Any]:
        """Async form of :meth:`batch`."""
        ...

    def close(self) -> None:
        """Release connections. The store may be set up again afterwards."""
        ...
