"""`stophub list`: the blacklist and punishment list as this hub holds them (read-only)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click
from rich.table import Table

from adapters.sdk.identity import Identity
from hub.cli.common import (
    db_option,
    json_option,
    open_store,
    personal_data_option,
    print_json,
    refusals_as_errors,
    remote_options,
    utc,
)
from hub.cli.remote import ListView, connect
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
@remote_options
@refusals_as_errors
def list_show(
    limit: int, personal_data: bool, as_json: bool, database_url: str, identity: Identity | None
) -> None:
    """The list's version, entry count and digests (what every copy's checkpoint must show),
    and its live entries. With --identity: copied over gRPC (SyncList, both forms), each copy
    checked against the hub-signed checkpoint that ends it."""
    if identity is not None:
        with connect(identity) as remote:
            state = remote.list_view(limit)
    else:
        store = open_store(database_url)
        with store(read_only=True) as uow:
            held = uow.lists.state()
            rows = uow.lists.snapshot(held.version, False, 0, limit)
        state = ListView(
            held.version,
            held.count,
            held.clear_digest.to_bytes(32, "big"),
            held.token_digest.to_bytes(32, "big"),
            held.list_key_id,
            [entry_from_wire(wire) for _, wire in rows],
        )
    entries = state.entries
    clear_digest, token_digest = state.clear_digest.hex(), state.token_digest.hex()
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
        # Not in the list's wire form: null when the list was read over gRPC.
        "listed_by": e.listed_by or None,
        "listed_at": utc(e.listed_at),
        "expires_at": utc(e.expires_at),
    }
