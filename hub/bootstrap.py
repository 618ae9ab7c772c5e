"""The composition root: where the real adapters meet the core. The store, the machine's
clock, calendar and policy (hub/system), the hub's keys, the Hub and its pipeline, the
Runner, the delivery router, the list watcher, the metrics, the scheduled jobs and the gRPC
server are built here and nowhere else, and `HubServer.stop` takes them down in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
from alembic import command
from alembic.config import Config as AlembicConfig
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

import migrations
from hub.api.delivery import CHECKPOINT_EVERY, DeliveryRouter
from hub.api.lists import ListServicer
from hub.api.runner import Peers, Runner
from hub.api.server import SERVICE_NAMES, bind, grpc_server
from hub.crypto import fields
from hub.crypto.listkey import DEFAULT_FILE as DEFAULT_LIST_KEY
from hub.crypto.listkey import ENV_FILE as LIST_KEY_ENV_FILE
from hub.crypto.listkey import ENV_KEY as LIST_KEY_ENV
from hub.crypto.listkey import ListKey, load_list_key_file, resolve_list_key
from hub.crypto.pki import PkiError, TlsConfig, gateway_pins
from hub.crypto.signer import Signer, load_signer
from hub.domain.cases import Policy
from hub.domain.clocks import Policy as ClockPolicy
from hub.domain.institutions import HUB_CODE, InstitutionKind
from hub.domain.workdays import CHINA_TZ, WorkingDays
from hub.observability.health import DatabaseHealth, serve_health, sql_probe
from hub.observability.logmask import install as mask_accounts_in_logs
from hub.observability.metrics import HubMetrics, MetricsHttpServer, Snapshot, sql_snapshot
from hub.service.admin import NewKey, Registry
from hub.service.pipeline import Hub
from hub.service.ports import Clock, Notifier, StoreUnavailable
from hub.service.sweep import Jobs
from hub.store.sql import SqlStore, normalise_url
from hub.store.wakeups import PgWakeups
from hub.system import memory
from hub.system.calendar import ChineseWorkingDays, calendar_status
from hub.system.clock import SystemClock
from hub.system.policy import load_calendar, load_policy, read_policy

T = TypeVar("T")

log = logging.getLogger(__name__)

DEFAULT_DATABASE = "sqlite:///var/stophub.db"
DEFAULT_HUB_KEY = "var/hub.key"
DEFAULT_ADDRESS = "127.0.0.1:7443"
DEFAULT_TLS_DIR = "var/pki"


def alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.attributes["url"] = normalise_url(url)
    return cfg


def migrate(url: str) -> None:
    """Bring the schema to the newest Alembic revision."""
    command.upgrade(alembic_config(url), "head")


def ensure_hub_registered(store: SqlStore, key: Signer, clock: Clock) -> None:
    """The hub is a member too, so members can read its keys from the registry."""
    registry = Registry(store, clock)
    with store(read_only=True) as uow:
        hub = uow.institutions.get(HUB_CODE)
        known = hub is not None and hub.key(key.key_id) is not None
    if hub is None:
        registry.add_institution(
            HUB_CODE,
            "StopHub",
            InstitutionKind.HUB,
            [NewKey(key.algorithm, key.public_key)],
            [],
            operator="hub",
        )
    elif not known:
        registry.add_key(HUB_CODE, NewKey(key.algorithm, key.public_key), operator="hub")


def build_hub(
    store: SqlStore,
    key: Signer,
    notifier: Notifier | None = None,
    *,
    clock: Clock | None = None,
    policy: Policy | None = None,
    clock_policy: ClockPolicy | None = None,
    calendar: WorkingDays | None = None,
    list_key: ListKey | None = None,
) -> Hub:
    return Hub(
        store,
        clock or SystemClock(),
        key,
        notifier,
        policy,
        clock_policy=clock_policy or load_policy(),
        calendar=calendar or load_calendar(),
        list_key=list_key,
    )


def find_list_key(given: ListKey | str | Path | None, *, quiet: bool = False) -> ListKey | None:
    """The list key given, or the one the environment or the default file holds; None (with a
    warning, unless `quiet`) when there is none at all: the hub then serves everything but
    the list."""
    if isinstance(given, ListKey):
        return given
    if given is not None:
        return load_list_key_file(given)
    if (
        os.environ.get(LIST_KEY_ENV_FILE)
        or os.environ.get(LIST_KEY_ENV)
        or Path(DEFAULT_LIST_KEY).exists()
    ):
        return resolve_list_key()
    if quiet:
        return None
    log.warning(
        "no list key (%s, $%s or $%s): the blacklist cannot be published or checked on this "
        "hub; create one with `stophub listkey generate`",
        DEFAULT_LIST_KEY,
        LIST_KEY_ENV_FILE,
        LIST_KEY_ENV,
    )
    return None


async def serve(
    database_url: str,
    hub_key: Signer | str | Path,
    address: str = DEFAULT_ADDRESS,
    *,
    clock: Clock | None = None,
    run_migrations: bool = True,
    ack_timeout: float = 5.0,
    workers: int = 8,
    policy_file: str | Path | None = None,
    sweep_interval: float | None = 0.5,
    late_after: timedelta | None = None,
    tls: TlsConfig | None = None,
    data_keys: fields.Keyring | str | Path | None = None,
    list_key: ListKey | str | Path | None = None,
    metrics_address: str | None = None,
    health_address: str | None = None,
    health_interval: float = 5.0,
    checkpoint_every: float = CHECKPOINT_EVERY,
    gateways: Sequence[bytes] = (),
    gc_refreeze: float | None = None,
) -> tuple[HubServer, SqlStore]:
    """`hub_key`: the hub's signer, or what names it (a key file's path or a `pkcs11:` URI,
    hub/crypto/signer.py). `data_keys`: the keyring (or its file) that seals personal data;
    None keeps the one already configured in this process, and there must be one.

    `metrics_address` (HOST:PORT) serves Prometheus metrics at /metrics; `health_address`
    opens a plain-text port with grpc.health.v1 only. Health on every port follows the
    database, probed every `health_interval` seconds (docs/operations.md).

    `gateways`: the PEM client certificates of the TLCP gateways this hub trusts to forward
    institutions' verified certificates (docs/tlcp-gateway.md); checked before anything
    starts.

    `gc_refreeze` (seconds; `stophub serve` gives 600): freeze the process's objects out of
    the garbage collector's sight now and again after a full collection every so often
    (hub/system/memory.py, ADR 26). None leaves the collector as Python sets it."""
    _check_gateways(gateways, tls)
    if data_keys is not None:
        if not isinstance(data_keys, fields.Keyring):
            data_keys = fields.load_keyring_file(data_keys)
        fields.configure(data_keys)
    fields.keyring()  # no keys, no start: nothing is ever stored in plain text
    mask_accounts_in_logs()
    key = load_signer(hub_key) if isinstance(hub_key, str | Path) else hub_key
    clock = clock or SystemClock()
    policy_data = read_policy(policy_file)  # a bad file stops the start, naming the line
    calendar = ChineseWorkingDays(policy_data.calendar)
    network_list_key = find_list_key(list_key)
    if run_migrations:
        migrate(database_url)
    store = SqlStore(database_url)
    indexed = store.index_victims()  # the blind index of cases from before it (revision 0013)
    if indexed:
        log.info("blind index: %d case(s) indexed under the current data keyring", indexed)
    if not policy_data.signing.allows(HUB_CODE, key.algorithm):
        store.dispose()
        raise ValueError(
            f"the hub's key {key.key_id} is {key.algorithm}, which the policy's [signing] does "
            f"not allow: give the hub a key of an allowed algorithm (stophub keys generate)"
        )
    ensure_hub_registered(store, key, clock)
    hub = build_hub(
        store,
        key,
        clock=clock,
        clock_policy=policy_data.clocks,
        calendar=calendar,
        list_key=network_list_key,
    )
    hub.gate.algorithms = policy_data.signing
    status = calendar_status(calendar, clock.now().astimezone(CHINA_TZ).date())
    if status is not None:
        # The hub serves on: deadlines there are estimates, marked as such wherever shown.
        log.warning('%s (README, "Holidays")', status)
    server = await start(
        hub,
        address,
        ack_timeout=ack_timeout,
        workers=workers,
        sweep_interval=sweep_interval,
        tls=tls,
        metrics_address=metrics_address,
        health_address=health_address,
        database_probe=sql_probe(store),
        read_snapshot=sql_snapshot(store),
        health_interval=health_interval,
        checkpoint_every=checkpoint_every,
        # Several replicas may share a PostgreSQL database; SQLite has one hub process.
        wakeups_url=None if store.is_sqlite else database_url,
        gateways=gateways,
        gc_refreeze=gc_refreeze,
    )
    if late_after is not None:
        server.hub.sweeper.late_after = late_after
    return server, store


class HubServer:
    """A running hub on one address; `port` is the bound port (useful with port 0)."""

    def __init__(
        self,
        hub: Hub,
        router: DeliveryRouter,
        server: grpc.aio.Server,
        health_servicer: HealthServicer,
        executor: ThreadPoolExecutor,
        port: int,
        scheduler: AsyncIOScheduler | None = None,
        lists: ListServicer | None = None,
        *,
        metrics: HubMetrics | None = None,
        metrics_http: MetricsHttpServer | None = None,
        database_health: DatabaseHealth | None = None,
        health_server: grpc.aio.Server | None = None,
        health_port: int | None = None,
        wakeups: PgWakeups | None = None,
        gc_pauses: memory.GcPauses | None = None,
        refreezing: asyncio.Task[None] | None = None,
    ) -> None:
        self.scheduler = scheduler
        # The garbage collector's timing, and its refreezes when `serve` asked for them.
        self.gc_pauses = gc_pauses
        self.refreezing = refreezing
        # How this hub wakes and is woken by the other replicas on its database, if any.
        self.wakeups = wakeups
        self.lists = lists
        # This hub's metrics (its own registry), and where they are served, if anywhere.
        self.metrics = metrics or HubMetrics()
        self.metrics_http = metrics_http
        self.metrics_port = metrics_http.port if metrics_http is not None else None
        self.database_health = database_health
        # The plain-text port serving grpc.health.v1 only, if one was asked for.
        self.health_server = health_server
        self.health_port = health_port
        self.hub = hub
        self.router = router
        self.server = server
        self.health = health_servicer
        self.executor = executor
        self.port = port

    async def stop(self, grace: float = 2.0) -> None:
        """Drain, then stop (docs/failover.md): health turns NOT_SERVING, the server takes no
        new call, every delivery stream ends with UNAVAILABLE HUB_DRAINING so that its client
        moves to another replica now, and calls under way get `grace` seconds to finish."""
        if self.scheduler is not None and self.scheduler.running:
            # APScheduler shuts down in a later turn of the loop and cancels the jobs it
            # started, which end quietly; but one it starts in that same turn has not run a
            # step, the cancellation reaches it before its own code, and APScheduler logs an
            # ERROR with a traceback (at the end of a demo, of `serve`). Paused, it starts
            # none; after one turn every job started before is running.
            self.scheduler.pause()
            await asyncio.sleep(0)
            self.scheduler.shutdown(wait=False)
        if self.database_health is not None:
            await self.database_health.stop()
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        # Refusing new calls comes first, so that the streams ended below come back
        # elsewhere; gRPC starts refusing in the task's first step.
        stopping = asyncio.create_task(self.server.stop(grace), name="grpc-server-stop")
        await asyncio.sleep(0)
        if self.wakeups is not None:
            await self.wakeups.close()
        await self.router.drain()
        if self.lists is not None:
            await self.lists.watcher.close()
        await stopping
        if self.health_server is not None:
            await self.health_server.stop(0)
        if self.metrics_http is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.metrics_http.stop)
        self.executor.shutdown(wait=True, cancel_futures=True)
        if self.refreezing is not None:
            self.refreezing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.refreezing
            memory.release()
        if self.gc_pauses is not None:
            self.gc_pauses.remove()

    async def wait(self) -> None:
        await self.server.wait_for_termination()


def _check_gateways(gateways: Sequence[bytes], tls: TlsConfig | None) -> frozenset[str]:
    if gateways and tls is None:
        raise PkiError(
            "a TLCP gateway is pinned by its TLS client certificate: serve with TLS, not "
            "plain text, to trust one (docs/tlcp-gateway.md)"
        )
    return gateway_pins(gateways)


async def start(
    hub: Hub,
    address: str,
    *,
    workers: int = 8,
    ack_timeout: float = 5.0,
    sweep_interval: float | None = 0.5,
    tls: TlsConfig | None = None,
    metrics_address: str | None = None,
    health_address: str | None = None,
    database_probe: Callable[[], None] | None = None,
    read_snapshot: Callable[[], Snapshot] | None = None,
    health_interval: float = 5.0,
    health_timeout: float = 2.0,
    snapshot_max_age: float = 5.0,
    checkpoint_every: float = CHECKPOINT_EVERY,
    wakeups_url: str | None = None,
    gateways: Sequence[bytes] = (),
    gc_refreeze: float | None = None,
) -> HubServer:
    """Serve `hub` on `address` (host:port, port 0 for any free port): the request pipeline's
    threads, the delivery router, the list watcher, the metrics, the scheduled jobs and the
    gRPC server, started in that order and stopped in reverse by HubServer.stop.

    With `tls`, the port speaks TLS only and every client must present a certificate the
    network's CA issued (health and reflection included); the hub then requires each
    request's sender to be the institution that certificate names. Without it the port is
    plain text: development only.

    Operations (docs/operations.md): `metrics_address` serves Prometheus metrics at
    http://HOST:PORT/metrics, the database figures read by `read_snapshot` at most every
    `snapshot_max_age` seconds; `database_probe` (raising when the database cannot be
    reached) runs every `health_interval` seconds and turns health NOT_SERVING while it
    fails; `health_address` opens a plain-text port serving only grpc.health.v1.Health.

    Each delivery stream carries the latest signed log checkpoint at least every
    `checkpoint_every` seconds (docs/witness.md).

    `wakeups_url` (a PostgreSQL database other replicas share): commits here wake their
    streams and list followers at once, and theirs wake this hub's (ADR 22); the ticks
    (every `ack_timeout` / 2, for the list too) stay as the safety net.

    `gc_refreeze`: see `serve`. Every garbage collection's pause is timed either way
    (`stophub_gc_pause_seconds`)."""
    peers = Peers(_check_gateways(gateways, tls))
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hub")
    runner = Runner(hub, executor, peers)
    router = DeliveryRouter(runner, ack_timeout=ack_timeout)
    router.bind(asyncio.get_running_loop())
    # Commits that queue deliveries wake the router from then on, and count the first
    # attempt of those a stream here takes at once.
    hub.subscribe(router)
    hub.live_streams = router
    metrics = HubMetrics()
    router.metrics = metrics
    if read_snapshot is not None:
        metrics.watch_database(
            read_snapshot,
            max_age=snapshot_max_age,
            kinds=[c.name for c in hub.clock_policy.clocks],
        )
    metrics.watch_calendar(hub.calendar, hub.clock.now)
    hub.jobs.log_memory.on_forked = metrics.audit_log_forked_now
    if sweep_interval:
        # Before serving: what was committed while the hub was down is placed and signed.
        try:
            placed = hub.jobs.open_audit_log()
        except StoreUnavailable as err:
            log.warning("audit log waits for the database: %s", err.detail)
        else:
            if placed:
                log.info("audit log: %d entr(ies) placed and signed before serving", placed)
    lists = ListServicer(runner, executor)
    wakeups: PgWakeups | None = None
    if wakeups_url is not None:
        wakeups = PgWakeups(wakeups_url, router.wake, lists.watcher.poke, metrics=metrics)
        hub.subscribe(wakeups)
        hub.on_list_change(wakeups.list_changed)
        lists.watcher.poll = max(lists.watcher.poll, ack_timeout / 2)
        await wakeups.start()
    health_servicer = HealthServicer()
    server = grpc_server(
        runner, router, lists, health_servicer, metrics, checkpoint_every=checkpoint_every
    )
    port = bind(server, address, tls)
    hub.require_peer = tls is not None
    await server.start()
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    # The extra ports open once the hub serves: a readiness probe never finds the health
    # port before the hub.
    health_server: grpc.aio.Server | None = None
    health_port: int | None = None
    metrics_http: MetricsHttpServer | None = None
    try:
        if health_address is not None:
            health_server, health_port = await serve_health(health_servicer, health_address)
        if metrics_address is not None:
            metrics_http = MetricsHttpServer(metrics.registry, metrics_address)
    except BaseException:
        if health_server is not None:
            await health_server.stop(0)
        if wakeups is not None:
            await wakeups.close()
        await router.close()
        await lists.watcher.close()
        await server.stop(0)
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    database_health = None
    if database_probe is not None:
        # Reachable a moment ago (the store was just opened), as the statuses above say.
        metrics.database_reachable(True)
        database_health = DatabaseHealth(
            health_servicer,
            ("", *SERVICE_NAMES),
            database_probe,
            interval=health_interval,
            timeout=health_timeout,
            on_change=metrics.database_reachable,
        )
        database_health.start()
    scheduler = None
    if sweep_interval:
        scheduler = start_jobs(hub.jobs, executor, sweep_interval, metrics)
    gc_pauses = memory.GcPauses(metrics.gc_paused)
    gc_pauses.install()
    refreezing = None
    if gc_refreeze:
        # Last, once everything the hub keeps for its lifetime exists.
        frozen = memory.settle()
        log.info(
            "garbage collector: %d objects frozen; again after a full collection every %g s",
            frozen,
            gc_refreeze,
        )
        refreezing = asyncio.create_task(_refreezing(gc_refreeze), name="gc-refreeze")
    log.info("StopHub serving on port %d (%s)", port, "mutual TLS" if tls else "PLAIN TEXT")
    return HubServer(
        hub,
        router,
        server,
        health_servicer,
        executor,
        port,
        scheduler,
        lists,
        metrics=metrics,
        metrics_http=metrics_http,
        database_health=database_health,
        health_server=health_server,
        health_port=health_port,
        wakeups=wakeups,
        gc_pauses=gc_pauses,
        refreezing=refreezing,
    )


def run_to_completion(main: Coroutine[Any, Any, T], settle: float = 5.0) -> T:
    """`asyncio.run(main)`, except that gRPC's own tasks for the calls of a stopped server
    end before the loop closes (for at most `settle` seconds).

    A grpc.aio server's task for a call (`_schedule_rpc_coro`) ends some loop turns after
    `server.stop` returns: once the handler's own task has ended. asyncio.run cancels every
    task left when `main` returns, and gRPC logs such a task cancelled in the turn its
    handler ended as an exception it did not handle, with a traceback: the last lines of
    `serve` or the demo after Ctrl-C, now and then, on a busy machine."""

    async def settled() -> T:
        try:
            return await main
        finally:
            calls = [t for t in asyncio.all_tasks() if not t.done() and _grpc_call_task(t)]
            if calls:
                await asyncio.wait(calls, timeout=settle)

    return asyncio.run(settled())


def _grpc_call_task(task: asyncio.Task[Any]) -> bool:
    return getattr(task.get_coro(), "__name__", "") == "_schedule_rpc_coro"


async def _refreezing(interval: float) -> None:
    # On the event loop: the full collection holds the whole process either way, as one the
    # collector starts by itself would.
    await asyncio.sleep(min(memory.FIRST_REFREEZE, interval))
    while True:
        memory.refreeze()
        await asyncio.sleep(interval)


AUDIT_LOG_INTERVAL = 0.5


def start_jobs(
    jobs: Jobs, executor: ThreadPoolExecutor, interval: float, metrics: HubMetrics | None = None
) -> AsyncIOScheduler:
    """APScheduler drives the clock sweep. Its job store is in memory and its own: the clocks
    themselves are rows, claimed with SKIP LOCKED, so any number of hubs may sweep. Each
    sweep's outcome is counted (`stophub_clock_sweeps_total`)."""
    loop = asyncio.get_running_loop()

    def count(outcome: str) -> None:
        if metrics is not None:
            metrics.sweeps.labels(outcome).inc()

    async def sweep() -> None:
        try:
            fired = await loop.run_in_executor(executor, jobs.sweep)
        except asyncio.CancelledError:
            # The server is stopping; the sweep's transaction commits or rolls back on its
            # own thread, and whatever is still due fires on the next start.
            return
        except StoreUnavailable as err:
            # Nothing fired is lost (a step commits with its notices or not at all); steps
            # that fall due meanwhile fire on a later tick, marked late.
            log.warning("clock sweep waits for the database: %s", err.detail)
            count("database_unavailable")
            return
        except Exception:
            log.exception("clock sweep failed; the next one retries")
            count("failed")
            return
        count("ok")
        if fired:
            log.info("fired %d clock step(s)", fired)

    # APScheduler logs every run at INFO (four lines a second under `serve`, 700k a day; the
    # sweep counter says the same) and each skipped run (a sweep still going when the next is
    # due, by design: max_instances=1) as a warning, which would bury the real ones.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
    scheduler = AsyncIOScheduler(event_loop=loop)
    scheduler.add_job(
        sweep,
        "interval",
        seconds=interval,
        max_instances=1,
        coalesce=True,
        misfire_grace_time=None,
        id="clock-sweep",
    )

    async def keep_log() -> None:
        try:
            await loop.run_in_executor(executor, jobs.keep_audit_log)
        except asyncio.CancelledError:
            return
        except StoreUnavailable as err:
            log.warning("audit log waits for the database: %s", err.detail)
        except Exception:
            log.exception("placing audit entries in the log failed; the next run retries")

    scheduler.add_job(
        keep_log,
        "interval",
        # Not faster than every half second, even where clocks are swept every few ms (the
        # demo): placing entries costs a write transaction, and they can wait that long.
        seconds=max(interval, AUDIT_LOG_INTERVAL),
        max_instances=1,
        coalesce=True,
        misfire_grace_time=None,
        id="audit-log",
    )
    scheduler.start()
    return scheduler
