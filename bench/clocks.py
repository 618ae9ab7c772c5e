"""Case-clock sweep benchmark: how late steps fire, and what an idle sweep costs.

Setup: 100,000 open clocks (rows inserted in bulk through the store's engine), whose next
steps fall due at random over one hour of case time, on SQLite in a temporary file and, when
STOPHUB_BENCH_DATABASE_URL or STOPHUB_TEST_DATABASE_URL points at PostgreSQL, in a fresh
database there. A real Hub (hub.bootstrap.build_hub, the shipped policy) sweeps them as the
server's scheduler would: a ManualClock moves `tick` seconds of case time, then one sweep
runs, and so on through the hour.

Lateness of a fired step = (case time of the sweep - the step's due time), which the sweep
interval bounds, + the real time from the start of the sweep to the commit of the batch that
fired it. The idle sweep (nothing due) is timed with time.process_time (this process's CPU;
on PostgreSQL the server's own CPU is not in it, so wall time is shown too) against
baselines measured in the same run on the same engine: a bare `SELECT 1` round trip in a
transaction, and the sweep's indexed query on its own.

The clock mix (a quarter each), chosen so every clock fires exactly one step in the hour:
verify and stop_issue clocks at their escalation to the regulator (the last step; the clock
ends), investigate clocks at their reminder (next step hours later), release_unrelated clocks
at their breach (two recipients; next step days later). Expiring steps (stop validity,
freeze term), which also change the case, are not in the mix.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import create_engine, func, select, text, type_coerce

from bench import table
from hub.bootstrap import build_hub, ensure_hub_registered, migrate
from hub.crypto import fields
from hub.crypto.keys import PrivateKey
from hub.domain.clocks import ClockState
from hub.domain.institutions import InstitutionKind
from hub.observability.metrics import sql_snapshot
from hub.service.admin import Registry
from hub.service.pipeline import Hub
from hub.service.ports import PendingDelivery
from hub.service.sweep import Sweeper
from hub.store.sql import SqlStore, normalise_url
from hub.store.tables import UTCDateTime, cases, clocks, sla_log
from hub.system.clock import ManualClock
from hub.system.policy import load_policy
from tests.support import add_members, throwaway_database

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
STEPS = ("reminder", "breach", "regulator", "renewal_reminder", "expire")
MEMBERS = {
    "CENTRE": InstitutionKind.ANTI_FRAUD_CENTRE,
    "BANKA": InstitutionKind.BANK,
    "BANKB": InstitutionKind.BANK,
    "REG": InstitutionKind.REGULATOR,
}
PG_VARS = ("STOPHUB_BENCH_DATABASE_URL", "STOPHUB_TEST_DATABASE_URL")


# ---- the hub under test -------------------------------------------------------------------


class Quiet:
    def notify(self, recipients: Iterable[str], deliveries: Sequence[PendingDelivery] = ()) -> None:
        pass


class TimedSweeper(Sweeper):
    """The hub's Sweeper, noting when each batch committed and how many steps it fired."""

    def __init__(self, hub: Hub) -> None:
        super().__init__(hub)
        self.started = 0.0
        self.batches: list[tuple[float, int]] = []

    def sweep(self) -> int:
        self.batches = []
        self.started = time.perf_counter()
        return super().sweep()

    def _fire_batch(self) -> tuple[int, list[str]]:
        fired, expiring = super()._fire_batch()
        self.batches.append((time.perf_counter() - self.started, fired))
        return fired, expiring


@dataclass
class Bed:
    store: SqlStore
    hub: Hub
    clock: ManualClock
    sweeper: TimedSweeper
    inserted: int = 0

    def count_open(self) -> int:
        with self.store.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(clocks)
                    .where(clocks.c.state == ClockState.OPEN)
                ).scalar_one()
            )


def prepare(url: str) -> Bed:
    if fields.configured() is None:  # personal data is sealed at rest: a throwaway keyring
        fields.configure(fields.Keyring.generate())
    migrate(url)
    store = SqlStore(url)
    clock = ManualClock(T0)
    key = PrivateKey.generate()
    ensure_hub_registered(store, key, clock)
    add_members(Registry(store, clock), MEMBERS, supervisor=True)
    hub = build_hub(store, key, Quiet(), clock=clock, clock_policy=load_policy())
    sweeper = TimedSweeper(hub)
    hub.sweeper = sweeper
    return Bed(store, hub, clock, sweeper)


def clock_row(i: int, case_id: str, due: datetime) -> dict[str, Any]:
    """One open clock whose next step is due at `due`, and whose following step (if any)
    is more than an hour later."""
    kind = ("verify", "stop_issue", "investigate", "release_unrelated")[i % 4]
    row: dict[str, Any] = {
        "clock_id": f"KB{case_id[2:]}",
        "case_id": case_id,
        "order_id": "",
        "kind": kind,
        "state": ClockState.OPEN,
        "stopped_at": None,
        "stopped_by": "",
    }
    if kind == "verify":  # 5 min window; the regulator at 200%
        started = due - timedelta(minutes=10)
        row |= {"responsible": "BANKA", "deadline_at": started + timedelta(minutes=5)}
        row |= {"next_step": "regulator", "steps_done": 2, "breached": True}
    elif kind == "stop_issue":  # 10 min window; the regulator at 200%
        started = due - timedelta(minutes=20)
        row |= {"responsible": "CENTRE", "deadline_at": started + timedelta(minutes=10)}
        row |= {"next_step": "regulator", "steps_done": 2, "breached": True}
    elif kind == "investigate":  # 24 h window; the reminder at 80%
        started = due - timedelta(hours=24) * 0.8
        row |= {"responsible": "CENTRE", "deadline_at": started + timedelta(hours=24)}
        row |= {"next_step": "reminder", "steps_done": 0, "breached": False}
        row["order_id"] = f"{case_id}-O001"
    else:  # release_unrelated, 3 day window; the breach at 100%
        started = due - timedelta(days=3)
        row |= {"responsible": "BANKB", "deadline_at": due}
        row |= {"next_step": "breach", "steps_done": 1, "breached": False}
        row["order_id"] = f"{case_id}-O002"
    row |= {"started_at": started, "next_step_at": due}
    return row


def insert_clocks(
    bed: Bed, count: int, due_from: datetime, span: timedelta, seed: int, *, closed: bool = False
) -> None:
    """`count` open clocks (each with its case row), due uniformly over [due_from, +span);
    `closed`: a hub's history instead, clocks stopped long ago, one in fifty past its
    deadline."""
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:6].upper()
    chunk = 5_000
    with bed.store.engine.begin() as conn:
        for first in range(0, count, chunk):
            case_rows, clock_rows = [], []
            for i in range(first, min(count, first + chunk)):
                n = bed.inserted + i
                case_id = f"CB{run}{n:08d}"
                due = due_from + span * rng.random()
                clock = clock_row(n, case_id, due)
                if closed:
                    missed = n % 50 == 0
                    clock |= {
                        "state": ClockState.MISSED if missed else ClockState.MET,
                        "breached": missed,
                        "next_step_at": None,
                        "stopped_at": clock["started_at"],
                        "stopped_by": clock["responsible"],
                    }
                case_rows.append(
                    {
                        "case_id": case_id,
                        "reporting_institution": "BANKA",
                        "state": "reported",
                        "created_at": clock["started_at"],
                        "report_message_id": f"bench-{case_id}",
                        "victim_name": "Bench Victim",
                        "victim_id_number": "110101199001011234",
                        "victim_phone": "13800000000",
                        "fraud_type": "FRAUD_TYPE_IMPERSONATING_OFFICIALS",
                        "description": "benchmark case",
                        "verification_reason": "",
                    }
                )
                clock_rows.append(clock)
            conn.execute(cases.insert(), case_rows)
            conn.execute(clocks.insert(), clock_rows)
    bed.inserted += count
    if bed.store.is_sqlite:
        with bed.store.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
            conn.commit()
    else:
        with bed.store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")


# ---- measurements ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Lateness:
    tick: float
    total: list[float] = field(default_factory=list)
    case_part: list[float] = field(default_factory=list)
    processing: list[float] = field(default_factory=list)
    sweeps: int = 0
    sweep_seconds: float = 0.0
    driven: float = 0.0  # seconds of case time

    @property
    def fired(self) -> int:
        return len(self.total)


def drive(bed: Bed, until: datetime, tick: float) -> Lateness:
    """Move the clock `tick` at a time up to `until`, sweeping after each move, and note the
    lateness of every step fired."""
    result = Lateness(tick)
    last_id = _last_log_id(bed)
    step = timedelta(seconds=tick)
    while bed.clock.now() < until:
        bed.clock.advance(step)
        fired = bed.hub.sweep()
        result.sweeps += 1
        result.sweep_seconds += bed.sweeper.batches[-1][0] if bed.sweeper.batches else 0.0
        if not fired:
            continue
        with bed.store.read_engine.connect() as conn:
            rows = conn.execute(
                select(sla_log.c.id, sla_log.c.at, sla_log.c.due_at, sla_log.c.event)
                .where(sla_log.c.id > last_id)
                .order_by(sla_log.c.id)
            ).all()
        last_id = rows[-1].id
        steps = [r for r in rows if r.event in STEPS]
        if len(steps) != fired:
            raise AssertionError(f"the sweep said {fired} fired, the SLA log has {len(steps)}")
        it = iter(steps)
        for elapsed, count in bed.sweeper.batches:
            for _ in range(count):
                r = next(it)
                case_part = (r.at - r.due_at).total_seconds()
                result.case_part.append(case_part)
                result.processing.append(elapsed)
                result.total.append(case_part + elapsed)
    return result


def _last_log_id(bed: Bed) -> int:
    with bed.store.read_engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.max(sla_log.c.id), 0))).scalar_one())


@dataclass
class Cost:
    cpu: float  # seconds of this process's CPU per call
    wall: float  # seconds per call


def timed(fn: Callable[[], object], repeats: int) -> Cost:
    for _ in range(max(10, repeats // 10)):  # warm the pool and caches
        fn()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(repeats):
        fn()
    return Cost((time.process_time() - cpu) / repeats, (time.perf_counter() - wall) / repeats)


def idle_sweep(bed: Bed, repeats: int) -> Cost:
    def sweep() -> None:
        if bed.hub.sweep():
            raise AssertionError("the idle sweep fired something")

    return timed(sweep, repeats)


def select_one(bed: Bed, repeats: int) -> Cost:
    """A bare round trip in a transaction on the sweep's engine (on SQLite that transaction
    is BEGIN IMMEDIATE, as the sweep's is)."""

    def once() -> None:
        with bed.store.engine.connect() as conn:
            conn.execute(text("SELECT 1")).scalar_one()

    return timed(once, repeats)


def empty_due_query(bed: Bed, repeats: int) -> Cost:
    """The sweep's indexed query on its own (Core, no ORM, no row lock), finding nothing."""
    now = bed.clock.now()
    stmt = (
        select(clocks.c.clock_id)
        .where(
            clocks.c.state == ClockState.OPEN,
            clocks.c.next_step_at.is_not(None),
            clocks.c.next_step_at <= type_coerce(now, UTCDateTime()),
        )
        .order_by(clocks.c.next_step_at)
        .limit(200)
    )

    def once() -> None:
        with bed.store.engine.connect() as conn:
            if conn.execute(stmt).first() is not None:
                raise AssertionError("something is due")

    return timed(once, repeats)


def due_query_plan(bed: Bed) -> str:
    now = bed.clock.now().astimezone(UTC)
    with bed.store.engine.connect() as conn:
        if bed.store.is_sqlite:
            rows = conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT clock_id FROM clocks WHERE state = 'open' AND "
                "next_step_at IS NOT NULL AND next_step_at <= ? ORDER BY next_step_at "
                "LIMIT 200",
                (now.replace(tzinfo=None).isoformat(sep=" "),),
            ).all()
            return "; ".join(str(r[-1]) for r in rows)
        rows = conn.exec_driver_sql(
            "EXPLAIN SELECT clock_id FROM clocks WHERE state = 'open' AND next_step_at IS NOT "
            "NULL AND next_step_at <= %(now)s ORDER BY next_step_at LIMIT 200 "
            "FOR UPDATE SKIP LOCKED",
            {"now": now},
        ).all()
        return " / ".join(str(r[0]).strip() for r in rows)


@dataclass
class Backlog:
    steps: int
    seconds: float
    outage: float

    @property
    def rate(self) -> float:
        return self.steps / self.seconds if self.seconds else float("nan")


def backlog(bed: Bed, outage: timedelta, rate_per_second: float) -> Backlog:
    """Steps that fell due during an outage (at the steady rate), fired by the first sweep."""
    count = round(rate_per_second * outage.total_seconds())
    now = bed.clock.now()
    insert_clocks(bed, count, now - outage, outage, seed=7)
    started = time.perf_counter()
    fired = bed.hub.sweep()
    seconds = time.perf_counter() - started
    if fired != count:
        raise AssertionError(f"{fired} of {count} backlog steps fired in one sweep")
    return Backlog(fired, seconds, outage.total_seconds())


@dataclass
class Snapshot:
    clocks: int  # every clock row
    open: int
    cost: Cost  # hub.observability.metrics.sql_snapshot, what a scrape reads
    full_scan: Cost  # the one GROUP BY over every clock it replaced


def metrics_snapshot(bed: Bed, history: int, repeats: int) -> Snapshot:
    """The metrics snapshot over `history` closed clocks (one in fifty breached) besides the
    open ones, against the single GROUP BY over every clock that it was before."""
    insert_clocks(bed, history, T0 - timedelta(days=400), timedelta(days=365), 9, closed=True)
    read = sql_snapshot(bed.store)
    full = select(clocks.c.kind, clocks.c.state, clocks.c.breached, func.count()).group_by(
        clocks.c.kind, clocks.c.state, clocks.c.breached
    )

    def full_scan() -> None:
        with bed.store.engine.connect() as conn:
            conn.execute(full).all()

    with bed.store.engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(clocks)).scalar_one()
    return Snapshot(total, bed.count_open(), timed(read, repeats), timed(full_scan, repeats))


# ---- databases -----------------------------------------------------------------------------


@contextmanager
def sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="stophub-bench-") as tmp:
        yield f"sqlite:///{tmp}/bench.db"


def postgres_database(base: str) -> AbstractContextManager[str]:
    return throwaway_database(base, "stophub_bench_")


def on_each_database(args: argparse.Namespace, run: Callable[[str, str], list[Any]]) -> list[Any]:
    """`run(label, url)` on a fresh SQLite file, then on a throwaway PostgreSQL database when
    one is configured (PG_VARS) and not `--no-postgres`: a benchmark's rows on both."""
    with sqlite_database() as url:
        out = run("SQLite", url)
    base = next((os.environ[v] for v in PG_VARS if os.environ.get(v)), None)
    if base and not args.no_postgres:
        label = f"PostgreSQL {postgres_version(base).split()[0]}"
        with postgres_database(base) as url:
            out += run(label, url)
    return out


def module_main(
    prog: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    rows: Callable[[argparse.Namespace], list[Any]],
    argv: Sequence[str],
) -> int:
    """`python -m bench.<name>` of a benchmark module: its own rows, as one table."""
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-postgres", action="store_true")
    add_arguments(p)
    print(table.render(rows(p.parse_args(argv))))
    return 0


def postgres_version(url: str) -> str:
    engine = create_engine(normalise_url(url))
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar_one())
    finally:
        engine.dispose()


# ---- the run --------------------------------------------------------------------------------


@dataclass
class Report:
    database: str
    lateness: list[Lateness] = field(default_factory=list)
    idle: list[tuple[int, Cost]] = field(default_factory=list)
    baseline_select: Cost | None = None
    baseline_query: Cost | None = None
    plan: str = ""
    recovery: Backlog | None = None
    snapshot: Snapshot | None = None


def run_database(
    label: str, database: Callable[[], Any], args: argparse.Namespace, say: Callable[[str], None]
) -> Report:
    report = Report(label)
    span = timedelta(seconds=args.span_seconds)
    due_from = T0 + timedelta(seconds=1)
    for n, tick in enumerate(args.ticks):
        first = n == 0
        with database() as url:
            bed = prepare(url)
            try:
                small = min(1_000, args.clocks)
                insert_clocks(bed, small, due_from, span, seed=1)
                if first:
                    report.idle.append((bed.count_open(), idle_sweep(bed, args.repeats)))
                insert_clocks(bed, args.clocks - small, due_from, span, seed=2)
                say(f"{label}: {bed.count_open():,} open clocks inserted")
                if first:
                    report.idle.append((bed.count_open(), idle_sweep(bed, args.repeats)))
                    report.baseline_select = select_one(bed, args.repeats)
                    report.baseline_query = empty_due_query(bed, args.repeats)
                    report.plan = due_query_plan(bed)
                    say(f"{label}: idle sweep measured")
                # The first tick drives the whole span; the others a slice of it at the same
                # load (the lateness of a steady load does not depend on how long it runs).
                driven = span if first else min(span, timedelta(seconds=args.slice_seconds))
                started = time.perf_counter()
                lateness = drive(bed, due_from + driven, tick)
                lateness.driven = driven.total_seconds()
                report.lateness.append(lateness)
                say(
                    f"{label}: tick {tick:g} s: {lateness.fired:,} steps in {lateness.sweeps:,} "
                    f"sweeps, {time.perf_counter() - started:.0f} s"
                )
                if first and lateness.fired != args.clocks:
                    raise AssertionError(f"{lateness.fired} of {args.clocks} steps fired")
                if first:
                    rate = args.clocks / args.span_seconds
                    report.recovery = backlog(bed, timedelta(minutes=10), rate)
                    say(f"{label}: recovery backlog measured")
            finally:
                bed.store.dispose()
    # A hub's steady state on a fresh database: a thousand clocks running, and the closed
    # clocks of the cases before them.
    with database() as url:
        bed = prepare(url)
        try:
            insert_clocks(bed, 1_000, due_from, span, seed=8)
            report.snapshot = metrics_snapshot(bed, args.clocks * 5, max(5, args.repeats // 20))
            say(f"{label}: metrics snapshot measured")
        finally:
            bed.store.dispose()
    return report


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} µs"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.0f} ms" if seconds >= 0.01 else f"{seconds * 1e3:.1f} ms"


def render(reports: Sequence[Report], args: argparse.Namespace) -> str:
    out = []
    out.append(
        f"Lateness of fired steps ({args.clocks:,} open clocks due over "
        f"{args.span_seconds / 60:g} minutes of case time; a sweep after every tick)\n"
    )
    out.append(
        "| database | sweep every | case time driven | steps fired | lateness p50 | p99 | max "
        "| sweep's own time p50 / p99 / max | steps per second of sweeping | p99 < 1 s |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in reports:
        for lat in r.lateness:
            busy = lat.fired / lat.sweep_seconds if lat.sweep_seconds else float("nan")
            p99 = percentile(lat.total, 99)
            out.append(
                f"| {r.database} | {lat.tick:g} s | {lat.driven / 60:g} min | {lat.fired:,} "
                f"| {ms(percentile(lat.total, 50))} | {ms(p99)} | {ms(max(lat.total))} "
                f"| {ms(percentile(lat.processing, 50))} / {ms(percentile(lat.processing, 99))}"
                f" / {ms(max(lat.processing))} | {busy:,.0f} | {'yes' if p99 < 1 else 'NO'} |"
            )
    out.append("")
    out.append("Idle sweep (nothing due), per sweep, against baselines on the same engine\n")
    out.append(
        "| database | measurement | CPU (process_time) | wall | CPU per 1,000 open clocks "
        "| CPU ÷ `SELECT 1` |"
    )
    out.append("|---|---|---|---|---|---|")
    for r in reports:
        base = r.baseline_select
        assert base is not None and r.baseline_query is not None
        out.append(
            f"| {r.database} | baseline: `SELECT 1` in a transaction | {us(base.cpu)} "
            f"| {us(base.wall)} | | 1.0 |"
        )
        q = r.baseline_query
        out.append(
            f"| {r.database} | baseline: the sweep's indexed query alone (Core) "
            f"| {us(q.cpu)} | {us(q.wall)} | | {q.cpu / base.cpu:.1f} |"
        )
        for open_clocks, cost in r.idle:
            per_k = cost.cpu / (open_clocks / 1000)
            out.append(
                f"| {r.database} | idle `Hub.sweep()`, {open_clocks:,} open clocks "
                f"| {us(cost.cpu)} | {us(cost.wall)} | {per_k * 1e6:,.2f} µs "
                f"| {cost.cpu / base.cpu:.1f} |"
            )
    out.append("")
    out.append("Recovery: steps that fell due during a 10-minute outage, fired by one sweep\n")
    out.append("| database | steps due at restart | drained in | steps per second |")
    out.append("|---|---|---|---|")
    for r in reports:
        if r.recovery is not None:
            out.append(
                f"| {r.database} | {r.recovery.steps:,} | {r.recovery.seconds:.1f} s "
                f"| {r.recovery.rate:,.0f} |"
            )
    out.append("")
    out.append("The metrics snapshot (what a scrape reads, cached 5 s), with a hub's history\n")
    out.append("| database | clocks (open) | snapshot, wall | the full GROUP BY it replaced |")
    out.append("|---|---|---|---|")
    for r in reports:
        if r.snapshot is not None:
            snap = r.snapshot
            out.append(
                f"| {r.database} | {snap.clocks:,} ({snap.open:,}) | {ms(snap.cost.wall)} "
                f"| {ms(snap.full_scan.wall)} |"
            )
    out.append("")
    out.append("The due query's plan\n")
    for r in reports:
        out.append(f"- {r.database}: `{r.plan}`")
    return "\n".join(out)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--clocks", type=int, default=100_000)
    p.add_argument("--span-seconds", type=float, default=3600.0)
    p.add_argument(
        "--ticks",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[1.0, 0.5],
        help="case seconds per sweep, comma-separated; the first also measures idle and "
        "recovery (default 1,0.5; the server sweeps every 0.5 s)",
    )
    p.add_argument(
        "--slice-seconds",
        type=float,
        default=600.0,
        help="case time the ticks after the first drive (default 600: the first 10 minutes)",
    )
    p.add_argument("--repeats", type=int, default=2_000, help="idle sweeps to time")
    p.add_argument("--no-postgres", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = parse(argv)

    def say(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    reports = [run_database("SQLite", sqlite_database, args, say)]
    base = next((os.environ[v] for v in PG_VARS if os.environ.get(v)), None)
    if base and not args.no_postgres:
        label = f"PostgreSQL {postgres_version(base)}"
        reports.append(run_database(label, lambda: postgres_database(base), args, say))
    else:
        say(f"PostgreSQL skipped: set {' or '.join(PG_VARS)} to include it")
    print()
    print(render(reports, args))
    worst = max(percentile(lat.total, 99) for r in reports for lat in r.lateness)
    first_tick = max(percentile(r.lateness[0].total, 99) for r in reports)
    idle = max(c.cpu / (n / 1000) for r in reports for n, c in r.idle[-1:])
    print()
    print(
        f"targets: p99 lateness under 1 s: worst p99 {ms(worst)} (at a sweep every "
        f"{args.ticks[0]:g} s: {ms(first_tick)}); idle sweep far under 1 ms per 1,000 open "
        f"clocks: worst {idle * 1e6:,.2f} µs at {args.clocks:,} open clocks"
    )
    return 0
