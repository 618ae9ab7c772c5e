"""`stophub pki`: the network CA, the hub's server certificate, members' client certificates."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import click

from hub.cli.common import CODE, refusals_as_errors, tls_dir_option
from hub.crypto import pki
from hub.system.clock import SystemClock


@click.group("pki")
def pki_group() -> None:
    """Mutual TLS: the network CA, the hub's server certificate, members' client certificates."""


@pki_group.command("init")
@tls_dir_option("--dir", "directory", help="Where to create the PKI.")
@click.option(
    "--name",
    "names",
    multiple=True,
    help="DNS name or IP address clients reach the hub at; repeat for several "
    f"(default: {', '.join(pki.DEFAULT_HUB_NAMES)}).",
)
@refusals_as_errors
def pki_init(directory: str, names: tuple[str, ...]) -> None:
    """Create the network CA and the hub's server certificate in DIR (never overwrites)."""
    ca, hub = pki.init(Path(directory), SystemClock().now(), names or pki.DEFAULT_HUB_NAMES)
    click.echo(
        f"CA          {Path(directory) / pki.CA_CERT} (key {pki.CA_KEY}: keep it offline)\n"
        f"CA SHA-256  {pki.fingerprint(ca.cert)}\n"
        f"hub         {Path(directory) / pki.HUB_CERT}, {pki.HUB_KEY} "
        f"for {', '.join(names or pki.DEFAULT_HUB_NAMES)}, "
        f"valid until {hub.cert.not_valid_after_utc:%Y-%m-%d}"
    )


@pki_group.command("issue")
@click.argument("code", type=CODE)
@tls_dir_option("--dir", "directory", help="The PKI directory holding the CA (ca.pem, ca.key).")
@click.option(
    "--out-dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Where to write the certificate, key and a copy of ca.pem (default: DIR).",
)
@click.option("--days", default=365, show_default=True, type=click.IntRange(min=1))
@refusals_as_errors
def pki_issue(code: str, directory: str, out_dir: str | None, days: int) -> None:
    """Issue institution CODE's client certificate, signed by the CA in DIR."""
    cert, key = pki.issue(
        Path(directory),
        code,
        SystemClock().now(),
        out_dir=Path(out_dir) if out_dir else None,
        validity=timedelta(days=days),
    )
    click.echo(
        f"certificate {cert} (identity {pki.institution_uri(code)})\nkey         {key}\n"
        f"CA          {cert.parent / pki.CA_CERT}"
    )


@pki_group.command("issue-gateway")
@click.argument("name")
@tls_dir_option("--dir", "directory", help="The PKI directory holding the CA (ca.pem, ca.key).")
@click.option(
    "--out-dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Where to write the certificate, key and a copy of ca.pem (default: DIR).",
)
@click.option("--days", default=365, show_default=True, type=click.IntRange(min=1))
@refusals_as_errors
def pki_issue_gateway(name: str, directory: str, out_dir: str | None, days: int) -> None:
    """Issue TLCP gateway NAME's client certificate for its hop to the hub (it names the
    gateway, no institution), signed by the CA in DIR. The hub trusts it only once pinned:
    `stophub serve --tls-gateway CERT` (docs/tlcp-gateway.md)."""
    try:
        cert, key = pki.issue_gateway_files(
            Path(directory),
            name,
            SystemClock().now(),
            out_dir=Path(out_dir) if out_dir else None,
            validity=timedelta(days=days),
        )
    except pki.PkiError as err:
        raise click.ClickException(str(err)) from err
    click.echo(
        f"certificate {cert} (identity {pki.GATEWAY_URI_PREFIX}{name}, SHA-256 "
        f"{pki.fingerprint(cert.read_bytes())})\nkey         {key}\n"
        f"pin it: stophub serve --tls-gateway {cert}"
    )
