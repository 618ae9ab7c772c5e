"""In-memory fakes of the ports in hub/service/ports.py, for unit tests only.

FakeStore is a UnitOfWorkFactory. Each unit of work works on a deep copy of the
committed state taken when it is entered; `commit` publishes that copy, leaving the
unit of work (or closing it without commit) throws it away. So, as with the real
database, a change is visible to a later unit of work only after a commit.

A commit fails with `Conflict` when another unit of work committed since this one was
entered (optimistic concurrency over the whole store: the fake's stand-in for the unique
key on inbound message ids and for row locks), and adding a row whose key is already in
the unit of work's state fails at once, like a unique constraint.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from hub.crypto import audittag, blindindex
from hub.domain.appeals import Appeal, AppealState
from hub.domain.cases import Case, CaseState, ExecutionStatus, OrderKind
from hub.domain.clocks import CaseClock, ClockState, SlaEntry
from hub.domain.grades import grade_of
from hub.domain.institutions import Institution, InstitutionKind, KeyState
from hub.domain.leads import FINAL, Lead
from hub.domain.merkle import EMPTY_ROOT
from hub.domain.returns import Distribution, DistributionState
from hub.domain.rules import AutoStopRule
from hub.domain.trail import OPEN_STATES, accounts_of
from hub.domain.warnings import Warning, WarningState
from hub.service import auditlog
from hub.service.ports import (
    AuditEntry,
    AuditRecord,
    CaseQuery,
    Conflict,
    HubKeyEndorsementRow,
    InboundRecord,
    LeadHistoryRow,
    LeadQuery,
    ListChangeRow,
    ListRow,
    ListState,
    LogCheckpointRow,
    LoggedRecord,
    LogState,
    MoneyAnswerRow,
    NewDelivery,
    PendingDelivery,
    ReportReceivedRow,
    WarningRow,
)

if TYPE_CHECKING:
    from hub.service.ports import (
        AppealRepository,
        AuditLog,
        CaseRepository,
        ClockRepository,
        DistributionRepository,
        InboundRepository,
        InstitutionRepository,
        LeadRepository,
        ListRepository,
        Notifier,
        Outbox,
        RuleRepository,
        UnitOfWork,
        UnitOfWorkFactory,
        WarningRepository,
    )


@dataclass
class Delivery:
    """One outbox row."""

    sequence: int
    recipient: str
    kind: str
    case_id: str | None
    envelope: bytes
    created_at: datetime
    attempts: int = 0
    first_sent_at: datetime | None = None
    acked_at: datetime | None = None


@dataclass
class StoreState:
    institutions: dict[str, Institution] = field(default_factory=dict)
    cases: dict[str, Case] = field(default_factory=dict)
    rules: dict[str, AutoStopRule] = field(default_factory=dict)
    inbound: dict[tuple[str, str], tuple[InboundRecord, datetime]] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    audit: list[tuple[AuditEntry, datetime]] = field(default_factory=list)
    clocks: dict[str, CaseClock] = field(default_factory=dict)
    sla: list[SlaEntry] = field(default_factory=list)
    distributions: dict[str, Distribution] = field(default_factory=dict)
    list_rows: dict[str, ListRow] = field(default_factory=dict)
    list_changes: list[tuple[int, str, str, datetime]] = field(default_factory=list)
    list_state: ListState = field(default_factory=lambda: ListState(0, 0, 0, 0, ""))
    appeals: dict[str, Appeal] = field(default_factory=dict)
    leads: dict[str, Lead] = field(default_factory=dict)
    lead_accounts: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    warnings: dict[str, Warning] = field(default_factory=dict)
    # The audit log's tree: entry id -> (position, leaf hash), the state, the checkpoints.
    places: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    # The hub's tag on each entry (entry id -> (data key id, tag)), and the refused entries.
    tags: dict[int, tuple[str, bytes]] = field(default_factory=dict)
    refused: dict[int, datetime] = field(default_factory=dict)
    log_state: LogState = field(default_factory=lambda: LogState(0, EMPTY_ROOT, b""))
    checkpoints: list[LogCheckpointRow] = field(default_factory=list)
    endorsements: list[HubKeyEndorsementRow] = field(default_factory=list)
    log_nodes: dict[tuple[int, int], bytes] = field(default_factory=dict)
    next_sequence: int = 1
    # The fake's members are shared, mutable objects (tests revoke keys in place), so by
    # default it keeps no version and the hub caches nothing; a test of the cache sets one.
    registry_version: int | None = None


# ---- repositories ----------------------------------------------------------------------------


class FakeInstitutions:
    def __init__(self, state: StoreState) -> None:
        self._state = state

    def get(self, code: str) -> Institution | None:
        return self._state.institutions.get(code)

    def add(self, institution: Institution) -> None:
        if institution.code in self._state.institutions:
            raise Conflict(f"institution {institution.code} exists")
        self._state.institutions[institution.code] = institution

    def list(self, page_size: int, after: str | None) -> Sequence[Institution]:
        codes = sorted(c for c in self._state.institutions if not after or c > after)
        return [self._state.institutions[c] for c in codes[:page_size]]

    def kinds(self) -> dict[str, InstitutionKind]:
        return {code: inst.kind for code, inst in self._state.institutions.items()}

    def version(self) -> int | None:
        return self._state.registry_version

    def members(self) -> dict[str, Institution]:
        return dict(self._state.institutions)

    def key_states(
        self, codes: Collection[str]
    ) -> dict[str, dict[str, tuple[KeyState, datetime | None]]]:
        found: dict[str, dict[str, tuple[KeyState, datetime | None]]] = {}
        for code in codes:
            inst = self._state.institutions.get(code)
            keys = inst.keys if inst is not None else []
            found[code] = {k.key_id: (k.state, k.not_after) for k in keys}
        return found


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class FakeCases:
    def __init__(self, state: StoreState) -> None:
        self._state = state
        self.locked: list[str] = []

    def get(self, case_id: str, *, lock: bool = False) -> Case | None:
        if lock:
            self.locked.append(case_id)
        return self._state.cases.get(case_id)

    def case_id_of_order(self, order_id: str) -> str | None:
        for case in self._state.cases.values():
            if any(o.order_id == order_id for o in case.orders):
                return case.case_id
        return None

    def add(self, case: Case) -> None:
        if case.case_id in self._state.cases:
            raise Conflict(f"case {case.case_id} exists")
        self._state.cases[case.case_id] = case

    def list(
        self,
        state: CaseState | None,
        page_size: int,
        after: tuple[datetime, str] | None,
        reporter: str | None = None,
    ) -> Sequence[Case]:
        found = [
            c
            for c in self._state.cases.values()
            if (reporter is None or c.reporting_institution == reporter)
            and (state is None or c.state is state)
            and (after is None or (c.created_at, c.case_id) < after)
        ]
        found.sort(key=lambda c: (c.created_at, c.case_id), reverse=True)
        return found[:page_size]

    def search(
        self, query: CaseQuery, page_size: int, after: tuple[Any, ...] | None
    ) -> Sequence[tuple[Case, datetime | None]]:
        index = blindindex.current_index()

        def party(c: Case, code: str) -> bool:
            return c.reporting_institution == code or any(o.addressed_to == code for o in c.orders)

        def has_account(c: Case, key: tuple[str, str]) -> bool:
            return any(
                key
                in ((t.payer_institution, t.payer_account), (t.payee_institution, t.payee_account))
                for t in c.transactions
            ) or any((o.account_institution, o.account_number) == key for o in c.orders)

        found = []
        for c in self._state.cases.values():
            if (
                (query.party is None or party(c, query.party))
                and (query.institution is None or party(c, query.institution))
                and (query.reporter is None or c.reporting_institution == query.reporter)
                and (query.state is None or c.state is query.state)
                and (query.account is None or has_account(c, query.account))
                and (
                    query.victim_name_token is None
                    or index.name_token(c.victim_name) == query.victim_name_token
                )
                and (
                    query.victim_id_token is None
                    or index.id_number_token(c.victim_id_number) == query.victim_id_token
                )
                and (query.created_from is None or c.created_at >= query.created_from)
                and (query.created_to is None or c.created_at < query.created_to)
            ):
                open_ = [
                    k.deadline_at
                    for k in self._state.clocks.values()
                    if k.case_id == c.case_id and k.state is ClockState.OPEN
                ]
                found.append((c, min(open_) if open_ else None))
        if query.by_deadline:

            def key(r: tuple[Case, datetime | None]) -> tuple[int, bool, datetime, str]:
                return (grade_of(r[0].grade).rank, r[1] is None, r[1] or _EPOCH, r[0].case_id)

            rows = sorted(found, key=key)
            if after is not None:
                rank, flag, at, case_id = after
                mark = (rank, bool(flag), at or _EPOCH, case_id)
                rows = [r for r in rows if key(r) > mark]
            return rows[:page_size]
        found.sort(key=lambda r: (r[0].created_at, r[0].case_id), reverse=True)
        if after is not None:
            found = [r for r in found if (r[0].created_at, r[0].case_id) < after]
        return found[:page_size]

    def involving(
        self, accounts: Collection[tuple[str, str]], exclude: str, limit: int
    ) -> Sequence[tuple[str, str, str]]:
        wanted = set(accounts)
        found = []
        for case in self._state.cases.values():
            if case.case_id == exclude or case.state not in OPEN_STATES:
                continue
            for key in sorted(accounts_of(case) & wanted):
                found.append((case.case_id, *key))
        return sorted(found)[:limit]


class FakeDistributions:
    def __init__(self, state: StoreState) -> None:
        self._state = state

    def get(self, distribution_id: str, *, lock: bool = False) -> Distribution | None:
        return self._state.distributions.get(distribution_id)

    def add(self, distribution: Distribution) -> None:
        if distribution.distribution_id in self._state.distributions:
            raise Conflict(f"distribution {distribution.distribution_id} exists")
        self._state.distributions[distribution.distribution_id] = distribution

    def open_for_account(self, institution: str, account: str) -> Sequence[Distribution]:
        return [
            d
            for d in self._state.distributions.values()
            if (d.account_institution, d.account_number) == (institution, account)
            and d.state is DistributionState.NOTICE
        ]


class FakeLists:
    def __init__(self, state: StoreState) -> None:
        self._state = state

    def state(self, *, lock: bool = False) -> ListState:
        return self._state.list_state

    def set_state(self, state: ListState) -> None:
        self._state.list_state = state

    def add(self, row: ListRow) -> None:
        if row.entry_id in self._state.list_rows:
            raise Conflict(f"list entry {row.entry_id} exists")
        self._state.list_rows[row.entry_id] = copy.copy(row)

    def end(self, entry_id: str, at: datetime, kind: str, reason: str, version: int) -> None:
        row = self._state.list_rows[entry_id]
        row.ended_at, row.end_kind, row.end_reason, row.ended_version = at, kind, reason, version

    def log_change(self, version: int, op: str, entry_id: str, at: datetime) -> None:
        if any(v == version for v, *_ in self._state.list_changes):
            raise Conflict(f"list version {version} exists")
        self._state.list_changes.append((version, op, entry_id, at))

    def get(self, entry_id: str) -> ListRow | None:
        row = self._state.list_rows.get(entry_id)
        return copy.copy(row) if row is not None else None

    def _rows(self) -> list[ListRow]:
        return sorted(self._state.list_rows.values(), key=lambda r: r.added_version)

    def by_tokens(self, tokens: Collection[bytes], *, live_only: bool) -> Sequence[ListRow]:
        return [
            copy.copy(r)
            for r in self._rows()
            if r.subject_token in tokens and (r.ended_version is None or not live_only)
        ]

    def live_for_case(self, case_id: str) -> Sequence[ListRow]:
        return [
            copy.copy(r)
            for r in self._rows()
            if r.source_case_id == case_id and r.ended_version is None
        ]

    def due(self, now: datetime, limit: int) -> Sequence[ListRow]:
        due = [r for r in self._rows() if r.ended_version is None and r.expires_at <= now]
        return [copy.copy(r) for r in sorted(due, key=lambda r: r.expires_at)[:limit]]

    def snapshot(
        self, version: int, tokens: bool, after_version: int, limit: int
    ) -> Sequence[tuple[int, bytes]]:
        live = [
            r
            for r in self._rows()
            if after_version < r.added_version <= version
            and (r.ended_version is None or r.ended_version > version)
        ]
        return [(r.added_version, r.token_wire if tokens else r.clear_wire) for r in live][:limit]

    def changes(self, after: int, upto: int, tokens: bool, limit: int) -> Sequence[ListChangeRow]:
        out = []
        for version, op, entry_id, at in sorted(self._state.list_changes):
            if after < version <= upto:
                row = self._state.list_rows[entry_id]
                wire = (row.token_wire if tokens else row.clear_wire) if op == "add" else None
                out.append(ListChangeRow(version, op, entry_id, at, wire))
        return out[:limit]

    def oldest_change(self) -> int | None:
        return min((v for v, *_ in self._state.list_changes), default=None)

    def prune_changes(self, below: int, limit: int) -> int:
        gone = sorted(c for c in self._state.list_changes if c[0] < below)[:limit]
        for change in gone:
            self._state.list_changes.remove(change)
        return len(gone)


class FakeAppeals:
    def __init__(self, state: StoreState) -> None:
        self._state = state

    def get(self, appeal_id: str, *, lock: bool = False) -> Appeal | None:
        return self._state.appeals.get(appeal_id)

    def add(self, appeal: Appeal) -> None:
        if appeal.appeal_id in self._state.appeals:
            raise Conflict(f"appeal {appeal.appeal_id} exists")
        self._state.appeals[appeal.appeal_id] = appeal

    def open_for(self, reference: str) -> Sequence[Appeal]:
        return [
            a
            for a in self._state.appeals.values()
            if a.reference == reference and a.state is AppealState.FILED
        ]

    def recent(self, limit: int, *, open_only: bool) -> Sequence[Appeal]:
        found = [
            a for a in self._state.appeals.values() if not open_only or a.state is AppealState.FILED
        ]
        return sorted(found, key=lambda a: (a.filed_at, a.appeal_id), reverse=True)[:limit]

    def search(
        self,
        *,
        state: AppealState | None,
        appellant: str | None,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> Sequence[Appeal]:
        found = [
            a
            for a in self._state.appeals.values()
            if (state is None or a.state is state)
            and (appellant is None or a.appellant == appellant)
            and (after is None or (a.filed_at, a.appeal_id) < after)
        ]
        return sorted(found, key=lambda a: (a.filed_at, a.appeal_id), reverse=True)[:limit]


class FakeLeads:
    def __init__(self, state: StoreState) -> None:
        self._state = state

    def get(self, lead_id: str, *, lock: bool = False) -> Lead | None:
        return self._state.leads.get(lead_id)

    def add(self, lead: Lead, accounts: Collection[tuple[str, str]]) -> None:
        if lead.lead_id in self._state.leads:
            raise Conflict(f"lead {lead.lead_id} exists")
        self._state.leads[lead.lead_id] = lead
        self._state.lead_accounts[lead.lead_id] = set(accounts)

    def linked(
        self, lead_id: str, accounts: Collection[tuple[str, str]], limit: int
    ) -> Sequence[tuple[str, str, str, str]]:
        found = [
            (other, self._state.leads[other].submitter, inst, number)
            for other, named in self._state.lead_accounts.items()
            if other != lead_id
            for inst, number in sorted(named & set(accounts))
        ]
        return sorted(found)[:limit]

    def search(
        self, query: LeadQuery, limit: int, after: tuple[int, datetime, str] | None
    ) -> Sequence[Lead]:
        found = [
            lead
            for lead in self._state.leads.values()
            if (query.state is None or lead.state is query.state)
            and (query.submitter is None or lead.submitter == query.submitter)
            and (query.grade is None or lead.grade == query.grade)
            and (after is None or (lead.grade_rank, lead.queue_at, lead.lead_id) > after)
        ]
        return sorted(found, key=lambda lead: (lead.grade_rank, lead.queue_at, lead.lead_id))[
            :limit
        ]


class FakeWarnings:
    def __init__(self, state: StoreState) -> None:
        self._state = state

    def get(self, warning_id: str, *, lock: bool = False) -> Warning | None:
        return self._state.warnings.get(warning_id)

    def add(self, warning: Warning) -> None:
        if warning.warning_id in self._state.warnings:
            raise Conflict(f"warning {warning.warning_id} exists")
        self._state.warnings[warning.warning_id] = warning

    def search(
        self,
        *,
        state: WarningState | None,
        party: str | None,
        open_only: bool,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> Sequence[Warning]:
        found = [
            w
            for w in self._state.warnings.values()
            if (state is None or w.state is state)
            and (not open_only or w.state is not WarningState.CLOSED)
            and (party is None or party in (w.sender, w.addressee))
            and (after is None or (w.sent_at, w.warning_id) < after)
        ]
        return sorted(found, key=lambda w: (w.sent_at, w.warning_id), reverse=True)[:limit]


class FakeRules:
    def __init__(self, state: StoreState) -> None:
        self._state = state

    def get(self, centre_code: str) -> AutoStopRule | None:
        return self._state.rules.get(centre_code)

    def put(self, rule: AutoStopRule) -> None:
        self._state.rules[rule.centre_code] = rule

    def enabled(self) -> Sequence[AutoStopRule]:
        return [r for _, r in sorted(self._state.rules.items()) if r.enabled]


class FakeInbound:
    def __init__(self, state: StoreState) -> None:
        self._state = state

    def get(self, sender: str, message_id: str) -> InboundRecord | None:
        row = self._state.inbound.get((sender, message_id))
        return row[0] if row else None

    def add(
        self, sender: str, message_id: str, record: InboundRecord, received_at: datetime
    ) -> None:
        if (sender, message_id) in self._state.inbound:
            raise Conflict(f"inbound message {sender}/{message_id} exists")
        self._state.inbound[(sender, message_id)] = (record, received_at)


class FakeOutbox:
    def __init__(self, state: StoreState) -> None:
        self._state = state

    def add(
        self, recipient: str, kind: str, case_id: str | None, envelope: bytes, now: datetime
    ) -> int:
        return self.add_many([NewDelivery(recipient, kind, case_id, envelope)], now)[0]

    def add_many(self, rows: Sequence[NewDelivery], now: datetime) -> list[int]:
        sequences = []
        for r in rows:
            sequence = self._state.next_sequence
            self._state.next_sequence += 1
            self._state.deliveries.append(
                Delivery(
                    sequence,
                    r.recipient,
                    r.kind,
                    r.case_id,
                    bytes(r.envelope),
                    now,
                    attempts=int(r.sent),
                    first_sent_at=now if r.sent else None,
                )
            )
            sequences.append(sequence)
        return sequences

    def pending(self, recipient: str, limit: int) -> Sequence[PendingDelivery]:
        rows = [d for d in self._state.deliveries if d.recipient == recipient and not d.acked_at]
        rows.sort(key=lambda d: d.sequence)
        return [PendingDelivery(d.sequence, d.recipient, d.envelope, d.attempts) for d in rows][
            :limit
        ]

    def mark_sent(self, sequences: Sequence[int], now: datetime) -> None:
        wanted = set(sequences)
        for d in self._state.deliveries:
            if d.sequence in wanted:
                d.attempts += 1
                d.first_sent_at = d.first_sent_at or now

    def ack(self, recipient: str, sequences: Sequence[int], now: datetime) -> int:
        wanted = set(sequences)
        count = 0
        for d in self._state.deliveries:
            if d.recipient == recipient and d.sequence in wanted and d.acked_at is None:
                d.acked_at = now
                count += 1
        return count

    def pending_many(
        self, recipients: Collection[str], limit: int
    ) -> dict[str, list[PendingDelivery]]:
        return {r: list(self.pending(r, limit)) for r in recipients}

    def unacked(self, recipients: Collection[str], limit: int) -> dict[str, list[int]]:
        return {r: [d.sequence for d in self.pending(r, limit)] for r in recipients}

    def count_attempts(self, sequences: Sequence[int], now: datetime) -> dict[int, int]:
        wanted = set(sequences)
        counted: dict[int, int] = {}
        for d in self._state.deliveries:
            if d.sequence in wanted and d.acked_at is None:
                d.attempts += 1
                d.first_sent_at = d.first_sent_at or now
                counted[d.sequence] = d.attempts
        return counted

    def ack_many(self, acks: Sequence[tuple[str, Sequence[int]]], now: datetime) -> list[int]:
        return [self.ack(recipient, sequences, now) for recipient, sequences in acks]


class FakeAudit:
    def __init__(self, state: StoreState) -> None:
        self._state = state

    def append(self, entry: AuditEntry, now: datetime) -> None:
        self._state.audit.append((entry, now))
        entry_id = len(self._state.audit)
        if audittag.configured():  # tagged as SqlAudit tags it, when there are data keys
            kid, key = audittag.KEYS.current()
            record = AuditRecord(entry_id, now, entry)
            self._state.tags[entry_id] = (kid, audittag.tag_of(key, *auditlog.entry_fields(record)))

    def scan(self, after_id: int, limit: int) -> list[AuditRecord]:
        state = self._state
        rows = [
            AuditRecord(i, at, entry, *state.tags.get(i, (None, None)), state.refused.get(i))
            for i, (entry, at) in enumerate(state.audit, start=1)
        ]
        return [r for r in rows if r.entry_id > after_id][:limit]

    def entry_ids(self, after_id: int, limit: int) -> list[int]:
        return [r.entry_id for r in self.scan(after_id, limit)]

    def recorded_times(self, indexes: Collection[int]) -> dict[int, datetime]:
        return {
            x.log_index: x.record.recorded_at
            for x in self.logged(0, len(self._state.audit))
            if x.log_index in indexes
        }

    def endorsements(self) -> list[HubKeyEndorsementRow]:
        return sorted(self._state.endorsements, key=lambda e: (e.endorsed_at, e.key_id))

    def add_endorsement(self, row: HubKeyEndorsementRow) -> None:
        if any(e.key_id == row.key_id for e in self._state.endorsements):
            raise Conflict(f"hub key {row.key_id} is endorsed already")
        self._state.endorsements.append(row)

    def log_state(self, *, lock: bool = False) -> LogState:
        return self._state.log_state

    def set_log_state(self, state: LogState) -> None:
        self._state.log_state = state

    def unsequenced(self, limit: int) -> list[AuditRecord]:
        rows = self.scan(0, len(self._state.audit))
        return [
            r
            for r in rows
            if r.entry_id not in self._state.places and r.entry_id not in self._state.refused
        ][:limit]

    def refuse(self, entry_ids: Sequence[int], at: datetime) -> None:
        for entry_id in entry_ids:
            self._state.refused[entry_id] = at

    def assign(self, places: Sequence[tuple[int, int, bytes]]) -> None:
        for entry_id, index, leaf in places:
            self._state.places[entry_id] = (index, leaf)

    def add_checkpoint(self, checkpoint: LogCheckpointRow) -> None:
        if any(c.tree_size == checkpoint.tree_size for c in self._state.checkpoints):
            raise Conflict(f"checkpoint of {checkpoint.tree_size} exists")
        self._state.checkpoints.append(checkpoint)

    def checkpoints(self) -> list[LogCheckpointRow]:
        return sorted(self._state.checkpoints, key=lambda c: c.tree_size)

    def latest_checkpoint(self) -> LogCheckpointRow | None:
        return max(self._state.checkpoints, key=lambda c: c.tree_size, default=None)

    def checkpoint_of(self, tree_size: int) -> LogCheckpointRow | None:
        return next((c for c in self._state.checkpoints if c.tree_size == tree_size), None)

    def logged(self, after_id: int, limit: int) -> list[LoggedRecord]:
        out = []
        for r in self.scan(after_id, limit):
            index, leaf = self._state.places.get(r.entry_id, (None, None))
            out.append(LoggedRecord(index, leaf, r))
        return out

    def placed(self, from_index: int, limit: int) -> list[LoggedRecord]:
        found = [x for x in self.logged(0, len(self._state.audit)) if x.log_index is not None]
        found = [x for x in found if x.log_index is not None and x.log_index >= from_index]
        return sorted(found, key=lambda x: x.log_index or 0)[:limit]

    def leaves(self, size: int) -> list[bytes]:
        return [x.leaf_hash or b"" for x in self.placed(0, size)]

    def add_nodes(self, nodes: Sequence[tuple[int, int, bytes]]) -> None:
        for height, index, node in nodes:
            assert (height, index) not in self._state.log_nodes, "duplicate subtree root"
            self._state.log_nodes[height, index] = node

    def nodes(self, height: int, first: int, end: int) -> list[bytes]:
        if height == 0:
            return [x.leaf_hash or b"" for x in self.placed(first, end - first)]
        found = (self._state.log_nodes.get((height, i)) for i in range(first, end))
        return [n for n in found if n is not None]


class FakeClocks:
    def __init__(self, state: StoreState) -> None:
        self._state = state

    def add(self, clock: CaseClock) -> None:
        assert clock.clock_id not in self._state.clocks, "duplicate clock id"
        self._state.clocks[clock.clock_id] = clock

    def open_for_case(self, case_id: str) -> Sequence[CaseClock]:
        return [
            c
            for c in self._state.clocks.values()
            if c.case_id == case_id and c.state is ClockState.OPEN
        ]

    def due(self, now: datetime, limit: int) -> Sequence[CaseClock]:
        due = [
            c
            for c in self._state.clocks.values()
            if c.state is ClockState.OPEN and c.next_step_at is not None and c.next_step_at <= now
        ]
        return sorted(due, key=lambda c: c.next_step_at or now)[:limit]

    def get(self, clock_id: str, *, lock: bool = False) -> CaseClock | None:
        return self._state.clocks.get(clock_id)

    def log(self, entry: SlaEntry) -> None:
        self._state.sla.append(entry)

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
    ) -> Sequence[CaseClock]:
        found = [
            c
            for c in self._state.clocks.values()
            if (not institution or c.responsible == institution)
            and (not case_id or c.case_id == case_id)
            and (not open_only or c.state is ClockState.OPEN)
            and (not breached_only or c.breached)
            and (not unacknowledged_only or (c.breached and c.acknowledged_at is None))
        ]
        found.sort(key=lambda c: (c.state is not ClockState.OPEN, c.deadline_at, c.clock_id))
        return found[offset : offset + limit]

    def breached_since(self, since: datetime, limit: int) -> Sequence[CaseClock]:
        found = [
            c
            for c in self._state.clocks.values()
            if c.breached
            and (c.deadline_at >= since or (c.stopped_at is not None and c.stopped_at >= since))
        ]
        found.sort(key=lambda c: c.clock_id)
        found.sort(key=lambda c: c.deadline_at, reverse=True)
        return found[:limit]

    def entries(self, clock_ids: Sequence[str]) -> dict[str, list[SlaEntry]]:
        return {cid: [e for e in self._state.sla if e.clock_id == cid] for cid in clock_ids}

    def open_for_cases(self, case_ids: Sequence[str]) -> Sequence[CaseClock]:
        wanted = set(case_ids)
        return [
            c
            for c in self._state.clocks.values()
            if c.case_id in wanted and c.state is ClockState.OPEN
        ]


# ---- unit of work ----------------------------------------------------------------------------


class FakeReports:
    """The outcome figures' rows (hub.service.ports.OutcomeReader) from the cases in memory."""

    def __init__(self, state: StoreState) -> None:
        self._state = state

    def leads_submitted(
        self, start: datetime, end: datetime, institution: str | None
    ) -> list[LeadHistoryRow]:
        return [
            LeadHistoryRow(
                lead.lead_id,
                lead.submitter,
                lead.submitted_at,
                tuple((e.asked_at, e.answered_at) for e in lead.exchanges()),
                lead.decided_at if lead.state in FINAL else None,
                (lead.outcome.value or "dismissed") if lead.state in FINAL else "",
            )
            for lead in self._state.leads.values()
            if start <= lead.submitted_at < end
            and (institution is None or lead.submitter == institution)
        ]

    def reports_received(
        self, start: datetime, end: datetime, institution: str | None
    ) -> list[ReportReceivedRow]:
        return [
            ReportReceivedRow(
                c.case_id,
                c.reporting_institution,
                c.created_at,
                sum(t.amount_fen for t in c.transactions),
            )
            for c in self._state.cases.values()
            if start <= c.created_at < end and institution in (None, c.reporting_institution)
        ]

    def warning_steps(
        self, start: datetime, end: datetime, institution: str | None
    ) -> list[WarningRow]:
        return [
            WarningRow(
                w.warning_id,
                w.addressee,
                w.sent_at,
                w.amount_at_risk_fen,
                w.contact_by,
                w.acknowledged_at,
                w.outcome.value if w.outcome else "",
                w.outcome_at,
                w.outcome_by,
                w.loss_prevented_fen,
            )
            for w in self._state.warnings.values()
            if institution in (None, w.addressee)
            and any(
                at is not None and start <= at < end
                for at in (w.sent_at, w.acknowledged_at, w.outcome_at)
            )
        ]

    def money_answers(
        self, start: datetime, end: datetime, institution: str | None
    ) -> list[MoneyAnswerRow]:
        done = (ExecutionStatus.EXECUTED, ExecutionStatus.PARTIALLY_EXECUTED)
        cases = self._state.cases
        out = []
        for case in cases.values():
            answered = [o for o in case.orders if o.result_status in done and o.answered_at]
            stopped = any(
                o.kind is OrderKind.STOP and o.amount_held_fen > 0 and start <= o.answered_at < end
                for o in answered
                if o.answered_at
            )
            for o in answered:
                assert o.answered_at is not None
                if o.kind is OrderKind.STOP:
                    if not (stopped and o.amount_held_fen > 0):
                        continue
                elif o.kind not in (OrderKind.FREEZE, OrderKind.RETURN) or not (
                    start <= o.answered_at < end
                ):
                    continue
                beneficiary = (
                    cases.get(o.beneficiary_case_id) if o.kind is OrderKind.RETURN else None
                )
                counted_for = (beneficiary or case).reporting_institution
                if institution not in (None, counted_for):
                    continue
                out.append(
                    MoneyAnswerRow(
                        o.order_id,
                        case.case_id,
                        o.kind.value,
                        counted_for,
                        o.answered_at,
                        o.amount_held_fen,
                        o.returned_fen,
                        bool(o.upstream_order_id),
                        (o.account_institution, o.account_number),
                        bool(o.renews_order_id),
                        case.created_at,
                    )
                )
        return out


class FakeUnitOfWork:
    # Typed as the ports (mutable Protocol attributes are invariant); the objects are fakes.
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

    def __init__(self, store: FakeStore, *, read_only: bool) -> None:
        self._store = store
        self.read_only = read_only
        self.committed = False
        self._open = False

    def _bind(self) -> None:
        self._base_version = self._store.version
        self._bind_to(copy.deepcopy(self._store.state))

    def _bind_to(self, state: StoreState) -> None:
        self._state = state
        self.institutions = FakeInstitutions(self._state)
        self.cases = FakeCases(self._state)
        self.rules = FakeRules(self._state)
        self.inbound = FakeInbound(self._state)
        self.outbox = FakeOutbox(self._state)
        self.audit = FakeAudit(self._state)
        self.clocks = FakeClocks(self._state)
        self.distributions = FakeDistributions(self._state)
        self.lists = FakeLists(self._state)
        self.appeals = FakeAppeals(self._state)
        self.leads = FakeLeads(self._state)
        self.warnings = FakeWarnings(self._state)
        self.reports = FakeReports(self._state)

    def __enter__(self) -> Self:
        assert not self._open, "a unit of work is entered once"
        self._open = True
        self._store.opened += 1
        self._bind()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Whatever was not committed is thrown away, as a session rollback would.
        self._open = False
        self._state = StoreState()

    def commit(self) -> None:
        assert self._open, "commit outside the unit of work"
        assert not self.read_only, "commit in a read-only unit of work"
        hook, self._store.before_commit = self._store.before_commit, None
        if hook is not None:
            hook()
        if self._store.fail_commits > 0:
            self._store.fail_commits -= 1
            raise Conflict("injected commit failure")
        if self._store.version != self._base_version:
            # Stricter than row locks, never weaker: no lost update can slip through.
            raise Conflict("another unit of work committed first")
        # Publish a copy, so objects the caller still holds cannot change committed state.
        self._store.state = copy.deepcopy(self._state)
        self._store.version += 1
        self._store.commits += 1
        self._base_version = self._store.version
        self.committed = True

    def rollback(self) -> None:
        assert self._open, "rollback outside the unit of work"
        self._bind()

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        assert self._open, "savepoint outside the unit of work"
        saved = copy.deepcopy(self._state)
        try:
            yield
        except BaseException:
            self._bind_to(saved)
            raise


class FakeStore:
    """The UnitOfWorkFactory, plus read access to the committed state for assertions."""

    def __init__(self) -> None:
        self.state = StoreState()
        self.version = 0
        self.commits = 0
        self.opened = 0
        # Test hooks: run once just before the next commit; make the next n commits fail.
        self.before_commit: Callable[[], None] | None = None
        self.fail_commits = 0

    def __call__(self, *, read_only: bool = False) -> FakeUnitOfWork:
        return FakeUnitOfWork(self, read_only=read_only)

    # ---- committed state, for assertions ------------------------------------------------------

    def case(self, case_id: str) -> Case:
        return self.state.cases[case_id]

    @property
    def cases(self) -> list[Case]:
        return list(self.state.cases.values())

    @property
    def deliveries(self) -> list[Delivery]:
        return list(self.state.deliveries)

    def deliveries_to(self, recipient: str) -> list[Delivery]:
        return [d for d in self.state.deliveries if d.recipient == recipient]

    @property
    def audit(self) -> list[AuditEntry]:
        return [entry for entry, _ in self.state.audit]

    def audit_of(self, kind: str) -> list[AuditEntry]:
        return [entry for entry, _ in self.state.audit if entry.kind == kind]

    @property
    def inbound(self) -> dict[tuple[str, str], InboundRecord]:
        return {key: record for key, (record, _) in self.state.inbound.items()}

    def fingerprint(self) -> str:
        """Everything committed but the audit log, as text: what a refused command must not
        change. (The domain classes compare by identity, their reprs show every field.)"""
        state = copy.copy(self.state)
        state.audit = []
        state.tags = {}  # the hub's tags on audit entries are part of the audit log
        # A set's order is its hash table's, which a copy made on rollback may not keep.
        state.lead_accounts = {k: sorted(v) for k, v in state.lead_accounts.items()}  # type: ignore[misc]
        return repr(state)


class FakeNotifier:
    """Records every notify call and what was committed for each recipient at that moment."""

    def __init__(self, store: FakeStore | None = None) -> None:
        self.store = store
        self.calls: list[frozenset[str]] = []
        # Per call: recipient -> number of committed, unacknowledged deliveries at call time.
        self.committed_at_call: list[dict[str, int]] = []

    def notify(self, recipients: Iterable[str], deliveries: Sequence[PendingDelivery] = ()) -> None:
        wanted = frozenset(recipients)
        self.calls.append(wanted)
        if self.store is not None:
            self.committed_at_call.append(
                {r: sum(1 for d in self.store.state.deliveries if d.recipient == r) for r in wanted}
            )

    @property
    def recipients(self) -> set[str]:
        return set().union(*self.calls) if self.calls else set()


if TYPE_CHECKING:
    # The fakes satisfy the ports' Protocols (checked by mypy, free at run time).
    _store: UnitOfWorkFactory = FakeStore()
    _uow: UnitOfWork = FakeUnitOfWork(FakeStore(), read_only=False)
    _institutions: InstitutionRepository = FakeInstitutions(StoreState())
    _cases: CaseRepository = FakeCases(StoreState())
    _rules: RuleRepository = FakeRules(StoreState())
    _inbound: InboundRepository = FakeInbound(StoreState())
    _outbox: Outbox = FakeOutbox(StoreState())
    _audit: AuditLog = FakeAudit(StoreState())
    _notifier: Notifier = FakeNotifier()
