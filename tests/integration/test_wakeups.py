"""Replicas wake each other through PostgreSQL (hub.store.wakeups, ADR 22), on a real server:
commits told together share one NOTIFY, a payload too long for PostgreSQL wakes everyone, a
replica ignores its own notifications, and a listener whose connection is killed comes back
by itself and wakes everything once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import psycopg
import pytest

from hub.store.wakeups import CHANNEL, PgWakeups, Wake, conninfo, decode, encode


class Woken:
    """What one replica's router and list watcher were told."""

    def __init__(self) -> None:
        self.deliveries: list[frozenset[str] | None] = []
        self.lists = 0
        self.event = asyncio.Event()

    def on_deliveries(self, names: frozenset[str] | None) -> None:
        self.deliveries.append(names)
        self.event.set()

    def on_lists(self) -> None:
        self.lists += 1
        self.event.set()

    def named(self) -> set[str]:
        return {n for names in self.deliveries if names is not None for n in names}

    async def until(self, check: object, timeout: float = 10.0) -> None:
        async def wait() -> None:
            while not check():  # type: ignore[operator]
                self.event.clear()
                await self.event.wait()

        await asyncio.wait_for(wait(), timeout)


class Tap:
    """A plain listener on the channel: counts the NOTIFYs actually sent."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.payloads: list[str] = []
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Tap:
        self.conn = await psycopg.AsyncConnection.connect(conninfo(self.url), autocommit=True)
        await self.conn.execute(f"LISTEN {CHANNEL}")

        async def run() -> None:
            async for note in self.conn.notifies():
                self.payloads.append(note.payload)

        self.task = asyncio.create_task(run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        # Done with the socket before it closes: a new connection may get its number.
        await asyncio.gather(self.task, return_exceptions=True)
        await self.conn.close()


@pytest.fixture
async def pair(postgres_url: str) -> AsyncIterator[tuple[PgWakeups, Woken, PgWakeups, Woken]]:
    woken_a, woken_b = Woken(), Woken()
    a = PgWakeups(
        postgres_url, woken_a.on_deliveries, woken_a.on_lists, spacing=0.02, backoff=(0.05, 0.2)
    )
    b = PgWakeups(
        postgres_url, woken_b.on_deliveries, woken_b.on_lists, spacing=0.02, backoff=(0.05, 0.2)
    )
    await a.start()
    await b.start()
    assert a.listening.is_set() and b.listening.is_set()
    try:
        yield a, woken_a, b, woken_b
    finally:
        await a.close()
        await b.close()


def test_payload_names_the_sender_and_overflows_to_everyone() -> None:
    wake = decode(encode("r1", {"BANKA", "BANKB"}, True))
    assert wake == Wake("r1", frozenset({"BANKA", "BANKB"}), True)
    many = {f"BANK{i:05d}" for i in range(1000)}  # 1,000 names: more than 8000 bytes
    text = encode("r1", many, False)
    assert len(text.encode()) < 8000
    assert decode(text) == Wake("r1", None, False)
    assert decode("not json") is None and decode('{"x": 1}') is None


async def test_commits_share_notifies_and_wake_the_other_replica_only(
    postgres_url: str, pair: tuple[PgWakeups, Woken, PgWakeups, Woken]
) -> None:
    a, woken_a, _, woken_b = pair
    async with Tap(postgres_url) as tap:
        # 200 commits told from worker threads, well within one spacing even on a loaded
        # machine: the first goes at once, the others share what follows.
        a.spacing = 0.5
        threads = [threading.Thread(target=a.notify, args=([f"BANK{i % 50}"],)) for i in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        a.list_changed()
        expected = {f"BANK{i}" for i in range(50)}
        await woken_b.until(lambda: woken_b.named() == expected and woken_b.lists >= 1)
        await asyncio.sleep(0.2)  # anything else on its way arrives
    assert 1 <= len(tap.payloads) < 20, len(tap.payloads)
    assert all(decode(p).replica == a.replica for p in tap.payloads)  # type: ignore[union-attr]
    # Its own notifications do not wake the replica that sent them.
    assert woken_a.deliveries == [] and woken_a.lists == 0
    assert None not in woken_b.deliveries

    # Told within one turn of the loop, with no spacing to wait for: one NOTIFY.
    async with Tap(postgres_url) as tap:
        a.spacing = 0.0
        for i in range(100):
            a.add([f"PAY{i}"])
        await woken_b.until(lambda: {f"PAY{i}" for i in range(100)} <= woken_b.named())
        await asyncio.sleep(0.2)
    assert len(tap.payloads) == 1, tap.payloads

    # Too many names for one payload: everyone is woken instead.
    woken_b.deliveries.clear()
    a.notify([f"INSTITUTION-WITH-A-LONG-CODE-{i:06d}" for i in range(400)])
    await woken_b.until(lambda: None in woken_b.deliveries)


async def test_a_killed_listener_comes_back_and_wakes_everything(
    postgres_url: str, pair: tuple[PgWakeups, Woken, PgWakeups, Woken]
) -> None:
    a, woken_a, b, woken_b = pair
    with psycopg.connect(conninfo(postgres_url), autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'stophub-wakeups' AND datname = current_database()"
        ).fetchall()
    assert len(killed) >= 2  # both listeners (and any sender)
    # Each comes back by itself and reads everything once: it may have missed something.
    await woken_b.until(lambda: None in woken_b.deliveries and woken_b.lists >= 1)
    await woken_a.until(lambda: None in woken_a.deliveries and woken_a.lists >= 1)
    await asyncio.wait_for(b.listening.wait(), 10)
    # And wakes the other again, its sending connection opened anew.
    a.notify(["BANKZ"])
    await woken_b.until(lambda: "BANKZ" in woken_b.named())
