"""Stopping a hub ends its scheduled jobs without an error in the log."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hub.system.clock import ManualClock
from tests.e2e.conftest import start_network


async def test_a_stop_just_as_a_sweep_starts_logs_no_error(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    network = await start_network(tmp_path, clock, sweep_interval=60)
    scheduler = network.server.scheduler
    assert scheduler is not None
    try:
        job = scheduler.get_job("clock-sweep")
        assert job is not None
        # Due now: in the next turn of the loop the scheduler starts the sweep as a task.
        # APScheduler's shutdown is deferred to the loop too, and comes in that same turn,
        # before the task has run a step.
        job.modify(next_run_time=datetime.now(UTC))
    finally:
        await network.server.stop(0)
        network.store.dispose()
    await asyncio.sleep(0.1)
    assert [
        f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR
    ] == []
