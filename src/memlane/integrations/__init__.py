"""Adapters that let agent frameworks keep their memory in memlane.

Each framework is an optional extra (``pip install 'memlane[<extra>]'``); ``import
memlane`` never imports one. Importing an integration without its framework raises
:class:`MissingExtraError`, which names the extra to install.
"""

from __future__ import annotations


class MissingExtraError(ImportError):
    """An integration's framework is not installed; the message names the extra."""

    def __init__(self, extra: str, package: str) -> None:
        self.extra = extra
        self.package = package
        super().__init__(
            f"this integration needs {package!r}: pip install 'memlane[{extra}]'", name=package
        )


__all__ = ["MissingExtraError"]
