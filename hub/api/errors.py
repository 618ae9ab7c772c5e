"""Refusals as gRPC statuses: code, a sentence to act on, ErrorInfo, and a hub-signed Rejection."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from hub.domain.errors import DomainError
from stophub.v1 import delivery_pb2, envelope_pb2

ERROR_DOMAIN = "stophub.v1"

GRPC_CODES: dict[str, grpc.StatusCode] = {
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
    "OUT_OF_RANGE": grpc.StatusCode.OUT_OF_RANGE,
    "UNAUTHENTICATED": grpc.StatusCode.UNAUTHENTICATED,
    "PERMISSION_DENIED": grpc.StatusCode.PERMISSION_DENIED,
    "FAILED_PRECONDITION": grpc.StatusCode.FAILED_PRECONDITION,
    "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "ALREADY_EXISTS": grpc.StatusCode.ALREADY_EXISTS,
    "INTERNAL": grpc.StatusCode.INTERNAL,
    # The database is down for the moment (StoreUnavailable): the same message may be resent.
    "UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
}


def status_for(
    err: DomainError,
    envelope: envelope_pb2.Envelope | None,
    signed_rejection: envelope_pb2.Envelope | None,
) -> tuple[grpc.StatusCode, str, tuple[tuple[str, bytes], ...]]:
    code = GRPC_CODES.get(err.code, grpc.StatusCode.INTERNAL)
    details = []
    info = error_details_pb2.ErrorInfo(reason=err.reason, domain=ERROR_DOMAIN)
    if envelope is not None:
        info.metadata["message_id"] = envelope.message_id
        info.metadata["sender"] = envelope.sender
    if err.field:
        info.metadata["field"] = err.field
    details.append(info)
    if err.field:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=err.field, description=err.message
                    )
                ]
            )
        )
    if signed_rejection is not None:
        details.append(signed_rejection)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=err.message)
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return code, err.message, (("grpc-status-details-bin", status.SerializeToString()),)


def rejection_body(
    err: DomainError, envelope: envelope_pb2.Envelope | None
) -> delivery_pb2.Rejection:
    return delivery_pb2.Rejection(
        code=err.code,
        reason=err.reason,
        message=err.message,
        message_id=envelope.message_id if envelope is not None else "",
        sender=envelope.sender if envelope is not None else "",
        field=err.field,
    )


# The reason of the UNAVAILABLE that ends a delivery stream on a replica shutting down.
DRAINING = "HUB_DRAINING"


def draining_status() -> tuple[grpc.StatusCode, str, tuple[tuple[str, bytes], ...]]:
    """Code, message and trailers that end a stream of a replica that is shutting down: not a
    refusal (nothing is signed or recorded), a request to reconnect to another replica now."""
    message = "this hub replica is shutting down: reconnect to another replica now"
    info = error_details_pb2.ErrorInfo(reason=DRAINING, domain=ERROR_DOMAIN)
    status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message=message)
    status.details.add().Pack(info)
    return (
        grpc.StatusCode.UNAVAILABLE,
        message,
        (("grpc-status-details-bin", status.SerializeToString()),),
    )
