"""Personal data never reaches the database file or a dump in plain text (ADR 9).

A whole case with planted names, an ID number and phones runs through the real Hub on
SQLite and PostgreSQL; the raw SQLite file (and its WAL) and `pg_dump`'s output are then
searched for them, in plain bytes and as the hex a dump writes bytea in. Account numbers are
lookup keys and stay plain: finding one proves the search can find things.
"""

from __future__ import annotations

import glob
import os
import sqlite3
import subprocess
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from hub.crypto import fields
from hub.crypto.fields import Keyring
from hub.service.commands import lead as ld
from hub.service.commands.case import CREATE_REPORT, GET_CASE, VERIFY_REPORT
from hub.service.commands.order import ANSWER_ORDER, SET_AUTO_STOP_RULE
from hub.store.sql import make_engine
from hub.store.tables import sealed_tables
from stophub.v1 import account_pb2, case_pb2, lead_pb2, order_pb2

from .support import dialect_of
from .test_hub_on_db import VICTIM, Net, confirm, executed, net, rule

__all__ = ["net"]  # the fixture, shared with the pipeline tests

NAME = "Zhang Weiplanted"
CHINESE_NAME = "张伟测试"
ID_NUMBER = "110101199003077777"
PHONE = "13987650123"
MULE_ACCOUNT = "6222020000000777"
HOLDER = account_pb2.AccountRef(
    institution_code="BANKB", account_number=MULE_ACCOUNT, holder_name=CHINESE_NAME
)
ONWARD_HOLDER = "Li Plantedonward"
SECRETS = (NAME, CHINESE_NAME, ID_NUMBER, PHONE, ONWARD_HOLDER, "5550-0001")


def planted_case(net: Net) -> str:
    """Report, verify (auto-stop to BANKB), and BANKB's answer: returns the case id."""
    net.call("CENTRE", SET_AUTO_STOP_RULE, rule(), order_pb2.AutoStopRule)
    now = net.clock.now()
    pb = case_pb2.Report(
        victim=case_pb2.Victim(name=NAME, id_number=ID_NUMBER, phone=PHONE),
        fraud_type=case_pb2.FRAUD_TYPE_IMPERSONATING_OFFICIALS,
        description=f"{NAME} ({ID_NUMBER}, {PHONE}) paid {CHINESE_NAME} a 'safe account'",
    )
    pb.victim_report_time.FromDatetime(now - timedelta(minutes=2))
    t = pb.transactions.add(
        amount_fen=2_000_000,
        payer=account_pb2.AccountRef(
            institution_code="BANKA", account_number=VICTIM.account_number, holder_name=NAME
        ),
        payee=HOLDER,
        channel=case_pb2.PAYMENT_CHANNEL_MOBILE_BANKING,
        transaction_reference="A-TX-1",
    )
    t.transaction_time.FromDatetime(now - timedelta(minutes=20))
    case = net.call("BANKA", CREATE_REPORT, pb, case_pb2.Case)
    net.clock.advance(timedelta(minutes=1, microseconds=7))
    case = net.call("BANKA", VERIFY_REPORT, confirm(case.case_id), case_pb2.Case)
    (stop,) = case.orders
    assert stop.instruction.stop.account.holder_name == CHINESE_NAME
    net.clock.advance(timedelta(minutes=2, microseconds=11))
    answer = executed(stop.order_id, net.clock.now(), amount_held_fen=2_000_000)
    answer.reason = f"held in the account of {CHINESE_NAME}"
    onward = answer.onward_transfers.add(
        amount_fen=500_000,
        to_account=account_pb2.AccountRef(
            institution_code="PAYX", account_number="PX-0000000777", holder_name=ONWARD_HOLDER
        ),
        transaction_reference="B-OUT-1",
    )
    onward.transfer_time.FromDatetime(net.clock.now() - timedelta(minutes=5))
    net.call("BANKB", ANSWER_ORDER, answer, order_pb2.Order)
    return case.case_id


def read_back(net: Net, case_id: str) -> Any:
    case = net.call("CENTRE", GET_CASE, case_pb2.GetCaseBody(case_id=case_id), case_pb2.Case)
    assert (case.report.victim.name, case.report.victim.id_number, case.report.victim.phone) == (
        NAME,
        ID_NUMBER,
        PHONE,
    )
    assert case.report.transactions[0].payee.holder_name == CHINESE_NAME
    assert case.orders[0].result.onward_transfers[0].to_account.holder_name == ONWARD_HOLDER
    return case


def raw_database(net: Net, request: pytest.FixtureRequest) -> bytes:
    """Every byte the database holds: the SQLite file and WAL, or a pg_dump."""
    url = str(request.getfixturevalue("database_url"))
    if dialect_of(request) == "sqlite":
        net.store.dispose()
        path = Path(url.removeprefix("sqlite:///"))
        # Outside any transaction (the store's engines begin one on connect): move the WAL
        # into the file, so what the file holds is what a copied database would hold.
        with closing(sqlite3.connect(path, isolation_level=None)) as conn:
            assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        return b"".join(Path(p).read_bytes() for p in (path, f"{path}-wal") if Path(p).exists())
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"))
    pg_dump = found[-1] if found else "pg_dump"
    dump = subprocess.run(
        [pg_dump, "--no-owner", "--dbname", url.replace("postgresql+psycopg", "postgresql")],
        capture_output=True,
        check=True,
        timeout=60,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )
    return dump.stdout


def planted_lead(net: Net) -> str:
    """BANKA hands over a lead naming the holder, the centre asks, BANKA answers."""
    body = lead_pb2.SubmitLeadBody(
        accounts=[HOLDER], grounds=f"{NAME} keeps paying {CHINESE_NAME}", grade=3
    )
    lead = net.call("BANKA", ld.SUBMIT_LEAD, body, lead_pb2.Lead)
    ask = lead_pb2.TriageLeadBody(
        name=lead.name, ask_for_more=lead_pb2.AskForMore(question=f"is {ONWARD_HOLDER} in it?")
    )
    net.call("CENTRE", ld.TRIAGE_LEAD, ask, lead_pb2.Lead)
    answer = lead_pb2.AddLeadInformationBody(name=lead.name, answer=f"yes, phone {PHONE}")
    net.call("BANKA", ld.ADD_LEAD_INFORMATION, answer, lead_pb2.Lead)
    return str(lead.name)


def test_no_personal_data_in_the_raw_database(net: Net, request: pytest.FixtureRequest) -> None:
    case_id = planted_case(net)
    read_back(net, case_id)
    lead = planted_lead(net)
    raw = raw_database(net, request)
    assert len(raw) > 10_000
    # The control: account numbers are stored plain, so the search does find text.
    assert MULE_ACCOUNT.encode() in raw
    leaks = [
        s for s in SECRETS for needle in (s.encode(), s.encode().hex().encode()) if needle in raw
    ]
    assert leaks == []
    read_back(net, case_id)  # and the hub still reads everything back
    back = net.call("CENTRE", ld.GET_LEAD, lead_pb2.GetLeadBody(name=lead), lead_pb2.Lead)
    assert back.accounts[0].holder_name == CHINESE_NAME and PHONE in back.exchanges[0].answer


def test_reencrypt_under_a_new_key_leaves_nothing_under_the_old(
    net: Net, data_keys: Keyring
) -> None:
    case_id = planted_case(net)
    rotated = data_keys.with_key("dk-next", os.urandom(32), make_current=True)
    fields.configure(rotated)
    engine = make_engine(net.store.url)
    try:
        with engine.connect() as conn:
            before = fields.key_usage(conn, sealed_tables())
            done = fields.reencrypt(conn, sealed_tables(), rotated, batch=7)
            after = fields.key_usage(conn, sealed_tables())
            again = fields.reencrypt(conn, sealed_tables(), rotated, batch=7)
            cases_sealed = conn.execute(text("SELECT count(*) FROM cases")).scalar_one()
    finally:
        engine.dispose()
    old_values = sum(c.get(data_keys.current, 0) for c in before.values())
    assert old_values > 30 and all(set(c) <= {data_keys.current} for c in before.values())
    assert sum(d.values for d in done.values()) == old_values
    assert all(set(c) == {"dk-next"} for c in after.values() if c), after
    assert sum(after["cases"].values()) == sum(before["cases"].values()) and cases_sealed == 1
    assert sum(d.values for d in again.values()) == 0, "a second run has nothing to do"
    # Only the new key is needed now: the old one can leave the keyring.
    fields.configure(Keyring([("dk-next", rotated.keys["dk-next"])]))
    read_back(net, case_id)
