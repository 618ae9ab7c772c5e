"""Blacklist benchmark (issue 7, "Speed"): a list of 1,000,000 entries, a replica's full sync,
publication to a following replica, the batch check, and the replica's local lookups, each
beside a baseline measured in the same run.

`python -m bench blacklist` (or `python -m bench.blacklist`). For each database (SQLite; also
PostgreSQL when STOPHUB_BENCH_DATABASE_URL or STOPHUB_TEST_DATABASE_URL is set, on a fresh
database made for the run and dropped after it):

1. The list is loaded into the hub's database BEFORE the hub serves it: `stophub serve` (a
   child process, tests/e2e/test_restart.py's `Hub`, mutual TLS) starts once so BANKA can
   report and verify the one source case every entry names, stops, and the entries are bulk
   loaded with Core executemany in batches of 10,000: the rows N PublishListEntry calls would
   have stored (hub.domain.blacklist.list_entry, hub.service.lists.entry_to_proto, the
   subject token under the same list key the hub runs with, clear_wire sealed with the same
   data keys), their ADD changes, and one list_state row whose digests are the sums of the
   entries' clear_hash / token_hash. Three entries in four are accounts (seven institutions),
   one in four persons. PostgreSQL gets an ANALYZE after the load, as autovacuum would.
   Then the hub starts again on that database. The load time is informational.
2. Full sync: a raw client reads every SyncList part from version 0 (CLEAR) as bytes and
   applies nothing (a first read warms the hub and supplies the bytes; later ones are timed);
   then a `Replica` (adapters/blacklist/replica.py, CLEAR, a fresh SQLite file) syncs from 0
   with `sync_once`: entries per second including its apply, index build and checkpoint
   check. Its count and digest must equal the loaded list's. Baseline: a bare grpc.aio
   server in a child process (generic handler, identity serializers, mutual TLS from the
   hub's PKI) streaming the very parts the hub sent, read by the same raw client. Each of the
   three runs `--list-repeats` times (3) and the best is reported: the machine is shared,
   and the least disturbed run is the one that measures the code.
   Target: the replica's full sync at 100,000 entries a second or more.
3. Publication: with the replica following (`Replica.run(follow=True)`), the centre publishes
   M entries one at a time through the SDK; each is timed from just before the
   PublishListEntry call to the replica's commit of the checkpoint that contains it (its
   `on_event` hook). p50 and p99; target under 1 s. Baseline: unary round trips to the bare
   server of PublishListEntryRequests of the same size, one at a time.
4. Batch check: CheckList calls of 1,000 subjects (half listed, half not; accounts and
   persons) signed by BANKA before the clock starts, at 1 and 4 calls in flight; identifiers
   per second. Every answer is checked after the timed window (hub signature, one hit per
   subject, listed exactly when expected). Baseline: the bare server echoing the same request
   bytes at the same concurrency.
5. Local lookups: `is_listed_account` on random listed and unlisted accounts against the
   synced copy, one thread; every answer checked. Baseline: the same keys looked up with a
   bare sqlite3 indexed `SELECT` on a one-column table holding the list's subject keys.

`--list-profile DIR` records py-spy stacks (raw, collapsed) of the hub and of this process
(the replica) during one more full sync, untimed (the profilers take CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import random
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy import text

from adapters.blacklist.replica import Form, Replica, ReplicaEvent
from adapters.sdk import HubClient
from adapters.sdk.client import tls_credentials, tls_options
from bench.clocks import PG_VARS, percentile, postgres_database, postgres_version
from bench.profiling import record_stacks
from bench.table import Row, standalone
from hub.crypto import fields, pki
from hub.crypto.envelope import seal_message, verify_envelope
from hub.crypto.keys import PrivateKey, save_private_key
from hub.crypto.listkey import ENV_FILE as LIST_KEY_ENV_FILE
from hub.crypto.listkey import ENV_KEY as LIST_KEY_ENV
from hub.crypto.listkey import ListKey, resolve_list_key
from hub.domain.blacklist import DIGEST_MODULUS, Basis, Subject, Terms, list_entry
from hub.service.lists import entry_to_proto, new_entry_id
from hub.store.sql import make_engine
from hub.store.tables import list_changes, list_entries, list_state
from hub.system.policy import DEFAULT_POLICY
from stophub.v1 import account_pb2, blacklist_pb2
from tests.e2e.test_crash import mule_report
from tests.e2e.test_restart import Hub, free_port, register_members

BENCH = "blacklist"
SENDER = "BANKA"  # the member whose copy syncs, and who checks
CENTRE = "CENTRE"
SERVICE = "stophub.v1.ListService"
SYNC_METHOD = f"/{SERVICE}/SyncList"
CHECK_METHOD = f"/{SERVICE}/CheckList"
PUBLISH_METHOD = f"/{SERVICE}/PublishListEntry"
TARGET_SYNC_RATE = 100_000.0  # entries/s, the replica's full sync
TARGET_PUBLICATION = 1.0  # s, publication to the live replica's copy
LOAD_BATCH = 10_000
CHECK_SIZE = 1_000
SPAN = timedelta(days=300)  # the loaded entries were listed over the last 300 days
UNLISTED_FROM = 10**9  # subjects numbered from here on are never listed
MAX_MESSAGE = 64 * 1024 * 1024
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE)]

INSTITUTIONS = ("BANKB", "ICBC", "CCB", "ABC", "BOC", "CMB", "PAYX")
SURNAMES = "王李张刘陈杨黄赵吴周"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚英"
TRADER_REASON = "出租、出售银行账户给电信网络诈骗团伙使用"
CONVICT_REASON = "因电信网络诈骗犯罪被判处刑罚"

Say = Callable[[str], None]


# ---- the subjects: entry i's subject follows from i ------------------------------------------


def is_person(i: int) -> bool:
    return i % 4 == 3


def account_of(i: int) -> tuple[str, str]:
    return INSTITUTIONS[i // 4 % len(INSTITUTIONS)], f"6222{i:012d}"


def id_number(i: int) -> str:
    return f"{110101 + i % 8000:06d}{i:011d}{'0123456789X'[i % 11]}"


def name_of(i: int) -> str:
    return SURNAMES[i % 10] + GIVEN[i // 10 % len(GIVEN)] + GIVEN[i // 220 % len(GIVEN)]


def subject_key(i: int) -> str:
    if is_person(i):
        return id_number(i)
    institution, number = account_of(i)
    return f"{institution}/{number}"


def subject(i: int) -> Subject:
    if is_person(i):
        return Subject.person(id_number(i), name_of(i))
    institution, number = account_of(i)
    return Subject.account(institution, number, name_of(i))


def basis_of(i: int) -> Basis:
    return Basis.CONVICTED if is_person(i) or i % 10 == 0 else Basis.ACCOUNT_TRADER


def reason_of(basis: Basis) -> str:
    return CONVICT_REASON if basis is Basis.CONVICTED else TRADER_REASON


_BASIS_PB = {
    Basis.ACCOUNT_TRADER: blacklist_pb2.LIST_BASIS_ACCOUNT_TRADER,
    Basis.CONVICTED: blacklist_pb2.LIST_BASIS_CONVICTED,
}


def list_subject(i: int) -> blacklist_pb2.ListSubject:
    if is_person(i):
        return blacklist_pb2.ListSubject(id_number=id_number(i))
    institution, number = account_of(i)
    return blacklist_pb2.ListSubject(
        account=account_pb2.AccountRef(institution_code=institution, account_number=number)
    )


def publish_body(i: int, case_id: str) -> blacklist_pb2.PublishListEntryBody:
    basis = basis_of(i)
    body = blacklist_pb2.PublishListEntryBody(
        basis=_BASIS_PB[basis], reason=reason_of(basis), source_case_id=case_id
    )
    if is_person(i):
        body.person.CopyFrom(blacklist_pb2.ListedPerson(id_number=id_number(i), name=name_of(i)))
    else:
        institution, number = account_of(i)
        body.account.CopyFrom(
            account_pb2.AccountRef(
                institution_code=institution, account_number=number, holder_name=name_of(i)
            )
        )
    return body


# ---- keys -----------------------------------------------------------------------------------


def data_keys(directory: Path) -> None:
    """Personal data is sealed at rest: this process (which loads sealed rows) and the hub it
    starts need the same keyring (as bench/soak.py's `data_keys`)."""
    if not (os.environ.get(fields.ENV_FILE) or os.environ.get(fields.ENV_KEYS)):
        path = directory / "data-keys.json"
        fields.Keyring.generate().save(path)
        os.environ[fields.ENV_FILE] = str(path)
    fields.configure(fields.resolve_keyring())


def list_key() -> ListKey:
    """The list key the hub child process will resolve: the environment's, or a new one put in
    the environment (STOPHUB_LIST_KEY=kid:base64key) that the child inherits."""
    if os.environ.get(LIST_KEY_ENV_FILE) or os.environ.get(LIST_KEY_ENV):
        return resolve_list_key()
    key = ListKey.generate()
    os.environ[LIST_KEY_ENV] = f"{key.key_id}:{base64.b64encode(key.key).decode()}"
    return key


# ---- the bulk load ----------------------------------------------------------------------------


@dataclass
class Loaded:
    entries: int
    seconds: float
    clear_digest: bytes


def load_list(db_url: str, n: int, key: ListKey, case_id: str, say: Say) -> Loaded:
    """N entries, their ADD changes and the list's state, as N PublishListEntry calls would
    have stored them (hub.service.lists.add_entry), in batches of LOAD_BATCH."""
    engine = make_engine(db_url)
    terms = Terms()
    base = datetime.now(UTC) - SPAN
    step = SPAN / max(n, 1)
    clear_sum = token_sum = 0
    started = time.perf_counter()
    try:
        for start in range(0, n, LOAD_BATCH):
            entries: list[dict[str, Any]] = []
            changes: list[dict[str, Any]] = []
            for i in range(start, min(n, start + LOAD_BATCH)):
                at = base + step * i
                basis = basis_of(i)
                entry = list_entry(
                    new_entry_id(at),
                    subject(i),
                    basis,
                    reason_of(basis),
                    case_id,
                    history=(),
                    now=at,
                    listed_by=CENTRE,
                    terms=terms,
                )
                token = key.token(entry.subject_key)
                version = i + 1
                entries.append(
                    {
                        "entry_id": entry.entry_id,
                        "kind": entry.kind.value,
                        "subject_token": token,
                        "basis": entry.basis.value,
                        "source_case_id": entry.source_case_id,
                        "listed_at": entry.listed_at,
                        "expires_at": entry.expires_at,
                        "listed_by": entry.listed_by,
                        "ended_at": None,
                        "end_kind": "",
                        "end_reason": "",
                        "added_version": version,
                        "ended_version": None,
                        "clear_wire": entry_to_proto(entry).SerializeToString(),
                        "token_wire": entry_to_proto(entry, token).SerializeToString(),
                    }
                )
                changes.append(
                    {"version": version, "op": "add", "entry_id": entry.entry_id, "at": at}
                )
                clear_sum += entry.clear_hash()
                token_sum += entry.token_hash(token)
            with engine.begin() as conn:
                conn.execute(list_entries.insert(), entries)
                conn.execute(list_changes.insert(), changes)
            done = min(n, start + LOAD_BATCH)
            if done % 100_000 == 0 or done == n:
                rate = done / (time.perf_counter() - started)
                say(f"loaded {done:,} of {n:,} entries ({rate:,.0f}/s)")
        clear_digest = (clear_sum % DIGEST_MODULUS).to_bytes(32, "big")
        with engine.begin() as conn:
            conn.execute(
                list_state.insert(),
                {
                    "id": 1,
                    "version": n,
                    "entry_count": n,
                    "clear_digest": clear_digest,
                    "token_digest": (token_sum % DIGEST_MODULUS).to_bytes(32, "big"),
                    "list_key_id": key.key_id,
                },
            )
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                conn.execute(text("ANALYZE"))
    finally:
        engine.dispose()
    return Loaded(n, time.perf_counter() - started, clear_digest)


# ---- the baseline server (a child process) ----------------------------------------------------


def write_parts(path: Path, parts: Sequence[bytes]) -> None:
    with path.open("wb") as out:
        for part in parts:
            out.write(struct.pack(">I", len(part)))
            out.write(part)


def read_parts(path: Path) -> list[bytes]:
    data = path.read_bytes()
    parts = []
    at = 0
    while at < len(data):
        (size,) = struct.unpack_from(">I", data, at)
        parts.append(data[at + 4 : at + 4 + size])
        at += 4 + size
    return parts


async def serve_baseline(address: str, tls_dir: Path, parts_file: Path) -> None:
    """SyncList streams the stored parts as they are; CheckList and PublishListEntry answer
    with the request's bytes. Identity serializers, mutual TLS, as the hub serves."""
    parts = read_parts(parts_file)

    async def stream(
        request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return request

    server = grpc.aio.server(options=CHANNEL_OPTIONS)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "SyncList": grpc.unary_stream_rpc_method_handler(stream),
                    "CheckList": grpc.unary_unary_rpc_method_handler(echo),
                    "PublishListEntry": grpc.unary_unary_rpc_method_handler(echo),
                },
            ),
        )
    )
    tls = pki.server_tls(tls_dir)
    credentials = grpc.ssl_server_credentials(
        [(tls.key, tls.cert)], root_certificates=tls.ca, require_client_auth=True
    )
    server.add_secure_port(address, credentials)
    await server.start()
    await server.wait_for_termination()


@dataclass
class Target:
    """Where a raw client connects: the hub, or the baseline server."""

    address: str
    tls: pki.TlsConfig
    pid: int


def _aio_channel(target: Target) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(
        target.address,
        tls_credentials(target.tls),
        options=CHANNEL_OPTIONS + tls_options(target.tls),
    )


@contextmanager
def baseline_server(tls_dir: Path, parts_file: Path, tls: pki.TlsConfig) -> Iterator[Target]:
    address = f"127.0.0.1:{free_port()}"
    command = [
        *(sys.executable, "-m", "bench.blacklist", "baseline-server"),
        *("--address", address, "--tls-dir", str(tls_dir), "--parts", str(parts_file)),
    ]
    proc = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[1])
    try:
        channel = grpc.secure_channel(address, tls_credentials(tls), options=tls_options(tls))
        with channel:
            grpc.channel_ready_future(channel).result(timeout=60)
        yield Target(address, tls, proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ---- raw clients ------------------------------------------------------------------------------


async def read_stream(target: Target, request: bytes) -> tuple[list[bytes], float]:
    """Every part of one SyncList call, as bytes, and the seconds from the call to its end."""
    channel = _aio_channel(target)
    try:
        await channel.channel_ready()
        call = channel.unary_stream(SYNC_METHOD, None, None)
        parts: list[bytes] = []
        started = time.perf_counter()
        async for part in call(request, timeout=1800):
            parts.append(part)
        return parts, time.perf_counter() - started
    finally:
        await channel.close(None)


@dataclass
class Unary:
    """Round trips of a set of requests at a concurrency."""

    answers: list[bytes | None]
    latencies: list[float]
    seconds: float
    errors: list[str] = field(default_factory=list)

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)


async def round_trips(
    target: Target, method: str, requests: Sequence[bytes], concurrency: int
) -> Unary:
    """Each request once, `concurrency` in flight, back to back."""
    channel = _aio_channel(target)
    try:
        await channel.channel_ready()
        call = channel.unary_unary(method, None, None)
        answers: list[bytes | None] = [None] * len(requests)
        latencies: list[float] = []
        errors: list[str] = []
        indices = iter(range(len(requests)))

        async def caller() -> None:
            for i in indices:
                began = time.perf_counter()
                try:
                    answers[i] = await call(requests[i], timeout=120)
                except grpc.aio.AioRpcError as err:
                    errors.append(f"{err.code().name}: {err.details()}")
                    continue
                latencies.append(time.perf_counter() - began)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        return Unary(answers, latencies, time.perf_counter() - started, errors)
    finally:
        await channel.close(None)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        stat = f.read().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


# ---- the hub (a child process) ----------------------------------------------------------------


@dataclass
class Setup:
    label: str
    hub: Hub
    hub_key: PrivateKey
    keys: dict[str, PrivateKey]
    case_id: str
    loaded: Loaded
    list_key: ListKey

    @property
    def pid(self) -> int:
        assert self.hub.proc is not None
        return self.hub.proc.pid

    def target(self) -> Target:
        return Target(self.hub.target, self.hub.tls(SENDER), self.pid)

    def client(self, code: str) -> HubClient:
        return HubClient(
            self.hub.target,
            institution=code,
            key=self.keys[code],
            hub_public_key=self.hub_key.public_key,
            tls=self.hub.tls(code),
            timeout=120,
        )


def _stop(hub: Hub) -> None:
    if hub.proc is not None and hub.proc.poll() is None:
        hub.proc.terminate()
        try:
            hub.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            hub.kill()


async def open_case(hub: Hub, keys: dict[str, PrivateKey], hub_key: PrivateKey) -> str:
    """BANKA reports a fraud and confirms it: the case every loaded entry comes from."""
    async with HubClient(
        hub.target,
        institution=SENDER,
        key=keys[SENDER],
        hub_public_key=hub_key.public_key,
        tls=hub.tls(SENDER),
    ) as bank:
        case = await bank.create_report(mule_report(SENDER, "BANKB", datetime.now(UTC)))
        await bank.verify_report(case.case_id, confirmed=True)
        return case.case_id


@contextmanager
def hub_with_list(
    label: str, db_url: str, directory: Path, n: int, key: ListKey, say: Say
) -> Iterator[Setup]:
    directory.mkdir(parents=True, exist_ok=True)
    hub_key = PrivateKey.generate()
    save_private_key(hub_key, directory / "hub.key")
    keys = register_members(db_url)
    hub = Hub(directory, db_url, DEFAULT_POLICY)
    hub.start()
    try:
        case_id = asyncio.run(open_case(hub, keys, hub_key))
    finally:
        _stop(hub)
    say(f"{label}: case {case_id} opened; loading {n:,} entries with the hub stopped")
    loaded = load_list(db_url, n, key, case_id, say)
    say(f"{label}: loaded {n:,} entries in {loaded.seconds:.1f} s; starting the hub on them")
    hub.start()
    try:
        yield Setup(label, hub, hub_key, keys, case_id, loaded, key)
    finally:
        _stop(hub)
        errors = [line for line in hub.output().splitlines() if "Traceback" in line]
        if errors:
            say(f"{label}: the hub logged {len(errors)} traceback(s), see {hub.log_file}")


# ---- the measurements ------------------------------------------------------------------------


@dataclass
class Timed:
    """One timed run: wall seconds, and the CPU seconds of the hub and of this process."""

    seconds: float
    hub_cpu: float = 0.0
    own_cpu: float = 0.0


def best(runs: Sequence[Timed]) -> Timed:
    return min(runs, key=lambda t: t.seconds) if runs else Timed(0.0)


@dataclass
class Check:
    concurrency: int
    calls: int
    hub: Unary
    echo: Unary
    size: int  # bytes per request, mean
    problems: list[str]
    hub_cpu: float  # CPU seconds of the hub process during its run

    def rate(self, run: Unary) -> float:
        return self.calls * CHECK_SIZE / run.seconds if run.seconds else 0.0


@dataclass
class Result:
    database: str
    loaded: Loaded
    sync_bytes: int = 0
    raw_runs: list[Timed] = field(default_factory=list)
    base_runs: list[Timed] = field(default_factory=list)
    replica_runs: list[Timed] = field(default_factory=list)
    publish: list[float] = field(default_factory=list)  # to the replica's commit
    publish_rpc: list[float] = field(default_factory=list)  # the PublishListEntry call alone
    publish_echo: list[float] = field(default_factory=list)
    publish_size: int = 0
    checks: list[Check] = field(default_factory=list)
    lookups: int = 0
    lookup_seconds: float = 0.0
    base_lookup_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def rate(self, seconds: float) -> float:
        return self.loaded.entries / seconds if seconds else 0.0


def sync_request(setup: Setup) -> bytes:
    envelope = seal_message(
        setup.keys[SENDER],
        sender=SENDER,
        recipient="HUB",
        message_id=f"bench-{uuid.uuid4().hex}",
        create_time=datetime.now(UTC),
        message=blacklist_pb2.SyncListBody(from_version=0, form=blacklist_pb2.LIST_FORM_CLEAR),
    )
    return blacklist_pb2.SyncListRequest(envelope=envelope).SerializeToString()


def check_parts(parts: Sequence[bytes], bank: HubClient, setup: Setup) -> str | None:
    """None if the parts are a snapshot of the loaded list and its good checkpoint."""
    entries = 0
    for data in parts[:-1]:
        part = blacklist_pb2.SyncListResponse.FromString(data)
        entries += len(part.entries.entries)
    last = blacklist_pb2.SyncListResponse.FromString(parts[-1])
    if last.WhichOneof("part") != "checkpoint":
        return "the stream did not end with a checkpoint"
    cp = bank.open_checkpoint(last.checkpoint)
    n = setup.loaded.entries
    if (entries, cp.entry_count, cp.digest) != (n, n, setup.loaded.clear_digest):
        return f"{entries} entries, checkpoint {cp.entry_count} / {cp.digest.hex()}"
    return None


async def profiled_sync(
    setup: Setup, bank: HubClient, path: Path, args: argparse.Namespace, say: Say
) -> None:
    """Another full sync, untimed, with py-spy recording the hub and this process (the
    replica): the profilers take CPU, so the timed sync runs without them."""
    args.list_profile.mkdir(parents=True, exist_ok=True)
    slug = setup.label.split()[0].lower()
    spies = []
    for who, pid in (("hub", setup.pid), ("replica", os.getpid())):
        out = args.list_profile / f"sync-{slug}-{who}.txt"
        spy = record_stacks(pid, out, "blacklist: --list-profile")
        if spy is not None:
            spies.append(spy)
    await asyncio.sleep(1.0)  # py-spy attaches
    started = time.perf_counter()
    with Replica(path, bank, Form.CLEAR) as replica:
        await replica.sync_once()
    seconds = time.perf_counter() - started
    for spy in spies:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)
    say(
        f"{setup.label}: profiled full sync {setup.loaded.entries / seconds:,.0f} entries/s, "
        f"stacks in {args.list_profile}"
    )


async def full_sync(
    setup: Setup,
    bank: HubClient,
    result: Result,
    directory: Path,
    args: argparse.Namespace,
    say: Say,
) -> Replica:
    """The raw stream, the baseline stream, then the replica's full sync, each
    `args.list_repeats` times (this machine is shared: the best run is the least disturbed).
    Returns the replica of the best sync, synced."""
    hub_target = setup.target()
    parts, first = await read_stream(hub_target, sync_request(setup))  # warms the hub
    problem = check_parts(parts, bank, setup)
    if problem:
        result.problems.append(f"raw sync: {problem}")
    result.sync_bytes = sum(map(len, parts))
    parts_file = directory / "sync.parts"
    write_parts(parts_file, parts)
    n = setup.loaded.entries
    say(
        f"{setup.label}: first raw sync {n / first:,.0f} entries/s, {len(parts):,} parts, "
        f"{result.sync_bytes / 1e6:,.1f} MB"
    )
    del parts
    with baseline_server(setup.hub.pki_dir, parts_file, hub_target.tls) as base:
        await read_stream(base, b"warm")
        for _ in range(args.list_repeats):
            got, seconds = await read_stream(base, b"timed")
            result.base_runs.append(Timed(seconds))
            if sum(map(len, got)) != result.sync_bytes:
                result.problems.append("the baseline streamed other bytes")
            del got
            hub_cpu = cpu_seconds(setup.pid)
            got, seconds = await read_stream(hub_target, sync_request(setup))
            result.raw_runs.append(Timed(seconds, cpu_seconds(setup.pid) - hub_cpu))
            problem = check_parts(got, bank, setup)
            if problem:
                result.problems.append(f"raw sync: {problem}")
            del got
            say(
                f"{setup.label}: baseline stream {n / result.base_runs[-1].seconds:,.0f} "
                f"entries/s, raw hub stream {n / seconds:,.0f} entries/s (hub CPU "
                f"{result.raw_runs[-1].hub_cpu / seconds:.0%} of a core)"
            )
    parts_file.unlink()

    kept: Replica | None = None
    for k in range(args.list_repeats):
        replica = Replica(directory / f"replica-{k}.db", bank, Form.CLEAR)
        hub_cpu = cpu_seconds(setup.pid)
        own_cpu = time.process_time()
        started = time.perf_counter()
        await replica.sync_once()
        run = Timed(
            time.perf_counter() - started,
            cpu_seconds(setup.pid) - hub_cpu,
            time.process_time() - own_cpu,
        )
        result.replica_runs.append(run)
        if (replica.entry_count, replica.digest) != (n, setup.loaded.clear_digest):
            result.problems.append(
                f"the replica holds {replica.entry_count} entries, digest {replica.digest.hex()}"
            )
        say(
            f"{setup.label}: replica full sync {n / run.seconds:,.0f} entries/s "
            f"({run.seconds:.1f} s; hub CPU {run.hub_cpu / run.seconds:.0%}, replica CPU "
            f"{run.own_cpu / run.seconds:.0%} of a core)"
        )
        if kept is None or run is best(result.replica_runs):
            if kept is not None:
                kept.close()
            kept = replica
        else:
            replica.close()
    assert kept is not None
    if args.list_profile is not None:
        await profiled_sync(setup, bank, directory / "profiled.db", args, say)
    return kept


async def publication(
    setup: Setup, replica: Replica, result: Result, count: int, base: Target | None, say: Say
) -> None:
    """Publish `count` entries one at a time while the replica follows; each one's time from
    the call to the replica's commit of it."""
    commits: list[tuple[float, int]] = []
    committed = asyncio.Event()

    def on_event(event: ReplicaEvent) -> None:
        if event.kind == "checkpoint":
            commits.append((time.perf_counter(), event.status.version))
            committed.set()

    replica.on_event = on_event
    follower = asyncio.create_task(replica.run(follow=True))

    async def reached(version: int, timeout: float) -> float:
        deadline = time.perf_counter() + timeout
        while True:
            for at, v in commits:
                if v >= version:
                    return at
            if follower.done():
                follower.result()
                raise RuntimeError("the replica stopped following")
            committed.clear()
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError(f"the replica did not reach version {version}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(committed.wait(), left)

    n = setup.loaded.entries
    centre = setup.client(CENTRE)
    try:
        await reached(n, 60)  # the follow stream's first checkpoint
        for j in range(count):
            body = publish_body(n + j, setup.case_id)
            began = time.perf_counter()
            _, record = await centre.call("PublishListEntry", body)
            answered = time.perf_counter()
            assert isinstance(record, blacklist_pb2.ListEntryRecord)
            at = await reached(record.added_version, 30)
            result.publish.append(at - began)
            result.publish_rpc.append(answered - began)
        if replica.entry_count != n + count:
            result.problems.append(f"the replica holds {replica.entry_count} after publishing")
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        replica.on_event = None
        await centre.close()
    requests = [
        blacklist_pb2.PublishListEntryRequest(
            envelope=centre.seal(publish_body(UNLISTED_FROM + j, setup.case_id))
        ).SerializeToString()
        for j in range(count)
    ]
    result.publish_size = sum(map(len, requests)) // max(len(requests), 1)
    if base is not None:
        await round_trips(base, PUBLISH_METHOD, requests[:5], 1)
        echo = await round_trips(base, PUBLISH_METHOD, requests, 1)
        result.publish_echo = echo.latencies
        result.problems += echo.errors
    say(
        f"{setup.label}: publication to the replica p50 "
        f"{percentile(result.publish, 50) * 1e3:.1f} ms, p99 "
        f"{percentile(result.publish, 99) * 1e3:.1f} ms (the call alone p50 "
        f"{percentile(result.publish_rpc, 50) * 1e3:.1f} ms)"
    )


def check_requests(
    setup: Setup, calls: int, listed: int, rng: random.Random
) -> list[tuple[bytes, list[bool]]]:
    """Signed CheckList requests of CHECK_SIZE subjects, half listed, and what each answers."""
    out = []
    for _ in range(calls):
        picks = [(rng.randrange(listed), True) for _ in range(CHECK_SIZE // 2)]
        picks += [
            (UNLISTED_FROM + rng.randrange(UNLISTED_FROM), False)
            for _ in range(CHECK_SIZE - len(picks))
        ]
        rng.shuffle(picks)
        body = blacklist_pb2.CheckListBody(subjects=[list_subject(i) for i, _ in picks])
        envelope = seal_message(
            setup.keys[SENDER],
            sender=SENDER,
            recipient="HUB",
            message_id=f"bench-{uuid.uuid4().hex}",
            create_time=datetime.now(UTC),
            message=body,
        )
        request = blacklist_pb2.CheckListRequest(envelope=envelope).SerializeToString()
        out.append((request, [expected for _, expected in picks]))
    return out


def check_answer(answer: bytes | None, expected: list[bool], hub_key: bytes) -> str | None:
    if answer is None:
        return "no answer"
    envelope = blacklist_pb2.CheckListResponse.FromString(answer).envelope
    if envelope.sender != "HUB" or not verify_envelope(envelope, hub_key):
        return "the answer is not signed by the hub"
    if envelope.body_type != blacklist_pb2.CheckListResult.DESCRIPTOR.full_name:
        return f"the answer carries a {envelope.body_type}"
    hits = blacklist_pb2.CheckListResult.FromString(envelope.body).hits
    if [h.index for h in hits] != list(range(len(expected))):
        return "hits out of order"
    if [h.listed for h in hits] != expected:
        return "listed where not expected, or not where expected"
    return None


async def batch_checks(
    setup: Setup, base: Target, result: Result, args: argparse.Namespace, say: Say
) -> None:
    rng = random.Random(7)
    hub_target = setup.target()
    warm = check_requests(setup, 3, setup.loaded.entries, rng)
    await round_trips(hub_target, CHECK_METHOD, [r for r, _ in warm], 1)
    for c in args.list_check_concurrency:
        made = check_requests(setup, args.list_check_calls, setup.loaded.entries, rng)
        requests = [r for r, _ in made]
        echo = await round_trips(base, CHECK_METHOD, requests, c)
        hub_cpu = cpu_seconds(setup.pid)
        hub = await round_trips(hub_target, CHECK_METHOD, requests, c)
        hub_cpu = cpu_seconds(setup.pid) - hub_cpu
        problems = echo.errors + hub.errors
        if any(a != r for a, r in zip(echo.answers, requests, strict=True)):
            problems.append("the echo answered other bytes")
        for answer, (_, expected) in zip(hub.answers, made, strict=True):
            problem = check_answer(answer, expected, setup.hub_key.public_key)
            if problem:
                problems.append(problem)
        size = sum(map(len, requests)) // len(requests)
        check = Check(c, len(made), hub, echo, size, problems, hub_cpu)
        result.checks.append(check)
        say(
            f"{setup.label}: CheckList, {c} in flight: {check.rate(hub):,.0f} identifiers/s "
            f"(echo {check.rate(echo):,.0f}/s), call p50 {hub.p(50) * 1e3:.1f} ms, "
            f"{len(problems)} problems"
        )


def lookup_probes(n: int, count: int, rng: random.Random) -> list[tuple[str, str, bool]]:
    """(institution, account number, listed) for random listed and never listed accounts."""
    probes = []
    for k in range(count):
        if k % 2:
            i = UNLISTED_FROM + 4 * rng.randrange(UNLISTED_FROM // 4)
        else:
            i = rng.randrange(n)
            while is_person(i):
                i = rng.randrange(n)
        institution, number = account_of(i)
        probes.append((institution, number, i < n))
    return probes


def local_lookups(
    replica: Replica, n: int, result: Result, directory: Path, count: int, say: Say
) -> None:
    rng = random.Random(11)
    for institution, number, _ in lookup_probes(n, 2_000, rng):  # the reader and its cache
        replica.is_listed_account(institution, number)
    probes = lookup_probes(n, count, rng)
    wrong = 0
    started = time.perf_counter()
    for institution, number, listed in probes:
        found = replica.is_listed_account(institution, number)
        wrong += (found is not None) != listed
    result.lookup_seconds = time.perf_counter() - started
    result.lookups = count
    if wrong:
        result.problems.append(f"{wrong} lookups answered wrongly")

    # The baseline: a bare indexed SELECT on a one-column table of the list's subject keys.
    path = directory / "keys.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE keys (k TEXT NOT NULL)")
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO keys VALUES (?)", ((subject_key(i),) for i in range(n)))
        conn.execute("COMMIT")
        conn.execute("CREATE INDEX keys_k ON keys (k)")
        keys = [(f"{inst}/{num}", listed) for inst, num, listed in probes]
        query = "SELECT k FROM keys WHERE k = ?"
        for key, _ in keys[:2_000]:
            conn.execute(query, (key,)).fetchone()
        wrong = 0
        started = time.perf_counter()
        for key, listed in keys:
            wrong += (conn.execute(query, (key,)).fetchone() is not None) != listed
        result.base_lookup_seconds = time.perf_counter() - started
        if wrong:
            result.problems.append(f"{wrong} baseline lookups answered wrongly")
    finally:
        conn.close()
        path.unlink()
    say(
        f"{result.database}: replica lookups {count / result.lookup_seconds:,.0f}/s, bare "
        f"sqlite3 {count / result.base_lookup_seconds:,.0f}/s"
    )


async def run_database(setup: Setup, directory: Path, args: argparse.Namespace, say: Say) -> Result:
    result = Result(setup.label, setup.loaded)
    bank = setup.client(SENDER)
    try:
        replica = await full_sync(setup, bank, result, directory, args, say)
        try:
            # A second bare server for the unary baselines: it echoes, it streams nothing.
            parts_file = directory / "echo.parts"
            write_parts(parts_file, [b""])
            with baseline_server(setup.hub.pki_dir, parts_file, setup.hub.tls(SENDER)) as base:
                await publication(setup, replica, result, args.list_publish, base, say)
                await batch_checks(setup, base, result, args, say)
            local_lookups(replica, setup.loaded.entries, result, directory, args.list_lookups, say)
        finally:
            replica.close()
    finally:
        await bank.close()
    if result.problems:
        say(f"{setup.label}: PROBLEMS: {result.problems[:5]}")
    return result


def databases(args: argparse.Namespace, directory: Path) -> list[tuple[str, Any]]:
    """(label, context manager making a fresh database URL) for each database to run on."""

    @contextmanager
    def sqlite() -> Iterator[str]:
        yield f"sqlite:///{directory}/hub-{uuid.uuid4().hex[:8]}.db"

    found: list[tuple[str, Any]] = [("SQLite", sqlite)]
    base = next((os.environ[v] for v in PG_VARS if os.environ.get(v)), None)
    if base and not args.no_postgres:
        found.append(
            (f"PostgreSQL {postgres_version(base).split()[0]}", lambda: postgres_database(base))
        )
    else:
        print(f"blacklist: PostgreSQL skipped: set {' or '.join(PG_VARS)} to include it")
    return found


def measure(args: argparse.Namespace) -> list[Result]:
    def say(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {BENCH}: {message}", flush=True)

    results = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stophub-list-")))
        data_keys(tmp)
        key = list_key()
        for label, database in databases(args, tmp):
            slug = label.split()[0]
            directory = tmp / slug
            with (
                database() as url,
                hub_with_list(label, url, directory, args.list_entries, key, say) as setup,
            ):
                say(f"{label}: hub pid {setup.pid} on {setup.hub.target} (mutual TLS)")
                results.append(asyncio.run(run_database(setup, directory, args, say)))
    return results


# ---- the table --------------------------------------------------------------------------------


def to_rows(results: Sequence[Result]) -> list[Row]:
    rows = []
    for r in results:
        n = r.loaded.entries
        invalid = f" INVALID: {'; '.join(r.problems[:3])}" if r.problems else ""
        where = f"{r.database}, {n:,} entries"
        rows.append(
            Row(
                BENCH,
                f"bulk load before the hub starts (informational: {r.loaded.seconds:.0f} s), "
                f"{where}",
                n / r.loaded.seconds,
                "entries/s",
            )
        )
        stream = f"bare grpc.aio stream of the same {r.sync_bytes / 1e6:,.0f} MB, mutual TLS"
        sync, raw, base = best(r.replica_runs), best(r.raw_runs), best(r.base_runs)
        of = f"best of {len(r.replica_runs)}" if len(r.replica_runs) > 1 else "one run"
        rate = r.rate(sync.seconds)
        rows.append(
            Row(
                BENCH,
                f"full sync to a replica (CLEAR, applied, checkpoint verified; {of}: "
                f"{', '.join(f'{r.rate(t.seconds) / 1e3:,.0f}k' for t in r.replica_runs)}; "
                f"hub CPU {sync.hub_cpu / sync.seconds:.0%}, replica CPU "
                f"{sync.own_cpu / sync.seconds:.0%} of a core), {where}{invalid}",
                rate,
                "entries/s",
                stream,
                r.rate(base.seconds),
                True,
                "≥ 100,000 entries/s",
                rate >= TARGET_SYNC_RATE and not invalid,
            )
        )
        rows.append(
            Row(
                BENCH,
                f"SyncList raw stream (parts read, not applied; {of}: "
                f"{', '.join(f'{r.rate(t.seconds) / 1e3:,.0f}k' for t in r.raw_runs)}; hub CPU "
                f"{raw.hub_cpu / raw.seconds:.0%} of a core), {where}{invalid}",
                r.rate(raw.seconds),
                "entries/s",
                stream,
                r.rate(base.seconds),
                True,
            )
        )
        echo = f"echo round trip, same {r.publish_size:,} B request"
        for q in (50, 99):
            value = percentile(r.publish, q)
            rows.append(
                Row(
                    BENCH,
                    f"p{q} publication to a following replica's copy, {len(r.publish)} "
                    f"entries one at a time (the call alone: "
                    f"{percentile(r.publish_rpc, q) * 1e3:.1f} ms), {r.database}{invalid}",
                    value * 1e3,
                    "ms",
                    echo,
                    percentile(r.publish_echo, q) * 1e3 if r.publish_echo else None,
                    False,
                    "< 1 s",
                    value < TARGET_PUBLICATION and not invalid,
                )
            )
        for c in r.checks:
            bad = f" INVALID: {'; '.join(c.problems[:3])}" if c.problems else ""
            rows.append(
                Row(
                    BENCH,
                    f"CheckList, 1,000 subjects a call, {c.concurrency} in flight, {c.calls} "
                    f"calls (call p50 {c.hub.p(50) * 1e3:.0f} ms; hub CPU "
                    f"{c.hub_cpu / c.hub.seconds:.0%} of a core), {where}{bad}",
                    c.rate(c.hub),
                    "ids/s",
                    f"echo, same {c.size:,} B requests",
                    c.rate(c.echo),
                    True,
                )
            )
        if r.lookups:
            rows.append(
                Row(
                    BENCH,
                    f"replica is_listed_account, {r.lookups:,} random accounts (half listed), "
                    f"one thread, {n:,}-entry copy{invalid}",
                    r.lookups / r.lookup_seconds,
                    "lookups/s",
                    "bare sqlite3 indexed SELECT, one-column table of the same keys",
                    r.lookups / r.base_lookup_seconds,
                    True,
                )
            )
    return rows


def rows(args: argparse.Namespace) -> list[Row]:
    """The benchmark's rows for `python -m bench`; `args` as `add_arguments` defines them."""
    return to_rows(measure(_with_defaults(args)))


# ---- command line ---------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("blacklist")
    g.add_argument(
        "--list-entries", type=int, help="entries on the list (default 1,000,000; quick 100,000)"
    )
    g.add_argument(
        "--list-publish", type=int, help="entries published to the following replica (200; 50)"
    )
    g.add_argument("--list-check-calls", type=int, help="CheckList calls per concurrency (100; 20)")
    g.add_argument(
        "--list-check-concurrency",
        type=lambda s: [int(x) for x in s.split(",")],
        help="CheckList calls in flight, comma-separated (default 1,4)",
    )
    g.add_argument("--list-lookups", type=int, help="replica lookups (200,000; 20,000)")
    g.add_argument(
        "--list-repeats",
        type=int,
        help="full syncs (raw, baseline and replica) each, the best reported (3; quick 1)",
    )
    g.add_argument(
        "--list-profile",
        type=Path,
        help="record py-spy stacks of the hub and the replica during the full sync, into DIR",
    )


def _with_defaults(args: argparse.Namespace) -> argparse.Namespace:
    quick = bool(getattr(args, "quick", False))
    values = vars(args).copy()
    defaults: dict[str, Any] = {
        "list_entries": 100_000 if quick else 1_000_000,
        "list_publish": 50 if quick else 200,
        "list_check_calls": 20 if quick else 100,
        "list_check_concurrency": [1, 4],
        "list_lookups": 20_000 if quick else 200_000,
        "list_repeats": 1 if quick else 3,
        "list_profile": None,
        "no_postgres": False,
    }
    for name, default in defaults.items():
        if values.get(name) is None:
            values[name] = default
    return argparse.Namespace(**values)


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["baseline-server"]:
        p = argparse.ArgumentParser(prog="python -m bench.blacklist baseline-server")
        p.add_argument("--address", required=True)
        p.add_argument("--tls-dir", type=Path, required=True)
        p.add_argument("--parts", type=Path, required=True)
        a = p.parse_args(argv[1:])
        asyncio.run(serve_baseline(a.address, a.tls_dir, a.parts))
        return 0
    return standalone(argv, "python -m bench.blacklist", __doc__ or "", add_arguments, rows)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
