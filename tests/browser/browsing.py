"""Helpers of the browser tests: a real browser for the console, Debian's headless Chromium
through the distribution's chromedriver (.ci/run installs both). The tests skip, saying why,
only where they are not installed.

One browser serves the whole session (starting Chromium costs seconds on this machine);
each test starts with its cookies cleared. Every console is reached under a name of its own
(centre.stophub.test, banka.stophub.test, …, all mapped to 127.0.0.1 by Chromium's host
resolver rules), as a deployment would give each institution's console a host name of its
own; each console's cookies also carry its institution's code, so two on one host do not
clash either.

With STOPHUB_SCREENSHOTS=1 `shot` saves what the browser shows into docs/console/ (the
screenshots docs/console.md shows); otherwise it saves nothing, so a CI run rewrites no
committed file."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    from selenium import webdriver
    from selenium.common.exceptions import NoAlertPresentException, WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - selenium is in the dev extras
    webdriver = None

from tests.console_support import PASSWORD, Console

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "docs" / "console"
DOMAIN = "stophub.test"


def _missing() -> str:
    if webdriver is None:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            return f"{path} is not installed (apt-get install {package}; .ci/run does)"
    return ""


@pytest.fixture(scope="session")
def driver() -> Iterator[WebDriver]:
    why = _missing()
    if why:
        pytest.skip(why)
    profile = tempfile.mkdtemp(prefix="stophub-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-proxy-server",
        f"--host-resolver-rules=MAP *.{DOMAIN} 127.0.0.1",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    browser.implicitly_wait(0)
    browser.set_page_load_timeout(30)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser(driver: WebDriver) -> Iterator[WebDriver]:
    """The session's browser with no cookies left from another test (on any console)."""
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    yield driver
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})


def url(console: Console, path: str = "/") -> str:
    """`path` at `console`, under the console's own host name (see the module's docstring)."""
    port = console.url.rsplit(":", 1)[1]
    return f"http://{console.code.lower()}.{DOMAIN}:{port}{path}"


def wait(browser: WebDriver, condition: Callable[[WebDriver], Any], timeout: float = 10) -> Any:
    return WebDriverWait(browser, timeout, poll_frequency=0.05).until(condition)


def click(browser: WebDriver, css: str) -> None:
    """Click and wait for the next page to load: until a new document replaced the old one
    (the old one's readyState is already "complete" the moment the click returns)."""
    old = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.CSS_SELECTOR, css).click()
    wait(browser, lambda b: old.id != b.find_element(By.TAG_NAME, "html").id)


def text(browser: WebDriver) -> str:
    return str(browser.find_element(By.TAG_NAME, "body").text)


def path_of(browser: WebDriver) -> str:
    current = str(browser.current_url)
    return "/" + current.split("/", 3)[3] if current.count("/") >= 3 else "/"


def sign_in(browser: WebDriver, console: Console, username: str, password: str = PASSWORD) -> None:
    """Sign in through the form, as a person would, and wait until the desk shows."""
    browser.get(url(console, "/login"))
    fill_sign_in(browser, username, password)
    wait(browser, lambda b: not path_of(b).startswith("/login"))


def fill_sign_in(browser: WebDriver, username: str, password: str) -> None:
    form = browser.find_element(By.CSS_SELECTOR, "form[action='/login']")
    name = form.find_element(By.NAME, "username")
    name.clear()
    name.send_keys(username)
    form.find_element(By.NAME, "password").send_keys(password)
    form.find_element(By.TAG_NAME, "button").click()
    # The answer is a new page: until the old one is gone, a wait for what the answer shows
    # (an error line) may see the previous answer's, and the next fill meets a page unloading.
    wait(browser, lambda _: _gone(form))


def _gone(element: Any) -> bool:
    """Whether the page that held `element` was replaced. Chromium answers a question about
    an element of a page being unloaded with a stale-element error or, as often, with an
    inspector error ("does not belong to the document"): either means it is gone."""
    try:
        element.is_enabled()
    except WebDriverException:
        return True
    return False


def no_alert(browser: WebDriver) -> bool:
    try:
        _ = browser.switch_to.alert
    except NoAlertPresentException:
        return True
    return False


def shot(browser: WebDriver, name: str) -> None:
    """docs/console/NAME.png, only when STOPHUB_SCREENSHOTS=1."""
    if os.environ.get("STOPHUB_SCREENSHOTS") != "1":
        return
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / f"{name}.png"))
