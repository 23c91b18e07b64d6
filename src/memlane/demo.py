"""The main job: two users remembered by one process, recalled by another.

Run through ``memlane demo``, which starts ``python -m memlane.demo remember URL`` and
then ``python -m memlane.demo recall URL`` as two separate processes.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

from memlane.api import Memory
from memlane.models import Filters, MemoryKind
from memlane.settings import Settings

USERS = ("demo-alice", "demo-bob")

FACTS = {
    "demo-alice": [
        ("I'm vegetarian, so no meat or fish please.", "preference", ["food"]),
        ("I live in Lisbon and cycle to work.", "fact", ["home"]),
        ("My daughter Maya turns six in March.", "fact", ["family"]),
    ],
    "demo-bob": [
        ("I'm allergic to peanuts.", "fact", ["food", "health"]),
        ("I play chess every Thursday evening.", "fact", ["hobby"]),
        ("Keep answers short; I read them on my phone.", "preference", ["style"]),
    ],
}

QUESTIONS = {
    "demo-alice": ["What should I cook for dinner?", "Where do I live?"],
    "demo-bob": ["Any food I must avoid?", "When is my chess night?"],
}


def remember(memory: Memory) -> None:
    for user in USERS:
        memory.forget_user(user)  # the demo starts clean every time it is run
    for user, facts in FACTS.items():
        for text, kind, topics in facts:
            memory.add(text, user_id=user, kind=kind, topics=topics)
        print(f"{user}: remembered {len(facts)} memories")
    memory.add_messages(
        "trip-planning",
        [
            {"role": "user", "content": "Plan a weekend in Porto for my family."},
            {"role": "assistant", "content": "Day one: Ribeira and a vegetarian lunch."},
        ],
        user_id="demo-alice",
    )
    memory.save_workflow(
        "porto-trip",
        user_id="demo-alice",
        session_id="trip-planning",
        step="book-train",
        data={"done": ["choose-dates"], "dates": "2026-12-05/2026-12-06"},
        expected_version=0,
    )
    memory.remember("timezone", "Europe/Lisbon", user_id="demo-alice", category="settings")
    print("demo-alice: session 'trip-planning' recorded; workflow paused at 'book-train'")
    print(f"process 1 exits at {datetime.now(UTC):%H:%M:%S}; nothing is kept in memory")


def recall(memory: Memory) -> int:
    failures = 0
    for user, questions in QUESTIONS.items():
        for question in questions:
            hits = memory.search(question, user_id=user, limit=1, filters=_facts())
            answer = hits[0].record.text if hits else "(nothing)"
            owner_ok = all(h.record.user_id == user for h in hits)
            failures += not owner_ok
            print(f"{user} asks {question!r}\n    -> {answer}")
    leak = memory.search("peanuts allergy", user_id="demo-alice", limit=10)
    if any("peanut" in h.record.text for h in leak):
        print("ISOLATION FAILURE: alice sees bob's memory")
        failures += 1
    else:
        print("demo-alice searching 'peanuts allergy' sees none of demo-bob's memories")
    flow = memory.load_workflow("porto-trip", user_id="demo-alice", session_id="trip-planning")
    if flow is None:
        print("workflow lost")
        return 1
    print(f"workflow 'porto-trip' resumes at step {flow.step!r} with {dict(flow.data)}")
    runs = memory.get_history("trip-planning", user_id="demo-alice", last_runs=1)
    print(f"last run of 'trip-planning': {[m.content for m in runs[-1].messages]}")
    print(f"keyed fact timezone = {memory.recall('timezone', user_id='demo-alice')}")
    return failures


def _facts() -> Filters:
    return Filters(kinds=(MemoryKind.FACT, MemoryKind.PREFERENCE))


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("remember", "recall"):
        print("usage: python -m memlane.demo remember|recall STORE_URL", file=sys.stderr)
        return 2
    step, url = argv
    settings = Settings.from_env(store_url=url)
    with Memory(url, embedder=settings.build_embedder(), sparse=settings.build_sparse()) as memory:
        if step == "remember":
            remember(memory)
            return 0
        return 1 if recall(memory) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
