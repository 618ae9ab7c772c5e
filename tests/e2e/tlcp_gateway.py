"""A stand-in for a TLCP gateway (docs/tlcp-gateway.md), for tests: a TLS-terminating gRPC
proxy built on grpc's generic handlers.

A real gateway speaks TLCP (GB/T 38636) to the institutions, with SM2 certificates from a
national-cryptography CA; no Python stack here does, so this one terminates ordinary mutual
TLS against a CA of its own that plays that part. Everything past the handshake is what a
real gateway must do: verify the institution's certificate (the TLS stack does), forward each
call unchanged, byte for byte, to the hub over mutual TLS with the gateway's own certificate,
drop any `stophub-client-cert-bin` the client sent, and add one with the DER of the
certificate it verified; carry back answers, statuses and metadata unchanged.

`claim`, when set, is what a dishonest or compromised gateway would do: forward that
certificate whoever connected.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from google.protobuf import descriptor_pool

from hub.api.runner import CLIENT_CERT_METADATA
from hub.api.server import SERVICE_NAMES
from hub.crypto.pki import TlsConfig

# (client streams, server streams) of every method the hub serves.
_KINDS: dict[str, tuple[bool, bool]] = {
    f"/{service}/{m.name}": (m.client_streaming, m.server_streaming)
    for service in SERVICE_NAMES
    for m in descriptor_pool.Default().FindServiceByName(service).methods
}
# Headers of the transport, not of the call: the proxy's own channel sets them.
_HOP_BY_HOP = {"user-agent", ":authority", "te", "content-type", "grpc-accept-encoding"}


class Gateway:
    def __init__(
        self,
        upstream: str,
        upstream_tls: TlsConfig,
        listen_tls: TlsConfig,
        *,
        claim: bytes | None = None,
    ) -> None:
        self.upstream, self.upstream_tls, self.listen_tls = upstream, upstream_tls, listen_tls
        self.claim = claim
        self.forwarded: list[str] = []  # the methods forwarded, in order
        self.server: grpc.aio.Server | None = None
        self.channel: grpc.aio.Channel | None = None
        self.port = 0

    async def start(self) -> Gateway:
        from adapters.sdk import secure_channel

        self.channel = secure_channel(self.upstream, self.upstream_tls)
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((_Forward(self),))
        credentials = grpc.ssl_server_credentials(
            [(self.listen_tls.key, self.listen_tls.cert)],
            root_certificates=self.listen_tls.ca,
            require_client_auth=True,
        )
        self.port = self.server.add_secure_port("127.0.0.1:0", credentials)
        await self.server.start()
        return self

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0.2)
        if self.channel is not None:
            await self.channel.close()

    def metadata(self, context: grpc.aio.ServicerContext[Any, Any]) -> list[tuple[str, Any]]:
        """The client's metadata without its own claim or transport headers, and the
        certificate this gateway verified (or claims)."""
        kept = [
            (k, v)
            for k, v in (context.invocation_metadata() or ())
            if k != CLIENT_CERT_METADATA and k not in _HOP_BY_HOP and not k.startswith("grpc-")
        ]
        if self.claim is not None:
            der = self.claim
        else:
            [pem] = context.auth_context()["x509_pem_cert"]
            der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
        return [*kept, (CLIENT_CERT_METADATA, der)]


async def _relay_failure(
    context: grpc.aio.ServicerContext[Any, Any], err: grpc.aio.AioRpcError
) -> None:
    trailers = tuple(err.trailing_metadata() or ())
    await context.abort(err.code(), err.details() or "", trailing_metadata=trailers)


class _Forward(grpc.GenericRpcHandler):
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = details.method
        kind = _KINDS.get(method)
        if kind is None:
            return None
        self.gw.forwarded.append(method)
        if kind == (False, False):
            return grpc.unary_unary_rpc_method_handler(self._unary(method))
        if kind == (False, True):
            return grpc.unary_stream_rpc_method_handler(self._unary_stream(method))
        return grpc.stream_stream_rpc_method_handler(self._streams(method))

    def _unary(self, method: str) -> Callable[..., Any]:
        async def forward(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            assert self.gw.channel is not None
            call = self.gw.channel.unary_unary(method)(request, metadata=self.gw.metadata(context))
            try:
                answer: bytes = await call
            except grpc.aio.AioRpcError as err:
                await _relay_failure(context, err)
                raise
            context.set_trailing_metadata(tuple(await call.trailing_metadata() or ()))
            return answer

        return forward

    def _unary_stream(self, method: str) -> Callable[..., Any]:
        async def forward(
            request: bytes, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[bytes]:
            assert self.gw.channel is not None
            call = self.gw.channel.unary_stream(method)(request, metadata=self.gw.metadata(context))
            try:
                async for item in call:
                    yield item
            except grpc.aio.AioRpcError as err:
                await _relay_failure(context, err)

        return forward

    def _streams(self, method: str) -> Callable[..., Any]:
        async def forward(
            requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[bytes]:
            assert self.gw.channel is not None
            call = self.gw.channel.stream_stream(method)(metadata=self.gw.metadata(context))

            async def pump() -> None:
                async for item in requests:
                    await call.write(item)
                await call.done_writing()

            writer = asyncio.create_task(pump())
            try:
                first = True
                while True:
                    item = await call.read()
                    if first:
                        # What the hub says on accepting a stream, before its first message.
                        await context.send_initial_metadata(
                            tuple(await call.initial_metadata() or ())
                        )
                        first = False
                    if item is grpc.aio.EOF:
                        return
                    yield item
            except grpc.aio.AioRpcError as err:
                await _relay_failure(context, err)
            finally:
                writer.cancel()

        return forward
