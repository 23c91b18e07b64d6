"""Test helpers shipped with memlane: a deterministic fake embedder and the store
conformance suite every backend must pass (:class:`StoreConformance`)."""

from memlane.testing.conformance import StoreConformance
from memlane.testing.fakes import FakeEmbedder, FixedClock

__all__ = ["FakeEmbedder", "FixedClock", "StoreConformance"]
