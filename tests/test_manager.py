"""The memory manager against a real loopback chat server with scripted answers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from chat_server import ChatServer, Scripted
from helpers import example_env, run_example
from memlane import (
    AsyncMemory,
    HistoryAction,
    JobStatus,
    LLMError,
    LLMOutputError,
    Memory,
    MemoryRecord,
    NoModelError,
)
from memlane.errors import UnsupportedError, ValidationError
from memlane.llm import OpenAIChat
from memlane.manager import (
    AsyncMemoryManager,
    ManagerResult,
    MemoryManager,
    Outcome,
)
from memlane.ports import store as ops
from memlane.testing import FakeEmbedder, FixedClock


@pytest.fixture()
def env(server: ChatServer) -> Iterator[tuple[Memory, MemoryManager, ChatServer, FixedClock]]:
    server.reset()
    clock = FixedClock()
    memory = Memory("memory://", embedder=FakeEmbedder(), clock=clock)
    llm = OpenAIChat(base_url=server.base_url, model="scripted", max_backoff_s=0.01)
    manager = MemoryManager(memory, llm)
    yield memory, manager, server, clock
    manager.close()
    memory.close()


def extraction(*facts: str, kind: str = "fact") -> dict[str, object]:
    return {"memories": [{"text": f, "kind": kind, "topics": [], "importance": 0.6} for f in facts]}


def decision(candidate: int, action: str, **fields: object) -> dict[str, object]:
    return {"candidate": candidate, "action": action, "reason": f"{action} says the test", **fields}


# ---------------------------------------------------------------------------- process


def test_an_agents_pass_never_sees_or_changes_another_agents_memories(env) -> None:  # type: ignore[no-untyped-def]
    memory, manager, server, _ = env
    theirs = memory.add("The user lives in London", user_id="u", agent_id="secretary")
    shared = memory.add("The user likes tea", user_id="u")
    server.queue(
        extraction("The user lives in Paris", "The user likes green tea"),
        # Only "green tea" has a related memory it may see (the shared one), so it is the
        # one candidate left to decide on: number 0, its memory number 0.
        {
            "decisions": [
                {"candidate": 0, "action": "UPDATE", "target": 0, "mode": "contradict",
                 "text": "The user likes green tea", "reason": "more precise"},
            ]
        },
    )  # fmt: skip
    result = manager.process([("user", "I moved to Paris")], user_id="u", agent_id="planner")
    assert memory.get(theirs.id, user_id="u").is_current  # untouched
    decide = server.requests[-1]["messages"][1]["content"]
    assert "London" not in decide and "likes tea" in decide  # only its own and shared ones
    changed = [c for c in result.candidates if c.target_id == shared.id]
    assert changed and memory.get(changed[0].record_id or "", user_id="u").agent_id is None


def _move_to_paris(env) -> tuple[MemoryRecord, ManagerResult]:  # type: ignore[no-untyped-def]
    """London is stored; a month later the conversation says Paris and the model decides
    the new fact contradicts the old one."""
    memory, manager, server, clock = env
    london = memory.add("The user lives in London", user_id="u", topics=["home"])
    clock.advance(days=30)
    server.queue(
        extraction("The user lives in Paris"),
        {
            "decisions": [
                {
                    "candidate": 0,
                    "action": "UPDATE",
                    "target": 0,
                    "mode": "contradict",
                    "text": "The user lives in Paris",
                    "reason": "the user moved to Paris",
                }
            ]
        },
    )
    result = manager.process(
        [("user", "I moved to Paris last month!"), ("assistant", "Exciting!")], user_id="u"
    )
    return london, result


def test_contradiction_supersedes_and_history_says_why(env) -> None:  # type: ignore[no-untyped-def]
    memory, _, _, clock = env
    london, result = _move_to_paris(env)
    (c,) = result.candidates
    assert c.outcome is Outcome.SUPERSEDED and c.target_id == london.id and result.changed
    old = memory.get(london.id, user_id="u")
    new = memory.get(c.record_id or "", user_id="u")
    assert old.superseded_by == new.id and old.valid_to == clock.now and not old.is_current
    assert new.is_current and new.text == "The user lives in Paris" and "home" in new.topics
    last = memory.history(london.id, user_id="u")[-1]
    assert last.action is HistoryAction.SUPERSEDE and last.reason == "the user moved to Paris"
    hits = memory.search("where does the user live", user_id="u")
    assert [h.record.id for h in hits] == [new.id]  # the old home is not current


def test_the_decision_prompt_numbers_memories_and_shows_no_ids(env) -> None:  # type: ignore[no-untyped-def]
    _, _, server, _ = env
    london, _ = _move_to_paris(env)
    decide = server.requests[1]["messages"][1]["content"]
    assert "The user lives in London" in decide and london.id not in decide  # numbered, no ids


def test_usage_counts_the_extract_and_decide_calls(env) -> None:  # type: ignore[no-untyped-def]
    _, manager, _, _ = env
    _, result = _move_to_paris(env)
    assert result.usage.calls == 2 and result.usage.prompt_tokens > 0
    assert set(manager.llm.usage_by_operation) == {"extract", "decide"}


def test_duplicate_is_caught_before_the_llm(env) -> None:  # type: ignore[no-untyped-def]
    memory, manager, server, _ = env
    known = memory.add("The user is allergic to peanuts.", user_id="u")
    server.queue(extraction("the user is allergic to PEANUTS", "Likes jazz", "likes jazz!"))
    result = manager.process([("user", "Peanuts make me sick. I like jazz.")], user_id="u")
    outcomes = [(c.outcome, c.record_id) for c in result.candidates]
    assert outcomes[0] == (Outcome.DUPLICATE, known.id)
    assert outcomes[1][0] is Outcome.ADDED  # nothing similar stored: added without asking
    assert outcomes[2][0] is Outcome.DUPLICATE  # repeats the candidate before it
    assert len(server.requests) == 1  # only the extraction call; no decision needed


def test_refine_updates_in_place_and_delete_is_soft(env) -> None:  # type: ignore[no-untyped-def]
    memory, manager, server, _ = env
    tea = memory.add("The user drinks tea", user_id="u")
    job = memory.add("The user works as a nurse", user_id="u")
    server.queue(
        extraction(
            "The user drinks green tea every morning", "The user no longer works as a nurse"
        ),
        {
            "decisions": [
                decision(0, "UPDATE", target=0, mode="refine", text="The user drinks green tea"),
                decision(1, "DELETE", target=0),
            ]
        },
    )
    result = manager.process([("user", "green tea daily; quit nursing")], user_id="u")
    assert [c.outcome for c in result.candidates] == [Outcome.UPDATED, Outcome.DELETED]
    updated = memory.get(tea.id, user_id="u")
    assert updated.text == "The user drinks green tea" and updated.version == tea.version + 1
    events = memory.history(tea.id, user_id="u")
    assert events[0].snapshot and events[0].snapshot["text"] == "The user drinks tea"
    assert memory.get(job.id, user_id="u").deleted_at is not None
    assert memory.restore(job.id, user_id="u").deleted_at is None  # reversible


def test_switched_off_add_and_delete_are_skipped(env) -> None:  # type: ignore[no-untyped-def]
    memory, manager, server, _ = env
    switched = MemoryManager(memory, manager.llm, allow_delete=False, allow_add=False)
    memory.add("The user owns a red bike", user_id="u")
    server.queue(
        extraction("The user sold the red bike", "The user has a cat"),
        {"decisions": [decision(0, "DELETE", target=0)]},
    )
    result = switched.process([("user", "sold my bike, got a cat")], user_id="u")
    assert [c.outcome for c in result.candidates] == [Outcome.SKIPPED, Outcome.SKIPPED]
    assert not result.changed
    assert "switched off" in result.candidates[0].reason


def test_clear_needs_allow_clear(env) -> None:  # type: ignore[no-untyped-def]
    memory, manager, _, _ = env
    memory.add("The user owns a red bike", user_id="u")
    with pytest.raises(UnsupportedError):
        manager.clear(user_id="u")
    cleared = MemoryManager(memory, manager.llm, allow_clear=True).clear(user_id="u")
    assert cleared == 1 and memory.list(user_id="u").items == ()


def test_an_unknown_manager_option_is_refused(env) -> None:  # type: ignore[no-untyped-def]
    memory, manager, _, _ = env
    with pytest.raises(ValidationError, match="unknown manager option"):
        MemoryManager(memory, manager.llm, allow_everything=True)


def test_a_malformed_decision_is_repaired(env) -> None:  # type: ignore[no-untyped-def]
    memory, manager, server, _ = env
    memory.add("The user plays chess", user_id="u")
    server.queue(
        extraction("The user plays chess on Sundays"),
        '{"decisions": [{"candidate": 0, "action": "MAYBE"}]}',
        {"decisions": [decision(0, "NOOP")]},
    )
    result = manager.process([("user", "chess on sundays")], user_id="u")
    assert result.candidates[0].outcome is Outcome.SKIPPED
    assert len(server.requests) == 3 and "rejected" in server.requests[2]["messages"][-1]["content"]


def test_decisions_that_stay_invalid_are_reported_and_the_unrelated_candidate_lands(env) -> None:  # type: ignore[no-untyped-def]
    memory, manager, server, _ = env
    memory.add("The user plays chess", user_id="u")
    server.queue(extraction("The user plays chess badly", "Owns a kayak"), "", "{", "[]")
    result = manager.process([("user", "chess; kayak")], user_id="u")
    by_text = {c.text: c for c in result.candidates}
    assert by_text["The user plays chess badly"].outcome is Outcome.FAILED
    assert "no valid decision" in by_text["The user plays chess badly"].reason
    assert by_text["Owns a kayak"].outcome is Outcome.ADDED and result.failed


def test_an_extraction_that_stays_invalid_is_an_error_not_no_memories(env) -> None:  # type: ignore[no-untyped-def]
    memory, manager, server, _ = env
    memory.add("The user plays chess", user_id="u")
    before = memory.export_rows()
    server.queue("", "", "")
    with pytest.raises(LLMOutputError, match="extract"):
        manager.process([("user", "anything")], user_id="u")
    assert len(memory.export_rows()) == len(before)


def test_a_valid_empty_extraction_is_nothing_to_remember(env) -> None:  # type: ignore[no-untyped-def]
    _, manager, server, _ = env
    server.queue({"memories": []})
    assert manager.process([("user", "hello")], user_id="u").candidates == ()


@pytest.fixture()
def no_model() -> Iterator[tuple[Memory, MemoryManager]]:
    """A manager without a chat model, over an in-memory store."""
    with Memory("memory://", embedder=FakeEmbedder()) as memory:
        yield memory, MemoryManager(memory, None)


def test_process_without_a_model_names_the_setting(no_model) -> None:  # type: ignore[no-untyped-def]
    _, manager = no_model
    # The same error as process_in_background and REST's 501: a setting, not an outage.
    with pytest.raises(NoModelError, match="MEMLANE_LLM_BASE_URL"):
        manager.process([("user", "hi")], user_id="u")


def test_background_processing_without_a_model_is_refused(no_model) -> None:  # type: ignore[no-untyped-def]
    _, manager = no_model
    with pytest.raises(LLMError):
        manager.process_in_background([("user", "x")], user_id="u")


def test_a_summary_without_a_model_is_extractive(no_model) -> None:  # type: ignore[no-untyped-def]
    memory, manager = no_model
    memory.add_messages(
        "s", [("user", "We fixed the boiler on Monday."), ("assistant", "Good.")], user_id="u"
    )
    summary = manager.summarize_session("s", user_id="u")
    assert summary.metadata["method"] == "extractive"


def test_process_without_messages_is_refused(no_model) -> None:  # type: ignore[no-untyped-def]
    _, manager = no_model
    with pytest.raises(ValidationError):
        manager.process([], user_id="u")


def test_llm_summary_supersedes_previous(env) -> None:  # type: ignore[no-untyped-def]
    memory, manager, server, _ = env
    memory.add_messages(
        "s", [("user", "Book a table for 4 on Friday"), ("assistant", "Done")], user_id="u"
    )
    server.queue({"summary": "User booked a table for four on Friday."})
    first = manager.summarize_session("s", user_id="u")
    assert first.metadata["method"] == "llm" and first.metadata["prompt"] == "summary/1"
    server.queue({"summary": "Table for four, Friday, confirmed."})
    second = manager.summarize_session("s", user_id="u")
    assert memory.get_summary("s", user_id="u").id == second.id  # type: ignore[union-attr]
    assert memory.get(first.id, user_id="u").superseded_by == second.id


def test_async_manager_shares_behaviour(server: ChatServer) -> None:
    server.reset()

    async def scenario() -> None:
        async with AsyncMemory("memory://", embedder=FakeEmbedder()) as memory:
            manager = AsyncMemoryManager(memory, OpenAIChat(base_url=server.base_url, model="m"))
            server.queue(extraction("The user is vegetarian"))
            result = await manager.process([("user", "I'm vegetarian")], user_id="u")
            assert result.candidates[0].outcome is Outcome.ADDED
            hits = await memory.search("vegetarian", user_id="u")
            assert hits[0].record.text == "The user is vegetarian"

    asyncio.run(scenario())


def test_usage_counts_the_calls_of_a_failed_decision(env) -> None:  # type: ignore[no-untyped-def]
    memory, manager, server, _ = env
    memory.add("The user lives in London", user_id="u")
    server.queue(extraction("The user lives in Paris"), "{", "{", "{")  # 2 repairs, all bad
    result = manager.process([("user", "I moved to Paris")], user_id="u")
    assert result.candidates[0].outcome is Outcome.FAILED
    assert result.usage.calls == len(server.requests) == 4


def test_other_agents_memories_do_not_crowd_out_an_agents_own_duplicate(env) -> None:  # type: ignore[no-untyped-def]
    memory, manager, server, _ = env
    for _ in range(5):
        memory.add("The user likes green tea", user_id="u", agent_id="b")
    own = memory.add("The user likes green tea", user_id="u", agent_id="a")
    server.queue(extraction("The user likes green tea"))
    result = manager.process([("user", "I like green tea")], user_id="u", agent_id="a")
    (c,) = result.candidates
    assert c.outcome is Outcome.DUPLICATE and c.record_id == own.id


# ---------------------------------------------------------------------------- background


def test_background_jobs_run_in_order_and_report(env) -> None:  # type: ignore[no-untyped-def]
    memory, manager, server, _ = env
    server.queue(
        Scripted(status=503),
        extraction("The user likes hiking"),
        extraction("The user has two kids"),
    )
    fast = MemoryManager(memory, manager.llm, base_backoff_s=0.01)
    first = fast.process_in_background([("user", "hiking!")], user_id="u", session_id="s")
    second = fast.process_in_background([("user", "two kids")], user_id="u")
    assert first.status is JobStatus.PENDING  # returned at once, persisted
    assert fast.flush(timeout=20)
    done = fast.job(first.id, user_id="u")
    assert done is not None and done.status is JobStatus.DONE
    assert done.result["candidates"][0]["outcome"] == "added"
    texts = [r.text for r in memory.list(user_id="u", newest_first=False).items]
    assert texts == ["The user likes hiking", "The user has two kids"]  # in order
    assert fast.job(second.id, user_id="other") is None  # scoped
    fast.close()


def test_exhausted_job_of_a_dead_worker_is_failed_not_rerun(server: ChatServer) -> None:
    server.reset()
    with Memory("memory://", embedder=FakeEmbedder()) as memory:
        llm = OpenAIChat(base_url=server.base_url, model="m")
        m = MemoryManager(memory, llm, max_attempts=1, lease=timedelta(milliseconds=1))
        job = m.jobs.enqueue("process", {"messages": [["user", "x"]]}, user_id="u")
        later = m.jobs.enqueue("process", {"messages": [["user", "y"]]}, user_id="u")
        now = memory.core.clock()
        claimed = memory.store.batch([ops.ClaimJob(now, now)])[0]  # a worker that then died
        assert claimed.id == job.id
        server.queue(extraction("The user said y"))
        assert m.flush(timeout=10)
        dead = m.job(job.id, user_id="u")
        assert dead is not None and dead.status is JobStatus.FAILED and "died" in (dead.error or "")
        assert m.job(later.id, user_id="u").status is JobStatus.DONE  # type: ignore[union-attr]
        assert len(server.requests) == 1  # the dead job was not run a second time


def test_failing_job_is_retried_then_kept_as_failed(server: ChatServer) -> None:
    server.reset()
    server.queue(*[Scripted(status=400, content="bad request")] * 3)
    memory = Memory("memory://", embedder=FakeEmbedder())  # a real clock: retries fall due
    llm = OpenAIChat(base_url=server.base_url, model="m")
    m = MemoryManager(memory, llm, base_backoff_s=0.01, max_attempts=3)
    job = m.process_in_background([("user", "x")], user_id="u")
    assert m.flush(timeout=20)
    failed = m.job(job.id, user_id="u")
    assert failed is not None and failed.status is JobStatus.FAILED and failed.attempts == 3
    assert "400" in (failed.error or "")
    m.close()
    memory.close()


CRASHING_WORKER = """
import sys, time
from datetime import timedelta
from memlane import Memory
from memlane.llm import OpenAIChat
from memlane.manager import MemoryManager
from memlane.testing import FakeEmbedder
memory = Memory(sys.argv[1], embedder=FakeEmbedder())
manager = MemoryManager(memory, OpenAIChat(base_url=sys.argv[2], model="m"),
                        lease=timedelta(seconds=1))
job = manager.process_in_background([("user", "I keep bees")], user_id="u")
print(job.id, flush=True)
time.sleep(60)  # the worker is inside the (slow) model call when we are killed
"""


def test_crash_between_persisted_and_done_is_recovered(server: ChatServer, tmp_path: Path) -> None:
    server.reset()
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    server.queue(Scripted(content=extraction("The user keeps bees"), delay_s=3))
    server.responder = lambda body: extraction("The user keeps bees")
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHING_WORKER, url, server.base_url],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.stdout is not None
    job_id = proc.stdout.readline().strip()
    deadline = time.monotonic() + 20
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.requests, "the worker never called the model"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    with Memory(url, embedder=FakeEmbedder()) as memory:
        stuck = memory.store.batch([ops.GetJob("u", job_id)])[0]
        assert stuck.status is JobStatus.RUNNING  # claimed, never finished
        manager = MemoryManager(memory, OpenAIChat(base_url=server.base_url, model="m"))
        manager.start()  # a restarted process picks it up once the lease has passed
        assert manager.flush(timeout=20)
        job = manager.job(job_id, user_id="u")
        assert job is not None and job.status is JobStatus.DONE and job.attempts == 2
        texts = [r.text for r in memory.list(user_id="u").items]
        assert texts == ["The user keeps bees"]  # applied exactly once
        manager.close()


def test_jobs_wait_for_a_model(env, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from memlane.manager.manager import PROCESS_JOB, _payload

    memory, _, _, _ = env
    for name in ("MEMLANE_LLM_BASE_URL", "MEMLANE_LLM_MODEL", "MEMLANE_LLM_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    # Jobs left by an earlier process, picked up by a manager without a chat model: they
    # wait (before, each failed for good after five attempts).
    payload = _payload([("user", "I moved to Paris")], None, None, None)
    without = MemoryManager(memory)
    job = without.jobs.enqueue(PROCESS_JOB, payload, user_id="u")
    without.start()
    with pytest.raises(LLMError, match="chat model"):
        without.flush(timeout=1)
    assert without.job(job.id, user_id="u").status is JobStatus.PENDING
    without.close()


def test_flush_returns_at_its_timeout(env) -> None:  # type: ignore[no-untyped-def]
    from memlane.manager.manager import PROCESS_JOB, _payload

    _, manager, server, _ = env
    payload = _payload([("user", "I moved to Paris")], None, None, None)
    manager.jobs.enqueue(PROCESS_JOB, payload, user_id="u")
    # With a model, flush(timeout) returns at its deadline even when nothing was running
    # the jobs (it used to run them in the calling thread, past the deadline).
    server.queue(Scripted(content=extraction("The user lives in Paris"), delay_s=3.0))
    start = time.monotonic()
    assert manager.flush(timeout=0.5, user_id="u") is False
    assert time.monotonic() - start < 2.0


# ---------------------------------------------------------------------------- example


def test_example_agent_loop_runs_against_the_endpoint(server: ChatServer, tmp_path: Path) -> None:
    server.reset()

    def respond(body: dict[str, object]) -> object:
        if "response_format" not in body:
            return "Noted. Your flight to Oslo is on 3 June."
        schema = body["response_format"]["json_schema"]["name"]  # type: ignore[index]
        if schema == "Extraction":
            return extraction("The user flies to Oslo on 3 June")
        if schema == "Decisions":
            return {"decisions": [decision(0, "NOOP")]}
        return {"summary": "Trip planning for Oslo."}

    server.responder = respond
    env = example_env(tmp_path / "team.db", server)
    first = run_example("agent_loop.py", "--stop-after", "1", env=env)
    assert first.returncode == 0, first.stderr
    assert "stopped after step 1" in first.stdout
    second = run_example("agent_loop.py", env=env)
    assert second.returncode == 0, second.stderr
    assert "resuming at step 2" in second.stdout and "workflow done" in second.stdout
    assert "The user flies to Oslo on 3 June" in second.stdout  # the writer recalls the team memory


# ---------------------------------------------------------------------------- graph


def _relation(subject: str, predicate: str, obj: str, object_type: str) -> dict[str, object]:
    return {
        "subject": subject, "subject_type": "person", "predicate": predicate,
        "object": obj, "object_type": object_type, "exclusive": predicate == "lives in",
    }  # fmt: skip


def test_typed_triples_come_with_the_facts_and_a_move_ends_the_old_edge(env) -> None:  # type: ignore[no-untyped-def]
    memory, manager, server, clock = env
    lives_in_london = _relation("Alice Smith", "lives in", "London", "place")
    works_at = _relation("Alice Smith", "works_at", "Acme Corp", "organization")
    fact = {"text": "Alice Smith lives in London and works at Acme Corp", "kind": "fact"}
    server.queue({"memories": [{**fact, "relations": [lives_in_london, works_at]}]})
    first = manager.process([("user", "I'm Alice Smith, I live in London")], user_id="u")
    london_fact = first.candidates[0].record_id
    moved_at = clock.advance(days=30)
    paris = {"text": "Alice Smith lives in Paris", "kind": "fact"}
    server.queue(
        {
            "memories": [
                {**paris, "relations": [_relation("Alice Smith", "lives in", "Paris", "place")]}
            ]
        },
        {"decisions": [decision(0, "UPDATE", target=0, mode="contradict", text=paris["text"])]},
    )
    second = manager.process([("user", "I moved to Paris!")], user_id="u")
    assert second.candidates[0].outcome is Outcome.SUPERSEDED
    paris_fact = second.candidates[0].record_id
    # The extraction prompt asked for the triples with the facts, in the same call.
    assert "triples" in server.requests[0]["messages"][0]["content"]
    entities = {e.name: e for e in memory.entities(user_id="u")}
    assert entities["Alice Smith"].type.value == "person"  # typed by the model
    assert entities["London"].type.value == "place"
    assert entities["Acme Corp"].type.value == "organization"
    typed = {
        memory.entities(user_id="u", ids=[r.object_id])[0].name: r
        for r in memory.relations("Alice Smith", user_id="u")
        if r.predicate != "mentioned_with"
    }
    assert set(typed) == {"London", "Paris", "Acme Corp"}
    assert typed["London"].predicate == "lives_in"
    assert typed["London"].valid_to == moved_at and typed["London"].sources == (london_fact,)
    assert typed["Paris"].is_current and typed["Paris"].valid_from == moved_at
    assert typed["Paris"].sources == (paris_fact,)
    assert typed["Acme Corp"].is_current  # not the same predicate: not superseded
    current = memory.relations("Alice Smith", user_id="u", current=True)
    assert "London" not in {
        memory.entities(user_id="u", ids=[r.other(entities["Alice Smith"].id)])[0].name
        for r in current
        if r.predicate == "lives_in"
    }
