"""Warnings' machinery that more than one command uses: raising a warning (SendWarning, and any
command that warns a member in one step, such as a lead's triage), its clocks, its wire form
and its notices.

A warning's clocks are rows of the clock table whose case id is the warning's id
(hub/store/tables.py): the sweep fires their steps, ListClocks lists them and
AcknowledgeBreach acknowledges them as any clock's. The policy names them by their triggers
(hub/domain/warnings.py): the contact clock of the warning's grade starts on
"warning.sent.<grade>", the outcome clock on "warning.sent"; "warning.acknowledged" and
"warning.outcome" stop them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from hub.domain.cases import ACCOUNT_PATTERN, AccountRef, validate_account
from hub.domain.clocks import CaseClock, ClockChanges, ClockState, SlaEntry, next_step, stop
from hub.domain.errors import InvalidArgument
from hub.domain.institutions import InstitutionKind
from hub.domain.warnings import SENT, Grade, Outcome, Warning, WarningState
from hub.domain.wording import mask, yuan
from hub.service import wire
from hub.service.clocks import new_clock_id, write_log
from hub.service.pipeline import Context
from stophub.v1 import case_pb2, delivery_pb2, grade_pb2, warning_pb2

GRADES_PB = {
    Grade.UNGRADED: grade_pb2.GRADE_UNSPECIFIED,
    Grade.GREEN: grade_pb2.GRADE_GREEN,
    Grade.YELLOW: grade_pb2.GRADE_YELLOW,
    Grade.RED: grade_pb2.GRADE_RED,
}
GRADES_BY_NUMBER: dict[int, Grade] = {int(number): grade for grade, number in GRADES_PB.items()}
STATES_PB = {
    WarningState.SENT: warning_pb2.WARNING_STATE_SENT,
    WarningState.ACKNOWLEDGED: warning_pb2.WARNING_STATE_ACKNOWLEDGED,
    WarningState.CLOSED: warning_pb2.WARNING_STATE_CLOSED,
}
STATES_BY_NUMBER: dict[int, WarningState] = {int(n): state for state, n in STATES_PB.items()}
OUTCOMES_PB = {
    Outcome.REACHED_DISSUADED: warning_pb2.WARNING_OUTCOME_REACHED_DISSUADED,
    Outcome.REACHED_NOT_DISSUADED: warning_pb2.WARNING_OUTCOME_REACHED_NOT_DISSUADED,
    Outcome.NOT_REACHED: warning_pb2.WARNING_OUTCOME_NOT_REACHED,
    Outcome.ALREADY_LOST: warning_pb2.WARNING_OUTCOME_ALREADY_LOST,
}
OUTCOMES_BY_NUMBER: dict[int, Outcome] = {int(n): o for o, n in OUTCOMES_PB.items()}


def new_warning_id(now: datetime) -> str:
    return f"W{now:%Y%m%d}-{secrets.token_hex(4).upper()}"


def is_warning_id(text: str) -> bool:
    """Warning ids start with W, case ids with C: a clock's case id says which it runs on."""
    return text.startswith("W")


def grade_of(number: int, field: str = "grade") -> Grade:
    grade = GRADES_BY_NUMBER.get(number)
    if grade is None:
        raise InvalidArgument(field, f"unknown grade {number}: GREEN, YELLOW, RED or unspecified")
    return grade


@dataclass(frozen=True)
class WarningFacts:
    """What a warning says, whoever raises it (docs/warnings.md, SendWarningBody).

    `fraud_type` is the lower-case name of a stophub.v1.FraudType without its prefix
    ("fake_investment"), or "" when unknown; `counterparty` may be None."""

    account: AccountRef
    fraud_type: str
    counterparty: AccountRef | None
    amount_at_risk_fen: int
    grade: Grade
    text: str


def facts_from_proto(body: warning_pb2.SendWarningBody) -> WarningFacts:
    if body.fraud_type not in _FRAUD_NUMBERS:
        raise InvalidArgument("fraud_type", f"unknown fraud type {body.fraud_type}")
    fraud_type = ""
    if body.fraud_type:
        fraud_type = case_pb2.FraudType.Name(body.fraud_type).removeprefix("FRAUD_TYPE_").lower()
    counterparty = None
    if body.HasField("counterparty"):
        counterparty = wire.account_from_proto(body.counterparty)
    return WarningFacts(
        account=wire.account_from_proto(body.account),
        fraud_type=fraud_type,
        counterparty=counterparty,
        amount_at_risk_fen=body.amount_at_risk_fen,
        grade=grade_of(body.grade),
        text=body.text,
    )


_FRAUD_NUMBERS = frozenset(v.number for v in case_pb2.FraudType.DESCRIPTOR.values)


def _addressee(ctx: Context, sender: str, facts: WarningFacts, centre: str) -> str:
    """The centre warns the member that keeps the account; a member warns a centre."""
    kind = ctx.kinds.get(sender)
    if kind is InstitutionKind.ANTI_FRAUD_CENTRE:
        if centre:
            raise InvalidArgument(
                "centre", "is for a member's warning to the centre; leave it empty"
            )
        return facts.account.institution_code
    centres = ctx.centres()
    if centre:
        if centre not in centres:
            raise InvalidArgument(
                "centre", f"{centre!r} is not an anti-fraud centre of the registry"
            )
        return centre
    if len(centres) != 1:
        raise InvalidArgument(
            "centre",
            f"name the centre to warn: the registry has {len(centres)} "
            f"({', '.join(centres) or 'none'})",
        )
    return centres[0]


def raise_warning(
    ctx: Context,
    facts: WarningFacts,
    *,
    sender: str | None = None,
    centre: str = "",
    lead_id: str = "",
) -> Warning:
    """Record a warning in the command's transaction, start its clocks and deliver it to its
    addressee, with the command's signed envelope as the notice's origin.

    SendWarning calls it with its body's facts; another command (a lead's triage: "warn
    another member") calls it with the facts it holds, as the centre (`sender` defaults to the
    command's sender), and names the lead in `lead_id`. Refusals are the same as
    SendWarning's (docs/warnings.md): the account must be at a bank or payment institution of
    the registry, the amount at risk above zero."""
    sender = sender or ctx.sender.code
    validate_account("account", facts.account, ctx.kinds, need_holder=False)
    other = facts.counterparty
    if (
        other is not None
        and other.account_number
        and not ACCOUNT_PATTERN.match(other.account_number)
    ):
        raise InvalidArgument(
            "counterparty.account_number", "must be 4-40 letters, digits or '-' (no spaces)"
        )
    addressee = _addressee(ctx, sender, facts, centre)
    if addressee == sender:
        raise InvalidArgument(
            "account.institution_code", f"{sender} cannot warn itself of its own account"
        )
    warning = Warning.send(
        new_warning_id(ctx.now),
        sender,
        addressee,
        account=(
            facts.account.institution_code,
            facts.account.account_number,
            facts.account.holder_name,
        ),
        fraud_type=facts.fraud_type,
        counterparty=(
            (other.institution_code, other.account_number, other.holder_name)
            if other is not None
            else ("", "", "")
        ),
        amount_at_risk_fen=facts.amount_at_risk_fen,
        grade=facts.grade,
        text=facts.text,
        now=ctx.now,
        message_id=ctx.message_id,
    )
    warning.lead_id = lead_id
    ctx.accept(ctx.command, warning.warning_id)
    ctx.uow.warnings.add(warning)
    start_clocks(ctx, warning, [warning.grade.trigger, SENT], warning.sent_at)
    tell(
        ctx,
        [warning.addressee],
        warning,
        f"{warning.grade.value.upper()} warning {warning.warning_id} from {sender}: customer "
        f"of {mask(warning.account_number)} at risk of {yuan(warning.amount_at_risk_fen)}",
    )
    return warning


# ---- clocks ---------------------------------------------------------------------------------


def start_clocks(ctx: Context, warning: Warning, triggers: list[str], at: datetime) -> None:
    """Start the policy's clocks that `triggers` start, on the warning, from `at`; set the
    warning's contact and outcome deadlines from them."""
    log: list[SlaEntry] = []
    for trigger in triggers:
        for cp in ctx.hub.clock_policy.clocks:
            if cp.starts != trigger:
                continue
            deadline = cp.window.deadline(at, ctx.hub.calendar, None)
            clock = CaseClock(
                clock_id=new_clock_id(),
                case_id=warning.warning_id,
                kind=cp.name,
                responsible=warning.addressee,
                started_at=at,
                deadline_at=deadline,
                deadline_estimated=bool(cp.window.estimated_years(at, deadline, ctx.hub.calendar)),
            )
            clock.next_step, clock.next_step_at = next_step(cp, clock)
            ctx.uow.clocks.add(clock)
            if trigger == SENT:
                warning.outcome_by = deadline
            else:
                warning.contact_by = deadline
            log.append(
                SlaEntry(
                    clock.clock_id,
                    warning.warning_id,
                    "",
                    cp.name,
                    "started",
                    at,
                    deadline,
                    clock.responsible,
                    detail=f"{cp.window} to addressee, warning {warning.warning_id}",
                )
            )
    write_log(ctx.uow, log, ctx.now)


def stop_clocks(ctx: Context, warning: Warning, trigger: str) -> None:
    """Stop the warning's open clocks that `trigger` stops (met, or missed when late)."""
    changes = ClockChanges()
    for clock in ctx.uow.clocks.open_for_case(warning.warning_id):
        cp = ctx.hub.clock_policy.clock(clock.kind)
        if cp is not None and trigger in cp.stops and clock.state is ClockState.OPEN:
            stop(clock, ctx.now, trigger, changes)
    write_log(ctx.uow, changes.log, ctx.now)


def restart_contact_clock(ctx: Context, warning: Warning, old: Grade) -> None:
    """After a regrade: the running contact clock (of the old grade) ends, saying why, and
    the new grade's starts from the warning's send time. Ended, not met: a regrade is not
    the addressee acting. Nothing restarts once contact was made (the clock had stopped)."""
    running = [
        c
        for c in ctx.uow.clocks.open_for_case(warning.warning_id)
        if (cp := ctx.hub.clock_policy.clock(c.kind)) is not None and cp.starts == old.trigger
    ]
    if not running:
        return
    log = []
    for clock in running:
        clock.state, clock.next_step, clock.next_step_at = ClockState.ENDED, "", None
        clock.stopped_at, clock.stopped_by = ctx.now, "warning.regraded"
        log.append(
            SlaEntry(
                clock.clock_id,
                warning.warning_id,
                "",
                clock.kind,
                "ended",
                ctx.now,
                clock.deadline_at,
                clock.responsible,
                detail=f"regraded {old.value} to {warning.grade.value}; the "
                f"{warning.grade.value} contact clock runs from the warning's send time",
            )
        )
    write_log(ctx.uow, log, ctx.now)
    start_clocks(ctx, warning, [warning.grade.trigger], warning.sent_at)


# ---- the wire and the notices -----------------------------------------------------------------


def warning_to_proto(w: Warning) -> warning_pb2.Warning:
    pb = warning_pb2.Warning(
        warning_id=w.warning_id,
        sender=w.sender,
        addressee=w.addressee,
        account=wire.account_to_proto(w.account_institution, w.account_number, w.holder_name),
        fraud_type=(
            case_pb2.FraudType.Value(f"FRAUD_TYPE_{w.fraud_type.upper()}")
            if w.fraud_type
            else case_pb2.FRAUD_TYPE_UNSPECIFIED
        ),
        amount_at_risk_fen=w.amount_at_risk_fen,
        grade=GRADES_PB[w.grade],
        text=w.text,
        state=STATES_PB[w.state],
        acknowledge_note=w.acknowledge_note,
        outcome=(
            OUTCOMES_PB[w.outcome]
            if w.outcome is not None
            else warning_pb2.WARNING_OUTCOME_UNSPECIFIED
        ),
        loss_prevented_fen=w.loss_prevented_fen,
        outcome_text=w.outcome_text,
        case_id=w.case_id,
        message_id=w.message_id,
        grade_reason=w.grade_reason,
        send_time=wire.ts(w.sent_at),
        contact_by_time=wire.ts(w.contact_by),
        outcome_by_time=wire.ts(w.outcome_by),
        acknowledge_time=wire.ts(w.acknowledged_at),
        outcome_time=wire.ts(w.outcome_at),
        grade_time=wire.ts(w.graded_at),
        lead_id=w.lead_id,
    )
    if w.counterparty_institution or w.counterparty_account:
        pb.counterparty.CopyFrom(
            wire.account_to_proto(
                w.counterparty_institution, w.counterparty_account, w.counterparty_name
            )
        )
    return pb


def tell(ctx: Context, recipients: list[str], w: Warning, summary: str) -> None:
    ctx.deliver_to(
        recipients,
        delivery_pb2.Notice(
            kind=delivery_pb2.NOTICE_KIND_WARNING,
            case_id=w.warning_id,
            origin=ctx.envelope,
            summary=summary,
            warning=warning_to_proto(w),
        ),
    )
