"""memlane for LangChain: a retriever over memlane search and a chat message history.

``MemlaneRetriever(memory=..., user_id=..., k=4)`` is a ``BaseRetriever``: each hit of
:meth:`memlane.Memory.search` becomes a ``Document`` whose ``id`` is the memory's id and
whose metadata holds ``id``, ``score``, ``kind``, ``topics``, ``session_id``, ``agent_id``,
``team``, ``importance``, ``created_at`` and the memory's own ``metadata``.

``MemlaneChatMessageHistory(memory=..., user_id=..., session_id=...)`` is a
``BaseChatMessageHistory`` on memlane session history: each ``add_messages`` call appends
one memlane run; each message is stored with its exact serialized form
(``message_to_dict``) in the memlane message's metadata (``metadata["langchain_message"]``),
so type, content (text or a list of blocks), tool calls, ``tool_call_id``, ``id``,
``name``, ``additional_kwargs`` and ``response_metadata`` come back as they were. Its text
is the memlane message's content, so what the user and the model said is also a
searchable episode. Messages written to the session through memlane's own API come back
as Human/AI/System messages.

``BaseChatMessageHistory`` (and ``RunnableWithMessageHistory``) are deprecated since
langchain-core 1.6.4 (removal in 2.0). LangChain warns only when its own classes are
instantiated, so making a :class:`MemlaneChatMessageHistory` warns too
(``LangChainDeprecationWarning``): it is built on that interface. For new code use
LangGraph persistence, with ``memlane.integrations.langgraph`` as its store.

Needs the extra: ``pip install 'memlane[langchain]'``.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from memlane.errors import require_extra

require_extra("langchain", "memlane.integrations.langchain", "langchain_core")

from langchain_core._api import LangChainDeprecationWarning
from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.documents import Document
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    message_to_dict,
    messages_from_dict,
)
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict
from pydantic import ValidationError as PydanticValidationError

from memlane.api import AsyncMemory, Memory
from memlane.errors import UnsupportedError, ValidationError
from memlane.models import Filters, Message, SearchHit, check_count, check_id, to_iso

__all__ = ["MESSAGE_KEY", "MemlaneChatMessageHistory", "MemlaneRetriever"]

MESSAGE_KEY = "langchain_message"
"""The memlane message metadata key holding the exact serialized LangChain message."""

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}
_PLAIN: dict[str, type[BaseMessage]] = {
    "user": HumanMessage,
    "assistant": AIMessage,
    "system": SystemMessage,
}


def _check_memory(memory: object) -> Memory | AsyncMemory:
    if not isinstance(memory, Memory | AsyncMemory):
        raise ValidationError(f"memory must be a Memory or AsyncMemory, got {memory!r}")
    return memory


# ---------------------------------------------------------------------- retriever


class MemlaneRetriever(BaseRetriever):
    """The user's memories most relevant to a query, as LangChain ``Document``s, best
    first. ``k`` is how many (also per call: ``invoke(query, k=3)``); ``filters`` and
    ``recipe`` are passed to :meth:`memlane.Memory.search`; ``session_id`` keeps only the
    memories of that session. With an ``AsyncMemory`` only ``ainvoke`` works."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    memory: Memory | AsyncMemory
    user_id: str
    k: int = 4
    session_id: str | None = None
    filters: Filters | None = None
    recipe: str = "hybrid"

    def __init__(self, **data: Any) -> None:
        _check_memory(data.get("memory"))
        try:
            super().__init__(**data)
        except PydanticValidationError as exc:
            raise ValidationError(f"bad MemlaneRetriever arguments: {exc}") from exc
        check_id("user_id", self.user_id)
        check_id("session_id", self.session_id, required=False)
        check_count("k", self.k)

    def _search_args(self, query: str, k: int | None) -> dict[str, Any]:
        limit = check_count("k", self.k if k is None else k)
        filters = self.filters or Filters()
        if self.session_id is not None:
            filters = Filters(**{**_filter_fields(filters), "session_id": self.session_id})
        return {"user_id": self.user_id, "limit": limit, "filters": filters, "recipe": self.recipe}

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        if not isinstance(self.memory, Memory):
            raise UnsupportedError("this retriever holds an AsyncMemory: use ainvoke")
        hits = self.memory.search(query, **self._search_args(query, k))
        return [_document(h) for h in hits]

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
    ) -> list[Document]:
        args = self._search_args(query, k)
        if isinstance(self.memory, AsyncMemory):
            hits = await self.memory.search(query, **args)
        else:
            hits = await asyncio.to_thread(self.memory.search, query, **args)
        return [_document(h) for h in hits]


def _filter_fields(filters: Filters) -> dict[str, Any]:
    return {name: getattr(filters, name) for name in Filters.__dataclass_fields__}


def _document(hit: SearchHit) -> Document:
    r = hit.record
    return Document(
        id=r.id,
        page_content=r.text,
        metadata={
            "id": r.id,
            "score": hit.score,
            "kind": r.kind.value,
            "topics": list(r.topics),
            "session_id": r.session_id,
            "agent_id": r.agent_id,
            "team": r.team,
            "importance": r.importance,
            "created_at": to_iso(r.created_at),
            "metadata": dict(r.metadata),
        },
    )


# ---------------------------------------------------------------------- history


class MemlaneChatMessageHistory(BaseChatMessageHistory):
    """A LangChain chat message history kept in a memlane session of one user.

    ``memory`` is a :class:`~memlane.Memory` (sync and async methods work; async ones run
    it in a thread) or an :class:`~memlane.AsyncMemory` (only the async methods:
    ``aget_messages``, ``aadd_messages``, ``aclear``). ``user_id`` is required: use
    ``"anonymous"`` for the explicit anonymous scope. Warns LangChainDeprecationWarning
    (see the module docstring).
    """

    def __init__(
        self,
        *,
        memory: Memory | AsyncMemory,
        user_id: str,
        session_id: str,
        agent_id: str | None = None,
    ) -> None:
        self.memory = _check_memory(memory)
        self.user_id = check_id("user_id", user_id) or user_id
        self.session_id = check_id("session_id", session_id) or session_id
        self.agent_id = check_id("agent_id", agent_id, required=False)
        warnings.warn(
            "MemlaneChatMessageHistory implements langchain-core's BaseChatMessageHistory, "
            "deprecated since langchain-core 1.6.4 and to be removed in 2.0; for new code "
            "use LangGraph persistence with memlane.integrations.langgraph",
            LangChainDeprecationWarning,
            stacklevel=2,
        )
        super().__init__()

    def __repr__(self) -> str:
        return (
            f"MemlaneChatMessageHistory(user_id={self.user_id!r}, session_id={self.session_id!r})"
        )

    def _sync(self) -> Memory:
        if not isinstance(self.memory, Memory):
            raise UnsupportedError(
                "this history holds an AsyncMemory: use aget_messages, aadd_messages, aclear"
            )
        return self.memory

    # -------------------------------------------------------------- sync

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The session's messages, in order, as they were added."""
        runs = self._sync().get_history(self.session_id, user_id=self.user_id)
        return _from_runs(runs)

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` as one memlane run (one transaction). A message that is not
        a BaseMessage or does not serialize to JSON raises ValidationError; nothing is
        stored."""
        rows = self._rows(messages)
        if rows:
            self._sync().add_messages(
                self.session_id, rows, user_id=self.user_id, agent_id=self.agent_id
            )

    def clear(self) -> None:
        """Delete the session in memlane: its messages, state and episodes."""
        self._sync().delete_session(self.session_id, user_id=self.user_id)

    # -------------------------------------------------------------- async

    async def aget_messages(self) -> list[BaseMessage]:
        """As :attr:`messages`."""
        if isinstance(self.memory, AsyncMemory):
            runs = await self.memory.get_history(self.session_id, user_id=self.user_id)
        else:
            runs = await asyncio.to_thread(
                self.memory.get_history, self.session_id, user_id=self.user_id
            )
        return _from_runs(runs)

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """As :meth:`add_messages`."""
        rows = self._rows(messages)
        if not rows:
            return
        if isinstance(self.memory, AsyncMemory):
            await self.memory.add_messages(
                self.session_id, rows, user_id=self.user_id, agent_id=self.agent_id
            )
        else:
            await asyncio.to_thread(
                self.memory.add_messages,
                self.session_id,
                rows,
                user_id=self.user_id,
                agent_id=self.agent_id,
            )

    async def aclear(self) -> None:
        """As :meth:`clear`."""
        if isinstance(self.memory, AsyncMemory):
            await self.memory.delete_session(self.session_id, user_id=self.user_id)
        else:
            await asyncio.to_thread(
                self.memory.delete_session, self.session_id, user_id=self.user_id
            )

    def _rows(self, messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
        if isinstance(messages, BaseMessage | str | Mapping) or not isinstance(messages, Sequence):
            raise ValidationError("messages must be a list of BaseMessage")
        limit = self.memory.core.config.max_text_chars
        return [_to_row(m, limit) for m in messages]


def _to_row(message: object, max_chars: int) -> dict[str, Any]:
    """The memlane message for one LangChain message: a role and text for search, the
    exact serialized message in metadata."""
    if not isinstance(message, BaseMessage):
        raise ValidationError(f"not a LangChain message: {type(message).__name__}")
    text = message.text[:max_chars]
    role = _ROLES.get(message.type, message.type)
    if not text.strip():
        calls = getattr(message, "tool_calls", None) or []
        text = "\n".join(f"{c['name']}({c['args']})" for c in calls)[:max_chars]
        role = f"{message.type}-message"  # no text of its own: not an episode
    return {
        "role": role,
        "content": text if text.strip() else f"[{role}]",
        "metadata": {MESSAGE_KEY: message_to_dict(message)},
    }


def _from_runs(runs: Sequence[Any]) -> list[BaseMessage]:
    out: list[BaseMessage] = []
    for run in runs:
        for m in run.messages:
            restored = _from_message(m)
            if restored is not None:
                out.append(restored)
    return out


def _from_message(message: Message) -> BaseMessage | None:
    data = message.metadata.get(MESSAGE_KEY)
    if isinstance(data, dict):
        return messages_from_dict([data])[0]
    plain = _PLAIN.get(message.role)
    return None if plain is None else plain(content=message.content)
