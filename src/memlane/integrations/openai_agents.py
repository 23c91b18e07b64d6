"""memlane for the OpenAI Agents SDK: a session kept in memlane, and memory tools.

``MemlaneSession(session_id, memory, user_id=...)`` implements the SDK's ``Session``
protocol on memlane session history, so ``Runner.run(agent, text, session=...)`` keeps its
conversation in memlane. Each ``add_items`` call appends one memlane run; each item is one
message whose metadata holds the exact item (``metadata["agents_item"]``), so every item
type (messages, function calls and outputs, reasoning, ...) comes back exactly as given.
The message's content is the item's text (or a short rendering of a call), so user and
assistant text is also a searchable episode, like any memlane conversation.

``pop_item`` never rewrites history: the popped message's id is added, by compare-and-swap,
to the session state named :data:`POPPED_STATE`, and its episode is deleted (recorded).
``clear_session`` is :meth:`memlane.Memory.delete_session`. Messages appended to the same
session through memlane's own API come back as ``{"role", "content"}`` messages.

``memory_tools(memory, user_id=...)`` gives memlane's agent tools
(:class:`memlane.manager.tools.MemoryTools`) as SDK function tools, bound to one user.

Needs the extra: ``pip install 'memlane[openai-agents]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from memlane.errors import require_extra

require_extra("openai-agents", "memlane.integrations.openai_agents", "agents")

from agents import FunctionTool, RunContextWrapper, TResponseInputItem
from agents.memory import SessionSettings
from agents.memory.session_settings import coerce_session_settings, resolve_session_limit

from memlane.api import AsyncMemory, Memory
from memlane.errors import ConflictError, NotFoundError, ValidationError
from memlane.manager.tools import DEFINITIONS, MemoryTools
from memlane.models import Filters, MemoryKind, Message, check_id

__all__ = ["ITEM_KEY", "POPPED_STATE", "MemlaneSession", "memory_tools"]

ITEM_KEY = "agents_item"
"""The message metadata key holding the exact SDK item."""

POPPED_STATE = "openai-agents.popped"
"""The session state (by name) listing the ids of popped messages."""

_PLAIN_ROLES = frozenset({"user", "assistant", "system", "developer"})
_POP_ATTEMPTS = 20


class MemlaneSession:
    """The Agents SDK's ``Session`` on memlane session history of one user.

    ``memory`` is a :class:`~memlane.Memory` (its calls run in a worker thread) or an
    :class:`~memlane.AsyncMemory`. ``user_id`` is required: use ``"anonymous"`` for the
    explicit anonymous scope. ``session_settings`` (or a dict) gives the default ``limit``
    of :meth:`get_items`, as for the SDK's own sessions.
    """

    session_settings: SessionSettings | None

    def __init__(
        self,
        session_id: str,
        memory: Memory | AsyncMemory,
        *,
        user_id: str,
        agent_id: str | None = None,
        session_settings: SessionSettings | Mapping[str, Any] | None = None,
    ) -> None:
        check_id("session_id", session_id)
        check_id("user_id", user_id)
        check_id("agent_id", agent_id, required=False)
        if not isinstance(memory, Memory | AsyncMemory):
            raise ValidationError(f"memory must be a Memory or AsyncMemory, got {memory!r}")
        self.session_id = session_id
        self.memory = memory
        self.user_id = user_id
        self.agent_id = agent_id
        self.session_settings = (
            SessionSettings()
            if session_settings is None
            else coerce_session_settings(cast(Any, session_settings))
        )

    def __repr__(self) -> str:
        return f"MemlaneSession({self.session_id!r}, user_id={self.user_id!r})"

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call a memory method, awaiting it (AsyncMemory) or in a thread (Memory)."""
        fn: Callable[..., Any] = getattr(self.memory, method)
        if isinstance(self.memory, AsyncMemory):
            return await fn(*args, **kwargs)
        return await asyncio.to_thread(fn, *args, **kwargs)

    # ------------------------------------------------------------------ protocol

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The session's items in order; with ``limit`` (or the settings' limit) only the
        newest N. ``limit=0`` gives ``[]``. Raises ValidationError for a negative limit."""
        n = resolve_session_limit(limit, self.session_settings)
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            raise ValidationError(f"limit must be a non-negative integer, got {n!r}")
        if n == 0:
            return []
        popped = await self._popped()
        messages = await self._tail(n, popped)
        return [_to_item(m) for m in messages]

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append ``items`` as one memlane run (one transaction). An item that is not a
        JSON object with a ``type`` or ``role``, or is larger than the store's metadata
        limit, raises ValidationError and nothing is stored."""
        if not items:
            return
        if isinstance(items, Mapping) or not isinstance(items, Sequence):
            raise ValidationError("items must be a list of items")
        limit = self.memory.core.config.max_text_chars
        messages = [_to_message(item, limit) for item in items]
        await self._call(
            "add_messages",
            self.session_id,
            messages,
            user_id=self.user_id,
            agent_id=self.agent_id,
        )

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove and return the newest item, or None when the session is empty. The
        removal is recorded (see the module docstring); concurrent pops each get their own
        item. Raises ConflictError if other writers keep winning the race."""
        lost: ConflictError | None = None
        for _ in range(_POP_ATTEMPTS):
            state = await self._call(
                "get_state", self.session_id, user_id=self.user_id, name=POPPED_STATE
            )
            popped = list(state.data.get("message_ids", []))
            newest = await self._tail(1, frozenset(popped))
            if not newest:
                return None
            message = newest[0]
            try:
                await self._call(
                    "set_state",
                    self.session_id,
                    {"message_ids": [*popped, message.id]},
                    user_id=self.user_id,
                    expected_version=state.version,
                    name=POPPED_STATE,
                    agent_id=self.agent_id,
                )
            except ConflictError as exc:
                lost = exc  # another pop (or a clear) won; look again
                continue
            await self._forget_episode(message.id)
            return _to_item(message)
        raise ConflictError(
            f"pop_item on session {self.session_id!r} kept losing to other writers",
            expected=lost.expected if lost else None,
            actual=lost.actual if lost else None,
        ) from lost

    async def clear_session(self) -> None:
        """Delete the session in memlane: its messages, state and episodes (the episodes'
        history keeps its events, not their words)."""
        await self._call("delete_session", self.session_id, user_id=self.user_id)

    # ------------------------------------------------------------------ helpers

    async def _popped(self) -> frozenset[str]:
        state = await self._call(
            "get_state", self.session_id, user_id=self.user_id, name=POPPED_STATE
        )
        return frozenset(state.data.get("message_ids", []))

    async def _tail(self, n: int | None, popped: frozenset[str]) -> list[Message]:
        """The newest ``n`` live messages (all with None), oldest first. Reads the last
        runs only, doubling how many until enough live messages are found."""
        runs_wanted = n
        while True:
            runs = await self._call(
                "get_history", self.session_id, user_id=self.user_id, last_runs=runs_wanted
            )
            live = [
                m
                for run in runs
                for m in run.messages
                if m.id not in popped and (ITEM_KEY in m.metadata or m.role in _PLAIN_ROLES)
            ]
            if n is None or runs_wanted is None:
                return live if n is None else live[-n:]
            if len(live) >= n or len(runs) < runs_wanted:
                return live[-n:]
            runs_wanted *= 2

    async def _forget_episode(self, message_id: str) -> None:
        """Delete the episode made from a popped message, so it is not recalled."""
        filters = Filters(kinds=(MemoryKind.EPISODE,), session_id=self.session_id)
        cursor = None
        while True:
            page = await self._call(
                "list", user_id=self.user_id, filters=filters, cursor=cursor, limit=50
            )
            for record in page.items:
                if message_id in record.source_ids:
                    with contextlib.suppress(NotFoundError):  # deleted meanwhile
                        await self._call(
                            "delete", record.id, user_id=self.user_id, reason="item popped"
                        )
                    return
            cursor = page.next_cursor
            if cursor is None:
                return


# ---------------------------------------------------------------------- items


def _to_message(item: object, max_chars: int) -> dict[str, Any]:
    """The memlane message for one SDK item: role and text for search (cut at
    ``max_chars``: the exact item is in the metadata), the item in metadata."""
    if not isinstance(item, Mapping):
        raise ValidationError(f"an item must be a mapping, got {type(item).__name__}")
    kind = item.get("type")
    role = item.get("role")
    text = _item_text(item)[:max_chars]
    if (kind in (None, "message")) and isinstance(role, str) and text.strip():
        label = role
    elif isinstance(kind, str) and kind.strip():
        label = kind
    elif isinstance(role, str) and role.strip():
        label = f"{role}-message"  # a message without text (an image, a file)
    else:
        raise ValidationError(f"an item needs a 'type' or a 'role': {dict(item)!r}"[:300])
    return {
        "role": label,
        "content": text if text.strip() else f"[{label}]",
        "metadata": {ITEM_KEY: dict(item)},
    }


def _item_text(item: Mapping[str, Any]) -> str:
    """The searchable text of an item: a message's text, a call's name and arguments, an
    output's text; empty when it has none."""
    content = item.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_part_text(p) for p in content if _part_text(p))
    if item.get("type") == "function_call":
        return f"{item.get('name', '')}({item.get('arguments', '')})"
    output = item.get("output")
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "\n".join(_part_text(p) for p in output if _part_text(p))
    return ""


def _part_text(part: object) -> str:
    if isinstance(part, Mapping):
        for key in ("text", "refusal"):
            value = part.get(key)
            if isinstance(value, str):
                return value
    return ""


def _to_item(message: Message) -> TResponseInputItem:
    """The SDK item a memlane message holds, or a plain message for one written through
    memlane's own API."""
    item = message.metadata.get(ITEM_KEY)
    if isinstance(item, dict):
        return cast(TResponseInputItem, item)
    return cast(TResponseInputItem, {"role": message.role, "content": message.content})


# ---------------------------------------------------------------------- tools


def memory_tools(
    memory: Memory,
    *,
    user_id: str,
    agent_id: str | None = None,
    team: str | None = None,
    allow: tuple[str, ...] = tuple(DEFINITIONS),
) -> list[FunctionTool]:
    """memlane's agent tools (``search_memories``, ``add_memory``, ``update_memory``,
    ``forget_memory``; ``allow`` picks) as SDK function tools for one user (and
    optionally agent and team), fixed here: no tool takes a user id. A tool's result is
    JSON text; a failed call answers ``{"error": ...}`` for the model to read."""
    tools = MemoryTools(memory, user_id=user_id, agent_id=agent_id, team=team, allow=allow)
    return [_function_tool(tools, d["function"]) for d in tools.definitions]


def _function_tool(tools: MemoryTools, spec: Mapping[str, Any]) -> FunctionTool:
    name = str(spec["name"])

    async def invoke(ctx: RunContextWrapper[Any], arguments: str) -> str:
        result = await asyncio.to_thread(tools.execute, name, arguments or "{}")
        return json.dumps(result, ensure_ascii=False)

    return FunctionTool(
        name=name,
        description=str(spec["description"]),
        params_json_schema=dict(spec["parameters"]),
        on_invoke_tool=invoke,
        strict_json_schema=False,  # memlane's schemas have optional fields and defaults
    )
