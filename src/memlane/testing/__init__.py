"""Test helpers shipped with memlane: a deterministic fake embedder and the store
conformance suite every backend must pass (:class:`StoreConformance`)."""

from memlane.testing.conformance import StoreConformance
from memlane.testing.fakes import CannedLLM, FakeEmbedder, FixedClock

__all__ = ["CannedLLM", "FakeEmbedder", "FixedClock", "StoreConformance"]
