"""Store conformance, jobs and the async API."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import numpy as np

from memlane.api import AsyncMemory
from memlane.errors import (
    ConflictError,
    NotFoundError,
)
from memlane.models import Job, JobStatus, StateVersion
from memlane.ports import store as ops
from memlane.testing.conformance._base import ConformanceBase, _day, _raises
from memlane.testing.fakes import FakeEmbedder, FixedClock


class JobsConformance(ConformanceBase):
    """Conformance tests of jobs and the async API."""

    # ------------------------------------------------------------------ jobs

    def test_jobs_run_in_order_per_user_and_leases_expire(self) -> None:
        store = self.make_store()
        store.setup()
        t0 = _day(2024, 1, 1)

        def job(jid: str, user: str) -> Job:
            return Job(jid, user, "extract", {"n": jid}, JobStatus.PENDING, t0, t0, t0)

        store.batch([ops.PutJob(job(j, u), 0) for j, u in (("J1", "a"), ("J2", "a"), ("J3", "b"))])
        with _raises(ConflictError):
            store.batch([ops.PutJob(job("J4", "a"), 0), ops.PutJob(job("J1", "a"), 0)])
        assert store.batch([ops.GetJob("a", "J4")]) == [None]  # the batch rolled back
        assert store.batch([ops.GetJob("b", "J1")]) == [None]  # other scope
        lease = t0 + timedelta(minutes=1)
        first = store.batch([ops.ClaimJob(t0, lease)])[0]
        assert first.id == "J1" and first.status is JobStatus.RUNNING and first.attempts == 1
        second = store.batch([ops.ClaimJob(t0, lease)])[0]
        assert second.id == "J3"  # J2 waits behind J1 of the same user
        assert store.batch([ops.ClaimJob(t0, lease)]) == [None]
        # J1's worker died: after its lease another claim takes it over.
        later = lease + timedelta(seconds=1)
        again = store.batch([ops.ClaimJob(later, later + timedelta(minutes=1), "a")])[0]
        assert again.id == "J1" and again.attempts == 2 and again.version == first.version + 1
        done = again.evolve(status=JobStatus.DONE, version=again.version + 1, lease_until=None)
        with _raises(ConflictError):
            store.batch([ops.PutJob(done, first.version)])  # stale worker loses
        store.batch([ops.PutJob(done, again.version)])
        nxt = store.batch([ops.ClaimJob(later, later + timedelta(minutes=1), "a")])[0]
        assert nxt.id == "J2"
        delayed = job("J5", "c").evolve(run_after=t0 + timedelta(hours=1))
        store.batch([ops.PutJob(delayed, 0)])
        assert store.batch([ops.ClaimJob(later, later, "c")]) == [None]
        pending = store.batch([ops.ListJobs(None, (JobStatus.PENDING,))])[0]
        assert [j.id for j in pending] == ["J5"]
        assert [j.id for j in store.batch([ops.ListJobs("a")])[0]] == ["J1", "J2"]
        assert store.batch([ops.ListJobs("a", (), "J1")])[0][0].id == "J2"
        assert store.batch([ops.DeleteUser("a")])[0]["jobs"] == 2
        assert store.batch([ops.ListJobs("a")]) == [[]]
        store.close()

    # ------------------------------------------------------------------ async

    def test_async_api_shares_behaviour(self) -> None:
        store = self.make_store()

        async def scenario() -> None:
            async with AsyncMemory(store, embedder=FakeEmbedder(), clock=FixedClock()) as m:
                rec = await m.add("async memory about sailing", user_id="u")
                hits = await m.search("sailing", user_id="u")
                assert hits[0].record.id == rec.id
                state = await m.set_state("s", {"n": 1}, user_id="u", expected_version=0)
                assert isinstance(state, StateVersion)
                results = await asyncio.gather(
                    *(m.add(f"parallel {i}", user_id="u") for i in range(5))
                )
                assert len({r.id for r in results}) == 5
                page = await m.list(user_id="u", limit=10)
                assert len(page.items) == 6
                try:
                    await m.get("nope", user_id="u")
                except NotFoundError:
                    pass
                else:
                    raise AssertionError("NotFoundError was not raised")

        asyncio.run(scenario())

    def test_vectors_are_unit_length(self) -> None:
        m, _, _ = self._memory()
        rec = m.add("vector check", user_id="u")
        cached = m.store.batch([ops.GetEmbeddings(m.embedder.model_id, (rec.content_hash,))])[0]
        assert abs(float(np.linalg.norm(cached[rec.content_hash])) - 1.0) < 1e-5
        m.close()
