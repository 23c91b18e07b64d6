"""An Agno agent whose whole memory lives in memlane: one line, ``db=MemlaneDb(memory)``.

    MEMLANE_LLM_BASE_URL=http://localhost:11434/v1 MEMLANE_LLM_MODEL=llama3.1 \\
        python examples/agno_agent.py --user alice --session s1 "I'm vegetarian"
    python examples/agno_agent.py --user alice --session s2 "What should I cook tonight?"

Run it twice, as above: the second process (a new session) still knows what the first
one learned, because Agno's memory manager wrote it to memlane and the agent reads it
back into its prompt. The agent also has memlane's tools (search, add, update, forget,
keyed facts, session state) for the run's user. The chat model is any OpenAI-compatible
endpoint (``--base-url`` / ``MEMLANE_LLM_BASE_URL``, ``--model`` / ``MEMLANE_LLM_MODEL``,
``MEMLANE_LLM_API_KEY``); store and embedder come from the environment like the CLI's
(``MEMLANE_STORE``, ``MEMLANE_EMBEDDER``). Needs ``pip install 'memlane[agno]'``.
"""

from __future__ import annotations

import argparse
import os
import sys

from agno.agent import Agent
from agno.models.openai.like import OpenAILike

from memlane import Memory
from memlane.integrations.agno import MemlaneDb, MemlaneTools


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("message")
    parser.add_argument("--user", required=True, help="whose memory (never defaulted)")
    parser.add_argument("--session", required=True)
    parser.add_argument("--base-url", default=os.environ.get("MEMLANE_LLM_BASE_URL"))
    parser.add_argument("--model", default=os.environ.get("MEMLANE_LLM_MODEL", "llama3.1"))
    args = parser.parse_args(argv)
    if not args.base_url:
        parser.error("give --base-url or set MEMLANE_LLM_BASE_URL (an OpenAI-compatible /v1)")

    with Memory.from_env() as memory:
        agent = Agent(
            name="assistant",
            model=OpenAILike(
                id=args.model,
                base_url=args.base_url,
                api_key=os.environ.get("MEMLANE_LLM_API_KEY", "not-needed"),
            ),
            db=MemlaneDb(memory),  # user memories, sessions, runs, summaries: in memlane
            tools=[MemlaneTools(memory)],  # agentic memory, scoped to the run's user
            update_memory_on_run=True,  # Agno's memory manager learns facts after each run
            add_history_to_context=True,
            num_history_runs=3,
            instructions="You are a helpful assistant. Use what you know about the user.",
            telemetry=False,  # Agno reports runs to its cloud by default; stay local
        )
        reply = agent.run(args.message, user_id=args.user, session_id=args.session)
        print(reply.content)
        for m in agent.get_user_memories(user_id=args.user) or []:
            print(f"memory: {m.memory}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
