"""memlane for Agno: ``Agent(db=MemlaneDb(memory))`` and agentic memory tools.

- :class:`MemlaneDb` is Agno's database interface for user memories, sessions, runs and
  session summaries, kept in memlane (history, supersede, hybrid search underneath).
- :class:`MemlaneTools` is an Agno toolkit: search, add, update and forget memories,
  keyed facts and session state, always for the run's user.

Needs the ``agno`` extra: ``pip install 'memlane[agno]'``. See docs/integrations/agno.md.
"""

from __future__ import annotations

try:
    import agno.db.base  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    from memlane.integrations import MissingExtraError

    raise MissingExtraError("agno", "agno") from exc

from memlane.integrations.agno._db import MemlaneDb
from memlane.integrations.agno._scope import (
    AGNO_UNSET_USER,
    MissingUserError,
    UnsupportedByMemlaneError,
)
from memlane.integrations.agno._tools import MemlaneTools

__all__ = [
    "AGNO_UNSET_USER",
    "MemlaneDb",
    "MemlaneTools",
    "MissingUserError",
    "UnsupportedByMemlaneError",
]
