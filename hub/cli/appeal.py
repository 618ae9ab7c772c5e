"""`stophub appeal`: appeals against stops, freezes and listings (read-only)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import click
from google.protobuf.timestamp_pb2 import Timestamp
from rich.table import Table

from adapters.sdk.identity import Identity
from hub.cli.common import (
    db_option,
    json_option,
    open_store,
    personal_data_option,
    print_json,
    refusals_as_errors,
    remote_options,
    utc,
)
from hub.cli.remote import connect
from hub.domain.appeals import Appeal
from hub.domain.wording import Disclosure
from hub.render.screen import show
from hub.render.wording import stamp
from hub.service.commands.appeal import appeal_to_proto
from stophub.v1 import appeal_pb2


@click.group("appeal")
def appeal_group() -> None:
    """Appeals against stops, freezes and listings (read-only)."""


@appeal_group.command("list")
@click.option("--open", "open_only", is_flag=True, help="Only those waiting for a decision.")
@click.option("--limit", default=50, show_default=True)
@personal_data_option
@json_option
@db_option
@remote_options
@refusals_as_errors
def appeal_list(
    open_only: bool,
    limit: int,
    personal_data: bool,
    as_json: bool,
    database_url: str,
    identity: Identity | None,
) -> None:
    """Appeals, newest first, with their deadline and decision. With --identity: those the
    hub shows that institution (a bank: its own)."""
    if identity is not None:
        with connect(identity) as remote:
            found, names = remote.appeals(open_only, limit)
    else:
        store = open_store(database_url)
        with store(read_only=True) as uow:
            found = list(uow.appeals.recent(limit, open_only=open_only))
            # A reason is free text about people: the names of its case are masked in it.
            cases = [uow.cases.get(case_id) for case_id in {a.case_id for a in found}]
            names = {name for c in cases if c is not None for name in c.personal_names()}
    shown = Disclosure(personal_data).knowing(names)
    if as_json:
        print_json({"appeals": [_appeal(a, shown) for a in found]})
        return
    show(appeals_table([appeal_to_proto(a) for a in found], shown))


def appeals_table(appeals: Sequence[appeal_pb2.Appeal], shown: Disclosure) -> Table:
    """The appeals as `stophub appeal list` draws them, from their wire form: the same for
    the local database and for a hub's ListAppeals answer. `shown` masks the reasons."""
    table = Table(title_justify="left")
    for col in ("appeal", "case", "by", "against", "state", "filed", "decide by", "reason"):
        table.add_column(col)
    for a in appeals:
        table.add_row(
            a.appeal_id,
            a.case_id,
            a.appellant,
            f"{a.reference_kind} {a.reference}",
            _STATES.get(a.state, "unspecified"),
            stamp(_time(a.file_time)),
            stamp(_time(a.decide_by_time)),
            shown.text(a.reason) or "-",
        )
    return table


# The states as the domain names them (hub/domain/appeals.py AppealState values).
_STATES = {
    appeal_pb2.APPEAL_STATE_FILED: "filed",
    appeal_pb2.APPEAL_STATE_UPHELD: "upheld",
    appeal_pb2.APPEAL_STATE_REJECTED: "rejected",
}


def _time(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def _appeal(a: Appeal, shown: Disclosure) -> dict[str, Any]:
    """One appeal for --json (docs/cli.md): people shown as the text output shows them."""
    return {
        "appeal_id": a.appeal_id,
        "case_id": a.case_id,
        "appellant": a.appellant,
        "against": {"kind": a.reference_kind.value, "reference": a.reference},
        "state": a.state.value,
        "filed_at": utc(a.filed_at),
        "decide_by": utc(a.decide_by),
        "decided_at": utc(a.decided_at),
        "decided_by": a.decided_by or None,
        "reason": shown.text(a.reason) or None,
    }
