"""The delivery stream: everything addressed to an institution, in order, until acknowledged.

The outbox table is the truth; this router only decides which open connection carries
which unacknowledged delivery. It reloads the outbox when woken (a commit that queued
something for the institution, a new connection, an acknowledgement) and on a tick, so a
delivery that was not acknowledged in time moves to the institution's other connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from hub.api.decoding import Undecodable
from hub.api.servicers import Runner, peer_institution
from hub.domain.errors import DomainError
from hub.service.ports import PendingDelivery, StoreUnavailable
from stophub.v1 import delivery_pb2, delivery_pb2_grpc, envelope_pb2

log = logging.getLogger(__name__)

_CLOSE = object()
EOF = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs


@dataclass(eq=False)
class Connection:
    institution: str
    name: str
    id: int
    # The key that signed the subscription: the stream ends when it is revoked or retired.
    key_id: str = ""
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    in_flight: int = 0
    error: DomainError | None = None
    error_envelope: envelope_pb2.Envelope | None = None


@dataclass
class _InFlight:
    connection: Connection
    sent_at: float


class InstitutionGroup:
    def __init__(self, router: DeliveryRouter, code: str) -> None:
        self.router = router
        self.code = code
        self.connections: list[Connection] = []
        self.in_flight: dict[int, _InFlight] = {}
        self.wake = asyncio.Event()
        # Set when something may wait to be sent (a commit for this institution, a connection
        # opened or closed); a tick or an acknowledgement alone first probes the outbox.
        self.urgent = True
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._pump(), name=f"deliveries-{self.code}")

    async def _pump(self) -> None:
        tick = self.router.ack_timeout / 2
        while self.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=tick)
            self.wake.clear()
            urgent, self.urgent = self.urgent, False
            try:
                await self._dispatch(urgent)
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as err:
                # The outbox keeps everything; the next tick tries again.
                log.warning("delivery to %s waits for the database: %s", self.code, err.detail)
                await asyncio.sleep(tick)
            except Exception:
                log.exception("delivery to %s failed; retrying", self.code)
                await asyncio.sleep(tick)

    async def _dispatch(self, urgent: bool = True) -> None:
        runner = self.router.runner
        # Most ticks find nothing: one outbox query instead of also loading the keys. The keys
        # are still checked before anything is sent (below), so a revoked stream still ends
        # before its next delivery.
        if not urgent and not await runner.call(runner.hub.pending, self.code, 1):
            for gone in self.in_flight.values():
                gone.connection.in_flight -= 1
            self.in_flight.clear()
            return
        keys = {c.key_id for c in self.connections if c.error is None and c.key_id}
        pending, ended = await runner.call(
            runner.hub.pending_for_streams, self.code, keys, self.router.batch
        )
        for conn in self.connections:
            if conn.error is None and conn.key_id in ended:
                log.warning("%s stream %s closed: %s", self.code, conn.name, ended[conn.key_id])
                conn.error = ended[conn.key_id]
                conn.queue.put_nowait(_CLOSE)
        live = [c for c in self.connections if c.error is None]
        pending_seqs = {d.sequence for d in pending}
        for seq in list(self.in_flight):
            if seq not in pending_seqs:
                self.in_flight.pop(seq).connection.in_flight -= 1
        if not live:
            return
        now = time.monotonic()
        sent: list[int] = []
        outgoing: list[tuple[Connection, delivery_pb2.StreamDeliveriesResponse]] = []
        for d in pending:
            flight = self.in_flight.get(d.sequence)
            if flight is not None:
                fresh = now - flight.sent_at < self.router.ack_timeout
                if flight.connection in live and fresh:
                    continue
                flight.connection.in_flight -= 1
                others = [c for c in live if c is not flight.connection]
                target = min(others or live, key=lambda c: c.in_flight)
            else:
                target = min(live, key=lambda c: c.in_flight)
            envelope = envelope_pb2.Envelope()
            envelope.ParseFromString(d.envelope)
            outgoing.append(
                (
                    target,
                    delivery_pb2.StreamDeliveriesResponse(
                        sequence=d.sequence, envelope=envelope, attempt=d.attempts + 1
                    ),
                )
            )
            target.in_flight += 1
            self.in_flight[d.sequence] = _InFlight(target, now)
            sent.append(d.sequence)
        if sent:
            # Count the attempt before sending, so a redelivery after a quick reconnect can
            # never report the same attempt number twice.
            await self.router.mark_sent(sent)
            for target, response in outgoing:
                target.queue.put_nowait(response)
            if len(pending) == self.router.batch:
                self.urgent = True
                self.wake.set()

    def acked(self, sequences: Iterable[int]) -> None:
        for seq in sequences:
            flight = self.in_flight.pop(seq, None)
            if flight is not None:
                flight.connection.in_flight -= 1


class DeliveryRouter:
    """Implements the Notifier port: commits in worker threads wake the pumps here."""

    def __init__(self, runner: Runner, *, ack_timeout: float = 5.0, batch: int = 500) -> None:
        self.runner = runner
        self.ack_timeout = ack_timeout
        self.batch = batch
        self.groups: dict[str, InstitutionGroup] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ids = itertools.count(1)
        self._marking: list[int] = []
        self._marked: asyncio.Future[None] | None = None
        self._marker: asyncio.Task[None] | None = None

    async def mark_sent(self, sequences: list[int]) -> None:
        """Count attempts in one transaction for every pump about to send meanwhile: the
        commit of a notice to 1,000 members then costs a few writes here, not 1,000."""
        if self._marked is None:
            self._marked = asyncio.get_running_loop().create_future()
        marked = self._marked
        self._marking.extend(sequences)
        if self._marker is None or self._marker.done():
            self._marker = asyncio.create_task(self._mark_batches())
        await asyncio.shield(marked)

    async def _mark_batches(self) -> None:
        while self._marked is not None:
            await asyncio.sleep(0)  # let the pumps that wake in the same turn join in
            marked, batch = self._marked, self._marking
            self._marked, self._marking = None, []
            try:
                await self.runner.call(self.runner.hub.mark_sent, batch)
            except Exception as err:
                marked.set_exception(err)
            else:
                marked.set_result(None)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def notify(self, recipients: Iterable[str], deliveries: Sequence[PendingDelivery] = ()) -> None:
        if self.loop is None or self.loop.is_closed():
            return
        codes = list(recipients)
        self.loop.call_soon_threadsafe(self._wake, codes)

    def _wake(self, codes: list[str]) -> None:
        for code in codes:
            group = self.groups.get(code)
            if group is not None:
                group.urgent = True
                group.wake.set()

    def attach(self, institution: str, name: str, key_id: str = "") -> Connection:
        conn = Connection(institution, name, next(self._ids), key_id=key_id)
        group = self.groups.get(institution)
        if group is None:
            group = self.groups[institution] = InstitutionGroup(self, institution)
            group.connections.append(conn)
            group.start()
        else:
            group.connections.append(conn)
        group.urgent = True
        group.wake.set()
        log.info("%s connected stream %s (%d open)", institution, name, len(group.connections))
        return conn

    def detach(self, conn: Connection) -> None:
        group = self.groups.get(conn.institution)
        if group is None or conn not in group.connections:
            return
        group.connections.remove(conn)
        if not group.connections:
            if group.task is not None:
                group.task.cancel()
            del self.groups[conn.institution]
        else:
            group.urgent = True
            group.wake.set()  # its unacknowledged deliveries move to the other connection
        log.info("%s stream %s closed", conn.institution, conn.name)

    def acked(self, conn: Connection, sequences: Iterable[int]) -> None:
        group = self.groups.get(conn.institution)
        if group is not None:
            group.acked(sequences)
            group.wake.set()

    def connections(self) -> dict[str, int]:
        return {code: len(g.connections) for code, g in self.groups.items()}

    async def close(self) -> None:
        for group in list(self.groups.values()):
            for conn in group.connections:
                conn.queue.put_nowait(_CLOSE)
            if group.task is not None:
                group.task.cancel()
        self.groups.clear()


class DeliveryServicer(delivery_pb2_grpc.DeliveryServiceServicer):
    def __init__(self, runner: Runner, router: DeliveryRouter, *, hello_timeout: float = 30.0):
        self.r = runner
        self.router = router
        self.hello_timeout = hello_timeout

    async def StreamDeliveries(  # type: ignore[override]
        self, request_iterator: Any, context: Any
    ) -> None:
        try:
            first = await asyncio.wait_for(context.read(), timeout=self.hello_timeout)
        except TimeoutError:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "send a signed SubscribeBody as the first message of the stream",
            )
            return
        if first is EOF:
            return
        if isinstance(first, Undecodable):
            await self.r.abort(context, first.error, None)
            return
        # The connection's certificate cannot change during the stream: read it once.
        peer = peer_institution(context)
        try:
            code, name = await self.r.call(self.r.hub.open_stream, first.envelope, peer)
        except DomainError as err:
            await self.r.abort(context, err, first.envelope)
            return
        # Initial metadata tells the client its subscription was accepted.
        await context.send_initial_metadata((("stophub-subscribed", code),))
        conn = self.router.attach(code, name, first.envelope.key_id)
        reader = asyncio.create_task(self._read_acks(conn, context, peer))
        try:
            while True:
                item = await conn.queue.get()
                if item is _CLOSE:
                    if conn.error is not None:
                        await self.r.abort(context, conn.error, conn.error_envelope)
                    return
                await context.write(item)
        finally:
            reader.cancel()
            self.router.detach(conn)

    async def _read_acks(self, conn: Connection, context: Any, peer: str | None) -> None:
        try:
            while True:
                request = await context.read()
                if request is EOF:
                    break
                if isinstance(request, Undecodable):
                    conn.error = request.error
                    break
                try:
                    sequences = await self.r.call(
                        self.r.hub.acknowledge, conn.institution, request.envelope, peer
                    )
                except StoreUnavailable as err:
                    # Not stored, not refused: the delivery comes again after the ack timeout
                    # and the client acknowledges it again, so the stream stays up.
                    log.warning("ack from %s not stored: %s", conn.institution, err.detail)
                    continue
                except DomainError as err:
                    conn.error, conn.error_envelope = err, request.envelope
                    break
                self.router.acked(conn, sequences)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.debug("stream of %s ended while reading", conn.institution, exc_info=True)
        conn.queue.put_nowait(_CLOSE)
