"""The memory manager: LLM extraction with non-destructive conflict resolution, background
jobs, LLM summaries, optimization strategies and agent tools."""

from memlane.manager.flows import (
    CandidateResult,
    ManagerConfig,
    ManagerResult,
    OptimizationReport,
    Outcome,
)
from memlane.manager.manager import AsyncMemoryManager, MemoryManager
from memlane.manager.strategies import Change, Decay, Deduplicate, Merge, Summarize, TokenCap
from memlane.manager.tools import MemoryTools

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
