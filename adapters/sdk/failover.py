"""Several hub replicas behind one client: which addresses, one gRPC channel over all of them,
and how long to wait before trying again (docs/failover.md).

The SDK leaves the choice of replica to gRPC's own machinery rather than juggling
connections: one channel whose resolver knows every replica, with the `pick_first` policy,
moves to the next address as soon as the one it uses fails (0.15 s after a SIGKILL, measured
for issue 22), and sends nothing twice by itself. A single target ("hub.example.cn:7443",
"dns:///hub.example.cn:7443") is gRPC's as it always was: a DNS name resolving to several
addresses is already a list to pick from, and gRPC re-resolves it when connections fail.
Several targets become one static `ipv4:`/`ipv6:` list; the `ipv4:` scheme takes literal
addresses only, so names in a list are resolved once, here, when the client is built.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

log = logging.getLogger(__name__)

# Targets gRPC parses itself: passed through whole, commas and all.
_SCHEMES: Final = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _address(text: str) -> Address:
    how = (
        f"hub address {text!r} is not HOST:PORT (e.g. hub.example.cn:7443 or [::1]:7443); "
        "give several as a list or comma-separated"
    )
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if not rest.startswith(":"):
            raise ValueError(how)
        port_text = rest[1:]
    else:
        host, _, port_text = text.rpartition(":")
        if ":" in host:
            raise ValueError(how + " (an IPv6 address goes in brackets)")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(how)
    return Address(host, int(port_text))


def parse_targets(target: str | Sequence[str]) -> list[str]:
    """The hub targets a client was given: one string (a gRPC target such as
    "dns:///hub:7443" or "ipv4:10.0.0.1:7443,10.0.0.2:7443" is kept whole; anything else may
    be several HOST:PORT separated by commas) or a list of HOST:PORT. ValueError, saying which
    entry and what form is expected, for anything else; duplicates are dropped."""
    if isinstance(target, str):
        text = target.strip()
        if text.startswith(_SCHEMES):
            return [text]
        entries = text.split(",")
    else:
        entries = list(target)
        if any(not isinstance(e, str) for e in entries):
            raise ValueError("hub addresses are strings, HOST:PORT")
    found: list[str] = []
    for entry in entries:
        stripped = entry.strip()
        if not stripped:
            raise ValueError(
                f"empty hub address in {target!r}: give HOST:PORT, several separated by commas"
            )
        if len(entries) == 1 and stripped.startswith(_SCHEMES):
            return [stripped]
        shown = str(_address(stripped))
        if shown not in found:
            found.append(shown)
    if not found:
        raise ValueError("no hub address given: HOST:PORT, several separated by commas")
    return found


Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    """The IP addresses `host` has now (a literal address: itself)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for info in infos:
        ip = str(info[4][0])
        if ip not in seen:
            seen.append(ip)
    return seen


@dataclass(frozen=True)
class ChannelTarget:
    """What one gRPC channel over the given targets is built from: its target, and the name the
    hub's certificate is checked against (None: the target's own host, gRPC's default)."""

    target: str
    authority: str | None = None


def channel_target(targets: Sequence[str], resolver: Resolver = resolve) -> ChannelTarget:
    """One gRPC target for `targets` (parse_targets' result). Several addresses become a static
    list in their given order (pick_first tries them in it), names resolved now; the channel's
    authority, the name a replica's TLS certificate is checked against, is the first entry
    (replicas of one hub serve one certificate naming every name clients use). IPv4 addresses
    are kept when the list holds both families (one gRPC scheme per list). ValueError when no
    entry resolves."""
    if len(targets) == 1:
        return ChannelTarget(targets[0])
    v4: list[str] = []
    v6: list[str] = []
    unresolved: list[str] = []
    for entry in targets:
        address = _address(entry)
        try:
            ips = resolver(address.host, address.port)
        except OSError as err:
            unresolved.append(f"{entry} ({err.strerror or err})")
            continue
        for ip in ips:
            if ipaddress.ip_address(ip.split("%")[0]).version == 4:
                v4.append(f"{ip}:{address.port}")
            else:
                v6.append(f"[{ip}]:{address.port}")
    if unresolved:
        log.warning("hub address(es) not resolved, left out: %s", ", ".join(unresolved))
    if not v4 and not v6:
        raise ValueError(
            f"none of the hub addresses resolves: {', '.join(unresolved)}; check the names "
            "(or give IP addresses)"
        )
    listed = ",".join(dict.fromkeys(v4 or v6))
    return ChannelTarget(f"ipv4:{listed}" if v4 else f"ipv6:{listed}", targets[0])


def backoff(
    failures: int,
    initial: float,
    maximum: float,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float:
    """Seconds to wait before attempt `failures` + 1: a ceiling doubling from `initial` up to
    `maximum`, and a delay drawn between half the ceiling and the ceiling, so that the banks a
    replica served do not all come back in the same instant."""
    if failures < 1:
        raise ValueError("backoff counts failures from 1")
    ceiling = min(maximum, initial * 2.0 ** min(failures - 1, 64))
    return uniform(ceiling / 2, ceiling)
