"""The audit log read as evidence (issue 8, issue 21, ADR 15, 16 and 21, docs/audit.md): the
offline verification that names any entry changed, removed, inserted, moved or forged, each
checkpoint that fails or went missing, and a rollback or fork against the checkpoints an
auditor kept. hub.service.auditlog writes the log (the sequencer, the signed checkpoints);
this module only reads it, from the database's raw scan, the unit of work or an export, and
trusts only the hub keys it is given.

It is over 600 lines because the tree's fold, the checkpoint and kept-checkpoint judgements,
the schedule rule and the per-entry findings share the one pass over the entries and the
state it builds; split, each part would reach into the others' private state.
"""

from __future__ import annotations

import logging
from array import array
from bisect import bisect_right
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise

from hub.crypto import audittag
from hub.crypto.audittag import TagKeys
from hub.crypto.checkpoint import CheckpointError, SignedCheckpoint, open_checkpoint
from hub.domain.auditleaf import leaf_of
from hub.domain.merkle import CompactRange
from hub.service import audittags
from hub.service.auditlog import CHECKPOINT_EVERY, entry_fields, signed_tree
from hub.service.ports import (
    LeafChunk,
    LeafMismatch,
    LogCheckpointRow,
    LoggedRecord,
    LogState,
    TagProblem,
    UnitOfWork,
    UnitOfWorkFactory,
)

log = logging.getLogger(__name__)

MAX_MOVES = 1000


# ------------------------------------------------------------------------------


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
        fields = entry_fields(record)
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
    kept: Sequence[KeptCheckpoint] = (),
    untagged_entries: int | None = None,
    tag_keys: TagKeys | None = audittag.KEYS,
) -> Verification:
    """Check every entry against its leaf and place, its tag (with `tag_keys`: by default
    the process's data keyring; None for an export, read without the data keys), every
    checkpoint's signature and its root against the tree the entries make now, and the state
    row. `records` in id order, read in one snapshot with `checkpoints` and `state`;
    `hub_keys(key_id)` is a hub public key the auditor trusts (given, or endorsed from one
    given: hub.service.trust), never merely one a registry lists; `kept` the checkpoints the
    auditor kept; `untagged_entries`: how many positions at the start of the tree may hold
    entries without a tag (None: the state row's count)."""
    wanted = _positions_timed(checkpoints, state, kept)
    seen: dict[int, datetime] = {}

    def watched() -> Iterator[LoggedRecord]:
        for logged in records:
            if logged.log_index in wanted:
                seen[logged.log_index] = logged.record.recorded_at
            yield logged

    return verify_chunks(
        chunk_records(watched(), tag_keys=tag_keys),
        checkpoints,
        state,
        lambda: state,
        hub_keys,
        kept=kept,
        times=lambda _positions: seen,
        untagged_entries=untagged_entries,
    )


def _positions_timed(
    checkpoints: Sequence[LogCheckpointRow], state: LogState, kept: Sequence[KeptCheckpoint]
) -> set[int]:
    """Every position whose time the schedule rule may ask for (see _Fold.schedule)."""
    sizes = {0, state.size - 1, *(k.checkpoint.tree_size for k in kept)}
    for row in checkpoints:
        sizes |= {row.tree_size, signed_tree(row)[0]}
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
    untagged_entries: int | None = None,
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
    if untagged_entries is None:
        untagged_entries = trusted_untagged(checkpoints, before, hub_keys)
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


def trusted_untagged(
    checkpoints: Sequence[LogCheckpointRow],
    state: LogState,
    hub_keys: Callable[[str], bytes | None],
) -> int:
    """How many positions at the start of the tree may hold untagged entries, as far as a
    trusted signature says: the figure the newest trusted checkpoint signs; without one (no
    checkpoint since revision 0015 names it), the state row's figure but never past the
    newest trusted checkpoint, since untagged entries only ever come first and the state row
    is the database's word alone (a log upgraded from revision 0014 gets its first
    checkpoint naming the figure when the hub starts on it)."""
    signed = signed_untagged(checkpoints, hub_keys)
    if signed is not None:
        return signed
    newest = next(
        (row.tree_size for row in reversed(checkpoints) if not checkpoint_problem(row, hub_keys)),
        None,
    )
    # With no trusted checkpoint at all nothing is signed yet: the state row is all there is
    # (and the schedule rule names the checkpoints that should exist).
    return state.untagged_entries if newest is None else min(state.untagged_entries, newest)


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
                kept=kept,
                untagged_entries=untagged_entries,
            )
    with uow_factory(read_only=True) as uow:
        before, checkpoints = uow.audit.log_state(), list(uow.audit.checkpoints())

    def after() -> LogState:
        with uow_factory(read_only=True) as uow:
            return uow.audit.log_state()

    def times(positions: Collection[int]) -> Mapping[int, datetime]:
        with uow_factory(read_only=True) as uow:
            return uow.audit.recorded_times(positions)

    return verify_chunks(
        scan(),
        checkpoints,
        before,
        after,
        hub_keys,
        kept=kept,
        times=times,
        untagged_entries=untagged_entries,
    )


def read_all(uow: UnitOfWork, page: int = 5000) -> Iterator[LoggedRecord]:
    after = 0
    while True:
        rows = uow.audit.logged(after, page)
        yield from rows
        if len(rows) < page:
            return
        after = rows[-1].record.entry_id
