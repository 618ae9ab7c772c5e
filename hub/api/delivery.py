"""The delivery stream: everything addressed to an institution, in order, until acknowledged.

The outbox table is the truth; this router only decides which open connection carries
which unacknowledged delivery, and does its store work for all streams at once:

- A commit hands over the rows it queued (`notify(..., deliveries)`); those for
  institutions connected here go out without being read back. Recipients named without
  rows (the clock sweep's), new connections and closed ones are read from the outbox, all
  of them in one query.
- Before anything goes out, one transaction checks the keys that opened the receiving
  streams (a stream whose key was revoked or rotated out ends instead) and counts the
  attempts.
- One tick for the whole router, every ack_timeout / 2, asks the outbox in one query what
  is unacknowledged for the institutions connected here; only what was never sent on a
  live connection or waited longer than ack_timeout is read and sent again (to another
  connection of the institution when it has one). An idle hub costs one small query a tick.
- Acknowledgements arriving together from many streams are stored in one transaction.

The tick runs alongside a dispatch. Dispatches for different institutions may overlap
(`parallel`, one by default); never two for one institution, so each institution's
deliveries leave in sequence order.

The servicer at the end writes each connection's queue to its stream, with the latest log
checkpoint (docs/witness.md). The module is over 600 lines because the router and the
servicer share each Connection and its closing rules (`_CLOSE`, `hung_up`, `error`), which
read best side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import grpc

from hub.api.decoding import Undecodable
from hub.api.errors import draining_status
from hub.api.runner import Runner
from hub.domain.errors import DomainError
from hub.observability import logs
from hub.service.commands import delivery as service
from hub.service.pipeline import Hub
from hub.service.ports import PendingDelivery, StoreUnavailable
from stophub.v1 import delivery_pb2, delivery_pb2_grpc, envelope_pb2

log = logging.getLogger(__name__)

_CLOSE = object()
# How long a stream whose client stopped writing waits for gRPC's cancellation of the call:
# measured on a loaded 2-core machine, it came 0.02-0.12 ms after the end of the client's side.
HANGUP_GRACE = 0.1
EOF = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs
T = TypeVar("T")


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
    # The client ended its side of the stream (it hung up, or only stopped writing).
    hung_up: bool = False
    # The log checkpoint last sent on this connection, and when (time.monotonic()).
    checkpoint_sent: bytes | None = None
    checkpoint_at: float = 0.0


@dataclass
class _InFlight:
    connection: Connection
    sent_at: float
    # Case time of the commit that queued it (the hub signs it in that transaction), for
    # the delivery lag metric.
    committed_at: datetime | None = None


class DeliveryMetrics(Protocol):
    """What the router reports to hub.observability.metrics."""

    def streams_connected(self, count: int) -> None: ...

    def delivery_acknowledged(self, lag_seconds: float) -> None: ...


class InstitutionGroup:
    """One institution's open connections here and what is in flight to it."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.connections: list[Connection] = []
        self.in_flight: dict[int, _InFlight] = {}
        # Rows commits handed over, not sent yet.
        self.pushed: dict[int, PendingDelivery] = {}
        # The outbox must be read before anything else goes out to this institution.
        self.reload = True
        # The last read stopped at the batch size: more waits behind what is in flight, so
        # rows commits hand over are left for a later read instead of overtaking it.
        self.backlog = False

    def live(self) -> list[Connection]:
        return [c for c in self.connections if c.error is None]

    def settled(self, sequence: int, live: list[Connection], now: float, timeout: float) -> bool:
        """In flight on a live connection, and not for longer than the ack timeout."""
        flight = self.in_flight.get(sequence)
        return flight is not None and flight.connection in live and now - flight.sent_at < timeout

    def forget(self, sequence: int) -> None:
        flight = self.in_flight.pop(sequence, None)
        if flight is not None:
            flight.connection.in_flight -= 1


@dataclass
class _PendingAck:
    connection: Connection
    ack: service.Ack
    result: asyncio.Future[list[int] | DomainError]


class DeliveryRouter:
    """Implements the Notifier port: commits in worker threads hand their rows over here."""

    def __init__(
        self,
        runner: Runner,
        *,
        ack_timeout: float = 5.0,
        batch: int = 500,
        ack_batch: int = 500,
        parallel: int = 1,
    ) -> None:
        self.hub: Hub = runner.hub
        self.ack_timeout = ack_timeout
        self.batch = batch
        self.ack_batch = ack_batch
        # Dispatches under way at once. One by default: rows that arrive during a dispatch
        # then go out together in the next one, one transaction for all of them. Measured
        # on a 2-core hub (bench/delivery.py), two overlapping dispatches made more, smaller
        # transactions and more threads contending for the GIL, and were slower.
        self.parallel = parallel
        # Institutions per dispatch: a broadcast's thousand go in one (one transaction).
        self.per_dispatch = 5_000
        self.groups: dict[str, InstitutionGroup] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        # The router's own threads (dispatches, the tick, acknowledgements): its transactions
        # do not wait behind requests in the server's pool.
        self.executor = ThreadPoolExecutor(max_workers=parallel + 2, thread_name_prefix="delivery")
        self._ids = itertools.count(1)
        # Institutions with something to do, and those a dispatch is working on.
        self._work: set[str] = set()
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # After a failure, nothing new starts before this (time.monotonic()).
        self._calm = 0.0
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._acks: list[_PendingAck] = []
        self._ack_task: asyncio.Task[None] | None = None
        self.metrics: DeliveryMetrics | None = None
        self._open = 0
        # Set when the hub shuts down: its streams end as "reconnect elsewhere now".
        self.draining = False
        # Per institution whose streams here take a delivery at once, the keys that opened
        # them: read by commits on worker threads (stream_keys), so replaced whole, never
        # changed in place.
        self._live_keys: dict[str, frozenset[str]] = {}

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, self.hub, *args)

    # ---- what wakes the router ----------------------------------------------------------------

    def notify(self, recipients: Iterable[str], deliveries: Sequence[PendingDelivery] = ()) -> None:
        if self.loop is None or self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self._committed, list(recipients), list(deliveries))

    def _committed(self, recipients: list[str], deliveries: list[PendingDelivery]) -> None:
        carried = set()
        for d in deliveries:
            carried.add(d.recipient)
            group = self.groups.get(d.recipient)
            # No connection here: the row waits in the outbox for one (or another replica's).
            if group is not None and not group.backlog:
                group.pushed[d.sequence] = d
                self._work.add(d.recipient)
        for code in recipients:
            group = self.groups.get(code)
            if group is not None and code not in carried:
                group.reload = True
                self._work.add(code)
        if self._work:
            self._kick.set()

    def wake(self, institutions: Iterable[str] | None) -> None:
        """On the loop: another replica committed deliveries for these institutions (None:
        for anyone); those connected here read their outbox (hub.store.wakeups)."""
        self._committed(list(self.groups if institutions is None else institutions), [])

    def stream_keys(self, recipient: str) -> frozenset[str] | None:
        """LiveStreams: called from a commit's thread."""
        return self._live_keys.get(recipient)

    def _publish(self, group: InstitutionGroup) -> None:
        keys = frozenset(c.key_id for c in group.live())
        if keys and not group.backlog and self.groups.get(group.code) is group:
            self._live_keys[group.code] = keys
        else:
            self._live_keys.pop(group.code, None)

    def attach(self, institution: str, name: str, key_id: str = "") -> Connection:
        conn = Connection(institution, name, next(self._ids), key_id=key_id)
        group = self.groups.get(institution)
        if group is None:
            group = self.groups[institution] = InstitutionGroup(institution)
        group.connections.append(conn)
        self._opened(1)
        # A new connection gets everything unacknowledged that is not in flight elsewhere.
        self._reload(group)
        self._publish(group)
        if self._task is None or self._task.done():
            # A context of its own: the router's lines are about every stream, not the one
            # whose call happened to start it (hub.observability.logs).
            self._task = asyncio.create_task(
                self._run(), name="deliveries", context=contextvars.Context()
            )
        log.info("%s connected stream %s (%d open)", institution, name, len(group.connections))
        return conn

    def detach(self, conn: Connection) -> None:
        group = self.groups.get(conn.institution)
        if group is None or conn not in group.connections:
            return
        group.connections.remove(conn)
        self._opened(-1)
        if not group.connections:
            del self.groups[conn.institution]
        self._publish(group)
        if group.connections and any(f.connection is conn for f in group.in_flight.values()):
            self._reload(group)  # its unacknowledged deliveries move to the other connection
        log.info("%s stream %s closed", conn.institution, conn.name)

    def _opened(self, change: int) -> None:
        self._open = max(0, self._open + change)
        if self.metrics is not None:
            self.metrics.streams_connected(self._open)

    def acked(self, conn: Connection, sequences: Iterable[int]) -> None:
        group = self.groups.get(conn.institution)
        if group is None:
            return
        now = self.hub.clock.now() if self.metrics is not None else None
        for seq in sequences:
            flight = group.in_flight.get(seq)
            if now is not None and flight is not None and flight.committed_at is not None:
                assert self.metrics is not None
                self.metrics.delivery_acknowledged((now - flight.committed_at).total_seconds())
            group.forget(seq)
        if group.backlog:
            self._reload(group)  # room in the window for what waits behind it

    def _reload(self, group: InstitutionGroup) -> None:
        group.reload = True
        self._work.add(group.code)
        self._kick.set()

    def connections(self) -> dict[str, int]:
        return {code: len(g.connections) for code, g in self.groups.items()}

    # ---- the router's task ---------------------------------------------------------------

    async def _run(self) -> None:
        """Start a dispatch for institutions with work (at most `parallel` at once, never two
        for one institution, so each institution's deliveries leave in order) and the tick;
        each, when it ends, kicks this loop again."""
        tick = self.ack_timeout / 2
        next_tick = time.monotonic() + tick
        running: set[asyncio.Task[None]] = set()
        ticking: asyncio.Task[None] | None = None
        while True:
            now = time.monotonic()
            wake: float | None
            if now < self._calm:
                wake = self._calm
            elif self._work - self._busy and len(running) < self.parallel:
                wake = now
            else:
                wake = next_tick if self.groups else None
            if wake is None or wake > now:
                with contextlib.suppress(TimeoutError):
                    timeout = None if wake is None else wake - now
                    await asyncio.wait_for(self._kick.wait(), timeout)
            self._kick.clear()
            now = time.monotonic()
            if now < self._calm:
                continue
            if now >= next_tick:
                next_tick = now + tick
                # A tick still under way (a slow database) makes this one unnecessary.
                if self.groups and (ticking is None or ticking.done()):
                    ticking = self._spawn(self._tick(), running, counted=False)
            ready = self._work - self._busy
            while ready and len(running) < self.parallel:
                # Institutions a dispatch is working on wait in _work for the next one.
                taken = set(itertools.islice(ready, self.per_dispatch))
                ready -= taken
                self._work -= taken
                self._busy |= taken
                self._spawn(self._dispatch(taken), running)

    def _spawn(
        self, work: Any, running: set[asyncio.Task[None]], *, counted: bool = True
    ) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(self._guarded(work))
        if counted:
            running.add(task)
        self._tasks.add(task)

        def ended(done: asyncio.Task[None]) -> None:
            running.discard(done)
            self._tasks.discard(done)
            self._kick.set()

        task.add_done_callback(ended)
        return task

    async def _guarded(self, work: Any) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as err:
            if isinstance(err, StoreUnavailable):
                # The outbox keeps everything; a later round tries again.
                log.warning("delivery waits for the database: %s", err.detail)
            else:
                log.exception("delivery failed; retrying")
            self._calm = time.monotonic() + self.ack_timeout / 2

    async def _tick(self) -> None:
        """Find, in one query for every institution connected here, what was never sent on a
        live connection or was sent longer than ack_timeout ago, and have those
        institutions' outbox read again. Sends may happen meanwhile: only what went out
        before the query can be judged by its result."""
        asked = time.monotonic()
        unacked = await self._db(service.unacknowledged, list(self.groups), self.batch)
        now = time.monotonic()
        for code, sequences in unacked.items():
            group = self.groups.get(code)
            if group is None or code in self._busy:
                continue  # a dispatch has the group; the next tick looks again
            listed = set(sequences)
            cut = len(sequences) >= self.batch
            top = sequences[-1] if sequences else 0
            for seq, flight in list(group.in_flight.items()):
                if seq not in listed and (not cut or seq < top) and flight.sent_at < asked:
                    group.forget(seq)  # acknowledged (on another connection, or another hub)
            live = group.live()
            if live and any(
                seq not in group.pushed and not group.settled(seq, live, now, self.ack_timeout)
                for seq in sequences
            ):
                self._reload(group)

    async def _dispatch(self, codes: set[str]) -> None:
        try:
            await self._send(codes)
        except BaseException:
            for code in codes:
                if (group := self.groups.get(code)) is not None:
                    group.reload = True  # the rows taken for this round are in the outbox
                    self._work.add(code)
            raise
        finally:
            self._busy -= codes

    async def _send(self, codes: set[str]) -> None:
        pushed: dict[str, dict[int, PendingDelivery]] = {}
        reload: list[str] = []
        for code in codes:
            group = self.groups.get(code)
            if group is None:
                continue
            pushed[code], group.pushed = group.pushed, {}
            if group.reload:
                group.reload = False
                reload.append(code)
        loaded = await self._db(service.pending_many, reload, self.batch) if reload else {}

        now = time.monotonic()
        plan: dict[str, list[PendingDelivery]] = {}
        fresh: set[int] = set()
        for code, handed in pushed.items():
            group = self.groups.get(code)
            if group is None:
                continue
            if code in loaded:
                rows = loaded[code]
                seqs = {d.sequence for d in rows}
                group.backlog = cut = len(rows) >= self.batch
                top = rows[-1].sequence if rows else 0
                for seq in list(group.in_flight):
                    if seq not in seqs and (not cut or seq < top):
                        group.forget(seq)  # acknowledged meanwhile
                # Rows committed after the read's snapshot still go, in order after it.
                later = [
                    d
                    for d in handed.values()
                    if d.sequence not in seqs and (not cut or d.sequence < top)
                ]
                candidates = sorted([*rows, *later], key=lambda d: d.sequence)
            else:
                candidates = sorted(handed.values(), key=lambda d: d.sequence)
            self._publish(group)
            live = group.live()
            todo = [
                d
                for d in candidates
                if not group.settled(d.sequence, live, now, self.ack_timeout)
                and (code in loaded or d.sequence not in group.in_flight)
            ]
            if todo and live:
                plan[code] = todo
                # Counted by the commit that queued it, and not sent since.
                fresh.update(
                    d.sequence
                    for d in todo
                    if (h := handed.get(d.sequence)) is not None
                    and h.counted
                    and d.sequence not in group.in_flight
                )
        if not plan:
            return

        counting = {
            code: uncounted
            for code, todo in plan.items()
            if (uncounted := [d.sequence for d in todo if d.sequence not in fresh])
        }
        # What its commit counted goes out now; an institution with anything else to count
        # waits for that transaction, its deliveries staying in sequence order.
        self._put({c: todo for c, todo in plan.items() if c not in counting}, None, fresh)
        if not counting:
            return
        streams = {c: {n.key_id for n in self.groups[c].live() if n.key_id} for c in counting}
        prepared = await self._db(service.prepare_sends, streams, counting)
        self._put({code: plan[code] for code in counting}, prepared, fresh)

    def _put(
        self,
        plan: dict[str, list[PendingDelivery]],
        prepared: service.Prepared | None,
        fresh: set[int],
    ) -> None:
        """Queue `plan` on the institutions' live connections, the least loaded first (a
        redelivery to another connection than the one it went out on); `prepared` ends the
        streams whose keys can no longer sign and has the attempts of what is not `fresh`."""
        now = time.monotonic()
        for code, todo in plan.items():
            group = self.groups.get(code)
            if group is None:
                continue
            ended = prepared.ended.get(code, {}) if prepared is not None else {}
            for conn in group.live():
                if conn.key_id in ended:
                    log.warning("%s stream %s closed: %s", code, conn.name, ended[conn.key_id])
                    conn.error = ended[conn.key_id]
                    conn.queue.put_nowait(_CLOSE)
            self._publish(group)
            live = group.live()
            if not live:
                continue
            for d in todo:
                attempt = 1 if d.sequence in fresh else None
                if attempt is None and prepared is not None:
                    attempt = prepared.attempts.get(d.sequence)
                if attempt is None:
                    continue  # acknowledged meanwhile
                flight = group.in_flight.pop(d.sequence, None)
                if flight is not None:
                    flight.connection.in_flight -= 1
                    others = [c for c in live if c is not flight.connection]
                    target = min(others or live, key=lambda c: c.in_flight)
                else:
                    target = min(live, key=lambda c: c.in_flight)
                target.in_flight += 1
                envelope = envelope_pb2.Envelope.FromString(d.envelope)
                committed_at = (
                    envelope.create_time.ToDatetime(tzinfo=UTC)
                    if self.metrics is not None and envelope.HasField("create_time")
                    else None
                )
                group.in_flight[d.sequence] = _InFlight(target, now, committed_at)
                target.queue.put_nowait(
                    delivery_pb2.StreamDeliveriesResponse(
                        sequence=d.sequence, envelope=envelope, attempt=attempt
                    )
                )

    # ---- acknowledgements ---------------------------------------------------------------------

    async def acknowledge(
        self, conn: Connection, envelope: envelope_pb2.Envelope, peer: str | None
    ) -> list[int] | DomainError:
        """Store one acknowledgement with the others that arrive meanwhile; the sequences it
        acknowledged, or the refusal (StoreUnavailable: not stored, nothing refused)."""
        result: asyncio.Future[list[int] | DomainError] = asyncio.get_running_loop().create_future()
        self._acks.append(_PendingAck(conn, service.Ack(conn.institution, envelope, peer), result))
        if self._ack_task is None or self._ack_task.done():
            self._ack_task = asyncio.create_task(
                self._store_acks(), name="acknowledgements", context=contextvars.Context()
            )
        return await result

    async def _store_acks(self) -> None:
        while self._acks:
            await asyncio.sleep(0)  # let the streams whose acks arrived in this turn join in
            batch, self._acks = self._acks[: self.ack_batch], self._acks[self.ack_batch :]
            try:
                results = await self._db(service.acknowledge_many, [p.ack for p in batch])
            except Exception as err:
                for p in batch:
                    if not p.result.done():
                        p.result.set_exception(err)
                continue
            for p, result in zip(batch, results, strict=True):
                if isinstance(result, list):
                    self.acked(p.connection, result)
                if not p.result.done():
                    p.result.set_result(result)

    async def drain(self) -> None:
        """Close, ending every stream with UNAVAILABLE HUB_DRAINING (docs/failover.md)."""
        self.draining = True
        await self.close()

    async def close(self) -> None:
        for task in (self._task, self._ack_task, *self._tasks):
            if task is not None:
                task.cancel()
        for group in list(self.groups.values()):
            for conn in group.connections:
                conn.queue.put_nowait(_CLOSE)
        self.groups.clear()
        self._live_keys.clear()
        self._opened(-self._open)
        # A transaction under way finishes on its thread; nothing new starts.
        self.executor.shutdown(wait=False, cancel_futures=True)


# At least this often (seconds) a connection carries the latest log checkpoint, idle or not.
CHECKPOINT_EVERY = 120.0


class DeliveryServicer(delivery_pb2_grpc.DeliveryServiceServicer):
    def __init__(
        self,
        runner: Runner,
        router: DeliveryRouter,
        *,
        hello_timeout: float = 30.0,
        checkpoint_every: float = CHECKPOINT_EVERY,
    ):
        self.r = runner
        self.router = router
        self.hello_timeout = hello_timeout
        self.checkpoint_every = checkpoint_every

    async def _with_checkpoint(
        self, conn: Connection, item: delivery_pb2.StreamDeliveriesResponse | None
    ) -> delivery_pb2.StreamDeliveriesResponse | None:
        """`item` (a delivery) carrying the latest log checkpoint when this connection has not
        had it yet; with no item, a message of sequence 0 carrying it (None before the hub
        signed any). Members witness the log with it (docs/witness.md)."""
        current = await self.r.log_checkpoint(wait=item is None)
        due = time.monotonic() - conn.checkpoint_at >= self.checkpoint_every
        if item is not None and (current is None or (current == conn.checkpoint_sent and not due)):
            return item
        conn.checkpoint_at = time.monotonic()
        if current is None:
            return item
        conn.checkpoint_sent = current
        out = item if item is not None else delivery_pb2.StreamDeliveriesResponse()
        out.log_checkpoint.ParseFromString(current)
        return out

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
        try:
            # The connection's certificate cannot change during the stream: read it once.
            peer = await self.r.peer(context, first.envelope)
            code, name = await self.r.call(service.open_stream, self.r.hub, first.envelope, peer)
        except DomainError as err:
            await self.r.abort(context, err, first.envelope)
            return
        # Log lines about this stream (its acknowledgements' too) name the institution.
        logs.enter(institution=code, message_id=first.envelope.message_id)
        # Initial metadata tells the client its subscription was accepted.
        await context.send_initial_metadata((("stophub-subscribed", code),))
        conn = self.router.attach(code, name, first.envelope.key_id)
        reader = asyncio.create_task(self._read_acks(conn, context, peer))
        getter: asyncio.Future[Any] | None = None
        try:
            # The latest checkpoint first, before any delivery.
            opening = await self._with_checkpoint(conn, None)
            if opening is not None:
                await context.write(opening)
            while True:
                # One pending get across the waits: a get cancelled by a timeout could lose
                # the item it was handed.
                if getter is None:
                    getter = asyncio.ensure_future(conn.queue.get())
                left = conn.checkpoint_at + self.checkpoint_every - time.monotonic()
                done, _ = await asyncio.wait((getter,), timeout=max(left, 0.0))
                if not done:
                    # Idle for checkpoint_every: the checkpoint goes out on its own.
                    beat = await self._with_checkpoint(conn, None)
                    if beat is not None:
                        await context.write(beat)
                    continue
                item = getter.result()
                getter = None
                if item is _CLOSE:
                    if conn.error is not None:
                        await self.r.abort(context, conn.error, conn.error_envelope)
                    elif self.router.draining:
                        await context.abort(*draining_status())
                    elif conn.hung_up:
                        # A client that cancels is first seen as the end of what it writes;
                        # gRPC cancels this handler a moment later. Returning at once would
                        # end the call as OK and count a hang-up as a success; a client that
                        # only stopped writing sees its stream end after this pause. Its
                        # deliveries go to its other connections meanwhile.
                        self.router.detach(conn)
                        await asyncio.sleep(HANGUP_GRACE)
                    return
                await context.write(await self._with_checkpoint(conn, item))
        finally:
            if getter is not None:
                getter.cancel()
            reader.cancel()
            self.router.detach(conn)

    async def _read_acks(self, conn: Connection, context: Any, peer: str | None) -> None:
        try:
            while True:
                request = await context.read()
                if request is EOF:
                    conn.hung_up = True
                    break
                if isinstance(request, Undecodable):
                    conn.error = request.error
                    break
                result = await self.router.acknowledge(conn, request.envelope, peer)
                if isinstance(result, StoreUnavailable):
                    # Not stored, not refused: the delivery comes again after the ack timeout
                    # and the client acknowledges it again, so the stream stays up.
                    log.warning("ack from %s not stored: %s", conn.institution, result.detail)
                elif isinstance(result, DomainError):
                    conn.error, conn.error_envelope = result, request.envelope
                    break
        except asyncio.CancelledError:
            raise
        except Exception:
            log.debug("stream of %s ended while reading", conn.institution, exc_info=True)
        conn.queue.put_nowait(_CLOSE)
