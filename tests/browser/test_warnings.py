"""A warning in a real browser, clicked through as the officers would: Bank B's duty officer
has the warnings queue open; the centre's officer fills the send form; the warning shows in
Bank B's open queue without a reload, under the alarm; Bank B acknowledges it, first sends a
loss prevented above the amount at risk (the hub's refusal, one line, the form kept), then
the outcome; the hub records it closed. With STOPHUB_SCREENSHOTS=1 each screen goes to
docs/console/; with STOPHUB_SHOTS_DIR=/some/dir, there instead (to look at them)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from stophub.v1 import warning_pb2
from tests.browser.browsing import click, path_of, shot, sign_in, text, url, wait
from tests.console_support import ConsoleNetwork, console_network

pytestmark = pytest.mark.xdist_group("browser")


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleNetwork]:
    with console_network(tmp_path_factory.mktemp("warn"), ["CENTRE", "BANKB"]) as network:
        yield network


def look(browser: WebDriver, name: str) -> None:
    where = os.environ.get("STOPHUB_SHOTS_DIR")
    if where:
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1400, max(1000, min(int(height) + 140, 2400)))
        browser.save_screenshot(str(Path(where) / f"{name}.png"))
        browser.set_window_size(1400, 1000)
    else:
        shot(browser, name)


def fill(browser: WebDriver, form_id: str, values: dict[str, str]) -> None:
    form = browser.find_element(By.ID, form_id)
    for name, value in values.items():
        field = form.find_element(By.NAME, name)
        if field.tag_name == "select":
            Select(field).select_by_value(value)
        else:
            field.clear()
            field.send_keys(value)


def submit(browser: WebDriver, form_id: str) -> None:
    click(browser, f"#{form_id} button")


def test_a_warning_from_the_centres_form_to_the_members_outcome(
    net: ConsoleNetwork, browser: WebDriver
) -> None:
    centre, bank = net.consoles["CENTRE"], net.consoles["BANKB"]
    sign_in(browser, bank, "duty")
    browser.get(url(bank, "/warnings"))
    wait(browser, lambda b: b.execute_script("return document.body.dataset.listening") == "1")
    queue_tab = browser.current_window_handle
    loaded = browser.execute_script("return performance.timeOrigin")

    browser.switch_to.new_window("tab")
    sign_in(browser, centre, "duty")
    browser.find_element(By.LINK_TEXT, "Warnings").click()
    browser.find_element(By.ID, "new-warning").click()
    fill(
        browser,
        "send-warning",
        {
            "institution": "BANKB",
            "account": "6222020000000009",
            "holder": "王五",
            "amount_at_risk": "30000",
            "grade": "red",
            "fraud_type": "fake_investment",
            "text": "Customer is on the phone with a fake 'police officer' right now",
        },
    )
    look(browser, "warning-send")
    submit(browser, "send-warning")
    assert path_of(browser).startswith("/warnings/W"), text(browser)
    warning_id = path_of(browser).removeprefix("/warnings/")
    assert "BANKB" in text(browser)

    browser.switch_to.window(queue_tab)
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
            iter(b.find_elements(By.CSS_SELECTOR, f"tr[data-warning='{warning_id}']")), None
        ),
        timeout=5,
    )
    assert "alarm" in (alert.get_attribute("class") or "")
    assert browser.execute_script("return performance.timeOrigin") == loaded
    assert row.get_attribute("data-grade") == "red"
    look(browser, "warning-queue")

    row.find_element(By.TAG_NAME, "a").click()
    wait(browser, lambda b: b.find_elements(By.ID, "acknowledge"))
    fill(browser, "acknowledge", {"note": "Calling the customer now"})
    submit(browser, "acknowledge")
    wait(browser, lambda b: b.find_elements(By.ID, "done"))
    fill(
        browser,
        "report-outcome",
        {"outcome": "reached_dissuaded", "loss_prevented": "30000.01", "text": "He hung up"},
    )
    submit(browser, "report-outcome")
    refusal = wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "div.refusal"))[0]
    assert "cannot be more than the amount at risk" in refusal.text
    kept = browser.find_element(By.CSS_SELECTOR, "#report-outcome [name='loss_prevented']")
    assert kept.get_attribute("value") == "30000.01"
    look(browser, "warning-refused")

    fill(browser, "report-outcome", {"loss_prevented": "30000"})
    submit(browser, "report-outcome")
    wait(browser, lambda b: b.find_elements(By.ID, "outcome"))
    assert not browser.find_elements(By.ID, "report-outcome")
    look(browser, "warning-closed")
    w: Any = net.run(net.client("CENTRE").get_warning(warning_id))
    assert w.state == warning_pb2.WARNING_STATE_CLOSED
    assert w.outcome == warning_pb2.WARNING_OUTCOME_REACHED_DISSUADED
    assert w.loss_prevented_fen == 3_000_000 and w.acknowledge_note == "Calling the customer now"
