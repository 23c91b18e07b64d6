"""What a fact is about, without a model: which existing memories share its subject.

The decision call only sees the existing memories the gate lets through. Cosine alone
misses contradictions that share few words with what they replace — "Moved to Paris"
against "Lives in London", "started a new job at Stripe" against "works at Google" —
so the gate also lets through memories about the same subject (:func:`shares_subject`):

- a shared **term**: a name, place or object ("Rex", "Berlin", "guitar"), i.e. any word
  that is not a stopword, a number, a word every memory uses ("user", "now") or an
  attribute cue below;
- a shared **attribute** of the same holder: both say where the user lives, where they
  work, their relationship, diet, health, age, contact details, vehicle, studies or name,
  recognized by cue words ("lives", "moved", "home"; "job", "works", "manager" ...). The
  holder is the user unless the fact is about a relative or pet ("The user's sister lives
  in Berlin" is not about where the user lives);
- a shared **topic**, as tagged by the extraction.

A fact that announces a change or a negation ("switched to", "left", "no longer", "now",
"doesn't") replaces or denies something the user said before, whatever words that used:
for it :func:`choose_related` also accepts memories a little less similar than the usual
gate (``change_threshold``).

English cue words only: in other languages the terms and topics still work, and cosine
does the rest. Pure functions; :mod:`memlane.manager.flows` does the searching.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

from memlane.models import MemoryRecord
from memlane.text import STOPWORDS, tokenize

if TYPE_CHECKING:
    from memlane.manager.results import ManagerConfig


def _stem(word: str) -> str:
    """A crude English plural/third-person stem, enough to match "runs" with "run"."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


ATTRIBUTES: Mapping[str, tuple[str, ...]] = {
    "home": (
        "live", "lives", "lived", "living", "move", "moved", "moves", "moving", "relocate",
        "relocated", "relocating", "reside", "resides", "home", "house", "apartment", "flat",
        "rent", "rents", "rented", "renting", "neighborhood", "neighbourhood", "hometown",
    ),
    "work": (
        "work", "works", "worked", "working", "job", "jobs", "employer", "employed",
        "employee", "company", "hired", "quit", "fired", "promoted", "promotion", "career",
        "manager", "boss", "colleague", "colleagues", "coworker", "coworkers", "office",
        "remote", "remotely", "commute", "commutes", "commuting", "reports", "profession",
        "occupation", "salary", "shift", "shifts", "intern", "internship", "freelance",
        "freelancer", "retired", "unemployed",
    ),
    "relationship": (
        "married", "marry", "marriage", "wife", "husband", "spouse", "partner", "girlfriend",
        "boyfriend", "fiance", "fiancee", "engaged", "dating", "divorced", "divorce",
        "separated", "single", "widowed", "relationship", "wedding", "breakup",
    ),
    "diet": (
        "vegetarian", "vegan", "pescatarian", "meat", "eat", "eats", "eating", "diet",
        "keto", "gluten", "dairy",
    ),
    "health": (
        "allergic", "allergy", "allergies", "intolerant", "intolerance", "diagnosed",
        "diabetes", "asthma", "medication", "doctor", "pregnant", "injury", "injured",
        "surgery",
    ),
    "age": ("age", "aged", "old", "birthday", "born", "turned", "turns", "turning"),
    "contact": ("phone", "mobile", "cell", "telephone", "email", "mail", "whatsapp"),
    "vehicle": (
        "car", "cars", "drive", "drives", "driving", "drove", "vehicle", "bike", "bicycle",
        "cycle", "cycles", "cycling", "motorbike", "motorcycle", "scooter",
    ),
    "studies": (
        "school", "university", "college", "degree", "master", "masters", "bachelor", "phd",
        "study", "studies", "studying", "student", "graduated", "graduate", "graduation",
        "enrolled", "course", "courses", "exam", "exams", "semester",
    ),
    "name": ("name", "nickname", "surname"),
}  # fmt: skip
"""Attributes a new value usually replaces, each with its English cue words."""

_CUES = {_stem(w): attribute for attribute, words in ATTRIBUTES.items() for w in words}

HOLDER_FREE = frozenset({"relationship"})
"""Attributes that link the user with someone else: "The user's partner is Sam" and "The
user is single" are about the same thing although the first one's holder is the partner."""

RELATIONS = frozenset(
    {
        "mother", "mom", "mum", "father", "dad", "parent", "parents", "sister", "brother",
        "sibling", "son", "daughter", "child", "children", "kid", "kids", "baby", "wife",
        "husband", "partner", "girlfriend", "boyfriend", "fiance", "fiancee", "spouse",
        "friend", "roommate", "grandmother", "grandma", "grandfather", "grandpa", "aunt",
        "uncle", "cousin", "niece", "nephew", "dog", "cat", "pet", "puppy", "kitten",
    }
)  # fmt: skip
"""Holders other than the user: after "user's" / "my" they make the fact theirs."""

GENERIC = frozenset(
    {
        "user", "now", "new", "also", "still", "just", "really", "very", "every",
        "all", "some", "any", "not", "no", "never", "always", "usually", "often",
        "sometimes", "again", "after", "before", "since", "last", "next", "ago",
        "recently", "currently", "lately", "day", "days", "daily", "week", "weeks",
        "weekly", "weekend", "weekends", "weekday", "weekdays", "month", "months", "year",
        "years", "time", "times", "today", "morning", "mornings", "evening", "evenings",
        "night", "nights", "get", "gets", "got", "make", "makes", "made", "go", "goes",
        "going", "went", "has", "having", "want", "wants", "wanted", "like", "likes",
        "liked", "love", "loves", "loved", "enjoy", "enjoys", "enjoyed", "prefer",
        "prefers", "preferred", "favourite", "favorite", "hate", "hates", "use", "uses",
        "used", "using", "thing", "things", "lot", "one", "two", "three", "named",
        "called", "about", "around", "over", "other", "another", "more", "most", "less",
        "much", "many", "well", "good", "great", "only", "even", "own", "back", "out",
        "up", "down", "off", "into", "there", "here", "then", "because", "start",
        "started", "starts", "stop", "stopped", "stops", "began", "begin", "become",
        "became", "switched", "changed", "change", "plan", "plans", "planning", "planned",
        "try", "tries", "trying", "can", "could", "should", "may", "might", "must",
        "need", "needs", "longer", "ever", "each", "com", "www", "http", "https",
    }
)  # fmt: skip
"""Words that say nothing about which subject a memory is about."""


CHANGES = frozenset(
    {
        "now", "new", "nowadays", "switched", "switch", "switching", "changed", "left",
        "quit", "stopped", "gave", "anymore", "longer", "became", "become", "becoming",
        "broke", "ended", "sold", "replaced", "instead", "returned", "dropped", "former",
        "formerly", "ex", "moved", "started", "again", "used", "no", "not", "never",
        "doesn", "don", "isn", "aren", "didn", "hasn", "haven", "wasn", "won",
    }
)  # fmt: skip
"""Words of a fact that announces a change, or denies something."""


@dataclass(frozen=True, slots=True)
class Subject:
    """What one fact is about."""

    holder: str
    """Whose fact it is: ``user`` or a relation or pet ("sister", "dog")."""
    terms: frozenset[str]
    """Stems of its names, places and objects."""
    words: tuple[str, ...]
    """Those terms as written, for a lexical search."""
    attributes: frozenset[str]
    """Keys of :data:`ATTRIBUTES` it speaks of."""
    topics: frozenset[str]
    """Its topics, lower-cased."""
    changes: bool
    """Whether it announces a change or denies something (:data:`CHANGES`, "these days")."""


def subject_of(text: str, topics: Iterable[str] = ()) -> Subject:
    """The subject of one fact (or memory) and its topics."""
    tokens = tokenize(text)
    # "The user's sister ..." (tokens user, s, sister) or "My sister ...".
    owners = [w for o, w in pairwise(tokens) if o in ("s", "my") and w in RELATIONS]
    holder = owners[0] if owners else "user"
    attributes = frozenset(_CUES[s] for s in map(_stem, tokens) if s in _CUES)
    words = tuple(
        dict.fromkeys(
            t
            for t in tokens
            if len(t) > 1
            and not t.isdigit()
            and t not in STOPWORDS
            and t not in GENERIC
            and _stem(t) not in _CUES
        )
    )
    return Subject(
        holder=holder,
        terms=frozenset(map(_stem, words)),
        words=words,
        attributes=attributes,
        topics=frozenset(t.strip().lower() for t in topics if t.strip()),
        changes=bool(CHANGES.intersection(tokens)) or "these days" in " ".join(tokens),
    )


def shares_subject(a: Subject, b: Subject) -> bool:
    """Whether two facts are about the same subject: a shared term or topic, or a shared
    attribute of the same holder (any holder for :data:`HOLDER_FREE` attributes)."""
    if a.terms & b.terms or a.topics & b.topics:
        return True
    common = a.attributes & b.attributes
    return bool(common) and (a.holder == b.holder or bool(common & HOLDER_FREE))


def search_words(s: Subject) -> str:
    """A lexical query that finds memories sharing a term or an attribute with ``s``: its
    terms (as written and stemmed) and every cue word of its attributes. Empty if none."""
    cues = (w for attribute in sorted(s.attributes) for w in ATTRIBUTES[attribute])
    stems = (_stem(w) for w in s.words)
    return " ".join(dict.fromkeys([*s.words, *stems, *cues]))


def choose_related(
    pool: Sequence[tuple[MemoryRecord, float]], subject: Subject, config: ManagerConfig
) -> list[tuple[MemoryRecord, float]]:
    """What the decider is shown for one candidate, from ``pool`` (memory, cosine): up to
    ``related_limit`` memories at least ``related_threshold`` similar, then up to
    ``subject_limit`` others: first those about the candidate's ``subject``, then, when it
    announces a change, those at least ``change_threshold`` similar; each group most
    similar first."""
    ranked = sorted(pool, key=lambda rs: -rs[1])
    similar = [(r, s) for r, s in ranked if s >= config.related_threshold][: config.related_limit]
    taken = {r.id for r, _ in similar}
    rest = [(r, s) for r, s in ranked if r.id not in taken]
    same = [(r, s) for r, s in rest if shares_subject(subject, subject_of(r.text, r.topics))]
    near = [(r, s) for r, s in rest if subject.changes and s >= config.change_threshold]
    more = {r.id: (r, s) for r, s in [*same, *near]}  # subject first, insertion-ordered
    return similar + list(more.values())[: config.subject_limit]
