"""An institution's identity directory: everything a workstation, a console or an agent at a
member needs to speak to the hub as that institution, in one folder.

```
DIR/
  identity.toml          institution = "BANKA"   hub = "hub.example:7443"  (hub optional;
                         several replicas: "a:7443,b:7443" or ["a:7443", "b:7443"])
  signing.key            the institution's envelope signing key (`stophub keys generate`);
                         or none, when identity.toml has a [pkcs11] table naming a key
                         in a PKCS#11 token (module, token, key, pin_file or pin_env;
                         docs/signing-keys.md): the key never leaves the token
  ca.pem                 the network CA's certificate        } `stophub pki issue CODE
  <code>-tls.pem, .key   the institution's TLS client pair   }   --out-dir DIR`
  hub.pub, hub-*.pub     the hub's published public key(s), the current one in hub.pub
  log-checkpoint.json    the newest audit-log checkpoint this member saw (the SDK writes it)
```

`load_identity` reads it and says, in one line, which file is missing and which command makes
it; `write_identity` lays one out (the demo and the tests use it)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.sdk.client import Clock, HubClient, read_hub_key
from adapters.sdk.failover import parse_targets
from adapters.sdk.witness import DEFAULT_FILE
from hub.crypto import pki
from hub.crypto.keys import PrivateKey, load_private_key, save_private_key
from hub.crypto.pkcs11 import Pkcs11Config, Pkcs11Error, Pkcs11Signer
from hub.crypto.public import public_key_to_pem
from hub.crypto.secretfile import create
from hub.crypto.signer import Signer

IDENTITY_FILE = "identity.toml"
SIGNING_KEY = "signing.key"
HUB_KEY = "hub.pub"
LOG_CHECKPOINT = DEFAULT_FILE


class IdentityError(Exception):
    """An identity directory that cannot be used, said in one line with what to do."""


@dataclass(frozen=True)
class Identity:
    institution: str
    key: Signer
    tls: pki.TlsConfig
    # The hub's public keys as files' bytes, the current one (hub.pub) first.
    hub_keys: tuple[bytes, ...]
    hub: str | None
    directory: Path

    def client(
        self, target: str | None = None, *, clock: Clock | None = None, **options: Any
    ) -> HubClient:
        """A client speaking as this institution to `target` (default: the directory's hub)."""
        address = target or self.hub
        if not address:
            raise IdentityError(
                f"{self.directory / IDENTITY_FILE} names no hub: give --hub HOST:PORT "
                'or add hub = "HOST:PORT" to it'
            )
        # The member keeps the newest log checkpoint it saw beside its keys (witness.md).
        options.setdefault("log_checkpoint_file", self.directory / LOG_CHECKPOINT)
        return HubClient(
            address,
            institution=self.institution,
            key=self.key,
            hub_public_key=list(self.hub_keys),
            clock=clock,
            tls=self.tls,
            **options,
        )


def _need(path: Path, what: str, how: str) -> Path:
    if not path.is_file():
        raise IdentityError(f"{path}: no {what} here; {how}")
    return path


def _hub_setting(toml: Path, value: Any) -> str | None:
    """identity.toml's hub: "HOST:PORT", several comma-separated, or a list of them (the
    replicas of one hub, docs/failover.md)."""
    if not value:
        return None
    try:
        return ",".join(parse_targets(value if isinstance(value, list) else str(value)))
    except ValueError as err:
        raise IdentityError(f"{toml}: hub: {err}") from err


def _signing_key(folder: Path, toml: Path, settings: dict[str, Any], code: str) -> Signer:
    """The [pkcs11] table's key when there is one (then a signing.key beside it is refused:
    two keys, one of them unused, is a mistake waiting to happen), else signing.key."""
    section = settings.get("pkcs11")
    if section is not None:
        if not isinstance(section, dict):
            raise IdentityError(f"{toml}: pkcs11 must be a table ([pkcs11])")
        if (folder / SIGNING_KEY).exists():
            raise IdentityError(
                f"{folder}: both {SIGNING_KEY} and a [pkcs11] key in {IDENTITY_FILE}; keep one"
            )
        try:
            return Pkcs11Signer(Pkcs11Config.from_mapping(section, str(toml), folder))
        except Pkcs11Error as err:
            raise IdentityError(f"{toml}: {err}") from err
    key_path = _need(
        folder / SIGNING_KEY,
        f"signing key of {code}",
        f"copy the key `stophub keys generate` made for {code} here as {SIGNING_KEY}, or name "
        f"a key in a PKCS#11 token in {IDENTITY_FILE} ([pkcs11])",
    )
    try:
        return load_private_key(key_path)
    except (OSError, ValueError, TypeError) as err:
        raise IdentityError(f"{key_path}: not a signing key: {err}") from err


def load_identity(
    directory: str | Path, *, institution: str | None = None, hub: str | None = None
) -> Identity:
    """The identity in `directory`; `institution` and `hub`, when given, override (or stand
    in for) identity.toml's."""
    folder = Path(directory)
    if not folder.is_dir():
        raise IdentityError(f"{folder}: no such identity directory (see docs/console.md)")
    settings: dict[str, Any] = {}
    toml = folder / IDENTITY_FILE
    if toml.is_file():
        try:
            settings = tomllib.loads(toml.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            raise IdentityError(f"{toml}: cannot read it: {err}") from err
    code = (institution or str(settings.get("institution", ""))).strip().upper()
    if not code:
        raise IdentityError(
            f'{toml}: name the institution (institution = "CODE") or give --as CODE'
        )
    address = hub or _hub_setting(toml, settings.get("hub"))
    key = _signing_key(folder, toml, settings, code)
    issue = f"run `stophub pki issue {code} --out-dir {folder}` on the CA's host"
    _need(folder / pki.CA_CERT, "network CA certificate", issue)
    _need(folder / pki.client_cert_file(code), f"TLS certificate of {code}", issue)
    _need(folder / pki.client_key_file(code), f"TLS key of {code}", issue)
    try:
        tls = pki.client_tls(folder, code)
    except (OSError, ValueError) as err:
        raise IdentityError(f"{folder}: the TLS files of {code} do not load: {err}") from err
    current = _need(
        folder / HUB_KEY, "hub public key", "copy the hub.pub the hub's operator published here"
    )
    others = sorted(p for p in folder.glob("hub-*.pub") if p != current)
    hub_keys: list[bytes] = []
    for path in (current, *others):
        data = path.read_bytes()
        try:
            read_hub_key(data)
        except ValueError as err:
            raise IdentityError(f"{path}: not a hub public key: {err}") from err
        hub_keys.append(data)
    return Identity(code, key, tls, tuple(hub_keys), address, folder)


def write_identity(
    directory: str | Path,
    institution: str,
    key: PrivateKey,
    tls: pki.TlsConfig,
    hub_key: PrivateKey | bytes,
    hub: str | None = None,
) -> Identity:
    """Lay out an identity directory (never overwriting a key) and load it back."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    code = institution.upper()
    lines = [f'institution = "{code}"']
    if hub:
        lines.append(f'hub = "{hub}"')
    (folder / IDENTITY_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    save_private_key(key, folder / SIGNING_KEY)
    (folder / pki.CA_CERT).write_bytes(tls.ca)
    (folder / pki.client_cert_file(code)).write_bytes(tls.cert)
    create(folder / pki.client_key_file(code), tls.key)
    pem = (
        public_key_to_pem(hub_key.algorithm, hub_key.public_key)
        if isinstance(hub_key, PrivateKey)
        else hub_key
    )
    (folder / HUB_KEY).write_bytes(pem)
    return load_identity(folder)
