"""Runs the hub's synchronous pipeline off the event loop, and turns its refusals into gRPC
statuses with a hub-signed Rejection (hub/api/errors.py)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

import grpc
from cryptography import x509
from google.protobuf.message import Message

from hub.api.errors import rejection_body, status_for
from hub.crypto.pki import fingerprint, institution_from_uris, institution_of
from hub.domain.errors import DomainError, Unauthenticated
from hub.observability import logs
from hub.service.pipeline import Command, Hub
from stophub.v1 import envelope_pb2

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Message)

# Trailing metadata of every answer: the newest signed log checkpoint, a serialized Envelope
# (docs/witness.md). "-bin": gRPC carries the value as bytes.
CHECKPOINT_METADATA = "stophub-log-checkpoint-bin"
# What a pinned TLCP gateway sends with each call it forwards: the DER of the institution's
# client certificate it verified (docs/tlcp-gateway.md). From anyone else: refused.
CLIENT_CERT_METADATA = "stophub-client-cert-bin"


def peer_institution(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The institution the connection's client certificate names in its SAN URI
    (`urn:stophub:institution:<CODE>`), or None: no TLS, no certificate, no such URI. gRPC
    lists the certificate's URI SANs, and only those, under `peer_uri`."""
    uris = context.auth_context().get("peer_uri", ())
    return institution_from_uris(u.decode("utf-8", "replace") for u in uris)


class Peers:
    """Who is at the other end of a call: the institution of the connection's client
    certificate (ADR 8), or, on a connection from a pinned TLCP gateway, the institution of
    the certificate the gateway verified and forwarded (ADR 24).

    A gateway is pinned by the SHA-256 of its own client certificate: a certificate the
    network's CA issued with a gateway's name is not enough, so a CA that issues one by
    mistake does not make a gateway. The forwarded certificate is believed only from a
    pinned gateway; sent by anyone else it is refused, never ignored, so a member trying it
    learns at once that it cannot work, and the attempt is audited."""

    def __init__(self, gateways: frozenset[str] = frozenset()) -> None:
        self.gateways = gateways
        self._seen: dict[bytes, bool] = {}  # the peer's PEM -> whether it is a gateway

    def _is_gateway(self, context: grpc.aio.ServicerContext[Any, Any]) -> bool:
        if not self.gateways:
            return False
        pems = list(context.auth_context().get("x509_pem_cert", ()))
        if len(pems) != 1:
            return False
        pem = pems[0]
        known = self._seen.get(pem)
        if known is None:
            try:
                known = fingerprint(x509.load_pem_x509_certificate(pem)) in self.gateways
            except ValueError:
                known = False
            if len(self._seen) > 1024:  # certificates seen since start: a few per member
                self._seen.clear()
            self._seen[pem] = known
        return known

    def institution(self, context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
        """The peer institution, None without TLS; DomainError for a refused identity."""
        forwarded = [
            value
            for key, value in (context.invocation_metadata() or ())
            if key == CLIENT_CERT_METADATA
        ]
        if self._is_gateway(context):
            if len(forwarded) != 1 or not isinstance(forwarded[0], bytes):
                raise Unauthenticated(
                    "NO_CLIENT_CERTIFICATE",
                    f"the gateway forwarded {len(forwarded)} client certificates "
                    f"({CLIENT_CERT_METADATA}): it must pass exactly one, the one it verified",
                )
            try:
                code = institution_of(x509.load_der_x509_certificate(forwarded[0]))
            except ValueError:
                code = None
            if code is None:
                raise Unauthenticated(
                    "NO_CLIENT_CERTIFICATE",
                    "the client certificate the gateway forwarded names no institution (no "
                    "SAN URI urn:stophub:institution:<CODE>, or not a DER certificate)",
                )
            return code
        if forwarded:
            raise Unauthenticated(
                "GATEWAY_HEADER_REFUSED",
                f"{CLIENT_CERT_METADATA} is accepted only from a TLCP gateway the hub pins; "
                "this connection is not one: connect with your institution's own certificate "
                "and send no such header",
            )
        return peer_institution(context)


class Runner:
    """Runs the hub's synchronous handlers off the event loop and maps refusals."""

    def __init__(self, hub: Hub, executor: ThreadPoolExecutor, peers: Peers | None = None) -> None:
        self.hub = hub
        self.executor = executor
        self.peers = peers or Peers()
        # The read of the latest checkpoint under way: every stream and answer that finds
        # the cached one stale shares it (a broadcast's 1,000 streams found it stale together
        # and queued 1,000 reads in the request pool).
        self._refresh: asyncio.Future[bytes | None] | None = None

    async def call(self, fn: Any, *args: Any) -> Any:
        # With the caller's context: log lines written on the worker thread carry the
        # request's ids (hub.observability.logs).
        work = functools.partial(contextvars.copy_context().run, fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, work)

    async def log_checkpoint(self, *, wait: bool = True) -> bytes | None:
        """The newest signed log checkpoint (serialized Envelope), None before the first; the
        database is read at most once per LatestCheckpoint.max_age, off the event loop.
        `wait=False` (a delivery): once read, the cached one while a due read is under way,
        so the delivery does not queue behind requests for the pool thread it needs."""
        latest = self.hub.latest_checkpoint
        if not latest.stale():
            return latest.peek()
        refresh, loop = self._refresh, asyncio.get_running_loop()
        if refresh is None or refresh.done() or refresh.get_loop() is not loop:
            refresh = self._refresh = asyncio.ensure_future(self.call(latest.get))
            # Retrieved here too, so that one nobody waited for does not log as lost.
            refresh.add_done_callback(lambda f: f.cancelled() or f.exception())
        if not wait and latest.read_before():
            return latest.peek()
        try:
            return await asyncio.shield(refresh)
        except RuntimeError:  # the pool is shut down: the hub is stopping
            return latest.peek()

    async def checkpoint_trailers(self) -> tuple[tuple[str, bytes], ...]:
        envelope = await self.log_checkpoint()
        return () if envelope is None else ((CHECKPOINT_METADATA, envelope),)

    async def peer(
        self, context: grpc.aio.ServicerContext[Any, Any], envelope: envelope_pb2.Envelope
    ) -> str | None:
        """`Peers.institution`, a refusal kept in the audit log like the gate's own."""
        try:
            return self.peers.institution(context)
        except DomainError as err:
            await self.call(self.hub.record_rejection, envelope, envelope.SerializeToString(), err)
            raise

    async def abort(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        err: DomainError,
        envelope: envelope_pb2.Envelope | None,
    ) -> None:
        signed = self.hub.seal(
            envelope.sender if envelope is not None and envelope.sender else "UNKNOWN",
            rejection_body(err, envelope),
            self.hub.clock.now(),
        )
        code, message, trailers = status_for(err, envelope, signed)
        # A refusal carries the checkpoint too: a member that is refused still witnesses.
        trailers = (*trailers, *await self.checkpoint_trailers())
        await context.abort(code, message, trailing_metadata=trailers)

    async def run(
        self,
        command: Command[Any],
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        response_type: type[R],
    ) -> R:
        envelope: envelope_pb2.Envelope = request.envelope
        with logs.scope(
            institution=envelope.sender,
            message_id=envelope.message_id,
            # Read from the body only if a line is written.
            case_id=functools.partial(logs.case_id_in, envelope.body, envelope.body_type),
        ):
            try:
                peer = await self.peer(context, envelope)
                answer = await self.call(self.hub.handle, command, envelope, peer)
            except DomainError as err:
                log.info(
                    "refused %s from %s/%s: %s %s",
                    command.name,
                    envelope.sender,
                    envelope.message_id,
                    err.code,
                    err.reason,
                )
                await self.abort(context, err, envelope)
                raise AssertionError("abort returns by raising") from err
        trailers = await self.checkpoint_trailers()
        if trailers:
            context.set_trailing_metadata(trailers)
        # types-protobuf (2026-11) no longer types a message's constructor fields.
        make = cast(Callable[..., R], response_type)
        return make(envelope=answer)
