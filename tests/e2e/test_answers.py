"""docs/orders.md, statement by statement, against a real hub: how a stop is answered when the
balance is short or empty, what the hub refuses in an answer, what a release and a return are
answered with, and when a hold lapses (issue 19 item 25)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from adapters.sdk import HubClient, HubError
from stophub.v1 import account_pb2, delivery_pb2, order_pb2
from tests.e2e.conftest import Network
from tests.e2e.wire_helpers import MULE, VICTIM, freeze_of, report

ORDERS_MD = Path(__file__).resolve().parents[2] / "docs" / "orders.md"
WALLET = account_pb2.AccountRef(
    institution_code="PAYX", account_number="PX88000003", holder_name="Wang Wu"
)
EXECUTED = order_pb2.EXECUTION_STATUS_EXECUTED
PARTIAL = order_pb2.EXECUTION_STATUS_PARTIALLY_EXECUTED
NO_MATCH = order_pb2.EXECUTION_STATUS_NO_MATCH
REJECTED = order_pb2.EXECUTION_STATUS_REJECTED
LOSS = 500_000


async def pending_stop(clients: dict[str, HubClient], network: Network) -> order_pb2.Order:
    """A verified case of a 5,000 yuan loss paid to the mule at Bank B, and the centre's stop."""
    case = await clients["BANKA"].create_report(report(network.clock.now(), (LOSS,)))
    case = await clients["BANKA"].verify_report(case.case_id)
    instruction = order_pb2.OrderInstruction(case_id=case.case_id)
    instruction.stop.account.CopyFrom(MULE)
    instruction.stop.amount_fen = LOSS
    fact = instruction.stop.transactions.add(amount_fen=LOSS)
    fact.transaction_time.CopyFrom(case.report.transactions[0].transaction_time)
    return await clients["CENTRE"].issue_order(instruction)


def result(order_id: str, status: int, held: int = 0, code: str = "") -> order_pb2.ExecutionResult:
    return order_pb2.ExecutionResult(
        order_id=order_id,
        status=status,  # type: ignore[arg-type]
        reason_code=code,
        amount_held_fen=held,
    )


def moved_on(
    answer: order_pb2.ExecutionResult,
    network: Network,
    amount: int = 300_000,
    *,
    ago: timedelta = timedelta(minutes=5),
    to: account_pb2.AccountRef = WALLET,
    carried: int = 0,
) -> order_pb2.ExecutionResult:
    t = answer.onward_transfers.add(
        amount_fen=amount, to_account=to, transaction_reference="B-OUT-1", carried_fen=carried
    )
    t.transfer_time.FromDatetime(network.clock.now() - ago)
    return answer


async def refused(call: object, field: str) -> HubError:
    with pytest.raises(HubError) as caught:
        await call  # type: ignore[misc]
    err = caught.value
    assert (err.code, err.reason, err.field) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        field,
    ), str(err)
    return err


async def state_of(clients: dict[str, HubClient], order: order_pb2.Order) -> order_pb2.Order:
    case = await clients["CENTRE"].get_case(order.case_id)
    return next(o for o in case.orders if o.order_id == order.order_id)


def documented_codes() -> list[str]:
    text = " ".join(ORDERS_MD.read_text(encoding="utf-8").split())
    found = re.search(r"`reason_code`, when given, is one of (.+?); `reason`", text)
    assert found, "docs/orders.md lists the reason codes"
    return re.findall(r"`([A-Z0-9]{4})`", found.group(1))


# ---- an empty or short account ------------------------------------------------------------------


async def test_an_empty_account_is_partially_executed_with_am04_and_nothing_held(
    clients: dict[str, HubClient], network: Network
) -> None:
    """Not a rejection: the order holds 0, and the money it names is followed (here, with no
    standing rule, put before the centre)."""
    stop = await pending_stop(clients, network)
    answer = moved_on(result(stop.order_id, PARTIAL, 0, "AM04"), network, LOSS)
    answered = await clients["BANKB"].answer_order(answer)
    assert (answered.state, answered.held_fen) == (order_pb2.ORDER_STATE_HOLDING, 0)
    async with clients["CENTRE"].deliveries("answers") as stream:
        async with asyncio.timeout(15):
            async for delivery in stream:
                await stream.ack(delivery.sequence)
                if delivery.notice.kind == delivery_pb2.NOTICE_KIND_TRAIL_ESCALATION:
                    assert "PAYX" in delivery.notice.summary
                    break


async def test_a_short_account_holds_what_is_left(
    clients: dict[str, HubClient], network: Network
) -> None:
    stop = await pending_stop(clients, network)
    answer = moved_on(result(stop.order_id, PARTIAL, 200_000, "AM04"), network)
    answer.available_balance_fen = 0
    answered = await clients["BANKB"].answer_order(answer)
    assert (answered.state, answered.held_fen) == (order_pb2.ORDER_STATE_HOLDING, 200_000)


async def test_rejected_and_no_match_hold_nothing_and_report_no_transfers(
    clients: dict[str, HubClient], network: Network
) -> None:
    stop = await pending_stop(clients, network)
    with_transfers = moved_on(result(stop.order_id, REJECTED, code="AM04"), network, LOSS)
    err = await refused(clients["BANKB"].answer_order(with_transfers), "onward_transfers")
    assert "PARTIALLY_EXECUTED with AM04" in err.message
    answered = await clients["BANKB"].answer_order(result(stop.order_id, REJECTED, code="AM04"))
    assert (answered.state, answered.held_fen) == (order_pb2.ORDER_STATE_REJECTED, 0)
    assert not answered.result.onward_transfers

    stop = await pending_stop(clients, network)
    unmatched = moved_on(result(stop.order_id, NO_MATCH, code="NMAT"), network, LOSS)
    await refused(clients["BANKB"].answer_order(unmatched), "onward_transfers")
    answered = await clients["BANKB"].answer_order(result(stop.order_id, NO_MATCH, code="NMAT"))
    assert answered.state == order_pb2.ORDER_STATE_NO_MATCH


# ---- what the hub refuses ----------------------------------------------------------------------


def change(**fields: object) -> Callable[[order_pb2.ExecutionResult], None]:
    def apply(r: order_pb2.ExecutionResult) -> None:
        for name, value in fields.items():
            setattr(r, name, value)

    return apply


@pytest.mark.parametrize(
    "status, held, code, field",
    [
        (EXECUTED, LOSS - 1, "", "amount_held_fen"),
        (PARTIAL, LOSS, "AM04", "status"),
        (PARTIAL, 100, "", "reason_code"),
        (PARTIAL, LOSS + 1, "AM04", "amount_held_fen"),
        (NO_MATCH, 0, "", "reason_code"),
        (REJECTED, 0, "", "reason_code"),
        (REJECTED, 100, "AC04", "amount_held_fen"),
        (NO_MATCH, 100, "NMAT", "amount_held_fen"),
        (REJECTED, 0, "XX99", "reason_code"),
    ],
)
async def test_a_hold_answer_that_breaks_a_rule_is_refused_naming_the_field(
    clients: dict[str, HubClient], network: Network, status: int, held: int, code: str, field: str
) -> None:
    stop = await pending_stop(clients, network)
    await refused(clients["BANKB"].answer_order(result(stop.order_id, status, held, code)), field)
    assert (await state_of(clients, stop)).state == order_pb2.ORDER_STATE_PENDING


async def test_the_reason_codes_are_those_the_docs_list(
    clients: dict[str, HubClient], network: Network
) -> None:
    stop = await pending_stop(clients, network)
    err = await refused(
        clients["BANKB"].answer_order(result(stop.order_id, REJECTED, code="XX99")), "reason_code"
    )
    listed = err.message.split("use one of ", 1)[1]
    assert [c.strip() for c in listed.split(",")] == documented_codes()


@pytest.mark.parametrize(
    "transfer, field",
    [
        (
            {"to": account_pb2.AccountRef(institution_code="PAYX", account_number="PX1234")},
            "onward_transfers[0].to_account.holder_name",
        ),
        ({"to": account_pb2.AccountRef()}, "onward_transfers[0].to_account.institution_code"),
        ({"to": MULE}, "onward_transfers[0].to_account"),
        ({"ago": timedelta(minutes=40)}, "onward_transfers[0].transfer_time"),
        ({"amount": 100_000, "carried": 100_001}, "onward_transfers[0].carried_fen"),
        ({"amount": LOSS + 1}, "onward_transfers[0].amount_fen"),
    ],
)
async def test_a_wrong_onward_transfer_refuses_the_whole_answer(
    clients: dict[str, HubClient], network: Network, transfer: dict[str, object], field: str
) -> None:
    """The credit came 20 minutes ago (wire_helpers.report); a transfer 40 minutes ago is
    more than 5 minutes before it."""
    stop = await pending_stop(clients, network)
    answer = moved_on(result(stop.order_id, PARTIAL, 0, "AM04"), network, **transfer)  # type: ignore[arg-type]
    await refused(clients["BANKB"].answer_order(answer), field)
    assert (await state_of(clients, stop)).state == order_pb2.ORDER_STATE_PENDING


async def test_an_order_is_answered_once_and_execute_time_is_checked(
    clients: dict[str, HubClient], network: Network
) -> None:
    stop = await pending_stop(clients, network)
    early = result(stop.order_id, EXECUTED, LOSS)
    early.execute_time.FromDatetime(network.clock.now() - timedelta(minutes=6))
    await refused(clients["BANKB"].answer_order(early), "execute_time")
    ahead = result(stop.order_id, EXECUTED, LOSS)
    ahead.execute_time.FromDatetime(network.clock.now() + timedelta(minutes=6))
    await refused(clients["BANKB"].answer_order(ahead), "execute_time")
    network.clock.advance(timedelta(seconds=7))
    answered = await clients["BANKB"].answer_order(result(stop.order_id, EXECUTED, LOSS))
    assert answered.effective_time.ToDatetime() == network.clock.now().replace(tzinfo=None)
    with pytest.raises(HubError) as again:
        await clients["BANKB"].answer_order(result(stop.order_id, EXECUTED, LOSS))
    assert (again.value.code, again.value.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "ORDER_NOT_PENDING",
    )


# ---- releases, returns, lapses -----------------------------------------------------------------


async def test_a_release_is_answered_with_the_whole_hold(
    clients: dict[str, HubClient], network: Network
) -> None:
    stop = await pending_stop(clients, network)
    await clients["BANKB"].answer_order(result(stop.order_id, PARTIAL, 300_000, "AM04"))
    instruction = order_pb2.OrderInstruction(case_id=stop.case_id)
    instruction.release.target_order_id = stop.order_id
    release = await clients["CENTRE"].issue_order(instruction)
    assert release.instruction.release.amount_fen == 300_000
    lifted = order_pb2.ExecutionResult(order_id=release.order_id, status=EXECUTED)
    for wrong in (299_999, 0):
        lifted.amount_released_fen = wrong
        await refused(clients["BANKB"].answer_order(lifted), "amount_released_fen")
    no_match = order_pb2.ExecutionResult(
        order_id=release.order_id, status=NO_MATCH, reason_code="NMAT"
    )
    await refused(clients["BANKB"].answer_order(no_match), "status")
    lifted.amount_released_fen = release.instruction.release.amount_fen
    done = await clients["BANKB"].answer_order(lifted)
    assert done.state == order_pb2.ORDER_STATE_COMPLETED
    assert (await state_of(clients, stop)).state == order_pb2.ORDER_STATE_RELEASED


async def test_a_return_pays_at_most_its_amount(
    clients: dict[str, HubClient], network: Network
) -> None:
    stop = await pending_stop(clients, network)
    await clients["BANKB"].answer_order(result(stop.order_id, EXECUTED, LOSS))
    freeze = freeze_of(stop.case_id, MULE, LOSS, takes_over=stop.order_id)
    frozen = await clients["CENTRE"].issue_order(freeze)
    await clients["BANKB"].answer_order(result(frozen.order_id, EXECUTED, LOSS))
    back = order_pb2.OrderInstruction(case_id=stop.case_id)
    back.fund_return.freeze_order_id = frozen.order_id
    back.fund_return.beneficiary.CopyFrom(VICTIM)
    back.fund_return.amount_fen = 200_000
    ret = await clients["CENTRE"].issue_order(back)
    paid = order_pb2.ExecutionResult(order_id=ret.order_id, status=EXECUTED)
    for wrong in (200_001, 199_999):
        paid.amount_returned_fen = wrong
        await refused(clients["BANKB"].answer_order(paid), "amount_returned_fen")
    paid.status = PARTIAL
    paid.amount_returned_fen = 150_000
    await refused(clients["BANKB"].answer_order(paid), "status")  # without a reason code
    paid.reason_code = "AM04"
    done = await clients["BANKB"].answer_order(paid)
    assert (done.state, done.result.amount_returned_fen) == (
        order_pb2.ORDER_STATE_COMPLETED,
        150_000,
    )


async def test_a_stop_lapses_48_hours_after_the_hub_took_its_answer(
    clients: dict[str, HubClient], network: Network
) -> None:
    stop = await pending_stop(clients, network)
    executed = result(stop.order_id, EXECUTED, LOSS)
    executed.execute_time.FromDatetime(network.clock.now() - timedelta(minutes=3))
    held = await clients["BANKB"].answer_order(executed)
    expires = held.expire_time.ToDatetime()
    assert expires - executed.execute_time.ToDatetime() == timedelta(hours=48)
    network.clock.advance(timedelta(hours=48) - timedelta(minutes=1))
    network.server.hub.sweep()
    assert (await state_of(clients, stop)).state == order_pb2.ORDER_STATE_HOLDING
    network.clock.advance(timedelta(minutes=2))
    network.server.hub.sweep()
    assert (await state_of(clients, stop)).state == order_pb2.ORDER_STATE_EXPIRED
    for code in ("BANKB", "CENTRE"):
        async with clients[code].deliveries("lapse") as stream:
            async with asyncio.timeout(15):
                async for delivery in stream:
                    await stream.ack(delivery.sequence)
                    if delivery.notice.kind == delivery_pb2.NOTICE_KIND_ORDER_EXPIRED:
                        assert delivery.notice.order.order_id == stop.order_id
                        assert not delivery.notice.HasField("origin")
                        break
    with pytest.raises(HubError) as answered:  # not an order: nothing to answer
        await clients["BANKB"].answer_order(result(stop.order_id, EXECUTED, LOSS))
    assert answered.value.reason == "ORDER_NOT_PENDING"
