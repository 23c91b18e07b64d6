"""One applier of ordered, named migrations, recorded in ``schema_migrations``, for every
SQL store. The store opens the transaction (and on PostgreSQL takes the migration lock)
and decides first whether the database is memlane's; the applier does the rest."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from memlane.errors import SchemaVersionError
from memlane.stores.sql.codecs import APPLICATION

Migration = tuple[int, str, str]
"""Version, name and SQL script of one migration."""


@dataclass(frozen=True, slots=True)
class MigrationTarget:
    """One open database connection, as the applier needs it."""

    query: Callable[[str, Sequence[Any]], Sequence[Sequence[Any]]]
    """Execute one statement; its rows (none for a statement that returns none)."""
    run_script: Callable[[str], None]
    """Execute one migration's script."""
    mark: str
    """The parameter placeholder."""
    create_table: str
    """``CREATE TABLE IF NOT EXISTS schema_migrations (version, name, applied_at)``."""
    applied_at: Callable[[], tuple[Any, ...]] = tuple
    """Parameters after version and name when a migration is recorded (none: the
    database's default)."""


def apply_migrations(db: MigrationTarget, migrations: Sequence[Migration], where: str) -> None:
    """Apply the ``migrations`` not yet recorded in the database at ``where`` (named in
    errors), in order. Raises SchemaVersionError when the database is newer than this
    memlane."""
    db.query(db.create_table, ())
    done = {row[0] for row in db.query("SELECT version FROM schema_migrations", ())}
    newest = max(v for v, _, _ in migrations)
    if done and max(done) > newest:
        raise SchemaVersionError(
            f"{where} has schema version {max(done)}; this memlane knows up to "
            f"{newest}: upgrade memlane"
        )
    for version, name, script in migrations:
        if version in done:
            continue
        db.run_script(script)
        params = (version, name, *db.applied_at())
        marks = ", ".join([db.mark] * len(params))
        db.query(f"INSERT INTO schema_migrations VALUES ({marks})", params)
        if version == 1:
            db.query(f"INSERT INTO memlane_meta VALUES ('application', {db.mark})", (APPLICATION,))
