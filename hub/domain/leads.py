"""Leads (线索移送): a bank or payment institution hands the anti-fraud centre suspicious
accounts or a transaction pattern from its own monitoring; the centre triages each within the
lead_triage clock: accepts it (a case, a listing, or a warning to another member), asks the
member for more, or dismisses it (docs/leads.md).

Plain Python. What an accepted lead opens or lists is the service's business; the lead records
it. The accounts, transfers and exchanges are kept as JSON in sealed columns (they name
people); the accounts are also indexed, without names, for the links between leads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from hub.domain.cases import (
    AccountRef,
    validate_account,
    validate_amount,
    validate_past,
)
from hub.domain.errors import FailedPrecondition, InvalidArgument
from hub.domain.grades import Grade, grade_of
from hub.domain.institutions import InstitutionKind

MAX_ACCOUNTS = 50
MAX_TRANSACTIONS = 200
MAX_EVIDENCE = 50
MAX_TEXT = 4000
# The queue key of a lead the centre need not act on now: after every waiting one.
NOT_WAITING = datetime(9999, 12, 31, tzinfo=UTC)


class LeadState(StrEnum):
    SUBMITTED = "submitted"
    MORE_REQUESTED = "more_requested"
    ACCEPTED = "accepted"
    DISMISSED = "dismissed"


FINAL = frozenset({LeadState.ACCEPTED, LeadState.DISMISSED})


class LeadOutcome(StrEnum):
    NONE = ""
    CASE_OPENED = "case_opened"
    LISTED = "listed"
    WARNED = "warned"


@dataclass(frozen=True)
class Evidence:
    name: str
    sha256: bytes


@dataclass(frozen=True)
class LeadTransfer:
    at: datetime
    amount_fen: int
    source: AccountRef
    target: AccountRef


@dataclass
class Exchange:
    asked_at: datetime
    asked_by: str
    question: str
    answered_at: datetime | None = None
    answer: str = ""
    evidence: list[Evidence] = field(default_factory=list)


def text(name: str, value: str, *, required: bool, what: str) -> str:
    value = value.strip()
    if required and not value:
        raise InvalidArgument(name, f"is required: {what}")
    if len(value) > MAX_TEXT:
        raise InvalidArgument(name, f"at most {MAX_TEXT} characters; keep the rest on file")
    return value


def validate_evidence(name: str, evidence: Sequence[Evidence]) -> None:
    if len(evidence) > MAX_EVIDENCE:
        raise InvalidArgument(name, f"at most {MAX_EVIDENCE} documents")
    for i, doc in enumerate(evidence):
        if len(doc.sha256) != 32:
            raise InvalidArgument(
                f"{name}[{i}].sha256",
                f"must be the document's SHA-256, 32 bytes (got {len(doc.sha256)})",
            )
        if not doc.name.strip() or len(doc.name) > 200:
            raise InvalidArgument(f"{name}[{i}].name", "name the document (1-200 characters)")


def _account_json(a: AccountRef) -> list[str]:
    return [a.institution_code, a.account_number, a.holder_name]


def _account_of(data: Sequence[str]) -> AccountRef:
    return AccountRef(data[0], data[1], data[2])


def _evidence_json(e: Sequence[Evidence]) -> list[list[str]]:
    return [[d.name.strip(), d.sha256.hex()] for d in e]


def _evidence_of(data: Sequence[Sequence[str]]) -> list[Evidence]:
    return [Evidence(name, bytes.fromhex(digest)) for name, digest in data]


@dataclass(eq=False)
class Lead:
    lead_id: str
    submitter: str
    grade: str
    submitted_grade: str
    grounds: str
    # JSON: [[institution, number, holder], ...]
    accounts_json: str
    # JSON: [[iso time, amount, [from], [to]], ...]
    transactions_json: str
    # JSON: [[name, sha256 hex], ...]
    evidence_json: str
    submitted_at: datetime
    message_id: str
    state: LeadState = LeadState.SUBMITTED
    # The running triage clock (a row of the clocks table whose case_id is this lead's id).
    triage_clock_id: str = ""
    triage_by: datetime | None = None
    outcome: LeadOutcome = LeadOutcome.NONE
    decided_at: datetime | None = None
    decided_by: str = ""
    case_id: str = ""
    list_entry_id: str = ""
    warning_id: str = ""
    reason: str = ""
    # JSON: the exchanges, [[asked iso, by, question, answered iso|null, answer, evidence]]
    exchanges_json: str = "[]"
    # The queue's keys (ListLeads): the grade's rank and when the lead is due, the triage
    # deadline while the centre must act, else far in the future.
    grade_rank: int = 3
    queue_at: datetime = NOT_WAITING

    @staticmethod
    def submit(
        lead_id: str,
        submitter: str,
        *,
        grade: Grade,
        grounds: str,
        accounts: Sequence[AccountRef],
        transfers: Sequence[LeadTransfer],
        evidence: Sequence[Evidence],
        now: datetime,
        message_id: str,
        institutions: Mapping[str, InstitutionKind],
    ) -> Lead:
        grounds = text("grounds", grounds, required=True, what="say why the member suspects them")
        if not accounts and not transfers:
            raise InvalidArgument(
                "accounts", "name at least one suspicious account or one transfer of the pattern"
            )
        if len(accounts) > MAX_ACCOUNTS:
            raise InvalidArgument("accounts", f"at most {MAX_ACCOUNTS} accounts a lead")
        if len(transfers) > MAX_TRANSACTIONS:
            raise InvalidArgument("transactions", f"at most {MAX_TRANSACTIONS} transfers a lead")
        for i, a in enumerate(accounts):
            validate_account(f"accounts[{i}]", a, institutions, need_holder=False)
        for i, t in enumerate(transfers):
            p = f"transactions[{i}]"
            validate_past(f"{p}.transaction_time", t.at, now)
            validate_amount(f"{p}.amount_fen", t.amount_fen)
            validate_account(f"{p}.from_account", t.source, institutions, need_holder=False)
            validate_account(f"{p}.to_account", t.target, institutions, need_holder=False)
        validate_evidence("evidence", evidence)
        lead = Lead(
            lead_id=lead_id,
            submitter=submitter,
            grade=grade.value,
            submitted_grade=grade.value,
            grounds=grounds,
            accounts_json=json.dumps([_account_json(a) for a in accounts]),
            transactions_json=json.dumps(
                [
                    [
                        t.at.isoformat(),
                        t.amount_fen,
                        _account_json(t.source),
                        _account_json(t.target),
                    ]
                    for t in transfers
                ]
            ),
            evidence_json=json.dumps(_evidence_json(evidence)),
            submitted_at=now,
            message_id=message_id,
            grade_rank=grade.rank,
        )
        return lead

    # ---- reading the JSON -------------------------------------------------------------------

    def accounts(self) -> list[AccountRef]:
        return [_account_of(a) for a in json.loads(self.accounts_json)]

    def transfers(self) -> list[LeadTransfer]:
        return [
            LeadTransfer(datetime.fromisoformat(at), amount, _account_of(src), _account_of(dst))
            for at, amount, src, dst in json.loads(self.transactions_json)
        ]

    def evidence(self) -> list[Evidence]:
        return _evidence_of(json.loads(self.evidence_json))

    def exchanges(self) -> list[Exchange]:
        out = []
        for asked, by, question, answered, answer, evidence in json.loads(self.exchanges_json):
            out.append(
                Exchange(
                    datetime.fromisoformat(asked),
                    by,
                    question,
                    datetime.fromisoformat(answered) if answered else None,
                    answer,
                    _evidence_of(evidence),
                )
            )
        return out

    def _set_exchanges(self, exchanges: Sequence[Exchange]) -> None:
        data: list[Any] = [
            [
                e.asked_at.isoformat(),
                e.asked_by,
                e.question,
                e.answered_at.isoformat() if e.answered_at else None,
                e.answer,
                _evidence_json(e.evidence),
            ]
            for e in exchanges
        ]
        self.exchanges_json = json.dumps(data)

    def every_account(self) -> list[AccountRef]:
        """Every account the lead names: its accounts and both ends of each transfer, once."""
        seen: dict[tuple[str, str], AccountRef] = {}
        for a in self.accounts():
            seen.setdefault((a.institution_code, a.account_number), a)
        for t in self.transfers():
            for a in (t.source, t.target):
                seen.setdefault((a.institution_code, a.account_number), a)
        return list(seen.values())

    # ---- the triage -------------------------------------------------------------------------

    def waiting_for_centre(self, clock_id: str, deadline: datetime | None, now: datetime) -> None:
        """The centre must triage it now: by `deadline` when a clock runs (a policy without
        a lead_triage clock queues it by when it arrived)."""
        self.state = LeadState.SUBMITTED
        self.triage_clock_id = clock_id
        self.triage_by = deadline
        self.queue_at = deadline or now

    def _not_waiting(self) -> None:
        self.triage_clock_id = ""
        self.triage_by = None
        self.queue_at = NOT_WAITING

    def check_open(self, action: str) -> None:
        if self.state in FINAL:
            raise FailedPrecondition(
                "LEAD_CLOSED",
                f"lead {self.lead_id} was already {self.state.value} by {self.decided_by} on "
                f"{self.decided_at.isoformat() if self.decided_at else '?'}; it cannot be "
                f"{action}",
            )

    def check_triageable(self) -> None:
        self.check_open("triaged again")
        if self.state is LeadState.MORE_REQUESTED:
            raise FailedPrecondition(
                "LEAD_WAITING_FOR_MEMBER",
                f"lead {self.lead_id} waits for {self.submitter}'s answer to the centre's "
                "question (AddLeadInformation); triage it once answered",
            )

    def accept(
        self,
        outcome: LeadOutcome,
        by: str,
        now: datetime,
        *,
        case_id: str = "",
        list_entry_id: str = "",
        reason: str = "",
        warning_id: str = "",
    ) -> None:
        self.check_triageable()
        self.state = LeadState.ACCEPTED
        self.outcome = outcome
        self.decided_by, self.decided_at = by, now
        self.case_id, self.list_entry_id, self.reason = case_id, list_entry_id, reason
        self.warning_id = warning_id
        self._not_waiting()

    def dismiss(self, by: str, reason: str, now: datetime) -> None:
        self.check_triageable()
        self.reason = text("dismiss.reason", reason, required=True, what="the member is told it")
        self.state = LeadState.DISMISSED
        self.decided_by, self.decided_at = by, now
        self._not_waiting()

    def ask(self, by: str, question: str, now: datetime) -> None:
        self.check_triageable()
        question = text(
            "ask_for_more.question", question, required=True, what="what the centre needs"
        )
        self.state = LeadState.MORE_REQUESTED
        self._set_exchanges([*self.exchanges(), Exchange(now, by, question)])
        self._not_waiting()

    def answer(self, answer: str, evidence: Sequence[Evidence], now: datetime) -> None:
        """The member answers the open question; the lead waits for the centre again (the
        caller starts a new triage clock). Whose lead it is, the caller settled when it read
        it: another member's is LEAD_NOT_FOUND."""
        self.check_open("answered")
        if self.state is not LeadState.MORE_REQUESTED:
            raise FailedPrecondition(
                "NO_QUESTION_OPEN",
                f"lead {self.lead_id} has no question of the centre waiting for an answer "
                f"(it is {self.state.value})",
            )
        answer = text("answer", answer, required=True, what="answer the centre's question")
        validate_evidence("evidence", evidence)
        exchanges = self.exchanges()
        last = exchanges[-1]
        last.answered_at, last.answer, last.evidence = now, answer, list(evidence)
        self._set_exchanges(exchanges)

    def regrade(self, grade: Grade) -> str:
        """Change the grade; returns the old one's label."""
        self.check_open("regraded")
        before = grade_of(self.grade).label
        self.grade = grade.value
        self.grade_rank = grade.rank
        return before
