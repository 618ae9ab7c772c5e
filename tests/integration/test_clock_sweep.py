"""Clock sweeps by several hubs on one database: every step fires once, on SQLite and PostgreSQL.

Two Hub instances, each over its own SqlStore (its own engine and connections) on the same
database, share one ManualClock and sweep from two threads while the clock moves. On PostgreSQL
`FOR UPDATE SKIP LOCKED` lets both claim and fire clocks at the same time; on SQLite the write
lock (BEGIN IMMEDIATE) makes them take turns. Either way every (clock, step) is in the SLA log
once and every recipient gets one notice per step.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

import hub.store.sql as sql
from hub.bootstrap import build_hub, ensure_hub_registered
from hub.crypto.envelope import seal_message, verify_envelope
from hub.crypto.keys import PrivateKey
from hub.domain.institutions import InstitutionKind
from hub.service.admin import Registry
from hub.service.commands.case import CREATE_REPORT, VERIFY_REPORT
from hub.service.pipeline import Hub
from hub.service.ports import PendingDelivery
from hub.store.sql import SqlStore
from hub.store.tables import clocks, deliveries, sla_log
from hub.system.clock import ManualClock
from hub.system.policy import load_policy
from stophub.v1 import account_pb2, case_pb2, delivery_pb2, envelope_pb2
from tests.support import add_members

from .support import dialect_of

MEMBERS = {
    "CENTRE": InstitutionKind.ANTI_FRAUD_CENTRE,
    "BANKA": InstitutionKind.BANK,
    "BANKB": InstitutionKind.BANK,
    "REG": InstitutionKind.REGULATOR,
}
ACCOUNTS = {
    "BANKA": account_pb2.AccountRef(
        institution_code="BANKA", account_number="6222010000000001", holder_name="Zhang San"
    ),
    "BANKB": account_pb2.AccountRef(
        institution_code="BANKB", account_number="6222020000000002", holder_name="Li Si"
    ),
}
STEPS = ("reminder", "breach", "regulator")
VERIFY_WINDOW = timedelta(minutes=5)  # the default policy's verify clock


class Quiet:
    def notify(self, recipients: Iterable[str], deliveries: Sequence[PendingDelivery] = ()) -> None:
        pass


@dataclass
class Pair:
    """Two hubs over two stores on one database, and the members that report to them."""

    a: Hub
    b: Hub
    stores: tuple[SqlStore, SqlStore]
    clock: ManualClock
    hub_key: PrivateKey
    keys: dict[str, PrivateKey] = field(default_factory=dict)

    def report(self, reporter: str) -> str:
        """Send a signed report through hub A; returns the case id."""
        payee = ACCOUNTS["BANKB" if reporter == "BANKA" else "BANKA"]
        now = self.clock.now()
        body = case_pb2.Report(
            victim=case_pb2.Victim(name="Zhang San", id_number="110101199001011234", phone="1"),
            fraud_type=case_pb2.FRAUD_TYPE_IMPERSONATING_OFFICIALS,
            description="caller posing as police asked for a 'safe account' transfer",
        )
        t = body.transactions.add(
            amount_fen=1_000_000,
            payer=ACCOUNTS[reporter],
            payee=payee,
            channel=case_pb2.PAYMENT_CHANNEL_MOBILE_BANKING,
            transaction_reference="TX-1",
        )
        t.transaction_time.FromDatetime(now - timedelta(minutes=20))
        answer = self.a.handle(CREATE_REPORT, self.envelope(reporter, body))
        return str(case_pb2.Case.FromString(answer.body).case_id)

    def verify(self, reporter: str, case_id: str) -> None:
        body = case_pb2.Verification(
            case_id=case_id, outcome=case_pb2.VERIFICATION_OUTCOME_CONFIRMED
        )
        self.b.handle(VERIFY_REPORT, self.envelope(reporter, body))

    def envelope(self, code: str, body: Any) -> envelope_pb2.Envelope:
        return seal_message(
            self.keys[code],
            sender=code,
            recipient="HUB",
            message_id=f"{code}-{uuid.uuid4().hex}",
            create_time=self.clock.now(),
            message=body,
        )

    def log(self) -> list[Any]:
        with self.stores[0].read_engine.connect() as conn:
            return list(conn.execute(select(sla_log).order_by(sla_log.c.id)))

    def clock_notices(self) -> list[tuple[str, str, str, delivery_pb2.Notice]]:
        """(clock id, step, recipient, notice) of every clock notice in the outbox, each
        checked against the hub's key."""
        out = []
        with self.stores[1].read_engine.connect() as conn:
            rows = conn.execute(select(deliveries.c.recipient, deliveries.c.envelope))
            for recipient, raw in rows:
                env = envelope_pb2.Envelope.FromString(raw)
                notice = delivery_pb2.Notice.FromString(env.body)
                if not notice.HasField("clock_step"):
                    continue
                assert verify_envelope(env, self.hub_key.public_key)
                assert env.recipient == recipient
                step = notice.clock_step
                out.append((step.clock.clock_id, step.step, recipient, notice))
        return out

    def clock_ids(self, kind: str) -> dict[str, str]:
        """Clock id -> case id of every clock of `kind`."""
        with self.stores[0].read_engine.connect() as conn:
            rows = conn.execute(
                select(clocks.c.clock_id, clocks.c.case_id).where(clocks.c.kind == kind)
            )
            return {clock_id: case_id for clock_id, case_id in rows}


@pytest.fixture
def pair(store: SqlStore, database_url: str, clock: ManualClock) -> Iterator[Pair]:
    policy = load_policy()
    hub_key = PrivateKey.generate()
    ensure_hub_registered(store, hub_key, clock)
    second = SqlStore(database_url)
    result = Pair(
        build_hub(store, hub_key, Quiet(), clock=clock, clock_policy=policy),
        build_hub(second, hub_key, Quiet(), clock=clock, clock_policy=policy),
        (store, second),
        clock,
        hub_key,
    )
    result.keys.update(add_members(Registry(store, clock), MEMBERS, supervisor=True))
    try:
        yield result
    finally:
        second.dispose()


def expected_recipients(step: str, reporter: str) -> set[str]:
    return {"reminder": {reporter}, "breach": {reporter, "CENTRE"}, "regulator": {"REG"}}[step]


def assert_each_step_once(pair: Pair, reporters: dict[str, str]) -> None:
    """Every verify clock fired reminder, breach and regulator once each, and each recipient
    got one notice per step; `reporters` maps case id -> reporting institution."""
    verify_clocks = pair.clock_ids("verify")
    assert set(verify_clocks.values()) == set(reporters)
    steps = Counter((r.clock_id, r.event) for r in pair.log() if r.event in STEPS)
    assert steps == Counter({(c, s): 1 for c in verify_clocks for s in STEPS})
    notices = Counter((c, s, to) for c, s, to, _ in pair.clock_notices())
    assert notices == Counter(
        {
            (c, s, to): 1
            for c, case_id in verify_clocks.items()
            for s in STEPS
            for to in expected_recipients(s, reporters[case_id])
        }
    )


def open_reports(pair: Pair, count: int, spacing: timedelta) -> dict[str, str]:
    """`count` reports, `spacing` of case time apart; case id -> reporter."""
    reporters = {}
    for i in range(count):
        reporter = "BANKA" if i % 3 else "BANKB"
        reporters[pair.report(reporter)] = reporter
        pair.clock.advance(spacing)
    return reporters


def test_two_hubs_sweeping_at_once_fire_every_step_once(
    request: pytest.FixtureRequest, pair: Pair
) -> None:
    count = 240
    # Reports 1 s apart: the reminders, breaches and escalations of one clock and another
    # fall due in the same sweeps, so one hub may fire a clock's reminder and the other its
    # breach a moment later.
    reporters = open_reports(pair, count, timedelta(seconds=1))
    end = pair.clock.now() + 2 * VERIFY_WINDOW + timedelta(seconds=5)
    for hub in (pair.a, pair.b):
        hub.sweeper.batch = 15  # many small claims, so the two hubs interleave
    fired = {"a": 0, "b": 0}
    sweeps = {"a": 0, "b": 0}
    errors: list[BaseException] = []
    done = threading.Event()
    start = threading.Barrier(3, timeout=30)

    def sweep_until_done(name: str, hub: Hub) -> None:
        try:
            start.wait()
            while not done.is_set():
                fired[name] += hub.sweep()
                sweeps[name] += 1
            fired[name] += hub.sweep()  # what fell due with the last move of the clock
            sweeps[name] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=sweep_until_done, args=("a", pair.a)),
        threading.Thread(target=sweep_until_done, args=("b", pair.b)),
    ]
    for t in threads:
        t.start()
    start.wait()
    # The clock moves on while both hubs sweep, as on a running system; each move waits
    # for a sweep by each hub that started after it.
    while pair.clock.now() < end:
        pair.clock.advance(timedelta(seconds=10))
        seen = dict(sweeps)
        deadline = time.monotonic() + 30
        while min(sweeps[n] - seen[n] for n in seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.002)
    done.set()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)

    assert fired["a"] + fired["b"] == count * len(STEPS), fired
    assert sweeps["a"] > 60 and sweeps["b"] > 60, sweeps
    assert_each_step_once(pair, reporters)
    if dialect_of(request) == "postgresql":
        # SKIP LOCKED: neither hub waited for the other's claim, both made progress.
        assert fired["a"] > 0 and fired["b"] > 0, fired
    # Nothing is left to fire, by either hub.
    assert pair.a.sweep() == 0 and pair.b.sweep() == 0


def test_a_hub_holding_its_claim_does_not_stop_the_other(
    request: pytest.FixtureRequest, pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hub A claims a batch and holds it open. On PostgreSQL hub B fires every other due
    clock meanwhile (SKIP LOCKED); on SQLite B waits for A's write lock. Once A lets go,
    each clock has fired its reminder exactly once."""
    count = 40
    first = pair.clock.now()
    reporters = open_reports(pair, count, timedelta(seconds=1))
    # Past every reminder (4 min after its report), before the first breach (5 min).
    pair.clock.set(first + timedelta(minutes=4, seconds=50))
    pair.a.sweeper.batch = 10
    claimed = threading.Event()
    release = threading.Event()
    held: list[str] = []
    original_due = sql.SqlClocks.due
    holder: list[threading.Thread] = []

    def due(self: sql.SqlClocks, now: datetime, limit: int) -> Any:
        rows = original_due(self, now, limit)
        # The sweep first peeks (limit 1, no write lock); hold the claiming query only.
        claiming = limit > 1
        if claiming and holder and threading.current_thread() is holder[0] and not claimed.is_set():
            held.extend(c.clock_id for c in rows)
            claimed.set()
            assert release.wait(30), "the test never released hub A"
        return rows

    monkeypatch.setattr(sql.SqlClocks, "due", due)
    fired: dict[str, int] = {}

    def sweep(name: str, hub: Hub) -> None:
        fired[name] = hub.sweep()

    a = threading.Thread(target=sweep, args=("a", pair.a))
    holder.append(a)
    a.start()
    assert claimed.wait(30)
    assert len(held) == 10
    b = threading.Thread(target=sweep, args=("b", pair.b))
    b.start()
    b.join(timeout=1.5 if dialect_of(request) == "sqlite" else 30)
    committed = {r.clock_id for r in pair.log() if r.event == "reminder"}  # so far: by B
    if dialect_of(request) == "postgresql":
        assert not b.is_alive(), "hub B must not wait for hub A's claimed rows"
        assert fired["b"] == count - len(held) == len(committed)
        assert committed.isdisjoint(held)
    else:
        assert b.is_alive(), "on SQLite hub B waits for hub A's write lock"
        assert committed == set()
    release.set()
    a.join(timeout=30)
    b.join(timeout=30)
    assert not a.is_alive() and not b.is_alive()
    assert fired["a"] + fired["b"] == count
    if dialect_of(request) == "postgresql":
        assert fired["a"] == len(held)
    reminders = Counter(r.clock_id for r in pair.log() if r.event == "reminder")
    assert reminders == Counter(dict.fromkeys(pair.clock_ids("verify"), 1))
    assert set(pair.clock_ids("verify").values()) == set(reporters)


def test_a_clock_stopped_in_time_fires_nothing(pair: Pair) -> None:
    early = pair.report("BANKA")
    pair.clock.advance(timedelta(minutes=1))
    pair.verify("BANKA", early)  # before its reminder (4 min)
    late = pair.report("BANKA")
    pair.clock.advance(timedelta(minutes=4, seconds=10))
    assert pair.a.sweep() >= 1  # the second report's reminder
    pair.verify("BANKA", late)  # after the reminder, before the deadline (5 min)
    # Long past every step of both reports' verify clocks, swept by both hubs.
    for _ in range(6):
        pair.clock.advance(timedelta(minutes=5))
        pair.a.sweep()
        pair.b.sweep()

    with pair.stores[0].read_engine.connect() as conn:
        ids = {
            (r.case_id, r.kind): r.clock_id
            for r in conn.execute(select(clocks.c.clock_id, clocks.c.case_id, clocks.c.kind))
        }
    events: dict[str, list[str]] = {}
    for r in pair.log():
        events.setdefault(r.clock_id, []).append(r.event)
    notices: dict[str, list[str]] = {}
    for clock_id, step, _, _ in pair.clock_notices():
        notices.setdefault(clock_id, []).append(step)

    # The record clocks (stopped as the reports were stored) and the verify clock stopped
    # before its reminder fire nothing at all.
    for clock_id in (ids[early, "record"], ids[late, "record"], ids[early, "verify"]):
        assert events[clock_id] == ["started", "met"]
        assert clock_id not in notices
    # Stopped after its reminder and before its deadline: the reminder only.
    assert events[ids[late, "verify"]] == ["started", "reminder", "met"]
    assert notices[ids[late, "verify"]] == ["reminder"]
    # The sweeps did run: the clocks the verifications started (the centre has issued no
    # stop) went through their whole ladder, once.
    for case_id in (early, late):
        assert events[ids[case_id, "stop_issue"]] == ["started", *STEPS]
