"""The hub's tag on each audit entry, as the sequencer and the verification judge it (issue
21, docs/audit.md "The hub's tag on each entry"; the tag itself is hub/crypto/audittag.py).

The sequencer places an entry only when the hub's tag vouches for it, or when it is one of
the untagged entries an upgraded log starts with; `audit verify` names every other entry
FORGED. hub/service/auditlog.py calls these from its sequencer and its verification.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from hub.crypto.audittag import TagKeys
from hub.service.ports import AuditRecord, LeafChunk, LeafFields, LogState

UNTAGGED_LATE = (
    "it carries no tag, and is not one of the entries written before the hub tagged them "
    "(revision 0015) at the start of the tree"
)


def is_untagged(record: AuditRecord) -> bool:
    return record.tag is None and record.tag_key is None


class Placing:
    """What the sequencer asks of each entry, in id order, in one batch: "" to place it, or
    why it is refused. Counts the untagged entries it lets open the tree."""

    def __init__(self, state: LogState, keys: TagKeys) -> None:
        self.below_id = state.untagged_below_id
        self.untagged = state.untagged_entries
        self.keys = keys

    def problem(self, record: AuditRecord, fields: LeafFields, tree_size: int) -> str:
        if record.unreadable:
            return f"its content does not open ({record.unreadable})"
        if is_untagged(record):
            # Only an upgraded log's first entries, before any tagged one.
            if record.entry_id < self.below_id and tree_size == self.untagged:
                self.untagged += 1
                return ""
            return UNTAGGED_LATE
        return self.keys.problem(record.tag_key, record.tag, *fields)


_refused_lock = threading.Lock()
_refused_total = 0


def count_refused(count: int) -> None:
    global _refused_total
    if count:
        with _refused_lock:
            _refused_total += count


def refused_total() -> int:
    """Entries the sequencer refused in this process (`stophub_audit_entries_refused_total`)."""
    return _refused_total


@dataclass(frozen=True)
class Forged:
    entry_id: int
    log_index: int | None
    detail: str


class TagCheck:
    """The verification's view of the tags, chunk by chunk: an entry whose tag is missing
    (outside the untagged prefix of an upgraded log), wrong or under an unknown key, and an
    entry the sequencer refused, are forged."""

    def __init__(self, before: LogState, untagged_entries: int | None) -> None:
        self.allowed = before.untagged_entries if untagged_entries is None else untagged_entries
        # Untagged entries the sequencer has yet to place: allowed while the tree holds
        # nothing else (a log just upgraded from revision 0014).
        self.waiting_below = (
            before.untagged_below_id if before.size == before.untagged_entries else 0
        )
        self.forged: list[Forged] = []
        # Never to be placed, so not waiting for a place either.
        self.unplaced: set[int] = set()

    def check(self, chunk: LeafChunk) -> None:
        for position in chunk.untagged:
            index, entry_id = chunk.indexes[position], chunk.ids[position]
            if 0 <= index < self.allowed or (index < 0 and entry_id < self.waiting_below):
                continue
            where = (
                f"at position {index}, outside the first {self.allowed} (the entries "
                "written before the hub tagged them, revision 0015)"
                if index >= 0
                else "and is not one of the entries written before the hub tagged them "
                "(revision 0015)"
            )
            self._forged(entry_id, index, f"it carries no tag {where}")
        for problem in chunk.forged:
            self._forged(
                chunk.ids[problem.position], chunk.indexes[problem.position], problem.reason
            )

    def _forged(self, entry_id: int, index: int, reason: str) -> None:
        place = f"at position {index}" if index >= 0 else "(not placed)"
        self.forged.append(
            Forged(
                entry_id,
                index if index >= 0 else None,
                f"entry {entry_id} {place}: {reason}; the hub did not write it",
            )
        )
        if index < 0:
            self.unplaced.add(entry_id)
