"""The WorkingDays adapter: the only place StopHub reads the official Chinese holiday calendar.

The data come from the `chinesecalendar` package (import name `chinese_calendar`), which
carries the State Council's yearly holiday arrangements, public holidays and make-up working
days (调休) alike. It only knows the years it was released with; for any other year this adapter
falls back to another WorkingDays (Monday to Friday by default) and logs a warning, once per
year, so that operators upgrade the package when the next year's arrangement is published.
"""

from __future__ import annotations

import logging
import threading
from datetime import date

import chinese_calendar

from hub.domain.workdays import WeekdaysOnly, WorkingDays

log = logging.getLogger(__name__)


class ChineseWorkingDays:
    """Chinese working days from `chinese_calendar.is_workday`, with a fallback for years the
    installed package has no data for."""

    def __init__(self, *, fallback: WorkingDays | None = None) -> None:
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

    @staticmethod
    def _official(day: date) -> bool | None:
        """The official answer for `day`, or None when the package has no data for its year."""
        try:
            return bool(chinese_calendar.is_workday(day))
        except NotImplementedError:
            return None

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
            "the official Chinese holiday calendar for %d is not installed (chinesecalendar %s); "
            "%s for %d: deadlines that year ignore public holidays and make-up working days. "
            "Upgrade chinesecalendar",
            year,
            getattr(chinese_calendar, "__version__", "unknown version"),
            assumption,
            year,
        )
