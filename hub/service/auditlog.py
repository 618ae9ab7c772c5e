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
from bisect import bisect_right
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from google.protobuf.message import DecodeError

from hub.crypto.checkpoint import CheckpointError, SignedCheckpoint, open_checkpoint
from hub.crypto.envelope import seal_message
from hub.domain.auditleaf import LEAF_FORMAT, leaf_bytes, leaf_of, micros, payload_digest
from hub.domain.institutions import HUB_CODE
from hub.domain.merkle import CompactRange, TiledTree, consistency_path, verify_consistency
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
            completed: list[tuple[int, int, bytes]] = []
            for record in records:
                leaf = entry_leaf(tree.size, record)
                places.append((record.entry_id, tree.size, leaf))
                tree.append(leaf, completed)
            uow.audit.assign(places)
            uow.audit.add_nodes(completed)
            uow.audit.set_log_state(LogState(tree.size, tree.root(), b"".join(tree.nodes)))
            uow.commit()
        placed += len(records)
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

    def check(self, uow: UnitOfWork, state: LogState, done: Sequence[LogCheckpointRow]) -> str:
        """ "" when the database's tree extends what this hub last signed or verified (and it
        then remembers the newest stored checkpoint it can verify); else what is wrong."""
        # Asked every run of the sequencer (twice a second): proved again only when the tree,
        # the stored checkpoints or the remembered one changed.
        seen = (
            state.size,
            state.root,
            len(done),
            done[-1].tree_size if done else 0,
            self.newest.tree_size if self.newest else 0,
        )
        if seen == self._seen:
            return self.problem
        problem = self._problem(uow, state, done)
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

    def _problem(self, uow: UnitOfWork, state: LogState, done: Sequence[LogCheckpointRow]) -> str:
        known = self.newest
        if known is not None and not any(
            (c.tree_size, c.root_hash) == (known.tree_size, known.root_hash) for c in done
        ):
            return self._forked(state, known, "its row is gone from audit_checkpoints")
        newest = done[-1] if done else None
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
        done = uow.audit.checkpoints()
        last = done[-1] if done else None
        now = clock.now()
        if memory is not None and memory.check(uow, state, done):
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
            previous_size, previous_root = _signed_tree(last)
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
        memory.newest = _as_signed(envelope, body)
    return row


def _signed_tree(row: LogCheckpointRow | None) -> tuple[int, bytes]:
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


def _as_signed(envelope: envelope_pb2.Envelope, body: audit_pb2.LogCheckpoint) -> SignedCheckpoint:
    return SignedCheckpoint(
        tree_size=body.tree_size,
        root_hash=body.root_hash,
        checkpoint_time=body.checkpoint_time.ToDatetime(tzinfo=UTC),
        previous_tree_size=body.previous_tree_size,
        previous_root_hash=body.previous_root_hash,
        untagged_entries=body.untagged_entries,
        key_id=envelope.key_id,
        envelope=envelope.SerializeToString(),
    )


# ---- verification ------------------------------------------------------------------------------


@dataclass
class Finding:
    """One thing wrong with the log, with the entry or checkpoint it concerns."""

    # changed | removed | inserted | moved | forged | unreadable | rollback | fork |
    # checkpoint_missing | checkpoint | endorsement | unsequenced (the last is no problem)
    what: str
    detail: str
    entry_id: int | None = None
    log_index: int | None = None


@dataclass(frozen=True)
class KeptCheckpoint:
    """A checkpoint the auditor kept from an earlier check (--trusted-checkpoint), already
    verified with the auditor's hub keys, and where it came from."""

    source: str
    checkpoint: SignedCheckpoint


@dataclass
class KeptOutcome:
    """What the tree now says of a kept checkpoint: consistent (the tree still holds it and
    grew only by appending), rollback (the tree is smaller: truncated or restored from an
    older copy) or fork (the first tree_size entries make another root)."""

    source: str
    tree_size: int
    root: bytes
    outcome: str


@dataclass
class Verification:
    entries: int = 0
    # Signed checkpoints whose signature (under a trusted key) and root held.
    checkpoints: int = 0
    # Stored checkpoints that failed: untrusted or bad signature, root or size that no
    # longer fits.
    checkpoints_failed: int = 0
    tree_size: int = 0
    root: bytes = b""
    # Entries the sequencer placed while the check ran (a live hub): judged by the next one.
    placed_during: int = 0
    # Placed entries after the newest verified checkpoint: no signature covers them yet.
    uncovered: int = 0
    kept: list[KeptOutcome] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not [f for f in self.findings if f.what != "unsequenced"]


# The newest checkpoint may lag the tree's growth by the schedule (a minute) and this much
# more before its absence is a finding: a hub busy, restarting or waiting for its database.
CHECKPOINT_GRACE = timedelta(minutes=2)
# When the times of these positions are wanted: (position -> recorded_at) for those placed.
EntryTimes = Callable[[Collection[int]], Mapping[int, datetime]]


CHUNK = 50_000


def chunk_records(records: Iterable[LoggedRecord], size: int = CHUNK) -> Iterator[LeafChunk]:
    """Records (an export, a test's rows) as the chunks `verify_chunks` takes."""
    batch: list[LoggedRecord] = []
    for logged in records:
        batch.append(logged)
        if len(batch) == size:
            yield _chunk(batch)
            batch = []
    if batch:
        yield _chunk(batch)


def _chunk(batch: Sequence[LoggedRecord]) -> LeafChunk:
    ids, indexes, leaves = array("q"), array("q"), bytearray()
    mismatched = []
    for position, logged in enumerate(batch):
        ids.append(logged.record.entry_id)
        if logged.log_index is None:
            indexes.append(-1)
            leaves += bytes(32)
            continue
        fields = _fields(logged.record)
        leaf = leaf_of(logged.log_index, *fields)
        indexes.append(logged.log_index)
        leaves += leaf
        if leaf != logged.leaf_hash:
            mismatched.append(LeafMismatch(position, logged.leaf_hash, fields))
    return LeafChunk(ids, indexes, bytes(leaves), mismatched)


def verify(
    records: Iterable[LoggedRecord],
    checkpoints: Sequence[LogCheckpointRow],
    state: LogState,
    hub_keys: Callable[[str], bytes | None],
    *,
    kept: Sequence[KeptCheckpoint] = (),
) -> Verification:
    """Check every entry against its leaf and place, every checkpoint's signature and its root
    against the tree the entries make now, and the state row. `records` in id order, read in
    one snapshot with `checkpoints` and `state`; `hub_keys(key_id)` is a hub public key the
    auditor trusts (given, or endorsed from one given: hub.service.trust), never merely one
    a registry lists; `kept` the checkpoints the auditor kept."""
    wanted = _positions_timed(checkpoints, state, kept)
    seen: dict[int, datetime] = {}

    def watched() -> Iterator[LoggedRecord]:
        for logged in records:
            if logged.log_index in wanted:
                seen[logged.log_index] = logged.record.recorded_at
            yield logged

    return verify_chunks(
        chunk_records(watched()),
        checkpoints,
        state,
        lambda: state,
        hub_keys,
        kept=kept,
        times=lambda _positions: seen,
    )


def _positions_timed(
    checkpoints: Sequence[LogCheckpointRow], state: LogState, kept: Sequence[KeptCheckpoint]
) -> set[int]:
    """Every position whose time the schedule rule may ask for (see _Fold.schedule)."""
    sizes = {0, state.size - 1, *(k.checkpoint.tree_size for k in kept)}
    for row in checkpoints:
        sizes |= {row.tree_size, _signed_tree(row)[0]}
    return sizes


def verify_chunks(
    chunks: Iterable[LeafChunk],
    checkpoints: Sequence[LogCheckpointRow],
    before: LogState,
    read_after: Callable[[], LogState],
    hub_keys: Callable[[str], bytes | None],
    *,
    kept: Sequence[KeptCheckpoint] = (),
    times: EntryTimes | None = None,
) -> Verification:
    """`verify` over entries read in chunks, perhaps by several processes while a hub goes on
    sequencing: `before` is the state row read with `checkpoints` before the first chunk,
    `read_after()` reads it again after the last. Every entry placed before the check began
    is judged; those placed since (positions `before.size` on, below the size `read_after`
    finds) are counted and left to the next check: a chunk read early may not have seen
    them. `times` reads when the entries at some positions were recorded (the schedule
    rule: checkpoints at least every minute the tree grew)."""
    result = Verification()
    settled = before.size
    owner = array("q")  # the entry id at each position, -1 where none
    leaves = bytearray()  # the leaf each position's content makes now, 32 bytes each
    wrong: dict[int, tuple[int, LeafMismatch]] = {}
    # The tree is folded while chunks arrive, as far as the positions are filled without a
    # gap; past a gap (entries out of order: tampering) it waits for the last chunk.
    fold = _Fold(checkpoints, settled, hub_keys, result, kept)
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
        fold.advance(owner, leaves)
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
    fold.judge(before, size, times)
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
    """The tree the entries make now, compared with every signed and every kept checkpoint
    along the way; then what the checkpoints say of each other and of the state row."""

    def __init__(
        self,
        checkpoints: Sequence[LogCheckpointRow],
        settled: int,
        hub_keys: Callable[[str], bytes | None],
        result: Verification,
        kept: Sequence[KeptCheckpoint] = (),
    ) -> None:
        self.tree = CompactRange()
        self.settled = settled
        self.result = result
        self.last_good = 0
        self.verified = 0  # the largest checkpoint whose root the entries still make
        self.gap = False
        # Only checkpoints whose signature verifies under a trusted key count, by the size
        # and root they sign (a row's own columns are not evidence).
        self.signed: list[SignedCheckpoint] = []
        for row in checkpoints:
            opened = _open_row(row, hub_keys)
            if isinstance(opened, str):
                result.checkpoints_failed += 1
                result.findings.append(
                    Finding(
                        "checkpoint",
                        f"checkpoint of {row.tree_size} entries: {opened}",
                        None,
                        row.tree_size - 1 if row.tree_size > 0 else None,
                    )
                )
            else:
                self.signed.append(opened)
        self.kept = list(kept)
        self.outcomes: dict[int, str] = {}  # index in kept -> outcome
        # By size: a year of checkpoints (one a minute) is half a million stops.
        self.signed_at: dict[int, list[SignedCheckpoint]] = {}
        for cp in self.signed:
            self.signed_at.setdefault(cp.tree_size, []).append(cp)
        self.kept_at: dict[int, list[int]] = {}
        for i, k in enumerate(self.kept):
            self.kept_at.setdefault(k.checkpoint.tree_size, []).append(i)
        self.stops = sorted(s for s in {*self.signed_at, *self.kept_at} if s <= settled)

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
            i = bisect_right(self.stops, tree.size)
            upto = min(self.stops[i], end) if i < len(self.stops) else end
            tree.extend_packed(leaves, tree.size, upto)
            if i < len(self.stops) and upto == self.stops[i]:
                self._compare(upto)

    def _compare(self, size: int) -> None:
        root = self.tree.root()
        for cp in self.signed_at.get(size, ()):
            if root == cp.root_hash:
                self.result.checkpoints += 1
                self.last_good = size
                self.verified = max(self.verified, size)
                continue
            self.result.checkpoints_failed += 1
            self.result.findings.append(
                Finding(
                    "checkpoint",
                    f"the first {size} entries no longer make the root the hub signed at "
                    f"{cp.checkpoint_time.isoformat()}: an entry after position "
                    f"{self.last_good} and before {size} was changed, removed, inserted or "
                    "moved",
                    None,
                    size - 1,
                )
            )
        for i in self.kept_at.get(size, ()):
            k = self.kept[i]
            if root == k.checkpoint.root_hash:
                self.outcomes[i] = "consistent"
                continue
            self.outcomes[i] = "fork"
            self.result.findings.append(
                Finding(
                    "fork",
                    f"the checkpoint you kept ({k.source}) says the first {size} entries make "
                    f"root {k.checkpoint.root_hash.hex()}; they make {root.hex()} now: the log "
                    "was rewritten or rolled back and extended with other entries",
                    None,
                    size - 1,
                )
            )

    def judge(self, before: LogState, size: int, times: EntryTimes | None) -> None:
        """Everything the checkpoints say beyond their roots: one larger than the tree, a
        kept one the tree does not reach or the database lacks, a predecessor deleted, a
        state row they contradict, a newest one too old for the tree's growth, the untagged
        prefix they disagree on."""
        result = self.result
        placed = min(size, self.settled)
        for cp in self.signed:
            if cp.tree_size > before.size:
                result.checkpoints_failed += 1
                result.findings.append(
                    Finding(
                        "rollback",
                        f"the hub signed a tree of {cp.tree_size} entries at "
                        f"{cp.checkpoint_time.isoformat()}; the state row says {before.size}: "
                        "the log was truncated or rolled back",
                        None,
                        cp.tree_size - 1,
                    )
                )
            elif cp.tree_size > size:
                result.checkpoints_failed += 1
                result.findings.append(
                    Finding(
                        "removed",
                        f"the hub signed a tree of {cp.tree_size} entries at "
                        f"{cp.checkpoint_time.isoformat()}; only {size} are placed now",
                        None,
                        cp.tree_size - 1,
                    )
                )
            elif cp.tree_size == before.size and cp.root_hash != before.root:
                result.findings.append(
                    Finding(
                        "checkpoint",
                        f"the state row says root {before.root.hex()} for {before.size} "
                        f"entries; the hub signed {cp.root_hash.hex()} at "
                        f"{cp.checkpoint_time.isoformat()}",
                    )
                )
        stored = {(c.tree_size, c.root_hash) for c in self.signed}
        for i, k in enumerate(self.kept):
            cp = k.checkpoint
            outcome = self.outcomes.get(i)
            if outcome is None:
                outcome = "rollback"
                result.findings.append(
                    Finding(
                        "rollback",
                        f"the checkpoint you kept ({k.source}) signs {cp.tree_size} entries; "
                        f"the log now holds {placed}: it was truncated or rolled back to an "
                        "earlier copy",
                        None,
                        cp.tree_size - 1,
                    )
                )
            elif outcome == "consistent" and (cp.tree_size, cp.root_hash) not in stored:
                result.findings.append(
                    Finding(
                        "checkpoint_missing",
                        f"the checkpoint of {cp.tree_size} entries you kept ({k.source}) is "
                        "not in the database's audit_checkpoints: it was deleted",
                        None,
                        cp.tree_size - 1,
                    )
                )
            result.kept.append(KeptOutcome(k.source, cp.tree_size, cp.root_hash, outcome))
        self._predecessors(stored)
        self._untagged()
        verified = [c for c in self.signed if c.tree_size <= placed]
        newest = max(verified, key=lambda c: c.tree_size, default=None)
        covered = newest.tree_size if newest is not None else 0
        result.uncovered = max(0, placed - self.verified)
        if times is not None and covered < placed:
            self._schedule(newest, covered, placed, times)

    def _predecessors(self, stored: set[tuple[int, bytes]]) -> None:
        known = stored | {(k.checkpoint.tree_size, k.checkpoint.root_hash) for k in self.kept}
        named: set[int] = set()
        for cp in sorted([*self.signed, *(k.checkpoint for k in self.kept)], key=_size):
            previous = (cp.previous_tree_size, cp.previous_root_hash)
            if cp.previous_tree_size == 0 or previous in known or previous[0] in named:
                continue
            named.add(previous[0])
            self.result.findings.append(
                Finding(
                    "checkpoint_missing",
                    f"the checkpoint of {cp.tree_size} entries signed at "
                    f"{cp.checkpoint_time.isoformat()} follows one of {previous[0]} entries "
                    f"(root {previous[1].hex()}), which is not in the database: it was deleted",
                    None,
                    previous[0] - 1,
                )
            )

    def _untagged(self) -> None:
        """Once the tree is past its untagged prefix, every checkpoint signs the same one.
        A checkpoint older than the prefix was signed (revision 0015) names no predecessor
        and no prefix: it is not compared."""
        signing = [
            c
            for c in sorted(self.signed, key=_size)
            if c.previous_tree_size or (c.untagged_entries)
        ]
        for earlier, later in pairwise(signing):
            if (
                earlier.tree_size > earlier.untagged_entries
                and later.untagged_entries != earlier.untagged_entries
            ):
                self.result.findings.append(
                    Finding(
                        "checkpoint",
                        f"the checkpoint of {later.tree_size} entries says the first "
                        f"{later.untagged_entries} are untagged; the one of "
                        f"{earlier.tree_size} said {earlier.untagged_entries}",
                        None,
                        later.tree_size - 1,
                    )
                )

    def _schedule(
        self, newest: SignedCheckpoint | None, covered: int, placed: int, times: EntryTimes
    ) -> None:
        """The hub signs a checkpoint at least every minute the tree grew: entries recorded
        well after the newest checkpoint's minute and still not under it mean checkpoints
        were deleted (or the hub stopped signing)."""
        found = times({covered, placed - 1})
        first, last = found.get(covered), found.get(placed - 1)
        if first is None or last is None:
            return
        start = first if newest is None else max(first, newest.checkpoint_time + CHECKPOINT_EVERY)
        if last - start <= CHECKPOINT_GRACE:
            return
        since = (
            f"the newest signed checkpoint ({newest.tree_size} entries) is of "
            f"{newest.checkpoint_time.isoformat()}"
            if newest is not None
            else "no signed checkpoint covers any entry"
        )
        self.result.findings.append(
            Finding(
                "checkpoint_missing",
                f"entries at positions {covered}..{placed - 1} were recorded from "
                f"{first.isoformat()} to {last.isoformat()}, but {since}: the hub signs one "
                "at least every minute the tree grows, so later checkpoints were deleted (or "
                "the hub stopped signing)",
                None,
                covered,
            )
        )


def _size(cp: SignedCheckpoint) -> int:
    return cp.tree_size


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


def signed_untagged(
    checkpoints: Sequence[LogCheckpointRow], hub_keys: Callable[[str], bytes | None]
) -> int | None:
    """How many untagged entries the newest checkpoint under a trusted key signs (what a
    verification should allow, rather than the state row's own figure), None when no stored
    checkpoint verifies or the newest that does predates the prefix (revision 0015)."""
    for row in reversed(checkpoints):
        opened = _open_row(row, hub_keys)
        if not isinstance(opened, str):
            if opened.previous_tree_size or opened.untagged_entries:
                return opened.untagged_entries
            return None
    return None


def checkpoint_problem(cp: LogCheckpointRow, hub_keys: Callable[[str], bytes | None]) -> str:
    """What is wrong with a stored checkpoint's signature or its agreement with its row, or ""
    when a hub key `hub_keys(key_id)` verifies it (`audit verify`, the SLA report)."""
    opened = _open_row(cp, hub_keys)
    return opened if isinstance(opened, str) else ""


def _open_row(
    cp: LogCheckpointRow, hub_keys: Callable[[str], bytes | None]
) -> SignedCheckpoint | str:
    """The checkpoint a stored row holds, or what keeps it from counting."""
    try:
        signed = open_checkpoint(cp.envelope, hub_keys)
    except CheckpointError as e:
        return str(e)
    if (signed.tree_size, signed.root_hash) != (cp.tree_size, cp.root_hash):
        return (
            f"the row says {cp.tree_size} entries / {cp.root_hash.hex()}, the signed "
            f"checkpoint {signed.tree_size} / {signed.root_hash.hex()}"
        )
    return signed


def verify_store(
    uow_factory: UnitOfWorkFactory,
    hub_keys: Callable[[str], bytes | None],
    scan: Callable[[], Iterable[LeafChunk]] | None = None,
    *,
    kept: Sequence[KeptCheckpoint] = (),
) -> Verification:
    """`verify` over a whole database. `scan` reads the entries as chunks (the store's
    parallel raw scan, `SqlStore.scan_audit`), while a hub may go on sequencing; without it,
    they are read through the unit of work in one snapshot."""
    if scan is None:
        with uow_factory(read_only=True) as uow:
            return verify(
                read_all(uow),
                uow.audit.checkpoints(),
                uow.audit.log_state(),
                hub_keys,
                kept=kept,
            )
    with uow_factory(read_only=True) as uow:
        before, checkpoints = uow.audit.log_state(), list(uow.audit.checkpoints())

    def after() -> LogState:
        with uow_factory(read_only=True) as uow:
            return uow.audit.log_state()

    def times(positions: Collection[int]) -> Mapping[int, datetime]:
        with uow_factory(read_only=True) as uow:
            return uow.audit.recorded_times(positions)

    return verify_chunks(scan(), checkpoints, before, after, hub_keys, kept=kept, times=times)


def read_all(uow: UnitOfWork, page: int = 5000) -> Iterator[LoggedRecord]:
    after = 0
    while True:
        rows = uow.audit.logged(after, page)
        yield from rows
        if len(rows) < page:
            return
        after = rows[-1].record.entry_id
