"""Time expressions in a memory's text, resolved against the memory's own date."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from memlane.when import resolve

SAID = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)  # a Monday


def _read(text: str, said: datetime = SAID) -> list[tuple[str, str, str, str]]:
    return [
        (s.unit, s.start.date().isoformat(), s.end.date().isoformat(), s.words())
        for s in resolve(text, said)
    ]


@pytest.mark.parametrize(
    ("text", "unit", "start", "end", "words"),
    [
        ("I went to a support group yesterday.", "day", "2023-05-07", "2023-05-08", "7 May 2023"),
        ("It was loud last night.", "day", "2023-05-07", "2023-05-08", "7 May 2023"),
        ("We are seeing it tonight.", "day", "2023-05-08", "2023-05-09", "8 May 2023"),
        ("The concert is tomorrow.", "day", "2023-05-09", "2023-05-10", "9 May 2023"),
        ("We went camping last week.", "week", "2023-05-01", "2023-05-08", "May 2023"),
        ("I ran a race last Saturday.", "day", "2023-05-06", "2023-05-07", "6 May 2023"),
        ("Two weekends ago we hiked.", "weekend", "2023-04-29", "2023-05-01", "April 2023"),
        ("This weekend I visit mom.", "weekend", "2023-05-13", "2023-05-15", "May 2023"),
        ("A conference next month!", "month", "2023-06-01", "2023-07-01", "June 2023"),
        ("I painted it last year.", "year", "2022-01-01", "2023-01-01", "2022"),
        ("I started this 3 years ago.", "year", "2020-01-01", "2021-01-01", "2020"),
        ("Two months ago I moved.", "month", "2023-03-01", "2023-04-01", "March 2023"),
        ("We met on 7 May 2023.", "day", "2023-05-07", "2023-05-08", "7 May 2023"),
        ("In 2022 I moved to Oslo.", "year", "2022-01-01", "2023-01-01", "2022"),
        ("Last August was hot.", "month", "2022-08-01", "2022-09-01", "August 2022"),
        ("I ran this morning.", "day", "2023-05-08", "2023-05-09", "8 May 2023"),
        ("We spoke last evening.", "day", "2023-05-07", "2023-05-08", "7 May 2023"),
        ("See you next morning.", "day", "2023-05-09", "2023-05-10", "9 May 2023"),
        ("It was the day before yesterday.", "day", "2023-05-06", "2023-05-07", "6 May 2023"),
        ("Back the day after tomorrow.", "day", "2023-05-10", "2023-05-11", "10 May 2023"),
        ("Seven weekends ago we hiked.", "weekend", "2023-03-25", "2023-03-27", "March 2023"),
    ],
)
def test_an_expression_becomes_the_period_it_names(
    text: str, unit: str, start: str, end: str, words: str
) -> None:
    assert _read(text) == [(unit, start, end, words)]


def test_a_day_and_month_without_a_year_is_the_nearest_one() -> None:
    said_in_june = datetime(2023, 6, 20, tzinfo=UTC)
    assert _read("I met her on May 3rd.", said_in_june)[0][1] == "2023-05-03"
    said_in_january = datetime(2024, 1, 10, tzinfo=UTC)
    assert _read("The party was on 28 December.", said_in_january)[0][1] == "2023-12-28"


@pytest.mark.parametrize(
    "text",
    [
        "I may go to the park.",  # the verb, not the month
        "I have been there for a year.",  # a duration
        "We talked at dinner for a second.",
        "We met on Friday.",  # past or next Friday: cannot be told
        "I have been painting recently.",  # vague
    ],
)
def test_words_that_name_no_period_are_left_alone(text: str) -> None:
    assert resolve(text, SAID) == ()


def test_several_expressions_in_order_and_a_naive_date_is_utc() -> None:
    text = "Yesterday I booked it; the trip is next month."
    spans = resolve(text, datetime(2023, 5, 8, 13, 56))
    assert [s.phrase.lower() for s in spans] == ["yesterday", "next month"]
    assert spans[0].start.tzinfo is UTC


def test_a_long_text_is_read_sentence_by_sentence_up_to_the_caps() -> None:
    """A document is parsed a sentence at a time (the parser's cost grows with the square
    of what it is given), up to MAX_CHARS characters and MAX_PERIODS periods."""
    from memlane.when import MAX_CHARS, MAX_PERIODS

    many = "I went to the store yesterday; next month we travel. " * 1000
    assert len(resolve(many, SAID)) == MAX_PERIODS
    late = "x" * MAX_CHARS + " We met yesterday."
    assert resolve(late, SAID) == ()
    run_on = "and then " * 200 + "yesterday we hiked"  # one 1,800-character sentence
    assert [s.phrase.lower() for s in resolve(run_on, SAID)] == ["yesterday"]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("We met ① weekends ago and ³ weekends ago", SAID),  # digits int() refuses
        ("I was there 200000 weekends ago, or 99999999999 weekends ago", SAID),
        ("yesterday, last year, last weekend", datetime(1, 1, 1, tzinfo=UTC)),
        (
            "tomorrow, next month, next year, Jan 1st, 29 February",
            datetime(9999, 12, 31, tzinfo=UTC),
        ),
    ],
)
def test_a_period_no_calendar_holds_is_left_out_and_nothing_raises(
    text: str, said: datetime
) -> None:
    for span in resolve(text, said):
        assert span.start < span.end


def test_a_text_built_to_be_slow_is_read_in_small_pieces() -> None:
    """parsedatetime's cost explodes on some stretches (9 s for 140 characters of
    "ago 1/1 ago 1/1 …"); memlane gives it a few words around each time word only, so
    the text's length or shape cannot make an add slow (no timing asserted: the reading
    is what is checked)."""
    spans = resolve("ago 1/1 " * 2500 + "yesterday", SAID)
    assert len(spans) <= 32


def test_a_memory_is_stored_whatever_its_text_says_about_time() -> None:
    from memlane import Filters, Memory
    from memlane.testing import FakeEmbedder

    with Memory("memory://", embedder=FakeEmbedder()) as m:
        end_of_time = datetime(9999, 12, 31, tzinfo=UTC)
        r = m.add("See you tomorrow, ① weekends ago", user_id="u", event_at=end_of_time)
        assert m.get(r.id, user_id="u").text == r.text
        m.add_messages("s", [("user", "200000 weekends ago"), ("user", "hi")], user_id="u")
        assert len(m.list(user_id="u", filters=Filters(session_id="s")).items) == 2


def test_a_rewrite_reads_time_against_the_memory_s_own_date_not_the_edit_s() -> None:
    from datetime import timedelta

    from memlane import Memory
    from memlane.testing import FakeEmbedder, FixedClock

    clock = FixedClock(SAID)
    with Memory("memory://", embedder=FakeEmbedder(), clock=clock) as m:
        r = m.add("I went there yesterday", user_id="u")
        clock.advance(days=60)
        edited = m.update(r.id, user_id="u", text="I went there yesterday!")
        assert edited.periods == r.periods
        assert r.period_bounds()[0][0] == SAID.replace(hour=0, minute=0) - timedelta(days=1)
