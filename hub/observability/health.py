"""gRPC health that follows the database, and a plain-text port that serves only health.

A probe (a `SELECT 1` through the store's read engine) runs every `interval` seconds on a
thread of its own, never on the event loop, and gets `timeout` seconds to answer. When it
fails or is late, "" and every service are set NOT_SERVING; when it succeeds again, SERVING.
A probe still hanging from an earlier tick (a database host that vanished: the driver waits
for its connect timeout) is not joined by another one; the status stays NOT_SERVING until one
answers.

The kubelet's gRPC readiness probe cannot present a client certificate, so it cannot reach
the mutual-TLS port: `--health-address` opens a second, plain-text port with only
grpc.health.v1.Health on it (no hub service, no reflection), backed by the same servicer, so
both ports answer the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from sqlalchemy import text

from hub.store.sql import SqlStore

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
INTERVAL = 5.0
TIMEOUT = 2.0


def sql_probe(store: SqlStore) -> Callable[[], None]:
    """Raises unless the database answers `SELECT 1`. Through the read engine's pool: on
    PostgreSQL its pre-ping replaces a connection a restart cut, so a failure means no new
    connection could be made either."""

    def probe() -> None:
        with store.read_engine.connect() as conn:
            conn.execute(text("SELECT 1")).scalar()

    return probe


class DatabaseHealth:
    """Sets `names` on `servicer` SERVING or NOT_SERVING as the probe finds the database."""

    def __init__(
        self,
        servicer: HealthServicer,
        names: Sequence[str],
        probe: Callable[[], None],
        *,
        interval: float = INTERVAL,
        timeout: float = TIMEOUT,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.servicer = servicer
        self.names = tuple(names)
        self.probe = probe
        self.interval = interval
        self.timeout = timeout
        self.on_change = on_change
        self.up: bool | None = None
        self.checks = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="health")
        self._pending: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="database-health")

    async def _run(self) -> None:
        while not self._stopped:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("database health check failed; the next one retries")
            await asyncio.sleep(self.interval)

    async def check(self) -> bool:
        """Probe once (or wait for the probe still under way) and set the statuses."""
        self.checks += 1
        if self._pending is None or self._pending.done():
            self._pending = asyncio.wrap_future(self._executor.submit(self.probe))
        detail = ""
        try:
            await asyncio.wait_for(asyncio.shield(self._pending), self.timeout)
        except TimeoutError:
            up, detail = False, f"no answer within {self.timeout:g} s"
        except asyncio.CancelledError:
            raise
        except Exception as err:
            up, detail = False, str(err).splitlines()[0] if str(err) else type(err).__name__
        else:
            up = True
        await self._set(up, detail)
        return up

    async def _set(self, up: bool, detail: str = "") -> None:
        if up == self.up or self._stopped:
            return
        first = self.up is None
        self.up = up
        for name in self.names:
            await self.servicer.set(name, SERVING if up else NOT_SERVING)
        if not up:
            log.warning("database unreachable (%s): health NOT_SERVING", detail)
        elif not first:
            log.warning("database reachable again: health SERVING")
        if self.on_change is not None:
            self.on_change(up)

    async def stop(self) -> None:
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # A probe hanging on a dead host finishes on its own; nothing waits for it.
        self._executor.shutdown(wait=False, cancel_futures=True)


async def serve_health(servicer: HealthServicer, address: str) -> tuple[grpc.aio.Server, int]:
    """A plain-text port with grpc.health.v1.Health only; (server, bound port)."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind the health port {address}")
    await server.start()
    log.info("health (plain text, grpc.health.v1 only) on port %d", port)
    return server, port
