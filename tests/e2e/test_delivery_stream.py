"""The delivery stream over real gRPC: order, acknowledgement, redelivery, failover, offline."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from hub.crypto.envelope import verify_envelope
from stophub.v1 import case_pb2, case_pb2_grpc, delivery_pb2, order_pb2, order_pb2_grpc
from tests.e2e.conftest import Network
from tests.e2e.test_wire_rules import error_info
from tests.e2e.wire_helpers import RawStream, report, sign


async def verified_case_with_auto_stop(network: Network, count: int = 1) -> list[str]:
    """`count` verified cases, each of which makes the hub issue one stop to BANKB."""
    now = network.clock.now()
    case_ids = []
    # Each institution over its own certificate: the hub refuses a sender the connection's
    # certificate does not name.
    async with network.channel("CENTRE") as centre, network.channel("BANKA") as bank:
        orders = order_pb2_grpc.OrderServiceStub(centre)
        cases = case_pb2_grpc.CaseServiceStub(bank)
        rule = order_pb2.AutoStopRule(rule_id="R1", enabled=True, max_amount_fen=10_000_000)
        await orders.SetAutoStopRule(
            order_pb2.SetAutoStopRuleRequest(
                envelope=sign(network.keys["CENTRE"], "CENTRE", rule, now)
            )
        )
        for _ in range(count):
            created = await cases.CreateReport(
                case_pb2.CreateReportRequest(
                    envelope=sign(network.keys["BANKA"], "BANKA", report(now), now)
                )
            )
            case = case_pb2.Case.FromString(created.envelope.body)
            verification = case_pb2.Verification(
                case_id=case.case_id, outcome=case_pb2.VERIFICATION_OUTCOME_CONFIRMED
            )
            await cases.VerifyReport(
                case_pb2.VerifyReportRequest(
                    envelope=sign(network.keys["BANKA"], "BANKA", verification, now)
                )
            )
            case_ids.append(case.case_id)
    return case_ids


def notice_of(delivery: delivery_pb2.StreamDeliveriesResponse) -> delivery_pb2.Notice:
    return delivery_pb2.Notice.FromString(delivery.envelope.body)


async def test_offline_bank_gets_its_orders_in_order_when_it_connects(network: Network) -> None:
    case_ids = await verified_case_with_auto_stop(network, count=3)
    stream = await RawStream(network, "BANKB").open()
    try:
        got = [await stream.next() for _ in range(3)]
        assert [d.sequence for d in got] == sorted(d.sequence for d in got)
        assert [notice_of(d).case_id for d in got] == case_ids
        for d in got:
            assert d.envelope.sender == "HUB" and d.envelope.recipient == "BANKB"
            assert verify_envelope(d.envelope, network.hub_public_key)
            notice = notice_of(d)
            assert notice.kind == delivery_pb2.NOTICE_KIND_ORDER
            assert notice.order.auto_stop_rule_id == "R1"
            assert notice.authorization.sender == "CENTRE", "the centre's signed rule travels along"
            assert verify_envelope(notice.authorization, network.keys["CENTRE"].public_key)
            assert d.attempt == 1
    finally:
        await stream.close()


async def test_unacknowledged_delivery_comes_again_after_reconnect(network: Network) -> None:
    await verified_case_with_auto_stop(network)
    first = await RawStream(network, "BANKB").open()
    delivery = await first.next()
    await first.close()
    second = await RawStream(network, "BANKB").open()
    try:
        again = await second.next()
        assert again.sequence == delivery.sequence
        assert again.attempt == 2
        assert again.envelope.SerializeToString() == delivery.envelope.SerializeToString()
        await second.ack(again.sequence)
        # An acknowledgement counts once the hub has stored it; closing the stream at once
        # could cancel it in flight, and then the delivery rightly comes again.
        for _ in range(100):
            if not network.server.hub.pending("BANKB"):
                break
            await asyncio.sleep(0.05)
        assert not network.server.hub.pending("BANKB")
    finally:
        await second.close()
    third = await RawStream(network, "BANKB").open()
    try:
        with pytest.raises(TimeoutError):
            await third.next(timeout=1.5)
    finally:
        await third.close()


async def test_delivery_moves_to_the_other_connection_when_not_acknowledged(
    network: Network,
) -> None:
    a = await RawStream(network, "BANKB").open("site-a")
    b = await RawStream(network, "BANKB").open("site-b")
    try:
        await asyncio.sleep(0.2)
        await verified_case_with_auto_stop(network)
        receiver, delivery = await _first_of(a, b)
        other = b if receiver is a else a
        # The receiver never acknowledges: after the ack timeout (1 s here) the other gets it.
        moved = await other.next(timeout=5)
        assert moved.sequence == delivery.sequence and moved.attempt == 2
        await other.ack(moved.sequence)
        with pytest.raises(TimeoutError):
            await receiver.next(timeout=2.5)
    finally:
        await a.close()
        await b.close()


async def _first_of(
    a: RawStream, b: RawStream
) -> tuple[RawStream, delivery_pb2.StreamDeliveriesResponse]:
    for _ in range(100):
        for stream in (a, b):
            if stream.holds_delivery():
                other = b if stream is a else a
                assert not other.holds_delivery(), "a delivery goes to one connection, not both"
                return stream, await stream.next()
        await asyncio.sleep(0.05)
    raise AssertionError("no connection received the delivery")


async def test_acknowledging_on_anothers_stream_is_refused(network: Network) -> None:
    await verified_case_with_auto_stop(network)
    stream = await RawStream(network, "BANKB").open()
    try:
        delivery = await stream.next()
        # Signed by BANKA, sent over BANKB's connection (BANKB's certificate): the
        # certificate check refuses it before the stream's owner is even compared.
        await stream.ack(delivery.sequence, key=network.keys["BANKA"], sender="BANKA")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stream.next()
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_info(caught.value)[0].reason == "CERTIFICATE_MISMATCH"
    finally:
        await stream.close()
    again = await RawStream(network, "BANKB").open()
    try:
        assert (await again.next()).sequence == delivery.sequence, "not acknowledged"
    finally:
        await again.close()


async def test_unsigned_subscription_is_unauthenticated(network: Network) -> None:
    stream = RawStream(network, "BANKB")
    hello = sign(network.keys["BANKA"], "BANKB", delivery_pb2.SubscribeBody(), network.clock.now())
    await stream.call.write(delivery_pb2.StreamDeliveriesRequest(envelope=hello))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stream.next()
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await stream.close()


async def test_revoking_the_key_that_opened_a_stream_ends_it_before_the_next_delivery(
    network: Network,
) -> None:
    from hub.crypto.keys import PrivateKey
    from hub.service.admin import NewKey, Registry

    stream = await RawStream(network, "BANKB").open()
    replacement = PrivateKey.generate()
    try:
        await verified_case_with_auto_stop(network)
        first = await stream.next()
        await stream.ack(first.sequence)
        for _ in range(100):  # the ack is stored asynchronously
            if not network.server.hub.pending("BANKB"):
                break
            await asyncio.sleep(0.05)
        registry = Registry(network.store, network.clock)
        registry.add_key("BANKB", NewKey(replacement.algorithm, replacement.public_key))
        registry.revoke_key("BANKB", network.keys["BANKB"].key_id)

        await verified_case_with_auto_stop(network)  # a second order for BANKB
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await stream.next()
        assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_info(ended.value)[0].reason == "KEY_REVOKED"
    finally:
        await stream.close()

    # The order was not sent on the revoked stream; a stream opened with the new key gets it.
    fresh = await RawStream(network, "BANKB", key=replacement).open()
    try:
        again = await fresh.next()
        assert again.sequence > first.sequence
        assert notice_of(again).kind == delivery_pb2.NOTICE_KIND_ORDER
        assert again.attempt == 1, "it never went out on the revoked stream"
    finally:
        await fresh.close()
