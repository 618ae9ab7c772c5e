"""The case rules as a bank engineer meets them: each refusal over gRPC, with its status,
reason and field, and no state changed by it."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest
from sqlalchemy import func, select

from adapters.sdk import HubClient, HubError
from hub.store.tables import audit_log, case_events
from stophub.v1 import case_pb2, order_pb2
from tests.e2e.conftest import Network
from tests.e2e.wire_helpers import MULE, report


def stop_of(case_id: str, amount: int, network: Network) -> order_pb2.OrderInstruction:
    instruction = order_pb2.OrderInstruction(case_id=case_id)
    instruction.stop.account.CopyFrom(MULE)
    instruction.stop.amount_fen = amount
    fact = instruction.stop.transactions.add(amount_fen=amount)
    fact.transaction_time.FromDatetime(network.clock.now() - timedelta(minutes=10))
    return instruction


def answer_of(order_id: str, held: int) -> order_pb2.ExecutionResult:
    return order_pb2.ExecutionResult(
        order_id=order_id,
        status=order_pb2.EXECUTION_STATUS_EXECUTED,
        amount_held_fen=held,
        available_balance_fen=0,
    )


def counts(network: Network) -> tuple[int, int]:
    with network.store.engine.connect() as conn:
        events = conn.execute(select(func.count()).select_from(case_events)).scalar_one()
        rejected = conn.execute(
            select(func.count()).select_from(audit_log).where(audit_log.c.kind == "rejected")
        ).scalar_one()
    return int(events), int(rejected)


async def refused(network: Network, call: object) -> HubError:
    """Run a call that must be refused; check it changed nothing and was audited."""
    events_before, rejected_before = counts(network)
    with pytest.raises(HubError) as caught:
        await call  # type: ignore[misc]
    events_after, rejected_after = counts(network)
    assert events_after == events_before, "a refused message changes no state"
    assert rejected_after == rejected_before + 1, "a refused message is kept in the audit log"
    assert caught.value.signed, "the refusal is signed by the hub"
    assert caught.value.message
    return caught.value


async def verified_case(clients: dict[str, HubClient], network: Network) -> case_pb2.Case:
    case = await clients["BANKA"].create_report(report(network.clock.now(), (500_000,)))
    return await clients["BANKA"].verify_report(case.case_id, confirmed=True)


async def test_verification_rules(clients: dict[str, HubClient], network: Network) -> None:
    case = await clients["BANKA"].create_report(report(network.clock.now()))
    err = await refused(network, clients["BANKB"].verify_report(case.case_id, confirmed=True))
    assert (err.code, err.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "NOT_REPORTING_INSTITUTION",
    )
    await clients["BANKA"].verify_report(case.case_id, confirmed=True)
    err = await refused(network, clients["BANKA"].verify_report(case.case_id, confirmed=True))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ALREADY_VERIFIED")
    assert "already verified" in err.message
    err = await refused(network, clients["BANKA"].verify_report("C-NOPE", confirmed=True))
    assert err.code == grpc.StatusCode.NOT_FOUND


async def test_orders_before_verification_and_from_the_wrong_kind(
    clients: dict[str, HubClient], network: Network
) -> None:
    case = await clients["BANKA"].create_report(report(network.clock.now(), (500_000,)))
    err = await refused(
        network, clients["CENTRE"].issue_order(stop_of(case.case_id, 500_000, network))
    )
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CASE_NOT_VERIFIED")
    for code in ("BANKB", "PAYX", "REG"):
        err = await refused(
            network, clients[code].issue_order(stop_of(case.case_id, 500_000, network))
        )
        assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "KIND_NOT_ALLOWED")


async def test_answers_come_only_from_the_addressee_and_only_once(
    clients: dict[str, HubClient], network: Network
) -> None:
    case = await verified_case(clients, network)
    stop = await clients["CENTRE"].issue_order(stop_of(case.case_id, 500_000, network))
    err = await refused(network, clients["PAYX"].answer_order(answer_of(stop.order_id, 500_000)))
    assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_ADDRESSEE")
    err = await refused(network, clients["BANKB"].answer_order(answer_of(stop.order_id, 600_000)))
    assert (err.code, err.field) == (grpc.StatusCode.INVALID_ARGUMENT, "amount_held_fen")
    held = await clients["BANKB"].answer_order(answer_of(stop.order_id, 500_000))
    assert held.state == order_pb2.ORDER_STATE_HOLDING
    assert held.expire_time.ToDatetime() - held.effective_time.ToDatetime() == timedelta(hours=48)
    err = await refused(network, clients["BANKB"].answer_order(answer_of(stop.order_id, 500_000)))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ORDER_NOT_PENDING")


async def test_an_answer_to_a_released_order_is_refused(
    clients: dict[str, HubClient], network: Network
) -> None:
    case = await verified_case(clients, network)
    stop = await clients["CENTRE"].issue_order(stop_of(case.case_id, 500_000, network))
    release = order_pb2.OrderInstruction(case_id=case.case_id)
    release.release.target_order_id = stop.order_id
    release.release.reason = "reported in error"
    await clients["CENTRE"].issue_order(release)
    err = await refused(network, clients["BANKB"].answer_order(answer_of(stop.order_id, 500_000)))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ORDER_NOT_PENDING")
    assert "withdrawn" in err.message


async def test_a_third_stop_on_one_account_is_refused(
    clients: dict[str, HubClient], network: Network
) -> None:
    case = await verified_case(clients, network)
    for _ in range(2):
        stop = await clients["CENTRE"].issue_order(stop_of(case.case_id, 500_000, network))
        await clients["BANKB"].answer_order(answer_of(stop.order_id, 500_000))
    err = await refused(
        network, clients["CENTRE"].issue_order(stop_of(case.case_id, 500_000, network))
    )
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "STOP_LIMIT_REACHED")
    assert "freeze it instead" in err.message


async def test_a_freeze_needs_its_legal_basis(
    clients: dict[str, HubClient], network: Network
) -> None:
    case = await verified_case(clients, network)
    freeze = order_pb2.OrderInstruction(case_id=case.case_id)
    freeze.freeze.account.CopyFrom(MULE)
    freeze.freeze.amount_fen = 500_000
    freeze.freeze.approving_authority = "PSB"
    freeze.freeze.term_months = 6
    err = await refused(network, clients["CENTRE"].issue_order(freeze))
    assert (err.code, err.field) == (grpc.StatusCode.INVALID_ARGUMENT, "freeze.filed_case_number")
    freeze.freeze.filed_case_number = "JX-1"
    freeze.freeze.term_months = 7
    err = await refused(network, clients["CENTRE"].issue_order(freeze))
    assert (err.code, err.field) == (grpc.StatusCode.INVALID_ARGUMENT, "freeze.term_months")


async def test_who_may_read_a_case(clients: dict[str, HubClient], network: Network) -> None:
    case = await verified_case(clients, network)
    with pytest.raises(HubError) as caught:
        await clients["BANKB"].get_case(case.case_id)
    assert (caught.value.code, caught.value.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "NOT_PARTY_TO_CASE",
    )
    await clients["CENTRE"].issue_order(stop_of(case.case_id, 500_000, network))
    seen_by_addressee = await clients["BANKB"].get_case(case.case_id)
    assert not seen_by_addressee.report.victim.id_number, "the mule's bank does not see the victim"
    seen_by_reporter = await clients["BANKA"].get_case(case.case_id)
    assert seen_by_reporter.report.victim.id_number == "110101199001011234"
    listed = await clients["REG"].list_cases()
    assert [c.case_id for c in listed] == [case.case_id]
