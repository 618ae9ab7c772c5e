"""`stophub case`: fraud cases: list them, show one with its timeline, follow its money."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from adapters.sdk.identity import Identity
from hub.cli.common import (
    CASE_ID,
    command_clock,
    db_option,
    json_option,
    open_store,
    personal_data_option,
    print_json,
    remote_options,
    utc,
)
from hub.cli.remote import connect
from hub.domain.cases import Case, CaseState, Order
from hub.domain.grades import grade_of
from hub.domain.trail import accounts_of
from hub.domain.wording import Disclosure
from hub.render.case import case_view, cases_table
from hub.render.screen import show
from hub.render.trail import trail_svg, trail_tree
from hub.service.ports import CaseQuery
from hub.service.trail import trail_view
from hub.store.sql import shown_url


@click.group("case")
def case() -> None:
    """Fraud cases: list them, show one with its timeline."""


@case.command("list")
@click.option("--state", type=click.Choice([s.value for s in CaseState]))
@click.option("--limit", default=50, show_default=True)
@click.option(
    "--queue",
    is_flag=True,
    help="The centre's queue order: red, yellow, green, ungraded, each by next deadline "
    "(docs/grades.md), instead of newest first.",
)
@json_option
@db_option
@remote_options
def case_list(
    state: str | None,
    limit: int,
    queue: bool,
    as_json: bool,
    database_url: str,
    identity: Identity | None,
) -> None:
    """List cases, newest first (--queue: by grade, then deadline). With --identity: those
    the hub shows that institution (all for the centre and the regulator, its own reports
    for a bank or payment institution)."""
    if identity is not None:
        if queue:
            raise click.UsageError("--queue reads the hub's database; leave out --identity")
        with connect(identity) as remote:
            found = remote.cases(CaseState(state) if state else None, limit)
    elif queue:
        store = open_store(database_url)
        with store(read_only=True) as uow:
            query = CaseQuery(state=CaseState(state) if state else None, by_deadline=True)
            found = [c for c, _ in uow.cases.search(query, limit, None)]
    else:
        store = open_store(database_url)
        with store(read_only=True) as uow:
            found = list(uow.cases.list(CaseState(state) if state else None, limit, None))
    if as_json:
        print_json({"cases": [_summary(c) for c in found]})
    else:
        show(cases_table(found))


# Other cases named beside a case: a mule ring can reach hundreds; the trail has the rest.
MAX_LINKED_SHOWN = 20


@case.command("show")
@click.argument("case_id", type=CASE_ID)
@personal_data_option
@json_option
@db_option
@remote_options
def case_show(
    case_id: str, personal_data: bool, as_json: bool, database_url: str, identity: Identity | None
) -> None:
    """Show a case: transactions, orders, timeline and how long each phase took. With
    --identity: as the hub shows it to that institution, with its money trail when shared."""
    if identity is not None:
        _remote_case_show(identity, case_id, personal_data, as_json)
        return
    store = open_store(database_url)
    with store(read_only=True) as uow:
        found = uow.cases.get(case_id)
        linked = (
            uow.cases.involving(accounts_of(found), found.case_id, MAX_LINKED_SHOWN)
            if found is not None
            else []
        )
    if found is None:
        raise click.ClickException(f"no case {case_id!r} in {shown_url(database_url)}")
    if as_json:
        print_json(_case_document(found, linked, Disclosure(personal_data)))
    else:
        show(case_view(found, personal_data=personal_data, linked=linked))


def _remote_case_show(identity: Identity, case_id: str, personal_data: bool, as_json: bool) -> None:
    """GetCase, and in text GetCaseTrail: what the hub withholds is said, never filled in."""
    with connect(identity) as remote:
        answer = remote.case(case_id)
        trail = None if as_json else remote.trail(case_id)
    found, me = answer.case, identity.institution
    if as_json:
        document = _case_document(found, answer.linked, Disclosure(personal_data))
        if answer.victim_withheld:
            document["victim_name"] = None
        print_json(document)
        return
    show(case_view(found, personal_data=personal_data, linked=answer.linked))
    if answer.victim_withheld:
        click.echo(
            f"not shared with {me}, which holds orders in this case: the victim (shown empty "
            "above) and the other cases reaching its accounts"
        )
    if trail is None:
        click.echo(f"money trail: not shared with {me} (TRAIL_NOT_SHARED)")
    else:
        show(trail_tree(trail, Disclosure(personal_data).knowing(found.personal_names())))


@case.command("trail")
@click.argument("case_id", type=CASE_ID)
@click.option(
    "--svg",
    "svg_file",
    type=click.Path(dir_okay=False, writable=True),
    help="Also draw the trail as a picture: one SVG file a browser opens, nothing to fetch.",
)
@personal_data_option
@db_option
def case_trail(case_id: str, svg_file: str | None, personal_data: bool, database_url: str) -> None:
    """Show where a case's money went: the accounts layer by layer, what each received and
    holds, the orders on them, and what is beyond reach or waiting for the centre."""
    store = open_store(database_url)
    with store(read_only=True) as uow:
        found = uow.cases.get(case_id)
        if found is None:
            raise click.ClickException(f"no case {case_id!r} in {shown_url(database_url)}")
        trail = trail_view(uow, found, command_clock().now(), uow.institutions.kinds())
    shown = Disclosure(personal_data).knowing(found.personal_names())
    show(trail_tree(trail, shown))
    if svg_file is not None:
        Path(svg_file).write_text(trail_svg(trail, shown), encoding="utf-8")
        click.echo(f"trail drawn in {svg_file}")


# ---- --json (docs/cli.md) ----------------------------------------------------------------------


def _summary(case: Case) -> dict[str, Any]:
    return {
        "case_id": case.case_id,
        "state": case.state.value,
        "grade": grade_of(case.grade).label,
        "reported_by": case.reporting_institution,
        "reported_at": utc(case.created_at),
        "fraud_type": case.fraud_type,
        "loss_fen": case.loss_fen,
        "held_fen": case.held_fen,
        "returned_fen": case.returned_fen,
        "released_fen": case.released_fen,
        "order_count": len(case.orders),
    }


def _case_document(
    case: Case, linked: Sequence[tuple[str, str, str]], shown: Disclosure
) -> dict[str, Any]:
    """People shown as the text output shows them (docs/personal-data.md)."""
    shown = shown.knowing(case.personal_names())
    number, name = shown.account, shown.name

    def account(institution: str, account_number: str, holder: str) -> dict[str, str] | None:
        if not institution and not account_number:
            return None
        return {
            "institution": institution,
            "number": number(account_number),
            "holder": name(holder),
        }

    def order(o: Order) -> dict[str, Any]:
        return {
            "order_id": o.order_id,
            "kind": o.kind.value,
            "state": o.state.value,
            "layer": o.layer,
            "upstream_order_id": o.upstream_order_id or None,
            "addressed_to": o.addressed_to,
            "issued_by": o.issued_by,
            "auto_stop_rule_id": o.auto_stop_rule_id or None,
            "issued_at": utc(o.issued_at),
            "account": account(o.account_institution, o.account_number, o.holder_name),
            "amount_fen": o.amount_fen,
            "held_fen": o.held_fen,
            "released_fen": o.released_fen,
            "returned_fen": o.returned_fen,
            "answered_at": utc(o.answered_at),
            "expires_at": utc(o.expires_at),
            "result_status": o.result_status.value if o.result_status else None,
            "result_reason_code": o.result_reason_code or None,
        }

    return {
        **_summary(case),
        "personal_data": shown.personal_data,
        "victim_name": name(case.victim_name),
        "victim_report_time": utc(case.victim_report_time),
        "verified_at": utc(case.verified_at),
        "closed_at": utc(case.closed_at),
        "transactions": [
            {
                "time": utc(t.transaction_time),
                "amount_fen": t.amount_fen,
                "payer": account(t.payer_institution, t.payer_account, t.payer_name),
                "payee": account(t.payee_institution, t.payee_account, t.payee_name),
                "channel": t.channel,
            }
            for t in case.transactions
        ],
        "orders": [order(o) for o in case.orders],
        "timeline": [
            {
                "sequence": e.sequence,
                "at": utc(e.at),
                "kind": e.kind,
                "actor": e.actor,
                "summary": shown.text(e.summary),
                "order_id": e.order_id or None,
                "message_id": e.message_id or None,
            }
            for e in case.events
        ],
        "linked_cases": [
            {"case_id": other, "institution": institution, "number": number(account_number)}
            for other, institution, account_number in linked
        ],
    }
