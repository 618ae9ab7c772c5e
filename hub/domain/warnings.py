"""Warnings (预警劝阻): a customer about to pay a fraudster, told to the institution that can
reach them before the money leaves. The anti-fraud centre warns the member that keeps the
customer's account; a member warns the centre of its own customer at risk elsewhere. The
addressee acknowledges (it is trying to reach the customer) and reports the outcome, each
within a clock of the policy (hub/system/policy.toml: the contact clock's window follows the
grade).

Plain Python. Which clocks run and what an "already lost" outcome opens is the service's
business (hub/service/commands/warning.py); the warning records it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from hub.domain.cases import MAX_AMOUNT_FEN
from hub.domain.errors import FailedPrecondition, InvalidArgument

MAX_TEXT = 4000
MAX_NOTE = 2000
# Clock triggers (hub/domain/clocks.py names them with the case events): the contact clock
# starts on "warning.sent.<grade>", the outcome clock on "warning.sent".
SENT = "warning.sent"
ACKNOWLEDGED = "warning.acknowledged"
OUTCOME = "warning.outcome"
REGRADED = "warning.regraded"


class Grade(StrEnum):
    """The three colours, and none (stophub.v1.Grade)."""

    UNGRADED = "ungraded"
    GREEN = "green"
    YELLOW = "yellow"
    RED = "red"

    @property
    def rank(self) -> int:
        """Queue order: red first, ungraded last."""
        return {Grade.RED: 0, Grade.YELLOW: 1, Grade.GREEN: 2, Grade.UNGRADED: 3}[self]

    @property
    def trigger(self) -> str:
        return f"{SENT}.{self.value}"


class WarningState(StrEnum):
    SENT = "sent"
    ACKNOWLEDGED = "acknowledged"
    CLOSED = "closed"


class Outcome(StrEnum):
    REACHED_DISSUADED = "reached_dissuaded"
    REACHED_NOT_DISSUADED = "reached_not_dissuaded"
    NOT_REACHED = "not_reached"
    ALREADY_LOST = "already_lost"


def _text(name: str, text: str, limit: int) -> str:
    if len(text) > limit:
        raise InvalidArgument(name, f"at most {limit:,} characters; keep the rest on file")
    return text.strip()


@dataclass(eq=False)
class Warning:
    warning_id: str
    sender: str
    addressee: str
    account_institution: str
    account_number: str
    holder_name: str
    fraud_type: str  # "fake_investment", ... as cases store it; "" when unknown
    counterparty_institution: str
    counterparty_account: str
    counterparty_name: str
    amount_at_risk_fen: int
    grade: Grade
    text: str
    sent_at: datetime
    message_id: str
    contact_by: datetime | None = None
    outcome_by: datetime | None = None
    state: WarningState = WarningState.SENT
    acknowledged_at: datetime | None = None
    acknowledge_note: str = ""
    outcome: Outcome | None = None
    outcome_at: datetime | None = None
    loss_prevented_fen: int = 0
    outcome_text: str = ""
    outcome_message_id: str = ""
    case_id: str = ""
    grade_reason: str = ""
    graded_at: datetime | None = None
    # The lead whose triage raised it (docs/leads.md); "" for a SendWarning.
    lead_id: str = ""

    @staticmethod
    def send(
        warning_id: str,
        sender: str,
        addressee: str,
        *,
        account: tuple[str, str, str],
        fraud_type: str,
        counterparty: tuple[str, str, str],
        amount_at_risk_fen: int,
        grade: Grade,
        text: str,
        now: datetime,
        message_id: str,
    ) -> Warning:
        if amount_at_risk_fen <= 0:
            raise InvalidArgument(
                "amount_at_risk_fen",
                f"must be greater than zero (got {amount_at_risk_fen}): give the amount the "
                "customer is about to pay, or your best estimate",
            )
        if amount_at_risk_fen > MAX_AMOUNT_FEN:
            # As for a report's amounts: beyond any plausible amount is a unit error, and the
            # outcome figures' int64 sums stay far from overflowing.
            raise InvalidArgument(
                "amount_at_risk_fen",
                f"{amount_at_risk_fen} fen is beyond any plausible amount; amounts are in fen",
            )
        return Warning(
            warning_id,
            sender,
            addressee,
            *account,
            fraud_type,
            *counterparty,
            amount_at_risk_fen,
            grade,
            _text("text", text, MAX_TEXT),
            now,
            message_id,
        )

    @property
    def is_open(self) -> bool:
        return self.state is not WarningState.CLOSED

    def _still_open(self) -> None:
        if self.state is WarningState.CLOSED:
            assert self.outcome is not None and self.outcome_at is not None
            raise FailedPrecondition(
                "WARNING_CLOSED",
                f"warning {self.warning_id} was closed with outcome {self.outcome.value} on "
                f"{self.outcome_at.isoformat()}; nothing more is accepted about it",
            )

    def acknowledge(self, note: str, now: datetime) -> None:
        self._still_open()
        if self.state is WarningState.ACKNOWLEDGED:
            assert self.acknowledged_at is not None
            raise FailedPrecondition(
                "WARNING_ACKNOWLEDGED",
                f"warning {self.warning_id} was already acknowledged on "
                f"{self.acknowledged_at.isoformat()}; report its outcome next",
            )
        self.acknowledge_note = _text("note", note, MAX_NOTE)
        self.acknowledged_at = now
        self.state = WarningState.ACKNOWLEDGED

    def report_outcome(
        self, outcome: Outcome, loss_prevented_fen: int, text: str, now: datetime, message_id: str
    ) -> None:
        self._still_open()
        if loss_prevented_fen < 0:
            raise InvalidArgument("loss_prevented_fen", "must not be negative")
        if loss_prevented_fen > self.amount_at_risk_fen:
            raise InvalidArgument(
                "loss_prevented_fen",
                f"{loss_prevented_fen} fen is more than the warning's amount at risk "
                f"({self.amount_at_risk_fen} fen)",
                reason="PREVENTED_ABOVE_AT_RISK",
            )
        if outcome is Outcome.NOT_REACHED and loss_prevented_fen:
            raise InvalidArgument(
                "loss_prevented_fen", "must be 0 when the customer was not reached"
            )
        self.outcome_text = _text("text", text, MAX_TEXT)
        self.outcome = outcome
        self.outcome_at = now
        self.outcome_message_id = message_id
        self.loss_prevented_fen = loss_prevented_fen
        self.state = WarningState.CLOSED

    def regrade(self, grade: Grade, reason: str, now: datetime) -> None:
        self._still_open()
        reason = _text("reason", reason, MAX_NOTE)
        if not reason:
            raise InvalidArgument("reason", "give the reason: the sender and addressee are told it")
        if grade is self.grade:
            raise FailedPrecondition(
                "GRADE_UNCHANGED", f"warning {self.warning_id} is already graded {grade.value}"
            )
        self.grade = grade
        self.grade_reason = reason
        self.graded_at = now
