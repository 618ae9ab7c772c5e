"""`stophub appeal`: appeals against stops, freezes and listings (read-only)."""

from __future__ import annotations

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
from hub.cli.remote import connect
from hub.domain.appeals import Appeal
from hub.domain.wording import Disclosure
from hub.render.screen import show
from hub.render.wording import stamp


@click.group("appeal")
def appeal_group() -> None:
    """Appeals against stops, freezes and listings (read-only)."""


@appeal_group.command("list")
@click.option("--open", "open_only", is_flag=True, help="Only those waiting for a decision.")
@click.option("--limit", default=50, show_default=True)
@personal_data_option
@json_option
@db_option
@remote_options
@refusals_as_errors
def appeal_list(
    open_only: bool,
    limit: int,
    personal_data: bool,
    as_json: bool,
    database_url: str,
    identity: Identity | None,
) -> None:
    """Appeals, newest first, with their deadline and decision. With --identity: those the
    hub shows that institution (a bank: its own)."""
    if identity is not None:
        with connect(identity) as remote:
            found, names = remote.appeals(open_only, limit)
    else:
        store = open_store(database_url)
        with store(read_only=True) as uow:
            found = list(uow.appeals.recent(limit, open_only=open_only))
            # A reason is free text about people: the names of its case are masked in it.
            cases = [uow.cases.get(case_id) for case_id in {a.case_id for a in found}]
            names = {name for c in cases if c is not None for name in c.personal_names()}
    shown = Disclosure(personal_data).knowing(names)
    if as_json:
        print_json({"appeals": [_appeal(a, shown) for a in found]})
        return
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
            stamp(a.filed_at),
            stamp(a.decide_by),
            shown.text(a.reason) or "-",
        )
    show(table)


def _appeal(a: Appeal, shown: Disclosure) -> dict[str, Any]:
    """One appeal for --json (docs/cli.md): people shown as the text output shows them."""
    return {
        "appeal_id": a.appeal_id,
        "case_id": a.case_id,
        "appellant": a.appellant,
        "against": {"kind": a.reference_kind.value, "reference": a.reference},
        "state": a.state.value,
        "filed_at": utc(a.filed_at),
        "decide_by": utc(a.decide_by),
        "decided_at": utc(a.decided_at),
        "decided_by": a.decided_by or None,
        "reason": shown.text(a.reason) or None,
    }
