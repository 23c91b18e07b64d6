"""SQLite schema, migrations and the pure functions that build SQL and read rows.

Kept apart from :mod:`memlane.stores.sqlite` so the store class only executes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from memlane.errors import UnsupportedError
from memlane.models import MemoryRecord, from_iso, to_iso
from memlane.stores.sql.codecs import RECORDS, TRUST_OF_OLD_ROWS, RowCodec
from memlane.stores.sql.dialect import Clauses, Dialect
from memlane.stores.sql.graph import SCHEMA as GRAPH_SCHEMA
from memlane.stores.sql.statements import APPEND_ONLY

FLOAT16_SQL = "memlane_float16"
"""The SQL function migration 8 converts float32 vector BLOBs with (see float16_blob)."""


def float16_blob(blob: bytes) -> bytes:
    """A float32 vector BLOB (schema 7 and older) in the stored float16 form."""
    import numpy as np

    from memlane.stores.vector_cache import to_blob

    return to_blob(np.frombuffer(blob, dtype="<f4"))


def _previous_turn(row: str) -> str:
    """SQL for the text of the episode before ``row`` in its session (NULL otherwise)."""
    return (
        f"CASE WHEN {row}.kind = 'episode' AND {row}.session_id IS NOT NULL THEN "
        f"(SELECT p.text FROM records p WHERE p.user_id = {row}.user_id "
        f"AND p.session_id = {row}.session_id AND p.kind = 'episode' "
        f"AND p.id < {row}.id ORDER BY p.id DESC LIMIT 1) END"
    )


_LEXICAL_CONTEXT_SQL = """        DROP TRIGGER records_ai;
        DROP TRIGGER records_ad;
        DROP TRIGGER records_au;
        DROP TABLE records_fts;
        CREATE VIRTUAL TABLE records_fts USING fts5(
            text, context, tokenize='porter unicode61 remove_diacritics 2'
        );
        INSERT INTO records_fts(rowid, text, context)
            SELECT r.rid, r.text,
                {ctx_r} FROM records r;
        CREATE TRIGGER records_ai AFTER INSERT ON records BEGIN
            INSERT INTO records_fts(rowid, text, context)
            VALUES (new.rid, new.text,
                {ctx_new});
        END;
        CREATE TRIGGER records_ad AFTER DELETE ON records BEGIN
            DELETE FROM records_fts WHERE rowid = old.rid;
        END;
        CREATE TRIGGER records_au AFTER UPDATE OF text ON records BEGIN
            DELETE FROM records_fts WHERE rowid = old.rid;
            INSERT INTO records_fts(rowid, text, context)
            VALUES (new.rid, new.text,
                {ctx_new});
        END;
""".format(ctx_r=_previous_turn("r"), ctx_new=_previous_turn("new"))


def _previous_live_turn(row: str, *, same_agent: bool) -> str:
    """SQL for the text of the last episode before ``row`` in its session that is not
    deleted (NULL otherwise); with ``same_agent``, by the same agent only (``IS``: no
    agent matches no agent): reads are limited by agent, so another agent's turn must
    never be this one's context."""
    agent = f"AND p.agent_id IS {row}.agent_id " if same_agent else ""
    return (
        f"CASE WHEN {row}.kind = 'episode' AND {row}.session_id IS NOT NULL THEN "
        f"(SELECT p.text FROM records p WHERE p.user_id = {row}.user_id "
        f"AND p.session_id = {row}.session_id AND p.kind = 'episode' {agent}"
        f"AND p.deleted_at IS NULL AND p.id < {row}.id ORDER BY p.id DESC LIMIT 1) END"
    )


def _refresh_context(row: str, *, itself: bool, same_agent: bool) -> str:
    """SQL re-indexing the lexical context of the next live episode after ``row`` (by the
    same agent with ``same_agent``; and of ``row`` itself when ``itself``), so a deleted,
    purged or rewritten turn's words stop matching the turn after it."""
    agent = f"AND n.agent_id IS {row}.agent_id " if same_agent else ""
    targets = (
        f"SELECT n.rid FROM records n WHERE {row}.kind = 'episode' "
        f"AND n.user_id = {row}.user_id AND n.session_id = {row}.session_id {agent}"
        f"AND n.kind = 'episode' AND n.deleted_at IS NULL AND n.id > {row}.id "
        "ORDER BY n.id LIMIT 1"
    )
    if itself:
        targets = f"SELECT * FROM ({targets}) UNION ALL SELECT {row}.rid"
    return (
        "UPDATE records_fts SET context = (SELECT "
        + _previous_live_turn("t", same_agent=same_agent)
        + f" FROM records t WHERE t.rid = records_fts.rowid) WHERE rowid IN ({targets});"
    )


_TURN_ADDED_OR_REMOVED = """        CREATE TRIGGER records_ai AFTER INSERT ON records BEGIN
            INSERT INTO records_fts(rowid, text, context)
            VALUES (new.rid, new.text, {ctx_new});
        END;
        CREATE TRIGGER records_ad AFTER DELETE ON records BEGIN
            DELETE FROM records_fts WHERE rowid = old.rid;
            {refresh_old}
        END;
"""
"""The triggers indexing an added record with its lexical context and re-indexing the
turn after a removed one (migrations 6 and 7)."""

_TURN_DELETED_AND_REINDEX = """\
        CREATE TRIGGER records_au_deleted AFTER UPDATE OF deleted_at ON records
        WHEN new.kind = 'episode' AND new.deleted_at IS NOT old.deleted_at BEGIN
            {refresh_new_and_self}
        END;
        DELETE FROM records_fts;
        INSERT INTO records_fts(rowid, text, context)
            SELECT r.rid, r.text, {ctx_r} FROM records r;
"""
"""The trigger re-indexing around a turn deleted or restored, then the whole index built
again (migrations 6 and 7)."""


def _context_sql(template: str, *, same_agent: bool) -> str:
    """``template`` with the lexical context SQL filled in: the previous live turn
    (``ctx_*``) and re-indexing the turns after a change (``refresh_*``)."""
    return template.format(
        ctx_new=_previous_live_turn("new", same_agent=same_agent),
        ctx_r=_previous_live_turn("r", same_agent=same_agent),
        refresh_old=_refresh_context("old", itself=False, same_agent=same_agent),
        refresh_new=_refresh_context("new", itself=False, same_agent=same_agent),
        refresh_new_and_self=_refresh_context("new", itself=True, same_agent=same_agent),
        record_fields=_RECORD_FIELDS,
        history_fields=_HISTORY_FIELDS,
    )


_RECORD_FIELDS = """
            user_id TEXT NOT NULL,
            agent_id TEXT, team TEXT, session_id TEXT,
            kind TEXT NOT NULL, key TEXT,
            text TEXT NOT NULL,
            topics TEXT NOT NULL DEFAULT '[]',
            metadata TEXT NOT NULL DEFAULT '{}',
            importance REAL NOT NULL,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
            event_at TEXT, valid_from TEXT, valid_to TEXT, superseded_by TEXT,
            expires_at TEXT, deleted_at TEXT,
            access_count INTEGER NOT NULL DEFAULT 0, last_accessed_at TEXT,
            source_ids TEXT NOT NULL DEFAULT '[]', actor TEXT,
            content_hash TEXT NOT NULL,
            version INTEGER NOT NULL"""
"""The columns of ``records`` after its keys, as migration 1 made them; migration 7
copies the table with ``SELECT *``, so it declares them again, in this order."""

_HISTORY_FIELDS = """
            record_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            action TEXT NOT NULL,
            version INTEGER NOT NULL,
            at TEXT NOT NULL,
            actor TEXT, reason TEXT, snapshot TEXT"""
"""The columns of ``history`` after its id (migrations 1 and 7, as for records)."""

_LIVE_CONTEXT_SQL = _context_sql(
    """        DROP TRIGGER records_ai;
        DROP TRIGGER records_ad;
        DROP TRIGGER records_au;
"""
    + _TURN_ADDED_OR_REMOVED
    + """        CREATE TRIGGER records_au AFTER UPDATE OF text ON records
        WHEN new.text IS NOT old.text BEGIN
            DELETE FROM records_fts WHERE rowid = old.rid;
            INSERT INTO records_fts(rowid, text, context)
            VALUES (new.rid, new.text, {ctx_new});
            {refresh_new}
        END;
"""
    + _TURN_DELETED_AND_REINDEX,
    same_agent=False,
)

DROP_CONTEXTS_AFTER = (
    "UPDATE records SET context_hash = NULL WHERE user_id = ? AND session_id = ? "
    "AND agent_id IS ? AND kind = 'episode' AND (id > ? OR created_at >= ?) "
    "AND context_hash IS NOT NULL"
)
"""Drops the context vectors of the turns after a removed turn ``(user, session, agent,
id, created_at)``: each was embedded with the turns before it (``CoreConfig.context_window``
of them, which the store does not know), so any later one may hold the removed turn's
words. "After" is by id (the order of a session's turns, which an import embeds by) or by
the time written (an idempotent add's id is a hash, not in time order). A search then
scores those turns by their own vectors; the vectors left unused go with the next prune
of embeddings."""

REINDEX_DELETED_AFTER = (
    "INSERT INTO index_outbox(user_id, rid) "
    "SELECT n.user_id, n.rid FROM records n WHERE n.user_id = ? AND n.session_id = ? "
    "AND n.agent_id IS ? AND n.kind = 'episode' AND n.id > ? AND n.deleted_at IS NOT NULL "
    "AND NOT EXISTS (SELECT 1 FROM records x WHERE x.user_id = n.user_id "
    "AND x.session_id = n.session_id AND x.agent_id IS n.agent_id AND x.kind = 'episode' "
    "AND x.deleted_at IS NULL AND x.id > ? AND x.id < n.id)"
)
"""Queues the deleted turns after a removed turn ``(user, session, agent, id, id)`` up to
the next live turn of its agent for indexing: their lexical context can be the removed
turn's text (a deleted turn keeps the previous live one), and the delete trigger queues
only the next live turn."""


_REWRITTEN = """\
        CREATE TRIGGER records_au AFTER UPDATE OF text, agent_id, session_id, kind{columns} \
ON records
        WHEN new.text IS NOT old.text OR new.agent_id IS NOT old.agent_id
            OR new.session_id IS NOT old.session_id OR new.kind IS NOT old.kind{changed} BEGIN
            DELETE FROM records_fts WHERE rowid = old.rid;
            INSERT INTO records_fts(rowid, text, context)
            VALUES (new.rid, {indexed}, {ctx_new});
            {refresh_old}
            {refresh_new}
        END;
"""
"""The trigger re-indexing a rewritten or moved record and the turns after it before and
after (migrations 7 and 9: ``indexed`` is what the text column holds)."""

_PERIOD_WORDS = "new.text || ' ' || new.period_words"

_PERIODS_SQL = _context_sql(
    """        ALTER TABLE records ADD COLUMN periods TEXT NOT NULL DEFAULT '[]';
        ALTER TABLE records ADD COLUMN period_words TEXT NOT NULL DEFAULT '';
        DROP TRIGGER records_ai;
        DROP TRIGGER records_au;
        CREATE TRIGGER records_ai AFTER INSERT ON records BEGIN
            INSERT INTO records_fts(rowid, text, context)
            VALUES (new.rid, """
    + _PERIOD_WORDS
    + """, {ctx_new});
        END;
"""
    + _REWRITTEN.format(
        columns=", period_words",
        changed="\n            OR new.period_words IS NOT old.period_words",
        indexed=_PERIOD_WORDS,
        ctx_new="{ctx_new}",
        refresh_old="{refresh_old}",
        refresh_new="{refresh_new}",
    ),
    same_agent=True,
)
"""The periods a record's text names (:attr:`MemoryRecord.periods`) and their words,
indexed with the text: "yesterday", said on 8 May 2023, also matches "7 May 2023". Records
written before keep no periods until their text changes."""

_SCOPED_IDS_SQL = _context_sql(
    """        CREATE TABLE records_scoped (
            rid INTEGER PRIMARY KEY,
            id TEXT NOT NULL,{record_fields},
            context_hash TEXT,
            UNIQUE (user_id, id)
        );
        INSERT INTO records_scoped SELECT * FROM records;
        DROP TABLE records;
        ALTER TABLE records_scoped RENAME TO records;
        CREATE INDEX records_user_session ON records(user_id, session_id, id);
        CREATE INDEX records_user_key ON records(user_id, key) WHERE key IS NOT NULL;
        CREATE INDEX records_expires ON records(expires_at) WHERE expires_at IS NOT NULL;
        CREATE INDEX records_hash ON records(content_hash);
        CREATE INDEX records_context_hash ON records(context_hash)
            WHERE context_hash IS NOT NULL;
        CREATE UNIQUE INDEX records_current_key ON records(user_id, key)
            WHERE key IS NOT NULL AND superseded_by IS NULL AND valid_to IS NULL
            AND deleted_at IS NULL;
"""
    + _TURN_ADDED_OR_REMOVED
    + _REWRITTEN.format(
        columns="",
        changed="",
        indexed="new.text",
        ctx_new="{ctx_new}",
        refresh_old="{refresh_old}",
        refresh_new="{refresh_new}",
    )
    + _TURN_DELETED_AND_REINDEX
    + """        UPDATE records SET context_hash = NULL
            WHERE kind = 'episode' AND context_hash IS NOT NULL AND EXISTS (
                SELECT 1 FROM records p WHERE p.user_id = records.user_id
                AND p.session_id = records.session_id AND p.kind = 'episode'
                AND p.id < records.id AND p.agent_id IS NOT records.agent_id);
        CREATE TABLE history_scoped (
            id TEXT NOT NULL,{history_fields},
            PRIMARY KEY (user_id, id)
        );
        INSERT INTO history_scoped SELECT * FROM history;
        DROP TABLE history;
        ALTER TABLE history_scoped RENAME TO history;
        CREATE INDEX history_record ON history(user_id, record_id, id);
        CREATE TABLE jobs_scoped (
            id TEXT NOT NULL, user_id TEXT NOT NULL, status TEXT NOT NULL,
            run_after TEXT NOT NULL, lease_until TEXT, version INTEGER NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (user_id, id)
        ) WITHOUT ROWID;
        INSERT INTO jobs_scoped SELECT * FROM jobs;
        DROP TABLE jobs;
        ALTER TABLE jobs_scoped RENAME TO jobs;
        CREATE INDEX jobs_open ON jobs(user_id, id) WHERE status IN ('pending', 'running');
        CREATE INDEX jobs_id ON jobs(id);
""",
    same_agent=True,
)
"""Ids are unique per user scope (records, history events, jobs): an import keeps ids, so
a global id let one scope block another's idempotent add or learn that an id exists
elsewhere. The lexical context becomes the previous live turn by the same agent; a context
vector that may hold another agent's words is dropped (search falls back to the turn's own
vector; the embedder is not at hand in a migration)."""


def _next_live_turn(row: str) -> str:
    """SQL selecting (user, rid) of the next live episode after ``row`` in its session by
    the same agent (none when ``row`` is not an episode in a session): its lexical context
    is ``row``'s text, so it is indexed again whenever ``row`` changes."""
    return (
        f"SELECT n.user_id, n.rid FROM records n WHERE {row}.kind = 'episode' "
        f"AND n.user_id = {row}.user_id AND n.session_id = {row}.session_id "
        f"AND n.agent_id IS {row}.agent_id AND n.kind = 'episode' AND n.deleted_at IS NULL "
        f"AND n.id > {row}.id ORDER BY n.id LIMIT 1"
    )


BY_RIDS = "json_each(?) AS j CROSS JOIN records r ON r.rid = j.value "
"""A FROM clause of the records whose rids a JSON list names, looked up one by one
(CROSS JOIN keeps the list the outer loop: with ``r.rid IN (...)`` SQLite preferred to
scan the whole scope through its user index, a million rows at a million memories)."""

_INDEX_COLUMNS = (
    "SELECT r.rid, r.text || ' ' || r.period_words, "
    + _previous_live_turn("r", same_agent=True)
    + ", ev.vector, cv.vector, r.id, ev.vid, cv.vid, e.dim, c.dim FROM "
)
_VECTORS = (
    " LEFT JOIN embeddings e ON e.model = ? AND e.content_hash = r.content_hash "
    "LEFT JOIN vectors ev ON ev.vid = e.vid "
    "LEFT JOIN embeddings c ON c.model = ? AND c.content_hash = r.context_hash "
    "LEFT JOIN vectors cv ON cv.vid = c.vid "
)


def vectors_by_hash(count: int) -> str:
    """(content hash, vector, dimensions) of ``model``'s stored vectors among ``count``
    hashes, for ``(model, *hashes)``."""
    marks = ", ".join("?" * count)
    return (
        "SELECT e.content_hash, v.vector, e.dim FROM embeddings e "
        "JOIN vectors v ON v.vid = e.vid "
        f"WHERE e.model = ? AND e.content_hash IN ({marks})"
    )


INDEX_ROWS = _INDEX_COLUMNS + "records r" + _VECTORS + "WHERE r.user_id = ? "
"""What a user's records put in the search indexes, for ``(model, model, user)``: rid; the
text and the words of the periods it names; for an episode the text of the last live
episode before it in its session by the same agent; its vector and its context's vector
under ``model`` (NULL where none); its id; the two vectors' vids. Completed with a
condition on ``r``."""

INDEX_ROWS_OF = (
    _INDEX_COLUMNS + BY_RIDS + _VECTORS.replace(" LEFT", "LEFT", 1) + "WHERE r.user_id = ?"
)
"""INDEX_ROWS of the records whose rids a JSON list names, ``(rids, model, model, user)``."""

_OUTBOX = "INSERT INTO index_outbox(user_id, rid)"

_SEARCH_INDEX_SQL = f"""        DROP TRIGGER records_ai;
        DROP TRIGGER records_ad;
        DROP TRIGGER records_au;
        DROP TRIGGER records_au_deleted;
        DROP TABLE records_fts;
        CREATE TABLE index_outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            user_id TEXT NOT NULL,
            rid INTEGER NOT NULL
        );
        CREATE INDEX index_outbox_user ON index_outbox(user_id, seq);
        CREATE TABLE index_state (
            user_id TEXT PRIMARY KEY, applied_seq INTEGER NOT NULL
        ) WITHOUT ROWID;
        INSERT OR IGNORE INTO memlane_meta VALUES ('store_id', lower(hex(randomblob(16))));
        CREATE TRIGGER records_ai AFTER INSERT ON records BEGIN
            {_OUTBOX} VALUES (new.user_id, new.rid);
            {_OUTBOX} {_next_live_turn("new")};
        END;
        CREATE TRIGGER records_ad AFTER DELETE ON records BEGIN
            {_OUTBOX} VALUES (old.user_id, old.rid);
            {_OUTBOX} {_next_live_turn("old")};
        END;
        CREATE TRIGGER records_au AFTER UPDATE OF text, period_words, agent_id, session_id,
            kind, deleted_at, content_hash, context_hash ON records
        WHEN new.text IS NOT old.text OR new.period_words IS NOT old.period_words
            OR new.agent_id IS NOT old.agent_id OR new.session_id IS NOT old.session_id
            OR new.kind IS NOT old.kind OR new.deleted_at IS NOT old.deleted_at
            OR new.content_hash IS NOT old.content_hash
            OR new.context_hash IS NOT old.context_hash BEGIN
            {_OUTBOX} VALUES (new.user_id, new.rid);
            {_OUTBOX} {_next_live_turn("old")};
            {_OUTBOX} {_next_live_turn("new")};
        END;
        CREATE TRIGGER embeddings_ai AFTER INSERT ON embeddings BEGIN
            {_OUTBOX} SELECT user_id, rid FROM records WHERE content_hash = new.content_hash;
            {_OUTBOX} SELECT user_id, rid FROM records WHERE context_hash = new.content_hash;
        END;
        {_OUTBOX} SELECT DISTINCT user_id, -2 FROM records;
"""
"""Search indexes beside the database (:mod:`memlane.stores.sidecar`): FTS5 goes; each
change to what a record's index entries hold (its text and period words, the turn before
it, its vectors) appends ``(user, rid)`` to ``index_outbox`` in the same transaction, and
the sidecar applies the outbox after the commit. Every existing user's index is built
afresh (rid ``-2``)."""

_TRUST_SQL = f"""
        ALTER TABLE records ADD COLUMN trust TEXT NOT NULL DEFAULT 'user';
        ALTER TABLE records ADD COLUMN quarantine TEXT NOT NULL DEFAULT '[]';
        {TRUST_OF_OLD_ROWS}
        CREATE INDEX records_quarantined ON records(user_id, id) WHERE quarantine <> '[]';
"""
"""Whose word each memory is (:class:`~memlane.models.Trust`) and, while it is held back,
the kinds of instruction-like content found in it. Rows written before are never
quarantined (they were not screened: ``memlane reindex`` does not screen either; an
export and import does) and get the trust their writer implies (:data:`TRUST_OF_OLD_ROWS`)."""
_AUDIT_SQL = f"""
        CREATE TABLE audit (
            user_id TEXT NOT NULL, id TEXT NOT NULL, at TEXT NOT NULL,
            actor TEXT NOT NULL, action TEXT NOT NULL,
            record_ids TEXT NOT NULL DEFAULT '[]', session_ids TEXT NOT NULL DEFAULT '[]',
            counts TEXT NOT NULL DEFAULT '{{}}',
            PRIMARY KEY (user_id, id)
        );
        CREATE TABLE audit_erasures (user_id TEXT PRIMARY KEY) WITHOUT ROWID;
        CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN
            SELECT RAISE(ABORT, '{APPEND_ONLY}');
        END;
        CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        WHEN NOT EXISTS (SELECT 1 FROM audit_erasures e WHERE e.user_id = old.user_id) BEGIN
            SELECT RAISE(ABORT, '{APPEND_ONLY}');
        END;
"""
"""Who read or changed which user's data (:class:`~memlane.models.AuditEvent`), never
content. Entries are appended only: the triggers refuse any change, and any removal but
of a user ``audit_erasures`` names, which forgetting that user does inside its own
transaction (:func:`memlane.stores.sql.statements.erase_audit`)."""

_VECTORS_APART_SQL = f"""
        CREATE TABLE vectors (vid INTEGER PRIMARY KEY AUTOINCREMENT, vector BLOB NOT NULL);
        CREATE TABLE embeddings_keyed (
            model TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            dim INTEGER NOT NULL,
            vid INTEGER NOT NULL,
            PRIMARY KEY (model, content_hash)
        ) WITHOUT ROWID;
        INSERT INTO embeddings_keyed
            SELECT model, content_hash, dim, row_number() OVER (ORDER BY model, content_hash)
            FROM embeddings;
        INSERT INTO vectors
            SELECT k.vid, e.vector FROM embeddings_keyed k
            JOIN embeddings e ON e.model = k.model AND e.content_hash = k.content_hash
            ORDER BY k.vid;
        DROP TABLE embeddings;
        ALTER TABLE embeddings_keyed RENAME TO embeddings;
        CREATE TRIGGER embeddings_ai AFTER INSERT ON embeddings BEGIN
            {_OUTBOX} SELECT user_id, rid FROM records WHERE content_hash = new.content_hash;
            {_OUTBOX} SELECT user_id, rid FROM records WHERE context_hash = new.content_hash;
        END;
        CREATE TRIGGER embeddings_ad AFTER DELETE ON embeddings BEGIN
            DELETE FROM vectors WHERE vid = old.vid;
        END;
        CREATE TRIGGER embeddings_vid BEFORE INSERT ON embeddings
        WHEN typeof(new.vid) <> 'integer' BEGIN
            SELECT RAISE(ABORT, 'memlane keeps vectors apart since schema 15: upgrade');
        END;
"""
"""The vectors leave ``embeddings``, which keeps each one's key and the ``vid`` of its
row in ``vectors``. Keyed by content hash, the vectors arrived in random key order, and a
table ordered by key filled its pages to ~70 % (1,211 B a 768-byte float16 vector at
100,000 memories); in a table ordered by arrival, pages fill as rows are appended (five
vectors a 4 KiB page). A ``vid`` is never given twice (AUTOINCREMENT), so one names the
same vector for as long as the vector is kept. Deleting a key deletes its vector
(``embeddings_ad``; the store never replaces a key in place, which would not fire the
trigger); a process still running older code cannot write a vector into ``vid``
(``embeddings_vid``). The old table's pages go to the free list (VACUUM gives them
back)."""

_RIDS_ONCE_SQL = """
        INSERT OR REPLACE INTO memlane_meta VALUES ('records_rid', max(
            (SELECT coalesce(max(rid), 0) FROM records),
            (SELECT coalesce(max(rid), 0) FROM index_outbox)
        ));
        CREATE TRIGGER records_rid_given AFTER INSERT ON records BEGIN
            UPDATE memlane_meta SET value = new.rid
            WHERE key = 'records_rid' AND CAST(value AS INTEGER) < new.rid;
        END;
        CREATE TRIGGER records_rid_taken BEFORE INSERT ON records
        WHEN new.rid <= (SELECT CAST(value AS INTEGER) FROM memlane_meta
                         WHERE key = 'records_rid') BEGIN
            SELECT RAISE(ABORT, 'memlane gives each rid once since schema 17: upgrade');
        END;
"""
"""SQLite gives a new row the largest rowid plus one, so deleting the record with the
largest rid freed that rid for the next write. The search indexes beside the file name
records by rid, and a search that reads them while another process deletes a record and
writes a new one would find the new record by the deleted one's words (or score it by
its vector). ``memlane_meta.records_rid`` now holds the largest rid ever given, and a new
record takes the next one (:data:`NEXT_RID`): a rid names one record for good (a process
still running older code, whose insert lets SQLite choose, is refused). It starts
at the largest rid the records or the outbox name (a record deleted before the upgrade
whose rid the indexes may still hold is queued there until they drop it)."""

_SPARSE_BY_VID_SQL = """
        CREATE TABLE sparse_models (no INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
        INSERT INTO sparse_models(name) SELECT DISTINCT model FROM sparse_terms ORDER BY model;
        CREATE TABLE sparse_by_vid (
            vid INTEGER NOT NULL,
            model INTEGER NOT NULL,
            terms BLOB NOT NULL,
            PRIMARY KEY (vid, model)
        ) WITHOUT ROWID;
        INSERT INTO sparse_by_vid
            SELECT e.vid, m.no, s.terms FROM embeddings e
            CROSS JOIN sparse_models m
            JOIN sparse_terms s ON s.model = m.name AND s.content_hash = e.content_hash
            ORDER BY e.vid, m.no;
        DROP TABLE sparse_terms;
        ALTER TABLE sparse_by_vid RENAME TO sparse_terms;
        DROP TRIGGER embeddings_ad;
        CREATE TRIGGER embeddings_ad AFTER DELETE ON embeddings BEGIN
            DELETE FROM vectors WHERE vid = old.vid;
            DELETE FROM sparse_terms WHERE vid = old.vid;
        END;
        CREATE TRIGGER sparse_terms_vid BEFORE INSERT ON sparse_terms
        WHEN typeof(new.vid) <> 'integer' BEGIN
            SELECT RAISE(ABORT, 'memlane keeps sparse terms by vector since schema 18: upgrade');
        END;
"""
"""A text's sparse terms move beside its vector: keyed by the ``vid`` of the vector's
row and their model, a small number (``sparse_models``). Keyed by model name and hex
content hash, each row carried ~90 bytes of key and, arriving in hash order, filled its
pages to ~80 %: 433 B a memory for 256 B of terms. Keyed by vid, rows are appended in
the order the vectors were. Deleting a vector's key deletes its terms
(``embeddings_ad``). Terms of a text with no vector are dropped: the writes that give
terms write the text's vector with them or have written it before
(:class:`ops.PutEmbeddings`). A
process still running older code, which writes ``(model, hash, terms)``, is refused
(``sparse_terms_vid``: a text is no vid)."""


def _with_text(text: str) -> str:
    """A snapshot of format 2 (``[2,{...}]``: format 1 without the text) with ``text``
    (an SQL expression) put back, as format 1: plain string surgery, so nothing else of
    the JSON is written anew."""
    return f"""'[1,{{"text":' || json_quote({text}) || ',' || substr(snapshot, 5)"""


HISTORY_TEXT_SQL = f"""
        CREATE TRIGGER history_text_au AFTER UPDATE OF text ON records
        WHEN new.text IS NOT old.text BEGIN
            UPDATE history SET snapshot = {_with_text("old.text")}
            WHERE user_id = old.user_id AND record_id = old.id
            AND substr(snapshot, 1, 4) = '[2,{{';
        END;
        CREATE TRIGGER history_text_ad AFTER DELETE ON records BEGIN
            UPDATE history SET snapshot = {_with_text("old.text")}
            WHERE user_id = old.user_id AND record_id = old.id
            AND substr(snapshot, 1, 4) = '[2,{{';
        END;
"""
"""A history event whose snapshot's text is the record's text as it is now keeps no copy
of it (format 2, :data:`HISTORY_SNAPSHOT`): the record's own row holds it. When the
record's text changes, or the record is deleted without its history being scrubbed
first, each such event gets the text written in before the row changes (the triggers
run inside the statement that changes it). An add keeps its event's ~100 characters of
text once instead of twice."""

_HISTORY_KEYED_SQL = (
    """        DROP TRIGGER history_text_au;
        DROP TRIGGER history_text_ad;
        CREATE TABLE history_keyed (
            id TEXT NOT NULL,"""
    + _HISTORY_FIELDS
    + """,
            PRIMARY KEY (user_id, record_id, id)
        ) WITHOUT ROWID;
        INSERT INTO history_keyed SELECT * FROM history ORDER BY user_id, record_id, id;
        DROP TABLE history;
        ALTER TABLE history_keyed RENAME TO history;
        CREATE UNIQUE INDEX history_id ON history(user_id, id);
"""
    + HISTORY_TEXT_SQL
)
"""``history`` becomes the b-tree of its key, (user, event id), with no rowid: the
index SQLite kept of that key beside the rows (~47 B an event) goes. Event ids grow with
time, so a scope's events are appended in key order. The text triggers are made again
around the copy (the rename reads every trigger, and theirs named the table dropped)."""


_SESSION_INDEX_SQL = """
        DROP INDEX records_user_session;
        CREATE INDEX records_user_session ON records(user_id, session_id, id)
            WHERE session_id IS NOT NULL;
"""
"""The session index holds only records in a session: every statement that reads it
asks for one session (``session_id = ...``, which SQLite knows excludes NULL), and a
memory outside any session (a fact, a preference) took ~48 B in it for nothing."""


_LET_GO_SQL = """
        CREATE TABLE let_go (content_hash TEXT PRIMARY KEY) WITHOUT ROWID;
        CREATE TRIGGER records_let_go_ad AFTER DELETE ON records BEGIN
            INSERT OR IGNORE INTO let_go VALUES (old.content_hash);
            INSERT OR IGNORE INTO let_go SELECT old.context_hash
                WHERE old.context_hash IS NOT NULL;
        END;
        CREATE TRIGGER records_let_go_au AFTER UPDATE OF content_hash, context_hash ON records
        WHEN old.content_hash IS NOT new.content_hash
            OR old.context_hash IS NOT new.context_hash BEGIN
            INSERT OR IGNORE INTO let_go SELECT old.content_hash
                WHERE old.content_hash IS NOT new.content_hash;
            INSERT OR IGNORE INTO let_go SELECT old.context_hash
                WHERE old.context_hash IS NOT NULL AND old.context_hash IS NOT new.context_hash;
            DELETE FROM let_go WHERE content_hash IN (new.content_hash, new.context_hash);
        END;
        CREATE TRIGGER records_held_ai AFTER INSERT ON records BEGIN
            DELETE FROM let_go WHERE content_hash IN (new.content_hash, new.context_hash);
        END;
        CREATE TRIGGER embeddings_let_go_ai AFTER INSERT ON embeddings
        WHEN NOT EXISTS (SELECT 1 FROM records WHERE content_hash = new.content_hash)
            AND NOT EXISTS (SELECT 1 FROM records WHERE context_hash = new.content_hash) BEGIN
            INSERT OR IGNORE INTO let_go VALUES (new.content_hash);
        END;
        INSERT OR IGNORE INTO let_go SELECT content_hash FROM embeddings
            WHERE content_hash NOT IN (SELECT content_hash FROM records);
"""
"""``let_go`` names each text whose vector no record may hold, written by triggers: a
text a record let go of (deleted, or its text or context rewritten), and a text whose
vector was written while no record held it, until a record takes it (so a vector no
record takes stays listed: a
candidate the manager skipped, the new model's vector of a text purged during a reembed,
an imported row older than the stored one). A prune checks only those, where it read
every vector and every record (at a million memories, in the write transaction of every
TTL purge and deleted session: 798 ms, now 3.8 ms after 100 records deleted;
bench/scale.md). Seeded with every text no record holds as content: the vectors kept for
a context only are checked once more, and any vector a record does not hold goes at the
first prune."""

_MODELS_CTE = (
    "WITH RECURSIVE models(model) AS (SELECT (SELECT min(model) FROM embeddings) "
    "UNION ALL SELECT (SELECT min(model) FROM embeddings WHERE model > models.model) "
    "FROM models WHERE models.model IS NOT NULL) "
)
"""The embedding models of the stored vectors, one seek each (``embeddings`` is keyed by
model first, and a store holds one or two)."""

PRUNE_LET_GO = (
    "DELETE FROM embeddings WHERE (model, content_hash) IN ("
    + _MODELS_CTE
    + "SELECT models.model, g.content_hash FROM let_go g CROSS JOIN models "
    "WHERE models.model IS NOT NULL "
    "AND NOT EXISTS (SELECT 1 FROM records r WHERE r.content_hash = g.content_hash) "
    "AND NOT EXISTS (SELECT 1 FROM records r WHERE r.context_hash = g.content_hash))",
    # CROSS JOIN keeps this order: the list, then each of its vectors by key (the
    # planner would otherwise scan every vector).
    "DELETE FROM sparse_terms WHERE vid IN ("
    + _MODELS_CTE
    + "SELECT e.vid FROM let_go g CROSS JOIN models CROSS JOIN embeddings e "
    "WHERE models.model IS NOT NULL "
    "AND e.model = models.model AND e.content_hash = g.content_hash "
    "AND NOT EXISTS (SELECT 1 FROM records r WHERE r.content_hash = g.content_hash))",
    "DELETE FROM let_go",
)
"""A prune of the texts records let go of: their vectors no record holds (a vector's
terms go with it, ``embeddings_ad``), then the terms of those only a context still
holds; the list is then empty."""

PRUNE_EVERYTHING = (
    "DELETE FROM embeddings WHERE content_hash NOT IN (SELECT content_hash FROM records) "
    "AND content_hash NOT IN "
    "(SELECT context_hash FROM records WHERE context_hash IS NOT NULL)",
    "DELETE FROM sparse_terms WHERE vid IN (SELECT vid FROM embeddings "
    "WHERE content_hash NOT IN (SELECT content_hash FROM records))",
    "DELETE FROM let_go",
)
"""A prune of every vector no record holds, and of the terms of every text no record
holds as content: a read of all of them."""


HISTORY_SNAPSHOT = (
    "CASE WHEN substr(snapshot, 1, 4) = '[2,{' THEN "
    + _with_text(
        "(SELECT r.text FROM records r WHERE r.user_id = history.user_id "
        "AND r.id = history.record_id)"
    )
    + " ELSE snapshot END"
)
"""A history row's snapshot as stored, or, for one that keeps no text (format 2), with
the record's text put back (format 1)."""

HISTORY_SELECT = (
    f"id, record_id, user_id, action, version, at, actor, reason, {HISTORY_SNAPSHOT} AS snapshot"
)
"""The select list of a whole history row, its snapshot's text put back."""


NEXT_RID = (
    "(SELECT max(coalesce((SELECT CAST(value AS INTEGER) FROM memlane_meta "
    "WHERE key = 'records_rid'), 0), coalesce((SELECT max(rid) FROM records), 0)) + 1)"
)
"""The rid of a new record: after every rid ever given (schema 17)."""

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "initial",
        """
        CREATE TABLE memlane_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE records (
            rid INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,"""
        + _RECORD_FIELDS
        + """
        );
        CREATE INDEX records_user ON records(user_id, id);
        CREATE INDEX records_user_session ON records(user_id, session_id);
        CREATE INDEX records_user_key ON records(user_id, key) WHERE key IS NOT NULL;
        CREATE INDEX records_expires ON records(expires_at) WHERE expires_at IS NOT NULL;
        CREATE INDEX records_hash ON records(content_hash);
        CREATE VIRTUAL TABLE records_fts USING fts5(
            text, content='records', content_rowid='rid',
            tokenize='porter unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER records_ai AFTER INSERT ON records BEGIN
            INSERT INTO records_fts(rowid, text) VALUES (new.rid, new.text);
        END;
        CREATE TRIGGER records_ad AFTER DELETE ON records BEGIN
            INSERT INTO records_fts(records_fts, rowid, text) VALUES ('delete', old.rid, old.text);
        END;
        CREATE TRIGGER records_au AFTER UPDATE OF text ON records BEGIN
            INSERT INTO records_fts(records_fts, rowid, text) VALUES ('delete', old.rid, old.text);
            INSERT INTO records_fts(rowid, text) VALUES (new.rid, new.text);
        END;
        CREATE TABLE history (
            id TEXT PRIMARY KEY,"""
        + _HISTORY_FIELDS
        + """
        );
        CREATE INDEX history_record ON history(user_id, record_id, id);
        CREATE TABLE embeddings (
            model TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            dim INTEGER NOT NULL,
            vector BLOB NOT NULL,
            PRIMARY KEY (model, content_hash)
        ) WITHOUT ROWID;
        CREATE TABLE sessions (
            user_id TEXT NOT NULL, session_id TEXT NOT NULL,
            agent_id TEXT, team TEXT,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
            metadata TEXT NOT NULL DEFAULT '{}',
            PRIMARY KEY (user_id, session_id)
        ) WITHOUT ROWID;
        CREATE TABLE messages (
            user_id TEXT NOT NULL, session_id TEXT NOT NULL, seq INTEGER NOT NULL,
            id TEXT NOT NULL, run_id TEXT NOT NULL,
            role TEXT NOT NULL, content TEXT NOT NULL,
            created_at TEXT NOT NULL, metadata TEXT NOT NULL DEFAULT '{}',
            PRIMARY KEY (user_id, session_id, seq)
        ) WITHOUT ROWID;
        CREATE UNIQUE INDEX messages_id ON messages(user_id, id);
        CREATE TABLE states (
            user_id TEXT NOT NULL, session_id TEXT NOT NULL, name TEXT NOT NULL,
            version INTEGER NOT NULL, data TEXT NOT NULL, updated_at TEXT NOT NULL,
            PRIMARY KEY (user_id, session_id, name, version)
        ) WITHOUT ROWID;
        """,
    ),
    (
        2,
        "context embeddings and session-ordered index",
        """
        ALTER TABLE records ADD COLUMN context_hash TEXT;
        CREATE INDEX records_context_hash ON records(context_hash)
            WHERE context_hash IS NOT NULL;
        DROP INDEX records_user_session;
        CREATE INDEX records_user_session ON records(user_id, session_id, id);
        """,
    ),
    (
        3,
        "one current value per keyed fact",
        """
        CREATE UNIQUE INDEX records_current_key ON records(user_id, key)
            WHERE key IS NOT NULL AND superseded_by IS NULL AND valid_to IS NULL
            AND deleted_at IS NULL;
        """,
    ),
    (
        4,
        "lexical context: the previous turn of an episode in a second FTS5 column",
        _LEXICAL_CONTEXT_SQL,
    ),
    (
        5,
        "background jobs",
        """
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY, user_id TEXT NOT NULL, status TEXT NOT NULL,
            run_after TEXT NOT NULL, lease_until TEXT, version INTEGER NOT NULL,
            body TEXT NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX jobs_open ON jobs(user_id, id) WHERE status IN ('pending', 'running');
        CREATE INDEX jobs_user ON jobs(user_id, id);
        """,
    ),
    (
        6,
        "lexical context skips deleted turns and follows deletions and rewrites",
        _LIVE_CONTEXT_SQL,
    ),
    (
        7,
        "ids unique per user; lexical context only from the same agent's turn",
        _SCOPED_IDS_SQL,
    ),
    (
        8,
        "vectors stored as float16",
        # Rewrites each row in place (a float32 row of 1.6 KB overflowed into a page of
        # its own); the pages freed go to the free list, reused by later writes (VACUUM
        # gives them back to the file system). The trigger keeps a process still running
        # older code from writing float32 rows into the converted table.
        f"""
        UPDATE embeddings SET vector = {FLOAT16_SQL}(vector) WHERE length(vector) = 4 * dim;
        CREATE TRIGGER embeddings_float16 BEFORE INSERT ON embeddings
        WHEN length(new.vector) <> 2 * new.dim BEGIN
            SELECT RAISE(ABORT, 'memlane stores vectors as float16 since schema 8: upgrade');
        END;
        """,
    ),
    (9, "periods named in a record's text, indexed with it", _PERIODS_SQL),
    (10, "search indexes beside the database, fed by an outbox", _SEARCH_INDEX_SQL),
    (11, "trust and quarantine of each memory", _TRUST_SQL),
    (12, "the audit trail, append-only", _AUDIT_SQL),
    (
        13,
        "the knowledge graph: entities, their keys, mentions, relations and their sources",
        GRAPH_SCHEMA.format(time="TEXT", rowid=" WITHOUT ROWID"),
    ),
    (
        14,
        "sparse terms of each text, beside its vector",
        """
        CREATE TABLE sparse_terms (
            model TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            terms BLOB NOT NULL,
            PRIMARY KEY (model, content_hash)
        ) WITHOUT ROWID;
        """,
    ),
    (15, "vectors in a table of their own, in the order they came", _VECTORS_APART_SQL),
    (
        16,
        "the nonce of each index folder, beside how far it reaches",
        # NULL in rows from before: those folders are judged by their position alone
        # until they next take changes in.
        "ALTER TABLE index_state ADD COLUMN nonce TEXT;",
    ),
    (17, "record rids never given twice", _RIDS_ONCE_SQL),
    (18, "sparse terms keyed by their vector's row", _SPARSE_BY_VID_SQL),
    (19, "history events name the record's text while it holds it", HISTORY_TEXT_SQL),
    (20, "history keyed by user, record and event id, without a rowid", _HISTORY_KEYED_SQL),
    (21, "the session index only of records in a session", _SESSION_INDEX_SQL),
    (22, "the texts records let go of, for the prune", _LET_GO_SQL),
)

RECORD_COLUMNS = RECORDS.columns


# ---------------------------------------------------------------------------- pure SQL


def _any_of(column: str, values: list[Any]) -> Clauses:
    return [f"{column} IN ({', '.join('?' * len(values))})"], values


def _any_topic(topics: list[str]) -> Clauses:
    marks = ", ".join("?" * len(topics))
    return [f"EXISTS (SELECT 1 FROM json_each(r.topics) WHERE value IN ({marks}))"], topics


def _metadata_equals(key: str, value: Any) -> Clauses:
    path = '$."' + key.replace('"', '""') + '"'
    if isinstance(value, bool):
        return ["json_type(r.metadata, ?) = ?"], [path, "true" if value else "false"]
    kind = "IN ('integer', 'real')" if isinstance(value, int | float) else "= 'text'"
    clauses = [f"json_type(r.metadata, ?) {kind}", "json_extract(r.metadata, ?) = ?"]
    return clauses, [path, path, value]


SAME_AS_CREATED = ("updated_at", "valid_from")
"""Times of a record written as ``''`` when they are its ``created_at`` (a new record's
are: ~26 bytes each); read back as ``created_at`` (``DIALECT.column_reads``)."""

DIALECT = Dialect(
    mark="?",
    time=to_iso,
    any_of=_any_of,
    any_topic=_any_topic,
    metadata_equals=_metadata_equals,
    record_columns=RECORD_COLUMNS,
    unquarantined="r.quarantine = '[]'",
    history_select=HISTORY_SELECT,
    column_reads=tuple(
        (c, f"CASE r.{c} WHEN '' THEN r.created_at ELSE r.{c} END") for c in SAME_AS_CREATED
    ),
    valid_from="COALESCE(NULLIF(r.valid_from, ''), r.created_at)",
)


_CREATED = RECORD_COLUMNS.index("created_at")
_SAME_AT = tuple(RECORD_COLUMNS.index(c) for c in SAME_AS_CREATED)


def record_row(r: MemoryRecord) -> tuple[Any, ...]:
    """The row of ``r``: :data:`SAME_AS_CREATED` times equal to its creation as ``''``."""
    values = ROWS.values(RECORDS, r)
    created = values[_CREATED]
    if any(values[i] == created for i in _SAME_AT):
        row = list(values)
        for i in _SAME_AT:
            if row[i] == created:
                row[i] = ""
        return tuple(row)
    return values


ROWS = RowCodec(write_time=to_iso, read_time=from_iso)


def parse_sqlite_url(url: str) -> tuple[str, dict[str, str]]:
    """The path and options of ``sqlite:///relative.db``, ``sqlite:////abs/path.db``,
    ``sqlite:///:memory:``; an option follows the path as ``?vectors=int8`` (the only
    one: :class:`~memlane.stores.sqlite.SqliteStore`'s ``vectors``), so a ``?`` of the
    path is written ``%3F`` (and a ``%`` before ``3F`` or ``25``, ``%25``:
    :func:`sqlite_url`). Raises UnsupportedError for another URL or option."""
    if not url.startswith("sqlite:///"):
        raise UnsupportedError(f"not a sqlite URL (want sqlite:///PATH): {url!r}")
    path, _, query = url[len("sqlite:///") :].partition("?")
    path = path.replace("%3F", "?").replace("%3f", "?").replace("%25", "%")
    if not path:
        raise UnsupportedError("sqlite URL has no path: use sqlite:///PATH or sqlite:///:memory:")
    options: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        name, eq, value = part.partition("=")
        if name not in URL_OPTIONS or not eq or name in options:
            raise UnsupportedError(
                f"sqlite URL option {part!r}: the options are "
                + ", ".join(f"{o}=..." for o in URL_OPTIONS)
                + " (each once)"
            )
        options[name] = value
    return path, options


def sqlite_url(path: str) -> str:
    """The ``sqlite:///`` URL of the file at ``path`` (no options), read back as
    ``path`` by :func:`parse_sqlite_url`."""
    return "sqlite:///" + path.replace("%", "%25").replace("?", "%3F")


URL_OPTIONS = ("vectors",)
"""The options a sqlite URL may give after its path."""


def chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)] or [()]


def split_sql(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    statements, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    if buf.strip():
        statements.append(buf.strip())
    return statements
