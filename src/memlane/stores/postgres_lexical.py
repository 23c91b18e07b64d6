"""Lexical search on PostgreSQL: the statements, built by pure functions.

PostgreSQL has no top-k index for ``ts_rank``: ranking a query reads and scores every row
that matches it. A word found in 40 % of a user's million memories makes that 400,000
rows and over 200 ms a query (bench/scale_pg.md). So one statement reads each query
term's matches, stopping at ``budget`` rows a term (at most terms x budget rows, each
read once), and ranks:

- every match of the terms below the budget (*rare* terms): a query whose terms are all
  rare ranks exactly the rows it did before, all of them;
- a match of a term at the budget (*common*) only where it also holds a rare term, unless
  no rare term has ``limit`` matches: then the common terms' first ``budget`` matches
  and the first ``budget`` rows holding every query term, and two of them (in the order
  the scan finds them, not by score: bounded samples) widen the set.

Rare terms first is BM25's preference (a rarer term says more: its IDF). ``ts_rank`` has
no IDF and still orders the candidates, with the weights
:class:`~memlane.ports.store.LexicalSearch` asks for.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

TS_CONFIG = "english"

LEXICAL_BUDGET = 1_000
"""Matches read per term before it is *common* (and the size of its sample); see
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


def any_two_of(terms: Sequence[str], label: str) -> str:
    """A ``to_tsquery`` expression matching rows that hold at least two of ``terms``."""
    pairs = itertools.combinations([term_query(t, label) for t in terms], 2)
    return " | ".join(f"({a} & {b})" for a, b in pairs)


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
    than ``budget`` is rare: its rows are all there. When a term is common and no rare
    term has ``limit`` matches (``w``), the common terms' rows (samples) join the
    candidates, and so do the first ``budget`` rows holding every term and those holding
    two (read only then)."""
    cap = max(int(budget), int(limit))
    one = (
        "(SELECT {i} AS t, r.id, r.search FROM records r WHERE "
        f"r.search @@ to_tsquery('{TS_CONFIG}', %s) AND {where} LIMIT {cap})"
    )
    args: list[Any] = []
    for t in terms:
        args += [term_query(t, label), *params]
    matches = " UNION ALL ".join(one.format(i=i) for i in range(len(terms)))
    widened = (
        " UNION ALL (SELECT r.id, r.search FROM records r WHERE (SELECT widen FROM w) "
        f"AND r.search @@ to_tsquery('{TS_CONFIG}', %s) AND {where} LIMIT {cap})"
    )
    # Rows holding every term, then rows holding two: the best a sample can hold.
    combos = [all_of(terms, label)] if len(terms) > 2 else []
    combos += [any_two_of(terms, label)] if len(terms) > 1 else []
    combo_args = [a for q in combos for a in (q, *params)]
    sql = (
        f"WITH m AS MATERIALIZED ({matches}), "
        "n AS (SELECT t, count(*) AS hits FROM m GROUP BY t), "
        f"w AS (SELECT EXISTS (SELECT 1 FROM n WHERE hits >= {cap}) AND NOT EXISTS "
        f"(SELECT 1 FROM n WHERE hits < {cap} AND hits >= %s) AS widen) "
        f"SELECT id, max(ts_rank(%s::float4[], search, to_tsquery('{TS_CONFIG}', %s), 1)) "
        "AS score FROM (SELECT id, search FROM m "
        f"WHERE t IN (SELECT t FROM n WHERE hits < {cap}) OR (SELECT widen FROM w)"
        f"{widened * len(combos)}) c "
        "GROUP BY id ORDER BY score DESC, id LIMIT %s"
    )
    return sql, [*args, limit, weights, any_of(terms, label), *combo_args, limit]
