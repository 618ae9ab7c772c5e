"""Issue 24: personal data sealed with SM4-GCM on a real database (SQLite and PostgreSQL). A hub
whose current data key is SM4 writes version-2 values that say so; everything it wrote reads
back; `stophub audit verify` gives the same answer with the C accelerator (which cannot open
SM4 on OpenSSL 3.0 and hands those rows to Python) and with --pure-python, for an honest log
and for one with an SM4-sealed detail tampered; re-encryption moves every value from AES to
SM4 and back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import column, select, table, update

from hub.cli import main
from hub.crypto import fields
from hub.crypto.public import public_key_to_pem
from hub.service.commands.case import CREATE_REPORT
from hub.store import auditscan
from hub.store.tables import sealed_tables
from stophub.v1 import case_pb2
from tests.unit.test_handlers import MULE_B, VICTIM, report_body

from .test_hub_on_db import Net, net  # noqa: F401  (the fixture)

SM4_KEY = os.urandom(16)
# Untyped: the stored bytes, never opened or sealed on the way.
audit_log = table("audit_log", column("id"), column("detail"))
cases = table("cases", column("victim_name"))


def verify(net: Net, pub: Path, *extra: str) -> Result:  # noqa: F811
    url = str(net.store.url)
    return CliRunner().invoke(main, ["audit", "verify", "--db", url, "--hub-key", str(pub), *extra])


def first_bytes(net: Net) -> set[bytes]:  # noqa: F811
    with net.store.engine.connect() as conn:
        details = conn.execute(select(audit_log.c.detail)).scalars().all()
        names = conn.execute(select(cases.c.victim_name)).scalars().all()
    return {fields.as_bytes(v)[:2] for v in [*details, *names]}


@pytest.fixture
def pub(net: Net, tmp_path: Path) -> Path:  # noqa: F811
    path = tmp_path / "hub.pub"
    path.write_bytes(public_key_to_pem(net.hub_key.algorithm, net.hub_key.public_key))
    return path


def test_a_hub_sealing_with_sm4_verifies_the_same_in_c_and_python(
    net: Net,  # noqa: F811
    pub: Path,
) -> None:
    aes = fields.keyring()
    both = aes.with_key("dk-sm4", SM4_KEY, make_current=True, cipher=fields.SM4_GCM)
    fields.configure(both)
    case = net.call("BANKA", CREATE_REPORT, report_body((MULE_B, 100_000)), case_pb2.Case)
    net.hub.keep_audit_log()
    with net.store.engine.connect() as conn:
        stored = fields.as_bytes(conn.execute(select(cases.c.victim_name)).scalar_one())
    assert stored[:3] == bytes([2, 2, len("dk-sm4")]) and fields.cipher_of(stored) == "sm4-gcm"
    with net.store(read_only=True) as uow:
        assert uow.cases.get(case.case_id).victim_name == VICTIM.holder_name

    fast, slow = verify(net, pub), verify(net, pub, "--pure-python")
    assert fast.exit_code == slow.exit_code == 0, (fast.output, slow.output)
    assert auditscan.method(native=True) in fast.output

    # A detail sealed with SM4, one bit flipped: both find it, and name the same entry.
    with net.store.engine.begin() as conn:
        entry, detail = conn.execute(
            select(audit_log.c.id, audit_log.c.detail).order_by(audit_log.c.id.desc()).limit(1)
        ).one()
        detail = fields.as_bytes(detail)
        assert detail[:2] == b"\x02\x02"
        conn.execute(
            update(audit_log)
            .where(audit_log.c.id == entry)
            .values(detail=detail[:-1] + bytes([detail[-1] ^ 1]))
        )
    fast, slow = verify(net, pub, "--json"), verify(net, pub, "--pure-python", "--json")
    assert fast.exit_code == slow.exit_code == 1, (fast.output, slow.output)
    assert fast.stdout == slow.stdout
    assert str(entry) in fast.stdout


def test_reencrypt_moves_every_value_to_sm4_and_back(net: Net, pub: Path) -> None:  # noqa: F811
    case = net.call("BANKA", CREATE_REPORT, report_body((MULE_B, 100_000)), case_pb2.Case)
    aes = fields.keyring()
    assert first_bytes(net) == {b"\x01\x07"}  # version 1, "dk-test"

    to_sm4 = aes.with_key("dk-sm4", SM4_KEY, make_current=True, cipher=fields.SM4_GCM)
    fields.configure(to_sm4)
    with net.store.engine.connect() as conn:
        done = fields.reencrypt(conn, sealed_tables(), to_sm4, batch=7)
        usage = fields.key_usage(conn, sealed_tables())
    assert sum(d.values for d in done.values()) > 10
    assert {kid for counts in usage.values() for kid in counts} == {"dk-sm4"}
    assert first_bytes(net) == {b"\x02\x02"}
    net.hub.keep_audit_log()
    assert verify(net, pub).exit_code == 0

    back = to_sm4.with_key("dk-aes2", os.urandom(32), make_current=True)
    fields.configure(back)
    with net.store.engine.connect() as conn:
        fields.reencrypt(conn, sealed_tables(), back)
        again = fields.reencrypt(conn, sealed_tables(), back)
    assert sum(d.values for d in again.values()) == 0, "a second run finds nothing to do"
    assert first_bytes(net) == {bytes([1, len("dk-aes2")])}
    with net.store(read_only=True) as uow:
        assert uow.cases.get(case.case_id).victim_name == VICTIM.holder_name
    fast, slow = verify(net, pub), verify(net, pub, "--pure-python")
    assert fast.exit_code == slow.exit_code == 0, (fast.output, slow.output)
