"""The console's one connection to the hub: the SDK client speaking as this institution, the
delivery stream held open (each delivery stored in the console's database before it is
acknowledged), and the link's state, which every page shows."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from adapters.console.db import ConsoleDb
from adapters.console.live import Broadcaster, Event
from adapters.console.models import StoredDelivery
from adapters.sdk import Delivery, HubClient, HubError, HubSignatureError
from adapters.sdk.client import Clock
from stophub.v1 import case_pb2, delivery_pb2, warning_pb2

log = logging.getLogger("stophub.console")
T = TypeVar("T")

# Notices a person must see at once: the browser sounds for them.
ALARMS = {
    delivery_pb2.NOTICE_KIND_ORDER,
    delivery_pb2.NOTICE_KIND_CLOCK_BREACH,
    delivery_pb2.NOTICE_KIND_CLOCK_ESCALATION,
    delivery_pb2.NOTICE_KIND_TRAIL_ESCALATION,
    delivery_pb2.NOTICE_KIND_REPORT_RECEIVED,
}


# Refusals that say the hub will take no message of this console (its clock, key or
# certificate), not that one request was wrong (docs/errors.md).
REFUSED_IDENTITY = frozenset(
    {
        "ENVELOPE_FROM_FUTURE",
        "ENVELOPE_EXPIRED",
        "UNKNOWN_KEY",
        "KEY_REVOKED",
        "KEY_RETIRED",
        "UNKNOWN_SENDER",
        "BAD_SIGNATURE",
        "CERTIFICATE_MISMATCH",
        "NO_CLIENT_CERTIFICATE",
    }
)


@dataclass(frozen=True)
class NextDeadline:
    """The most urgent open clock this institution can see: shown at the top of every page."""

    case_id: str
    clock: str
    responsible: str
    start: datetime | None
    deadline: datetime | None


@dataclass
class LinkState:
    ok: bool = False
    since: datetime | None = None
    problem: str = "not connected yet"
    streaming: bool = False


def _time(moment: Timestamp) -> datetime | None:
    if moment.seconds == 0 and moment.nanos == 0:
        return None
    return moment.ToDatetime(tzinfo=UTC)


OPEN = (case_pb2.CASE_STATE_REPORTED, case_pb2.CASE_STATE_VERIFIED)


async def _most_urgent(client: HubClient) -> tuple[list[case_pb2.Case], str]:
    return await client.list_cases_page(order_by=case_pb2.CASE_ORDER_DEADLINE, page_size=10)


class HubLink:
    def __init__(
        self,
        client: HubClient,
        db: ConsoleDb,
        broadcaster: Broadcaster,
        clock: Clock,
        *,
        stream: bool = True,
        health_every: float = 10.0,
    ) -> None:
        self.client = client
        self.db = db
        self.broadcaster = broadcaster
        self.clock = clock
        self.state = LinkState()
        self.next_deadline: NextDeadline | None = None
        self._refreshing: asyncio.Task[None] | None = None
        self._stream = stream
        self._health_every = health_every
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._health(), name="console-hub-health"))
        if self._stream:
            self._tasks.append(asyncio.create_task(self._deliveries(), name="console-deliveries"))

    async def stop(self) -> None:
        if self._refreshing is not None:
            self._tasks.append(self._refreshing)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.client.close()

    def _up(self) -> None:
        if not self.state.ok:
            self.state = LinkState(True, self.clock.now(), "", self.state.streaming)
            self.broadcaster.publish(Event("link", "connected"))

    def _down(self, problem: str) -> None:
        if self.state.ok or self.state.problem != problem:
            since = self.state.since if not self.state.ok and self.state.since else self.clock.now()
            self.state = LinkState(False, since, problem, False)
            self.broadcaster.publish(Event("link", problem))

    async def call(self, step: Callable[[HubClient], Awaitable[T]]) -> T:
        """One request to the hub; the link's state follows what happened to it."""
        try:
            result = await step(self.client)
        except HubError as err:
            if err.transient and not err.signed:
                self._down(f"the hub at {self.client.target} does not answer: {err.message}")
            elif err.reason in REFUSED_IDENTITY:
                # The hub answers but will take nothing from this console until this is fixed.
                self._down(f"the hub refuses every message of this console: {err}")
            else:
                self._up()
            raise
        self._up()
        return result

    async def _health(self) -> None:
        while True:
            with contextlib.suppress(HubError, HubSignatureError):
                await self.call(lambda c: c.get_institution(c.institution))
                await self.refresh_deadline()
            await asyncio.sleep(self._health_every)

    def _deadline_soon(self) -> None:
        """Refresh the most urgent line after a delivery, at most one refresh at a time: a
        burst of deliveries asks the hub once, not once each."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._refresh_quietly())

    async def _refresh_quietly(self) -> None:
        await asyncio.sleep(0.2)
        with contextlib.suppress(HubError, HubSignatureError):
            await self.refresh_deadline()

    async def refresh_deadline(self) -> None:
        """Ask the hub for the case with the earliest open deadline this institution sees."""
        # Open cases only: a closed case's clocks that still run (a stop validity, say) are
        # not work for the desk. One short page of the hub's deadline order over all cases.
        page, _token = await self.call(_most_urgent)
        heads = [c for c in page if c.state in OPEN and c.HasField("next_deadline")]
        if not heads:
            self.next_deadline = None
            return
        first = min(heads, key=lambda c: c.next_deadline.deadline_time.ToDatetime())
        d = first.next_deadline
        self.next_deadline = NextDeadline(
            first.case_id, d.clock, d.responsible, _time(d.start_time), _time(d.deadline_time)
        )

    async def _deliveries(self) -> None:
        backoff = 0.5
        while True:
            try:
                async with self.client.deliveries("console") as stream:
                    async for delivery in stream:
                        self.state.streaming = True
                        self._up()
                        self.store(delivery)
                        await stream.ack(delivery.sequence)
                        self.announce(delivery)
                        self._deadline_soon()
                        backoff = 0.5
            except asyncio.CancelledError:
                raise
            except HubSignatureError as err:
                self._down(f"a delivery from the hub did not verify: {err}; not acting on it")
            except HubError as err:
                self._down(f"the delivery stream stopped: {err}")
            except grpc.RpcError as err:  # pragma: no cover - the SDK wraps these
                self._down(f"the delivery stream stopped: {err}")
            self.state.streaming = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    def store(self, delivery: Delivery) -> None:
        """Kept before the acknowledgement: a console that dies between the two gets the
        delivery again and stores it once (its sequence is the key)."""
        notice = delivery.notice
        with self.db() as s:
            if s.get(StoredDelivery, delivery.sequence) is not None:
                return
            s.add(
                StoredDelivery(
                    sequence=delivery.sequence,
                    received_at=self.clock.now(),
                    kind=delivery_pb2.NoticeKind.Name(notice.kind),
                    case_id=notice.case_id,
                    order_id=notice.order.order_id if notice.HasField("order") else "",
                    summary=notice.summary,
                    envelope=delivery.envelope.SerializeToString(),
                )
            )

    def announce(self, delivery: Delivery) -> None:
        notice = delivery.notice
        url = f"/cases/{notice.case_id}" if notice.case_id else "/inbox"
        alarm = notice.kind in ALARMS
        if notice.kind == delivery_pb2.NOTICE_KIND_WARNING and notice.HasField("warning"):
            url = f"/warnings/{notice.warning.warning_id}"
            # A new warning is a customer to reach now; its later steps are only shown.
            alarm = notice.warning.state == warning_pb2.WARNING_STATE_SENT
        elif notice.HasField("lead") and notice.lead.name:
            url = f"/leads/{notice.lead.name}"
        elif (
            notice.kind == delivery_pb2.NOTICE_KIND_ORDER_EXPIRED
            and notice.order.addressed_to == self.client.institution
        ):
            # A stop or freeze of ours lapsed: someone must release the hold in the bank's
            # own systems now (the centres get the same notice, for their information).
            url, alarm = "/inbox", True
        self.broadcaster.publish(
            Event(
                "delivery",
                notice.summary or delivery_pb2.NoticeKind.Name(notice.kind),
                case_id=notice.case_id,
                url=url,
                alarm=alarm,
                sequence=delivery.sequence,
            )
        )
