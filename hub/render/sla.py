"""How the case clocks look to people: `stophub sla` tables, the SLA log, the live board.

Every function takes the time it judges against (`now`, or a Clock for the board), so the
same code draws the real-time board and the tests' frames on a ManualClock. None of it shows
people (docs/personal-data.md): the SLA log's details are the hub's own words about the clock.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from rich.cells import cell_len
from rich.console import Console, Group, JustifyMethod, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from hub.domain.cases import Case, CaseState
from hub.domain.clocks import CaseClock, ClockState, SlaEntry
from hub.domain.institutions import ContactRole
from hub.domain.wording import yuan
from hub.domain.workdays import CHINA_TZ, WorkingDays
from hub.render.wording import Times, duration, stamp
from hub.service.ports import Clock, UnitOfWork, UnitOfWorkFactory
from hub.system.calendar import calendar_status

# Under this share of its window left, a running clock turns yellow.
WARN_FRACTION = 0.2

STATE_STYLE = {
    ClockState.OPEN: "bold",
    ClockState.MET: "green",
    ClockState.MISSED: "bold red",
    ClockState.ENDED: "magenta",
}

EVENT_STYLE = {
    "started": "cyan",
    "met": "green",
    "missed": "bold red",
    "reminder": "yellow",
    "renewal_reminder": "yellow",
    "breach": "bold red",
    "regulator": "bold magenta",
    "expire": "magenta",
}


# ---- judging a clock ---------------------------------------------------------------------------


def time_left(clock: CaseClock, now: datetime) -> timedelta:
    """Until the deadline; negative once it has passed."""
    return clock.deadline_at - now


def fraction_left(clock: CaseClock, now: datetime) -> float:
    """The share of the clock's window still left (negative when overdue)."""
    window = (clock.deadline_at - clock.started_at).total_seconds()
    if window <= 0:
        return 0.0 if now <= clock.deadline_at else -1.0
    return time_left(clock, now).total_seconds() / window


def countdown_style(clock: CaseClock, now: datetime) -> str:
    """green with more than 20% of the window left, yellow under that, red once overdue."""
    if now > clock.deadline_at:
        return "bold red"
    if fraction_left(clock, now) < WARN_FRACTION:
        return "bold yellow"
    return "green"


def countdown(clock: CaseClock, now: datetime) -> Text:
    """Time left: "4m 0s" while running, "1m 0s overdue" in red once it has passed."""
    left = time_left(clock, now)
    text = f"{duration(-left)} overdue" if left < timedelta(0) else duration(left)
    return Text(text, style=countdown_style(clock, now))


def is_breached(clock: CaseClock, now: datetime) -> bool:
    """Its deadline passed before it was met: breached, missed, or running past it."""
    return (
        clock.breached
        or clock.state is ClockState.MISSED
        or (clock.state is ClockState.OPEN and now > clock.deadline_at)
    )


def lateness(clock: CaseClock, now: datetime) -> tuple[timedelta, str]:
    """How late the clock is (or was) and a word on how it stands."""
    if clock.state is ClockState.MISSED and clock.stopped_at is not None:
        return clock.stopped_at - clock.deadline_at, f"met late ({clock.stopped_by})"
    if clock.state is ClockState.OPEN:
        return now - clock.deadline_at, "still open"
    if clock.state is ClockState.ENDED:
        return now - clock.deadline_at, "never met (ladder ended)"
    return timedelta(0), clock.state.value


def deadline(clock: CaseClock, written: str) -> str:
    """A deadline as written, marked when working days went into it without the official
    holiday calendar of its year (docs/operations.md, "Holiday calendar")."""
    return f"{written} (estimated)" if clock.deadline_estimated else written


def _short_order(clock: CaseClock) -> str:
    if not clock.order_id:
        return ""
    return clock.order_id.removeprefix(f"{clock.case_id}-")


def _relative(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return ""
    delta = moment - now
    if delta < timedelta(0):
        return f"{stamp(moment)} (due {duration(-delta)} ago)"
    return f"{stamp(moment)} (in {duration(delta)})"


# ---- `stophub sla` -----------------------------------------------------------------------------


def clocks_table(clocks: Sequence[CaseClock], now: datetime, *, title: str) -> Table:
    """Running clocks by time left (met and ended ones after them, when asked for)."""
    table = Table(title=title, title_justify="left")
    table.add_column("time left", justify="right", no_wrap=True)
    for col in ("deadline", "clock", "responsible", "case", "order", "state", "next step", "when"):
        table.add_column(col)
    for c in clocks:
        running = c.state is ClockState.OPEN
        table.add_row(
            countdown(c, now) if running else Text("—", style="dim"),
            deadline(c, stamp(c.deadline_at)),
            c.kind,
            c.responsible,
            c.case_id,
            _short_order(c),
            Text(
                c.state.value + (" (breached)" if running and c.breached else ""),
                style=STATE_STYLE.get(c.state, ""),
            ),
            c.next_step,
            _relative(c.next_step_at, now)
            if running
            else (f"stopped {stamp(c.stopped_at)}" if c.stopped_at else ""),
        )
    return table


def breaches_table(clocks: Sequence[CaseClock], now: datetime, *, title: str) -> Table:
    """Clocks whose deadline passed before they were met, with how late."""
    table = Table(title=title, title_justify="left")
    table.add_column("late by", justify="right", no_wrap=True)
    for col in ("state", "deadline", "clock", "responsible", "case", "order", "stopped", "next"):
        table.add_column(col)
    for c in clocks:
        late, how = lateness(c, now)
        table.add_row(
            Text(duration(late), style="bold red"),
            Text(how, style=STATE_STYLE.get(c.state, "")),
            deadline(c, stamp(c.deadline_at)),
            c.kind,
            c.responsible,
            c.case_id,
            _short_order(c),
            f"{stamp(c.stopped_at)} by {c.stopped_by}" if c.stopped_at else "",
            f"{c.next_step} {_relative(c.next_step_at, now)}" if c.next_step else "",
        )
    return table


def _late_mark(entry: SlaEntry) -> Text:
    if entry.event == "missed":
        return Text(f"{duration(timedelta(seconds=entry.late_seconds))} past deadline", "bold red")
    if entry.late_seconds:
        return Text(f"fired {duration(timedelta(seconds=entry.late_seconds))} late", "bold red")
    return Text("")


def sla_log_view(
    clocks: Sequence[CaseClock], entries: dict[str, list[SlaEntry]], now: datetime
) -> Group:
    """Each clock of a case with its SLA log: started, reminders, breach, ..., met or missed."""
    parts: list[RenderableType] = []
    for c in sorted(clocks, key=lambda c: (c.started_at, c.kind, c.clock_id)):
        head = Text.assemble(
            (c.kind, "bold"),
            f" clock {c.clock_id}",
            f" · order {_short_order(c)}" if c.order_id else "",
            " · ",
            (c.state.value, STATE_STYLE.get(c.state, "")),
            f" · {c.responsible} must act by {deadline(c, stamp(c.deadline_at))}",
        )
        if c.state is ClockState.OPEN:
            head.append(" · time left ")
            head.append_text(countdown(c, now))
        log = Table()
        for col in ("time", "+", "event", "due", "late", "detail"):
            log.add_column(col, overflow="fold")
        for e in entries.get(c.clock_id, []):
            log.add_row(
                stamp(e.at),
                duration(e.at - c.started_at),
                Text(e.event, style=EVENT_STYLE.get(e.event, "")),
                stamp(e.due_at),
                _late_mark(e),
                e.detail,
            )
        parts.extend((Text(""), head, log))
    if not parts:
        parts.append(Text("no clocks", style="dim"))
    return Group(*parts)


# ---- `stophub board` ---------------------------------------------------------------------------

OPEN_CASE_STATES = (CaseState.REPORTED, CaseState.VERIFIED)
# The board's "last hour": clocks that breached or were met late within it.
RECENT = timedelta(hours=1)
RECENT_SHOWN = 20


@dataclass
class BoardCase:
    case_id: str
    case: Case | None
    clocks: list[CaseClock] = field(default_factory=list)

    def urgency(self) -> datetime | None:
        return min((c.deadline_at for c in self.clocks), default=None)


@dataclass
class Board:
    """What one frame of the board shows, read at `now`."""

    now: datetime
    cases: list[BoardCase]
    # Clocks that breached or were met late in the last hour, the latest deadline first.
    recent: list[CaseClock] = field(default_factory=list)
    # The responsible institutions' duty phones: their PRIMARY duty contact's.
    phones: dict[str, str] = field(default_factory=dict)
    # While this year or the next has no official holiday calendar, the line that says so
    # (hub.system.calendar.calendar_status): working-day deadlines are estimates meanwhile.
    calendar: str | None = None

    def running(self) -> list[CaseClock]:
        return [c for b in self.cases for c in b.clocks]

    def breached_now(self) -> int:
        """Running clocks past their deadline: the red ones."""
        return sum(1 for c in self.running() if self.now > c.deadline_at)


def load_board(uow_factory: UnitOfWorkFactory, now: datetime, *, limit: int = 50) -> Board:
    """Open cases with their running clocks, the most urgent first (at most `limit` cases),
    the clocks breached or met late in the hour before `now`, and the duty phones of the
    institutions responsible for them."""
    by_case: dict[str, BoardCase] = {}
    with uow_factory(read_only=True) as uow:
        running = uow.clocks.query(
            institution=None,
            case_id=None,
            open_only=True,
            breached_only=False,
            limit=20 * limit,
            offset=0,
        )
        for clock in running:  # by deadline: the first cases met are the most urgent
            if clock.case_id not in by_case:
                if len(by_case) >= limit:
                    continue
                by_case[clock.case_id] = BoardCase(clock.case_id, uow.cases.get(clock.case_id))
            by_case[clock.case_id].clocks.append(clock)
        for state in OPEN_CASE_STATES:
            for found in uow.cases.list(state, limit, None):
                if len(by_case) >= limit:
                    break
                by_case.setdefault(found.case_id, BoardCase(found.case_id, found))
        since = now - RECENT
        recent = {c.clock_id: c for c in uow.clocks.breached_since(since, RECENT_SHOWN)}
        # Past its deadline but not yet marked by the sweep's breach step.
        for clock in running:
            if since <= clock.deadline_at < now:
                recent.setdefault(clock.clock_id, clock)
        codes = {c.responsible for c in (*running, *recent.values())}
        phones = {code: phone for code in sorted(codes) if (phone := _duty_phone(uow, code))}

    def most_urgent_first(b: BoardCase) -> tuple[bool, float, str]:
        first = b.urgency()
        return (first is None, first.timestamp() if first else 0.0, b.case_id)

    latest_first = sorted(recent.values(), key=lambda c: (c.deadline_at, c.clock_id), reverse=True)
    return Board(
        now, sorted(by_case.values(), key=most_urgent_first), latest_first[:RECENT_SHOWN], phones
    )


@runtime_checkable
class BoardSource(Protocol):
    """A board's frames over gRPC, as a member sees them (hub/cli/remote.py `Remote`)."""

    def board(self, now: datetime, *, limit: int) -> Board: ...


def _duty_phone(uow: UnitOfWork, code: str) -> str:
    member = uow.institutions.get(code)
    if member is None:
        return ""
    primary = (c for c in member.contacts if c.role is ContactRole.PRIMARY)
    return next((c.phone for c in primary), "")


def _bar(clock: CaseClock, now: datetime, width: int = 10) -> Text:
    share = max(0.0, min(1.0, fraction_left(clock, now)))
    filled = round(share * width)
    style = countdown_style(clock, now)
    if now > clock.deadline_at:
        return Text("!" * width, style=style)
    return Text("█" * filled + "·" * (width - filled), style=style)


def _next_step(clock: CaseClock, now: datetime) -> str:
    if not clock.next_step or clock.next_step_at is None:
        return ""
    delta = clock.next_step_at - now
    if delta < timedelta(0):
        return f"{clock.next_step} due {duration(-delta)} ago"
    return f"{clock.next_step} in {duration(delta)}"


def _how_late(clock: CaseClock, now: datetime) -> Text:
    """How a clock of the last hour stands: still open past its deadline, met late, or
    never met."""
    late, how = lateness(clock, now)
    if clock.state is ClockState.OPEN:
        return Text(f"{duration(late)} overdue, open", style="bold red")
    if clock.state is ClockState.MISSED:
        return Text(f"met {duration(late)} late", style="red")
    return Text(how, style=STATE_STYLE.get(clock.state, ""))


@dataclass
class _Column:
    """A column the board may show; `cells` holds one cell per row."""

    header: str
    cells: list[Text]
    justify: JustifyMethod = "left"

    def width(self) -> int:
        return max([cell_len(self.header), *(c.cell_len for c in self.cells)])


GAP = 2  # spaces between two columns


def _fit(columns: Sequence[_Column], width: int) -> list[_Column]:
    """The columns, most important first, as many as fit `width` whole: the board drops
    columns, never cuts one."""
    chosen: list[_Column] = []
    used = -GAP
    for column in columns:
        used += GAP + column.width()
        if used > width and chosen:
            break
        chosen.append(column)
    return chosen


def _table(columns: Sequence[_Column], rows: int) -> Table:
    table = Table(box=None, padding=(0, GAP, 0, 0), pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column.header, justify=column.justify, no_wrap=True)
    for i in range(rows):
        table.add_row(*(column.cells[i] for column in columns))
    return table


def _clock_columns(board: Board) -> list[_Column]:
    now = board.now
    rows: list[tuple[BoardCase, CaseClock | None, bool]] = []
    for b in board.cases:
        if not b.clocks:
            rows.append((b, None, True))
        rows.extend((b, c, i == 0) for i, c in enumerate(b.clocks))
    # With `now`: a deadline on another day than the board's own (in its header) shows it.
    deadlines = Times([now, *(c.deadline_at for _, c, _ in rows if c is not None)], unit="minutes")

    def cell(value: str, style: str = "") -> Text:
        return Text(value, style=style)

    def per_row(fill: Callable[[BoardCase, CaseClock], Text], blank: str = "") -> list[Text]:
        return [fill(b, c) if c is not None else cell(blank, "dim") for b, c, _ in rows]

    def per_case(fill: Callable[[Case], str]) -> list[Text]:
        return [cell(fill(b.case) if first and b.case else "") for b, _, first in rows]

    return [
        _Column("case", [cell(b.case_id if first else "", "bold") for b, _, first in rows]),
        _Column("time left", per_row(lambda b, c: countdown(c, now), "no running clock"), "right"),
        _Column("clock", per_row(lambda b, c: cell(c.kind))),
        _Column("who acts", per_row(lambda b, c: cell(c.responsible))),
        _Column("duty phone", per_row(lambda b, c: cell(board.phones.get(c.responsible, "")))),
        _Column("next step", per_row(lambda b, c: cell(_next_step(c, now)))),
        _Column(
            deadlines.header("deadline", day=False),
            per_row(lambda b, c: cell(deadline(c, deadlines(c.deadline_at)))),
        ),
        _Column("state", per_case(lambda case: case.state.value)),
        _Column("window left", per_row(lambda b, c: _bar(c, now))),
        _Column("order", per_row(lambda b, c: cell(_short_order(c)))),
        _Column("loss", per_case(lambda case: yuan(case.loss_fen)), "right"),
        _Column("reported by", per_case(lambda case: case.reporting_institution)),
    ]


def _recent_columns(board: Board) -> list[_Column]:
    deadlines = Times([board.now, *(c.deadline_at for c in board.recent)], unit="seconds")
    return [
        _Column("case", [Text(c.case_id, style="bold") for c in board.recent]),
        _Column("clock", [Text(c.kind) for c in board.recent]),
        _Column("how", [_how_late(c, board.now) for c in board.recent]),
        _Column("who acts", [Text(c.responsible) for c in board.recent]),
        _Column(
            deadlines.header("deadline", day=False),
            [Text(deadline(c, deadlines(c.deadline_at))) for c in board.recent],
        ),
    ]


def _wrap(parts: Sequence[Text], width: int) -> list[Text]:
    """`parts` joined by " · " on as few lines of `width` as they take, broken between parts."""
    lines: list[Text] = []
    for part in parts:
        if lines and lines[-1].cell_len + 3 + part.cell_len <= width:
            lines[-1].append(" · ").append_text(part)
        else:
            lines.append(part.copy())
    return lines


LEGEND = "green: > 20% left · yellow: under 20% · red: overdue · Ctrl-C to leave"


def board_view(board: Board, *, width: int, height: int | None = None) -> RenderableType:
    """One frame of the board, `width` columns wide and at most `height` lines high (None: as
    high as it takes). Narrower, it shows fewer columns (the case, time left, clock, who acts
    and their duty phone come first); lower, fewer rows, saying how many it left out."""
    running = board.running()
    breached = board.breached_now()
    head = [
        Text("StopHub board", style="bold"),
        Text(stamp(board.now)),
        Text(f"{len(board.cases)} open case(s), {len(running)} running clock(s)"),
        Text(f"{breached} breached now", style="bold red" if breached else "green"),
        Text(
            f"{len(board.recent)} breached or met late in the last hour",
            style="red" if board.recent else "",
        ),
    ]
    if board.calendar is not None:
        head.append(Text(f"CALENDAR: {board.calendar}", style="bold yellow"))
    top = _wrap(head, width)
    if not board.cases and not board.recent:
        return Group(*top, Text(""), Text("no open cases", style="dim"))

    clock_columns = _fit(_clock_columns(board), width)
    shown_headers = {c.header for c in clock_columns}
    phones: list[Text] = []
    if "duty phone" not in shown_headers:
        responsible = sorted({c.responsible for c in running} & board.phones.keys())
        calls = [Text(f"{code} {board.phones[code]}") for code in responsible]
        if calls:
            calls[0] = Text.assemble(("duty phones: ", "bold"), calls[0])
        phones = _wrap(calls, width)
    rows = len(clock_columns[0].cells)
    recent_columns = _fit(_recent_columns(board), width)
    recent_rows = len(board.recent)
    legend = _wrap([Text(p) for p in LEGEND.split(" · ")], width)
    if height is not None:
        # Whatever the rows: the header and a blank line, the table's header, the phones, the
        # legend; the last hour's blank line, title and header.
        fixed = len(top) + 2 + len(phones) + len(legend) + (3 if recent_rows else 0)
        rows, recent_rows = _rows_that_fit(height - fixed, rows, recent_rows)

    parts: list[RenderableType] = [*top, Text("")]
    parts.append(_table(clock_columns, rows) if board.cases else Text("no open cases", "dim"))
    left_out = len(clock_columns[0].cells) - rows
    if left_out:
        parts.append(Text(f"… {left_out} more row(s): a taller window, or `stophub sla`", "dim"))
    parts += phones
    if board.recent:
        title = Text("breached or met late in the last hour", style="bold red")
        parts += [Text(""), title]
        if recent_rows:
            parts.append(_table(recent_columns, recent_rows))
        left_out = len(board.recent) - recent_rows
        if left_out:
            parts.append(Text(f"… {left_out} more: `stophub sla --breaches`", "dim"))
    parts += legend
    return Group(*parts)


def _rows_that_fit(room: int, running: int, recent: int) -> tuple[int, int]:
    """How many rows of the running clocks and of the last hour a frame with `room` lines
    for them shows: all when they fit; else the last hour gets up to a third, and a table
    that leaves rows out says so on a line taken from its rows."""
    if running + recent <= room:
        return running, recent
    recent_rows = min(recent, max(1, room // 3))
    running_rows = min(running, room - recent_rows)
    recent_rows = min(recent, room - running_rows)
    if running_rows < running:
        running_rows -= 1
    if recent_rows < recent:
        recent_rows -= 1
    return max(running_rows, 0), max(recent_rows, 0)


def render_board(
    source: UnitOfWorkFactory | BoardSource,
    clock: Clock,
    *,
    width: int,
    height: int | None = None,
    limit: int = 50,
    calendar: WorkingDays | None = None,
) -> RenderableType:
    """Load (from the database, or over gRPC) and draw one frame, judged at `clock`'s time;
    with the hub's `calendar`, it says while its working-day deadlines are estimates."""
    now = clock.now()
    if isinstance(source, BoardSource):
        board = source.board(now, limit=limit)
    else:
        board = load_board(source, now, limit=limit)
    if calendar is not None:
        board.calendar = calendar_status(calendar, now.astimezone(CHINA_TZ).date())
    return board_view(board, width=width, height=height)


def wait_for_frame(resized: threading.Event, seconds: float) -> None:
    """Until the next frame is due, or the terminal changed size."""
    resized.wait(seconds)
    resized.clear()


def run_board(
    source: UnitOfWorkFactory | BoardSource,
    clock: Clock,
    console: Console,
    *,
    refresh: float,
    limit: int = 50,
    calendar: WorkingDays | None = None,
) -> None:
    """Draw the board every `refresh` seconds until Ctrl-C. On a terminal it takes the whole
    screen and draws each frame for the screen's size at that moment, at once when the size
    changes, so a resize never leaves the old frame behind; the last frame stays on the
    screen after it. Elsewhere (a pipe) the last frame is what it writes."""
    on_screen = console.is_terminal
    resized = threading.Event()

    def frame(*, fill: bool) -> RenderableType:
        width, height = console.size
        return render_board(
            source,
            clock,
            width=width,
            height=height if fill else None,
            limit=limit,
            calendar=calendar,
        )

    before = None
    # Signal handlers belong to the main thread; a board run elsewhere redraws on its timer.
    main = threading.current_thread() is threading.main_thread()
    if on_screen and main and hasattr(signal, "SIGWINCH"):
        before = signal.signal(signal.SIGWINCH, lambda *_: resized.set())
    try:
        with Live(
            frame(fill=on_screen), console=console, auto_refresh=False, screen=on_screen
        ) as live:
            while True:
                wait_for_frame(resized, refresh)
                live.update(frame(fill=on_screen), refresh=True)
    except KeyboardInterrupt:
        pass
    finally:
        if before is not None:
            signal.signal(signal.SIGWINCH, before)
    if on_screen:
        console.print(frame(fill=False))
