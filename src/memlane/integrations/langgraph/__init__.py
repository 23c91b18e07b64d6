"""memlane as a LangGraph store: ``graph.compile(store=MemlaneStore(memory))``.

Needs the ``langgraph`` extra (``pip install 'memlane[langgraph]'``). See
docs/integrations/langgraph.md for how namespaces, users, index fields and TTLs map onto
memlane.
"""

from __future__ import annotations

from memlane.errors import require_extra

require_extra("langgraph", "memlane.integrations.langgraph", "langgraph")

from memlane.integrations.langgraph.store import MemlaneStore, NamespaceError

__all__ = ["MemlaneStore", "NamespaceError"]
