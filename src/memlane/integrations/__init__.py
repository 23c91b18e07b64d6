"""Adapters that let agent frameworks keep their memory in memlane.

Each framework is an optional extra (``pip install 'memlane[<extra>]'``); ``import
memlane`` never imports one. Importing an integration without its framework raises
:class:`~memlane.errors.MissingExtraError`, which names the extra to install.
"""

from __future__ import annotations

from memlane.errors import MissingExtraError

__all__ = ["MissingExtraError"]
