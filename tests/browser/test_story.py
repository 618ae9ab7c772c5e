"""The demo's story through the consoles, in a real browser (issue 20, "Tested in a real
browser"), every step clicked through the pages as the officer would:

1. the centre sets the standing auto-stop rule on /rule; a supervisor approves it;
2. a counter officer at Bank A files a victim's report on /report and verifies it; the
   centre's queue shows the case on top;
3. the rule stops the payee's account at Bank B: the stop reaches Bank B's open inbox within
   a second, without a reload, under a visible alert; Bank B's officer answers it with an
   onward transfer to PayX; the downstream stop appears in PayX's inbox and PayX answers;
4. a centre officer proposes a freeze, cannot approve it (the page says so), a supervisor
   does; Bank B answers the freeze;
5. the return to the victim is proposed, approved and answered; the case closes;
6. the centre publishes a list entry (approved); Bank B appeals the listing; the centre
   decides the appeal; Bank A's list check finds the account listed;
7. search, distributions, escalations, the regulator's read-only look and the queue in
   Chinese.

Each step checks the page AND what the hub recorded (net.client reads). The steps share one
network (a hub and consoles for the centre, Bank A, Bank B, PayX and the regulator) and run in
order: each needs the one before. With STOPHUB_SCREENSHOTS=1 each screen is saved into
docs/console/ (docs/console.md shows them)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

from stophub.v1 import account_pb2, appeal_pb2, blacklist_pb2, case_pb2, order_pb2
from tests.browser.browsing import click, path_of, shot, sign_in, text, url, wait
from tests.console_support import Console, ConsoleNetwork, console_network

# One worker runs the browser tests: one Chromium serves them all.
pytestmark = pytest.mark.xdist_group("browser")

MULE = "6222020000000002"  # the payee's account at Bank B
MULE_HOLDER = "李四"
WALLET = "PAYX000123"  # where Bank B says part of the money went on
VICTIM_ACCOUNT = "6222020000000001"
VICTIM_ID = "110101199001011234"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleNetwork]:
    codes = ["CENTRE", "BANKA", "BANKB", "PAYX", "REG"]
    with console_network(tmp_path_factory.mktemp("story"), codes) as network:
        yield network


@pytest.fixture(scope="module")
def story() -> dict[str, Any]:
    """What one step leaves for the next (the case id, order ids, …)."""
    return {}


@pytest.fixture
def hub(net: ConsoleNetwork) -> dict[str, Any]:
    return {code: net.client(code) for code in ("CENTRE", "BANKB")}


# ---- helpers -------------------------------------------------------------------------------


def become(browser: WebDriver, console: Console, username: str) -> None:
    """Sign in to `console` as `username`, leaving whoever was signed in there before."""
    browser.get(url(console, "/login"))
    browser.delete_all_cookies()
    sign_in(browser, console, username)


def screen(browser: WebDriver, name: str) -> None:
    """docs/console/NAME.png (STOPHUB_SCREENSHOTS=1): the whole page from its top, up to
    2,400 pixels high, not only the window's first screenful."""
    if os.environ.get("STOPHUB_SCREENSHOTS") != "1":
        return
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, max(1000, min(int(height) + 140, 2400)))
    browser.execute_script("window.scrollTo(0, 0)")
    shot(browser, name)
    browser.set_window_size(1400, 1000)


def go(browser: WebDriver, console: Console, path: str) -> None:
    browser.get(url(console, path))


def fill(form: WebElement, values: dict[str, str]) -> None:
    """Type each value into the field of that name, as a person would (a date-time field
    through its value: its widget's keystrokes depend on the browser's locale)."""
    driver = form.parent
    for name, value in values.items():
        field = form.find_element(By.NAME, name)
        tag, kind = field.tag_name, field.get_attribute("type")
        if tag == "select":
            Select(field).select_by_value(value)
        elif kind in ("checkbox", "radio"):
            for box in form.find_elements(By.NAME, name):
                if box.get_attribute("value") == value and not box.is_selected():
                    box.click()
        elif kind == "datetime-local":
            driver.execute_script("arguments[0].value = arguments[1]", field, value)
        else:
            field.clear()
            field.send_keys(value)


def link(browser: WebDriver, partial: str) -> None:
    old = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.PARTIAL_LINK_TEXT, partial).click()
    wait(browser, lambda b: old.id != b.find_element(By.TAG_NAME, "html").id)


def approve_as_boss(browser: WebDriver, console: Console, proposal_path: str) -> None:
    become(browser, console, "boss")
    go(browser, console, proposal_path)
    click(browser, "#approve")
    assert "done" in text(browser).lower() or not path_of(browser).startswith("/proposals/")


def case_of(net: ConsoleNetwork, hub: dict[str, Any], case_id: str) -> case_pb2.Case:
    got: case_pb2.Case = net.run(hub["CENTRE"].get_case(case_id))
    return got


def event(case: case_pb2.Case, kind: str, order_id: str = "") -> case_pb2.CaseEvent:
    found = [e for e in case.events if e.kind == kind and (not order_id or e.order_id == order_id)]
    assert found, [(e.kind, e.order_id) for e in case.events]
    return found[-1]


def orders(case: case_pb2.Case, kind: int, to: str = "") -> list[order_pb2.Order]:
    return [o for o in case.orders if o.kind == kind and (not to or o.addressed_to == to)]


def row_of(browser: WebDriver, order_id: str, timeout: float = 5) -> WebElement:
    found: WebElement = wait(
        browser,
        lambda b: next(
            iter(b.find_elements(By.CSS_SELECTOR, f"tr[data-order='{order_id}']")), None
        ),
        timeout=timeout,
    )
    return found


def answer(browser: WebDriver, order_id: str, values: dict[str, str], name: str = "") -> None:
    """Open the order's answer form from the inbox, fill it in and send it."""
    row = row_of(browser, order_id)
    old = browser.find_element(By.TAG_NAME, "html")
    row.find_element(By.LINK_TEXT, "Answer").click()
    wait(browser, lambda b: old.id != b.find_element(By.TAG_NAME, "html").id)
    assert browser.find_elements(By.ID, "answer-form"), (path_of(browser), text(browser))
    form = browser.find_element(By.ID, "answer-form")
    fill(form, values)
    if name:
        screen(browser, name)
    click(browser, "#answer-form button.primary")
    assert "/answer" not in path_of(browser), text(browser)


# ---- the story -----------------------------------------------------------------------------


def step_1_the_centre_sets_the_standing_rule_and_a_supervisor_approves_it(
    net: ConsoleNetwork, browser: WebDriver
) -> None:
    centre = net.consoles["CENTRE"]
    become(browser, centre, "duty")
    go(browser, centre, "/rule")
    form = browser.find_element(By.CSS_SELECTOR, "form.rule-form")
    fill(
        form,
        {
            "rule_id": "R1",
            "enabled": "1",
            "max_amount": "100000",
            "follow_onward_transfers": "1",
            "max_layer": "0",
        },
    )
    click(browser, "#send")
    proposal = path_of(browser)
    assert proposal.startswith("/proposals/"), text(browser)
    approve_as_boss(browser, centre, proposal)
    go(browser, centre, "/rule")
    in_force = browser.find_element(By.ID, "rule-in-force").text
    assert "R1" in in_force and "boss" in in_force


def step_2_bank_a_files_the_report_and_verifies_it_the_queue_shows_it_on_top(
    net: ConsoleNetwork, browser: WebDriver, story: dict[str, Any], hub: dict[str, Any]
) -> None:
    bank_a, bank_b = net.consoles["BANKA"], net.consoles["BANKB"]
    # Bank B's officer has the inbox open (another tab) before the report is verified.
    become(browser, bank_b, "duty")
    go(browser, bank_b, "/inbox")
    wait(browser, lambda b: b.execute_script("return document.body.dataset.listening") == "1")
    story["inbox_tab"] = browser.current_window_handle
    story["inbox_loaded"] = browser.execute_script("return performance.timeOrigin")
    browser.switch_to.new_window("tab")
    story["tab"] = browser.current_window_handle

    become(browser, bank_a, "duty")
    link(browser, "New report")
    form = browser.find_element(By.ID, "report-form")
    fill(
        form,
        {
            "victim_name": "张三",
            "victim_id": VICTIM_ID,
            "victim_phone": "13800000000",
            "payer_account": VICTIM_ACCOUNT,
            "fraud_type": "fake_investment",
            "reported_at": "2026-03-02T16:50",
            "description": "Paid a fake investment platform after a call from 'customer service'",
            "tx0_time": "2026-03-02T16:30:00",
            "tx0_amount": "5,000.00",
            "tx0_payee_institution": "BANKB",
            "tx0_payee_account": MULE,
            "tx0_payee_name": MULE_HOLDER,
            "tx0_channel": "mobile_banking",
            "tx0_reference": "REF-1",
        },
    )
    screen(browser, "report")
    click(browser, "#report-form button.primary")
    assert path_of(browser).startswith("/cases/"), text(browser)
    case_id = path_of(browser).removeprefix("/cases/").split("?")[0]
    story["case"] = case_id
    case = case_of(net, hub, case_id)
    assert case.state == case_pb2.CASE_STATE_REPORTED and case.loss_fen == 500_000
    assert event(case, "report.received").operator == "duty"

    go(browser, bank_a, f"/cases/{case_id}/verify")
    screen(browser, "verify")
    browser.find_element(By.CSS_SELECTOR, "button[value='confirm']").click()
    verified = time.monotonic()
    story["verified"] = verified

    # Bank B's tab: the stop shows within a second, without a reload, under an alert.
    browser.switch_to.window(story["inbox_tab"])
    alert = wait(
        browser,
        lambda b: next(
            (e for e in b.find_elements(By.ID, "alert") if e.is_displayed() and e.text), None
        ),
        timeout=5,
    )
    row = wait(
        browser,
        lambda b: next(
            iter(b.find_elements(By.XPATH, f"//tr[starts-with(@data-order, '{case_id}')]")), None
        ),
        timeout=5,
    )
    took = time.monotonic() - verified
    assert took <= 1.0, f"the order showed {took:.2f} s after the report was verified"
    assert browser.execute_script("return performance.timeOrigin") == story["inbox_loaded"]
    assert MULE in row.text and "alarm" in (alert.get_attribute("class") or "")
    story["stop"] = row.get_attribute("data-order")
    screen(browser, "inbox-alert")

    case = case_of(net, hub, case_id)
    assert case.state == case_pb2.CASE_STATE_VERIFIED
    [stop] = orders(case, order_pb2.ORDER_KIND_STOP, "BANKB")
    assert stop.order_id == story["stop"] and stop.auto_stop_rule_id == "R1"

    browser.close()

    # The centre's queue: the case on top.
    browser.switch_to.window(story["tab"])
    centre = net.consoles["CENTRE"]
    become(browser, centre, "duty")
    go(browser, centre, "/queue")
    top = browser.find_element(By.CSS_SELECTOR, "table.queue tbody tr")
    assert top.get_attribute("data-case") == case_id
    assert "Most urgent" in browser.find_element(By.CLASS_NAME, "nextdeadline").text
    screen(browser, "queue")
    # The same queue for a supervisor who reads Chinese.
    become(browser, centre, "boss2")
    go(browser, centre, "/queue")
    click(browser, "form[action='/language'] button[value='zh']")
    assert (
        browser.find_element(By.CSS_SELECTOR, "table.queue tbody tr").get_attribute("data-case")
        == case_id
    )
    assert "最紧急" in text(browser) and "下一个案件" in text(browser)
    screen(browser, "queue-zh")


def step_3_bank_b_answers_with_an_onward_transfer_and_payx_gets_the_downstream_stop(
    net: ConsoleNetwork, browser: WebDriver, story: dict[str, Any], hub: dict[str, Any]
) -> None:
    bank_b, payx = net.consoles["BANKB"], net.consoles["PAYX"]
    become(browser, bank_b, "duty")
    go(browser, bank_b, "/inbox")
    answer(
        browser,
        story["stop"],
        {
            "fact_holder": "yes",
            "fact_account": "yes",
            "fact_time": "yes",
            "fact_amount": "yes",
            "outcome": "done",
            "held": "3000",
            "balance": "0",
            "reason_code": "AM04",
            "reason": "2,000 yuan had moved on to PayX",
            "ow0_time": "2026-03-02T16:45:00",
            "ow0_amount": "2000.00",
            "ow0_institution": "PAYX",
            "ow0_account": WALLET,
            "ow0_holder": "王五",
            "ow0_reference": "OUT-1",
        },
        name="answer",
    )
    case = case_of(net, hub, story["case"])
    [stop] = orders(case, order_pb2.ORDER_KIND_STOP, "BANKB")
    assert stop.state == order_pb2.ORDER_STATE_HOLDING and stop.held_fen == 300_000
    assert stop.result.onward_transfers[0].to_account.account_number == WALLET
    assert event(case, "order.answered", stop.order_id).operator == "duty"

    downstream = wait(
        browser, lambda b: orders(case_of(net, hub, story["case"]), 1, "PAYX"), timeout=10
    )[0]
    assert downstream.layer == 2
    become(browser, payx, "duty")
    go(browser, payx, "/inbox")
    row = row_of(browser, downstream.order_id)
    assert WALLET in row.text
    screen(browser, "inbox-downstream")
    # The wallet is empty by now: PayX holds nothing.
    answer(
        browser,
        downstream.order_id,
        {
            "fact_holder": "yes",
            "fact_account": "yes",
            "fact_time": "yes",
            "fact_amount": "yes",
            "outcome": "done",
            "held": "0",
            "balance": "0",
            "reason_code": "AM04",
            "reason": "the wallet was empty",
        },
    )
    done = next(
        o for o in case_of(net, hub, story["case"]).orders if o.order_id == downstream.order_id
    )
    assert done.state != order_pb2.ORDER_STATE_PENDING and done.held_fen == 0


def step_4_a_freeze_is_proposed_the_maker_cannot_approve_it_a_supervisor_does(
    net: ConsoleNetwork, browser: WebDriver, story: dict[str, Any], hub: dict[str, Any]
) -> None:
    centre, bank_b = net.consoles["CENTRE"], net.consoles["BANKB"]
    case_id = story["case"]
    become(browser, centre, "duty")
    go(browser, centre, f"/cases/{case_id}")
    assert browser.find_elements(By.CSS_SELECTOR, ".trail svg"), "no money-trail picture"
    assert WALLET in browser.find_element(By.CLASS_NAME, "trail").get_attribute("innerHTML")
    screen(browser, "case-trail")
    link(browser, "Freeze")
    form = browser.find_element(By.CSS_SELECTOR, "form.order-form")
    fill(form, {"filed_case_number": "2026-GA-0042", "approving_authority": "PSB Chaoyang"})
    click(browser, "#send")
    proposal = path_of(browser)
    assert proposal.startswith("/proposals/"), text(browser)
    assert "You made this proposal: another supervisor must approve it." in text(browser)
    assert not browser.find_elements(By.ID, "approve")
    screen(browser, "proposal")
    assert not orders(case_of(net, hub, case_id), order_pb2.ORDER_KIND_FREEZE)

    become(browser, centre, "boss")
    go(browser, centre, "/proposals")
    assert "freeze" in text(browser).lower()
    screen(browser, "approvals")
    go(browser, centre, proposal)
    click(browser, "#approve")
    case = case_of(net, hub, case_id)
    [freeze] = orders(case, order_pb2.ORDER_KIND_FREEZE, "BANKB")
    issued = event(case, "order.issued", freeze.order_id)
    assert (issued.operator, issued.approver) == ("duty", "boss")
    story["freeze"] = freeze.order_id

    become(browser, bank_b, "duty")
    go(browser, bank_b, "/inbox")
    answer(
        browser,
        freeze.order_id,
        {
            "fact_holder": "yes",
            "fact_account": "yes",
            "fact_time": "yes",
            "fact_amount": "yes",
            "outcome": "done",
            "held": "3000",
            "balance": "0",
        },
    )
    held = next(o for o in case_of(net, hub, case_id).orders if o.order_id == freeze.order_id)
    assert held.state == order_pb2.ORDER_STATE_HOLDING and held.held_fen == 300_000


def step_5_the_return_is_made_and_answered_and_the_case_closes(
    net: ConsoleNetwork, browser: WebDriver, story: dict[str, Any], hub: dict[str, Any]
) -> None:
    centre, bank_b = net.consoles["CENTRE"], net.consoles["BANKB"]
    case_id = story["case"]
    become(browser, centre, "duty")
    go(browser, centre, f"/cases/{case_id}")
    link(browser, "Return to victim")
    form = browser.find_element(By.CSS_SELECTOR, "form.order-form")
    assert form.find_element(By.NAME, "account").get_attribute("value") == VICTIM_ACCOUNT
    click(browser, "#send")
    proposal = path_of(browser)
    assert proposal.startswith("/proposals/"), text(browser)
    approve_as_boss(browser, centre, proposal)
    case = case_of(net, hub, case_id)
    [back] = orders(case, order_pb2.ORDER_KIND_RETURN, "BANKB")
    assert (event(case, "order.issued", back.order_id).approver) == "boss"

    become(browser, bank_b, "duty")
    go(browser, bank_b, "/inbox")
    answer(browser, back.order_id, {"outcome": "done", "moved": "3000"})
    case = case_of(net, hub, case_id)
    assert case.state == case_pb2.CASE_STATE_CLOSED, [(e.kind, e.summary) for e in case.events]
    assert case.returned_fen == 300_000
    # PayX's stop found the wallet empty: it lapses with the case, PayX told to lift it.
    [empty] = orders(case, order_pb2.ORDER_KIND_STOP, "PAYX")
    assert empty.state == order_pb2.ORDER_STATE_EXPIRED
    assert (
        "its case closed with nothing held" in event(case, "order.expired", empty.order_id).summary
    )

    become(browser, centre, "duty")
    go(browser, centre, f"/cases/{case_id}")
    assert "closed" in browser.find_element(By.CSS_SELECTOR, "h1 .state").text.lower()
    screen(browser, "case-closed")

    # At PayX, the duty officer's inbox says what to do about it.
    payx = net.consoles["PAYX"]
    become(browser, payx, "duty")
    go(browser, payx, "/inbox")
    row = row_of(browser, empty.order_id)
    assert "Lapsed: release the hold" in row.find_element(By.CSS_SELECTOR, ".lapsed").text
    screen(browser, "inbox-lapsed")
    click(browser, f"tr[data-order='{empty.order_id}'] form[action$='/released'] button")
    row = row_of(browser, empty.order_id)
    assert "Released by duty" in row.find_element(By.CSS_SELECTOR, ".released").text


def step_6_a_list_entry_is_published_appealed_decided_and_checked(
    net: ConsoleNetwork, browser: WebDriver, story: dict[str, Any], hub: dict[str, Any]
) -> None:
    centre, bank_a, bank_b = (net.consoles[c] for c in ("CENTRE", "BANKA", "BANKB"))
    case_id = story["case"]
    become(browser, centre, "duty")
    go(browser, centre, f"/cases/{case_id}")
    link(browser, "Publish a list entry")
    form = browser.find_element(By.CSS_SELECTOR, "form.publish")
    assert form.find_element(By.NAME, "account").get_attribute("value") == MULE
    fill(form, {"reason": "rented the account out to the fraud ring"})
    click(browser, "#publish")
    proposal = path_of(browser)
    assert proposal.startswith("/proposals/"), text(browser)
    approve_as_boss(browser, centre, proposal)
    subject = blacklist_pb2.ListSubject(
        account=account_pb2.AccountRef(institution_code="BANKB", account_number=MULE)
    )
    [hit] = net.run(hub["CENTRE"].check_list([subject])).hits
    assert hit.listed and hit.entry.source_case_id == case_id, hit
    entry_id = hit.entry.entry_id
    go(browser, centre, "/lists")
    assert MULE in text(browser)
    screen(browser, "list")

    # Bank B, whose account it is, appeals the listing.
    become(browser, bank_b, "duty")
    go(browser, bank_b, "/filed-appeals/new")
    form = browser.find_element(By.ID, "appeal-form")
    fill(form, {"reference": entry_id, "grounds": "the holder reported the card stolen on 1 March"})
    click(browser, "#appeal-form button.primary")
    assert path_of(browser).startswith("/filed-appeals"), text(browser)
    appeals = net.run(hub["CENTRE"].list_appeals())
    [appeal] = [a for a in appeals if a.reference == entry_id]
    assert appeal.appellant == "BANKB"
    screen(browser, "filed-appeals")

    # The centre decides it: rejected, approved by a supervisor.
    become(browser, centre, "duty")
    go(browser, centre, "/appeals")
    wait(browser, lambda b: appeal.appeal_id in text(b) or b.refresh(), timeout=10)
    screen(browser, "appeals")
    link(browser, appeal.appeal_id)
    form = browser.find_element(By.CSS_SELECTOR, "form.decide")
    fill(form, {"decision": "reject", "reason": "the card was used for weeks after 1 March"})
    click(browser, "#send")
    proposal = path_of(browser)
    assert proposal.startswith("/proposals/"), text(browser)
    approve_as_boss(browser, centre, proposal)
    decided = net.run(hub["CENTRE"].get_appeal(appeal.appeal_id))
    assert decided.state == appeal_pb2.APPEAL_STATE_REJECTED

    # A member checks the account: still listed.
    become(browser, bank_a, "duty")
    link(browser, "List check")
    form = browser.find_element(By.CSS_SELECTOR, "form[action='/lists/check']")
    fill(form, {"institution": "BANKB", "account": MULE})
    click(browser, "form[action='/lists/check'] button")
    result = browser.find_element(By.ID, "check-result").text
    assert "Listed" in result and "rented the account out" in result
    screen(browser, "list-check")


def step_7_search_distributions_escalations_regulator_and_chinese(
    net: ConsoleNetwork, browser: WebDriver, story: dict[str, Any]
) -> None:
    centre, reg = net.consoles["CENTRE"], net.consoles["REG"]
    case_id = story["case"]
    become(browser, centre, "duty")
    search = browser.find_element(By.CSS_SELECTOR, "form.search input[name='q']")
    search.send_keys(f"BANKB/{MULE}\n")
    wait(browser, lambda b: path_of(b).startswith("/search"))
    assert case_id in text(browser)
    screen(browser, "search")
    go(browser, centre, "/distributions")
    screen(browser, "distributions")
    go(browser, centre, "/escalations")

    become(browser, reg, "duty")
    go(browser, reg, "/cases")
    assert case_id in text(browser)
    assert not browser.find_elements(By.CSS_SELECTOR, "a.action, #send, #approve")
    screen(browser, "regulator")
    go(browser, reg, "/sla")
    assert "/login" not in path_of(browser) and "stop" in text(browser).lower()
    assert not browser.find_elements(By.CSS_SELECTOR, "form[method='post'] button.primary")
    screen(browser, "regulator-sla")


def test_the_story_through_the_consoles(
    net: ConsoleNetwork, browser: WebDriver, story: dict[str, Any], hub: dict[str, Any]
) -> None:
    """The issue's story, each step above in turn on one network: a test of its own would
    run out of order on another worker."""
    step_1_the_centre_sets_the_standing_rule_and_a_supervisor_approves_it(net, browser)
    step_2_bank_a_files_the_report_and_verifies_it_the_queue_shows_it_on_top(
        net, browser, story, hub
    )
    step_3_bank_b_answers_with_an_onward_transfer_and_payx_gets_the_downstream_stop(
        net, browser, story, hub
    )
    step_4_a_freeze_is_proposed_the_maker_cannot_approve_it_a_supervisor_does(
        net, browser, story, hub
    )
    step_5_the_return_is_made_and_answered_and_the_case_closes(net, browser, story, hub)
    step_6_a_list_entry_is_published_appealed_decided_and_checked(net, browser, story, hub)
    step_7_search_distributions_escalations_regulator_and_chinese(net, browser, story)
