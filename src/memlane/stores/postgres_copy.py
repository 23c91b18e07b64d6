"""Copies of a PostgreSQL store's lexical index in tantivy, beside the processes that
search it (``PostgresStore(lexical_dir=...)``).

PostgreSQL ranks a lexical query over GIN, which builds a bitmap of every posting list
it reads before the first row comes out: at a million memories that is over half of a
slow search (bench/scale_pg.md). tantivy reads only what can still reach the top. The
database stays the source of truth; each process keeps, in a folder per user under
``lexical_dir``, a copy of what that user's records say to the index (own words,
periods' words, the previous turn's words), and brings it in step before each search.
Processes on one host share the folders (a lock file per user while one changes; it
also keeps the name of the copy last built there). In a process, one thread at a time
syncs a user's copy; other users' searches are not held up.

**In step.** A copy registers in ``lexical_copies`` (schema 12). While a user has a
copy, triggers add ``(user, id)`` to ``lexical_changes`` in every transaction that
changes what a record's entry holds, with that transaction's id (``xid8``). Transaction
ids are given in start order, not commit order, so a copy keeps a *horizon*: the oldest
transaction still open when it last read (``pg_snapshot_xmin``). Every transaction below
it had ended then, so its changes were read; changes at or above it are read again at
the next sync, except those of transactions the copy already took in (committed: its
rows will not change). A changed record is written again from its row as it is now, so
applying a change twice gives the same copy.

**Built afresh** when a copy is missing, damaged, of another database (``store_id`` in
``memlane_meta`` and the database's oid, which a copy made from it as a template does
not share) or format, no longer registered (unseen for :data:`UNSEEN_FOR`, or
its user forgotten), or ahead of the database (a database restored from a backup);
and when a record it holds is gone for good (a purge, ``forget_user``), so that its
words leave the disk with the old folder. To build, a copy registers, then waits until
every transaction open at that moment has ended (one that wrote before the registration
was visible logged nothing), then reads the user's records in one snapshot. Should one
stay open longer than :data:`BUILD_WAIT_S`, the search reads PostgreSQL's own index, as
it does without ``lexical_dir``, and each later search looks once more (no wait) until
it has ended. memlane's own connections write at READ COMMITTED, where a trigger sees a
registration committed before its statement; a writer at REPEATABLE READ whose snapshot
predates the registration would not, and must not be used beside copies.

**Upkeep.** At most every :data:`REPORT_EVERY_S` a copy records its horizon; the
changes below every copy's horizon of the user are deleted then, and registrations
unseen for :data:`UNSEEN_FOR` (or never built for :data:`UNBUILT_FOR`) are dropped. A
process's first sync removes the folder's copies of the database that are no longer
registered and what builds stopped midway left; forgetting a user removes the copy in
the forgetting process's folder at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memlane.errors import CorruptStoreError, StoreError
from memlane.stores.forks import start_afresh_when_forked
from memlane.stores.lexical import Doc, LexicalIndex
from memlane.stores.lockfiles import take_lock, try_lock_here
from memlane.stores.postgres_sql import COPY_DOCS

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

FORMAT = 1
"""The folder layout and index schema; a copy of another format is built afresh."""

BUILD_WAIT_S = 0.5
"""How long a copy being built waits for the transactions open at its registration."""

REPORT_EVERY_S = 60.0
"""How often (at most) a copy records its horizon, which lets changes be deleted."""

UNBUILT_FOR = "1 hour"
"""A registration whose copy was never built (its process stopped first) is dropped
after this long: until then its horizon keeps the user's changes."""

UNSEEN_FOR = "7 days"
"""A copy that has not recorded its horizon for this long is dropped (it is built
afresh if it comes back), so that its changes need not be kept."""

BUILD_CHUNK = 5000
"""Records read at once while building (a server-side cursor)."""

MAX_OPEN = 256
"""Users whose copies stay open in a process (the least recently used are closed)."""

MAX_TAKEN = 10_000
"""Transactions above the horizon a copy remembers having taken in (past it, their
changes are applied again: the same result, more work)."""


@dataclass(frozen=True, slots=True)
class CopyState:
    """What a copy's folder says of itself (``state.json``)."""

    store_id: str
    format: int
    copy: str
    """The copy's name in ``lexical_copies``; a new one for each build."""
    horizon: int
    taken: tuple[int, ...] = ()
    """Transactions at or above the horizon whose changes are in the copy."""
    version: int = 0
    """Counts the applies, so that a process sees another's."""


@dataclass(slots=True)
class _Open:
    state: CopyState
    index: LexicalIndex
    reported: float = field(default=0.0)


_SYNC = (
    "SELECT pg_snapshot_xmin(s)::text, pg_snapshot_xmax(s)::text, "
    "EXISTS (SELECT 1 FROM lexical_copies WHERE copy = %s), "
    "ARRAY(SELECT DISTINCT ON (xid, id) ARRAY[xid::text, id] FROM lexical_changes "
    "WHERE user_id = %s AND xid >= %s::text::xid8) "
    "FROM pg_current_snapshot() s"
)
"""One statement a sync: the snapshot's bounds, whether the copy is registered, and the
(xid, id) of the user's changes at or above the copy's horizon."""


def _xid(conn: psycopg.Connection[Any], bound: str) -> int:
    """The current snapshot's ``xmin`` (oldest transaction still open) or ``xmax``
    (the next transaction id to be given)."""
    row = conn.execute(f"SELECT pg_snapshot_{bound}(pg_current_snapshot())::text").fetchone()
    assert row is not None
    return int(row[0])


class LexicalCopies:
    """The copies of one store's lexical index under ``root``, for every user this
    process searches. Methods take an open connection (autocommit) of the store."""

    def __init__(self, root: Path, *, timeout_s: float) -> None:
        self.root = Path(root)
        self.timeout_s = timeout_s
        self._open: OrderedDict[str, _Open] = OrderedDict()
        self._mutex = threading.RLock()
        """Guards the process's bookkeeping (open copies, waiting registrations, the
        users' locks); never held across a sync."""
        self._users: dict[str, threading.Lock] = {}
        """One lock a user, held by the thread that syncs or builds that user's copy."""
        self._store_id: str | None = None
        self._waiting: dict[str, tuple[str, int]] = {}
        """Users whose copy is registered but waits for older transactions: (copy, the
        transaction id every one below which must have ended)."""
        self._swept = False
        self._gone: set[str] = set()
        """Users found without records while their lock is held: the lock file goes."""
        start_afresh_when_forked(self)

    def _forked(self) -> None:
        self._mutex = threading.RLock()
        self._users = {}
        self._open = OrderedDict()
        self._waiting = {}  # (the parent's registrations are the parent's to build)
        self._gone = set()

    def close(self) -> None:
        with self._mutex:
            self._open.clear()

    # ------------------------------------------------------------------ syncing

    def sync(self, conn: psycopg.Connection[Any], user_id: str) -> LexicalIndex | None:
        """The user's copy, in step with what the database held when this was called;
        None where it cannot be had now (PostgreSQL's own index answers instead)."""
        self._store(conn)
        with self._mutex:
            if not self._swept:
                self._sweep(conn)
                self._swept = True
            mine = self._users.setdefault(user_id, threading.Lock())
        # Another thread syncing or building this user's copy: waited for as long as
        # another process would be, then PostgreSQL's index answers. Other users' copies
        # are not held up meanwhile.
        if not mine.acquire(timeout=self.timeout_s):
            log.info("a lexical copy stayed busy: this search reads PostgreSQL's index")
            return None
        try:
            with self._locked(user_id):
                return self._sync(conn, user_id)
        except TimeoutError:
            log.info("a lexical copy stayed locked: this search reads PostgreSQL's index")
        except (OSError, ValueError, CorruptStoreError) as exc:  # a full disk, say
            log.warning("a lexical copy failed (%s): this search reads PostgreSQL's index", exc)
        finally:
            mine.release()
        return None

    def _sync(self, conn: psycopg.Connection[Any], user_id: str) -> LexicalIndex | None:
        state = self._read_state(user_id)
        if state is None or state.format != FORMAT or state.store_id != self._store(conn):
            return self._build(conn, user_id, state)
        row = conn.execute(_SYNC, (state.copy, user_id, str(state.horizon))).fetchone()
        assert row is not None
        xmin, xmax, registered, logged = int(row[0]), int(row[1]), bool(row[2]), row[3]
        if not registered or state.horizon > xmax:
            return self._build(conn, user_id, state)
        try:
            opened = self._opened(user_id, state)
        except CorruptStoreError:  # damaged files, or a crash mid-write: built afresh
            return self._build(conn, user_id, state)
        waiting = self._waiting.pop(user_id, None)
        if waiting is not None and waiting[0] != state.copy:  # another process built it
            conn.execute("DELETE FROM lexical_copies WHERE copy = %s", (waiting[0],))
        taken = set(state.taken)
        ids = sorted({i for x, i in logged if int(x) not in taken})
        if ids:
            rows = conn.execute(COPY_DOCS + " AND n.id = ANY(%s)", (user_id, ids)).fetchall()
            if len(rows) < len(ids):  # a record gone for good: its words leave the disk
                return self._build(conn, user_id, state)
            try:
                opened.index.write(ids, (Doc(0, text, ctx, id=id_) for id_, text, ctx in rows))
            except (ValueError, OSError) as exc:
                log.warning("a lexical copy could not take changes in (%s): built afresh", exc)
                return self._build(conn, user_id, state)
        if logged:  # (every change below xmin is in the copy now)
            kept = sorted(x for x in taken | {int(x) for x, _ in logged} if x >= xmin)
            kept = kept if len(kept) <= MAX_TAKEN else []
            moved = replace(state, horizon=xmin, taken=tuple(kept))
            if ids or moved != state:  # (else other processes would reload for nothing)
                state = replace(moved, version=state.version + 1)
                self._write_state(user_id, state)
                opened.state = state
        self._report(conn, user_id, opened, xmin)
        return opened.index

    def _report(
        self, conn: psycopg.Connection[Any], user_id: str, opened: _Open, horizon: int
    ) -> None:
        """Record the copy's horizon (every change below it is in the copy), delete the
        changes below every copy's horizon, drop copies unseen for long."""
        now = time.monotonic()
        if now - opened.reported < REPORT_EVERY_S:
            return
        opened.reported = now
        with conn.transaction():
            # An UPDATE, never an insert: a copy dropped meanwhile stays dropped (its
            # changes may be gone) and is built afresh at its next sync.
            conn.execute(
                "UPDATE lexical_copies SET horizon = greatest(horizon, %s::text::xid8), "
                "seen_at = now() WHERE copy = %s",
                (str(horizon), opened.state.copy),
            )
            self._prune(conn, user_id)

    @staticmethod
    def _prune(conn: psycopg.Connection[Any], user_id: str) -> None:
        conn.execute(
            f"DELETE FROM lexical_copies WHERE user_id = %s AND (seen_at < now() - "
            f"interval '{UNSEEN_FOR}' OR (NOT built AND seen_at < now() - interval "
            f"'{UNBUILT_FOR}'))",
            (user_id,),
        )
        # No copy left: nothing is logged for the user, and nothing logged is needed.
        conn.execute(
            "DELETE FROM lexical_changes WHERE user_id = %s AND xid < coalesce("
            "(SELECT min(horizon) FROM lexical_copies WHERE user_id = %s), "
            "pg_snapshot_xmax(pg_current_snapshot()))",
            (user_id, user_id),
        )

    # ------------------------------------------------------------------ building

    def _build(
        self, conn: psycopg.Connection[Any], user_id: str, old: CopyState | None
    ) -> LexicalIndex | None:
        first = user_id not in self._waiting
        copy, wait_for = self._register(conn, user_id)
        if not first and not self._still_registered(conn, copy):  # dropped while it waited
            self._waiting.pop(user_id, None)
            copy, wait_for = self._register(conn, user_id)
        # Waited for once; after that each search looks once, until they have ended.
        deadline = time.monotonic() + (BUILD_WAIT_S if first else 0.0)
        while True:
            if _xid(conn, "xmin") >= wait_for:
                break
            if time.monotonic() > deadline:
                log.info(
                    "a lexical copy waits for a transaction open since before it registered: "
                    "this search reads PostgreSQL's index"
                )
                return None
            time.sleep(0.01)
        self._waiting.pop(user_id, None)
        self._close(user_id)
        self._sweep_leftovers(user_id)
        target = self._folder(user_id, f".new-{uuid.uuid4().hex[:8]}")
        try:
            filled = self._fill(conn, user_id, copy, target)
        except BaseException:
            self._discard(target)
            raise
        if filled is None:  # its registration was dropped during the fill: not trusted
            self._discard(target)
            return None
        state, n = filled
        home = self._folder(user_id)
        # The copy this folder held before, by its state or, if that is lost, by the
        # name kept in the lock file: its registration goes (it would hold the changes).
        for before in {old.copy if old is not None else "", self._last_copy(user_id)}:
            if before and before != copy:
                conn.execute("DELETE FROM lexical_copies WHERE copy = %s", (before,))
        if n == 0:
            with conn.transaction():
                conn.execute("DELETE FROM lexical_copies WHERE copy = %s", (copy,))
                self._prune(conn, user_id)
            self._discard(target)
            self._discard(home)
            self._gone.add(user_id)  # (its lock file goes too)
            return LexicalIndex(None, keyed_by="id")  # nothing matches
        aside = self._folder(user_id, f".old-{uuid.uuid4().hex[:8]}")
        if home.exists():
            home.rename(aside)
        target.rename(home)
        self._discard(aside)
        self._folder(user_id, ".lock").write_text(copy)
        reopened = LexicalIndex(home / "index", existing=True, keyed_by="id")
        self._keep_open(user_id, _Open(state, reopened, reported=time.monotonic()))
        return reopened

    def _register(self, conn: psycopg.Connection[Any], user_id: str) -> tuple[str, int]:
        """A new copy's name, registered, and the transaction id below which every
        transaction must have ended before it reads (kept while it waits)."""
        waiting = self._waiting.get(user_id)
        if waiting is not None:
            return waiting
        copy = uuid.uuid4().hex
        conn.execute(
            "INSERT INTO lexical_copies VALUES "
            "(%s, %s, pg_snapshot_xmin(pg_current_snapshot()), now())",
            (copy, user_id),
        )
        # Committed (autocommit): a writer whose statement starts from now on sees it.
        self._waiting[user_id] = (copy, _xid(conn, "xmax"))
        return self._waiting[user_id]

    @staticmethod
    def _still_registered(conn: psycopg.Connection[Any], copy: str) -> bool:
        """Whether ``copy`` is registered, marking it seen (a registration that waits
        or builds for long is not dropped as one never built)."""
        row = conn.execute(
            "UPDATE lexical_copies SET seen_at = now() WHERE copy = %s RETURNING copy", (copy,)
        ).fetchone()
        return row is not None

    def _last_copy(self, user_id: str) -> str:
        """The name of the copy last built in this folder for the user ("" if none),
        kept in its lock file, which outlives a lost folder."""
        try:
            return self._folder(user_id, ".lock").read_text().strip()
        except OSError:
            return ""

    def _fill(
        self, conn: psycopg.Connection[Any], user_id: str, copy: str, target: Path
    ) -> tuple[CopyState, int] | None:
        """Write every record of the user into a new copy in ``target``, from one
        snapshot; its state is written beside it. None if the copy's registration was
        dropped meanwhile (changes it needs may be gone)."""
        if not self._still_registered(conn, copy):
            return None
        count = 0
        index = LexicalIndex(target / "index", keyed_by="id")
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            xmin = _xid(conn, "xmin")
            with conn.cursor(name=f"memlane_copy_{copy}") as cur:
                cur.itersize = BUILD_CHUNK
                cur.execute(COPY_DOCS, (user_id,))

                def docs() -> Iterator[Doc]:
                    nonlocal count
                    for id_, text, context in cur:
                        count += 1
                        yield Doc(0, text, context, id=id_)

                index.write((), docs())
        built = conn.execute(
            "UPDATE lexical_copies SET built = true, seen_at = now(), "
            "horizon = greatest(horizon, %s::text::xid8) WHERE copy = %s RETURNING copy",
            (str(xmin), copy),
        ).fetchone()
        if built is None:
            return None
        state = CopyState(self._store(conn), FORMAT, copy, xmin)
        (target / "state.json").write_text(json.dumps(asdict(state)))
        return state, count

    # ------------------------------------------------------------------ folders

    def _store(self, conn: psycopg.Connection[Any]) -> str:
        """The database's identity: its ``store_id`` and its oid (a database copied
        from another, as a template or by a dump restored beside it, holds its
        ``store_id`` but has an oid of its own)."""
        if self._store_id is None:
            row = conn.execute(
                "SELECT (SELECT value FROM memlane_meta WHERE key = 'store_id'), "
                "(SELECT oid FROM pg_database WHERE datname = current_database())::text"
            ).fetchone()
            if row is None or row[0] is None:
                raise StoreError("the database has no store_id: run its migrations")
            self._store_id = f"{row[0]}:{row[1]}"
        return self._store_id

    def _folder(self, user_id: str, suffix: str = "") -> Path:
        """The user's folder (``suffix``: beside it), named by a hash of the store's id
        and the user's, never the id."""
        digest = hashlib.sha256(f"{self._store_id}\0{user_id}".encode()).hexdigest()[:32]
        return self.root / f"{digest}{suffix}"

    def discard(self, conn: psycopg.Connection[Any], user_id: str) -> None:
        """Remove the user's copy from this folder (a forgotten user), under its lock."""
        self._store(conn)
        with self._mutex:
            mine = self._users.setdefault(user_id, threading.Lock())
        with mine:
            try:
                with self._locked(user_id):
                    self._close(user_id)
                    self._waiting.pop(user_id, None)
                    self._discard(self._folder(user_id))
                    self._sweep_leftovers(user_id)
                    self._gone.add(user_id)
            except TimeoutError:  # its next search here finds it unregistered
                log.warning("a forgotten user's lexical copy stayed locked: left for later")

    def _sweep_leftovers(self, user_id: str) -> None:
        """Under the user's lock: remove what a process stopped mid-build left (a new
        copy half written, an old one not yet removed), with the words they hold."""
        home = self._folder(user_id)
        for leftover in self.root.glob(f"{home.name}.*-*"):
            if leftover.is_dir():
                self._discard(leftover)

    def _sweep(self, conn: psycopg.Connection[Any]) -> None:
        """At the first sync of this process: remove the copies of this database in the
        folder that are no longer registered (their user forgotten, or unseen for long),
        and leftovers of builds, where no process holds their user's lock."""
        if not self.root.is_dir():
            return
        states: dict[Path, str] = {}
        for folder in self.root.iterdir():
            state = folder / "state.json"
            if folder.is_dir() and "." not in folder.name and state.is_file():
                with contextlib.suppress(OSError, ValueError, KeyError):
                    raw = json.loads(state.read_text())
                    if raw["store_id"] == self._store_id:
                        states[folder] = str(raw["copy"])
        live = {
            row[0]
            for row in conn.execute(
                "SELECT copy FROM lexical_copies WHERE copy = ANY(%s)", (list(states.values()),)
            ).fetchall()
        }
        doomed = {f.name for f, copy in states.items() if copy not in live}
        for folder in self.root.iterdir():
            digest, dot, rest = folder.name.partition(".")
            leftover = dot and rest.startswith(("new-", "old-"))
            if not folder.is_dir() or not (leftover or folder.name in doomed):
                continue
            fd = try_lock_here(self.root / f"{digest}.lock")
            if fd is None:
                continue
            try:
                # (a registered copy may have replaced an unregistered one meanwhile)
                now = self._state_in(folder)
                if leftover or now is None or not self._registered(conn, now.copy):
                    self._discard(folder)
            finally:
                os.close(fd)

    @staticmethod
    def _registered(conn: psycopg.Connection[Any], copy: str) -> bool:
        row = conn.execute("SELECT 1 FROM lexical_copies WHERE copy = %s", (copy,)).fetchone()
        return row is not None

    @staticmethod
    def _state_in(folder: Path) -> CopyState | None:
        try:
            raw = json.loads((folder / "state.json").read_text())
            raw["taken"] = tuple(raw.get("taken", ()))
            return CopyState(**raw)
        except (OSError, ValueError, TypeError):
            return None

    def _read_state(self, user_id: str) -> CopyState | None:
        return self._state_in(self._folder(user_id))

    def _write_state(self, user_id: str, state: CopyState) -> None:
        folder = self._folder(user_id)
        tmp = folder / f"state.json.{uuid.uuid4().hex[:8]}"
        tmp.write_text(json.dumps(asdict(state)))
        os.replace(tmp, folder / "state.json")

    def _opened(self, user_id: str, state: CopyState) -> _Open:
        """The user's copy as its folder holds it now: opened, or read again where
        another process changed it."""
        opened = self._open.get(user_id)
        if opened is not None and opened.state.copy == state.copy:
            if opened.state != state:
                opened.index.reload()
                opened.state = state
            return self._keep_open(user_id, opened)
        index = LexicalIndex(self._folder(user_id) / "index", existing=True, keyed_by="id")
        return self._keep_open(user_id, _Open(state, index))

    def _keep_open(self, user_id: str, opened: _Open) -> _Open:
        with self._mutex:
            self._open[user_id] = opened
            self._open.move_to_end(user_id)
            while len(self._open) > MAX_OPEN:
                self._open.popitem(last=False)
        return opened

    def _close(self, user_id: str) -> None:
        with self._mutex:
            self._open.pop(user_id, None)

    @staticmethod
    def _discard(folder: Path) -> None:
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)

    @contextlib.contextmanager
    def _locked(self, user_id: str) -> Iterator[None]:
        """The user's lock file while its copy changes (up to ``timeout_s``, then
        TimeoutError). A user found without records loses the file (named by a hash of
        the store and the user), so a lock is held only on the file at the path."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self._folder(user_id, ".lock")
        fd = take_lock(path, self.timeout_s)
        self._gone.discard(user_id)
        try:
            yield
        finally:
            if user_id in self._gone:
                self._gone.discard(user_id)
                path.unlink(missing_ok=True)
            os.close(fd)
