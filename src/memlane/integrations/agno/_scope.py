"""Whose memory an Agno call touches, and how Agno's documents are kept in memlane.

Agno leaves ``user_id`` unset (``None``) when an agent runs without one, and its memory
manager then writes to a user it calls ``"default"``: one shared bucket nobody chose.
memlane never defaults a user silently, so both (and ``""``) count as *no user* here:
refused with :class:`MissingUserError`, unless the
:class:`~memlane.integrations.agno.MemlaneDb` was made with ``anonymous=True``, which
maps them to memlane's explicit anonymous scope.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from memlane.api import Memory
from memlane.errors import ConflictError, UnsupportedError, ValidationError
from memlane.models import ANONYMOUS_USER

AGNO_UNSET_USER = "default"
"""The user id Agno's memory manager substitutes when none was given."""


class MissingUserError(ValidationError):
    """An Agno call came without a user (``user_id`` None, ``""`` or Agno's
    ``"default"``) and the database was not made with ``anonymous=True``; nothing was
    read or written."""


class UnsupportedByMemlaneError(UnsupportedError, NotImplementedError):
    """An Agno database feature memlane does not keep (metrics, evals, knowledge,
    traces, learnings ...). Also a ``NotImplementedError``, which Agno treats as "this
    adapter lacks the feature"."""


def resolve_user(user_id: str | None, *, anonymous: bool, what: str) -> str:
    """The memlane user of an Agno ``user_id``: the same id, or the anonymous scope.
    Raises MissingUserError for no user when anonymous use is off."""
    if user_id is None or user_id == AGNO_UNSET_USER or user_id == "":
        if anonymous:
            return ANONYMOUS_USER
        raise MissingUserError(
            f"{what} needs a user: Agno gave {user_id!r}. Pass user_id=... to the agent or "
            "run, or make MemlaneDb(memory, anonymous=True) to use memlane's explicit "
            f"anonymous scope ({ANONYMOUS_USER!r})"
        )
    return user_id


def unsupported(feature: str, hint: str = "") -> UnsupportedByMemlaneError:
    """The error for an Agno feature memlane does not keep."""
    tail = f"; {hint}" if hint else ""
    return UnsupportedByMemlaneError(
        f"MemlaneDb does not keep Agno {feature}{tail}. Use another Agno db for it "
        "(an Agent takes one db; memory and sessions are what memlane keeps)"
    )


# ------------------------------------------------------------------ documents

PART_CHARS = 8_000
"""Characters of JSON per state version. A state document is limited in bytes
(CoreConfig.max_metadata_bytes, 64 KB by default); 8,000 characters stay below it even
when every one is escaped to six bytes."""


def to_json(value: Any) -> str:
    """JSON text of an Agno document (times and other objects as strings, as Agno's own
    JSON columns store them)."""
    return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))


class Documents:
    """Agno documents kept as memlane session state.

    The session row is the state ``agno:session`` of its memlane session; each run is
    the workflow ``agno-run:<run_id>`` of its session (step: the run's status). Every
    write is a new version (``memory.state_history`` shows them). A document too large
    for one state version is split: the parts are written first under a fresh
    generation token, then the head (compare-and-swap), which names the generation,
    so a reader never mixes two writes.
    """

    def __init__(self, memory: Memory) -> None:
        self.memory = memory

    # ------------------------------------------------------------------ reading

    def read(self, user_id: str, session_id: str, name: str) -> Any | None:
        """The state document ``name``, or None if it was never written."""
        head = self.memory.get_state(session_id, user_id=user_id, name=name)
        if head.version == 0 or "json" not in head.data:
            return None
        return self.decode(user_id, session_id, name, head.data)

    def decode(self, user_id: str, session_id: str, name: str, head: Mapping[str, Any]) -> Any:
        """The document a head (of a state or a workflow) describes."""
        chunks = [str(head["json"])]
        for i in range(1, int(head.get("parts", 1))):
            part = self.memory.get_state(session_id, user_id=user_id, name=_part(name, head, i))
            chunks.append(str(part.data["json"]))
        return json.loads("".join(chunks))

    # ------------------------------------------------------------------ writing

    def encode(
        self, user_id: str, session_id: str, name: str, value: Any, *, agent_id: str | None
    ) -> dict[str, Any]:
        """Write the parts of ``value`` beyond the first; return the head to write."""
        text = to_json(value)
        chunks = [text[i : i + PART_CHARS] for i in range(0, len(text), PART_CHARS)] or [""]
        head: dict[str, Any] = {"json": chunks[0], "parts": len(chunks), "gen": uuid.uuid4().hex}
        for i, chunk in enumerate(chunks[1:], start=1):
            self.memory.set_state(
                session_id, {"json": chunk}, user_id=user_id, name=_part(name, head, i),
                expected_version=0, agent_id=agent_id,
            )  # fmt: skip
        return head

    def write(
        self, user_id: str, session_id: str, name: str, value: Any, *, agent_id: str | None
    ) -> None:
        """Write a new version of the state document ``name`` (creating the memlane
        session, of ``agent_id``, if needed)."""
        head = self.encode(user_id, session_id, name, value, agent_id=agent_id)
        for _ in range(ATTEMPTS):
            current = self.memory.get_state(session_id, user_id=user_id, name=name)
            try:
                self.memory.set_state(
                    session_id, head, user_id=user_id, name=name,
                    expected_version=current.version, agent_id=agent_id,
                )  # fmt: skip
                return
            except ConflictError:
                continue
        raise _kept_changing(name)


ATTEMPTS = 20


def _part(name: str, head: Mapping[str, Any], i: int) -> str:
    return f"{name}#{head['gen']}:{i}"


def _kept_changing(name: str) -> ConflictError:
    return ConflictError(
        f"Agno document {name!r} kept changing under {ATTEMPTS} attempts to write it",
        expected=None,
        actual=None,
    )
