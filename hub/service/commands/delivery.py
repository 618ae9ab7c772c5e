"""DeliveryService (proto/stophub/v1/delivery.proto): a stream's subscription, and the
streams' work on the store, one transaction per batch instead of per stream.

A broadcast reaches every member at once and every member acknowledges at once: a
transaction per stream would queue a thousand write transactions behind each other (on
SQLite, behind one write lock). The router (hub/api/delivery.py) gathers what its streams
need in one turn of the event loop and calls these once for all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from google.protobuf.message import Message

from hub.domain.errors import DomainError, PermissionDenied, Unauthenticated
from hub.domain.institutions import KeyState
from hub.service import wire
from hub.service.permissions import authorize
from hub.service.pipeline import Command, Context, Hub
from hub.service.ports import AuditEntry, PendingDelivery, StoreUnavailable
from stophub.v1 import delivery_pb2, envelope_pb2

log = logging.getLogger(__name__)


def _never(ctx: Context, body: Message) -> Message:
    raise AssertionError("stream messages are handled by the stream")


SUBSCRIBE = Command("StreamDeliveries", delivery_pb2.SubscribeBody, _never, mutating=False)
ACK = Command("StreamDeliveries", delivery_pb2.AckBody, _never)


def open_stream(
    hub: Hub, envelope: envelope_pb2.Envelope, peer: str | None = None
) -> tuple[str, str]:
    """Authenticate a stream's first message; returns (institution code, connection name)."""
    try:
        with hub.uow(read_only=True) as uow:
            sender = hub.gate.authenticate(uow, envelope, peer)
            hub.gate.check_fresh(envelope, hub.clock.now(), sender)
            body = SUBSCRIBE.decode(envelope)
        authorize(SUBSCRIBE.name, sender.code, sender.kind)
    except DomainError as err:
        hub.record_rejection(envelope, envelope.SerializeToString(), err)
        raise
    return sender.code, body.connection_name or "default"


@dataclass(frozen=True)
class Ack:
    """One AckBody as it came in on the stream `institution` opened."""

    institution: str
    envelope: envelope_pb2.Envelope
    # The institution the connection's client certificate names (None without TLS).
    peer: str | None


def acknowledge_many(hub: Hub, acks: Sequence[Ack]) -> list[list[int] | DomainError]:
    """Store many acknowledgements in one transaction; per ack, in order, the sequences it
    acknowledged or the refusal that ends its stream.

    Each is checked as any signed message is (hub/service/gate.py: signature, freshness),
    then for the stream's owner and the body, and gets its own audit entry; a refused one
    changes nothing and is audited as refused, as a single one is. The database being
    unreachable refuses none of them: each gets StoreUnavailable and the deliveries come again."""
    raws = [a.envelope.SerializeToString() for a in acks]
    results: list[list[int] | DomainError] = [[] for _ in acks]
    try:
        with hub.uow() as uow:
            accepted: list[tuple[int, str, list[int]]] = []
            # The registry as of this transaction, read once for every ack in it.
            members = hub.gate.members.current(uow)
            # After the first query, as a command does: on SQLite the write lock is then
            # ours, so recorded times follow commit order.
            now = hub.clock.now()
            for i, ack in enumerate(acks):
                try:
                    hub.gate.check_envelope(ack.envelope, ack.peer)
                    sender = hub.gate.identify(members, ack.envelope)
                    hub.gate.check_fresh(ack.envelope, now, sender)
                    if sender.code != ack.institution:
                        raise PermissionDenied(
                            "STREAM_OWNER",
                            f"this stream belongs to {ack.institution}; {sender.code} may not "
                            "acknowledge on it",
                        )
                    sequences = wire.ack_sequences(ACK.decode(ack.envelope))
                except StoreUnavailable:
                    raise
                except DomainError as err:
                    results[i] = err
                    continue
                accepted.append((i, sender.code, sequences))
            if accepted:
                counts = uow.outbox.ack_many([(code, seqs) for _, code, seqs in accepted], now)
                for (i, code, sequences), count in zip(accepted, counts, strict=True):
                    uow.audit.append(
                        AuditEntry(
                            kind="received",
                            actor=code,
                            message_id=acks[i].envelope.message_id,
                            detail=f"acknowledged {count} of deliveries {sequences[:20]}",
                            payload=raws[i],
                        ),
                        now,
                    )
                    results[i] = sequences
                uow.commit()
    except StoreUnavailable as err:
        return [err] * len(acks)
    for ack, raw, result in zip(acks, raws, results, strict=True):
        if isinstance(result, DomainError):
            hub.record_rejection(ack.envelope, raw, result)
    return results


def pending_many(
    hub: Hub, institutions: Collection[str], limit: int
) -> dict[str, list[PendingDelivery]]:
    """The first `limit` unacknowledged deliveries of each institution, in sequence order."""
    with hub.uow(read_only=True) as uow:
        return uow.outbox.pending_many(institutions, limit)


def unacknowledged(hub: Hub, institutions: Collection[str], limit: int) -> dict[str, list[int]]:
    """The sequences of the first `limit` unacknowledged deliveries of each institution
    (no envelopes: most ticks only confirm that what is in flight is still in flight)."""
    if not institutions:
        return {}
    with hub.uow(read_only=True) as uow:
        return uow.outbox.unacked(institutions, limit)


@dataclass
class Prepared:
    # Per institution, the keys of its streams that can no longer sign, with the refusal
    # that ends each such stream.
    ended: dict[str, dict[str, DomainError]]
    # Per sequence counted as sent: its attempt number (counting this one). A sequence
    # missing here was acknowledged meanwhile, or its institution has no stream left.
    attempts: dict[int, int]


def prepare_sends(
    hub: Hub, streams: Mapping[str, Collection[str]], sends: Mapping[str, Sequence[int]]
) -> Prepared:
    """Before a batch goes out, in one transaction: which streams must end because the key
    that opened them was revoked or rotated out (`streams`: institution -> the key ids its
    open streams were opened with), and the attempts counted of what is sent to the
    institutions that keep a stream. Counting before sending means a redelivery after a
    quick reconnect can never report the same attempt number twice."""
    with hub.uow() as uow:
        states = uow.institutions.key_states(list(streams))
        now = hub.clock.now()
        ended: dict[str, dict[str, DomainError]] = {}
        counted: list[int] = []
        for code, sequences in sends.items():
            keys = streams.get(code, ())
            gone = {
                key_id: refusal
                for key_id in keys
                if (refusal := stream_key_refusal(code, key_id, states.get(code, {}), now))
            }
            if gone:
                ended[code] = gone
            if not keys or len(gone) < len(set(keys)):
                counted.extend(sequences)
        attempts = uow.outbox.count_attempts(counted, now)
        uow.commit()
    return Prepared(ended, attempts)


def stream_key_refusal(
    institution: str,
    key_id: str,
    keys: Mapping[str, tuple[KeyState, datetime | None]],
    now: datetime,
) -> DomainError | None:
    """The refusal that ends a stream opened with `key_id` (revoked, or rotated out), or
    None while the key may still sign."""
    state = keys.get(key_id)
    if state is None or state[0] is KeyState.REVOKED:
        return Unauthenticated(
            "KEY_REVOKED",
            f"key {key_id} of {institution}, which opened this stream, was revoked: "
            "open a new stream signed with an active key",
        )
    not_after = state[1]
    if not_after is not None and now >= not_after:
        return Unauthenticated(
            "KEY_RETIRED",
            f"key {key_id} of {institution}, which opened this stream, was rotated out "
            f"at {not_after.isoformat()}: open a new stream signed with its successor",
        )
    return None
