"""Signed messages in the audit log, checked again as evidence.

Every envelope the hub received or sent is kept in the audit log with the time the hub recorded
it. Years later it must still verify, with the key its signer had registered at that time:
a key rotated out or revoked since does not make old evidence void, and a message whose key was
already revoked or retired when the hub recorded it is named. The time that counts is the hub's
record time, never the envelope's own create_time, which the signer chose.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from hub.crypto.envelope import verify_envelope
from hub.crypto.fields import DataKeyError
from hub.crypto.signing import SignatureError
from hub.domain.institutions import Institution
from hub.service.ports import AuditRecord, UnitOfWork, UnitOfWorkFactory
from stophub.v1 import envelope_pb2

# Entries whose payload is a whole signed envelope. A "rejected" entry keeps what was refused,
# which may be unsigned or forged by definition, so it is evidence of the refusal only.
SIGNED_KINDS = frozenset({"received", "sent"})


@dataclass(frozen=True)
class Problem:
    entry_id: int
    message_id: str
    signer: str
    why: str
    # The entry's sealed detail or envelope does not open: nothing of it can be checked.
    unreadable: bool = False


@dataclass
class SignatureReport:
    checked: int = 0
    by_key: Counter[tuple[str, str]] = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_record(
    record: AuditRecord, institutions: dict[str, Institution | None]
) -> tuple[str, str] | Problem:
    """(signer, key id) if the record's envelope verifies with a key valid when recorded."""
    entry = record.entry
    envelope = envelope_pb2.Envelope()
    try:
        envelope.ParseFromString(entry.payload or b"")
    except DecodeError as exc:
        return Problem(record.entry_id, entry.message_id, entry.actor, f"not an envelope: {exc}")
    signer = envelope.sender
    if signer != entry.actor:
        return Problem(
            record.entry_id,
            entry.message_id,
            signer,
            f"the entry names {entry.actor} but the envelope was signed as {signer}",
        )
    inst = institutions.get(signer)
    if inst is None:
        return Problem(record.entry_id, entry.message_id, signer, f"{signer} is not registered")
    valid, why = inst.key_valid_at(envelope.key_id, record.recorded_at)
    if not valid:
        return Problem(
            record.entry_id,
            entry.message_id,
            signer,
            f"recorded at {record.recorded_at.isoformat()}, but {why}",
        )
    key = inst.key(envelope.key_id)
    assert key is not None
    try:
        good = key.algorithm == envelope.algorithm and verify_envelope(envelope, key.public_key)
    except (SignatureError, ValueError) as exc:
        good, why = False, str(exc)
    if not good:
        return Problem(
            record.entry_id,
            entry.message_id,
            signer,
            f"the signature does not verify with key {key.key_id} {why}".rstrip(),
        )
    return signer, key.key_id


def verify_signatures(uow: UnitOfWorkFactory, *, batch: int = 1000) -> SignatureReport:
    """Check every signed envelope in the audit log; read in batches, so any size will do. An
    entry whose sealed values do not open (altered ciphertext, a key missing from the
    keyring) is a problem named as unreadable, and the others are still checked."""
    report = SignatureReport()
    institutions: dict[str, Institution | None] = {}
    after = 0
    while True:
        with uow(read_only=True) as tx:
            records = _read(tx, after, batch, report)
            for record in records:
                signer = record.entry.actor
                if signer not in institutions:
                    institutions[signer] = tx.institutions.get(signer)
            last = tx.audit.entry_ids(after, batch)
        if not last:
            return report
        after = last[-1]
        for record in records:
            if record.entry.kind not in SIGNED_KINDS or not record.entry.payload:
                continue
            report.checked += 1
            outcome = check_record(record, institutions)
            if isinstance(outcome, Problem):
                report.problems.append(outcome)
            else:
                report.by_key[outcome] += 1


def _read(tx: UnitOfWork, after: int, batch: int, report: SignatureReport) -> list[AuditRecord]:
    """The batch's entries; when one of them does not open, each is read on its own so that
    only that one is lost (named in `report`)."""
    try:
        return list(tx.audit.scan(after, batch))
    except DataKeyError:
        pass
    records: list[AuditRecord] = []
    for entry_id in tx.audit.entry_ids(after, batch):
        try:
            records.extend(tx.audit.scan(entry_id - 1, 1))
        except DataKeyError as e:
            report.problems.append(
                Problem(
                    entry_id,
                    "",
                    "",
                    f"its sealed detail or envelope does not open: {' '.join(str(e).split())}",
                    unreadable=True,
                )
            )
    return records
