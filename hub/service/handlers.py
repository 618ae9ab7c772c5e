"""One handler per command, behind one pipeline every signed request goes through.

The pipeline: check the envelope, authenticate the sender's key, answer a resend with the
original answer, decode the body, check the sender may do this, run the handler, then write
the state, the audit entries, the hub-signed answer and the deliveries it causes in ONE
transaction. A refused message changes nothing and is kept in the audit log.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property, partial
from typing import Any, Generic, TypeVar

from google.protobuf.message import DecodeError, Message

from hub.crypto.envelope import create_time_of, digest_of, seal_message, verify_envelope
from hub.crypto.listkey import ListKey
from hub.crypto.signing import SignatureError
from hub.domain.blacklist import Terms
from hub.domain.cases import (
    Case,
    CaseState,
    Order,
    OrderCommand,
    OrderKind,
    OrderState,
    Policy,
    ReturnCommand,
    StopCommand,
    describe,
    validate_amount,
)
from hub.domain.clocks import Policy as ClockPolicySet
from hub.domain.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from hub.domain.institutions import HUB_CODE, Institution, InstitutionKind, KeyState
from hub.domain.returns import (
    PUBLIC_NOTICE,
    Claim,
    Distribution,
    DistributionMethod,
)
from hub.domain.rules import AutoStopRule
from hub.domain.trail import OPEN_STATES, NodeStatus, accounts_of, follow
from hub.domain.trail import build as build_trail
from hub.domain.wording import mask, yuan
from hub.domain.workdays import WeekdaysOnly, WorkingDays
from hub.service import wire
from hub.service.batching import Batch, GroupCommit
from hub.service.permissions import Access, authorize, refuse_kind, relation_of
from hub.service.ports import (
    AuditEntry,
    Clock,
    InboundRecord,
    Notifier,
    PendingDelivery,
    Signer,
    StoreUnavailable,
    UnitOfWork,
    UnitOfWorkFactory,
)
from hub.service.sla import Sweeper, Tracked, apply_clocks, audit_transitions
from hub.service.trail import trail_view
from stophub.v1 import (
    account_pb2,
    appeal_pb2,
    blacklist_pb2,
    case_pb2,
    delivery_pb2,
    envelope_pb2,
    institution_pb2,
    order_pb2,
    returns_pb2,
    sla_pb2,
    trail_pb2,
)

log = logging.getLogger(__name__)

B = TypeVar("B", bound=Message)

CENTRE = InstitutionKind.ANTI_FRAUD_CENTRE
MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50
# Other cases named in a link notice; the rest are "and more" (a busy mule account is reached
# by hundreds of victims).
LINKS_NAMED = 10
# Other cases read as sharing an account with one case.
MAX_LINKED = 1000
# An envelope is accepted only while it is fresh: created no more than REPLAY_WINDOW before the
# hub's time and no more than MAX_CLOCK_SKEW after it. Ids are remembered far longer (for as long
# as the inbound log is kept), so a replay inside the window gets the original answer.
REPLAY_WINDOW = timedelta(minutes=5)
MAX_CLOCK_SKEW = timedelta(minutes=1)
STORE_RETRY_DELAYS = (0.05, 0.2, 0.5, 1.0)
# How often a sweep also deletes the list changes no sync can replay (listing.prune_changes).
PRUNE_LIST_EVERY = timedelta(hours=1)


@dataclass
class Context:
    """What a handler may touch while its transaction is open."""

    hub: Hub
    uow: UnitOfWork
    now: datetime
    sender: Institution
    envelope: envelope_pb2.Envelope
    envelope_bytes: bytes
    command: str
    notified: set[str] = field(default_factory=set)
    queued: list[PendingDelivery] = field(default_factory=list)
    accepted: bool = False
    tracked: dict[str, Tracked] = field(default_factory=dict)
    # What the permission matrix granted: ALLOW, or OWN when the answer is limited to the
    # caller's own part.
    access: Access = Access.ALLOW
    # The registry as this transaction read it (None: read the store when asked).
    members: Members | None = None
    # The command changed the blacklist: following copies are woken after the commit.
    list_changed: bool = False

    def authorize(self, case: Case, order_id: str | None = None) -> Access:
        """Decide a call about one case (or one order in it) by the caller's relation to it."""
        self.access = authorize(
            self.command,
            self.sender.code,
            self.sender.kind,
            relation_of(case, self.sender.code, order_id),
        )
        return self.access

    def accept(self, command: str, case_id: str | None) -> None:
        """Audit the request as received, once, before anything it causes."""
        if self.accepted:
            return
        self.accepted = True
        self.uow.audit.append(
            AuditEntry(
                kind="received",
                actor=self.sender.code,
                message_id=self.envelope.message_id,
                detail=f"{command} accepted",
                payload=self.envelope_bytes,
                case_id=case_id,
            ),
            self.now,
        )

    @property
    def message_id(self) -> str:
        return self.envelope.message_id

    def deliver(self, recipient: str, notice: delivery_pb2.Notice) -> None:
        """Queue a hub-signed notice in the outbox, in this transaction."""
        self.queued.append(self.hub.deliver(self.uow, recipient, notice, self.now))
        self.notified.add(recipient)

    def deliver_to(self, recipients: Iterable[str], notice: delivery_pb2.Notice) -> None:
        """The same notice to each recipient, each signed for its recipient."""
        for recipient in recipients:
            self.deliver(recipient, notice)

    def track(self, case: Case, *, new: bool = False) -> None:
        """Watch a case so the clocks follow what this command does to it."""
        if case.case_id in self.tracked:
            return
        self.tracked[case.case_id] = Tracked(
            case,
            0 if new else len(case.events),
            {} if new else {o.order_id: o.state for o in case.orders},
            create_time_of(self.envelope) if new else None,
            new,
        )

    def record_events(self, case: Case, since: int) -> None:
        """Audit every timeline step the command added (events past `since`)."""
        audit_transitions(self.uow, case, since, self.now)

    @cached_property
    def kinds(self) -> dict[str, InstitutionKind]:
        """Every member's kind, read once per command."""
        if self.members is not None:
            return self.members.kinds
        return self.uow.institutions.kinds()

    def centres(self) -> list[str]:
        return sorted(code for code, kind in self.kinds.items() if kind is CENTRE)


@dataclass(frozen=True)
class Command(Generic[B]):
    """An RPC's contract: the body it takes and what it does. Who may send it is the
    permission matrix's business (hub/service/permissions.py), under the command's name."""

    name: str
    body: type[B]
    run: Callable[[Context, B], Message]
    mutating: bool = True
    # Decided by the caller's relation to the case the body names, once the handler has
    # loaded it (Context.authorize); before that, only kinds that may never call are refused.
    case_scoped: bool = False

    @property
    def body_type(self) -> str:
        return str(self.body.DESCRIPTOR.full_name)


@dataclass(frozen=True, eq=False)
class Members:
    """The registry at one version: every member with its keys (not its contacts)."""

    version: int | None
    by_code: dict[str, Institution]
    kinds: dict[str, InstitutionKind]


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


def _notice_kind(notice: delivery_pb2.Notice) -> str:
    return delivery_pb2.NoticeKind.Name(notice.kind).removeprefix("NOTICE_KIND_").lower()


class Hub:
    """The application service: every command enters here."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        clock: Clock,
        signer: Signer,
        notifier: Notifier,
        policy: Policy | None = None,
        *,
        clock_policy: ClockPolicySet | None = None,
        calendar: WorkingDays | None = None,
        replay_window: timedelta = REPLAY_WINDOW,
        max_clock_skew: timedelta = MAX_CLOCK_SKEW,
        list_key: ListKey | None = None,
        list_terms: Terms | None = None,
    ) -> None:
        self.uow = uow
        # The network's list key: indexes the blacklist and makes its tokens (None: the
        # list cannot be published here; docs/blacklist.md).
        self.list_key = list_key
        self._list_pruned_at: datetime | None = None
        self.list_terms = list_terms or Terms()
        self._list_listeners: list[Callable[[], None]] = []
        self.replay_window = replay_window
        self.max_clock_skew = max_clock_skew
        # Set by a server that authenticates its clients with certificates: every request
        # must then come with the institution code its client certificate names.
        self.require_peer = False
        self.clock = clock
        self.signer = signer
        self.notifier = notifier
        self.policy = policy or Policy()
        self.clock_policy = clock_policy or ClockPolicySet(())
        self.calendar: WorkingDays = calendar or WeekdaysOnly()
        self.sweeper = Sweeper(self)
        self.members = MemberCache()
        # Waits before each retry of a transaction the database dropped: about two seconds
        # in all, which rides out a PostgreSQL restart or failover without the caller seeing it.
        self.store_retry_delays: tuple[float, ...] = STORE_RETRY_DELAYS
        self.writes = GroupCommit(uow, retry_delays=STORE_RETRY_DELAYS)

    def public_notice(self, start: datetime) -> timedelta:
        """How long a distribution's public notice runs: the public_notice clock's window
        (policy.toml), so the clock and the distribution never disagree."""
        clock = self.clock_policy.clock("public_notice")
        if clock is None:
            return PUBLIC_NOTICE
        return clock.window.deadline(start, self.calendar, None) - start

    def sweep(self) -> int:
        """Fire every clock step that is due and end every listing whose term is over;
        returns how many of both. Once every PRUNE_LIST_EVERY of case time it also deletes
        the list changes no sync can replay any more."""
        # The listing handlers import this module.
        from hub.service.listing import expire_due, prune_changes

        done = self.sweeper.sweep() + expire_due(self)
        now = self.clock.now()
        if self.list_key is not None and (
            self._list_pruned_at is None or now - self._list_pruned_at >= PRUNE_LIST_EVERY
        ):
            self._list_pruned_at = now
            prune_changes(self)
        return done

    def keep_audit_log(self) -> int:
        """Place every committed audit entry in the log's Merkle tree and sign a checkpoint
        when one is due (ADR 15); returns how many entries were placed."""
        from hub.service import auditlog

        placed = auditlog.sequence(self.uow)
        auditlog.checkpoint(self.uow, self.signer, self.clock)
        return placed

    def on_list_change(self, listener: Callable[[], None]) -> None:
        """Call `listener` (from any thread) after each commit that changed the list."""
        self._list_listeners.append(listener)

    def list_changed(self) -> None:
        for listener in list(self._list_listeners):
            try:
                listener()
            except Exception:
                log.exception("a list listener failed; followers catch up on their tick")

    def notify(self, recipients: set[str], deliveries: Sequence[PendingDelivery] = ()) -> None:
        try:
            self.notifier.notify(recipients, deliveries)
        except Exception:
            # Committed is committed: the outbox holds the deliveries and the pumps' tick
            # finds them; nobody must see an error for it.
            log.exception("could not wake delivery streams for %s", sorted(recipients))

    def deliver(
        self, uow: UnitOfWork, recipient: str, notice: delivery_pb2.Notice, now: datetime
    ) -> PendingDelivery:
        """Queue a hub-signed notice in the outbox and the audit log, in `uow`'s transaction."""
        sealed = self.seal(recipient, notice, now)
        data = sealed.SerializeToString()
        kind = _notice_kind(notice)
        sequence = uow.outbox.add(recipient, kind, notice.case_id or None, data, now)
        uow.audit.append(
            AuditEntry(
                kind="sent",
                actor=HUB_CODE,
                message_id=sealed.message_id,
                detail=f"{kind} to {recipient}: {notice.summary}",
                payload=data,
                case_id=notice.case_id or None,
                order_id=notice.order.order_id or None,
            ),
            now,
        )
        return PendingDelivery(sequence, recipient, data, 0)

    # ---- signing ------------------------------------------------------------------------------

    def seal(
        self, recipient: str, body: Message, now: datetime, *, in_reply_to: str = ""
    ) -> envelope_pb2.Envelope:
        """Sign a message from the hub. An answer's id names the request it answers, so a
        captured answer cannot pass for the answer to another request."""
        return seal_message(
            self.signer,
            sender=HUB_CODE,
            recipient=recipient,
            message_id=(
                f"re-{recipient}-{in_reply_to}" if in_reply_to else f"hub-{uuid.uuid4().hex}"
            ),
            create_time=now,
            message=body,
        )

    # ---- the pipeline -------------------------------------------------------------------------

    def handle(
        self,
        command: Command[Any],
        envelope: envelope_pb2.Envelope,
        peer: str | None = None,
    ) -> envelope_pb2.Envelope:
        """Process one signed request; return the hub-signed answer or raise DomainError.

        `peer` is the institution code the transport authenticated (the client certificate's),
        or None on a development server without TLS."""
        raw = envelope.SerializeToString()
        if command.mutating:
            return self._write(command, envelope, raw, peer)
        waits = iter(self.store_retry_delays)
        while True:
            try:
                return self._read(command, envelope, raw, peer)
            except StoreUnavailable as err:
                wait = next(waits, None)
                if wait is None:
                    log.warning(
                        "database unavailable, %s refused for now: %s", command.name, err.detail
                    )
                    raise
                log.info("database unavailable; %s again in %.2fs", command.name, wait)
                time.sleep(wait)
            except DomainError as err:
                self._record_rejection(envelope, raw, err)
                raise

    def _members(self, batch: Batch) -> Members:
        """The registry as of the batch's transaction, read once for all its requests."""
        members = batch.shared.get("members")
        if members is None:
            members = batch.shared["members"] = self.members.current(batch.uow)
        assert isinstance(members, Members)
        return members

    def _write(
        self,
        command: Command[Any],
        envelope: envelope_pb2.Envelope,
        raw: bytes,
        peer: str | None,
    ) -> envelope_pb2.Envelope:
        """A mutating request: checked as far as possible before any transaction, then run
        in a savepoint of the group commit (hub/service/batching.py)."""
        try:
            self.check_envelope(envelope, peer)
        except DomainError as err:
            self._record_rejection(envelope, raw, err)
            raise
        # The signature is checked outside the transaction, against the registry as last
        # read; inside, a registry that moved meanwhile means checking again with the
        # current one. A failure here decides nothing: the current registry may know the
        # sender. The body is decoded here too, its refusal kept for its turn (after the
        # freshness check and the resend lookup, as without the early work).
        early = self.members.peek()
        early_sender: Institution | None = None
        body: Message | None = None
        undecodable: DomainError | None = None
        if early is not None:
            try:
                early_sender = self.identify(early, envelope)
            except DomainError:
                early_sender = None
            else:
                try:
                    body = self.decode(command, envelope)
                except DomainError as err:
                    undecodable = err

        def work(batch: Batch) -> tuple[envelope_pb2.Envelope, Context | None]:
            uow = batch.uow
            members = self._members(batch)
            if early_sender is not None and members is early:
                sender = early_sender
            else:
                sender = self.identify(members, envelope)
            # Read inside the transaction: on SQLite the write lock is ours, so recorded
            # times follow commit order.
            now = self.clock.now()
            self.check_fresh(envelope, now, sender)
            digest = digest_of(envelope)
            previous = uow.inbound.get(sender.code, envelope.message_id)
            if previous is not None:
                if previous.digest != digest:
                    raise AlreadyExists(
                        "MESSAGE_ID_REUSED",
                        f"message id {envelope.message_id!r} was already used by "
                        f"{sender.code} for a different message; a resend must carry the "
                        "same bytes, a new message needs a new id",
                    )
                return envelope_pb2.Envelope.FromString(previous.response), None
            if undecodable is not None:
                raise undecodable
            decoded = body if body is not None else self.decode(command, envelope)
            ctx = Context(self, uow, now, sender, envelope, raw, command.name, members=members)
            result = _run(command, ctx, decoded)
            for tracked in ctx.tracked.values():
                apply_clocks(ctx, tracked)
            answer = self.seal(sender.code, result, now, in_reply_to=envelope.message_id)
            answer_bytes = answer.SerializeToString()
            ctx.accept(command.name, _case_of(result))
            uow.audit.append(
                AuditEntry(
                    kind="sent",
                    actor=HUB_CODE,
                    message_id=answer.message_id,
                    detail=f"answer to {sender.code}/{envelope.message_id}",
                    payload=answer_bytes,
                    case_id=_case_of(result),
                ),
                now,
            )
            uow.inbound.add(
                sender.code,
                envelope.message_id,
                InboundRecord(digest, envelope.body_type, answer_bytes),
                now,
            )
            batch.changed = True
            return answer, ctx

        def refused(batch: Batch, err: Exception) -> None:
            if isinstance(err, DomainError) and not isinstance(err, StoreUnavailable):
                self._audit_rejection(batch.uow, envelope, raw, err)

        answer, ctx = self.writes.run(work, refused)
        if ctx is not None and ctx.notified:
            self.notify(ctx.notified, ctx.queued)
        if ctx is not None and ctx.list_changed:
            self.list_changed()
        return answer

    def admit(
        self, command: Command[Any], envelope: envelope_pb2.Envelope, peer: str | None
    ) -> tuple[Institution, Message]:
        """A read that answers with a stream (SyncList): the whole pipeline up to the
        handler, whose result is the admitted body; refusals are audited as for any call."""
        raw = envelope.SerializeToString()
        try:
            sender, result, _ = self._run_read(command, envelope, raw, peer)
        except DomainError as err:
            self._record_rejection(envelope, raw, err)
            raise
        return sender, result

    def _read(
        self,
        command: Command[Any],
        envelope: envelope_pb2.Envelope,
        raw: bytes,
        peer: str | None,
    ) -> envelope_pb2.Envelope:
        sender, result, now = self._run_read(command, envelope, raw, peer)
        return self.seal(sender.code, result, now, in_reply_to=envelope.message_id)

    def _run_read(
        self,
        command: Command[Any],
        envelope: envelope_pb2.Envelope,
        raw: bytes,
        peer: str | None,
    ) -> tuple[Institution, Message, datetime]:
        with self.uow(read_only=True) as uow:
            sender = self.authenticate(uow, envelope, peer)
            now = self.clock.now()
            self.check_fresh(envelope, now, sender)
            body = self.decode(command, envelope)
            ctx = Context(self, uow, now, sender, envelope, raw, command.name)
            return sender, _run(command, ctx, body), now

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
        wire.check_text(envelope)

    @staticmethod
    def identify(members: Members, envelope: envelope_pb2.Envelope) -> Institution:
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
        if envelope.recipient != HUB_CODE:
            raise InvalidArgument(
                "recipient", f"requests are addressed to {HUB_CODE}, not {envelope.recipient!r}"
            )
        return sender

    @staticmethod
    def decode(command: Command[B], envelope: envelope_pb2.Envelope) -> B:
        if envelope.body_type != command.body_type:
            raise InvalidArgument(
                "body_type",
                f"{command.name} takes a {command.body_type}, not {envelope.body_type!r}",
            )
        body = command.body()
        try:
            body.ParseFromString(envelope.body)
        except DecodeError as exc:
            raise InvalidArgument("body", f"is not a valid {command.body_type}: {exc}") from exc
        wire.check_text(body)
        return body

    def _record_rejection(
        self, envelope: envelope_pb2.Envelope, raw: bytes, err: DomainError
    ) -> None:
        if isinstance(err, StoreUnavailable):
            return  # not a refusal, and there is no database to write it to
        try:
            self.writes.run(partial(self._reject_in, envelope=envelope, raw=raw, err=err))
        except Exception:  # the rejection itself must still reach the caller
            log.exception("could not audit a rejected message")

    def _reject_in(
        self, batch: Batch, *, envelope: envelope_pb2.Envelope, raw: bytes, err: DomainError
    ) -> None:
        self._audit_rejection(batch.uow, envelope, raw, err)
        batch.changed = True

    def _audit_rejection(
        self, uow: UnitOfWork, envelope: envelope_pb2.Envelope, raw: bytes, err: DomainError
    ) -> None:
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

    # ---- the delivery stream -----------------------------------------------------------------

    def open_stream(
        self, envelope: envelope_pb2.Envelope, peer: str | None = None
    ) -> tuple[str, str]:
        """Authenticate a stream's first message; returns (institution code, connection name)."""
        try:
            with self.uow(read_only=True) as uow:
                sender = self.authenticate(uow, envelope, peer)
                self.check_fresh(envelope, self.clock.now(), sender)
                body = self.decode(SUBSCRIBE, envelope)
            authorize(SUBSCRIBE.name, sender.code, sender.kind)
        except DomainError as err:
            self._record_rejection(envelope, envelope.SerializeToString(), err)
            raise
        return sender.code, body.connection_name or "default"

    def pending(self, institution: str, limit: int = 500) -> Sequence[PendingDelivery]:
        with self.uow(read_only=True) as uow:
            return uow.outbox.pending(institution, limit)


def _run(command: Command[Any], ctx: Context, body: Message) -> Message:
    """The permission matrix's first word, then the handler. A case-scoped command is
    decided on the caller's relation to the case once the handler has loaded it; before
    that, only kinds that may never call it are refused."""
    if command.case_scoped:
        refuse_kind(command.name, ctx.sender.code, ctx.sender.kind)
    else:
        ctx.access = authorize(command.name, ctx.sender.code, ctx.sender.kind)
    return command.run(ctx, body)


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 60 == 0:
        return f"{seconds // 60} minute(s)"
    return f"{seconds} second(s)"


def _case_of(result: Message) -> str | None:
    if isinstance(
        result, case_pb2.Case | order_pb2.Order | returns_pb2.Distribution | appeal_pb2.Appeal
    ):
        return result.case_id or None
    if isinstance(result, blacklist_pb2.ListEntryRecord):
        return result.entry.source_case_id or None
    return None


# ---- the handlers ------------------------------------------------------------------------------


def new_case_id(now: datetime) -> str:
    return f"C{now:%Y%m%d}-{secrets.token_hex(4).upper()}"


def new_order_id(case: Case) -> str:
    return f"{case.case_id}-O{len(case.orders) + 1:03d}"


def _load_case(ctx: Context, case_id: str) -> Case:
    case = ctx.uow.cases.get(case_id, lock=True)
    if case is None:
        raise NotFound("CASE_NOT_FOUND", f"no case {case_id!r}")
    ctx.accept(ctx.command, case.case_id)
    ctx.track(case)
    return case


def create_report(ctx: Context, body: case_pb2.Report) -> Message:
    report = wire.report_from_proto(body)
    case_id = new_case_id(ctx.now)
    ctx.accept(ctx.command, case_id)
    case = Case.open(
        case_id,
        ctx.sender.code,
        report,
        now=ctx.now,
        message_id=ctx.message_id,
        institutions=ctx.kinds,
    )
    case.report_envelope = ctx.envelope_bytes
    ctx.uow.cases.add(case)
    ctx.track(case, new=True)
    # A report that pays a known mule says so in its own notice: one notice per report, even
    # when a mule ring's victims report by the hundred.
    links, linked = _link_cases(ctx, case, accounts_of(case), announce=False)
    ctx.record_events(case, 0)
    ctx.deliver_to(
        ctx.centres(),
        delivery_pb2.Notice(
            kind=delivery_pb2.NOTICE_KIND_REPORT_RECEIVED,
            case_id=case.case_id,
            origin=ctx.envelope,
            summary=f"{ctx.sender.code} reported case {case.case_id}: {case.events[0].summary}"
            + (f"; {linked}" if linked else ""),
            linked_cases=links,
        ),
    )
    return wire.case_to_proto(case)


def verify_report(ctx: Context, body: case_pb2.Verification) -> Message:
    case_id, outcome, reason = wire.verification_from_proto(body)
    case = _load_case(ctx, case_id)
    ctx.authorize(case)
    since = len(case.events)
    case.verify(ctx.sender.code, outcome, reason, now=ctx.now, message_id=ctx.message_id)
    ctx.deliver_to(
        ctx.centres(),
        delivery_pb2.Notice(
            kind=delivery_pb2.NOTICE_KIND_REPORT_VERIFIED,
            case_id=case.case_id,
            origin=ctx.envelope,
            summary=case.events[-1].summary,
        ),
    )
    if case.state is CaseState.VERIFIED:
        _auto_stop(ctx, case)
    ctx.record_events(case, since)
    return wire.case_to_proto(case)


def _auto_stop(ctx: Context, case: Case) -> None:
    rules = ctx.uow.rules.enabled()
    if not rules:
        return
    rule = rules[0]
    stops, skipped = rule.stops_for(case)
    kinds = ctx.kinds
    authorization = envelope_pb2.Envelope()
    authorization.ParseFromString(rule.envelope)
    for command in stops:
        try:
            order = case.issue(
                new_order_id(case),
                command,
                issued_by=rule.centre_code,
                now=ctx.now,
                message_id=ctx.message_id,
                institutions=kinds,
                policy=ctx.hub.policy,
                auto_stop_rule_id=rule.rule_id,
            )
        except DomainError as err:
            # The report was verified; a stop the rule cannot issue waits for the centre.
            case.record(ctx.now, "auto_stop.skipped", HUB_CODE, err.message)
            continue
        order.authorization_envelope = rule.envelope
        _deliver_order(ctx, order, origin=ctx.envelope, authorization=authorization)
    for why in skipped:
        case.record(ctx.now, "auto_stop.skipped", HUB_CODE, why)


def _deliver_order(
    ctx: Context,
    order: Order,
    *,
    origin: envelope_pb2.Envelope,
    authorization: envelope_pb2.Envelope | None = None,
) -> None:
    notice = delivery_pb2.Notice(
        kind=delivery_pb2.NOTICE_KIND_ORDER,
        case_id=order.case_id,
        order=wire.order_to_proto(order),
        origin=origin,
        summary=f"{order.kind.value} order {order.order_id}: {describe(order)}",
    )
    if authorization is not None:
        notice.authorization.CopyFrom(authorization)
    ctx.deliver(order.addressed_to, notice)


def issue_order(ctx: Context, body: order_pb2.OrderInstruction) -> Message:
    case_id, command = wire.order_command_from_proto(body)
    case = _load_case(ctx, case_id)
    if isinstance(command, ReturnCommand):
        _refuse_shared_return(ctx.uow, case, command)
    return wire.order_to_proto(issue_in(ctx, case, command, body.note))


def issue_in(ctx: Context, case: Case, command: OrderCommand, note: str) -> Order:
    """Issue an order in the centre's name of the request (its signed envelope is the origin)
    and deliver it, after the withdrawal of any pending order it cancels."""
    since = len(case.events)
    before = {o.order_id: o.state for o in case.orders}
    order = case.issue(
        new_order_id(case),
        command,
        issued_by=ctx.sender.code,
        now=ctx.now,
        message_id=ctx.message_id,
        institutions=ctx.kinds,
        policy=ctx.hub.policy,
        note=note,
    )
    order.origin_envelope = ctx.envelope_bytes
    for other in case.orders:
        if before.get(other.order_id) is OrderState.PENDING and other.state is OrderState.CANCELLED:
            # The addressee may be about to execute it: the withdrawal goes out first, ahead
            # of the release that caused it.
            _deliver_order(ctx, other, origin=ctx.envelope)
    _deliver_order(ctx, order, origin=ctx.envelope)
    ctx.record_events(case, since)
    return order


def answer_order(ctx: Context, body: order_pb2.ExecutionResult) -> Message:
    order_id, execution = wire.execution_from_proto(body)
    case_id = ctx.uow.cases.case_id_of_order(order_id)
    if case_id is None:
        raise NotFound("ORDER_NOT_FOUND", f"no order {order_id!r}")
    case = _load_case(ctx, case_id)
    ctx.authorize(case, order_id)
    since = len(case.events)
    order = case.answer(
        order_id,
        ctx.sender.code,
        execution,
        now=ctx.now,
        message_id=ctx.message_id,
        policy=ctx.hub.policy,
    )
    order.answer_envelope = ctx.envelope_bytes
    if order.is_hold and order.onward:
        _follow_onward(ctx, case, order)
    ctx.deliver(
        order.issued_by,
        delivery_pb2.Notice(
            kind=delivery_pb2.NOTICE_KIND_ORDER_ANSWERED,
            case_id=case.case_id,
            order=wire.order_to_proto(order),
            origin=ctx.envelope,
            summary=case.events[-1].summary,
        ),
    )
    if case.close_if_settled(ctx.now):
        ctx.deliver_to(
            sorted({case.reporting_institution, *ctx.centres()}),
            delivery_pb2.Notice(
                kind=delivery_pb2.NOTICE_KIND_CASE_CLOSED,
                case_id=case.case_id,
                summary=case.events[-1].summary,
            ),
        )
    ctx.record_events(case, since)
    return wire.order_to_proto(order)


def set_auto_stop_rule(ctx: Context, body: order_pb2.AutoStopRule) -> Message:
    rule = AutoStopRule.validated(
        ctx.sender.code,
        body.rule_id.strip(),
        body.enabled,
        body.max_amount_fen,
        now=ctx.now,
        message_id=ctx.message_id,
        envelope=ctx.envelope_bytes,
        follow_onward=body.follow_onward_transfers,
        max_layer=body.max_layer,
    )
    ctx.uow.rules.put(rule)
    ctx.uow.audit.append(
        AuditEntry(
            kind="transition",
            actor=ctx.sender.code,
            message_id=ctx.message_id,
            detail=f"auto-stop rule {rule.rule_id} "
            + (f"enabled up to {rule.max_amount_fen} fen" if rule.enabled else "disabled")
            + (
                f", following onward transfers to layer {rule.follow_rule().max_layer}"
                if rule.enabled and rule.follow_onward
                else ""
            ),
        ),
        ctx.now,
    )
    return wire.rule_to_proto(rule)


def get_case(ctx: Context, body: case_pb2.GetCaseBody) -> Message:
    case = ctx.uow.cases.get(body.case_id)
    if case is None:
        raise NotFound("CASE_NOT_FOUND", f"no case {body.case_id!r}")
    view = wire.case_to_proto(case)
    for other_id, institution, account in ctx.uow.cases.involving(
        accounts_of(case), case.case_id, MAX_LINKED
    ):
        view.linked_cases.add(
            case_id=other_id,
            account=account_pb2.AccountRef(institution_code=institution, account_number=account),
        )
    if ctx.authorize(case) is Access.OWN:
        # An addressee (often the mule's bank) needs the orders, not who the victim is, nor
        # which other cases the centre is chasing through the same accounts.
        view.report.ClearField("victim")
        view.ClearField("linked_cases")
    return view


def _page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size", "must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _decode_token(token: str) -> Any:
    if not token:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError) as exc:
        raise InvalidArgument("page_token", "is not a token this hub issued") from exc


def _encode_token(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


def list_cases(ctx: Context, body: case_pb2.ListCasesBody) -> Message:
    size = _page_size(body.page_size)
    token = _decode_token(body.page_token)
    after = None
    if token is not None:
        try:
            after = (datetime.fromisoformat(token[0]), str(token[1]))
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            raise InvalidArgument("page_token", "is not a token this hub issued") from exc
    state = wire.CASE_STATES_BY_NUMBER.get(body.state)
    if body.state and state is None:
        raise InvalidArgument("state", f"unknown case state {body.state}")
    reporter = ctx.sender.code if ctx.access is Access.OWN else None
    found = ctx.uow.cases.list(state, size + 1, after, reporter)
    page = list(found[:size])
    result = case_pb2.CaseList(cases=[wire.case_to_proto(c, with_events=False) for c in page])
    if len(found) > size:
        last = page[-1]
        result.next_page_token = _encode_token([last.created_at.isoformat(), last.case_id])
    return result


def get_institution(ctx: Context, body: institution_pb2.GetInstitutionBody) -> Message:
    inst = ctx.uow.institutions.get(body.code)
    if inst is None:
        raise NotFound("INSTITUTION_NOT_FOUND", f"no institution {body.code!r}")
    return wire.institution_to_proto(inst)


def list_institutions(ctx: Context, body: institution_pb2.ListInstitutionsBody) -> Message:
    size = _page_size(body.page_size)
    after = _decode_token(body.page_token)
    if after is not None and not isinstance(after, str):
        raise InvalidArgument("page_token", "is not a token this hub issued")
    found = ctx.uow.institutions.list(size + 1, after)
    page = list(found[:size])
    result = institution_pb2.InstitutionList(
        institutions=[wire.institution_to_proto(i) for i in page]
    )
    if len(found) > size:
        result.next_page_token = _encode_token(page[-1].code)
    return result


# An offset past this is no token the hub issued (and would overflow the database's LIMIT).
MAX_CLOCK_OFFSET = 10_000_000


def list_clocks(ctx: Context, body: sla_pb2.ListClocksBody) -> Message:
    """The SLA log, read-only: the centre and the regulator see every clock, a bank or payment
    institution the clocks it is responsible for. Running clocks first, by time left."""
    size = _page_size(body.page_size)
    token = _decode_token(body.page_token)
    offset = 0
    if token is not None:
        value = token.get("offset") if isinstance(token, dict) else None
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or not 0 <= value <= MAX_CLOCK_OFFSET
        ):
            raise InvalidArgument("page_token", "is not a token this hub issued")
        offset = value
    institution = body.institution.strip() or None
    if ctx.access is Access.OWN:
        if institution is not None and institution != ctx.sender.code:
            raise PermissionDenied(
                "NOT_RESPONSIBLE",
                f"{ctx.sender.code} may list only the clocks it is responsible for, not "
                f"{institution}'s; the anti-fraud centre and the regulator see every clock",
            )
        institution = ctx.sender.code
    found = ctx.uow.clocks.query(
        institution=institution,
        case_id=body.case_id.strip() or None,
        open_only=body.open_only,
        breached_only=body.breached_only,
        limit=size + 1,
        offset=offset,
    )
    page = list(found[:size])
    entries = ctx.uow.clocks.entries([c.clock_id for c in page])
    result = sla_pb2.ClockList(
        clocks=[wire.clock_to_proto(c, entries.get(c.clock_id, [])) for c in page]
    )
    if len(found) > size:
        result.next_page_token = _encode_token({"offset": offset + size})
    return result


# ---- the money trail ---------------------------------------------------------------------------


def _link_cases(
    ctx: Context, case: Case, accounts: set[tuple[str, str]], *, announce: bool
) -> tuple[list[case_pb2.CaseLink], str]:
    """One mule, many victims: when `case`'s money reaches an account another open case's
    money reached, say so on the case's timeline and, with `announce`, in a notice to the
    centres. Returns the links found (ten at most) and a sentence for people. The link itself
    is not stored: it is the shared account, found again whenever a case is read."""
    if not accounts:
        return [], ""
    found = ctx.uow.cases.involving(accounts, case.case_id, LINKS_NAMED + 1)
    shared: dict[tuple[str, str], list[str]] = {}
    for other_id, institution, account in found[:LINKS_NAMED]:
        shared.setdefault((institution, account), []).append(other_id)
    links = [
        case_pb2.CaseLink(
            case_id=other_id,
            account=account_pb2.AccountRef(institution_code=institution, account_number=account),
        )
        for other_id, institution, account in found[:LINKS_NAMED]
    ]
    sentences = []
    for (institution, account), others in shared.items():
        more = " and more" if len(found) > LINKS_NAMED else ""
        sentences.append(
            f"money of case(s) {', '.join(others)}{more} reached {mask(account)} at "
            f"{institution} too"
        )
    if not sentences:
        return [], ""
    summary = "linked: " + "; ".join(sentences) + "; money held there is shared among the victims"
    case.record(ctx.now, "case.linked", HUB_CODE, summary)
    if announce:
        ctx.deliver_to(
            ctx.centres(),
            delivery_pb2.Notice(
                kind=delivery_pb2.NOTICE_KIND_CASES_LINKED,
                case_id=case.case_id,
                summary=f"case {case.case_id} {summary}",
                linked_cases=links,
            ),
        )
    return links, summary


def _linked(uow: UnitOfWork, case: Case, accounts: set[tuple[str, str]]) -> list[str]:
    return sorted({row[0] for row in uow.cases.involving(accounts, case.case_id, MAX_LINKED)})


def _follow_onward(ctx: Context, case: Case, answered: Order) -> None:
    """An answer reported onward transfers: stop each receiving account the centre's standing
    rule reaches, in its name, and put every other one before the centre."""
    rules = ctx.uow.rules.enabled()
    rule = rules[0] if rules else None
    trail = build_trail(case)
    planned, escalated = follow(trail, answered, ctx.kinds, rule.follow_rule() if rule else None)
    centre = answered.issued_by
    if rule is not None and planned:
        authorization = envelope_pb2.Envelope()
        authorization.ParseFromString(rule.envelope)
        for plan in planned:
            try:
                order = case.issue(
                    new_order_id(case),
                    StopCommand(
                        plan.account, plan.amount_fen, plan.transactions, answered.order_id
                    ),
                    issued_by=rule.centre_code,
                    now=ctx.now,
                    message_id=ctx.message_id,
                    institutions=ctx.kinds,
                    policy=ctx.hub.policy,
                    auto_stop_rule_id=rule.rule_id,
                )
            except DomainError as err:
                _escalate(
                    ctx,
                    case,
                    centre,
                    f"{mask(plan.account.account_number)} at "
                    f"{plan.account.institution_code}: {err.message}",
                )
                continue
            order.authorization_envelope = rule.envelope
            _deliver_order(ctx, order, origin=ctx.envelope, authorization=authorization)
    for item in escalated:
        where = f"{mask(item.account.account_number)} at {item.account.institution_code}"
        _escalate(
            ctx,
            case,
            centre,
            f"{yuan(item.carried_fen)} of the victim's money can have moved on to {where} "
            f"(layer {item.layer}): {item.why}",
        )
    _link_cases(
        ctx, case, {(t.to_institution, t.to_account) for t in answered.onward}, announce=True
    )


def _escalate(ctx: Context, case: Case, centre: str, summary: str) -> None:
    case.record(ctx.now, "trail.escalated", HUB_CODE, summary)
    ctx.deliver(
        centre,
        delivery_pb2.Notice(
            kind=delivery_pb2.NOTICE_KIND_TRAIL_ESCALATION,
            case_id=case.case_id,
            origin=ctx.envelope,
            summary=f"case {case.case_id}: {summary}",
        ),
    )


def _refuse_shared_return(uow: UnitOfWork, case: Case, command: ReturnCommand) -> None:
    """Money in an account that several victims' money reached is not one victim's to take."""
    freeze = next((o for o in case.orders if o.order_id == command.freeze_order_id), None)
    if freeze is None:
        return  # the domain names the missing order
    shared = _linked(uow, case, {(freeze.account_institution, freeze.account_number)})
    if shared:
        raise FailedPrecondition(
            "SHARED_ACCOUNT",
            f"money of case(s) {', '.join(shared)} reached {mask(freeze.account_number)} at "
            f"{freeze.account_institution} too: return it through a distribution "
            "(StartDistribution), which gives traced money to its victim and shares the rest "
            "pro rata after a public notice",
        )


def get_case_trail(ctx: Context, body: trail_pb2.GetCaseTrailBody) -> Message:
    case = ctx.uow.cases.get(body.case_id.strip())
    if case is None:
        raise NotFound("CASE_NOT_FOUND", f"no case {body.case_id!r}")
    ctx.authorize(case)
    return trail_view(ctx.uow, case, ctx.now, ctx.kinds)


# ---- distributions -----------------------------------------------------------------------------

MAX_GROUNDS = 4000


def new_distribution_id(now: datetime) -> str:
    return f"D{now:%Y%m%d}-{secrets.token_hex(4).upper()}"


def _holding_freezes(cases: Sequence[Case], account: tuple[str, str]) -> list[tuple[Case, Order]]:
    return [
        (c, o)
        for c in cases
        for o in c.orders
        if o.kind is OrderKind.FREEZE
        and o.state is OrderState.HOLDING
        and (o.account_institution, o.account_number) == account
    ]


def _pool(cases: Sequence[Case], account: tuple[str, str]) -> int:
    return sum(c.unclaimed_fen(f) for c, f in _holding_freezes(cases, account))


def _distribution_cases(ctx: Context, d: Distribution) -> list[Case]:
    """The cases of a distribution's claims, locked, lead case first."""
    found: list[Case] = []
    for case_id in dict.fromkeys([d.case_id, *(c.case_id for c in d.claims)]):
        case = _load_case(ctx, case_id)
        found.append(case)
    return found


def _bounded(name: str, text: str) -> None:
    if len(text) > MAX_GROUNDS:
        raise InvalidArgument(name, f"at most {MAX_GROUNDS} characters; keep the rest on file")


def start_distribution(ctx: Context, body: returns_pb2.StartDistributionBody) -> Message:
    _bounded("note", body.note)
    for i, traced in enumerate(body.traced):
        _bounded(f"traced[{i}].evidence", traced.evidence)
    account = (body.account.institution_code.strip(), body.account.account_number.strip())
    if not account[0] or not account[1]:
        raise InvalidArgument("account", "name the institution and account holding the money")
    lead = _load_case(ctx, body.case_id.strip())
    if lead.state not in OPEN_STATES:
        raise FailedPrecondition(
            "CASE_ENDED", f"case {lead.case_id} is {lead.state.value}; nothing to distribute"
        )
    where = f"{mask(account[1])} at {account[0]}"
    trails = {lead.case_id: build_trail(lead)}
    node = trails[lead.case_id].nodes.get(account)
    if node is None or node.received_fen == 0 or node.status is NodeStatus.VICTIM:
        raise FailedPrecondition(
            "NOT_ON_TRAIL",
            f"none of case {lead.case_id}'s money can have reached {where}: it is not on the "
            "case's money trail",
        )
    if ctx.uow.distributions.open_for_account(*account):
        raise FailedPrecondition(
            "DISTRIBUTION_OPEN",
            f"a distribution of the money in {where} is already under public notice; decide "
            "or withdraw it first",
        )
    others = _linked(ctx.uow, lead, {account})
    cases = [lead]
    for case_id in others:
        other = ctx.uow.cases.get(case_id, lock=True)
        if other is not None and other.state in OPEN_STATES:
            ctx.track(other)
            cases.append(other)
    claims = []
    for case in cases:
        # A victim's claim is what of its money can still be in the account: what moved
        # on is chased (and returned) where it went.
        kept = (trails.get(case.case_id) or build_trail(case)).kept(account)
        if kept > 0:
            victim = case.victim_account
            claims.append(
                Claim(
                    case.case_id,
                    victim.institution_code,
                    victim.account_number,
                    victim.holder_name,
                    case.loss_fen,
                    kept,
                )
            )
    by_case = {c.case_id: c for c in claims}
    for i, traced in enumerate(body.traced):
        claim = by_case.get(traced.case_id)
        if claim is None:
            raise InvalidArgument(
                f"traced[{i}].case_id",
                f"{traced.case_id!r} is not a case whose money reached {where}; those are "
                + ", ".join(sorted(by_case)),
            )
        validate_amount(f"traced[{i}].amount_fen", traced.amount_fen)
        if not traced.evidence.strip():
            raise InvalidArgument(f"traced[{i}].evidence", "say what traces the money")
        claim.traced_fen += traced.amount_fen
        claim.evidence = "; ".join(x for x in (claim.evidence, traced.evidence.strip()) if x)
    notice = ctx.hub.public_notice(ctx.now)
    d = Distribution.start(
        new_distribution_id(ctx.now),
        account,
        lead.case_id,
        claims,
        _pool(cases, account),
        started_by=ctx.sender.code,
        now=ctx.now,
        message_id=ctx.message_id,
        note=body.note.strip(),
        notice=notice,
    )
    ctx.uow.distributions.add(d)
    if d.method is DistributionMethod.TRACED:
        # Every fen is traceable to its victim: no notice, the returns go out now.
        d.notice_ends_at = None
        _pay(ctx, d, cases, account)
        d.decide(ctx.sender.code, ctx.now, "traceable to its victims: returned at once")
        _record_on(ctx, cases, "distribution.decided", f"{d.summary()}; returned at once")
    else:
        assert d.notice_ends_at is not None
        _record_on(
            ctx,
            cases,
            "distribution.noticed",
            f"{d.summary()}; public notice until {d.notice_ends_at.isoformat()}",
        )
    _tell_parties(ctx, d, cases)
    return wire.distribution_to_proto(d)


def _record_on(ctx: Context, cases: Sequence[Case], kind: str, summary: str) -> None:
    """The lead case carries the event that drives the notice clock; the others note it."""
    for i, case in enumerate(cases):
        since = len(case.events)
        case.record(
            ctx.now,
            kind if i == 0 else "distribution.included",
            ctx.sender.code,
            summary,
            message_id=ctx.message_id,
        )
        ctx.record_events(case, since)


def _tell_parties(ctx: Context, d: Distribution, cases: Sequence[Case]) -> None:
    recipients = {*ctx.centres(), d.account_institution}
    recipients.update(c.reporting_institution for c in cases)
    view = wire.distribution_to_proto(d)
    ctx.deliver_to(
        sorted(recipients),
        delivery_pb2.Notice(
            kind=delivery_pb2.NOTICE_KIND_DISTRIBUTION,
            case_id=d.case_id,
            origin=ctx.envelope,
            summary=f"{d.state.value}: {d.summary()}",
            distribution=view,
        ),
    )


def _pay(ctx: Context, d: Distribution, cases: Sequence[Case], account: tuple[str, str]) -> None:
    """Issue the return orders that pay every share, from the freezes on the account; a
    victim's own case's freezes pay it first, so fewer returns cross between cases."""
    freezes = _holding_freezes(cases, account)
    available = {f.order_id: c.unclaimed_fen(f) for c, f in freezes}
    for claim in d.claims:
        need = claim.share_fen
        paid: list[str] = []
        for case, freeze in sorted(freezes, key=lambda cf: cf[0].case_id != claim.case_id):
            take = min(need, available[freeze.order_id])
            if take <= 0:
                continue
            since = len(case.events)
            order = case.issue(
                new_order_id(case),
                ReturnCommand(
                    freeze.order_id, claim.beneficiary, take, d.distribution_id, claim.case_id
                ),
                issued_by=ctx.sender.code,
                now=ctx.now,
                message_id=ctx.message_id,
                institutions=ctx.kinds,
                policy=ctx.hub.policy,
                note=f"distribution {d.distribution_id}: share of case {claim.case_id}",
            )
            order.origin_envelope = ctx.envelope_bytes
            ctx.record_events(case, since)
            _deliver_order(ctx, order, origin=ctx.envelope)
            paid.append(order.order_id)
            available[freeze.order_id] -= take
            need -= take
            if need == 0:
                break
        claim.return_orders = " ".join(paid)


def _distribution(ctx: Context, distribution_id: str) -> Distribution:
    d = ctx.uow.distributions.get(distribution_id.strip())
    if d is None:
        raise NotFound("DISTRIBUTION_NOT_FOUND", f"no distribution {distribution_id!r}")
    return d


def _relocked(ctx: Context, d: Distribution) -> Distribution:
    """The distribution read again, locked, once its cases are: what another hub decided or
    recorded meanwhile shows, and two decisions of one distribution cannot both pass."""
    return ctx.uow.distributions.get(d.distribution_id, lock=True) or d


def object_to_distribution(ctx: Context, body: returns_pb2.ObjectionBody) -> Message:
    _bounded("grounds", body.grounds)
    d = _distribution(ctx, body.distribution_id)
    lead = _load_case(ctx, d.case_id)
    d = _relocked(ctx, d)
    d.object(ctx.sender.code, body.grounds, ctx.now, ctx.message_id)
    since = len(lead.events)
    lead.record(
        ctx.now,
        "distribution.objection",
        ctx.sender.code,
        f"objection to {d.distribution_id} by {ctx.sender.code}: {body.grounds.strip()}",
        message_id=ctx.message_id,
    )
    ctx.record_events(lead, since)
    ctx.deliver_to(
        ctx.centres(),
        delivery_pb2.Notice(
            kind=delivery_pb2.NOTICE_KIND_DISTRIBUTION,
            case_id=d.case_id,
            origin=ctx.envelope,
            summary=f"objection to {d.distribution_id} by {ctx.sender.code}",
            distribution=wire.distribution_to_proto(d),
        ),
    )
    return wire.distribution_to_proto(d)


def decide_distribution(ctx: Context, body: returns_pb2.DistributionDecisionBody) -> Message:
    _bounded("reason", body.reason)
    d = _distribution(ctx, body.distribution_id)
    account = (d.account_institution, d.account_number)
    cases = _distribution_cases(ctx, d)
    d = _relocked(ctx, d)
    if body.decision == returns_pb2.DISTRIBUTION_DECISION_WITHDRAW:
        d.withdraw(ctx.sender.code, ctx.now, body.reason)
        _record_on(ctx, cases, "distribution.withdrawn", f"{d.distribution_id} withdrawn")
    elif body.decision == returns_pb2.DISTRIBUTION_DECISION_CONFIRM:
        d.check_decidable(ctx.now, body.reason)
        pool = _pool(cases, account)
        if pool == 0:
            raise FailedPrecondition(
                "NOTHING_FROZEN",
                f"no freeze holds money in {d.where} any more; withdraw the distribution",
            )
        # Shares follow what is frozen now: a freeze may have lapsed or been released since.
        d.share(pool)
        _pay(ctx, d, cases, account)
        d.decide(ctx.sender.code, ctx.now, body.reason)
        _record_on(ctx, cases, "distribution.decided", f"decided: {d.summary()}")
    else:
        raise InvalidArgument("decision", "CONFIRM or WITHDRAW")
    _tell_parties(ctx, d, cases)
    return wire.distribution_to_proto(d)


def get_distribution(ctx: Context, body: returns_pb2.GetDistributionBody) -> Message:
    d = _distribution(ctx, body.distribution_id)
    if ctx.access is Access.OWN:
        parties = {d.account_institution}
        for claim in d.claims:
            case = ctx.uow.cases.get(claim.case_id)
            if case is not None:
                parties.add(case.reporting_institution)
        if ctx.sender.code not in parties:
            raise PermissionDenied(
                "NOT_PARTY_TO_DISTRIBUTION",
                f"{ctx.sender.code} is neither a victim's institution nor the holder in "
                f"{d.distribution_id}; the anti-fraud centre, the regulator and auditors see "
                "every distribution",
            )
    return wire.distribution_to_proto(d)


CREATE_REPORT = Command("CreateReport", case_pb2.Report, create_report)
VERIFY_REPORT = Command("VerifyReport", case_pb2.Verification, verify_report, case_scoped=True)
GET_CASE = Command("GetCase", case_pb2.GetCaseBody, get_case, mutating=False, case_scoped=True)
LIST_CASES = Command("ListCases", case_pb2.ListCasesBody, list_cases, mutating=False)
ISSUE_ORDER = Command("IssueOrder", order_pb2.OrderInstruction, issue_order)
ANSWER_ORDER = Command("AnswerOrder", order_pb2.ExecutionResult, answer_order, case_scoped=True)
SET_AUTO_STOP_RULE = Command("SetAutoStopRule", order_pb2.AutoStopRule, set_auto_stop_rule)
GET_INSTITUTION = Command(
    "GetInstitution", institution_pb2.GetInstitutionBody, get_institution, mutating=False
)
LIST_INSTITUTIONS = Command(
    "ListInstitutions", institution_pb2.ListInstitutionsBody, list_institutions, mutating=False
)
LIST_CLOCKS = Command("ListClocks", sla_pb2.ListClocksBody, list_clocks, mutating=False)
GET_CASE_TRAIL = Command(
    "GetCaseTrail", trail_pb2.GetCaseTrailBody, get_case_trail, mutating=False, case_scoped=True
)
START_DISTRIBUTION = Command(
    "StartDistribution", returns_pb2.StartDistributionBody, start_distribution
)
OBJECT_TO_DISTRIBUTION = Command(
    "ObjectToDistribution", returns_pb2.ObjectionBody, object_to_distribution
)
DECIDE_DISTRIBUTION = Command(
    "DecideDistribution", returns_pb2.DistributionDecisionBody, decide_distribution
)
GET_DISTRIBUTION = Command(
    "GetDistribution", returns_pb2.GetDistributionBody, get_distribution, mutating=False
)


def _never(ctx: Context, body: Message) -> Message:
    raise AssertionError("stream messages are handled by the stream")


SUBSCRIBE = Command("StreamDeliveries", delivery_pb2.SubscribeBody, _never, mutating=False)
ACK = Command("StreamDeliveries", delivery_pb2.AckBody, _never)
