"""The steps several commands share: loading a case under its lock, issuing and delivering
orders, the centre's standing rule stopping what a verified report names, linking cases whose
money reached the same account, and following the money onward from an answered hold.
"""

from __future__ import annotations

from hub.domain.cases import Case, Order, OrderCommand, OrderState, StopCommand, describe
from hub.domain.errors import DomainError, InvalidArgument, NotFound
from hub.domain.institutions import HUB_CODE
from hub.domain.trail import branch_allowance, follow
from hub.domain.trail import build as build_trail
from hub.domain.wording import mask, yuan
from hub.service import wire
from hub.service.pipeline import Context
from hub.service.ports import UnitOfWork
from stophub.v1 import account_pb2, case_pb2, delivery_pb2, envelope_pb2

# Other cases named in a link notice; the rest are "and more" (a busy mule account is reached
# by hundreds of victims).
LINKS_NAMED = 10
# Other cases read as sharing an account with one case.
MAX_LINKED = 1000
# The longest free text (grounds, reasons, notes) a message may carry.
MAX_GROUNDS = 4000


def new_order_id(case: Case) -> str:
    return f"{case.case_id}-O{len(case.orders) + 1:03d}"


def load_case(ctx: Context, case_id: str) -> Case:
    case = ctx.uow.cases.get(case_id, lock=True)
    if case is None:
        raise NotFound("CASE_NOT_FOUND", f"no case {case_id!r}")
    ctx.accept(ctx.command, case.case_id)
    ctx.track(case)
    return case


def bounded(name: str, text: str) -> None:
    if len(text) > MAX_GROUNDS:
        raise InvalidArgument(name, f"at most {MAX_GROUNDS} characters; keep the rest on file")


# ---- orders -----------------------------------------------------------------------------------


def issue_in(ctx: Context, case: Case, command: OrderCommand, note: str) -> Order:
    """Issue an order in the centre's name of the request (its signed envelope is the origin)
    and deliver it, after the withdrawal of any pending order it cancels."""
    since = len(case.events)
    before = {o.order_id: o.state for o in case.orders}
    order = case.issue(
        new_order_id(case),
        command,
        issued_by=ctx.sender.code,
        now=ctx.now,
        message_id=ctx.message_id,
        institutions=ctx.kinds,
        policy=ctx.hub.policy,
        note=note,
        branch_allowance=branch_allowance,
    )
    order.origin_envelope = ctx.envelope_bytes
    for other in case.orders:
        if before.get(other.order_id) is OrderState.PENDING and other.state is OrderState.CANCELLED:
            # The addressee may be about to execute it: the withdrawal goes out first, ahead
            # of the release that caused it.
            deliver_order(ctx, other, origin=ctx.envelope)
    deliver_order(ctx, order, origin=ctx.envelope)
    ctx.record_events(case, since)
    return order


def deliver_order(
    ctx: Context,
    order: Order,
    *,
    origin: envelope_pb2.Envelope,
    authorization: envelope_pb2.Envelope | None = None,
) -> None:
    notice = delivery_pb2.Notice(
        kind=delivery_pb2.NOTICE_KIND_ORDER,
        case_id=order.case_id,
        order=wire.order_to_proto(order),
        origin=origin,
        summary=f"{order.kind.value} order {order.order_id}: {describe(order)}",
    )
    if authorization is not None:
        notice.authorization.CopyFrom(authorization)
    ctx.deliver(order.addressed_to, notice)


def auto_stop(ctx: Context, case: Case) -> None:
    rules = ctx.uow.rules.enabled()
    if not rules:
        return
    rule = rules[0]
    stops, skipped = rule.stops_for(case)
    kinds = ctx.kinds
    authorization = envelope_pb2.Envelope()
    authorization.ParseFromString(rule.envelope)
    for command in stops:
        try:
            order = case.issue(
                new_order_id(case),
                command,
                issued_by=rule.centre_code,
                now=ctx.now,
                message_id=ctx.message_id,
                institutions=kinds,
                policy=ctx.hub.policy,
                auto_stop_rule_id=rule.rule_id,
            )
        except DomainError as err:
            # The report was verified; a stop the rule cannot issue waits for the centre.
            case.record(ctx.now, "auto_stop.skipped", HUB_CODE, err.message)
            continue
        order.authorization_envelope = rule.envelope
        deliver_order(ctx, order, origin=ctx.envelope, authorization=authorization)
    for why in skipped:
        case.record(ctx.now, "auto_stop.skipped", HUB_CODE, why)


# ---- the money trail ---------------------------------------------------------------------------


def link_cases(
    ctx: Context, case: Case, accounts: set[tuple[str, str]], *, announce: bool
) -> tuple[list[case_pb2.CaseLink], str]:
    """One mule, many victims: when `case`'s money reaches an account another open case's
    money reached, say so on the case's timeline and, with `announce`, in a notice to the
    centres. Returns the links found (ten at most) and a sentence for people. The link itself
    is not stored: it is the shared account, found again whenever a case is read."""
    if not accounts:
        return [], ""
    found = ctx.uow.cases.involving(accounts, case.case_id, LINKS_NAMED + 1)
    shared: dict[tuple[str, str], list[str]] = {}
    for other_id, institution, account in found[:LINKS_NAMED]:
        shared.setdefault((institution, account), []).append(other_id)
    links = [
        case_pb2.CaseLink(
            case_id=other_id,
            account=account_pb2.AccountRef(institution_code=institution, account_number=account),
        )
        for other_id, institution, account in found[:LINKS_NAMED]
    ]
    sentences = []
    for (institution, account), others in shared.items():
        more = " and more" if len(found) > LINKS_NAMED else ""
        sentences.append(
            f"money of case(s) {', '.join(others)}{more} reached {mask(account)} at "
            f"{institution} too"
        )
    if not sentences:
        return [], ""
    summary = "linked: " + "; ".join(sentences) + "; money held there is shared among the victims"
    case.record(ctx.now, "case.linked", HUB_CODE, summary)
    if announce:
        ctx.deliver_to(
            ctx.centres(),
            delivery_pb2.Notice(
                kind=delivery_pb2.NOTICE_KIND_CASES_LINKED,
                case_id=case.case_id,
                summary=f"case {case.case_id} {summary}",
                linked_cases=links,
            ),
        )
    return links, summary


def linked(uow: UnitOfWork, case: Case, accounts: set[tuple[str, str]]) -> list[str]:
    return sorted({row[0] for row in uow.cases.involving(accounts, case.case_id, MAX_LINKED)})


def follow_onward(ctx: Context, case: Case, answered: Order) -> None:
    """An answer reported onward transfers: stop each receiving account the centre's standing
    rule reaches, in its name, and put every other one before the centre."""
    rules = ctx.uow.rules.enabled()
    rule = rules[0] if rules else None
    trail = build_trail(case)
    planned, escalated = follow(trail, answered, ctx.kinds, rule.follow_rule() if rule else None)
    centre = answered.issued_by
    if rule is not None and planned:
        authorization = envelope_pb2.Envelope()
        authorization.ParseFromString(rule.envelope)
        for plan in planned:
            try:
                order = case.issue(
                    new_order_id(case),
                    StopCommand(
                        plan.account, plan.amount_fen, plan.transactions, answered.order_id
                    ),
                    issued_by=rule.centre_code,
                    now=ctx.now,
                    message_id=ctx.message_id,
                    institutions=ctx.kinds,
                    policy=ctx.hub.policy,
                    auto_stop_rule_id=rule.rule_id,
                    branch_allowance=branch_allowance,
                )
            except DomainError as err:
                escalate(
                    ctx,
                    case,
                    centre,
                    f"{mask(plan.account.account_number)} at "
                    f"{plan.account.institution_code}: {err.message}",
                )
                continue
            order.authorization_envelope = rule.envelope
            deliver_order(ctx, order, origin=ctx.envelope, authorization=authorization)
    for item in escalated:
        where = f"{mask(item.account.account_number)} at {item.account.institution_code}"
        escalate(
            ctx,
            case,
            centre,
            f"{yuan(item.carried_fen)} of the victim's money can have moved on to {where} "
            f"(layer {item.layer}): {item.why}",
        )
    link_cases(
        ctx, case, {(t.to_institution, t.to_account) for t in answered.onward}, announce=True
    )


def escalate(ctx: Context, case: Case, centre: str, summary: str) -> None:
    case.record(ctx.now, "trail.escalated", HUB_CODE, summary)
    ctx.deliver(
        centre,
        delivery_pb2.Notice(
            kind=delivery_pb2.NOTICE_KIND_TRAIL_ESCALATION,
            case_id=case.case_id,
            origin=ctx.envelope,
            summary=f"case {case.case_id}: {summary}",
        ),
    )
