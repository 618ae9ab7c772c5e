"""Audit log benchmark (issue 8, "Speed"): verifying a log of 1,000,000 entries, and the cost
of an inclusion proof, each beside a baseline measured in the same run.

`python -m bench audit` (or `python -m bench.audit`). On a fresh SQLite file (and PostgreSQL
when STOPHUB_BENCH_DATABASE_URL or STOPHUB_TEST_DATABASE_URL is set):

1. N audit entries (default 1,000,000; `--quick` 100,000) are bulk inserted with Core, their
   details sealed as the hub seals them, one in ten with a 400-byte payload, each with the
   hub's tag (hub.crypto.audittag) over its id as the hub makes it; the sequencer
   (hub.service.auditlog.sequence) then places them all and one checkpoint is signed. Both
   are timed (informational).
2. Verification: `auditverify.verify_store` over `SqlStore.scan_audit`, what `stophub audit
   verify` runs on the database: every entry read raw and opened, its leaf recomputed and
   compared, its tag checked, the tree rebuilt, both checkpoints' signatures and roots
   checked; with one worker process per core (at most 8), and with one. Entries a second.
   Baseline: the same leaves and tags, from values already in memory, computed (and the tags
   compared) and the leaves folded into the tree by one process (what the check costs
   without the database). Target: at least 300,000 entries a second.
3. Inclusion proof: the proof `AuditService.GetInclusionProof` builds for a random entry
   (stored subtree roots and leaves read, then the audit path), mean of 50. Baseline:
   verifying that proof. And the consistency proof between the two checkpoints.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from bench.clocks import module_main, on_each_database
from bench.table import Row
from hub.bootstrap import ensure_hub_registered, migrate
from hub.crypto import audittag, fields
from hub.crypto.keys import PrivateKey
from hub.domain.merkle import (
    CompactRange,
    TiledTree,
    consistency_path,
    inclusion_path,
    verify_consistency,
    verify_inclusion,
)
from hub.service import auditlog, auditverify
from hub.service.ports import AuditEntry, AuditRecord, LogCheckpointRow
from hub.store import auditscan
from hub.store.sql import SqlStore
from hub.store.tables import audit_log
from hub.system.clock import ManualClock

T0 = datetime(2026, 11, 1, tzinfo=UTC)
BATCH = 10_000


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] audit: {message}", flush=True)


def entries(n: int) -> Iterator[dict[str, object]]:
    rng = random.Random(8)
    for i in range(n):
        payload = rng.randbytes(400) if i % 10 == 0 else None
        yield {
            "recorded_at": T0 + timedelta(milliseconds=i),
            "kind": ("received", "sent", "transition", "clock")[i % 4],
            "actor": ("BANKA", "BANKB", "CENTRE", "HUB")[i % 4],
            "message_id": f"m-{i}",
            "case_id": f"C20261101-{i // 50:08X}",
            "order_id": None,
            "payload": payload,
            "detail": f"step {i} of the bench's cases: something happened to case {i // 50}",
        }


def tagged(rows: Iterator[dict[str, object]], first_id: int) -> Iterator[dict[str, object]]:
    """Each row with its id and the hub's tag over it, as SqlAudit writes them."""
    kid, key = audittag.KEYS.current()
    for entry_id, row in enumerate(rows, start=first_id):
        record = _record(entry_id, row)
        tag = audittag.tag_of(key, *auditlog.entry_fields(record))
        yield {**row, "id": entry_id, "tag_key": kid, "tag": tag}


def _record(entry_id: int, row: dict[str, object]) -> AuditRecord:
    return AuditRecord(
        entry_id,
        row["recorded_at"],  # type: ignore[arg-type]
        AuditEntry(
            kind=str(row["kind"]),
            actor=str(row["actor"]),
            message_id=str(row["message_id"]),
            detail=str(row["detail"]),
            payload=row["payload"],  # type: ignore[arg-type]
            case_id=str(row["case_id"]),
        ),
    )


def load(store: SqlStore, n: int) -> float:
    started = time.perf_counter()
    batch: list[dict[str, object]] = []
    with store.engine.begin() as conn:
        top = conn.execute(select(func.max(audit_log.c.id))).scalar() or 0
        for row in tagged(entries(n), top + 1):
            batch.append(row)
            if len(batch) == BATCH:
                conn.execute(audit_log.insert(), batch)
                batch = []
        if batch:
            conn.execute(audit_log.insert(), batch)
    return time.perf_counter() - started


def baseline_hash(n: int) -> float:
    """The same leaves and tags, from values in memory: the verification's arithmetic alone."""
    kid = audittag.KEYS.current()[0]
    rows = [(_record(i + 1, row), row["tag"]) for i, row in enumerate(tagged(entries(n), 1))]
    check = audittag.KEYS.problem
    started = time.perf_counter()
    tree = CompactRange()
    for i, (record, tag) in enumerate(rows):
        fields_ = auditlog.entry_fields(record)
        tree.append(auditlog.leaf_of(i, *fields_))
        assert not check(kid, tag, *fields_)  # type: ignore[arg-type]
    tree.root()
    return time.perf_counter() - started


def run(label: str, url: str, n: int) -> list[Row]:
    migrate(url)
    store = SqlStore(url)
    clock = ManualClock(T0)
    hub_key = PrivateKey.generate()
    ensure_hub_registered(store, hub_key, clock)
    try:
        say(f"{label}: loading {n:,} entries")
        loaded = load(store, n)
        started = time.perf_counter()
        placed = auditlog.sequence(store, clock, batch=5000)
        sequenced = time.perf_counter() - started
        assert placed >= n, (placed, n)
        first = auditlog.checkpoint(store, hub_key, clock, every=None)
        assert first is not None
        # A second checkpoint a little later, for the consistency proof between the two.
        load(store, 1000)
        auditlog.sequence(store, clock)
        cp = auditlog.checkpoint(store, hub_key, clock, every=None)
        assert cp is not None
        say(f"{label}: loaded in {loaded:.1f} s, sequenced in {sequenced:.1f} s")
        keys = {hub_key.key_id: hub_key.public_key}
        verified: dict[tuple[int, bool], float] = {}
        jobs = auditscan.default_jobs()
        native = auditscan.native_available()
        for j, c in sorted({(1, native), (jobs, native), (jobs, False)}):
            started = time.perf_counter()
            result = auditverify.verify_store(
                store, keys.get, lambda j=j, c=c: store.scan_audit(j, native=c)
            )
            verified[j, c] = time.perf_counter() - started
            assert result.ok and result.checkpoints == 2, result.findings[:3]
        base = baseline_hash(n)
        say(
            f"{label}: verified {result.entries:,} in {verified[jobs, native]:.1f} s ({jobs} "
            f"processes, C accelerator {'on' if native else 'NOT BUILT'}), "
            f"{verified[1, native]:.1f} s (1), {verified[jobs, False]:.1f} s (pure Python); "
            f"in memory {base:.1f} s"
        )
        proof_ms, check_ms = proofs(store, cp.tree_size, cp.root_hash)
        consistency_ms = consistency(store, first, cp)
    finally:
        store.dispose()
    rate = result.entries / verified[jobs, native]
    how = "with the C accelerator" if native else "C accelerator NOT BUILT: pure Python"
    return [
        Row(
            "audit",
            f"sequencer, {label}, {n:,} entries (informational; load {loaded:.0f} s)",
            n / sequenced,
            "entries/s",
        ),
        Row(
            "audit",
            f"verify the log (stophub audit verify, {jobs} processes, {how}), {label}, "
            f"{result.entries:,} entries",
            rate,
            "entries/s",
            "the same leaves and tags computed, leaves folded, from memory, 1 process",
            n / base,
            True,
            "≥ 300,000 entries/s",
            rate >= 300_000,
        ),
        *(
            Row(
                "audit",
                f"verify the log, {how_run}, {label} (informational)",
                result.entries / verified[run],
                "entries/s",
                "the same leaves and tags computed, leaves folded, from memory, 1 process",
                n / base,
                True,
            )
            for run, how_run in (
                ((1, native), "1 process (--jobs 1)"),
                ((jobs, False), f"{jobs} processes, --pure-python"),
            )
        ),
        Row(
            "audit",
            f"inclusion proof as GetInclusionProof builds it (stored subtree roots), {label}, "
            f"tree of {cp.tree_size:,}",
            proof_ms,
            "ms",
            "verifying the proof",
            check_ms,
            False,
        ),
        Row(
            "audit",
            f"consistency proof as GetConsistencyProof builds it, {label}, "
            f"{first.tree_size:,} -> {cp.tree_size:,} (informational)",
            consistency_ms,
            "ms",
        ),
    ]


def proofs(store: SqlStore, size: int, root: bytes) -> tuple[float, float]:
    """Mean of 50 proofs of random entries, each read and built as the API does (subtree
    roots and leaves from the store, then the path), and of verifying each."""
    rng = random.Random(9)
    built, checked = [], []
    for _ in range(50):
        index = rng.randrange(size)
        started = time.perf_counter()
        with store(read_only=True) as uow:
            tree = TiledTree(uow.audit.nodes)
            leaf = tree(index, index + 1)
            proof = inclusion_path(index, size, tree)
        built.append(time.perf_counter() - started)
        started = time.perf_counter()
        assert verify_inclusion(index, size, leaf, proof, root)
        checked.append(time.perf_counter() - started)
    return sum(built) / len(built) * 1e3, sum(checked) / len(checked) * 1e3


def consistency(store: SqlStore, first: LogCheckpointRow, second: LogCheckpointRow) -> float:
    started = time.perf_counter()
    with store(read_only=True) as uow:
        proof = consistency_path(first.tree_size, second.tree_size, TiledTree(uow.audit.nodes))
    took = time.perf_counter() - started
    assert verify_consistency(
        first.tree_size, second.tree_size, proof, first.root_hash, second.root_hash
    )
    return took * 1e3


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("audit")
    g.add_argument("--audit-entries", type=int, default=None)


def rows(args: argparse.Namespace) -> list[Row]:
    n = args.audit_entries or (100_000 if args.quick else 1_000_000)
    fields.configure(fields.Keyring.generate())
    return on_each_database(args, lambda label, url: run(label, url, n))


if __name__ == "__main__":
    sys.exit(module_main("python -m bench.audit", add_arguments, rows, sys.argv[1:]))
