"""SlaService (proto/stophub/v1/sla.proto): the SLA log (case clocks with their reminders,
breaches and escalations) and the acknowledgement of a breach by a person (docs/clocks.md)."""

from __future__ import annotations

from google.protobuf.message import Message

from hub.domain.clocks import SlaEntry
from hub.domain.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from hub.domain.institutions import InstitutionKind
from hub.service import wire
from hub.service.clocks import write_log
from hub.service.paging import decode_token, encode_token, page_size
from hub.service.permissions import Access
from hub.service.pipeline import Command, Context
from stophub.v1 import sla_pb2

# An offset past this is no token the hub issued (and would overflow the database's LIMIT).
MAX_CLOCK_OFFSET = 10_000_000
# The longest note an acknowledgement keeps.
MAX_ACK_NOTE = 2_000


def list_clocks(ctx: Context, body: sla_pb2.ListClocksBody) -> Message:
    """The SLA log, read-only: the centre and the regulator see every clock, a bank or payment
    institution the clocks it is responsible for. Running clocks first, by time left."""
    size = page_size(body.page_size)
    token = decode_token(body.page_token)
    offset = 0
    if token is not None:
        value = token.get("offset") if isinstance(token, dict) else None
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or not 0 <= value <= MAX_CLOCK_OFFSET
        ):
            raise InvalidArgument("page_token", "is not a token this hub issued")
        offset = value
    institution = body.institution.strip() or None
    if ctx.access is Access.OWN:
        if institution is not None and institution != ctx.sender.code:
            raise PermissionDenied(
                "NOT_RESPONSIBLE",
                f"{ctx.sender.code} may list only the clocks it is responsible for, not "
                f"{institution}'s; the anti-fraud centre and the regulator see every clock",
            )
        institution = ctx.sender.code
    found = ctx.uow.clocks.query(
        institution=institution,
        case_id=body.case_id.strip() or None,
        open_only=body.open_only,
        breached_only=body.breached_only,
        unacknowledged_only=body.unacknowledged_only,
        limit=size + 1,
        offset=offset,
    )
    page = list(found[:size])
    entries = ctx.uow.clocks.entries([c.clock_id for c in page])
    result = sla_pb2.ClockList(
        clocks=[wire.clock_to_proto(c, entries.get(c.clock_id, [])) for c in page]
    )
    if len(found) > size:
        result.next_page_token = encode_token({"offset": offset + size})
    return result


def acknowledge_breach(ctx: Context, body: sla_pb2.BreachAcknowledgement) -> Message:
    """A person acknowledges a breached clock, once: the anti-fraud centre any clock, a bank or
    payment institution a clock it is responsible for (the matrix refuses other kinds)."""
    operator = ctx.envelope.operator
    if not operator:
        raise InvalidArgument(
            "operator",
            "a person acknowledges a breach: sign the acknowledgement with the envelope's "
            "operator set to who they are (docs/signing.md)",
            "OPERATOR_REQUIRED",
        )
    clock_id = body.clock_id.strip()
    if not clock_id:
        raise InvalidArgument("clock_id", "is required")
    if len(body.note) > MAX_ACK_NOTE:
        raise InvalidArgument("note", f"at most {MAX_ACK_NOTE} characters")
    clock = ctx.uow.clocks.get(clock_id, lock=True)
    keeper = ctx.sender.kind in (InstitutionKind.BANK, InstitutionKind.PAYMENT_INSTITUTION)
    if clock is None or (keeper and clock.responsible != ctx.sender.code):
        if clock is None:
            raise NotFound("CLOCK_NOT_FOUND", f"no clock {clock_id!r}")
        raise PermissionDenied(
            "NOT_RESPONSIBLE",
            f"{ctx.sender.code} may acknowledge only the breaches of clocks it is responsible "
            f"for; {clock_id} is {clock.responsible}'s",
        )
    ctx.accept(ctx.command, clock.case_id)
    if not clock.breached:
        raise FailedPrecondition(
            "NOT_BREACHED",
            f"clock {clock_id} ({clock.kind}, {clock.state.value}) has not breached its deadline "
            f"{clock.deadline_at.isoformat()}: only a breach is acknowledged",
        )
    if clock.acknowledged_at is not None:
        raise FailedPrecondition(
            "ALREADY_ACKNOWLEDGED",
            f"the breach of clock {clock_id} was acknowledged by {clock.acknowledged_operator} "
            f"of {clock.acknowledged_by} at {clock.acknowledged_at.isoformat()}",
        )
    clock.acknowledged_at = ctx.now
    clock.acknowledged_by = ctx.sender.code
    clock.acknowledged_operator = operator
    clock.acknowledge_note = body.note.strip()
    write_log(
        ctx.uow,
        [
            SlaEntry(
                clock.clock_id,
                clock.case_id,
                clock.order_id,
                clock.kind,
                "acknowledged",
                ctx.now,
                clock.deadline_at,
                clock.responsible,
                detail=f"acknowledged by {ctx.sender.code}",
            )
        ],
        ctx.now,
    )
    entries = ctx.uow.clocks.entries([clock.clock_id])
    return wire.clock_to_proto(clock, entries.get(clock.clock_id, []))


LIST_CLOCKS = Command("ListClocks", sla_pb2.ListClocksBody, list_clocks, mutating=False)
ACKNOWLEDGE_BREACH = Command("AcknowledgeBreach", sla_pb2.BreachAcknowledgement, acknowledge_breach)
