"""DistributionService (proto/stophub/v1/returns.proto): frozen money in an account that
several victims' money reached goes back to them: traced money to its victim, the rest shared
pro rata after a public notice, objections heard, the centre's decision paid by return orders.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime

from google.protobuf.message import Message

from hub.domain.cases import Case, Order, OrderKind, OrderState, ReturnCommand, validate_amount
from hub.domain.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from hub.domain.returns import Claim, Distribution, DistributionMethod
from hub.domain.trail import OPEN_STATES, NodeStatus
from hub.domain.trail import build as build_trail
from hub.domain.wording import mask
from hub.service import wire
from hub.service.casework import bounded, deliver_order, linked, load_case, new_order_id
from hub.service.permissions import Access
from hub.service.pipeline import Command, Context
from stophub.v1 import delivery_pb2, returns_pb2


def new_distribution_id(now: datetime) -> str:
    return f"D{now:%Y%m%d}-{secrets.token_hex(4).upper()}"


def _holding_freezes(cases: Sequence[Case], account: tuple[str, str]) -> list[tuple[Case, Order]]:
    return [
        (c, o)
        for c in cases
        for o in c.orders
        if o.kind is OrderKind.FREEZE
        and o.state is OrderState.HOLDING
        and (o.account_institution, o.account_number) == account
    ]


def _pool(cases: Sequence[Case], account: tuple[str, str]) -> int:
    return sum(c.unclaimed_fen(f) for c, f in _holding_freezes(cases, account))


def _distribution_cases(ctx: Context, d: Distribution) -> list[Case]:
    """The cases of a distribution's claims, locked, lead case first."""
    found: list[Case] = []
    for case_id in dict.fromkeys([d.case_id, *(c.case_id for c in d.claims)]):
        case = load_case(ctx, case_id)
        found.append(case)
    return found


def start_distribution(ctx: Context, body: returns_pb2.StartDistributionBody) -> Message:
    bounded("note", body.note)
    for i, traced in enumerate(body.traced):
        bounded(f"traced[{i}].evidence", traced.evidence)
    account = (body.account.institution_code.strip(), body.account.account_number.strip())
    if not account[0] or not account[1]:
        raise InvalidArgument("account", "name the institution and account holding the money")
    lead = load_case(ctx, body.case_id.strip())
    if lead.state not in OPEN_STATES:
        raise FailedPrecondition(
            "CASE_ENDED", f"case {lead.case_id} is {lead.state.value}; nothing to distribute"
        )
    where = f"{mask(account[1])} at {account[0]}"
    trails = {lead.case_id: build_trail(lead)}
    node = trails[lead.case_id].nodes.get(account)
    if node is None or node.received_fen == 0 or node.status is NodeStatus.VICTIM:
        raise FailedPrecondition(
            "NOT_ON_TRAIL",
            f"none of case {lead.case_id}'s money can have reached {where}: it is not on the "
            "case's money trail",
        )
    if ctx.uow.distributions.open_for_account(*account):
        raise FailedPrecondition(
            "DISTRIBUTION_OPEN",
            f"a distribution of the money in {where} is already under public notice; decide "
            "or withdraw it first",
        )
    others = linked(ctx.uow, lead, {account})
    cases = [lead]
    for case_id in others:
        other = ctx.uow.cases.get(case_id, lock=True)
        if other is not None and other.state in OPEN_STATES:
            ctx.track(other)
            cases.append(other)
    claims = []
    for case in cases:
        # A victim's claim is what of its money can still be in the account: what moved
        # on is chased (and returned) where it went.
        kept = (trails.get(case.case_id) or build_trail(case)).kept(account)
        if kept > 0:
            victim = case.victim_account
            claims.append(
                Claim(
                    case.case_id,
                    victim.institution_code,
                    victim.account_number,
                    victim.holder_name,
                    case.loss_fen,
                    kept,
                )
            )
    by_case = {c.case_id: c for c in claims}
    for i, traced in enumerate(body.traced):
        claim = by_case.get(traced.case_id)
        if claim is None:
            raise InvalidArgument(
                f"traced[{i}].case_id",
                f"{traced.case_id!r} is not a case whose money reached {where}; those are "
                + ", ".join(sorted(by_case)),
            )
        validate_amount(f"traced[{i}].amount_fen", traced.amount_fen)
        if not traced.evidence.strip():
            raise InvalidArgument(f"traced[{i}].evidence", "say what traces the money")
        claim.traced_fen += traced.amount_fen
        claim.evidence = "; ".join(x for x in (claim.evidence, traced.evidence.strip()) if x)
    notice = ctx.hub.public_notice(ctx.now)
    d = Distribution.start(
        new_distribution_id(ctx.now),
        account,
        lead.case_id,
        claims,
        _pool(cases, account),
        started_by=ctx.sender.code,
        now=ctx.now,
        message_id=ctx.message_id,
        note=body.note.strip(),
        notice=notice,
    )
    ctx.uow.distributions.add(d)
    if d.method is DistributionMethod.TRACED:
        # Every fen is traceable to its victim: no notice, the returns go out now.
        d.notice_ends_at = None
        _pay(ctx, d, cases, account)
        d.decide(ctx.sender.code, ctx.now, "traceable to its victims: returned at once")
        _record_on(ctx, cases, "distribution.decided", f"{d.summary()}; returned at once")
    else:
        assert d.notice_ends_at is not None
        _record_on(
            ctx,
            cases,
            "distribution.noticed",
            f"{d.summary()}; public notice until {d.notice_ends_at.isoformat()}",
        )
    _tell_parties(ctx, d, cases)
    return wire.distribution_to_proto(d)


def _record_on(ctx: Context, cases: Sequence[Case], kind: str, summary: str) -> None:
    """The lead case carries the event that drives the notice clock; the others note it."""
    for i, case in enumerate(cases):
        since = len(case.events)
        case.record(
            ctx.now,
            kind if i == 0 else "distribution.included",
            ctx.sender.code,
            summary,
            message_id=ctx.message_id,
        )
        ctx.record_events(case, since)


def _tell_parties(ctx: Context, d: Distribution, cases: Sequence[Case]) -> None:
    recipients = {*ctx.centres(), d.account_institution}
    recipients.update(c.reporting_institution for c in cases)
    view = wire.distribution_to_proto(d)
    ctx.deliver_to(
        sorted(recipients),
        delivery_pb2.Notice(
            kind=delivery_pb2.NOTICE_KIND_DISTRIBUTION,
            case_id=d.case_id,
            origin=ctx.envelope,
            summary=f"{d.state.value}: {d.summary()}",
            distribution=view,
        ),
    )


def _pay(ctx: Context, d: Distribution, cases: Sequence[Case], account: tuple[str, str]) -> None:
    """Issue the return orders that pay every share, from the freezes on the account; a
    victim's own case's freezes pay it first, so fewer returns cross between cases."""
    freezes = _holding_freezes(cases, account)
    available = {f.order_id: c.unclaimed_fen(f) for c, f in freezes}
    for claim in d.claims:
        need = claim.share_fen
        paid: list[str] = []
        for case, freeze in sorted(freezes, key=lambda cf: cf[0].case_id != claim.case_id):
            take = min(need, available[freeze.order_id])
            if take <= 0:
                continue
            since = len(case.events)
            order = case.issue(
                new_order_id(case),
                ReturnCommand(
                    freeze.order_id, claim.beneficiary, take, d.distribution_id, claim.case_id
                ),
                issued_by=ctx.sender.code,
                now=ctx.now,
                message_id=ctx.message_id,
                institutions=ctx.kinds,
                policy=ctx.hub.policy,
                note=f"distribution {d.distribution_id}: share of case {claim.case_id}",
            )
            order.origin_envelope = ctx.envelope_bytes
            ctx.record_events(case, since)
            deliver_order(ctx, order, origin=ctx.envelope)
            paid.append(order.order_id)
            available[freeze.order_id] -= take
            need -= take
            if need == 0:
                break
        claim.return_orders = " ".join(paid)


def _distribution(ctx: Context, distribution_id: str) -> Distribution:
    d = ctx.uow.distributions.get(distribution_id.strip())
    if d is None:
        raise NotFound("DISTRIBUTION_NOT_FOUND", f"no distribution {distribution_id!r}")
    return d


def _relocked(ctx: Context, d: Distribution) -> Distribution:
    """The distribution read again, locked, once its cases are: what another hub decided or
    recorded meanwhile shows, and two decisions of one distribution cannot both pass."""
    return ctx.uow.distributions.get(d.distribution_id, lock=True) or d


def object_to_distribution(ctx: Context, body: returns_pb2.ObjectionBody) -> Message:
    bounded("grounds", body.grounds)
    d = _distribution(ctx, body.distribution_id)
    lead = load_case(ctx, d.case_id)
    d = _relocked(ctx, d)
    d.object(ctx.sender.code, body.grounds, ctx.now, ctx.message_id)
    since = len(lead.events)
    lead.record(
        ctx.now,
        "distribution.objection",
        ctx.sender.code,
        f"objection to {d.distribution_id} by {ctx.sender.code}: {body.grounds.strip()}",
        message_id=ctx.message_id,
    )
    ctx.record_events(lead, since)
    ctx.deliver_to(
        ctx.centres(),
        delivery_pb2.Notice(
            kind=delivery_pb2.NOTICE_KIND_DISTRIBUTION,
            case_id=d.case_id,
            origin=ctx.envelope,
            summary=f"objection to {d.distribution_id} by {ctx.sender.code}",
            distribution=wire.distribution_to_proto(d),
        ),
    )
    return wire.distribution_to_proto(d)


def decide_distribution(ctx: Context, body: returns_pb2.DistributionDecisionBody) -> Message:
    bounded("reason", body.reason)
    d = _distribution(ctx, body.distribution_id)
    account = (d.account_institution, d.account_number)
    cases = _distribution_cases(ctx, d)
    d = _relocked(ctx, d)
    if body.decision == returns_pb2.DISTRIBUTION_DECISION_WITHDRAW:
        d.withdraw(ctx.sender.code, ctx.now, body.reason)
        _record_on(ctx, cases, "distribution.withdrawn", f"{d.distribution_id} withdrawn")
    elif body.decision == returns_pb2.DISTRIBUTION_DECISION_CONFIRM:
        d.check_decidable(ctx.now, body.reason)
        pool = _pool(cases, account)
        if pool == 0:
            raise FailedPrecondition(
                "NOTHING_FROZEN",
                f"no freeze holds money in {d.where} any more; withdraw the distribution",
            )
        # Shares follow what is frozen now: a freeze may have lapsed or been released since.
        d.share(pool)
        _pay(ctx, d, cases, account)
        d.decide(ctx.sender.code, ctx.now, body.reason)
        _record_on(ctx, cases, "distribution.decided", f"decided: {d.summary()}")
    else:
        raise InvalidArgument("decision", "CONFIRM or WITHDRAW")
    _tell_parties(ctx, d, cases)
    return wire.distribution_to_proto(d)


def get_distribution(ctx: Context, body: returns_pb2.GetDistributionBody) -> Message:
    d = _distribution(ctx, body.distribution_id)
    if ctx.access is Access.OWN:
        parties = {d.account_institution}
        for claim in d.claims:
            case = ctx.uow.cases.get(claim.case_id)
            if case is not None:
                parties.add(case.reporting_institution)
        if ctx.sender.code not in parties:
            raise PermissionDenied(
                "NOT_PARTY_TO_DISTRIBUTION",
                f"{ctx.sender.code} is neither a victim's institution nor the holder in "
                f"{d.distribution_id}; the anti-fraud centre, the regulator and auditors see "
                "every distribution",
            )
    return wire.distribution_to_proto(d)


START_DISTRIBUTION = Command(
    "StartDistribution", returns_pb2.StartDistributionBody, start_distribution
)
OBJECT_TO_DISTRIBUTION = Command(
    "ObjectToDistribution", returns_pb2.ObjectionBody, object_to_distribution
)
DECIDE_DISTRIBUTION = Command(
    "DecideDistribution", returns_pb2.DistributionDecisionBody, decide_distribution
)
GET_DISTRIBUTION = Command(
    "GetDistribution", returns_pb2.GetDistributionBody, get_distribution, mutating=False
)
