"""memlane's core: the behaviour of memory, written once, free of I/O.

Every operation is a generator (a *flow*) that yields effects — a batch of store
operations, or texts to embed — and receives their results. The sync and async runners
in :mod:`memlane.core.flow` carry the effects out; :mod:`memlane.api` exposes the flows
as the methods of ``Memory`` and ``AsyncMemory``.

Each area is a module of flow functions over the shared :class:`memlane.core.base.Core`
(config, model id, clock, common helpers), standing alone: :mod:`~memlane.core.records`,
:mod:`~memlane.core.sessions`, :mod:`~memlane.core.retrieval` (search, with its pure parts
in :mod:`~memlane.core.search`), :mod:`~memlane.core.context`, :mod:`~memlane.core.admin`
and :mod:`~memlane.core.audit` (which also records every public call in the audit trail).
A new public flow is a function ``f(core, ...)`` in its area plus one line per class in
:mod:`memlane.api`.
"""
