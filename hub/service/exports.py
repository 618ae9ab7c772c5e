"""Exports of the audit log and the SLA log (issue 8), as CSV or JSON Lines, and the offline
verification of a full audit export (docs/audit.md).

Entries are read in pages of id order through the store's ports, in one read transaction, and
written as they are read: an export of any size holds one page in memory.

A full JSON Lines export of the audit log carries what `auditverify.verify` needs and nothing
else: a header line, the log's state, every signed checkpoint, then every entry with its fields
in clear, its place and its stored leaf. `verify_export` reads it back and checks it as
`stophub audit verify` checks the database, without the database and without the data keys.
The state is read first and the entries after it: an entry the sequencer placed after the
state was read is exported as still waiting for its place (it is not in that tree), so the
export is one consistent tree while the hub goes on logging.

It is over 600 lines because writing an export and reading one back for verification must
agree on every line's fields, and are kept side by side so that they do.

A filtered export (by case, institution or time) holds some leaves of the tree only: it is
evidence of what it holds, but cannot be checked against the tree's root.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from google.protobuf.message import DecodeError

from hub.domain.clocks import CaseClock, SlaEntry
from hub.domain.merkle import CompactRange
from hub.service import auditverify, trust
from hub.service.ports import (
    AuditEntry,
    AuditRecord,
    HubKeyEndorsementRow,
    LogCheckpointRow,
    LoggedRecord,
    LogState,
    UnitOfWork,
    UnitOfWorkFactory,
)
from stophub.v1 import audit_pb2, envelope_pb2

EXPORT_FORMAT = "stophub-audit-export/1"
FORMATS = ("csv", "jsonl")
PAGE = 2000
CLOCK_PAGE = 500

AUDIT_COLUMNS = (
    "id",
    "log_index",
    "leaf_hash",
    "recorded_at",
    "kind",
    "actor",
    "message_id",
    "case_id",
    "order_id",
    "detail",
    "payload_sha256",
)
SLA_COLUMNS = (
    "clock_id",
    "case_id",
    "order_id",
    "kind",
    "event",
    "at",
    "due_at",
    "responsible",
    "late_seconds",
    "detail",
    "clock_state",
    "deadline_at",
    "breached",
)

# (entries or rows scanned so far, how many there are to scan; None when not known)
Progress = Callable[[int, int | None], None]


class ExportError(Exception):
    """An export that cannot be written or read as asked."""


@dataclass(frozen=True)
class Filters:
    case_id: str | None = None
    institution: str | None = None
    start: datetime | None = None
    end: datetime | None = None

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.case_id, self.institution, self.start, self.end))

    def in_range(self, at: datetime) -> bool:
        return (self.start is None or at >= self.start) and (self.end is None or at < self.end)

    def as_json(self) -> dict[str, str | None]:
        return {
            "case_id": self.case_id,
            "institution": self.institution,
            "from": self.start.isoformat() if self.start else None,
            "to": self.end.isoformat() if self.end else None,
        }


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")


# ---- audit entries -----------------------------------------------------------------------------


def audit_row(logged: LoggedRecord) -> dict[str, Any]:
    """An entry's exported fields (AUDIT_COLUMNS, and `payload` in base64 for JSON Lines)."""
    r, e = logged.record, logged.record.entry
    return {
        "id": r.entry_id,
        "log_index": logged.log_index,
        "leaf_hash": logged.leaf_hash.hex() if logged.leaf_hash is not None else None,
        "recorded_at": r.recorded_at.isoformat(),
        "kind": e.kind,
        "actor": e.actor,
        "message_id": e.message_id,
        "case_id": e.case_id,
        "order_id": e.order_id,
        "detail": e.detail,
        # As the leaf hashes it (docs/audit.md, field 11).
        "payload_sha256": hashlib.sha256(e.payload).hexdigest() if e.payload is not None else None,
        "payload": base64.b64encode(e.payload).decode() if e.payload is not None else None,
    }


class _Involves:
    """Whether a case concerns an institution: it reported it, or an order of it is addressed
    to it. One look-up per case, remembered."""

    def __init__(self, uow: UnitOfWork, institution: str) -> None:
        self.uow, self.institution = uow, institution
        self.known: dict[str, bool] = {}

    def __call__(self, case_id: str) -> bool:
        found = self.known.get(case_id)
        if found is None:
            case = self.uow.cases.get(case_id)
            found = case is not None and (
                case.reporting_institution == self.institution
                or any(o.addressed_to == self.institution for o in case.orders)
            )
            self.known[case_id] = found
        return found


def _audit_keep(uow: UnitOfWork, filters: Filters) -> Callable[[AuditRecord], bool]:
    involves = _Involves(uow, filters.institution) if filters.institution else None

    def keep(record: AuditRecord) -> bool:
        e = record.entry
        if filters.case_id is not None and e.case_id != filters.case_id:
            return False
        if not filters.in_range(record.recorded_at):
            return False
        if involves is not None and e.actor != filters.institution:
            return e.case_id is not None and involves(e.case_id)
        return True

    return keep


def export_audit(
    uow_factory: UnitOfWorkFactory,
    out: IO[str],
    fmt: str,
    *,
    case_id: str | None = None,
    institution: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    progress: Progress | None = None,
) -> int:
    """Write the audit entries that pass the filters to `out` (CSV with a header row, or JSON
    Lines), in id order; returns how many were written. `institution` keeps the entries it is
    the actor of and those of the cases it reported or has an order addressed to; `start` and
    `end` bound recorded_at, [start, end). A JSON Lines export without filters also carries
    the state and the checkpoints, so that `verify_export` checks it on its own."""
    _check_format(fmt)
    filters = Filters(case_id, institution, start, end)
    written = 0
    with uow_factory(read_only=True) as uow:
        # The tree first, then the entries: see the module doc.
        state = uow.audit.log_state()
        # Every checkpoint, also one larger than the state row (a rolled back log): the
        # export is evidence of the database as it is, and verify-export names that.
        checkpoints = list(uow.audit.checkpoints())
        endorsements = list(uow.audit.endorsements())
        total = state.size + len(uow.audit.unsequenced(PAGE))
        keep = _audit_keep(uow, filters)
        if fmt == "csv":
            writer = csv.writer(out)
            writer.writerow(AUDIT_COLUMNS)
        else:
            _jsonl(
                out,
                {
                    "export": {
                        "format": EXPORT_FORMAT,
                        "filtered": filters.any,
                        "filters": filters.as_json(),
                    }
                },
            )
            if not filters.any:
                _jsonl(out, {"state": _state_json(state)})
                for cp in checkpoints:
                    _jsonl(out, {"checkpoint": _checkpoint_json(cp)})
                for e in endorsements:
                    _jsonl(out, {"endorsement": _endorsement_json(e)})
        scanned, after = 0, 0
        while True:
            page = uow.audit.logged(after, PAGE)
            for logged in page:
                if not keep(logged.record):
                    continue
                if logged.log_index is not None and logged.log_index >= state.size:
                    logged = LoggedRecord(None, None, logged.record)  # placed after the state
                row = audit_row(logged)
                if fmt == "csv":
                    writer.writerow(_csv_cell(row[c]) for c in AUDIT_COLUMNS)
                else:
                    _jsonl(out, row)
                written += 1
            scanned += len(page)
            if progress is not None:
                total = max(total, scanned)
                progress(scanned, total)
            if len(page) < PAGE:
                return written
            after = page[-1].record.entry_id


def _csv_cell(value: Any) -> Any:
    return "" if value is None else value


def _jsonl(out: IO[str], value: dict[str, Any]) -> None:
    out.write(json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n")


def _state_json(state: LogState) -> dict[str, Any]:
    return {
        "tree_size": state.size,
        "root_hash": state.root.hex(),
        "compact_range": state.compact_range.hex(),
    }


def _checkpoint_json(cp: LogCheckpointRow) -> dict[str, Any]:
    return {
        "tree_size": cp.tree_size,
        "root_hash": cp.root_hash.hex(),
        "signed_at": cp.signed_at.isoformat(),
        "envelope": base64.b64encode(cp.envelope).decode(),
    }


def _endorsement_json(e: HubKeyEndorsementRow) -> dict[str, Any]:
    return {
        "key_id": e.key_id,
        "endorsed_by": e.endorsed_by,
        "endorsed_at": e.endorsed_at.isoformat(),
        "envelope": base64.b64encode(e.envelope).decode(),
    }


# ---- reading an export back --------------------------------------------------------------------


@dataclass
class AuditExport:
    """A full export as `auditverify.verify` takes it; `records` reads the entries lazily, once."""

    state: LogState
    checkpoints: list[LogCheckpointRow]
    records: Iterator[LoggedRecord]
    endorsements: list[HubKeyEndorsementRow] = field(default_factory=list)
    # What the lines themselves show wrong (a payload that is not its SHA-256, a value that
    # does not decode), found as `records` is read.
    findings: list[auditverify.Finding] = field(default_factory=list)


def logged_of(
    row: dict[str, Any], findings: list[auditverify.Finding] | None = None
) -> LoggedRecord:
    """An exported entry (JSON Lines) as the store would give it. A payload that does not
    decode, or is not what its payload_sha256 says, is a finding in `findings` (when given):
    the entry is then read without it, so its leaf no longer matches either."""
    entry_id = int(row["id"])
    index = row.get("log_index")
    payload: bytes | None = None
    if row.get("payload") is not None:
        try:
            payload = base64.b64decode(row["payload"], validate=True)
        except (binascii.Error, ValueError, TypeError):
            _note(findings, "unreadable", "its payload is not base64", entry_id, index)
    digest = row.get("payload_sha256") or ""
    if payload is not None and digest != hashlib.sha256(payload).hexdigest():
        _note(
            findings,
            "changed",
            f"its payload's SHA-256 is {hashlib.sha256(payload).hexdigest()}, not the "
            f"payload_sha256 it lists ({digest or 'none'})",
            entry_id,
            index,
        )
    elif payload is None and digest and row.get("payload") is None and findings is not None:
        _note(
            findings,
            "changed",
            f"it lists payload_sha256 {digest} but carries no payload",
            entry_id,
            index,
        )
    record = AuditRecord(
        entry_id,
        datetime.fromisoformat(row["recorded_at"]),
        AuditEntry(
            kind=row["kind"],
            actor=row["actor"],
            message_id=row["message_id"],
            detail=row["detail"],
            payload=payload,
            case_id=row["case_id"],
            order_id=row["order_id"],
        ),
    )
    leaf = row.get("leaf_hash")
    return LoggedRecord(
        int(index) if index is not None else None,
        bytes.fromhex(leaf) if leaf is not None else None,
        record,
    )


def _note(
    findings: list[auditverify.Finding] | None,
    what: str,
    why: str,
    entry_id: int,
    index: Any,
) -> None:
    if findings is not None:
        findings.append(
            auditverify.Finding(
                what,
                f"entry {entry_id} in the export: {why}",
                entry_id,
                int(index) if isinstance(index, int) else None,
            )
        )


def read_export(lines: Iterator[str], name: str = "the export") -> AuditExport:
    """Parse a JSON Lines audit export: header, state and checkpoints now, entries lazily."""
    numbered = enumerate(lines, 1)

    def parse(number: int, line: str) -> dict[str, Any]:
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise ExportError(f"{name}, line {number}: not JSON ({err})") from err
        if not isinstance(value, dict):
            raise ExportError(f"{name}, line {number}: not a JSON object")
        return value

    first = next(numbered, None)
    header = parse(*first).get("export") if first is not None else None
    if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
        raise ExportError(
            f"{name} is not a JSON Lines audit export (its first line must be the "
            f'{{"export": {{"format": "{EXPORT_FORMAT}", ...}}}} header of `stophub audit '
            "export --format jsonl`)"
        )
    if header.get("filtered"):
        shown = ", ".join(f"{k}={v}" for k, v in (header.get("filters") or {}).items() if v)
        raise ExportError(
            f"{name} is a filtered export ({shown}): it holds only some entries of the audit "
            "log's Merkle tree, so it cannot be verified as a whole tree. Export without "
            "--case, --institution, --from and --to to verify offline."
        )
    state: LogState | None = None
    checkpoints: list[LogCheckpointRow] = []
    endorsements: list[HubKeyEndorsementRow] = []
    findings: list[auditverify.Finding] = []
    pending: tuple[int, dict[str, Any]] | None = None
    for number, line in numbered:
        if not line.strip():
            continue
        value = parse(number, line)
        try:
            if "state" in value:
                s = value["state"]
                state = LogState(
                    int(s["tree_size"]),
                    bytes.fromhex(s["root_hash"]),
                    bytes.fromhex(s["compact_range"]),
                )
                continue
            if "checkpoint" in value:
                c = value["checkpoint"]
                checkpoints.append(
                    LogCheckpointRow(
                        int(c["tree_size"]),
                        bytes.fromhex(c["root_hash"]),
                        datetime.fromisoformat(c["signed_at"]),
                        base64.b64decode(c["envelope"], validate=True),
                    )
                )
                continue
            if "endorsement" in value:
                e = value["endorsement"]
                endorsements.append(
                    HubKeyEndorsementRow(
                        str(e["key_id"]),
                        str(e["endorsed_by"]),
                        datetime.fromisoformat(e["endorsed_at"]),
                        base64.b64decode(e["envelope"], validate=True),
                    )
                )
                continue
        except (KeyError, TypeError, ValueError, binascii.Error) as err:
            raise ExportError(f"{name}, line {number}: cannot be read ({err})") from err
        pending = (number, value)  # the first entry: the rest are read lazily
        break
    if state is None:
        raise ExportError(f"{name} has no state line: it cannot be verified as a whole tree")

    def entries() -> Iterator[tuple[int, dict[str, Any]]]:
        if pending is not None:
            yield pending
            yield from ((n, parse(n, ln)) for n, ln in numbered if ln.strip())

    def records() -> Iterator[LoggedRecord]:
        for number, value in entries():
            if any(k in value for k in ("state", "checkpoint", "endorsement", "export")):
                raise ExportError(
                    f"{name}, line {number}: the state, checkpoints and endorsements come first"
                )
            try:
                yield logged_of(value, findings)
            except (KeyError, TypeError, ValueError) as err:
                raise ExportError(f"{name}, line {number}: not an audit entry ({err})") from err

    return AuditExport(state, checkpoints, records(), endorsements, findings)


def verify_export(
    path: str | Path,
    hub_keys: Mapping[str, bytes],
    kept: Sequence[str] = (),
) -> tuple[auditverify.Verification, trust.TrustedKeys]:
    """Check a full JSON Lines audit export as `stophub audit verify` checks the database:
    every entry against its leaf and place and its payload against its SHA-256, every
    checkpoint's signature (with the keys given and those the export's endorsements chain
    from them) and root, the state line, and each kept checkpoint (`kept`: files or
    directories) against the tree. Raises ExportError for a file that is not a full export,
    trust.TrustError for a kept checkpoint that cannot be trusted."""
    with open(path, encoding="utf-8") as f:
        export = read_export(iter(f), str(path))
        keys = trust.trusted_keys(hub_keys, export.endorsements)
        kept_checkpoints = trust.kept_checkpoints(kept, keys.get)
        result = auditverify.verify(
            export.records,
            export.checkpoints,
            export.state,
            keys.get,
            kept=kept_checkpoints,
            # An export is checked without the data keys: the hub's tags cannot be
            # (docs/audit.md); its evidence is the signed checkpoints.
            tag_keys=None,
        )
    result.findings[:0] = [*keys.findings, *export.findings, *_lines_disagree(export)]
    return result, keys


def _lines_disagree(export: AuditExport) -> list[auditverify.Finding]:
    """What the state and checkpoint lines say beside their signed content: the state's
    compact range must make its root, a checkpoint's time must be the one it signs."""
    found = []
    state = export.state
    nodes = [state.compact_range[i : i + 32] for i in range(0, len(state.compact_range), 32)]
    try:
        root = CompactRange.restore(state.size, nodes).root()
    except (ValueError, IndexError):
        root = b""
    if root != state.root:
        found.append(
            auditverify.Finding(
                "checkpoint",
                f"the state line's compact range does not make its root {state.root.hex()}",
            )
        )
    for cp in export.checkpoints:
        try:
            body = audit_pb2.LogCheckpoint.FromString(
                envelope_pb2.Envelope.FromString(cp.envelope).body
            )
        except DecodeError:
            continue  # the signature check names it
        signed = body.checkpoint_time.ToDatetime(tzinfo=UTC)
        if signed != cp.signed_at:
            found.append(
                auditverify.Finding(
                    "checkpoint",
                    f"the checkpoint line of {cp.tree_size} entries says signed_at "
                    f"{cp.signed_at.isoformat()}, its envelope {signed.isoformat()}",
                )
            )
    return found


# ---- the SLA log -------------------------------------------------------------------------------


def sla_row(entry: SlaEntry, clock: CaseClock) -> dict[str, Any]:
    return {
        "clock_id": entry.clock_id,
        "case_id": entry.case_id,
        "order_id": entry.order_id,
        "kind": entry.kind,
        "event": entry.event,
        "at": entry.at.isoformat(),
        "due_at": entry.due_at.isoformat() if entry.due_at is not None else None,
        "responsible": entry.responsible,
        "late_seconds": entry.late_seconds,
        "detail": entry.detail,
        "clock_state": str(clock.state.value),
        "deadline_at": clock.deadline_at.isoformat(),
        "breached": bool(clock.breached),
    }


def _clock_pages(
    uow: UnitOfWork, institution: str | None, case_id: str | None
) -> Iterator[Sequence[CaseClock]]:
    offset = 0
    while True:
        page = uow.clocks.query(
            institution=institution,
            case_id=case_id,
            open_only=False,
            breached_only=False,
            limit=CLOCK_PAGE,
            offset=offset,
        )
        if page:
            yield page
        if len(page) < CLOCK_PAGE:
            return
        offset += len(page)


def export_sla(
    uow_factory: UnitOfWorkFactory,
    out: IO[str],
    fmt: str,
    *,
    case_id: str | None = None,
    institution: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    progress: Progress | None = None,
) -> int:
    """Write the SLA log rows (SLA_COLUMNS: each row with its clock's state, deadline and
    breach) of the clocks of `case_id` and that `institution` is responsible for, with `at` in
    [start, end), clock by clock and in log order within a clock; returns how many."""
    _check_format(fmt)
    filters = Filters(case_id, institution, start, end)
    written = 0
    with uow_factory(read_only=True) as uow:
        total = sum(len(p) for p in _clock_pages(uow, institution, case_id))
        if fmt == "csv":
            writer = csv.writer(out)
            writer.writerow(SLA_COLUMNS)
        done = 0
        for page in _clock_pages(uow, institution, case_id):
            entries = uow.clocks.entries([c.clock_id for c in page])
            for clock in page:
                for entry in entries.get(clock.clock_id, []):
                    if not filters.in_range(entry.at):
                        continue
                    row = sla_row(entry, clock)
                    if fmt == "csv":
                        writer.writerow(_csv_cell(row[c]) for c in SLA_COLUMNS)
                    else:
                        _jsonl(out, row)
                    written += 1
            done += len(page)
            if progress is not None:
                total = max(total, done)
                progress(done, total)
    return written
