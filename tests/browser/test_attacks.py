"""The console's doors, tried in a real browser (issue 20, "Tested in a real browser"): every
page wants a sign-in; a form without its CSRF token is refused and nothing reaches the hub; a
viewer cannot act; five wrong passwords lock an account and say until when; an idle session
ends and the next click lands on the sign-in page saying so; a holder name full of HTML and
script, filed by a bank, is shown as text and runs nothing; one institution's console cannot
read another's orders.

One network for the module: a hub and consoles for the centre, Bank A and PayX. Bank A files
a report (over the SDK) whose payee's holder name is hostile; the centre's standing rule
stops the payee's account at Bank B at once; nobody at Bank B answers, so ten minutes later
the stop's clock is breached and the centre's escalation inbox has a form to act on."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from starlette.routing import Route

from hub.cli.demo_cast import MULE, VICTIM, victim_report
from stophub.v1 import account_pb2, order_pb2, sla_pb2
from tests.browser.browsing import (
    fill_sign_in,
    no_alert,
    path_of,
    shot,
    sign_in,
    text,
    url,
    wait,
)
from tests.console_support import PASSWORD, ConsoleNetwork, console_network

# One worker runs the whole module: one Chromium per worker serves every browser test.
pytestmark = pytest.mark.xdist_group("browser")

HOSTILE = '<script>alert("x")</script><b>Li</b><img src=x onerror=alert(1)>'


@dataclass
class Story:
    net: ConsoleNetwork
    case_id: str
    stop: order_pb2.Order
    clock: sla_pb2.ClockView


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    with console_network(tmp_path_factory.mktemp("attacks"), ["CENTRE", "BANKA", "PAYX"]) as net:
        centre, bank_a = net.client("CENTRE"), net.client("BANKA")
        net.run(
            centre.set_auto_stop_rule(
                order_pb2.AutoStopRule(rule_id="R1", enabled=True, max_amount_fen=10_000_000)
            )
        )
        payee = account_pb2.AccountRef()
        payee.CopyFrom(MULE)
        payee.holder_name = HOSTILE
        report = victim_report(VICTIM, [(net.clock.now(), 2_000_000, "TX-1")], net.clock.now())
        for tx in report.transactions:
            tx.payee.CopyFrom(payee)
        case = net.run(bank_a.create_report(report))
        net.run(bank_a.verify_report(case.case_id, confirmed=True))
        got = net.run(centre.get_case(case.case_id))
        stops = [o for o in got.orders if o.kind == order_pb2.ORDER_KIND_STOP]
        assert len(stops) == 1 and stops[0].addressed_to == "BANKB"
        # Bank B does not answer: past the stop's 10 minutes its clock is breached.
        net.advance(timedelta(minutes=11))
        breached = _breached(net, case.case_id)
        yield Story(net, case.case_id, stops[0], breached)


def _breached(net: ConsoleNetwork, case_id: str) -> sla_pb2.ClockView:
    centre = net.client("CENTRE")
    for _ in range(100):
        clocks = net.run(centre.list_clocks(case_id=case_id, breached_only=True))
        if clocks:
            return clocks[0]
        net.run(_sleep(0.1))
    raise AssertionError("the stop's clock was not breached")


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def _acknowledged(story: Story) -> sla_pb2.ClockView:
    centre = story.net.client("CENTRE")
    clocks = story.net.run(centre.list_clocks(case_id=story.case_id))
    return next(k for k in clocks if k.clock_id == story.clock.clock_id)


def test_every_page_sends_a_stranger_to_sign_in(story: Story, browser: WebDriver) -> None:
    console = story.net.consoles["CENTRE"]
    paths = []
    for route in console.app.routes:
        if not isinstance(route, Route) or "GET" not in (route.methods or ()):
            continue
        if route.path in ("/login", "/healthz", "/events"):
            continue
        paths.append(route.path.replace("{case_id}", story.case_id).replace("{id}", "1"))
    paths = [re.sub(r"\{[^}]+\}", "X1", p) for p in paths]
    assert "/cases" in paths and f"/cases/{story.case_id}" in paths
    for path in paths:
        browser.get(url(console, path))
        assert path_of(browser).startswith("/login?next="), path
        assert browser.find_elements(By.CSS_SELECTOR, "form[action='/login']"), path
        page = browser.page_source
        assert VICTIM.holder_name not in page and story.stop.order_id not in page, path
    shot(browser, "login")


def test_a_form_without_its_csrf_token_is_refused(story: Story, browser: WebDriver) -> None:
    sign_in(browser, story.net.consoles["CENTRE"], "duty")
    browser.get(url(story.net.consoles["CENTRE"], "/escalations"))
    # The page refreshes itself on live events: find, change and send the form in one go.
    send = """
        const form = document.querySelector(`tr[data-clock="${arguments[0]}"] form.ack`);
        const token = form.querySelector('input[name=csrf]');
        // Another token: its first character changed (to one it is not).
        const other = token.value[0] === 'A' ? 'B' : 'A';
        if (arguments[1]) { token.value = other + token.value.slice(1); } else { token.remove(); }
        form.querySelector('input[name=note]').value = 'forged';
        form.querySelector('button').click();
    """
    browser.execute_script(send, story.clock.clock_id, False)
    wait(browser, lambda b: "did not come from this console" in text(b))
    shot(browser, "refused-csrf")
    # A token not this session's is no better than none.
    browser.get(url(story.net.consoles["CENTRE"], "/escalations"))
    browser.execute_script(send, story.clock.clock_id, True)
    wait(browser, lambda b: "did not come from this console" in text(b))
    assert not _acknowledged(story).HasField("acknowledge_time"), "nothing reached the hub"


def test_a_viewer_cannot_act(story: Story, browser: WebDriver) -> None:
    console = story.net.consoles["CENTRE"]
    sign_in(browser, console, "watch")
    browser.get(url(console, "/escalations"))
    row = browser.find_element(By.XPATH, f"//tr[@data-clock='{story.clock.clock_id}']")
    assert not row.find_elements(By.TAG_NAME, "form"), "a viewer is offered no action"
    # The viewer builds the form themself, with their own session's token.
    browser.execute_script(
        """
        const token = document.querySelector('input[name=csrf]').value;
        const form = document.createElement('form');
        form.method = 'post';
        form.action = '/escalations/acknowledge';
        for (const [k, v] of [['csrf', token], ['clock_id', arguments[0]],
                              ['case_id', arguments[1]], ['note', 'by a viewer']]) {
            const input = document.createElement('input');
            input.type = 'hidden'; input.name = k; input.value = v;
            form.appendChild(input);
        }
        document.body.appendChild(form);
        form.submit();
        """,
        story.clock.clock_id,
        story.case_id,
    )
    wait(browser, lambda b: "your role is viewer" in text(b))
    shot(browser, "refused-viewer")
    assert not _acknowledged(story).HasField("acknowledge_time"), "nothing reached the hub"


def test_an_officer_can_act_where_the_forged_forms_could_not(
    story: Story, browser: WebDriver
) -> None:
    # The control for the two tests above: the same form, sent as it came, reaches the hub.
    console = story.net.consoles["CENTRE"]
    sign_in(browser, console, "duty")
    browser.get(url(console, "/escalations"))
    shot(browser, "escalations")
    form = browser.find_element(
        By.XPATH, f"//tr[@data-clock='{story.clock.clock_id}']//form[@class='ack']"
    )
    note = form.find_element(By.NAME, "note")
    note.send_keys("phoned Bank B's duty officer")  # a focused field holds live refreshes
    note.submit()
    wait(browser, lambda b: "done=" in b.current_url)
    seen = _acknowledged(story)
    assert seen.HasField("acknowledge_time")
    assert seen.acknowledged_operator == "duty"
    assert seen.acknowledge_note == "phoned Bank B's duty officer"


def test_a_hostile_holder_name_is_shown_as_text(story: Story, browser: WebDriver) -> None:
    for code in ("CENTRE", "BANKA"):
        console = story.net.consoles[code]
        sign_in(browser, console, "duty")
        browser.get(url(console, f"/cases/{story.case_id}"))
        wait(browser, lambda b: story.case_id in text(b))
        assert no_alert(browser), f"a script ran on {code}'s case page"
        assert HOSTILE in text(browser), f"{code} shows the name as it was written"
        assert not browser.find_elements(By.CSS_SELECTOR, "main img[src='x'], main b"), code
        assert browser.execute_script("return document.querySelectorAll('script').length") == 1
        if code == "CENTRE":
            shot(browser, "case")
        browser.execute_cdp_cmd("Network.clearBrowserCookies", {})


def test_one_console_cannot_read_another_institutions_orders(
    story: Story, browser: WebDriver
) -> None:
    payx = story.net.consoles["PAYX"]
    sign_in(browser, payx, "duty")
    for path in (f"/cases/{story.case_id}", "/notices", "/escalations", "/cases"):
        browser.get(url(payx, path))
        page = browser.page_source
        assert story.stop.order_id not in page, path
        assert MULE.account_number not in page, path
    browser.get(url(payx, f"/cases/{story.case_id}"))
    assert "PERMISSION_DENIED" in text(browser) or "not" in text(browser).lower()
    # Bank A, who filed it, reads its own case.
    browser.execute_cdp_cmd("Network.clearBrowserCookies", {})
    sign_in(browser, story.net.consoles["BANKA"], "duty")
    browser.get(url(story.net.consoles["BANKA"], f"/cases/{story.case_id}"))
    assert story.stop.order_id in browser.page_source


def test_five_wrong_passwords_lock_the_account(story: Story, browser: WebDriver) -> None:
    console = story.net.consoles["CENTRE"]
    desk = console.desk
    browser.get(url(console, "/login"))
    for attempt in range(5):
        fill_sign_in(browser, "boss2", f"wrong password {attempt}")
        wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "p.error"))
    until = desk.local_time(story.net.clock.now() + desk.config.lockout_for, "%H:%M")
    shown = browser.find_element(By.CSS_SELECTOR, "p.error").text
    assert "locked until" in shown and until in shown, shown
    shot(browser, "locked")
    # The right password does not open it either, until then.
    fill_sign_in(browser, "boss2", PASSWORD)
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "p.error"))
    assert path_of(browser).startswith("/login")
    assert "locked until" in browser.find_element(By.CSS_SELECTOR, "p.error").text


def test_an_idle_session_ends_and_the_next_click_says_so(story: Story, browser: WebDriver) -> None:
    console = story.net.consoles["CENTRE"]
    sign_in(browser, console, "duty")
    browser.get(url(console, f"/cases/{story.case_id}"))
    story.net.advance(console.desk.config.idle_timeout + timedelta(minutes=1))
    browser.find_element(By.CSS_SELECTOR, "nav a[href='/escalations']").click()
    wait(browser, lambda b: path_of(b).startswith("/login"))
    assert "expired=1" in browser.current_url
    assert "Your session ended after a time without activity" in text(browser)
    shot(browser, "expired")
    # Signing in again goes back to where the click was going.
    fill_sign_in(browser, "duty", PASSWORD)
    wait(browser, lambda b: path_of(b) == "/escalations")
