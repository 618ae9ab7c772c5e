"""The `stophub` command: serve the hub, migrate, keep the registry, look at cases, run the demo."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import cast

import click
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from hub import bootstrap
from hub.cli_support import F, db_option, print_verification, refusals_as_errors
from hub.crypto import fields, pki
from hub.crypto.keys import PrivateKey, load_private_key, save_private_key
from hub.crypto.listkey import DEFAULT_FILE as LIST_KEY_FILE
from hub.crypto.listkey import ENV_FILE as LIST_KEY_ENV_FILE
from hub.crypto.listkey import ENV_KEY as LIST_KEY_ENV
from hub.crypto.listkey import ListKey, ListKeyError, resolve_list_key
from hub.crypto.public import public_key_from_pem, public_key_to_pem
from hub.crypto.signing import ALGORITHMS, ED25519
from hub.domain.blacklist import Entry
from hub.domain.cases import CaseState
from hub.domain.clocks import CaseClock, PolicyError
from hub.domain.institutions import HUB_CODE, ContactRole, DutyContact, InstitutionKind
from hub.domain.trail import accounts_of
from hub.domain.wording import mask
from hub.observability import logs as observability_logs
from hub.observability.metrics import parse_address
from hub.render import case_view, cases_table, institution_view
from hub.service.admin import NewKey, Registry
from hub.service.evidence import verify_signatures
from hub.service.ports import Clock, ClockRepository
from hub.service.trail import trail_view
from hub.sla_render import (
    breaches_table,
    clocks_table,
    is_breached,
    render_board,
    sla_log_view,
    stamp,
)
from hub.store import auditscan
from hub.store.sql import SqlStore, make_engine
from hub.store.tables import sealed_tables
from hub.system.clock import SystemClock
from hub.system.policy import load_policy
from hub.trail_render import trail_svg, trail_tree

console = Console()


def tls_dir_option(*names: str, help: str) -> Callable[[F], F]:
    """A PKI directory: `$STOPHUB_TLS_DIR` or var/pki unless given."""
    return click.option(
        *names,
        default=lambda: os.environ.get("STOPHUB_TLS_DIR", bootstrap.DEFAULT_TLS_DIR),
        show_default="$STOPHUB_TLS_DIR or " + bootstrap.DEFAULT_TLS_DIR,
        type=click.Path(file_okay=False),
        help=help,
    )


data_keys_option = click.option(
    "--data-keys",
    "data_keys",
    default=None,
    envvar=fields.ENV_FILE,
    type=click.Path(dir_okay=False),
    help=f"Data keyring sealing personal data (default: ${fields.ENV_KEYS} if set, else "
    f"{fields.DEFAULT_FILE}; create it with `stophub datakeys generate`).",
)
_data_keys_file: str | None = None  # the group's --data-keys, for every command
_log_format: str = "text"  # the group's --log-format


def _announce(message: str) -> None:
    """A line for the operator on stderr: as it is in text mode, as a log record (one JSON
    object) when the logs are JSON, so a log shipper never meets a line it cannot parse."""
    if _log_format == "json":
        logging.getLogger("hub.cli").info("%s", message)
    else:
        click.echo(message, err=True)


def use_data_keys(file: str | None = None) -> fields.Keyring:
    """Configure the process-wide keyring (module doc of hub.crypto.fields for the order)."""
    if file is None and _data_keys_file is None and fields.configured() is not None:
        return fields.keyring()  # a test or an embedding process configured it already
    try:
        ring = fields.resolve_keyring(file or _data_keys_file)
    except fields.DataKeyError as err:
        raise click.ClickException(str(err)) from err
    fields.configure(ring)
    return ring


def open_store(database_url: str) -> SqlStore:
    use_data_keys()
    bootstrap.migrate(database_url)
    return SqlStore(database_url)


@click.group()
@click.option("--log-level", default="WARNING", show_default=True)
@click.option(
    "--log-format",
    type=click.Choice(observability_logs.FORMATS),
    default="text",
    show_default=True,
    envvar=observability_logs.ENV_FORMAT,
    help="text, or json: one JSON object per line (time, level, logger, message, and "
    f"case_id, message_id, institution, rpc when known). Env: ${observability_logs.ENV_FORMAT}.",
)
@data_keys_option
def main(log_level: str, log_format: observability_logs.LogFormat, data_keys: str | None) -> None:
    """StopHub: emergency stop-payment coordination between banks, payment institutions and
    the police anti-fraud centre."""
    global _data_keys_file, _log_format
    _data_keys_file = data_keys
    _log_format = log_format
    observability_logs.configure(log_level, log_format)


# ---- serve / migrate ---------------------------------------------------------------------------


@main.command()
@click.option("--address", default=bootstrap.DEFAULT_ADDRESS, show_default=True)
@db_option
@click.option(
    "--hub-key",
    default=bootstrap.DEFAULT_HUB_KEY,
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The hub's private signing key (create it with `stophub keys generate`).",
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
    list_key_file: str | None,
    metrics_address: str | None,
    health_address: str | None,
    data_keys: str | None,
) -> None:
    """Serve the hub over gRPC with mutual TLS (health checking and reflection on)."""
    if not Path(hub_key).exists():
        raise click.ClickException(
            f"no hub key at {hub_key}: create one with `stophub keys generate --out {hub_key}`"
        )
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
    if insecure_plaintext:
        logging.getLogger("hub.cli").warning(
            "INSECURE: serving PLAIN TEXT (--insecure-plaintext). No TLS, no client "
            "certificates: anyone on the network can read the traffic and connect. "
            "Development only; never with real data."
        )

    async def run() -> None:
        server, store = await bootstrap.serve(
            database_url,
            hub_key,
            address,
            run_migrations=migrate,
            policy_file=policy_file,
            tls=tls,
            data_keys=ring,
            list_key=list_key,
            metrics_address=metrics_address,
            health_address=health_address,
        )
        how = "mutual TLS" if tls else "PLAIN TEXT (--insecure-plaintext)"
        _announce(f"StopHub serving on {address.rsplit(':', 1)[0]}:{server.port} over {how}")
        if metrics_address is not None:
            host = parse_address(metrics_address)[0]
            _announce(f"metrics at http://{host}:{server.metrics_port}/metrics")
        if health_address is not None:
            host = parse_address(health_address)[0]
            _announce(f"health (plain text, grpc.health.v1 only) on {host}:{server.health_port}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, _reload_data_keys)
        await stop.wait()
        await server.stop(5.0)
        store.dispose()

    try:
        asyncio.run(run())
    except PolicyError as err:  # the file changed between the check above and the start
        raise click.ClickException(str(err)) from err


def _reload_data_keys() -> None:
    """SIGHUP: re-read the keyring file, so a key made current seals from now on."""
    log = logging.getLogger("hub.cli")
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
    _announce(f"clients must present a certificate from the CA {pki.fingerprint(tls.ca)}")
    return tls


@main.command()
@db_option
def migrate(database_url: str) -> None:
    """Bring the database schema to the newest revision."""
    bootstrap.migrate(database_url)
    click.echo(f"schema at head: {database_url}")


# ---- keys ----------------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """Signing keys: generate a key pair, register or revoke a public key."""


@keys.command("generate")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Private key file.")
@click.option(
    "--algorithm", type=click.Choice(sorted(ALGORITHMS)), default=ED25519, show_default=True
)
@refusals_as_errors
def keys_generate(out: str, algorithm: str) -> None:
    """Write a private key (mode 0600) to OUT and its public key to OUT.pub."""
    key = PrivateKey.generate(algorithm)
    save_private_key(key, out)
    pub = Path(out).with_suffix(".pub")
    pub.write_bytes(public_key_to_pem(key.algorithm, key.public_key))
    click.echo(f"private key {out}\npublic key  {pub}\nkey id      {key.key_id} ({key.algorithm})")


def _read_public_key(path: str) -> NewKey:
    algorithm, raw = public_key_from_pem(Path(path).read_bytes())
    return NewKey(algorithm, raw)


@keys.command("add")
@click.argument("code")
@click.option("--key", "key_file", required=True, type=click.Path(exists=True, dir_okay=False))
@db_option
@refusals_as_errors
def keys_add(code: str, key_file: str, database_url: str) -> None:
    """Register another public key for an institution (several may be active)."""
    key_id = Registry(open_store(database_url), SystemClock()).add_key(
        code, _read_public_key(key_file)
    )
    click.echo(f"added key {key_id} to {code}")


@keys.command("revoke")
@click.argument("code")
@click.argument("key_id")
@db_option
@refusals_as_errors
def keys_revoke(code: str, key_id: str, database_url: str) -> None:
    """Revoke a key at once: messages signed with it are refused from now on."""
    Registry(open_store(database_url), SystemClock()).revoke_key(code, key_id)
    click.echo(f"revoked key {key_id} of {code}")


@keys.command("rotate")
@click.argument("code")
@click.option("--key", "key_file", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--overlap-hours",
    type=click.FloatRange(min=0),
    default=24.0,
    show_default=True,
    help="How long the old keys keep signing after the new one is registered.",
)
@db_option
@refusals_as_errors
def keys_rotate(code: str, key_file: str, overlap_hours: float, database_url: str) -> None:
    """Register a new public key and retire the institution's other keys after an overlap.

    What the old keys signed before they were retired still verifies in the audit log."""
    key_id, retiring = Registry(open_store(database_url), SystemClock()).rotate_key(
        code, _read_public_key(key_file), timedelta(hours=overlap_hours)
    )
    click.echo(
        f"{code} now signs with {key_id}; "
        + (", ".join(retiring) or "no other key")
        + f" retire(s) in {overlap_hours:g} h"
    )


# ---- audit -----------------------------------------------------------------------------------


@main.group()
def audit() -> None:
    """The audit log, read as evidence."""


@audit.command("signatures")
@db_option
@refusals_as_errors
def audit_signatures(database_url: str) -> None:
    """Verify every signed envelope in the audit log with the key valid when it was recorded.

    Exits 1 and names each entry that does not verify."""
    report = verify_signatures(open_store(database_url))
    for (signer, key_id), count in sorted(report.by_key.items()):
        click.echo(f"{signer:<10} {key_id:<24} {count:>8} verified")
    for p in report.problems:
        click.echo(f"entry {p.entry_id} ({p.signer}/{p.message_id}): {p.why}", err=True)
    click.echo(f"{report.checked} signed messages checked, {len(report.problems)} problem(s)")
    if not report.ok:
        sys.exit(1)


@audit.command("verify")
@db_option
@click.option("--quiet", is_flag=True, help="Only the summary and the problems.")
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Processes that read and hash the entries (default: one per core, at most 8).",
)
@click.option(
    "--pure-python",
    is_flag=True,
    help="Hash every entry in Python, without the C accelerator (ADR 18): slower, the same "
    "findings.",
)
@refusals_as_errors
def audit_verify(database_url: str, quiet: bool, jobs: int | None, pure_python: bool) -> None:
    """Check the audit log as a Merkle tree (docs/audit.md): every entry against its leaf and
    its place, every hub-signed checkpoint's signature and root against the tree the entries
    make now, and every stored envelope's signature with the key valid when it was recorded.

    Exits 1 and names each entry changed, removed, inserted or moved, each checkpoint that no
    longer fits, and each envelope that does not verify."""
    from hub.service import auditlog

    store = open_store(database_url)
    with store(read_only=True) as uow:
        hub = uow.institutions.get(HUB_CODE)
        keys = {k.key_id: k.public_key for k in hub.keys} if hub is not None else {}
    result = auditlog.verify_store(
        store, keys.get, lambda: store.scan_audit(jobs, native=not pure_python)
    )
    print_verification(result)
    if not quiet:
        click.echo(f"entries hashed {auditscan.method(native=not pure_python)}")
    waiting = [f for f in result.findings if f.what == "unsequenced"]
    if not quiet and waiting:
        click.echo("the waiting entries are placed by a running hub within a second")
    # The tree proves no entry changed; each entry's own envelope is checked too, with the
    # key its signer had when the hub recorded it.
    signatures = verify_signatures(store)
    for p in signatures.problems:
        click.echo(f"SIGNATURE: entry {p.entry_id} ({p.signer}/{p.message_id}): {p.why}", err=True)
    click.echo(
        f"{signatures.checked} signed envelope(s) verified with the key valid when recorded, "
        f"{len(signatures.problems)} problem(s)"
    )
    if not result.ok or not signatures.ok:
        sys.exit(1)


# ---- pki (mutual TLS) --------------------------------------------------------------------------


@main.group("pki")
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
@click.argument("code")
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


# ---- institutions ----------------------------------------------------------------------------


KINDS = {
    "bank": InstitutionKind.BANK,
    "payment-institution": InstitutionKind.PAYMENT_INSTITUTION,
    "anti-fraud-centre": InstitutionKind.ANTI_FRAUD_CENTRE,
    "regulator": InstitutionKind.REGULATOR,
    "auditor": InstitutionKind.AUDITOR,
}


def _contact(role: ContactRole, spec: str) -> DutyContact:
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) < 2:
        raise click.BadParameter(f"{spec!r}: give NAME,PHONE[,EMAIL]")
    return DutyContact(role, parts[0], parts[1], parts[2] if len(parts) > 2 else "")


@main.group()
def institution() -> None:
    """The registry of member institutions."""


@institution.command("add")
@click.option("--code", required=True, help="Short unique code, e.g. BANKA.")
@click.option("--name", required=True)
@click.option("--kind", required=True, type=click.Choice(sorted(KINDS)))
@click.option(
    "--key",
    "key_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Public key file (PEM); repeat for several.",
)
@click.option("--primary", required=True, help="Primary duty contact: NAME,PHONE[,EMAIL].")
@click.option("--backup", required=True, help="Backup duty contact: NAME,PHONE[,EMAIL].")
@db_option
@refusals_as_errors
def institution_add(
    code: str,
    name: str,
    kind: str,
    key_files: tuple[str, ...],
    primary: str,
    backup: str,
    database_url: str,
) -> None:
    """Register a member institution with its keys and duty contacts."""
    inst = Registry(open_store(database_url), SystemClock()).add_institution(
        code,
        name,
        KINDS[kind],
        [_read_public_key(f) for f in key_files],
        [_contact(ContactRole.PRIMARY, primary), _contact(ContactRole.BACKUP, backup)],
    )
    console.print(institution_view(inst))


@institution.command("list")
@db_option
@refusals_as_errors
def institution_list(database_url: str) -> None:
    """List member institutions."""
    from rich.table import Table

    rows = Registry(open_store(database_url), SystemClock()).list()
    table = Table(title=f"{len(rows)} institution(s)", title_justify="left")
    for col in ("code", "kind", "name", "active keys", "primary contact"):
        table.add_column(col)
    for inst in rows:
        primary = next((c for c in inst.contacts if c.role is ContactRole.PRIMARY), None)
        table.add_row(
            inst.code,
            inst.kind.value,
            inst.display_name,
            ", ".join(k.key_id for k in inst.active_keys()),
            f"{primary.name} {primary.phone}" if primary else "",
        )
    console.print(table)


@institution.command("show")
@click.argument("code")
@db_option
@refusals_as_errors
def institution_show(code: str, database_url: str) -> None:
    """Show an institution's keys and duty contacts."""
    console.print(institution_view(Registry(open_store(database_url), SystemClock()).get(code)))


# ---- cases -----------------------------------------------------------------------------------


@main.group()
def case() -> None:
    """Fraud cases: list them, show one with its timeline."""


@case.command("list")
@click.option("--state", type=click.Choice([s.value for s in CaseState]))
@click.option("--limit", default=50, show_default=True)
@db_option
def case_list(state: str | None, limit: int, database_url: str) -> None:
    """List cases, newest first."""
    store = open_store(database_url)
    with store(read_only=True) as uow:
        found = list(uow.cases.list(CaseState(state) if state else None, limit, None))
    console.print(cases_table(found))


# Other cases named beside a case: a mule ring can reach hundreds; the trail has the rest.
MAX_LINKED_SHOWN = 20


@case.command("show")
@click.argument("case_id")
@click.option("--personal-data", is_flag=True, help="Show the victim's name in full.")
@db_option
def case_show(case_id: str, personal_data: bool, database_url: str) -> None:
    """Show a case: transactions, orders, timeline and how long each phase took."""
    store = open_store(database_url)
    with store(read_only=True) as uow:
        found = uow.cases.get(case_id)
        linked = (
            uow.cases.involving(accounts_of(found), found.case_id, MAX_LINKED_SHOWN)
            if found is not None
            else []
        )
    if found is None:
        raise click.ClickException(f"no case {case_id!r} in {database_url}")
    console.print(case_view(found, with_personal_data=personal_data, linked=linked))


@case.command("trail")
@click.argument("case_id")
@click.option(
    "--svg",
    "svg_file",
    type=click.Path(dir_okay=False, writable=True),
    help="Also draw the trail as a picture: one SVG file a browser opens, nothing to fetch.",
)
@db_option
def case_trail(case_id: str, svg_file: str | None, database_url: str) -> None:
    """Show where a case's money went: the accounts layer by layer, what each received and
    holds, the orders on them, and what is beyond reach or waiting for the centre."""
    store = open_store(database_url)
    with store(read_only=True) as uow:
        found = uow.cases.get(case_id)
        if found is None:
            raise click.ClickException(f"no case {case_id!r} in {database_url}")
        trail = trail_view(uow, found, _clock().now(), uow.institutions.kinds())
    out = _wide_console()
    out.print(trail_tree(trail))
    if svg_file is not None:
        Path(svg_file).write_text(trail_svg(trail), encoding="utf-8")
        out.print(f"trail drawn in {svg_file}")


# ---- case clocks (SLA) -------------------------------------------------------------------------


def _clock() -> Clock:
    """Real time; a caller that drives the command itself (a test, a drill) may pass its own
    clock as `obj={"clock": ...}` to the click invocation."""
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    if isinstance(obj, dict) and obj.get("clock") is not None:
        return cast(Clock, obj["clock"])
    return SystemClock()


def _wide_console() -> Console:
    # Pipes and logs are not terminals; their 80 columns would fold every clock row.
    return console if console.is_terminal else Console(width=200)


def _find_clocks(
    clocks: ClockRepository,
    *,
    institution: str | None,
    case_id: str | None,
    open_only: bool,
    keep: Callable[[CaseClock], bool],
    limit: int,
    batch: int = 500,
) -> list[CaseClock]:
    """Clocks in the repository's order (running first, by deadline) that `keep` accepts."""
    found: list[CaseClock] = []
    offset = 0
    while len(found) < limit:
        rows = clocks.query(
            institution=institution,
            case_id=case_id,
            open_only=open_only,
            breached_only=False,
            limit=batch,
            offset=offset,
        )
        found.extend(c for c in rows if keep(c))
        if len(rows) < batch:
            break
        offset += batch
    return found[:limit]


@main.command()
@db_option
@click.option("--institution", help="Only clocks this institution (code) is responsible for.")
@click.option("--case", "case_id", help="Only this case's clocks, each with its SLA log.")
@click.option("--breaches", is_flag=True, help="Clocks whose deadline passed before they were met.")
@click.option("--all", "show_all", is_flag=True, help="Include met and ended clocks.")
@click.option("--limit", default=200, show_default=True, type=click.IntRange(min=1))
def sla(
    database_url: str,
    institution: str | None,
    case_id: str | None,
    breaches: bool,
    show_all: bool,
    limit: int,
) -> None:
    """Case clocks (SLA): running ones by time left, breaches with how late, a case's log."""
    store = open_store(database_url)
    now = _clock().now()
    try:
        with store(read_only=True) as uow:
            if case_id and uow.cases.get(case_id) is None:
                raise click.ClickException(f"no case {case_id!r} in {database_url}")
            found = _find_clocks(
                uow.clocks,
                institution=institution or None,
                case_id=case_id or None,
                # A case's log is its whole history; breaches include met-late ones.
                open_only=not (show_all or breaches or case_id),
                keep=(lambda c: is_breached(c, now)) if breaches else (lambda c: True),
                limit=limit,
            )
            entries = uow.clocks.entries([c.clock_id for c in found]) if case_id else {}
    finally:
        store.dispose()
    scope = "".join(
        (
            f" of case {case_id}" if case_id else "",
            f" for {institution}" if institution else "",
        )
    )
    out = _wide_console()
    as_of = f"as of {stamp(now)}"
    if breaches:
        title = f"{len(found)} breached or missed clock(s){scope}, {as_of}"
        out.print(breaches_table(found, now, title=title))
    else:
        which = "" if show_all or case_id else " open"
        title = f"{len(found)}{which} clock(s){scope} by time left, {as_of}"
        out.print(clocks_table(found, now, title=title))
    if case_id:
        out.print(sla_log_view(found, entries, now))


@main.command()
@db_option
@click.option(
    "--refresh",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds between frames.",
)
@click.option("--once", is_flag=True, help="Draw one frame and exit (for pipes and scripts).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
def board(database_url: str, refresh: float, once: bool, limit: int) -> None:
    """A live board of open cases and their running clocks, counting down to each deadline
    (green: over 20% left, yellow: under 20%, red: overdue). Ctrl-C to leave."""
    from rich.live import Live

    store = open_store(database_url)
    clock = _clock()
    out = _wide_console()
    try:
        if once:
            out.print(render_board(store, clock, limit=limit))
            return
        with Live(
            render_board(store, clock, limit=limit),
            console=out,
            auto_refresh=False,
            transient=False,
        ) as live:
            while True:
                time.sleep(refresh)
                live.update(render_board(store, clock, limit=limit), refresh=True)
    except KeyboardInterrupt:
        pass
    finally:
        store.dispose()


# ---- data keys (personal data sealed at rest) ---------------------------------------------------


def _keyring_file(file: str | None) -> Path:
    return Path(file or _data_keys_file or fields.DEFAULT_FILE)


file_option = click.option(
    "--file",
    default=None,
    type=click.Path(dir_okay=False),
    help=f"The keyring file (default: --data-keys, ${fields.ENV_FILE} or {fields.DEFAULT_FILE}).",
)


@main.group()
def datakeys() -> None:
    """Data keys that seal names, ID numbers, phones and stored envelopes (ADR 9).

    Rotation while hubs run: `generate` a key into the shared keyring file, `rotate` to make
    it current, send SIGHUP to each `stophub serve` (or let them pick it up when they meet
    it), then `reencrypt`; `status` shows which keys the stored values still use."""


@datakeys.command("generate")
@file_option
@click.option("--make-current", is_flag=True, help="Seal with the new key from now on.")
@refusals_as_errors
def datakeys_generate(file: str | None, make_current: bool) -> None:
    """Add a new 256-bit key to the keyring file (created, mode 0600, if missing; its first
    key is current)."""
    path = _keyring_file(file)
    try:
        fresh = fields.Keyring.generate()
        if path.exists():
            ring = fields.load_keyring_file(path).with_key(
                fresh.current, fresh.keys[fresh.current], make_current=make_current
            )
        else:
            ring = fresh
        ring.save(path)
    except fields.DataKeyError as err:
        raise click.ClickException(str(err)) from err
    state = "current" if ring.current == fresh.current else f"not current ({ring.current} is)"
    click.echo(f"data key {fresh.current} added to {path}: {state}, {len(ring.keys)} key(s)")


@datakeys.command("rotate")
@file_option
@refusals_as_errors
def datakeys_rotate(file: str | None) -> None:
    """Make the newest key current (new values are sealed with it)."""
    path = _keyring_file(file)
    try:
        ring = fields.load_keyring_file(path)
        newest = ring.order[-1]
        if newest != ring.current:
            ring.with_current(newest).save(path)
    except fields.DataKeyError as err:
        raise click.ClickException(str(err)) from err
    click.echo(
        f"current data key: {newest} (was {ring.current}). Send SIGHUP to running hubs, "
        "then run `stophub datakeys reencrypt`."
    )


def _sealed_engine(database_url: str, file: str | None) -> tuple[fields.Keyring, Engine]:
    ring = use_data_keys(file)
    bootstrap.migrate(database_url)
    return ring, make_engine(database_url)


@datakeys.command("reencrypt")
@file_option
@db_option
@click.option("--batch", default=500, show_default=True, type=click.IntRange(min=1))
@refusals_as_errors
def datakeys_reencrypt(file: str | None, database_url: str, batch: int) -> None:
    """Re-seal every stored value under the current key, a batch per transaction: safe
    while hubs serve, and a second run finds nothing left to do."""
    ring, engine = _sealed_engine(database_url, file)
    try:
        with engine.connect() as conn:
            done = fields.reencrypt(conn, sealed_tables(), ring, batch=batch)
    except fields.DataKeyError as err:
        raise click.ClickException(str(err)) from err
    finally:
        engine.dispose()
    for name, counts in done.items():
        click.echo(f"{name:<20} {counts.rows:>8} rows  {counts.values:>8} values re-sealed")
    total = sum(c.values for c in done.values())
    raced = sum(c.raced for c in done.values())
    click.echo(f"{total} value(s) re-sealed under {ring.current}")
    if raced:
        click.echo(f"{raced} value(s) changed meanwhile and were left: run it again")


@datakeys.command("status")
@file_option
@db_option
@refusals_as_errors
def datakeys_status(file: str | None, database_url: str) -> None:
    """Stored values per data key id, per table; keys the keyring lacks are flagged."""
    ring, engine = _sealed_engine(database_url, file)
    try:
        with engine.connect() as conn:
            usage = fields.key_usage(conn, sealed_tables())
    finally:
        engine.dispose()
    totals: dict[str, int] = {}
    for name, counts in usage.items():
        for kid, n in sorted(counts.items()):
            totals[kid] = totals.get(kid, 0) + n
            click.echo(f"{name:<20} {kid:<16} {n:>8}")
    click.echo(f"keyring: {', '.join(ring.order)}; current {ring.current}")
    for kid, n in sorted(totals.items()):
        note = (
            " (current)"
            if kid == ring.current
            else ("" if kid in ring.keys else " (NOT IN THE KEYRING)")
        )
        click.echo(f"total {kid:<16} {n:>8}{note}")


# ---- the blacklist and appeals as this hub holds them --------------------------------------------


@main.group("list")
def list_group() -> None:
    """The blacklist and punishment list as this hub holds them (read-only)."""


@list_group.command("show")
@click.option("--limit", default=50, show_default=True, help="Entries shown, oldest first.")
@click.option("--personal-data", is_flag=True, help="Show numbers and names in full.")
@db_option
@refusals_as_errors
def list_show(limit: int, personal_data: bool, database_url: str) -> None:
    """The list's version, entry count and digests (what every copy's checkpoint must show),
    and its live entries."""
    from hub.service.lists import entry_from_wire

    store = open_store(database_url)
    with store(read_only=True) as uow:
        state = uow.lists.state()
        rows = uow.lists.snapshot(state.version, False, 0, limit)
    click.echo(
        f"list version {state.version}, {state.count} live entries; digest "
        f"{state.clear_digest.to_bytes(32, 'big').hex()} (clear), "
        f"{state.token_digest.to_bytes(32, 'big').hex()} (tokens, list key "
        f"{state.list_key_id or '-'})"
    )
    table = Table(title_justify="left")
    for col in ("entry", "subject", "name", "basis", "case", "listed", "until"):
        table.add_column(col)
    for _, wire in rows:
        e = entry_from_wire(wire)
        subject, name = (e.subject_key, e.name) if personal_data else _masked(e)
        table.add_row(
            e.entry_id,
            subject,
            name,
            e.basis.value,
            e.source_case_id,
            f"{e.listed_at:%Y-%m-%d}",
            f"{e.expires_at:%Y-%m-%d}",
        )
    _wide_console().print(table)


def _masked(entry: Entry) -> tuple[str, str]:
    institution, sep, number = entry.subject_key.partition("/")
    subject = f"{institution}/{mask(number)}" if sep else mask(entry.subject_key)
    return subject, entry.name[:1] + "*" * max(len(entry.name) - 1, 0)


@main.group("appeal")
def appeal_group() -> None:
    """Appeals against stops, freezes and listings (read-only)."""


@appeal_group.command("list")
@click.option("--open", "open_only", is_flag=True, help="Only those waiting for a decision.")
@click.option("--limit", default=50, show_default=True)
@db_option
@refusals_as_errors
def appeal_list(open_only: bool, limit: int, database_url: str) -> None:
    """Appeals, newest first, with their deadline and decision."""
    store = open_store(database_url)
    with store(read_only=True) as uow:
        found = list(uow.appeals.recent(limit, open_only=open_only))
    table = Table(title_justify="left")
    for col in ("appeal", "case", "by", "against", "state", "filed", "decide by", "reason"):
        table.add_column(col)
    for a in found:
        table.add_row(
            a.appeal_id,
            a.case_id,
            a.appellant,
            f"{a.reference_kind.value} {a.reference}",
            a.state.value,
            f"{a.filed_at:%Y-%m-%d %H:%M}",
            f"{a.decide_by:%Y-%m-%d %H:%M}",
            a.reason or "-",
        )
    _wide_console().print(table)


# ---- the blacklist: the list key and a member's copy (docs/blacklist.md) ------------------------


@main.group("listkey")
def listkey_group() -> None:
    """The network's list key: the HMAC key behind the tokens of the blacklist's TOKENS form.

    Members that keep a TOKENS copy hold it too, to compute their customers' tokens; it must
    not change while entries are listed."""


@listkey_group.command("generate")
@click.option(
    "--file",
    "path",
    default=LIST_KEY_FILE,
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Where to write the key (mode 0600; never overwritten).",
)
@refusals_as_errors
def listkey_generate(path: str) -> None:
    """Create a new list key."""
    key = ListKey.generate()
    try:
        key.save(path)
    except ListKeyError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"list key {key.key_id} written to {path} (mode 0600)")


@listkey_group.command("show")
@click.option(
    "--file",
    "path",
    default=None,
    type=click.Path(dir_okay=False),
    help=f"The key file (default: ${LIST_KEY_ENV_FILE}, ${LIST_KEY_ENV} or {LIST_KEY_FILE}).",
)
def listkey_show(path: str | None) -> None:
    """Print the list key's id (never the key)."""
    try:
        key = resolve_list_key(path)
    except ListKeyError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"list key id {key.key_id}")


def _hub_public_keys(files: tuple[str, ...]) -> list[bytes]:
    """The hub's public keys: PEM (the `.pub` that `stophub keys generate` wrote) or raw."""
    keys = []
    for file in files:
        data = Path(file).read_bytes()
        keys.append(public_key_from_pem(data)[1] if data.lstrip().startswith(b"-----") else data)
    return keys


@main.command("replica")
@click.option("--hub", "target", required=True, help="The hub's address, HOST:PORT.")
@click.option("--institution", required=True, help="This member's code, e.g. PAYX.")
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="This member's private signing key.",
)
@click.option(
    "--hub-key",
    "hub_key_files",
    required=True,
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The hub's public key (PEM or raw); repeat it while the hub rotates its key.",
)
@tls_dir_option(
    "--tls-dir",
    help=f"Mutual TLS: {pki.CA_CERT} and this member's <code>-tls.pem / <code>-tls.key "
    "(`stophub pki issue CODE`).",
)
@click.option(
    "--insecure-plaintext",
    is_flag=True,
    help="Development only: reach a hub serving plain text, without TLS.",
)
@click.option(
    "--db",
    "db_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The copy's SQLite file (created if missing).",
)
@click.option(
    "--form",
    type=click.Choice(["clear", "tokens"]),
    default="clear",
    show_default=True,
    help="clear: numbers and names; tokens: keyed hashes only (needs the list key).",
)
@click.option(
    "--list-key",
    "list_key_file",
    default=None,
    type=click.Path(dir_okay=False),
    help=f"The network's list key, for --form tokens (default: ${LIST_KEY_ENV_FILE}, "
    f"${LIST_KEY_ENV} or {LIST_KEY_FILE}).",
)
@click.option("--once", is_flag=True, help="Sync once, print the copy's state and exit.")
@refusals_as_errors
def replica_command(
    target: str,
    institution: str,
    key_file: str,
    hub_key_files: tuple[str, ...],
    tls_dir: str,
    insecure_plaintext: bool,
    db_path: str,
    form: str,
    list_key_file: str | None,
    once: bool,
) -> None:
    """Keep a local copy of the blacklist and punishment list, exact to the hub's signed
    checkpoints: follow the hub's changes and print each checkpoint, or sync `--once`.

    Exits 1, keeping the last good copy, when a copy is refused (its digest, count or
    signature differ from the hub's checkpoint) or the hub refuses the sync."""
    from adapters.blacklist import Form, Replica, ReplicaError, ReplicaEvent
    from adapters.sdk import HubClient, HubError, HubSignatureError

    list_key = None
    if form == Form.TOKENS:
        try:
            list_key = resolve_list_key(list_key_file)
        except ListKeyError as err:
            raise click.ClickException(str(err)) from err
    tls = None if insecure_plaintext else pki.client_tls(Path(tls_dir), institution)
    clock = _clock()

    def report(event: ReplicaEvent) -> None:
        if event.kind == "checkpoint":
            click.echo(event.status.line())
        elif event.kind == "refused":
            click.echo(f"refused: {event.error}", err=True)
        elif event.retry_in is not None:
            click.echo(f"{event.error}; syncing again in {event.retry_in:.1f} s", err=True)

    async def run() -> None:
        client = HubClient(
            target,
            institution=institution,
            key=load_private_key(key_file),
            hub_public_key=_hub_public_keys(hub_key_files),
            clock=clock,
            tls=tls,
        )
        try:
            with Replica(db_path, client, Form(form), list_key=list_key, clock=clock) as copy:
                if once:
                    click.echo(
                        f"{copy.path}: {copy.form.value} copy at version {copy.version}, "
                        f"syncing from {target}",
                        err=True,
                    )
                    click.echo((await copy.sync_once()).line())
                    return
                copy.on_event = report
                click.echo(f"{copy.path}: {copy.status().line()}; following {target}", err=True)
                following = asyncio.create_task(copy.run(follow=True))
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
                stopping = asyncio.create_task(stop.wait())
                await asyncio.wait({following, stopping}, return_when=asyncio.FIRST_COMPLETED)
                for task in (following, stopping):
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await following  # a refusal no retry cures is raised here
        finally:
            await client.close()

    try:
        asyncio.run(run())
    except (ReplicaError, HubError, HubSignatureError) as err:
        raise click.ClickException(f"the copy in {db_path} was not updated: {err}") from err


# ---- demo ------------------------------------------------------------------------------------


@main.command()
@click.option(
    "--dir", "directory", default="var/demo", show_default=True, type=click.Path(file_okay=False)
)
def demo(directory: str) -> None:
    """Run a whole case over real gRPC: report, verify, stop, answers, freeze, return, close."""
    from hub.demo import run_demo

    # Logs and CI are not terminals; their 80 columns would fold every timeline row.
    out = console if console.is_terminal else Console(width=150)
    sys.exit(asyncio.run(run_demo(Path(directory), out)))


# Commands kept in modules of their own, registered last: they import this module's options.
from hub.export_cli import audit_export, audit_verify_export, sla_export  # noqa: E402
from hub.report_cli import report  # noqa: E402

main.add_command(report)
audit.add_command(audit_export, name="export")
audit.add_command(audit_verify_export, name="verify-export")
main.add_command(sla_export, name="sla-export")


if __name__ == "__main__":
    main()
