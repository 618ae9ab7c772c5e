"""Leads (线索移送) and grades over gRPC: members hand the centre leads, the centre triages them
within the lead_triage clock of their grade (asks for more, lists an account, opens a case,
dismisses), leads about one account are linked, a member never reads another's leads; cases
carry a grade that orders the board; and every refusal changes nothing (docs/leads.md,
docs/grades.md)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner

from adapters.sdk import HubClient, HubError
from hub.cli import main
from hub.system.clock import ManualClock
from stophub.v1 import (
    account_pb2,
    blacklist_pb2,
    case_pb2,
    delivery_pb2,
    grade_pb2,
    lead_pb2,
    sla_pb2,
)
from tests.e2e.conftest import Network, start_network
from tests.e2e.wire_helpers import MULE, report

DOC = ("monitoring export.csv", hashlib.sha256(b"export").digest())
ELSEWHERE = account_pb2.AccountRef(
    institution_code="NOSUCHBANK", account_number="6222990000000009", holder_name="Wu"
)


async def notices(client: HubClient, kind: int, count: int) -> list[delivery_pb2.Notice]:
    found = []
    async with client.deliveries("leads") as stream:
        async for delivery in stream:
            await stream.ack(delivery.sequence)
            if delivery.notice.kind == kind:
                found.append(delivery.notice)
                if len(found) == count:
                    return found
    return found


def lead_body(grade: int, *accounts: account_pb2.AccountRef) -> lead_pb2.SubmitLeadBody:
    return lead_pb2.SubmitLeadBody(
        accounts=list(accounts),
        grade=grade,  # type: ignore[arg-type]
        grounds="forty small transfers in, all out within minutes",
        evidence=[lead_pb2.LeadEvidence(name=DOC[0], sha256=DOC[1])],
    )


async def refused(call: object, code: grpc.StatusCode, reason: str) -> HubError:
    with pytest.raises(HubError) as err:
        await call  # type: ignore[misc]
    assert err.value.code == code, err.value
    assert err.value.reason == reason, err.value
    return err.value


async def test_leads_from_submission_to_triage(
    clients: dict[str, HubClient], network: Network
) -> None:
    centre, bank_a, bank_b, wallet = (
        clients["CENTRE"],
        clients["BANKA"],
        clients["BANKB"],
        clients["PAYX"],
    )
    now = network.clock.now()
    red = await bank_a.submit_lead(lead_body(grade_pb2.GRADE_RED, MULE))
    assert red.state == lead_pb2.LEAD_STATE_SUBMITTED and red.submitter == "BANKA"
    assert red.grade == red.submitted_grade == grade_pb2.GRADE_RED
    # The shipped policy: a red lead is triaged within 30 minutes.
    assert red.triage_by_time.ToDatetime().replace(tzinfo=now.tzinfo) == now + timedelta(minutes=30)
    [clock] = await centre.list_clocks(case_id=red.name)
    assert clock.clock == "lead_triage" and clock.clock_id == red.triage_clock_id
    assert clock.responsible == "CENTRE" and clock.state == sla_pb2.CLOCK_STATE_OPEN
    [told] = await notices(centre, delivery_pb2.NOTICE_KIND_LEAD_SUBMITTED, 1)
    assert told.lead.name == red.name
    # In the audit log the request, the hub's answer and its notice are all filed under the
    # lead's id, as a case's are under the case's.
    network.server.hub.keep_audit_log()
    entries = (await clients["REG"].list_audit_entries(page_size=500)).entries
    filed = {(e.kind, e.detail.split(":")[0]) for e in entries if e.case_id == red.name}
    assert ("received", "SubmitLead accepted") in {(k, d.split(" (")[0]) for k, d in filed}
    assert any(k == "sent" and d.startswith("answer to BANKA/") for k, d in filed), filed
    assert ("sent", "lead_submitted to CENTRE") in filed, filed

    # The wallet hands over a lead about the same account: linked, for the centre only.
    green = await wallet.submit_lead(lead_body(grade_pb2.GRADE_GREEN, MULE))
    assert (green.triage_by_time.ToDatetime() - green.submit_time.ToDatetime()) == timedelta(
        hours=24
    )
    seen = await centre.get_lead(green.name)
    assert [(link.name, link.submitter) for link in seen.linked_leads] == [(red.name, "BANKA")]
    assert seen.linked_leads[0].account.account_number == MULE.account_number
    assert not (await wallet.get_lead(green.name)).linked_leads

    # A payment institution cannot read a bank's lead, nor list it.
    await refused(wallet.get_lead(red.name), grpc.StatusCode.NOT_FOUND, "LEAD_NOT_FOUND")
    assert [lead.name for lead in await wallet.list_leads()] == [green.name]
    assert await wallet.list_leads(institution="BANKA") == []
    # The centre's queue: red before green.
    assert [lead.name for lead in await centre.list_leads()] == [red.name, green.name]
    assert [lead.name for lead in await clients["REG"].list_leads()] == [red.name, green.name]

    # Bad input changes nothing.
    before = [lead.name for lead in await centre.list_leads()]
    await refused(
        bank_a.submit_lead(lead_body(grade_pb2.GRADE_RED, ELSEWHERE)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNKNOWN_INSTITUTION",
    )
    await refused(
        bank_a.submit_lead(lead_body(7, MULE)), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"
    )
    await refused(
        centre.submit_lead(lead_body(grade_pb2.GRADE_RED, MULE)),
        grpc.StatusCode.PERMISSION_DENIED,
        "KIND_NOT_ALLOWED",
    )
    await refused(
        bank_b.dismiss_lead(red.name, "not ours to decide"),
        grpc.StatusCode.PERMISSION_DENIED,
        "KIND_NOT_ALLOWED",
    )
    await refused(
        bank_a.set_lead_grade(red.name, grade_pb2.GRADE_GREEN, "self-service"),
        grpc.StatusCode.PERMISSION_DENIED,
        "KIND_NOT_ALLOWED",
    )
    for bad in (0, 9):
        await refused(
            centre.set_lead_grade(red.name, bad, "why not"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_FIELD",
        )
    await refused(
        bank_b.warn_member_from_lead(red.name, ("BANKB", MULE.account_number, ""), 100),
        grpc.StatusCode.PERMISSION_DENIED,
        "KIND_NOT_ALLOWED",
    )
    await refused(
        bank_a.add_lead_information(red.name, "nobody asked"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "NO_QUESTION_OPEN",
    )
    await refused(
        wallet.add_lead_information(red.name, "not mine"),
        grpc.StatusCode.NOT_FOUND,
        "LEAD_NOT_FOUND",
    )
    assert [lead.name for lead in await centre.list_leads()] == before
    assert (await centre.get_lead(red.name)).grade == grade_pb2.GRADE_RED

    # Ask for more: the member is told, the clock is met; its answer starts a new one.
    network.clock.advance(timedelta(minutes=5))
    asked = await centre.ask_for_more(red.name, "who holds the account?")
    assert asked.state == lead_pb2.LEAD_STATE_MORE_REQUESTED and not asked.triage_clock_id
    [question] = await notices(bank_a, delivery_pb2.NOTICE_KIND_LEAD_TRIAGED, 1)
    assert question.lead.exchanges[0].question == "who holds the account?"
    [met] = await centre.list_clocks(case_id=red.name)
    assert met.state == sla_pb2.CLOCK_STATE_MET
    await refused(
        centre.dismiss_lead(red.name, "too slow"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "LEAD_WAITING_FOR_MEMBER",
    )
    answered = await bank_a.add_lead_information(red.name, "a student, since May", [DOC])
    assert answered.state == lead_pb2.LEAD_STATE_SUBMITTED
    assert answered.exchanges[0].answer == "a student, since May"
    assert answered.triage_clock_id and answered.triage_clock_id != red.triage_clock_id

    # Regraded by the centre: yellow, with its reason; the member is told.
    regraded = await centre.set_lead_grade(red.name, grade_pb2.GRADE_YELLOW, "one account only")
    assert regraded.grade == grade_pb2.GRADE_YELLOW
    assert regraded.submitted_grade == grade_pb2.GRADE_RED

    # Accepted as a listing, from the case of a victim whose money reached the account.
    case = await bank_a.create_report(report(network.clock.now(), (100_000,)))
    await refused(
        centre.triage_lead(
            lead_pb2.TriageLeadBody(
                name=red.name,
                list_account=lead_pb2.ListLeadAccount(
                    account=ELSEWHERE,
                    basis=blacklist_pb2.LIST_BASIS_ACCOUNT_TRADER,
                    source_case_id=case.case_id,
                ),
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "NOT_IN_LEAD",
    )
    listed = await centre.triage_lead(
        lead_pb2.TriageLeadBody(
            name=red.name,
            list_account=lead_pb2.ListLeadAccount(
                account=MULE,
                basis=blacklist_pb2.LIST_BASIS_ACCOUNT_TRADER,
                source_case_id=case.case_id,
                reason="sells his account",
            ),
        )
    )
    assert listed.state == lead_pb2.LEAD_STATE_ACCEPTED
    assert listed.outcome == lead_pb2.LEAD_OUTCOME_LISTED and listed.list_entry_id
    hits = await wallet.check_list(
        [blacklist_pb2.ListSubject(account=MULE)]  # the account is on the list now
    )
    assert hits.hits[0].listed
    await refused(
        centre.dismiss_lead(red.name, "again"), grpc.StatusCode.FAILED_PRECONDITION, "LEAD_CLOSED"
    )
    await refused(
        centre.set_lead_grade(red.name, grade_pb2.GRADE_RED, "again"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "LEAD_CLOSED",
    )

    # Dismissed: the wallet is told the reason; a closed lead takes no more triage.
    dismissed = await centre.dismiss_lead(green.name, "already listed from BANKA's lead")
    assert dismissed.state == lead_pb2.LEAD_STATE_DISMISSED
    [why] = await notices(wallet, delivery_pb2.NOTICE_KIND_LEAD_TRIAGED, 1)
    assert why.lead.reason == "already listed from BANKA's lead"
    await refused(
        centre.ask_for_more(green.name, "and?"), grpc.StatusCode.FAILED_PRECONDITION, "LEAD_CLOSED"
    )

    # Opened as a case in the member's name, with the lead's grade.
    third = await bank_a.submit_lead(lead_body(grade_pb2.GRADE_YELLOW, MULE))
    opened = await centre.triage_lead(
        lead_pb2.TriageLeadBody(
            name=third.name, open_case=lead_pb2.OpenCaseFromLead(report=report(network.clock.now()))
        )
    )
    assert opened.outcome == lead_pb2.LEAD_OUTCOME_CASE_OPENED and opened.case_id
    new_case = await centre.get_case(opened.case_id)
    assert new_case.reporting_institution == "BANKA"
    assert new_case.grade == grade_pb2.GRADE_YELLOW
    assert any(e.kind == "case.from_lead" for e in new_case.events)

    # At the hub: the leads in queue order, and one in full, account numbers masked.
    db = ["--db", network.database_url]
    listed_out = CliRunner().invoke(main, ["lead", "list", "--json", *db])
    assert listed_out.exit_code == 0, listed_out.output
    rows = json.loads(listed_out.output)["leads"]
    # Both yellow leads are closed (not waiting): by name; the green one after them.
    assert [r["lead"] for r in rows] == [*sorted([red.name, third.name]), green.name]
    assert [r["grade"] for r in rows] == ["yellow", "yellow", "green"]
    assert {r["lead"]: r["outcome"] for r in rows}[red.name] == f"listed {listed.list_entry_id}"
    assert MULE.account_number not in listed_out.output
    shown = CliRunner().invoke(main, ["lead", "show", red.name, *db])
    assert shown.exit_code == 0, shown.output
    assert "who holds the account?" in shown.output and green.name in shown.output
    missing = CliRunner().invoke(main, ["lead", "show", "L20990101-NOPE", *db])
    assert missing.exit_code != 0 and "no lead" in missing.output


async def test_a_red_lead_not_triaged_in_time_escalates(
    clients: dict[str, HubClient], network: Network
) -> None:
    red = await clients["BANKA"].submit_lead(lead_body(grade_pb2.GRADE_RED, MULE))
    network.clock.advance(timedelta(minutes=31))
    network.server.hub.sweep()
    [clock] = await clients["CENTRE"].list_clocks(case_id=red.name)
    assert clock.breached
    breaches = await notices(clients["CENTRE"], delivery_pb2.NOTICE_KIND_CLOCK_BREACH, 1)
    assert f"lead {red.name}" in breaches[0].summary
    # Triaged late: the clock is missed, the lead dismissed all the same.
    await clients["CENTRE"].dismiss_lead(red.name, "payroll account")
    [missed] = await clients["CENTRE"].list_clocks(case_id=red.name)
    assert missed.state == sla_pb2.CLOCK_STATE_MISSED


async def test_case_grades_order_the_board(clients: dict[str, HubClient], network: Network) -> None:
    centre, bank_a = clients["CENTRE"], clients["BANKA"]
    now = network.clock.now()
    ungraded = await bank_a.create_report(report(now, (100_000,)))
    green_report = report(now, (100_000,))
    green_report.grade = grade_pb2.GRADE_GREEN
    green = await bank_a.create_report(green_report)
    network.clock.advance(timedelta(minutes=1))
    red_report = report(network.clock.now(), (100_000,))
    red_report.grade = grade_pb2.GRADE_RED
    red = await bank_a.create_report(red_report)
    assert red.grade == grade_pb2.GRADE_RED and red.report.grade == grade_pb2.GRADE_RED
    assert ungraded.grade == grade_pb2.GRADE_UNSPECIFIED

    async def board() -> list[str]:
        cases, _ = await centre.list_cases_page(order_by=case_pb2.CASE_ORDER_DEADLINE)
        return [c.case_id for c in cases]

    # Red first though its verify deadline is the latest; then green, then ungraded.
    assert await board() == [red.case_id, green.case_id, ungraded.case_id]

    await refused(
        bank_a.set_case_grade(ungraded.case_id, grade_pb2.GRADE_RED, "mine"),
        grpc.StatusCode.PERMISSION_DENIED,
        "KIND_NOT_ALLOWED",
    )
    await refused(
        centre.set_case_grade(ungraded.case_id, 5, "?"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
    )
    await refused(
        centre.set_case_grade(ungraded.case_id, grade_pb2.GRADE_RED, " "),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
    )
    assert await board() == [red.case_id, green.case_id, ungraded.case_id]
    regraded = await centre.set_case_grade(ungraded.case_id, grade_pb2.GRADE_YELLOW, "elderly")
    assert regraded.grade == grade_pb2.GRADE_YELLOW
    assert regraded.events[-1].kind == "case.graded"
    assert "ungraded -> yellow" in regraded.events[-1].summary
    assert await board() == [red.case_id, ungraded.case_id, green.case_id]
    [told] = await notices(bank_a, delivery_pb2.NOTICE_KIND_CASE_GRADED, 1)
    assert told.case_id == ungraded.case_id

    # The command line's queues: `case list --queue` as the board, `sla` red first.
    db = ["--db", network.database_url]
    queue = CliRunner().invoke(main, ["case", "list", "--queue", "--json", *db])
    assert queue.exit_code == 0, queue.output
    cases = json.loads(queue.output)["cases"]
    assert [c["case_id"] for c in cases] == await board()
    assert [c["grade"] for c in cases] == ["red", "yellow", "green"]
    sla = CliRunner().invoke(main, ["sla", "--json", *db], obj={"clock": network.clock})
    assert sla.exit_code == 0, sla.output
    open_clocks = [c["case_id"] for c in json.loads(sla.output)["clocks"]]
    assert open_clocks[0] == red.case_id and open_clocks[-1] == green.case_id


async def test_a_lead_accepted_by_warning_a_member(
    clients: dict[str, HubClient], network: Network
) -> None:
    await accept_by_warning(clients, network)


@pytest.fixture
async def pg_network(
    tmp_path: Path, clock: ManualClock, postgres_url: str
) -> AsyncIterator[Network]:
    net = await start_network(tmp_path, clock, database_url=postgres_url)
    try:
        yield net
    finally:
        await net.server.stop(0.5)
        net.store.dispose()


@pytest.mark.postgres
async def test_a_lead_accepted_by_warning_a_member_on_postgresql(pg_network: Network) -> None:
    made = {code: pg_network.client(code) for code in pg_network.keys}
    try:
        await accept_by_warning(made, pg_network)
    finally:
        for c in made.values():
            await c.close()


async def accept_by_warning(clients: dict[str, HubClient], network: Network) -> None:
    """TriageLead warn_member end to end: refusals first, then the warning."""
    centre, bank_a, bank_b, wallet = (
        clients["CENTRE"],
        clients["BANKA"],
        clients["BANKB"],
        clients["PAYX"],
    )
    lead = await bank_a.submit_lead(lead_body(grade_pb2.GRADE_RED, MULE))
    mule = ("BANKB", MULE.account_number, "")

    # Refused: nothing is warned and the lead stays in the queue, untriaged.
    await refused(
        centre.warn_member_from_lead(lead.name, ("PAYX", "88880001", "Zhou"), 100),
        grpc.StatusCode.INVALID_ARGUMENT,
        "NOT_IN_LEAD",
    )
    for amount in (0, -5, 10**14 + 1):
        error = await refused(
            centre.warn_member_from_lead(lead.name, mule, amount),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_FIELD",
        )
        assert "warn_member.amount_at_risk_fen" in str(error)
    await refused(
        centre.warn_member_from_lead(lead.name, mule, 100, note="x" * 4001),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
    )
    await refused(
        centre.warn_member_from_lead(lead.name, mule, 100, fraud_type=999),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
    )
    await refused(
        centre.triage_lead(
            lead_pb2.TriageLeadBody(name=lead.name, warn_member=lead_pb2.WarnFromLead(note="?"))
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
    )
    # A member holding its own certificate cannot warn from the centre's triage.
    await refused(
        bank_b.warn_member_from_lead(lead.name, mule, 100),
        grpc.StatusCode.PERMISSION_DENIED,
        "KIND_NOT_ALLOWED",
    )
    still = await centre.get_lead(lead.name)
    assert still.state == lead_pb2.LEAD_STATE_SUBMITTED and not still.warning_id
    assert still.triage_clock_id == lead.triage_clock_id
    assert await centre.list_warnings() == []
    [clock] = await centre.list_clocks(case_id=lead.name)
    assert clock.state == sla_pb2.CLOCK_STATE_OPEN

    # Accepted: BANKB is warned about its customer, in the lead's grade, in the same step.
    network.clock.advance(timedelta(minutes=3))
    now = network.clock.now()
    warned = await centre.warn_member_from_lead(
        lead.name,
        mule,
        2_000_000,
        note="on the phone with a fake policeman now",
        fraud_type=case_pb2.FRAUD_TYPE_IMPERSONATING_OFFICIALS,
    )
    assert warned.state == lead_pb2.LEAD_STATE_ACCEPTED
    assert warned.outcome == lead_pb2.LEAD_OUTCOME_WARNED and warned.warning_id
    assert not warned.case_id and not warned.list_entry_id
    assert (await bank_a.get_lead(lead.name)).warning_id == warned.warning_id

    [notice] = await notices(bank_b, delivery_pb2.NOTICE_KIND_WARNING, 1)
    warning = notice.warning
    assert warning.warning_id == warned.warning_id and warning.lead_id == lead.name
    assert warning.sender == "CENTRE" and warning.addressee == "BANKB"
    assert warning.account.account_number == MULE.account_number
    assert warning.account.holder_name == "Li Si"  # the lead's, the body gave none
    assert warning.grade == grade_pb2.GRADE_RED
    assert warning.amount_at_risk_fen == 2_000_000
    assert warning.text == "on the phone with a fake policeman now"
    assert warning.message_id == notice.origin.message_id
    # Red: the contact clock runs 10 minutes from the triage.
    contact_by = warning.contact_by_time.ToDatetime().replace(tzinfo=now.tzinfo)
    assert contact_by == now + timedelta(minutes=10)
    clocks = await bank_b.list_clocks(case_id=warning.warning_id)
    assert {c.clock for c in clocks} == {"warning_contact_red", "warning_outcome"}
    assert all(c.state == sla_pb2.CLOCK_STATE_OPEN for c in clocks)

    [told] = await notices(bank_a, delivery_pb2.NOTICE_KIND_LEAD_TRIAGED, 1)
    assert told.lead.warning_id == warned.warning_id
    assert f"warning {warned.warning_id} sent to BANKB" in told.summary
    assert told.origin.message_id == warning.message_id
    [met] = await centre.list_clocks(case_id=lead.name)
    assert met.state == sla_pb2.CLOCK_STATE_MET

    # GetWarning names the lead; the addressee reads it, the lead's submitter (not a party to
    # the warning) and a stranger do not.
    read = await bank_b.get_warning(warned.warning_id)
    assert read.lead_id == lead.name
    assert (await centre.get_warning(warned.warning_id)).lead_id == lead.name
    for outsider in (bank_a, wallet):
        await refused(
            outsider.get_warning(warned.warning_id), grpc.StatusCode.NOT_FOUND, "WARNING_NOT_FOUND"
        )
    await refused(
        centre.warn_member_from_lead(lead.name, mule, 100),
        grpc.StatusCode.FAILED_PRECONDITION,
        "LEAD_CLOSED",
    )
    assert len(await centre.list_warnings()) == 1
    # At the hub, `stophub warning show` names the lead.
    shown = CliRunner().invoke(
        main, ["warning", "show", warned.warning_id, "--db", network.database_url]
    )
    assert shown.exit_code == 0, shown.output
    assert f"from lead   {lead.name}" in shown.output
