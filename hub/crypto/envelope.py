"""Seal and verify wire Envelopes (stophub.v1.Envelope).

Verification always works on `env.body` exactly as received. Parsing the body
and serializing it again would not reproduce the signed bytes in general:
protobuf serialization is not canonical across languages and versions.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol

from google.protobuf.message import Message

from hub.crypto.signing import (
    ALGORITHMS,
    Header,
    SignatureError,
    message_digest,
    signing_input,
    verify_signature,
)
from stophub.v1 import envelope_pb2

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


class Signer(Protocol):
    """Anything that can sign as one registered key: a PrivateKey, an HSM."""

    @property
    def algorithm(self) -> str: ...

    @property
    def key_id(self) -> str: ...

    def sign(self, data: bytes) -> bytes: ...


def _to_seconds_nanos(moment: datetime) -> tuple[int, int]:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("create_time must be timezone-aware")
    # timedelta arithmetic is exact integer arithmetic; going through a float
    # timestamp would lose microseconds for dates far from the epoch.
    delta = moment - _EPOCH
    return delta.days * 86_400 + delta.seconds, delta.microseconds * 1_000


def seal(
    signer: Signer,
    *,
    sender: str,
    recipient: str,
    message_id: str,
    create_time: datetime,
    body_type: str,
    body: bytes,
    operator: str = "",
    approver: str = "",
) -> envelope_pb2.Envelope:
    """A signed envelope around `body`, which is carried and signed verbatim.

    `operator` and `approver` name the people at the sender behind the
    message (docs/signing.md); both are signed when either is set.
    """
    if signer.algorithm not in ALGORITHMS:
        # Fail at the sender rather than ship an envelope nobody can verify.
        raise SignatureError(f"unknown signature algorithm {signer.algorithm!r}")
    seconds, nanos = _to_seconds_nanos(create_time)
    header = Header(
        algorithm=signer.algorithm,
        key_id=signer.key_id,
        sender=sender,
        recipient=recipient,
        message_id=message_id,
        create_seconds=seconds,
        create_nanos=nanos,
        body_type=body_type,
        operator=operator,
        approver=approver,
    )
    body = bytes(body)
    env = envelope_pb2.Envelope(
        sender=sender,
        recipient=recipient,
        message_id=message_id,
        body_type=body_type,
        body=body,
        key_id=header.key_id,
        algorithm=header.algorithm,
        signature=signer.sign(signing_input(header, body)),
        operator=operator,
        approver=approver,
    )
    env.create_time.seconds = seconds
    env.create_time.nanos = nanos
    return env


def seal_message(
    signer: Signer,
    *,
    sender: str,
    recipient: str,
    message_id: str,
    create_time: datetime,
    message: Message,
    operator: str = "",
    approver: str = "",
) -> envelope_pb2.Envelope:
    """Serialize `message` once and seal those bytes with its full type name."""
    return seal(
        signer,
        sender=sender,
        recipient=recipient,
        message_id=message_id,
        create_time=create_time,
        body_type=message.DESCRIPTOR.full_name,
        body=message.SerializeToString(),
        operator=operator,
        approver=approver,
    )


def header_of(env: envelope_pb2.Envelope) -> Header:
    """The signed header fields of `env`, exactly as on the wire.

    An absent create_time reads as 0 seconds and 0 nanos, which is also what a
    Java or Go implementation sees for it, so all sides still agree on the
    signing input.
    """
    return Header(
        algorithm=env.algorithm,
        key_id=env.key_id,
        sender=env.sender,
        recipient=env.recipient,
        message_id=env.message_id,
        create_seconds=env.create_time.seconds,
        create_nanos=env.create_time.nanos,
        body_type=env.body_type,
        operator=env.operator,
        approver=env.approver,
    )


def digest_of(env: envelope_pb2.Envelope) -> bytes:
    """`message_digest` of `env`: the idempotency fingerprint of a request.

    Raises ValueError if create_time nanos are outside 0..999_999_999.
    """
    return message_digest(header_of(env), env.body)


def verify_envelope(env: envelope_pb2.Envelope, public_key: bytes) -> bool:
    """True if `env.signature` is valid under `public_key` for `env.algorithm`.

    Only the signature is checked here; whether the key belongs to the sender,
    is active and is registered for `env.algorithm` is the caller's check.
    False for a wrong or malformed signature. SignatureError for an unknown
    algorithm or a malformed public key; ValueError if create_time nanos are
    outside 0..999_999_999 (no valid signing input exists for such a header).
    """
    data = signing_input(header_of(env), env.body)
    return verify_signature(env.algorithm, public_key, env.signature, data)


def create_time_of(env: envelope_pb2.Envelope) -> datetime:
    """create_time as an aware UTC datetime, truncated to microseconds.

    Only for clocks and display: anything signed or hashed uses the exact
    seconds and nanos from the wire via `header_of`. A signed int64 of seconds
    reaches far beyond datetime's years 1..9999: such a time clamps to the
    nearest end, which lies outside any freshness window, instead of raising.
    """
    ts = env.create_time
    try:
        return _EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1_000)
    except OverflowError:
        return _LATEST if ts.seconds > 0 else _EARLIEST
