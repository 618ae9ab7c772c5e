"""Account numbers are masked in every log line: message, arguments and tracebacks; the ids
and times beside them are not."""

from __future__ import annotations

import io
import logging
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hub.observability import logmask
from hub.observability.logmask import mask_accounts


@pytest.mark.parametrize(
    "text, expected",
    [
        ("hold in 6222020000001234 at BANKB", "hold in 6222********1234 at BANKB"),
        ("id 110101199003077777", "id 1101**********7777"),
        ("a/c 6222010000000001,6222020000000002.", "a/c 6222********0001,6222********0002."),
        ("phone 13800138000", "phone 1380***8000"),
        # Short numbers stay: amounts in fen, sequences, years, ports, timestamps' parts.
        ("held 500000000 fen, seq 42, 2026-03-02 port 7443", None),
        ("PX-0000000099", "PX-0000**0099"),
        (
            "ID 11010519900307211X, phone +86-13800138000",
            "ID 1101*********7211X, phone +86-1380***8000",
        ),
        ("账号6222020000001234号", "账号6222********1234号"),
        ("card 6222 0200 0000 1234 567 blocked", "card 6222 **** **** ***4 567 blocked"),
        (
            "BANKB/6222020000001234;BANKB-6222020000005678",
            "BANKB/6222********1234;BANKB-6222********5678",
        ),
        ("wallet PX8800000000123", "wallet PX8800*****0123"),
        # Ids and times: a message id, a hub message id, a case's order, a list entry, a
        # clock id, a key id, a digest, a UUID, ISO and compact times, seconds since 1970.
        ("(message banka-5915e8ce058d46f8a20582079140d2079)", None),
        ("re-CENTRE-hub-00c61498322014460f8b2a07c2c4e2f1", None),
        ("answer-C20261204-31415926-O004 listed L20261204-1234567890123456", None),
        ("clock K0123456789ABCDEF0123 key 0123456789abcdef", None),
        ("digest e7a5c61d87d0d806023cd78a30027e7df6fdcbd9315cc9c561d73773c0df9759", None),
        ("id 12345678-1234-4123-8123-123456789012 at 2026-12-04T17:48:08.699974+00:00", None),
        ("at 20261204174808, 1733330000.123456 s", None),
    ],
)
def test_mask_accounts(text: str, expected: str | None) -> None:
    assert mask_accounts(text) == (expected or text)


def test_an_id_of_decimal_digits_alone_reads_as_an_account_number() -> None:
    """Ten digits or more standing alone are an account number, a card, a phone or an ID
    number as far as anything can tell: a hex id that happens to hold no letter (a key id
    once in 1,850 keys) is masked with them. Better a masked id than a leaked account."""
    assert mask_accounts("key 1234567890123456") == "key 1234********3456"


# ---- properties ----------------------------------------------------------------------------------

HEX = "0123456789abcdef"
DAYS = st.dates(min_value=date(2020, 1, 1), max_value=date(2099, 12, 31))


def hex_text(size: int, *, upper: bool = False) -> st.SearchStrategy[str]:
    alphabet = HEX.upper() if upper else HEX
    return st.text(alphabet, min_size=size, max_size=size)


def with_a_letter(s: str) -> bool:
    return any(not c.isdigit() for c in s)


def dated(letter: str, day: date, tail: str) -> str:
    return f"{letter}{day:%Y%m%d}-{tail}"


# Every kind of id the hub or a member makes up (hub/service/*, adapters/sdk), with any hex.
IDS = st.one_of(
    st.builds(
        lambda who, u: f"{who}-{u.hex}",
        st.sampled_from(["banka", "bankb", "centre", "payx", "hub"]),
        st.uuids(),
    ),
    st.builds(
        lambda to, who, u: f"re-{to}-{who}-{u.hex}",
        st.sampled_from(["BANKA", "CENTRE"]),
        st.sampled_from(["banka", "centre"]),
        st.uuids(),
    ),
    st.builds(
        lambda day, h, n: dated("C", day, h) + f"-O{n:03d}",
        DAYS,
        hex_text(8, upper=True),
        st.integers(1, 999),
    ),
    st.builds(
        lambda day, h: "answer-" + dated("C", day, h) + "-O001", DAYS, hex_text(8, upper=True)
    ),
    st.builds(dated, st.sampled_from("ACD"), DAYS, hex_text(8, upper=True)),
    st.builds(dated, st.just("L"), DAYS, hex_text(16, upper=True)),
    # A clock id whose hex is capitals then ten digits or more reads as a wallet's account
    # ("PX88000000123") and is masked, as the module says of all-digit hex ids.
    st.builds(lambda h: f"K{h}", hex_text(20, upper=True)).filter(
        lambda k: re.fullmatch(r"[A-Z]*[0-9]{10,}", k) is None
    ),
    st.builds(lambda h: f"dk-{h}", hex_text(8)),
    hex_text(16).filter(with_a_letter),  # key ids
    hex_text(64).filter(with_a_letter),  # digests, Merkle roots
    st.uuids().map(str),
    st.uuids().map(lambda u: u.hex).filter(with_a_letter),
)

TIMES = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
)
STAMPS = st.one_of(
    TIMES.map(lambda t: t.isoformat()),
    TIMES.map(lambda t: f"{t:%Y-%m-%d %H:%M:%S},{t.microsecond // 1000:03d}"),
    TIMES.map(lambda t: f"{t:%Y%m%d%H%M%S}"),
    TIMES.map(lambda t: f"{t:%Y%m%dT%H%M%S.%fZ}"),
    TIMES.map(lambda t: f"{t.timestamp():.6f}"),
)

# What stands around a value in a log line.
LEFT = st.sampled_from(["", " ", "(", "[", '"', "'", "=", ": ", "/", "账号", "message "])
RIGHT = st.sampled_from(["", " ", ")", "]", '"', "'", ",", ".", ";", "号", ": refused"])


@settings(max_examples=300)
@given(value=st.one_of(IDS, STAMPS), left=LEFT, right=RIGHT)
def test_ids_and_times_survive(value: str, left: str, right: str) -> None:
    line = f"{left}{value}{right}"
    assert mask_accounts(line) == line


def digits(low: int, high: int) -> st.SearchStrategy[str]:
    return st.text("0123456789", min_size=low, max_size=high)


def not_a_time(number: str) -> bool:
    try:
        year = datetime.strptime(number, "%Y%m%d%H%M%S").year
    except ValueError:
        return True
    return not 1970 <= year <= 2099


# Account numbers, cards, phones, resident ID numbers, and the forms a log gives them.
ACCOUNTS = st.one_of(
    digits(10, 24),
    st.builds(lambda d, c: d + c, digits(17, 17), st.sampled_from("0123456789Xx")),
    st.builds(lambda d: "1" + d, digits(10, 10)),
)
PREFIXES = st.sampled_from(["", "PX", "PX-", "BANKB-", "BANKB/", "BANKB:", "+86-", "86 "])


def hidden(number: str) -> str:
    """How the mask writes `number`: its first and last four digits, an ID number's X."""
    run = number.rstrip("Xx")
    return run[:4] + "*" * (len(run) - 8) + run[-4:] + number[len(run) :]


@settings(max_examples=300)
@given(number=ACCOUNTS, prefix=PREFIXES, left=LEFT, right=RIGHT)
def test_account_numbers_do_not_survive(number: str, prefix: str, left: str, right: str) -> None:
    assume(not_a_time(number))
    masked = mask_accounts(f"{left}{prefix}{number}{right}")
    assert masked == f"{left}{prefix}{hidden(number)}{right}"
    assert number.rstrip("Xx") not in masked


@settings(max_examples=100)
@given(value=IDS, number=ACCOUNTS, when=TIMES)
def test_in_one_line_the_account_is_masked_and_the_rest_stays(
    value: str, number: str, when: datetime
) -> None:
    assume(not_a_time(number))
    line = f"{when.isoformat()} stop of {number} at BANKB (message {value}) held"
    assert mask_accounts(line) == line.replace(f" {number} ", f" {hidden(number)} ")


def test_a_uuid4_message_id_survives_whatever_its_digits() -> None:
    # The example: a message id whose hex held a run of 13 digits.
    message_id = "banka-5915e8ce058d46f8a2058" + "9343217952079"
    assert mask_accounts(f"refused (message {message_id})") == f"refused (message {message_id})"
    assert mask_accounts(f"banka-{uuid.UUID(int=0).hex}") == f"banka-{uuid.UUID(int=0).hex}"


def test_times_around_a_day_keep_their_digits() -> None:
    moment = datetime(2026, 12, 4, 17, 48, 8, 699974, tzinfo=UTC) + timedelta(days=30)
    for line in (f"{moment:%Y%m%d%H%M%S}", f"{moment.timestamp()}", moment.isoformat()):
        assert mask_accounts(line) == line


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A root-like logger with one stream handler, masked as the CLI masks the root."""
    stream = io.StringIO()
    root = logging.getLogger("test-logmask-root")
    root.propagate = False
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    logmask.install(root)
    logmask.install(root)  # idempotent
    assert sum(isinstance(f, logmask.AccountMask) for f in handler.filters) == 1
    try:
        yield root, stream
    finally:
        root.removeHandler(handler)


def test_records_of_child_loggers_are_masked(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    root, stream = captured
    child = root.getChild("hub.api")
    child.info("stopped %s for %d fen (%s)", "6222020000001234", 500, {"acct": 6222020000005678})
    child.warning("no match on %s, %d%% sure", "6222020000009999", 100)
    child.error("account 6222020000008888 closed")
    try:
        raise ValueError("account 6222020000004321 is closed")
    except ValueError:
        child.exception("core bank failed on O-1")
    out = stream.getvalue()
    assert "6222********1234 for 500 fen ({'acct': 6222********5678})" in out
    assert "no match on 6222********9999, 100% sure" in out
    assert "account 6222********8888 closed" in out
    assert "ValueError: account 6222********4321 is closed" in out
    for full in ("0000001234", "0000005678", "0000009999", "0000008888", "0000004321"):
        assert full not in out
