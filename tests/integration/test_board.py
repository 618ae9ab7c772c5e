"""`stophub board` on a database with open clocks: what it loads (running clocks, the last
hour's breaches and late stops, duty phones) and how it looks at 80×24 and 120×40."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

import pytest
from rich.console import Console

from hub.domain.clocks import CaseClock, ClockState
from hub.render.sla import Board, BoardCase, board_view, load_board
from hub.service.commands.case import CREATE_REPORT, GET_CASE, VERIFY_REPORT
from hub.service.commands.order import ISSUE_ORDER
from hub.system.policy import load_policy
from stophub.v1 import case_pb2, order_pb2
from tests.conftest import T0
from tests.unit.test_handlers import MULE_B, stop_body

from .test_hub_on_db import Net, confirm, net, report  # noqa: F401  (the fixture)


@dataclass
class Busy:
    """The cases `busy` opened, by what happened to them."""

    ended: str  # never verified: its verify clock breached and ran to the end of its ladder
    late: str  # verified 3 minutes late; the stop it got is now 8 minutes overdue at BANKB
    soon: str  # 1 minute of its 5 left to verify
    fresh: str  # 3 minutes of its 5 left to verify


def busy(net: Net) -> Busy:  # noqa: F811
    """65 minutes of work on the shipped clocks from the clock's time, the sweep running each
    minute; ends at the clock's time + 65 minutes, with clocks running, overdue, breached and
    met late within the hour before."""
    net.hub.clock_policy = load_policy()
    start = net.clock.now()
    ids: dict[str, str] = {}

    def at(minutes: float) -> None:
        target = start + timedelta(minutes=minutes)
        while net.clock.now() < target:
            net.clock.set(min(target, net.clock.now() + timedelta(minutes=1)))
            net.hub.sweep()

    def reported(name: str) -> str:
        case = net.call("BANKA", CREATE_REPORT, report(net.clock.now(), [(MULE_B, 3_000_000)]),
                        case_pb2.Case)  # fmt: skip
        ids[name] = case.case_id
        return case.case_id

    at(15)
    reported("ended")
    at(35)
    late = reported("late")
    at(43)
    net.call("BANKA", VERIFY_REPORT, confirm(late), case_pb2.Case)
    at(47)
    case = net.call("CENTRE", GET_CASE, case_pb2.GetCaseBody(case_id=late), case_pb2.Case)
    net.call("CENTRE", ISSUE_ORDER, stop_body(case, MULE_B), order_pb2.Order)
    at(61)
    reported("soon")
    at(63)
    reported("fresh")
    at(65)
    return Busy(**ids)


def frame(board: Board, width: int, height: int) -> list[str]:
    console = Console(width=width, height=height, record=True, color_system=None)
    console.print(board_view(board, width=width, height=height))
    return console.export_text().rstrip("\n").splitlines()


def test_the_board_loads_running_clocks_the_last_hour_and_duty_phones(net: Net) -> None:  # noqa: F811
    cases = busy(net)
    board = load_board(net.store, net.clock.now())
    assert [b.case_id for b in board.cases][:3] == [cases.late, cases.soon, cases.fresh]
    recent = {(c.case_id, c.kind): c for c in board.recent}
    assert recent[cases.ended, "verify"].state is ClockState.ENDED
    assert recent[cases.late, "verify"].state is ClockState.MISSED, "met 3 minutes late"
    assert recent[cases.late, "stop"].state is ClockState.OPEN, "8 minutes overdue"
    assert (cases.soon, "verify") not in recent
    assert board.phones == {"BANKA": "+86-10-5550-0001", "BANKB": "+86-10-5550-0001"}
    # An hour later the first breaches have left the last hour; the later ones are in it.
    net.clock.advance(timedelta(minutes=61))
    later = {(c.case_id, c.kind) for c in load_board(net.store, net.clock.now()).recent}
    assert (cases.ended, "verify") not in later and (cases.late, "verify") not in later
    assert {(cases.soon, "verify"), (cases.fresh, "verify")} <= later


@pytest.mark.parametrize(("width", "height"), [(80, 24), (120, 40)])
def test_the_board_fits_a_terminal_with_whole_columns(
    net: Net,  # noqa: F811
    width: int,
    height: int,
) -> None:
    cases = busy(net)
    lines = frame(load_board(net.store, net.clock.now()), width, height)
    text = "\n".join(lines)
    assert len(lines) <= height and max(map(len, lines)) <= width, text
    assert "…" not in text, "nothing cut"
    for case_id in (cases.ended, cases.late, cases.soon, cases.fresh):
        assert re.search(rf"(^|\s){case_id}\s", text), f"{case_id} whole"
    assert "1 breached now" in text and "3 breached or met late in the last hour" in text
    header = next(line for line in lines if line.startswith("case ") and "time left" in line)
    for column in ("time left", "clock", "who acts", "duty phone"):
        assert column in header
    late = next(line for line in lines if line.startswith(cases.late) and "stop" in line)
    assert " 8m 0s overdue" in late and "-8m" not in late
    assert "+86-10-5550-0001" in late, "whom to call"
    assert f"{cases.late}  verify  met 3m 0s late" in text
    if width >= 120:
        assert "next step" in header and "deadline (UTC)" in header and "state" in header
        assert "regulator in 2m 0s" in late
    else:
        assert "next step" not in header


def test_a_low_window_says_what_it_left_out(net: Net) -> None:  # noqa: F811
    busy(net)
    lines = frame(load_board(net.store, net.clock.now()), 80, 13)
    assert len(lines) <= 13, "\n".join(lines)
    assert any(line.startswith("… ") and "more" in line for line in lines)
    assert lines[-1].startswith("green: > 20% left"), "the legend stays"


def test_a_deadline_on_another_day_shows_its_date() -> None:
    tomorrow = CaseClock("K1", "C1", "investigate", "CENTRE", T0, T0 + timedelta(hours=24))
    today = CaseClock("K2", "C2", "verify", "BANKA", T0, T0 + timedelta(minutes=5))
    text = "\n".join(frame(Board(T0, [BoardCase("C1", None, [tomorrow])]), 160, 40))
    assert "2026-03-03 09:00" in text, "not today: dated"
    only_today = "\n".join(frame(Board(T0, [BoardCase("C2", None, [today])]), 160, 40))
    assert " 09:05 " in only_today and "2026-03-02 09:05" not in only_today
