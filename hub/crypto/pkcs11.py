"""A signing key in a PKCS#11 token (an HSM, a signing server, SoftHSM): the `Signer` port's
adapter for certified modules (issue 24; docs/signing-keys.md).

The private key never leaves the token: the hub and the SDK hand it the bytes to sign and get
a signature back. A key the token would let out (CKA_EXTRACTABLE true, or CKA_SENSITIVE
false) is refused, since the point of a module is that it cannot. The PIN comes from a file
or an environment variable, never from the URI or the command line (process listings and
shell histories keep those).

Which key is named, RFC 7512 style (the path attributes select, the query says how to reach):

    pkcs11:token=<label>;object=<key label>?module-path=<.so>&pin-source=file:<path>
    pkcs11:token=<label>;object=<key label>?module-path=<.so>&pin-source=env:<VARIABLE>

or, in an identity directory's identity.toml, the same as a table (adapters/sdk/identity.py):

    [pkcs11]
    module = "/usr/lib/softhsm/libsofthsm2.so"
    token = "banka"
    key = "banka-signing"
    pin_file = "hsm.pin"          # or pin_env = "BANKA_HSM_PIN"

The algorithm is the key's: its type and curve in the token pick a row of `_SCHEMES`; the
signatures are those of docs/signing.md for that algorithm, so nobody verifying them can tell
a module signed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pkcs11
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import PKCS11Error

from hub.crypto.signing import ECDSA_P256, ED25519, key_id_for, verify_signature

PKCS11_SCHEME = "pkcs11:"
_PATH_ATTRIBUTES = {"token", "object", "type"}
_QUERY_ATTRIBUTES = {"module-path", "pin-source"}


class Pkcs11Error(Exception):
    """A PKCS#11 key that cannot be used, in one line with what to do."""


@dataclass(frozen=True)
class Pkcs11Config:
    """Where the key is and how to log in: the module, the token's label, the key's label,
    and where the PIN is (a file, or an environment variable)."""

    module: str
    token: str
    key: str
    pin_file: Path | None = None
    pin_env: str | None = None

    def __post_init__(self) -> None:
        for name in ("module", "token", "key"):
            if not getattr(self, name):
                raise Pkcs11Error(f"PKCS#11 key: no {name} given ({self.uri()})")
        if (self.pin_file is None) == (self.pin_env is None):
            raise Pkcs11Error(
                f"PKCS#11 key {self.key!r}: give the PIN's source, one file or one environment "
                "variable (pin-source=file:PATH or pin-source=env:NAME), never the PIN itself"
            )

    @classmethod
    def from_uri(cls, uri: str) -> Pkcs11Config:
        if not uri.startswith(PKCS11_SCHEME):
            raise Pkcs11Error(f"{uri!r} is not a pkcs11: URI")
        path, _, query = uri[len(PKCS11_SCHEME) :].partition("?")
        attrs = _attributes(path, ";", uri)
        options = _attributes(query, "&", uri)
        if "pin-value" in options:
            raise Pkcs11Error(
                "pkcs11: URI: pin-value puts the PIN on the command line and in process "
                "listings; use pin-source=file:PATH or pin-source=env:NAME"
            )
        unknown = (set(attrs) - _PATH_ATTRIBUTES) | (set(options) - _QUERY_ATTRIBUTES)
        if unknown:
            raise Pkcs11Error(
                f"pkcs11: URI: {', '.join(sorted(unknown))} not understood; give token=, "
                "object= (and type=private) with ?module-path=…&pin-source=…"
            )
        if attrs.get("type", "private") != "private":
            raise Pkcs11Error("pkcs11: URI: type= must be private (the signing key)")
        pin_file, pin_env = _pin_source(options.get("pin-source", ""), uri)
        return cls(
            options.get("module-path", ""),
            attrs.get("token", ""),
            attrs.get("object", ""),
            pin_file,
            pin_env,
        )

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any], where: str, base: Path) -> Pkcs11Config:
        """A [pkcs11] table; a relative pin_file is relative to `base`."""
        if "pin" in section:
            raise Pkcs11Error(
                f"{where}: [pkcs11] pin: never write the PIN itself; use pin_file or pin_env"
            )
        unknown = set(section) - {"module", "token", "key", "pin_file", "pin_env"}
        if unknown:
            raise Pkcs11Error(
                f"{where}: [pkcs11] {', '.join(sorted(unknown))} not understood; give module, "
                "token, key and pin_file or pin_env"
            )
        pin_file = section.get("pin_file")
        try:
            return cls(
                str(section.get("module", "")),
                str(section.get("token", "")),
                str(section.get("key", "")),
                None if pin_file is None else base / str(pin_file),
                None if section.get("pin_env") is None else str(section["pin_env"]),
            )
        except Pkcs11Error as err:
            raise Pkcs11Error(f"{where}: {err}") from err

    def uri(self) -> str:
        """The key's URI, without anything secret (the PIN's source only)."""
        source = f"file:{self.pin_file}" if self.pin_file is not None else f"env:{self.pin_env}"
        return (
            f"pkcs11:token={quote(self.token, safe='')};object={quote(self.key, safe='')}"
            f"?module-path={quote(self.module, safe='/')}&pin-source={quote(source, safe='/:')}"
        )

    def read_pin(self, environ: Mapping[str, str] | None = None) -> str:
        if self.pin_file is not None:
            try:
                pin = self.pin_file.read_text(encoding="utf-8").rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as err:
                raise Pkcs11Error(
                    f"PKCS#11 token {self.token!r}: cannot read the PIN file {self.pin_file}: "
                    f"{getattr(err, 'strerror', None) or err}"
                ) from None
            where = f"the PIN file {self.pin_file}"
        else:
            env = os.environ if environ is None else environ
            assert self.pin_env is not None
            pin = env.get(self.pin_env, "")
            where = f"${self.pin_env}"
        if not pin:
            raise Pkcs11Error(f"PKCS#11 token {self.token!r}: {where} holds no PIN")
        return pin


def _attributes(text: str, separator: str, uri: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in filter(None, text.split(separator)):
        name, sep, value = item.partition("=")
        if not sep:
            raise Pkcs11Error(f"pkcs11: URI: {item!r} is not NAME=VALUE")
        if name in found:
            raise Pkcs11Error(f"pkcs11: URI: {name} given twice")
        found[name] = unquote(value)
    return found


def _pin_source(source: str, uri: str) -> tuple[Path | None, str | None]:
    if source.startswith("env:"):
        return None, source[4:]
    if source.startswith("file:"):
        # file:/abs/path or file:///abs/path (RFC 8089); a bare path is a file too (RFC 7512).
        rest = source[5:]
        return Path(rest[2:] if rest.startswith("///") else rest), None
    if source:
        return Path(source), None
    return None, None


# ---- the key's algorithm ------------------------------------------------------------------------

_P256 = bytes.fromhex("06082a8648ce3d030107")  # OID 1.2.840.10045.3.1.7
_ED25519_OID = bytes.fromhex("06032b6570")  # OID 1.3.101.112
_ED25519_NAME = b"\x13\x0cedwards25519"  # PrintableString, PKCS#11 3.0 allows either


@dataclass(frozen=True)
class _Scheme:
    """How one algorithm of docs/signing.md is done by a token: which keys are of it, the
    public key as the registry holds it, and the signature in the documented encoding."""

    algorithm: str
    key_type: KeyType
    params: tuple[bytes, ...]
    point_bytes: int
    sign: Callable[[Any, bytes], bytes]

    def public_key(self, point: bytes) -> bytes:
        # CKA_EC_POINT is a DER OCTET STRING around the point; some tokens give it bare.
        if len(point) != self.point_bytes:
            point = _octet_string(point)
        if len(point) != self.point_bytes:
            raise Pkcs11Error(f"the token's public key has {len(point)} bytes for {self.algorithm}")
        return point


def _octet_string(der: bytes) -> bytes:
    """The content of a DER OCTET STRING (short or one-byte long length: points are small)."""
    if len(der) >= 2 and der[0] == 0x04:
        if der[1] < 0x80 and len(der) == 2 + der[1]:
            return der[2:]
        if der[1] == 0x81 and len(der) >= 3 and len(der) == 3 + der[2]:
            return der[3:]
    raise Pkcs11Error("the token's public key (CKA_EC_POINT) is not a DER OCTET STRING")


def _sign_p256(key: Any, data: bytes) -> bytes:
    # CKM_ECDSA over our own SHA-256 (SoftHSM and most modules lack CKM_ECDSA_SHA256), then
    # DER: the encoding docs/signing.md states for ecdsa-p256-sha256.
    raw = bytes(key.sign(hashlib.sha256(data).digest(), mechanism=Mechanism.ECDSA))
    if len(raw) != 64:
        raise Pkcs11Error(f"the token gave an ECDSA signature of {len(raw)} bytes, not 64")
    return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))


def _sign_ed25519(key: Any, data: bytes) -> bytes:
    return bytes(key.sign(data, mechanism=Mechanism.EDDSA))


_SCHEMES = (
    _Scheme(ECDSA_P256, KeyType.EC, (_P256,), 65, _sign_p256),
    _Scheme(ED25519, KeyType.EC_EDWARDS, (_ED25519_OID, _ED25519_NAME), 32, _sign_ed25519),
)
_GENERATE = {
    ECDSA_P256: (KeyType.EC, _P256, Mechanism.EC_KEY_PAIR_GEN),
    ED25519: (KeyType.EC_EDWARDS, _ED25519_OID, Mechanism.EC_EDWARDS_KEY_PAIR_GEN),
}


def _scheme_of(key_type: Any, params: bytes, config: Pkcs11Config) -> _Scheme:
    for scheme in _SCHEMES:
        if scheme.key_type == key_type and params in scheme.params:
            return scheme
    raise Pkcs11Error(
        f"PKCS#11 key {config.key!r} in token {config.token!r} is of a kind StopHub does not "
        f"sign with (key type {key_type!r}, parameters {params.hex()}); use one of: "
        f"{', '.join(s.algorithm for s in _SCHEMES)}"
    )


# ---- the signer ---------------------------------------------------------------------------------


@dataclass
class _Login:
    """The one logged-in session of a token in this process. PKCS#11 logs an application in
    per token, not per session (a second C_Login fails, and closing a logged-in session logs
    every session out), so signers of one token share it and it stays open."""

    logged_in: Any  # the PKCS#11 session that logged in
    token: Any
    pin_digest: bytes
    lock: threading.Lock


_logins: dict[tuple[str, str], _Login] = {}
_logins_lock = threading.Lock()


def _login(config: Pkcs11Config, environ: Mapping[str, str] | None) -> _Login:
    pin = config.read_pin(environ)
    digest = hashlib.sha256(pin.encode("utf-8")).digest()
    source = f"the PIN file {config.pin_file}" if config.pin_file else f"${config.pin_env}"
    wrong = Pkcs11Error(
        f"wrong PIN for PKCS#11 token {config.token!r} (from {source}); the token locks "
        "after a few wrong tries"
    )
    with _logins_lock:
        known = _logins.get((config.module, config.token))
        if known is not None:
            if not hmac.compare_digest(known.pin_digest, digest):
                raise wrong
            return known
        try:
            lib = pkcs11.lib(config.module)
        except (PKCS11Error, OSError, RuntimeError) as err:
            raise Pkcs11Error(
                f"cannot load the PKCS#11 module {config.module}: {' '.join(str(err).split())}"
            ) from None
        try:
            token = lib.get_token(token_label=config.token)
        except pkcs11.exceptions.NoSuchToken:
            raise Pkcs11Error(
                f"PKCS#11 module {config.module} has no token labelled {config.token!r}"
            ) from None
        except pkcs11.exceptions.MultipleTokensReturned:
            raise Pkcs11Error(
                f"several tokens are labelled {config.token!r}: label them apart"
            ) from None
        try:
            session = token.open(user_pin=pin)
        except pkcs11.exceptions.PinIncorrect:
            raise wrong from None
        except pkcs11.exceptions.PinLocked:
            raise Pkcs11Error(
                f"PKCS#11 token {config.token!r} is locked after wrong PINs: its security "
                "officer must unlock it"
            ) from None
        except PKCS11Error as err:
            raise Pkcs11Error(
                f"cannot log in to PKCS#11 token {config.token!r}: {type(err).__name__} {err}"
            ) from None
        login = _Login(session, token, digest, threading.Lock())
        _logins[(config.module, config.token)] = login
        return login


class Pkcs11Signer:
    """A `hub.crypto.signer.Signer` whose private key stays in a PKCS#11 token.

    Logged in at construction, so a wrong PIN or a missing key stops a start instead of the
    first signature. PKCS#11 sessions are not for concurrent use: signatures through one
    session are made one at a time (the hub signs from worker threads).
    """

    def __init__(self, config: Pkcs11Config, *, environ: Mapping[str, str] | None = None) -> None:
        self.config = config
        login = _login(config, environ)
        self._session, self._lock = login.logged_in, login.lock
        private = self._one(ObjectClass.PRIVATE_KEY)
        public = self._one(ObjectClass.PUBLIC_KEY)
        if private[Attribute.EXTRACTABLE] or not private[Attribute.SENSITIVE]:
            raise Pkcs11Error(
                f"PKCS#11 key {config.key!r} in token {config.token!r} can be exported "
                "(CKA_EXTRACTABLE true or CKA_SENSITIVE false): make a key that cannot "
                "leave the token (`stophub keys generate --pkcs11 URI`)"
            )
        self._scheme = _scheme_of(private.key_type, bytes(public[Attribute.EC_PARAMS]), config)
        self._public_key = self._scheme.public_key(bytes(public[Attribute.EC_POINT]))
        self._private = private
        self._key_id = key_id_for(self._scheme.algorithm, self._public_key)
        # The two objects share a label, not necessarily a key pair: prove they do.
        probe = b"stophub/pkcs11/probe\x00" + os.urandom(16)
        if not verify_signature(self._scheme.algorithm, self._public_key, self.sign(probe), probe):
            raise Pkcs11Error(
                f"PKCS#11 token {config.token!r}: the private and public keys labelled "
                f"{config.key!r} are not one key pair"
            )

    def _one(self, kind: ObjectClass) -> Any:
        what = "private" if kind == ObjectClass.PRIVATE_KEY else "public"
        try:
            with self._lock:
                return self._session.get_key(object_class=kind, label=self.config.key)
        except pkcs11.exceptions.NoSuchKey:
            raise Pkcs11Error(
                f"PKCS#11 token {self.config.token!r} has no {what} key labelled "
                f"{self.config.key!r}"
            ) from None
        except pkcs11.exceptions.MultipleObjectsReturned:
            raise Pkcs11Error(
                f"PKCS#11 token {self.config.token!r} has several {what} keys labelled "
                f"{self.config.key!r}: label them apart"
            ) from None

    @property
    def algorithm(self) -> str:
        return self._scheme.algorithm

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def public_key(self) -> bytes:
        return self._public_key

    def sign(self, data: bytes) -> bytes:
        with self._lock:
            try:
                return self._scheme.sign(self._private, data)
            except PKCS11Error as err:
                raise Pkcs11Error(
                    f"PKCS#11 token {self.config.token!r} did not sign: {type(err).__name__} {err}"
                ) from None

    def __repr__(self) -> str:
        return f"Pkcs11Signer({self.config.uri()!r})"


def open_session(config: Pkcs11Config, *, environ: Mapping[str, str] | None = None) -> Any:
    """A read-write session on the token that shares this process's login (for making keys,
    and for tests that look inside). Close it when done: it never logged in itself, so
    closing it logs nothing out, where closing the logged-in session would log out every
    signer of the token."""
    return _login(config, environ).token.open(rw=True)


def generate_key(
    config: Pkcs11Config, algorithm: str, *, environ: Mapping[str, str] | None = None
) -> Pkcs11Signer:
    """A new key pair in the token, labelled `config.key`, that cannot leave it (sensitive,
    not extractable); refused if a key of that label is there already."""
    if algorithm not in _GENERATE:
        raise Pkcs11Error(
            f"cannot make a {algorithm} key in a PKCS#11 token here; use one of: "
            f"{', '.join(sorted(_GENERATE))}"
        )
    key_type, params, mechanism = _GENERATE[algorithm]
    session = open_session(config, environ=environ)
    try:
        if list(session.get_objects({Attribute.LABEL: config.key})):
            raise Pkcs11Error(
                f"PKCS#11 token {config.token!r} has a key labelled {config.key!r} already: "
                "keys are never overwritten; choose another label"
            )
        domain = session.create_domain_parameters(
            key_type, {Attribute.EC_PARAMS: params}, local=True
        )
        try:
            domain.generate_keypair(
                store=True,
                label=config.key,
                mechanism=mechanism,
                public_template={Attribute.VERIFY: True},
                private_template={
                    Attribute.SIGN: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                },
            )
        except PKCS11Error as err:
            raise Pkcs11Error(
                f"PKCS#11 token {config.token!r} could not make a {algorithm} key: "
                f"{type(err).__name__} {err}"
            ) from None
    finally:
        session.close()
    return Pkcs11Signer(config, environ=environ)
