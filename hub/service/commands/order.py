"""OrderService (proto/stophub/v1/order.proto): the centre's stop, freeze, release and return
orders, the answers of the institutions they are addressed to, and the centre's standing
auto-stop rule."""

from __future__ import annotations

from google.protobuf.message import Message

from hub.domain.cases import Case, ReturnCommand
from hub.domain.errors import FailedPrecondition, NotFound
from hub.domain.rules import AutoStopRule
from hub.domain.wording import mask
from hub.service import wire
from hub.service.casework import follow_onward, issue_in, linked, load_case
from hub.service.pipeline import Command, Context
from hub.service.ports import AuditEntry, UnitOfWork
from stophub.v1 import delivery_pb2, order_pb2


def issue_order(ctx: Context, body: order_pb2.OrderInstruction) -> Message:
    case_id, command = wire.order_command_from_proto(body)
    case = load_case(ctx, case_id)
    if isinstance(command, ReturnCommand):
        _refuse_shared_return(ctx.uow, case, command)
    return wire.order_to_proto(issue_in(ctx, case, command, body.note))


def _refuse_shared_return(uow: UnitOfWork, case: Case, command: ReturnCommand) -> None:
    """Money in an account that several victims' money reached is not one victim's to take."""
    freeze = next((o for o in case.orders if o.order_id == command.freeze_order_id), None)
    if freeze is None:
        return  # the domain names the missing order
    shared = linked(uow, case, {(freeze.account_institution, freeze.account_number)})
    if shared:
        raise FailedPrecondition(
            "SHARED_ACCOUNT",
            f"money of case(s) {', '.join(shared)} reached {mask(freeze.account_number)} at "
            f"{freeze.account_institution} too: return it through a distribution "
            "(StartDistribution), which gives traced money to its victim and shares the rest "
            "pro rata after a public notice",
        )


def answer_order(ctx: Context, body: order_pb2.ExecutionResult) -> Message:
    order_id, execution = wire.execution_from_proto(body)
    case_id = ctx.uow.cases.case_id_of_order(order_id)
    if case_id is None:
        raise NotFound("ORDER_NOT_FOUND", f"no order {order_id!r}")
    case = load_case(ctx, case_id)
    ctx.authorize(case, order_id)
    since = len(case.events)
    order = case.answer(
        order_id,
        ctx.sender.code,
        execution,
        now=ctx.now,
        message_id=ctx.message_id,
        policy=ctx.hub.policy,
    )
    order.answer_envelope = ctx.envelope_bytes
    if order.is_hold and order.onward:
        follow_onward(ctx, case, order)
    ctx.deliver(
        order.issued_by,
        delivery_pb2.Notice(
            kind=delivery_pb2.NOTICE_KIND_ORDER_ANSWERED,
            case_id=case.case_id,
            order=wire.order_to_proto(order),
            origin=ctx.envelope,
            summary=case.events[-1].summary,
        ),
    )
    if (closure := case.close_if_settled(ctx.now)) is not None:
        ctx.deliver_to(
            sorted({case.reporting_institution, *ctx.centres()}),
            delivery_pb2.Notice(
                kind=delivery_pb2.NOTICE_KIND_CASE_CLOSED,
                case_id=case.case_id,
                summary=closure.closed.summary,
            ),
        )
        # A hold that found nothing lapses with its case: its holder lifts it, as after a
        # lapse at the end of its time (docs/orders.md, "Lapses").
        for lapsed, expired in closure.lapsed:
            ctx.deliver_to(
                sorted({lapsed.addressed_to, *ctx.centres()}),
                delivery_pb2.Notice(
                    kind=delivery_pb2.NOTICE_KIND_ORDER_EXPIRED,
                    case_id=case.case_id,
                    order=wire.order_to_proto(lapsed),
                    summary=expired.summary,
                ),
            )
    ctx.record_events(case, since)
    return wire.order_to_proto(order)


def set_auto_stop_rule(ctx: Context, body: order_pb2.AutoStopRule) -> Message:
    rule = AutoStopRule.validated(
        ctx.sender.code,
        body.rule_id.strip(),
        body.enabled,
        body.max_amount_fen,
        now=ctx.now,
        message_id=ctx.message_id,
        envelope=ctx.envelope_bytes,
        follow_onward=body.follow_onward_transfers,
        max_layer=body.max_layer,
    )
    ctx.uow.rules.put(rule)
    ctx.uow.audit.append(
        AuditEntry(
            kind="transition",
            actor=ctx.sender.code,
            message_id=ctx.message_id,
            detail=f"auto-stop rule {rule.rule_id} "
            + (f"enabled up to {rule.max_amount_fen} fen" if rule.enabled else "disabled")
            + (
                f", following onward transfers to layer {rule.follow_rule().max_layer}"
                if rule.enabled and rule.follow_onward
                else ""
            ),
        ),
        ctx.now,
    )
    return wire.rule_to_proto(rule)


ISSUE_ORDER = Command("IssueOrder", order_pb2.OrderInstruction, issue_order)
ANSWER_ORDER = Command("AnswerOrder", order_pb2.ExecutionResult, answer_order, case_scoped=True)
SET_AUTO_STOP_RULE = Command("SetAutoStopRule", order_pb2.AutoStopRule, set_auto_stop_rule)
