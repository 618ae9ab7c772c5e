"""Console: the centre's queue page and a case page with 10,000 open cases at the hub, and an
order's way from the hub's commit to a member console's open browser (issue 20, Speed).

`python -m bench console` (`make bench BENCH_ARGS=console`; `--quick` for 1,000 cases).

Setup: tests/console_support.py's network in this process: a real hub (gRPC, mutual TLS,
SQLite, sealed personal data) and real consoles (uvicorn on loopback) for CENTRE and BANKB, on
one event loop in a background thread. `--cases` reports are filed by BANKA over gRPC
(CreateReport, 16 in flight), each naming its own mule account at BANKB, so every one is an
open case with a running verification clock; `--orders` of them are verified.

Pages: an HTTP client signed in as the centre's duty officer asks `--requests` times for the
queue (`/queue`; `/cases` where this tree has no queue) and for case pages (`/cases/{id}` of
random cases with a stop order), one request at a time; p50 and p95 of the whole request
(login, CSRF, the console's gRPC calls, rendering). Baseline, same run: the same reads done
bare with the SDK from the same loop: one ListCases page (50 cases) for the queue, and
GetCase + GetCaseTrail + ListClocks(case) for a case page.

Order → browser: an SSE client (httpx streaming /events, signed in to BANKB's console) is
open; the centre issues `--orders` stop orders one after another to BANKB, and each order's
time is from just before the centre's IssueOrder call (so before the hub's commit: an upper
bound of commit → browser) to the arrival of its event line at the client; the time from the
centre's answer (after the commit: a lower bound) is printed too. Baseline: the same order's
IssueOrder round trip (the centre's call, commit and answer)."""

from __future__ import annotations

import argparse
import asyncio
import json
import queue
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from adapters.console.models import StoredDelivery
from adapters.sdk import HubClient
from bench.table import Row
from stophub.v1 import account_pb2, case_pb2, order_pb2
from tests.console_support import Browserless, ConsoleNetwork, console_network
from tests.e2e.wire_helpers import report

DEFAULTS = {"cases": 10_000, "requests": 50, "orders": 100}
QUICK = {"cases": 1_000, "requests": 20, "orders": 30}


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("console (bench/console.py)")
    g.add_argument("--console-cases", type=int, help="open cases at the hub (10,000)")
    g.add_argument("--console-requests", type=int, help="requests per page (50)")
    g.add_argument("--console-orders", type=int, help="orders to the open browser (100)")


def pct(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(p) - 1]


def mule(i: int) -> account_pb2.AccountRef:
    return account_pb2.AccountRef(
        institution_code="BANKB", account_number=f"62220{i:011d}", holder_name="Li Si"
    )


def report_of(net: ConsoleNetwork, i: int) -> case_pb2.Report:
    r = report(net.clock.now(), amounts=(1_000_000,))
    r.transactions[0].payee.CopyFrom(mule(i))
    r.transactions[0].transaction_reference = f"BENCH-{i}"
    return r


async def seed(net: ConsoleNetwork, bank: HubClient, count: int, say: Any) -> list[str]:
    ids: list[str] = []
    started = time.monotonic()
    todo = iter(range(count))

    async def worker() -> None:
        for i in todo:
            case = await bank.create_report(report_of(net, i))
            ids.append(case.case_id)
            if len(ids) % 2000 == 0:
                say(f"console: {len(ids):,} cases filed ({time.monotonic() - started:.0f} s)")

    await asyncio.gather(*(worker() for _ in range(16)))
    return ids


def stop_of(case_id: str, i: int, net: ConsoleNetwork) -> order_pb2.OrderInstruction:
    instruction = order_pb2.OrderInstruction(case_id=case_id)
    instruction.stop.account.CopyFrom(mule(i))
    instruction.stop.amount_fen = 1_000_000
    fact = instruction.stop.transactions.add(amount_fen=1_000_000)
    fact.transaction_time.FromDatetime(net.clock.now() - timedelta(minutes=10))
    return instruction


def timed(call: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def fetch(browser: Browserless, path: str) -> httpx.Response:
    """GET, once more on a fresh connection when the last answer (an error) closed it."""
    try:
        return browser.get(path)
    except httpx.TransportError:
        return browser.get(path)


class Sse:
    """An open browser's event stream: (arrival time, event data) of each event line."""

    def __init__(self, browser: Browserless) -> None:
        self.events: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self.ready = threading.Event()
        self.client = httpx.Client(
            base_url=browser.console.url, cookies=browser.http.cookies, timeout=None
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(10):
            raise RuntimeError("the console's event stream did not open")

    def _read(self) -> None:
        try:
            with self.client.stream("GET", "/events") as answer:
                for line in answer.iter_lines():
                    if line.startswith("retry:"):
                        self.ready.set()
                    elif line.startswith("data:"):
                        data = json.loads(line.removeprefix("data:"))
                        self.events.put((time.monotonic(), data))
        except (httpx.HTTPError, RuntimeError):
            return

    def wait_case(self, case_id: str, timeout: float = 10) -> float:
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            try:
                at, data = self.events.get(timeout=left)
            except queue.Empty:
                break
            if data.get("case_id") == case_id and data.get("kind") == "delivery":
                return at
        raise RuntimeError(f"no event for {case_id} on the browser's stream")


@dataclass
class Figures:
    cases: int
    queue_path: str
    queue: list[float]
    queue_bare: list[float]
    case_label: str
    case: list[float]
    case_bare: list[float]
    order_upper: list[float]
    order_lower: list[float]
    order_call: list[float]
    seed_seconds: float


def drain(net: ConsoleNetwork, reports: int, timeout: float) -> int:
    """Wait until the centre's console has stored a report notice per case; how many."""
    desk = net.consoles["CENTRE"].desk
    end = time.monotonic() + timeout
    while True:
        with desk.db() as s:
            held = s.scalar(
                select(func.count()).where(StoredDelivery.kind == "NOTICE_KIND_REPORT_RECEIVED")
            )
        if int(held or 0) >= reports or time.monotonic() > end:
            return int(held or 0)
        time.sleep(1)


def run(args: argparse.Namespace, say: Any) -> Figures:
    with (
        tempfile.TemporaryDirectory(prefix="stophub-bench-console-") as tmp,
        console_network(Path(tmp), ["CENTRE", "BANKB"]) as net,
    ):
        bank, centre = net.client("BANKA"), net.client("CENTRE")
        t = time.monotonic()
        ids = net.run(seed(net, bank, args.cases, say), timeout=3600)
        seed_seconds = time.monotonic() - t
        say(f"console: {len(ids):,} open cases in {seed_seconds:.0f} s")
        rng = random.Random(20)
        picked = rng.sample(range(len(ids)), args.orders)

        # Orders to BANKB's open browser.
        member = Browserless(net.consoles["BANKB"])
        member.login("watch")
        sse = Sse(member)
        upper, lower, call = [], [], []
        for i in picked:
            case_id = ids[i]
            net.run(bank.verify_report(case_id))
            sent = time.monotonic()
            net.run(centre.issue_order(stop_of(case_id, i, net)))
            answered = time.monotonic()
            arrived = sse.wait_case(case_id)
            upper.append((arrived - sent) * 1e3)
            lower.append((arrived - answered) * 1e3)
            call.append((answered - sent) * 1e3)
        sse.client.close()
        say(f"console: {len(upper)} orders to the open browser")

        # Pages at the centre's console, once it has taken in the notice of every report
        # (10,000 arriving at once is the seeding's doing, not a duty day's): steady state.
        t = time.monotonic()
        drained = drain(net, len(ids), timeout=600)
        say(
            f"console: the centre's console took in {drained:,} notices in "
            f"{time.monotonic() - t:.0f} s more"
        )
        officer = Browserless(net.consoles["CENTRE"])
        officer.login("duty")
        path = "/queue"
        fetch(officer, path).raise_for_status()
        queue_ms = timed(lambda: fetch(officer, path).raise_for_status(), args.requests)

        async def bare_queue() -> None:
            # The read the queue makes: one page of 50 in the hub's deadline order.
            await centre.list_cases_page(page_size=50, order_by=case_pb2.CASE_ORDER_DEADLINE)

        queue_bare = timed(lambda: net.run(bare_queue()), args.requests)
        pool = [ids[i] for i in picked]
        case_label = "case page (case with a stop order)"
        case_ms = timed(
            lambda: fetch(officer, f"/cases/{rng.choice(pool)}").raise_for_status(),
            args.requests,
        )

        async def bare_case(case_id: str) -> None:
            await centre.get_case(case_id)
            await centre.get_case_trail(case_id)
            await centre.list_clocks(case_id=case_id)

        case_bare = timed(lambda: net.run(bare_case(rng.choice(pool))), args.requests)
        return Figures(
            len(ids),
            path,
            queue_ms,
            queue_bare,
            case_label,
            case_ms,
            case_bare,
            upper,
            lower,
            call,
            seed_seconds,
        )


def to_rows(f: Figures) -> list[Row]:
    n = f"{f.cases:,} open cases"
    rows = []
    for label, values, bare, baseline in (
        (
            f"queue page {f.queue_path}",
            f.queue,
            f.queue_bare,
            "its read bare: one ListCases page of 50 by deadline",
        ),
        (f.case_label, f.case, f.case_bare, "GetCase + GetCaseTrail + ListClocks, bare"),
    ):
        if not values:
            rows.append(Row("console", f"{label}, {n}", 0.0, "ms", "not measured"))
            continue
        for p in (50, 95):
            rows.append(
                Row(
                    "console",
                    f"{label}, p{p}, {n}, {len(values)} requests",
                    pct(values, p),
                    "ms",
                    baseline,
                    pct(bare, p),
                    False,
                    "p95 ≤ 200 ms" if p == 95 else "",
                    pct(values, p) <= 200 if p == 95 else None,
                )
            )
    for p in (50, 99):
        rows.append(
            Row(
                "console",
                f"order → open browser (SSE), p{p}, {len(f.order_upper)} orders, from before "
                f"the centre's call (from its answer: {pct(f.order_lower, p):.1f} ms)",
                pct(f.order_upper, p),
                "ms",
                "the centre's IssueOrder round trip",
                pct(f.order_call, p),
                False,
                "p99 ≤ 1 s" if p == 99 else "",
                pct(f.order_upper, p) <= 1000 if p == 99 else None,
            )
        )
    return rows


def rows(args: argparse.Namespace) -> list[Row]:
    base = QUICK if args.quick else DEFAULTS
    settings = argparse.Namespace(
        cases=getattr(args, "console_cases", None) or base["cases"],
        requests=getattr(args, "console_requests", None) or base["requests"],
        orders=getattr(args, "console_orders", None) or base["orders"],
    )

    def say(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    figures = run(settings, say)
    say(f"console: seeding took {figures.seed_seconds:.0f} s")
    return to_rows(figures)
