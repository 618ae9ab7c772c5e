"""The C accelerator of `stophub audit verify` (hub/store/_leafscan.c, ADR 18) against the
Python loop it accelerates: for any rows, well formed or hostile, the two give the same ids,
places, leaves, findings and tag verdicts (or raise the same error), and the rows that verify
(leaf and hub's tag) never leave C, while a row whose tag is wrong, missing or under an
unknown key always does. The rows are built as the database drivers hand them back: SQLite
with text as bytes and times as text, psycopg's binary cursor with text as str and times as
aware datetimes."""

from __future__ import annotations

import os
import shutil
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.crypto.audittag import derive, tag_of
from hub.crypto.fields import Keyring
from hub.domain import merkle
from hub.domain.auditleaf import micros, payload_digest
from hub.service.ports import LeafChunk
from hub.store import auditscan
from hub.store.auditscan import LeafHasher

KEYS = [("dk-old", bytes(range(32))), ("dk-new", bytes(range(100, 132)))]
RING = Keyring(KEYS, "dk-new")
OTHER = Keyring([("dk-gone", bytes(32))])
DETAIL, PAYLOAD = "audit_log.detail", "audit_log.payload"


def _can_build() -> str | None:
    """Why the accelerator could not have been built here, if it could not."""
    if shutil.which(os.environ.get("CC", "cc")) is None:
        return "no C compiler on this machine: the install skips the optional accelerator"
    headers = [Path(p) for p in ("/usr/include/openssl/evp.h", "/usr/local/include/openssl/evp.h")]
    if not any(h.exists() for h in headers):
        return "no OpenSSL headers (libssl-dev): the install skips the optional accelerator"
    if not Path(sysconfig.get_paths()["include"], "Python.h").exists():
        return "no Python headers: the install skips the optional accelerator"
    return None


needs_native = pytest.mark.skipif(
    not auditscan.native_available(), reason=_can_build() or "the accelerator is not built"
)


def test_the_accelerator_is_built_where_it_can_be() -> None:
    """A machine with a compiler and the headers must not fall back to Python silently:
    verification would be several times slower with nothing to say why."""
    why_not = _can_build()
    if why_not:
        pytest.skip(why_not)
    assert auditscan.native_available(), (
        "hub/store/_leafscan.c did not build: run `pip install -e .` with -v to see the "
        "compiler's error"
    )
    assert merkle._fold is not None, (
        "hub/domain/_merklefold.c did not build: run `pip install -e .` with -v to see the "
        "compiler's error"
    )


def hashers(sqlite: bool) -> tuple[LeafHasher, LeafHasher]:
    native = LeafHasher(RING.pairs(), RING.current, sqlite=sqlite, native=True)
    python = LeafHasher(RING.pairs(), RING.current, sqlite=sqlite, native=False)
    assert native.native
    return native, python


def outcome(hash_rows: Callable[[list[Any]], LeafChunk], rows: list[Any]) -> object:
    try:
        chunk = hash_rows(rows)
    except Exception as err:  # the Python loop's own error, which both must raise
        return ("raised", type(err))
    return (
        list(chunk.ids),
        list(chunk.indexes),
        chunk.leaves,
        chunk.mismatched,
        chunk.forged,
        chunk.untagged,
    )


# ---- rows ---------------------------------------------------------------------------------------

# Short fields, and long ones (4 KiB and over: past auditleaf's lookup table).
raw_text = st.one_of(
    st.binary(max_size=30), st.binary(min_size=3, max_size=4).map(lambda b: b * 1100)
)
text = st.one_of(st.text(max_size=20), st.text(min_size=1, max_size=2).map(lambda t: t * 2100))
moments = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59))
ids = st.integers(-(2**63), 2**63 - 1)


@dataclass
class Row:
    """One audit_log row's values before the driver's types are applied."""

    entry_id: int
    at: datetime
    kind: Any
    actor: Any
    message_id: Any
    case_id: Any
    order_id: Any
    payload: bytes | None
    detail: bytes
    index: int | None
    stored: str  # "right", "wrong" or "none"
    # The hub's tag: "right", "wrong", "none" (an untagged row), "no-tag" (a key id but no
    # tag), "unknown" (under a key not in the ring), "old" (right, under the older key).
    tag: str = "right"
    refused: bool = False

    def sealed_payload(self) -> bytes | None:
        return None if self.payload is None else RING.seal(self.payload, PAYLOAD)

    def tag_columns(self, sqlite: bool) -> tuple[Any, Any]:
        """(tag_key, tag) as the hub would have written them, or as asked."""
        if self.tag == "none":
            return None, None
        kid = {"old": "dk-old", "unknown": "dk-gone"}.get(self.tag, RING.current)
        key = derive(dict([*KEYS, *OTHER.pairs()])[kid])

        def enc(value: Any) -> bytes:
            return b"" if value is None else value if isinstance(value, bytes) else value.encode()

        right = tag_of(
            key,
            self.entry_id,
            micros(self.at.replace(tzinfo=UTC)),
            enc(self.kind),
            enc(self.actor),
            enc(self.message_id),
            enc(self.case_id),
            enc(self.order_id),
            self.detail,
            payload_digest(self.payload),
        )
        tag = {"wrong": right[:31] + bytes([right[31] ^ 1]), "no-tag": None}.get(self.tag, right)
        return kid.encode() if sqlite else kid, tag


def rows_for(sqlite: bool) -> st.SearchStrategy[Row]:
    t = raw_text if sqlite else text
    return st.builds(
        Row,
        entry_id=ids,
        at=moments,
        kind=t,
        actor=t,
        message_id=t,
        case_id=st.none() | t,
        order_id=st.none() | t,
        payload=st.none() | st.binary(max_size=600),
        detail=st.binary(max_size=300) | st.just(b"d" * 5000),
        index=st.none() | ids,
        stored=st.sampled_from(["right", "right", "right", "wrong", "none"]),
        tag=st.sampled_from(
            ["right", "right", "right", "wrong", "none", "no-tag", "unknown", "old"]
        ),
        refused=st.booleans(),
    )


def driver_rows(rows: list[Row], sqlite: bool, at: Callable[[datetime], Any]) -> list[Any]:
    """The tuples the driver would return, with each stored leaf as asked: the right one is
    what the Python loop computes."""
    raw = [
        (
            r.entry_id,
            at(r.at),
            r.kind,
            r.actor,
            r.message_id,
            r.case_id,
            r.order_id,
            r.sealed_payload(),
            RING.seal(r.detail, DETAIL),
            r.index,
            None,
            *r.tag_columns(sqlite),
            (at(datetime(2026, 12, 1)) if sqlite else datetime(2026, 12, 1, tzinfo=UTC))
            if r.refused
            else None,
        )
        for r in rows
    ]
    python = LeafHasher(RING.pairs(), RING.current, sqlite=sqlite, native=False)
    leaves = python.hash_python(raw).leaves
    out = []
    for n, (r, values) in enumerate(zip(rows, raw, strict=True)):
        leaf = {"right": leaves[32 * n : 32 * n + 32], "wrong": bytes(31) + b"\x01", "none": None}
        out.append((*values[:10], leaf[r.stored], *values[11:]))
    return out


def sqlite_time(at: datetime) -> bytes:
    return at.isoformat(sep=" ").encode()  # what SQLAlchemy stores: no zone, .ffffff if any


def postgres_time(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC)


@needs_native
@pytest.mark.parametrize("sqlite", [True, False], ids=["sqlite", "postgres"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_rows_give_the_same_chunk_in_c_and_python(sqlite: bool, data: st.DataObject) -> None:
    rows = data.draw(st.lists(rows_for(sqlite), max_size=12))
    native, python = hashers(sqlite)
    values = driver_rows(rows, sqlite, sqlite_time if sqlite else postgres_time)
    assert outcome(native.hash, values) == outcome(python.hash, values)


def _call(sqlite: bool, values: list[Any]) -> tuple[bytes, bytes, bytes, list[int], list[int]]:
    from hub.store import _leafscan

    hasher = LeafHasher(RING.pairs(), RING.current, sqlite=sqlite, native=True)
    return _leafscan.hash_rows(
        values, sqlite, hasher.key_map, hasher.detail_aad, hasher.payload_aad, hasher.tag_map
    )


@needs_native
@settings(max_examples=60, deadline=None)
@given(st.lists(rows_for(sqlite=True), min_size=1, max_size=8), st.booleans())
def test_rows_that_verify_never_leave_c(rows: list[Row], sqlite: bool) -> None:
    """Otherwise the accelerator would be correct and useless: every row would be hashed
    twice, once in C and again in Python."""
    for r in rows:
        r.stored, r.tag, r.refused = "right", "right", False
        if r.index is None:
            r.index = 0
        if not sqlite:
            r.kind, r.actor, r.message_id = "kind", "actor", "message"
            r.case_id, r.order_id = "C-1", None
    values = driver_rows(rows, sqlite, sqlite_time if sqlite else postgres_time)
    assert _call(sqlite, values)[3:] == ([], [])


@needs_native
@pytest.mark.parametrize("sqlite", [True, False], ids=["sqlite", "postgres"])
@pytest.mark.parametrize("tag", ["wrong", "no-tag", "unknown", "none", "old", "right"])
def test_a_tag_that_does_not_verify_leaves_c(sqlite: bool, tag: str) -> None:
    """A wrong tag, a missing one, one under a key the ring does not hold: the row goes to
    the Python loop, which names it; a right one (under any key of the ring) stays in C; a
    row with no tag at all stays in C and is reported untagged, for the verification to
    judge by its place."""
    good = GOOD if sqlite else PG_GOOD
    row = Row(**{**good.__dict__, "tag": tag})
    values = driver_rows([row], sqlite, sqlite_time if sqlite else postgres_time)
    slow, untagged = _call(sqlite, values)[3:]
    assert slow == ([] if tag in ("right", "old", "none") else [0])
    assert untagged == ([0] if tag == "none" else [])
    native, python = hashers(sqlite)
    assert outcome(native.hash, values) == outcome(python.hash, values)
    reasons = [f.reason for f in native.hash(values).forged]
    expected = {
        "wrong": ["its tag does not verify"],
        "no-tag": ["it carries no tag"],
        "unknown": ["its tag is under data key 'dk-gone', which is not in the keyring"],
    }
    assert reasons == expected.get(tag, [])


@needs_native
@pytest.mark.parametrize("sqlite", [True, False], ids=["sqlite", "postgres"])
def test_a_refused_or_unplaced_row_leaves_c(sqlite: bool) -> None:
    good = GOOD if sqlite else PG_GOOD
    refused = Row(**{**good.__dict__, "refused": True})
    waiting = Row(**{**good.__dict__, "index": None, "entry_id": 42})
    values = driver_rows([refused, waiting], sqlite, sqlite_time if sqlite else postgres_time)
    assert _call(sqlite, values)[3] == [0, 1]
    native, python = hashers(sqlite)
    assert outcome(native.hash, values) == outcome(python.hash, values)
    (forged,) = native.hash(values).forged
    assert (forged.position, forged.reason) == (
        0,
        "refused by the sequencer at 2026-12-01T00:00:00+00:00 (its tag did not verify)",
    )


# ---- hostile rows: each must give the Python loop's answer ------------------------------------

GOOD = Row(41, datetime(2026, 11, 22, 18, 5, 1, 250), b"sent", b"HUB", b"m-1", b"C1", None,
           b"envelope", b"stop sent", 7, "right")  # fmt: skip
PG_GOOD = Row(41, GOOD.at, "sent", "HUB", "m-1", "C1", None, b"envelope", b"stop sent", 7,
              "right")  # fmt: skip


def sealed_variants() -> dict[str, bytes]:
    good = RING.seal(b"stop sent", DETAIL)
    flipped = bytearray(good)
    flipped[-20] ^= 1
    return {
        "a flipped bit": bytes(flipped),
        "truncated below the tag": good[: 2 + 6 + 12 + 15],
        "only the header": good[:2],
        "empty": b"",
        "version 2": b"\x02" + good[1:],
        "key id length past the end": good[:1] + b"\xff" + good[2:],
        "an unknown key": OTHER.seal(b"stop sent", DETAIL),
        "sealed for the payload column": RING.seal(b"stop sent", PAYLOAD),
        "an older key of the ring": Keyring(KEYS, "dk-old").seal(b"stop sent", DETAIL),
    }


@needs_native
@pytest.mark.parametrize("column", ["detail", "payload"])
@pytest.mark.parametrize("variant", sorted(sealed_variants()))
def test_a_sealed_value_that_does_not_open_is_left_to_python(column: str, variant: str) -> None:
    native, python = hashers(sqlite=True)
    (row,) = driver_rows([GOOD], True, sqlite_time)
    value = sealed_variants()[variant]
    if column == "payload" and variant == "sealed for the payload column":
        value = RING.seal(b"envelope", DETAIL)  # the detail's seal in the payload column
    values = [list(row)]
    values[0][8 if column == "detail" else 7] = value
    rows = [tuple(v) for v in values]
    assert outcome(native.hash, rows) == outcome(python.hash, rows)
    chunk = native.hash(rows)
    if variant == "an older key of the ring":
        assert chunk.mismatched == [] or column == "payload"
    else:
        assert [m.unreadable != "" for m in chunk.mismatched] == [True]


SQLITE_TIMES = [
    b"2026-11-22 18:05:01",
    b"2026-11-22 18:05:01.000250",
    b"2026-11-22T18:05:01.000250",
    b"2026-11-22 18:05:01.25",
    b"2026-11-22 18:05:01.000250+00:00",
    b"2026-11-22 18:05:01.000250junk",
    b"2026-11-22 18:05:01junk",
    b"2024-02-29 00:00:00.000000",
    b"2026-02-29 00:00:00.000000",
    b"2026-13-01 00:00:00.000000",
    b"2026-11-22 24:00:00.000000",
    b"2026-11-22 18:60:00.000000",
    b"0001-01-01 00:00:00.000000",
    b"9999-12-31 23:59:59.999999",
    b"1969-12-31 23:59:59.999999",
    b"2026-11-22 18:05:0a.000000",
    b"",
]


def stored_for(row: tuple[Any, ...], at: Any, sqlite: bool) -> tuple[Any, ...]:
    """`row` with its time replaced by `at` and its stored leaf made for `at`: a leaf the
    accelerator must not match with a time it reads differently from the Python loop."""
    values = [(*row[:1], at, *row[2:10], None, *row[11:])]
    python = LeafHasher(RING.pairs(), RING.current, sqlite=sqlite, native=False)
    return (*row[:10], python.hash_python(values).leaves, *row[11:])


def candidates(at: bytes) -> list[bytes]:
    """Times the stored leaf is made for: the row's own, and each prefix a careless parser
    could stop at."""
    return [sqlite_time(GOOD.at), at[:19], at[:26], at[:19] + b".000000"]


@needs_native
@pytest.mark.parametrize("at", SQLITE_TIMES)
def test_sqlite_times_in_any_form(at: bytes) -> None:
    native, python = hashers(sqlite=True)
    (row,) = driver_rows([GOOD], True, sqlite_time)
    for made_for in candidates(at):
        try:
            values = stored_for(row, made_for, True)
        except (ValueError, TypeError):  # not a time the Python loop reads
            continue
        rows = [(values[0], at, *values[2:])]
        assert outcome(native.hash, rows) == outcome(python.hash, rows), made_for


@needs_native
@pytest.mark.parametrize(
    "at",
    [
        datetime(2026, 11, 22, 18, 5, 1, 250, tzinfo=UTC),
        datetime(2026, 11, 22, 19, 5, 1, 250, tzinfo=timezone(timedelta(hours=1))),
        datetime(2026, 11, 22, 19, 5, 1, 250, tzinfo=ZoneInfo("Europe/Berlin")),
        datetime(2026, 11, 22, 18, 5, 1, 250, tzinfo=ZoneInfo("Etc/UTC")),
        datetime(2026, 11, 22, 18, 5, 1, 250),  # naive: the Python loop refuses it
        "2026-11-22 18:05:01",
    ],
    ids=["utc", "plus-one", "berlin", "etc-utc", "naive", "text"],
)
def test_postgres_times_in_any_zone(at: Any) -> None:
    native, python = hashers(sqlite=False)
    good = Row(**{**GOOD.__dict__, "kind": "sent", "actor": "HUB", "message_id": "m-1",
                  "case_id": "C1"})  # fmt: skip
    (row,) = driver_rows([good], False, postgres_time)
    rows = [(row[0], at, *row[2:])]
    result = outcome(native.hash, rows)
    assert result == outcome(python.hash, rows)
    if isinstance(at, datetime) and at.tzinfo is not None:  # the same instant: it verifies
        assert result[3] == []  # type: ignore[index]
    if isinstance(at, datetime):  # a leaf made for the wall clock read as if it were UTC
        values = stored_for(row, at.replace(tzinfo=UTC), False)
        rows = [(values[0], at, *values[2:])]
        assert outcome(native.hash, rows) == outcome(python.hash, rows)


@needs_native
@pytest.mark.parametrize(
    "position, value",
    [
        (0, "41"),
        (0, 2**64),
        (0, None),
        (2, "sent"),  # str where SQLite gives bytes
        (2, 7),
        (5, b""),
        (7, "not bytes"),
        (8, None),
        (9, "7"),
        (9, 2**63),
        (9, -1),
        (9, True),
        (10, b"short"),
        (10, "a" * 32),
        (11, 7),
        (11, "dk-new"),  # str where SQLite gives bytes
        (11, b"dk-gone"),
        (11, None),
        (12, "a" * 32),
        (12, b"short"),
        (12, bytes(32)),
        (12, None),
        (13, b"2026-12-01 00:00:00"),
    ],
)
def test_values_of_the_wrong_type(position: int, value: Any) -> None:
    native, python = hashers(sqlite=True)
    (row,) = driver_rows([GOOD], True, sqlite_time)
    values = list(row)
    values[position] = value
    rows = [tuple(values)]
    assert outcome(native.hash, rows) == outcome(python.hash, rows)


@needs_native
@pytest.mark.parametrize("row", [("too", "short"), [1] * 14, None, (1,) * 11, (1,) * 15])
def test_rows_of_the_wrong_shape(row: Any) -> None:
    native, python = hashers(sqlite=True)
    assert outcome(native.hash, [row]) == outcome(python.hash, [row])


@needs_native
def test_lone_surrogates_from_postgres() -> None:
    native, python = hashers(sqlite=False)
    good = Row(**{**GOOD.__dict__, "kind": "sent\udc80", "actor": "HUB", "message_id": "m",
                  "case_id": None})  # fmt: skip
    rows = [
        (41, postgres_time(GOOD.at), good.kind, "HUB", "m", None, None, None,
         RING.seal(b"x", DETAIL), 3, bytes(32), "dk-new", bytes(32), None)
    ]  # fmt: skip
    assert outcome(native.hash, rows) == outcome(python.hash, rows)
    assert outcome(native.hash, rows)[0] == "raised"


@needs_native
def test_bad_keys_are_refused() -> None:
    from hub.store import _leafscan

    with pytest.raises(ValueError, match="32-byte key"):
        _leafscan.hash_rows([], True, {b"dk": b"short"}, b"", b"", {})
    with pytest.raises(ValueError, match="32-byte key"):
        _leafscan.hash_rows([], True, {}, b"", b"", {b"dk": b"short"})
    with pytest.raises(TypeError):
        _leafscan.hash_rows((), True, {}, b"", b"", {})  # type: ignore[arg-type]


@needs_native
@pytest.mark.parametrize("tag", ["a" * 32, 7, bytearray(32)])
def test_a_tag_of_another_type_is_forged_not_a_crash(tag: Any) -> None:
    """SQLite keeps whatever a writer stored in the tag column."""
    native, python = hashers(sqlite=True)
    (row,) = driver_rows([GOOD], True, sqlite_time)
    rows = [(*row[:12], tag, None)]
    assert outcome(native.hash, rows) == outcome(python.hash, rows)
    assert [f.reason for f in native.hash(rows).forged] == ["its tag does not verify"]


# ---- SM4-GCM (issue 24): OpenSSL 3.0 has no SM4-GCM, so its rows go to Python ------------------

SM4_RING = Keyring([*KEYS, ("dk-sm4", bytes(range(16)), "sm4-gcm")], "dk-new")


def _sm4_rows(sqlite: bool, tamper: bool) -> tuple[list[Any], set[int]]:
    """Rows that verify, every other one with its detail and payload re-sealed under the SM4
    key (the leaf and the tag are of the clear text, so they still verify); `tamper` flips a
    bit in one SM4-sealed detail."""
    rows = [
        Row(
            entry_id=n + 1,
            at=datetime(2026, 12, 6, 1, 2, 3, 4000 * n),
            kind=b"kind" if sqlite else "kind",
            actor=b"BANKA" if sqlite else "BANKA",
            message_id=b"m-%d" % n if sqlite else f"m-{n}",
            case_id=None,
            order_id=None,
            payload=b"signed envelope %d" % n if n % 3 else None,
            detail=b"detail naming Zhang San %d" % n,
            index=n,
            stored="right",
        )
        for n in range(8)
    ]
    values = driver_rows(rows, sqlite, sqlite_time if sqlite else postgres_time)
    sm4 = {n for n in range(len(values)) if n % 2}
    for n in sm4:
        row = list(values[n])
        ring = SM4_RING.with_current("dk-sm4")
        row[8] = ring.seal(rows[n].detail, DETAIL)
        if rows[n].payload is not None:
            row[7] = ring.seal(rows[n].payload, PAYLOAD)
        if tamper and n == 3:
            row[8] = row[8][:-1] + bytes([row[8][-1] ^ 1])
        values[n] = tuple(row)
    return values, sm4


@needs_native
@pytest.mark.parametrize("sqlite", [True, False], ids=["sqlite", "postgres"])
@pytest.mark.parametrize("tamper", [False, True], ids=["honest", "tampered"])
def test_rows_sealed_with_sm4_fall_back_to_python_with_the_same_result(
    sqlite: bool, tamper: bool
) -> None:
    values, sm4 = _sm4_rows(sqlite, tamper)
    native = LeafHasher(SM4_RING.entries(), SM4_RING.current, sqlite=sqlite, native=True)
    python = LeafHasher(SM4_RING.entries(), SM4_RING.current, sqlite=sqlite, native=False)
    assert native.native and b"dk-sm4" not in native.key_map
    assert outcome(native.hash, values) == outcome(python.hash, values)
    from hub.store import _leafscan

    slow = _leafscan.hash_rows(
        values, sqlite, native.key_map, native.detail_aad, native.payload_aad, native.tag_map
    )[3]
    assert set(slow) == sm4, "AES rows stay in C, SM4 rows go to Python"
    chunk = native.hash(values)
    if tamper:
        assert [m.position for m in chunk.mismatched] == [3]
    else:
        assert chunk.mismatched == [] and chunk.forged == []
