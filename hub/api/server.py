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
    ) -> None:
        self.scheduler = scheduler
        self.lists = lists
        self.hub = hub
        self.router = router
        self.server = server
        self.health = health_servicer
        self.executor = executor
        self.port = port

    async def stop(self, grace: float = 2.0) -> None:
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.router.close()
        if self.lists is not None:
            await self.lists.watcher.close()
        await self.server.stop(grace)
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
) -> HubServer:
    """Bind `address` (host:port, port 0 for any free port) and start serving.

    With `tls`, the port speaks TLS only and every client must present a certificate the
    network's CA issued (health and reflection included); the hub then requires each
    request's sender to be the institution that certificate names. Without it the port is
    plain text: development only."""
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hub")
    # The hub notifies the router, and the router calls the hub: break the cycle with a
    # forwarder that is pointed at the router once both exist.
    forward = _Forwarder()
    hub = hub_factory(forward)
    runner = Runner(hub, executor)
    router = DeliveryRouter(runner, ack_timeout=ack_timeout)
    forward.target = router
    router.bind(asyncio.get_running_loop())
    server = grpc.aio.server(
        interceptors=[DecodeGuard(runner)],
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
    scheduler = None
    if sweep_interval:
        scheduler = start_sweeping(hub, executor, sweep_interval)
    log.info("StopHub serving on port %d (%s)", port, "mutual TLS" if tls else "PLAIN TEXT")
    return HubServer(hub, router, server, health_servicer, executor, port, scheduler, lists)


AUDIT_LOG_INTERVAL = 0.5


def start_sweeping(hub: Hub, executor: ThreadPoolExecutor, interval: float) -> AsyncIOScheduler:
    """APScheduler drives the clock sweep. Its job store is in memory and its own: the clocks
    themselves are rows, claimed with SKIP LOCKED, so any number of hubs may sweep."""
    loop = asyncio.get_running_loop()

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
            return
        except Exception:
            log.exception("clock sweep failed; the next one retries")
            return
        if fired:
            log.info("fired %d clock step(s)", fired)

    # A sweep still running when the next is due is skipped by design (max_instances=1);
    # APScheduler reports each skip as a warning, which would bury the real ones.
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
