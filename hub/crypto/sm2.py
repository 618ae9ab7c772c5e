"""SM2 signatures with SM3 (`sm2-sm3`, GB/T 32918.2 and GM/T 0009): the encodings of
docs/signing.md over the system's OpenSSL (hub/crypto/_sm2.c, ADR 23).

The registered public key of an `sm2-sm3` key ("the key record") is the 65-byte uncompressed
point, followed by the signer's distinguishing ID only when that is not the default
`1234567812345678`. The ID is part of what a signature proves (it is hashed into Z), so it
lives where the key id is computed from: two IDs for one point are two keys with two key ids,
and nothing that carries a public key (the registry, GetInstitution, a pinned hub key, the
audit export) can lose it.
"""

from __future__ import annotations

import base64
from functools import lru_cache
from typing import Any

SM2_SM3 = "sm2-sm3"
DEFAULT_ID = b"1234567812345678"
POINT_SIZE = 65
SCALAR_SIZE = 32
# A longer ID is legal in GB/T 32918.2 (up to 8191 bytes) but no deployment needs one, and a
# bound keeps key records small.
MAX_ID = 128
# SubjectPublicKeyInfo of an SM2 key: id-ecPublicKey (1.2.840.10045.2.1) with the SM2 curve
# (1.2.156.10197.1.301) as its parameters, then the BIT STRING of the uncompressed point.
SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a811ccf5501822d034200")

_native: Any
try:
    from hub.crypto import _sm2

    _native = _sm2
    _WHY_NOT: str | None = _sm2.unavailable()
except ImportError as exc:  # not built: no compiler or no OpenSSL headers at install
    _native = None
    _WHY_NOT = f"the SM2 extension (hub/crypto/_sm2.c) was not built: {exc}"


class Sm2Error(ValueError):
    """Malformed SM2 material, or SM2 not available on this machine."""


def unavailable() -> str | None:
    """Why SM2 cannot be used on this machine, or None when it can."""
    return _WHY_NOT


def _lib() -> Any:
    if _WHY_NOT is not None:
        raise Sm2Error(f"sm2-sm3 is not available on this machine: {_WHY_NOT}")
    return _native


def sm3(data: bytes) -> bytes:
    """SM3 (GB/T 32905) of `data`."""
    return bytes(_lib().sm3(data))


def split_record(record: bytes) -> tuple[bytes, bytes]:
    """(point, distinguishing ID) of a key record; Sm2Error if it is not one."""
    point, suffix = record[:POINT_SIZE], record[POINT_SIZE:]
    if len(point) != POINT_SIZE or point[0] != 0x04:
        raise Sm2Error(
            "an sm2-sm3 public key is the uncompressed point (65 bytes, 0x04 first), "
            "optionally followed by the distinguishing ID"
        )
    if suffix == DEFAULT_ID:
        # One key, one encoding, one key id.
        raise Sm2Error(
            "the default distinguishing ID 1234567812345678 is never written after the point"
        )
    if len(suffix) > MAX_ID:
        raise Sm2Error(f"the distinguishing ID is at most {MAX_ID} bytes, got {len(suffix)}")
    return point, suffix or DEFAULT_ID


def make_record(point: bytes, distinguishing_id: bytes = DEFAULT_ID) -> bytes:
    """The key record of `point` under `distinguishing_id` (checked)."""
    if not distinguishing_id:
        raise Sm2Error("the distinguishing ID must not be empty")
    record = point if distinguishing_id == DEFAULT_ID else point + distinguishing_id
    split_record(record)
    return record


@lru_cache(maxsize=1024)
def _verifying_key(point: bytes) -> Any:
    # Cached: parsing a point into an OpenSSL key (an on-curve check) costs about as much as a
    # third of a verification, and the hub verifies with the same few hundred keys all day.
    try:
        return _lib().public_key(point)
    except ValueError as exc:
        raise Sm2Error(f"malformed sm2-sm3 public key: {exc}") from exc


def check_public_key(record: bytes) -> None:
    """Sm2Error unless `record` is a key record whose point is on the SM2 curve."""
    point, _ = split_record(record)
    _verifying_key(point)


def verify(record: bytes, signature: bytes, data: bytes) -> bool:
    """Whether `signature` (strict DER SEQUENCE {r, s}) is the SM2 signature with SM3 of
    `data` under the key record. Sm2Error for a malformed key; False for a bad signature."""
    point, distinguishing_id = split_record(record)
    return bool(_lib().verify(_verifying_key(point), distinguishing_id, signature, data))


def spki_der(point: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of a point (the distinguishing ID is not in it)."""
    split_record(point)
    return SPKI_PREFIX + point


def point_from_spki(der: bytes) -> bytes | None:
    """The point of an SM2 SubjectPublicKeyInfo, or None if `der` is not one."""
    if not der.startswith(SPKI_PREFIX) or len(der) != len(SPKI_PREFIX) + POINT_SIZE:
        return None
    point = der[len(SPKI_PREFIX) :]
    check_public_key(point)
    return point


def pem(der: bytes, label: str) -> bytes:
    lines = base64.encodebytes(der).replace(b"\n", b"")
    body = b"\n".join(lines[i : i + 64] for i in range(0, len(lines), 64))
    armour = label.encode()
    return b"-----BEGIN %s-----\n%s\n-----END %s-----\n" % (armour, body, armour)


class Sm2PrivateKey:
    """An SM2 private key with the distinguishing ID it signs under."""

    __slots__ = ("_handle", "_scalar", "distinguishing_id", "point")

    def __init__(self, scalar: bytes, distinguishing_id: bytes = DEFAULT_ID) -> None:
        lib = _lib()
        try:
            self.point: bytes = bytes(lib.public_point(scalar))
            self._handle = lib.private_key(scalar)
        except ValueError as exc:
            raise Sm2Error(str(exc)) from exc
        self._scalar = bytes(scalar)
        make_record(self.point, distinguishing_id)
        self.distinguishing_id = distinguishing_id

    @classmethod
    def generate(cls, distinguishing_id: bytes = DEFAULT_ID) -> Sm2PrivateKey:
        return cls(bytes(_lib().generate()), distinguishing_id)

    @classmethod
    def from_der(cls, der: bytes, distinguishing_id: bytes = DEFAULT_ID) -> Sm2PrivateKey:
        """From a DER private key (PKCS#8 or SEC1 ECPrivateKey) on the SM2 curve."""
        try:
            scalar = bytes(_lib().private_from_der(der))
        except ValueError as exc:
            raise Sm2Error(str(exc)) from exc
        return cls(scalar, distinguishing_id)

    @property
    def record(self) -> bytes:
        """The public key as registered: the point, then the ID unless it is the default."""
        return make_record(self.point, self.distinguishing_id)

    @property
    def scalar(self) -> bytes:
        return self._scalar

    def sign(self, data: bytes) -> bytes:
        return bytes(_lib().sign(self._handle, self.distinguishing_id, data))

    def to_pem(self) -> bytes:
        """Unencrypted PKCS#8 PEM, as `openssl genpkey -algorithm SM2` writes it."""
        return bytes(_lib().private_to_pem(self._handle))

    def __repr__(self) -> str:
        return "Sm2PrivateKey(...)"


def is_sm2_private_pem(pem_text: bytes) -> bool:
    """Whether a PEM private key names the SM2 curve (`cryptography` cannot load those)."""
    for label in (b"PRIVATE KEY", b"EC PRIVATE KEY"):
        der = pem_body(pem_text, label)
        if der is not None and bytes.fromhex("06082a811ccf5501822d") in der:
            return True
    return False


def pem_body(text: bytes, label: bytes) -> bytes | None:
    """The DER between the first BEGIN/END `label` armour lines of `text`, or None."""
    begin, end = b"-----BEGIN " + label + b"-----", b"-----END " + label + b"-----"
    start = text.find(begin)
    stop = text.find(end, start + 1)
    if start < 0 or stop < 0:
        return None
    try:
        return base64.b64decode(b"".join(text[start + len(begin) : stop].split()), validate=True)
    except ValueError:
        return None


def private_key_from_pem(pem_text: bytes, distinguishing_id: bytes = DEFAULT_ID) -> Sm2PrivateKey:
    for label in (b"PRIVATE KEY", b"EC PRIVATE KEY"):
        der = pem_body(pem_text, label)
        if der is not None:
            return Sm2PrivateKey.from_der(der, distinguishing_id)
    raise Sm2Error("not an unencrypted PEM private key")
