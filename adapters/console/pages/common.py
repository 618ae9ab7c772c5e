"""Pages every desk has: cases and their search, a case with its timeline, money trail,
orders and clocks, the escalation inbox (a person acknowledges a breach at the hub), the
notices the hub delivered, and a check of an account against the list."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from adapters.console import actions
from adapters.console.actions import Action, Done, FormErrors, Payload, Refusal, register
from adapters.console.models import Claim, StoredDelivery
from adapters.console.web import (
    countdown,
    desk_of,
    duration_text,
    gettext_for,
    page,
    render,
    svg,
    viewer_of,
)
from adapters.sdk import HubClient, HubError, HubSignatureError
from hub.domain.wording import Disclosure
from hub.render.trail import trail_svg
from stophub.v1 import account_pb2, blacklist_pb2, case_pb2, grade_pb2, order_pb2, sla_pb2

CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
ACCOUNT = re.compile(r"^[A-Za-z0-9]{1,34}$")
CODE = re.compile(r"^[A-Z0-9]{2,16}$")
HUB_CASE_ID = re.compile(r"^[Cc]\d{8}-[0-9A-Fa-f]{8}$")
ID_NUMBER = re.compile(r"^[0-9]{17}[0-9Xx]$|^[0-9]{15}$")
# Officers act on the data the hub chose to send this institution: shown in full.
SHOWN = Disclosure(personal_data=True)


def ts(moment: Any) -> datetime | None:
    """A protobuf Timestamp field as an aware datetime; None when unset (seconds 0)."""
    if moment is None or (moment.seconds == 0 and moment.nanos == 0):
        return None
    value: datetime = moment.ToDatetime(tzinfo=UTC)
    return value


def state_name(enum: Any, value: int, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix).lower()


@dataclass
class CaseRow:
    case: case_pb2.Case
    deadline: datetime | None
    start: datetime | None
    clock: dict[str, Any]
    claimed_by: str = ""

    @property
    def state(self) -> str:
        return state_name(case_pb2.CaseState, self.case.state, "CASE_STATE_")

    @property
    def opened(self) -> datetime | None:
        return ts(self.case.create_time)

    @property
    def next_step(self) -> tuple[str, str] | None:
        """The clock kind and the institution the next deadline is on."""
        if not self.case.HasField("next_deadline"):
            return None
        d = self.case.next_deadline
        return d.clock, d.responsible


def case_rows(desk: Any, cases: list[case_pb2.Case]) -> list[CaseRow]:
    now = desk.clock.now()
    with desk.db() as s:
        claims = {
            c.case_id: c.username
            for c in s.scalars(select(Claim).where(Claim.case_id.in_([c.case_id for c in cases])))
        }
    rows = []
    for c in cases:
        deadline = start = None
        if c.HasField("next_deadline"):
            deadline = ts(c.next_deadline.deadline_time)
            start = ts(c.next_deadline.start_time)
        rows.append(
            CaseRow(c, deadline, start, countdown(deadline, start, now), claims.get(c.case_id, ""))
        )
    return rows


def refusal_status(refusal: Refusal) -> int:
    """The HTTP status of a form the hub refused: 502 when it could not be reached, 400 for
    a value it would not take, 409 for a step it would not take now."""
    if refusal.transient:
        return 502
    return 400 if refusal.status == "INVALID_ARGUMENT" else 409


def led_to(outcome: actions.Outcome) -> Response | None:
    """Where a sent or proposed action leads (its page, or the proposal); None if refused."""
    if outcome.done is not None:
        return RedirectResponse(outcome.done.url, status_code=303)
    if outcome.proposal is not None:
        return RedirectResponse(f"/proposals/{outcome.proposal.id}", status_code=303)
    return None


async def _refused(request: Request, err: HubError | HubSignatureError) -> Response:
    return render(request, "common/hub_refused.html", {"refusal": Refusal.of(err)}, status=502)


ACCOUNT_HINT = "Give the account as INSTITUTION/NUMBER, for example BANKB/6222020000000002."
SEARCH_HELP = "Search by a case id, an account (INSTITUTION/NUMBER), an ID number or a name."


def search_filters(query: str) -> tuple[str, dict[str, Any]]:
    """What a search box's words ask: a case by its id, cases by an account
    (INSTITUTION/NUMBER), by the victim's ID number, or by the victim's name; ('number', {})
    for a bare number, which could be an account at any institution."""
    q = " ".join(query.split())
    if not q:
        return "none", {}
    if HUB_CASE_ID.match(q):
        return "case", {"case_id": q.upper()}
    if "/" in q:
        institution, _sep, number = q.partition("/")
        if CODE.match(institution.strip().upper()) and ACCOUNT.match(number.strip()):
            account = account_pb2.AccountRef(
                institution_code=institution.strip().upper(), account_number=number.strip()
            )
            return "filters", {"account": account}
    if ID_NUMBER.match(q):
        return "filters", {"victim_id_number": q}
    if ACCOUNT.match(q) and any(ch.isdigit() for ch in q):
        return "number", {}
    return "filters", {"victim_name": q}


@page()
async def search(request: Request) -> Response:
    desk = desk_of(request)
    query = request.query_params.get("q", "").strip()
    what, filters = search_filters(query)
    if what == "case":
        return RedirectResponse(f"/cases/{filters['case_id']}", status_code=303)
    cases: list[case_pb2.Case] = []
    refusal = None
    if what == "filters":
        try:
            cases = await desk.link.call(
                lambda c: c.list_cases(order_by=case_pb2.CASE_ORDER_DEADLINE, **filters)
            )
        except (HubError, HubSignatureError) as err:
            refusal = Refusal.of(err)
    hint = {"none": SEARCH_HELP, "number": ACCOUNT_HINT}.get(what, "")
    return render(
        request,
        "common/cases.html",
        {
            "rows": case_rows(desk, cases),
            "query": query,
            "title": "Search",
            "refusal": refusal,
            "hint": hint,
            "filters": {},
        },
        status=400 if what == "number" else 200,
    )


STATES = {
    "": 0,
    "reported": case_pb2.CASE_STATE_REPORTED,
    "verified": case_pb2.CASE_STATE_VERIFIED,
    "rejected": case_pb2.CASE_STATE_REJECTED,
    "closed": case_pb2.CASE_STATE_CLOSED,
}


@page()
async def cases(request: Request) -> Response:
    desk = desk_of(request)
    state = request.query_params.get("state", "")
    institution = request.query_params.get("institution", "").strip().upper()
    errors: dict[str, str] = {}
    if state not in STATES:
        errors["state"] = "Choose a state from the list."
    if institution and not CODE.match(institution):
        errors["institution"] = "An institution code is 2 to 16 capital letters or digits."
    refusal = None
    found: list[case_pb2.Case] = []
    if not errors:
        try:
            found = await desk.link.call(
                lambda c: c.list_cases(
                    state=STATES[state],
                    institution_code=institution,
                    order_by=case_pb2.CASE_ORDER_DEADLINE,
                    page_size=100,
                )
            )
        except (HubError, HubSignatureError) as err:
            refusal = Refusal.of(err)
    return render(
        request,
        "common/cases.html",
        {
            "rows": case_rows(desk, found[:500]),
            "query": "",
            "title": "Cases",
            "errors": errors,
            "refusal": refusal,
            "filters": {"state": state, "institution": institution},
            "states": list(STATES),
        },
        status=400 if errors else 200,
    )


def order_account(order: order_pb2.Order) -> account_pb2.AccountRef:
    which = order.instruction.WhichOneof("instruction")
    if which == "stop":
        return order.instruction.stop.account
    if which == "freeze":
        return order.instruction.freeze.account
    if which == "fund_return":
        return order.instruction.fund_return.beneficiary
    return account_pb2.AccountRef()


def order_amount(order: order_pb2.Order) -> int:
    which = order.instruction.WhichOneof("instruction")
    if which == "stop":
        return order.instruction.stop.amount_fen
    if which == "freeze":
        return order.instruction.freeze.amount_fen
    if which == "release":
        return order.instruction.release.amount_fen
    if which == "fund_return":
        return order.instruction.fund_return.amount_fen
    return 0


def order_rows(case: case_pb2.Case, clocks: list[sla_pb2.ClockView], now: datetime) -> list[Any]:
    by_order: dict[str, list[sla_pb2.ClockView]] = {}
    for clock in clocks:
        by_order.setdefault(clock.order_id, []).append(clock)
    rows = []
    for order in case.orders:
        open_clocks = [
            k for k in by_order.get(order.order_id, []) if k.state == sla_pb2.CLOCK_STATE_OPEN
        ]
        first = min(open_clocks, key=lambda k: k.deadline_time.ToDatetime(), default=None)
        deadline = ts(first.deadline_time) if first else None
        start = ts(first.start_time) if first else None
        rows.append(
            {
                "order": order,
                "account": order_account(order),
                "amount": order_amount(order),
                "kind": state_name(order_pb2.OrderKind, order.kind, "ORDER_KIND_"),
                "state": state_name(order_pb2.OrderState, order.state, "ORDER_STATE_"),
                "clock": first,
                "countdown": countdown(deadline, start, now),
                "deadline": deadline,
                "start": start,
            }
        )
    return rows


def clock_rows(clocks: list[sla_pb2.ClockView], now: datetime) -> list[dict[str, Any]]:
    rows = []
    for k in clocks:
        deadline, start = ts(k.deadline_time), ts(k.start_time)
        state = state_name(sla_pb2.ClockState, k.state, "CLOCK_STATE_")
        rows.append(
            {
                "k": k,
                "state": state,
                "open": k.state == sla_pb2.CLOCK_STATE_OPEN,
                "deadline": deadline,
                "start": start,
                "countdown": countdown(deadline, start, now),
            }
        )
    return rows


@page()
async def case_page(request: Request) -> Response:
    desk = desk_of(request)
    case_id = request.path_params["case_id"]
    if not CASE_ID.match(case_id):
        return render(
            request, "refused.html", {"message": f"{case_id!r} is not a case id."}, status=404
        )
    try:
        case = await desk.link.call(lambda c: c.get_case(case_id))
    except (HubError, HubSignatureError) as err:
        return await _refused(request, err)
    trail = None
    trail_note = ""
    try:
        got = await desk.link.call(lambda c: c.get_case_trail(case_id))
        trail = svg(trail_svg(got, SHOWN))
    except HubError as err:
        trail_note = err.reason or err.message
    except HubSignatureError as err:
        trail_note = str(err)
    try:
        clocks = await desk.link.call(lambda c: c.list_clocks(case_id=case_id))
    except (HubError, HubSignatureError):
        clocks = []
    now = desk.clock.now()
    with desk.db() as s:
        claim = s.get(Claim, case_id)
        claimed_by = claim.username if claim else ""
    return render(
        request,
        "common/case.html",
        {
            "case": case,
            "state": state_name(case_pb2.CaseState, case.state, "CASE_STATE_"),
            "grade": state_name(grade_pb2.Grade, case.grade, "GRADE_") if case.grade else "",
            "orders": order_rows(case, clocks, now),
            "clocks": clock_rows(clocks, now),
            "trail": trail,
            "trail_note": trail_note,
            "claimed_by": claimed_by,
            "ts": ts,
            "fraud": state_name(case_pb2.FraudType, case.report.fraud_type, "FRAUD_TYPE_"),
            "countdown": countdown,
            "now": now,
            "refusal": None,
            "errors": {},
            "typed": {},
        },
    )


# ---- escalations: a person acknowledges a breach ------------------------------------------


def _acknowledge_form(form: Any) -> Payload:
    clock_id = str(form.get("clock_id", "")).strip()
    note = str(form.get("note", "")).strip()
    errors = {}
    if not clock_id or len(clock_id) > 128:
        errors["clock_id"] = "Which clock? Open the breach from the inbox."
    if len(note) > 500:
        errors["note"] = "A note is at most 500 characters."
    if errors:
        raise FormErrors(errors)
    return {"clock_id": clock_id, "note": note, "case_id": str(form.get("case_id", ""))}


async def _acknowledge(client: HubClient, p: Payload) -> Done:
    clock = await client.acknowledge_breach(p["clock_id"], p["note"])
    return Done(
        f"breach of {clock.clock} acknowledged",
        f"/escalations?done={clock.clock_id}",
        clock.case_id,
    )


ACKNOWLEDGE = register(
    Action(
        "acknowledge",
        frozenset({"anti_fraud_centre", "bank", "payment_institution"}),
        lambda p: f"acknowledge breach {p['clock_id']}",
        _acknowledge,
    )
)


@page()
async def escalations(request: Request) -> Response:
    desk = desk_of(request)
    refusal = None
    breaches: list[sla_pb2.ClockView] = []
    try:
        breaches = await desk.link.call(
            lambda c: c.list_clocks(breached_only=True, unacknowledged_only=True, page_size=200)
        )
    except (HubError, HubSignatureError) as err:
        refusal = Refusal.of(err)
    now = desk.clock.now()
    rows = [
        {
            "clock": k,
            "deadline": ts(k.deadline_time),
            "late": duration_text((now - (ts(k.deadline_time) or now)).total_seconds()),
        }
        for k in breaches
    ]
    return render(
        request,
        "common/escalations.html",
        {"rows": rows, "refusal": refusal, "done": request.query_params.get("done", "")},
    )


@page(act=True)
async def acknowledge(request: Request) -> Response:
    desk = desk_of(request)
    form = await request.form()
    try:
        payload = _acknowledge_form(form)
    except FormErrors as err:
        return render(request, "refused.html", {"message": str(err)}, status=400)
    outcome = await actions.take(desk, viewer_of(request), "acknowledge", payload)
    if outcome.refusal:
        _ = gettext_for(request)
        return render(
            request,
            "refused.html",
            {"message": _("The hub refused this.") + f" {outcome.refusal.message}"},
            status=409,
        )
    return RedirectResponse(f"/escalations?done={payload['clock_id']}", status_code=303)


# ---- notices delivered to this institution --------------------------------------------------


@page()
async def notices(request: Request) -> Response:
    desk = desk_of(request)
    kind = request.query_params.get("kind", "")
    with desk.db() as s:
        query = select(StoredDelivery).order_by(StoredDelivery.sequence.desc()).limit(200)
        if kind:
            query = query.where(StoredDelivery.kind == kind)
        rows = list(s.scalars(query))
    return render(request, "common/notices.html", {"rows": rows, "kind": kind})


# ---- list check ---------------------------------------------------------------------------------


@page()
async def list_check(request: Request) -> Response:
    desk = desk_of(request)
    institution = request.query_params.get("institution", "").strip().upper()
    number = request.query_params.get("account", "").strip()
    result = None
    errors: dict[str, str] = {}
    refusal = None
    if institution or number:
        if not CODE.match(institution):
            errors["institution"] = "An institution code is 2 to 16 capital letters or digits."
        if not ACCOUNT.match(number):
            errors["account"] = "An account number is 1 to 34 letters or digits."
        if not errors:
            subject = blacklist_pb2.ListSubject(
                account=account_pb2.AccountRef(institution_code=institution, account_number=number)
            )
            try:
                answer = await desk.link.call(lambda c: c.check_list([subject]))
                result = answer.hits[0]
            except (HubError, HubSignatureError) as err:
                refusal = Refusal.of(err)
    return render(
        request,
        "common/list_check.html",
        {
            "institution": institution,
            "account": number,
            "result": result,
            "errors": errors,
            "refusal": refusal,
        },
        status=400 if errors else 200,
    )


ROUTES: list[BaseRoute] = [
    Route("/search", search),
    Route("/cases", cases),
    Route("/cases/{case_id}", case_page),
    Route("/escalations", escalations),
    Route("/escalations/acknowledge", acknowledge, methods=["POST"]),
    Route("/notices", notices),
    Route("/lists/check", list_check),
]
