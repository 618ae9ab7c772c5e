"""A real hub on a loopback port, with a registered network of institutions."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from adapters.sdk import HubClient
from hub.bootstrap import HubServer, serve
from hub.crypto import pki
from hub.crypto.keys import PrivateKey
from hub.crypto.listkey import ListKey
from hub.crypto.signer import Signer
from hub.domain.institutions import ContactRole, DutyContact, InstitutionKind
from hub.service.admin import NewKey, Registry
from hub.store.sql import SqlStore
from hub.system.clock import ManualClock

MEMBERS = {
    "CENTRE": ("Anti-Fraud Centre", InstitutionKind.ANTI_FRAUD_CENTRE),
    "BANKA": ("Bank A", InstitutionKind.BANK),
    "BANKB": ("Bank B", InstitutionKind.BANK),
    "PAYX": ("PayX Wallet", InstitutionKind.PAYMENT_INSTITUTION),
    "REG": ("Regulator", InstitutionKind.REGULATOR),
}


# Hub processes a test started (tests/e2e/test_restart.py's Hub): whatever a failing test
# leaves running is killed when it ends, so it does not serve on for the rest of the run.
CHILDREN: set[subprocess.Popen[bytes]] = set()


@pytest.fixture(autouse=True)
def _no_child_left_running() -> Iterator[None]:
    yield
    for proc in list(CHILDREN):
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        CHILDREN.discard(proc)


def contacts(code: str) -> list[DutyContact]:
    return [
        DutyContact(ContactRole.PRIMARY, f"{code} duty A", "+86-10-5550-0001"),
        DutyContact(ContactRole.BACKUP, f"{code} duty B", "+86-10-5550-0002"),
    ]


@dataclass
class Network:
    target: str
    hub_key: Signer
    clock: ManualClock
    store: SqlStore
    server: HubServer
    database_url: str
    ca: pki.Issued
    hub_tls: pki.TlsConfig  # the server's side, for a test that restarts the hub
    list_key: ListKey | None = None
    keys: dict[str, PrivateKey] = field(default_factory=dict)
    # Each member's client certificate, issued by `ca`; the hub serves mutual TLS only.
    tls: dict[str, pki.TlsConfig] = field(default_factory=dict)

    @property
    def hub_public_key(self) -> bytes:
        return self.hub_key.public_key

    def tls_of(self, code: str) -> pki.TlsConfig:
        """`code`'s client certificate, issued by the network's CA on first use (an
        institution a test registers itself gets one too)."""
        if code not in self.tls:
            self.tls[code] = tls_for(self.ca, pki.issue_client(self.ca, code, datetime.now(UTC)))
        return self.tls[code]

    def channel(self, code: str) -> grpc.aio.Channel:
        """A channel to the hub as member `code` would open it: mutual TLS with its
        client certificate."""
        from adapters.sdk import secure_channel

        return secure_channel(self.target, self.tls_of(code))

    def client(self, code: str, **kwargs: Any) -> Any:
        from adapters.sdk import HubClient

        if "channel" not in kwargs and "credentials" not in kwargs:
            kwargs.setdefault("tls", self.tls_of(code))
        return HubClient(
            self.target,
            institution=code,
            key=kwargs.pop("key", self.keys[code]),
            hub_public_key=kwargs.pop("hub_public_key", self.hub_public_key),
            clock=kwargs.pop("clock", self.clock),
            **kwargs,
        )


def tls_for(ca: pki.Issued, issued: pki.Issued) -> pki.TlsConfig:
    return pki.TlsConfig(ca.cert_pem, issued.cert_pem, issued.key_pem)


async def start_network(
    tmp_path: Path,
    clock: ManualClock,
    *,
    ack_timeout: float = 1.0,
    database_url: str | None = None,
    list_key: ListKey | None = None,
    hub_key: Signer | None = None,
    ca: pki.Issued | None = None,
    algorithm: str = "ed25519",
    **serve_options: Any,
) -> Network:
    """A hub on a loopback port with MEMBERS registered, each with a key of `algorithm`;
    `serve_options` go to `bootstrap.serve` (metrics and health ports, say); `hub_key`: the
    hub's signer (a new software key by default); `ca`: the network's CA (a new one by
    default)."""
    url = database_url or f"sqlite:///{tmp_path}/hub.db"
    hub_key = hub_key or PrivateKey.generate()
    list_key = list_key or ListKey.generate()
    # TLS checks validity against the real time, not the test's clock.
    now = datetime.now(UTC)
    ca = ca or pki.create_ca(now)
    hub_tls = tls_for(ca, pki.issue_server(ca, now))
    server, store = await serve(
        url,
        hub_key,
        "127.0.0.1:0",
        clock=clock,
        ack_timeout=ack_timeout,
        workers=4,
        tls=hub_tls,
        list_key=list_key,
        **serve_options,
    )
    registry = Registry(store, clock)
    network = Network(
        f"127.0.0.1:{server.port}", hub_key, clock, store, server, url, ca, hub_tls, list_key
    )
    for code, (name, kind) in MEMBERS.items():
        key = PrivateKey.generate(algorithm)
        network.keys[code] = key
        network.tls_of(code)
        registry.add_institution(
            code, name, kind, [NewKey(key.algorithm, key.public_key)], contacts(code)
        )
    return network


@pytest.fixture
async def network(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Network]:
    net = await start_network(tmp_path, clock)
    try:
        yield net
    finally:
        await net.server.stop(0.5)
        net.store.dispose()


@pytest.fixture
async def clients(network: Network) -> AsyncIterator[dict[str, HubClient]]:
    """A signed SDK client for every member of the network, closed after the test."""
    made = {code: network.client(code) for code in network.keys}
    try:
        yield made
    finally:
        for c in made.values():
            await c.close()
