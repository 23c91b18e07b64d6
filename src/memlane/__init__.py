"""memlane: a memory layer for AI agents.

>>> from memlane import Memory
>>> with Memory("sqlite:///agent.db") as memory:            # doctest: +SKIP
...     memory.add("Prefers window seats", user_id="alice", kind="preference")
...     hits = memory.search("seat preference", user_id="alice")
"""

from memlane.api import AsyncMemory, Memory
from memlane.core.base import CoreConfig, MemoryInput
from memlane.core.context import Context
from memlane.core.search import RECIPES, SearchRecipe
from memlane.errors import (
    AccessDeniedError,
    ConfigurationError,
    ConflictError,
    CorruptStoreError,
    EmbeddingError,
    EmbeddingModelMismatchError,
    ForeignStoreError,
    ImportFormatError,
    InjectionRefusedError,
    LLMError,
    LLMOutputError,
    MemlaneError,
    NoModelError,
    NotFoundError,
    PiiRefusedError,
    PluginError,
    SchemaVersionError,
    StoreError,
    UnsupportedError,
    ValidationError,
)
from memlane.models import (
    ANONYMOUS_USER,
    AuditEvent,
    AuditLevel,
    Filters,
    HistoryAction,
    HistoryEvent,
    Job,
    JobStatus,
    MemoryKind,
    MemoryRecord,
    Message,
    Page,
    Run,
    Scope,
    SearchHit,
    Session,
    StateVersion,
    Trust,
    WorkflowState,
)
from memlane.pii import PiiPolicy

__version__ = "0.1.0"

__all__ = [
    "ANONYMOUS_USER",
    "RECIPES",
    "AccessDeniedError",
    "AsyncMemory",
    "AuditEvent",
    "AuditLevel",
    "ConfigurationError",
    "ConflictError",
    "Context",
    "CoreConfig",
    "CorruptStoreError",
    "EmbeddingError",
    "EmbeddingModelMismatchError",
    "Filters",
    "ForeignStoreError",
    "HistoryAction",
    "HistoryEvent",
    "ImportFormatError",
    "InjectionRefusedError",
    "Job",
    "JobStatus",
    "LLMError",
    "LLMOutputError",
    "MemlaneError",
    "Memory",
    "MemoryInput",
    "MemoryKind",
    "MemoryRecord",
    "Message",
    "NoModelError",
    "NotFoundError",
    "Page",
    "PiiPolicy",
    "PiiRefusedError",
    "PluginError",
    "Run",
    "SchemaVersionError",
    "Scope",
    "SearchHit",
    "SearchRecipe",
    "Session",
    "StateVersion",
    "StoreError",
    "Trust",
    "UnsupportedError",
    "ValidationError",
    "WorkflowState",
    "__version__",
]
