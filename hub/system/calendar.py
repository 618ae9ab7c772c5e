"""The WorkingDays adapter: the only place StopHub reads the official Chinese holiday calendar.

Which days are working days is published by the State Council each year, public holidays and
make-up working days (调休) alike. Two sources, in this order:

1. the policy file's `[calendar.YEAR]` tables (hub/system/policy.py reads them): a duty
   officer types a year's notice in the day it is published, with no release to wait for;
2. the `chinesecalendar` package (import name `chinese_calendar`), which knows the years it
   was released with.

For a year neither has, this adapter falls back to another WorkingDays (Monday to Friday by
default) and logs a warning, once per year; `knows` is False for its days, so deadlines
counted over them are marked as estimates, and `calendar_status` says so where operators look
(`serve`'s start, the `stophub_calendar_official` metric, the board).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import date

import chinese_calendar

from hub.domain.workdays import Arrangement, WeekdaysOnly, WorkingDays, year_known

log = logging.getLogger(__name__)

PACKAGE = f"chinesecalendar {getattr(chinese_calendar, '__version__', '(unknown version)')}"


class ChineseWorkingDays:
    """Chinese working days: the policy file's arrangements first, then
    `chinese_calendar.is_workday`, then a fallback for years neither has data for."""

    def __init__(
        self, arrangements: Iterable[Arrangement] = (), *, fallback: WorkingDays | None = None
    ) -> None:
        self.arrangements = {a.year: a for a in arrangements}
        # A notice may name days of the year before its own (a New Year holiday that begins
        # in December): those answer from it even where that year has no table.
        self._named: dict[date, bool] = {}
        for arrangement in self.arrangements.values():
            self._named.update(dict.fromkeys(arrangement.days_off, False))
            self._named.update(dict.fromkeys(arrangement.working_days, True))
        self._fallback: WorkingDays = fallback if fallback is not None else WeekdaysOnly()
        self._warned_years: set[int] = set()
        self._lock = threading.Lock()

    def is_working_day(self, day: date) -> bool:
        official = self._official(day)
        if official is not None:
            return official
        self._warn_once(day.year)
        return self._fallback.is_working_day(day)

    def knows(self, day: date) -> bool:
        return self._official(day) is not None

    def _official(self, day: date) -> bool | None:
        """The official answer for `day`, or None when neither source has data for it."""
        named = self._named.get(day)
        if named is not None:
            return named
        arrangement = self.arrangements.get(day.year)
        if arrangement is not None:
            return arrangement.answer(day)
        return _package(day)

    def _warn_once(self, year: int) -> None:
        with self._lock:
            if year in self._warned_years:
                return
            self._warned_years.add(year)
        if isinstance(self._fallback, WeekdaysOnly):
            assumption = "assuming Monday to Friday are working days, with no holidays"
        else:
            assumption = f"using the fallback calendar {type(self._fallback).__name__}"
        log.warning(
            "no official Chinese holiday calendar for %d (not in the policy file, not in %s); "
            "%s for %d: deadlines that year ignore public holidays and make-up working days "
            "and are marked estimated. Add [calendar.%d] to the policy file from the State "
            "Council's notice",
            year,
            PACKAGE,
            assumption,
            year,
            year,
        )


def _package(day: date) -> bool | None:
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        return None


def missing_years(calendar: WorkingDays, today: date) -> list[int]:
    """Of the year of `today` and the next, those `calendar` has no official data for."""
    return [year for year in (today.year, today.year + 1) if not year_known(calendar, year)]


def calendar_status(calendar: WorkingDays, today: date) -> str | None:
    """One line for operators (the start of `serve`, the board) while the current or the next
    year has no official holiday calendar; None when both have one. `today` is the local date
    in China."""
    missing = missing_years(calendar, today)
    if not missing:
        return None
    years = " and ".join(str(y) for y in missing)
    tables = " and ".join(f"[calendar.{y}]" for y in missing)
    return (
        f"no official holiday calendar for {years}: working-day deadlines there count Monday "
        f"to Friday and are marked estimated; add {tables} to the policy file from the State "
        "Council's notice"
    )
