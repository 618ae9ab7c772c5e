"""Delivery pushed on commit over real gRPC: rows a commit queued go out without being read
back, counted first; a broadcast checks every receiving stream's key in one go; many
streams' acknowledgements are stored and audited."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from sqlalchemy import select

from hub.crypto.keys import PrivateKey
from hub.domain.institutions import InstitutionKind
from hub.service.admin import NewKey, Registry
from hub.service.commands import delivery as service
from hub.store.tables import audit_log, deliveries
from stophub.v1 import case_pb2, case_pb2_grpc, delivery_pb2
from tests.e2e.conftest import Network, contacts
from tests.e2e.test_delivery_stream import notice_of, verified_case_with_auto_stop
from tests.e2e.test_wire_rules import error_info
from tests.e2e.wire_helpers import RawStream, report, sign


async def connected(network: Network, streams: dict[str, int]) -> None:
    """Until the hub has attached these streams (institution -> how many)."""
    for _ in range(200):
        now = network.server.router.connections()
        if all(now.get(code, 0) >= n for code, n in streams.items()):
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"streams not attached: {network.server.router.connections()}")


def attempts_of(network: Network, sequence: int) -> int:
    with network.store.read_engine.connect() as conn:
        return int(
            conn.execute(
                select(deliveries.c.attempts).where(deliveries.c.sequence == sequence)
            ).scalar_one()
        )


def watch(monkeypatch: pytest.MonkeyPatch, name: str) -> list[tuple[Any, ...]]:
    real = getattr(service, name)
    seen: list[tuple[Any, ...]] = []

    def wrapper(*args: Any) -> Any:
        seen.append(args[1:])
        return real(*args)

    monkeypatch.setattr(service, name, wrapper)
    return seen


def add_centres(network: Network, *codes: str) -> None:
    registry = Registry(network.store, network.clock)
    for code in codes:
        key = PrivateKey.generate()
        network.keys[code] = key
        registry.add_institution(
            code,
            f"Centre {code}",
            InstitutionKind.ANTI_FRAUD_CENTRE,
            [NewKey(key.algorithm, key.public_key)],
            contacts(code),
        )


async def create_report(network: Network) -> str:
    now = network.clock.now()
    async with network.channel("BANKA") as channel:
        created = await case_pb2_grpc.CaseServiceStub(channel).CreateReport(
            case_pb2.CreateReportRequest(
                envelope=sign(network.keys["BANKA"], "BANKA", report(now), now)
            )
        )
    return case_pb2.Case.FromString(created.envelope.body).case_id


async def test_orders_are_pushed_in_order_and_counted_before_they_arrive(
    network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = await RawStream(network, "BANKB").open()
    try:
        await connected(network, {"BANKB": 1})
        await asyncio.sleep(0.3)  # the new connection's own read of the outbox
        reads = watch(monkeypatch, "pending_many")
        checks = watch(monkeypatch, "prepare_sends")
        case_ids = await verified_case_with_auto_stop(network, count=3)
        got = []
        for _ in case_ids:
            delivery = await stream.next()
            assert attempts_of(network, delivery.sequence) == 1
            assert delivery.attempt == 1
            got.append(delivery)
            await stream.ack(delivery.sequence)
        assert [notice_of(d).case_id for d in got] == case_ids
        assert [d.sequence for d in got] == sorted(d.sequence for d in got)
        assert reads == [], "pushed from the commits, not read back from the outbox"
        assert checks == [], "counted by the commits that queued them, sent without another"
    finally:
        await stream.close()


async def test_a_broadcast_checks_every_receiving_streams_key_and_ends_a_revoked_one(
    network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_centres(network, "CENTRE2", "CENTRE3")
    centres = ("CENTRE", "CENTRE2", "CENTRE3")
    streams = {code: await RawStream(network, code).open() for code in centres}
    try:
        await connected(network, dict.fromkeys(centres, 1))
        await asyncio.sleep(0.3)
        registry = Registry(network.store, network.clock)
        replacement = PrivateKey.generate()
        registry.add_key("CENTRE2", NewKey(replacement.algorithm, replacement.public_key))
        registry.revoke_key("CENTRE2", network.keys["CENTRE2"].key_id)
        checks = watch(monkeypatch, "prepare_sends")

        case_id = await create_report(network)

        for code in ("CENTRE", "CENTRE3"):
            delivery = await streams[code].next()
            notice = notice_of(delivery)
            assert notice.kind == delivery_pb2.NOTICE_KIND_REPORT_RECEIVED
            assert notice.case_id == case_id
            # Counted as sent by the commit that queued it, their streams' keys being good
            # in that transaction: no transaction of their own before they went out.
            assert (delivery.attempt, attempts_of(network, delivery.sequence)) == (1, 1)
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await streams["CENTRE2"].next()
        assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_info(ended.value)[0].reason == "KEY_REVOKED"
        # The stream opened with the revoked key was left to the router, whose one
        # transaction before sending checked its key and ended it, counting nothing.
        assert [set(args[0]) for args in checks] == [{"CENTRE2"}]
    finally:
        for stream in streams.values():
            await stream.close()

    # The revoked stream never carried it: a stream with the new key gets it as attempt 1.
    fresh = await RawStream(network, "CENTRE2", key=replacement).open()
    try:
        again = await fresh.next()
        assert notice_of(again).case_id == case_id and again.attempt == 1
    finally:
        await fresh.close()


async def test_acknowledgements_from_many_streams_are_each_stored_and_audited(
    network: Network,
) -> None:
    add_centres(network, "CENTRE2", "CENTRE3")
    centres = ("CENTRE", "CENTRE2", "CENTRE3")
    streams = {code: await RawStream(network, code).open() for code in centres}
    try:
        await connected(network, dict.fromkeys(centres, 1))
        await create_report(network)
        got = {code: await streams[code].next() for code in centres}
        await asyncio.gather(*(streams[c].ack(got[c].sequence) for c in centres))
        for _ in range(200):
            if all(not network.server.hub.pending(c) for c in centres):
                break
            await asyncio.sleep(0.025)
        assert all(not network.server.hub.pending(c) for c in centres)
        with network.store.read_engine.connect() as conn:
            received = conn.execute(
                select(audit_log.c.actor, audit_log.c.detail).where(
                    audit_log.c.kind == "received", audit_log.c.actor.in_(centres)
                )
            ).all()
        assert sorted(actor for actor, _ in received) == sorted(centres)
        assert all(detail.startswith("acknowledged 1 of deliveries") for _, detail in received)
        # Still open and quiet: nothing comes again once acknowledged.
        for code in centres:
            with pytest.raises(TimeoutError):
                await streams[code].next(timeout=1.5)
    finally:
        for stream in streams.values():
            await stream.close()
