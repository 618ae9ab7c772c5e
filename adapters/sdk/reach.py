"""Why a TLS connection to the hub fails, in words a bank engineer can act on.

gRPC reports a hub whose certificate does not name the host the client dialled as
"Hostname Verification Check failed", and one another CA issued as a failed handshake; neither
says which names the certificate holds. This module fetches the certificate the hub presents
(a handshake that verifies nothing, so that it gets the certificate whatever is wrong with it)
and compares it with what the client expects: the name it checks the hub against, and the
network CA in its `ca.pem`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from hub.crypto import pki
from hub.crypto.pki import TlsConfig

_PROBE_TIMEOUT: Final = 5.0
# Words in gRPC's status details when the TLS handshake, not the network, failed.
_TLS_WORDS: Final = ("ssl", "tls", "handshake", "certificate", "verification")


@dataclass(frozen=True)
class Reach:
    """What a look at the hub's TLS endpoint found: whether anything answered the handshake,
    and, if the hub's certificate does not fit this client, why (one sentence)."""

    answered: bool
    problem: str | None = None
    detail: str = ""


def host_and_port(target: str) -> tuple[str, int] | None:
    """The host and port of a gRPC target ("hub.example.cn:7443", "[::1]:7443",
    "dns:///host:port", "ipv4:127.0.0.1:7443"); None for a form this module cannot dial
    (unix sockets, several addresses)."""
    rest = target
    for scheme in ("dns:///", "dns:", "ipv4:", "ipv6:"):
        if rest.startswith(scheme):
            rest = rest[len(scheme) :]
            break
    if "," in rest or rest.startswith("unix:") or not rest:
        return None
    if rest.startswith("["):
        host, _, port = rest[1:].partition("]")
        port = port.removeprefix(":")
    elif rest.count(":") == 1:
        host, _, port = rest.partition(":")
    elif ":" in rest:
        return None  # an IPv6 address without brackets or a port
    else:
        host, port = rest, ""
    if not host:
        return None
    try:
        return host, int(port) if port else 443
    except ValueError:
        return None


def tls_trouble(details: str) -> bool:
    """Whether gRPC's status details speak of the TLS handshake rather than the network."""
    text = details.lower()
    return any(word in text for word in _TLS_WORDS)


async def presented_certificate(
    host: str, port: int, server_name: str, timeout: float = _PROBE_TIMEOUT
) -> x509.Certificate:
    """The certificate the server at host:port presents. OSError (or TimeoutError) when
    nothing answers a TLS handshake there."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Verify nothing: the point is to read the certificate that failed verification.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    _, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=context, server_hostname=server_name), timeout
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    if not der:
        raise OSError(f"{host}:{port} presented no certificate")
    return x509.load_der_x509_certificate(der)


def mismatch(cert: x509.Certificate, target: str, name: str, ca_pem: bytes) -> str | None:
    """Why a client dialling `target` and checking the hub against `name` with the network CA
    `ca_pem` refuses `cert`, or None when both fit."""
    if not pki.names_host(cert, name):
        held = ", ".join(pki.host_names(cert)) or "no host name at all"
        return (
            f"the hub at {target} presents a TLS certificate for {held}, not for {name!r}, the "
            "name this client checked it against: connect to one of the names it holds, or "
            "pass server_name= (hub.crypto.pki.client_tls or TlsConfig) to check it against "
            f"one of them, or ask the hub's operator for a certificate that names {name} "
            "(`stophub pki init --name` takes every name clients use)"
        )
    try:
        ca = x509.load_pem_x509_certificate(ca_pem)
    except ValueError:
        return None  # an unreadable ca.pem is gRPC's to report
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        issuer = cert.issuer.rfc4514_string() or "an unnamed issuer"
        return (
            f"the hub at {target} presents a TLS certificate issued by {issuer}, which the CA "
            f"in this client's ca.pem (SHA-256 {pki.fingerprint(ca)}) did not sign: get the "
            "network's ca.pem from the hub's operator (`stophub pki issue` writes a copy "
            "beside each certificate it issues)"
        )
    return None


async def look(target: str, tls: TlsConfig, timeout: float = _PROBE_TIMEOUT) -> Reach:
    """Dial the hub's TLS endpoint as a client with `tls` would, and say what does not fit."""
    address = host_and_port(target)
    if address is None:
        return Reach(answered=False, detail=f"cannot dial {target!r} to look at its certificate")
    host, port = address
    name = tls.server_name or host
    try:
        cert = await presented_certificate(host, port, name, timeout)
    except (OSError, TimeoutError, ssl.SSLError, ValueError) as err:
        return Reach(answered=False, detail=f"nothing answered a TLS handshake: {err}")
    return Reach(answered=True, problem=mismatch(cert, target, name, tls.ca))


async def look_first(
    targets: Sequence[str], tls: TlsConfig, timeout: float = _PROBE_TIMEOUT
) -> Reach:
    """`look` at each of a client's hub replicas: the first whose certificate does not fit,
    else the first that answered, else what was found at the last."""
    found = Reach(answered=False, detail="no hub address")
    answered: Reach | None = None
    for target in targets:
        found = await look(target, tls, timeout)
        if found.problem is not None:
            return found
        if found.answered and answered is None:
            answered = found
    return answered or found
