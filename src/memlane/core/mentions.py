"""What a memory mentions, read without a model at write time: its proper names
(:func:`memlane.text.entities`) and the periods it names, as drafts of entities that the
store resolves to the user's (:class:`~memlane.ports.store.IndexMentions`)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from memlane.ids import new_id
from memlane.models import MemoryRecord, parse_period, period_words
from memlane.models.graph import EntityType
from memlane.ports import store as ops
from memlane.text import STOPWORDS
from memlane.text import entities as proper_names

MAX_NAMES = 16
"""The most names taken from one memory (a list of names is not a graph of them all)."""

_POSSESSIVE = re.compile(r"['\u2019]s?$")
_STARTERS = frozenset(
    {
        "yesterday", "today", "tonight", "tomorrow", "then", "later", "also", "maybe",
        "perhaps", "now", "last", "next", "so", "hey", "hi", "hello", "thanks", "thank",
        "well", "yes", "yeah", "no", "oh", "wow", "sure", "sorry", "please", "anyway",
        "still", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
    }
)  # fmt: skip
"""Capitalized words that begin sentences and are no first names ("Yesterday Jon ...")."""


def names(text: str) -> list[str]:
    """The proper names of ``text`` (:func:`memlane.text.entities`), a name's first word
    put back where it began a sentence ("Alice Smith lives here." -> "Alice Smith": a
    capital that starts a sentence says nothing alone, but does before another name)."""
    out: dict[str, None] = {}
    for name in proper_names(text):
        lead = re.search(r"(?:^|[.!?]\s+)([A-Z][a-z]+) " + re.escape(name) + r"\b", text)
        first = lead.group(1) if lead else ""
        if first and first.lower() not in STOPWORDS and first.lower() not in _STARTERS:
            name = f"{first} {name}"
        out[name] = None
    return list(out)


def entity_key(name: str) -> str:
    """``name`` as entities are resolved by: case-folded, quotes and a final possessive
    dropped, spaces collapsed ("Ed  Sheeran's" -> "ed sheeran")."""
    words = " ".join(name.split()).strip("\"'\u201c\u201d").casefold()
    return _POSSESSIVE.sub("", words).strip()


def _session_key(session_id: str, first: str) -> str:
    return f"session:{session_id}:{first}"


def _name_draft(name: str, session_id: str | None) -> ops.EntityDraft | None:
    """How one proper name is resolved: by its key; a single word first by the session's
    full name it begins; a name of several words registers its first word for the session."""
    key = entity_key(name)
    if not key:
        return None
    words = key.split()
    lookup: tuple[str, ...] = (key,)
    keys: tuple[str, ...] = (key,)
    if session_id is not None and len(words) == 1:
        lookup = (_session_key(session_id, key), key)
    elif session_id is not None:
        keys = (key, _session_key(session_id, words[0]))
    return ops.EntityDraft(new_id(), name, EntityType.NAME, lookup, keys)


def _date_draft(period: str) -> ops.EntityDraft:
    start, end = parse_period(period)
    key = f"date:{period}"
    return ops.EntityDraft(new_id(), period_words(start, end), EntityType.DATE, (key,), (key,))


def mention_drafts(records: Iterable[MemoryRecord]) -> tuple[ops.MentionDraft, ...]:
    """What each record names, as drafts to resolve (records naming nothing left out)."""
    out: list[ops.MentionDraft] = []
    for r in records:
        found = (_name_draft(n, r.session_id) for n in names(r.text)[:MAX_NAMES])
        drafts = [d for d in found if d is not None]
        drafts += [_date_draft(p) for p in r.periods]
        if drafts:
            out.append(
                ops.MentionDraft(r.id, r.session_id, tuple(drafts), r.event_at or r.created_at)
            )
    return tuple(out)


def index_op(records: Sequence[MemoryRecord]) -> ops.IndexMentions | None:
    """The op recording what ``records`` (of one user) name, or None when they name
    nothing."""
    if not records:
        return None
    items = mention_drafts(records)
    if not items:
        return None
    return ops.IndexMentions(records[0].user_id, items, max(r.created_at for r in records))
