"""The domain rules of a case, with plain objects: no database, no gRPC, no clock but `now`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest

from hub.domain.cases import (
    MAX_AMOUNT_FEN,
    MAX_TRANSACTIONS,
    AccountRef,
    Case,
    CaseState,
    Execution,
    ExecutionStatus,
    FraudTransaction,
    FreezeCommand,
    OnwardTransfer,
    Order,
    OrderKind,
    OrderState,
    Policy,
    ReleaseCommand,
    Report,
    ReturnCommand,
    StopCommand,
    VerificationOutcome,
    add_months,
)
from hub.domain.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from hub.domain.institutions import (
    HUB_CODE,
    ContactRole,
    DutyContact,
    Institution,
    InstitutionKind,
    KeyState,
)
from hub.domain.rules import AutoStopRule
from hub.domain.trail import branch_allowance

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
POLICY = Policy()

KINDS = {
    "BANKA": InstitutionKind.BANK,
    "BANKB": InstitutionKind.BANK,
    "BANKC": InstitutionKind.BANK,
    "PAYX": InstitutionKind.PAYMENT_INSTITUTION,
    "AFC": InstitutionKind.ANTI_FRAUD_CENTRE,
    "REG": InstitutionKind.REGULATOR,
    HUB_CODE: InstitutionKind.HUB,
}

VICTIM = AccountRef("BANKA", "6222010000000001", "Zhang San")
MULE_B = AccountRef("BANKB", "6222020000000002", "Li Si")
MULE_C = AccountRef("BANKC", "6222030000000003", "Wang Wu")
MULE_P = AccountRef("PAYX", "PAYX-0000-7777", "Zhao Liu")


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def tx(
    amount: int = 3_000_000,
    *,
    payee: AccountRef = MULE_B,
    payer: AccountRef = VICTIM,
    when: datetime | None = None,
) -> FraudTransaction:
    return FraudTransaction(
        transaction_time=when or at(-20),
        amount_fen=amount,
        payer_institution=payer.institution_code,
        payer_account=payer.account_number,
        payer_name=payer.holder_name,
        payee_institution=payee.institution_code,
        payee_account=payee.account_number,
        payee_name=payee.holder_name,
        channel="mobile_banking",
        reference="A-TX-1",
    )


def make_report(*transactions: FraudTransaction, **changes: object) -> Report:
    report = Report(
        victim_name="Zhang San",
        victim_id_number="110101199001011234",
        victim_phone="13800000000",
        fraud_type="impersonating_officials",
        victim_report_time=at(-5),
        description="caller posing as police asked for a 'safe account' transfer",
        transactions=list(transactions) if transactions else [tx()],
    )
    return dataclasses.replace(report, **changes)  # type: ignore[arg-type]


def open_case(*transactions: FraudTransaction, reporter: str = "BANKA", now: datetime = T0) -> Case:
    return Case.open(
        "C1",
        reporter,
        make_report(*transactions),
        now=now,
        message_id="m-report",
        institutions=KINDS,
    )


def verified_case(*transactions: FraudTransaction) -> Case:
    case = open_case(*transactions)
    case.verify("BANKA", VerificationOutcome.CONFIRMED, "", now=at(1), message_id="m-verify")
    return case


def next_id(case: Case) -> str:
    return f"{case.case_id}-O{len(case.orders) + 1:03d}"


def issue(
    case: Case,
    command: StopCommand | FreezeCommand | ReleaseCommand | ReturnCommand,
    *,
    now: datetime | None = None,
    policy: Policy = POLICY,
    rule: str | None = None,
    by: str = "AFC",
) -> Order:
    return case.issue(
        next_id(case),
        command,
        issued_by=by,
        now=now or at(2),
        message_id=f"m-issue-{len(case.orders) + 1}",
        institutions=KINDS,
        policy=policy,
        auto_stop_rule_id=rule,
        branch_allowance=branch_allowance,
    )


def stop_cmd(
    account: AccountRef = MULE_B,
    amount: int = 3_000_000,
    facts: list[tuple[datetime, int]] | None = None,
) -> StopCommand:
    return StopCommand(account, amount, facts if facts is not None else [(at(-20), 3_000_000)])


def freeze_cmd(
    account: AccountRef = MULE_B,
    amount: int = 3_000_000,
    *,
    stop_order_id: str = "",
    term: int = 6,
    filed: str = "JZ-2026-0042",
    authority: str = "Chaoyang PSB",
) -> FreezeCommand:
    return FreezeCommand(account, amount, filed, authority, term, stop_order_id)


def result(
    status: ExecutionStatus = ExecutionStatus.EXECUTED,
    *,
    held: int = 0,
    released: int = 0,
    returned: int = 0,
    available: int = 0,
    code: str = "",
    reason: str = "",
    when: datetime | None = None,
    onward: tuple[OnwardTransfer, ...] = (),
) -> Execution:
    return Execution(
        status=status,
        reason_code=code,
        reason=reason,
        amount_held_fen=held,
        available_balance_fen=available,
        amount_released_fen=released,
        amount_returned_fen=returned,
        execute_time=when,
        onward=list(onward),
    )


def answer(
    case: Case,
    order: Order,
    execution: Execution,
    *,
    actor: str | None = None,
    now: datetime | None = None,
    policy: Policy = POLICY,
) -> Order:
    return case.answer(
        order.order_id,
        actor or order.addressed_to,
        execution,
        now=now or at(5),
        message_id=f"m-answer-{order.order_id}",
        policy=policy,
    )


def holding_stop(case: Case, amount: int = 3_000_000, held: int | None = None) -> Order:
    order = issue(case, stop_cmd(amount=amount))
    held = amount if held is None else held
    status = ExecutionStatus.EXECUTED if held == amount else ExecutionStatus.PARTIALLY_EXECUTED
    answer(case, order, result(status, held=held, code="" if held == amount else "AM04"))
    return order


def holding_freeze(case: Case, amount: int = 3_000_000) -> Order:
    order = issue(case, freeze_cmd(amount=amount))
    answer(case, order, result(held=amount))
    return order


def onward(
    when: datetime, amount: int = 100_000, account: str = "6222990000000009"
) -> OnwardTransfer:
    return OnwardTransfer(when, amount, "BANKC", account, "Qian Qi", reference="B-OUT-1")


# ---- report ---------------------------------------------------------------------------------


def test_a_report_opens_a_case_with_its_transactions_and_a_first_event() -> None:
    case = open_case(tx(3_000_000), tx(2_000_000, when=at(-19)))

    assert case.state is CaseState.REPORTED
    assert case.reporting_institution == "BANKA"
    assert case.created_at == T0
    assert case.report_message_id == "m-report"
    assert case.loss_fen == 5_000_000
    assert [t.position for t in case.transactions] == [0, 1]
    assert [e.kind for e in case.events] == ["report.received"]
    first = case.events[0]
    assert (first.sequence, first.at, first.actor, first.message_id) == (
        1,
        T0,
        "BANKA",
        "m-report",
    )
    assert "¥50,000.00" in first.summary
    assert case.held_fen == case.returned_fen == case.released_fen == 0


def test_a_payment_institution_reports_and_receives_like_a_bank() -> None:
    wallet_victim = AccountRef("PAYX", "PAYX-0000-0001", "Zhang San")
    case = open_case(tx(payer=wallet_victim, payee=MULE_B), reporter="PAYX")
    assert case.reporting_institution == "PAYX"
    case = open_case(tx(payee=MULE_P))
    assert case.payee_accounts()[0][0] == MULE_P


def _with_tx(**changes: object) -> Callable[[], Report]:
    return lambda: make_report(dataclasses.replace(tx(), **changes))  # type: ignore[arg-type]


REPORT_ERRORS: list[tuple[str, Callable[[], Report], str, str]] = [
    ("zero amount", _with_tx(amount_fen=0), "transactions[0].amount_fen", "INVALID_FIELD"),
    ("negative amount", _with_tx(amount_fen=-100), "transactions[0].amount_fen", "INVALID_FIELD"),
    (
        "implausible amount",
        _with_tx(amount_fen=MAX_AMOUNT_FEN + 1),
        "transactions[0].amount_fen",
        "INVALID_FIELD",
    ),
    (
        "missing payee account",
        _with_tx(payee_account=""),
        "transactions[0].payee.account_number",
        "INVALID_FIELD",
    ),
    (
        "payee account with a space",
        _with_tx(payee_account="6222 0200"),
        "transactions[0].payee.account_number",
        "INVALID_FIELD",
    ),
    (
        "missing payer account",
        _with_tx(payer_account=""),
        "transactions[0].payer.account_number",
        "INVALID_FIELD",
    ),
    (
        "missing payee holder",
        _with_tx(payee_name="  "),
        "transactions[0].payee.holder_name",
        "INVALID_FIELD",
    ),
    (
        "time beyond the tolerance",
        _with_tx(transaction_time=T0 + timedelta(minutes=5, seconds=1)),
        "transactions[0].transaction_time",
        "INVALID_FIELD",
    ),
    (
        "unknown payee institution",
        _with_tx(payee_institution="NOBANK"),
        "transactions[0].payee.institution_code",
        "UNKNOWN_INSTITUTION",
    ),
    (
        "missing payee institution",
        _with_tx(payee_institution=""),
        "transactions[0].payee.institution_code",
        "INVALID_FIELD",
    ),
    (
        "payee at the centre, which keeps no accounts",
        _with_tx(payee_institution="AFC"),
        "transactions[0].payee.institution_code",
        "INVALID_FIELD",
    ),
    (
        "payee at the regulator",
        _with_tx(payee_institution="REG"),
        "transactions[0].payee.institution_code",
        "INVALID_FIELD",
    ),
    (
        "payee at the hub",
        _with_tx(payee_institution=HUB_CODE),
        "transactions[0].payee.institution_code",
        "INVALID_FIELD",
    ),
    (
        "payer at another institution than the reporter",
        _with_tx(payer_institution="BANKC"),
        "transactions[0].payer.institution_code",
        "INVALID_FIELD",
    ),
    (
        "payer equals payee",
        _with_tx(payee_institution=VICTIM.institution_code, payee_account=VICTIM.account_number),
        "transactions[0].payee",
        "INVALID_FIELD",
    ),
    (
        "the second transaction is named",
        lambda: make_report(tx(), tx(amount=0)),
        "transactions[1].amount_fen",
        "INVALID_FIELD",
    ),
    (
        "several victim accounts",
        lambda: make_report(tx(), tx(payer=AccountRef("BANKA", "6222010000000099", "Zhang San"))),
        "transactions",
        "INVALID_FIELD",
    ),
    ("no transactions", lambda: make_report(transactions=[]), "transactions", "INVALID_FIELD"),
    (
        "too many transactions",
        lambda: make_report(*[tx(100) for _ in range(MAX_TRANSACTIONS + 1)]),
        "transactions",
        "INVALID_FIELD",
    ),
    ("missing victim name", lambda: make_report(victim_name=" "), "victim.name", "INVALID_FIELD"),
    ("missing fraud type", lambda: make_report(fraud_type=""), "fraud_type", "INVALID_FIELD"),
    (
        "victim report time in the future",
        lambda: make_report(victim_report_time=at(6)),
        "victim_report_time",
        "INVALID_FIELD",
    ),
]


@pytest.mark.parametrize(
    ("build", "field", "reason"),
    [pytest.param(b, f, r, id=name) for name, b, f, r in REPORT_ERRORS],
)
def test_an_invalid_report_is_refused_naming_the_field(
    build: Callable[[], Report], field: str, reason: str
) -> None:
    with pytest.raises(InvalidArgument) as err:
        Case.open("C1", "BANKA", build(), now=T0, message_id="m", institutions=KINDS)
    assert err.value.field == field
    assert err.value.reason == reason
    assert err.value.code == "INVALID_ARGUMENT"
    assert err.value.message.startswith(f"{field}: ")


def test_a_time_up_to_five_minutes_ahead_is_clock_drift_not_an_error() -> None:
    case = open_case(tx(when=T0 + timedelta(minutes=5)))
    assert case.transactions[0].transaction_time == T0 + timedelta(minutes=5)


def test_payer_holder_name_is_optional_but_payee_holder_is_not() -> None:
    case = open_case(tx(payer=AccountRef("BANKA", VICTIM.account_number, "")))
    assert case.transactions[0].payer_name == ""


# ---- verification ---------------------------------------------------------------------------


def test_only_the_reporting_institution_verifies() -> None:
    case = open_case()
    with pytest.raises(PermissionDenied) as err:
        case.verify("BANKB", VerificationOutcome.CONFIRMED, "", now=at(1), message_id="m2")
    assert err.value.reason == "NOT_REPORTING_INSTITUTION"
    assert case.state is CaseState.REPORTED
    assert case.verified_at is None
    assert len(case.events) == 1


def test_confirming_verifies_the_case_and_records_who_and_when() -> None:
    case = open_case()
    case.verify("BANKA", VerificationOutcome.CONFIRMED, "", now=at(3), message_id="m-v")
    assert case.state is CaseState.VERIFIED
    assert case.verified_at == at(3)
    last = case.events[-1]
    assert (last.kind, last.actor, last.at, last.message_id, last.sequence) == (
        "report.verified",
        "BANKA",
        at(3),
        "m-v",
        2,
    )


@pytest.mark.parametrize("first", list(VerificationOutcome))
def test_a_report_is_verified_once(first: VerificationOutcome) -> None:
    case = open_case()
    case.verify("BANKA", first, "not fraud: customer's own transfer", now=at(1), message_id="a")
    state = case.state
    with pytest.raises(FailedPrecondition) as err:
        case.verify("BANKA", VerificationOutcome.CONFIRMED, "", now=at(2), message_id="b")
    assert err.value.reason == "ALREADY_VERIFIED"
    assert case.state is state
    assert case.verified_at == at(1)
    assert len(case.events) == 2


def test_a_rejected_verification_needs_a_reason() -> None:
    case = open_case()
    with pytest.raises(InvalidArgument) as err:
        case.verify("BANKA", VerificationOutcome.REJECTED, "   ", now=at(1), message_id="m")
    assert err.value.field == "reason"
    assert case.state is CaseState.REPORTED
    case.verify("BANKA", VerificationOutcome.REJECTED, "own transfer", now=at(1), message_id="m")
    assert case.state is CaseState.REJECTED
    assert case.verification_reason == "own transfer"
    assert case.events[-1].kind == "report.rejected"
    assert "own transfer" in case.events[-1].summary


# ---- orders follow verification -------------------------------------------------------------


def test_no_order_before_verification() -> None:
    case = open_case()
    with pytest.raises(FailedPrecondition) as err:
        issue(case, stop_cmd())
    assert err.value.reason == "CASE_NOT_VERIFIED"
    assert case.orders == []
    assert len(case.events) == 1


def test_no_order_after_a_rejected_verification() -> None:
    case = open_case()
    case.verify("BANKA", VerificationOutcome.REJECTED, "no fraud", now=at(1), message_id="m")
    with pytest.raises(FailedPrecondition) as err:
        issue(case, stop_cmd())
    assert err.value.reason == "CASE_ENDED"
    assert case.orders == []


def test_no_order_after_the_case_closed() -> None:
    case = verified_case()
    stop = holding_stop(case)
    release = issue(case, ReleaseCommand(stop.order_id, "unrelated funds"), now=at(10))
    answer(case, release, result(released=3_000_000), now=at(11))
    assert case.close_if_settled(at(11))
    with pytest.raises(FailedPrecondition) as err:
        issue(case, stop_cmd(), now=at(12))
    assert err.value.reason == "CASE_ENDED"
    assert len(case.orders) == 2


# ---- stop -----------------------------------------------------------------------------------


def test_a_stop_order_records_the_four_facts_and_who_issued_it() -> None:
    case = verified_case()
    order = issue(case, stop_cmd(amount=2_500_000), now=at(2))
    assert order.kind is OrderKind.STOP
    assert order.state is OrderState.PENDING
    assert order.addressed_to == "BANKB"
    assert order.account == MULE_B
    assert order.amount_fen == 2_500_000
    assert [(f.transaction_time, f.amount_fen) for f in order.facts] == [(at(-20), 3_000_000)]
    assert (order.issued_by, order.issued_at, order.origin_message_id) == (
        "AFC",
        at(2),
        "m-issue-1",
    )
    assert order.auto_stop_rule_id is None
    assert case.orders == [order]
    event = case.events[-1]
    assert (event.kind, event.actor, event.order_id, event.at) == (
        "order.issued",
        "AFC",
        order.order_id,
        at(2),
    )


def test_a_stop_under_a_standing_rule_is_recorded_as_the_hubs_act_in_the_centres_name() -> None:
    case = verified_case()
    order = issue(case, stop_cmd(), rule="R-AUTO-1")
    assert order.issued_by == "AFC"
    assert order.auto_stop_rule_id == "R-AUTO-1"
    assert case.events[-1].actor == HUB_CODE
    assert "R-AUTO-1" in case.events[-1].summary


@pytest.mark.parametrize(
    ("command", "field", "reason"),
    [
        pytest.param(stop_cmd(amount=3_000_001), "stop.amount_fen", "INVALID_FIELD", id="above"),
        pytest.param(stop_cmd(amount=0), "stop.amount_fen", "INVALID_FIELD", id="zero"),
        pytest.param(stop_cmd(amount=-1), "stop.amount_fen", "INVALID_FIELD", id="negative"),
        pytest.param(stop_cmd(facts=[]), "stop.transactions", "INVALID_FIELD", id="no-facts"),
        pytest.param(
            stop_cmd(facts=[(at(-20), 0)]),
            "stop.transactions[0].amount_fen",
            "INVALID_FIELD",
            id="fact-amount",
        ),
        pytest.param(
            stop_cmd(facts=[(at(-20), 1_000_000), (at(10), 2_000_000)]),
            "stop.transactions[1].transaction_time",
            "INVALID_FIELD",
            id="fact-in-future",
        ),
        pytest.param(
            stop_cmd(AccountRef("AFC", "6222020000000002", "Li Si")),
            "stop.account.institution_code",
            "INVALID_FIELD",
            id="centre-keeps-no-accounts",
        ),
        pytest.param(
            stop_cmd(AccountRef("XBANK", "6222020000000002", "Li Si")),
            "stop.account.institution_code",
            "UNKNOWN_INSTITUTION",
            id="unknown-institution",
        ),
        pytest.param(
            stop_cmd(AccountRef("BANKB", "", "Li Si")),
            "stop.account.account_number",
            "INVALID_FIELD",
            id="missing-account",
        ),
        pytest.param(
            stop_cmd(AccountRef("BANKB", "6222020000000002", "")),
            "stop.account.holder_name",
            "INVALID_FIELD",
            id="missing-holder",
        ),
    ],
)
def test_an_invalid_stop_is_refused_naming_the_field(
    command: StopCommand, field: str, reason: str
) -> None:
    case = verified_case()
    events = len(case.events)
    with pytest.raises(InvalidArgument) as err:
        issue(case, command)
    assert (err.value.field, err.value.reason) == (field, reason)
    assert case.orders == []
    assert len(case.events) == events


def test_a_stop_may_hold_up_to_the_sum_of_the_named_credits() -> None:
    case = verified_case()
    order = issue(
        case, stop_cmd(amount=5_000_000, facts=[(at(-30), 2_000_000), (at(-20), 3_000_000)])
    )
    assert order.amount_fen == 5_000_000
    assert [f.position for f in order.facts] == [0, 1]


def test_a_stop_expires_48_hours_after_it_took_effect_at_the_execution_time() -> None:
    case = verified_case()
    order = issue(case, stop_cmd(), now=at(2))
    answer(case, order, result(held=3_000_000, available=12_00, when=at(4)), now=at(6))
    assert order.state is OrderState.HOLDING
    assert order.executed_at == order.effective_at == at(4)
    assert order.expires_at == at(4) + timedelta(hours=48)
    assert order.answered_at == at(6)
    assert order.available_balance_fen == 12_00


def test_a_stop_without_execution_time_takes_effect_when_the_answer_arrives() -> None:
    case = verified_case()
    order = issue(case, stop_cmd())
    answer(case, order, result(held=3_000_000), now=at(7))
    assert order.effective_at == at(7)
    assert order.expires_at == at(7) + timedelta(hours=48)


def test_the_stop_validity_comes_from_the_policy() -> None:
    case = verified_case()
    policy = Policy(stop_validity=timedelta(hours=24))
    order = issue(case, stop_cmd(), policy=policy)
    answer(case, order, result(held=3_000_000), now=at(7), policy=policy)
    assert order.expires_at == at(7) + timedelta(hours=24)


def test_an_account_is_stopped_at_most_twice_per_case() -> None:
    case = verified_case(tx(3_000_000), tx(1_000_000, payee=MULE_C))
    holding_stop(case)
    issue(case, stop_cmd())  # a second stop, still pending, counts
    with pytest.raises(FailedPrecondition) as err:
        issue(case, stop_cmd())
    assert err.value.reason == "STOP_LIMIT_REACHED"
    assert len(case.orders) == 2
    # Another account of the same case has its own two stops.
    issue(case, stop_cmd(MULE_C, 1_000_000, [(at(-20), 1_000_000)]))
    assert len(case.orders) == 3


def test_no_match_rejected_and_cancelled_stops_do_not_count_towards_the_limit() -> None:
    case = verified_case()
    no_match = issue(case, stop_cmd())
    answer(case, no_match, result(ExecutionStatus.NO_MATCH, code="NMAT", reason="name differs"))
    rejected = issue(case, stop_cmd())
    answer(case, rejected, result(ExecutionStatus.REJECTED, code="AC04", reason="closed"))
    cancelled = issue(case, stop_cmd())
    issue(case, ReleaseCommand(cancelled.order_id, "wrong account"))
    assert cancelled.state is OrderState.CANCELLED

    issue(case, stop_cmd())
    issue(case, stop_cmd())
    with pytest.raises(FailedPrecondition) as err:
        issue(case, stop_cmd())
    assert err.value.reason == "STOP_LIMIT_REACHED"


def test_the_stop_limit_comes_from_the_policy() -> None:
    case = verified_case()
    policy = Policy(max_stops_per_account=1)
    issue(case, stop_cmd(), policy=policy)
    with pytest.raises(FailedPrecondition) as err:
        issue(case, stop_cmd(), policy=policy)
    assert err.value.reason == "STOP_LIMIT_REACHED"


def test_executed_means_the_full_amount_is_held() -> None:
    case = verified_case()
    order = issue(case, stop_cmd())
    with pytest.raises(InvalidArgument) as err:
        answer(case, order, result(held=2_999_999))
    assert err.value.field == "amount_held_fen"
    assert order.state is OrderState.PENDING
    answer(case, order, result(held=3_000_000))
    assert (order.state, order.held_fen, order.amount_held_fen) == (
        OrderState.HOLDING,
        3_000_000,
        3_000_000,
    )
    assert case.held_fen == 3_000_000


def test_partially_executed_holds_less_than_the_amount() -> None:
    case = verified_case()
    order = issue(case, stop_cmd())
    with pytest.raises(InvalidArgument) as err:
        answer(case, order, result(ExecutionStatus.PARTIALLY_EXECUTED, held=3_000_000))
    assert err.value.field == "status"
    answer(case, order, result(ExecutionStatus.PARTIALLY_EXECUTED, held=1_200_000, code="AM04"))
    assert order.state is OrderState.HOLDING
    assert order.held_fen == 1_200_000
    assert order.result_status is ExecutionStatus.PARTIALLY_EXECUTED
    assert order.result_reason_code == "AM04"
    assert case.held_fen == 1_200_000


@pytest.mark.parametrize("status", [ExecutionStatus.EXECUTED, ExecutionStatus.PARTIALLY_EXECUTED])
def test_a_hold_above_the_order_amount_is_refused(status: ExecutionStatus) -> None:
    case = verified_case()
    order = issue(case, stop_cmd(amount=1_000_000))
    with pytest.raises(InvalidArgument) as err:
        answer(case, order, result(status, held=1_000_001))
    assert err.value.field == "amount_held_fen"
    assert order.state is OrderState.PENDING
    assert order.held_fen == 0


def test_no_match_needs_a_reason_code_and_holds_nothing() -> None:
    case = verified_case()
    order = issue(case, stop_cmd())
    with pytest.raises(InvalidArgument) as err:
        answer(case, order, result(ExecutionStatus.NO_MATCH, reason="name differs"))
    assert err.value.field == "reason_code"
    with pytest.raises(InvalidArgument) as err:
        answer(case, order, result(ExecutionStatus.NO_MATCH, code="NMAT", held=100))
    assert err.value.field == "amount_held_fen"
    assert order.state is OrderState.PENDING

    answer(case, order, result(ExecutionStatus.NO_MATCH, code="NMAT", reason="name differs"))
    assert order.state is OrderState.NO_MATCH
    assert order.held_fen == 0
    assert order.expires_at is None
    assert case.held_fen == 0
    assert "no match" in case.events[-1].summary


def test_a_rejected_answer_needs_a_reason_code() -> None:
    case = verified_case()
    order = issue(case, stop_cmd())
    with pytest.raises(InvalidArgument) as err:
        answer(case, order, result(ExecutionStatus.REJECTED, reason="closed"))
    assert err.value.field == "reason_code"
    answer(case, order, result(ExecutionStatus.REJECTED, code="AC04", reason="closed"))
    assert order.state is OrderState.REJECTED
    assert order.result_reason_code == "AC04"


@pytest.mark.parametrize("code", ["ZZ99", "nmat", "FRAUD", "AM4"])
def test_unknown_reason_codes_are_refused(code: str) -> None:
    case = verified_case()
    order = issue(case, stop_cmd())
    with pytest.raises(InvalidArgument) as err:
        answer(case, order, result(ExecutionStatus.NO_MATCH, code=code))
    assert err.value.field == "reason_code"
    assert "NMAT" in err.value.message  # the message lists the known codes
    assert order.state is OrderState.PENDING


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"available_balance_fen": -1}, "available_balance_fen"),
        ({"amount_held_fen": -1}, "amount_held_fen"),
        ({"amount_released_fen": -1}, "amount_released_fen"),
        ({"amount_returned_fen": -1}, "amount_returned_fen"),
        ({"execute_time": at(11)}, "execute_time"),
    ],
)
def test_an_invalid_answer_is_refused_naming_the_field(
    changes: dict[str, object], field: str
) -> None:
    case = verified_case()
    order = issue(case, stop_cmd())
    execution = dataclasses.replace(result(held=3_000_000), **changes)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument) as err:
        answer(case, order, execution, now=at(5))
    assert err.value.field == field
    assert order.state is OrderState.PENDING


def test_onward_transfers_are_recorded_with_the_stop() -> None:
    case = verified_case()
    order = issue(case, stop_cmd())
    transfers = (onward(at(-15), 500_000), onward(at(-10), 250_000, "6222990000000010"))
    answer(case, order, result(held=3_000_000, onward=transfers))
    assert [(t.position, t.amount_fen) for t in order.onward] == [(0, 500_000), (1, 250_000)]
    assert "2 onward transfer(s)" in case.events[-1].summary


@pytest.mark.parametrize(
    ("transfer", "field"),
    [
        (onward(at(-15), 0), "onward_transfers[0].amount_fen"),
        (onward(at(11)), "onward_transfers[0].transfer_time"),
        (onward(at(-15), account="62 22"), "onward_transfers[0].to_account.account_number"),
        (onward(at(-30)), "onward_transfers[0].transfer_time"),  # before the fraudulent credit
    ],
)
def test_an_invalid_onward_transfer_is_refused(transfer: OnwardTransfer, field: str) -> None:
    case = verified_case()
    order = issue(case, stop_cmd())
    with pytest.raises(InvalidArgument) as err:
        answer(case, order, result(held=3_000_000, onward=(transfer,)))
    assert err.value.field == field
    assert order.onward == []


def test_an_onward_transfer_after_the_earliest_credit_is_accepted_whatever_the_fact_order() -> None:
    case = verified_case(tx(1_000_000, when=at(-10)), tx(2_000_000, when=at(-60)))
    order = issue(
        case, stop_cmd(amount=3_000_000, facts=[(at(-10), 1_000_000), (at(-60), 2_000_000)])
    )
    # 40 minutes ago: after the credit of 60 minutes ago, before the one of 10 minutes ago.
    answer(case, order, result(held=3_000_000, onward=(onward(at(-40)),)))
    assert len(order.onward) == 1


def test_an_execution_time_before_the_order_was_issued_is_refused() -> None:
    case = verified_case()
    order = issue(case, stop_cmd(), now=at(60))
    with pytest.raises(InvalidArgument) as err:
        answer(case, order, result(held=3_000_000, when=at(60) - timedelta(days=3)), now=at(61))
    assert err.value.field == "execute_time"


# ---- freeze ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (freeze_cmd(filed=" "), "freeze.filed_case_number"),
        (freeze_cmd(authority=""), "freeze.approving_authority"),
        (freeze_cmd(term=3), "freeze.term_months"),
        (freeze_cmd(term=0), "freeze.term_months"),
        (freeze_cmd(term=24), "freeze.term_months"),
        (freeze_cmd(amount=0), "freeze.amount_fen"),
        (
            freeze_cmd(AccountRef("REG", "6222020000000002", "Li Si")),
            "freeze.account.institution_code",
        ),
    ],
)
def test_an_invalid_freeze_is_refused_naming_the_field(command: FreezeCommand, field: str) -> None:
    case = verified_case()
    with pytest.raises(InvalidArgument) as err:
        issue(case, command)
    assert err.value.field == field
    assert case.orders == []


@pytest.mark.parametrize("term", [6, 12])
def test_a_freeze_lasts_its_term_in_calendar_months(term: int) -> None:
    case = verified_case()
    order = issue(case, freeze_cmd(term=term))
    assert (order.filed_case_number, order.approving_authority, order.term_months) == (
        "JZ-2026-0042",
        "Chaoyang PSB",
        term,
    )
    effective = datetime(2026, 8, 31, 10, 30, tzinfo=UTC)
    answer(case, order, result(held=3_000_000, when=effective), now=effective)
    expected = {
        6: datetime(2027, 2, 28, 10, 30, tzinfo=UTC),
        12: datetime(2027, 8, 31, 10, 30, tzinfo=UTC),
    }
    assert order.state is OrderState.HOLDING
    assert order.effective_at == effective
    assert order.expires_at == expected[term]


def test_freeze_terms_come_from_the_policy() -> None:
    case = verified_case()
    policy = Policy(freeze_terms_months=(3,))
    order = issue(case, freeze_cmd(term=3), policy=policy)
    assert order.term_months == 3
    with pytest.raises(InvalidArgument):
        issue(case, freeze_cmd(term=6), policy=policy)


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        pytest.param(datetime(2026, 8, 31), 6, datetime(2027, 2, 28), id="31-aug-to-28-feb"),
        pytest.param(datetime(2027, 8, 31), 6, datetime(2028, 2, 29), id="into-leap-feb"),
        pytest.param(datetime(2028, 2, 29), 12, datetime(2029, 2, 28), id="from-leap-day"),
        pytest.param(datetime(2028, 2, 29), 6, datetime(2028, 8, 29), id="leap-day-6"),
        pytest.param(datetime(2099, 8, 31), 6, datetime(2100, 2, 28), id="2100-not-leap"),
        pytest.param(datetime(1999, 8, 31), 6, datetime(2000, 2, 29), id="2000-leap"),
        pytest.param(datetime(2026, 3, 31), 6, datetime(2026, 9, 30), id="31-to-30"),
        pytest.param(datetime(2026, 12, 31), 12, datetime(2027, 12, 31), id="dec-12"),
        pytest.param(datetime(2026, 7, 1), 6, datetime(2027, 1, 1), id="year-boundary"),
        pytest.param(datetime(2026, 6, 15), 6, datetime(2026, 12, 15), id="to-december"),
        pytest.param(datetime(2026, 1, 31), 1, datetime(2026, 2, 28), id="one-month"),
        pytest.param(datetime(2026, 5, 17), 0, datetime(2026, 5, 17), id="zero"),
        pytest.param(datetime(2026, 5, 17), 30, datetime(2028, 11, 17), id="several-years"),
    ],
)
def test_add_months_clamps_to_the_last_day_of_the_month(
    start: datetime, months: int, expected: datetime
) -> None:
    assert add_months(start, months) == expected


def test_add_months_keeps_the_time_of_day_and_zone() -> None:
    cst = timezone(timedelta(hours=8))
    start = datetime(2026, 8, 31, 23, 59, 58, 123456, tzinfo=cst)
    end = add_months(start, 6)
    assert end == datetime(2027, 2, 28, 23, 59, 58, 123456, tzinfo=cst)
    assert end.tzinfo is cst


def test_a_freeze_taking_over_a_holding_stop_converts_it() -> None:
    case = verified_case()
    stop = holding_stop(case)
    freeze = issue(case, freeze_cmd(stop_order_id=stop.order_id, amount=3_000_000))
    assert freeze.target_order_id == stop.order_id
    assert stop.state is OrderState.HOLDING  # until the freeze is answered
    answer(case, freeze, result(held=3_000_000), now=at(30))
    assert stop.state is OrderState.CONVERTED
    assert stop.held_fen == 0
    assert stop.amount_held_fen == 3_000_000  # the answer as given stays on record
    assert freeze.state is OrderState.HOLDING
    assert case.held_fen == 3_000_000  # counted once


def test_a_freeze_that_found_no_match_leaves_the_stop_holding() -> None:
    case = verified_case()
    stop = holding_stop(case)
    freeze = issue(case, freeze_cmd(stop_order_id=stop.order_id))
    answer(case, freeze, result(ExecutionStatus.NO_MATCH, code="NMAT"))
    assert stop.state is OrderState.HOLDING
    assert stop.held_fen == 3_000_000


def test_a_freeze_takes_over_only_a_holding_stop_on_the_same_account() -> None:
    case = verified_case(tx(3_000_000), tx(1_000_000, payee=MULE_C))
    pending = issue(case, stop_cmd())
    with pytest.raises(FailedPrecondition) as err:
        issue(case, freeze_cmd(stop_order_id=pending.order_id))
    assert err.value.reason == "STOP_NOT_HOLDING"
    answer(case, pending, result(held=3_000_000))

    with pytest.raises(InvalidArgument) as err2:
        issue(case, freeze_cmd(MULE_C, 1_000_000, stop_order_id=pending.order_id))
    assert err2.value.field == "freeze.stop_order_id"

    other_freeze = issue(case, freeze_cmd(MULE_C, 1_000_000))
    with pytest.raises(InvalidArgument) as err3:
        issue(case, freeze_cmd(MULE_C, 1_000_000, stop_order_id=other_freeze.order_id))
    assert err3.value.field == "freeze.stop_order_id"

    with pytest.raises(NotFound) as err4:
        issue(case, freeze_cmd(stop_order_id="C1-O999"))
    assert err4.value.reason == "ORDER_NOT_FOUND"
    assert len(case.orders) == 2


# ---- release --------------------------------------------------------------------------------


def test_releasing_a_pending_order_cancels_it_and_a_late_answer_is_refused() -> None:
    case = verified_case()
    stop = issue(case, stop_cmd())
    release = issue(case, ReleaseCommand(stop.order_id, "wrong account"), now=at(3))
    assert stop.state is OrderState.CANCELLED
    cancelled = [e for e in case.events if e.kind == "order.cancelled"]
    assert [(e.order_id, e.actor, e.at) for e in cancelled] == [(stop.order_id, "AFC", at(3))]
    assert release.kind is OrderKind.RELEASE
    assert release.addressed_to == "BANKB"
    assert release.amount_fen == 0
    assert release.note == "wrong account"

    # answer an order that was released
    with pytest.raises(FailedPrecondition) as err:
        answer(case, stop, result(held=3_000_000))
    assert err.value.reason == "ORDER_NOT_PENDING"
    assert "withdrawn" in err.value.message
    assert stop.held_fen == 0

    with pytest.raises(InvalidArgument) as err2:
        answer(case, release, result(released=3_000_000))
    assert err2.value.field == "amount_released_fen"
    answer(case, release, result(released=0))
    assert release.state is OrderState.COMPLETED
    assert stop.state is OrderState.CANCELLED


def test_releasing_a_holding_order_must_release_exactly_the_held_amount() -> None:
    case = verified_case()
    stop = holding_stop(case, held=1_200_000)
    release = issue(case, ReleaseCommand(stop.order_id, "funds unrelated"), now=at(10))
    assert release.amount_fen == 1_200_000
    assert stop.state is OrderState.HOLDING  # until the bank answers
    for wrong in (1_199_999, 1_200_001, 0):
        with pytest.raises(InvalidArgument) as err:
            answer(case, release, result(released=wrong))
        assert err.value.field == "amount_released_fen"
    assert stop.held_fen == 1_200_000

    answer(case, release, result(released=1_200_000), now=at(11))
    assert release.state is OrderState.COMPLETED
    assert release.released_fen == 1_200_000
    assert stop.state is OrderState.RELEASED
    assert stop.held_fen == 0
    assert (case.held_fen, case.released_fen) == (0, 1_200_000)


def test_one_release_at_a_time_and_only_of_a_stop_or_freeze_that_holds() -> None:
    case = verified_case()
    stop = holding_stop(case)
    release = issue(case, ReleaseCommand(stop.order_id, ""))
    with pytest.raises(FailedPrecondition) as err:
        issue(case, ReleaseCommand(stop.order_id, ""))
    assert err.value.reason == "RELEASE_PENDING"
    with pytest.raises(InvalidArgument) as err2:
        issue(case, ReleaseCommand(release.order_id, ""))
    assert err2.value.field == "release.target_order_id"
    with pytest.raises(InvalidArgument) as err3:
        issue(case, ReleaseCommand("", ""))
    assert err3.value.field == "release.target_order_id"
    with pytest.raises(NotFound):
        issue(case, ReleaseCommand("C1-O404", ""))

    answer(case, release, result(released=3_000_000))
    with pytest.raises(FailedPrecondition) as err4:
        issue(case, ReleaseCommand(stop.order_id, ""))
    assert err4.value.reason == "NOTHING_TO_RELEASE"


def test_a_release_is_answered_neither_with_no_match_nor_onward_transfers() -> None:
    case = verified_case()
    stop = holding_stop(case)
    release = issue(case, ReleaseCommand(stop.order_id, ""))
    with pytest.raises(InvalidArgument) as err:
        answer(case, release, result(ExecutionStatus.NO_MATCH, code="NMAT"))
    assert err.value.field == "status"
    with pytest.raises(InvalidArgument) as err2:
        answer(case, release, result(released=3_000_000, onward=(onward(at(-10)),)))
    assert err2.value.field == "onward_transfers"
    assert release.state is OrderState.PENDING


# ---- fund return ----------------------------------------------------------------------------


def test_money_is_returned_only_from_a_holding_freeze() -> None:
    case = verified_case()
    stop = holding_stop(case)
    with pytest.raises(InvalidArgument) as err:
        issue(case, ReturnCommand(stop.order_id, VICTIM, 1_000_000))
    assert err.value.field == "fund_return.freeze_order_id"
    pending_freeze = issue(case, freeze_cmd(stop_order_id=stop.order_id))
    with pytest.raises(FailedPrecondition) as err2:
        issue(case, ReturnCommand(pending_freeze.order_id, VICTIM, 1_000_000))
    assert err2.value.reason == "FREEZE_NOT_HOLDING"
    with pytest.raises(InvalidArgument) as err3:
        issue(case, ReturnCommand("", VICTIM, 1_000_000))
    assert err3.value.field == "fund_return.freeze_order_id"
    assert len(case.orders) == 2


def test_returns_are_bounded_by_the_hold_minus_pending_returns() -> None:
    case = verified_case()
    freeze = holding_freeze(case, 1_000_000)
    first = issue(case, ReturnCommand(freeze.order_id, VICTIM, 600_000))
    assert (first.addressed_to, first.account, first.target_order_id) == (
        "BANKB",
        VICTIM,
        freeze.order_id,
    )
    with pytest.raises(InvalidArgument) as err:
        issue(case, ReturnCommand(freeze.order_id, VICTIM, 400_001))
    assert err.value.field == "fund_return.amount_fen"
    second = issue(case, ReturnCommand(freeze.order_id, VICTIM, 400_000))
    assert second.amount_fen == 400_000
    with pytest.raises(InvalidArgument):
        issue(case, ReturnCommand(freeze.order_id, VICTIM, 1))


@pytest.mark.parametrize(
    ("beneficiary", "field", "reason"),
    [
        (
            AccountRef("NOBANK", "6222010000000001", "Zhang San"),
            "fund_return.beneficiary.institution_code",
            "UNKNOWN_INSTITUTION",
        ),
        (
            AccountRef("BANKA", "6222010000000001", ""),
            "fund_return.beneficiary.holder_name",
            "INVALID_FIELD",
        ),
    ],
)
def test_a_return_names_a_valid_beneficiary(
    beneficiary: AccountRef, field: str, reason: str
) -> None:
    case = verified_case()
    freeze = holding_freeze(case)
    with pytest.raises(InvalidArgument) as err:
        issue(case, ReturnCommand(freeze.order_id, beneficiary, 100))
    assert (err.value.field, err.value.reason) == (field, reason)


def test_return_answers_reduce_the_hold_and_the_last_one_marks_the_freeze_returned() -> None:
    case = verified_case()
    freeze = holding_freeze(case, 1_000_000)
    first = issue(case, ReturnCommand(freeze.order_id, VICTIM, 600_000))
    second = issue(case, ReturnCommand(freeze.order_id, VICTIM, 400_000))

    answer(case, first, result(returned=600_000))
    assert first.state is OrderState.COMPLETED
    assert (freeze.state, freeze.held_fen, freeze.returned_fen) == (
        OrderState.HOLDING,
        400_000,
        600_000,
    )
    assert (case.held_fen, case.returned_fen) == (400_000, 600_000)
    assert case.state is CaseState.VERIFIED
    assert not case.close_if_settled(at(6))  # a return is pending

    answer(case, second, result(returned=400_000))
    assert (freeze.state, freeze.held_fen, freeze.returned_fen) == (
        OrderState.RETURNED,
        0,
        1_000_000,
    )
    assert (case.held_fen, case.returned_fen) == (0, 1_000_000)


def test_a_return_answer_is_bounded_by_the_order_and_the_hold() -> None:
    case = verified_case()
    freeze = holding_freeze(case, 1_000_000)
    order = issue(case, ReturnCommand(freeze.order_id, VICTIM, 600_000))
    for wrong_status, returned in (
        (ExecutionStatus.EXECUTED, 600_001),
        (ExecutionStatus.EXECUTED, 599_999),
        (ExecutionStatus.PARTIALLY_EXECUTED, 600_001),
    ):
        with pytest.raises(InvalidArgument) as err:
            answer(case, order, result(wrong_status, returned=returned))
        assert err.value.field == "amount_returned_fen"
    assert freeze.held_fen == 1_000_000

    answer(case, order, result(ExecutionStatus.PARTIALLY_EXECUTED, returned=250_000, code="AM04"))
    assert order.returned_fen == 250_000
    assert (freeze.held_fen, freeze.state) == (750_000, OrderState.HOLDING)


def test_a_return_answered_after_its_freeze_was_released_does_not_mark_it_returned() -> None:
    case = verified_case()
    freeze = holding_freeze(case, 1_000_000)
    ret = issue(case, ReturnCommand(freeze.order_id, VICTIM, 400_000))
    # A freeze with a return in flight cannot be released under it.
    with pytest.raises(FailedPrecondition) as err:
        issue(case, ReleaseCommand(freeze.order_id, "case dropped"))
    assert err.value.reason == "RETURN_PENDING"
    answer(case, ret, result(ExecutionStatus.PARTIALLY_EXECUTED, returned=0, code="AM04"))
    release = issue(case, ReleaseCommand(freeze.order_id, "case dropped"))
    answer(case, release, result(released=1_000_000))
    assert freeze.state is OrderState.RELEASED
    assert freeze.returned_fen == 0


# ---- answers --------------------------------------------------------------------------------


def test_only_the_addressed_institution_answers() -> None:
    case = verified_case()
    order = issue(case, stop_cmd())
    with pytest.raises(PermissionDenied) as err:
        answer(case, order, result(held=3_000_000), actor="BANKC")
    assert err.value.reason == "NOT_ADDRESSEE"
    assert order.state is OrderState.PENDING
    assert order.answered_at is None


def test_an_order_is_answered_once() -> None:
    case = verified_case()
    order = issue(case, stop_cmd())
    answer(case, order, result(held=3_000_000), now=at(5))
    events = len(case.events)
    with pytest.raises(FailedPrecondition) as err:
        answer(case, order, result(ExecutionStatus.NO_MATCH, code="NMAT"), now=at(6))
    assert err.value.reason == "ORDER_NOT_PENDING"
    assert "already answered" in err.value.message
    assert (order.state, order.answered_at) == (OrderState.HOLDING, at(5))
    assert len(case.events) == events


def test_an_answer_to_an_unknown_order_is_not_found() -> None:
    case = verified_case()
    with pytest.raises(NotFound) as err:
        case.answer("C1-O042", "BANKB", result(), now=at(5), message_id="m", policy=POLICY)
    assert err.value.reason == "ORDER_NOT_FOUND"


# ---- closing and totals ---------------------------------------------------------------------


def test_the_case_closes_when_every_held_fen_is_returned_or_released() -> None:
    case = verified_case(tx(3_000_000), tx(1_000_000, payee=MULE_C))
    stop_b = holding_stop(case)
    stop_c = issue(case, stop_cmd(MULE_C, 1_000_000, [(at(-20), 1_000_000)]))
    answer(case, stop_c, result(held=1_000_000))
    freeze = issue(case, freeze_cmd(stop_order_id=stop_b.order_id), now=at(20))
    answer(case, freeze, result(held=3_000_000), now=at(21))
    release = issue(case, ReleaseCommand(stop_c.order_id, "unrelated"), now=at(22))
    answer(case, release, result(released=1_000_000), now=at(23))
    assert not case.close_if_settled(at(23))  # the freeze still holds
    assert case.state is CaseState.VERIFIED

    ret = issue(case, ReturnCommand(freeze.order_id, VICTIM, 3_000_000), now=at(30))
    assert not case.close_if_settled(at(30))  # the return is pending
    answer(case, ret, result(returned=3_000_000), now=at(31))
    assert case.close_if_settled(at(31))
    assert case.state is CaseState.CLOSED
    assert case.closed_at == at(31)
    assert (case.loss_fen, case.held_fen, case.returned_fen, case.released_fen) == (
        4_000_000,
        0,
        3_000_000,
        1_000_000,
    )
    closed = case.events[-1]
    assert (closed.kind, closed.actor, closed.at) == ("case.closed", HUB_CODE, at(31))
    assert "¥30,000.00 returned" in closed.summary
    assert "¥10,000.00 released" in closed.summary
    assert not case.close_if_settled(at(32))  # once
    assert [e.kind for e in case.events].count("case.closed") == 1


def test_a_hold_that_found_nothing_lapses_when_its_case_closes() -> None:
    # The money stopped at BANKB; at MULE_C's bank the stop found an empty account. Once
    # BANKB's money went back to the victim nothing is left to investigate or renew: the
    # empty stop lapses with the case, its holder told to lift it, not 48 hours later.
    case = verified_case(tx(3_000_000), tx(1_000_000, payee=MULE_C))
    stop_b = holding_stop(case)
    empty = issue(case, stop_cmd(MULE_C, 1_000_000, [(at(-20), 1_000_000)]))
    answer(case, empty, result(ExecutionStatus.PARTIALLY_EXECUTED, held=0, code="AM04"))
    assert empty.state is OrderState.HOLDING
    freeze = issue(case, freeze_cmd(stop_order_id=stop_b.order_id), now=at(20))
    answer(case, freeze, result(held=3_000_000), now=at(21))
    assert not case.close_if_settled(at(21))  # the freeze holds ¥30,000
    assert empty.state is OrderState.HOLDING  # an open case keeps its empty stop

    ret = issue(case, ReturnCommand(freeze.order_id, VICTIM, 3_000_000), now=at(30))
    answer(case, ret, result(returned=3_000_000), now=at(31))
    closure = case.close_if_settled(at(31))
    assert closure is not None and [o for o, _ in closure.lapsed] == [empty]
    assert closure.closed is case.events[-2] and closure.lapsed[0][1] is case.events[-1]
    assert case.state is CaseState.CLOSED
    assert (empty.state, empty.held_fen, empty.expires_at) == (OrderState.EXPIRED, 0, at(31))
    assert [(e.kind, e.order_id) for e in case.events[-2:]] == [
        ("case.closed", ""),
        ("order.expired", empty.order_id),
    ]
    assert "its case closed with nothing held" in case.events[-1].summary
    assert "BANKC must release the hold" in case.events[-1].summary
    # The settled orders are left as they were.
    assert (freeze.state, ret.state) == (OrderState.RETURNED, OrderState.COMPLETED)


def test_a_case_that_closes_with_no_empty_hold_lapses_nothing() -> None:
    case = verified_case()
    stop = holding_stop(case)
    release = issue(case, ReleaseCommand(stop.order_id, "unrelated"), now=at(10))
    answer(case, release, result(released=3_000_000), now=at(11))
    closure = case.close_if_settled(at(11))
    assert closure is not None and closure.lapsed == []
    assert case.events[-1].kind == "case.closed"


def test_a_pending_order_keeps_the_case_open() -> None:
    case = verified_case(tx(3_000_000), tx(1_000_000, payee=MULE_C))
    stop = holding_stop(case)
    issue(case, stop_cmd(MULE_C, 1_000_000, [(at(-20), 1_000_000)]))
    release = issue(case, ReleaseCommand(stop.order_id, ""))
    answer(case, release, result(released=3_000_000))
    assert case.held_fen == 0
    assert not case.close_if_settled(at(10))
    assert case.state is CaseState.VERIFIED


def test_a_case_with_only_no_match_answers_stays_open() -> None:
    case = verified_case()
    order = issue(case, stop_cmd())
    answer(case, order, result(ExecutionStatus.NO_MATCH, code="NMAT"))
    assert not case.close_if_settled(at(10))
    assert case.state is CaseState.VERIFIED
    assert case.closed_at is None


def test_a_holding_stop_keeps_the_case_open() -> None:
    case = verified_case()
    holding_stop(case)
    assert not case.close_if_settled(at(10))


def test_only_a_verified_case_closes() -> None:
    case = open_case()
    assert not case.close_if_settled(at(10))
    assert case.state is CaseState.REPORTED


def test_every_transition_appends_an_event_with_increasing_sequence_actor_and_time() -> None:
    case = open_case(now=at(0))
    case.verify("BANKA", VerificationOutcome.CONFIRMED, "", now=at(1), message_id="v")
    stop = issue(case, stop_cmd(), now=at(2))
    case.answer(
        stop.order_id, "BANKB", result(held=3_000_000), now=at(3), message_id="a1", policy=POLICY
    )
    release = issue(case, ReleaseCommand(stop.order_id, ""), now=at(4))
    case.answer(
        release.order_id,
        "BANKB",
        result(released=3_000_000),
        now=at(5),
        message_id="a2",
        policy=POLICY,
    )
    case.close_if_settled(at(5))

    assert [(e.kind, e.actor, e.at) for e in case.events] == [
        ("report.received", "BANKA", at(0)),
        ("report.verified", "BANKA", at(1)),
        ("order.issued", "AFC", at(2)),
        ("order.answered", "BANKB", at(3)),
        ("order.issued", "AFC", at(4)),
        ("order.answered", "BANKB", at(5)),
        ("case.closed", HUB_CODE, at(5)),
    ]
    assert [e.sequence for e in case.events] == list(range(1, 8))
    assert [e.message_id for e in case.events][:4] == ["m-report", "v", "m-issue-1", "a1"]
    assert [e.order_id for e in case.events][2:6] == [
        stop.order_id,
        stop.order_id,
        release.order_id,
        release.order_id,
    ]


def test_a_refused_transition_appends_no_event() -> None:
    case = verified_case()
    before = len(case.events)
    failures: list[Callable[[], object]] = [
        lambda: issue(case, stop_cmd(amount=-1)),
        lambda: case.verify("BANKA", VerificationOutcome.CONFIRMED, "", now=at(2), message_id="x"),
        lambda: issue(case, ReleaseCommand("nope", "")),
    ]
    for fail in failures:
        with pytest.raises(DomainError):
            fail()
    assert len(case.events) == before


# ---- the standing auto-stop rule ------------------------------------------------------------


def rule(enabled: bool = True, limit: int = 5_000_000) -> AutoStopRule:
    return AutoStopRule.validated(
        "AFC", "R-AUTO-1", enabled, limit, now=T0, message_id="m-rule", envelope=b"signed"
    )


def test_the_rule_stops_each_payee_account_for_the_loss_that_entered_it() -> None:
    case = verified_case(
        tx(1_000_000, when=at(-30)),
        tx(2_000_000, payee=MULE_C, when=at(-25)),
        tx(1_500_000, when=at(-20)),
    )
    stops, skipped = rule(limit=3_000_000).stops_for(case)
    assert skipped == []
    assert [(s.account, s.amount_fen) for s in stops] == [(MULE_B, 2_500_000), (MULE_C, 2_000_000)]
    assert list(stops[0].transactions) == [(at(-30), 1_000_000), (at(-20), 1_500_000)]
    assert list(stops[1].transactions) == [(at(-25), 2_000_000)]
    # Each command is a valid stop for the case.
    for command in stops:
        issue(case, command, rule="R-AUTO-1")
    assert [o.amount_fen for o in case.orders] == [2_500_000, 2_000_000]


def test_the_rule_leaves_accounts_above_its_limit_to_the_centre() -> None:
    case = verified_case(tx(1_000_000), tx(3_000_001, payee=MULE_C))
    stops, skipped = rule(limit=3_000_000).stops_for(case)
    assert [s.account for s in stops] == [MULE_B]
    assert len(skipped) == 1
    assert "BANKC" in skipped[0]
    assert "0003" in skipped[0]
    assert MULE_C.account_number not in skipped[0]  # masked


def test_the_rule_limit_is_inclusive() -> None:
    case = verified_case(tx(3_000_000))
    stops, skipped = rule(limit=3_000_000).stops_for(case)
    assert len(stops) == 1
    assert skipped == []


def test_a_disabled_rule_stops_nothing() -> None:
    case = verified_case()
    assert rule(enabled=False).stops_for(case) == ([], [])


def test_a_rule_is_named_and_an_enabled_rule_has_a_limit() -> None:
    with pytest.raises(InvalidArgument) as err:
        AutoStopRule.validated("AFC", " ", True, 100, now=T0, message_id="m", envelope=b"")
    assert err.value.field == "rule_id"
    with pytest.raises(InvalidArgument) as err2:
        AutoStopRule.validated("AFC", "R", True, 0, now=T0, message_id="m", envelope=b"")
    assert err2.value.field == "max_amount_fen"
    disabled = AutoStopRule.validated("AFC", "R", False, 0, now=T0, message_id="m", envelope=b"e")
    assert (disabled.enabled, disabled.envelope, disabled.updated_at) == (False, b"e", T0)


# ---- institutions ---------------------------------------------------------------------------


def contacts() -> list[DutyContact]:
    return [
        DutyContact(ContactRole.PRIMARY, "Chen A", "13900000001", "a@banka.example"),
        DutyContact(ContactRole.BACKUP, "Chen B", "13900000002"),
    ]


def test_an_institution_registers_with_a_primary_and_a_backup_contact() -> None:
    inst = Institution.register("BANKA", "Bank A", InstitutionKind.BANK, T0, contacts())
    assert (inst.code, inst.kind, inst.created_at) == ("BANKA", InstitutionKind.BANK, T0)
    assert [(c.role, c.position) for c in inst.contacts] == [
        (ContactRole.PRIMARY, 0),
        (ContactRole.BACKUP, 1),
    ]
    assert inst.keys == []


@pytest.mark.parametrize("missing", [ContactRole.PRIMARY, ContactRole.BACKUP])
def test_an_institution_without_both_duty_contacts_is_refused(missing: ContactRole) -> None:
    only = [c for c in contacts() if c.role is not missing]
    with pytest.raises(InvalidArgument) as err:
        Institution.register("BANKA", "Bank A", InstitutionKind.BANK, T0, only)
    assert err.value.field == "duty_contacts"


def test_a_duty_contact_needs_a_name_and_a_phone() -> None:
    bad = contacts()
    bad[1].phone = " "
    with pytest.raises(InvalidArgument) as err:
        Institution.register("BANKA", "Bank A", InstitutionKind.BANK, T0, bad)
    assert err.value.field == "duty_contacts[1]"


def test_the_hub_needs_no_duty_contacts() -> None:
    inst = Institution.register(HUB_CODE, "StopHub", InstitutionKind.HUB, T0, [])
    assert inst.contacts == []


@pytest.mark.parametrize(
    "code", ["", "A", "banka", "BANK A", "-BANK", "_BANK", "BANK.A", "B" * 33, "银行"]
)
def test_an_institution_code_is_2_to_32_capitals_digits_dash_or_underscore(code: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        Institution.register(code, "Bank", InstitutionKind.BANK, T0, contacts())
    assert err.value.field == "code"


@pytest.mark.parametrize("code", ["AB", "B" * 32, "BANK_A-1", "9BANK"])
def test_valid_institution_codes(code: str) -> None:
    assert Institution.register(code, "Bank", InstitutionKind.BANK, T0, contacts()).code == code


def test_an_institution_needs_a_display_name() -> None:
    with pytest.raises(InvalidArgument) as err:
        Institution.register("BANKA", "  ", InstitutionKind.BANK, T0, contacts())
    assert err.value.field == "display_name"


def test_keys_are_added_once_and_revoked_once() -> None:
    inst = Institution.register("BANKA", "Bank A", InstitutionKind.BANK, T0, contacts())
    inst.add_key("k1", "ed25519", b"\x01" * 32, T0)
    inst.add_key("k2", "ed25519", b"\x02" * 32, at(1))
    with pytest.raises(FailedPrecondition) as err:
        inst.add_key("k1", "ed25519", b"\x03" * 32, at(2))
    assert err.value.reason == "KEY_EXISTS"
    assert [k.key_id for k in inst.active_keys()] == ["k1", "k2"]
    key = inst.key("k2")
    assert key is not None
    assert (key.public_key, key.created_at, key.state) == (b"\x02" * 32, at(1), KeyState.ACTIVE)

    inst.revoke_key("k1", at(3))
    k1 = inst.key("k1")
    assert k1 is not None
    assert (k1.state, k1.revoked_at) == (KeyState.REVOKED, at(3))
    assert [k.key_id for k in inst.active_keys()] == ["k2"]
    with pytest.raises(FailedPrecondition) as err2:
        inst.revoke_key("k1", at(4))
    assert err2.value.reason == "KEY_REVOKED"
    assert k1.revoked_at == at(3)
    with pytest.raises(NotFound) as err3:
        inst.revoke_key("k9", at(4))
    assert err3.value.reason == "KEY_NOT_FOUND"
    assert inst.key("k9") is None


@pytest.mark.parametrize(
    ("kind", "keeps"),
    [
        (InstitutionKind.BANK, True),
        (InstitutionKind.PAYMENT_INSTITUTION, True),
        (InstitutionKind.ANTI_FRAUD_CENTRE, False),
        (InstitutionKind.REGULATOR, False),
        (InstitutionKind.HUB, False),
    ],
)
def test_only_banks_and_payment_institutions_keep_accounts(
    kind: InstitutionKind, keeps: bool
) -> None:
    assert kind.keeps_accounts is keeps


def test_redact_masks_every_name_longest_first_and_leaves_single_characters() -> None:
    from hub.domain.wording import mask_name, redact

    text = "hold ¥1.00 in ****0002 (Li Si) at BANKB; Li Si Trading paid; 张三 reported; 李 too"
    out = redact(text, {"Li Si", "Li Si Trading", "张三", "李", ""})
    assert "Li Si" not in out and "张三" not in out
    assert mask_name("Li Si Trading") in out and "(L****)" in out and "张*" in out
    assert "李 too" in out  # one character: left alone
