"""`stophub serve` keeps long-lived objects out of the garbage collector's sight and times
every collection (ADR 26; docs/operations.md, "Garbage collector")."""

from __future__ import annotations

import gc
import re
import signal
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from hub.crypto.keys import PrivateKey, save_private_key
from hub.system.clock import ManualClock
from hub.system.policy import DEFAULT_POLICY
from tests.e2e.conftest import start_network
from tests.e2e.test_restart import Hub, register_members

FROZEN = re.compile(r"garbage collector: (\d+) objects frozen; again after a full collection")


def served(tmp_path: Path, *args: str) -> Hub:
    save_private_key(PrivateKey.generate(), tmp_path / "hub.key")
    db_url = f"sqlite:///{tmp_path}/hub.db"
    register_members(db_url)
    hub = Hub(tmp_path, db_url, DEFAULT_POLICY, args=args)
    hub.start()
    return hub


def pauses(hub: Hub) -> dict[str, float]:
    """`stophub_gc_pause_seconds_count` by generation."""
    with urllib.request.urlopen(f"http://{hub.metrics}/metrics", timeout=5) as page:
        text = page.read().decode()
    return {
        s.labels["generation"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "stophub_gc_pause_seconds_count"
    }


def stop(hub: Hub) -> None:
    assert hub.proc is not None
    hub.proc.send_signal(signal.SIGTERM)
    assert hub.proc.wait(timeout=30) == 0, hub.output()


def test_serve_freezes_at_the_start_and_refreezes_every_interval(tmp_path: Path) -> None:
    hub = served(tmp_path, "--gc-refreeze", "0.5")
    try:
        (frozen,) = FROZEN.findall(hub.output())
        assert int(frozen) > 10_000, hub.output()  # modules, mapping, statements at least
        first = pauses(hub)["2"]
        assert first >= 1  # the start's own full collection, timed
        deadline = time.monotonic() + 15
        while pauses(hub)["2"] < first + 2:  # two refreezes, each one full collection
            assert time.monotonic() < deadline, hub.output()
            time.sleep(0.2)
    finally:
        stop(hub)
    assert "Traceback" not in hub.output()


def test_gc_refreeze_0_leaves_the_collector_alone_and_still_times_it(tmp_path: Path) -> None:
    hub = served(tmp_path, "--gc-refreeze", "0")
    try:
        assert not FROZEN.search(hub.output()), hub.output()
        assert set(pauses(hub)) == {"0", "1", "2"}  # exported from the start
    finally:
        stop(hub)


async def test_a_stopped_hub_leaves_no_frozen_heap_or_callback(
    tmp_path: Path, clock: ManualClock
) -> None:
    callbacks = list(gc.callbacks)
    network = await start_network(tmp_path, clock, gc_refreeze=0.2)
    try:
        assert gc.get_freeze_count() > 0
        assert len(gc.callbacks) == len(callbacks) + 1
        gc.collect()
        registry = network.server.metrics.registry
        assert registry.get_sample_value("stophub_gc_pause_seconds_count", {"generation": "2"})
    finally:
        await network.server.stop(0)
        network.store.dispose()
    assert gc.get_freeze_count() == 0
    assert gc.callbacks == callbacks
