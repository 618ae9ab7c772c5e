"""How a case looks to an operator: summary, orders, timeline and phase durations."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from hub.cli.render.wording import duration
from hub.domain.cases import Case, OrderState
from hub.domain.institutions import Institution
from hub.domain.wording import mask, mask_name, yuan
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
    with_personal_data: bool = False,
    linked: Sequence[tuple[str, str, str]] = (),
) -> Group:
    """`linked`: other open cases whose money reached this case's accounts, as
    (case id, institution, account number)."""
    victim = case.victim_name if with_personal_data else mask_name(case.victim_name)
    head = Table.grid(padding=(0, 2))
    head.add_row(
        "case", Text(case.case_id, style="bold"), "state", Text(case.state.value, style="bold")
    )
    head.add_row("reported by", case.reporting_institution, "fraud type", case.fraud_type)
    head.add_row("victim", victim, "reported at", case.created_at.isoformat(timespec="seconds"))
    head.add_row("loss", yuan(case.loss_fen), "held now", yuan(case.held_fen))
    head.add_row("returned", yuan(case.returned_fen), "released", yuan(case.released_fen))
    if linked:
        head.add_row(
            "linked cases",
            ", ".join(
                f"{other} ({institution} {mask(account)})" for other, institution, account in linked
            ),
            "",
            "",
        )

    tx = Table(title="fraudulent transactions", title_justify="left", expand=False)
    for col in ("time", "amount", "payer", "payee", "channel"):
        tx.add_column(col)
    for t in case.transactions:
        tx.add_row(
            t.transaction_time.isoformat(timespec="seconds"),
            yuan(t.amount_fen),
            f"{t.payer_institution} {mask(t.payer_account)}",
            f"{t.payee_institution} {mask(t.payee_account)} ({t.payee_name})",
            t.channel,
        )

    orders = Table(title="orders", title_justify="left")
    for col in (
        "order",
        "kind",
        "layer",
        "to",
        "amount",
        "state",
        "held",
        "answered after",
        "expires",
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
            o.expires_at.isoformat(timespec="minutes") if o.expires_at else "",
            f"rule {o.auto_stop_rule_id}" if o.auto_stop_rule_id else o.issued_by,
        )

    timeline = Table(title="timeline", title_justify="left")
    for col in ("#", "time", "+", "by", "step", "what happened"):
        timeline.add_column(col, overflow="fold")
    for e in case.events:
        timeline.add_row(
            str(e.sequence),
            e.at.strftime("%H:%M:%S.%f")[:-3],
            duration(e.at - case.created_at),
            e.actor,
            e.kind,
            e.summary.replace(f"{case.case_id}-", ""),
        )

    phase_table = Table(title="phases", title_justify="left")
    phase_table.add_column("phase")
    phase_table.add_column("took", justify="right")
    for name, took in phases(case):
        phase_table.add_row(name, duration(took))

    return Group(Panel(head, title="StopHub case", expand=False), tx, orders, timeline, phase_table)


def cases_table(cases: list[Case]) -> Table:
    table = Table(title=f"{len(cases)} case(s)", title_justify="left")
    for col in (
        "case",
        "state",
        "reported by",
        "reported at",
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
            c.created_at.isoformat(timespec="seconds"),
            yuan(c.loss_fen),
            yuan(c.held_fen),
            yuan(c.returned_fen),
            str(len(c.orders)),
        )
    return table


def institution_view(inst: Institution) -> Group:
    head = Table.grid(padding=(0, 2))
    head.add_row("code", Text(inst.code, style="bold"), "kind", inst.kind.value)
    head.add_row(
        "name", inst.display_name, "registered", inst.created_at.isoformat(timespec="seconds")
    )
    keys = Table(title="signing keys", title_justify="left")
    for col in ("key id", "algorithm", "state", "created", "revoked"):
        keys.add_column(col)
    for k in inst.keys:
        keys.add_row(
            k.key_id,
            k.algorithm,
            k.state.value,
            k.created_at.isoformat(timespec="seconds"),
            k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "",
        )
    contacts = Table(title="duty contacts (5×24)", title_justify="left")
    for col in ("role", "name", "phone", "email"):
        contacts.add_column(col)
    for c in inst.contacts:
        contacts.add_row(c.role.value, c.name, c.phone, c.email)
    return Group(Panel(head, expand=False), keys, contacts)
