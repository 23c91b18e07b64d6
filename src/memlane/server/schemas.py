"""What the REST API reads and how its errors are documented: request bodies, id
parameters, and the OpenAPI error responses of every route."""

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from memlane.models import Filters, MemoryKind

ID_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
"""An identifier: not blank, no control characters (what ``check_id`` accepts)."""

Id = Annotated[str, Field(min_length=1, max_length=256, pattern=ID_PATTERN)]
"""A user, agent, session, run or idempotency id in a body."""

Text = Annotated[
    str,
    Field(
        min_length=1,
        pattern=r"\S",
        description="Not blank, no NUL; at most 20,000 characters (the store's limit).",
    ),
]
JSONObject = Annotated[
    dict[str, Any],
    Field(description="A JSON object nested at most 64 levels deep, with no NUL characters."),
]


AS_OF = (
    "Time travel: only what was valid at this moment (a timezone-aware ISO 8601 time, "
    "e.g. 2024-03-01T00:00:00Z): begun by then, not superseded, deleted or expired by "
    "then. A time named in a query only boosts event time; this filters exactly."
)
AsOfQuery = Annotated[datetime | None, Query(description=AS_OF)]
"""The ``as_of`` query parameter of a listing or a history."""


def _path_id(what: str) -> Any:
    return Path(min_length=1, max_length=256, pattern=ID_PATTERN, description=what)


UserId = Annotated[str, _path_id("The user, as the key's tenant names them; no '/'.")]
MemoryId = Annotated[str, _path_id("A memory id.")]
SessionId = Annotated[str, _path_id("A session id.")]
JobId = Annotated[str, _path_id("A job id.")]
AgentQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=256,
        pattern=ID_PATTERN,
        description="The agent making the call: it sees its own and shared objects only. "
        "Required with an agent-limited key.",
    ),
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    """Every error answer."""

    error: str = Field(description="What went wrong, for a person.")
    type: str = Field(description="The error's kind, e.g. ValidationError, Forbidden.")
    details: list[dict[str, Any]] | None = Field(
        default=None, description="For invalid requests: where and what (at most 20)."
    )


WHY = {
    400: "The store or configuration cannot do this (e.g. an unsupported search recipe).",
    401: "Missing, invalid or revoked API key (`WWW-Authenticate: Bearer`).",
    403: "The key may not act for this user, as this agent, or write.",
    404: "No such object for this user (or not visible to the calling agent).",
    405: "Method not allowed; `Allow` lists the allowed ones.",
    409: "A compare-and-swap lost: the object changed since it was read (the current "
    "version differs from `expected_version`, or a concurrent write got there first).",
    413: "The request body is over the server's limit (`--max-body-bytes`).",
    422: "Invalid request: `details` says where and what.",
    501: "Learning needs a chat model and this server has none configured.",
    503: "The store or the language model is unavailable; retry later.",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses for error ``codes``, each an :class:`ErrorBody`."""
    return {code: {"model": ErrorBody, "description": WHY[code]} for code in codes}


V1_CODES = (400, 401, 403, 404, 413, 422, 503)
V1_ERRORS = errors(*V1_CODES)
"""What any route under /v1/users/{user_id} can answer besides success."""

JSON_ERRORS: dict[int | str, Any] = {
    code: {
        "description": WHY[code],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    for code in V1_CODES
}
"""V1_ERRORS for a route whose success is not JSON (given a model, FastAPI would file the
errors under the route's own media type)."""


class NDJSONResponse(Response):
    media_type = "application/x-ndjson"


NDJSON_CONTENT = {"application/x-ndjson": {"schema": {"type": "string", "description": (
    "One JSON object per line: a header row, then the user's records, history, sessions, "
    "runs, state and jobs, as `memlane export` writes them."
)}}}  # fmt: skip


class AddBody(_Body):
    text: Text
    kind: Literal["fact", "preference", "episode", "summary", "procedure"] = "fact"
    topics: list[str] = Field(default_factory=list)
    metadata: JSONObject = Field(default_factory=dict)
    importance: float = 0.5
    event_at: datetime | None = None
    ttl_seconds: float | None = Field(default=None, gt=0, le=100 * 365 * 86400)
    session_id: Id | None = None
    agent_id: Id | None = None
    idempotency_key: Id | None = None
    trust: Literal["user", "inferred", "tool", "imported"] = Field(
        default="user",
        description="Whose word this is: user (the user said it), inferred (the agent or "
        "a model concluded it), tool (tool or web content), imported.",
    )

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments of ``Memory.add`` this body gives (not the agent: the
        caller's scope decides who writes)."""
        fields = self.model_dump(exclude={"agent_id", "ttl_seconds", "kind"})
        ttl = None if self.ttl_seconds is None else timedelta(seconds=self.ttl_seconds)
        return {**fields, "kind": MemoryKind(self.kind), "ttl": ttl}


class UpdateBody(_Body):
    text: Text | None = None
    topics: list[str] | None = None
    metadata: JSONObject | None = None
    importance: float | None = None
    expected_version: int | None = None
    reason: str | None = None


class SupersedeBody(_Body):
    text: Text
    reason: str | None = None


class SearchBody(_Body):
    query: Text
    limit: int = Field(default=10, ge=1, le=1000)
    recipe: str = "hybrid"
    explain: bool = False
    kinds: list[str] = Field(default_factory=list)
    topics: list[str] = Field(default_factory=list)
    session_id: Id | None = None
    agent_id: Id | None = None
    include_superseded: bool = False
    as_of: datetime | None = Field(default=None, description=AS_OF)

    def filters(self) -> Filters:
        """What the search is limited to (before the caller's agent rule)."""
        return Filters(
            kinds=tuple(self.kinds),  # type: ignore[arg-type]  # Filters validates
            topics=tuple(self.topics),
            session_id=self.session_id,
            include_superseded=self.include_superseded,
            as_of=self.as_of,
        )


class MessageBody(_Body):
    role: str
    content: str


class MessagesBody(_Body):
    messages: list[MessageBody] = Field(min_length=1)
    agent_id: Id | None = None
    run_id: Id | None = None


class StateBody(_Body):
    data: JSONObject
    expected_version: int = Field(ge=0)
    name: Id = "default"


class ContextBody(_Body):
    budget: int = Field(ge=1, le=1_000_000)
    query: str | None = None
    session_id: Id | None = None
    last_runs: int = Field(default=3, ge=0, le=1000)
    max_memories: int = Field(default=20, ge=0, le=1000)
    tiers: list[str] | None = None


class LearnBody(_Body):
    messages: list[MessageBody] = Field(min_length=1)
    session_id: Id | None = None
    agent_id: Id | None = None
