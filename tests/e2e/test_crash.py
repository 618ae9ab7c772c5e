"""Crash safety: `stophub serve` killed with SIGKILL under load loses nothing it acknowledged.

Banks report and verify concurrently while the centre's standing auto-stop rule makes the hub
issue a stop order inside each verification's transaction; the hub is killed in the middle
of that load. Then, with the hub down, every request a client got an OK answer for is in the
database exactly once, with that answer, and every order is whole: its delivery, audit
entries, case event and clock committed together with it. Started again, the hub answers
every resend (same message id, same bytes) of an acknowledged request with the original
answer, and creates each unacknowledged one exactly once.

Runs on a SQLite file, and on PostgreSQL when STOPHUB_TEST_DATABASE_URL is set.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from hub.crypto.envelope import verify_envelope
from hub.crypto.keys import PrivateKey, save_private_key
from hub.store.tables import (
    audit_log,
    case_events,
    cases,
    clocks,
    deliveries,
    inbound_messages,
    orders,
    sla_log,
)
from hub.system.policy import DEFAULT_POLICY
from stophub.v1 import (
    case_pb2,
    case_pb2_grpc,
    delivery_pb2,
    envelope_pb2,
    order_pb2,
    order_pb2_grpc,
)
from tests.e2e.test_restart import Hub, read, register_members
from tests.e2e.wire_helpers import report, sign

WORKERS = 6  # concurrent banks' threads: several requests are in flight when the kill lands
ORDERS_BEFORE_KILL = 8
RULE = order_pb2.AutoStopRule(rule_id="R-CRASH", enabled=True, max_amount_fen=10_000_000)
REPORTERS = ("BANKA", "BANKB")  # each reports payments to the other's mule account


@dataclass
class Sent:
    """One request as sent, and the answer if the client got OK for it."""

    method: str
    envelope: envelope_pb2.Envelope
    answer: envelope_pb2.Envelope | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.envelope.sender, self.envelope.message_id


def call(channel: grpc.Channel, method: str, envelope: envelope_pb2.Envelope) -> Any:
    if method == "SetAutoStopRule":
        stub: Any = order_pb2_grpc.OrderServiceStub(channel)
        request: Any = order_pb2.SetAutoStopRuleRequest(envelope=envelope)
    else:
        stub = case_pb2_grpc.CaseServiceStub(channel)
        request = getattr(case_pb2, f"{method}Request")(envelope=envelope)
    return getattr(stub, method)(request, timeout=10).envelope


class Load:
    """Report-then-verify flows on WORKERS threads until told to stop."""

    def __init__(self, hub: Hub, keys: dict[str, PrivateKey]) -> None:
        self.hub, self.keys = hub, keys
        self.sent: list[Sent] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.channels: list[grpc.Channel] = []

    def acked(self, method: str) -> list[Sent]:
        with self.lock:
            return [s for s in self.sent if s.method == method and s.answer is not None]

    def _send(self, code: str, method: str, body: Any, channel: grpc.Channel) -> Sent:
        now = datetime.now(UTC)
        sent = Sent(method, sign(self.keys[code], code, body, now))
        with self.lock:
            self.sent.append(sent)
        # An error leaves it unacknowledged: the kill landed before the answer reached us.
        with contextlib.suppress(grpc.RpcError):
            sent.answer = call(channel, method, sent.envelope)
        return sent

    def _run(self, code: str, channel: grpc.Channel) -> None:
        other = REPORTERS[1 - REPORTERS.index(code)]
        while not self.stop.is_set():
            body = mule_report(code, other, datetime.now(UTC))
            reported = self._send(code, "CreateReport", body, channel)
            if reported.answer is None or self.stop.is_set():
                continue
            case_id = case_pb2.Case.FromString(reported.answer.body).case_id
            confirm = case_pb2.Verification(
                case_id=case_id, outcome=case_pb2.VERIFICATION_OUTCOME_CONFIRMED
            )
            self._send(code, "VerifyReport", confirm, channel)

    def start(self) -> None:
        for i in range(WORKERS):
            code = REPORTERS[i % 2]
            # Opened here, one after another: opening may issue the member's credentials.
            self.channels.append(self.hub.channel(code))
            self.threads.append(
                threading.Thread(target=self._run, args=(code, self.channels[-1]), daemon=True)
            )
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
            assert not thread.is_alive()
        for channel in self.channels:
            channel.close()


def mule_report(reporter: str, payee: str, now: datetime) -> case_pb2.Report:
    """A report by `reporter` of its customer's payments to a mule account at `payee`."""
    body = report(now)
    for tx in body.transactions:
        tx.payer.institution_code = reporter
        tx.payee.institution_code = payee
    return body


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def check_nothing_half_written(database_url: str) -> dict[str, Any]:
    """Every case and order in the database came with everything its transaction writes."""
    all_cases = read(database_url, cases)
    all_orders = read(database_url, orders)
    events = read(database_url, case_events)
    inbound = {(r.sender, r.message_id) for r in read(database_url, inbound_messages)}
    audit = Counter((r.kind, r.case_id, r.order_id) for r in read(database_url, audit_log))
    clock_rows = read(database_url, clocks)
    started = {r.clock_id for r in read(database_url, sla_log) if r.event == "started"}
    outbox: Counter[tuple[str, str, str]] = Counter()
    for row in read(database_url, deliveries):
        notice = delivery_pb2.Notice.FromString(envelope_pb2.Envelope.FromString(row.envelope).body)
        outbox[(row.recipient, row.kind, notice.order.order_id or notice.case_id)] += 1

    for case in all_cases:
        where = f"case {case.case_id}"
        assert (case.reporting_institution, case.report_message_id) in inbound, where
        assert audit[("received", case.case_id, None)] >= 1, where
        kinds = {c.kind for c in clock_rows if c.case_id == case.case_id}
        assert {"record", "verify"} <= kinds, where
        assert outbox[("CENTRE", "report_received", case.case_id)] == 1, where
        if case.state != "reported":
            # The verification committed with the case's new state: its request is answered.
            verified = [
                e for e in events if e.case_id == case.case_id and e.kind == "report.verified"
            ]
            assert len(verified) == 1, where
            assert (case.reporting_institution, verified[0].message_id) in inbound, where
    case_ids = {c.case_id for c in all_cases}
    for order in all_orders:
        where = f"order {order.order_id}"
        assert order.case_id in case_ids, where
        assert order.auto_stop_rule_id == RULE.rule_id, where
        # Issued by the rule inside the verification's transaction.
        assert any((sender, order.origin_message_id) in inbound for sender in REPORTERS), where
        assert outbox[(order.addressed_to, "order", order.order_id)] == 1, where
        assert audit[("sent", order.case_id, order.order_id)] == 1, where
        assert audit[("transition", order.case_id, order.order_id)] >= 1, where
        issued = [
            e
            for e in events
            if e.case_id == order.case_id
            and e.order_id == order.order_id
            and e.kind == "order.issued"
        ]
        assert len(issued) == 1, where
        stop_clocks = [c for c in clock_rows if c.order_id == order.order_id and c.kind == "stop"]
        assert len(stop_clocks) == 1, where
        assert stop_clocks[0].responsible == order.addressed_to, where
        assert stop_clocks[0].clock_id in started, where
    return {
        "cases": {c.report_message_id: c for c in all_cases},
        "orders": Counter(o.case_id for o in all_orders),
        "inbound": {
            (r.sender, r.message_id): bytes(r.response)
            for r in read(database_url, inbound_messages)
        },
    }


def test_sigkill_under_load_loses_no_acknowledged_request(
    tmp_path: Path, database_url: str
) -> None:
    hub_key = PrivateKey.generate()
    save_private_key(hub_key, tmp_path / "hub.key")
    keys = register_members(database_url)
    hub = Hub(tmp_path, database_url, DEFAULT_POLICY)
    hub.start()
    try:
        with hub.channel("CENTRE") as centre:
            call(centre, "SetAutoStopRule", sign(keys["CENTRE"], "CENTRE", RULE, datetime.now(UTC)))
        load = Load(hub, keys)
        load.start()
        try:
            wait_for(
                lambda: len(load.acked("VerifyReport")) >= ORDERS_BEFORE_KILL,
                30,
                f"no orders under load:\n{hub.output()}",
            )
        finally:
            # Mid-load: no worker starts another request, but each has one on the wire.
            load.stop.set()
            hub.kill()
            load.join()
    finally:
        if hub.proc is not None and hub.proc.poll() is None:
            hub.kill()

    sent = list(load.sent)
    unacked = [s for s in sent if s.answer is None]
    assert unacked, "the kill landed between requests: nothing was in flight"
    for s in sent:
        if s.answer is not None:
            assert verify_envelope(s.answer, hub_key.public_key)

    # With the hub down: what was acknowledged is there exactly once, with its answer.
    state = check_nothing_half_written(database_url)
    for s in sent:
        if s.answer is None:
            continue
        assert state["inbound"][s.key] == s.answer.SerializeToString(), s.key
        answered = case_pb2.Case.FromString(s.answer.body)
        if s.method == "CreateReport":
            assert state["cases"][s.envelope.message_id].case_id == answered.case_id
        else:
            assert answered.state == case_pb2.CASE_STATE_VERIFIED
            assert len(answered.orders) == 1
            assert state["orders"][answered.case_id] == 1
    # Each report was stored once at most (its message id is unique to it).
    reports_sent = {s.envelope.message_id for s in sent if s.method == "CreateReport"}
    assert set(state["cases"]) <= reports_sent
    assert len(state["cases"]) == len(read(database_url, cases))

    # Started again: every request once more, same id and bytes, acknowledged or not.
    hub.start()
    channels = {code: hub.channel(code) for code in REPORTERS}
    try:
        for s in sent:
            answer = call(channels[s.envelope.sender], s.method, s.envelope)
            assert verify_envelope(answer, hub_key.public_key)
            if s.answer is not None:
                assert answer.SerializeToString() == s.answer.SerializeToString(), s.key
            s.answer = answer
        for s in sent:  # and again: every answer is now the stored one
            again = call(channels[s.envelope.sender], s.method, s.envelope)
            assert s.answer is not None
            assert again.SerializeToString() == s.answer.SerializeToString(), s.key
    finally:
        for channel in channels.values():
            channel.close()
        hub.kill()

    state = check_nothing_half_written(database_url)
    assert set(state["cases"]) == reports_sent, "each report created exactly once"
    assert len(read(database_url, cases)) == len(reports_sent)
    for s in sent:
        assert state["inbound"][s.key] == s.answer.SerializeToString()  # type: ignore[union-attr]
    verified = {
        case_pb2.Case.FromString(s.answer.body).case_id  # type: ignore[union-attr]
        for s in sent
        if s.method == "VerifyReport"
    }
    assert dict(state["orders"]) == {case_id: 1 for case_id in verified}
    assert len(state["inbound"]) == len(sent) + 1  # and the rule
