"""Why a command was refused, in terms the API maps to gRPC statuses.

Each error carries a stable machine-readable `reason` (ErrorInfo.reason) and a
sentence a bank engineer can act on.
"""

from __future__ import annotations


class DomainError(Exception):
    """A command the hub refuses; nothing it would have changed is kept."""

    code = "INTERNAL"

    def __init__(self, reason: str, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.field = field


class InvalidArgument(DomainError):
    code = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str, reason: str = "INVALID_FIELD") -> None:
        super().__init__(reason, f"{field}: {message}", field=field)


class Unauthenticated(DomainError):
    code = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    code = "PERMISSION_DENIED"


class FailedPrecondition(DomainError):
    code = "FAILED_PRECONDITION"


class NotFound(DomainError):
    code = "NOT_FOUND"


class AlreadyExists(DomainError):
    code = "ALREADY_EXISTS"


class OutOfRange(DomainError):
    code = "OUT_OF_RANGE"
