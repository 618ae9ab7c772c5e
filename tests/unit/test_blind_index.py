"""The blind index of the victim (hub/crypto/blindindex.py): normalisation and keyed tokens."""

from __future__ import annotations

import hmac
from hashlib import sha256

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hub.crypto.blindindex import BlindIndex, normalise_id_number, normalise_name

KEY = bytes(range(32))


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("Zhang San", "zhang san"),
        ("  zhang \\t\\n  SAN  ".replace("\\t", "\t").replace("\\n", "\n"), "zhang san"),
        ("Ｚｈａｎｇ　Ｓａｎ", "zhang san"),  # full-width letters and ideographic space (NFKC)
        ("张三", "张三"),
        ("Straße", "strasse"),  # casefold, not lower
        ("", ""),
    ],
)
def test_names_normalise(raw: str, normal: str) -> None:
    assert normalise_name(raw) == normal


@pytest.mark.parametrize(
    "raw",
    ["11010519491231002X", "11010519491231002x", " 110105-19491231-002x ", "110105 1949 1231 002X"],
)
def test_id_numbers_normalise(raw: str) -> None:
    assert normalise_id_number(raw) == "11010519491231002X"


def test_tokens_are_hmac_under_an_hkdf_key_never_the_data_key() -> None:
    index = BlindIndex("dk-1", KEY)
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"stophub/blind-index/v1"
    ).derive(KEY)
    assert derived != KEY
    expected = hmac.new(derived, b"victim_name\x00zhang san", sha256).digest()
    assert index.name_token(" Zhang  SAN") == expected
    assert (
        index.name_token("Zhang San") != hmac.new(KEY, b"victim_name\x00zhang san", sha256).digest()
    )
    # Equal after normalisation, equal tokens; different values, different tokens.
    assert index.id_number_token("110105-19491231002x") == index.id_number_token(
        "11010519491231002X"
    )
    assert index.id_number_token("11010519491231002X") != index.id_number_token(
        "11010519491231003X"
    )
    # A name and an ID number with the same text do not share a token.
    assert index.name_token("X1") != index.id_number_token("X1")
    # Nothing to index: no token.
    assert index.name_token("   ") is None and index.id_number_token(" - ") is None
    # Another data key, other tokens.
    assert BlindIndex("dk-2", bytes(32)).name_token("Zhang San") != index.name_token("Zhang San")
    victim = index.victim("Zhang San", "")
    assert victim == type(victim)(index.name_token("Zhang San"), None, "dk-1")
