"""The seams between memlane's core and the outside world: small protocols only."""

from memlane.ports.embedder import Embedder
from memlane.ports.store import Store

__all__ = ["Embedder", "Store"]
