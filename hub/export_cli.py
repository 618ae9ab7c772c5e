"""`stophub audit export`, `stophub sla export` and `stophub audit verify-export` (issue 8):
standalone click commands that hub/cli.py registers into its groups.

This module does not import hub.cli at import time (hub.cli imports it to register the
commands): `--db` is declared again here, and `open_store` (which applies the main group's
--data-keys) is imported when a command runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hub.cli_support import F, db_option, print_verification
from hub.cli_support import refusals_as_errors as _refusals_as_errors
from hub.crypto.public import public_key_from_pem
from hub.crypto.signing import ED25519, key_id_for
from hub.domain.institutions import HUB_CODE
from hub.service import exports


def _time(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError as err:
        raise click.BadParameter(f"not an ISO 8601 time: {value!r}") from err
    if at.tzinfo is None:
        raise click.BadParameter(f"{value!r} has no time zone (add Z or +08:00)")
    return at


def export_options(fn: F) -> F:
    for option in reversed(
        (
            db_option,
            click.option(
                "--format",
                "fmt",
                type=click.Choice(exports.FORMATS),
                default="jsonl",
                show_default=True,
            ),
            click.option(
                "--out",
                "out",
                default="-",
                show_default=True,
                type=click.Path(dir_okay=False, allow_dash=True),
                help="The file to write (- for standard output).",
            ),
            click.option("--case", "case_id", help="Only this case's rows."),
            click.option("--institution", help="Only the rows concerning this institution."),
            click.option(
                "--from", "start", callback=_time, help="From this time (ISO 8601), included."
            ),
            click.option("--to", "end", callback=_time, help="To this time (ISO 8601), excluded."),
        )
    ):
        fn = option(fn)
    return fn


@contextmanager
def _output(out: str, what: str) -> Iterator[tuple[IO[str], exports.Progress | None]]:
    """The file to write and, when it is a file, a progress bar on the terminal."""
    if out == "-":
        yield sys.stdout, None
        return
    with open(out, "w", encoding="utf-8", newline="") as f:
        columns = (
            TextColumn(f"exporting {what}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(what, total=None)

            def progress(done: int, total: int | None) -> None:
                bar.update(task, completed=done, total=total)

            yield f, progress


def _open(database_url: str) -> Any:
    from hub.cli import open_store  # not at import time: hub.cli imports this module

    return open_store(database_url)


@click.command("export")
@export_options
@_refusals_as_errors
def audit_export(
    database_url: str,
    fmt: str,
    out: str,
    case_id: str | None,
    institution: str | None,
    start: datetime | None,
    end: datetime | None,
) -> None:
    """Export audit entries, in id order, as CSV or JSON Lines.

    --institution keeps the entries it is the actor of and those of the cases it reported or
    has an order addressed to. A JSON Lines export without filters also holds the log's state
    and signed checkpoints: `stophub audit verify-export` checks it offline."""
    count = _export(
        exports.export_audit,
        database_url,
        out,
        fmt,
        "audit entries",
        case_id,
        institution,
        start,
        end,
    )
    if out != "-":
        click.echo(f"{count} audit entr(ies) written to {out}", err=True)


@click.command("export")
@export_options
@_refusals_as_errors
def sla_export(
    database_url: str,
    fmt: str,
    out: str,
    case_id: str | None,
    institution: str | None,
    start: datetime | None,
    end: datetime | None,
) -> None:
    """Export the SLA log (every clock start, step and stop, with its clock's state, deadline
    and breach) as CSV or JSON Lines. --institution: the clocks it is responsible for."""
    count = _export(
        exports.export_sla, database_url, out, fmt, "SLA log rows", case_id, institution, start, end
    )
    if out != "-":
        click.echo(f"{count} SLA log row(s) written to {out}", err=True)


def _export(
    export: Callable[..., int],
    database_url: str,
    out: str,
    fmt: str,
    what: str,
    case_id: str | None,
    institution: str | None,
    start: datetime | None,
    end: datetime | None,
) -> int:
    """Run one export to `out` with its progress bar; how many rows it wrote."""
    store = _open(database_url)
    try:
        with _output(out, what) as (f, progress):
            return export(
                store,
                f,
                fmt,
                case_id=case_id,
                institution=institution,
                start=start,
                end=end,
                progress=progress,
            )
    finally:
        store.dispose()


def read_hub_key(path: str) -> tuple[str, bytes]:
    """(key id, public key) from a PEM public key, or a raw 32-byte Ed25519 key."""
    data = Path(path).read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        algorithm, key = public_key_from_pem(data)
    elif len(data) == 32:
        algorithm, key = ED25519, data
    else:
        raise click.ClickException(f"{path}: neither a PEM public key nor a raw Ed25519 key")
    return key_id_for(algorithm, key), key


@click.command("verify-export")
@click.option(
    "--export",
    "export_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A full JSON Lines audit export (`stophub audit export --format jsonl`).",
)
@click.option(
    "--hub-key",
    "hub_key_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A public key of the hub (PEM, or raw Ed25519), repeatable; else the registry's.",
)
@click.option(
    "--db",
    "database_url",
    default=None,
    help="Read the hub's public keys from this database's registry (when no --hub-key).",
)
@_refusals_as_errors
def audit_verify_export(
    export_file: str, hub_key_files: tuple[str, ...], database_url: str | None
) -> None:
    """Check a full audit export offline as `stophub audit verify` checks the database: every
    entry against its leaf and place, every checkpoint's signature and root.

    Exits 1 and names each entry changed, removed, inserted or moved."""
    keys: dict[str, bytes] = {}
    for path in hub_key_files:
        key_id, key = read_hub_key(path)
        keys[key_id] = key
    if not hub_key_files:
        if database_url is None:
            raise click.UsageError("give the hub's public keys with --hub-key, or --db")
        store = _open(database_url)
        try:
            with store(read_only=True) as uow:
                hub = uow.institutions.get(HUB_CODE)
                keys = {k.key_id: k.public_key for k in hub.keys} if hub is not None else {}
        finally:
            store.dispose()
    result = exports.verify_export(export_file, keys.get)
    print_verification(result)
    if not result.ok:
        sys.exit(1)
