"""A real hub on a loopback port, with a registered network of institutions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hub.api.server import HubServer
from hub.bootstrap import serve
from hub.clock import ManualClock
from hub.crypto.keys import PrivateKey
from hub.domain.institutions import ContactRole, DutyContact, InstitutionKind
from hub.service.admin import NewKey, Registry
from hub.store.sql import SqlStore

MEMBERS = {
    "CENTRE": ("Anti-Fraud Centre", InstitutionKind.ANTI_FRAUD_CENTRE),
    "BANKA": ("Bank A", InstitutionKind.BANK),
    "BANKB": ("Bank B", InstitutionKind.BANK),
    "PAYX": ("PayX Wallet", InstitutionKind.PAYMENT_INSTITUTION),
    "REG": ("Regulator", InstitutionKind.REGULATOR),
}


def contacts(code: str) -> list[DutyContact]:
    return [
        DutyContact(ContactRole.PRIMARY, f"{code} duty A", "+86-10-5550-0001"),
        DutyContact(ContactRole.BACKUP, f"{code} duty B", "+86-10-5550-0002"),
    ]


@dataclass
class Network:
    target: str
    hub_key: PrivateKey
    clock: ManualClock
    store: SqlStore
    server: HubServer
    database_url: str
    keys: dict[str, PrivateKey] = field(default_factory=dict)

    @property
    def hub_public_key(self) -> bytes:
        return self.hub_key.public_key

    def client(self, code: str, **kwargs: Any) -> Any:
        from adapters.sdk import HubClient

        return HubClient(
            self.target,
            institution=code,
            key=kwargs.pop("key", self.keys[code]),
            hub_public_key=kwargs.pop("hub_public_key", self.hub_public_key),
            clock=kwargs.pop("clock", self.clock),
            **kwargs,
        )


async def start_network(tmp_path: Path, clock: ManualClock, *, ack_timeout: float = 1.0) -> Network:
    url = f"sqlite:///{tmp_path}/hub.db"
    hub_key = PrivateKey.generate()
    server, store = await serve(
        url, hub_key, "127.0.0.1:0", clock=clock, ack_timeout=ack_timeout, workers=4
    )
    registry = Registry(store, clock)
    network = Network(f"127.0.0.1:{server.port}", hub_key, clock, store, server, url)
    for code, (name, kind) in MEMBERS.items():
        key = PrivateKey.generate()
        network.keys[code] = key
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
