"""Copy one store into another (``memlane migrate SRC_URL DST_URL``) and prove the copy.

Everything moves, user by user, through the export/import rows of
:mod:`memlane.core.admin`: memories with every version and history, sessions, messages,
state versions and jobs. Cached vectors are copied first, so nothing is embedded again
when the source was embedded by the same model. Each user is imported in one
transaction; import keeps ids and versions and never rolls a newer row back, so running
the migration again (after an interruption, or to catch up) is safe.

Then each user is exported from both sides and compared: row counts per type and a
SHA-256 over the rows in a canonical form (sorted, keys sorted). A difference is reported,
never silently accepted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from memlane.api import Memory
from memlane.errors import ConflictError, ValidationError
from memlane.ports import store as ops
from memlane.ports.cipher import Cipher
from memlane.ports.embedder import Embedder
from memlane.stores import open_store

Progress = Callable[[Iterable[str], int], Iterable[str]]


@dataclass(frozen=True, slots=True)
class UserCheck:
    """One user's rows on both sides: counts per type and checksums."""

    user_id: str
    source_counts: Mapping[str, int]
    target_counts: Mapping[str, int]
    source_checksum: str
    target_checksum: str
    error: str | None = None
    """Why this user could not be copied (the target refused a row), if it could not."""

    @property
    def ok(self) -> bool:
        return self.error is None and self.source_checksum == self.target_checksum


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """What a migration copied and whether every user verified."""

    source: str
    target: str
    users: tuple[UserCheck, ...] = ()
    vectors_copied: int = 0
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(u.ok for u in self.users)

    @property
    def mismatches(self) -> list[str]:
        return [u.user_id for u in self.users if not u.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "ok": self.ok,
            "users": len(self.users),
            "counts": dict(self.counts),
            "vectors_copied": self.vectors_copied,
            "mismatches": self.mismatches,
            "errors": {u.user_id: u.error for u in self.users if u.error},
            "checksum": combined_checksum(u.source_checksum for u in self.users),
        }


def migrate(
    source_url: str,
    target_url: str,
    *,
    embedder: Embedder,
    progress: Progress | None = None,
    source_cipher: Cipher | None = None,
    target_cipher: Cipher | None = None,
) -> MigrationReport:
    """Copy every user of ``source_url`` into ``target_url`` and verify the copy.

    ``embedder`` must be the model the source was embedded with (its cached vectors are
    copied; any text without one is embedded by it). Returns a report whose ``ok`` says
    whether counts and checksums matched for every user. Raises ValidationError when both
    URLs name the same store, ConfigurationError or StoreError when the source does not
    exist (it is never created), and the store errors of either side.

    ``source_cipher`` opens an encrypted source, ``target_cipher`` seals the target: a
    store moves into encryption with only the second, out of it with only the first.
    """
    source_store, target_store = open_store(source_url, create=False), open_store(target_url)
    # Compared as opened: "x.db", "./x.db" and "sqlite:///x.db" are one store.
    if source_url == target_url or source_store.url == target_store.url:
        raise ValidationError("source and target are the same store")
    source = Memory(source_store, embedder=embedder, cipher=source_cipher)
    target = Memory(target_store, embedder=embedder, cipher=target_cipher)
    try:
        users = source.list_users()
        checks: list[UserCheck] = []
        vectors = 0
        walk = progress(users, len(users)) if progress is not None else users
        for user_id in walk:
            rows = source.export_rows(user_id=user_id, plaintext=True)
            error = None
            try:
                vectors += _copy_vectors(source, target, rows)
                target.import_rows(rows)
            except (ValidationError, ConflictError) as exc:  # this user's rows, not the store
                error = str(exc)
            check = _check(user_id, rows, target.export_rows(user_id=user_id, plaintext=True))
            checks.append(dataclasses.replace(check, error=error))
        # Users only the target has (e.g. forgotten on the source since an earlier run)
        # make the copy differ from the source: reported, never deleted here.
        for user_id in sorted(set(target.list_users()) - set(users)):
            checks.append(_check(user_id, [], target.export_rows(user_id=user_id, plaintext=True)))
        totals: Counter[str] = Counter()
        for check in checks:
            totals.update(check.source_counts)
        return MigrationReport(
            source=source.store.url,
            target=target.store.url,
            users=tuple(checks),
            vectors_copied=vectors,
            counts=dict(sorted(totals.items())),
        )
    finally:
        source.close()
        target.close()


def verify(
    source_url: str,
    target_url: str,
    *,
    embedder: Embedder,
    source_cipher: Cipher | None = None,
    target_cipher: Cipher | None = None,
) -> MigrationReport:
    """Compare two stores user by user without copying anything (neither is created)."""
    source = Memory(open_store(source_url, create=False), embedder=embedder, cipher=source_cipher)
    target = Memory(open_store(target_url, create=False), embedder=embedder, cipher=target_cipher)
    try:
        users = sorted(set(source.list_users()) | set(target.list_users()))
        checks = [
            _check(
                u,
                source.export_rows(user_id=u, plaintext=True),
                target.export_rows(user_id=u, plaintext=True),
            )
            for u in users
        ]
        return MigrationReport(source.store.url, target.store.url, tuple(checks))
    finally:
        source.close()
        target.close()


def _copy_vectors(source: Memory, target: Memory, rows: Sequence[Mapping[str, Any]]) -> int:
    """Copy the source's cached vectors of these records' texts and contexts."""
    hashes = sorted(
        {
            h
            for row in rows
            if row["type"] == "record"
            for h in (row["data"].get("content_hash"), row["data"].get("context_hash"))
            if h
        }
    )
    model = source.embedder.model_id
    copied = 0
    for start in range(0, len(hashes), 1000):
        chunk = tuple(hashes[start : start + 1000])
        (found,) = source.store.batch([ops.GetEmbeddings(model, chunk)])
        if found:
            target.store.batch([ops.PutEmbeddings(model, tuple(found.items()))])
            copied += len(found)
    return copied


def _check(
    user_id: str, source_rows: Sequence[Mapping[str, Any]], target_rows: Sequence[Mapping[str, Any]]
) -> UserCheck:
    return UserCheck(
        user_id=user_id,
        source_counts=_counts(source_rows),
        target_counts=_counts(target_rows),
        source_checksum=checksum(source_rows),
        target_checksum=checksum(target_rows),
    )


def _counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    return dict(sorted(Counter(r["type"] for r in rows if r["type"] != "header").items()))


def checksum(rows: Iterable[Mapping[str, Any]]) -> str:
    """SHA-256 of export rows in canonical form: header left out, each row as JSON with
    sorted keys, rows sorted. Equal data gives equal checksums on any backend."""
    lines = sorted(
        json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        for row in rows
        if row["type"] != "header"
    )
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()


def combined_checksum(checksums: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(checksums)).encode()).hexdigest()
