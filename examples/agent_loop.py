"""Two agents sharing a team memory, in a workflow that survives interruption.

    MEMLANE_LLM_BASE_URL=http://localhost:11434/v1 MEMLANE_LLM_MODEL=llama3.1 \\
        python examples/agent_loop.py            # any OpenAI-compatible endpoint

Each step is the agent loop: recall (a token-budgeted context block) -> prompt -> model
-> record (the run goes to session history; facts are learned in the background by the
memory manager, under the team's scope). A ``planner`` agent talks to the user; a
``writer`` agent then recalls what the team learned and drafts a note. The workflow is
checkpointed after each step: stop it (``--stop-after 1``, Ctrl-C, a crash) and the next
run resumes where it stopped. Store, embedder and chat model come from the environment
(``Memory.from_env``, ``OpenAIChat.from_env``), like the CLI's.
"""

from __future__ import annotations

import argparse
import sys

from memlane import Memory
from memlane.errors import ConfigurationError
from memlane.llm import ChatMessage, ChatRequest, OpenAIChat
from memlane.manager import MemoryManager

USER = "traveller-1"
SESSION = "trip-planning"
TEAM = "trip-team"
WORKFLOW = "plan-trip"
BUDGET = 600  # tokens of memory per prompt

USER_SAYS = "I'm flying to Oslo on 3 June, please plan around that."


def agent_turn(
    memory: Memory, manager: MemoryManager, llm: OpenAIChat, agent: str, task: str
) -> str:
    # 1. recall
    context = memory.build_context(user_id=USER, session_id=SESSION, query=task, budget=BUDGET)
    # 2. prompt
    messages = (
        ChatMessage("system", f"You are the {agent} agent of a travel team.\n{context.text}"),
        ChatMessage("user", task),
    )
    # 3. model
    reply = llm.complete(ChatRequest(messages, operation=agent)).content
    # 4. record: the run in session history, and facts learned in the background
    turn = [("user", task), ("assistant", reply)]
    memory.add_messages(SESSION, turn, user_id=USER, agent_id=agent, team=TEAM)
    manager.process_in_background(turn, user_id=USER, session_id=SESSION, agent_id=agent, team=TEAM)
    print(f"[{agent}] used {context.tokens}/{BUDGET} memory tokens: {context.breakdown}")
    print(f"[{agent}] {reply}")
    return reply


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stop-after", type=int, default=0, help="stop after this step")
    args = parser.parse_args()
    try:
        llm = OpenAIChat.from_env()
    except ConfigurationError as exc:
        print(exc, file=sys.stderr)
        return 2
    with Memory.from_env() as memory, MemoryManager(memory, llm) as manager:
        checkpoint = memory.load_workflow(WORKFLOW, user_id=USER, session_id=SESSION)
        step = 1 if checkpoint is None else int(checkpoint.data["next"])
        version = 0 if checkpoint is None else checkpoint.version
        if checkpoint is not None and checkpoint.status == "done":
            print("workflow done already")
            return 0
        if step > 1:
            print(f"resuming at step {step}")
        while step <= 2:
            if step == 1:
                agent_turn(memory, manager, llm, "planner", USER_SAYS)
            else:
                facts = memory.search("trip dates", user_id=USER, limit=3)
                known = "; ".join(h.record.text for h in facts if h.record.kind != "episode")
                print(f"[writer] team memory: {known}")
                agent_turn(memory, manager, llm, "writer", "Draft a one-line trip note.")
            if not manager.flush(timeout=60):  # learned facts are in before the checkpoint
                print(f"learning after step {step} did not finish; not checkpointed")
                return 1
            status = "done" if step == 2 else "running"
            saved = memory.save_workflow(
                WORKFLOW, user_id=USER, session_id=SESSION, step=f"step-{step}",
                data={"next": step + 1}, status=status, expected_version=version,
            )  # fmt: skip
            version = saved.version
            if args.stop_after == step:
                print(f"stopped after step {step}")
                return 0
            step += 1
        print("workflow done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
