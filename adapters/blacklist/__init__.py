"""A member's local copy of the blacklist and punishment list (docs/blacklist.md)."""

from adapters.blacklist.replica import (
    CheckpointRefused,
    CopyMismatch,
    Form,
    HistoryPruned,
    Lag,
    ListedEntry,
    ListKeyMismatch,
    ListSource,
    LocalCheck,
    Replica,
    ReplicaError,
    ReplicaEvent,
    ReplicaStatus,
    VersionNotIssued,
)

__all__ = [
    "CheckpointRefused",
    "CopyMismatch",
    "Form",
    "HistoryPruned",
    "Lag",
    "ListKeyMismatch",
    "ListSource",
    "ListedEntry",
    "LocalCheck",
    "Replica",
    "ReplicaError",
    "ReplicaEvent",
    "ReplicaStatus",
    "VersionNotIssued",
]
