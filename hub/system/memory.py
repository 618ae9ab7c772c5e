"""The garbage collector under a serving hub (ADR 26).

CPython's cycle collector holds the whole process while it walks every object of the
generations it collects. A hub holding 1,000 delivery streams tracks about 300,000 objects;
a full collection of them took 110-180 ms on the two-core machine of BENCHMARKS.md, every few
seconds under load, and every stop order due meanwhile waited that long. Most of those objects
live as long as the process (modules, the mapping, compiled statements, protobuf descriptors)
or as long as a stream. `settle` moves what exists now out of the collector's sight
(gc.freeze), so that the automatic collections walk only what was made since; `refreeze` does
it again after one full collection (gc.unfreeze first), so that a frozen object that has
become garbage since is freed then: memory stays bounded, and the long pause comes once per
interval instead of every few seconds. `GcPauses` times every collection for the metrics.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# Seconds between refreezes under `serve` (`--gc-refreeze`): each is one full collection,
# about as long as one the collector would have started by itself.
DEFAULT_REFREEZE = 600.0
# The first comes sooner: after a restart the members' streams reconnect within seconds.
FIRST_REFREEZE = 30.0


def settle() -> int:
    """Collect what is garbage now, then freeze what survives; returns the frozen count."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def refreeze() -> int:
    """Unfreeze, collect everything once, freeze the survivors; returns the frozen count."""
    started = time.perf_counter()
    gc.unfreeze()
    frozen = settle()
    log.info(
        "garbage collector: %d objects frozen after a full collection of %.0f ms",
        frozen,
        (time.perf_counter() - started) * 1000,
    )
    return frozen


def release() -> None:
    """Give the frozen objects back to the collector (the hub stopped: in tests, the next
    hub in the same process must not inherit a frozen heap it never asked for)."""
    gc.unfreeze()


class GcPauses:
    """Calls `observe(generation, seconds)` for every collection while installed."""

    def __init__(self, observe: Callable[[int, float], None]) -> None:
        self.observe = observe
        self._started: float | None = None

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self.observe(int(info["generation"]), time.perf_counter() - self._started)
            self._started = None

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def remove(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
