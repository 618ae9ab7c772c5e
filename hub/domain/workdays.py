"""Working-day arithmetic for deadlines such as the fund-return clock.

Chinese working days are not simply Monday to Friday: public holidays are days off, and some
weekend days are make-up working days (调休). Which days are which is published by the State
Council each year, so this module only does the arithmetic; the calendar itself is a
`WorkingDays` supplied by an adapter (hub.system.calendar.ChineseWorkingDays in
production, which reads a year's `Arrangement` from the policy file before the
chinesecalendar package). A deadline counted over days the calendar has no official data for
is an estimate, and `estimated_years` says which years made it one.

Pure: no I/O, no wall clock, no third-party imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from typing import Protocol

CHINA_TZ = timezone(timedelta(hours=8))
"""China Standard Time, UTC+8 all year (China has no daylight saving time)."""

# A real calendar never has anywhere near this many consecutive days off; hitting it means the
# WorkingDays implementation is broken, and looping forever would be worse than failing.
_MAX_CONSECUTIVE_DAYS_OFF = 366


class WorkingDays(Protocol):
    """Which calendar days are working days."""

    def is_working_day(self, day: date) -> bool:
        """True when `day` is a working day (including a make-up working day on a weekend)."""
        ...

    def knows(self, day: date) -> bool:
        """False when the calendar has no official data for the year of `day`, so that
        is_working_day answers from a fallback (a guess) for it."""
        ...


class WeekdaysOnly:
    """Monday to Friday are working days, with no holidays: the fallback when no official
    holiday calendar is available for a year."""

    def is_working_day(self, day: date) -> bool:
        return day.weekday() < 5

    def knows(self, day: date) -> bool:
        return True


@dataclass(frozen=True)
class Arrangement:
    """One year's official arrangement, as the State Council's notice gives it
    (国务院办公厅关于YYYY年部分节假日安排的通知): the days off (public holidays and the weekend days
    moved next to them, 放假调休) and the make-up working days (weekend days worked instead,
    上班). Every other day of `year` is a working day from Monday to Friday. A notice may name
    days of the December before its year (a New Year holiday that begins then)."""

    year: int
    notice: str
    days_off: frozenset[date]
    working_days: frozenset[date]

    def answer(self, day: date) -> bool | None:
        """Whether `day` is a working day by this arrangement; None for a day it does not
        cover (another year, not named in it)."""
        if day in self.days_off:
            return False
        if day in self.working_days:
            return True
        if day.year == self.year:
            return day.weekday() < 5
        return None


def year_known(calendar: WorkingDays, year: int) -> bool:
    """True when `calendar` has official data for every day of `year`."""
    day, end = date(year, 1, 1), date(year, 12, 31)
    while day <= end:
        if not calendar.knows(day):
            return False
        day += timedelta(days=1)
    return True


def estimated_years(
    start: datetime, deadline: datetime, calendar: WorkingDays, tz: tzinfo = CHINA_TZ
) -> tuple[int, ...]:
    """The years `calendar` has no official data for among the days add_working_days counted
    from `start` to `deadline` (the local days after the day of `start`, up to the deadline's
    last day): empty when the deadline stands on official data, else it is an estimate."""
    day = _local_day(start, tz) + timedelta(days=1)
    last = _local_day(deadline - timedelta(microseconds=1), tz)
    years: dict[int, None] = {}
    while day <= last:
        if not calendar.knows(day):
            years[day.year] = None
        day += timedelta(days=1)
    return tuple(years)


def _local_day(at: datetime, tz: tzinfo) -> date:
    if at.tzinfo is None or at.tzinfo.utcoffset(at) is None:
        raise ValueError("datetime must be timezone-aware")
    return at.astimezone(tz).date()


def add_working_days(
    start: datetime, days: int, calendar: WorkingDays, tz: tzinfo = CHINA_TZ
) -> datetime:
    """The deadline of "within `days` working days of `start`", as an aware UTC datetime.

    It is the end (24:00 local time in `tz`, i.e. 00:00 of the next day) of the `days`-th
    working day after the local calendar day of `start`. The day of `start` itself never
    counts, whether or not it is a working day, and whatever the time of day.
    """
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    day = _local_day(start, tz)
    remaining = days
    days_off = 0
    while True:
        day += timedelta(days=1)
        if calendar.is_working_day(day):
            remaining -= 1
            days_off = 0
            if remaining == 0:
                break
        else:
            days_off += 1
            if days_off > _MAX_CONSECUTIVE_DAYS_OFF:
                raise ValueError(
                    f"the working-day calendar has no working day in the "
                    f"{_MAX_CONSECUTIVE_DAYS_OFF} days before {day.isoformat()}"
                )
    end_of_day = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
    return end_of_day.astimezone(UTC)


def working_days_between(
    start: datetime, end: datetime, calendar: WorkingDays, tz: tzinfo = CHINA_TZ
) -> int:
    """The number of working days d with local_day(start) < d <= local_day(end), in `tz`.

    0 when `end` falls on the same local day as `start` or earlier. For a deadline returned by
    add_working_days(start, n, ...), working_days_between(start, deadline - 1µs) == n.
    """
    first = _local_day(start, tz) + timedelta(days=1)
    last = _local_day(end, tz)
    count = 0
    day = first
    while day <= last:
        if calendar.is_working_day(day):
            count += 1
        day += timedelta(days=1)
    return count
