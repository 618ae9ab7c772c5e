"""Warnings at the duty desks over HTTP against a real hub: the centre's console sends a
warning, the addressed bank's console shows it in its queue (red first), hears it live,
acknowledges it and reports the outcome; refusals come back as one readable line; a viewer
and another bank cannot act on it; the centre regrades it."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from adapters.console.models import StoredDelivery
from stophub.v1 import grade_pb2, warning_pb2
from tests.console_support import Browserless, ConsoleNetwork, console_network

pytestmark = pytest.mark.xdist_group("console_warnings")


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleNetwork]:
    with console_network(
        Path(tmp_path_factory.mktemp("warnings")), ["CENTRE", "BANKA", "BANKB"]
    ) as n:
        yield n


def signed_in(net: ConsoleNetwork, code: str, who: str = "duty") -> Browserless:
    b = Browserless(net.consoles[code])
    assert b.login(who).status_code == 303
    return b


def send(b: Browserless, **over: str) -> str:
    form = {
        "institution": "BANKB",
        "account": "6222020000000009",
        "holder": "王五",
        "amount_at_risk": "30,000.00",
        "grade": "yellow",
        "fraud_type": "fake_investment",
        "text": "Customer about to pay a <b>fake</b> investment platform",
    }
    form.update(over)
    answer = b.post("/warnings/new", form)
    assert answer.status_code == 303, answer.text
    location = answer.headers["location"]
    assert location.startswith("/warnings/")
    return location.removeprefix("/warnings/")


def one_line(html: str) -> str:
    found = re.search(r'<div class="refusal" role="alert">(.*?)</div>', html, re.S)
    assert found, html
    return " ".join(re.sub(r"<[^>]+>", " ", found.group(1)).split())


def test_a_warning_from_the_centre_to_the_banks_outcome(net: ConsoleNetwork) -> None:
    centre = signed_in(net, "CENTRE")
    assert centre.get("/warnings/new").status_code == 200
    quiet = send(centre, grade="green", account="6222020000000008")
    red = send(centre, grade="red")
    bank = signed_in(net, "BANKB")
    queue = bank.get("/warnings")
    assert queue.status_code == 200
    # Red first, then the others; the text is escaped, not markup.
    assert queue.text.index(f'data-warning="{red}"') < queue.text.index(f'data-warning="{quiet}"')
    page = bank.get(f"/warnings/{red}")
    assert "&lt;b&gt;fake&lt;/b&gt;" in page.text and "<b>fake</b>" not in page.text
    assert 'id="acknowledge"' in page.text
    # The notice reached the bank's console through its delivery stream.
    for _ in range(100):
        with net.consoles["BANKB"].desk.db() as s:
            kinds = list(s.scalars(select(StoredDelivery.kind)))
        if "NOTICE_KIND_WARNING" in kinds:
            break
        time.sleep(0.1)
    assert "NOTICE_KIND_WARNING" in kinds

    ack = bank.post(f"/warnings/{red}/acknowledge", {"note": "calling the customer"})
    assert ack.status_code == 303, ack.text
    again = bank.post(f"/warnings/{red}/acknowledge", {"note": "twice"})
    assert again.status_code == 409
    assert "already acknowledged" in one_line(again.text)

    too_much = bank.post(
        f"/warnings/{red}/outcome",
        {"outcome": "reached_dissuaded", "loss_prevented": "30000.01", "text": "stopped"},
    )
    assert too_much.status_code == 400
    line = one_line(too_much.text)
    assert "cannot be more than the amount at risk" in line and "PREVENTED_ABOVE_AT_RISK" in line
    assert 'value="30000.01"' in too_much.text

    done = bank.post(
        f"/warnings/{red}/outcome",
        {"outcome": "reached_dissuaded", "loss_prevented": "30000", "text": "customer stopped"},
    )
    assert done.status_code == 303, done.text
    closed = bank.get(f"/warnings/{red}?done=outcome")
    assert 'id="report-outcome"' not in closed.text
    assert "reached dissuaded" in closed.text and "30,000.00" in closed.text
    w: Any = net.run(net.client("CENTRE").get_warning(red))
    assert w.state == warning_pb2.WARNING_STATE_CLOSED
    assert w.loss_prevented_fen == 3_000_000
    assert red not in bank.get("/warnings").text


def test_a_viewer_and_another_bank_cannot_act(net: ConsoleNetwork) -> None:
    centre = signed_in(net, "CENTRE")
    wid = send(centre)
    watcher = signed_in(net, "BANKB", "watch")
    page = watcher.get(f"/warnings/{wid}")
    assert page.status_code == 200 and 'id="acknowledge"' not in page.text
    refused = watcher.post(f"/warnings/{wid}/acknowledge", {"note": "x"})
    assert refused.status_code == 403
    other = signed_in(net, "BANKA")
    assert wid not in other.get("/warnings").text
    assert other.get(f"/warnings/{wid}").status_code == 404
    # The hub refuses another bank's acknowledgement: nothing changes.
    answer = other.post(f"/warnings/{wid}/acknowledge", {"note": "not mine"})
    assert answer.status_code in (404, 409)
    w: Any = net.run(net.client("CENTRE").get_warning(wid))
    assert w.state == warning_pb2.WARNING_STATE_SENT
    # The centre is not the addressee: the hub refuses its acknowledgement, in one line.
    not_mine = centre.post(f"/warnings/{wid}/acknowledge", {"note": "x"})
    assert not_mine.status_code == 409 and "NOT_ADDRESSEE" in one_line(not_mine.text)
    assert 'id="acknowledge"' not in centre.get(f"/warnings/{wid}").text
    # Only the centre regrades.
    assert other.post(f"/warnings/{wid}/grade", {"grade": "red", "reason": "x"}).status_code == 404
    w = net.run(net.client("CENTRE").get_warning(wid))
    assert w.state == warning_pb2.WARNING_STATE_SENT


def test_the_centre_regrades_and_a_bad_form_sends_nothing(net: ConsoleNetwork) -> None:
    centre = signed_in(net, "CENTRE")
    wid = send(centre, grade="green")
    bad = centre.post(f"/warnings/{wid}/grade", {"grade": "purple", "reason": ""})
    assert bad.status_code == 400
    same = centre.post(f"/warnings/{wid}/grade", {"grade": "green", "reason": "no change"})
    assert same.status_code == 409 and "already has this grade" in one_line(same.text)
    up = centre.post(f"/warnings/{wid}/grade", {"grade": "red", "reason": "victim on the phone"})
    assert up.status_code == 303, up.text
    w: Any = net.run(net.client("CENTRE").get_warning(wid))
    assert w.grade == grade_pb2.GRADE_RED and w.grade_reason == "victim on the phone"
    before = len(net.run(net.client("CENTRE").list_warnings()))
    bad_send = centre.post("/warnings/new", {"institution": "BANKB", "account": "x", "text": ""})
    assert bad_send.status_code == 400
    assert len(net.run(net.client("CENTRE").list_warnings())) == before


def test_already_lost_is_filed_as_a_report_and_opens_a_case(net: ConsoleNetwork) -> None:
    centre = signed_in(net, "CENTRE")
    wid = send(centre, account="6222020000000011")
    bank = signed_in(net, "BANKB")
    page = bank.get(f"/warnings/{wid}")
    link = re.search(r'<p id="already-lost">.*?href="([^"]+)"', page.text, re.S)
    assert link, page.text
    form = bank.get(link.group(1).replace("&amp;", "&"))
    assert form.status_code == 200
    assert f'name="warning" value="{wid}"' in form.text
    assert 'value="6222020000000011"' in form.text
    answer = bank.post(
        "/report",
        {
            "warning": wid,
            "rows": "1",
            "victim_name": "王五",
            "victim_id": "110101199001011234",
            "payer_account": "6222020000000011",
            "fraud_type": "fake_investment",
            "reported_at": "2026-03-02T16:50",
            "description": "Paid before we reached him",
            "tx0_time": "2026-03-02T08:30:00",
            "tx0_amount": "12,000.00",
            "tx0_payee_institution": "BANKA",
            "tx0_payee_account": "6222020000000055",
            "tx0_payee_name": "钱七",
            "tx0_channel": "mobile_banking",
            "tx0_reference": "REF-LOST",
        },
    )
    assert answer.status_code == 303, answer.text
    w: Any = net.run(net.client("CENTRE").get_warning(wid))
    assert w.state == warning_pb2.WARNING_STATE_CLOSED
    assert w.outcome == warning_pb2.WARNING_OUTCOME_ALREADY_LOST and w.case_id
    case: Any = net.run(net.client("CENTRE").get_case(w.case_id))
    assert case.loss_fen == 1_200_000
    assert w.case_id in bank.get(f"/warnings/{wid}").text


def test_a_new_warning_sounds_the_alarm_at_the_addressee(net: ConsoleNetwork) -> None:
    desk = net.consoles["BANKB"].desk
    heard = desk.broadcaster.subscribe()
    try:
        wid = send(signed_in(net, "CENTRE"))
        events = []
        for _ in range(100):
            while not heard.empty():
                events.append(heard.get_nowait())
            if any(e.url == f"/warnings/{wid}" for e in events):
                break
            time.sleep(0.1)
        mine = [e for e in events if e.url == f"/warnings/{wid}"]
        assert mine and mine[0].kind == "delivery" and mine[0].alarm
    finally:
        desk.broadcaster.unsubscribe(heard)


def test_the_warnings_pages_in_chinese(net: ConsoleNetwork) -> None:
    centre = signed_in(net, "CENTRE", "boss")
    wid = send(centre)
    assert centre.post("/language", {"language": "zh", "back": "/warnings"}).status_code == 303
    queue = centre.get("/warnings").text
    assert "未结预警" in queue and "发送预警" in queue and wid in queue
    page = centre.get(f"/warnings/{wid}").text
    assert "调整等级" in page and "涉险金额" in page
    assert "待研判线索" in centre.get("/leads").text


def test_a_bank_warns_the_centre_which_answers(net: ConsoleNetwork) -> None:
    bank = signed_in(net, "BANKA")
    assert "Your customer is at risk" in bank.get("/warnings/new").text
    wid = send(bank, institution="BANKA", account="6222020000000021", holder="孙八")
    assert wid not in bank.get("/warnings").text
    assert wid in bank.get("/warnings?sent=1").text
    centre = signed_in(net, "CENTRE")
    assert f'data-warning="{wid}"' in centre.get("/warnings").text
    page = centre.get(f"/warnings/{wid}").text
    assert 'id="acknowledge"' in page and 'id="already-lost"' not in page
    assert centre.post(f"/warnings/{wid}/acknowledge", {"note": "on it"}).status_code == 303
    done = centre.post(f"/warnings/{wid}/outcome", {"outcome": "not_reached", "text": "no answer"})
    assert done.status_code == 303, done.text
    w: Any = net.run(net.client("CENTRE").get_warning(wid))
    assert w.state == warning_pb2.WARNING_STATE_CLOSED and w.addressee == "CENTRE"
    assert w.outcome == warning_pb2.WARNING_OUTCOME_NOT_REACHED
    # The bank that sent it cannot answer it.
    refused = bank.post(f"/warnings/{wid}/acknowledge", {"note": "x"})
    assert refused.status_code == 409
