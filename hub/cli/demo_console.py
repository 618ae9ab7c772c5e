"""`stophub demo --console`: after the story, the demo's network stays up with a console
(adapters/console) for the centre, each member and a regulator, so a newcomer can click
through the cases it left; case time slows to the wall clock's pace. Ctrl-C stops it all."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import socket
import string
from collections.abc import Iterator
from dataclasses import dataclass, field

import uvicorn
from rich.console import Console as Screen
from rich.text import Text

from adapters.console.app import create_app
from adapters.console.config import write_config
from adapters.console.db import ConsoleDb
from adapters.console.people import Role, add_person
from adapters.sdk.identity import write_identity
from hub.cli.demo_cast import BANK_A, BANK_B, CENTRE, MEMBERS, PAYX, DemoNetwork
from hub.crypto import pki
from hub.crypto.keys import PrivateKey
from hub.domain.institutions import ContactRole, DutyContact, InstitutionKind
from hub.service.admin import NewKey, Registry
from hub.service.sweep import ON_TIME

REGULATOR = "REG"
REGULATOR_NAME = "Regulator (demo)"
# Each console's port is the base plus its place here.
CONSOLES: list[tuple[str, str]] = [
    (CENTRE, "anti_fraud_centre"),
    (BANK_A, "bank"),
    (BANK_B, "bank"),
    (PAYX, "payment_institution"),
    (REGULATOR, "regulator"),
]
PEOPLE: list[tuple[str, str, Role]] = [
    ("officer", "Duty Officer", Role.OFFICER),
    ("supervisor", "First Supervisor", Role.SUPERVISOR),
    ("supervisor2", "Second Supervisor", Role.SUPERVISOR),
    ("viewer", "Viewer", Role.VIEWER),
]
HOST = "127.0.0.1"
ALPHABET = string.ascii_letters + string.digits
# How long a console waits for open pages (a live event stream) when stopping.
GRACE = 1


class PortBusy(Exception):
    """A console's port is taken; said in one line."""


def bind_ports(base: int) -> list[socket.socket]:
    """One listening socket per console, bound now (before the story runs), so a busy port
    is found at once and nothing else takes it meanwhile."""
    bound: list[socket.socket] = []
    for offset, (code, _kind) in enumerate(CONSOLES):
        port = base + offset
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            if not 0 < port < 65536:
                raise OSError(f"no such port {port}")
            sock.bind((HOST, port))
        except OSError as err:
            sock.close()
            for s in bound:
                s.close()
            raise PortBusy(
                f"port {port} on {HOST} (the {code} console) is not free "
                f"({err.strerror or err}); choose another base with --console-port"
            ) from err
        bound.append(sock)
    return bound


class _Server(uvicorn.Server):
    """A console's web server; the demo itself handles Ctrl-C for all of them at once."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Login:
    username: str
    password: str
    role: Role


@dataclass
class Running:
    code: str
    name: str
    url: str
    server: _Server
    task: asyncio.Task[None]
    logins: list[Login] = field(default_factory=list)


def _register_regulator(network: DemoNetwork) -> None:
    key = PrivateKey.generate()
    network.keys[REGULATOR] = key
    pki.issue(network.tls_dir, REGULATOR, network.clock.base.now())
    Registry(network.store, network.clock).add_institution(
        REGULATOR,
        REGULATOR_NAME,
        InstitutionKind.REGULATOR,
        [NewKey(key.algorithm, key.public_key)],
        [
            DutyContact(ContactRole.PRIMARY, "Regulator duty officer A", "+86-10-6000-0091"),
            DutyContact(ContactRole.BACKUP, "Regulator duty officer B", "+86-10-6000-0092"),
        ],
    )


def _password() -> str:
    """16 letters and digits: nothing a terminal or a paste may mangle."""
    return "".join(secrets.choice(ALPHABET) for _ in range(16))


def _people(url: str, network: DemoNetwork) -> list[Login]:
    logins = [Login(u, _password(), role) for u, _name, role in PEOPLE]
    db = ConsoleDb(url)
    db.migrate()
    try:
        with db() as s:
            for login, (_u, name, _role) in zip(logins, PEOPLE, strict=True):
                add_person(
                    s,
                    login.username,
                    name,
                    login.role,
                    login.password,
                    network.clock.now(),
                    language="en",
                )
    finally:
        db.dispose()
    return logins


async def _start(network: DemoNetwork, code: str, kind: str, sock: socket.socket) -> Running:
    folder = network.directory / "consoles" / code.lower()
    identity = write_identity(
        folder / "identity",
        code,
        network.keys[code],
        pki.client_tls(network.tls_dir, code),
        network.keys["HUB"],
        network.target,
    )
    port = int(sock.getsockname()[1])
    config = write_config(
        folder / "console.toml",
        identity.directory.resolve(),
        hub=network.target,
        port=port,
        language="en",
    )
    logins = _people(config.database_url, network)
    app = create_app(
        config, identity.client(network.target, clock=network.clock), network.clock, kind=kind
    )
    server = _Server(
        uvicorn.Config(
            app,
            host=HOST,
            port=port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=GRACE,
        )
    )
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"the {code} console")
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.02)
    if task.done():
        task.result()
    names = {m[0]: m[1] for m in MEMBERS} | {REGULATOR: REGULATOR_NAME}
    return Running(code, names[code], f"http://{HOST}:{port}/", server, task, logins)


def _real_time(network: DemoNetwork) -> None:
    """Case time from now on runs at the wall clock's pace, going on from where it is; the
    hub's sweep slows to match (it ran every 20 ms, for 120× time)."""
    network.clock.rebase(1.0)
    network.server.hub.sweeper.late_after = ON_TIME
    scheduler = network.server.scheduler
    if scheduler is not None:
        with contextlib.suppress(Exception):
            for job in scheduler.get_jobs():
                job.reschedule("interval", seconds=0.5)


def _show(screen: Screen, running: list[Running], network: DemoNetwork) -> None:
    screen.rule(Text("the consoles", "bold"))
    screen.print(
        "the demo's network stays up: the hub at "
        f"{network.target}, and a console for each institution below. The bank agents have "
        "stopped: each console now holds its institution's delivery stream, and case time "
        "runs at the wall clock's pace.",
        highlight=False,
        markup=False,
    )
    screen.print("cases to look at: " + ", ".join(network.case_ids), highlight=False, markup=False)
    for r in running:
        screen.print(f"{r.code:<7} {r.url}   {r.name}", highlight=False, markup=False)
        for login in r.logins:
            screen.print(
                f"          user {login.username:<12} password {login.password}   "
                f"({login.role.value})",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
    screen.print(
        "each console's files (console.toml, identity/, console.db) are in "
        f"{network.directory / 'consoles'}; Ctrl-C stops the consoles and the hub",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


async def keep_running(
    network: DemoNetwork, *, screen: Screen, sockets: list[socket.socket]
) -> int:
    """Stop the bank agents, start the consoles, print their logins, wait for Ctrl-C or
    SIGTERM, stop the consoles. The caller stops the hub."""
    for agent in network.agents:
        await agent.stop()
    for task in network.tasks:
        task.cancel()
    await asyncio.gather(*network.tasks, return_exceptions=True)
    network.tasks.clear()
    _register_regulator(network)
    _real_time(network)
    running: list[Running] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        for (code, kind), sock in zip(CONSOLES, sockets, strict=True):
            running.append(await _start(network, code, kind, sock))
        _show(screen, running, network)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        for r in running:
            r.server.should_exit = True
        if running:
            await asyncio.wait([r.task for r in running], timeout=GRACE + 4)
        for r in running:
            r.server.force_exit = True
            if not r.task.done():
                r.task.cancel()
        await asyncio.gather(*(r.task for r in running), return_exceptions=True)
        for sock in sockets:
            sock.close()
    return 0
