"""The whole core in one class: every public flow."""

from __future__ import annotations

from memlane.core.admin import AdminMixin
from memlane.core.context import ContextMixin


class MemoryCore(AdminMixin, ContextMixin):
    """Every flow of memlane; run by :class:`memlane.Memory` or :class:`memlane.AsyncMemory`."""
