"""Run the benchmarks, print ONE table: `python -m bench [clocks] [intake] [delivery] [...]`.

With no names, every benchmark runs (`make bench`). Each figure is printed beside a baseline
measured in the same run, as a ratio (bench/table.py). `--quick` shortens every benchmark to
a smoke run (minutes, not the hour the full clock run takes); PostgreSQL runs too when
STOPHUB_BENCH_DATABASE_URL or STOPHUB_TEST_DATABASE_URL is set (`--no-postgres` skips it).

- clocks (bench/clocks.py): case-clock sweep lateness, idle sweep cost, outage recovery; its
  own detailed tables are printed as it finishes, its headline figures go in the table;
- intake (bench/intake.py): signed reports per second, p50 and p99, against a bare grpc.aio
  echo with the same bytes and concurrency;
- reportcpu (bench/reportcpu.py): a CreateReport's CPU in process, without gRPC, against the
  database driver alone sending the same statements: how much of a report is Python above
  the driver;
- delivery (bench/delivery.py, when present): its own rows;
- replicas (bench/replicas.py, PostgreSQL only): from the reporting bank's answer to the stop
  order on the payee bank's stream with the bank on another `serve` process, against the bank
  on the same one; intake with `serve --workers 2` against one process;
- blacklist (bench/blacklist.py): a 1,000,000-entry list: a replica's full sync, publication to
  a following replica, CheckList and the replica's local lookups, against bare grpc.aio and
  sqlite3 baselines;
- audit (bench/audit.py): verifying a 1,000,000-entry audit log and the cost of an inclusion
  proof, against the same hashing from memory;
- console (bench/console.py): with 10,000 open cases, the centre console's queue and case
  pages against the same gRPC reads done bare, and an order's way to a member's open browser;
- failover (bench/failover.py): a hub replica SIGKILLed under a streaming member, again and
  again: seconds until deliveries flow again at the member, lost and acted-twice counts,
  against a bare gRPC channel over the same addresses (PostgreSQL only);
- outcomes (bench/outcomes.py): the outcome report over a year of 100,000 simulated cases, by
  month and by day, against COUNTs of the same rows;
- sm2 (bench/sm2.py): SM2-with-SM3 signatures and verifications per second against Ed25519,
  and intake with sm2-sm3 envelopes against intake with Ed25519, in the same run.
- warnings (bench/warning_delivery.py): a centre sending 1,000 warnings a minute to 100 members on
  their delivery streams: send → arrival p50 / p99, against bare grpc.aio delivery at the same
  rate in the same run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Callable, Sequence

from bench import (
    audit,
    blacklist,
    clocks,
    console,
    failover,
    intake,
    outcomes,
    replicas,
    reportcpu,
    sm2,
    warning_delivery,
)
from bench.table import Row, exit_on_sigterm, render

NAMES = (
    "clocks",
    "intake",
    "reportcpu",
    "delivery",
    "replicas",
    "blacklist",
    "audit",
    "console",
    "failover",
    "outcomes",
    "sm2",
    "warnings",
)
QUICK_CLOCKS = {
    "clocks": 2_000,
    "span_seconds": 120.0,
    "ticks": [0.5],
    "slice_seconds": 120.0,
    "repeats": 200,
}


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---- clocks: its Reports as Rows ------------------------------------------------------------


def clock_rows(args: argparse.Namespace) -> list[Row]:
    defaults = vars(clocks.parse([]))
    for name, value in defaults.items():
        if getattr(args, name, None) is None:
            setattr(args, name, QUICK_CLOCKS.get(name, value) if args.quick else value)
    reports = [clocks.run_database("SQLite", clocks.sqlite_database, args, say)]
    base = next((os.environ[v] for v in clocks.PG_VARS if os.environ.get(v)), None)
    if base and not args.no_postgres:
        label = f"PostgreSQL {clocks.postgres_version(base).split()[0]}"
        reports.append(
            clocks.run_database(label, lambda: clocks.postgres_database(base), args, say)
        )
    print()
    print(clocks.render(reports, args))
    print()
    rows = []
    for r in reports:
        for lat in r.lateness:
            p99 = clocks.percentile(lat.total, 99)
            rows.append(
                Row(
                    "clocks",
                    f"p99 lateness, {r.database}, sweep every {lat.tick:g} s, {lat.fired:,} steps",
                    p99 * 1e3,
                    "ms",
                    "the sweep interval",
                    lat.tick * 1e3,
                    False,
                    "p99 < 1 s",
                    p99 < 1,
                )
            )
        if r.idle and r.baseline_select is not None:
            open_clocks, cost = r.idle[-1]
            per_k = cost.cpu / (open_clocks / 1000)
            rows.append(
                Row(
                    "clocks",
                    f"idle sweep CPU, {r.database}, {open_clocks:,} open clocks "
                    f"({per_k * 1e6:,.1f} µs per 1,000)",
                    cost.cpu * 1e6,
                    "µs",
                    "`SELECT 1` in a transaction",
                    r.baseline_select.cpu * 1e6,
                    False,
                    "≪ 1 ms per 1,000 open clocks",
                    per_k < 1e-3,
                )
            )
        if r.recovery is not None:
            rows.append(
                Row(
                    "clocks",
                    f"outage recovery, {r.database}, {r.recovery.steps:,} steps due",
                    r.recovery.rate,
                    "steps/s",
                )
            )
        if r.snapshot is not None:
            snap = r.snapshot
            rows.append(
                Row(
                    "clocks",
                    f"metrics snapshot (open and breached clocks by kind), {r.database}, "
                    f"{snap.clocks:,} clocks, {snap.open:,} open",
                    snap.cost.wall * 1e3,
                    "ms",
                    "the one GROUP BY over every clock it replaced",
                    snap.full_scan.wall * 1e3,
                    False,
                )
            )
    return rows


# ---- delivery: another module, maybe not there yet ----------------------------------------------


def delivery_rows(args: argparse.Namespace) -> list[Row]:
    try:
        delivery = importlib.import_module("bench.delivery")
    except ModuleNotFoundError as missing:
        if missing.name != "bench.delivery":
            raise
        say("delivery: skipped, bench/delivery.py is not there")
        return []
    rows: list[Row] = delivery.rows(args)
    return rows


RUNNERS: dict[str, Callable[[argparse.Namespace], list[Row]]] = {
    "clocks": clock_rows,
    "intake": intake.rows,
    "reportcpu": reportcpu.rows,
    "delivery": delivery_rows,
    "replicas": replicas.rows,
    "blacklist": blacklist.rows,
    "audit": audit.rows,
    "console": console.rows,
    "failover": failover.rows,
    "outcomes": outcomes.rows,
    "sm2": sm2.rows,
    "warnings": warning_delivery.rows,
}


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="clocks, intake, reportcpu, delivery, replicas, blacklist, audit, console, failover, "
        "outcomes, sm2, warnings (all)",
    )
    p.add_argument("--quick", action="store_true", help="a short smoke run of each benchmark")
    p.add_argument("--no-postgres", action="store_true")
    g = p.add_argument_group("clocks (defaults: bench/clocks.py's)")
    g.add_argument("--clocks", type=int)
    g.add_argument("--span-seconds", type=float)
    g.add_argument("--ticks", type=lambda s: [float(x) for x in s.split(",")])
    g.add_argument("--slice-seconds", type=float)
    g.add_argument("--repeats", type=int)
    intake.add_arguments(p)
    reportcpu.add_arguments(p)
    blacklist.add_arguments(p)
    audit.add_arguments(p)
    console.add_arguments(p)
    failover.add_arguments(p)
    outcomes.add_arguments(p)
    sm2.add_arguments(p)
    warning_delivery.add_arguments(p)
    args = p.parse_args(argv)
    unknown = [n for n in args.names if n not in NAMES]
    if unknown:
        p.error(f"no benchmark {', '.join(unknown)}: choose from {', '.join(NAMES)}")
    args.names = [n for n in NAMES if n in args.names] or list(NAMES)
    return args


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    exit_on_sigterm()
    rows: list[Row] = []
    for name in args.names:
        say(f"{name}: starting")
        rows += RUNNERS[name](args)
    print()
    print(render(rows))
    return 1 if any(r.met is False for r in rows if "INVALID" in r.measure) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
