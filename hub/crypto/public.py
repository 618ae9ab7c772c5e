"""Public keys as operators exchange them: PEM SubjectPublicKeyInfo files (and, read from a
file, the raw 32 bytes of an Ed25519 key)."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from hub.crypto.signing import ECDSA_P256, ED25519, SignatureError


def public_key_to_pem(algorithm: str, raw: bytes) -> bytes:
    key: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
    if algorithm == ED25519:
        key = ed25519.Ed25519PublicKey.from_public_bytes(raw)
    elif algorithm == ECDSA_P256:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    else:
        raise SignatureError(f"unknown algorithm {algorithm!r}")
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_from_pem(pem: bytes) -> tuple[str, bytes]:
    """(algorithm, raw public key bytes) in the encodings docs/signing.md names."""
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise SignatureError(f"not a PEM public key: {exc}") from exc
    if isinstance(key, ed25519.Ed25519PublicKey):
        return ED25519, key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return ECDSA_P256, key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    raise SignatureError("only Ed25519 and ECDSA P-256 public keys are accepted")


def public_key_from_file(data: bytes) -> tuple[str, bytes]:
    """(algorithm, raw public key) of a public key file as operators hand it over (docs/signing.md,
    "Key files"): a PEM public key, Ed25519 or ECDSA P-256 (the `.pub` that `stophub keys
    generate` writes), or a raw 32-byte Ed25519 key. Anything else is a SignatureError that
    says which forms are."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return public_key_from_pem(data)
    if len(data) == 32:
        return ED25519, data
    raise SignatureError(
        f"neither a PEM public key (Ed25519 or ECDSA P-256, as `stophub keys generate` writes "
        f"it) nor a raw 32-byte Ed25519 key; got {len(data)} bytes"
    )
