"""An OpenAI Agents SDK agent whose conversation and memory live in memlane.

    MEMLANE_LLM_BASE_URL=http://localhost:11434/v1 MEMLANE_LLM_MODEL=llama3.1 \\
        python examples/openai_agents_session.py "I fly to Oslo on 3 June."
    python examples/openai_agents_session.py "When do I fly?"     # a new process remembers

Each run is one turn of ``Runner.run`` with ``session=MemlaneSession(...)``: the SDK reads
the conversation so far from memlane and appends the turn's items (messages, tool calls
and their outputs) to it. The agent also has memlane's memory tools (``remember``,
``search_memories``, ...) bound to this one user. Store and embedder come from the
environment like the CLI's (``Memory.from_env``); the model is any OpenAI-compatible
chat-completions endpoint (``MEMLANE_LLM_BASE_URL``, ``MEMLANE_LLM_MODEL``,
``MEMLANE_LLM_API_KEY``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from agents import Agent, OpenAIChatCompletionsModel, Runner, set_tracing_disabled
from openai import AsyncOpenAI

from memlane import Memory
from memlane.integrations.openai_agents import MemlaneSession, memory_tools

USER = "traveller-1"
SESSION = "trip-planning"


async def turn(memory: Memory, model: OpenAIChatCompletionsModel, text: str) -> str:
    session = MemlaneSession(SESSION, memory, user_id=USER)
    agent = Agent(
        name="planner",
        instructions="You plan trips. Remember lasting facts about the user with your tools.",
        model=model,
        tools=memory_tools(memory, user_id=USER),
    )
    result = await Runner.run(agent, text, session=session)
    items = await session.get_items()
    print(f"[session] {len(items)} items in memlane session {SESSION!r}")
    return str(result.final_output)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("text", help="what the user says this turn")
    args = parser.parse_args()
    base_url = os.environ.get("MEMLANE_LLM_BASE_URL")
    if not base_url:
        print(
            "set MEMLANE_LLM_BASE_URL (and MEMLANE_LLM_MODEL) to a chat endpoint", file=sys.stderr
        )
        return 2
    set_tracing_disabled(True)  # keep traces local: nothing is sent to api.openai.com
    client = AsyncOpenAI(base_url=base_url, api_key=os.environ.get("MEMLANE_LLM_API_KEY", "none"))
    model = OpenAIChatCompletionsModel(os.environ.get("MEMLANE_LLM_MODEL", "llama3.1"), client)
    with Memory.from_env() as memory:
        print(f"[agent] {asyncio.run(turn(memory, model, args.text))}")
        facts = memory.search("trip", user_id=USER, limit=3)
        known = [h.record.text for h in facts if h.record.kind != "episode"]
        print(f"[memory] {known}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
