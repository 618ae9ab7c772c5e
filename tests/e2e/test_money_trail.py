"""The money trail over gRPC, as the centre and a bank meet it: a downstream stop the hub
issues by itself, a wrong onward transfer refused with INVALID_ARGUMENT naming it, the trail
read back, and `stophub case trail --svg` on the same database."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from xml.etree import ElementTree

import grpc
import pytest
from click.testing import CliRunner

from adapters.sdk import HubClient, HubError
from hub.cli import main
from stophub.v1 import account_pb2, case_pb2, delivery_pb2, order_pb2, returns_pb2, trail_pb2
from tests.e2e.conftest import Network
from tests.e2e.wire_helpers import MULE, report

WALLET = account_pb2.AccountRef(
    institution_code="PAYX", account_number="PX88000003", holder_name="Wang Wu"
)


def answer_with_onward(
    order_id: str, network: Network, amount: int, carried: int = 0
) -> order_pb2.ExecutionResult:
    result = order_pb2.ExecutionResult(
        order_id=order_id,
        status=order_pb2.EXECUTION_STATUS_PARTIALLY_EXECUTED,
        reason_code="AM04",
        amount_held_fen=100_000,
    )
    t = result.onward_transfers.add(
        amount_fen=amount, to_account=WALLET, transaction_reference="B-OUT-1", carried_fen=carried
    )
    t.transfer_time.FromDatetime(network.clock.now() - timedelta(minutes=2))
    return result


async def test_the_hub_follows_the_money_and_refuses_a_wrong_transfer(
    clients: dict[str, HubClient], network: Network, tmp_path: Path
) -> None:
    centre, bank_a, bank_b = clients["CENTRE"], clients["BANKA"], clients["BANKB"]
    await centre.set_auto_stop_rule(
        order_pb2.AutoStopRule(
            rule_id="R1", enabled=True, max_amount_fen=10_000_000, follow_onward_transfers=True
        )
    )
    case = await bank_a.create_report(report(network.clock.now(), (500_000,)))
    case = await bank_a.verify_report(case.case_id, confirmed=True)
    [stop] = case.orders

    # More carried on than the account received: refused, naming the transfer, nothing issued.
    with pytest.raises(HubError) as wrong:
        await bank_b.answer_order(answer_with_onward(stop.order_id, network, 500_001))
    assert wrong.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert wrong.value.field == "onward_transfers[0].amount_fen"
    assert "transfer 0 (B-OUT-1)" in wrong.value.message
    assert len((await centre.get_case(case.case_id)).orders) == 1

    await bank_b.answer_order(answer_with_onward(stop.order_id, network, 900_000, 400_000))
    case = await centre.get_case(case.case_id)
    [down] = [o for o in case.orders if o.addressed_to == "PAYX"]
    assert down.instruction.stop.upstream_order_id == stop.order_id
    assert down.instruction.stop.amount_fen == 400_000 and down.layer == 2

    # The wallet's stream carries the order, with the centre's signed rule and the bank's
    # signed answer that caused it.
    async with clients["PAYX"].deliveries("walk") as stream:
        async for delivery in stream:
            if delivery.notice.kind == delivery_pb2.NOTICE_KIND_ORDER:
                assert delivery.notice.order.order_id == down.order_id
                assert delivery.origin_verified and delivery.authorization_verified
                assert delivery.notice.origin.sender == "BANKB"
                await stream.ack(delivery.sequence)
                break

    trail = await centre.get_case_trail(case.case_id)
    assert [(n.layer, n.account.institution_code) for n in trail.nodes] == [
        (0, "BANKA"),
        (1, "BANKB"),
        (2, "PAYX"),
    ]
    [onward_edge] = [e for e in trail.edges if e.reported_by_order_id]
    assert (onward_edge.amount_fen, onward_edge.carried_fen) == (900_000, 400_000)
    assert trail.nodes[1].held_fen == 100_000
    assert trail.nodes[2].status == trail_pb2.TRAIL_NODE_STATUS_ORDERED

    with pytest.raises(HubError) as not_shared:
        await bank_b.get_case_trail(case.case_id)
    assert (not_shared.value.code, not_shared.value.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "TRAIL_NOT_SHARED",
    )
    with pytest.raises(HubError) as nothing_frozen:
        await centre.start_distribution(
            returns_pb2.StartDistributionBody(case_id=case.case_id, account=MULE)
        )
    assert nothing_frozen.value.code == grpc.StatusCode.FAILED_PRECONDITION

    svg = tmp_path / "trail.svg"
    shown = CliRunner().invoke(
        main, ["case", "trail", case.case_id, "--svg", str(svg), "--db", network.database_url]
    )
    assert shown.exit_code == 0, shown.output
    assert "L2 PAYX" in shown.output and MULE.account_number not in shown.output
    drawn = ElementTree.fromstring(svg.read_text(encoding="utf-8"))
    assert len(drawn.findall(".//{http://www.w3.org/2000/svg}g[@data-node]")) == 3
    missing = CliRunner().invoke(main, ["case", "trail", "C-NOPE", "--db", network.database_url])
    assert missing.exit_code != 0 and "no case" in missing.output


async def frozen_stop(
    centre: HubClient, bank_b: HubClient, case: case_pb2.Case, held: int
) -> order_pb2.Order:
    """The centre stops the mule for the case's credits, Bank B holds `held`, and the centre
    freezes what it holds."""
    stop = order_pb2.OrderInstruction(case_id=case.case_id)
    stop.stop.account.CopyFrom(MULE)
    stop.stop.amount_fen = case.loss_fen
    for t in case.report.transactions:
        fact = stop.stop.transactions.add(amount_fen=t.amount_fen)
        fact.transaction_time.CopyFrom(t.transaction_time)
    issued = await centre.issue_order(stop)
    await bank_b.answer_order(
        order_pb2.ExecutionResult(
            order_id=issued.order_id,
            status=order_pb2.EXECUTION_STATUS_PARTIALLY_EXECUTED
            if held < case.loss_fen
            else order_pb2.EXECUTION_STATUS_EXECUTED,
            reason_code="AM04" if held < case.loss_fen else "",
            amount_held_fen=held,
        )
    )
    freeze = order_pb2.OrderInstruction(case_id=case.case_id)
    freeze.freeze.CopyFrom(
        order_pb2.FreezeInstruction(
            account=MULE,
            amount_fen=held,
            filed_case_number="JX-2026-0312",
            approving_authority="PSB Xicheng",
            term_months=6,
            stop_order_id=issued.order_id,
        )
    )
    frozen = await centre.issue_order(freeze)
    await bank_b.answer_order(
        order_pb2.ExecutionResult(
            order_id=frozen.order_id,
            status=order_pb2.EXECUTION_STATUS_EXECUTED,
            amount_held_fen=held,
        )
    )
    return frozen


async def test_two_victims_of_one_mule_share_what_is_frozen_after_the_notice(
    clients: dict[str, HubClient], network: Network
) -> None:
    centre, bank_b, payx = clients["CENTRE"], clients["BANKB"], clients["PAYX"]
    first = await clients["BANKA"].create_report(report(network.clock.now(), (600_000,)))
    first = await clients["BANKA"].verify_report(first.case_id, confirmed=True)
    body = report(network.clock.now(), (300_000,))
    for t in body.transactions:
        t.payer.CopyFrom(
            account_pb2.AccountRef(
                institution_code="PAYX", account_number="PX88000007", holder_name="Sun Ba"
            )
        )
    second = await payx.create_report(body)
    assert not second.linked_cases, "links are read with GetCase, not in the report's answer"
    second = await payx.verify_report(second.case_id, confirmed=True)
    await frozen_stop(centre, bank_b, first, 500_000)
    await frozen_stop(centre, bank_b, second, 100_000)
    assert [lc.case_id for lc in (await centre.get_case(first.case_id)).linked_cases] == [
        second.case_id
    ]

    started = await centre.start_distribution(
        returns_pb2.StartDistributionBody(case_id=first.case_id, account=MULE)
    )
    assert started.method == returns_pb2.DISTRIBUTION_METHOD_PRO_RATA
    assert [(s.claim_fen, s.share_fen) for s in started.shares] == [
        (600_000, 400_000),
        (300_000, 200_000),
    ]
    await bank_b.object_to_distribution(started.distribution_id, "the holder disputes 50,000")
    with pytest.raises(HubError) as read_only:
        await clients["REG"].object_to_distribution(started.distribution_id, "no")
    assert (read_only.value.code, read_only.value.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "KIND_NOT_ALLOWED",
    )
    with pytest.raises(HubError) as early:
        await centre.decide_distribution(started.distribution_id, True, "answered")
    assert (early.value.code, early.value.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "NOTICE_RUNNING",
    )

    network.clock.advance(timedelta(days=30, minutes=1))
    decided = await centre.decide_distribution(
        started.distribution_id, True, "the statements show no salary credits"
    )
    assert decided.state == returns_pb2.DISTRIBUTION_STATE_DECIDED
    assert len(decided.objections) == 1 and decided.objections[0].institution == "BANKB"
    seen = await payx.get_distribution(started.distribution_id)
    assert sum(s.share_fen for s in seen.shares) == decided.pool_fen == 600_000
    returns = [
        o
        for case_id in (first.case_id, second.case_id)
        for o in (await centre.get_case(case_id)).orders
        if o.kind == order_pb2.ORDER_KIND_RETURN
    ]
    paid: dict[str, int] = {}
    for r in returns:
        ret = r.instruction.fund_return
        paid[ret.beneficiary_case_id] = paid.get(ret.beneficiary_case_id, 0) + ret.amount_fen
    assert paid == {first.case_id: 400_000, second.case_id: 200_000}

    # An operator at the hub sees both cases and the layers from the CLI too.
    shown = CliRunner().invoke(main, ["case", "show", first.case_id, "--db", network.database_url])
    assert shown.exit_code == 0, shown.output
    assert "linked cases" in shown.output and second.case_id in shown.output
    assert "L1" in shown.output
