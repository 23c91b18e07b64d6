"""Storage backends, chosen by URL.

=========================  =========================================
``memory://``              :class:`~memlane.stores.memory.MemoryStore`
``sqlite:///PATH``         :class:`~memlane.stores.sqlite.SqliteStore` (``sqlite:////abs/path``
                           for an absolute path, ``sqlite:///:memory:`` in memory)
``PATH``                   a plain file path (``x.db``, ``./x.db``, ``/abs/x.db``, ``~/x.db``):
                           the SQLite file there
``postgresql://...``       :class:`~memlane.stores.postgres.PostgresStore` (also
                           ``postgres://``; any libpq URL, e.g. ``?host=/socket/dir``)
``SCHEME://...``           a backend registered with :func:`register_backend`, or by an
                           installed distribution in the ``memlane.stores`` entry point group
=========================  =========================================

Backends are imported only when their scheme is used, so optional drivers stay optional.

**Store plugins.** A distribution adds a backend by declaring an entry point named after
its scheme, whose value is a store class or factory::

    [project.entry-points."memlane.stores"]
    myscheme = "memlane_mystore:MyStore"

A class or object with ``from_url(url)`` (and, to be a migration's source,
``from_url(url, create=False)``) is called that way; a class without it is called with
no arguments; any other callable is called as ``factory(url)`` (``factory(url,
create=False)`` if it takes ``create``). Entry points are read only when a URL names a
scheme memlane does not know, so they cost ``import memlane`` nothing; built-in schemes
and :func:`register_backend` win over them. A plugin that fails to import, two
distributions claiming one scheme, or a factory that does not return a store raise
:class:`~memlane.errors.PluginError` naming the distribution and the entry point.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memlane.errors import ConfigurationError, PluginError
from memlane.ports.store import Store

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

ENTRY_POINT_GROUP = "memlane.stores"
"""The entry point group store plugins register in (name: the URL scheme)."""

_BACKENDS: dict[str, tuple[str, str]] = {
    "memory": ("memlane.stores.memory", "MemoryStore"),
    "sqlite": ("memlane.stores.sqlite", "SqliteStore"),
    "postgresql": ("memlane.stores.postgres", "PostgresStore"),
    "postgres": ("memlane.stores.postgres", "PostgresStore"),
}
_PLUGINS: dict[str, tuple[Any, str, str]] = {}  # scheme -> (loaded target, distribution, entry)


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
    and a backend without that option is refused. Raises ConfigurationError (PluginError
    for a store plugin that cannot be used).
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
        from memlane.stores.sqlite_sql import sqlite_url

        url = sqlite_url(str(Path(url).expanduser()))  # a plain path takes no options
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme in _BACKENDS:
        module_name, class_name = _BACKENDS[scheme]
        target = getattr(importlib.import_module(module_name), class_name)
        built: Store = _build(target, url, scheme, create)
        return built
    target, dist, entry = _plugin(scheme, url)
    store = _build(target, url, scheme, create)
    if not isinstance(store, Store):
        raise PluginError(
            f"store plugin {entry} of distribution {dist} returned {type(store).__name__}, "
            "not a memlane Store (setup, batch, abatch, close, url)",
            distribution=dist,
            entry_point=entry,
        )
    return store


def _build(target: Any, url: str, scheme: str, create: bool) -> Any:
    """What ``target`` (a class, an object with ``from_url``, or a factory) makes of ``url``."""
    from_url = getattr(target, "from_url", None)
    if from_url is None and inspect.isclass(target):
        if not create:
            raise ConfigurationError(f"a {scheme}:// store starts empty: there is nothing to read")
        return target()
    make = from_url if from_url is not None else target
    if create:
        return make(url)
    if from_url is None and "create" not in inspect.signature(make).parameters:
        raise ConfigurationError(f"a {scheme}:// store cannot be opened read-only (create=False)")
    return make(url, create=False)


def _plugin(scheme: str, url: str) -> tuple[Any, str, str]:
    """The loaded target of the installed plugin for ``scheme``, its distribution and
    its entry point (``name = value``).
    Raises ConfigurationError (unknown scheme) or PluginError."""
    if scheme in _PLUGINS:
        return _PLUGINS[scheme]
    found = [ep for ep in _entry_points() if ep.name.lower() == scheme]
    if not found:
        known = sorted({*_BACKENDS, *(ep.name.lower() for ep in _entry_points())})
        listed = ", ".join(f"{s}://" for s in known)
        raise ConfigurationError(f"unknown store scheme {scheme!r} in {url!r}; known: {listed}")
    if len(found) > 1:
        claims = ", ".join(f"{_dist(ep)} ({ep.value})" for ep in found)
        raise PluginError(
            f"store scheme {scheme!r} is claimed by more than one installed distribution: "
            f"{claims}; uninstall one, or call memlane.stores.register_backend",
            distribution=_dist(found[0]),
            entry_point=f"{found[0].name} = {found[0].value}",
        )
    (ep,) = found
    dist, entry = _dist(ep), f"{ep.name} = {ep.value}"
    try:
        target = ep.load()
    except Exception as exc:  # any import failure of third-party code
        raise PluginError(
            f"store plugin {entry!r} (entry point group {ENTRY_POINT_GROUP!r}) of "
            f"distribution {dist} failed to load: {type(exc).__name__}: {exc}",
            distribution=dist,
            entry_point=entry,
        ) from exc
    if not callable(target) and getattr(target, "from_url", None) is None:
        raise PluginError(
            f"store plugin {entry!r} of distribution {dist} is not a store class or factory",
            distribution=dist,
            entry_point=entry,
        )
    _PLUGINS[scheme] = (target, dist, entry)
    return _PLUGINS[scheme]


def _entry_points() -> list[EntryPoint]:
    from importlib.metadata import entry_points

    return list(entry_points(group=ENTRY_POINT_GROUP))


def _dist(ep: EntryPoint) -> str:
    dist = ep.dist
    return f"{dist.name} {dist.version}" if dist is not None else "(unknown distribution)"


__all__ = ["ENTRY_POINT_GROUP", "open_store", "register_backend"]
