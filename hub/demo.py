"""`stophub demo`: one fraud case's whole life, over real gRPC, between real clients.

A hub on a fresh SQLite file; the anti-fraud centre, two banks and a payment institution
as gRPC clients built on adapters/ (the SDK and the bank agent over simulated core banks).
A victim at Bank A loses ¥50,000 in two transfers to a mule account at Bank B, which has
already moved ¥18,000 on to a wallet at PayX. The case goes through report, verification,
the automatic stop, the answers, a downstream stop, freezes, returns and close.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from adapters.bank import BankAgent
from adapters.corebank import PaymentNetwork, SimulatedCoreBank
from adapters.sdk import Delivery, DeliveryStream, HubClient
from hub import bootstrap
from hub.clock import SystemClock
from hub.crypto import pki
from hub.crypto.fields import Keyring
from hub.crypto.keys import PrivateKey, save_private_key
from hub.crypto.public import public_key_to_pem
from hub.domain.cases import CaseState, mask, yuan
from hub.domain.institutions import ContactRole, DutyContact, InstitutionKind
from hub.render import case_view, duration
from hub.service.admin import NewKey, Registry
from hub.service.evidence import verify_signatures
from hub.store.sql import SqlStore
from hub.store.tables import audit_log
from stophub.v1 import account_pb2, case_pb2, delivery_pb2, envelope_pb2, order_pb2

CENTRE, BANK_A, BANK_B, PAYX = "CENTRE", "BANKA", "BANKB", "PAYX"
MEMBERS = [
    (CENTRE, "Anti-Fraud Centre (demo city)", InstitutionKind.ANTI_FRAUD_CENTRE),
    (BANK_A, "Bank A", InstitutionKind.BANK),
    (BANK_B, "Bank B", InstitutionKind.BANK),
    (PAYX, "PayX Wallet", InstitutionKind.PAYMENT_INSTITUTION),
]
VICTIM = account_pb2.AccountRef(
    institution_code=BANK_A, account_number="6222010000000001", holder_name="Zhang San"
)
MULE = account_pb2.AccountRef(
    institution_code=BANK_B, account_number="6222020000000002", holder_name="Li Si"
)
WALLET = account_pb2.AccountRef(
    institution_code=PAYX, account_number="PX88000003", holder_name="Wang Wu"
)
FREEZE_CASE = "JX-2026-0312"
SPEED = 120.0
PAYX_DELAY = timedelta(minutes=12)
AUTHORITY = "Public Security Bureau, Xicheng District"


class DemoClock:
    """Case time for the demo: it runs `speed` times faster than the wall clock, so the
    minutes a slow bank takes pass in seconds, and it can be set back for the fraud that
    happened before the report."""

    def __init__(self, speed: float) -> None:
        self.base = SystemClock()
        self.speed = speed
        self.origin = self.base.now()
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return self.origin + (self.base.now() - self.origin) * self.speed + self.offset


@dataclass
class Inbox:
    """One institution's delivery stream, read in the background, acknowledged on receipt."""

    stream: DeliveryStream
    received: list[Delivery] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def pump(self) -> None:
        async for delivery in self.stream:
            await self.stream.ack(delivery.sequence)
            async with self.changed:
                self.received.append(delivery)
                self.changed.notify_all()

    async def wait_for(
        self, predicate: Callable[[delivery_pb2.Notice], bool], timeout: float = 20.0
    ) -> delivery_pb2.Notice:
        async def find() -> delivery_pb2.Notice:
            async with self.changed:
                while True:
                    for d in self.received:
                        if predicate(d.notice):
                            return d.notice
                    await self.changed.wait()

        found: delivery_pb2.Notice = await asyncio.wait_for(find(), timeout)
        return found


def answered(order_id: str) -> Callable[[delivery_pb2.Notice], bool]:
    return lambda n: (
        n.kind == delivery_pb2.NOTICE_KIND_ORDER_ANSWERED and n.order.order_id == order_id
    )


def fresh_directory(directory: Path) -> None:
    if directory.exists():
        shutil.rmtree(directory)
    (directory / "keys").mkdir(parents=True)


VICTIM_ID_NUMBER = "110101199001011234"
VICTIM_PHONE = "13800000000"


def show_evidence(console: Console, store: SqlStore, db: Path) -> bool:
    """What an auditor would check: every stored signature, and no personal data in clear."""
    report = verify_signatures(store)
    keys = len(report.by_key)
    console.print(
        f"evidence: {report.checked} signed messages in the audit log re-verified with the "
        f"{keys} key(s) valid when the hub recorded them: "
        + ("all good" if report.ok else f"[bold red]{len(report.problems)} problem(s)")
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
        else f"[bold red]in clear in {db.name}: {', '.join(found)}"
    )
    return report.ok and not found


async def run_demo(directory: Path, console: Console, *, speed: float = SPEED) -> int:
    fresh_directory(directory)
    db = directory / "stophub.db"
    url = f"sqlite:///{db}"
    clock = DemoClock(speed)
    console.rule("[bold]StopHub demo")
    console.print(f"hub database: {db}")

    # ---- the network: keys, registry, hub --------------------------------------------------
    keys: dict[str, PrivateKey] = {}
    for code in ("HUB", *(m[0] for m in MEMBERS)):
        keys[code] = PrivateKey.generate()
        save_private_key(keys[code], directory / "keys" / f"{code.lower()}.key")
        (directory / "keys" / f"{code.lower()}.pub").write_bytes(
            public_key_to_pem(keys[code].algorithm, keys[code].public_key)
        )
    # Personal data is sealed at rest here too: the demo keeps its keys beside its database.
    data_keys = Keyring.generate()
    data_keys.save(directory / "data-keys.json")
    # Mutual TLS as in production: the network's CA, the hub's certificate, one per member.
    tls_dir = directory / "pki"
    ca, _ = pki.init(tls_dir, SystemClock().now())
    for code, _name, _kind in MEMBERS:
        pki.issue(tls_dir, code, SystemClock().now())
    server, store = await bootstrap.serve(
        url,
        keys["HUB"],
        "127.0.0.1:0",
        tls=pki.server_tls(tls_dir),
        data_keys=data_keys,
        clock=clock,
        sweep_interval=0.02,
        # The sweep runs every 20 ms of wall time, which is `speed` times more case time.
        late_after=timedelta(seconds=0.1 * speed),
    )
    console.print(
        f"case time runs {speed:g}× faster than the wall clock: a minute passes in "
        f"{60 / speed:.2f} s"
    )
    target = f"127.0.0.1:{server.port}"
    registry = Registry(store, clock)
    for code, name, kind in MEMBERS:
        registry.add_institution(
            code,
            name,
            kind,
            [NewKey(keys[code].algorithm, keys[code].public_key)],
            [
                DutyContact(ContactRole.PRIMARY, f"{name} duty officer A", "+86-10-6000-0001"),
                DutyContact(ContactRole.BACKUP, f"{name} duty officer B", "+86-10-6000-0002"),
            ],
        )
    console.print(f"hub listening on {target}; members: " + ", ".join(m[0] for m in MEMBERS))
    console.print(
        f"the hub is serving mutual TLS: members connect with certificates from the CA "
        f"{pki.fingerprint(ca.cert)} (SHA-256), in {tls_dir}",
        soft_wrap=True,
    )

    # ---- the simulated money: three core systems on one payment network -----------------------
    money = PaymentNetwork(clock.now)
    cores = {code: SimulatedCoreBank(code, clock.now) for code in (BANK_A, BANK_B, PAYX)}
    for core in cores.values():
        money.register(core)
    cores[BANK_A].open_account(VICTIM.account_number, VICTIM.holder_name, 8_000_000)
    cores[BANK_B].open_account(MULE.account_number, MULE.holder_name, 0)
    cores[PAYX].open_account(WALLET.account_number, WALLET.holder_name, 0)

    clock.offset = -timedelta(minutes=14)
    first = money.transfer(BANK_A, VICTIM.account_number, BANK_B, MULE.account_number, 3_000_000)
    t1 = clock.now()
    clock.offset = -timedelta(minutes=11)
    money.transfer(BANK_A, VICTIM.account_number, BANK_B, MULE.account_number, 2_000_000)
    t2 = clock.now()
    clock.offset = -timedelta(minutes=6)
    money.transfer(BANK_B, MULE.account_number, PAYX, WALLET.account_number, 1_800_000)
    clock.offset = timedelta(0)
    console.print(
        f"the fraud: {VICTIM.holder_name} sent {yuan(3_000_000)} and {yuan(2_000_000)} to "
        f"{MULE.holder_name}'s account {mask(MULE.account_number)} at {BANK_B} ({first} …); "
        f"{yuan(1_800_000)} moved on to wallet {mask(WALLET.account_number)} at {PAYX}"
    )

    def client(code: str) -> HubClient:
        return HubClient(
            target,
            institution=code,
            key=keys[code],
            hub_public_key=keys["HUB"].public_key,
            clock=clock,
            tls=pki.client_tls(tls_dir, code),
        )

    centre, bank_a, bank_b, payx = client(CENTRE), client(BANK_A), client(BANK_B), client(PAYX)
    agents = [
        BankAgent(bank_b, cores[BANK_B], connection_name="primary"),
        # PayX is slow: it answers 12 minutes (of case time) after an order arrives, past
        # the stop clock's 10 minutes, and gets the reminder and the breach escalation.
        BankAgent(
            payx,
            cores[PAYX],
            connection_name="primary",
            answer_delay=(PAYX_DELAY / speed).total_seconds(),
        ),
    ]
    centre_inbox = Inbox(centre.deliveries("operator-desk"))
    bank_a_inbox = Inbox(bank_a.deliveries("fraud-desk"))
    tasks = [asyncio.create_task(a.run()) for a in agents]
    tasks += [asyncio.create_task(i.pump()) for i in (centre_inbox, bank_a_inbox)]
    status = 1
    try:
        # ---- the centre's standing rule -------------------------------------------------------
        await centre.set_auto_stop_rule(
            order_pb2.AutoStopRule(
                rule_id="AUTO-STOP-100K", enabled=True, max_amount_fen=10_000_000
            )
        )
        # ---- report and verification --------------------------------------------------------
        report = case_pb2.Report(
            victim=case_pb2.Victim(
                name=VICTIM.holder_name, id_number=VICTIM_ID_NUMBER, phone=VICTIM_PHONE
            ),
            fraud_type=case_pb2.FRAUD_TYPE_IMPERSONATING_OFFICIALS,
            description="a caller posing as police had the victim move savings to a 'safe account'",
        )
        report.victim_report_time.FromDatetime(clock.now())
        for at, amount, ref in ((t1, 3_000_000, "A-TX-1"), (t2, 2_000_000, "A-TX-2")):
            tx = report.transactions.add(
                amount_fen=amount,
                payer=VICTIM,
                payee=MULE,
                channel=case_pb2.PAYMENT_CHANNEL_MOBILE_BANKING,
                transaction_reference=ref,
            )
            tx.transaction_time.FromDatetime(at)
        case = await bank_a.create_report(report)
        case_id = case.case_id
        await centre_inbox.wait_for(lambda n: n.kind == delivery_pb2.NOTICE_KIND_REPORT_RECEIVED)
        case = await bank_a.verify_report(case_id, confirmed=True)
        stop_b = next(o for o in case.orders if o.addressed_to == BANK_B)

        # ---- Bank B answers the automatic stop; the money went on to PayX ------------------
        notice = await centre_inbox.wait_for(answered(stop_b.order_id))
        onward = list(notice.order.result.onward_transfers)
        for transfer in onward:
            downstream = order_pb2.OrderInstruction(case_id=case_id, note="layer-2 stop")
            downstream.stop.account.CopyFrom(transfer.to_account)
            downstream.stop.amount_fen = transfer.amount_fen
            fact = downstream.stop.transactions.add(amount_fen=transfer.amount_fen)
            fact.transaction_time.CopyFrom(transfer.transfer_time)
            stop_x = await centre.issue_order(downstream)
            await centre_inbox.wait_for(answered(stop_x.order_id))

        # ---- investigation: freeze what the stops hold -------------------------------------
        case = await centre.get_case(case_id)
        freezes = []
        for stop in [o for o in case.orders if o.state == order_pb2.ORDER_STATE_HOLDING]:
            instruction = order_pb2.OrderInstruction(case_id=case_id, note="criminal case filed")
            instruction.freeze.account.CopyFrom(stop.instruction.stop.account)
            instruction.freeze.amount_fen = stop.held_fen
            instruction.freeze.filed_case_number = FREEZE_CASE
            instruction.freeze.approving_authority = AUTHORITY
            instruction.freeze.term_months = 6
            instruction.freeze.stop_order_id = stop.order_id
            freezes.append(await centre.issue_order(instruction))
        for f in freezes:
            await centre_inbox.wait_for(answered(f.order_id))

        # ---- return the frozen money to the victim --------------------------------------------
        case = await centre.get_case(case_id)
        for f in [o for o in case.orders if o.kind == order_pb2.ORDER_KIND_FREEZE]:
            instruction = order_pb2.OrderInstruction(case_id=case_id, note="return decision")
            instruction.fund_return.freeze_order_id = f.order_id
            instruction.fund_return.beneficiary.CopyFrom(VICTIM)
            instruction.fund_return.amount_fen = f.held_fen
            returned = await centre.issue_order(instruction)
            await centre_inbox.wait_for(answered(returned.order_id))
        await bank_a_inbox.wait_for(lambda n: n.kind == delivery_pb2.NOTICE_KIND_CASE_CLOSED)

        # ---- what happened ------------------------------------------------------------------
        console.print(message_timeline(store, case_id))
        with store(read_only=True) as uow:
            final = uow.cases.get(case_id)
        assert final is not None
        console.print(case_view(final))
        console.print(clock_table(store, case_id))
        console.print(balances(cores))
        evidence_ok = show_evidence(console, store, db)
        restored = cores[BANK_A].balance(VICTIM.account_number)
        ok = final.state is CaseState.CLOSED and final.returned_fen == 5_000_000
        ok = ok and restored == 8_000_000 and evidence_ok
        verdict = (
            "[bold green]case closed, ¥50,000.00 back with the victim"
            if ok
            else "[bold red]the case did not settle"
        )
        console.print(verdict)
        console.print(
            f"inspect it: stophub --data-keys {directory / 'data-keys.json'} case show "
            f"{case_id} --db {url}",
            soft_wrap=True,
        )
        status = 0 if ok else 1
    except TimeoutError:
        console.print("[bold red]demo timed out waiting for a step; see the timeline above")
    finally:
        for a in agents:
            await a.stop()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in (centre, bank_a, bank_b, payx):
            await c.close()
        await server.stop(1.0)
        store.dispose()
    return status


def message_timeline(store: object, case_id: str) -> Table:
    """Every signed message of the case from the audit log: who signed it and what it did."""
    from hub.store.sql import SqlStore

    assert isinstance(store, SqlStore)
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(
                audit_log.c.recorded_at, audit_log.c.kind, audit_log.c.detail, audit_log.c.payload
            )
            .where(audit_log.c.case_id == case_id, audit_log.c.payload.is_not(None))
            .order_by(audit_log.c.id)
        ).all()
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
            detail,
        )
    return table


def balances(cores: dict[str, SimulatedCoreBank]) -> Table:
    table = Table(title="core-bank balances after the case", title_justify="left")
    for col in ("institution", "account", "holder", "balance", "held"):
        table.add_column(col)
    for account in (VICTIM, MULE, WALLET):
        core = cores[account.institution_code]
        table.add_row(
            account.institution_code,
            mask(account.account_number),
            account.holder_name,
            yuan(core.balance(account.account_number)),
            yuan(core.held(account.account_number)),
        )
    return table


def clock_table(store: object, case_id: str) -> Table:
    """The case's clocks from the SLA log: when each started, its deadline, how it ended."""
    from hub.store.sql import SqlStore

    assert isinstance(store, SqlStore)
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
        took = duration(c.stopped_at - c.started_at) if c.stopped_at else "running"
        style = {"met": "green", "missed": "bold red", "open": "yellow"}.get(c.state.value, "")
        table.add_row(
            c.kind,
            c.order_id.rsplit("-", 1)[-1] if c.order_id else "",
            c.responsible,
            duration(c.deadline_at - c.started_at),
            f"[{style}]{c.state.value}[/]" if style else c.state.value,
            took,
            "; ".join(f"{e.event} at +{duration(e.at - c.started_at)} ({e.detail})" for e in steps),
        )
    return table
