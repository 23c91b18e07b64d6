"""Agentic memory: tools an agent calls to add, update, forget and search memories
(``add_memory``, ``update_memory``, ``forget_memory``, ``search_memories``: the names the
MCP server uses; ``remember`` is the keyed fact of :meth:`Memory.remember`).

:class:`MemoryTools` is bound to one scope (user, and optionally agent and team) when it
is made; no tool takes a user id, so a model cannot reach another user's memories, and a
memory id from elsewhere is simply not found. Made for an agent, the tools see and change
that agent's memories and the user's shared ones, never another agent's: the one rule of
:mod:`memlane.access`, which API keys and MCP follow too. ``definitions`` are in the OpenAI tool
format (JSON schema parameters); ``execute`` runs one call and returns a JSON-ready dict —
errors come back as ``{"error": ...}`` for the model to read, never as a crash.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from memlane.access import Action, Grant, authorize, visible, visible_filters
from memlane.api import Memory
from memlane.errors import LLMError, MemlaneError, StoreError, ValidationError, no_memory
from memlane.models import Filters, MemoryKind, MemoryRecord, SearchHit, Trust, check_id

_KINDS = ["fact", "preference", "procedure"]

DEFINITIONS: dict[str, dict[str, Any]] = {
    "add_memory": {
        "description": "Store a new memory about the user: one self-contained fact or preference.",
        "parameters": {
            "type": "object",
            "properties": {
                "text": {"type": "string", "description": "The memory, one sentence"},
                "kind": {"type": "string", "enum": _KINDS, "default": "fact"},
                "topics": {"type": "array", "items": {"type": "string"}},
                "importance": {"type": "number", "minimum": 0, "maximum": 1},
            },
            "required": ["text"],
            "additionalProperties": False,
        },
    },
    "update_memory": {
        "description": (
            "Replace a memory that is no longer true or complete. The old one is kept in "
            "history as superseded."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "memory_id": {"type": "string"},
                "text": {"type": "string", "description": "The new memory text"},
                "reason": {"type": "string"},
            },
            "required": ["memory_id", "text"],
            "additionalProperties": False,
        },
    },
    "forget_memory": {
        "description": "Forget a memory (it can be restored by the application).",
        "parameters": {
            "type": "object",
            "properties": {"memory_id": {"type": "string"}, "reason": {"type": "string"}},
            "required": ["memory_id"],
            "additionalProperties": False,
        },
    },
    "search_memories": {
        "description": "Find the memories most relevant to a query.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string"},
                "limit": {"type": "integer", "minimum": 1, "maximum": 50, "default": 5},
            },
            "required": ["query"],
            "additionalProperties": False,
        },
    },
}


def found(hits: Sequence[SearchHit]) -> dict[str, Any]:
    """What a search tool answers an agent (here and in the MCP server): each hit's id,
    text, date, trust and score, best first."""
    return {
        "memories": [
            {
                "memory_id": h.record.id,
                "text": h.record.text,
                "date": f"{h.record.effective_time:%Y-%m-%d}",
                "trust": h.record.trust.value,
                "score": round(h.score, 4),
            }
            for h in hits
        ]
    }


def quarantined(record: MemoryRecord) -> dict[str, Any]:
    """What a tool that stored ``record`` adds to its answer when the memory was
    quarantined: the kinds found, so the agent knows it will not be recalled."""
    return {"quarantined": list(record.quarantine)} if record.quarantine else {}


class MemoryTools:
    """Memory tools for one scope. ``allow`` limits which tools exist."""

    def __init__(
        self,
        memory: Memory,
        *,
        user_id: str,
        agent_id: str | None = None,
        team: str | None = None,
        allow: tuple[str, ...] = tuple(DEFINITIONS),
    ) -> None:
        check_id("user_id", user_id)
        unknown = set(allow) - set(DEFINITIONS)
        if unknown:
            raise ValidationError(f"unknown tools {sorted(unknown)}; have {sorted(DEFINITIONS)}")
        self.memory = memory
        self.user_id = user_id
        self.agent_id = agent_id
        self.team = team
        self.allow = tuple(allow)
        agents = None if agent_id is None else (agent_id,)
        self.grant = Grant(None, users=(user_id,), agents=agents)
        """What the tools may touch, checked by :func:`memlane.access.authorize`."""

    @property
    def definitions(self) -> list[dict[str, Any]]:
        """The tools in OpenAI's ``tools`` format."""
        return [
            {"type": "function", "function": {"name": name, **DEFINITIONS[name]}}
            for name in self.allow
        ]

    def execute(self, name: str, arguments: str | Mapping[str, Any]) -> dict[str, Any]:
        """Run one tool call. ``arguments`` is the JSON string (or dict) the model sent."""
        if name not in self.allow:
            return {"error": f"unknown tool {name!r}"}
        try:
            args = json.loads(arguments) if isinstance(arguments, str) else dict(arguments)
            if not isinstance(args, dict):
                raise ValidationError("arguments must be a JSON object")
            return getattr(self, "_" + name)(**args)  # type: ignore[no-any-return]
        except json.JSONDecodeError as exc:
            return {"error": f"arguments are not valid JSON: {exc.msg}"}
        except (StoreError, LLMError) as exc:
            return {"error": "memory is unavailable; try again", "type": type(exc).__name__}
        except MemlaneError as exc:
            return {"error": str(exc), "type": type(exc).__name__}
        except RecursionError:
            return {"error": "arguments are nested too deeply"}
        except UnicodeError:
            return {"error": "arguments are not valid Unicode (lone surrogate)"}
        except (TypeError, ValueError) as exc:
            return {"error": f"bad arguments for {name}: {exc}"}

    # ------------------------------------------------------------------ tools

    def _add_memory(
        self,
        text: str,
        kind: str = "fact",
        topics: list[str] | None = None,
        importance: float = 0.5,
    ) -> dict[str, Any]:
        if kind not in _KINDS:
            raise ValidationError(f"kind must be one of {_KINDS}")
        scope = authorize(self.grant, Action.WRITE, self.user_id, self.agent_id)
        r = self.memory.add(
            text,
            user_id=scope.user_id,
            kind=MemoryKind(kind),
            topics=topics or (),
            importance=importance,
            agent_id=scope.agent_id,
            team=self.team,
            actor=f"agent:{self.agent_id or 'tool'}",
            trust=Trust.INFERRED,
        )
        return {"memory_id": r.id, "stored": r.text, **quarantined(r)}

    def _owned(self, memory_id: str) -> None:
        """The memory must be a fact, preference or procedure of this tool's team (when it
        has one) and visible to its agent; anything else is "not found" to the model."""
        scope = authorize(self.grant, Action.WRITE, self.user_id, self.agent_id)
        record = self.memory.get(memory_id, user_id=scope.user_id)
        if (
            record.kind.value not in _KINDS
            or (self.team is not None and record.team != self.team)
            or not visible(scope, record.agent_id)
        ):
            raise no_memory(memory_id, self.user_id)  # as if absent: nothing to tell apart

    def _update_memory(self, memory_id: str, text: str, reason: str = "") -> dict[str, Any]:
        self._owned(memory_id)
        new = self.memory.supersede(
            memory_id,
            text,
            user_id=self.user_id,
            reason=reason or "updated by the agent",
            actor=f"agent:{self.agent_id or 'tool'}",
            trust=Trust.INFERRED,
        )
        return {"memory_id": new.id, "replaces": memory_id, "stored": new.text, **quarantined(new)}

    def _forget_memory(self, memory_id: str, reason: str = "") -> dict[str, Any]:
        self._owned(memory_id)
        self.memory.delete(
            memory_id,
            user_id=self.user_id,
            reason=reason or "forgotten by the agent",
            actor=f"agent:{self.agent_id or 'tool'}",
        )
        return {"forgotten": memory_id}

    def _search_memories(self, query: str, limit: int = 5) -> dict[str, Any]:
        scope = authorize(self.grant, Action.READ, self.user_id, self.agent_id)
        f = visible_filters(scope, Filters(team=self.team))
        return found(self.memory.search(query, user_id=scope.user_id, limit=limit, filters=f))
