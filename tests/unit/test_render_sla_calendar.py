"""Issue 19 item 22 in the CLI's clock views: a working-day deadline computed without the
official holiday calendar of its year says so, and the board says while the hub's calendar
lacks this year or the next."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hub.domain.clocks import CaseClock
from hub.render.screen import make_console
from hub.render.sla import Board, BoardCase, board_view, clocks_table, sla_log_view
from hub.system.calendar import ChineseWorkingDays, calendar_status

NOW = datetime(2035, 3, 2, 9, 0, tzinfo=UTC)  # a year no package or policy knows


def clock(*, estimated: bool) -> CaseClock:
    return CaseClock(
        clock_id="K0000000000000000000A",
        case_id="C20350302-0000000A",
        order_id="",
        kind="fund_return",
        responsible="BANKB",
        started_at=NOW,
        deadline_at=NOW + timedelta(days=3),
        deadline_estimated=estimated,
    )


def shown(renderable: object, width: int = 200) -> str:
    out = make_console(width=width, record=True)
    out.print(renderable)
    return out.export_text()


def test_an_estimated_deadline_is_marked_in_the_clock_table_and_the_log() -> None:
    assert "(estimated)" in shown(clocks_table([clock(estimated=True)], NOW, title="clocks"))
    assert "(estimated)" not in shown(clocks_table([clock(estimated=False)], NOW, title="c"))
    log = shown(sla_log_view([clock(estimated=True)], {}, NOW))
    assert "must act by" in log and "(estimated)" in log


def test_the_board_marks_estimated_deadlines_and_says_the_calendar_is_missing() -> None:
    c = clock(estimated=True)
    board = Board(NOW, [BoardCase(c.case_id, None, [c])])
    board.calendar = calendar_status(ChineseWorkingDays(), NOW.date())
    assert board.calendar is not None and "2035" in board.calendar
    out = shown(board_view(board, width=200))
    assert "CALENDAR: no official holiday calendar for 2035" in out
    assert "(estimated)" in out
    board.calendar = None
    assert "CALENDAR" not in shown(board_view(board, width=200))
