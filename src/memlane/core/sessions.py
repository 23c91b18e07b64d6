"""Sessions: appended message history, versioned state, workflows and summaries."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from memlane.core import records
from memlane.core.base import BEFORE_ANY_EXPIRY, Core, MemoryInput
from memlane.core.flow import Flow, many, one
from memlane.core.summary import extractive_summary
from memlane.errors import ConflictError, NotFoundError, ValidationError, no_session
from memlane.ids import new_id
from memlane.models import (
    Filters,
    HistoryAction,
    MemoryKind,
    MemoryRecord,
    Message,
    Page,
    Run,
    Session,
    StateVersion,
    Trust,
    WorkflowState,
    check_count,
    check_id,
    trust_of_role,
)
from memlane.ports import store as ops
from memlane.ports.store import SESSION_BOUND_KINDS

DEFAULT_STATE = "default"
WORKFLOW_PREFIX = "workflow:"

MessageInput = Mapping[str, Any] | tuple[str, str]
"""A message as given: ``{"role": ..., "content": ..., "metadata": {...}}`` or (role, content)."""


# ------------------------------------------------------------------ history


def add_messages(
    core: Core,
    session_id: str,
    messages: Sequence[MessageInput],
    *,
    user_id: str,
    agent_id: str | None = None,
    team: str | None = None,
    run_id: str | None = None,
) -> Flow[Run]:
    """Append one run's messages to a session (created on first use). Returns the run
    as this call appended it: its messages, numbered after the session's last one.

    Each user and assistant message is also kept as an ``episode`` memory, searchable
    like any other: nothing said is lost to extraction. All of it is one transaction.
    An episode's trust follows its message's role (:func:`trust_of_role`). A message
    holding instruction-like content is handled by the scope's injection policy: by
    default it is kept as a quarantined episode whatever its role (so an operator sees
    it and can release it), and a context's recent conversation leaves it out until
    then; a refusing policy raises InjectionRefusedError and stores nothing.
    """
    check_id("user_id", user_id)
    check_id("session_id", session_id)
    check_id("run_id", run_id, required=False)
    if isinstance(messages, Mapping | str) or not messages:
        raise ValidationError("messages must be a non-empty list of messages")
    now = core.now()
    run = run_id or new_id()
    parsed = [_message(core, m, user_id, session_id, run, now) for m in messages]
    episodes = _episodes(core, parsed, agent_id, team, now)
    session = Session(session_id, user_id, now, now, agent_id=agent_id, team=team)
    extra: list[ops.Op[Any]] = [ops.UpsertSession(session), ops.AppendMessages(tuple(parsed))]
    if episodes:
        _, results = yield from core.insert_with(episodes, extra)
    else:
        results = yield from many(extra)
    # The store numbered what it appended: the run is built from that, not from a
    # read of the session (which grows with every call, under the write lock).
    appended: list[Message] = results[1]
    return Run(run, session_id, tuple(appended))


def _episodes(
    core: Core, messages: Sequence[Message], agent_id: str | None, team: str | None, now: Any
) -> list[MemoryRecord]:
    """The episode memories that keep what was said (user and assistant turns, by
    default), and every message the injection policy quarantines, whatever its role."""
    config = core.config
    out = []
    for m in messages:
        kept = config.record_episodes and m.role in config.episode_roles
        if kept or core.screen(m.user_id, m.content, "message"):
            out.append(core.new_record(m.user_id, _episode(m, agent_id, team, now), now))
    return out


def _episode(m: Message, agent_id: str | None, team: str | None, now: Any) -> MemoryInput:
    return MemoryInput(
        text=m.content,
        kind=MemoryKind.EPISODE,
        session_id=m.session_id,
        agent_id=agent_id,
        team=team,
        source_ids=(m.id,),
        actor=m.role,
        event_at=now,
        trust=trust_of_role(m.role),
    )


def _message(
    core: Core, raw: MessageInput, user_id: str, session_id: str, run_id: str, now: Any
) -> Message:
    role: Any
    content: Any
    metadata: Any
    if isinstance(raw, tuple) and len(raw) == 2:
        role, content, metadata = raw[0], raw[1], {}
    elif isinstance(raw, Mapping):
        unknown = set(raw) - {"role", "content", "metadata"}
        if unknown:
            raise ValidationError(f"unknown message fields: {sorted(unknown)}")
        role, content, metadata = raw.get("role"), raw.get("content"), raw.get("metadata", {})
    else:
        raise ValidationError(  # never the message itself: it may hold personal data
            f"a message is a mapping or (role, content), got a {type(raw).__name__}"
        )
    check_id("role", role)
    content = core.private(user_id, core.check_text(content, "message content"), "message")
    core.screen(user_id, content, "message")  # a refusing policy refuses before any write
    return Message(
        id=new_id(),
        user_id=user_id,
        session_id=session_id,
        run_id=run_id,
        seq=0,
        role=str(role),
        content=content,
        created_at=now,
        metadata=core.private_json(
            user_id, core.check_json(metadata or {}, "message metadata"), "message metadata"
        ),
    )


def get_history(
    core: Core, session_id: str, *, user_id: str, last_runs: int | None = None
) -> Flow[list[Run]]:
    """A session's runs in order; with ``last_runs`` only the newest N runs."""
    check_id("user_id", user_id)
    check_id("session_id", session_id)
    if last_runs is not None and (not isinstance(last_runs, int) or last_runs < 1):
        raise ValidationError("last_runs must be a positive integer")
    messages = yield from one(ops.GetMessages(user_id, session_id, last_runs))
    runs: dict[str, list[Message]] = {}
    for m in messages:
        runs.setdefault(m.run_id, []).append(m)
    return [Run(rid, session_id, tuple(ms)) for rid, ms in runs.items()]


def get_session(core: Core, session_id: str, *, user_id: str) -> Flow[Session]:
    """The session's record. Raises NotFoundError."""
    check_id("user_id", user_id)
    check_id("session_id", session_id)
    found = yield from one(ops.GetSession(user_id, session_id))
    if found is None:
        raise no_session(session_id, user_id)
    return found


def list_sessions(
    core: Core, *, user_id: str, cursor: str | None = None, limit: int = 50
) -> Flow[Page[Session]]:
    """One page of the user's sessions, ordered by session id."""
    check_id("user_id", user_id)
    limit = core.check_limit(limit)
    rows = yield from one(ops.ListSessions(user_id, cursor, limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(tuple(rows), rows[-1].session_id if more else None)


# ------------------------------------------------------------------ state


def get_state(
    core: Core, session_id: str, *, user_id: str, name: str = DEFAULT_STATE
) -> Flow[StateVersion]:
    """The newest version of a session's state; version 0 and ``{}`` if never set."""
    check_id("user_id", user_id)
    check_id("session_id", session_id)
    check_id("name", name)
    found = yield from one(ops.GetState(user_id, session_id, name))
    if found is None:
        return StateVersion(user_id, session_id, name, 0, {}, core.now())
    return found


def set_state(
    core: Core,
    session_id: str,
    data: Mapping[str, Any],
    *,
    user_id: str,
    expected_version: int,
    name: str = DEFAULT_STATE,
    agent_id: str | None = None,
) -> Flow[StateVersion]:
    """Write a new state version if the current one is ``expected_version`` (0 when
    none exists). Raises ConflictError when another writer got there first.
    ``agent_id`` is the agent a session created by this call belongs to."""
    check_id("user_id", user_id)
    check_id("session_id", session_id)
    check_id("name", name)
    check_id("agent_id", agent_id, required=False)
    if not isinstance(expected_version, int) or expected_version < 0:
        raise ValidationError("expected_version must be a non-negative integer")
    now = core.now()
    checked = core.private_json(user_id, core.check_json(data, "state"), "state")
    state = StateVersion(user_id, session_id, name, expected_version + 1, checked, now)
    session = Session(session_id, user_id, now, now, agent_id=agent_id)
    yield from many([ops.UpsertSession(session), ops.PutState(state, expected_version)])
    return state


def update_state(
    core: Core,
    session_id: str,
    changes: Mapping[str, Any] | Callable[[dict[str, Any]], Mapping[str, Any]],
    *,
    user_id: str,
    name: str = DEFAULT_STATE,
    retries: int = 10,
) -> Flow[StateVersion]:
    """Merge ``changes`` into the state (or apply a function to a copy of it), retrying
    the compare-and-swap when another writer interleaves. Returns the written version."""
    check_count("retries", retries, minimum=0)
    for _ in range(retries + 1):
        current = yield from get_state(core, session_id, user_id=user_id, name=name)
        data = dict(current.data)
        data = dict(changes(data)) if callable(changes) else {**data, **changes}
        try:
            return (yield from set_state(core,
                session_id, data, user_id=user_id, name=name,
                expected_version=current.version,
            ))  # fmt: skip
        except ConflictError:
            continue
    raise ConflictError(
        f"state {name!r} kept changing under {retries + 1} attempts", expected=None, actual=None
    )


def state_history(
    core: Core, session_id: str, *, user_id: str, name: str = DEFAULT_STATE
) -> Flow[list[StateVersion]]:
    """Every version of a session's state, oldest first."""
    check_id("user_id", user_id)
    check_id("session_id", session_id)
    return (yield from one(ops.ListStateVersions(user_id, session_id, name)))


# ------------------------------------------------------------------ workflows


def save_workflow(
    core: Core,
    workflow_id: str,
    *,
    user_id: str,
    session_id: str,
    step: str,
    data: Mapping[str, Any] | None = None,
    status: str = "running",
    expected_version: int,
) -> Flow[WorkflowState]:
    """Checkpoint a multi-step process (compare-and-swap on ``expected_version``)."""
    check_id("workflow_id", workflow_id)
    check_id("step", step)
    check_id("status", status)
    payload = {"step": step, "status": status, "data": dict(data or {})}
    state = yield from set_state(core,
        session_id, payload, user_id=user_id, name=WORKFLOW_PREFIX + workflow_id,
        expected_version=expected_version,
    )  # fmt: skip
    return _workflow(state)


def load_workflow(
    core: Core, workflow_id: str, *, user_id: str, session_id: str
) -> Flow[WorkflowState | None]:
    """The last checkpoint of a workflow, or None if it never saved one."""
    check_id("workflow_id", workflow_id)
    state = yield from get_state(
        core, session_id, user_id=user_id, name=WORKFLOW_PREFIX + workflow_id
    )
    return None if state.version == 0 else _workflow(state)


def list_workflows(core: Core, session_id: str, *, user_id: str) -> Flow[list[WorkflowState]]:
    """The last checkpoint of every workflow of a session."""
    check_id("user_id", user_id)
    check_id("session_id", session_id)
    states = yield from one(ops.ListStates(user_id, session_id, WORKFLOW_PREFIX))
    return [_workflow(s) for s in states]


# ------------------------------------------------------------------ summaries


def summarize_session(
    core: Core,
    session_id: str,
    *,
    user_id: str,
    max_sentences: int = 5,
    max_chars: int = 1200,
) -> Flow[MemoryRecord]:
    """Write a summary of the session's messages (extractive) as a ``summary`` memory,
    superseding the previous summary. Returns it. Raises NotFoundError for a session
    without messages (quarantined ones do not count: see :func:`summarizable`)."""
    messages = yield from summarizable(core, session_id, user_id=user_id)
    if not messages:
        raise NotFoundError(
            f"session {session_id!r} of user", user_id=user_id, after=" has no messages"
        )
    text = extractive_summary(
        [(m.role, m.content) for m in messages],
        max_sentences=max_sentences,
        max_chars=max_chars,
    )
    return (yield from store_summary(core, session_id, user_id, text, messages, "extractive"))


def store_summary(
    core: Core,
    session_id: str,
    user_id: str,
    text: str,
    messages: Sequence[Message],
    method: str,
    extra: Mapping[str, Any] | None = None,
) -> Flow[MemoryRecord]:
    """Store ``text`` as the session's summary (made by ``method``, with ``extra``
    metadata), superseding the previous one. Returns the stored summary."""
    # A quarantined summary is the session's summary too: it is superseded, not doubled.
    previous = yield from get_summary(core, session_id, user_id=user_id, include_quarantined=True)
    meta = {"covers_until_seq": messages[-1].seq, "method": method, **(extra or {})}
    if previous is not None:
        return (yield from records.supersede(
            core, previous.id, text, user_id=user_id, metadata=meta,
            reason="session summarized again",
        ))  # fmt: skip
    # The summary quotes the session: it belongs to the session's agent (None: shared),
    # so no other agent reads a session through its summary (memlane.access).
    session = yield from one(ops.GetSession(user_id, session_id))
    item = MemoryInput(
        text=text,
        kind=MemoryKind.SUMMARY,
        session_id=session_id,
        agent_id=None if session is None else session.agent_id,
        metadata=meta,
        source_ids=tuple(m.id for m in messages),
        actor="memlane",
        trust=Trust.INFERRED,
    )
    (record,) = yield from core.insert([core.new_record(user_id, item, core.now())])
    return record


def get_summary(
    core: Core, session_id: str, *, user_id: str, include_quarantined: bool = False
) -> Flow[MemoryRecord | None]:
    """The session's current summary, or None (also when it is quarantined, unless
    ``include_quarantined``)."""
    check_id("user_id", user_id)
    check_id("session_id", session_id)
    f = Filters(
        kinds=(MemoryKind.SUMMARY,),
        session_id=session_id,
        include_quarantined=include_quarantined,
    )
    rows = yield from one(ops.ListRecords(user_id, f, core.now(), None, 1, descending=True))
    return rows[0] if rows else None


def summarizable(core: Core, session_id: str, *, user_id: str) -> Flow[list[Message]]:
    """The session's messages in order, less those :func:`withheld`: what a summary is
    made of."""
    runs = yield from get_history(core, session_id, user_id=user_id)
    held = yield from withheld(core, session_id, user_id=user_id)
    return [m for run in runs for m in run.messages if m.id not in held]


def withheld(core: Core, session_id: str, *, user_id: str) -> Flow[set[str]]:
    """Ids of the session's messages whose episode is quarantined: left out of a
    context's recent conversation and of summaries until the episode is released."""
    f = Filters(
        kinds=(MemoryKind.EPISODE,),
        session_id=session_id,
        quarantined_only=True,
        include_deleted=True,
        include_superseded=True,
    )
    rows = yield from one(ops.ListRecords(user_id, f, BEFORE_ANY_EXPIRY, None, 2**62))
    return {source for r in rows for source in r.source_ids}


# ------------------------------------------------------------------ cleanup


def delete_session(core: Core, session_id: str, *, user_id: str) -> Flow[int]:
    """Delete one session: messages, state, workflows, episodes and summary. Returns 1
    if it existed, else 0. The episodes' and summary's history keeps its events but
    not their content. The user's other memories stay."""
    check_id("user_id", user_id)
    check_id("session_id", session_id)
    return (yield from _delete_sessions(core, user_id, (session_id,)))


def delete_sessions(
    core: Core, *, user_id: str, older_than: Any = None, page_size: int = 500
) -> Flow[int]:
    """Delete all of a user's sessions, or those last updated before ``older_than``.
    Returns how many were deleted."""
    check_id("user_id", user_id)
    if older_than is not None and (not hasattr(older_than, "tzinfo") or older_than.tzinfo is None):
        raise ValidationError("older_than must be a timezone-aware datetime")
    check_count("page_size", page_size)
    deleted = 0
    while True:
        rows = yield from one(ops.ListSessions(user_id, None, page_size, older_than))
        if not rows:
            return deleted
        deleted += yield from _delete_sessions(core, user_id, tuple(s.session_id for s in rows))


def _delete_sessions(core: Core, user_id: str, session_ids: tuple[str, ...]) -> Flow[int]:
    """Delete sessions in one batch: the removal of each episode and summary is
    recorded in its history (``delete``, reason "session deleted"), and vectors no
    memory uses any more are pruned."""
    now = core.now()
    gone: list[MemoryRecord] = []
    for sid in session_ids:
        f = Filters(
            kinds=tuple(SESSION_BOUND_KINDS),
            session_id=sid,
            include_superseded=True,
            include_deleted=True,
            include_quarantined=True,
        )
        gone += yield from one(ops.ListRecords(user_id, f, BEFORE_ANY_EXPIRY, None, 10**9))
    events = core.removal_events(gone, HistoryAction.DELETE, now, "session deleted")
    done = yield from many(
        [
            ops.AppendHistory(events),
            ops.DeleteSessions(user_id, session_ids),
            ops.PruneEmbeddings(),
        ]
    )
    return int(done[1])


def _workflow(state: StateVersion) -> WorkflowState:
    data = state.data
    return WorkflowState(
        workflow_id=state.name[len(WORKFLOW_PREFIX) :],
        session_id=state.session_id,
        step=str(data.get("step")),
        status=str(data.get("status")),
        data=dict(data.get("data") or {}),
        version=state.version,
        updated_at=state.updated_at,
    )
