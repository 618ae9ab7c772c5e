"""The SLA report's figures (`stophub report sla`): the clocks started in a period and their
SLA log, per institution and clock kind, and the timelines of chosen cases. The numbers only;
hub/cli/render/report.py draws them as one HTML file, and hub/store/reports.py reads the rows.

`gather` reads through an `SlaReader` (the rows as stored) and the case repository;
`summarise` and `breaches_by_day` are pure functions of those rows, so the report's numbers are
the log's numbers.

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
from typing import Protocol

from hub.domain.cases import Case, Order, OrderKind
from hub.service.ports import CaseRepository

ESCALATIONS = frozenset({"reminder", "breach", "regulator"})
STOPPED = frozenset({"met", "missed"})


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


class SlaReader(Protocol):
    """The clocks and SLA log rows as stored (hub.store.reports.SqlReports)."""

    def clocks_started(self, start: datetime, end: datetime) -> list[ClockRow]:
        """The clocks started in [start, end), by start."""
        ...

    def log_of_clocks_started(self, start: datetime, end: datetime) -> list[LogRow]:
        """The SLA log of the clocks started in [start, end), in log order."""
        ...

    def clocks_of_case(self, case_id: str) -> list[ClockRow]:
        """All the case's clocks, by start."""
        ...

    def log_of_case(self, case_id: str) -> list[LogRow]:
        """The case's SLA log, in log order."""
        ...


def gather(
    reader: SlaReader,
    cases: CaseRepository,
    start: datetime,
    end: datetime,
    case_ids: Sequence[str] = (),
    *,
    generated_at: datetime | None = None,
) -> SlaReport:
    """The clocks started in [start, end), their SLA log, and the timelines of `case_ids`."""
    clock_rows = reader.clocks_started(start, end)
    log_rows = reader.log_of_clocks_started(start, end)
    timelines = [case_timeline(reader, cases, case_id) for case_id in dict.fromkeys(case_ids)]
    return SlaReport(start, end, generated_at, clock_rows, log_rows, timelines)


def case_timeline(reader: SlaReader, cases: CaseRepository, case_id: str) -> CaseTimeline:
    """A case's events, all its clocks and their SLA log, whatever the period."""
    case: Case | None = cases.get(case_id)
    if case is None:
        return CaseTimeline(case_id, found=False)
    return CaseTimeline(
        case_id=case_id,
        found=True,
        reporting_institution=case.reporting_institution,
        state=case.state.value,
        created_at=case.created_at,
        events=[CaseEventRow(e.at, e.kind, e.actor, e.summary) for e in case.events],
        clocks=reader.clocks_of_case(case_id),
        log=reader.log_of_case(case_id),
        phases=phases(case),
    )


def phases(case: Case) -> list[tuple[str, timedelta | None]]:
    """How long each phase of the case took, derived from its recorded times only: what the
    clocks judge, shown beside a case (`stophub case show`) and in the report's timelines."""
    stops = [o for o in case.orders if o.kind is OrderKind.STOP]
    freezes = [o for o in case.orders if o.kind is OrderKind.FREEZE]
    returns = [o for o in case.orders if o.kind is OrderKind.RETURN]

    def first(orders: list[Order], attr: str) -> datetime | None:
        values = [getattr(o, attr) for o in orders if getattr(o, attr) is not None]
        return min(values) if values else None

    def last(orders: list[Order], attr: str) -> datetime | None:
        values = [getattr(o, attr) for o in orders if getattr(o, attr) is not None]
        return max(values) if values else None

    def between(a: datetime | None, b: datetime | None) -> timedelta | None:
        return None if a is None or b is None else b - a

    first_effect = first(stops, "effective_at")
    return [
        ("report → verified (verify, 5 min)", between(case.created_at, case.verified_at)),
        ("verified → first stop issued", between(case.verified_at, first(stops, "issued_at"))),
        (
            "verified → last stop answered (stop, 10 min)",
            between(case.verified_at, last(stops, "answered_at")),
        ),
        (
            "first stop in effect → freeze issued (investigate, 24 h)",
            between(first_effect, first(freezes, "issued_at")),
        ),
        (
            "return issued → last return answered",
            between(first(returns, "issued_at"), last(returns, "answered_at")),
        ),
        ("report → case closed", between(case.created_at, case.closed_at)),
    ]
