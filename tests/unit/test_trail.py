"""The money trail in the domain: layers, what each account can have received, cycles, and the
downstream stops a stop's answer calls for (hub/domain/trail.py, ADR 13)."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.domain.cases import (
    AccountRef,
    Case,
    ExecutionStatus,
    OnwardTransfer,
    Order,
    OrderState,
    StopCommand,
)
from hub.domain.errors import InvalidArgument
from hub.domain.institutions import InstitutionKind
from hub.domain.trail import (
    FollowRule,
    NodeStatus,
    annotate,
    branch_allowance,
    build,
    follow,
)
from tests.unit.test_cases import (
    KINDS,
    MULE_B,
    MULE_C,
    MULE_P,
    VICTIM,
    answer,
    at,
    issue,
    result,
    stop_cmd,
    tx,
    verified_case,
)

MULE_D = AccountRef("BANKD", "6222040000000004", "Chen Shi")
OFFSHORE = AccountRef("OFFSHORE", "HK-00012345", "Shell Ltd")
KINDS_D = {**KINDS, "BANKD": InstitutionKind.BANK}
FOLLOW = FollowRule(True, 5, 10_000_000)


def send(to: AccountRef, amount: int, minutes: float, ref: str = "") -> OnwardTransfer:
    return OnwardTransfer(
        at(minutes), amount, to.institution_code, to.account_number, to.holder_name, ref
    )


def held_stop(
    case: Case,
    account: AccountRef,
    amount: int,
    held: int,
    onward: tuple[OnwardTransfer, ...] = (),
    *,
    facts: list[tuple[datetime, int]] | None = None,
    upstream: str = "",
) -> Order:
    order = issue(
        case,
        StopCommand(account, amount, facts if facts is not None else [], upstream)
        if upstream
        else stop_cmd(account, amount, facts),
    )
    status = ExecutionStatus.EXECUTED if held == amount else ExecutionStatus.PARTIALLY_EXECUTED
    answer(
        case,
        order,
        result(status, held=held, code="" if held == amount else "AM04", onward=onward),
    )
    return order


def node_of(case: Case, account: AccountRef) -> tuple[int, int, int]:
    node = build(case).node(account.institution_code, account.account_number)
    assert node is not None
    return node.layer, node.received_fen, node.held_fen


def test_layer_one_is_the_victims_payees_with_what_each_received() -> None:
    case = verified_case(tx(2_000_000), tx(1_000_000, payee=MULE_C, when=at(-19)))
    trail = build(case)

    victim = trail.nodes[trail.victim]
    assert victim.status is NodeStatus.VICTIM and victim.layer == 0
    assert victim.key == (VICTIM.institution_code, VICTIM.account_number)
    assert node_of(case, MULE_B) == (1, 2_000_000, 0)
    assert node_of(case, MULE_C) == (1, 1_000_000, 0)
    assert [(e.amount_fen, e.carried_fen, e.reported_by) for e in trail.edges] == [
        (2_000_000, 2_000_000, ""),
        (1_000_000, 1_000_000, ""),
    ]


def test_an_account_passes_on_what_it_received_less_what_it_held_earliest_transfer_first() -> None:
    case = verified_case(tx(3_000_000))
    # Held 1,000,000 of 3,000,000: at most 2,000,000 of the victim's money moved on.
    stop = held_stop(
        case,
        MULE_B,
        3_000_000,
        1_000_000,
        (
            send(MULE_P, 900_000, -10, "late"),  # reported out of order on purpose
            send(MULE_C, 1_500_000, -15, "first"),
        ),
    )
    trail = build(case)

    by_ref = {e.reference: e for e in trail.edges if e.reported_by == stop.order_id}
    assert by_ref["first"].carried_fen == 1_500_000
    assert by_ref["late"].carried_fen == 500_000  # what was left of the branch
    assert node_of(case, MULE_C) == (2, 1_500_000, 0)
    assert node_of(case, MULE_P) == (2, 500_000, 0)


def test_a_downstream_stop_is_bounded_by_the_branch_and_fills_in_the_transfers() -> None:
    case = verified_case(tx(3_000_000))
    stop = held_stop(case, MULE_B, 3_000_000, 500_000, (send(MULE_C, 2_800_000, -15),))

    assert branch_allowance(case, stop, MULE_C) == 2_500_000
    with pytest.raises(InvalidArgument) as too_much:
        issue(case, StopCommand(MULE_C, 2_600_000, [], stop.order_id))
    assert too_much.value.field == "stop.amount_fen"
    assert "¥25,000.00" in too_much.value.message

    downstream = issue(case, StopCommand(MULE_C, 2_500_000, [], stop.order_id))
    assert downstream.layer == 2 and downstream.upstream_order_id == stop.order_id
    assert [(f.transaction_time, f.amount_fen) for f in downstream.facts] == [(at(-15), 2_800_000)]
    # The branch is claimed by the live stop: nothing more may be held along it.
    assert branch_allowance(case, stop, MULE_C) == 0
    with pytest.raises(InvalidArgument):
        issue(case, StopCommand(MULE_C, 1, [], stop.order_id))


def test_a_downstream_stop_follows_a_transfer_the_upstream_answer_reported() -> None:
    case = verified_case(tx(3_000_000))
    stop = held_stop(case, MULE_B, 3_000_000, 0, (send(MULE_C, 1_000_000, -15),))
    with pytest.raises(InvalidArgument) as elsewhere:
        issue(case, StopCommand(MULE_P, 100, [], stop.order_id))
    assert elsewhere.value.field == "stop.upstream_order_id"


def test_money_sent_back_up_its_branch_is_drawn_and_not_followed() -> None:
    case = verified_case(tx(3_000_000))
    stop = held_stop(case, MULE_B, 3_000_000, 0, (send(MULE_C, 3_000_000, -15),))
    down = issue(case, StopCommand(MULE_C, 3_000_000, [], stop.order_id))
    answer(
        case,
        down,
        result(
            held=1_000_000,
            status=ExecutionStatus.PARTIALLY_EXECUTED,
            code="AM04",
            onward=(send(MULE_B, 2_000_000, -12, "back"),),
        ),
    )
    trail = build(case)

    back = next(e for e in trail.edges if e.reference == "back")
    assert back.cycle
    assert node_of(case, MULE_B)[1] == 3_000_000  # not counted twice
    planned, escalated = follow(trail, down, KINDS, FOLLOW)
    assert planned == [] and escalated == []


def test_the_standing_rule_plans_member_accounts_and_escalates_the_rest() -> None:
    case = verified_case(tx(3_000_000))
    stop = held_stop(
        case,
        MULE_B,
        3_000_000,
        0,
        (send(MULE_C, 1_000_000, -15), send(OFFSHORE, 1_500_000, -14), send(MULE_P, 20, -13)),
    )
    planned, escalated = follow(build(case), stop, KINDS, FOLLOW)

    assert [(p.account, p.amount_fen, p.layer) for p in planned] == [
        (MULE_C, 1_000_000, 2),
        (MULE_P, 20, 2),
    ]
    assert planned[0].transactions == ((at(-15), 1_000_000),)
    assert [(e.account, e.status) for e in escalated] == [(OFFSHORE, NodeStatus.BEYOND_REACH)]

    no_rule_planned, waiting = follow(build(case), stop, KINDS, None)
    assert no_rule_planned == []
    assert {e.status for e in waiting} == {NodeStatus.AWAITING_CENTRE, NodeStatus.BEYOND_REACH}


def test_the_rule_stops_at_its_depth_and_its_amount() -> None:
    case = verified_case(tx(3_000_000))
    stop = held_stop(case, MULE_B, 3_000_000, 0, (send(MULE_C, 2_000_000, -15),))
    down = issue(case, StopCommand(MULE_C, 2_000_000, [], stop.order_id))
    answer(
        case,
        down,
        result(
            held=0,
            status=ExecutionStatus.PARTIALLY_EXECUTED,
            code="AM04",
            onward=(send(MULE_D, 2_000_000, -12),),
        ),
    )

    shallow = FollowRule(True, 2, 10_000_000)
    planned, escalated = follow(build(case), down, KINDS_D, shallow)
    assert planned == []
    assert escalated[0].layer == 3 and "deeper" in escalated[0].why
    small = FollowRule(True, 5, 1_000_000)
    planned, escalated = follow(build(case), down, KINDS_D, small)
    assert planned == [] and "limit" in escalated[0].why

    trail = build(case)
    annotate(trail, KINDS_D, shallow)
    d = trail.node(MULE_D.institution_code, MULE_D.account_number)
    assert d is not None and d.status is NodeStatus.AWAITING_CENTRE and "deeper" in d.note


def test_a_branch_spent_before_a_transfer_leaves_that_account_exhausted() -> None:
    case = verified_case(tx(1_000_000))
    stop = held_stop(
        case, MULE_B, 1_000_000, 600_000, (send(MULE_C, 400_000, -15), send(MULE_P, 300_000, -10))
    )
    trail = build(case)
    annotate(trail, KINDS, FOLLOW)
    wallet = trail.node(MULE_P.institution_code, MULE_P.account_number)
    assert wallet is not None and wallet.received_fen == 0
    assert wallet.status is NodeStatus.EXHAUSTED
    planned, _ = follow(trail, stop, KINDS, FOLLOW)
    assert [p.account for p in planned] == [MULE_C]


def test_a_no_match_answer_reports_no_onward_money_and_the_node_keeps_its_order() -> None:
    case = verified_case(tx(1_000_000))
    order = issue(case, stop_cmd(MULE_B, 1_000_000, [(at(-20), 1_000_000)]))
    answer(case, order, result(ExecutionStatus.NO_MATCH, code="NMAT"))
    trail = build(case)
    annotate(trail, KINDS, FOLLOW)
    node = trail.node(MULE_B.institution_code, MULE_B.account_number)
    assert node is not None and node.status is NodeStatus.ORDERED
    assert node.latest_order is order and order.state is OrderState.NO_MATCH


# ---- the bound, as a property ------------------------------------------------------------------

ACCOUNTS = [MULE_B, MULE_C, MULE_P]


@st.composite
def chains(draw: st.DrawFn) -> tuple[int, list[tuple[int, int, list[tuple[int, int]]]]]:
    """A loss, and for each layer of a chain B -> ... an amount held and onward transfers
    (target index into ACCOUNTS or OFFSHORE, amount)."""
    loss = draw(st.integers(1, 10_000_000))
    layers = []
    for _ in range(draw(st.integers(1, 3))):
        held = draw(st.integers(0, loss))
        transfers = draw(
            st.lists(st.tuples(st.integers(0, 3), st.integers(1, loss)), min_size=1, max_size=3)
        )
        layers.append((held, held, transfers))
    return loss, layers


@settings(max_examples=150, deadline=None)
@given(chains())
def test_along_any_branch_nothing_is_held_beyond_the_loss_that_entered_it(
    chain: tuple[int, list[tuple[int, int, list[tuple[int, int]]]]],
) -> None:
    loss, layers = chain
    case = verified_case(tx(loss))
    current = issue(case, stop_cmd(MULE_B, loss, [(at(-20), loss)]))
    for held, _, transfers in layers:
        budget = build(case).node(current.account_institution, current.account_number)
        assert budget is not None
        cap = min(held, current.amount_fen)
        onward: list[OnwardTransfer] = []
        room = sum(f.amount_fen for f in current.facts)
        for i, (target, amount) in enumerate(transfers):
            to = OFFSHORE if target == 3 else ACCOUNTS[target]
            if (to.institution_code, to.account_number) == (
                current.account_institution,
                current.account_number,
            ) or amount > room:
                continue
            room -= amount
            onward.append(send(to, amount, -15 + i))
        status = (
            ExecutionStatus.EXECUTED
            if cap == current.amount_fen
            else ExecutionStatus.PARTIALLY_EXECUTED
        )
        answer(
            case,
            current,
            result(
                status,
                held=cap,
                code="" if status is ExecutionStatus.EXECUTED else "AM04",
                onward=tuple(onward),
            ),
        )
        planned, _ = follow(build(case), current, KINDS, FOLLOW)
        if not planned:
            break
        nxt = planned[0]
        current = issue(
            case,
            StopCommand(nxt.account, nxt.amount_fen, list(nxt.transactions), current.order_id),
        )
    # The stops form one chain: what they held, added up, never exceeds the loss.
    assert sum(o.amount_held_fen for o in case.orders) <= loss
    trail = build(case)
    for key, node in trail.nodes.items():
        if node.layer <= 0:
            continue
        assert node.received_fen <= loss
        out = sum(e.carried_fen for e in trail.edges if e.source == key and e.reported_by)
        assert out <= max(node.received_fen - node.passed_on_after_holding(), 0)
