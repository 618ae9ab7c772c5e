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

import logging
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from hub.crypto import audittag
from hub.crypto.audittag import TagKeys
from hub.crypto.envelope import seal_message, verify_envelope
from hub.domain.auditleaf import LEAF_FORMAT, leaf_bytes, leaf_of, micros, payload_digest
from hub.domain.institutions import HUB_CODE
from hub.domain.merkle import CompactRange
from hub.service import audittags
from hub.service.ports import (
    AuditRecord,
    Clock,
    LeafChunk,
    LeafFields,
    LeafMismatch,
    LogCheckpointRow,
    LoggedRecord,
    LogState,
    Signer,
    TagProblem,
    UnitOfWork,
    UnitOfWorkFactory,
)
from hub.service.wire import ts
from stophub.v1 import audit_pb2, envelope_pb2

log = logging.getLogger(__name__)

__all__ = ["LEAF_FORMAT", "entry_leaf", "leaf_data", "verify", "verify_chunks", "verify_store"]

SEQUENCE_BATCH = 2000
# A checkpoint is signed when the tree grew and the last is older than this, and on request.
CHECKPOINT_EVERY = timedelta(minutes=1)
# The recipient of a checkpoint: everyone who audits the hub.
AUDIT_RECIPIENT = "AUDIT"
MAX_MOVES = 1000


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

    # changed | removed | inserted | moved | forged | unreadable | checkpoint | unsequenced
    what: str
    detail: str
    entry_id: int | None = None
    log_index: int | None = None


@dataclass
class Verification:
    entries: int = 0
    checkpoints: int = 0
    tree_size: int = 0
    root: bytes = b""
    # Entries the sequencer placed while the check ran (a live hub): judged by the next one.
    placed_during: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not [f for f in self.findings if f.what != "unsequenced"]


CHUNK = 50_000


def chunk_records(
    records: Iterable[LoggedRecord],
    size: int = CHUNK,
    *,
    tag_keys: TagKeys | None = None,
) -> Iterator[LeafChunk]:
    """Records (an export, a test's rows) as the chunks `verify_chunks` takes; each entry's
    tag checked with `tag_keys` (None: not checked, for an export read without the data
    keys)."""
    batch: list[LoggedRecord] = []
    for logged in records:
        batch.append(logged)
        if len(batch) == size:
            yield _chunk(batch, tag_keys)
            batch = []
    if batch:
        yield _chunk(batch, tag_keys)


def _chunk(batch: Sequence[LoggedRecord], tag_keys: TagKeys | None = None) -> LeafChunk:
    ids, indexes, leaves = array("q"), array("q"), bytearray()
    mismatched = []
    forged: list[TagProblem] = []
    untagged: list[int] = []
    for position, logged in enumerate(batch):
        record = logged.record
        ids.append(record.entry_id)
        fields = _fields(record)
        if tag_keys is not None:
            if record.refused_at is not None:
                forged.append(TagProblem(position, audittag.refused(record.refused_at)))
            elif audittags.is_untagged(record):
                untagged.append(position)
            else:
                problem = tag_keys.problem(record.tag_key, record.tag, *fields)
                if problem:
                    forged.append(TagProblem(position, problem))
        if logged.log_index is None:
            indexes.append(-1)
            leaves += bytes(32)
            continue
        leaf = leaf_of(logged.log_index, *fields)
        indexes.append(logged.log_index)
        leaves += leaf
        if leaf != logged.leaf_hash:
            mismatched.append(LeafMismatch(position, logged.leaf_hash, fields))
    return LeafChunk(ids, indexes, bytes(leaves), mismatched, forged, untagged)


def verify(
    records: Iterable[LoggedRecord],
    checkpoints: Sequence[LogCheckpointRow],
    state: LogState,
    hub_keys: Callable[[str], bytes | None],
    *,
    untagged_entries: int | None = None,
    tag_keys: TagKeys | None = audittag.KEYS,
) -> Verification:
    """Check every entry against its leaf and place, its tag (with `tag_keys`: by default
    the process's data keyring; None for an export, read without the data keys), every
    checkpoint's signature and its root against the tree the entries make now, and the state
    row. `records` in id order, read in one snapshot with `checkpoints` and `state`;
    `hub_keys(key_id)` is the hub's public key of that id (the registry's, any state).
    `untagged_entries`: how many positions at the start of the tree may hold entries without
    a tag (None: the state row's count)."""
    return verify_chunks(
        chunk_records(records, tag_keys=tag_keys),
        checkpoints,
        state,
        lambda: state,
        hub_keys,
        untagged_entries=untagged_entries,
    )


def verify_chunks(
    chunks: Iterable[LeafChunk],
    checkpoints: Sequence[LogCheckpointRow],
    before: LogState,
    read_after: Callable[[], LogState],
    hub_keys: Callable[[str], bytes | None],
    *,
    untagged_entries: int | None = None,
) -> Verification:
    """`verify` over entries read in chunks, perhaps by several processes while a hub goes on
    sequencing: `before` is the state row read with `checkpoints` before the first chunk,
    `read_after()` reads it again after the last. Every entry placed before the check began
    is judged; those placed since (positions `before.size` on, below the size `read_after`
    finds) are counted and left to the next check: a chunk read early may not have seen
    them."""
    result = Verification()
    settled = before.size
    owner = array("q")  # the entry id at each position, -1 where none
    leaves = bytearray()  # the leaf each position's content makes now, 32 bytes each
    wrong: dict[int, tuple[int, LeafMismatch]] = {}
    # The tree is folded while chunks arrive, as far as the positions are filled without a
    # gap; past a gap (entries out of order: tampering) it waits for the last chunk.
    fold = _Fold(checkpoints, settled, hub_keys, result)
    tags = audittags.TagCheck(before, untagged_entries)
    for chunk in chunks:
        count = len(chunk.ids)
        result.entries += count
        start = len(owner)
        indexes = chunk.indexes
        if count and indexes[0] == start and indexes == array("q", range(start, start + count)):
            owner.extend(chunk.ids)
            leaves += chunk.leaves
        else:
            _place_one_by_one(chunk, owner, leaves, result)
            # It may leave holes a later chunk fills: the fold waits for the last chunk.
            fold.gap = True
        for m in chunk.mismatched:
            index, entry_id = indexes[m.position], chunk.ids[m.position]
            if owner[index] == entry_id:
                wrong[index] = (entry_id, m)
        tags.check(chunk)
        fold.advance(owner, leaves)
    _tag_findings(tags, result)
    size = len(owner)
    after = read_after()
    _explain(wrong, result)
    holes = owner.count(-1)
    if holes:
        for index in range(min(size, settled)):
            if owner[index] == -1:
                result.findings.append(
                    Finding("removed", f"no entry at position {index}", None, index)
                )
    if size > after.size:
        result.findings.append(
            Finding(
                "inserted",
                f"entries at positions {after.size}..{size - 1}, past the tree's size "
                f"{after.size} that the sequencer recorded",
                owner[size - 1] if owner[size - 1] != -1 else None,
                size - 1,
            )
        )
    result.placed_during = max(0, min(size, after.size) - settled)
    fold.finish(owner, leaves)
    for cp in checkpoints:
        if settled >= cp.tree_size > size:
            result.findings.append(
                Finding(
                    "removed",
                    f"the hub signed a tree of {cp.tree_size} entries at "
                    f"{cp.signed_at.isoformat()}; only {size} are placed now",
                    None,
                    cp.tree_size - 1,
                )
            )
    result.tree_size, result.root = fold.tree.size, fold.tree.root()
    if (result.tree_size, result.root) != (before.size, before.root) and result.ok:
        result.findings.append(
            Finding(
                "checkpoint",
                f"the state row says {before.size} entries with root {before.root.hex()}, the "
                f"entries make {result.tree_size} with root {result.root.hex()}",
            )
        )
    return result


def _tag_findings(tags: audittags.TagCheck, result: Verification) -> None:
    result.findings += (Finding("forged", f.detail, f.entry_id, f.log_index) for f in tags.forged)
    if tags.unplaced:  # a refused or forged entry is not waiting for its place
        result.findings = [
            f
            for f in result.findings
            if not (f.what == "unsequenced" and f.entry_id in tags.unplaced)
        ]


def _place_one_by_one(
    chunk: LeafChunk, owner: array[int], leaves: bytearray, result: Verification
) -> None:
    for position, (entry_id, index) in enumerate(zip(chunk.ids, chunk.indexes, strict=True)):
        if index < 0:
            result.findings.append(
                Finding(
                    "unsequenced",
                    "not in the tree yet (the sequencer places entries after they commit)",
                    entry_id,
                )
            )
            continue
        if index >= len(owner):
            grow = index + 1 - len(owner)
            owner.extend([-1] * grow)
            leaves += bytes(32 * grow)
        elif owner[index] != -1:
            result.findings.append(
                Finding(
                    "inserted",
                    f"a second entry at position {index} (the first is entry {owner[index]})",
                    entry_id,
                    index,
                )
            )
            continue
        owner[index] = entry_id
        leaves[32 * index : 32 * index + 32] = chunk.leaves[32 * position : 32 * position + 32]


class _Fold:
    """The tree the entries make now, compared with every signed checkpoint along the way."""

    def __init__(
        self,
        checkpoints: Sequence[LogCheckpointRow],
        settled: int,
        hub_keys: Callable[[str], bytes | None],
        result: Verification,
    ) -> None:
        self.tree = CompactRange()
        self.settled = settled
        self.result = result
        self.stops = sorted({cp.tree_size for cp in checkpoints if cp.tree_size <= settled})
        self.by_size = {cp.tree_size: cp for cp in checkpoints}
        self.last_good = 0
        self.gap = False
        for signed in checkpoints:
            _check_signature(signed, hub_keys, result)

    def advance(self, owner: array[int], leaves: bytearray) -> None:
        """Fold what the chunks so far placed, while they came in order without a gap."""
        if not self.gap:
            self._to(min(len(owner), self.settled), leaves)

    def finish(self, owner: array[int], leaves: bytearray) -> None:
        # A removed entry's place holds no leaf: the tree goes on with a zero one, so the
        # checkpoints after it fail too.
        self._to(min(len(owner), self.settled), leaves)

    def _to(self, end: int, leaves: bytearray) -> None:
        tree = self.tree
        while tree.size < end:
            stop = next((s for s in self.stops if s > tree.size), end)
            upto = min(stop, end)
            tree.extend_packed(leaves, tree.size, upto)
            cp = self.by_size.get(tree.size)
            if cp is not None and tree.size == upto:
                self._compare(cp)

    def _compare(self, cp: LogCheckpointRow) -> None:
        self.result.checkpoints += 1
        if self.tree.root() != cp.root_hash:
            self.result.findings.append(
                Finding(
                    "checkpoint",
                    f"the first {cp.tree_size} entries no longer make the root the hub "
                    f"signed at {cp.signed_at.isoformat()}: an entry after position "
                    f"{self.last_good} and before {cp.tree_size} was changed, removed, "
                    "inserted or moved",
                    None,
                    cp.tree_size - 1,
                )
            )
        else:
            self.last_good = cp.tree_size


def _explain(wrong: dict[int, tuple[int, LeafMismatch]], result: Verification) -> None:
    """A leaf that differs is a changed entry, or a moved one when its own stored leaf is what
    its content makes at another such position (positions swapped or shifted)."""
    # Matching every pair costs a hash each: beyond this many, each is reported as changed.
    search = sorted(wrong) if len(wrong) <= MAX_MOVES else []
    for index in sorted(wrong):
        entry_id, m = wrong[index]
        if m.unreadable:
            result.findings.append(
                Finding(
                    "unreadable",
                    f"entry {entry_id} at position {index} cannot be opened: {m.unreadable}",
                    entry_id,
                    index,
                )
            )
            continue
        home = next(
            (j for j in search if j != index and leaf_of(j, *m.fields) == m.stored),
            None,
        )
        if home is not None:
            result.findings.append(
                Finding(
                    "moved",
                    f"entry {entry_id} is at position {index}, but its leaf was made for "
                    f"position {home}",
                    entry_id,
                    index,
                )
            )
        else:
            result.findings.append(
                Finding(
                    "changed",
                    f"entry {entry_id} at position {index} no longer hashes to its leaf: its "
                    "content was changed after it was logged",
                    entry_id,
                    index,
                )
            )


def checkpoint_problem(cp: LogCheckpointRow, hub_keys: Callable[[str], bytes | None]) -> str:
    """What is wrong with a stored checkpoint's signature or its agreement with its row, or ""
    when the hub's key `hub_keys(key_id)` verifies it (`audit verify`, the SLA report)."""
    envelope = envelope_pb2.Envelope.FromString(cp.envelope)
    key = hub_keys(envelope.key_id)
    body = audit_pb2.LogCheckpoint.FromString(envelope.body)
    if envelope.sender != HUB_CODE or key is None:
        return f"signed by {envelope.sender}/{envelope.key_id}, not a key of the hub"
    if not verify_envelope(envelope, key):
        return "its signature does not verify"
    if (body.tree_size, body.root_hash) != (cp.tree_size, cp.root_hash):
        return (
            f"the row says {cp.tree_size} entries / {cp.root_hash.hex()}, the signed "
            f"checkpoint {body.tree_size} / {body.root_hash.hex()}"
        )
    return ""


def _check_signature(
    cp: LogCheckpointRow, hub_keys: Callable[[str], bytes | None], result: Verification
) -> None:
    problem = checkpoint_problem(cp, hub_keys)
    if problem:
        result.findings.append(
            Finding("checkpoint", f"checkpoint of {cp.tree_size} entries: {problem}")
        )


def verify_store(
    uow_factory: UnitOfWorkFactory,
    hub_keys: Callable[[str], bytes | None],
    scan: Callable[[], Iterable[LeafChunk]] | None = None,
    *,
    untagged_entries: int | None = None,
) -> Verification:
    """`verify` over a whole database. `scan` reads the entries as chunks (the store's
    parallel raw scan, `SqlStore.scan_audit`), while a hub may go on sequencing; without it,
    they are read through the unit of work in one snapshot. `untagged_entries` as `verify`
    takes it."""
    if scan is None:
        with uow_factory(read_only=True) as uow:
            return verify(
                read_all(uow),
                uow.audit.checkpoints(),
                uow.audit.log_state(),
                hub_keys,
                untagged_entries=untagged_entries,
            )
    with uow_factory(read_only=True) as uow:
        before, checkpoints = uow.audit.log_state(), list(uow.audit.checkpoints())

    def after() -> LogState:
        with uow_factory(read_only=True) as uow:
            return uow.audit.log_state()

    return verify_chunks(
        scan(), checkpoints, before, after, hub_keys, untagged_entries=untagged_entries
    )


def read_all(uow: UnitOfWork, page: int = 5000) -> Iterator[LoggedRecord]:
    after = 0
    while True:
        rows = uow.audit.logged(after, page)
        yield from rows
        if len(rows) < page:
            return
        after = rows[-1].record.entry_id
