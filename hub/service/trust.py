"""Which hub keys and checkpoints an auditor trusts (docs/audit.md, "Rotating the hub's key"
and "Keeping a checkpoint"): never a key merely because a database lists it.

Someone with the whole database but not the hub's private key can rewrite the log, add a key
of their own to the registry as the hub's and sign checkpoints over the rewrite. So the
auditor gives the hub's public key(s) as files; any other hub key counts only through a chain
of HubKeyEndorsement envelopes, each signed by a key already trusted (the old key vouching for
the new one at a rotation). Checkpoints kept from earlier checks are read with those keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from google.protobuf.message import DecodeError

from hub.crypto import checkpoint as kept_files
from hub.crypto.checkpoint import CheckpointError
from hub.crypto.envelope import Signer, seal_message, verify_envelope
from hub.crypto.signing import SignatureError, key_id_for
from hub.domain.institutions import HUB_CODE
from hub.service.auditlog import AUDIT_RECIPIENT
from hub.service.auditverify import Finding, KeptCheckpoint
from hub.service.ports import HubKeyEndorsementRow
from hub.service.wire import ts
from stophub.v1 import audit_pb2, envelope_pb2

ENDORSEMENT_TYPE = "stophub.v1.HubKeyEndorsement"


class TrustError(Exception):
    """A key or a kept checkpoint the check cannot stand on: the check cannot be made."""


@dataclass(frozen=True)
class Endorsement:
    """An endorsement as signed: `key_id` (algorithm, public key) vouched for by `endorsed_by`."""

    key_id: str
    algorithm: str
    public_key: bytes
    endorsed_by: str
    endorsed_at: datetime
    envelope: bytes


@dataclass
class TrustedKeys:
    """The hub keys an auditor trusts, by key id, and what was wrong with the endorsements
    that could not extend them (findings: a forged or unsigned endorsement)."""

    keys: dict[str, bytes]
    endorsed: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def get(self, key_id: str) -> bytes | None:
        return self.keys.get(key_id)


def endorse(old: Signer, algorithm: str, public_key: bytes, now: datetime) -> HubKeyEndorsementRow:
    """The hub's old key vouching for its new one, as stored in hub_key_endorsements."""
    key_id = key_id_for(algorithm, public_key)
    body = audit_pb2.HubKeyEndorsement(
        key_id=key_id, algorithm=algorithm, public_key=public_key, endorse_time=ts(now)
    )
    envelope = seal_message(
        old,
        sender=HUB_CODE,
        recipient=AUDIT_RECIPIENT,
        message_id=f"endorse-{key_id}",
        create_time=now,
        message=body,
    )
    return HubKeyEndorsementRow(key_id, old.key_id, now, envelope.SerializeToString())


def read_endorsement(envelope: bytes) -> Endorsement:
    """An endorsement's signed content (not yet its signature: see `trusted_keys`)."""
    try:
        env = envelope_pb2.Envelope.FromString(envelope)
        body = audit_pb2.HubKeyEndorsement.FromString(env.body)
    except DecodeError as e:
        raise TrustError(f"not a signed HubKeyEndorsement ({e})") from None
    if (env.sender, env.recipient, env.body_type) != (HUB_CODE, AUDIT_RECIPIENT, ENDORSEMENT_TYPE):
        raise TrustError(
            f"an envelope from {env.sender!r} to {env.recipient!r} holding a "
            f"{env.body_type!r}, not the hub's {ENDORSEMENT_TYPE}"
        )
    try:
        made_for = key_id_for(body.algorithm, body.public_key)
    except (SignatureError, ValueError) as e:
        raise TrustError(f"it endorses a key that is not one ({e})") from None
    if made_for != body.key_id:
        raise TrustError(f"it names key {body.key_id!r} but holds the public key of {made_for!r}")
    return Endorsement(
        body.key_id,
        body.algorithm,
        body.public_key,
        env.key_id,
        body.endorse_time.ToDatetime(tzinfo=UTC),
        envelope,
    )


def trusted_keys(
    given: Mapping[str, bytes], endorsements: Iterable[HubKeyEndorsementRow]
) -> TrustedKeys:
    """The keys given, and each key endorsed by a chain of signatures from one of them. An
    endorsement not signed by a trusted key, or whose row disagrees with what it signs, is a
    finding ("endorsement") and vouches for nothing."""
    trusted = TrustedKeys(dict(given))
    waiting: list[tuple[HubKeyEndorsementRow, Endorsement]] = []
    for row in endorsements:
        try:
            e = read_endorsement(row.envelope)
        except TrustError as err:
            trusted.findings.append(_finding(row, str(err)))
            continue
        if (row.key_id, row.endorsed_by, row.endorsed_at) != (
            e.key_id,
            e.endorsed_by,
            e.endorsed_at,
        ):
            trusted.findings.append(
                _finding(
                    row,
                    f"the row says {row.key_id} endorsed by {row.endorsed_by} at "
                    f"{row.endorsed_at.isoformat()}, the signed endorsement {e.key_id} by "
                    f"{e.endorsed_by} at {e.endorsed_at.isoformat()}",
                )
            )
            continue
        waiting.append((row, e))
    grew = True
    while grew:  # a chain A -> B -> C may be stored in any order
        grew = False
        for row, e in list(waiting):
            signer = trusted.keys.get(e.endorsed_by)
            if signer is None:
                continue
            waiting.remove((row, e))
            if _signed_by(e.envelope, signer):
                if e.key_id not in trusted.keys:
                    trusted.keys[e.key_id] = e.public_key
                    trusted.endorsed.append(e.key_id)
                    grew = True
            else:
                trusted.findings.append(
                    _finding(row, f"its signature does not verify under hub key {e.endorsed_by}")
                )
    for row, e in waiting:
        trusted.findings.append(
            _finding(
                row,
                f"signed by hub key {e.endorsed_by}, which is neither given (--hub-key) nor "
                "endorsed by a key given: it vouches for nothing",
            )
        )
    return trusted


def _signed_by(envelope: bytes, key: bytes) -> bool:
    try:
        return verify_envelope(envelope_pb2.Envelope.FromString(envelope), key)
    except (SignatureError, ValueError, DecodeError):
        return False


def _finding(row: HubKeyEndorsementRow, why: str) -> Finding:
    return Finding("endorsement", f"the endorsement of hub key {row.key_id}: {why}")


def kept_checkpoints(
    paths: Sequence[str], hub_keys: Callable[[str], bytes | None]
) -> list[KeptCheckpoint]:
    """Each --trusted-checkpoint (a file, or a directory of *.json) read and verified with
    the trusted keys; TrustError when one is unreadable or not signed by a trusted key (the
    auditor's own evidence cannot be judged: the check is not made)."""
    kept: list[KeptCheckpoint] = []
    for path in paths:
        files = kept_files.files_in(path)
        if not files:
            raise TrustError(f"{path}: no checkpoint file (*.json) in it")
        for file in files:
            try:
                kept.append(KeptCheckpoint(str(file), kept_files.read_file(file, hub_keys)))
            except CheckpointError as e:
                raise TrustError(str(e)) from None
    return kept
