"""The generic drivers of effect-yielding flows (memlane.effects), blocking and async."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

import pytest

from memlane.effects import adrive, drive


def _flow() -> Generator[str, Any, list[Any]]:
    """Asks for two effects; a KeyError from the second is caught and recorded."""
    seen: list[Any] = [(yield "double 2")]
    try:
        seen.append((yield "missing"))
    except KeyError as exc:
        seen.append(f"caught {exc}")
    return seen


TABLE = {"double 2": 4}


def _handle(effect: str) -> Any:
    return TABLE[effect]


async def _ahandle(effect: str) -> Any:
    await asyncio.sleep(0)
    return TABLE[effect]


def test_results_go_back_in_and_errors_are_raised_inside_the_flow() -> None:
    assert drive(_flow(), _handle) == [4, "caught 'missing'"]
    assert asyncio.run(adrive(_flow(), _ahandle)) == [4, "caught 'missing'"]


def test_errors_outside_catch_leave_the_flow_untouched() -> None:
    flow = _flow()
    with pytest.raises(KeyError):
        drive(flow, _handle, catch=ValueError)
    assert flow.gi_frame is not None  # suspended at the yield, never resumed
    with pytest.raises(KeyError):
        asyncio.run(adrive(_flow(), _ahandle, catch=ValueError))


def test_an_error_the_flow_does_not_handle_reaches_the_caller() -> None:
    def flow() -> Generator[str, Any, None]:
        yield "missing"

    with pytest.raises(KeyError, match="missing"):
        drive(flow(), _handle)


def test_a_memory_tells_its_observer_each_effect_and_its_duration() -> None:
    from memlane import AsyncMemory, Memory
    from memlane.core.flow import Batch, Effect, Embed
    from memlane.errors import NotFoundError
    from memlane.testing import FakeEmbedder

    seen: list[tuple[str, float]] = []

    def observe(effect: Effect, seconds: float) -> None:
        seen.append((type(effect).__name__, seconds))

    with Memory("memory://", embedder=FakeEmbedder(), on_effect=observe) as memory:
        memory.add("I'm vegetarian", user_id="u1")
        kinds = [kind for kind, _ in seen]
        assert Embed.__name__ in kinds and Batch.__name__ in kinds
        before = len(seen)
        with pytest.raises(NotFoundError):  # the store answered; the flow raised
            memory.get("no-such-id", user_id="u1")
        assert [kind for kind, _ in seen[before:]] == [Batch.__name__]
    assert all(seconds >= 0 for _, seconds in seen)

    async def run() -> list[str]:
        seen.clear()
        memory = AsyncMemory("memory://", embedder=FakeEmbedder())
        memory.on_effect = observe  # settable after construction, as the server does
        async with memory:
            await memory.search("food", user_id="u1")
        return [kind for kind, _ in seen]

    assert "Batch" in asyncio.run(run())
