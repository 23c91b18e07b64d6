"""Time expressions in a memory's text, resolved against the memory's own date.

"I went to the support group yesterday", said on 8 May 2023, is about 7 May 2023. At
ingest memlane finds such expressions ("yesterday", "last week", "two weekends ago",
"next month", "last Friday", "3 years ago", "on 7 May 2023") and turns each into the
period it names, a :class:`TimeSpan` of a day, week, weekend, month or year; search then
matches the period in time windows and in the lexical index ("7 May 2023", "May 2023").

The parsing is `parsedatetime`'s (measured against the alternatives in
``bench/when.md``). memlane adds only what it gets wrong or lacks for memories: a period
rather than an instant (its accuracy flags say which unit), weekends, "last night" (which
it resolves against the wall clock, not the given date), years ("in 2022"), a day and
month without a year (the one nearest the memory's date, not always the next) and a filter
for words that are no time at all ("I may go", "a second", "dinner").
"""

from __future__ import annotations

import bisect
import itertools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any

from memlane.models import format_period, period_words

__all__ = ["TimeSpan", "resolve"]

UNITS = ("day", "weekend", "week", "month", "year")

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*"
_DAY_MONTH = rf"\b{_MONTH}\.? \d{{1,2}}(?:st|nd|rd|th)?\b|\b\d{{1,2}}(?:st|nd|rd|th)? {_MONTH}\b"
_RELATIVE = r"\b(?:yesterday|today|tonight|tomorrow|last|next|this|ago|past)\b"
_ANCHOR = re.compile(f"{_RELATIVE}|{_DAY_MONTH}", re.I)
"""What makes a match a point in time: a relative word, or a day with its month. A bare
month or weekday ("I may go", "on Friday"), a duration ("for a year") or a time of day
("at dinner") is not resolved: its period cannot be told without guessing."""
_YEAR = re.compile(r"\b(?:in|during|since|back in) ((?:19|20)\d\d)\b", re.I)
_WEEKEND = re.compile(r"\b(?:(last|this past|past|this|next) weekend|(\w+) weekends? ago)\b", re.I)
_NUMBERS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class TimeSpan:
    """The period ``[start, end)`` (UTC) an expression in a memory names."""

    start: datetime
    end: datetime
    unit: str
    """``day``, ``weekend``, ``week``, ``month`` or ``year``."""
    phrase: str
    """The words it was read from."""

    def words(self) -> str:
        """The period in words a search may use (:func:`memlane.models.period_words`):
        ``"7 May 2023"``, ``"May 2023"``, ``"2023"``."""
        return period_words(self.start, self.end)

    def iso(self) -> str:
        """The period as an ISO 8601 interval, as :attr:`MemoryRecord.periods` holds it."""
        return format_period(self.start, self.end)


MAX_CHARS = 20_000
"""How much of a memory's text is read for time expressions (a long document's first
pages)."""
MAX_PERIODS = 32
"""At most this many periods a memory (the first ones)."""
_WORDS = 3
"""Words either side of an anchor given to parsedatetime."""
_WINDOW = 96
"""The longest stretch parsedatetime is given at once (long words cut)."""
BUDGET_SECONDS = 0.05
"""Parsing stops starting new stretches after this long for one text: a text built to
be slow (thousands of "ago 1/1") may lose periods, never the memory or much time."""
_HALF_DAY = re.compile(
    r"\b(?:(this|last|next|tomorrow|yesterday) (?:morning|afternoon|evening|night|noon)|tonight)\b",
    re.I,
)
"""Parts of a day: parsedatetime reads these against the wall clock, not the given date."""
_DAY_NEXT_TO = re.compile(r"\bthe day (before yesterday|after tomorrow)\b", re.I)
_HALF_DAY_OFFSET = {"last": -1, "yesterday": -1, "next": 1, "tomorrow": 1}


def resolve(text: str, reference: datetime) -> tuple[TimeSpan, ...]:
    """Every time expression in ``text`` that names a period (the first
    :data:`MAX_PERIODS` in its first :data:`MAX_CHARS` characters), resolved against
    ``reference`` (when the text was said or written), in the order they appear. A
    period a calendar cannot hold (around the years 1 and 9999) is left out."""
    when = reference.astimezone(UTC) if reference.tzinfo else reference.replace(tzinfo=UTC)
    text = text[:MAX_CHARS]
    found: list[tuple[int, TimeSpan]] = []
    taken: list[tuple[int, int]] = []
    for start, end, span in _special(text, when.date()):
        found.append((start, span))
        taken.append((start, end))
    parsed: list[tuple[int, int, TimeSpan]] = []
    deadline = time.perf_counter() + BUDGET_SECONDS
    for lo, hi in _windows(text):
        if time.perf_counter() > deadline:
            break
        parsed.extend(
            (start + lo, end + lo, span) for start, end, span in _parsed(text[lo:hi], when)
        )
    # Where finds overlap (two stretches saw the same words), the longest phrase wins:
    # "this 3 years ago", not "this 3 years".
    for start, end, span in sorted(parsed, key=lambda p: (p[0] - p[1], p[0])):
        if not any(start < e and end > s for s, e in taken):
            found.append((start, span))
            taken.append((start, end))
    found.sort(key=lambda item: item[0])
    return tuple(span for _, span in found[:MAX_PERIODS])


def _windows(text: str) -> list[tuple[int, int]]:
    """Around each anchor (:data:`_ANCHOR`), the three words before it and the three after
    (at most :data:`_WINDOW` characters): all of the text parsedatetime is given. The
    phrases memlane resolves are that short ("three years ago", "last Friday", "on
    7 May 2023"), and parsedatetime's cost on longer stretches can explode (9 s for 140
    characters of "ago 1/1 ago 1/1 …"); on seven words it stays under a few ms."""
    anchors = list(itertools.islice(_ANCHOR.finditer(text), 2 * MAX_PERIODS))
    if not anchors:
        return []  # most memories: no time word, nothing to split into words
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    starts = [w[0] for w in words]
    out: list[tuple[int, int]] = []
    for m in anchors:
        first = max(0, bisect.bisect_right(starts, m.start()) - 1 - _WORDS)
        last = min(len(words) - 1, bisect.bisect_left(starts, m.end()) - 1 + _WORDS)
        lo = max(words[first][0], m.start() - _WINDOW // 2)
        hi = min(words[last][1], m.end() + _WINDOW // 2)
        if not out or (lo, hi) != out[-1]:
            out.append((lo, hi))
    return out


# ---------------------------------------------------------------------------- pieces


def _special(text: str, day: date) -> list[tuple[int, int, TimeSpan]]:
    """What parsedatetime lacks or misreads: weekends, parts of a day ("last night",
    "this morning"), "the day before yesterday", years. A period no calendar holds
    (around the years 1 and 9999) is left out."""
    readings: list[tuple[re.Match[str], Callable[[], TimeSpan | None]]] = []
    for m in _WEEKEND.finditer(text):
        readings.append((m, partial(_weekend_span, m, day)))
    for m in _HALF_DAY.finditer(text):
        offset = _HALF_DAY_OFFSET.get((m[1] or "").lower(), 0)
        readings.append((m, partial(_day_span, day, offset, m[0])))
    for m in _DAY_NEXT_TO.finditer(text):
        offset = -2 if m[1].lower().startswith("before") else 2
        readings.append((m, partial(_day_span, day, offset, m[0])))
    for m in _YEAR.finditer(text):
        readings.append((m, partial(_year_span, int(m[1]), m[0])))
    out = []
    for m, read in readings:
        try:
            span = read()
        except (ValueError, OverflowError):
            continue
        if span is not None:
            out.append((m.start(), m.end(), span))
    return out


def _weekend_span(m: re.Match[str], day: date) -> TimeSpan | None:
    saturday = _weekend(m[1], m[2], day)
    return None if saturday is None else _span(saturday, 2, "weekend", m[0])


def _day_span(day: date, offset: int, phrase: str) -> TimeSpan:
    return _span(day + timedelta(days=offset), 1, "day", phrase)


def _year_span(year: int, phrase: str) -> TimeSpan:
    start = date(year, 1, 1)
    return _span(start, (date(year + 1, 1, 1) - start).days, "year", phrase)


def _weekend(which: str | None, count: str | None, day: date) -> date | None:
    """The Saturday of the weekend named: ``which`` (last, this past, this, next) or
    ``count`` weekends ago, seen from ``day``."""
    monday = day - timedelta(days=day.weekday())
    last = monday - timedelta(days=2)  # the weekend just before this week
    if which is not None:
        word = which.lower()
        if word in ("last", "this past", "past"):
            return last  # also said on a weekend: the one before it
        return monday + timedelta(days=5 if word == "this" else 12)
    word = (count or "").lower()
    n = _NUMBERS.get(word) or (int(word) if word.isascii() and word.isdigit() else 0)
    return last - timedelta(days=7 * (n - 1)) if 0 < n <= 1000 else None


def _parsed(text: str, when: datetime) -> list[tuple[int, int, TimeSpan]]:
    """parsedatetime's finds that are points in time, as periods."""
    out: list[tuple[int, int, TimeSpan]] = []
    try:
        found = _calendar().nlp(text, sourceTime=_naive(when)) or ()
    except (ValueError, OverflowError):
        return out  # a date past what the calendar holds
    for at, context, start, end, phrase in found:
        if not _ANCHOR.search(phrase) or _HALF_DAY.search(phrase):
            continue  # no point in time, or a part of a day (read by _special)
        try:
            point = _nearest_year(at.date(), phrase, when.date())
            out.append((start, end, _period(point, _unit(context), phrase.strip())))
        except (ValueError, OverflowError):
            continue
    return out


def _unit(context: Any) -> str:
    """The unit parsedatetime's accuracy flags give a match; a time of day ("tonight",
    "this morning") is its day."""
    for flag, unit in (("ACU_DAY", "day"), ("ACU_WEEK", "week"), ("ACU_MONTH", "month")):
        if context.accuracy & getattr(context, flag):
            return unit
    return "year" if context.accuracy & context.ACU_YEAR else "day"


def _nearest_year(point: date, phrase: str, day: date) -> date:
    """A day and month said without a year is the one nearest ``day`` (parsedatetime
    takes the next): "on May 3rd", said in June 2023, was 3 May 2023."""
    if re.search(r"\b\d{4}\b", phrase) or not re.search(_DAY_MONTH, phrase, re.I):
        return point
    if re.search(_RELATIVE, phrase, re.I):
        return point
    options = []
    for year in (day.year - 1, day.year, day.year + 1):
        try:
            options.append(point.replace(year=year))
        except ValueError:  # 29 February
            continue
    return min(options, key=lambda d: abs((d - day).days), default=point)


def _period(point: date, unit: str, phrase: str) -> TimeSpan:
    """The ``unit`` around ``point``: the day, its Monday-to-Sunday week, month or year."""
    if unit == "week":
        return _span(point - timedelta(days=point.weekday()), 7, unit, phrase)
    if unit == "month":
        start = point.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
        return _span(start, (end - start).days, unit, phrase)
    if unit == "year":
        start = point.replace(month=1, day=1)
        return _span(start, (start.replace(year=start.year + 1) - start).days, unit, phrase)
    return _span(point, 1, unit, phrase)


def _span(start: date, days: int, unit: str, phrase: str) -> TimeSpan:
    begin = datetime(start.year, start.month, start.day, tzinfo=UTC)
    return TimeSpan(begin, begin + timedelta(days=days), unit, phrase)


def _naive(when: datetime) -> datetime:
    return when.replace(tzinfo=None)


_CALENDAR: Any = None


def _calendar() -> Any:
    """parsedatetime's calendar (English), built once."""
    global _CALENDAR
    if _CALENDAR is None:
        import parsedatetime

        _CALENDAR = parsedatetime.Calendar(version=parsedatetime.VERSION_CONTEXT_STYLE)
    return _CALENDAR
