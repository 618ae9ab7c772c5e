"""The audit log as a Merkle tree on a real database (SQLite and PostgreSQL): the sequencer
places committed entries, checkpoints are signed, and `stophub audit verify` finds the log
intact, then names each entry changed, removed, inserted or moved when the database is
tampered with in each of those ways."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, LargeBinary, func, select, type_coerce, update

from hub.cli import main
from hub.crypto import fields
from hub.crypto.fields import DataKeyError
from hub.crypto.public import public_key_to_pem
from hub.domain.merkle import inclusion_proof, verify_consistency, verify_inclusion
from hub.service import auditlog, auditverify
from hub.service.commands import audit as au
from hub.service.commands.case import CREATE_REPORT
from hub.service.ports import AuditEntry, AuditRecord
from hub.store import auditscan
from hub.store.auditscan import _leafscan
from hub.store.tables import audit_checkpoints, audit_log, audit_log_nodes
from stophub.v1 import audit_pb2, case_pb2, envelope_pb2
from tests.unit.test_handlers import MULE_B, report_body

from .test_hub_on_db import Net, net  # noqa: F401  (the fixture)


def activity(net: Net, reports: int) -> None:  # noqa: F811
    for _ in range(reports):
        net.call("BANKA", CREATE_REPORT, report_body((MULE_B, 100_000)), case_pb2.Case)


def logged(net: Net) -> Net:  # noqa: F811
    """Two rounds of activity, each placed and checkpointed."""
    activity(net, 3)
    assert auditlog.sequence(net.store, net.clock) > 0
    assert auditlog.checkpoint(net.store, net.hub_key, net.clock, every=None) is not None
    activity(net, 3)
    net.clock.set(net.clock.now() + timedelta(minutes=2))
    auditlog.sequence(net.store, net.clock)
    assert auditlog.checkpoint(net.store, net.hub_key, net.clock) is not None
    return net


def verify(net: Net) -> auditverify.Verification:  # noqa: F811
    """The log checked four ways, which must agree: records read through the unit of work
    (an export takes this path), the raw scan in this process with the C accelerator and in
    pure Python, and the raw scan split over two worker processes in ranges of 3 ids."""
    # The hub's own public key, never the registry's list (an attacker may add to it).
    keys = {net.hub_key.key_id: net.hub_key.public_key}
    with net.store(read_only=True) as uow:
        try:
            by_records: auditverify.Verification | None = auditverify.verify(
                auditverify.read_all(uow), uow.audit.checkpoints(), uow.audit.log_state(), keys.get
            )
        except DataKeyError:  # a sealed value that does not open stops the ORM's read
            by_records = None
    scanned = auditverify.verify_store(net.store, keys.get, lambda: net.store.scan_audit(1))
    in_python = auditverify.verify_store(
        net.store, keys.get, lambda: net.store.scan_audit(1, native=False)
    )
    assert _summary(in_python) == _summary(scanned)
    in_workers = auditverify.verify_store(
        net.store, keys.get, lambda: net.store.scan_audit(2, chunk_ids=3)
    )
    assert _summary(in_workers) == _summary(scanned)
    if by_records is not None:
        assert _summary(by_records) == _summary(scanned)
    return scanned


def hub_pub(net: Net, tmp_path: Path) -> str:  # noqa: F811
    """The hub's public key file, as an auditor is given it (--hub-key)."""
    path = tmp_path / "hub.pub"
    path.write_bytes(public_key_to_pem(net.hub_key.algorithm, net.hub_key.public_key))
    return str(path)


def _summary(result: auditverify.Verification) -> object:
    return (
        result.entries,
        result.tree_size,
        result.root,
        result.checkpoints,
        result.checkpoints_failed,
        sorted(repr((f.what, f.entry_id, f.log_index)) for f in result.findings),
    )


@pytest.mark.skipif(
    not auditscan.native_available(), reason="the C accelerator is not built here (ADR 18)"
)
def test_every_entry_of_an_intact_log_is_hashed_in_c(net: Net) -> None:  # noqa: F811
    """Rows as this database's driver hands them back (SQLite's time text, PostgreSQL's
    aware times in the scan's own session zone) take the C loop, none the Python one: were
    the formats to drift apart, verification would still be right but several times slower."""
    logged(net)
    ring = fields.keyring()
    reader = auditscan._Reader(str(net.store.url), ring.pairs(), ring.current, True)
    try:
        bounds = reader.bounds()
        assert bounds is not None
        cur = reader.conn.cursor() if reader.sqlite else reader.conn.cursor(binary=True)
        cur.execute(reader.sql, (bounds[0], bounds[1] + 1))
        rows = cur.fetchall()
        hasher = reader.hasher
        assert _leafscan is not None
        *_, slow, untagged = _leafscan.hash_rows(
            rows,
            reader.sqlite,
            hasher.key_map,
            hasher.detail_aad,
            hasher.payload_aad,
            hasher.tag_map,
        )
        assert len(rows) > 10 and slow == [] and untagged == []
        assert hasher.hash(rows) == hasher.hash_python(rows)
    finally:
        reader.close()


def test_an_intact_log_verifies_and_proves_each_entry(net: Net, tmp_path: Path) -> None:  # noqa: F811
    logged(net)
    result = verify(net)
    assert result.ok, result.findings
    assert result.checkpoints == 2 and result.tree_size == result.entries > 10
    # The checkpoint is the hub's, and each entry is provably in it.
    with net.store(read_only=True) as uow:
        [_, latest] = uow.audit.checkpoints()
        rows = auditverify.read_all(uow)
        leaves = [r.leaf_hash for r in sorted(rows, key=lambda r: r.log_index or 0)]
    body = audit_pb2.LogCheckpoint.FromString(
        envelope_pb2.Envelope.FromString(latest.envelope).body
    )
    assert (body.tree_size, body.root_hash) == (latest.tree_size, latest.root_hash)
    proof = inclusion_proof(4, leaves)  # type: ignore[arg-type]
    assert verify_inclusion(4, latest.tree_size, leaves[4], proof, latest.root_hash)  # type: ignore[arg-type]
    key = hub_pub(net, tmp_path)
    shown = CliRunner().invoke(
        main, ["audit", "verify", "--db", str(net.store.url), "--hub-key", key]
    )
    assert shown.exit_code == 0, shown.output
    assert "2 checkpoint(s) verified, 0 failed" in shown.output and "0 problem(s)" in shown.output
    assert "signed envelope(s) verified with the key valid when recorded, 0 problem" in (
        shown.output
    )
    in_python = CliRunner().invoke(
        main, ["audit", "verify", "--db", str(net.store.url), "--hub-key", key, "--pure-python"]
    )
    assert in_python.exit_code == 0
    assert "entries hashed in pure Python (--pure-python)" in in_python.output
    if auditscan.native_available():
        assert "entries hashed with the C accelerator against OpenSSL" in shown.output

    def findings(output: str) -> list[str]:
        return [line for line in output.splitlines() if not line.startswith("entries hashed")]

    assert findings(in_python.output) == findings(shown.output)


def _id_at(engine: Engine, index: int) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(select(audit_log.c.id).where(audit_log.c.log_index == index)).scalar_one()
        )


def change(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.log_index == 3).values(actor="MALLORY"))


def remove(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(audit_log.delete().where(audit_log.c.log_index == 4))


def insert(engine: Engine) -> None:
    with engine.begin() as conn:
        size = conn.execute(select(func.max(audit_log.c.log_index))).scalar_one() + 1
        row = conn.execute(select(audit_log).where(audit_log.c.log_index == 1)).one()._asdict()
        row.pop("id")
        conn.execute(
            audit_log.insert().values(
                **{**row, "log_index": size, "actor": "MALLORY", "detail": "backdated"}
            )
        )


def move(engine: Engine) -> None:
    a, b = _id_at(engine, 2), _id_at(engine, 5)
    with engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.id == a).values(log_index=-1))
        conn.execute(update(audit_log).where(audit_log.c.id == b).values(log_index=2))
        conn.execute(update(audit_log).where(audit_log.c.id == a).values(log_index=5))


def rewrite_with_leaf(engine: Engine) -> None:
    """A careful forger changes an entry and recomputes its stored leaf too."""
    with engine.begin() as conn:
        row = conn.execute(select(audit_log).where(audit_log.c.log_index == 6)).one()
        entry = AuditEntry(
            kind=row.kind,
            actor="MALLORY",
            message_id=row.message_id,
            detail=row.detail,
            payload=row.payload,
            case_id=row.case_id,
            order_id=row.order_id,
        )
        forged = AuditRecord(row.id, row.recorded_at, entry)
        conn.execute(
            update(audit_log)
            .where(audit_log.c.id == row.id)
            .values(actor="MALLORY", leaf_hash=auditlog.entry_leaf(6, forged))
        )


def copy_sealed_detail(engine: Engine) -> None:
    """A sealed detail copied from another entry opens (same column, same key) but says
    something else."""
    with engine.begin() as conn:
        [(other,)] = conn.execute(
            select(type_coerce(audit_log.c.detail, LargeBinary)).where(audit_log.c.log_index == 1)
        )
        conn.execute(
            update(audit_log)
            .where(audit_log.c.log_index == 7)
            .values(detail=type_coerce(other, LargeBinary))
        )


def garble_sealed_detail(engine: Engine) -> None:
    """A sealed detail with one ciphertext byte flipped no longer opens."""
    with engine.begin() as conn:
        [(sealed,)] = conn.execute(
            select(type_coerce(audit_log.c.detail, LargeBinary)).where(audit_log.c.log_index == 8)
        )
        garbled = bytes(sealed[:-1]) + bytes([sealed[-1] ^ 1])
        conn.execute(
            update(audit_log)
            .where(audit_log.c.log_index == 8)
            .values(detail=type_coerce(garbled, LargeBinary))
        )


def forge_checkpoint(engine: Engine) -> None:
    with engine.begin() as conn:
        first = conn.execute(select(func.min(audit_checkpoints.c.tree_size))).scalar_one()
        conn.execute(
            update(audit_checkpoints)
            .where(audit_checkpoints.c.tree_size == first)
            .values(root_hash=bytes(32))
        )


@pytest.mark.parametrize(
    ("tamper", "what", "where"),
    [
        (change, "changed", 3),
        (remove, "removed", 4),
        (insert, "inserted", None),
        (move, "moved", 2),
        (rewrite_with_leaf, "checkpoint", None),
        (forge_checkpoint, "checkpoint", None),
        (copy_sealed_detail, "changed", 7),
        (garble_sealed_detail, "unreadable", 8),
    ],
    ids=[
        "changed",
        "removed",
        "inserted",
        "moved",
        "rewritten-with-leaf",
        "forged-checkpoint",
        "sealed-detail-copied",
        "sealed-detail-garbled",
    ],
)
def test_each_kind_of_tampering_is_named(
    net: Net,  # noqa: F811
    tamper: Callable[[Engine], None],
    what: str,
    where: int | None,
    tmp_path: Path,
) -> None:
    logged(net)
    assert verify(net).ok
    tamper(net.store.engine)
    result = verify(net)
    assert not result.ok
    found = [f for f in result.findings if f.what == what]
    assert found, result.findings
    if where is not None:
        assert where in {f.log_index for f in found}, found
    shown = CliRunner().invoke(
        main, ["audit", "verify", "--db", str(net.store.url), "--hub-key", hub_pub(net, tmp_path)]
    )
    assert shown.exit_code == 1, shown.output
    assert "Traceback" not in shown.output
    assert what.upper() in shown.output


def test_proofs_of_a_long_log_come_from_its_stored_subtree_roots(
    net: Net,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Past 256 entries the sequencer keeps the roots of whole subtrees: the API's proofs use
    them (a few rows, not every leaf), verify against the signed roots, and a root that was
    tampered with costs only speed: the proof is built again from the leaves."""
    with net.store() as uow:
        for i in range(700):
            uow.audit.append(AuditEntry("clock", "HUB", f"bulk-{i}", f"step {i}"), net.clock.now())
        uow.commit()
    auditlog.sequence(net.store, net.clock)
    first = auditlog.checkpoint(net.store, net.hub_key, net.clock, every=None)
    activity(net, 1)
    auditlog.sequence(net.store, net.clock)
    second = auditlog.checkpoint(net.store, net.hub_key, net.clock, every=None)
    assert first is not None and second is not None and second.tree_size > first.tree_size > 700
    assert net.count(audit_log_nodes) == first.tree_size // 256

    def prove(index: int) -> audit_pb2.InclusionProof:
        return net.call(
            "CENTRE",
            au.GET_INCLUSION_PROOF,
            audit_pb2.GetInclusionProofBody(log_index=index, tree_size=second.tree_size),
            audit_pb2.InclusionProof,
        )

    for index in (0, 300, 511, 512, second.tree_size - 1):
        proof = prove(index)
        assert verify_inclusion(
            index, second.tree_size, proof.leaf_hash, list(proof.hashes), second.root_hash
        )
    consistency = net.call(
        "CENTRE",
        au.GET_CONSISTENCY_PROOF,
        audit_pb2.GetConsistencyProofBody(first_size=first.tree_size, second_size=second.tree_size),
        audit_pb2.ConsistencyProof,
    )
    assert verify_consistency(
        first.tree_size,
        second.tree_size,
        list(consistency.hashes),
        first.root_hash,
        second.root_hash,
    )
    with net.store.engine.begin() as conn:
        conn.execute(update(audit_log_nodes).values(node_hash=bytes(32)))
    proof = prove(300)
    assert verify_inclusion(
        300, second.tree_size, proof.leaf_hash, list(proof.hashes), second.root_hash
    )
    assert "stored subtree roots give a wrong proof" in caplog.text


_SCAN_UNDER_A_HANDLER = """
import signal, sys
from hub.crypto import fields
from hub.store.sql import SqlStore
# The parent's SIGTERM only sets a flag, as an event loop's handler does (the console, serve).
signal.signal(signal.SIGTERM, lambda *_: None)
fields.configure(fields.Keyring([(k, bytes.fromhex(v)) for k, v in {keys!r}], {current!r}))
store = SqlStore({url!r})
chunks = store.scan_audit(2, chunk_ids=3)
next(chunks)
chunks.close()  # the pool is terminated with workers still waiting for tasks
print("closed")
"""


def test_a_scan_ends_its_workers_whatever_its_parent_does_with_sigterm(net: Net) -> None:  # noqa: F811
    """The parallel scan's workers are forked: they inherited the parent's SIGTERM handler,
    and one that only records the signal kept a worker alive through the pool's terminate(),
    so the verification never returned (a bench run hung for half an hour on it)."""
    logged(net)
    ring = fields.keyring()
    script = _SCAN_UNDER_A_HANDLER.format(
        keys=[(k, key.hex()) for k, key in ring.pairs()],
        current=ring.current,
        url=str(net.store.url),
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "closed", done.stderr
