"""The blacklist's machinery on the hub (docs/blacklist.md, ADR 14): its wire forms, each
numbered change (add, end), expiry at the end of a term, pruning the change log no sync can
replay, and the reading side of a sync. ListService's handlers are in
hub/service/commands/blacklist.py.

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
from typing import Protocol

from google.protobuf.message import Message

from hub.crypto.listkey import ListKey
from hub.domain.blacklist import (
    DIGEST_MODULUS,
    Basis,
    ChangeOp,
    Entry,
    EntryKind,
    micros,
)
from hub.domain.errors import FailedPrecondition
from hub.domain.institutions import HUB_CODE
from hub.service import wire
from hub.service.ports import AuditEntry, Clock, ListRow, ListState, UnitOfWork, UnitOfWorkFactory
from stophub.v1 import account_pb2, blacklist_pb2, envelope_pb2

log = logging.getLogger(__name__)

SNAPSHOT_PAGE = 2000
CHANGE_PAGE = 1000
EXPIRE_BATCH = 500
PRUNE_BATCH = 10_000


class ListHost(Protocol):
    """What the list's jobs and the reading side of a sync use of the hub
    (hub.service.pipeline.Hub)."""

    uow: UnitOfWorkFactory
    clock: Clock
    # The network's list key: indexes the blacklist and makes its tokens (None: the list
    # cannot be published here; docs/blacklist.md).
    list_key: ListKey | None

    def seal(
        self, recipient: str, body: Message, now: datetime, *, in_reply_to: str = ""
    ) -> envelope_pb2.Envelope: ...

    def list_changed(self) -> None: ...


BASIS = {
    blacklist_pb2.LIST_BASIS_ACCOUNT_TRADER: Basis.ACCOUNT_TRADER,
    blacklist_pb2.LIST_BASIS_CONVICTED: Basis.CONVICTED,
}
_BASIS_PB = {v: k for k, v in BASIS.items()}
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


def require_key(key: ListKey | None) -> ListKey:
    """The hub's list key, or the refusal that says how to give it one."""
    if key is None:
        raise FailedPrecondition(
            "LIST_KEY_NOT_CONFIGURED",
            "this hub has no list key, so it cannot index or publish the list: its operator "
            "gives one with `stophub serve --list-key FILE` (`stophub listkey generate`)",
        )
    return key


def locked_state(uow: UnitOfWork, key: ListKey) -> ListState:
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
    state = locked_state(uow, key)
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
    state = locked_state(uow, key)
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


def expire_due(hub: ListHost) -> int:
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


def prune_changes(hub: ListHost, batch: int = PRUNE_BATCH) -> int:
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


# ---- syncing ----------------------------------------------------------------------------------


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

    def __init__(self, hub: ListHost) -> None:
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
