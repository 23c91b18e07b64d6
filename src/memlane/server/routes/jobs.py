"""Jobs: learning from a conversation in the background (needs a chat model), and
the jobs' states."""

from __future__ import annotations

from typing import Any

from memlane.access import Action, visible
from memlane.core import audit as trail
from memlane.errors import NoModelError, NotFoundError
from memlane.manager.flows import conversation_text
from memlane.ports import store as ops
from memlane.server.responses import JobOut, JobsOut
from memlane.server.routes.common import AgentCall, Area, Call, UserCall
from memlane.server.schemas import JobId, LearnBody

area = Area("jobs")
router = area.router


@area.route("POST", "/learn", 501, status_code=202)
async def learn(body: LearnBody, call: UserCall) -> JobOut:
    where = await call.session(Action.WRITE, body.session_id, agent_id=body.agent_id, writing=True)
    messages = [(m.role, m.content) for m in body.messages]
    manager = call.srv.manager
    if manager is None:
        conversation_text(messages)  # a bad body is a 422, with or without a model
        raise NoModelError("no memory manager")
    acting = manager.with_actor(call.actor_for(where))
    job = acting.process_in_background(  # validates, then needs the model
        messages, user_id=where.user_id, session_id=body.session_id, agent_id=where.agent_id
    )
    return call.out(JobOut, job.to_dict())


@area.route("GET", "/jobs/{job_id}")
async def get_job(job_id: JobId, call: AgentCall) -> JobOut:
    where = call.scope(Action.READ)
    job = (await call.memory.store.abatch([ops.GetJob(where.user_id, job_id)]))[0]
    if job is None or not visible(where, job.agent_id):
        raise NotFoundError(f"no job {job_id!r}")
    await _read(call, "job", [job], where.user_id)
    return call.out(JobOut, _job_dict(job))


@area.route("GET", "/jobs")
async def list_jobs(call: UserCall) -> JobsOut:
    stored = call.scope(Action.READ_ALL).user_id
    jobs = (await call.memory.store.abatch([ops.ListJobs(stored)]))[0]
    await _read(call, "list_jobs", jobs, stored)
    return call.out(JobsOut, {"jobs": [_job_dict(j) for j in jobs]})


async def _read(call: Call, action: str, jobs: list[Any], user_id: str) -> None:
    """Record the read of ``jobs`` of ``user_id`` (their payloads hold messages) in the
    audit trail."""
    memory = call.memory
    batch = trail.read_jobs(memory.core, action, jobs, user_id)
    if batch:
        await memory.store.abatch(batch)


_PLAIN_ERRORS = ("ValidationError:", "ConflictError:", "NotFoundError:")


def _job_dict(job: Any) -> dict[str, Any]:
    """A job for a client. Errors of memlane's own checks keep their text; others (a
    model provider's answer can echo keys or prompts, a store's names hosts) say only
    their kind. `memlane jobs` on the machine shows everything."""
    d: dict[str, Any] = job.to_dict()
    error = d.get("error")
    if error and not str(error).startswith(_PLAIN_ERRORS):
        d["error"] = str(error).split(":", 1)[0][:80]
    return d
