"""`stophub sla`, `stophub board` and `stophub sla-export`: the case clocks (SLA)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import click
from rich.table import Table

from adapters.sdk.identity import Identity
from hub.cli.common import (
    CASE_ID,
    CODE,
    command_clock,
    db_option,
    json_option,
    open_store,
    print_json,
    refusals_as_errors,
    remote_options,
    utc,
)
from hub.cli.exporting import export_options, run_export
from hub.cli.remote import Remote, connect
from hub.domain.clocks import CaseClock, ClockState, SlaEntry
from hub.domain.grades import grade_of
from hub.render.screen import make_console, show
from hub.render.sla import (
    breaches_table,
    clocks_table,
    is_breached,
    render_board,
    run_board,
    sla_log_view,
)
from hub.render.wording import Times, stamp
from hub.service import exports
from hub.service.ports import ClockRepository, UnitOfWork
from hub.store.sql import shown_url
from hub.system.policy import load_calendar


def _find_clocks(
    clocks: ClockRepository,
    *,
    institution: str | None,
    case_id: str | None,
    open_only: bool,
    keep: Callable[[CaseClock], bool],
    limit: int,
    batch: int = 500,
) -> list[CaseClock]:
    """Clocks in the repository's order (running first, by deadline) that `keep` accepts."""
    found: list[CaseClock] = []
    offset = 0
    while len(found) < limit:
        rows = clocks.query(
            institution=institution,
            case_id=case_id,
            open_only=open_only,
            breached_only=False,
            limit=batch,
            offset=offset,
        )
        found.extend(c for c in rows if keep(c))
        if len(rows) < batch:
            break
        offset += batch
    return found[:limit]


@click.command("sla")
@db_option
@click.option(
    "--institution", type=CODE, help="Only clocks this institution (code) is responsible for."
)
@click.option(
    "--case", "case_id", type=CASE_ID, help="Only this case's clocks, each with its SLA log."
)
@click.option("--breaches", is_flag=True, help="Clocks whose deadline passed before they were met.")
@click.option("--all", "show_all", is_flag=True, help="Include met and ended clocks.")
@click.option("--limit", default=200, show_default=True, type=click.IntRange(min=1))
@json_option
@remote_options
def sla(
    database_url: str,
    institution: str | None,
    case_id: str | None,
    breaches: bool,
    show_all: bool,
    limit: int,
    as_json: bool,
    identity: Identity | None,
) -> None:
    """Case clocks (SLA): running ones by time left, breaches with how late, a case's log.
    With --identity: the clocks the hub shows that institution (a bank: its own)."""
    now = command_clock().now()
    if identity is not None:
        with connect(identity) as remote:
            found, entries = remote.clocks(
                institution=institution,
                case_id=case_id,
                open_only=not (show_all or breaches or case_id),
                keep=(lambda c: is_breached(c, now)) if breaches else (lambda c: True),
                limit=limit,
            )
    else:
        found, entries = _read_clocks(
            database_url,
            now,
            institution,
            case_id,
            breaches=breaches,
            show_all=show_all,
            limit=limit,
        )
    _print_clocks(found, entries, now, institution, case_id, breaches, show_all, as_json)


def _read_clocks(
    database_url: str,
    now: datetime,
    institution: str | None,
    case_id: str | None,
    *,
    breaches: bool,
    show_all: bool,
    limit: int,
) -> tuple[list[CaseClock], dict[str, list[SlaEntry]]]:
    store = open_store(database_url)
    try:
        with store(read_only=True) as uow:
            # A warning's clocks carry its id where a case's would be (docs/warnings.md).
            if case_id and uow.cases.get(case_id) is None and uow.warnings.get(case_id) is None:
                what = "warning" if case_id.startswith("W") else "case"
                raise click.ClickException(f"no {what} {case_id!r} in {shown_url(database_url)}")
            found = _find_clocks(
                uow.clocks,
                institution=institution or None,
                case_id=case_id or None,
                # A case's log is its whole history; breaches include met-late ones.
                open_only=not (show_all or breaches or case_id),
                keep=(lambda c: is_breached(c, now)) if breaches else (lambda c: True),
                limit=limit,
            )
            entries = uow.clocks.entries([c.clock_id for c in found]) if case_id else {}
            found = by_grade(found, _grades(uow, {c.case_id for c in found}))
    finally:
        store.dispose()
    return found, entries


def _grades(uow: UnitOfWork, ids: set[str]) -> dict[str, str]:
    """The grade of each case (or lead, for a lead's clock) of `ids`."""
    grades = {}
    for subject_id in ids:
        subject = uow.cases.get(subject_id) or uow.leads.get(subject_id)
        grades[subject_id] = subject.grade if subject is not None else ""
    return grades


def by_grade(found: list[CaseClock], grades: dict[str, str]) -> list[CaseClock]:
    """The running clocks by their case's grade, red first (docs/grades.md), each grade in
    the order found (by deadline); the stopped ones after them, as found."""

    def key(c: CaseClock) -> tuple[bool, int]:
        running = c.state is ClockState.OPEN
        return (not running, grade_of(grades.get(c.case_id)).rank if running else 0)

    return sorted(found, key=key)


def _print_clocks(
    found: list[CaseClock],
    entries: dict[str, list[SlaEntry]],
    now: datetime,
    institution: str | None,
    case_id: str | None,
    breaches: bool,
    show_all: bool,
    as_json: bool,
) -> None:
    if as_json:
        print_json(_clocks_document(found, entries if case_id else None, now))
        return
    scope = "".join(
        (
            f" of case {case_id}" if case_id else "",
            f" for {institution}" if institution else "",
        )
    )
    as_of = f"as of {stamp(now)}"
    if breaches:
        title = f"{len(found)} breached or missed clock(s){scope}, {as_of}"
        show(breaches_table(found, now, title=title))
    else:
        which = "" if show_all or case_id else " open"
        title = f"{len(found)}{which} clock(s){scope} by time left, {as_of}"
        show(clocks_table(found, now, title=title))
    acknowledged = acknowledged_table(found)
    if acknowledged is not None:
        show(acknowledged)
    if case_id:
        show(sla_log_view(found, entries, now))


@click.command("board")
@db_option
@click.option(
    "--refresh",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds between frames.",
)
@click.option("--once", is_flag=True, help="Draw one frame and exit (for pipes and scripts).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@remote_options
def board(
    database_url: str, refresh: float, once: bool, limit: int, identity: Identity | None
) -> None:
    """A live board of open cases and their running clocks, counting down to each deadline
    (green: over 20% left, yellow: under 20%, red: overdue). Ctrl-C to leave. With
    --identity: the cases and clocks the hub shows that institution."""
    store = connect(identity) if identity is not None else open_store(database_url)
    clock = command_clock()
    # Piped, the board is drawn for $COLUMNS (80 without it), as on a terminal of that size.
    out = make_console()
    # The hub's calendar (the shipped policy's holidays, then the package's): the board says
    # while its working-day deadlines are estimates.
    calendar = load_calendar()
    try:
        if once:
            out.print(render_board(store, clock, width=out.width, limit=limit, calendar=calendar))
        else:
            run_board(store, clock, out, refresh=refresh, limit=limit, calendar=calendar)
    finally:
        if isinstance(store, Remote):
            store.close()
        else:
            store.dispose()


@click.command("sla-export")
@export_options
@refusals_as_errors
def sla_export(
    database_url: str,
    fmt: str,
    out: str,
    case_id: str | None,
    institution: str | None,
    start: datetime | None,
    end: datetime | None,
) -> None:
    """Export the SLA log (every clock start, step and stop, with its clock's state, deadline
    and breach) as CSV or JSON Lines. --institution: the clocks it is responsible for."""
    count = run_export(
        exports.export_sla, database_url, out, fmt, "SLA log rows", case_id, institution, start, end
    )
    if out != "-":
        click.echo(f"{count} SLA log row(s) written to {out}", err=True)


# ---- --json (docs/cli.md) ----------------------------------------------------------------------


def _clocks_document(
    clocks: Sequence[CaseClock], logs: Mapping[str, Sequence[SlaEntry]] | None, now: datetime
) -> dict[str, Any]:
    def clock(c: CaseClock) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "clock_id": c.clock_id,
            "case_id": c.case_id,
            "order_id": c.order_id or None,
            "kind": c.kind,
            "responsible": c.responsible,
            "state": c.state.value,
            "started_at": utc(c.started_at),
            "deadline_at": utc(c.deadline_at),
            "deadline_estimated": c.deadline_estimated,
            "seconds_left": (
                (c.deadline_at - now).total_seconds() if c.state is ClockState.OPEN else None
            ),
            "breached": is_breached(c, now),
            "next_step": c.next_step or None,
            "next_step_at": utc(c.next_step_at),
            "steps_done": c.steps_done,
            "stopped_at": utc(c.stopped_at),
            "stopped_by": c.stopped_by or None,
            "acknowledged": _acknowledgement(c),
        }
        if logs is not None:
            doc["log"] = [
                {
                    "event": e.event,
                    "at": utc(e.at),
                    "due_at": utc(e.due_at),
                    "responsible": e.responsible,
                    "late_seconds": e.late_seconds,
                    "detail": e.detail,
                }
                for e in logs.get(c.clock_id, ())
            ]
        return doc

    return {"as_of": utc(now), "clocks": [clock(c) for c in clocks]}


def _acknowledgement(c: CaseClock) -> dict[str, Any] | None:
    if c.acknowledged_at is None:
        return None
    return {
        "at": utc(c.acknowledged_at),
        "by": c.acknowledged_by or "",
        "operator": c.acknowledged_operator or "",
        "note": c.acknowledge_note or "",
    }


def acknowledged_table(clocks: Sequence[CaseClock]) -> Table | None:
    """The breaches among `clocks` a person acknowledged (SlaService.AcknowledgeBreach): who,
    when and what they noted; None when there are none."""
    acked = [c for c in clocks if c.acknowledged_at is not None]
    if not acked:
        return None
    at = Times(c.acknowledged_at for c in acked if c.acknowledged_at is not None)
    table = Table(title=f"{len(acked)} acknowledged breach(es)", title_justify="left")
    for col in ("clock", "case", "kind", "responsible", at.header("acknowledged"), "by", "note"):
        table.add_column(col, overflow="fold")
    for c in acked:
        assert c.acknowledged_at is not None
        table.add_row(
            c.clock_id,
            c.case_id,
            c.kind,
            c.responsible,
            at(c.acknowledged_at),
            f"{c.acknowledged_by} {c.acknowledged_operator}",
            c.acknowledge_note or "",
        )
    return table
