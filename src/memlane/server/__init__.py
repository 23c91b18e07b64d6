"""``memlane serve``: the REST API, the MCP server and the dashboard, in one ASGI app."""

from memlane.server.app import create_app
from memlane.server.keys import ApiKey, KeyStore

__all__ = ["ApiKey", "KeyStore", "create_app"]
