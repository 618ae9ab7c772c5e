"""A signed checkpoint of the audit log, read with keys the reader trusts, and the file an
auditor or a member keeps it in (docs/audit.md, "Keeping a checkpoint").

The hub, `stophub audit verify`, `stophub audit checkpoint` and the SDK's witness all read a
checkpoint through `open_checkpoint`, so they agree on what makes one valid: an envelope
from `HUB` to `AUDIT` whose body is a `stophub.v1.LogCheckpoint`, signed by one of the keys
the reader trusts (never merely one a database lists).

The file is JSON: `{"format": "stophub-log-checkpoint/1", "tree_size": …, "root_hash": hex,
"checkpoint_time": ISO 8601, "key_id": …, "envelope": base64}`. Only `envelope` is evidence;
the other fields are for people, and a file whose fields disagree with its envelope is
refused rather than half-believed.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from google.protobuf.message import DecodeError

from hub.crypto.envelope import verify_envelope
from hub.crypto.signing import SignatureError
from stophub.v1 import audit_pb2, envelope_pb2

FILE_FORMAT = "stophub-log-checkpoint/1"
HUB_SENDER = "HUB"
AUDIT_RECIPIENT = "AUDIT"
BODY_TYPE = "stophub.v1.LogCheckpoint"
ROOT_BYTES = 32


class CheckpointError(Exception):
    """A checkpoint that is not one the reader can trust, or a file that holds none; the
    message says which and why, for the person reading it."""


@dataclass(frozen=True)
class SignedCheckpoint:
    tree_size: int
    root_hash: bytes
    checkpoint_time: datetime
    previous_tree_size: int
    previous_root_hash: bytes
    untagged_entries: int
    key_id: str
    # The signed envelope, byte for byte: what is kept, sent and compared.
    envelope: bytes

    def same_tree(self, other: SignedCheckpoint) -> bool:
        return (self.tree_size, self.root_hash) == (other.tree_size, other.root_hash)


def open_checkpoint(
    envelope: bytes | envelope_pb2.Envelope, hub_keys: Callable[[str], bytes | None]
) -> SignedCheckpoint:
    """The checkpoint in `envelope` once its signature verifies under `hub_keys(key_id)`, a
    key the reader trusts; CheckpointError otherwise."""
    if isinstance(envelope, envelope_pb2.Envelope):
        env, raw = envelope, envelope.SerializeToString()
    else:
        raw = bytes(envelope)
        try:
            env = envelope_pb2.Envelope.FromString(raw)
        except DecodeError as e:
            raise CheckpointError(f"not a signed envelope ({e})") from None
    if env.sender != HUB_SENDER or env.recipient != AUDIT_RECIPIENT:
        raise CheckpointError(
            f"an envelope from {env.sender!r} to {env.recipient!r}, not the hub's checkpoint "
            f"(from {HUB_SENDER} to {AUDIT_RECIPIENT})"
        )
    if env.body_type != BODY_TYPE:
        raise CheckpointError(f"its body is a {env.body_type!r}, not a {BODY_TYPE}")
    key = hub_keys(env.key_id)
    if key is None:
        raise CheckpointError(
            f"signed with hub key {env.key_id!r}, which is not one you trust (give the hub's "
            "public key with --hub-key, or the endorsement that vouches for it)"
        )
    try:
        good = verify_envelope(env, key)
    except (SignatureError, ValueError) as e:
        raise CheckpointError(f"its signature cannot be checked: {e}") from None
    if not good:
        raise CheckpointError(f"its signature does not verify under hub key {env.key_id!r}")
    try:
        body = audit_pb2.LogCheckpoint.FromString(env.body)
    except DecodeError as e:
        raise CheckpointError(f"its signed body does not decode ({e})") from None
    if body.tree_size < 1 or len(body.root_hash) != ROOT_BYTES:
        raise CheckpointError(
            f"it signs a tree of {body.tree_size} entries with a root of "
            f"{len(body.root_hash)} bytes"
        )
    return signed_checkpoint(env.key_id, body, raw)


def signed_checkpoint(key_id: str, body: audit_pb2.LogCheckpoint, raw: bytes) -> SignedCheckpoint:
    """The checkpoint of a signed envelope `raw` (key `key_id`, body `body`) whose signature
    the caller has checked, or has just made."""
    return SignedCheckpoint(
        tree_size=body.tree_size,
        root_hash=body.root_hash,
        checkpoint_time=body.checkpoint_time.ToDatetime(tzinfo=UTC),
        previous_tree_size=body.previous_tree_size,
        previous_root_hash=body.previous_root_hash,
        untagged_entries=body.untagged_entries,
        key_id=key_id,
        envelope=raw,
    )


def dump(checkpoint: SignedCheckpoint) -> str:
    """The file's text (JSON, one document, a final newline)."""
    return (
        json.dumps(
            {
                "format": FILE_FORMAT,
                "tree_size": checkpoint.tree_size,
                "root_hash": checkpoint.root_hash.hex(),
                "checkpoint_time": checkpoint.checkpoint_time.isoformat(),
                "key_id": checkpoint.key_id,
                "envelope": base64.b64encode(checkpoint.envelope).decode("ascii"),
            },
            indent=2,
        )
        + "\n"
    )


def load(
    text: str, hub_keys: Callable[[str], bytes | None], *, source: str = "the checkpoint"
) -> SignedCheckpoint:
    """A kept checkpoint read back from its file's text, verified with `hub_keys`; the people's
    fields must agree with the signed envelope."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise CheckpointError(f"{source} is not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FILE_FORMAT:
        raise CheckpointError(f'{source} is not a checkpoint file ("format": "{FILE_FORMAT}")')
    try:
        raw = base64.b64decode(str(doc.get("envelope", "")), validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError(f"{source}: its envelope is not base64") from None
    try:
        checkpoint = open_checkpoint(raw, hub_keys)
    except CheckpointError as e:
        raise CheckpointError(f"{source}: {e}") from None
    shown = (doc.get("tree_size"), doc.get("root_hash"))
    if shown != (checkpoint.tree_size, checkpoint.root_hash.hex()):
        raise CheckpointError(
            f"{source} says {shown[0]} entries / {shown[1]}, but its signed envelope says "
            f"{checkpoint.tree_size} / {checkpoint.root_hash.hex()}: it was edited"
        )
    return checkpoint


def read_file(path: str | Path, hub_keys: Callable[[str], bytes | None]) -> SignedCheckpoint:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read {p}: {e}") from None
    return load(text, hub_keys, source=str(p))


def files_in(path: str | Path) -> list[Path]:
    """The checkpoint files a --trusted-checkpoint names: the file, or each `*.json` of a
    directory (a member's or an auditor's collection), in name order."""
    p = Path(path)
    if p.is_dir():
        return sorted(q for q in p.glob("*.json") if q.is_file())
    return [p]
