"""The member desk (a bank or payment institution): the counter form that files a victim's
report, the verification of its own reports, the inbox of orders addressed to it with their
clocks, the answer form, and its appeals. Every action is one signed message to the hub."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import select
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from adapters.console import actions
from adapters.console.actions import Action, Done, FormErrors, Payload, Refusal, register
from adapters.console.models import JournalEntry, StoredDelivery
from adapters.console.pages.common import (
    CASE_ID,
    led_to,
    order_account,
    order_amount,
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
    case_pb2,
    delivery_pb2,
    envelope_pb2,
    institution_pb2,
    order_pb2,
    sla_pb2,
)

# What the hub accepts (hub/domain/cases.py, hub/domain/institutions.py): checked here first
# so that an officer hears about a typo before anything is signed.
ACCOUNT = re.compile(r"^[0-9A-Za-z-]{4,40}$")
CODE = re.compile(r"^[A-Z0-9][A-Z0-9_-]{1,31}$")
ORDER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
YUAN = re.compile(r"^(\d{1,12})(?:\.(\d{1,2}))?$")
MAX_FEN = 10**14
FUTURE_TOLERANCE = timedelta(minutes=5)
MAX_TRANSACTIONS = 200
MAX_ROWS = 60
ROWS = 3
MAX_TEXT = 4000
MAX_REFERENCE = 128
KEEPERS = (
    institution_pb2.INSTITUTION_KIND_BANK,
    institution_pb2.INSTITUTION_KIND_PAYMENT_INSTITUTION,
)
TIME_FORMATS = ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S")

FRAUD_TYPES = [
    (state_name(case_pb2.FraudType, v, "FRAUD_TYPE_"), v)
    for v in case_pb2.FraudType.values()
    if v != case_pb2.FRAUD_TYPE_UNSPECIFIED
]
CHANNELS = [
    (state_name(case_pb2.PaymentChannel, v, "PAYMENT_CHANNEL_"), v)
    for v in case_pb2.PaymentChannel.values()
    if v != case_pb2.PAYMENT_CHANNEL_UNSPECIFIED
]
# docs/orders.md: the reason codes an answer may carry.
REASON_CODES = {
    "AM04": "insufficient funds",
    "AC04": "account closed",
    "AC01": "incorrect account number",
    "BE01": "inconsistent with end customer",
    "ARDT": "already returned",
    "CUST": "requested by the customer",
    "FRAD": "fraudulent origin",
    "LEGL": "legal decision",
    "NMAT": "the four facts do not match",
    "NOAS": "no answer from the account holder's institution",
    "NOHD": "nothing held",
}
HOLDS = (order_pb2.ORDER_KIND_STOP, order_pb2.ORDER_KIND_FREEZE)
HELD = (order_pb2.ORDER_STATE_HOLDING,)

MSG_ACCOUNT = "An account number is 4 to 40 letters, digits or '-' (no spaces)."
MSG_TIME = "Give a date and time as YYYY-MM-DD HH:MM (the console's time zone)."
MSG_FUTURE = "This time is in the future."
MSG_AMOUNT = "An amount in yuan greater than zero, with at most 2 decimals (for example 1234.56)."
MSG_AMOUNT0 = "An amount in yuan, 0 or more, with at most 2 decimals (for example 1234.56)."


def member_only(request: Request) -> Response | None:
    if desk_of(request).member:
        return None
    _ = gettext_for(request)
    return refuse(request, 404, _("This page is on a bank's or payment institution's console."))


# ---- reading what was typed -------------------------------------------------------------------


def to_fen(text: str, *, positive: bool) -> int | None:
    """'1,234.5' yuan -> 123450 fen; None when it is not an amount this form takes."""
    cleaned = text.strip().replace(",", "").replace("，", "").lstrip("¥￥").strip()
    m = YUAN.match(cleaned)
    if not m:
        return None
    fen = int(m.group(1)) * 100 + int((m.group(2) or "").ljust(2, "0") or 0)
    if (positive and fen <= 0) or fen > MAX_FEN:
        return None
    return fen


def fen_text(fen: int) -> str:
    return str((Decimal(fen) / 100).quantize(Decimal("0.01")))


def parse_local(text: str, zone: ZoneInfo) -> datetime | None:
    """A time typed in the console's zone, as an aware UTC datetime; None if unreadable."""
    cleaned = text.strip()
    for fmt in TIME_FORMATS:
        try:
            return datetime.strptime(cleaned, fmt).replace(tzinfo=zone).astimezone(UTC)
        except ValueError:
            continue
    return None


def local_input(moment: datetime | None, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%Y-%m-%dT%H:%M:%S") if moment else ""


def read_time(
    typed: str, name: str, errors: dict[str, str], desk: Desk, *, required: bool = True
) -> datetime | None:
    if not typed.strip():
        if required:
            errors[name] = MSG_TIME
        return None
    at = parse_local(typed, desk.zone)
    if at is None:
        errors[name] = MSG_TIME
    elif at > desk.clock.now() + FUTURE_TOLERANCE:
        errors[name] = MSG_FUTURE
    return at


def stamp(at: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(at.astimezone(UTC))
    return t


def text_of(form: FormData, name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


def row_count(form: FormData, more: bool) -> int:
    try:
        n = int(text_of(form, "rows") or ROWS)
    except ValueError:
        n = ROWS
    n = max(ROWS, min(n, MAX_ROWS))
    return min(n + ROWS, MAX_ROWS) if more else n


def read_rows(form: FormData, prefix: str, fields: tuple[str, ...], n: int) -> list[dict[str, str]]:
    return [{f: text_of(form, f"{prefix}{i}_{f}").strip() for f in fields} for i in range(n)]


def hub_refusal_status(err: HubError | HubSignatureError) -> int:
    if isinstance(err, HubSignatureError):
        return 502
    name = getattr(err.code, "name", "")
    return {"PERMISSION_DENIED": 403, "NOT_FOUND": 404}.get(name, 502)


def hub_refused(request: Request, err: HubError | HubSignatureError) -> Response:
    return render(
        request,
        "common/hub_refused.html",
        {"refusal": Refusal.of(err)},
        status=hub_refusal_status(err),
    )


async def keepers(desk: Desk) -> set[str] | None:
    """The codes of the member institutions that keep accounts; None if the hub is not
    reachable (then the hub decides when the form is sent)."""
    try:
        found = await desk.link.call(lambda c: c.list_institutions())
    except (HubError, HubSignatureError):
        return None
    return {i.code for i in found if i.kind in KEEPERS}


# ---- 1. the counter form: a victim's report ---------------------------------------------------

TX_FIELDS = (
    "time",
    "amount",
    "payee_institution",
    "payee_account",
    "payee_name",
    "channel",
    "reference",
)


def report_typed(form: FormData, more: bool = False) -> dict[str, Any]:
    n = row_count(form, more)
    return {
        **{
            k: text_of(form, k).strip()
            for k in (
                "victim_name",
                "victim_id",
                "victim_phone",
                "fraud_type",
                "reported_at",
                "payer_account",
            )
        },
        "description": text_of(form, "description"),
        "warning": text_of(form, "warning").strip()
        if WARNING_ID.match(text_of(form, "warning").strip())
        else "",
        "rows": n,
        "tx": read_rows(form, "tx", TX_FIELDS, n),
    }


def blank_row(row: Mapping[str, str], skip: tuple[str, ...] = ("channel",)) -> bool:
    return not any(v for k, v in row.items() if k not in skip)


def check_report(typed: dict[str, Any], desk: Desk, members: set[str] | None) -> Payload:
    """The payload of CreateReport, or FormErrors naming each form field that is wrong."""
    errors: dict[str, str] = {}
    if not typed["victim_name"]:
        errors["victim_name"] = "Give the victim's name."
    if len(typed["victim_id"]) > 64:
        errors["victim_id"] = "At most 64 characters."
    if len(typed["victim_phone"]) > 64:
        errors["victim_phone"] = "At most 64 characters."
    fraud = dict(FRAUD_TYPES).get(typed["fraud_type"])
    if fraud is None:
        errors["fraud_type"] = "Choose the kind of fraud."
    reported = read_time(typed["reported_at"], "reported_at", errors, desk, required=False)
    payer = typed["payer_account"]
    if not ACCOUNT.match(payer):
        errors["payer_account"] = MSG_ACCOUNT
    if len(typed["description"]) > MAX_TEXT:
        errors["description"] = "At most 4000 characters."
    transactions = []
    for i, row in enumerate(typed["tx"]):
        if blank_row(row):
            continue
        p = f"tx{i}_"
        at = read_time(row["time"], p + "time", errors, desk)
        amount = to_fen(row["amount"], positive=True)
        if amount is None:
            errors[p + "amount"] = MSG_AMOUNT
        institution = row["payee_institution"].upper()
        if not CODE.match(institution):
            errors[p + "payee_institution"] = (
                "Give the institution code of the payee's bank or payment institution."
            )
        elif members is not None and institution not in members:
            errors[p + "payee_institution"] = (
                "This is not a member bank or payment institution: the hub cannot stop an "
                "account there."
            )
        if not ACCOUNT.match(row["payee_account"]):
            errors[p + "payee_account"] = MSG_ACCOUNT
        elif (institution, row["payee_account"]) == (desk.institution, payer):
            errors[p + "payee_account"] = "The payee is the victim's own account."
        if not row["payee_name"]:
            errors[p + "payee_name"] = "Give the payee account holder's name."
        channel = dict(CHANNELS).get(row["channel"])
        if channel is None:
            errors[p + "channel"] = "Choose how the victim paid."
        if len(row["reference"]) > MAX_REFERENCE:
            errors[p + "reference"] = "At most 128 characters."
        transactions.append(
            {
                "time": at.isoformat() if at else "",
                "amount_fen": amount or 0,
                "payee_institution": institution,
                "payee_account": row["payee_account"],
                "payee_name": row["payee_name"],
                "channel": channel or 0,
                "reference": row["reference"],
                "row": i,
            }
        )
    if not transactions and "tx0_time" not in errors:
        errors["tx0_time"] = "Fill in at least one transfer: its time, amount and payee."
    if len(transactions) > MAX_TRANSACTIONS:
        errors["transactions"] = "At most 200 transfers in one report."
    if errors:
        raise FormErrors(errors)
    return {
        "victim": {
            "name": typed["victim_name"],
            "id_number": typed["victim_id"],
            "phone": typed["victim_phone"],
        },
        "fraud_type": fraud,
        "reported_at": reported.isoformat() if reported else "",
        "description": typed["description"],
        "payer_account": payer,
        "payer_name": typed["victim_name"],
        "transactions": transactions,
    }


def report_message(p: Payload, institution: str) -> case_pb2.Report:
    report = case_pb2.Report(
        victim=case_pb2.Victim(
            name=p["victim"]["name"],
            id_number=p["victim"]["id_number"],
            phone=p["victim"]["phone"],
        ),
        fraud_type=p["fraud_type"],
        description=p["description"],
    )
    if p["reported_at"]:
        report.victim_report_time.CopyFrom(stamp(datetime.fromisoformat(p["reported_at"])))
    for t in p["transactions"]:
        report.transactions.append(
            case_pb2.FraudTransaction(
                transaction_time=stamp(datetime.fromisoformat(t["time"])),
                amount_fen=t["amount_fen"],
                payer=account_pb2.AccountRef(
                    institution_code=institution,
                    account_number=p["payer_account"],
                    holder_name=p["payer_name"],
                ),
                payee=account_pb2.AccountRef(
                    institution_code=t["payee_institution"],
                    account_number=t["payee_account"],
                    holder_name=t["payee_name"],
                ),
                channel=t["channel"],
                transaction_reference=t["reference"],
            )
        )
    return report


async def _send_report(client: HubClient, p: Payload) -> Done:
    case = await client.create_report(report_message(p, client.institution))
    return Done(
        f"case {case.case_id} reported",
        f"/cases/{case.case_id}",
        case.case_id,
        case.report_message_id,
    )


register(
    Action(
        "report",
        frozenset({"bank", "payment_institution"}),
        lambda p: (
            f"report a loss of {sum(t['amount_fen'] for t in p['transactions'])} fen from "
            f"account {p['payer_account']} in {len(p['transactions'])} transfer(s)"
        ),
        _send_report,
        case_of=lambda p: "",
    )
)


# A report filed as the outcome of a warning whose customer had already lost the money
# (docs/warnings.md ALREADY_LOST): the same form, sent as ReportWarningOutcome.
WARNING_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def report_context(desk: Desk, typed: dict[str, Any]) -> dict[str, Any]:
    return {
        "typed": typed,
        "fraud_types": FRAUD_TYPES,
        "channels": CHANNELS,
        "now_input": local_input(desk.clock.now(), desk.zone),
        "max_rows": MAX_ROWS,
    }


@page()
async def report_form(request: Request) -> Response:
    if (wrong := member_only(request)) is not None:
        return wrong
    desk = desk_of(request)
    typed = report_typed(FormData(request.query_params))
    return render(request, "member/report.html", {**report_context(desk, typed), "errors": {}})


@page(act=True)
async def report_send(request: Request) -> Response:
    if (wrong := member_only(request)) is not None:
        return wrong
    desk = desk_of(request)
    form = await request.form()
    more = bool(text_of(form, "more"))
    typed = report_typed(form, more)
    context = report_context(desk, typed)
    if more:
        return render(request, "member/report.html", {**context, "errors": {}})
    try:
        payload = check_report(typed, desk, await keepers(desk))
    except FormErrors as err:
        return render(request, "member/report.html", {**context, "errors": err.errors}, status=400)
    if typed["warning"]:
        lost = {
            "warning_id": typed["warning"],
            "outcome": "already_lost",
            "loss_prevented_fen": 0,
            "text": payload["description"],
            "report": payload,
        }
        outcome = await actions.take(desk, viewer_of(request), "warning_outcome", lost)
    else:
        outcome = await actions.take(desk, viewer_of(request), "report", payload)
    return after(request, outcome, "member/report.html", context)


def after(
    request: Request, outcome: actions.Outcome, template: str, context: dict[str, Any]
) -> Response:
    """Where a taken action leads: its page, the proposal, or the same form with the hub's
    refusal and everything typed kept."""
    if (went := led_to(outcome)) is not None:
        return went
    refusal = outcome.refusal
    assert refusal is not None
    status = refusal_status(refusal)
    return render(request, template, {**context, "errors": {}, "refusal": refusal}, status=status)


# ---- 2. verifying its own report --------------------------------------------------------------


async def _send_verify(client: HubClient, p: Payload) -> Done:
    case = await client.verify_report(p["case_id"], p["confirmed"], p["reason"])
    what = "confirmed" if p["confirmed"] else "rejected"
    return Done(f"case {case.case_id} {what}", f"/cases/{case.case_id}", case.case_id)


register(
    Action(
        "verify",
        frozenset({"bank", "payment_institution"}),
        lambda p: (
            f"{'confirm' if p['confirmed'] else 'reject'} report {p['case_id']}"
            + (f": {p['reason']}" if p["reason"] else "")
        ),
        _send_verify,
    )
)


async def verify_context(desk: Desk, case_id: str) -> dict[str, Any]:
    case = await desk.link.call(lambda c: c.get_case(case_id))
    try:
        clocks = await desk.link.call(lambda c: c.list_clocks(case_id=case_id, open_only=True))
    except (HubError, HubSignatureError):
        clocks = []
    now = desk.clock.now()
    clock = next((k for k in clocks if k.clock == "verify"), None)
    deadline = ts(clock.deadline_time) if clock else None
    start = ts(clock.start_time) if clock else None
    return {
        "case": case,
        "state": state_name(case_pb2.CaseState, case.state, "CASE_STATE_"),
        "deadline": deadline,
        "start": start,
        "countdown": countdown(deadline, start, now),
        "mine": case.reporting_institution == desk.institution,
    }


@page()
async def verify_form(request: Request) -> Response:
    if (wrong := member_only(request)) is not None:
        return wrong
    desk = desk_of(request)
    case_id = request.path_params["case_id"]
    if not CASE_ID.match(case_id):
        return refuse(request, 404, gettext_for(request)("There is no such case."))
    try:
        context = await verify_context(desk, case_id)
    except (HubError, HubSignatureError) as err:
        return hub_refused(request, err)
    return render(
        request, "member/verify.html", {**context, "typed": {}, "errors": {}, "refusal": None}
    )


@page(act=True)
async def verify_send(request: Request) -> Response:
    if (wrong := member_only(request)) is not None:
        return wrong
    desk = desk_of(request)
    case_id = request.path_params["case_id"]
    if not CASE_ID.match(case_id):
        return refuse(request, 404, gettext_for(request)("There is no such case."))
    form = await request.form()
    typed = {"decision": text_of(form, "decision"), "reason": text_of(form, "reason").strip()}
    errors: dict[str, str] = {}
    if typed["decision"] not in ("confirm", "reject"):
        errors["decision"] = "Confirm or reject the report."
    if typed["decision"] == "reject" and not typed["reason"]:
        errors["reason"] = "Say why the report is rejected."
    if len(typed["reason"]) > MAX_TEXT:
        errors["reason"] = "At most 4000 characters."
    try:
        context = await verify_context(desk, case_id)
    except (HubError, HubSignatureError) as err:
        return hub_refused(request, err)
    context.update(typed=typed, errors=errors, refusal=None)
    if errors:
        return render(request, "member/verify.html", context, status=400)
    payload = {
        "case_id": case_id,
        "confirmed": typed["decision"] == "confirm",
        "reason": typed["reason"],
    }
    outcome = await actions.take(desk, viewer_of(request), "verify", payload)
    return after(request, outcome, "member/verify.html", context)


# ---- 3. the inbox of orders ---------------------------------------------------------------------


@dataclass
class InboxRow:
    order: order_pb2.Order
    case_id: str
    kind: str
    state: str
    pending: bool
    clock: sla_pb2.ClockView | None
    deadline: datetime | None
    start: datetime | None
    countdown: dict[str, Any]
    received: datetime | None = None
    sequence: int = 0
    notes: list[str] = field(default_factory=list)
    # A lapsed hold someone here said they released: (who, when), from the journal.
    released: tuple[str, datetime] | None = None

    @property
    def lapsed_hold(self) -> bool:
        return self.state == "expired" and self.kind in ("stop", "freeze")

    @property
    def left(self) -> float:
        value = self.countdown.get("left")
        return float(value) if value is not None else float("inf")


def open_notice(desk: Desk, row: StoredDelivery) -> delivery_pb2.Notice | None:
    """The notice inside a stored delivery, its hub signature checked again."""
    envelope = envelope_pb2.Envelope.FromString(row.envelope)
    try:
        return desk.link.client.open_hub_envelope(envelope, delivery_pb2.Notice)
    except HubSignatureError:
        return None


def stored_orders(desk: Desk) -> list[tuple[StoredDelivery, delivery_pb2.Notice]]:
    with desk.db() as s:
        rows = list(
            s.scalars(
                select(StoredDelivery)
                .where(StoredDelivery.kind == "NOTICE_KIND_ORDER")
                .order_by(StoredDelivery.sequence.desc())
                .limit(500)
            )
        )
    found = []
    for row in rows:
        notice = open_notice(desk, row)
        if notice is not None and notice.HasField("order"):
            found.append((row, notice))
    return found


async def inbox_rows(desk: Desk) -> tuple[list[InboxRow], Refusal | None]:
    """Orders addressed to this institution: those its delivery stream stored, and those its
    open clocks name (delivered before this console started), at their state at the hub now."""
    me = desk.institution
    refusal = None
    stored = stored_orders(desk)
    try:
        clocks = await desk.link.call(
            lambda c: c.list_clocks(institution=me, open_only=True, page_size=200)
        )
    except (HubError, HubSignatureError) as err:
        clocks, refusal = [], Refusal.of(err)
    by_order: dict[str, sla_pb2.ClockView] = {}
    for k in clocks:
        if k.order_id and k.state == sla_pb2.CLOCK_STATE_OPEN:
            best = by_order.get(k.order_id)
            if best is None or ts(k.deadline_time) < ts(best.deadline_time):  # type: ignore[operator]
                by_order[k.order_id] = k
    orders: dict[str, order_pb2.Order] = {}
    seen: dict[str, StoredDelivery] = {}
    for row, notice in reversed(stored):
        orders[notice.order.order_id] = notice.order
        seen[notice.order.order_id] = row
    # The hub's word now: each order's state in the cases this institution holds orders in,
    # the most urgent first (one page of ListCases; its cases come with their orders).
    if refusal is None:
        try:
            held, _token = await desk.link.call(
                lambda c: c.list_cases_page(
                    institution_code=me, order_by=case_pb2.CASE_ORDER_DEADLINE, page_size=100
                )
            )
        except (HubError, HubSignatureError) as err:
            held, refusal = [], Refusal.of(err)
        for case in held:
            for o in case.orders:
                if o.addressed_to == me:
                    orders[o.order_id] = o
    now = desk.clock.now()
    released = holds_released(desk)
    rows = []
    for order_id, order in orders.items():
        clock = by_order.get(order_id)
        deadline = ts(clock.deadline_time) if clock else None
        start = ts(clock.start_time) if clock else None
        stored_row = seen.get(order_id)
        rows.append(
            InboxRow(
                order=order,
                case_id=order.case_id,
                kind=state_name(order_pb2.OrderKind, order.kind, "ORDER_KIND_"),
                state=state_name(order_pb2.OrderState, order.state, "ORDER_STATE_"),
                pending=order.state == order_pb2.ORDER_STATE_PENDING,
                clock=clock,
                deadline=deadline,
                start=start,
                countdown=countdown(deadline, start, now),
                received=stored_row.received_at if stored_row else None,
                sequence=stored_row.sequence if stored_row else 0,
                released=released.get(order_id),
            )
        )
    rows.sort(
        key=lambda r: (
            not r.pending,
            r.left,
            -(ts(r.order.issue_time) or now).timestamp(),
        )
    )
    return rows, refusal


async def our_order(request: Request, case_id: str, order_id: str) -> order_pb2.Order | Response:
    """The order as the hub has it now (read in its case), if addressed to this institution;
    otherwise the page that says why not."""
    desk = desk_of(request)
    try:
        case = await desk.link.call(lambda c: c.get_case(case_id))
    except (HubError, HubSignatureError) as err:
        return hub_refused(request, err)
    order = next((o for o in case.orders if o.order_id == order_id), None)
    if order is None or order.addressed_to != desk.institution:
        _ = gettext_for(request)
        return refuse(
            request, 404, _("There is no order of that id addressed to this institution.")
        )
    return order


RELEASED = "hold_released"


def holds_released(desk: Desk, order_id: str | None = None) -> dict[str, tuple[str, datetime]]:
    """Lapsed holds someone at this console said they released in the bank's own systems (a
    lapse is not answered to the hub), or only `order_id`: order id -> (who, when), the
    first saying."""
    query = select(JournalEntry.detail, JournalEntry.person, JournalEntry.time).where(
        JournalEntry.action == RELEASED, JournalEntry.outcome == "done"
    )
    if order_id is not None:
        query = query.where(JournalEntry.detail == order_id)
    with desk.db() as s:
        rows = s.execute(query.order_by(JournalEntry.id)).all()
    found: dict[str, tuple[str, datetime]] = {}
    for order_id, person, at in rows:
        found.setdefault(order_id, (person, at))
    return found


@page(act=True)
async def hold_released(request: Request) -> Response:
    """An officer says the hold of a lapsed stop or freeze is released at the bank: kept in the
    journal, with who and when, once the hub confirms the order is this institution's and
    lapsed."""
    if (wrong := member_only(request)) is not None:
        return wrong
    desk = desk_of(request)
    _ = gettext_for(request)
    order_id = request.path_params["order_id"]
    form = await request.form()
    case_id = str(form.get("case", "")).strip()
    if not ORDER_ID.match(order_id) or not CASE_ID.match(case_id):
        return refuse(request, 404, _("There is no such order."))
    order = await our_order(request, case_id, order_id)
    if isinstance(order, Response):
        return order
    kind = state_name(order_pb2.OrderKind, order.kind, "ORDER_KIND_")
    if order.state != order_pb2.ORDER_STATE_EXPIRED or kind not in ("stop", "freeze"):
        return refuse(
            request, 409, _("Only a stop or freeze that lapsed is released here; this one has not.")
        )
    if not holds_released(desk, order_id):
        viewer = viewer_of(request)
        actions.journal(
            desk,
            viewer.username,
            RELEASED,
            f"released the hold of lapsed {kind} {order_id}",
            "done",
            case_id=case_id,
            detail=order_id,
        )
    return RedirectResponse("/inbox", status_code=303)


@page()
async def inbox(request: Request) -> Response:
    if (wrong := member_only(request)) is not None:
        return wrong
    desk = desk_of(request)
    rows, refusal = await inbox_rows(desk)
    return render(
        request,
        "member/inbox.html",
        {
            "rows": rows,
            "refusal": refusal,
            "errors": {},
            "ts": ts,
        },
    )


# ---- 4. answering an order --------------------------------------------------------------------

OW_FIELDS = ("time", "amount", "institution", "account", "holder", "reference", "carried")
FACTS = ("holder", "account", "time", "amount")


def case_of_order(desk: Desk, order_id: str) -> str:
    with desk.db() as s:
        row = s.scalars(
            select(StoredDelivery)
            .where(StoredDelivery.order_id == order_id)
            .order_by(StoredDelivery.sequence.desc())
            .limit(1)
        ).first()
    return row.case_id if row else ""


def credits_of(order: order_pb2.Order) -> list[order_pb2.TransactionFact]:
    if order.instruction.WhichOneof("instruction") == "stop":
        return list(order.instruction.stop.transactions)
    return []


async def origin_check(desk: Desk, order_id: str) -> dict[str, Any]:
    """What the order's delivery says of who signed it (docs/signing.md, checking an order):
    the origin's and authorization's signers and whether they verify."""
    with desk.db() as s:
        row = s.scalars(
            select(StoredDelivery)
            .where(StoredDelivery.order_id == order_id, StoredDelivery.kind == "NOTICE_KIND_ORDER")
            .order_by(StoredDelivery.sequence)
            .limit(1)
        ).first()
    if row is None:
        return {"known": False}
    notice = open_notice(desk, row)
    if notice is None:
        return {"known": True, "problems": ["the stored delivery does not verify"]}
    problems: list[str] = []
    if notice.order.addressed_to != desk.institution:
        problems.append(f"addressed to {notice.order.addressed_to}, not {desk.institution}")
    signers = []
    for name in ("origin", "authorization"):
        if not notice.HasField(name):
            continue
        env = getattr(notice, name)
        try:
            problem = await desk.link.call(lambda c, e=env: c.verify_forwarded(e))  # type: ignore[misc]
        except (HubError, HubSignatureError) as err:
            problem = str(err)
        signers.append(
            {"what": name, "sender": env.sender, "body_type": env.body_type, "ok": not problem}
        )
        if problem:
            problems.append(f"{name}: {problem}")
    if not notice.HasField("origin") and notice.order.state == order_pb2.ORDER_STATE_PENDING:
        problems.append("the order carries no signed origin")
    return {"known": True, "signers": signers, "problems": problems}


def answer_typed(form: FormData, more: bool = False) -> dict[str, Any]:
    n = row_count(form, more) if form else ROWS
    return {
        **{
            k: text_of(form, k).strip()
            for k in (
                "outcome",
                "reason_code",
                "held",
                "balance",
                "moved",
                "execute_time",
                *(f"fact_{f}" for f in FACTS),
            )
        },
        "reason": text_of(form, "reason"),
        "rows": n,
        "ow": read_rows(form, "ow", OW_FIELDS, n),
    }


def check_answer(typed: dict[str, Any], order: order_pb2.Order, desk: Desk) -> Payload:
    """The payload of AnswerOrder, checked as the hub checks it (docs/orders.md)."""
    errors: dict[str, str] = {}
    hold = order.kind in HOLDS
    amount = order_amount(order)
    code = typed["reason_code"].upper()
    if code and code not in REASON_CODES:
        errors["reason_code"] = "Choose a reason code from the list."
    if typed["outcome"] not in ("done", "reject"):
        errors["outcome"] = "Say whether you carried the order out."
    if len(typed["reason"]) > MAX_TEXT:
        errors["reason"] = "At most 4000 characters."
    facts_ok = True
    if hold:
        for f in FACTS:
            if typed[f"fact_{f}"] not in ("yes", "no"):
                errors[f"fact_{f}"] = "Say whether this fact matches your records."
            elif typed[f"fact_{f}"] == "no":
                facts_ok = False
    execute = read_time(typed["execute_time"], "execute_time", errors, desk, required=False)
    issued = ts(order.issue_time)
    if execute and issued and execute < issued - FUTURE_TOLERANCE and "execute_time" not in errors:
        errors["execute_time"] = "This is before the order was issued."
    held = balance = moved = 0
    status = 0
    onward: list[dict[str, Any]] = []
    rows = [(i, r) for i, r in enumerate(typed["ow"]) if not blank_row(r, ())]
    if hold and not facts_ok:
        status, code = order_pb2.EXECUTION_STATUS_NO_MATCH, "NMAT"
    elif typed["outcome"] == "reject":
        status = order_pb2.EXECUTION_STATUS_REJECTED
        if not code:
            errors["reason_code"] = "A rejection carries a reason code (AC04, LEGL, ...)."
    elif typed["outcome"] == "done":
        if hold:
            got = to_fen(typed["held"], positive=False)
            if got is None:
                errors["held"] = MSG_AMOUNT0
            elif got > amount:
                errors["held"] = "Hold up to the order's amount, not more."
            held = got or 0
            bal = to_fen(typed["balance"] or "0", positive=False)
            if bal is None:
                errors["balance"] = MSG_AMOUNT0
            balance = bal or 0
        else:
            got = to_fen(typed["moved"], positive=False)
            if got is None:
                errors["moved"] = MSG_AMOUNT0
            elif order.kind == order_pb2.ORDER_KIND_RELEASE and got != amount:
                errors["moved"] = "A release lifts the whole hold: give the amount the order names."
            elif got > amount:
                errors["moved"] = "Return up to the order's amount, not more."
            moved = got or 0
        done = (held if hold else moved) == amount
        status = (
            order_pb2.EXECUTION_STATUS_EXECUTED
            if done
            else order_pb2.EXECUTION_STATUS_PARTIALLY_EXECUTED
        )
        if not done and not code and not errors.get("held") and not errors.get("moved"):
            errors["reason_code"] = (
                "Less than the amount: say why (AM04 when the balance was short)."
            )
    if rows and (
        not hold
        or status in (order_pb2.EXECUTION_STATUS_NO_MATCH, order_pb2.EXECUTION_STATUS_REJECTED)
    ):
        errors[f"ow{rows[0][0]}_amount"] = (
            "Only an answer that holds (all, part or none of the money) reports onward "
            "transfers; when the money moved on, answer with what you hold (0 if nothing)."
        )
        rows = []
    credits = credits_of(order)
    arrived = min((ts(c.transaction_time) for c in credits), default=None)  # type: ignore[type-var]
    received = sum(c.amount_fen for c in credits)
    stopped = order_account(order)
    total = 0
    for i, row in rows:
        p = f"ow{i}_"
        at = read_time(row["time"], p + "time", errors, desk)
        if at and arrived and at < arrived - FUTURE_TOLERANCE and p + "time" not in errors:
            errors[p + "time"] = "This is before the money arrived: report transfers after it."
        out = to_fen(row["amount"], positive=True)
        if out is None:
            errors[p + "amount"] = MSG_AMOUNT
        carried = to_fen(row["carried"] or "0", positive=False)
        if carried is None or (out is not None and carried > out):
            errors[p + "carried"] = (
                "The part that carried this money: 0 or blank for all of it, at most the "
                "transfer's amount."
            )
        institution = row["institution"].upper()
        if not CODE.match(institution):
            errors[p + "institution"] = "Give the receiving institution's clearing code."
        if not ACCOUNT.match(row["account"]):
            errors[p + "account"] = MSG_ACCOUNT
        elif (institution, row["account"]) == (stopped.institution_code, stopped.account_number):
            errors[p + "account"] = "This goes to the stopped account itself."
        if not row["holder"]:
            errors[p + "holder"] = (
                "Name the receiving account's holder: a downstream stop names it."
            )
        if len(row["reference"]) > MAX_REFERENCE:
            errors[p + "reference"] = "At most 128 characters."
        total += (carried or 0) or (out or 0)
        if received and total > received and p + "amount" not in errors:
            errors[p + "carried" if carried else p + "amount"] = (
                "The transfers up to here carry more than the credits the order names: give "
                "the part of a transfer that carried this money."
            )
        onward.append(
            {
                "time": at.isoformat() if at else "",
                "amount_fen": out or 0,
                "institution": institution,
                "account": row["account"],
                "holder": row["holder"],
                "reference": row["reference"],
                "carried_fen": carried or 0,
            }
        )
    if errors:
        raise FormErrors(errors)
    return {
        "order_id": order.order_id,
        "case_id": order.case_id,
        "kind": order.kind,
        "status": status,
        "reason_code": code,
        "reason": typed["reason"].strip(),
        "held_fen": held,
        "balance_fen": balance,
        "moved_fen": moved,
        "execute_time": execute.isoformat() if execute else "",
        "onward": onward,
    }


def answer_message(p: Payload) -> order_pb2.ExecutionResult:
    result = order_pb2.ExecutionResult(
        order_id=p["order_id"],
        status=p["status"],
        reason_code=p["reason_code"],
        reason=p["reason"],
        amount_held_fen=p["held_fen"],
        available_balance_fen=p["balance_fen"],
    )
    if p["kind"] == order_pb2.ORDER_KIND_RELEASE:
        result.amount_released_fen = p["moved_fen"]
    elif p["kind"] == order_pb2.ORDER_KIND_RETURN:
        result.amount_returned_fen = p["moved_fen"]
    if p["execute_time"]:
        result.execute_time.CopyFrom(stamp(datetime.fromisoformat(p["execute_time"])))
    for t in p["onward"]:
        result.onward_transfers.append(
            order_pb2.OnwardTransfer(
                transfer_time=stamp(datetime.fromisoformat(t["time"])),
                amount_fen=t["amount_fen"],
                to_account=account_pb2.AccountRef(
                    institution_code=t["institution"],
                    account_number=t["account"],
                    holder_name=t["holder"],
                ),
                transaction_reference=t["reference"],
                carried_fen=t["carried_fen"],
            )
        )
    return result


async def _send_answer(client: HubClient, p: Payload) -> Done:
    order = await client.answer_order(answer_message(p))
    state = state_name(order_pb2.OrderState, order.state, "ORDER_STATE_")
    return Done(
        f"order {order.order_id} answered: {state}", f"/cases/{order.case_id}", order.case_id
    )


register(
    Action(
        "answer",
        frozenset({"bank", "payment_institution"}),
        lambda p: (
            f"answer order {p['order_id']}: "
            f"{order_pb2.ExecutionStatus.Name(p['status']).removeprefix('EXECUTION_STATUS_')}"
            + (f" {p['reason_code']}" if p["reason_code"] else "")
            + f", held {p['held_fen']} fen, {len(p['onward'])} onward transfer(s)"
        ),
        _send_answer,
    )
)


async def answer_context(
    request: Request, order_id: str
) -> tuple[dict[str, Any] | None, Response | None]:
    """The order (read from the hub in its case) and what the form shows of it; or the page
    that says why not."""
    desk = desk_of(request)
    _ = gettext_for(request)
    if not ORDER_ID.match(order_id):
        return None, refuse(request, 404, _("There is no such order."))
    case_id = request.query_params.get("case", "").strip() or case_of_order(desk, order_id)
    if not case_id or not CASE_ID.match(case_id):
        return None, refuse(
            request, 404, _("This console has no delivery of that order: open it from the inbox.")
        )
    order = await our_order(request, case_id, order_id)
    if isinstance(order, Response):
        return None, order
    try:
        clocks = await desk.link.call(
            lambda c: c.list_clocks(institution=desk.institution, case_id=case_id, open_only=True)
        )
    except (HubError, HubSignatureError):
        clocks = []
    clock = next((k for k in clocks if k.order_id == order_id), None)
    deadline = ts(clock.deadline_time) if clock else None
    start = ts(clock.start_time) if clock else None
    return {
        "order": order,
        "case_id": case_id,
        "kind": state_name(order_pb2.OrderKind, order.kind, "ORDER_KIND_"),
        "state": state_name(order_pb2.OrderState, order.state, "ORDER_STATE_"),
        "pending": order.state == order_pb2.ORDER_STATE_PENDING,
        "hold": order.kind in HOLDS,
        "account": order_account(order),
        "amount": order_amount(order),
        "credits": credits_of(order),
        "clock": clock,
        "deadline": deadline,
        "start": start,
        "countdown": countdown(deadline, start, desk.clock.now()),
        "check": await origin_check(desk, order_id),
        "reason_codes": REASON_CODES,
        "ts": ts,
        "max_rows": MAX_ROWS,
        "now_input": local_input(desk.clock.now(), desk.zone),
    }, None


def default_answer(order: order_pb2.Order) -> dict[str, Any]:
    typed = answer_typed(FormData())
    if order.kind == order_pb2.ORDER_KIND_RELEASE:
        typed["moved"] = fen_text(order_amount(order))
    return typed


@page()
async def answer_form(request: Request) -> Response:
    if (wrong := member_only(request)) is not None:
        return wrong
    context, problem = await answer_context(request, request.path_params["order_id"])
    if problem is not None:
        return problem
    assert context is not None
    typed = default_answer(context["order"])
    return render(request, "member/answer.html", {**context, "typed": typed, "errors": {}})


@page(act=True)
async def answer_send(request: Request) -> Response:
    if (wrong := member_only(request)) is not None:
        return wrong
    desk = desk_of(request)
    context, problem = await answer_context(request, request.path_params["order_id"])
    if problem is not None:
        return problem
    assert context is not None
    form = await request.form()
    more = bool(text_of(form, "more"))
    typed = answer_typed(form, more)
    context["typed"] = typed
    if more:
        return render(request, "member/answer.html", {**context, "errors": {}})
    try:
        payload = check_answer(typed, context["order"], desk)
    except FormErrors as err:
        return render(request, "member/answer.html", {**context, "errors": err.errors}, status=400)
    outcome = await actions.take(desk, viewer_of(request), "answer", payload)
    if outcome.done is not None:
        with desk.db() as s:
            for row in s.scalars(
                select(StoredDelivery).where(StoredDelivery.order_id == payload["order_id"])
            ):
                if row.handled_by is None:
                    row.handled_by = viewer_of(request).username
                    row.handled_at = desk.clock.now()
    return after(request, outcome, "member/answer.html", context)


# ---- 5. appeals ---------------------------------------------------------------------------------


async def _send_appeal(client: HubClient, p: Payload) -> Done:
    appeal = await client.file_appeal(
        p["reference"], p["grounds"], [(n, bytes.fromhex(h)) for n, h in p["documents"]]
    )
    return Done(
        f"appeal {appeal.appeal_id} filed against {appeal.reference}",
        f"/filed-appeals?done={appeal.appeal_id}",
        appeal.case_id,
    )


register(
    Action(
        "appeal_file",
        frozenset({"bank", "payment_institution"}),
        lambda p: f"appeal against {p['reference']}",
        _send_appeal,
        case_of=lambda p: str(p.get("case_id", "")),
    )
)


def appeal_typed(form: FormData) -> dict[str, Any]:
    return {
        "reference": text_of(form, "reference").strip(),
        "grounds": text_of(form, "grounds"),
        "case_id": text_of(form, "case_id").strip(),
        "doc_names": [text_of(form, f"doc{i}_name").strip() for i in range(3)],
        "doc_hashes": [text_of(form, f"doc{i}_sha256").strip().lower() for i in range(3)],
    }


async def check_appeal(typed: dict[str, Any], form: FormData) -> Payload:
    errors: dict[str, str] = {}
    if not ORDER_ID.match(typed["reference"]):
        errors["reference"] = "Give the stop or freeze order id, or the list entry id."
    grounds = typed["grounds"].strip()
    if not grounds:
        errors["grounds"] = "Say why the stop, freeze or listing is wrong."
    elif len(grounds) > MAX_TEXT:
        errors["grounds"] = "At most 4000 characters."
    documents: list[tuple[str, str]] = []
    for i in range(3):
        name = typed["doc_names"][i]
        digest = typed["doc_hashes"][i]
        upload = form.get(f"doc{i}_file")
        if isinstance(upload, UploadFile) and upload.filename:
            digest = hashlib.sha256(await upload.read()).hexdigest()
            name = name or upload.filename
            typed["doc_hashes"][i] = digest
            typed["doc_names"][i] = name
        if not name and not digest:
            continue
        if not name or len(name) > 200:
            errors[f"doc{i}_name"] = "Name the document (1 to 200 characters)."
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            errors[f"doc{i}_sha256"] = (
                "Choose the document's file, or give its SHA-256 as 64 hexadecimal digits."
            )
        documents.append((name, digest))
    if errors:
        raise FormErrors(errors)
    return {
        "reference": typed["reference"],
        "grounds": grounds,
        "documents": documents,
        "case_id": typed["case_id"] if CASE_ID.match(typed["case_id"] or "-") else "",
    }


@page()
async def appeal_form(request: Request) -> Response:
    if (wrong := member_only(request)) is not None:
        return wrong
    typed = appeal_typed(FormData())
    typed["reference"] = request.query_params.get("reference", "")[:64]
    typed["case_id"] = request.query_params.get("case", "")[:64]
    return render(request, "member/appeal.html", {"typed": typed, "errors": {}})


@page(act=True)
async def appeal_send(request: Request) -> Response:
    if (wrong := member_only(request)) is not None:
        return wrong
    desk = desk_of(request)
    form = await request.form()
    typed = appeal_typed(form)
    context: dict[str, Any] = {"typed": typed}
    try:
        payload = await check_appeal(typed, form)
    except FormErrors as err:
        return render(request, "member/appeal.html", {**context, "errors": err.errors}, status=400)
    outcome = await actions.take(desk, viewer_of(request), "appeal_file", payload)
    return after(request, outcome, "member/appeal.html", context)


@page()
async def filed_appeals(request: Request) -> Response:
    if (wrong := member_only(request)) is not None:
        return wrong
    desk = desk_of(request)
    found: list[appeal_pb2.Appeal] = []
    refusal = None
    try:
        # A member's ListAppeals answers its own appeals only (docs/permissions.md).
        found = await desk.link.call(lambda c: c.list_appeals(page_size=200))
    except (HubError, HubSignatureError) as err:
        refusal = Refusal.of(err)
    now = desk.clock.now()
    rows = [
        {
            "appeal": a,
            "state": state_name(appeal_pb2.AppealState, a.state, "APPEAL_STATE_"),
            "filed": ts(a.file_time),
            "deadline": ts(a.decide_by_time),
            "countdown": countdown(ts(a.decide_by_time), ts(a.file_time), now),
            "open": a.state == appeal_pb2.APPEAL_STATE_FILED,
        }
        for a in found
    ]
    return render(
        request,
        "member/appeals.html",
        {
            "rows": rows,
            "refusal": refusal,
            "errors": {},
            "done": request.query_params.get("done", ""),
        },
    )


ROUTES: list[BaseRoute] = [
    Route("/report", report_form, methods=["GET"]),
    Route("/report", report_send, methods=["POST"]),
    Route("/cases/{case_id}/verify", verify_form, methods=["GET"]),
    Route("/cases/{case_id}/verify", verify_send, methods=["POST"]),
    Route("/inbox", inbox),
    Route("/orders/{order_id}/released", hold_released, methods=["POST"]),
    Route("/orders/{order_id}/answer", answer_form, methods=["GET"]),
    Route("/orders/{order_id}/answer", answer_send, methods=["POST"]),
    Route("/filed-appeals/new", appeal_form, methods=["GET"]),
    Route("/filed-appeals/new", appeal_send, methods=["POST"]),
    Route("/filed-appeals", filed_appeals),
]
