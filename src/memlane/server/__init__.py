"""``memlane serve``: the REST API, the MCP server and the dashboard, in one ASGI app.

Names are imported on first use, so the CLI can register its commands without loading
the web stack."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memlane.server.app import create_app
    from memlane.server.keys import ApiKey, KeyStore

__all__ = ["ApiKey", "KeyStore", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from memlane.server.app import create_app

        return create_app
    if name in ("ApiKey", "KeyStore"):
        from memlane.server import keys

        return getattr(keys, name)
    raise AttributeError(f"module 'memlane.server' has no attribute {name!r}")
