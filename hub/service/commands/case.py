"""CaseService (proto/stophub/v1/case.proto): reports, their verification, reading cases,
and a case's money trail."""

from __future__ import annotations

import secrets
from datetime import datetime

from google.protobuf.message import Message

from hub.domain.cases import Case, CaseState
from hub.domain.errors import InvalidArgument, NotFound
from hub.domain.trail import accounts_of
from hub.service import wire
from hub.service.casework import MAX_LINKED, auto_stop, link_cases, load_case
from hub.service.paging import decode_token, encode_token, page_size
from hub.service.permissions import Access
from hub.service.pipeline import Command, Context
from hub.service.trail import trail_view
from stophub.v1 import account_pb2, case_pb2, delivery_pb2, trail_pb2


def new_case_id(now: datetime) -> str:
    return f"C{now:%Y%m%d}-{secrets.token_hex(4).upper()}"


def create_report(ctx: Context, body: case_pb2.Report) -> Message:
    report = wire.report_from_proto(body)
    case_id = new_case_id(ctx.now)
    ctx.accept(ctx.command, case_id)
    case = Case.open(
        case_id,
        ctx.sender.code,
        report,
        now=ctx.now,
        message_id=ctx.message_id,
        institutions=ctx.kinds,
    )
    case.report_envelope = ctx.envelope_bytes
    ctx.uow.cases.add(case)
    ctx.track(case, new=True)
    # A report that pays a known mule says so in its own notice: one notice per report, even
    # when a mule ring's victims report by the hundred.
    links, linked = link_cases(ctx, case, accounts_of(case), announce=False)
    ctx.record_events(case, 0)
    ctx.deliver_to(
        ctx.centres(),
        delivery_pb2.Notice(
            kind=delivery_pb2.NOTICE_KIND_REPORT_RECEIVED,
            case_id=case.case_id,
            origin=ctx.envelope,
            summary=f"{ctx.sender.code} reported case {case.case_id}: {case.events[0].summary}"
            + (f"; {linked}" if linked else ""),
            linked_cases=links,
        ),
    )
    return wire.case_to_proto(case)


def verify_report(ctx: Context, body: case_pb2.Verification) -> Message:
    case_id, outcome, reason = wire.verification_from_proto(body)
    case = load_case(ctx, case_id)
    ctx.authorize(case)
    since = len(case.events)
    case.verify(ctx.sender.code, outcome, reason, now=ctx.now, message_id=ctx.message_id)
    ctx.deliver_to(
        ctx.centres(),
        delivery_pb2.Notice(
            kind=delivery_pb2.NOTICE_KIND_REPORT_VERIFIED,
            case_id=case.case_id,
            origin=ctx.envelope,
            summary=case.events[-1].summary,
        ),
    )
    if case.state is CaseState.VERIFIED:
        auto_stop(ctx, case)
    ctx.record_events(case, since)
    return wire.case_to_proto(case)


def get_case(ctx: Context, body: case_pb2.GetCaseBody) -> Message:
    case = ctx.uow.cases.get(body.case_id)
    if case is None:
        raise NotFound("CASE_NOT_FOUND", f"no case {body.case_id!r}")
    view = wire.case_to_proto(case)
    for other_id, institution, account in ctx.uow.cases.involving(
        accounts_of(case), case.case_id, MAX_LINKED
    ):
        view.linked_cases.add(
            case_id=other_id,
            account=account_pb2.AccountRef(institution_code=institution, account_number=account),
        )
    if ctx.authorize(case) is Access.OWN:
        # An addressee (often the mule's bank) needs the orders, not who the victim is, nor
        # which other cases the centre is chasing through the same accounts.
        view.report.ClearField("victim")
        view.ClearField("linked_cases")
    return view


def list_cases(ctx: Context, body: case_pb2.ListCasesBody) -> Message:
    size = page_size(body.page_size)
    token = decode_token(body.page_token)
    after = None
    if token is not None:
        try:
            after = (datetime.fromisoformat(token[0]), str(token[1]))
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            raise InvalidArgument("page_token", "is not a token this hub issued") from exc
    state = wire.CASE_STATES_BY_NUMBER.get(body.state)
    if body.state and state is None:
        raise InvalidArgument("state", f"unknown case state {body.state}")
    reporter = ctx.sender.code if ctx.access is Access.OWN else None
    found = ctx.uow.cases.list(state, size + 1, after, reporter)
    page = list(found[:size])
    result = case_pb2.CaseList(cases=[wire.case_to_proto(c, with_events=False) for c in page])
    if len(found) > size:
        last = page[-1]
        result.next_page_token = encode_token([last.created_at.isoformat(), last.case_id])
    return result


def get_case_trail(ctx: Context, body: trail_pb2.GetCaseTrailBody) -> Message:
    case = ctx.uow.cases.get(body.case_id.strip())
    if case is None:
        raise NotFound("CASE_NOT_FOUND", f"no case {body.case_id!r}")
    ctx.authorize(case)
    return trail_view(ctx.uow, case, ctx.now, ctx.kinds)


CREATE_REPORT = Command("CreateReport", case_pb2.Report, create_report)
VERIFY_REPORT = Command("VerifyReport", case_pb2.Verification, verify_report, case_scoped=True)
GET_CASE = Command("GetCase", case_pb2.GetCaseBody, get_case, mutating=False, case_scoped=True)
LIST_CASES = Command("ListCases", case_pb2.ListCasesBody, list_cases, mutating=False)
GET_CASE_TRAIL = Command(
    "GetCaseTrail", trail_pb2.GetCaseTrailBody, get_case_trail, mutating=False, case_scoped=True
)
