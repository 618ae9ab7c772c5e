"""Case clocks through the Hub, with the default policy, the Chinese calendar, in-memory fakes and
a ManualClock: each step of each ladder fires once, signed, logged and audited, late if late."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from hub.domain.cases import OrderState, add_months
from hub.domain.clocks import CaseClock, ClockState, SlaEntry
from hub.domain.institutions import ContactRole, DutyContact
from hub.domain.workdays import add_working_days
from hub.service.commands.case import VERIFY_REPORT
from hub.service.pipeline import Hub
from hub.system.calendar import ChineseWorkingDays
from hub.system.policy import load_policy
from stophub.v1 import case_pb2, delivery_pb2, institution_pb2, order_pb2
from tests.unit.test_handlers import (
    MULE_B,
    T0,
    execution,
    freeze_body,
    return_body,
    stop_body,
    verification,
)
from tests.unit.test_handlers import World as HandlerWorld

REMINDER = delivery_pb2.NOTICE_KIND_CLOCK_REMINDER
BREACH = delivery_pb2.NOTICE_KIND_CLOCK_BREACH
ESCALATION = delivery_pb2.NOTICE_KIND_CLOCK_ESCALATION
RENEWAL = delivery_pb2.NOTICE_KIND_RENEWAL_REMINDER
EXPIRED = delivery_pb2.NOTICE_KIND_ORDER_EXPIRED
CLOCK_DELIVERY_KINDS = {
    "clock_reminder",
    "clock_breach",
    "clock_escalation",
    "renewal_reminder",
    "order_expired",
}
STEP_EVENTS = {"reminder", "breach", "regulator", "renewal_reminder", "expire"}
MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


class World(HandlerWorld):
    """test_handlers' world, with the default clock policy and the Chinese calendar."""

    def __init__(self, start: datetime = T0) -> None:
        super().__init__()
        self.clock.set(start)
        self.hub = Hub(
            self.store,
            self.clock,
            self.hub_key,
            self.notifier,
            clock_policy=load_policy(),
            calendar=ChineseWorkingDays(),
        )

    def sweep_at(self, when: datetime) -> int:
        self.clock.set(when)
        return self.hub.sweep()

    def clock_of(self, case_id: str, kind: str, order_id: str = "") -> CaseClock:
        found = [
            c
            for c in self.store.state.clocks.values()
            if (c.case_id, c.kind, c.order_id) == (case_id, kind, order_id)
        ]
        assert len(found) == 1, (kind, order_id, found)
        return found[0]

    def sla(self, clock_id: str) -> list[SlaEntry]:
        return [e for e in self.store.state.sla if e.clock_id == clock_id]

    def clock_notices(
        self, clock_kind: str | None = None, recipient: str | None = None
    ) -> list[tuple[str, delivery_pb2.Notice]]:
        """(recipient, notice) of every clock notice in the outbox, oldest first; each is
        checked to be signed by the hub for its recipient (World.notice)."""
        out = []
        for delivery in self.store.deliveries:
            if recipient is not None and delivery.recipient != recipient:
                continue
            notice = self.notice(delivery)
            if not notice.HasField("clock_step"):
                continue
            if clock_kind is None or notice.clock_step.clock.clock == clock_kind:
                out.append((delivery.recipient, notice))
        return out

    def add_supervisor(self, code: str) -> None:
        institution = self.store.state.institutions[code]
        institution.contacts.append(
            DutyContact(ContactRole.SUPERVISOR, f"{code} supervisor", "13900000009")
        )

    # ---- a case up to a holding stop or freeze --------------------------------------------

    def holding_stop(self) -> tuple[case_pb2.Case, order_pb2.Order]:
        case = self.verified()
        stop = self.order(stop_body(case))
        self.clock.advance(2 * MIN)
        held = self.answer("BANKB", execution(stop.order_id, held=3_000_000))
        assert held.state == order_pb2.ORDER_STATE_HOLDING
        return case, held

    def holding_freeze(self) -> tuple[case_pb2.Case, order_pb2.Order, order_pb2.Order]:
        case, stop = self.holding_stop()
        self.clock.advance(HOUR)
        freeze = self.order(freeze_body(case.case_id, 3_000_000, stop.order_id))
        self.clock.advance(MIN)
        frozen = self.answer("BANKB", execution(freeze.order_id, held=3_000_000))
        assert frozen.state == order_pb2.ORDER_STATE_HOLDING
        return case, stop, frozen


@pytest.fixture
def w() -> World:
    return World()


def kinds_to(notices: list[tuple[str, delivery_pb2.Notice]]) -> list[tuple[str, int]]:
    return [(recipient, notice.kind) for recipient, notice in notices]


def contact_names(notice: delivery_pb2.Notice) -> list[str]:
    return [c.name for c in notice.clock_step.contacts]


def check_books(w: World) -> None:
    """Every fired step has one SLA row and one 'clock' audit entry; every clock notice is
    hub-signed and names a step that was logged."""
    fired = [e for e in w.store.state.sla if e.event in STEP_EVENTS]
    assert fired
    rows = Counter((e.clock_id, e.event) for e in fired)
    audited: Counter[tuple[str, str]] = Counter()
    for entry in w.store.audit_of("clock"):
        m = re.match(r"^(\w+) clock (\S+) (\w+)(?: |:|$)", entry.detail)
        assert m, entry.detail
        if m[3] in STEP_EVENTS:
            audited[(m[2], m[3])] += 1
            assert entry.case_id
    assert audited == rows
    # No step fired twice at the same due time.
    assert len({(e.clock_id, e.due_at) for e in fired}) == len(fired)
    logged = {(e.clock_id, e.event) for e in fired}
    clock_deliveries = [d for d in w.store.deliveries if d.kind in CLOCK_DELIVERY_KINDS]
    assert clock_deliveries
    for delivery in clock_deliveries:
        notice = w.notice(delivery)  # verifies the hub's signature
        step = notice.clock_step
        assert (step.clock.clock_id, step.step) in logged
        assert notice.case_id == step.clock.case_id


# ---- the verify clock -----------------------------------------------------------------------


def test_an_unverified_report_is_reminded_breached_then_escalated_once_each(w: World) -> None:
    case = w.report()
    verify = w.clock_of(case.case_id, "verify")
    assert (verify.responsible, verify.deadline_at) == ("BANKA", T0 + 5 * MIN)

    assert w.sweep_at(T0 + 4 * MIN - timedelta(seconds=1)) == 0
    assert w.clock_notices() == []

    assert w.sweep_at(T0 + 4 * MIN) == 1
    for _ in range(3):
        assert w.hub.sweep() == 0
    [(to, reminder)] = w.clock_notices()
    assert to == "BANKA"  # the reporting bank only
    assert reminder.kind == REMINDER
    assert reminder.case_id == case.case_id
    step = reminder.clock_step
    assert (step.step, step.clock.clock, step.clock.responsible) == ("reminder", "verify", "BANKA")
    assert step.late.ToTimedelta() == timedelta(0)
    assert [(c.role, c.name, c.phone) for c in step.contacts] == [
        (institution_pb2.CONTACT_ROLE_PRIMARY, "BANKA duty A", "13900000001"),
        (institution_pb2.CONTACT_ROLE_BACKUP, "BANKA duty B", "13900000002"),
    ]
    assert step.clock.next_step == "breach"
    assert step.clock.next_step_time.ToDatetime(tzinfo=UTC) == T0 + 5 * MIN
    assert "reminder" in reminder.summary and "late" not in reminder.summary
    assert w.notifier.calls[-1] == frozenset({"BANKA"})

    assert w.sweep_at(T0 + 5 * MIN) == 1
    w.sweep_at(T0 + 5 * MIN + timedelta(seconds=1))
    breaches = w.clock_notices()[1:]
    assert sorted(kinds_to(breaches)) == [("AFC", BREACH), ("BANKA", BREACH)]
    for _, notice in breaches:
        # No supervisor registered: the duty contacts.
        assert contact_names(notice) == ["BANKA duty A", "BANKA duty B"]
        assert notice.clock_step.step == "breach"
        assert notice.clock_step.clock.breached
        assert "BREACH" in notice.summary
    assert w.notifier.calls[-1] == frozenset({"AFC", "BANKA"})

    assert w.sweep_at(T0 + 10 * MIN - timedelta(seconds=1)) == 0
    assert w.sweep_at(T0 + 10 * MIN) == 1
    assert w.sweep_at(T0 + 3 * HOUR) == 0
    escalations = w.clock_notices()[3:]
    assert kinds_to(escalations) == [("REG", ESCALATION)]
    assert escalations[0][1].clock_step.step == "regulator"

    assert Counter(n.kind for _, n in w.clock_notices()) == {REMINDER: 1, BREACH: 2, ESCALATION: 1}
    clock = w.clock_of(case.case_id, "verify")
    assert clock.state is ClockState.ENDED
    assert clock.breached and clock.steps_done == 3
    assert (clock.next_step, clock.next_step_at) == ("", None)
    log = w.sla(clock.clock_id)
    assert [(e.event, e.at, e.due_at, e.late_seconds) for e in log] == [
        ("started", T0, T0 + 5 * MIN, 0.0),
        ("reminder", T0 + 4 * MIN, T0 + 4 * MIN, 0.0),
        ("breach", T0 + 5 * MIN, T0 + 5 * MIN, 0.0),
        ("regulator", T0 + 10 * MIN, T0 + 10 * MIN, 0.0),
    ]
    assert log[2].detail == "to AFC, BANKA"
    assert log[3].detail == "to REG"
    check_books(w)


def test_a_breach_reaches_the_supervisor_when_one_is_registered(w: World) -> None:
    w.add_supervisor("BANKA")
    w.report()
    w.sweep_at(T0 + 4 * MIN)
    [(_, reminder)] = w.clock_notices()
    # A reminder goes to the duty contacts, not the supervisor.
    assert contact_names(reminder) == ["BANKA duty A", "BANKA duty B"]
    w.sweep_at(T0 + 5 * MIN)
    breaches = w.clock_notices()[1:]
    assert len(breaches) == 2
    for _, notice in breaches:
        assert [(c.role, c.name) for c in notice.clock_step.contacts] == [
            (institution_pb2.CONTACT_ROLE_SUPERVISOR, "BANKA supervisor")
        ]
    w.sweep_at(T0 + 10 * MIN)
    [(to, escalation)] = w.clock_notices()[3:]
    assert to == "REG"
    assert contact_names(escalation) == ["BANKA supervisor"]
    check_books(w)


def test_a_report_verified_in_time_fires_nothing_more_for_the_verify_clock(w: World) -> None:
    case = w.report()
    w.clock.advance(3 * MIN)
    w.send(VERIFY_REPORT, "BANKA", verification(case.case_id))
    verify = w.clock_of(case.case_id, "verify")
    assert verify.state is ClockState.MET
    assert (verify.stopped_at, verify.stopped_by) == (T0 + 3 * MIN, "report.verified")
    for minutes in (4, 5, 10, 60 * 24):
        w.sweep_at(T0 + minutes * MIN)
    assert w.clock_notices("verify") == []
    log = w.sla(verify.clock_id)
    assert [(e.event, e.late_seconds) for e in log] == [("started", 0.0), ("met", 0.0)]
    assert log[1].due_at == T0 + 5 * MIN
    met = [a for a in w.store.audit_of("clock") if f"{verify.clock_id} met" in a.detail]
    assert len(met) == 1
    # The centre's clock to issue the stop started at the verification and ran out instead.
    stop_issue = w.clock_of(case.case_id, "stop_issue")
    assert (stop_issue.responsible, stop_issue.started_at) == ("AFC", T0 + 3 * MIN)
    assert [n.kind for _, n in w.clock_notices("stop_issue", "AFC")] == [
        REMINDER,
        BREACH,
    ]


# ---- the stop clock -------------------------------------------------------------------------


def test_a_stop_answered_after_12_minutes_missed_after_a_reminder_and_a_breach(
    w: World,
) -> None:
    case = w.verified()
    issued_at = w.clock.now()
    stop = w.order(stop_body(case))
    clock = w.clock_of(case.case_id, "stop", stop.order_id)
    assert (clock.responsible, clock.deadline_at) == ("BANKB", issued_at + 10 * MIN)

    w.sweep_at(issued_at + 8 * MIN - timedelta(seconds=1))
    assert w.clock_notices("stop") == []
    w.sweep_at(issued_at + 8 * MIN)
    w.sweep_at(issued_at + 9 * MIN)
    assert kinds_to(w.clock_notices("stop")) == [("BANKB", REMINDER)]
    reminder = w.clock_notices("stop")[0][1]
    assert reminder.clock_step.clock.order_id == stop.order_id
    assert contact_names(reminder) == ["BANKB duty A", "BANKB duty B"]
    w.sweep_at(issued_at + 10 * MIN)
    w.sweep_at(issued_at + 11 * MIN)
    assert sorted(kinds_to(w.clock_notices("stop")[1:])) == [("AFC", BREACH), ("BANKB", BREACH)]

    w.clock.set(issued_at + 12 * MIN)
    w.answer("BANKB", execution(stop.order_id, held=3_000_000))
    clock = w.clock_of(case.case_id, "stop", stop.order_id)
    assert clock.state is ClockState.MISSED
    assert (clock.stopped_at, clock.stopped_by) == (issued_at + 12 * MIN, "stop.answered")
    assert clock.breached
    log = w.sla(clock.clock_id)
    assert [e.event for e in log] == ["started", "reminder", "breach", "missed"]
    assert log[-1].late_seconds == 120.0
    assert log[-1].due_at == issued_at + 10 * MIN
    # Stopped: the regulator step never comes.
    w.sweep_at(issued_at + 30 * MIN)
    assert len(w.clock_notices("stop")) == 3
    check_books(w)


# ---- stop validity and investigation --------------------------------------------------------


def _effective(w: World, order: order_pb2.Order) -> datetime:
    return order.effective_time.ToDatetime(tzinfo=UTC)


def test_a_stop_holding_48_hours_without_a_freeze_lapses(w: World) -> None:
    case, stop = w.holding_stop()
    start = _effective(w, stop)
    assert w.store.case(case.case_id).held_fen == 3_000_000
    validity = w.clock_of(case.case_id, "stop_validity", stop.order_id)
    assert (validity.responsible, validity.deadline_at) == ("AFC", start + 48 * HOUR)

    w.sweep_at(start + 48 * HOUR - timedelta(seconds=1))
    assert w.store.case(case.case_id).order(stop.order_id).state is OrderState.HOLDING
    assert [n.clock_step.step for _, n in w.clock_notices("stop_validity")] == ["reminder"]
    assert w.clock_notices("stop_validity")[0][1].clock_step.clock.next_step == "expire"

    calls = len(w.notifier.calls)
    assert w.sweep_at(start + 48 * HOUR) >= 1
    stored = w.store.case(case.case_id)
    order = stored.order(stop.order_id)
    assert order.state is OrderState.EXPIRED
    assert order.held_fen == 0
    assert stored.held_fen == 0
    assert stored.events[-1].kind == "order.expired"
    transitions = [a.detail for a in w.store.audit_of("transition") if a.case_id == case.case_id]
    assert transitions[-1].startswith("order.expired: ")

    expired = [(to, n) for to, n in w.clock_notices("stop_validity") if n.kind == EXPIRED]
    assert expired
    assert "AFC" in {to for to, _ in expired}
    for _, notice in expired:
        assert notice.order.order_id == stop.order_id
        assert notice.order.state == order_pb2.ORDER_STATE_EXPIRED
        assert notice.order.held_fen == 0
        assert notice.clock_step.step == "expire"
        assert "LAPSED" in notice.summary
    assert "AFC" in w.notifier.calls[-1] and len(w.notifier.calls) > calls
    clock = w.clock_of(case.case_id, "stop_validity", stop.order_id)
    assert clock.state is ClockState.ENDED
    assert [e.event for e in w.sla(clock.clock_id)] == ["started", "reminder", "expire"]
    # Fired once, however often the hub sweeps.
    w.sweep_at(start + 49 * HOUR)
    w.hub.sweep()
    assert sum(1 for _, n in w.clock_notices() if n.kind == EXPIRED) == len(expired)
    check_books(w)


def test_a_lapsed_stop_is_announced_to_the_holding_bank(w: World) -> None:
    _, stop = w.holding_stop()
    w.sweep_at(_effective(w, stop) + 48 * HOUR)
    expired = [to for to, n in w.clock_notices("stop_validity") if n.kind == EXPIRED]
    assert sorted(expired) == ["AFC", "BANKB"]


def test_a_freeze_answers_the_investigation_and_keeps_the_stop_from_lapsing(w: World) -> None:
    case, stop = w.holding_stop()
    start = _effective(w, stop)
    investigate = w.clock_of(case.case_id, "investigate", stop.order_id)
    assert (investigate.responsible, investigate.deadline_at) == ("AFC", start + 24 * HOUR)
    w.clock.set(start + 2 * HOUR)
    freeze = w.order(freeze_body(case.case_id, 3_000_000, stop.order_id))
    investigate = w.clock_of(case.case_id, "investigate", stop.order_id)
    assert investigate.state is ClockState.MET
    assert (investigate.stopped_by, investigate.stopped_at) == ("freeze.issued", start + 2 * HOUR)
    # Not answered yet: the stop still holds, its validity still runs.
    assert w.clock_of(case.case_id, "stop_validity", stop.order_id).state is ClockState.OPEN
    w.clock.advance(MIN)
    w.answer("BANKB", execution(freeze.order_id, held=3_000_000))
    validity = w.clock_of(case.case_id, "stop_validity", stop.order_id)
    assert (validity.state, validity.stopped_by) == (ClockState.MET, "stop.ended")
    w.sweep_at(start + 30 * DAY)
    assert w.clock_notices("investigate") == []
    assert w.clock_notices("stop_validity") == []
    stored = w.store.case(case.case_id)
    assert stored.order(stop.order_id).state is OrderState.CONVERTED
    assert stored.order(freeze.order_id).state is OrderState.HOLDING
    assert stored.held_fen == 3_000_000


def test_an_uninvestigated_stop_escalates_to_the_centre_and_the_regulator(w: World) -> None:
    _, stop = w.holding_stop()
    start = _effective(w, stop)
    w.sweep_at(start + 24 * HOUR)
    steps = [(to, n.clock_step.step) for to, n in w.clock_notices("investigate")]
    assert steps == [("AFC", "reminder"), ("AFC", "breach")]
    w.sweep_at(start + 47 * HOUR)
    assert len(w.clock_notices("investigate")) == 2


# ---- the freeze term ------------------------------------------------------------------------


def test_a_freeze_is_reminded_a_week_and_a_day_before_its_term_then_lapses(w: World) -> None:
    case, _, freeze = w.holding_freeze()
    start = _effective(w, freeze)
    end = add_months(start, 6)
    term = w.clock_of(case.case_id, "freeze_term", freeze.order_id)
    assert (term.responsible, term.deadline_at) == ("AFC", end)
    assert freeze.expire_time.ToDatetime(tzinfo=UTC) == end

    w.sweep_at(end - 7 * DAY - timedelta(seconds=1))
    assert w.clock_notices("freeze_term") == []
    w.sweep_at(end - 7 * DAY)
    w.sweep_at(end - 2 * DAY)
    assert kinds_to(w.clock_notices("freeze_term")) == [("AFC", RENEWAL)]
    first = w.clock_notices("freeze_term")[0][1]
    assert first.clock_step.step == "renewal_reminder"
    assert "renew" in first.summary
    w.sweep_at(end - DAY)
    assert kinds_to(w.clock_notices("freeze_term")) == [("AFC", RENEWAL), ("AFC", RENEWAL)]
    w.sweep_at(end - timedelta(seconds=1))
    assert w.store.case(case.case_id).order(freeze.order_id).state is OrderState.HOLDING

    w.sweep_at(end)
    stored = w.store.case(case.case_id)
    lapsed = stored.order(freeze.order_id)
    assert (lapsed.state, lapsed.held_fen, stored.held_fen) == (OrderState.EXPIRED, 0, 0)
    expired = [n for _, n in w.clock_notices("freeze_term") if n.kind == EXPIRED]
    assert expired
    assert {n.order.order_id for n in expired} == {freeze.order_id}
    assert {n.order.state for n in expired} == {order_pb2.ORDER_STATE_EXPIRED}
    clock = w.clock_of(case.case_id, "freeze_term", freeze.order_id)
    assert clock.state is ClockState.ENDED
    assert [e.event for e in w.sla(clock.clock_id)] == [
        "started",
        "renewal_reminder",
        "renewal_reminder",
        "expire",
    ]
    check_books(w)


def _renew(w: World, case: case_pb2.Case, old: order_pb2.Order) -> order_pb2.Order:
    body = freeze_body(case.case_id, 3_000_000)
    body.freeze.renews_order_id = old.order_id
    new = w.order(body)
    w.clock.advance(MIN)
    return w.answer("BANKB", execution(new.order_id, held=3_000_000))


def test_a_renewal_stops_the_old_freezes_term_clock_and_starts_the_new_ones(w: World) -> None:
    case, _, old = w.holding_freeze()
    end = add_months(_effective(w, old), 6)
    w.sweep_at(end - 7 * DAY)  # the first renewal reminder
    w.clock.set(end - 3 * DAY)
    new = _renew(w, case, old)
    stored = w.store.case(case.case_id)
    assert stored.order(old.order_id).state is OrderState.RENEWED
    assert stored.order(new.order_id).state is OrderState.HOLDING
    assert stored.held_fen == 3_000_000

    old_term = w.clock_of(case.case_id, "freeze_term", old.order_id)
    assert (old_term.state, old_term.stopped_by) == (ClockState.MET, "freeze.ended")
    assert [e.event for e in w.sla(old_term.clock_id)] == ["started", "renewal_reminder", "met"]
    new_term = w.clock_of(case.case_id, "freeze_term", new.order_id)
    renewed_at = _effective(w, new)
    assert new_term.started_at == renewed_at
    assert new_term.deadline_at == add_months(renewed_at, 6)
    assert w.sla(new_term.clock_id)[0].event == "started"

    # The old freeze neither is reminded again nor lapses.
    w.sweep_at(end + DAY)
    old_notices = [
        n for _, n in w.clock_notices("freeze_term") if n.clock_step.clock.order_id == old.order_id
    ]
    assert len(old_notices) == 1
    assert w.store.case(case.case_id).order(old.order_id).state is OrderState.RENEWED


def test_a_renewed_freeze_runs_its_own_term(w: World) -> None:
    case, _, old = w.holding_freeze()
    end = add_months(_effective(w, old), 6)
    w.clock.set(end - 3 * DAY)
    new = _renew(w, case, old)
    new_term = w.clock_of(case.case_id, "freeze_term", new.order_id)
    assert new_term.state is ClockState.OPEN
    new_end = add_months(_effective(w, new), 6)
    w.sweep_at(new_end)
    assert w.store.case(case.case_id).order(new.order_id).state is OrderState.EXPIRED


# ---- fund return in working days ------------------------------------------------------------


def test_a_fund_return_decided_before_spring_festival_is_due_three_working_days_later() -> None:
    # Thursday 2026-02-12, 10:00 in Beijing.
    w = World(datetime(2026, 2, 12, 2, 0, tzinfo=UTC))
    case, _, freeze = w.holding_freeze()
    decision = datetime(2026, 2, 13, 2, 0, tzinfo=UTC)  # Friday 10:00 in Beijing
    w.clock.set(decision)
    ret = w.order(return_body(case.case_id, freeze.order_id, 3_000_000))
    clock = w.clock_of(case.case_id, "fund_return", ret.order_id)
    assert clock.responsible == "BANKB"
    # Saturday the 14th is a make-up working day, the 15th-23rd the holiday: the third working
    # day is Wednesday the 25th, ending at 24:00 in Beijing.
    deadline = add_working_days(decision, 3, ChineseWorkingDays())
    assert clock.deadline_at == deadline == datetime(2026, 2, 25, 16, 0, tzinfo=UTC)

    def breaches() -> list[tuple[str, delivery_pb2.Notice]]:
        return [(to, n) for to, n in w.clock_notices("fund_return") if n.kind == BREACH]

    # Monday to Friday would have ended on Wednesday the 18th: nothing then.
    w.sweep_at(datetime(2026, 2, 18, 16, 0, tzinfo=UTC))
    assert w.clock_notices("fund_return") == []
    w.sweep_at(deadline - timedelta(seconds=1))
    assert [n.kind for _, n in w.clock_notices("fund_return")] == [REMINDER]
    assert breaches() == []
    w.sweep_at(deadline)
    assert sorted(to for to, _ in breaches()) == ["AFC", "BANKB"]
    assert all(n.clock_step.late.ToTimedelta() == timedelta(0) for _, n in breaches())
    check_books(w)


# ---- late firing ----------------------------------------------------------------------------


def test_steps_missed_while_the_hub_was_down_fire_once_each_in_order_marked_late(
    w: World,
) -> None:
    case = w.report()
    clock = w.clock_of(case.case_id, "verify")
    assert w.sweep_at(T0 + 30 * MIN) == 3
    assert w.hub.sweep() == 0
    assert w.sweep_at(T0 + 31 * MIN) == 0

    notices = w.clock_notices("verify")
    assert [(n.clock_step.step, to) for to, n in notices] == [
        ("reminder", "BANKA"),
        ("breach", "AFC"),
        ("breach", "BANKA"),
        ("regulator", "REG"),
    ]
    late = {"reminder": 26 * 60, "breach": 25 * 60, "regulator": 20 * 60}
    for _, notice in notices:
        seconds = late[notice.clock_step.step]
        assert notice.clock_step.late.ToTimedelta() == timedelta(seconds=seconds)
        assert f"fired {seconds} s late" in notice.summary
    log = [e for e in w.sla(clock.clock_id) if e.event in STEP_EVENTS]
    assert [(e.event, e.at, e.due_at, e.late_seconds) for e in log] == [
        ("reminder", T0 + 30 * MIN, T0 + 4 * MIN, 26 * 60.0),
        ("breach", T0 + 30 * MIN, T0 + 5 * MIN, 25 * 60.0),
        ("regulator", T0 + 30 * MIN, T0 + 10 * MIN, 20 * 60.0),
    ]
    audited = [a.detail for a in w.store.audit_of("clock") if clock.clock_id in a.detail]
    assert [d for d in audited if "late" in d] == [
        f"verify clock {clock.clock_id} reminder 1560s late: to BANKA",
        f"verify clock {clock.clock_id} breach 1500s late: to AFC, BANKA",
        f"verify clock {clock.clock_id} regulator 1200s late: to REG",
    ]
    assert w.clock_of(case.case_id, "verify").state is ClockState.ENDED
    check_books(w)


def test_a_step_fired_within_two_seconds_is_on_time(w: World) -> None:
    w.report()
    w.sweep_at(T0 + 4 * MIN + timedelta(seconds=1))
    [(_, notice)] = w.clock_notices()
    assert notice.clock_step.late.ToTimedelta() == timedelta(0)
    assert "late" not in notice.summary
    w.sweep_at(T0 + 5 * MIN + timedelta(seconds=3))
    breach = w.clock_notices()[1][1]
    assert breach.clock_step.late.ToTimedelta() == timedelta(seconds=3)
    assert "fired 3 s late" in breach.summary


def test_a_lapse_missed_while_the_hub_was_down_fires_late_after_its_reminder(w: World) -> None:
    case, stop = w.holding_stop()
    start = _effective(w, stop)
    w.sweep_at(start + 72 * HOUR)
    validity = w.clock_notices("stop_validity")
    assert [n.clock_step.step for _, n in validity] == ["reminder"] + ["expire"] * (
        len(validity) - 1
    )
    assert len(validity) >= 2
    expire = validity[-1][1]
    assert expire.kind == EXPIRED
    assert expire.clock_step.late.ToTimedelta() == 24 * HOUR
    assert "fired 86400 s late" in expire.summary
    assert w.store.case(case.case_id).order(stop.order_id).state is OrderState.EXPIRED
    check_books(w)


def test_on_time_the_investigation_escalates_to_the_regulator_as_the_stop_lapses(
    w: World,
) -> None:
    case, stop = w.holding_stop()
    start = _effective(w, stop)
    for hours in (19.2, 24, 38.4, 48):
        w.sweep_at(start + timedelta(hours=hours))
    steps = [n.clock_step.step for _, n in w.clock_notices("investigate")]
    assert steps == ["reminder", "breach", "regulator"]
    assert w.store.case(case.case_id).order(stop.order_id).state is OrderState.EXPIRED


def test_catching_up_fires_every_step_that_was_due_before_a_lapse(w: World) -> None:
    _, stop = w.holding_stop()
    w.sweep_at(_effective(w, stop) + 72 * HOUR)
    steps = [n.clock_step.step for _, n in w.clock_notices("investigate")]
    assert steps == ["reminder", "breach", "regulator"]


def test_a_lapse_notice_names_the_account_to_release(w: World) -> None:
    """A lapse notice carries the order, so the holder can find the hold to release."""
    _, stop = w.holding_stop()
    w.sweep_at(_effective(w, stop) + 48 * HOUR)
    [notice] = [
        n for to, n in w.clock_notices("stop_validity") if n.kind == EXPIRED and to == "AFC"
    ]
    account = notice.order.instruction.stop.account
    assert (account.institution_code, account.account_number) == (
        MULE_B.institution_code,
        MULE_B.account_number,
    )
