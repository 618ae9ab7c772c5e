"""Outcome figures benchmark (issue 23, "Speed"): the outcome report over a year of simulated
activity, beside counting the same rows with plain SQL COUNTs in the same run.

`python -m bench outcomes` (or `python -m bench.outcomes`). On a fresh SQLite file (and
PostgreSQL when STOPHUB_BENCH_DATABASE_URL or STOPHUB_TEST_DATABASE_URL is set):

1. N cases (default 100,000; `--quick` 10,000) spread over 2026 from 20 reporting banks are
   bulk inserted with Core, personal data sealed as the hub seals it: each with one or two
   transactions, a first-layer stop (four in five answered holding money, the rest no
   match), and for some a downstream stop (one in five), a freeze (three in ten) and a
   return (three in twenty). Timed (informational).
2. The report: `hub.service.outcomes.gather` over the year, what `stophub report outcomes
   --period month` and GetOutcomeFigures read and count, split by month and by day, in one
   read transaction. Baseline: `SELECT COUNT(*)` of the reports in the year and of the
   answered orders in it (the rows the report reads, counted by the database alone).
   Target: under a minute. The report's total of reports must equal the COUNT.

With warnings (`--outcome-warnings`, default 1,000,000; `--quick` 100,000), as many warnings
from the centre to the 20 banks are loaded too, spread over the year, graded in turn: nine in
ten acknowledged (one in ten of those late), nine in ten closed within a day (six in ten
dissuaded, with the loss prevented; the rest not dissuaded or not reached). The report then
counts them as well, and its total of warnings sent must equal their COUNT.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from bench.clocks import module_main, on_each_database
from bench.table import Row
from hub.bootstrap import migrate
from hub.crypto import fields
from hub.crypto.keys import PrivateKey
from hub.domain.cases import CaseState, ExecutionStatus, OrderKind, OrderState
from hub.domain.institutions import ContactRole, DutyContact, InstitutionKind
from hub.domain.warnings import Grade, Outcome, WarningState
from hub.service import outcomes
from hub.service.admin import NewKey, Registry
from hub.store.sql import SqlStore
from hub.store.tables import cases, fraud_transactions, orders, warnings
from hub.system.clock import ManualClock

YEAR = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
BANKS = [f"BANK{i:02d}" for i in range(20)]
BATCH = 5_000
TARGET_SECONDS = 60.0


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] outcomes: {message}", flush=True)


def _order(case_id: str, n: int, kind: OrderKind, at: datetime, **kw: object) -> dict[str, object]:
    row: dict[str, object] = {
        "order_id": f"{case_id}-O{n:03d}",
        "case_id": case_id,
        "kind": kind,
        "state": OrderState.HOLDING,
        "addressed_to": kw.pop("addressed_to"),
        "issued_by": "CENTRE",
        "issued_at": at - timedelta(minutes=2),
        "origin_message_id": f"m-{case_id}-{n}",
        "account_institution": kw.pop("account_institution"),
        "account_number": kw.pop("account_number"),
        "holder_name": "Li Si",
        "amount_fen": kw.pop("amount_fen"),
        "filed_case_number": "",
        "approving_authority": "",
        "term_months": 0,
        "target_order_id": "",
        "note": "",
        "answer_message_id": f"a-{case_id}-{n}",
        "answered_at": at,
        "result_status": ExecutionStatus.EXECUTED,
        "result_reason_code": "",
        "result_reason": "",
        "amount_held_fen": 0,
        "available_balance_fen": 0,
        "held_fen": 0,
        "released_fen": 0,
        "returned_fen": 0,
    }
    row.update(kw)
    return row


def simulated(n: int) -> Iterator[tuple[str, list[dict[str, object]]]]:
    """(table, rows) batches of a year of cases."""
    rng = random.Random(23)
    span = (YEAR[1] - YEAR[0]).total_seconds()
    batch: dict[str, list[dict[str, object]]] = {"cases": [], "tx": [], "orders": []}
    for i in range(n):
        case_id = f"C2026-{i:08d}"
        at = YEAR[0] + timedelta(seconds=span * i / n)
        reporter = BANKS[i % len(BANKS)]
        holder = BANKS[(i * 7 + 3) % len(BANKS)]
        amounts = [rng.randrange(10_000, 5_000_000) for _ in range(1 + i % 2)]
        batch["cases"].append(
            {
                "case_id": case_id,
                "reporting_institution": reporter,
                "state": CaseState.VERIFIED,
                "created_at": at,
                "verified_at": at + timedelta(minutes=1),
                "report_message_id": f"r-{i}",
                "victim_name": "Zhang San",
                "victim_id_number": "110101199001011234",
                "victim_phone": "138",
                "fraud_type": "impersonating_officials",
                "description": "a 'safe account' transfer",
                "verification_reason": "",
            }
        )
        for p, amount in enumerate(amounts):
            batch["tx"].append(
                {
                    "case_id": case_id,
                    "position": p,
                    "transaction_time": at - timedelta(minutes=20),
                    "amount_fen": amount,
                    "payer_institution": reporter,
                    "payer_account": f"62{i:014d}",
                    "payer_name": "Zhang San",
                    "payee_institution": holder,
                    "payee_account": f"63{i:014d}",
                    "payee_name": "Li Si",
                    "channel": "mobile_banking",
                    "reference": f"TX-{i}-{p}",
                }
            )
        loss = sum(amounts)
        stop_at = at + timedelta(minutes=rng.randrange(3, 240))
        account = {"account_institution": holder, "account_number": f"63{i:014d}"}
        if i % 5 == 4:
            batch["orders"].append(
                _order(
                    case_id,
                    1,
                    OrderKind.STOP,
                    stop_at,
                    addressed_to=holder,
                    amount_fen=loss,
                    result_status=ExecutionStatus.NO_MATCH,
                    state=OrderState.NO_MATCH,
                    **account,
                )
            )
        else:
            held = loss * rng.randrange(50, 101) // 100
            batch["orders"].append(
                _order(
                    case_id,
                    1,
                    OrderKind.STOP,
                    stop_at,
                    addressed_to=holder,
                    amount_fen=loss,
                    amount_held_fen=held,
                    held_fen=held,
                    **account,
                )
            )
            if i % 5 == 0:
                onward = BANKS[(i + 11) % len(BANKS)]
                batch["orders"].append(
                    _order(
                        case_id,
                        2,
                        OrderKind.STOP,
                        stop_at + timedelta(minutes=20),
                        addressed_to=onward,
                        account_institution=onward,
                        account_number=f"64{i:014d}",
                        amount_fen=loss - held,
                        amount_held_fen=loss - held,
                        upstream_order_id=f"{case_id}-O001",
                        layer=2,
                    )
                )
            if i % 10 < 3:
                frozen_at = stop_at + timedelta(days=1)
                batch["orders"].append(
                    _order(
                        case_id,
                        3,
                        OrderKind.FREEZE,
                        frozen_at,
                        addressed_to=holder,
                        amount_fen=held,
                        amount_held_fen=held,
                        held_fen=held,
                        target_order_id=f"{case_id}-O001",
                        term_months=6,
                        **account,
                    )
                )
                if i % 20 < 3:
                    batch["orders"].append(
                        _order(
                            case_id,
                            4,
                            OrderKind.RETURN,
                            frozen_at + timedelta(days=30),
                            addressed_to=holder,
                            amount_fen=held,
                            returned_fen=held,
                            state=OrderState.COMPLETED,
                            target_order_id=f"{case_id}-O003",
                            **account,
                        )
                    )
        if len(batch["cases"]) >= BATCH:
            yield from batch.items()
            batch = {"cases": [], "tx": [], "orders": []}
    yield from batch.items()


TABLES = {"cases": cases, "tx": fraud_transactions, "orders": orders, "warnings": warnings}
GRADES = (Grade.RED, Grade.YELLOW, Grade.GREEN, Grade.UNGRADED)
OUTCOMES = (
    *(Outcome.REACHED_DISSUADED,) * 6,
    Outcome.REACHED_NOT_DISSUADED,
    Outcome.REACHED_NOT_DISSUADED,
    Outcome.NOT_REACHED,
    Outcome.ALREADY_LOST,
)


def simulated_warnings(n: int) -> Iterator[tuple[str, list[dict[str, object]]]]:
    """`n` warnings over the year, in batches (see the module's docstring)."""
    rng = random.Random(2323)
    span = (YEAR[1] - YEAR[0]).total_seconds() - 2 * 86_400
    batch: list[dict[str, object]] = []
    for i in range(n):
        sent = YEAR[0] + timedelta(seconds=rng.random() * span)
        at_risk = rng.randrange(10_000, 10_000_000)
        grade = GRADES[i % 4]
        contact = {Grade.RED: 10, Grade.GREEN: 120}.get(grade, 30)
        row: dict[str, object] = {
            "warning_id": f"W{sent:%Y%m%d}-{i:08X}",
            "sender": "CENTRE",
            "addressee": BANKS[i % len(BANKS)],
            "account_institution": BANKS[i % len(BANKS)],
            "account_number": f"6222{i:012d}",
            "holder_name": "",
            "fraud_type": "fake_investment",
            "counterparty_institution": "",
            "counterparty_account": "",
            "counterparty_name": "",
            "amount_at_risk_fen": at_risk,
            "grade": grade,
            "text": "",
            "sent_at": sent,
            "message_id": f"centre-{i}",
            "contact_by": sent + timedelta(minutes=contact),
            "outcome_by": sent + timedelta(hours=24),
            "state": WarningState.SENT,
            "acknowledged_at": None,
            "acknowledge_note": "",
            "outcome": None,
            "outcome_at": None,
            "loss_prevented_fen": 0,
            "outcome_text": "",
            "outcome_message_id": "",
            "case_id": "",
            "grade_reason": "",
            "graded_at": None,
        }
        if rng.random() < 0.9:
            late = rng.random() < 0.1
            row["acknowledged_at"] = sent + timedelta(minutes=contact * (1.5 if late else 0.5))
            row["state"] = WarningState.ACKNOWLEDGED
        if rng.random() < 0.9:
            outcome = OUTCOMES[i % len(OUTCOMES)]
            row["state"] = WarningState.CLOSED
            row["outcome"] = outcome
            row["outcome_at"] = sent + timedelta(hours=rng.random() * 26)
            if outcome is Outcome.REACHED_DISSUADED:
                row["loss_prevented_fen"] = at_risk
        batch.append(row)
        if len(batch) >= BATCH:
            yield "warnings", batch
            batch = []
    yield "warnings", batch


def load(store: SqlStore, n: int, warning_count: int = 0) -> float:
    registry = Registry(store, ManualClock(YEAR[0]))
    for code, kind in [(b, InstitutionKind.BANK) for b in BANKS] + [
        ("CENTRE", InstitutionKind.ANTI_FRAUD_CENTRE)
    ]:
        key = PrivateKey.generate()
        duty = [
            DutyContact(ContactRole.PRIMARY, f"{code} duty A", "+86-10-5550-0001"),
            DutyContact(ContactRole.BACKUP, f"{code} duty B", "+86-10-5550-0002"),
        ]
        registry.add_institution(code, code, kind, [NewKey(key.algorithm, key.public_key)], duty)
    started = time.perf_counter()
    with store.engine.begin() as conn:
        for table, rows in simulated(n):
            if rows:
                conn.execute(TABLES[table].insert(), rows)
        for table, rows in simulated_warnings(warning_count):
            if rows:
                conn.execute(TABLES[table].insert(), rows)
    return time.perf_counter() - started


def counted(store: SqlStore) -> tuple[float, int, int]:
    """The baseline: the rows the report reads, counted by the database alone."""
    started = time.perf_counter()
    with store.read_engine.connect() as conn:
        reports = conn.execute(
            select(func.count()).where(cases.c.created_at >= YEAR[0], cases.c.created_at < YEAR[1])
        ).scalar_one()
        conn.execute(
            select(func.count()).where(
                orders.c.answered_at >= YEAR[0], orders.c.answered_at < YEAR[1]
            )
        ).scalar_one()
        sent = conn.execute(
            select(func.count()).where(warnings.c.sent_at >= YEAR[0], warnings.c.sent_at < YEAR[1])
        ).scalar_one()
    return time.perf_counter() - started, int(reports), int(sent)


def report(store: SqlStore, period: outcomes.Period) -> tuple[float, outcomes.OutcomeReport]:
    started = time.perf_counter()
    with store(read_only=True) as uow:
        uow.reports.hold_snapshot()
        data = outcomes.gather(uow.reports, YEAR[0], YEAR[1], period, UTC)
    return time.perf_counter() - started, data


def run(label: str, url: str, n: int, w: int = 0) -> list[Row]:
    migrate(url)
    store = SqlStore(url)
    what = f"{n:,} cases" + (f", {w:,} warnings" if w else "")
    try:
        say(f"{label}: loading {what} over 2026")
        loaded = load(store, n, w)
        say(f"{label}: loaded in {loaded:.1f} s")
        base, reports, sent = counted(store)
        out = [
            Row("outcomes", f"load {what}, {label} (informational)", loaded, "s"),
        ]
        for period in (outcomes.Period.MONTH, outcomes.Period.DAY):
            took, data = report(store, period)
            total = data.total
            if total.reports != reports:
                raise SystemExit(
                    f"outcomes: the report counts {total.reports} reports, COUNT says {reports}"
                )
            if total.warnings_sent != sent:
                raise SystemExit(
                    f"outcomes: the report counts {total.warnings_sent} warnings, COUNT says {sent}"
                )
            say(
                f"{label}, by {period.value}: {took:.2f} s, {len(data.rows)} rows, "
                f"{total.first_stops:,} first stops, returned {total.returned_fen:,} fen, "
                f"{total.customers_dissuaded:,} customers dissuaded"
            )
            out.append(
                Row(
                    "outcomes",
                    f"report over a year by {period.value}, {label}, {what}",
                    took,
                    "s",
                    "COUNT of the year's reports, answered orders and warnings",
                    base,
                    False,
                    f"< {TARGET_SECONDS:.0f} s",
                    took < TARGET_SECONDS,
                )
            )
        return out
    finally:
        store.dispose()


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("outcomes")
    g.add_argument("--outcome-cases", type=int, default=None)
    g.add_argument("--outcome-warnings", type=int, default=None)


def rows(args: argparse.Namespace) -> list[Row]:
    n = args.outcome_cases or (10_000 if args.quick else 100_000)
    w = args.outcome_warnings
    if w is None:
        w = 100_000 if args.quick else 1_000_000
    fields.configure(fields.Keyring.generate())
    return on_each_database(args, lambda label, url: run(label, url, n, w))


if __name__ == "__main__":
    sys.exit(module_main("python -m bench.outcomes", add_arguments, rows, sys.argv[1:]))
