"""The whole core: the shared state every flow runs over."""

from __future__ import annotations

from memlane.core.base import CoreBase


class MemoryCore(CoreBase):
    """The shared core of a :class:`memlane.Memory` or :class:`memlane.AsyncMemory`."""
