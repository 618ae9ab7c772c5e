"""CaseService (proto/stophub/v1/case.proto): reports, their verification, reading cases,
and a case's money trail."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from google.protobuf.message import Message

from hub.crypto import blindindex
from hub.domain.cases import Case, CaseState
from hub.domain.clocks import CaseClock
from hub.domain.errors import InvalidArgument, NotFound
from hub.domain.grades import QUEUE_ORDER, grade_of
from hub.domain.trail import accounts_of
from hub.service import wire
from hub.service.casework import MAX_LINKED, auto_stop, bounded, link_cases, load_case
from hub.service.paging import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    decode_token,
    encode_token,
    page_size,
)
from hub.service.permissions import Access
from hub.service.pipeline import Command, Context
from hub.service.ports import CaseQuery
from hub.service.trail import trail_view
from stophub.v1 import account_pb2, case_pb2, delivery_pb2, trail_pb2


def new_case_id(now: datetime) -> str:
    return f"C{now:%Y%m%d}-{secrets.token_hex(4).upper()}"


def create_report(ctx: Context, body: case_pb2.Report) -> Message:
    report = wire.report_from_proto(body)
    grade = wire.grade_from_proto(body.grade, "grade")
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
    case.grade = grade.value
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
    nearest = wire.next_deadline_of(ctx.uow.clocks.open_for_case(case.case_id))
    if nearest is not None:
        view.next_deadline.CopyFrom(wire.deadline_to_proto(nearest))
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


def _case_query(ctx: Context, body: case_pb2.ListCasesBody) -> CaseQuery:
    """ListCases' filters as the store takes them, checked (docs/cases.md)."""
    state = wire.CASE_STATES_BY_NUMBER.get(body.state)
    if body.state and state is None:
        raise InvalidArgument("state", f"unknown case state {body.state}")
    if body.order_by not in (case_pb2.CASE_ORDER_UNSPECIFIED, case_pb2.CASE_ORDER_DEADLINE):
        raise InvalidArgument("order_by", f"unknown order {body.order_by}")
    account = None
    if body.HasField("account"):
        inst = body.account.institution_code.strip()
        number = body.account.account_number.strip()
        if not inst:
            raise InvalidArgument(
                "account.institution_code", "is required: an account number is one bank's"
            )
        if not number:
            raise InvalidArgument("account.account_number", "is required")
        account = (inst, number)
    created_from = wire.from_ts(body, "create_time_from", "create_time_from", required=False)
    created_to = wire.from_ts(body, "create_time_to", "create_time_to", required=False)
    if created_from is not None and created_to is not None and created_from >= created_to:
        raise InvalidArgument(
            "create_time_to",
            f"{created_to.isoformat()} is not after create_time_from "
            f"{created_from.isoformat()}: the range is [from, to)",
        )
    index = blindindex.current_index()
    name = index.name_token(body.victim_name) if body.victim_name.strip() else None
    id_number = (
        index.id_number_token(body.victim_id_number) if body.victim_id_number.strip() else None
    )
    own = ctx.access is Access.OWN
    searching_victim = name is not None or id_number is not None
    return CaseQuery(
        state=state,
        party=ctx.sender.code if own else None,
        # A member finds a victim only among the cases it reported itself.
        reporter=ctx.sender.code if own and searching_victim else None,
        institution=body.institution_code.strip() or None,
        account=account,
        victim_name_token=name,
        victim_id_token=id_number,
        created_from=created_from,
        created_to=created_to,
        by_deadline=body.order_by == case_pb2.CASE_ORDER_DEADLINE,
    )


def _after(token: Any, by_deadline: bool) -> tuple[Any, ...] | None:
    """The last row of the previous page, from its token (docs/cases.md)."""
    if token is None:
        return None
    try:
        if by_deadline:
            rank, flag, at, case_id = token["deadline"]
            if (
                not isinstance(rank, int)
                or not 0 <= rank < len(QUEUE_ORDER)
                or not isinstance(flag, int)
                or not isinstance(case_id, str)
            ):
                raise TypeError("deadline token")
            return (rank, flag, None if at is None else datetime.fromisoformat(at), case_id)
        return (datetime.fromisoformat(token[0]), str(token[1]))
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise InvalidArgument("page_token", "is not a token this hub issued") from exc


def list_cases(ctx: Context, body: case_pb2.ListCasesBody) -> Message:
    if not 0 <= body.page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument(
            "page_size", f"must be 0 (for {DEFAULT_PAGE_SIZE}) to {MAX_PAGE_SIZE}"
        )
    size = page_size(body.page_size)
    query = _case_query(ctx, body)
    after = _after(decode_token(body.page_token), query.by_deadline)
    found = ctx.uow.cases.search(query, size + 1, after)
    page = list(found[:size])
    clocks = ctx.uow.clocks.open_for_cases([c.case_id for c, _ in page])
    by_case: dict[str, list[CaseClock]] = {}
    for clock in clocks:
        by_case.setdefault(clock.case_id, []).append(clock)
    result = case_pb2.CaseList()
    for case, _ in page:
        view = wire.case_to_proto(case, with_events=False)
        nearest = wire.next_deadline_of(by_case.get(case.case_id, []))
        if nearest is not None:
            view.next_deadline.CopyFrom(wire.deadline_to_proto(nearest))
        if ctx.access is Access.OWN and case.reporting_institution != ctx.sender.code:
            # An addressee's copy, as GetCase gives it: the orders, not who the victim is.
            view.report.ClearField("victim")
        result.cases.append(view)
    if len(found) > size:
        last, deadline = page[-1]
        if query.by_deadline:
            result.next_page_token = encode_token(
                {
                    "deadline": [
                        grade_of(last.grade).rank,
                        1 if deadline is None else 0,
                        None if deadline is None else deadline.isoformat(),
                        last.case_id,
                    ]
                }
            )
        else:
            result.next_page_token = encode_token([last.created_at.isoformat(), last.case_id])
    return result


def set_case_grade(ctx: Context, body: case_pb2.SetCaseGradeBody) -> Message:
    """The centre changes a case's grade (docs/grades.md): on the timeline, audited, the
    reporter told. Clocks already running keep their deadlines; later ones take the new
    grade's window."""
    grade = wire.grade_from_proto(body.grade, "grade", required=True)
    reason = body.reason.strip()
    if not reason:
        raise InvalidArgument("reason", "is required: say why; the reporter is told")
    bounded("reason", reason)
    case_id = body.name.strip()
    if not case_id:
        raise InvalidArgument("name", "is required: the case id")
    case = load_case(ctx, case_id)
    since = len(case.events)
    case.regrade(grade.value, ctx.sender.code, reason, now=ctx.now, message_id=ctx.message_id)
    ctx.record_events(case, since)
    ctx.deliver(
        case.reporting_institution,
        delivery_pb2.Notice(
            kind=delivery_pb2.NOTICE_KIND_CASE_GRADED,
            case_id=case.case_id,
            origin=ctx.envelope,
            summary=f"case {case.case_id}: {case.events[-1].summary}",
        ),
    )
    return wire.case_to_proto(case)


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
SET_CASE_GRADE = Command("SetCaseGrade", case_pb2.SetCaseGradeBody, set_case_grade)
GET_CASE_TRAIL = Command(
    "GetCaseTrail", trail_pb2.GetCaseTrailBody, get_case_trail, mutating=False, case_scoped=True
)
