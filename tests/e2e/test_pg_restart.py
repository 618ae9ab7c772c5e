"""A PostgreSQL restart under load is ridden out: no operator, no lost report, no dead loop.

A hub serves on PostgreSQL while banks send reports (resending the same bytes after a
transient failure, as the SDK documents) and the centre reads its delivery stream. The
database is restarted for real (`pg_ctlcluster ... restart`) in the middle of that load, or,
more cheaply, the hub's backend connections are terminated. Afterwards every report a bank
got an answer for exists exactly once, every bank got all its answers, the server still
serves and reports SERVING, the clock sweep fires again and the stream delivered everything.
A database that stays away longer than the hub's retries is answered UNAVAILABLE
(DATABASE_UNAVAILABLE), and the resend after it is back is stored once.

PostgreSQL only (STOPHUB_TEST_DATABASE_URL); the restart also needs the local cluster's
`pg_ctlcluster` and the rights to run it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from adapters.sdk import HubClient, HubError
from hub.service.pipeline import STORE_RETRY_DELAYS
from hub.store.sql import normalise_url
from hub.store.tables import audit_log, cases, sla_log
from hub.system.clock import ManualClock
from stophub.v1 import case_pb2, delivery_pb2, envelope_pb2
from tests.conftest import PG_URL_VAR
from tests.e2e.conftest import Network, start_network
from tests.e2e.test_crash import mule_report
from tests.e2e.test_restart import read

REPORTERS = {"BANKA": "BANKB", "BANKB": "BANKA", "PAYX": "BANKB"}  # reporter -> mule's bank
GIVE_UP_AFTER = 40.0  # seconds a bank keeps resending one report before the test fails
HUB_LOGGERS = (
    "hub.service.pipeline",
    "hub.service.batching",
    "hub.bootstrap",
    "hub.api.delivery",
)


def pg_version() -> str:
    """The local cluster's version, or skip saying why it cannot be restarted from here."""
    if not os.environ.get(PG_URL_VAR):
        pytest.skip(f"{PG_URL_VAR} is not set: PostgreSQL tests run in CI (.ci/run sets it)")
    if shutil.which("pg_ctlcluster") is None:
        pytest.skip("pg_ctlcluster is not installed: cannot restart PostgreSQL from the test")
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if len(versions) != 1:
        pytest.skip(f"expected one cluster version in /etc/postgresql, found {versions}")
    if os.geteuid() != 0:
        pytest.skip("restarting the cluster needs root (pg_ctlcluster as the postgres owner)")
    host = make_url(normalise_url(os.environ[PG_URL_VAR])).host
    if host not in ("127.0.0.1", "localhost", "::1"):
        pytest.skip(f"{PG_URL_VAR} points at {host}, not the local cluster")
    return versions[0]


def pg_ctl(version: str, action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        capture_output=True,
        text=True,
        timeout=60,
    )


class Admin:
    """The test's own connections to the server (never pooled: a restart would leave a pooled
    one dead), to make, cut off and drop the hub's database."""

    def __init__(self) -> None:
        base = os.environ.get(PG_URL_VAR)
        if not base:
            pytest.skip(f"{PG_URL_VAR} is not set: PostgreSQL tests run in CI (.ci/run sets it)")
        self.url = normalise_url(base)
        self.engine = create_engine(self.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        self.database = f"stophub_r_{uuid.uuid4().hex[:12]}"

    @property
    def database_url(self) -> str:
        return self.url.rsplit("/", 1)[0] + "/" + self.database

    def sql(self, statement: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            result = conn.execute(text(statement), params)
            return list(result.all()) if result.returns_rows else []

    def terminate_all(self) -> int:
        """Cut every connection to the hub's database: pooled and busy ones alike."""
        found = self.sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = :db AND pid <> pg_backend_pid()",
            db=self.database,
        )
        return len(found)

    def allow_connections(self, allowed: bool) -> None:
        self.sql(f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS {str(allowed).lower()}')

    def wait_until_accepting(self, timeout: float = 30.0) -> None:
        """Other tests follow in the same run: PostgreSQL must be back before this one ends."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sql("SELECT 1")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


@pytest.fixture
def admin() -> Iterator[Admin]:
    """A fresh database for the hub, dropped afterwards, and the means to disturb it."""
    admin = Admin()
    admin.sql(f'CREATE DATABASE "{admin.database}"')
    try:
        yield admin
    finally:
        admin.wait_until_accepting()
        admin.allow_connections(True)
        admin.terminate_all()
        admin.sql(f'DROP DATABASE IF EXISTS "{admin.database}"')
        admin.engine.dispose()


@pytest.fixture
async def pg_network(tmp_path: Path, clock: ManualClock, admin: Admin) -> AsyncIterator[Network]:
    """A hub serving on the fresh PostgreSQL database."""
    net = await start_network(tmp_path, clock, database_url=admin.database_url)
    try:
        yield net
    finally:
        await net.server.stop(0.5)
        net.store.dispose()


@dataclass
class Bank:
    """One reporting bank: reports in a loop, each resent with the same bytes until answered."""

    client: HubClient
    mule_bank: str
    answered: dict[str, str] = field(default_factory=dict)  # message id -> case id
    sent: list[str] = field(default_factory=list)
    transient: list[HubError] = field(default_factory=list)
    started_at: list[float] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        code = self.client.institution
        while not stop.is_set():
            envelope = self.client.seal(mule_report(code, self.mule_bank, self.client.clock.now()))
            self.sent.append(envelope.message_id)
            self.started_at.append(time.monotonic())
            _, case = await self.resend_until_answered("CreateReport", envelope)
            assert isinstance(case, case_pb2.Case)
            self.answered[envelope.message_id] = case.case_id

    async def resend_until_answered(
        self, method: str, envelope: envelope_pb2.Envelope
    ) -> tuple[envelope_pb2.Envelope, Any]:
        deadline = time.monotonic() + GIVE_UP_AFTER
        while True:
            try:
                return await self.client.send(method, envelope)
            except HubError as err:
                if not err.transient or time.monotonic() > deadline:
                    raise
                self.transient.append(err)
                await asyncio.sleep(0.2)


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def run_load(
    network: Network,
    disturb: Callable[[], Awaitable[None]],
    *,
    before: int = 10,
    after: int = 4,
) -> tuple[list[Bank], float, float]:
    """Banks report while `disturb` runs, from once `before` reports are answered until it
    returns; then until each bank has `after` more answers, and until the centre's stream
    delivered every case. Returns the banks and when the disturbance started and ended."""
    centre = network.client("CENTRE")
    delivered: set[str] = set()

    async def consume() -> None:
        stream = centre.deliveries("ops", max_backoff=1.0)
        async for delivery in stream:
            if delivery.notice.kind == delivery_pb2.NOTICE_KIND_REPORT_RECEIVED:
                delivered.add(delivery.notice.case_id)
            await stream.ack(delivery.sequence)

    banks = [Bank(network.client(code), mule) for code, mule in REPORTERS.items()]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(bank.run(stop)) for bank in banks]
    consumer = asyncio.create_task(consume())

    def answered(count: Callable[[], bool]) -> Callable[[], bool]:
        def check() -> bool:
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise AssertionError("a bank gave up") from task.exception()
            return count()

        return check

    try:
        await wait_for(
            answered(lambda: sum(len(b.answered) for b in banks) >= before),
            30,
            "no reports answered",
        )
        started = time.monotonic()
        await disturb()
        ended = time.monotonic()
        goals = [(bank, len(bank.answered) + after) for bank in banks]
        await wait_for(
            answered(lambda: all(len(bank.answered) >= goal for bank, goal in goals)),
            GIVE_UP_AFTER,
            "a bank got no answers after the disturbance",
        )
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), GIVE_UP_AFTER)  # every report answered
        everything = {case for bank in banks for case in bank.answered.values()}
        await wait_for(
            lambda: everything <= delivered, 20, "the centre's stream stopped delivering"
        )
    finally:
        stop.set()
        for task in (*tasks, consumer):
            task.cancel()
        await asyncio.gather(*tasks, consumer, return_exceptions=True)
        for bank in banks:
            await bank.client.close()
        await centre.close()
    return banks, started, ended


def check_reports_stored_once(database_url: str, banks: list[Bank]) -> None:
    stored: dict[str, list[str]] = {}
    for row in read(database_url, cases):
        stored.setdefault(row.report_message_id, []).append(row.case_id)
    for bank in banks:
        assert bank.sent == list(bank.answered), "every report sent was eventually answered"
        for message_id, case_id in bank.answered.items():
            assert stored.get(message_id) == [case_id], message_id
    assert len(stored) == sum(len(b.answered) for b in banks), "no report stored twice"


async def check_still_serving(network: Network, clock: ManualClock, database_url: str) -> None:
    async with network.channel("BANKA") as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    async with network.client("BANKA") as bank:
        case = await bank.create_report(mule_report("BANKA", "BANKB", clock.now()))
        assert (await bank.get_case(case.case_id)).case_id == case.case_id
    # Every verify clock (none verified) reminds at 80% of its five minutes: move past that
    # and the sweep, which kept ticking through the outage, fires them all.
    open_verify = len(read(database_url, cases))
    clock.advance(timedelta(minutes=4, seconds=30))

    def reminders() -> int:
        return len([r for r in read(database_url, sla_log) if r.event == "reminder"])

    await wait_for(
        lambda: reminders() >= open_verify, 20, "the sweep fired nothing after the outage"
    )
    assert reminders() == open_verify


@pytest.fixture
def cluster_version() -> str:
    return pg_version()


# The restart cuts every database of the cluster, other tests' too: `make test` runs it alone,
# before the suite's parallel run (Makefile).
@pytest.mark.alone
@pytest.mark.postgres
async def test_hub_rides_out_a_postgresql_restart(
    cluster_version: str,
    clock: ManualClock,
    admin: Admin,
    pg_network: Network,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="hub")
    restarted: list[subprocess.CompletedProcess[str]] = []

    async def restart() -> None:
        try:
            restarted.append(await asyncio.to_thread(pg_ctl, cluster_version, "restart"))
            if restarted[-1].returncode != 0:
                pg_ctl(cluster_version, "start")  # whatever state the failure left it in
        finally:
            admin.wait_until_accepting()

    banks, started, ended = await run_load(pg_network, restart)
    (done,) = restarted
    if done.returncode != 0:
        pytest.skip(f"pg_ctlcluster restart failed: {done.stderr.strip() or done.stdout}")
    check_reports_stored_once(admin.database_url, banks)
    # The load really overlapped the restart, and the hub saw the database go away.
    assert any(started <= t <= ended for b in banks for t in b.started_at)
    unavailable = [
        r for r in caplog.records if r.name in HUB_LOGGERS and "database" in r.getMessage()
    ]
    assert unavailable, "the restart went unnoticed: did it happen?"
    await check_still_serving(pg_network, clock, admin.database_url)
    assert pg_network.server.scheduler is not None and pg_network.server.scheduler.running


@pytest.mark.postgres
async def test_requests_keep_succeeding_when_backends_are_terminated(
    clock: ManualClock, admin: Admin, pg_network: Network
) -> None:
    terminated: list[int] = []

    async def terminate() -> None:
        for _ in range(3):
            terminated.append(await asyncio.to_thread(admin.terminate_all))
            await asyncio.sleep(0.3)

    banks, _, _ = await run_load(pg_network, terminate)
    check_reports_stored_once(admin.database_url, banks)
    assert sum(terminated) >= 3, terminated
    # The hub's own retries hid every cut connection: no bank saw an error at all.
    assert [err for b in banks for err in b.transient] == []
    await check_still_serving(pg_network, clock, admin.database_url)


@pytest.mark.postgres
async def test_a_database_that_stays_down_is_answered_unavailable_then_resent(
    clock: ManualClock, admin: Admin, pg_network: Network
) -> None:
    url = admin.database_url
    async with pg_network.client("BANKA") as bank:
        envelope = bank.seal(mule_report("BANKA", "BANKB", clock.now()))
        # Down for longer than the hub retries: no new connection is let in.
        admin.allow_connections(False)
        admin.terminate_all()
        started = time.monotonic()
        with pytest.raises(HubError) as caught:
            await bank.send("CreateReport", envelope)
        waited = time.monotonic() - started
        err = caught.value
        assert err.code is grpc.StatusCode.UNAVAILABLE, err
        assert err.reason == "DATABASE_UNAVAILABLE", err
        assert "same message id" in err.message
        assert err.signed and err.transient, "the hub's word, and safe to resend"
        assert waited >= sum(STORE_RETRY_DELAYS), "the hub retried before answering"
        admin.allow_connections(True)
        _, case = await bank.send("CreateReport", envelope)
        _, again = await bank.send("CreateReport", envelope)
        assert isinstance(case, case_pb2.Case) and again == case
    stored = read(url, cases)
    assert [r.case_id for r in stored if r.report_message_id == envelope.message_id] == [
        case.case_id
    ]
    # Not a refusal: nothing about it went to the audit log as one.
    assert not [
        r
        for r in read(url, audit_log)
        if r.kind == "rejected" and r.message_id == envelope.message_id
    ]
