"""Public keys as operators exchange them: PEM SubjectPublicKeyInfo files (and, read from a
file, the raw 32 bytes of an Ed25519 key). An SM2 file holds the point only: a distinguishing
ID other than the default is given beside it (`--distinguishing-id`) and joined to the point
by `with_distinguishing_id`."""

from __future__ import annotations

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from hub.crypto import sm2
from hub.crypto.signing import ECDSA_P256, ED25519, SM2_SM3, SignatureError


def public_key_to_pem(algorithm: str, raw: bytes) -> bytes:
    """The PEM SubjectPublicKeyInfo of a raw public key (for SM2, of the key record's point:
    the distinguishing ID has no place in it)."""
    key: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
    if algorithm == SM2_SM3:
        try:
            point, _ = sm2.split_record(raw)
            return sm2.pem(sm2.spki_der(point), "PUBLIC KEY")
        except sm2.Sm2Error as exc:
            raise SignatureError(str(exc)) from exc
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
    """(algorithm, raw public key bytes) in the encodings docs/signing.md names; an SM2 key
    comes back with the default distinguishing ID (its bare point)."""
    der = sm2.pem_body(pem, b"PUBLIC KEY")
    if der is not None and der.startswith(sm2.SPKI_PREFIX):
        try:
            point = sm2.point_from_spki(der)
        except sm2.Sm2Error as exc:
            raise SignatureError(str(exc)) from exc
        if point is None:
            raise SignatureError("malformed SM2 SubjectPublicKeyInfo")
        return SM2_SM3, point
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SignatureError(f"not a PEM public key: {exc}") from exc
    if isinstance(key, ed25519.Ed25519PublicKey):
        return ED25519, key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return ECDSA_P256, key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    raise SignatureError("only Ed25519, ECDSA P-256 and SM2 public keys are accepted")


def with_distinguishing_id(algorithm: str, raw: bytes, distinguishing_id: str | None) -> bytes:
    """The key record of `raw` under a distinguishing ID given as text (UTF-8); None or the
    default leaves the key as it is. Only SM2 keys have one."""
    if distinguishing_id is None:
        return raw
    if algorithm != SM2_SM3:
        raise SignatureError(f"a distinguishing ID is for sm2-sm3 keys only, not {algorithm}")
    try:
        point, _ = sm2.split_record(raw)
        return sm2.make_record(point, distinguishing_id.encode("utf-8"))
    except sm2.Sm2Error as exc:
        raise SignatureError(str(exc)) from exc


def public_key_from_file(data: bytes) -> tuple[str, bytes]:
    """(algorithm, raw public key) of a public key file as operators hand it over (docs/signing.md,
    "Key files"): a PEM public key, Ed25519, ECDSA P-256 or SM2 (the `.pub` that `stophub keys
    generate` writes), or a raw 32-byte Ed25519 key. Anything else is a SignatureError that
    says which forms are."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return public_key_from_pem(data)
    if len(data) == 32:
        return ED25519, data
    raise SignatureError(
        f"neither a PEM public key (Ed25519, ECDSA P-256 or SM2, as `stophub keys generate` writes "
        f"it) nor a raw 32-byte Ed25519 key; got {len(data)} bytes"
    )
