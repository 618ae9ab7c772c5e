"""The centre's desk: the queue of open cases by time left (claim, "next case"), the orders the
centre issues from a case (stop, freeze, release, return), the standing auto-stop rule, the
list (publish, remove), appeals and distributions. Every action is one signed message through
adapters/console/actions.py; reads go through the hub link."""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from adapters.console import actions
from adapters.console.actions import Action, Done, FormErrors, Payload, Refusal, register
from adapters.console.models import Claim, JournalEntry, StoredDelivery
from adapters.console.pages.common import (
    CASE_ID,
    led_to,
    order_account,
    refusal_status,
    state_name,
    ts,
)
from adapters.console.web import (
    Desk,
    countdown,
    desk_of,
    gettext_for,
    page,
    refuse,
    render,
    viewer_of,
)
from adapters.sdk import HubClient, HubError, HubSignatureError
from stophub.v1 import (
    account_pb2,
    appeal_pb2,
    blacklist_pb2,
    case_pb2,
    delivery_pb2,
    envelope_pb2,
    grade_pb2,
    order_pb2,
    returns_pb2,
)

CENTRE = frozenset({"anti_fraud_centre"})
# As the hub checks them (hub/domain: institutions CODE_PATTERN, cases ACCOUNT_PATTERN,
# blacklist ID_NUMBER_PATTERN, cases MAX_AMOUNT_FEN, wire TEXT_LIMITS).
CODE = re.compile(r"^[A-Z0-9][A-Z0-9_-]{1,31}$")
ACCOUNT = re.compile(r"^[0-9A-Za-z-]{4,40}$")
ID_NUMBER = re.compile(r"^[0-9]{17}[0-9X]$")
ORDER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_AMOUNT_FEN = 10**14
MAX_LAYER = 20
TEXT_MAX = 2000
OPEN_STATES = (case_pb2.CASE_STATE_REPORTED, case_pb2.CASE_STATE_VERIFIED)
# The queue shows the most urgent open cases: one page of the hub's deadline order. A duty
# desk works the top of the queue; the rest are a search or the Cases page away, and 10,000
# open cases stay one call of a fixed size (bench/console.py).
QUEUE_PAGE = 50
BASES = {
    "account_trader": blacklist_pb2.LIST_BASIS_ACCOUNT_TRADER,
    "convicted": blacklist_pb2.LIST_BASIS_CONVICTED,
}
# The term each basis carries (hub/domain/blacklist.py Terms; docs/blacklist.md).
TERMS = {"account_trader": "2 years", "convicted": "3 years"}


def centre_only(request: Request) -> Response | None:
    if desk_of(request).centre:
        return None
    return refuse(request, 404, gettext_for(request)("This page is the centre's desk."))


def safe_back(target: str, default: str) -> str:
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


# ---- reading forms --------------------------------------------------------------------------


def text_of(form: FormData | Mapping[str, Any], name: str) -> str:
    value = form.get(name, "")
    return value.strip() if isinstance(value, str) else ""


def typed_of(form: FormData) -> dict[str, str]:
    """What was typed, to show it again: every text field of the form but the token."""
    return {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf"}


async def take_form(
    request: Request,
    name: str,
    read: Any,
    acting: str,
    target: str,
    again: Callable[[dict[str, Any], int], Awaitable[Response]],
) -> Response:
    """Read the form of action `name` (about `target`; "" for a new one), take it, and go where
    it leads; when it is refused, `again(context, status)` shows the page once more, the
    context holding what was typed, the errors or the refusal, and `acting`."""
    form = await request.form()
    typed = typed_of(form)
    try:
        payload = read(form, target) if target else read(form)
    except FormErrors as err:
        return await again({"errors": err.errors, "typed": typed, "acting": acting}, 400)
    outcome = await actions.take(desk_of(request), viewer_of(request), name, payload)
    if outcome.refusal is not None:
        context = {"refusal": outcome.refusal, "typed": typed, "acting": acting}
        return await again(context, refusal_status(outcome.refusal))
    went = led_to(outcome)
    assert went is not None
    return went


def fen_of(text: str) -> int | None:
    """'1,234.56' or '¥1234.5' yuan as fen; None when it is not an amount of money."""
    cleaned = text.replace(",", "").replace("¥", "").replace("￥", "").strip()
    if not cleaned:
        return None
    try:
        amount = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not amount.is_finite() or amount != amount.quantize(Decimal("0.01")):
        return None
    return int(amount * 100)


def yuan_text(fen: int) -> str:
    return f"{Decimal(fen) / 100:.2f}"


def amount_field(
    form: Mapping[str, Any], name: str, errors: dict[str, str], *, most: int | None = None
) -> int:
    fen = fen_of(text_of(form, name))
    if fen is None:
        errors[name] = "Give an amount in yuan, for example 5000 or 5000.00."
        return 0
    if fen <= 0:
        errors[name] = "The amount must be more than zero."
    elif fen > MAX_AMOUNT_FEN:
        errors[name] = "That amount is beyond any plausible amount; amounts are in yuan."
    elif most is not None and fen > most:
        errors[name] = "The amount is more than the hub allows here (see the hint)."
    return fen


def account_fields(
    form: Mapping[str, Any], errors: dict[str, str], prefix: str = "", *, holder: bool = True
) -> tuple[str, str, str]:
    institution = text_of(form, prefix + "institution").upper()
    number = text_of(form, prefix + "account")
    name = text_of(form, prefix + "holder")
    if not CODE.match(institution):
        errors[prefix + "institution"] = "An institution code is 2 to 32 capital letters or digits."
    if not ACCOUNT.match(number):
        errors[prefix + "account"] = "An account number is 4 to 40 letters, digits or '-'."
    if holder and not name:
        errors[prefix + "holder"] = "Give the holder's name as the institution keeps it."
    if len(name) > 200:
        errors[prefix + "holder"] = "A name is at most 200 characters."
    return institution, number, name


def short_text(
    form: Mapping[str, Any],
    name: str,
    errors: dict[str, str],
    *,
    required: str = "",
    limit: int = TEXT_MAX,
) -> str:
    value = text_of(form, name)
    if required and not value:
        errors[name] = required
    elif len(value) > limit:
        errors[name] = f"At most {limit} characters."
    elif "\x00" in value:
        errors[name] = "This text holds a character the hub does not keep."
    return value


def moment_of(text: str, desk: Desk) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return moment.replace(tzinfo=desk.zone) if moment.tzinfo is None else moment


def credits_field(
    form: Mapping[str, Any], desk: Desk, errors: dict[str, str]
) -> list[tuple[str, int]]:
    """The stop's credits, one a line: a time (the console's zone unless it says) and yuan."""
    found: list[tuple[str, int]] = []
    for number, line in enumerate(text_of(form, "transactions").splitlines(), start=1):
        if not line.strip():
            continue
        when, _sep, amount = line.strip().rpartition(" ")
        moment = moment_of(when, desk)
        fen = fen_of(amount)
        if moment is None or fen is None or fen <= 0:
            errors["transactions"] = (
                f"Line {number}: write a credit as its time and amount, for example "
                "2026-03-02 16:40:00 3000.00."
            )
            return []
        if moment > desk.clock.now():
            errors["transactions"] = f"Line {number}: a credit cannot be in the future."
            return []
        found.append((moment.isoformat(), fen))
    return found


def credits_text(facts: list[tuple[datetime | None, int]], desk: Desk) -> str:
    return "\n".join(
        f"{desk.local_time(at, '%Y-%m-%d %H:%M:%S')} {yuan_text(fen)}" for at, fen in facts if at
    )


# ---- the queue ----------------------------------------------------------------------------


@dataclass
class QueueRow:
    case: case_pb2.Case
    deadline: datetime | None
    start: datetime | None
    clock: dict[str, Any]
    step: tuple[str, str] | None
    claimed_by: str
    linked: bool = False

    @property
    def state(self) -> str:
        return state_name(case_pb2.CaseState, self.case.state, "CASE_STATE_")

    @property
    def opened(self) -> datetime | None:
        return ts(self.case.create_time)

    @property
    def grade(self) -> str:
        return state_name(grade_pb2.Grade, self.case.grade, "GRADE_") if self.case.grade else ""


async def open_cases(desk: Desk) -> list[case_pb2.Case]:
    """The most urgent reported and verified cases, by time left: the first page of the hub's
    deadline order over all cases (one walk of its deadline index; a filter by state would
    walk past every case of the other state first), the open ones kept."""
    page, _token = await desk.link.call(_most_urgent_page)
    return [c for c in page if c.state in OPEN_STATES]


async def _most_urgent_page(client: HubClient) -> tuple[list[case_pb2.Case], str]:
    return await client.list_cases_page(page_size=QUEUE_PAGE, order_by=case_pb2.CASE_ORDER_DEADLINE)


def deadlines(
    cases: list[case_pb2.Case],
) -> dict[str, tuple[datetime | None, datetime | None, tuple[str, str] | None]]:
    """Each case's next deadline: its earliest open clock, as the hub sends it."""
    result: dict[str, tuple[datetime | None, datetime | None, tuple[str, str] | None]] = {}
    for c in cases:
        if c.HasField("next_deadline"):
            d = c.next_deadline
            result[c.case_id] = (
                ts(d.deadline_time),
                ts(d.start_time),
                (d.clock, d.responsible),
            )
    return result


LINK_NOTICES = (
    delivery_pb2.NoticeKind.Name(delivery_pb2.NOTICE_KIND_REPORT_RECEIVED),
    delivery_pb2.NoticeKind.Name(delivery_pb2.NOTICE_KIND_CASES_LINKED),
)


def linked_ids(desk: Desk, case_ids: list[str]) -> set[str]:
    """Which of `case_ids` the hub told this centre are linked to another case (money of
    several reached one account): from the notices about those cases only (the hub tells
    each case of a link, the new one by REPORT_RECEIVED, the older by CASES_LINKED)."""
    found: set[str] = set()
    wanted = set(case_ids)
    with desk.db() as s:
        rows = list(
            s.scalars(
                select(StoredDelivery.envelope).where(
                    StoredDelivery.kind.in_(LINK_NOTICES), StoredDelivery.case_id.in_(case_ids)
                )
            )
        )
    for data in rows:
        notice = delivery_pb2.Notice.FromString(envelope_pb2.Envelope.FromString(data).body)
        if notice.linked_cases:
            found.add(notice.case_id)
            found.update(link.case_id for link in notice.linked_cases if link.case_id in wanted)
    return found


def claims(desk: Desk, case_ids: list[str]) -> dict[str, str]:
    with desk.db() as s:
        query = select(Claim).where(Claim.case_id.in_(case_ids))
        return {c.case_id: c.username for c in s.scalars(query)}


async def queue_rows(desk: Desk) -> list[QueueRow]:
    cases = await open_cases(desk)
    times = deadlines(cases)
    claimed = claims(desk, [c.case_id for c in cases])
    linked = linked_ids(desk, [c.case_id for c in cases])
    now = desk.clock.now()
    rows = []
    for c in cases:
        deadline, start, step = times.get(c.case_id, (None, None, None))
        rows.append(
            QueueRow(
                c,
                deadline,
                start,
                countdown(deadline, start, now),
                step,
                claimed.get(c.case_id, ""),
                bool(c.linked_cases) or c.case_id in linked,
            )
        )
    far = datetime.max.replace(tzinfo=now.tzinfo)
    # The queue's order (docs/grades.md): red, yellow, green, ungraded, each by time left.
    rows.sort(
        key=lambda r: (
            QUEUE_RANK.get(r.case.grade, 3),
            r.deadline is None,
            r.deadline or far,
            r.opened or far,
        )
    )
    return rows


QUEUE_RANK = {grade_pb2.GRADE_RED: 0, grade_pb2.GRADE_YELLOW: 1, grade_pb2.GRADE_GREEN: 2}


@page()
async def queue(request: Request) -> Response:
    if (refused := centre_only(request)) is not None:
        return refused
    desk = desk_of(request)
    viewer = viewer_of(request)
    mine = request.query_params.get("mine") == "1"
    rows: list[QueueRow] = []
    refusal = None
    try:
        rows = await queue_rows(desk)
    except (HubError, HubSignatureError) as err:
        refusal = Refusal.of(err)
    if mine:
        rows = [r for r in rows if r.claimed_by == viewer.username]
    return render(
        request,
        "centre/queue.html",
        {
            "rows": rows,
            "mine": mine,
            "refusal": refusal,
            "none_left": request.query_params.get("none") == "1",
            "page": QUEUE_PAGE,
            "counts": {
                "red": sum(r.clock["urgency"] == "red" for r in rows),
                "yellow": sum(r.clock["urgency"] == "yellow" for r in rows),
                "green": sum(r.clock["urgency"] == "green" for r in rows),
            },
        },
        status=502 if refusal else 200,
    )


def take_claim(desk: Desk, case_id: str, username: str) -> str:
    """Claim `case_id` for `username`; who holds it afterwards (someone else if they were
    first: the case id is the key, so two people never both hold it)."""
    try:
        with desk.db() as s:
            held = s.get(Claim, case_id)
            if held is not None:
                return held.username
            s.add(Claim(case_id=case_id, username=username, claimed_at=desk.clock.now()))
    except IntegrityError:
        with desk.db() as s:
            held = s.get(Claim, case_id)
            return held.username if held else ""
    actions.journal(desk, username, "claim", f"claimed case {case_id}", "done", case_id=case_id)
    return username


@page(act=True)
async def claim(request: Request) -> Response:
    if (refused := centre_only(request)) is not None:
        return refused
    desk = desk_of(request)
    viewer = viewer_of(request)
    form = await request.form()
    case_id = text_of(form, "case_id")
    _ = gettext_for(request)
    if not CASE_ID.match(case_id):
        return refuse(request, 400, _("Which case? Claim it from the queue."))
    holder = take_claim(desk, case_id, viewer.username)
    if holder != viewer.username:
        return refuse(request, 409, _("%(person)s claimed this case first.") % {"person": holder})
    return RedirectResponse(safe_back(text_of(form, "back"), "/queue"), status_code=303)


@page(act=True)
async def unclaim(request: Request) -> Response:
    if (refused := centre_only(request)) is not None:
        return refused
    desk = desk_of(request)
    viewer = viewer_of(request)
    form = await request.form()
    case_id = text_of(form, "case_id")
    _ = gettext_for(request)
    with desk.db() as s:
        held = s.get(Claim, case_id)
        if held is None:
            return refuse(request, 409, _("Nobody holds this case."))
        if held.username != viewer.username and not viewer.supervisor:
            return refuse(
                request, 403, _("Only the person who claimed a case, or a supervisor, releases it.")
            )
        s.delete(held)
    actions.journal(
        desk,
        viewer.username,
        "unclaim",
        f"released claim on case {case_id}",
        "done",
        case_id=case_id,
    )
    return RedirectResponse(safe_back(text_of(form, "back"), "/queue"), status_code=303)


@page(act=True)
async def next_case(request: Request) -> Response:
    """Claim the most urgent open case nobody holds, and open it."""
    if (refused := centre_only(request)) is not None:
        return refused
    desk = desk_of(request)
    viewer = viewer_of(request)
    try:
        rows = await queue_rows(desk)
    except (HubError, HubSignatureError) as err:
        return render(request, "common/hub_refused.html", {"refusal": Refusal.of(err)}, status=502)
    for row in rows:
        if row.claimed_by:
            continue
        if take_claim(desk, row.case.case_id, viewer.username) == viewer.username:
            return RedirectResponse(f"/cases/{row.case.case_id}", status_code=303)
    return RedirectResponse("/queue?none=1", status_code=303)


# ---- orders from the case page ----------------------------------------------------------


def find_order(case: case_pb2.Case, order_id: str) -> order_pb2.Order | None:
    return next((o for o in case.orders if o.order_id == order_id), None)


def pending_returns(case: case_pb2.Case, freeze_id: str) -> int:
    return sum(
        o.instruction.fund_return.amount_fen
        for o in case.orders
        if o.kind == order_pb2.ORDER_KIND_RETURN
        and o.state == order_pb2.ORDER_STATE_PENDING
        and o.instruction.fund_return.freeze_order_id == freeze_id
    )


def prefill(case: case_pb2.Case, kind: str, query: Mapping[str, str], desk: Desk) -> dict[str, str]:
    """The form as the case suggests it: a stop at a reported payee account for what was paid
    into it; a freeze taking over a holding stop; a release of an order; a return of a freeze's
    money to the victim's account."""
    typed: dict[str, str] = {}
    if kind == "stop":
        upstream = find_order(case, query.get("upstream", ""))
        if upstream is not None:
            institution, number = query.get("institution", ""), query.get("account", "")
            moved = [
                t
                for t in upstream.result.onward_transfers
                if (t.to_account.institution_code, t.to_account.account_number)
                == (institution, number)
            ]
            holder = moved[0].to_account.holder_name if moved else ""
            typed.update(
                institution=institution,
                account=number,
                holder=holder,
                amount=yuan_text(sum(t.carried_fen or t.amount_fen for t in moved)),
                upstream_order_id=upstream.order_id,
                transactions="",
            )
            return typed
        payees = [t.payee for t in case.report.transactions]
        wanted = next(
            (
                p
                for p in payees
                if (p.institution_code, p.account_number)
                == (query.get("institution"), query.get("account"))
            ),
            payees[0] if payees else account_pb2.AccountRef(),
        )
        facts = [
            (ts(t.transaction_time), t.amount_fen)
            for t in case.report.transactions
            if (t.payee.institution_code, t.payee.account_number)
            == (wanted.institution_code, wanted.account_number)
        ]
        typed.update(
            institution=wanted.institution_code,
            account=wanted.account_number,
            holder=wanted.holder_name,
            amount=yuan_text(sum(f for _, f in facts)),
            transactions=credits_text(facts, desk),
            upstream_order_id="",
        )
    elif kind == "freeze":
        stop = find_order(case, query.get("stop", ""))
        if stop is not None:
            account = order_account(stop)
            typed.update(
                institution=account.institution_code,
                account=account.account_number,
                holder=account.holder_name,
                amount=yuan_text(stop.held_fen or stop.instruction.stop.amount_fen),
                stop_order_id=stop.order_id if stop.kind == order_pb2.ORDER_KIND_STOP else "",
                renews_order_id=stop.order_id if stop.kind == order_pb2.ORDER_KIND_FREEZE else "",
            )
        typed.setdefault("term_months", "6")
    elif kind == "release":
        typed["target_order_id"] = query.get("target", "")
    elif kind == "return":
        freeze = find_order(case, query.get("freeze", ""))
        payers = [t.payer for t in case.report.transactions]
        victim = payers[0] if payers else account_pb2.AccountRef()
        typed.update(
            freeze_order_id=freeze.order_id if freeze else "",
            institution=victim.institution_code,
            account=victim.account_number,
            holder=victim.holder_name,
        )
        if freeze is not None:
            typed["amount"] = yuan_text(
                max(freeze.held_fen - pending_returns(case, freeze.order_id), 0)
            )
    return typed


def stop_form(form: Mapping[str, Any], case: case_pb2.Case, desk: Desk) -> Payload:
    errors: dict[str, str] = {}
    institution, number, holder = account_fields(form, errors)
    upstream = text_of(form, "upstream_order_id")
    if upstream and find_order(case, upstream) is None:
        errors["upstream_order_id"] = "This case has no such order."
    credits = credits_field(form, desk, errors)
    if not credits and not upstream and "transactions" not in errors:
        errors["transactions"] = (
            "Name the fraudulent credit(s) into the account: a stop needs their time and amount."
        )
    most = sum(f for _, f in credits) if credits else None
    amount = amount_field(form, "amount", errors, most=most)
    note = short_text(form, "note", errors)
    if errors:
        raise FormErrors(errors)
    return {
        "case_id": case.case_id,
        "institution": institution,
        "account": number,
        "holder": holder,
        "amount_fen": amount,
        "transactions": credits,
        "upstream_order_id": upstream,
        "note": note,
    }


def freeze_form(form: Mapping[str, Any], case: case_pb2.Case, desk: Desk) -> Payload:
    errors: dict[str, str] = {}
    institution, number, holder = account_fields(form, errors)
    amount = amount_field(form, "amount", errors)
    filed = short_text(
        form,
        "filed_case_number",
        errors,
        required="Give the filed criminal case number.",
        limit=64,
    )
    authority = short_text(
        form,
        "approving_authority",
        errors,
        required="Give the authority that approved it.",
        limit=200,
    )
    term = text_of(form, "term_months")
    if term not in ("6", "12"):
        errors["term_months"] = "A freeze lasts 6 months, or 12 for a major case."
    stop_id = text_of(form, "stop_order_id")
    renews = text_of(form, "renews_order_id")
    for name, order_id in (("stop_order_id", stop_id), ("renews_order_id", renews)):
        if order_id and find_order(case, order_id) is None:
            errors[name] = "This case has no such order."
    note = short_text(form, "note", errors)
    if errors:
        raise FormErrors(errors)
    return {
        "case_id": case.case_id,
        "institution": institution,
        "account": number,
        "holder": holder,
        "amount_fen": amount,
        "filed_case_number": filed,
        "approving_authority": authority,
        "term_months": int(term),
        "stop_order_id": stop_id,
        "renews_order_id": renews,
        "note": note,
    }


def release_form(form: Mapping[str, Any], case: case_pb2.Case, desk: Desk) -> Payload:
    errors: dict[str, str] = {}
    target = text_of(form, "target_order_id")
    order = find_order(case, target)
    if order is None:
        errors["target_order_id"] = "Choose the stop or freeze to release."
    elif order.kind not in (order_pb2.ORDER_KIND_STOP, order_pb2.ORDER_KIND_FREEZE):
        errors["target_order_id"] = "Only a stop or a freeze holds money to release."
    reason = short_text(
        form, "reason", errors, required="Say why: the institution and the holder are told."
    )
    if errors:
        raise FormErrors(errors)
    return {"case_id": case.case_id, "target_order_id": target, "reason": reason}


def return_form(form: Mapping[str, Any], case: case_pb2.Case, desk: Desk) -> Payload:
    errors: dict[str, str] = {}
    freeze_id = text_of(form, "freeze_order_id")
    freeze = find_order(case, freeze_id)
    most = None
    if freeze is None or freeze.kind != order_pb2.ORDER_KIND_FREEZE:
        errors["freeze_order_id"] = "Choose the freeze that holds the money."
    else:
        most = max(freeze.held_fen - pending_returns(case, freeze_id), 0)
    institution, number, holder = account_fields(form, errors)
    amount = amount_field(form, "amount", errors, most=most)
    note = short_text(form, "note", errors)
    if errors:
        raise FormErrors(errors)
    return {
        "case_id": case.case_id,
        "freeze_order_id": freeze_id,
        "institution": institution,
        "account": number,
        "holder": holder,
        "amount_fen": amount,
        "note": note,
    }


def account_ref(p: Payload, prefix: str = "") -> account_pb2.AccountRef:
    return account_pb2.AccountRef(
        institution_code=p[prefix + "institution"],
        account_number=p[prefix + "account"],
        holder_name=p.get(prefix + "holder", ""),
    )


def instruction_of(kind: str, p: Payload) -> order_pb2.OrderInstruction:
    pb = order_pb2.OrderInstruction(case_id=p["case_id"], note=p.get("note", ""))
    if kind == "stop":
        pb.stop.account.CopyFrom(account_ref(p))
        pb.stop.amount_fen = p["amount_fen"]
        pb.stop.upstream_order_id = p["upstream_order_id"]
        for when, fen in p["transactions"]:
            fact = pb.stop.transactions.add(amount_fen=fen)
            fact.transaction_time.FromDatetime(datetime.fromisoformat(when))
    elif kind == "freeze":
        pb.freeze.account.CopyFrom(account_ref(p))
        pb.freeze.amount_fen = p["amount_fen"]
        pb.freeze.filed_case_number = p["filed_case_number"]
        pb.freeze.approving_authority = p["approving_authority"]
        pb.freeze.term_months = p["term_months"]
        pb.freeze.stop_order_id = p["stop_order_id"]
        pb.freeze.renews_order_id = p["renews_order_id"]
    elif kind == "release":
        pb.release.target_order_id = p["target_order_id"]
        pb.release.reason = p["reason"]
    else:
        pb.fund_return.freeze_order_id = p["freeze_order_id"]
        pb.fund_return.beneficiary.CopyFrom(account_ref(p))
        pb.fund_return.amount_fen = p["amount_fen"]
    return pb


def describe_order(kind: str, p: Payload) -> str:
    if kind == "release":
        return f"release {p['target_order_id']} in case {p['case_id']}"
    where = f"{p['institution']}/{p['account']}"
    amount = yuan_text(p["amount_fen"])
    if kind == "return":
        return f"return ¥{amount} from {p['freeze_order_id']} to {where} in case {p['case_id']}"
    return f"{kind} ¥{amount} at {where} in case {p['case_id']}"


def order_sender(kind: str) -> Any:
    async def send(client: HubClient, p: Payload) -> Done:
        order = await client.issue_order(instruction_of(kind, p))
        return Done(
            f"{kind} order {order.order_id} issued to {order.addressed_to}",
            f"/cases/{p['case_id']}",
            p["case_id"],
            order.origin_message_id,
        )

    return send


ORDER_FORMS = {
    "stop": stop_form,
    "freeze": freeze_form,
    "release": release_form,
    "return": return_form,
}
for _kind in ORDER_FORMS:
    register(
        Action(
            _kind,
            CENTRE,
            functools.partial(describe_order, _kind),
            order_sender(_kind),
        )
    )


async def order_page(request: Request) -> Response:
    if (refused := centre_only(request)) is not None:
        return refused
    desk = desk_of(request)
    case_id = request.path_params["case_id"]
    kind = request.path_params["kind"]
    _ = gettext_for(request)
    if kind not in ORDER_FORMS or not CASE_ID.match(case_id):
        return refuse(request, 404, _("There is no such page."))
    try:
        case = await desk.link.call(lambda c: c.get_case(case_id))
    except (HubError, HubSignatureError) as err:
        return render(request, "common/hub_refused.html", {"refusal": Refusal.of(err)}, status=502)
    context: dict[str, Any] = {"case": case, "kind": kind, "errors": {}, "refusal": None}
    if request.method == "GET":
        context["typed"] = prefill(case, kind, request.query_params, desk)
        return render(request, "centre/order.html", context)
    if not viewer_of(request).can_act:  # pragma: no cover - the decorator refuses first
        return refuse(request, 403, _("You can read this console but not act."))
    form = await request.form()
    context["typed"] = typed_of(form)
    try:
        payload = ORDER_FORMS[kind](form, case, desk)
    except FormErrors as err:
        context["errors"] = err.errors
        return render(request, "centre/order.html", context, status=400)
    outcome = await actions.take(desk, viewer_of(request), kind, payload)
    if outcome.refusal is not None:
        context["refusal"] = outcome.refusal
        return render(request, "centre/order.html", context, status=refusal_status(outcome.refusal))
    if outcome.proposal is not None:
        return RedirectResponse(f"/proposals/{outcome.proposal.id}", status_code=303)
    return RedirectResponse(f"/cases/{case_id}", status_code=303)


@page()
async def order_get(request: Request) -> Response:
    return await order_page(request)


@page(act=True)
async def order_post(request: Request) -> Response:
    return await order_page(request)


# ---- the standing auto-stop rule --------------------------------------------------------


def rule_form(form: Mapping[str, Any]) -> Payload:
    errors: dict[str, str] = {}
    rule_id = short_text(
        form, "rule_id", errors, required="Name the rule: orders record it.", limit=64
    )
    enabled = text_of(form, "enabled") == "1"
    follow = text_of(form, "follow_onward_transfers") == "1"
    most = 0
    if enabled or text_of(form, "max_amount"):
        most = amount_field(form, "max_amount", errors)
    layer_text = text_of(form, "max_layer") or "0"
    layer = int(layer_text) if layer_text.isdigit() else -1
    if not 0 <= layer <= MAX_LAYER or layer == 1:
        errors["max_layer"] = (
            "Downstream stops start at layer 2: give 2 to 20, or 0 for the hub's default (5)."
        )
    if errors:
        raise FormErrors(errors)
    return {
        "rule_id": rule_id,
        "enabled": enabled,
        "max_amount_fen": most,
        "follow_onward_transfers": follow,
        "max_layer": layer,
    }


def describe_rule(p: Payload) -> str:
    if not p["enabled"]:
        return f"auto-stop rule {p['rule_id']}: off"
    follow = (
        f", following onward transfers to layer {p['max_layer'] or 'default (5)'}"
        if p["follow_onward_transfers"]
        else ", not following onward transfers"
    )
    return f"auto-stop rule {p['rule_id']}: on up to ¥{yuan_text(p['max_amount_fen'])}{follow}"


async def send_rule(client: HubClient, p: Payload) -> Done:
    rule = await client.set_auto_stop_rule(
        order_pb2.AutoStopRule(
            rule_id=p["rule_id"],
            enabled=p["enabled"],
            max_amount_fen=p["max_amount_fen"],
            follow_onward_transfers=p["follow_onward_transfers"],
            max_layer=p["max_layer"],
        )
    )
    stored = {
        "rule_id": rule.rule_id,
        "enabled": rule.enabled,
        "max_amount_fen": rule.max_amount_fen,
        "follow_onward_transfers": rule.follow_onward_transfers,
        "max_layer": rule.max_layer,
    }
    return Done(describe_rule(stored) + " (in force at the hub)", "/rule?done=1")


register(Action("auto_stop_rule", CENTRE, describe_rule, send_rule, lambda p: ""))


@page()
async def rule_page(request: Request) -> Response:
    if (refused := centre_only(request)) is not None:
        return refused
    desk = desk_of(request)
    context: dict[str, Any] = {"errors": {}, "refusal": None, "done": False}
    with desk.db() as s:
        last = s.scalars(
            select(JournalEntry)
            .where(JournalEntry.action == "auto_stop_rule", JournalEntry.outcome == "done")
            .order_by(JournalEntry.id.desc())
            .limit(1)
        ).first()
    context["last"] = last
    typed = {
        "rule_id": "",
        "enabled": "1",
        "max_amount": "",
        "follow_onward_transfers": "",
        "max_layer": "0",
    }
    if request.method == "GET":
        context["typed"] = typed
        context["done"] = request.query_params.get("done") == "1"
        return render(request, "centre/rule.html", context)
    if not viewer_of(request).can_act:
        return refuse(request, 403, gettext_for(request)("You can read this console but not act."))
    form = await request.form()
    context["typed"] = typed_of(form)
    try:
        payload = rule_form(form)
    except FormErrors as err:
        context["errors"] = err.errors
        return render(request, "centre/rule.html", context, status=400)
    outcome = await actions.take(desk, viewer_of(request), "auto_stop_rule", payload)
    if outcome.refusal is not None:
        context["refusal"] = outcome.refusal
        return render(request, "centre/rule.html", context, status=refusal_status(outcome.refusal))
    if outcome.proposal is not None:
        return RedirectResponse(f"/proposals/{outcome.proposal.id}", status_code=303)
    return RedirectResponse("/rule?done=1", status_code=303)


@page()
async def rule_get(request: Request) -> Response:
    return await rule_page(request)


@page(act=True)
async def rule_post(request: Request) -> Response:
    return await rule_page(request)


# ---- a case's grade (docs/grades.md) ----------------------------------------------------------

CASE_GRADES = {
    "red": grade_pb2.GRADE_RED,
    "yellow": grade_pb2.GRADE_YELLOW,
    "green": grade_pb2.GRADE_GREEN,
}


def case_grade_form(form: Mapping[str, Any], case_id: str) -> Payload:
    errors: dict[str, str] = {}
    grade = text_of(form, "grade")
    if grade not in CASE_GRADES:
        errors["grade"] = "Choose the grade: red, yellow or green."
    reason = short_text(form, "reason", errors, required="Say why the grade changes.", limit=500)
    if errors:
        raise FormErrors(errors)
    return {"case_id": case_id, "grade": grade, "reason": reason}


async def send_case_grade(client: HubClient, p: Payload) -> Done:
    case = await client.set_case_grade(p["case_id"], CASE_GRADES[p["grade"]], p["reason"])
    return Done(f"case {case.case_id} graded {p['grade']}", f"/cases/{case.case_id}", case.case_id)


register(
    Action(
        "case_grade", CENTRE, lambda p: f"grade case {p['case_id']} {p['grade']}", send_case_grade
    )
)


@page(act=True)
async def case_grade(request: Request) -> Response:
    if (refused := centre_only(request)) is not None:
        return refused
    _ = gettext_for(request)
    case_id = request.path_params["case_id"]
    if not CASE_ID.match(case_id):
        return refuse(request, 404, _("There is no such page."))
    form = await request.form()
    try:
        payload = case_grade_form(form, case_id)
    except FormErrors as err:
        return render(
            request, "refused.html", {"message": _(next(iter(err.errors.values())))}, status=400
        )
    outcome = await actions.take(desk_of(request), viewer_of(request), "case_grade", payload)
    if outcome.refusal is not None:
        r = outcome.refusal
        line = f"{_(r.explained)} {r.message}" if r.explained else r.message
        return render(
            request,
            "refused.html",
            {"message": _("The hub refused this.") + f" {line}"},
            status=refusal_status(r),
        )
    went = led_to(outcome)
    assert went is not None
    return went


# ---- the list -------------------------------------------------------------------------------


def publish_form(form: Mapping[str, Any]) -> Payload:
    errors: dict[str, str] = {}
    kind = text_of(form, "kind")
    payload: Payload = {"kind": kind}
    if kind == "account":
        institution, number, holder = account_fields(form, errors)
        payload.update(institution=institution, account=number, holder=holder)
    elif kind == "person":
        id_number = text_of(form, "id_number").upper()
        if not ID_NUMBER.match(id_number):
            errors["id_number"] = "An ID number is 18 characters: 17 digits and a digit or X."
        name = short_text(form, "name", errors, required="Give the person's name.", limit=200)
        payload.update(id_number=id_number, name=name)
    else:
        errors["kind"] = "List an account or a person."
    basis = text_of(form, "basis")
    if basis not in BASES:
        errors["basis"] = "Choose the basis: it sets the term."
    reason = short_text(form, "reason", errors, required="Say why: the party is told.")
    source = text_of(form, "source_case_id")
    if not CASE_ID.match(source):
        errors["source_case_id"] = "Name the case the listing comes from."
    if errors:
        raise FormErrors(errors)
    payload.update(basis=basis, reason=reason, source_case_id=source)
    return payload


def describe_publish(p: Payload) -> str:
    who = (
        f"account {p['institution']}/{p['account']}"
        if p["kind"] == "account"
        else f"person {p['id_number'][:6]}…"
    )
    return f"list {who} ({p['basis']}, from case {p['source_case_id']})"


async def send_publish(client: HubClient, p: Payload) -> Done:
    if p["kind"] == "account":
        record = await client.publish_list_entry(
            account=(p["institution"], p["account"], p["holder"]),
            basis=BASES[p["basis"]],
            reason=p["reason"],
            source_case_id=p["source_case_id"],
        )
    else:
        record = await client.publish_list_entry(
            person=(p["id_number"], p["name"]),
            basis=BASES[p["basis"]],
            reason=p["reason"],
            source_case_id=p["source_case_id"],
        )
    return Done(
        f"list entry {record.entry.entry_id} published",
        f"/lists?done={record.entry.entry_id}",
        p["source_case_id"],
    )


def remove_form(form: Mapping[str, Any]) -> Payload:
    errors: dict[str, str] = {}
    entry_id = text_of(form, "entry_id")
    if not ORDER_ID.match(entry_id):
        errors["entry_id"] = "Which entry? Remove it from the list below."
    reason = short_text(
        form, "reason", errors, required="Say why the listing ends: the party is told."
    )
    if errors:
        raise FormErrors(errors)
    return {"entry_id": entry_id, "reason": reason, "case_id": text_of(form, "case_id")}


async def send_remove(client: HubClient, p: Payload) -> Done:
    record = await client.remove_list_entry(p["entry_id"], p["reason"])
    return Done(
        f"list entry {record.entry.entry_id} removed", f"/lists?done={record.entry.entry_id}"
    )


register(
    Action(
        "list_publish",
        CENTRE,
        describe_publish,
        send_publish,
        lambda p: str(p.get("source_case_id", "")),
    )
)
register(Action("list_remove", CENTRE, lambda p: f"remove list entry {p['entry_id']}", send_remove))


async def list_copy(desk: Desk) -> tuple[list[blacklist_pb2.ListEntry], int, int]:
    """The live entries in clear (a SyncList snapshot), the count and the version the hub's
    signed checkpoint states."""

    async def read(client: HubClient) -> tuple[list[blacklist_pb2.ListEntry], int, int]:
        entries: list[blacklist_pb2.ListEntry] = []
        async for part in client.sync_list(0, blacklist_pb2.LIST_FORM_CLEAR, timeout=20):
            which = part.WhichOneof("part")
            if which == "entries":
                entries.extend(part.entries.entries)
            elif which == "changes":
                for change in part.changes.changes:
                    if change.op == blacklist_pb2.LIST_CHANGE_OP_ADD:
                        entries.append(change.entry)
                    else:
                        entries = [e for e in entries if e.entry_id != change.entry_id]
            elif which == "checkpoint":
                point = client.open_checkpoint(part.checkpoint)
                return entries, point.entry_count, point.version
        return entries, len(entries), 0

    return await desk.link.call(read)


async def lists_page(request: Request, context: dict[str, Any], status: int = 200) -> Response:
    desk = desk_of(request)
    entries: list[blacklist_pb2.ListEntry] = []
    count = version = 0
    list_refusal = None
    try:
        entries, count, version = await list_copy(desk)
    except (HubError, HubSignatureError) as err:
        list_refusal = Refusal.of(err)
    entries.sort(key=lambda e: e.listed_time.seconds, reverse=True)
    context.setdefault("errors", {})
    context.setdefault("refusal", None)
    context.setdefault("typed", {})
    context.setdefault("remove_typed", {})
    context.setdefault("remove_errors", {})
    context.setdefault("remove_refusal", None)
    return render(
        request,
        "centre/lists.html",
        {
            **context,
            "entries": entries[:300],
            "count": count,
            "version": version,
            "list_refusal": list_refusal,
            "terms": TERMS,
            "ts": ts,
            "done": request.query_params.get("done", ""),
        },
        status=status,
    )


@page()
async def lists(request: Request) -> Response:
    if (refused := centre_only(request)) is not None:
        return refused
    q = request.query_params
    typed = {
        "kind": "account" if q.get("account") or not q.get("id_number") else "person",
        "institution": q.get("institution", ""),
        "account": q.get("account", ""),
        "holder": q.get("holder", ""),
        "id_number": q.get("id_number", ""),
        "name": q.get("name", ""),
        "basis": "account_trader",
        "source_case_id": q.get("case", ""),
    }
    return await lists_page(request, {"typed": typed})


@page(act=True)
async def list_publish(request: Request) -> Response:
    if (refused := centre_only(request)) is not None:
        return refused
    desk = desk_of(request)
    form = await request.form()
    typed = typed_of(form)
    try:
        payload = publish_form(form)
    except FormErrors as err:
        return await lists_page(request, {"typed": typed, "errors": err.errors}, 400)
    outcome = await actions.take(desk, viewer_of(request), "list_publish", payload)
    if outcome.refusal is not None:
        return await lists_page(
            request, {"typed": typed, "refusal": outcome.refusal}, refusal_status(outcome.refusal)
        )
    went = led_to(outcome)
    assert went is not None
    return went


@page(act=True)
async def list_remove(request: Request) -> Response:
    if (refused := centre_only(request)) is not None:
        return refused
    desk = desk_of(request)
    form = await request.form()
    typed = typed_of(form)
    try:
        payload = remove_form(form)
    except FormErrors as err:
        return await lists_page(request, {"remove_typed": typed, "remove_errors": err.errors}, 400)
    outcome = await actions.take(desk, viewer_of(request), "list_remove", payload)
    if outcome.refusal is not None:
        return await lists_page(
            request,
            {"remove_typed": typed, "remove_refusal": outcome.refusal},
            refusal_status(outcome.refusal),
        )
    went = led_to(outcome)
    assert went is not None
    return went


# ---- notices this console keeps -----------------------------------------------------------


def stored_notices(
    desk: Desk, kind: delivery_pb2.NoticeKind.ValueType
) -> list[delivery_pb2.Notice]:
    """The notices of `kind` the hub delivered to this console (verified when received)."""
    name = delivery_pb2.NoticeKind.Name(kind)
    with desk.db() as s:
        rows = list(
            s.scalars(
                select(StoredDelivery)
                .where(StoredDelivery.kind == name)
                .order_by(StoredDelivery.sequence.desc())
                .limit(500)
            )
        )
    found = []
    for row in rows:
        envelope = envelope_pb2.Envelope.FromString(row.envelope)
        found.append(delivery_pb2.Notice.FromString(envelope.body))
    return found


# ---- appeals --------------------------------------------------------------------------------


APPEAL_STATES = {
    appeal_pb2.APPEAL_STATE_FILED: "filed",
    appeal_pb2.APPEAL_STATE_UPHELD: "upheld",
    appeal_pb2.APPEAL_STATE_REJECTED: "rejected",
}


async def known_appeals(desk: Desk) -> tuple[list[appeal_pb2.Appeal], bool]:
    """Every appeal the hub holds (ListAppeals), newest first; always complete."""
    listed = await desk.link.call(lambda c: c.list_appeals(page_size=200))
    return list(listed), True


@page()
async def appeals(request: Request) -> Response:
    if (refused := centre_only(request)) is not None:
        return refused
    desk = desk_of(request)
    wanted = request.query_params.get("id", "").strip()
    if wanted and ORDER_ID.match(wanted):
        return RedirectResponse(f"/appeals/{wanted}", status_code=303)
    found: list[appeal_pb2.Appeal] = []
    complete = False
    refusal = None
    try:
        found, complete = await known_appeals(desk)
    except (HubError, HubSignatureError) as err:
        refusal = Refusal.of(err)
    now = desk.clock.now()
    rows = [
        {
            "a": a,
            "state": APPEAL_STATES.get(a.state, "unknown"),
            "deadline": ts(a.decide_by_time),
            "start": ts(a.file_time),
            "clock": countdown(ts(a.decide_by_time), ts(a.file_time), now),
        }
        for a in found
    ]
    rows.sort(key=lambda r: (r["state"] != "filed", r["deadline"] or now))
    return render(
        request,
        "centre/appeals.html",
        {"rows": rows, "complete": complete, "refusal": refusal, "ts": ts},
    )


async def contested(desk: Desk, appeal: appeal_pb2.Appeal) -> dict[str, Any]:
    """What the appeal contests: the order (account, amount, state) or the listing."""
    found: dict[str, Any] = {}
    if appeal.case_id and appeal.reference_kind in ("stop", "freeze"):
        try:
            case = await desk.link.call(lambda c: c.get_case(appeal.case_id))
        except (HubError, HubSignatureError):
            return found
        order = find_order(case, appeal.reference)
        if order is not None:
            found["order"] = order
            found["account"] = order_account(order)
            found["order_state"] = state_name(order_pb2.OrderState, order.state, "ORDER_STATE_")
    return found


def appeal_decide_form(form: Mapping[str, Any], appeal_id: str) -> Payload:
    errors: dict[str, str] = {}
    decision = text_of(form, "decision")
    if decision not in ("uphold", "reject"):
        errors["decision"] = "Uphold or reject the appeal."
    reason = short_text(
        form, "reason", errors, required="Give the reason: the appellant is told it."
    )
    if errors:
        raise FormErrors(errors)
    return {
        "appeal_id": appeal_id,
        "uphold": decision == "uphold",
        "reason": reason,
        "case_id": text_of(form, "case_id"),
    }


async def send_appeal_decision(client: HubClient, p: Payload) -> Done:
    appeal = await client.decide_appeal(p["appeal_id"], p["uphold"], p["reason"])
    return Done(
        f"appeal {appeal.appeal_id} {APPEAL_STATES.get(appeal.state, 'decided')}",
        f"/appeals/{appeal.appeal_id}",
        appeal.case_id,
    )


register(
    Action(
        "appeal_decide",
        CENTRE,
        lambda p: f"{'uphold' if p['uphold'] else 'reject'} appeal {p['appeal_id']}",
        send_appeal_decision,
    )
)


async def appeal_page(request: Request) -> Response:
    if (refused := centre_only(request)) is not None:
        return refused
    desk = desk_of(request)
    appeal_id = request.path_params["appeal_id"]
    if not ORDER_ID.match(appeal_id):
        return refuse(request, 404, gettext_for(request)("There is no such appeal."))
    try:
        appeal = await desk.link.call(lambda c: c.get_appeal(appeal_id))
    except (HubError, HubSignatureError) as err:
        return render(request, "common/hub_refused.html", {"refusal": Refusal.of(err)}, status=502)
    now = desk.clock.now()
    context: dict[str, Any] = {
        "a": appeal,
        "state": APPEAL_STATES.get(appeal.state, "unknown"),
        "clock": countdown(ts(appeal.decide_by_time), ts(appeal.file_time), now),
        "deadline": ts(appeal.decide_by_time),
        "start": ts(appeal.file_time),
        "ts": ts,
        "errors": {},
        "refusal": None,
        "typed": {},
        **(await contested(desk, appeal)),
    }
    if request.method == "GET":
        return render(request, "centre/appeal.html", context)
    form = await request.form()
    context["typed"] = typed_of(form)
    try:
        payload = appeal_decide_form(form, appeal_id)
    except FormErrors as err:
        context["errors"] = err.errors
        return render(request, "centre/appeal.html", context, status=400)
    outcome = await actions.take(desk, viewer_of(request), "appeal_decide", payload)
    if outcome.refusal is not None:
        context["refusal"] = outcome.refusal
        return render(
            request, "centre/appeal.html", context, status=refusal_status(outcome.refusal)
        )
    if outcome.proposal is not None:
        return RedirectResponse(f"/proposals/{outcome.proposal.id}", status_code=303)
    return RedirectResponse(f"/appeals/{appeal_id}", status_code=303)


@page()
async def appeal_get(request: Request) -> Response:
    return await appeal_page(request)


@page(act=True)
async def appeal_post(request: Request) -> Response:
    return await appeal_page(request)


# ---- distributions --------------------------------------------------------------------------


DISTRIBUTION_STATES = {
    returns_pb2.DISTRIBUTION_STATE_NOTICE: "notice",
    returns_pb2.DISTRIBUTION_STATE_DECIDED: "decided",
    returns_pb2.DISTRIBUTION_STATE_WITHDRAWN: "withdrawn",
}
STARTED = re.compile(r"^distribution (\S+) started")


def start_form(form: Mapping[str, Any]) -> Payload:
    errors: dict[str, str] = {}
    case_id = text_of(form, "case_id")
    if not CASE_ID.match(case_id):
        errors["case_id"] = "Name a case whose money reached the account."
    institution, number, _holder = account_fields(form, errors, holder=False)
    traced: list[list[Any]] = []
    for i, line in enumerate(text_of(form, "traced").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(None, 2)
        fen = fen_of(parts[1]) if len(parts) > 1 else None
        if len(parts) < 3 or not CASE_ID.match(parts[0]) or fen is None or fen <= 0:
            errors["traced"] = (
                f"Line {i}: write the case, the amount in yuan and the evidence, for example "
                "C20260302-0001 3000.00 bank statement of 2 March."
            )
            break
        traced.append([parts[0], fen, parts[2].strip()])
    note = short_text(form, "note", errors)
    if errors:
        raise FormErrors(errors)
    return {
        "case_id": case_id,
        "institution": institution,
        "account": number,
        "traced": traced,
        "note": note,
    }


async def send_start(client: HubClient, p: Payload) -> Done:
    body = returns_pb2.StartDistributionBody(
        case_id=p["case_id"],
        account=account_pb2.AccountRef(
            institution_code=p["institution"], account_number=p["account"]
        ),
        traced=[
            returns_pb2.TracedAmount(case_id=c, amount_fen=f, evidence=e) for c, f, e in p["traced"]
        ],
        note=p["note"],
    )
    d = await client.start_distribution(body)
    return Done(
        f"distribution {d.distribution_id} started for {p['institution']}/{p['account']}",
        f"/distributions/{d.distribution_id}",
        p["case_id"],
    )


def object_form(form: Mapping[str, Any], distribution_id: str) -> Payload:
    errors: dict[str, str] = {}
    grounds = short_text(form, "grounds", errors, required="Say what the objection is.")
    if errors:
        raise FormErrors(errors)
    return {
        "distribution_id": distribution_id,
        "grounds": grounds,
        "case_id": text_of(form, "case_id"),
    }


async def send_object(client: HubClient, p: Payload) -> Done:
    d = await client.object_to_distribution(p["distribution_id"], p["grounds"])
    return Done(
        f"objection to {d.distribution_id} recorded",
        f"/distributions/{d.distribution_id}",
        d.case_id,
    )


def decide_form(form: Mapping[str, Any], distribution_id: str, objections: int) -> Payload:
    errors: dict[str, str] = {}
    decision = text_of(form, "decision")
    if decision not in ("confirm", "withdraw"):
        errors["decision"] = "Confirm the shares or withdraw the distribution."
    need = decision == "withdraw" or objections > 0
    reason = short_text(
        form,
        "reason",
        errors,
        required="Give the reason: it is required to withdraw, or when objections were filed."
        if need
        else "",
    )
    if errors:
        raise FormErrors(errors)
    return {
        "distribution_id": distribution_id,
        "confirm": decision == "confirm",
        "reason": reason,
        "case_id": text_of(form, "case_id"),
    }


async def send_decide(client: HubClient, p: Payload) -> Done:
    d = await client.decide_distribution(p["distribution_id"], p["confirm"], p["reason"])
    return Done(
        f"distribution {d.distribution_id} {DISTRIBUTION_STATES.get(d.state, 'decided')}",
        f"/distributions/{d.distribution_id}",
        d.case_id,
    )


register(
    Action(
        "distribution_start",
        CENTRE,
        lambda p: (
            f"start distribution of {p['institution']}/{p['account']} from case {p['case_id']}"
        ),
        send_start,
    )
)
register(
    Action(
        "distribution_object",
        CENTRE,
        lambda p: f"object to distribution {p['distribution_id']}",
        send_object,
    )
)
register(
    Action(
        "distribution_decide",
        CENTRE,
        lambda p: (
            f"{'confirm' if p['confirm'] else 'withdraw'} distribution {p['distribution_id']}"
        ),
        send_decide,
    )
)


def known_distributions(desk: Desk) -> list[str]:
    """Distribution ids this console started or was told of (there is no RPC listing them)."""
    ids: list[str] = []
    with desk.db() as s:
        for entry in s.scalars(
            select(JournalEntry)
            .where(JournalEntry.action == "distribution_start", JournalEntry.outcome == "done")
            .order_by(JournalEntry.id.desc())
            .limit(200)
        ):
            match = STARTED.match(entry.detail)
            if match and match.group(1) not in ids:
                ids.append(match.group(1))
    for kind in (
        delivery_pb2.NOTICE_KIND_DISTRIBUTION,
        delivery_pb2.NOTICE_KIND_PUBLIC_NOTICE_ENDED,
    ):
        for notice in stored_notices(desk, kind):
            d_id = notice.distribution.distribution_id
            if d_id and d_id not in ids:
                ids.append(d_id)
    return ids


async def distributions_page(
    request: Request, context: dict[str, Any], status: int = 200
) -> Response:
    desk = desk_of(request)
    rows = []
    for d_id in known_distributions(desk)[:50]:
        try:
            d = await desk.link.call(
                functools.partial(HubClient.get_distribution, distribution_id=d_id)
            )
        except (HubError, HubSignatureError):
            continue
        rows.append({"d": d, "state": DISTRIBUTION_STATES.get(d.state, "unknown")})
    context.setdefault("errors", {})
    context.setdefault("refusal", None)
    context.setdefault("typed", {})
    return render(
        request, "centre/distributions.html", {**context, "rows": rows, "ts": ts}, status=status
    )


@page()
async def distributions(request: Request) -> Response:
    if (refused := centre_only(request)) is not None:
        return refused
    q = request.query_params
    if q.get("id"):
        d_id = q["id"].strip()
        if ORDER_ID.match(d_id):
            return RedirectResponse(f"/distributions/{d_id}", status_code=303)
    typed = {
        "case_id": q.get("case", ""),
        "institution": q.get("institution", ""),
        "account": q.get("account", ""),
    }
    return await distributions_page(request, {"typed": typed})


@page(act=True)
async def distribution_start(request: Request) -> Response:
    if (refused := centre_only(request)) is not None:
        return refused
    desk = desk_of(request)
    form = await request.form()
    typed = typed_of(form)
    try:
        payload = start_form(form)
    except FormErrors as err:
        return await distributions_page(request, {"typed": typed, "errors": err.errors}, 400)
    outcome = await actions.take(desk, viewer_of(request), "distribution_start", payload)
    if outcome.refusal is not None:
        return await distributions_page(
            request, {"typed": typed, "refusal": outcome.refusal}, refusal_status(outcome.refusal)
        )
    went = led_to(outcome)
    assert went is not None
    return went


async def distribution_page(request: Request) -> Response:
    if (refused := centre_only(request)) is not None:
        return refused
    desk = desk_of(request)
    d_id = request.path_params["distribution_id"]
    if not ORDER_ID.match(d_id):
        return refuse(request, 404, gettext_for(request)("There is no such distribution."))
    try:
        d = await desk.link.call(lambda c: c.get_distribution(d_id))
    except (HubError, HubSignatureError) as err:
        return render(request, "common/hub_refused.html", {"refusal": Refusal.of(err)}, status=502)
    now = desk.clock.now()
    notice_end = ts(d.notice_end_time)
    context: dict[str, Any] = {
        "d": d,
        "state": DISTRIBUTION_STATES.get(d.state, "unknown"),
        "method": state_name(returns_pb2.DistributionMethod, d.method, "DISTRIBUTION_METHOD_"),
        "notice_end": notice_end,
        "notice_running": d.state == returns_pb2.DISTRIBUTION_STATE_NOTICE
        and notice_end is not None
        and now < notice_end,
        "clock": countdown(notice_end, ts(d.start_time), now),
        "ts": ts,
        "errors": {},
        "refusal": None,
        "typed": {},
        "which": "",
    }
    if request.method == "GET":
        return render(request, "centre/distribution.html", context)
    what = request.path_params.get("what", "")
    form = await request.form()
    context["typed"] = typed_of(form)
    context["which"] = what
    try:
        if what == "object":
            name, payload = "distribution_object", object_form(form, d_id)
        else:
            name, payload = "distribution_decide", decide_form(form, d_id, len(d.objections))
    except FormErrors as err:
        context["errors"] = err.errors
        return render(request, "centre/distribution.html", context, status=400)
    outcome = await actions.take(desk, viewer_of(request), name, payload)
    if outcome.refusal is not None:
        context["refusal"] = outcome.refusal
        return render(
            request, "centre/distribution.html", context, status=refusal_status(outcome.refusal)
        )
    if outcome.proposal is not None:
        return RedirectResponse(f"/proposals/{outcome.proposal.id}", status_code=303)
    return RedirectResponse(f"/distributions/{d_id}", status_code=303)


@page()
async def distribution_get(request: Request) -> Response:
    return await distribution_page(request)


@page(act=True)
async def distribution_post(request: Request) -> Response:
    return await distribution_page(request)


ROUTES: list[BaseRoute] = [
    Route("/queue", queue),
    Route("/queue/claim", claim, methods=["POST"]),
    Route("/queue/release", unclaim, methods=["POST"]),
    Route("/queue/next", next_case, methods=["POST"]),
    Route("/cases/{case_id}/grade", case_grade, methods=["POST"]),
    Route("/cases/{case_id}/order/{kind}", order_get, methods=["GET"]),
    Route("/cases/{case_id}/order/{kind}", order_post, methods=["POST"]),
    Route("/rule", rule_get, methods=["GET"]),
    Route("/rule", rule_post, methods=["POST"]),
    Route("/lists", lists),
    Route("/lists/publish", list_publish, methods=["POST"]),
    Route("/lists/remove", list_remove, methods=["POST"]),
    Route("/appeals", appeals),
    Route("/appeals/{appeal_id}", appeal_get, methods=["GET"]),
    Route("/appeals/{appeal_id}", appeal_post, methods=["POST"]),
    Route("/distributions", distributions),
    Route("/distributions/start", distribution_start, methods=["POST"]),
    Route("/distributions/{distribution_id}", distribution_get, methods=["GET"]),
    Route("/distributions/{distribution_id}/{what}", distribution_post, methods=["POST"]),
]
