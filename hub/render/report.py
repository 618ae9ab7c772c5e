"""The SLA report (`stophub report sla`) drawn as one self-contained HTML file a compliance
officer can open anywhere: inline CSS and inline SVG only, no script, no network. The figures
and their definitions are hub/service/slareport.py's; docs/sla-report.md is what the report
promises (its sections, its words, how its digest is checked); this module only draws it.

Over 600 lines because a report is one document: its sections share the page's conventions
(the zone, the masking, the text widths the charts are laid out with, the one digest line),
and splitting them would spread those over modules that only this one uses.

SVG text is not measured by anything but a browser, and this file has no script: every chart
is laid out with `text_width`, an estimate wider than the text any common sans-serif font
draws, so no label is cut by its chart's box.
"""

from __future__ import annotations

import base64
import hashlib
import math
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime, timedelta, tzinfo
from html import escape

from hub.domain.wording import Disclosure
from hub.render.wording import duration, stamp
from hub.service.slareport import (
    CLOCK_NAMES,
    NOTICES,
    CaseTimeline,
    ClockRow,
    LogRow,
    SlaReport,
    SummaryRow,
    clock_name,
)

# The one line `grep -v` removes to check the report's digest (docs/sla-report.md).
DIGEST_ID = "content-sha256"
SVG_FONT_PX = 12

# What the report calls the steps of the SLA log.
EVENT_NAMES = {
    "started": "started",
    "met": "met",
    "missed": "missed (stopped late)",
    "ended": "ended",
    "reminder": "reminder",
    "renewal_reminder": "renewal reminder",
    "breach": "breach notice",
    "regulator": "escalated to the regulator",
    "expire": "lapsed",
    "notice_end": "notice period over",
}

# A log scale's marks, for a time since the first moment of a case: the first labelled
# first where labels would overlap.
TICKS = (
    (60, "1 min"),
    (3600, "1 h"),
    (86400, "1 day"),
    (30 * 86400, "30 days"),
    (365 * 86400, "1 year"),
    (10, "10 s"),
    (600, "10 min"),
    (7 * 86400, "1 week"),
    (182 * 86400, "6 months"),
    (6 * 3600, "6 h"),
    (1, "1 s"),
    (730 * 86400, "2 years"),
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

CSS = f"""
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em; color: #222; }}
h1 {{ margin-bottom: 0.2em; }}
h2 {{ border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.85em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.45em; text-align: right; }}
/* A table wider than the window scrolls inside its section; the page never scrolls sideways. */
section {{ overflow-x: auto; }}
th {{ background: #f2f2f2; }}
td.text, th.text {{ text-align: left; }}
td.time, td.what, td[data-seconds] {{ white-space: nowrap; }}
tr.breached td.breached, td.bad {{ color: #b00; font-weight: bold; }}
.meta {{ color: #555; }}
.note {{ color: #555; font-size: 0.85em; max-width: 60em; }}
.empty {{ font-size: 1.1em; font-weight: bold; }}
code {{ word-break: break-all; }}
svg {{ font-family: inherit; font-size: {SVG_FONT_PX}px; max-width: 100%; height: auto; }}
.event-missed, .event-breach, .event-regulator {{ color: #b00; font-weight: bold; }}
.event-met {{ color: #070; }}
.event-reminder, .event-renewal_reminder {{ color: #a60; }}
"""


def _t(value: object) -> str:
    return escape(str(value), quote=True)


def text_width(text: str, px: float = SVG_FONT_PX) -> float:
    """At least the width `text` takes at `px` in a common sans-serif font (DejaVu Sans, the
    widest of them, draws capitals up to 0.77 em, most other characters within 0.65 em): what
    the charts reserve for a label."""
    em = 0.0
    for ch in text:
        if unicodedata.east_asian_width(ch) in ("W", "F") or ch in "MWmw@%":
            em += 1.0
        elif ch.isupper():
            em += 0.78
        else:
            em += 0.65
    return em * px


def _secs(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _dur(value: float | None) -> str:
    return "—" if value is None else duration(timedelta(seconds=value))


def _share(part: float | None, whole: float | None) -> str:
    if part is None or not whole:
        return "—"
    return f"{100 * part / whole:.0f}%"


def _zone_name(zone: tzinfo) -> str:
    return str(zone)


def _duration_cell(cls: str, value: float | None) -> str:
    title = f' title="{_secs(value)} s"' if value is not None else ""
    return f'<td class="{cls}" data-seconds="{_secs(value)}"{title}>{_t(_dur(value))}</td>'


def _svg_open(attrs: str, width: float, height: float, title: str) -> str:
    return (
        f'<svg {attrs} width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" role="img"><title>{_t(title)}</title>'
    )


# ---- the summary --------------------------------------------------------------------------------


def _totals_sentence(report: SlaReport, kinds: Sequence[SummaryRow]) -> str:
    breached = [(r, r.breached) for r in report.rows if r.breached]
    where = "; ".join(f"{clock_name(r.clock)} at {r.institution}: {n}" for r, n in breached)
    return (
        f"{len(report.clocks)} clock(s) started in the period; "
        f"{sum(r.met for r in kinds)} met, {sum(r.breached for r in kinds)} breached"
        + (f" ({where})" if where else "")
        + f"; {sum(r.reminders for r in kinds)} reminder(s), "
        f"{sum(r.breach_notices for r in kinds)} breach notice(s) and "
        f"{sum(r.escalations for r in kinds)} escalation(s) to the regulator sent."
    )


def _empty_sentence(report: SlaReport) -> str:
    if report.span is None:
        held = "This database holds no clock at all."
    else:
        first, last = report.span
        held = (
            f"This database's clocks started from {stamp(first)} to {stamp(last)}: a report "
            "without --from and --to covers them all."
        )
    return f"No clock started in this period. {held}"


NOTICE_HEADS = "<th>Reminders</th><th>Breach notices</th><th>Escalations</th>"


def _notice_cells(r: SummaryRow) -> str:
    """The notices a row's clocks sent, reminders, breach notices and escalations apart."""
    return (
        f'<td class="reminders">{r.reminders}</td>'
        f'<td class="breach-notices">{r.breach_notices}</td>'
        f'<td class="escalations">{r.escalations}</td>'
    )


def _kinds_table(kinds: Sequence[SummaryRow]) -> str:
    head = (
        '<tr><th class="text">Clock</th><th>Clocks</th><th>Met</th><th>Breached</th>'
        "<th>Not judged</th><th>Share met</th><th>Median time taken</th><th>Deadline</th>"
        f"<th>Median / deadline</th>{NOTICE_HEADS}</tr>"
    )
    body = []
    for r in kinds:
        share = r.share_met
        body.append(
            f'<tr data-clock="{_t(r.clock)}">'
            f'<td class="text clock">{_t(clock_name(r.clock))}</td>'
            f'<td class="count">{r.count}</td><td class="met">{r.met}</td>'
            f'<td class="{"bad " if r.breached else ""}breached">{r.breached}</td>'
            f'<td class="unjudged">{r.count - r.met - r.breached}</td>'
            f'<td class="share-met" data-share="{"" if share is None else f"{share:.6f}"}">'
            f"{_share(share, 1.0)}</td>"
            + _duration_cell("median", r.median_seconds)
            + _duration_cell("deadline", r.deadline_seconds)
            + f'<td class="median-ratio">{_share(r.median_seconds, r.deadline_seconds)}</td>'
            + _notice_cells(r)
            + "</tr>"
        )
    return f'<table id="kinds"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'


def _summary_table(rows: Sequence[SummaryRow]) -> str:
    head = (
        "<tr>"
        '<th class="text">Institution</th><th class="text">Clock</th><th>Count</th>'
        "<th>Stopped</th><th>Median</th><th>p90</th><th>Deadline</th><th>p90 / deadline</th>"
        "<th>Met</th><th>Missed</th><th>Ended</th><th>Open</th><th>Breached</th>"
        f"{NOTICE_HEADS}</tr>"
    )
    body = []
    for r in rows:
        cls = ' class="breached"' if r.breached else ""
        body.append(
            f'<tr{cls} data-institution="{_t(r.institution)}" data-clock="{_t(r.clock)}">'
            f'<td class="text institution">{_t(r.institution)}</td>'
            f'<td class="text clock">{_t(clock_name(r.clock))}</td>'
            f'<td class="count">{r.count}</td>'
            f'<td class="stopped">{r.stopped}</td>'
            + _duration_cell("median", r.median_seconds)
            + _duration_cell("p90", r.p90_seconds)
            + _duration_cell("deadline", r.deadline_seconds)
            + f'<td class="ratio">{_share(r.p90_seconds, r.deadline_seconds)}</td>'
            f'<td class="met">{r.met}</td>'
            f'<td class="missed">{r.missed}</td>'
            f'<td class="ended">{r.ended}</td>'
            f'<td class="open">{r.open}</td>'
            f'<td class="breached">{r.breached}</td>' + _notice_cells(r) + "</tr>"
        )
    return f'<table id="summary"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'


# ---- charts -------------------------------------------------------------------------------------


def durations_svg(rows: Sequence[SummaryRow]) -> str:
    """Per row: the durations' range, median bar and p90 mark, as a share of the deadline
    (the red line at 100%); the axis runs to 200% and longer durations are clipped at it."""
    labels = [f"{r.institution} · {clock_name(r.clock)}" for r in rows]
    texts = []
    for r in rows:
        d = r.deadline_seconds
        if r.median_seconds is not None and d > 0:
            texts.append(
                f"median {_dur(r.median_seconds)} · p90 {_dur(r.p90_seconds)} · deadline {_dur(d)}"
            )
        else:
            texts.append(f"no stopped clock ({r.open} open, {r.ended} ended) · deadline {_dur(d)}")
    legend = (
        "share of the deadline (red line: the deadline); bar: median; dark mark: p90; "
        "grey line: shortest to longest"
    )
    plot_w, row_h, top, pad = 420, 24, 28, 10
    label_w = max([text_width(s) for s in labels] + [0]) + 2 * pad
    right_w = max([text_width(s) for s in texts] + [0]) + 2 * pad
    width = max(label_w + plot_w + right_w, label_w + text_width(legend) + pad)
    height = top + row_h * max(len(rows), 1) + 24
    limit = 2.0

    def x(fraction: float) -> float:
        return label_w + plot_w * min(max(fraction, 0.0), limit) / limit

    parts = [
        _svg_open(
            'id="durations-chart"',
            width,
            height,
            "Durations against deadlines, per institution and clock",
        )
    ]
    for pct in (0, 50, 100, 150, 200):
        gx = x(pct / 100)
        colour = "#d62728" if pct == 100 else "#ddd"
        parts.append(
            f'<line x1="{gx:.1f}" y1="{top - 6}" x2="{gx:.1f}" y2="{height - 20}" '
            f'stroke="{colour}" stroke-width="{2 if pct == 100 else 1}"/>'
            f'<text x="{gx:.1f}" y="{top - 10}" text-anchor="middle">{pct}%</text>'
        )
    for i, (r, label, text) in enumerate(zip(rows, labels, texts, strict=True)):
        y = top + i * row_h
        mid = y + row_h / 2
        parts.append(
            f'<text x="{label_w - pad:.1f}" y="{mid + 4:.1f}" text-anchor="end">{_t(label)}</text>'
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
                f'<rect x="{label_w:.1f}" y="{y + 6}" width="{max(med - label_w, 1):.1f}" '
                f'height="{row_h - 12}" fill="{"#f4a582" if late else "#92c5de"}">'
                f"<title>median {_t(_dur(r.median_seconds))}</title></rect>"
                f'<rect x="{p90 - 2:.1f}" y="{y + 3}" width="4" height="{row_h - 6}" '
                f'fill="{"#b2182b" if late else "#2166ac"}">'
                f"<title>p90 {_t(_dur(r.p90_seconds))}</title></rect>"
            )
        parts.append(f'<text x="{label_w + plot_w + pad:.1f}" y="{mid + 4:.1f}">{_t(text)}</text>')
    parts.append(f'<text x="{label_w:.1f}" y="{height - 4}">{_t(legend)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def breaches_svg(by_inst: dict[str, dict[date, int]], days: Sequence[date]) -> str:
    """Breached clocks per day of their deadline, stacked per institution."""
    insts = sorted(by_inst)
    colours = {inst: PALETTE[i % len(PALETTE)] for i, inst in enumerate(insts)}
    totals = [sum(by_inst[i].get(d, 0) for i in insts) for d in days]
    peak = max([*totals, 1])
    pad, top, plot_h = 8, 20, 180
    left = text_width(str(peak)) + 2 * pad
    plot_w = max(360, min(1100, 28 * len(days)))
    crosses_year = len({d.year for d in days}) > 1
    day_format = "%Y-%m-%d" if crosses_year else "%m-%d"
    day_label_w = text_width(days[0].strftime(day_format)) if days else 0.0
    legend_w = max([text_width(i) for i in insts] + [0]) + 14 + 2 * pad
    width = left + plot_w + max(legend_w, day_label_w / 2 + pad)
    height = top + plot_h + 40
    bar_w = plot_w / max(len(days), 1)
    step = max(1, math.ceil((day_label_w + pad) / bar_w))
    parts = [
        _svg_open('id="breaches-chart"', width, height, "Breaches per institution per day"),
        f'<line x1="{left:.1f}" y1="{top + plot_h}" x2="{left + plot_w:.1f}" '
        f'y2="{top + plot_h}" stroke="#444"/>',
        f'<text x="{left - pad:.1f}" y="{top + 4}" text-anchor="end">{peak}</text>',
        f'<text x="{left - pad:.1f}" y="{top + plot_h}" text-anchor="end">0</text>',
    ]
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
                f'<text x="{bx + bar_w / 2:.1f}" y="{top + plot_h + 16}" '
                f'text-anchor="middle">{day.strftime(day_format)}</text>'
            )
    for k, inst in enumerate(insts):
        ly = top + 10 + k * 16
        parts.append(
            f'<rect x="{left + plot_w + pad:.1f}" y="{ly - 9}" width="10" height="10" '
            f'fill="{colours[inst]}"/>'
            f'<text x="{left + plot_w + pad + 14:.1f}" y="{ly}">{_t(inst)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _breaches_table(by_inst: dict[str, dict[date, int]], zone: tzinfo) -> str:
    rows = [
        f'<tr data-institution="{_t(inst)}" data-day="{day.isoformat()}">'
        f'<td class="text">{_t(inst)}</td><td class="text">{day.isoformat()}</td>'
        f'<td class="breaches">{n}</td></tr>'
        for inst, days in by_inst.items()
        for day, n in sorted(days.items())
    ]
    return (
        '<table id="breaches"><thead><tr><th class="text">Institution</th>'
        f'<th class="text">Day ({_t(_zone_name(zone))})</th><th>Breaches</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


# ---- case timelines -----------------------------------------------------------------------------


def _row_label(t: CaseTimeline, number: int, c: ClockRow) -> str:
    order = t.order_label(c)
    return " · ".join(x for x in (f"{number}. {clock_name(c.kind)}", order, c.responsible) if x)


def _outcome(c: ClockRow) -> str:
    deadline = f"deadline {duration(c.window)}"
    match c.state:
        case "met":
            return f"met in {duration(c.duration)} · {deadline}"
        case "missed":
            return f"missed: {duration(c.duration)} · {deadline}"
        case "open":
            return f"open{', breached' if c.is_breached else ''} · {deadline}"
        case _:
            return f"{c.state}{', breached' if c.is_breached else ''} · {deadline}"


def timeline_svg(t: CaseTimeline) -> str:
    """The case's clocks, one row each in the order they started, in two panels. When: each
    clock from its start to its stop on a logarithmic axis of the time since the case's first
    moment, with the case's events on the first row. Against its deadline: the time it took
    (or has run) as a share of its own deadline, with the notices its ladder sent. So a
    five-minute clock and a six-month freeze, or a two-hour return a month into the case, are
    all readable: the first panel gives their order, the second how each went."""
    moments = [e.at for e in t.events] + [r.at for r in t.log]
    for c in t.clocks:
        moments += [c.started_at] + ([c.stopped_at] if c.stopped_at else [])
    if not moments:
        return ""
    origin = min(moments)
    span = max((max(moments) - origin).total_seconds(), 60.0)

    def scale(seconds: float) -> float:
        return math.log10(1 + max(seconds, 0.0))

    pad, when_w, gap, share_w, row_h, top = 10, 420, 30, 260, 20, 62
    steps: dict[str, list[LogRow]] = defaultdict(list)
    for r in t.log:
        steps[r.clock_id].append(r)
    labels = ["case events"] + [_row_label(t, i, c) for i, c in enumerate(t.clocks, start=1)]
    outcomes = [""] + [_outcome(c) for c in t.clocks]
    when_caption = f"when: time since {stamp(origin)} (logarithmic)"
    share_caption = "time taken against the clock's own deadline"
    legend = (
        "bars: clocks (red: breached); red line: the deadline; dots: reminders, breach "
        "notices, escalations and other notices"
    )
    label_w = max(text_width(s) for s in labels) + 2 * pad
    share_x = label_w + when_w + gap
    right_x = share_x + share_w + pad
    width = max(
        right_x + max(text_width(s) for s in outcomes) + pad,
        label_w + text_width(legend) + pad,
        label_w + text_width(when_caption) + pad,
        share_x + text_width(share_caption) + pad,
    )
    height = top + row_h * len(labels) + 30
    bottom = height - 26

    def x(moment: datetime) -> float:
        return label_w + when_w * scale((moment - origin).total_seconds()) / scale(span)

    def share(elapsed: timedelta, window: timedelta) -> float:
        fraction = elapsed / window if window > timedelta(0) else 0.0
        return share_x + share_w * min(max(fraction, 0.0), 2.0) / 2

    parts = [
        _svg_open(
            f'class="case-timeline" data-case="{_t(t.case_id)}"',
            width,
            height,
            f"Timeline of case {t.case_id}",
        ),
        f'<text x="{label_w:.1f}" y="14">{_t(when_caption)}</text>',
        f'<text x="{share_x:.1f}" y="14">{_t(share_caption)}</text>',
    ]
    placed: list[tuple[float, float]] = []
    for seconds, name in TICKS:
        if seconds > span:
            continue
        tx = label_w + when_w * scale(seconds) / scale(span)
        lo, hi = tx - text_width(name) / 2 - 4, tx + text_width(name) / 2 + 4
        parts.append(
            f'<line x1="{tx:.1f}" y1="{top - 6}" x2="{tx:.1f}" y2="{bottom}" '
            'stroke="#e4e4e4" stroke-width="1"/>'
        )
        if hi <= share_x and all(hi < a or lo > b for a, b in placed):
            parts.append(f'<text x="{tx:.1f}" y="{top - 10}" text-anchor="middle">{name}</text>')
            placed.append((lo, hi))
    for pct in (0, 50, 100, 150, 200):
        gx = share_x + share_w * pct / 200
        colour = "#d62728" if pct == 100 else "#e4e4e4"
        parts.append(
            f'<line x1="{gx:.1f}" y1="{top - 6}" x2="{gx:.1f}" y2="{bottom}" '
            f'stroke="{colour}" stroke-width="{2 if pct == 100 else 1}"/>'
            f'<text x="{gx:.1f}" y="{top - 10}" text-anchor="middle">{pct}%</text>'
        )
    parts.append(
        f'<text x="{label_w - pad:.1f}" y="{top + 14}" text-anchor="end">{labels[0]}</text>'
    )
    for e in t.events:
        ex = x(e.at)
        parts.append(
            f'<line x1="{ex:.1f}" y1="{top + 2}" x2="{ex:.1f}" y2="{top + row_h - 2}" '
            f'stroke="#333" stroke-width="2"><title>{_t(stamp(e.at))} {_t(e.kind)}'
            "</title></line>"
        )
    for i, c in enumerate(t.clocks, start=1):
        y = top + i * row_h
        end = c.stopped_at or max([c.started_at] + [r.at for r in steps[c.clock_id]])
        colour = "#d6604d" if c.is_breached else "#4393c3"
        tip = f"<title>{_t(clock_name(c.kind))}: {_t(_outcome(c))}</title>"
        taken = share(end - c.started_at, c.window)
        parts.append(
            f'<text x="{label_w - pad:.1f}" y="{y + 14}" text-anchor="end">'
            f"{_t(labels[i])}</text>"
            f'<rect class="when" x="{x(c.started_at):.1f}" y="{y + 4}" '
            f'width="{max(x(end) - x(c.started_at), 3):.1f}" height="{row_h - 8}" '
            f'fill="{colour}">{tip}</rect>'
            f'<rect class="taken" x="{share_x:.1f}" y="{y + 4}" '
            f'width="{max(taken - share_x, 2):.1f}" height="{row_h - 8}" '
            f'fill="{colour}">{tip}</rect>'
            f'<text x="{right_x:.1f}" y="{y + 14}">{_t(outcomes[i])}</text>'
        )
        for r in steps[c.clock_id]:
            if r.event in NOTICES:
                parts.append(
                    f'<circle cx="{share(r.at - c.started_at, c.window):.1f}" '
                    f'cy="{y + row_h / 2}" r="3" fill="#222">'
                    f"<title>{_t(EVENT_NAMES.get(r.event, r.event))} {_t(stamp(r.at))}"
                    "</title></circle>"
                )
    parts.append(f'<text x="{label_w:.1f}" y="{height - 8}">{_t(legend)}</text></svg>')
    return "".join(parts)


def _case_section(t: CaseTimeline, report: SlaReport) -> str:
    cid = _t(t.case_id)
    if not t.found:
        return (
            f'<section class="case" data-case="{cid}"><h3>Case {cid}</h3>'
            "<p>Not found.</p></section>"
        )

    def text(value: str) -> str:
        # Orders as the clocks table names them (O001), as `stophub case show` does.
        value = value.replace(f"{t.case_id}-", "")
        return Disclosure(report.personal_data).knowing(t.personal_names).text(value)

    zone = _t(_zone_name(report.zone))
    clock_of = {c.clock_id: c for c in t.clocks}
    items: list[tuple[datetime, int, str]] = []
    for e in t.events:
        items.append(
            (
                e.at,
                0,
                f'<tr class="event"><td class="text time">{_t(stamp(e.at))}</td>'
                f'<td class="text what">case</td><td class="text what">{_t(e.kind)}</td>'
                f'<td class="text">{_t(e.actor)}</td>'
                f'<td class="text summary">{_t(text(e.summary))}</td></tr>',
            )
        )
    for r in t.log:
        c = clock_of.get(r.clock_id)
        late = f", {duration(timedelta(seconds=r.late_seconds))} late" if r.late_seconds else ""
        due = f"due {stamp(r.due_at)}{late}" if r.due_at else ""
        detail = "; ".join(x for x in (due, text(r.detail)) if x)
        items.append(
            (
                r.at,
                1,
                f'<tr class="clock-step event-{_t(r.event)}" data-clock-id="{_t(r.clock_id)}" '
                f'data-event="{_t(r.event)}">'
                f'<td class="text time">{_t(stamp(r.at))}</td>'
                f'<td class="text what">clock: {_t(clock_name(r.kind))}</td>'
                f'<td class="text what">{_t(EVENT_NAMES.get(r.event, r.event))}</td>'
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
        f'<tr data-clock-id="{_t(c.clock_id)}"><td>{i}</td>'
        f'<td class="text">{_t(clock_name(c.kind))}</td>'
        f'<td class="text">{_t(t.order_label(c))}</td><td class="text">{_t(c.responsible)}</td>'
        f'<td class="text time">{_t(stamp(c.started_at))}</td>'
        f'<td class="text time">{_t(stamp(c.deadline_at))}</td>'
        f'<td class="text time">{_t(stamp(c.stopped_at))}</td>'
        f'<td class="text{" bad" if c.is_breached else ""}">{_t(c.state)}</td>'
        f"<td>{_t(duration(c.duration))}</td></tr>"
        for i, c in enumerate(t.clocks, start=1)
    )
    return (
        f'<section class="case" data-case="{cid}"><h3>Case {cid}</h3>'
        f'<p class="meta">Reported by {_t(t.reporting_institution)} at '
        f"{_t(stamp(t.created_at))}; state {_t(t.state)}.</p>"
        + timeline_svg(t)
        + '<table class="clocks"><thead><tr><th>#</th><th class="text">Clock</th>'
        '<th class="text">Order</th><th class="text">Responsible</th>'
        f'<th class="text">Started ({zone})</th><th class="text">Deadline ({zone})</th>'
        f'<th class="text">Stopped ({zone})</th><th class="text">State</th>'
        "<th>Time taken</th></tr></thead>"
        f"<tbody>{clock_rows}</tbody></table>"
        f'<table class="timeline"><thead><tr><th class="text">At ({zone})</th>'
        '<th class="text">What</th><th class="text">Event</th><th class="text">By / for</th>'
        f'<th class="text">Detail</th></tr></thead><tbody>{rows}</tbody></table>'
        '<table class="phases"><thead><tr><th class="text">Phase</th><th>Duration</th>'
        f"</tr></thead><tbody>{phase_rows}</tbody></table></section>"
    )


# ---- what the report was made from, and its digest ----------------------------------------------


def _evidence(report: SlaReport) -> str:
    rows = [
        ("Database", report.database or "—"),
        ("Read at", stamp(report.generated_at)),
        ("Audit log", f"{report.log_size} entries in its Merkle tree when the report was read"),
    ]
    cp = report.checkpoint
    if cp is None:
        rows.append(
            (
                "Latest signed checkpoint",
                "none yet: the hub signs one each minute in which the log grew, so nothing in "
                "this report is covered by a signed checkpoint",
            )
        )
    else:
        after = report.log_size - cp.tree_size
        rows += [
            (
                "Latest signed checkpoint",
                f"tree of {cp.tree_size} entries, signed {stamp(cp.signed_at)}"
                + (
                    f" ({after} entries recorded after it, for the next checkpoint)"
                    if after > 0
                    else ""
                ),
            ),
            ("Root hash (SHA-256)", cp.root_hash.hex()),
            (
                "Signed by",
                f"the hub, key {cp.key_id} ({cp.algorithm}): "
                + (
                    "the signature verifies with a key given to this report as the hub's own "
                    "(--hub-key), or one such a key endorsed"
                    if cp.pinned
                    else "the signature verifies with that key as the hub's registry holds "
                    "it; no key was given to this report as the hub's own (--hub-key), and "
                    "whoever holds the database can change the registry: check the signed "
                    "checkpoint below with the hub's public key"
                ),
            ),
            ("Signature", cp.signature.hex()),
            ("Signed checkpoint (envelope, base64)", base64.b64encode(cp.envelope).decode()),
        ]
    body = "".join(
        f'<tr data-item="{_t(name)}"><th class="text">{_t(name)}</th>'
        f'<td class="text"><code>{_t(value)}</code></td></tr>'
        for name, value in rows
    )
    return f'<table id="evidence"><tbody>{body}</tbody></table>'


def _digest_note(file_name: str) -> str:
    name = file_name or "REPORT.html"
    # Escaped like all text, so this line does not match the pattern it shows.
    check = f"grep -v 'id=\"{DIGEST_ID}\"' {name} | sha256sum"
    return (
        '<p class="note">The line above is the SHA-256 of this file without that line: '
        f"<code>{_t(check)}</code> prints it again. The SHA-256 of the whole file is in the "
        f"file written beside it: <code>{_t(f'sha256sum -c {name}.sha256')}</code> in its "
        "directory checks it.</p>"
    )


def definitions(zone: tzinfo) -> str:
    """How the figures are made, in plain words (docs/sla-report.md says the same)."""
    return (
        "Time taken: from the moment a clock started to the moment it was stopped; only "
        "clocks that were stopped (met or missed) have one. Clocks still open, and clocks "
        "that ran to their end without being stopped, are counted but have no time taken. "
        "Median: the middle time taken (with an even number, halfway between the two middle "
        "ones). 90th percentile (p90): with the times taken sorted from shortest to longest "
        "and numbered from 0, the time at number 0.9 × (count − 1), read on a straight line "
        "between its two neighbours; with one clock, median and p90 are its time. Deadline: "
        "the time a clock allows, from its start to its deadline; where the clocks of a row "
        "allow different times (working days), the most common one, the shortest of equally "
        "common ones. Met: stopped by the deadline. Missed: stopped after it. Breached: missed, "
        "or still running when a breach notice or an escalation went out at or after the "
        "deadline. Share met: met "
        "clocks out of those met or breached; clocks still open before their deadline, and "
        "periods that ended without a duty to meet (a public notice, a stop's validity, a "
        "freeze's term), are not judged. Reminders: notices to the responsible institution "
        "before the deadline (reminders, and renewal reminders before a term ends). Breach "
        "notices: notices at the deadline to the responsible institution and the anti-fraud "
        "centre. Escalations: notices to the regulator. Each notice is counted once however "
        "many institutions received it. Breaches over time are dated at their clock's "
        f"deadline, by day in {_zone_name(zone)}. Every time is written in {_zone_name(zone)}."
    )


def _glossary() -> str:
    rows = "".join(
        f'<tr data-clock="{_t(kind)}"><td class="text">{_t(name)}</td>'
        f'<td class="text">{_t(what)}</td></tr>'
        for kind, (name, what) in CLOCK_NAMES.items()
    )
    return (
        '<table id="clock-names"><thead><tr><th class="text">Clock</th>'
        f'<th class="text">What it times</th></tr></thead><tbody>{rows}</tbody></table>'
    )


def render_html(report: SlaReport, file_name: str = "") -> str:
    """The whole report: one HTML document, inline CSS and SVG, no script, no link out. One
    of its lines states the SHA-256 of all the others (`DIGEST_ID`); `file_name` is the name
    its check is written with."""
    zone = _zone_name(report.zone)
    period = f"{stamp(report.start)} to {stamp(report.end)}"
    kinds = report.kinds
    masking = (
        "This report shows personal names as stored (made with --personal-data): keep it as "
        "personal data."
        if report.personal_data
        else "Personal names in case timelines show their first character only; "
        "--personal-data shows them in full, for those entitled."
    )
    parts: list[str | None] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"/>',
        f"<title>StopHub SLA report {_t(period)}</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>StopHub SLA report</h1>",
        f'<p class="meta" id="period">Clocks started from {_t(period)} (end excluded). '
        f"Times in {_t(zone)}. Made {_t(stamp(report.generated_at))} from "
        f"{_t(report.database or 'the database')}; what it was made against and its digest: "
        "Evidence, at the end.</p>",
        f'<p class="meta" id="masking">{_t(masking)}</p>',
        '<section id="summary-by-kind"><h2>Summary</h2>',
    ]
    if not report.clocks:
        parts += [f'<p class="empty" id="empty">{_t(_empty_sentence(report))}</p>', "</section>"]
    else:
        parts += [
            f'<p id="totals">{_t(_totals_sentence(report, kinds))}</p>',
            _kinds_table(kinds),
            "</section>",
            '<section id="per-institution"><h2>Per institution and clock</h2>',
            _summary_table(report.rows),
            "</section>",
            '<section id="durations"><h2>Durations against deadlines</h2>',
            durations_svg(report.rows),
            "</section>",
            '<section id="breaches-over-time"><h2>Breaches per institution over time</h2>',
        ]
        by_inst = report.breaches
        if by_inst:
            parts += [breaches_svg(by_inst, report.days), _breaches_table(by_inst, report.zone)]
        else:
            parts.append('<p id="no-breach">No clock was breached in the period.</p>')
        parts.append("</section>")
    if report.cases:
        parts += [
            '<section id="cases"><h2>Case timelines</h2>',
            "".join(_case_section(t, report) for t in report.cases),
            "</section>",
        ]
    parts += [
        '<section id="evidence-section"><h2>Evidence</h2>',
        _evidence(report),
        None,  # the digest line
        _digest_note(file_name),
        "</section>",
        '<footer><h2>Definitions</h2><p class="note" id="definitions">'
        f"{_t(definitions(report.zone))}</p>",
        _glossary(),
        "</footer>",
        "</body></html>",
    ]
    content = "".join(f"{p}\n" for p in parts if p is not None)
    digest = hashlib.sha256(content.encode("utf-8")).hexdigest()
    line = (
        f'<p id="{DIGEST_ID}">SHA-256 of this report without this line: <code>{digest}</code></p>'
    )
    return "".join(f"{line if p is None else p}\n" for p in parts)
