"""`stophub sla` and `stophub board` on the database of a running hub, on the tests' clock."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from click.testing import CliRunner
from rich.console import Console

from adapters.sdk import HubClient
from hub.cli import main
from hub.domain.clocks import CaseClock, ClockState
from hub.render.sla import board_view, countdown, countdown_style, load_board
from tests.conftest import T0
from tests.e2e.conftest import Network
from tests.e2e.wire_helpers import report


@pytest.fixture
async def banka(network: Network) -> AsyncIterator[HubClient]:
    client = network.client("BANKA")
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(autouse=True)
def utc_and_wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests read instants in UTC and the board's every column: the display zone and
    the narrow board have tests of their own (tests/unit/test_render_wording.py,
    tests/integration/test_board.py)."""
    monkeypatch.setenv("STOPHUB_TZ", "UTC")
    monkeypatch.setenv("COLUMNS", "200")


def stophub(network: Network, *args: str, ok: bool = True) -> str:
    """Run the CLI against the hub's own database, on the network's ManualClock."""
    result = CliRunner().invoke(
        main,
        [*args, "--db", network.database_url],
        obj={"clock": network.clock},
        catch_exceptions=False,
    )
    if ok:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code != 0, result.output
    return result.output


def row_of(output: str, *needles: str) -> str:
    rows = [line for line in output.splitlines() if all(n in line for n in needles)]
    assert len(rows) == 1, f"no single row with {needles} in:\n{output}"
    return rows[0]


async def test_sla_lists_running_clocks_by_time_left_then_breaches_and_the_log(
    network: Network, banka: HubClient
) -> None:
    first = (await banka.create_report(report(network.clock.now()))).case_id
    network.clock.advance(timedelta(minutes=1))
    second = (await banka.create_report(report(network.clock.now()))).case_id
    network.clock.set(T0 + timedelta(minutes=2))

    out = stophub(network, "sla")
    assert "2 open clock(s) by time left" in out
    assert "time left" in out and "next step" in out
    a = row_of(out, first, "verify")
    assert "3m 0s" in a and "BANKA" in a and "reminder" in a
    assert "2026-03-02T09:05:00Z" in a, "the deadline"
    assert "2026-03-02T09:04:00Z (in 2m 0s)" in a, "when the next step is due"
    b = row_of(out, second, "verify")
    assert "4m 0s" in b
    assert out.index(first) < out.index(second), "least time left first"
    assert "record" not in out, "met clocks only with --all"

    everything = stophub(network, "sla", "--all")
    assert "4 clock(s)" in everything
    assert "met" in row_of(everything, first, "record")

    # The first report's window runs out: reminder, breach; the sweep fires both.
    network.clock.set(T0 + timedelta(minutes=4, seconds=1))
    network.server.hub.sweep()
    network.clock.set(T0 + timedelta(minutes=5, seconds=50))
    network.server.hub.sweep()

    out = stophub(network, "sla")
    overdue = row_of(out, first, "verify")
    assert "│ 50.0 s overdue" in overdue and "breached" in overdue, "how late, with no minus"
    assert "regulator" in overdue and "(in 4m 10s)" in overdue
    assert "10.0 s" in row_of(out, second, "verify") and "overdue" not in row_of(out, second)

    breaches = stophub(network, "sla", "--breaches")
    assert "1 breached or missed clock(s)" in breaches
    late = row_of(breaches, first, "verify")
    assert "50.0 s" in late and "still open" in late
    assert second not in breaches

    log = stophub(network, "sla", "--case", first)
    assert "2 clock(s) of case" in log
    for event in ("started", "reminder", "breach"):
        assert event in log
    assert "to BANKA, CENTRE" in log, "the breach went to the bank and the centre"

    # Verified late: the clock is missed, by how much, in the log and in --breaches.
    await banka.verify_report(first)
    log = stophub(network, "sla", "--case", first)
    assert "missed" in log and "50.0 s past deadline" in log
    breaches = stophub(network, "sla", "--breaches")
    assert "met late (report.verified)" in row_of(breaches, first, "verify")

    assert "0 open clock(s) for BANKB" in stophub(network, "sla", "--institution", "BANKB")
    centre = stophub(network, "sla", "--institution", "CENTRE")
    assert "stop_issue" in row_of(centre, first) and second not in centre

    missing = stophub(network, "sla", "--case", "C-NOPE", ok=False)
    assert "no case 'C-NOPE'" in missing


async def test_sla_marks_steps_that_fired_late(network: Network, banka: HubClient) -> None:
    case_id = (await banka.create_report(report(network.clock.now()))).case_id
    # The hub "was down" past the reminder: it fires on the next sweep, 50 s late.
    network.clock.set(T0 + timedelta(minutes=4, seconds=50))
    network.server.hub.sweep()
    log = stophub(network, "sla", "--case", case_id)
    assert "fired 50.0 s late" in row_of(log, "reminder")


async def test_board_once_shows_open_cases_with_countdowns(
    network: Network, banka: HubClient
) -> None:
    assert "no open cases" in stophub(network, "board", "--once")

    case_id = (await banka.create_report(report(network.clock.now()))).case_id
    network.clock.advance(timedelta(minutes=1, seconds=30))
    out = stophub(network, "board", "--once")
    assert "StopHub board" in out and "1 open case(s), 1 running clock(s)" in out
    row = row_of(out, case_id)
    assert "verify" in row and "BANKA" in row and "reported" in row
    assert "3m 30s" in row, "time left to the deadline"

    network.clock.set(T0 + timedelta(minutes=5, seconds=20))
    out = stophub(network, "board", "--once")
    running, _, last_hour = out.partition("\nbreached or met late in the last hour\n")
    assert "  20.0 s overdue  verify" in row_of(running, case_id), "how late, with no minus"
    assert "1 breached now" in out
    assert "20.0 s overdue, open" in row_of(last_hour, case_id)
    assert "+86-10-5550-0001" in row_of(running, case_id), "the duty phone of who must act"

    await banka.verify_report(case_id)  # verify stops, the centre's stop_issue starts
    out = stophub(network, "board", "--once")
    running, _, last_hour = out.partition("\nbreached or met late in the last hour\n")
    row = row_of(running, case_id)
    assert "stop_issue" in row and "CENTRE" in row and "10m 0s" in row
    assert "verified" in row
    assert "0 breached now" in out
    assert "verify  met 20.0 s late  BANKA" in row_of(last_hour, case_id)


async def test_board_refreshes_until_interrupted(
    network: Network, banka: HubClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    case_id = (await banka.create_report(report(network.clock.now()))).case_id
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise KeyboardInterrupt  # Ctrl-C
        network.clock.advance(timedelta(seconds=10))

    monkeypatch.setattr("hub.render.sla.wait_for_frame", lambda _resized, s: sleep(s))
    out = stophub(network, "board", "--refresh", "2")
    assert sleeps == [2.0, 2.0, 2.0]
    # The last frame drawn is the one the board leaves on screen: 20 s later.
    assert "4m 40s" in row_of(out, case_id)


def test_countdown_colours_follow_the_share_of_the_window_left() -> None:
    clock = CaseClock(
        clock_id="K1",
        case_id="C1",
        kind="verify",
        responsible="BANKA",
        started_at=T0,
        deadline_at=T0 + timedelta(minutes=10),
    )
    assert countdown_style(clock, T0 + timedelta(minutes=7)) == "green"  # 30% left
    assert countdown_style(clock, T0 + timedelta(minutes=8, seconds=1)) == "bold yellow"
    assert countdown_style(clock, T0 + timedelta(minutes=10)) == "bold yellow"  # at the deadline
    assert countdown_style(clock, T0 + timedelta(minutes=10, seconds=1)) == "bold red"
    late = countdown(clock, T0 + timedelta(minutes=13))
    assert late.plain == "3m 0s overdue" and late.style == "bold red"


async def test_board_frame_is_coloured_on_a_terminal(network: Network, banka: HubClient) -> None:
    await banka.create_report(report(network.clock.now()))

    def frame(minutes: float) -> str:
        board = load_board(network.store, T0 + timedelta(minutes=minutes))
        assert all(c.state is ClockState.OPEN for b in board.cases for c in b.clocks)
        console = Console(force_terminal=True, color_system="standard", width=200, record=True)
        console.print(board_view(board, width=200))
        return console.export_text(styles=True)

    assert re.search(r"\x1b\[32m\s*4m 0s", frame(1)), "80% left: green"
    assert re.search(r"\x1b\[1;33m\s*30\.0 s", frame(4.5)), "10% left: yellow"
    assert re.search(r"\x1b\[1;31m\s*60\.0 s overdue", frame(6)), "overdue: red"
