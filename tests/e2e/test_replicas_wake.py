"""Replicas on one PostgreSQL wake each other (ADR 22), as real `stophub serve` processes.

Three hubs share a database and run with `--ack-timeout 120`: their ticks (every 60 s) look
for what nothing woke them for, so within this test only a wake-up can carry anything from
one to another. A stop order committed on hub A reaches the payee bank streaming from hub B,
and a blacklist entry published on A reaches a copy following the list on hub C, each well
before any tick or heartbeat would have brought it; after every wake-up connection to the
database is killed, the hubs listen again by themselves and the next stop still gets through.

`serve --workers 2` runs two processes on one port: connections land on both, and SIGTERM to
the parent stops both; a worker that dies makes the parent stop the other and exit 1; a
parent SIGKILLed takes its workers with it; on SQLite it is refused in one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from adapters.sdk.client import tls_credentials, tls_options
from hub.crypto.keys import PrivateKey, save_private_key
from hub.crypto.listkey import ListKey
from hub.store.wakeups import conninfo
from hub.system.policy import DEFAULT_POLICY
from stophub.v1 import (
    blacklist_pb2,
    blacklist_pb2_grpc,
    case_pb2,
    case_pb2_grpc,
    delivery_pb2,
    delivery_pb2_grpc,
    order_pb2,
    order_pb2_grpc,
)
from tests.e2e.test_crash import mule_report
from tests.e2e.test_restart import ROOT, Hub, free_port, register_members
from tests.e2e.wire_helpers import sign

# Far longer than a wake-up takes, far shorter than the 60 s tick and the list's 15 s heartbeat.
WITHIN = 8.0


def now() -> datetime:
    return datetime.now(UTC)


def aio_channel(hub: Hub, code: str) -> grpc.aio.Channel:
    tls = hub.tls(code)
    return grpc.aio.secure_channel(hub.target, tls_credentials(tls), options=tls_options(tls))


async def stream_orders(
    hub: Hub, code: str, key: PrivateKey, opened: asyncio.Event
) -> AsyncIterator[delivery_pb2.Notice]:
    """`code`'s delivery stream on `hub`: every notice carrying an order, acknowledged."""
    async with aio_channel(hub, code) as channel:
        call = delivery_pb2_grpc.DeliveryServiceStub(channel).StreamDeliveries()
        hello = sign(key, code, delivery_pb2.SubscribeBody(connection_name="wake"), now())
        await call.write(delivery_pb2.StreamDeliveriesRequest(envelope=hello))
        await call.initial_metadata()
        opened.set()
        async for item in call:
            if not item.sequence:
                continue  # a checkpoint on its own
            ack = sign(key, code, delivery_pb2.AckBody(sequences=[item.sequence]), now())
            await call.write(delivery_pb2.StreamDeliveriesRequest(envelope=ack))
            notice = delivery_pb2.Notice.FromString(item.envelope.body)
            if notice.order.order_id:
                yield notice


async def test_a_commit_on_one_replica_wakes_the_others(tmp_path: Path, postgres_url: str) -> None:
    hub_key = PrivateKey.generate()
    keys = register_members(postgres_url)
    list_key = tmp_path / "list-key.json"
    ListKey.generate().save(list_key)
    hubs: dict[str, Hub] = {}
    pki_dir = tmp_path / "a" / "pki"
    for name in ("a", "b", "c"):
        home = tmp_path / name
        home.mkdir()
        save_private_key(hub_key, home / "hub.key")
        hub = Hub(home, postgres_url, DEFAULT_POLICY)
        hub.pki_dir = pki_dir  # one network CA for all three
        hub.extra = ["--ack-timeout", "120", "--list-key", str(list_key)]
        hubs[name] = hub
    a, b, c = hubs["a"], hubs["b"], hubs["c"]
    try:
        for hub in hubs.values():
            hub.start()

        async with aio_channel(a, "CENTRE") as channel:
            rule = order_pb2.AutoStopRule(rule_id="R1", enabled=True, max_amount_fen=10_000_000)
            await order_pb2_grpc.OrderServiceStub(channel).SetAutoStopRule(
                order_pb2.SetAutoStopRuleRequest(
                    envelope=sign(keys["CENTRE"], "CENTRE", rule, now())
                )
            )

        # The payee bank streams from B; a follower of the list from C.
        opened = asyncio.Event()
        orders = stream_orders(b, "BANKB", keys["BANKB"], opened)
        first_order = asyncio.ensure_future(orders.__anext__())
        await asyncio.wait_for(opened.wait(), 10)
        follower = ListFollower(c, keys["BANKA"])
        following = asyncio.ensure_future(follower.run())
        version = await asyncio.wait_for(follower.first, 10)

        # The reporting bank reports and verifies on A: the standing rule stops the mule.
        case_id = await report_and_verify(a, keys["BANKA"])
        notice = await asyncio.wait_for(first_order, WITHIN)
        assert notice.case_id == case_id
        assert notice.order.kind == order_pb2.ORDER_KIND_STOP, notice

        # The centre publishes on A; C's follower has the entry before its heartbeat.
        async with aio_channel(a, "CENTRE") as channel:
            entry = blacklist_pb2.PublishListEntryBody(
                person=blacklist_pb2.ListedPerson(id_number="11010519491231002X", name="Zhao Liu"),
                basis=blacklist_pb2.LIST_BASIS_CONVICTED,
                reason="convicted",
                source_case_id=case_id,
            )
            await blacklist_pb2_grpc.ListServiceStub(channel).PublishListEntry(
                blacklist_pb2.PublishListEntryRequest(
                    envelope=sign(keys["CENTRE"], "CENTRE", entry, now())
                )
            )
        changed = await asyncio.wait_for(following, WITHIN)
        assert changed > version

        # Every wake-up connection is killed: each hub listens again by itself (and wakes
        # all its streams once), and the next stop committed on A still reaches B at once.
        with psycopg.connect(conninfo(postgres_url), autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'stophub-wakeups' AND datname = current_database()"
            )
        deadline = time.monotonic() + 20
        while metric(b.metrics, "stophub_wakeup_reconnects_total") < 1:
            assert time.monotonic() < deadline, b.output()
            await asyncio.sleep(0.1)
        case_id = await report_and_verify(a, keys["BANKA"])
        notice = await asyncio.wait_for(orders.__anext__(), WITHIN)
        assert notice.case_id == case_id

        for hub in hubs.values():
            assert hub.proc is not None and hub.proc.poll() is None, hub.output()
        sent = {n: metric(h.metrics, "stophub_wakeups_sent_total") for n, h in hubs.items()}
        heard = {n: metric(h.metrics, "stophub_wakeups_received_total") for n, h in hubs.items()}
        assert sent["a"] >= 2 and heard["b"] >= 1 and heard["c"] >= 1, (sent, heard)
        assert all(metric(h.metrics, "stophub_wakeup_listening") == 1 for h in hubs.values())
    finally:
        for hub in hubs.values():
            if hub.proc is not None and hub.proc.poll() is None:
                hub.kill()


async def report_and_verify(hub: Hub, key: PrivateKey) -> str:
    """BANKA reports payments to a mule at BANKB and confirms them: the standing rule stops
    the mule's account. The case's id."""
    async with aio_channel(hub, "BANKA") as channel:
        cases = case_pb2_grpc.CaseServiceStub(channel)
        body = mule_report("BANKA", "BANKB", now())
        answer = await cases.CreateReport(
            case_pb2.CreateReportRequest(envelope=sign(key, "BANKA", body, now()))
        )
        case_id = case_pb2.Case.FromString(answer.envelope.body).case_id
        verification = case_pb2.Verification(
            case_id=case_id, outcome=case_pb2.VERIFICATION_OUTCOME_CONFIRMED
        )
        await cases.VerifyReport(
            case_pb2.VerifyReportRequest(envelope=sign(key, "BANKA", verification, now()))
        )
    return case_id


class ListFollower:
    """SyncList with follow on `hub` as BANKA: `first` resolves with the version of the first
    checkpoint; `run` returns the version of the first checkpoint past it."""

    def __init__(self, hub: Hub, key: PrivateKey) -> None:
        self.hub, self.key = hub, key
        self.first: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def run(self) -> int:
        async with aio_channel(self.hub, "BANKA") as channel:
            body = blacklist_pb2.SyncListBody(from_version=0, follow=True)
            request = blacklist_pb2.SyncListRequest(envelope=sign(self.key, "BANKA", body, now()))
            async for part in blacklist_pb2_grpc.ListServiceStub(channel).SyncList(request):
                if not part.HasField("checkpoint"):
                    continue
                checkpoint = blacklist_pb2.ListCheckpoint.FromString(part.checkpoint.body)
                if not self.first.done():
                    self.first.set_result(checkpoint.version)
                elif checkpoint.version > self.first.result():
                    return int(checkpoint.version)
        raise AssertionError("the list stream ended")


def metric(address: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples with these labels on the metrics page at `address`."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as page:
        text = page.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def two_free_ports() -> int:
    """A port free with the next one: the workers' metrics ports."""
    while True:
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


def start_workers(hub: Hub) -> str:
    """`serve --workers 2` with metrics on a port whose next is free too: the first's."""
    metrics = f"127.0.0.1:{two_free_ports()}"
    hub.extra = ["--workers", "2", "--metrics-address", metrics]  # the last given wins
    hub.start()
    return metrics


def gone(pid: int) -> bool:
    """Ended: no such process, or one ended and not reaped yet (its parent was killed)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def worker_pids(hub: Hub, pids: list[int]) -> list[int]:
    """The workers' process ids, from the parent's line (also put in `pids`, for cleanup)."""
    deadline = time.monotonic() + 30
    while True:
        found = re.search(r"2 workers serving on \S+ \(pids (\d+), (\d+)\)", hub.output())
        if found:
            pids += [int(found.group(1)), int(found.group(2))]
            return pids[-2:]
        assert time.monotonic() < deadline, hub.output()
        time.sleep(0.1)


def test_serve_workers_share_the_port_and_stop_together(tmp_path: Path, postgres_url: str) -> None:
    save_private_key(PrivateKey.generate(), tmp_path / "hub.key")
    register_members(postgres_url)
    hub = Hub(tmp_path, postgres_url, DEFAULT_POLICY)
    started: list[int] = []
    try:
        first_metrics = start_workers(hub)
        pids = worker_pids(hub, started)
        host, port = first_metrics.rsplit(":", 1)
        second_metrics = f"{host}:{int(port) + 1}"
        deadline = time.monotonic() + 30
        # The second worker serves (its metrics port opens once it does).
        while True:
            try:
                metric(second_metrics, "stophub_wakeup_listening")
                break
            except OSError:
                assert time.monotonic() < deadline, hub.output()
                time.sleep(0.1)
        # Each channel its own connection; the kernel spreads them over both workers.
        tls = hub.tls("PROBE")
        for _ in range(24):
            options = [*tls_options(tls), ("grpc.use_local_subchannel_pool", 1)]
            with grpc.secure_channel(hub.target, tls_credentials(tls), options=options) as ch:
                health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=30)
        check = {"method": "/grpc.health.v1.Health/Check"}
        counts = [
            metric(address, "stophub_rpc_handled_total", **check)
            for address in (first_metrics, second_metrics)
        ]
        assert all(n >= 1 for n in counts) and sum(counts) >= 24, counts

        assert hub.proc is not None
        hub.proc.send_signal(signal.SIGTERM)
        assert hub.proc.wait(timeout=40) == 0, hub.output()
        for pid in pids:
            assert not os.path.exists(f"/proc/{pid}"), f"worker {pid} still runs"

        # A worker that dies is not restarted: the parent stops the other and exits 1,
        # naming it in one line.
        start_workers(hub)
        first, second = worker_pids(hub, started)
        os.kill(second, signal.SIGKILL)
        assert hub.proc.wait(timeout=40) == 1, hub.output()
        assert f"worker 2 (pid {second}) exited with code -9; the other workers were stopped" in (
            hub.output()
        )
        assert not os.path.exists(f"/proc/{first}")

        # The parent SIGKILLed: its workers get SIGTERM from the kernel and stop too.
        start_workers(hub)
        pids = worker_pids(hub, started)
        hub.kill()
        deadline = time.monotonic() + 20
        while not all(gone(pid) for pid in pids):
            assert time.monotonic() < deadline, f"workers outlived their parent:\n{hub.output()}"
            time.sleep(0.1)
    finally:
        if hub.proc is not None and hub.proc.poll() is None:
            hub.kill()
        for pid in started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    refused = subprocess.run(
        [sys.executable, "-m", "hub.cli", "serve", "--workers", "2", "--db",
         f"sqlite:///{tmp_path}/hub.db", "--hub-key", str(tmp_path / "hub.key")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 1
    assert refused.stderr.strip().count("\n") == 0, refused.stderr
    assert "--workers 2 needs PostgreSQL" in refused.stderr, refused.stderr
    assert not (tmp_path / "hub.db").exists()
