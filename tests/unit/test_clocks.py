"""Case clocks in the domain: the triggers a command produces, which clocks they start and stop,
with whom responsible and by when, and the order of a clock's steps."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from hub.domain.cases import (
    Case,
    ExecutionStatus,
    FreezeCommand,
    Order,
    OrderCommand,
    OrderState,
    ReleaseCommand,
    ReturnCommand,
    VerificationOutcome,
    add_months,
)
from hub.domain.clocks import (
    CaseClock,
    ClockChanges,
    ClockPolicy,
    ClockState,
    Policy,
    Responsible,
    SlaEntry,
    StepKind,
    Trigger,
    Window,
    apply_triggers,
    next_step,
    parse_step,
    stop,
    triggers_of,
)
from hub.domain.workdays import Arrangement, WeekdaysOnly, add_working_days
from hub.service import wire
from hub.service.sweep import describe_step
from hub.system.calendar import ChineseWorkingDays
from hub.system.policy import load_policy
from tests.unit.test_cases import (
    MULE_B,
    MULE_C,
    T0,
    VICTIM,
    answer,
    at,
    freeze_cmd,
    holding_stop,
    issue,
    open_case,
    result,
    stop_cmd,
    tx,
    verified_case,
)

DEFAULT = load_policy()
CENTRES = ["AFC"]
HUB = "HUB"


class Tracker:
    """What the service layer does around each command, with plain objects."""

    def __init__(self, case: Case, policy: Policy = DEFAULT, calendar: object = None) -> None:
        self.case = case
        self.policy = policy
        self.calendar = calendar or WeekdaysOnly()
        self.clocks: list[CaseClock] = []
        self.log: list[SlaEntry] = []
        self._ids = itertools.count(1)

    def run(
        self, action: Callable[[], object], *, new: bool = False, sent_at: datetime | None = None
    ) -> tuple[list[Trigger], ClockChanges]:
        since = 0 if new else len(self.case.events)
        before = {} if new else {o.order_id: o.state for o in self.case.orders}
        action()
        triggers = triggers_of(self.case, since, before, sent_at=sent_at)
        changes = apply_triggers(
            self.policy,
            self.case,
            triggers,
            [c for c in self.clocks if c.state is ClockState.OPEN],
            new_id=lambda: f"K{next(self._ids)}",
            calendar=self.calendar,  # type: ignore[arg-type]
            centres=CENTRES,
            hub_code=HUB,
        )
        self.clocks.extend(changes.started)
        self.log.extend(changes.log)
        return triggers, changes

    def issue(self, command: OrderCommand, now: datetime) -> Order:
        holder: list[Order] = []
        self.run(lambda: holder.append(issue(self.case, command, now=now)))
        return holder[0]

    def clock(self, kind: str, order: Order | None = None) -> CaseClock:
        found = [
            c
            for c in self.clocks
            if c.kind == kind and c.order_id == (order.order_id if order else "")
        ]
        assert len(found) == 1, (kind, found)
        return found[0]

    def states(self) -> dict[tuple[str, str], ClockState]:
        return {(c.kind, c.order_id): c.state for c in self.clocks}


def names(triggers: list[Trigger]) -> list[str]:
    return [t.name for t in triggers]


def opened_tracker() -> Tracker:
    """A tracker that saw the report arrive (the case is fed in after the fact)."""
    case = open_case()
    tracker = Tracker(case)
    tracker.run(lambda: None, new=True, sent_at=T0 - timedelta(seconds=5))
    return tracker


def verified_tracker(*transactions: object) -> Tracker:
    tracker = Tracker(open_case(*transactions))  # type: ignore[arg-type]
    tracker.run(lambda: None, new=True, sent_at=T0)
    tracker.run(
        lambda: tracker.case.verify(
            "BANKA", VerificationOutcome.CONFIRMED, "", now=at(1), message_id="m-verify"
        )
    )
    return tracker


def stop_on(tracker: Tracker, account: object = MULE_B, *, now: datetime | None = None) -> Order:
    holder: list[Order] = []
    on_c = stop_cmd(MULE_C, 1_000_000, [(at(-20), 1_000_000)])
    cmd = stop_cmd() if account is MULE_B else on_c
    tracker.run(lambda: holder.append(issue(tracker.case, cmd, now=now or at(2))))
    return holder[0]


def answer_held(tracker: Tracker, order: Order, *, now: datetime | None = None) -> None:
    tracker.run(lambda: answer(tracker.case, order, result(held=order.amount_fen), now=now))


# ---- triggers_of ----------------------------------------------------------------------------


def test_a_new_report_is_sent_then_received() -> None:
    case = open_case()
    sent = T0 - timedelta(seconds=20)
    triggers = triggers_of(case, 0, {}, sent_at=sent)
    assert [(t.name, t.at, t.order) for t in triggers] == [
        ("report.sent", sent, None),
        ("report.received", T0, None),
    ]
    # Without the signing time there is no report.sent.
    assert names(triggers_of(case, 0, {})) == ["report.received"]
    # Only the events past `events_since` count.
    assert triggers_of(case, 1, {}) == []


def test_verification_and_rejection_are_triggers() -> None:
    case = open_case()
    case.verify("BANKA", VerificationOutcome.CONFIRMED, "", now=at(3), message_id="m")
    [trigger] = triggers_of(case, 1, {})
    assert (trigger.name, trigger.at) == ("report.verified", at(3))

    other = open_case()
    other.verify("BANKA", VerificationOutcome.REJECTED, "own transfer", now=at(2), message_id="m")
    assert names(triggers_of(other, 1, {})) == ["report.rejected"]


def test_an_order_is_issued_answered_and_takes_effect() -> None:
    case = verified_case()
    since = len(case.events)
    order = issue(case, stop_cmd(), now=at(2))
    [issued] = triggers_of(case, since, {})
    assert (issued.name, issued.at, issued.order) == ("stop.issued", at(2), order)

    since, before = len(case.events), {order.order_id: order.state}
    answer(case, order, result(held=3_000_000), now=at(6))
    triggers = triggers_of(case, since, before)
    assert [(t.name, t.at, t.order) for t in triggers] == [
        ("stop.answered", at(6), order),
        ("stop.effective", at(6), order),
    ]


def test_an_answer_that_holds_nothing_does_not_take_effect() -> None:
    case = verified_case()
    order = issue(case, stop_cmd(), now=at(2))
    since, before = len(case.events), {order.order_id: order.state}
    answer(case, order, result(ExecutionStatus.NO_MATCH, code="NMAT", reason="name differs"))
    assert names(triggers_of(case, since, before)) == ["stop.answered"]


def test_an_order_ends_when_its_state_leaves_for_an_ended_one() -> None:
    case = verified_case()
    stop_order = holding_stop(case)
    since, before = len(case.events), {o.order_id: o.state for o in case.orders}
    freeze = issue(case, freeze_cmd(stop_order_id=stop_order.order_id), now=at(30))
    assert names(triggers_of(case, since, before)) == ["freeze.issued"]

    since, before = len(case.events), {o.order_id: o.state for o in case.orders}
    answer(case, freeze, result(held=3_000_000), now=at(31))
    triggers = triggers_of(case, since, before)
    assert [(t.name, t.order) for t in triggers] == [
        ("freeze.answered", freeze),
        ("freeze.effective", freeze),
        ("stop.ended", stop_order),  # converted
    ]
    assert triggers[-1].at == at(31)

    # A return that empties the freeze ends it.
    since, before = len(case.events), {o.order_id: o.state for o in case.orders}
    ret = issue(case, ReturnCommand(freeze.order_id, VICTIM, 3_000_000), now=at(40))
    before[ret.order_id] = ret.state
    answer(case, ret, result(returned=3_000_000), now=at(41))
    assert [(t.name, t.order) for t in triggers_of(case, since, before)] == [
        ("return.issued", ret),
        ("return.answered", ret),
        ("freeze.ended", freeze),  # returned
    ]


def test_a_withdrawn_or_released_or_lapsed_stop_ends() -> None:
    case = verified_case(tx(3_000_000), tx(1_000_000, payee=MULE_C))
    pending = issue(case, stop_cmd(), now=at(2))
    since, before = len(case.events), {o.order_id: o.state for o in case.orders}
    release = issue(case, ReleaseCommand(pending.order_id, "wrong account"), now=at(3))
    assert [(t.name, t.order) for t in triggers_of(case, since, before)] == [
        ("release.issued", release),
        ("stop.ended", pending),  # cancelled
    ]

    held = issue(case, stop_cmd(MULE_C, 1_000_000, [(at(-20), 1_000_000)]), now=at(4))
    answer(case, held, result(held=1_000_000), now=at(5))
    since, before = len(case.events), {o.order_id: o.state for o in case.orders}
    assert case.expire(held.order_id, at(5) + timedelta(hours=48), "48 hours passed")
    assert [(t.name, t.order) for t in triggers_of(case, since, before)] == [("stop.ended", held)]
    # An order already ended before the command does not end again.
    assert triggers_of(case, len(case.events), {o.order_id: o.state for o in case.orders}) == []


def test_closing_the_case_is_a_trigger() -> None:
    case = verified_case()
    stop_order = holding_stop(case)
    release = issue(case, ReleaseCommand(stop_order.order_id, "unrelated"), now=at(10))
    answer(case, release, result(released=3_000_000), now=at(11))
    since = len(case.events)
    assert case.close_if_settled(at(11))
    assert names(triggers_of(case, since, {o.order_id: o.state for o in case.orders})) == [
        "case.closed"
    ]


# ---- apply_triggers: who is responsible, by when --------------------------------------------


def test_a_report_starts_the_record_and_verify_clocks() -> None:
    tracker = opened_tracker()
    record = tracker.clock("record")
    assert (record.responsible, record.started_at) == (HUB, T0 - timedelta(seconds=5))
    assert record.deadline_at == T0 + timedelta(seconds=55)
    # Received within the minute: the record clock is met.
    assert (record.state, record.stopped_by, record.stopped_at) == (
        ClockState.MET,
        "report.received",
        T0,
    )
    verify = tracker.clock("verify")
    assert verify.state is ClockState.OPEN
    assert (verify.responsible, verify.started_at, verify.deadline_at) == (
        "BANKA",
        T0,
        T0 + timedelta(minutes=5),
    )
    assert (verify.next_step, verify.next_step_at) == ("reminder", T0 + timedelta(minutes=4))
    assert [(e.kind, e.event) for e in tracker.log] == [
        ("record", "started"),
        ("record", "met"),
        ("verify", "started"),
    ]
    started = tracker.log[2]
    assert (started.at, started.due_at, started.responsible) == (
        T0,
        T0 + timedelta(minutes=5),
        "BANKA",
    )
    assert started.detail == "5 minutes to reporter"


def test_a_report_that_took_too_long_to_arrive_missed_the_record_clock() -> None:
    tracker = Tracker(open_case())
    tracker.run(lambda: None, new=True, sent_at=T0 - timedelta(minutes=2))
    record = tracker.clock("record")
    assert record.state is ClockState.MISSED
    [missed] = [e for e in tracker.log if e.event == "missed"]
    assert missed.late_seconds == 60.0
    assert (missed.at, missed.due_at) == (T0, T0 - timedelta(minutes=1))


def test_responsibility_goes_to_reporter_addressee_and_the_issuing_centre() -> None:
    tracker = verified_tracker()
    # Before any order, the centre is the first centre registered.
    stop_issue = tracker.clock("stop_issue")
    assert (stop_issue.responsible, stop_issue.deadline_at) == ("AFC", at(11))
    assert tracker.clock("verify").state is ClockState.MET

    holder: list[Order] = []
    tracker.run(lambda: holder.append(issue(tracker.case, stop_cmd(), now=at(3), by="AFC-SH")))
    order = holder[0]
    stop_clock = tracker.clock("stop", order)
    assert (stop_clock.responsible, stop_clock.deadline_at) == ("BANKB", at(13))
    assert tracker.clock("stop_issue").state is ClockState.MET

    answer_held(tracker, order, now=at(9))
    investigate = tracker.clock("investigate", order)
    validity = tracker.clock("stop_validity", order)
    # The centre that issued the order (not the first registered) must decide.
    assert investigate.responsible == validity.responsible == "AFC-SH"
    assert investigate.deadline_at == at(9) + timedelta(hours=24)
    assert validity.deadline_at == at(9) + timedelta(hours=48)
    assert (validity.next_step, validity.next_step_at) == (
        "reminder",
        at(9) + timedelta(hours=48) * 0.8,
    )
    assert tracker.clock("stop", order).state is ClockState.MET


def frozen_tracker(calendar: ChineseWorkingDays) -> tuple[Tracker, Order]:
    """A verified case whose stopped money the centre froze and the bank holds."""
    tracker = verified_tracker()
    tracker.calendar = calendar
    stop_order = stop_on(tracker)
    answer_held(tracker, stop_order, now=at(5))
    holder: list[Order] = []
    tracker.run(
        lambda: holder.append(
            issue(tracker.case, freeze_cmd(stop_order_id=stop_order.order_id), now=at(60))
        )
    )
    answer_held(tracker, holder[0], now=at(61))
    return tracker, holder[0]


def return_order(tracker: Tracker, freeze: Order, decision: datetime) -> Order:
    """The frozen money ordered back to the victim at `decision`."""
    holder: list[Order] = []
    tracker.run(
        lambda: holder.append(
            issue(tracker.case, ReturnCommand(freeze.order_id, VICTIM, 3_000_000), now=decision)
        )
    )
    return holder[0]


def return_tracker(calendar: ChineseWorkingDays, decision: datetime) -> tuple[Tracker, Order]:
    tracker, freeze = frozen_tracker(calendar)
    return tracker, return_order(tracker, freeze, decision)


def test_a_freeze_runs_its_term_and_a_return_three_working_days() -> None:
    tracker, freeze = frozen_tracker(ChineseWorkingDays())
    term = tracker.clock("freeze_term", freeze)
    assert term.responsible == "AFC"
    assert term.deadline_at == add_months(at(61), 6) == freeze.expires_at
    assert (term.next_step, term.next_step_at) == (
        "renewal_reminder",
        term.deadline_at - timedelta(days=7),
    )

    decision = datetime(2026, 3, 6, 7, 0, tzinfo=UTC)  # a Friday, 15:00 in Beijing
    ret = tracker.clock("fund_return", return_order(tracker, freeze, decision))
    assert ret.responsible == "BANKB"
    assert ret.deadline_at == add_working_days(decision, 3, ChineseWorkingDays())
    assert ret.deadline_at == datetime(2026, 3, 11, 16, 0, tzinfo=UTC)
    assert not ret.deadline_estimated


FAR = 2035  # a year no chinesecalendar release will know for a long time


def test_a_working_day_deadline_over_a_year_without_data_is_marked_estimated() -> None:
    decision = datetime(FAR, 2, 6, 2, 0, tzinfo=UTC)  # a Tuesday, 10:00 in Beijing
    tracker, order = return_tracker(ChineseWorkingDays(), decision)
    ret = tracker.clock("fund_return", order)
    assert ret.deadline_estimated
    # Monday to Friday stood in: Wed 7, Thu 8, Fri 9 February.
    assert ret.deadline_at == datetime(FAR, 2, 9, 16, 0, tzinfo=UTC)
    started = [e for e in tracker.log if e.clock_id == ret.clock_id and e.event == "started"]
    assert [e.detail for e in started] == [
        f"3 working days to addressee; deadline estimated: no official holiday calendar for {FAR}"
    ]
    # On the wire (ListClocks, clock notices) and in the notices' words.
    assert wire.clock_to_proto(ret).deadline_estimated
    assert "(estimated: no official holiday calendar)" in describe_step(
        ret, StepKind.REMINDER, ret.deadline_at, 0
    )
    # The clocks that are not counted in working days are never estimates.
    assert not any(c.deadline_estimated for c in tracker.clocks if c is not ret)


def test_the_same_deadline_with_the_year_in_the_policy_is_official() -> None:
    spring = frozenset(datetime(FAR, 2, d).date() for d in range(7, 14))
    calendar = ChineseWorkingDays([Arrangement(FAR, "a test's notice", spring, frozenset())])
    decision = datetime(FAR, 2, 6, 2, 0, tzinfo=UTC)
    tracker, order = return_tracker(calendar, decision)
    ret = tracker.clock("fund_return", order)
    assert not ret.deadline_estimated
    # The Spring Festival skipped: Wed 14, Thu 15, Fri 16 February.
    assert ret.deadline_at == datetime(FAR, 2, 16, 16, 0, tzinfo=UTC)
    started = [e for e in tracker.log if e.clock_id == ret.clock_id and e.event == "started"]
    assert [e.detail for e in started] == ["3 working days to addressee"]
    assert not wire.clock_to_proto(ret).deadline_estimated
    assert "estimated" not in describe_step(ret, StepKind.REMINDER, ret.deadline_at, 0)


# ---- apply_triggers: which triggers stop which clocks ---------------------------------------


def test_an_order_clock_stops_on_its_own_order_only() -> None:
    tracker = verified_tracker(tx(3_000_000), tx(1_000_000, payee=MULE_C))
    stop_b = stop_on(tracker)
    stop_c = stop_on(tracker, MULE_C)
    answer_held(tracker, stop_c, now=at(4))
    assert tracker.clock("stop", stop_c).state is ClockState.MET
    assert tracker.clock("stop", stop_b).state is ClockState.OPEN  # another order's answer
    answer_held(tracker, stop_b, now=at(20))
    assert tracker.clock("stop", stop_b).state is ClockState.MISSED
    assert tracker.clock("investigate", stop_c).state is ClockState.OPEN

    # A release of stop C ends C's clocks, not B's.
    holder: list[Order] = []
    tracker.run(
        lambda: holder.append(
            issue(tracker.case, ReleaseCommand(stop_c.order_id, "unrelated"), now=at(30))
        )
    )
    assert tracker.clock("investigate", stop_c).state is ClockState.MET
    assert tracker.clock("investigate", stop_b).state is ClockState.OPEN
    assert tracker.clock("stop_validity", stop_c).state is ClockState.OPEN
    tracker.run(lambda: answer(tracker.case, holder[0], result(released=1_000_000), now=at(31)))
    assert tracker.clock("stop_validity", stop_c).state is ClockState.MET
    assert tracker.clock("stop_validity", stop_c).stopped_by == "stop.ended"
    assert tracker.clock("stop_validity", stop_b).state is ClockState.OPEN
    assert tracker.clock("release_unrelated", holder[0]).state is ClockState.MET


def test_a_freeze_of_the_same_account_answers_the_investigation_of_a_stop() -> None:
    tracker = verified_tracker(tx(3_000_000), tx(1_000_000, payee=MULE_C))
    stop_b = stop_on(tracker)
    stop_c = stop_on(tracker, MULE_C)
    answer_held(tracker, stop_b, now=at(5))
    answer_held(tracker, stop_c, now=at(5))
    # A freeze of B's account, not linked to the stop, still answers B's investigation.
    tracker.run(lambda: issue(tracker.case, freeze_cmd(), now=at(60)))
    investigate_b = tracker.clock("investigate", stop_b)
    assert (investigate_b.state, investigate_b.stopped_by) == (ClockState.MET, "freeze.issued")
    assert investigate_b.stopped_at == at(60)
    assert tracker.clock("investigate", stop_c).state is ClockState.OPEN
    # Validity of the stop runs on until the stop itself ends.
    assert tracker.clock("stop_validity", stop_b).state is ClockState.OPEN


def test_a_release_of_the_same_account_answers_the_investigation_of_a_stop() -> None:
    tracker = verified_tracker(tx(3_000_000), tx(1_000_000, payee=MULE_C))
    holder: list[Order] = []
    # Earlier freezes of other money in both accounts, then stops that take effect.
    for cmd in (freeze_cmd(amount=100_000), freeze_cmd(MULE_C, 100_000)):
        holder.append(tracker.issue(cmd, at(2)))
        answer_held(tracker, holder[-1], now=at(3))
    freeze_b, freeze_c = holder
    stop_b = stop_on(tracker, now=at(4))
    answer_held(tracker, stop_b, now=at(5))
    investigate = tracker.clock("investigate", stop_b)
    assert investigate.state is ClockState.OPEN
    # Releasing the other account's freeze leaves B's investigation running.
    tracker.run(lambda: issue(tracker.case, ReleaseCommand(freeze_c.order_id, "x"), now=at(50)))
    assert investigate.state is ClockState.OPEN
    tracker.run(lambda: issue(tracker.case, ReleaseCommand(freeze_b.order_id, "x"), now=at(60)))
    assert (investigate.state, investigate.stopped_by) == (ClockState.MET, "release.issued")
    assert tracker.clock("stop_validity", stop_b).state is ClockState.OPEN


def test_an_order_targeting_a_clocks_order_stops_it() -> None:
    # A return pays to the victim's account, not the frozen one: only the target links them.
    watch = ClockPolicy(
        "paid_out",
        "freeze.effective",
        frozenset({"return.answered"}),
        Window(30, "days"),
        Responsible.ADDRESSEE,
        (parse_step("breach@100%"),),
    )
    tracker = verified_tracker(tx(3_000_000), tx(1_000_000, payee=MULE_C))
    tracker.policy = Policy((*DEFAULT.clocks, watch))
    holder: list[Order] = []
    tracker.run(lambda: holder.append(issue(tracker.case, freeze_cmd(), now=at(2))))
    freeze_b = holder[0]
    answer_held(tracker, freeze_b, now=at(3))
    holder.clear()
    freeze_c_cmd = freeze_cmd(MULE_C, 1_000_000)
    tracker.run(lambda: holder.append(issue(tracker.case, freeze_c_cmd, now=at(4))))
    freeze_c = holder[0]
    answer_held(tracker, freeze_c, now=at(5))
    holder.clear()
    tracker.run(
        lambda: holder.append(
            issue(tracker.case, ReturnCommand(freeze_b.order_id, VICTIM, 1_000_000), now=at(9))
        )
    )
    tracker.run(lambda: answer(tracker.case, holder[0], result(returned=1_000_000), now=at(10)))
    assert tracker.clock("paid_out", freeze_b).state is ClockState.MET
    assert tracker.clock("paid_out", freeze_c).state is ClockState.OPEN


def test_a_renewal_stops_the_old_term_clock_and_keeps_the_new_one_running() -> None:
    tracker = verified_tracker()
    holder: list[Order] = []
    tracker.run(lambda: holder.append(issue(tracker.case, freeze_cmd(), now=at(2))))
    old = holder[0]
    answer_held(tracker, old, now=at(3))
    holder.clear()
    renew = FreezeCommand(MULE_B, 3_000_000, "JZ-2026-0042", "Chaoyang PSB", 6, "", old.order_id)
    later = at(3) + timedelta(days=170)
    tracker.run(lambda: holder.append(issue(tracker.case, renew, now=later)))
    new = holder[0]
    answer_held(tracker, new, now=later + timedelta(minutes=5))
    assert old.state is OrderState.RENEWED
    assert tracker.clock("freeze_term", old).state is ClockState.MET
    assert tracker.clock("freeze_term", old).stopped_by == "freeze.ended"
    assert tracker.clock("freeze_term", new).state is ClockState.OPEN


def test_answering_one_release_does_not_stop_anothers_clock() -> None:
    tracker = verified_tracker(tx(3_000_000))
    stop_b = stop_on(tracker)
    answer_held(tracker, stop_b, now=at(4))
    holder: list[Order] = []
    # A freeze of other money in the same account, then both holds are released.
    tracker.run(lambda: holder.append(issue(tracker.case, freeze_cmd(amount=500_000), now=at(5))))
    freeze = holder[0]
    answer_held(tracker, freeze, now=at(6))
    holder.clear()
    for target in (stop_b, freeze):
        holder.append(tracker.issue(ReleaseCommand(target.order_id, "unrelated"), at(7)))
    first, second = holder
    tracker.run(lambda: answer(tracker.case, first, result(released=3_000_000), now=at(8)))
    assert tracker.clock("release_unrelated", first).state is ClockState.MET
    assert tracker.clock("release_unrelated", second).state is ClockState.OPEN


def test_a_case_trigger_stops_a_case_clock_and_a_trigger_never_stops_what_it_started() -> None:
    # A clock both started and stopped by report.verified (none in the defaults).
    odd = ClockPolicy(
        "odd",
        "report.verified",
        frozenset({"report.verified", "case.closed"}),
        Window(1, "hours"),
        Responsible.CENTRE,
        (parse_step("breach@100%"),),
    )
    tracker = Tracker(open_case(), Policy((*DEFAULT.clocks, odd)))
    tracker.run(lambda: None, new=True)
    tracker.run(
        lambda: tracker.case.verify(
            "BANKA", VerificationOutcome.CONFIRMED, "", now=at(1), message_id="m"
        )
    )
    assert tracker.clock("odd").state is ClockState.OPEN
    assert tracker.clock("verify").state is ClockState.MET
    # A rejected report also stops the verify clock, and no other.
    other = Tracker(open_case())
    other.run(lambda: None, new=True)
    other.run(
        lambda: other.case.verify(
            "BANKA", VerificationOutcome.REJECTED, "own transfer", now=at(2), message_id="m"
        )
    )
    assert other.states() == {("verify", ""): ClockState.MET}


# ---- met, missed, next steps ----------------------------------------------------------------


def test_a_clock_stopped_in_time_is_met_with_no_steps_left() -> None:
    tracker = verified_tracker()  # verified at 1 minute, deadline 5
    verify = tracker.clock("verify")
    assert verify.state is ClockState.MET
    assert (verify.next_step, verify.next_step_at) == ("", None)
    assert (verify.stopped_at, verify.stopped_by) == (at(1), "report.verified")
    [met] = [e for e in tracker.log if e.kind == "verify" and e.event == "met"]
    assert (met.at, met.due_at, met.late_seconds, met.detail) == (
        at(1),
        at(5),
        0.0,
        "report.verified",
    )


def test_a_clock_stopped_late_is_missed_and_the_log_says_how_late() -> None:
    tracker = opened_tracker()
    tracker.run(
        lambda: tracker.case.verify(
            "BANKA", VerificationOutcome.CONFIRMED, "", now=at(7.5), message_id="m-verify"
        )
    )
    verify = tracker.clock("verify")
    assert verify.state is ClockState.MISSED
    assert (verify.next_step, verify.next_step_at) == ("", None)
    [missed] = [e for e in tracker.log if e.event == "missed"]
    assert (missed.kind, missed.at, missed.due_at, missed.late_seconds) == (
        "verify",
        at(7.5),
        at(5),
        150.0,
    )
    assert missed.responsible == "BANKA"


def test_stop_at_the_deadline_itself_is_met() -> None:
    clock = CaseClock("K1", "C1", "verify", "BANKA", T0, at(5))
    changes = ClockChanges()
    stop(clock, at(5), "report.verified", changes)
    assert clock.state is ClockState.MET
    assert changes.stopped == [clock]
    assert changes.log[0].event == "met"
    late = CaseClock("K2", "C1", "verify", "BANKA", T0, at(5))
    stop(late, at(5) + timedelta(seconds=1), "report.verified", changes)
    assert late.state is ClockState.MISSED
    assert changes.log[1].late_seconds == 1.0


def test_next_step_orders_percent_and_before_end_steps_by_time() -> None:
    policy = ClockPolicy(
        "mixed",
        "report.received",
        frozenset({"report.verified"}),
        Window(24, "hours"),
        Responsible.REPORTER,
        tuple(
            parse_step(s)
            for s in (
                "regulator@200%",
                "breach@100%",
                "reminder@-1h",
                "renewal_reminder@-6h",
                "reminder@50%",
            )
        ),
    )
    clock = CaseClock("K1", "C1", "mixed", "BANKA", T0, T0 + timedelta(hours=24))
    seen = []
    for done in range(6):
        clock.steps_done = done
        seen.append(next_step(policy, clock))
    h = timedelta(hours=1)
    assert seen == [
        ("reminder", T0 + 12 * h),
        ("renewal_reminder", T0 + 18 * h),
        ("reminder", T0 + 23 * h),
        ("breach", T0 + 24 * h),
        ("regulator", T0 + 48 * h),
        ("", None),
    ]


def test_the_freeze_term_ladder_reminds_a_week_and_a_day_before_it_lapses() -> None:
    cp = DEFAULT.clock("freeze_term")
    assert cp is not None
    end = add_months(T0, 6)
    clock = CaseClock("K1", "C1", "freeze_term", "AFC", T0, end, order_id="C1-O001")
    steps = []
    for done in range(4):
        clock.steps_done = done
        steps.append(next_step(cp, clock))
    assert steps == [
        ("renewal_reminder", end - timedelta(days=7)),
        ("renewal_reminder", end - timedelta(days=1)),
        ("expire", end),
        ("", None),
    ]
