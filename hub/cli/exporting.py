"""What `stophub audit export` and `stophub sla-export` share (issue 8): their options, the file
they write (with a progress bar on the terminal) and the run of one export."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import IO

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hub.cli.common import CASE_ID, CODE, F, db_option, open_store
from hub.render.screen import make_console
from hub.service import exports


def _time(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError as err:
        raise click.BadParameter(f"not an ISO 8601 time: {value!r}") from err
    if at.tzinfo is None:
        raise click.BadParameter(f"{value!r} has no time zone (add Z or +08:00)")
    return at


def export_options(fn: F) -> F:
    for option in reversed(
        (
            db_option,
            click.option(
                "--format",
                "fmt",
                type=click.Choice(exports.FORMATS),
                default="jsonl",
                show_default=True,
            ),
            click.option(
                "--out",
                "out",
                default="-",
                show_default=True,
                type=click.Path(dir_okay=False, allow_dash=True),
                help="The file to write (- for standard output).",
            ),
            click.option("--case", "case_id", type=CASE_ID, help="Only this case's rows."),
            click.option(
                "--institution", type=CODE, help="Only the rows concerning this institution."
            ),
            click.option(
                "--from", "start", callback=_time, help="From this time (ISO 8601), included."
            ),
            click.option("--to", "end", callback=_time, help="To this time (ISO 8601), excluded."),
        )
    ):
        fn = option(fn)
    return fn


@contextmanager
def _output(out: str, what: str) -> Iterator[tuple[IO[str], exports.Progress | None]]:
    """The file to write and, when it is a file, a progress bar on the terminal."""
    if out == "-":
        yield sys.stdout, None
        return
    with open(out, "w", encoding="utf-8", newline="") as f:
        columns = (
            TextColumn(f"exporting {what}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=make_console(stderr=True), transient=True) as bar:
            task = bar.add_task(what, total=None)

            def progress(done: int, total: int | None) -> None:
                bar.update(task, completed=done, total=total)

            yield f, progress


def run_export(
    export: Callable[..., int],
    database_url: str,
    out: str,
    fmt: str,
    what: str,
    case_id: str | None,
    institution: str | None,
    start: datetime | None,
    end: datetime | None,
) -> int:
    """Run one export to `out` with its progress bar; how many rows it wrote."""
    store = open_store(database_url)
    try:
        with _output(out, what) as (f, progress):
            return export(
                store,
                f,
                fmt,
                case_id=case_id,
                institution=institution,
                start=start,
                end=end,
                progress=progress,
            )
    finally:
        store.dispose()
