"""The manager's decision logic with canned model answers (no server)."""

from __future__ import annotations

from memlane import Memory
from memlane.manager import MemoryManager, Outcome
from memlane.testing import CannedLLM, FakeEmbedder


def _facts(*texts: str) -> dict[str, object]:
    return {"memories": [{"text": t} for t in texts]}


def test_bad_targets_and_double_changes_fail_alone() -> None:
    with Memory("memory://", embedder=FakeEmbedder()) as memory:
        bike = memory.add("The user rides a blue bike", user_id="u")
        llm = CannedLLM(
            _facts(
                "The user rides a red bike", "The user rides a green bike", "The user rides bikes"
            ),
            {
                "decisions": [
                    {"candidate": 0, "action": "UPDATE", "target": 0, "mode": "contradict"},
                    {"candidate": 1, "action": "UPDATE", "target": 0, "mode": "contradict"},
                    {"candidate": 2, "action": "DELETE", "target": 7},
                    {"candidate": 9, "action": "ADD"},
                ]
            },
        )
        result = MemoryManager(memory, llm).process([("user", "bikes")], user_id="u")
        outcomes = [c.outcome for c in result.candidates]
        assert outcomes == [Outcome.SUPERSEDED, Outcome.FAILED, Outcome.FAILED]
        assert "already changed" in result.candidates[1].reason
        assert "names no existing memory" in result.candidates[2].reason
        assert memory.get(bike.id, user_id="u").superseded_by == result.candidates[0].record_id
        decide = llm.requests[1]
        assert decide.operation == "decide" and decide.schema is not None


def test_missing_decision_is_a_reported_failure() -> None:
    with Memory("memory://", embedder=FakeEmbedder()) as memory:
        memory.add("The user speaks French", user_id="u")
        llm = CannedLLM(_facts("The user speaks French fluently"), {"decisions": []})
        result = MemoryManager(memory, llm).process([("user", "je parle")], user_id="u")
        (c,) = result.candidates
        assert c.outcome is Outcome.FAILED and "no decision" in c.reason and not result.changed


def test_custom_instructions_reach_the_prompt() -> None:
    with Memory("memory://", embedder=FakeEmbedder()) as memory:
        llm = CannedLLM(_facts("The user is allergic to nuts"))
        manager = MemoryManager(
            memory,
            llm,
            capture_instructions="only health information",
            additional_instructions="Write in English.",
        )
        result = manager.process([{"role": "user", "content": "nuts are bad for me"}], user_id="u")
        assert result.candidates[0].outcome is Outcome.ADDED
        system = llm.requests[0].messages[0].content
        assert "only health information" in system and "Write in English." in system
        assert result.prompt_versions == ("extract/2",)
        record = memory.get(result.candidates[0].record_id or "", user_id="u")
        assert record.metadata["prompt"] == "extract/2" and record.metadata["model"] == "canned"
        own = MemoryManager(memory, CannedLLM(_facts("x")), system_message="Only names.")
        own.process([("user", "hi")], user_id="v")
        assert own.llm.requests[0].messages[0].content.startswith("Only names.")  # type: ignore[union-attr]


def test_bad_decision_output_fails_only_its_candidate() -> None:
    with Memory("memory://", embedder=FakeEmbedder()) as memory:
        memory.add("The user owns a canoe", user_id="u")
        llm = CannedLLM(
            {
                "memories": [
                    {"text": "The user owns a red canoe", "topics": ["", " "]},
                    {"text": "The user owns a boat"},
                ]
            },
            {
                "decisions": [
                    {
                        "candidate": 0,
                        "action": "UPDATE",
                        "target": 0,
                        "mode": "refine",
                        "text": " ",
                    },
                    {"candidate": 1, "action": "ADD"},
                ]
            },
        )
        result = MemoryManager(memory, llm).process([("user", "canoe, boat")], user_id="u")
        by_text = {c.text: c for c in result.candidates}
        assert by_text["The user owns a red canoe"].outcome is Outcome.FAILED
        assert "invalid model output" in by_text["The user owns a red canoe"].reason
        boat = by_text["The user owns a boat"]
        assert boat.outcome is Outcome.ADDED
        assert memory.get(boat.record_id or "", user_id="u").topics == ()


def test_a_pass_only_touches_its_own_team() -> None:
    with Memory("memory://", embedder=FakeEmbedder()) as memory:
        other = memory.add("The user lives in Rome", user_id="u", team="b")
        llm = CannedLLM({"memories": [{"text": "The user lives in Milan"}]})
        result = MemoryManager(memory, llm).process([("user", "Milan")], user_id="u", team="a")
        # Team b's memory is not even shown to the decider: the candidate is simply added.
        (c,) = result.candidates
        assert c.outcome is Outcome.ADDED and len(llm.requests) == 1
        assert memory.get(other.id, user_id="u").is_current
        assert memory.get(c.record_id or "", user_id="u").team == "a"


def test_more_candidates_than_allowed_are_reported() -> None:
    with Memory("memory://", embedder=FakeEmbedder()) as memory:
        llm = CannedLLM({"memories": [{"text": f"Fact number {i} about kites"} for i in range(4)]})
        result = MemoryManager(memory, llm, max_candidates=2).process([("user", "x")], user_id="u")
        assert [c.outcome for c in result.candidates][2:] == [Outcome.SKIPPED] * 2
