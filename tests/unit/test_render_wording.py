"""How the views write people (hub/domain/wording.py `Disclosure`, docs/personal-data.md) and
times (hub/render/wording.py: the display zone, named; dates once a span crosses a day)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from rich.console import Console

from hub.domain.cases import Case
from hub.domain.wording import Disclosure
from hub.render.case import case_view
from hub.render.wording import Times, display_zone, set_display_zone, stamp, zone_name
from tests.conftest import T0


@pytest.fixture
def zone() -> Iterator[None]:
    """Restores the display zone a test sets."""
    before = display_zone()
    try:
        yield
    finally:
        set_display_zone(before)


# ---- people ------------------------------------------------------------------------------------


def test_masked_by_default_in_full_with_personal_data() -> None:
    masked = Disclosure().knowing({"Li Si", "张三"})
    assert masked.name("Li Si") == "L****" and masked.name("张三") == "张*"
    assert masked.account("6222020000000002") == "************0002"
    assert masked.subject("BANKB/6222020000000002") == "BANKB/************0002"
    assert masked.text("held in the account of Li Si for 张三") == (
        "held in the account of L**** for 张*"
    )
    assert masked.private("110101199001011234") is None, "an ID number: not at all"

    full = Disclosure(personal_data=True).knowing({"Li Si"})
    assert full.name("Li Si") == "Li Si" and full.account("6222") == "6222"
    assert full.subject("BANKB/6222020000000002") == "BANKB/6222020000000002"
    assert full.text("Li Si") == "Li Si" and full.private("13800138000") == "13800138000"


# ---- times -------------------------------------------------------------------------------------


def test_one_day_writes_the_time_alone_and_names_the_day_and_zone() -> None:
    times = Times([T0, T0 + timedelta(hours=3, milliseconds=250)], unit="milliseconds")
    assert times(T0 + timedelta(hours=3, milliseconds=250)) == "12:00:00.250"
    assert times.header("time") == "time (2026-03-02, UTC)"


def test_a_span_across_a_day_writes_dates() -> None:
    times = Times([T0, T0 + timedelta(days=30)])
    assert times(T0) == "2026-03-02 09:00:00"
    assert times(T0 + timedelta(days=30)) == "2026-04-01 09:00:00"
    assert times.header("time") == "time (UTC)"


@pytest.mark.usefixtures("zone")
def test_days_are_the_display_zones() -> None:
    set_display_zone(ZoneInfo("Asia/Shanghai"))
    evening = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # 23:00 in Beijing
    times = Times([evening, evening + timedelta(hours=2)])
    assert times(evening) == "2026-03-02 23:00:00", "one UTC day, two in Beijing"
    assert times.header("time") == "time (Asia/Shanghai (UTC+08:00))"
    assert stamp(evening) == "2026-03-02T23:00:00+08:00"
    late = Times([evening + timedelta(hours=2), evening + timedelta(hours=5)])
    assert late.header("time") == "time (2026-03-03, Asia/Shanghai (UTC+08:00))"


@pytest.mark.usefixtures("zone")
def test_each_time_carries_its_offset_when_the_zone_changes_it() -> None:
    set_display_zone(ZoneInfo("Europe/Berlin"))
    before, after = datetime(2026, 3, 28, 12, tzinfo=UTC), datetime(2026, 3, 30, 12, tzinfo=UTC)
    times = Times([before, after], unit="minutes")
    assert (times(before), times(after)) == ("2026-03-28 13:00+01:00", "2026-03-30 14:00+02:00")
    assert times.header("time") == "time (offsets given)"


@pytest.mark.usefixtures("zone")
def test_zone_names() -> None:
    assert zone_name() == "UTC"
    set_display_zone(timezone(timedelta(hours=8)))
    assert zone_name(T0) == "UTC+08:00"
    set_display_zone(ZoneInfo("Asia/Shanghai"))
    assert zone_name(T0) == "Asia/Shanghai (UTC+08:00)" and zone_name() == "Asia/Shanghai"


def _case(days: int) -> Case:
    case = Case("C1", "BANKA", T0, "m1", "Zhang San", "110101199001011234", "13800138000",
                "impersonating_officials", "")  # fmt: skip
    case.record(T0, "report.received", "BANKA", "report received")
    case.record(T0 + timedelta(days=days), "case.closed", "CENTRE", "closed")
    return case


def _text(case: Case, **options: bool) -> str:
    console = Console(record=True, width=200, color_system=None)
    console.print(case_view(case, **options))
    return console.export_text()


def test_a_timeline_of_thirty_days_shows_its_dates() -> None:
    text = _text(_case(30))
    assert "2026-03-02 09:00:00.000" in text and "2026-04-01 09:00:00.000" in text
    one_day = _text(_case(0))
    assert "time (2026-03-02, UTC)" in one_day and "│ 09:00:00.000 " in one_day


def test_a_case_shows_the_victims_id_number_and_phone_only_with_personal_data() -> None:
    masked = _text(_case(0))
    assert "Z********" in masked and "Zhang San" not in masked
    assert "110101199001011234" not in masked and "13800138000" not in masked
    full = _text(_case(0), personal_data=True)
    assert "Zhang San" in full and "110101199001011234" in full and "13800138000" in full
