"""Stopping a hub ends its scheduled jobs without an error in the log, and its streams with
"reconnect elsewhere now"."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from adapters.blacklist import Form, Replica
from adapters.sdk.client import DRAINING, HubError
from hub.system.clock import ManualClock
from tests.e2e.conftest import start_network
from tests.e2e.test_sdk_agent import eventually
from tests.support import Watch


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


async def test_a_stopping_hub_sends_its_streams_elsewhere_at_once(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Draining (docs/failover.md): the delivery stream and a following list replica are ended
    with UNAVAILABLE HUB_DRAINING, not held until the grace runs out, and both clients plan
    to reconnect at once."""
    caplog.set_level(logging.INFO, logger="adapters.sdk.client")
    network = await start_network(tmp_path, clock)
    payx, banka = network.client("PAYX"), network.client("BANKA")
    stream = banka.deliveries("primary", initial_backoff=5.0, max_backoff=10.0)
    try:
        with Replica(tmp_path / "payx-list.db", payx, Form.CLEAR, clock=clock) as replica:
            watch = Watch(replica)
            following = asyncio.create_task(replica.run(initial_backoff=5.0, max_backoff=10.0))
            stream.start()
            await asyncio.wait_for(stream.connected.wait(), 10)
            await watch.until(lambda: "checkpoint" in watch.kinds)
            # A grace far longer than the test: open streams must not be waited for.
            await asyncio.wait_for(network.server.stop(60), 10)
            await watch.until(lambda: "lost" in watch.kinds)
            lost = watch.events[watch.kinds.index("lost")]
            assert isinstance(lost.error, HubError), lost
            assert (lost.error.code, lost.error.reason) == (
                grpc.StatusCode.UNAVAILABLE,
                DRAINING,
            )
            assert lost.retry_in is not None and lost.retry_in <= 0.1
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following

        async def drained() -> bool:
            # The pause is drawn from [0, 0.1] s and printed rounded: 0.0999 shows as 0.10.
            pattern = re.compile(r"replica is draining; on a new stream in ([0-9.]+)s")
            delays = [float(m.group(1)) for r in caplog.records if (m := pattern.search(r.message))]
            return any(d <= 0.1 for d in delays)

        await eventually(drained, 10)
        assert stream.reconnects >= 1
    finally:
        await stream.close()
        await payx.close()
        await banka.close()
        network.store.dispose()
