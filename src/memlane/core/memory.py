"""The whole core in one class: every public flow."""

from __future__ import annotations

from memlane.core.admin import AdminMixin
from memlane.core.sessions import SessionsMixin


class MemoryCore(AdminMixin, SessionsMixin):
    """Every flow of memlane; run by :class:`memlane.Memory` or :class:`memlane.AsyncMemory`."""
