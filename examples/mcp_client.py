"""An MCP client using memlane as one user's memory, as a desktop assistant does.

    MEMLANE_STORE=sqlite:///memlane.db python examples/mcp_client.py --user alice

It starts ``memlane mcp --user alice`` (stdio; the store and embedder come from the
environment, like the CLI's), lists the tools with their annotations, stores a free-text
memory and a keyed fact, searches, and reads the user's memories as a resource. The
server is bound to the user: no tool takes a ``user_id``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from mcp import Client, StdioServerParameters


def _server(user: str) -> StdioServerParameters:
    """This Python's ``memlane mcp`` (the same as the ``memlane`` command on PATH)."""
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "memlane.cli", "mcp", "--user", user],
        env=dict(os.environ),
    )


def _hints(tool: Any) -> str:
    a = tool.annotations
    if a.read_only_hint:
        return "read-only"
    return "destructive" if a.destructive_hint else "write"


async def main(user: str) -> None:
    async with Client(_server(user)) as client:
        for tool in (await client.list_tools()).tools:
            print(f"tool {tool.name:16} {_hints(tool)}")
        added = await client.call_tool("add_memory", {"text": "Prefers aisle seats on trains"})
        print("added", added.structured_content)
        await client.call_tool("remember", {"key": "home_station", "value": "Zurich HB"})
        recalled = await client.call_tool("recall", {"key": "home_station"})
        print("recalled", recalled.structured_content)
        found = await client.call_tool("search_memories", {"query": "seat on the train"})
        print("found", found.structured_content)
        page = await client.read_resource("memlane://memories")
        memories = json.loads(page.contents[0].text)["memories"]  # type: ignore[union-attr]
        print(f"resource memlane://memories: {len(memories)} memories")
        for m in memories:
            print(" -", m["text"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--user", default="alice")
    asyncio.run(main(parser.parse_args().user))
