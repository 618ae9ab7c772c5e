"""Operations against a real hub: Prometheus metrics scraped over HTTP after real RPCs, health
that follows the database (on the mutual-TLS port and on the plain-text health port), and the
JSON log lines of a `stophub --log-format json serve` process (docs/operations.md).

Waits poll until a figure appears (the router and the sweeper work on their own tasks); no
assertion is about how long anything took.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from adapters.sdk import HubClient
from hub.crypto import pki
from hub.crypto.keys import PrivateKey, save_private_key
from hub.system.clock import ManualClock
from stophub.v1 import blacklist_pb2, case_pb2, case_pb2_grpc
from tests.e2e.conftest import Network, start_network
from tests.e2e.test_delivery_stream import verified_case_with_auto_stop
from tests.e2e.test_pg_restart import Admin, admin  # noqa: F401  (the fixture)
from tests.e2e.test_restart import ROOT, free_port, register_members
from tests.e2e.wire_helpers import RawStream, report, sign

T = TypeVar("T")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
CASES = "/stophub.v1.CaseService"
STREAM = "/stophub.v1.DeliveryService/StreamDeliveries"
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


async def start_ops_network(tmp_path: Path, clock: ManualClock, database_url: str) -> Network:
    """tests/e2e/conftest.py's network, with the metrics and health ports open and the
    database probed every 0.1 s."""
    return await start_network(
        tmp_path,
        clock,
        database_url=database_url,
        metrics_address="127.0.0.1:0",
        health_address="127.0.0.1:0",
        health_interval=0.1,
    )


@pytest.fixture
async def ops(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Network]:
    # The database in a directory of its own, which the health test moves away and back.
    net = await start_ops_network(tmp_path, clock, f"sqlite:///{tmp_path}/db/hub.db")
    try:
        yield net
    finally:
        await net.server.stop(0.5)
        net.store.dispose()


def scrape_port(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(network: Network) -> Samples:
    port = network.server.metrics_port
    assert port is not None
    return await asyncio.to_thread(scrape_port, port)


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def eventually(
    probe: Callable[[], Awaitable[T]], accept: Callable[[T], bool], what: str, timeout: float = 20
) -> T:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        got = await probe()
        if accept(got):
            return got
        if loop.time() > deadline:
            raise AssertionError(f"{what}: never seen; last: {got!r}")
        await asyncio.sleep(0.05)


def handled(samples: Samples, method: str, code: str) -> float:
    return value(samples, "stophub_rpc_handled_total", method=method, code=code) or 0.0


async def test_rpcs_streams_and_delivery_lag_are_counted(ops: Network) -> None:
    stream = await RawStream(ops, "BANKB").open()
    try:
        samples = await eventually(
            lambda: scrape(ops),
            lambda s: value(s, "stophub_delivery_streams_connected") == 1,
            "one connected delivery stream",
        )
        assert value(samples, "stophub_rpc_in_flight", method=STREAM) == 1

        # A stop order for BANKB, committed at the test's time, acknowledged 3 s (case time)
        # later: the lag is exactly 3 s, whatever the machine's speed.
        await verified_case_with_auto_stop(ops)
        delivery = await stream.next()
        ops.clock.advance(timedelta(seconds=3))
        await stream.ack(delivery.sequence)
        samples = await eventually(
            lambda: scrape(ops),
            lambda s: value(s, "stophub_delivery_lag_seconds_count") == 1,
            "the acknowledgement's lag",
        )
        assert value(samples, "stophub_delivery_lag_seconds_sum") == 3.0
        assert value(samples, "stophub_delivery_lag_seconds_bucket", le="2.5") == 0
        assert value(samples, "stophub_delivery_lag_seconds_bucket", le="5.0") == 1

        # Refusals by status code: a case that does not exist, and bytes that are no request.
        now = ops.clock.now()
        async with ops.channel("BANKA") as channel:
            cases = case_pb2_grpc.CaseServiceStub(channel)
            missing = case_pb2.GetCaseBody(case_id="C20990101-00000000")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await cases.GetCase(
                    case_pb2.GetCaseRequest(envelope=sign(ops.keys["BANKA"], "BANKA", missing, now))
                )
            assert refused.value.code() == grpc.StatusCode.NOT_FOUND
            raw = channel.unary_unary(f"{CASES}/GetCase")
            with pytest.raises(grpc.aio.AioRpcError) as garbled:
                await raw(b"\xff\xff\xff")
            assert garbled.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        samples = await scrape(ops)
        assert handled(samples, f"{CASES}/GetCase", "NOT_FOUND") == 1
        assert handled(samples, f"{CASES}/GetCase", "INVALID_ARGUMENT") == 1
        assert handled(samples, f"{CASES}/CreateReport", "OK") == 1
        assert handled(samples, f"{CASES}/VerifyReport", "OK") == 1
        assert handled(samples, "/stophub.v1.OrderService/SetAutoStopRule", "OK") == 1
        assert handled(samples, f"{CASES}/GetCase", "OK") == 0
        created = value(
            samples,
            "stophub_rpc_duration_seconds_count",
            method=f"{CASES}/CreateReport",
            code="OK",
        )
        assert created == 1
        assert handled(samples, STREAM, "CANCELLED") == 0  # still open
    finally:
        await stream.close()
    samples = await eventually(
        lambda: scrape(ops),
        lambda s: (
            value(s, "stophub_delivery_streams_connected") == 0
            and handled(s, STREAM, "CANCELLED") == 1
        ),
        "the stream closed and counted",
    )
    assert value(samples, "stophub_rpc_in_flight", method=STREAM) == 0


async def test_a_database_rolled_back_under_the_hub_shows_in_the_forked_gauge(
    ops: Network,
) -> None:
    """stophub_audit_log_forked is 0 while the hub's checkpoint memory finds the database's
    tree extending what it signed, and 1 once it does not (docs/operations.md)."""
    assert value(await scrape(ops), "stophub_audit_log_forked") == 0
    memory = ops.server.hub.jobs.log_memory
    assert memory.on_forked is not None
    memory.on_forked(True)  # what the memory calls when it finds the tree rolled back
    assert value(await scrape(ops), "stophub_audit_log_forked") == 1
    memory.on_forked(False)
    assert value(await scrape(ops), "stophub_audit_log_forked") == 0


async def test_every_stream_whose_client_hung_up_counts_as_cancelled(ops: Network) -> None:
    """A client that cancels is first seen by the hub as the end of what it writes; the stream
    must wait for gRPC's cancellation instead of ending first as a success."""
    hung_up = 30
    for _ in range(hung_up):
        stream = await RawStream(ops, "BANKB").open()
        await eventually(
            lambda: scrape(ops),
            lambda s: value(s, "stophub_delivery_streams_connected") == 1,
            "the stream connected",
        )
        await stream.close()
    samples = await eventually(
        lambda: scrape(ops),
        lambda s: (
            value(s, "stophub_rpc_in_flight", method=STREAM) == 0
            and handled(s, STREAM, "CANCELLED") + handled(s, STREAM, "OK") == hung_up
        ),
        "every stream ended",
    )
    assert handled(samples, STREAM, "CANCELLED") == hung_up
    assert handled(samples, STREAM, "OK") == 0


async def test_the_extra_ports_close_when_the_hub_stops(tmp_path: Path, clock: ManualClock) -> None:
    net = await start_ops_network(tmp_path, clock, f"sqlite:///{tmp_path}/hub.db")
    metrics_port, health_port = net.server.metrics_port, net.server.health_port
    assert metrics_port is not None and health_port is not None
    try:
        samples = await scrape(net)
        assert value(samples, "stophub_database_up") == 1
        assert value(samples, "process_cpu_seconds_total") is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{health_port}") as plain:
            assert await health_of(plain) == SERVING
    finally:
        await net.server.stop(0.5)
        net.store.dispose()
    with pytest.raises(OSError):  # URLError: connection refused
        await asyncio.to_thread(scrape_port, metrics_port)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{health_port}") as plain:
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await health_of(plain)
        assert gone.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_open_clocks_breaches_and_the_list_version_come_from_the_database(
    ops: Network,
) -> None:
    collector = ops.server.metrics.collector
    assert collector is not None
    collector.max_age = 0.0  # read on every scrape here; the cache has its own unit test

    before = await scrape(ops)
    # Every kind of the policy is there before any clock runs.
    assert value(before, "stophub_clocks_open", kind="verify") == 0
    assert value(before, "stophub_clock_breaches_total", kind="verify") == 0
    assert value(before, "stophub_clocks_open", kind="fund_return") == 0
    assert value(before, "stophub_blacklist_version") == 0

    client: HubClient = ops.client("BANKA")
    centre: HubClient = ops.client("CENTRE")
    try:
        case = await client.create_report(report(ops.clock.now(), (500_000,)))
        filed = await scrape(ops)
        assert value(filed, "stophub_clocks_open", kind="verify") == 1
        assert value(filed, "stophub_clocks_overdue", kind="verify") == 0

        # Past the 5-minute verify deadline: the sweeper records the breach.
        ops.clock.advance(timedelta(minutes=6))
        breached = await eventually(
            lambda: scrape(ops),
            lambda s: value(s, "stophub_clock_breaches_total", kind="verify") == 1,
            "the verify clock's breach",
        )
        assert value(breached, "stophub_clocks_overdue", kind="verify") == 1
        assert value(breached, "stophub_clocks_open", kind="verify") == 1  # not met yet

        await centre.publish_list_entry(
            account=("BANKB", "6222020000000002", "Li Si"),
            basis=blacklist_pb2.LIST_BASIS_ACCOUNT_TRADER,
            reason="sold the account",
            source_case_id=case.case_id,
        )
        listed = await scrape(ops)
        assert value(listed, "stophub_blacklist_version") == 1
        age = value(listed, "stophub_snapshot_age_seconds")
        assert age is not None and age >= 0
    finally:
        await client.close()
        await centre.close()


async def health_of(channel: grpc.aio.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    answer = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    return int(answer.status)


async def test_health_follows_the_database_on_both_ports(ops: Network, tmp_path: Path) -> None:
    port = ops.server.health_port
    assert port is not None
    # The kubelet's probe: plain text, no certificate, health only.
    plain = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    secure = ops.channel("BANKA")
    try:
        assert await health_of(plain) == SERVING
        assert await health_of(plain, "stophub.v1.CaseService") == SERVING
        assert await health_of(secure) == SERVING
        with pytest.raises(grpc.aio.AioRpcError) as only_health:
            await plain.unary_unary(f"{CASES}/GetCase")(b"", timeout=10)
        assert only_health.value.code() == grpc.StatusCode.UNIMPLEMENTED

        # The database goes away: its directory moves, and the read engine's pooled
        # connections (open files that would still work) are closed.
        home, away = tmp_path / "db", tmp_path / "db-away"
        home.rename(away)
        ops.store.read_engine.dispose()
        try:
            await eventually(lambda: health_of(plain), lambda s: s == NOT_SERVING, "NOT_SERVING")
            assert await health_of(plain, "stophub.v1.DeliveryService") == NOT_SERVING
            assert await health_of(secure) == NOT_SERVING
            assert await health_of(secure, "stophub.v1.CaseService") == NOT_SERVING
            down = await scrape(ops)
            assert value(down, "stophub_database_up") == 0
        finally:
            away.rename(home)
        await eventually(lambda: health_of(plain), lambda s: s == SERVING, "SERVING again")
        assert await health_of(secure, "stophub.v1.CaseService") == SERVING
        assert value(await scrape(ops), "stophub_database_up") == 1
    finally:
        await plain.close()
        await secure.close()


async def test_health_follows_postgresql(
    tmp_path: Path,
    clock: ManualClock,
    admin: Admin,  # noqa: F811
) -> None:
    """PostgreSQL refusing connections, with the hub's own cut: NOT_SERVING until it takes
    them again."""
    net = await start_ops_network(tmp_path, clock, admin.database_url)
    port = net.server.health_port
    assert port is not None
    plain = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        assert await health_of(plain) == SERVING
        admin.allow_connections(False)
        admin.terminate_all()
        try:
            await eventually(lambda: health_of(plain), lambda s: s == NOT_SERVING, "NOT_SERVING")
        finally:
            admin.allow_connections(True)
        await eventually(lambda: health_of(plain), lambda s: s == SERVING, "SERVING again")
    finally:
        await plain.close()
        await net.server.stop(0.5)
        net.store.dispose()


# ---- `stophub --log-format json serve` -----------------------------------------------------------


def test_stophub_serve_writes_json_lines_and_opens_the_operations_ports(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path}/hub.db"
    keys = register_members(db_url)
    save_private_key(PrivateKey.generate(), tmp_path / "hub.key")
    pki_dir = tmp_path / "pki"
    pki.init(pki_dir, datetime.now(UTC))
    for code in ("BANKA", "BANKB"):
        pki.issue(pki_dir, code, datetime.now(UTC))
    target = f"127.0.0.1:{free_port()}"
    metrics_port, health_port = free_port(), free_port()
    log_file = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if k != "STOPHUB_DATABASE_URL"}
    env["STOPHUB_HEALTH_ADDRESS"] = f"127.0.0.1:{health_port}"  # the environment's way
    with log_file.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hub.cli",
                "--log-format",
                "json",
                "serve",
                "--address",
                target,
                "--db",
                db_url,
                "--hub-key",
                str(tmp_path / "hub.key"),
                "--tls-dir",
                str(pki_dir),
                "--metrics-address",
                f"127.0.0.1:{metrics_port}",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{health_port}") as plain:
            grpc.channel_ready_future(plain).result(timeout=30)
            status = health_pb2_grpc.HealthStub(plain).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
            assert status.status == SERVING

        def channel(code: str) -> grpc.Channel:
            from adapters.sdk.client import tls_credentials, tls_options

            tls = pki.client_tls(pki_dir, code)
            return grpc.secure_channel(target, tls_credentials(tls), options=tls_options(tls))

        now = datetime.now(UTC)
        with channel("BANKA") as banka:
            created = case_pb2_grpc.CaseServiceStub(banka).CreateReport(
                case_pb2.CreateReportRequest(
                    envelope=sign(keys["BANKA"], "BANKA", report(now), now)
                ),
                timeout=30,
            )
        case_id = case_pb2.Case.FromString(created.envelope.body).case_id
        # BANKB did not report the case: refused, and the refusal is logged with its ids.
        verification = case_pb2.Verification(
            case_id=case_id, outcome=case_pb2.VERIFICATION_OUTCOME_CONFIRMED
        )
        foreign = sign(keys["BANKB"], "BANKB", verification, now)
        with channel("BANKB") as bankb, pytest.raises(grpc.RpcError):
            case_pb2_grpc.CaseServiceStub(bankb).VerifyReport(
                case_pb2.VerifyReportRequest(envelope=foreign), timeout=30
            )

        def refused_verifications() -> float:
            return sum(
                v for (name, labels), v in scrape_port(metrics_port).items()
                if name == "stophub_rpc_handled_total"
                and ("method", f"{CASES}/VerifyReport") in labels
                and ("code", "OK") not in labels
            )  # fmt: skip

        # gRPC sends a refusal's status from within context.abort(), before the handler's
        # interceptor counts it: the client may see it first.
        deadline = time.monotonic() + 10
        while refused_verifications() < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        metrics = scrape_port(metrics_port)
        assert handled(metrics, f"{CASES}/CreateReport", "OK") == 1
        assert refused_verifications() == 1
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/", timeout=10)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)

    text = log_file.read_text(encoding="utf-8")
    records: list[dict[str, Any]] = []
    for line in text.splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise AssertionError(f"not a JSON line: {line!r}\n{text}") from None
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    assert any("StopHub serving on" in r["message"] for r in records)
    [refusal] = [r for r in records if r.get("message_id") == foreign.message_id]
    assert refusal["case_id"] == case_id
    assert refusal["institution"] == "BANKB"
    assert refusal["rpc"] == f"{CASES}/VerifyReport"
    assert refusal["logger"] == "hub.api.runner" and refusal["level"] == "INFO"
    assert refusal["message"].startswith("refused VerifyReport from BANKB/")
    # The victim's ID number never reaches a line in full.
    assert "110101199001011234" not in text
