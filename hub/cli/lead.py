"""`stophub lead`: leads members handed to the centre, read from the hub's database, in the
queue's order (docs/leads.md)."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from hub.cli.common import (
    db_option,
    json_option,
    open_store,
    personal_data_option,
    print_json,
    utc,
)
from hub.domain.grades import Grade, grade_of
from hub.domain.leads import Lead, LeadState
from hub.domain.wording import Disclosure
from hub.render.screen import show
from hub.render.wording import stamp
from hub.service.ports import LeadQuery

GRADES = [g.label for g in Grade]


@click.group("lead")
def lead_group() -> None:
    """Leads (线索移送) handed to the anti-fraud centre (read-only)."""


@lead_group.command("list")
@click.option("--state", type=click.Choice([s.value for s in LeadState]))
@click.option("--grade", type=click.Choice(GRADES))
@click.option("--institution", help="Only the leads this member (code) handed over.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@personal_data_option
@json_option
@db_option
def lead_list(
    state: str | None,
    grade: str | None,
    institution: str | None,
    limit: int,
    personal_data: bool,
    as_json: bool,
    database_url: str,
) -> None:
    """Leads in the centre's queue order: red, yellow, green, ungraded; then by triage
    deadline."""
    query = LeadQuery(
        state=LeadState(state) if state else None,
        submitter=institution or None,
        grade=None if grade is None else ("" if grade == "ungraded" else grade),
    )
    store = open_store(database_url)
    try:
        with store(read_only=True) as uow:
            found = list(uow.leads.search(query, limit, None))
    finally:
        store.dispose()
    shown = Disclosure(personal_data).knowing(_names(found))
    if as_json:
        print_json({"leads": [_lead(lead, shown) for lead in found]})
        return
    table = Table(title=f"{len(found)} lead(s), queue order", title_justify="left")
    for col in ("lead", "from", "grade", "state", "submitted", "triage by", "outcome", "accounts"):
        table.add_column(col)
    for lead in found:
        table.add_row(
            lead.lead_id,
            lead.submitter,
            grade_of(lead.grade).label,
            lead.state.value,
            stamp(lead.submitted_at),
            stamp(lead.triage_by) if lead.triage_by else "-",
            _outcome(lead),
            ", ".join(
                f"{shown.account(a.account_number)} at {a.institution_code}"
                for a in lead.every_account()
            ),
        )
    show(table)


@lead_group.command("show")
@click.argument("name")
@personal_data_option
@json_option
@db_option
def lead_show(name: str, personal_data: bool, as_json: bool, database_url: str) -> None:
    """One lead: its accounts, transfers, evidence, exchanges with the centre, its fate and
    the other leads that name the same accounts."""
    store = open_store(database_url)
    try:
        with store(read_only=True) as uow:
            lead = uow.leads.get(name.strip())
            if lead is None:
                raise click.ClickException(f"no lead {name!r}")
            keys = {(a.institution_code, a.account_number) for a in lead.every_account()}
            links = uow.leads.linked(lead.lead_id, keys, 10)
    finally:
        store.dispose()
    shown = Disclosure(personal_data).knowing(_names([lead]))
    document = _lead(lead, shown, full=True)
    document["linked_leads"] = [
        {"lead": other, "submitter": by, "account": f"{shown.account(number)} at {inst}"}
        for other, by, inst, number in links
    ]
    if as_json:
        print_json(document)
        return
    table = Table(title=f"lead {lead.lead_id}", title_justify="left", show_header=False)
    table.add_column("field")
    table.add_column("value")
    for key, value in document.items():
        if isinstance(value, list):
            value = "\n".join(str(v) for v in value) or "-"
        table.add_row(key, "-" if value in (None, "") else str(value))
    show(table)


def _names(leads: list[Lead]) -> set[str]:
    return {a.holder_name for lead in leads for a in lead.every_account() if a.holder_name}


def _outcome(lead: Lead) -> str:
    if lead.state is LeadState.DISMISSED:
        return "dismissed"
    if lead.state is not LeadState.ACCEPTED:
        return "-"
    return {
        "case_opened": f"case {lead.case_id}",
        "listed": f"listed {lead.list_entry_id}",
        "warned": f"warning {lead.warning_id}",
    }.get(lead.outcome.value, lead.outcome.value)


def _lead(lead: Lead, shown: Disclosure, *, full: bool = False) -> dict[str, Any]:
    """One lead for --json (docs/cli.md): people and accounts shown as the text shows them."""
    out: dict[str, Any] = {
        "lead": lead.lead_id,
        "submitter": lead.submitter,
        "grade": grade_of(lead.grade).label,
        "submitted_grade": grade_of(lead.submitted_grade).label,
        "state": lead.state.value,
        "submitted_at": utc(lead.submitted_at),
        "triage_by": utc(lead.triage_by),
        "outcome": _outcome(lead),
        "decided_at": utc(lead.decided_at),
        "decided_by": lead.decided_by or None,
        "accounts": [
            f"{shown.account(a.account_number)} at {a.institution_code}"
            for a in lead.every_account()
        ],
    }
    if full:
        out["grounds"] = shown.text(lead.grounds)
        out["reason"] = shown.text(lead.reason) or None
        out["transactions"] = [
            f"{stamp(t.at)} {t.amount_fen} fen {shown.account(t.source.account_number)} at "
            f"{t.source.institution_code} -> {shown.account(t.target.account_number)} at "
            f"{t.target.institution_code}"
            for t in lead.transfers()
        ]
        out["evidence"] = [f"{e.name} sha256:{e.sha256.hex()}" for e in lead.evidence()]
        out["exchanges"] = [
            f"{stamp(e.asked_at)} {e.asked_by} asked: {shown.text(e.question)}"
            + (
                f" / {stamp(e.answered_at)} answered: {shown.text(e.answer)}"
                if e.answered_at
                else ""
            )
            for e in lead.exchanges()
        ]
    return out
