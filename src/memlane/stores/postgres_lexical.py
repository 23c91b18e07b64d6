"""Lexical search on PostgreSQL: the statements, built by pure functions.

PostgreSQL has no top-k index for ``ts_rank``: ranking a query reads and scores every row
that matches it. A word found in 40 % of a user's million memories makes that 400,000
rows and over 200 ms a query (bench/scale_pg.md). So one statement reads each query
term's matches, stopping at ``budget`` rows a term (each row read once), and ranks:

- every match of the terms below the budget (*rare* terms): a query whose terms are all
  rare ranks exactly the rows it did before, all of them;
- the rows holding every term when all are common (at the budget), and those holding
  two common terms: the best ``ts_rank`` can give, found by intersecting the terms'
  index entries, at most ``budget`` rows each. The pairs are not read when ``budget``
  rows hold every term: then more hold each pair than a pair's bounded read would
  sample, and intersecting two very common terms is the costliest read here;
- a common term's other matches only when no rare term has ``limit`` matches: then its
  first ``budget`` matches (in the order the scan finds them, not by score: a bounded
  sample) widen the set.

Rare terms' matches all count, as in BM25, where a rarer term says more (its IDF);
``ts_rank`` has no IDF and orders the candidates, with the weights
:class:`~memlane.ports.store.LexicalSearch` asks for.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

TS_CONFIG = "english"

LEXICAL_BUDGET = 500
"""Matches read per term before it is *common* (and the size of each sample); see
bench/scale_pg.md for how it was chosen."""


def term_query(term: str, label: str) -> str:
    """One term as a ``to_tsquery`` operand. Terms are letters and digits only
    (:func:`memlane.text.query_terms`), so they cannot carry tsquery syntax."""
    return f"'{term}'{label}"


def any_of(terms: Sequence[str], label: str) -> str:
    """A ``to_tsquery`` expression matching any of ``terms``."""
    return " | ".join(term_query(t, label) for t in terms)


def all_of(terms: Sequence[str], label: str) -> str:
    """A ``to_tsquery`` expression matching rows that hold every one of ``terms``."""
    return " & ".join(term_query(t, label) for t in terms)


def lexical_sql(
    terms: Sequence[str],
    label: str,
    weights: list[float],
    where: str,
    params: Sequence[Any],
    limit: int,
    budget: int,
) -> tuple[str, list[Any]]:
    """One statement: the ids and ``ts_rank`` scores of the best ``limit`` candidates.

    ``m`` holds each term's first ``budget`` matches among the rows ``where`` selects
    (numbered by term), so each row is read once; ``n`` counts them. A term with fewer
    than ``budget`` is rare: its rows are all there. With three terms or more, all
    common, ``a`` holds the first ``budget`` rows holding every one (read only then: a
    one-time filter on ``n``); each pair of common terms adds the first ``budget`` rows
    holding both, unless ``a`` holds ``budget`` rows. When
    a term is common and no rare term has ``limit`` matches (``w``), the common terms'
    rows in ``m`` (samples) join the candidates too."""
    cap = max(int(budget), int(limit))
    one = (
        "(SELECT {i} AS t, r.id, r.search FROM records r WHERE "
        f"r.search @@ to_tsquery('{TS_CONFIG}', %s) AND {where} LIMIT {cap})"
    )
    args: list[Any] = []
    for t in terms:
        args += [term_query(t, label), *params]
    matches = " UNION ALL ".join(one.format(i=i) for i in range(len(terms)))
    joint = (
        "(SELECT r.id, r.search FROM records r WHERE "
        f"(SELECT count(*) FROM n WHERE hits >= {cap}{{among}}) = {{common}}{{enough}} "
        f"AND r.search @@ to_tsquery('{TS_CONFIG}', %s) AND {where} LIMIT {cap})"
    )
    # Rows holding every term (all common: read first, into ``a``), then each pair of
    # common terms, unless ``a`` is full: when ``budget`` rows or more hold every term,
    # more still hold each pair, and a pair's first ``budget`` is an arbitrary sample of
    # them, while intersecting two common terms' index entries is the costliest read
    # here. (Below that, a pair is read: ts_rank weighs length, so a short row holding
    # two terms can outrank a long one holding all.)
    every = len(terms) > 2
    every_args: list[Any] = []
    every_cte = ""
    if every:
        rows_of_all = joint.format(among="", common=len(terms), enough="")
        every_cte = f"a AS MATERIALIZED {rows_of_all}, "
        every_args = [all_of(terms, label), *params]
    enough = f" AND (SELECT count(*) FROM a) < {cap}" if every else ""
    parts, joint_args = [], []
    for group in itertools.combinations(range(len(terms)), 2):
        among = f" AND t IN ({group[0]}, {group[1]})"
        parts.append(" UNION ALL " + joint.format(among=among, common=2, enough=enough))
        joint_args += [all_of([terms[i] for i in group], label), *params]
    sql = (
        f"WITH m AS MATERIALIZED ({matches}), "
        "n AS (SELECT t, count(*) AS hits FROM m GROUP BY t), "
        f"{every_cte}"
        f"w AS (SELECT EXISTS (SELECT 1 FROM n WHERE hits >= {cap}) AND NOT EXISTS "
        f"(SELECT 1 FROM n WHERE hits < {cap} AND hits >= %s) AS widen) "
        f"SELECT id, max(ts_rank(%s::float4[], search, to_tsquery('{TS_CONFIG}', %s), 1)) "
        "AS score FROM (SELECT id, search FROM m "
        f"WHERE t IN (SELECT t FROM n WHERE hits < {cap}) OR (SELECT widen FROM w)"
        f"{' UNION ALL SELECT id, search FROM a' if every else ''}"
        f"{''.join(parts)}) c "
        "GROUP BY id ORDER BY score DESC, id LIMIT %s"
    )
    return sql, [*args, *every_args, limit, weights, any_of(terms, label), *joint_args, limit]
