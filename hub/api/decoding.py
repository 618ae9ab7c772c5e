"""Requests that are not even protobuf: refused by the hub as INVALID_ARGUMENT.

gRPC parses a request before any servicer runs and answers a parse failure with UNKNOWN and
an ERROR in the log, which tells a bank engineer nothing. The guard parses tolerantly instead:
an unparsable request reaches the servicer as `Undecodable`, and is refused like any other
bad request, with ErrorInfo and a hub-signed Rejection.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from hub.api.runner import Runner
from hub.domain.errors import InvalidArgument

log = logging.getLogger(__name__)


class Undecodable:
    """Stands in for a request whose bytes do not parse as the method's request type."""

    __slots__ = ("error",)

    def __init__(self, error: InvalidArgument) -> None:
        self.error = error


def malformed(type_name: str, exc: Exception) -> InvalidArgument:
    return InvalidArgument(
        "request",
        f"is not a valid {type_name} ({exc}): send the serialized request message",
        reason="MALFORMED_REQUEST",
    )


def tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    type_name = str(getattr(descriptor, "full_name", "request message"))

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as exc:
            return Undecodable(malformed(type_name, exc))

    return parse


class DecodeGuard(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Unary methods refuse an Undecodable here; StopHub's streams (SyncList included) check
    for it themselves."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        parse = tolerant(handler.request_deserializer)
        if handler.unary_unary is not None:
            return handler._replace(  # type: ignore[attr-defined,no-any-return]
                request_deserializer=parse,
                unary_unary=self._guarded(handler.unary_unary, handler_call_details.method),
            )
        stream = handler.stream_stream is not None or handler.unary_stream is not None
        if stream and handler_call_details.method.startswith("/stophub."):
            return handler._replace(request_deserializer=parse)  # type: ignore[attr-defined,no-any-return]
        return handler

    def _guarded(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if isinstance(request, Undecodable):
                log.info("refused %s: %s", method, request.error.message)
                await self.runner.abort(context, request.error, None)
            return await behavior(request, context)

        return guarded
