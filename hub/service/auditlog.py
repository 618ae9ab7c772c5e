"""The audit log as a Merkle tree (issue 8, ADR 15, docs/audit.md): the sequencer that gives
each committed entry its place and the hub-signed checkpoints, each naming its predecessor,
never signed over a tree that does not extend the newest this hub knows (ADR 21). Reading the
log as evidence is hub.service.auditverify.

Entries are written in the transactions of the commands they record, on any hub; their ids
come from the database and commit out of order across transactions. So an entry does not
take its place as it is written: after it commits, the sequencer (one at a time, under the
lock of the log's state row) appends it to the tree in id order. Its leaf binds its place,
its id and its content in clear, so re-encrypting the database changes no leaf, and an
export verifies without the data keys.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from google.protobuf.message import DecodeError

from hub.crypto import audittag
from hub.crypto.audittag import TagKeys
from hub.crypto.checkpoint import (
    CheckpointError,
    SignedCheckpoint,
    open_checkpoint,
    signed_checkpoint,
)
from hub.crypto.envelope import seal_message
from hub.domain.auditleaf import LEAF_FORMAT, leaf_bytes, leaf_of, micros, payload_digest
from hub.domain.institutions import HUB_CODE
from hub.domain.merkle import CompactRange, TiledTree, consistency_path, verify_consistency
from hub.service import audittags
from hub.service.ports import (
    AuditRecord,
    Clock,
    LeafFields,
    LogCheckpointRow,
    LogState,
    Signer,
    UnitOfWork,
    UnitOfWorkFactory,
)
from hub.service.wire import ts
from stophub.v1 import audit_pb2, envelope_pb2

log = logging.getLogger(__name__)

__all__ = ["LEAF_FORMAT", "entry_leaf", "leaf_data"]

SEQUENCE_BATCH = 2000
# A checkpoint is signed when the tree grew and the last is older than this, and on request.
CHECKPOINT_EVERY = timedelta(minutes=1)
# The recipient of a checkpoint: everyone who audits the hub.
AUDIT_RECIPIENT = "AUDIT"


def leaf_data(index: int, record: AuditRecord) -> bytes:
    """The bytes a leaf hashes (docs/audit.md): each field length-prefixed, in clear."""
    return leaf_bytes(index, *_fields(record))


def entry_leaf(index: int, record: AuditRecord) -> bytes:
    return leaf_of(index, *_fields(record))


def entry_fields(record: AuditRecord) -> LeafFields:
    """What the leaf and the hub's tag bind of an entry, besides its position, as bytes."""
    return _fields(record)


def tree_of(state: LogState) -> CompactRange:
    """The tree a state row records, to append to."""
    return _range_of(state)


def _fields(record: AuditRecord) -> LeafFields:
    e = record.entry
    return LeafFields(
        record.entry_id,
        micros(record.recorded_at),
        e.kind.encode(),
        e.actor.encode(),
        e.message_id.encode(),
        (e.case_id or "").encode(),
        (e.order_id or "").encode(),
        e.detail.encode(),
        payload_digest(e.payload),
    )


def _range_of(state: LogState) -> CompactRange:
    nodes = [state.compact_range[i : i + 32] for i in range(0, len(state.compact_range), 32)]
    return CompactRange.restore(state.size, nodes)


def sequence(
    uow_factory: UnitOfWorkFactory,
    clock: Clock,
    batch: int = SEQUENCE_BATCH,
    *,
    tag_keys: TagKeys | None = None,
) -> int:
    """Give every committed entry without a place its place, in id order; returns how many.

    Only entries the hub wrote take a place: one whose tag verifies (`tag_keys`, by default
    the process's data keyring), or an untagged entry from before revision 0015 while the
    tree holds nothing but such entries. Every other entry is refused (marked at
    `clock.now()`, never placed, logged at ERROR and counted) and `audit verify` names it."""
    keys = audittag.KEYS if tag_keys is None else tag_keys
    placed = 0
    while True:
        with uow_factory(read_only=True) as peek:
            if not peek.audit.unsequenced(1):
                return placed
        with uow_factory() as uow:
            state = uow.audit.log_state(lock=True)
            records = uow.audit.unsequenced(batch)
            tree = _range_of(state)
            judge = audittags.Placing(state, keys)
            places = []
            refused = []
            completed: list[tuple[int, int, bytes]] = []
            for record in records:
                problem = judge.problem(record, _fields(record), tree.size)
                if problem:
                    refused.append(record.entry_id)
                    log.error(
                        "audit log: entry %d refused: %s (written by something other than "
                        "the hub?)",
                        record.entry_id,
                        problem,
                    )
                    continue
                leaf = entry_leaf(tree.size, record)
                places.append((record.entry_id, tree.size, leaf))
                tree.append(leaf, completed)
            uow.audit.assign(places)
            uow.audit.refuse(refused, clock.now())
            uow.audit.add_nodes(completed)
            uow.audit.set_log_state(
                LogState(
                    tree.size,
                    tree.root(),
                    b"".join(tree.nodes),
                    state.untagged_below_id,
                    judge.untagged,
                )
            )
            uow.commit()
        audittags.count_refused(len(refused))
        placed += len(places)
        if len(records) < batch:
            return placed


class CheckpointMemory:
    """The newest checkpoint this hub signed, or read and verified with its own key, kept in
    memory: the one thing a database rolled back or forked under the hub cannot rewrite.
    Before it signs, the hub proves the database's tree an extension of it (a consistency
    proof from the stored subtree roots, O(log n) reads); if it is not, the hub signs nothing,
    logs an ERROR once per change and says so through `on_forked` (the gauge
    stophub_audit_log_forked), until the database is restored."""

    def __init__(
        self,
        own_keys: Callable[[str], bytes | None],
        on_forked: Callable[[bool], None] | None = None,
    ) -> None:
        self.own_keys = own_keys
        self.on_forked = on_forked
        self.newest: SignedCheckpoint | None = None
        self.problem = ""
        self._seen: tuple[int, bytes, int, int, int] | None = None

    def check(self, uow: UnitOfWork, state: LogState, newest: LogCheckpointRow | None) -> str:
        """ "" when the database's tree extends what this hub last signed or verified (and it
        then remembers `newest`, the newest stored checkpoint, if it can verify it); else what
        is wrong."""
        # Asked every run of the sequencer (twice a second), so it reads two rows by key,
        # never every checkpoint, and proves the tree again only when the tree, the newest
        # stored checkpoint or the remembered one changed.
        known = self.newest
        kept_row = None if known is None else uow.audit.checkpoint_of(known.tree_size)
        seen = (
            state.size,
            state.root,
            newest.tree_size if newest else 0,
            known.tree_size if known else 0,
            kept_row is not None and kept_row.root_hash == (known.root_hash if known else b""),
        )
        if seen == self._seen:
            return self.problem
        problem = self._problem(uow, state, newest, kept_row)
        self._seen = seen if not problem else None
        if problem != self.problem:
            if problem:
                log.error("%s", problem)
            else:
                log.warning("audit log: the database's tree extends the hub's checkpoint again")
            if self.on_forked is not None:
                self.on_forked(bool(problem))
        self.problem = problem
        return problem

    def _problem(
        self,
        uow: UnitOfWork,
        state: LogState,
        newest: LogCheckpointRow | None,
        kept_row: LogCheckpointRow | None,
    ) -> str:
        known = self.newest
        if known is not None and (kept_row is None or kept_row.root_hash != known.root_hash):
            return self._forked(state, known, "its row is gone from audit_checkpoints")
        if newest is not None and (known is None or newest.tree_size > known.tree_size):
            try:
                stored = open_checkpoint(newest.envelope, self.own_keys)
            except CheckpointError:
                # Signed under another key (before a rotation) or not at all: nothing this
                # hub can vouch for; `audit verify` judges it with the auditor's keys.
                stored = None
            if stored is not None:
                if known is not None and not _extends(uow, stored, known):
                    return self._forked(
                        state, known, f"the stored checkpoint of {stored.tree_size} forks it"
                    )
                known = stored
        if known is not None and not _extends_state(uow, state, known):
            return self._forked(state, known, "")
        self.newest = known
        return ""

    @staticmethod
    def _forked(state: LogState, known: SignedCheckpoint, why: str) -> str:
        return (
            f"audit log: the database's tree ({state.size}, {state.root.hex()}) is not an "
            f"extension of checkpoint {known.tree_size} signed at "
            f"{known.checkpoint_time.isoformat()}{' (' + why + ')' if why else ''}: rolled "
            "back or forked; the hub signs no checkpoint until it is restored"
        )


def _extends(uow: UnitOfWork, later: SignedCheckpoint, earlier: SignedCheckpoint) -> bool:
    return _consistent(uow, earlier.tree_size, earlier.root_hash, later.tree_size, later.root_hash)


def _extends_state(uow: UnitOfWork, state: LogState, known: SignedCheckpoint) -> bool:
    return _consistent(uow, known.tree_size, known.root_hash, state.size, state.root)


def _consistent(uow: UnitOfWork, m: int, m_root: bytes, n: int, n_root: bytes) -> bool:
    """Is the tree of m leaves with m_root a prefix of the stored tree of n with n_root?"""
    if n < m:
        return False
    try:
        proof = consistency_path(m, n, TiledTree(uow.audit.nodes))
    except ValueError:  # a position without a leaf: entries deleted
        return False
    return verify_consistency(m, n, proof, m_root, n_root)


def checkpoint(
    uow_factory: UnitOfWorkFactory,
    signer: Signer,
    clock: Clock,
    *,
    every: timedelta | None = CHECKPOINT_EVERY,
    memory: CheckpointMemory | None = None,
) -> LogCheckpointRow | None:
    """Sign the tree as it stands, when it grew since the last checkpoint and (with `every`)
    that one is older than `every`; None when there was nothing to sign. The checkpoint names
    its predecessor (the newest stored one) and the untagged entries at the tree's start.
    With `memory`, nothing is signed over a tree that does not extend the newest checkpoint
    this hub signed or verified (CheckpointMemory)."""
    with uow_factory() as uow:
        state = uow.audit.log_state(lock=True)
        last = uow.audit.latest_checkpoint()
        now = clock.now()
        if memory is not None and memory.check(uow, state, last):
            return None
        if state.size == 0 or (last is not None and last.tree_size >= state.size):
            return None
        if every is not None and last is not None and now - last.signed_at < every:
            return None
        # The predecessor: the newest checkpoint this hub signed or verified, else the newest
        # stored one as it signs itself (a row's own columns are not evidence).
        if memory is not None and memory.newest is not None:
            previous_size, previous_root = memory.newest.tree_size, memory.newest.root_hash
        else:
            previous_size, previous_root = signed_tree(last)
        body = audit_pb2.LogCheckpoint(
            tree_size=state.size,
            root_hash=state.root,
            checkpoint_time=ts(now),
            previous_tree_size=previous_size,
            previous_root_hash=previous_root,
            untagged_entries=state.untagged_entries,
        )
        envelope = seal_message(
            signer,
            sender=HUB_CODE,
            recipient=AUDIT_RECIPIENT,
            message_id=f"checkpoint-{state.size}",
            create_time=now,
            message=body,
        )
        row = LogCheckpointRow(state.size, state.root, now, envelope.SerializeToString())
        uow.audit.add_checkpoint(row)
        uow.commit()
    if memory is not None:
        memory.newest = signed_checkpoint(envelope.key_id, body, envelope.SerializeToString())
    return row


def signed_tree(row: LogCheckpointRow | None) -> tuple[int, bytes]:
    """(size, root) a stored checkpoint signs (the row's own columns are not evidence)."""
    if row is None:
        return 0, b""
    try:
        body = audit_pb2.LogCheckpoint.FromString(
            envelope_pb2.Envelope.FromString(row.envelope).body
        )
    except DecodeError:
        return row.tree_size, row.root_hash
    return body.tree_size, body.root_hash
