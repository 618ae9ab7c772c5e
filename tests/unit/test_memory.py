"""The garbage collector's freeze, refreeze and pause timing (hub/system/memory.py)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from hub.system import memory


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_settle_freezes_what_survives_a_collection() -> None:
    gc.unfreeze()
    Cycle()  # garbage only the cycle collector frees
    frozen = memory.settle()
    assert frozen == gc.get_freeze_count() > 1000
    assert not any(isinstance(o, Cycle) for o in gc.get_objects())
    memory.release()
    assert gc.get_freeze_count() == 0


def test_a_refreeze_frees_what_became_garbage_while_frozen() -> None:
    gc.unfreeze()
    kept = [Cycle()]
    alive = weakref.ref(kept[0])
    memory.settle()
    kept.clear()  # garbage now, but frozen: no collection sees it
    gc.collect()
    assert alive() is not None
    frozen = memory.refreeze()
    assert alive() is None
    assert frozen == gc.get_freeze_count() > 1000


def test_pauses_are_timed_by_generation_while_installed() -> None:
    seen: list[tuple[int, float]] = []
    pauses = memory.GcPauses(lambda generation, seconds: seen.append((generation, seconds)))
    pauses.install()
    pauses.install()  # once only
    try:
        gc.collect(1)
        gc.collect()
    finally:
        pauses.remove()
    assert [g for g, _ in seen] == [1, 2]
    assert all(0 <= s < 10 for _, s in seen)
    gc.collect()
    assert len(seen) == 2, "removed: no more"
    assert pauses._callback not in gc.callbacks
