"""The signing input of an envelope and signature verification.

This module is the reference for docs/signing.md: banks implement the same
layout in Java or Go, so every byte it produces is part of the wire contract.
It deliberately knows nothing about protobuf; `hub.crypto.envelope` maps the
wire Envelope onto `Header`.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from hub.crypto import sm2

# The trailing NUL keeps the tag from being a prefix of any longer tag a
# future layout version might use.
ENVELOPE_TAG: bytes = b"stophub.envelope.v1\x00"

ED25519 = "ed25519"
ECDSA_P256 = "ecdsa-p256-sha256"
SM2_SM3 = sm2.SM2_SM3

_MAX_FIELD = 0xFFFF_FFFF
_MAX_NANOS = 999_999_999
_INT64 = (-(2**63), 2**63 - 1)


class SignatureError(Exception):
    """The signature cannot even be checked: unknown algorithm or malformed key.

    Distinct from a wrong signature (a plain False) because it usually means a
    misconfigured key registry or a client speaking another protocol version,
    which callers report differently from a forged or corrupted message.
    """


@dataclass(frozen=True, slots=True)
class Header:
    """Every envelope field the signature covers, except the body."""

    algorithm: str
    key_id: str
    sender: str
    recipient: str
    message_id: str
    create_seconds: int
    create_nanos: int
    body_type: str
    # The people behind the message (envelope fields 10 and 11). Both empty
    # leaves the signing input exactly as it was before they existed.
    operator: str = ""
    approver: str = ""


def _field(value: bytes) -> bytes:
    if len(value) > _MAX_FIELD:
        raise ValueError(f"field of {len(value)} bytes does not fit a uint32 length prefix")
    return struct.pack(">I", len(value)) + value


def _text(value: str) -> bytes:
    # Strict UTF-8 with no normalisation: the bytes must be those the sender
    # put on the wire, or a Java and a Python signer would disagree on "é".
    return _field(value.encode("utf-8", "strict"))


def _timestamp(seconds: int, nanos: int) -> bytes:
    if not 0 <= nanos <= _MAX_NANOS:
        raise ValueError(f"create_time nanos {nanos} outside 0..{_MAX_NANOS}")
    if not _INT64[0] <= seconds <= _INT64[1]:
        raise ValueError(f"create_time seconds {seconds} outside int64")
    return _field(struct.pack(">qi", seconds, nanos))


def signing_input(header: Header, body: bytes) -> bytes:
    """The exact bytes that are signed, in the layout of docs/signing.md.

    When operator or approver is set, `F(operator) || F(approver)` follows
    `F(body)`; when both are empty nothing follows, so every envelope signed
    before the fields existed keeps its signing input. The length prefix of
    the body makes the two forms unambiguous.
    """
    people: tuple[bytes, ...] = ()
    if header.operator or header.approver:
        people = (_text(header.operator), _text(header.approver))
    return b"".join(
        (
            ENVELOPE_TAG,
            _text(header.algorithm),
            _text(header.key_id),
            _text(header.sender),
            _text(header.recipient),
            _text(header.message_id),
            _timestamp(header.create_seconds, header.create_nanos),
            _text(header.body_type),
            _field(bytes(body)),
            *people,
        )
    )


def message_digest(header: Header, body: bytes) -> bytes:
    """SHA-256 of the signing input: what idempotency compares.

    The signature is left out on purpose: ECDSA signatures are randomised, so a
    sender that re-signs an unchanged message on resend must still be
    recognised as resending it.
    """
    return hashlib.sha256(signing_input(header, body)).digest()


@dataclass(frozen=True, slots=True)
class Algorithm:
    """One signature scheme: how its public keys look and how to verify.

    Signing lives with the private keys (`hub.crypto.keys`), which register
    their own half under the same name.
    """

    name: str
    # Raises SignatureError for a malformed public key; returns the result of
    # checking the signature otherwise.
    verify: Callable[[bytes, bytes, bytes], bool]
    # Checks the public key encoding without verifying anything, so key ids are
    # only ever derived from keys the hub could actually use.
    check_public_key: Callable[[bytes], None]


def _ed25519_public(public_key: bytes) -> ed25519.Ed25519PublicKey:
    if len(public_key) != 32:
        raise SignatureError(f"Ed25519 public key must be 32 bytes, got {len(public_key)}")
    try:
        return ed25519.Ed25519PublicKey.from_public_bytes(public_key)
    except ValueError as exc:
        raise SignatureError(f"malformed Ed25519 public key: {exc}") from exc


def _ed25519_verify(public_key: bytes, signature: bytes, data: bytes) -> bool:
    key = _ed25519_public(public_key)
    if len(signature) != 64:
        return False
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def _p256_public(public_key: bytes) -> ec.EllipticCurvePublicKey:
    # Only the uncompressed form is accepted so that one key has one encoding,
    # and therefore one key id.
    if len(public_key) != 65 or public_key[0] != 0x04:
        raise SignatureError(
            "P-256 public key must be an uncompressed SEC1 point (65 bytes, 0x04 prefix)"
        )
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_key)
    except ValueError as exc:
        raise SignatureError(f"malformed P-256 public key: {exc}") from exc


def _p256_verify(public_key: bytes, signature: bytes, data: bytes) -> bool:
    key = _p256_public(public_key)
    try:
        # OpenSSL insists on strict DER and accepts both low-S and high-S
        # values, which is what Java's SHA256withECDSA and Go's
        # ecdsa.SignASN1 produce.
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def _ed25519_check(public_key: bytes) -> None:
    _ed25519_public(public_key)


def _p256_check(public_key: bytes) -> None:
    _p256_public(public_key)


def _sm2_verify(public_key: bytes, signature: bytes, data: bytes) -> bool:
    try:
        return sm2.verify(public_key, signature, data)
    except sm2.Sm2Error as exc:
        raise SignatureError(str(exc)) from exc


def _sm2_check(public_key: bytes) -> None:
    try:
        sm2.check_public_key(public_key)
    except sm2.Sm2Error as exc:
        raise SignatureError(str(exc)) from exc


# Each entry has its signer in keys.py. sm2-sm3 is listed even where this machine's OpenSSL
# lacks SM2: its envelopes are then refused as uncheckable (SignatureError says why), not as
# an algorithm nobody has heard of.
_REGISTRY: dict[str, Algorithm] = {
    ED25519: Algorithm(ED25519, _ed25519_verify, _ed25519_check),
    ECDSA_P256: Algorithm(ECDSA_P256, _p256_verify, _p256_check),
    SM2_SM3: Algorithm(SM2_SM3, _sm2_verify, _sm2_check),
}

ALGORITHMS: frozenset[str] = frozenset(_REGISTRY)


def get_algorithm(name: str) -> Algorithm:
    """The registered scheme called `name`, or SignatureError."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise SignatureError(f"unknown signature algorithm {name!r}") from None


def verify_signature(algorithm: str, public_key: bytes, signature: bytes, data: bytes) -> bool:
    """True if `signature` is valid for `data` under `public_key`.

    False for a wrong or malformed signature; SignatureError for an unknown
    algorithm or a public key that is not a valid key of that algorithm.
    """
    return get_algorithm(algorithm).verify(public_key, signature, data)


def key_id_for(algorithm: str, public_key: bytes) -> str:
    """The key id of a public key: 16 hex digits, stable across languages.

    The algorithm is hashed in so that the same bytes registered under two
    algorithms can never share an id. Raises SignatureError for an unknown
    algorithm or a malformed key, so no id is ever issued for an unusable key.
    """
    get_algorithm(algorithm).check_public_key(public_key)
    material = algorithm.encode("utf-8") + b"\x00" + public_key
    return hashlib.sha256(material).hexdigest()[:16]
