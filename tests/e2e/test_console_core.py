"""The console's doors, over real HTTP against a real hub: sign-in with argon2id passwords, a
second factor, lockout, idle timeout, CSRF on every form, roles, the session cookie, a
password reset, the language per person, and a console that has lost its hub."""

from __future__ import annotations

import dataclasses
import html
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyotp
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from adapters.console.config import load_config
from adapters.console.models import JournalEntry, Person
from adapters.console.people import Role, add_person
from hub.cli import main
from tests.console_support import (
    CSRF,
    PASSWORD,
    Browserless,
    ConsoleNetwork,
    console_network,
    free_port,
)

# One worker runs the whole module: one hub and console for the module.
pytestmark = pytest.mark.xdist_group("console_core")


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleNetwork]:
    with console_network(tmp_path_factory.mktemp("console"), ["CENTRE"]) as network:
        yield network


@pytest.fixture
def browser(net: ConsoleNetwork) -> Iterator[Browserless]:
    b = Browserless(net.consoles["CENTRE"])
    yield b
    b.close()


def _journal(net: ConsoleNetwork, person: str) -> list[JournalEntry]:
    with net.consoles["CENTRE"].desk.db() as s:
        return list(s.scalars(select(JournalEntry).where(JournalEntry.person == person)))


def test_every_page_wants_a_session(browser: Browserless) -> None:
    for path in ("/", "/queue", "/cases", "/journal", "/proposals", "/escalations", "/notices"):
        answer = browser.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/login?next=")
    assert browser.get("/events").status_code == 401
    # A form sent without a session is sent to sign in, and changes nothing.
    assert browser.post("/language", {"language": "zh"}, csrf=False).status_code == 303


def test_sign_in_sets_a_strict_http_only_cookie(browser: Browserless) -> None:
    answer = browser.login("duty")
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert "secure" not in cookie  # served over plain HTTP here; Secure under TLS
    page = browser.get("/journal")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"


def test_behind_tls_the_cookies_are_secure(net: ConsoleNetwork) -> None:
    """A console behind a TLS-terminating proxy (secure_cookies = true) marks every cookie
    Secure and asks browsers for HTTPS only (HSTS)."""
    behind = net.add_console("CENTRE", name="centre-tls", settings="secure_cookies = true")
    b = Browserless(behind)
    form = b.get("/login")
    assert "secure" in form.headers["set-cookie"].lower()
    assert form.headers["strict-transport-security"].startswith("max-age=")
    token = CSRF.search(form.text)
    assert token is not None
    # httpx, like a browser, sends a Secure cookie back only over HTTPS: given by hand here.
    login_cookie = form.cookies["stophub_console_centre_login"]
    answer = b.http.post(
        "/login",
        data={"csrf": token.group(1), "username": "duty", "password": PASSWORD},
        headers={"Cookie": f"stophub_console_centre_login={login_cookie}"},
    )
    assert answer.status_code == 303
    session = answer.headers["set-cookie"].lower()
    assert "stophub_console_centre=" in session
    assert "secure" in session and "httponly" in session and "samesite=strict" in session
    b.close()


def test_login_journal_and_wrong_password(net: ConsoleNetwork, browser: Browserless) -> None:
    assert browser.login("duty", "not the password").status_code == 401
    assert browser.login("nobody", "not the password").status_code == 401
    assert browser.login("duty").status_code == 303
    outcomes = [e.outcome for e in _journal(net, "duty")]
    assert "wrong" in outcomes and "login" in outcomes


def test_next_never_leaves_the_console(browser: Browserless) -> None:
    page = browser.get("/login")
    token = page.text.split('name="csrf" value="')[1].split('"')[0]
    for target in ("//evil.example/", "https://evil.example/", "javascript:alert(1)"):
        answer = browser.http.post(
            "/login",
            data={"csrf": token, "username": "boss", "password": PASSWORD, "next": target},
        )
        if answer.status_code == 303:
            assert answer.headers["location"] == "/"
        page = browser.get("/login")
        if 'name="csrf"' in page.text:
            token = page.text.split('name="csrf" value="')[1].split('"')[0]


def test_forms_need_their_csrf_token(browser: Browserless) -> None:
    browser.login("duty")
    refused = browser.post("/language", {"language": "zh"}, csrf=False)
    assert refused.status_code == 403
    assert "did not come from this console" in refused.text
    forged = browser.post("/language", {"language": "zh", "csrf": "forged"})
    assert forged.status_code == 403
    # The sign-in form has its own token: a cross-site login is refused too.
    answer = browser.http.post(
        "/login", data={"csrf": "x", "username": "duty", "password": PASSWORD}
    )
    assert answer.status_code == 403


def test_lockout_after_repeated_failures_then_it_ends(net: ConsoleNetwork) -> None:
    b = Browserless(net.consoles["CENTRE"])
    for _ in range(4):
        assert b.login("boss2", "wrong password here").status_code == 401
    locked = b.login("boss2", "wrong password here")
    assert locked.status_code == 423 and "locked until" in locked.text
    # The right password does not open a locked account...
    assert b.login("boss2").status_code == 423
    # ...until the lock (15 minutes) has run out.
    net.advance(timedelta(minutes=16))
    assert b.login("boss2").status_code == 303
    b.close()


def test_idle_session_ends(net: ConsoleNetwork, browser: Browserless) -> None:
    browser.login("boss")
    assert browser.get("/journal").status_code == 200
    net.advance(timedelta(minutes=14))
    assert browser.get("/journal").status_code == 200  # activity keeps it alive
    net.advance(timedelta(minutes=16))
    expired = browser.get("/journal")
    assert expired.status_code == 303 and "expired=1" in expired.headers["location"]
    assert "ended after a time without activity" in browser.get(expired.headers["location"]).text


def test_viewer_reads_but_cannot_act(browser: Browserless) -> None:
    browser.login("watch")
    assert browser.get("/escalations").status_code == 200
    refused = browser.post("/escalations/acknowledge", {"clock_id": "x", "note": "n"})
    assert refused.status_code == 403 and "viewer" in refused.text


def test_second_factor(net: ConsoleNetwork) -> None:
    desk = net.consoles["CENTRE"].desk
    with desk.db() as s:
        person = add_person(
            s, "totp.user", "Totp", Role.OFFICER, PASSWORD, net.clock.now(), totp=True
        )
        secret = person.totp_secret
    assert secret
    b = Browserless(net.consoles["CENTRE"])
    needs = b.login("totp.user")
    assert needs.status_code == 401 and "6-digit code" in needs.text
    assert b.login("totp.user", totp="000000").status_code == 401
    code = pyotp.TOTP(secret).at(net.clock.now())
    assert b.login("totp.user", totp=code).status_code == 303
    b.close()


def _offered_secret(page: str) -> str:
    found = re.search(r'<code id="totp-secret">([A-Z2-7]{32})</code>', page)
    assert found, page
    return found.group(1)


def test_a_person_turns_on_the_second_factor_at_their_account_page(net: ConsoleNetwork) -> None:
    desk = net.consoles["CENTRE"].desk
    with desk.db() as s:
        add_person(s, "self.enrol", "Self", Role.OFFICER, PASSWORD, net.clock.now(), language="en")
    b = Browserless(net.consoles["CENTRE"])
    assert b.login("self.enrol").status_code == 303
    page = b.get("/account")
    assert page.status_code == 200 and 'id="two-factor-state"' in page.text
    assert "<svg" in page.text  # the QR code, drawn inline
    secret = _offered_secret(page.text)
    assert f"secret={secret}" in html.unescape(page.text)  # in the otpauth:// link

    def turn_on(code: str, password: str = PASSWORD, offered: str = secret) -> httpx.Response:
        return b.post(
            "/account/two-factor", {"secret": offered, "code": code, "password": password}
        )

    now = net.clock.now()
    wrong_code = turn_on("000000" if pyotp.TOTP(secret).at(now) != "000000" else "111111")
    assert wrong_code.status_code == 400 and "does not match" in wrong_code.text
    assert _offered_secret(wrong_code.text) == secret  # no need to scan again
    wrong_password = turn_on(pyotp.TOTP(secret).at(now), password="not the password")
    assert wrong_password.status_code == 400 and "password is not right" in wrong_password.text
    # A secret of the person's own choosing (not one the console offered) is refused too.
    forged = turn_on(pyotp.TOTP("A" * 32).at(now), offered="a" * 32)
    assert forged.status_code == 400 and _offered_secret(forged.text) != "a" * 32
    with desk.db() as s:
        person = s.scalar(select(Person).where(Person.username == "self.enrol"))
        assert person is not None and person.totp_secret is None

    done = turn_on(pyotp.TOTP(secret).at(now))
    assert done.status_code == 303 and done.headers["location"] == "/account?enrolled=1"
    assert "Two-factor sign-in is on" in b.get("/account?enrolled=1").text
    assert [(j.action, j.outcome) for j in _journal(net, "self.enrol")][-1] == (
        "two_factor",
        "done",
    )
    # Once on, it stays: another enrolment is refused, and sign-in asks for the code.
    again = turn_on(pyotp.TOTP(secret).at(now))
    assert again.status_code == 400 and "on already" in again.text
    b.close()
    b = Browserless(net.consoles["CENTRE"])
    assert b.login("self.enrol").status_code == 401
    assert b.login("self.enrol", totp=pyotp.TOTP(secret).at(net.clock.now())).status_code == 303
    b.close()


def test_a_console_that_requires_the_second_factor_sends_everyone_without_it_to_set_it_up(
    net: ConsoleNetwork,
) -> None:
    desk = net.consoles["CENTRE"].desk
    with desk.db() as s:
        add_person(s, "must.enrol", "Must", Role.OFFICER, PASSWORD, net.clock.now(), language="en")
    before = desk.config
    desk.config = dataclasses.replace(before, require_totp=True)
    b = Browserless(net.consoles["CENTRE"])
    try:
        assert b.login("must.enrol").status_code == 303
        for path in ("/", "/queue", "/journal"):
            answer = b.get(path)
            assert answer.status_code == 303 and answer.headers["location"] == "/account", path
        page = b.get("/account")
        assert "requires a second factor" in page.text
        secret = _offered_secret(page.text)
        code = pyotp.TOTP(secret).at(net.clock.now())
        assert (
            b.post(
                "/account/two-factor", {"secret": secret, "code": code, "password": PASSWORD}
            ).status_code
            == 303
        )
        assert b.get("/journal").status_code == 200
    finally:
        desk.config = before
        b.close()


def test_language_is_per_person(browser: Browserless, net: ConsoleNetwork) -> None:
    browser.login("duty")
    assert browser.post("/language", {"language": "zh", "back": "/journal"}).status_code == 303
    assert "操作日志" in browser.get("/journal").text
    other = Browserless(net.consoles["CENTRE"])
    other.login("boss")
    assert "Journal" in other.get("/journal").text
    browser.post("/language", {"language": "en", "back": "/journal"})
    other.close()


def test_reset_forces_a_new_password_and_disable_ends_sessions(net: ConsoleNetwork) -> None:
    console = net.consoles["CENTRE"]
    config = str(console.directory / "console.toml")
    runner = CliRunner()
    added = runner.invoke(
        main,
        [
            "console",
            "user",
            "add",
            "li.wei",
            "--role",
            "officer",
            "--name",
            "Li Wei",
            "--config",
            config,
        ],
    )
    assert added.exit_code == 0, added.output
    password = added.output.split("first sign-in): ")[1].split()[0]
    b = Browserless(console)
    assert b.login("li.wei", password).status_code == 303
    assert b.get("/journal").headers["location"] == "/password"
    changed = b.post(
        "/password",
        {"current": password, "new": "a much better pass", "again": "a much better pass"},
    )
    assert changed.status_code == 303
    assert b.get("/journal").status_code == 200
    listed = runner.invoke(main, ["console", "user", "list", "--config", config])
    assert "li.wei" in listed.output and "active" in listed.output
    disabled = runner.invoke(main, ["console", "user", "disable", "li.wei", "--config", config])
    assert disabled.exit_code == 0
    assert b.get("/journal").status_code == 303  # the open session ended with it
    assert b.login("li.wei", "a much better pass").status_code == 401
    missing = runner.invoke(main, ["console", "user", "disable", "nobody", "--config", config])
    assert missing.exit_code == 1 and "no such person" in missing.output
    with console.desk.db() as s:
        assert s.scalar(select(Person).where(Person.username == "li.wei")).disabled
    b.close()


def test_a_console_without_its_hub_says_so_on_every_page(net: ConsoleNetwork) -> None:
    dead = net.add_console("CENTRE", hub_target=f"127.0.0.1:{free_port()}", name="centre-dead")
    b = Browserless(dead)
    b.login("duty")
    for path in ("/journal", "/proposals"):
        page = b.get(path)
        assert "No connection to the hub" in page.text, path
    refused = b.get("/cases")
    assert "could not be reached" in refused.text or "No connection" in refused.text
    assert b.get("/healthz").status_code == 503
    b.close()


def test_console_init_and_bad_configuration(tmp_path: Path, net: ConsoleNetwork) -> None:
    runner = CliRunner()
    identity = str(net.identities["BANKA"].directory)
    made = runner.invoke(main, ["console", "init", str(tmp_path / "c"), "--identity", identity])
    assert made.exit_code == 0, made.output
    assert "console for BANKA" in made.output
    again = runner.invoke(main, ["console", "init", str(tmp_path / "c"), "--identity", identity])
    assert again.exit_code == 1 and "already exists" in again.output
    nowhere = runner.invoke(
        main, ["console", "init", str(tmp_path / "d"), "--identity", str(tmp_path)]
    )
    assert nowhere.exit_code == 1 and "name the institution" in nowhere.output
    (tmp_path / "bad.toml").write_text('identity = "x"\n[approval]\nfly = true\n')
    bad = runner.invoke(main, ["console", "user", "list", "--config", str(tmp_path / "bad.toml")])
    assert bad.exit_code == 1 and "no such action: fly" in bad.output
    assert "Traceback" not in bad.output
    # init spells out require_totp = false; true turns it on; anything else is one line.
    config = tmp_path / "c" / "console.toml"
    assert "require_totp = false" in config.read_text() and not load_config(config).require_totp
    config.write_text(config.read_text().replace("require_totp = false", "require_totp = true"))
    assert load_config(config).require_totp
    config.write_text(config.read_text().replace("require_totp = true", 'require_totp = "yes"'))
    loose = runner.invoke(main, ["console", "user", "list", "--config", str(config)])
    assert loose.exit_code == 1 and "require_totp is true or false, not 'yes'" in loose.output


def test_console_serve_as_an_institution_runs_it(tmp_path: Path, net: ConsoleNetwork) -> None:
    """`stophub console init`, `user add` and `serve`, as an institution's operator types them,
    against the running hub; then a person signs in and reads the hub's cases."""
    port = free_port()
    identity = str(net.identities["BANKA"].directory)
    stophub = [sys.executable, "-m", "hub.cli"]
    config = str(tmp_path / "desk" / "console.toml")
    env = {**os.environ, "STOPHUB_CONSOLE_CONFIG": config}
    subprocess.run(
        [
            *stophub,
            "console",
            "init",
            str(tmp_path / "desk"),
            "--identity",
            identity,
            "--port",
            str(port),
            "--language",
            "en",
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    added = subprocess.run(
        [*stophub, "console", "user", "add", "zhou", "--role", "officer", "--password-stdin"],
        input=f"{PASSWORD}\n",
        text=True,
        env=env,
        capture_output=True,
        check=True,
    )
    assert "added zhou (officer)" in added.stdout
    server = subprocess.Popen(
        [*stophub, "console", "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(url + "/login", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        b = Browserless.__new__(Browserless)
        b.http = httpx.Client(base_url=url, timeout=10)
        b.csrf = ""
        assert b.login("zhou").status_code == 303
        # The console reads the system clock, the hub its test clock, months apart: the hub
        # refuses its messages, and every page says so.
        page = b.get("/journal").text
        assert "No connection to the hub" in page and "ENVELOPE_FROM_FUTURE" in page
        assert b.get("/healthz").status_code == 503
        net.clock.set(datetime.now(UTC))
        for _ in range(100):  # the console learns its institution's kind from the hub
            if "New report" in b.get("/cases").text:
                break
            time.sleep(0.1)
        page = b.get("/cases")
        assert page.status_code == 200 and "New report" in page.text
        assert b.get("/healthz").status_code == 200
        b.http.close()
    finally:
        server.terminate()
        _out, err = server.communicate(timeout=20)
    assert b"Traceback" not in err, err.decode()
