"""AppealService (proto/stophub/v1/appeal.proto): appeals against stops, freezes and listings,
filed by the institution that keeps the holder's account, decided by the centre within the
appeal clock (hub/system/policy.toml).

An upheld appeal clears the account in the case: every stop and freeze still holding (or
pending) on it is released by a release order to the holding institution, and every live
listing of it that came from the case is removed, which reaches every copy of the list as a
numbered change.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from google.protobuf.message import Message

from hub.domain.appeals import Appeal, AppealState, Document, ReferenceKind
from hub.domain.blacklist import EntryKind
from hub.domain.cases import Case, Order, OrderKind, OrderState, ReleaseCommand
from hub.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from hub.service import wire
from hub.service.casework import bounded, issue_in, load_case
from hub.service.commands.blacklist import remove_row
from hub.service.lists import entry_of
from hub.service.paging import MAX_PAGE_SIZE, decode_time_key, encode_token, page_size
from hub.service.permissions import Access
from hub.service.pipeline import Command, Context
from hub.service.ports import ListRow
from stophub.v1 import appeal_pb2, delivery_pb2

DEFAULT_WINDOW = timedelta(days=7)
HELD = (OrderState.PENDING, OrderState.HOLDING)

_STATE_PB = {
    AppealState.FILED: appeal_pb2.APPEAL_STATE_FILED,
    AppealState.UPHELD: appeal_pb2.APPEAL_STATE_UPHELD,
    AppealState.REJECTED: appeal_pb2.APPEAL_STATE_REJECTED,
}


def new_appeal_id(now: datetime) -> str:
    return f"A{now:%Y%m%d}-{secrets.token_hex(4).upper()}"


def appeal_to_proto(a: Appeal) -> appeal_pb2.Appeal:
    return appeal_pb2.Appeal(
        appeal_id=a.appeal_id,
        reference=a.reference,
        reference_kind=a.reference_kind.value,
        case_id=a.case_id,
        appellant=a.appellant,
        grounds=a.grounds,
        documents=[
            appeal_pb2.AppealDocument(name=d.name, sha256=d.sha256) for d in a.document_list()
        ],
        state=_STATE_PB[a.state],
        file_time=wire.ts(a.filed_at),
        decide_by_time=wire.ts(a.decide_by),
        decision_time=wire.ts(a.decided_at),
        decided_by=a.decided_by,
        reason=a.reason,
        release_order_ids=a.release_orders.split(),
        removed_entry_ids=a.removed_entries.split(),
    )


def _decide_by(ctx: Context) -> datetime:
    clock = ctx.hub.clock_policy.clock("appeal")
    if clock is None:
        return ctx.now + DEFAULT_WINDOW
    return clock.window.deadline(ctx.now, ctx.hub.calendar, None)


def _account_key(row: ListRow) -> str | None:
    return entry_of(row).subject_key if row.kind == EntryKind.ACCOUNT.value else None


def _not_yours(ctx: Context, what: str, holder: str) -> PermissionDenied:
    return PermissionDenied(
        "NOT_YOUR_ACCOUNT",
        f"{what} concerns an account kept by {holder}; an appeal comes from the institution "
        f"that keeps the holder's account, not from {ctx.sender.code}",
    )


def _tell(ctx: Context, recipients: list[str], a: Appeal, summary: str) -> None:
    ctx.deliver_to(
        recipients,
        delivery_pb2.Notice(
            kind=delivery_pb2.NOTICE_KIND_APPEAL,
            case_id=a.case_id,
            origin=ctx.envelope,
            summary=summary,
            appeal=appeal_to_proto(a),
        ),
    )


def file_appeal(ctx: Context, body: appeal_pb2.FileAppealBody) -> Message:
    reference = body.reference.strip()
    if not reference:
        raise InvalidArgument("reference", "name the stop or freeze order, or the list entry")
    bounded("grounds", body.grounds)
    documents = [Document(d.name, bytes(d.sha256)) for d in body.documents]
    row = ctx.uow.lists.get(reference)
    if row is not None:
        kind = ReferenceKind.LISTING
        if row.ended_version is not None:
            raise FailedPrecondition(
                "NOTHING_TO_APPEAL", f"list entry {reference} already ended ({row.end_kind})"
            )
        key = _account_key(row)
        # A person's listing may be appealed through any member that keeps their account.
        if key is not None and key.split("/", 1)[0] != ctx.sender.code:
            raise _not_yours(ctx, f"list entry {reference}", key.split("/", 1)[0])
        case = load_case(ctx, row.source_case_id)
    else:
        case_id = ctx.uow.cases.case_id_of_order(reference)
        if case_id is None:
            raise NotFound(
                "REFERENCE_NOT_FOUND",
                f"no stop or freeze order and no list entry {reference!r}: give the order id "
                "from the order notice or the entry id from the listing notice",
            )
        case = load_case(ctx, case_id)
        order = next(o for o in case.orders if o.order_id == reference)
        if order.kind not in (OrderKind.STOP, OrderKind.FREEZE):
            raise FailedPrecondition(
                "NOT_APPEALABLE",
                f"{reference} is a {order.kind.value} order; stops, freezes and listings are "
                "appealed",
            )
        if order.addressed_to != ctx.sender.code:
            raise _not_yours(ctx, f"order {reference}", order.addressed_to)
        if order.state not in HELD:
            raise FailedPrecondition(
                "NOTHING_TO_APPEAL",
                f"order {reference} holds nothing any more ({order.state.value})",
            )
        kind = ReferenceKind.STOP if order.kind is OrderKind.STOP else ReferenceKind.FREEZE
    if ctx.uow.appeals.open_for(reference):
        raise AlreadyExists(
            "APPEAL_PENDING",
            f"an appeal against {reference} is already waiting for the centre's decision",
        )
    appeal = Appeal.file(
        new_appeal_id(ctx.now),
        reference,
        kind,
        case.case_id,
        ctx.sender.code,
        body.grounds,
        documents,
        now=ctx.now,
        decide_by=_decide_by(ctx),
        message_id=ctx.message_id,
    )
    ctx.uow.appeals.add(appeal)
    since = len(case.events)
    case.record(
        ctx.now,
        "appeal.filed",
        ctx.sender.code,
        f"appeal {appeal.appeal_id} by {ctx.sender.code} against {kind.value} {reference}; "
        f"decide by {appeal.decide_by.isoformat()}",
        message_id=ctx.message_id,
        order_id=appeal.appeal_id,
    )
    ctx.record_events(case, since)
    _tell(ctx, ctx.centres(), appeal, f"appeal {appeal.appeal_id} against {reference}")
    return appeal_to_proto(appeal)


def _clear_account(ctx: Context, case: Case, appeal: Appeal) -> tuple[list[str], list[str]]:
    """Release every hold on the appealed account in the case, and remove its listings."""
    account: tuple[str, str] | None = None
    subject: str | None = None
    if appeal.reference_kind is ReferenceKind.LISTING:
        row = ctx.uow.lists.get(appeal.reference)
        assert row is not None
        subject = _account_key(row)
        if subject is not None:
            institution, _, number = subject.partition("/")
            account = (institution, number)
    else:
        order = next(o for o in case.orders if o.order_id == appeal.reference)
        account = (order.account_institution, order.account_number)
        subject = f"{order.account_institution}/{order.account_number}"
    released: list[str] = []
    if account is not None:
        holds = [
            o
            for o in case.orders
            if o.kind in (OrderKind.STOP, OrderKind.FREEZE)
            and o.state in HELD
            and (o.account_institution, o.account_number) == account
        ]
        for hold in holds:
            if hold.state not in HELD:
                continue  # a release of its stop already ended this freeze, or the reverse
            released.append(_release(ctx, case, hold, appeal))
    removed: list[str] = []
    for row in ctx.uow.lists.live_for_case(case.case_id):
        if row.entry_id == appeal.reference or (
            subject is not None and _account_key(row) == subject
        ):
            remove_row(ctx, case, row, f"appeal {appeal.appeal_id} upheld: {appeal.reason}")
            removed.append(row.entry_id)
    return released, removed


def _release(ctx: Context, case: Case, hold: Order, appeal: Appeal) -> str:
    reason = f"appeal {appeal.appeal_id} upheld"
    return issue_in(ctx, case, ReleaseCommand(hold.order_id, reason), reason).order_id


def decide_appeal(ctx: Context, body: appeal_pb2.DecideAppealBody) -> Message:
    bounded("reason", body.reason)
    appeal = ctx.uow.appeals.get(body.appeal_id.strip())
    if appeal is None:
        raise NotFound("APPEAL_NOT_FOUND", f"no appeal {body.appeal_id!r}")
    if body.decision not in (appeal_pb2.APPEAL_DECISION_UPHOLD, appeal_pb2.APPEAL_DECISION_REJECT):
        raise InvalidArgument("decision", "UPHOLD or REJECT")
    case = load_case(ctx, appeal.case_id)
    # Again, locked, after the case's lock: a decision another hub committed meanwhile shows.
    appeal = ctx.uow.appeals.get(appeal.appeal_id, lock=True) or appeal
    uphold = body.decision == appeal_pb2.APPEAL_DECISION_UPHOLD
    # Checked before anything is released, so a decided appeal changes nothing.
    appeal.decide(uphold, ctx.sender.code, body.reason, ctx.now)
    if uphold:
        released, removed = _clear_account(ctx, case, appeal)
        appeal.release_orders = " ".join(released)
        appeal.removed_entries = " ".join(removed)
    since = len(case.events)
    what = "upheld" if uphold else "rejected"
    case.record(
        ctx.now,
        "appeal.decided",
        ctx.sender.code,
        f"appeal {appeal.appeal_id} {what}: {appeal.reason}",
        message_id=ctx.message_id,
        order_id=appeal.appeal_id,
    )
    ctx.record_events(case, since)
    _tell(
        ctx,
        sorted({appeal.appellant, *ctx.centres()}),
        appeal,
        f"appeal {appeal.appeal_id} {what}: {appeal.reason}",
    )
    return appeal_to_proto(appeal)


def get_appeal(ctx: Context, body: appeal_pb2.GetAppealBody) -> Message:
    appeal = ctx.uow.appeals.get(body.appeal_id.strip())
    if appeal is None or (ctx.access is Access.OWN and appeal.appellant != ctx.sender.code):
        # Another institution's appeal is not confirmed to exist.
        raise NotFound("APPEAL_NOT_FOUND", f"no appeal {body.appeal_id!r} of {ctx.sender.code}")
    return appeal_to_proto(appeal)


_STATE_BY_NUMBER = {number: state for state, number in _STATE_PB.items()}


def list_appeals(ctx: Context, body: appeal_pb2.ListAppealsBody) -> Message:
    """Appeals newest first: the centre, the regulator and auditors all of them, a bank or
    payment institution its own (naming another institution finds none)."""
    if not 0 <= body.page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"must be 0 (for 50) to {MAX_PAGE_SIZE}")
    size = page_size(body.page_size)
    state = _STATE_BY_NUMBER.get(body.state)
    if body.state and state is None:
        raise InvalidArgument("state", f"unknown appeal state {body.state}")
    after = decode_time_key(body.page_token)
    appellant = body.institution_code.strip() or None
    if ctx.access is Access.OWN:
        if appellant is not None and appellant != ctx.sender.code:
            return appeal_pb2.AppealList()
        appellant = ctx.sender.code
    found = ctx.uow.appeals.search(state=state, appellant=appellant, limit=size + 1, after=after)
    page = list(found[:size])
    result = appeal_pb2.AppealList(appeals=[appeal_to_proto(a) for a in page])
    if len(found) > size:
        last = page[-1]
        result.next_page_token = encode_token([last.filed_at.isoformat(), last.appeal_id])
    return result


FILE_APPEAL = Command("FileAppeal", appeal_pb2.FileAppealBody, file_appeal)
DECIDE_APPEAL = Command("DecideAppeal", appeal_pb2.DecideAppealBody, decide_appeal)
GET_APPEAL = Command("GetAppeal", appeal_pb2.GetAppealBody, get_appeal, mutating=False)
LIST_APPEALS = Command("ListAppeals", appeal_pb2.ListAppealsBody, list_appeals, mutating=False)
