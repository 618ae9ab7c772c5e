"""The hub's scheduled work, run by the server's scheduler (hub/bootstrap.py) or a test: fire
the clock steps that fell due, end the listings whose term is over, prune the list changes no
sync can replay, and place committed audit entries in the log's Merkle tree.

Firing a clock step claims the due clock (on PostgreSQL with FOR UPDATE SKIP LOCKED, so two
hubs never fire the same step), writes the step's notices, SLA log row and audit entry, moves
the clock to its next step, and commits. A step fired after its due time says how late it is.
Any number of hubs may sweep one database at once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from hub.domain.cases import Case
from hub.domain.clocks import (
    CaseClock,
    ClockState,
    SlaEntry,
    StepKind,
    next_step,
)
from hub.domain.clocks import Policy as ClockPolicy
from hub.domain.institutions import HUB_CODE, ContactRole, Institution, InstitutionKind
from hub.domain.workdays import WorkingDays
from hub.service import auditlog, lists, wire
from hub.service.clocks import Tracked, apply_clocks, audit_transitions, write_log
from hub.service.latestcheckpoint import LatestCheckpoint
from hub.service.ports import PendingDelivery, Signer, UnitOfWork
from stophub.v1 import delivery_pb2, sla_pb2

log = logging.getLogger(__name__)

# A step that fires within this of its due time is on time; later ones are marked late.
ON_TIME = timedelta(seconds=2)
# How often a sweep also deletes the list changes no sync can replay (lists.prune_changes).
PRUNE_LIST_EVERY = timedelta(hours=1)


class JobHost(lists.ListHost, Protocol):
    """What the scheduled jobs use of the hub (hub.service.pipeline.Hub)."""

    signer: Signer
    clock_policy: ClockPolicy
    calendar: WorkingDays
    latest_checkpoint: LatestCheckpoint

    def deliver(
        self, uow: UnitOfWork, recipients: Sequence[str], notice: delivery_pb2.Notice, now: datetime
    ) -> list[PendingDelivery]: ...

    def notify(self, recipients: set[str], deliveries: Sequence[PendingDelivery] = ()) -> None: ...


class Jobs:
    """Every job the scheduler runs, for one hub."""

    def __init__(self, hub: JobHost) -> None:
        self.hub = hub
        self.clocks = Sweeper(hub)
        self._list_pruned_at: datetime | None = None
        # The newest checkpoint this hub signed or verified: it signs no tree that does not
        # extend it (a database rolled back or forked under it). Its own key verifies it.
        public = getattr(hub.signer, "public_key", None)
        own = {hub.signer.key_id: public} if isinstance(public, bytes) else {}
        self.log_memory = auditlog.CheckpointMemory(own.get)

    def sweep(self) -> int:
        """Fire every clock step that is due and end every listing whose term is over;
        returns how many of both. Once every PRUNE_LIST_EVERY of case time it also deletes
        the list changes no sync can replay any more."""
        hub = self.hub
        done = self.clocks.sweep() + lists.expire_due(hub)
        now = hub.clock.now()
        if hub.list_key is not None and (
            self._list_pruned_at is None or now - self._list_pruned_at >= PRUNE_LIST_EVERY
        ):
            self._list_pruned_at = now
            lists.prune_changes(hub)
        return done

    def keep_audit_log(self) -> int:
        """Place every committed audit entry in the log's Merkle tree and sign a checkpoint
        when one is due (ADR 15); returns how many entries were placed."""
        placed = auditlog.sequence(self.hub.uow, self.hub.clock)
        signed = auditlog.checkpoint(
            self.hub.uow, self.hub.signer, self.hub.clock, memory=self.log_memory
        )
        if signed is not None:
            self.hub.latest_checkpoint.signed(signed)
        return placed

    def open_audit_log(self) -> int:
        """Before the hub serves: place what was committed while it was down and sign a
        checkpoint of it at once if the tree grew, so that no entry waits a minute for its
        first signature; returns how many entries were placed."""
        placed = auditlog.sequence(self.hub.uow, self.hub.clock)
        signed = auditlog.checkpoint(
            self.hub.uow, self.hub.signer, self.hub.clock, every=None, memory=self.log_memory
        )
        if signed is not None:
            self.hub.latest_checkpoint.signed(signed)
        return placed


NOTICE_KINDS = {
    StepKind.REMINDER: delivery_pb2.NOTICE_KIND_CLOCK_REMINDER,
    StepKind.BREACH: delivery_pb2.NOTICE_KIND_CLOCK_BREACH,
    StepKind.REGULATOR: delivery_pb2.NOTICE_KIND_CLOCK_ESCALATION,
    StepKind.RENEWAL_REMINDER: delivery_pb2.NOTICE_KIND_RENEWAL_REMINDER,
    StepKind.EXPIRE: delivery_pb2.NOTICE_KIND_ORDER_EXPIRED,
    StepKind.NOTICE_END: delivery_pb2.NOTICE_KIND_PUBLIC_NOTICE_ENDED,
}


class Sweeper:
    """Fires due clock steps; any number of hubs may sweep one database at once."""

    def __init__(self, hub: JobHost, batch: int = 200, late_after: timedelta = ON_TIME) -> None:
        self.hub = hub
        self.batch = batch
        # A step that fires more than this after its due time is marked late.
        self.late_after = late_after

    def sweep(self) -> int:
        """Fire every step due now; returns how many fired."""
        fired = 0
        for _ in range(1000):  # bounded: a burst of steps drains in batches
            count, expiring = self._fire_batch()
            for clock_id in expiring:
                count += self._expire(clock_id)
            fired += count
            if count == 0:
                break
        return fired

    def _fire_batch(self) -> tuple[int, list[str]]:
        hub = self.hub
        recipients: set[str] = set()
        expiring: list[str] = []
        fired = 0
        with hub.uow(read_only=True) as peek:
            # Most sweeps find nothing due: look without taking the write lock (SQLite).
            if not peek.clocks.due(hub.clock.now(), 1):
                return 0, []
        with hub.uow() as uow:
            due = uow.clocks.due(hub.clock.now(), self.batch)
            # Read after the first query: on SQLite that is when the write lock is ours, so a
            # sweep that waited for it records how late its steps really fire.
            now = hub.clock.now()
            if not due:
                return 0, []
            kinds = uow.institutions.kinds()
            owners: dict[str, Institution | None] = {}
            for clock in due:
                cp = hub.clock_policy.clock(clock.kind)
                if cp is None:
                    # The policy no longer has this clock: it cannot be judged, so it ends,
                    # and says so in the SLA log rather than going quiet.
                    write_log(
                        uow,
                        [
                            SlaEntry(
                                clock.clock_id,
                                clock.case_id,
                                clock.order_id,
                                clock.kind,
                                "ended",
                                now,
                                clock.next_step_at,
                                clock.responsible,
                                detail=f"the policy has no '{clock.kind}' clock any more; its "
                                f"{clock.next_step} step will not fire",
                            )
                        ],
                        now,
                    )
                    clock.state, clock.next_step, clock.next_step_at = ClockState.ENDED, "", None
                    continue
                if clock.next_step == StepKind.EXPIRE.value:
                    # Needs the case lock, taken before the clock's (see _expire).
                    expiring.append(clock.clock_id)
                    continue
                recipients |= self._fire(uow, clock, now, kinds, owners=owners)
                fired += 1
            uow.commit()
        if recipients:
            hub.notify(recipients)
        return fired, expiring

    def _fire(
        self,
        uow: UnitOfWork,
        clock: CaseClock,
        now: datetime,
        kinds: dict[str, InstitutionKind],
        *,
        case: Case | None = None,
        owners: dict[str, Institution | None] | None = None,
    ) -> set[str]:
        """Fire the clock's next step; return who was told."""
        hub = self.hub
        cp = hub.clock_policy.clock(clock.kind)
        assert cp is not None and clock.next_step_at is not None
        step = StepKind(clock.next_step)
        due_at = clock.next_step_at
        late = max(0.0, (now - due_at).total_seconds())
        late_seconds = late if now - due_at > self.late_after else 0.0
        if due_at >= clock.deadline_at and step in (StepKind.BREACH, StepKind.REGULATOR):
            clock.breached = True
        centres = sorted(c for c, k in kinds.items() if k is InstitutionKind.ANTI_FRAUD_CENTRE)
        regulators = sorted(c for c, k in kinds.items() if k is InstitutionKind.REGULATOR)
        responsible = clock.responsible if clock.responsible != HUB_CODE else ""
        roles: tuple[ContactRole, ...]
        match step:
            case StepKind.REMINDER | StepKind.RENEWAL_REMINDER | StepKind.NOTICE_END:
                to = [responsible] if responsible else centres
                roles = (ContactRole.PRIMARY, ContactRole.BACKUP)
            case StepKind.BREACH:
                to = sorted({*([responsible] if responsible else []), *centres})
                roles = (ContactRole.SUPERVISOR, ContactRole.PRIMARY, ContactRole.BACKUP)
            case StepKind.REGULATOR:
                to = regulators or centres
                roles = (ContactRole.SUPERVISOR,)
            case StepKind.EXPIRE:
                # The holding institution must release the hold; the centre must know.
                holder = case.order(clock.order_id).addressed_to if case and clock.order_id else ""
                to = sorted(
                    {
                        *([responsible] if responsible else []),
                        *centres,
                        *([holder] if holder else []),
                    }
                )
                roles = (ContactRole.PRIMARY, ContactRole.BACKUP)
        contacts = []
        owners = {} if owners is None else owners
        if responsible and responsible not in owners:
            # Read once per sweep batch: many clocks share a responsible institution.
            owners[responsible] = uow.institutions.get(responsible)
        owner = owners.get(responsible) if responsible else None
        if owner is not None:
            wanted = [c for c in owner.contacts if c.role in roles]
            if step is StepKind.BREACH and any(c.role is ContactRole.SUPERVISOR for c in wanted):
                wanted = [c for c in wanted if c.role is ContactRole.SUPERVISOR]
            contacts = [wire.contact_to_proto(c) for c in wanted]
        entry = SlaEntry(
            clock.clock_id,
            clock.case_id,
            clock.order_id,
            clock.kind,
            step.value,
            now,
            due_at,
            clock.responsible,
            late_seconds=late_seconds,
            detail="to " + ", ".join(to) if to else "no recipient registered",
        )
        clock.steps_done += 1
        if step is StepKind.EXPIRE:
            clock.state = ClockState.ENDED
            clock.next_step, clock.next_step_at = "", None
        else:
            clock.next_step, clock.next_step_at = next_step(cp, clock)
            if clock.next_step_at is None:
                clock.state = ClockState.ENDED
        write_log(uow, [entry], now)
        step_pb = sla_pb2.ClockStep(
            clock=wire.clock_to_proto(clock),
            step=step.value,
            contacts=contacts,
        )
        step_pb.late.FromTimedelta(timedelta(seconds=late_seconds))
        notice = delivery_pb2.Notice(
            kind=NOTICE_KINDS[step],
            case_id=clock.case_id,
            summary=describe_step(clock, step, due_at, late_seconds),
            clock_step=step_pb,
        )
        if case is not None and clock.order_id:
            notice.order.CopyFrom(wire.order_to_proto(case.order(clock.order_id)))
        hub.deliver(uow, list(to), notice, now)
        return set(to)

    def _expire(self, clock_id: str) -> int:
        hub = self.hub
        with hub.uow() as uow:
            peek = uow.clocks.get(clock_id)
            if peek is None:
                return 0
            case = uow.cases.get(peek.case_id, lock=True)
            clock = uow.clocks.get(clock_id, lock=True)
            now = hub.clock.now()
            if (
                case is None
                or clock is None
                or clock.state is not ClockState.OPEN
                or clock.next_step != StepKind.EXPIRE.value
                or clock.next_step_at is None
                or clock.next_step_at > now
            ):
                return 0  # another hub fired it, or a command stopped it meanwhile
            others = uow.clocks.open_for_case(case.case_id)
            if any(
                o.clock_id != clock.clock_id
                and o.next_step != StepKind.EXPIRE.value
                and o.next_step_at is not None
                and o.next_step_at <= clock.next_step_at
                for o in others
            ):
                # Catching up after downtime: steps that fell due before the lapse fire first,
                # or the lapse would stop their clocks and they would never fire.
                return 0
            kinds = uow.institutions.kinds()
            events_since = len(case.events)
            states_before = {o.order_id: o.state for o in case.orders}
            window = hub.clock_policy.clock(clock.kind)
            why = f"{window.window if window else 'its window'} passed without renewal"
            case.expire(clock.order_id, now, why)
            recipients = self._fire(uow, clock, now, kinds, case=case)
            # The lapse ends the order: stop the clocks that waited on it (investigation).
            apply_clocks(
                uow,
                Tracked(case, events_since, states_before, None),
                now,
                policy=hub.clock_policy,
                calendar=hub.calendar,
                centres=sorted(
                    c for c, k in kinds.items() if k is InstitutionKind.ANTI_FRAUD_CENTRE
                ),
            )
            audit_transitions(uow, case, events_since, now)
            uow.commit()
        hub.notify(recipients)
        return 1


def describe_step(clock: CaseClock, step: StepKind, due_at: datetime, late: float) -> str:
    # The hub names cases C..., leads L..., warnings W...: a lead's or a warning's clocks time
    # the lead or the warning, whose id stands in the case id (docs/leads.md, docs/warnings.md).
    what = {"L": "lead", "W": "warning"}.get(clock.case_id[:1], "case")
    subject = f"{clock.kind} clock of {what} {clock.case_id}" + (
        f", order {clock.order_id}" if clock.order_id else ""
    )
    estimated = " (estimated: no official holiday calendar)" if clock.deadline_estimated else ""
    when = f"deadline {clock.deadline_at.isoformat(timespec='seconds')}{estimated}"
    text = {
        StepKind.REMINDER: f"reminder: {subject} is due, {when}; {clock.responsible} must act",
        StepKind.BREACH: f"BREACH: {subject} passed its {when}; {clock.responsible} has not acted",
        StepKind.REGULATOR: f"ESCALATION: {subject} is at twice its window; {when}",
        StepKind.RENEWAL_REMINDER: f"renewal: {subject} ends at {clock.deadline_at.isoformat()}"
        "; renew it or let it lapse",
        StepKind.EXPIRE: f"LAPSED: {subject}; the hold must be released",
        StepKind.NOTICE_END: f"{subject}: the public notice ended "
        f"{clock.deadline_at.isoformat(timespec='seconds')}{estimated}; {clock.responsible} may "
        "decide now, answering any objections",
    }[step]
    if late:
        text += (
            f" (fired {late:.0f} s late: it was due at {due_at.isoformat(timespec='seconds')}, "
            "while the hub was down or catching up)"
        )
    return text
