"""`stophub institution`: the registry of member institutions."""

from __future__ import annotations

import click
from rich.table import Table

from hub.cli.common import console, db_option, open_store, read_public_key, refusals_as_errors
from hub.cli.render.case import institution_view
from hub.domain.institutions import ContactRole, DutyContact, InstitutionKind
from hub.service.admin import Registry
from hub.system.clock import SystemClock

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


@click.group("institution")
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
        [read_public_key(f) for f in key_files],
        [_contact(ContactRole.PRIMARY, primary), _contact(ContactRole.BACKUP, backup)],
    )
    console.print(institution_view(inst))


@institution.command("list")
@db_option
@refusals_as_errors
def institution_list(database_url: str) -> None:
    """List member institutions."""
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
