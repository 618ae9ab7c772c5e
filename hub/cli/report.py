"""`stophub report`: reports for people outside the operations room.

`stophub report sla --from 2026-03-01 --to 2026-03-31 --out report.html` writes the SLA report:
one self-contained HTML file, no network needed to open it. Its figures are
hub/service/slareport.py's, read by hub/store/reports.py and drawn by hub/cli/render/report.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from hub.cli.common import CASE_ID, db_option, open_store
from hub.cli.render.report import render_html
from hub.service.slareport import gather
from hub.store.sql import shown_url
from hub.system.clock import SystemClock


def parse_moment(value: str, *, end: bool = False) -> datetime:
    """An ISO date or datetime, UTC unless it says otherwise. A date alone is the start of
    that day, or with `end` the start of the next (so `--to 2026-03-31` includes March 31)."""
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: write an ISO date (2026-03-01) or datetime (2026-03-01T09:00:00Z)"
        ) from None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if end and len(text) == 10:
        moment += timedelta(days=1)
    return moment


@click.group("report")
def report() -> None:
    """Reports for compliance and supervision."""


@report.command("sla")
@db_option
@click.option(
    "--from",
    "start_text",
    required=True,
    help="Start of the period (clocks started at or after it): ISO date or datetime, UTC.",
)
@click.option(
    "--to",
    "end_text",
    required=True,
    help="End of the period (excluded): ISO datetime, or ISO date (that day included), UTC.",
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="The HTML file to write.",
)
@click.option(
    "--case",
    "case_ids",
    type=CASE_ID,
    multiple=True,
    help="Add this case's timeline (events and clock steps); repeatable.",
)
def sla(
    database_url: str, start_text: str, end_text: str, out: Path, case_ids: tuple[str, ...]
) -> None:
    """The SLA report: per institution and clock the count, median and p90 durations against
    the deadline, breaches and escalations; charts; case timelines. One HTML file."""
    start = parse_moment(start_text)
    end = parse_moment(end_text, end=True)
    if end <= start:
        raise click.BadParameter("--to must come after --from", param_hint="--to")
    store = open_store(database_url)
    try:
        with store(read_only=True) as uow:
            data = gather(
                uow.reports, uow.cases, start, end, case_ids, generated_at=SystemClock().now()
            )
    finally:
        store.dispose()
    missing = [t.case_id for t in data.cases if not t.found]
    if missing:
        raise click.ClickException(
            f"no case {', '.join(map(repr, missing))} in {shown_url(database_url)}"
        )
    out.write_text(render_html(data), encoding="utf-8")
    rows = data.rows
    click.echo(
        f"wrote {out}: {len(data.clocks)} clock(s) in {len(rows)} institution/clock row(s), "
        f"{sum(r.breached for r in rows)} breached, {sum(r.escalations for r in rows)} "
        "escalation(s)"
    )
