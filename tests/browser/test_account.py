"""A person sets up their own second factor in a real browser, as an officer would: from their
name at the top of the page to the account page, the QR code drawn in the page, a wrong code
refused with the form kept, then the authenticator's code and the password; the console says
it is on, and the next sign-in asks for the code. With STOPHUB_SCREENSHOTS=1 the page goes to
docs/console/account.png."""

from __future__ import annotations

from collections.abc import Iterator

import pyotp
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from adapters.console.people import Role, add_person
from tests.browser.browsing import click, fill_sign_in, path_of, shot, sign_in, text, url, wait
from tests.console_support import PASSWORD, ConsoleNetwork, console_network

pytestmark = pytest.mark.xdist_group("browser")


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleNetwork]:
    with console_network(tmp_path_factory.mktemp("account"), ["BANKA"]) as network:
        yield network


def test_an_officer_turns_on_two_factor_sign_in(net: ConsoleNetwork, browser: WebDriver) -> None:
    console = net.consoles["BANKA"]
    with console.desk.db() as s:
        add_person(s, "zhou", "Zhou Min", Role.OFFICER, PASSWORD, net.clock.now(), language="en")
    sign_in(browser, console, "zhou")
    click(browser, "a.person")
    assert path_of(browser) == "/account"
    assert browser.find_element(By.ID, "two-factor-state").text == "off"
    qr = browser.find_element(By.CSS_SELECTOR, "#totp-qr svg")
    assert qr.size["width"] >= 100 and qr.size["height"] >= 100  # drawn, at a scannable size
    secret = browser.find_element(By.ID, "totp-secret").text
    screen_code = pyotp.TOTP(secret).at(net.clock.now())
    shot(browser, "account")

    def turn_on(code: str) -> None:
        form = browser.find_element(By.CSS_SELECTOR, "form[action='/account/two-factor']")
        form.find_element(By.NAME, "code").send_keys(code)
        form.find_element(By.NAME, "password").send_keys(PASSWORD)
        click(browser, "form[action='/account/two-factor'] button")

    turn_on("000000" if screen_code != "000000" else "111111")
    assert "does not match" in browser.find_element(By.CSS_SELECTOR, "p.error").text
    assert browser.find_element(By.ID, "totp-secret").text == secret  # no need to scan again
    turn_on(screen_code)
    wait(browser, lambda b: b.find_element(By.ID, "two-factor-state").text == "on")
    assert "Two-factor sign-in is on" in text(browser)

    # Signed out and back: the password alone is no longer enough.
    click(browser, "form[action='/logout'] button")
    browser.get(url(console, "/login"))
    fill_sign_in(browser, "zhou", PASSWORD)
    assert path_of(browser).startswith("/login")
    code_field = browser.find_element(By.NAME, "totp")
    code_field.send_keys(pyotp.TOTP(secret).at(net.clock.now()))
    fill_sign_in(browser, "zhou", PASSWORD)
    assert not path_of(browser).startswith("/login"), text(browser)
