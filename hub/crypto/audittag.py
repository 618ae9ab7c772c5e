"""The hub's tag on each audit entry (docs/audit.md, "The hub's tag on each entry"; issue 21).

An entry's leaf binds its content, but anyone who can write the database can compute a leaf.
The tag cannot be: it is an HMAC-SHA256 of the entry's content and id, made in the entry's
own transaction, under a key derived from one of the hub's data keys, which are never in the
database. So the sequencer places only entries the hub wrote, and `audit verify` names every
other one.

    K_tag(kid) = HKDF-SHA256(ikm = data key `kid`, salt none, info "stophub/audit-tag/v1", 32)
    tag        = HMAC-SHA256(K_tag(kid), tag data)

The tag data is the leaf data with field 1 `stophub-audit-tag/1` and an empty position
(hub.domain.auditleaf.tag_bytes). `tag_key` is the id of the data key current for sealing
when the entry was written.

The keys are looked up at use in a keyring (by default the process-wide one of
hub.crypto.fields, which a hub reloads on rotation), and each derived key is kept by id.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hub.crypto import fields
from hub.crypto.fields import DataKeysNotConfigured, KeyEntry, Keyring
from hub.domain.auditleaf import tag_bytes

INFO = b"stophub/audit-tag/v1"
TAG_BYTES = 32

_hmac = hmac.digest


def derive(data_key: bytes) -> bytes:
    """K_tag for one data key."""
    return HKDF(algorithm=hashes.SHA256(), length=TAG_BYTES, salt=None, info=INFO).derive(data_key)


def tag_of(
    key: bytes,
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
    """The tag of an entry under the derived key `key` (fields as the leaf hashes them)."""
    return _hmac(
        key,
        tag_bytes(
            entry_id,
            at_micros,
            kind,
            actor,
            message_id,
            case_id,
            order_id,
            detail,
            payload_sha256_hex,
        ),
        "sha256",
    )


class TagKeys:
    """Derived tag keys by data key id, from a keyring read at each use (`ring()`), so a
    rotation (a reloaded keyring) takes effect at once. A derivation is kept by id for as
    long as that id names the same data key."""

    def __init__(
        self, ring: Callable[[], Keyring], reload: Callable[[], Keyring] | None = None
    ) -> None:
        self._ring = ring
        self._reload = reload
        self._derived: dict[str, tuple[bytes, bytes]] = {}
        self._lock = threading.Lock()

    @classmethod
    def of(cls, pairs: Sequence[KeyEntry], current: str | None = None) -> TagKeys:
        """Fixed keys (a worker process of a scan, a test)."""
        ring = Keyring(pairs, current)
        return cls(lambda: ring)

    def _derive(self, kid: str, data_key: bytes) -> bytes:
        kept = self._derived.get(kid)
        if kept is not None and kept[0] == data_key:
            return kept[1]
        key = derive(data_key)
        with self._lock:
            self._derived[kid] = (data_key, key)
        return key

    def current(self) -> tuple[str, bytes]:
        """(id, derived key) of the data key current for sealing."""
        ring = self._ring()
        return ring.current, self._derive(ring.current, ring.keys[ring.current])

    def get(self, kid: str) -> bytes | None:
        """The derived key of data key `kid`, None when the keyring does not hold it (after
        one reload: another replica may have rotated to a key this one has not read yet)."""
        ring = self._ring()
        data_key = ring.keys.get(kid)
        if data_key is None and self._reload is not None and ring.source is not None:
            data_key = self._reload().keys.get(kid)
        return None if data_key is None else self._derive(kid, data_key)

    def problem(
        self,
        tag_key: str | None,
        tag: bytes | None,
        entry_id: int,
        at_micros: int,
        kind: bytes,
        actor: bytes,
        message_id: bytes,
        case_id: bytes,
        order_id: bytes,
        detail: bytes,
        payload_sha256_hex: bytes,
    ) -> str:
        """What is wrong with an entry's tag, or "" when it verifies."""
        if tag is None or tag_key is None:
            return "it carries no tag"
        key = self.get(tag_key)
        if key is None:
            return f"its tag is under data key {tag_key!r}, which is not in the keyring"
        made = tag_of(
            key,
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
        if not hmac.compare_digest(made, bytes(tag)):
            return "its tag does not verify"
        return ""


def refused(at: datetime) -> str:
    """What a verification says of an entry the sequencer refused."""
    return f"refused by the sequencer at {at.astimezone(UTC).isoformat()} (its tag did not verify)"


def _process_reload() -> Keyring:
    return fields.reload()


#: The process-wide keyring's tag keys (hub.crypto.fields.configure).
KEYS = TagKeys(fields.keyring, _process_reload)


def configured() -> bool:
    """Whether the process-wide keyring is set (a tag can be made and checked)."""
    try:
        fields.keyring()
    except DataKeysNotConfigured:
        return False
    return True
