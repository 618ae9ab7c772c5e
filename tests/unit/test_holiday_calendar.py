"""The official holiday calendar in the policy file (issue 19 item 22) and its display zone
(item 13).

A duty officer types a year's State Council notice into `[calendar.YEAR]`; the hub uses it
before the chinesecalendar package. A year neither has is warned about, counted Monday to
Friday, and the deadlines counted over it are marked estimated. A bad table is refused with
the line at fault, as every policy error is.

FAR is a year no chinesecalendar release will know for a long time, so these tests do not
change meaning the day the package learns 2027.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import chinese_calendar  # type: ignore[import-untyped]
import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from hub.cli import main
from hub.crypto.keys import PrivateKey, save_private_key
from hub.domain.clocks import PolicyError
from hub.domain.workdays import (
    CHINA_TZ,
    Arrangement,
    add_working_days,
    estimated_years,
    year_known,
)
from hub.observability.metrics import CalendarCollector
from hub.system.calendar import ChineseWorkingDays, calendar_status
from hub.system.policy import (
    DEFAULT_POLICY,
    display_zone,
    load_calendar,
    load_policy,
    read_policy,
)

FAR = 2035
SHIPPED = DEFAULT_POLICY.read_text(encoding="utf-8")
# The shipped clocks alone: the fixtures below add their own [calendar] and [display].
CLOCKS = SHIPPED[: SHIPPED.index("# ---- [calendar.YEAR]")]

FAR_TABLE = f"""\
[calendar.{FAR}]
notice = "a test's notice for {FAR}"
days_off = [
    "{FAR}-02-07 to {FAR}-02-13",  # Spring Festival, Wednesday to Tuesday
    "{FAR}-05-01",
]
working_days = ["{FAR}-02-17"]  # a Saturday
"""


def cst(y: int, m: int, d: int, hh: int = 0) -> datetime:
    return datetime(y, m, d, hh, tzinfo=CHINA_TZ)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, fragment: str, occurrence: int = 1) -> int:
    """The line of the `occurrence`-th line of `text` that contains `fragment`."""
    found = [n for n, line in enumerate(text.splitlines(), start=1) if fragment in line]
    return found[occurrence - 1]


# ---- the shipped file -------------------------------------------------------------------------


def test_the_shipped_2026_table_says_what_chinesecalendar_says_day_by_day() -> None:
    """The worked example is the real 2026 notice, typed in as the file's header says."""
    (arrangement,) = read_policy().calendar
    assert arrangement.year == 2026
    assert "2026年部分节假日安排的通知" in arrangement.notice
    calendar = load_calendar()
    day = date(2026, 1, 1)
    while day.year == 2026:
        assert calendar.is_working_day(day) == chinese_calendar.is_workday(day), day
        day += timedelta(days=1)


def test_the_shipped_file_has_no_2027_dates_because_none_are_published() -> None:
    assert all(a.year != 2027 for a in read_policy().calendar)
    assert "[calendar.2027]" in SHIPPED  # the commented example for the duty officer


# ---- the policy first, then the package, then Monday to Friday --------------------------------


def test_a_year_in_the_policy_is_used_before_the_package(tmp_path: Path) -> None:
    # Leave Saturday 2026-02-14 out of the make-up working days: the package says it is one.
    text = SHIPPED.replace('"2026-02-14", "2026-02-28"', '"2026-02-28"')
    assert text != SHIPPED
    calendar = load_calendar(write(tmp_path, text))
    assert chinese_calendar.is_workday(date(2026, 2, 14))
    assert not calendar.is_working_day(date(2026, 2, 14))
    assert calendar.is_working_day(date(2026, 2, 28))


def test_a_year_only_the_policy_has_is_official_and_silent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calendar = load_calendar(write(tmp_path, CLOCKS + FAR_TABLE))
    with caplog.at_level(logging.WARNING, logger="hub.system.calendar"):
        assert not calendar.is_working_day(date(FAR, 2, 7))  # Wednesday, Spring Festival
        assert not calendar.is_working_day(date(FAR, 2, 13))  # Tuesday, its last day
        assert calendar.is_working_day(date(FAR, 2, 14))  # Wednesday
        assert calendar.is_working_day(date(FAR, 2, 17))  # Saturday, a make-up working day
        assert not calendar.is_working_day(date(FAR, 2, 18))  # Sunday
        assert not calendar.is_working_day(date(FAR, 5, 1))  # Tuesday, Labour Day
        # Tuesday 6 Feb, 10:00 → 3 working days: 14, 15, 16 Feb (the holiday skipped).
        deadline = add_working_days(cst(FAR, 2, 6, 10), 3, calendar)
        assert deadline == cst(FAR, 2, 17).astimezone(UTC)
        assert estimated_years(cst(FAR, 2, 6, 10), deadline, calendar) == ()
    assert year_known(calendar, FAR)
    assert not caplog.records


def test_a_notice_may_name_days_of_the_december_before(tmp_path: Path) -> None:
    table = FAR_TABLE.replace(f'"{FAR}-05-01",', f'"{FAR - 1}-12-31",')
    calendar = load_calendar(write(tmp_path, CLOCKS + table))
    assert not calendar.is_working_day(date(FAR - 1, 12, 31))  # named: official
    assert calendar.knows(date(FAR - 1, 12, 31))
    assert not calendar.knows(date(FAR - 1, 12, 30))  # the rest of that year is not


def test_a_missing_year_is_warned_about_and_its_deadlines_are_estimates(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calendar = ChineseWorkingDays()
    status = calendar_status(calendar, date(FAR, 3, 1))
    assert status is not None
    assert f"no official holiday calendar for {FAR} and {FAR + 1}" in status
    assert f"add [calendar.{FAR}] and [calendar.{FAR + 1}] to the policy file" in status
    assert "estimated" in status
    with caplog.at_level(logging.WARNING, logger="hub.system.calendar"):
        deadline = add_working_days(cst(FAR, 2, 6, 10), 3, calendar)
    assert deadline == cst(FAR, 2, 10).astimezone(UTC)  # Mon to Fri: the holiday ignored
    assert estimated_years(cst(FAR, 2, 6, 10), deadline, calendar) == (FAR,)
    assert [str(FAR) in r.getMessage() for r in caplog.records] == [True]
    assert not year_known(calendar, FAR)


def test_status_names_only_the_missing_one_of_this_year_and_the_next() -> None:
    package_only = ChineseWorkingDays()
    assert calendar_status(package_only, date(2025, 6, 1)) is None  # 2025, 2026: packaged
    arrangement = Arrangement(FAR, "n", frozenset({date(FAR, 1, 1)}), frozenset())
    status = calendar_status(ChineseWorkingDays([arrangement]), date(FAR, 1, 1))
    assert status is not None
    assert f"for {FAR + 1}:" in status
    assert f"{FAR} " not in status.replace(f"{FAR + 1}", "")


def test_a_deadline_over_two_years_is_estimated_for_the_missing_one_only() -> None:
    arrangement = Arrangement(FAR, "n", frozenset({date(FAR, 12, 31)}), frozenset())
    calendar = ChineseWorkingDays([arrangement])
    start = cst(FAR, 12, 28, 9)  # a Friday
    deadline = add_working_days(start, 3, calendar)
    assert estimated_years(start, deadline, calendar) == (FAR + 1,)


def test_the_metric_says_which_of_this_year_and_the_next_are_official() -> None:
    registry = CollectorRegistry()
    arrangement = Arrangement(FAR, "n", frozenset({date(FAR, 1, 1)}), frozenset())
    now = datetime(FAR, 12, 31, 17, 0, tzinfo=UTC)  # 1 Jan of the next year in Beijing
    registry.register(CalendarCollector(ChineseWorkingDays([arrangement]), lambda: now))
    sample = registry.get_sample_value
    assert sample("stophub_calendar_official", {"year": str(FAR + 1), "which": "current"}) == 0
    assert sample("stophub_calendar_official", {"year": str(FAR + 2), "which": "next"}) == 0
    now = datetime(FAR, 6, 1, tzinfo=UTC)
    assert sample("stophub_calendar_official", {"year": str(FAR), "which": "current"}) == 1
    assert sample("stophub_calendar_official", {"year": str(FAR + 1), "which": "next"}) == 0


# ---- a bad table is refused, naming its line -------------------------------------------------


def refused(tmp_path: Path, text: str, line: int, *words: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert message.startswith(f"{path}, line {line}: "), message
    assert "\n" not in message
    for word in words:
        assert word in message, message
    return message


def far(replace: str, by: str) -> str:
    assert replace in FAR_TABLE
    return CLOCKS + FAR_TABLE.replace(replace, by)


def test_the_far_fixture_loads(tmp_path: Path) -> None:
    (arrangement,) = read_policy(write(tmp_path, CLOCKS + FAR_TABLE)).calendar
    assert arrangement.year == FAR
    assert len(arrangement.days_off) == 8
    assert arrangement.working_days == frozenset({date(FAR, 2, 17)})


@pytest.mark.parametrize(
    ("replace", "by", "fragment", "occurrence", "words"),
    [
        # A day twice: the same entry again, or a range that overlaps another.
        (f'"{FAR}-05-01",', f'"{FAR}-05-01", "{FAR}-05-01",', f"{FAR}-05-01", 1, ["twice"]),
        (f'"{FAR}-05-01",', f'"{FAR}-02-12 to {FAR}-02-14",', f"{FAR}-02-12", 1, ["twice"]),
        # Both a day off and a working day.
        (f'["{FAR}-02-17"]', f'["{FAR}-02-17", "{FAR}-02-11"]', "working_days", 1, ["both"]),
        # An unknown key (a typo of days_off), a missing one, an empty list.
        ("days_off = [", "holidays = [", "holidays = [", 1, ["unknown key 'holidays'"]),
        (f'working_days = ["{FAR}-02-17"]', "", f"[calendar.{FAR}]", 1, ["lacks 'working_days'"]),
        ('notice = "a test', 'notice = ""\n# "', 'notice = ""', 1, ["notice names"]),
        # A make-up working day on a weekday, a day of another year, bad dates and ranges.
        (f'["{FAR}-02-17"]', f'["{FAR}-02-16"]', "working_days", 1, ["is a Friday"]),
        (f'"{FAR}-05-01",', f'"{FAR + 1}-05-01",', f"{FAR + 1}-05-01", 1, [f"not in {FAR}"]),
        (f'"{FAR}-05-01",', f'"{FAR - 1}-11-30",', f"{FAR - 1}-11-30", 1, [f"not in {FAR}"]),
        (f'"{FAR}-05-01",', f'"{FAR}/05/01",', f"{FAR}/05/01", 1, ["YYYY-MM-DD"]),
        (f'"{FAR}-05-01",', f'"{FAR}-02-30",', f"{FAR}-02-30", 1, ["day is out of range"]),
        (f'"{FAR}-05-01",', f'"{FAR}-05-05 to {FAR}-05-01",', f"{FAR}-05-05", 1, ["ends before"]),
        (f'"{FAR}-05-01",', f"{FAR}-05-01T00:00:00,", "T00:00", 1, ["YYYY-MM-DD"]),
        # A table not named by a year.
        (f"[calendar.{FAR}]", "[calendar.next]", "[calendar.next]", 1, ["by its year"]),
    ],
)
def test_a_bad_calendar_table_is_refused_naming_its_line(
    tmp_path: Path, replace: str, by: str, fragment: str, occurrence: int, words: list[str]
) -> None:
    text = far(replace, by)
    refused(tmp_path, text, line_of(text, fragment, occurrence), *words)


def test_the_line_named_is_the_entry_that_repeats_not_the_first(tmp_path: Path) -> None:
    text = far(f'"{FAR}-05-01",', f'"{FAR}-05-01",\n    "{FAR}-05-01",')
    message = refused(tmp_path, text, line_of(text, f"{FAR}-05-01", 2), "twice")
    assert f"also on line {line_of(text, f'{FAR}-05-01', 1)}" in message


def test_a_day_named_by_two_years_tables_is_refused(tmp_path: Path) -> None:
    earlier = (
        f'[calendar.{FAR - 1}]\nnotice = "n"\ndays_off = ["{FAR - 1}-12-31"]\nworking_days = []\n'
    )
    later = FAR_TABLE.replace(f'"{FAR}-05-01",', f'"{FAR - 1}-12-31",')
    text = CLOCKS + earlier + later
    refused(tmp_path, text, line_of(text, f"{FAR - 1}-12-31", 2), "twice")


def test_a_toml_date_is_a_day_too(tmp_path: Path) -> None:
    text = far(f'"{FAR}-05-01",', f"{FAR}-05-01,")
    (arrangement,) = read_policy(write(tmp_path, text)).calendar
    assert date(FAR, 5, 1) in arrangement.days_off


def test_serve_refuses_a_bad_calendar_in_one_line(tmp_path: Path) -> None:
    key = tmp_path / "hub.key"
    save_private_key(PrivateKey.generate(), key)
    text = far(f'["{FAR}-02-17"]', f'["{FAR}-02-17", "{FAR}-02-11"]')
    policy = write(tmp_path, text)
    result = CliRunner().invoke(
        main,
        [
            "serve",
            "--hub-key",
            str(key),
            "--policy",
            str(policy),
            "--db",
            f"sqlite:///{tmp_path}/never.db",
        ],
    )
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    (line,) = [ln for ln in result.output.splitlines() if ln.strip()]
    assert re.search(rf"line {line_of(text, 'working_days')}: {FAR}-02-11 is both", line), line
    assert not (tmp_path / "never.db").exists()


# ---- the display zone -------------------------------------------------------------------------


def test_the_display_zone_is_asia_shanghai_by_default() -> None:
    assert display_zone() == ZoneInfo("Asia/Shanghai")


def test_a_policy_without_display_shows_asia_shanghai_and_utc_is_utc(tmp_path: Path) -> None:
    assert display_zone(write(tmp_path, CLOCKS)) == ZoneInfo("Asia/Shanghai")
    path = write(tmp_path, CLOCKS + '[display]\ntime_zone = "UTC"\n')
    assert display_zone(path) is UTC
    path = write(tmp_path, CLOCKS + '[display]\ntime_zone = "Europe/Berlin"\n')
    assert display_zone(path) == ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(
    ("display", "fragment", "words"),
    [
        ('time_zone = "Asia/Beijing"', "time_zone", ["'Asia/Beijing'", "IANA"]),
        ('time_zone = "+08:00"', "time_zone", ["IANA"]),
        ('time_zone = "../etc/passwd"', "time_zone", ["IANA"]),
        ("time_zone = 8", "time_zone", ["IANA"]),
        ('zone = "UTC"', "zone =", ["unknown key 'zone'"]),
    ],
)
def test_a_bad_display_zone_is_refused_naming_its_line(
    tmp_path: Path, display: str, fragment: str, words: list[str]
) -> None:
    text = CLOCKS + f"[display]\n{display}\n"
    refused(tmp_path, text, line_of(text, fragment), *words)
