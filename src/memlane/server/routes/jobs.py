"""Jobs: learning from a conversation in the background (needs a chat model), and
the jobs' states."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from memlane.access import Action, visible
from memlane.errors import NoModelError, NotFoundError
from memlane.manager.flows import conversation_text
from memlane.ports import store as ops
from memlane.server.auth import CallerDep
from memlane.server.routes.common import State, operation_id, v1
from memlane.server.schemas import AgentQuery, JobId, LearnBody, UserId, errors

router = APIRouter(generate_unique_id_function=operation_id)


@v1(
    router,
    "POST",
    "/v1/users/{user_id}/learn",
    status_code=202,
    tags=["jobs"],
    responses=errors(501),
)
async def learn(user_id: UserId, body: LearnBody, caller: CallerDep, srv: State) -> dict[str, Any]:
    where = caller.scope(Action.WRITE, user_id, body.agent_id)
    if body.session_id is not None:
        await srv.session_scope(where, body.session_id, writing=True)
    messages = [(m.role, m.content) for m in body.messages]
    manager = srv.manager
    if manager is None:
        conversation_text(messages)  # a bad body is a 422, with or without a model
        raise NoModelError("no memory manager")
    job = manager.process_in_background(  # validates, then needs the model
        messages,
        user_id=where.user_id,
        session_id=body.session_id,
        agent_id=where.agent_id,
    )
    return caller.out(job.to_dict())


@v1(router, "GET", "/v1/users/{user_id}/jobs/{job_id}", tags=["jobs"])
async def get_job(
    user_id: UserId, job_id: JobId, caller: CallerDep, srv: State, agent_id: AgentQuery = None
) -> dict[str, Any]:
    where = caller.scope(Action.READ, user_id, agent_id)
    job = (await srv.memory.store.abatch([ops.GetJob(where.user_id, job_id)]))[0]
    if job is None or not visible(where, job.agent_id):
        raise NotFoundError(f"no job {job_id!r}")
    return caller.out(_job_dict(job))


@v1(router, "GET", "/v1/users/{user_id}/jobs", tags=["jobs"])
async def list_jobs(user_id: UserId, caller: CallerDep, srv: State) -> dict[str, Any]:
    stored = caller.scope(Action.READ_ALL, user_id).user_id
    jobs = (await srv.memory.store.abatch([ops.ListJobs(stored)]))[0]
    return {"jobs": [caller.out(_job_dict(j)) for j in jobs]}


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
