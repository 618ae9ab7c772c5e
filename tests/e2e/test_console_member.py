"""The member desk over HTTP against a real hub: a bank's counter officer files a report and
verifies it, an order the centre issues reaches the payee bank's inbox through its console's
delivery stream and is answered with an onward transfer, appeals are filed, and one
institution's console cannot read another's cases or orders."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from adapters.console.models import StoredDelivery
from stophub.v1 import account_pb2, case_pb2, order_pb2
from tests.console_support import Browserless, ConsoleNetwork, console_network

# One worker runs the whole module: one hub and console for the module.
pytestmark = pytest.mark.xdist_group("console_member")

PAYEE_ACCOUNT = "6222020000000002"
PAYEE_HOLDER = "李四"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleNetwork]:
    with console_network(Path(tmp_path_factory.mktemp("member")), ["BANKA", "BANKB"]) as n:
        yield n


@pytest.fixture(scope="module")
def centre(net: ConsoleNetwork) -> Any:
    return net.client("CENTRE")


def signed_in(net: ConsoleNetwork, code: str, who: str = "duty") -> Browserless:
    b = Browserless(net.consoles[code])
    assert b.login(who).status_code == 303
    return b


def report_form(**over: str) -> dict[str, str]:
    form = {
        "rows": "3",
        "victim_name": "张三",
        "victim_id": "110101199001011234",
        "victim_phone": "13800000000",
        "payer_account": "6222020000000001",
        "fraud_type": "fake_investment",
        "reported_at": "2026-03-02T16:50",
        "description": "Paid a fake investment platform",
        "tx0_time": "2026-03-02T16:30:00",
        "tx0_amount": "5,000.00",
        "tx0_payee_institution": "BANKB",
        "tx0_payee_account": PAYEE_ACCOUNT,
        "tx0_payee_name": PAYEE_HOLDER,
        "tx0_channel": "mobile_banking",
        "tx0_reference": "REF-1",
        # A row left with only its channel chosen is blank: ignored.
        "tx1_channel": "counter",
    }
    form.update(over)
    return form


def file_report(b: Browserless, **over: str) -> str:
    answer = b.post("/report", report_form(**over))
    assert answer.status_code == 303, answer.text
    location = answer.headers["location"]
    assert location.startswith("/cases/")
    return location.removeprefix("/cases/")


def test_filing_a_report_creates_the_case_with_the_person(net: ConsoleNetwork, centre: Any) -> None:
    b = signed_in(net, "BANKA")
    assert b.get("/report").status_code == 200
    case_id = file_report(b)
    page = b.get(f"/cases/{case_id}")
    assert page.status_code == 200 and case_id in page.text
    case = net.run(centre.get_case(case_id))
    assert case.reporting_institution == "BANKA"
    assert case.state == case_pb2.CASE_STATE_REPORTED
    assert case.loss_fen == 500000
    assert len(case.report.transactions) == 1
    t = case.report.transactions[0]
    # 16:30 in Asia/Shanghai is 08:30 UTC.
    assert t.transaction_time.ToDatetime(tzinfo=UTC) == datetime(2026, 3, 2, 8, 30, tzinfo=UTC)
    assert t.payer.institution_code == "BANKA" and t.payee.holder_name == PAYEE_HOLDER
    assert case.events[0].operator == "duty" and case.events[0].actor == "BANKA"
    # The verify clock shows on the case page with the form.
    assert f'action="/cases/{case_id}/verify"' in page.text
    assert "countdown" in page.text
    # In Chinese, the counter form speaks as bank staff do.
    assert b.post("/language", {"language": "zh", "back": "/report"}).status_code == 303
    zh = b.get("/report")
    assert "受理受害人报案" in zh.text and "虚假投资理财" in zh.text
    assert b.post("/language", {"language": "en", "back": "/report"}).status_code == 303


def reports_at_hub(net: ConsoleNetwork, centre: Any) -> int:
    """How many reports BANKA has at the hub: each starts its verify clock."""
    clocks = net.run(centre.list_clocks(institution="BANKA"))
    return sum(1 for k in clocks if k.clock == "verify")


def test_bad_input_is_refused_naming_the_field_and_keeping_what_was_typed(
    net: ConsoleNetwork, centre: Any
) -> None:
    b = signed_in(net, "BANKA")
    before = reports_at_hub(net, centre)
    answer = b.post(
        "/report",
        report_form(
            victim_name="王<b>五</b>",
            tx0_amount="0",
            tx0_payee_institution="NOBANK",
            tx0_time="2026-03-03T10:00",
            tx0_reference="kept-ref-77",
        ),
    )
    assert answer.status_code == 400
    for name in ("tx0_amount", "tx0_payee_institution", "tx0_time"):
        assert f'data-field="{name}"' in answer.text
    assert 'value="kept-ref-77"' in answer.text
    assert 'value="NOBANK"' in answer.text
    assert "王&lt;b&gt;五&lt;/b&gt;" in answer.text and "<b>五" not in answer.text
    assert reports_at_hub(net, centre) == before
    # "Add rows" re-renders with three more rows, nothing sent.
    more = b.post("/report", {**report_form(), "more": "1"})
    assert more.status_code == 200 and 'name="tx5_time"' in more.text
    assert reports_at_hub(net, centre) == before
    # A viewer cannot file.
    viewer = signed_in(net, "BANKA", "watch")
    assert viewer.post("/report", report_form()).status_code == 403
    assert reports_at_hub(net, centre) == before


def test_verify_own_report(net: ConsoleNetwork, centre: Any) -> None:
    b = signed_in(net, "BANKA")
    case_id = file_report(b)
    refused = b.post(f"/cases/{case_id}/verify", {"decision": "reject", "reason": ""})
    assert refused.status_code == 400 and "Say why the report is rejected." in refused.text
    done = b.post(f"/cases/{case_id}/verify", {"decision": "confirm", "reason": ""})
    assert done.status_code == 303 and done.headers["location"] == f"/cases/{case_id}"
    case = net.run(centre.get_case(case_id))
    assert case.state == case_pb2.CASE_STATE_VERIFIED
    verified = [e for e in case.events if e.kind == "report.verified"]
    assert verified and verified[0].operator == "duty"
    # Verified once: the hub's refusal is shown on the form.
    again = b.post(f"/cases/{case_id}/verify", {"decision": "confirm", "reason": ""})
    assert again.status_code == 409 and "ALREADY_VERIFIED" in again.text


def wait_for_delivery(net: ConsoleNetwork, code: str, order_id: str) -> None:
    desk = net.consoles[code].desk
    for _ in range(100):
        with desk.db() as s:
            if s.scalars(select(StoredDelivery).where(StoredDelivery.order_id == order_id)).first():
                return
        time.sleep(0.1)
    raise AssertionError(f"{code}'s console never stored order {order_id}")


def issue_stop(
    net: ConsoleNetwork,
    centre: Any,
    case_id: str,
    institution: str = "BANKB",
    account: str = PAYEE_ACCOUNT,
    holder: str = PAYEE_HOLDER,
) -> order_pb2.Order:
    fact = order_pb2.TransactionFact(amount_fen=500000)
    fact.transaction_time.FromDatetime(datetime(2026, 3, 2, 8, 30, tzinfo=UTC))
    order: order_pb2.Order = net.run(
        centre.issue_order(
            order_pb2.OrderInstruction(
                case_id=case_id,
                stop=order_pb2.StopInstruction(
                    account=account_pb2.AccountRef(
                        institution_code=institution,
                        account_number=account,
                        holder_name=holder,
                    ),
                    amount_fen=500000,
                    transactions=[fact],
                ),
            )
        )
    )
    return order


def answer_form(**over: str) -> dict[str, str]:
    form = {
        "rows": "3",
        "fact_holder": "yes",
        "fact_account": "yes",
        "fact_time": "yes",
        "fact_amount": "yes",
        "outcome": "done",
        "held": "3000",
        "balance": "0",
        "reason_code": "AM04",
        "reason": "balance short",
        "ow0_time": "2026-03-02T16:45:00",
        "ow0_amount": "2000.00",
        "ow0_institution": "PAYX",
        "ow0_account": "PAYX000123",
        "ow0_holder": "王五",
        "ow0_reference": "OUT-1",
    }
    form.update(over)
    return form


def test_order_reaches_the_inbox_and_is_answered_with_an_onward_transfer(
    net: ConsoleNetwork, centre: Any
) -> None:
    reporter = signed_in(net, "BANKA")
    case_id = file_report(reporter)
    assert reporter.post(f"/cases/{case_id}/verify", {"decision": "confirm"}).status_code == 303
    order = issue_stop(net, centre, case_id)
    wait_for_delivery(net, "BANKB", order.order_id)
    b = signed_in(net, "BANKB")
    inbox = b.get("/inbox")
    assert inbox.status_code == 200 and order.order_id in inbox.text
    assert f"/orders/{order.order_id}/answer?case={case_id}" in inbox.text
    form = b.get(f"/orders/{order.order_id}/answer")
    assert form.status_code == 200 and PAYEE_HOLDER in form.text
    assert "signature verified" in form.text

    # The inbox and the answer form in Chinese (a supervisor who reads Chinese).
    boss = signed_in(net, "BANKB", "boss")
    assert boss.post("/language", {"language": "zh", "back": "/inbox"}).status_code == 303
    assert "发给以下机构的指令" in boss.get("/inbox").text
    zh = boss.get(f"/orders/{order.order_id}/answer")
    assert zh.status_code == 200 and "四要素与本行记录核对" in zh.text
    # A viewer cannot answer: refused at the console, nothing reaches the hub.
    viewer = signed_in(net, "BANKB", "watch")
    assert viewer.post(f"/orders/{order.order_id}/answer", answer_form()).status_code == 403
    # Bad input: a hold above the order's amount, an onward transfer before the money came.
    bad = b.post(
        f"/orders/{order.order_id}/answer",
        answer_form(held="6000", ow0_time="2026-03-02T15:00:00"),
    )
    assert bad.status_code == 400
    assert 'data-field="held"' in bad.text and 'data-field="ow0_time"' in bad.text
    assert 'value="OUT-1"' in bad.text
    pending = net.run(centre.get_case(case_id)).orders[0]
    assert pending.state == order_pb2.ORDER_STATE_PENDING

    sent = b.post(f"/orders/{order.order_id}/answer?case={case_id}", answer_form())
    assert sent.status_code == 303, sent.text
    case = net.run(centre.get_case(case_id))
    held = next(o for o in case.orders if o.order_id == order.order_id)
    assert held.state == order_pb2.ORDER_STATE_HOLDING and held.held_fen == 300000
    assert held.result.onward_transfers[0].to_account.account_number == "PAYX000123"
    answered = [e for e in case.events if e.kind == "order.answered"]
    assert answered and answered[0].operator == "duty"
    trail = net.run(centre.get_case_trail(case_id))
    assert any(n.account.account_number == "PAYX000123" for n in trail.nodes)
    # The inbox shows it holding now; answering again is the hub's refusal, kept on the form.
    assert "holding" in b.get("/inbox").text

    # An appeal against the stop this bank holds.
    filed = b.post(
        "/filed-appeals/new",
        {"reference": order.order_id, "grounds": "the holder proved the money is salary"},
    )
    assert filed.status_code == 303, filed.text
    appeal_id = filed.headers["location"].split("done=")[1]
    appeal = net.run(centre.get_appeal(appeal_id))
    assert appeal.appellant == "BANKB" and appeal.reference == order.order_id
    listing = b.get("/filed-appeals")
    assert listing.status_code == 200 and appeal_id in listing.text
    # The same appeal twice: the hub refuses, the grounds typed are kept.
    twice = b.post(
        "/filed-appeals/new", {"reference": order.order_id, "grounds": "second try grounds"}
    )
    assert twice.status_code == 409 and "APPEAL_PENDING" in twice.text
    assert "second try grounds" in twice.text
    empty = b.post("/filed-appeals/new", {"reference": order.order_id, "grounds": " "})
    assert empty.status_code == 400 and 'data-field="grounds"' in empty.text


def test_one_institution_cannot_read_anothers_cases_or_orders(
    net: ConsoleNetwork, centre: Any
) -> None:
    bankb = signed_in(net, "BANKB")
    case_id = file_report(
        bankb,
        victim_name="赵六",
        payer_account="6222020000000099",
        tx0_payee_institution="PAYX",
        tx0_payee_account="PAYX000999",
        tx0_payee_name="钱七",
    )
    assert bankb.post(f"/cases/{case_id}/verify", {"decision": "confirm"}).status_code == 303
    order = issue_stop(net, centre, case_id, "PAYX", "PAYX000999", "钱七")
    banka = signed_in(net, "BANKA")
    page = banka.get(f"/cases/{case_id}")
    assert page.status_code in (403, 502) and "NOT_PARTY_TO_CASE" in page.text
    assert "赵六" not in page.text
    answer = banka.get(f"/orders/{order.order_id}/answer?case={case_id}")
    assert answer.status_code == 403 and "NOT_PARTY_TO_CASE" in answer.text
    assert "赵六" not in answer.text
    posted = banka.post(f"/orders/{order.order_id}/answer?case={case_id}", answer_form())
    assert posted.status_code == 403
    assert net.run(centre.get_case(case_id)).orders[0].state == order_pb2.ORDER_STATE_PENDING
    # A member page is not on the centre's kind of desk, and the inbox of BANKA lists nothing
    # of BANKB's.
    assert order.order_id not in banka.get("/inbox").text


def test_a_member_acknowledges_the_breach_of_its_own_clock(
    net: ConsoleNetwork, centre: Any
) -> None:
    # Last in this module: it moves the shared clock past the 5-minute verify window.
    b = signed_in(net, "BANKA")
    case_id = file_report(b)
    net.advance(timedelta(minutes=6))
    clock = None
    for _ in range(100):
        found = net.run(centre.list_clocks(case_id=case_id, breached_only=True))
        clock = next((k for k in found if k.clock == "verify"), None)
        if clock is not None:
            break
        time.sleep(0.1)
    assert clock is not None and clock.responsible == "BANKA"
    page = b.get("/escalations")
    assert page.status_code == 200 and f'data-clock="{clock.clock_id}"' in page.text
    assert (
        signed_in(net, "BANKA", "watch")
        .post("/escalations/acknowledge", {"clock_id": clock.clock_id, "case_id": case_id})
        .status_code
        == 403
    )
    done = b.post(
        "/escalations/acknowledge",
        {"clock_id": clock.clock_id, "case_id": case_id, "note": "calling the victim back"},
    )
    assert done.status_code == 303
    after = next(
        k for k in net.run(centre.list_clocks(case_id=case_id)) if k.clock_id == clock.clock_id
    )
    assert after.acknowledged_by == "BANKA" and after.acknowledged_operator == "duty"
    assert f'data-clock="{clock.clock_id}"' not in b.get("/escalations").text
