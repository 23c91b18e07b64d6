"""The memory manager: LLM extraction with non-destructive conflict resolution, background
jobs, LLM summaries, optimization strategies and agent tools.

Names are imported on first use, so the CLI can register its commands cheaply."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memlane.manager.manager import AsyncMemoryManager, MemoryManager
    from memlane.manager.optimizing import OptimizationReport
    from memlane.manager.results import CandidateResult, ManagerConfig, ManagerResult, Outcome
    from memlane.manager.strategies import Change, Decay, Deduplicate, Merge, Summarize, TokenCap
    from memlane.manager.tools import MemoryTools

_WHERE = {
    "CandidateResult": "results",
    "ManagerConfig": "results",
    "ManagerResult": "results",
    "OptimizationReport": "optimizing",
    "Outcome": "results",
    "AsyncMemoryManager": "manager",
    "MemoryManager": "manager",
    "Change": "strategies",
    "Decay": "strategies",
    "Deduplicate": "strategies",
    "Merge": "strategies",
    "Summarize": "strategies",
    "TokenCap": "strategies",
    "MemoryTools": "tools",
}

__all__ = [
    "AsyncMemoryManager",
    "CandidateResult",
    "Change",
    "Decay",
    "Deduplicate",
    "ManagerConfig",
    "ManagerResult",
    "MemoryManager",
    "MemoryTools",
    "Merge",
    "OptimizationReport",
    "Outcome",
    "Summarize",
    "TokenCap",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'memlane.manager' has no attribute {name!r}")
    return getattr(import_module(f"memlane.manager.{_WHERE[name]}"), name)
