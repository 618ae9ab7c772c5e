"""How the case clocks look to people: `stophub sla` tables, the SLA log, the live board.

Every function takes the time it judges against (`now`, or a Clock for the board), so the
same code draws the real-time board and the tests' frames on a ManualClock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from hub.cli.render.wording import duration, stamp
from hub.domain.cases import Case, CaseState
from hub.domain.clocks import CaseClock, ClockState, SlaEntry
from hub.domain.wording import yuan
from hub.service.ports import Clock, UnitOfWorkFactory

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
    """Time left: "4m 0s" while running, "-1m 0s overdue" in red once it has passed."""
    left = time_left(clock, now)
    text = duration(left) + (" overdue" if left < timedelta(0) else "")
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
            stamp(c.deadline_at),
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
            stamp(c.deadline_at),
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
            f" · {c.responsible} must act by {stamp(c.deadline_at)}",
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


@dataclass
class BoardCase:
    case_id: str
    case: Case | None
    clocks: list[CaseClock] = field(default_factory=list)

    def urgency(self) -> datetime | None:
        return min((c.deadline_at for c in self.clocks), default=None)


def load_board(uow_factory: UnitOfWorkFactory, *, limit: int = 50) -> list[BoardCase]:
    """Open cases with their running clocks, the most urgent first; at most `limit` cases."""
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

    def most_urgent_first(b: BoardCase) -> tuple[bool, float, str]:
        first = b.urgency()
        return (first is None, first.timestamp() if first else 0.0, b.case_id)

    return sorted(by_case.values(), key=most_urgent_first)


def _bar(clock: CaseClock, now: datetime, width: int = 20) -> Text:
    share = max(0.0, min(1.0, fraction_left(clock, now)))
    filled = round(share * width)
    style = countdown_style(clock, now)
    if now > clock.deadline_at:
        return Text("!" * width, style=style)
    return Text("█" * filled + "·" * (width - filled), style=style)


def board_view(cases: Iterable[BoardCase], now: datetime) -> RenderableType:
    """One frame of the board at `now`."""
    cases = list(cases)
    table = Table(expand=False, show_lines=False)
    for col in ("case", "state", "reported by", "loss", "clock", "responsible", "order"):
        table.add_column(col, no_wrap=True)
    table.add_column("time left", justify="right", no_wrap=True)
    table.add_column("window", no_wrap=True)
    table.add_column("next step", no_wrap=True)
    overdue = 0
    for b in cases:
        state = b.case.state.value if b.case is not None else "?"
        reporter = b.case.reporting_institution if b.case is not None else ""
        loss = yuan(b.case.loss_fen) if b.case is not None else ""
        if not b.clocks:
            table.add_row(
                Text(b.case_id, style="bold"),
                state,
                reporter,
                loss,
                Text("no running clock", style="dim"),
                *[""] * 5,
            )
            continue
        for i, c in enumerate(b.clocks):
            overdue += now > c.deadline_at
            first = i == 0
            table.add_row(
                Text(b.case_id, style="bold") if first else "",
                state if first else "",
                reporter if first else "",
                loss if first else "",
                c.kind,
                c.responsible,
                _short_order(c),
                countdown(c, now),
                _bar(c, now),
                f"{c.next_step} {_relative(c.next_step_at, now)}" if c.next_step else "",
            )
        table.add_section()
    clocks = sum(len(b.clocks) for b in cases)
    title = Text.assemble(
        ("StopHub board", "bold"),
        f" · {stamp(now)} · {len(cases)} open case(s), {clocks} running clock(s)",
    )
    if overdue:
        title.append(f" · {overdue} overdue", style="bold red")
    body: RenderableType = table if cases else Text("no open cases", style="dim")
    return Panel(
        body,
        title=title,
        title_align="left",
        subtitle="green: > 20% left · yellow: under 20% · red: overdue · Ctrl-C to leave",
        subtitle_align="left",
        expand=False,
    )


def render_board(
    uow_factory: UnitOfWorkFactory, clock: Clock, *, limit: int = 50
) -> RenderableType:
    """Load and draw one frame; the clock is the board's only source of time."""
    cases = load_board(uow_factory, limit=limit)
    return board_view(cases, clock.now())
