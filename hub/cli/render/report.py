"""The SLA report (`stophub report sla`): figures from the clocks and the SLA log, as one
self-contained HTML file a compliance officer can open anywhere.

`gather` reads the clocks started in a period and their SLA log entries; `summarise` and
`breaches_by_day` are pure functions of those rows; `render_html` draws the report with inline
CSS and inline SVG only (no script, no network). Every figure comes from the `clocks` and
`sla_log` rows as stored, so the report's numbers are the log's numbers.

Definitions (repeated in the report's footnote):

* a clock's duration is stopped_at - started_at, for clocks that were stopped (met or
  missed); open and ended clocks are counted but are not in the durations;
* median: `statistics.median`; 90th percentile: `statistics.quantiles(n=10,
  method="inclusive")[8]` (linear interpolation between closest ranks, the data's minimum and
  maximum as the 0th and 100th percentiles); with one duration, both are that duration;
* deadline: the clock's window, deadline_at - started_at, the most common one of the row
  (the shortest among equally common ones);
* breached: the clock was missed (stopped after its deadline) or its breach step fired;
* escalations: SLA log entries `reminder`, `breach` and `regulator` of the row's clocks;
* a breach is dated at its clock's deadline (UTC day) in the chart of breaches over time.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from html import escape
from typing import Any

from sqlalchemy import select, type_coerce
from sqlalchemy.orm import Session

from hub.cli.render.case import duration, phases
from hub.domain.cases import Case
from hub.service.ports import UnitOfWork
from hub.store.tables import UTCDateTime, clocks, sla_log

ESCALATIONS = frozenset({"reminder", "breach", "regulator"})
STOPPED = frozenset({"met", "missed"})
PERCENTILE_NOTE = (
    "Durations are stopped_at − started_at of clocks that were stopped (met or missed); open "
    "and ended clocks are counted but not in the durations. Median: Python statistics.median. "
    "90th percentile (p90): statistics.quantiles(durations, n=10, method='inclusive')[8], "
    "linear interpolation between closest ranks with the smallest and largest durations as "
    "the 0th and 100th percentiles; with a single duration, median and p90 are that duration. "
    "Deadline: the clock's window (deadline_at − started_at), the most common one in the row "
    "(the shortest of equally common ones). Breached: missed (stopped after the deadline) or "
    "its breach step fired. Escalations: the SLA log's reminder, breach and regulator entries "
    "of the row's clocks. A breach is dated at its clock's deadline (UTC) in the chart of "
    "breaches over time. All times are UTC."
)


# ---- rows as read -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClockRow:
    clock_id: str
    case_id: str
    order_id: str
    kind: str
    responsible: str
    started_at: datetime
    deadline_at: datetime
    state: str
    breached: bool
    stopped_at: datetime | None
    stopped_by: str

    @property
    def window(self) -> timedelta:
        return self.deadline_at - self.started_at

    @property
    def duration(self) -> timedelta | None:
        if self.state not in STOPPED or self.stopped_at is None:
            return None
        return self.stopped_at - self.started_at

    @property
    def is_breached(self) -> bool:
        return self.breached or self.state == "missed"


@dataclass(frozen=True)
class LogRow:
    id: int
    clock_id: str
    case_id: str
    order_id: str
    kind: str
    event: str
    at: datetime
    due_at: datetime | None
    responsible: str
    late_seconds: float
    detail: str


@dataclass(frozen=True)
class CaseEventRow:
    at: datetime
    kind: str
    actor: str
    summary: str


@dataclass
class CaseTimeline:
    case_id: str
    found: bool
    reporting_institution: str = ""
    state: str = ""
    created_at: datetime | None = None
    events: list[CaseEventRow] = field(default_factory=list)
    clocks: list[ClockRow] = field(default_factory=list)
    log: list[LogRow] = field(default_factory=list)
    phases: list[tuple[str, timedelta | None]] = field(default_factory=list)


# ---- figures ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SummaryRow:
    """One institution's figures for one clock kind."""

    institution: str
    clock: str
    count: int
    stopped: int
    median_seconds: float | None
    p90_seconds: float | None
    min_seconds: float | None
    max_seconds: float | None
    deadline_seconds: float
    met: int
    missed: int
    ended: int
    open: int
    breached: int
    escalations: int


@dataclass
class SlaReport:
    start: datetime
    end: datetime
    generated_at: datetime | None
    clocks: list[ClockRow]
    log: list[LogRow]
    cases: list[CaseTimeline] = field(default_factory=list)

    @property
    def rows(self) -> list[SummaryRow]:
        return summarise(self.clocks, self.log)

    @property
    def breaches(self) -> dict[str, dict[date, int]]:
        return breaches_by_day(self.clocks)

    @property
    def days(self) -> list[date]:
        return days_of(self.start, self.end)


def median_p90(values: Sequence[float]) -> tuple[float | None, float | None]:
    """The median and the 90th percentile (inclusive method), or None without values."""
    if not values:
        return None, None
    if len(values) == 1:
        return values[0], values[0]
    return statistics.median(values), statistics.quantiles(values, n=10, method="inclusive")[8]


def common_window(windows: Iterable[timedelta]) -> timedelta:
    counts = Counter(windows)
    if not counts:
        return timedelta(0)
    best = max(counts.values())
    return min(w for w, n in counts.items() if n == best)


def summarise(clock_rows: Sequence[ClockRow], log_rows: Sequence[LogRow]) -> list[SummaryRow]:
    """Per institution (the responsible one) and clock kind, sorted by both."""
    groups: dict[tuple[str, str], list[ClockRow]] = defaultdict(list)
    for c in clock_rows:
        groups[(c.responsible, c.kind)].append(c)
    escalations = Counter(r.clock_id for r in log_rows if r.event in ESCALATIONS)
    out = []
    for (institution, kind), members in sorted(groups.items()):
        durations = [d.total_seconds() for c in members if (d := c.duration) is not None]
        median, p90 = median_p90(durations)
        states = Counter(c.state for c in members)
        out.append(
            SummaryRow(
                institution=institution,
                clock=kind,
                count=len(members),
                stopped=len(durations),
                median_seconds=median,
                p90_seconds=p90,
                min_seconds=min(durations) if durations else None,
                max_seconds=max(durations) if durations else None,
                deadline_seconds=common_window(c.window for c in members).total_seconds(),
                met=states["met"],
                missed=states["missed"],
                ended=states["ended"],
                open=states["open"],
                breached=sum(1 for c in members if c.is_breached),
                escalations=sum(escalations[c.clock_id] for c in members),
            )
        )
    return out


def breaches_by_day(clock_rows: Sequence[ClockRow]) -> dict[str, dict[date, int]]:
    """Institution -> UTC day of the deadline -> breached clocks."""
    out: dict[str, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    for c in clock_rows:
        if c.is_breached:
            out[c.responsible][c.deadline_at.astimezone(UTC).date()] += 1
    return {inst: dict(days) for inst, days in sorted(out.items())}


def days_of(start: datetime, end: datetime) -> list[date]:
    """The UTC days the period [start, end) touches."""
    first = start.astimezone(UTC).date()
    last = (end.astimezone(UTC) - timedelta(microseconds=1)).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


# ---- reading ------------------------------------------------------------------------------------


def _session(uow: UnitOfWork) -> Session:
    session = getattr(uow, "session", None)
    if not isinstance(session, Session):
        raise TypeError("the SLA report reads an SQL store (a unit of work with a session)")
    return session


def _clock_row(r: Any) -> ClockRow:
    return ClockRow(
        clock_id=r.clock_id,
        case_id=r.case_id,
        order_id=r.order_id,
        kind=r.kind,
        responsible=r.responsible,
        started_at=r.started_at,
        deadline_at=r.deadline_at,
        state=str(getattr(r.state, "value", r.state)),
        breached=bool(r.breached),
        stopped_at=r.stopped_at,
        stopped_by=r.stopped_by,
    )


def _log_row(r: Any) -> LogRow:
    return LogRow(
        id=int(r.id),
        clock_id=r.clock_id,
        case_id=r.case_id,
        order_id=r.order_id,
        kind=r.kind,
        event=r.event,
        at=r.at,
        due_at=r.due_at,
        responsible=r.responsible,
        late_seconds=float(r.late_seconds),
        detail=r.detail,
    )


def gather(
    uow: UnitOfWork,
    start: datetime,
    end: datetime,
    case_ids: Sequence[str] = (),
    *,
    generated_at: datetime | None = None,
) -> SlaReport:
    """The clocks started in [start, end), their SLA log, and the timelines of `case_ids`."""
    session = _session(uow)
    in_period = (
        clocks.c.started_at >= type_coerce(start, UTCDateTime()),
        clocks.c.started_at < type_coerce(end, UTCDateTime()),
    )
    clock_rows = [
        _clock_row(r)
        for r in session.execute(
            select(clocks).where(*in_period).order_by(clocks.c.started_at, clocks.c.clock_id)
        )
    ]
    ids = select(clocks.c.clock_id).where(*in_period).scalar_subquery()
    log_rows = [
        _log_row(r)
        for r in session.execute(
            select(sla_log).where(sla_log.c.clock_id.in_(ids)).order_by(sla_log.c.id)
        )
    ]
    timelines = [case_timeline(uow, case_id) for case_id in dict.fromkeys(case_ids)]
    return SlaReport(start, end, generated_at, clock_rows, log_rows, timelines)


def case_timeline(uow: UnitOfWork, case_id: str) -> CaseTimeline:
    """A case's events, all its clocks and their SLA log, whatever the period."""
    session = _session(uow)
    case: Case | None = uow.cases.get(case_id)
    if case is None:
        return CaseTimeline(case_id, found=False)
    clock_rows = [
        _clock_row(r)
        for r in session.execute(
            select(clocks)
            .where(clocks.c.case_id == case_id)
            .order_by(clocks.c.started_at, clocks.c.clock_id)
        )
    ]
    log_rows = [
        _log_row(r)
        for r in session.execute(
            select(sla_log).where(sla_log.c.case_id == case_id).order_by(sla_log.c.id)
        )
    ]
    return CaseTimeline(
        case_id=case_id,
        found=True,
        reporting_institution=case.reporting_institution,
        state=case.state.value,
        created_at=case.created_at,
        events=[CaseEventRow(e.at, e.kind, e.actor, e.summary) for e in case.events],
        clocks=clock_rows,
        log=log_rows,
        phases=phases(case),
    )


# ---- HTML ---------------------------------------------------------------------------------------

PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em; color: #222; }
h1 { margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; }
td.text, th.text { text-align: left; }
tr.breached td.breached { color: #b00; font-weight: bold; }
.meta { color: #555; }
.note { color: #555; font-size: 0.85em; max-width: 60em; }
svg { font-family: inherit; font-size: 11px; }
.event-missed, .event-breach, .event-regulator { color: #b00; font-weight: bold; }
.event-met { color: #070; }
.event-reminder, .event-renewal_reminder { color: #a60; }
"""


def _t(value: object) -> str:
    return escape(str(value), quote=True)


def stamp(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _secs(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _dur(value: float | None) -> str:
    return "—" if value is None else duration(timedelta(seconds=value))


def _duration_cell(cls: str, value: float | None) -> str:
    title = f' title="{_secs(value)} s"' if value is not None else ""
    return f'<td class="{cls}" data-seconds="{_secs(value)}"{title}>{_t(_dur(value))}</td>'


def _summary_table(rows: Sequence[SummaryRow]) -> str:
    head = (
        "<tr>"
        '<th class="text">Institution</th><th class="text">Clock</th><th>Count</th>'
        "<th>Stopped</th><th>Median</th><th>p90</th><th>Deadline</th><th>p90 / deadline</th>"
        "<th>Met</th><th>Missed</th><th>Ended</th><th>Open</th><th>Breached</th>"
        "<th>Escalations</th></tr>"
    )
    body = []
    for r in rows:
        ratio = (
            f"{100 * r.p90_seconds / r.deadline_seconds:.0f}%"
            if r.p90_seconds is not None and r.deadline_seconds > 0
            else "—"
        )
        cls = ' class="breached"' if r.breached else ""
        body.append(
            f'<tr{cls} data-institution="{_t(r.institution)}" data-clock="{_t(r.clock)}">'
            f'<td class="text institution">{_t(r.institution)}</td>'
            f'<td class="text clock">{_t(r.clock)}</td>'
            f'<td class="count">{r.count}</td>'
            f'<td class="stopped">{r.stopped}</td>'
            + _duration_cell("median", r.median_seconds)
            + _duration_cell("p90", r.p90_seconds)
            + _duration_cell("deadline", r.deadline_seconds)
            + f'<td class="ratio">{ratio}</td>'
            f'<td class="met">{r.met}</td>'
            f'<td class="missed">{r.missed}</td>'
            f'<td class="ended">{r.ended}</td>'
            f'<td class="open">{r.open}</td>'
            f'<td class="breached">{r.breached}</td>'
            f'<td class="escalations">{r.escalations}</td>'
            "</tr>"
        )
    if not body:
        body.append('<tr><td class="text" colspan="14">No clock started in the period.</td></tr>')
    return f'<table id="summary"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'


def durations_svg(rows: Sequence[SummaryRow]) -> str:
    """Per row: the durations' range, median bar and p90 mark, as a share of the deadline
    (the red line at 100%); the axis runs to 200% and longer durations are clipped at it."""
    label_w, plot_w, right_w, row_h, top = 190, 420, 260, 24, 28
    limit = 2.0
    width = label_w + plot_w + right_w
    height = top + row_h * max(len(rows), 1) + 24

    def x(fraction: float) -> float:
        return label_w + plot_w * min(max(fraction, 0.0), limit) / limit

    parts = [
        f'<svg id="durations-chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img">',
        "<title>Durations against deadlines, per institution and clock</title>",
    ]
    for pct in (0, 50, 100, 150, 200):
        gx = x(pct / 100)
        colour = "#d62728" if pct == 100 else "#ddd"
        parts.append(
            f'<line x1="{gx:.1f}" y1="{top - 6}" x2="{gx:.1f}" y2="{height - 20}" '
            f'stroke="{colour}" stroke-width="{2 if pct == 100 else 1}"/>'
            f'<text x="{gx:.1f}" y="{top - 10}" text-anchor="middle">{pct}%</text>'
        )
    for i, r in enumerate(rows):
        y = top + i * row_h
        mid = y + row_h / 2
        parts.append(
            f'<text x="{label_w - 6}" y="{mid + 4:.1f}" text-anchor="end">'
            f"{_t(r.institution)} · {_t(r.clock)}</text>"
        )
        d = r.deadline_seconds
        if r.median_seconds is not None and d > 0:
            assert r.min_seconds is not None and r.max_seconds is not None
            assert r.p90_seconds is not None
            lo, hi = x(r.min_seconds / d), x(r.max_seconds / d)
            med, p90 = x(r.median_seconds / d), x(r.p90_seconds / d)
            late = r.p90_seconds > d
            parts.append(
                f'<line x1="{lo:.1f}" y1="{mid:.1f}" x2="{hi:.1f}" y2="{mid:.1f}" '
                'stroke="#888" stroke-width="1"/>'
                f'<rect x="{label_w}" y="{y + 6}" width="{max(med - label_w, 1):.1f}" '
                f'height="{row_h - 12}" fill="{"#f4a582" if late else "#92c5de"}">'
                f"<title>median {_t(_dur(r.median_seconds))}</title></rect>"
                f'<rect x="{p90 - 2:.1f}" y="{y + 3}" width="4" height="{row_h - 6}" '
                f'fill="{"#b2182b" if late else "#2166ac"}">'
                f"<title>p90 {_t(_dur(r.p90_seconds))}</title></rect>"
            )
            text = (
                f"median {_dur(r.median_seconds)} · p90 {_dur(r.p90_seconds)} / deadline {_dur(d)}"
            )
        else:
            text = f"no stopped clock ({r.open} open, {r.ended} ended) / deadline {_dur(d)}"
        parts.append(f'<text x="{label_w + plot_w + 8}" y="{mid + 4:.1f}">{_t(text)}</text>')
    parts.append(
        f'<text x="{label_w}" y="{height - 4}">share of the deadline (red line: the '
        "deadline); bar: median; dark mark: p90; grey line: shortest to longest</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def breaches_svg(by_inst: dict[str, dict[date, int]], days: Sequence[date]) -> str:
    """Breached clocks per UTC day of their deadline, stacked per institution."""
    insts = sorted(by_inst)
    colours = {inst: PALETTE[i % len(PALETTE)] for i, inst in enumerate(insts)}
    left, top, plot_h, plot_w = 40, 20, 180, max(360, min(1100, 28 * len(days)))
    width, height = left + plot_w + 160, top + plot_h + 50
    totals = [sum(by_inst[i].get(d, 0) for i in insts) for d in days]
    peak = max([*totals, 1])
    bar_w = plot_w / max(len(days), 1)
    parts = [
        f'<svg id="breaches-chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img">',
        "<title>Breaches per institution per day</title>",
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#444"/>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{peak}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">0</text>',
    ]
    step = max(1, len(days) // 12)
    for j, day in enumerate(days):
        bx = left + j * bar_w
        base: float = top + plot_h
        for inst in insts:
            n = by_inst[inst].get(day, 0)
            if not n:
                continue
            h = plot_h * n / peak
            base -= h
            parts.append(
                f'<rect x="{bx + 1:.1f}" y="{base:.1f}" width="{max(bar_w - 2, 1):.1f}" '
                f'height="{h:.1f}" fill="{colours[inst]}">'
                f"<title>{_t(inst)} {day.isoformat()}: {n}</title></rect>"
            )
        if j % step == 0:
            parts.append(
                f'<text x="{bx + bar_w / 2:.1f}" y="{top + plot_h + 14}" '
                f'text-anchor="middle">{day.strftime("%m-%d")}</text>'
            )
    for k, inst in enumerate(insts):
        ly = top + 10 + k * 16
        parts.append(
            f'<rect x="{left + plot_w + 12}" y="{ly - 9}" width="10" height="10" '
            f'fill="{colours[inst]}"/>'
            f'<text x="{left + plot_w + 26}" y="{ly}">{_t(inst)}</text>'
        )
    if not insts:
        parts.append(f'<text x="{left + 10}" y="{top + plot_h / 2}">no breach in the period</text>')
    parts.append("</svg>")
    return "".join(parts)


def _breaches_table(by_inst: dict[str, dict[date, int]]) -> str:
    rows = [
        f'<tr data-institution="{_t(inst)}" data-day="{day.isoformat()}">'
        f'<td class="text">{_t(inst)}</td><td class="text">{day.isoformat()}</td>'
        f'<td class="breaches">{n}</td></tr>'
        for inst, days in by_inst.items()
        for day, n in sorted(days.items())
    ]
    if not rows:
        rows.append('<tr><td class="text" colspan="3">No breach.</td></tr>')
    return (
        '<table id="breaches"><thead><tr><th class="text">Institution</th>'
        '<th class="text">Day (UTC)</th><th>Breaches</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def timeline_svg(t: CaseTimeline) -> str:
    """The case's clocks as bars from start to stop (or to the last moment known), each
    with its deadline, and its events as ticks on a common time axis."""
    moments = [e.at for e in t.events] + [r.at for r in t.log]
    for c in t.clocks:
        moments += [c.started_at, c.deadline_at] + ([c.stopped_at] if c.stopped_at else [])
    if not moments:
        return ""
    first, last = min(moments), max(moments)
    span = max((last - first).total_seconds(), 1.0)
    label_w, plot_w, row_h, top = 150, 640, 20, 24
    height = top + row_h * (len(t.clocks) + 1) + 30
    width = label_w + plot_w + 20

    def x(moment: datetime) -> float:
        return label_w + plot_w * (moment - first).total_seconds() / span

    parts = [
        f'<svg class="case-timeline" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img">',
        f"<title>Timeline of case {_t(t.case_id)}</title>",
        f'<text x="{label_w}" y="14">{_t(stamp(first))}</text>',
        f'<text x="{label_w + plot_w}" y="14" text-anchor="end">{_t(stamp(last))}</text>',
        f'<text x="{label_w - 6}" y="{top + 14}" text-anchor="end">case events</text>',
    ]
    for e in t.events:
        ex = x(e.at)
        parts.append(
            f'<line x1="{ex:.1f}" y1="{top + 2}" x2="{ex:.1f}" y2="{top + row_h - 2}" '
            f'stroke="#333" stroke-width="2"><title>{_t(stamp(e.at))} {_t(e.kind)}'
            "</title></line>"
        )
    steps: dict[str, list[LogRow]] = defaultdict(list)
    for r in t.log:
        steps[r.clock_id].append(r)
    for i, c in enumerate(t.clocks, start=1):
        y = top + i * row_h
        end = c.stopped_at or max([c.started_at] + [r.at for r in steps[c.clock_id]])
        colour = "#d6604d" if c.is_breached else "#4393c3"
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">'
            f"{_t(c.kind)} ({_t(c.responsible)})</text>"
            f'<rect x="{x(c.started_at):.1f}" y="{y + 4}" '
            f'width="{max(x(end) - x(c.started_at), 2):.1f}" height="{row_h - 8}" '
            f'fill="{colour}"><title>{_t(c.kind)}: {_t(c.state)}</title></rect>'
            f'<line x1="{x(c.deadline_at):.1f}" y1="{y + 1}" x2="{x(c.deadline_at):.1f}" '
            f'y2="{y + row_h - 1}" stroke="#b2182b" stroke-width="2">'
            f"<title>deadline {_t(stamp(c.deadline_at))}</title></line>"
        )
        for r in steps[c.clock_id]:
            if r.event in ESCALATIONS:
                parts.append(
                    f'<circle cx="{x(r.at):.1f}" cy="{y + row_h / 2}" r="3" fill="#222">'
                    f"<title>{_t(r.event)} {_t(stamp(r.at))}</title></circle>"
                )
    parts.append(
        f'<text x="{label_w}" y="{height - 6}">bars: clocks (red: breached); red marks: '
        "deadlines; dots: reminders, breaches and escalations</text></svg>"
    )
    return "".join(parts)


def _case_section(t: CaseTimeline) -> str:
    cid = _t(t.case_id)
    if not t.found:
        return (
            f'<section class="case" data-case="{cid}"><h3>Case {cid}</h3>'
            "<p>Not found.</p></section>"
        )
    clock_of = {c.clock_id: c for c in t.clocks}
    items: list[tuple[datetime, int, str]] = []
    for e in t.events:
        items.append(
            (
                e.at,
                0,
                f'<tr class="event"><td class="text">{_t(stamp(e.at))}</td>'
                f'<td class="text">case</td><td class="text">{_t(e.kind)}</td>'
                f'<td class="text">{_t(e.actor)}</td><td class="text">{_t(e.summary)}</td></tr>',
            )
        )
    for r in t.log:
        c = clock_of.get(r.clock_id)
        late = f", {duration(timedelta(seconds=r.late_seconds))} late" if r.late_seconds else ""
        due = f"due {stamp(r.due_at)}{late}" if r.due_at else ""
        detail = "; ".join(x for x in (due, r.detail) if x)
        items.append(
            (
                r.at,
                1,
                f'<tr class="clock-step event-{_t(r.event)}" data-clock-id="{_t(r.clock_id)}">'
                f'<td class="text">{_t(stamp(r.at))}</td>'
                f'<td class="text">clock {_t(r.kind)}</td>'
                f'<td class="text">{_t(r.event)}</td>'
                f'<td class="text">{_t(c.responsible if c else r.responsible)}</td>'
                f'<td class="text">{_t(detail)}</td></tr>',
            )
        )
    items.sort(key=lambda i: (i[0], i[1]))
    rows = "".join(i[2] for i in items)
    phase_rows = "".join(
        f'<tr><td class="text">{_t(name)}</td><td>{_t(duration(d))}</td></tr>'
        for name, d in t.phases
    )
    clock_rows = "".join(
        f'<tr><td class="text">{_t(c.kind)}</td><td class="text">{_t(c.responsible)}</td>'
        f'<td class="text">{_t(stamp(c.started_at))}</td>'
        f'<td class="text">{_t(stamp(c.deadline_at))}</td>'
        f'<td class="text">{_t(stamp(c.stopped_at))}</td><td class="text">{_t(c.state)}</td>'
        f"<td>{_t(duration(c.duration))}</td></tr>"
        for c in t.clocks
    )
    return (
        f'<section class="case" data-case="{cid}"><h3>Case {cid}</h3>'
        f'<p class="meta">Reported by {_t(t.reporting_institution)} at '
        f"{_t(stamp(t.created_at))}; state {_t(t.state)}.</p>"
        + timeline_svg(t)
        + '<table class="clocks"><thead><tr><th class="text">Clock</th>'
        '<th class="text">Responsible</th><th class="text">Started</th>'
        '<th class="text">Deadline</th><th class="text">Stopped</th>'
        '<th class="text">State</th><th>Duration</th></tr></thead>'
        f"<tbody>{clock_rows}</tbody></table>"
        '<table class="timeline"><thead><tr><th class="text">At (UTC)</th>'
        '<th class="text">What</th><th class="text">Event</th><th class="text">By / for</th>'
        f'<th class="text">Detail</th></tr></thead><tbody>{rows}</tbody></table>'
        '<table class="phases"><thead><tr><th class="text">Phase</th><th>Duration</th>'
        f"</tr></thead><tbody>{phase_rows}</tbody></table></section>"
    )


def render_html(report: SlaReport) -> str:
    """The whole report: one HTML document, inline CSS and SVG, no script, no link out."""
    rows = report.rows
    by_inst = report.breaches
    period = f"{stamp(report.start)} to {stamp(report.end)} (end excluded)"
    generated = (
        f" Generated {stamp(report.generated_at)}." if report.generated_at is not None else ""
    )
    total_breached = sum(r.breached for r in rows)
    total_escalations = sum(r.escalations for r in rows)
    cases = "".join(_case_section(t) for t in report.cases)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"/>',
        f"<title>StopHub SLA report {_t(period)}</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>StopHub SLA report</h1>",
        f'<p class="meta">Clocks started from {_t(period)}.{_t(generated)} '
        f"{len(report.clocks)} clock(s), {total_breached} breached, "
        f"{total_escalations} escalation(s), {len(report.log)} SLA log entries.</p>",
        '<section id="per-institution"><h2>Per institution and clock</h2>',
        _summary_table(rows),
        "</section>",
        '<section id="durations"><h2>Durations against deadlines</h2>',
        durations_svg(rows),
        "</section>",
        '<section id="breaches-over-time"><h2>Breaches per institution over time</h2>',
        breaches_svg(by_inst, report.days),
        _breaches_table(by_inst),
        "</section>",
    ]
    if report.cases:
        parts += ['<section id="cases"><h2>Case timelines</h2>', cases, "</section>"]
    parts += [
        f'<footer><p class="note" id="definitions">{_t(PERCENTILE_NOTE)}</p></footer>',
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
