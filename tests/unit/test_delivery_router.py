"""The delivery router and its batched store work, on the in-memory fakes.

Streams are the router's Connection objects (their queues are what the gRPC servicer would
write out); commits are rows queued through `Hub.deliver` and handed to `notify` as the
pipeline hands them over after a commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from hub.api.delivery import _CLOSE, Connection, DeliveryRouter
from hub.api.runner import Runner
from hub.crypto.keys import PrivateKey
from hub.domain.errors import DomainError, PermissionDenied, Unauthenticated
from hub.service.admin import NewKey
from hub.service.commands import delivery as service
from hub.service.ports import PendingDelivery, StoreUnavailable
from stophub.v1 import delivery_pb2
from tests.unit.test_handlers import World


def queue(w: World, *recipients: str, handed_over: bool = False) -> list[PendingDelivery]:
    """One committed outbox row per recipient, as a command's commit queues them;
    `handed_over`: as a command whose commit hands its rows to the router (Context.deliver,
    with the registry as of its transaction)."""
    with w.store() as uow:
        members = w.hub.gate.members.current(uow) if handed_over else None
        rows = [
            row
            for r in recipients
            for row in w.hub.deliver(
                uow,
                [r],
                delivery_pb2.Notice(kind=delivery_pb2.NOTICE_KIND_REPORT_RECEIVED, summary="x"),
                w.clock.now(),
                members,
            )
        ]
        uow.commit()
    return rows


def attempts(w: World, sequence: int) -> int:
    return next(d.attempts for d in w.store.deliveries if d.sequence == sequence)


def ack(w: World, code: str, *sequences: int, signer: str | None = None) -> service.Ack:
    return service.Ack(
        code, w.seal(signer or code, delivery_pb2.AckBody(sequences=list(sequences))), None
    )


class Calls:
    """Wraps functions of hub.service.commands.delivery to record their arguments."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.calls: dict[str, list[tuple[Any, ...]]] = {}

    def watch(self, name: str) -> list[tuple[Any, ...]]:
        real: Callable[..., Any] = getattr(service, name)
        seen = self.calls.setdefault(name, [])

        def wrapper(*args: Any) -> Any:
            seen.append(args[1:])
            return real(*args)

        self.monkeypatch.setattr(service, name, wrapper)
        return seen


async def next_item(conn: Connection, timeout: float = 5.0) -> Any:
    return await asyncio.wait_for(conn.queue.get(), timeout)


async def settled(router: DeliveryRouter) -> None:
    """Until the router has nothing left to do (it works in its own task and threads)."""
    for _ in range(500):
        await asyncio.sleep(0.01)
        if not (router._work or router._busy or router._tasks):
            await asyncio.sleep(0.02)
            if not router._work:
                return
    raise AssertionError("the router did not settle")


class Setup:
    def __init__(self, w: World, executor: ThreadPoolExecutor) -> None:
        self.w, self.executor = w, executor
        self.routers: list[DeliveryRouter] = []

    def router(self, **kwargs: Any) -> DeliveryRouter:
        router = DeliveryRouter(Runner(self.w.hub, self.executor), **kwargs)
        router.bind(asyncio.get_running_loop())
        self.routers.append(router)
        return router

    def attach(self, router: DeliveryRouter, code: str, name: str = "primary") -> Connection:
        return router.attach(code, name, self.w.keys[code].key_id)


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    executor = ThreadPoolExecutor(2)
    s = Setup(World(), executor)
    try:
        yield s
    finally:
        for router in s.routers:
            await router.close()
        executor.shutdown(wait=True)


# ---- the service functions ------------------------------------------------------------------


def test_acknowledgements_of_many_streams_are_one_transaction_each_audited() -> None:
    w = World()
    afc, b1, b2 = queue(w, "AFC", "BANKB", "BANKB")
    commits = w.store.commits
    acks = [
        ack(w, "AFC", afc.sequence),
        ack(w, "BANKB", b2.sequence, b1.sequence, afc.sequence),  # AFC's row is not BANKB's
        ack(w, "AFC", afc.sequence, signer="BANKB"),  # on AFC's stream, signed by BANKB
        service.Ack(
            "BANKC",
            w.seal("BANKC", delivery_pb2.AckBody(sequences=[1]), key=PrivateKey.generate()),
            None,
        ),
    ]

    results = service.acknowledge_many(w.hub, acks)

    assert results[0] == [afc.sequence]
    assert results[1] == sorted([afc.sequence, b1.sequence, b2.sequence])
    assert isinstance(results[2], PermissionDenied) and results[2].reason == "STREAM_OWNER"
    assert isinstance(results[3], Unauthenticated)
    assert results[3].reason in ("UNKNOWN_KEY", "BAD_SIGNATURE")
    # One commit for the batch, one audited refusal each for the two refused.
    assert w.store.commits - commits == 3
    received = w.store.audit_of("received")
    assert [e.message_id for e in received] == [a.envelope.message_id for a in acks[:2]]
    assert received[0].detail == f"acknowledged 1 of deliveries [{afc.sequence}]"
    assert received[1].detail.startswith("acknowledged 2 of deliveries")
    assert received[1].payload == acks[1].envelope.SerializeToString()
    rejected = w.store.audit_of("rejected")
    assert [e.message_id for e in rejected] == [a.envelope.message_id for a in acks[2:]]
    assert w.hub.pending("AFC") == [] and w.hub.pending("BANKB") == []


def test_acknowledgements_the_database_did_not_take_are_not_refusals() -> None:
    w = World()
    [row] = queue(w, "AFC")
    audit = len(w.store.audit)

    def down() -> None:
        raise StoreUnavailable("connection refused")

    w.store.before_commit = down
    results = service.acknowledge_many(w.hub, [ack(w, "AFC", row.sequence)] * 2)

    assert all(isinstance(r, StoreUnavailable) for r in results)
    assert len(w.store.audit) == audit, "nothing stored, nothing refused"
    assert [d.sequence for d in w.hub.pending("AFC")] == [row.sequence]


def test_prepare_sends_ends_streams_of_revoked_or_retired_keys_and_counts_the_rest() -> None:
    w = World()
    afc, bankb, payx, reg = queue(w, "AFC", "BANKB", "PAYX", "REG")
    old_afc = w.keys["AFC"].key_id
    new = PrivateKey.generate()
    second = w.registry.add_key("AFC", NewKey(new.algorithm, new.public_key))
    w.registry.revoke_key("AFC", old_afc)
    w.registry.revoke_key("BANKB", w.keys["BANKB"].key_id)
    w.registry.rotate_key("PAYX", NewKey(new.algorithm, new.public_key), timedelta(0))
    with w.store() as uow:
        uow.outbox.ack("REG", [reg.sequence], w.clock.now())
        uow.commit()

    prepared = service.prepare_sends(
        w.hub,
        {
            "AFC": {old_afc, second},  # one stream of two ends
            "BANKB": {w.keys["BANKB"].key_id},
            "PAYX": {w.keys["PAYX"].key_id},
            "REG": {w.keys["REG"].key_id},
        },
        {
            "AFC": [afc.sequence],
            "BANKB": [bankb.sequence],
            "PAYX": [payx.sequence],
            "REG": [reg.sequence],
        },
    )

    reasons = {
        code: {k: e.reason for k, e in ended.items()} for code, ended in prepared.ended.items()
    }
    assert reasons == {
        "AFC": {old_afc: "KEY_REVOKED"},
        "BANKB": {w.keys["BANKB"].key_id: "KEY_REVOKED"},
        "PAYX": {w.keys["PAYX"].key_id: "KEY_RETIRED"},
    }
    # AFC keeps a stream; the acknowledged row is not counted again.
    assert prepared.attempts == {afc.sequence: 1}
    assert [attempts(w, d.sequence) for d in (afc, bankb, payx, reg)] == [1, 0, 0, 0]


# ---- the router -----------------------------------------------------------------------------


async def test_rows_a_commit_hands_over_go_out_in_order_counted_and_not_read_back(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    router = setup.router(ack_timeout=30)
    conn = setup.attach(router, "BANKB")
    await settled(router)
    reads = Calls(monkeypatch).watch("pending_many")
    rows = queue(setup.w, "BANKB", "BANKB", "BANKB")

    # Two commits handed over in one loop turn, the later one first.
    router.notify({"BANKB"}, rows[2:])
    router.notify({"BANKB"}, rows[:2])
    got = []
    for _ in rows:
        item = await next_item(conn)
        # Counted before it was put on the stream.
        assert attempts(setup.w, item.sequence) == 1
        got.append(item)

    assert [d.sequence for d in got] == [r.sequence for r in rows]
    assert [d.attempt for d in got] == [1, 1, 1]
    assert [d.envelope.SerializeToString() for d in got] == [r.envelope for r in rows]
    assert reads == [], "the rows came from the commit, not from the outbox"


async def test_rows_for_institutions_not_connected_here_stay_in_the_outbox(
    setup: Setup,
) -> None:
    router = setup.router(ack_timeout=30)
    conn = setup.attach(router, "AFC")
    await settled(router)
    rows = queue(setup.w, "BANKB", "AFC")
    router.notify({"BANKB", "AFC"}, rows)

    item = await next_item(conn)
    assert item.sequence == rows[1].sequence
    assert attempts(setup.w, rows[0].sequence) == 0
    later = setup.attach(router, "BANKB")
    assert (await next_item(later)).sequence == rows[0].sequence


async def test_recipients_named_without_rows_are_read_from_the_outbox(setup: Setup) -> None:
    router = setup.router(ack_timeout=30)
    conn = setup.attach(router, "AFC")
    await settled(router)
    [row] = queue(setup.w, "AFC")
    router.notify({"AFC"})  # as the clock sweep does

    item = await next_item(conn)
    assert (item.sequence, item.attempt) == (row.sequence, 1)


async def three_streams(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> tuple[DeliveryRouter, dict[str, Connection], list[tuple[Any, ...]]]:
    """A router with a stream each of AFC, BANKB and PAYX, settled, and the calls of
    prepare_sends from then on."""
    router = setup.router(ack_timeout=30)
    streams = {code: setup.attach(router, code) for code in ("AFC", "BANKB", "PAYX")}
    await settled(router)
    return router, streams, Calls(monkeypatch).watch("prepare_sends")


async def test_a_revoked_or_retired_key_ends_its_stream_before_a_pushed_delivery(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = setup.w
    router, streams, checks = await three_streams(setup, monkeypatch)
    new = PrivateKey.generate()
    w.registry.add_key("BANKB", NewKey(new.algorithm, new.public_key))
    w.registry.revoke_key("BANKB", w.keys["BANKB"].key_id)
    w.registry.rotate_key("PAYX", NewKey(new.algorithm, new.public_key), timedelta(0))
    rows = queue(w, "AFC", "BANKB", "PAYX")
    router.notify({"AFC", "BANKB", "PAYX"}, rows)

    assert (await next_item(streams["AFC"])).sequence == rows[0].sequence
    for code, reason in (("BANKB", "KEY_REVOKED"), ("PAYX", "KEY_RETIRED")):
        assert await next_item(streams[code]) is _CLOSE
        error = streams[code].error
        assert isinstance(error, DomainError) and error.reason == reason
    assert [attempts(w, r.sequence) for r in rows] == [1, 0, 0], "nothing went out on them"
    # The keys of all three were checked with the attempts, in one call (one transaction).
    assert len(checks) == 1
    assert set(checks[0][0]) == {"AFC", "BANKB", "PAYX"}


async def test_a_commit_counts_what_a_stream_here_takes_at_once_and_it_goes_out_as_is(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = setup.w
    router, streams, checks = await three_streams(setup, monkeypatch)
    w.hub.live_streams = router
    new = PrivateKey.generate()
    w.registry.add_key("BANKB", NewKey(new.algorithm, new.public_key))
    w.registry.revoke_key("BANKB", w.keys["BANKB"].key_id)
    rows = queue(w, "AFC", "AFC", "BANKB", "PAYX", "REG", handed_over=True)
    # Counted in the commit: the institutions streaming here with keys that may sign; not
    # BANKB (its stream's key was revoked before the commit), nor REG (no stream here).
    assert [(r.counted, attempts(w, r.sequence)) for r in rows] == [
        (True, 1),
        (True, 1),
        (False, 0),
        (True, 1),
        (False, 0),
    ]
    router.notify({"AFC", "BANKB", "PAYX", "REG"}, rows)

    got = [await next_item(streams["AFC"]), await next_item(streams["AFC"])]
    got.append(await next_item(streams["PAYX"]))
    assert [(d.sequence, d.attempt) for d in got] == [(r.sequence, 1) for r in rows[:2] + rows[3:4]]
    assert await next_item(streams["BANKB"]) is _CLOSE
    error = streams["BANKB"].error
    assert isinstance(error, DomainError) and error.reason == "KEY_REVOKED"
    # Only the stream the commit could not vouch for had its key checked before sending.
    assert [set(streams_) for streams_, _ in checks] == [{"BANKB"}]
    assert [attempts(w, r.sequence) for r in rows] == [1, 1, 0, 1, 0]
    # With its only stream ended, BANKB takes nothing at once: the next commit leaves it.
    assert router.stream_keys("BANKB") is None
    assert router.stream_keys("AFC") == {w.keys["AFC"].key_id}


async def test_an_idle_router_asks_the_outbox_once_a_tick_for_every_institution(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = setup.w
    router = setup.router(ack_timeout=0.2)
    codes = {"AFC", "BANKA", "BANKB", "BANKC", "BANKD", "PAYX", "REG"}
    for code in codes:
        setup.attach(router, code)
    await settled(router)
    calls = Calls(monkeypatch)
    probes = calls.watch("unacknowledged")
    reads = calls.watch("pending_many")
    sends = calls.watch("prepare_sends")
    opened = w.store.opened

    for _ in range(500):
        if len(probes) >= 4:
            break
        await asyncio.sleep(0.01)
    done = len(probes)
    opened = w.store.opened - opened

    assert done >= 4
    # One unit of work per tick, for all seven institutions, and nothing else.
    assert all(set(args[0]) == codes for args in probes)
    assert opened in (done, done + 1)  # a tick may have started as the count was taken
    assert reads == [] and sends == []


async def test_acknowledgements_arriving_together_are_stored_in_one_call(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = setup.w
    router = setup.router(ack_timeout=30)
    streams = {code: setup.attach(router, code) for code in ("AFC", "BANKB", "BANKC")}
    await settled(router)
    rows = queue(w, "AFC", "BANKB", "BANKC")
    router.notify({"AFC", "BANKB", "BANKC"}, rows)
    for code, row in zip(streams, rows, strict=True):
        assert (await next_item(streams[code])).sequence == row.sequence
    batches = Calls(monkeypatch).watch("acknowledge_many")
    commits = w.store.commits

    results = await asyncio.gather(
        router.acknowledge(streams["AFC"], ack(w, "AFC", rows[0].sequence).envelope, None),
        router.acknowledge(streams["BANKB"], ack(w, "BANKB", rows[1].sequence).envelope, None),
        # Signed by BANKB on BANKC's stream: refused, and only this one.
        router.acknowledge(
            streams["BANKC"], ack(w, "BANKC", rows[2].sequence, signer="BANKB").envelope, None
        ),
    )

    assert [len(args[0]) for args in batches] == [3]
    assert results[:2] == [[rows[0].sequence], [rows[1].sequence]]
    assert isinstance(results[2], PermissionDenied) and results[2].reason == "STREAM_OWNER"
    assert w.store.commits - commits == 2  # the batch, and the audited refusal
    assert len(w.store.audit_of("received")) == 2
    for code in ("AFC", "BANKB"):
        assert router.groups[code].in_flight == {}
    assert list(router.groups["BANKC"].in_flight) == [rows[2].sequence]


async def test_an_unacknowledged_delivery_goes_again_after_the_ack_timeout(
    setup: Setup,
) -> None:
    router = setup.router(ack_timeout=0.3)
    conn = setup.attach(router, "BANKB")
    await settled(router)
    [row] = queue(setup.w, "BANKB")
    router.notify({"BANKB"}, [row])

    first = await next_item(conn)
    again = await next_item(conn)
    assert (first.sequence, first.attempt) == (row.sequence, 1)
    assert (again.sequence, again.attempt) == (row.sequence, 2)
    assert attempts(setup.w, row.sequence) == 2


async def test_a_closed_connections_deliveries_move_to_the_other(setup: Setup) -> None:
    router = setup.router(ack_timeout=30)
    a = setup.attach(router, "BANKB", "site-a")
    b = setup.attach(router, "BANKB", "site-b")
    await settled(router)
    [row] = queue(setup.w, "BANKB")
    router.notify({"BANKB"}, [row])
    await settled(router)
    holder, other = (a, b) if not a.queue.empty() else (b, a)
    assert (await next_item(holder)).sequence == row.sequence
    assert other.queue.empty()

    router.detach(holder)
    moved = await next_item(other)
    assert (moved.sequence, moved.attempt) == (row.sequence, 2)


async def test_rows_behind_a_full_window_wait_their_turn(setup: Setup) -> None:
    w = setup.w
    router = setup.router(ack_timeout=30, batch=2)
    rows = queue(w, "BANKB", "BANKB", "BANKB")  # queued while BANKB is offline
    conn = setup.attach(router, "BANKB")
    got = [await next_item(conn), await next_item(conn)]
    assert [d.sequence for d in got] == [r.sequence for r in rows[:2]]
    await settled(router)

    [later] = queue(w, "BANKB")
    router.notify({"BANKB"}, [later])  # must not overtake rows[2]
    await settled(router)
    assert conn.queue.empty()

    result = await router.acknowledge(
        conn, ack(w, "BANKB", *(d.sequence for d in got)).envelope, None
    )
    assert result == [d.sequence for d in got]
    rest = [await next_item(conn), await next_item(conn)]
    assert [d.sequence for d in rest] == [rows[2].sequence, later.sequence]


async def test_overlapping_dispatches_keep_each_institutions_order(setup: Setup) -> None:
    router = setup.router(ack_timeout=30, parallel=2)
    streams = {code: setup.attach(router, code) for code in ("AFC", "BANKB")}
    await settled(router)
    rows = []
    for _ in range(5):
        # One commit at a time, each handed over on its own: dispatches overlap across
        # institutions but never for one.
        batch = queue(setup.w, "AFC", "BANKB")
        router.notify({"AFC", "BANKB"}, batch)
        rows += batch
        await asyncio.sleep(0)
    for code, conn in streams.items():
        want = [r.sequence for r in rows if r.recipient == code]
        got = [(await next_item(conn)).sequence for _ in want]
        assert got == want
    await settled(router)
    assert all(attempts(setup.w, r.sequence) == 1 for r in rows)
