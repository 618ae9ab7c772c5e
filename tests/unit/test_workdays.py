"""The working-day calendar: add_working_days / working_days_between over real Chinese holidays.

Every date used below is checked against the installed `chinese_calendar` package in
test_calendar_facts_match_the_library, so that a changed or wrong data package shows up there
first, with the date and the holiday named, rather than as a puzzling deadline further down.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time, timedelta, timezone

import chinese_calendar  # type: ignore[import-untyped]
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.domain.workdays import (
    CHINA_TZ,
    WeekdaysOnly,
    add_working_days,
    working_days_between,
)
from hub.system.calendar import ChineseWorkingDays

CAL = ChineseWorkingDays()
US_EASTERN_STANDARD = timezone(timedelta(hours=-5))


def cst(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    """A local time in China (UTC+8)."""
    return datetime(y, m, d, hh, mm, tzinfo=CHINA_TZ)


def midnight_cst(y: int, m: int, d: int) -> datetime:
    """00:00 China time of the given day, i.e. the end (24:00) of the day before, in UTC."""
    return cst(y, m, d).astimezone(UTC)


# (day, working?, why) — the official arrangements as published by the State Council.
CALENDAR_FACTS: list[tuple[date, bool, str]] = [
    # Spring Festival 2025: 28 Jan – 4 Feb off; Sun 26 Jan and Sat 8 Feb are make-up days.
    (date(2025, 1, 23), True, "Thursday, ordinary working day"),
    (date(2025, 1, 24), True, "Friday, ordinary working day"),
    (date(2025, 1, 25), False, "Saturday, ordinary weekend"),
    (date(2025, 1, 26), True, "Sunday, make-up working day for Spring Festival 2025"),
    (date(2025, 1, 27), True, "Monday, last working day before Spring Festival 2025"),
    (date(2025, 1, 28), False, "Spring Festival 2025 (Chinese New Year's Eve)"),
    (date(2025, 2, 1), False, "Spring Festival 2025 (Saturday inside the holiday)"),
    (date(2025, 2, 4), False, "Spring Festival 2025, last day off"),
    (date(2025, 2, 5), True, "Wednesday, first working day after Spring Festival 2025"),
    (date(2025, 2, 8), True, "Saturday, make-up working day for Spring Festival 2025"),
    (date(2025, 2, 9), False, "Sunday, ordinary weekend"),
    # National Day + Mid-Autumn 2025: 1–8 Oct off; Sun 28 Sep and Sat 11 Oct are make-up days.
    (date(2025, 9, 26), True, "Friday, ordinary working day"),
    (date(2025, 9, 27), False, "Saturday, ordinary weekend"),
    (date(2025, 9, 28), True, "Sunday, make-up working day for National Day 2025"),
    (date(2025, 9, 30), True, "Tuesday, last working day before National Day 2025"),
    (date(2025, 10, 1), False, "National Day 2025"),
    (date(2025, 10, 6), False, "Mid-Autumn Festival 2025, inside the National Day break"),
    (date(2025, 10, 8), False, "National Day 2025, last day off"),
    (date(2025, 10, 9), True, "Thursday, first working day after National Day 2025"),
    (date(2025, 10, 11), True, "Saturday, make-up working day for National Day 2025"),
    (date(2025, 10, 12), False, "Sunday, ordinary weekend"),
    # Spring Festival 2026: 15–23 Feb off; Sat 14 Feb and Sat 28 Feb are make-up days.
    (date(2026, 2, 13), True, "Friday, ordinary working day"),
    (date(2026, 2, 14), True, "Saturday, make-up working day for Spring Festival 2026"),
    (date(2026, 2, 15), False, "Spring Festival 2026, first day off"),
    (date(2026, 2, 23), False, "Spring Festival 2026, last day off (a Monday)"),
    (date(2026, 2, 24), True, "Tuesday, first working day after Spring Festival 2026"),
    (date(2026, 2, 26), True, "Thursday, ordinary working day"),
    (date(2026, 2, 27), True, "Friday, ordinary working day"),
    (date(2026, 2, 28), True, "Saturday, make-up working day for Spring Festival 2026"),
    (date(2026, 3, 1), False, "Sunday, ordinary weekend"),
    # Mid-Autumn 2026: 25–27 Sep off (Fri–Sun). National Day 2026: 1–7 Oct off;
    # the library has Sun 20 Sep and Sat 10 Oct as the make-up working days.
    (date(2026, 9, 18), True, "Friday, ordinary working day"),
    (date(2026, 9, 19), False, "Saturday, ordinary weekend"),
    (date(2026, 9, 20), True, "Sunday, make-up working day for National Day 2026"),
    (date(2026, 9, 24), True, "Thursday, last working day before Mid-Autumn 2026"),
    (date(2026, 9, 25), False, "Mid-Autumn Festival 2026 (a Friday)"),
    (date(2026, 9, 28), True, "Monday, working day between Mid-Autumn and National Day 2026"),
    (date(2026, 9, 30), True, "Wednesday, last working day before National Day 2026"),
    (date(2026, 10, 1), False, "National Day 2026"),
    (date(2026, 10, 7), False, "National Day 2026, last day off"),
    (date(2026, 10, 8), True, "Thursday, first working day after National Day 2026"),
    (date(2026, 10, 10), True, "Saturday, make-up working day for National Day 2026"),
    (date(2026, 10, 11), False, "Sunday, ordinary weekend"),
]


@pytest.mark.parametrize(("day", "working", "why"), CALENDAR_FACTS, ids=lambda v: str(v))
def test_calendar_facts_match_the_library(day: date, working: bool, why: str) -> None:
    assert chinese_calendar.is_workday(day) is working, why
    assert CAL.knows(day)
    assert CAL.is_working_day(day) is working, why


# --- add_working_days over real holidays ---------------------------------------------------


@pytest.mark.parametrize(
    ("start", "days", "deadline"),
    [
        # Fri 24 Jan 2025, 3 working days: Sun 26 Jan (make-up), Mon 27 Jan, then Spring
        # Festival 28 Jan – 4 Feb, Wed 5 Feb. Ends at 24:00 on 5 Feb.
        (cst(2025, 1, 24, 10), 3, midnight_cst(2025, 2, 6)),
        # ... and 7: Thu 6, Fri 7, Sat 8 Feb (make-up), Mon 10 Feb.
        (cst(2025, 1, 24, 10), 7, midnight_cst(2025, 2, 11)),
        # Fri 26 Sep 2025, 3: Sun 28 Sep (make-up), Mon 29, Tue 30 Sep — before the break.
        (cst(2025, 9, 26, 15), 3, midnight_cst(2025, 10, 1)),
        # ... and 4: National Day 1–8 Oct is skipped, Thu 9 Oct.
        (cst(2025, 9, 26, 15), 4, midnight_cst(2025, 10, 10)),
        # Tue 30 Sep 2025, 3: Thu 9, Fri 10, Sat 11 Oct (make-up).
        (cst(2025, 9, 30, 9), 3, midnight_cst(2025, 10, 12)),
        # Fri 13 Feb 2026, 1: Sat 14 Feb (make-up for Spring Festival 2026).
        (cst(2026, 2, 13, 11), 1, midnight_cst(2026, 2, 15)),
        # ... and 2: Spring Festival 15–23 Feb is skipped, Tue 24 Feb.
        (cst(2026, 2, 13, 11), 2, midnight_cst(2026, 2, 25)),
        # Thu 26 Feb 2026, 2: Fri 27, Sat 28 Feb (make-up).
        (cst(2026, 2, 26, 11), 2, midnight_cst(2026, 3, 1)),
        # Fri 18 Sep 2026, 1: Sun 20 Sep (make-up for National Day 2026).
        (cst(2026, 9, 18, 11), 1, midnight_cst(2026, 9, 21)),
        # Thu 24 Sep 2026, 1: Mid-Autumn 25–27 Sep is skipped, Mon 28 Sep.
        (cst(2026, 9, 24, 11), 1, midnight_cst(2026, 9, 29)),
        # Wed 30 Sep 2026, 3: National Day 1–7 Oct skipped; Thu 8, Fri 9, Sat 10 Oct (make-up).
        (cst(2026, 9, 30, 11), 3, midnight_cst(2026, 10, 11)),
    ],
    ids=lambda v: v.isoformat() if isinstance(v, datetime) else str(v),
)
def test_deadlines_across_real_holidays(start: datetime, days: int, deadline: datetime) -> None:
    result = add_working_days(start, days, CAL)
    assert result == deadline
    assert result.tzinfo is UTC


def test_the_deadline_of_the_brief_example_in_local_time() -> None:
    result = add_working_days(cst(2025, 1, 24, 10), 3, CAL)
    assert result.astimezone(CHINA_TZ).isoformat() == "2025-02-06T00:00:00+08:00"
    assert result.isoformat() == "2025-02-05T16:00:00+00:00"


def test_a_decision_on_a_holiday_counts_from_the_next_working_day() -> None:
    # Sat 1 Feb 2025 is inside Spring Festival; the first working day after it is Wed 5 Feb.
    assert add_working_days(cst(2025, 2, 1, 12), 1, CAL) == midnight_cst(2025, 2, 6)
    # National Day 2025 (Fri 3 Oct): 2 working days are Thu 9 and Fri 10 Oct.
    assert add_working_days(cst(2025, 10, 3, 12), 2, CAL) == midnight_cst(2025, 10, 11)


def test_the_decision_day_never_counts_even_when_it_is_a_working_day() -> None:
    # Sun 26 Jan 2025 is a make-up working day; 1 working day after it is Mon 27 Jan.
    assert add_working_days(cst(2025, 1, 26, 8), 1, CAL) == midnight_cst(2025, 1, 28)
    # Decided at 00:00:00 exactly on Mon 3 Mar 2025: still Tue 4 Mar.
    assert add_working_days(cst(2025, 3, 3), 1, CAL) == midnight_cst(2025, 3, 5)


def test_one_working_day_on_an_ordinary_week() -> None:
    # Mon 3 Mar 2025 → Tue 4 Mar; Fri 7 Mar 2025 → Mon 10 Mar (ordinary weekend skipped).
    assert add_working_days(cst(2025, 3, 3, 14), 1, CAL) == midnight_cst(2025, 3, 5)
    assert add_working_days(cst(2025, 3, 7, 14), 1, CAL) == midnight_cst(2025, 3, 11)


def test_2359_and_0001_local_time_are_different_decision_days() -> None:
    # Thu 23 Jan 2025 at 23:59: the 1st working day after is Fri 24 Jan.
    assert add_working_days(cst(2025, 1, 23, 23, 59), 1, CAL) == midnight_cst(2025, 1, 25)
    # Fri 24 Jan 2025 at 00:01: the 1st working day after is Sun 26 Jan (make-up).
    assert add_working_days(cst(2025, 1, 24, 0, 1), 1, CAL) == midnight_cst(2025, 1, 27)


def test_the_local_day_is_taken_in_china_time_not_utc() -> None:
    # 15:59 UTC on Thu 23 Jan is 23:59 in China: still Thursday.
    thursday = datetime(2025, 1, 23, 15, 59, tzinfo=UTC)
    assert add_working_days(thursday, 1, CAL) == midnight_cst(2025, 1, 25)
    # 16:30 UTC on Thu 23 Jan is already 00:30 on Fri 24 Jan in China.
    friday = datetime(2025, 1, 23, 16, 30, tzinfo=UTC)
    assert add_working_days(friday, 1, CAL) == midnight_cst(2025, 1, 27)
    # The same instant expressed in another offset gives the same answer.
    assert add_working_days(friday.astimezone(US_EASTERN_STANDARD), 1, CAL) == midnight_cst(
        2025, 1, 27
    )


def test_another_tz_moves_both_the_decision_day_and_the_end_of_day() -> None:
    # In UTC, 16:30 on Thu 23 Jan 2025 is still Thursday; the deadline is 24:00 UTC on Fri.
    start = datetime(2025, 1, 23, 16, 30, tzinfo=UTC)
    assert add_working_days(start, 1, CAL, tz=UTC) == datetime(2025, 1, 25, tzinfo=UTC)


@pytest.mark.parametrize("days", [0, -1, -10])
def test_days_must_be_at_least_one(days: int) -> None:
    with pytest.raises(ValueError, match="days must be >= 1"):
        add_working_days(cst(2025, 3, 3, 9), days, CAL)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        add_working_days(datetime(2025, 3, 3, 9), 1, CAL)
    with pytest.raises(ValueError, match="timezone-aware"):
        working_days_between(datetime(2025, 3, 3, 9), cst(2025, 3, 4), CAL)


def test_a_calendar_without_working_days_fails_instead_of_looping() -> None:
    class NeverWorking:
        def is_working_day(self, day: date) -> bool:
            return False

        def knows(self, day: date) -> bool:
            return True

    with pytest.raises(ValueError, match="no working day"):
        add_working_days(cst(2025, 3, 3), 1, NeverWorking())


# --- working_days_between -------------------------------------------------------------------


def test_working_days_between_over_spring_festival_2025() -> None:
    # (Fri 24 Jan, Thu 6 Feb]: Sun 26, Mon 27 Jan, Wed 5, Thu 6 Feb.
    assert working_days_between(cst(2025, 1, 24, 10), cst(2025, 2, 6, 10), CAL) == 4
    # Through Sat 8 Feb (make-up) and Sun 9 Feb: + Fri 7, Sat 8 Feb.
    assert working_days_between(cst(2025, 1, 24, 10), cst(2025, 2, 9, 23, 59), CAL) == 6


def test_working_days_between_inside_a_holiday_is_zero() -> None:
    # (Tue 30 Sep 2025, Wed 8 Oct 2025]: the whole National Day break.
    assert working_days_between(cst(2025, 9, 30, 18), cst(2025, 10, 8, 23, 59), CAL) == 0


def test_working_days_between_the_same_day_or_backwards_is_zero() -> None:
    assert working_days_between(cst(2025, 3, 3, 9), cst(2025, 3, 3, 23, 59), CAL) == 0
    assert working_days_between(cst(2025, 3, 5, 9), cst(2025, 3, 3, 9), CAL) == 0


def test_working_days_between_uses_local_days() -> None:
    # 16:30 UTC Thu 23 Jan 2025 = 00:30 Fri 24 Jan in China: Friday counts.
    start = cst(2025, 1, 22, 12)
    assert working_days_between(start, datetime(2025, 1, 23, 15, 59, tzinfo=UTC), CAL) == 1
    assert working_days_between(start, datetime(2025, 1, 23, 16, 30, tzinfo=UTC), CAL) == 2


def test_elapsed_working_days_reach_the_deadline_exactly() -> None:
    start = cst(2025, 1, 24, 10)
    deadline = add_working_days(start, 3, CAL)
    assert working_days_between(start, deadline - timedelta(microseconds=1), CAL) == 3


# --- the fallback for years the library does not cover -------------------------------------


def test_weekdays_only() -> None:
    weekdays = WeekdaysOnly()
    # Mon 3 Mar 2025 … Sun 9 Mar 2025.
    assert [weekdays.is_working_day(date(2025, 3, d)) for d in range(3, 10)] == [
        True,
        True,
        True,
        True,
        True,
        False,
        False,
    ]
    assert weekdays.knows(date(1999, 1, 1))
    # It knows nothing of holidays: Spring Festival 2025 Tue 28 Jan counts as working.
    assert weekdays.is_working_day(date(2025, 1, 28))


def test_knows_the_years_the_library_covers() -> None:
    assert CAL.knows(date(2004, 1, 1))
    assert CAL.knows(date(2026, 12, 31))
    assert not CAL.knows(date(2003, 12, 31))
    assert not CAL.knows(date(2027, 1, 1))
    with pytest.raises(NotImplementedError):
        chinese_calendar.is_workday(date(2027, 1, 4))


def test_2027_falls_back_to_weekdays_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    calendar = ChineseWorkingDays()
    with caplog.at_level(logging.WARNING, logger="hub.system.calendar"):
        # Fri 1 Jan 2027 will surely be New Year's Day, but without data it is a weekday.
        assert calendar.is_working_day(date(2027, 1, 1))
        assert not calendar.is_working_day(date(2027, 1, 2))  # Saturday
        assert not calendar.is_working_day(date(2027, 1, 3))  # Sunday
        assert calendar.is_working_day(date(2027, 1, 4))  # Monday
        # Thu 31 Dec 2026 (official data) → 1 working day: Fri 1 Jan 2027 under the fallback.
        assert add_working_days(cst(2026, 12, 31, 10), 1, calendar) == midnight_cst(2027, 1, 2)
        # Fri 8 Jan 2027 → 1 working day: Mon 11 Jan 2027.
        assert add_working_days(cst(2027, 1, 8, 10), 1, calendar) == midnight_cst(2027, 1, 12)
        # knows() asks, it does not warn.
        assert not calendar.knows(date(2027, 6, 1))
    warnings = [r for r in caplog.records if r.name == "hub.system.calendar"]
    assert len(warnings) == 1
    record = warnings[0]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "2027" in message
    assert "not in the policy file" in message
    assert "Monday to Friday" in message
    assert "estimated" in message
    # What to do: type the State Council's notice into the policy file.
    assert "Add [calendar.2027] to the policy file" in message

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hub.system.calendar"):
        calendar.is_working_day(date(2027, 3, 1))  # 2027 again: silent
        calendar.is_working_day(date(2028, 3, 1))  # a new year: one more warning
    warnings = [r for r in caplog.records if r.name == "hub.system.calendar"]
    assert len(warnings) == 1
    assert "2028" in warnings[0].getMessage()


def test_a_custom_fallback_is_used_and_named(caplog: pytest.LogCaptureFixture) -> None:
    class EveryDay:
        def is_working_day(self, day: date) -> bool:
            return True

        def knows(self, day: date) -> bool:
            return False

    calendar = ChineseWorkingDays(fallback=EveryDay())
    with caplog.at_level(logging.WARNING, logger="hub.system.calendar"):
        assert calendar.is_working_day(date(2027, 1, 2))  # a Saturday
        # Official data still wins where there is some: Tue 28 Jan 2025 is Spring Festival.
        assert not calendar.is_working_day(date(2025, 1, 28))
    assert ["EveryDay" in r.getMessage() for r in caplog.records] == [True]


# --- properties ----------------------------------------------------------------------------


@given(
    start=st.datetimes(
        min_value=datetime(2025, 1, 1),
        max_value=datetime(2026, 12, 31, 23, 59, 59, 999999),
        timezones=st.sampled_from([CHINA_TZ, UTC, US_EASTERN_STANDARD]),
    ),
    n=st.integers(min_value=1, max_value=10),
)
def test_deadline_properties(start: datetime, n: int) -> None:
    result = add_working_days(start, n, CAL)
    local = result.astimezone(CHINA_TZ)
    last_day = local.date() - timedelta(days=1)  # the n-th working day

    assert result.utcoffset() == timedelta(0)
    assert local.time() == time(0)
    assert result > start
    assert CAL.is_working_day(last_day)
    # Exactly n working days in (start's local day, the day before the deadline's day] ...
    assert working_days_between(start, result - timedelta(microseconds=1), CAL) == n
    # ... of which the last is the n-th: one day earlier there were only n - 1.
    assert working_days_between(start, result - timedelta(days=1, microseconds=1), CAL) == n - 1
