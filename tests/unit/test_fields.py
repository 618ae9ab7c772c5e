"""Sealed column values: AES-256-GCM under a keyring, bound to their column, rotatable."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, insert, select
from sqlalchemy.exc import StatementError

from hub.crypto import fields
from hub.crypto.fields import (
    DataKeyError,
    DataKeysNotConfigured,
    Keyring,
    Sealed,
    SealedText,
    SealedValueError,
    UnknownDataKey,
)

NAME = "张伟测试 Zhang Weiplanted".encode()


def test_round_trip_and_layout() -> None:
    ring = Keyring.generate("dk-one")
    sealed = ring.seal(NAME, "cases.victim_name")
    assert NAME not in sealed
    assert sealed[0] == fields.VERSION and sealed[2 : 2 + sealed[1]] == b"dk-one"
    assert len(sealed) == 2 + len("dk-one") + 12 + len(NAME) + 16
    assert fields.key_id_of(sealed) == "dk-one"
    assert ring.open(sealed, "cases.victim_name") == NAME
    # A fresh nonce each time: equal names do not give equal values.
    assert ring.seal(NAME, "cases.victim_name") != sealed


@pytest.mark.parametrize("where", [0, 9, -1])
def test_a_tampered_value_does_not_open(where: int) -> None:
    ring = Keyring.generate("dk-one")
    sealed = bytearray(ring.seal(NAME, "cases.victim_name"))
    sealed[where] ^= 0x01
    with pytest.raises(SealedValueError):
        ring.open(bytes(sealed), "cases.victim_name")


def test_a_truncated_value_does_not_open() -> None:
    ring = Keyring.generate("dk-one")
    with pytest.raises(SealedValueError, match="truncated"):
        ring.open(ring.seal(b"", "t.c")[:20], "t.c")


def test_a_value_copied_into_another_column_does_not_open() -> None:
    ring = Keyring.generate("dk-one")
    sealed = ring.seal(NAME, "cases.victim_name")
    with pytest.raises(SealedValueError, match=r"orders\.holder_name"):
        ring.open(sealed, "orders.holder_name")


def test_an_unknown_key_id_is_named() -> None:
    old = Keyring.generate("dk-gone")
    sealed = old.seal(NAME, "cases.victim_name")
    with pytest.raises(UnknownDataKey, match="'dk-gone'") as err:
        Keyring.generate("dk-other").open(sealed, "cases.victim_name")
    assert err.value.key_id == "dk-gone"


def test_rotation_old_values_open_new_ones_use_the_new_key() -> None:
    ring = Keyring.generate("dk-a")
    before = ring.seal(NAME, "t.c")
    rotated = ring.with_key("dk-b", os.urandom(32), make_current=True)
    after = rotated.seal(NAME, "t.c")
    assert fields.key_id_of(after) == "dk-b" and fields.key_id_of(before) == "dk-a"
    assert rotated.open(before, "t.c") == rotated.open(after, "t.c") == NAME
    with pytest.raises(UnknownDataKey):
        ring.open(after, "t.c")


def test_keyring_file_round_trip_mode_and_refusals(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "data-keys.json"
    ring = Keyring.generate("dk-a").with_key("dk-b", os.urandom(32), make_current=False)
    ring.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
    loaded = fields.load_keyring_file(path)
    assert (loaded.order, loaded.current, loaded.source) == (["dk-a", "dk-b"], "dk-a", path)
    assert loaded.keys == ring.keys
    path.chmod(0o644)
    with pytest.raises(DataKeyError, match="chmod 600"):
        fields.load_keyring_file(path)
    path.chmod(0o600)
    doc = json.loads(path.read_text())
    doc["current"] = "dk-z"
    path.write_text(json.dumps(doc))
    with pytest.raises(DataKeyError, match="'dk-z' is not in the keyring"):
        fields.load_keyring_file(path)
    with pytest.raises(DataKeysNotConfigured, match="stophub datakeys generate"):
        fields.load_keyring_file(tmp_path / "none.json")


def test_environment_keys_first_is_current_and_explicit_file_wins(tmp_path: Path) -> None:
    a, b = os.urandom(32), os.urandom(32)
    inline = f"dk-a:{base64.b64encode(a).decode()}, dk-b:{base64.b64encode(b).decode()}"
    ring = fields.resolve_keyring(environ={fields.ENV_KEYS: inline})
    assert (ring.current, ring.keys) == ("dk-a", {"dk-a": a, "dk-b": b})
    Keyring.generate("dk-file").save(tmp_path / "k.json")
    env = {fields.ENV_KEYS: inline, fields.ENV_FILE: str(tmp_path / "k.json")}
    assert fields.resolve_keyring(environ=env).current == "dk-file"
    with pytest.raises(DataKeyError, match="not 32"):
        fields.parse_keyring_env("dk-a:" + base64.b64encode(b"short").decode())
    with pytest.raises(DataKeyError, match="KEY_ID:BASE64KEY"):
        fields.parse_keyring_env("just-a-key")


def _people() -> tuple[Table, MetaData]:
    md = MetaData()
    people = Table(
        "people",
        md,
        Column("id", Integer, primary_key=True),
        Column("name", SealedText("people.name")),
        Column("blob", Sealed("people.blob")),
    )
    return people, md


def test_columns_seal_on_the_way_in_and_open_on_the_way_out(tmp_path: Path) -> None:
    people, md = _people()
    engine = create_engine(f"sqlite:///{tmp_path}/p.db")
    md.create_all(engine)
    fields.configure(Keyring.generate("dk-a"))
    with engine.begin() as conn:
        conn.execute(insert(people), [{"id": 1, "name": "张伟测试", "blob": NAME}])
        raw = conn.exec_driver_sql("SELECT name, blob FROM people").one()
        assert "张伟测试".encode() not in raw[0] and NAME not in raw[1]
        assert conn.execute(select(people.c.name, people.c.blob)).one() == ("张伟测试", NAME)
    fields.configure(None)
    with engine.begin() as conn, pytest.raises(StatementError, match="datakeys generate") as err:
        conn.execute(insert(people), [{"id": 2, "name": "x", "blob": None}])
    assert isinstance(err.value.orig, DataKeysNotConfigured)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM people").scalar_one() == 1
    engine.dispose()


def test_an_unknown_key_id_rereads_the_keyring_file(tmp_path: Path) -> None:
    path = tmp_path / "data-keys.json"
    Keyring.generate("dk-a").save(path)
    fields.configure(fields.load_keyring_file(path))
    # Another replica rotates: a new current key in the shared file, values sealed under it.
    newer = fields.load_keyring_file(path).with_key("dk-b", os.urandom(32), make_current=True)
    newer.save(path)
    value = newer.seal(NAME, "t.c")
    assert fields.keyring().current == "dk-a"
    assert fields.open_sealed(value, "t.c") == NAME
    assert fields.keyring().current == "dk-b", "the reload also picks up the new current key"
    with pytest.raises(UnknownDataKey, match="'dk-nowhere'"):
        fields.open_sealed(Keyring.generate("dk-nowhere").seal(NAME, "t.c"), "t.c")


# ---- SM4-GCM (issue 24) --------------------------------------------------------------------------

SM4_KEY = bytes.fromhex("0123456789abcdeffedcba9876543210")


def test_sm4_block_cipher_known_answer() -> None:
    """GB/T 32907-2016, appendix A, example 1: one block under the key equal to itself."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    enc = Cipher(algorithms.SM4(SM4_KEY), modes.ECB()).encryptor()
    assert (enc.update(SM4_KEY) + enc.finalize()).hex() == "681edf34d206965e86b3e94f536e4246"


def test_sm4_gcm_known_answer() -> None:
    """RFC 8998, appendix A.1 (SM4-GCM), through the class that seals values."""
    iv = bytes.fromhex("00001234567800000000abcd")
    aad = bytes.fromhex("feedfacedeadbeeffeedfacedeadbeefabaddad2")
    plain = bytes.fromhex("".join(c * 16 for c in "abcdefea"))
    sealed = fields.SM4GCM(SM4_KEY).encrypt(iv, plain, aad)
    assert sealed.hex() == (
        "17f399f08c67d5ee19d0dc9969c4bb7d5fd46fd3756489069157b282bb200735"
        "d82710ca5c22f0ccfa7cbf93d496ac15a56834cbcf98c397b4024a2691233b8d"
        "83de3541e4c2b58177e065a9bf7b62ec"
    )
    assert fields.SM4GCM(SM4_KEY).decrypt(iv, sealed, aad) == plain
    with pytest.raises(InvalidTag):
        fields.SM4GCM(SM4_KEY).decrypt(iv, sealed, aad + b"x")


def test_an_sm4_value_says_its_cipher_byte_for_byte() -> None:
    """docs/personal-data.md: 2 | cipher 2 | len(key id) | key id | nonce | ciphertext | tag,
    opened here by hand with nothing but the documented layout."""
    ring = Keyring([("dk-sm4", SM4_KEY, fields.SM4_GCM)])
    assert ring.cipher == "sm4-gcm"
    sealed = ring.seal(NAME, "cases.victim_name")
    assert sealed[:3] == bytes([2, 2, len("dk-sm4")]) and sealed[3:9] == b"dk-sm4"
    assert len(sealed) == 3 + 6 + 12 + len(NAME) + 16
    nonce, body = sealed[9:21], sealed[21:]
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    dec = Cipher(algorithms.SM4(SM4_KEY), modes.GCM(nonce, body[-16:])).decryptor()
    dec.authenticate_additional_data(b"stophub/sealed/v1\x00cases.victim_name")
    assert dec.update(body[:-16]) + dec.finalize() == NAME
    assert fields.key_id_of(sealed) == "dk-sm4" and fields.cipher_of(sealed) == "sm4-gcm"
    assert ring.open(sealed, "cases.victim_name") == NAME
    assert ring.opener("cases.victim_name")(sealed) == NAME
    with pytest.raises(SealedValueError, match=r"orders\.holder_name"):
        ring.open(sealed, "orders.holder_name")


def test_aes_keeps_the_version_1_layout_and_both_ciphers_open_in_one_ring() -> None:
    aes = Keyring.generate("dk-aes")
    old = aes.seal(NAME, "t.c")
    assert old[0] == 1 and fields.cipher_of(old) == "aes-256-gcm"
    both = aes.with_key("dk-sm4", SM4_KEY, make_current=True, cipher=fields.SM4_GCM)
    new = both.seal(NAME, "t.c")
    assert new[0] == 2 and fields.cipher_of(new) == "sm4-gcm"
    for value in (old, new):
        assert both.open(value, "t.c") == both.opener("t.c")(value) == NAME
    # Back to AES: a new AES key current, version 1 again.
    back = both.with_key("dk-aes2", os.urandom(32), make_current=True)
    assert back.seal(NAME, "t.c")[0] == 1 and back.cipher == "aes-256-gcm"


@pytest.mark.parametrize("opener", [False, True], ids=["open", "opener"])
def test_a_cipher_byte_changed_does_not_open(opener: bool) -> None:
    ring = Keyring([("dk-a", os.urandom(32)), ("dk-s", SM4_KEY, fields.SM4_GCM)], "dk-s")
    sm4 = ring.seal(NAME, "t.c")
    as_aes = bytes([2, 1]) + sm4[2:]  # the same value claiming AES under an SM4 key
    aes = ring.with_current("dk-a").seal(NAME, "t.c")
    as_sm4 = bytes([2, 2]) + aes[1:]  # an AES value re-labelled SM4
    unknown = bytes([2, 9]) + sm4[2:]
    read = ring.opener("t.c") if opener else (lambda v: ring.open(v, "t.c"))
    for forged in (as_aes, as_sm4):
        with pytest.raises(SealedValueError, match="key"):
            read(forged)
    with pytest.raises(SealedValueError, match="unknown cipher byte 9"):
        read(unknown)
    with pytest.raises(SealedValueError, match="truncated"):
        read(sm4[:24])


def test_keys_of_the_wrong_length_for_their_cipher_are_refused() -> None:
    with pytest.raises(DataKeyError, match="16 bytes, not 32"):
        Keyring([("dk-a", SM4_KEY)])
    with pytest.raises(DataKeyError, match="32 bytes, not 16"):
        Keyring([("dk-a", os.urandom(32), fields.SM4_GCM)])
    with pytest.raises(DataKeyError, match="cipher 'des' is not one of"):
        Keyring([("dk-a", os.urandom(32), "des")])


def test_keyring_file_keeps_ciphers_and_reads_files_without_them(tmp_path: Path) -> None:
    path = tmp_path / "dk.json"
    ring = Keyring.generate("dk-a").with_key(
        "dk-s", SM4_KEY, make_current=True, cipher=fields.SM4_GCM
    )
    ring.save(path)
    doc = json.loads(path.read_text())
    assert [k["cipher"] for k in doc["keys"]] == ["aes-256-gcm", "sm4-gcm"]
    loaded = fields.load_keyring_file(path)
    assert loaded.ciphers == {"dk-a": "aes-256-gcm", "dk-s": "sm4-gcm"}
    assert loaded.open(ring.seal(NAME, "t.c"), "t.c") == NAME
    # A file written before SM4: no "cipher", every key AES-256-GCM.
    for key in doc["keys"]:
        del key["cipher"]
    doc["keys"] = doc["keys"][:1]
    doc["current"] = "dk-a"
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    assert fields.load_keyring_file(path).ciphers == {"dk-a": "aes-256-gcm"}


def test_environment_keys_name_their_cipher() -> None:
    b64 = base64.b64encode(SM4_KEY).decode()
    aes = base64.b64encode(os.urandom(32)).decode()
    ring = fields.parse_keyring_env(f"dk-s:sm4-gcm:{b64},dk-a:{aes}")
    assert ring.current == "dk-s" and ring.ciphers == {"dk-s": "sm4-gcm", "dk-a": "aes-256-gcm"}
    with pytest.raises(DataKeyError, match="KEY_ID:CIPHER:BASE64KEY"):
        fields.parse_keyring_env(f"dk-s:sm4-gcm:{b64}:extra")
    with pytest.raises(DataKeyError, match="cipher 'aes' is not one of"):
        fields.parse_keyring_env(f"dk-s:aes:{b64}")
