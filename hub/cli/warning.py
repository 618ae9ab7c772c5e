"""`stophub warning`: warnings (预警劝阻) as the hub's database holds them (read-only)."""

from __future__ import annotations

from typing import Any

import click
from google.protobuf.json_format import MessageToDict

from hub.cli.common import (
    db_option,
    json_option,
    open_store,
    personal_data_option,
    print_json,
)
from hub.domain.wording import Disclosure
from hub.render.screen import show
from hub.render.warning import queue_order, warning_lines, warnings_table
from hub.service.warnings import STATES_BY_NUMBER, warning_to_proto
from stophub.v1 import warning_pb2


@click.group("warning")
def warning_group() -> None:
    """Warnings of customers at risk (read-only)."""


def _json(w: warning_pb2.Warning, shown: Disclosure) -> dict[str, Any]:
    """Protobuf's JSON mapping of the Warning, people shown as the text output shows them."""
    masked = warning_pb2.Warning()
    masked.CopyFrom(w)
    for ref in (masked.account, masked.counterparty):
        if ref.account_number:
            ref.account_number = shown.account(ref.account_number)
        if ref.holder_name:
            ref.holder_name = shown.name(ref.holder_name)
    for field in ("text", "acknowledge_note", "outcome_text", "grade_reason"):
        setattr(masked, field, shown.text(getattr(masked, field)))
    return MessageToDict(masked, preserving_proto_field_name=True)


@warning_group.command("list")
@click.option("--open", "open_only", is_flag=True, help="Only those not closed.")
@click.option("--institution", default="", help="Only those this institution sent or is sent.")
@click.option(
    "--state",
    type=click.Choice(["sent", "acknowledged", "closed"]),
    default=None,
    help="Only warnings in this state.",
)
@click.option("--limit", default=50, show_default=True)
@personal_data_option
@json_option
@db_option
def warning_list(
    open_only: bool,
    institution: str,
    state: str | None,
    limit: int,
    personal_data: bool,
    as_json: bool,
    database_url: str,
) -> None:
    """The newest warnings, shown as a duty desk works them: open ones by grade (red first)
    then contact deadline, then the closed ones."""
    wanted = next((s for s in STATES_BY_NUMBER.values() if s.value == state), None)
    store = open_store(database_url)
    with store(read_only=True) as uow:
        found = uow.warnings.search(
            state=wanted,
            party=institution.strip() or None,
            open_only=open_only,
            limit=limit,
            after=None,
        )
        warnings = [warning_to_proto(w) for w in found]
    shown = Disclosure(personal_data).knowing(w.account.holder_name for w in warnings)
    if as_json:
        print_json({"warnings": [_json(w, shown) for w in queue_order(warnings)]})
        return
    show(warnings_table(warnings, shown))


@warning_group.command("show")
@click.argument("warning_id")
@personal_data_option
@json_option
@db_option
def warning_show(warning_id: str, personal_data: bool, as_json: bool, database_url: str) -> None:
    """One warning, every field."""
    store = open_store(database_url)
    with store(read_only=True) as uow:
        found = uow.warnings.get(warning_id.strip())
        if found is None:
            raise click.ClickException(f"no warning {warning_id!r} in this database")
        w = warning_to_proto(found)
    shown = Disclosure(personal_data).knowing([w.account.holder_name, w.counterparty.holder_name])
    if as_json:
        print_json(_json(w, shown))
        return
    for line in warning_lines(w, shown):
        click.echo(line)
