"""Helpers the test layers and bench/ share: plain functions and classes, no pytest, so a
benchmark can use them without the test runner (the fixtures that wrap them stay in the
conftest and test modules)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from sqlalchemy import create_engine, text

from adapters.blacklist import Replica, ReplicaEvent
from hub.crypto.keys import PrivateKey
from hub.domain.institutions import ContactRole, DutyContact, InstitutionKind
from hub.service.admin import NewKey, Registry
from hub.store.sql import normalise_url


@contextmanager
def throwaway_database(base_url: str, prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL database named `prefix` + a random suffix on the server `base_url`
    points at; its URL is yielded, and the database is dropped afterwards (whoever is still
    connected is cut off first)."""
    admin_url = normalise_url(base_url)
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def add_members(
    registry: Registry, kinds: Mapping[str, InstitutionKind], *, supervisor: bool = False
) -> dict[str, PrivateKey]:
    """Registers each code of `kinds` as "<code> display", with a fresh key and duty contacts
    A and B (and a supervisor S when `supervisor`: the clock steps that escalate want one);
    returns each member's key by code."""
    keys = {}
    for code, kind in kinds.items():
        key = keys[code] = PrivateKey.generate()
        contacts = [
            DutyContact(ContactRole.PRIMARY, f"{code} A", "+86-10-5550-0001"),
            DutyContact(ContactRole.BACKUP, f"{code} B", "+86-10-5550-0002"),
        ]
        if supervisor:
            contacts.append(DutyContact(ContactRole.SUPERVISOR, f"{code} S", "+86-10-5550-0003"))
        registry.add_institution(
            code, f"{code} display", kind, [NewKey(key.algorithm, key.public_key)], contacts
        )
    return keys


class Watch:
    """A replica's events, and a way to wait for a state of its copy."""

    def __init__(self, replica: Replica) -> None:
        self.events: list[ReplicaEvent] = []
        self.changed = asyncio.Event()
        replica.on_event = self

    def __call__(self, event: ReplicaEvent) -> None:
        self.events.append(event)
        self.changed.set()

    @property
    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    async def until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                self.changed.clear()
                await self.changed.wait()
