"""The network's PKI for mutual TLS: a CA, the hub's server certificate, members' client ones.

A client certificate names its institution twice: in the subject CN, for people reading it,
and as the SAN URI `urn:stophub:institution:<CODE>`, which is the only thing the hub trusts
(ADR 8). A certificate without exactly one such URI carries no institution and is refused.

Files in a PKI directory (keys are PKCS#8 PEM, mode 0600, never overwritten):

    ca.pem, ca.key                the network CA (keep ca.key offline after issuing)
    hub-tls.pem, hub-tls.key      the hub's server certificate and key (`stophub serve`)
    <code>-tls.pem, <code>-tls.key  an institution's client certificate and key

The `-tls` names keep these apart from the envelope signing keys (`hub.key`, ...), which are
a different key with a different job.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hub.crypto.keys import PrivateKey, save_private_key

INSTITUTION_URI_PREFIX: Final = "urn:stophub:institution:"
# A TLCP gateway's client certificate towards the hub (docs/tlcp-gateway.md, ADR 24): it names
# a gateway, never an institution, and the hub trusts it only when its fingerprint is pinned.
GATEWAY_URI_PREFIX: Final = "urn:stophub:gateway:"
CA_CERT: Final = "ca.pem"
CA_KEY: Final = "ca.key"
HUB_CERT: Final = "hub-tls.pem"
HUB_KEY: Final = "hub-tls.key"
DEFAULT_HUB_NAMES: Final = ("localhost", "127.0.0.1")
CA_VALIDITY: Final = timedelta(days=3650)
LEAF_VALIDITY: Final = timedelta(days=365)
# A certificate is valid from a little before it was made, so a peer whose clock runs
# slightly behind the issuer's does not refuse it as not yet valid.
_BACKDATE: Final = timedelta(minutes=5)


class PkiError(Exception):
    """A PKI directory is missing a file or holds something unusable."""


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """PEM bytes for one side of a mutual-TLS connection.

    `ca` verifies the other side; `cert` and `key` are this side's. `server_name` overrides
    the name a client checks the hub's certificate against (default: the target's host).
    """

    ca: bytes
    cert: bytes
    key: bytes
    server_name: str | None = None


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and its private key, as written to a PKI directory."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def institution_uri(code: str) -> str:
    return INSTITUTION_URI_PREFIX + code


def client_cert_file(code: str) -> str:
    return f"{code.lower()}-tls.pem"


def client_key_file(code: str) -> str:
    return f"{code.lower()}-tls.key"


def fingerprint(cert: x509.Certificate | bytes) -> str:
    """SHA-256 of the DER certificate (or of a PEM one), as colon-separated hex (what
    `openssl x509 -fingerprint -sha256` prints), for comparing a CA over the phone."""
    if isinstance(cert, bytes):
        try:
            cert = x509.load_pem_x509_certificate(cert)
        except ValueError as err:
            raise PkiError(f"not a PEM certificate: {err}") from err
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "StopHub network"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    now: datetime,
    validity: timedelta,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _key_usage(*, signing: bool, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signing,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def create_ca(
    now: datetime, *, name: str = "StopHub network CA", validity: timedelta = CA_VALIDITY
) -> Issued:
    """A self-signed CA that may sign leaf certificates only (pathlen 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(name)
    cert = (
        _builder(subject, subject, key, now, validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signing=False, cert_sign=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def _leaf(
    ca: Issued,
    common_name: str,
    sans: Sequence[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    now: datetime,
    validity: timedelta,
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(_name(common_name), ca.cert.subject, key, now, validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signing=True, cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert, key)


def _host_names(names: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def issue_server(
    ca: Issued,
    now: datetime,
    names: Sequence[str] = DEFAULT_HUB_NAMES,
    *,
    validity: timedelta = LEAF_VALIDITY,
) -> Issued:
    """The hub's server certificate: DNS names and IP addresses in `names` as SANs."""
    if not names:
        raise PkiError("the hub's certificate needs at least one DNS name or IP address")
    return _leaf(
        ca, "StopHub hub", _host_names(names), ExtendedKeyUsageOID.SERVER_AUTH, now, validity
    )


def host_names(cert: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses a server certificate is valid for (its SANs), as written
    in it; empty when it has none."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*sans.get_values_for_type(x509.DNSName)] + [
        str(ip) for ip in sans.get_values_for_type(x509.IPAddress)
    ]


def names_host(cert: x509.Certificate, host: str) -> bool:
    """Whether a client that reached the hub as `host` accepts `cert` for it, as TLS checks a
    server's name (RFC 6125): an IP address against the IP SANs, a DNS name against the DNS
    SANs without regard to case, `*.` standing for exactly one leftmost label."""
    wanted = host.strip("[]").lower().rstrip(".")
    address = _ip(wanted)
    for name in host_names(cert):
        if address is not None:
            if _ip(name) == address:
                return True
        elif _dns_matches(name.lower().rstrip("."), wanted):
            return True
    return False


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def _dns_matches(pattern: str, host: str) -> bool:
    label, _, rest = host.partition(".")
    return pattern == host or (pattern.startswith("*.") and bool(label) and rest == pattern[2:])


def issue_client(
    ca: Issued, code: str, now: datetime, *, validity: timedelta = LEAF_VALIDITY
) -> Issued:
    """An institution's client certificate: `code` in the CN and as the SAN URI."""
    if not code or not code.isascii() or not code.replace("_", "").replace("-", "").isalnum():
        raise PkiError(f"{code!r} is not an institution code (letters, digits, - and _)")
    return _leaf(
        ca,
        code,
        [x509.UniformResourceIdentifier(institution_uri(code))],
        ExtendedKeyUsageOID.CLIENT_AUTH,
        now,
        validity,
    )


def issue_gateway(
    ca: Issued, name: str, now: datetime, *, validity: timedelta = LEAF_VALIDITY
) -> Issued:
    """A TLCP gateway's client certificate for its hop to the hub: `name` in the CN and the
    SAN URI `urn:stophub:gateway:<name>`, and no institution (ADR 24)."""
    if not name or not name.isascii() or not name.replace("_", "").replace("-", "").isalnum():
        raise PkiError(f"{name!r} is not a gateway name (letters, digits, - and _)")
    return _leaf(
        ca,
        f"gateway {name}",
        [x509.UniformResourceIdentifier(GATEWAY_URI_PREFIX + name)],
        ExtendedKeyUsageOID.CLIENT_AUTH,
        now,
        validity,
    )


def gateway_of(cert: x509.Certificate) -> str | None:
    """The gateway a certificate names in its SAN URI, or None (none, or more than one)."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    names = [
        u[len(GATEWAY_URI_PREFIX) :]
        for u in sans.get_values_for_type(x509.UniformResourceIdentifier)
        if u.startswith(GATEWAY_URI_PREFIX)
    ]
    return names[0] if len(names) == 1 and names[0] else None


def gateway_pins(pems: Iterable[bytes]) -> frozenset[str]:
    """The fingerprints of the gateway certificates a hub trusts, each checked to be a
    gateway's (one gateway SAN URI, no institution's): a member's certificate pinned by
    mistake would let that member speak for every institution."""
    pins = set()
    for pem in pems:
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError as err:
            raise PkiError(f"a gateway certificate is not a PEM certificate: {err}") from None
        if institution_of(cert) is not None or gateway_of(cert) is None:
            raise PkiError(
                f"{cert.subject.rfc4514_string()} is not a gateway's certificate: it must name "
                f"one gateway ({GATEWAY_URI_PREFIX}NAME) and no institution "
                "(`stophub pki issue-gateway NAME`)"
            )
        pins.add(fingerprint(cert))
    return frozenset(pins)


def institution_of(cert: x509.Certificate) -> str | None:
    """The institution a client certificate names in its SAN URI, or None: no SAN, no such
    URI, or more than one (a certificate speaks for one institution)."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    return institution_from_uris(sans.get_values_for_type(x509.UniformResourceIdentifier))


def institution_from_uris(uris: Iterable[str]) -> str | None:
    codes = [u[len(INSTITUTION_URI_PREFIX) :] for u in uris if u.startswith(INSTITUTION_URI_PREFIX)]
    if len(codes) != 1 or not codes[0]:
        return None
    return codes[0]


# ---- files ------------------------------------------------------------------------------------


def _write_cert(path: Path, pem: bytes) -> None:
    # "x": never replace a certificate (a replaced CA would silently cut members off).
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("xb") as out:
        out.write(pem)


def save(issued: Issued, cert_path: Path, key_path: Path) -> None:
    """Write a certificate and its key (0600, as every private key: keys.save_private_key);
    neither file may exist yet."""
    for path in (cert_path, key_path):
        if path.exists():
            raise FileExistsError(f"{path} exists; refusing to overwrite it")
    save_private_key(PrivateKey(issued.key), key_path)
    _write_cert(cert_path, issued.cert_pem)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PkiError(f"missing {path}") from None


def load_issued(cert_path: Path, key_path: Path) -> Issued:
    cert = x509.load_pem_x509_certificate(_read(cert_path))
    key = serialization.load_pem_private_key(_read(key_path), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{key_path} is not an EC private key")
    return Issued(cert, key)


def load_ca(directory: Path) -> Issued:
    return load_issued(directory / CA_CERT, directory / CA_KEY)


def init(
    directory: Path, now: datetime, names: Sequence[str] = DEFAULT_HUB_NAMES
) -> tuple[Issued, Issued]:
    """Create the CA and the hub's server certificate in `directory`; returns (ca, hub)."""
    for file in (CA_CERT, CA_KEY, HUB_CERT, HUB_KEY):
        if (directory / file).exists():
            raise FileExistsError(f"{directory / file} exists; refusing to overwrite it")
    ca = create_ca(now)
    hub = issue_server(ca, now, names)
    save(ca, directory / CA_CERT, directory / CA_KEY)
    save(hub, directory / HUB_CERT, directory / HUB_KEY)
    return ca, hub


def issue(
    directory: Path,
    code: str,
    now: datetime,
    *,
    out_dir: Path | None = None,
    validity: timedelta = LEAF_VALIDITY,
) -> tuple[Path, Path]:
    """Issue `code`'s client certificate with the CA in `directory`, written to `out_dir`
    (default `directory`) with a copy of ca.pem: all an institution needs to connect.
    Returns the certificate and key paths."""
    ca = load_ca(directory)
    target = out_dir or directory
    cert_path, key_path = target / client_cert_file(code), target / client_key_file(code)
    save(issue_client(ca, code, now, validity=validity), cert_path, key_path)
    ca_copy = target / CA_CERT
    if not ca_copy.exists():
        _write_cert(ca_copy, ca.cert_pem)
    elif ca_copy.read_bytes() != ca.cert_pem:
        raise PkiError(f"{ca_copy} is another CA's certificate; the new one would not verify")
    return cert_path, key_path


def gateway_cert_file(name: str) -> str:
    return f"gateway-{name.lower()}-tls.pem"


def gateway_key_file(name: str) -> str:
    return f"gateway-{name.lower()}-tls.key"


def issue_gateway_files(
    directory: Path,
    name: str,
    now: datetime,
    *,
    out_dir: Path | None = None,
    validity: timedelta = LEAF_VALIDITY,
) -> tuple[Path, Path]:
    """Issue gateway `name`'s client certificate for its hop to the hub with the CA in
    `directory`, written to `out_dir` (default `directory`) with a copy of ca.pem."""
    ca = load_ca(directory)
    target = out_dir or directory
    cert_path, key_path = target / gateway_cert_file(name), target / gateway_key_file(name)
    save(issue_gateway(ca, name, now, validity=validity), cert_path, key_path)
    ca_copy = target / CA_CERT
    if not ca_copy.exists():
        _write_cert(ca_copy, ca.cert_pem)
    return cert_path, key_path


def server_tls(directory: Path) -> TlsConfig:
    """The hub's side: CA to verify clients with, the server certificate and key."""
    return TlsConfig(
        _read(directory / CA_CERT), _read(directory / HUB_CERT), _read(directory / HUB_KEY)
    )


def client_tls(directory: Path, code: str, *, server_name: str | None = None) -> TlsConfig:
    """An institution's side: CA to verify the hub with, its client certificate and key."""
    return TlsConfig(
        _read(directory / CA_CERT),
        _read(directory / client_cert_file(code)),
        _read(directory / client_key_file(code)),
        server_name,
    )


def has_server_material(directory: Path) -> bool:
    return all((directory / f).is_file() for f in (CA_CERT, HUB_CERT, HUB_KEY))
