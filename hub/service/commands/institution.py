"""InstitutionService (proto/stophub/v1/institution.proto): the registry of members, read."""

from __future__ import annotations

from google.protobuf.message import Message

from hub.domain.errors import InvalidArgument, NotFound
from hub.service import wire
from hub.service.paging import decode_token, encode_token, page_size
from hub.service.pipeline import Command, Context
from stophub.v1 import institution_pb2


def get_institution(ctx: Context, body: institution_pb2.GetInstitutionBody) -> Message:
    inst = ctx.uow.institutions.get(body.code)
    if inst is None:
        raise NotFound("INSTITUTION_NOT_FOUND", f"no institution {body.code!r}")
    return wire.institution_to_proto(inst)


def list_institutions(ctx: Context, body: institution_pb2.ListInstitutionsBody) -> Message:
    size = page_size(body.page_size)
    after = decode_token(body.page_token)
    if after is not None and not isinstance(after, str):
        raise InvalidArgument("page_token", "is not a token this hub issued")
    found = ctx.uow.institutions.list(size + 1, after)
    page = list(found[:size])
    result = institution_pb2.InstitutionList(
        institutions=[wire.institution_to_proto(i) for i in page]
    )
    if len(found) > size:
        result.next_page_token = encode_token(page[-1].code)
    return result


GET_INSTITUTION = Command(
    "GetInstitution", institution_pb2.GetInstitutionBody, get_institution, mutating=False
)
LIST_INSTITUTIONS = Command(
    "ListInstitutions", institution_pb2.ListInstitutionsBody, list_institutions, mutating=False
)
