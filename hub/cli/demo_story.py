"""`stophub demo`: fraud cases' whole lives, over real gRPC, between real clients.

A hub on a fresh SQLite file; the anti-fraud centre, two banks and a payment institution
as gRPC clients built on adapters/ (the SDK and bank agents over simulated core banks).

A victim at Bank A loses ¥50,000 in two transfers to a mule account at Bank B. The mule had
already sent ¥18,000 on to a wallet at PayX, and the wallet ¥8,000 on to a cash-out account
back at Bank A. Under the centre's standing rule the hub follows the money by itself, three
layers deep: a stop at each account, each bounded by what of the loss can have reached it.
Then a second victim, a PayX customer, pays ¥10,000 into the same mule account, which sends
¥6,000 of it abroad, beyond the network's reach. The two cases are linked; the money frozen in
the mule's account is shared between the two victims after the 30-day public notice (case
time runs fast); the money traced to one victim alone goes back to her at once.

Meanwhile the centre lists the mule's account, the mule and the cash-out account. PayX keeps
a copy of the list in the TOKENS form (no account numbers in clear), follows it live and
refuses a payment to the mule from it; Bank A, which keeps no copy, asks the hub with one
batch check. Bank B's own monitoring hands the centre a red lead about a second mule account;
the centre accepts it by listing the account, and PayX refuses the next victim's payment to it
from its copy before any money moves. After the cases close, Bank B appeals the mule's listing
(rejected, the reason goes back) and Bank A the cash-out account's (upheld: the entry leaves
PayX's copy within a second). Last, a third customer of Bank A is about to pay the mule: the
centre warns Bank A (red), whose duty desk acknowledges within the contact window and
dissuades her.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.text import Text

from adapters.bank import BankAgent
from adapters.blacklist import Form, Replica
from adapters.corebank import PaymentNetwork, SimulatedCoreBank
from adapters.sdk import HubClient, HubError, HubSignatureError
from hub import bootstrap
from hub.cli.demo_cast import (
    ABROAD,
    BANK_A,
    BANK_B,
    CASHOUT,
    CENTRE,
    MEMBERS,
    MULE,
    MULE_2,
    OFFSHORE,
    PAYX,
    PAYX_DELAY,
    PUBLIC_NOTICE,
    SPEED,
    VICTIM,
    VICTIM_2,
    WALLET,
    Backdated,
    DemoClock,
    DemoNetwork,
    Inbox,
    Stalled,
    answered,
    closed,
    demo_policy,
    freeze_holding_stops,
    fresh_directory,
    publish_listings,
    run_appeals,
    run_warning,
    victim_report,
    wait_until,
)
from hub.cli.demo_views import (
    appeals_table,
    balances,
    clock_table,
    inspect_commands,
    message_timeline,
    returns_table,
    show_evidence,
    show_failure,
)
from hub.crypto import pki
from hub.crypto.fields import Keyring
from hub.crypto.keys import PrivateKey, save_private_key
from hub.crypto.listkey import ListKey
from hub.crypto.public import public_key_to_pem
from hub.domain.cases import CaseState
from hub.domain.institutions import ContactRole, DutyContact
from hub.domain.wording import mask, yuan
from hub.render.case import case_view
from hub.render.screen import ALARM
from hub.render.trail import trail_svg, trail_tree
from hub.render.wording import duration, stamp
from hub.service.admin import NewKey, Registry
from hub.system.clock import SystemClock
from stophub.v1 import (
    account_pb2,
    appeal_pb2,
    blacklist_pb2,
    delivery_pb2,
    grade_pb2,
    lead_pb2,
    order_pb2,
    returns_pb2,
    warning_pb2,
)


async def run_demo(
    directory: Path,
    console: Console,
    *,
    speed: float = SPEED,
    keep: Callable[[DemoNetwork], Awaitable[int]] | None = None,
) -> int:
    """Tell the story; then, if it settled and `keep` is given, hand the running network to
    `keep` (`stophub demo --console`) and stop it when `keep` returns (its status is the
    demo's)."""
    fresh_directory(directory)
    db = directory / "stophub.db"
    url = f"sqlite:///{db}"
    clock = DemoClock(speed)
    console.rule(Text("StopHub demo", "bold"))
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
    # The network's list key: members that keep a TOKENS copy of the blacklist hold it too.
    list_key = ListKey.generate()
    list_key.save(directory / "list-key.json")
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
        list_key=list_key,
        clock=clock,
        policy_file=demo_policy(directory, clock.now().date()),
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

    # ---- the simulated money: four core systems on one payment network -----------------------
    money_clock = Backdated(clock)
    money = PaymentNetwork(money_clock.now)
    cores = {
        code: SimulatedCoreBank(code, money_clock.now) for code in (BANK_A, BANK_B, PAYX, ABROAD)
    }
    for core in cores.values():
        money.register(core)
    for acct, balance in (
        (VICTIM, 8_000_000),
        (VICTIM_2, 2_000_000),
        (MULE, 0),
        (WALLET, 0),
        (CASHOUT, 0),
        (OFFSHORE, 0),
    ):
        cores[acct.institution_code].open_account(acct.account_number, acct.holder_name, balance)

    def pay(
        source: account_pb2.AccountRef, sink: account_pb2.AccountRef, fen: int, ago: float
    ) -> datetime:
        money_clock.back = timedelta(minutes=ago)
        money.transfer(
            source.institution_code,
            source.account_number,
            sink.institution_code,
            sink.account_number,
            fen,
        )
        at = money_clock.now()
        money_clock.back = timedelta(0)
        return at

    t1 = pay(VICTIM, MULE, 3_000_000, 14)
    t2 = pay(VICTIM, MULE, 2_000_000, 11)
    pay(MULE, WALLET, 1_800_000, 8)
    pay(WALLET, CASHOUT, 800_000, 6)
    console.print(
        f"the fraud: {VICTIM.holder_name} sent {yuan(3_000_000)} and {yuan(2_000_000)} to "
        f"{MULE.holder_name}'s account {mask(MULE.account_number)} at {BANK_B}; "
        f"{yuan(1_800_000)} moved on to wallet {mask(WALLET.account_number)} at {PAYX}, and "
        f"{yuan(800_000)} from there to {mask(CASHOUT.account_number)} at {BANK_A}"
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
        BankAgent(bank_a, cores[BANK_A], connection_name="primary"),
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
    centre_inbox = Inbox("the centre", centre.deliveries("operator-desk"))
    tasks = [
        asyncio.create_task(a.run(), name=f"{a.client.institution}'s bank agent") for a in agents
    ]
    tasks.append(asyncio.create_task(centre_inbox.pump(), name="the centre's inbox"))
    # PayX's copy of the list: tokens only, kept in its own file, following the hub live.
    payx_list = Replica(
        directory / "payx-list.db", payx, Form.TOKENS, list_key=list_key, clock=clock
    )
    status = 1
    step = "the centre's standing rule"
    try:
        # ---- the centre's standing rule: stop at once, and follow the money -----------------
        await centre.set_auto_stop_rule(
            order_pb2.AutoStopRule(
                rule_id="AUTO-STOP-100K",
                enabled=True,
                max_amount_fen=10_000_000,
                follow_onward_transfers=True,
                max_layer=5,
            )
        )
        # ---- the first victim: report, verification, the stops layer by layer ----------------
        step = "the first victim: report, verification, the stops layer by layer"
        report = victim_report(
            VICTIM, [(t1, 3_000_000, "A-TX-1"), (t2, 2_000_000, "A-TX-2")], clock.now()
        )
        case = await bank_a.create_report(report)
        case_id = case.case_id
        await centre_inbox.wait_for(
            lambda n: n.kind == delivery_pb2.NOTICE_KIND_REPORT_RECEIVED,
            f"the centre to be told of {BANK_A}'s report {case_id}",
        )
        await bank_a.verify_report(case_id, confirmed=True)
        # Bank B holds what is left and reports the wallet; the hub stops the wallet; PayX
        # (late) reports the cash-out account; the hub stops that too.
        await centre_inbox.wait_for(
            lambda n: (
                n.kind == delivery_pb2.NOTICE_KIND_ORDER_ANSWERED
                and n.case_id == case_id
                and n.order.layer == 3
            ),
            f"{BANK_A} to answer the third layer's stop of {case_id} (the cash-out account; "
            f"{PAYX} answers the second layer's {PAYX_DELAY.total_seconds() / 60:g} minutes late)",
            patience=3,
        )

        # ---- the second victim pays the same mule, which sends part of it abroad ---------
        step = "the second victim pays the same mule"
        t3 = pay(VICTIM_2, MULE, 1_000_000, 0.5)
        pay(MULE, OFFSHORE, 600_000, 0)
        console.print(
            f"a second victim, {VICTIM_2.holder_name} at {PAYX}, pays {yuan(1_000_000)} into the "
            f"same mule account; {yuan(600_000)} of it goes on to {ABROAD}, outside the network"
        )
        second = await payx.create_report(
            victim_report(VICTIM_2, [(t3, 1_000_000, "X-TX-1")], clock.now())
        )
        second_id = second.case_id
        linked = await centre_inbox.wait_for(
            lambda n: n.kind == delivery_pb2.NOTICE_KIND_REPORT_RECEIVED and n.case_id == second_id,
            f"the centre to be told of {PAYX}'s report {second_id}",
        )
        console.print(
            f"the centre is told at once: case {second_id} is linked to "
            + ", ".join(link.case_id for link in linked.linked_cases)
        )
        await payx.verify_report(second_id, confirmed=True)
        await centre_inbox.wait_for(
            lambda n: (
                n.kind == delivery_pb2.NOTICE_KIND_TRAIL_ESCALATION and n.case_id == second_id
            ),
            f"the centre to be told that money of {second_id} went beyond the network's reach",
        )

        # ---- investigation: freeze what every stop holds ------------------------------------
        step = "investigation: freeze what every stop holds"
        for cid in (case_id, second_id):
            await freeze_holding_stops(centre, centre_inbox, cid)

        # ---- the blacklist: the centre lists, PayX's copy follows, payments are refused ------
        step = "the blacklist"
        listings = await publish_listings(centre, case_id)
        first_sync = await payx_list.sync_once()
        console.print(f"PayX's copy of the list (tokens only): {first_sync.line()}")
        tasks.append(
            asyncio.create_task(payx_list.run(follow=True), name="PayX's copy of the list")
        )
        refused_payment = payx_list.is_listed_account(MULE.institution_code, MULE.account_number)
        console.print(
            Text.assemble(
                f"a PayX customer tries to pay {MULE.holder_name}'s account "
                f"{mask(MULE.account_number)}: ",
                f"refused from PayX's own copy (listed as {refused_payment.entry_id} until "
                f"{refused_payment.expires_at:%Y-%m-%d})"
                if refused_payment is not None
                else ("not listed in PayX's copy", ALARM),
            )
        )
        checked = await bank_a.check_list(
            [blacklist_pb2.ListSubject(account=acct) for acct in (MULE, CASHOUT, VICTIM)]
        )
        console.print(
            "Bank A keeps no copy and asks the hub (CheckList, up to 1,000 a call): "
            + ", ".join(
                f"{mask(a.account_number)} {'listed' if h.listed else 'not listed'}"
                for a, h in zip((MULE, CASHOUT, VICTIM), checked.hits, strict=True)
            )
        )

        # ---- a lead: Bank B's monitoring flags a second mule, listed before anyone pays it --
        step = "a lead from Bank B's monitoring"
        lead = await bank_b.submit_lead(
            lead_pb2.SubmitLeadBody(
                accounts=[MULE_2],
                grade=grade_pb2.GRADE_RED,
                grounds="opened last week by the same agent as Li Si's; forty small credits, "
                "each moved out within minutes",
            )
        )
        accepted = await centre.triage_lead(
            lead_pb2.TriageLeadBody(
                name=lead.name,
                list_account=lead_pb2.ListLeadAccount(
                    account=MULE_2,
                    basis=blacklist_pb2.LIST_BASIS_ACCOUNT_TRADER,
                    source_case_id=case_id,
                    reason=f"mule account of the same ring (lead {lead.name} of {BANK_B})",
                ),
            )
        )
        lead_listed = await wait_until(
            lambda: (
                payx_list.is_listed_account(MULE_2.institution_code, MULE_2.account_number)
                is not None
            )
        )
        console.print(
            Text.assemble(
                f"{BANK_B}'s monitoring hands the centre lead {lead.name} (red) about "
                f"{mask(MULE_2.account_number)}; the centre accepts it and lists the account "
                f"({accepted.list_entry_id}); the next victim, a PayX customer about to pay it: ",
                "refused from PayX's own copy before any money moved"
                if lead_listed
                else ("not listed in PayX's copy", ALARM),
            )
        )

        # ---- where the money is: both trails, with what is held and whose it is ----------
        step = "the money trails"
        for cid in (case_id, second_id):
            trail = await centre.get_case_trail(cid)
            console.rule(f"money trail of case {cid}, frozen")
            console.print(trail_tree(trail))
            picture = directory / f"trail-{cid}.svg"
            picture.write_text(trail_svg(trail), encoding="utf-8")
            console.print(f"drawn in {picture} (open it in a browser)")

        # ---- fair returns -----------------------------------------------------------------------
        step = "fair returns"
        # Traced to the first victim alone: the wallet and the cash-out account.
        distributions = []
        for acct in (WALLET, CASHOUT):
            traced = await centre.start_distribution(
                returns_pb2.StartDistributionBody(case_id=case_id, account=acct)
            )
            distributions.append(traced)
            for share in traced.shares:
                for order_id in share.return_order_ids:
                    await centre_inbox.wait_for(
                        answered(order_id), f"{acct.institution_code} to answer return {order_id}"
                    )
        # Both victims' money reached the mule's account: shared after a public notice.
        shared = await centre.start_distribution(
            returns_pb2.StartDistributionBody(
                case_id=case_id, account=MULE, note="two victims' money in one mule account"
            )
        )
        console.print(
            f"public notice of {shared.distribution_id} until "
            f"{stamp(shared.notice_end_time.ToDatetime(tzinfo=UTC))}; the demo moves case "
            "time on 30 days"
        )
        step = "fair returns, 30 days on"
        clock.offset += PUBLIC_NOTICE + timedelta(minutes=1)
        await centre_inbox.wait_for(
            lambda n: n.kind == delivery_pb2.NOTICE_KIND_PUBLIC_NOTICE_ENDED,
            f"the centre to be told that the public notice of {shared.distribution_id} ended",
            patience=3,
        )
        decided = await centre.decide_distribution(
            shared.distribution_id, confirm=True, reason="no objections were filed"
        )
        distributions.append(decided)
        for share in decided.shares:
            for order_id in share.return_order_ids:
                await centre_inbox.wait_for(
                    answered(order_id), f"{MULE.institution_code} to answer return {order_id}"
                )
        for cid in (case_id, second_id):
            await centre_inbox.wait_for(closed(cid), f"the hub to close case {cid}")

        # ---- appeals: one rejected, one upheld; the upheld listing leaves every copy -------
        step = "appeals"
        appeals = await run_appeals(centre, bank_a, bank_b, listings)
        cashout_cleared = await wait_until(
            lambda: (
                payx_list.is_listed_account(CASHOUT.institution_code, CASHOUT.account_number)
                is None
            )
        )
        console.print(appeals_table(appeals))
        console.print(
            Text.assemble(
                f"PayX's copy after the upheld appeal: {payx_list.status().line()}; "
                f"{mask(CASHOUT.account_number)} ",
                "is no longer listed" if cashout_cleared else ("is still listed", ALARM),
            )
        )

        # ---- a warning: a third customer dissuaded before she pays ---------------------------
        step = "a warning"
        warned = await run_warning(centre, bank_a)
        console.print(
            f"warning {warned.warning_id} (red) to {warned.addressee}: its customer "
            f"{mask(warned.account.account_number)} was about to pay {mask(MULE.account_number)}; "
            f"acknowledged within the 10-minute contact window, customer reached and dissuaded, "
            f"{yuan(warned.loss_prevented_fen)} of loss prevented"
        )

        # ---- what happened ------------------------------------------------------------------
        step = "what happened"
        console.print(message_timeline(store, case_id))
        with store(read_only=True) as uow:
            final = uow.cases.get(case_id)
            final_2 = uow.cases.get(second_id)
        assert final is not None and final_2 is not None
        console.print(case_view(final))
        console.print(clock_table(store, case_id))
        console.print(returns_table(distributions))
        console.print(balances(cores))
        evidence_ok = show_evidence(
            console, store, db, {keys["HUB"].key_id: keys["HUB"].public_key}
        )
        restored = cores[BANK_A].balance(VICTIM.account_number)
        restored_2 = cores[PAYX].balance(VICTIM_2.account_number)
        ok = final.state is CaseState.CLOSED and final_2.state is CaseState.CLOSED
        ok = ok and final.returned_fen == 5_000_000 and restored == 8_000_000
        ok = ok and restored_2 == 1_400_000 and evidence_ok
        ok = ok and refused_payment is not None and cashout_cleared and lead_listed
        ok = ok and warned.outcome == warning_pb2.WARNING_OUTCOME_REACHED_DISSUADED
        ok = ok and [a.state for a in appeals] == [
            appeal_pb2.APPEAL_STATE_REJECTED,
            appeal_pb2.APPEAL_STATE_UPHELD,
        ]
        verdict = (
            Text(
                "both cases closed: ¥50,000.00 back with the first victim, ¥4,000.00 with the "
                "second (¥6,000.00 went abroad, beyond reach, escalated to the centre)",
                "bold green",
            )
            if ok
            else Text("the cases did not settle", ALARM)
        )
        console.print(verdict)
        console.print("look at it again, from this directory:")
        for command in inspect_commands(directory, url, case_id):
            console.print(f"  {command}", soft_wrap=True)
        status = 0 if ok else 1
        if keep is not None and ok:
            step = "the consoles"
            status = await keep(
                DemoNetwork(
                    directory,
                    target,
                    keys,
                    tls_dir,
                    clock,
                    server,
                    store,
                    agents,
                    tasks,
                    [case_id, second_id],
                )
            )
    except Stalled as stalled:
        waited = duration(timedelta(seconds=stalled.waited * speed))
        show_failure(
            console,
            step,
            f"it waited {stalled.waited:.1f} s ({waited} of case time) for {stalled.condition}"
            + (f"; {stalled.why}" if stalled.why else ""),
            store,
            tasks,
        )
    except (HubError, HubSignatureError) as err:
        show_failure(console, step, f"a request to the hub failed: {err}", store, tasks)
    finally:
        for a in agents:
            await a.stop()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        payx_list.close()
        for c in (centre, bank_a, bank_b, payx):
            await c.close()
        await server.stop(1.0)
        store.dispose()
    return status
