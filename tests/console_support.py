"""A real hub and real consoles for the console's tests: the hub (gRPC, mutual TLS, SQLite),
and one `stophub console` per institution asked for, each on its own loopback port, all in one
background thread with its own event loop, so a test may block (a browser, an HTTP client)
without stalling them. Time is one ManualClock the hub and the consoles share.

Each console has four people, all with the password PASSWORD: `duty` (officer), `boss` and
`boss2` (supervisors) and `watch` (viewer)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn

from adapters.console.app import create_app
from adapters.console.config import load_config, write_config
from adapters.console.db import ConsoleDb
from adapters.console.people import Role, add_person
from adapters.sdk import HubClient
from adapters.sdk.identity import Identity, write_identity
from hub.bootstrap import HubServer, serve
from hub.crypto import fields, pki
from hub.crypto.fields import Keyring
from hub.crypto.keys import PrivateKey
from hub.crypto.listkey import ListKey
from hub.domain.institutions import ContactRole, DutyContact, InstitutionKind
from hub.service.admin import NewKey, Registry
from hub.store.sql import SqlStore
from hub.system.clock import ManualClock

T = TypeVar("T")
PASSWORD = "correct horse battery staple"
PEOPLE = {
    "duty": Role.OFFICER,
    "boss": Role.SUPERVISOR,
    "boss2": Role.SUPERVISOR,
    "watch": Role.VIEWER,
}
MEMBERS = {
    "CENTRE": ("Anti-Fraud Centre", InstitutionKind.ANTI_FRAUD_CENTRE),
    "BANKA": ("Bank A", InstitutionKind.BANK),
    "BANKB": ("Bank B", InstitutionKind.BANK),
    "PAYX": ("PayX Wallet", InstitutionKind.PAYMENT_INSTITUTION),
    "REG": ("Regulator", InstitutionKind.REGULATOR),
    "AUDIT": ("Auditor", InstitutionKind.AUDITOR),
}
KINDS = {
    InstitutionKind.ANTI_FRAUD_CENTRE: "anti_fraud_centre",
    InstitutionKind.BANK: "bank",
    InstitutionKind.PAYMENT_INSTITUTION: "payment_institution",
    InstitutionKind.REGULATOR: "regulator",
    InstitutionKind.AUDITOR: "auditor",
}
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday, a working day


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Console:
    code: str
    url: str
    directory: Path
    identity: Identity
    server: uvicorn.Server
    app: Any

    @property
    def desk(self) -> Any:
        return self.app.state.desk


@dataclass
class ConsoleNetwork:
    directory: Path
    clock: ManualClock
    hub_target: str = ""
    hub_key: PrivateKey | None = None
    identities: dict[str, Identity] = field(default_factory=dict)
    consoles: dict[str, Console] = field(default_factory=dict)
    loop: asyncio.AbstractEventLoop | None = None
    server: HubServer | None = None
    store: SqlStore | None = None
    _thread: threading.Thread | None = None
    _clients: list[HubClient] = field(default_factory=list)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run `coro` on the network's loop and wait for its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def client(self, code: str) -> HubClient:
        """An SDK client of `code` living on the network's loop (use it through `run`)."""

        async def make() -> HubClient:
            return self.identities[code].client(self.hub_target, clock=self.clock)

        made = self.run(make())
        self._clients.append(made)
        return made

    def advance(self, delta: timedelta) -> None:
        self.clock.advance(delta)

    def add_console(
        self, code: str, *, name: str, hub_target: str | None = None, settings: str = ""
    ) -> Console:
        """Another console of `code`, speaking to `hub_target` (a dead address, say; the
        network's hub by default), with `settings` (console.toml lines) added."""
        console = self.run(
            _console(self, code, {}, hub_target=hub_target, name=name, settings=settings)
        )
        self.consoles[name] = console
        return console


def _contacts(code: str) -> list[DutyContact]:
    return [
        DutyContact(ContactRole.PRIMARY, f"{code} duty A", "+86-10-5550-0001"),
        DutyContact(ContactRole.BACKUP, f"{code} duty B", "+86-10-5550-0002"),
    ]


async def _start(net: ConsoleNetwork, codes: list[str], approval: dict[str, bool]) -> None:
    hub_key = PrivateKey.generate()
    net.hub_key = hub_key
    now = datetime.now(UTC)
    ca = pki.create_ca(now)
    hub_tls = pki.TlsConfig(ca.cert_pem, *_pair(pki.issue_server(ca, now)))
    server, store = await serve(
        f"sqlite:///{net.directory}/hub.db",
        hub_key,
        "127.0.0.1:0",
        clock=net.clock,
        ack_timeout=1.0,
        workers=4,
        tls=hub_tls,
        list_key=ListKey.generate(),
        # The keyring the tests configured (tests/conftest.py restores it after each test):
        # a ring of its own would be swapped out under a module-scoped network.
        data_keys=fields.configured() or Keyring.generate(),
        sweep_interval=0.2,
    )
    net.server, net.store = server, store
    net.hub_target = f"127.0.0.1:{server.port}"
    registry = Registry(store, net.clock)
    for code, (name, kind) in MEMBERS.items():
        key = PrivateKey.generate()
        registry.add_institution(
            code, name, kind, [NewKey(key.algorithm, key.public_key)], _contacts(code)
        )
        tls = pki.TlsConfig(ca.cert_pem, *_pair(pki.issue_client(ca, code, now)))
        net.identities[code] = write_identity(
            net.directory / "identities" / code.lower(), code, key, tls, hub_key, net.hub_target
        )
    for code in codes:
        net.consoles[code] = await _console(net, code, approval)


def _pair(issued: pki.Issued) -> tuple[bytes, bytes]:
    return issued.cert_pem, issued.key_pem


async def _console(
    net: ConsoleNetwork,
    code: str,
    approval: dict[str, bool],
    *,
    hub_target: str | None = None,
    name: str | None = None,
    settings: str = "",
) -> Console:
    target = hub_target or net.hub_target
    folder = net.directory / "consoles" / (name or code.lower())
    port = free_port()
    config = write_config(
        folder / "console.toml",
        net.identities[code].directory,
        hub=target,
        port=port,
        language="en",
    )
    if settings:
        # Top-level settings go before the first table.
        config.path.write_text(
            config.path.read_text().replace("[sessions]", f"{settings}\n\n[sessions]", 1)
        )
        config = load_config(config.path)
    if approval:
        text = config.path.read_text()
        for action, needed in approval.items():
            text = re.sub(
                rf"^{action} = (true|false)$",
                f"{action} = {'true' if needed else 'false'}",
                text,
                flags=re.M,
            )
        config.path.write_text(text)
        config = load_config(config.path)
    db = ConsoleDb(config.database_url)
    db.migrate()
    with db() as s:
        for username, role in PEOPLE.items():
            add_person(
                s, username, username.title(), role, PASSWORD, net.clock.now(), language="en"
            )
    db.dispose()
    client = net.identities[code].client(target, clock=net.clock)
    app = create_app(config, client, net.clock, kind=KINDS[MEMBERS[code][1]])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    return Console(code, f"http://127.0.0.1:{port}", folder, net.identities[code], server, app)


async def _stop(net: ConsoleNetwork) -> None:
    for console in net.consoles.values():
        console.server.should_exit = True
    for _ in range(100):
        if all(not c.server.started or c.server.should_exit for c in net.consoles.values()):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    for c in net._clients:
        with contextlib.suppress(Exception):
            await c.close()
    if net.server is not None:
        await net.server.stop(0.5)
    if net.store is not None:
        net.store.dispose()


@contextlib.contextmanager
def console_network(
    directory: Path,
    codes: list[str],
    *,
    start: datetime = START,
    approval: dict[str, bool] | None = None,
) -> Iterator[ConsoleNetwork]:
    """A hub with MEMBERS registered and a console for each of `codes`; stopped on exit."""
    net = ConsoleNetwork(directory, ManualClock(start))
    loop = asyncio.new_event_loop()
    net.loop = loop
    ready = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        ready.set()
        loop.run_forever()

    net._thread = threading.Thread(target=main, name="console-network", daemon=True)
    net._thread.start()
    ready.wait()
    try:
        net.run(_start(net, codes, approval or {}), timeout=60)
        yield net
    finally:
        with contextlib.suppress(Exception):
            net.run(_stop(net), timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        net._thread.join(10)
        loop.close()


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Browserless:
    """An HTTP client signed in to one console as one person, as a browser without script
    would be: it reads each form's CSRF token from the page it came from."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.http = httpx.Client(base_url=console.url, follow_redirects=False, timeout=30)
        self.csrf = ""

    def login(self, username: str, password: str = PASSWORD, totp: str = "") -> httpx.Response:
        page = self.http.get("/login")
        token = CSRF.search(page.text)
        assert token, page.text
        answer = self.http.post(
            "/login",
            data={
                "csrf": token.group(1),
                "username": username,
                "password": password,
                "totp": totp,
                "next": "/",
            },
        )
        if answer.status_code == 303:
            self.csrf = self.token("/proposals")
        return answer

    def token(self, path: str) -> str:
        found = CSRF.search(self.http.get(path, follow_redirects=True).text)
        assert found, f"no form on {path}"
        return found.group(1)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, **kw)

    def post(self, path: str, data: dict[str, Any], *, csrf: bool = True) -> httpx.Response:
        form = dict(data)
        if csrf:
            form.setdefault("csrf", self.csrf)
        return self.http.post(path, data=form)

    def close(self) -> None:
        self.http.close()
