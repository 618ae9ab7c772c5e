"""The outcome figures' rules on rows built by hand (docs/outcomes.md): which stop answers count
as money stopped and as a case's first stop, renewals not frozen twice, and how periods split
in a zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from hub.service.outcomes import MAX_RANGE, Period, QueryError, check_range, figures, periods
from hub.service.ports import MoneyAnswerRow, ReportReceivedRow

T = datetime(2026, 3, 2, 9, tzinfo=UTC)  # a Monday
SHANGHAI = ZoneInfo("Asia/Shanghai")


def answer(
    order_id: str,
    kind: str,
    at: datetime,
    held: int = 0,
    *,
    case_id: str = "C1",
    institution: str = "BANKA",
    account: str = "A1",
    downstream: bool = False,
    renews: bool = False,
    returned: int = 0,
) -> MoneyAnswerRow:
    return MoneyAnswerRow(
        order_id,
        case_id,
        kind,
        institution,
        at,
        held,
        returned,
        downstream,
        ("BANKB", account),
        renews,
        T,
    )


def test_each_account_of_a_case_is_stopped_once_and_the_first_stop_is_the_earliest() -> None:
    rows = figures(
        [ReportReceivedRow("C1", "BANKA", T, 900)],
        [
            answer("C1-O002", "stop", T + timedelta(minutes=9), 100, account="A2"),
            answer("C1-O001", "stop", T + timedelta(minutes=5), 0),  # held nothing
            answer("C1-O003", "stop", T + timedelta(minutes=7), 300),
            answer("C1-O004", "stop", T + timedelta(days=3), 250),  # A1 again, after a lapse
            answer("C1-O005", "stop", T + timedelta(minutes=30), 50, account="A9", downstream=True),
            answer("C1-O006", "freeze", T + timedelta(days=1), 300),
            answer("C1-O007", "freeze", T + timedelta(days=40), 300, renews=True),
            answer("C1-O008", "return", T + timedelta(days=50), returned=200),
        ],
        T - timedelta(days=1),
        T + timedelta(days=60),
        Period.WHOLE,
        UTC,
    )
    assert [r.institution for r in rows] == ["BANKA", ""]
    f = rows[0].figures
    assert (f.first_layer_stops, f.stopped_first_layer_fen) == (2, 400)
    assert (f.downstream_stops, f.stopped_downstream_fen) == (1, 50)
    assert (f.freezes, f.frozen_fen) == (1, 300)
    assert (f.returns, f.returned_fen) == (1, 200)
    assert f.recovered_share == pytest.approx(200 / 900)
    assert f.first_stops == 1 and f.first_stop_median_seconds == 7 * 60
    assert rows[1].figures == f


def test_a_first_stop_before_the_range_is_not_counted_in_it() -> None:
    early = answer("C1-O001", "stop", T + timedelta(minutes=5), 100)
    late = answer("C1-O002", "stop", T + timedelta(days=2), 100, account="A2")
    rows = figures(
        [], [early, late], T + timedelta(days=1), T + timedelta(days=3), Period.WHOLE, UTC
    )
    f = rows[0].figures
    assert (f.first_layer_stops, f.stopped_first_layer_fen, f.first_stops) == (1, 100, 0)
    assert f.first_stop_median_seconds is None and f.recovered_share is None


def test_periods_split_in_the_zone_and_are_clipped_to_the_range() -> None:
    start = datetime(2026, 2, 27, 12, tzinfo=UTC)
    end = datetime(2026, 3, 10, tzinfo=UTC)
    weeks = periods(start, end, Period.WEEK, UTC)
    assert weeks[0] == (start, datetime(2026, 3, 2, tzinfo=UTC))  # ISO weeks start on Monday
    assert weeks[-1] == (datetime(2026, 3, 9, tzinfo=UTC), end)
    months = periods(start, end, Period.MONTH, UTC)
    assert months == [
        (start, datetime(2026, 3, 1, tzinfo=UTC)),
        (datetime(2026, 3, 1, tzinfo=UTC), end),
    ]
    # 17:00 UTC on March 1 is already March 2 in Shanghai.
    report = ReportReceivedRow("C1", "BANKA", datetime(2026, 3, 1, 17, tzinfo=UTC), 500)
    by_day = figures([report], [], start, end, Period.DAY, SHANGHAI)
    day = next(r for r in by_day if r.institution == "BANKA" and r.figures.reports)
    assert day.start == datetime(2026, 3, 2, tzinfo=SHANGHAI)
    assert day.end - day.start == timedelta(days=1)
    whole = [r for r in by_day if r.whole]
    assert [r.institution for r in whole] == ["BANKA", ""]
    assert all((r.start, r.end, r.figures.reports) == (start, end, 1) for r in whole)


def test_a_named_institution_has_rows_without_records_and_others_are_left_out() -> None:
    reports = [ReportReceivedRow("C1", "BANKA", T, 100), ReportReceivedRow("C2", "BANKB", T, 50)]
    rows = figures(reports, [], T, T + timedelta(days=1), Period.WHOLE, UTC, "PAYX")
    assert [(r.institution, r.figures.reports) for r in rows] == [("PAYX", 0), ("", 0)]


def test_a_range_must_run_forwards_and_not_too_long() -> None:
    with pytest.raises(QueryError, match="must come after its start"):
        check_range(T, T)
    with pytest.raises(QueryError, match="at most 1000"):
        check_range(T, T + MAX_RANGE + timedelta(days=1))
    check_range(T, T + MAX_RANGE)
