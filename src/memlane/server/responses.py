"""What the REST API answers: a model per memlane object a route returns, so the OpenAPI
document shows each body.

A route fills one from the core object's ``to_dict()`` with :func:`public`, and that is
where store user ids (``tenant::user``) become the tenant's: every field typed
:data:`PublicUser` maps itself, given the tenant in the validation context. Nothing else
is rewritten: metadata, state data, payloads and results are the caller's own data.
"""

from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo

from memlane.models import EntityType, HistoryAction, JobStatus, MemoryKind, Trust
from memlane.server.keys import public_user


def _public_user(stored: str, info: ValidationInfo) -> str:
    tenant = (info.context or {}).get("tenant")
    return stored if tenant is None else public_user(tenant, stored) or stored


def _public_snapshot(snapshot: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    user = snapshot.get("user_id")
    if not isinstance(user, str):
        return snapshot
    return {**snapshot, "user_id": _public_user(user, info)}


PublicUser = Annotated[str, AfterValidator(_public_user)]
"""A user id: the tenant's name for the user."""

Time = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
"""A time as memlane writes it (ISO 8601 with its offset)."""

UserData = dict[str, Any]
"""The caller's own JSON object, returned as stored."""

Snapshot = Annotated[
    dict[str, Any],
    AfterValidator(_public_snapshot),
    Field(description="The memory's fields after the change (as in MemoryOut)."),
]

_Model = TypeVar("_Model", bound=BaseModel)


def public(model: type[_Model], value: dict[str, Any], tenant: str) -> _Model:
    """``value`` (a memlane object's ``to_dict()``) as ``model``, with the user ids of
    ``tenant``: the one place store user ids become public ones."""
    return model.model_validate(value, context={"tenant": tenant})


class _Out(BaseModel):
    # Every field of the object, no other: a field the core adds fails loudly here
    # instead of vanishing from the answer.
    model_config = ConfigDict(extra="forbid")


class MemoryOut(_Out):
    """One memory (``Memory.get``)."""

    id: str
    user_id: PublicUser
    kind: MemoryKind
    text: str
    content_hash: str
    created_at: Time
    updated_at: Time
    version: int
    agent_id: str | None
    team: str | None
    session_id: str | None
    key: str | None
    topics: list[str]
    metadata: UserData
    importance: float
    event_at: Time | None
    valid_from: Time | None
    valid_to: Time | None
    superseded_by: str | None
    expires_at: Time | None
    deleted_at: Time | None
    access_count: int
    last_accessed_at: Time | None
    source_ids: list[str]
    actor: str | None
    context_hash: str | None
    periods: list[str] = Field(
        description="The periods the text names, resolved against the memory's date: "
        "ISO 8601 intervals '<start>/<end>' ('yesterday' said on 8 May 2023 is "
        "'2023-05-07T00:00:00.000000Z/2023-05-08T00:00:00.000000Z')."
    )
    trust: Trust = Field(
        description="Whose word the memory is: user (the user said it), inferred (the "
        "agent or a model), tool (tool or web content), imported."
    )
    quarantine: list[str] = Field(
        description="While the memory is quarantined, the kinds of instruction-like "
        "content found in it (instruction_override, role_play, prompt_leak, "
        "fake_system_prompt, fake_tool_call, hidden_text): it is not searched or put in "
        "a context until released. Empty otherwise."
    )


class MemoryPage(_Out):
    items: list[MemoryOut]
    next_cursor: str | None


class HistoryEventOut(_Out):
    """One recorded change of a memory."""

    id: str
    record_id: str
    user_id: PublicUser
    action: HistoryAction
    version: int
    at: Time
    actor: str | None
    reason: str | None
    snapshot: Snapshot | None


class HistoryOut(_Out):
    events: list[HistoryEventOut]


class HitOut(_Out):
    """A memory found by search, its score and (with ``explain``) how it was made."""

    record: MemoryOut
    score: float
    explanation: dict[str, Any] | None


class HitsOut(_Out):
    hits: list[HitOut]


class EntityOut(_Out):
    """One entity of a user's knowledge graph (``Memory.entities``)."""

    id: str
    user_id: PublicUser
    name: str
    type: EntityType
    aliases: list[str]
    created_at: Time | None
    updated_at: Time | None
    merged_into: str | None


class EntitiesOut(_Out):
    entities: list[EntityOut]


class RelationOut(_Out):
    """An edge between two entities, valid from ``valid_from`` to ``valid_to`` (None:
    still), with the ids of the memories that state it (``sources``)."""

    id: str
    user_id: PublicUser
    subject_id: str
    predicate: str
    object_id: str
    valid_from: Time | None
    valid_to: Time | None
    created_at: Time | None
    sources: list[str]


class RelationsOut(_Out):
    relations: list[RelationOut]


class NeighborOut(EntityOut):
    """An entity ``depth`` edges away."""

    depth: int


class NeighborsOut(_Out):
    neighbors: list[NeighborOut]


class MentionOut(_Out):
    """Memory ``record_id`` names entity ``entity_id``."""

    user_id: PublicUser
    entity_id: str
    record_id: str
    session_id: str | None


class MentionsOut(_Out):
    mentions: list[MentionOut]


class SessionOut(_Out):
    session_id: str
    user_id: PublicUser
    created_at: Time
    updated_at: Time
    agent_id: str | None
    team: str | None
    metadata: UserData


class SessionPage(_Out):
    items: list[SessionOut]
    next_cursor: str | None


class MessageOut(_Out):
    id: str
    user_id: PublicUser
    session_id: str
    run_id: str
    seq: int
    role: str
    content: str
    created_at: Time
    metadata: UserData


class RunOut(_Out):
    """The messages of one run, in order."""

    run_id: str
    messages: list[MessageOut]


class RunsOut(_Out):
    runs: list[RunOut]


class StateOut(_Out):
    """One version of a session's named state; ``data`` is the caller's, as stored."""

    user_id: PublicUser
    session_id: str
    name: str
    version: int
    data: UserData
    updated_at: Time


class StateHistoryOut(_Out):
    versions: list[StateOut]


class DeletedOut(_Out):
    deleted: int = Field(description="How many objects went with the session.")


class JobOut(_Out):
    """A background job. ``error`` names only the kind of a failure that is not
    memlane's own check (the machine's `memlane jobs` shows it whole)."""

    id: str
    user_id: PublicUser
    kind: str
    payload: UserData
    status: JobStatus
    created_at: Time
    updated_at: Time
    run_after: Time
    attempts: int
    max_attempts: int
    version: int
    lease_until: Time | None
    error: str | None
    result: UserData
    agent_id: str | None
    session_id: str | None


class JobsOut(_Out):
    jobs: list[JobOut]


class ContextOut(_Out):
    """A context block for a prompt, and what went into it."""

    text: str
    tokens: int
    budget: int
    breakdown: dict[str, int]
    ids: dict[str, list[str]]
    dropped: dict[str, int]


class AuditEventOut(_Out):
    """One entry of a user's audit trail: who read or changed the user's data, and which
    memories and sessions, never their content. A forgotten user's tombstone
    (``action`` ``forget_user``) names them by a keyed hash."""

    id: str
    user_id: PublicUser
    at: Time
    actor: str = Field(description="Who: an API key (api:<key id>), an MCP client, a process.")
    action: str = Field(description="The call, named as the Python API names it.")
    record_ids: list[str]
    session_ids: list[str]
    counts: dict[str, int]


class AuditPage(_Out):
    items: list[AuditEventOut]
    next_cursor: str | None


class UsersOut(_Out):
    users: list[str] = Field(description="The tenant's users the key reaches.")


class ForgottenOut(_Out):
    forgotten: str
    counts: dict[str, int]


class ImportedOut(_Out):
    imported: dict[str, int]


EXPORT_ROWS: dict[str, type[_Out]] = {
    "record": MemoryOut,
    "history": HistoryEventOut,
    "session": SessionOut,
    "message": MessageOut,
    "state": StateOut,
    "job": JobOut,
}
"""The model of each export row type's ``data`` (the header row has none)."""


def public_row(row: dict[str, Any], tenant: str) -> dict[str, Any]:
    """An export row (``{"type", "data"}``) naming users as ``tenant`` does, through
    the model of its type (:func:`public`)."""
    model = EXPORT_ROWS.get(row.get("type", ""))
    if model is None:
        return row
    return {**row, "data": public(model, row["data"], tenant).model_dump(mode="json")}
