"""The outcome report (`stophub report outcomes`) drawn as one self-contained HTML page (the SLA
report's shell: inline CSS and SVG, no script, no link out) and as CSV. The figures and what
they mean are hub/service/outcomes.py's; docs/outcomes.md is what both forms promise (the
page's sections and the CSV's columns)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import timedelta

from hub.domain.wording import yuan
from hub.render.report import CSS, PALETTE, _svg_open, _t, text_width
from hub.render.wording import duration, stamp
from hub.service.outcomes import FIGURE_NAMES, Figures, OutcomeReport, OutcomeRow, Period

CSV_COLUMNS = ("institution", "period_start", "period_end", "figure", "value")
# The amounts the charts draw, with their colours.
SERIES = (
    ("lost_fen", "reported lost"),
    ("stopped_first_layer_fen", "stopped, first layer"),
    ("stopped_downstream_fen", "stopped, downstream"),
    ("frozen_fen", "frozen"),
    ("returned_fen", "returned"),
)


def csv_value(figures: Figures, name: str) -> str:
    if name == "recovered_share":
        share = figures.recovered_share
        return "" if share is None else f"{share:.6f}"
    value = getattr(figures, name)
    if value is None:
        return ""
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def render_csv(report: OutcomeReport) -> str:
    """One line per institution × period × figure (docs/outcomes.md, "CSV")."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in report.rows:
        for name in FIGURE_NAMES:
            writer.writerow(
                (
                    row.institution or "ALL",
                    row.start.astimezone(report.zone).isoformat(),
                    row.end.astimezone(report.zone).isoformat(),
                    name,
                    csv_value(row.figures, name),
                )
            )
    return out.getvalue()


def _share(f: Figures) -> str:
    share = f.recovered_share
    return "—" if share is None else f"{100 * share:.1f}%"


def _dur(seconds: float | None) -> str:
    return "—" if seconds is None else duration(timedelta(seconds=seconds))


def _label(report: OutcomeReport, row: OutcomeRow) -> str:
    if row.whole or report.period is Period.WHOLE:
        return "whole range"
    start = row.start.astimezone(report.zone)
    if report.period is Period.MONTH:
        return start.strftime("%Y-%m")
    if report.period is Period.WEEK:
        return f"week of {start.date().isoformat()}"
    return start.date().isoformat()


HEADS = (
    "<tr><th class='text'>Institution</th><th class='text'>Period</th><th>Reports</th>"
    "<th>Reported lost</th><th>Stopped, first layer</th><th>Stopped, downstream</th>"
    "<th>Frozen</th><th>Returned</th><th>Recovered share</th><th>First stops</th>"
    "<th>Report → first stop, median</th><th>p90</th><th>Leads</th>"
    "<th>Accepted: case / listed / warned</th><th>Asked for more</th><th>Dismissed</th>"
    "<th>Pending</th></tr>"
)


def _tr(report: OutcomeReport, row: OutcomeRow) -> str:
    f = row.figures
    cls = ' class="total"' if not row.institution or row.whole else ""
    cells = [
        f'<td class="text">{_t(row.institution or "all institutions")}</td>',
        f'<td class="text">{_t(_label(report, row))}</td>',
        f'<td data-figure="reports">{f.reports}</td>',
        f'<td data-figure="lost_fen" data-fen="{f.lost_fen}">{_t(yuan(f.lost_fen))}</td>',
        f'<td data-figure="stopped_first_layer_fen" data-fen="{f.stopped_first_layer_fen}">'
        f"{_t(yuan(f.stopped_first_layer_fen))} ({f.first_layer_stops})</td>",
        f'<td data-figure="stopped_downstream_fen" data-fen="{f.stopped_downstream_fen}">'
        f"{_t(yuan(f.stopped_downstream_fen))} ({f.downstream_stops})</td>",
        f'<td data-figure="frozen_fen" data-fen="{f.frozen_fen}">{_t(yuan(f.frozen_fen))} '
        f"({f.freezes})</td>",
        f'<td data-figure="returned_fen" data-fen="{f.returned_fen}">{_t(yuan(f.returned_fen))} '
        f"({f.returns})</td>",
        f'<td data-figure="recovered_share">{_t(_share(f))}</td>',
        f'<td data-figure="first_stops">{f.first_stops}</td>',
        f'<td data-figure="first_stop_median_seconds">{_t(_dur(f.first_stop_median_seconds))}</td>',
        f'<td data-figure="first_stop_p90_seconds">{_t(_dur(f.first_stop_p90_seconds))}</td>',
        f'<td data-figure="leads">{f.leads}</td>',
        f'<td data-figure="leads_accepted"><span data-figure="leads_opened_case">'
        f'{f.leads_opened_case}</span> / <span data-figure="leads_listed">{f.leads_listed}'
        f'</span> / <span data-figure="leads_warned">{f.leads_warned}</span></td>',
        f'<td data-figure="leads_asked_for_more">{f.leads_asked_for_more}</td>',
        f'<td data-figure="leads_dismissed">{f.leads_dismissed}</td>',
        f'<td data-figure="leads_pending">{f.leads_pending}</td>',
    ]
    return f"<tr{cls}>{''.join(cells)}</tr>"


WARNING_HEADS = (
    "<tr><th class='text'>Institution</th><th class='text'>Period</th><th>Warnings</th>"
    "<th>At risk</th><th>Acknowledged (late)</th><th>Outcomes (late)</th><th>Reached</th>"
    "<th>Dissuaded</th><th>Not dissuaded</th><th>Not reached</th><th>Already lost</th>"
    "<th>Loss prevented</th></tr>"
)


def _warning_tr(report: OutcomeReport, row: OutcomeRow) -> str:
    f = row.figures
    cls = ' class="total"' if not row.institution or row.whole else ""
    cells = [
        f'<td class="text">{_t(row.institution or "all institutions")}</td>',
        f'<td class="text">{_t(_label(report, row))}</td>',
        f'<td data-figure="warnings_sent">{f.warnings_sent}</td>',
        f'<td data-figure="at_risk_fen" data-fen="{f.at_risk_fen}">{_t(yuan(f.at_risk_fen))}</td>',
        f'<td data-figure="warnings_acknowledged">{f.warnings_acknowledged} '
        f"({f.warnings_acknowledged_late})</td>",
        f'<td data-figure="warning_outcomes">{f.warning_outcomes} ({f.warning_outcomes_late})</td>',
        f'<td data-figure="customers_reached">{f.customers_reached}</td>',
        f'<td data-figure="customers_dissuaded">{f.customers_dissuaded}</td>',
        f'<td data-figure="customers_not_dissuaded">{f.customers_not_dissuaded}</td>',
        f'<td data-figure="customers_not_reached">{f.customers_not_reached}</td>',
        f'<td data-figure="customers_already_lost">{f.customers_already_lost}</td>',
        f'<td data-figure="loss_prevented_fen" data-fen="{f.loss_prevented_fen}">'
        f"{_t(yuan(f.loss_prevented_fen))}</td>",
    ]
    return f"<tr{cls}>{''.join(cells)}</tr>"


def _table(report: OutcomeReport, rows: Sequence[OutcomeRow], table_id: str) -> str:
    body = "".join(_tr(report, r) for r in rows)
    return f'<table id="{table_id}">{HEADS}{body}</table>'


# The warnings' money (docs/outcomes.md, "Warnings").
WARNING_SERIES = (
    ("at_risk_fen", "at risk (warnings sent)"),
    ("loss_prevented_fen", "loss prevented"),
)


def bars_svg(
    chart_id: str,
    title: str,
    groups: Sequence[tuple[str, Figures]],
    series: Sequence[tuple[str, str]] = SERIES,
) -> str:
    """Grouped bars: for each group (a period or an institution) the amounts of `series`."""
    peak = max([getattr(f, name) for _, f in groups for name, _ in series] + [1])
    pad, top, plot_h = 8, 20, 200
    left = text_width(yuan(peak)) + 2 * pad
    bar_w = 10
    group_w = bar_w * len(series) + 12
    plot_w = max(360, group_w * len(groups))
    legend_w = max(text_width(label) for _, label in series) + 14 + 2 * pad
    label_w = max([text_width(name) for name, _ in groups] + [0])
    step = max(1, int((label_w + pad) // group_w) + 1)
    width = left + plot_w + legend_w
    height = top + plot_h + 40
    parts = [
        _svg_open(f'id="{chart_id}"', width, height, title),
        f'<line x1="{left:.1f}" y1="{top + plot_h}" x2="{left + plot_w:.1f}" '
        f'y2="{top + plot_h}" stroke="#444"/>',
        f'<text x="{left - pad:.1f}" y="{top + 4}" text-anchor="end">{_t(yuan(peak))}</text>',
        f'<text x="{left - pad:.1f}" y="{top + plot_h}" text-anchor="end">0</text>',
    ]
    for j, (name, f) in enumerate(groups):
        gx = left + j * group_w + 6
        for k, (field, label) in enumerate(series):
            value = getattr(f, field)
            if value:
                h = plot_h * value / peak
                parts.append(
                    f'<rect x="{gx + k * bar_w:.1f}" y="{top + plot_h - h:.1f}" '
                    f'width="{bar_w - 1}" height="{h:.1f}" fill="{PALETTE[k]}" '
                    f'data-figure="{field}"><title>{_t(name)}: {_t(label)} {_t(yuan(value))}'
                    "</title></rect>"
                )
        if j % step == 0:
            parts.append(
                f'<text x="{gx + group_w / 2 - 6:.1f}" y="{top + plot_h + 16}" '
                f'text-anchor="middle">{_t(name)}</text>'
            )
    for k, (_, label) in enumerate(series):
        ly = top + 10 + k * 16
        parts.append(
            f'<rect x="{left + plot_w + pad:.1f}" y="{ly - 9}" width="10" height="10" '
            f'fill="{PALETTE[k]}"/><text x="{left + plot_w + pad + 14:.1f}" y="{ly}">'
            f"{_t(label)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def render_html(report: OutcomeReport) -> str:
    """The whole page: totals, money over time, per institution, the table of every row, and
    the definitions (docs/outcomes.md)."""
    period = f"{stamp(report.start)} to {stamp(report.end)}"
    total = report.total
    scope = f"the reports of {report.institution}" if report.institution else "every institution"
    over_time = [(_label(report, r), r.figures) for r in report.rows_of("")]
    per_inst = [
        (inst, (report.rows_of(inst, whole=True) or report.rows_of(inst))[-1].figures)
        for inst in report.institutions
    ]
    made = stamp(report.generated_at) if report.generated_at else ""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"/>',
        f"<title>StopHub outcome figures {_t(period)}</title>",
        f"<style>{CSS}tr.total td {{ font-weight: bold; }}</style></head><body>",
        "<h1>StopHub outcome figures</h1>",
        f'<p class="meta" id="period">From {_t(period)} (end excluded), {_t(scope)}, '
        f"{_t(_split(report.period.value))} in {_t(str(report.zone))}. Made {_t(made)} from "
        f"{_t(report.database or 'the database')}.</p>",
        '<section id="totals"><h2>Totals</h2>',
        f'<p id="totals-sentence">{total.reports} report(s), {_t(yuan(total.lost_fen))} '
        f"reported lost; {_t(yuan(total.stopped_fen))} stopped "
        f"({_t(yuan(total.stopped_first_layer_fen))} at the first layer, "
        f"{_t(yuan(total.stopped_downstream_fen))} downstream), "
        f"{_t(yuan(total.frozen_fen))} frozen, {_t(yuan(total.returned_fen))} returned "
        f"(recovered share {_t(_share(total))}); report to first stop: median "
        f"{_t(_dur(total.first_stop_median_seconds))}, p90 "
        f"{_t(_dur(total.first_stop_p90_seconds))} over {total.first_stops} case(s).</p>",
        f'<p id="leads-sentence">{total.leads} lead(s) handed over: '
        f"{total.leads_opened_case} opened as a case, {total.leads_listed} listed, "
        f"{total.leads_warned} warned, {total.leads_asked_for_more} asked for more, "
        f"{total.leads_dismissed} dismissed, {total.leads_pending} pending.</p>",
        "</section>",
        '<section id="over-time"><h2>Money over time</h2>',
        bars_svg(
            "money-over-time",
            "Money reported lost, stopped, frozen and returned per period",
            over_time,
        ),
        "</section>",
        '<section id="per-institution"><h2>Per institution</h2>',
        bars_svg("money-per-institution", "Money per reporting institution", per_inst)
        if per_inst
        else '<p id="no-institution">No institution has a record in the range.</p>',
        "</section>",
        '<section id="figures"><h2>Every figure</h2>',
        _table(report, report.rows, "figures-table"),
        "</section>",
        '<section id="warnings"><h2>Warnings (预警劝阻)</h2>',
        f'<p id="warnings-sentence">{total.warnings_sent} warning(s) sent, '
        f"{_t(yuan(total.at_risk_fen))} at risk; {total.warning_outcomes} outcome(s) reported "
        f"({total.warning_outcomes_late} late): {total.customers_reached} customer(s) reached, "
        f"{total.customers_dissuaded} dissuaded, {total.customers_not_reached} not reached, "
        f"{total.customers_already_lost} had already lost money; "
        f"{_t(yuan(total.loss_prevented_fen))} of loss prevented.</p>",
        bars_svg(
            "warnings-over-time",
            "Money at risk in warnings sent and loss prevented per period",
            over_time,
            WARNING_SERIES,
        ),
        f'<table id="warnings-table">{WARNING_HEADS}'
        + "".join(_warning_tr(report, r) for r in report.rows)
        + "</table>",
        "</section>",
        '<footer><h2>Definitions</h2><p class="note" id="definitions">'
        f"{_t(DEFINITIONS)}</p></footer>",
        "</body></html>",
    ]
    return "".join(f"{p}\n" for p in parts)


DEFINITIONS = (
    "Every figure counts signed records (docs/outcomes.md). Figures are counted for the "
    "institution that reported the case (a return for its beneficiary case's) and dated by "
    "their own record. Reports: reports received; reported lost: the sum of their "
    "transactions. Stopped: what the signed answers of stop orders answered executed or "
    "partially executed say they held, the first stop that held money of each account of a "
    "case only; first layer: stops of accounts the victim paid; downstream: stops of onward "
    "transfers. Frozen: what freeze answers held, renewals not counted again. Returned: what "
    "return answers paid. Recovered share: returned over reported lost of the same row. "
    "Report to first stop: from the hub's receipt of the report to its receipt of the answer "
    "of the case's first stop that held money; median and 90th percentile (inclusive method). "
    "Leads: leads handed over, counted for the member that signed them and dated by their "
    "receipt; their fate as of the end of the range: accepted (a case opened, an account "
    "listed, a member warned), waiting for the member's answer to the centre's question, "
    "dismissed, or pending the centre's triage. "
    "Warnings are counted for their addressee, each step on the day of its own record: sent, "
    "acknowledged (late: after the contact clock's deadline), closed with an outcome (late: "
    "after the outcome clock's deadline); reached is dissuaded plus not dissuaded; loss "
    "prevented is what the outcomes report, never more than the warning's amount at risk."
)


def _split(period: str) -> str:
    return "the whole range as one period" if period == "whole" else f"split by {period}"
