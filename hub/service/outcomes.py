"""The outcome figures the regulator reports (`stophub report outcomes`, OutcomeService): reports
received, money reported lost, stopped (first layer and downstream), frozen and returned, the
recovered share and the time from report to first stop, per institution and period. The
numbers only: hub/store/reports.py reads the rows, hub/render/outcomes.py draws the page and
writes the CSV, hub/service/commands/outcome.py answers the RPC.

Every figure is a count or sum over signed records (docs/outcomes.md defines each): the reports
members signed and the answers the institutions holding the money signed, with the amounts those
answers report, never the amounts the orders asked for. `figures` is a pure function of the rows,
so tests/integration/test_outcomes.py recomputes each figure from the audit log's envelopes
and compares.

Attribution: every figure is counted for the institution that reported the case (a return for
its beneficiary case's), "what came of the reports institution X made"; each is dated by its
own record: a report by its receipt, a stop, freeze or return by the hub's receipt of its
answer, a first stop by the answer of the case's first stop that held money.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from enum import StrEnum

from hub.domain.cases import OrderKind
from hub.service.ports import (
    LeadHistoryRow,
    MoneyAnswerRow,
    OutcomeReader,
    ReportReceivedRow,
    WarningRow,
)
from hub.service.slareport import median_p90

# The longest range one query covers: a year's report with room, and a bound on what one
# request reads.
MAX_RANGE = timedelta(days=1000)


class Period(StrEnum):
    """How the figures are split in time; WHOLE is no split."""

    WHOLE = "whole"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


@dataclass(frozen=True)
class Figures:
    """One row's figures (docs/outcomes.md, "The figures")."""

    reports: int = 0
    lost_fen: int = 0
    first_layer_stops: int = 0
    stopped_first_layer_fen: int = 0
    downstream_stops: int = 0
    stopped_downstream_fen: int = 0
    freezes: int = 0
    frozen_fen: int = 0
    returns: int = 0
    returned_fen: int = 0
    first_stops: int = 0
    first_stop_median_seconds: float | None = None
    first_stop_p90_seconds: float | None = None
    leads: int = 0
    leads_opened_case: int = 0
    leads_listed: int = 0
    leads_warned: int = 0
    leads_asked_for_more: int = 0
    leads_dismissed: int = 0
    leads_pending: int = 0
    # Warnings (docs/outcomes.md, "Warnings"), counted for their addressee.
    warnings_sent: int = 0
    at_risk_fen: int = 0
    warning_outcomes: int = 0
    customers_dissuaded: int = 0
    customers_not_dissuaded: int = 0
    customers_not_reached: int = 0
    customers_already_lost: int = 0
    customers_reached: int = 0
    loss_prevented_fen: int = 0
    warnings_acknowledged: int = 0
    warnings_acknowledged_late: int = 0
    warning_outcomes_late: int = 0

    @property
    def stopped_fen(self) -> int:
        return self.stopped_first_layer_fen + self.stopped_downstream_fen

    @property
    def recovered_share(self) -> float | None:
        """Returned over reported lost, of the same row; None when nothing was reported lost."""
        return self.returned_fen / self.lost_fen if self.lost_fen else None


@dataclass(frozen=True)
class OutcomeRow:
    """One institution's figures (institution "" for every institution's) over [start, end)."""

    institution: str
    start: datetime
    end: datetime
    figures: Figures
    # True for the row of the whole range when the figures are split by period.
    whole: bool = False


@dataclass
class OutcomeReport:
    start: datetime
    end: datetime
    period: Period
    zone: tzinfo
    institution: str | None
    rows: list[OutcomeRow]
    generated_at: datetime | None = None
    database: str = ""

    def rows_of(self, institution: str, *, whole: bool = False) -> list[OutcomeRow]:
        return [r for r in self.rows if r.institution == institution and r.whole == whole]

    @property
    def institutions(self) -> list[str]:
        return list(dict.fromkeys(r.institution for r in self.rows if r.institution))

    @property
    def total(self) -> Figures:
        """Every institution's figures over the whole range."""
        rows = [r for r in self.rows if not r.institution]
        return rows[-1].figures if rows else Figures()


class QueryError(ValueError):
    """The range or period asked for cannot be reported: one line that says what to fix."""


def check_range(start: datetime, end: datetime) -> None:
    if end <= start:
        raise QueryError("the end of the range must come after its start")
    if end - start > MAX_RANGE:
        raise QueryError(
            f"the range is {(end - start).days} days; ask for at most {MAX_RANGE.days} at a time"
        )


# ---- periods ------------------------------------------------------------------------------------


def period_of(moment: datetime, period: Period, zone: tzinfo) -> date:
    """The first day (in `zone`) of the period `moment` falls in."""
    day = moment.astimezone(zone).date()
    if period is Period.WEEK:
        return day - timedelta(days=day.weekday())
    if period is Period.MONTH:
        return day.replace(day=1)
    return day


def _next(first: date, period: Period) -> date:
    if period is Period.WEEK:
        return first + timedelta(days=7)
    if period is Period.MONTH:
        return (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    return first + timedelta(days=1)


def periods(
    start: datetime, end: datetime, period: Period, zone: tzinfo
) -> list[tuple[datetime, datetime]]:
    """The periods [start, end) touches, each clipped to it, in time order."""
    if period is Period.WHOLE:
        return [(start, end)]
    out = []
    first = period_of(start, period, zone)
    while True:
        lo = datetime.combine(first, time(), tzinfo=zone).astimezone(UTC)
        if lo >= end:
            break
        nxt = _next(first, period)
        hi = datetime.combine(nxt, time(), tzinfo=zone).astimezone(UTC)
        out.append((max(lo, start), min(hi, end)))
        first = nxt
    return out


# ---- the figures --------------------------------------------------------------------------------


# The figures that are sums over records, in the CSV's order (docs/outcomes.md).
SUMMED = (
    "reports",
    "lost_fen",
    "first_layer_stops",
    "stopped_first_layer_fen",
    "downstream_stops",
    "stopped_downstream_fen",
    "freezes",
    "frozen_fen",
    "returns",
    "returned_fen",
)
# The leads' figures (docs/outcomes.md, "Leads"): handed over, and the fate of those leads.
LEAD_FIGURES = (
    "leads",
    "leads_opened_case",
    "leads_listed",
    "leads_warned",
    "leads_asked_for_more",
    "leads_dismissed",
    "leads_pending",
)
# The warnings' figures, all sums, in the CSV's order after the others.
WARNING_FIGURES = (
    "warnings_sent",
    "at_risk_fen",
    "warning_outcomes",
    "customers_dissuaded",
    "customers_not_dissuaded",
    "customers_not_reached",
    "customers_already_lost",
    "customers_reached",
    "loss_prevented_fen",
    "warnings_acknowledged",
    "warnings_acknowledged_late",
    "warning_outcomes_late",
)
# Every figure's name, in the CSV's order.
FIGURE_NAMES = (
    *SUMMED,
    "recovered_share",
    "first_stops",
    "first_stop_median_seconds",
    "first_stop_p90_seconds",
    *LEAD_FIGURES,
    *WARNING_FIGURES,
)
_FATE_FIGURE = {
    "case_opened": "leads_opened_case",
    "listed": "leads_listed",
    "warned": "leads_warned",
    "dismissed": "leads_dismissed",
    "asked": "leads_asked_for_more",
    "pending": "leads_pending",
}


def lead_fate(lead: LeadHistoryRow, at: datetime) -> str:
    """What had become of the lead by `at`: its end once decided before `at`; else "asked"
    while a question asked before `at` had no answer before `at`; else "pending"."""
    if lead.decided_at is not None and lead.decided_at < at:
        return lead.end
    asked = [(q, a) for q, a in lead.asks if q < at]
    if asked and (asked[-1][1] is None or asked[-1][1] >= at):
        return "asked"
    return "pending"


# The figure each outcome adds one to (hub.domain.warnings.Outcome's values).
OUTCOME_FIGURES = {
    "reached_dissuaded": "customers_dissuaded",
    "reached_not_dissuaded": "customers_not_dissuaded",
    "not_reached": "customers_not_reached",
    "already_lost": "customers_already_lost",
}


@dataclass
class _Tally:
    sums: Counter[str] = field(default_factory=Counter)
    to_first_stop: list[float] = field(default_factory=list)

    def add(self, other: _Tally) -> None:
        self.sums.update(other.sums)
        self.to_first_stop.extend(other.to_first_stop)

    def figures(self) -> Figures:
        median, p90 = median_p90(sorted(self.to_first_stop))
        return Figures(
            **{name: self.sums[name] for name in (*SUMMED, *LEAD_FIGURES, *WARNING_FIGURES)},
            first_stops=len(self.to_first_stop),
            first_stop_median_seconds=median,
            first_stop_p90_seconds=p90,
        )


def counted_stops(
    answers: Iterable[MoneyAnswerRow],
) -> tuple[list[MoneyAnswerRow], list[MoneyAnswerRow]]:
    """The stops counted as money stopped, and each case's first stop: of each case's stop
    answers that held money, in the order the hub received them, the first of each account
    (a second stop of an account the case already held holds the same money again), and the
    first of all."""
    by_case: dict[str, list[MoneyAnswerRow]] = defaultdict(list)
    for a in answers:
        if a.kind == OrderKind.STOP.value and a.held_fen > 0:
            by_case[a.case_id].append(a)
    counted: list[MoneyAnswerRow] = []
    firsts: list[MoneyAnswerRow] = []
    for stops in by_case.values():
        stops.sort(key=lambda a: (a.answered_at, a.order_id))
        firsts.append(stops[0])
        seen: set[tuple[str, str]] = set()
        for a in stops:
            if a.account not in seen:
                seen.add(a.account)
                counted.append(a)
    return counted, firsts


def figures(
    reports: Sequence[ReportReceivedRow],
    answers: Sequence[MoneyAnswerRow],
    start: datetime,
    end: datetime,
    period: Period,
    zone: tzinfo,
    institution: str | None = None,
    leads: Sequence[LeadHistoryRow] = (),
    *,
    warnings: Sequence[WarningRow] = (),
) -> list[OutcomeRow]:
    """The rows of the report (OutcomeReport.rows in proto/stophub/v1/outcome.proto): each
    institution's, by code, then the total's; per period, then the whole range when split."""
    spans = periods(start, end, period, zone)
    firsts_of_periods = [lo for lo, _ in spans]
    tallies: dict[tuple[str, int], _Tally] = defaultdict(_Tally)

    def tally(inst: str, at: datetime) -> _Tally | None:
        if not start <= at < end or (institution is not None and inst != institution):
            return None
        index = _index(firsts_of_periods, at)
        return tallies[(inst, index)]

    for r in reports:
        if (t := tally(r.institution, r.received_at)) is not None:
            t.sums.update(reports=1, lost_fen=r.lost_fen)
    stops, firsts = counted_stops(answers)
    for a in stops:
        if (t := tally(a.institution, a.answered_at)) is not None:
            layer = "downstream" if a.downstream else "first_layer"
            t.sums.update({f"{layer}_stops": 1, f"stopped_{layer}_fen": a.held_fen})
    for a in firsts:
        if (t := tally(a.institution, a.answered_at)) is not None:
            t.to_first_stop.append((a.answered_at - a.case_received_at).total_seconds())
    for a in answers:
        freeze = a.kind == OrderKind.FREEZE.value and a.held_fen > 0 and not a.renews
        paid = a.kind == OrderKind.RETURN.value and a.returned_fen > 0
        if (freeze or paid) and (t := tally(a.institution, a.answered_at)) is not None:
            if freeze:
                t.sums.update(freezes=1, frozen_fen=a.held_fen)
            else:
                t.sums.update(returns=1, returned_fen=a.returned_fen)

    for lead in leads:
        if (t := tally(lead.institution, lead.submitted_at)) is not None:
            t.sums.update({"leads": 1, _FATE_FIGURE[lead_fate(lead, end)]: 1})
    for w in warnings:
        count_warning(w, tally)

    institutions = sorted({inst for inst, _ in tallies} | ({institution} if institution else set()))
    rows: list[OutcomeRow] = []
    for inst in [*institutions, ""]:
        whole = _Tally()
        for i, (lo, hi) in enumerate(spans):
            part = _Tally()
            for name in institutions if inst == "" else [inst]:
                found = tallies.get((name, i))
                if found is not None:
                    part.add(found)
            whole.add(part)
            rows.append(OutcomeRow(inst, lo, hi, part.figures()))
        if period is not Period.WHOLE:
            rows.append(OutcomeRow(inst, start, end, whole.figures(), whole=True))
    return rows


def count_warning(w: WarningRow, tally: Callable[[str, datetime], _Tally | None]) -> None:
    """A warning's figures, each on the day of its own step: sent, acknowledged, closed."""
    if (t := tally(w.addressee, w.sent_at)) is not None:
        t.sums.update(warnings_sent=1, at_risk_fen=w.amount_at_risk_fen)
    if w.acknowledged_at is not None and (t := tally(w.addressee, w.acknowledged_at)):
        late = w.contact_by is not None and w.acknowledged_at > w.contact_by
        t.sums.update(warnings_acknowledged=1, warnings_acknowledged_late=int(late))
    if w.outcome_at is not None and w.outcome and (t := tally(w.addressee, w.outcome_at)):
        late = w.outcome_by is not None and w.outcome_at > w.outcome_by
        reached = w.outcome in ("reached_dissuaded", "reached_not_dissuaded")
        t.sums.update(
            {
                "warning_outcomes": 1,
                OUTCOME_FIGURES[w.outcome]: 1,
                "customers_reached": int(reached),
                "loss_prevented_fen": w.loss_prevented_fen,
                "warning_outcomes_late": int(late),
            }
        )


def _index(firsts: Sequence[datetime], at: datetime) -> int:
    """The period (by its start, sorted) `at` falls in."""
    lo, hi = 0, len(firsts) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if firsts[mid] <= at:
            lo = mid
        else:
            hi = mid - 1
    return lo


def gather(
    reader: OutcomeReader,
    start: datetime,
    end: datetime,
    period: Period,
    zone: tzinfo,
    institution: str | None = None,
    *,
    generated_at: datetime | None = None,
    database: str = "",
) -> OutcomeReport:
    """The report of [start, end), read in the caller's one read transaction."""
    check_range(start, end)
    rows = figures(
        reader.reports_received(start, end, institution),
        reader.money_answers(start, end, institution),
        start,
        end,
        period,
        zone,
        institution,
        reader.leads_submitted(start, end, institution),
        warnings=reader.warning_steps(start, end, institution),
    )
    return OutcomeReport(
        start, end, period, zone, institution, rows, generated_at=generated_at, database=database
    )
