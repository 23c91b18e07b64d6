"""The phases of a learning pass (memlane.manager.learning), each on its own: the pure
ones (screen, triage, choices, plan, the prompts) with plain data, the flows (gather,
apply) over a real in-memory store, with the batches they run recorded."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from memlane import ConflictError, HistoryAction, Memory, MemoryKind
from memlane.core.base import Core, CoreConfig, MemoryInput
from memlane.core.flow import Runtime, run_sync
from memlane.manager import MemoryManager, Outcome, learning, planning
from memlane.manager.jobs import JobLease, JobQueue, completed
from memlane.manager.prompts import Decision, Decisions, ExtractedMemory
from memlane.manager.results import ManagerConfig
from memlane.models import JobStatus, MemoryRecord, content_hash
from memlane.ports import store as ops
from memlane.ports.llm import ChatRequest, ChatResponse
from memlane.testing import CannedLLM, FakeEmbedder

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
CORE = Core(model_id="fake", clock=lambda: NOW, config=CoreConfig(max_text_chars=60))


def unit(*xs: float) -> np.ndarray:
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def record(text: str, *, version: int = 1, topics: tuple[str, ...] = ()) -> MemoryRecord:
    item = MemoryInput(text=text, topics=topics)
    return replace(CORE.new_record("u", item, NOW - timedelta(days=1)), version=version)


def candidate(
    index: int, text: str, vector: np.ndarray, related: learning.Related = (), **memory: Any
) -> learning.Candidate:
    return learning.Candidate(index, ExtractedMemory(text=text, **memory), vector, related)


def rules(**config: Any) -> planning.Rules:
    scope = learning.PassScope("u", session_id="s", agent_id=None, team="t")
    return planning.Rules(scope, ManagerConfig(**config), NOW, "m", CORE)


# ---------------------------------------------------------------------------- screen


def test_screen_skips_past_the_limit_and_fails_unstorable_texts() -> None:
    memories = [ExtractedMemory(text=t) for t in ("ok one", "x" * 61, "ok two", "ok three")]
    prepare = learning.prepared("u", CORE)
    kept, settled = learning.screen(memories, ManagerConfig(max_candidates=3), prepare)
    assert [(c.index, c.text) for c in kept] == [(0, "ok one"), (2, "ok two")]
    assert settled[1].outcome is Outcome.FAILED and "limit is 60" in settled[1].reason
    assert settled[3].outcome is Outcome.SKIPPED and "max_candidates (3)" in settled[3].reason


# ---------------------------------------------------------------------------- triage


def test_triage_settles_duplicates_adds_the_unrelated_and_sends_the_rest_to_decide() -> None:
    tea = record("The user likes  tea")
    bike = record("The user rides a bike")
    cands = [
        candidate(0, "the user LIKES tea", unit(1, 0, 0), ((tea, 0.2),)),  # same text
        candidate(1, "The user cycles", unit(0, 1, 0), ((bike, 0.97),)),  # cosine
        candidate(2, "The user owns a kayak", unit(0, 0, 1)),  # nothing related
        candidate(3, "The user owns a kayak!", unit(0, 0.1, 1)),  # repeats candidate 2
        candidate(4, "The user rides fast", unit(0, 1, 1), ((bike, 0.6),)),
    ]
    t = learning.triage(cands, duplicate_threshold=0.95)
    assert t.settled[0].outcome is Outcome.DUPLICATE and t.settled[0].record_id == tea.id
    assert t.settled[1].outcome is Outcome.DUPLICATE and t.settled[1].record_id == bike.id
    assert t.settled[3].reason == "repeats an earlier candidate"
    assert [c.index for c in t.to_add] == [2] and [c.index for c in t.to_decide] == [4]


# ---------------------------------------------------------------------------- decide


def test_choices_keep_the_first_decision_per_candidate_in_range() -> None:
    answer = Decisions(
        decisions=[
            Decision(candidate=1, action="NOOP"),
            Decision(candidate=1, action="ADD"),
            Decision(candidate=5, action="ADD"),
        ]
    )
    got = learning.choices(answer, 2)
    assert list(got) == [1] and got[1].action == "NOOP"


def test_prompts_carry_the_instructions_and_number_memories_without_ids() -> None:
    config = ManagerConfig(capture_instructions="only pets", additional_instructions="Be brief.")
    system, user = learning.extract_prompt("user: I have a cat", config)
    assert "What to capture: only pets" in system.content and "Be brief." in system.content
    assert user.content == "<conversation>\nuser: I have a cat\n</conversation>"
    dog = record("The user has a dog")
    c = candidate(0, "The user has a cat", unit(1, 0), ((dog, 0.5),))
    _, body = learning.decide_prompt([c], config)
    assert '"number": 0' in body.content and "The user has a dog" in body.content
    assert dog.id not in body.content


# ---------------------------------------------------------------------------- plan


def test_plan_turns_each_decision_into_version_checked_writes() -> None:
    tea, job, home = record("Drinks tea", version=3), record("Is a nurse"), record("Lives in Rome")
    to_decide = (
        candidate(0, "Drinks green tea", unit(1, 0), ((tea, 0.8),), topics=["drinks"]),
        candidate(1, "Quit nursing", unit(0, 1), ((job, 0.6),)),
        candidate(2, "Lives in Milan", unit(1, 1), ((home, 0.5),)),
        candidate(3, "Moved to Milan", unit(1, 2), ((home, 0.5),)),
        candidate(4, "Likes Milan", unit(2, 1), ((home, 0.5),)),
    )
    chosen = {
        0: Decision(candidate=0, action="UPDATE", target=0, mode="refine", reason="detail"),
        1: Decision(candidate=1, action="DELETE", target=0),
        2: Decision(candidate=2, action="UPDATE", target=0, mode="contradict"),
        3: Decision(candidate=3, action="UPDATE", target=0, mode="contradict"),
        4: Decision(candidate=4, action="UPDATE", target=3),
    }
    p = planning.plan(learning.Triage({}, (), to_decide), learning.Decided(chosen), rules())
    outcomes = [p.results[i].outcome for i in range(5)]
    assert outcomes == [Outcome.UPDATED, Outcome.DELETED, Outcome.SUPERSEDED] + [Outcome.FAILED] * 2
    assert "already changed" in p.results[3].reason and "names no" in p.results[4].reason
    writes = [w for w in p.writes if isinstance(w, ops.WriteRecord)]
    assert [(w.record.id, w.expected_version) for w in writes] == [
        (tea.id, 3),
        (job.id, 1),
        (home.id, 1),
    ]
    refined, gone, closed = (w.record for w in writes)
    assert (
        refined.text == "Drinks green tea" and refined.version == 4 and "drinks" in refined.topics
    )
    assert gone.deleted_at == NOW and closed.valid_to == NOW
    (new,) = p.new
    assert closed.superseded_by == new.id and new.team == "t" and new.session_id == "s"
    assert [e.action for e in p.events] == [
        HistoryAction.UPDATE,
        HistoryAction.DELETE,
        HistoryAction.SUPERSEDE,
    ]
    assert all(e.actor == "memlane-manager:m" and e.at == NOW for e in p.events)
    assert p.texts == ["Drinks green tea"]


def test_plan_adds_obeys_the_switches_and_fails_bad_output_alone() -> None:
    home = record("Lives in Rome")
    t = learning.Triage(
        {7: learning.CandidateResult("dup", Outcome.DUPLICATE)},
        (candidate(0, "Owns a kayak", unit(1, 0), kind="preference"),),
        (
            candidate(1, "Lives in Milan", unit(0, 1), ((home, 0.5),)),
            candidate(2, "Sold the house", unit(1, 1), ((home, 0.5),)),
            candidate(3, "Likes Milan", unit(2, 1), ((home, 0.5),)),
        ),
    )
    chosen = {
        0: Decision(candidate=0, action="UPDATE", target=0, mode="refine", text=" "),
        1: Decision(candidate=1, action="DELETE", target=0),
    }
    p = planning.plan(t, learning.Decided(chosen), rules(allow_delete=False))
    assert p.results[7].outcome is Outcome.DUPLICATE  # settled outcomes are kept
    assert p.results[0].outcome is Outcome.ADDED and p.new[0].kind is MemoryKind.PREFERENCE
    assert p.new[0].metadata == {"source": "manager", "model": "m", "prompt": "extract/2"}
    assert "invalid model output" in p.results[1].reason
    assert p.results[2].outcome is Outcome.SKIPPED and "deleting" in p.results[2].reason
    assert "no decision" in p.results[3].reason and not p.writes
    off = planning.plan(
        t, learning.Decided(failure="no valid decision: bad"), rules(allow_add=False)
    )
    assert off.results[0].outcome is Outcome.SKIPPED and not off.new
    assert {off.results[i].reason for i in (1, 2, 3)} == {"no valid decision: bad"}


# ---------------------------------------------------------------------------- gather


class Recording:
    """A real store, with the batches a flow runs on it recorded (the embedding-model
    guard the runner adds in front of vector work left out)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.batches: list[list[ops.Op[Any]]] = []

    def batch(self, todo: Sequence[ops.Op[Any]]) -> list[Any]:
        self.batches.append([op for op in todo if not isinstance(op, ops.CheckEmbeddingModel)])
        return list(self.store.batch(todo))


@pytest.fixture()
def memory() -> Iterator[Memory]:
    with Memory("memory://", embedder=FakeEmbedder()) as m:
        yield m


def test_related_searches_follow_the_scope_and_the_subject_switch() -> None:
    c = candidate(0, "The user moved to Paris", unit(1, 0), topics=["home"])
    scope = learning.PassScope("u", agent_id="planner", team="t")
    searches = learning.related_searches(c, unit(1, 0), scope, NOW, "fake", ManagerConfig())
    assert [type(s).__name__ for s in searches] == ["VectorSearch", "LexicalSearch", "ListRecords"]
    f = searches[0].filters  # type: ignore[attr-defined]
    assert f.agent_id == "planner" and f.include_shared and f.team == "t"
    only = learning.related_searches(
        c, unit(1, 0), scope, NOW, "fake", ManagerConfig(subject_limit=0)
    )
    assert [type(s).__name__ for s in only] == ["VectorSearch"]


def test_gather_reads_for_all_candidates_in_a_fixed_number_of_batches(memory: Memory) -> None:
    for text in ("The user lives in London", "The user likes tea", "The user owns a kayak"):
        memory.add(text, user_id="u", topics=["home"])
    texts = ["The user lives in Paris", "The user likes green tea", "The user owns two kayaks"]
    cands = [
        learning.Candidate(i, ExtractedMemory(text=t, topics=["home"])) for i, t in enumerate(texts)
    ]
    flow = learning.gather(
        cands, learning.PassScope("u"), memory.core.now(), memory.core, ManagerConfig()
    )
    memory.setup()
    store = Recording(memory.store)
    got = run_sync(flow, Runtime(store, memory.embedder, sparse=memory.sparse))  # type: ignore[arg-type]
    batches = store.batches
    kinds = [sorted({type(op).__name__ for op in b}) for b in batches]
    assert kinds == [
        # the candidates' cached vectors and sparse terms (then one embedding call)
        ["GetEmbeddings", "GetSparse"],
        ["LexicalSearch", "ListRecords", "VectorSearch"],  # every candidate's searches
        ["GetRecords"],  # what they found, once
    ]
    assert sum(isinstance(op, ops.VectorSearch) for op in batches[1]) == 3
    related = [[r.text for r, _ in c.related] for c in got.candidates]
    assert all(related) and "The user lives in London" in related[0]
    assert set(got.known) == {content_hash(t) for t in texts}


# ---------------------------------------------------------------------------- apply


def _decide_on_first(text: str) -> dict[str, object]:
    return {"decisions": [{"candidate": 0, "action": "UPDATE", "target": 0, "mode": text}]}


def test_a_pass_writes_in_one_batch(memory: Memory) -> None:
    memory.add("The user lives in London", user_id="u")
    llm = CannedLLM(
        {"memories": [{"text": "The user lives in Paris"}, {"text": "The user has a cat"}]},
        _decide_on_first("contradict"),
    )
    manager = MemoryManager(memory, llm)
    memory.setup()
    store = Recording(memory.store)
    flow = manager.flows.process([("user", "Paris, cat")], user_id="u")
    result = run_sync(flow, Runtime(store, memory.embedder, llm, sparse=memory.sparse))  # type: ignore[arg-type]
    assert [c.outcome for c in result.candidates] == [Outcome.SUPERSEDED, Outcome.ADDED]
    writing = [b for b in store.batches if any(isinstance(op, WRITES) for op in b)]
    assert len(writing) == 1
    assert sum(isinstance(op, ops.WriteRecord) for op in writing[0]) == 3


WRITES = (ops.WriteRecord, ops.AppendHistory, ops.PutEmbeddings)


class Meanwhile(CannedLLM):
    """A canned model during whose decision call another writer changes a memory."""

    def __init__(self, change: Callable[[], object], *answers: object) -> None:
        super().__init__(*answers)
        self.change = change

    def complete(self, request: ChatRequest) -> ChatResponse:
        if request.operation == "decide":
            self.change()
        return super().complete(request)


def test_a_memory_changed_during_the_pass_fails_it_whole(memory: Memory) -> None:
    london = memory.add("The user lives in London", user_id="u")
    llm = Meanwhile(
        lambda: memory.update(london.id, user_id="u", text="The user lives in Leeds"),
        {"memories": [{"text": "The user lives in Paris"}, {"text": "The user has a cat"}]},
        _decide_on_first("contradict"),
    )
    with pytest.raises(ConflictError):
        MemoryManager(memory, llm).process([("user", "Paris, cat")], user_id="u")
    texts = [r.text for r in memory.list(user_id="u").items]
    assert texts == ["The user lives in Leeds"]  # the cat was not added either


def test_a_held_lease_is_not_renewed_and_no_lock_is_held_meanwhile(memory: Memory) -> None:
    memory.setup()
    seen: list[tuple[int, bool]] = []

    def handler(lease: JobLease) -> None:
        time.sleep(0.2)  # renewed a few times
        job = lease.hold()
        time.sleep(0.3)  # would be renewed a few times more
        free = lease.lock.acquire(blocking=False)
        if free:
            lease.lock.release()
        stored = memory.store.batch([ops.GetJob("u", job.id)])[0]
        seen.append((stored.version - job.version, free))
        done = completed(job, {"ok": True}, memory.core.now())
        memory.store.batch([ops.PutJob(done, job.version)])  # no ConflictError
        lease.release(done)

    queue = JobQueue(
        memory.store, {"k": handler}, clock=memory.core.clock, lease=timedelta(seconds=0.15)
    )
    job = queue.enqueue("k", {}, user_id="u")
    after = queue.run_once()
    assert seen == [(0, True)]
    assert after is not None and after.id == job.id and after.status is JobStatus.DONE
    assert after.version > 3  # claimed, renewed before the hold, done
