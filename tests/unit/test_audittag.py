"""The hub's tag on each audit entry (hub/crypto/audittag.py) against its definition in
docs/audit.md ("The hub's tag on each entry"), computed here independently from the text:
HKDF-SHA256 written out from RFC 5869 with hmac, the tag data written out field by field."""

from __future__ import annotations

import hashlib
import hmac
import struct
from pathlib import Path

import pytest

from hub.crypto import audittag, fields
from hub.crypto.audittag import TagKeys
from hub.crypto.fields import Keyring
from hub.domain import auditleaf

DATA_KEY = bytes(range(32))
OTHER_KEY = bytes(range(50, 82))
# An entry as the leaf hashes it: id 1234, recorded 2026-12-05T01:02:03.000456Z, a payload.
ENTRY = dict(
    entry_id=1234,
    at_micros=1_796_432_523_000_456,
    kind=b"received",
    actor=b"BANKA",
    message_id=b"m-1",
    case_id=b"C20261205-0001",
    order_id=b"",
    detail="IssueOrder accepted by li.wei (approved by zhang.min) · 止付".encode(),
    payload_sha256_hex=hashlib.sha256(b"the envelope").hexdigest().encode(),
)


def hkdf_sha256(ikm: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 with no salt (a string of HashLen zeros)."""
    prk = hmac.new(bytes(32), ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def documented_tag_data(e: dict[str, object]) -> bytes:
    def field(value: bytes) -> bytes:
        return struct.pack(">I", len(value)) + value

    parts = [
        b"stophub-audit-tag/1",
        b"",  # the position: not known when the tag is made
        str(e["entry_id"]).encode(),
        str(e["at_micros"]).encode(),
        e["kind"],
        e["actor"],
        e["message_id"],
        e["case_id"],
        e["order_id"],
        e["detail"],
        e["payload_sha256_hex"],
    ]
    return b"".join(field(p) for p in parts)  # type: ignore[arg-type]


def test_the_tag_is_the_documented_hmac() -> None:
    k_tag = hkdf_sha256(DATA_KEY, b"stophub/audit-tag/v1", 32)
    assert audittag.derive(DATA_KEY) == k_tag
    data = documented_tag_data(ENTRY)
    assert auditleaf.tag_bytes(*ENTRY.values()) == data  # type: ignore[arg-type]
    expected = hmac.new(k_tag, data, hashlib.sha256).digest()
    assert audittag.tag_of(k_tag, *ENTRY.values()) == expected  # type: ignore[arg-type]
    # A fixed vector, so that a change to the definition shows here and in the docs.
    assert expected.hex() == VECTOR


VECTOR = "27a3934e3432009fbe54738bbe5bd866aae9ff951de232a0e52c52c6af3bdcc2"


def test_the_tag_data_is_the_leaf_data_with_another_format_and_no_position() -> None:
    values = list(ENTRY.values())
    leaf = auditleaf.leaf_bytes(7, *values)  # type: ignore[arg-type]
    tag = auditleaf.tag_bytes(*values)  # type: ignore[arg-type]
    head = struct.pack(">I", 15) + b"stophub-audit/1" + struct.pack(">I", 1) + b"7"
    assert leaf.startswith(head)
    assert tag == struct.pack(">I", 19) + b"stophub-audit-tag/1" + bytes(4) + leaf[len(head) :]


def test_long_fields_take_the_slow_path_to_the_same_bytes() -> None:
    e = {**ENTRY, "detail": b"x" * 5000}
    assert auditleaf.tag_bytes(*e.values()) == documented_tag_data(e)  # type: ignore[arg-type]


def test_every_field_changes_the_tag() -> None:
    key = audittag.derive(DATA_KEY)
    base = audittag.tag_of(key, *ENTRY.values())  # type: ignore[arg-type]
    for name, value in ENTRY.items():
        changed = value + 1 if isinstance(value, int) else value + b"!"  # type: ignore[operator]
        e = {**ENTRY, name: changed}
        assert audittag.tag_of(key, *e.values()) != base, name  # type: ignore[arg-type]


def test_keys_are_looked_up_by_id_and_the_current_one_tags() -> None:
    keys = TagKeys.of([("dk-a", DATA_KEY), ("dk-b", OTHER_KEY)], "dk-b")
    kid, key = keys.current()
    assert (kid, key) == ("dk-b", audittag.derive(OTHER_KEY))
    assert keys.get("dk-a") == audittag.derive(DATA_KEY)
    assert keys.get("dk-gone") is None
    tag = audittag.tag_of(key, *ENTRY.values())  # type: ignore[arg-type]
    fields_ = list(ENTRY.values())
    assert keys.problem("dk-b", tag, *fields_) == ""  # type: ignore[arg-type]
    assert keys.problem("dk-a", tag, *fields_) == "its tag does not verify"  # type: ignore[arg-type]
    assert keys.problem("dk-b", None, *fields_) == "it carries no tag"  # type: ignore[arg-type]
    assert keys.problem(None, tag, *fields_) == "it carries no tag"  # type: ignore[arg-type]
    assert (
        keys.problem("dk-gone", tag, *fields_)  # type: ignore[arg-type]
        == "its tag is under data key 'dk-gone', which is not in the keyring"
    )


def test_the_process_keyring_is_read_at_use(tmp_path: Path) -> None:
    """A rotation (a keyring reloaded) takes effect without restarting: the current key is
    looked up at each tag, and a key id not yet known is looked for in the file again."""
    before = fields.configured()
    try:
        path = tmp_path / "keys.json"
        ring = Keyring([("dk-a", DATA_KEY)])
        ring.save(path)
        fields.configure(fields.load_keyring_file(path))
        keys = TagKeys(fields.keyring, fields.reload)
        assert keys.current() == ("dk-a", audittag.derive(DATA_KEY))
        # Another replica rotates: the file has a new current key this process has not read.
        ring.with_key("dk-b", OTHER_KEY, make_current=True).save(path)
        assert keys.get("dk-b") == audittag.derive(OTHER_KEY)
        assert keys.current() == ("dk-b", audittag.derive(OTHER_KEY))
        assert keys.get("dk-never") is None
    finally:
        fields.configure(before)


def test_a_keyring_that_changes_under_an_id_is_derived_again() -> None:
    holder = [Keyring([("dk-a", DATA_KEY)])]
    keys = TagKeys(lambda: holder[0])
    assert keys.get("dk-a") == audittag.derive(DATA_KEY)
    holder[0] = Keyring([("dk-a", OTHER_KEY)])
    assert keys.get("dk-a") == audittag.derive(OTHER_KEY)


@pytest.mark.parametrize("tag", [b"", b"\x00" * 32, b"\x00" * 31])
def test_a_tag_of_another_shape_does_not_verify(tag: bytes) -> None:
    keys = TagKeys.of([("dk-a", DATA_KEY)])
    assert keys.problem("dk-a", tag, *ENTRY.values()) == "its tag does not verify"  # type: ignore[arg-type]
