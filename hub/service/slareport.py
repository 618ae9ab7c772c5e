"""The SLA report's figures (`stophub report sla`): the clocks started in a period and their
SLA log, per clock kind and per institution, the timelines of chosen cases, and what the report
was made from (the audit log's latest signed checkpoint). The numbers only;
hub/render/report.py draws them as one HTML file, and hub/store/reports.py reads the rows.

`gather` reads through an `SlaReader` (the rows as stored), the case repository and the
registry, in the one read transaction its caller opened; `summarise` and `breaches_by_day` are
pure functions of those rows, so the report's numbers are the log's numbers.

Definitions (docs/sla-report.md, and the report's footnote in plain words):

* a clock's time taken is stopped_at - started_at, for clocks that were stopped (met or
  missed); open and ended clocks are counted but have none;
* median: `statistics.median`; 90th percentile: `statistics.quantiles(n=10,
  method="inclusive")[8]` (at rank 0.9 * (n - 1) of the sorted times, linear between its two
  neighbours); with one time, both are that time;
* deadline: the clock's window, deadline_at - started_at, the most common one of the row
  (the shortest among equally common ones);
* breached: the clock was missed (stopped after its deadline) or its breach step fired;
  share met: met / (met + breached), None when neither;
* reminders: SLA log entries `reminder` and `renewal_reminder`; breach notices: `breach`;
  escalations: `regulator`;
* a breach is dated at its clock's deadline, by day in the report's zone, in the chart of
  breaches over time.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Protocol

from hub.domain.cases import Case, Order, OrderKind
from hub.domain.institutions import HUB_CODE
from hub.service.auditverify import checkpoint_problem
from hub.service.ports import CaseRepository, InstitutionRepository, LogCheckpointRow
from hub.service.trust import TrustedKeys
from stophub.v1 import envelope_pb2

REMINDERS = frozenset({"reminder", "renewal_reminder"})
BREACH_NOTICES = frozenset({"breach"})
ESCALATIONS = frozenset({"regulator"})
# The steps a timeline marks on its clock's bar: every notice the ladder sent.
NOTICES = REMINDERS | BREACH_NOTICES | ESCALATIONS | {"expire", "notice_end"}
STOPPED = frozenset({"met", "missed"})

# The one table of what the report calls each clock kind (hub/system/policy.toml's names), in
# the order a case meets them, with what each times. A kind a policy file adds and this table
# lacks is written with spaces for underscores.
CLOCK_NAMES: dict[str, tuple[str, str]] = {
    "record": ("report receipt", "the hub receives a report its sender signed"),
    "verify": ("verification", "the reporting institution confirms or rejects its report"),
    "stop_issue": ("stop issue", "the anti-fraud centre issues the first stop after verification"),
    "stop": ("stop answer", "the institution holding the account answers a stop order"),
    "investigate": (
        "investigation",
        "the centre freezes or releases the money after a stop took effect",
    ),
    "stop_validity": (
        "stop validity",
        "a stop in effect lapses at its deadline unless it ended before (a period, not a duty)",
    ),
    "freeze_term": (
        "freeze term",
        "a freeze runs its term; renewal reminders come before it lapses (a period, not a duty)",
    ),
    "fund_return": ("fund return", "the institution holding frozen money answers a return order"),
    "release_unrelated": (
        "release of unrelated funds",
        "the institution holding the account answers a release order",
    ),
    "public_notice": (
        "public notice",
        "the notice before money held for several victims is shared (a period, never a breach)",
    ),
    "appeal": ("appeal decision", "the centre decides an appeal against a stop, freeze or listing"),
    "lead_triage": (
        "lead triage",
        "the centre accepts, asks more of, or dismisses a member's lead (window by its grade)",
    ),
    **{
        f"warning_contact_{grade}": (
            f"warning contact, {grade}",
            f"the warning's addressee attempts contact with the customer at risk ({grade} warning)",
        )
        for grade in ("red", "yellow", "green", "ungraded")
    },
    "warning_outcome": (
        "warning outcome",
        "the warning's addressee reports whether the customer was reached and dissuaded",
    ),
}


def clock_name(kind: str) -> str:
    """What the report calls a clock kind: "fund return", never `fund_return`."""
    known = CLOCK_NAMES.get(kind)
    return known[0] if known else kind.replace("_", " ")


def kind_order(kind: str) -> tuple[int, str]:
    """Kinds in the order a case meets them; kinds the table lacks after, by name."""
    order = list(CLOCK_NAMES)
    return (order.index(kind), "") if kind in CLOCK_NAMES else (len(order), kind)


class ReportError(Exception):
    """The report cannot be made as asked: one line that says what to do."""


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
    # Every person's name the case holds (Case.personal_names): masked in its free text.
    personal_names: frozenset[str] = frozenset()

    def order_label(self, clock: ClockRow) -> str:
        """The order (or appeal) a clock belongs to, as the case's views write it: O001."""
        return clock.order_id.removeprefix(f"{self.case_id}-")


@dataclass(frozen=True)
class Checkpoint:
    """The audit log's latest hub-signed checkpoint, as the report cites it."""

    tree_size: int
    root_hash: bytes
    signed_at: datetime
    key_id: str
    algorithm: str
    signature: bytes
    # The signed envelope itself (docs/audit.md), so anyone can check the signature offline.
    envelope: bytes
    # Whether the key that verified it was given to the report as the hub's own (`--hub-key`,
    # or endorsed by such a key), rather than read from the database's registry, which whoever
    # holds the database can change.
    pinned: bool = False


# ---- figures ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SummaryRow:
    """One institution's figures for one clock kind, or (institution "") every institution's."""

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
    reminders: int
    breach_notices: int
    escalations: int

    @property
    def share_met(self) -> float | None:
        """Met out of the clocks judged (met or breached); None when none was judged."""
        judged = self.met + self.breached
        return self.met / judged if judged else None


@dataclass
class SlaReport:
    start: datetime
    end: datetime
    generated_at: datetime | None
    clocks: list[ClockRow]
    log: list[LogRow]
    cases: list[CaseTimeline] = field(default_factory=list)
    # The zone the report writes times in, and counts breaches per day of.
    zone: tzinfo = UTC
    # The database as the report names it (no password), and its clocks' first and last start.
    database: str = ""
    span: tuple[datetime, datetime] | None = None
    # The audit log's latest signed checkpoint when the report was read, and the log's size then.
    checkpoint: Checkpoint | None = None
    log_size: int = 0
    # Whether names in free text are shown as stored (`--personal-data`) or masked.
    personal_data: bool = False

    @property
    def rows(self) -> list[SummaryRow]:
        return summarise(self.clocks, self.log)

    @property
    def kinds(self) -> list[SummaryRow]:
        return summarise(self.clocks, self.log, by_institution=False)

    @property
    def breaches(self) -> dict[str, dict[date, int]]:
        return breaches_by_day(self.clocks, self.zone)

    @property
    def days(self) -> list[date]:
        return days_of(self.start, self.end, self.zone)


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


def summarise(
    clock_rows: Sequence[ClockRow], log_rows: Sequence[LogRow], *, by_institution: bool = True
) -> list[SummaryRow]:
    """Per institution (the responsible one) and clock kind, or per kind alone; by institution,
    then kinds in the order a case meets them."""
    groups: dict[tuple[str, str], list[ClockRow]] = defaultdict(list)
    for c in clock_rows:
        groups[(c.responsible if by_institution else "", c.kind)].append(c)
    steps: dict[str, Counter[str]] = defaultdict(Counter)
    for r in log_rows:
        steps[r.clock_id][r.event] += 1

    def notices(members: list[ClockRow], events: frozenset[str]) -> int:
        return sum(steps[c.clock_id][e] for c in members for e in events)

    out = []
    for (institution, kind), members in sorted(
        groups.items(), key=lambda g: (g[0][0], kind_order(g[0][1]))
    ):
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
                reminders=notices(members, REMINDERS),
                breach_notices=notices(members, BREACH_NOTICES),
                escalations=notices(members, ESCALATIONS),
            )
        )
    return out


def breaches_by_day(clock_rows: Sequence[ClockRow], zone: tzinfo) -> dict[str, dict[date, int]]:
    """Institution -> day (in `zone`) of the deadline -> breached clocks."""
    out: dict[str, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    for c in clock_rows:
        if c.is_breached:
            out[c.responsible][c.deadline_at.astimezone(zone).date()] += 1
    return {inst: dict(days) for inst, days in sorted(out.items())}


def days_of(start: datetime, end: datetime, zone: tzinfo) -> list[date]:
    """The days (in `zone`) the period [start, end) touches."""
    first = start.astimezone(zone).date()
    last = (end.astimezone(zone) - timedelta(microseconds=1)).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def day_start(day: date, zone: tzinfo) -> datetime:
    """Midnight at the start of `day` in `zone`, in UTC."""
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)


def period(
    start: datetime | None,
    end: datetime | None,
    span: tuple[datetime, datetime] | None,
    zone: tzinfo,
    today: datetime,
) -> tuple[datetime, datetime]:
    """The report's period: `start` and `end` where given; else from the day (in `zone`) of the
    first clock to the end of the day of the last (`span`), so that a report without dates
    covers every clock; a database without clocks gives `today`'s day."""
    first, last = span if span is not None else (today, today)
    if start is None:
        start = day_start(first.astimezone(zone).date(), zone)
        if end is not None and start >= end:
            start = day_start((end - timedelta(microseconds=1)).astimezone(zone).date(), zone)
    if end is None:
        end = day_start(max(last, start).astimezone(zone).date() + timedelta(days=1), zone)
    return start, end


# ---- reading ------------------------------------------------------------------------------------


class SlaReader(Protocol):
    """The clocks and SLA log rows as stored (hub.store.reports.SqlReports)."""

    def clocks_started(self, start: datetime, end: datetime) -> list[ClockRow]:
        """The clocks started in [start, end), by start."""
        ...

    def log_of_clocks_started(self, start: datetime, end: datetime) -> list[LogRow]:
        """The SLA log of the clocks started in [start, end), in log order."""
        ...

    def clock_span(self) -> tuple[datetime, datetime] | None:
        """The first and the last start of any clock; None without clocks."""
        ...

    def clocks_of_case(self, case_id: str) -> list[ClockRow]:
        """All the case's clocks, by start."""
        ...

    def log_of_case(self, case_id: str) -> list[LogRow]:
        """The case's SLA log, in log order."""
        ...

    def latest_checkpoint(self) -> LogCheckpointRow | None:
        """The audit log's checkpoint of the largest tree; None before the first."""
        ...

    def audit_tree_size(self) -> int:
        """How many entries the audit log's tree holds now."""
        ...


def gather(
    reader: SlaReader,
    cases: CaseRepository,
    institutions: InstitutionRepository,
    start: datetime | None,
    end: datetime | None,
    case_ids: Sequence[str] = (),
    *,
    generated_at: datetime,
    zone: tzinfo = UTC,
    database: str = "",
    personal_data: bool = False,
    trusted: TrustedKeys | None = None,
) -> SlaReport:
    """The clocks started in [start, end) (a missing end of the period from the database's
    clocks: `period`), their SLA log, the timelines of `case_ids`, and the audit log's latest
    checkpoint, checked with `trusted` (the hub's keys given to the report, and those they
    endorsed) or, without them, the hub's keys as the registry lists them. ReportError when
    that checkpoint does not verify: a report cited as evidence must not rest on one."""
    span = reader.clock_span()
    start, end = period(start, end, span, zone, generated_at)
    checkpoint = latest_checkpoint(reader, institutions, trusted)
    return SlaReport(
        start,
        end,
        generated_at,
        reader.clocks_started(start, end),
        reader.log_of_clocks_started(start, end),
        [case_timeline(reader, cases, case_id) for case_id in dict.fromkeys(case_ids)],
        zone=zone,
        database=database,
        span=span,
        checkpoint=checkpoint,
        log_size=reader.audit_tree_size(),
        personal_data=personal_data,
    )


def latest_checkpoint(
    reader: SlaReader, institutions: InstitutionRepository, trusted: TrustedKeys | None = None
) -> Checkpoint | None:
    """The latest signed checkpoint, verified with the `trusted` hub keys, or without them
    with the hub's keys as the registry holds them."""
    row = reader.latest_checkpoint()
    if row is None:
        return None
    if trusted is not None:
        keys = trusted.keys
        against = "the hub keys given (--hub-key) and those they endorsed"
    else:
        hub = institutions.get(HUB_CODE)
        keys = {k.key_id: k.public_key for k in hub.keys} if hub is not None else {}
        against = "the hub's keys in the database's registry"
    problem = checkpoint_problem(row, keys.get)
    if problem:
        raise ReportError(
            f"the audit log's latest checkpoint (tree of {row.tree_size}) does not verify with "
            f"{against}: {problem}; run `stophub audit verify` and make no report from this "
            "database until it passes"
        )
    envelope = envelope_pb2.Envelope.FromString(row.envelope)
    return Checkpoint(
        row.tree_size,
        row.root_hash,
        row.signed_at,
        envelope.key_id,
        envelope.algorithm or "ed25519",
        envelope.signature,
        row.envelope,
        pinned=trusted is not None,
    )


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
        personal_names=frozenset(case.personal_names()),
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
        (
            f"report → verified ({clock_name('verify')})",
            between(case.created_at, case.verified_at),
        ),
        (
            f"verified → first stop issued ({clock_name('stop_issue')})",
            between(case.verified_at, first(stops, "issued_at")),
        ),
        (
            f"verified → last stop answered ({clock_name('stop')})",
            between(case.verified_at, last(stops, "answered_at")),
        ),
        (
            f"first stop in effect → freeze issued ({clock_name('investigate')})",
            between(first_effect, first(freezes, "issued_at")),
        ),
        (
            f"return issued → last return answered ({clock_name('fund_return')})",
            between(first(returns, "issued_at"), last(returns, "answered_at")),
        ),
        ("report → case closed", between(case.created_at, case.closed_at)),
    ]
