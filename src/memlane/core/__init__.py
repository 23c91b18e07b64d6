"""memlane's core: the behaviour of memory, written once, free of I/O.

Every operation is a generator (a *flow*) that yields effects — a batch of store
operations, or texts to embed — and receives their results. The sync and async runners
in :mod:`memlane.core.flow` carry the effects out; :mod:`memlane.api` exposes the flows
as the methods of ``Memory`` and ``AsyncMemory``.
"""
