"""`stophub list`: the blacklist and punishment list as this hub holds them (read-only)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click
from rich.table import Table

from hub.cli.common import (
    db_option,
    json_option,
    open_store,
    personal_data_option,
    print_json,
    refusals_as_errors,
    utc,
)
from hub.domain.blacklist import Entry, EntryKind
from hub.domain.wording import Disclosure
from hub.render.screen import show
from hub.render.wording import display_zone
from hub.service.lists import entry_from_wire


@click.group("list")
def list_group() -> None:
    """The blacklist and punishment list as this hub holds them (read-only)."""


@list_group.command("show")
@click.option("--limit", default=50, show_default=True, help="Entries shown, oldest first.")
@personal_data_option
@json_option
@db_option
@refusals_as_errors
def list_show(limit: int, personal_data: bool, as_json: bool, database_url: str) -> None:
    """The list's version, entry count and digests (what every copy's checkpoint must show),
    and its live entries."""
    store = open_store(database_url)
    with store(read_only=True) as uow:
        state = uow.lists.state()
        rows = uow.lists.snapshot(state.version, False, 0, limit)
    entries = [entry_from_wire(wire) for _, wire in rows]
    clear_digest = state.clear_digest.to_bytes(32, "big").hex()
    token_digest = state.token_digest.to_bytes(32, "big").hex()
    if as_json:
        print_json(
            {
                "version": state.version,
                "count": state.count,
                "clear_digest": clear_digest,
                "token_digest": token_digest,
                "list_key_id": state.list_key_id or None,
                "personal_data": personal_data,
                "entries": [_entry(e, Disclosure(personal_data)) for e in entries],
            }
        )
        return
    # One digest a line: 64 hex digits and their label fit an 80-column terminal.
    click.echo(
        f"list version {state.version}, {state.count} live entries, list key "
        f"{state.list_key_id or '-'}\nclear digest  {clear_digest}\ntoken digest  {token_digest}"
    )
    table = Table(title_justify="left")
    for col in ("entry", "subject", "name", "basis", "case", "listed", "until"):
        table.add_column(col)
    shown = Disclosure(personal_data)
    for e in entries:
        subject = _subject(e, shown)
        table.add_row(
            e.entry_id,
            subject,
            shown.name(e.name),
            e.basis.value,
            e.source_case_id,
            _day(e.listed_at),
            _day(e.expires_at),
        )
    show(table)


def _day(moment: datetime) -> str:
    return f"{moment.astimezone(display_zone()):%Y-%m-%d}"


def _subject(e: Entry, shown: Disclosure) -> str:
    """An account as INSTITUTION/NUMBER; a person's ID number only with personal data."""
    if e.kind is EntryKind.PERSON:
        return shown.private(e.subject_key) or "(ID number)"
    return shown.subject(e.subject_key)


def _entry(e: Entry, shown: Disclosure) -> dict[str, Any]:
    """One live entry for --json (docs/cli.md): people shown as the table shows them."""
    return {
        "entry_id": e.entry_id,
        "kind": e.kind.value,
        "subject": _subject(e, shown),
        "name": shown.name(e.name),
        "basis": e.basis.value,
        "case_id": e.source_case_id,
        "listed_by": e.listed_by,
        "listed_at": utc(e.listed_at),
        "expires_at": utc(e.expires_at),
    }
