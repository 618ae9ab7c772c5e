"""Where a report's CPU goes, in process (issue 22): the hub's whole CreateReport pipeline
against the database driver alone sending the very statements it sent.

`python -m bench reportcpu` (or `python -m bench.reportcpu`). No gRPC, no server: a hub built
as `serve` builds it (bootstrap.build_hub, the shipped policy, sealed personal data) on a
fresh SQLite file and, when STOPHUB_BENCH_DATABASE_URL or STOPHUB_TEST_DATABASE_URL is set, on
a fresh PostgreSQL database; BANKA's signed CreateReport envelopes (bench/intake.py's, signed
before the clock starts) go to `Hub.handle` one after another, and the process's CPU time
(`time.process_time`, every thread) is divided by the reports.

The baseline is the floor under that figure: one report's statements, exactly as the hub
handed them to the driver (SQL text and processed parameters, caught with SQLAlchemy's
`before_cursor_execute`), sent again through the bare DB-API connection (sqlite3, psycopg)
to a second fresh database, in a transaction rolled back each time (the rows would collide
otherwise; the commit is therefore not in the floor). The difference is the Python above the
driver: the pipeline, SQLAlchemy, the domain, sealing and signatures. The audit log's
sequencer (which places the entries later, off the request path) is measured after each
round and shown on its own row. Each round's cases are then confirmed by their reporting
bank with the centre's standing auto-stop rule on (bench/delivery.py's): the CPU of a
verification that stops the mule account, the stop path of issue 22.

`--rounds` rounds (default 3) alternate the two, and the figures pool them, because on a
shared machine one round can run a fifth slower than the next.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select

from bench.clocks import PG_VARS, postgres_database, postgres_version
from bench.delivery import keyring_in
from bench.table import Row, standalone
from hub.bootstrap import build_hub
from hub.crypto.envelope import seal_message
from hub.crypto.keys import PrivateKey
from hub.service.commands.case import CREATE_REPORT, VERIFY_REPORT
from hub.service.commands.order import SET_AUTO_STOP_RULE
from hub.store.sql import SqlStore, normalise_url
from hub.store.tables import orders
from stophub.v1 import case_pb2, envelope_pb2, order_pb2
from tests.e2e.test_crash import mule_report
from tests.e2e.test_restart import register_members

SENDER = "BANKA"
CENTRE = "CENTRE"
WARM_UP = 50  # reports before the timed ones: caches, pools, compiled statements

# (SQL text, parameters, executemany) as SQLAlchemy handed them to the DB-API cursor.
DriverCall = tuple[str, Any, bool]


@dataclass
class Figures:
    database: str
    reports: int = 0
    cpu: float = 0.0  # seconds, the hub's pipeline
    statements: int = 0  # driver calls of one report
    floor_reports: int = 0
    floor_cpu: float = 0.0  # seconds, the driver alone
    sequencer_cpu: float = 0.0  # seconds, placing the rounds' entries in the log
    rounds: list[tuple[float, float]] = field(default_factory=list)  # (hub, floor) per report
    verifications: int = 0  # VerifyReports of the rounds' cases, the centre's auto stop on
    verify_cpu: float = 0.0
    verify_statements: int = 0


def signed(key: PrivateKey, sender: str, body: Any) -> envelope_pb2.Envelope:
    return seal_message(
        key,
        sender=sender,
        recipient="HUB",
        message_id=f"cpu-{uuid.uuid4().hex}",
        create_time=datetime.now(UTC),
        message=body,
    )


def envelopes(key: PrivateKey, count: int) -> list[envelope_pb2.Envelope]:
    body = mule_report(SENDER, "BANKB", datetime.now(UTC))
    return [signed(key, SENDER, body) for _ in range(count)]


def driver_calls(engine: Any, work: Callable[[], Any]) -> tuple[Any, list[DriverCall]]:
    """What `work` returned, and the statements it handed the DB-API cursor (BEGIN aside)."""
    calls: list[DriverCall] = []

    def caught(_conn: Any, _cursor: Any, sql: str, params: Any, _ctx: Any, many: bool) -> None:
        if not sql.startswith("BEGIN"):
            calls.append((sql, params, many))

    event.listen(engine, "before_cursor_execute", caught)
    try:
        return work(), calls
    finally:
        event.remove(engine, "before_cursor_execute", caught)


def verifications(key: PrivateKey, case_ids: Sequence[str]) -> list[envelope_pb2.Envelope]:
    confirmed = case_pb2.VERIFICATION_OUTCOME_CONFIRMED
    return [
        signed(key, SENDER, case_pb2.Verification(case_id=c, outcome=confirmed)) for c in case_ids
    ]


def replay(connection: Any, calls: Sequence[DriverCall], sqlite: bool) -> None:
    """`calls` through the bare DB-API connection, in a transaction rolled back."""
    cursor = connection.cursor()
    if sqlite:
        cursor.execute("BEGIN IMMEDIATE")  # as the hub's writers begin (hub/store/sql.py)
    for sql, params, many in calls:
        if many:
            cursor.executemany(sql, params)
        else:
            cursor.execute(sql, params)
        if cursor.description is not None:
            cursor.fetchall()
    connection.rollback()


def cpu_of(work: Callable[[], None], times: int) -> float:
    started = time.process_time()
    for _ in range(times):
        work()
    return time.process_time() - started


def measure_database(
    label: str, url: str, floor_url: str, reports: int, rounds: int, say: Callable[[str], None]
) -> Figures:
    keys = register_members(url)
    register_members(floor_url)
    store = SqlStore(url)
    floor_store = SqlStore(floor_url)
    figures = Figures(label)
    try:
        hub = build_hub(store, PrivateKey.generate())
        key = keys[SENDER]
        for envelope in envelopes(key, WARM_UP):
            hub.handle(CREATE_REPORT, envelope, SENDER)
        # The centre's standing rule: each confirmed case stops the mule account at once.
        rule = order_pb2.AutoStopRule(rule_id="BENCH", enabled=True, max_amount_fen=10_000_000)
        hub.handle(SET_AUTO_STOP_RULE, signed(keys[CENTRE], CENTRE, rule), CENTRE)
        hub.keep_audit_log()

        answer, calls = driver_calls(
            store.engine, lambda: hub.handle(CREATE_REPORT, envelopes(key, 1)[0], SENDER)
        )
        figures.statements = len(calls)
        confirm = verifications(key, [_case_id(answer)])[0]
        _, verify_calls = driver_calls(
            store.engine, lambda: hub.handle(VERIFY_REPORT, confirm, SENDER)
        )
        figures.verify_statements = len(verify_calls)

        raw = floor_store.engine.raw_connection()
        try:
            connection = raw.driver_connection
            assert connection is not None
            if floor_store.is_sqlite:
                connection.isolation_level = None  # BEGIN is sent as the hub sends it
            for _ in range(WARM_UP):
                replay(connection, calls, floor_store.is_sqlite)
            for r in range(rounds):
                batch = envelopes(key, reports)
                started = time.process_time()
                answers = [hub.handle(CREATE_REPORT, envelope, SENDER) for envelope in batch]
                hub_cpu = time.process_time() - started
                confirming = verifications(key, [_case_id(a) for a in answers])
                started = time.process_time()
                for envelope in confirming:
                    hub.handle(VERIFY_REPORT, envelope, SENDER)
                verify_cpu = time.process_time() - started
                figures.verifications += len(confirming)
                figures.verify_cpu += verify_cpu
                started = time.process_time()
                hub.keep_audit_log()
                figures.sequencer_cpu += time.process_time() - started
                floor_cpu = cpu_of(
                    lambda: replay(connection, calls, floor_store.is_sqlite), reports
                )
                figures.reports += reports
                figures.cpu += hub_cpu
                figures.floor_reports += reports
                figures.floor_cpu += floor_cpu
                figures.rounds.append((hub_cpu / reports, floor_cpu / reports))
                say(
                    f"{label}, round {r + 1}/{rounds}: the pipeline "
                    f"{hub_cpu / reports * 1e3:.2f} ms of CPU per report, the driver alone "
                    f"{floor_cpu / reports * 1e3:.3f} ms ({figures.statements} statements); "
                    f"a verification with its auto stop {verify_cpu / reports * 1e3:.2f} ms "
                    f"({figures.verify_statements} statements)"
                )
        finally:
            raw.close()
        with store.engine.connect() as conn:
            stops = conn.execute(select(func.count()).select_from(orders)).scalar_one()
        if stops < figures.verifications + 1:
            raise AssertionError(
                f"{label}: {figures.verifications + 1} verifications made {stops} stop orders; "
                "the centre's auto stop did not run, so the figure is not what it says"
            )
    finally:
        store.dispose()
        floor_store.dispose()
    return figures


def _case_id(answer: envelope_pb2.Envelope) -> str:
    return case_pb2.Case.FromString(answer.body).case_id


@contextmanager
def databases(no_postgres: bool, directory: Path) -> Iterator[list[tuple[str, str, str]]]:
    """(label, url, floor url) for each database to run on; PostgreSQL's dropped after."""
    found = [("SQLite", f"sqlite:///{directory}/hub.db", f"sqlite:///{directory}/floor.db")]
    base = next((os.environ[v] for v in PG_VARS if os.environ.get(v)), None)
    with ExitStack() as stack:
        if base and not no_postgres:
            label = f"PostgreSQL {postgres_version(base).split()[0]}"
            url = normalise_url(stack.enter_context(postgres_database(base)))
            floor = normalise_url(stack.enter_context(postgres_database(base)))
            found.append((label, url, floor))
        else:
            print(
                f"reportcpu: PostgreSQL skipped: set {' or '.join(PG_VARS)} to include it",
                flush=True,
            )
        yield found


def measure(args: argparse.Namespace) -> list[Figures]:
    def say(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] reportcpu: {message}", flush=True)

    quick = bool(getattr(args, "quick", False))
    reports = getattr(args, "reports", None) or (200 if quick else 1000)
    rounds = getattr(args, "rounds", None) or 3
    out = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stophub-cpu-")))
        stack.enter_context(keyring_in(tmp))
        for label, url, floor in stack.enter_context(
            databases(bool(getattr(args, "no_postgres", False)), tmp)
        ):
            out.append(measure_database(label, url, floor, reports, rounds, say))
    return out


def to_rows(found: Sequence[Figures]) -> list[Row]:
    rows = []
    for f in found:
        per_round = ", ".join(f"{hub / floor:.0f}×" for hub, floor in f.rounds if floor)
        rows.append(
            Row(
                "reportcpu",
                f"CreateReport in process, CPU per report, {f.database} (rounds {per_round})",
                f.cpu / f.reports * 1e3,
                "ms",
                f"the driver alone sending its {f.statements} statements, rolled back",
                f.floor_cpu / f.floor_reports * 1e3,
                False,
            )
        )
        rows.append(
            Row(
                "reportcpu",
                f"VerifyReport with the centre's auto stop, in process, CPU per verification "
                f"({f.verify_statements} statements), {f.database}",
                f.verify_cpu / f.verifications * 1e3 if f.verifications else 0.0,
                "ms",
            )
        )
        rows.append(
            Row(
                "reportcpu",
                f"the audit log's sequencer, CPU per report and its verification, {f.database}",
                f.sequencer_cpu / f.reports * 1e3,
                "ms",
            )
        )
    return rows


def rows(args: argparse.Namespace) -> list[Row]:
    """The benchmark's rows for `python -m bench`."""
    return to_rows(measure(args))


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("reportcpu (and --rounds, shared with intake)")
    g.add_argument(
        "--reports", type=int, default=None, help="reports per round (default 1,000; 200 quick)"
    )


def _alone_arguments(p: argparse.ArgumentParser) -> None:
    add_arguments(p)
    p.add_argument("--rounds", type=int, default=None, help="alternated rounds (default 3)")


def main(argv: Sequence[str]) -> int:
    return standalone(argv, "python -m bench.reportcpu", __doc__ or "", _alone_arguments, rows)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
