"""WarningService (proto/stophub/v1/warning.proto): warnings (预警劝阻) sent by the centre to the
member that keeps a customer's account, or by a member to the centre; acknowledged and closed
with an outcome by their addressee within the policy's clocks; regraded by the centre
(docs/warnings.md). Raising one, its clocks and its notices are in hub/service/warnings.py,
which other commands use too.
"""

from __future__ import annotations

from google.protobuf.message import Message

from hub.domain.errors import InvalidArgument, NotFound, PermissionDenied
from hub.domain.warnings import ACKNOWLEDGED, OUTCOME, Outcome, Warning
from hub.domain.wording import yuan
from hub.service.commands.case import create_report
from hub.service.paging import MAX_PAGE_SIZE, decode_time_key, encode_token, page_size
from hub.service.permissions import Access
from hub.service.pipeline import Command, Context
from hub.service.warnings import (
    OUTCOMES_BY_NUMBER,
    STATES_BY_NUMBER,
    facts_from_proto,
    grade_of,
    raise_warning,
    restart_contact_clock,
    stop_clocks,
    tell,
    warning_to_proto,
)
from stophub.v1 import case_pb2, warning_pb2


def send_warning(ctx: Context, body: warning_pb2.SendWarningBody) -> Message:
    warning = raise_warning(ctx, facts_from_proto(body), centre=body.centre.strip())
    return warning_to_proto(warning)


def _readable(ctx: Context, warning_id: str, *, lock: bool = False) -> Warning:
    """The warning, if the caller may see it: a bank or payment institution only its own (as
    sender or addressee); another's is not confirmed to exist."""
    warning_id = warning_id.strip()
    if not warning_id:
        raise InvalidArgument("warning_id", "is required")
    warning = ctx.uow.warnings.get(warning_id, lock=lock)
    if warning is None or (
        ctx.access is Access.OWN and ctx.sender.code not in (warning.sender, warning.addressee)
    ):
        raise NotFound("WARNING_NOT_FOUND", f"no warning {warning_id!r} of {ctx.sender.code}")
    return warning


def _addressed(ctx: Context, warning_id: str) -> Warning:
    """The warning, locked, if the caller is its addressee."""
    warning = _readable(ctx, warning_id, lock=True)
    if warning.addressee != ctx.sender.code:
        raise PermissionDenied(
            "NOT_ADDRESSEE",
            f"warning {warning.warning_id} is addressed to {warning.addressee}; only the "
            f"addressee acknowledges it and reports its outcome, not {ctx.sender.code}",
        )
    ctx.accept(ctx.command, warning.warning_id)
    return warning


def acknowledge_warning(ctx: Context, body: warning_pb2.AcknowledgeWarningBody) -> Message:
    warning = _addressed(ctx, body.warning_id)
    warning.acknowledge(body.note, ctx.now)
    stop_clocks(ctx, warning, ACKNOWLEDGED)
    tell(
        ctx,
        [warning.sender],
        warning,
        f"warning {warning.warning_id} acknowledged by {warning.addressee}: contact attempted",
    )
    return warning_to_proto(warning)


def report_warning_outcome(ctx: Context, body: warning_pb2.ReportWarningOutcomeBody) -> Message:
    warning = _addressed(ctx, body.warning_id)
    outcome = OUTCOMES_BY_NUMBER.get(body.outcome)
    if outcome is None:
        raise InvalidArgument(
            "outcome",
            "REACHED_DISSUADED, REACHED_NOT_DISSUADED, NOT_REACHED or ALREADY_LOST",
        )
    lost = outcome is Outcome.ALREADY_LOST
    has_report = body.HasField("report")
    if has_report and not lost:
        raise InvalidArgument("report", "only an ALREADY_LOST outcome carries a report")
    keeps_accounts = ctx.sender.kind.keeps_accounts
    if lost and keeps_accounts and not has_report:
        raise InvalidArgument(
            "report",
            "is required with ALREADY_LOST: the victim and the transactions, as for "
            "CreateReport; the hub opens the case from it",
        )
    if lost and not keeps_accounts and has_report:
        raise InvalidArgument(
            "report",
            "the centre reports no loss: the institution that keeps the customer's account "
            "reports it with CreateReport",
        )
    # Checked before the case is opened, so a refused outcome opens nothing.
    warning.report_outcome(outcome, body.loss_prevented_fen, body.text, ctx.now, ctx.message_id)
    if lost and has_report:
        warning.case_id = _open_case(ctx, body.report)
    stop_clocks(ctx, warning, OUTCOME)
    what = outcome.value.replace("_", " ")
    tell(
        ctx,
        [warning.sender],
        warning,
        f"warning {warning.warning_id} closed by {warning.addressee}: {what}"
        + (f", {yuan(warning.loss_prevented_fen)} prevented" if warning.loss_prevented_fen else "")
        + (f"; case {warning.case_id} opened" if warning.case_id else ""),
    )
    return warning_to_proto(warning)


def _open_case(ctx: Context, report: case_pb2.Report) -> str:
    """The case of an ALREADY_LOST outcome, opened from its signed message as CreateReport
    opens one: the same checks (fields named under `report.`), clocks and notices."""
    try:
        case = create_report(ctx, report)
    except InvalidArgument as err:
        raise InvalidArgument(
            f"report.{err.field}", err.message.removeprefix(f"{err.field}: "), err.reason
        ) from err
    assert isinstance(case, case_pb2.Case)
    return case.case_id


def get_warning(ctx: Context, body: warning_pb2.GetWarningBody) -> Message:
    return warning_to_proto(_readable(ctx, body.warning_id))


def list_warnings(ctx: Context, body: warning_pb2.ListWarningsBody) -> Message:
    """Warnings newest first: the centre, the regulator and auditors all of them, a bank or
    payment institution those it sent or is addressed (naming another finds none)."""
    if not 0 <= body.page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"must be 0 (for 50) to {MAX_PAGE_SIZE}")
    size = page_size(body.page_size)
    state = STATES_BY_NUMBER.get(body.state)
    if body.state and state is None:
        raise InvalidArgument("state", f"unknown warning state {body.state}")
    after = decode_time_key(body.page_token)
    party = body.institution_code.strip() or None
    if ctx.access is Access.OWN:
        if party is not None and party != ctx.sender.code:
            return warning_pb2.WarningList()
        party = ctx.sender.code
    found = ctx.uow.warnings.search(
        state=state, party=party, open_only=body.open_only, limit=size + 1, after=after
    )
    page = list(found[:size])
    result = warning_pb2.WarningList(warnings=[warning_to_proto(w) for w in page])
    if len(found) > size:
        last = page[-1]
        result.next_page_token = encode_token([last.sent_at.isoformat(), last.warning_id])
    return result


def set_warning_grade(ctx: Context, body: warning_pb2.SetWarningGradeBody) -> Message:
    name = body.name.strip()
    warning_id = name.removeprefix("warnings/")
    if not warning_id or "/" in warning_id:
        raise InvalidArgument("name", "write warnings/{warning_id}")
    grade = grade_of(body.grade)
    warning = ctx.uow.warnings.get(warning_id, lock=True)
    if warning is None:
        raise NotFound("WARNING_NOT_FOUND", f"no warning {warning_id!r}")
    ctx.accept(ctx.command, warning.warning_id)
    old = warning.grade
    warning.regrade(grade, body.reason, ctx.now)
    restart_contact_clock(ctx, warning, old)
    recipients = sorted({warning.sender, warning.addressee} - {ctx.sender.code})
    tell(
        ctx,
        recipients,
        warning,
        f"warning {warning.warning_id} regraded {old.value} to {grade.value} by "
        f"{ctx.sender.code}: {warning.grade_reason}",
    )
    return warning_to_proto(warning)


SEND_WARNING = Command("SendWarning", warning_pb2.SendWarningBody, send_warning)
ACKNOWLEDGE_WARNING = Command(
    "AcknowledgeWarning", warning_pb2.AcknowledgeWarningBody, acknowledge_warning
)
REPORT_WARNING_OUTCOME = Command(
    "ReportWarningOutcome", warning_pb2.ReportWarningOutcomeBody, report_warning_outcome
)
GET_WARNING = Command("GetWarning", warning_pb2.GetWarningBody, get_warning, mutating=False)
LIST_WARNINGS = Command("ListWarnings", warning_pb2.ListWarningsBody, list_warnings, mutating=False)
SET_WARNING_GRADE = Command("SetWarningGrade", warning_pb2.SetWarningGradeBody, set_warning_grade)
