"""The bank agent: carries out the hub's orders through the core bank and answers them.

It acts only on orders whose signers it could verify, as docs/signing.md ("Checking an order
before acting on it") says kind by kind: the centre's signed instruction, or for an order the
hub issued itself the envelopes that caused it (the centre's signed rule with the reporting
institution's verification or the upstream bank's answer, the centre's decision on a
distribution or an appeal) must check out against the keys registered with the hub, and must
say what the hub's copy of the order says. Anything else is a security event: logged loudly,
acknowledged so the stream moves on, never executed. A lapse, which nobody signs, only lifts
a hold, and only of an order this bank was given that has run out its time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import grpc
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from adapters.corebank.ports import CoreBanking, HoldOutcome, HoldStatus
from adapters.sdk.client import Delivery, DeliveryStream, HubClient, HubError
from hub.crypto.envelope import create_time_of
from hub.domain.trail import DEFAULT_MAX_LAYER
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

logger = logging.getLogger(__name__)

_STATUS: Final = {
    HoldStatus.EXECUTED: order_pb2.EXECUTION_STATUS_EXECUTED,
    HoldStatus.PARTIAL: order_pb2.EXECUTION_STATUS_PARTIALLY_EXECUTED,
    HoldStatus.NO_MATCH: order_pb2.EXECUTION_STATUS_NO_MATCH,
    HoldStatus.REJECTED: order_pb2.EXECUTION_STATUS_REJECTED,
}
_CENTRE: Final = institution_pb2.INSTITUTION_KIND_ANTI_FRAUD_CENTRE
_ANSWERS_KEPT: Final = 10_000
# The hub refuses envelopes older than its replay window (5 minutes by default); an answer kept
# for resending is signed again, under the same message id, once it is this old.
_RESIGN_AFTER: Final = timedelta(minutes=4)
# How far the hub's clock may run ahead of this bank's when a hold lapses.
_CLOCK_DRIFT: Final = timedelta(minutes=5)


class _Retry(Exception):
    """Could not finish this delivery now; leave it unacknowledged so the hub sends it again."""


@dataclass(frozen=True)
class _Verdict:
    ok: bool
    why: str = ""


def _order_state(order: order_pb2.Order) -> str:
    return order_pb2.OrderState.Name(order.state).removeprefix("ORDER_STATE_")


def _order_kind(order: order_pb2.Order) -> str:
    return order_pb2.OrderKind.Name(order.kind).removeprefix("ORDER_KIND_").lower()


def _status_name(status: int) -> str:
    return order_pb2.ExecutionStatus.Name(order_pb2.ExecutionStatus.ValueType(status)).removeprefix(
        "EXECUTION_STATUS_"
    )


def _yuan(fen: int) -> str:
    return f"¥{fen // 100:,}.{fen % 100:02d}"


def _when(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def _account_key(a: account_pb2.AccountRef) -> tuple[str, str, str]:
    return (a.institution_code.strip(), a.account_number.strip(), a.holder_name.strip())


def _fact(at: Timestamp, amount_fen: int) -> tuple[int, int, int]:
    # To the microsecond: the hub keeps no finer.
    return (at.seconds, at.nanos // 1_000, amount_fen)


def _instruction_view(
    i: order_pb2.OrderInstruction, *, facts_of: order_pb2.OrderInstruction | None = None
) -> tuple[object, ...]:
    """What an instruction commits the bank to, in a form the hub's copy must equal
    (docs/signing.md, "Checking an order before acting on it").

    Text is compared stripped and times to the microsecond because the hub normalises both;
    the release reason is left out because the hub shows the order note in its place. A
    downstream stop whose signer named no credits takes them from `facts_of`, the hub's copy:
    the hub names the transfers the upstream answer reported.
    """
    which = i.WhichOneof("instruction")
    if which == "stop":
        s = i.stop
        named = s.transactions
        if s.upstream_order_id and not named and facts_of is not None:
            named = facts_of.stop.transactions
        facts = tuple(_fact(t.transaction_time, t.amount_fen) for t in named)
        return (
            i.case_id,
            which,
            _account_key(s.account),
            s.amount_fen,
            s.upstream_order_id.strip(),
            facts,
        )
    if which == "freeze":
        f = i.freeze
        return (
            i.case_id,
            which,
            _account_key(f.account),
            f.amount_fen,
            f.filed_case_number.strip(),
            f.approving_authority.strip(),
            f.term_months,
            f.stop_order_id,
            f.renews_order_id,
        )
    if which == "release":
        return (i.case_id, which, i.release.target_order_id)
    if which == "fund_return":
        r = i.fund_return
        return (i.case_id, which, r.freeze_order_id, _account_key(r.beneficiary), r.amount_fen)
    return (i.case_id, which)


def _decode(env: envelope_pb2.Envelope, body: Message) -> bool:
    if env.body_type != body.DESCRIPTOR.full_name:
        return False
    try:
        body.ParseFromString(env.body)
    except DecodeError:
        return False
    return True


class BankAgent:
    """Runs at a bank: one delivery stream in, the core bank and signed answers out.

    Deliveries are handled one at a time, in the order the hub sends them, so a release
    is never carried out before the stop it lifts.
    """

    def __init__(
        self,
        client: HubClient,
        core: CoreBanking,
        *,
        connection_name: str = "primary",
        answer_delay: float = 0.0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.core = core
        self.connection_name = connection_name
        self.answer_delay = answer_delay
        self._log = log
        self.history: list[str] = []
        self.security_events: list[str] = []
        # The hub's record of each order after this agent's answer was accepted.
        self.answered: dict[str, order_pb2.Order] = {}
        # The signed answer per order: a redelivered order is answered with the very same
        # bytes, which the hub recognises as a resend and answers with its original reply.
        self._answers: OrderedDict[str, envelope_pb2.Envelope] = OrderedDict()
        # Orders whose local hold was lifted because the hub withdrew them. The core bank
        # answers a repeated release with its first outcome, which would read as a new release.
        self._lifted: set[str] = set()
        self._stream: DeliveryStream | None = None
        self._stopping = asyncio.Event()

    # ---- lifecycle ------------------------------------------------------------------------

    async def run(self) -> None:
        """Handle deliveries until `stop()`; raises if the stream ends with an error.

        The stream reconnects by itself; it ends with HubSignatureError when the hub's
        signature fails (nothing from that connection can be trusted) and with HubError
        when the hub refuses this institution (for example a revoked key). An agent runs
        once: after `stop()` make a new one.
        """
        if self._stopping.is_set():
            return
        stream = self.client.deliveries(self.connection_name, reconnect=True)
        self._stream = stream
        try:
            async with stream:
                async for delivery in stream:
                    if await self.handle(delivery):
                        await stream.ack(delivery.sequence)
                    if self._stopping.is_set():
                        break
        finally:
            self._stream = None

    async def stop(self) -> None:
        self._stopping.set()
        if self._stream is not None:
            await self._stream.close()

    @property
    def connected(self) -> asyncio.Event | None:
        return None if self._stream is None else self._stream.connected

    # ---- one delivery ---------------------------------------------------------------------

    async def handle(self, delivery: Delivery) -> bool:
        """Act on one delivery; True when it may be acknowledged."""
        notice = delivery.notice
        tag = f"#{delivery.sequence}" + (
            f" (attempt {delivery.attempt})" if delivery.attempt > 1 else ""
        )
        try:
            if notice.kind == delivery_pb2.NOTICE_KIND_ORDER_EXPIRED:
                await self._lapsed(tag, notice)
                return True
            if notice.kind != delivery_pb2.NOTICE_KIND_ORDER:
                kind = delivery_pb2.NoticeKind.Name(notice.kind).removeprefix("NOTICE_KIND_")
                self._say(f"{tag} {kind.lower()}: {notice.summary}")
                return True
            order = notice.order
            verdict = await self._authentic(delivery)
            if not verdict.ok:
                self._security(
                    f"{tag} NOT executed {_order_kind(order)} order {order.order_id}: "
                    f"{verdict.why}. Treat the hub or its configuration as compromised."
                )
                return True
            if order.state == order_pb2.ORDER_STATE_PENDING:
                return await self._execute(tag, order)
            if order.state == order_pb2.ORDER_STATE_CANCELLED:
                await self._withdrawn(tag, order)
                return True
            self._say(
                f"{tag} {_order_kind(order)} {order.order_id} is {_order_state(order)}: "
                "nothing to do"
            )
            return True
        except _Retry as retry:
            self._say(
                f"{tag} will be retried when the hub sends it again: {retry}", logging.WARNING
            )
            return False

    async def _lapsed(self, tag: str, notice: delivery_pb2.Notice) -> None:
        """A stop or freeze ran out its time: lift its hold. No signer caused a lapse, so the
        hub's word is checked against what this bank knows of the order."""
        order = notice.order
        me = self.client.institution
        if order.kind not in (order_pb2.ORDER_KIND_STOP, order_pb2.ORDER_KIND_FREEZE):
            self._say(f"{tag} order_expired: {notice.summary}")
            return
        if (
            order.addressed_to != me
            or order.state != order_pb2.ORDER_STATE_EXPIRED
            or not order.HasField("expire_time")
            or _when(order.expire_time) > self.client.clock.now() + _CLOCK_DRIFT
        ):
            self._security(
                f"{tag} NOT lifted {_order_kind(order)} {order.order_id}: the lapse notice says "
                f"{_order_state(order)} for {order.addressed_to}, expiring "
                f"{_when(order.expire_time).isoformat() if order.HasField('expire_time') else '?'}"
            )
            return
        await self._lift(order, "it lapsed")

    async def _authentic(self, delivery: Delivery) -> _Verdict:
        notice = delivery.notice
        order = notice.order
        me = self.client.institution
        if order.addressed_to != me:
            return _Verdict(False, f"the order is addressed to {order.addressed_to!r}, not {me}")
        if not delivery.origin_verified:
            return _Verdict(
                False, "its origin signature did not verify: " + "; ".join(delivery.problems)
            )
        origin = notice.origin
        if origin.body_type == appeal_pb2.DecideAppealBody.DESCRIPTOR.full_name:
            return await self._upheld_appeal(delivery)
        if order.state == order_pb2.ORDER_STATE_CANCELLED:
            # The hub withdraws an order only on a centre's release of it.
            release = order_pb2.OrderInstruction()
            if not _decode(origin, release) or release.WhichOneof("instruction") != "release":
                return _Verdict(False, f"the withdrawal's origin is a {origin.body_type!r}")
            if release.release.target_order_id != order.order_id:
                return _Verdict(
                    False,
                    f"the signed release targets {release.release.target_order_id!r}, "
                    f"not {order.order_id}",
                )
            return await self._signed_by_centre(origin.sender, "the release")
        if order.auto_stop_rule_id:
            return await self._authorised_by_rule(delivery)
        if order.instruction.fund_return.distribution_id:
            return await self._decided_distribution(delivery)
        if origin.sender != order.issued_by or origin.message_id != order.origin_message_id:
            return _Verdict(
                False,
                f"the forwarded instruction is {origin.sender}/{origin.message_id}; the hub says "
                f"the order came from {order.issued_by}/{order.origin_message_id}",
            )
        signed = order_pb2.OrderInstruction()
        if not _decode(origin, signed):
            return _Verdict(False, f"the forwarded instruction is a {origin.body_type!r}")
        signed_view = _instruction_view(signed, facts_of=order.instruction)
        if signed_view != _instruction_view(order.instruction):
            return _Verdict(
                False,
                f"the hub's copy of the order differs from what {origin.sender} signed: "
                f"signed {signed_view}, shown {_instruction_view(order.instruction)}",
            )
        return await self._signed_by_centre(origin.sender, "the order")

    async def _upheld_appeal(self, delivery: Delivery) -> _Verdict:
        """A release (or the withdrawal of a pending hold) caused by the centre upholding an
        appeal: the forwarded decision must uphold one and be the centre's."""
        notice = delivery.notice
        order = notice.order
        decision = appeal_pb2.DecideAppealBody()
        if not _decode(notice.origin, decision) or (
            decision.decision != appeal_pb2.APPEAL_DECISION_UPHOLD
        ):
            return _Verdict(False, "the forwarded appeal decision upholds no appeal")
        what = order.instruction.WhichOneof("instruction")
        if order.state != order_pb2.ORDER_STATE_CANCELLED and what != "release":
            return _Verdict(False, f"an upheld appeal only releases holds, not a {what} order")
        if order.state != order_pb2.ORDER_STATE_CANCELLED and (
            notice.origin.message_id != order.origin_message_id
            or notice.origin.sender != order.issued_by
        ):
            return _Verdict(
                False,
                f"the forwarded decision is {notice.origin.sender}/{notice.origin.message_id}; "
                f"the hub says the release came from {order.issued_by}/{order.origin_message_id}",
            )
        return await self._signed_by_centre(notice.origin.sender, "the appeal decision")

    async def _authorised_by_rule(self, delivery: Delivery) -> _Verdict:
        notice = delivery.notice
        order = notice.order
        if not delivery.authorization_verified:
            return _Verdict(
                False,
                f"it claims standing rule {order.auto_stop_rule_id} but the centre's signed rule "
                "is missing or did not verify: " + "; ".join(delivery.problems),
            )
        authorization = notice.authorization
        rule = order_pb2.AutoStopRule()
        if authorization.sender != order.issued_by or not _decode(authorization, rule):
            return _Verdict(
                False,
                f"the authorization is a {authorization.body_type!r} from "
                f"{authorization.sender}, not {order.issued_by}'s standing rule",
            )
        if rule.rule_id.strip() != order.auto_stop_rule_id or not rule.enabled:
            return _Verdict(
                False,
                f"the signed rule is {rule.rule_id!r} (enabled={rule.enabled}), the order "
                f"claims {order.auto_stop_rule_id}",
            )
        if order.instruction.WhichOneof("instruction") != "stop" or (
            order.instruction.stop.amount_fen > rule.max_amount_fen
        ):
            return _Verdict(
                False,
                f"the rule allows stops up to {_yuan(rule.max_amount_fen)}; this order is not "
                "such a stop",
            )
        if order.instruction.stop.upstream_order_id:
            return self._followed(delivery, rule)
        verification = case_pb2.Verification()
        origin = notice.origin
        if (
            not _decode(origin, verification)
            or verification.case_id != order.case_id
            or verification.outcome != case_pb2.VERIFICATION_OUTCOME_CONFIRMED
            or origin.message_id != order.origin_message_id
        ):
            return _Verdict(
                False,
                f"the rule fires on a confirmed verification of case {order.case_id}; the origin "
                f"is {origin.sender}/{origin.message_id} ({origin.body_type})",
            )
        return await self._signed_by_centre(authorization.sender, "the standing rule")

    def _followed(self, delivery: Delivery, rule: order_pb2.AutoStopRule) -> _Verdict:
        """A downstream stop under the rule: its origin is the signed answer that reported
        the transfers into this account, and it holds no more than they carried."""
        order = delivery.notice.order
        stop = order.instruction.stop
        if not rule.follow_onward_transfers:
            return _Verdict(False, f"rule {rule.rule_id} does not follow onward transfers")
        deepest = rule.max_layer or DEFAULT_MAX_LAYER
        if order.layer > deepest:
            return _Verdict(
                False, f"layer {order.layer} is deeper than rule {rule.rule_id} follows ({deepest})"
            )
        origin = delivery.notice.origin
        answer = order_pb2.ExecutionResult()
        if (
            not _decode(origin, answer)
            or answer.order_id != stop.upstream_order_id
            or origin.message_id != order.origin_message_id
        ):
            return _Verdict(
                False,
                f"a downstream stop comes from the signed answer to {stop.upstream_order_id}; "
                f"the origin is {origin.sender}/{origin.message_id} ({origin.body_type})",
            )
        into_me = [
            t
            for t in answer.onward_transfers
            if t.to_account.institution_code == self.client.institution
            and t.to_account.account_number == stop.account.account_number
        ]
        # Each credit the stop names is a different one of those transfers, whole.
        carried = 0
        for fact in stop.transactions:
            wanted = _fact(fact.transaction_time, fact.amount_fen)
            match = next(
                (t for t in into_me if _fact(t.transfer_time, t.amount_fen) == wanted), None
            )
            if match is None:
                return _Verdict(
                    False,
                    f"the stop names a credit of {_yuan(fact.amount_fen)} that the answer to "
                    f"{stop.upstream_order_id} does not report moving into this account",
                )
            into_me.remove(match)
            carried += match.carried_fen or match.amount_fen
        if not stop.transactions:
            return _Verdict(
                False, "a downstream stop names the transfers it follows; this one none"
            )
        if stop.amount_fen > carried:
            return _Verdict(
                False,
                f"the transfers it names carried {_yuan(carried)} into this account, says the "
                f"answer to {stop.upstream_order_id}; the stop asks for {_yuan(stop.amount_fen)}",
            )
        return _Verdict(True)

    async def _decided_distribution(self, delivery: Delivery) -> _Verdict:
        """A return a distribution decided: the centre signed the decision (or, for money
        traced to one victim, the distribution itself) that caused it."""
        order = delivery.notice.order
        origin = delivery.notice.origin
        wanted = order.instruction.fund_return.distribution_id
        if origin.sender != order.issued_by or origin.message_id != order.origin_message_id:
            return _Verdict(
                False,
                f"the forwarded decision is {origin.sender}/{origin.message_id}; the hub says the "
                f"return came from {order.issued_by}/{order.origin_message_id}",
            )
        decision = returns_pb2.DistributionDecisionBody()
        start = returns_pb2.StartDistributionBody()
        if _decode(origin, decision):
            if (
                decision.distribution_id != wanted
                or decision.decision != returns_pb2.DISTRIBUTION_DECISION_CONFIRM
            ):
                return _Verdict(False, f"the signed decision does not confirm {wanted}")
        elif _decode(origin, start):
            if start.account.institution_code != self.client.institution:
                return _Verdict(
                    False, "the signed distribution is of another institution's account"
                )
        else:
            return _Verdict(False, f"the forwarded decision is a {origin.body_type!r}")
        return await self._signed_by_centre(origin.sender, "the distribution")

    async def _signed_by_centre(self, code: str, what: str) -> _Verdict:
        try:
            member = await self.client.member(code)
        except HubError as err:
            if err.transient:
                raise _Retry(f"could not look up {code} in the registry: {err}") from err
            return _Verdict(
                False, f"{what} was signed by {code}, which the registry refuses: {err}"
            )
        if member.kind != _CENTRE:
            return _Verdict(
                False, f"{what} was signed by {code}, which is not an anti-fraud centre"
            )
        return _Verdict(True)

    # ---- carrying out -----------------------------------------------------------------------

    async def _execute(self, tag: str, order: order_pb2.Order) -> bool:
        envelope = self._answers.get(order.order_id)
        if envelope is None:
            result = await self._carry_out(order)
            envelope = self.client.seal(result, message_id=f"answer-{order.order_id}")
            self._answers[order.order_id] = envelope
            while len(self._answers) > _ANSWERS_KEPT:
                self._answers.popitem(last=False)
            self._say(f"{tag} {_order_kind(order)} {order.order_id}: {_describe(result)}")
        else:
            self._say(f"{tag} {order.order_id} came again; resending the same signed answer")
        if self.answer_delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.answer_delay)
            if self._stopping.is_set():
                # Unanswered and unacknowledged: the hub sends it again to the next agent,
                # which finds the hold already placed (the core bank is idempotent).
                raise _Retry(f"stopped before answering {order.order_id}")
        if self.client.clock.now() - create_time_of(envelope) > _RESIGN_AFTER:
            # Same id, fresh signature: if the hub took the old bytes it answers
            # MESSAGE_ID_REUSED, which _refused reads as "already accepted".
            result = order_pb2.ExecutionResult()
            result.ParseFromString(envelope.body)
            envelope = self.client.seal(result, message_id=envelope.message_id)
            self._answers[order.order_id] = envelope
        return await self._send_answer(order, envelope)

    async def _send_answer(self, order: order_pb2.Order, envelope: envelope_pb2.Envelope) -> bool:
        try:
            _, answered = await self.client.send("AnswerOrder", envelope)
        except HubError as err:
            if err.transient or not err.signed:
                # An unsigned refusal may be forged by anyone on the path: keep the order
                # until the hub itself has the answer or says why not.
                raise _Retry(f"answer to {order.order_id} not delivered: {err}") from err
            return await self._refused(order, err)
        assert isinstance(answered, order_pb2.Order)
        self.answered[order.order_id] = answered
        self._say(f"answer to {order.order_id} accepted: hub records it {_order_state(answered)}")
        return True

    async def _refused(self, order: order_pb2.Order, err: HubError) -> bool:
        if err.code is grpc.StatusCode.FAILED_PRECONDITION and err.reason == "ORDER_NOT_PENDING":
            state = await self._hub_state(order)
            if state == order_pb2.ORDER_STATE_CANCELLED:
                await self._lift(order, "it was withdrawn before our answer arrived")
            self._say(f"answer to {order.order_id} not needed: {err.message}")
            return True
        if err.code is grpc.StatusCode.ALREADY_EXISTS and err.reason == "MESSAGE_ID_REUSED":
            # answer-<order id> was accepted before this process started; the hub keeps that
            # first answer, and the core bank's idempotency made this one the same in substance.
            self._say(f"answer to {order.order_id} was already given before a restart")
            return True
        # The hub will not take this answer. The delivery stays unacknowledged, so the order
        # is neither lost nor silently dropped: it comes again (and is carried out afresh,
        # hence the forgotten answer) until someone fixes the cause, while its clock
        # escalates to the duty contacts.
        self._answers.pop(order.order_id, None)
        self._say(
            f"answer to {order.order_id} REFUSED by the hub, will retry on redelivery: {err}",
            logging.ERROR,
        )
        return False

    async def _hub_state(self, order: order_pb2.Order) -> int:
        try:
            case = await self.client.get_case(order.case_id)
        except HubError as err:
            raise _Retry(f"could not read case {order.case_id}: {err}") from err
        for o in case.orders:
            if o.order_id == order.order_id:
                return o.state
        return order_pb2.ORDER_STATE_UNSPECIFIED

    async def _carry_out(self, order: order_pb2.Order) -> order_pb2.ExecutionResult:
        instruction = order.instruction
        which = instruction.WhichOneof("instruction")
        result = order_pb2.ExecutionResult(order_id=order.order_id)
        try:
            if which == "stop":
                stop = instruction.stop
                credits = [(_when(t.transaction_time), t.amount_fen) for t in stop.transactions]
                outcome = await asyncio.to_thread(
                    lambda: self.core.place_hold(
                        order.order_id,
                        holder_name=stop.account.holder_name,
                        account_number=stop.account.account_number,
                        amount_fen=stop.amount_fen,
                        credits=credits,
                    )
                )
                _hold_result(result, outcome)
            elif which == "freeze":
                freeze = instruction.freeze
                outcome = await asyncio.to_thread(
                    lambda: self.core.freeze(
                        order.order_id,
                        holder_name=freeze.account.holder_name,
                        account_number=freeze.account.account_number,
                        amount_fen=freeze.amount_fen,
                        takes_over=freeze.stop_order_id or freeze.renews_order_id or None,
                    )
                )
                _hold_result(result, outcome)
            elif which == "release":
                await self._release(order, result)
            elif which == "fund_return":
                back = instruction.fund_return
                paid = await asyncio.to_thread(
                    lambda: self.core.pay_from_hold(
                        back.freeze_order_id,
                        amount_fen=back.amount_fen,
                        beneficiary_institution=back.beneficiary.institution_code,
                        beneficiary_account=back.beneficiary.account_number,
                        beneficiary_name=back.beneficiary.holder_name,
                        reference=order.order_id,
                    )
                )
                result.status = _STATUS[paid.status]
                result.reason_code = paid.reason_code
                result.reason = paid.reason
                result.amount_returned_fen = paid.returned_fen
            else:
                raise _Retry(f"order {order.order_id} carries no instruction this agent knows")
        except _Retry:
            raise
        except Exception as exc:
            # The core system failed, not the order: try again on redelivery, and let the
            # order's clock escalate if the core stays down.
            logger.exception("core bank failed on %s", order.order_id)
            raise _Retry(f"core bank failed on {order.order_id}: {exc}") from exc
        result.execute_time.FromDatetime(self.client.clock.now())
        return result

    async def _release(self, order: order_pb2.Order, result: order_pb2.ExecutionResult) -> None:
        target_id = order.instruction.release.target_order_id
        # The release says which hold, not how much: the hub expects the whole hold it
        # recorded for the target, or nothing if the target never held (it was withdrawn
        # before being answered). Only the case record says which.
        try:
            case = await self.client.get_case(order.case_id)
        except HubError as err:
            raise _Retry(f"could not read case {order.case_id}: {err}") from err
        target = next((o for o in case.orders if o.order_id == target_id), None)
        outcome = await asyncio.to_thread(self.core.release_hold, target_id)
        already_lifted = target_id in self._lifted
        if outcome.status is HoldStatus.EXECUTED:
            self._lifted.add(target_id)
        if target is not None and target.state == order_pb2.ORDER_STATE_HOLDING:
            result.status = _STATUS[outcome.status]
            result.reason_code = outcome.reason_code
            result.reason = outcome.reason
            result.amount_released_fen = outcome.released_fen
            return
        state = "unknown to the hub" if target is None else _order_state(target)
        lifted = (
            f"; lifted the local hold of {_yuan(outcome.released_fen)} placed for it"
            if outcome.status is HoldStatus.EXECUTED and not already_lifted
            else ""
        )
        result.status = order_pb2.EXECUTION_STATUS_EXECUTED
        result.reason = f"{target_id} is {state}: it never held money under the hub{lifted}"
        result.amount_released_fen = 0

    async def _withdrawn(self, tag: str, order: order_pb2.Order) -> None:
        if order.kind in (order_pb2.ORDER_KIND_STOP, order_pb2.ORDER_KIND_FREEZE):
            await self._lift(order, "it was withdrawn")
        else:
            self._say(f"{tag} {_order_kind(order)} {order.order_id} was withdrawn")

    async def _lift(self, order: order_pb2.Order, why: str) -> None:
        if order.order_id in self._lifted:
            self._say(f"{order.order_id}: {why}; its local hold was already lifted")
            return
        try:
            outcome = await asyncio.to_thread(self.core.release_hold, order.order_id)
        except Exception as exc:
            logger.exception("core bank failed releasing %s", order.order_id)
            raise _Retry(f"core bank failed releasing {order.order_id}: {exc}") from exc
        self._lifted.add(order.order_id)
        if outcome.status is HoldStatus.EXECUTED:
            self._say(
                f"{order.order_id}: {why}; released the local hold of {_yuan(outcome.released_fen)}"
            )
        else:
            self._say(f"{order.order_id}: {why}; no local hold to lift ({outcome.reason})")

    # ---- reporting ------------------------------------------------------------------------

    def _say(self, message: str, level: int = logging.INFO) -> None:
        self.history.append(message)
        if self._log is not None:
            self._log(message)
        logger.log(level, "%s: %s", self.client.institution, message)

    def _security(self, message: str) -> None:
        text = f"SECURITY: {message}"
        self.security_events.append(text)
        self.history.append(text)
        if self._log is not None:
            self._log(text)
        logger.critical("%s: %s", self.client.institution, text)


def _hold_result(result: order_pb2.ExecutionResult, outcome: HoldOutcome) -> None:
    result.status = _STATUS[outcome.status]
    result.reason_code = outcome.reason_code
    result.reason = outcome.reason
    result.amount_held_fen = outcome.held_fen
    result.available_balance_fen = outcome.available_fen
    for t in outcome.onward:
        onward = result.onward_transfers.add(
            amount_fen=t.amount_fen,
            to_account=account_pb2.AccountRef(
                institution_code=t.to_institution,
                account_number=t.to_account,
                holder_name=t.to_holder,
            ),
            transaction_reference=t.reference,
            carried_fen=t.carried_fen,
        )
        onward.transfer_time.FromDatetime(t.time)


def _describe(result: order_pb2.ExecutionResult) -> str:
    text = _status_name(result.status)
    if result.reason_code:
        text += f" {result.reason_code}"
    amounts = [
        (label, fen)
        for label, fen in (
            ("held", result.amount_held_fen),
            ("available", result.available_balance_fen),
            ("released", result.amount_released_fen),
            ("returned", result.amount_returned_fen),
        )
        if fen
    ]
    if amounts:
        text += " (" + ", ".join(f"{label} {_yuan(fen)}" for label, fen in amounts) + ")"
    if result.onward_transfers:
        text += f", {len(result.onward_transfers)} onward transfer(s)"
    return f"{text}: {result.reason}" if result.reason else text


__all__ = ["BankAgent"]
