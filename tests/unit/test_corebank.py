"""The simulated core bank and payment network keep honest books and honour the port's rules."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from adapters.corebank import (
    AC01,
    AC04,
    AM04,
    ARDT,
    BE01,
    LEGL,
    NMAT,
    AccountClosed,
    AccountHasHolds,
    CoreBanking,
    CoreBankingError,
    Direction,
    HoldKind,
    HoldOutcome,
    HoldState,
    HoldStatus,
    InsufficientFunds,
    OnwardTransfer,
    PaymentNetwork,
    PayOutcome,
    SimulatedCoreBank,
    UnknownAccount,
    UnknownInstitution,
)

T0 = datetime(2025, 3, 14, 9, 30, tzinfo=UTC)


class ManualClock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@dataclass
class World:
    clock: ManualClock
    network: PaymentNetwork
    victim_bank: SimulatedCoreBank  # ICBC: the victim's bank
    mule_bank: SimulatedCoreBank  # CMB: holds the layer-1 fraud account
    other_bank: SimulatedCoreBank  # ABC: where the money goes next

    def fraud(self, amount_fen: int, *, account: str = "6225-mule") -> datetime:
        """The victim sends money to the mule; returns the credit's time."""
        self.network.transfer("ICBC", "6222-victim", "CMB", account, amount_fen)
        return self.clock.now


VICTIM = "张三"
MULE = "李四"


def make_world(tolerance: timedelta = timedelta(minutes=2)) -> World:
    clock = ManualClock()
    network = PaymentNetwork(clock)
    banks = [SimulatedCoreBank(code, clock, match_tolerance=tolerance) for code in ("ICBC", "CMB")]
    banks.append(SimulatedCoreBank("ABC", clock))
    for bank in banks:
        network.register(bank)
    victim_bank, mule_bank, other_bank = banks
    victim_bank.open_account("6222-victim", VICTIM, 10_000_000)
    # The mule's own money: the lien must leave it spendable.
    mule_bank.open_account("6225-mule", MULE, 500_000)
    other_bank.open_account("6228-next", "王五", 0)
    return World(clock, network, victim_bank, mule_bank, other_bank)


@pytest.fixture
def world() -> World:
    return make_world()


def stop(
    bank: SimulatedCoreBank,
    ref: str,
    amount_fen: int,
    credits: list[tuple[datetime, int]],
    *,
    holder: str = MULE,
    account: str = "6225-mule",
) -> HoldOutcome:
    return bank.place_hold(
        ref, holder_name=holder, account_number=account, amount_fen=amount_fen, credits=credits
    )


def test_simulated_bank_satisfies_the_port(world: World) -> None:
    port: CoreBanking = world.mule_bank
    assert port.institution_code == "CMB"


# -- the four facts ------------------------------------------------------------------------


def test_stop_executes_when_all_four_facts_match(world: World) -> None:
    t = world.fraud(3_000_000)
    world.clock.advance(minutes=5)

    outcome = world.mule_bank.place_hold(
        "S1",
        holder_name=MULE,
        account_number="6225-mule",
        amount_fen=3_000_000,
        credits=[(t, 3_000_000)],
    )

    assert outcome.status is HoldStatus.EXECUTED
    assert outcome.reason_code == ""
    assert outcome.held_fen == 3_000_000
    assert outcome.available_fen == 500_000
    assert world.mule_bank.held("6225-mule") == 3_000_000
    assert world.mule_bank.balance("6225-mule") == 3_500_000
    [hold] = world.mule_bank.holds("6225-mule")
    assert (hold.ref, hold.kind, hold.held_fen, hold.placed_at) == (
        "S1",
        HoldKind.STOP,
        3_000_000,
        world.clock.now,
    )


@pytest.mark.parametrize(
    ("holder", "account", "credit_shift", "credit_amount", "reason_part"),
    [
        (MULE, "6225-nobody", timedelta(0), 3_000_000, "does not exist"),
        ("李 四", "6225-mule", timedelta(0), 3_000_000, "holder name does not match"),
        (MULE, "6225-mule", timedelta(0), 2_999_999, "no incoming credit of 29,999.99 yuan"),
        (MULE, "6225-mule", timedelta(minutes=3), 3_000_000, "no incoming credit of 30,000.00"),
    ],
    ids=["account", "holder-name", "amount", "time"],
)
def test_each_failing_fact_gives_no_match_and_holds_nothing(
    world: World,
    holder: str,
    account: str,
    credit_shift: timedelta,
    credit_amount: int,
    reason_part: str,
) -> None:
    t = world.fraud(3_000_000)

    outcome = stop(
        world.mule_bank,
        "S1",
        3_000_000,
        [(t + credit_shift, credit_amount)],
        holder=holder,
        account=account,
    )

    assert outcome.status is HoldStatus.NO_MATCH
    assert outcome.reason_code == NMAT
    assert reason_part in outcome.reason
    assert (outcome.held_fen, outcome.available_fen, outcome.onward) == (0, 0, ())
    assert world.mule_bank.held("6225-mule") == 0
    assert world.mule_bank.holds("6225-mule") == []
    assert world.mule_bank.hold("S1") is None
    assert world.mule_bank.available("6225-mule") == 3_500_000


def test_a_stop_naming_no_transaction_does_not_stop(world: World) -> None:
    world.fraud(3_000_000)
    outcome = world.mule_bank.place_hold(
        "S1", holder_name=MULE, account_number="6225-mule", amount_fen=3_000_000, credits=[]
    )
    assert (outcome.status, outcome.reason_code, outcome.held_fen) == (
        HoldStatus.NO_MATCH,
        NMAT,
        0,
    )


def test_all_named_credits_must_match_not_just_one(world: World) -> None:
    t = world.fraud(3_000_000)
    outcome = world.mule_bank.place_hold(
        "S1",
        holder_name=MULE,
        account_number="6225-mule",
        amount_fen=6_000_000,
        credits=[(t, 3_000_000), (t + timedelta(minutes=10), 3_000_000)],
    )
    assert outcome.status is HoldStatus.NO_MATCH
    assert world.mule_bank.held("6225-mule") == 0


@pytest.mark.parametrize(
    ("shift", "matches"),
    [
        (timedelta(seconds=30), True),
        (-timedelta(seconds=30), True),
        (timedelta(seconds=30, microseconds=1), False),
        (-timedelta(seconds=30, microseconds=1), False),
    ],
)
def test_tolerance_edges(shift: timedelta, matches: bool) -> None:
    world = make_world(tolerance=timedelta(seconds=30))
    t = world.fraud(100_00)

    outcome = stop(world.mule_bank, "S1", 100_00, [(t + shift, 100_00)])

    assert (outcome.status is HoldStatus.EXECUTED) is matches
    assert world.mule_bank.held("6225-mule") == (100_00 if matches else 0)


def test_one_recorded_credit_cannot_satisfy_two_facts(world: World) -> None:
    t = world.fraud(100_00)
    facts = [(t, 100_00), (t + timedelta(seconds=10), 100_00)]

    assert stop(world.mule_bank, "S1", 200_00, facts).status is HoldStatus.NO_MATCH
    assert "cannot each be matched" in stop(world.mule_bank, "S1", 200_00, facts).reason

    world.clock.advance(seconds=20)
    world.fraud(100_00)
    assert stop(world.mule_bank, "S2", 200_00, facts).status is HoldStatus.EXECUTED


def test_credits_are_matched_as_a_whole_not_first_fit(world: World) -> None:
    first = world.fraud(100_00)
    world.clock.advance(minutes=3)
    world.fraud(100_00)
    # The first fact is near both credits, the second only near the first credit: taking
    # the first credit for the first fact would wrongly leave the second unmatched.
    facts = [(first + timedelta(seconds=90), 100_00), (first - timedelta(minutes=1), 100_00)]

    outcome = stop(world.mule_bank, "S1", 200_00, facts)

    assert outcome.status is HoldStatus.EXECUTED
    assert outcome.held_fen == 200_00


def test_closed_account_is_rejected_with_ac04(world: World) -> None:
    world.mule_bank.open_account("6225-old", MULE)
    t = world.fraud(100_00, account="6225-old")
    world.mule_bank.transfer("6225-old", "ABC", "6228-next", 100_00)
    world.mule_bank.close_account("6225-old")

    outcome = stop(world.mule_bank, "S1", 100_00, [(t, 100_00)], account="6225-old")
    frozen = world.mule_bank.freeze(
        "F1", holder_name=MULE, account_number="6225-old", amount_fen=100_00, takes_over=None
    )

    for answer in (outcome, frozen):
        assert (answer.status, answer.reason_code, answer.held_fen) == (
            HoldStatus.REJECTED,
            AC04,
            0,
        )


# -- the lien --------------------------------------------------------------------------------


def test_partial_hold_when_less_is_available(world: World) -> None:
    t = world.fraud(3_000_000)
    world.clock.advance(minutes=1)
    world.mule_bank.transfer("6225-mule", "ABC", "6228-next", 2_000_000)

    outcome = stop(world.mule_bank, "S1", 3_000_000, [(t, 3_000_000)])

    assert outcome.status is HoldStatus.PARTIAL
    assert outcome.reason_code == AM04
    assert outcome.held_fen == 1_500_000
    assert outcome.available_fen == 0
    assert world.mule_bank.held("6225-mule") == 1_500_000


def test_partial_with_nothing_left_to_hold_is_still_am04(world: World) -> None:
    t = world.fraud(3_500_000)
    first = stop(world.mule_bank, "S1", 4_500_000, [(t, 3_500_000)])
    assert (first.status, first.held_fen) == (HoldStatus.PARTIAL, 4_000_000)

    second = stop(world.mule_bank, "S2", 100_00, [(t, 3_500_000)])

    assert (second.status, second.reason_code, second.held_fen, second.available_fen) == (
        HoldStatus.PARTIAL,
        AM04,
        0,
        0,
    )
    assert world.mule_bank.held("6225-mule") == 4_000_000


def test_hold_is_a_lien_on_the_amount_not_the_whole_account(world: World) -> None:
    t = world.fraud(3_000_000)
    stop(world.mule_bank, "S1", 3_000_000, [(t, 3_000_000)])

    with pytest.raises(InsufficientFunds):
        world.mule_bank.transfer("6225-mule", "ABC", "6228-next", 500_001)
    assert world.mule_bank.balance("6225-mule") == 3_500_000
    assert world.other_bank.balance("6228-next") == 0
    assert world.mule_bank.statement("6225-mule")[-1].direction is Direction.IN

    world.mule_bank.transfer("6225-mule", "ABC", "6228-next", 500_000)
    assert world.mule_bank.available("6225-mule") == 0
    assert world.mule_bank.held("6225-mule") == 3_000_000
    with pytest.raises(InsufficientFunds):
        world.mule_bank.transfer("6225-mule", "ABC", "6228-next", 1)


def test_onward_lists_outgoing_transfers_since_the_fraud_credit(world: World) -> None:
    world.mule_bank.transfer("6225-mule", "ABC", "6228-next", 100_000, reference="BEFORE")
    world.clock.advance(minutes=1)
    t = world.fraud(3_000_000)
    # Same instant as the fraud credit: money can leave in the same second it lands.
    world.mule_bank.transfer("6225-mule", "ABC", "6228-next", 700_000, reference="SAME")
    world.clock.advance(minutes=2)
    world.mule_bank.transfer("6225-mule", "ICBC", "6222-victim", 200_000, reference="LATER")
    world.clock.advance(minutes=2)
    world.fraud(1)  # incoming money is not onward

    outcome = stop(world.mule_bank, "S1", 3_000_000, [(t, 3_000_000)])

    assert outcome.onward == (
        OnwardTransfer(t, 700_000, "ABC", "6228-next", "王五", "SAME"),
        OnwardTransfer(t + timedelta(minutes=2), 200_000, "ICBC", "6222-victim", VICTIM, "LATER"),
    )
    # 5,000 own - 1,000 before + 30,000 fraud - 7,000 - 2,000 onward + 0.01 later credit
    assert (outcome.status, outcome.held_fen) == (HoldStatus.PARTIAL, 2_500_001)


def test_onward_transfers_carry_the_stopped_money_first_and_no_more_of_it(world: World) -> None:
    t = world.fraud(300_000)
    world.clock.advance(minutes=1)
    world.mule_bank.transfer("6225-mule", "ABC", "6228-next", 200_000, reference="ALL")
    world.mule_bank.transfer("6225-mule", "ABC", "6228-next", 250_000, reference="PART")
    world.mule_bank.transfer("6225-mule", "ABC", "6228-next", 10_000, reference="OTHER")

    outcome = stop(world.mule_bank, "S1", 300_000, [(t, 300_000)])

    # 200,000 was all stopped money, 100,000 of the 250,000 was, and the last was the
    # holder's own: reported whole, each with what of it was this money.
    assert [(o.reference, o.amount_fen, o.carried_fen) for o in outcome.onward] == [
        ("ALL", 200_000, 0),
        ("PART", 250_000, 100_000),
    ]


# -- idempotency -----------------------------------------------------------------------------


def test_redelivered_stop_returns_the_original_answer_and_holds_once(world: World) -> None:
    t = world.fraud(3_000_000)
    first = stop(world.mule_bank, "S1", 3_000_000, [(t, 3_000_000)])
    world.clock.advance(minutes=1)

    again = stop(world.mule_bank, "S1", 3_000_000, [(t, 3_000_000)])
    different_args = stop(world.mule_bank, "S1", 100, [(t, 3_000_000)], holder="x")

    assert again is first
    assert different_args is first
    assert world.mule_bank.held("6225-mule") == 3_000_000
    assert len(world.mule_bank.holds("6225-mule")) == 1


def test_redelivered_no_match_stays_no_match(world: World) -> None:
    t = T0 + timedelta(minutes=30)
    first = stop(world.mule_bank, "S1", 3_000_000, [(t, 3_000_000)])
    world.clock.now = t
    world.fraud(3_000_000)

    again = stop(world.mule_bank, "S1", 3_000_000, [(t, 3_000_000)])

    assert again is first
    assert again.status is HoldStatus.NO_MATCH
    assert world.mule_bank.held("6225-mule") == 0


def test_a_hold_ref_cannot_be_reused_for_another_kind_of_hold(world: World) -> None:
    t = world.fraud(3_000_000)
    stop(world.mule_bank, "S1", 3_000_000, [(t, 3_000_000)])
    with pytest.raises(ValueError, match="already used for a stop"):
        world.mule_bank.freeze(
            "S1", holder_name=MULE, account_number="6225-mule", amount_fen=1, takes_over=None
        )


def test_redelivered_freeze_release_and_payment_change_nothing(world: World) -> None:
    t = world.fraud(3_000_000)
    stop(world.mule_bank, "S1", 3_000_000, [(t, 3_000_000)])
    freeze = world.mule_bank.freeze(
        "F1", holder_name=MULE, account_number="6225-mule", amount_fen=3_000_000, takes_over="S1"
    )
    assert (
        world.mule_bank.freeze(
            "F1",
            holder_name=MULE,
            account_number="6225-mule",
            amount_fen=3_000_000,
            takes_over="S1",
        )
        is freeze
    )
    assert world.mule_bank.held("6225-mule") == 3_000_000

    pay = world.mule_bank.pay_from_hold(
        "F1",
        amount_fen=1_000_000,
        beneficiary_institution="ICBC",
        beneficiary_account="6222-victim",
        beneficiary_name=VICTIM,
        reference="RET-1",
    )
    again = world.mule_bank.pay_from_hold(
        "F1",
        amount_fen=1_000_000,
        beneficiary_institution="ICBC",
        beneficiary_account="6222-victim",
        beneficiary_name=VICTIM,
        reference="RET-1",
    )
    assert again is pay
    assert world.victim_bank.balance("6222-victim") == 10_000_000 - 3_000_000 + 1_000_000
    assert world.mule_bank.held("6225-mule") == 2_000_000

    release = world.mule_bank.release_hold("F1")
    assert world.mule_bank.release_hold("F1") is release
    assert release.released_fen == 2_000_000
    assert world.mule_bank.available("6225-mule") == 2_500_000


# -- freeze ------------------------------------------------------------------------------------


def test_freeze_takes_over_a_stop_without_holding_twice(world: World) -> None:
    t = world.fraud(3_000_000)
    stop(world.mule_bank, "S1", 3_000_000, [(t, 3_000_000)])

    outcome = world.mule_bank.freeze(
        "F1", holder_name=MULE, account_number="6225-mule", amount_fen=3_000_000, takes_over="S1"
    )

    assert (outcome.status, outcome.held_fen, outcome.available_fen) == (
        HoldStatus.EXECUTED,
        3_000_000,
        500_000,
    )
    assert world.mule_bank.held("6225-mule") == 3_000_000
    assert [h.ref for h in world.mule_bank.holds("6225-mule")] == ["F1"]
    taken = world.mule_bank.hold("S1")
    assert taken is not None
    assert (taken.state, taken.ended_by) == (HoldState.TAKEN_OVER, "F1")
    released = world.mule_bank.release_hold("S1")
    assert (released.status, released.reason_code) == (HoldStatus.REJECTED, ARDT)
    assert world.mule_bank.held("6225-mule") == 3_000_000


def test_freeze_for_more_than_the_stop_adds_from_available(world: World) -> None:
    t = world.fraud(3_000_000)
    stop(world.mule_bank, "S1", 3_000_000, [(t, 3_000_000)])

    outcome = world.mule_bank.freeze(
        "F1", holder_name=MULE, account_number="6225-mule", amount_fen=3_200_000, takes_over="S1"
    )
    assert (outcome.status, outcome.held_fen, outcome.available_fen) == (
        HoldStatus.EXECUTED,
        3_200_000,
        300_000,
    )

    short = world.mule_bank.freeze(
        "F2", holder_name=MULE, account_number="6225-mule", amount_fen=400_000, takes_over=None
    )
    assert (short.status, short.reason_code, short.held_fen, short.available_fen) == (
        HoldStatus.PARTIAL,
        AM04,
        300_000,
        0,
    )
    assert world.mule_bank.held("6225-mule") == 3_500_000


def test_freeze_beyond_what_is_there_counts_the_stop_money_once(world: World) -> None:
    t = world.fraud(3_000_000)
    stop(world.mule_bank, "S1", 3_000_000, [(t, 3_000_000)])

    outcome = world.mule_bank.freeze(
        "F1", holder_name=MULE, account_number="6225-mule", amount_fen=4_000_000, takes_over="S1"
    )

    assert (outcome.status, outcome.reason_code, outcome.held_fen, outcome.available_fen) == (
        HoldStatus.PARTIAL,
        AM04,
        3_500_000,
        0,
    )
    assert world.mule_bank.held("6225-mule") == world.mule_bank.balance("6225-mule")


def test_freeze_for_less_than_the_stop_gives_the_rest_back(world: World) -> None:
    t = world.fraud(3_000_000)
    stop(world.mule_bank, "S1", 3_000_000, [(t, 3_000_000)])

    outcome = world.mule_bank.freeze(
        "F1", holder_name=MULE, account_number="6225-mule", amount_fen=1_000_000, takes_over="S1"
    )

    assert outcome.held_fen == 1_000_000
    assert world.mule_bank.held("6225-mule") == 1_000_000
    assert world.mule_bank.available("6225-mule") == 2_500_000


def test_freeze_takes_over_nothing_from_an_ended_or_foreign_hold(world: World) -> None:
    world.mule_bank.open_account("6225-mule2", MULE)
    t = world.fraud(3_000_000)
    t2 = world.fraud(200_000, account="6225-mule2")
    stop(world.mule_bank, "S1", 3_000_000, [(t, 3_000_000)])
    stop(world.mule_bank, "S2", 200_000, [(t2, 200_000)], account="6225-mule2")
    world.mule_bank.release_hold("S1")

    ended = world.mule_bank.freeze(
        "F1", holder_name=MULE, account_number="6225-mule", amount_fen=3_000_000, takes_over="S1"
    )
    foreign = world.mule_bank.freeze(
        "F2", holder_name=MULE, account_number="6225-mule", amount_fen=100_000, takes_over="S2"
    )

    assert ended.held_fen == 3_000_000
    assert "nothing carried over" in ended.reason
    assert (foreign.held_fen, foreign.status) == (100_000, HoldStatus.EXECUTED)
    assert world.mule_bank.held("6225-mule") == 3_100_000
    assert world.mule_bank.held("6225-mule2") == 200_000
    s2 = world.mule_bank.hold("S2")
    assert s2 is not None and s2.state is HoldState.ACTIVE


@pytest.mark.parametrize(
    ("holder", "account", "reason_part"),
    [("王五", "6225-mule", "holder name"), (MULE, "6225-ghost", "does not exist")],
)
def test_freeze_needs_holder_and_account_to_match(
    world: World, holder: str, account: str, reason_part: str
) -> None:
    t = world.fraud(3_000_000)
    stop(world.mule_bank, "S1", 3_000_000, [(t, 3_000_000)])

    outcome = world.mule_bank.freeze(
        "F1", holder_name=holder, account_number=account, amount_fen=3_000_000, takes_over="S1"
    )

    assert (outcome.status, outcome.reason_code, outcome.held_fen) == (
        HoldStatus.NO_MATCH,
        NMAT,
        0,
    )
    assert reason_part in outcome.reason
    # The stop it would have taken over is untouched.
    assert [h.ref for h in world.mule_bank.holds("6225-mule")] == ["S1"]


# -- release -----------------------------------------------------------------------------------


def test_release_ends_the_hold_and_the_money_is_spendable_again(world: World) -> None:
    t = world.fraud(3_000_000)
    stop(world.mule_bank, "S1", 3_000_000, [(t, 3_000_000)])

    outcome = world.mule_bank.release_hold("S1")

    assert (outcome.status, outcome.reason_code, outcome.released_fen) == (
        HoldStatus.EXECUTED,
        "",
        3_000_000,
    )
    assert world.mule_bank.held("6225-mule") == 0
    assert world.mule_bank.holds("6225-mule") == []
    world.mule_bank.transfer("6225-mule", "ABC", "6228-next", 3_500_000)
    assert world.other_bank.balance("6228-next") == 3_500_000


def test_release_of_an_unknown_or_unexecuted_hold_is_nmat(world: World) -> None:
    stop(world.mule_bank, "S1", 3_000_000, [(T0, 3_000_000)])

    unknown = world.mule_bank.release_hold("NOPE")
    never = world.mule_bank.release_hold("S1")

    assert (unknown.status, unknown.reason_code, unknown.released_fen) == (
        HoldStatus.REJECTED,
        NMAT,
        0,
    )
    assert (never.status, never.reason_code) == (HoldStatus.REJECTED, NMAT)
    assert "never placed" in never.reason


# -- fund return ---------------------------------------------------------------------------------


def _frozen(world: World, amount_fen: int = 3_000_000) -> None:
    t = world.fraud(amount_fen)
    stop(world.mule_bank, "S1", amount_fen, [(t, amount_fen)])
    world.mule_bank.freeze(
        "F1", holder_name=MULE, account_number="6225-mule", amount_fen=amount_fen, takes_over="S1"
    )
    world.clock.advance(days=3)


def _pay(world: World, amount_fen: int, reference: str, **overrides: str) -> PayOutcome:
    args = {
        "beneficiary_institution": "ICBC",
        "beneficiary_account": "6222-victim",
        "beneficiary_name": VICTIM,
    } | overrides
    return world.mule_bank.pay_from_hold(
        overrides.get("hold_ref", "F1"),
        amount_fen=amount_fen,
        beneficiary_institution=args["beneficiary_institution"],
        beneficiary_account=args["beneficiary_account"],
        beneficiary_name=args["beneficiary_name"],
        reference=reference,
    )


def test_pay_out_moves_frozen_money_to_the_victim_through_the_network(world: World) -> None:
    _frozen(world)
    total = world.network.total_fen()

    outcome = world.mule_bank.pay_from_hold(
        "F1",
        amount_fen=3_000_000,
        beneficiary_institution="ICBC",
        beneficiary_account="6222-victim",
        beneficiary_name=VICTIM,
        reference="RET-1",
    )

    assert (outcome.status, outcome.reason_code, outcome.returned_fen) == (
        HoldStatus.EXECUTED,
        "",
        3_000_000,
    )
    assert world.victim_bank.balance("6222-victim") == 10_000_000
    assert world.mule_bank.balance("6225-mule") == 500_000
    assert world.mule_bank.available("6225-mule") == 500_000
    assert world.mule_bank.held("6225-mule") == 0
    paid = world.mule_bank.hold("F1")
    assert paid is not None and paid.state is HoldState.PAID_OUT
    out = world.mule_bank.statement("6225-mule")[-1]
    back = world.victim_bank.statement("6222-victim")[-1]
    assert (out.direction, out.reference, out.time, out.counterparty_holder) == (
        Direction.OUT,
        "RET-1",
        world.clock.now,
        VICTIM,
    )
    assert (back.direction, back.reference, back.time, back.counterparty_holder) == (
        Direction.IN,
        "RET-1",
        world.clock.now,
        MULE,
    )
    assert world.network.total_fen() == total


def test_one_freeze_can_repay_several_victims_then_double_pay_is_ardt(world: World) -> None:
    world.victim_bank.open_account("6222-second", "赵六", 0)
    _frozen(world)

    first = _pay(world, 2_000_000, "RET-1")
    second = _pay(
        world, 1_000_000, "RET-2", beneficiary_account="6222-second", beneficiary_name="赵六"
    )
    third = _pay(world, 1, "RET-3")

    assert [o.returned_fen for o in (first, second, third)] == [
        2_000_000,
        1_000_000,
        0,
    ]
    assert (third.status, third.reason_code) == (
        HoldStatus.REJECTED,
        ARDT,
    )
    assert world.victim_bank.balance("6222-second") == 1_000_000
    assert world.mule_bank.balance("6225-mule") == 500_000
    release = world.mule_bank.release_hold("F1")
    assert (release.status, release.reason_code) == (HoldStatus.REJECTED, ARDT)


def test_paying_more_than_is_held_returns_what_is_held(world: World) -> None:
    _frozen(world)

    outcome = world.mule_bank.pay_from_hold(
        "F1",
        amount_fen=5_000_000,
        beneficiary_institution="ICBC",
        beneficiary_account="6222-victim",
        beneficiary_name=VICTIM,
        reference="RET-1",
    )

    assert (outcome.status, outcome.reason_code, outcome.returned_fen) == (
        HoldStatus.PARTIAL,
        AM04,
        3_000_000,
    )
    # The mule's own money is not part of the hold and is not paid out.
    assert world.mule_bank.balance("6225-mule") == 500_000


def test_a_stop_is_not_paid_out(world: World) -> None:
    t = world.fraud(3_000_000)
    stop(world.mule_bank, "S1", 3_000_000, [(t, 3_000_000)])

    outcome = _pay(world, 100, "RET-1", hold_ref="S1")

    assert (outcome.status, outcome.reason_code) == (
        HoldStatus.REJECTED,
        LEGL,
    )
    assert world.mule_bank.held("6225-mule") == 3_000_000


def test_pay_from_unknown_or_released_hold(world: World) -> None:
    _frozen(world)
    unknown = _pay(world, 100, "RET-1", hold_ref="F9")
    world.mule_bank.release_hold("F1")
    released = _pay(world, 100, "RET-2")

    assert unknown.reason_code == NMAT
    assert released.reason_code == ARDT
    assert world.victim_bank.balance("6222-victim") == 7_000_000


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"beneficiary_name": "王五"}, BE01),
        ({"beneficiary_account": "6222-ghost"}, AC01),
        ({"beneficiary_institution": "NOBANK"}, AC01),
        ({"beneficiary_account": "6222-closed"}, AC04),
    ],
    ids=["name", "account", "institution", "closed"],
)
def test_a_refused_payment_moves_nothing_and_keeps_the_hold(
    world: World, overrides: dict[str, str], code: str
) -> None:
    world.victim_bank.open_account("6222-closed", VICTIM, 0)
    world.victim_bank.close_account("6222-closed")
    _frozen(world)
    total = world.network.total_fen()

    outcome = _pay(world, 1_000_000, "RET-1", **overrides)

    assert (outcome.status, outcome.reason_code) == (
        HoldStatus.REJECTED,
        code,
    )
    assert world.mule_bank.held("6225-mule") == 3_000_000
    assert world.mule_bank.balance("6225-mule") == 3_500_000
    assert world.network.total_fen() == total


# -- accounts and the network -------------------------------------------------------------------


def test_network_transfer_stamps_both_sides_alike(world: World) -> None:
    world.clock.advance(hours=1)
    ref = world.network.transfer("ICBC", "6222-victim", "CMB", "6225-mule", 123_45)
    named = world.network.transfer("ICBC", "6222-victim", "ABC", "6228-next", 1, reference="X")

    assert (ref, named) == ("TRF000001", "X")
    out = world.victim_bank.statement("6222-victim")[0]
    into = world.mule_bank.statement("6225-mule")[0]
    assert (out.time, out.amount_fen, out.reference) == (world.clock.now, 123_45, ref)
    assert (into.time, into.amount_fen, into.reference) == (world.clock.now, 123_45, ref)
    assert (out.counterparty_institution, out.counterparty_account, out.counterparty_holder) == (
        "CMB",
        "6225-mule",
        MULE,
    )
    assert (into.counterparty_institution, into.counterparty_holder) == ("ICBC", VICTIM)


def test_refused_transfers_leave_the_books_untouched(world: World) -> None:
    world.other_bank.open_account("6228-closed", "王五")
    world.other_bank.close_account("6228-closed")
    total = world.network.total_fen()

    with pytest.raises(UnknownInstitution):
        world.network.transfer("ICBC", "6222-victim", "NOBANK", "1", 100)
    with pytest.raises(UnknownAccount):
        world.network.transfer("ICBC", "6222-victim", "ABC", "6228-ghost", 100)
    with pytest.raises(AccountClosed):
        world.network.transfer("ICBC", "6222-victim", "ABC", "6228-closed", 100)
    with pytest.raises(InsufficientFunds):
        world.network.transfer("ICBC", "6222-victim", "ABC", "6228-next", 10_000_001)
    with pytest.raises(AccountClosed):
        world.network.transfer("ABC", "6228-closed", "ICBC", "6222-victim", 1)

    assert world.victim_bank.statement("6222-victim") == []
    assert world.victim_bank.balance("6222-victim") == 10_000_000
    assert world.network.total_fen() == total


def test_an_account_under_a_hold_cannot_be_closed(world: World) -> None:
    t = world.fraud(3_000_000)
    stop(world.mule_bank, "S1", 3_000_000, [(t, 3_000_000)])
    with pytest.raises(AccountHasHolds):
        world.mule_bank.close_account("6225-mule")
    world.mule_bank.release_hold("S1")
    world.mule_bank.close_account("6225-mule")
    assert world.mule_bank.is_closed("6225-mule")


@pytest.mark.parametrize("amount", [0, -1])
def test_amounts_must_be_positive(world: World, amount: int) -> None:
    with pytest.raises(ValueError):
        world.network.transfer("ICBC", "6222-victim", "ABC", "6228-next", amount)
    with pytest.raises(ValueError):
        stop(world.mule_bank, "S1", amount, [(T0, 100)])


def test_a_bank_off_the_network_cannot_move_money() -> None:
    bank = SimulatedCoreBank("LONE", ManualClock())
    bank.open_account("1", "甲", 100)
    with pytest.raises(CoreBankingError, match="not on a payment network"):
        bank.transfer("1", "LONE", "2", 1)


def test_banks_paying_each_other_from_threads_neither_deadlock_nor_lose_money() -> None:
    clock = ManualClock()
    network = PaymentNetwork(clock)
    banks = [SimulatedCoreBank(code, clock) for code in ("P", "Q")]
    for bank in banks:
        network.register(bank)
        bank.open_account("acct", bank.institution_code, 1_000_000)
        bank.freeze("F", holder_name=bank.institution_code, account_number="acct",
                    amount_fen=500_000, takes_over=None)  # fmt: skip
    total = network.total_fen()

    def work(bank: SimulatedCoreBank, other: str) -> None:
        for i in range(200):
            bank.pay_from_hold(
                "F",
                amount_fen=1,
                beneficiary_institution=other,
                beneficiary_account="acct",
                beneficiary_name=other,
                reference=f"{bank.institution_code}{i}",
            )
            bank.transfer("acct", other, "acct", 1)

    threads = [
        threading.Thread(target=work, args=(banks[0], "Q")),
        threading.Thread(target=work, args=(banks[1], "P")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert network.total_fen() == total
    assert [b.held("acct") for b in banks] == [499_800, 499_800]
    assert [b.balance("acct") for b in banks] == [1_000_000, 1_000_000]


# -- property: money is conserved, nothing is overspent -----------------------------------------

ACCOUNTS = [("ICBC", "A1", "甲"), ("ICBC", "A2", "乙"), ("CMB", "B1", "丙"), ("ABC", "C1", "丁")]
account_index = st.integers(min_value=0, max_value=len(ACCOUNTS) - 1)
amounts = st.integers(min_value=1, max_value=60_000)


class MoneyMachine(RuleBasedStateMachine):
    """Random transfers, stops, freezes, releases and pay-outs across three banks."""

    @initialize(openings=st.lists(st.integers(0, 100_000), min_size=4, max_size=4))
    def open_banks(self, openings: list[int]) -> None:
        self.clock = ManualClock()
        self.network = PaymentNetwork(self.clock)
        self.banks = {
            code: SimulatedCoreBank(code, self.clock, match_tolerance=timedelta(seconds=90))
            for code in ("ICBC", "CMB", "ABC")
        }
        for bank in self.banks.values():
            self.network.register(bank)
        for (code, number, holder), fen in zip(ACCOUNTS, openings, strict=True):
            self.banks[code].open_account(number, holder, fen)
        self.total = sum(openings)
        self.openings = {(c, n): fen for (c, n, _), fen in zip(ACCOUNTS, openings, strict=True)}
        self.refs: list[tuple[str, str]] = []  # (institution, hold_ref)
        self.counter = 0

    def _ref(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    @rule(src=account_index, dst=account_index, fen=amounts, seconds=st.integers(0, 200))
    def transfer(self, src: int, dst: int, fen: int, seconds: int) -> None:
        self.clock.advance(seconds=seconds)
        (sc, sn, _), (dc, dn, _) = ACCOUNTS[src], ACCOUNTS[dst]
        if src == dst:
            return
        before = self.banks[sc].available(sn)
        try:
            self.network.transfer(sc, sn, dc, dn, fen)
        except InsufficientFunds:
            assert fen > before
        else:
            assert fen <= before

    @rule(who=account_index, fen=amounts, data=st.data())
    def place_stop(self, who: int, fen: int, data: st.DataObject) -> None:
        code, number, holder = ACCOUNTS[who]
        bank = self.banks[code]
        incoming = [
            (e.time, e.amount_fen) for e in bank.statement(number) if e.direction is Direction.IN
        ]
        facts = data.draw(st.lists(st.sampled_from(incoming), max_size=2)) if incoming else []
        before = bank.available(number)
        ref = self._ref("S")
        outcome = bank.place_hold(
            ref, holder_name=holder, account_number=number, amount_fen=fen, credits=facts
        )
        if outcome.status in (HoldStatus.EXECUTED, HoldStatus.PARTIAL):
            assert outcome.held_fen == min(fen, before)
            assert outcome.available_fen == before - outcome.held_fen
            self.refs.append((code, ref))
        else:
            assert bank.available(number) == before

    @rule(who=account_index, fen=amounts, take=st.booleans())
    def place_freeze(self, who: int, fen: int, take: bool) -> None:
        code, number, holder = ACCOUNTS[who]
        bank = self.banks[code]
        active = bank.holds(number)
        takes_over = active[0].ref if take and active else None
        before_held = bank.held(number)
        ref = self._ref("F")
        outcome = bank.freeze(
            ref, holder_name=holder, account_number=number, amount_fen=fen, takes_over=takes_over
        )
        assert outcome.held_fen <= fen
        carried = min(active[0].held_fen, fen) if takes_over else 0
        released = active[0].held_fen - carried if takes_over else 0
        assert bank.held(number) == before_held - released + outcome.held_fen - carried
        self.refs.append((code, ref))

    @rule(pick=st.integers(0, 10_000))
    def release(self, pick: int) -> None:
        if not self.refs:
            return
        code, ref = self.refs[pick % len(self.refs)]
        self.banks[code].release_hold(ref)

    @rule(pick=st.integers(0, 10_000), fen=amounts, dst=account_index)
    def pay_out(self, pick: int, fen: int, dst: int) -> None:
        if not self.refs:
            return
        code, ref = self.refs[pick % len(self.refs)]
        bank = self.banks[code]
        info = bank.hold(ref)
        assert info is not None
        dc, dn, dh = ACCOUNTS[dst]
        if (dc, dn) == (code, info.account_number):
            return
        outcome = bank.pay_from_hold(
            ref,
            amount_fen=fen,
            beneficiary_institution=dc,
            beneficiary_account=dn,
            beneficiary_name=dh,
            reference=self._ref("R"),
        )
        if info.state is HoldState.ACTIVE and info.kind is HoldKind.FREEZE and info.held_fen:
            assert outcome.returned_fen == min(fen, info.held_fen)
        else:
            assert outcome.returned_fen == 0

    @invariant()
    def money_is_conserved(self) -> None:
        assert self.network.total_fen() == self.total

    @invariant()
    def nothing_is_overspent(self) -> None:
        for code, number, _ in ACCOUNTS:
            bank = self.banks[code]
            assert bank.available(number) >= 0
            assert bank.held(number) == sum(h.held_fen for h in bank.holds(number))
            # The statement accounts for every fen of the balance.
            flows = sum(
                e.amount_fen if e.direction is Direction.IN else -e.amount_fen
                for e in bank.statement(number)
            )
            assert bank.balance(number) == self.openings[code, number] + flows


TestMoneyIsConserved = MoneyMachine.TestCase
TestMoneyIsConserved.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
