"""ListService (proto/stophub/v1/blacklist.proto): publishing and removing entries of the
blacklist and punishment list, the batch check, and the admission of a sync, whose stream
hub/api/lists.py serves from hub/service/lists.py (docs/blacklist.md, ADR 14)."""

from __future__ import annotations

from google.protobuf.message import Message

from hub.crypto.listkey import ListKey
from hub.domain.blacklist import Basis, ChangeOp, EntryKind, Subject, list_entry
from hub.domain.cases import Case
from hub.domain.errors import FailedPrecondition, InvalidArgument, NotFound, OutOfRange
from hub.service.casework import bounded
from hub.service.lists import (
    BASIS,
    add_entry,
    end_entry,
    entry_of,
    locked_state,
    new_entry_id,
    record_to_proto,
    require_key,
)
from hub.service.pipeline import Command, Context
from hub.service.ports import ListRow
from stophub.v1 import blacklist_pb2, delivery_pb2

MAX_CHECK = 1000


def _subject(body: blacklist_pb2.PublishListEntryBody) -> Subject:
    has_account = body.HasField("account")
    has_person = body.HasField("person")
    if has_account == has_person:
        raise InvalidArgument("account", "give exactly one of account and person")
    if has_account:
        a = body.account
        if not a.holder_name.strip():
            raise InvalidArgument("account.holder_name", "is required: the holder is told")
        return Subject.account(a.institution_code, a.account_number, a.holder_name)
    return Subject.person(body.person.id_number, body.person.name)


def _tell_holder(ctx: Context, row: ListRow, summary: str) -> None:
    """An account's institution tells its holder: basis, term, and how to appeal."""
    if row.kind != EntryKind.ACCOUNT.value:
        return
    institution = blacklist_pb2.ListEntry.FromString(row.clear_wire).account.institution_code
    if institution not in ctx.kinds:
        return
    ctx.deliver(
        institution,
        delivery_pb2.Notice(
            kind=delivery_pb2.NOTICE_KIND_LISTING,
            case_id=row.source_case_id,
            origin=ctx.envelope,
            summary=summary,
            list_entry=record_to_proto(row),
        ),
    )


def publish_list_entry(ctx: Context, body: blacklist_pb2.PublishListEntryBody) -> Message:
    key = require_key(ctx.hub.list_key)
    subject = _subject(body)
    basis = BASIS.get(body.basis)
    if basis is None:
        raise InvalidArgument("basis", "ACCOUNT_TRADER (2 years) or CONVICTED (3 years)")
    bounded("reason", body.reason)
    return record_to_proto(publish(ctx, key, subject, basis, body.reason, body.source_case_id))


def publish(
    ctx: Context, key: ListKey, subject: Subject, basis: Basis, reason: str, source_case_id: str
) -> ListRow:
    """List `subject` with the case `source_case_id` as its source: the list's new version,
    the case's timeline, and the holder's institution told (PublishListEntry, and a lead
    accepted as a listing)."""
    # Locked: the listing is an event of the case, and another hub may be adding one too.
    case = ctx.uow.cases.get(source_case_id.strip(), lock=True)
    if case is None:
        raise NotFound("CASE_NOT_FOUND", f"no case {source_case_id!r}: a listing names its case")
    ctx.accept(ctx.command, case.case_id)
    ctx.track(case)
    token = key.token(subject.key)
    # The list's lock before the subject's history: two hubs listing the same subject at once
    # must not both find it unlisted.
    locked_state(ctx.uow, key)
    history = [entry_of(r) for r in ctx.uow.lists.by_tokens([token], live_only=False)]
    entry = list_entry(
        new_entry_id(ctx.now),
        subject,
        basis,
        reason,
        case.case_id,
        history=history,
        now=ctx.now,
        listed_by=ctx.sender.code,
        terms=ctx.hub.list_terms,
    )
    state = add_entry(ctx.uow, key, entry, token)
    row = ctx.uow.lists.get(entry.entry_id)
    assert row is not None
    since = len(case.events)
    what = "account" if entry.kind is EntryKind.ACCOUNT else "person"
    case.record(
        ctx.now,
        "listing.published",
        ctx.sender.code,
        f"{what} listed as {entry.entry_id} ({basis.value}) until "
        f"{entry.expires_at.date().isoformat()}; list version {state.version}",
        message_id=ctx.message_id,
    )
    ctx.record_events(case, since)
    _tell_holder(
        ctx,
        row,
        f"listed {entry.entry_id}: {basis.value} until {entry.expires_at.date().isoformat()}; "
        "the holder may appeal through this institution (AppealService.FileAppeal)",
    )
    ctx.list_changed = True
    return row


def remove_list_entry(ctx: Context, body: blacklist_pb2.RemoveListEntryBody) -> Message:
    require_key(ctx.hub.list_key)
    bounded("reason", body.reason)
    if not body.reason.strip():
        raise InvalidArgument("reason", "say why the listing ends early; the party is told")
    row = ctx.uow.lists.get(body.entry_id.strip())
    if row is None:
        raise NotFound("ENTRY_NOT_FOUND", f"no list entry {body.entry_id!r}")
    case = ctx.uow.cases.get(row.source_case_id, lock=True)
    assert case is not None  # a foreign key
    ctx.accept(ctx.command, case.case_id)
    ctx.track(case)
    remove_row(ctx, case, row, body.reason.strip())
    return record_to_proto(row)


def remove_row(ctx: Context, case: Case, row: ListRow, reason: str) -> None:
    """End a live listing now (the centre's removal, an upheld appeal)."""
    if row.ended_version is not None:
        raise FailedPrecondition(
            "ENTRY_ENDED",
            f"list entry {row.entry_id} already ended ({row.end_kind} at version "
            f"{row.ended_version})",
        )
    state = end_entry(ctx.uow, require_key(ctx.hub.list_key), row, ChangeOp.REMOVE, ctx.now, reason)
    since = len(case.events)
    case.record(
        ctx.now,
        "listing.removed",
        ctx.sender.code,
        f"list entry {row.entry_id} removed: {reason}; list version {state.version}",
        message_id=ctx.message_id,
    )
    ctx.record_events(case, since)
    _tell_holder(ctx, row, f"listing {row.entry_id} removed: {reason}")
    ctx.list_changed = True


# ---- the batch check --------------------------------------------------------------------------


def check_list(ctx: Context, body: blacklist_pb2.CheckListBody) -> Message:
    if len(body.subjects) > MAX_CHECK:
        raise InvalidArgument(
            "subjects", f"at most {MAX_CHECK} a call (got {len(body.subjects)}): split the batch"
        )
    key = require_key(ctx.hub.list_key)
    tokens: list[bytes] = []
    by_token: list[bool] = []
    for i, s in enumerate(body.subjects):
        given = [s.HasField("account"), bool(s.id_number), bool(s.token)]
        if sum(given) != 1:
            raise InvalidArgument(
                f"subjects[{i}]", "give exactly one of account, id_number and token"
            )
        if s.token:
            if len(s.token) != 32:
                raise InvalidArgument(f"subjects[{i}].token", "is an HMAC-SHA256: 32 bytes")
            tokens.append(bytes(s.token))
        elif s.id_number:
            tokens.append(key.token(_field(i, lambda s=s: Subject.person(s.id_number, "-")).key))
        else:
            tokens.append(
                key.token(
                    _field(
                        i,
                        lambda s=s: Subject.account(
                            s.account.institution_code, s.account.account_number, "-"
                        ),
                    ).key
                )
            )
        by_token.append(bool(s.token))
    state = ctx.uow.lists.state()
    live = {
        r.subject_token: r
        for r in ctx.uow.lists.by_tokens(set(tokens), live_only=True)
        if r.expires_at > ctx.now
    }
    hits = []
    for i, (token, tokens_form) in enumerate(zip(tokens, by_token, strict=True)):
        row = live.get(token)
        hit = blacklist_pb2.ListHit(index=i, listed=row is not None)
        if row is not None:
            hit.entry.ParseFromString(row.token_wire if tokens_form else row.clear_wire)
        hits.append(hit)
    return blacklist_pb2.CheckListResult(hits=hits, version=state.version)


def _field(i: int, make: object) -> Subject:
    assert callable(make)
    try:
        subject = make()
    except InvalidArgument as err:
        detail = err.message.removeprefix(f"{err.field}: ")
        raise InvalidArgument(f"subjects[{i}].{err.field}", detail) from None
    assert isinstance(subject, Subject)
    return subject


# ---- syncing ----------------------------------------------------------------------------------


def _sync_plan(ctx: Context, body: blacklist_pb2.SyncListBody) -> Message:
    if body.form not in (
        blacklist_pb2.LIST_FORM_UNSPECIFIED,
        blacklist_pb2.LIST_FORM_CLEAR,
        blacklist_pb2.LIST_FORM_TOKENS,
    ):
        raise InvalidArgument("form", "CLEAR or TOKENS")
    if body.from_version < 0:
        raise InvalidArgument("from_version", "is the version your copy is at, 0 for none")
    tokens = body.form == blacklist_pb2.LIST_FORM_TOKENS
    if tokens:
        require_key(ctx.hub.list_key)
    state = ctx.uow.lists.state()
    if body.from_version > state.version:
        raise OutOfRange(
            "VERSION_NOT_ISSUED",
            f"the hub never issued list version {body.from_version}: the list is at version "
            f"{state.version}. This copy is not the hub's; keep using it only until a sync "
            "from version 0 replaces it",
        )
    return body


SYNC_LIST = Command("SyncList", blacklist_pb2.SyncListBody, _sync_plan, mutating=False)
PUBLISH_LIST_ENTRY = Command(
    "PublishListEntry", blacklist_pb2.PublishListEntryBody, publish_list_entry
)
REMOVE_LIST_ENTRY = Command("RemoveListEntry", blacklist_pb2.RemoveListEntryBody, remove_list_entry)
CHECK_LIST = Command("CheckList", blacklist_pb2.CheckListBody, check_list, mutating=False)
