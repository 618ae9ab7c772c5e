"""The audit leaf: the unrolled hash the verification runs is the documented format's hash,
for every field length (short ones take a lookup table, long ones the general path)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.domain.auditleaf import leaf_bytes, leaf_of, micros
from hub.service.auditlog import entry_leaf, leaf_data
from hub.service.ports import AuditEntry, AuditRecord

# Long fields (4 KiB and over, past the lookup table) built from a few random bytes: cheap
# to draw, long to hash.
field = st.one_of(st.binary(max_size=40), st.binary(min_size=7, max_size=8).map(lambda b: b * 585))
number = st.integers(0, 2**63 - 1)


@settings(max_examples=60)
@given(st.tuples(number, number, number, field, field, field, field, field, field, field))
def test_the_fast_leaf_hashes_the_documented_bytes(values: tuple[object, ...]) -> None:
    data = leaf_bytes(*values)  # type: ignore[arg-type]
    assert leaf_of(*values) == hashlib.sha256(b"\x00" + data).digest()  # type: ignore[arg-type]


def test_the_leaf_data_layout() -> None:
    """docs/audit.md, field by field: a length, then the bytes."""
    record = AuditRecord(
        7,
        datetime(2026, 11, 1, 0, 0, 0, 5, tzinfo=UTC),
        AuditEntry("sent", "HUB", "m-1", "stop sent", payload=b"env", case_id="C1"),
    )
    expected = b"".join(
        len(f).to_bytes(4, "big") + f
        for f in (
            b"stophub-audit/1",
            b"3",
            b"7",
            b"%d" % micros(record.recorded_at),
            b"sent",
            b"HUB",
            b"m-1",
            b"C1",
            b"",
            b"stop sent",
            hashlib.sha256(b"env").hexdigest().encode(),
        )
    )
    assert leaf_data(3, record) == expected
    assert entry_leaf(3, record) == hashlib.sha256(b"\x00" + expected).digest()
    assert micros(record.recorded_at) == 1_793_491_200_000_005
