"""The bytes an audit entry's Merkle leaf hashes (docs/audit.md, "Leaf data").

One function builds them, from the fields as UTF-8 bytes: the service hashes records with it,
and the database scan that `stophub audit verify` runs hashes raw rows with it, so the two can
never disagree about the format. It is the verification's innermost loop (a million calls a
check), so it is written for speed: one join, no per-field loop.
"""

from __future__ import annotations

import hashlib
import struct
from datetime import UTC, datetime, timedelta

LEAF_FORMAT = "stophub-audit/1"
# The hub's tag on an entry (docs/audit.md, "The hub's tag on each entry") MACs the leaf data
# under this first field, with an empty position: the position is not known when it is made.
TAG_FORMAT = "stophub-audit-tag/1"

_U32 = struct.Struct(">I").pack
_FORMAT = LEAF_FORMAT.encode()
_HEAD = _U32(len(_FORMAT)) + _FORMAT
_TAG_FORMAT = TAG_FORMAT.encode()
# Fields 1 and 2 of the tag data: the format, and the position, empty.
_TAG_HEAD = _U32(len(_TAG_FORMAT)) + _TAG_FORMAT + _U32(0)
_LEAF_PREFIX = b"\x00"  # RFC 6962: a leaf hash is SHA-256(0x00 || leaf data)
_sha256 = hashlib.sha256

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# SQLite hands back UTC times without a zone (hub.store.tables.UTCDateTime stores them so).
EPOCH_NAIVE = EPOCH.replace(tzinfo=None)
MICROSECOND = timedelta(microseconds=1)


def micros(at: datetime) -> int:
    """Microseconds since the Unix epoch, exactly (timedelta arithmetic, no floats)."""
    return (at - (EPOCH if at.tzinfo is not None else EPOCH_NAIVE)) // MICROSECOND


# Length prefixes of short fields, looked up rather than packed: a lookup costs a third of a
# call, and all but a rare field (a long detail, a tampered row) are shorter than this.
_SHORT = [_U32(n) for n in range(4096)]


def leaf_bytes(
    index: int,
    entry_id: int,
    at_micros: int,
    kind: bytes,
    actor: bytes,
    message_id: bytes,
    case_id: bytes,
    order_id: bytes,
    detail: bytes,
    payload_sha256_hex: bytes,
) -> bytes:
    """The leaf data: each field a 4-byte big-endian length and its bytes."""
    out = [_HEAD]
    for part in (
        b"%d" % index,
        b"%d" % entry_id,
        b"%d" % at_micros,
        kind,
        actor,
        message_id,
        case_id,
        order_id,
        detail,
        payload_sha256_hex,
    ):
        out += (_U32(len(part)), part)
    return b"".join(out)


def leaf_of(
    index: int,
    entry_id: int,
    at_micros: int,
    kind: bytes,
    actor: bytes,
    message_id: bytes,
    case_id: bytes,
    order_id: bytes,
    detail: bytes,
    payload_sha256_hex: bytes,
) -> bytes:
    """The leaf hash, SHA-256(0x00 || leaf data): `leaf_bytes` unrolled, since verifying a
    log runs it once per entry (a test holds the two to the same bytes)."""
    a = b"%d" % index
    b = b"%d" % entry_id
    c = b"%d" % at_micros
    n = _SHORT
    try:
        data = b"".join(
            (
                _LEAF_PREFIX,
                _HEAD,
                n[len(a)],
                a,
                n[len(b)],
                b,
                n[len(c)],
                c,
                n[len(kind)],
                kind,
                n[len(actor)],
                actor,
                n[len(message_id)],
                message_id,
                n[len(case_id)],
                case_id,
                n[len(order_id)],
                order_id,
                n[len(detail)],
                detail,
                n[len(payload_sha256_hex)],
                payload_sha256_hex,
            )
        )
    except IndexError:  # a field of 4 KiB or more
        data = _LEAF_PREFIX + leaf_bytes(
            index,
            entry_id,
            at_micros,
            kind,
            actor,
            message_id,
            case_id,
            order_id,
            detail,
            payload_sha256_hex,
        )
    return _sha256(data).digest()


def tag_bytes(
    entry_id: int,
    at_micros: int,
    kind: bytes,
    actor: bytes,
    message_id: bytes,
    case_id: bytes,
    order_id: bytes,
    detail: bytes,
    payload_sha256_hex: bytes,
) -> bytes:
    """The data the hub's tag MACs: the leaf data with field 1 `stophub-audit-tag/1` and
    field 2 (the position) empty, every other field as in the leaf."""
    b = b"%d" % entry_id
    c = b"%d" % at_micros
    n = _SHORT
    try:
        return b"".join(
            (
                _TAG_HEAD,
                n[len(b)],
                b,
                n[len(c)],
                c,
                n[len(kind)],
                kind,
                n[len(actor)],
                actor,
                n[len(message_id)],
                message_id,
                n[len(case_id)],
                case_id,
                n[len(order_id)],
                order_id,
                n[len(detail)],
                detail,
                n[len(payload_sha256_hex)],
                payload_sha256_hex,
            )
        )
    except IndexError:  # a field of 4 KiB or more
        out = [_TAG_HEAD]
        for part in (
            b,
            c,
            kind,
            actor,
            message_id,
            case_id,
            order_id,
            detail,
            payload_sha256_hex,
        ):
            out += (_U32(len(part)), part)
        return b"".join(out)


def payload_digest(payload: bytes | None) -> bytes:
    """Field 11: the envelope's SHA-256 in lower-case hex, empty when there is none."""
    return b"" if payload is None else _sha256(payload).hexdigest().encode()
