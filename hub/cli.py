"""The `stophub` command: serve the hub, migrate, keep the registry, look at cases, run the demo."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar, cast

import click
from rich.console import Console

from hub import bootstrap
from hub.clock import SystemClock
from hub.crypto.keys import PrivateKey, save_private_key
from hub.crypto.public import public_key_from_pem, public_key_to_pem
from hub.crypto.signing import ALGORITHMS, ED25519, SignatureError
from hub.domain.cases import CaseState
from hub.domain.clocks import CaseClock, PolicyError
from hub.domain.errors import DomainError
from hub.domain.institutions import ContactRole, DutyContact, InstitutionKind
from hub.policy import load_policy
from hub.render import case_view, cases_table, institution_view
from hub.service.admin import NewKey, Registry
from hub.service.ports import Clock, ClockRepository
from hub.sla_render import (
    breaches_table,
    clocks_table,
    is_breached,
    render_board,
    sla_log_view,
    stamp,
)
from hub.store.sql import SqlStore

F = TypeVar("F", bound=Callable[..., Any])

console = Console()

db_option = click.option(
    "--db",
    "database_url",
    default=lambda: os.environ.get("STOPHUB_DATABASE_URL", bootstrap.DEFAULT_DATABASE),
    show_default="$STOPHUB_DATABASE_URL or " + bootstrap.DEFAULT_DATABASE,
    help="Database URL: sqlite:///path/to/file.db or postgresql://user@host/db.",
)


def refusals_as_errors(fn: F) -> F:
    """Domain refusals become a one-line error and exit status 1, not a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DomainError as err:
            raise click.ClickException(f"{err.code}: {err.message}") from err
        except (SignatureError, FileExistsError, FileNotFoundError) as err:
            raise click.ClickException(str(err)) from err

    return wrapper  # type: ignore[return-value]


def open_store(database_url: str) -> SqlStore:
    bootstrap.migrate(database_url)
    return SqlStore(database_url)


@click.group()
@click.option("--log-level", default="WARNING", show_default=True)
def main(log_level: str) -> None:
    """StopHub: emergency stop-payment coordination between banks, payment institutions and
    the police anti-fraud centre."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


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
@refusals_as_errors
def serve(
    address: str, database_url: str, hub_key: str, migrate: bool, policy_file: str | None
) -> None:
    """Serve the hub over gRPC (health checking and reflection on)."""
    if not Path(hub_key).exists():
        raise click.ClickException(
            f"no hub key at {hub_key}: create one with `stophub keys generate --out {hub_key}`"
        )
    try:
        # Refuse a bad policy before touching the database; the message names the line.
        load_policy(policy_file)
    except PolicyError as err:
        raise click.ClickException(str(err)) from err
    logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))

    async def run() -> None:
        server, store = await bootstrap.serve(
            database_url, hub_key, address, run_migrations=migrate, policy_file=policy_file
        )
        click.echo(f"StopHub serving on {address.rsplit(':', 1)[0]}:{server.port}", err=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop(5.0)
        store.dispose()

    try:
        asyncio.run(run())
    except PolicyError as err:  # the file changed between the check above and the start
        raise click.ClickException(str(err)) from err


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


# ---- institutions ----------------------------------------------------------------------------


KINDS = {
    "bank": InstitutionKind.BANK,
    "payment-institution": InstitutionKind.PAYMENT_INSTITUTION,
    "anti-fraud-centre": InstitutionKind.ANTI_FRAUD_CENTRE,
    "regulator": InstitutionKind.REGULATOR,
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


@case.command("show")
@click.argument("case_id")
@click.option("--personal-data", is_flag=True, help="Show the victim's name in full.")
@db_option
def case_show(case_id: str, personal_data: bool, database_url: str) -> None:
    """Show a case: transactions, orders, timeline and how long each phase took."""
    store = open_store(database_url)
    with store(read_only=True) as uow:
        found = uow.cases.get(case_id)
    if found is None:
        raise click.ClickException(f"no case {case_id!r} in {database_url}")
    console.print(case_view(found, with_personal_data=personal_data))


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


if __name__ == "__main__":
    main()
