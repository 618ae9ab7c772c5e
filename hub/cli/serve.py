"""`stophub serve` and `stophub migrate`: run the hub over gRPC, bring the schema to head."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

import click

from hub import bootstrap
from hub.cli import workers as serve_workers
from hub.cli.common import (
    announce,
    data_keys_option,
    db_option,
    log,
    refusals_as_errors,
    tls_dir_option,
    use_data_keys,
)
from hub.crypto import fields, pki
from hub.crypto.listkey import DEFAULT_FILE as LIST_KEY_FILE
from hub.crypto.listkey import ENV_FILE as LIST_KEY_ENV_FILE
from hub.crypto.listkey import ENV_KEY as LIST_KEY_ENV
from hub.crypto.listkey import ListKeyError
from hub.crypto.signer import SignerError, load_signer
from hub.domain.clocks import PolicyError
from hub.observability.metrics import parse_address
from hub.store.sql import shown_url
from hub.system import memory
from hub.system.policy import load_policy


@click.command("serve")
@click.option("--address", default=bootstrap.DEFAULT_ADDRESS, show_default=True)
@db_option
@click.option(
    "--hub-key",
    default=bootstrap.DEFAULT_HUB_KEY,
    show_default=True,
    help="The hub's private signing key (create it with `stophub keys generate`), or a key "
    "in a PKCS#11 token: pkcs11:token=…;object=…?module-path=…&pin-source=file:… "
    "(docs/signing-keys.md; the PIN never on the command line).",
)
@click.option("--migrate/--no-migrate", default=True, show_default=True)
@click.option(
    "--policy",
    "policy_file",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="Case clock policy (TOML); default: the policy.toml shipped with the hub.",
)
@tls_dir_option(
    "--tls-dir",
    help=f"Mutual TLS: {pki.CA_CERT} (the network CA clients must be issued by), "
    f"{pki.HUB_CERT} and {pki.HUB_KEY} (the hub's certificate); see `stophub pki init`.",
)
@click.option(
    "--tls-gateway",
    "gateway_certs",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The client certificate (PEM) of a TLCP gateway allowed to forward institutions' "
    "verified certificates (stophub-client-cert-bin); repeat for several. Pinned by its "
    "SHA-256 (docs/tlcp-gateway.md).",
)
@click.option(
    "--insecure-plaintext",
    is_flag=True,
    help="Development only: serve plain text, without TLS or client certificates.",
)
@click.option(
    "--list-key",
    "list_key_file",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help=f"The network's list key (default: ${LIST_KEY_ENV_FILE}, ${LIST_KEY_ENV} or "
    f"{LIST_KEY_FILE} if it exists; without one, everything but the blacklist is served).",
)
@click.option(
    "--metrics-address",
    default=None,
    envvar="STOPHUB_METRICS_ADDRESS",
    metavar="HOST:PORT",
    help="Serve Prometheus metrics over plain HTTP at http://HOST:PORT/metrics (default: "
    "off). Env: $STOPHUB_METRICS_ADDRESS.",
)
@click.option(
    "--health-address",
    default=None,
    envvar="STOPHUB_HEALTH_ADDRESS",
    metavar="HOST:PORT",
    help="A second, PLAIN-TEXT gRPC port serving only grpc.health.v1.Health, for probes "
    "that cannot present a client certificate (default: off). Env: $STOPHUB_HEALTH_ADDRESS.",
)
@click.option(
    "--drain-seconds",
    default=20.0,
    show_default=True,
    envvar="STOPHUB_DRAIN_SECONDS",
    type=click.FloatRange(min=0),
    help="On SIGTERM or SIGINT: refuse new calls, move the delivery streams to other "
    "replicas, and give calls under way this long to finish (docs/failover.md). Keep "
    "Kubernetes' terminationGracePeriodSeconds above it. Env: $STOPHUB_DRAIN_SECONDS.",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Hub processes sharing --address on this host (PostgreSQL only; docs/operations.md, "
    '"Several processes on one host").',
)
@click.option(
    "--ack-timeout",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    metavar="SECONDS",
    help="A delivery not acknowledged within this is sent again; half of it is the tick that "
    "looks for deliveries nothing woke this hub for.",
)
@click.option(
    "--gc-refreeze",
    default=memory.DEFAULT_REFREEZE,
    show_default=True,
    envvar="STOPHUB_GC_REFREEZE",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Keep long-lived objects out of Python's garbage collector: frozen at the start, and "
    'again after one full collection this often (ADR 26; docs/operations.md, "Garbage '
    "collector\"). 0: Python's own collector only. Env: $STOPHUB_GC_REFREEZE.",
)
@data_keys_option
@refusals_as_errors
def serve(
    address: str,
    database_url: str,
    hub_key: str,
    migrate: bool,
    policy_file: str | None,
    tls_dir: str,
    insecure_plaintext: bool,
    gateway_certs: tuple[str, ...],
    list_key_file: str | None,
    metrics_address: str | None,
    health_address: str | None,
    drain_seconds: float,
    workers: int,
    ack_timeout: float,
    gc_refreeze: float,
    data_keys: str | None,
) -> None:
    """Serve the hub over gRPC with mutual TLS (health checking and reflection on)."""
    serve_workers.refuse_sqlite(database_url, workers)
    try:
        # Loaded (and a token logged in) before anything starts: a wrong PIN is one line.
        signer = load_signer(hub_key)
    except SignerError as err:
        raise click.ClickException(str(err)) from err
    ring = use_data_keys(data_keys)  # no keys, no start: says how to make them
    try:
        # Refuse a bad policy before touching the database; the message names the line.
        load_policy(policy_file)
    except PolicyError as err:
        raise click.ClickException(str(err)) from err
    try:
        # Checked here to refuse a bad file before anything starts; serve() warns if none.
        list_key = bootstrap.find_list_key(list_key_file, quiet=True)
    except ListKeyError as err:
        raise click.ClickException(str(err)) from err
    for flag, given in (
        ("--metrics-address", metrics_address),
        ("--health-address", health_address),
    ):
        if given is not None:
            try:
                parse_address(given)
            except ValueError as err:
                raise click.BadParameter(str(err), param_hint=flag) from err
    logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    tls = None if insecure_plaintext else _server_tls(Path(tls_dir))
    gateways = [Path(f).read_bytes() for f in gateway_certs]
    if gateways and tls is None:
        raise click.BadParameter(
            "a TLCP gateway is pinned by its TLS certificate: not with --insecure-plaintext",
            param_hint="--tls-gateway",
        )
    try:
        pki.gateway_pins(gateways)  # refuse a member's certificate pinned by mistake, now
    except pki.PkiError as err:
        raise click.BadParameter(str(err), param_hint="--tls-gateway") from err
    if insecure_plaintext:
        log.warning(
            "INSECURE: serving PLAIN TEXT (--insecure-plaintext). No TLS, no client "
            "certificates: anyone on the network can read the traffic and connect. "
            "Development only; never with real data."
        )
    if workers > 1:
        serve_workers.run(
            workers,
            address,
            sys.argv[1:],
            database_url=database_url,
            migrate=migrate,
            metrics_address=metrics_address,
            drain_seconds=drain_seconds,
        )
        return

    async def run() -> None:
        server, store = await bootstrap.serve(
            database_url,
            signer,
            address,
            run_migrations=migrate,
            policy_file=policy_file,
            tls=tls,
            gateways=gateways,
            data_keys=ring,
            list_key=list_key,
            metrics_address=metrics_address,
            health_address=health_address,
            ack_timeout=ack_timeout,
            gc_refreeze=gc_refreeze or None,
        )
        how = "mutual TLS" if tls else "PLAIN TEXT (--insecure-plaintext)"
        announce(f"StopHub serving on {address.rsplit(':', 1)[0]}:{server.port} over {how}")
        if metrics_address is not None:
            host = parse_address(metrics_address)[0]
            announce(f"metrics at http://{host}:{server.metrics_port}/metrics")
        if health_address is not None:
            host = parse_address(health_address)[0]
            announce(f"health (plain text, grpc.health.v1 only) on {host}:{server.health_port}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, _reload_data_keys)
        await stop.wait()
        announce(f"draining: calls under way get up to {drain_seconds:g} s")
        await server.stop(drain_seconds)
        store.dispose()

    try:
        bootstrap.run_to_completion(run())
    except PolicyError as err:  # the file changed between the check above and the start
        raise click.ClickException(str(err)) from err


def _reload_data_keys() -> None:
    """SIGHUP: re-read the keyring file, so a key made current seals from now on."""
    try:
        ring = fields.reload()
    except fields.DataKeyError as err:
        log.error("data keys not reloaded, the old ones stay in use: %s", err)
        return
    log.info("data keys reloaded: %d key(s), current %s", len(ring.keys), ring.current)


def _server_tls(directory: Path) -> pki.TlsConfig:
    """The hub's TLS material, or a refusal to start that says how to make it."""
    if not pki.has_server_material(directory):
        missing = ", ".join(
            f for f in (pki.CA_CERT, pki.HUB_CERT, pki.HUB_KEY) if not (directory / f).is_file()
        )
        raise click.ClickException(
            f"no TLS material in {directory} (missing {missing}): the hub serves mutual TLS "
            f"only. Create a CA and the hub's certificate with `stophub pki init --dir "
            f"{directory}` (add --name HOST for each name clients use to reach the hub), then "
            "issue each institution's certificate with `stophub pki issue CODE --dir "
            f"{directory}`. For local development only, `--insecure-plaintext` serves without TLS."
        )
    tls = pki.server_tls(directory)
    announce(f"clients must present a certificate from the CA {pki.fingerprint(tls.ca)}")
    return tls


@click.command("migrate")
@db_option
def migrate(database_url: str) -> None:
    """Bring the database schema to the newest revision."""
    bootstrap.migrate(database_url)
    click.echo(f"schema at head: {shown_url(database_url)}")
