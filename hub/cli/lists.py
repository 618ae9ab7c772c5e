"""`stophub list`: the blacklist and punishment list as this hub holds them (read-only)."""

from __future__ import annotations

import click
from rich.table import Table

from hub.cli.common import (
    db_option,
    open_store,
    personal_data_option,
    refusals_as_errors,
    wide_console,
)
from hub.cli.render.wording import stamp
from hub.domain.blacklist import EntryKind
from hub.domain.wording import Disclosure
from hub.service.lists import entry_from_wire


@click.group("list")
def list_group() -> None:
    """The blacklist and punishment list as this hub holds them (read-only)."""


@list_group.command("show")
@click.option("--limit", default=50, show_default=True, help="Entries shown, oldest first.")
@personal_data_option
@db_option
@refusals_as_errors
def list_show(limit: int, personal_data: bool, database_url: str) -> None:
    """The list's version, entry count and digests (what every copy's checkpoint must show),
    and its live entries."""
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
    shown = Disclosure(personal_data)
    for _, wire in rows:
        e = entry_from_wire(wire)
        # A person is listed by ID number: shown only with personal data.
        subject = (
            shown.private(e.subject_key) or "(ID number)"
            if e.kind is EntryKind.PERSON
            else shown.subject(e.subject_key)
        )
        table.add_row(
            e.entry_id,
            subject,
            shown.name(e.name),
            e.basis.value,
            e.source_case_id,
            stamp(e.listed_at),
            stamp(e.expires_at),
        )
    wide_console().print(table)
