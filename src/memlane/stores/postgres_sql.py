"""PostgreSQL schema, migrations and the pure functions that build SQL and read rows.

Kept apart from :mod:`memlane.stores.postgres` so the store class only executes. Times
are ``timestamptz``, record metadata and topics ``jsonb`` (so filters run in SQL; the
metadata's exact JSON text is kept beside it, because jsonb renormalizes numbers), other
JSON documents text in memlane's canonical form, vectors pgvector ``vector``.

Lexical search uses one ``tsvector`` per record: the record's own words with weight A and
the words of the episode before it in its session with weight D, so ``ts_rank`` with the
weight array ``{context_weight, 0, 0, 1}`` scores the two fields the way
:class:`~memlane.ports.store.LexicalSearch` describes, and a query restricted to ``:A``
matches the memory's own words only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Generator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from memlane.errors import ConfigurationError
from memlane.models import MemoryRecord
from memlane.ports.store import Op
from memlane.stores.postgres_lexical import TS_CONFIG
from memlane.stores.sql.codecs import AUDIT, RECORDS, TRUST_OF_OLD_ROWS, RowCodec
from memlane.stores.sql.dialect import Clauses, Dialect
from memlane.stores.sql.graph import SCHEMA as GRAPH_SCHEMA
from memlane.stores.sql.statements import APPEND_ONLY
from memlane.urls import redact_url

MIGRATION_LOCK = 0x6D656D6C616E65  # "memlane": serializes concurrent setup() calls

_TURN_SEARCH = (
    f"setweight(to_tsvector('{TS_CONFIG}', n.text), 'A') || "
    f"setweight(to_tsvector('{TS_CONFIG}', COALESCE((SELECT p.text FROM records p "
    "WHERE p.user_id = n.user_id AND p.session_id = n.session_id AND p.kind = 'episode' "
    "AND p.deleted_at IS NULL AND p.id < n.id ORDER BY p.id DESC LIMIT 1), '')), 'D')"
)
"""The search vector of episode ``n``: its words (A) and its previous live turn's (D)."""

_NEXT_TURN = (
    "(SELECT x.id FROM records x WHERE x.user_id = {r}.user_id "
    "AND x.session_id = {r}.session_id AND x.kind = 'episode' AND x.deleted_at IS NULL "
    "AND x.id > {r}.id ORDER BY x.id LIMIT 1)"
)

_LIVE_CONTEXT_SQL = f"""
CREATE FUNCTION memlane_turns_after_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE records n SET search = {_TURN_SEARCH}
    WHERE n.id IN (SELECT {_NEXT_TURN.format(r="g")} FROM gone g
                   WHERE g.kind = 'episode' AND g.session_id IS NOT NULL);
    RETURN NULL;
END $$;
CREATE TRIGGER records_turns_after_delete AFTER DELETE ON records
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
    EXECUTE FUNCTION memlane_turns_after_delete();
CREATE FUNCTION memlane_turns_after_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE records n SET search = {_TURN_SEARCH}
    WHERE n.id = {_NEXT_TURN.format(r="NEW")}
       OR (n.id = NEW.id AND NEW.deleted_at IS DISTINCT FROM OLD.deleted_at);
    RETURN NULL;
END $$;
CREATE TRIGGER records_turns_after_update AFTER UPDATE OF text, deleted_at ON records
    FOR EACH ROW WHEN (NEW.kind = 'episode' AND NEW.session_id IS NOT NULL
        AND (NEW.text IS DISTINCT FROM OLD.text OR NEW.deleted_at IS DISTINCT FROM OLD.deleted_at))
    EXECUTE FUNCTION memlane_turns_after_update();
UPDATE records n SET search = {_TURN_SEARCH}
    WHERE n.kind = 'episode' AND n.session_id IS NOT NULL;
"""
"""A turn's lexical context is its previous *live* turn, kept so when a turn is deleted,
purged or rewritten (the turn after it is re-indexed, and a restored turn itself)."""

_OWN_TURN_SEARCH = (
    f"setweight(to_tsvector('{TS_CONFIG}', n.text), 'A') || "
    f"setweight(to_tsvector('{TS_CONFIG}', COALESCE(CASE WHEN n.kind = 'episode' THEN "
    "(SELECT p.text FROM records p WHERE p.user_id = n.user_id "
    "AND p.session_id = n.session_id AND p.kind = 'episode' "
    "AND p.agent_id IS NOT DISTINCT FROM n.agent_id "
    "AND p.deleted_at IS NULL AND p.id < n.id ORDER BY p.id DESC LIMIT 1) END, '')), 'D')"
)
"""The search vector of record ``n``: its words (A) and, for an episode, those of the
previous live turn of its session by the same agent (D). Reads are limited by agent, so
another agent's turn must never be this one's context."""

_PERIODS_SEARCH = _OWN_TURN_SEARCH.replace(
    "to_tsvector('english', n.text)", "to_tsvector('english', n.text || ' ' || n.period_words)", 1
)
""":data:`_OWN_TURN_SEARCH` with the words of the periods the record's text names beside
its own (weight A), since schema 5."""

_NEXT_OWN_TURN = (
    "(SELECT x.id FROM records x WHERE x.user_id = {r}.user_id "
    "AND x.session_id = {r}.session_id AND x.kind = 'episode' "
    "AND x.agent_id IS NOT DISTINCT FROM {r}.agent_id AND x.deleted_at IS NULL "
    "AND x.id > {r}.id ORDER BY x.id LIMIT 1)"
)

REINDEX_ONE = f"UPDATE records n SET search = {_PERIODS_SEARCH} WHERE n.user_id = %s AND n.id = %s"
"""Rebuilds one record's search vector from its stored text and period words."""

DROP_CONTEXTS_AFTER = (
    "UPDATE records SET context_hash = NULL WHERE user_id = %s AND session_id = %s "
    "AND agent_id IS NOT DISTINCT FROM %s AND kind = 'episode' "
    "AND (id > %s OR created_at >= %s) AND context_hash IS NOT NULL"
)
"""Drops the context vectors of the turns after a removed turn (as on SQLite:
``memlane.stores.sqlite_sql.DROP_CONTEXTS_AFTER``)."""

REINDEX_DELETED_AFTER = (
    f"UPDATE records n SET search = {_PERIODS_SEARCH} "
    "WHERE n.user_id = %s AND n.session_id = %s AND n.agent_id IS NOT DISTINCT FROM %s "
    "AND n.kind = 'episode' AND n.id > %s AND n.deleted_at IS NOT NULL "
    "AND NOT EXISTS (SELECT 1 FROM records x WHERE x.user_id = n.user_id "
    "AND x.session_id = n.session_id AND x.agent_id IS NOT DISTINCT FROM n.agent_id "
    "AND x.kind = 'episode' AND x.deleted_at IS NULL AND x.id > %s AND x.id < n.id)"
)
"""Re-indexes the deleted turns after a removed turn ``(user, session, agent, id, id)``
up to the next live turn of its agent: their search vector can hold the removed turn's
words (a deleted turn keeps the previous live one), which the delete trigger leaves, as
it re-indexes only the next live turn."""


def _turn_functions(search: str) -> str:
    """The trigger functions re-indexing the turns after a removed, rewritten or moved
    one with the search vector ``search`` (migrations 4 and 5)."""
    head = "CREATE OR REPLACE FUNCTION memlane_turns_after_{}() RETURNS trigger LANGUAGE plpgsql"
    return f"""{head.format("delete")} AS $$
BEGIN
    UPDATE records n SET search = {search}
    WHERE (n.user_id, n.id) IN (SELECT g.user_id, {_NEXT_OWN_TURN.format(r="g")} FROM gone g
                                WHERE g.kind = 'episode' AND g.session_id IS NOT NULL);
    RETURN NULL;
END $$;
{head.format("update")} AS $$
BEGIN
    UPDATE records n SET search = {search}
    WHERE n.user_id = NEW.user_id AND (n.id = {_NEXT_OWN_TURN.format(r="NEW")}
       OR n.id = {_NEXT_OWN_TURN.format(r="OLD")}
       OR (n.id = NEW.id AND NEW.deleted_at IS DISTINCT FROM OLD.deleted_at));
    RETURN NULL;
END $$;
"""


_SCOPED_IDS_SQL = f"""
ALTER TABLE records DROP CONSTRAINT records_pkey;
ALTER TABLE records ADD PRIMARY KEY (user_id, id);
DROP INDEX records_user;
ALTER TABLE history DROP CONSTRAINT history_pkey;
ALTER TABLE history ADD PRIMARY KEY (user_id, id);
DROP INDEX history_user;
ALTER TABLE jobs DROP CONSTRAINT jobs_pkey;
ALTER TABLE jobs ADD PRIMARY KEY (user_id, id);
DROP INDEX jobs_user;
CREATE INDEX jobs_id ON jobs (id);
{_turn_functions(_OWN_TURN_SEARCH)}DROP TRIGGER records_turns_after_update ON records;
CREATE TRIGGER records_turns_after_update
    AFTER UPDATE OF text, deleted_at, agent_id, session_id, kind ON records
    FOR EACH ROW WHEN ((NEW.kind = 'episode' OR OLD.kind = 'episode')
        AND (NEW.session_id IS NOT NULL OR OLD.session_id IS NOT NULL)
        AND (NEW.text IS DISTINCT FROM OLD.text
             OR NEW.deleted_at IS DISTINCT FROM OLD.deleted_at
             OR NEW.agent_id IS DISTINCT FROM OLD.agent_id
             OR NEW.session_id IS DISTINCT FROM OLD.session_id
             OR NEW.kind IS DISTINCT FROM OLD.kind))
    EXECUTE FUNCTION memlane_turns_after_update();
UPDATE records n SET search = {_OWN_TURN_SEARCH}
    WHERE n.kind = 'episode' AND n.session_id IS NOT NULL;
UPDATE records n SET context_hash = NULL
    WHERE n.kind = 'episode' AND n.context_hash IS NOT NULL AND EXISTS (
        SELECT 1 FROM records p WHERE p.user_id = n.user_id AND p.session_id = n.session_id
        AND p.kind = 'episode' AND p.id < n.id AND p.agent_id IS DISTINCT FROM n.agent_id);
"""
"""Ids are unique per user scope (records, history events, jobs): an import keeps ids, so
a global id let one scope block another's idempotent add or learn that an id exists
elsewhere. A turn's lexical context becomes the previous live turn by the same agent; a
context vector that may hold another agent's words is dropped (search falls back to the
turn's own vector; the embedder is not at hand in a migration)."""

_PERIODS_SQL = f"""
ALTER TABLE records ADD COLUMN periods jsonb NOT NULL DEFAULT '[]'::jsonb;
ALTER TABLE records ADD COLUMN period_words text NOT NULL DEFAULT '';
{_turn_functions(_PERIODS_SEARCH)}"""
"""The periods a record's text names (:attr:`MemoryRecord.periods`) and their words,
indexed with the text: "yesterday", said on 8 May 2023, also matches "7 May 2023". Records
written before keep no periods until their text changes."""

_SEARCH_AT_SCALE_SQL = """
ALTER INDEX records_search SET (fastupdate = off);
SELECT gin_clean_pending_list('records_search'::regclass);
ALTER TABLE records SET (fillfactor = 90);
"""
"""Searching a million memories (bench/scale_pg.md). With ``fastupdate`` a GIN index
queues new entries in a pending list that every lexical search reads in full until
(auto)vacuum merges it: up to 4 MB, 303 pages a query at 1M after a few hundred searches
(each search's access-count update of a full page writes new index entries). Without it
a write updates the index at once. Room left on new pages keeps those access-count
updates on their page (HOT: no new index entries at all)."""

_TRUST_SQL = f"""
ALTER TABLE records ADD COLUMN trust text NOT NULL DEFAULT 'user';
ALTER TABLE records ADD COLUMN quarantine jsonb NOT NULL DEFAULT '[]'::jsonb;
{TRUST_OF_OLD_ROWS}
CREATE INDEX records_quarantined ON records (user_id, id) WHERE quarantine <> '[]'::jsonb;
"""
"""Whose word each memory is and, while it is held back, the kinds of instruction-like
content found in it; rows written before are never quarantined and get the trust their
writer implies (:data:`~memlane.stores.sql.codecs.TRUST_OF_OLD_ROWS`)."""
_AUDIT_SQL = f"""
CREATE TABLE audit (
    user_id text NOT NULL, id text NOT NULL, at timestamptz NOT NULL,
    actor text NOT NULL, action text NOT NULL,
    record_ids jsonb NOT NULL DEFAULT '[]', session_ids jsonb NOT NULL DEFAULT '[]',
    counts jsonb NOT NULL DEFAULT '{{}}',
    PRIMARY KEY (user_id, id)
);
CREATE TABLE audit_erasures (user_id text PRIMARY KEY);
CREATE FUNCTION memlane_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND EXISTS (
        SELECT 1 FROM audit_erasures e WHERE e.user_id = OLD.user_id
    ) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '{APPEND_ONLY}';
END $$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION memlane_audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION memlane_audit_append_only();
"""
"""Who read or changed which user's data (:class:`~memlane.models.AuditEvent`), never
content. Entries are appended only: the trigger refuses any change, any truncation, and
any removal but of a user ``audit_erasures`` names, which forgetting that user does
inside its own transaction (:func:`memlane.stores.sql.statements.erase_audit`)."""

_LET_GO_SQL = """
CREATE TABLE let_go (content_hash text PRIMARY KEY);
CREATE FUNCTION memlane_let_go_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO let_go
        SELECT h FROM (SELECT content_hash AS h FROM gone
                       UNION SELECT context_hash FROM gone WHERE context_hash IS NOT NULL) x
        ORDER BY h
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER records_let_go_deleted AFTER DELETE ON records
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
    EXECUTE FUNCTION memlane_let_go_deleted();
CREATE FUNCTION memlane_let_go_rewritten() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.content_hash IS DISTINCT FROM NEW.content_hash THEN
        INSERT INTO let_go VALUES (OLD.content_hash) ON CONFLICT DO NOTHING;
    END IF;
    IF OLD.context_hash IS NOT NULL AND OLD.context_hash IS DISTINCT FROM NEW.context_hash THEN
        INSERT INTO let_go VALUES (OLD.context_hash) ON CONFLICT DO NOTHING;
    END IF;
    DELETE FROM let_go WHERE content_hash IN (NEW.content_hash, NEW.context_hash);
    RETURN NULL;
END $$;
CREATE TRIGGER records_let_go_rewritten AFTER UPDATE OF content_hash, context_hash ON records
    FOR EACH ROW WHEN (OLD.content_hash IS DISTINCT FROM NEW.content_hash
        OR OLD.context_hash IS DISTINCT FROM NEW.context_hash)
    EXECUTE FUNCTION memlane_let_go_rewritten();
CREATE FUNCTION memlane_let_go_held() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM let_go WHERE content_hash IN (
        SELECT content_hash FROM added
        UNION SELECT context_hash FROM added WHERE context_hash IS NOT NULL);
    RETURN NULL;
END $$;
CREATE TRIGGER records_let_go_held AFTER INSERT ON records
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT
    EXECUTE FUNCTION memlane_let_go_held();
CREATE FUNCTION memlane_let_go_written() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO let_go SELECT DISTINCT w.content_hash FROM written w
        WHERE NOT EXISTS (SELECT 1 FROM records r WHERE r.content_hash = w.content_hash)
        AND NOT EXISTS (SELECT 1 FROM records r WHERE r.context_hash = w.content_hash)
        ORDER BY 1
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER embeddings_let_go_written AFTER INSERT ON embeddings
    REFERENCING NEW TABLE AS written FOR EACH STATEMENT
    EXECUTE FUNCTION memlane_let_go_written();
CREATE TRIGGER sparse_terms_let_go_written AFTER INSERT ON sparse_terms
    REFERENCING NEW TABLE AS written FOR EACH STATEMENT
    EXECUTE FUNCTION memlane_let_go_written();
INSERT INTO let_go
    SELECT content_hash FROM embeddings e
    WHERE NOT EXISTS (SELECT 1 FROM records r WHERE r.content_hash = e.content_hash)
    UNION
    SELECT content_hash FROM sparse_terms s
    WHERE NOT EXISTS (SELECT 1 FROM records r WHERE r.content_hash = s.content_hash)
ON CONFLICT DO NOTHING;
"""
"""``let_go`` names each text whose vector or terms no record may hold, written by
triggers: a text a record let go of (deleted, or its text or context rewritten), and a
text whose vector or terms were written while no record held it, until a record takes it
(so a vector no record takes stays listed: a candidate the manager skipped, the new
model's vector of a text purged during a reembed). A prune checks only those, where it
read every vector and every record (1,334 ms at a million memories, now 13.9 ms after 100
deletes; bench/scale.md). Seeded with every text no record holds as content (the vectors
kept for a context only are checked once more)."""


def _models(table: str) -> str:
    """A CTE ``models(model)`` of the models of ``table`` (keyed by model first), one
    index seek each."""
    return (
        "WITH RECURSIVE models(model) AS ("
        f"(SELECT model FROM {table} ORDER BY model LIMIT 1) UNION ALL "
        f"SELECT (SELECT t.model FROM {table} t WHERE t.model > m.model ORDER BY t.model "
        "LIMIT 1) FROM models m WHERE m.model IS NOT NULL) "
    )


TAKE_LET_GO = "DELETE FROM let_go RETURNING content_hash"
"""The list, taken in one statement (one snapshot): a text listed by a transaction that
commits later stays for the next prune."""

PRUNE_TAKEN = (
    _models("embeddings") + "SELECT 1 FROM embeddings e, models m "
    "WHERE e.model = m.model AND e.content_hash = ANY(%(taken)s) "
    "ORDER BY e.model, e.content_hash FOR UPDATE OF e",
    _models("sparse_terms") + "SELECT 1 FROM sparse_terms s, models m "
    "WHERE s.model = m.model AND s.content_hash = ANY(%(taken)s) "
    "ORDER BY s.model, s.content_hash FOR UPDATE OF s",
    _models("embeddings") + "DELETE FROM embeddings e USING models m "
    "WHERE e.model = m.model AND e.content_hash = ANY(%(taken)s) "
    "AND NOT EXISTS (SELECT 1 FROM records r WHERE r.content_hash = e.content_hash) "
    "AND NOT EXISTS (SELECT 1 FROM records r WHERE r.context_hash = e.content_hash)",
    _models("sparse_terms") + "DELETE FROM sparse_terms s USING models m "
    "WHERE s.model = m.model AND s.content_hash = ANY(%(taken)s) "
    "AND NOT EXISTS (SELECT 1 FROM records r WHERE r.content_hash = s.content_hash)",
)
"""A prune of the texts taken from the list: their vectors and terms locked first, so
that a writer holding one (a writer locks what it keeps: :data:`HOLD_VECTORS`) commits
before they are checked, then, each statement reading afresh, the vectors no record holds
and the terms of texts no record holds as content deleted. Returns through the third
statement the count of vectors."""

HOLD_VECTORS = (
    "SELECT 1 FROM embeddings WHERE model = %s AND content_hash = ANY(%s) "
    "ORDER BY content_hash FOR SHARE",
    "SELECT 1 FROM sparse_terms WHERE model = %s AND content_hash = ANY(%s) "
    "ORDER BY content_hash FOR SHARE",
)
"""A writer's lock on the stored vectors (and terms) it keeps for its records, taken
before it writes them again where a prune removed them: a prune waits for the writer's
commit and then sees its records, or the writer waits for the prune's and writes the
vector anew."""

PRUNE_EVERYTHING = (
    "DELETE FROM embeddings e WHERE NOT EXISTS "
    "(SELECT 1 FROM records r WHERE r.content_hash = e.content_hash) "
    "AND NOT EXISTS (SELECT 1 FROM records r WHERE r.context_hash = e.content_hash)",
    "DELETE FROM sparse_terms s WHERE NOT EXISTS "
    "(SELECT 1 FROM records r WHERE r.content_hash = s.content_hash)",
)
"""A prune of every vector no record holds, and of the terms of every text no record
holds as content: a read of all of them (after the list is taken)."""

_LEXICAL_COPIES_SQL = """
CREATE TABLE lexical_copies (
    copy text PRIMARY KEY,
    user_id text NOT NULL,
    horizon xid8 NOT NULL,
    seen_at timestamptz NOT NULL,
    built boolean NOT NULL DEFAULT false
);
CREATE INDEX lexical_copies_user ON lexical_copies (user_id);
CREATE TABLE lexical_changes (
    user_id text NOT NULL,
    id text NOT NULL,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX lexical_changes_user ON lexical_changes (user_id, xid);
CREATE FUNCTION memlane_lexical_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO lexical_changes (user_id, id) SELECT g.user_id, g.id FROM gone g
        WHERE EXISTS (SELECT 1 FROM lexical_copies c WHERE c.user_id = g.user_id);
    ELSE
        INSERT INTO lexical_changes (user_id, id) SELECT b.user_id, b.id FROM born b
        WHERE EXISTS (SELECT 1 FROM lexical_copies c WHERE c.user_id = b.user_id);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER records_lexical_born AFTER INSERT ON records
    REFERENCING NEW TABLE AS born FOR EACH STATEMENT EXECUTE FUNCTION memlane_lexical_rows();
CREATE TRIGGER records_lexical_gone AFTER DELETE ON records
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION memlane_lexical_rows();
CREATE FUNCTION memlane_lexical_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO lexical_changes (user_id, id)
    SELECT NEW.user_id, NEW.id
    WHERE EXISTS (SELECT 1 FROM lexical_copies c WHERE c.user_id = NEW.user_id);
    RETURN NULL;
END $$;
CREATE TRIGGER records_lexical_changed AFTER UPDATE OF text, period_words, search ON records
    FOR EACH ROW EXECUTE FUNCTION memlane_lexical_changed();
INSERT INTO memlane_meta VALUES ('store_id', gen_random_uuid()::text) ON CONFLICT DO NOTHING;
"""
"""Copies of the lexical index beside processes (:mod:`memlane.stores.postgres_copy`):
each registers itself in ``lexical_copies``; while a user has one, every change to what
a record's index entry holds (a new, deleted or re-worded record, or a turn whose
context changed: its ``search`` vector) adds ``(user, id)`` to ``lexical_changes``, in
the writing transaction, numbered by its transaction id. Users without a copy log
nothing. ``store_id`` tells a copy which database it was made from."""

COPY_DOCS = (
    "SELECT n.id, n.text || ' ' || n.period_words, CASE WHEN n.kind = 'episode' THEN "
    "(SELECT p.text FROM records p WHERE p.user_id = n.user_id "
    "AND p.session_id = n.session_id AND p.kind = 'episode' "
    "AND p.agent_id IS NOT DISTINCT FROM n.agent_id "
    "AND p.deleted_at IS NULL AND p.id < n.id ORDER BY p.id DESC LIMIT 1) END "
    "FROM records n WHERE n.user_id = %s"
)
"""What a copy of the lexical index holds of each of a user's records: id, own words
(with its periods' words: weight A of :data:`_PERIODS_SEARCH`), context (weight D)."""


MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "initial",
        """
        CREATE EXTENSION IF NOT EXISTS vector;
        CREATE TABLE memlane_meta (key text PRIMARY KEY, value text NOT NULL);
        CREATE TABLE records (
            id text PRIMARY KEY,
            user_id text NOT NULL,
            agent_id text, team text, session_id text,
            kind text NOT NULL, key text,
            text text NOT NULL,
            topics jsonb NOT NULL DEFAULT '[]',
            metadata jsonb NOT NULL DEFAULT '{}',
            importance double precision NOT NULL,
            created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL,
            event_at timestamptz, valid_from timestamptz, valid_to timestamptz,
            superseded_by text, expires_at timestamptz, deleted_at timestamptz,
            access_count integer NOT NULL DEFAULT 0, last_accessed_at timestamptz,
            source_ids jsonb NOT NULL DEFAULT '[]', actor text,
            content_hash text NOT NULL,
            version integer NOT NULL,
            context_hash text,
            search tsvector NOT NULL
        );
        CREATE INDEX records_user ON records (user_id, id);
        CREATE INDEX records_user_session ON records (user_id, session_id, id);
        CREATE INDEX records_user_key ON records (user_id, key) WHERE key IS NOT NULL;
        CREATE INDEX records_expires ON records (expires_at) WHERE expires_at IS NOT NULL;
        CREATE INDEX records_hash ON records (content_hash, user_id);
        CREATE INDEX records_context_hash ON records (context_hash)
            WHERE context_hash IS NOT NULL;
        CREATE INDEX records_vector_hash ON records
            ((COALESCE(context_hash, content_hash)), user_id);
        CREATE INDEX records_search ON records USING gin (search);
        CREATE UNIQUE INDEX records_current_key ON records (user_id, key)
            WHERE key IS NOT NULL AND superseded_by IS NULL AND valid_to IS NULL
            AND deleted_at IS NULL;
        CREATE TABLE history (
            id text PRIMARY KEY,
            record_id text NOT NULL,
            user_id text NOT NULL,
            action text NOT NULL,
            version integer NOT NULL,
            at timestamptz NOT NULL,
            actor text, reason text, snapshot text
        );
        CREATE INDEX history_record ON history (user_id, record_id, id);
        CREATE INDEX history_user ON history (user_id, id);
        CREATE TABLE embeddings (
            model text NOT NULL,
            content_hash text NOT NULL,
            dim integer NOT NULL,
            vector vector NOT NULL,
            PRIMARY KEY (model, content_hash)
        );
        CREATE TABLE sessions (
            user_id text NOT NULL, session_id text NOT NULL,
            agent_id text, team text,
            created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL,
            metadata text NOT NULL DEFAULT '{}',
            PRIMARY KEY (user_id, session_id)
        );
        CREATE TABLE messages (
            user_id text NOT NULL, session_id text NOT NULL, seq integer NOT NULL,
            id text NOT NULL, run_id text NOT NULL,
            role text NOT NULL, content text NOT NULL,
            created_at timestamptz NOT NULL, metadata text NOT NULL DEFAULT '{}',
            PRIMARY KEY (user_id, session_id, seq)
        );
        CREATE UNIQUE INDEX messages_id ON messages (user_id, id);
        CREATE TABLE states (
            user_id text NOT NULL, session_id text NOT NULL, name text NOT NULL,
            version integer NOT NULL, data text NOT NULL, updated_at timestamptz NOT NULL,
            PRIMARY KEY (user_id, session_id, name, version)
        );
        CREATE TABLE jobs (
            id text PRIMARY KEY, user_id text NOT NULL, status text NOT NULL,
            run_after timestamptz NOT NULL, lease_until timestamptz,
            version integer NOT NULL, body text NOT NULL
        );
        CREATE INDEX jobs_open ON jobs (user_id, id) WHERE status IN ('pending', 'running');
        CREATE INDEX jobs_user ON jobs (user_id, id);
        """,
    ),
    (
        2,
        "record metadata text",
        # jsonb renormalizes numbers (1e16 comes back as an int, -0.0 as 0.0); the exact
        # JSON is kept beside it (filters still use the jsonb) and is what reads return.
        # Rows written before this migration keep NULL and read from the jsonb column.
        "ALTER TABLE records ADD COLUMN metadata_text text;",
    ),
    (3, "lexical context follows deleted and rewritten turns", _LIVE_CONTEXT_SQL),
    (4, "ids unique per user; lexical context only from the same agent's turn", _SCOPED_IDS_SQL),
    (5, "periods named in a record's text, indexed with it", _PERIODS_SQL),
    (6, "lexical index without a pending list; room for in-place updates", _SEARCH_AT_SCALE_SQL),
    (7, "trust and quarantine of each memory", _TRUST_SQL),
    (8, "the audit trail, append-only", _AUDIT_SQL),
    (
        9,
        "the knowledge graph: entities, their keys, mentions, relations and their sources",
        GRAPH_SCHEMA.format(time="TIMESTAMPTZ", rowid=""),
    ),
    (
        10,
        "sparse terms of each text, beside its vector",
        """
        CREATE TABLE sparse_terms (
            model text NOT NULL,
            content_hash text NOT NULL,
            terms bytea NOT NULL,
            PRIMARY KEY (model, content_hash)
        );
        """,
    ),
    (11, "the texts records let go of, for the prune", _LET_GO_SQL),
    (12, "changes for copies of the lexical index beside processes", _LEXICAL_COPIES_SQL),
)

RECORD_COLUMNS = (*RECORDS.columns, "metadata_text")
_JSONB_COLUMNS = frozenset({"topics", "metadata", "source_ids", "periods", "quarantine"})

PREVIOUS_TURN = (
    "(SELECT p.text FROM records p WHERE p.user_id = %(user_id)s "
    "AND p.session_id = %(session_id)s AND p.kind = 'episode' AND p.deleted_at IS NULL "
    "AND p.agent_id IS NOT DISTINCT FROM %(agent_id)s::text "
    "AND p.id < %(id)s ORDER BY p.id DESC LIMIT 1)"
)
SEARCH_VECTOR = (
    f"setweight(to_tsvector('{TS_CONFIG}', %(text)s || ' ' || %(period_words)s), 'A') || "
    f"setweight(to_tsvector('{TS_CONFIG}', COALESCE(CASE WHEN %(kind)s = 'episode' "
    f"AND %(session_id)s::text IS NOT NULL THEN {PREVIOUS_TURN} END, '')), 'D')"
)
INSERT_RECORD = (
    f"INSERT INTO records ({', '.join(RECORD_COLUMNS)}, search) VALUES ("
    + ", ".join(f"%({c})s::jsonb" if c in _JSONB_COLUMNS else f"%({c})s" for c in RECORD_COLUMNS)
    + f", {SEARCH_VECTOR})"
)
UPDATE_RECORD = (
    "UPDATE records SET "
    + ", ".join(
        f"{c} = %({c})s::jsonb" if c in _JSONB_COLUMNS else f"{c} = %({c})s"
        for c in RECORD_COLUMNS[1:]
    )
    + ", search = CASE WHEN text = %(text)s AND period_words = %(period_words)s "
    "AND agent_id IS NOT DISTINCT FROM %(agent_id)s::text "
    "AND session_id IS NOT DISTINCT FROM %(session_id)s::text AND kind = %(kind)s "
    f"THEN search ELSE {SEARCH_VECTOR} END "
    "WHERE user_id = %(user_id)s AND id = %(id)s"
)

APPEND_AUDIT = (
    f"INSERT INTO audit ({', '.join(AUDIT.columns)}) VALUES (%s, %s, %s, %s, %s, "
    "%s::jsonb, %s::jsonb, %s::jsonb) ON CONFLICT DO NOTHING"
)

_NEIGHBOR_SIDE = (
    "(SELECT x.id FROM records x WHERE x.user_id = h.user_id "
    "AND x.session_id = h.session_id AND x.agent_id IS NOT DISTINCT FROM h.agent_id "
    "AND x.kind = 'episode' AND x.id {cmp} h.id AND x.deleted_at IS NULL "
    "AND x.superseded_by IS NULL AND x.valid_to IS NULL "
    "AND (x.expires_at IS NULL OR x.expires_at > %(now)s) "
    "ORDER BY x.id {order} LIMIT %(window)s)"
)
NEIGHBORS = (
    "SELECT h.id, n.id FROM records h CROSS JOIN LATERAL ("
    f"{_NEIGHBOR_SIDE.format(cmp='<', order='DESC')} UNION ALL "
    f"{_NEIGHBOR_SIDE.format(cmp='>', order='ASC')}) n "
    "WHERE h.user_id = %(user_id)s AND h.id = ANY(%(ids)s) AND h.kind = 'episode'"
)
"""``(hit, neighbour)`` rows of :class:`~memlane.ports.store.GetNeighbors`: the turns
either side of each episode hit in its session by its agent, in one statement whatever
the number of hits (the hits by primary key, each side an index range scan from the hit
outwards; a hit without a session has no neighbours, as ``x.session_id = NULL`` is never
true). The shared
:func:`~memlane.stores.neighbors.neighbors_sql` builds two compound parts a hit, whose
planning alone took milliseconds for a search's 20 hits."""

CLAIM_JOB = (
    "SELECT j.body FROM jobs j WHERE j.status IN ('pending', 'running') "
    "AND (%(user_id)s::text IS NULL OR j.user_id = %(user_id)s) "
    "AND NOT EXISTS (SELECT 1 FROM jobs e WHERE e.user_id = j.user_id "
    "  AND e.status IN ('pending', 'running') AND e.id < j.id) "
    "AND ((j.status = 'pending' AND j.run_after <= %(now)s) "
    "  OR (j.status = 'running' AND j.lease_until < %(now)s)) "
    "ORDER BY j.id, j.user_id LIMIT 1 FOR UPDATE SKIP LOCKED"
)

# ---------------------------------------------------------------------------- statements


@dataclass(frozen=True, slots=True)
class Sql:
    """One statement for a runner to execute; ``many`` runs it once per parameter set."""

    text: str
    params: Any = ()
    many: bool = False


Rows = list[tuple[Any, ...]]
Reply = tuple[Rows, int]
"""What a runner sends back for a statement: its rows (if any) and its row count."""

Step = Generator[Sql, Reply, Any]


@dataclass(frozen=True, slots=True)
class RawSql(Op[list[tuple[Any, ...]]]):
    """A read-only statement for the store's own introspection."""

    sql: str


# ---------------------------------------------------------------------------- pure SQL


def _any_of(column: str, values: list[Any]) -> Clauses:
    return [f"{column} = ANY(%s)"], [values]


def _any_topic(topics: list[str]) -> Clauses:
    return ["r.topics ?| %s"], [topics]


def _metadata_equals(key: str, value: Any) -> Clauses:
    if isinstance(value, float) and not math.isfinite(value):
        return ["FALSE"], []  # JSON has no NaN or infinity: nothing stored equals it
    # jsonb equality: true is not 1, 1 equals 1.0, strings compare exactly.
    return ["r.metadata -> %s = %s::jsonb"], [key, json.dumps(value)]


def _as_is(value: Any) -> Any:
    return value


DIALECT = Dialect(
    mark="%s",
    time=_as_is,
    any_of=_any_of,
    any_topic=_any_topic,
    metadata_equals=_metadata_equals,
    record_columns=RECORD_COLUMNS,
    lock=" FOR UPDATE",
    unquarantined="r.quarantine = '[]'::jsonb",
    lateral=True,
)


def record_params(r: MemoryRecord) -> dict[str, Any]:
    """A record's row by column; ``metadata_text`` keeps the metadata's exact JSON."""
    stored = zip(RECORDS.columns, ROWS.values(RECORDS, r), strict=True)
    return {**dict(stored), "metadata_text": r.metadata_json()}


def _read_time(value: datetime) -> datetime:
    return value.astimezone(UTC)


ROWS = RowCodec(write_time=_as_is, read_time=_read_time, read_json=_as_is, exact_metadata=True)


def check_postgres_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` (optionally ``+psycopg``) URLs and
    return the libpq form. Raises ConfigurationError."""
    scheme, sep, rest = url.partition("://")
    base = scheme.split("+", 1)[0].lower()
    if not sep or base not in ("postgresql", "postgres"):
        raise ConfigurationError(f"not a PostgreSQL URL: {redact_url(url)!r}")
    return "postgresql://" + rest
