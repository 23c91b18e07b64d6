"""How well time expressions in memories are resolved: memlane.when and the libraries it
was chosen among, on the relative expressions in LoCoMo's dev turns.

    .venv/bin/python bench/when.py [--data DIR] [--libraries dateparser,recognizers,...]

Every expression below that has one reading is found in the dev conversations' turns
(227 of them); its gold period is the reading a person gives it from the session date
(``gold``: "last week" is the Monday-to-Sunday week before the session's week, "last
Friday" the latest Friday before the session day, "next month" the calendar month after,
"N years ago" that calendar year ...). Vague ones ("recently", "the other day", "a few
weeks ago", "last summer") have no gold and are left out. A resolution is correct when
its period's middle (or the point a library returns) lies in the gold period. The other
libraries are scored only where installed (they are not memlane dependencies):
``pip install dateparser timefhuman recognizers-text-date-time "emoji<1.0"``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
DEFAULT_DATA = ROOT.parents[1] / "shared" / "data" / "locomo-dev"
D = dt.timedelta
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "ten": 10}
EXPRESSION = re.compile(
    r"\b(yesterday|today|tonight|tomorrow|last night|last (?:week|month|year|weekend|\w+day)"
    r"|this (?:week|month|year|weekend)|this past weekend|next (?:week|month|year|weekend|\w+day)"
    r"|\w+ (?:days?|weeks?|weekends?|months?|years?) ago|on \w+day)\b",
    re.I,
)
Period = tuple[dt.date, dt.date]
Resolver = Callable[[str, dt.datetime], list[tuple[int, int, dt.date, dt.date | None]]]


def month(year: int, m: int) -> dt.date:
    return dt.date(year + (m - 1) // 12, (m - 1) % 12 + 1, 1)


def gold(phrase: str, d: dt.date) -> Period | None:
    """The period a person reads ``phrase`` as, said on ``d``; None when vague."""
    p = phrase.lower()
    monday = d - D(days=d.weekday())
    fixed = {
        "yesterday": (d - D(1), d), "last night": (d - D(1), d),
        "today": (d, d + D(1)), "tonight": (d, d + D(1)), "tomorrow": (d + D(1), d + D(2)),
        "last week": (monday - D(7), monday), "this week": (monday, monday + D(7)),
        "next week": (monday + D(7), monday + D(14)),
        "last month": (month(d.year, d.month - 1), month(d.year, d.month)),
        "this month": (month(d.year, d.month), month(d.year, d.month + 1)),
        "next month": (month(d.year, d.month + 1), month(d.year, d.month + 2)),
        "last year": (dt.date(d.year - 1, 1, 1), dt.date(d.year, 1, 1)),
        "this year": (dt.date(d.year, 1, 1), dt.date(d.year + 1, 1, 1)),
        "last weekend": (monday - D(2), monday), "this past weekend": (monday - D(2), monday),
        "this weekend": (monday + D(5), monday + D(7)),
    }  # fmt: skip
    if p in fixed:
        return fixed[p]
    if m := re.fullmatch(r"(last|next|on) (\w+day)", p):
        if m[2] not in WEEKDAYS:
            return None
        w = WEEKDAYS.index(m[2])
        if m[1] == "next":
            x = d + D((w - d.weekday()) % 7 or 7)
        else:
            x = d - D((d.weekday() - w) % 7 or 7)
        return x, x + D(1)
    if m := re.fullmatch(r"(\w+) (day|week|weekend|month|year)s? ago", p):
        n = NUMBERS.get(m[1]) or (int(m[1]) if m[1].isdigit() else 0)
        if not n:
            return None
        if m[2] == "day":
            return d - D(n), d - D(n - 1)
        if m[2] == "week":
            return d - D(7 * n + 3), d - D(7 * n - 4)
        if m[2] == "weekend":
            saturday = monday - D(2) - D(7 * (n - 1))
            return saturday, saturday + D(2)
        if m[2] == "month":
            start = month(d.year, d.month - n)
            return start, month(start.year, start.month + 1)
        return dt.date(d.year - n, 1, 1), dt.date(d.year - n + 1, 1, 1)
    return None


def turns(data: Path) -> Iterator[tuple[str, dt.datetime]]:
    """(text, session time) of every turn of every conversation in ``data``."""
    for path in sorted(data.glob("*.json")):
        conv = json.loads(path.read_text())
        n = 1
        while f"session_{n}_date_time" in conv:
            when = dt.datetime.strptime(conv[f"session_{n}_date_time"], "%I:%M %p on %d %B, %Y")
            for turn in conv.get(f"session_{n}") or []:
                yield turn["text"], when
            n += 1


def cases(data: Path) -> list[tuple[str, dt.datetime, str, Period]]:
    """(turn text, session time, expression, gold period) for every expression with one."""
    out = []
    for text, when in turns(data):
        for m in EXPRESSION.finditer(text):
            period = gold(m[0], when.date())
            if period:
                out.append((text, when, m[0], period))
    return out


def as_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])


def memlane_when() -> Resolver:
    from memlane.when import resolve

    def run(text: str, base: dt.datetime) -> list[tuple[int, int, dt.date, dt.date | None]]:
        out = []
        for span in resolve(text, base.replace(tzinfo=dt.UTC)):
            start = text.lower().find(span.phrase.lower())
            out.append((start, start + len(span.phrase), span.start.date(), span.end.date()))
        return out

    return run


def parsedatetime_alone() -> Resolver:
    import parsedatetime

    cal = parsedatetime.Calendar(version=parsedatetime.VERSION_CONTEXT_STYLE)

    def run(text: str, base: dt.datetime) -> list[tuple[int, int, dt.date, dt.date | None]]:
        return [(s, e, as_date(d), None) for d, _, s, e, _ in cal.nlp(text, sourceTime=base) or ()]

    return run


def dateparser_search() -> Resolver:
    import dateparser.search

    settings = {"PREFER_DATES_FROM": "past"}

    def run(text: str, base: dt.datetime) -> list[tuple[int, int, dt.date, dt.date | None]]:
        found = dateparser.search.search_dates(
            text, languages=["en"], settings={**settings, "RELATIVE_BASE": base}
        )
        return [(text.find(t), text.find(t) + len(t), as_date(d), None) for t, d in found or ()]

    return run


def recognizers() -> Resolver:
    from recognizers_date_time import Culture, recognize_datetime

    def run(text: str, base: dt.datetime) -> list[tuple[int, int, dt.date, dt.date | None]]:
        out: list[tuple[int, int, dt.date, dt.date | None]] = []
        for r in recognize_datetime(text, Culture.English, reference=base):
            values = (r.resolution or {}).get("values") or []
            v = values[-1] if values else {}
            if "start" in v and "end" in v and re.match(r"\d{4}-", str(v["start"])):
                out.append((r.start, r.end + 1, as_date(v["start"]), as_date(v["end"])))
            elif re.match(r"\d{4}-\d\d-\d\d", str(v.get("value", ""))):
                out.append((r.start, r.end + 1, as_date(v["value"]), None))
        return out

    return run


def timefhuman_() -> Resolver:
    from timefhuman import tfhConfig, timefhuman

    def run(text: str, base: dt.datetime) -> list[tuple[int, int, dt.date, dt.date | None]]:
        out: list[tuple[int, int, dt.date, dt.date | None]] = []
        config = tfhConfig(now=base, return_matched_text=True)
        for _t, (s, e), d in timefhuman(text, config=config):
            if isinstance(d, tuple):
                out.append((s, e, as_date(d[0]), as_date(d[1])))
            elif isinstance(d, dt.date):
                out.append((s, e, as_date(d), None))
        return out

    return run


RESOLVERS = {
    "memlane.when": memlane_when,
    "parsedatetime": parsedatetime_alone,
    "dateparser": dateparser_search,
    "recognizers": recognizers,
    "timefhuman": timefhuman_,
}


def score(resolver: Resolver, found: list[tuple[str, dt.datetime, str, Period]]) -> str:
    right, misses = 0, Counter[str]()
    start = time.perf_counter()
    for text, base, phrase, (g0, g1) in found:
        s = text.find(phrase)
        hits = [r for r in resolver(text, base) if r[0] < s + len(phrase) and r[1] > s]
        if not hits:
            misses[f"{phrase.lower()} (not found)"] += 1
            continue
        a, b = hits[0][2], hits[0][3]
        middle = a if b is None or b <= a else a + (b - a) / 2
        if g0 <= middle < g1:
            right += 1
        else:
            misses[phrase.lower()] += 1
    ms = (time.perf_counter() - start) * 1000 / len(found)
    worst = ", ".join(f"{k} {v}" for k, v in misses.most_common(5))
    return f"| {right}/{len(found)} = {right / len(found):.3f} | {ms:.2f} | {worst} |"


def print_resolved(data: Path) -> None:
    """Every expression memlane.when resolves in every dev turn, by count: a word that is
    no time at all ("may", "a second") would show here."""
    from memlane.when import resolve

    seen: Counter[str] = Counter()
    count = 0
    for text, when in turns(data):
        count += 1
        seen.update(s.phrase.lower() for s in resolve(text, when))
    print(f"{sum(seen.values())} expressions resolved in {count} turns:")
    print(", ".join(f"{phrase} {count}" for phrase, count in seen.most_common()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--libraries", default=",".join(RESOLVERS))
    parser.add_argument(
        "--precision", action="store_true", help="list what memlane.when resolves in every turn"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.precision:
        print_resolved(args.data)
        return
    found = cases(args.data)
    print(f"{len(found)} expressions with one reading\n")
    print("| resolver | correct | ms per turn | most missed |\n|---|---|---|---|")
    for name in args.libraries.split(","):
        try:
            resolver = RESOLVERS[name]()
        except ImportError:
            print(f"| {name} | not installed | | |")
            continue
        print(f"| {name} {score(resolver, found)}")


if __name__ == "__main__":
    main()
