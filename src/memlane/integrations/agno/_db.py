"""MemlaneDb: Agno's database interface, keeping an agent's memory in memlane."""

from __future__ import annotations

from typing import Any, NoReturn

from agno.db.base import BaseDb

from memlane.api import Memory
from memlane.core.search import SearchRecipe
from memlane.integrations.agno._memories import MemoriesMixin
from memlane.integrations.agno._scope import Documents, unsupported
from memlane.integrations.agno._sessions import SessionsMixin
from memlane.models import check_count


def _not_kept(feature: str, hint: str = "") -> Any:
    """A BaseDb method memlane does not keep: raises UnsupportedByMemlaneError."""

    def method(self: MemlaneDb, *args: Any, **kwargs: Any) -> NoReturn:
        raise unsupported(feature, hint)

    method.__doc__ = f"Not kept by memlane ({feature}): raises UnsupportedByMemlaneError."
    return method


class MemlaneDb(MemoriesMixin, SessionsMixin, BaseDb):
    """Agno's database (``Agent(db=...)``, ``Team(db=...)``) over a :class:`memlane.Memory`.

    User memories, sessions, runs and session summaries are kept in memlane (an Agno
    user is the memlane user of the same id); see the module docs of ``_memories`` and
    ``_sessions`` for the mapping. An Agno call without a user (``None``, or the
    ``"default"`` Agno's memory manager puts in its place) raises MissingUserError,
    unless ``anonymous=True``, which maps it to memlane's explicit anonymous scope.
    Metrics, evals, knowledge, traces, spans, learnings and Agno's schema versions are
    not kept: those methods raise UnsupportedByMemlaneError (a NotImplementedError).

    ``search_recipe`` is the memlane search recipe used for ``search_content``;
    ``search_limit`` the number of hits such a search returns when Agno gives no
    limit. The memory is the caller's: :meth:`close` does not close it. Calls block
    (Agno runs a sync db from ``arun`` too).
    """

    def __init__(
        self,
        memory: Memory,
        *,
        anonymous: bool = False,
        search_recipe: str | SearchRecipe = "hybrid",
        search_limit: int = 50,
        id: str | None = None,
    ) -> None:
        if not isinstance(memory, Memory):
            raise TypeError(f"MemlaneDb needs a memlane.Memory, got {type(memory).__name__}")
        super().__init__(id=id)
        self.memory = memory
        self.anonymous = anonymous
        self.search_recipe = search_recipe
        self.search_limit = check_count("search_limit", search_limit)
        self.docs = Documents(memory)

    def __repr__(self) -> str:
        return f"MemlaneDb({self.memory!r}, anonymous={self.anonymous})"

    def table_exists(self, table_name: str) -> bool:
        """memlane has no Agno tables; its own schema is created and migrated by memlane."""
        return False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BaseDb:
        """Not possible: a MemlaneDb wraps a live Memory. Raises UnsupportedByMemlaneError."""
        raise unsupported("rebuilding a db from its dict", "make MemlaneDb(memory) in code")

    def clear_memories(self) -> None:
        """Not kept: it would erase every user's memories at once. Raises
        UnsupportedByMemlaneError; use ``memory.forget_user(user_id)``."""
        raise unsupported("clear_memories (all users at once)", "use memory.forget_user(user_id)")

    get_latest_schema_version = _not_kept("schema versions", "memlane migrates its own schema")
    upsert_schema_version = _not_kept("schema versions", "memlane migrates its own schema")
    get_metrics = _not_kept("metrics")
    calculate_metrics = _not_kept("metrics")
    delete_knowledge_content = _not_kept("knowledge")
    get_knowledge_content = _not_kept("knowledge")
    get_knowledge_contents = _not_kept("knowledge")
    upsert_knowledge_content = _not_kept("knowledge")
    create_eval_run = _not_kept("evals")
    delete_eval_runs = _not_kept("evals")
    get_eval_run = _not_kept("evals")
    get_eval_runs = _not_kept("evals")
    rename_eval_run = _not_kept("evals")
    update_eval_run_user_id = _not_kept("evals")
    upsert_trace = _not_kept("traces")
    get_trace = _not_kept("traces")
    get_traces = _not_kept("traces")
    get_trace_stats = _not_kept("traces")
    create_span = _not_kept("spans")
    create_spans = _not_kept("spans")
    get_span = _not_kept("spans")
    get_spans = _not_kept("spans")
    get_learning = _not_kept("learnings")
    upsert_learning = _not_kept("learnings")
    delete_learning = _not_kept("learnings")
    get_learnings = _not_kept("learnings")
