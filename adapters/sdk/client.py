"""The institution side of StopHub: signed calls to the hub and the delivery stream.

Everything the hub answers is checked against the hub's pinned public key before any of it
is used, and every envelope the hub forwards (the centre's order, a bank's answer) is
checked against its signer's key as registered with the hub. A bank therefore acts only
on what the signer signed, even if the hub or the network in between were compromised.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol, Self, TypeVar, cast

import grpc
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from adapters.sdk.failover import backoff, channel_target, parse_targets
from adapters.sdk.reach import Reach, look_first, tls_trouble
from adapters.sdk.witness import LogForkAlarm, LogWitness, ProofRefused, ProofUnavailable
from hub.crypto.envelope import create_time_of, seal_message, verify_envelope
from hub.crypto.pki import TlsConfig
from hub.crypto.public import public_key_from_file
from hub.crypto.signer import Signer
from hub.crypto.signing import ECDSA_P256, SM2_SM3, SignatureError, key_id_for
from hub.system.clock import SystemClock
from stophub.v1 import (
    account_pb2,
    appeal_pb2,
    audit_pb2,
    blacklist_pb2,
    case_pb2,
    delivery_pb2,
    delivery_pb2_grpc,
    envelope_pb2,
    grade_pb2,
    institution_pb2,
    lead_pb2,
    order_pb2,
    outcome_pb2,
    returns_pb2,
    sla_pb2,
    trail_pb2,
    warning_pb2,
)

log = logging.getLogger(__name__)

# The people `HubClient.acting` names on every envelope sealed in its block: (operator,
# approver). A context variable, so that concurrent tasks (one per console user) each sign
# with their own people.
_ACTING: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar(
    "stophub_acting", default=("", "")
)

HUB: Final = "HUB"
_UNADDRESSED: Final = "UNKNOWN"
# Refusals of a consistency proof request that say nothing of the proof: the hub did not
# accept the request's envelope, or (a hub older than docs/witness.md) its sender.
_NOT_ABOUT_THE_PROOF: Final = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)

Envelope = envelope_pb2.Envelope
M = TypeVar("M", bound=Message)

# Status codes that say nothing about the request itself, only that it did not get through
# or the hub could not finish it: sending the same message again is the right reaction.
_TRANSIENT_CODES: Final = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)

# The reason (ErrorInfo) of the UNAVAILABLE that ends the delivery streams of a replica that
# is shutting down: reconnect now, to another replica (docs/failover.md).
DRAINING: Final = "HUB_DRAINING"
# A drained replica's streams come back within this many seconds, spread over it.
_DRAIN_SPREAD: Final = 0.1

# The trailing metadata that carries the hub's newest signed log checkpoint (docs/witness.md).
CHECKPOINT_METADATA: Final = "stophub-log-checkpoint-bin"

# How old an envelope the hub still accepts (docs/signing.md, "Freshness").
REPLAY_WINDOW: Final = timedelta(minutes=5)

# A member's key is registered at the hub's time and may be used at once by a member whose
# clock runs a little behind; the hub tolerates the same drift on execute times.
_KEY_CLOCK_SKEW: Final = timedelta(minutes=5)
_REGISTRY_TTL: Final = 60.0
# How often `connect` looks at the hub's certificate again while the connection fails.
_RECHECK_EVERY: Final = 1.0
_REGISTRY_REFRESH_MIN: Final = 1.0

_CHANNEL_OPTIONS: Final = [
    # The channel's own reconnect backoff would otherwise grow to two minutes while the hub
    # restarts, and every call in that window fails fast without trying.
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 5_000),
    # Detects a hub that vanished without closing TCP. The hub does not lower gRPC's
    # default minimum ping interval (5 minutes), and pinging more often gets the
    # connection closed with "too_many_pings".
    ("grpc.keepalive_time_ms", 300_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
]


def tls_credentials(tls: TlsConfig) -> grpc.ChannelCredentials:
    """Mutual TLS: the hub is checked against the network's CA, and this institution
    proves itself with the client certificate the same CA issued it."""
    return grpc.ssl_channel_credentials(
        root_certificates=tls.ca, private_key=tls.key, certificate_chain=tls.cert
    )


def tls_options(tls: TlsConfig) -> list[tuple[str, Any]]:
    """Channel options for `tls`: the hub's certificate is checked against `server_name`
    instead of the target's host when one is given (a hub reached through an address its
    certificate does not name)."""
    if tls.server_name is None:
        return []
    return [("grpc.ssl_target_name_override", tls.server_name)]


def secure_channel(
    target: str, tls: TlsConfig, options: Sequence[tuple[str, Any]] = ()
) -> grpc.aio.Channel:
    """A channel to the hub over mutual TLS, with the SDK's reconnect and keepalive settings
    (and `options`)."""
    return grpc.aio.secure_channel(
        target, tls_credentials(tls), options=[*_CHANNEL_OPTIONS, *options, *tls_options(tls)]
    )


def _authority(name: str | None) -> list[tuple[str, Any]]:
    # A static address list has no host name of its own: the channel speaks, and checks the
    # certificate, as the first name it was given.
    return [] if name is None else [("grpc.default_authority", name)]


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware."""
        ...


class HubSignatureError(Exception):
    """The hub's answer did not verify, or is not what the hub signs for this call.

    Never act on such an answer: the hub key is misconfigured, or something between the
    institution and the hub is forging or replaying messages. This is a security event.
    """


class HubError(Exception):
    """A refusal from the hub, or a failure to reach it, readable by a bank engineer.

    `signed` is True only when the refusal carried a hub-signed Rejection that verified and
    names this institution's message: only then is it evidence of what the hub decided, and
    `rejection_envelope` is that evidence. Failures of the connection (UNAVAILABLE,
    DEADLINE_EXCEEDED, ...) have an empty `reason` and are `transient`: sending the same
    message again, with the same message id, is safe and is the right reaction. So is a
    signed UNAVAILABLE (reason DATABASE_UNAVAILABLE): the hub could not reach its database.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        field: str = "",
        metadata: dict[str, str] | None = None,
        message_id: str = "",
        rejection: delivery_pb2.Rejection | None = None,
        rejection_envelope: Envelope | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.reason = reason
        self.field = field
        self.metadata: dict[str, str] = dict(metadata or {})
        self.message_id = message_id
        self.rejection = rejection
        self.rejection_envelope = rejection_envelope
        super().__init__(str(self))

    @property
    def signed(self) -> bool:
        return self.rejection is not None

    @property
    def transient(self) -> bool:
        if self.rejection is not None:
            # A signed refusal is the hub's decision about this message, final, except when
            # the hub itself says it could not decide yet (its database was down).
            return self.code is grpc.StatusCode.UNAVAILABLE
        return self.code in _TRANSIENT_CODES

    def __str__(self) -> str:
        text = self.code.name
        if self.reason:
            text += f" {self.reason}"
        text += f": {self.message or '(no message)'}"
        if self.field:
            text += f" [field {self.field}]"
        if self.message_id:
            text += f" (message {self.message_id})"
        return text


class HubCertificateError(HubError):
    """The hub's TLS certificate does not fit this connection: it names other hosts than the
    one the client checks it against, or another CA than the client's issued it. The message
    says which names it holds, or which CA. A configuration error, not a transient one: the
    same call fails the same way until the target, `server_name`, ca.pem or the hub's
    certificate changes."""

    def __init__(self, message: str, *, message_id: str = "") -> None:
        super().__init__(grpc.StatusCode.UNAVAILABLE, message, message_id=message_id)

    @property
    def transient(self) -> bool:
        return False


# The first resend's delay ceiling; then 0.4 s, 0.8 s (docs/failover.md, "Calls").
RESEND_BACKOFF = 0.2


def _resend(failure: HubError) -> bool:
    """Whether a failed call is sent again by itself: only when no hub answered it (an
    UNAVAILABLE without a signed refusal, not a certificate that does not fit). A timeout is
    not: the call's own deadline is spent, and the application decides."""
    return (
        failure.code is grpc.StatusCode.UNAVAILABLE
        and not failure.signed
        and not isinstance(failure, HubCertificateError)
    )


@dataclass(frozen=True)
class Delivery:
    """One notice from the delivery stream, its hub signature already verified.

    `origin_verified` / `authorization_verified` say whether `notice.origin` /
    `notice.authorization` are present and verify with their signers' registered keys;
    `problems` says why not, for the security log.
    """

    sequence: int
    attempt: int
    envelope: Envelope
    notice: delivery_pb2.Notice
    origin_verified: bool
    authorization_verified: bool
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Rpc:
    path: str
    request: type[Message]
    response: type[Message]
    body: type[Message]
    answer: type[Message]


def _message_class(descriptor: Any) -> type[Message]:
    return GetMessageClass(descriptor)


def _rpc(
    module: Any, service: str, method: str, body: type[Message], answer: type[Message]
) -> _Rpc:
    descriptor = module.DESCRIPTOR.services_by_name[service]
    rpc = descriptor.methods_by_name[method]
    return _Rpc(
        path=f"/{descriptor.full_name}/{method}",
        # The service's messages may live in another file of the package (GetCaseTrail's do).
        request=_message_class(rpc.input_type),
        response=_message_class(rpc.output_type),
        body=body,
        answer=answer,
    )


RPCS: Final[dict[str, _Rpc]] = {
    "CreateReport": _rpc(case_pb2, "CaseService", "CreateReport", case_pb2.Report, case_pb2.Case),
    "VerifyReport": _rpc(
        case_pb2, "CaseService", "VerifyReport", case_pb2.Verification, case_pb2.Case
    ),
    "GetCase": _rpc(case_pb2, "CaseService", "GetCase", case_pb2.GetCaseBody, case_pb2.Case),
    "ListCases": _rpc(
        case_pb2, "CaseService", "ListCases", case_pb2.ListCasesBody, case_pb2.CaseList
    ),
    "IssueOrder": _rpc(
        order_pb2, "OrderService", "IssueOrder", order_pb2.OrderInstruction, order_pb2.Order
    ),
    "AnswerOrder": _rpc(
        order_pb2, "OrderService", "AnswerOrder", order_pb2.ExecutionResult, order_pb2.Order
    ),
    "SetAutoStopRule": _rpc(
        order_pb2, "OrderService", "SetAutoStopRule", order_pb2.AutoStopRule, order_pb2.AutoStopRule
    ),
    "GetInstitution": _rpc(
        institution_pb2,
        "InstitutionService",
        "GetInstitution",
        institution_pb2.GetInstitutionBody,
        institution_pb2.Institution,
    ),
    "ListInstitutions": _rpc(
        institution_pb2,
        "InstitutionService",
        "ListInstitutions",
        institution_pb2.ListInstitutionsBody,
        institution_pb2.InstitutionList,
    ),
    "ListClocks": _rpc(
        sla_pb2, "SlaService", "ListClocks", sla_pb2.ListClocksBody, sla_pb2.ClockList
    ),
    "AcknowledgeBreach": _rpc(
        sla_pb2,
        "SlaService",
        "AcknowledgeBreach",
        sla_pb2.BreachAcknowledgement,
        sla_pb2.ClockView,
    ),
    "GetOutcomeFigures": _rpc(
        outcome_pb2,
        "OutcomeService",
        "GetOutcomeFigures",
        outcome_pb2.OutcomeQuery,
        outcome_pb2.OutcomeReport,
    ),
    "GetCaseTrail": _rpc(
        case_pb2, "CaseService", "GetCaseTrail", trail_pb2.GetCaseTrailBody, trail_pb2.Trail
    ),
    **{
        method: _rpc(returns_pb2, "DistributionService", method, body, returns_pb2.Distribution)
        for method, body in (
            ("StartDistribution", returns_pb2.StartDistributionBody),
            ("ObjectToDistribution", returns_pb2.ObjectionBody),
            ("DecideDistribution", returns_pb2.DistributionDecisionBody),
            ("GetDistribution", returns_pb2.GetDistributionBody),
        )
    },
    "PublishListEntry": _rpc(
        blacklist_pb2,
        "ListService",
        "PublishListEntry",
        blacklist_pb2.PublishListEntryBody,
        blacklist_pb2.ListEntryRecord,
    ),
    "RemoveListEntry": _rpc(
        blacklist_pb2,
        "ListService",
        "RemoveListEntry",
        blacklist_pb2.RemoveListEntryBody,
        blacklist_pb2.ListEntryRecord,
    ),
    "CheckList": _rpc(
        blacklist_pb2,
        "ListService",
        "CheckList",
        blacklist_pb2.CheckListBody,
        blacklist_pb2.CheckListResult,
    ),
    **{
        method: _rpc(appeal_pb2, "AppealService", method, body, appeal_pb2.Appeal)
        for method, body in (
            ("FileAppeal", appeal_pb2.FileAppealBody),
            ("DecideAppeal", appeal_pb2.DecideAppealBody),
            ("GetAppeal", appeal_pb2.GetAppealBody),
        )
    },
    "SetCaseGrade": _rpc(
        case_pb2, "CaseService", "SetCaseGrade", case_pb2.SetCaseGradeBody, case_pb2.Case
    ),
    **{
        method: _rpc(lead_pb2, "LeadService", method, body, lead_pb2.Lead)
        for method, body in (
            ("SubmitLead", lead_pb2.SubmitLeadBody),
            ("TriageLead", lead_pb2.TriageLeadBody),
            ("AddLeadInformation", lead_pb2.AddLeadInformationBody),
            ("SetLeadGrade", lead_pb2.SetLeadGradeBody),
            ("GetLead", lead_pb2.GetLeadBody),
        )
    },
    "ListLeads": _rpc(
        lead_pb2, "LeadService", "ListLeads", lead_pb2.ListLeadsBody, lead_pb2.LeadList
    ),
    "ListAppeals": _rpc(
        appeal_pb2,
        "AppealService",
        "ListAppeals",
        appeal_pb2.ListAppealsBody,
        appeal_pb2.AppealList,
    ),
    **{
        method: _rpc(warning_pb2, "WarningService", method, body, warning_pb2.Warning)
        for method, body in (
            ("SendWarning", warning_pb2.SendWarningBody),
            ("AcknowledgeWarning", warning_pb2.AcknowledgeWarningBody),
            ("ReportWarningOutcome", warning_pb2.ReportWarningOutcomeBody),
            ("GetWarning", warning_pb2.GetWarningBody),
            ("SetWarningGrade", warning_pb2.SetWarningGradeBody),
        )
    },
    "ListWarnings": _rpc(
        warning_pb2,
        "WarningService",
        "ListWarnings",
        warning_pb2.ListWarningsBody,
        warning_pb2.WarningList,
    ),
    **{
        method: _rpc(audit_pb2, "AuditService", method, body, answer)
        for method, body, answer in (
            ("ListAuditEntries", audit_pb2.ListAuditEntriesBody, audit_pb2.AuditEntryPage),
            ("GetLogCheckpoint", audit_pb2.GetLogCheckpointBody, audit_pb2.SignedLogCheckpoint),
            ("GetInclusionProof", audit_pb2.GetInclusionProofBody, audit_pb2.InclusionProof),
            (
                "GetConsistencyProof",
                audit_pb2.GetConsistencyProofBody,
                audit_pb2.ConsistencyProof,
            ),
        )
    },
}

# SyncList is server-streaming: not in RPCS (whose calls answer one hub-signed envelope);
# `HubClient.sync_list` calls it.
SYNC_LIST_PATH: Final = "/stophub.v1.ListService/SyncList"


class _Enveloped(Protocol):
    """Every StopHub request and response: one field, the signed envelope."""

    @property
    def envelope(self) -> Envelope: ...


# One pinned hub key: the key's bytes, or the path of a file holding them.
HubKey = bytes | str | os.PathLike[str]


def read_hub_key(value: HubKey) -> tuple[str, bytes]:
    """(algorithm, raw public key) of a hub key given to `HubClient`: a path to the file the
    operator published (the PEM `.pub` that `stophub keys generate` writes, or a raw 32-byte
    Ed25519 key file), that file's bytes, PEM text, or a raw public key in the encoding of
    docs/signing.md (32 bytes Ed25519, the 65-byte uncompressed P-256 or SM2 point, an SM2 key
    record: what `PrivateKey.public_key` and the registry's `PublicKey.public_key` hold).
    Anything else is a ValueError that says which forms are accepted."""
    where = "hub_public_key"
    if isinstance(value, str) and value.lstrip().startswith("-----BEGIN"):
        data = value.encode("ascii", "replace")
    elif isinstance(value, str | os.PathLike):
        path = Path(value)
        where = f"hub_public_key {path}"
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ValueError(f"{where}: cannot read the hub's public key: {err}") from err
    else:
        data = bytes(value)
        if len(data) >= 65 and data[:1] == b"\x04":
            # A bare point is P-256's or SM2's: the curve it lies on says which (no point of
            # one is known to lie on the other). Longer is an SM2 key record with its ID.
            for algorithm in (ECDSA_P256, SM2_SM3) if len(data) == 65 else (SM2_SM3,):
                try:
                    key_id_for(algorithm, data)
                except SignatureError as err:
                    error = err
                    continue
                return algorithm, data
            raise ValueError(f"{where}: {error}")
    try:
        return public_key_from_file(data)
    except SignatureError as err:
        raise ValueError(f"{where}: {' '.join(str(err).split())}") from err


def _to_datetime(message: Message, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    value = getattr(message, field)
    return cast(datetime, value.ToDatetime(tzinfo=UTC))


@dataclass
class _Registered:
    institution: institution_pb2.Institution
    fetched: float


class HubClient:
    """A member institution's connection to the hub.

    Every call signs its body as this institution, and checks the hub's signed answer before
    returning it. Message ids default to `<institution>-<uuid4>`; pass `message_id` (or a
    `message_ids` factory) to resend a message deterministically: the hub answers a resend
    of the same bytes with its original answer.

    `hub_public_key` pins the hub's signing key (or, while the operator rotates it, a list of
    keys, the new one first): most simply the path of the `hub.pub` the operator published
    (the PEM file `stophub keys generate` writes beside the hub's key), or its bytes; a raw key
    in the encoding of docs/signing.md works too (`read_hub_key` lists every accepted form).
    A key in any other form is a ValueError here, before anything is sent.

    Connect with `tls=TlsConfig(ca, cert, key)` (the network CA's certificate and this
    institution's client certificate and key, e.g. `hub.crypto.pki.client_tls(dir, code)`):
    the hub serves mutual TLS only and refuses a request whose sender is not the institution
    the certificate names. `credentials=` or a ready `channel=` are for other setups; with
    none of the three the channel is plain text, for a development hub only.

    The client witnesses the hub's audit log (docs/witness.md; `witness=False` turns it off):
    it keeps the newest hub-signed log checkpoint it meets, in `log_checkpoint_file` too when
    given, and raises LogForkAlarm when the hub's log shrank or forked; then every call raises
    it until `acknowledge_log_alarm()`.
    """

    def __init__(
        self,
        target: str | Sequence[str],
        *,
        institution: str,
        key: Signer,
        hub_public_key: HubKey | Sequence[HubKey],
        clock: Clock | None = None,
        channel: grpc.aio.Channel | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        tls: TlsConfig | None = None,
        timeout: float | None = 30.0,
        message_ids: Callable[[], str] | None = None,
        witness: bool = True,
        log_checkpoint_file: str | os.PathLike[str] | None = None,
        resends: int = 2,
    ) -> None:
        if resends < 0:
            raise ValueError(f"resends must be 0 or more, not {resends}")
        # How often a call that never reached a hub (an unsigned UNAVAILABLE: the replica died
        # or the connection broke under it) is sent again, same bytes, same message id: the
        # channel has moved to another replica by then, and the hub answers a resend of a
        # message it committed with its first answer (docs/failover.md, "Calls").
        self.resends = resends
        # Every replica the client may use, in the order it prefers them (docs/failover.md).
        self.targets = parse_targets(target)
        self.target = ",".join(self.targets)
        self.institution = institution
        self.key = key
        # Several hub keys may be trusted at once: while the hub operator rotates the hub's
        # key, give the client both, the new one first.
        pinned = (
            [hub_public_key]
            if isinstance(hub_public_key, bytes | bytearray | str | os.PathLike)
            else list(hub_public_key)
        )
        if not pinned:
            raise ValueError("give the hub's public key (or keys, during a rotation)")
        self.hub_keys: dict[str, tuple[str, bytes]] = {}
        for given in pinned:
            algorithm, raw = read_hub_key(given)
            self.hub_keys[key_id_for(algorithm, raw)] = (algorithm, raw)
        self.hub_key_id = next(iter(self.hub_keys))  # the first given: the current key
        self.hub_algorithm, self.hub_public_key = self.hub_keys[self.hub_key_id]
        self.clock: Clock = clock or SystemClock()
        self.timeout = timeout
        self._message_ids = message_ids or (lambda: f"{institution.lower()}-{uuid.uuid4().hex}")
        if sum(x is not None for x in (channel, credentials, tls)) > 1:
            raise ValueError("give at most one of channel=, credentials= and tls=")
        self._owns_channel = channel is None
        # What the channel checks the hub's certificate with, to say why when it fails.
        self._tls = tls
        if channel is not None:
            self._channel = channel
        else:
            built = channel_target(self.targets)
            options = _CHANNEL_OPTIONS + _authority(built.authority)
            if tls is not None:
                self._channel = secure_channel(built.target, tls, _authority(built.authority))
            elif credentials is not None:
                self._channel = grpc.aio.secure_channel(built.target, credentials, options=options)
            else:
                self._channel = grpc.aio.insecure_channel(built.target, options=options)
        self._callables: dict[str, grpc.aio.UnaryUnaryMultiCallable[Message, Message]] = {}
        self._registry: dict[str, _Registered] = {}
        self._streams: list[DeliveryStream] = []
        self._closed = False
        # The member as a witness of the hub's audit log (adapters/sdk/witness.py): the
        # newest checkpoint seen, in `log_checkpoint_file` too when given.
        self.witness: LogWitness | None = (
            LogWitness(self._hub_key, self._prove, self.clock, path=log_checkpoint_file)
            if witness
            else None
        )

    def _hub_key(self, key_id: str) -> bytes | None:
        pinned = self.hub_keys.get(key_id)
        return None if pinned is None else pinned[1]

    def acknowledge_log_alarm(self, *, start_over: bool = False) -> LogForkAlarm | None:
        """Let calls go on after a LogForkAlarm (returned; None if there was none).

        Until this is called, every call and stream of this client raises the alarm. The
        kept checkpoint stays: a hub still serving the other log raises it again with its
        next checkpoint. `start_over=True` also forgets the kept checkpoint (its file is
        renamed, beside the alarm's evidence) and keeps the next one that verifies: only once
        the network's operators have decided which log is the real one (docs/witness.md)."""
        if self.witness is None:
            return None
        return self.witness.acknowledge(start_over=start_over)

    async def witness_checkpoint(self, envelope: bytes | Envelope) -> None:
        """Judge a hub-signed log checkpoint met anywhere (LogWitness.see); the client does it
        by itself for every checkpoint the hub sends it."""
        if self.witness is not None:
            raw = envelope.SerializeToString() if isinstance(envelope, Envelope) else envelope
            await self.witness.see(raw)

    async def _witness_trailers(self, metadata: Any) -> None:
        if self.witness is None or not metadata:
            return
        for key, value in metadata:
            if key == CHECKPOINT_METADATA and isinstance(value, bytes):
                await self.witness.see(value)

    async def _prove(self, first: int, second: int) -> Sequence[bytes]:
        """The hub's consistency proof between its trees of `first` and `second` entries,
        for the witness: not witnessed itself (the checkpoint under judgement rides on it)."""
        body = audit_pb2.GetConsistencyProofBody(first_size=first, second_size=second)
        for attempt in (1, 2):
            try:
                _, proof = await self._send("GetConsistencyProof", self.seal(body), witness=False)
                break
            except HubError as err:
                # UNAUTHENTICATED judges this request's envelope (its time, key or signature:
                # a clock that moved on between signing and arrival), not the proof: once
                # more with a fresh envelope, then the proof cannot be had now. Taking it as
                # a refusal raised a fork alarm against an honest hub (docs/witness.md).
                if err.code is grpc.StatusCode.UNAUTHENTICATED and attempt == 1:
                    continue
                if err.transient or err.code in _NOT_ABOUT_THE_PROOF:
                    raise ProofUnavailable(str(err)) from err
                raise ProofRefused(str(err)) from err
        assert isinstance(proof, audit_pb2.ConsistencyProof)
        if (proof.first_size, proof.second_size) != (first, second):
            raise ProofRefused(
                f"asked to prove {first}..{second}, the hub answered "
                f"{proof.first_size}..{proof.second_size}"
            )
        return list(proof.hashes)

    @property
    def channel(self) -> grpc.aio.Channel:
        return self._channel

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for stream in list(self._streams):
            await stream.close()
        if self._owns_channel:
            await self._channel.close(None)

    # ---- signing and checking -------------------------------------------------------------

    def new_message_id(self) -> str:
        return self._message_ids()

    @contextlib.contextmanager
    def acting(self, operator: str, approver: str = "") -> Iterator[None]:
        """Every envelope sealed inside names these people (envelope fields 10 and 11).

        `operator` is the person at this institution who makes the messages (a console
        user's id); `approver` the second person who approved them under maker-checker.
        Backed by a context variable: it holds across awaits in the same task (and in tasks
        started inside, which copy the context), and other tasks are unaffected. Nested
        blocks replace the outer people until they end. The hub refuses an approver without
        an operator, an approver equal to the operator, and either longer than 64 UTF-8
        bytes or with a control character (docs/signing.md).
        """
        if approver and not operator:
            raise ValueError("an approver approves what an operator made: give the operator")
        token = _ACTING.set((operator, approver))
        try:
            yield
        finally:
            _ACTING.reset(token)

    def seal(
        self,
        body: Message,
        *,
        message_id: str | None = None,
        recipient: str = HUB,
        operator: str | None = None,
        approver: str | None = None,
    ) -> Envelope:
        """`body` signed by this institution, ready to send (or to keep and resend).

        The people it names are `operator` and `approver` when given, else those of the
        enclosing `acting` block, else nobody."""
        acting_operator, acting_approver = _ACTING.get()
        if operator is None:
            operator = acting_operator
            if approver is None:
                approver = acting_approver
        return seal_message(
            self.key,
            sender=self.institution,
            recipient=recipient,
            message_id=message_id or self.new_message_id(),
            create_time=self.clock.now(),
            message=body,
            operator=operator,
            approver=approver or "",
        )

    def open_hub_envelope(
        self, env: Envelope, body_type: type[M], *, also_addressed_to: str | None = None
    ) -> M:
        """The body of a hub-signed envelope addressed to this institution, or HubSignatureError."""
        what = f"hub message {env.message_id or '(no id)'}"
        if env.sender != HUB:
            raise HubSignatureError(f"{what} claims sender {env.sender!r}, not {HUB}")
        trusted = self.hub_keys.get(env.key_id)
        if trusted is None or trusted[0] != env.algorithm:
            raise HubSignatureError(
                f"{what} is signed with {env.algorithm} key {env.key_id!r}; the hub keys this "
                f"client trusts are {', '.join(sorted(self.hub_keys))} (if the hub rotated "
                "its key, configure the new public key)"
            )
        try:
            valid = verify_envelope(env, trusted[1])
        except (SignatureError, ValueError) as exc:
            raise HubSignatureError(f"{what} cannot be verified: {exc}") from exc
        if not valid:
            raise HubSignatureError(
                f"{what} does not verify with the hub key {env.key_id}: do not trust it"
            )
        # A genuine hub message meant for another member, or of another type, replayed here
        # would pass the signature check; these two checks are what make it fail.
        if env.recipient != self.institution and (
            also_addressed_to is None or env.recipient != also_addressed_to
        ):
            raise HubSignatureError(
                f"{what} is addressed to {env.recipient!r}, not to {self.institution}"
            )
        expected = body_type.DESCRIPTOR.full_name
        if env.body_type != expected:
            raise HubSignatureError(f"{what} carries a {env.body_type!r}, expected {expected}")
        body = body_type()
        try:
            body.ParseFromString(env.body)
        except DecodeError as exc:
            raise HubSignatureError(f"{what} is not a valid {expected}: {exc}") from exc
        return body

    async def verify_forwarded(self, env: Envelope) -> str | None:
        """None if `env` verifies with its sender's key as registered; otherwise why not.

        The key must have been registered when the envelope was made and not revoked before
        then, so evidence signed before a key was rotated out stays verifiable.
        """
        who = f"{env.sender or '(no sender)'}/{env.message_id or '(no id)'}"
        if not env.sender or not env.signature:
            return f"{who} is not signed"
        at = create_time_of(env)
        key = await self._registered_key(env.sender, env.key_id, at)
        if key is None:
            return (
                f"{who}: {env.sender} had no key {env.key_id!r} valid at {at.isoformat()} "
                "in the hub's registry"
            )
        if key.algorithm != env.algorithm:
            return f"{who}: key {key.key_id} is {key.algorithm}, the envelope says {env.algorithm}"
        try:
            valid = verify_envelope(env, key.public_key)
        except (SignatureError, ValueError) as exc:
            return f"{who}: signature cannot be checked: {exc}"
        if not valid:
            return f"{who}: signature does not verify with {env.sender}'s key {key.key_id}"
        return None

    async def _failure(self, err: grpc.aio.AioRpcError, message_id: str | None) -> HubError:
        """The HubError for a failed call; when TLS failed, one that says what does not fit."""
        if (
            err.code() is grpc.StatusCode.UNAVAILABLE
            and self._tls is not None
            and tls_trouble(err.details() or "")
        ):
            reach = await look_first(self.targets, self._tls)
            if reach.problem is not None:
                return HubCertificateError(reach.problem, message_id=message_id or "")
        return self._hub_error(err, message_id)

    async def connect(self, timeout: float = 30.0) -> None:
        """Wait, at most `timeout` seconds, until the connection to the hub is up (the hub may
        still be starting). Calls do not need it; it lets a program find out at start whether
        it can reach the hub at all.

        Raises HubCertificateError at once when the hub's TLS certificate does not fit this
        client (it names other hosts than the target's, or another CA issued it), and HubError
        UNAVAILABLE after `timeout` otherwise, saying whether anything answered there.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        reach: Reach | None = None
        while True:
            state = self._channel.get_state(try_to_connect=True)
            if state is grpc.ChannelConnectivity.READY:
                return
            if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE and self._tls is not None:
                reach = await look_first(self.targets, self._tls)
                if reach.problem is not None:
                    raise HubCertificateError(reach.problem)
            left = deadline - loop.time()
            if left <= 0:
                raise HubError(
                    grpc.StatusCode.UNAVAILABLE, _not_reached(self.target, timeout, reach)
                )
            # A channel whose connections fail stays in TRANSIENT_FAILURE while it retries:
            # look again every so often, or a hub that came up with the wrong certificate
            # would go unnamed until the timeout.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._channel.wait_for_state_change(state), min(left, _RECHECK_EVERY)
                )

    def _hub_error(self, err: grpc.aio.AioRpcError, message_id: str | None) -> HubError:
        code = err.code()
        message = err.details() or ""
        reason = ""
        field = ""
        metadata: dict[str, str] = {}
        try:
            # from_call only reads code(), details() and trailing_metadata(), which an
            # AioRpcError has, though its stub does not declare it a grpc.Call.
            status = rpc_status.from_call(cast(grpc.Call, err))
        except ValueError:
            # The details disagree with the status line: they were not written by the hub.
            status = None
        if status is None:
            return HubError(code, message, message_id=message_id or "")
        signed: Envelope | None = None
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
                metadata = dict(info.metadata)
                field = field or metadata.get("field", "")
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                if bad.field_violations and not field:
                    field = bad.field_violations[0].field
            elif detail.Is(Envelope.DESCRIPTOR):
                signed = Envelope()
                detail.Unpack(signed)
        if signed is None:
            return HubError(
                code,
                message,
                reason=reason,
                field=field,
                metadata=metadata,
                message_id=message_id or metadata.get("message_id", ""),
            )
        # The hub addresses the refusal of a stream acknowledgement to "UNKNOWN" (it does not
        # pass the refused envelope along), so on a stream that is accepted too: a refusal
        # there can only end the stream, never make this institution act.
        rejection = self.open_hub_envelope(
            signed,
            delivery_pb2.Rejection,
            also_addressed_to=_UNADDRESSED if message_id is None else None,
        )
        if message_id is not None and (
            rejection.message_id != message_id or rejection.sender != self.institution
        ):
            raise HubSignatureError(
                f"the hub-signed refusal names {rejection.sender}/{rejection.message_id}, "
                f"not {self.institution}/{message_id}: a refusal replayed from another call"
            )
        # The signed Rejection is the hub's word; the unsigned status fields are only a copy.
        with contextlib.suppress(KeyError):
            code = grpc.StatusCode[rejection.code]
        return HubError(
            code,
            rejection.message or message,
            reason=rejection.reason or reason,
            field=rejection.field or field,
            metadata=metadata,
            message_id=rejection.message_id or message_id or "",
            rejection=rejection,
            rejection_envelope=signed,
        )

    # ---- calls ----------------------------------------------------------------------------

    def _callable(self, rpc: _Rpc) -> grpc.aio.UnaryUnaryMultiCallable[Message, Message]:
        found = self._callables.get(rpc.path)
        if found is None:
            found = self._channel.unary_unary(
                rpc.path,
                request_serializer=_serialize,
                response_deserializer=rpc.response.FromString,
            )
            self._callables[rpc.path] = found
        return found

    async def send(self, method: str, envelope: Envelope) -> tuple[Envelope, Message]:
        """Send an already signed envelope; (hub-signed answer envelope, decoded answer).

        The log checkpoint the answer carries is witnessed (LogForkAlarm, docs/witness.md)."""
        return await self._send(method, envelope, witness=True)

    async def _send(
        self, method: str, envelope: Envelope, *, witness: bool
    ) -> tuple[Envelope, Message]:
        if witness and self.witness is not None:
            self.witness.check()
        rpc = RPCS.get(method)
        if rpc is None:
            raise ValueError(f"unknown method {method!r}; one of: {', '.join(RPCS)}")
        expected = rpc.body.DESCRIPTOR.full_name
        if envelope.body_type != expected:
            raise ValueError(f"{method} takes a {expected}, not {envelope.body_type!r}")
        # types-protobuf (2026-11) no longer types a message's constructor fields.
        request = cast(Callable[..., Message], rpc.request)(envelope=envelope)
        failures = 0
        while True:
            call = self._callable(rpc)(request, timeout=self.timeout)
            try:
                response = await call
                break
            except grpc.aio.AioRpcError as err:
                failure = await self._failure(err, envelope.message_id)
                if witness:
                    await self._witness_trailers(err.trailing_metadata())
                failures += 1
                if not _resend(failure) or failures > self.resends:
                    raise failure from err
            await asyncio.sleep(backoff(failures, RESEND_BACKOFF, RESEND_BACKOFF * 4))
        answer_env = cast(_Enveloped, response).envelope
        answer = self.open_hub_envelope(answer_env, rpc.answer)
        if witness:
            await self._witness_trailers(await call.trailing_metadata())
        return answer_env, answer

    async def call(
        self, method: str, body: Message, *, message_id: str | None = None
    ) -> tuple[Envelope, Message]:
        """Sign `body`, send it as `method` (e.g. "CreateReport"), verify and decode the answer."""
        rpc = RPCS.get(method)
        if rpc is None:
            raise ValueError(f"unknown method {method!r}; one of: {', '.join(RPCS)}")
        if not isinstance(body, rpc.body):
            raise TypeError(
                f"{method} takes a {rpc.body.DESCRIPTOR.full_name}, not {type(body).__name__}"
            )
        return await self.send(method, self.seal(body, message_id=message_id))

    async def _answer(
        self, method: str, body: Message, answer: type[M], message_id: str | None = None
    ) -> M:
        _, result = await self.call(method, body, message_id=message_id)
        assert isinstance(result, answer)  # open_hub_envelope decoded it as the RPC's type
        return result

    async def create_report(
        self, report: case_pb2.Report, *, message_id: str | None = None
    ) -> case_pb2.Case:
        return await self._answer("CreateReport", report, case_pb2.Case, message_id)

    async def verify_report(
        self,
        case_id: str,
        confirmed: bool = True,
        reason: str = "",
        *,
        message_id: str | None = None,
    ) -> case_pb2.Case:
        outcome = (
            case_pb2.VERIFICATION_OUTCOME_CONFIRMED
            if confirmed
            else case_pb2.VERIFICATION_OUTCOME_REJECTED
        )
        body = case_pb2.Verification(case_id=case_id, outcome=outcome, reason=reason)
        case = await self._answer("VerifyReport", body, case_pb2.Case, message_id)
        _same("case", case_id, case.case_id)
        return case

    async def get_case(self, case_id: str) -> case_pb2.Case:
        case = await self._answer("GetCase", case_pb2.GetCaseBody(case_id=case_id), case_pb2.Case)
        _same("case", case_id, case.case_id)
        return case

    async def list_cases(
        self,
        *,
        state: int = 0,
        page_size: int = 50,
        institution_code: str = "",
        account: account_pb2.AccountRef | None = None,
        victim_name: str = "",
        victim_id_number: str = "",
        create_time_from: datetime | None = None,
        create_time_to: datetime | None = None,
        order_by: int = 0,
        page_token: str = "",
    ) -> list[case_pb2.Case]:
        """Every case this institution may see that matches the filters (docs/cases.md),
        from `page_token` on, following page tokens to the end."""
        cases: list[case_pb2.Case] = []
        token = page_token
        while True:
            page, following = await self.list_cases_page(
                state=state,
                page_size=page_size,
                institution_code=institution_code,
                account=account,
                victim_name=victim_name,
                victim_id_number=victim_id_number,
                create_time_from=create_time_from,
                create_time_to=create_time_to,
                order_by=order_by,
                page_token=token,
            )
            cases.extend(page)
            if not following or following == token:
                return cases
            token = following

    async def list_cases_page(
        self,
        *,
        state: int = 0,
        page_size: int = 50,
        institution_code: str = "",
        account: account_pb2.AccountRef | None = None,
        victim_name: str = "",
        victim_id_number: str = "",
        create_time_from: datetime | None = None,
        create_time_to: datetime | None = None,
        order_by: int = 0,
        page_token: str = "",
    ) -> tuple[list[case_pb2.Case], str]:
        """One page of ListCases: (cases, next_page_token), the token empty on the last page.
        `order_by` is a `case_pb2.CaseOrder` (CASE_ORDER_DEADLINE: the earliest next deadline
        first); the times are aware datetimes, the range half-open [from, to)."""
        body = case_pb2.ListCasesBody(
            page_size=page_size,
            page_token=page_token,
            state=cast(case_pb2.CaseState.ValueType, state),
            institution_code=institution_code,
            victim_name=victim_name,
            victim_id_number=victim_id_number,
            order_by=cast(case_pb2.CaseOrder.ValueType, order_by),
        )
        if account is not None:
            body.account.CopyFrom(account)
        if create_time_from is not None:
            body.create_time_from.FromDatetime(create_time_from)
        if create_time_to is not None:
            body.create_time_to.FromDatetime(create_time_to)
        page = await self._answer("ListCases", body, case_pb2.CaseList)
        return list(page.cases), page.next_page_token

    async def issue_order(
        self, instruction: order_pb2.OrderInstruction, *, message_id: str | None = None
    ) -> order_pb2.Order:
        order = await self._answer("IssueOrder", instruction, order_pb2.Order, message_id)
        _same("case", instruction.case_id, order.case_id)
        return order

    async def answer_order(
        self, result: order_pb2.ExecutionResult, *, message_id: str | None = None
    ) -> order_pb2.Order:
        order = await self._answer("AnswerOrder", result, order_pb2.Order, message_id)
        _same("order", result.order_id, order.order_id)
        return order

    async def set_auto_stop_rule(
        self, rule: order_pb2.AutoStopRule, *, message_id: str | None = None
    ) -> order_pb2.AutoStopRule:
        return await self._answer("SetAutoStopRule", rule, order_pb2.AutoStopRule, message_id)

    async def get_case_trail(self, case_id: str) -> trail_pb2.Trail:
        """The accounts the case's money reached, layer by layer, and the transfers between."""
        body = trail_pb2.GetCaseTrailBody(case_id=case_id)
        trail = await self._answer("GetCaseTrail", body, trail_pb2.Trail)
        _same("case", case_id, trail.case_id)
        return trail

    async def start_distribution(
        self, body: returns_pb2.StartDistributionBody, *, message_id: str | None = None
    ) -> returns_pb2.Distribution:
        return await self._answer("StartDistribution", body, returns_pb2.Distribution, message_id)

    async def object_to_distribution(
        self, distribution_id: str, grounds: str, *, message_id: str | None = None
    ) -> returns_pb2.Distribution:
        body = returns_pb2.ObjectionBody(distribution_id=distribution_id, grounds=grounds)
        return await self._answer(
            "ObjectToDistribution", body, returns_pb2.Distribution, message_id
        )

    async def decide_distribution(
        self,
        distribution_id: str,
        confirm: bool,
        reason: str = "",
        *,
        message_id: str | None = None,
    ) -> returns_pb2.Distribution:
        decision = (
            returns_pb2.DISTRIBUTION_DECISION_CONFIRM
            if confirm
            else returns_pb2.DISTRIBUTION_DECISION_WITHDRAW
        )
        body = returns_pb2.DistributionDecisionBody(
            distribution_id=distribution_id, decision=decision, reason=reason
        )
        return await self._answer("DecideDistribution", body, returns_pb2.Distribution, message_id)

    async def get_distribution(self, distribution_id: str) -> returns_pb2.Distribution:
        body = returns_pb2.GetDistributionBody(distribution_id=distribution_id)
        return await self._answer("GetDistribution", body, returns_pb2.Distribution)

    # ---- the blacklist and punishment list (docs/blacklist.md) --------------------------------

    async def publish_list_entry(
        self,
        *,
        account: tuple[str, str, str] | None = None,
        person: tuple[str, str] | None = None,
        basis: blacklist_pb2.ListBasis.ValueType,
        reason: str,
        source_case_id: str,
        message_id: str | None = None,
    ) -> blacklist_pb2.ListEntryRecord:
        """The centre lists an account, `(institution, number, holder)`, or a person,
        `(id_number, name)`: exactly one of the two."""
        if (account is None) == (person is None):
            raise ValueError("give exactly one of account= and person=")
        body = blacklist_pb2.PublishListEntryBody(
            basis=basis, reason=reason, source_case_id=source_case_id
        )
        if account is not None:
            institution, number, holder = account
            body.account.CopyFrom(
                account_pb2.AccountRef(
                    institution_code=institution, account_number=number, holder_name=holder
                )
            )
        if person is not None:
            id_number, name = person
            body.person.CopyFrom(blacklist_pb2.ListedPerson(id_number=id_number, name=name))
        record = await self._answer(
            "PublishListEntry", body, blacklist_pb2.ListEntryRecord, message_id
        )
        _same("source case", source_case_id.strip(), record.entry.source_case_id)
        return record

    async def remove_list_entry(
        self, entry_id: str, reason: str, *, message_id: str | None = None
    ) -> blacklist_pb2.ListEntryRecord:
        """The centre ends a listing now."""
        body = blacklist_pb2.RemoveListEntryBody(entry_id=entry_id, reason=reason)
        record = await self._answer(
            "RemoveListEntry", body, blacklist_pb2.ListEntryRecord, message_id
        )
        _same("list entry", entry_id, record.entry.entry_id)
        return record

    async def check_list(
        self, subjects: Sequence[blacklist_pb2.ListSubject]
    ) -> blacklist_pb2.CheckListResult:
        """Whether each subject (up to 1,000) is listed now; one hit per subject, in order."""
        body = blacklist_pb2.CheckListBody(subjects=list(subjects))
        result = await self._answer("CheckList", body, blacklist_pb2.CheckListResult)
        if len(result.hits) != len(subjects) or any(
            hit.index != i for i, hit in enumerate(result.hits)
        ):
            raise HubSignatureError(
                f"asked about {len(subjects)} subject(s), the hub answered "
                f"{[hit.index for hit in result.hits]}"
            )
        return result

    async def sync_list(
        self,
        from_version: int,
        form: blacklist_pb2.ListForm.ValueType = blacklist_pb2.LIST_FORM_CLEAR,
        follow: bool = False,
        *,
        timeout: float | None = None,
    ) -> AsyncIterator[blacklist_pb2.SyncListResponse]:
        """The parts of a copy of the list from `from_version` (docs/blacklist.md): a snapshot
        and its entry pages, or change pages, then a hub-signed checkpoint; with `follow`,
        every later batch of changes and its checkpoint until the caller stops iterating.

        The parts are not signed: check each checkpoint with `open_checkpoint`, and trust
        what came before it only if the copy's count and digest then equal the checkpoint's.
        A refusal (OUT_OF_RANGE VERSION_NOT_ISSUED, ...) or a lost connection is a HubError.
        """
        envelope = self.seal(
            blacklist_pb2.SyncListBody(from_version=from_version, form=form, follow=follow)
        )
        method = self._channel.unary_stream(
            SYNC_LIST_PATH,
            request_serializer=_serialize,
            response_deserializer=blacklist_pb2.SyncListResponse.FromString,
        )
        call = method(blacklist_pb2.SyncListRequest(envelope=envelope), timeout=timeout)
        try:
            while True:
                part = await call.read()
                if part is grpc.aio.EOF:  # type: ignore[attr-defined]
                    return
                assert isinstance(part, blacklist_pb2.SyncListResponse)
                yield part
        except grpc.aio.AioRpcError as err:
            raise await self._failure(err, envelope.message_id) from err
        finally:
            call.cancel()

    def open_checkpoint(self, envelope: Envelope) -> blacklist_pb2.ListCheckpoint:
        """The checkpoint of a SyncList stream, once its hub signature verifies and it is
        addressed to this institution; HubSignatureError otherwise."""
        return self.open_hub_envelope(envelope, blacklist_pb2.ListCheckpoint)

    # ---- appeals ------------------------------------------------------------------------------

    async def file_appeal(
        self,
        reference: str,
        grounds: str,
        documents: Sequence[tuple[str, bytes]] = (),
        *,
        message_id: str | None = None,
    ) -> appeal_pb2.Appeal:
        """Contest a stop, a freeze or a listing (`reference`: the order or entry id);
        `documents` are (name, SHA-256 of the document) pairs: the hub keeps only hashes."""
        body = appeal_pb2.FileAppealBody(
            reference=reference,
            grounds=grounds,
            documents=[appeal_pb2.AppealDocument(name=n, sha256=h) for n, h in documents],
        )
        appeal = await self._answer("FileAppeal", body, appeal_pb2.Appeal, message_id)
        _same("reference", reference, appeal.reference)
        return appeal

    async def decide_appeal(
        self, appeal_id: str, uphold: bool, reason: str, *, message_id: str | None = None
    ) -> appeal_pb2.Appeal:
        decision = (
            appeal_pb2.APPEAL_DECISION_UPHOLD if uphold else appeal_pb2.APPEAL_DECISION_REJECT
        )
        body = appeal_pb2.DecideAppealBody(appeal_id=appeal_id, decision=decision, reason=reason)
        appeal = await self._answer("DecideAppeal", body, appeal_pb2.Appeal, message_id)
        _same("appeal", appeal_id, appeal.appeal_id)
        return appeal

    async def get_appeal(self, appeal_id: str) -> appeal_pb2.Appeal:
        body = appeal_pb2.GetAppealBody(appeal_id=appeal_id)
        appeal = await self._answer("GetAppeal", body, appeal_pb2.Appeal)
        _same("appeal", appeal_id, appeal.appeal_id)
        return appeal

    # ---- grades and leads (docs/grades.md, docs/leads.md) --------------------------------------

    async def set_case_grade(
        self, case_id: str, grade: int, reason: str, *, message_id: str | None = None
    ) -> case_pb2.Case:
        """The centre changes a case's grade (`grade`: a `grade_pb2.Grade`)."""
        body = case_pb2.SetCaseGradeBody(
            name=case_id, grade=cast(grade_pb2.Grade.ValueType, grade), reason=reason
        )
        case = await self._answer("SetCaseGrade", body, case_pb2.Case, message_id)
        _same("case", case_id, case.case_id)
        return case

    async def submit_lead(
        self, body: lead_pb2.SubmitLeadBody, *, message_id: str | None = None
    ) -> lead_pb2.Lead:
        """Hand the centre a lead: suspicious accounts and/or a transaction pattern."""
        return await self._answer("SubmitLead", body, lead_pb2.Lead, message_id)

    async def triage_lead(
        self, body: lead_pb2.TriageLeadBody, *, message_id: str | None = None
    ) -> lead_pb2.Lead:
        """The centre's triage of a lead: one action of `TriageLeadBody`."""
        lead = await self._answer("TriageLead", body, lead_pb2.Lead, message_id)
        _same("lead", body.name, lead.name)
        return lead

    async def ask_for_more(self, name: str, question: str) -> lead_pb2.Lead:
        return await self.triage_lead(
            lead_pb2.TriageLeadBody(name=name, ask_for_more=lead_pb2.AskForMore(question=question))
        )

    async def warn_member_from_lead(
        self,
        name: str,
        account: tuple[str, str, str],
        amount_at_risk_fen: int,
        *,
        note: str = "",
        fraud_type: int = 0,
        counterparty: tuple[str, str, str] | None = None,
    ) -> lead_pb2.Lead:
        """Accept a lead by warning the member that keeps `account` (institution, number,
        holder: one the lead names; an empty holder takes the lead's). The warning takes the
        lead's grade; the answer's `warning_id` names it. `fraud_type` is a
        `case_pb2.FraudType`."""
        action = lead_pb2.WarnFromLead(
            account=_account_ref(account),
            amount_at_risk_fen=amount_at_risk_fen,
            note=note,
            fraud_type=cast(case_pb2.FraudType.ValueType, fraud_type),
        )
        if counterparty is not None:
            action.counterparty.CopyFrom(_account_ref(counterparty))
        return await self.triage_lead(lead_pb2.TriageLeadBody(name=name, warn_member=action))

    async def dismiss_lead(self, name: str, reason: str) -> lead_pb2.Lead:
        return await self.triage_lead(
            lead_pb2.TriageLeadBody(name=name, dismiss=lead_pb2.DismissLead(reason=reason))
        )

    async def add_lead_information(
        self,
        name: str,
        answer: str,
        evidence: Sequence[tuple[str, bytes]] = (),
        *,
        message_id: str | None = None,
    ) -> lead_pb2.Lead:
        """Answer the centre's question about a lead; `evidence`: (name, SHA-256) pairs."""
        body = lead_pb2.AddLeadInformationBody(
            name=name,
            answer=answer,
            evidence=[lead_pb2.LeadEvidence(name=n, sha256=h) for n, h in evidence],
        )
        lead = await self._answer("AddLeadInformation", body, lead_pb2.Lead, message_id)
        _same("lead", name, lead.name)
        return lead

    async def set_lead_grade(
        self, name: str, grade: int, reason: str, *, message_id: str | None = None
    ) -> lead_pb2.Lead:
        body = lead_pb2.SetLeadGradeBody(
            name=name, grade=cast(grade_pb2.Grade.ValueType, grade), reason=reason
        )
        lead = await self._answer("SetLeadGrade", body, lead_pb2.Lead, message_id)
        _same("lead", name, lead.name)
        return lead

    async def get_lead(self, name: str) -> lead_pb2.Lead:
        lead = await self._answer("GetLead", lead_pb2.GetLeadBody(name=name), lead_pb2.Lead)
        _same("lead", name, lead.name)
        return lead

    async def list_leads(
        self, *, state: int = 0, institution: str = "", grade: int = 0, page_size: int = 50
    ) -> list[lead_pb2.Lead]:
        """Leads in the queue's order (red first, then by triage deadline), following page
        tokens to the end: all for the centre, the regulator and auditors, a member's own."""
        found: list[lead_pb2.Lead] = []
        token = ""
        while True:
            body = lead_pb2.ListLeadsBody(
                page_size=page_size,
                page_token=token,
                state=cast(lead_pb2.LeadState.ValueType, state),
                institution=institution,
                grade=cast(grade_pb2.Grade.ValueType, grade),
            )
            page = await self._answer("ListLeads", body, lead_pb2.LeadList)
            found.extend(page.leads)
            if not page.next_page_token or page.next_page_token == token:
                return found
            token = page.next_page_token

    # ---- warnings (docs/warnings.md) ---------------------------------------------------------

    async def send_warning(
        self,
        account: tuple[str, str, str],
        amount_at_risk_fen: int,
        *,
        grade: int = 0,
        fraud_type: int = 0,
        counterparty: tuple[str, str, str] | None = None,
        text: str = "",
        centre: str = "",
        message_id: str | None = None,
    ) -> warning_pb2.Warning:
        """Warn of a customer at risk: the centre warns the member keeping `account`
        (institution, number, holder); a member warns the centre (`centre`: which, when the
        registry has several). `grade` is a `grade_pb2.Grade`, `fraud_type` a
        `case_pb2.FraudType`."""
        body = warning_pb2.SendWarningBody(
            account=_account_ref(account),
            amount_at_risk_fen=amount_at_risk_fen,
            grade=cast(grade_pb2.Grade.ValueType, grade),
            fraud_type=cast(case_pb2.FraudType.ValueType, fraud_type),
            text=text,
            centre=centre,
        )
        if counterparty is not None:
            body.counterparty.CopyFrom(_account_ref(counterparty))
        warning = await self._answer("SendWarning", body, warning_pb2.Warning, message_id)
        _same("account", account[1], warning.account.account_number)
        return warning

    async def acknowledge_warning(
        self, warning_id: str, note: str = "", *, message_id: str | None = None
    ) -> warning_pb2.Warning:
        """The addressee has the warning and is trying to reach the customer."""
        body = warning_pb2.AcknowledgeWarningBody(warning_id=warning_id, note=note)
        warning = await self._answer("AcknowledgeWarning", body, warning_pb2.Warning, message_id)
        _same("warning", warning_id, warning.warning_id)
        return warning

    async def report_warning_outcome(
        self,
        warning_id: str,
        outcome: int,
        *,
        loss_prevented_fen: int = 0,
        text: str = "",
        report: case_pb2.Report | None = None,
        message_id: str | None = None,
    ) -> warning_pb2.Warning:
        """Close a warning addressed to this institution. `outcome` is a
        `warning_pb2.WarningOutcome`; ALREADY_LOST carries the `report` of the loss, from
        which the hub opens a case (the answer's `case_id`)."""
        body = warning_pb2.ReportWarningOutcomeBody(
            warning_id=warning_id,
            outcome=cast(warning_pb2.WarningOutcome.ValueType, outcome),
            loss_prevented_fen=loss_prevented_fen,
            text=text,
        )
        if report is not None:
            body.report.CopyFrom(report)
        warning = await self._answer("ReportWarningOutcome", body, warning_pb2.Warning, message_id)
        _same("warning", warning_id, warning.warning_id)
        return warning

    async def get_warning(self, warning_id: str) -> warning_pb2.Warning:
        body = warning_pb2.GetWarningBody(warning_id=warning_id)
        warning = await self._answer("GetWarning", body, warning_pb2.Warning)
        _same("warning", warning_id, warning.warning_id)
        return warning

    async def set_warning_grade(
        self, warning_id: str, grade: int, reason: str, *, message_id: str | None = None
    ) -> warning_pb2.Warning:
        """The centre regrades a warning (`grade`: a `grade_pb2.Grade`)."""
        body = warning_pb2.SetWarningGradeBody(
            name=f"warnings/{warning_id}",
            grade=cast(grade_pb2.Grade.ValueType, grade),
            reason=reason,
        )
        warning = await self._answer("SetWarningGrade", body, warning_pb2.Warning, message_id)
        _same("warning", warning_id, warning.warning_id)
        return warning

    async def list_warnings(
        self,
        *,
        state: int = 0,
        institution_code: str = "",
        open_only: bool = False,
        page_size: int = 50,
    ) -> list[warning_pb2.Warning]:
        """Warnings newest first, following page tokens to the end: all of them for the
        centre, the regulator and auditors; those this institution sent or is addressed for a
        bank or payment institution. `state` is a `warning_pb2.WarningState`."""
        found: list[warning_pb2.Warning] = []
        token = ""
        while True:
            body = warning_pb2.ListWarningsBody(
                page_size=page_size,
                page_token=token,
                state=cast(warning_pb2.WarningState.ValueType, state),
                institution_code=institution_code,
                open_only=open_only,
            )
            page = await self._answer("ListWarnings", body, warning_pb2.WarningList)
            found.extend(page.warnings)
            if not page.next_page_token or page.next_page_token == token:
                return found
            token = page.next_page_token

    # ---- the audit log (the centre, the regulator and auditors) ----------------------------

    async def list_appeals(
        self, *, state: int = 0, institution_code: str = "", page_size: int = 50
    ) -> list[appeal_pb2.Appeal]:
        """Appeals newest first, following page tokens to the end: all of them for the
        centre, the regulator and auditors, this institution's own for a bank or payment
        institution. `state` is an `appeal_pb2.AppealState`."""
        found: list[appeal_pb2.Appeal] = []
        token = ""
        while True:
            body = appeal_pb2.ListAppealsBody(
                page_size=page_size,
                page_token=token,
                state=cast(appeal_pb2.AppealState.ValueType, state),
                institution_code=institution_code,
            )
            page = await self._answer("ListAppeals", body, appeal_pb2.AppealList)
            found.extend(page.appeals)
            if not page.next_page_token or page.next_page_token == token:
                return found
            token = page.next_page_token

    async def list_audit_entries(
        self, from_index: int = 0, page_size: int = 100
    ) -> audit_pb2.AuditEntryPage:
        body = audit_pb2.ListAuditEntriesBody(from_index=from_index, page_size=page_size)
        return await self._answer("ListAuditEntries", body, audit_pb2.AuditEntryPage)

    async def get_log_checkpoint(
        self, tree_size: int = 0, *, fresh: bool = False
    ) -> tuple[Envelope, audit_pb2.LogCheckpoint]:
        """A hub-signed checkpoint of the audit log (the latest, one of `tree_size`, or with
        `fresh` one signed now): the envelope to keep, and its verified body."""
        body = audit_pb2.GetLogCheckpointBody(tree_size=tree_size, fresh=fresh)
        signed = await self._answer("GetLogCheckpoint", body, audit_pb2.SignedLogCheckpoint)
        envelope = signed.checkpoint
        # Checked with the hub key this client pins, as every hub message; a checkpoint is
        # addressed to every auditor ("AUDIT"), not to this institution.
        checkpoint = self.open_hub_envelope(
            envelope, audit_pb2.LogCheckpoint, also_addressed_to="AUDIT"
        )
        if tree_size:
            _same("checkpoint size", str(tree_size), str(checkpoint.tree_size))
        await self.witness_checkpoint(envelope)
        return envelope, checkpoint

    async def get_inclusion_proof(self, log_index: int, tree_size: int) -> audit_pb2.InclusionProof:
        body = audit_pb2.GetInclusionProofBody(log_index=log_index, tree_size=tree_size)
        return await self._answer("GetInclusionProof", body, audit_pb2.InclusionProof)

    async def get_consistency_proof(
        self, first_size: int, second_size: int
    ) -> audit_pb2.ConsistencyProof:
        body = audit_pb2.GetConsistencyProofBody(first_size=first_size, second_size=second_size)
        return await self._answer("GetConsistencyProof", body, audit_pb2.ConsistencyProof)

    async def get_institution(self, code: str) -> institution_pb2.Institution:
        inst = await self._answer(
            "GetInstitution",
            institution_pb2.GetInstitutionBody(code=code),
            institution_pb2.Institution,
        )
        _same("institution", code, inst.code)
        self._registry[code] = _Registered(inst, time.monotonic())
        return inst

    async def list_institutions(self, *, page_size: int = 100) -> list[institution_pb2.Institution]:
        found: list[institution_pb2.Institution] = []
        token = ""
        while True:
            body = institution_pb2.ListInstitutionsBody(page_size=page_size, page_token=token)
            page = await self._answer("ListInstitutions", body, institution_pb2.InstitutionList)
            found.extend(page.institutions)
            if not page.next_page_token or page.next_page_token == token:
                return found
            token = page.next_page_token

    async def outcome_figures(
        self,
        start: datetime,
        end: datetime,
        *,
        institution: str = "",
        period: outcome_pb2.OutcomePeriod.ValueType = outcome_pb2.OUTCOME_PERIOD_UNSPECIFIED,
        zone: str = "",
    ) -> outcome_pb2.OutcomeReport:
        """The outcome figures of [start, end) (docs/outcomes.md), split by `period` in `zone`
        (an IANA name; UTC when empty). A bank or payment institution gets only its own;
        asking for another's is refused (PERMISSION_DENIED, NOT_OWN_INSTITUTION)."""
        body = outcome_pb2.OutcomeQuery(institution=institution, period=period, zone=zone)
        body.from_time.FromDatetime(start.astimezone(UTC))
        body.to_time.FromDatetime(end.astimezone(UTC))
        report = await self._answer("GetOutcomeFigures", body, outcome_pb2.OutcomeReport)
        _same("range start", body.from_time.ToJsonString(), report.from_time.ToJsonString())
        _same("range end", body.to_time.ToJsonString(), report.to_time.ToJsonString())
        for row in report.rows:
            if institution and row.institution:
                _same("institution", institution, row.institution)
        return report

    async def list_clocks(
        self,
        *,
        institution: str = "",
        case_id: str = "",
        open_only: bool = False,
        breached_only: bool = False,
        page_size: int = 50,
        unacknowledged_only: bool = False,
    ) -> list[sla_pb2.ClockView]:
        """Case clocks with their SLA log, running ones first by time left, following page
        tokens to the end. A bank or payment institution sees only the clocks it is
        responsible for; asking for another institution's is refused (PERMISSION_DENIED)."""
        found: list[sla_pb2.ClockView] = []
        token = ""
        while True:
            body = sla_pb2.ListClocksBody(
                page_size=page_size,
                page_token=token,
                institution=institution,
                case_id=case_id,
                open_only=open_only,
                breached_only=breached_only,
                unacknowledged_only=unacknowledged_only,
            )
            page = await self._answer("ListClocks", body, sla_pb2.ClockList)
            for clock in page.clocks:
                if institution:
                    _same("responsible institution", institution, clock.responsible)
                if case_id:
                    _same("case", case_id, clock.case_id)
            found.extend(page.clocks)
            if not page.next_page_token or page.next_page_token == token:
                return found
            token = page.next_page_token

    async def acknowledge_breach(
        self, clock_id: str, note: str = "", *, message_id: str | None = None
    ) -> sla_pb2.ClockView:
        """A person acknowledges the breach of `clock_id`; the clock as it is afterwards.

        The hub wants to know who: call it inside `acting(operator)` (or the hub refuses it,
        INVALID_ARGUMENT OPERATOR_REQUIRED). A breach is acknowledged once
        (FAILED_PRECONDITION ALREADY_ACKNOWLEDGED names who did, and when)."""
        clock = await self._answer(
            "AcknowledgeBreach",
            sla_pb2.BreachAcknowledgement(clock_id=clock_id, note=note),
            sla_pb2.ClockView,
            message_id,
        )
        _same("clock", clock_id, clock.clock_id)
        return clock

    # ---- the registry, cached -------------------------------------------------------------

    async def member(self, code: str, *, fresh: bool = False) -> institution_pb2.Institution:
        """The member `code` from the hub's registry, cached for a minute."""
        cached = self._registry.get(code)
        if not fresh and cached is not None and time.monotonic() - cached.fetched < _REGISTRY_TTL:
            return cached.institution
        return await self.get_institution(code)

    async def _registered_key(
        self, code: str, key_id: str, at: datetime | None
    ) -> institution_pb2.PublicKey | None:
        try:
            inst = await self.member(code)
            key = _find_key(inst, key_id)
            cached = self._registry.get(code)
            if key is None and (
                cached is None or time.monotonic() - cached.fetched >= _REGISTRY_REFRESH_MIN
            ):
                # A key registered since the cache was filled: look once more, not every time.
                inst = await self.member(code, fresh=True)
                key = _find_key(inst, key_id)
        except HubError as err:
            if err.code is grpc.StatusCode.NOT_FOUND and err.signed:
                return None
            raise
        if key is None:
            return None
        if at is None:
            return key if key.state == institution_pb2.KEY_STATE_ACTIVE else None
        created = _to_datetime(key, "create_time")
        if created is not None and created > at + _KEY_CLOCK_SKEW:
            return None
        if key.state == institution_pb2.KEY_STATE_REVOKED:
            revoked = _to_datetime(key, "revoke_time")
            if revoked is None or revoked <= at:
                return None
        return key

    async def public_key(
        self, code: str, key_id: str, *, at: datetime | None = None
    ) -> bytes | None:
        """The raw public key `key_id` of `code`, if it was valid at `at` (now if None)."""
        key = await self._registered_key(code, key_id, at)
        return None if key is None else bytes(key.public_key)

    # ---- the delivery stream --------------------------------------------------------------

    def deliveries(
        self,
        connection_name: str = "default",
        *,
        reconnect: bool = True,
        initial_backoff: float = 0.2,
        max_backoff: float = 10.0,
        give_up_after: float | None = None,
    ) -> DeliveryStream:
        stream = DeliveryStream(
            self,
            connection_name,
            reconnect=reconnect,
            initial_backoff=initial_backoff,
            max_backoff=max_backoff,
            give_up_after=give_up_after,
        )
        self._streams.append(stream)
        return stream

    def _forget(self, stream: DeliveryStream) -> None:
        with contextlib.suppress(ValueError):
            self._streams.remove(stream)

    def _stream_callable(
        self,
    ) -> grpc.aio.StreamStreamMultiCallable[
        delivery_pb2.StreamDeliveriesRequest, delivery_pb2.StreamDeliveriesResponse
    ]:
        return delivery_pb2_grpc.DeliveryServiceStub(self._channel).StreamDeliveries


def _not_reached(target: str, timeout: float, reach: Reach | None) -> str:
    if reach is None:
        return f"no connection to the hub at {target} within {timeout:g} s"
    if not reach.answered:
        return (
            f"no hub answered at {target} within {timeout:g} s ({reach.detail}): is "
            "`stophub serve` running there, on that address?"
        )
    return (
        f"the hub at {target} did not take this client's TLS connection within {timeout:g} s, "
        "though its certificate fits: check that this institution's certificate and key were "
        "issued by the network's CA (`stophub pki issue CODE`)"
    )


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _find_key(inst: institution_pb2.Institution, key_id: str) -> institution_pb2.PublicKey | None:
    return next((k for k in inst.keys if k.key_id == key_id), None)


def _account_ref(account: tuple[str, str, str]) -> account_pb2.AccountRef:
    institution, number, holder = account
    return account_pb2.AccountRef(
        institution_code=institution, account_number=number, holder_name=holder
    )


def _same(what: str, asked: str, answered: str) -> None:
    # The hub's answers do not name the request they answer, so a genuine hub-signed answer
    # to another call could be replayed in place of this one; the content must match.
    if asked and asked != answered:
        raise HubSignatureError(
            f"asked about {what} {asked!r}, the hub answered about {answered!r}"
        )


class _End:
    """Queued after the last delivery of a stream."""


@dataclass(frozen=True)
class _Failure:
    error: BaseException


class DeliveryStream:
    """The institution's deliveries: an async iterator of verified `Delivery` objects.

    Reconnects with capped, jittered exponential backoff when the connection is lost (if
    `reconnect`), to whichever of the client's hub replicas answers; the hub then redelivers
    everything not acknowledged. A replica that is shutting down ends the stream with
    UNAVAILABLE `HUB_DRAINING`: the stream moves at once. None of this reaches the consumer,
    unless no replica has taken the stream for `give_up_after` seconds (None: never): then
    the iteration raises HubError UNAVAILABLE, saying so (docs/failover.md). So it does, with a new
    subscription signed at the current time, when the hub refuses the subscription or an
    acknowledgement as older than the replay window (ENVELOPE_EXPIRED) although this
    institution's clock agrees: the message went stale on its way, and signing it anew is
    the cure. A delivery whose hub signature fails ends the stream with HubSignatureError;
    any other hub refusal (the key was revoked, the clock is wrong, ...) ends it with
    HubError.

    Acknowledge each delivery with `ack` once it is stored or acted on: an acknowledgement
    lost with the connection is resent after reconnecting, and until the hub has it the
    delivery may come again, so consumers must be idempotent (the `attempt` field says when
    a delivery is a repeat).
    """

    _ACKED_MEMORY = 10_000

    def __init__(
        self,
        client: HubClient,
        connection_name: str,
        *,
        reconnect: bool = True,
        initial_backoff: float = 0.2,
        max_backoff: float = 10.0,
        give_up_after: float | None = None,
    ) -> None:
        if initial_backoff <= 0 or max_backoff < initial_backoff:
            raise ValueError("need 0 < initial_backoff <= max_backoff")
        if give_up_after is not None and give_up_after <= 0:
            raise ValueError("give_up_after is a number of seconds > 0, or None (never)")
        self.give_up_after = give_up_after
        self.client = client
        self.connection_name = connection_name
        self.reconnect = reconnect
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.connected = asyncio.Event()
        # How many times the connection was lost and tried again; operators watch this.
        self.reconnects = 0
        self._queue: asyncio.Queue[Delivery | _Failure | _End] = asyncio.Queue()
        self._queued: set[int] = set()
        self._acked: OrderedDict[int, None] = OrderedDict()
        self._unsent_acks: set[int] = set()
        self._call: (
            grpc.aio.StreamStreamCall[
                delivery_pb2.StreamDeliveriesRequest, delivery_pb2.StreamDeliveriesResponse
            ]
            | None
        ) = None
        self._write_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._finished = False
        # The current connection's subscription: when it was signed, and whether the hub
        # accepted it (then this institution's clock agreed with the hub's).
        self._subscribed_at: datetime | None = None
        self._subscribed = False

    def start(self) -> None:
        """Connect now rather than on the first iteration (idempotent)."""
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(
                self._run(), name=f"stophub-deliveries-{self.client.institution}"
            )

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Delivery:
        self.start()
        while not self._finished:
            item = await self._queue.get()
            if isinstance(item, _End):
                self._finished = True
                break
            if isinstance(item, _Failure):
                raise item.error
            self._queued.discard(item.sequence)
            # A redelivery that arrived while the consumer was still working on the first
            # copy, which it has acknowledged since.
            if item.sequence not in self._acked:
                return item
        raise StopAsyncIteration

    async def ack(self, *sequences: int) -> None:
        """Tell the hub these deliveries are stored; resent after a reconnect if lost."""
        fresh = sorted(set(sequences))
        if not fresh:
            return
        for seq in fresh:
            self._acked[seq] = None
            self._acked.move_to_end(seq)
        while len(self._acked) > self._ACKED_MEMORY:
            self._acked.popitem(last=False)
        async with self._write_lock:
            await self._send_acks(fresh)

    async def _send_acks(self, sequences: list[int]) -> None:
        """Write an AckBody on the current connection; remember it if there is none."""
        call = self._call
        if call is None or not self.connected.is_set():
            self._unsent_acks.update(sequences)
            return
        envelope = self.client.seal(delivery_pb2.AckBody(sequences=sequences))
        try:
            await call.write(delivery_pb2.StreamDeliveriesRequest(envelope=envelope))
        except (grpc.RpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
            log.info("ack of %s not sent (%s); resending after reconnect", sequences, exc)
            self._unsent_acks.update(sequences)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.connected.clear()
        if self._call is not None:
            self._call.cancel()
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if task is None:
            self._queue.put_nowait(_End())
        self.client._forget(self)

    # ---- the connection loop -----------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        # When a hub last took this stream's subscription (or the stream started).
        answered_at = time.monotonic()
        try:
            while not self._closed:
                started = time.monotonic()
                received = False
                stale = False
                draining = False
                lost: HubError
                try:
                    received = await self._session()
                    lost = HubError(
                        grpc.StatusCode.UNAVAILABLE, "the hub ended the delivery stream"
                    )
                except HubError as err:
                    stale = self._went_stale(err)
                    draining = err.reason == DRAINING
                    if not err.transient and not stale:
                        raise
                    lost = err
                if self._subscribed:
                    answered_at = time.monotonic()
                if self._closed:
                    return
                if not self.reconnect:
                    raise lost
                silent = time.monotonic() - answered_at
                if self.give_up_after is not None and silent >= self.give_up_after:
                    raise HubError(
                        grpc.StatusCode.UNAVAILABLE,
                        f"no hub at {self.client.target} took the delivery stream for "
                        f"{silent:.0f} s (last: {lost}): are the hub's replicas running, "
                        "and is this the right address?",
                    )
                if received or draining or time.monotonic() - started > self.max_backoff:
                    failures = 0
                failures += 1
                # Jittered, so that every bank does not reconnect in the same instant after
                # a hub restart. A draining replica asked to be left now: its stream's next
                # home is another replica, already there to take it.
                delay = backoff(failures, self.initial_backoff, self.max_backoff)
                if draining:
                    delay = random.uniform(0, min(_DRAIN_SPREAD, self.initial_backoff))
                self.reconnects += 1
                if stale or draining:
                    # Expected of a slow hub, a long pause or a rolling restart: nothing
                    # for an operator to fix.
                    log.info(
                        "%s delivery stream %r: %s; on a new stream in %.2fs",
                        self.client.institution,
                        self.connection_name,
                        "the hub's replica is draining"
                        if draining
                        else (
                            f"the hub found message {lost.message_id or '(no id)'} older "
                            "than its replay window; signing anew"
                        ),
                        delay,
                    )
                else:
                    log.warning(
                        "%s delivery stream %r lost (%s); reconnecting in %.2fs",
                        self.client.institution,
                        self.connection_name,
                        lost,
                        delay,
                    )
                await asyncio.sleep(delay)
        except Exception as exc:
            log.error(
                "%s delivery stream %r ended: %s",
                self.client.institution,
                self.connection_name,
                exc,
            )
            self._queue.put_nowait(_Failure(exc))
        finally:
            self.connected.clear()
            self._queue.put_nowait(_End())

    def _went_stale(self, err: HubError) -> bool:
        """The hub refused a message of this stream as expired, and by this institution's
        own clock it had indeed outlived the replay window when the hub looked at it.

        Once the hub has accepted a stream's subscription, the two clocks agreed; an
        acknowledgement refused as expired since then waited too long on its way (a slow
        hub, a long pause). A subscription refused as expired went stale only if this
        clock also finds it older than the window; otherwise the clock is behind, which
        signing again cannot cure."""
        if err.reason != "ENVELOPE_EXPIRED":
            return False
        if self._subscribed:
            return True
        signed = self._subscribed_at
        return signed is not None and self.client.clock.now() - signed >= REPLAY_WINDOW

    async def _session(self) -> bool:
        """One connection, until it ends; True if it carried at least one delivery."""
        if self.client.witness is not None:
            self.client.witness.check()
        call = self.client._stream_callable()(None)
        received = False
        self._subscribed = False
        try:
            subscribe = self.client.seal(
                delivery_pb2.SubscribeBody(connection_name=self.connection_name)
            )
            self._subscribed_at = create_time_of(subscribe)
            async with self._write_lock:
                await call.write(delivery_pb2.StreamDeliveriesRequest(envelope=subscribe))
                self._call = call
            # The hub sends initial metadata once it has authenticated and attached this
            # stream; a refusal comes instead as the call's status, raised by read() below.
            metadata = await call.initial_metadata()
            subscribed = any(key == "stophub-subscribed" for key, _ in (metadata or ()))
            self._subscribed = subscribed
            async with self._write_lock:
                if subscribed:
                    self.connected.set()
                if subscribed and self._unsent_acks:
                    pending = sorted(self._unsent_acks)
                    self._unsent_acks.clear()
                    await self._send_acks(pending)
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:  # type: ignore[attr-defined]
                    return received
                assert isinstance(response, delivery_pb2.StreamDeliveriesResponse)
                if response.HasField("log_checkpoint"):
                    # A LogForkAlarm ends the stream: the consumer's iteration raises it.
                    await self.client.witness_checkpoint(response.log_checkpoint)
                if response.sequence == 0:
                    continue  # only the checkpoint: not a delivery, never acknowledged
                received = True
                await self._accept(response)
        except grpc.aio.AioRpcError as err:
            raise await self.client._failure(err, None) from err
        finally:
            self.connected.clear()
            self._call = None
            call.cancel()

    async def _accept(self, response: delivery_pb2.StreamDeliveriesResponse) -> None:
        notice = self.client.open_hub_envelope(response.envelope, delivery_pb2.Notice)
        seq = response.sequence
        if seq in self._acked:
            # Our acknowledgement crossed the redelivery, or was lost: say it again.
            async with self._write_lock:
                await self._send_acks([seq])
            return
        if seq in self._queued:
            return  # a redelivery of one still waiting in our queue
        problems: list[str] = []
        origin_ok = await self._check(notice, "origin", problems)
        authorization_ok = await self._check(notice, "authorization", problems)
        self._queued.add(seq)
        self._queue.put_nowait(
            Delivery(
                sequence=seq,
                attempt=response.attempt,
                envelope=response.envelope,
                notice=notice,
                origin_verified=origin_ok,
                authorization_verified=authorization_ok,
                problems=tuple(problems),
            )
        )

    async def _check(self, notice: delivery_pb2.Notice, field: str, problems: list[str]) -> bool:
        if field == "origin" and notice.HasField("origin"):
            forwarded = notice.origin
        elif field == "authorization" and notice.HasField("authorization"):
            forwarded = notice.authorization
        else:
            return False
        problem = await self.client.verify_forwarded(forwarded)
        if problem is not None:
            problems.append(f"{field}: {problem}")
            return False
        return True


__all__ = [
    "DRAINING",
    "HUB",
    "RPCS",
    "SYNC_LIST_PATH",
    "Clock",
    "Delivery",
    "DeliveryStream",
    "HubCertificateError",
    "HubClient",
    "HubError",
    "HubKey",
    "HubSignatureError",
    "LogForkAlarm",
    "read_hub_key",
]
