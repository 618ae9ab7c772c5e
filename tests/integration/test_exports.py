"""Exports of the audit log and the SLA log on a real database (issue 8): CSV and JSON Lines
hold exactly the rows the database holds for each filter, and a full JSON Lines export of the
audit log verifies offline, then names the entry changed or removed in a tampered copy."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import or_, select

from hub.cli.audit import audit_export, audit_verify_export
from hub.cli.sla import sla_export
from hub.crypto.keys import PrivateKey
from hub.crypto.public import public_key_to_pem
from hub.service import auditlog, exports
from hub.service.commands.case import GET_CASE, VERIFY_REPORT
from hub.service.commands.order import ISSUE_ORDER
from hub.store.tables import audit_log, cases, clocks, orders, sla_log
from hub.system.policy import load_policy
from stophub.v1 import case_pb2, order_pb2
from tests.unit.test_handlers import MULE_B, stop_body

from .test_audit_log import logged
from .test_hub_on_db import Net, net  # noqa: F401  (the fixture)


def active(net: Net) -> Net:  # noqa: F811
    """The shipped clocks, `logged`, then two cases confirmed by their reporter and a stop at
    BANKB in each: clocks with SLA rows, and entries about orders addressed to BANKB."""
    net.hub.clock_policy = load_policy()
    logged(net)
    with net.store.engine.connect() as conn:
        ids = list(
            conn.execute(select(cases.c.case_id).order_by(cases.c.case_id).limit(2)).scalars()
        )
    for case_id in ids:
        body = case_pb2.Verification(
            case_id=case_id, outcome=case_pb2.VERIFICATION_OUTCOME_CONFIRMED
        )
        net.call("BANKA", VERIFY_REPORT, body, case_pb2.Case)
        case = net.call("CENTRE", GET_CASE, case_pb2.GetCaseBody(case_id=case_id), case_pb2.Case)
        net.call("CENTRE", ISSUE_ORDER, stop_body(case, MULE_B), order_pb2.Order)
    auditlog.sequence(net.store, net.clock)
    return net


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def db_audit(net: Net, *where: Any) -> list[dict[str, Any]]:  # noqa: F811
    """The expected rows, straight from the database (not through the exporter)."""
    with net.store.engine.connect() as conn:
        rows = conn.execute(select(audit_log).where(*where).order_by(audit_log.c.id)).all()
    return [
        {
            "id": r.id,
            "log_index": r.log_index,
            "leaf_hash": r.leaf_hash.hex() if r.leaf_hash is not None else None,
            "recorded_at": r.recorded_at.isoformat(),
            "kind": r.kind,
            "actor": r.actor,
            "message_id": r.message_id,
            "case_id": r.case_id,
            "order_id": r.order_id,
            "detail": r.detail,
            "payload_sha256": hashlib.sha256(r.payload).hexdigest()
            if r.payload is not None
            else None,
            "payload": base64.b64encode(r.payload).decode() if r.payload is not None else None,
        }
        for r in rows
    ]


def db_sla(net: Net, *where: Any) -> list[dict[str, Any]]:  # noqa: F811
    with net.store.engine.connect() as conn:
        rows = conn.execute(
            select(sla_log, clocks.c.state, clocks.c.deadline_at, clocks.c.breached)
            .join(clocks, clocks.c.clock_id == sla_log.c.clock_id)
            .where(*where)
            .order_by(sla_log.c.id)
        ).all()
    return [
        {
            "clock_id": r.clock_id,
            "case_id": r.case_id,
            "order_id": r.order_id,
            "kind": r.kind,
            "event": r.event,
            "at": r.at.isoformat(),
            "due_at": _iso(r.due_at),
            "responsible": r.responsible,
            "late_seconds": r.late_seconds,
            "detail": r.detail,
            "clock_state": r.state.value,
            "deadline_at": r.deadline_at.isoformat(),
            "breached": r.breached,
        }
        for r in rows
    ]


def run(export: Any, net: Net, fmt: str, **filters: Any) -> str:  # noqa: F811
    out = io.StringIO()
    seen: list[tuple[int, int | None]] = []
    export(net.store, out, fmt, progress=lambda done, total: seen.append((done, total)), **filters)
    assert seen and all(total is not None and done <= total for done, total in seen), seen
    return out.getvalue()


def jsonl_entries(text: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in text.splitlines()]
    assert "export" in lines[0]
    return [x for x in lines[1:] if "state" not in x and "checkpoint" not in x]


def csv_rows(text: str, columns: tuple[str, ...]) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text))
    assert tuple(reader.fieldnames or ()) == columns
    return list(reader)


def as_csv(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> list[dict[str, str]]:
    return [{c: "" if r[c] is None else str(r[c]) for c in columns} for r in rows]


def audit_filters(net: Net) -> list[tuple[dict[str, Any], tuple[Any, ...]]]:  # noqa: F811
    """(export filters, the same as a WHERE clause), each keeping some entries but not all."""
    everything = db_audit(net)
    some_case = next(r["case_id"] for r in everything if r["case_id"])
    times = sorted({datetime.fromisoformat(r["recorded_at"]) for r in everything})
    start, end = times[0], times[-1]
    involved = (
        select(cases.c.case_id)
        .where(cases.c.reporting_institution == "BANKB")
        .union(select(orders.c.case_id).where(orders.c.addressed_to == "BANKB"))
    )
    return [
        ({"case_id": some_case}, (audit_log.c.case_id == some_case,)),
        (
            {"institution": "BANKB"},
            (or_(audit_log.c.actor == "BANKB", audit_log.c.case_id.in_(involved)),),
        ),
        (
            {"institution": "BANKA"},
            (
                or_(
                    audit_log.c.actor == "BANKA",
                    audit_log.c.case_id.in_(
                        select(cases.c.case_id).where(cases.c.reporting_institution == "BANKA")
                    ),
                ),
            ),
        ),
        (
            {"start": start, "end": end},
            (audit_log.c.recorded_at >= start, audit_log.c.recorded_at < end),
        ),
    ]


def test_audit_exports_hold_exactly_the_entries_of_each_filter(net: Net) -> None:  # noqa: F811
    active(net)
    everything = db_audit(net)
    assert len(everything) > 10
    text = run(exports.export_audit, net, "jsonl")
    assert jsonl_entries(text) == everything
    assert csv_rows(run(exports.export_audit, net, "csv"), exports.AUDIT_COLUMNS) == as_csv(
        everything, exports.AUDIT_COLUMNS
    )
    for filters, where in audit_filters(net):
        expected = db_audit(net, *where)
        assert 0 < len(expected) < len(everything), filters
        text = run(exports.export_audit, net, "jsonl", **filters)
        header = json.loads(text.splitlines()[0])["export"]
        assert header["filtered"] is True
        assert not [x for x in map(json.loads, text.splitlines()) if "state" in x]
        assert jsonl_entries(text) == expected, filters
        got = csv_rows(run(exports.export_audit, net, "csv", **filters), exports.AUDIT_COLUMNS)
        assert got == as_csv(expected, exports.AUDIT_COLUMNS), filters


def test_sla_exports_hold_exactly_the_rows_of_each_filter(net: Net) -> None:  # noqa: F811
    active(net)
    everything = db_sla(net)
    assert len(everything) > 1

    def key(r: dict[str, Any]) -> tuple[str, str, str]:
        return (r["clock_id"], r["at"], r["event"])

    some_case = everything[-1]["case_id"]
    times = sorted({datetime.fromisoformat(r["at"]) for r in everything})
    start, end = times[0], times[-1]
    cases_ = [
        ({}, ()),
        ({"case_id": some_case}, (sla_log.c.case_id == some_case,)),
        ({"institution": everything[0]["responsible"]},
         (clocks.c.responsible == everything[0]["responsible"],)),
        ({"start": start, "end": end}, (sla_log.c.at >= start, sla_log.c.at < end)),
    ]  # fmt: skip
    for filters, where in cases_:
        expected = sorted(db_sla(net, *where), key=key)
        assert expected, filters
        if filters:
            assert len(expected) < len(everything) or "institution" in filters, filters
        got = [json.loads(x) for x in run(exports.export_sla, net, "jsonl", **filters).splitlines()]
        assert sorted(got, key=key) == expected, filters
        rows = csv_rows(run(exports.export_sla, net, "csv", **filters), exports.SLA_COLUMNS)
        assert sorted(rows, key=key) == as_csv(expected, exports.SLA_COLUMNS), filters


def hub_keys(net: Net) -> dict[str, bytes]:  # noqa: F811
    return {net.hub_key.key_id: net.hub_key.public_key}


def full_export(net: Net, tmp_path: Path) -> Path:  # noqa: F811
    path = tmp_path / "audit.jsonl"
    shown = CliRunner().invoke(
        audit_export,
        ["--db", str(net.store.url), "--format", "jsonl", "--out", str(path), "--personal-data"],
    )
    assert shown.exit_code == 0, shown.output
    return path


def rewrite(path: Path, out: Path, edit: Any) -> Path:
    lines = []
    for line in path.read_text().splitlines():
        value = json.loads(line)
        changed = edit(value)
        if changed is not None:
            lines.append(json.dumps(changed))
    out.write_text("\n".join(lines) + "\n")
    return out


def test_a_full_export_verifies_offline_and_names_tampering(net: Net, tmp_path: Path) -> None:  # noqa: F811
    logged(net)
    path = full_export(net, tmp_path)
    result, _ = exports.verify_export(path, hub_keys(net))
    assert result.ok, result.findings
    assert result.checkpoints == 2 and result.entries == result.tree_size == len(db_audit(net))
    # A key that is not the hub's does not verify the checkpoints.
    other = PrivateKey.generate()
    untrusted, _ = exports.verify_export(path, {other.key_id: other.public_key})
    assert not untrusted.ok and untrusted.checkpoints_failed == 2

    pem = tmp_path / "hub.pem"
    pem.write_bytes(public_key_to_pem(net.hub_key.algorithm, net.hub_key.public_key))
    shown = CliRunner().invoke(audit_verify_export, ["--export", str(path), "--hub-key", str(pem)])
    assert shown.exit_code == 0, shown.output
    assert "2 checkpoint(s) verified, 0 failed" in shown.output and "0 problem(s)" in shown.output
    # The registry is no longer a source of the hub's keys: they are given as files.
    shown = CliRunner().invoke(
        audit_verify_export, ["--export", str(path), "--db", str(net.store.url)]
    )
    assert shown.exit_code == 2, shown.output

    [third] = [r for r in db_audit(net) if r["log_index"] == 3]
    changed = rewrite(
        path,
        tmp_path / "changed.jsonl",
        lambda v: {**v, "detail": v["detail"] + "!"} if v.get("log_index") == 3 else v,
    )
    result, _ = exports.verify_export(changed, hub_keys(net))
    assert not result.ok
    assert [
        (f.what, f.entry_id, f.log_index) for f in result.findings if f.what != "checkpoint"
    ] == [("changed", third["id"], 3)]
    shown = CliRunner().invoke(
        audit_verify_export, ["--export", str(changed), "--hub-key", str(pem)]
    )
    assert shown.exit_code == 1 and f"CHANGED: entry {third['id']} position 3" in shown.output

    removed = rewrite(
        path, tmp_path / "removed.jsonl", lambda v: None if v.get("log_index") == 4 else v
    )
    result, _ = exports.verify_export(removed, hub_keys(net))
    assert not result.ok
    assert ("removed", 4) in [(f.what, f.log_index) for f in result.findings]
    shown = CliRunner().invoke(
        audit_verify_export, ["--export", str(removed), "--hub-key", str(pem)]
    )
    assert shown.exit_code == 1 and "REMOVED: position 4" in shown.output


def test_a_filtered_export_is_refused_for_verification(net: Net, tmp_path: Path) -> None:  # noqa: F811
    logged(net)
    path = tmp_path / "bankb.jsonl"
    args = ["--db", str(net.store.url), "--out", str(path), "--institution", "BANKB"]
    shown = CliRunner().invoke(audit_export, [*args, "--personal-data"])
    assert shown.exit_code == 0, shown.output
    with pytest.raises(exports.ExportError, match=r"filtered export .*cannot be verified"):
        exports.verify_export(path, hub_keys(net))
    pem = tmp_path / "hub.pub"
    pem.write_bytes(public_key_to_pem(net.hub_key.algorithm, net.hub_key.public_key))
    shown = CliRunner().invoke(audit_verify_export, ["--export", str(path), "--hub-key", str(pem)])
    # Not a finding in the log: the check cannot be made on part of a tree.
    assert shown.exit_code == 2 and "cannot be verified as a whole tree" in shown.output


def test_cli_exports_write_csv_with_the_columns(net: Net, tmp_path: Path) -> None:  # noqa: F811
    active(net)
    for command, columns, expected, options in (
        (audit_export, exports.AUDIT_COLUMNS, len(db_audit(net)), ["--personal-data"]),
        (sla_export, exports.SLA_COLUMNS, len(db_sla(net)), []),
    ):
        path = tmp_path / "out.csv"
        shown = CliRunner().invoke(
            command, ["--db", str(net.store.url), "--format", "csv", "--out", str(path), *options]
        )
        assert shown.exit_code == 0, shown.output
        assert len(csv_rows(path.read_text(), columns)) == expected > 0
    shown = CliRunner().invoke(
        audit_export, ["--db", str(net.store.url), "--from", "2020-01-01", "--personal-data"]
    )
    assert shown.exit_code == 2 and "time zone" in shown.output
