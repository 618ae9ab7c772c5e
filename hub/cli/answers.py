"""The hub's signed answers as the domain objects the renderers draw (hub/render/): a case,
its orders, a clock and its SLA log, an appeal, for the read commands over gRPC
(hub/cli/remote.py). The inverse of hub/service/wire.py's encoders; what an answer does not
carry (a victim the hub withheld) stays empty, never made up."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from google.protobuf.message import Message

from hub.domain.appeals import Appeal, AppealState, ReferenceKind
from hub.domain.cases import (
    Case,
    CaseEvent,
    CaseState,
    FraudTransaction,
    OnwardTransfer,
    Order,
    OrderKind,
    TransactionFact,
)
from hub.domain.clocks import CaseClock, SlaEntry
from hub.domain.grades import Grade
from hub.service import wire
from stophub.v1 import appeal_pb2, case_pb2, order_pb2, sla_pb2


def _at(message: Message, name: str) -> datetime | None:
    if not message.HasField(name):
        return None
    return cast(datetime, getattr(message, name).ToDatetime(tzinfo=UTC))


def _when(message: Message, name: str) -> datetime:
    """A time the hub always sets; the epoch, never a made-up now, if an answer lacks it."""
    return _at(message, name) or datetime.fromtimestamp(0, UTC)


def _enum(enum_type: Any, value: int, prefix: str) -> str:
    """FRAUD_TYPE_FAKE_INVESTMENT -> 'fake_investment'; 0 or unknown -> ''."""
    found = enum_type.DESCRIPTOR.values_by_number.get(value)
    return "" if found is None or value == 0 else str(found.name).removeprefix(prefix).lower()


ORDER_KINDS = {number: kind for kind, number in wire.ORDER_KINDS.items()}
ORDER_STATES = {number: state for state, number in wire.ORDER_STATES.items()}
CLOCK_STATES = {number: state for state, number in wire.CLOCK_STATES.items()}
# Events of a clock's log that are not steps of its ladder (hub/service/sweep.py counts steps).
NOT_STEPS = frozenset({"started", "met", "missed"})


def order_from_proto(pb: order_pb2.Order) -> Order:
    instruction = pb.instruction
    which = instruction.WhichOneof("instruction")
    order = Order(
        order_id=pb.order_id,
        case_id=pb.case_id,
        kind=ORDER_KINDS.get(pb.kind, OrderKind.STOP),
        addressed_to=pb.addressed_to,
        issued_by=pb.issued_by,
        issued_at=_when(pb, "issue_time"),
        origin_message_id=pb.origin_message_id,
        state=ORDER_STATES[pb.state],
        auto_stop_rule_id=pb.auto_stop_rule_id or None,
        layer=pb.layer,
        note=instruction.note,
        answered_at=_at(pb, "answer_time"),
        effective_at=_at(pb, "effective_time"),
        expires_at=_at(pb, "expire_time"),
        held_fen=pb.held_fen,
        returned_fen=pb.returned_fen,
    )
    account = None
    if which == "stop":
        stop = instruction.stop
        account, order.amount_fen = stop.account, stop.amount_fen
        order.upstream_order_id = stop.upstream_order_id
        order.facts = [
            TransactionFact(_when(f, "transaction_time"), f.amount_fen, i, pb.order_id)
            for i, f in enumerate(stop.transactions)
        ]
    elif which == "freeze":
        freeze = instruction.freeze
        account, order.amount_fen = freeze.account, freeze.amount_fen
        order.filed_case_number = freeze.filed_case_number
        order.approving_authority = freeze.approving_authority
        order.term_months = freeze.term_months
        order.target_order_id = freeze.stop_order_id
        order.renews_order_id = freeze.renews_order_id
    elif which == "release":
        order.target_order_id = instruction.release.target_order_id
        order.amount_fen = instruction.release.amount_fen
    elif which == "fund_return":
        back = instruction.fund_return
        account, order.amount_fen = back.beneficiary, back.amount_fen
        order.target_order_id = back.freeze_order_id
        order.distribution_id = back.distribution_id
        order.beneficiary_case_id = back.beneficiary_case_id
    if account is not None:
        order.account_institution = account.institution_code
        order.account_number = account.account_number
        order.holder_name = account.holder_name
    if pb.HasField("result"):
        result = pb.result
        order.result_status = wire.EXECUTION_STATUSES.get(result.status)
        order.result_reason_code = result.reason_code
        order.result_reason = result.reason
        order.amount_held_fen = result.amount_held_fen
        order.available_balance_fen = result.available_balance_fen
        order.released_fen = result.amount_released_fen
        order.executed_at = _at(result, "execute_time")
        order.onward = [
            OnwardTransfer(
                transfer_time=_when(t, "transfer_time"),
                amount_fen=t.amount_fen,
                to_institution=t.to_account.institution_code,
                to_account=t.to_account.account_number,
                to_holder=t.to_account.holder_name,
                reference=t.transaction_reference,
                position=i,
                order_id=pb.order_id,
                carried_fen=t.carried_fen,
            )
            for i, t in enumerate(result.onward_transfers)
        ]
    return order


def case_from_proto(pb: case_pb2.Case) -> Case:
    """The case as the hub's answer holds it: a victim the hub withheld is empty here."""
    report = pb.report
    case = Case(
        case_id=pb.case_id,
        reporting_institution=pb.reporting_institution,
        created_at=_when(pb, "create_time"),
        report_message_id=pb.report_message_id,
        victim_name=report.victim.name,
        victim_id_number=report.victim.id_number,
        victim_phone=report.victim.phone,
        fraud_type=_enum(case_pb2.FraudType, report.fraud_type, "FRAUD_TYPE_"),
        description=report.description,
        victim_report_time=_at(report, "victim_report_time"),
        state=wire.CASE_STATES_BY_NUMBER.get(pb.state, CaseState.REPORTED),
        verified_at=_at(pb, "verify_time"),
        closed_at=_at(pb, "close_time"),
        grade=wire.GRADES.get(pb.grade, Grade.UNGRADED).value,
    )
    case.transactions = [
        FraudTransaction(
            transaction_time=_when(t, "transaction_time"),
            amount_fen=t.amount_fen,
            payer_institution=t.payer.institution_code,
            payer_account=t.payer.account_number,
            payer_name=t.payer.holder_name,
            payee_institution=t.payee.institution_code,
            payee_account=t.payee.account_number,
            payee_name=t.payee.holder_name,
            channel=_enum(case_pb2.PaymentChannel, t.channel, "PAYMENT_CHANNEL_"),
            reference=t.transaction_reference,
            position=i,
            case_id=pb.case_id,
        )
        for i, t in enumerate(report.transactions)
    ]
    case.orders = [order_from_proto(o) for o in pb.orders]
    case.events = [
        CaseEvent(
            sequence=e.sequence,
            at=_when(e, "event_time"),
            kind=e.kind,
            actor=e.actor,
            summary=e.summary,
            message_id=e.message_id,
            order_id=e.order_id,
            case_id=pb.case_id,
        )
        for e in pb.events
    ]
    return case


def clock_from_proto(pb: sla_pb2.ClockView) -> tuple[CaseClock, list[SlaEntry]]:
    """A clock and its SLA log. Its count of steps done is the log's steps (one entry each)."""
    entries = [
        SlaEntry(
            clock_id=e.clock_id,
            case_id=e.case_id,
            order_id=e.order_id,
            kind=e.clock,
            event=e.event,
            at=_when(e, "event_time"),
            due_at=_at(e, "due_time"),
            responsible=e.responsible,
            late_seconds=e.late.ToTimedelta().total_seconds(),
            detail=e.detail,
        )
        for e in pb.events
    ]
    clock = CaseClock(
        clock_id=pb.clock_id,
        case_id=pb.case_id,
        kind=pb.clock,
        responsible=pb.responsible,
        started_at=_when(pb, "start_time"),
        deadline_at=_when(pb, "deadline_time"),
        order_id=pb.order_id,
        state=CLOCK_STATES[pb.state],
        next_step=pb.next_step,
        next_step_at=_at(pb, "next_step_time"),
        steps_done=sum(1 for e in entries if e.event not in NOT_STEPS),
        breached=pb.breached,
        stopped_at=_at(pb, "stop_time"),
        stopped_by=pb.stopped_by,
        deadline_estimated=pb.deadline_estimated,
    )
    return clock, entries


APPEAL_STATES = {
    appeal_pb2.APPEAL_STATE_FILED: AppealState.FILED,
    appeal_pb2.APPEAL_STATE_UPHELD: AppealState.UPHELD,
    appeal_pb2.APPEAL_STATE_REJECTED: AppealState.REJECTED,
}


def appeal_from_proto(pb: appeal_pb2.Appeal) -> Appeal:
    return Appeal(
        appeal_id=pb.appeal_id,
        reference=pb.reference,
        reference_kind=ReferenceKind(pb.reference_kind or "stop"),
        case_id=pb.case_id,
        appellant=pb.appellant,
        grounds=pb.grounds,
        documents="\n".join(f"{d.name}:{d.sha256.hex()}" for d in pb.documents),
        filed_at=_when(pb, "file_time"),
        decide_by=_when(pb, "decide_by_time"),
        message_id="",
        state=APPEAL_STATES.get(pb.state, AppealState.FILED),
        decided_at=_at(pb, "decision_time"),
        decided_by=pb.decided_by,
        reason=pb.reason,
        release_orders=" ".join(pb.release_order_ids),
        removed_entries=" ".join(pb.removed_entry_ids),
    )
