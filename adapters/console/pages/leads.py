"""Leads (线索移送, docs/leads.md) at the duty desks: the centre's queue (the hub's order: red
first, then by triage deadline) and a lead's page with its triage (accept by listing an account
it names, ask for more, dismiss) and regrade; a member's form to hand the centre a lead, its
own leads and its answer to the centre's question. Every action is one signed message."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from adapters.console import actions
from adapters.console.actions import Action, Done, FormErrors, Payload, Refusal, register
from adapters.console.pages.centre import (
    BASES,
    CENTRE,
    CODE,
    amount_field,
    short_text,
    take_form,
    text_of,
)
from adapters.console.pages.common import CASE_ID, state_name, ts
from adapters.console.pages.member import (
    FRAUD_TYPES,
    after,
    check_report,
    keepers,
    report_context,
    report_message,
    report_typed,
)
from adapters.console.pages.warnings import GRADES, MEMBERS, grade_name
from adapters.console.web import countdown, desk_of, gettext_for, page, refuse, render, viewer_of
from adapters.sdk import HubClient, HubError, HubSignatureError
from stophub.v1 import account_pb2, lead_pb2

ACCOUNT = re.compile(r"^[0-9A-Za-z-]{4,40}$")
MAX_ACCOUNTS = 50
MAX_GROUNDS = 4000
OPEN = (lead_pb2.LEAD_STATE_SUBMITTED, lead_pb2.LEAD_STATE_MORE_REQUESTED)


def lead_state(lead: lead_pb2.Lead) -> str:
    return state_name(lead_pb2.LeadState, lead.state, "LEAD_STATE_")


def lead_row(lead: lead_pb2.Lead, desk: Any) -> dict[str, Any]:
    deadline = ts(lead.triage_by_time) if lead.state in OPEN else None
    start = ts(lead.submit_time)
    return {
        "lead": lead,
        "state": lead_state(lead),
        "grade": grade_name(lead.grade),
        "deadline": deadline,
        "start": start,
        "clock": countdown(deadline, start, desk.clock.now()),
    }


@page()
async def leads_queue(request: Request) -> Response:
    desk = desk_of(request)
    if not (desk.member or desk.centre):
        return refuse(request, 404, gettext_for(request)("This page is on a duty desk."))
    refusal = None
    found: list[lead_pb2.Lead] = []
    show_all = request.query_params.get("all") == "1"
    try:
        found = await desk.link.call(lambda c: c.list_leads(page_size=200))
    except (HubError, HubSignatureError) as err:
        refusal = Refusal.of(err)
    if not show_all:
        found = [lead for lead in found if lead.state in OPEN]
    # The hub's order already is the queue's (docs/leads.md: red first, then triage deadline).
    return render(
        request,
        "common/leads.html",
        {
            "rows": [lead_row(lead, desk) for lead in found],
            "refusal": refusal,
            "show_all": show_all,
        },
        status=502 if refusal else 200,
    )


# ---- a member hands the centre a lead, and answers its question ---------------------------


def accounts_field(form: Mapping[str, Any], errors: dict[str, str]) -> list[list[str]]:
    """The suspicious accounts, one a line: INSTITUTION/NUMBER and, optionally, the holder."""
    found: list[list[str]] = []
    for number, line in enumerate(text_of(form, "accounts").splitlines(), start=1):
        if not line.strip():
            continue
        ref, _sep, holder = line.strip().partition(" ")
        institution, _slash, account = ref.partition("/")
        if not CODE.match(institution.upper()) or not ACCOUNT.match(account):
            errors["accounts"] = (
                f"Line {number}: write an account as INSTITUTION/NUMBER and the holder, "
                "for example BANKB/6222020000000002 李四."
            )
            return []
        found.append([institution.upper(), account, holder.strip()])
    if not found:
        errors["accounts"] = "Name at least one suspicious account."
    elif len(found) > MAX_ACCOUNTS:
        errors["accounts"] = "At most 50 accounts in one lead."
    return found


def submit_form(form: Mapping[str, Any]) -> Payload:
    errors: dict[str, str] = {}
    accounts = accounts_field(form, errors)
    grade = text_of(form, "grade")
    if grade not in GRADES:
        errors["grade"] = "Choose the grade: red, yellow or green."
    grounds = short_text(
        form, "grounds", errors, required="Say why these accounts are suspect.", limit=MAX_GROUNDS
    )
    if errors:
        raise FormErrors(errors)
    return {"accounts": accounts, "grade": grade, "grounds": grounds}


async def send_submit(client: HubClient, p: Payload) -> Done:
    lead = await client.submit_lead(
        lead_pb2.SubmitLeadBody(
            accounts=[
                account_pb2.AccountRef(institution_code=i, account_number=n, holder_name=h)
                for i, n, h in p["accounts"]
            ],
            grade=GRADES[p["grade"]],
            grounds=p["grounds"],
        )
    )
    return Done(f"lead {lead.name} handed to the centre", f"/leads/{lead.name}")


def answer_form(form: Mapping[str, Any], name: str) -> Payload:
    errors: dict[str, str] = {}
    answer = short_text(
        form, "answer", errors, required="Answer the centre's question.", limit=MAX_GROUNDS
    )
    if errors:
        raise FormErrors(errors)
    return {"name": name, "answer": answer}


async def send_answer(client: HubClient, p: Payload) -> Done:
    lead = await client.add_lead_information(p["name"], p["answer"])
    return Done(f"lead {lead.name}: the centre's question answered", f"/leads/{lead.name}")


# ---- the centre's triage and regrade -------------------------------------------------------


def ask_form(form: Mapping[str, Any], name: str) -> Payload:
    errors: dict[str, str] = {}
    question = short_text(
        form, "question", errors, required="Ask the member what you need.", limit=MAX_GROUNDS
    )
    if errors:
        raise FormErrors(errors)
    return {"name": name, "question": question}


async def send_ask(client: HubClient, p: Payload) -> Done:
    lead = await client.ask_for_more(p["name"], p["question"])
    return Done(f"lead {lead.name}: asked the member for more", f"/leads/{lead.name}")


def dismiss_form(form: Mapping[str, Any], name: str) -> Payload:
    errors: dict[str, str] = {}
    reason = short_text(form, "reason", errors, required="Say why: the member is told.")
    if errors:
        raise FormErrors(errors)
    return {"name": name, "reason": reason}


async def send_dismiss(client: HubClient, p: Payload) -> Done:
    lead = await client.dismiss_lead(p["name"], p["reason"])
    return Done(f"lead {lead.name} dismissed", f"/leads/{lead.name}")


def list_form(form: Mapping[str, Any], name: str) -> Payload:
    errors: dict[str, str] = {}
    ref = text_of(form, "account")
    institution, _sep, rest = ref.partition("/")
    number, _sep2, holder = rest.partition("/")
    if not CODE.match(institution) or not ACCOUNT.match(number):
        errors["account"] = "Choose one of the lead's accounts."
    basis = text_of(form, "basis")
    if basis not in BASES:
        errors["basis"] = "Choose the basis: it sets the term."
    source = text_of(form, "source_case_id")
    if not CASE_ID.match(source):
        errors["source_case_id"] = "Name the case the listing comes from."
    reason = short_text(form, "reason", errors)
    if errors:
        raise FormErrors(errors)
    return {
        "name": name,
        "institution": institution,
        "account": number,
        "holder": holder,
        "basis": basis,
        "source_case_id": source,
        "reason": reason,
    }


async def send_list(client: HubClient, p: Payload) -> Done:
    lead = await client.triage_lead(
        lead_pb2.TriageLeadBody(
            name=p["name"],
            list_account=lead_pb2.ListLeadAccount(
                account=account_pb2.AccountRef(
                    institution_code=p["institution"],
                    account_number=p["account"],
                    holder_name=p["holder"],
                ),
                basis=BASES[p["basis"]],
                source_case_id=p["source_case_id"],
                reason=p["reason"],
            ),
        )
    )
    return Done(
        f"lead {lead.name} accepted: list entry {lead.list_entry_id}",
        f"/leads/{lead.name}",
        p["source_case_id"],
    )


async def send_open_case(client: HubClient, p: Payload) -> Done:
    lead = await client.triage_lead(
        lead_pb2.TriageLeadBody(
            name=p["name"],
            open_case=lead_pb2.OpenCaseFromLead(report=report_message(p["report"], p["submitter"])),
        )
    )
    return Done(
        f"lead {lead.name} accepted: case {lead.case_id} opened",
        f"/cases/{lead.case_id}",
        lead.case_id,
    )


def warn_form(form: Mapping[str, Any], name: str) -> Payload:
    errors: dict[str, str] = {}
    institution, _sep, rest = text_of(form, "account").partition("/")
    number, _sep2, holder = rest.partition("/")
    if not CODE.match(institution) or not ACCOUNT.match(number):
        errors["account"] = "Choose one of the lead's accounts."
    amount = amount_field(form, "amount_at_risk", errors)
    fraud = text_of(form, "fraud_type")
    if fraud and fraud not in dict(FRAUD_TYPES):
        errors["fraud_type"] = "Choose a fraud type from the list."
    note = short_text(form, "note", errors, limit=MAX_GROUNDS)
    if errors:
        raise FormErrors(errors)
    return {
        "name": name,
        "institution": institution,
        "account": number,
        "holder": holder,
        "amount_at_risk_fen": amount,
        "fraud_type": fraud,
        "note": note,
    }


async def send_warn(client: HubClient, p: Payload) -> Done:
    lead = await client.warn_member_from_lead(
        p["name"],
        (p["institution"], p["account"], p["holder"]),
        p["amount_at_risk_fen"],
        note=p["note"],
        fraud_type=dict(FRAUD_TYPES).get(p["fraud_type"], 0),
    )
    return Done(
        f"lead {lead.name} accepted: warning {lead.warning_id} sent to {p['institution']}",
        f"/warnings/{lead.warning_id}",
    )


def grade_form(form: Mapping[str, Any], name: str) -> Payload:
    errors: dict[str, str] = {}
    grade = text_of(form, "grade")
    if grade not in GRADES:
        errors["grade"] = "Choose the grade: red, yellow or green."
    reason = short_text(form, "reason", errors, required="Say why the grade changes.", limit=500)
    if errors:
        raise FormErrors(errors)
    return {"name": name, "grade": grade, "reason": reason}


async def send_grade(client: HubClient, p: Payload) -> Done:
    lead = await client.set_lead_grade(p["name"], GRADES[p["grade"]], p["reason"])
    return Done(f"lead {lead.name} graded {p['grade']}", f"/leads/{lead.name}")


register(
    Action(
        "lead_submit",
        MEMBERS,
        lambda p: f"hand the centre a lead on {len(p['accounts'])} account(s) ({p['grade']})",
        send_submit,
        lambda p: "",
    )
)
register(Action("lead_answer", MEMBERS, lambda p: f"answer on lead {p['name']}", send_answer))
register(Action("lead_ask", CENTRE, lambda p: f"ask for more on lead {p['name']}", send_ask))
register(Action("lead_dismiss", CENTRE, lambda p: f"dismiss lead {p['name']}", send_dismiss))
register(
    Action(
        "lead_list_account",
        CENTRE,
        lambda p: (
            f"accept lead {p['name']}: list account {p['institution']}/{p['account']} "
            f"({p['basis']}, from case {p['source_case_id']})"
        ),
        send_list,
        lambda p: str(p.get("source_case_id", "")),
    )
)
register(
    Action(
        "lead_open_case",
        CENTRE,
        lambda p: f"accept lead {p['name']}: open a case in {p['submitter']}'s name",
        send_open_case,
        lambda p: "",
    )
)
register(
    Action(
        "lead_warn_member",
        CENTRE,
        lambda p: f"accept lead {p['name']}: warn {p['institution']} of account {p['account']}",
        send_warn,
        lambda p: "",
    )
)
register(Action("lead_grade", CENTRE, lambda p: f"grade lead {p['name']} {p['grade']}", send_grade))


# ---- the pages ----------------------------------------------------------------------------


async def lead_page(
    request: Request, context: dict[str, Any] | None = None, status: int = 200
) -> Response:
    desk = desk_of(request)
    name = request.path_params["name"]
    _ = gettext_for(request)
    try:
        lead = await desk.link.call(lambda c: c.get_lead(name))
    except (HubError, HubSignatureError) as err:
        refusal = Refusal.of(err)
        if refusal.status in ("NOT_FOUND", "PERMISSION_DENIED", "INVALID_ARGUMENT"):
            return refuse(request, 404, _("There is no such lead, or this desk may not see it."))
        return render(request, "common/hub_refused.html", {"refusal": refusal}, status=502)
    context = dict(context or {})
    context.setdefault("refusal", None)
    context.setdefault("errors", {})
    context.setdefault("typed", {})
    context.setdefault("acting", "")
    waiting = bool(lead.exchanges) and not lead.exchanges[-1].answer
    return render(
        request,
        "common/lead.html",
        {
            **context,
            "row": lead_row(lead, desk),
            "l": lead,
            "outcome": state_name(lead_pb2.LeadOutcome, lead.outcome, "LEAD_OUTCOME_")
            if lead.outcome
            else "",
            "open": lead.state in OPEN,
            "question_open": waiting,
            "mine": desk.member and lead.submitter == desk.institution,
            "grades": list(GRADES),
            "bases": list(BASES),
            "fraud_types": [n for n, _v in FRAUD_TYPES],
            "ts": ts,
        },
        status=status,
    )


@page()
async def lead_get(request: Request) -> Response:
    return await lead_page(request)


async def act(request: Request, name: str, read: Any, acting: str) -> Response:
    target = request.path_params.get("name", "")

    async def again(context: dict[str, Any], status: int) -> Response:
        if target:
            return await lead_page(request, context, status)
        new = {"errors": {}, "refusal": None, **context, "grades": list(GRADES)}
        return render(request, "member/lead_new.html", new, status=status)

    return await take_form(request, name, read, acting, target, again)


def member_desk(request: Request) -> Response | None:
    if desk_of(request).member:
        return None
    _ = gettext_for(request)
    return refuse(request, 404, _("This page is on a bank's or payment institution's console."))


def centre_desk(request: Request) -> Response | None:
    if desk_of(request).centre:
        return None
    return refuse(request, 404, gettext_for(request)("This page is the centre's desk."))


@page()
async def lead_new(request: Request) -> Response:
    if (refused := member_desk(request)) is not None:
        return refused
    return render(
        request,
        "member/lead_new.html",
        {"typed": {"grade": "yellow"}, "errors": {}, "refusal": None, "grades": list(GRADES)},
    )


@page(act=True)
async def lead_submit(request: Request) -> Response:
    if (refused := member_desk(request)) is not None:
        return refused
    return await act(request, "lead_submit", submit_form, "submit")


@page(act=True)
async def lead_answer(request: Request) -> Response:
    if (refused := member_desk(request)) is not None:
        return refused
    return await act(request, "lead_answer", answer_form, "answer")


@page(act=True)
async def lead_ask(request: Request) -> Response:
    if (refused := centre_desk(request)) is not None:
        return refused
    return await act(request, "lead_ask", ask_form, "ask")


@page(act=True)
async def lead_dismiss(request: Request) -> Response:
    if (refused := centre_desk(request)) is not None:
        return refused
    return await act(request, "lead_dismiss", dismiss_form, "dismiss")


@page(act=True)
async def lead_list(request: Request) -> Response:
    if (refused := centre_desk(request)) is not None:
        return refused
    return await act(request, "lead_list_account", list_form, "list")


@page(act=True)
async def lead_warn(request: Request) -> Response:
    if (refused := centre_desk(request)) is not None:
        return refused
    return await act(request, "lead_warn_member", warn_form, "warn")


@page(act=True)
async def lead_grade(request: Request) -> Response:
    if (refused := centre_desk(request)) is not None:
        return refused
    return await act(request, "lead_grade", grade_form, "grade")


async def open_case_page(request: Request) -> Response:
    """The counter form, filled in by the centre, sent as the lead's open_case triage: the hub
    opens the case in the submitting member's name (docs/leads.md)."""
    if (refused := centre_desk(request)) is not None:
        return refused
    desk = desk_of(request)
    name = request.path_params["name"]
    _ = gettext_for(request)
    try:
        lead = await desk.link.call(lambda c: c.get_lead(name))
    except (HubError, HubSignatureError) as err:
        refusal = Refusal.of(err)
        if refusal.status in ("NOT_FOUND", "INVALID_ARGUMENT"):
            return refuse(request, 404, _("There is no such lead, or this desk may not see it."))
        return render(request, "common/hub_refused.html", {"refusal": refusal}, status=502)
    form = await request.form() if request.method == "POST" else FormData()
    more = bool(text_of(form, "more"))
    typed = report_typed(form, more)
    context = {
        **report_context(desk, typed),
        "lead": lead,
        "form_action": f"/leads/{lead.name}/open-case",
        "errors": {},
    }
    if request.method == "GET" or more:
        return render(request, "member/report.html", context)
    try:
        report = check_report(typed, desk, await keepers(desk))
    except FormErrors as err:
        return render(request, "member/report.html", {**context, "errors": err.errors}, status=400)
    payload = {"name": lead.name, "submitter": lead.submitter, "report": report}
    outcome = await actions.take(desk, viewer_of(request), "lead_open_case", payload)
    return after(request, outcome, "member/report.html", context)


@page()
async def open_case_get(request: Request) -> Response:
    return await open_case_page(request)


@page(act=True)
async def open_case_post(request: Request) -> Response:
    return await open_case_page(request)


ROUTES: list[BaseRoute] = [
    Route("/leads", leads_queue),
    Route("/leads/new", lead_new, methods=["GET"]),
    Route("/leads/new", lead_submit, methods=["POST"]),
    Route("/leads/{name}", lead_get),
    Route("/leads/{name}/answer", lead_answer, methods=["POST"]),
    Route("/leads/{name}/ask", lead_ask, methods=["POST"]),
    Route("/leads/{name}/dismiss", lead_dismiss, methods=["POST"]),
    Route("/leads/{name}/list", lead_list, methods=["POST"]),
    Route("/leads/{name}/warn", lead_warn, methods=["POST"]),
    Route("/leads/{name}/open-case", open_case_get, methods=["GET"]),
    Route("/leads/{name}/open-case", open_case_post, methods=["POST"]),
    Route("/leads/{name}/grade", lead_grade, methods=["POST"]),
]
