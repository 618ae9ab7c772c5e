"""The signer port: whatever signs as one registered key, wherever the private key lives.

A `Signer` is an algorithm, a key id, a public key and `sign(data)`. Two implementations:

- software: `hub.crypto.keys.PrivateKey`, a key file on disk (what every hub and member had
  before issue 24);
- a certified module: `hub.crypto.pkcs11.Pkcs11Signer`, a key that never leaves a hardware
  security module or a signing server speaking PKCS#11 (SoftHSM in the tests).

Callers never ask which: the hub's own key (checkpoints, deliveries, notices) and a member's
envelope key in the SDK are both a `Signer`, named by one string (`load_signer`): a file's
path, or a `pkcs11:` URI (RFC 7512, docs/signing-keys.md). The port knows no algorithm:
whatever the implementation signs with is registered and verified as any other key of that
algorithm (docs/signing.md), so a scheme added to hub/crypto/signing.py needs nothing here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

from hub.crypto.keys import load_private_key
from hub.crypto.pkcs11 import PKCS11_SCHEME, Pkcs11Config, Pkcs11Error, Pkcs11Signer
from hub.crypto.signing import SignatureError


@runtime_checkable
class Signer(Protocol):
    """One signing key: what the registry records for it, and the one thing it does."""

    @property
    def algorithm(self) -> str: ...

    @property
    def key_id(self) -> str: ...

    @property
    def public_key(self) -> bytes:
        """The raw public key as the registry holds it (docs/signing.md, per algorithm)."""
        ...

    def sign(self, data: bytes) -> bytes: ...


class SignerError(Exception):
    """A signing key that cannot be used, said in one line with what to do."""


def is_pkcs11(spec: str | Path) -> bool:
    return str(spec).startswith(PKCS11_SCHEME)


def load_signer(spec: str | Path, *, environ: Mapping[str, str] | None = None) -> Signer:
    """The signer `spec` names: a `pkcs11:` URI, or the path of a PEM key file."""
    if is_pkcs11(spec):
        try:
            return Pkcs11Signer(Pkcs11Config.from_uri(str(spec)), environ=environ)
        except Pkcs11Error as err:
            raise SignerError(str(err)) from err
    path = Path(spec)
    try:
        return load_private_key(path)
    except FileNotFoundError:
        raise SignerError(
            f"no signing key at {path}: create one with `stophub keys generate --out {path}`, "
            "or name a key in a PKCS#11 token with a pkcs11: URI"
        ) from None
    except (OSError, SignatureError) as err:
        raise SignerError(f"{path}: not a signing key: {err}") from err
