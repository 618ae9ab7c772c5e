"""Every kind of order a member receives, made by a real hub, passes the checks docs/signing.md
("Checking an order before acting on it") lists for it, and fails them when one thing about it
is wrong. `documented_check` is written from that page alone, row by row; the bank agent
(adapters/bank/agent.py), the SDK's own checker, must agree with it on every order.

Before issue 19 the page told a member to check `origin.sender == order.issued_by` and that
the signer is a centre for every order, which refuses every stop the standing rule issues.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import pytest
from google.protobuf.message import DecodeError, Message

from adapters.bank import BankAgent
from adapters.corebank import SimulatedCoreBank
from adapters.sdk import Delivery, DeliveryStream, HubClient
from hub.crypto.envelope import seal_message
from stophub.v1 import (
    account_pb2,
    appeal_pb2,
    case_pb2,
    delivery_pb2,
    envelope_pb2,
    institution_pb2,
    order_pb2,
    returns_pb2,
)
from tests.e2e.conftest import Network
from tests.e2e.test_money_trail import frozen_stop
from tests.e2e.wire_helpers import MULE, VICTIM, freeze_of, report

CENTRE_KIND = institution_pb2.INSTITUTION_KIND_ANTI_FRAUD_CENTRE
PENDING, CANCELLED = order_pb2.ORDER_STATE_PENDING, order_pb2.ORDER_STATE_CANCELLED
WALLET = account_pb2.AccountRef(
    institution_code="PAYX", account_number="PX88000003", holder_name="Wang Wu"
)
SECOND_MULE = account_pb2.AccountRef(
    institution_code="BANKB", account_number="6222020000000077", holder_name="Zhou Qi"
)
DEFAULT_MAX_LAYER = 5  # "0 there means 5"


class Refused(Exception):
    """The order fails a check of docs/signing.md; the message says which."""


# ---- the checks of docs/signing.md, row by row --------------------------------------------------


def parsed(envelope: envelope_pb2.Envelope, body: Message) -> Message:
    if envelope.body_type != body.DESCRIPTOR.full_name:
        raise Refused(f"{envelope.body_type} is not a {body.DESCRIPTOR.full_name}")
    try:
        body.ParseFromString(envelope.body)
    except DecodeError as err:
        raise Refused(f"not a {body.DESCRIPTOR.full_name}: {err}") from err
    return body


def micros(ts: object) -> tuple[int, int]:
    return (ts.seconds, ts.nanos // 1_000)  # type: ignore[attr-defined]


def account(a: account_pb2.AccountRef) -> tuple[str, str, str]:
    return (a.institution_code.strip(), a.account_number.strip(), a.holder_name.strip())


def same_content(signed: order_pb2.OrderInstruction, shown: order_pb2.OrderInstruction) -> bool:
    which = signed.WhichOneof("instruction")
    if which != shown.WhichOneof("instruction") or signed.case_id != shown.case_id:
        return False
    if which == "stop":
        s, h = signed.stop, shown.stop
        facts = [(micros(t.transaction_time), t.amount_fen) for t in s.transactions]
        if s.upstream_order_id and not s.transactions:
            facts = [(micros(t.transaction_time), t.amount_fen) for t in h.transactions]
        return (account(s.account), s.amount_fen, s.upstream_order_id.strip(), facts) == (
            account(h.account),
            h.amount_fen,
            h.upstream_order_id,
            [(micros(t.transaction_time), t.amount_fen) for t in h.transactions],
        )
    if which == "freeze":
        s, h = signed.freeze, shown.freeze  # type: ignore[assignment]
        fields = ("amount_fen", "term_months", "stop_order_id", "renews_order_id")
        texts = ("filed_case_number", "approving_authority")
        return (
            account(s.account) == account(h.account)
            and all(getattr(s, f) == getattr(h, f) for f in fields)
            and all(getattr(s, f).strip() == getattr(h, f) for f in texts)
        )
    if which == "release":
        return signed.release.target_order_id == shown.release.target_order_id
    s, h = signed.fund_return, shown.fund_return  # type: ignore[assignment]
    return (s.freeze_order_id, account(s.beneficiary), s.amount_fen) == (
        h.freeze_order_id,
        account(h.beneficiary),
        h.amount_fen,
    )


async def documented_check(client: HubClient, notice: delivery_pb2.Notice) -> str:
    """The row of docs/signing.md's table (a to f, or "lapse") that `notice` is, once every
    check that row lists passed; Refused otherwise."""
    me, order = client.institution, notice.order

    async def centre(code: str) -> None:
        if (await client.member(code)).kind != CENTRE_KIND:
            raise Refused(f"{code} is not an anti-fraud centre")

    async def verified(field: str) -> envelope_pb2.Envelope:
        if not notice.HasField(field):
            raise Refused(f"no {field}")
        envelope: envelope_pb2.Envelope = getattr(notice, field)
        problem = await client.verify_forwarded(envelope)
        if problem is not None:
            raise Refused(f"{field}: {problem}")
        return envelope

    def caused_it(origin: envelope_pb2.Envelope) -> None:
        if origin.message_id != order.origin_message_id:
            raise Refused("origin.message_id is not order.origin_message_id")

    async def issued_by_centre(origin: envelope_pb2.Envelope) -> None:
        if origin.sender != order.issued_by:
            raise Refused("origin.sender is not order.issued_by")
        caused_it(origin)
        await centre(origin.sender)

    async def rule() -> order_pb2.AutoStopRule:
        authorization = await verified("authorization")
        if authorization.sender != order.issued_by:
            raise Refused("authorization.sender is not order.issued_by")
        await centre(authorization.sender)
        signed = parsed(authorization, order_pb2.AutoStopRule())
        assert isinstance(signed, order_pb2.AutoStopRule)
        if signed.rule_id.strip() != order.auto_stop_rule_id or not signed.enabled:
            raise Refused("not the enabled rule the order names")
        if order.instruction.stop.amount_fen > signed.max_amount_fen:
            raise Refused("above the rule's max_amount_fen")
        return signed

    if order.addressed_to != me:
        raise Refused("addressed to another institution")
    if notice.kind == delivery_pb2.NOTICE_KIND_ORDER_EXPIRED:
        if notice.HasField("origin"):
            raise Refused("a lapse has no origin")
        if order.kind not in (order_pb2.ORDER_KIND_STOP, order_pb2.ORDER_KIND_FREEZE):
            raise Refused("only stops and freezes lapse")
        if order.state != order_pb2.ORDER_STATE_EXPIRED:
            raise Refused("not EXPIRED")
        expires = order.expire_time.ToDatetime().replace(tzinfo=client.clock.now().tzinfo)
        if not order.HasField("expire_time") or expires > client.clock.now():
            raise Refused("its expire_time has not passed")
        return "lapse"
    if notice.kind != delivery_pb2.NOTICE_KIND_ORDER:
        raise Refused("not an order")
    origin = await verified("origin")
    row = {
        (PENDING, "stophub.v1.OrderInstruction"): "a",
        (PENDING, "stophub.v1.Verification"): "b",
        (PENDING, "stophub.v1.ExecutionResult"): "c",
        (PENDING, "stophub.v1.DistributionDecisionBody"): "d",
        (PENDING, "stophub.v1.StartDistributionBody"): "d",
        (PENDING, "stophub.v1.DecideAppealBody"): "e",
        (CANCELLED, "stophub.v1.OrderInstruction"): "f",
        (CANCELLED, "stophub.v1.DecideAppealBody"): "f",
    }.get((order.state, origin.body_type))
    instruction = order.instruction
    which = instruction.WhichOneof("instruction")
    if row == "a":
        await issued_by_centre(origin)
        signed = parsed(origin, order_pb2.OrderInstruction())
        assert isinstance(signed, order_pb2.OrderInstruction)
        if not same_content(signed, instruction):
            raise Refused("the hub's copy differs from what the centre signed")
    elif row == "b":
        if not order.auto_stop_rule_id or which != "stop" or instruction.stop.upstream_order_id:
            raise Refused("not a layer-1 stop under a rule")
        verification = parsed(origin, case_pb2.Verification())
        assert isinstance(verification, case_pb2.Verification)
        if verification.case_id != order.case_id:
            raise Refused("a verification of another case")
        if verification.outcome != case_pb2.VERIFICATION_OUTCOME_CONFIRMED:
            raise Refused("the report was not confirmed")
        caused_it(origin)
        await rule()
    elif row == "c":
        stop = instruction.stop
        if not order.auto_stop_rule_id or which != "stop" or not stop.upstream_order_id:
            raise Refused("not a downstream stop under a rule")
        answer = parsed(origin, order_pb2.ExecutionResult())
        assert isinstance(answer, order_pb2.ExecutionResult)
        if answer.order_id != stop.upstream_order_id:
            raise Refused("the answer to another order")
        caused_it(origin)
        signed_rule = await rule()
        if not signed_rule.follow_onward_transfers:
            raise Refused("the rule does not follow onward transfers")
        if order.layer > (signed_rule.max_layer or DEFAULT_MAX_LAYER):
            raise Refused("deeper than the rule follows")
        into_me = [
            t
            for t in answer.onward_transfers
            if t.to_account.institution_code == me
            and t.to_account.account_number == stop.account.account_number
        ]
        carried = 0
        for fact in stop.transactions:
            key = (micros(fact.transaction_time), fact.amount_fen)
            match = next(
                (t for t in into_me if (micros(t.transfer_time), t.amount_fen) == key), None
            )
            if match is None:
                raise Refused("a credit the answer does not report moving into this account")
            into_me.remove(match)
            carried += match.carried_fen or match.amount_fen
        if not stop.transactions or stop.amount_fen > carried:
            raise Refused("more than the named transfers carried")
    elif row == "d":
        if which != "fund_return" or not instruction.fund_return.distribution_id:
            raise Refused("not a distribution's return")
        await issued_by_centre(origin)
        wanted = instruction.fund_return.distribution_id
        if origin.body_type == "stophub.v1.DistributionDecisionBody":
            decision = parsed(origin, returns_pb2.DistributionDecisionBody())
            assert isinstance(decision, returns_pb2.DistributionDecisionBody)
            if decision.distribution_id != wanted or (
                decision.decision != returns_pb2.DISTRIBUTION_DECISION_CONFIRM
            ):
                raise Refused("not the confirmed decision of this distribution")
        else:
            start = parsed(origin, returns_pb2.StartDistributionBody())
            assert isinstance(start, returns_pb2.StartDistributionBody)
            if start.account.institution_code != me:
                raise Refused("a distribution of another institution's account")
    elif row == "e":
        if which != "release":
            raise Refused("an upheld appeal only releases")
        await issued_by_centre(origin)
        decision = parsed(origin, appeal_pb2.DecideAppealBody())
        assert isinstance(decision, appeal_pb2.DecideAppealBody)
        if decision.decision != appeal_pb2.APPEAL_DECISION_UPHOLD:
            raise Refused("the decision upholds no appeal")
    elif row == "f":
        if origin.body_type == "stophub.v1.OrderInstruction":
            release = parsed(origin, order_pb2.OrderInstruction())
            assert isinstance(release, order_pb2.OrderInstruction)
            if release.WhichOneof("instruction") != "release" or (
                release.release.target_order_id != order.order_id
            ):
                raise Refused("the signed release targets another order")
        else:
            decision = parsed(origin, appeal_pb2.DecideAppealBody())
            assert isinstance(decision, appeal_pb2.DecideAppealBody)
            if decision.decision != appeal_pb2.APPEAL_DECISION_UPHOLD:
                raise Refused("the decision upholds no appeal")
        await centre(origin.sender)
    else:
        raise Refused(f"no row for a {order.state} order caused by a {origin.body_type}")
    return row


# ---- orders as the hub delivers them ------------------------------------------------------------


@dataclasses.dataclass
class Member:
    """A member's client and its open delivery stream; what arrived so far."""

    client: HubClient
    stream: DeliveryStream
    got: list[Delivery] = dataclasses.field(default_factory=list)

    async def until(self, done: Callable[[list[Delivery]], bool], timeout: float = 20) -> None:
        async with asyncio.timeout(timeout):
            while not done(self.got):
                delivery = await anext(self.stream)
                await self.stream.ack(delivery.sequence)
                self.got.append(delivery)

    async def order(self, order_id: str, state: int = PENDING) -> Delivery:
        def found(got: list[Delivery]) -> bool:
            return any(self._is(d, order_id, state) for d in got)

        await self.until(found)
        return next(d for d in self.got if self._is(d, order_id, state))

    async def lapse(self, order_id: str) -> Delivery:
        def found(got: list[Delivery]) -> bool:
            return any(self._lapse(d, order_id) for d in got)

        await self.until(found)
        return next(d for d in self.got if self._lapse(d, order_id))

    @staticmethod
    def _is(d: Delivery, order_id: str, state: int) -> bool:
        n = d.notice
        return (
            n.kind == delivery_pb2.NOTICE_KIND_ORDER
            and n.order.order_id == order_id
            and n.order.state == state
        )

    @staticmethod
    def _lapse(d: Delivery, order_id: str) -> bool:
        n = d.notice
        return n.kind == delivery_pb2.NOTICE_KIND_ORDER_EXPIRED and n.order.order_id == order_id


@pytest.fixture
async def members(network: Network) -> dict[str, Member]:
    made = {}
    for code in ("CENTRE", "BANKA", "BANKB", "PAYX"):
        client = network.client(code)
        stream = client.deliveries("checks")
        stream.start()
        made[code] = Member(client, stream)
    yield made  # type: ignore[misc]
    for member in made.values():
        await member.stream.close()
        await member.client.close()


async def as_delivered(client: HubClient, d: Delivery, notice: delivery_pb2.Notice) -> Delivery:
    """`d` carrying `notice`, its forwarded signatures checked again as the stream would."""
    problems = []
    verdicts = {}
    for field in ("origin", "authorization"):
        if notice.HasField(field):
            problem = await client.verify_forwarded(getattr(notice, field))
            verdicts[field] = problem is None
            problems += [f"{field}: {problem}"] if problem else []
        else:
            verdicts[field] = False
    return dataclasses.replace(
        d,
        notice=notice,
        origin_verified=verdicts["origin"],
        authorization_verified=verdicts["authorization"],
        problems=tuple(problems),
    )


async def both_accept(member: Member, d: Delivery, row: str) -> None:
    assert await documented_check(member.client, d.notice) == row, d.notice.summary
    verdict = await BankAgent(member.client, SimulatedCoreBank("X", datetime.now))._authentic(d)
    assert verdict.ok, (row, verdict.why)


async def both_refuse(
    member: Member, d: Delivery, change: Callable[[delivery_pb2.Notice], None], why: str
) -> None:
    notice = delivery_pb2.Notice()
    notice.CopyFrom(d.notice)
    change(notice)
    with pytest.raises(Refused, match=why):
        await documented_check(member.client, notice)
    altered = await as_delivered(member.client, d, notice)
    verdict = await BankAgent(member.client, SimulatedCoreBank("X", datetime.now))._authentic(
        altered
    )
    assert not verdict.ok, f"the agent took an order docs/signing.md refuses ({why})"


def signed_by(
    network: Network, code: str, body: Message, like: envelope_pb2.Envelope
) -> envelope_pb2.Envelope:
    """`body` signed with `code`'s registered key, under `like`'s message id and time."""
    return seal_message(
        network.keys[code],
        sender=code,
        recipient="HUB",
        message_id=like.message_id,
        create_time=like.create_time.ToDatetime().replace(tzinfo=network.clock.now().tzinfo),
        message=body,
    )


def answer(
    order_id: str,
    status: int,
    held: int = 0,
    *,
    code: str = "",
    onward: Sequence[tuple[account_pb2.AccountRef, int, datetime]] = (),
    carried: int = 0,
) -> order_pb2.ExecutionResult:
    result = order_pb2.ExecutionResult(
        order_id=order_id,
        status=status,
        reason_code=code,
        amount_held_fen=held,  # type: ignore[arg-type]
    )
    for i, (to, fen, at) in enumerate(onward):
        t = result.onward_transfers.add(
            amount_fen=fen, to_account=to, transaction_reference=f"OUT-{i + 1}", carried_fen=carried
        )
        t.transfer_time.FromDatetime(at)
    return result


def stop_of(case: case_pb2.Case, where: account_pb2.AccountRef) -> order_pb2.OrderInstruction:
    instruction = order_pb2.OrderInstruction(case_id=case.case_id, note="stop it")
    instruction.stop.account.CopyFrom(where)
    instruction.stop.amount_fen = case.loss_fen
    for t in case.report.transactions:
        fact = instruction.stop.transactions.add(amount_fen=t.amount_fen)
        fact.transaction_time.CopyFrom(t.transaction_time)
    return instruction


def paying(
    where: account_pb2.AccountRef, now: datetime, amounts: tuple[int, ...]
) -> case_pb2.Report:
    body = report(now, amounts)
    for t in body.transactions:
        t.payee.CopyFrom(where)
    return body


EXECUTED = order_pb2.EXECUTION_STATUS_EXECUTED
PARTIAL = order_pb2.EXECUTION_STATUS_PARTIALLY_EXECUTED


# ---- the orders ------------------------------------------------------------------------------


async def test_the_centres_own_orders_and_a_withdrawal_pass_rows_a_and_f(
    network: Network, members: dict[str, Member]
) -> None:
    centre, banka, bankb, payx = (members[c] for c in ("CENTRE", "BANKA", "BANKB", "PAYX"))
    now = network.clock.now()
    case = await banka.client.create_report(paying(SECOND_MULE, now, (500_000,)))
    case = await banka.client.verify_report(case.case_id)

    # A stop, withdrawn before Bank B answered: the withdrawal, then a release of nothing.
    first = await centre.client.issue_order(stop_of(case, SECOND_MULE))
    d_first = await bankb.order(first.order_id)
    await both_accept(bankb, d_first, "a")
    release = order_pb2.OrderInstruction(case_id=case.case_id)
    release.release.target_order_id = first.order_id
    release.release.reason = "wrong account"
    nothing = await centre.client.issue_order(release)
    withdrawn = await bankb.order(first.order_id, CANCELLED)
    await both_accept(bankb, withdrawn, "f")
    assert withdrawn.notice.origin.message_id != withdrawn.notice.order.origin_message_id
    d_nothing = await bankb.order(nothing.order_id)
    assert d_nothing.notice.order.instruction.release.amount_fen == 0
    await both_accept(bankb, d_nothing, "a")

    # A stop again, answered with money moved on; the centre follows it by hand, naming no
    # credits: the hub names the transfer.
    second = await centre.client.issue_order(stop_of(case, SECOND_MULE))
    await both_accept(bankb, await bankb.order(second.order_id), "a")
    moved = network.clock.now() - timedelta(minutes=5)
    await bankb.client.answer_order(
        answer(second.order_id, PARTIAL, 200_000, code="AM04", onward=[(WALLET, 250_000, moved)])
    )
    downstream = order_pb2.OrderInstruction(case_id=case.case_id)
    downstream.stop.account.CopyFrom(WALLET)
    downstream.stop.amount_fen = 250_000
    downstream.stop.upstream_order_id = second.order_id
    followed = await centre.client.issue_order(downstream)
    d_followed = await payx.order(followed.order_id)
    named = d_followed.notice.order.instruction.stop.transactions
    assert [(t.transaction_time.ToDatetime(), t.amount_fen) for t in named] == [
        (moved.replace(tzinfo=None), 250_000)
    ]
    await both_accept(payx, d_followed, "a")

    # A freeze taking the stop over, a return from it, a release of a hold.
    freeze = freeze_of(
        case.case_id,
        SECOND_MULE,
        200_000,
        takes_over=second.order_id,
        filed_case_number=" JX-2026-0312 ",  # the hub trims it; the signed text is not
    )
    frozen = await centre.client.issue_order(freeze)
    await both_accept(bankb, await bankb.order(frozen.order_id), "a")
    await bankb.client.answer_order(answer(frozen.order_id, EXECUTED, 200_000))
    back = order_pb2.OrderInstruction(case_id=case.case_id)
    back.fund_return.freeze_order_id = frozen.order_id
    back.fund_return.beneficiary.CopyFrom(VICTIM)
    back.fund_return.amount_fen = 50_000
    returned = await centre.client.issue_order(back)
    d_returned = await bankb.order(returned.order_id)
    await both_accept(bankb, d_returned, "a")
    await payx.client.answer_order(answer(followed.order_id, EXECUTED, 250_000))
    lift = order_pb2.OrderInstruction(case_id=case.case_id)
    lift.release.target_order_id = followed.order_id
    lifted = await centre.client.issue_order(lift)
    d_lifted = await payx.order(lifted.order_id)
    assert d_lifted.notice.order.instruction.release.amount_fen == 250_000
    await both_accept(payx, d_lifted, "a")

    # One thing wrong each time.
    def more(n: delivery_pb2.Notice) -> None:
        n.order.instruction.fund_return.amount_fen += 1

    await both_refuse(bankb, d_returned, more, "differs from what the centre signed")

    def another_upstream(n: delivery_pb2.Notice) -> None:
        n.order.instruction.stop.upstream_order_id = first.order_id

    await both_refuse(payx, d_followed, another_upstream, "differs from what the centre signed")

    def from_a_bank(n: delivery_pb2.Notice) -> None:
        instruction = order_pb2.OrderInstruction()
        instruction.ParseFromString(n.origin.body)
        n.origin.CopyFrom(signed_by(network, "BANKA", instruction, n.origin))
        n.order.issued_by = "BANKA"

    await both_refuse(bankb, d_returned, from_a_bank, "BANKA is not an anti-fraud centre")

    def other_target(n: delivery_pb2.Notice) -> None:
        n.order.order_id = second.order_id

    await both_refuse(bankb, withdrawn, other_target, "targets another order")

    def not_the_cause(n: delivery_pb2.Notice) -> None:
        n.order.origin_message_id = "centre-some-other-message"

    await both_refuse(bankb, d_returned, not_the_cause, "origin.message_id")


async def test_stops_under_the_standing_rule_pass_rows_b_and_c_and_lapse(
    network: Network, members: dict[str, Member]
) -> None:
    centre, banka, bankb, payx = (members[c] for c in ("CENTRE", "BANKA", "BANKB", "PAYX"))
    await centre.client.set_auto_stop_rule(
        order_pb2.AutoStopRule(
            rule_id=" R1 ", enabled=True, max_amount_fen=10_000_000, follow_onward_transfers=True
        )
    )
    case = await banka.client.create_report(report(network.clock.now(), (500_000,)))
    case = await banka.client.verify_report(case.case_id)
    [stop] = case.orders
    d_stop = await bankb.order(stop.order_id)
    assert d_stop.notice.origin.sender == "BANKA" != d_stop.notice.order.issued_by
    await both_accept(bankb, d_stop, "b")

    moved = network.clock.now() - timedelta(minutes=5)
    await bankb.client.answer_order(
        answer(
            stop.order_id,
            PARTIAL,
            100_000,
            code="AM04",
            onward=[(WALLET, 600_000, moved)],
            carried=400_000,  # the mule's other money made up the rest of the transfer
        )
    )
    [down] = [o for o in (await centre.client.get_case(case.case_id)).orders if o.layer == 2]
    d_down = await payx.order(down.order_id)
    assert d_down.notice.origin.sender == "BANKB" and d_down.notice.order.layer == 2
    # The whole transfer is the credit; what of the victim's money it carried is the amount.
    [credit] = d_down.notice.order.instruction.stop.transactions
    assert (credit.amount_fen, d_down.notice.order.instruction.stop.amount_fen) == (
        600_000,
        400_000,
    )
    await both_accept(payx, d_down, "c")
    await payx.client.answer_order(answer(down.order_id, EXECUTED, 400_000))

    def no_rule(n: delivery_pb2.Notice) -> None:
        n.ClearField("authorization")

    await both_refuse(bankb, d_stop, no_rule, "no authorization")

    def lower_limit(n: delivery_pb2.Notice) -> None:
        signed = order_pb2.AutoStopRule(
            rule_id="R1", enabled=True, max_amount_fen=1_000, follow_onward_transfers=True
        )
        n.authorization.CopyFrom(signed_by(network, "CENTRE", signed, n.authorization))

    await both_refuse(bankb, d_stop, lower_limit, "above the rule's max_amount_fen")

    def rejected_report(n: delivery_pb2.Notice) -> None:
        unconfirmed = case_pb2.Verification(
            case_id=case.case_id, outcome=case_pb2.VERIFICATION_OUTCOME_REJECTED, reason="no"
        )
        n.origin.CopyFrom(signed_by(network, "BANKA", unconfirmed, n.origin))

    await both_refuse(bankb, d_stop, rejected_report, "not confirmed")

    def not_following(n: delivery_pb2.Notice) -> None:
        signed = order_pb2.AutoStopRule(rule_id="R1", enabled=True, max_amount_fen=10_000_000)
        n.authorization.CopyFrom(signed_by(network, "CENTRE", signed, n.authorization))

    await both_refuse(payx, d_down, not_following, "does not follow onward transfers")

    def another_credit(n: delivery_pb2.Notice) -> None:
        n.order.instruction.stop.transactions[0].amount_fen = 400_000

    await both_refuse(payx, d_down, another_credit, "does not report moving into this account")

    def above_carried(n: delivery_pb2.Notice) -> None:
        n.order.instruction.stop.amount_fen = 400_001

    await both_refuse(payx, d_down, above_carried, "more than the named transfers carried")

    # 48 hours on, both holds lapse: the holders are told, with no signer but the hub.
    network.clock.advance(timedelta(hours=49))
    network.server.hub.sweep()
    for member, order_id in ((bankb, stop.order_id), (payx, down.order_id)):
        lapse = await member.lapse(order_id)
        assert await documented_check(member.client, lapse.notice) == "lapse"
        agent = BankAgent(member.client, SimulatedCoreBank(member.client.institution, datetime.now))
        assert await agent.handle(lapse) and agent.security_events == []
        assert any(f"{order_id}: it lapsed" in line for line in agent.history)

    def not_yet(n: delivery_pb2.Notice) -> None:
        n.order.expire_time.FromDatetime(network.clock.now() + timedelta(days=1))

    notice = delivery_pb2.Notice()
    notice.CopyFrom(lapse.notice)
    not_yet(notice)
    with pytest.raises(Refused, match="has not passed"):
        await documented_check(payx.client, notice)
    agent = BankAgent(payx.client, SimulatedCoreBank("PAYX", datetime.now))
    assert await agent.handle(dataclasses.replace(lapse, notice=notice))
    assert len(agent.security_events) == 1 and "NOT lifted" in agent.security_events[0]


async def test_a_stop_that_found_nothing_lapses_when_its_case_closes(
    network: Network, members: dict[str, Member]
) -> None:
    centre, banka, bankb, payx = (members[c] for c in ("CENTRE", "BANKA", "BANKB", "PAYX"))
    body = report(network.clock.now(), (500_000, 300_000))
    body.transactions[0].payee.CopyFrom(SECOND_MULE)
    body.transactions[1].payee.CopyFrom(WALLET)
    case = await banka.client.create_report(body)
    case = await banka.client.verify_report(case.case_id)

    def stop_at(where: account_pb2.AccountRef) -> order_pb2.OrderInstruction:
        instruction = order_pb2.OrderInstruction(case_id=case.case_id)
        instruction.stop.account.CopyFrom(where)
        for t in case.report.transactions:
            if t.payee.account_number == where.account_number:
                instruction.stop.amount_fen += t.amount_fen
                fact = instruction.stop.transactions.add(amount_fen=t.amount_fen)
                fact.transaction_time.CopyFrom(t.transaction_time)
        return instruction

    held = await centre.client.issue_order(stop_at(SECOND_MULE))
    empty = await centre.client.issue_order(stop_at(WALLET))
    await bankb.client.answer_order(answer(held.order_id, EXECUTED, 500_000))
    await payx.client.answer_order(answer(empty.order_id, PARTIAL, 0, code="AM04"))

    # Bank B's money goes back; with it the case closes, and PAYX's empty stop lapses now,
    # not 48 hours after its answer.
    lift = order_pb2.OrderInstruction(case_id=case.case_id)
    lift.release.target_order_id = held.order_id
    lift.release.reason = "the victim was repaid by the holder"
    release = await centre.client.issue_order(lift)
    await bankb.order(release.order_id)
    await bankb.client.answer_order(
        order_pb2.ExecutionResult(
            order_id=release.order_id, status=EXECUTED, amount_released_fen=500_000
        )
    )
    closed = await centre.client.get_case(case.case_id)
    assert closed.state == case_pb2.CASE_STATE_CLOSED
    [lapsed] = [o for o in closed.orders if o.order_id == empty.order_id]
    assert lapsed.state == order_pb2.ORDER_STATE_EXPIRED
    # Stored as ending when the case closed, not 48 hours after PAYX's answer.
    assert lapsed.expire_time == closed.close_time

    lapse = await payx.lapse(empty.order_id)
    assert "its case closed with nothing held" in lapse.notice.summary
    assert await documented_check(payx.client, lapse.notice) == "lapse"
    agent = BankAgent(payx.client, SimulatedCoreBank("PAYX", datetime.now))
    assert await agent.handle(lapse) and agent.security_events == []
    assert any(f"{empty.order_id}: it lapsed" in line for line in agent.history)


async def returns_to(member: Member, centre: Member, case_ids: Sequence[str]) -> list[Delivery]:
    orders = [
        o
        for case_id in case_ids
        for o in (await centre.client.get_case(case_id)).orders
        if o.kind == order_pb2.ORDER_KIND_RETURN
    ]
    assert orders
    return [await member.order(o.order_id) for o in orders]


async def test_returns_a_distribution_decided_pass_row_d(
    network: Network, members: dict[str, Member]
) -> None:
    centre, banka, bankb, payx = (members[c] for c in ("CENTRE", "BANKA", "BANKB", "PAYX"))
    # One victim's money only: the distribution returns it at once.
    alone = await banka.client.create_report(paying(SECOND_MULE, network.clock.now(), (300_000,)))
    alone = await banka.client.verify_report(alone.case_id)
    stop = await centre.client.issue_order(stop_of(alone, SECOND_MULE))
    await bankb.client.answer_order(answer(stop.order_id, EXECUTED, 300_000))
    freeze = freeze_of(alone.case_id, SECOND_MULE, 300_000, takes_over=stop.order_id)
    held = await centre.client.issue_order(freeze)
    await bankb.client.answer_order(answer(held.order_id, EXECUTED, 300_000))
    at_once = await centre.client.start_distribution(
        returns_pb2.StartDistributionBody(case_id=alone.case_id, account=SECOND_MULE)
    )
    assert at_once.method == returns_pb2.DISTRIBUTION_METHOD_TRACED
    [traced] = await returns_to(bankb, centre, [alone.case_id])
    assert traced.notice.origin.body_type == "stophub.v1.StartDistributionBody"
    await both_accept(bankb, traced, "d")

    # Two victims of one mule: shared after the notice, by the centre's decision.
    first = await banka.client.create_report(report(network.clock.now(), (600_000,)))
    first = await banka.client.verify_report(first.case_id)
    body = report(network.clock.now(), (300_000,))
    for t in body.transactions:
        t.payer.CopyFrom(
            account_pb2.AccountRef(
                institution_code="PAYX", account_number="PX88000007", holder_name="Sun Ba"
            )
        )
    second = await payx.client.create_report(body)
    second = await payx.client.verify_report(second.case_id)
    await frozen_stop(centre.client, bankb.client, first, 500_000)
    await frozen_stop(centre.client, bankb.client, second, 100_000)
    started = await centre.client.start_distribution(
        returns_pb2.StartDistributionBody(case_id=first.case_id, account=MULE)
    )
    network.clock.advance(timedelta(days=30, minutes=1))
    await centre.client.decide_distribution(started.distribution_id, True, "no objection")
    decided = await returns_to(bankb, centre, [first.case_id, second.case_id])
    for d in decided:
        assert d.notice.origin.body_type == "stophub.v1.DistributionDecisionBody"
        await both_accept(bankb, d, "d")

    def other_distribution(n: delivery_pb2.Notice) -> None:
        n.order.instruction.fund_return.distribution_id = at_once.distribution_id

    await both_refuse(bankb, decided[0], other_distribution, "not the confirmed decision")

    def withdrawn(n: delivery_pb2.Notice) -> None:
        decision = returns_pb2.DistributionDecisionBody(
            distribution_id=started.distribution_id,
            decision=returns_pb2.DISTRIBUTION_DECISION_WITHDRAW,
        )
        n.origin.CopyFrom(signed_by(network, "CENTRE", decision, n.origin))

    await both_refuse(bankb, decided[0], withdrawn, "not the confirmed decision")

    def elsewhere(n: delivery_pb2.Notice) -> None:
        start = returns_pb2.StartDistributionBody(case_id=alone.case_id, account=WALLET)
        n.origin.CopyFrom(signed_by(network, "CENTRE", start, n.origin))

    await both_refuse(bankb, traced, elsewhere, "another institution's account")


async def test_an_upheld_appeal_releases_and_withdraws_rows_e_and_f(
    network: Network, members: dict[str, Member]
) -> None:
    centre, banka, bankb = (members[c] for c in ("CENTRE", "BANKA", "BANKB"))
    case = await banka.client.create_report(paying(SECOND_MULE, network.clock.now(), (400_000,)))
    case = await banka.client.verify_report(case.case_id)
    holding = await centre.client.issue_order(stop_of(case, SECOND_MULE))
    await bankb.client.answer_order(answer(holding.order_id, EXECUTED, 400_000))
    pending = await centre.client.issue_order(stop_of(case, SECOND_MULE))
    appeal = await bankb.client.file_appeal(holding.order_id, "salary account: unrelated money")
    upheld = await centre.client.decide_appeal(appeal.appeal_id, True, "the money is his own")
    assert len(upheld.release_order_ids) == 2
    releases = [await bankb.order(order_id) for order_id in upheld.release_order_ids]
    for d in releases:
        assert d.notice.origin.body_type == "stophub.v1.DecideAppealBody"
        await both_accept(bankb, d, "e")
    withdrawn = await bankb.order(pending.order_id, CANCELLED)
    await both_accept(bankb, withdrawn, "f")

    def rejected(n: delivery_pb2.Notice) -> None:
        decision = appeal_pb2.DecideAppealBody(
            appeal_id=appeal.appeal_id, decision=appeal_pb2.APPEAL_DECISION_REJECT, reason="no"
        )
        n.origin.CopyFrom(signed_by(network, "CENTRE", decision, n.origin))

    await both_refuse(bankb, releases[0], rejected, "upholds no appeal")
    await both_refuse(bankb, withdrawn, rejected, "upholds no appeal")

    def a_freeze(n: delivery_pb2.Notice) -> None:
        n.order.instruction.ClearField("release")
        n.order.instruction.freeze.amount_fen = 1

    await both_refuse(bankb, releases[0], a_freeze, "only releases")
