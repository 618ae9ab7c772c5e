"""Warnings over gRPC (SQLite, mutual TLS, the SDK): the centre warns Bank B of a customer at
risk; the warning reaches Bank B's delivery stream; its red contact clock breaches and is
acknowledged like any clock; Bank B acknowledges and reports the customer dissuaded, and the
centre is told each step on its stream. An already-lost outcome opens a case in one step. The
refusals, an insider reading another's warnings, and the audit log holding every message."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner

from adapters.sdk import HubClient, HubError
from hub.cli import main
from stophub.v1 import (
    case_pb2,
    delivery_pb2,
    envelope_pb2,
    grade_pb2,
    sla_pb2,
    warning_pb2,
)
from tests.e2e.conftest import Network
from tests.e2e.wire_helpers import report

CUSTOMER = ("BANKB", "6222020000000777", "Qian Qi")
BROKER = ("PAYX", "PAYX-0000-0666", "Fake Broker Ltd")


def notice_in(payload: bytes) -> delivery_pb2.Notice:
    return delivery_pb2.Notice.FromString(envelope_pb2.Envelope.FromString(payload).body)


async def notices(client: HubClient, count: int) -> list[delivery_pb2.Notice]:
    found = []
    async with client.deliveries("warnings") as stream:
        async for delivery in stream:
            await stream.ack(delivery.sequence)
            if delivery.notice.kind == delivery_pb2.NOTICE_KIND_WARNING:
                found.append(delivery.notice)
                if len(found) == count:
                    return found
    return found


async def test_a_warning_from_send_to_dissuaded(
    clients: dict[str, HubClient], network: Network, tmp_path: Path
) -> None:
    centre, bank_b, bank_a, payx = (clients[c] for c in ("CENTRE", "BANKB", "BANKA", "PAYX"))
    sent = await centre.send_warning(
        CUSTOMER,
        3_000_000,
        grade=grade_pb2.GRADE_RED,
        fraud_type=case_pb2.FRAUD_TYPE_FAKE_INVESTMENT,
        counterparty=BROKER,
        text="customer is on the phone with a fake broker, about to transfer",
    )
    assert sent.addressee == "BANKB" and sent.state == warning_pb2.WARNING_STATE_SENT
    [arrived] = await notices(bank_b, 1)
    assert arrived.warning.warning_id == sent.warning_id
    assert arrived.origin.sender == "CENTRE" and arrived.origin.message_id == sent.message_id

    # An insider: Bank A and PayX hold their own certificates and see nothing of it.
    for outsider in (bank_a, payx):
        with pytest.raises(HubError) as hidden:
            await outsider.get_warning(sent.warning_id)
        assert hidden.value.code == grpc.StatusCode.NOT_FOUND
        assert hidden.value.reason == "WARNING_NOT_FOUND"
        assert await outsider.list_warnings() == []
        assert await outsider.list_warnings(institution_code="BANKB") == []
        with pytest.raises(HubError) as not_theirs:
            await outsider.acknowledge_warning(sent.warning_id)
        assert not_theirs.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(HubError) as sender_closes:
        await centre.report_warning_outcome(
            sent.warning_id, warning_pb2.WARNING_OUTCOME_REACHED_DISSUADED
        )
    assert sender_closes.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert sender_closes.value.reason == "NOT_ADDRESSEE"
    with pytest.raises(HubError) as regulator:
        await clients["REG"].send_warning(CUSTOMER, 100)
    assert regulator.value.reason == "KIND_NOT_ALLOWED"
    with pytest.raises(HubError) as nonmember:
        await centre.send_warning(("NOBANK", "6222000000000001", "x"), 100)
    assert nonmember.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert nonmember.value.reason == "UNKNOWN_INSTITUTION"

    # Eleven minutes without contact: the red contact clock breaches, as any clock does.
    network.clock.advance(timedelta(minutes=11))
    network.server.hub.sweep()
    [breached] = await bank_b.list_clocks(case_id=sent.warning_id, breached_only=True)
    assert breached.clock == "warning_contact_red" and breached.responsible == "BANKB"
    with bank_b.acting("duty-officer-7"):
        view = await bank_b.acknowledge_breach(breached.clock_id, "desk was on another call")
    assert view.acknowledged_by == "BANKB"

    acked = await bank_b.acknowledge_warning(sent.warning_id, "calling the customer")
    assert acked.state == warning_pb2.WARNING_STATE_ACKNOWLEDGED
    with pytest.raises(HubError) as too_much:
        await bank_b.report_warning_outcome(
            sent.warning_id,
            warning_pb2.WARNING_OUTCOME_REACHED_DISSUADED,
            loss_prevented_fen=3_000_001,
        )
    assert too_much.value.reason == "PREVENTED_ABOVE_AT_RISK"
    assert too_much.value.field == "loss_prevented_fen"
    closed = await bank_b.report_warning_outcome(
        sent.warning_id,
        warning_pb2.WARNING_OUTCOME_REACHED_DISSUADED,
        loss_prevented_fen=3_000_000,
        text="customer came to the branch and cancelled",
    )
    assert closed.state == warning_pb2.WARNING_STATE_CLOSED
    with pytest.raises(HubError) as after:
        await bank_b.report_warning_outcome(
            sent.warning_id, warning_pb2.WARNING_OUTCOME_NOT_REACHED
        )
    assert after.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert after.value.reason == "WARNING_CLOSED"

    told = await notices(centre, 2)
    assert [n.warning.state for n in told] == [
        warning_pb2.WARNING_STATE_ACKNOWLEDGED,
        warning_pb2.WARNING_STATE_CLOSED,
    ]
    clocks = await centre.list_clocks(case_id=sent.warning_id)
    states = {c.clock: c.state for c in clocks}
    assert states == {
        "warning_contact_red": sla_pb2.CLOCK_STATE_MISSED,
        "warning_outcome": sla_pb2.CLOCK_STATE_MET,
    }

    # The audit log holds each of the three signed messages as received.
    network.server.hub.keep_audit_log()
    page = await clients["REG"].list_audit_entries(page_size=500)
    received = {
        e.message_id
        for e in page.entries
        if e.kind == "received" and e.actor in ("CENTRE", "BANKB")
    }
    assert sent.message_id in received
    about = {
        e.message_id for e in page.entries if e.kind == "received" and e.case_id == sent.warning_id
    }
    assert len(about) >= 3
    # The hub's answers to them, and its notices of the warning, are filed under its id too
    # (`stophub audit export --case W...` finds them).
    answers = [e for e in page.entries if e.kind == "sent" and e.detail.startswith("answer to")]
    mine = [e for e in answers if e.detail.split("/", 1)[1] in about]
    assert len(mine) == len(about), mine
    assert {e.case_id for e in mine} == {sent.warning_id}, [(e.detail, e.case_id) for e in mine]
    told_of = [
        e
        for e in page.entries
        if e.kind == "sent"
        and e.detail.startswith("warning to ")
        and notice_in(e.payload).warning.warning_id == sent.warning_id
    ]
    assert len(told_of) >= 3 and {e.case_id for e in told_of} == {sent.warning_id}

    # The regulator's figures: Bank B was sent one warning, reached and dissuaded its customer.
    now = network.clock.now()
    figures = await clients["REG"].outcome_figures(
        now - timedelta(days=1), now + timedelta(hours=1)
    )
    [bankb] = [r.figures for r in figures.rows if r.institution == "BANKB"]
    assert (bankb.warnings_sent, bankb.customers_dissuaded, bankb.customers_reached) == (1, 1, 1)
    assert bankb.loss_prevented_fen == 3_000_000 and bankb.at_risk_fen == 3_000_000
    assert (bankb.warnings_acknowledged, bankb.warnings_acknowledged_late) == (1, 1)
    assert bankb.warning_outcomes_late == 0
    own = await bank_b.outcome_figures(now - timedelta(days=1), now + timedelta(hours=1))
    assert {r.institution for r in own.rows} == {"BANKB", ""}

    # The hub's operator reads them from the database.
    db = ["--db", network.database_url]
    shown = CliRunner().invoke(main, ["warning", "list", *db])
    assert shown.exit_code == 0, shown.output
    assert sent.warning_id in shown.output and "closed" in shown.output
    # The warning's clocks sit among the case clocks of every clock reader.
    sla = CliRunner().invoke(main, ["sla", "--all", "--json", *db])
    assert sla.exit_code == 0, sla.output
    assert sent.warning_id in sla.output
    one_clock = CliRunner().invoke(main, ["sla", "--case", sent.warning_id, "--json", *db])
    assert one_clock.exit_code == 0, one_clock.output
    assert "warning_contact_red" in one_clock.output and "missed" in one_clock.output
    report_sla = CliRunner().invoke(
        main, ["report", "sla", "--out", str(tmp_path / "sla.html"), *db]
    )
    assert report_sla.exit_code == 0, report_sla.output
    assert "warning_contact_red" in (tmp_path / "sla.html").read_text(encoding="utf-8")
    one = CliRunner().invoke(main, ["warning", "show", sent.warning_id, *db])
    assert one.exit_code == 0, one.output
    assert "reached_dissuaded" in one.output and "¥30,000.00" in one.output


async def test_already_lost_opens_a_case_and_a_member_warns_the_centre(
    clients: dict[str, HubClient], network: Network
) -> None:
    centre, bank_a, payx = clients["CENTRE"], clients["BANKA"], clients["PAYX"]
    sent = await centre.send_warning(
        ("BANKA", "6222010000000001", "Zhang San"), 5_000_000, grade=grade_pb2.GRADE_YELLOW
    )
    closed = await bank_a.report_warning_outcome(
        sent.warning_id,
        warning_pb2.WARNING_OUTCOME_ALREADY_LOST,
        report=report(network.clock.now(), (3_000_000, 2_000_000)),
        text="the customer had paid twice before we reached them",
    )
    assert closed.case_id
    case = await centre.get_case(closed.case_id)
    assert case.reporting_institution == "BANKA" and case.loss_fen == 5_000_000
    assert case.report_message_id != sent.message_id

    raised = await payx.send_warning(
        ("BANKB", "6222020000000888", "Li Qi"), 200_000, text="our customer is about to pay"
    )
    assert raised.addressee == "CENTRE" and raised.sender == "PAYX"
    regraded = await centre.set_warning_grade(raised.warning_id, grade_pb2.GRADE_RED, "mule")
    assert regraded.grade == grade_pb2.GRADE_RED
    assert [w.warning_id for w in await payx.list_warnings()] == [raised.warning_id]
    with pytest.raises(HubError) as bank_grades:
        await payx.set_warning_grade(raised.warning_id, grade_pb2.GRADE_GREEN, "no")
    assert bank_grades.value.reason == "KIND_NOT_ALLOWED"
