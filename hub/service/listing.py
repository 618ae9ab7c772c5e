"""The blacklist and punishment list on the hub: publishing, removal, expiry, the batch check,
and the parts of a sync (docs/blacklist.md, ADR 14).

Every change takes the next version under the lock of the one list_state row, in the same
transaction as the entry, the change log and both digests, so a checkpoint read in any
transaction describes exactly the entries that transaction sees.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.message import Message

from hub.crypto.listkey import ListKey
from hub.domain.blacklist import (
    DIGEST_MODULUS,
    Basis,
    ChangeOp,
    Entry,
    EntryKind,
    Subject,
    list_entry,
    micros,
)
from hub.domain.errors import FailedPrecondition, InvalidArgument, NotFound, OutOfRange
from hub.domain.institutions import HUB_CODE
from hub.service import wire
from hub.service.handlers import Command, Context, Hub, _bounded
from hub.service.ports import AuditEntry, ListRow, ListState, UnitOfWork
from stophub.v1 import account_pb2, blacklist_pb2, delivery_pb2, envelope_pb2

log = logging.getLogger(__name__)

MAX_CHECK = 1000
SNAPSHOT_PAGE = 2000
CHANGE_PAGE = 1000
EXPIRE_BATCH = 500
PRUNE_BATCH = 10_000

_BASIS = {
    blacklist_pb2.LIST_BASIS_ACCOUNT_TRADER: Basis.ACCOUNT_TRADER,
    blacklist_pb2.LIST_BASIS_CONVICTED: Basis.CONVICTED,
}
_BASIS_PB = {v: k for k, v in _BASIS.items()}
_KIND_PB = {
    EntryKind.ACCOUNT: blacklist_pb2.LIST_ENTRY_KIND_ACCOUNT,
    EntryKind.PERSON: blacklist_pb2.LIST_ENTRY_KIND_PERSON,
}
_OP_PB = {
    ChangeOp.ADD.value: blacklist_pb2.LIST_CHANGE_OP_ADD,
    ChangeOp.REMOVE.value: blacklist_pb2.LIST_CHANGE_OP_REMOVE,
    ChangeOp.EXPIRE.value: blacklist_pb2.LIST_CHANGE_OP_EXPIRE,
}
_STATE_PB = {
    "": blacklist_pb2.LIST_ENTRY_STATE_LISTED,
    "removed": blacklist_pb2.LIST_ENTRY_STATE_REMOVED,
    "expired": blacklist_pb2.LIST_ENTRY_STATE_EXPIRED,
}


def new_entry_id(now: datetime) -> str:
    return f"L{now:%Y%m%d}-{secrets.token_hex(8).upper()}"


# ---- the wire forms ---------------------------------------------------------------------------


def entry_to_proto(entry: Entry, token: bytes | None = None) -> blacklist_pb2.ListEntry:
    """The entry in the CLEAR form, or in the TOKENS form when `token` is given."""
    pb = blacklist_pb2.ListEntry(
        entry_id=entry.entry_id,
        kind=_KIND_PB[entry.kind],
        basis=_BASIS_PB[entry.basis],
        source_case_id=entry.source_case_id,
        listed_time=wire.ts(entry.listed_at),
        expire_time=wire.ts(entry.expires_at),
    )
    if token is not None:
        pb.subject_token = token
        return pb
    pb.reason = entry.reason
    if entry.kind is EntryKind.ACCOUNT:
        institution, _, number = entry.subject_key.partition("/")
        pb.account.CopyFrom(
            account_pb2.AccountRef(
                institution_code=institution, account_number=number, holder_name=entry.name
            )
        )
    else:
        pb.person.CopyFrom(blacklist_pb2.ListedPerson(id_number=entry.subject_key, name=entry.name))
    return pb


def entry_from_wire(clear_wire: bytes) -> Entry:
    """The domain entry a CLEAR-form ListEntry describes (its end is not in the wire form)."""
    pb = blacklist_pb2.ListEntry.FromString(clear_wire)
    kind = (
        EntryKind.ACCOUNT if pb.kind == blacklist_pb2.LIST_ENTRY_KIND_ACCOUNT else EntryKind.PERSON
    )
    if kind is EntryKind.ACCOUNT:
        key = f"{pb.account.institution_code}/{pb.account.account_number}"
        name = pb.account.holder_name
    else:
        key, name = pb.person.id_number, pb.person.name
    basis = next(b for b, v in _BASIS_PB.items() if v == pb.basis)
    return Entry(
        pb.entry_id,
        kind,
        key,
        name,
        basis,
        pb.reason,
        pb.source_case_id,
        pb.listed_time.ToDatetime(tzinfo=UTC),
        pb.expire_time.ToDatetime(tzinfo=UTC),
        "",
    )


def entry_of(row: ListRow) -> Entry:
    """The domain entry a stored row holds (its subject comes out of the sealed wire form)."""
    entry = entry_from_wire(row.clear_wire)
    entry.listed_at, entry.expires_at = row.listed_at, row.expires_at
    entry.listed_by, entry.ended_at, entry.end = row.listed_by, row.ended_at, row.end_kind
    return entry


def record_to_proto(row: ListRow, *, tokens: bool = False) -> blacklist_pb2.ListEntryRecord:
    wire_form = row.token_wire if tokens else row.clear_wire
    return blacklist_pb2.ListEntryRecord(
        entry=blacklist_pb2.ListEntry.FromString(wire_form),
        state=_STATE_PB.get(row.end_kind, blacklist_pb2.LIST_ENTRY_STATE_UNSPECIFIED),
        added_version=row.added_version,
        ended_version=row.ended_version or 0,
        listed_by=row.listed_by,
        end_time=wire.ts(row.ended_at),
        end_reason=row.end_reason,
    )


# ---- changes ----------------------------------------------------------------------------------


def _key(hub: Hub) -> ListKey:
    if hub.list_key is None:
        raise FailedPrecondition(
            "LIST_KEY_NOT_CONFIGURED",
            "this hub has no list key, so it cannot index or publish the list: its operator "
            "gives one with `stophub serve --list-key FILE` (`stophub listkey generate`)",
        )
    return hub.list_key


def _locked_state(uow: UnitOfWork, key: ListKey) -> ListState:
    state = uow.lists.state(lock=True)
    if state.version and state.list_key_id != key.key_id:
        raise FailedPrecondition(
            "LIST_KEY_CHANGED",
            f"the list's tokens are made with list key {state.list_key_id!r}, but this hub "
            f"holds {key.key_id!r}: start it with the network's list key",
        )
    return state


def add_entry(uow: UnitOfWork, key: ListKey, entry: Entry, token: bytes) -> ListState:
    """Store a new entry as the next change; returns the new state."""
    state = _locked_state(uow, key)
    version = state.version + 1
    uow.lists.add(
        ListRow(
            entry.entry_id,
            entry.kind.value,
            token,
            entry.basis.value,
            entry.source_case_id,
            entry.listed_at,
            entry.expires_at,
            entry.listed_by,
            None,
            "",
            "",
            version,
            None,
            entry_to_proto(entry).SerializeToString(),
            entry_to_proto(entry, token).SerializeToString(),
        )
    )
    uow.lists.log_change(version, ChangeOp.ADD.value, entry.entry_id, entry.listed_at)
    new = ListState(
        version,
        state.count + 1,
        (state.clear_digest + entry.clear_hash()) % DIGEST_MODULUS,
        (state.token_digest + entry.token_hash(token)) % DIGEST_MODULUS,
        key.key_id,
    )
    uow.lists.set_state(new)
    return new


def end_entry(
    uow: UnitOfWork, key: ListKey, row: ListRow, op: ChangeOp, now: datetime, reason: str
) -> ListState:
    state = _locked_state(uow, key)
    # Read again under the lock: another hub may have ended it since `row` was read, and
    # ending it twice would take its hash out of the digests twice.
    current = uow.lists.get(row.entry_id)
    if current is None or current.ended_version is not None:
        raise FailedPrecondition(
            "ENTRY_ENDED",
            f"list entry {row.entry_id} already ended"
            + (f" ({current.end_kind} at version {current.ended_version})" if current else ""),
        )
    version = state.version + 1
    entry = entry_of(row)
    kind = "removed" if op is ChangeOp.REMOVE else "expired"
    uow.lists.end(row.entry_id, now, kind, reason, version)
    uow.lists.log_change(version, op.value, row.entry_id, now)
    new = ListState(
        version,
        state.count - 1,
        (state.clear_digest - entry.clear_hash()) % DIGEST_MODULUS,
        (state.token_digest - entry.token_hash(row.subject_token)) % DIGEST_MODULUS,
        key.key_id,
    )
    uow.lists.set_state(new)
    row.ended_at, row.end_kind, row.end_reason, row.ended_version = now, kind, reason, version
    return new


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
    key = _key(ctx.hub)
    subject = _subject(body)
    basis = _BASIS.get(body.basis)
    if basis is None:
        raise InvalidArgument("basis", "ACCOUNT_TRADER (2 years) or CONVICTED (3 years)")
    _bounded("reason", body.reason)
    # Locked: the listing is an event of the case, and another hub may be adding one too.
    case = ctx.uow.cases.get(body.source_case_id.strip(), lock=True)
    if case is None:
        raise NotFound(
            "CASE_NOT_FOUND", f"no case {body.source_case_id!r}: a listing names its case"
        )
    ctx.accept(ctx.command, case.case_id)
    ctx.track(case)
    token = key.token(subject.key)
    # The list's lock before the subject's history: two hubs listing the same subject at once
    # must not both find it unlisted.
    _locked_state(ctx.uow, key)
    history = [entry_of(r) for r in ctx.uow.lists.by_tokens([token], live_only=False)]
    entry = list_entry(
        new_entry_id(ctx.now),
        subject,
        basis,
        body.reason,
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
    return record_to_proto(row)


def remove_list_entry(ctx: Context, body: blacklist_pb2.RemoveListEntryBody) -> Message:
    _key(ctx.hub)
    _bounded("reason", body.reason)
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


def remove_row(ctx: Context, case: object, row: ListRow, reason: str) -> None:
    """End a live listing now (the centre's removal, an upheld appeal)."""
    from hub.domain.cases import Case

    assert isinstance(case, Case)
    if row.ended_version is not None:
        raise FailedPrecondition(
            "ENTRY_ENDED",
            f"list entry {row.entry_id} already ended ({row.end_kind} at version "
            f"{row.ended_version})",
        )
    state = end_entry(ctx.uow, _key(ctx.hub), row, ChangeOp.REMOVE, ctx.now, reason)
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


def expire_due(hub: Hub) -> int:
    """End every listing whose term is over, as numbered EXPIRE changes; returns how many."""
    if hub.list_key is None:
        return 0
    ended = 0
    while True:
        with hub.uow(read_only=True) as peek:
            if not peek.lists.due(hub.clock.now(), 1):
                break
        with hub.uow() as uow:
            # The list's lock first: the due entries read after it are not being ended by
            # another hub's sweep.
            uow.lists.state(lock=True)
            now = hub.clock.now()
            due = uow.lists.due(now, EXPIRE_BATCH)
            for row in due:
                state = end_entry(uow, hub.list_key, row, ChangeOp.EXPIRE, now, "term ended")
                uow.audit.append(
                    AuditEntry(
                        kind="list",
                        actor=HUB_CODE,
                        message_id="",
                        detail=f"list entry {row.entry_id} expired at the end of its term; "
                        f"list version {state.version}",
                        case_id=row.source_case_id,
                    ),
                    now,
                )
            uow.commit()
        ended += len(due)
        if len(due) < EXPIRE_BATCH:
            break
    if ended:
        hub.list_changed()
    return ended


def replay_limit(state: ListState) -> int:
    """The most changes a sync replays: a copy further behind gets a snapshot, since
    replaying more changes than the list has entries costs more than sending it."""
    return max(state.count, CHANGE_PAGE)


def replay_horizon(state: ListState) -> int:
    """The oldest version a sync can still ask the change log for (`replay_limit` behind the
    list), less a page of slack that keeps whole a sync that started just inside the line
    while the list moved on; older changes are never read again."""
    return state.version - replay_limit(state) - CHANGE_PAGE + 1


def prune_changes(hub: Hub, batch: int = PRUNE_BATCH) -> int:
    """Delete the changes no sync can replay any more (older than `replay_horizon`), a batch
    per transaction; returns how many. Every change stays in the audit log."""
    pruned = 0
    while True:
        with hub.uow() as uow:
            below = replay_horizon(uow.lists.state())
            deleted = uow.lists.prune_changes(below, batch) if below > 1 else 0
            uow.commit()
        pruned += deleted
        if deleted < batch:
            break
    if pruned:
        log.info("pruned %d list changes no sync can replay any more", pruned)
    return pruned


# ---- the batch check --------------------------------------------------------------------------


def check_list(ctx: Context, body: blacklist_pb2.CheckListBody) -> Message:
    if len(body.subjects) > MAX_CHECK:
        raise InvalidArgument(
            "subjects", f"at most {MAX_CHECK} a call (got {len(body.subjects)}): split the batch"
        )
    key = _key(ctx.hub)
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


@dataclass(frozen=True)
class SyncPlan:
    """An authorised sync: who, in which form, from which version."""

    institution: str
    tokens: bool
    from_version: int
    follow: bool


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
        _key(ctx.hub)
    state = ctx.uow.lists.state()
    if body.from_version > state.version:
        raise OutOfRange(
            "VERSION_NOT_ISSUED",
            f"the hub never issued list version {body.from_version}: the list is at version "
            f"{state.version}. This copy is not the hub's; keep using it only until a sync "
            "from version 0 replaces it",
        )
    return body


@dataclass
class Part:
    """One serialized SyncListResponse and the version the copy reaches after it."""

    data: bytes
    version: int


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def entry_page(wires: Sequence[bytes]) -> bytes:
    """A SyncListResponse{entries: ListEntryPage{entries}} from stored wire forms, without
    decoding them: a snapshot of a million entries is mostly this concatenation."""
    page = b"".join([_field_bytes(1, w) for w in wires])
    return _field_bytes(2, page)


class ListSyncer:
    """The reading side of a sync, on its own read transactions (one per page), so a
    snapshot of a million entries holds no transaction open while the client reads."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def state(self) -> ListState:
        with self.hub.uow(read_only=True) as uow:
            return uow.lists.state()

    def checkpoint(self, state: ListState, recipient: str, tokens: bool) -> bytes:
        body = blacklist_pb2.ListCheckpoint(
            version=state.version,
            entry_count=state.count,
            digest=(state.token_digest if tokens else state.clear_digest).to_bytes(32, "big"),
            form=blacklist_pb2.LIST_FORM_TOKENS if tokens else blacklist_pb2.LIST_FORM_CLEAR,
            checkpoint_time=wire.ts(self.hub.clock.now()),
            list_key_id=state.list_key_id if tokens else "",
        )
        sealed: envelope_pb2.Envelope = self.hub.seal(recipient, body, self.hub.clock.now())
        return blacklist_pb2.SyncListResponse(checkpoint=sealed).SerializeToString()

    def needs_snapshot(self, from_version: int, state: ListState) -> bool:
        if from_version == 0:
            return True
        with self.hub.uow(read_only=True) as uow:
            oldest = uow.lists.oldest_change()
        if oldest is None or from_version + 1 < oldest:
            return True
        return state.version - from_version > replay_limit(state)

    def snapshot(self, state: ListState, tokens: bool) -> Iterator[Part]:
        yield Part(
            blacklist_pb2.SyncListResponse(
                snapshot=blacklist_pb2.ListSnapshot(version=state.version, entry_count=state.count)
            ).SerializeToString(),
            0,
        )
        after = 0
        while True:
            with self.hub.uow(read_only=True) as uow:
                rows = uow.lists.snapshot(state.version, tokens, after, SNAPSHOT_PAGE)
            if not rows:
                break
            after = rows[-1][0]
            yield Part(entry_page([w for _, w in rows]), state.version)
            if len(rows) < SNAPSHOT_PAGE:
                break

    def changes(self, after: int, upto: int, tokens: bool) -> Iterator[Part]:
        while after < upto:
            with self.hub.uow(read_only=True) as uow:
                rows = uow.lists.changes(after, upto, tokens, CHANGE_PAGE)
            if not rows or rows[0].version != after + 1:
                # Pruned while this sync ran (the list moved a whole horizon meanwhile): the
                # copy must not skip a change, so the sync ends and the next one gets a
                # snapshot.
                raise FailedPrecondition(
                    "LIST_HISTORY_PRUNED",
                    f"list change {after + 1} is no longer kept (the list moved on while this "
                    "sync ran): sync again from the version your copy is at, and the hub "
                    "sends a snapshot",
                )
            page = blacklist_pb2.ListChangePage()
            for r in rows:
                change = page.changes.add(version=r.version, op=_OP_PB[r.op], entry_id=r.entry_id)
                change.change_time.FromMicroseconds(micros(r.at))
                if r.wire is not None:
                    change.entry.ParseFromString(r.wire)
            after = rows[-1].version
            yield Part(blacklist_pb2.SyncListResponse(changes=page).SerializeToString(), after)


SYNC_LIST = Command("SyncList", blacklist_pb2.SyncListBody, _sync_plan, mutating=False)
PUBLISH_LIST_ENTRY = Command(
    "PublishListEntry", blacklist_pb2.PublishListEntryBody, publish_list_entry
)
REMOVE_LIST_ENTRY = Command("RemoveListEntry", blacklist_pb2.RemoveListEntryBody, remove_list_entry)
CHECK_LIST = Command("CheckList", blacklist_pb2.CheckListBody, check_list, mutating=False)
