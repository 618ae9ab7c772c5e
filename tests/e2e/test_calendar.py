"""The holiday calendar where operators look (issue 19 item 22): `serve` warns at start while
this year or the next has no official calendar, and the metrics say which; a policy file
carrying the year starts quietly.

The hub's clock is set in FAR, a year no chinesecalendar release will know for a long time,
so these tests keep their meaning the day the package learns 2027.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hub.system.clock import ManualClock
from hub.system.policy import DEFAULT_POLICY
from tests.e2e.conftest import start_network
from tests.e2e.test_operations import scrape, value

FAR = 2035


def far_table(year: int) -> str:
    return (
        f'[calendar.{year}]\nnotice = "a test\'s notice for {year}"\n'
        f'days_off = ["{year}-01-01"]\nworking_days = []\n'
    )


def calendar_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "hub.bootstrap"
        and r.levelno == logging.WARNING
        and "calendar" in r.getMessage()
    ]


@pytest.mark.parametrize(
    ("tables", "warned", "official"),
    [
        ("", f"no official holiday calendar for {FAR} and {FAR + 1}", (0, 0)),
        (far_table(FAR), f"no official holiday calendar for {FAR + 1}:", (1, 0)),
        (far_table(FAR) + far_table(FAR + 1), None, (1, 1)),
    ],
)
async def test_serve_says_which_years_lack_an_official_calendar(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    tables: str,
    warned: str | None,
    official: tuple[int, int],
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(DEFAULT_POLICY.read_text(encoding="utf-8") + tables, encoding="utf-8")
    clock = ManualClock(datetime(FAR, 3, 2, 9, 0, tzinfo=UTC))
    with caplog.at_level(logging.WARNING, logger="hub.bootstrap"):
        net = await start_network(
            tmp_path, clock, policy_file=policy, metrics_address="127.0.0.1:0"
        )
    try:
        warnings = calendar_warnings(caplog)
        if warned is None:
            assert warnings == []
        else:
            (line,) = warnings
            assert warned in line, line
            assert "add [calendar." in line and "policy file" in line, line
        samples = await scrape(net)
        current = value(samples, "stophub_calendar_official", year=str(FAR), which="current")
        following = value(samples, "stophub_calendar_official", year=str(FAR + 1), which="next")
        assert (current, following) == official
    finally:
        await net.server.stop(0.5)
        net.store.dispose()
