"""Following the money through the hub's pipeline: downstream stops under the standing rule or
on the centre's order, the trail over the API, one mule with many victims, and fair returns
(issue 6). Real signatures, fake store."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from hub.domain.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from hub.service.commands.case import GET_CASE_TRAIL, VERIFY_REPORT
from hub.service.commands.order import ANSWER_ORDER, ISSUE_ORDER, SET_AUTO_STOP_RULE
from hub.service.commands.returns import (
    DECIDE_DISTRIBUTION,
    OBJECT_TO_DISTRIBUTION,
    START_DISTRIBUTION,
)
from hub.system.policy import load_policy
from stophub.v1 import account_pb2, case_pb2, delivery_pb2, order_pb2, returns_pb2, trail_pb2
from tests.unit.test_handlers import (
    MULE_B,
    MULE_C,
    VICTIM_C,
    World,
    account,
    execution,
    freeze_body,
    return_body,
    rule_body,
    stop_body,
    verification,
)

WALLET = account("PAYX", "PAYX-0000-0009", "Zhao Liu")
MULE_D = account("BANKD", "6222040000000004", "Chen Shi")
OFFSHORE = account("OFFSH", "HK-00012345", "Shell Ltd")


@pytest.fixture
def w() -> World:
    return World()


def follow_rule(w: World, max_layer: int = 0, limit: int = 5_000_000) -> None:
    body = rule_body(limit=limit)
    body.follow_onward_transfers = True
    body.max_layer = max_layer
    w.send(SET_AUTO_STOP_RULE, "AFC", body)


def onward(
    result: order_pb2.ExecutionResult,
    to: account_pb2.AccountRef,
    amount: int,
    w: World,
    minutes_ago: int = 10,
    ref: str = "",
) -> None:
    t = result.onward_transfers.add(amount_fen=amount, to_account=to, transaction_reference=ref)
    t.transfer_time.FromDatetime(w.clock.now() - timedelta(minutes=minutes_ago))


def held(order_id: str, amount: int, of: int, code: str = "AM04") -> order_pb2.ExecutionResult:
    if amount == of:
        return execution(order_id, held=amount)
    return execution(
        order_id, order_pb2.EXECUTION_STATUS_PARTIALLY_EXECUTED, held=amount, code=code
    )


def stops_to(case: case_pb2.Case, institution: str) -> list[order_pb2.Order]:
    return [
        o
        for o in case.orders
        if o.kind == order_pb2.ORDER_KIND_STOP and o.addressed_to == institution
    ]


def trail(w: World, case_id: str, sender: str = "AFC") -> trail_pb2.Trail:
    body = w.send(GET_CASE_TRAIL, sender, trail_pb2.GetCaseTrailBody(case_id=case_id))
    assert isinstance(body, trail_pb2.Trail)
    return body


def node(t: trail_pb2.Trail, acct: account_pb2.AccountRef) -> trail_pb2.TrailNode:
    return next(n for n in t.nodes if n.node_id == f"{acct.institution_code}/{acct.account_number}")


def kinds_to(w: World, recipient: str) -> list[int]:
    return [n.kind for n in w.notices(recipient)]


# ---- downstream stops --------------------------------------------------------------------------


def test_the_standing_rule_stops_each_member_account_the_money_moved_on_to(w: World) -> None:
    follow_rule(w)
    case = w.verified((MULE_B, 3_000_000))
    [stop] = stops_to(case, "BANKB")
    answer = held(stop.order_id, 1_000_000, 3_000_000)
    onward(answer, MULE_C, 1_500_000, w, 12, "B-OUT-1")
    onward(answer, OFFSHORE, 400_000, w, 11, "B-OUT-2")
    w.answer("BANKB", answer)

    case = w.get_case(case.case_id)
    [down] = stops_to(case, "BANKC")
    assert down.instruction.stop.upstream_order_id == stop.order_id
    assert down.instruction.stop.amount_fen == 1_500_000
    assert down.layer == 2 and stop.layer == 1
    assert down.auto_stop_rule_id == "R-AUTO-1"
    [fact] = down.instruction.stop.transactions
    assert fact.amount_fen == 1_500_000
    order_notice = next(n for n in w.notices("BANKC") if n.kind == delivery_pb2.NOTICE_KIND_ORDER)
    assert order_notice.order.order_id == down.order_id
    assert order_notice.authorization.sender == "AFC", "the centre's signed rule goes along"
    escalations = [
        n for n in w.notices("AFC") if n.kind == delivery_pb2.NOTICE_KIND_TRAIL_ESCALATION
    ]
    assert len(escalations) == 1 and "OFFSH is not a member" in escalations[0].summary

    # The next layer: BANKC held 500,000 and sent the rest to a wallet.
    answer = held(down.order_id, 500_000, 1_500_000)
    onward(answer, WALLET, 1_200_000, w, 5)
    w.answer("BANKC", answer)
    [third] = stops_to(w.get_case(case.case_id), "PAYX")
    assert third.layer == 3 and third.instruction.stop.amount_fen == 1_000_000

    view = trail(w, case.case_id)
    assert [(n.layer, n.status) for n in view.nodes] == [
        (0, trail_pb2.TRAIL_NODE_STATUS_VICTIM),
        (1, trail_pb2.TRAIL_NODE_STATUS_ORDERED),
        (2, trail_pb2.TRAIL_NODE_STATUS_ORDERED),
        (2, trail_pb2.TRAIL_NODE_STATUS_BEYOND_REACH),
        (3, trail_pb2.TRAIL_NODE_STATUS_ORDERED),
    ]
    assert node(view, MULE_B).held_fen == 1_000_000
    assert node(view, MULE_C).received_fen == 1_500_000
    assert node(view, OFFSHORE).received_fen == 400_000
    assert node(view, WALLET).received_fen == 1_000_000
    assert view.max_layer == 5
    edge = next(e for e in view.edges if e.to_node_id.endswith(WALLET.account_number))
    assert (edge.amount_fen, edge.carried_fen) == (1_200_000, 1_000_000)


def test_without_a_rule_the_centre_orders_downstream_stops_within_the_branch(w: World) -> None:
    case = w.verified((MULE_B, 3_000_000))
    stop = w.order(stop_body(case, MULE_B))
    answer = held(stop.order_id, 500_000, 3_000_000)
    onward(answer, MULE_C, 2_800_000, w)
    w.answer("BANKB", answer)
    assert stops_to(w.get_case(case.case_id), "BANKC") == []
    [escalation] = [
        n for n in w.notices("AFC") if n.kind == delivery_pb2.NOTICE_KIND_TRAIL_ESCALATION
    ]
    assert "no standing rule" in escalation.summary
    assert node(trail(w, case.case_id), MULE_C).status == (
        trail_pb2.TRAIL_NODE_STATUS_AWAITING_CENTRE
    )

    body = order_pb2.OrderInstruction(case_id=case.case_id)
    body.stop.account.CopyFrom(MULE_C)
    body.stop.amount_fen = 2_500_001
    body.stop.upstream_order_id = stop.order_id
    err = w.refuse(ISSUE_ORDER, w.seal("AFC", body), InvalidArgument, "INVALID_FIELD")
    assert err.field == "stop.amount_fen" and "¥25,000.00" in err.message

    body.stop.amount_fen = 2_500_000
    down = w.order(body)
    assert down.layer == 2
    assert [f.amount_fen for f in down.instruction.stop.transactions] == [2_800_000]


def test_a_transfer_that_carried_part_of_the_money_is_chased_for_that_part(w: World) -> None:
    follow_rule(w)
    case = w.verified((MULE_B, 3_000_000))
    [stop] = stops_to(case, "BANKB")
    answer = held(stop.order_id, 0, 3_000_000)
    # The mule had other money too: 5,000,000 went out, 3,000,000 of it the victim's.
    onward(answer, MULE_C, 5_000_000, w, 12)
    answer.onward_transfers[0].carried_fen = 3_000_000
    w.answer("BANKB", answer)

    [down] = stops_to(w.get_case(case.case_id), "BANKC")
    assert down.instruction.stop.amount_fen == 3_000_000
    assert [f.amount_fen for f in down.instruction.stop.transactions] == [5_000_000]
    edge = next(e for e in trail(w, case.case_id).edges if e.reported_by_order_id)
    assert (edge.amount_fen, edge.carried_fen) == (5_000_000, 3_000_000)


def test_money_sent_back_up_its_branch_is_drawn_but_not_followed(w: World) -> None:
    follow_rule(w)
    case = w.verified((MULE_B, 3_000_000))
    [stop] = stops_to(case, "BANKB")
    answer = held(stop.order_id, 0, 3_000_000)
    onward(answer, MULE_C, 3_000_000, w, 12)
    w.answer("BANKB", answer)
    [down] = stops_to(w.get_case(case.case_id), "BANKC")
    answer = held(down.order_id, 0, 3_000_000)
    onward(answer, MULE_B, 3_000_000, w, 8, "BACK")
    w.answer("BANKC", answer)

    case = w.get_case(case.case_id)
    assert len(stops_to(case, "BANKB")) == 1, "no second stop for money that came back"
    view = trail(w, case.case_id)
    [back] = [e for e in view.edges if e.transaction_reference == "BACK"]
    assert back.cycle


def test_deeper_than_the_rule_reaches_waits_for_the_centre(w: World) -> None:
    follow_rule(w, max_layer=2)
    case = w.verified((MULE_B, 3_000_000))
    [stop] = stops_to(case, "BANKB")
    answer = held(stop.order_id, 0, 3_000_000)
    onward(answer, MULE_C, 3_000_000, w, 12)
    w.answer("BANKB", answer)
    [down] = stops_to(w.get_case(case.case_id), "BANKC")
    answer = held(down.order_id, 0, 3_000_000)
    onward(answer, MULE_D, 3_000_000, w, 8)
    w.answer("BANKC", answer)

    assert stops_to(w.get_case(case.case_id), "BANKD") == []
    summaries = [
        n.summary for n in w.notices("AFC") if n.kind == delivery_pb2.NOTICE_KIND_TRAIL_ESCALATION
    ]
    assert any("layer 3 is deeper than the standing rule follows (2)" in s for s in summaries)


@pytest.mark.parametrize(
    ("transfers", "field", "says"),
    [
        # Larger than what the account received (3,000,000 in the stop's credits).
        (
            [(MULE_C, 2_000_000, 12), (WALLET, 1_000_001, 11)],
            "onward_transfers[1].amount_fen",
            "more than the",
        ),
        # Dated before the money arrived (the credit was 20 minutes ago).
        ([(MULE_C, 1_000, 40)], "onward_transfers[0].transfer_time", "before the money arrived"),
        # To a malformed account.
        (
            [(account("BANKC", "62 22", "Wang"), 1_000, 5)],
            "onward_transfers[0].to_account.account_number",
            "transfer 0",
        ),
        # To something that is no institution code at all (the store keeps 32 characters).
        (
            [(account("B" * 33, "6222030000000099", "Wang"), 1_000, 5)],
            "onward_transfers[0].to_account.institution_code",
            "not an institution code",
        ),
        # Carried more of the money than the transfer moved.
        ([(MULE_C, 1_000, 5, 1_001)], "onward_transfers[0].carried_fen", "between 0"),
        # Carried parts adding up to more than the account received.
        (
            [(MULE_C, 5_000_000, 6, 2_000_000), (WALLET, 5_000_000, 5, 1_000_001)],
            "onward_transfers[1].carried_fen",
            "carry",
        ),
        (
            [(account("BANKC", "6222030000000099", ""), 1_000, 5)],
            "onward_transfers[0].to_account.holder_name",
            "holder",
        ),
    ],
)
def test_wrong_onward_transfers_are_refused_naming_the_transfer_and_stop_nothing(
    w: World,
    transfers: list[tuple[Any, ...]],
    field: str,
    says: str,
) -> None:
    follow_rule(w)
    case = w.verified((MULE_B, 3_000_000))
    [stop] = stops_to(case, "BANKB")
    answer = held(stop.order_id, 0, 3_000_000)
    for to, amount, minutes, *carried in transfers:
        onward(answer, to, amount, w, minutes, "B-OUT-9")
        answer.onward_transfers[-1].carried_fen = carried[0] if carried else 0
    err = w.refuse(ANSWER_ORDER, w.seal("BANKB", answer), InvalidArgument, "INVALID_FIELD")
    assert err.field == field and says in err.message
    assert len(w.get_case(case.case_id).orders) == 1, "no downstream stop from a refused answer"


def test_the_trail_is_for_the_centre_and_the_reporter_not_the_mules_bank(w: World) -> None:
    case = w.verified((MULE_B, 3_000_000))
    w.order(stop_body(case, MULE_B))
    assert trail(w, case.case_id, "BANKA").case_id == case.case_id
    assert trail(w, case.case_id, "REG").loss_fen == 3_000_000
    w.refuse(
        GET_CASE_TRAIL,
        w.seal("BANKB", trail_pb2.GetCaseTrailBody(case_id=case.case_id)),
        PermissionDenied,
        "TRAIL_NOT_SHARED",
    )


# ---- one mule, many victims, and fair returns --------------------------------------------------


def two_victims(w: World) -> tuple[case_pb2.Case, case_pb2.Case]:
    """BANKA's customer lost 3,000,000 and BANKC's 500,000, both to MULE_B."""
    c1 = w.verified((MULE_B, 3_000_000))
    c2 = w.report((MULE_B, 500_000), sender="BANKC", payer=VICTIM_C)
    w.send(VERIFY_REPORT, "BANKC", verification(c2.case_id))
    return c1, w.get_case(c2.case_id)


def frozen(w: World, case: case_pb2.Case, amount: int, of: int) -> order_pb2.Order:
    stop = w.order(stop_body(case, MULE_B))
    w.answer("BANKB", held(stop.order_id, amount, of))
    freeze = w.order(freeze_body(case.case_id, amount, stop.order_id))
    w.answer("BANKB", execution(freeze.order_id, held=amount))
    return freeze


def test_a_second_victim_paying_the_same_mule_links_the_cases(w: World) -> None:
    c1, c2 = two_victims(w)

    assert [e.kind for e in c2.events if e.kind == "case.linked"] == ["case.linked"]
    # The centre learns it from the report's own notice, with the link in a field.
    reported = [
        n
        for n in w.notices("AFC")
        if n.kind == delivery_pb2.NOTICE_KIND_REPORT_RECEIVED and n.case_id == c2.case_id
    ]
    assert len(reported) == 1 and c1.case_id in reported[0].summary
    assert [lc.case_id for lc in reported[0].linked_cases] == [c1.case_id]
    assert not [n for n in w.notices("AFC") if n.kind == delivery_pb2.NOTICE_KIND_CASES_LINKED]
    assert [lc.case_id for lc in w.get_case(c1.case_id).linked_cases] == [c2.case_id]
    assert [lc.case_id for lc in c2.linked_cases] == [c1.case_id]
    assert c2.linked_cases[0].account.account_number == MULE_B.account_number
    assert not c2.linked_cases[0].account.holder_name
    stop = w.order(stop_body(c1, MULE_B))
    assert stop.addressed_to == "BANKB"
    assert not w.get_case(c1.case_id, "BANKB").linked_cases, "the mule's bank is not told"


def test_money_moving_on_to_another_cases_account_links_them_and_tells_the_centre(
    w: World,
) -> None:
    other = w.report((MULE_C, 200_000), sender="BANKC", payer=VICTIM_C)
    case = w.verified((MULE_B, 3_000_000))
    stop = w.order(stop_body(case, MULE_B))
    answer = held(stop.order_id, 0, 3_000_000)
    onward(answer, MULE_C, 1_000_000, w)
    w.answer("BANKB", answer)

    [linked] = [n for n in w.notices("AFC") if n.kind == delivery_pb2.NOTICE_KIND_CASES_LINKED]
    assert linked.case_id == case.case_id
    assert [(lc.case_id, lc.account.account_number) for lc in linked.linked_cases] == [
        (other.case_id, MULE_C.account_number)
    ]
    assert [lc.case_id for lc in w.get_case(other.case_id).linked_cases] == [case.case_id]


def test_held_money_in_a_shared_account_is_attributed_to_both_victims(w: World) -> None:
    c1, c2 = two_victims(w)
    frozen(w, c1, 2_000_000, 3_000_000)
    frozen(w, c2, 500_000, 500_000)

    mule = node(trail(w, c1.case_id), MULE_B)
    assert mule.pooled_held_fen == 2_500_000
    assert [(a.case_id, a.claim_fen, a.attributed_fen) for a in mule.attributions] == [
        (c1.case_id, 3_000_000, 2_142_857),
        (c2.case_id, 500_000, 357_143),
    ]


def test_mixed_money_is_shared_after_a_public_notice_and_returned_in_full(w: World) -> None:
    w.hub.clock_policy = load_policy()
    c1, c2 = two_victims(w)
    f1 = frozen(w, c1, 2_000_000, 3_000_000)
    frozen(w, c2, 500_000, 500_000)

    # Money that several victims' money reached is not one victim's to take.
    w.refuse(
        ISSUE_ORDER,
        w.seal("AFC", return_body(c1.case_id, f1.order_id, 100)),
        FailedPrecondition,
        "SHARED_ACCOUNT",
    )
    d = w.send(
        START_DISTRIBUTION,
        "AFC",
        returns_pb2.StartDistributionBody(case_id=c1.case_id, account=MULE_B),
    )
    assert isinstance(d, returns_pb2.Distribution)
    assert d.method == returns_pb2.DISTRIBUTION_METHOD_PRO_RATA
    assert d.state == returns_pb2.DISTRIBUTION_STATE_NOTICE
    assert d.pool_fen == 2_500_000
    assert [(s.case_id, s.claim_fen, s.share_fen) for s in d.shares] == [
        (c1.case_id, 3_000_000, 2_142_857),
        (c2.case_id, 500_000, 357_143),
    ]
    assert d.notice_end_time.ToDatetime() == (w.clock.now() + timedelta(days=30)).replace(
        tzinfo=None
    )
    for party in ("AFC", "BANKA", "BANKC", "BANKB"):
        assert delivery_pb2.NOTICE_KIND_DISTRIBUTION in kinds_to(w, party), party

    objection = returns_pb2.ObjectionBody(
        distribution_id=d.distribution_id, grounds="the holder says 300,000 is his salary"
    )
    w.send(OBJECT_TO_DISTRIBUTION, "BANKB", objection)
    decide = returns_pb2.DistributionDecisionBody(
        distribution_id=d.distribution_id, decision=returns_pb2.DISTRIBUTION_DECISION_CONFIRM
    )
    w.clock.advance(timedelta(days=10))
    w.refuse(DECIDE_DISTRIBUTION, w.seal("AFC", decide), FailedPrecondition, "NOTICE_RUNNING")

    w.clock.advance(timedelta(days=20))
    w.hub.sweep()
    ended = [n for n in w.notices("AFC") if n.kind == delivery_pb2.NOTICE_KIND_PUBLIC_NOTICE_ENDED]
    assert len(ended) == 1 and ended[0].clock_step.clock.clock == "public_notice"
    assert not ended[0].clock_step.clock.breached
    w.refuse(DECIDE_DISTRIBUTION, w.seal("AFC", decide), InvalidArgument, "INVALID_FIELD")

    decide.reason = "no salary credits in the account statements"
    decided = w.send(DECIDE_DISTRIBUTION, "AFC", decide)
    assert isinstance(decided, returns_pb2.Distribution)
    assert decided.state == returns_pb2.DISTRIBUTION_STATE_DECIDED
    assert len(decided.objections) == 1
    returns = [n.order for n in w.notices("BANKB") if n.order.kind == order_pb2.ORDER_KIND_RETURN]
    paid: dict[str, int] = {}
    for r in returns:
        ret = r.instruction.fund_return
        assert ret.distribution_id == d.distribution_id
        paid[ret.beneficiary_case_id] = paid.get(ret.beneficiary_case_id, 0) + ret.amount_fen
    assert paid == {c1.case_id: 2_142_857, c2.case_id: 357_143}
    victims = {
        r.instruction.fund_return.beneficiary_case_id: r.instruction.fund_return.beneficiary
        for r in returns
    }
    assert victims[c2.case_id].account_number == VICTIM_C.account_number

    for r in returns:
        w.answer("BANKB", execution(r.order_id, returned=r.instruction.fund_return.amount_fen))
    for case in (c1, c2):
        assert w.get_case(case.case_id).state == case_pb2.CASE_STATE_CLOSED


def test_money_traceable_to_one_victim_goes_back_at_once(w: World) -> None:
    case = w.verified((MULE_B, 3_000_000))
    frozen(w, case, 1_200_000, 3_000_000)
    d = w.send(
        START_DISTRIBUTION,
        "AFC",
        returns_pb2.StartDistributionBody(case_id=case.case_id, account=MULE_B),
    )
    assert isinstance(d, returns_pb2.Distribution)
    assert d.method == returns_pb2.DISTRIBUTION_METHOD_TRACED
    assert d.state == returns_pb2.DISTRIBUTION_STATE_DECIDED
    assert not d.HasField("notice_end_time")
    [share] = d.shares
    assert share.share_fen == 1_200_000 and len(share.return_order_ids) == 1
    [ret] = [o for o in w.get_case(case.case_id).orders if o.kind == order_pb2.ORDER_KIND_RETURN]
    assert ret.instruction.fund_return.amount_fen == 1_200_000


def test_a_distribution_needs_money_frozen_on_the_cases_trail(w: World) -> None:
    case = w.verified((MULE_B, 3_000_000))
    start = returns_pb2.StartDistributionBody(case_id=case.case_id, account=MULE_B)
    w.refuse(START_DISTRIBUTION, w.seal("AFC", start), FailedPrecondition, "NOTHING_FROZEN")
    elsewhere = returns_pb2.StartDistributionBody(case_id=case.case_id, account=MULE_D)
    w.refuse(START_DISTRIBUTION, w.seal("AFC", elsewhere), FailedPrecondition, "NOT_ON_TRAIL")
    unknown = returns_pb2.ObjectionBody(distribution_id="D-NOPE", grounds="x")
    w.refuse(OBJECT_TO_DISTRIBUTION, w.seal("BANKB", unknown), NotFound, "DISTRIBUTION_NOT_FOUND")
