"""Case clocks: what starts and stops each one, its window, and its escalation ladder.

Plain Python. A clock is a row with a due time for its next step; the service layer starts
and stops clocks from the triggers a command produced and the sweep fires due steps.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from hub.domain.cases import Case, Order, OrderKind, OrderState, add_months
from hub.domain.warnings import ACKNOWLEDGED, OUTCOME, SENT
from hub.domain.warnings import Grade as WarningGrade
from hub.domain.workdays import WorkingDays, add_working_days, estimated_years


class Responsible(StrEnum):
    HUB = "hub"
    REPORTER = "reporter"
    CENTRE = "centre"
    ADDRESSEE = "addressee"


class StepKind(StrEnum):
    REMINDER = "reminder"
    BREACH = "breach"
    REGULATOR = "regulator"
    RENEWAL_REMINDER = "renewal_reminder"
    EXPIRE = "expire"
    # A waiting period ran its course (a distribution's public notice): the responsible
    # institution may act now. Not a deadline, so never a breach.
    NOTICE_END = "notice_end"


class ClockState(StrEnum):
    OPEN = "open"
    MET = "met"  # stopped before its deadline
    MISSED = "missed"  # stopped after its deadline
    ENDED = "ended"  # ran to the end of its ladder without being stopped


# Distribution events are recorded on the case the centre started the distribution from.
DISTRIBUTION_TRIGGERS = frozenset(
    {"distribution.noticed", "distribution.decided", "distribution.withdrawn"}
)
# An appeal's events name the appeal in their order_id; its clock is keyed by it, so two
# appeals in one case run two clocks.
APPEAL_TRIGGERS = frozenset({"appeal.filed", "appeal.decided"})
# A lead's events (docs/leads.md): its triage clock is keyed by the lead, not by a case.
LEAD_TRIGGERS = frozenset({"lead.submitted", "lead.triaged"})
CASE_TRIGGERS = (
    frozenset(
        {"report.sent", "report.received", "report.verified", "report.rejected", "case.closed"}
    )
    | DISTRIBUTION_TRIGGERS
    | APPEAL_TRIGGERS
)
ORDER_TRIGGERS = frozenset(
    f"{kind.value}.{what}"
    for kind in OrderKind
    for what in ("issued", "answered", "effective", "ended")
)
# A warning's clocks run on the warning (hub/service/warnings.py): its contact clock starts
# on the grade's "warning.sent.<grade>", so the policy gives each grade its own window.
WARNING_TRIGGERS = frozenset(
    {SENT, ACKNOWLEDGED, OUTCOME, *(grade.trigger for grade in WarningGrade)}
)
TRIGGERS = CASE_TRIGGERS | ORDER_TRIGGERS | LEAD_TRIGGERS | WARNING_TRIGGERS
ENDED_STATES = frozenset(
    {
        OrderState.RELEASED,
        OrderState.CONVERTED,
        OrderState.RETURNED,
        OrderState.CANCELLED,
        OrderState.EXPIRED,
        OrderState.RENEWED,
    }
)


@dataclass(frozen=True)
class Window:
    """How long a clock runs: minutes, hours, days, working days, or the freeze's own term."""

    amount: int
    unit: str  # "seconds" | "minutes" | "hours" | "days" | "working_days" | "term"

    def deadline(self, start: datetime, calendar: WorkingDays, order: Order | None) -> datetime:
        if self.unit == "seconds":
            return start + timedelta(seconds=self.amount)
        if self.unit == "minutes":
            return start + timedelta(minutes=self.amount)
        if self.unit == "hours":
            return start + timedelta(hours=self.amount)
        if self.unit == "days":
            return start + timedelta(days=self.amount)
        if self.unit == "working_days":
            return add_working_days(start, self.amount, calendar)
        if order is None or not order.term_months:
            raise ValueError("a 'term' window needs an order with a term")
        return add_months(start, order.term_months)

    def estimated_years(
        self, start: datetime, deadline: datetime, calendar: WorkingDays
    ) -> tuple[int, ...]:
        """The years without an official holiday calendar that a working-day deadline was
        counted over (Monday to Friday stood in for them); empty for any other window."""
        if self.unit != "working_days":
            return ()
        return estimated_years(start, deadline, calendar)

    def __str__(self) -> str:
        if self.unit == "term":
            return "the order's term"
        unit = self.unit.replace("_", " ")
        return f"{self.amount} {unit if self.amount != 1 else unit.removesuffix('s')}"


@dataclass(frozen=True)
class Step:
    kind: StepKind
    percent: int | None = None  # of the window, from the start
    before_end: timedelta | None = None  # before the deadline

    def at(self, start: datetime, deadline: datetime) -> datetime:
        if self.before_end is not None:
            return deadline - self.before_end
        assert self.percent is not None
        return start + (deadline - start) * self.percent / 100

    def __str__(self) -> str:
        if self.before_end is not None:
            hours = int(self.before_end.total_seconds() // 3600)
            if hours % 24:
                return f"{self.kind.value}@-{hours}h"
            return f"{self.kind.value}@-{hours // 24}d"
        return f"{self.kind.value}@{self.percent}%"


@dataclass(frozen=True)
class ClockPolicy:
    name: str
    starts: str
    stops: frozenset[str]
    window: Window
    responsible: Responsible
    ladder: tuple[Step, ...]
    # A window per grade ("red", "yellow", "green") where the policy gives one
    # (docs/grades.md); any other grade runs `window`.
    grade_windows: tuple[tuple[str, Window], ...] = ()

    def window_for(self, grade: str) -> Window:
        """The window a clock of a case or lead of `grade` runs."""
        return dict(self.grade_windows).get(grade, self.window)

    @property
    def order_scoped(self) -> bool:
        return self.starts in ORDER_TRIGGERS

    @property
    def order_kind(self) -> OrderKind | None:
        return OrderKind(self.starts.split(".")[0]) if self.order_scoped else None


@dataclass(frozen=True)
class Policy:
    clocks: tuple[ClockPolicy, ...]

    def clock(self, name: str) -> ClockPolicy | None:
        return next((c for c in self.clocks if c.name == name), None)


@dataclass(frozen=True)
class Trigger:
    """Something a command did that may start or stop a clock."""

    name: str
    at: datetime
    order: Order | None = None
    # What a keyed clock (an appeal's) belongs to.
    key: str = ""


@dataclass(eq=False)
class CaseClock:
    """One running clock of one case (and order), with the time of its next step."""

    clock_id: str
    case_id: str
    kind: str
    responsible: str
    started_at: datetime
    deadline_at: datetime
    order_id: str = ""
    state: ClockState = ClockState.OPEN
    next_step: str = ""
    next_step_at: datetime | None = None
    steps_done: int = 0
    breached: bool = False
    stopped_at: datetime | None = None
    stopped_by: str = ""
    # Counted in working days over a year the hub had no official holiday calendar for, so
    # the deadline may fall on a public holiday or ignore a make-up working day.
    deadline_estimated: bool = False
    # A breach acknowledged by a person (SlaService.AcknowledgeBreach): when, by which
    # institution, which person (the envelope's operator) and what they noted.
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    acknowledged_operator: str | None = None
    acknowledge_note: str | None = None


@dataclass(frozen=True)
class SlaEntry:
    """One row of the SLA log."""

    clock_id: str
    case_id: str
    order_id: str
    kind: str
    event: str  # started | met | missed | reminder | breach | regulator | renewal_reminder | expire
    at: datetime
    due_at: datetime | None
    responsible: str
    late_seconds: float = 0.0
    detail: str = ""


@dataclass
class ClockChanges:
    started: list[CaseClock] = field(default_factory=list)
    stopped: list[CaseClock] = field(default_factory=list)
    log: list[SlaEntry] = field(default_factory=list)


# ---- triggers from a command ------------------------------------------------------------------


def triggers_of(
    case: Case,
    events_since: int,
    states_before: dict[str, OrderState],
    *,
    sent_at: datetime | None = None,
) -> list[Trigger]:
    """The triggers a command produced, from the events it appended and the orders it changed."""
    out: list[Trigger] = []
    orders = {o.order_id: o for o in case.orders}
    for event in case.events[events_since:]:
        order = orders.get(event.order_id) if event.order_id else None
        if event.kind == "report.received" and sent_at is not None:
            out.append(Trigger("report.sent", sent_at))
        if event.kind in APPEAL_TRIGGERS:
            out.append(Trigger(event.kind, event.at, key=event.order_id))
        elif event.kind in CASE_TRIGGERS:
            out.append(Trigger(event.kind, event.at))
        elif event.kind == "order.issued" and order is not None:
            out.append(Trigger(f"{order.kind.value}.issued", event.at, order))
        elif event.kind == "order.answered" and order is not None:
            out.append(Trigger(f"{order.kind.value}.answered", event.at, order))
            if order.state is OrderState.HOLDING and order.effective_at is not None:
                out.append(Trigger(f"{order.kind.value}.effective", event.at, order))
    now = case.events[-1].at if case.events else None
    for order in case.orders:
        before = states_before.get(order.order_id)
        if order.state in ENDED_STATES and before is not None and before not in ENDED_STATES:
            assert now is not None
            out.append(Trigger(f"{order.kind.value}.ended", now, order))
    return out


def _stops(
    clock: CaseClock, policy: ClockPolicy, trigger: Trigger, orders: dict[str, Order]
) -> bool:
    if trigger.name not in policy.stops:
        return False
    if trigger.key:
        return clock.order_id == trigger.key
    if not clock.order_id:
        return True
    if trigger.order is None:
        return trigger.name in CASE_TRIGGERS
    other = trigger.order
    if other.order_id == clock.order_id or other.target_order_id == clock.order_id:
        return True
    mine = orders.get(clock.order_id)
    # A freeze or release on the same account answers the investigation of a stop.
    return (
        mine is not None
        and mine.kind is OrderKind.STOP
        and (other.account_institution, other.account_number)
        == (mine.account_institution, mine.account_number)
        and other.kind in (OrderKind.FREEZE, OrderKind.RELEASE)
    )


def responsible_for(
    policy: ClockPolicy, case: Case, order: Order | None, centres: Sequence[str], hub_code: str
) -> str:
    match policy.responsible:
        case Responsible.HUB:
            return hub_code
        case Responsible.REPORTER:
            return case.reporting_institution
        case Responsible.ADDRESSEE:
            return order.addressed_to if order is not None else case.reporting_institution
        case Responsible.CENTRE:
            if order is not None and order.issued_by:
                return order.issued_by
            return centres[0] if centres else hub_code


def next_step(policy: ClockPolicy, clock: CaseClock) -> tuple[str, datetime | None]:
    """The clock's next step after `steps_done` of its ladder, or none."""
    steps = sorted(policy.ladder, key=lambda s: s.at(clock.started_at, clock.deadline_at))
    if clock.steps_done >= len(steps):
        return "", None
    step = steps[clock.steps_done]
    return step.kind.value, step.at(clock.started_at, clock.deadline_at)


def apply_triggers(
    policy: Policy,
    case: Case,
    triggers: Iterable[Trigger],
    open_clocks: Sequence[CaseClock],
    *,
    new_id: Callable[[], str],
    calendar: WorkingDays,
    centres: Sequence[str],
    hub_code: str,
) -> ClockChanges:
    """Start and stop clocks for what a command did; stop first, so a trigger that both
    stops and starts (none in the defaults) never stops the clock it just started."""
    changes = ClockChanges()
    orders = {o.order_id: o for o in case.orders}
    open_now = [c for c in open_clocks if c.state is ClockState.OPEN]
    triggers = list(triggers)
    for trigger in triggers:
        for clock in open_now:
            cp = policy.clock(clock.kind)
            if cp is None or clock.state is not ClockState.OPEN:
                continue
            if _stops(clock, cp, trigger, orders):
                stop(clock, trigger.at, trigger.name, changes)
        for cp in policy.clocks:
            if cp.starts != trigger.name:
                continue
            order = trigger.order if cp.order_scoped else None
            start_at = trigger.at
            window = cp.window_for(case.grade)
            deadline = window.deadline(start_at, calendar, order)
            estimated = window.estimated_years(start_at, deadline, calendar)
            clock = CaseClock(
                clock_id=new_id(),
                case_id=case.case_id,
                order_id=order.order_id if order is not None else trigger.key,
                kind=cp.name,
                responsible=responsible_for(cp, case, order, centres, hub_code),
                started_at=start_at,
                deadline_at=deadline,
                deadline_estimated=bool(estimated),
            )
            clock.next_step, clock.next_step_at = next_step(cp, clock)
            changes.started.append(clock)
            open_now.append(clock)
            changes.log.append(
                SlaEntry(
                    clock.clock_id,
                    case.case_id,
                    clock.order_id,
                    cp.name,
                    "started",
                    start_at,
                    deadline,
                    clock.responsible,
                    detail=f"{window} to {cp.responsible.value}"
                    + (f" ({case.grade})" if window is not cp.window else "")
                    + (f"; {estimate_note(estimated)}" if estimated else ""),
                )
            )
    return changes


def start_keyed(
    cp: ClockPolicy,
    subject_id: str,
    *,
    grade: str,
    start_at: datetime,
    responsible: str,
    calendar: WorkingDays,
    new_id: Callable[[], str],
) -> tuple[CaseClock, SlaEntry]:
    """A clock of something that is not a case (a lead's triage): its case_id holds the
    subject's id. Returns the clock and its `started` SLA log row."""
    window = cp.window_for(grade)
    deadline = window.deadline(start_at, calendar, None)
    estimated = window.estimated_years(start_at, deadline, calendar)
    clock = CaseClock(
        clock_id=new_id(),
        case_id=subject_id,
        kind=cp.name,
        responsible=responsible,
        started_at=start_at,
        deadline_at=deadline,
        deadline_estimated=bool(estimated),
    )
    clock.next_step, clock.next_step_at = next_step(cp, clock)
    entry = SlaEntry(
        clock.clock_id,
        subject_id,
        "",
        cp.name,
        "started",
        start_at,
        deadline,
        responsible,
        detail=f"{window} to {cp.responsible.value}"
        + (f" ({grade})" if window is not cp.window else "")
        + (f"; {estimate_note(estimated)}" if estimated else ""),
    )
    return clock, entry


def estimate_note(years: Sequence[int]) -> str:
    """What an estimated deadline says of itself, wherever it is written."""
    named = " and ".join(str(y) for y in years)
    return f"deadline estimated: no official holiday calendar for {named}"


def stop(clock: CaseClock, at: datetime, why: str, changes: ClockChanges) -> None:
    missed = at > clock.deadline_at
    clock.state = ClockState.MISSED if missed else ClockState.MET
    clock.breached = clock.breached or missed
    clock.stopped_at = at
    clock.stopped_by = why
    clock.next_step, clock.next_step_at = "", None
    changes.stopped.append(clock)
    late = (at - clock.deadline_at).total_seconds() if missed else 0.0
    changes.log.append(
        SlaEntry(
            clock.clock_id,
            clock.case_id,
            clock.order_id,
            clock.kind,
            "missed" if missed else "met",
            at,
            clock.deadline_at,
            clock.responsible,
            late_seconds=late,
            detail=why,
        )
    )


# ---- the policy file --------------------------------------------------------------------------

_STEP = re.compile(r"^(?P<kind>[a-z_]+)@(?:(?P<pct>\d+)%|-(?P<days>\d+)d|-(?P<hours>\d+)h)$")
_WINDOW = re.compile(r"^(?P<n>\d+)\s+(?P<unit>seconds?|minutes?|hours?|days?|working days?)$")


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the line."""


def parse_window(text: str) -> Window:
    if text.strip() == "term":
        return Window(0, "term")
    m = _WINDOW.match(text.strip())
    if not m or int(m["n"]) <= 0:
        raise ValueError(
            f"window {text!r}: write 'N minutes', 'N hours', 'N days', 'N working days', "
            "'term', or 'N seconds' (for tests and drills)"
        )
    unit = m["unit"].rstrip("s").replace(" ", "_") + "s"
    return Window(int(m["n"]), unit)


def parse_step(text: str) -> Step:
    m = _STEP.match(text.strip())
    if not m:
        raise ValueError(
            f"step {text!r}: write 'KIND@P%' (of the window) or 'KIND@-Nd' / 'KIND@-Nh' "
            "(before its end)"
        )
    try:
        kind = StepKind(m["kind"])
    except ValueError:
        raise ValueError(
            f"step {text!r}: unknown kind {m['kind']!r}; one of "
            + ", ".join(k.value for k in StepKind)
        ) from None
    if m["pct"] is not None:
        return Step(kind, percent=int(m["pct"]))
    if m["days"] is not None:
        return Step(kind, before_end=timedelta(days=int(m["days"])))
    return Step(kind, before_end=timedelta(hours=int(m["hours"])))
