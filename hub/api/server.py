"""The grpc.aio server: StopHub's services plus health checking and reflection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from hub.api.decoding import DecodeGuard
from hub.api.delivery import DeliveryRouter, DeliveryServicer
from hub.api.lists import AppealServicer, ListServicer
from hub.api.servicers import (
    AuditServicer,
    CaseServicer,
    DistributionServicer,
    InstitutionServicer,
    OrderServicer,
    Runner,
    SlaServicer,
)
from hub.crypto.pki import TlsConfig
from hub.observability.health import DatabaseHealth, serve_health
from hub.observability.metrics import (
    HubMetrics,
    MetricsHttpServer,
    RpcInterceptor,
    Snapshot,
)
from hub.service.handlers import Hub
from hub.service.ports import Notifier, PendingDelivery, StoreUnavailable
from stophub.v1 import (
    appeal_pb2,
    appeal_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    blacklist_pb2,
    case_pb2,
    case_pb2_grpc,
    delivery_pb2,
    delivery_pb2_grpc,
    institution_pb2,
    institution_pb2_grpc,
    order_pb2,
    order_pb2_grpc,
    returns_pb2,
    returns_pb2_grpc,
    sla_pb2,
    sla_pb2_grpc,
)

log = logging.getLogger(__name__)


class _Forwarder:
    def __init__(self) -> None:
        self.target: Notifier | None = None

    def notify(self, recipients: Iterable[str], deliveries: Sequence[PendingDelivery] = ()) -> None:
        if self.target is not None:
            self.target.notify(recipients, deliveries)


SERVICE_NAMES = (
    case_pb2.DESCRIPTOR.services_by_name["CaseService"].full_name,
    order_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name,
    delivery_pb2.DESCRIPTOR.services_by_name["DeliveryService"].full_name,
    institution_pb2.DESCRIPTOR.services_by_name["InstitutionService"].full_name,
    sla_pb2.DESCRIPTOR.services_by_name["SlaService"].full_name,
    returns_pb2.DESCRIPTOR.services_by_name["DistributionService"].full_name,
    blacklist_pb2.DESCRIPTOR.services_by_name["ListService"].full_name,
    appeal_pb2.DESCRIPTOR.services_by_name["AppealService"].full_name,
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
)


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
    ) -> None:
        self.scheduler = scheduler
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
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self.database_health is not None:
            await self.database_health.stop()
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.router.close()
        if self.lists is not None:
            await self.lists.watcher.close()
        await self.server.stop(grace)
        if self.health_server is not None:
            await self.health_server.stop(0)
        if self.metrics_http is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.metrics_http.stop)
        self.executor.shutdown(wait=True, cancel_futures=True)

    async def wait(self) -> None:
        await self.server.wait_for_termination()


async def start_server(
    hub_factory: Callable[[Notifier], Hub],
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
) -> HubServer:
    """Bind `address` (host:port, port 0 for any free port) and start serving.

    With `tls`, the port speaks TLS only and every client must present a certificate the
    network's CA issued (health and reflection included); the hub then requires each
    request's sender to be the institution that certificate names. Without it the port is
    plain text: development only.

    Operations (docs/operations.md): `metrics_address` serves Prometheus metrics at
    http://HOST:PORT/metrics, the database figures read by `read_snapshot` at most every
    `snapshot_max_age` seconds; `database_probe` (raising when the database cannot be
    reached) runs every `health_interval` seconds and turns health NOT_SERVING while it
    fails; `health_address` opens a plain-text port serving only grpc.health.v1.Health."""
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hub")
    # The hub notifies the router, and the router calls the hub: break the cycle with a
    # forwarder that is pointed at the router once both exist.
    forward = _Forwarder()
    hub = hub_factory(forward)
    runner = Runner(hub, executor)
    router = DeliveryRouter(runner, ack_timeout=ack_timeout)
    forward.target = router
    router.bind(asyncio.get_running_loop())
    metrics = HubMetrics()
    router.metrics = metrics
    if read_snapshot is not None:
        metrics.watch_database(
            read_snapshot,
            max_age=snapshot_max_age,
            kinds=[c.name for c in hub.clock_policy.clocks],
        )
    server = grpc.aio.server(
        # The metrics first: they see what DecodeGuard refuses.
        interceptors=[RpcInterceptor(metrics), DecodeGuard(runner)],
        options=[
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.keepalive_permit_without_calls", 1),
            # Let clients ping every 10 s to detect dead links; the default refuses < 5 min.
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
            ("grpc.http2.max_ping_strikes", 0),
            ("grpc.max_receive_message_length", 8 * 1024 * 1024),
        ],
    )
    case_pb2_grpc.add_CaseServiceServicer_to_server(CaseServicer(runner), server)
    order_pb2_grpc.add_OrderServiceServicer_to_server(OrderServicer(runner), server)
    institution_pb2_grpc.add_InstitutionServiceServicer_to_server(
        InstitutionServicer(runner), server
    )
    sla_pb2_grpc.add_SlaServiceServicer_to_server(SlaServicer(runner), server)
    returns_pb2_grpc.add_DistributionServiceServicer_to_server(DistributionServicer(runner), server)
    delivery_pb2_grpc.add_DeliveryServiceServicer_to_server(
        DeliveryServicer(runner, router), server
    )
    lists = ListServicer(runner, executor)
    server.add_generic_rpc_handlers((lists.handler(),))
    appeal_pb2_grpc.add_AppealServiceServicer_to_server(AppealServicer(runner), server)
    audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(runner), server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    if tls is not None:
        credentials = grpc.ssl_server_credentials(
            [(tls.key, tls.cert)], root_certificates=tls.ca, require_client_auth=True
        )
        port = server.add_secure_port(address, credentials)
        hub.require_peer = True
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {address}")
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
        scheduler = start_sweeping(hub, executor, sweep_interval, metrics)
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
    )


AUDIT_LOG_INTERVAL = 0.5


def start_sweeping(
    hub: Hub, executor: ThreadPoolExecutor, interval: float, metrics: HubMetrics | None = None
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
            fired = await loop.run_in_executor(executor, hub.sweep)
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
            await loop.run_in_executor(executor, hub.keep_audit_log)
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
