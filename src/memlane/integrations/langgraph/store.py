"""``MemlaneStore``: LangGraph's ``BaseStore`` on memlane memories.

Every operation is written once, as a *plan*: a generator that yields the
:class:`memlane.Memory` calls it needs (:class:`_Call`) and receives their results. ``batch``
drives plans with a :class:`~memlane.Memory`, ``abatch`` with an
:class:`~memlane.AsyncMemory` over the same store, embedder and clock, so the async path
awaits memlane's own async calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    validate_op_namespace,
)

from memlane.api import AsyncMemory, Memory
from memlane.core.search import SearchRecipe
from memlane.effects import adrive, drive
from memlane.errors import (
    ConflictError,
    MemlaneError,
    NotFoundError,
    ValidationError,
)
from memlane.integrations.langgraph import config
from memlane.integrations.langgraph import items as it
from memlane.models import Filters, MemoryRecord, SearchHit, check_count, check_id, to_iso

T = TypeVar("T")
log = logging.getLogger(__name__)
ACTOR = "langgraph"
PUT_ATTEMPTS = 16
"""How often a put reads and writes again when other writers keep changing the item."""


class NamespaceError(ValidationError, InvalidNamespaceError):
    """A namespace LangGraph or memlane cannot accept (both a memlane ValidationError and
    LangGraph's InvalidNamespaceError)."""


@dataclass(frozen=True, slots=True)
class _Call:
    """One call of a :class:`memlane.Memory` method, by name, that a plan asks for
    (``"pause"``: wait ``kwargs["seconds"]``)."""

    method: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)


_Plan = Generator[_Call, Any, T]


def _drive(plan: _Plan[T], memory: Memory) -> T:
    """Run a plan with blocking calls; an error of a call is raised inside the plan."""

    def handle(call: _Call) -> Any:
        if call.method == "pause":
            time.sleep(call.kwargs["seconds"])
            return None
        return getattr(memory, call.method)(**call.kwargs)

    return drive(plan, handle, catch=MemlaneError)


async def _adrive(plan: _Plan[T], memory: AsyncMemory) -> T:
    """Run a plan with awaited calls; an error of a call is raised inside the plan."""

    async def handle(call: _Call) -> Any:
        if call.method == "pause":
            await asyncio.sleep(call.kwargs["seconds"])
            return None
        return await getattr(memory, call.method)(**call.kwargs)

    return await adrive(plan, handle, catch=MemlaneError)


@dataclass(frozen=True, slots=True)
class _Write:
    """A checked put: what the record of the item will hold (``value`` None: delete)."""

    namespace: it.Namespace
    key: str
    value: dict[str, Any] | None
    text: str | None = None
    ttl: float | None = None


class MemlaneStore(BaseStore):
    """A LangGraph store whose items are memlane memories: ``graph.compile(store=
    MemlaneStore(memory))``.

    Whose memory an item is: by default the first label of its namespace is the memlane
    user id (``("alice", "memories")`` is alice's), as in LangGraph's docs;
    ``user_position=1`` takes the second (``("memories", "alice")``). ``user_id="alice"``
    binds the store to one user instead, and namespaces are then free. There is no
    default user: a namespace too short to name one is refused (NamespaceError). A
    search or a namespace listing stays within one user (one score scale, and no scope
    sees another), except that a listing whose prefix does not name the user walks every
    user's namespaces.

    ``index`` is LangGraph's index config: ``fields`` (default ``["$"]``, the whole
    value) are the text memlane embeds and indexes (BM25) with the memory's own
    embedder, so ``embed`` is refused (give ``Memory(embedder=...)``) and ``dims`` is not
    needed. ``ttl`` is LangGraph's TTLConfig (``default_ttl`` minutes,
    ``refresh_on_read``, default True); expired items are never returned (memlane hides
    them at once; :meth:`sweep` purges them). ``recipe`` is memlane's search recipe.
    """

    supports_ttl = True

    def __init__(
        self,
        memory: Memory | AsyncMemory,
        *,
        user_id: str | None = None,
        user_position: int | None = None,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        recipe: str | SearchRecipe = "hybrid",
    ) -> None:
        """Raises ValidationError (user arguments), ConfigurationError (index, ttl)."""
        self._sync, self._async = config.twins(memory)
        self._clock = self._sync.core.clock
        self._config = self._sync.core.config
        self.user_id, self.user_position = config.check_user(user_id, user_position)
        self.index_config = config.check_index(index)
        self.fields = it.check_fields(self.index_config.get("fields") or ["$"], "index fields")
        self.ttl_config = config.check_ttl_config(ttl)
        self.recipe = recipe
        self._sweeper: tuple[threading.Thread, threading.Event] | None = None

    # ------------------------------------------------------------------ BaseStore

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops`` in order (a read sees the writes before it). Every op is checked
        before any runs: a bad one raises ValidationError (NamespaceError for a
        namespace) and nothing is written."""
        return _drive(self._plan(ops), self._sync)

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Async :meth:`batch`, on memlane's async calls."""
        return await _adrive(self._plan(ops), self._async)

    def sweep(self) -> int:
        """Purge expired memories now (every user's, as :meth:`memlane.Memory.sweep`);
        returns how many. Expired items are hidden already; this frees their space."""
        return self._sync.sweep()

    async def asweep(self) -> int:
        """Async :meth:`sweep`."""
        return await self._async.sweep()

    def start_ttl_sweeper(self, sweep_interval_minutes: float | None = None) -> None:
        """Sweep every ``sweep_interval_minutes`` (default: the TTL config's
        ``sweep_interval_minutes``) in a daemon thread until :meth:`stop_ttl_sweeper`."""
        minutes = sweep_interval_minutes or (self.ttl_config or {}).get("sweep_interval_minutes")
        if not minutes or minutes <= 0:
            raise ValidationError("start_ttl_sweeper needs a positive sweep_interval_minutes")
        if self._sweeper is not None:
            return
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(float(minutes) * 60):
                try:
                    self.sweep()
                except MemlaneError as exc:  # keep sweeping: the next round may work
                    log.warning("memlane TTL sweep failed: %s", exc)

        thread = threading.Thread(target=loop, name="memlane-ttl-sweeper", daemon=True)
        self._sweeper = (thread, stop)
        thread.start()

    def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:
        """Stop the sweeper thread; True once it has ended (or none was running)."""
        if self._sweeper is None:
            return True
        thread, stop = self._sweeper
        stop.set()
        thread.join(timeout)
        self._sweeper = None
        return not thread.is_alive()

    # ------------------------------------------------------------------ plans

    def _plan(self, ops: Iterable[Op]) -> _Plan[list[Result]]:
        steps = [self._step(op) for op in ops]  # checks every op before anything runs
        results: list[Result] = []
        for step in steps:
            results.append((yield from step))
        return results

    def _step(self, op: Op) -> _Plan[Any]:
        """Check ``op`` now and return its (not yet started) plan."""
        try:
            validate_op_namespace(op)
        except InvalidNamespaceError as exc:
            raise NamespaceError(str(exc)) from exc
        if isinstance(op, GetOp):
            self._user(op.namespace)
            return self._get(op.namespace, it.check_key(op.key), bool(op.refresh_ttl))
        if isinstance(op, PutOp):
            return self._put(self._check_put(op))
        if isinstance(op, SearchOp):
            return self._check_search(op)
        if isinstance(op, ListNamespacesOp):
            return self._check_list_namespaces(op)
        raise ValidationError(f"unknown store operation {type(op).__name__}")

    def _get(self, namespace: it.Namespace, key: str, refresh: bool) -> _Plan[Item | None]:
        user = self._user(namespace)
        record = yield from self._find(user, namespace, key)
        if record is None:
            return None
        if refresh:
            (record,) = yield from self._refresh(user, [record])
        return _item(record)

    def _put(self, write: _Write) -> _Plan[None]:
        """Write (or delete) the item. Another writer changing or deleting it between
        our read and our write makes memlane refuse the stale write; read it again."""
        user = self._user(write.namespace)
        for attempt in range(PUT_ATTEMPTS):
            current = yield from self._find(user, write.namespace, write.key)
            try:
                yield from self._apply(user, write, current)
                return None
            except (ConflictError, NotFoundError, ValidationError) as exc:
                lost_race = current is not None or isinstance(exc, ConflictError)
                if not lost_race or attempt == PUT_ATTEMPTS - 1:
                    raise
            # Jittered, doubling pause, so the writers that collided do not collide again.
            yield _Call(
                "pause", {"seconds": min(0.5, 0.002 * 2.0**attempt) * random.uniform(0.5, 1.5)}
            )
        return None

    def _apply(self, user: str, write: _Write, current: MemoryRecord | None) -> _Plan[None]:
        if write.value is None:
            if current is not None:
                yield _Call("delete", {"record_id": current.id, "user_id": user, "actor": ACTOR})
            return None
        now = self._clock()
        created = current.metadata[it.CREATED] if current is not None else to_iso(now)
        fields = {
            "text": write.text or it.UNINDEXED_TEXT,
            "metadata": it.item_metadata(
                write.namespace,
                write.key,
                write.value,
                ttl=write.ttl,
                indexed=write.text is not None,
                created_at=created,
                updated_at=now,
            ),
            "expires_at": None if write.ttl is None else now + timedelta(minutes=write.ttl),
            "user_id": user,
            "actor": ACTOR,
        }
        if current is not None:
            yield _Call("update", {"record_id": current.id, **fields})
            return None
        yield _Call("add", fields)
        # Two writers putting one new key at once both add; both then keep the newest.
        filters = _meta(it.item_filter(write.namespace, write.key))
        page = yield _Call("list", {"user_id": user, "filters": filters, "limit": 10})
        for older in page.items[1:]:
            yield _Call("delete", {"record_id": older.id, "user_id": user, "actor": ACTOR})
        return None

    def _check_search(self, op: SearchOp) -> _Plan[list[SearchItem]]:
        prefix, query = tuple(op.namespace_prefix), op.query
        limit, offset = _page(op)
        value_filter = it.check_filter(op.filter)
        if query is not None and not isinstance(query, str):
            raise ValidationError(f"query must be a string or None, got {type(query)!r}")
        user = self._user(prefix, what="search prefix")
        if query and offset + limit > self._config.max_page_size:
            raise ValidationError(
                f"offset + limit ({offset + limit}) is above memlane's maximum page of "
                f"{self._config.max_page_size} for a ranked search"
            )
        refresh = bool(op.refresh_ttl)
        return self._search(user, prefix, query or None, value_filter, offset, limit, refresh)

    def _search(
        self,
        user: str,
        prefix: it.Namespace,
        query: str | None,
        value_filter: dict[str, Any],
        offset: int,
        limit: int,
        refresh: bool,
    ) -> _Plan[list[SearchItem]]:
        wanted = offset + limit
        if limit == 0:
            return []
        scored: list[tuple[MemoryRecord, float | None]] = []
        exhausted = True
        if query:
            hits, exhausted = yield from self._ranked(user, query, prefix, value_filter, wanted)
            scored = [(h.record, h.score) for h in hits]
        if exhausted and len(scored) < wanted:
            # As LangGraph's stores do: items with nothing indexed follow, without score.
            meta = {**it.namespace_filter(prefix), **it.pushdown(value_filter)}
            if query:
                meta[it.INDEXED] = False
            rest = yield from self._scan(user, meta, value_filter, wanted - len(scored))
            scored += [(r, None) for r in rest]
        page = scored[offset:wanted]
        if refresh:
            fresh = yield from self._refresh(user, [r for r, _ in page])
            page = [(r, score) for r, (_, score) in zip(fresh, page, strict=True)]
        return [_search_item(record, score) for record, score in page]

    def _ranked(
        self,
        user: str,
        query: str,
        prefix: it.Namespace,
        value_filter: dict[str, Any],
        wanted: int,
    ) -> _Plan[tuple[list[SearchHit], bool]]:
        """The ``wanted`` best hits passing ``value_filter`` (memlane cannot filter on
        nested value fields, so a filtered search asks for more until enough pass), and
        whether the search ran out of indexed items."""
        narrow = it.pushdown(value_filter)
        filters = _meta({**it.namespace_filter(prefix), it.INDEXED: True, **narrow})
        ask = wanted
        while True:
            hits = yield _Call(
                "search",
                {
                    "query": query,
                    "user_id": user,
                    "limit": ask,
                    "filters": filters,
                    "recipe": self.recipe,
                },
            )
            passing = [h for h in hits if it.matches(h.record.metadata[it.VALUE], value_filter)]
            exhausted = len(hits) < ask
            if len(passing) >= wanted or exhausted or ask >= self._config.max_page_size:
                return passing[:wanted], exhausted
            ask = min(ask * 4, self._config.max_page_size)

    def _scan(
        self, user: str, meta: dict[str, Any], value_filter: dict[str, Any], wanted: int | None
    ) -> _Plan[list[MemoryRecord]]:
        """Items matching ``meta`` and ``value_filter``, newest first, up to ``wanted``
        (None: all), read page by page."""
        found: list[MemoryRecord] = []
        cursor = None
        size = (
            self._config.max_page_size
            if wanted is None
            else min(max(wanted, 50), self._config.max_page_size)
        )
        while wanted is None or len(found) < wanted:
            page = yield _Call(
                "list", {"user_id": user, "filters": _meta(meta), "cursor": cursor, "limit": size}
            )
            found += [r for r in page.items if it.matches(r.metadata[it.VALUE], value_filter)]
            cursor = page.next_cursor
            if cursor is None:
                break
        return found if wanted is None else found[:wanted]

    def _check_list_namespaces(self, op: ListNamespacesOp) -> _Plan[list[it.Namespace]]:
        limit, offset = _page(op)
        if op.max_depth is not None:
            check_count("max_depth", op.max_depth, minimum=1)
        conditions = tuple(op.match_conditions or ())
        for c in conditions:
            it.matches_path((), (), c.match_type)  # refuses an unknown match type
        prefix = next((tuple(c.path) for c in conditions if c.match_type == "prefix"), ())
        user = self.user_id
        if user is None and self.user_position is not None:
            label = prefix[self.user_position] if len(prefix) > self.user_position else "*"
            user = None if label == "*" else self._user(prefix)
        return self._list_namespaces(user, prefix, conditions, op.max_depth, offset, limit)

    def _list_namespaces(
        self,
        user: str | None,
        prefix: it.Namespace,
        conditions: tuple[MatchCondition, ...],
        max_depth: int | None,
        offset: int,
        limit: int,
    ) -> _Plan[list[it.Namespace]]:
        users = [user] if user is not None else (yield _Call("list_users"))
        found: set[it.Namespace] = set()
        for each in users:
            meta = it.namespace_filter(prefix, wildcards=True)
            records = yield from self._scan(each, meta, {}, None)
            for record in records:
                ns = it.namespace_of(record)
                if all(it.matches_path(ns, c.path, c.match_type) for c in conditions):
                    found.add(ns[:max_depth] if max_depth else ns)
        return sorted(found)[offset : offset + limit]

    # ------------------------------------------------------------------ helpers

    def _find(self, user: str, namespace: it.Namespace, key: str) -> _Plan[MemoryRecord | None]:
        page = yield _Call(
            "list",
            {"user_id": user, "filters": _meta(it.item_filter(namespace, key)), "limit": 1},
        )
        return page.items[0] if page.items else None

    def _refresh(self, user: str, records: Sequence[MemoryRecord]) -> _Plan[list[MemoryRecord]]:
        """Restart the TTL of the records that have one (LangGraph's refresh on read);
        the item's own ``updated_at`` stays. A record gone meanwhile is returned as read."""
        out = []
        for record in records:
            minutes = record.metadata.get(it.TTL)
            if minutes is not None:
                expires = self._clock() + timedelta(minutes=minutes)
                # A record expired, deleted or replaced since it was read stays as read.
                with contextlib.suppress(ConflictError, NotFoundError, ValidationError):
                    record = yield _Call(
                        "update",
                        {
                            "record_id": record.id,
                            "user_id": user,
                            "expires_at": expires,
                            "reason": "langgraph ttl refreshed on read",
                            "actor": ACTOR,
                        },
                    )
            out.append(record)
        return out

    def _user(self, namespace: Sequence[str], what: str = "namespace") -> str:
        """The memlane user id of ``namespace`` (see the class docstring)."""
        if self.user_id is not None:
            return self.user_id
        position = self.user_position or 0
        if len(namespace) <= position:
            raise NamespaceError(
                f"{what} {tuple(namespace)!r} names no user: this MemlaneStore takes the "
                f"user id from label {position} of the namespace (user_position={position}); "
                "search and read within one user's namespace, or bind the store to one user "
                "with MemlaneStore(memory, user_id=...)"
            )
        try:
            return str(check_id("user id (namespace label)", namespace[position]))
        except ValidationError as exc:
            raise NamespaceError(str(exc)) from exc

    def _check_put(self, op: PutOp) -> _Write:
        namespace = tuple(op.namespace)
        if not namespace:
            raise NamespaceError("Namespace cannot be empty.")
        self._user(namespace)
        key = it.check_key(op.key)
        if op.value is None:
            return _Write(namespace, key, None)
        value = it.check_value(op.value)
        ttl = it.check_ttl(op.ttl)
        if op.index is False:
            text = None
        else:
            fields = self.fields if op.index is None else it.check_fields(op.index, "index")
            text = it.index_text(value, fields)
        if text is not None and len(text) > self._config.max_text_chars:
            raise ValidationError(
                f"the indexed text of {key!r} has {len(text)} characters; memlane's limit is "
                f"{self._config.max_text_chars} (index fewer fields)"
            )
        stored = {"value": value, "fields": it.field_copies(value)}
        size = len(json.dumps(stored, ensure_ascii=False).encode("utf-8"))
        if size > self._config.max_metadata_bytes - 1024:  # room for the item's keys
            raise ValidationError(f"the value of {key!r} is too large ({size} bytes as JSON)")
        return _Write(namespace, key, value, text, ttl)


# ---------------------------------------------------------------------------- functions


def _meta(metadata: dict[str, Any]) -> Filters:
    return Filters(metadata=metadata)


def _page(op: SearchOp | ListNamespacesOp) -> tuple[int, int]:
    """The checked ``limit`` and ``offset`` of a search or a namespace listing."""
    return check_count("limit", op.limit, minimum=0), check_count("offset", op.offset, minimum=0)


def _item(record: MemoryRecord) -> Item:
    """The LangGraph item of a record."""
    created, updated = it.item_times(record)
    return Item(
        value=dict(record.metadata[it.VALUE]),
        key=record.metadata[it.KEY],
        namespace=it.namespace_of(record),
        created_at=created,
        updated_at=updated,
    )


def _search_item(record: MemoryRecord, score: float | None) -> SearchItem:
    """The LangGraph search result of a record; ``score`` None: found by listing."""
    item = _item(record)
    return SearchItem(item.namespace, item.key, item.value, item.created_at, item.updated_at, score)
