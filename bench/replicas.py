"""Replicas: from the reporting bank's answer to the stop order on the payee bank's stream,
with the bank on the same replica and on another (issue 22, ADR 22).

`python -m bench.replicas` (or `python -m bench replicas`), PostgreSQL only
(STOPHUB_BENCH_DATABASE_URL or STOPHUB_TEST_DATABASE_URL). Two `stophub serve` processes
(tests/e2e/test_restart.py's `Hub`, mutual TLS, sealed personal data, default settings: the
tick every 2.5 s) on one fresh database. The centre's standing auto-stop rule is on; the
reporting bank (BANKA) has opened `--stops` cases in advance, each naming a mule account at
BANKB. The reporter verifies them on hub A one at a time, `--gap` seconds apart; each
VerifyReport's commit queues one stop order to BANKB, whose stream (acknowledging every
delivery) is open on hub A for the first half of the run ("same replica") and on hub B for
the second ("another replica"), alternating in blocks so both halves see the same machine.

Latency = arrival of the order on the stream − arrival of VerifyReport's answer at the
reporter, both `time.time()` in this one process (the issue's measure: the order may arrive
before the answer, giving a small negative value). p50 / p90 / p99 / max per path; the same
replica is the baseline of the same run.

**Intake with `serve --workers 2` against `--workers 1`** (`--intake-seconds`, 0 skips it):
the same machine, each on a fresh PostgreSQL database, driven as bench/intake.py drives the
hub (its `drive`: signed CreateReports from 4 client processes, one connection each,
`--intake-concurrency` in flight, after a 2-second warm-up); reports answered per second,
the one-process figure as the baseline, and the reports each worker handled (from its
metrics). The client processes run on the same cores as the hubs and PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench.clocks import PG_VARS, postgres_database
from bench.delivery import keyring_in, pct
from bench.intake import PROBE_SECONDS, SENDER, Server, drive, sign_reports
from bench.table import Row
from hub.crypto.keys import PrivateKey, save_private_key
from hub.system.policy import DEFAULT_POLICY
from stophub.v1 import (
    case_pb2,
    case_pb2_grpc,
    delivery_pb2,
    delivery_pb2_grpc,
    order_pb2,
    order_pb2_grpc,
)
from tests.e2e.test_crash import mule_report
from tests.e2e.test_replicas_wake import aio_channel
from tests.e2e.test_restart import Hub, register_members
from tests.e2e.wire_helpers import sign

REPORTER, BANK, CENTRE = "BANKA", "BANKB", "CENTRE"
TARGET_MS = 50.0


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Path_:
    label: str
    latencies: list[float] = field(default_factory=list)  # seconds


class Stream:
    """BANK's delivery stream on one hub: the arrival time of each order, by case."""

    def __init__(self, hub: Hub, key: PrivateKey) -> None:
        self.hub, self.key = hub, key
        self.arrived: dict[str, float] = {}
        self.event = asyncio.Event()
        self.opened = asyncio.Event()
        self.task = asyncio.create_task(self.run())

    async def run(self) -> None:
        async with aio_channel(self.hub, BANK) as ch:
            call = delivery_pb2_grpc.DeliveryServiceStub(ch).StreamDeliveries()
            hello = sign(self.key, BANK, delivery_pb2.SubscribeBody(connection_name="bench"), now())
            await call.write(delivery_pb2.StreamDeliveriesRequest(envelope=hello))
            await call.initial_metadata()
            self.opened.set()
            async for item in call:
                at = time.time()
                if not item.sequence:
                    continue
                notice = delivery_pb2.Notice.FromString(item.envelope.body)
                if notice.order.order_id:
                    self.arrived.setdefault(notice.case_id, at)
                    self.event.set()
                ack = sign(self.key, BANK, delivery_pb2.AckBody(sequences=[item.sequence]), now())
                await call.write(delivery_pb2.StreamDeliveriesRequest(envelope=ack))

    async def until(self, case_id: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while case_id not in self.arrived:
            self.event.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no order for {case_id} on {self.hub.target}")
            await asyncio.wait_for(self.event.wait(), left)
        return self.arrived[case_id]

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def measure(
    a: Hub, b: Hub, keys: dict[str, PrivateKey], args: argparse.Namespace, say: Any
) -> tuple[Path_, Path_]:
    async with aio_channel(a, CENTRE) as ch:
        rule = order_pb2.AutoStopRule(rule_id="BENCH", enabled=True, max_amount_fen=10_000_000)
        await order_pb2_grpc.OrderServiceStub(ch).SetAutoStopRule(
            order_pb2.SetAutoStopRuleRequest(envelope=sign(keys[CENTRE], CENTRE, rule, now()))
        )
    same, other = Path_("same replica"), Path_("another replica")
    async with aio_channel(a, REPORTER) as ch:
        cases = case_pb2_grpc.CaseServiceStub(ch)
        case_ids = []
        for _ in range(args.stops * 2):
            body = mule_report(REPORTER, BANK, now())
            answer = await cases.CreateReport(
                case_pb2.CreateReportRequest(envelope=sign(keys[REPORTER], REPORTER, body, now()))
            )
            case_ids.append(case_pb2.Case.FromString(answer.envelope.body).case_id)
        say(f"{len(case_ids)} cases open")
        block = max(1, args.stops // 4)
        for start in range(0, len(case_ids), block):
            path = same if (start // block) % 2 == 0 else other
            stream = Stream(a if path is same else b, keys[BANK])
            await asyncio.wait_for(stream.opened.wait(), 30)
            await asyncio.sleep(0.5)  # what was waiting for the bank has gone out
            try:
                for case_id in case_ids[start : start + block]:
                    verification = case_pb2.Verification(
                        case_id=case_id, outcome=case_pb2.VERIFICATION_OUTCOME_CONFIRMED
                    )
                    await cases.VerifyReport(
                        case_pb2.VerifyReportRequest(
                            envelope=sign(keys[REPORTER], REPORTER, verification, now())
                        )
                    )
                    answered = time.time()
                    arrived = await stream.until(case_id, 30)
                    path.latencies.append(arrived - answered)
                    await asyncio.sleep(args.gap)
            finally:
                await stream.close()
    return same, other


@contextlib.contextmanager
def fresh_database() -> Iterator[tuple[Path, str, dict[str, PrivateKey], PrivateKey]]:
    """A directory, a fresh PostgreSQL database with the members registered, their keys and
    a hub key; a data keyring in the environment meanwhile."""
    base = next(os.environ[v] for v in PG_VARS if os.environ.get(v))
    with (
        tempfile.TemporaryDirectory(prefix="stophub-bench-replicas-") as tmp_name,
        keyring_in(Path(tmp_name)),
        postgres_database(base) as url,
    ):
        yield Path(tmp_name), url, register_members(url), PrivateKey.generate()


def run(args: argparse.Namespace, say: Callable[[str], None]) -> tuple[Path_, Path_]:
    with fresh_database() as (tmp, url, keys, hub_key):
        hubs = []
        for name in ("a", "b"):
            home = tmp / name
            home.mkdir()
            save_private_key(hub_key, home / "hub.key")
            hub = Hub(home, url, DEFAULT_POLICY)
            hub.pki_dir = tmp / "a" / "pki"  # one network CA for both
            hubs.append(hub)
        try:
            for hub in hubs:
                hub.start()
            say("two hubs serving on one PostgreSQL database")
            return asyncio.run(measure(hubs[0], hubs[1], keys, args, say))
        finally:
            for hub in hubs:
                if hub.proc is not None and hub.proc.poll() is None:
                    hub.kill()


CLIENTS = 4


def reports_handled(metrics_address: str) -> float:
    with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=10) as page:
        text = page.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "stophub_rpc_handled_total"
        and sample.labels.get("method") == "/stophub.v1.CaseService/CreateReport"
    )


def intake(args: argparse.Namespace, workers: int, say: Callable[[str], None]) -> float:
    """Reports answered per second by `serve --workers N` on a fresh PostgreSQL database."""
    with fresh_database() as (tmp, url, keys, hub_key):
        save_private_key(hub_key, tmp / "hub.key")
        hub = Hub(tmp, url, DEFAULT_POLICY)
        hub.extra = ["--workers", str(workers)]
        hub.start()
        try:
            server = Server(hub.target, hub.tls(SENDER))
            c, seconds = args.intake_concurrency, args.intake_seconds
            kwargs: dict[str, Any] = {"echo": False, "hub_public_key": hub_key.public_key}
            # One connection per client process: enough of them that the kernel's spread
            # (by each connection's address and port) reaches every worker.
            n = CLIENTS
            drive(server, sign_reports(keys[SENDER], 200 * c), c, PROBE_SECONDS, n, **kwargs)
            run = drive(server, sign_reports(keys[SENDER], 600 * seconds), c, seconds, n, **kwargs)
            if run.errors:
                raise RuntimeError(f"--workers {workers}: {run.problems[:3]}")
            host, port = hub.metrics.rsplit(":", 1)
            split = [round(reports_handled(f"{host}:{int(port) + i}")) for i in range(workers)]
            say(
                f"intake, --workers {workers}, {c} in flight: {run.rate:,.0f} reports/s "
                f"(reports by worker, warm-up included: {split})"
            )
            return run.rate
        finally:
            if hub.proc is not None and hub.proc.poll() is None:
                hub.proc.terminate()
                hub.proc.wait(timeout=60)


def rows(args: argparse.Namespace) -> list[Row]:
    for name, value in DEFAULTS.items():  # `python -m bench` does not set them
        setattr(args, name, getattr(args, name, value))

    def say(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] replicas: {message}", file=sys.stderr, flush=True)

    if args.no_postgres or not any(os.environ.get(v) for v in PG_VARS):
        say("skipped: PostgreSQL only (set STOPHUB_BENCH_DATABASE_URL)")
        return []
    same, other = run(args, say)
    for path in (same, other):
        ms = [x * 1e3 for x in path.latencies]
        say(
            f"{path.label}: {len(ms)} stops, p50 {pct(ms, 50):.1f} ms, p90 {pct(ms, 90):.1f} ms, "
            f"p99 {pct(ms, 99):.1f} ms, max {max(ms):.1f} ms"
        )
    out = []
    for p in (50, 99):
        value = pct(other.latencies, p) * 1e3
        out.append(
            Row(
                "replicas",
                f"answer → order on the bank's stream, bank on another replica, p{p}, "
                f"PostgreSQL, {len(other.latencies)} stops",
                value,
                "ms",
                "bank on the same replica",
                pct(same.latencies, p) * 1e3,
                False,
                f"p99 ≤ {TARGET_MS:g} ms" if p == 99 else "",
                value <= TARGET_MS if p == 99 else None,
            )
        )
    if args.intake_seconds:
        one, two = intake(args, 1, say), intake(args, 2, say)
        cores = os.cpu_count() or 0
        out.append(
            Row(
                "replicas",
                f"intake, serve --workers 2, PostgreSQL, {args.intake_concurrency} in flight, "
                f"{cores}-core machine (clients on it too)",
                two,
                "reports/s",
                "serve --workers 1",
                one,
                True,
                "≥ 1.5× (recorded)",
                two >= 1.5 * one,
            )
        )
    return out


DEFAULTS: dict[str, Any] = {
    "stops": 60,
    "gap": 0.05,
    "intake_seconds": 10,
    "intake_concurrency": 16,
    "no_postgres": False,
}


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.replicas", description=__doc__.split("\n")[0])
    p.add_argument("--stops", type=int, default=DEFAULTS["stops"], help="per path")
    p.add_argument("--gap", type=float, default=DEFAULTS["gap"], help="seconds between stops")
    p.add_argument("--intake-seconds", type=int, default=DEFAULTS["intake_seconds"])
    p.add_argument("--intake-concurrency", type=int, default=DEFAULTS["intake_concurrency"])
    p.add_argument("--no-postgres", action="store_true")
    return p.parse_args(argv)


if __name__ == "__main__":
    from bench.table import render

    print(render(rows(parse(sys.argv[1:]))))
