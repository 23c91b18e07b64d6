"""Embedding backends: the bundled local model, OpenAI-compatible endpoints, and (in
:mod:`memlane.testing`) a deterministic fake."""

from memlane.embedders.local import LocalEmbedder
from memlane.embedders.openai import OpenAIEmbedder

__all__ = ["LocalEmbedder", "OpenAIEmbedder"]
