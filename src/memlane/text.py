"""Small text utilities shared by stores and core: tokenizing and BM25 scoring."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)

STOPWORDS = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "he",
        "her",
        "his",
        "i",
        "in",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "she",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
    }
)


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens (letters and digits), in order. ``lower``, not ``casefold``:
    the indexes (FTS5 ``unicode61``, PostgreSQL ``to_tsvector``) keep "ß", so a query term
    folded to "ss" would never match them."""
    return [t.lower() for t in _TOKEN.findall(text)]


def query_terms(text: str) -> list[str]:
    """Distinct tokens of a query without stopwords; all tokens if only stopwords remain."""
    tokens = tokenize(text)
    terms = [t for t in tokens if t not in STOPWORDS]
    return list(dict.fromkeys(terms or tokens))


def bm25_scores(
    query: Sequence[str],
    documents: Iterable[tuple[str, Sequence[str]]],
    *,
    contexts: Mapping[str, Sequence[str]] | None = None,
    context_weight: float = 0.0,
    k1: float = 1.2,
    b: float = 0.75,
) -> dict[str, float]:
    """BM25 score of each document (id, tokens) that shares a term with ``query``.

    With ``contexts`` and ``context_weight > 0`` a document's context tokens count
    ``context_weight`` times in its term frequencies and length (a two-field BM25).
    """
    docs = list(documents)
    if not docs or not query:
        return {}
    extra = contexts if contexts and context_weight > 0 else {}
    counts = []
    for doc_id, toks in docs:
        tf: dict[str, float] = dict(Counter(toks))
        length = float(len(toks))
        ctx = extra.get(doc_id, ())
        for term, n in Counter(ctx).items():
            tf[term] = tf.get(term, 0.0) + context_weight * n
        length += context_weight * len(ctx)
        counts.append((doc_id, tf, length))
    avg_len = sum(length for _, _, length in counts) / len(counts) or 1.0
    df = Counter(term for _, tf, _ in counts for term in set(query) & tf.keys())
    n = len(counts)
    scores: dict[str, float] = {}
    for doc_id, tf, length in counts:
        score = 0.0
        for term in query:
            freq = tf.get(term, 0.0)
            if not freq:
                continue
            idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
            score += idf * freq * (k1 + 1) / (freq + k1 * (1 - b + b * length / avg_len))
        if score > 0:
            scores[doc_id] = score
    return scores


_WORD = re.compile(r"[^\W\d_](?:[\w'\u2019-]*\w)?", re.UNICODE)
_OPENERS = " \t\n\"'\u201c\u2018([*"
_POSSESSIVE = re.compile(r"['\u2019]s$")
_NOT_NAMES = frozenset({"i", "i'm", "i've", "i'll", "i'd"})


def entities(text: str) -> list[str]:
    """The proper-noun spans of ``text``, in order, without repeats: runs of capitalized
    words that do not start a sentence ("Then I flew to Sweden with Jon Ross." ->
    ["Sweden", "Jon Ross"]), a final possessive dropped ("Ed Sheeran's" -> "Ed Sheeran").
    A capital that starts the text, a sentence or what follows a colon (a speaker prefix
    like "Caroline: ") says nothing and is not counted; nor are "I" and stopwords. An
    offline stand-in for named-entity recognition, with no model or language data, to
    name the people, places and things a memory mentions."""
    spans: dict[str, None] = {}
    run: list[str] = []
    end = 0
    for match in _WORD.finditer(text):
        joined = text[end : match.start()].isspace()
        end = match.end()
        if run and joined and _capitalized(match.group()):
            run.append(match.group())  # the next word of a name ("Jon Ross")
            continue
        if run:
            spans[_POSSESSIVE.sub("", " ".join(run))] = None
        run = [match.group()] if _name_start(text, match) else []
    if run:
        spans[_POSSESSIVE.sub("", " ".join(run))] = None
    return list(spans)


def _capitalized(word: str) -> bool:
    """A capitalized word that could be part of a name (not "I", "I'm", "The" …)."""
    lowered = word.lower().replace("\u2019", "'")
    return word[0].isupper() and lowered not in _NOT_NAMES and lowered not in STOPWORDS


def _name_start(text: str, match: re.Match[str]) -> bool:
    """Whether the word ``match`` found begins a name: capitalized where a sentence does
    not start (a capital there would say nothing)."""
    lead = text[: match.start()].rstrip(_OPENERS)
    return _capitalized(match.group()) and bool(lead) and lead[-1] not in ".!?:;"
