"""Agno user memories as memlane memories.

An Agno ``UserMemory`` is a memlane ``fact`` of the same user, with Agno's topics,
``agent_id`` and ``team_id`` (memlane's ``team``). Its Agno id is kept in the record's
metadata (``agno_memory_id``) and carried to every new version: when Agno changes a
memory's words, the memlane record is superseded (the old version stays, closed, in
history) and the new record answers to the same Agno id. A memory made in memlane
directly (``memory.add``, the CLI, the memory manager) shows to Agno with its memlane
id. Facts, preferences and procedures show; episodes, summaries and keyed facts do not.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from agno.db.schemas.memory import UserMemory

from memlane.api import Memory
from memlane.core.search import SearchRecipe
from memlane.errors import NotFoundError, ValidationError
from memlane.integrations.agno._scope import resolve_user
from memlane.models import Filters, MemoryKind, MemoryRecord, check_count

KINDS = (MemoryKind.FACT, MemoryKind.PREFERENCE, MemoryKind.PROCEDURE)
"""The memlane kinds Agno sees as user memories."""

ID_KEY = "agno_memory_id"
INPUT_KEY = "agno_input"
FEEDBACK_KEY = "agno_feedback"
CREATED_KEY = "agno_created_at"
ACTOR = "agno"


def to_user_memory(record: MemoryRecord) -> UserMemory:
    """The Agno view of a memlane memory."""
    meta = record.metadata
    created = meta.get(CREATED_KEY)
    return UserMemory(
        memory=record.text,
        memory_id=str(meta.get(ID_KEY) or record.id),
        topics=list(record.topics) or None,
        user_id=record.user_id,
        input=meta.get(INPUT_KEY),
        created_at=int(created) if isinstance(created, int) else int(record.created_at.timestamp()),
        updated_at=int(record.updated_at.timestamp()),
        feedback=meta.get(FEEDBACK_KEY),
        agent_id=record.agent_id,
        team_id=record.team,
    )


def page_bounds(limit: int | None, page: int | None) -> tuple[int, int | None]:
    """Start and end of Agno's ``page`` (1-based) of ``limit`` items; no limit: all.
    Raises ValidationError for a limit or page below 1."""
    if limit is None:
        return 0, None
    check_count("limit", limit)
    if page is not None:
        check_count("page", page)
    start = ((page or 1) - 1) * limit
    return start, start + limit


def sort_rows(rows: list[dict[str, Any]], sort_by: str | None, sort_order: str | None) -> None:
    """Sort Agno rows in place as Agno's adapters do: by ``sort_by`` (``updated_at``
    falling back to ``created_at``), newest/largest first unless ``sort_order`` is
    ``"asc"``, missing values last. An unknown field leaves the order (Agno's rule)."""
    if sort_by is None or not rows or not any(sort_by in r for r in rows):
        return

    def value(row: dict[str, Any]) -> Any:
        v = row.get(sort_by)
        if v is None and sort_by == "updated_at":
            v = row.get("created_at")
        return v if not isinstance(v, list) else ",".join(map(str, v))

    present = [r for r in rows if value(r) is not None]
    missing = [r for r in rows if value(r) is None]
    present.sort(key=value, reverse=sort_order != "asc")
    rows[:] = present + missing


class MemoriesMixin:
    """Agno's user-memory methods over :class:`memlane.Memory`."""

    memory: Memory
    anonymous: bool
    search_recipe: str | SearchRecipe
    search_limit: int

    def _user(self, user_id: str | None, what: str) -> str:
        return resolve_user(user_id, anonymous=self.anonymous, what=what)

    # ------------------------------------------------------------------ reads

    def _find(self, user: str, memory_id: str) -> MemoryRecord | None:
        """The current memlane record answering to an Agno memory id, or None."""
        f = Filters(kinds=KINDS, metadata={ID_KEY: memory_id})
        found = self.memory.list(user_id=user, filters=f, limit=1)
        if found.items:
            return found.items[0]
        try:
            record = self.memory.get(memory_id, user_id=user)
        except (NotFoundError, ValidationError):
            return None
        if record.is_current and record.kind in KINDS and ID_KEY not in record.metadata:
            return record
        return None

    def _records(self, user: str, f: Filters) -> Iterator[MemoryRecord]:
        cursor = None
        while True:
            page = self.memory.list(
                user_id=user, filters=f, cursor=cursor, limit=1000, newest_first=False
            )
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def get_user_memory(
        self,
        memory_id: str,
        deserialize: bool | None = True,
        user_id: str | None = None,
    ) -> UserMemory | dict[str, Any] | None:
        """The user's memory with this Agno id, or None. Raises MissingUserError."""
        record = self._find(self._user(user_id, "get_user_memory"), memory_id)
        if record is None:
            return None
        memory = to_user_memory(record)
        return memory if deserialize else memory.to_dict()

    def get_user_memories(
        self,
        user_id: str | None = None,
        agent_id: str | None = None,
        team_id: str | None = None,
        topics: list[str] | None = None,
        search_content: str | None = None,
        limit: int | None = None,
        page: int | None = None,
        sort_by: str | None = None,
        sort_order: str | None = None,
        deserialize: bool | None = True,
    ) -> list[UserMemory] | tuple[list[dict[str, Any]], int]:
        """The user's memories, filtered by agent, team and topics (any of them).

        With ``search_content`` the memories come from memlane's search (hybrid by
        default, ranked by relevance, at most ``limit * page`` or, without a limit, the
        db's ``search_limit``); otherwise all of them, in creation order unless
        ``sort_by`` says otherwise, paged by ``limit`` and ``page`` (1-based).
        ``deserialize=False`` returns ``(dicts, total)``. Raises MissingUserError,
        ValidationError."""
        user = self._user(user_id, "get_user_memories")
        start, end = page_bounds(limit, page)
        f = Filters(kinds=KINDS, topics=tuple(topics or ()), agent_id=agent_id, team=team_id)
        if search_content is not None and search_content.strip():
            hits = self.memory.search(
                search_content, user_id=user, filters=f, recipe=self.search_recipe,
                limit=end if end is not None else self.search_limit,
            )  # fmt: skip
            records = [h.record for h in hits]
        else:
            records = list(self._records(user, f))
        rows = [to_user_memory(r).to_dict() for r in records]
        sort_rows(rows, sort_by, sort_order)
        total = len(rows)
        rows = rows[start:end]
        if not deserialize:
            return rows, total
        return [UserMemory.from_dict(r) for r in rows]

    def get_all_memory_topics(self, user_id: str | None = None) -> list[str]:
        """Every topic of the user's memories, sorted. Raises MissingUserError."""
        user = self._user(user_id, "get_all_memory_topics")
        return sorted({t for r in self._records(user, Filters(kinds=KINDS)) for t in r.topics})

    def get_user_memory_stats(
        self, limit: int | None = None, page: int | None = None, user_id: str | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """Per user: how many memories and when one last changed, most recent first.
        Without ``user_id``, every user of the store (counts only, no memory text)."""
        start, end = page_bounds(limit, page)
        users = [self._user(user_id, "stats")] if user_id is not None else self.memory.list_users()
        stats: list[dict[str, Any]] = []
        for user in users:
            records = list(self._records(user, Filters(kinds=KINDS)))
            if records:
                last = max(int(r.updated_at.timestamp()) for r in records)
                stats.append(
                    {
                        "user_id": user,
                        "total_memories": len(records),
                        "last_memory_updated_at": last,
                    }
                )
        stats.sort(key=lambda s: s["last_memory_updated_at"], reverse=True)
        return stats[start:end], len(stats)

    # ------------------------------------------------------------------ writes

    def upsert_user_memory(
        self, memory: UserMemory, deserialize: bool | None = True
    ) -> UserMemory | dict[str, Any] | None:
        """Store a new memory, or change the one with this Agno id: new words supersede
        the memlane record (history keeps the old version), new topics or feedback
        update it in place. Returns the memory as stored. Raises MissingUserError,
        ValidationError (empty text ...); nothing is stored then."""
        user = self._user(memory.user_id, "upsert_user_memory")
        memory.memory_id = memory.memory_id or str(uuid.uuid4())
        record = self._upsert(user, memory)
        stored = to_user_memory(record)
        return stored if deserialize else stored.to_dict()

    def _upsert(self, user: str, memory: UserMemory) -> MemoryRecord:
        assert memory.memory_id is not None
        meta: dict[str, Any] = {ID_KEY: memory.memory_id}
        if memory.input is not None:
            meta[INPUT_KEY] = memory.input
        if memory.feedback is not None:
            meta[FEEDBACK_KEY] = memory.feedback
        topics = tuple(memory.topics or ())
        existing = self._find(user, memory.memory_id)
        if existing is None:
            meta[CREATED_KEY] = memory.created_at or int(time.time())
            return self.memory.add(
                memory.memory, user_id=user, topics=topics, metadata=meta, actor=ACTOR,
                agent_id=memory.agent_id, team=memory.team_id,
            )  # fmt: skip
        meta = {**existing.metadata, **meta}
        meta.setdefault(CREATED_KEY, int(existing.created_at.timestamp()))
        record = existing
        if memory.memory != existing.text:
            record = self.memory.supersede(
                existing.id, memory.memory, user_id=user, metadata=meta, actor=ACTOR,
                reason="changed through Agno",
            )  # fmt: skip
        if record.topics != topics or dict(record.metadata) != meta:
            record = self.memory.update(
                record.id, user_id=user, topics=topics, metadata=meta, actor=ACTOR,
                reason="changed through Agno",
            )  # fmt: skip
        return record

    def upsert_memories(
        self,
        memories: list[UserMemory],
        deserialize: bool | None = True,
        preserve_updated_at: bool = False,
    ) -> list[UserMemory | dict[str, Any]]:
        """:meth:`upsert_user_memory` for each memory, in order. memlane records its own
        times, so ``preserve_updated_at`` has no effect (an Agno ``created_at`` is kept)."""
        out: list[UserMemory | dict[str, Any]] = []
        for memory in memories:
            stored = self.upsert_user_memory(memory, deserialize=deserialize)
            if stored is not None:
                out.append(stored)
        return out

    def delete_user_memory(self, memory_id: str, user_id: str | None = None) -> None:
        """Delete the memory with this Agno id (recorded in history, restorable with
        ``memory.restore``). An unknown id is no error (Agno's rule)."""
        self.delete_user_memories([memory_id], user_id=user_id)

    def delete_user_memories(self, memory_ids: Sequence[str], user_id: str | None = None) -> None:
        """:meth:`delete_user_memory` for each id."""
        user = self._user(user_id, "delete_user_memories")
        for memory_id in memory_ids:
            record = self._find(user, memory_id)
            if record is not None:
                self.memory.delete(
                    record.id, user_id=user, reason="deleted through Agno", actor=ACTOR
                )
