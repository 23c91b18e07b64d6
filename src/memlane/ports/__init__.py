"""The seams between memlane's core and the outside world: small protocols only."""

from memlane.ports.embedder import Embedder
from memlane.ports.store import Capabilities, Store

__all__ = ["Capabilities", "Embedder", "Store"]
