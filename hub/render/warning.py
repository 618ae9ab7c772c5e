"""How warnings look to people (`stophub warning list` and `show`): drawn from their wire form,
so the same for the hub's database and a hub's answer."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from rich.table import Table

from hub.domain.wording import Disclosure, yuan
from hub.render.wording import stamp
from stophub.v1 import case_pb2, grade_pb2, warning_pb2

STATES = {
    warning_pb2.WARNING_STATE_SENT: "sent",
    warning_pb2.WARNING_STATE_ACKNOWLEDGED: "acknowledged",
    warning_pb2.WARNING_STATE_CLOSED: "closed",
}
GRADES = {
    grade_pb2.GRADE_UNSPECIFIED: "ungraded",
    grade_pb2.GRADE_GREEN: "green",
    grade_pb2.GRADE_YELLOW: "yellow",
    grade_pb2.GRADE_RED: "red",
}
# Queue order: red first, ungraded last (grade.proto).
RANK = {grade_pb2.GRADE_RED: 0, grade_pb2.GRADE_YELLOW: 1, grade_pb2.GRADE_GREEN: 2}


def outcome_name(number: int) -> str:
    if not number:
        return ""
    return warning_pb2.WarningOutcome.Name(number).removeprefix("WARNING_OUTCOME_").lower()  # type: ignore[arg-type]


def fraud_name(number: int) -> str:
    if not number:
        return ""
    return case_pb2.FraudType.Name(number).removeprefix("FRAUD_TYPE_").lower()  # type: ignore[arg-type]


def _time(ts: Timestamp) -> datetime | None:
    return ts.ToDatetime(tzinfo=UTC) if ts.seconds or ts.nanos else None


def queue_order(warnings: Sequence[warning_pb2.Warning]) -> list[warning_pb2.Warning]:
    """Open warnings by grade (red first) then contact deadline, then the closed newest first:
    the order a duty desk works them in."""
    open_ = [w for w in warnings if w.state != warning_pb2.WARNING_STATE_CLOSED]
    closed = [w for w in warnings if w.state == warning_pb2.WARNING_STATE_CLOSED]
    open_.sort(key=lambda w: (RANK.get(w.grade, 3), w.contact_by_time.ToNanoseconds()))
    closed.sort(key=lambda w: w.send_time.ToNanoseconds(), reverse=True)
    return open_ + closed


def warnings_table(warnings: Sequence[warning_pb2.Warning], shown: Disclosure) -> Table:
    table = Table(title_justify="left")
    for col in (
        "warning", "grade", "from", "to", "account", "at risk", "state", "contact by",
        "outcome", "prevented",
    ):  # fmt: skip
        table.add_column(col)
    for w in queue_order(warnings):
        table.add_row(
            w.warning_id,
            GRADES.get(w.grade, "?"),
            w.sender,
            w.addressee,
            f"{w.account.institution_code} {shown.account(w.account.account_number)}",
            yuan(w.amount_at_risk_fen),
            STATES.get(w.state, "unspecified"),
            stamp(_time(w.contact_by_time)) or "-",
            outcome_name(w.outcome) or "-",
            yuan(w.loss_prevented_fen) if w.outcome else "-",
        )
    return table


def warning_lines(w: warning_pb2.Warning, shown: Disclosure) -> list[str]:
    """One warning, every field, as `stophub warning show` prints it."""
    other = w.counterparty
    lines = [
        f"warning     {w.warning_id} ({STATES.get(w.state, '?')}, {GRADES.get(w.grade, '?')})",
        f"from        {w.sender} to {w.addressee}, sent {stamp(_time(w.send_time))}",
        f"account     {w.account.institution_code} {shown.account(w.account.account_number)} "
        f"{shown.name(w.account.holder_name)}".rstrip(),
        f"at risk     {yuan(w.amount_at_risk_fen)}"
        + (f", {fraud_name(w.fraud_type)}" if w.fraud_type else ""),
    ]
    if w.lead_id:
        lines.append(f"from lead   {w.lead_id}")
    if other.institution_code or other.account_number:
        lines.append(
            f"paying to   {other.institution_code} {shown.account(other.account_number)} "
            f"{shown.name(other.holder_name)}".rstrip()
        )
    if w.text:
        lines.append(f"text        {shown.text(w.text)}")
    lines.append(
        f"clocks      contact by {stamp(_time(w.contact_by_time)) or '-'}, "
        f"outcome by {stamp(_time(w.outcome_by_time)) or '-'}"
    )
    if w.grade_reason:
        lines.append(f"regraded    {stamp(_time(w.grade_time))}: {shown.text(w.grade_reason)}")
    if w.acknowledge_time.seconds:
        lines.append(
            f"acknowledged {stamp(_time(w.acknowledge_time))}"
            + (f": {shown.text(w.acknowledge_note)}" if w.acknowledge_note else "")
        )
    if w.outcome:
        lines.append(
            f"outcome     {outcome_name(w.outcome)} at {stamp(_time(w.outcome_time))}, "
            f"{yuan(w.loss_prevented_fen)} prevented" + (f", case {w.case_id}" if w.case_id else "")
        )
        if w.outcome_text:
            lines.append(f"            {shown.text(w.outcome_text)}")
    return lines
