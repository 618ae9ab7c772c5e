"""Live (issue 20 item 6): a member's console holds its delivery stream and pushes what it
hears to open browsers. A new order appears on the console's event stream within a second,
stored in the console's own database before the hub has its acknowledgement; a breach raises an
event with the alarm; the stream refuses anyone without a session."""

from __future__ import annotations

import json
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from adapters.console.models import JournalEntry, StoredDelivery
from adapters.sdk import Delivery
from hub.crypto import fields
from hub.store.tables import deliveries
from stophub.v1 import order_pb2
from tests.console_support import Browserless, ConsoleNetwork, console_network
from tests.e2e.wire_helpers import MULE, report

# One worker runs the whole module: one hub and console for the module.
pytestmark = pytest.mark.xdist_group("console_live")


@dataclass
class Heard:
    kind: str
    data: dict[str, Any]
    at: float  # time.monotonic() when the line arrived


class EventStream:
    """A browser's EventSource, by hand: one streaming GET of /events read in a thread."""

    def __init__(self, browser: Browserless) -> None:
        self.events: queue.Queue[Heard] = queue.Queue()
        self.connected = threading.Event()
        self.client = httpx.Client(
            base_url=browser.console.url, cookies=browser.http.cookies, timeout=None
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        assert self.connected.wait(10), "the event stream did not open"

    def _read(self) -> None:
        kind = ""
        try:
            with self.client.stream("GET", "/events") as answer:
                assert answer.status_code == 200
                for line in answer.iter_lines():
                    if line.startswith("retry:"):
                        self.connected.set()
                    elif line.startswith("event:"):
                        kind = line.removeprefix("event:").strip()
                    elif line.startswith("data:"):
                        data = json.loads(line.removeprefix("data:"))
                        self.events.put(Heard(kind, data, time.monotonic()))
        except (httpx.HTTPError, RuntimeError):
            return

    def next(self, want: Any, timeout: float = 10) -> Heard:
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            try:
                heard = self.events.get(timeout=left)
            except queue.Empty:
                break
            if want(heard):
                return heard
        raise AssertionError("no such event on the stream")

    def close(self) -> None:
        self.client.close()


def hub_acked_at(net: ConsoleNetwork, sequence: int) -> Any:
    assert net.store is not None
    with net.store.read_engine.connect() as conn:
        return conn.execute(
            select(deliveries.c.acked_at).where(deliveries.c.sequence == sequence)
        ).scalar_one()


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ConsoleNetwork, Any]]:
    with console_network(tmp_path_factory.mktemp("live"), ["BANKB"]) as net:
        # The harness's hub seals under its own keyring; tests/conftest.py puts the session's
        # back after each test.
        yield net, fields.configured()


@pytest.fixture
def net(network: tuple[ConsoleNetwork, Any]) -> ConsoleNetwork:
    fields.configure(network[1])
    return network[0]


@pytest.fixture(scope="module")
def stored_while_unacked(network: tuple[ConsoleNetwork, Any]) -> dict[int, Any]:
    """The hub's acked_at of each delivery at the moment BANKB's console stores it."""
    net = network[0]
    link = net.consoles["BANKB"].desk.link
    seen: dict[int, Any] = {}
    store = link.store

    def spying(delivery: Delivery) -> None:
        seen[delivery.sequence] = hub_acked_at(net, delivery.sequence)
        store(delivery)

    link.store = spying
    return seen


def stop_of(case_id: str, net: ConsoleNetwork) -> order_pb2.OrderInstruction:
    instruction = order_pb2.OrderInstruction(case_id=case_id)
    instruction.stop.account.CopyFrom(MULE)
    instruction.stop.amount_fen = 1_000_000
    fact = instruction.stop.transactions.add(amount_fen=1_000_000)
    fact.transaction_time.FromDatetime(net.clock.now() - timedelta(minutes=10))
    return instruction


def streaming(net: ConsoleNetwork) -> None:
    desk = net.consoles["BANKB"].desk
    for _ in range(200):
        if desk.link.state.streaming or (
            net.server is not None and net.server.router.connections().get("BANKB", 0)
        ):
            return
        time.sleep(0.05)
    raise AssertionError("BANKB's console holds no delivery stream")


def stored_as(desk: Any, kind: str) -> Callable[[Heard], bool]:
    """A delivery event whose delivery the console stored as a notice of `kind`."""

    def matches(h: Heard) -> bool:
        if h.kind != "delivery" or not h.data.get("sequence"):
            return False
        with desk.db() as s:
            row = s.get(StoredDelivery, h.data["sequence"])
        return row is not None and row.kind == kind

    return matches


def test_the_event_stream_refuses_without_a_session(net: ConsoleNetwork) -> None:
    url = net.consoles["BANKB"].url
    assert httpx.get(f"{url}/events").status_code == 401
    forged = {"stophub_console_bankb": "forged"}
    assert httpx.get(f"{url}/events", cookies=forged).status_code == 401


def test_a_new_order_reaches_the_open_console_within_a_second_stored_before_acked(
    net: ConsoleNetwork, stored_while_unacked: dict[int, Any]
) -> None:
    bank, centre = net.client("BANKA"), net.client("CENTRE")
    case = net.run(bank.create_report(report(net.clock.now())))
    net.run(bank.verify_report(case.case_id))
    streaming(net)
    browser = Browserless(net.consoles["BANKB"])
    assert browser.login("watch").status_code == 303
    stream = EventStream(browser)
    try:
        sent = time.monotonic()
        order = net.run(centre.issue_order(stop_of(case.case_id, net)))
        answered = time.monotonic()
        heard = stream.next(lambda h: h.kind == "delivery" and h.data["case_id"] == case.case_id)
    finally:
        stream.close()
    # From before the centre's call (so before the hub's commit) to the browser: under 1 s.
    assert heard.at - sent < 1.0, (heard.at - sent, answered - sent)
    assert heard.data["alarm"] is True
    sequence = heard.data["sequence"]
    with net.consoles["BANKB"].desk.db() as s:
        row = s.get(StoredDelivery, sequence)
        assert row is not None
        assert (row.kind, row.order_id, row.case_id) == (
            "NOTICE_KIND_ORDER",
            order.order_id,
            case.case_id,
        )
    # Stored while the hub still waited for the acknowledgement; then acknowledged.
    assert sequence in stored_while_unacked and stored_while_unacked[sequence] is None
    for _ in range(100):
        if hub_acked_at(net, sequence) is not None:
            break
        time.sleep(0.02)
    assert hub_acked_at(net, sequence) is not None


def test_a_breach_raises_an_alarm_on_the_open_console(net: ConsoleNetwork) -> None:
    bank, centre = net.client("BANKA"), net.client("CENTRE")
    case = net.run(bank.create_report(report(net.clock.now())))
    net.run(bank.verify_report(case.case_id))
    net.run(centre.issue_order(stop_of(case.case_id, net)))
    streaming(net)
    browser = Browserless(net.consoles["BANKB"])
    assert browser.login("duty").status_code == 303
    stream = EventStream(browser)
    desk = net.consoles["BANKB"].desk
    try:
        # BANKB does not answer the stop: past its deadline, the hub sends a breach notice.
        net.advance(timedelta(hours=3))

        heard = stream.next(stored_as(desk, "NOTICE_KIND_CLOCK_BREACH"), timeout=15)
    finally:
        stream.close()
    assert heard.data["alarm"] is True
    assert heard.data["url"].startswith("/cases/")


def test_a_lapsed_stop_raises_an_alarm_and_the_inbox_says_to_release_the_hold(
    net: ConsoleNetwork,
) -> None:
    bank, centre = net.client("BANKA"), net.client("CENTRE")
    case = net.run(bank.create_report(report(net.clock.now())))
    net.run(bank.verify_report(case.case_id))
    order = net.run(centre.issue_order(stop_of(case.case_id, net)))
    result = order_pb2.ExecutionResult(
        order_id=order.order_id,
        status=order_pb2.EXECUTION_STATUS_EXECUTED,
        amount_held_fen=1_000_000,
    )
    net.run(net.client("BANKB").answer_order(result))
    streaming(net)
    browser = Browserless(net.consoles["BANKB"])
    assert browser.login("duty").status_code == 303
    stream = EventStream(browser)
    desk = net.consoles["BANKB"].desk
    try:
        # Nobody froze or released it: 48 hours on the stop lapses, and the hold is BANKB's
        # to release.
        net.advance(timedelta(hours=49))

        heard = stream.next(stored_as(desk, "NOTICE_KIND_ORDER_EXPIRED"), timeout=15)
    finally:
        stream.close()
    assert (heard.data["alarm"], heard.data["url"]) == (True, "/inbox")
    assert "the hold must be released" in heard.data["title"]
    # 49 hours idle ended the session: the officer signs in again and opens the inbox.
    assert browser.login("duty").status_code == 303
    page = browser.get("/inbox")
    assert page.status_code == 200
    row = re.search(rf'<tr[^>]*data-order="{order.order_id}".*?</tr>', page.text, re.S)
    assert row is not None, page.text
    assert "expired" in row.group(0) and "Lapsed: release the hold" in row.group(0)

    # The officer releases it in the bank's systems and says so: the journal keeps who and
    # when, and the row says it from then on. A viewer may not; an order still holding is not.
    released = browser.post(f"/orders/{order.order_id}/released", {"case": case.case_id})
    assert released.status_code == 303 and released.headers["location"] == "/inbox"
    row = re.search(
        rf'<tr[^>]*data-order="{order.order_id}".*?</tr>', browser.get("/inbox").text, re.S
    )
    assert row is not None and "Released by duty" in row.group(0)
    assert "Lapsed: release the hold" not in row.group(0)
    with desk.db() as s:
        [said] = s.scalars(select(JournalEntry).where(JournalEntry.action == "hold_released")).all()
    assert (said.person, said.detail, said.case_id) == ("duty", order.order_id, case.case_id)
    again = browser.post(f"/orders/{order.order_id}/released", {"case": case.case_id})
    assert again.status_code == 303  # said once: the journal keeps the first
    with desk.db() as s:
        assert (
            len(s.scalars(select(JournalEntry).where(JournalEntry.action == "hold_released")).all())
            == 1
        )

    viewer = Browserless(net.consoles["BANKB"])
    assert viewer.login("watch").status_code == 303
    assert (
        viewer.post(f"/orders/{order.order_id}/released", {"case": case.case_id}).status_code == 403
    )
    viewer.close()
    holding = net.run(centre.issue_order(stop_of(case.case_id, net)))
    refused = browser.post(f"/orders/{holding.order_id}/released", {"case": case.case_id})
    assert refused.status_code == 409 and "has not" in refused.text
