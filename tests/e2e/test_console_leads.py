"""Leads at the duty desks over HTTP against a real hub: a bank's console hands the centre a
lead, the centre's queue shows it (red first), the centre asks for more, the bank answers,
the centre regrades it and accepts it by listing one of its accounts (a proposal a second
supervisor approves, as a list entry is), or dismisses another; refusals are one readable
line; a viewer cannot act and another bank cannot read the lead."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from stophub.v1 import account_pb2, case_pb2, grade_pb2, lead_pb2
from tests.console_support import Browserless, ConsoleNetwork, console_network
from tests.e2e.wire_helpers import VICTIM

pytestmark = pytest.mark.xdist_group("console_leads")


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleNetwork]:
    with console_network(Path(tmp_path_factory.mktemp("leads")), ["CENTRE", "BANKA", "BANKB"]) as n:
        yield n


def signed_in(net: ConsoleNetwork, code: str, who: str = "duty") -> Browserless:
    b = Browserless(net.consoles[code])
    assert b.login(who).status_code == 303
    return b


def one_line(html: str) -> str:
    found = re.search(r'<div class="refusal" role="alert">(.*?)</div>', html, re.S)
    assert found, html
    return " ".join(re.sub(r"<[^>]+>", " ", found.group(1)).split())


def submit(b: Browserless, **over: str) -> str:
    form = {
        "accounts": "BANKB/6222020000000077 赵六\nBANKB/6222020000000078",
        "grade": "yellow",
        "grounds": "Many small credits from strangers, cashed out at once <script>",
    }
    form.update(over)
    answer = b.post("/leads/new", form)
    assert answer.status_code == 303, answer.text
    return str(answer.headers["location"]).removeprefix("/leads/")


def a_case(net: ConsoleNetwork) -> str:
    now = net.clock.now()
    report = case_pb2.Report(
        victim=case_pb2.Victim(name="Zhang San", id_number="110101199001011234"),
        fraud_type=case_pb2.FRAUD_TYPE_IMPERSONATING_OFFICIALS,
    )
    report.victim_report_time.FromDatetime(now)
    t = report.transactions.add(
        amount_fen=500_000,
        payer=VICTIM,
        payee=account_pb2.AccountRef(
            institution_code="BANKB", account_number="6222020000000077", holder_name="赵六"
        ),
        channel=case_pb2.PAYMENT_CHANNEL_MOBILE_BANKING,
        transaction_reference="TX-LEAD-1",
    )
    t.transaction_time.FromDatetime(now - timedelta(minutes=10))
    case: Any = net.run(net.client("BANKA").create_report(report))
    return str(case.case_id)


def test_a_lead_from_submission_to_listing(net: ConsoleNetwork) -> None:
    bank = signed_in(net, "BANKA")
    assert bank.get("/leads/new").status_code == 200
    green = submit(bank, grade="green")
    red = submit(bank, grade="red")
    centre = signed_in(net, "CENTRE")
    queue = centre.get("/leads")
    assert queue.status_code == 200
    assert queue.text.index(f'data-lead="{red}"') < queue.text.index(f'data-lead="{green}"')
    page = centre.get(f"/leads/{red}")
    assert "&lt;script&gt;" in page.text and "<script>" not in page.text.split("</header>")[1]

    asked = centre.post(f"/leads/{red}/ask", {"question": "Who opened the accounts?"})
    assert asked.status_code == 303, asked.text
    lead: Any = net.run(net.client("CENTRE").get_lead(red))
    assert lead.state == lead_pb2.LEAD_STATE_MORE_REQUESTED
    # Waiting for the member: the hub refuses triage, said in one line.
    early = centre.post(f"/leads/{red}/dismiss", {"reason": "too soon"})
    assert early.status_code == 409
    assert "has not answered the centre's question yet" in one_line(early.text)

    mine = bank.get(f"/leads/{red}")
    assert "Who opened the accounts?" in mine.text and 'id="answer"' in mine.text
    answered = bank.post(f"/leads/{red}/answer", {"answer": "Opened online last week"})
    assert answered.status_code == 303, answered.text
    again = bank.post(f"/leads/{red}/answer", {"answer": "twice"})
    assert again.status_code == 409 and "no question about this lead" in one_line(again.text)

    regraded = centre.post(f"/leads/{green}/grade", {"grade": "red", "reason": "same ring"})
    assert regraded.status_code == 303, regraded.text
    assert net.run(net.client("CENTRE").get_lead(green)).grade == grade_pb2.GRADE_RED

    case_id = a_case(net)
    bad = centre.post(f"/leads/{red}/list", {"account": "x", "basis": "?", "source_case_id": ""})
    assert bad.status_code == 400 and "Choose one of the lead" in bad.text
    # A listing needs a second person (as list_publish does): proposed, then approved.
    proposed = centre.post(
        f"/leads/{red}/list",
        {
            "account": "BANKB/6222020000000077/赵六",
            "basis": "account_trader",
            "source_case_id": case_id,
            "reason": "account trader",
        },
    )
    assert proposed.status_code == 303, proposed.text
    location = proposed.headers["location"]
    assert location.startswith("/proposals/")
    assert net.run(net.client("CENTRE").get_lead(red)).state == lead_pb2.LEAD_STATE_SUBMITTED
    boss = signed_in(net, "CENTRE", "boss")
    approved = boss.post(f"{location}/decide", {"decision": "approve"})
    assert approved.status_code == 303, approved.text
    lead = net.run(net.client("CENTRE").get_lead(red))
    assert lead.state == lead_pb2.LEAD_STATE_ACCEPTED and lead.list_entry_id

    dismissed = centre.post(f"/leads/{green}/dismiss", {"reason": "not enough"})
    assert dismissed.status_code == 303
    closed = centre.post(f"/leads/{green}/dismiss", {"reason": "again"})
    assert closed.status_code == 409 and "already accepted or dismissed" in one_line(closed.text)


def test_a_viewer_cannot_act_and_another_bank_cannot_read(net: ConsoleNetwork) -> None:
    bank = signed_in(net, "BANKA")
    name = submit(bank)
    watcher = signed_in(net, "CENTRE", "watch")
    page = watcher.get(f"/leads/{name}")
    assert page.status_code == 200 and 'id="dismiss"' not in page.text
    assert watcher.post(f"/leads/{name}/dismiss", {"reason": "x"}).status_code == 403
    other = signed_in(net, "BANKB")
    assert name not in other.get("/leads").text
    assert other.get(f"/leads/{name}").status_code == 404
    assert other.post(f"/leads/{name}/answer", {"answer": "x"}).status_code in (404, 409)
    # The member's desk has no triage; a bad form sends nothing.
    assert bank.post(f"/leads/{name}/dismiss", {"reason": "x"}).status_code == 404
    bad = bank.post("/leads/new", {"accounts": "not an account", "grade": "red", "grounds": ""})
    assert bad.status_code == 400 and "INSTITUTION/NUMBER" in bad.text
    lead: Any = net.run(net.client("CENTRE").get_lead(name))
    assert lead.state == lead_pb2.LEAD_STATE_SUBMITTED


def test_the_centre_regrades_a_case_from_its_page(net: ConsoleNetwork) -> None:
    case_id = a_case(net)
    centre = signed_in(net, "CENTRE")
    page = centre.get(f"/cases/{case_id}")
    assert 'id="regrade"' in page.text
    bad = centre.post(f"/cases/{case_id}/grade", {"grade": "purple", "reason": "x"})
    assert bad.status_code == 400
    done = centre.post(f"/cases/{case_id}/grade", {"grade": "red", "reason": "a ring of mules"})
    assert done.status_code == 303, done.text
    case: Any = net.run(net.client("CENTRE").get_case(case_id))
    assert case.grade == grade_pb2.GRADE_RED
    assert 'class="tag grade red"' in centre.get(f"/cases/{case_id}").text
    queue = centre.get("/queue").text
    row = queue[queue.index(f'data-case="{case_id}"') :].split("</tr>")[0]
    assert 'class="tag grade red"' in row
    watcher = signed_in(net, "CENTRE", "watch")
    assert 'id="regrade"' not in watcher.get(f"/cases/{case_id}").text
    assert (
        watcher.post(f"/cases/{case_id}/grade", {"grade": "green", "reason": "x"}).status_code
        == 403
    )
    # A bank's console offers no regrade.
    bank = signed_in(net, "BANKA")
    assert (
        bank.post(f"/cases/{case_id}/grade", {"grade": "green", "reason": "x"}).status_code == 404
    )
    assert net.run(net.client("CENTRE").get_case(case_id)).grade == grade_pb2.GRADE_RED


def test_the_centres_question_reaches_the_member_live(net: ConsoleNetwork) -> None:
    desk = net.consoles["BANKA"].desk
    heard = desk.broadcaster.subscribe()
    try:
        name = submit(signed_in(net, "BANKA"))
        asked = signed_in(net, "CENTRE").post(f"/leads/{name}/ask", {"question": "Statements?"})
        assert asked.status_code == 303
        events = []
        for _ in range(100):
            while not heard.empty():
                events.append(heard.get_nowait())
            if any(e.url == f"/leads/{name}" for e in events):
                break
            time.sleep(0.1)
        assert any(e.url == f"/leads/{name}" and e.kind == "delivery" for e in events)
    finally:
        desk.broadcaster.unsubscribe(heard)


def test_the_centre_accepts_a_lead_by_opening_a_case(net: ConsoleNetwork) -> None:
    name = submit(signed_in(net, "BANKA"), grade="red")
    centre = signed_in(net, "CENTRE")
    assert 'id="open-case"' in centre.get(f"/leads/{name}").text
    form = centre.get(f"/leads/{name}/open-case")
    assert form.status_code == 200 and f'action="/leads/{name}/open-case"' in form.text
    report = {
        "rows": "1",
        "victim_name": "张三",
        "victim_id": "110101199001011234",
        "payer_account": "6222020000000001",
        "fraud_type": "fake_investment",
        "reported_at": "2026-03-02T16:50",
        "description": "Found from a lead",
        "tx0_time": "2026-03-02T08:30:00",
        "tx0_amount": "8,000.00",
        "tx0_payee_institution": "BANKB",
        "tx0_payee_account": "6222020000000077",
        "tx0_payee_name": "赵六",
        "tx0_channel": "mobile_banking",
        "tx0_reference": "REF-FROM-LEAD",
    }
    bad = centre.post(f"/leads/{name}/open-case", {**report, "tx0_amount": "nothing"})
    assert bad.status_code == 400
    assert net.run(net.client("CENTRE").get_lead(name)).state == lead_pb2.LEAD_STATE_SUBMITTED
    opened = centre.post(f"/leads/{name}/open-case", report)
    assert opened.status_code == 303, opened.text
    lead: Any = net.run(net.client("CENTRE").get_lead(name))
    assert lead.state == lead_pb2.LEAD_STATE_ACCEPTED and lead.case_id
    assert opened.headers["location"] == f"/cases/{lead.case_id}"
    case: Any = net.run(net.client("CENTRE").get_case(lead.case_id))
    assert case.reporting_institution == "BANKA" and case.loss_fen == 800_000
    assert case.grade == grade_pb2.GRADE_RED


def test_the_centre_accepts_a_lead_by_warning_the_member(net: ConsoleNetwork) -> None:
    name = submit(signed_in(net, "BANKA"), grade="red")
    centre = signed_in(net, "CENTRE")
    assert 'id="warn-member"' in centre.get(f"/leads/{name}").text
    bad = centre.post(
        f"/leads/{name}/warn", {"account": "BANKB/6222020000000077/", "amount_at_risk": "-1"}
    )
    assert bad.status_code == 400
    assert net.run(net.client("CENTRE").get_lead(name)).state == lead_pb2.LEAD_STATE_SUBMITTED
    warned = centre.post(
        f"/leads/{name}/warn",
        {
            "account": "BANKB/6222020000000077/",
            "amount_at_risk": "20000",
            "fraud_type": "fake_investment",
            "note": "on the phone with a fake policeman now",
        },
    )
    assert warned.status_code == 303, warned.text
    lead: Any = net.run(net.client("CENTRE").get_lead(name))
    assert lead.state == lead_pb2.LEAD_STATE_ACCEPTED and lead.warning_id
    assert warned.headers["location"] == f"/warnings/{lead.warning_id}"
    # The warning reaches Bank B's queue, with the lead's grade.
    queue = signed_in(net, "BANKB").get("/warnings").text
    assert f'data-warning="{lead.warning_id}" data-grade="red"' in queue
