"""failover: a hub replica SIGKILLed under a streaming member → deliveries flowing again.

Two `stophub serve` replicas on one PostgreSQL database (a throwaway one). A member (the
centre) streams its deliveries through the SDK given both addresses; a bank reports through
both, one report every `--failover-every` seconds, sending the same signed bytes again after a
transient failure, as docs/failover.md says. Again and again, the replica the stream is on
(read from each replica's `stophub_delivery_streams_connected`) is SIGKILLed and started
again on its address once the member has moved.

Per kill: seconds from the SIGKILL to the first delivery at the member of a report answered
after it ("flowing again"). Baseline, in the same kills: a bare grpc.aio channel over the
same two addresses (the SDK's target and options) asking Health.Check every 10 ms, until one
is answered: what gRPC's own failover costs before the SDK's stream and the reporter's resend
add theirs. At the end, every answered report must have reached the member once: `lost`
counts answered reports never delivered (30 s after the last), `acted twice` deliveries the
SDK handed the application twice.

`python -m bench failover [--failover-kills 20] [--failover-seconds 120]`; needs
STOPHUB_BENCH_DATABASE_URL or STOPHUB_TEST_DATABASE_URL (PostgreSQL), skipped without.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from adapters.sdk.client import _CHANNEL_OPTIONS, HubClient, HubError, tls_credentials
from adapters.sdk.failover import channel_target
from bench.clocks import PG_VARS, postgres_database
from bench.soak import data_keys
from bench.table import Row
from hub.crypto.keys import PrivateKey
from tests.e2e.test_failover import Member, replica_client, two_replicas
from tests.e2e.test_restart import Hub, register_members
from tests.e2e.wire_helpers import report

TARGET_P99 = 5.0
GIVE_UP = 30.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("failover")
    g.add_argument("--failover-kills", type=int, default=20, help="SIGKILLs (default 20)")
    g.add_argument(
        "--failover-seconds",
        type=float,
        default=120.0,
        help="stop killing after this long even if fewer kills were made (default 120)",
    )
    g.add_argument(
        "--failover-every",
        type=float,
        default=0.1,
        help="seconds between the bank's reports (default 0.1)",
    )


@dataclass
class Report:
    recoveries: list[float] = field(default_factory=list)
    bare: list[float] = field(default_factory=list)
    never: int = 0  # kills after which nothing flowed within GIVE_UP
    answered: int = 0
    lost: int = 0
    twice: int = 0
    reconnects: int = 0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def streams_on(hub: Hub) -> int:
    """The delivery streams open on `hub` now (0 when it does not answer)."""
    return int(hub.metric("stophub_delivery_streams_connected", unreachable=0))


class Reporter:
    """The bank: a report every `every` seconds, each resent unchanged until answered."""

    def __init__(self, client: HubClient, every: float) -> None:
        self.client = client
        self.every = every
        self.answered: dict[str, float] = {}
        self.resends = 0
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        n = 0
        while True:
            n += 1
            envelope = self.client.seal(report(datetime.now(UTC)), message_id=f"failover-{n}")
            while True:
                try:
                    _, case = await self.client.send("CreateReport", envelope)
                    break
                except HubError as err:
                    if not err.transient:
                        raise
                    self.resends += 1
                    await asyncio.sleep(0.05)
            self.answered[case.case_id] = time.monotonic()  # type: ignore[attr-defined]
            await asyncio.sleep(self.every)


async def bare_recovery(channel: grpc.aio.Channel, killed_at: float) -> float:
    stub = health_pb2_grpc.HealthStub(channel)
    while time.monotonic() - killed_at < GIVE_UP:
        try:
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            return time.monotonic() - killed_at
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.01)
    return GIVE_UP


async def measure(
    directory: Path, url: str, args: argparse.Namespace, tell: Callable[[str], None]
) -> Report:
    data_keys(directory)
    hub_key = PrivateKey.generate()
    keys = register_members(url)
    hubs = two_replicas(directory, url, hub_key)
    for hub in hubs:
        await asyncio.to_thread(hub.start)
    addresses = [h.target for h in hubs]

    def client(code: str) -> HubClient:
        return replica_client(hubs, code, keys[code], hub_key)

    probe = hubs[0].tls("PROBE")
    bare = grpc.aio.secure_channel(
        channel_target(addresses).target,
        tls_credentials(probe),
        options=[*_CHANNEL_OPTIONS, ("grpc.default_authority", addresses[0])],
    )
    centre, bank = client("CENTRE"), client("BANKA")
    member = Member(centre.deliveries("failover", initial_backoff=0.1, max_backoff=1.0))
    reporter = Reporter(bank, args.failover_every)
    out = Report()
    started = time.monotonic()
    try:
        await asyncio.wait_for(member.stream.connected.wait(), 30)
        while (
            len(out.recoveries) + out.never < args.failover_kills
            and time.monotonic() - started < args.failover_seconds
        ):
            # Settled: the stream is on one replica and reports reach it.
            await asyncio.sleep(0.5)
            counts = await asyncio.gather(*(asyncio.to_thread(streams_on, h) for h in hubs))
            if sum(counts) != 1:
                continue
            victim = hubs[counts.index(1)]
            killed_at = time.monotonic()
            baseline = asyncio.create_task(bare_recovery(bare, killed_at))
            await asyncio.to_thread(victim.kill)
            while True:
                after = [
                    member.arrived[c]
                    for c, t in list(reporter.answered.items())
                    if t > killed_at and c in member.arrived
                ]
                if after:
                    out.recoveries.append(min(after) - killed_at)
                    break
                if time.monotonic() - killed_at > GIVE_UP:
                    out.never += 1
                    break
                await asyncio.sleep(0.01)
            out.bare.append(await baseline)
            kills = len(out.recoveries) + out.never
            tell(
                f"failover: kill {kills}: flowing again after "
                f"{out.recoveries[-1] if out.recoveries else GIVE_UP:.2f} s "
                f"(bare channel {out.bare[-1]:.2f} s)"
            )
            await asyncio.to_thread(victim.start, same_address=True)
        reporter.task.cancel()
        for _ in range(int(GIVE_UP / 0.1)):  # until every answered report arrived
            if not set(reporter.answered) - set(member.arrived):
                break
            await asyncio.sleep(0.1)
        out.answered = len(reporter.answered)
        out.lost = len(set(reporter.answered) - set(member.arrived))
        out.twice = sum(1 for n in member.acts.values() if n > 1)
        out.reconnects = member.stream.reconnects
    finally:
        reporter.task.cancel()
        await member.stream.close()
        await centre.close()
        await bank.close()
        await bare.close(None)
        for hub in hubs:
            if hub.proc is not None and hub.proc.poll() is None:
                hub.kill()
    return out


def report_rows(r: Report) -> list[Row]:
    kills = len(r.recoveries) + r.never
    if not r.recoveries:
        return [Row("failover", f"INVALID: nothing flowed again after {kills} kills", 0, "")]
    p99 = percentile(r.recoveries, 99) if not r.never else GIVE_UP
    bare99 = percentile(r.bare, 99)
    met = p99 <= TARGET_P99 and r.lost == 0 and r.twice == 0
    return [
        Row(
            "failover",
            f"replica SIGKILLed → deliveries flowing again at the member, PostgreSQL, p99 of "
            f"{kills} kills (p50 {percentile(r.recoveries, 50):.2f} s, max "
            f"{max(r.recoveries):.2f} s; {r.answered:,} reports answered: {r.lost} lost, "
            f"{r.twice} acted twice)",
            p99 * 1e3,
            "ms",
            "a bare gRPC channel over the same addresses answering again, p99",
            bare99 * 1e3,
            False,
            "≤ 5 s p99, 0 lost, 0 acted twice",
            met,
        )
    ]


def rows(args: argparse.Namespace) -> list[Row]:
    def say(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    base = next((os.environ[v] for v in PG_VARS if os.environ.get(v)), None)
    if base is None or getattr(args, "no_postgres", False):
        say("failover: skipped, it needs PostgreSQL (STOPHUB_BENCH_DATABASE_URL)")
        return []
    if getattr(args, "quick", False):
        args.failover_kills = min(args.failover_kills, 3)
    with tempfile.TemporaryDirectory() as tmp, postgres_database(base) as url:
        result = asyncio.run(measure(Path(tmp), url, args, say))
    return report_rows(result)
