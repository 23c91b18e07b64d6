"""The access rule (memlane.access), tested once as a table, and every interface that
must follow it: MemoryTools here, REST in test_server.py, MCP in test_serve_e2e.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from memlane import Filters, Memory, MemoryRecord, ValidationError
from memlane.access import (
    LOCAL_TENANT,
    Action,
    Grant,
    Permission,
    allows,
    authorize,
    public_user,
    storage_user,
    visible,
    visible_filters,
)
from memlane.errors import AccessDeniedError
from memlane.manager import MemoryTools
from memlane.models import MemoryKind, Scope
from memlane.testing import FakeEmbedder

FULL = Grant("acme")
ALICE = Grant("acme", users=("alice",))
BOT = Grant("acme", agents=("bot",))
READER = Grant("acme", permissions=frozenset({Permission.READ}))
WRITER = Grant("acme", permissions=frozenset({Permission.WRITE}))
BOT_READER = Grant("acme", agents=("bot",), permissions=frozenset({Permission.READ}))
NO_RECORD = "-"  # the call does not touch an existing object (create, list, search)

R, W, RA, WA = Action.READ, Action.WRITE, Action.READ_ALL, Action.WRITE_ALL

# grant, action, user, acting agent, owner of the object touched -> allowed
TABLE: list[tuple[Grant, Action, str, str | None, str | None, bool]] = [
    # A tenant-wide key: any user, any agent or none, everything; acting as an agent it
    # sees that agent's objects and shared ones, never another agent's.
    (FULL, R, "alice", None, NO_RECORD, True),
    (FULL, W, "bob", None, NO_RECORD, True),
    (FULL, RA, "bob", None, NO_RECORD, True),
    (FULL, WA, "bob", None, NO_RECORD, True),
    (FULL, R, "alice", None, "bot", True),
    (FULL, R, "alice", None, None, True),
    (FULL, R, "alice", "bot", "bot", True),
    (FULL, R, "alice", "bot", None, True),
    (FULL, R, "alice", "bot", "other", False),
    (FULL, W, "alice", "bot", "other", False),
    (FULL, RA, "alice", "bot", NO_RECORD, True),
    # A user-limited key: its users only.
    (ALICE, R, "alice", None, NO_RECORD, True),
    (ALICE, W, "alice", None, None, True),
    (ALICE, R, "bob", None, NO_RECORD, False),
    (ALICE, WA, "bob", None, NO_RECORD, False),
    # An agent-limited key: must act as one of its agents; sees and changes its own and
    # the shared objects; another agent's do not exist for it; no whole-user action.
    (BOT, R, "alice", None, NO_RECORD, False),
    (BOT, W, "alice", "other", NO_RECORD, False),
    (BOT, W, "alice", "bot", NO_RECORD, True),
    (BOT, R, "alice", "bot", "bot", True),
    (BOT, W, "alice", "bot", "bot", True),
    (BOT, R, "alice", "bot", None, True),
    (BOT, W, "alice", "bot", None, True),
    (BOT, R, "alice", "bot", "other", False),
    (BOT, W, "alice", "bot", "other", False),
    (BOT, RA, "alice", "bot", NO_RECORD, False),
    (BOT, WA, "alice", "bot", NO_RECORD, False),
    # Permissions: a read-only key reads, a write-only key writes.
    (READER, R, "alice", None, None, True),
    (READER, RA, "alice", None, NO_RECORD, True),
    (READER, W, "alice", None, None, False),
    (READER, WA, "alice", None, NO_RECORD, False),
    (WRITER, W, "alice", None, None, True),
    (WRITER, R, "alice", None, None, False),
    (BOT_READER, R, "alice", "bot", None, True),
    (BOT_READER, W, "alice", "bot", "bot", False),
]


@pytest.mark.parametrize(("grant", "action", "user", "agent", "owner", "expected"), TABLE)
def test_the_rule(
    grant: Grant, action: Action, user: str, agent: str | None, owner: str | None, expected: bool
) -> None:
    target: dict[str, Any] = {} if owner == NO_RECORD else {"owner": owner}
    assert allows(grant, action, user, agent, **target) is expected


def _record(agent_id: str | None) -> MemoryRecord:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return MemoryRecord(
        id=f"r-{agent_id}",
        user_id="u",
        kind=MemoryKind.FACT,
        text="x",
        content_hash="h",
        created_at=now,
        updated_at=now,
        agent_id=agent_id,
    )


@pytest.mark.parametrize("acting", [None, "bot"])
@pytest.mark.parametrize("owner", [None, "bot", "other"])
def test_store_queries_see_what_visible_says(acting: str | None, owner: str | None) -> None:
    # Listing and search go to the store as Filters; single objects are checked with
    # visible(). Both come from the rule, so they must agree on every record.
    scope = Scope("u", acting)
    f = visible_filters(scope, Filters())
    now = datetime(2026, 1, 2, tzinfo=UTC)
    assert f.matches(_record(owner), now) is visible(scope, owner)


def test_refusals_say_why_and_scopes_name_the_store_user() -> None:
    assert authorize(FULL, W, "alice", "bot") == Scope("acme::alice", "bot")
    with pytest.raises(AccessDeniedError, match="pass agent_id"):
        authorize(BOT, R, "alice", None)
    with pytest.raises(AccessDeniedError, match="whole user"):
        authorize(BOT, RA, "alice", "bot")
    with pytest.raises(AccessDeniedError, match="may not write"):
        authorize(READER, W, "alice", None)
    with pytest.raises(ValidationError):
        Grant("acme", permissions=frozenset({"admin"}))  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Grant("acme::x")


def test_the_local_tenant_is_the_plain_user_ids() -> None:
    # Data written through Python or the CLI as "alice" is the local tenant's "alice".
    local = Grant(LOCAL_TENANT)
    assert authorize(local, R, "alice", None).user_id == "alice"
    assert public_user(LOCAL_TENANT, "alice") == "alice"
    # Another tenant's users and the key store's system user are not local users.
    assert public_user(LOCAL_TENANT, "acme::alice") is None
    assert public_user(LOCAL_TENANT, "::memlane") is None
    with pytest.raises(ValidationError):
        storage_user(LOCAL_TENANT, "acme::alice")
    assert storage_user("acme", "alice") == "acme::alice"


# ---------------------------------------------------------------------------- MemoryTools


def _memories() -> tuple[Memory, dict[str, str]]:
    memory = Memory("memory://", embedder=FakeEmbedder())
    ids = {
        "bot": memory.add("Erin's cello lesson, the bot's note", user_id="erin", agent_id="bot").id,
        "shared": memory.add("Erin's cello lesson is on Friday", user_id="erin").id,
        "other": memory.add(
            "Erin's cello lesson, other's note", user_id="erin", agent_id="other"
        ).id,
    }
    return memory, ids


def test_memory_tools_follow_the_rule() -> None:
    memory, ids = _memories()
    tools = MemoryTools(memory, user_id="erin", agent_id="bot")
    found = tools.execute("search_memories", {"query": "cello lesson", "limit": 10})
    assert {m["memory_id"] for m in found["memories"]} == {ids["bot"], ids["shared"]}
    theirs = tools.execute("forget_memory", {"memory_id": ids["other"]})
    assert theirs["type"] == "NotFoundError"
    assert tools.execute("forget_memory", {"memory_id": ids["shared"]}) == {
        "forgotten": ids["shared"]
    }
    assert memory.get(ids["other"], user_id="erin").deleted_at is None
    # A tool made for no agent sees everything of the user.
    every = MemoryTools(memory, user_id="erin").execute(
        "search_memories", {"query": "cello lesson", "limit": 10}
    )
    assert {m["memory_id"] for m in every["memories"]} == {ids["bot"], ids["other"]}
    memory.close()


def test_another_agents_memory_answers_as_an_absent_one() -> None:
    """Tools and MCP alike: the answer about another agent's memory is word for word the
    answer about a memory that does not exist, so neither tells them apart."""
    import asyncio

    from mcp import Client

    from memlane import AsyncMemory
    from memlane.server.mcp import build_mcp, stdio_resolver

    absent = "01NOSUCHMEMORYANYWHERE0000"
    memory, ids = _memories()
    tools = MemoryTools(memory, user_id="erin", agent_id="bot")
    for name, extra in [("forget_memory", {}), ("update_memory", {"text": "x"})]:
        theirs = tools.execute(name, {"memory_id": ids["other"], **extra})
        nobody = tools.execute(name, {"memory_id": absent, **extra})
        assert theirs == {k: v.replace(absent, ids["other"]) for k, v in nobody.items()}, name
    memory.close()

    served = AsyncMemory("memory://", embedder=FakeEmbedder())

    async def scenario() -> tuple[str, str]:
        other = await served.add("Erin's cello, other's note", user_id="erin", agent_id="other")
        async with Client(build_mcp(served, stdio_resolver("erin"))) as client:
            texts = []
            for memory_id in (other.id, absent):
                call = {"memory_id": memory_id, "agent_id": "bot"}
                result = await client.call_tool("forget_memory", call)
                assert result.is_error
                texts.append(result.content[0].text.replace(memory_id, "ID"))  # type: ignore[union-attr]
        return texts[0], texts[1]

    theirs, nobody = asyncio.run(scenario())
    assert theirs == nobody and "NotFoundError" in theirs
