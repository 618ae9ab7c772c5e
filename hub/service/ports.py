"""The ports the handlers drive: time, signing, storage and waking delivery streams.

It is over 600 lines because it is the one place every port is declared (ADR 19): the
repositories, the unit of work and the records they hand over, including the audit log's
(entries, tags, leaves, checkpoints, endorsements), which the store and its fakes implement
side by side."""

from __future__ import annotations

__all__ = [
    "AppealRepository",
    "AuditEntry",
    "AuditLog",
    "CaseRepository",
    "Clock",
    "ClockRepository",
    "Conflict",
    "HubKeyEndorsementRow",
    "InboundRecord",
    "InboundRepository",
    "InstitutionRepository",
    "LeafChunk",
    "LeafFields",
    "LeafMismatch",
    "ListChangeRow",
    "ListRepository",
    "ListRow",
    "ListState",
    "LogCheckpointRow",
    "LogState",
    "LoggedRecord",
    "Notifier",
    "Outbox",
    "PendingDelivery",
    "RuleRepository",
    "Signer",
    "StoreUnavailable",
    "UnitOfWork",
    "UnitOfWorkFactory",
]

from array import array
from collections.abc import Collection, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, NamedTuple, Protocol, Self

from hub.crypto.envelope import Signer
from hub.domain.appeals import Appeal, AppealState
from hub.domain.cases import Case, CaseState
from hub.domain.clocks import CaseClock, SlaEntry
from hub.domain.errors import DomainError
from hub.domain.institutions import Institution, InstitutionKind, KeyState
from hub.domain.leads import Lead, LeadState
from hub.domain.returns import Distribution
from hub.domain.rules import AutoStopRule
from hub.domain.warnings import Warning, WarningState


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, aware UTC."""
        ...


class Notifier(Protocol):
    def notify(self, recipients: Iterable[str], deliveries: Sequence[PendingDelivery] = ()) -> None:
        """Called after a commit: deliveries for these institutions are waiting.

        `deliveries`, when given, are the rows that commit queued (with their sequences and
        signed bytes), so a stream in this process can carry them without reading them back;
        the outbox stays the truth, and recipients without them are read from it."""
        ...


class LiveStreams(Protocol):
    """The delivery streams open in this process (the delivery router), as a transaction
    that queues a delivery sees them: a delivery a stream here takes at once has its first
    attempt counted in that transaction, so it goes out without a transaction of its own
    (the router counts every other attempt before sending it, in one for the batch)."""

    def stream_keys(self, recipient: str) -> frozenset[str] | None:
        """The key ids that opened `recipient`'s streams here that take a delivery at once,
        or None when none would: no stream, or older deliveries must be read first."""
        ...


@dataclass(frozen=True)
class InboundRecord:
    digest: bytes
    body_type: str
    response: bytes


@dataclass(frozen=True)
class PendingDelivery:
    sequence: int
    recipient: str
    envelope: bytes
    attempts: int
    # Counted as sent (attempt 1) by the transaction that queued it, for a stream open in
    # this process: the router sends it without counting it again.
    counted: bool = False


@dataclass(frozen=True)
class AuditEntry:
    kind: str
    actor: str
    message_id: str
    detail: str
    payload: bytes | None = None
    case_id: str | None = None
    order_id: str | None = None


class InstitutionRepository(Protocol):
    def get(self, code: str) -> Institution | None: ...

    def add(self, institution: Institution) -> None: ...

    def list(self, page_size: int, after: str | None) -> Sequence[Institution]: ...

    def kinds(self) -> dict[str, InstitutionKind]: ...

    def version(self) -> int | None:
        """The registry's version, moved by every change to members, keys and contacts;
        None when the store keeps none (then nothing may be cached)."""
        ...

    def members(self) -> dict[str, Institution]:
        """Every member with its keys (contacts not loaded), detached from the store."""
        ...

    def key_states(
        self, codes: Collection[str]
    ) -> dict[str, dict[str, tuple[KeyState, datetime | None]]]:
        """Per code (every one asked for, an unknown one with no keys): key id -> (state,
        not_after) of each of its keys, in one query however many codes."""
        ...


@dataclass(frozen=True)
class CaseQuery:
    """ListCases' filters, each narrowing the others (docs/cases.md)."""

    state: CaseState | None = None
    # Cases this institution reported or holds an order in (a member's own scope, or the
    # institution_code filter); `reporter`: only cases this institution reported.
    party: str | None = None
    institution: str | None = None
    reporter: str | None = None
    # (institution, account number): a payer or payee of the case, or an order's account.
    account: tuple[str, str] | None = None
    # Blind-index tokens (hub/crypto/blindindex.py) of the victim's name and ID number.
    victim_name_token: bytes | None = None
    victim_id_token: bytes | None = None
    # Half-open [created_from, created_to).
    created_from: datetime | None = None
    created_to: datetime | None = None
    # Earliest open clock deadline first, cases without an open clock last (else newest
    # first).
    by_deadline: bool = False


class CaseRepository(Protocol):
    def get(self, case_id: str, *, lock: bool = False) -> Case | None: ...

    def case_id_of_order(self, order_id: str) -> str | None: ...

    def add(self, case: Case) -> None: ...

    def list(
        self,
        state: CaseState | None,
        page_size: int,
        after: tuple[datetime, str] | None,
        reporter: str | None = None,
    ) -> Sequence[Case]: ...

    def search(
        self, query: CaseQuery, page_size: int, after: tuple[Any, ...] | None
    ) -> Sequence[tuple[Case, datetime | None]]:
        """Cases matching `query`, in its order, after the key `after` (the last row of the
        previous page: (created_at, case_id), or with `by_deadline` (no-deadline flag 0/1,
        deadline or None, case_id)); with `by_deadline` each with its earliest open clock
        deadline (None: no clock runs), otherwise with None."""
        ...

    def involving(
        self, accounts: Collection[tuple[str, str]], exclude: str, limit: int
    ) -> Sequence[tuple[str, str, str]]:
        """Open cases other than `exclude` whose money reached one of `accounts` (as a payee
        of the victim, an account stopped or frozen, or the target of an onward transfer):
        (case id, institution, account number) for each case and account, by case id, at
        most `limit` rows."""
        ...


class DistributionRepository(Protocol):
    def get(self, distribution_id: str, *, lock: bool = False) -> Distribution | None:
        """With `lock`, read afresh and held for this transaction."""
        ...

    def add(self, distribution: Distribution) -> None: ...

    def open_for_account(self, institution: str, account: str) -> Sequence[Distribution]:
        """Distributions of this account still under notice."""
        ...


@dataclass(frozen=True)
class ListState:
    """The list as of its latest change: what a checkpoint at `version` says."""

    version: int
    count: int
    clear_digest: int
    token_digest: int
    list_key_id: str


@dataclass
class ListRow:
    """One list entry as stored. The subject, name and reason travel inside `clear_wire`
    (the CLEAR-form ListEntry, sealed at rest); the service decodes it."""

    entry_id: str
    kind: str
    subject_token: bytes
    basis: str
    source_case_id: str
    listed_at: datetime
    expires_at: datetime
    listed_by: str
    ended_at: datetime | None
    end_kind: str
    end_reason: str
    added_version: int
    ended_version: int | None
    clear_wire: bytes
    token_wire: bytes


@dataclass(frozen=True)
class ListChangeRow:
    version: int
    op: str
    entry_id: str
    at: datetime
    # For an addition: the entry in the form asked for.
    wire: bytes | None


class ListRepository(Protocol):
    def state(self, *, lock: bool = False) -> ListState:
        """The current state; `lock` holds it for this transaction, so changes are numbered
        one after another however many hubs publish."""
        ...

    def set_state(self, state: ListState) -> None: ...

    def add(self, row: ListRow) -> None: ...

    def end(self, entry_id: str, at: datetime, kind: str, reason: str, version: int) -> None: ...

    def log_change(self, version: int, op: str, entry_id: str, at: datetime) -> None: ...

    def get(self, entry_id: str) -> ListRow | None: ...

    def by_tokens(self, tokens: Collection[bytes], *, live_only: bool) -> Sequence[ListRow]:
        """Entries whose subject has one of these tokens (all of them, or the live ones)."""
        ...

    def live_for_case(self, case_id: str) -> Sequence[ListRow]: ...

    def due(self, now: datetime, limit: int) -> Sequence[ListRow]:
        """Live entries whose term has ended, oldest first."""
        ...

    def snapshot(
        self, version: int, tokens: bool, after_version: int, limit: int
    ) -> Sequence[tuple[int, bytes]]:
        """The entries live at `version`, as (added version, wire form), by added version
        above `after_version`; their wire form is TOKENS when `tokens`, else CLEAR."""
        ...

    def changes(
        self, after: int, upto: int, tokens: bool, limit: int
    ) -> Sequence[ListChangeRow]: ...

    def oldest_change(self) -> int | None:
        """The lowest version still in the change log (None: none kept)."""
        ...

    def prune_changes(self, below: int, limit: int) -> int:
        """Delete the oldest changes with a version below `below`, at most `limit` of them;
        returns how many."""
        ...


class AppealRepository(Protocol):
    def get(self, appeal_id: str, *, lock: bool = False) -> Appeal | None:
        """With `lock`, read afresh and held for this transaction (two centres deciding
        one appeal at once decide it once)."""
        ...

    def add(self, appeal: Appeal) -> None: ...

    def open_for(self, reference: str) -> Sequence[Appeal]: ...

    def recent(self, limit: int, *, open_only: bool) -> Sequence[Appeal]:
        """The newest appeals first (only those waiting for a decision with `open_only`)."""
        ...

    def search(
        self,
        *,
        state: AppealState | None,
        appellant: str | None,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> Sequence[Appeal]:
        """Appeals newest first (filed_at descending, then appeal id descending), after the
        key of the previous page's last."""
        ...


@dataclass(frozen=True)
class LeadQuery:
    """ListLeads' filters (docs/leads.md)."""

    state: LeadState | None = None
    submitter: str | None = None
    grade: str | None = None


class LeadRepository(Protocol):
    def get(self, lead_id: str, *, lock: bool = False) -> Lead | None:
        """With `lock`, the row locked for the rest of the transaction (two triages of one
        lead at once triage it once)."""
        ...

    def add(self, lead: Lead, accounts: Collection[tuple[str, str]]) -> None:
        """A new lead and the accounts it names (institution, number), for the links."""
        ...

    def linked(
        self, lead_id: str, accounts: Collection[tuple[str, str]], limit: int
    ) -> Sequence[tuple[str, str, str, str]]:
        """Other leads naming one of `accounts`: (lead id, submitter, institution, number),
        oldest lead first."""
        ...

    def search(
        self, query: LeadQuery, limit: int, after: tuple[int, datetime, str] | None
    ) -> Sequence[Lead]:
        """Leads in the queue's order (grade rank, queue time, lead id), after `after`."""
        ...


class WarningRepository(Protocol):
    def get(self, warning_id: str, *, lock: bool = False) -> Warning | None:
        """With `lock`, read afresh and held for this transaction (two outcomes of one
        warning at once: one closes it, the other finds it closed)."""
        ...

    def add(self, warning: Warning) -> None: ...

    def search(
        self,
        *,
        state: WarningState | None,
        party: str | None,
        open_only: bool,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> Sequence[Warning]:
        """Warnings newest first (sent_at descending, then warning id descending), after the
        key of the previous page's last; `party`: only those it sent or is addressed."""
        ...


class RuleRepository(Protocol):
    def get(self, centre_code: str) -> AutoStopRule | None: ...

    def put(self, rule: AutoStopRule) -> None: ...

    def enabled(self) -> Sequence[AutoStopRule]: ...


class InboundRepository(Protocol):
    def get(self, sender: str, message_id: str) -> InboundRecord | None: ...

    def add(
        self,
        sender: str,
        message_id: str,
        record: InboundRecord,
        received_at: datetime,
    ) -> None: ...


@dataclass(frozen=True)
class NewDelivery:
    recipient: str
    kind: str
    case_id: str | None
    envelope: bytes
    # Its first attempt is counted as it is queued: it goes out at once on a stream here.
    sent: bool = False


class Outbox(Protocol):
    def add(
        self, recipient: str, kind: str, case_id: str | None, envelope: bytes, now: datetime
    ) -> int:
        """`add_many` of one, not counted as sent."""
        ...

    def add_many(self, rows: Sequence[NewDelivery], now: datetime) -> list[int]:
        """Queue deliveries, in one statement however many (a broadcast's thousand); their
        sequences, in the order of `rows`."""
        ...

    def pending(self, recipient: str, limit: int) -> Sequence[PendingDelivery]: ...

    def mark_sent(self, sequences: Sequence[int], now: datetime) -> None: ...

    def ack(self, recipient: str, sequences: Sequence[int], now: datetime) -> int: ...

    def pending_many(
        self, recipients: Collection[str], limit: int
    ) -> dict[str, list[PendingDelivery]]:
        """`pending` for many recipients in one query (every one asked for is a key)."""
        ...

    def unacked(self, recipients: Collection[str], limit: int) -> dict[str, list[int]]:
        """The sequences `pending_many` would return, without reading the envelopes."""
        ...

    def count_attempts(self, sequences: Sequence[int], now: datetime) -> dict[int, int]:
        """`mark_sent` for the unacknowledged ones among `sequences`; returns their
        attempts, this one counted (an acknowledged one is left alone and not returned)."""
        ...

    def ack_many(self, acks: Sequence[tuple[str, Sequence[int]]], now: datetime) -> list[int]:
        """`ack` for many (recipient, sequences) at once; how many each acknowledged (a
        delivery named twice counts for the first)."""
        ...


class ClockRepository(Protocol):
    def add(self, clock: CaseClock) -> None: ...

    def open_for_case(self, case_id: str) -> Sequence[CaseClock]: ...

    def due(self, now: datetime, limit: int) -> Sequence[CaseClock]:
        """Open clocks whose next step is due, locked for this transaction; clocks another
        transaction holds are skipped, so two hubs never fire the same step."""
        ...

    def get(self, clock_id: str, *, lock: bool = False) -> CaseClock | None: ...

    def log(self, entry: SlaEntry) -> None: ...

    def query(
        self,
        *,
        institution: str | None,
        case_id: str | None,
        open_only: bool,
        breached_only: bool,
        limit: int,
        offset: int,
        unacknowledged_only: bool = False,
    ) -> Sequence[CaseClock]: ...

    def breached_since(self, since: datetime, limit: int) -> Sequence[CaseClock]:
        """Clocks that breached (their deadline passed before they were met) with the deadline
        or the late stop at or after `since`, the latest deadline first (the board's last hour;
        a running clock is marked breached by the sweep's breach step)."""
        ...

    def entries(self, clock_ids: Sequence[str]) -> dict[str, list[SlaEntry]]: ...

    def open_for_cases(self, case_ids: Sequence[str]) -> Sequence[CaseClock]:
        """The running clocks of these cases (for each case's next deadline)."""
        ...


@dataclass(frozen=True)
class AuditRecord:
    """An audit entry as stored, with its position and the time the hub recorded it."""

    entry_id: int
    recorded_at: datetime
    entry: AuditEntry
    # The hub's tag and its data key's id (docs/audit.md; None before revision 0015), when the
    # sequencer refused it, and why its sealed values do not open (read for the sequencer).
    tag_key: str | None = None
    tag: bytes | None = None
    refused_at: datetime | None = None
    unreadable: str = ""


@dataclass(frozen=True)
class LogState:
    """The audit log's Merkle tree: its size, root, and compact range (ADR 15)."""

    size: int
    root: bytes
    compact_range: bytes
    # Entries with ids below this carry no tag (written before revision 0015).
    untagged_below_id: int = 0
    # How many positions at the start of the tree hold untagged entries.
    untagged_entries: int = 0


@dataclass(frozen=True)
class LogCheckpointRow:
    tree_size: int
    root_hash: bytes
    signed_at: datetime
    # The hub-signed envelope of a LogCheckpoint.
    envelope: bytes


@dataclass(frozen=True)
class ReportReceivedRow:
    """A report as the outcome figures count it (docs/outcomes.md): its case, the institution
    that signed it, when the hub received it, and the sum of its transactions."""

    case_id: str
    institution: str
    received_at: datetime
    lost_fen: int


@dataclass(frozen=True)
class MoneyAnswerRow:
    """A stop, freeze or return order answered EXECUTED or PARTIALLY_EXECUTED, with the amounts
    its signed answer reports (docs/outcomes.md). `institution` is the reporting institution of
    the case the money is counted for: a return's beneficiary case, else the order's case."""

    order_id: str
    case_id: str
    kind: str
    institution: str
    answered_at: datetime
    held_fen: int
    returned_fen: int
    # A stop issued for an onward transfer (ADR 13): it names an upstream order.
    downstream: bool
    account: tuple[str, str]
    # A freeze that renews another freeze of the same money.
    renews: bool
    case_received_at: datetime


@dataclass(frozen=True)
class LeadHistoryRow:
    """A lead as the outcome figures count it (docs/outcomes.md): who handed it over and when,
    each question of the centre (asked, answered or None), and its end (when accepted or
    dismissed, and which: "case_opened", "listed", "warned" or "dismissed"; "" while open)."""

    lead_id: str
    institution: str
    submitted_at: datetime
    asks: tuple[tuple[datetime, datetime | None], ...]
    decided_at: datetime | None
    end: str


@dataclass(frozen=True)
class WarningRow:
    """A warning as the outcome figures count it (docs/outcomes.md): for its addressee, each
    step dated by its own record."""

    warning_id: str
    addressee: str
    sent_at: datetime
    amount_at_risk_fen: int
    contact_by: datetime | None
    acknowledged_at: datetime | None
    outcome: str  # hub.domain.warnings.Outcome's value, "" while open
    outcome_at: datetime | None
    outcome_by: datetime | None
    loss_prevented_fen: int


class OutcomeReader(Protocol):
    """The rows the outcome figures are counted from (hub.store.reports.SqlReports)."""

    def leads_submitted(
        self, start: datetime, end: datetime, institution: str | None
    ) -> list[LeadHistoryRow]:
        """The leads handed over in [start, end), of `institution` when given."""
        ...

    def reports_received(
        self, start: datetime, end: datetime, institution: str | None
    ) -> list[ReportReceivedRow]:
        """The reports received in [start, end), of `institution` when given."""
        ...

    def money_answers(
        self, start: datetime, end: datetime, institution: str | None
    ) -> list[MoneyAnswerRow]:
        """The freeze and return answers of [start, end), and every stop answer that held money
        of each case with a stop answered in [start, end); of `institution`'s cases when given."""
        ...

    def warning_steps(
        self, start: datetime, end: datetime, institution: str | None
    ) -> list[WarningRow]:
        """The warnings sent, acknowledged or closed in [start, end), addressed to
        `institution` when given."""
        ...


@dataclass(frozen=True)
class HubKeyEndorsementRow:
    """A hub key vouched for by the hub's key before it (docs/audit.md, "Rotating the hub's
    key"): `envelope` is a HubKeyEndorsement signed by `endorsed_by`."""

    key_id: str
    endorsed_by: str
    endorsed_at: datetime
    envelope: bytes


@dataclass(frozen=True)
class LoggedRecord:
    """An audit entry with its place in the tree (None before the sequencer gave one)."""

    log_index: int | None
    leaf_hash: bytes | None
    record: AuditRecord


class LeafFields(NamedTuple):
    """What a leaf binds besides its position (docs/audit.md), as the leaf hashes them."""

    entry_id: int
    at_micros: int
    kind: bytes
    actor: bytes
    message_id: bytes
    case_id: bytes
    order_id: bytes
    detail: bytes
    payload_sha256_hex: bytes


@dataclass(frozen=True)
class LeafMismatch:
    """An entry whose content no longer makes its stored leaf."""

    position: int  # in its chunk
    stored: bytes | None
    fields: LeafFields
    # Why the content could not be read (a sealed value that does not open), if it could not.
    unreadable: str = ""


@dataclass(frozen=True)
class TagProblem:
    """An entry the hub's tag does not vouch for (docs/audit.md, "The hub's tag")."""

    position: int  # in its chunk
    reason: str


@dataclass(frozen=True)
class LeafChunk:
    """Consecutive entries in id order, as a verification reads them: ids, places (-1: not
    placed yet), the leaves their content makes now (32 bytes each, zeros when not placed),
    and the entries whose stored leaf differs."""

    ids: array[int]
    indexes: array[int]
    leaves: bytes
    mismatched: list[LeafMismatch]
    # Entries the hub's tag does not vouch for, and the positions of those with no tag at all
    # (allowed only in the untagged prefix of an upgraded log, which the caller knows).
    forged: list[TagProblem] = field(default_factory=list)
    untagged: list[int] = field(default_factory=list)


class AuditLog(Protocol):
    def append(self, entry: AuditEntry, now: datetime) -> None: ...

    def scan(self, after_id: int, limit: int) -> Sequence[AuditRecord]:
        """Entries with an id above `after_id`, in id order."""
        ...

    def log_state(self, *, lock: bool = False) -> LogState:
        """The tree as last sequenced; `lock` holds it, so one sequencer runs at a time."""
        ...

    def set_log_state(self, state: LogState) -> None: ...

    def unsequenced(self, limit: int) -> Sequence[AuditRecord]:
        """Committed entries without a place in the tree, not refused, in id order."""
        ...

    def assign(self, places: Sequence[tuple[int, int, bytes]]) -> None:
        """(entry id, log index, leaf hash) for each entry."""
        ...

    def refuse(self, entry_ids: Sequence[int], at: datetime) -> None: ...

    def add_checkpoint(self, checkpoint: LogCheckpointRow) -> None: ...

    def checkpoints(self) -> Sequence[LogCheckpointRow]:
        """Every checkpoint, smallest tree first."""
        ...

    def recorded_times(self, indexes: Collection[int]) -> dict[int, datetime]:
        """When the entries at these positions were recorded, by position (those placed)."""
        ...

    def entry_ids(self, after_id: int, limit: int) -> list[int]:
        """Ids above `after_id`, in id order, without reading (opening) the entries."""
        ...

    def endorsements(self) -> Sequence[HubKeyEndorsementRow]:
        """Every hub key endorsement, oldest first."""
        ...

    def add_endorsement(self, row: HubKeyEndorsementRow) -> None: ...

    def logged(self, after_id: int, limit: int) -> Sequence[LoggedRecord]:
        """Entries with an id above `after_id`, in id order, with their places."""
        ...

    def placed(self, from_index: int, limit: int) -> Sequence[LoggedRecord]:
        """Entries at positions from `from_index` on, by position."""
        ...

    def leaves(self, size: int) -> list[bytes]:
        """The stored leaf hashes of positions 0 .. size - 1, by position."""
        ...

    def add_nodes(self, nodes: Sequence[tuple[int, int, bytes]]) -> None:
        """(height, index, root) of perfect subtrees the sequencer completed."""
        ...

    def nodes(self, height: int, first: int, end: int) -> list[bytes]:
        """Stored values at `height` for positions first .. end - 1, in order: the leaf
        hashes at height 0, subtree roots above; fewer when some are missing."""
        ...

    def latest_checkpoint(self) -> LogCheckpointRow | None:
        """The checkpoint of the largest tree, or None before the first."""
        ...

    def checkpoint_of(self, tree_size: int) -> LogCheckpointRow | None:
        """The checkpoint of a tree of exactly `tree_size` entries, or None."""
        ...


class UnitOfWork(Protocol):
    institutions: InstitutionRepository
    cases: CaseRepository
    rules: RuleRepository
    inbound: InboundRepository
    outbox: Outbox
    audit: AuditLog
    clocks: ClockRepository
    distributions: DistributionRepository
    lists: ListRepository
    appeals: AppealRepository
    leads: LeadRepository
    warnings: WarningRepository

    # Read models for reports (hub/store/reports.py): what a handler reads for figures.
    @property
    def reports(self) -> OutcomeReader: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def savepoint(self) -> AbstractContextManager[None]:
        """A part of the transaction that rolls back alone (and re-raises) when its block
        raises; the rest of the transaction goes on."""
        ...


class UnitOfWorkFactory(Protocol):
    def __call__(self, *, read_only: bool = False) -> UnitOfWork: ...


class Conflict(Exception):
    """A concurrent transaction wrote the same row first (for example the same message id)."""


class StoreUnavailable(DomainError):
    """The database cannot be reached (restarting, failed over, connection cut).

    Nothing is known to be lost: a transaction is atomic, so it either committed or left no
    trace, and a resend with the same message id finds a committed one in the inbound log
    and gets its original answer. It is a DomainError so that, once the hub's own retries are
    spent, the caller is told to retry (UNAVAILABLE) rather than seeing an internal error."""

    code = "UNAVAILABLE"

    def __init__(self, detail: str) -> None:
        super().__init__(
            "DATABASE_UNAVAILABLE",
            "the hub's database is unavailable for the moment; nothing was refused: retry "
            "with the same message id (a request that did commit gets its original answer)",
        )
        self.detail = detail
