"""Helpers the test layers and bench/ share: plain functions and classes, no pytest, so a
benchmark can use them without the test runner (the fixtures that wrap them stay in the
conftest and test modules)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text

from adapters.blacklist import Replica, ReplicaEvent
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
