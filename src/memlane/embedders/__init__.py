"""Embedding backends: the default local model on ONNX Runtime, sentence-transformers on
torch (the ``torch`` extra), OpenAI-compatible endpoints, and a deterministic fake for tests
(:mod:`memlane.embedders.fake`, also :class:`memlane.testing.FakeEmbedder`).
:func:`build_embedder` turns a spec (``onnx``, ``torch:MODEL``, ``openai:MODEL``, ``fake``
...) into one. Importing this package loads no model and no torch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memlane.embedders.fake import FakeEmbedder
    from memlane.embedders.onnx import OnnxEmbedder
    from memlane.embedders.openai import OpenAIEmbedder
    from memlane.embedders.spec import build_embedder
    from memlane.embedders.torch import TorchEmbedder

__all__ = ["FakeEmbedder", "OnnxEmbedder", "OpenAIEmbedder", "TorchEmbedder", "build_embedder"]

_WHERE = {
    "FakeEmbedder": "memlane.embedders.fake",
    "OnnxEmbedder": "memlane.embedders.onnx",
    "OpenAIEmbedder": "memlane.embedders.openai",
    "TorchEmbedder": "memlane.embedders.torch",
    "build_embedder": "memlane.embedders.spec",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'memlane.embedders' has no attribute {name!r}")
