"""Store and server URLs as they may be shown: in messages, logs and ``repr``."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_SECRET_PARAM = re.compile(r"(?i)((?:^|&)(?:password|passwd|pwd)=)[^&]*")


def redact_url(url: str) -> str:
    """The URL with any password (in the authority or a ``password=`` parameter)
    replaced by ``***``; other URLs unchanged."""
    try:
        parts = urlsplit(url)
        password, port = parts.password, parts.port
    except ValueError:  # e.g. an invalid port: show nothing after the scheme
        return url.split("://", 1)[0] + "://***"
    query = _SECRET_PARAM.sub(r"\1***", parts.query)
    if password is None and query == parts.query:
        return url
    netloc = parts.netloc
    if password is not None:
        netloc = f"{parts.username or ''}:***@{parts.hostname or ''}{f':{port}' if port else ''}"
    tail = (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")
    return f"{parts.scheme}://{netloc}{parts.path}{tail}"
