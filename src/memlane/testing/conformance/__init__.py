"""The store conformance suite: behaviour every backend must show.

Subclass :class:`StoreConformance` in a pytest module and implement ``make_store``; every
``test_*`` method then runs against your backend through the public API::

    class TestMyStore(StoreConformance):
        def make_store(self) -> Store:
            return MyStore(...)

Each test gets a fresh, empty store. The suite uses :class:`FakeEmbedder` and a
:class:`FixedClock`, so it is deterministic and needs no model.
"""

from __future__ import annotations

from memlane.testing.conformance.audit import AuditConformance
from memlane.testing.conformance.graph import GraphConformance
from memlane.testing.conformance.jobs import JobsConformance
from memlane.testing.conformance.models import ModelsConformance
from memlane.testing.conformance.records import RecordsConformance
from memlane.testing.conformance.search import SearchConformance
from memlane.testing.conformance.sessions import SessionsConformance
from memlane.testing.conformance.sparse import SparseConformance
from memlane.testing.conformance.timetravel import TimeTravelConformance
from memlane.testing.conformance.transfer import TransferConformance
from memlane.testing.conformance.trust import TrustConformance

__all__ = ["StoreConformance"]


class StoreConformance(
    # pytest collects a class's bases last-first: this order keeps the tests in the
    # order of the areas below (records, search, sessions, transfer, trust, jobs, models).
    # order of the areas below (records, search, sessions, transfer, jobs, models, audit).
    SparseConformance,
    TimeTravelConformance,
    GraphConformance,
    AuditConformance,
    ModelsConformance,
    JobsConformance,
    TrustConformance,
    TransferConformance,
    SessionsConformance,
    SearchConformance,
    RecordsConformance,
):
    """Mix-in test class; see the module docstring."""
