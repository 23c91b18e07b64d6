"""MemlaneTools: agentic memory for Agno agents, always for the run's user."""

from __future__ import annotations

import json
import logging
from typing import Any

from agno.run.base import RunContext
from agno.tools.toolkit import Toolkit

from memlane.api import Memory
from memlane.errors import MemlaneError
from memlane.integrations.agno._scope import resolve_user
from memlane.manager.tools import MemoryTools
from memlane.models import check_count, check_id

log = logging.getLogger(__name__)

TOOL_NAMES = (
    "search_memories",
    "add_memory",
    "update_memory",
    "forget_memory",
    "remember",
    "recall",
    "get_session_state",
    "update_session_state",
)


class MemlaneTools(Toolkit):
    """An Agno toolkit over memlane: search, add, update and forget memories, keyed facts
    (``remember`` / ``recall``) and the session's memlane state.

    The user is the run's (``agent.run(..., user_id=...)``), read from Agno's run
    context on every call; no tool takes a user id, so the model cannot choose one. A run
    without a user gets an error (or memlane's anonymous scope with ``anonymous=True``).
    With ``team``, memories are written to and searched in that team's scope of the user:
    agents sharing the name share the memories. With ``agent_id``, they are that agent's
    (plus the user's shared ones), as :mod:`memlane.access` defines. ``include_tools`` /
    ``exclude_tools`` pick tools (names in ``TOOL_NAMES``). Tool answers are JSON; a
    memlane error comes back as ``{"error": ...}`` for the model to read.
    """

    def __init__(
        self,
        memory: Memory,
        *,
        team: str | None = None,
        agent_id: str | None = None,
        anonymous: bool = False,
        search_limit: int = 5,
        name: str = "memlane",
        include_tools: list[str] | None = None,
        exclude_tools: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        check_id("team", team, required=False)
        check_id("agent_id", agent_id, required=False)
        self.memory = memory
        self.team = team
        self.agent_id = agent_id
        self.anonymous = anonymous
        self.search_limit = check_count("search_limit", search_limit)
        tools = [getattr(self, n) for n in TOOL_NAMES]
        super().__init__(
            name=name, tools=tools, include_tools=include_tools, exclude_tools=exclude_tools,
            **kwargs,
        )  # fmt: skip

    # ------------------------------------------------------------------ plumbing

    def _user(self, run_context: RunContext) -> str:
        return resolve_user(run_context.user_id, anonymous=self.anonymous, what="MemlaneTools")

    def _call(self, run_context: RunContext, tool: str, args: dict[str, Any]) -> str:
        """Run one memlane MemoryTools call bound to the run's user and this scope."""
        try:
            bound = MemoryTools(
                self.memory, user_id=self._user(run_context), agent_id=self.agent_id,
                team=self.team,
            )  # fmt: skip
        except MemlaneError as exc:
            log.warning("MemlaneTools.%s refused: %s", tool, exc)
            return json.dumps({"error": str(exc), "type": type(exc).__name__})
        return json.dumps(bound.execute(tool, args), ensure_ascii=False, default=str)

    def _guarded(self, run_context: RunContext, work: Any) -> str:
        try:
            return json.dumps(work(self._user(run_context)), ensure_ascii=False, default=str)
        except MemlaneError as exc:
            return json.dumps({"error": str(exc), "type": type(exc).__name__})

    # ------------------------------------------------------------------ tools

    def search_memories(self, run_context: RunContext, query: str, limit: int = 5) -> str:
        """Search what you remember about the user (facts, preferences, past conversation).

        Args:
            query: What to look for, in a few words or a question.
            limit: How many memories to return (1-50).

        Returns:
            JSON with the matching memories, best first, each with its memory_id.
        """
        return self._call(run_context, "search_memories", {"query": query, "limit": limit})

    def add_memory(
        self, run_context: RunContext, text: str, topics: list[str] | None = None
    ) -> str:
        """Store a new memory about the user: one self-contained fact or preference.

        Args:
            text: The memory, one sentence (e.g. "Prefers window seats").
            topics: Optional topics, e.g. ["travel"].

        Returns:
            JSON with the new memory_id.
        """
        return self._call(run_context, "add_memory", {"text": text, "topics": topics or []})

    def update_memory(
        self, run_context: RunContext, memory_id: str, text: str, reason: str = ""
    ) -> str:
        """Replace a memory that is no longer true or complete (the old one stays in history).

        Args:
            memory_id: The id of the memory to replace (from search_memories).
            text: The new memory text.
            reason: Why it changed.

        Returns:
            JSON with the new memory_id.
        """
        args = {"memory_id": memory_id, "text": text, "reason": reason}
        return self._call(run_context, "update_memory", args)

    def forget_memory(self, run_context: RunContext, memory_id: str, reason: str = "") -> str:
        """Forget a memory (the application can restore it).

        Args:
            memory_id: The id of the memory to forget (from search_memories).
            reason: Why it should be forgotten.

        Returns:
            JSON confirming what was forgotten.
        """
        return self._call(run_context, "forget_memory", {"memory_id": memory_id, "reason": reason})

    def remember(self, run_context: RunContext, key: str, value: str) -> str:
        """Set a keyed fact about the user (a setting or exact value), replacing the old value.

        Args:
            key: The name of the fact, e.g. "timezone".
            value: Its value, e.g. "Europe/Paris".

        Returns:
            JSON with the key and its stored value.
        """

        def work(user: str) -> dict[str, Any]:
            record = self.memory.remember(key, value, user_id=user, actor="agent")
            return {"key": key, "value": record.metadata.get("value"), "memory_id": record.id}

        return self._guarded(run_context, work)

    def recall(self, run_context: RunContext, key: str) -> str:
        """Read a keyed fact about the user.

        Args:
            key: The name of the fact, e.g. "timezone".

        Returns:
            JSON with the value, or null if it was never set.
        """
        return self._guarded(
            run_context, lambda user: {"key": key, "value": self.memory.recall(key, user_id=user)}
        )

    def get_session_state(self, run_context: RunContext) -> str:
        """Read this conversation's saved state (a JSON object, versioned by memlane).

        Returns:
            JSON with the state and its version.
        """

        def work(user: str) -> dict[str, Any]:
            state = self.memory.get_state(run_context.session_id, user_id=user)
            return {"version": state.version, "state": dict(state.data)}

        return self._guarded(run_context, work)

    def update_session_state(self, run_context: RunContext, changes: dict[str, Any]) -> str:
        """Merge changes into this conversation's saved state (other keys stay).

        Args:
            changes: The keys to set, e.g. {"step": "confirm"}.

        Returns:
            JSON with the new state and its version.
        """

        def work(user: str) -> dict[str, Any]:
            state = self.memory.update_state(run_context.session_id, changes, user_id=user)
            return {"version": state.version, "state": dict(state.data)}

        return self._guarded(run_context, work)
