"""The SDK's delivery stream when the hub refuses one of its messages as older than the replay
window: a message that went stale on its way is signed anew on a new stream, quietly; a
clock that is wrong is still an error the operator sees."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import grpc
import pytest

from adapters.sdk import DeliveryStream, HubError
from hub.api.delivery import DeliveryRouter
from hub.service.commands import delivery as delivery_commands
from hub.system.clock import ManualClock
from tests.e2e.conftest import Network
from tests.e2e.test_sdk_agent import (
    eventually,
    fraud_books,
    members,
    next_delivery,
    open_verified_case,
    stop_instruction,
)

REPLAY_WINDOW = timedelta(minutes=5)  # docs/signing.md, "Freshness"


def unacknowledged(network: Network, code: str) -> list[int]:
    with network.store(read_only=True) as uow:
        return uow.outbox.unacked([code], 100).get(code, [])


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO)
    return caplog


def late_once(clock: ManualClock, seen: list[str], message_id: str) -> None:
    """The first time only: the hub looks at the message after the replay window passed
    (a hub that slow, or case time moved on meanwhile, as the demo's does)."""
    if not seen:
        seen.append(message_id)
        clock.advance(REPLAY_WINDOW + timedelta(seconds=1))


def sdk_complaints(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.levelname} {r.getMessage()}"
        for r in caplog.records
        if r.name.startswith("adapters.") and r.levelno >= logging.WARNING
    ]


async def test_an_acknowledgement_that_went_stale_is_signed_anew_on_a_new_stream(
    network: Network,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    logged: pytest.LogCaptureFixture,
) -> None:
    books = fraud_books(clock)
    original = DeliveryRouter.acknowledge
    held: list[str] = []

    async def late(self: DeliveryRouter, conn: Any, envelope: Any, peer: Any) -> Any:
        late_once(clock, held, envelope.message_id)
        return await original(self, conn, envelope, peer)

    monkeypatch.setattr(DeliveryRouter, "acknowledge", late)
    async with members(network, "CENTRE", "BANKA", "BANKB") as (centre, banka, bankb):
        case_id = await open_verified_case(banka, books, clock)
        stop = await centre.issue_order(stop_instruction(case_id, books))
        stream = bankb.deliveries("primary", initial_backoff=0.05, max_backoff=0.2)

        async def acknowledged_all() -> bool:
            return unacknowledged(network, "BANKB") == []

        async with stream:
            first = await next_delivery(stream)
            assert first.notice.order.order_id == stop.order_id
            await stream.ack(first.sequence)
            # Refused as expired, the acknowledgement ends that stream; the SDK opens a new
            # one with a fresh subscription, gets the delivery again and acknowledges it
            # with a fresh signature, without handing it to the consumer a second time.
            await eventually(acknowledged_all)
            assert held and stream.reconnects == 1
            await asyncio.wait_for(stream.connected.wait(), 5)
            with pytest.raises(TimeoutError):
                await next_delivery(stream, timeout=1.5)
    with network.store(read_only=True) as uow:
        refused = [r for r in uow.audit.scan(0, 10_000) if r.entry.kind == "rejected"]
    assert [(r.entry.message_id, r.entry.detail.split(":")[0]) for r in refused] == [
        (held[0], "UNAUTHENTICATED ENVELOPE_EXPIRED")
    ]
    assert sdk_complaints(logged) == [], "an expected expiry is no error or warning"
    assert any("signing anew" in r.getMessage() for r in logged.records)


async def test_a_subscription_that_waited_past_the_window_is_signed_anew(
    network: Network,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    logged: pytest.LogCaptureFixture,
) -> None:
    original = delivery_commands.open_stream
    waited: list[str] = []

    def slow(hub: Any, envelope: Any, peer: Any = None) -> Any:
        late_once(clock, waited, envelope.message_id)
        return original(hub, envelope, peer)

    monkeypatch.setattr(delivery_commands, "open_stream", slow)
    async with members(network, "BANKB") as (bankb,):
        stream: DeliveryStream = bankb.deliveries("primary", initial_backoff=0.05)
        async with stream:
            await asyncio.wait_for(stream.connected.wait(), 10)
        assert waited and stream.reconnects == 1
    assert sdk_complaints(logged) == []


async def test_a_client_clock_behind_the_hub_still_ends_the_stream_with_the_refusal(
    network: Network, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Signing anew cannot cure a wrong clock: that stays an error for the operator."""
    behind = ManualClock(clock.now() - REPLAY_WINDOW - timedelta(minutes=1))
    async with network.client("BANKB", clock=behind) as bankb:
        stream: DeliveryStream = bankb.deliveries("primary", initial_backoff=0.05)
        async with stream:
            with pytest.raises(HubError) as caught:
                await next_delivery(stream)
    assert (caught.value.code, caught.value.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "ENVELOPE_EXPIRED",
    )
    assert stream.reconnects == 0
    ended = [r for r in caplog.records if r.name == "adapters.sdk.client"]
    assert [r.levelname for r in ended] == ["ERROR"]
