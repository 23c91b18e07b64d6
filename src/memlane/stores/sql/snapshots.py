"""History snapshots stored compactly: what a snapshot's event row and its own other keys
already say is left out, and put back when it is read.

A history event's snapshot is the record after the change (:meth:`MemoryRecord.to_dict`):
~700 characters of JSON, most of them keys at their default (``null``, ``[]``, ``{}``,
``0``) and values the event's row holds anyway. :func:`pack` turns a snapshot that holds
every field of the record into ``[1, {...}]``, the snapshot without each key whose value
is exactly what reading puts back (:data:`DEFAULTS`, :data:`DERIVED`); :func:`unpack`
puts them back. Anything else (the sealed store's ``{"memlane:sealed": ...}``,
an imported snapshot of another shape, a snapshot written before this format) is stored
and read as it is: a JSON array never starts a snapshot written otherwise, so the two
cannot be confused, and old rows need no migration.

The defaults are this format's own (format 1), not :class:`MemoryRecord`'s read at run
time: a default changed later must not change what an old row reads as. A record field
added later is kept as it is (never left out) until a new format names it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from memlane.errors import CorruptStoreError, SchemaVersionError
from memlane.models import to_iso

FORMAT = 1
"""The first item of a packed snapshot: which defaults and derivations it was packed
with."""

Row = Mapping[str, Any]
"""The event's own fields a rule may read: ``record_id``, ``user_id``, ``version``,
``at``."""

Fill = Callable[[Mapping[str, Any], Row], Any]
"""What a key left out reads as, when it is not a constant: a function of the
snapshot's other keys (those put back before it, or never left out) and the event's
row."""


def _valid_from(snapshot: Mapping[str, Any], row: Row) -> Any:
    # What a new record gets: valid from when it happened if known, else from its creation.
    event_at = snapshot["event_at"]
    return event_at if event_at is not None else snapshot["created_at"]


def _content_hash(snapshot: Mapping[str, Any], row: Row) -> str | None:
    """The hash of an ASCII text as :func:`memlane.models.content_hash` makes it (its
    whitespace collapsed, lower-cased). Fixed here, and only for ASCII, whose splitting
    and case-folding no Unicode version changes: a text in other scripts keeps its hash."""
    text = snapshot["text"]
    if type(text) is not str or not text.isascii():
        return None
    return hashlib.sha256(" ".join(text.split()).lower().encode("ascii")).hexdigest()


DEFAULTS: dict[str, Any] = {
    **dict.fromkeys((
        "agent_id", "team", "session_id", "key", "event_at", "valid_to", "superseded_by",
        "expires_at", "deleted_at", "last_accessed_at", "actor", "context_hash",
    )),
    **{name: [] for name in ("topics", "source_ids", "periods", "quarantine")},
    "metadata": {},
    "importance": 0.5,
    "access_count": 0,
    "trust": "user",
}  # fmt: skip
"""Format 1's constants: the record's defaults as :meth:`MemoryRecord.to_dict` writes
them. Never handed out: each read gets a fresh empty list or dict."""

DERIVED: tuple[tuple[str, Fill], ...] = (
    ("id", lambda snapshot, row: row["record_id"]),
    ("user_id", lambda snapshot, row: row["user_id"]),
    ("version", lambda snapshot, row: row["version"]),
    ("updated_at", lambda snapshot, row: to_iso(row["at"])),
    ("created_at", lambda snapshot, row: snapshot["updated_at"]),
    ("valid_from", _valid_from),
    ("content_hash", _content_hash),
)
"""Format 1's values worked out, in the order they are put back: what the event's row
holds (the record's id, owner and version; its update time is the event's), then what
the snapshot's other keys say."""

FIELDS = tuple(sorted({*DEFAULTS, *(name for name, _ in DERIVED), "kind", "text"}))
"""The record's fields format 1 knows, in canonical JSON's order: a snapshot holding
them all is packed."""

_MISSING: Any = object()
_FRESH: tuple[tuple[str, Fill], ...] = tuple(
    (name, (lambda snapshot, row: []) if value == [] else (lambda snapshot, row: {}))
    for name, value in DEFAULTS.items()
    if value in ([], {})
)
_TEMPLATE = {name: DEFAULTS.get(name, _MISSING) for name in FIELDS} | dict.fromkeys(
    (name for name, _ in _FRESH), _MISSING
)
"""What a read starts from: every field in order, the immutable constants set, the rest
to put back (:data:`_PUT_BACK`) or to come from the stored snapshot."""
_PUT_BACK = _FRESH + DERIVED


def _same(value: Any, filled: Any) -> bool:
    """Whether ``value`` reads back as ``filled`` does: equal and of the same type, so
    ``0`` stays apart from ``0.0`` and ``False`` (JSON writes them apart), ``[]`` from
    ``()``."""
    return type(value) is type(filled) and value == filled


def _exact(row: Row) -> bool:
    """Whether the row's fields read back as they are now (the types its columns
    return, an aware time), so a rule gives the reader what it gave the writer."""
    at = row["at"]
    return (
        type(row["record_id"]) is str
        and type(row["user_id"]) is str
        and type(row["version"]) is int
        and isinstance(at, datetime)
        and at.tzinfo is not None
    )


def pack(snapshot: Mapping[str, Any], row: Row) -> Any:
    """What to store (as JSON) for ``snapshot`` of the event whose fields ``row`` names:
    ``[FORMAT, kept]`` when it holds every key of :data:`FIELDS`, ``kept`` the snapshot
    without each key that reads back exactly as it is; else the snapshot as it is."""
    if not snapshot.keys() >= _TEMPLATE.keys() or not _exact(row):
        return snapshot
    dropped = {name for name, value in DEFAULTS.items() if _same(snapshot[name], value)}
    dropped.update(name for name, fill in DERIVED if _same(snapshot[name], fill(snapshot, row)))
    return [FORMAT, {k: v for k, v in snapshot.items() if k not in dropped}]


def unpack(stored: Any, row: Row) -> Any:
    """The snapshot that :func:`pack` stored as ``stored`` (decoded JSON) for the event
    whose fields ``row`` names, keys in canonical JSON's order; a snapshot not packed is
    returned as it is. Raises SchemaVersionError for a format newer than this memlane's,
    CorruptStoreError for one that is not a format's."""
    if type(stored) is not list:
        return stored
    if len(stored) != 2 or type(stored[0]) is not int or type(stored[1]) is not dict:
        raise CorruptStoreError("a history snapshot is neither an object nor a packed one")
    if stored[0] != FORMAT:
        raise SchemaVersionError(
            f"a history snapshot of format {stored[0]}: written by a newer memlane"
        )
    snapshot = _TEMPLATE | stored[1]  # the template's order, then any key it lacks
    for name, fill in _PUT_BACK:
        if snapshot[name] is _MISSING:
            snapshot[name] = fill(snapshot, row)
    if snapshot["kind"] is _MISSING or snapshot["text"] is _MISSING:
        raise CorruptStoreError("a packed history snapshot lacks its kind or text")
    if len(snapshot) != len(_TEMPLATE):
        return {k: snapshot[k] for k in sorted(snapshot)}
    return snapshot
