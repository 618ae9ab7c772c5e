"""Between stophub.v1 messages and the domain: decode with field-named errors, encode views.

Over 600 lines, on purpose: it is read by lookup, not by flow (one converter a message, each
a screen at most), and every converter leans on the same time, enum and text helpers at the
top; split by message it would scatter those or import them back from each piece.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from hub.domain.cases import (
    AccountRef,
    Case,
    CaseEvent,
    CaseState,
    Execution,
    ExecutionStatus,
    FraudTransaction,
    FreezeCommand,
    OnwardTransfer,
    Order,
    OrderCommand,
    OrderKind,
    OrderState,
    ReleaseCommand,
    Report,
    ReturnCommand,
    StopCommand,
    VerificationOutcome,
)
from hub.domain.clocks import CaseClock, ClockState, SlaEntry
from hub.domain.errors import InvalidArgument
from hub.domain.grades import Grade, grade_of
from hub.domain.institutions import (
    ContactRole,
    DutyContact,
    Institution,
    InstitutionKind,
    KeyState,
)
from hub.domain.returns import Distribution, DistributionMethod, DistributionState
from hub.domain.rules import AutoStopRule
from hub.domain.trail import Edge, Node, NodeStatus
from stophub.v1 import (
    account_pb2,
    appeal_pb2,
    blacklist_pb2,
    case_pb2,
    delivery_pb2,
    grade_pb2,
    institution_pb2,
    lead_pb2,
    order_pb2,
    returns_pb2,
    sla_pb2,
    trail_pb2,
    warning_pb2,
)

# ---- what a message is about -------------------------------------------------------------------


def subject_of(message: Message) -> str | None:
    """The case an answer or a notice is about, for its audit entry and its delivery row; for
    a lead or a warning (and a notice of one) its own id, which stands in the case id as it
    does for their clocks (docs/leads.md, docs/warnings.md): `audit export --case L...`."""
    if isinstance(message, delivery_pb2.Notice):
        return message.case_id or message.lead.name or message.warning.warning_id or None
    if isinstance(
        message,
        case_pb2.Case
        | order_pb2.Order
        | returns_pb2.Distribution
        | appeal_pb2.Appeal
        | sla_pb2.ClockView,
    ):
        return message.case_id or None
    if isinstance(message, blacklist_pb2.ListEntryRecord):
        return message.entry.source_case_id or None
    if isinstance(message, lead_pb2.Lead):
        return message.name or None
    if isinstance(message, warning_pb2.Warning):
        return message.warning_id or None
    return None


# ---- time -------------------------------------------------------------------------------------


def ts(at: datetime | None) -> Timestamp | None:
    if at is None:
        return None
    t = Timestamp()
    t.FromDatetime(at.astimezone(UTC))
    return t


def from_ts(message: Message, field: str, name: str, *, required: bool = True) -> datetime | None:
    if not message.HasField(field):
        if required:
            raise InvalidArgument(name, "is required")
        return None
    value: Timestamp = getattr(message, field)
    if not 0 <= value.nanos < 1_000_000_000:
        raise InvalidArgument(name, "nanos must be within 0..999999999")
    try:
        return value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidArgument(name, f"is not a valid time: {exc}") from exc


def _set_ts(target: Message, field: str, at: datetime | None) -> None:
    if at is not None:
        getattr(target, field).CopyFrom(ts(at))


# ---- enums ------------------------------------------------------------------------------------


def _enum_name(enum_type: object, value: int, prefix: str) -> str:
    """FRAUD_TYPE_FAKE_INVESTMENT -> 'fake_investment'; 0 or unknown -> ''."""
    descriptor = getattr(enum_type, "DESCRIPTOR")  # noqa: B009 - generated enums expose it
    v = descriptor.values_by_number.get(value)
    if v is None or value == 0:
        return ""
    return str(v.name).removeprefix(prefix).lower()


def _enum_value(enum_type: object, name: str, prefix: str) -> int:
    descriptor = getattr(enum_type, "DESCRIPTOR")  # noqa: B009
    v = descriptor.values_by_name.get(prefix + name.upper())
    return int(v.number) if v is not None else 0


INSTITUTION_KINDS = {
    institution_pb2.INSTITUTION_KIND_BANK: InstitutionKind.BANK,
    institution_pb2.INSTITUTION_KIND_PAYMENT_INSTITUTION: InstitutionKind.PAYMENT_INSTITUTION,
    institution_pb2.INSTITUTION_KIND_ANTI_FRAUD_CENTRE: InstitutionKind.ANTI_FRAUD_CENTRE,
    institution_pb2.INSTITUTION_KIND_REGULATOR: InstitutionKind.REGULATOR,
    institution_pb2.INSTITUTION_KIND_HUB: InstitutionKind.HUB,
    institution_pb2.INSTITUTION_KIND_AUDITOR: InstitutionKind.AUDITOR,
}
CASE_STATES = {
    CaseState.REPORTED: case_pb2.CASE_STATE_REPORTED,
    CaseState.VERIFIED: case_pb2.CASE_STATE_VERIFIED,
    CaseState.REJECTED: case_pb2.CASE_STATE_REJECTED,
    CaseState.CLOSED: case_pb2.CASE_STATE_CLOSED,
}
CASE_STATES_BY_NUMBER = {v: k for k, v in CASE_STATES.items()}
ORDER_KINDS = {
    OrderKind.STOP: order_pb2.ORDER_KIND_STOP,
    OrderKind.FREEZE: order_pb2.ORDER_KIND_FREEZE,
    OrderKind.RELEASE: order_pb2.ORDER_KIND_RELEASE,
    OrderKind.RETURN: order_pb2.ORDER_KIND_RETURN,
}
ORDER_STATES = {s: _enum_value(order_pb2.OrderState, s.value, "ORDER_STATE_") for s in OrderState}
EXECUTION_STATUSES = {
    order_pb2.EXECUTION_STATUS_EXECUTED: ExecutionStatus.EXECUTED,
    order_pb2.EXECUTION_STATUS_PARTIALLY_EXECUTED: ExecutionStatus.PARTIALLY_EXECUTED,
    order_pb2.EXECUTION_STATUS_NO_MATCH: ExecutionStatus.NO_MATCH,
    order_pb2.EXECUTION_STATUS_REJECTED: ExecutionStatus.REJECTED,
}
EXECUTION_STATUS_NUMBERS = {v: k for k, v in EXECUTION_STATUSES.items()}


# ---- text the store can keep ------------------------------------------------------------------


# Request text stored in a column of bounded size (hub/store/tables.py); the rest is stored
# sealed or unbounded, or checked against known values (codes, ids, account numbers) first.
TEXT_LIMITS = {
    "stophub.v1.FraudTransaction.transaction_reference": 128,
    "stophub.v1.OnwardTransfer.transaction_reference": 128,
    "stophub.v1.AutoStopRule.rule_id": 64,
    "stophub.v1.FreezeInstruction.filed_case_number": 64,
    "stophub.v1.FreezeInstruction.approving_authority": 200,
}


def check_text(message: Message, prefix: str = "") -> None:
    """Refuse a NUL character, or text longer than its column, in any string of `message`.

    PostgreSQL refuses both (SQLite stores them): checking here keeps the two stores answering
    alike, with the field named, instead of one of them failing deep in a transaction."""
    for fd, value in message.ListFields():
        name = prefix + fd.name
        items = list(value) if fd.is_repeated else [value]
        limit = TEXT_LIMITS.get(fd.full_name)
        for i, item in enumerate(items):
            path = f"{name}[{i}]" if fd.is_repeated else name
            if fd.type == fd.TYPE_MESSAGE:
                check_text(item, path + ".")
            elif fd.type == fd.TYPE_STRING:
                if "\x00" in item:
                    raise InvalidArgument(path, "contains a NUL character")
                if limit is not None and len(item) > limit:
                    raise InvalidArgument(path, f"is longer than {limit} characters")


def storable(text: str, limit: int) -> str:
    """`text` as a refusal's audit row can keep it: NUL replaced, cut to the column's size."""
    return text.replace("\x00", "\ufffd")[:limit]


# ---- decoding -----------------------------------------------------------------------------------


def account_from_proto(pb: account_pb2.AccountRef) -> AccountRef:
    return AccountRef(
        pb.institution_code.strip(), pb.account_number.strip(), pb.holder_name.strip()
    )


def report_from_proto(pb: case_pb2.Report) -> Report:
    transactions = []
    for i, t in enumerate(pb.transactions):
        name = f"transactions[{i}]"
        at = from_ts(t, "transaction_time", f"{name}.transaction_time")
        assert at is not None
        channel = _enum_name(case_pb2.PaymentChannel, t.channel, "PAYMENT_CHANNEL_")
        if not channel:
            raise InvalidArgument(f"{name}.channel", "is required (mobile banking, counter, ...)")
        transactions.append(
            FraudTransaction(
                transaction_time=at,
                amount_fen=t.amount_fen,
                payer_institution=t.payer.institution_code.strip(),
                payer_account=t.payer.account_number.strip(),
                payer_name=t.payer.holder_name.strip(),
                payee_institution=t.payee.institution_code.strip(),
                payee_account=t.payee.account_number.strip(),
                payee_name=t.payee.holder_name.strip(),
                channel=channel,
                reference=t.transaction_reference,
            )
        )
    return Report(
        victim_name=pb.victim.name.strip(),
        victim_id_number=pb.victim.id_number.strip(),
        victim_phone=pb.victim.phone.strip(),
        fraud_type=_enum_name(case_pb2.FraudType, pb.fraud_type, "FRAUD_TYPE_"),
        victim_report_time=from_ts(pb, "victim_report_time", "victim_report_time", required=False),
        description=pb.description,
        transactions=transactions,
    )


def verification_from_proto(pb: case_pb2.Verification) -> tuple[str, VerificationOutcome, str]:
    if not pb.case_id:
        raise InvalidArgument("case_id", "is required")
    outcomes = {
        case_pb2.VERIFICATION_OUTCOME_CONFIRMED: VerificationOutcome.CONFIRMED,
        case_pb2.VERIFICATION_OUTCOME_REJECTED: VerificationOutcome.REJECTED,
    }
    outcome = outcomes.get(pb.outcome)
    if outcome is None:
        raise InvalidArgument("outcome", "must be CONFIRMED or REJECTED")
    return pb.case_id, outcome, pb.reason


def order_command_from_proto(pb: order_pb2.OrderInstruction) -> tuple[str, OrderCommand]:
    if not pb.case_id:
        raise InvalidArgument("case_id", "is required")
    which = pb.WhichOneof("instruction")
    command: OrderCommand
    if which == "stop":
        facts = []
        for i, f in enumerate(pb.stop.transactions):
            at = from_ts(f, "transaction_time", f"stop.transactions[{i}].transaction_time")
            assert at is not None
            facts.append((at, f.amount_fen))
        command = StopCommand(
            account_from_proto(pb.stop.account),
            pb.stop.amount_fen,
            facts,
            pb.stop.upstream_order_id.strip(),
        )
    elif which == "freeze":
        fr = pb.freeze
        command = FreezeCommand(
            account_from_proto(fr.account),
            fr.amount_fen,
            fr.filed_case_number.strip(),
            fr.approving_authority.strip(),
            fr.term_months,
            fr.stop_order_id,
            fr.renews_order_id,
        )
    elif which == "release":
        command = ReleaseCommand(pb.release.target_order_id, pb.release.reason)
    elif which == "fund_return":
        r = pb.fund_return
        if r.distribution_id or r.beneficiary_case_id:
            raise InvalidArgument(
                "fund_return.distribution_id",
                "is set by the hub for the returns a distribution decides; to share money "
                "among several victims, start a distribution (StartDistribution)",
            )
        command = ReturnCommand(r.freeze_order_id, account_from_proto(r.beneficiary), r.amount_fen)
    else:
        raise InvalidArgument("instruction", "set one of stop, freeze, release, fund_return")
    return pb.case_id, command


# The hub streams at most a few hundred deliveries per batch, so a client never has more to
# acknowledge at once; the bound keeps one ack inside the database's parameter limit
# (PostgreSQL: 65535) instead of failing there.
MAX_ACK_SEQUENCES = 10_000


def ack_sequences(pb: delivery_pb2.AckBody) -> list[int]:
    if len(pb.sequences) > MAX_ACK_SEQUENCES:
        raise InvalidArgument(
            "sequences",
            f"{len(pb.sequences)} sequences in one acknowledgement; send at most "
            f"{MAX_ACK_SEQUENCES} per message",
        )
    return sorted(set(pb.sequences))


def execution_from_proto(pb: order_pb2.ExecutionResult) -> tuple[str, Execution]:
    if not pb.order_id:
        raise InvalidArgument("order_id", "is required")
    status = EXECUTION_STATUSES.get(pb.status)
    if status is None:
        raise InvalidArgument(
            "status", "must be EXECUTED, PARTIALLY_EXECUTED, NO_MATCH or REJECTED"
        )
    onward = []
    for i, t in enumerate(pb.onward_transfers):
        at = from_ts(t, "transfer_time", f"onward_transfers[{i}].transfer_time")
        assert at is not None
        onward.append(
            OnwardTransfer(
                transfer_time=at,
                amount_fen=t.amount_fen,
                to_institution=t.to_account.institution_code.strip(),
                to_account=t.to_account.account_number.strip(),
                to_holder=t.to_account.holder_name.strip(),
                reference=t.transaction_reference,
                carried_fen=t.carried_fen,
            )
        )
    return pb.order_id, Execution(
        status=status,
        reason_code=pb.reason_code.strip().upper(),
        reason=pb.reason,
        amount_held_fen=pb.amount_held_fen,
        available_balance_fen=pb.available_balance_fen,
        amount_released_fen=pb.amount_released_fen,
        amount_returned_fen=pb.amount_returned_fen,
        execute_time=from_ts(pb, "execute_time", "execute_time", required=False),
        onward=onward,
    )


# ---- encoding -----------------------------------------------------------------------------------


def account_to_proto(institution: str, number: str, holder: str) -> account_pb2.AccountRef:
    return account_pb2.AccountRef(
        institution_code=institution, account_number=number, holder_name=holder
    )


def account_ref_to_proto(a: AccountRef) -> account_pb2.AccountRef:
    return account_to_proto(a.institution_code, a.account_number, a.holder_name)


def order_to_proto(order: Order) -> order_pb2.Order:
    instruction = order_pb2.OrderInstruction(case_id=order.case_id, note=order.note)
    account = account_to_proto(order.account_institution, order.account_number, order.holder_name)
    match order.kind:
        case OrderKind.STOP:
            instruction.stop.account.CopyFrom(account)
            instruction.stop.amount_fen = order.amount_fen
            instruction.stop.upstream_order_id = order.upstream_order_id
            for f in order.facts:
                fact = instruction.stop.transactions.add(amount_fen=f.amount_fen)
                _set_ts(fact, "transaction_time", f.transaction_time)
        case OrderKind.FREEZE:
            instruction.freeze.CopyFrom(
                order_pb2.FreezeInstruction(
                    account=account,
                    amount_fen=order.amount_fen,
                    filed_case_number=order.filed_case_number,
                    approving_authority=order.approving_authority,
                    term_months=order.term_months,
                    stop_order_id=order.target_order_id,
                    renews_order_id=order.renews_order_id,
                )
            )
        case OrderKind.RELEASE:
            instruction.release.CopyFrom(
                order_pb2.ReleaseInstruction(
                    target_order_id=order.target_order_id,
                    reason=order.note,
                    amount_fen=order.amount_fen,
                )
            )
        case OrderKind.RETURN:
            instruction.fund_return.CopyFrom(
                order_pb2.ReturnInstruction(
                    freeze_order_id=order.target_order_id,
                    beneficiary=account,
                    amount_fen=order.amount_fen,
                    distribution_id=order.distribution_id,
                    beneficiary_case_id=order.beneficiary_case_id,
                )
            )
    pb = order_pb2.Order(
        order_id=order.order_id,
        case_id=order.case_id,
        kind=ORDER_KINDS[order.kind],
        state=ORDER_STATES[order.state],  # type: ignore[arg-type]
        addressed_to=order.addressed_to,
        issued_by=order.issued_by,
        auto_stop_rule_id=order.auto_stop_rule_id or "",
        instruction=instruction,
        held_fen=order.held_fen,
        returned_fen=order.returned_fen,
        origin_message_id=order.origin_message_id,
        layer=order.layer,
    )
    _set_ts(pb, "issue_time", order.issued_at)
    _set_ts(pb, "answer_time", order.answered_at)
    _set_ts(pb, "effective_time", order.effective_at)
    _set_ts(pb, "expire_time", order.expires_at)
    if order.result_status is not None:
        result = pb.result
        result.order_id = order.order_id
        result.status = EXECUTION_STATUS_NUMBERS[order.result_status]
        result.reason_code = order.result_reason_code
        result.reason = order.result_reason
        result.amount_held_fen = order.amount_held_fen
        result.available_balance_fen = order.available_balance_fen
        result.amount_released_fen = order.released_fen
        result.amount_returned_fen = order.returned_fen if order.kind is OrderKind.RETURN else 0
        _set_ts(result, "execute_time", order.executed_at)
        for t in order.onward:
            onward = result.onward_transfers.add(
                amount_fen=t.amount_fen,
                to_account=account_to_proto(t.to_institution, t.to_account, t.to_holder),
                transaction_reference=t.reference,
                carried_fen=t.carried_fen,
            )
            _set_ts(onward, "transfer_time", t.transfer_time)
    return pb


def event_to_proto(event: CaseEvent) -> case_pb2.CaseEvent:
    pb = case_pb2.CaseEvent(
        sequence=event.sequence,
        kind=event.kind,
        actor=event.actor,
        message_id=event.message_id,
        order_id=event.order_id,
        summary=event.summary,
        operator=event.operator or "",
        approver=event.approver or "",
    )
    _set_ts(pb, "event_time", event.at)
    return pb


def case_to_proto(case: Case, *, with_events: bool = True) -> case_pb2.Case:
    report = case_pb2.Report(
        victim=case_pb2.Victim(
            name=case.victim_name, id_number=case.victim_id_number, phone=case.victim_phone
        ),
        fraud_type=_enum_value(case_pb2.FraudType, case.fraud_type, "FRAUD_TYPE_"),  # type: ignore[arg-type]
        description=case.description,
    )
    _set_ts(report, "victim_report_time", case.victim_report_time)
    for t in case.transactions:
        tx = report.transactions.add(
            amount_fen=t.amount_fen,
            payer=account_to_proto(t.payer_institution, t.payer_account, t.payer_name),
            payee=account_to_proto(t.payee_institution, t.payee_account, t.payee_name),
            channel=_enum_value(case_pb2.PaymentChannel, t.channel, "PAYMENT_CHANNEL_"),
            transaction_reference=t.reference,
        )
        _set_ts(tx, "transaction_time", t.transaction_time)
    pb = case_pb2.Case(
        case_id=case.case_id,
        reporting_institution=case.reporting_institution,
        state=CASE_STATES[case.state],
        report=report,
        orders=[order_to_proto(o) for o in case.orders],
        events=[event_to_proto(e) for e in case.events] if with_events else [],
        loss_fen=case.loss_fen,
        held_fen=case.held_fen,
        returned_fen=case.returned_fen,
        released_fen=case.released_fen,
        report_message_id=case.report_message_id,
    )
    pb.grade = grade_to_proto(case.grade)  # type: ignore[assignment]
    pb.report.grade = pb.grade
    _set_ts(pb, "create_time", case.created_at)
    _set_ts(pb, "verify_time", case.verified_at)
    _set_ts(pb, "close_time", case.closed_at)
    return pb


def institution_to_proto(inst: Institution) -> institution_pb2.Institution:
    kinds = {v: k for k, v in INSTITUTION_KINDS.items()}
    pb = institution_pb2.Institution(
        code=inst.code, display_name=inst.display_name, kind=kinds[inst.kind]
    )
    _set_ts(pb, "create_time", inst.created_at)
    for k in inst.keys:
        key = pb.keys.add(
            key_id=k.key_id,
            algorithm=k.algorithm,
            public_key=k.public_key,
            state=institution_pb2.KEY_STATE_ACTIVE
            if k.state is KeyState.ACTIVE
            else institution_pb2.KEY_STATE_REVOKED,
        )
        _set_ts(key, "create_time", k.created_at)
        _set_ts(key, "revoke_time", k.revoked_at)
        _set_ts(key, "not_after_time", k.not_after)
    for c in inst.contacts:
        pb.duty_contacts.append(contact_to_proto(c))
    return pb


def rule_to_proto(rule: AutoStopRule) -> order_pb2.AutoStopRule:
    pb = order_pb2.AutoStopRule(
        rule_id=rule.rule_id,
        enabled=rule.enabled,
        max_amount_fen=rule.max_amount_fen,
        centre_code=rule.centre_code,
        follow_onward_transfers=rule.follow_onward,
        max_layer=rule.max_layer,
    )
    _set_ts(pb, "update_time", rule.updated_at)
    return pb


CONTACT_ROLES = {
    ContactRole.PRIMARY: institution_pb2.CONTACT_ROLE_PRIMARY,
    ContactRole.BACKUP: institution_pb2.CONTACT_ROLE_BACKUP,
    ContactRole.SUPERVISOR: institution_pb2.CONTACT_ROLE_SUPERVISOR,
}


def contact_to_proto(c: DutyContact) -> institution_pb2.DutyContact:
    return institution_pb2.DutyContact(
        role=CONTACT_ROLES[c.role], name=c.name, phone=c.phone, email=c.email
    )


CLOCK_STATES = {
    ClockState.OPEN: sla_pb2.CLOCK_STATE_OPEN,
    ClockState.MET: sla_pb2.CLOCK_STATE_MET,
    ClockState.MISSED: sla_pb2.CLOCK_STATE_MISSED,
    ClockState.ENDED: sla_pb2.CLOCK_STATE_ENDED,
}


def sla_entry_to_proto(e: SlaEntry) -> sla_pb2.SlaEvent:
    pb = sla_pb2.SlaEvent(
        clock_id=e.clock_id,
        case_id=e.case_id,
        order_id=e.order_id,
        clock=e.kind,
        event=e.event,
        responsible=e.responsible,
        detail=e.detail,
    )
    _set_ts(pb, "event_time", e.at)
    _set_ts(pb, "due_time", e.due_at)
    pb.late.FromTimedelta(timedelta(seconds=e.late_seconds))
    return pb


def next_deadline_of(open_clocks: Iterable[CaseClock]) -> CaseClock | None:
    """The running clock with the earliest deadline (then the lowest clock id), or None."""
    running = [c for c in open_clocks if c.state is ClockState.OPEN]
    return min(running, key=lambda c: (c.deadline_at, c.clock_id), default=None)


def deadline_to_proto(c: CaseClock) -> case_pb2.CaseDeadline:
    pb = case_pb2.CaseDeadline(
        clock_id=c.clock_id,
        clock=c.kind,
        responsible=c.responsible,
        order_id=c.order_id,
        breached=c.breached,
        deadline_estimated=c.deadline_estimated,
    )
    _set_ts(pb, "start_time", c.started_at)
    _set_ts(pb, "deadline_time", c.deadline_at)
    return pb


def clock_to_proto(c: CaseClock, entries: list[SlaEntry] | None = None) -> sla_pb2.ClockView:
    pb = sla_pb2.ClockView(
        clock_id=c.clock_id,
        case_id=c.case_id,
        order_id=c.order_id,
        clock=c.kind,
        responsible=c.responsible,
        state=CLOCK_STATES[c.state],
        next_step=c.next_step,
        stopped_by=c.stopped_by,
        breached=c.breached,
        events=[sla_entry_to_proto(e) for e in entries or []],
        deadline_estimated=c.deadline_estimated,
        acknowledged_by=c.acknowledged_by or "",
        acknowledged_operator=c.acknowledged_operator or "",
        acknowledge_note=c.acknowledge_note or "",
    )
    _set_ts(pb, "acknowledge_time", c.acknowledged_at)
    _set_ts(pb, "start_time", c.started_at)
    _set_ts(pb, "deadline_time", c.deadline_at)
    _set_ts(pb, "next_step_time", c.next_step_at)
    _set_ts(pb, "stop_time", c.stopped_at)
    return pb


# ---- the money trail and distributions ---------------------------------------------------------

TRAIL_STATUSES = {
    s: _enum_value(trail_pb2.TrailNodeStatus, s.value, "TRAIL_NODE_STATUS_") for s in NodeStatus
}
DISTRIBUTION_STATES = {
    s: _enum_value(returns_pb2.DistributionState, s.value, "DISTRIBUTION_STATE_")
    for s in DistributionState
}
DISTRIBUTION_METHODS = {
    m: _enum_value(returns_pb2.DistributionMethod, m.value, "DISTRIBUTION_METHOD_")
    for m in DistributionMethod
}


def trail_node_to_proto(node: Node) -> trail_pb2.TrailNode:
    latest = node.latest_order
    return trail_pb2.TrailNode(
        node_id=node.node_id,
        account=account_to_proto(node.key[0], node.key[1], node.holder),
        layer=max(node.layer, 0),
        received_fen=node.received_fen,
        held_fen=node.held_fen,
        status=TRAIL_STATUSES[node.status],  # type: ignore[arg-type]
        order_id=latest.order_id if latest else "",
        order_state=ORDER_STATES[latest.state] if latest else 0,  # type: ignore[arg-type]
        note=node.note,
    )


def trail_edge_to_proto(edge: Edge) -> trail_pb2.TrailEdge:
    pb = trail_pb2.TrailEdge(
        from_node_id=f"{edge.source[0]}/{edge.source[1]}",
        to_node_id=f"{edge.target[0]}/{edge.target[1]}",
        amount_fen=edge.amount_fen,
        carried_fen=edge.carried_fen,
        transaction_reference=edge.reference,
        reported_by_order_id=edge.reported_by,
        cycle=edge.cycle,
    )
    _set_ts(pb, "transfer_time", edge.at)
    return pb


def distribution_to_proto(d: Distribution) -> returns_pb2.Distribution:
    pb = returns_pb2.Distribution(
        distribution_id=d.distribution_id,
        account=account_to_proto(d.account_institution, d.account_number, ""),
        case_id=d.case_id,
        state=DISTRIBUTION_STATES[d.state],  # type: ignore[arg-type]
        method=DISTRIBUTION_METHODS[d.method],  # type: ignore[arg-type]
        pool_fen=d.pool_fen,
        started_by=d.started_by,
        decision_reason=d.decision_reason,
        note=d.note,
    )
    for c in d.claims:
        pb.shares.add(
            case_id=c.case_id,
            beneficiary=account_to_proto(
                c.beneficiary_institution, c.beneficiary_account, c.beneficiary_name
            ),
            loss_fen=c.loss_fen,
            claim_fen=c.claim_fen,
            traced_fen=c.traced_fen,
            share_fen=c.share_fen,
            return_order_ids=c.return_orders.split(),
        )
        if c.traced_fen:
            pb.traced.add(case_id=c.case_id, amount_fen=c.traced_fen, evidence=c.evidence)
    for o in d.objections:
        objection = pb.objections.add(
            institution=o.institution, grounds=o.grounds, message_id=o.message_id
        )
        _set_ts(objection, "objection_time", o.at)
    _set_ts(pb, "start_time", d.started_at)
    _set_ts(pb, "notice_end_time", d.notice_ends_at)
    _set_ts(pb, "decide_time", d.decided_at)
    return pb


# ---- three-colour grades (docs/grades.md) ---------------------------------------------------

GRADES = {
    grade_pb2.GRADE_UNSPECIFIED: Grade.UNGRADED,
    grade_pb2.GRADE_GREEN: Grade.GREEN,
    grade_pb2.GRADE_YELLOW: Grade.YELLOW,
    grade_pb2.GRADE_RED: Grade.RED,
}
GRADE_NUMBERS = {grade: number for number, grade in GRADES.items()}


def grade_from_proto(number: int, field: str, *, required: bool = False) -> Grade:
    """A wire grade, checked: an unknown number is INVALID_FIELD; unspecified is ungraded,
    or refused when `required`."""
    grade: Grade | None = GRADES.get(number)  # type: ignore[call-overload]
    if grade is None:
        raise InvalidArgument(field, f"unknown grade {number}: GREEN (1), YELLOW (2) or RED (3)")
    if required and grade is Grade.UNGRADED:
        raise InvalidArgument(field, "is required: GREEN, YELLOW or RED")
    return grade


def grade_to_proto(grade: str) -> int:
    return GRADE_NUMBERS[grade_of(grade)]
