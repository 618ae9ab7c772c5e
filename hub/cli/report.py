"""`stophub report`: reports for people outside the operations room.

`stophub report outcomes --from 2026-01-01 --to 2026-12-31 --period month` writes the figures the
regulator reports (hub/service/outcomes.py, docs/outcomes.md) as an HTML page or CSV.

`stophub report sla --out report.html` writes the SLA report of every clock in the database
(`--from 2026-03-01 --to 2026-03-31` for a period): one self-contained HTML file, no network
needed to open it, and beside it `report.html.sha256` for `sha256sum -c`. Its figures are
hub/service/slareport.py's, read by hub/store/reports.py and drawn by hub/render/report.py;
docs/sla-report.md is what it promises.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, time, timedelta, tzinfo
from pathlib import Path

import click

from hub.cli.common import (
    CASE_ID,
    HubKeys,
    command_clock,
    db_option,
    file_failure,
    hub_key_option,
    open_store,
    personal_data_option,
)
from hub.render import outcomes as outcome_page
from hub.render.report import render_html
from hub.render.wording import display_zone, stamp
from hub.service import outcomes, trust
from hub.service.slareport import ReportError, SlaReport, gather
from hub.store.reports import describe_database
from hub.store.sql import shown_url


def parse_moment(value: str, zone: tzinfo, *, end: bool = False) -> datetime:
    """An ISO date or datetime, in `zone` unless it names its own. A date alone is the start of
    that day, or with `end` the start of the next (so `--to 2026-03-31` includes March 31)."""
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: write an ISO date (2026-03-01) or datetime (2026-03-01T09:00:00Z)",
            param_hint="--to" if end else "--from",
        ) from None
    if end and len(text) == 10:
        moment = datetime.combine(moment.date() + timedelta(days=1), time())
    moment = moment.replace(tzinfo=zone) if moment.tzinfo is None else moment
    return moment.astimezone(UTC)


@click.group("report")
def report() -> None:
    """Reports for compliance and supervision."""


@report.command("sla")
@db_option
@click.option(
    "--from",
    "start_text",
    default=None,
    help="Start of the period (clocks started at or after it): ISO date or datetime, in the "
    "display zone unless it names one. Default: the day of the database's first clock.",
)
@click.option(
    "--to",
    "end_text",
    default=None,
    help="End of the period (excluded): ISO datetime, or ISO date (that day included), in the "
    "display zone unless it names one. Default: the end of the day of the last clock.",
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="The HTML file to write; its SHA-256 goes beside it, in FILE.sha256.",
)
@click.option(
    "--case",
    "case_ids",
    type=CASE_ID,
    multiple=True,
    help="Add this case's timeline (events and clock steps); repeatable.",
)
@personal_data_option
@hub_key_option(
    required=False,
    help="A public key of the hub (its .pub file), repeatable: the checkpoint the report cites "
    "must verify with it or a key it endorsed (`stophub keys endorse-hub`). Without it the "
    "report checks the checkpoint against the hub's keys as the database's registry lists "
    "them, which whoever holds the database can change, and says so.",
)
def sla(
    database_url: str,
    start_text: str | None,
    end_text: str | None,
    out: Path,
    case_ids: tuple[str, ...],
    personal_data: bool,
    hub_keys: HubKeys,
) -> None:
    """The SLA report: a summary per clock; per institution and clock the count, median and
    p90 against the deadline, breaches, reminders and escalations; charts; case timelines;
    the database and the audit-log checkpoint it was made against. One HTML file."""
    zone = display_zone()
    start = parse_moment(start_text, zone) if start_text else None
    end = parse_moment(end_text, zone, end=True) if end_text else None
    if start is not None and end is not None and end <= start:
        raise click.BadParameter("--to must come after --from", param_hint="--to")
    store = open_store(database_url)
    try:
        with store(read_only=True) as uow:
            uow.reports.hold_snapshot()
            trusted = None
            if hub_keys:
                trusted = trust.trusted_keys(hub_keys, uow.audit.endorsements())
                if trusted.findings:
                    raise ReportError(
                        f"{trusted.findings[0].detail}; run `stophub audit verify` and make no "
                        "report from this database until it passes"
                    )
            data = gather(
                uow.reports,
                uow.cases,
                uow.institutions,
                start,
                end,
                case_ids,
                generated_at=command_clock().now(),
                zone=zone,
                database=describe_database(database_url),
                personal_data=personal_data,
                trusted=trusted,
            )
    except ReportError as err:
        raise click.ClickException(str(err)) from err
    finally:
        store.dispose()
    missing = [t.case_id for t in data.cases if not t.found]
    if missing:
        raise click.ClickException(
            f"no case {', '.join(map(repr, missing))} in {shown_url(database_url)}"
        )
    content = render_html(data, out.name).encode("utf-8")
    digest = hashlib.sha256(content).hexdigest()
    sidecar = out.with_name(out.name + ".sha256")
    try:
        out.write_bytes(content)
        # sha256sum's own format, the name relative to the file's directory.
        sidecar.write_text(f"{digest}  {out.name}\n", encoding="utf-8")
    except OSError as err:
        raise click.ClickException(f"cannot write the report: {file_failure(err)}") from err
    for line in summary_lines(data, out, sidecar, digest):
        click.echo(line)
    if data.checkpoint is not None and not data.checkpoint.pinned:
        click.echo(
            "note: the checkpoint was checked only against the hub keys the database's registry "
            "lists, which whoever holds the database can change: give --hub-key FILE (the hub's "
            "public key) to check it against the hub's own",
            err=True,
        )


def summary_lines(data: SlaReport, out: Path, sidecar: Path, digest: str) -> list[str]:
    """What the command tells its user: what it wrote, what the period held, what it rests on."""
    period = f"from {stamp(data.start)} to {stamp(data.end)}"
    lines = [f"wrote {out} (SHA-256 {digest}) and {sidecar}"]
    if not data.clocks:
        if data.span is None:
            held = "this database holds no clock"
        else:
            held = (
                f"this database's clocks started from {stamp(data.span[0])} to "
                f"{stamp(data.span[1])}: leave out --from and --to to report on all of them"
            )
        lines.append(f"no clock started {period}, and the report says so; {held}")
    else:
        kinds = data.kinds
        lines.append(
            f"{len(data.clocks)} clock(s) started {period}: {sum(r.met for r in kinds)} met, "
            f"{sum(r.breached for r in kinds)} breached; {sum(r.reminders for r in kinds)} "
            f"reminder(s), {sum(r.breach_notices for r in kinds)} breach notice(s), "
            f"{sum(r.escalations for r in kinds)} escalation(s) to the regulator"
        )
    cp = data.checkpoint
    if cp is None:
        lines.append("the audit log has no signed checkpoint yet: the report says so")
    else:
        lines.append(
            f"made against the audit log's checkpoint of {cp.tree_size} entries "
            f"(root {cp.root_hash.hex()}), signed by the hub's key {cp.key_id}"
            + (", which --hub-key vouches for" if cp.pinned else "")
        )
    return lines


PERIODS = {p.value: p for p in outcomes.Period if p is not outcomes.Period.WHOLE}


@report.command("outcomes")
@db_option
@click.option(
    "--from",
    "start_text",
    required=True,
    help="Start of the range: ISO date or datetime, in the display zone unless it names one.",
)
@click.option(
    "--to",
    "end_text",
    required=True,
    help="End of the range (excluded): ISO datetime, or ISO date (that day included).",
)
@click.option(
    "--institution", default=None, help="Only the figures of this reporting institution's cases."
)
@click.option(
    "--period",
    type=click.Choice(list(PERIODS)),
    default=None,
    help="Split the figures by day, ISO week or month of the display zone (default: no split).",
)
@click.option("--format", "fmt", type=click.Choice(["html", "csv"]), default="html")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="The file to write (default: standard output).",
)
def outcomes_report(
    database_url: str,
    start_text: str,
    end_text: str,
    institution: str | None,
    period: str | None,
    fmt: str,
    out: Path | None,
) -> None:
    """The outcome figures: reports, money reported lost, stopped (first layer and
    downstream), frozen and returned, the recovered share, and the time from report to first
    stop, per institution and period; as an HTML page with charts, or CSV (docs/outcomes.md)."""
    zone = display_zone()
    start = parse_moment(start_text, zone)
    end = parse_moment(end_text, zone, end=True)
    try:
        outcomes.check_range(start, end)
    except outcomes.QueryError as err:
        raise click.BadParameter(str(err), param_hint="--to") from None
    store = open_store(database_url)
    try:
        with store(read_only=True) as uow:
            uow.reports.hold_snapshot()
            data = outcomes.gather(
                uow.reports,
                start,
                end,
                PERIODS[period] if period else outcomes.Period.WHOLE,
                zone,
                institution.strip() if institution else None,
                generated_at=command_clock().now(),
                database=describe_database(database_url),
            )
    finally:
        store.dispose()
    text = outcome_page.render_csv(data) if fmt == "csv" else outcome_page.render_html(data)
    if out is None:
        click.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as err:
        raise click.ClickException(f"cannot write the report: {file_failure(err)}") from err
    click.echo(
        f"wrote {out}: {len(data.rows)} row(s) of figures from {stamp(start)} to {stamp(end)}"
    )
