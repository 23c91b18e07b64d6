"""Storage backends, chosen by URL.

=========================  =========================================
``memory://``              :class:`~memlane.stores.memory.MemoryStore`
``sqlite:///PATH``         :class:`~memlane.stores.sqlite.SqliteStore` (``sqlite:////abs/path``
                           for an absolute path, ``sqlite:///:memory:`` in memory)
``PATH``                   a plain file path (``x.db``, ``./x.db``, ``/abs/x.db``, ``~/x.db``):
                           the SQLite file there
``postgresql://...``       :class:`~memlane.stores.postgres.PostgresStore` (also
                           ``postgres://``; any libpq URL, e.g. ``?host=/socket/dir``)
=========================  =========================================

Backends are imported only when their scheme is used, so optional drivers stay optional.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from pathlib import Path

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


# "scheme:" first: a URL missing its "//" (e.g. "memory:", "sqlite:x.db"), not a file
# name (one letter and ":" is a Windows drive; "./name:x.db" is a file).
_SCHEME_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")


def open_store(url: str, *, create: bool = True) -> Store:
    """Build (without connecting) the store a URL or plain SQLite file path names.

    With ``create=False`` the store must already exist when it is opened (for reading,
    e.g. a migration's source): the backend's ``from_url(url, create=False)`` is used,
    and a backend without that option is refused. Raises ConfigurationError.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(
            f"not a store URL: {url!r} (try sqlite:///path/to/memlane.db or memory://)"
        )
    if "://" not in url:
        if _SCHEME_LIKE.match(url):
            raise ConfigurationError(
                f"not a store URL or file path: {url!r} (try sqlite:///path/to/memlane.db, "
                "memory:// or a path such as ./memlane.db)"
            )
        url = "sqlite:///" + str(Path(url).expanduser())
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme not in _BACKENDS:
        known = ", ".join(f"{s}://" for s in sorted(_BACKENDS))
        raise ConfigurationError(f"unknown store scheme {scheme!r} in {url!r}; known: {known}")
    module_name, class_name = _BACKENDS[scheme]
    cls = getattr(importlib.import_module(module_name), class_name)
    from_url: Callable[..., Store] | None = getattr(cls, "from_url", None)
    if create:
        store: Store = from_url(url) if from_url is not None else cls()
        return store
    if from_url is None:
        raise ConfigurationError(f"a {scheme}:// store starts empty: there is nothing to read")
    opened: Store = from_url(url, create=False)
    return opened


__all__ = ["open_store", "register_backend"]
