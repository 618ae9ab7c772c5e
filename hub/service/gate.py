"""The gate every signed message passes before any handler sees it: the envelope's headers,
the connection's certificate, the sender and its key, the signature, freshness, and the body's
type; and the record of every message it refused.

A refused message changes nothing and is kept in the audit log (`Gate.record_rejection`).
The registry of members and their keys is cached between requests (`MemberCache`) and read
again whenever the store's registry version moved.
"""

from __future__ import annotations

import logging
import threading
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from hub.crypto.envelope import create_time_of, verify_envelope
from hub.crypto.signing import SignatureError
from hub.domain.errors import DomainError, InvalidArgument, PermissionDenied, Unauthenticated
from hub.domain.institutions import (
    HUB_CODE,
    AlgorithmPolicy,
    Institution,
    InstitutionKind,
    KeyState,
)
from hub.service import wire
from hub.service.batching import Batch, GroupCommit
from hub.service.ports import AuditEntry, Clock, StoreUnavailable, UnitOfWork
from stophub.v1 import envelope_pb2

log = logging.getLogger(__name__)

B = TypeVar("B", bound=Message)

# An envelope is accepted only while it is fresh: created no more than REPLAY_WINDOW before the
# hub's time and no more than MAX_CLOCK_SKEW after it. Ids are remembered far longer (for as long
# as the inbound log is kept), so a replay inside the window gets the original answer.
REPLAY_WINDOW = timedelta(minutes=5)
MAX_CLOCK_SKEW = timedelta(minutes=1)


@dataclass(frozen=True, eq=False)
class Members:
    """The registry at one version: every member with its keys (not its contacts)."""

    version: int | None
    by_code: dict[str, Institution]
    kinds: dict[str, InstitutionKind]

    def may_sign(self, code: str, key_ids: Collection[str], now: datetime) -> bool:
        """Whether every one of `key_ids` is a key of `code` that may sign at `now`."""
        member = self.by_code.get(code)
        return member is not None and set(key_ids) <= {k.key_id for k in member.usable_keys(now)}


class MemberCache:
    """The members and their keys, kept in memory between requests.

    Authentication needs the sender and its keys on every request, and every handler that
    routes needs every member's kind: three queries and a few hundred objects per request when
    read from the store. The store's registry version moves in the transaction of every change
    to members, keys or contacts (the CLI's, in another process, included); each request reads
    it inside its own transaction and reloads on a difference, so a revoked key is refused
    from the next request on, exactly as when every request read the keys."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: Members | None = None
        self.loads = 0

    def peek(self) -> Members | None:
        """The last registry read, possibly stale: good for work that is confirmed later."""
        return self._current

    def current(self, uow: UnitOfWork) -> Members:
        """The registry as of `uow`'s transaction."""
        version = uow.institutions.version()
        cached = self._current
        if cached is not None and version is not None and cached.version == version:
            return cached
        with self._lock:
            cached = self._current
            if cached is not None and version is not None and cached.version == version:
                return cached
            found = uow.institutions.members()
            fresh = Members(version, found, {code: inst.kind for code, inst in found.items()})
            self.loads += 1
            if version is not None:
                self._current = fresh
            return fresh


class Gate:
    """Decides who is speaking and whether the message may be heard at all."""

    def __init__(
        self,
        writes: GroupCommit,
        clock: Clock,
        *,
        replay_window: timedelta = REPLAY_WINDOW,
        max_clock_skew: timedelta = MAX_CLOCK_SKEW,
    ) -> None:
        self.writes = writes
        self.clock = clock
        self.replay_window = replay_window
        self.max_clock_skew = max_clock_skew
        # Set by a server that authenticates its clients with certificates: every request
        # must then come with the institution code its client certificate names.
        self.require_peer = False
        self.members = MemberCache()
        # The policy file's [signing]: which algorithms each member may sign with.
        self.algorithms = AlgorithmPolicy()

    def check_envelope(self, envelope: envelope_pb2.Envelope, peer: str | None) -> None:
        """What can be checked without the registry: every header present and sane, and
        the connection's certificate naming the sender."""
        missing = [
            name
            for name in ("sender", "message_id", "key_id", "algorithm", "body_type")
            if not getattr(envelope, name)
        ]
        if not envelope.signature:
            missing.append("signature")
        if not envelope.HasField("create_time"):
            missing.append("create_time")
        if missing:
            raise Unauthenticated(
                "ENVELOPE_INCOMPLETE",
                "the envelope is not signed or is garbled: missing "
                + ", ".join(missing)
                + " (see docs/signing.md)",
            )
        self.check_peer(envelope, peer)
        for name, limit in (("sender", 32), ("message_id", 128), ("key_id", 64)):
            if len(getattr(envelope, name)) > limit:
                raise InvalidArgument(name, f"is longer than {limit} characters")
        check_people(envelope)
        wire.check_text(envelope)

    def check_peer(self, envelope: envelope_pb2.Envelope, peer: str | None) -> None:
        """The certificate that opened the connection must belong to the envelope's sender."""
        if peer is None:
            if self.require_peer:
                raise Unauthenticated(
                    "NO_CLIENT_CERTIFICATE",
                    "connect with the client certificate the network's CA issued to your "
                    "institution (mutual TLS)",
                )
            return
        if peer != envelope.sender:
            raise Unauthenticated(
                "CERTIFICATE_MISMATCH",
                f"the client certificate on this connection belongs to {peer!r}, but the "
                f"envelope's sender is {envelope.sender!r}: each institution connects with its "
                "own certificate and signs as itself",
            )

    def check_fresh(
        self, envelope: envelope_pb2.Envelope, now: datetime, sender: Institution
    ) -> None:
        """Refuse an envelope created outside the replay window around the hub's time, or
        signed with a key that a rotation has retired."""
        key = sender.key(envelope.key_id)
        if key is not None and key.not_after is not None and now >= key.not_after:
            newer = ", ".join(k.key_id for k in sender.usable_keys(now)) or "none registered"
            raise Unauthenticated(
                "KEY_RETIRED",
                f"key {key.key_id} of {sender.code} was rotated out at "
                f"{key.not_after.isoformat()}; sign with its successor ({newer})",
            )
        created = create_time_of(envelope)
        if created < now - self.replay_window:
            raise Unauthenticated(
                "ENVELOPE_EXPIRED",
                f"the envelope was created at {created.isoformat()}, more than "
                f"{_span(self.replay_window)} before the hub's time {now.isoformat()}: sign a "
                "new message with a new id and the current time (check the sender's clock)",
            )
        if created > now + self.max_clock_skew:
            raise Unauthenticated(
                "ENVELOPE_FROM_FUTURE",
                f"the envelope was created at {created.isoformat()}, more than "
                f"{_span(self.max_clock_skew)} after the hub's time {now.isoformat()}: "
                "synchronise the sender's clock (NTP) and sign again",
            )

    def authenticate(
        self, uow: UnitOfWork, envelope: envelope_pb2.Envelope, peer: str | None = None
    ) -> Institution:
        """The registered member that signed `envelope`, as of `uow`'s transaction."""
        self.check_envelope(envelope, peer)
        return self.identify(self.members.current(uow), envelope)

    def identify(self, members: Members, envelope: envelope_pb2.Envelope) -> Institution:
        """The member whose key made the envelope's signature, or Unauthenticated."""
        sender = members.by_code.get(envelope.sender)
        if sender is None or sender.kind is InstitutionKind.HUB:
            raise Unauthenticated(
                "UNKNOWN_SENDER", f"{envelope.sender!r} is not a registered member institution"
            )
        key = sender.key(envelope.key_id)
        if key is None:
            raise Unauthenticated(
                "UNKNOWN_KEY",
                f"{sender.code} has no key {envelope.key_id!r}; register it with the hub operator",
            )
        if key.state is KeyState.REVOKED:
            when = key.revoked_at.isoformat() if key.revoked_at else "earlier"
            raise Unauthenticated(
                "KEY_REVOKED", f"key {key.key_id} of {sender.code} was revoked at {when}"
            )
        if key.algorithm != envelope.algorithm:
            raise Unauthenticated(
                "ALGORITHM_MISMATCH",
                f"key {key.key_id} is an {key.algorithm} key; "
                f"the envelope says {envelope.algorithm!r}",
            )
        try:
            valid = verify_envelope(envelope, key.public_key)
        except (SignatureError, ValueError) as exc:
            raise Unauthenticated("BAD_SIGNATURE", f"signature cannot be checked: {exc}") from exc
        if not valid:
            raise Unauthenticated(
                "BAD_SIGNATURE",
                f"the signature does not verify with key {key.key_id} of {sender.code}: sign the "
                "body bytes as sent plus every header field, as docs/signing.md lays out",
            )
        if not self.algorithms.allows(sender.code, key.algorithm):
            # After the signature: the refusal goes to the member itself, not to anyone who
            # names it, and says what the network requires.
            allowed = sorted(self.algorithms.allowed_for(sender.code) or ())
            raise PermissionDenied(
                "ALGORITHM_NOT_ALLOWED",
                f"this network does not let {sender.code} sign with {key.algorithm}: sign with a "
                f"key of {' or '.join(allowed)} (register one with the hub operator)",
            )
        if envelope.recipient != HUB_CODE:
            raise InvalidArgument(
                "recipient", f"requests are addressed to {HUB_CODE}, not {envelope.recipient!r}"
            )
        return sender

    @staticmethod
    def decode(envelope: envelope_pb2.Envelope, body: type[B], command: str) -> B:
        """The envelope's body as `command` takes it, or InvalidArgument."""
        body_type = str(body.DESCRIPTOR.full_name)
        if envelope.body_type != body_type:
            raise InvalidArgument(
                "body_type", f"{command} takes a {body_type}, not {envelope.body_type!r}"
            )
        decoded = body()
        try:
            decoded.ParseFromString(envelope.body)
        except DecodeError as exc:
            raise InvalidArgument("body", f"is not a valid {body_type}: {exc}") from exc
        wire.check_text(decoded)
        return decoded

    def record_rejection(
        self, envelope: envelope_pb2.Envelope, raw: bytes, err: DomainError
    ) -> None:
        """Keep a refused message in the audit log, in a transaction of its own."""
        if isinstance(err, StoreUnavailable):
            return  # not a refusal, and there is no database to write it to
        try:
            self.writes.run(partial(self._reject_in, envelope=envelope, raw=raw, err=err))
        except Exception:  # the rejection itself must still reach the caller
            log.exception("could not audit a rejected message")

    def _reject_in(
        self, batch: Batch, *, envelope: envelope_pb2.Envelope, raw: bytes, err: DomainError
    ) -> None:
        self.audit_rejection(batch.uow, envelope, raw, err)
        batch.changed = True

    def audit_rejection(
        self, uow: UnitOfWork, envelope: envelope_pb2.Envelope, raw: bytes, err: DomainError
    ) -> None:
        """Keep a refused message in the audit log, in `uow`'s transaction."""
        uow.audit.append(
            AuditEntry(
                kind="rejected",
                actor=wire.storable(envelope.sender, 64),
                message_id=wire.storable(envelope.message_id, 128),
                detail=f"{err.code} {err.reason}: {err.message}",
                payload=raw,
            ),
            self.clock.now(),
        )


# The people an envelope names (fields 10 and 11): at most this many UTF-8 bytes each.
PERSON_MAX_BYTES = 64


def check_people(envelope: envelope_pb2.Envelope) -> None:
    """The operator and approver an envelope names must be usable ids of two people.

    Each at most 64 UTF-8 bytes without control characters; an approver only beside an
    operator, and never the operator again (maker-checker needs two people)."""
    for name in ("operator", "approver"):
        value: str = getattr(envelope, name)
        if len(value.encode("utf-8")) > PERSON_MAX_BYTES:
            raise InvalidArgument(
                name, f"is longer than {PERSON_MAX_BYTES} bytes in UTF-8", "INVALID_PERSON"
            )
        if any(unicodedata.category(ch) == "Cc" for ch in value):
            raise InvalidArgument(
                name,
                "contains a control character: name a person by a printable id",
                "INVALID_PERSON",
            )
    if envelope.approver and not envelope.operator:
        raise InvalidArgument(
            "approver",
            "an approver approves what an operator made: set operator too",
            "APPROVER_WITHOUT_OPERATOR",
        )
    if envelope.approver and envelope.approver == envelope.operator:
        raise InvalidArgument(
            "approver",
            f"{envelope.approver!r} is also the operator: a second person approves",
            "APPROVER_IS_OPERATOR",
        )


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 60 == 0:
        return f"{seconds // 60} minute(s)"
    return f"{seconds} second(s)"
