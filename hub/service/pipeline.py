"""The one pipeline every signed request goes through, and the Hub that runs it.

Check the envelope, authenticate the sender's key (hub/service/gate.py), answer a resend with
the original answer, decode the body, check the sender may do this (the permission matrix),
run the command's handler (hub/service/commands/), then write the state, the audit entries,
the hub-signed answer and the deliveries it causes in ONE transaction, a savepoint of the
group commit (hub/service/batching.py). A refused message changes nothing and is kept in the
audit log.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from hub.crypto.envelope import create_time_of, digest_of, seal_message
from hub.crypto.listkey import ListKey
from hub.domain.blacklist import Terms
from hub.domain.cases import Case, Policy, people_phrase
from hub.domain.clocks import Policy as ClockPolicySet
from hub.domain.errors import AlreadyExists, DomainError
from hub.domain.institutions import HUB_CODE, Institution, InstitutionKind
from hub.domain.returns import PUBLIC_NOTICE
from hub.domain.workdays import WeekdaysOnly, WorkingDays
from hub.service import wire
from hub.service.batching import Batch, GroupCommit
from hub.service.clocks import Tracked, apply_clocks, audit_transitions
from hub.service.gate import MAX_CLOCK_SKEW, REPLAY_WINDOW, Gate, MemberCache, Members
from hub.service.latestcheckpoint import LatestCheckpoint
from hub.service.permissions import Access, authorize, refuse_kind, relation_of
from hub.service.ports import (
    AuditEntry,
    Clock,
    InboundRecord,
    LiveStreams,
    NewDelivery,
    Notifier,
    PendingDelivery,
    Signer,
    StoreUnavailable,
    UnitOfWork,
    UnitOfWorkFactory,
)
from hub.service.sweep import Jobs, Sweeper
from stophub.v1 import (
    delivery_pb2,
    envelope_pb2,
)

log = logging.getLogger(__name__)

B = TypeVar("B", bound=Message)

CENTRE = InstitutionKind.ANTI_FRAUD_CENTRE
# Waits before each retry of a transaction the database dropped: about two seconds in all,
# which rides out a PostgreSQL restart or failover without the caller seeing it.
STORE_RETRY_DELAYS = (0.05, 0.2, 0.5, 1.0)


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
                detail=f"{command} accepted"
                + people_phrase(self.envelope.operator, self.envelope.approver),
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
        self.deliver_to([recipient], notice)

    def deliver_to(self, recipients: Iterable[str], notice: delivery_pb2.Notice) -> None:
        """The same notice to each recipient, each signed for its recipient."""
        to = list(recipients)
        self.queued += self.hub.deliver(self.uow, to, notice, self.now, self.members)
        self.notified.update(to)

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
        self.sign_events(case, since)
        audit_transitions(self.uow, case, since, self.now)

    def sign_events(self, case: Case, since: int) -> None:
        """The people of the request's envelope on the steps its sender took (events past
        `since` whose actor is the sender): the hub's own steps name nobody."""
        if not self.envelope.operator:
            return
        for event in case.events[since:]:
            if event.actor == self.sender.code and not event.operator:
                event.operator = self.envelope.operator
                event.approver = self.envelope.approver

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

    def decode(self, envelope: envelope_pb2.Envelope) -> B:
        return Gate.decode(envelope, self.body, self.name)


def _notice_kind(notice: delivery_pb2.Notice) -> str:
    return delivery_pb2.NoticeKind.Name(notice.kind).removeprefix("NOTICE_KIND_").lower()


def _audit_sent(
    uow: UnitOfWork,
    sealed: envelope_pb2.Envelope,
    data: bytes,
    detail: str,
    now: datetime,
    *,
    case_id: str | None,
    order_id: str | None = None,
) -> None:
    """Every message the hub signs and sends is kept in the audit log as it was sent."""
    uow.audit.append(
        AuditEntry(
            kind="sent",
            actor=HUB_CODE,
            message_id=sealed.message_id,
            detail=detail,
            payload=data,
            case_id=case_id,
            order_id=order_id,
        ),
        now,
    )


class Hub:
    """The application service: every command enters here, and every scheduled job starts
    here (hub/service/sweep.py)."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        clock: Clock,
        signer: Signer,
        notifier: Notifier | None = None,
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
        self.clock = clock
        self.signer = signer
        self.policy = policy or Policy()
        self.clock_policy = clock_policy or ClockPolicySet(())
        self.calendar: WorkingDays = calendar or WeekdaysOnly()
        # The network's list key: indexes the blacklist and makes its tokens (None: the
        # list cannot be published here; docs/blacklist.md).
        self.list_key = list_key
        self.list_terms = list_terms or Terms()
        # Told of every commit that queued deliveries (the delivery router subscribes).
        self._notifiers: list[Notifier] = [notifier] if notifier is not None else []
        # The streams open here (the delivery router): see _at_once.
        self.live_streams: LiveStreams | None = None
        self._list_listeners: list[Callable[[], None]] = []
        self.store_retry_delays: tuple[float, ...] = STORE_RETRY_DELAYS
        self.writes = GroupCommit(uow, retry_delays=STORE_RETRY_DELAYS)
        self.gate = Gate(
            self.writes, clock, replay_window=replay_window, max_clock_skew=max_clock_skew
        )
        # The newest signed log checkpoint, carried on every answer and stream (witness.md).
        self.latest_checkpoint = LatestCheckpoint(uow)
        self.jobs = Jobs(self)

    # ---- what the parts hold ------------------------------------------------------------------

    @property
    def members(self) -> MemberCache:
        return self.gate.members

    @property
    def require_peer(self) -> bool:
        return self.gate.require_peer

    @require_peer.setter
    def require_peer(self, value: bool) -> None:
        self.gate.require_peer = value

    @property
    def sweeper(self) -> Sweeper:
        """The clock sweep (its batch size and lateness threshold are tunable)."""
        return self.jobs.clocks

    @sweeper.setter
    def sweeper(self, sweeper: Sweeper) -> None:
        self.jobs.clocks = sweeper

    def public_notice(self, start: datetime) -> timedelta:
        """How long a distribution's public notice runs: the public_notice clock's window
        (policy.toml), so the clock and the distribution never disagree."""
        clock = self.clock_policy.clock("public_notice")
        if clock is None:
            return PUBLIC_NOTICE
        return clock.window.deadline(start, self.calendar, None) - start

    # ---- scheduled work -----------------------------------------------------------------------

    def sweep(self) -> int:
        """Fire every clock step that is due and end every listing whose term is over
        (hub/service/sweep.py); returns how many of both."""
        return self.jobs.sweep()

    def keep_audit_log(self) -> int:
        """Place committed audit entries in the log's Merkle tree and sign a checkpoint when
        one is due (ADR 15); returns how many entries were placed."""
        return self.jobs.keep_audit_log()

    # ---- after a commit -----------------------------------------------------------------------

    def subscribe(self, notifier: Notifier) -> None:
        """Tell `notifier` of every commit that queued deliveries, from then on."""
        self._notifiers.append(notifier)

    def notify(self, recipients: set[str], deliveries: Sequence[PendingDelivery] = ()) -> None:
        for notifier in list(self._notifiers):
            try:
                notifier.notify(recipients, deliveries)
            except Exception:
                # Committed is committed: the outbox holds the deliveries and the pumps' tick
                # finds them; nobody must see an error for it.
                log.exception("could not wake delivery streams for %s", sorted(recipients))

    def on_list_change(self, listener: Callable[[], None]) -> None:
        """Call `listener` (from any thread) after each commit that changed the list."""
        self._list_listeners.append(listener)

    def list_changed(self) -> None:
        for listener in list(self._list_listeners):
            try:
                listener()
            except Exception:
                log.exception("a list listener failed; followers catch up on their tick")

    # ---- what the hub signs -------------------------------------------------------------------

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

    def deliver(
        self,
        uow: UnitOfWork,
        recipients: Sequence[str],
        notice: delivery_pb2.Notice,
        now: datetime,
        members: Members | None = None,
    ) -> list[PendingDelivery]:
        """Queue a hub-signed notice to each recipient in the outbox and the audit log, in
        `uow`'s transaction (`members`: its registry, when its commit hands the rows over)."""
        kind, case_id = _notice_kind(notice), wire.subject_of(notice)
        order_id = notice.order.order_id or None
        sealed = [self.seal(r, notice, now) for r in recipients]
        rows = [
            NewDelivery(r, kind, case_id, s.SerializeToString(), self._at_once(r, now, members))
            for r, s in zip(recipients, sealed, strict=True)
        ]
        sequences = uow.outbox.add_many(rows, now)
        for row, message in zip(rows, sealed, strict=True):
            detail = f"{kind} to {row.recipient}: {notice.summary}"
            _audit_sent(uow, message, row.envelope, detail, now, case_id=case_id, order_id=order_id)
        return [
            PendingDelivery(q, r.recipient, r.envelope, int(r.sent), counted=r.sent)
            for q, r in zip(sequences, rows, strict=True)
        ]

    def _at_once(self, recipient: str, now: datetime, members: Members | None) -> bool:
        """Whether streams here take the row at once, each opened with a key that may sign."""
        if members is None or self.live_streams is None:
            return False
        keys = self.live_streams.stream_keys(recipient)
        return keys is not None and members.may_sign(recipient, keys, now)

    def pending(self, institution: str, limit: int = 500) -> Sequence[PendingDelivery]:
        """What waits in the outbox for `institution`, unacknowledged, in order."""
        with self.uow(read_only=True) as uow:
            return uow.outbox.pending(institution, limit)

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
                self.record_rejection(envelope, raw, err)
                raise

    def record_rejection(
        self, envelope: envelope_pb2.Envelope, raw: bytes, err: DomainError
    ) -> None:
        """Keep a refused message in the audit log (hub/service/gate.py)."""
        self.gate.record_rejection(envelope, raw, err)

    def _members(self, batch: Batch) -> Members:
        """The registry as of the batch's transaction, read once for all its requests."""
        members = batch.shared.get("members")
        if members is None:
            members = batch.shared["members"] = self.gate.members.current(batch.uow)
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
        gate = self.gate
        try:
            gate.check_envelope(envelope, peer)
        except DomainError as err:
            self.record_rejection(envelope, raw, err)
            raise
        # The signature is checked outside the transaction, against the registry as last
        # read; inside, a registry that moved meanwhile means checking again with the
        # current one. A failure here decides nothing: the current registry may know the
        # sender. The body is decoded here too, its refusal kept for its turn (after the
        # freshness check and the resend lookup, as without the early work).
        early = gate.members.peek()
        early_sender: Institution | None = None
        body: Message | None = None
        undecodable: DomainError | None = None
        if early is not None:
            try:
                early_sender = gate.identify(early, envelope)
            except DomainError:
                early_sender = None
            else:
                try:
                    body = command.decode(envelope)
                except DomainError as err:
                    undecodable = err

        def work(batch: Batch) -> tuple[envelope_pb2.Envelope, Context | None]:
            uow = batch.uow
            members = self._members(batch)
            if early_sender is not None and members is early:
                sender = early_sender
            else:
                sender = gate.identify(members, envelope)
            # Read inside the transaction: on SQLite the write lock is ours, so recorded
            # times follow commit order.
            now = self.clock.now()
            gate.check_fresh(envelope, now, sender)
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
            decoded = body if body is not None else command.decode(envelope)
            ctx = Context(self, uow, now, sender, envelope, raw, command.name, members=members)
            result = _run(command, ctx, decoded)
            for tracked in ctx.tracked.values():
                ctx.sign_events(tracked.case, tracked.events_since)
            for tracked in ctx.tracked.values():
                apply_clocks(
                    uow,
                    tracked,
                    now,
                    policy=self.clock_policy,
                    calendar=self.calendar,
                    centres=ctx.centres(),
                )
            answer = self.seal(sender.code, result, now, in_reply_to=envelope.message_id)
            answer_bytes = answer.SerializeToString()
            ctx.accept(command.name, wire.subject_of(result))
            _audit_sent(
                uow,
                answer,
                answer_bytes,
                f"answer to {sender.code}/{envelope.message_id}",
                now,
                case_id=wire.subject_of(result),
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
                gate.audit_rejection(batch.uow, envelope, raw, err)

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
            self.record_rejection(envelope, raw, err)
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
            sender = self.gate.authenticate(uow, envelope, peer)
            now = self.clock.now()
            self.gate.check_fresh(envelope, now, sender)
            body = command.decode(envelope)
            ctx = Context(self, uow, now, sender, envelope, raw, command.name)
            return sender, _run(command, ctx, body), now


def _run(command: Command[Any], ctx: Context, body: Message) -> Message:
    """The permission matrix's first word, then the handler. A case-scoped command is
    decided on the caller's relation to the case once the handler has loaded it; before
    that, only kinds that may never call it are refused."""
    if command.case_scoped:
        refuse_kind(command.name, ctx.sender.code, ctx.sender.kind)
    else:
        ctx.access = authorize(command.name, ctx.sender.code, ctx.sender.kind)
    return command.run(ctx, body)
