"""The audit log over gRPC, as an auditor meets it: entries by position, a checkpoint signed
on request and checked with the pinned hub key, an inclusion proof of an entry and a
consistency proof between two checkpoints, both verified with the RFC 9162 algorithms; a bank
may read none of it, and the auditor can change nothing."""

from __future__ import annotations

import grpc
import pytest

from adapters.sdk import HubClient, HubError
from hub.domain.merkle import leaf_hash, verify_consistency, verify_inclusion
from hub.service.auditlog import leaf_data
from hub.service.ports import AuditEntry, AuditRecord
from tests.e2e.conftest import Network
from tests.e2e.wire_helpers import report


async def test_an_auditor_proves_entries_and_checkpoints(
    clients: dict[str, HubClient], network: Network
) -> None:
    regulator = clients["REG"]
    for _ in range(3):
        await clients["BANKA"].create_report(report(network.clock.now(), (500_000,)))
    _, first = await regulator.get_log_checkpoint(fresh=True)
    assert first.tree_size > 0
    await clients["BANKA"].create_report(report(network.clock.now(), (500_000,)))
    _, second = await regulator.get_log_checkpoint(fresh=True)
    assert second.tree_size > first.tree_size

    page = await regulator.list_audit_entries(0, 500)
    assert page.tree_size >= second.tree_size
    assert [e.log_index for e in page.entries] == list(range(len(page.entries)))
    # Each entry's leaf is recomputable from what the API returns.
    e = page.entries[2]
    record = AuditRecord(
        e.entry_id,
        e.record_time.ToDatetime().replace(tzinfo=network.clock.now().tzinfo),
        AuditEntry(
            kind=e.kind,
            actor=e.actor,
            message_id=e.message_id,
            detail=e.detail,
            payload=e.payload or None,
            case_id=e.case_id or None,
            order_id=e.order_id or None,
        ),
    )
    assert leaf_hash(leaf_data(2, record)) == e.leaf_hash

    proof = await regulator.get_inclusion_proof(2, second.tree_size)
    assert proof.leaf_hash == e.leaf_hash
    assert verify_inclusion(2, second.tree_size, e.leaf_hash, list(proof.hashes), second.root_hash)
    assert not verify_inclusion(
        2, second.tree_size, e.leaf_hash, list(proof.hashes), first.root_hash
    )
    consistency = await regulator.get_consistency_proof(first.tree_size, second.tree_size)
    assert verify_consistency(
        first.tree_size,
        second.tree_size,
        list(consistency.hashes),
        first.root_hash,
        second.root_hash,
    )

    with pytest.raises(HubError) as bank:
        await clients["BANKA"].list_audit_entries()
    assert bank.value.code == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(HubError) as beyond:
        await regulator.get_inclusion_proof(second.tree_size, second.tree_size)
    assert beyond.value.code == grpc.StatusCode.OUT_OF_RANGE
    with pytest.raises(HubError) as unknown:
        await regulator.get_log_checkpoint(second.tree_size + 1000)
    assert unknown.value.code == grpc.StatusCode.NOT_FOUND
