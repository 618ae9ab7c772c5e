"""The SLA report (`stophub report sla`) drawn as one self-contained HTML file a compliance
officer can open anywhere: inline CSS and inline SVG only, no script, no network. The figures
and their definitions are hub/service/slareport.py's; this module only draws them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from html import escape

from hub.cli.render.wording import duration, stamp
from hub.service.slareport import ESCALATIONS, CaseTimeline, LogRow, SlaReport, SummaryRow

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
