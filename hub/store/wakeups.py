"""Replicas on one PostgreSQL wake each other (ADR 22).

A commit on one replica may queue deliveries for an institution that streams from another,
or change the blacklist that another's followers read. Without a word from the first, the
second finds out on its tick (every ack_timeout / 2). `PgWakeups` is that word:

- Told of commits from any thread (it is a `Notifier`, hub.service.ports, and a list
  listener), it sends their recipients in one `NOTIFY` on a connection of its own, after the
  commits. The first commit after a quiet spell goes at once; then at most one NOTIFY per
  `spacing` seconds, each naming every institution told meanwhile (a busy hub sends at
  most 500 a second, an idle one adds no wait to a stop). Never inside the write
  transactions: there a NOTIFY takes PostgreSQL's global notify lock until the commit and
  serialises the commits of every replica. A payload that would pass PostgreSQL's
  8000-byte limit becomes "everyone".
- One dedicated connection LISTENs. A notification from another replica wakes the router
  for the institutions it names (`on_deliveries`; None for everyone) and the list watcher
  (`on_lists`); this replica's own are ignored, it woke itself when it committed.
- The ticks stay the safety net: a NOTIFY that could not be sent is dropped with a warning.
  A lost listening connection is opened again with growing pauses and, once listening,
  wakes everything here once, since notifications may have been missed meanwhile.

SQLite has one hub process and no other replica: nothing of this runs there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from sqlalchemy.engine import make_url

from hub.service.ports import PendingDelivery
from hub.store.sql import normalise_url

log = logging.getLogger(__name__)

CHANNEL = "stophub_wake"
# PostgreSQL refuses a payload of 8000 bytes or more.
PAYLOAD_LIMIT = 7999
# At most one NOTIFY per this many seconds; the first after a quiet spell goes at once.
SPACING = 0.002
# Pauses between attempts to open the listening connection again (doubling, seconds).
BACKOFF = (0.1, 5.0)
# How often an idle listening connection is checked with a query, besides TCP keepalives.
CHECK_EVERY = 30.0


class WakeMetrics(Protocol):
    """What the wake-ups report to hub.observability.metrics."""

    def wakeup_sent(self) -> None: ...

    def wakeup_received(self) -> None: ...

    def wakeup_listening_now(self, listening: bool, *, again: bool) -> None: ...


@dataclass(frozen=True)
class Wake:
    """One notification: who sent it, the institutions it names (None: everyone) and
    whether the list changed."""

    replica: str
    institutions: frozenset[str] | None
    lists: bool


def encode(
    replica: str, institutions: Iterable[str] | None, lists: bool, limit: int = PAYLOAD_LIMIT
) -> str:
    """The payload of one NOTIFY; "everyone" when the names would not fit in `limit` bytes."""
    message: dict[str, object] = {"r": replica, "l": lists}
    if institutions is not None:
        message["i"] = sorted(institutions)
        text = json.dumps(message, separators=(",", ":"))
        if len(text.encode()) <= limit:
            return text
        del message["i"]
    message["all"] = True
    return json.dumps(message, separators=(",", ":"))


def decode(payload: str) -> Wake | None:
    """A notification's content; None for one that is not ours (the channel is public)."""
    try:
        message = json.loads(payload)
        replica = message["r"]
        names = None if message.get("all") else frozenset(message.get("i", ()))
        lists = bool(message.get("l"))
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(replica, str) or (
        names is not None and not all(isinstance(n, str) for n in names)
    ):
        return None
    return Wake(replica, names, lists)


def conninfo(url: str) -> str:
    """A libpq connection string for the store's URL (SQLAlchemy names its driver in it)."""
    parsed = make_url(normalise_url(url))
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def new_replica_id() -> str:
    """Unique among the replicas of one database: the process id and a random part."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:12]}"


class PgWakeups:
    """Sends and hears the wake-ups of the replicas on one PostgreSQL database. Built and
    started on the hub's event loop (`start`), stopped with `close`."""

    def __init__(
        self,
        url: str,
        on_deliveries: Callable[[frozenset[str] | None], None],
        on_lists: Callable[[], None],
        *,
        replica: str | None = None,
        spacing: float = SPACING,
        backoff: tuple[float, float] = BACKOFF,
        check_every: float = CHECK_EVERY,
        limit: int = PAYLOAD_LIMIT,
        metrics: WakeMetrics | None = None,
    ) -> None:
        self.conninfo = conninfo(url)
        self.on_deliveries = on_deliveries
        self.on_lists = on_lists
        self.replica = replica or new_replica_id()
        self.spacing = spacing
        self.backoff = backoff
        self.check_every = check_every
        self.limit = limit
        self.metrics = metrics
        self.loop = asyncio.get_running_loop()
        self.listening = asyncio.Event()
        # What commits told since the last NOTIFY: institutions (None: everyone), the list.
        self._institutions: set[str] | None = set()
        self._lists = False
        self._pending = False
        self._sender: psycopg.AsyncConnection[Any] | None = None
        self._sending: asyncio.Task[None] | None = None
        self._sent_at = -spacing  # time.monotonic() of the last NOTIFY
        self._listener: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self, wait: float = 5.0) -> None:
        """Start listening; returns once listening, or after `wait` seconds with a warning
        (the listener keeps trying; the ticks carry everything meanwhile)."""
        self._listener = asyncio.create_task(self._listen(), name="wake-ups")
        try:
            await asyncio.wait_for(self.listening.wait(), wait)
        except TimeoutError:
            log.warning(
                "not yet listening for other replicas' wake-ups (still trying): deliveries "
                "committed on them reach streams here on the tick until then"
            )

    # ---- told of commits (any thread) ---------------------------------------------------------

    def notify(self, recipients: Iterable[str], deliveries: Sequence[PendingDelivery] = ()) -> None:
        names = list(recipients)
        if names:
            self._from_thread(names, False)

    def list_changed(self) -> None:
        self._from_thread([], True)

    def _from_thread(self, names: list[str], lists: bool) -> None:
        if self._closed or self.loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            self.loop.call_soon_threadsafe(self.add, names, lists)

    def add(self, names: Iterable[str] | None, lists: bool = False) -> None:
        """On the loop: gather for the next NOTIFY (None: everyone)."""
        if self._closed:
            return
        if names is None:
            self._institutions = None
        elif self._institutions is not None:
            self._institutions.update(names)
        self._lists = self._lists or lists
        self._pending = True
        if self._sending is None or self._sending.done():
            self._sending = asyncio.create_task(self._send_pending(), name="wake-ups-send")

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        # TCP keepalives: a link that died quietly (a host gone, a firewall's idle timeout)
        # fails within a minute instead of leaving the listener deaf.
        return await psycopg.AsyncConnection.connect(
            self.conninfo,
            autocommit=True,
            connect_timeout=5,
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
            application_name="stophub-wakeups",
        )

    # ---- sending --------------------------------------------------------------------------------

    async def _send_pending(self) -> None:
        # Commits arriving while one NOTIFY is under way go together in the next.
        while self._pending and not self._closed:
            wait = self._sent_at + self.spacing - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._sent_at = time.monotonic()
            names, lists = self._institutions, self._lists
            self._institutions, self._lists, self._pending = set(), False, False
            payload = encode(self.replica, names, lists, self.limit)
            await self._send(payload)

    async def _send(self, payload: str) -> None:
        for attempt in (1, 2):  # a connection closed since the last one: once more on a new one
            try:
                if self._sender is None or self._sender.closed:
                    self._sender = await self._connect()
                await self._sender.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
            except psycopg.Error as err:
                await self._drop_sender()
                if attempt == 2:
                    log.warning(
                        "could not wake the other replicas (%s): they find these deliveries "
                        "on their tick",
                        _first_line(err),
                    )
                continue
            if self.metrics is not None:
                self.metrics.wakeup_sent()
            return

    async def _drop_sender(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            with contextlib.suppress(Exception):
                await sender.close()

    # ---- listening ------------------------------------------------------------------------------

    async def _listen(self) -> None:
        pause = self.backoff[0]
        heard_before = False
        while not self._closed:
            conn: psycopg.AsyncConnection[Any] | None = None
            try:
                conn = await self._connect()
                await conn.execute(f"LISTEN {CHANNEL}")
                self.listening.set()
                if self.metrics is not None:
                    self.metrics.wakeup_listening_now(True, again=heard_before)
                if heard_before:
                    log.info("listening for other replicas' wake-ups again; waking every stream")
                    # Whatever was notified while nobody listened: read everything once.
                    self.on_deliveries(None)
                    self.on_lists()
                heard_before = True
                pause = self.backoff[0]
                while True:
                    async for note in conn.notifies(timeout=self.check_every):
                        self.received(note.payload)
                    await conn.execute("SELECT 1")  # a quiet link: is it still there?
            except asyncio.CancelledError:
                raise
            except Exception as err:
                if self.listening.is_set() and self.metrics is not None:
                    self.metrics.wakeup_listening_now(False, again=False)
                self.listening.clear()
                if isinstance(err, psycopg.Error):
                    log.warning(
                        "lost the wake-up connection to the database (%s): trying again in "
                        "%.1f s; deliveries from other replicas arrive on the tick meanwhile",
                        _first_line(err),
                        pause,
                    )
                else:  # a bug, not the database: said loudly, and the listener lives on
                    log.exception("the wake-up listener failed; trying again in %.1f s", pause)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(pause)
            pause = min(pause * 2, self.backoff[1])

    def received(self, payload: str) -> None:
        """On the loop: one notification heard."""
        wake = decode(payload)
        if wake is None or wake.replica == self.replica:
            return  # not ours, or this replica's own: it woke itself at its commit
        if self.metrics is not None:
            self.metrics.wakeup_received()
        if wake.lists:
            self.on_lists()
        if wake.institutions is None or wake.institutions:
            self.on_deliveries(wake.institutions)

    async def close(self) -> None:
        self._closed = True
        for task in (self._listener, self._sending):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._drop_sender()


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
