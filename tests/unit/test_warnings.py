"""Warnings through the real pipeline (fake store): sending, the addressee's notice, the clocks
by grade, acknowledgement and outcome told to the sender, an already-lost outcome opening a
case from its own signed message, regrading, and every documented refusal changing nothing.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from google.protobuf.message import Message

from hub.domain.cases import AccountRef
from hub.domain.clocks import ClockState
from hub.domain.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from hub.service.commands import warning as wa
from hub.service.commands.case import GET_CASE
from hub.service.pipeline import Command, Context
from hub.service.warnings import (
    GRADES_PB,
    WarningFacts,
    grade_of,
    raise_warning,
    warning_to_proto,
)
from hub.system.policy import load_policy
from stophub.v1 import case_pb2, delivery_pb2, grade_pb2, warning_pb2
from tests.unit.test_handlers import World, account, report_body

CUSTOMER = account("BANKB", "6222020000000777", "Qian Qi")
SCAMMER = account("BANKC", "6222030000000999", "")


def send_body(**kw: object) -> warning_pb2.SendWarningBody:
    body = warning_pb2.SendWarningBody(
        account=CUSTOMER,
        fraud_type=case_pb2.FRAUD_TYPE_FAKE_INVESTMENT,
        counterparty=SCAMMER,
        amount_at_risk_fen=2_000_000,
        grade=grade_pb2.GRADE_RED,
        text="victim on the phone with a fake broker right now",
    )
    for name, value in kw.items():
        if isinstance(value, Message):
            getattr(body, name).CopyFrom(value)
        else:
            setattr(body, name, value)
    return body


class Net(World):
    def __init__(self) -> None:
        super().__init__()
        self.hub.clock_policy = load_policy()

    def warn(self, sender: str = "AFC", **kw: object) -> warning_pb2.Warning:
        sent = self.send(wa.SEND_WARNING, sender, send_body(**kw))
        assert isinstance(sent, warning_pb2.Warning)
        return sent

    def clocks_of(self, warning_id: str) -> dict[str, tuple[ClockState, object]]:
        return {
            c.kind: (c.state, c.deadline_at)
            for c in self.store.state.clocks.values()
            if c.case_id == warning_id
        }


def test_a_red_warning_runs_its_clocks_and_tells_each_side() -> None:
    net = Net()
    sent = net.warn()
    assert sent.addressee == "BANKB" and sent.sender == "AFC"
    assert sent.state == warning_pb2.WARNING_STATE_SENT
    t0 = sent.send_time.ToDatetime().replace(tzinfo=net.clock.now().tzinfo)
    assert sent.contact_by_time.ToDatetime().replace(tzinfo=t0.tzinfo) == t0 + timedelta(minutes=10)
    assert sent.outcome_by_time.ToDatetime().replace(tzinfo=t0.tzinfo) == t0 + timedelta(hours=24)
    clocks = net.clocks_of(sent.warning_id)
    assert set(clocks) == {"warning_contact_red", "warning_outcome"}
    [notice] = [n for n in net.notices("BANKB") if n.kind == delivery_pb2.NOTICE_KIND_WARNING]
    assert notice.warning.warning_id == sent.warning_id
    assert notice.origin.sender == "AFC", "the centre's signed message travels with it"
    assert notice.case_id == sent.warning_id

    # Late: the reminder, then the breach to BANKB's supervisor and the centre.
    net.clock.advance(timedelta(minutes=11))
    net.hub.sweep()
    breaches = [n for n in net.notices("AFC") if n.kind == delivery_pb2.NOTICE_KIND_CLOCK_BREACH]
    assert breaches and f"warning {sent.warning_id}" in breaches[0].summary
    assert net.store.state.clocks[breaches[0].clock_step.clock.clock_id].breached

    acked = net.send(
        wa.ACKNOWLEDGE_WARNING,
        "BANKB",
        warning_pb2.AcknowledgeWarningBody(warning_id=sent.warning_id, note="calling now"),
    )
    assert isinstance(acked, warning_pb2.Warning)
    assert acked.state == warning_pb2.WARNING_STATE_ACKNOWLEDGED
    assert net.clocks_of(sent.warning_id)["warning_contact_red"][0] is ClockState.MISSED
    assert net.clocks_of(sent.warning_id)["warning_outcome"][0] is ClockState.OPEN
    told = [n for n in net.notices("AFC") if n.kind == delivery_pb2.NOTICE_KIND_WARNING]
    assert told[-1].warning.state == warning_pb2.WARNING_STATE_ACKNOWLEDGED

    closed = net.send(
        wa.REPORT_WARNING_OUTCOME,
        "BANKB",
        warning_pb2.ReportWarningOutcomeBody(
            warning_id=sent.warning_id,
            outcome=warning_pb2.WARNING_OUTCOME_REACHED_DISSUADED,
            loss_prevented_fen=2_000_000,
            text="customer cancelled the transfer at the counter",
        ),
    )
    assert isinstance(closed, warning_pb2.Warning)
    assert closed.state == warning_pb2.WARNING_STATE_CLOSED
    assert closed.loss_prevented_fen == 2_000_000
    assert net.clocks_of(sent.warning_id)["warning_outcome"][0] is ClockState.MET
    told = [n for n in net.notices("AFC") if n.kind == delivery_pb2.NOTICE_KIND_WARNING]
    assert "reached dissuaded" in told[-1].summary
    kinds = [a.kind for a in net.store.audit if a.case_id == sent.warning_id]
    assert kinds.count("received") == 3, "every warning message is in the audit log"


def test_the_grade_sets_the_contact_window_and_a_regrade_restarts_it() -> None:
    net = Net()
    green = net.warn(grade=grade_pb2.GRADE_GREEN)
    assert set(net.clocks_of(green.warning_id)) == {"warning_contact_green", "warning_outcome"}
    net.clock.advance(timedelta(minutes=5))
    regraded = net.send(
        wa.SET_WARNING_GRADE,
        "AFC",
        warning_pb2.SetWarningGradeBody(
            name=f"warnings/{green.warning_id}", grade=grade_pb2.GRADE_RED, reason="money moving"
        ),
    )
    assert isinstance(regraded, warning_pb2.Warning)
    assert regraded.grade == grade_pb2.GRADE_RED and regraded.grade_reason == "money moving"
    clocks = net.clocks_of(green.warning_id)
    assert clocks["warning_contact_green"][0] is ClockState.ENDED
    assert clocks["warning_contact_red"][0] is ClockState.OPEN
    # Counted from the send time, not the regrade.
    assert regraded.contact_by_time.ToSeconds() == green.send_time.ToSeconds() + 600
    told = [n for n in net.notices("BANKB") if n.kind == delivery_pb2.NOTICE_KIND_WARNING]
    assert "regraded green to red" in told[-1].summary
    # A bank may not regrade, nor give a bare name that is not a warning.
    net.refuse(
        wa.SET_WARNING_GRADE,
        net.seal("BANKB", warning_pb2.SetWarningGradeBody(name=green.warning_id, reason="x")),
        PermissionDenied,
        "KIND_NOT_ALLOWED",
    )
    net.refuse(
        wa.SET_WARNING_GRADE,
        net.seal(
            "AFC",
            warning_pb2.SetWarningGradeBody(
                name=green.warning_id, grade=grade_pb2.GRADE_RED, reason="again"
            ),
        ),
        FailedPrecondition,
        "GRADE_UNCHANGED",
    )
    net.refuse(
        wa.SET_WARNING_GRADE,
        net.seal(
            "AFC",
            warning_pb2.SetWarningGradeBody(
                name=green.warning_id, grade=grade_pb2.GRADE_YELLOW, reason=""
            ),
        ),
        InvalidArgument,
        "INVALID_FIELD",
        "reason",
    )


def test_already_lost_opens_a_case_from_the_outcome_message() -> None:
    net = Net()
    sent = net.warn(account=account("BANKA", "6222010000000001", "Zhang San"))
    body = warning_pb2.ReportWarningOutcomeBody(
        warning_id=sent.warning_id,
        outcome=warning_pb2.WARNING_OUTCOME_ALREADY_LOST,
        loss_prevented_fen=500_000,
        report=report_body(
            (account("BANKC", "6222030000000999", "Wang Wu"), 1_500_000), now=net.clock.now()
        ),
    )
    envelope = net.seal("BANKA", body)
    closed = net.open(
        net.hub.handle(wa.REPORT_WARNING_OUTCOME, envelope), wa.REPORT_WARNING_OUTCOME, "BANKA"
    )
    assert isinstance(closed, warning_pb2.Warning)
    assert closed.case_id
    case = net.send(GET_CASE, "BANKA", case_pb2.GetCaseBody(case_id=closed.case_id))
    assert isinstance(case, case_pb2.Case)
    assert case.reporting_institution == "BANKA" and case.loss_fen == 1_500_000
    assert case.report_message_id == envelope.message_id
    assert net.store.state.cases[closed.case_id].report_envelope == envelope.SerializeToString()
    assert any(
        n.kind == delivery_pb2.NOTICE_KIND_REPORT_RECEIVED and n.case_id == closed.case_id
        for n in net.notices("AFC")
    )
    # The case's own clocks run, as for any report.
    assert {c.kind for c in net.store.state.clocks.values() if c.case_id == closed.case_id}


def test_refusals_change_nothing() -> None:
    net = Net()
    # An account at a non-member, at a centre, or none; no amount; an unknown grade.
    for body, reason, field in (
        (send_body(account=account("NOPE", "6222", "x")), "UNKNOWN_INSTITUTION", None),
        (send_body(account=account("REG", "62220000", "x")), "INVALID_FIELD", None),
        (send_body(amount_at_risk_fen=0), "INVALID_FIELD", "amount_at_risk_fen"),
        (send_body(grade=9), "INVALID_FIELD", "grade"),
        (send_body(fraud_type=99), "INVALID_FIELD", "fraud_type"),
        (send_body(centre="AFC"), "INVALID_FIELD", "centre"),
        (send_body(text="x" * 4001), "INVALID_FIELD", "text"),
    ):
        net.refuse(wa.SEND_WARNING, net.seal("AFC", body), InvalidArgument, reason, field)
    # A member warns the centre of its own customer, not itself; the regulator sends none.
    net.refuse(
        wa.SEND_WARNING,
        net.seal("BANKB", send_body(centre="BANKA")),
        InvalidArgument,
        "INVALID_FIELD",
        "centre",
    )
    net.refuse(wa.SEND_WARNING, net.seal("REG", send_body()), PermissionDenied, "KIND_NOT_ALLOWED")

    sent = net.warn()
    wid = sent.warning_id

    def outcome(**kw: object) -> warning_pb2.ReportWarningOutcomeBody:
        body = warning_pb2.ReportWarningOutcomeBody(
            warning_id=wid, outcome=warning_pb2.WARNING_OUTCOME_REACHED_DISSUADED
        )
        for name, value in kw.items():
            setattr(body, name, value)
        return body

    # Not the addressee: its sender is told so; another member learns nothing.
    net.refuse(
        wa.REPORT_WARNING_OUTCOME, net.seal("AFC", outcome()), PermissionDenied, "NOT_ADDRESSEE"
    )
    net.refuse(
        wa.REPORT_WARNING_OUTCOME, net.seal("BANKC", outcome()), NotFound, "WARNING_NOT_FOUND"
    )
    net.refuse(
        wa.GET_WARNING,
        net.seal("PAYX", warning_pb2.GetWarningBody(warning_id=wid)),
        NotFound,
        "WARNING_NOT_FOUND",
    )
    listed = net.send(wa.LIST_WARNINGS, "PAYX", warning_pb2.ListWarningsBody())
    assert isinstance(listed, warning_pb2.WarningList) and not listed.warnings
    listed = net.send(
        wa.LIST_WARNINGS, "PAYX", warning_pb2.ListWarningsBody(institution_code="BANKB")
    )
    assert isinstance(listed, warning_pb2.WarningList) and not listed.warnings
    # Prevented above the amount at risk; a report without ALREADY_LOST; ALREADY_LOST without one.
    net.refuse(
        wa.REPORT_WARNING_OUTCOME,
        net.seal("BANKB", outcome(loss_prevented_fen=2_000_001)),
        InvalidArgument,
        "PREVENTED_ABOVE_AT_RISK",
        "loss_prevented_fen",
    )
    net.refuse(
        wa.REPORT_WARNING_OUTCOME,
        net.seal(
            "BANKB", outcome(outcome=warning_pb2.WARNING_OUTCOME_NOT_REACHED, loss_prevented_fen=1)
        ),
        InvalidArgument,
        "INVALID_FIELD",
        "loss_prevented_fen",
    )
    with_report = outcome()
    with_report.report.CopyFrom(report_body(now=net.clock.now()))
    net.refuse(
        wa.REPORT_WARNING_OUTCOME,
        net.seal("BANKB", with_report),
        InvalidArgument,
        "INVALID_FIELD",
        "report",
    )
    net.refuse(
        wa.REPORT_WARNING_OUTCOME,
        net.seal("BANKB", outcome(outcome=warning_pb2.WARNING_OUTCOME_ALREADY_LOST)),
        InvalidArgument,
        "INVALID_FIELD",
        "report",
    )
    # A bad report inside ALREADY_LOST is named under report. and opens nothing.
    bad = outcome(outcome=warning_pb2.WARNING_OUTCOME_ALREADY_LOST)
    bad.report.CopyFrom(report_body(now=net.clock.now()))
    bad.report.ClearField("transactions")
    net.refuse(
        wa.REPORT_WARNING_OUTCOME,
        net.seal("BANKB", bad),
        InvalidArgument,
        "INVALID_FIELD",
        "report.transactions",
    )
    net.refuse(
        wa.REPORT_WARNING_OUTCOME,
        net.seal("BANKB", outcome(outcome=0)),
        InvalidArgument,
        "INVALID_FIELD",
        "outcome",
    )

    net.send(wa.REPORT_WARNING_OUTCOME, "BANKB", outcome(loss_prevented_fen=2_000_000))
    # Closed: nothing more is accepted about it.
    net.refuse(
        wa.REPORT_WARNING_OUTCOME,
        net.seal("BANKB", outcome()),
        FailedPrecondition,
        "WARNING_CLOSED",
    )
    net.refuse(
        wa.ACKNOWLEDGE_WARNING,
        net.seal("BANKB", warning_pb2.AcknowledgeWarningBody(warning_id=wid)),
        FailedPrecondition,
        "WARNING_CLOSED",
    )
    # A resend of the closing message gets the original answer; a new id with the same body
    # is refused as closed (above).


def test_a_resend_gets_the_original_answer_and_sends_nothing_again() -> None:
    net = Net()
    envelope = net.seal("AFC", send_body())
    first = net.hub.handle(wa.SEND_WARNING, envelope)
    again = net.hub.handle(wa.SEND_WARNING, envelope)
    assert again.SerializeToString() == first.SerializeToString()
    assert len(net.store.state.warnings) == 1
    assert len([n for n in net.notices("BANKB") if n.kind == 17]) == 1


def test_a_member_warns_the_centre_and_the_centre_closes_it() -> None:
    net = Net()
    sent = net.warn("PAYX", account=account("BANKC", "6222030000000555", "Zheng Shi"))
    assert sent.addressee == "AFC" and sent.sender == "PAYX"
    assert [n.warning.warning_id for n in net.notices("AFC") if n.kind == 17] == [sent.warning_id]
    net.refuse(
        wa.ACKNOWLEDGE_WARNING,
        net.seal("PAYX", warning_pb2.AcknowledgeWarningBody(warning_id=sent.warning_id)),
        PermissionDenied,
        "NOT_ADDRESSEE",
    )
    # The centre reports no loss itself: the customer's institution reports it.
    lost = warning_pb2.ReportWarningOutcomeBody(
        warning_id=sent.warning_id, outcome=warning_pb2.WARNING_OUTCOME_ALREADY_LOST
    )
    lost.report.CopyFrom(report_body(now=net.clock.now()))
    net.refuse(
        wa.REPORT_WARNING_OUTCOME, net.seal("AFC", lost), InvalidArgument, "INVALID_FIELD", "report"
    )
    lost.ClearField("report")
    closed = net.send(wa.REPORT_WARNING_OUTCOME, "AFC", lost)
    assert isinstance(closed, warning_pb2.Warning) and not closed.case_id
    got = net.send(wa.GET_WARNING, "PAYX", warning_pb2.GetWarningBody(warning_id=sent.warning_id))
    assert isinstance(got, warning_pb2.Warning)
    assert got.outcome == warning_pb2.WARNING_OUTCOME_ALREADY_LOST


def test_list_pages_newest_first_and_filters() -> None:
    net = Net()
    ids = []
    for _ in range(5):
        ids.append(net.warn().warning_id)
        net.clock.advance(timedelta(seconds=1))
    net.send(wa.ACKNOWLEDGE_WARNING, "BANKB", warning_pb2.AcknowledgeWarningBody(warning_id=ids[0]))
    seen: list[str] = []
    token = ""
    while True:
        page = net.send(
            wa.LIST_WARNINGS, "BANKB", warning_pb2.ListWarningsBody(page_size=2, page_token=token)
        )
        assert isinstance(page, warning_pb2.WarningList)
        seen += [w.warning_id for w in page.warnings]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids[::-1]
    acked = net.send(
        wa.LIST_WARNINGS,
        "REG",
        warning_pb2.ListWarningsBody(state=warning_pb2.WARNING_STATE_ACKNOWLEDGED),
    )
    assert isinstance(acked, warning_pb2.WarningList)
    assert [w.warning_id for w in acked.warnings] == [ids[0]]
    net.refuse(
        wa.LIST_WARNINGS,
        net.seal("AFC", warning_pb2.ListWarningsBody(page_token="junk")),
        InvalidArgument,
        "INVALID_FIELD",
        "page_token",
    )


def test_another_command_raises_a_warning_in_its_own_transaction() -> None:
    """What a lead's triage does ("warn another member"): raise_warning inside a command."""

    def triage(ctx: Context, body: warning_pb2.GetWarningBody) -> warning_pb2.Warning:
        facts = WarningFacts(
            account=AccountRef("BANKC", "6222030000000123", "Feng Yi"),
            fraud_type="romance",
            counterparty=None,
            amount_at_risk_fen=80_000,
            grade=grade_of(grade_pb2.GRADE_YELLOW),
            text=f"from lead {body.warning_id}",
        )
        return warning_to_proto(raise_warning(ctx, facts))

    net = Net()
    command = Command("SendWarning", warning_pb2.GetWarningBody, triage)
    envelope = net.seal("AFC", warning_pb2.GetWarningBody(warning_id="L1"))
    answer = net.open(net.hub.handle(command, envelope), wa.SEND_WARNING, "AFC")
    assert isinstance(answer, warning_pb2.Warning)
    assert answer.addressee == "BANKC" and answer.message_id == envelope.message_id
    assert set(net.clocks_of(answer.warning_id)) == {"warning_contact_yellow", "warning_outcome"}
    [notice] = [n for n in net.notices("BANKC") if n.kind == delivery_pb2.NOTICE_KIND_WARNING]
    assert notice.origin.message_id == envelope.message_id


@pytest.mark.parametrize("number", [0, 1, 2, 3])
def test_grades_round_trip(number: int) -> None:
    assert GRADES_PB[grade_of(number)] == number
