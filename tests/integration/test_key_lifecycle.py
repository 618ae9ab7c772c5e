"""Key lifecycle on a real database: rotate with an overlap, revoke at once, and the audit log
still verifying, through the operator's CLI, with the key valid when each message was recorded.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from hub.cli import main
from hub.crypto.keys import PrivateKey
from hub.crypto.public import public_key_to_pem
from hub.crypto.signing import ECDSA_P256
from hub.domain.errors import Unauthenticated
from hub.service.admin import Registry
from hub.service.commands.case import CREATE_REPORT
from hub.service.evidence import verify_signatures
from hub.store.tables import audit_log
from stophub.v1 import case_pb2, envelope_pb2
from tests.integration.test_hub_on_db import MULE_B, Net, report


def new_report(net: Net) -> case_pb2.Case:
    return net.call(
        "BANKA", CREATE_REPORT, report(net.clock.now(), [(MULE_B, 10_000)]), case_pb2.Case
    )


def test_rotate_revoke_and_the_log_still_verifies(
    net: Net, database_url: str, tmp_path: Path
) -> None:
    registry = Registry(net.store, net.clock)
    old = net.keys["BANKA"]
    new_report(net)

    # The operator rotates BANKA through the CLI, with a one-hour overlap.
    successor = PrivateKey.generate(ECDSA_P256)
    pub = tmp_path / "banka-2.pub"
    pub.write_bytes(public_key_to_pem(successor.algorithm, successor.public_key))
    runner = CliRunner()
    rotated = runner.invoke(
        main,
        [
            "keys",
            "rotate",
            "BANKA",
            "--key",
            str(pub),
            "--overlap-hours",
            "1",
            "--db",
            database_url,
        ],
    )
    assert rotated.exit_code == 0, rotated.output
    assert successor.key_id in rotated.output and old.key_id in rotated.output

    # The CLI's clock is the wall clock; the test's hub runs on its own clock, so the overlap is
    # checked against the stored not_after.
    stored = registry.get("BANKA").key(old.key_id)
    assert stored is not None and stored.not_after is not None
    net.clock.set(stored.not_after - timedelta(minutes=1))
    new_report(net)  # still inside the overlap
    net.keys["BANKA"] = successor
    new_report(net)
    net.clock.set(stored.not_after + timedelta(seconds=1))
    net.keys["BANKA"] = old
    with pytest.raises(Unauthenticated) as retired:
        new_report(net)
    assert retired.value.reason == "KEY_RETIRED"

    # Revoked later, at once: the next message with it is refused, what it signed stands.
    net.keys["BANKA"] = successor
    new_report(net)
    net.clock.advance(timedelta(seconds=1))
    registry.revoke_key("BANKA", successor.key_id)
    with pytest.raises(Unauthenticated) as revoked:
        new_report(net)
    assert revoked.value.reason == "KEY_REVOKED"

    result = verify_signatures(net.store)
    assert result.ok, result.problems
    assert result.by_key[("BANKA", old.key_id)] == 2
    assert result.by_key[("BANKA", successor.key_id)] == 2

    checked = runner.invoke(main, ["audit", "signatures", "--db", database_url])
    assert checked.exit_code == 0, checked.output
    assert f"{result.checked} signed messages checked, 0 problem(s)" in checked.output

    # Someone edits a stored report: the check names the entry.
    with net.store.engine.begin() as conn:
        row = conn.execute(
            select(audit_log.c.id, audit_log.c.payload)
            .where(audit_log.c.kind == "received", audit_log.c.actor == "BANKA")
            .order_by(audit_log.c.id)
            .limit(1)
        ).one()
        envelope = envelope_pb2.Envelope.FromString(row.payload)
        body = case_pb2.Report.FromString(envelope.body)
        body.transactions[0].amount_fen += 1
        envelope.body = body.SerializeToString()
        conn.execute(
            update(audit_log)
            .where(audit_log.c.id == row.id)
            .values(payload=envelope.SerializeToString())
        )
    tampered = runner.invoke(main, ["audit", "signatures", "--db", database_url])
    assert tampered.exit_code == 1
    assert f"entry {row.id} (BANKA/" in tampered.output
    assert "does not verify" in tampered.output
