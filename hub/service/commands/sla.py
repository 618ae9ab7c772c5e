"""SlaService (proto/stophub/v1/sla.proto): the SLA log, read-only: case clocks with their
reminders, breaches and escalations."""

from __future__ import annotations

from google.protobuf.message import Message

from hub.domain.errors import InvalidArgument, PermissionDenied
from hub.service import wire
from hub.service.paging import decode_token, encode_token, page_size
from hub.service.permissions import Access
from hub.service.pipeline import Command, Context
from stophub.v1 import sla_pb2

# An offset past this is no token the hub issued (and would overflow the database's LIMIT).
MAX_CLOCK_OFFSET = 10_000_000


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


LIST_CLOCKS = Command("ListClocks", sla_pb2.ListClocksBody, list_clocks, mutating=False)
