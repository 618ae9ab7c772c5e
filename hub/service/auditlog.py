"""The audit log as a Merkle tree (issue 8, ADR 15, docs/audit.md): the sequencer that gives
each committed entry its place, the hub-signed checkpoints, and the offline verification that
names any entry changed, removed, inserted or moved.

Entries are written in the transactions of the commands they record, on any hub; their ids
come from the database and commit out of order across transactions. So an entry does not
take its place as it is written: after it commits, the sequencer (one at a time, under the
lock of the log's state row) appends it to the tree in id order. Its leaf binds its place,
its id and its content in clear, so re-encrypting the database changes no leaf, and an
export verifies without the data keys.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from hub.crypto.envelope import seal_message, verify_envelope
from hub.domain.blacklist import micros
from hub.domain.institutions import HUB_CODE
from hub.domain.merkle import CompactRange, leaf_hash
from hub.service.ports import (
    AuditRecord,
    Clock,
    LogCheckpointRow,
    LoggedRecord,
    LogState,
    Signer,
    UnitOfWork,
    UnitOfWorkFactory,
)
from hub.service.wire import ts
from stophub.v1 import audit_pb2, envelope_pb2

log = logging.getLogger(__name__)

LEAF_FORMAT = "stophub-audit/1"
SEQUENCE_BATCH = 2000
# A checkpoint is signed when the tree grew and the last is older than this, and on request.
CHECKPOINT_EVERY = timedelta(minutes=1)
# The recipient of a checkpoint: everyone who audits the hub.
AUDIT_RECIPIENT = "AUDIT"
MAX_MOVES = 1000


def leaf_data(index: int, record: AuditRecord) -> bytes:
    """The bytes a leaf hashes (docs/audit.md): each field length-prefixed, in clear."""
    e = record.entry
    payload = hashlib.sha256(e.payload).hexdigest() if e.payload is not None else ""
    fields = (
        LEAF_FORMAT,
        str(index),
        str(record.entry_id),
        str(micros(record.recorded_at)),
        e.kind,
        e.actor,
        e.message_id,
        e.case_id or "",
        e.order_id or "",
        e.detail,
        payload,
    )
    out = bytearray()
    for f in fields:
        data = f.encode()
        out += len(data).to_bytes(4, "big") + data
    return bytes(out)


def entry_leaf(index: int, record: AuditRecord) -> bytes:
    return leaf_hash(leaf_data(index, record))


def _range_of(state: LogState) -> CompactRange:
    nodes = [state.compact_range[i : i + 32] for i in range(0, len(state.compact_range), 32)]
    return CompactRange.restore(state.size, nodes)


def sequence(uow_factory: UnitOfWorkFactory, batch: int = SEQUENCE_BATCH) -> int:
    """Give every committed entry without a place its place, in id order; returns how many."""
    placed = 0
    while True:
        with uow_factory(read_only=True) as peek:
            if not peek.audit.unsequenced(1):
                return placed
        with uow_factory() as uow:
            state = uow.audit.log_state(lock=True)
            records = uow.audit.unsequenced(batch)
            tree = _range_of(state)
            places = []
            for record in records:
                leaf = entry_leaf(tree.size, record)
                places.append((record.entry_id, tree.size, leaf))
                tree.append(leaf)
            uow.audit.assign(places)
            uow.audit.set_log_state(LogState(tree.size, tree.root(), b"".join(tree.nodes)))
            uow.commit()
        placed += len(records)
        if len(records) < batch:
            return placed


def checkpoint(
    uow_factory: UnitOfWorkFactory,
    signer: Signer,
    clock: Clock,
    *,
    every: timedelta | None = CHECKPOINT_EVERY,
) -> LogCheckpointRow | None:
    """Sign the tree as it stands, when it grew since the last checkpoint and (with `every`)
    that one is older than `every`; None when there was nothing to sign."""
    with uow_factory() as uow:
        state = uow.audit.log_state(lock=True)
        done = uow.audit.checkpoints()
        last = done[-1] if done else None
        now = clock.now()
        if state.size == 0 or (last is not None and last.tree_size >= state.size):
            return None
        if every is not None and last is not None and now - last.signed_at < every:
            return None
        body = audit_pb2.LogCheckpoint(
            tree_size=state.size, root_hash=state.root, checkpoint_time=ts(now)
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
    return row


# ---- verification ------------------------------------------------------------------------------


@dataclass
class Finding:
    """One thing wrong with the log, with the entry or checkpoint it concerns."""

    what: str  # changed | removed | inserted | moved | checkpoint | unsequenced
    detail: str
    entry_id: int | None = None
    log_index: int | None = None


@dataclass
class Verification:
    entries: int = 0
    checkpoints: int = 0
    tree_size: int = 0
    root: bytes = b""
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not [f for f in self.findings if f.what != "unsequenced"]


def verify(
    records: Iterator[LoggedRecord],
    checkpoints: Sequence[LogCheckpointRow],
    state: LogState,
    hub_keys: Callable[[str], bytes | None],
) -> Verification:
    """Check every entry against its leaf and place, every checkpoint's signature and its root
    against the tree the entries make now, and the state row. `records` in id order;
    `hub_keys(key_id)` is the hub's public key of that id (the registry's, any state)."""
    result = Verification()
    placed: dict[int, LoggedRecord] = {}
    for logged in records:
        result.entries += 1
        if logged.log_index is None:
            result.findings.append(
                Finding(
                    "unsequenced",
                    "not in the tree yet (the sequencer places entries after they commit)",
                    logged.record.entry_id,
                )
            )
            continue
        other = placed.get(logged.log_index)
        if other is not None:
            result.findings.append(
                Finding(
                    "inserted",
                    f"a second entry at position {logged.log_index} (the first is entry "
                    f"{other.record.entry_id})",
                    logged.record.entry_id,
                    logged.log_index,
                )
            )
            continue
        placed[logged.log_index] = logged
    size = max(placed, default=-1) + 1
    # Leaves as the content makes them now, place by place.
    recomputed: list[bytes | None] = [None] * size
    mismatched: list[int] = []
    for index, logged in placed.items():
        leaf = entry_leaf(index, logged.record)
        recomputed[index] = leaf
        if leaf != logged.leaf_hash:
            mismatched.append(index)
    _explain(placed, mismatched, result)
    for index in range(size):
        if index not in placed:
            result.findings.append(Finding("removed", f"no entry at position {index}", None, index))
    if size > state.size:
        result.findings.append(
            Finding(
                "inserted",
                f"entries at positions {state.size}..{size - 1}, past the tree's size "
                f"{state.size} that the sequencer recorded",
                placed[size - 1].record.entry_id if size - 1 in placed else None,
                size - 1,
            )
        )
    # The tree the entries make now, compared with every signed checkpoint along the way.
    tree = CompactRange()
    by_size = {cp.tree_size: cp for cp in checkpoints}
    last_good = 0
    for signed in checkpoints:
        _check_signature(signed, hub_keys, result)
    for index in range(size):
        # A removed entry's place holds no leaf: the tree goes on with a zero one, so the
        # checkpoints after it fail too.
        tree.append(recomputed[index] or bytes(32))
        cp = by_size.get(tree.size)
        if cp is not None:
            result.checkpoints += 1
            if tree.root() != cp.root_hash:
                result.findings.append(
                    Finding(
                        "checkpoint",
                        f"the first {cp.tree_size} entries no longer make the root the hub "
                        f"signed at {cp.signed_at.isoformat()}: an entry after position "
                        f"{last_good} and before {cp.tree_size} was changed, removed, inserted "
                        "or moved",
                        None,
                        cp.tree_size - 1,
                    )
                )
            else:
                last_good = cp.tree_size
    for cp in checkpoints:
        if cp.tree_size > size:
            result.findings.append(
                Finding(
                    "removed",
                    f"the hub signed a tree of {cp.tree_size} entries at "
                    f"{cp.signed_at.isoformat()}; only {size} are placed now",
                    None,
                    cp.tree_size - 1,
                )
            )
    result.tree_size, result.root = tree.size, tree.root()
    if (tree.size, tree.root()) != (state.size, state.root) and result.ok:
        result.findings.append(
            Finding(
                "checkpoint",
                f"the state row says {state.size} entries with root {state.root.hex()}, the "
                f"entries make {tree.size} with root {tree.root().hex()}",
            )
        )
    return result


def _explain(
    placed: dict[int, LoggedRecord], mismatched: Sequence[int], result: Verification
) -> None:
    """A leaf that differs is a changed entry, or a moved one when its own stored leaf is what
    its content makes at another such position (positions swapped or shifted)."""
    # Matching every pair costs a hash each: beyond this many, each is reported as changed.
    search = mismatched if len(mismatched) <= MAX_MOVES else ()
    for index in mismatched:
        logged = placed[index]
        home = next(
            (j for j in search if j != index and entry_leaf(j, logged.record) == logged.leaf_hash),
            None,
        )
        if home is not None:
            result.findings.append(
                Finding(
                    "moved",
                    f"entry {logged.record.entry_id} is at position {index}, but its leaf "
                    f"was made for position {home}",
                    logged.record.entry_id,
                    index,
                )
            )
        else:
            result.findings.append(
                Finding(
                    "changed",
                    f"entry {logged.record.entry_id} at position {index} no longer hashes "
                    "to its leaf: its content was changed after it was logged",
                    logged.record.entry_id,
                    index,
                )
            )


def _check_signature(
    cp: LogCheckpointRow, hub_keys: Callable[[str], bytes | None], result: Verification
) -> None:
    envelope = envelope_pb2.Envelope.FromString(cp.envelope)
    key = hub_keys(envelope.key_id)
    body = audit_pb2.LogCheckpoint.FromString(envelope.body)
    problem = ""
    if envelope.sender != HUB_CODE or key is None:
        problem = f"signed by {envelope.sender}/{envelope.key_id}, not a key of the hub"
    elif not verify_envelope(envelope, key):
        problem = "its signature does not verify"
    elif (body.tree_size, body.root_hash) != (cp.tree_size, cp.root_hash):
        problem = (
            f"the row says {cp.tree_size} entries / {cp.root_hash.hex()}, the signed "
            f"checkpoint {body.tree_size} / {body.root_hash.hex()}"
        )
    if problem:
        result.findings.append(
            Finding("checkpoint", f"checkpoint of {cp.tree_size} entries: {problem}")
        )


def verify_store(
    uow_factory: UnitOfWorkFactory, hub_keys: Callable[[str], bytes | None]
) -> Verification:
    """`verify` over a whole database, in one read transaction."""
    with uow_factory(read_only=True) as uow:
        return verify(read_all(uow), uow.audit.checkpoints(), uow.audit.log_state(), hub_keys)


def read_all(uow: UnitOfWork, page: int = 5000) -> Iterator[LoggedRecord]:
    after = 0
    while True:
        rows = uow.audit.logged(after, page)
        yield from rows
        if len(rows) < page:
            return
        after = rows[-1].record.entry_id
