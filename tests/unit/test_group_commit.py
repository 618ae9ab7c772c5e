"""Group commit (hub/service/batching.py): what arrives together commits together, and a
piece that fails takes nothing else down."""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from hub.domain.errors import DomainError, InvalidArgument
from hub.service.batching import Batch, GroupCommit
from hub.service.ports import AuditEntry, Conflict, StoreUnavailable
from tests.unit.fakes import FakeStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def write(name: str) -> Callable[[Batch], str]:
    def work(batch: Batch) -> str:
        batch.uow.audit.append(AuditEntry("received", "BANKA", name, f"{name} accepted"), T0)
        batch.changed = True
        return name

    return work


def fail_after_writing(name: str) -> Callable[[Batch], str]:
    def work(batch: Batch) -> str:
        write(name)(batch)
        raise InvalidArgument("body", f"{name} is refused")

    return work


def keep_refusal(batch: Batch, err: Exception) -> None:
    assert isinstance(err, DomainError)
    batch.uow.audit.append(AuditEntry("rejected", "BANKA", "-", err.message), T0)


def ids(store: FakeStore) -> list[tuple[str, str]]:
    return [(e.kind, e.message_id) for e in store.audit]


def wait_for_queue(group: GroupCommit, length: int) -> None:
    deadline = time.monotonic() + 10
    while len(group._queue) != length:
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_pieces_that_arrive_during_a_commit_share_the_next_one() -> None:
    store = FakeStore()
    # No work budget: a descheduled thread on a busy machine must not split the batch here.
    group = GroupCommit(store, work_budget=float("inf"))
    inside, release = threading.Event(), threading.Event()

    def first(batch: Batch) -> str:
        inside.set()
        assert release.wait(10)
        return write("m-0")(batch)

    results: dict[str, Any] = {}

    def submit(name: str, work: Callable[[Batch], str]) -> None:
        try:
            results[name] = group.run(work, keep_refusal)
        except Exception as err:
            results[name] = err

    threads = [threading.Thread(target=submit, args=("m-0", first))]
    threads[0].start()
    assert inside.wait(10)
    for name, work in [
        ("m-1", write("m-1")),
        ("m-2", fail_after_writing("m-2")),
        ("m-3", write("m-3")),
    ]:
        threads.append(threading.Thread(target=submit, args=(name, work)))
        threads[-1].start()
        # Queued in arrival order, behind the batch being written.
        wait_for_queue(group, len(threads) - 1)
    release.set()
    for t in threads:
        t.join(10)

    assert results["m-0"] == "m-0" and results["m-1"] == "m-1" and results["m-3"] == "m-3"
    assert isinstance(results["m-2"], InvalidArgument)
    # Two commits for four requests: the first alone, the three that waited together.
    assert (group.batches, group.pieces, store.commits) == (2, 4, 2)
    # The refused piece's own write is gone; its refusal and its neighbours' writes are kept.
    assert ids(store) == [
        ("received", "m-0"),
        ("received", "m-1"),
        ("rejected", "-"),
        ("received", "m-3"),
    ]


def test_a_batch_that_wrote_nothing_commits_nothing() -> None:
    store = FakeStore()
    group = GroupCommit(store)
    assert group.run(lambda batch: "answered from the inbound log") == (
        "answered from the inbound log"
    )
    assert store.commits == 0 and store.opened == 1


def test_a_failed_commit_runs_each_piece_again_alone() -> None:
    store = FakeStore()
    group = GroupCommit(store)
    store.fail_commits = 1  # the first commit fails as a whole (a conflict at commit)
    assert group.run(write("m-1")) == "m-1"
    assert ids(store) == [("received", "m-1")]
    store.fail_commits = 2  # twice is no race: the caller sees it
    with pytest.raises(Conflict):
        group.run(write("m-2"))
    assert ids(store) == [("received", "m-1")]


def test_the_database_going_away_is_ridden_out_then_reported() -> None:
    store = FakeStore()
    group = GroupCommit(store, retry_delays=(0, 0))
    failures = [2]

    def flaky(batch: Batch) -> str:
        if failures[0]:
            failures[0] -= 1
            raise StoreUnavailable("connection reset")
        return write("m-1")(batch)

    assert group.run(flaky) == "m-1"
    failures[0] = 3  # more failures than retries
    with pytest.raises(StoreUnavailable):
        group.run(flaky)
    assert ids(store) == [("received", "m-1")]


def test_work_started_inside_a_batch_gets_its_own_transaction() -> None:
    store = FakeStore()
    group = GroupCommit(store)
    inner: list[str] = []

    def outer(batch: Batch) -> str:
        # A hook that sends another request cannot wait for the batch it runs in (it would
        # wait for itself): it commits on its own, as another hub's request would.
        if not inner:
            inner.append(group.run(write("m-inner")))
        return write("m-outer")(batch)

    assert group.run(outer) == "m-outer"
    assert inner == ["m-inner"]
    # The fake refuses the outer commit because another committed in between (as a row
    # conflict would); the outer piece then runs again and commits.
    assert ids(store) == [("received", "m-inner"), ("received", "m-outer")]


REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="none")


def test_each_piece_runs_in_its_own_requests_context_on_the_leaders_thread() -> None:
    """A piece may run on another request's thread (the leader's); what it logs there must
    name its own request (hub.observability.logs keeps the ids in contextvars)."""
    store = FakeStore()
    group = GroupCommit(store)
    inside, release = threading.Event(), threading.Event()
    seen: dict[str, tuple[str, int]] = {}

    def first(batch: Batch) -> str:
        inside.set()
        assert release.wait(10)
        return "m-0"

    def record(name: str) -> Callable[[Batch], str]:
        def work(batch: Batch) -> str:
            seen[name] = (REQUEST.get(), threading.get_ident())
            return name

        return work

    def refused(batch: Batch, err: Exception) -> None:
        seen["refusal"] = (REQUEST.get(), threading.get_ident())

    def submit(name: str, work: Callable[[Batch], str]) -> None:
        REQUEST.set(name)
        with contextlib.suppress(InvalidArgument):
            group.run(work, refused)

    leader = threading.Thread(target=submit, args=("m-0", first))
    leader.start()
    assert inside.wait(10)
    waiting = [
        threading.Thread(target=submit, args=("m-1", record("m-1"))),
        threading.Thread(target=submit, args=("m-2", fail_after_writing("m-2"))),
    ]
    for i, t in enumerate(waiting, start=1):
        t.start()
        wait_for_queue(group, i)
    release.set()
    for t in [leader, *waiting]:
        t.join(10)
    # The second batch was written by one thread for both; each saw its own request.
    assert seen["m-1"][0] == "m-1" and seen["refusal"][0] == "m-2"
    assert seen["m-1"][1] == seen["refusal"][1]


def test_a_batch_stops_taking_pieces_once_its_work_budget_is_spent() -> None:
    """A piece's commit waits at most about the budget for its neighbours' work: pieces that
    each work longer than it commit one by one, in arrival order; cheap ones share."""
    store = FakeStore()
    group = GroupCommit(store, work_budget=0.02)
    inside, release = threading.Event(), threading.Event()

    def first(batch: Batch) -> str:
        inside.set()
        assert release.wait(10)
        return write("m-0")(batch)

    def slow(name: str) -> Callable[[Batch], str]:
        def work(batch: Batch) -> str:
            time.sleep(0.03)  # past the budget on its own
            return write(name)(batch)

        return work

    results: dict[str, Any] = {}
    threads = [threading.Thread(target=lambda: results.update({"m-0": group.run(first)}))]
    threads[0].start()
    assert inside.wait(10)
    for name in ("m-1", "m-2", "m-3"):
        work = slow(name)
        threads.append(
            threading.Thread(target=lambda n=name, w=work: results.update({n: group.run(w)}))
        )
        threads[-1].start()
        wait_for_queue(group, len(threads) - 1)
    release.set()
    for t in threads:
        t.join(10)
    assert results == {"m-0": "m-0", "m-1": "m-1", "m-2": "m-2", "m-3": "m-3"}
    assert ids(store) == [("received", f"m-{i}") for i in range(4)]
    # One commit each: m-1's batch held m-2 and m-3 back rather than make m-1 wait for them.
    assert (group.batches, group.pieces, store.commits) == (4, 4, 4)
