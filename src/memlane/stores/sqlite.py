"""The embedded default: one SQLite file (WAL), FTS5 for lexical search, vectors as
int8 BLOBs (or float16: ``vectors="float16"``; a file from before 2026-12-07: float16).

Every batch is one transaction (``BEGIN IMMEDIATE`` when it writes, so concurrent writers
queue on the busy timeout instead of failing half-way). Schema changes are ordered,
named migrations recorded in ``schema_migrations``. A file that is not a database, or a
database memlane did not create (an empty file too), is refused with a typed error and
left byte for byte as it was: it is looked at read-only before anything writes. A new
database is built under a temporary name and linked into place complete.

SQL text is built by the pure functions of :mod:`memlane.stores.sqlite_sql`, and run by
the op handlers of :mod:`memlane.stores.sqlite_ops`; this class owns the file, the
connection and the transaction. Vectors are scored from an in-process matrix per user
(:mod:`memlane.stores.vector_cache`), rebuilt when this store writes that user's records or
when ``PRAGMA data_version`` shows another process wrote.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memlane.errors import (
    ConfigurationError,
    ConflictError,
    CorruptStoreError,
    ForeignStoreError,
    StoreError,
)
from memlane.models import to_iso, utcnow
from memlane.ports import store as ops
from memlane.ports.store import Op
from memlane.stores.base import Retries, refuse_unencodable, retrying
from memlane.stores.forks import park, start_afresh_when_forked
from memlane.stores.sidecar import REBUILD, Sidecar
from memlane.stores.sql.codecs import APPLICATION, WRITE_OPS
from memlane.stores.sql.migrations import MigrationTarget, apply_migrations
from memlane.stores.sqlite_ops import SqliteOps
from memlane.stores.sqlite_sql import (
    FLOAT16_SQL,
    MIGRATIONS,
    float16_blob,
    parse_sqlite_url,
    split_sql,
    sqlite_url,
)
from memlane.stores.sqlite_tx import transaction
from memlane.stores.sqlite_wal import BACKSTOP_PAGES, WalCheckpoints

if TYPE_CHECKING:
    from memlane.stores.vector_cache import VectorCache

NEW_VECTOR_FORM = "int8"
"""The form a new database keeps its vectors in when none is asked for: at a million
memories 1,532 B a memory on disk against float16's 1,943 (bench/scale.md), for 0.004 of
the vector half's recall@10 and none of LoCoMo's (bench/codes.md)."""

MMAP_BYTES = 1 << 34
"""The most of a database file SQLite maps into memory (16 GiB of address space)."""

# ---------------------------------------------------------------------------- store


class SqliteStore(SqliteOps):
    """A memlane store in one SQLite file (or in memory with ``:memory:``)."""

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_s: float = 30.0,
        vector_cache_bytes: int | None = None,
        create: bool = True,
        vectors: str | None = None,
    ) -> None:
        """A store in the SQLite file at ``path`` (``":memory:"`` for one in memory).

        With ``create=False`` the file must already hold a memlane database (for reading a
        store, e.g. a migration's source): a missing file is a StoreError, never created.

        ``vectors`` is the form vectors are written in: ``"int8"`` (1 byte a
        dimension, each vector scaled so that its largest component is ±127) or
        ``"float16"`` (2 bytes: about 400 bytes more a memory at 384 dimensions, for
        0.004 more of the vector half's recall@10; bench/codes.md). The form given is
        recorded in the file and kept by later opens that give none. None: the recorded
        form; int8 for a new database; float16 for one made before the form was
        recorded (memlane before 2026-12-07), whose vectors are all float16. Vectors
        written before a change keep their form until written again; both forms are
        read. Raises ConfigurationError for another form.
        """
        if vectors is not None:
            _check_vector_form(vectors)
        self._vector_form_asked = vectors
        self._vector_form = vectors or NEW_VECTOR_FORM
        self.path = str(path)
        self.create = create
        self._vector_cache_bytes = vector_cache_bytes
        self._vector_cache: VectorCache | None = None
        self._data_version: int | None = None
        self.url = sqlite_url(self.path)
        self.busy_timeout_s = busy_timeout_s
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self._executor: ThreadPoolExecutor | None = None
        self._scan_thread = None
        self._early_scans = {}
        self._forget_found()
        self._sidecar_: Sidecar | None = None
        self._wal: WalCheckpoints | None = None
        start_afresh_when_forked(self)

    def _forked(self) -> None:
        """In a child forked from this process: start afresh on first use. The parent's
        connection is parked, never used or closed here (SQLite's connections do not
        cross a fork); its threads (the scan thread, the executor, the log's copier) are
        not here, nor are its indexes; a lock a thread of the parent held would stay held
        for ever, so the lock is new."""
        if self._conn is not None:
            park(self._conn)
        self._conn = None
        self._lock = threading.RLock()
        self._sidecar_ = None
        self._wal = None
        self._executor = None
        self._scan_thread = None
        self._early_scans = {}
        self._forget_found()
        self._data_version = None
        self._vector_cache = None

    @classmethod
    def from_url(cls, url: str, *, create: bool = True) -> SqliteStore:
        """The store a ``sqlite:///PATH`` URL names; ``create`` as in the constructor."""
        where, options = parse_sqlite_url(url)
        path = Path(where).expanduser() if "memory:" not in where else ":memory:"
        return cls(path, create=create, vectors=options.get("vectors"))

    @property
    def in_memory(self) -> bool:
        return self.path == ":memory:"

    # ------------------------------------------------------------------ lifecycle

    def setup(self) -> None:
        """Open the database, creating and migrating it as needed. Raises StoreError (no
        file with ``create=False``, a folder that cannot be made, something other than a
        folder where the search indexes go), ForeignStoreError,
        CorruptStoreError, SchemaVersionError; a refused file is left byte for byte as
        it was."""
        with self._lock:
            if self._conn is not None:
                return
            if self.in_memory:
                conn = self._connect(self.path)
            else:
                index = Path(f"{self.path}.index")
                if index.exists() and not index.is_dir():
                    raise StoreError(
                        f"{index} is not a folder: the search indexes live there (move it away)"
                    )
                if not self._inspect():
                    self._create()
                # mode=rw: the file was just checked; if it vanished since, fail, never
                # create an unchecked empty one in its place.
                conn = self._connect(f"{Path(self.path).absolute().as_uri()}?mode=rw", uri=True)
            try:
                with _mapped_errors(self.path):
                    self._configure(conn)
                    self._migrate(conn)
                    found = conn.execute(
                        "SELECT value FROM memlane_meta WHERE key = 'store_id'"
                    ).fetchone()
                    self._vector_form = self._recorded_vector_form(conn)
            except BaseException:
                conn.close()
                raise
            root = None if self.in_memory else Path(f"{self.path}.index")
            # A database migrations gave no id yet (only tests run older schemas).
            store_id = str(found[0]) if found else "none"
            vectors = None
            if root is not None:
                from memlane.stores.stored_vectors import StoredVectors

                vectors = StoredVectors(Path(self.path), timeout_s=self.busy_timeout_s)
            self._sidecar_ = Sidecar(
                root,
                store_id,
                timeout_s=self.busy_timeout_s,
                vectors=vectors,
                copy_bytes=self._vector_cache_bytes,
            )
            # PRAGMA data_version counts per connection: what was remembered under the
            # last connection's count means nothing under this one's.
            self._forget_found()
            self._data_version = None
            if not self.in_memory:
                conn.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")
                self._wal = WalCheckpoints(self.path)
            self._conn = conn
            if found:  # a database with the outbox (only tests run older schemas)
                with _mapped_errors(self.path):
                    self._sidecar_.finish_erasures(conn)

    def _recorded_vector_form(self, conn: sqlite3.Connection) -> str:
        """The form vectors are written in: the one asked for (recorded in the file
        when it is not the recorded one), else the recorded one, else float16 (a file
        from before the form was recorded: a new one has it from its first open)."""
        from memlane.stores.vector_cache import VECTOR_FORMS

        row = conn.execute("SELECT value FROM memlane_meta WHERE key = 'vector_form'").fetchone()
        recorded = None if row is None else str(row[0])
        asked = self._vector_form_asked
        if asked is not None and asked != recorded:
            with transaction(conn, write=True):
                conn.execute(
                    "INSERT OR REPLACE INTO memlane_meta VALUES ('vector_form', ?)", (asked,)
                )
            return asked
        if recorded in VECTOR_FORMS:
            return recorded
        return "float16"

    def _connect(self, target: str, *, uri: bool = False) -> sqlite3.Connection:
        try:
            return sqlite3.connect(
                target,
                timeout=self.busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
                uri=uri,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite database {self.path}: {exc}") from exc

    def _inspect(self) -> bool:
        """Whether a memlane database is at the path, looked at through a read-only
        connection before anything writes: no pragma, journal or log may change a file
        that is not memlane's. Returns False when no file is there and the store may
        create one. Raises StoreError (no file with ``create=False``, not a file),
        ForeignStoreError (an empty file, an empty database or another application's:
        never adopted), CorruptStoreError (not a database, or damaged)."""
        path = Path(self.path)
        try:
            size = path.stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            if self.create:
                return False
            raise StoreError(
                f"no SQLite database at {self.path} (a store opened for reading is never created)"
            ) from None
        except OSError as exc:
            raise StoreError(f"cannot open SQLite database {self.path}: {exc}") from exc
        if not path.is_file():
            raise StoreError(f"{self.path} is not a file")
        if size == 0:
            raise ForeignStoreError(
                f"{self.path} is an empty file, not a memlane database; refusing to adopt it "
                "(remove it to create a new store there)"
            )
        # Without a log file nobody has the database open in WAL mode and the file holds
        # all of it: read it as immutable, which creates no -shm or -wal next to it (a
        # plain read-only open of a WAL database would).
        wal = Path(f"{self.path}-wal").exists()
        mode = "mode=ro" if wal else "mode=ro&immutable=1"
        conn = self._connect(f"{path.absolute().as_uri()}?{mode}", uri=True)
        try:
            with _mapped_errors(self.path):
                names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
                app = None
                if "memlane_meta" in names:
                    app = conn.execute(
                        "SELECT value FROM memlane_meta WHERE key='application'"
                    ).fetchone()
        finally:
            conn.close()
        if app is None or app[0] != APPLICATION:
            raise ForeignStoreError(
                f"{self.path} holds a database that memlane did not create; refusing to touch it"
            )
        return True

    def _create(self) -> None:
        """Make a new database: built and migrated under a temporary name, then linked
        into place complete, so another process never finds a half-made (empty) file at
        the path. Another process's database linked there first is used instead."""
        path = Path(self.path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the folder of {self.path}: {exc.strerror or exc}"
            ) from exc
        temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.new")
        try:
            conn = self._connect(str(temp))
            try:
                with _mapped_errors(self.path):
                    self._configure(conn)
                    self._migrate(conn)
            finally:
                conn.close()  # the last connection folds the log into the file
            _link_new(temp, path)
        except OSError as exc:
            raise StoreError(f"cannot create SQLite database {self.path}: {exc}") from exc
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{temp}{suffix}").unlink(missing_ok=True)
        self._inspect()  # what is there now: ours, or another process's

    def _configure(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
        if not self.in_memory:
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        if not self.in_memory:
            # Reads through a memory map: a search reranks a few hundred vectors from
            # random pages (at a million memories, half the time of those reads went to a
            # system call per page). Only the file's size is mapped, address space only.
            conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
        conn.execute("PRAGMA foreign_keys = ON")
        # Deleted rows are overwritten with zeros, not left in free pages: forgetting
        # a user or purging a memory takes its text off the disk.
        conn.execute("PRAGMA secure_delete = ON")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        # Only a new database or one _inspect() found to be memlane's gets here.
        conn.create_function(FLOAT16_SQL, 1, float16_blob, deterministic=True)
        with transaction(conn, write=True):
            new = not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'schema_migrations'"
            ).fetchone()
            apply_migrations(_migration_target(conn), MIGRATIONS, self.path)
            if new:  # its form recorded with its schema: later opens never take it as old
                conn.execute(
                    "INSERT INTO memlane_meta VALUES ('vector_form', ?)",
                    (self._vector_form_asked or NEW_VECTOR_FORM,),
                )

    def close(self) -> None:
        with self._lock:
            if self._wal is not None:
                self._wal.close()
                self._wal = None
            if self._conn is not None:
                self._conn.close()
                self._conn = None
                self._forget_found()
            if self._sidecar_ is not None:
                self._sidecar_.close()
                self._sidecar_ = None
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
            if self._scan_thread is not None:
                self._scan_thread.shutdown(wait=True)
                self._scan_thread = None

    def vector_count(self) -> int:
        """How many vectors the store keeps (every model's, contexts' included)."""
        conn = self._connection()
        with self._lock, _mapped_errors(self.path):
            (n,) = conn.execute("SELECT count(*) FROM vectors").fetchone()
        return int(n)

    def convert_vectors(
        self,
        form: str,
        *,
        progress: Callable[[int], None] | None = None,
        chunk: int = 10_000,
    ) -> int:
        """Rewrite every stored vector not yet in ``form`` (``"int8"`` or ``"float16"``)
        in it, and record the form, so that this store's later writes take it too. A
        vector is read back at unit length and written anew (float16 to int8 loses
        ~1e-3 of a cosine, as writing int8 at first does; int8 to float16 gains nothing
        back). ``progress`` is told how many vectors each chunk looked at; each chunk is
        its own transaction, so writers wait at most for one. Returns how many vectors
        were rewritten (0 when run again). Processes that have the store open keep
        writing the form they found until they open it again. The file does not shrink:
        ``VACUUM``, run while no process has the store open, gives the freed pages back.
        Raises ConfigurationError for another form."""
        from memlane.stores.vector_cache import from_blobs, to_blobs

        _check_vector_form(form)
        conn = self._connection()
        width = 1 if form == "int8" else 2
        rewritten, after = 0, 0
        with self._lock, _mapped_errors(self.path):
            self._vector_form_asked = form
            self._vector_form = self._recorded_vector_form(conn)
        while True:
            with self._lock, _mapped_errors(self.path), transaction(conn, write=True):
                rows = conn.execute(
                    "SELECT v.vid, v.vector, e.dim FROM vectors v JOIN embeddings e "
                    "ON e.vid = v.vid WHERE v.vid > ? ORDER BY v.vid LIMIT ?",
                    (after, chunk),
                ).fetchall()
                if not rows:
                    break
                after = int(rows[-1][0])
                by_dim: dict[int, list[tuple[int, bytes]]] = {}
                for vid, blob, dim in rows:
                    if len(blob) != width * dim:
                        by_dim.setdefault(int(dim), []).append((int(vid), bytes(blob)))
                for dim, found in by_dim.items():
                    vectors = from_blobs([blob for _, blob in found], dim)
                    blobs = to_blobs(list(vectors), form)
                    conn.executemany(
                        "UPDATE vectors SET vector = ? WHERE vid = ?",
                        [(blob, vid) for (vid, _), blob in zip(found, blobs, strict=True)],
                    )
                    rewritten += len(found)
            if progress is not None:
                progress(len(rows))
        with self._lock:
            self._vectors.clear()  # matrices read before hold the old form's rounding
        return rewritten

    def schema_versions(self) -> list[tuple[int, str]]:
        """The migrations applied to this database, in order."""
        conn = self._connection()
        with self._lock, _mapped_errors(self.path):
            rows = conn.execute("SELECT version, name FROM schema_migrations ORDER BY version")
            return [(int(v), str(n)) for v, n in rows]

    # ------------------------------------------------------------------ batches

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.setup()
        assert self._conn is not None
        return self._conn

    @property
    def _sidecar(self) -> Sidecar:
        """The search indexes beside the database, opened with the store if need be."""
        self._connection()
        return super()._sidecar

    def batch(self, ops_: Sequence[Op[Any]]) -> list[Any]:
        self.check_supported(ops_)
        write = any(isinstance(op, WRITE_OPS) for op in ops_)
        with self._lock:
            conn = self._connection()
            deadline = time.monotonic() + self.busy_timeout_s

            def retry_after(exc: Exception, attempts: int) -> float | None:
                # busy_timeout covers most waits; a lock seen at BEGIN is retried here.
                locked = isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
                return 0.01 if locked and time.monotonic() < deadline else None

            retries = Retries(sqlite3.DatabaseError, retry_after, _mapped_error)
            retrying(lambda: self._sync_searched(conn, ops_), retries)
            if not write:
                self._start_scans(ops_)
            try:
                results, erased = retrying(lambda: self._attempt(conn, ops_, write=write), retries)
            except UnicodeEncodeError as exc:  # rolled back by the transaction
                raise refuse_unencodable(exc) from exc
            finally:
                self._finish_scans()
            if write:
                # Committed: a lock met while indexing must not run the batch again.
                retrying(lambda: self._after_write(conn, ops_, erased), retries)
                if self._wal is not None:  # the log is copied into the file on its thread
                    self._wal.wrote()
            return results

    def _sync_searched(self, conn: sqlite3.Connection, ops_: Sequence[Op[Any]]) -> None:
        """Before a search: what was committed for its user is in the search indexes
        (with the codes of the model it searches with)."""
        searched: dict[str, str | None] = {}
        for op in ops_:
            if isinstance(op, ops.VectorSearch):
                searched[op.user_id] = op.model
            elif isinstance(op, ops.LexicalSearch):
                searched.setdefault(op.user_id, None)
        for user_id, model in sorted(searched.items()):
            self._sidecar.sync(conn, user_id, model)

    def _attempt(
        self, conn: sqlite3.Connection, ops_: Sequence[Op[Any]], *, write: bool
    ) -> tuple[list[Any], set[str]]:
        """One run of the batch in one transaction: its results, and the users whose
        text it erased (see :meth:`_run`; the caller then updates the search indexes)."""
        if write:  # it may change a record between a search of it and a SparseOf
            self._forget_found(off=True)
        try:
            with transaction(conn, write=write):
                results, erased = self._run(conn, ops_)
            if erased:
                self._scrub_log(conn)
            return results, erased
        except BaseException:
            self._found_terms = {}  # read ahead for a failed batch: no search asks for them
            raise
        finally:
            # Also after a rollback: a search inside the failed batch may have cached
            # rows that were never committed.
            self._forget_vectors(ops_)
            if write:  # records may have changed: searches remember their hashes anew
                self._forget_found()

    def _run(self, conn: sqlite3.Connection, ops_: Sequence[Op[Any]]) -> tuple[list[Any], set[str]]:
        """The results of the batch's ops, and the users whose text one of them took off
        for good (a user forgotten, or rows deleted by a purge or a session delete,
        whatever it returns: a session with no session row can still have episodes):
        their search indexes are rebuilt without it (an outbox row asks for that in the
        same transaction), and the log must lose it too. A rebuild asked for
        (RebuildIndexes) takes the same path."""
        results: list[Any] = [None] * len(ops_)
        erased: set[str] = set()
        self._found_checked = False  # other connections' commits: checked once a batch
        # A vector search whose code scan runs on the scan thread goes last (only read
        # batches start scans), so that the others overlap the scan instead of waiting;
        # then, while the scan may still run, the BM25 hits' sparse terms are read ahead.
        order = sorted(range(len(ops_)), key=lambda i: id(ops_[i]) in self._early_scans)
        ahead = bool(self._early_scans)
        for i in order:
            op = ops_[i]
            if ahead and id(op) in self._early_scans:
                ahead = False
                self._read_ahead_of_scans(conn, ops_, results)
            before = conn.total_changes
            results[i] = self._handler(op)(conn, op)
            if isinstance(op, ops.DeleteUser | ops.RebuildIndexes) or (
                isinstance(op, ops.RemoveRecords | ops.DeleteSessions)
                and conn.total_changes > before
            ):
                conn.execute(
                    "INSERT INTO index_outbox(user_id, rid) VALUES (?, ?)", (op.user_id, REBUILD)
                )
                erased.add(op.user_id)
        return results, erased

    def _read_ahead_of_scans(
        self, conn: sqlite3.Connection, ops_: Sequence[Op[Any]], results: list[Any]
    ) -> None:
        """Before the batch's vector searches wait for their code scans: the sparse terms
        of the BM25 hits found so far, where the search says it asks for them next
        (:meth:`_read_ahead`); none once a scan failed (the batch fails with it)."""
        scans = self._early_scans.values()
        if any(scan.done() and scan.exception() is not None for scan in scans):
            return
        for done, hits in zip(ops_, results, strict=True):
            if isinstance(done, ops.LexicalSearch) and hits:
                self._read_ahead(conn, done, (id_ for id_, _ in hits))

    def _after_write(
        self, conn: sqlite3.Connection, ops_: Sequence[Op[Any]], erased: set[str]
    ) -> None:
        """Erased text leaves the search indexes now; records written in bulk are
        indexed once enough have gathered (else by the next search)."""
        for user_id in sorted(erased):
            self._sidecar.sync(conn, user_id)
        written: dict[str, int] = {}
        for op in ops_:
            if isinstance(op, ops.WriteRecord):
                written[op.record.user_id] = written.get(op.record.user_id, 0) + 1
        for user_id, n in written.items():
            self._sidecar.wrote(conn, user_id, n)

    def _scrub_log(self, conn: sqlite3.Connection) -> None:
        """After text was erased: copy the write-ahead log into the database and empty
        it, so the old page versions holding the text leave the disk (best effort: a
        reader in another process can hold the log until it finishes)."""
        if not self.in_memory:
            # Never wait long for another connection's reader (the store's lock is held,
            # and a reader can hold the log for long): the next checkpoint copies the
            # rest and SQLite reuses the log from its start. Another process's checkpoint
            # thread makes the log busy for a few ms after each of its writes: tried
            # again for up to SCRUB_RETRY_S. This process's own is held off meanwhile.
            paused = self._wal.paused() if self._wal is not None else contextlib.nullcontext()
            deadline = time.monotonic() + SCRUB_RETRY_S
            conn.execute("PRAGMA busy_timeout = 0")
            try:
                with paused:
                    while True:
                        (busy, _, _) = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                        if not busy or time.monotonic() >= deadline:
                            break
                        time.sleep(0.005)
            finally:
                conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")

    def _forget_vectors(self, ops_: Sequence[Op[Any]]) -> None:
        """Drop cached matrices of users whose records this batch changed."""
        for op in ops_:
            if isinstance(op, ops.WriteRecord):
                self._vectors.invalidate_user(op.record.user_id)
            elif isinstance(op, ops.RemoveRecords | ops.DeleteSessions | ops.DeleteUser):
                self._vectors.invalidate_user(op.user_id)
            elif isinstance(op, ops.DropEmbeddings | ops.SetEmbeddingModel) or (
                isinstance(op, ops.PutEmbeddings) and op.staged
            ):
                self._vectors.clear()  # reembed: every matrix may hold the old vectors

    async def abatch(self, ops_: Sequence[Op[Any]]) -> list[Any]:
        # The sqlite3 driver only blocks; run it on this store's own worker thread so the
        # event loop keeps serving other tasks (the same approach as aiosqlite).
        import asyncio

        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="memlane-sqlite")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.batch, ops_)


# ---------------------------------------------------------------------------- helpers


class _mapped_errors:
    """Maps the driver's errors to memlane's: a damaged or foreign file (``database disk
    image is malformed``, ``file is not a database``) to CorruptStoreError, any other
    operational failure to StoreError."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if isinstance(exc, sqlite3.OperationalError):
            raise StoreError(f"SQLite error on {self.path}: {exc}") from exc
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.IntegrityError):
            raise CorruptStoreError(f"{self.path} is not a usable SQLite database: {exc}") from exc


def _check_vector_form(form: str) -> None:
    """Raise ConfigurationError unless ``form`` is one a SQLite store keeps vectors in."""
    from memlane.stores.vector_cache import VECTOR_FORMS

    if form not in VECTOR_FORMS:
        raise ConfigurationError(
            f"vectors={form!r}: a SQLite store keeps vectors as "
            + " or ".join(repr(f) for f in VECTOR_FORMS)
        )


def _migration_target(conn: sqlite3.Connection) -> MigrationTarget:
    def run_script(script: str) -> None:
        for statement in split_sql(script):
            conn.execute(statement)

    return MigrationTarget(
        query=lambda sql, params: conn.execute(sql, params).fetchall(),
        run_script=run_script,
        mark="?",
        create_table="CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
        applied_at=lambda: (to_iso(utcnow()),),
    )


def _mapped_error(exc: Exception) -> Exception:
    """The memlane error for a SQLite error a batch gave up on."""
    if isinstance(exc, sqlite3.OperationalError):
        return StoreError(f"SQLite error: {exc}")
    if isinstance(exc, sqlite3.IntegrityError):
        return ConflictError(
            f"a concurrent write got there first: {exc}", expected=None, actual=None
        )
    return CorruptStoreError(f"SQLite database error: {exc}")


SCRUB_RETRY_S = 0.5
"""How long an erasure tries again to empty the log while another connection makes it
busy (a checkpoint takes tens of ms at a million memories; a long reader is not waited
for past this)."""


def _link_new(temp: Path, path: Path) -> None:
    """Put the finished database ``temp`` at ``path`` unless a file is already there."""
    try:
        os.link(temp, path)
    except FileExistsError:
        return  # another process created the store first: that one is used
    except OSError:
        # No hard links on this file system: a rename, checked first (not atomic).
        if not path.exists():
            os.replace(temp, path)
