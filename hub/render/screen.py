"""The screen the `stophub` command prints on: one kind of console (what it is given, as
given), and how a view is fitted to a terminal's width or, piped, to the width its content
needs, never cutting a word or an id."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.panel import Panel
from rich.table import Table

ALARM = "bold red"


def make_console(**options: Any) -> Console:
    """A console that prints what it is given, as given: no emoji codes (`:ab:` in a hex
    fingerprint became an emoji), no markup (a holder name a bank sent could carry `[bold]`),
    no highlighting of numbers and ids. Styles come from rich Text objects only."""
    return Console(emoji=False, markup=False, highlight=False, **options)


console = make_console()

NARROWEST = 80  # piped output is never narrower than a classic terminal


def show(*renderables: RenderableType) -> None:
    """Print for people: on a terminal at its width, piped at the width the content needs
    (so nothing is cut, and no line is padded to a guessed width). No word is ever cut, an
    id least of all: `fit` wraps table columns at spaces, and shows the rows of a table
    that cannot fit even so as records, one field a line."""
    out = make_console() if console.is_terminal else make_console(width=NARROWEST)
    out.print(*(for_screen(out, r) for r in renderables), crop=False)


def for_screen(out: Console, renderable: RenderableType) -> RenderableType:
    """`renderable` fitted to `out`: a terminal's width, or, when `out` is not a terminal,
    `out` first widened to what `renderable` needs."""
    if not out.is_terminal:
        measuring = make_console(width=100_000)
        needed = Measurement.get(measuring, measuring.options, renderable).maximum
        out.width = max(out.width, needed)
    return fit(renderable, out.width)


def fit(renderable: RenderableType, width: int) -> RenderableType:
    """`renderable` for a screen `width` columns wide, with no word cut: each table's
    columns narrowed to no less than their longest word, or, where even that is too wide,
    its rows as records."""
    if isinstance(renderable, Group):
        renderable.renderables[:] = [fit(r, width) for r in renderable.renderables]
    elif isinstance(renderable, Panel):
        renderable.renderable = fit(renderable.renderable, width - 4)  # its rules and padding
    elif isinstance(renderable, Table):
        return _fit_table(renderable, width)
    return renderable


def _fit_table(table: Table, width: int) -> RenderableType:
    measuring = make_console(width=100_000)
    least, most = [], []
    for column in table.columns:
        sizes = [
            Measurement.get(measuring, measuring.options, cell)
            for cell in (column.header, *column.cells)
        ]
        low = max((m.minimum for m in sizes), default=1)
        high = max((m.maximum for m in sizes), default=1)
        fixed = column.width if column.width is not None else high if column.no_wrap else None
        least.append(fixed if fixed is not None else max(low, column.min_width or 0))
        most.append(fixed if fixed is not None else high)
    _, right, _, left = table.padding
    room = width - (left + right) * (len(table.columns) - (0 if table.pad_edge else 1))
    room -= (len(table.columns) - 1 + 2 * table.show_edge) if table.box else 0
    if sum(most) <= room:
        return table
    if sum(least) > room:
        return _records(table)
    # Narrow the columns in proportion to how far each may give, never below its least.
    spare = sum(most) - sum(least)
    cut = sum(most) - room
    widths = [hi - (hi - lo) * cut // spare for lo, hi in zip(least, most, strict=True)]
    for i in sorted(range(len(widths)), key=lambda i: least[i] - widths[i]):
        if sum(widths) <= room:
            break
        if widths[i] > least[i]:
            widths[i] -= 1
    for column, chosen in zip(table.columns, widths, strict=True):
        column.width = chosen
    return table


def _records(table: Table) -> RenderableType:
    """The rows of `table`, each as a record: one field a line, its header before it."""
    columns = [(c.header, list(c.cells)) for c in table.columns]
    rows = max((len(cells) for _, cells in columns), default=0)
    parts: list[RenderableType] = []
    if table.title is not None:
        parts.append(table.title)
    for row in range(rows):
        record = Table.grid(padding=(0, 2))
        record.add_column(style="bold", no_wrap=True)
        record.add_column(overflow="fold")
        for header, cells in columns:
            record.add_row(header, cells[row] if row < len(cells) else "")
        parts += [record, ""]
    return Group(*parts)
