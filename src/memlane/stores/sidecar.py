"""Search indexes beside a SQLite store, kept in step with it through an outbox.

The database stays the source of truth. Each transaction that changes what a record's
index entries hold also appends ``(user, rid)`` rows to ``index_outbox`` (triggers, see
migration 10 in :mod:`memlane.stores.sqlite_sql`). After the commit, and before any
search of that user, the pending rows are applied: every named record's entries are
deleted and, if it still exists, written again from its current row, in one index
commit. Applying the same rows twice gives the same index, so a crash between the index
commit and the outbox clean-up only repeats work; a crash before the commit loses
nothing, as the rows are still there.

Each user scope has its own folder (named by a hash of the user id, never the id)
holding its indexes and ``state.json``: the database it belongs to, the format, and
the outbox position it reflects. An index that is missing, of another database or
format, or behind what the database says was applied, is rebuilt from the database;
so is one whose user lost text for good (a purge, a deleted session, ``forget_user``,
marked by rid ``-2``): the new folder replaces the old one, which leaves the disk with
every word it held. A forgotten user's folder is removed.

Processes sharing a database take a lock file per user while they change its indexes.

The upkeep of the vector codes (a compaction when dead rows pile up or the rows double,
sorting new rows into the lists of a large scope: seconds at a million rows) runs on a
thread of the process, not in the write that made it due: writes and searches go on
meanwhile, and the user's lock is taken only to put the result in place. Closing the
store finishes the upkeep under way (a short-lived process pays it at exit, as it
would have paid it in the write).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memlane.errors import CorruptStoreError, StoreError
from memlane.stores.forks import start_afresh_when_forked
from memlane.stores.lexical import Doc, LexicalIndex, order_key
from memlane.stores.lockfiles import take_lock, try_lock_here
from memlane.stores.sql import statements as st
from memlane.stores.sqlite_sql import DIALECT, INDEX_ROWS, INDEX_ROWS_OF
from memlane.stores.sqlite_tx import transaction

if TYPE_CHECKING:
    from memlane.stores.codes import CodeFile, CopyBudget, VectorSource
    from memlane.stores.stored_vectors import StoredVectors

log = logging.getLogger(__name__)

REBUILD = -2
"""The rid of an outbox row that asks for the user's indexes to be built afresh."""

FORMAT = 5
"""The folder layout, index schema and analyzer; another value is rebuilt (2: words
up to 1024 bytes, not 64; 3: float16 vectors beside the codes, and context codes only
for records with a context vector; 4: each document's id order key beside it; 5: the
vids of the database's vectors beside the codes, not float16 copies)."""

SYNC_AFTER_WRITES = 1000
"""Records written for one user since its last sync after which a write batch applies
the outbox itself (bulk ingest keeps the outbox short; small writes leave it to the
next search, which applies them in one index commit)."""

BUILD_CHUNK = 5000

GIVE_WAY_LIMIT = 2
"""Times the upkeep of a user's codes may give way to other processes' writes before it
is done under the user's lock (blocking them, as a write that made it due once did)."""

WARM_AFTER_S = 1.0
"""How long after a process opens a user's codes it starts reading copies of their
vectors into memory (:meth:`Sidecar._warm_later`)."""

MAX_OPEN = 256
"""Users whose indexes stay open in a process (the least recently used are closed; one
is opened again in milliseconds)."""

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class State:
    """What a user's folder says of itself."""

    store_id: str
    format: int
    seq: int
    generation: str
    model: str = ""
    """The embedding model whose vectors the codes hold ("" before any)."""
    dim: int = 0
    nonce: str = ""
    """Drawn afresh each time the folder takes changes in, and recorded beside ``seq`` in
    the database's ``index_state``: a folder whose nonce the database does not hold is
    from another timeline (a database restored from an older copy, whose outbox
    positions the folder's ``seq`` cannot be told from) or a crash came between the two
    writes; either way it is built afresh ("" in folders from before)."""


Row = tuple[Any, ...]
"""A row of INDEX_ROWS: rid, words, context words, vector, context vector, id, the
vector's vid, the context vector's vid, the vector's dimensions, the context vector's."""


@dataclass(slots=True)
class _Open:
    indexes: _Indexes
    state: State


@dataclass(frozen=True, slots=True)
class Model:
    """The store's embedding model."""

    name: str
    dim: int


FIELDS = ("content", "context")


class Sidecar:
    """The search indexes of one SQLite store: in folders under ``root``, or in memory
    (``root=None``, for a database in memory)."""

    def __init__(
        self,
        root: Path | None,
        store_id: str,
        *,
        timeout_s: float,
        vectors: StoredVectors | None = None,
        copy_bytes: int | None = None,
    ) -> None:
        """``vectors`` reads the database's vectors for the codes in folders (needed
        with a ``root``); the codes keep float16 copies of those they read within
        ``copy_bytes`` in all (default: a quarter of physical memory, 256 MiB to 16
        GiB)."""
        if root is not None and vectors is None:
            raise StoreError("index folders need the database's vectors to read from")
        self.root = root
        self.store_id = store_id
        self.timeout_s = timeout_s
        self.vectors = vectors
        from memlane.stores.codes import CopyBudget
        from memlane.stores.vector_cache import default_cache_bytes

        self.copies = CopyBudget(default_cache_bytes() if copy_bytes is None else copy_bytes)
        self._open: OrderedDict[str, _Open] = OrderedDict()
        """Users whose indexes are open, least recently used first (at most MAX_OPEN)."""
        self._empty: set[str] = set()
        self._written: dict[str, int] = {}
        self._states: dict[str, State] = {}
        """The states of indexes in memory (``root=None``)."""
        self._held: dict[str, int] = {}
        """Users whose lock file this process holds, with its descriptor (always under
        ``_mutex``)."""
        self._mutex = threading.RLock()
        self._upkeep = _Upkeep(self._keep_up)
        self._closing = threading.Event()
        """Set when the sidecar closes: the upkeep stops reading copies of vectors."""
        self._timers: dict[tuple[str, str], threading.Timer] = {}
        self._timers_lock = threading.Lock()
        self._gave_way: dict[tuple[str, str], int] = {}
        """Times the upkeep of (user, field) gave way to another process's writes."""
        start_afresh_when_forked(self)

    def _forked(self) -> None:
        """In a child forked from this process: let go of what the parent's threads
        held. The lock files they held are closed here (the child's copies would keep
        the parent's locks taken for as long as the child lives, from every process);
        the mutex, the open indexes and the upkeep start afresh (a lock that a thread of
        the parent held would stay held here for ever)."""
        for fd in self._held.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._held = {}
        self._mutex = threading.RLock()
        self._open = OrderedDict()
        self._upkeep = _Upkeep(self._keep_up)
        self._timers = {}  # (the parent's timer threads are not here)
        self._timers_lock = threading.Lock()
        from memlane.stores.codes import CopyBudget

        # The parent's copies are in the indexes let go above: none counts here.
        self.copies = CopyBudget(self.copies.max_bytes)
        # (the vectors' reader parks its parent's connections itself: stores/forks.py)

    # ------------------------------------------------------------------ reading

    def lexical(self, user_id: str) -> LexicalIndex | None:
        """The user's lexical index as last synced (None: the user has no records)."""
        opened = self._open.get(user_id)
        return None if opened is None else opened.indexes.lexical

    def _keep_open(self, user_id: str, opened: _Open) -> _Open:
        self._open[user_id] = opened
        self._open.move_to_end(user_id)
        while len(self._open) > MAX_OPEN:
            _, oldest = self._open.popitem(last=False)
            oldest.indexes.close()
        return opened

    def codes(self, user_id: str, model: str, field_: str) -> CodeFile | None:
        """The user's vector codes of ``field_`` as last synced, if they hold ``model``'s
        vectors (None: no records, or vectors of another model)."""
        opened = self._open.get(user_id)
        if opened is None or opened.state.model != model:
            return None
        return opened.indexes.codes.get(field_)

    def sync(self, conn: sqlite3.Connection, user_id: str, model: str | None = None) -> None:
        """Apply the user's pending outbox rows (outside any transaction), building the
        indexes first when they are missing or stale, or hold vectors of another model
        than ``model``."""
        (pending,) = conn.execute(
            "SELECT MAX(seq) FROM index_outbox WHERE user_id = ?", (user_id,)
        ).fetchone()
        if pending is None and self._current(user_id, model):
            if user_id in self._open:
                self._open.move_to_end(user_id)
            return
        with self._mutex, self._locked(user_id):
            self._update(conn, user_id)

    def _current(self, user_id: str, model: str | None) -> bool:
        """Whether what this process holds for the user is what its folder holds (another
        process may have applied rows or rebuilt since), for ``model``."""
        opened = self._open.get(user_id)
        if opened is not None and model is not None and opened.state.model != model:
            return False
        if self.root is None:
            return opened is not None or user_id in self._empty
        on_disk = self._read_state(user_id)
        if on_disk is None:
            return user_id in self._empty
        # Another process applied rows: they are read again under the user's lock
        # (_update), never while that process may be rewriting the files.
        return opened is not None and opened.state == on_disk

    def in_step(self, conn: sqlite3.Connection, user_id: str) -> bool:
        """Inside a read transaction: whether the user's indexes as this process reads
        them hold exactly what the transaction sees (no change queued for them, and the
        outbox position applied is the one they were read at). A commit by another
        process between the sync before a search and the search's transaction makes
        it False; the indexes then may hold records deleted since, or miss records
        written since (a rid is never given twice since schema 17, so none of their
        rids names another record)."""
        opened = self._open.get(user_id)
        if opened is None:
            return False
        pending = conn.execute(
            "SELECT 1 FROM index_outbox WHERE user_id = ? LIMIT 1", (user_id,)
        ).fetchone()
        if pending is not None:
            return False
        row = conn.execute(
            "SELECT applied_seq, nonce FROM index_state WHERE user_id = ?", (user_id,)
        ).fetchone()
        return (
            row is not None
            and int(row[0]) == opened.state.seq
            and row[1] in (None, opened.state.nonce)
        )

    def finish_erasures(self, conn: sqlite3.Connection) -> None:
        """At open: finish what a process that stopped mid-way left of an erasure. Users
        whose rebuild was asked for (forgotten, or text purged) are rebuilt now, not at
        their next search; folders a rebuild left behind (``.old-*`` with the erased
        words, ``.new-*`` half built) are removed once no process holds their lock."""
        asked = conn.execute(
            "SELECT DISTINCT user_id FROM index_outbox WHERE rid = ?", (REBUILD,)
        ).fetchall()
        for (user_id,) in asked:
            self.sync(conn, user_id)
        self._sweep_leftovers()

    def _sweep_leftovers(self) -> None:
        """Remove each ``<digest>.new-*`` / ``<digest>.old-*`` folder whose user's lock
        is free: a rebuild holds that lock from making such a folder to removing it."""
        if self.root is None or not self.root.is_dir():
            return
        for folder in self.root.iterdir():
            digest, dot, rest = folder.name.partition(".")
            if not dot or not rest.startswith(("new-", "old-")) or not folder.is_dir():
                continue
            fd = try_lock_here(self.root / f"{digest}.lock")
            if fd is None:
                continue
            try:
                self._discard(folder)
                if not (self.root / digest).exists():  # no index left: no name either
                    (self.root / f"{digest}.lock").unlink(missing_ok=True)
            finally:
                os.close(fd)  # releases the lock

    # ------------------------------------------------------------------ applying

    def _update(self, conn: sqlite3.Connection, user_id: str) -> None:
        state = self._read_state(user_id)
        if self._stale(conn, user_id, state):
            self.rebuild(conn, user_id)
            return
        assert state is not None
        try:
            opened = self._opened(user_id, state)
        except CorruptStoreError:  # files a crash or a copy left out of step
            self.rebuild(conn, user_id)
            return
        with transaction(conn, write=False):
            pending = conn.execute(
                "SELECT seq, rid FROM index_outbox WHERE user_id = ? ORDER BY seq", (user_id,)
            ).fetchall()
            rids = sorted({rid for _, rid in pending})
            rows = [] if REBUILD in rids else self._rows(conn, user_id, state.model, rids)
        if not pending:
            return
        if REBUILD in rids:
            self.rebuild(conn, user_id)
            return
        try:
            due = opened.indexes.write(rids, rows)
        except (ValueError, OSError, StoreError):
            # A folder a killed writer left unwritable (tantivy: a file of the commit it
            # never finished already exists), or a compaction of the codes that failed
            # half way: built afresh in a new folder instead.
            self.rebuild(conn, user_id)
            return
        # The database first: should its write fail (another process holding the write
        # lock past the busy timeout), folder and database still agree on the last
        # apply, and the next sync applies the same rows again (idempotent), where a
        # folder ahead of the database by a nonce would be built afresh.
        applied = replace(state, seq=pending[-1][0], nonce=uuid.uuid4().hex)
        self._applied(conn, user_id, applied.seq, built=True, nonce=applied.nonce)
        opened.state = applied
        self._write_state(user_id, applied)
        for field_ in due:
            self._upkeep.want(user_id, field_)

    def _stale(self, conn: sqlite3.Connection, user_id: str, state: State | None) -> bool:
        if state is None or state.store_id != self.store_id or state.format != FORMAT:
            return True
        model = _model(conn)
        if state.model != ("" if model is None else model.name):
            return True
        row = conn.execute(
            "SELECT applied_seq, nonce FROM index_state WHERE user_id = ?", (user_id,)
        ).fetchone()
        if row is None or (row[1] is not None and row[1] != state.nonce):
            return True
        return state.seq < row[0] or state.seq > _last_seq(conn)

    @staticmethod
    def _rows(conn: sqlite3.Connection, user_id: str, model: str, rids: list[int]) -> list[Row]:
        return conn.execute(INDEX_ROWS_OF, (json.dumps(rids), model, model, user_id)).fetchall()

    def _applied(
        self, conn: sqlite3.Connection, user_id: str, seq: int, *, built: bool, nonce: str = ""
    ) -> None:
        """The outbox rows up to ``seq`` are in the index: drop them, and record how far
        the index reaches and the ``nonce`` its folder now holds (or that it has none)."""
        with transaction(conn, write=True):
            conn.execute("DELETE FROM index_outbox WHERE user_id = ? AND seq <= ?", (user_id, seq))
            if built:
                conn.execute(
                    "INSERT OR REPLACE INTO index_state VALUES (?, ?, ?)", (user_id, seq, nonce)
                )
            else:
                conn.execute("DELETE FROM index_state WHERE user_id = ?", (user_id,))
        self._written.pop(user_id, None)

    def wrote(self, conn: sqlite3.Connection, user_id: str, n: int) -> None:
        """Called after a committed batch wrote ``n`` records of the user: applies the
        outbox once enough have gathered."""
        total = self._written.get(user_id, 0) + n
        self._written[user_id] = total
        if total >= SYNC_AFTER_WRITES:
            self.sync(conn, user_id)

    # ------------------------------------------------------------------ upkeep

    def _keep_up(self, user_id: str, field_: str) -> None:
        """On the upkeep thread: compact the user's codes of ``field_``, or sort their
        new rows into lists, if still due. The work is done without the user's lock;
        the lock is taken (with the process's mutex) to put it in place, once the codes
        are checked to be the ones the folder holds now (else it gives way, and the
        next write that finds it due asks again)."""
        opened = self._open.get(user_id)
        if opened is None:
            return
        codes = opened.indexes.codes.get(field_)
        if codes is None:
            return

        @contextlib.contextmanager
        def holding() -> Iterator[bool]:
            with self._mutex, self._locked(user_id):
                state = self._read_state(user_id)
                current = (
                    state is not None
                    and self._open.get(user_id) is opened
                    and opened.state == state
                    and opened.indexes.codes.get(field_) is codes
                )
                yield current

        key = (user_id, field_)
        if self._gave_way.get(key, 0) >= GIVE_WAY_LIMIT:
            self._keep_up_holding(user_id, field_)
            return
        try:
            done = codes.upkeep(holding)
            if done:
                codes.warm(self._closing)
        except StoreError as exc:  # out of disk, say: asked again by a later write
            log.warning("the upkeep of a user's vector codes stopped: %s", exc)
            if codes.closed:  # a swap that failed half way: opened again (or rebuilt)
                with self._mutex:
                    if self._open.get(user_id) is opened:
                        self._close(user_id)
            return
        if done:
            self._gave_way.pop(key, None)
        else:  # another process wrote meanwhile: asked again by a later write
            self._gave_way[key] = self._gave_way.get(key, 0) + 1

    def _keep_up_holding(self, user_id: str, field_: str) -> None:
        """The upkeep of a user that other processes keep writing (it gave way
        :data:`GIVE_WAY_LIMIT` times): done under the user's lock, as a write did
        before the upkeep had a thread, so that it is done."""
        self._gave_way.pop((user_id, field_), None)
        with self._mutex, self._locked(user_id):
            state = self._read_state(user_id)
            if state is None or state.format != FORMAT or user_id not in self._open:
                return  # (another format: a process of another version rebuilt it)
            try:
                opened = self._opened(user_id, state)  # as the other processes left it
                codes = opened.indexes.codes.get(field_)
                if codes is not None:
                    codes.upkeep()
            except (CorruptStoreError, StoreError) as exc:  # the next sync rebuilds
                log.warning("the upkeep of a user's vector codes stopped: %s", exc)
                self._close(user_id)

    def _warm_later(self, user_id: str, field_: str) -> None:
        """Ask the upkeep thread to read copies of the vectors of a user's codes of
        ``field_`` (:meth:`CodeFile.warm`) :data:`WARM_AFTER_S` from now: a process that
        opens a store for one search (a CLI call) has closed it by then, and one that
        stays gives its first searches the CPU."""
        key = (user_id, field_)
        with self._timers_lock:
            if key in self._timers or self._closing.is_set():
                return
            timer = threading.Timer(WARM_AFTER_S, self._warm_now, key)
            timer.daemon = True
            self._timers[key] = timer
        timer.start()

    def _warm_now(self, user_id: str, field_: str) -> None:
        with self._timers_lock:
            if self._timers.pop((user_id, field_), None) is None:
                return
        self._upkeep.want(user_id, field_)

    def wait_for_upkeep(self, timeout_s: float | None = None) -> bool:
        """Wait until no upkeep of the codes is due or under way in this process (True),
        or ``timeout_s`` passed (False); copies of vectors due later are read now."""
        with self._timers_lock:
            timers, self._timers = self._timers, {}
        for (user_id, field_), timer in timers.items():
            timer.cancel()
            self._upkeep.want(user_id, field_)
        return self._upkeep.wait(timeout_s)

    # ------------------------------------------------------------------ rebuilding

    def rebuild(
        self, conn: sqlite3.Connection, user_id: str, progress: Progress | None = None
    ) -> int:
        """Build the user's indexes afresh from the database into a new folder that then
        replaces the old one (which is deleted); a user without records keeps no folder.
        Returns how many records were indexed. ``progress(n)`` hears of each chunk."""
        with self._mutex, self._locked(user_id):
            self._close(user_id)
            # The new folder's nonce goes to the database before the build: a busy
            # database fails the rebuild before its cost, and once the folder is in
            # place the database holds its nonce even if recording the position fails.
            nonce = uuid.uuid4().hex
            with transaction(conn, write=True):
                conn.execute("UPDATE index_state SET nonce = ? WHERE user_id = ?", (nonce, user_id))
            target = self._folder(user_id, f".new-{uuid.uuid4().hex[:8]}")
            with transaction(conn, write=False):
                seq, model = _last_seq(conn), _model(conn)
                indexes = _Indexes(target, model, self._source(model), self.copies)
                try:
                    n = indexes.build(self._all_rows(conn, user_id, model, progress))
                except BaseException:
                    indexes.close()
                    raise
            if n == 0:
                indexes.close()
                self._discard(target)
                self._discard(self._folder(user_id))
                self._states.pop(user_id, None)
                self._empty.add(user_id)
                self._applied(conn, user_id, seq, built=False)
                return 0
            name, dim = ("", 0) if model is None else (model.name, model.dim)
            state = State(self.store_id, FORMAT, seq, uuid.uuid4().hex, name, dim, nonce)
            self._install(user_id, target, state)
            final = self._folder(user_id)
            if final is not None:  # the indexes moved with their folder: open them there
                indexes = indexes.moved(final)
            self._keep_open(user_id, _Open(indexes, state))
            self._empty.discard(user_id)
            self._applied(conn, user_id, seq, built=True, nonce=state.nonce)
            return n

    @staticmethod
    def _all_rows(
        conn: sqlite3.Connection, user_id: str, model: Model | None, progress: Progress | None
    ) -> Iterator[list[Row]]:
        name = "" if model is None else model.name
        cursor = conn.execute(INDEX_ROWS + "ORDER BY r.rid", (name, name, user_id))
        while rows := cursor.fetchmany(BUILD_CHUNK):
            yield rows
            if progress is not None:
                progress(len(rows))

    def _install(self, user_id: str, built: Path | None, state: State) -> None:
        """Put the folder built for the user in place of the old one."""
        if built is None:
            self._states[user_id] = state
            return
        self._write_state_in(built, state)
        final = self._folder(user_id)
        assert final is not None
        old = final.with_name(f"{final.name}.old-{uuid.uuid4().hex[:8]}")
        if final.exists():
            final.rename(old)
        built.rename(final)
        self._discard(old)

    # ------------------------------------------------------------------ checking

    def check(self, conn: sqlite3.Connection, user_id: str) -> tuple[set[int], set[int]]:
        """After a sync: (records an index lacks, index entries with no record), over the
        lexical index and each field's vector codes (records with a vector of it)."""
        self.sync(conn, user_id)
        with transaction(conn, write=False):
            model = _model(conn)
            name = "" if model is None else model.name
            dim = None if model is None else model.dim
            stored = {
                row[0]: (row[3] is not None and row[8] == dim, row[4] is not None and row[9] == dim)
                for row in self._all_rows_flat(conn, user_id, name)
            }
        opened = self._open.get(user_id)
        missing: set[int] = set()
        ghosts: set[int] = set()
        held = set() if opened is None else opened.indexes.lexical.rids()
        missing |= set(stored) - held
        ghosts |= held - set(stored)
        if opened is not None:
            for field_, codes in opened.indexes.codes.items():
                at = FIELDS.index(field_)
                embedded = {rid for rid, has in stored.items() if has[at]}
                coded = {int(r) for r in codes.rids()}
                missing |= embedded - coded
                ghosts |= coded - embedded
        return missing, ghosts

    @staticmethod
    def _all_rows_flat(conn: sqlite3.Connection, user_id: str, model: str) -> list[Row]:
        return conn.execute(INDEX_ROWS, (model, model, user_id)).fetchall()

    # ------------------------------------------------------------------ folders

    def _source(self, model: Model | None) -> VectorSource | None:
        """Where the codes in folders read ``model``'s vectors."""
        if self.vectors is None or model is None:
            return None
        return self.vectors.source(model.dim)

    def _folder(self, user_id: str, suffix: str = "") -> Path | None:
        if self.root is None:
            return None
        digest = hashlib.sha256(user_id.encode("utf-8")).hexdigest()[:32]
        return self.root / f"{digest}{suffix}"

    def _opened(self, user_id: str, state: State) -> _Open:
        """The user's indexes as the folder holds them now (under the user's lock): opened,
        or read again where another process changed them since."""
        opened = self._open.get(user_id)
        if opened is None or opened.state.generation != state.generation:
            if opened is not None:
                self._close(user_id)
            model = Model(state.model, state.dim) if state.model else None
            folder = self._folder(user_id)
            indexes = _Indexes(folder, model, self._source(model), self.copies, existing=True)
            opened = self._keep_open(user_id, _Open(indexes, state))
            for field_, codes in indexes.codes.items():
                if len(codes):  # copies of its vectors read on the upkeep thread
                    self._warm_later(user_id, field_)
        elif opened.state != state or opened.indexes.replaced():
            for field_ in opened.indexes.reload():
                self._warm_later(user_id, field_)
            opened.state = state
        return opened

    def _close(self, user_id: str) -> None:
        opened = self._open.pop(user_id, None)
        if opened is not None:
            opened.indexes.close()

    def _read_state(self, user_id: str) -> State | None:
        folder = self._folder(user_id)
        if folder is None:
            return self._states.get(user_id)
        try:
            data = json.loads((folder / "state.json").read_text("utf-8"))
            return State(
                str(data["store_id"]),
                int(data["format"]),
                int(data["seq"]),
                str(data["generation"]),
                str(data.get("model", "")),
                int(data.get("dim", 0)),
                str(data.get("nonce", "")),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write_state(self, user_id: str, state: State) -> None:
        folder = self._folder(user_id)
        if folder is None:
            self._states[user_id] = state
        else:
            self._write_state_in(folder, state)

    @staticmethod
    def _write_state_in(folder: Path, state: State) -> None:
        body = json.dumps(asdict(state))
        temp = folder / f"state.json.{uuid.uuid4().hex[:8]}"
        with open(temp, "w", encoding="utf-8") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, folder / "state.json")

    @staticmethod
    def _discard(folder: Path | None) -> None:
        if folder is not None and folder.exists():
            shutil.rmtree(folder, ignore_errors=True)

    @contextlib.contextmanager
    def _locked(self, user_id: str) -> Iterator[None]:
        """The user's lock file, held while its indexes change (waits up to the
        store's busy timeout for another process). Called under ``_mutex``: one thread
        of this process at a time, which may enter again. A forgotten user's lock file
        is removed with their folder (its name is a hash of the user id), so a lock is
        held only on the file that is at the path once it is taken."""
        path = self._folder(user_id, ".lock")
        if path is None or user_id in self._held:  # held by this thread already
            yield
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = self._take_lock(path)
        self._held[user_id] = fd
        try:
            yield
        finally:
            self._held.pop(user_id, None)
            if user_id in self._empty:  # forgotten or never written: no name left behind
                path.unlink(missing_ok=True)
            os.close(fd)  # releases the lock

    def _take_lock(self, path: Path) -> int:
        try:
            return take_lock(path, self.timeout_s)
        except TimeoutError:
            raise StoreError(
                f"the search index of a user in {self.root} stayed locked by "
                f"another process for {self.timeout_s:g} s"
            ) from None

    def close(self) -> None:
        """Finish the upkeep under way or due (reading copies of vectors stops), then
        close every user's indexes."""
        self._closing.set()
        with self._timers_lock:
            timers, self._timers = self._timers, {}
        for timer in timers.values():
            timer.cancel()
        self._upkeep.close()
        for user_id in list(self._open):
            self._close(user_id)
        if self.vectors is not None:
            self.vectors.close()


def _last_seq(conn: sqlite3.Connection) -> int:
    """The outbox position of the newest change ever queued (0 if none)."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'index_outbox'").fetchone()
    return 0 if row is None else int(row[0])


class _Indexes:
    """One user's indexes in one folder (or in memory): the lexical index and, once the
    store has an embedding model, the sign-bit codes of each vector field."""

    def __init__(
        self,
        folder: Path | None,
        model: Model | None,
        vectors: VectorSource | None,
        copies: CopyBudget | None = None,
        *,
        existing: bool = False,
    ) -> None:
        self.folder = folder
        self.model = model
        self.vectors = vectors
        self.copies = copies
        lexical = None if folder is None else folder / "lexical"
        self.lexical = LexicalIndex(lexical, existing=existing)
        self.codes: dict[str, CodeFile] = {}
        # Codes are whole bytes of signs; a model whose dimension is not a multiple of 8
        # (rare) is searched by the exact scan instead.
        if model is not None and model.dim % 8 == 0:
            from memlane.stores.codes import CodeFile

            try:
                for name in FIELDS:
                    path = None if folder is None else folder / f"codes-{name}.bin"
                    self.codes[name] = CodeFile.open(
                        path, model.dim, existing=existing, vectors=vectors, budget=copies
                    )
            except BaseException:
                self.close()
                raise

    def write(self, removed: list[int], rows: list[Row]) -> list[str]:
        """Replace the entries of ``removed`` by ``rows`` (the records that still exist).
        Returns the fields whose codes want upkeep (:meth:`_settle_codes`)."""
        self._append_codes(rows, removed)
        due = self._settle_codes(later=self.folder is not None)
        self.lexical.write(removed, (_doc(r) for r in rows))
        return due

    def build(self, chunks: Iterator[list[Row]]) -> int:
        """Fill empty indexes from ``chunks`` of rows; returns how many rows."""
        count = 0

        def docs() -> Iterator[Doc]:
            nonlocal count
            for rows in chunks:
                count += len(rows)
                self._append_codes(rows)
                yield from (_doc(r) for r in rows)

        self.lexical.write((), docs())
        self._settle_codes()
        return count

    def _append_codes(self, rows: list[Row], removed: Sequence[int] = ()) -> None:
        """Append the codes of the rows' vectors; the rows of ``removed`` that get none
        (gone, or without a vector) are killed (an appended rid replaces its old row)."""
        if not self.codes:
            return
        from memlane.stores.vector_cache import from_blobs

        for name, codes in self.codes.items():
            at = FIELDS.index(name)  # a context file holds real context vectors only
            # Of the codes' size only: a vector of another size under the same model
            # name (an embedder misnamed) could have an int8 vector's length.
            widths = (2 * codes.dim, codes.dim)  # float16, int8
            kept = [
                (r[0], blob, r[6 + at])
                for r in rows
                if (blob := r[3 + at]) is not None
                and r[8 + at] == codes.dim
                and len(blob) in widths
            ]
            appended = {rid for rid, _, _ in kept}
            gone = [rid for rid in removed if rid not in appended]
            if gone:
                codes.kill(gone)
            if kept:
                rids, blobs, vids = zip(*kept, strict=True)
                codes.append(list(rids), from_blobs(list(blobs), codes.dim), list(vids))

    def _settle_codes(self, *, later: bool = False) -> list[str]:
        """Make the codes durable; then rewrite a file whose dead rows outgrew a half or
        whose live rows doubled since it was last centred
        (:meth:`CodeFile.wants_compaction`), or sort a large file's new rows into its
        lists (:meth:`CodeFile.wants_lists`) — or with ``later``, return the fields
        whose codes want either, for the upkeep thread."""
        due: list[str] = []
        for name, codes in self.codes.items():
            codes.sync()
            if not (codes.wants_compaction() or codes.wants_lists()):
                continue
            if later:
                due.append(name)
            else:
                codes.upkeep()
        return due

    def replaced(self) -> bool:
        """Whether another process rewrote or extended the code files since they were
        read, without (yet) saying so in the folder's state."""
        return any(codes.replaced() for codes in self.codes.values())

    def reload(self) -> list[str]:
        """See what another process committed. Codes are read again from their files,
        keeping the copies of vectors read so far where the files are the same pair (only
        appended to or killed in); returns the fields whose copies were let go (the
        files were compacted)."""
        self.lexical.reload()
        lost: list[str] = []
        for name, codes in list(self.codes.items()):
            if codes.path is not None:
                from memlane.stores.codes import CodeFile

                again = CodeFile.open(
                    codes.path, codes.dim, vectors=self.vectors, budget=self.copies
                )
                if not again.take_copies(codes):
                    lost.append(name)
                codes.close()
                self.codes[name] = again
        return lost

    def moved(self, folder: Path) -> _Indexes:
        """These indexes opened again in ``folder`` (where their folder was moved), the
        codes keeping their copies of vectors; these are closed."""
        moved = _Indexes(folder, self.model, self.vectors, self.copies, existing=True)
        for name, codes in self.codes.items():
            again = moved.codes.get(name)
            if again is not None:
                again.take_copies(codes)
        self.close()
        return moved

    def close(self) -> None:
        for codes in self.codes.values():
            codes.close()


def _doc(row: Row) -> Doc:
    """The lexical index's entry of a row of INDEX_ROWS."""
    return Doc(row[0], row[1], row[2], order_key(row[5]))


def _model(conn: sqlite3.Connection) -> Model | None:
    """The store's embedding model: the one it recorded, else the one all its vectors
    are of (None when it has none yet)."""
    row = conn.execute(st.RECORDED_MODEL).fetchone()
    if row is not None:
        name, dim = json.loads(row[0])
        return Model(str(name), int(dim))
    low, high = conn.execute(st.MODEL_RANGE).fetchone()
    if low is None or low != high:
        return None
    (dim,) = conn.execute(*st.model_dim(DIALECT, low)).fetchone()
    return Model(str(low), int(dim))


class _Upkeep:
    """Work on the codes that a write made due, done on one thread of the process: a
    queue of (user, field), each once however often it is asked for. The thread starts
    with the first request and ends when the queue is empty. Where no thread can start
    (a process shutting down), the work is done by the caller instead."""

    def __init__(self, work: Callable[[str, str], None]) -> None:
        self._work = work
        self._due: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def want(self, user_id: str, field_: str) -> None:
        """Ask for the upkeep of a user's codes of ``field_`` (ignored once closed)."""
        with self._cond:
            if self._closed:
                return
            self._due[(user_id, field_)] = None
            if self._thread is not None:
                return
            thread = threading.Thread(target=self._run, name="memlane-codes-upkeep", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # "can't create new thread at interpreter shutdown"
                due, self._due = list(self._due), OrderedDict()
            else:
                self._thread = thread
                return
        for key in due:  # here, then
            self._do(*key)

    def _run(self) -> None:
        try:
            import faiss

            # k-means and the scans on this thread use one core: searches keep the other.
            faiss.omp_set_num_threads(1)
            while True:
                with self._cond:
                    if not self._due:
                        self._thread = None
                        self._cond.notify_all()
                        return
                    (user_id, field_), _ = self._due.popitem(last=False)
                self._do(user_id, field_)
        finally:  # whatever ended the thread, a waiter is not left waiting for it
            with self._cond:
                if self._thread is threading.current_thread():
                    self._thread = None
                self._cond.notify_all()

    def _do(self, user_id: str, field_: str) -> None:
        try:
            self._work(user_id, field_)
        except Exception:  # a bug must not end the thread with work queued
            log.exception("the upkeep of a user's vector codes failed")

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until nothing is due or under way (True), or ``timeout_s`` passed."""
        with self._cond:
            return self._cond.wait_for(lambda: self._thread is None, timeout_s)

    def close(self) -> None:
        """Finish what is due and under way, then take no more requests."""
        self.wait()
        with self._cond:
            self._closed = True
