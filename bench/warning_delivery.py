"""Warnings: a centre sending 1,000 warnings a minute to 100 members on their delivery streams;
send → arrival on the member's stream, against the same run's bare delivery.

`python -m bench.warning_delivery` (options below; `python -m bench warnings` shows the same
rows in its table). Not bench/warnings.py: `python bench/fuzz_atheris.py` puts bench/ first
on the path, where a warnings.py would stand in for the standard library's `warnings`.

The hub is `stophub serve` as a child process with mutual TLS and sealed personal
data, set up as bench/delivery.py sets it up (its helpers are used here): 100 members
(`B0000` … `B0099`, a client certificate and an Ed25519 key each) and the centre registered
before the hub starts; client processes (`--workers`) hold the 100 streams, one mutual-TLS
channel each, and acknowledge every delivery with a signed AckBody.

**The load.** The centre signs SendWarning messages at `--per-minute` (1,000) a minute,
Poisson arrivals, `--warnings` in all, each about an account at a random one of the 100
members, red, yellow, green or ungraded in turn: each warning's commit queues one
NOTICE_KIND_WARNING to that member (and starts its two clocks).

**Latency.** Upper bound: arrival − the delivery's create_time (the `now` of the SendWarning,
taken before its commit: it includes the command's own work). Lower bound: arrival − the
moment the centre received the hub's answer (after the commit). And send → arrival: from the
moment the centre signed the request to the arrival, what a centre's duty desk sees.
Arrival = `time.time()` when the client's `read()` returns. One clock on this machine.

**Baseline, same run.** A bare grpc.aio server (no database, no signing) with the same TLS
material and client certificates, the same 100 streams held by the same client processes:
one message at a time to a random stream at the same rate, padded to the median size of the
hub's warning deliveries, from the moment the server queued it to arrival. The ratio is hub ÷
baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from adapters.sdk.client import tls_credentials
from bench.clocks import PG_VARS
from bench.delivery import (
    CENTRE,
    SEND_PATH,
    Clients,
    _baseline_process,
    code_of,
    cpu_seconds,
    database,
    issue_certificates,
    key_of,
    keyring_in,
    now_utc,
    pct,
    register,
    wait_for_arrivals,
)
from bench.table import Row
from hub.crypto.keys import PrivateKey, save_private_key
from hub.domain.institutions import InstitutionKind
from hub.system.policy import DEFAULT_POLICY
from stophub.v1 import account_pb2, warning_pb2, warning_pb2_grpc
from tests.e2e.test_restart import Hub, free_port
from tests.e2e.wire_helpers import sign

KIND = "NOTICE_KIND_WARNING"


@dataclass
class Report:
    database: str
    members: int
    sent: int = 0
    arrived: int = 0
    wall: float = 0.0
    cpu: float = 0.0  # hub CPU seconds per wall second while sending
    upper: list[float] = field(default_factory=list)  # arrival − create_time
    lower: list[float] = field(default_factory=list)  # arrival − answer received
    send_to_arrival: list[float] = field(default_factory=list)  # arrival − signed at the centre
    command: list[float] = field(default_factory=list)  # SendWarning send → answer
    size: int = 0
    base_upper: list[float] = field(default_factory=list)
    base_arrived: int = 0
    base_expected: int = 0
    base_size: int = 0


async def _send_at_rate(
    hub: Hub, banks: Sequence[str], count: int, per_second: float, rng: random.Random
) -> tuple[dict[str, tuple[float, float]], list[float]]:
    """SendWarning `count` times, Poisson arrivals; warning id → (signed at, answered at)."""
    times: dict[str, tuple[float, float]] = {}
    took: list[float] = []
    grades = (3, 2, 1, 0)
    async with grpc.aio.secure_channel(hub.target, tls_credentials(hub.tls(CENTRE))) as ch:
        stub = warning_pb2_grpc.WarningServiceStub(ch)
        pending: set[asyncio.Task[None]] = set()

        async def one(i: int) -> None:
            bank = rng.choice(banks)
            body = warning_pb2.SendWarningBody(
                account=account_pb2.AccountRef(
                    institution_code=bank, account_number=f"62220000{i:08d}", holder_name="Qian Qi"
                ),
                amount_at_risk_fen=100_000 + i,
                grade=grades[i % 4],  # type: ignore[arg-type]
                fraud_type=2,  # type: ignore[arg-type]
                text="customer on the phone with a fake broker",
            )
            started = time.time()
            env = sign(key_of(CENTRE), CENTRE, body, now_utc())
            answer = await stub.SendWarning(warning_pb2.SendWarningRequest(envelope=env))
            answered = time.time()
            warning = warning_pb2.Warning.FromString(answer.envelope.body)
            times[warning.warning_id] = (started, answered)
            took.append(answered - started)

        next_at = time.monotonic()
        for i in range(count):
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            task = asyncio.create_task(one(i))
            pending.add(task)
            task.add_done_callback(pending.discard)
            next_at += rng.expovariate(per_second)
        await asyncio.gather(*pending)
    return times, took


async def _baseline(
    target: str, hub: Hub, count: int, per_second: float, size: int, rng: random.Random
) -> None:
    async with grpc.aio.secure_channel(target, tls_credentials(hub.tls(CENTRE))) as ch:
        send = ch.unary_unary(SEND_PATH)
        next_at = time.monotonic()
        for _ in range(count):
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await send(f"one:{size}".encode())
            next_at += rng.expovariate(per_second)
        await asyncio.sleep(2)


def run(args: argparse.Namespace, kind: str, say: Any) -> Report:
    banks = [code_of(i) for i in range(args.members)]
    rng = random.Random(23)
    report = Report(kind, args.members)
    per_second = args.per_minute / 60
    with (
        tempfile.TemporaryDirectory(prefix="stophub-bench-warnings-") as tmp_name,
        keyring_in(Path(tmp_name)),
    ):
        tmp = Path(tmp_name)
        save_private_key(PrivateKey.generate(), tmp / "hub.key")
        hub = Hub(tmp, "", DEFAULT_POLICY)
        issue_certificates(hub.pki_dir, [*banks, CENTRE])
        with database(kind, tmp, "warnings") as url:
            members = {b: InstitutionKind.BANK for b in banks}
            members[CENTRE] = InstitutionKind.ANTI_FRAUD_CENTRE
            register(url, members)
            hub.db_url = url
            hub.start()
            assert hub.proc is not None
            pid = hub.proc.pid
            try:
                clients = Clients("hub", hub.target, hub.pki_dir, banks, args.workers)
                say(f"{kind}: {clients.ready} streams open")
                try:
                    time.sleep(2)
                    clients.take()
                    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
                    times, took = asyncio.run(
                        _send_at_rate(hub, banks, args.warnings, per_second, rng)
                    )
                    got = wait_for_arrivals(clients, len(times), KIND, 30)
                    report.wall = time.perf_counter() - t0
                    report.cpu = (cpu_seconds(pid) - cpu0) / report.wall
                    mine = [r for r in got if r[1] == KIND and r[2] in times]
                    report.sent, report.arrived, report.command = len(times), len(mine), took
                    report.upper = [r[3] - r[4] for r in mine]
                    report.lower = [r[3] - times[r[2]][1] for r in mine]
                    report.send_to_arrival = [r[3] - times[r[2]][0] for r in mine]
                    report.size = round(statistics.median(r[5] for r in mine)) if mine else 0
                    say(f"{kind}: {report.arrived} of {report.sent} warnings arrived")
                finally:
                    clients.close()
            finally:
                hub.kill()

        port = free_port()
        ctx = multiprocessing.get_context("spawn")
        server = ctx.Process(target=_baseline_process, args=(port, str(hub.pki_dir)))
        server.start()
        target = f"127.0.0.1:{port}"
        try:
            time.sleep(2)
            clients = Clients("baseline", target, hub.pki_dir, banks, args.workers)
            try:
                time.sleep(2)
                clients.take()
                asyncio.run(
                    _baseline(target, hub, args.warnings, per_second, report.size or 600, rng)
                )
                got = wait_for_arrivals(clients, args.warnings, "BASELINE", 30)
                report.base_expected = args.warnings
                report.base_arrived = len(got)
                report.base_upper = [r[3] - r[4] for r in got]
                report.base_size = round(statistics.median(r[5] for r in got)) if got else 0
            finally:
                clients.close()
        finally:
            server.kill()
            server.join(10)
    return report


def report_rows(r: Report) -> list[Row]:
    db = r.database
    rate = f"{r.sent / r.wall * 60:,.0f}/min" if r.wall else "?"
    base = f"grpc.aio fan-out, {r.members} TLS streams, {r.base_size} B, same rate"
    rows = []
    for p in (50, 99):
        value = pct(r.send_to_arrival, p) * 1e3
        rows.append(
            Row(
                "warnings",
                f"warning send→arrival p{p}, {db}, {r.members} streams, {rate}; "
                f"{r.arrived}/{r.sent} arrived",
                value,
                "ms",
                base,
                pct(r.base_upper, p) * 1e3,
                higher_is_better=False,
            )
        )
    rows.append(
        Row(
            "warnings",
            f"warning commit→arrival p99 (≤, from create_time), {db}",
            pct(r.upper, 99) * 1e3,
            "ms",
            base,
            pct(r.base_upper, 99) * 1e3,
            higher_is_better=False,
        )
    )
    rows.append(
        Row(
            "warnings",
            f"warning commit→arrival p99 (≥, from the answer at the centre), {db}",
            pct(r.lower, 99) * 1e3,
            "ms",
            base,
            pct(r.base_upper, 99) * 1e3,
            higher_is_better=False,
        )
    )
    rows.append(
        Row(
            "warnings",
            f"SendWarning send→answer p50 (p99 {pct(r.command, 99) * 1e3:.0f} ms), {db}; hub CPU "
            f"{r.cpu:.0%} of a core",
            pct(r.command, 50) * 1e3,
            "ms",
        )
    )
    return rows


def databases(args: argparse.Namespace) -> list[str]:
    kinds = ["SQLite"]
    if not args.no_postgres and any(os.environ.get(v) for v in PG_VARS):
        kinds.append("PostgreSQL")
    return kinds


DEFAULTS: dict[str, Any] = {
    "members": 100,
    "workers": 2,
    "per_minute": 1_000.0,
    "warnings": 2_000,
    "no_postgres": False,
}


def rows(args: argparse.Namespace) -> list[Row]:
    for name, value in DEFAULTS.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    if getattr(args, "quick", False):
        args.warnings = min(args.warnings, 300)

    def say(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] warnings: {message}", file=sys.stderr, flush=True)

    out: list[Row] = []
    for kind in databases(args):
        out += report_rows(run(args, kind, say))
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("warnings (bench/warning_delivery.py)")
    g.add_argument("--members", type=int, help=f"streaming members ({DEFAULTS['members']})")
    g.add_argument(
        "--per-minute", type=float, help=f"warnings a minute ({DEFAULTS['per_minute']:g})"
    )
    g.add_argument("--warnings", type=int, help=f"warnings in all ({DEFAULTS['warnings']:,})")


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.warning_delivery", description=__doc__.split("\n")[0]
    )
    add_arguments(p)
    p.add_argument("--workers", type=int, help="client processes (2)")
    p.add_argument("--no-postgres", action="store_true")
    p.add_argument("--quick", action="store_true", help="300 warnings")
    return p.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    from bench.table import render

    print(render(rows(parse(argv))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
