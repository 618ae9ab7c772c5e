"""AuditService (proto/stophub/v1/audit.proto): the audit log for the centre, the regulator
and auditors, read-only: its entries by position, the hub-signed checkpoints, and RFC 9162
inclusion and consistency proofs against them (docs/audit.md, ADR 15)."""

from __future__ import annotations

import logging

from google.protobuf.message import Message

from hub.domain.errors import InvalidArgument, NotFound, OutOfRange
from hub.domain.merkle import (
    TiledTree,
    consistency_path,
    consistency_proof,
    inclusion_path,
    inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from hub.service import auditlog, wire
from hub.service.pipeline import Command, Context
from hub.service.ports import LogCheckpointRow
from stophub.v1 import audit_pb2, envelope_pb2

log = logging.getLogger(__name__)

MAX_PAGE = 500
DEFAULT_PAGE = 100


def list_audit_entries(ctx: Context, body: audit_pb2.ListAuditEntriesBody) -> Message:
    if body.from_index < 0:
        raise InvalidArgument("from_index", "is a position in the log, 0 or more")
    if not 0 <= body.page_size <= MAX_PAGE:
        raise InvalidArgument("page_size", f"at most {MAX_PAGE}")
    size = ctx.uow.audit.log_state().size
    page = ctx.uow.audit.placed(body.from_index, body.page_size or DEFAULT_PAGE)
    out = audit_pb2.AuditEntryPage(tree_size=size)
    for logged in page:
        if logged.log_index is None or logged.log_index >= size:
            break
        e = logged.record.entry
        out.entries.add(
            log_index=logged.log_index,
            entry_id=logged.record.entry_id,
            record_time=wire.ts(logged.record.recorded_at),
            kind=e.kind,
            actor=e.actor,
            message_id=e.message_id,
            case_id=e.case_id or "",
            order_id=e.order_id or "",
            detail=e.detail,
            payload=e.payload or b"",
            leaf_hash=logged.leaf_hash or b"",
        )
    return out


def _checkpoint(ctx: Context, size: int) -> LogCheckpointRow:
    found = ctx.uow.audit.checkpoints()
    if not found:
        raise NotFound("NO_CHECKPOINT", "the hub has signed no checkpoint of its log yet")
    if size == 0:
        return found[-1]
    for cp in found:
        if cp.tree_size == size:
            return cp
    raise NotFound(
        "CHECKPOINT_NOT_FOUND",
        f"no checkpoint of {size} entries; the hub signed trees of "
        + ", ".join(str(cp.tree_size) for cp in found[-5:])
        + (" (and earlier)" if len(found) > 5 else ""),
    )


def get_log_checkpoint(ctx: Context, body: audit_pb2.GetLogCheckpointBody) -> Message:
    if body.tree_size < 0:
        raise InvalidArgument("tree_size", "is 0 (the latest) or a checkpoint's size")
    if body.fresh and body.tree_size == 0:
        # Signing a checkpoint records nothing about anyone: the hub states what it holds.
        auditlog.sequence(ctx.hub.uow, ctx.hub.clock)
        # The same memory as the scheduled signing: a member asking for a fresh checkpoint
        # must not get a rolled-back or forked database signed either.
        signed = auditlog.checkpoint(
            ctx.hub.uow,
            ctx.hub.signer,
            ctx.hub.clock,
            every=None,
            memory=ctx.hub.jobs.log_memory,
        )
        if signed is not None:
            ctx.hub.latest_checkpoint.signed(signed)
        with ctx.hub.uow(read_only=True) as fresh:
            found = fresh.audit.checkpoints()
        if not found:
            raise NotFound("NO_CHECKPOINT", "the log is empty: there is nothing to sign")
        cp = found[-1]
    else:
        cp = _checkpoint(ctx, body.tree_size)
    return audit_pb2.SignedLogCheckpoint(checkpoint=envelope_pb2.Envelope.FromString(cp.envelope))


def get_inclusion_proof(ctx: Context, body: audit_pb2.GetInclusionProofBody) -> Message:
    cp = _checkpoint(ctx, body.tree_size)
    if not 0 <= body.log_index < cp.tree_size:
        raise OutOfRange(
            "NOT_IN_TREE",
            f"position {body.log_index} is not in the tree of {cp.tree_size} entries",
        )
    index, size = body.log_index, cp.tree_size
    tree = TiledTree(ctx.uow.audit.nodes)
    leaf = tree(index, index + 1)
    hashes = inclusion_path(index, size, tree)
    if not verify_inclusion(index, size, leaf, hashes, cp.root_hash):
        # A stored subtree root is wrong (the sequencer's, or tampered): the proof is built
        # again from every leaf, and if that fails too, the client's check says so.
        log.error("audit log: stored subtree roots give a wrong proof for %d of %d", index, size)
        leaves = ctx.uow.audit.leaves(size)
        leaf, hashes = leaves[index], inclusion_proof(index, leaves)
    return audit_pb2.InclusionProof(log_index=index, tree_size=size, leaf_hash=leaf, hashes=hashes)


def get_consistency_proof(ctx: Context, body: audit_pb2.GetConsistencyProofBody) -> Message:
    """Proves the tree of `second_size` (a checkpoint's; 0 for the latest) an extension of its
    prefix of `first_size` entries: any size from 1 to the second, so that a member proves
    the checkpoint it kept against a newer one whatever their sizes (docs/witness.md)."""
    if body.first_size < 1:
        raise InvalidArgument(
            "first_size", f"is {body.first_size}: give the size of the smaller tree, 1 or more"
        )
    if body.second_size < 0:
        raise InvalidArgument("second_size", "is 0 (the latest checkpoint) or a checkpoint's size")
    second = _checkpoint(ctx, body.second_size)
    first_size = body.first_size
    if first_size > second.tree_size:
        raise OutOfRange(
            "NOT_IN_TREE",
            f"first_size {first_size} is larger than the checkpoint of {second.tree_size} "
            "entries: a tree is proved against a larger or equal one",
        )
    tree = TiledTree(ctx.uow.audit.nodes)
    # The first root is not signed unless a checkpoint of that size exists; the proof is
    # checked against the signed second root, and the first root it implies is the
    # prefix's own (RFC 9162 2.1.4.2 recomputes both from the path).
    first_root = tree(0, first_size)
    hashes = consistency_path(first_size, second.tree_size, tree)
    if not verify_consistency(first_size, second.tree_size, hashes, first_root, second.root_hash):
        log.error(
            "audit log: stored subtree roots give a wrong consistency proof %d..%d",
            first_size,
            second.tree_size,
        )
        hashes = consistency_proof(first_size, ctx.uow.audit.leaves(second.tree_size))
    return audit_pb2.ConsistencyProof(
        first_size=first_size, second_size=second.tree_size, hashes=hashes
    )


LIST_AUDIT_ENTRIES = Command(
    "ListAuditEntries", audit_pb2.ListAuditEntriesBody, list_audit_entries, mutating=False
)
GET_LOG_CHECKPOINT = Command(
    "GetLogCheckpoint", audit_pb2.GetLogCheckpointBody, get_log_checkpoint, mutating=False
)
GET_INCLUSION_PROOF = Command(
    "GetInclusionProof", audit_pb2.GetInclusionProofBody, get_inclusion_proof, mutating=False
)
GET_CONSISTENCY_PROOF = Command(
    "GetConsistencyProof",
    audit_pb2.GetConsistencyProofBody,
    get_consistency_proof,
    mutating=False,
)
