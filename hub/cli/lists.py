"""`stophub list`: the blacklist and punishment list as this hub holds them (read-only)."""

from __future__ import annotations

import click
from rich.table import Table

from hub.cli.common import db_option, open_store, refusals_as_errors, wide_console
from hub.domain.blacklist import Entry
from hub.domain.wording import mask, mask_name
from hub.service.lists import entry_from_wire


@click.group("list")
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
    wide_console().print(table)


def _masked(entry: Entry) -> tuple[str, str]:
    institution, sep, number = entry.subject_key.partition("/")
    subject = f"{institution}/{mask(number)}" if sep else mask(entry.subject_key)
    return subject, mask_name(entry.name)
