"""What the demo prints besides its running commentary (hub/cli/demo_story.py): tables of the
appeals, returns, signed messages, balances and clocks, the auditor's check of the evidence,
the commands to look at it again, and what went on when a step did not come about."""

from __future__ import annotations

import asyncio
import shlex
import shutil
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from adapters.corebank import SimulatedCoreBank
from hub.cli.demo_cast import (
    CASHOUT,
    MULE,
    OFFSHORE,
    VICTIM,
    VICTIM_2,
    VICTIM_ID_NUMBER,
    VICTIM_PHONE,
    WALLET,
)
from hub.domain.wording import MASKED, mask, yuan
from hub.render.screen import ALARM
from hub.render.wording import duration, stamp
from hub.service import auditverify
from hub.service.evidence import verify_signatures
from hub.store.sql import SqlStore
from stophub.v1 import appeal_pb2, envelope_pb2, returns_pb2


def show_evidence(
    console: Console, store: SqlStore, db: Path, hub_keys: Mapping[str, bytes]
) -> bool:
    """What an auditor would check: every stored signature, and no personal data in clear.
    `hub_keys`: the hub's public keys as the auditor holds them, never the registry's list."""
    report = verify_signatures(store)
    keys = len(report.by_key)
    # The hub places entries in the log's Merkle tree within a sweep and signs checkpoints
    # as case time passes: the tree must fit every one of them.
    tree = auditverify.verify_store(store, hub_keys.get, store.scan_audit)
    console.print(
        Text(
            f"audit log: {tree.tree_size} entries in a Merkle tree (root {tree.root.hex()[:16]}…), "
            f"{tree.checkpoints} signed checkpoint(s) fit it: "
        ).append(*(("intact",) if tree.ok else (f"{len(tree.findings)} problem(s)", ALARM)))
    )
    console.print(
        Text(
            f"evidence: {report.checked} signed messages in the audit log re-verified with the "
            f"{keys} key(s) valid when the hub recorded them: "
        ).append(*(("all good",) if report.ok else (f"{len(report.problems)} problem(s)", ALARM)))
    )
    # The database file and its write-ahead log: every byte SQLite has written.
    raw = b"".join(p.read_bytes() for p in (db, db.with_name(db.name + "-wal")) if p.exists())
    planted = {
        "the victim's name": VICTIM.holder_name,
        "ID number": VICTIM_ID_NUMBER,
        "phone": VICTIM_PHONE,
    }
    found = [what for what, value in planted.items() if value.encode() in raw]
    console.print(
        f"personal data at rest: {', '.join(planted)} appear nowhere in {db.name} "
        "(sealed with AES-256-GCM)"
        if not found
        else Text(f"in clear in {db.name}: {', '.join(found)}", ALARM)
    )
    return report.ok and not found and tree.ok


def appeals_table(appeals: list[appeal_pb2.Appeal]) -> Table:
    t = Table(title="appeals", title_justify="left")
    for col in ("appeal", "by", "against", "decision", "reason", "removed / released"):
        t.add_column(col)
    for a in appeals:
        t.add_row(
            a.appeal_id,
            a.appellant,
            f"{a.reference_kind} {a.reference}",
            appeal_pb2.AppealState.Name(a.state).removeprefix("APPEAL_STATE_").lower(),
            a.reason,
            " ".join([*a.removed_entry_ids, *a.release_order_ids]) or "-",
        )
    return t


def returns_table(distributions: list[returns_pb2.Distribution]) -> Table:
    """Every distribution and what each victim got from it."""
    table = Table(title="fair returns (distributions)", title_justify="left")
    for col in ("distribution", "account", "method", "frozen", "case", "claim", "share", "orders"):
        table.add_column(col)
    for d in distributions:
        method = returns_pb2.DistributionMethod.Name(d.method).removeprefix("DISTRIBUTION_METHOD_")
        for i, share in enumerate(d.shares):
            table.add_row(
                d.distribution_id if i == 0 else "",
                f"{d.account.institution_code} {mask(d.account.account_number)}" if i == 0 else "",
                method.lower().replace("_", " ") if i == 0 else "",
                yuan(d.pool_fen) if i == 0 else "",
                share.case_id,
                yuan(share.claim_fen),
                yuan(share.share_fen),
                ", ".join(o.rsplit("-", 1)[-1] for o in share.return_order_ids),
            )
    return table


def message_timeline(store: SqlStore, case_id: str) -> Table:
    """Every signed message of the case from the audit log: who signed it and what it did."""
    with store(read_only=True) as uow:
        rows = uow.reports.signed_messages(case_id)
        case = uow.cases.get(case_id)
    # The notices name the people of the case: shown as every view shows them (masked).
    shown = MASKED.knowing(case.personal_names() if case is not None else ())
    table = Table(title="signed messages of the case (from the audit log)", title_justify="left")
    for col in ("+", "dir", "signed by (key)", "to", "body", "what it did"):
        table.add_column(col, overflow="fold")
    start = rows[0].recorded_at if rows else None
    for at, kind, detail, payload in rows:
        env = envelope_pb2.Envelope()
        env.ParseFromString(payload)
        detail = detail.replace(f"{case_id}-", "")
        if detail.startswith("answer to "):
            detail = "the hub's signed answer"
        table.add_row(
            duration(at - start) if start else "",
            "in" if kind == "received" else "out",
            f"{env.sender} ({env.key_id[:8]})",
            env.recipient,
            env.body_type.removeprefix("stophub.v1."),
            shown.text(detail),
        )
    return table


def balances(cores: dict[str, SimulatedCoreBank]) -> Table:
    table = Table(title="core-bank balances after the case", title_justify="left")
    for col in ("institution", "account", "holder", "balance", "held"):
        table.add_column(col)
    for account in (VICTIM, VICTIM_2, MULE, WALLET, CASHOUT, OFFSHORE):
        core = cores[account.institution_code]
        table.add_row(
            account.institution_code,
            mask(account.account_number),
            MASKED.name(account.holder_name),
            yuan(core.balance(account.account_number)),
            yuan(core.held(account.account_number)),
        )
    return table


def clock_table(store: SqlStore, case_id: str) -> Table:
    """The case's clocks from the SLA log: when each started, its deadline, how it ended."""
    with store(read_only=True) as uow:
        clocks = uow.clocks.query(
            institution=None,
            case_id=case_id,
            open_only=False,
            breached_only=False,
            limit=200,
            offset=0,
        )
        entries = uow.clocks.entries([c.clock_id for c in clocks])
    table = Table(title="case clocks (SLA log)", title_justify="left")
    for col in ("clock", "order", "responsible", "window", "state", "took", "escalation"):
        table.add_column(col)
    for c in sorted(clocks, key=lambda c: c.started_at):
        steps = [e for e in entries[c.clock_id] if e.event not in ("started", "met", "missed")]
        took = (
            duration(c.stopped_at - c.started_at)
            if c.stopped_at
            else ("running" if c.state.value == "open" else "—")
        )
        style = {"met": "green", "missed": "bold red", "open": "yellow"}.get(c.state.value, "")
        table.add_row(
            c.kind,
            c.order_id.rsplit("-", 1)[-1] if c.order_id else "",
            c.responsible,
            duration(c.deadline_at - c.started_at),
            Text(c.state.value, style),
            took,
            "; ".join(f"{e.event} at +{duration(e.at - c.started_at)} ({e.detail})" for e in steps),
        )
    return table


def stophub_command() -> str:
    """How to run this `stophub` from the current directory: `stophub` when that is what PATH
    finds, else the script beside this Python (`.venv/bin/stophub` after `make demo`),
    relative when it lies below the current directory, or `python -m hub.cli`."""
    script = Path(sys.executable).parent / "stophub"
    if not script.exists():
        return f"{shlex.quote(sys.executable)} -m hub.cli"
    found = shutil.which("stophub")
    if found is not None and Path(found).resolve() == script.resolve():
        return "stophub"
    here = Path.cwd()
    shown = script.relative_to(here) if script.is_relative_to(here) else script
    return shlex.quote(str(shown))


def inspect_commands(directory: Path, database_url: str, case_id: str) -> list[str]:
    """Commands that show the demo's first case again, pasted where the demo ran."""
    common = f"{stophub_command()} --data-keys {shlex.quote(str(directory / 'data-keys.json'))}"
    db = f"--db {shlex.quote(database_url)}"
    return [
        f"{common} case show {case_id} {db}",
        f"{common} case trail {case_id} --svg trail.svg {db}",
        f"{common} report sla --case {case_id} --out sla.html "
        f"--hub-key {shlex.quote(str(directory / 'keys' / 'hub.pub'))} {db}",
    ]


def recent_activity(store: SqlStore, limit: int = 20) -> Table:
    """The last `limit` entries of the hub's audit log: what it received, sent and refused."""
    with store(read_only=True) as uow:
        records = list(uow.audit.scan(0, 1_000_000))[-limit:]
    # No borders and no message ids: read in an 80-column terminal, the detail keeps the room.
    table = Table(
        title=f"the hub's last {len(records)} audit log entries (case time)",
        title_justify="left",
        box=None,
        padding=(0, 1, 0, 0),
    )
    table.add_column("at", no_wrap=True)
    table.add_column("by", no_wrap=True)
    table.add_column("entry", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for r in records:
        table.add_row(
            stamp(r.recorded_at),
            r.entry.actor,
            Text(r.entry.kind, ALARM if r.entry.kind == "rejected" else ""),
            r.entry.detail,
        )
    return table


def show_failure(
    console: Console,
    step: str,
    what: str,
    store: SqlStore,
    actors: Iterable[asyncio.Task[None]],
) -> None:
    """Why the demo stopped: the step, what it waited for and how long, which of the members'
    background tasks ended, and the hub's latest audit entries."""
    console.print(Text(f"the demo stopped in the step '{step}': {what}", ALARM), soft_wrap=True)
    for task in actors:
        if task.done() and not task.cancelled() and task.exception() is not None:
            console.print(
                Text(f"{task.get_name()} stopped: {task.exception()}", ALARM), soft_wrap=True
            )
    console.print(recent_activity(store))
