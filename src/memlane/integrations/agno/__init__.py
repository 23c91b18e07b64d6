"""memlane for Agno: ``Agent(db=MemlaneDb(memory))`` and agentic memory tools.

- :class:`MemlaneDb` is Agno's database interface for user memories, sessions, runs and
  session summaries, kept in memlane (history, supersede, hybrid search underneath).
- :class:`MemlaneTools` is an Agno toolkit: search, add, update and forget memories,
  keyed facts and session state, always for the run's user.

Needs the ``agno`` extra: ``pip install 'memlane[agno]'``. See docs/integrations/agno.md.
"""

from __future__ import annotations

try:  # what this integration uses of Agno 3.x (an Agno 2 lacks RunContext)
    import agno.db.base
    import agno.run.base
    import agno.tools.toolkit

    agno.run.base.RunContext  # noqa: B018
except (ImportError, AttributeError) as exc:  # pragma: no cover - run in a subprocess test
    from memlane.errors import MissingExtraError

    raise MissingExtraError("agno", "memlane.integrations.agno", "agno>=3.1,<4") from exc

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
