"""One user's lexical index: BM25 over memories with tantivy (block-max WAND), which
ranks only the documents that can still reach the top instead of scoring every match.

Each memory is one document with two analysed fields: ``text`` (its own words and the
words of the periods it names) and ``all`` (those and the words of the turn before it,
its lexical context). A document is keyed by the memory's row number (``rid``, the SQLite
store) or by its id as text (``keyed_by="id"``, the PostgreSQL store's copy, whose rows
have no number). Words are split on anything that is not a letter or digit,
lowercased, folded to ASCII ("café" matches "cafe") and stemmed (English Snowball), as
SQLite's ``porter unicode61 remove_diacritics 2`` did before. Nothing else is stored: the
index holds terms and their counts, never a memory's text as written.

tantivy is imported when an index is first opened, never with memlane.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from memlane.errors import CorruptStoreError
from memlane.text import query_terms

ANALYZER = "memlane_en"
WRITER_HEAP = 64 * 1024 * 1024
"""Bytes the writer buffers before it flushes a segment (one thread)."""
LONGEST_WORD = 1024
"""Bytes of the longest word indexed (longer ones are left out, as tantivy would). Words
run on while letters or digits follow: a Chinese or Japanese clause up to its next
punctuation is one word (3 bytes a character), so is a hash or an identifier."""
TIE_READ_MATCHES = 1200
"""Most matches a lexical search reads past a tie at its cut-off, all at once: where a
query's terms match more documents, the tie is decided among the hits read so far (the
stores' ``_op_LexicalSearch``)."""


@dataclass(frozen=True, slots=True)
class Doc:
    """What one memory's index entry holds: its words and those of its context, and
    where its id sorts (:func:`order_key`)."""

    rid: int
    text: str
    context: str | None = None
    key: int = 0
    id: str = ""
    """The memory's id, the key of an index ``keyed_by="id"`` (``rid`` and ``key`` unused)."""


def order_key(record_id: str) -> int:
    """A number that sorts as ``record_id`` sorts, or ties: its first 8 bytes (UTF-8,
    which sorts as the text's code points do), big-endian, padded with zeros. Search
    orders hits of one score by id; with this beside each document it looks up only
    the tied hits that can still make the cut (ids sharing 8 bytes tie here and are
    looked up together), not every hit of a tie that runs into the thousands."""
    return int.from_bytes(record_id.encode("utf-8")[:8].ljust(8, b"\0"), "big")


_tantivy_lock = threading.Lock()
_tantivy: Any = None


def _lib() -> Any:
    global _tantivy
    with _tantivy_lock:
        if _tantivy is None:
            import tantivy

            _tantivy = tantivy
        return _tantivy


def _schema(keyed_by: str = "rid") -> Any:
    t = _lib()
    sb = t.SchemaBuilder()
    if keyed_by == "id":  # read back from the document store: ~2.5 us a hit
        sb.add_text_field("id", stored=True, tokenizer_name="raw", index_option="basic")
    else:
        sb.add_integer_field("rid", stored=False, indexed=True, fast=True)
        sb.add_unsigned_field("key", stored=False, indexed=False, fast=True)
    for name in ("text", "all"):
        sb.add_text_field(name, stored=False, tokenizer_name=ANALYZER, index_option="freq")
    return sb.build()


def _analyzer() -> Any:
    t = _lib()
    return (
        t.TextAnalyzerBuilder(t.Tokenizer.simple())
        .filter(t.Filter.remove_long(LONGEST_WORD))
        .filter(t.Filter.lowercase())
        .filter(t.Filter.ascii_fold())
        .filter(t.Filter.stemmer("english"))
        .build()
    )


def analyzer() -> Callable[[str], list[str]]:
    """A function from a text to the terms this index holds for it, in order (used to
    blind them one by one: :mod:`memlane.stores.sealed`)."""
    analyze = _analyzer().analyze
    return lambda text: list(analyze(text))


def next_read(
    index: LexicalIndex,
    terms: Sequence[str],
    context_weight: float,
    *,
    want: int,
    limit: int,
    kept: Sequence[float],
    read: Sequence[float],
    bound: int = TIE_READ_MATCHES,
) -> int | None:
    """How many hits a store's lexical search reads next, or None: it is done (the
    stores' ``_op_LexicalSearch``). ``want`` hits were asked for; ``read`` are the
    scores of those that came, ``kept`` of those that passed the filters, best first.

    Done when the index has no more, or the limit-th hit kept ranks above every hit
    not read (a tie with them could order differently by id). A tie at the cut-off that
    runs past the hits read is read past only where one more read holds every match
    (at most ``bound``), so that it is decided by id as if every hit were read;
    otherwise it is decided by id among the hits read (which of the tie those are is
    the index's order). At a million memories a third of the bench's hybrid searches
    end inside a tie, their terms' counts 2,564 to 556,848. The rule before read four
    times as many past every tie (deciding 31 of those 37 exactly), at a cost of
    1.3-1.4 ms a hybrid search's lexical read at the median and 1.5-2.3 ms at p95
    (bench/scale.md). (The terms' counts add up to more than the matches where
    memories hold several of them: up to four times the bound they are counted.)
    Too few kept: four times as many."""
    enough = len(kept) >= limit
    if len(read) < want or (enough and kept[limit - 1] > read[-1]):
        return None
    if not enough:
        return want * 4  # the filters left too few: read further
    matches = index.matches(terms, context_weight, exact_to=4 * bound)
    if matches > bound:
        return None
    # More than there are, so this read is the last, unless another process added
    # matches meanwhile: then at least twice as many the next time.
    return max(2 * want, matches + 1)


R = TypeVar("R")
K = TypeVar("K", int, str)  # an order key: ids order as they sort


def next_lookups(
    order: Sequence[tuple[R, K, float]],
    at: int,
    step: int,
    cut: tuple[float, K] | None,
    checked: set[R],
) -> tuple[list[R], int]:
    """The next hits a store's lexical search looks up against its filters, and where
    the slice after them starts. ``order`` holds the hits read as (hit, order key,
    score), best first and ties by key; from ``at``, up to ``step`` not looked up yet
    (``checked``), up to the first that ranks below ``cut`` (the limit-th hit kept:
    score, key), after which none could enter the top (the end is then next)."""
    new: list[R] = []
    while at < len(order) and len(new) < step:
        hit, key, score = order[at]
        if cut is not None and (score < cut[0] or (score == cut[0] and key > cut[1])):
            return new, len(order)  # every hit after this one ranks below it too
        at += 1
        if hit not in checked:
            new.append(hit)
    return new, at


class LexicalIndex:
    """A tantivy index in a folder (``path``) or in memory (``path=None``). With
    ``existing`` the folder must hold an index already: one that is gone, damaged or not a
    folder raises CorruptStoreError (its owner rebuilds it), never opens empty.
    ``keyed_by`` is ``"rid"`` (documents keyed by :attr:`Doc.rid`, searched by
    :meth:`search`) or ``"id"`` (by :attr:`Doc.id`, searched by :meth:`search_ids`)."""

    def __init__(self, path: Path | None, *, existing: bool = False, keyed_by: str = "rid") -> None:
        t = _lib()
        self.path = path
        self.keyed_by = keyed_by
        if path is None:
            self._index = t.Index(_schema(keyed_by))
        else:
            try:
                if existing and not (path / "meta.json").is_file():
                    raise CorruptStoreError(f"the lexical index at {path} is missing")
                path.mkdir(parents=True, exist_ok=True)
                self._index = t.Index(_schema(keyed_by), path=str(path), reuse=True)
            except (ValueError, OSError) as exc:  # tantivy's damaged files; a file in the way
                raise CorruptStoreError(
                    f"the lexical index at {path} cannot be opened: {exc}"
                ) from exc
        self._analyzer = _analyzer()
        self._index.register_tokenizer(ANALYZER, self._analyzer)
        self._schema = self._index.schema

    def write(self, removed: Iterable[int | str], docs: Iterable[Doc]) -> None:
        """Delete every document of ``removed`` (keys: rids, or ids if ``keyed_by="id"``)
        then add ``docs``, in one commit (so an interrupted write leaves the index as it
        was, and writing the same change twice leaves one document per memory)."""
        t = _lib()
        writer = self._index.writer(WRITER_HEAP, 1)
        by_id = self.keyed_by == "id"
        try:
            for key in removed:
                writer.delete_documents_by_term(self.keyed_by, key)
            for doc in docs:
                full = doc.text if not doc.context else f"{doc.text}\n{doc.context}"
                if by_id:
                    writer.add_document(t.Document(id=doc.id, text=doc.text, all=full))
                    continue
                entry = t.Document(rid=doc.rid, text=doc.text, all=full)
                entry.add_unsigned("key", doc.key)  # as a keyword it would be signed
                writer.add_document(entry)
            writer.commit()
            writer.garbage_collect_files()
        except BaseException:
            writer.rollback()
            raise
        finally:
            writer.wait_merging_threads()
        self._index.reload()

    def reload(self) -> None:
        """See what another process committed."""
        self._index.reload()

    def terms(self, query: str) -> list[str]:
        """The query's words as this index holds them (stopwords left out)."""
        out: list[str] = []
        for word in query_terms(query):
            out.extend(self._analyzer.analyze(word))
        return list(dict.fromkeys(out))

    def search(
        self, terms: Sequence[str], limit: int, context_weight: float
    ) -> list[tuple[int, int, float]]:
        """(rid, order key of its id, BM25 score) of the ``limit`` best documents holding
        any of ``terms``, best first (equal scores in the index's own order).

        With ``context_weight`` 0 only a memory's own words count; with 1 its words and
        its context's count alike (one field); in between, a blend of the two scores."""
        if not terms or limit < 1:
            return []
        query = self._query(terms, context_weight)
        searcher = self._index.searcher()
        hits = searcher.search(query, limit, count=False).hits
        if not hits:
            return []
        addresses = [addr for _, addr in hits]
        rids = searcher.fast_field_values("rid", addresses)
        keys = searcher.fast_field_values("key", addresses)
        return [
            (int(rid), int(key), float(score))
            for (score, _), rid, key in zip(hits, rids, keys, strict=True)
        ]

    def search_ids(
        self, terms: Sequence[str], limit: int, context_weight: float
    ) -> list[tuple[str, float]]:
        """(id, BM25 score) of the ``limit`` best documents holding any of ``terms``, best
        first, of an index ``keyed_by="id"`` (as :meth:`search`)."""
        if not terms or limit < 1:
            return []
        searcher = self._index.searcher()
        hits = searcher.search(self._query(terms, context_weight), limit, count=False).hits
        return [(str(searcher.doc(addr)["id"][0]), float(score)) for score, addr in hits]

    def matches(self, terms: Sequence[str], context_weight: float, *, exact_to: int = 0) -> int:
        """At least as many as the documents a search of ``terms`` matches: the sum of
        the terms' document counts in the field it searches (a lookup in the term
        dictionary, not a search), or the documents the index holds if fewer. The sum
        counts a document once for each term it holds, and deleted documents not yet
        merged away; where it is no more than ``exact_to`` the matches are counted
        exactly instead, by a search that visits each of them (cheap at such sizes)."""
        field = "text" if context_weight <= 0 else "all"  # "all" holds "text"'s words
        searcher = self._index.searcher()
        counts = min(
            sum(int(searcher.doc_freq(field, term)) for term in terms), int(searcher.num_docs)
        )
        if not terms or counts > exact_to:
            return counts
        return int(searcher.search(self._query(terms, context_weight), 1, count=True).count)

    def _query(self, terms: Sequence[str], context_weight: float) -> Any:
        t = _lib()

        def any_of(field: str) -> Any:
            should = [
                (t.Occur.Should, t.Query.term_query(self._schema, field, term)) for term in terms
            ]
            return t.Query.boolean_query(should)

        if context_weight <= 0:
            return any_of("text")
        if context_weight == 1:  # the same scores, without a wrapper that slows the scan
            return any_of("all")
        parts = [(t.Occur.Should, t.Query.boost_query(any_of("all"), context_weight))]
        if context_weight < 1:
            parts.append((t.Occur.Should, t.Query.boost_query(any_of("text"), 1 - context_weight)))
        return t.Query.boolean_query(parts)

    def rids(self) -> set[int]:
        """Every memory the index holds (for checks: a full scan)."""
        t = _lib()
        searcher = self._index.searcher()
        n = searcher.num_docs
        if n == 0:
            return set()
        hits = searcher.search(t.Query.all_query(), n, count=False).hits
        return {int(r) for r in searcher.fast_field_values("rid", [a for _, a in hits])}

    def ids(self) -> list[str]:
        """The id of every document of an index ``keyed_by="id"``, sorted, once per
        document (for checks: a full scan)."""
        t = _lib()
        searcher = self._index.searcher()
        n = searcher.num_docs
        if n == 0:
            return []
        hits = searcher.search(t.Query.all_query(), n, count=False).hits
        return sorted(str(searcher.doc(a)["id"][0]) for _, a in hits)
