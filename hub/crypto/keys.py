"""Private signing keys: generate, sign, and store as PKCS#8 PEM files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeAlias

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from hub.crypto import secretfile, sm2
from hub.crypto.signing import ECDSA_P256, ED25519, SM2_SM3, SignatureError, key_id_for

# `cryptography` has no SM2, so an SM2 key is hub.crypto.sm2's own object.
AnyPrivateKey: TypeAlias = PrivateKeyTypes | sm2.Sm2PrivateKey


class _Scheme(Protocol):
    """The private-key half of one algorithm in the signing registry."""

    @property
    def algorithm(self) -> str: ...

    def generate(self) -> AnyPrivateKey: ...

    def accepts(self, key: AnyPrivateKey) -> bool: ...

    def sign(self, key: AnyPrivateKey, data: bytes) -> bytes: ...

    def public_bytes(self, key: AnyPrivateKey) -> bytes: ...


@dataclass(frozen=True, slots=True)
class _Ed25519Scheme:
    algorithm: str = ED25519

    def generate(self) -> AnyPrivateKey:
        return ed25519.Ed25519PrivateKey.generate()

    def accepts(self, key: AnyPrivateKey) -> bool:
        return isinstance(key, ed25519.Ed25519PrivateKey)

    def sign(self, key: AnyPrivateKey, data: bytes) -> bytes:
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        return key.sign(data)

    def public_bytes(self, key: AnyPrivateKey) -> bytes:
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        return key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )


@dataclass(frozen=True, slots=True)
class _EcdsaP256Scheme:
    algorithm: str = ECDSA_P256

    def generate(self) -> AnyPrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def accepts(self, key: AnyPrivateKey) -> bool:
        return isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)

    def sign(self, key: AnyPrivateKey, data: bytes) -> bytes:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        # Randomised (OpenSSL also mixes the key and message into the nonce),
        # DER-encoded: the form Java and Go verify natively.
        return key.sign(data, ec.ECDSA(hashes.SHA256()))

    def public_bytes(self, key: AnyPrivateKey) -> bytes:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )


@dataclass(frozen=True, slots=True)
class _Sm2Scheme:
    algorithm: str = SM2_SM3

    def generate(self) -> AnyPrivateKey:
        try:
            return sm2.Sm2PrivateKey.generate()
        except sm2.Sm2Error as exc:
            raise SignatureError(str(exc)) from exc

    def accepts(self, key: AnyPrivateKey) -> bool:
        return isinstance(key, sm2.Sm2PrivateKey)

    def sign(self, key: AnyPrivateKey, data: bytes) -> bytes:
        assert isinstance(key, sm2.Sm2PrivateKey)
        # Randomised (OpenSSL draws k), DER SEQUENCE {r, s} as GM/T 0009 specifies.
        return key.sign(data)

    def public_bytes(self, key: AnyPrivateKey) -> bytes:
        assert isinstance(key, sm2.Sm2PrivateKey)
        return key.record


_SCHEMES: dict[str, _Scheme] = {
    ED25519: _Ed25519Scheme(),
    ECDSA_P256: _EcdsaP256Scheme(),
    SM2_SM3: _Sm2Scheme(),
}

# What `stophub keys generate --algorithm` also takes: the short names people say.
ALIASES = {"sm2": SM2_SM3, "p256": ECDSA_P256}


def _scheme_for_key(key: AnyPrivateKey) -> _Scheme:
    for scheme in _SCHEMES.values():
        if scheme.accepts(key):
            return scheme
    raise SignatureError(
        f"unsupported private key type {type(key).__name__}; "
        f"expected one of: {', '.join(sorted(_SCHEMES))}"
    )


class PrivateKey:
    """A signing key with the public key and key id the hub registers for it.

    Satisfies `hub.crypto.envelope.Signer`.
    """

    __slots__ = ("_algorithm", "_key", "_key_id", "_public_key", "_scheme")

    def __init__(self, key: AnyPrivateKey) -> None:
        self._scheme = _scheme_for_key(key)
        self._key = key
        self._algorithm = self._scheme.algorithm
        self._public_key = self._scheme.public_bytes(key)
        self._key_id = key_id_for(self._algorithm, self._public_key)

    @property
    def algorithm(self) -> str:
        return self._algorithm

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def public_key(self) -> bytes:
        """Raw 32 bytes for Ed25519, the 65-byte uncompressed point for P-256, the SM2 key
        record (the point, then a distinguishing ID other than the default) for SM2."""
        return self._public_key

    def sign(self, data: bytes) -> bytes:
        return self._scheme.sign(self._key, data)

    def to_pem(self) -> bytes:
        if isinstance(self._key, sm2.Sm2PrivateKey):
            return self._key.to_pem()
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_pem(cls, pem: bytes, *, distinguishing_id: bytes | None = None) -> PrivateKey:
        """The key in a PEM file. `distinguishing_id` is for SM2 keys only: the ID their
        signatures are made under (the default `1234567812345678` when None); a PKCS#8 file
        has no place for it."""
        if sm2.is_sm2_private_pem(pem):
            try:
                chosen = sm2.DEFAULT_ID if distinguishing_id is None else distinguishing_id
                return cls(sm2.private_key_from_pem(pem, chosen))
            except sm2.Sm2Error as exc:
                raise SignatureError(f"cannot load private key: {exc}") from exc
        if distinguishing_id is not None:
            raise SignatureError("a distinguishing ID is for SM2 keys only")
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            # TypeError is how cryptography reports an encrypted PEM without a
            # password; the hub never stores keys that way.
            raise SignatureError(f"cannot load private key: {exc}") from exc
        return cls(key)

    @classmethod
    def generate(cls, algorithm: str = ED25519) -> PrivateKey:
        try:
            scheme = _SCHEMES[ALIASES.get(algorithm, algorithm)]
        except KeyError:
            raise SignatureError(f"unknown signature algorithm {algorithm!r}") from None
        return cls(scheme.generate())

    @classmethod
    def from_ed25519_seed(cls, seed: bytes) -> PrivateKey:
        if len(seed) != 32:
            raise ValueError(f"Ed25519 seed must be 32 bytes, got {len(seed)}")
        return cls(ed25519.Ed25519PrivateKey.from_private_bytes(seed))

    def __repr__(self) -> str:
        # Never the key material: reprs end up in logs and tracebacks.
        return f"PrivateKey(algorithm={self._algorithm!r}, key_id={self._key_id!r})"


def load_private_key(path: str | Path, *, distinguishing_id: bytes | None = None) -> PrivateKey:
    """The key in a PEM file, whatever the file's mode: unlike the data keyring and the list
    key (hub/crypto/secretfile.py refuses those if others may read them), deployments read
    the signing key through a group (deploy/k8s/deployment.yaml: fsGroup, mode 0440)."""
    return PrivateKey.from_pem(Path(path).read_bytes(), distinguishing_id=distinguishing_id)


def save_private_key(key: PrivateKey, path: str | Path) -> None:
    """Write `key` as PEM, readable by the owner only; never replaces a file.

    Overwriting a key file would silently orphan the registered public key, so
    an existing file is a FileExistsError (hub/crypto/secretfile.py: the check
    and the create are one step, and the mode is set at creation so the key is
    never briefly world-readable).
    """
    secretfile.create(path, key.to_pem())
