"""What the hub gives its witnesses, on SQLite and PostgreSQL (docs/witness.md): the newest
signed checkpoint (read at most once per max_age, replaced at once when this hub signs), and
consistency proofs from any size to a checkpoint's, which every member may ask."""

from __future__ import annotations

from datetime import timedelta

import pytest

from hub.domain.errors import InvalidArgument, OutOfRange
from hub.domain.merkle import root_of, verify_consistency
from hub.service import auditlog
from hub.service.commands import audit as au
from hub.service.commands.case import CREATE_REPORT
from hub.service.latestcheckpoint import LatestCheckpoint
from hub.service.ports import LogCheckpointRow
from stophub.v1 import audit_pb2, case_pb2
from tests.unit.test_handlers import MULE_B, report_body

from .test_hub_on_db import Net, net  # noqa: F401  (the fixture)


def activity(net: Net, reports: int) -> None:  # noqa: F811
    for _ in range(reports):
        net.call("BANKA", CREATE_REPORT, report_body((MULE_B, 100_000)), case_pb2.Case)


def signed(net: Net) -> LogCheckpointRow:  # noqa: F811
    auditlog.sequence(net.store, net.clock)
    row = auditlog.checkpoint(net.store, net.hub_key, net.clock, every=None)
    assert row is not None
    return row


def test_latest_checkpoint_is_the_largest_and_cached(net: Net) -> None:  # noqa: F811
    with net.store(read_only=True) as uow:
        assert uow.audit.latest_checkpoint() is None
    ticks = [0.0]
    latest = LatestCheckpoint(net.store, max_age=1.0, monotonic=lambda: ticks[0])
    assert latest.stale() and latest.get() is None
    activity(net, 2)
    first = signed(net)
    activity(net, 2)
    net.clock.advance(timedelta(minutes=2))
    second = signed(net)
    with net.store(read_only=True) as uow:
        found = uow.audit.latest_checkpoint()
    assert found is not None and found.envelope == second.envelope
    assert second.tree_size > first.tree_size

    # Within max_age the cache answers without the database (it still says "none").
    ticks[0] = 0.5
    assert not latest.stale() and latest.get() is None
    ticks[0] = 1.0
    assert latest.get() == second.envelope
    # This hub signing replaces it at once, without waiting for the next read.
    activity(net, 1)
    third = signed(net)
    latest.signed(third)
    assert latest.peek() == third.envelope and not latest.stale()


def test_every_member_proves_any_size_against_a_checkpoint(net: Net) -> None:  # noqa: F811
    # Over 256 entries: the proof comes from the stored subtree roots.
    activity(net, 60)
    cp = signed(net)
    assert cp.tree_size > 300
    with net.store(read_only=True) as uow:
        leaves = uow.audit.leaves(cp.tree_size)
    for code in ("BANKA", "PAYX", "CENTRE"):
        got = net.call(
            code,
            au.GET_LOG_CHECKPOINT,
            audit_pb2.GetLogCheckpointBody(),
            audit_pb2.SignedLogCheckpoint,
        )
        assert got.checkpoint.SerializeToString() == cp.envelope
    for first in (1, 2, 3, 255, 256, 257, 300, cp.tree_size - 1, cp.tree_size):
        proof = net.call(
            "BANKA",
            au.GET_CONSISTENCY_PROOF,
            audit_pb2.GetConsistencyProofBody(first_size=first, second_size=cp.tree_size),
            audit_pb2.ConsistencyProof,
        )
        assert (proof.first_size, proof.second_size) == (first, cp.tree_size)
        assert verify_consistency(
            first, cp.tree_size, list(proof.hashes), root_of(leaves[:first]), cp.root_hash
        ), first
    # second_size 0: the latest checkpoint.
    latest = net.call(
        "BANKA",
        au.GET_CONSISTENCY_PROOF,
        audit_pb2.GetConsistencyProofBody(first_size=5),
        audit_pb2.ConsistencyProof,
    )
    assert latest.second_size == cp.tree_size


@pytest.mark.parametrize(
    ("first", "error", "says"),
    [
        (0, InvalidArgument, "first_size"),
        (-1, InvalidArgument, "first_size"),
        (10_000, OutOfRange, "larger than the checkpoint"),
    ],
)
def test_a_proof_from_a_size_outside_the_tree_is_refused(
    net: Net,  # noqa: F811
    first: int,
    error: type[Exception],
    says: str,
) -> None:
    activity(net, 1)
    cp = signed(net)
    with pytest.raises(error, match=says):
        net.hub.handle(
            au.GET_CONSISTENCY_PROOF,
            net.envelope(
                "BANKA",
                audit_pb2.GetConsistencyProofBody(first_size=first, second_size=cp.tree_size),
            ),
        )
