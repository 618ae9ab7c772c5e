"""LeadService (proto/stophub/v1/lead.proto): leads (线索移送) handed to the anti-fraud centre by
banks and payment institutions, triaged by the centre within the lead_triage clock
(docs/leads.md).

Accepting a lead does its consequence in the same transaction: a case opened in the member's
name (as CreateReport would), an account of the lead listed (as PublishListEntry would), or
the member that keeps one of its accounts warned (as the centre's SendWarning would).
"""

from __future__ import annotations

import secrets
from datetime import datetime

from google.protobuf.message import Message

from hub.domain.blacklist import Subject
from hub.domain.cases import AccountRef, Case
from hub.domain.errors import InvalidArgument, NotFound
from hub.domain.grades import Grade, grade_of
from hub.domain.leads import Evidence, Lead, LeadOutcome, LeadState, LeadTransfer, text
from hub.domain.trail import accounts_of
from hub.domain.warnings import Grade as WarningGrade
from hub.domain.warnings import Warning
from hub.domain.wording import mask
from hub.service import wire
from hub.service.casework import link_cases
from hub.service.clocks import start_lead_clocks, stop_lead_clocks
from hub.service.commands.blacklist import publish
from hub.service.commands.case import new_case_id
from hub.service.lists import BASIS, record_to_proto, require_key
from hub.service.paging import MAX_PAGE_SIZE, decode_token, encode_token, page_size
from hub.service.permissions import Access
from hub.service.pipeline import Command, Context
from hub.service.ports import AuditEntry, LeadQuery
from hub.service.warnings import WarningFacts, raise_warning
from stophub.v1 import account_pb2, case_pb2, delivery_pb2, lead_pb2

# Links named on a lead (GetLead, the centre's notice).
MAX_LINKS = 10

_STATE_PB = {
    LeadState.SUBMITTED: lead_pb2.LEAD_STATE_SUBMITTED,
    LeadState.MORE_REQUESTED: lead_pb2.LEAD_STATE_MORE_REQUESTED,
    LeadState.ACCEPTED: lead_pb2.LEAD_STATE_ACCEPTED,
    LeadState.DISMISSED: lead_pb2.LEAD_STATE_DISMISSED,
}
_STATE_BY_NUMBER = {number: state for state, number in _STATE_PB.items()}
_OUTCOME_PB = {
    LeadOutcome.NONE: lead_pb2.LEAD_OUTCOME_UNSPECIFIED,
    LeadOutcome.CASE_OPENED: lead_pb2.LEAD_OUTCOME_CASE_OPENED,
    LeadOutcome.LISTED: lead_pb2.LEAD_OUTCOME_LISTED,
    LeadOutcome.WARNED: lead_pb2.LEAD_OUTCOME_WARNED,
}


def new_lead_id(now: datetime) -> str:
    return f"L{now:%Y%m%d}-{secrets.token_hex(4).upper()}"


def _evidence_pb(evidence: list[Evidence]) -> list[lead_pb2.LeadEvidence]:
    return [lead_pb2.LeadEvidence(name=e.name, sha256=e.sha256) for e in evidence]


def lead_to_proto(lead: Lead) -> lead_pb2.Lead:
    pb = lead_pb2.Lead(
        name=lead.lead_id,
        submitter=lead.submitter,
        state=_STATE_PB[lead.state],
        grade=wire.grade_to_proto(lead.grade),  # type: ignore[arg-type]
        submitted_grade=wire.grade_to_proto(lead.submitted_grade),  # type: ignore[arg-type]
        grounds=lead.grounds,
        accounts=[wire.account_ref_to_proto(a) for a in lead.accounts()],
        evidence=_evidence_pb(lead.evidence()),
        submit_time=wire.ts(lead.submitted_at),
        triage_by_time=wire.ts(lead.triage_by),
        triage_clock_id=lead.triage_clock_id,
        outcome=_OUTCOME_PB[lead.outcome],
        decision_time=wire.ts(lead.decided_at),
        decided_by=lead.decided_by,
        case_id=lead.case_id,
        list_entry_id=lead.list_entry_id,
        reason=lead.reason,
        warning_id=lead.warning_id,
    )
    for t in lead.transfers():
        pb.transactions.add(
            transaction_time=wire.ts(t.at),
            amount_fen=t.amount_fen,
            from_account=wire.account_ref_to_proto(t.source),
            to_account=wire.account_ref_to_proto(t.target),
        )
    for e in lead.exchanges():
        pb.exchanges.add(
            ask_time=wire.ts(e.asked_at),
            asked_by=e.asked_by,
            question=e.question,
            answer_time=wire.ts(e.answered_at),
            answer=e.answer,
            evidence=_evidence_pb(e.evidence),
        )
    return pb


def _keys(lead: Lead) -> set[tuple[str, str]]:
    return {(a.institution_code, a.account_number) for a in lead.every_account()}


def _with_links(ctx: Context, lead: Lead) -> lead_pb2.Lead:
    pb = lead_to_proto(lead)
    for other, submitter, institution, number in ctx.uow.leads.linked(
        lead.lead_id, _keys(lead), MAX_LINKS
    ):
        pb.linked_leads.add(
            name=other,
            submitter=submitter,
            account=account_pb2.AccountRef(institution_code=institution, account_number=number),
        )
    return pb


def evidence_of(items: object, name: str) -> list[Evidence]:
    return [Evidence(e.name, bytes(e.sha256)) for e in items]  # type: ignore[attr-defined]


def transfers_of(body: lead_pb2.SubmitLeadBody) -> list[LeadTransfer]:
    out = []
    for i, t in enumerate(body.transactions):
        at = wire.from_ts(t, "transaction_time", f"transactions[{i}].transaction_time")
        assert at is not None
        out.append(
            LeadTransfer(
                at,
                t.amount_fen,
                wire.account_from_proto(t.from_account),
                wire.account_from_proto(t.to_account),
            )
        )
    return out


def _audit(ctx: Context, lead: Lead, kind: str, summary: str) -> None:
    """A lead's step in the audit log, under the lead's id where a case's steps carry the
    case's (docs/leads.md)."""
    ctx.uow.audit.append(
        AuditEntry(
            kind="transition",
            actor=ctx.sender.code,
            message_id=ctx.message_id,
            detail=f"{kind}: {summary}",
            case_id=lead.lead_id,
        ),
        ctx.now,
    )


def _wait_for_centre(ctx: Context, lead: Lead) -> None:
    clocks = start_lead_clocks(
        ctx.uow,
        lead.lead_id,
        lead.grade,
        ctx.now,
        policy=ctx.hub.clock_policy,
        calendar=ctx.hub.calendar,
        centres=ctx.centres(),
    )
    if clocks:
        lead.waiting_for_centre(clocks[0].clock_id, clocks[0].deadline_at, ctx.now)
    else:
        lead.waiting_for_centre("", None, ctx.now)


def _tell_member(ctx: Context, lead: Lead, summary: str) -> None:
    ctx.deliver(
        lead.submitter,
        delivery_pb2.Notice(
            kind=delivery_pb2.NOTICE_KIND_LEAD_TRIAGED,
            case_id=lead.case_id,
            origin=ctx.envelope,
            summary=summary,
            lead=lead_to_proto(lead),
        ),
    )


def _tell_centres(ctx: Context, lead: Lead, summary: str) -> None:
    ctx.deliver_to(
        ctx.centres(),
        delivery_pb2.Notice(
            kind=delivery_pb2.NOTICE_KIND_LEAD_SUBMITTED,
            origin=ctx.envelope,
            summary=summary,
            lead=_with_links(ctx, lead),
        ),
    )


def _due(lead: Lead) -> str:
    if lead.triage_by is None:
        return ""
    return f"; triage by {lead.triage_by.isoformat(timespec='seconds')}"


# ---- SubmitLead --------------------------------------------------------------------------------


def submit_lead(ctx: Context, body: lead_pb2.SubmitLeadBody) -> Message:
    grade = wire.grade_from_proto(body.grade, "grade")
    lead_id = new_lead_id(ctx.now)
    lead = Lead.submit(
        lead_id,
        ctx.sender.code,
        grade=grade,
        grounds=body.grounds,
        accounts=[wire.account_from_proto(a) for a in body.accounts],
        transfers=transfers_of(body),
        evidence=evidence_of(body.evidence, "evidence"),
        now=ctx.now,
        message_id=ctx.message_id,
        institutions=ctx.kinds,
    )
    ctx.accept(ctx.command, lead_id)
    ctx.uow.leads.add(lead, _keys(lead))
    _wait_for_centre(ctx, lead)
    links = ctx.uow.leads.linked(lead.lead_id, _keys(lead), MAX_LINKS)
    linked = ""
    if links:
        named = sorted({f"{mask(number)} at {inst}" for _, _, inst, number in links})
        linked = f"; linked to lead(s) {', '.join(sorted({r[0] for r in links}))} by " + ", ".join(
            named
        )
    summary = (
        f"lead {lead.lead_id} from {lead.submitter} ({grade_of(lead.grade).label}): "
        f"{len(lead.every_account())} account(s){_due(lead)}{linked}"
    )
    _audit(ctx, lead, "lead.submitted", summary)
    _tell_centres(ctx, lead, summary)
    return lead_to_proto(lead)


# ---- TriageLead --------------------------------------------------------------------------------


def _load(ctx: Context, name: str, *, lock: bool) -> Lead:
    lead_id = name.strip()
    if not lead_id:
        raise InvalidArgument("name", "is required: the lead's name (Lead.name)")
    lead = ctx.uow.leads.get(lead_id, lock=lock)
    if lead is None or (ctx.access is Access.OWN and lead.submitter != ctx.sender.code):
        # Another member's lead is not confirmed to exist.
        raise NotFound("LEAD_NOT_FOUND", f"no lead {lead_id!r} of {ctx.sender.code}")
    if lock:
        # The request as received, under the lead's name, before anything it causes.
        ctx.accept(ctx.command, lead.lead_id)
    return lead


def _open_case(ctx: Context, lead: Lead, action: lead_pb2.OpenCaseFromLead) -> Case:
    if not action.HasField("report"):
        raise InvalidArgument("open_case.report", "is required: the case's report")
    report = wire.report_from_proto(action.report)
    case_id = new_case_id(ctx.now)
    ctx.accept(ctx.command, case_id)
    case = Case.open(
        case_id,
        lead.submitter,
        report,
        now=ctx.now,
        message_id=ctx.message_id,
        institutions=ctx.kinds,
    )
    case.grade = lead.grade
    case.record(
        ctx.now,
        "case.from_lead",
        ctx.sender.code,
        f"opened by {ctx.sender.code} from lead {lead.lead_id} of {lead.submitter}",
        message_id=ctx.message_id,
    )
    ctx.uow.cases.add(case)
    ctx.track(case, new=True)
    link_cases(ctx, case, accounts_of(case), announce=True)
    ctx.record_events(case, 0)
    return case


def _list_account(ctx: Context, lead: Lead, action: lead_pb2.ListLeadAccount) -> str:
    key = require_key(ctx.hub.list_key)
    if not action.HasField("account"):
        raise InvalidArgument("list_account.account", "is required: one of the lead's accounts")
    wanted = wire.account_from_proto(action.account)
    if (wanted.institution_code, wanted.account_number) not in _keys(lead):
        raise InvalidArgument(
            "list_account.account",
            f"{mask(wanted.account_number)} at {wanted.institution_code} is not an account of "
            f"lead {lead.lead_id}",
            "NOT_IN_LEAD",
        )
    if not wanted.holder_name:
        raise InvalidArgument("list_account.account.holder_name", "is required: the holder is told")
    basis = BASIS.get(action.basis)
    if basis is None:
        raise InvalidArgument(
            "list_account.basis", "ACCOUNT_TRADER (2 years) or CONVICTED (3 years)"
        )
    reason = text("list_account.reason", action.reason, required=False, what="")
    if not action.source_case_id.strip():
        raise InvalidArgument(
            "list_account.source_case_id", "is required: a listing names the case it comes from"
        )
    subject = Subject.account(wanted.institution_code, wanted.account_number, wanted.holder_name)
    row = publish(
        ctx,
        key,
        subject,
        basis,
        reason or f"from lead {lead.lead_id} of {lead.submitter}",
        action.source_case_id,
    )
    return str(record_to_proto(row).entry.entry_id)


# A lead's grade (hub.domain.grades, docs/grades.md) as a warning's (hub.domain.warnings): the
# same three colours; an ungraded lead sends an ungraded warning.
WARNING_GRADE = {
    Grade.RED: WarningGrade.RED,
    Grade.YELLOW: WarningGrade.YELLOW,
    Grade.GREEN: WarningGrade.GREEN,
    Grade.UNGRADED: WarningGrade.UNGRADED,
}
_FRAUD_NUMBERS = frozenset(v.number for v in case_pb2.FraudType.DESCRIPTOR.values)


def _warn_member(ctx: Context, lead: Lead, action: lead_pb2.WarnFromLead) -> Warning:
    """The centre's warning about one of the lead's accounts, raised in the triage's
    transaction."""
    if not action.HasField("account"):
        raise InvalidArgument("warn_member.account", "is required: one of the lead's accounts")
    wanted = wire.account_from_proto(action.account)
    named = {(a.institution_code, a.account_number): a for a in lead.every_account()}
    known = named.get((wanted.institution_code, wanted.account_number))
    if known is None:
        raise InvalidArgument(
            "warn_member.account",
            f"{mask(wanted.account_number)} at {wanted.institution_code} is not an account of "
            f"lead {lead.lead_id}",
            "NOT_IN_LEAD",
        )
    if action.fraud_type not in _FRAUD_NUMBERS:
        raise InvalidArgument("warn_member.fraud_type", f"unknown fraud type {action.fraud_type}")
    fraud_type = ""
    if action.fraud_type:
        fraud_type = case_pb2.FraudType.Name(action.fraud_type).removeprefix("FRAUD_TYPE_").lower()
    facts = WarningFacts(
        account=AccountRef(
            known.institution_code,
            known.account_number,
            wanted.holder_name or known.holder_name,
        ),
        fraud_type=fraud_type,
        counterparty=(
            wire.account_from_proto(action.counterparty)
            if action.HasField("counterparty")
            else None
        ),
        amount_at_risk_fen=action.amount_at_risk_fen,
        grade=WARNING_GRADE[grade_of(lead.grade)],
        text=action.note,
    )
    try:
        return raise_warning(ctx, facts, lead_id=lead.lead_id)
    except InvalidArgument as e:
        # SendWarning's refusals, named as this body's fields.
        field = "note" if e.field == "text" else e.field
        detail = e.message.removeprefix(f"{e.field}: ")
        raise InvalidArgument(f"warn_member.{field}", detail, e.reason) from None


def triage_lead(ctx: Context, body: lead_pb2.TriageLeadBody) -> Message:
    lead = _load(ctx, body.name, lock=True)
    lead.check_triageable()
    which = body.WhichOneof("action")
    if which is None:
        raise InvalidArgument(
            "action", "give one of open_case, list_account, warn_member, ask_for_more, dismiss"
        )
    by = ctx.sender.code
    if which == "open_case":
        case = _open_case(ctx, lead, body.open_case)
        lead.accept(LeadOutcome.CASE_OPENED, by, ctx.now, case_id=case.case_id)
        summary = f"lead {lead.lead_id} accepted: case {case.case_id} opened from it"
    elif which == "list_account":
        entry_id = _list_account(ctx, lead, body.list_account)
        lead.accept(
            LeadOutcome.LISTED,
            by,
            ctx.now,
            list_entry_id=entry_id,
            reason=body.list_account.reason.strip(),
        )
        summary = f"lead {lead.lead_id} accepted: listed as {entry_id}"
    elif which == "warn_member":
        warning = _warn_member(ctx, lead, body.warn_member)
        lead.accept(LeadOutcome.WARNED, by, ctx.now, warning_id=warning.warning_id)
        summary = (
            f"lead {lead.lead_id} accepted: warning {warning.warning_id} sent to "
            f"{warning.addressee} about {mask(warning.account_number)}"
        )
    elif which == "ask_for_more":
        lead.ask(by, body.ask_for_more.question, ctx.now)
        summary = (
            f"lead {lead.lead_id}: the centre asks for more: {body.ask_for_more.question.strip()}"
        )
    else:
        lead.dismiss(by, body.dismiss.reason, ctx.now)
        summary = f"lead {lead.lead_id} dismissed: {lead.reason}"
    stop_lead_clocks(
        ctx.uow, lead.lead_id, ctx.now, policy=ctx.hub.clock_policy, why="lead.triaged"
    )
    _audit(ctx, lead, "lead.triaged", summary)
    _tell_member(ctx, lead, summary)
    return lead_to_proto(lead)


# ---- AddLeadInformation ------------------------------------------------------------------------


def add_lead_information(ctx: Context, body: lead_pb2.AddLeadInformationBody) -> Message:
    lead = _load(ctx, body.name, lock=True)
    lead.answer(body.answer, evidence_of(body.evidence, "evidence"), ctx.now)
    _wait_for_centre(ctx, lead)
    summary = f"lead {lead.lead_id}: {lead.submitter} answered the centre's question{_due(lead)}"
    _audit(ctx, lead, "lead.submitted", summary)
    _tell_centres(ctx, lead, summary)
    return lead_to_proto(lead)


# ---- SetLeadGrade ------------------------------------------------------------------------------


def set_lead_grade(ctx: Context, body: lead_pb2.SetLeadGradeBody) -> Message:
    grade = wire.grade_from_proto(body.grade, "grade", required=True)
    reason = text("reason", body.reason, required=True, what="say why; the member is told")
    lead = _load(ctx, body.name, lock=True)
    before = lead.regrade(grade)
    summary = (
        f"lead {lead.lead_id} regraded {before} -> {grade.label} by {ctx.sender.code}: {reason}"
    )
    _audit(ctx, lead, "lead.graded", summary)
    _tell_member(ctx, lead, summary)
    return lead_to_proto(lead)


# ---- reading -----------------------------------------------------------------------------------


def get_lead(ctx: Context, body: lead_pb2.GetLeadBody) -> Message:
    lead = _load(ctx, body.name, lock=False)
    if ctx.access is Access.OWN:
        # Which other members handed over leads about the same accounts is the centre's.
        return lead_to_proto(lead)
    return _with_links(ctx, lead)


def list_leads(ctx: Context, body: lead_pb2.ListLeadsBody) -> Message:
    """Leads in the queue's order: grade (red first), then the triage deadline, then name;
    the centre, the regulator and auditors all of them, a member its own."""
    if not 0 <= body.page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"must be 0 (for 50) to {MAX_PAGE_SIZE}")
    size = page_size(body.page_size)
    state = _STATE_BY_NUMBER.get(body.state)
    if body.state and state is None:
        raise InvalidArgument("state", f"unknown lead state {body.state}")
    grade: Grade | None = None
    if body.grade:
        grade = wire.grade_from_proto(body.grade, "grade")
    token = decode_token(body.page_token)
    after = None
    if token is not None:
        try:
            after = (int(token[0]), datetime.fromisoformat(token[1]), str(token[2]))
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            raise InvalidArgument("page_token", "is not a token this hub issued") from exc
    submitter = body.institution.strip() or None
    if ctx.access is Access.OWN:
        if submitter is not None and submitter != ctx.sender.code:
            return lead_pb2.LeadList()
        submitter = ctx.sender.code
    query = LeadQuery(
        state=state, submitter=submitter, grade=grade.value if grade is not None else None
    )
    found = ctx.uow.leads.search(query, size + 1, after)
    page = list(found[:size])
    result = lead_pb2.LeadList(leads=[lead_to_proto(lead) for lead in page])
    if len(found) > size:
        last = page[-1]
        result.next_page_token = encode_token(
            [last.grade_rank, last.queue_at.isoformat(), last.lead_id]
        )
    return result


SUBMIT_LEAD = Command("SubmitLead", lead_pb2.SubmitLeadBody, submit_lead)
TRIAGE_LEAD = Command("TriageLead", lead_pb2.TriageLeadBody, triage_lead)
ADD_LEAD_INFORMATION = Command(
    "AddLeadInformation", lead_pb2.AddLeadInformationBody, add_lead_information
)
SET_LEAD_GRADE = Command("SetLeadGrade", lead_pb2.SetLeadGradeBody, set_lead_grade)
GET_LEAD = Command("GetLead", lead_pb2.GetLeadBody, get_lead, mutating=False)
LIST_LEADS = Command("ListLeads", lead_pb2.ListLeadsBody, list_leads, mutating=False)
