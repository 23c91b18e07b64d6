"""Storage backends, chosen by URL.

=========================  =========================================
``memory://``              :class:`~memlane.stores.memory.MemoryStore`
``sqlite:///PATH``         :class:`~memlane.stores.sqlite.SqliteStore` (``sqlite:////abs/path``
                           for an absolute path, ``sqlite:///:memory:`` in memory)
``postgresql://...``       :class:`~memlane.stores.postgres.PostgresStore` (also
                           ``postgres://``; any libpq URL, e.g. ``?host=/socket/dir``)
=========================  =========================================

Backends are imported only when their scheme is used, so optional drivers stay optional.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from memlane.errors import ConfigurationError
from memlane.ports.store import Store

_BACKENDS: dict[str, tuple[str, str]] = {
    "memory": ("memlane.stores.memory", "MemoryStore"),
    "sqlite": ("memlane.stores.sqlite", "SqliteStore"),
    "postgresql": ("memlane.stores.postgres", "PostgresStore"),
    "postgres": ("memlane.stores.postgres", "PostgresStore"),
}


def register_backend(scheme: str, module: str, class_name: str) -> None:
    """Make ``scheme://...`` URLs open ``module.class_name.from_url(url)`` (or ``()``)."""
    _BACKENDS[scheme] = (module, class_name)


def open_store(url: str) -> Store:
    """Build (without connecting) the store a URL names. Raises ConfigurationError."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"not a store URL: {url!r} (try sqlite:///path/to/memlane.db or memory://)"
        )
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme not in _BACKENDS:
        known = ", ".join(f"{s}://" for s in sorted(_BACKENDS))
        raise ConfigurationError(f"unknown store scheme {scheme!r} in {url!r}; known: {known}")
    module_name, class_name = _BACKENDS[scheme]
    cls = getattr(importlib.import_module(module_name), class_name)
    from_url: Callable[[str], Store] | None = getattr(cls, "from_url", None)
    store: Store = from_url(url) if from_url is not None else cls()
    return store


__all__ = ["open_store", "register_backend"]
