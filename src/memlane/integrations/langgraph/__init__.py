"""memlane as a LangGraph store: ``graph.compile(store=MemlaneStore(memory))``.

Needs the ``langgraph`` extra (``pip install 'memlane[langgraph]'``). See
docs/integrations/langgraph.md for how namespaces, users, index fields and TTLs map onto
memlane.
"""

from __future__ import annotations

try:
    import langgraph.store.base  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "memlane.integrations.langgraph needs LangGraph: pip install 'memlane[langgraph]'"
    ) from exc

from memlane.integrations.langgraph.store import MemlaneStore, NamespaceError

__all__ = ["MemlaneStore", "NamespaceError"]
