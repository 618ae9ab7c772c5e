"""The demo's story through the consoles, in a real browser (issue 20, "Tested in a real
browser"). So far the part the member desk carries: a verified report's automatic stop
reaches the payee bank's open inbox within a second, without a reload, with a visible alert.
The rest of the story (the counter form, the centre's queue, freeze approval, the return,
appeals, the list) joins as the centre's desk lands.

One network for the module: a hub and consoles for Bank A and Bank B; the centre's standing
rule is set over the SDK."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from hub.cli.demo_cast import MULE, VICTIM, victim_report
from stophub.v1 import order_pb2
from tests.browser.browsing import shot, sign_in, url, wait
from tests.console_support import ConsoleNetwork, console_network


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleNetwork]:
    with console_network(tmp_path_factory.mktemp("story"), ["BANKA", "BANKB"]) as network:
        centre = network.client("CENTRE")
        network.run(
            centre.set_auto_stop_rule(
                order_pb2.AutoStopRule(rule_id="R1", enabled=True, max_amount_fen=10_000_000)
            )
        )
        yield network


def test_the_auto_stop_reaches_the_payee_banks_open_inbox_within_a_second(
    net: ConsoleNetwork, browser: WebDriver
) -> None:
    bank_b = net.consoles["BANKB"]
    sign_in(browser, bank_b, "duty")
    browser.get(url(bank_b, "/inbox"))
    wait(browser, lambda b: b.execute_script("return document.body.dataset.listening") == "1")
    time.sleep(0.3)  # the event stream's request is on its way; let it be answered
    loaded = browser.execute_script("return performance.timeOrigin")

    bank_a = net.client("BANKA")
    report = victim_report(VICTIM, [(net.clock.now(), 3_000_000, "TX-1")], net.clock.now())
    case = net.run(bank_a.create_report(report))
    net.run(bank_a.verify_report(case.case_id, confirmed=True))
    verified = time.monotonic()

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
            iter(b.find_elements(By.XPATH, f"//tr[starts-with(@data-order, '{case.case_id}')]")),
            None,
        ),
        timeout=5,
    )
    took = time.monotonic() - verified
    assert took <= 1.0, f"the order showed {took:.2f} s after the report was verified"
    assert browser.execute_script("return performance.timeOrigin") == loaded, "no reload"
    assert case.case_id in alert.text or alert.find_element(By.TAG_NAME, "a")
    assert MULE.account_number in row.text
    assert "alarm" in (alert.get_attribute("class") or "")
    shot(browser, "inbox-alert")
