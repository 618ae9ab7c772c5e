"""`stophub case`: fraud cases: list them, show one with its timeline, follow its money."""

from __future__ import annotations

from pathlib import Path

import click

from hub.cli.common import (
    command_clock,
    console,
    db_option,
    open_store,
    personal_data_option,
    wide_console,
)
from hub.cli.render.case import case_view, cases_table
from hub.cli.render.trail import trail_svg, trail_tree
from hub.domain.cases import CaseState
from hub.domain.trail import accounts_of
from hub.domain.wording import Disclosure
from hub.service.trail import trail_view


@click.group("case")
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


# Other cases named beside a case: a mule ring can reach hundreds; the trail has the rest.
MAX_LINKED_SHOWN = 20


@case.command("show")
@click.argument("case_id")
@personal_data_option
@db_option
def case_show(case_id: str, personal_data: bool, database_url: str) -> None:
    """Show a case: transactions, orders, timeline and how long each phase took."""
    store = open_store(database_url)
    with store(read_only=True) as uow:
        found = uow.cases.get(case_id)
        linked = (
            uow.cases.involving(accounts_of(found), found.case_id, MAX_LINKED_SHOWN)
            if found is not None
            else []
        )
    if found is None:
        raise click.ClickException(f"no case {case_id!r} in {database_url}")
    console.print(case_view(found, personal_data=personal_data, linked=linked))


@case.command("trail")
@click.argument("case_id")
@click.option(
    "--svg",
    "svg_file",
    type=click.Path(dir_okay=False, writable=True),
    help="Also draw the trail as a picture: one SVG file a browser opens, nothing to fetch.",
)
@personal_data_option
@db_option
def case_trail(case_id: str, svg_file: str | None, personal_data: bool, database_url: str) -> None:
    """Show where a case's money went: the accounts layer by layer, what each received and
    holds, the orders on them, and what is beyond reach or waiting for the centre."""
    store = open_store(database_url)
    with store(read_only=True) as uow:
        found = uow.cases.get(case_id)
        if found is None:
            raise click.ClickException(f"no case {case_id!r} in {database_url}")
        trail = trail_view(uow, found, command_clock().now(), uow.institutions.kinds())
    shown = Disclosure(personal_data).knowing(found.personal_names())
    out = wide_console()
    out.print(trail_tree(trail, shown))
    if svg_file is not None:
        Path(svg_file).write_text(trail_svg(trail, shown), encoding="utf-8")
        out.print(f"trail drawn in {svg_file}")
