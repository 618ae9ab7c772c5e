"""Warnings (预警劝阻, docs/warnings.md) at the duty desk: a member's queue of the open warnings
addressed to it (red first, then by contact deadline), a warning's page with its two answers
(acknowledge, report the outcome), and the centre's send form and regrade. Every action is one
signed message through adapters/console/actions.py."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from adapters.console.actions import Action, Done, FormErrors, Payload, Refusal, register
from adapters.console.pages.centre import (
    CENTRE,
    account_fields,
    amount_field,
    centre_only,
    fen_of,
    short_text,
    take_form,
    text_of,
)
from adapters.console.pages.common import state_name, ts
from adapters.console.pages.member import FRAUD_TYPES, report_message
from adapters.console.web import countdown, desk_of, gettext_for, page, refuse, render
from adapters.sdk import HubClient, HubError, HubSignatureError
from stophub.v1 import grade_pb2, warning_pb2

MEMBERS = frozenset({"bank", "payment_institution"})
WARNING_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
GRADES = {
    "red": grade_pb2.GRADE_RED,
    "yellow": grade_pb2.GRADE_YELLOW,
    "green": grade_pb2.GRADE_GREEN,
}
RANK = {grade_pb2.GRADE_RED: 0, grade_pb2.GRADE_YELLOW: 1, grade_pb2.GRADE_GREEN: 2}
# The outcomes a duty desk reports from this page. ALREADY_LOST must carry the report of the
# loss (the hub opens a case from it): that is the report form's work (/report?warning=ID).
OUTCOMES = {
    "reached_dissuaded": warning_pb2.WARNING_OUTCOME_REACHED_DISSUADED,
    "reached_not_dissuaded": warning_pb2.WARNING_OUTCOME_REACHED_NOT_DISSUADED,
    "not_reached": warning_pb2.WARNING_OUTCOME_NOT_REACHED,
}
OPEN = (warning_pb2.WARNING_STATE_SENT, warning_pb2.WARNING_STATE_ACKNOWLEDGED)


def grade_name(grade: int) -> str:
    return state_name(grade_pb2.Grade, grade, "GRADE_") if grade else "ungraded"


@dataclass
class WarningRow:
    warning: warning_pb2.Warning
    deadline: datetime | None
    start: datetime | None
    clock: dict[str, Any]

    @property
    def state(self) -> str:
        return state_name(warning_pb2.WarningState, self.warning.state, "WARNING_STATE_")

    @property
    def grade(self) -> str:
        return grade_name(self.warning.grade)


def row_of(w: warning_pb2.Warning, now: datetime) -> WarningRow:
    """The clock a warning runs on now: contact until it is acknowledged, then the outcome."""
    if w.state == warning_pb2.WARNING_STATE_SENT:
        deadline, start = ts(w.contact_by_time), ts(w.send_time)
    elif w.state == warning_pb2.WARNING_STATE_ACKNOWLEDGED:
        deadline, start = ts(w.outcome_by_time), ts(w.send_time)
    else:
        deadline = start = None
    return WarningRow(w, deadline, start, countdown(deadline, start, now))


def queue_order(rows: list[WarningRow], now: datetime) -> list[WarningRow]:
    far = datetime.max.replace(tzinfo=now.tzinfo)
    return sorted(
        rows,
        key=lambda r: (
            RANK.get(r.warning.grade, 3),
            ts(r.warning.contact_by_time) or far,
            r.warning.warning_id,
        ),
    )


@page()
async def warnings_queue(request: Request) -> Response:
    desk = desk_of(request)
    if not (desk.member or desk.centre):
        return refuse(request, 404, gettext_for(request)("This page is on a duty desk."))
    refusal = None
    found: list[warning_pb2.Warning] = []
    try:
        found = await desk.link.call(lambda c: c.list_warnings(open_only=True, page_size=200))
    except (HubError, HubSignatureError) as err:
        refusal = Refusal.of(err)
    sent = request.query_params.get("sent") == "1"
    if desk.member:
        # The hub gives a member the warnings it sent and those addressed to it: its queue is
        # the work addressed to it; what it sent to the centre is a filter away.
        mine = (lambda w: w.sender == desk.institution) if sent else None
        found = [w for w in found if (mine(w) if mine else w.addressee == desk.institution)]
    now = desk.clock.now()
    rows = queue_order([row_of(w, now) for w in found if w.state in OPEN], now)
    return render(
        request,
        "common/warnings.html",
        {"rows": rows, "refusal": refusal, "sent": sent},
        status=502 if refusal else 200,
    )


# ---- a member's two answers -----------------------------------------------------------------


def acknowledge_form(form: Mapping[str, Any], warning_id: str) -> Payload:
    errors: dict[str, str] = {}
    note = short_text(form, "note", errors, limit=500)
    if errors:
        raise FormErrors(errors)
    return {"warning_id": warning_id, "note": note}


async def send_acknowledge(client: HubClient, p: Payload) -> Done:
    w = await client.acknowledge_warning(p["warning_id"], p["note"])
    return Done(f"warning {w.warning_id} acknowledged", f"/warnings/{w.warning_id}?done=ack")


def outcome_form(form: Mapping[str, Any], warning_id: str) -> Payload:
    errors: dict[str, str] = {}
    code = text_of(form, "outcome")
    if code not in OUTCOMES:
        errors["outcome"] = "Choose what came of the warning."
    prevented = 0
    if text_of(form, "loss_prevented"):
        fen = fen_of(text_of(form, "loss_prevented"))
        if fen is None or fen < 0:
            errors["loss_prevented"] = "Give an amount in yuan, 0 or more, for example 5000.00."
        else:
            prevented = fen
    text = short_text(form, "text", errors)
    if errors:
        raise FormErrors(errors)
    return {
        "warning_id": warning_id,
        "outcome": code,
        "loss_prevented_fen": prevented,
        "text": text,
    }


async def send_outcome(client: HubClient, p: Payload) -> Done:
    if p["outcome"] == "already_lost":
        # Filed from the report form (pages/member.py report_send): the loss's report rides
        # with the outcome and the hub opens the case from it.
        w = await client.report_warning_outcome(
            p["warning_id"],
            warning_pb2.WARNING_OUTCOME_ALREADY_LOST,
            text=p["text"],
            report=report_message(p["report"], client.institution),
        )
    else:
        w = await client.report_warning_outcome(
            p["warning_id"],
            OUTCOMES[p["outcome"]],
            loss_prevented_fen=p["loss_prevented_fen"],
            text=p["text"],
        )
    return Done(
        f"outcome of warning {w.warning_id}: {p['outcome']}",
        f"/warnings/{w.warning_id}?done=outcome",
        w.case_id,
    )


# ---- the centre's send form and regrade ---------------------------------------------------


def send_form(form: Mapping[str, Any]) -> Payload:
    errors: dict[str, str] = {}
    institution, number, holder = account_fields(form, errors)
    amount = amount_field(form, "amount_at_risk", errors)
    grade = text_of(form, "grade")
    if grade not in GRADES:
        errors["grade"] = "Choose the grade: red, yellow or green."
    fraud = text_of(form, "fraud_type")
    if fraud and fraud not in dict(FRAUD_TYPES):
        errors["fraud_type"] = "Choose a fraud type from the list."
    text = short_text(form, "text", errors, required="Say what the customer is at risk of.")
    if errors:
        raise FormErrors(errors)
    return {
        "institution": institution,
        "account": number,
        "holder": holder,
        "amount_at_risk_fen": amount,
        "grade": grade,
        "fraud_type": fraud,
        "text": text,
    }


def describe_send(p: Payload) -> str:
    return f"warn {p['institution']} of account {p['account']} ({p['grade']})"


async def send_warning(client: HubClient, p: Payload) -> Done:
    w = await client.send_warning(
        (p["institution"], p["account"], p["holder"]),
        p["amount_at_risk_fen"],
        grade=GRADES[p["grade"]],
        fraud_type=dict(FRAUD_TYPES).get(p["fraud_type"], 0),
        text=p["text"],
    )
    return Done(f"warning {w.warning_id} sent to {w.addressee}", f"/warnings/{w.warning_id}")


def grade_form(form: Mapping[str, Any], target: str) -> Payload:
    errors: dict[str, str] = {}
    grade = text_of(form, "grade")
    if grade not in GRADES:
        errors["grade"] = "Choose the grade: red, yellow or green."
    reason = short_text(form, "reason", errors, required="Say why the grade changes.", limit=500)
    if errors:
        raise FormErrors(errors)
    return {"target": target, "grade": grade, "reason": reason}


async def send_warning_grade(client: HubClient, p: Payload) -> Done:
    w = await client.set_warning_grade(p["target"], GRADES[p["grade"]], p["reason"])
    return Done(f"warning {w.warning_id} graded {p['grade']}", f"/warnings/{w.warning_id}")


# The addressee answers: the member keeping the account, or the centre a member warned.
ADDRESSEES = MEMBERS | CENTRE
register(
    Action(
        "warning_acknowledge",
        ADDRESSEES,
        lambda p: f"acknowledge warning {p['warning_id']}",
        send_acknowledge,
    )
)
register(
    Action(
        "warning_outcome",
        ADDRESSEES,
        lambda p: f"report outcome {p['outcome']} of warning {p['warning_id']}",
        send_outcome,
    )
)
register(Action("warning_send", ADDRESSEES, describe_send, send_warning, lambda p: ""))
register(
    Action(
        "warning_grade",
        CENTRE,
        lambda p: f"grade warning {p['target']} {p['grade']}",
        send_warning_grade,
        lambda p: "",
    )
)


# ---- the pages ----------------------------------------------------------------------------


async def warning_page(
    request: Request, context: dict[str, Any] | None = None, status: int = 200
) -> Response:
    desk = desk_of(request)
    warning_id = request.path_params["warning_id"]
    _ = gettext_for(request)
    try:
        w = await desk.link.call(lambda c: c.get_warning(warning_id))
    except (HubError, HubSignatureError) as err:
        refusal = Refusal.of(err)
        if refusal.status in ("NOT_FOUND", "PERMISSION_DENIED", "INVALID_ARGUMENT"):
            return refuse(request, 404, _("There is no such warning, or this desk may not see it."))
        return render(request, "common/hub_refused.html", {"refusal": refusal}, status=502)
    context = dict(context or {})
    for key in ("refusal", "errors", "typed", "acting"):
        context.setdefault(key, None if key in ("refusal", "acting") else {})
    return render(
        request,
        "common/warning.html",
        {
            **context,
            "w": w,
            "row": row_of(w, desk.clock.now()),
            "outcome": state_name(warning_pb2.WarningOutcome, w.outcome, "WARNING_OUTCOME_")
            if w.outcome
            else "",
            "addressed": w.addressee == desk.institution and (desk.member or desk.centre),
            "outcomes": list(OUTCOMES),
            "grades": list(GRADES),
            "done": request.query_params.get("done", ""),
            "ts": ts,
        },
        status=status,
    )


@page()
async def warning_get(request: Request) -> Response:
    return await warning_page(request)


async def act(request: Request, name: str, read: Any, acting: str) -> Response:
    """Read the form of action `name`, take it, and show the page again when it is refused."""
    target = request.path_params.get("warning_id", "")

    async def again(context: dict[str, Any], status: int) -> Response:
        if target:
            return await warning_page(request, context, status)
        return render(
            request, "centre/warning_send.html", {**context, **send_context()}, status=status
        )

    return await take_form(request, name, read, acting, target, again)


def duty_desk(request: Request) -> Response | None:
    """A warning is sent and answered at the centre's or a member's desk, not oversight's."""
    desk = desk_of(request)
    if desk.member or desk.centre:
        return None
    return refuse(request, 404, gettext_for(request)("This page is on a duty desk."))


@page(act=True)
async def warning_acknowledge(request: Request) -> Response:
    if (refused := duty_desk(request)) is not None:
        return refused
    return await act(request, "warning_acknowledge", acknowledge_form, "acknowledge")


@page(act=True)
async def warning_outcome(request: Request) -> Response:
    if (refused := duty_desk(request)) is not None:
        return refused
    return await act(request, "warning_outcome", outcome_form, "outcome")


@page(act=True)
async def warning_grade(request: Request) -> Response:
    if (refused := centre_only(request)) is not None:
        return refused
    return await act(request, "warning_grade", grade_form, "grade")


def send_context() -> dict[str, Any]:
    return {"fraud_types": [name for name, _v in FRAUD_TYPES], "grades": list(GRADES)}


@page()
async def warning_new(request: Request) -> Response:
    if (refused := duty_desk(request)) is not None:
        return refused
    q = request.query_params
    typed = {
        "institution": q.get("institution", ""),
        "account": q.get("account", ""),
        "holder": q.get("holder", ""),
        "grade": "red",
    }
    return render(
        request,
        "centre/warning_send.html",
        {"typed": typed, "errors": {}, "refusal": None, **send_context()},
    )


@page(act=True)
async def warning_send(request: Request) -> Response:
    if (refused := duty_desk(request)) is not None:
        return refused
    return await act(request, "warning_send", send_form, "send")


ROUTES: list[BaseRoute] = [
    Route("/warnings", warnings_queue),
    Route("/warnings/new", warning_new, methods=["GET"]),
    Route("/warnings/new", warning_send, methods=["POST"]),
    Route("/warnings/{warning_id}", warning_get),
    Route("/warnings/{warning_id}/acknowledge", warning_acknowledge, methods=["POST"]),
    Route("/warnings/{warning_id}/outcome", warning_outcome, methods=["POST"]),
    Route("/warnings/{warning_id}/grade", warning_grade, methods=["POST"]),
]
