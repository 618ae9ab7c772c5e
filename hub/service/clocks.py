"""Case clocks follow what each command does, in the command's own transaction: the clocks its
steps start and stop, the SLA log rows that record them, and the audit entries of the case's
timeline. Firing the steps that fall due is the sweep's work (hub/service/sweep.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from hub.domain.cases import Case, OrderState
from hub.domain.clocks import (
    CaseClock,
    ClockChanges,
    ClockState,
    SlaEntry,
    apply_triggers,
    start_keyed,
    stop,
    triggers_of,
)
from hub.domain.clocks import Policy as ClockPolicy
from hub.domain.institutions import HUB_CODE
from hub.domain.workdays import WorkingDays
from hub.service.ports import AuditEntry, UnitOfWork


@dataclass
class Tracked:
    case: Case
    events_since: int
    states_before: dict[str, OrderState]
    sent_at: datetime | None
    new: bool = False  # created by this command: it cannot have clocks in the database yet


def new_clock_id() -> str:
    return f"K{uuid.uuid4().hex[:20].upper()}"


def apply_clocks(
    uow: UnitOfWork,
    tracked: Tracked,
    now: datetime,
    *,
    policy: ClockPolicy,
    calendar: WorkingDays,
    centres: Sequence[str],
) -> ClockChanges:
    """Start and stop the clocks of one case for what was done to it since `tracked` was
    taken."""
    triggers = triggers_of(
        tracked.case, tracked.events_since, tracked.states_before, sent_at=tracked.sent_at
    )
    if not triggers:
        return ClockChanges()
    open_clocks = [] if tracked.new else uow.clocks.open_for_case(tracked.case.case_id)
    changes = apply_triggers(
        policy,
        tracked.case,
        triggers,
        open_clocks,
        new_id=new_clock_id,
        calendar=calendar,
        centres=list(centres),
        hub_code=HUB_CODE,
    )
    for clock in changes.started:
        uow.clocks.add(clock)  # new rows, including any started and stopped at once
    write_log(uow, changes.log, now)
    return changes


def audit_transitions(uow: UnitOfWork, case: Case, since: int, now: datetime) -> None:
    """Audit every timeline step appended to `case` past `since`."""
    for event in case.events[since:]:
        uow.audit.append(
            AuditEntry(
                kind="transition",
                actor=event.actor,
                message_id=event.message_id,
                detail=f"{event.kind}: {event.summary}{event.people()}",
                case_id=case.case_id,
                order_id=event.order_id or None,
            ),
            now,
        )


def write_log(uow: UnitOfWork, entries: Sequence[SlaEntry], now: datetime) -> None:
    """The SLA log rows, each with its audit entry."""
    for entry in entries:
        uow.clocks.log(entry)
        uow.audit.append(
            AuditEntry(
                kind="clock",
                actor=HUB_CODE,
                message_id="",
                detail=f"{entry.kind} clock {entry.clock_id} {entry.event}"
                + (f" {entry.late_seconds:.0f}s late" if entry.late_seconds else "")
                + (f": {entry.detail}" if entry.detail else ""),
                case_id=entry.case_id,
                order_id=entry.order_id or None,
            ),
            now,
        )


# ---- clocks of a lead (docs/leads.md) --------------------------------------------------------


def start_lead_clocks(
    uow: UnitOfWork,
    lead_id: str,
    grade: str,
    now: datetime,
    *,
    policy: ClockPolicy,
    calendar: WorkingDays,
    centres: Sequence[str],
) -> list[CaseClock]:
    """Start every clock the policy starts on `lead.submitted` for the lead, in the window of
    its grade; the centre (the first registered) is responsible. Returns them, earliest
    deadline first."""
    started = []
    for cp in policy.clocks:
        if cp.starts != "lead.submitted":
            continue
        clock, entry = start_keyed(
            cp,
            lead_id,
            grade=grade,
            start_at=now,
            responsible=centres[0] if centres else HUB_CODE,
            calendar=calendar,
            new_id=new_clock_id,
        )
        uow.clocks.add(clock)
        write_log(uow, [entry], now)
        started.append(clock)
    return sorted(started, key=lambda c: (c.deadline_at, c.clock_id))


def stop_lead_clocks(
    uow: UnitOfWork, lead_id: str, now: datetime, *, policy: ClockPolicy, why: str
) -> None:
    """Stop the lead's open clocks that `lead.triaged` stops (met, or missed when late)."""
    changes = ClockChanges()
    for clock in uow.clocks.open_for_case(lead_id):
        cp = policy.clock(clock.kind)
        if clock.state is ClockState.OPEN and cp is not None and "lead.triaged" in cp.stops:
            stop(clock, now, why, changes)
    write_log(uow, changes.log, now)
