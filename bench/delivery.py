"""Delivery: 1,000 institutions on delivery streams at once; commit → arrival at the bank.

`python -m bench.delivery` (options below; `python -m bench` shows the same rows in its
table). The hub is `stophub serve` as a child process (tests/e2e/test_restart.py's `Hub`,
as bench/soak.py starts it) with mutual TLS and sealed personal data. 1,000 members
(`B0000` … `B0999`, one client certificate each from hub/crypto/pki.py, Ed25519 signing
keys) are registered in bulk through `hub.service.admin.Registry` before the hub starts.
Several client processes (`--workers`) each hold a share of the 1,000 streams, one mutual-TLS
channel per institution, acknowledge every delivery with a signed AckBody, and report their
arrival times back when the phase ends.

Times come from one clock: `time.time()` in every bench process and the hub's `SystemClock`
(`datetime.now(UTC)`), all on this machine.

**Latency (commit → arrival).** The hub stamps every delivery with the `now` of the command
that queued it: the outbox's `deliveries.created_at`, which is also the create_time of the
hub-signed envelope the bank receives. That instant comes *before* the commit (it is taken
when the command starts), so `arrival − create_time` is an upper bound of commit → arrival;
it includes the command's own work. The triggering command's answer reaches its sender
*after* the commit, so `arrival − answer received` is a lower bound. Both are reported; the
targets are judged on the upper bound. Arrival = `time.time()` when the client's `read()`
returns the StreamDeliveriesResponse.

**Scenario A (orders).** The centre's standing auto-stop rule is on; a reporting bank
(`REPORTER`, not one of the 1,000) has opened cases in advance, each naming a mule account at
a random one of the 1,000 banks. During the timed phase it verifies those reports at a steady
rate (Poisson arrivals, `--rate` per second, `--orders` in all): each VerifyReport's commit
queues one stop order to the mule's bank. p50 / p99 of commit → arrival of those orders.

**Scenario B (broadcast).** A real command whose commit queues a notice to all 1,000 in one
transaction: CreateReport delivers REPORT_RECEIVED to every anti-fraud centre. For this
phase the hub is restarted on a second database where the same 1,000 codes (same keys and
certificates) are registered as centres; the clients reconnect. `--broadcasts` reports, a few
seconds apart; each one's time from commit to the last of the 1,000 arrivals (upper bound
from create_time, lower bound from the answer), and the time the command itself took.

**Baseline, same run.** A bare grpc.aio server (child process, no database, no signing) with
the same TLS material and client certificates, the same number of bidirectional streams held
by the same client processes, each message acknowledged by a small message back: for A, one
message at a time to a random stream at the same rate, padded to the median size of the
hub's order deliveries; for B, one message to every stream at once, padded to the hub's
broadcast notice size. Its latency is from the moment the server queued the message (its
"commit") to arrival. The ratio is hub ÷ baseline.

Also reported: the hub's CPU (from /proc) idle with 1,000 streams open, and during each phase.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import multiprocessing
import os
import random
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc
from prometheus_client.parser import text_string_to_metric_families

from adapters.sdk.client import tls_credentials
from bench.clocks import PG_VARS, postgres_database
from bench.soak import data_keys
from bench.table import Row
from hub.bootstrap import migrate
from hub.crypto import fields, pki
from hub.crypto.keys import PrivateKey, save_private_key
from hub.domain.institutions import ContactRole, DutyContact, InstitutionKind
from hub.service.admin import NewKey, Registry
from hub.store.sql import SqlStore, normalise_url
from hub.system.clock import SystemClock
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
from tests.e2e.test_restart import Hub, free_port
from tests.e2e.wire_helpers import sign

EOF = grpc.aio.EOF  # type: ignore[attr-defined]
CENTRE, REPORTER, MULEBANK = "CENTRE", "REPORTER", "MULEBANK"
STREAM_PATH = "/bench.Fanout/Stream"
SEND_PATH = "/bench.Fanout/Send"


def code_of(i: int) -> str:
    return f"B{i:04d}"


def key_of(code: str) -> PrivateKey:
    """Every process derives the same signing key for a code."""
    return PrivateKey.from_ed25519_seed(hashlib.sha256(f"bench-delivery-{code}".encode()).digest())


def now_utc() -> datetime:
    return datetime.now(UTC)


# ---- set-up ---------------------------------------------------------------------------------


def register(db_url: str, members: dict[str, InstitutionKind]) -> None:
    migrate(db_url)
    store = SqlStore(db_url)
    registry = Registry(store, SystemClock())
    contacts = [
        DutyContact(ContactRole.PRIMARY, "Duty A", "+86-10-5550-0001"),
        DutyContact(ContactRole.BACKUP, "Duty B", "+86-10-5550-0002"),
    ]
    try:
        for code, kind in members.items():
            key = key_of(code)
            registry.add_institution(
                code, f"{code} display", kind, [NewKey(key.algorithm, key.public_key)], contacts
            )
    finally:
        store.dispose()


def issue_certificates(pki_dir: Path, codes: Sequence[str]) -> None:
    now = now_utc()
    for code in codes:
        if not (pki_dir / pki.client_cert_file(code)).exists():
            pki.issue(pki_dir, code, now)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields_ = f.read().rsplit(")", 1)[1].split()
    return (int(fields_[11]) + int(fields_[12])) / os.sysconf("SC_CLK_TCK")


# ---- client processes -------------------------------------------------------------------------


# (code, kind, case_id, arrival, stamp, size)
Record = tuple[str, str, str, float, float, int]


def _client_process(
    mode: str, target: str, pki_dir: str, codes: list[str], conn: Connection
) -> None:
    asyncio.run(_clients(mode, target, Path(pki_dir), codes, conn))


async def _clients(
    mode: str, target: str, pki_dir: Path, codes: list[str], conn: Connection
) -> None:
    records: list[Record] = []
    channels: list[grpc.aio.Channel] = []
    readers: list[asyncio.Task[None]] = []

    def open_channel(code: str) -> grpc.aio.Channel:
        channel = grpc.aio.secure_channel(target, tls_credentials(pki.client_tls(pki_dir, code)))
        channels.append(channel)
        return channel

    async def open_hub(code: str) -> None:
        channel = open_channel(code)
        key = key_of(code)
        call = delivery_pb2_grpc.DeliveryServiceStub(channel).StreamDeliveries()
        hello = delivery_pb2.SubscribeBody(connection_name="bench")
        await call.write(
            delivery_pb2.StreamDeliveriesRequest(envelope=sign(key, code, hello, now_utc()))
        )
        await call.initial_metadata()

        async def read() -> None:
            while True:
                r = await call.read()
                arrival = time.time()
                if r is EOF:
                    return
                if r.sequence == 0:
                    continue  # only the log checkpoint (docs/witness.md), not a delivery
                notice = delivery_pb2.Notice()
                notice.ParseFromString(r.envelope.body)
                kind = delivery_pb2.NoticeKind.Name(notice.kind)
                stamp = r.envelope.create_time.ToDatetime(UTC).timestamp()
                records.append((code, kind, notice.case_id, arrival, stamp, r.ByteSize()))
                ack = delivery_pb2.AckBody(sequences=[r.sequence])
                await call.write(
                    delivery_pb2.StreamDeliveriesRequest(envelope=sign(key, code, ack, now_utc()))
                )

        readers.append(asyncio.create_task(read()))

    async def open_baseline(code: str) -> None:
        channel = open_channel(code)
        call = channel.stream_stream(STREAM_PATH)()
        await call.write(code.encode())
        await call.initial_metadata()

        async def read() -> None:
            while True:
                r = await call.read()
                arrival = time.time()
                if r is EOF:
                    return
                (stamp,) = struct.unpack_from("!d", r)
                records.append((code, "BASELINE", "", arrival, stamp, len(r)))
                await call.write(b"ack" + bytes(100))

        readers.append(asyncio.create_task(read()))

    opener = open_hub if mode == "hub" else open_baseline
    errors: list[str] = []
    for start in range(0, len(codes), 25):
        results = await asyncio.gather(
            *(opener(c) for c in codes[start : start + 25]), return_exceptions=True
        )
        errors += [repr(r) for r in results if isinstance(r, BaseException)]
    conn.send(("ready", len(codes) - len(errors), errors[:3]))
    loop = asyncio.get_running_loop()
    while True:
        message = await loop.run_in_executor(None, conn.recv)
        if message == "stop":
            break
        if message == "take":
            conn.send(("records", records))
            records = []
    for task in readers:
        task.cancel()
    for channel in channels:
        await channel.close()
    conn.send(("records", records))


class Clients:
    """`workers` processes holding one stream each for `codes`, split evenly."""

    def __init__(self, mode: str, target: str, pki_dir: Path, codes: list[str], workers: int):
        ctx = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        for w in range(workers):
            parent, child = ctx.Pipe()
            share = codes[w::workers]
            proc = ctx.Process(
                target=_client_process, args=(mode, target, str(pki_dir), share, child)
            )
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)
        self.ready = 0
        for pipe in self.pipes:
            if not pipe.poll(300):
                raise RuntimeError("a client process did not open its streams in 300 s")
            _, n, errors = pipe.recv()
            if errors:
                raise RuntimeError(f"streams failed to open: {errors}")
            self.ready += n

    def take(self) -> list[Record]:
        out: list[Record] = []
        for pipe in self.pipes:
            pipe.send("take")
        for pipe in self.pipes:
            out += pipe.recv()[1]
        return out

    def close(self) -> list[Record]:
        out: list[Record] = []
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send("stop")
        for pipe in self.pipes:
            with contextlib.suppress(EOFError, OSError):
                if pipe.poll(60):
                    out += pipe.recv()[1]
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        return out


# ---- the baseline server ------------------------------------------------------------------------


def _baseline_process(port: int, pki_dir: str) -> None:
    asyncio.run(_baseline_server(port, Path(pki_dir)))


async def _baseline_server(port: int, pki_dir: Path) -> None:
    queues: list[asyncio.Queue[bytes]] = []

    async def stream(request_iterator: Any, context: Any) -> Any:
        await context.read()  # hello
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        queues.append(queue)
        await context.send_initial_metadata((("fanout", "ok"),))

        async def acks() -> None:
            while await context.read() is not EOF:
                pass

        reader = asyncio.create_task(acks())
        try:
            while True:
                await context.write(await queue.get())
        finally:
            reader.cancel()
            queues.remove(queue)

    async def send(request: bytes, context: Any) -> bytes:
        what, size = request.decode().split(":")
        pad = bytes(max(0, int(size) - 8))
        targets = queues if what == "all" else [random.choice(queues)]
        for q in targets:
            q.put_nowait(struct.pack("!d", time.time()) + pad)
        return str(len(queues)).encode()

    tls = pki.server_tls(pki_dir)
    creds = grpc.ssl_server_credentials(
        [(tls.key, tls.cert)], root_certificates=tls.ca, require_client_auth=True
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "bench.Fanout",
                {
                    "Stream": grpc.stream_stream_rpc_method_handler(stream),
                    "Send": grpc.unary_unary_rpc_method_handler(send),
                },
            ),
        )
    )
    server.add_secure_port(f"127.0.0.1:{port}", creds)
    await server.start()
    await server.wait_for_termination()


# ---- measurements -----------------------------------------------------------------------------


def pct(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


@dataclass
class Phase:
    label: str
    upper: list[float] = field(default_factory=list)  # seconds, arrival − create_time
    lower: list[float] = field(default_factory=list)  # seconds, arrival − answer received
    command: list[float] = field(default_factory=list)  # send → answer, seconds
    expected: int = 0
    arrived: int = 0
    size: int = 0  # median bytes of a delivery response
    cpu: float = 0.0  # hub CPU seconds per wall second during the phase
    wall: float = 0.0
    # The hub's garbage collections during the phase (stophub_gc_pause_seconds): how many,
    # how many held it 25 ms or more, and their total.
    gc_pauses: int = 0
    gc_long: int = 0
    gc_seconds: float = 0.0
    # The triggering command's time inside the hub (its handler's start to its answer):
    # how many took more than 25 ms and more than 50 ms, of how many.
    in_hub: tuple[int, int, int] = (0, 0, 0)


def hub_samples(hub: Hub) -> list[Any]:
    with urllib.request.urlopen(f"http://{hub.metrics}/metrics", timeout=5) as page:
        text = page.read().decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


VERIFY = "/stophub.v1.CaseService/VerifyReport"


def verify_times(hub: Hub) -> dict[str, float]:
    """The hub's own VerifyReport durations so far (stophub_rpc_duration_seconds, status OK):
    the count at or under each bucket's bound, by bound."""
    return {
        s.labels["le"]: s.value
        for s in hub_samples(hub)
        if s.name == "stophub_rpc_duration_seconds_bucket"
        and s.labels["method"] == VERIFY
        and s.labels["code"] == "OK"
    }


def gc_figures(hub: Hub) -> tuple[int, int, float]:
    """The hub's garbage collections so far: count, count of 25 ms or more, seconds."""
    count = short = 0.0
    total = 0.0
    for s in hub_samples(hub):
        if s.name == "stophub_gc_pause_seconds_count":
            count += s.value
        elif s.name == "stophub_gc_pause_seconds_bucket" and s.labels["le"] == "0.025":
            short += s.value
        elif s.name == "stophub_gc_pause_seconds_sum":
            total += s.value
    return int(count), int(count - short), total


def gc_during(phase: Phase, before: tuple[int, int, float], after: tuple[int, int, float]) -> None:
    phase.gc_pauses = after[0] - before[0]
    phase.gc_long = after[1] - before[1]
    phase.gc_seconds = after[2] - before[2]


def wait_for_refreeze(hub: Hub, say: Any, kind: str, timeout: float = 90) -> None:
    """A hub that freezes long-lived objects (`serve --gc-refreeze`, on by default) does it
    again 30 s after its start, with the streams connected by then: the steady state, which
    the phases measure."""
    if "--gc-refreeze" in hub.extra and hub.extra[hub.extra.index("--gc-refreeze") + 1] == "0":
        return
    deadline = time.monotonic() + timeout
    while "objects frozen after a full collection" not in hub.output():
        assert time.monotonic() < deadline, f"no refreeze in {timeout:.0f} s:\n{hub.output()}"
        time.sleep(0.5)
    say(f"{kind}: the hub froze its long-lived objects after the streams connected")


def _decode_case(answer: Any) -> case_pb2.Case:
    case = case_pb2.Case()
    case.ParseFromString(answer.envelope.body)
    return case


async def _open_cases(hub: Hub, count: int, banks: Sequence[str], rng: random.Random) -> list[str]:
    async with grpc.aio.secure_channel(hub.target, tls_credentials(hub.tls(REPORTER))) as ch:
        stub = case_pb2_grpc.CaseServiceStub(ch)
        slots = asyncio.Semaphore(8)

        async def one(bank: str) -> str:
            async with slots:
                body = mule_report(REPORTER, bank, now_utc())
                env = sign(key_of(REPORTER), REPORTER, body, now_utc())
                answer = await stub.CreateReport(case_pb2.CreateReportRequest(envelope=env))
                return _decode_case(answer).case_id

        return list(await asyncio.gather(*(one(rng.choice(banks)) for _ in range(count))))


async def _auto_stop_rule(hub: Hub) -> None:
    async with grpc.aio.secure_channel(hub.target, tls_credentials(hub.tls(CENTRE))) as ch:
        rule = order_pb2.AutoStopRule(rule_id="BENCH", enabled=True, max_amount_fen=10_000_000)
        env = sign(key_of(CENTRE), CENTRE, rule, now_utc())
        await order_pb2_grpc.OrderServiceStub(ch).SetAutoStopRule(
            order_pb2.SetAutoStopRuleRequest(envelope=env)
        )


async def _verify_at_rate(
    hub: Hub, case_ids: list[str], rate: float, rng: random.Random
) -> tuple[dict[str, float], list[float]]:
    """VerifyReport each case, Poisson arrivals; returns case → answer time, and latencies."""
    answered: dict[str, float] = {}
    took: list[float] = []
    async with grpc.aio.secure_channel(hub.target, tls_credentials(hub.tls(REPORTER))) as ch:
        stub = case_pb2_grpc.CaseServiceStub(ch)
        pending: set[asyncio.Task[None]] = set()

        async def one(case_id: str) -> None:
            body = case_pb2.Verification(
                case_id=case_id, outcome=case_pb2.VERIFICATION_OUTCOME_CONFIRMED
            )
            started = time.time()
            env = sign(key_of(REPORTER), REPORTER, body, now_utc())
            await stub.VerifyReport(case_pb2.VerifyReportRequest(envelope=env))
            answered[case_id] = time.time()
            took.append(answered[case_id] - started)

        next_at = time.monotonic()
        for case_id in case_ids:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            task = asyncio.create_task(one(case_id))
            pending.add(task)
            task.add_done_callback(pending.discard)
            next_at += rng.expovariate(rate)
        await asyncio.gather(*pending)
    return answered, took


async def _broadcast(hub: Hub) -> tuple[str, float, float]:
    """One CreateReport: REPORT_RECEIVED to every centre. (case_id, sent, answered)."""
    async with grpc.aio.secure_channel(hub.target, tls_credentials(hub.tls(REPORTER))) as ch:
        stub = case_pb2_grpc.CaseServiceStub(ch)
        body = mule_report(REPORTER, MULEBANK, now_utc())
        started = time.time()
        env = sign(key_of(REPORTER), REPORTER, body, now_utc())
        answer = await stub.CreateReport(case_pb2.CreateReportRequest(envelope=env))
        return _decode_case(answer).case_id, started, time.time()


def wait_for_arrivals(clients: Clients, want: int, kind: str, timeout: float) -> list[Record]:
    got: list[Record] = []
    deadline = time.monotonic() + timeout
    while True:
        got += clients.take()
        if sum(1 for r in got if r[1] == kind) >= want or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


class Profiler:
    """py-spy on the hub process for one phase, if --py-spy is given."""

    def __init__(self, out: str | None, pid: int, name: str) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        spy = Path(sys.executable).with_name("py-spy")
        if out and spy.exists():
            path = f"{out}-{name}.txt"
            self.proc = subprocess.Popen(
                [str(spy), "record", "-p", str(pid), "-f", "raw", "-o", path, "-r", "50"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(2)
            self.proc.wait(30)


@dataclass
class Report:
    database: str
    streams: int
    idle_cpu: float = 0.0
    orders: Phase = field(default_factory=lambda: Phase("orders"))
    broadcast: Phase = field(default_factory=lambda: Phase("broadcast"))
    base_orders: Phase = field(default_factory=lambda: Phase("baseline orders"))
    base_broadcast: Phase = field(default_factory=lambda: Phase("baseline broadcast"))


@contextlib.contextmanager
def keyring_in(tmp: Path) -> Iterator[None]:
    """A keyring for this run's hub, in `tmp`. `data_keys` points the environment at it, and
    `tmp` goes when the run ends: the next database's run must not inherit the address."""
    before = os.environ.get(fields.ENV_FILE)
    data_keys(tmp)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(fields.ENV_FILE, None)
        else:
            os.environ[fields.ENV_FILE] = before


@contextlib.contextmanager
def database(kind: str, tmp: Path, name: str) -> Iterator[str]:
    if kind == "SQLite":
        yield f"sqlite:///{tmp}/{name}.db"
        return
    base = next(os.environ[v] for v in PG_VARS if os.environ.get(v))
    with postgres_database(base) as url:
        yield normalise_url(url)


def run(args: argparse.Namespace, kind: str, say: Any) -> Report:
    n = args.institutions
    banks = [code_of(i) for i in range(n)]
    rng = random.Random(5)
    report = Report(kind, n)
    with (
        tempfile.TemporaryDirectory(prefix="stophub-bench-delivery-") as tmp_name,
        keyring_in(Path(tmp_name)),
    ):
        tmp = Path(tmp_name)
        save_private_key(PrivateKey.generate(), tmp / "hub.key")
        hub = Hub(tmp, "", DEFAULT_POLICY, args=tuple(args.hub_arg))
        started = time.perf_counter()
        issue_certificates(hub.pki_dir, [*banks, CENTRE, REPORTER])
        say(f"{kind}: {n + 2:,} client certificates in {time.perf_counter() - started:.1f} s")

        # ---- scenario A: orders to random banks ----
        with database(kind, tmp, "orders") as url:
            started = time.perf_counter()
            members = {b: InstitutionKind.BANK for b in banks}
            members |= {CENTRE: InstitutionKind.ANTI_FRAUD_CENTRE, REPORTER: InstitutionKind.BANK}
            register(url, members)
            say(
                f"{kind}: {len(members):,} members registered in "
                f"{time.perf_counter() - started:.1f} s"
            )
            hub.db_url = url
            hub.start()
            assert hub.proc is not None
            pid = hub.proc.pid
            try:
                asyncio.run(_auto_stop_rule(hub))
                case_ids = asyncio.run(_open_cases(hub, args.orders, banks, rng))
                say(f"{kind}: {len(case_ids)} cases opened; connecting {n:,} streams")
                started = time.perf_counter()
                clients = Clients("hub", hub.target, hub.pki_dir, banks, args.workers)
                say(
                    f"{kind}: {clients.ready:,} streams open in "
                    f"{time.perf_counter() - started:.1f} s"
                )
                try:
                    time.sleep(3)
                    wait_for_refreeze(hub, say, kind)
                    clients.take()
                    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
                    time.sleep(args.idle_seconds)
                    report.idle_cpu = (cpu_seconds(pid) - cpu0) / (time.perf_counter() - t0)
                    say(f"{kind}: hub idle with {n:,} streams: {report.idle_cpu:.0%} of a core")
                    spy = Profiler(args.py_spy, pid, f"{kind.split()[0].lower()}-orders")
                    gc0, v0 = gc_figures(hub), verify_times(hub)
                    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
                    answered, took = asyncio.run(_verify_at_rate(hub, case_ids, args.rate, rng))
                    got = wait_for_arrivals(clients, len(case_ids), "NOTICE_KIND_ORDER", 30)
                    spy.stop()
                    ph = report.orders
                    gc_during(ph, gc0, gc_figures(hub))
                    v1 = verify_times(hub)
                    done = {le: v1[le] - v0.get(le, 0) for le in v1}
                    ph.in_hub = (
                        int(done["+Inf"] - done["0.025"]),
                        int(done["+Inf"] - done["0.05"]),
                        int(done["+Inf"]),
                    )
                    ph.wall = time.perf_counter() - t0
                    ph.cpu = (cpu_seconds(pid) - cpu0) / ph.wall
                    orders = [r for r in got if r[1] == "NOTICE_KIND_ORDER"]
                    ph.expected, ph.arrived, ph.command = len(case_ids), len(orders), took
                    ph.upper = [r[3] - r[4] for r in orders]
                    ph.lower = [r[3] - answered[r[2]] for r in orders if r[2] in answered]
                    ph.size = round(statistics.median(r[5] for r in orders)) if orders else 0
                    say(f"{kind}: orders: {ph.arrived} of {ph.expected} arrived")
                finally:
                    clients.close()
            finally:
                hub.kill()

        # ---- scenario B: one command, a notice to all ----
        with database(kind, tmp, "broadcast") as url:
            members = {b: InstitutionKind.ANTI_FRAUD_CENTRE for b in banks}
            members |= {REPORTER: InstitutionKind.BANK, MULEBANK: InstitutionKind.BANK}
            register(url, members)
            hub.db_url = url
            hub.start()
            assert hub.proc is not None
            pid = hub.proc.pid
            try:
                clients = Clients("hub", hub.target, hub.pki_dir, banks, args.workers)
                try:
                    time.sleep(3)
                    wait_for_refreeze(hub, say, kind)
                    clients.take()
                    ph = report.broadcast
                    spy = Profiler(args.py_spy, pid, f"{kind.split()[0].lower()}-broadcast")
                    gc0 = gc_figures(hub)
                    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
                    for i in range(args.broadcasts):
                        case_id, sent, answered_at = asyncio.run(_broadcast(hub))
                        got = wait_for_arrivals(clients, n, "NOTICE_KIND_REPORT_RECEIVED", 30)
                        mine = [r for r in got if r[2] == case_id]
                        ph.expected += n
                        ph.arrived += len(mine)
                        ph.command.append(answered_at - sent)
                        if mine:
                            last = max(r[3] for r in mine)
                            ph.upper.append(last - mine[0][4])
                            ph.lower.append(last - answered_at)
                            ph.size = round(statistics.median(r[5] for r in mine))
                        say(
                            f"{kind}: broadcast {i + 1}: {len(mine)} of {n} arrived, last "
                            f"{(ph.upper or [0])[-1] * 1e3:,.0f} ms after create_time"
                        )
                        time.sleep(2)
                    spy.stop()
                    ph.wall = time.perf_counter() - t0
                    ph.cpu = (cpu_seconds(pid) - cpu0) / ph.wall
                    gc_during(ph, gc0, gc_figures(hub))
                finally:
                    clients.close()
            finally:
                hub.kill()

        # ---- the baseline: bare grpc.aio fan-out, same TLS, streams and sizes ----
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
                asyncio.run(_baseline_load(target, hub, report, args, rng, clients))
            finally:
                clients.close()
        finally:
            server.kill()
            server.join(10)
    return report


async def _baseline_load(
    target: str,
    hub: Hub,
    report: Report,
    args: argparse.Namespace,
    rng: random.Random,
    clients: Clients,
) -> None:
    tls = hub.tls(REPORTER)
    async with grpc.aio.secure_channel(target, tls_credentials(tls)) as ch:
        send = ch.unary_unary(SEND_PATH)
        clients.take()
        ph = report.base_orders
        next_at = time.monotonic()
        for _ in range(args.orders):
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await send(f"one:{report.orders.size or 500}".encode())
            ph.expected += 1
            next_at += rng.expovariate(args.rate)
        await asyncio.sleep(2)
        got = clients.take()
        ph.arrived = len(got)
        ph.upper = [r[3] - r[4] for r in got]
        ph.size = round(statistics.median(r[5] for r in got)) if got else 0
        ph = report.base_broadcast
        for _ in range(args.broadcasts):
            await send(f"all:{report.broadcast.size or 1000}".encode())
            ph.expected += report.streams
            await asyncio.sleep(2)
            got = clients.take()
            ph.arrived += len(got)
            if got:
                ph.upper.append(max(r[3] for r in got) - min(r[4] for r in got))
                ph.size = round(statistics.median(r[5] for r in got))


# ---- rows -------------------------------------------------------------------------------------


def report_rows(r: Report) -> list[Row]:
    n = f"{r.streams:,}"
    db = r.database
    a, b, ba, bb = r.orders, r.broadcast, r.base_orders, r.base_broadcast
    base_a = f"grpc.aio fan-out, {n} TLS streams, {ba.size} B"
    base_b = f"grpc.aio fan-out to {n} TLS streams, {bb.size} B"
    rows = []
    for p in (50, 99):
        up = pct(a.upper, p) * 1e3
        rows.append(
            Row(
                "delivery",
                f"order commit→arrival p{p} (≤, from create_time), {db}, {n} streams, "
                f"{args_rate(a)}/s; {a.arrived}/{a.expected} arrived",
                up,
                "ms",
                base_a,
                pct(ba.upper, p) * 1e3,
                higher_is_better=False,
                target="p99 < 50 ms" if p == 99 else "",
                met=(up < 50 and a.arrived == a.expected) if p == 99 else None,
            )
        )
    rows.append(
        Row(
            "delivery",
            f"order commit→arrival p99 (≥, from the answer at the sender), {db}",
            pct(a.lower, 99) * 1e3,
            "ms",
            base_a,
            pct(ba.upper, 99) * 1e3,
            higher_is_better=False,
            target="p99 < 50 ms",
            met=pct(a.lower, 99) * 1e3 < 50,
        )
    )
    rows.append(
        Row(
            "delivery",
            f"VerifyReport (queues the order) send→answer p50 / p99 {pct(a.command, 99) * 1e3:.0f}"
            f" ms, {db}",
            pct(a.command, 50) * 1e3,
            "ms",
        )
    )
    worst = max(b.upper) if b.upper else float("nan")
    rows.append(
        Row(
            "delivery",
            f"broadcast to all {n}: commit→last arrival, worst of {len(b.upper)} (≤, from "
            f"create_time), {db}; {b.arrived}/{b.expected} arrived",
            worst * 1e3,
            "ms",
            base_b,
            max(bb.upper) * 1e3 if bb.upper else None,
            higher_is_better=False,
            target=f"all {n} < 1 s",
            met=worst < 1 and b.arrived == b.expected,
        )
    )
    lower = max(b.lower) if b.lower else float("nan")
    rows.append(
        Row(
            "delivery",
            f"broadcast to all {n}: last arrival after the answer (≥ commit), worst, {db}",
            lower * 1e3,
            "ms",
            base_b,
            max(bb.upper) * 1e3 if bb.upper else None,
            higher_is_better=False,
            target=f"all {n} < 1 s",
            met=lower < 1,
        )
    )
    rows.append(
        Row(
            "delivery",
            f"broadcast command (CreateReport, {n} notices in one transaction) send→answer, "
            f"worst, {db}",
            max(b.command) * 1e3 if b.command else float("nan"),
            "ms",
        )
    )
    rows.append(
        Row(
            "delivery",
            f"VerifyReport inside the hub (stophub_rpc_duration_seconds), {db}: over 25 ms / "
            f"over 50 ms ({a.in_hub[1]}), of {a.in_hub[2]}",
            a.in_hub[0],
            "calls",
            higher_is_better=False,
        )
    )
    for phase in (a, b):
        rows.append(
            Row(
                "delivery",
                f"hub garbage collections during the {phase.label} phase, {db}: "
                f"{phase.gc_pauses} in all, {phase.gc_long} of 25 ms or more "
                f"({args_gc(phase)})",
                phase.gc_seconds * 1e3,
                "ms held in all",
                higher_is_better=False,
            )
        )
    rows.append(
        Row(
            "delivery",
            f"hub CPU, idle with {n} streams / orders / broadcasts, {db} "
            f"({a.cpu:.0%} / {b.cpu:.0%} of a core)",
            r.idle_cpu * 100,
            "% of a core",
            higher_is_better=False,
        )
    )
    return rows


def args_gc(phase: Phase) -> str:
    return f"{phase.gc_seconds / phase.wall:.2%} of the phase" if phase.wall else "?"


def args_rate(phase: Phase) -> str:
    return f"{phase.expected / phase.wall:.1f}" if phase.wall else "?"


def rows(args: argparse.Namespace) -> list[Row]:
    args = complete(args)

    def say(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] delivery: {message}", file=sys.stderr, flush=True)

    out: list[Row] = []
    for kind in databases(args):
        out += report_rows(run(args, kind, say))
    return out


def databases(args: argparse.Namespace) -> list[str]:
    kinds = ["SQLite"]
    if not args.no_postgres and any(os.environ.get(v) for v in PG_VARS):
        kinds.append("PostgreSQL")
    if args.delivery_database != "both":
        kinds = [k for k in kinds if k.lower() == args.delivery_database]
    return kinds


DEFAULTS: dict[str, Any] = {
    "institutions": 1_000,
    "workers": 4,
    "rate": 20.0,
    "orders": 600,
    "broadcasts": 5,
    "idle_seconds": 10.0,
    "py_spy": None,
    "no_postgres": False,
    "delivery_database": "both",
    "hub_arg": [],
}


def complete(args: argparse.Namespace) -> argparse.Namespace:
    """`python -m bench` passes its own namespace: fill in what it does not set."""
    for name, value in DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, value)
    return args


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.delivery", description=__doc__.split("\n")[0])
    p.add_argument("--institutions", type=int, default=DEFAULTS["institutions"])
    p.add_argument("--workers", type=int, default=DEFAULTS["workers"], help="client processes")
    p.add_argument("--rate", type=float, default=DEFAULTS["rate"], help="orders per second")
    p.add_argument("--orders", type=int, default=DEFAULTS["orders"])
    p.add_argument("--broadcasts", type=int, default=DEFAULTS["broadcasts"])
    p.add_argument("--idle-seconds", type=float, default=DEFAULTS["idle_seconds"])
    p.add_argument("--py-spy", help="record the hub with .venv/bin/py-spy to PREFIX-<phase>.txt")
    p.add_argument("--no-postgres", action="store_true")
    p.add_argument("--delivery-database", choices=("both", "sqlite", "postgresql"), default="both")
    p.add_argument(
        "--hub-arg",
        action="append",
        default=[],
        help="one more `stophub serve` argument (repeat; e.g. --hub-arg=--gc-refreeze "
        "--hub-arg=0 to measure the collector as Python sets it)",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    from bench.table import render

    print(render(rows(parse(argv))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
