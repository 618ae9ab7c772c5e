"""The client SDK and the bank agent against a real hub over gRPC."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

import grpc
import pytest

from adapters.bank import BankAgent
from adapters.corebank import PaymentNetwork, SimulatedCoreBank
from adapters.sdk import Delivery, DeliveryStream, HubClient, HubError, HubSignatureError
from hub.bootstrap import serve
from hub.crypto.envelope import verify_envelope
from hub.crypto.keys import PrivateKey
from hub.system.clock import ManualClock
from stophub.v1 import account_pb2, case_pb2, delivery_pb2, order_pb2
from tests.e2e.conftest import Network

MULE = account_pb2.AccountRef(
    institution_code="BANKB", account_number="6222020000000002", holder_name="Li Si"
)
VICTIM = account_pb2.AccountRef(
    institution_code="BANKA", account_number="6222010000000001", holder_name="Zhang San"
)
ONWARD = ("BANKB", "6222020000000099", "Wang Wu")
HELD = 4_000_000  # the 50,000 yuan that came in, less the 10,000 already moved on


@dataclasses.dataclass
class Books:
    """Both banks' core systems, with a victim's money in the mule account at BANKB."""

    banka: SimulatedCoreBank
    bankb: SimulatedCoreBank
    credits: list[tuple[datetime, int]]


def fraud_books(clock: ManualClock) -> Books:
    network = PaymentNetwork(clock.now)
    banka = SimulatedCoreBank("BANKA", clock.now)
    bankb = SimulatedCoreBank("BANKB", clock.now)
    network.register(banka)
    network.register(bankb)
    banka.open_account(VICTIM.account_number, VICTIM.holder_name, 10_000_000)
    bankb.open_account(MULE.account_number, MULE.holder_name, 0)
    bankb.open_account(ONWARD[1], ONWARD[2], 0)
    credits = []
    for amount in (3_000_000, 2_000_000):
        credits.append((clock.now(), amount))
        banka.transfer(VICTIM.account_number, "BANKB", MULE.account_number, amount)
        clock.advance(timedelta(minutes=1))
    bankb.transfer(MULE.account_number, "BANKB", ONWARD[1], 1_000_000, reference="MULE-OUT-1")
    clock.advance(timedelta(minutes=10))
    return Books(banka, bankb, credits)


def report_paying(
    mule: account_pb2.AccountRef, credits: Iterable[tuple[datetime, int]], now: datetime
) -> case_pb2.Report:
    """Zhang San's report: each (time, fen) a mobile-banking transfer to `mule`."""
    report = case_pb2.Report(
        victim=case_pb2.Victim(name="Zhang San", id_number="110101199001011234", phone="138"),
        fraud_type=case_pb2.FRAUD_TYPE_IMPERSONATING_OFFICIALS,
        description="caller posing as police asked for a 'safe account' transfer",
    )
    report.victim_report_time.FromDatetime(now)
    for i, (at, amount) in enumerate(credits):
        t = report.transactions.add(
            amount_fen=amount,
            payer=VICTIM,
            payee=mule,
            channel=case_pb2.PAYMENT_CHANNEL_MOBILE_BANKING,
            transaction_reference=f"A-TX-{i + 1}",
        )
        t.transaction_time.FromDatetime(at)
    return report


def fraud_report(books: Books, now: datetime) -> case_pb2.Report:
    return report_paying(MULE, books.credits, now)


def stop_instruction(
    case_id: str, books: Books, *, holder: str = MULE.holder_name, amount: int = HELD
) -> order_pb2.OrderInstruction:
    instruction = order_pb2.OrderInstruction(case_id=case_id, note="stop the mule account")
    instruction.stop.account.CopyFrom(
        account_pb2.AccountRef(
            institution_code="BANKB", account_number=MULE.account_number, holder_name=holder
        )
    )
    instruction.stop.amount_fen = amount
    for at, fen in books.credits:
        fact = instruction.stop.transactions.add(amount_fen=fen)
        fact.transaction_time.FromDatetime(at)
    return instruction


def release_instruction(case_id: str, target: str) -> order_pb2.OrderInstruction:
    instruction = order_pb2.OrderInstruction(case_id=case_id)
    instruction.release.target_order_id = target
    instruction.release.reason = "investigation found the holder unrelated"
    return instruction


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, f"not within {timeout}s"
        await asyncio.sleep(0.05)


def answered(agent: BankAgent, order_id: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return order_id in agent.answered

    return check


async def next_delivery(stream: DeliveryStream, timeout: float = 15.0) -> Delivery:
    return await asyncio.wait_for(anext(stream), timeout)


async def next_of_kind(stream: DeliveryStream, kind: int, timeout: float = 15.0) -> Delivery:
    async with asyncio.timeout(timeout):
        while True:
            delivery = await anext(stream)
            await stream.ack(delivery.sequence)
            if delivery.notice.kind == kind:
                return delivery


@asynccontextmanager
async def running(agent: BankAgent) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(agent.run())
    try:
        yield task
    finally:
        await agent.stop()
        await asyncio.wait_for(task, 10)


@asynccontextmanager
async def members(network: Network, *codes: str) -> AsyncIterator[list[HubClient]]:
    clients = [network.client(code) for code in codes]
    try:
        yield clients
    finally:
        for client in clients:
            await client.close()


async def open_verified_case(banka: HubClient, books: Books, clock: ManualClock) -> str:
    case = await banka.create_report(fraud_report(books, clock.now()))
    verified = await banka.verify_report(case.case_id)
    assert verified.state == case_pb2.CASE_STATE_VERIFIED
    return case.case_id


def order_in(case: case_pb2.Case, order_id: str) -> order_pb2.Order:
    return next(o for o in case.orders if o.order_id == order_id)


async def test_stop_is_held_answered_signed_and_released(
    network: Network, clock: ManualClock
) -> None:
    books = fraud_books(clock)
    async with members(network, "CENTRE", "BANKA", "BANKB") as (centre, banka, bankb):
        case_id = await open_verified_case(banka, books, clock)
        agent = BankAgent(bankb, books.bankb)
        async with running(agent), centre.deliveries("ops") as centre_stream:
            stop = await centre.issue_order(stop_instruction(case_id, books))
            assert stop.state == order_pb2.ORDER_STATE_PENDING

            await eventually(answered(agent, stop.order_id))
            assert books.bankb.held(MULE.account_number) == HELD

            case = await centre.get_case(case_id)
            held = order_in(case, stop.order_id)
            assert held.state == order_pb2.ORDER_STATE_HOLDING
            assert held.held_fen == HELD
            assert held.result.status == order_pb2.EXECUTION_STATUS_EXECUTED
            assert held.result.available_balance_fen == 0
            [onward] = held.result.onward_transfers
            assert (onward.amount_fen, onward.to_account.account_number) == (1_000_000, ONWARD[1])
            assert onward.transaction_reference == "MULE-OUT-1"
            answer_events = [e for e in case.events if e.kind == "order.answered"]
            assert [(e.actor, e.message_id) for e in answer_events] == [
                ("BANKB", f"answer-{stop.order_id}")
            ]

            # The centre sees BANKB's own signature on the answer, forwarded unchanged.
            notice = await next_of_kind(centre_stream, delivery_pb2.NOTICE_KIND_ORDER_ANSWERED)
            assert notice.origin_verified, notice.problems
            origin = notice.notice.origin
            assert (origin.sender, origin.message_id) == ("BANKB", f"answer-{stop.order_id}")
            signed = order_pb2.ExecutionResult.FromString(origin.body)
            assert (signed.order_id, signed.amount_held_fen) == (stop.order_id, HELD)

            release = await centre.issue_order(release_instruction(case_id, stop.order_id))

            await eventually(answered(agent, release.order_id))
            case = await centre.get_case(case_id)
            assert order_in(case, stop.order_id).state == order_pb2.ORDER_STATE_RELEASED
            done = order_in(case, release.order_id)
            assert done.state == order_pb2.ORDER_STATE_COMPLETED
            assert done.result.amount_released_fen == HELD
            assert books.bankb.held(MULE.account_number) == 0
            assert case.state == case_pb2.CASE_STATE_CLOSED
    assert agent.security_events == []


async def test_holder_name_mismatch_is_answered_no_match(
    network: Network, clock: ManualClock
) -> None:
    books = fraud_books(clock)
    async with members(network, "CENTRE", "BANKA", "BANKB") as (centre, banka, bankb):
        case_id = await open_verified_case(banka, books, clock)
        agent = BankAgent(bankb, books.bankb)
        async with running(agent):
            stop = await centre.issue_order(stop_instruction(case_id, books, holder="Wang Wu"))

            await eventually(answered(agent, stop.order_id))
        order = order_in(await centre.get_case(case_id), stop.order_id)
        assert order.state == order_pb2.ORDER_STATE_NO_MATCH
        assert order.result.status == order_pb2.EXECUTION_STATUS_NO_MATCH
        assert order.result.reason_code == "NMAT"
        assert (order.held_fen, order.result.available_balance_fen) == (0, 0)
        assert books.bankb.held(MULE.account_number) == 0


async def test_stop_withdrawn_before_the_bank_answered_leaves_no_hold(
    network: Network, clock: ManualClock
) -> None:
    books = fraud_books(clock)
    async with members(network, "CENTRE", "BANKA", "BANKB") as (centre, banka, bankb):
        case_id = await open_verified_case(banka, books, clock)
        # The centre withdraws the stop while BANKB's agent is offline; the agent then sees
        # the stop, the release and the withdrawal, in that order.
        stop = await centre.issue_order(stop_instruction(case_id, books))
        release = await centre.issue_order(release_instruction(case_id, stop.order_id))
        agent = BankAgent(bankb, books.bankb)
        async with running(agent):

            async def settled() -> bool:
                return release.order_id in agent.answered and any(
                    "already lifted" in line for line in agent.history
                )

            await eventually(settled)
        case = await centre.get_case(case_id)
        assert order_in(case, stop.order_id).state == order_pb2.ORDER_STATE_CANCELLED
        done = order_in(case, release.order_id)
        assert done.state == order_pb2.ORDER_STATE_COMPLETED
        assert done.result.amount_released_fen == 0
        assert books.bankb.held(MULE.account_number) == 0
        assert agent.security_events == []


async def test_unacknowledged_delivery_comes_again_on_a_new_stream(
    network: Network, clock: ManualClock
) -> None:
    books = fraud_books(clock)
    async with members(network, "CENTRE", "BANKA", "BANKB") as (centre, banka, bankb):
        case_id = await open_verified_case(banka, books, clock)
        stop = await centre.issue_order(stop_instruction(case_id, books))

        async with bankb.deliveries("primary") as stream:
            first = await next_delivery(stream)
        assert first.attempt == 1
        assert first.notice.order.order_id == stop.order_id
        assert first.origin_verified, first.problems

        async with bankb.deliveries("primary") as stream:
            again = await next_delivery(stream)
            assert again.sequence == first.sequence
            assert again.attempt > first.attempt
            await stream.ack(again.sequence)
            # The hub sends nothing more once the delivery is acknowledged, even after its
            # acknowledgement timeout (1 s in these tests) has passed.
            await asyncio.sleep(1.5)

        async with bankb.deliveries("primary") as stream:
            with pytest.raises(TimeoutError):
                await next_delivery(stream, timeout=2.5)


async def test_stream_reconnects_through_a_hub_restart_and_gets_the_redelivery(
    network: Network, clock: ManualClock
) -> None:
    books = fraud_books(clock)
    async with members(network, "CENTRE", "BANKA", "BANKB") as (centre, banka, bankb):
        case_id = await open_verified_case(banka, books, clock)
        stop = await centre.issue_order(stop_instruction(case_id, books))
        async with bankb.deliveries("primary", initial_backoff=0.1, max_backoff=1.0) as stream:
            first = await next_delivery(stream)
            assert first.notice.order.order_id == stop.order_id

            await network.server.stop(0)
            network.store.dispose()
            # Down long enough for several reconnect attempts to fail.
            await asyncio.sleep(1.5)
            assert not stream.connected.is_set()
            failed_attempts = stream.reconnects
            assert failed_attempts >= 2
            server, store = await serve(
                network.database_url,
                network.hub_key,
                network.target,
                clock=clock,
                ack_timeout=1.0,
                workers=4,
                tls=network.hub_tls,
            )
            network.server, network.store = server, store

            again = await next_delivery(stream, timeout=30)
            assert (again.sequence, again.notice.order.order_id) == (first.sequence, stop.order_id)
            assert again.attempt > first.attempt
            assert stream.reconnects >= failed_attempts
            assert stream.connected.is_set()
            await stream.ack(again.sequence)


async def test_refusal_is_a_readable_signed_hub_error(network: Network, clock: ManualClock) -> None:
    books = fraud_books(clock)
    async with members(network, "BANKA") as (banka,):
        case_id = await open_verified_case(banka, books, clock)
        with pytest.raises(HubError) as caught:
            await banka.issue_order(stop_instruction(case_id, books), message_id="banka-order-1")
        err = caught.value
        assert err.code is grpc.StatusCode.PERMISSION_DENIED
        assert err.reason == "KIND_NOT_ALLOWED"
        assert "BANKA" in err.message and "IssueOrder" in err.message
        assert err.message_id == "banka-order-1"
        assert err.metadata["sender"] == "BANKA"
        assert err.metadata["message_id"] == "banka-order-1"
        assert err.signed and not err.transient
        assert err.rejection_envelope is not None
        assert verify_envelope(err.rejection_envelope, network.hub_public_key)
        assert "PERMISSION_DENIED KIND_NOT_ALLOWED" in str(err)

        with pytest.raises(HubError) as caught:
            await banka.call("VerifyReport", case_pb2.Verification(case_id=case_id))
        assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.field == "outcome"

    unreachable = HubClient(
        "127.0.0.1:1",
        institution="BANKA",
        key=network.keys["BANKA"],
        hub_public_key=network.hub_public_key,
        clock=clock,
        tls=network.tls["BANKA"],
        timeout=5,
    )
    async with unreachable:
        with pytest.raises(HubError) as caught:
            await unreachable.get_case(case_id)
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert caught.value.reason == ""
    assert caught.value.transient and not caught.value.signed


async def test_answers_under_a_wrong_hub_key_are_never_trusted(
    network: Network, clock: ManualClock
) -> None:
    books = fraud_books(clock)
    impostor_key = PrivateKey.generate().public_key
    async with members(network, "CENTRE", "BANKA") as (centre, banka):
        case_id = await open_verified_case(banka, books, clock)
        await centre.issue_order(stop_instruction(case_id, books))
    async with network.client("BANKB", hub_public_key=impostor_key) as fooled:
        with pytest.raises(HubSignatureError):
            await fooled.get_case(case_id)
        # A signed refusal is an answer too.
        with pytest.raises(HubSignatureError):
            await fooled.issue_order(stop_instruction(case_id, books))
        async with fooled.deliveries("primary") as stream:
            with pytest.raises(HubSignatureError):
                await next_delivery(stream)
            with pytest.raises(StopAsyncIteration):
                await next_delivery(stream)


async def test_agent_refuses_orders_it_cannot_trace_to_the_centre(
    network: Network, clock: ManualClock
) -> None:
    books = fraud_books(clock)
    async with members(network, "CENTRE", "BANKA", "BANKB") as (centre, banka, bankb):
        case_id = await open_verified_case(banka, books, clock)
        stop = await centre.issue_order(stop_instruction(case_id, books))
        async with bankb.deliveries("primary") as stream:
            genuine = await next_delivery(stream)
            assert genuine.origin_verified, genuine.problems
            origin = genuine.notice.origin
            assert await bankb.verify_forwarded(origin) is None
            forged_origin = type(origin)()
            forged_origin.CopyFrom(origin)
            forged_origin.body = origin.body[:-1] + bytes([origin.body[-1] ^ 1])
            assert await bankb.verify_forwarded(forged_origin) is not None

            agent = BankAgent(bankb, books.bankb)
            unsigned = dataclasses.replace(
                genuine, origin_verified=False, problems=("origin: forged in this test",)
            )
            assert await agent.handle(unsigned) is True  # acknowledged, never executed

            altered = delivery_pb2.Notice()
            altered.CopyFrom(genuine.notice)
            altered.order.instruction.stop.amount_fen = 2 * HELD
            assert await agent.handle(dataclasses.replace(genuine, notice=altered)) is True

            assert books.bankb.held(MULE.account_number) == 0
            assert stop.order_id not in agent.answered
            assert len(agent.security_events) == 2
            assert "forged in this test" in agent.security_events[0]
            assert "differs from what CENTRE signed" in agent.security_events[1]

            # The genuine delivery is carried out.
            assert await agent.handle(genuine) is True
            first_reply = agent.answered[stop.order_id]
            assert first_reply.state == order_pb2.ORDER_STATE_HOLDING

            # Delivered again (the ack was lost): the same signed bytes go out, and the hub
            # answers with its original reply.
            agent.answered.clear()
            assert await agent.handle(genuine) is True
            assert agent.answered[stop.order_id] == first_reply

            # Delivered again to an agent restarted after a crash: the core bank repeats its
            # outcome, the hub keeps the first answer, and the delivery may be acknowledged.
            clock.advance(timedelta(seconds=30))
            restarted = BankAgent(bankb, books.bankb)
            assert await restarted.handle(genuine) is True
            assert any("already given before a restart" in line for line in restarted.history)
            await stream.ack(genuine.sequence)
        assert books.bankb.held(MULE.account_number) == HELD
        case = await centre.get_case(case_id)
        assert [e.kind for e in case.events].count("order.answered") == 1


async def test_rule_stop_then_freeze_then_return_through_the_agent(
    network: Network, clock: ManualClock
) -> None:
    books = fraud_books(clock)
    async with members(network, "CENTRE", "BANKA", "BANKB") as (centre, banka, bankb):
        rule = await centre.set_auto_stop_rule(
            order_pb2.AutoStopRule(rule_id="R1", enabled=True, max_amount_fen=10_000_000)
        )
        assert (rule.centre_code, rule.enabled) == ("CENTRE", True)
        agent = BankAgent(bankb, books.bankb)
        async with running(agent):
            case_id = await open_verified_case(banka, books, clock)
            [stop] = (await centre.get_case(case_id)).orders
            assert (stop.auto_stop_rule_id, stop.issued_by) == ("R1", "CENTRE")

            await eventually(answered(agent, stop.order_id))
            # The rule stops the whole 50,000 yuan loss; 10,000 already left the account.
            held = agent.answered[stop.order_id]
            assert held.result.status == order_pb2.EXECUTION_STATUS_PARTIALLY_EXECUTED
            assert (held.result.reason_code, held.held_fen) == ("AM04", HELD)

            freeze = order_pb2.OrderInstruction(case_id=case_id)
            freeze.freeze.account.CopyFrom(MULE)
            freeze.freeze.amount_fen = HELD
            freeze.freeze.filed_case_number = "BJ-2026-0042"
            freeze.freeze.approving_authority = "Beijing PSB"
            freeze.freeze.term_months = 6
            freeze.freeze.stop_order_id = stop.order_id
            frozen = await centre.issue_order(freeze)
            await eventually(answered(agent, frozen.order_id))
            case = await centre.get_case(case_id)
            assert order_in(case, stop.order_id).state == order_pb2.ORDER_STATE_CONVERTED
            assert order_in(case, frozen.order_id).state == order_pb2.ORDER_STATE_HOLDING
            assert books.bankb.held(MULE.account_number) == HELD

            back = order_pb2.OrderInstruction(case_id=case_id)
            back.fund_return.freeze_order_id = frozen.order_id
            back.fund_return.beneficiary.CopyFrom(VICTIM)
            back.fund_return.amount_fen = HELD
            returned = await centre.issue_order(back)
            await eventually(answered(agent, returned.order_id))
        case = await centre.get_case(case_id)
        done = order_in(case, returned.order_id)
        assert done.state == order_pb2.ORDER_STATE_COMPLETED
        assert done.result.amount_returned_fen == HELD
        assert order_in(case, frozen.order_id).state == order_pb2.ORDER_STATE_RETURNED
        assert case.state == case_pb2.CASE_STATE_CLOSED
        assert books.banka.balance(VICTIM.account_number) == 10_000_000 - 5_000_000 + HELD
        assert books.bankb.balance(MULE.account_number) == 0
        assert agent.security_events == []


async def test_a_stream_the_hub_refuses_ends_with_a_readable_error(
    network: Network, clock: ManualClock
) -> None:
    async with network.client("BANKB", key=PrivateKey.generate()) as unregistered:
        async with unregistered.deliveries("primary") as stream:
            with pytest.raises(HubError) as caught:
                await next_delivery(stream)
        err = caught.value
        assert (err.code, err.reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNKNOWN_KEY")
        assert err.signed and not err.transient
        assert stream.reconnects == 0
        assert not stream.connected.is_set(), "a refused subscription never counts as connected"


async def test_connected_means_the_hub_accepted_the_subscription(
    network: Network, clock: ManualClock
) -> None:
    async with members(network, "BANKB") as (bankb,), bankb.deliveries("primary") as stream:
        await asyncio.wait_for(stream.connected.wait(), timeout=5)
        await asyncio.sleep(0.1)
        assert network.server.router.connections() == {"BANKB": 1}


async def test_lists_follow_page_tokens_and_keys_come_from_the_registry(
    network: Network, clock: ManualClock
) -> None:
    books = fraud_books(clock)
    async with members(network, "BANKA", "REG") as (banka, regulator):
        verified = await open_verified_case(banka, books, clock)
        for _ in range(2):
            await banka.create_report(fraud_report(books, clock.now()))
        cases = await banka.list_cases(page_size=2)
        assert len(cases) == 3 and len({c.case_id for c in cases}) == 3
        only = await regulator.list_cases(state=case_pb2.CASE_STATE_VERIFIED, page_size=1)
        assert [c.case_id for c in only] == [verified]
        codes = {i.code for i in await regulator.list_institutions(page_size=2)}
        assert codes == {"HUB", "CENTRE", "BANKA", "BANKB", "PAYX", "REG"}

        centre_key = network.keys["CENTRE"]
        assert await banka.public_key("CENTRE", centre_key.key_id) == centre_key.public_key
        assert await banka.public_key("CENTRE", "0000000000000000") is None
        assert await banka.public_key("NOSUCH", centre_key.key_id) is None
        # A key is valid for what it signed after it was registered, not long before.
        before = clock.now() - timedelta(days=1)
        assert await banka.public_key("CENTRE", centre_key.key_id, at=before) is None


async def test_an_upheld_appeal_releases_the_hold_at_the_bank(
    network: Network, clock: ManualClock
) -> None:
    """The release comes from the centre's signed decision on the appeal, not from an order
    instruction: the agent checks that decision and lifts the hold."""
    books = fraud_books(clock)
    async with members(network, "CENTRE", "BANKA", "BANKB") as (centre, banka, bankb):
        case_id = await open_verified_case(banka, books, clock)
        agent = BankAgent(bankb, books.bankb)
        async with running(agent):
            stop = await centre.issue_order(stop_instruction(case_id, books))
            await eventually(answered(agent, stop.order_id))
            assert books.bankb.held(MULE.account_number) == HELD
            appeal = await bankb.file_appeal(stop.order_id, "salary account: unrelated money")
            upheld = await centre.decide_appeal(appeal.appeal_id, True, "the money is his own")
            [release_id] = upheld.release_order_ids
            await eventually(answered(agent, release_id))
            case = await centre.get_case(case_id)
            assert order_in(case, stop.order_id).state == order_pb2.ORDER_STATE_RELEASED
            assert order_in(case, release_id).result.amount_released_fen == HELD
            assert books.bankb.held(MULE.account_number) == 0
    assert agent.security_events == []
