"""`stophub institution`: the registry of member institutions."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from hub.cli.common import (
    CODE,
    db_option,
    json_option,
    open_store,
    print_json,
    read_public_key,
    refusals_as_errors,
    utc,
)
from hub.domain.institutions import ContactRole, DutyContact, Institution, InstitutionKind
from hub.render.case import institution_view
from hub.render.screen import show
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
@click.option("--code", required=True, type=CODE, help="Short unique code, e.g. BANKA.")
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
    inst = Registry(open_store(database_url, write=True), SystemClock()).add_institution(
        code,
        name,
        KINDS[kind],
        [read_public_key(f) for f in key_files],
        [_contact(ContactRole.PRIMARY, primary), _contact(ContactRole.BACKUP, backup)],
    )
    show(institution_view(inst))


@institution.command("list")
@json_option
@db_option
@refusals_as_errors
def institution_list(as_json: bool, database_url: str) -> None:
    """List member institutions."""
    rows = Registry(open_store(database_url), SystemClock()).list()
    if as_json:
        print_json({"institutions": [_institution(i) for i in rows]})
        return
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
    show(table)


@institution.command("show")
@click.argument("code", type=CODE)
@json_option
@db_option
@refusals_as_errors
def institution_show(code: str, as_json: bool, database_url: str) -> None:
    """Show an institution's keys and duty contacts."""
    found = Registry(open_store(database_url), SystemClock()).get(code)
    if as_json:
        print_json(_institution(found))
    else:
        show(institution_view(found))


def _institution(inst: Institution) -> dict[str, Any]:
    """One institution for --json (docs/cli.md)."""
    return {
        "code": inst.code,
        "kind": inst.kind.value,
        "name": inst.display_name,
        "registered_at": utc(inst.created_at),
        "keys": [
            {
                "key_id": k.key_id,
                "algorithm": k.algorithm,
                "state": k.state.value,
                "created_at": utc(k.created_at),
                "not_after": utc(k.not_after),
                "revoked_at": utc(k.revoked_at),
            }
            for k in inst.keys
        ],
        "contacts": [
            {"role": c.role.value, "name": c.name, "phone": c.phone, "email": c.email or None}
            for c in inst.contacts
        ],
    }
