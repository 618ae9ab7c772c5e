"""hub.service.pipeline.Hub and its commands driven with in-memory fakes, real keys and real
signed envelopes."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf.message import Message

from hub.crypto.envelope import seal, seal_message, verify_envelope
from hub.crypto.keys import PrivateKey
from hub.crypto.listkey import ListKey
from hub.crypto.signing import ECDSA_P256
from hub.domain.cases import OrderState
from hub.domain.clocks import ClockState
from hub.domain.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from hub.domain.institutions import HUB_CODE, ContactRole, DutyContact, InstitutionKind
from hub.domain.rules import AutoStopRule
from hub.domain.warnings import Grade as WarningGrade
from hub.service.admin import NewKey, Registry
from hub.service.commands.case import CREATE_REPORT, GET_CASE, LIST_CASES, VERIFY_REPORT
from hub.service.commands.delivery import ACK, Ack, acknowledge_many, open_stream
from hub.service.commands.lead import GET_LEAD, SUBMIT_LEAD, TRIAGE_LEAD
from hub.service.commands.order import ANSWER_ORDER, ISSUE_ORDER, SET_AUTO_STOP_RULE
from hub.service.commands.warning import GET_WARNING
from hub.service.pipeline import Command, Hub
from hub.service.ports import Conflict
from hub.system.clock import ManualClock
from hub.system.policy import load_policy
from stophub.v1 import (
    account_pb2,
    appeal_pb2,
    audit_pb2,
    blacklist_pb2,
    case_pb2,
    delivery_pb2,
    envelope_pb2,
    grade_pb2,
    lead_pb2,
    order_pb2,
    returns_pb2,
    trail_pb2,
    warning_pb2,
)
from tests.unit.fakes import Delivery, FakeNotifier, FakeStore

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)

MEMBERS = {
    "BANKA": InstitutionKind.BANK,
    "BANKB": InstitutionKind.BANK,
    "BANKC": InstitutionKind.BANK,
    "BANKD": InstitutionKind.BANK,
    "PAYX": InstitutionKind.PAYMENT_INSTITUTION,
    "AFC": InstitutionKind.ANTI_FRAUD_CENTRE,
    "REG": InstitutionKind.REGULATOR,
}


def account(institution: str, number: str, holder: str) -> account_pb2.AccountRef:
    return account_pb2.AccountRef(
        institution_code=institution, account_number=number, holder_name=holder
    )


VICTIM = account("BANKA", "6222010000000001", "Zhang San")
VICTIM_C = account("BANKC", "6222030000000101", "Sun Ba")
VICTIM_P = account("PAYX", "PAYX-0000-0001", "Zhou Jiu")
MULE_B = account("BANKB", "6222020000000002", "Li Si")
MULE_C = account("BANKC", "6222030000000003", "Wang Wu")

ANSWER_TYPES: dict[str, type[Message]] = {
    CREATE_REPORT.name: case_pb2.Case,
    VERIFY_REPORT.name: case_pb2.Case,
    GET_CASE.name: case_pb2.Case,
    LIST_CASES.name: case_pb2.CaseList,
    ISSUE_ORDER.name: order_pb2.Order,
    ANSWER_ORDER.name: order_pb2.Order,
    SET_AUTO_STOP_RULE.name: order_pb2.AutoStopRule,
    "GetCaseTrail": trail_pb2.Trail,
    "StartDistribution": returns_pb2.Distribution,
    "ObjectToDistribution": returns_pb2.Distribution,
    "DecideDistribution": returns_pb2.Distribution,
    "GetDistribution": returns_pb2.Distribution,
    "PublishListEntry": blacklist_pb2.ListEntryRecord,
    "RemoveListEntry": blacklist_pb2.ListEntryRecord,
    "CheckList": blacklist_pb2.CheckListResult,
    "SyncList": blacklist_pb2.SyncListBody,
    "FileAppeal": appeal_pb2.Appeal,
    "DecideAppeal": appeal_pb2.Appeal,
    "GetAppeal": appeal_pb2.Appeal,
    "ListAppeals": appeal_pb2.AppealList,
    "ListAuditEntries": audit_pb2.AuditEntryPage,
    "GetLogCheckpoint": audit_pb2.SignedLogCheckpoint,
    "GetInclusionProof": audit_pb2.InclusionProof,
    "GetConsistencyProof": audit_pb2.ConsistencyProof,
    "SetCaseGrade": case_pb2.Case,
    **{
        rpc: lead_pb2.Lead
        for rpc in ("SubmitLead", "TriageLead", "AddLeadInformation", "SetLeadGrade", "GetLead")
    },
    "ListLeads": lead_pb2.LeadList,
    **{
        rpc: warning_pb2.Warning
        for rpc in (
            "SendWarning",
            "AcknowledgeWarning",
            "ReportWarningOutcome",
            "GetWarning",
            "SetWarningGrade",
        )
    },
    "ListWarnings": warning_pb2.WarningList,
}


# ---- message bodies -------------------------------------------------------------------------


def report_body(
    *credits: tuple[account_pb2.AccountRef, int],
    payer: account_pb2.AccountRef = VICTIM,
    now: datetime = T0,
) -> case_pb2.Report:
    pb = case_pb2.Report(
        victim=case_pb2.Victim(
            name=payer.holder_name, id_number="110101199001011234", phone="13800000000"
        ),
        fraud_type=case_pb2.FRAUD_TYPE_IMPERSONATING_OFFICIALS,
        description="caller posing as police asked for a 'safe account' transfer",
    )
    pb.victim_report_time.FromDatetime(now - timedelta(minutes=5))
    for i, (payee, amount) in enumerate(credits or ((MULE_B, 3_000_000),)):
        t = pb.transactions.add(
            amount_fen=amount,
            payer=payer,
            payee=payee,
            channel=case_pb2.PAYMENT_CHANNEL_MOBILE_BANKING,
            transaction_reference=f"TX-{i + 1}",
        )
        t.transaction_time.FromDatetime(now - timedelta(minutes=20 - i))
    return pb


def verification(
    case_id: str,
    outcome: case_pb2.VerificationOutcome.ValueType = case_pb2.VERIFICATION_OUTCOME_CONFIRMED,
    reason: str = "",
) -> case_pb2.Verification:
    return case_pb2.Verification(case_id=case_id, outcome=outcome, reason=reason)


def stop_body(
    case: case_pb2.Case, payee: account_pb2.AccountRef = MULE_B, amount: int | None = None
) -> order_pb2.OrderInstruction:
    """A stop for the credits the case's report names for `payee`."""
    credits = [
        t
        for t in case.report.transactions
        if (t.payee.institution_code, t.payee.account_number)
        == (payee.institution_code, payee.account_number)
    ]
    body = order_pb2.OrderInstruction(case_id=case.case_id, note="stop at once")
    body.stop.account.CopyFrom(payee)
    body.stop.amount_fen = sum(t.amount_fen for t in credits) if amount is None else amount
    for t in credits:
        fact = body.stop.transactions.add(amount_fen=t.amount_fen)
        fact.transaction_time.CopyFrom(t.transaction_time)
    return body


def freeze_body(
    case_id: str, amount: int, stop_order_id: str = "", payee: account_pb2.AccountRef = MULE_B
) -> order_pb2.OrderInstruction:
    return order_pb2.OrderInstruction(
        case_id=case_id,
        freeze=order_pb2.FreezeInstruction(
            account=payee,
            amount_fen=amount,
            filed_case_number="JZ-2026-0042",
            approving_authority="Chaoyang PSB",
            term_months=6,
            stop_order_id=stop_order_id,
        ),
    )


def release_body(case_id: str, target: str) -> order_pb2.OrderInstruction:
    return order_pb2.OrderInstruction(
        case_id=case_id,
        release=order_pb2.ReleaseInstruction(target_order_id=target, reason="unrelated funds"),
    )


def return_body(case_id: str, freeze_id: str, amount: int) -> order_pb2.OrderInstruction:
    return order_pb2.OrderInstruction(
        case_id=case_id,
        fund_return=order_pb2.ReturnInstruction(
            freeze_order_id=freeze_id, beneficiary=VICTIM, amount_fen=amount
        ),
    )


def execution(
    order_id: str,
    status: order_pb2.ExecutionStatus.ValueType = order_pb2.EXECUTION_STATUS_EXECUTED,
    *,
    held: int = 0,
    released: int = 0,
    returned: int = 0,
    code: str = "",
) -> order_pb2.ExecutionResult:
    return order_pb2.ExecutionResult(
        order_id=order_id,
        status=status,
        reason_code=code,
        reason="as instructed",
        amount_held_fen=held,
        available_balance_fen=0,
        amount_released_fen=released,
        amount_returned_fen=returned,
    )


def rule_body(enabled: bool = True, limit: int = 5_000_000) -> order_pb2.AutoStopRule:
    return order_pb2.AutoStopRule(rule_id="R-AUTO-1", enabled=enabled, max_amount_fen=limit)


# ---- the world: a hub with fakes and member institutions with real keys ---------------------


class World:
    def __init__(self) -> None:
        self.clock = ManualClock(T0)
        self.store = FakeStore()
        self.notifier = FakeNotifier(self.store)
        self.hub_key = PrivateKey.generate()
        self.hub = Hub(
            self.store, self.clock, self.hub_key, self.notifier, list_key=ListKey.generate()
        )
        self.registry = Registry(self.store, self.clock)
        self.registry.add_institution(
            HUB_CODE,
            "StopHub",
            InstitutionKind.HUB,
            [NewKey(self.hub_key.algorithm, self.hub_key.public_key)],
            [],
        )
        self.keys: dict[str, PrivateKey] = {}
        for code, kind in MEMBERS.items():
            key = PrivateKey.generate()
            self.keys[code] = key
            self.registry.add_institution(
                code,
                f"{code} display",
                kind,
                [NewKey(key.algorithm, key.public_key)],
                [
                    DutyContact(ContactRole.PRIMARY, f"{code} duty A", "13900000001"),
                    DutyContact(ContactRole.BACKUP, f"{code} duty B", "13900000002"),
                ],
            )
        self._ids = 0

    # ---- sending ------------------------------------------------------------------------------

    def seal(
        self,
        sender: str,
        body: Message,
        *,
        message_id: str | None = None,
        recipient: str = HUB_CODE,
        key: PrivateKey | None = None,
    ) -> envelope_pb2.Envelope:
        self._ids += 1
        return seal_message(
            key or self.keys[sender],
            sender=sender,
            recipient=recipient,
            message_id=message_id or f"{sender.lower()}-{self._ids:04d}",
            create_time=self.clock.now(),
            message=body,
        )

    def open(self, answer: envelope_pb2.Envelope, command: Command[Any], to: str) -> Message:
        """Check the hub signed an answer to `to`, and decode its body."""
        expected = ANSWER_TYPES[command.name]
        assert answer.sender == HUB_CODE
        assert answer.recipient == to
        assert answer.key_id == self.hub_key.key_id
        assert answer.body_type == expected.DESCRIPTOR.full_name
        assert verify_envelope(answer, self.hub_key.public_key)
        body = expected()
        body.ParseFromString(answer.body)
        return body

    def send(self, command: Command[Any], sender: str, body: Message) -> Message:
        envelope = self.seal(sender, body)
        return self.open(self.hub.handle(command, envelope), command, sender)

    def refuse(
        self,
        command: Command[Any],
        envelope: envelope_pb2.Envelope,
        error: type[DomainError],
        reason: str,
        field: str | None = None,
    ) -> DomainError:
        """The hub refuses `envelope`: nothing changes but one 'rejected' audit entry."""
        before = self.store.fingerprint()
        audit = len(self.store.audit)
        calls = len(self.notifier.calls)
        with pytest.raises(error) as caught:
            self.hub.handle(command, envelope)
        err = caught.value
        assert err.reason == reason
        if field is not None:
            assert err.field == field
        assert self.store.fingerprint() == before, "a refused message changed the hub's state"
        added = self.store.audit[audit:]
        assert [a.kind for a in added] == ["rejected"]
        assert added[0].payload == envelope.SerializeToString()
        assert added[0].message_id == envelope.message_id
        assert added[0].actor == envelope.sender
        assert reason in added[0].detail
        assert len(self.notifier.calls) == calls
        return err

    # ---- shortcuts ----------------------------------------------------------------------------

    def report(self, *credits: tuple[account_pb2.AccountRef, int], **kw: object) -> case_pb2.Case:
        sender = str(kw.pop("sender", "BANKA"))
        body = report_body(*credits, now=self.clock.now(), **kw)  # type: ignore[arg-type]
        case = self.send(CREATE_REPORT, sender, body)
        assert isinstance(case, case_pb2.Case)
        return case

    def verified(self, *credits: tuple[account_pb2.AccountRef, int]) -> case_pb2.Case:
        case = self.report(*credits)
        self.clock.advance(timedelta(minutes=1))
        verified = self.send(VERIFY_REPORT, "BANKA", verification(case.case_id))
        assert isinstance(verified, case_pb2.Case)
        return verified

    def order(self, body: order_pb2.OrderInstruction, sender: str = "AFC") -> order_pb2.Order:
        order = self.send(ISSUE_ORDER, sender, body)
        assert isinstance(order, order_pb2.Order)
        return order

    def answer(self, sender: str, body: order_pb2.ExecutionResult) -> order_pb2.Order:
        order = self.send(ANSWER_ORDER, sender, body)
        assert isinstance(order, order_pb2.Order)
        return order

    def get_case(self, case_id: str, sender: str = "AFC") -> case_pb2.Case:
        case = self.send(GET_CASE, sender, case_pb2.GetCaseBody(case_id=case_id))
        assert isinstance(case, case_pb2.Case)
        return case

    # ---- the outbox ---------------------------------------------------------------------------

    def notices(self, recipient: str) -> list[delivery_pb2.Notice]:
        return [self.notice(d) for d in self.store.deliveries_to(recipient)]

    def notice(self, delivery: Delivery) -> delivery_pb2.Notice:
        envelope = envelope_pb2.Envelope()
        envelope.ParseFromString(delivery.envelope)
        assert envelope.sender == HUB_CODE
        assert envelope.recipient == delivery.recipient
        assert envelope.body_type == "stophub.v1.Notice"
        assert verify_envelope(envelope, self.hub_key.public_key)
        notice = delivery_pb2.Notice()
        notice.ParseFromString(envelope.body)
        return notice

    def assert_outbox_signed(self) -> None:
        assert self.store.deliveries
        for delivery in self.store.deliveries:
            self.notice(delivery)


@pytest.fixture
def w() -> World:
    return World()


# ---- CreateReport ---------------------------------------------------------------------------


def test_a_report_opens_a_case_answered_by_the_hub_and_announced_to_the_centre(w: World) -> None:
    envelope = w.seal("BANKA", report_body((MULE_B, 3_000_000), (MULE_C, 2_000_000)))
    answer = w.hub.handle(CREATE_REPORT, envelope)
    case = w.open(answer, CREATE_REPORT, "BANKA")
    assert isinstance(case, case_pb2.Case)

    # The answer's id names the request, so it cannot pass for the answer to another.
    assert answer.message_id == f"re-BANKA-{envelope.message_id}"
    assert answer.create_time.ToDatetime(tzinfo=UTC) == T0
    assert case.state == case_pb2.CASE_STATE_REPORTED
    assert case.reporting_institution == "BANKA"
    assert case.report_message_id == envelope.message_id
    assert case.loss_fen == 5_000_000
    assert [t.payee.institution_code for t in case.report.transactions] == ["BANKB", "BANKC"]
    assert [e.kind for e in case.events] == ["report.received"]

    stored = w.store.case(case.case_id)
    assert stored.report_envelope == envelope.SerializeToString()
    assert ("BANKA", envelope.message_id) in w.store.inbound

    [notice] = w.notices("AFC")
    assert notice.kind == delivery_pb2.NOTICE_KIND_REPORT_RECEIVED
    assert notice.case_id == case.case_id
    assert notice.origin.SerializeToString() == envelope.SerializeToString()
    assert [d.recipient for d in w.store.deliveries] == ["AFC"]
    assert w.store.deliveries[0].kind == "report_received"
    assert w.store.deliveries[0].case_id == case.case_id

    assert w.notifier.calls == [frozenset({"AFC"})]
    assert w.notifier.committed_at_call == [{"AFC": 1}]

    received = [a for a in w.store.audit_of("received") if a.message_id == envelope.message_id]
    assert [(a.actor, a.payload, a.case_id) for a in received] == [
        ("BANKA", envelope.SerializeToString(), case.case_id)
    ]
    sent = [a.payload for a in w.store.audit_of("sent")]
    assert answer.SerializeToString() in sent
    assert w.store.deliveries[0].envelope in sent
    transitions = [a for a in w.store.audit_of("transition") if a.case_id == case.case_id]
    assert [a.detail.split(":")[0] for a in transitions] == ["report.received"]


def test_an_invalid_report_is_refused_naming_the_field(w: World) -> None:
    body = report_body()
    body.transactions[0].amount_fen = 0
    err = w.refuse(
        CREATE_REPORT,
        w.seal("BANKA", body),
        InvalidArgument,
        "INVALID_FIELD",
        "transactions[0].amount_fen",
    )
    assert err.code == "INVALID_ARGUMENT"
    body = report_body()
    body.transactions[0].ClearField("channel")
    w.refuse(
        CREATE_REPORT,
        w.seal("BANKA", body),
        InvalidArgument,
        "INVALID_FIELD",
        "transactions[0].channel",
    )
    body = report_body(payer=VICTIM_C)
    w.refuse(
        CREATE_REPORT,
        w.seal("BANKA", body),
        InvalidArgument,
        "INVALID_FIELD",
        "transactions[0].payer.institution_code",
    )
    assert w.store.cases == []
    assert w.store.deliveries == []


# ---- VerifyReport ---------------------------------------------------------------------------


def test_verification_confirms_the_case_and_tells_the_centre(w: World) -> None:
    case = w.report()
    w.clock.advance(timedelta(minutes=2))
    envelope = w.seal("BANKA", verification(case.case_id))
    verified = w.open(w.hub.handle(VERIFY_REPORT, envelope), VERIFY_REPORT, "BANKA")
    assert isinstance(verified, case_pb2.Case)
    assert verified.state == case_pb2.CASE_STATE_VERIFIED
    assert verified.verify_time.ToDatetime(tzinfo=UTC) == T0 + timedelta(minutes=2)
    assert [e.kind for e in verified.events] == ["report.received", "report.verified"]
    assert verified.orders == []  # no standing rule: the centre decides
    assert w.store.case(case.case_id).state.value == "verified"

    notices = w.notices("AFC")
    assert [n.kind for n in notices] == [
        delivery_pb2.NOTICE_KIND_REPORT_RECEIVED,
        delivery_pb2.NOTICE_KIND_REPORT_VERIFIED,
    ]
    assert notices[1].origin.SerializeToString() == envelope.SerializeToString()
    assert w.notifier.calls == [frozenset({"AFC"}), frozenset({"AFC"})]


def test_a_rejected_verification_ends_the_case(w: World) -> None:
    w.send(SET_AUTO_STOP_RULE, "AFC", rule_body())
    case = w.report()
    body = verification(case.case_id, case_pb2.VERIFICATION_OUTCOME_REJECTED, "own transfer")
    rejected = w.send(VERIFY_REPORT, "BANKA", body)
    assert isinstance(rejected, case_pb2.Case)
    assert rejected.state == case_pb2.CASE_STATE_REJECTED
    assert rejected.orders == []  # the standing rule stops only confirmed fraud
    assert w.store.deliveries_to("BANKB") == []
    w.refuse(ISSUE_ORDER, w.seal("AFC", stop_body(case)), FailedPrecondition, "CASE_ENDED")


def test_only_the_reporting_institution_verifies(w: World) -> None:
    case = w.report()
    w.refuse(
        VERIFY_REPORT,
        w.seal("BANKC", verification(case.case_id)),
        PermissionDenied,
        "NOT_REPORTING_INSTITUTION",
    )
    w.refuse(
        VERIFY_REPORT,
        w.seal("AFC", verification(case.case_id)),
        PermissionDenied,
        "KIND_NOT_ALLOWED",
    )
    w.refuse(
        VERIFY_REPORT,
        w.seal("BANKA", verification("C20260302-NOPE")),
        NotFound,
        "CASE_NOT_FOUND",
    )
    w.send(VERIFY_REPORT, "BANKA", verification(case.case_id))
    w.refuse(
        VERIFY_REPORT,
        w.seal("BANKA", verification(case.case_id)),
        FailedPrecondition,
        "ALREADY_VERIFIED",
    )


# ---- IssueOrder and AnswerOrder -------------------------------------------------------------


def test_a_centres_order_reaches_the_bank_with_the_centres_envelope_intact(w: World) -> None:
    case = w.verified()
    w.clock.advance(timedelta(minutes=1))
    envelope = w.seal("AFC", stop_body(case))
    order = w.open(w.hub.handle(ISSUE_ORDER, envelope), ISSUE_ORDER, "AFC")
    assert isinstance(order, order_pb2.Order)
    assert order.kind == order_pb2.ORDER_KIND_STOP
    assert order.state == order_pb2.ORDER_STATE_PENDING
    assert (order.addressed_to, order.issued_by, order.auto_stop_rule_id) == ("BANKB", "AFC", "")
    assert order.origin_message_id == envelope.message_id
    assert order.instruction.stop.amount_fen == 3_000_000
    assert order.instruction.note == "stop at once"

    stored = w.store.case(case.case_id).orders[0]
    assert stored.origin_envelope == envelope.SerializeToString()
    assert stored.authorization_envelope is None

    [notice] = w.notices("BANKB")
    assert notice.kind == delivery_pb2.NOTICE_KIND_ORDER
    assert notice.origin.SerializeToString() == envelope.SerializeToString()
    assert not notice.HasField("authorization")
    assert notice.order.order_id == order.order_id
    assert notice.order.instruction.stop.account == MULE_B
    assert w.store.deliveries_to("BANKB")[0].kind == "order"
    assert w.notifier.calls[-1] == frozenset({"BANKB"})
    assert w.notifier.committed_at_call[-1] == {"BANKB": 1}


def test_only_the_centre_issues_orders(w: World) -> None:
    case = w.verified()
    for sender in ("BANKA", "BANKB", "PAYX", "REG"):
        err = w.refuse(
            ISSUE_ORDER, w.seal(sender, stop_body(case)), PermissionDenied, "KIND_NOT_ALLOWED"
        )
        assert err.code == "PERMISSION_DENIED"
    w.refuse(CREATE_REPORT, w.seal("AFC", report_body()), PermissionDenied, "KIND_NOT_ALLOWED")
    assert w.store.case(case.case_id).orders == []


def test_a_refused_order_leaves_no_outbox_row(w: World) -> None:
    case = w.verified()
    deliveries = len(w.store.deliveries)
    w.refuse(
        ISSUE_ORDER,
        w.seal("AFC", stop_body(case, amount=3_000_001)),
        InvalidArgument,
        "INVALID_FIELD",
        "stop.amount_fen",
    )
    w.refuse(
        ISSUE_ORDER,
        w.seal("AFC", order_pb2.OrderInstruction(case_id=case.case_id)),
        InvalidArgument,
        "INVALID_FIELD",
        "instruction",
    )
    assert len(w.store.deliveries) == deliveries
    assert w.store.deliveries_to("BANKB") == []


def test_an_answer_holds_money_and_reaches_the_issuing_centre(w: World) -> None:
    case = w.verified()
    order = w.order(stop_body(case))
    w.clock.advance(timedelta(minutes=3))
    envelope = w.seal("BANKB", execution(order.order_id, held=3_000_000))
    answered = w.open(w.hub.handle(ANSWER_ORDER, envelope), ANSWER_ORDER, "BANKB")
    assert isinstance(answered, order_pb2.Order)
    assert answered.state == order_pb2.ORDER_STATE_HOLDING
    assert answered.held_fen == 3_000_000
    now = w.clock.now()
    assert answered.effective_time.ToDatetime(tzinfo=UTC) == now
    assert answered.expire_time.ToDatetime(tzinfo=UTC) == now + timedelta(hours=48)
    assert answered.result.status == order_pb2.EXECUTION_STATUS_EXECUTED

    stored = w.store.case(case.case_id).orders[0]
    assert stored.answer_envelope == envelope.SerializeToString()
    assert stored.answer_message_id == envelope.message_id

    notice = w.notices("AFC")[-1]
    assert notice.kind == delivery_pb2.NOTICE_KIND_ORDER_ANSWERED
    assert notice.origin.SerializeToString() == envelope.SerializeToString()
    assert notice.order.held_fen == 3_000_000
    assert w.notifier.calls[-1] == frozenset({"AFC"})
    assert w.get_case(case.case_id).held_fen == 3_000_000


def test_an_order_answered_by_another_bank_is_refused(w: World) -> None:
    case = w.verified()
    order = w.order(stop_body(case))
    w.refuse(
        ANSWER_ORDER,
        w.seal("BANKC", execution(order.order_id, held=3_000_000)),
        PermissionDenied,
        "NOT_ADDRESSEE",
    )
    w.refuse(
        ANSWER_ORDER,
        w.seal("AFC", execution(order.order_id, held=3_000_000)),
        PermissionDenied,
        "KIND_NOT_ALLOWED",
    )
    w.refuse(
        ANSWER_ORDER,
        w.seal("BANKB", execution("C20260302-XXXX-O001", held=3_000_000)),
        NotFound,
        "ORDER_NOT_FOUND",
    )
    w.refuse(
        ANSWER_ORDER,
        w.seal("BANKB", execution(order.order_id, held=3_000_001)),
        InvalidArgument,
        "INVALID_FIELD",
        "amount_held_fen",
    )
    assert w.store.case(case.case_id).orders[0].state is OrderState.PENDING


def test_a_released_pending_order_is_withdrawn_at_once_and_a_late_answer_refused(
    w: World,
) -> None:
    case = w.verified()
    stop = w.order(stop_body(case))
    envelope = w.seal("AFC", release_body(case.case_id, stop.order_id))
    release = w.open(w.hub.handle(ISSUE_ORDER, envelope), ISSUE_ORDER, "AFC")
    assert isinstance(release, order_pb2.Order)
    assert release.kind == order_pb2.ORDER_KIND_RELEASE

    notices = w.notices("BANKB")
    assert [(n.order.order_id, n.order.state) for n in notices] == [
        (stop.order_id, order_pb2.ORDER_STATE_PENDING),
        # The withdrawal goes out ahead of the release that caused it.
        (stop.order_id, order_pb2.ORDER_STATE_CANCELLED),
        (release.order_id, order_pb2.ORDER_STATE_PENDING),
    ]
    assert notices[1].origin.SerializeToString() == envelope.SerializeToString()

    err = w.refuse(
        ANSWER_ORDER,
        w.seal("BANKB", execution(stop.order_id, held=3_000_000)),
        FailedPrecondition,
        "ORDER_NOT_PENDING",
    )
    assert "withdrawn" in err.message
    done = w.answer("BANKB", execution(release.order_id, released=0))
    assert done.state == order_pb2.ORDER_STATE_COMPLETED


def test_a_case_from_report_to_closure(w: World) -> None:
    case = w.verified((MULE_B, 3_000_000), (MULE_C, 1_000_000))
    stop_b = w.order(stop_body(case, MULE_B))
    stop_c = w.order(stop_body(case, MULE_C))
    w.clock.advance(timedelta(minutes=2))
    w.answer("BANKB", execution(stop_b.order_id, held=3_000_000))
    w.answer(
        "BANKC",
        execution(
            stop_c.order_id,
            order_pb2.EXECUTION_STATUS_PARTIALLY_EXECUTED,
            held=400_000,
            code="am04",
        ),
    )
    assert w.get_case(case.case_id).held_fen == 3_400_000

    w.clock.advance(timedelta(hours=20))
    freeze = w.order(freeze_body(case.case_id, 3_000_000, stop_b.order_id))
    frozen = w.answer("BANKB", execution(freeze.order_id, held=3_000_000))
    assert frozen.state == order_pb2.ORDER_STATE_HOLDING
    now = w.clock.now()
    assert frozen.expire_time.ToDatetime(tzinfo=UTC) == now.replace(month=now.month + 6)
    release = w.order(release_body(case.case_id, stop_c.order_id))
    assert release.instruction.release.target_order_id == stop_c.order_id
    w.answer("BANKC", execution(release.order_id, released=400_000))

    middle = w.get_case(case.case_id)
    states = {o.order_id: o.state for o in middle.orders}
    assert states[stop_b.order_id] == order_pb2.ORDER_STATE_CONVERTED
    assert states[stop_c.order_id] == order_pb2.ORDER_STATE_RELEASED
    assert middle.state == case_pb2.CASE_STATE_VERIFIED
    assert (middle.held_fen, middle.released_fen) == (3_000_000, 400_000)

    w.clock.advance(timedelta(days=30))
    ret = w.order(return_body(case.case_id, freeze.order_id, 3_000_000))
    assert ret.addressed_to == "BANKB"
    w.refuse(
        ISSUE_ORDER,
        w.seal("AFC", return_body(case.case_id, freeze.order_id, 1)),
        InvalidArgument,
        "INVALID_FIELD",
        "fund_return.amount_fen",
    )
    calls = len(w.notifier.calls)
    w.answer("BANKB", execution(ret.order_id, returned=3_000_000))

    closed = w.get_case(case.case_id, "REG")
    assert closed.state == case_pb2.CASE_STATE_CLOSED
    assert closed.close_time.ToDatetime(tzinfo=UTC) == w.clock.now()
    assert (closed.loss_fen, closed.held_fen, closed.returned_fen, closed.released_fen) == (
        4_000_000,
        0,
        3_000_000,
        400_000,
    )
    assert closed.events[-1].kind == "case.closed"
    assert [e.sequence for e in closed.events] == list(range(1, len(closed.events) + 1))
    for recipient in ("BANKA", "AFC"):
        last = w.notices(recipient)[-1]
        assert last.kind == delivery_pb2.NOTICE_KIND_CASE_CLOSED
        assert last.case_id == case.case_id
    assert w.notifier.calls[calls:] == [frozenset({"AFC", "BANKA"})]
    w.assert_outbox_signed()
    w.refuse(
        ISSUE_ORDER,
        w.seal("AFC", stop_body(case, MULE_C)),
        FailedPrecondition,
        "CASE_ENDED",
    )


def test_a_stop_that_found_nothing_lapses_with_its_case_and_its_clocks_end(w: World) -> None:
    w.hub.clock_policy = load_policy()  # the shipped clocks: a holding stop starts two
    case = w.verified((MULE_B, 3_000_000), (MULE_C, 1_000_000))
    stop_b = w.order(stop_body(case, MULE_B))
    empty = w.order(stop_body(case, MULE_C))
    w.clock.advance(timedelta(minutes=2))
    w.answer("BANKB", execution(stop_b.order_id, held=3_000_000))
    w.answer(
        "BANKC",
        execution(empty.order_id, order_pb2.EXECUTION_STATUS_PARTIALLY_EXECUTED, code="am04"),
    )

    def open_clocks(order_id: str) -> set[str]:
        return {
            c.kind
            for c in w.store.state.clocks.values()
            if c.order_id == order_id and c.state is ClockState.OPEN
        }

    assert open_clocks(empty.order_id) == {"investigate", "stop_validity"}
    w.clock.advance(timedelta(hours=2))
    release = w.order(release_body(case.case_id, stop_b.order_id))
    calls = len(w.notifier.calls)
    w.answer("BANKB", execution(release.order_id, released=3_000_000))

    closed = w.get_case(case.case_id, "REG")
    assert closed.state == case_pb2.CASE_STATE_CLOSED
    [lapsed] = [o for o in closed.orders if o.order_id == empty.order_id]
    assert lapsed.state == order_pb2.ORDER_STATE_EXPIRED
    assert [e.kind for e in closed.events[-2:]] == ["case.closed", "order.expired"]
    # BANKC lifts its stop now, and nothing is left to remind the centre of, nor to lapse.
    assert open_clocks(empty.order_id) == set()
    for recipient in ("BANKC", "AFC"):
        [told] = [
            n for n in w.notices(recipient) if n.kind == delivery_pb2.NOTICE_KIND_ORDER_EXPIRED
        ]
        assert told.order.order_id == empty.order_id
        assert told.order.state == order_pb2.ORDER_STATE_EXPIRED
        # It ends now, not 48 hours after BANKC's answer: a bank checks expire_time.
        assert told.order.expire_time.ToDatetime(tzinfo=UTC) == w.clock.now()
        assert "case closed with nothing held" in told.summary
        assert not told.HasField("origin")  # no signer caused it, as a lapse in time
    assert w.notifier.calls[calls:] == [frozenset({"AFC", "BANKA", "BANKC"})]
    w.assert_outbox_signed()


# ---- the standing auto-stop rule ------------------------------------------------------------


def test_a_centre_sets_its_standing_rule_signed(w: World) -> None:
    envelope = w.seal("AFC", rule_body(limit=2_000_000))
    stored = w.open(w.hub.handle(SET_AUTO_STOP_RULE, envelope), SET_AUTO_STOP_RULE, "AFC")
    assert isinstance(stored, order_pb2.AutoStopRule)
    assert (stored.rule_id, stored.enabled, stored.max_amount_fen, stored.centre_code) == (
        "R-AUTO-1",
        True,
        2_000_000,
        "AFC",
    )
    assert stored.update_time.ToDatetime(tzinfo=UTC) == T0
    rule = w.store.state.rules["AFC"]
    assert rule.envelope == envelope.SerializeToString()
    assert rule.message_id == envelope.message_id
    assert any("R-AUTO-1" in a.detail for a in w.store.audit_of("transition"))

    w.refuse(SET_AUTO_STOP_RULE, w.seal("BANKA", rule_body()), PermissionDenied, "KIND_NOT_ALLOWED")
    w.refuse(
        SET_AUTO_STOP_RULE,
        w.seal("AFC", rule_body(limit=0)),
        InvalidArgument,
        "INVALID_FIELD",
        "max_amount_fen",
    )
    assert w.store.state.rules["AFC"].max_amount_fen == 2_000_000


def test_after_verification_the_hub_stops_in_the_centres_name_under_its_rule(w: World) -> None:
    rule_envelope = w.seal("AFC", rule_body(limit=3_000_000))
    w.hub.handle(SET_AUTO_STOP_RULE, rule_envelope)
    case = w.report((MULE_B, 1_000_000), (MULE_C, 3_000_001), (MULE_B, 2_000_000))
    w.clock.advance(timedelta(minutes=1))
    verify_envelope_ = w.seal("BANKA", verification(case.case_id))
    verified = w.open(w.hub.handle(VERIFY_REPORT, verify_envelope_), VERIFY_REPORT, "BANKA")
    assert isinstance(verified, case_pb2.Case)

    [order] = verified.orders  # BANKC's loss is above the limit: left to the centre
    assert order.kind == order_pb2.ORDER_KIND_STOP
    assert (order.issued_by, order.addressed_to, order.auto_stop_rule_id) == (
        "AFC",
        "BANKB",
        "R-AUTO-1",
    )
    assert order.instruction.stop.amount_fen == 3_000_000
    assert len(order.instruction.stop.transactions) == 2
    assert order.origin_message_id == verify_envelope_.message_id

    stored = w.store.case(case.case_id).orders[0]
    assert stored.auto_stop_rule_id == "R-AUTO-1"
    assert stored.authorization_envelope == rule_envelope.SerializeToString()
    assert stored.origin_envelope is None

    [notice] = w.notices("BANKB")
    assert notice.kind == delivery_pb2.NOTICE_KIND_ORDER
    assert notice.authorization.SerializeToString() == rule_envelope.SerializeToString()
    assert verify_envelope(notice.authorization, w.keys["AFC"].public_key)
    assert notice.origin.SerializeToString() == verify_envelope_.SerializeToString()
    assert notice.order.auto_stop_rule_id == "R-AUTO-1"
    assert w.store.deliveries_to("BANKC") == []

    kinds = [(e.kind, e.actor) for e in verified.events]
    assert ("order.issued", HUB_CODE) in kinds
    assert ("auto_stop.skipped", HUB_CODE) in kinds
    skipped = [e.summary for e in verified.events if e.kind == "auto_stop.skipped"]
    assert len(skipped) == 1 and "BANKC" in skipped[0]
    audited = {a.detail.split(":")[0] for a in w.store.audit_of("transition") if a.case_id}
    assert {"order.issued", "auto_stop.skipped", "report.verified"} <= audited
    assert w.notifier.calls[-1] == frozenset({"AFC", "BANKB"})
    w.assert_outbox_signed()

    answered = w.answer("BANKB", execution(order.order_id, held=3_000_000))
    assert answered.state == order_pb2.ORDER_STATE_HOLDING
    assert w.notices("AFC")[-1].kind == delivery_pb2.NOTICE_KIND_ORDER_ANSWERED
    # The centre may still stop BANKC's account itself.
    by_hand = w.order(stop_body(case, MULE_C))
    assert by_hand.auto_stop_rule_id == ""


def test_a_disabled_rule_issues_nothing(w: World) -> None:
    w.send(SET_AUTO_STOP_RULE, "AFC", rule_body())
    w.send(SET_AUTO_STOP_RULE, "AFC", rule_body(enabled=False))
    case = w.verified()
    assert case.orders == []
    assert w.store.deliveries_to("BANKB") == []


# ---- idempotency ----------------------------------------------------------------------------


@pytest.mark.parametrize("step", ["report", "order"])
def test_a_resend_gets_the_original_answer_byte_for_byte_and_changes_nothing(
    w: World, step: str
) -> None:
    command: Command[Any]
    if step == "report":
        command, envelope = CREATE_REPORT, w.seal("BANKA", report_body())
    else:
        case = w.verified()
        command, envelope = ISSUE_ORDER, w.seal("AFC", stop_body(case))
    first = w.hub.handle(command, envelope).SerializeToString()
    before = w.store.fingerprint()
    audit, calls, commits = len(w.store.audit), len(w.notifier.calls), w.store.commits

    w.clock.advance(timedelta(minutes=4))  # inside the replay window
    resent = envelope_pb2.Envelope()
    resent.ParseFromString(envelope.SerializeToString())
    again = w.hub.handle(command, resent)

    assert again.SerializeToString() == first
    assert w.store.fingerprint() == before
    assert (len(w.store.audit), len(w.notifier.calls), w.store.commits) == (
        audit,
        calls,
        commits,
    )


def test_a_resend_signed_again_with_ecdsa_is_still_a_resend(w: World) -> None:
    key = PrivateKey.generate(ECDSA_P256)
    w.registry.add_key("BANKA", NewKey(key.algorithm, key.public_key))
    body = report_body()
    envelope = w.seal("BANKA", body, key=key, message_id="r-1")
    first = w.hub.handle(CREATE_REPORT, envelope)
    again = w.seal("BANKA", body, key=key, message_id="r-1")
    assert again.signature != envelope.signature  # ECDSA signatures are randomised
    assert w.hub.handle(CREATE_REPORT, again).SerializeToString() == first.SerializeToString()
    assert len(w.store.cases) == 1


def test_the_same_message_id_with_other_bytes_is_refused(w: World) -> None:
    w.hub.handle(CREATE_REPORT, w.seal("BANKA", report_body(), message_id="r-1"))
    changed = w.seal("BANKA", report_body((MULE_B, 3_000_001)), message_id="r-1")
    err = w.refuse(CREATE_REPORT, changed, AlreadyExists, "MESSAGE_ID_REUSED")
    assert err.code == "ALREADY_EXISTS"
    assert len(w.store.cases) == 1
    w.clock.advance(timedelta(seconds=1))  # the same body, another create_time: other bytes
    w.refuse(
        CREATE_REPORT,
        w.seal("BANKA", report_body(now=T0), message_id="r-1"),
        AlreadyExists,
        "MESSAGE_ID_REUSED",
    )


def test_message_ids_are_unique_per_sender_only(w: World) -> None:
    w.hub.handle(CREATE_REPORT, w.seal("BANKA", report_body(), message_id="m-1"))
    w.hub.handle(CREATE_REPORT, w.seal("BANKC", report_body(payer=VICTIM_C), message_id="m-1"))
    assert sorted(c.reporting_institution for c in w.store.cases) == ["BANKA", "BANKC"]


def test_a_concurrent_twin_that_commits_first_makes_the_second_a_resend(w: World) -> None:
    envelope = w.seal("BANKA", report_body())
    twin: list[envelope_pb2.Envelope] = []
    w.store.before_commit = lambda: twin.append(w.hub.handle(CREATE_REPORT, envelope))

    answer = w.hub.handle(CREATE_REPORT, envelope)

    assert len(twin) == 1
    assert answer.SerializeToString() == twin[0].SerializeToString()
    assert len(w.store.cases) == 1
    assert len(w.store.deliveries) == 1
    assert w.notifier.calls == [frozenset({"AFC"})]


def test_a_commit_that_fails_twice_leaves_nothing_and_notifies_no_one(w: World) -> None:
    before = w.store.fingerprint()
    audit = len(w.store.audit)
    w.store.fail_commits = 2
    with pytest.raises(Conflict):
        w.hub.handle(CREATE_REPORT, w.seal("BANKA", report_body()))
    assert w.store.fingerprint() == before
    assert len(w.store.audit) == audit
    assert w.store.deliveries == []
    assert w.notifier.calls == []

    w.store.fail_commits = 1  # one failure is retried
    w.hub.handle(CREATE_REPORT, w.seal("BANKA", report_body()))
    assert len(w.store.cases) == 1
    assert w.notifier.calls == [frozenset({"AFC"})]


# ---- authentication and envelope checks -----------------------------------------------------


@pytest.mark.parametrize(
    "field",
    ["sender", "message_id", "key_id", "algorithm", "body_type", "signature", "create_time"],
)
def test_an_incomplete_envelope_is_unauthenticated(w: World, field: str) -> None:
    envelope = w.seal("BANKA", report_body())
    envelope.ClearField(field)
    err = w.refuse(CREATE_REPORT, envelope, Unauthenticated, "ENVELOPE_INCOMPLETE")
    assert field in err.message
    assert err.code == "UNAUTHENTICATED"


def test_an_unknown_sender_is_unauthenticated(w: World) -> None:
    stranger = PrivateKey.generate()
    w.refuse(
        CREATE_REPORT,
        w.seal("NOBANK", report_body(), key=stranger),
        Unauthenticated,
        "UNKNOWN_SENDER",
    )


def test_nobody_speaks_as_the_hub(w: World) -> None:
    w.refuse(
        CREATE_REPORT,
        w.seal(HUB_CODE, report_body(), key=w.hub_key),
        Unauthenticated,
        "UNKNOWN_SENDER",
    )


def test_an_unregistered_key_is_unauthenticated(w: World) -> None:
    w.refuse(
        CREATE_REPORT,
        w.seal("BANKA", report_body(), key=PrivateKey.generate()),
        Unauthenticated,
        "UNKNOWN_KEY",
    )
    # Another member's key is not this member's key either.
    w.refuse(
        CREATE_REPORT,
        w.seal("BANKA", report_body(), key=w.keys["BANKC"]),
        Unauthenticated,
        "UNKNOWN_KEY",
    )


def test_a_revoked_key_is_unauthenticated(w: World) -> None:
    w.registry.revoke_key("BANKA", w.keys["BANKA"].key_id)
    err = w.refuse(CREATE_REPORT, w.seal("BANKA", report_body()), Unauthenticated, "KEY_REVOKED")
    assert w.keys["BANKA"].key_id in err.message


def test_a_key_is_used_with_its_own_algorithm(w: World) -> None:
    envelope = w.seal("BANKA", report_body())
    envelope.algorithm = ECDSA_P256
    w.refuse(CREATE_REPORT, envelope, Unauthenticated, "ALGORITHM_MISMATCH")


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda env: setattr(env, "body", env.body + b"\x00"), id="body"),
        pytest.param(lambda env: setattr(env, "message_id", env.message_id + "x"), id="id"),
        pytest.param(
            lambda env: setattr(env.create_time, "seconds", env.create_time.seconds + 1),
            id="time",
        ),
        pytest.param(
            lambda env: setattr(
                env, "signature", bytes([env.signature[0] ^ 1]) + env.signature[1:]
            ),
            id="signature",
        ),
        pytest.param(lambda env: setattr(env, "signature", b"\x01" * 10), id="short-signature"),
        pytest.param(lambda env: setattr(env.create_time, "nanos", 1_000_000_000), id="nanos"),
    ],
)
def test_a_bad_signature_is_unauthenticated(
    w: World, tamper: Callable[[envelope_pb2.Envelope], None]
) -> None:
    envelope = w.seal("BANKA", report_body())
    tamper(envelope)
    w.refuse(CREATE_REPORT, envelope, Unauthenticated, "BAD_SIGNATURE")


def test_a_request_is_addressed_to_the_hub(w: World) -> None:
    w.refuse(
        CREATE_REPORT,
        w.seal("BANKA", report_body(), recipient="AFC"),
        InvalidArgument,
        "INVALID_FIELD",
        "recipient",
    )


def test_the_body_type_must_be_the_commands(w: World) -> None:
    case = w.report()
    err = w.refuse(
        CREATE_REPORT,
        w.seal("BANKA", verification(case.case_id)),
        InvalidArgument,
        "INVALID_FIELD",
        "body_type",
    )
    assert "stophub.v1.Report" in err.message
    garbage = seal(
        w.keys["BANKA"],
        sender="BANKA",
        recipient=HUB_CODE,
        message_id="garbage-1",
        create_time=w.clock.now(),
        body_type="stophub.v1.Report",
        body=b"\xff\xff\xff",
    )
    w.refuse(CREATE_REPORT, garbage, InvalidArgument, "INVALID_FIELD", "body")


# ---- GetCase and ListCases ------------------------------------------------------------------


def test_a_case_is_seen_by_its_parties_the_centre_and_the_regulator(w: World) -> None:
    case = w.verified()
    w.order(stop_body(case))
    commits = w.store.commits
    for sender in ("BANKA", "BANKB", "AFC", "REG"):
        seen = w.get_case(case.case_id, sender)
        assert seen.case_id == case.case_id
        assert len(seen.orders) == 1
        assert seen.events  # GetCase carries the timeline
    assert w.store.commits == commits  # reading writes nothing
    for sender in ("BANKC", "BANKD", "PAYX"):
        w.refuse(
            GET_CASE,
            w.seal(sender, case_pb2.GetCaseBody(case_id=case.case_id)),
            PermissionDenied,
            "NOT_PARTY_TO_CASE",
        )
    w.refuse(
        GET_CASE,
        w.seal("AFC", case_pb2.GetCaseBody(case_id="C20260302-NOPE")),
        NotFound,
        "CASE_NOT_FOUND",
    )


def _list(w: World, sender: str, **kw: object) -> case_pb2.CaseList:
    found = w.send(LIST_CASES, sender, case_pb2.ListCasesBody(**kw))  # type: ignore[arg-type]
    assert isinstance(found, case_pb2.CaseList)
    return found


def _all_pages(w: World, sender: str, page_size: int, **kw: object) -> list[list[str]]:
    pages: list[list[str]] = []
    token = ""
    while True:
        page = _list(w, sender, page_size=page_size, page_token=token, **kw)
        pages.append([c.case_id for c in page.cases])
        token = page.next_page_token
        if not token:
            return pages
        assert len(pages) < 20, "paging does not end"


def test_list_cases_pages_newest_first(w: World) -> None:
    created: list[tuple[datetime, str]] = []
    for i, (sender, payer) in enumerate(
        [
            ("BANKA", VICTIM),
            ("BANKC", VICTIM_C),
            ("BANKA", VICTIM),
            ("PAYX", VICTIM_P),
            ("BANKA", VICTIM),
            ("BANKC", VICTIM_C),
            ("BANKA", VICTIM),
        ]
    ):
        if i % 3 != 2:  # some cases share a creation time: the case id breaks the tie
            w.clock.advance(timedelta(minutes=1))
        case = w.report(sender=sender, payer=payer)
        created.append((w.clock.now(), case.case_id))
    newest_first = [case_id for _, case_id in sorted(created, reverse=True)]

    pages = _all_pages(w, "AFC", 3)
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [c for p in pages for c in p] == newest_first
    assert [c for p in _all_pages(w, "REG", 2) for c in p] == newest_first
    everything = _list(w, "AFC", page_size=7)
    assert len(everything.cases) == 7
    assert everything.next_page_token == ""
    assert all(len(c.events) == 0 for c in everything.cases)  # lists come without events
    assert len(_list(w, "AFC").cases) == 7  # page_size 0: the default


def test_a_bank_lists_only_its_own_reports(w: World) -> None:
    mine = {w.report().case_id for _ in range(3)}
    w.report(sender="BANKC", payer=VICTIM_C)
    pages = _all_pages(w, "BANKA", 2)
    assert [len(p) for p in pages] == [2, 1]
    assert {c for p in pages for c in p} == mine
    assert _list(w, "BANKB").cases == []


def test_list_cases_filters_by_state(w: World) -> None:
    w.report()
    verified = w.verified()
    found = _list(w, "AFC", state=case_pb2.CASE_STATE_VERIFIED)
    assert [c.case_id for c in found.cases] == [verified.case_id]
    assert len(_list(w, "AFC", state=case_pb2.CASE_STATE_REPORTED).cases) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (case_pb2.ListCasesBody(page_size=-1), "page_size"),
        (case_pb2.ListCasesBody(page_token="not a token"), "page_token"),
        (
            case_pb2.ListCasesBody(page_token=base64.urlsafe_b64encode(b'{"a": 1}').decode()),
            "page_token",
        ),
        (
            case_pb2.ListCasesBody(page_token=base64.urlsafe_b64encode(b'["x", "y"]').decode()),
            "page_token",
        ),
        (case_pb2.ListCasesBody(state=99), "state"),  # type: ignore[arg-type]
    ],
)
def test_a_bad_list_request_is_refused_naming_the_field(
    w: World, body: case_pb2.ListCasesBody, field: str
) -> None:
    w.report()
    w.refuse(LIST_CASES, w.seal("AFC", body), InvalidArgument, "INVALID_FIELD", field)


# ---- the delivery stream's signed messages --------------------------------------------------


def test_deliveries_are_acknowledged_by_their_recipient_only(w: World) -> None:
    w.report()
    [pending] = w.hub.pending("AFC")
    assert pending.recipient == "AFC"
    code, name = open_stream(
        w.hub, w.seal("AFC", delivery_pb2.SubscribeBody(connection_name="primary"))
    )
    assert (code, name) == ("AFC", "primary")

    [refused] = acknowledge_many(
        w.hub,
        [Ack("AFC", w.seal("BANKB", delivery_pb2.AckBody(sequences=[pending.sequence])), None)],
    )
    assert isinstance(refused, PermissionDenied)
    assert refused.reason == "STREAM_OWNER"
    assert w.store.audit[-1].kind == "rejected"
    assert len(w.hub.pending("AFC")) == 1

    [acked] = acknowledge_many(
        w.hub,
        [Ack("AFC", w.seal("AFC", delivery_pb2.AckBody(sequences=[pending.sequence] * 2)), None)],
    )
    assert acked == [pending.sequence]
    assert w.hub.pending("AFC") == []
    assert ACK.body is delivery_pb2.AckBody


# ---- the fakes and the registry the tests stand on ------------------------------------------


def test_the_fake_store_shows_changes_to_later_units_of_work_only_after_commit(w: World) -> None:
    inst = w.store.state.institutions["BANKD"]
    with w.store() as uow:
        uow.rules.put(dataclasses.replace(w_rule(), rule_id="R-0"))  # never committed
        assert uow.rules.get("AFC") is not None
    with w.store() as uow:
        assert uow.rules.get("AFC") is None
        uow.rules.put(w_rule())
        uow.rollback()
        assert uow.rules.get("AFC") is None
        uow.rules.put(w_rule())
        uow.commit()
    with w.store(read_only=True) as uow:
        stored = uow.rules.get("AFC")
        assert stored is not None
        stored.max_amount_fen = 1  # a change in a unit of work that is not committed
        with pytest.raises(AssertionError):
            uow.commit()
        fetched = uow.institutions.get("BANKD")
        assert fetched is not None and fetched is not inst  # each unit of work has a copy
    assert w.store.state.rules["AFC"].max_amount_fen == 5_000_000


def w_rule() -> AutoStopRule:
    return AutoStopRule("AFC", "R-1", True, 5_000_000, T0, "m-1", b"env")


def test_the_registry_refuses_duplicates_and_unknown_algorithms_and_audits_changes(
    w: World,
) -> None:
    key = PrivateKey.generate()
    contacts = [
        DutyContact(ContactRole.PRIMARY, "A", "1"),
        DutyContact(ContactRole.BACKUP, "B", "2"),
    ]
    with pytest.raises(AlreadyExists) as err:
        w.registry.add_institution(
            "BANKA",
            "again",
            InstitutionKind.BANK,
            [NewKey(key.algorithm, key.public_key)],
            contacts,
        )
    assert err.value.reason == "INSTITUTION_EXISTS"
    with pytest.raises(InvalidArgument) as err2:
        w.registry.add_institution("HUB2", "fake hub", InstitutionKind.HUB, [], [])
    assert err2.value.field == "code"
    with pytest.raises(InvalidArgument) as err3:
        w.registry.add_key("BANKA", NewKey("rsa-pss", key.public_key))
    assert err3.value.field == "algorithm"
    with pytest.raises(NotFound) as err4:
        w.registry.add_key("NOBANK", NewKey(key.algorithm, key.public_key))
    assert err4.value.reason == "INSTITUTION_NOT_FOUND"

    key_id = w.registry.add_key("BANKA", NewKey(key.algorithm, key.public_key))
    assert key_id == key.key_id
    assert [k.key_id for k in w.registry.get("BANKA").active_keys()] == [
        w.keys["BANKA"].key_id,
        key.key_id,
    ]
    assert len(w.registry.list()) == len(MEMBERS) + 1
    admin = [a.detail for a in w.store.audit_of("admin")]
    assert len(admin) == len(MEMBERS) + 2
    assert admin[-1] == f"added key {key_id} to BANKA"
    # The new key signs for BANKA at once.
    case = w.open(
        w.hub.handle(CREATE_REPORT, w.seal("BANKA", report_body(), key=key)),
        CREATE_REPORT,
        "BANKA",
    )
    assert isinstance(case, case_pb2.Case)


# ---- work done once per request ---------------------------------------------------------------


def test_each_request_checks_its_signature_once_and_reads_the_registry_once(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hub.service.gate as gate

    checked: list[str] = []
    original = gate.verify_envelope

    def counting(envelope: envelope_pb2.Envelope, key: bytes) -> bool:
        checked.append(envelope.message_id)
        return original(envelope, key)

    monkeypatch.setattr(gate, "verify_envelope", counting)
    w.store.state.registry_version = 7  # the fake keeps a version: the hub may cache
    envelopes = [w.seal("BANKA", report_body()) for _ in range(3)]
    for envelope in envelopes:
        w.hub.handle(CREATE_REPORT, envelope)
    assert checked == [e.message_id for e in envelopes]
    assert w.hub.members.loads == 1

    # The registry moved (a key was added) after the early check: checked again, with the
    # registry the transaction reads, and only then.
    checked.clear()
    envelope = w.seal("BANKA", report_body())
    w.store.state.registry_version = 8
    w.hub.handle(CREATE_REPORT, envelope)
    assert checked == [envelope.message_id, envelope.message_id]
    assert w.hub.members.loads == 2


# ---- TriageLead warn_member (docs/leads.md, "Accepting by a warning") ------------------------


def _lead(w: World) -> lead_pb2.Lead:
    """BANKA's red lead naming MULE_B and a transfer from its customer to a PAYX account."""
    body = lead_pb2.SubmitLeadBody(
        accounts=[MULE_B], grade=grade_pb2.GRADE_RED, grounds="in fast, out faster"
    )
    t = body.transactions.add(amount_fen=90_000, from_account=VICTIM, to_account=VICTIM_P)
    t.transaction_time.FromDatetime(w.clock.now() - timedelta(minutes=5))
    lead = w.send(SUBMIT_LEAD, "BANKA", body)
    assert isinstance(lead, lead_pb2.Lead)
    return lead


def _warn(name: str, **fields: Any) -> lead_pb2.TriageLeadBody:
    return lead_pb2.TriageLeadBody(name=name, warn_member=lead_pb2.WarnFromLead(**fields))


def test_a_lead_accepted_by_a_warning_warns_the_member_in_the_same_step(w: World) -> None:
    w.hub.clock_policy = load_policy()  # the shipped clocks: the warning's must start
    lead = _lead(w)
    w.clock.advance(timedelta(minutes=2))
    # The account a transfer of the lead went to, holder left for the lead to give.
    target = account("PAYX", VICTIM_P.account_number, "")
    envelope = w.seal(
        "AFC", _warn(lead.name, account=target, amount_at_risk_fen=80_000, note="call her")
    )
    answer = w.open(w.hub.handle(TRIAGE_LEAD, envelope), TRIAGE_LEAD, "AFC")
    assert isinstance(answer, lead_pb2.Lead)
    assert answer.state == lead_pb2.LEAD_STATE_ACCEPTED
    assert answer.outcome == lead_pb2.LEAD_OUTCOME_WARNED and answer.warning_id

    stored = w.store.state.warnings[answer.warning_id]
    assert (stored.sender, stored.addressee, stored.lead_id) == ("AFC", "PAYX", lead.name)
    assert stored.holder_name == "Zhou Jiu" and stored.text == "call her"
    assert stored.grade is WarningGrade.RED  # the lead's
    assert stored.message_id == envelope.message_id
    assert stored.contact_by == w.clock.now() + timedelta(minutes=10)
    assert {c.kind for c in w.store.state.clocks.values() if c.case_id == stored.warning_id} == {
        "warning_contact_red",
        "warning_outcome",
    }
    [warned] = [n for n in w.notices("PAYX") if n.kind == delivery_pb2.NOTICE_KIND_WARNING]
    assert warned.warning.lead_id == lead.name
    assert warned.origin.SerializeToString() == envelope.SerializeToString()
    [told] = [n for n in w.notices("BANKA") if n.kind == delivery_pb2.NOTICE_KIND_LEAD_TRIAGED]
    assert told.lead.warning_id == answer.warning_id and "sent to PAYX" in told.summary
    read = w.send(GET_WARNING, "PAYX", warning_pb2.GetWarningBody(warning_id=answer.warning_id))
    assert isinstance(read, warning_pb2.Warning) and read.lead_id == lead.name
    # The lead's submitter is not a party to the warning.
    w.refuse(
        GET_WARNING,
        w.seal("BANKA", warning_pb2.GetWarningBody(warning_id=answer.warning_id)),
        NotFound,
        "WARNING_NOT_FOUND",
    )


@pytest.mark.parametrize(
    ("sender", "fields", "error", "reason", "field"),
    [
        ("AFC", {"amount_at_risk_fen": 5}, InvalidArgument, "INVALID_FIELD", "warn_member.account"),
        (
            "AFC",
            {"account": MULE_C, "amount_at_risk_fen": 5},
            InvalidArgument,
            "NOT_IN_LEAD",
            "warn_member.account",
        ),
        (
            "AFC",
            {"account": MULE_B},
            InvalidArgument,
            "INVALID_FIELD",
            "warn_member.amount_at_risk_fen",
        ),
        (
            "AFC",
            {"account": MULE_B, "amount_at_risk_fen": 10**14 + 1},
            InvalidArgument,
            "INVALID_FIELD",
            "warn_member.amount_at_risk_fen",
        ),
        (
            "AFC",
            {"account": MULE_B, "amount_at_risk_fen": 5, "note": "x" * 4001},
            InvalidArgument,
            "INVALID_FIELD",
            "warn_member.note",
        ),
        (
            "AFC",
            {"account": MULE_B, "amount_at_risk_fen": 5, "fraud_type": 99},
            InvalidArgument,
            "INVALID_FIELD",
            "warn_member.fraud_type",
        ),
        (
            "AFC",
            {
                "account": MULE_B,
                "amount_at_risk_fen": 5,
                "counterparty": account("BANKC", "no spaces allowed", ""),
            },
            InvalidArgument,
            "INVALID_FIELD",
            "warn_member.counterparty.account_number",
        ),
        # A member holding its own certificate cannot triage, warn, or accept a lead.
        (
            "BANKB",
            {"account": MULE_B, "amount_at_risk_fen": 5},
            PermissionDenied,
            "KIND_NOT_ALLOWED",
            None,
        ),
    ],
)
def test_a_refused_warning_from_a_lead_leaves_the_lead_untriaged(
    w: World,
    sender: str,
    fields: dict[str, Any],
    error: type[DomainError],
    reason: str,
    field: str | None,
) -> None:
    lead = _lead(w)
    w.refuse(TRIAGE_LEAD, w.seal(sender, _warn(lead.name, **fields)), error, reason, field)
    assert not w.store.state.warnings
    again = w.send(GET_LEAD, "BANKA", lead_pb2.GetLeadBody(name=lead.name))
    assert isinstance(again, lead_pb2.Lead)
    assert again.state == lead_pb2.LEAD_STATE_SUBMITTED and not again.warning_id
