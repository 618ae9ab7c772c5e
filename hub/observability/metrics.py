"""Prometheus metrics of one hub, on their own registry (several hubs in one process, as in
the tests, do not share or clash), served over HTTP at /metrics (docs/operations.md).

- RPCs: an interceptor counts every call by full method and status code when it ends
  (streams included) and times unary calls (time.perf_counter: a duration, not a time).
- Delivery: the router reports its open streams and, for each delivery acknowledged, the
  case time (the hub's Clock) from its commit to its acknowledgement.
- Database figures (open clocks, breaches, the list's version) come from a snapshot that a
  scrape refreshes at most every `max_age` seconds, one query for all of them; without
  scrapes the database is never asked.
- The holiday calendar: whether the hub has the official one for the current and the next
  year (by the hub's Clock, in China), asked of the calendar at each scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
import threading
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
)
from dataclasses import dataclass, field
from datetime import date, datetime
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    make_wsgi_app,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hub.domain.workdays import CHINA_TZ, WorkingDays, year_known
from hub.observability import logs
from hub.service import audittags
from hub.store.sql import SqlStore

log = logging.getLogger(__name__)

# Unary calls: a signature check and one commit take a few ms; a slow database, seconds.
RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Commit to acknowledgement: sub-second on a live stream; minutes while an institution is away.
LAG_BUCKETS = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
# The garbage collector's pauses: a young generation in well under a millisecond; a full
# collection of a hub with 1,000 streams, 100 ms and more (hub/system/memory.py).
GC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
UNKNOWN_METHOD = "unknown"
SNAPSHOT_MAX_AGE = 5.0


@dataclass(frozen=True)
class Snapshot:
    """What the database says, per clock kind."""

    open_clocks: Mapping[str, int] = field(default_factory=dict)
    # Open clocks whose deadline already passed (breached, not yet met).
    overdue_clocks: Mapping[str, int] = field(default_factory=dict)
    # Clocks that ever breached their deadline, open or closed.
    breaches: Mapping[str, int] = field(default_factory=dict)
    list_version: int = 0


class SnapshotCollector(Collector):
    """The database figures, read by `read` at most once every `max_age` seconds however
    often Prometheus (or several of them) scrapes; a failed read keeps the last snapshot
    (its age says how old) and waits `max_age` too before the next try."""

    def __init__(
        self,
        read: Callable[[], Snapshot],
        *,
        max_age: float = SNAPSHOT_MAX_AGE,
        kinds: Iterable[str] = (),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.read = read
        self.max_age = max_age
        # Every kind the policy knows is exported, at 0 until a clock of it exists, so an
        # alert on increase() sees the first breach.
        self.kinds = tuple(dict.fromkeys(kinds))
        self.monotonic = monotonic
        self.reads = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._read_at: float | None = None  # of the last successful read
        self._tried_at: float | None = None

    def snapshot(self) -> Snapshot | None:
        with self._lock:
            now = self.monotonic()
            if self._tried_at is None or now - self._tried_at >= self.max_age:
                self._tried_at = now
                self.reads += 1
                try:
                    self._snapshot = self.read()
                except Exception as err:
                    self.errors += 1
                    log.warning("metrics snapshot not refreshed: %s", err)
                else:
                    self._read_at = now
            return self._snapshot

    def age(self) -> float | None:
        if self._read_at is None:
            return None
        return max(0.0, self.monotonic() - self._read_at)

    def describe(self) -> Iterable[Metric]:
        # Registration asks for the names only: no database read.
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        return self._families(self.snapshot())

    def _families(self, snap: Snapshot | None) -> Iterator[Metric]:
        kinds = list(self.kinds)
        if snap is not None:
            for by_kind in (snap.open_clocks, snap.overdue_clocks, snap.breaches):
                kinds.extend(k for k in by_kind if k not in kinds)
        open_ = GaugeMetricFamily(
            "stophub_clocks_open", "Case clocks running now, by clock kind.", labels=["kind"]
        )
        overdue = GaugeMetricFamily(
            "stophub_clocks_overdue",
            "Running case clocks already past their deadline (breached, not yet met).",
            labels=["kind"],
        )
        breaches = CounterMetricFamily(
            "stophub_clock_breaches",
            "Case clocks that passed their deadline before they were met, by clock kind "
            "(all time, from the database: the same figure on every hub).",
            labels=["kind"],
        )
        version = GaugeMetricFamily(
            "stophub_blacklist_version", "The blacklist's current version (its last change)."
        )
        if snap is not None:
            for kind in kinds:
                open_.add_metric([kind], snap.open_clocks.get(kind, 0))
                overdue.add_metric([kind], snap.overdue_clocks.get(kind, 0))
                breaches.add_metric([kind], snap.breaches.get(kind, 0))
            version.add_metric([], snap.list_version)
        yield open_
        yield overdue
        yield breaches
        yield version
        age = GaugeMetricFamily(
            "stophub_snapshot_age_seconds",
            "Seconds since the database figures above were read.",
        )
        if snap is not None and (seconds := self.age()) is not None:
            age.add_metric([], seconds)
        yield age
        yield CounterMetricFamily(
            "stophub_snapshot_errors",
            "Reads of the database figures that failed (the last snapshot stays).",
            value=self.errors,
        )


class CalendarCollector(Collector):
    """`stophub_calendar_official{year, which}`: 1 when the calendar has the official holiday
    calendar of the current (`which="current"`) or the next (`which="next"`) year, 0 while
    working-day deadlines there are estimated. The years follow the hub's clock."""

    def __init__(self, calendar: WorkingDays, now: Callable[[], datetime]) -> None:
        self.calendar = calendar
        self.now = now

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        today: date = self.now().astimezone(CHINA_TZ).date()
        for which, year in (("current", today.year), ("next", today.year + 1)):
            family.add_metric([str(year), which], 1 if year_known(self.calendar, year) else 0)
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "stophub_calendar_official",
            "1 when the hub has the official holiday calendar of the year (its policy file or "
            "its chinesecalendar package), 0 when working-day deadlines counted over it are "
            "estimated (Monday to Friday); for the current and the next year.",
            labels=["year", "which"],
        )


class RefusedEntriesCollector(Collector):
    """`stophub_audit_entries_refused_total`: audit entries the sequencer of this process
    refused because the hub's tag on them did not verify (rows written by something other
    than the hub; docs/audit.md). Any rise is an alarm."""

    def describe(self) -> Iterable[Metric]:
        return [self._family(None)]

    def collect(self) -> Iterable[Metric]:
        return [self._family(audittags.refused_total())]

    @staticmethod
    def _family(value: int | None) -> CounterMetricFamily:
        return CounterMetricFamily(
            "stophub_audit_entries_refused",
            "Audit entries the sequencer refused because the hub's tag on them did not verify "
            "(written by something other than the hub): never placed in the log.",
            value=value,
        )


def sql_snapshot(store: SqlStore) -> Callable[[], Snapshot]:
    """One read-only transaction: open and breached clocks counted by kind, and the list's
    state through the store's port."""

    def read() -> Snapshot:
        open_: dict[str, int] = {}
        overdue: dict[str, int] = {}
        with store(read_only=True) as uow:
            for kind, breached, n in uow.reports.open_clocks_by_kind():
                open_[kind] = open_.get(kind, 0) + n
                if breached:
                    overdue[kind] = overdue.get(kind, 0) + n
            breaches = dict(uow.reports.breached_clocks_by_kind())
            version = uow.lists.state().version
        return Snapshot(open_, overdue, breaches, version)

    return read


SWEEP_OUTCOMES = ("ok", "database_unavailable", "failed")


class HubMetrics:
    """One hub's metrics, on `registry` (a new one unless given)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # The process's own figures (process_cpu_seconds_total, process_resident_memory_bytes,
        # open fds, ...; python_info), on this registry too.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)  # python_gc_collections_total and what they collected
        self.rpc_handled = Counter(
            "stophub_rpc_handled",
            "RPCs finished, by full method and gRPC status code (streams when they end).",
            ["method", "code"],
            registry=r,
        )
        self.rpc_duration = Histogram(
            "stophub_rpc_duration_seconds",
            "Time the hub took for a unary RPC, by full method and gRPC status code.",
            ["method", "code"],
            buckets=RPC_BUCKETS,
            registry=r,
        )
        self.rpc_in_flight = Gauge(
            "stophub_rpc_in_flight",
            "RPCs under way, by full method (open streams included).",
            ["method"],
            registry=r,
        )
        self.streams = Gauge(
            "stophub_delivery_streams_connected",
            "Delivery streams (StreamDeliveries) subscribed on this hub.",
            registry=r,
        )
        self.delivery_lag = Histogram(
            "stophub_delivery_lag_seconds",
            "Case time from a delivery's commit to the recipient's acknowledgement, for "
            "deliveries this hub sent.",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.sweeps = Counter(
            "stophub_clock_sweeps",
            "Clock sweeps this hub finished, by outcome (ok, database_unavailable, failed): a "
            "hub whose ok count stops rising fires no deadline.",
            ["outcome"],
            registry=r,
        )
        for outcome in SWEEP_OUTCOMES:
            self.sweeps.labels(outcome)
        self.audit_log_forked = Gauge(
            "stophub_audit_log_forked",
            "1 while the database's audit log tree is not an extension of the newest checkpoint "
            "this hub signed or verified (rolled back or forked under it): the hub signs no "
            "checkpoint until it is restored.",
            registry=r,
        )
        self.wakeups_sent = Counter(
            "stophub_wakeups_sent",
            "NOTIFYs this hub sent to wake the other replicas on its PostgreSQL database, each "
            "for the commits of a few milliseconds (ADR 22).",
            registry=r,
        )
        self.wakeups_received = Counter(
            "stophub_wakeups_received",
            "Wake-ups this hub heard from the other replicas (its own are not counted).",
            registry=r,
        )
        self.wakeup_listening = Gauge(
            "stophub_wakeup_listening",
            "1 while this hub listens for the other replicas' wake-ups (PostgreSQL only); 0: "
            "their deliveries reach streams here on the tick only.",
            registry=r,
        )
        self.wakeup_reconnects = Counter(
            "stophub_wakeup_reconnects",
            "Times the wake-up connection was opened again after it was lost (each wakes "
            "every stream here once).",
            registry=r,
        )
        self.gc_pause = Histogram(
            "stophub_gc_pause_seconds",
            "How long each of Python's garbage collections held the whole hub process (no "
            "request, stream or clock moves meanwhile), by generation (2: a full collection).",
            ["generation"],
            buckets=GC_BUCKETS,
            registry=r,
        )
        for generation in ("0", "1", "2"):
            self.gc_pause.labels(generation)
        r.register(RefusedEntriesCollector())
        self.database_up: Gauge | None = None  # with a database probe only
        self.collector: SnapshotCollector | None = None

    # ---- what the router reports (hub.api.delivery.DeliveryMetrics) --------------------------

    def streams_connected(self, count: int) -> None:
        self.streams.set(count)

    def delivery_acknowledged(self, lag_seconds: float) -> None:
        self.delivery_lag.observe(max(0.0, lag_seconds))

    # ---- wake-ups between replicas (hub.store.wakeups.WakeMetrics) ----------------------------

    def wakeup_sent(self) -> None:
        self.wakeups_sent.inc()

    def wakeup_received(self) -> None:
        self.wakeups_received.inc()

    def wakeup_listening_now(self, listening: bool, *, again: bool) -> None:
        self.wakeup_listening.set(1 if listening else 0)
        if again:
            self.wakeup_reconnects.inc()

    def gc_paused(self, generation: int, seconds: float) -> None:
        """One garbage collection's pause (hub.system.memory.GcPauses)."""
        self.gc_pause.labels(str(generation)).observe(seconds)

    # ---- the audit log -----------------------------------------------------------------------

    def audit_log_forked_now(self, forked: bool) -> None:
        """What the hub's checkpoint memory found (hub.service.auditlog.CheckpointMemory)."""
        self.audit_log_forked.set(1 if forked else 0)

    # ---- the database ------------------------------------------------------------------------

    def database_reachable(self, up: bool) -> None:
        """What the health probe found (hub.observability.health)."""
        if self.database_up is None:
            self.database_up = Gauge(
                "stophub_database_up",
                "1 when the last health probe reached the database, 0 when it did not.",
                registry=self.registry,
            )
        self.database_up.set(1 if up else 0)

    def watch_database(
        self,
        read: Callable[[], Snapshot],
        *,
        max_age: float = SNAPSHOT_MAX_AGE,
        kinds: Iterable[str] = (),
    ) -> SnapshotCollector:
        self.collector = SnapshotCollector(read, max_age=max_age, kinds=kinds)
        self.registry.register(self.collector)
        return self.collector

    def watch_calendar(self, calendar: WorkingDays, now: Callable[[], datetime]) -> None:
        self.registry.register(CalendarCollector(calendar, now))

    def rpc_done(self, method: str, code: str, seconds: float | None) -> None:
        self.rpc_handled.labels(method, code).inc()
        if seconds is not None:
            self.rpc_duration.labels(method, code).observe(seconds)


# ---- the RPC interceptor -----------------------------------------------------------------------


def _status(context: Any, exc: BaseException | None) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED"
    # A stream whose client hung up may end without an exception (the handler saw the call
    # end and returned): it is still the client's cancellation, not a success.
    with contextlib.suppress(Exception):
        if exc is None and context.cancelled():
            return "CANCELLED"
    try:
        code = context.code()
    except Exception:
        code = None
    if isinstance(code, grpc.StatusCode):
        name = code.name
    elif isinstance(code, int):
        name = next((s.name for s in grpc.StatusCode if s.value[0] == code), "UNKNOWN")
    else:
        name = "OK"
    if exc is not None and name == "OK":
        return "UNKNOWN"  # an exception the handler did not turn into a status
    return name


class RpcInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Counts and times every call, and names it (`rpc`) in the log lines written for it.
    First in the chain, so refusals the inner interceptors make (DecodeGuard's) count too."""

    def __init__(self, metrics: HubMetrics) -> None:
        self.metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        method = str(handler_call_details.method)
        if handler is None:
            # No such method: answered UNIMPLEMENTED by gRPC. The name is the caller's
            # choice, so it is not a label value.
            self.metrics.rpc_done(UNKNOWN_METHOD, "UNIMPLEMENTED", None)
            return handler
        for attr in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            behavior = getattr(handler, attr)
            if behavior is not None:
                wrapped = self._wrap(behavior, method, timed=attr.endswith("_unary"))
                return handler._replace(**{attr: wrapped})  # type: ignore[attr-defined,no-any-return]
        return handler

    def _wrap(self, behavior: Callable[..., Any], method: str, *, timed: bool) -> Any:
        metrics = self.metrics
        if inspect.isasyncgenfunction(behavior):

            async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                logs.enter(rpc=method)
                metrics.rpc_in_flight.labels(method).inc()
                error: BaseException | None = None
                try:
                    async for item in behavior(request, context):
                        yield item
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    metrics.rpc_in_flight.labels(method).dec()
                    metrics.rpc_done(method, _status(context, error), None)

            return stream
        if inspect.iscoroutinefunction(behavior):

            async def call(request: Any, context: Any) -> Any:
                logs.enter(rpc=method)
                metrics.rpc_in_flight.labels(method).inc()
                started = time.perf_counter()
                error: BaseException | None = None
                try:
                    return await behavior(request, context)
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    metrics.rpc_in_flight.labels(method).dec()
                    elapsed = time.perf_counter() - started
                    metrics.rpc_done(method, _status(context, error), elapsed if timed else None)

            return call
        return behavior  # a synchronous handler (none in the hub): left as it is


# ---- HTTP --------------------------------------------------------------------------------------


def parse_address(address: str) -> tuple[str, int]:
    """'HOST:PORT', '[::]:PORT' or ':PORT' (all interfaces)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address {address!r}: write HOST:PORT, e.g. 0.0.0.0:9464")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per scrape on stderr is noise


class MetricsHttpServer:
    """The registry at http://HOST:PORT/metrics, served by a daemon thread."""

    def __init__(self, registry: CollectorRegistry, address: str) -> None:
        host, port = parse_address(address)
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family = info[0][0]

        class Server(ThreadingMixIn, WSGIServer):
            daemon_threads = True
            address_family = family

        metrics_app = make_wsgi_app(registry)

        def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            if environ.get("PATH_INFO", "") in ("/metrics", "/metrics/"):
                body: Iterable[bytes] = metrics_app(environ, start_response)
                return body
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"StopHub metrics are at /metrics\n"]

        self.httpd = make_server(host, port, app, Server, handler_class=_Quiet)
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name="metrics-http", daemon=True
        )
        self.thread.start()
        log.info("metrics at http://%s:%d/metrics", host, self.port)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
