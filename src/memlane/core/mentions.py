"""What a memory mentions, read without a model at write time: its proper names
(:func:`memlane.text.entities`) and the periods it names, as drafts of entities that the
store resolves to the user's (:class:`~memlane.ports.store.IndexMentions`)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

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


_CALENDAR = frozenset(
    {
        "january", "february", "march", "april", "may", "june", "july", "august",
        "september", "october", "november", "december", "monday", "tuesday", "wednesday",
        "thursday", "friday", "saturday", "sunday",
    }
)  # fmt: skip
"""Months and weekdays: said as a date just before a name ("In June Nora moved", "on
Tuesday Jon came") they are no part of it (the date is read apart)."""


_BEFORE_DATE = frozenset(
    {
        "in", "on", "since", "until", "till", "by", "last", "next", "this", "every", "later",
        "early", "late", "mid", "before", "after", "from", "during", "that", "one", "each",
    }
)  # fmt: skip
"""Words after which a month or weekday is a date ("in June", "last Tuesday")."""


def _without_date(text: str, name: str) -> str:
    """``name`` without a leading month or weekday said as a date just before the name
    ("in June Nora moved" -> "Nora"; "June Carter" stays)."""
    words = name.split()
    if len(words) < 2 or words[0].casefold() not in _CALENDAR:
        return name
    before = re.search(r"(\w+)\W+" + re.escape(name) + r"\b", text)
    if before is None or before.group(1).casefold() not in _BEFORE_DATE:
        return name
    return " ".join(words[1:])


MAX_NAME_CHARS = 120
"""The longest name kept (a run of capitals longer than this is no name, and a key that
long would not fit a database index)."""


def names(text: str, limit: int | None = None) -> list[str]:
    """The proper names of ``text`` (:func:`memlane.text.entities`), a name's first word
    put back where it began a sentence ("Alice Smith lives here." -> "Alice Smith": a
    capital that starts a sentence says nothing alone, but does before another name); at
    most ``limit``, the first ones (each costs a pass over the text), none longer than
    :data:`MAX_NAME_CHARS`."""
    out: dict[str, None] = {}
    for name in proper_names(text):
        if limit is not None and len(out) >= limit:
            break
        if len(name) > MAX_NAME_CHARS:
            continue
        lead = re.search(r"(?:^|[.!?]\s+)([A-Z][a-z]+) " + re.escape(name) + r"\b", text)
        first = lead.group(1) if lead else ""
        if first and first.lower() not in STOPWORDS and first.lower() not in _STARTERS:
            name = f"{first} {name}"
        kept = _without_date(text, name)
        if len(kept) <= MAX_NAME_CHARS:
            out[kept] = None
    return list(out)


def entity_key(name: str) -> str:
    """``name`` as entities are resolved by: case-folded, quotes and a final possessive
    dropped, spaces collapsed ("Ed  Sheeran's" -> "ed sheeran")."""
    words = " ".join(name.split()).strip("\"'\u201c\u201d").casefold()
    return _POSSESSIVE.sub("", words).strip()


def _session_key(session_id: str, first: str) -> str:
    return f"session:{session_id}:{first}"


def _name_draft(
    name: str, session_id: str | None, kind: EntityType = EntityType.NAME
) -> ops.EntityDraft | None:
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
    return ops.EntityDraft(new_id(), name, kind, lookup, keys)


def _date_draft(period: str) -> ops.EntityDraft:
    start, end = parse_period(period)
    key = f"date:{period}"
    return ops.EntityDraft(new_id(), period_words(start, end), EntityType.DATE, (key,), (key,))


Triple = tuple[str, EntityType, str, str, EntityType, bool]
"""A typed relation as the memory manager extracts it: subject, its type, predicate,
object, its type, and whether it is exclusive (:class:`~memlane.ports.store.TripleDraft`)."""


def triple_drafts(triples: Iterable[Triple], session_id: str | None) -> tuple[ops.TripleDraft, ...]:
    """The manager's triples as drafts to resolve (those naming nothing left out)."""
    out: list[ops.TripleDraft] = []
    for subject, subject_type, predicate, obj, object_type, exclusive in triples:
        a = _name_draft(subject, session_id, subject_type)
        b = _name_draft(obj, session_id, object_type)
        verb = "_".join(predicate.casefold().split())
        if a is not None and b is not None and verb:
            out.append(ops.TripleDraft(a, verb, b, exclusive))
    return tuple(out)


def mention_drafts(
    records: Iterable[MemoryRecord],
    triples: Mapping[str, tuple[ops.TripleDraft, ...]] | None = None,
) -> tuple[ops.MentionDraft, ...]:
    """What each record names, as drafts to resolve (records naming nothing left out),
    with the typed ``triples`` stated by some of them (by record id)."""
    out: list[ops.MentionDraft] = []
    for r in records:
        stated = (triples or {}).get(r.id, ())
        if r.quarantine:  # held back from recall: what it names is held back too
            continue
        found = (_name_draft(n, r.session_id) for n in names(r.text, MAX_NAMES))
        drafts = [d for d in found if d is not None]
        drafts += [_date_draft(p) for p in r.periods]
        if drafts or stated:
            said = r.event_at or r.created_at
            out.append(ops.MentionDraft(r.id, r.session_id, tuple(drafts), said, stated))
    return tuple(out)


def index_op(
    records: Sequence[MemoryRecord],
    triples: Mapping[str, tuple[ops.TripleDraft, ...]] | None = None,
) -> ops.IndexMentions | None:
    """The op recording what ``records`` (of one user) name and the ``triples`` they
    state (by record id), or None when they name nothing."""
    if not records:
        return None
    items = mention_drafts(records, triples)
    if not items:
        return None
    return ops.IndexMentions(records[0].user_id, items, max(r.created_at for r in records))


def reindex_op(record: MemoryRecord, at: datetime) -> ops.IndexMentions:
    """The op that reads ``record``'s text again after an edit: what its old text named
    is taken back, what the new one names is recorded (``at``: when the edit was made)."""
    return ops.IndexMentions(record.user_id, mention_drafts([record]), at, replace=(record.id,))
