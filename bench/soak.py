"""Soak: a real `stophub serve` under steady mixed load; does its memory or fd count grow?

`python -m bench.soak --minutes 10` (or `make soak`). The hub is a child process on a SQLite
file, started the way the end-to-end tests start it (tests/e2e/test_restart.py's `Hub`:
whatever `serve` needs, TLS material included, comes from there) with data keys made as an
operator makes them. The load, from this process, all over gRPC with the SDK:

- two banks each report (rate per bank per second: --rate), verify three reports in four
  under the centre's standing auto-stop rule (the fourth stays open so its verify clock
  reminds, breaches and escalates: the sweep fires all through the run), read the case back
  (GetCase) and its clocks (ListClocks);
- the mule's bank answers each stop order with a BankAgent over its delivery stream (acks);
- the centre and the regulator read their streams and acknowledge everything; the centre
  reads one page of open clocks every second.

Every few seconds (--sample-seconds) the hub process's resident memory, open file
descriptors and threads are read from /proc. The table shows them over time with the
request rate, latency and errors of each interval; the verdict fits a line through the
second half of the samples and compares its growth with the first half's level.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.bank.agent import BankAgent
from adapters.corebank.simulated import SimulatedCoreBank
from adapters.sdk import HubClient, HubError
from hub.crypto import fields
from hub.crypto.keys import PrivateKey, save_private_key
from hub.system.clock import SystemClock
from hub.system.policy import DEFAULT_POLICY
from stophub.v1 import case_pb2, order_pb2, sla_pb2
from tests.e2e.test_crash import mule_report
from tests.e2e.test_restart import Hub, register_members
from tests.e2e.wire_helpers import MULE

BANKS = {"BANKA": "BANKB", "BANKB": "BANKA"}  # reporter -> the bank holding the mule account
READERS = ("CENTRE", "REG")  # stream readers that acknowledge everything
VERIFY_EVERY = (0, 1, 2)  # of each four reports, these are verified; the fourth stays open
MAX_IN_FLIGHT = 16  # flows per bank at once; beyond that the bank waits (no unbounded queue)


# ---- measurements --------------------------------------------------------------------------


@dataclass
class Sample:
    at: float  # seconds since the load started
    rss_kib: int
    fds: int
    threads: int
    db_bytes: int
    requests: int  # cumulative
    errors: int  # cumulative
    latencies: list[float]  # of the requests finished since the previous sample


def proc_status(pid: int) -> tuple[int, int, int]:
    """(resident KiB, open fds, threads) of `pid`, from /proc (Linux)."""
    rss = threads = 0
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd")), threads


def database_size(db_file: Path) -> int:
    """The SQLite file and its write-ahead log."""
    wal = Path(f"{db_file}-wal")
    return db_file.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


@dataclass
class Stats:
    requests: int = 0
    errors: int = 0
    transient: int = 0
    latencies: list[float] = field(default_factory=list)
    by_kind: dict[str, int] = field(default_factory=dict)

    def take_latencies(self) -> list[float]:
        taken, self.latencies = self.latencies, []
        return taken


class Load:
    """The clients, their agents and their loops."""

    def __init__(self, hub: Hub, keys: dict[str, PrivateKey], hub_key: PrivateKey) -> None:
        self.hub = hub
        self.stats = Stats()
        self.stop = asyncio.Event()
        clock = SystemClock()
        self.clients = {
            code: HubClient(
                hub.target,
                institution=code,
                key=keys[code],
                hub_public_key=hub_key.public_key,
                clock=clock,
                tls=hub.tls(code),
            )
            for code in (*BANKS, *READERS)
        }
        self.cores = {code: SimulatedCoreBank(code, clock.now) for code in BANKS}
        for core in self.cores.values():
            core.open_account(MULE.account_number, MULE.holder_name, 100_000_000)
        self.agents = [BankAgent(self.clients[code], self.cores[code]) for code in BANKS]
        self.tasks: list[asyncio.Task[Any]] = []
        self.flows = 0

    async def send(self, code: str, method: str, body: Any) -> Any:
        """Sign once; resend the same bytes after a transient failure (as the SDK says)."""
        client = self.clients[code]
        envelope = client.seal(body)
        while True:
            started = time.monotonic()
            try:
                _, answer = await client.send(method, envelope)
            except HubError as err:
                self.stats.errors += 1
                if not err.transient or self.stop.is_set():
                    raise
                self.stats.transient += 1
                await asyncio.sleep(0.2)
                continue
            self.stats.requests += 1
            self.stats.by_kind[method] = self.stats.by_kind.get(method, 0) + 1
            self.stats.latencies.append(time.monotonic() - started)
            return answer

    async def flow(self, code: str, n: int) -> None:
        now = self.clients[code].clock.now()
        case = await self.send(code, "CreateReport", mule_report(code, BANKS[code], now))
        if n % 4 in VERIFY_EVERY:
            confirm = case_pb2.Verification(
                case_id=case.case_id, outcome=case_pb2.VERIFICATION_OUTCOME_CONFIRMED
            )
            await self.send(code, "VerifyReport", confirm)
        await self.send(code, "GetCase", case_pb2.GetCaseBody(case_id=case.case_id))
        await self.send(code, "ListClocks", sla_pb2.ListClocksBody(case_id=case.case_id))

    async def bank(self, code: str, rate: float) -> None:
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        running: set[asyncio.Task[None]] = set()
        n = 0
        while not self.stop.is_set():
            await slots.acquire()

            async def one(n: int = n) -> None:
                try:
                    await self.flow(code, n)
                except HubError:
                    pass  # counted in stats.errors
                finally:
                    slots.release()

            task = asyncio.create_task(one())
            running.add(task)
            task.add_done_callback(running.discard)
            n += 1
            self.flows += 1
            # Poisson arrivals: steady on average, bursty in detail, like real reports.
            await asyncio.sleep(random.expovariate(rate))
        await asyncio.gather(*running, return_exceptions=True)

    async def reader(self, code: str) -> None:
        stream = self.clients[code].deliveries("soak")
        async for delivery in stream:
            await stream.ack(delivery.sequence)

    async def centre_reads(self) -> None:
        while not self.stop.is_set():
            body = sla_pb2.ListClocksBody(open_only=True, page_size=50)
            await self.send("CENTRE", "ListClocks", body)
            await asyncio.sleep(1.0)

    async def start(self, rate: float) -> None:
        await self.send(
            "CENTRE",
            "SetAutoStopRule",
            order_pb2.AutoStopRule(rule_id="SOAK", enabled=True, max_amount_fen=10_000_000),
        )
        self.tasks += [asyncio.create_task(agent.run()) for agent in self.agents]
        self.tasks += [asyncio.create_task(self.reader(code)) for code in READERS]
        self.tasks.append(asyncio.create_task(self.centre_reads()))
        self.tasks += [asyncio.create_task(self.bank(code, rate)) for code in BANKS]

    async def close(self) -> None:
        self.stop.set()
        for agent in self.agents:
            await agent.stop()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for client in self.clients.values():
            await client.close()


# ---- the run ---------------------------------------------------------------------------------


def data_keys(directory: Path) -> None:
    """Personal data is sealed at rest: this process (which registers the members) and the hub
    it starts need a keyring. Made as an operator makes one, unless the environment names one."""
    if not (os.environ.get(fields.ENV_FILE) or os.environ.get(fields.ENV_KEYS)):
        path = directory / "data-keys.json"
        fields.Keyring.generate().save(path)
        os.environ[fields.ENV_FILE] = str(path)
    fields.configure(fields.resolve_keyring())


async def soak(
    directory: Path, minutes: float, rate: float, every: float, say: Callable[[str], None]
) -> tuple[list[Sample], Load, Hub]:
    data_keys(directory)
    hub_key = PrivateKey.generate()
    save_private_key(hub_key, directory / "hub.key")
    db_file = directory / "hub.db"
    db_url = f"sqlite:///{db_file}"
    keys = register_members(db_url)
    hub = Hub(directory, db_url, DEFAULT_POLICY)
    hub.start()
    assert hub.proc is not None
    pid = hub.proc.pid
    say(f"hub pid {pid} serving on {hub.target} (mutual TLS), database {db_file}")
    load = Load(hub, keys, hub_key)
    samples: list[Sample] = []
    try:
        await load.start(rate)
        started = time.monotonic()
        end = started + minutes * 60
        next_at = started
        while True:
            rss, fds, threads = proc_status(pid)
            if hub.proc.poll() is not None:
                raise RuntimeError(f"the hub exited:\n{hub.output()[-3000:]}")
            samples.append(
                Sample(
                    time.monotonic() - started,
                    rss,
                    fds,
                    threads,
                    database_size(db_file),
                    load.stats.requests,
                    load.stats.errors,
                    load.stats.take_latencies(),
                )
            )
            if len(samples) % max(1, round(60 / every)) == 1:
                s = samples[-1]
                say(
                    f"{s.at / 60:5.1f} min: RSS {s.rss_kib / 1024:.1f} MiB, {s.fds} fds, "
                    f"{s.threads} threads, {s.requests:,} requests, {s.errors} errors"
                )
            if time.monotonic() >= end:
                break
            next_at += every
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    finally:
        await load.close()
        if hub.proc.poll() is None:
            hub.kill()
    return samples, load, hub


# ---- the verdict ------------------------------------------------------------------------------


def fit(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 0.0 if var == 0 else sum((x - mx) * (y - my) for x, y in points) / var


@dataclass(frozen=True)
class Trend:
    name: str
    unit: str
    first_level: float  # mean over the first half
    first_max: float
    second_level: float
    second_max: float
    slope_per_min: float  # of the line fitted through the second half
    growth: float  # that line's rise over the second half
    grows: bool


def trend(
    name: str,
    unit: str,
    samples: Sequence[Sample],
    value: Callable[[Sample], float],
    tolerance: Callable[[float], float],
) -> Trend:
    half = len(samples) // 2
    first, second = samples[:half], samples[half:]
    slope = fit([(s.at / 60, value(s)) for s in second])
    span = (second[-1].at - second[0].at) / 60
    first_level = statistics.fmean(value(s) for s in first)
    growth = slope * span
    return Trend(
        name,
        unit,
        first_level,
        max(value(s) for s in first),
        statistics.fmean(value(s) for s in second),
        max(value(s) for s in second),
        slope,
        growth,
        growth > tolerance(first_level),
    )


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def render(samples: Sequence[Sample], rows_every: float, load: Load) -> tuple[str, list[Trend]]:
    out = [
        "| time | hub RSS | open fds | threads | database (+WAL) | requests in interval | "
        "requests/s | latency p50 | p99 | errors (total) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    last_row = samples[0]
    out.append(
        f"| start | {last_row.rss_kib / 1024:.1f} MiB | {last_row.fds} | {last_row.threads} | "
        f"{last_row.db_bytes / 2**20:.1f} MiB | | | | | |"
    )
    pending: list[float] = []
    for s in samples[1:]:
        pending += s.latencies
        if s.at - last_row.at < rows_every - 1e-6 and s is not samples[-1]:
            continue
        done = s.requests - last_row.requests
        span = s.at - last_row.at
        out.append(
            f"| {s.at / 60:.1f} min | {s.rss_kib / 1024:.1f} MiB | {s.fds} | {s.threads} | "
            f"{s.db_bytes / 2**20:.1f} MiB | {done:,} | "
            f"{(done / span if span > 0 else 0):.1f} | {percentile(pending, 50) * 1000:.0f} ms | "
            f"{percentile(pending, 99) * 1000:.0f} ms | {s.errors} |"
        )
        last_row, pending = s, []
    trends = [
        # Resident memory may wobble with the allocator: growth under 3% of the first half's
        # level (and under 2 MiB) over the second half counts as flat.
        trend("hub RSS", "MiB", samples, lambda s: s.rss_kib / 1024, lambda v: max(0.03 * v, 2.0)),
        # A rise under 3 descriptors is the database pool reaching a new high-water mark (a
        # SQLite connection holds its database and WAL files), not a leak: one descriptor
        # lost per thousand requests would add about five over a ten-minute run's half.
        trend("open fds", "", samples, lambda s: s.fds, lambda v: 2.99),
        trend("threads", "", samples, lambda s: s.threads, lambda v: 0.99),
    ]
    out += [
        "",
        "| measure | first half: mean / max | second half: mean / max | "
        "second-half fit: slope per min / rise over the half | verdict |",
        "|---|---|---|---|---|",
    ]
    for t in trends:
        u = f" {t.unit}" if t.unit else ""
        out.append(
            f"| {t.name} | {t.first_level:.1f} / {t.first_max:.1f}{u} | "
            f"{t.second_level:.1f} / {t.second_max:.1f}{u} | "
            f"{t.slope_per_min:+.2f}{u} / {t.growth:+.2f}{u} | "
            f"{'GROWS' if t.grows else 'flat'} |"
        )
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(load.stats.by_kind.items()))
    answered = sum(len(a.answered) for a in load.agents)
    out += [
        "",
        f"Requests answered: {load.stats.requests:,} ({kinds}); orders answered by the banks' "
        f"agents: {answered:,}; errors: {load.stats.errors} ({load.stats.transient} transient, "
        "resent).",
    ]
    return "\n".join(out), trends


def sweeps_fired(db_file: Path) -> dict[str, int]:
    with sqlite3.connect(db_file) as conn:
        rows = conn.execute(
            "SELECT event, count(*) FROM sla_log GROUP BY event ORDER BY event"
        ).fetchall()
    return {str(event): int(n) for event, n in rows}


def machine() -> str:
    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in info if line.startswith("model name")),
                "",
            )
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu or platform.processor()}), Python "
        f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}, {platform.system()} "
        f"{platform.release()}"
    )


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=2.0, help="reports per second per bank")
    p.add_argument("--sample-seconds", type=float, default=5.0)
    p.add_argument("--rows-every", type=float, default=30.0, help="seconds per table row")
    p.add_argument("--dir", type=Path, help="keep the hub's files here (default: a temp dir)")
    return p.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = parse(argv)

    def say(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    began = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="stophub-soak-") as tmp:
        directory = args.dir or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        samples, load, _ = asyncio.run(
            soak(directory, args.minutes, args.rate, args.sample_seconds, say)
        )
        fired = sweeps_fired(directory / "hub.db")
    table, trends = render(samples, args.rows_every, load)
    print()
    print(
        f"Soak {began:%Y-%m-%d %H:%M}–{datetime.now(UTC):%H:%M} UTC, {args.minutes:g} min, "
        f"{args.rate:g} reports/s per bank; {machine()}"
    )
    print()
    print(table)
    print(f"SLA log of the run: {', '.join(f'{k} {v:,}' for k, v in fired.items())}.")
    grows = [t.name for t in trends if t.grows]
    print()
    print(f"verdict: {'GROWS: ' + ', '.join(grows) if grows else 'no growth'}")
    return 1 if grows or load.stats.errors > load.stats.transient else 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
