"""Sealed column values: AES-256-GCM under a keyring, bound to their column, rotatable."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
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
