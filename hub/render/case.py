"""How a case looks to an operator: summary, orders, timeline and phase durations.

People in it are shown as docs/personal-data.md says (hub/domain/wording.py `Disclosure`):
names and account numbers masked, the names inside timeline text too, ID number and phone
not at all, unless the operator asked for personal data."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from hub.domain.cases import Case, OrderState
from hub.domain.institutions import Institution
from hub.domain.wording import Disclosure, yuan
from hub.render.wording import Times, duration, stamp
from hub.service.slareport import phases

STATE_STYLE = {
    OrderState.PENDING: "yellow",
    OrderState.HOLDING: "bold green",
    OrderState.NO_MATCH: "red",
    OrderState.REJECTED: "red",
    OrderState.RELEASED: "cyan",
    OrderState.CONVERTED: "cyan",
    OrderState.RETURNED: "bold cyan",
    OrderState.COMPLETED: "green",
    OrderState.CANCELLED: "dim",
    OrderState.EXPIRED: "magenta",
}


def _since(start: datetime, at: datetime | None) -> timedelta | None:
    return None if at is None else at - start


def case_view(
    case: Case,
    *,
    personal_data: bool = False,
    linked: Sequence[tuple[str, str, str]] = (),
) -> Group:
    """`linked`: other open cases whose money reached this case's accounts, as
    (case id, institution, account number)."""
    shown = Disclosure(personal_data).knowing(case.personal_names())
    head = Table.grid(padding=(0, 2))
    head.add_row(
        "case", Text(case.case_id, style="bold"), "state", Text(case.state.value, style="bold")
    )
    head.add_row("reported by", case.reporting_institution, "fraud type", case.fraud_type)
    head.add_row("victim", shown.name(case.victim_name), "reported at", stamp(case.created_at))
    id_number, phone = shown.private(case.victim_id_number), shown.private(case.victim_phone)
    if id_number is not None and phone is not None:
        head.add_row("ID number", id_number, "phone", phone)
    head.add_row("loss", yuan(case.loss_fen), "held now", yuan(case.held_fen))
    head.add_row("returned", yuan(case.returned_fen), "released", yuan(case.released_fen))
    if linked:
        head.add_row(
            "linked cases",
            ", ".join(
                f"{other} ({institution} {shown.account(account)})"
                for other, institution, account in linked
            ),
            "",
            "",
        )

    tx = Table(title="fraudulent transactions", title_justify="left", expand=False)
    when = Times(t.transaction_time for t in case.transactions)
    for col in (when.header("time"), "amount", "payer", "payee", "channel"):
        tx.add_column(col)
    for t in case.transactions:
        tx.add_row(
            when(t.transaction_time),
            yuan(t.amount_fen),
            f"{t.payer_institution} {shown.account(t.payer_account)}",
            f"{t.payee_institution} {shown.account(t.payee_account)} ({shown.name(t.payee_name)})",
            t.channel,
        )

    orders = Table(title="orders", title_justify="left")
    expires = Times((o.expires_at for o in case.orders), unit="minutes")
    for col in (
        "order",
        "kind",
        "layer",
        "to",
        "amount",
        "state",
        "held",
        "answered after",
        expires.header("expires"),
        "authorised by",
    ):
        orders.add_column(col)
    for o in case.orders:
        orders.add_row(
            o.order_id.rsplit("-", 1)[-1],
            o.kind.value,
            (
                f"L{o.layer}"
                + (f" ← {o.upstream_order_id.rsplit('-', 1)[-1]}" if o.upstream_order_id else "")
            )
            if o.is_hold and o.layer
            else "",
            o.addressed_to,
            yuan(o.amount_fen),
            Text(o.state.value, style=STATE_STYLE.get(o.state, "")),
            yuan(o.held_fen) if o.is_hold else "",
            duration(_since(o.issued_at, o.answered_at)),
            expires(o.expires_at),
            f"rule {o.auto_stop_rule_id}" if o.auto_stop_rule_id else o.issued_by,
        )

    timeline = Table(title="timeline", title_justify="left")
    at = Times((e.at for e in case.events), unit="milliseconds")
    for col in ("#", at.header("time"), "+", "by", "step", "what happened"):
        timeline.add_column(col, overflow="fold")
    for e in case.events:
        timeline.add_row(
            str(e.sequence),
            at(e.at),
            duration(e.at - case.created_at),
            e.actor,
            e.kind,
            # The people the step's signed message named (envelope fields 10 and 11).
            shown.text(e.summary.replace(f"{case.case_id}-", "") + e.people()),
        )

    phase_table = Table(title="phases", title_justify="left")
    phase_table.add_column("phase")
    phase_table.add_column("took", justify="right")
    for name, took in phases(case):
        phase_table.add_row(name, duration(took))

    return Group(Panel(head, title="StopHub case", expand=False), tx, orders, timeline, phase_table)


def cases_table(cases: list[Case]) -> Table:
    table = Table(title=f"{len(cases)} case(s)", title_justify="left")
    reported = Times(c.created_at for c in cases)
    for col in (
        "case",
        "state",
        "reported by",
        reported.header("reported at"),
        "loss",
        "held",
        "returned",
        "orders",
    ):
        table.add_column(col)
    for c in cases:
        table.add_row(
            c.case_id,
            c.state.value,
            c.reporting_institution,
            reported(c.created_at),
            yuan(c.loss_fen),
            yuan(c.held_fen),
            yuan(c.returned_fen),
            str(len(c.orders)),
        )
    return table


def institution_view(inst: Institution) -> Group:
    head = Table.grid(padding=(0, 2))
    head.add_row("code", Text(inst.code, style="bold"), "kind", inst.kind.value)
    head.add_row("name", inst.display_name, "registered", stamp(inst.created_at))
    keys = Table(title="signing keys", title_justify="left")
    for col in ("key id", "algorithm", "state", "created", "revoked"):
        keys.add_column(col)
    for k in inst.keys:
        keys.add_row(
            k.key_id,
            k.algorithm,
            k.state.value,
            stamp(k.created_at),
            stamp(k.revoked_at),
        )
    contacts = Table(title="duty contacts (5×24)", title_justify="left")
    for col in ("role", "name", "phone", "email"):
        contacts.add_column(col)
    for c in inst.contacts:
        contacts.add_row(c.role.value, c.name, c.phone, c.email)
    return Group(Panel(head, expand=False), keys, contacts)
