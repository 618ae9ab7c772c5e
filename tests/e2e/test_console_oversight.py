"""The regulator's and auditors' consoles (issue 20 item 5): the SLA figures and the SLA
report made from the hub's gRPC answers, and the audit log's signed checkpoint, kept and proved
consistent, with a rolled-back or forked log shown as a red finding."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from adapters.console.models import JournalEntry, KeptCheckpoint
from adapters.sdk import HubClient, HubError
from hub.crypto import fields
from hub.render.report import DIGEST_ID
from stophub.v1 import order_pb2, sla_pb2
from tests.console_support import Browserless, ConsoleNetwork, console_network
from tests.e2e.wire_helpers import MULE, report

# One worker runs the whole module: one hub and console for the module.
pytestmark = pytest.mark.xdist_group("console_oversight")


def stop_of(case_id: str, net: ConsoleNetwork) -> order_pb2.OrderInstruction:
    instruction = order_pb2.OrderInstruction(case_id=case_id)
    instruction.stop.account.CopyFrom(MULE)
    instruction.stop.amount_fen = 1_000_000
    fact = instruction.stop.transactions.add(amount_fen=1_000_000)
    fact.transaction_time.FromDatetime(net.clock.now() - timedelta(minutes=10))
    return instruction


def new_case_with_stop(net: ConsoleNetwork, bank: HubClient, centre: HubClient) -> str:
    async def go() -> str:
        case = await bank.create_report(report(net.clock.now()))
        await bank.verify_report(case.case_id)
        await centre.issue_order(stop_of(case.case_id, net))
        return case.case_id

    return net.run(go())


def checkpoint_after(net: ConsoleNetwork, client: HubClient, above: int) -> tuple[int, bytes]:
    """Move time on until the hub's sweeper has signed a checkpoint larger than `above`."""

    async def latest() -> tuple[int, bytes]:
        try:
            _env, cp = await client.get_log_checkpoint()
        except HubError:  # none signed yet
            return 0, b""
        return cp.tree_size, bytes(cp.root_hash)

    for _ in range(100):
        net.advance(timedelta(minutes=2))
        size, root = net.run(latest())
        if size > above:
            return size, root
        net.run(asyncio.sleep(0.1))
    raise AssertionError("the hub signed no new checkpoint")


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ConsoleNetwork, Any]]:
    with console_network(tmp_path_factory.mktemp("oversight"), ["REG", "AUDIT", "CENTRE"]) as n:
        # The harness's hub seals under a keyring of its own, which tests/conftest.py puts
        # back to the session's after each test: each test of this module puts it back again.
        ring = fields.configured()
        bank, centre = n.client("BANKA"), n.client("CENTRE")
        new_case_with_stop(n, bank, centre)
        # BANKB never answers: its stop clock breaches.
        n.advance(timedelta(hours=2))
        breached(n, n.client("REG"))
        new_case_with_stop(n, bank, centre)
        yield n, ring


@pytest.fixture
def net(network: tuple[ConsoleNetwork, Any]) -> ConsoleNetwork:
    fields.configure(network[1])
    return network[0]


def breached(net: ConsoleNetwork, client: HubClient) -> None:
    for _ in range(100):
        if net.run(client.list_clocks(breached_only=True)):
            return
        net.run(asyncio.sleep(0.05))
    raise AssertionError(net.run(client.list_clocks()))


def browser(net: ConsoleNetwork, code: str, who: str = "watch") -> Browserless:
    b = Browserless(net.consoles[code])
    assert b.login(who).status_code == 303
    return b


def test_sla_figures_are_the_hubs(net: ConsoleNetwork) -> None:
    reg = net.client("REG")
    clocks = net.run(reg.list_clocks(page_size=200))
    breached = [k for k in clocks if k.breached or k.state == sla_pb2.CLOCK_STATE_MISSED]
    assert breached, "the fixture makes a breach"
    b = browser(net, "REG")
    page = b.get("/sla")
    assert page.status_code == 200, page.text
    assert f'<strong id="clock-count">{len(clocks)}</strong>' in page.text
    assert f'<strong id="breach-count">{len(breached)}</strong>' in page.text
    # Per institution and clock: BANKB's stop answers, one breached.
    row = re.search(
        r'<tr data-institution="BANKB" data-clock="stop"[^>]*>(.*?)</tr>', page.text, re.S
    )
    assert row, page.text
    cells = re.findall(r'<td class="num">([^<]*)</td>', row.group(1))
    stops = [k for k in clocks if k.responsible == "BANKB" and k.clock == "stop"]
    assert cells[0] == str(len(stops))
    assert cells[4] == str(sum(1 for k in stops if k.breached))
    # Each breach listed, with whether a person acknowledged it.
    for k in breached:
        assert f'data-clock="{k.clock_id}"' in page.text
    assert "not acknowledged" in page.text


def test_sla_report_is_the_cli_report_from_grpc(net: ConsoleNetwork) -> None:
    b = browser(net, "AUDIT")
    answer = b.get("/sla/report")
    assert answer.status_code == 200, answer.text
    html = answer.text
    assert "<h1>StopHub SLA report</h1>" in html
    assert hashlib.sha256(answer.content).hexdigest() == answer.headers["x-content-sha256"]
    # Its digest line checks as docs/sla-report.md says.
    rest = "".join(line for line in html.splitlines(True) if f'id="{DIGEST_ID}"' not in line)
    stated = re.search(rf'<p id="{DIGEST_ID}">.*<code>([0-9a-f]{{64}})</code>', html)
    assert stated and stated.group(1) == hashlib.sha256(rest.encode()).hexdigest()
    assert 'id="per-institution"' in html and "BANKB" in html
    assert "<script" not in html
    # Downloaded, it is a file; a period that is not a date is refused in words.
    got = b.get("/sla/report", params={"download": "1", "from": "2026-03-02", "to": "2026-03-02"})
    assert got.status_code == 200
    assert got.headers["content-disposition"].startswith("attachment;")
    assert b.get("/sla/report", params={"from": "yesterday"}).status_code == 400
    with net.consoles["AUDIT"].desk.db() as s:
        assert s.scalars(select(JournalEntry).where(JournalEntry.action == "sla_report")).first()


def test_oversight_pages_are_not_on_other_desks_nor_without_login(net: ConsoleNetwork) -> None:
    b = browser(net, "CENTRE")
    for path in ("/sla", "/sla/report", "/audit"):
        assert b.get(path).status_code == 404
    anonymous = Browserless(net.consoles["REG"])
    for path in ("/sla", "/sla/report", "/audit"):
        assert anonymous.get(path).status_code == 303


def kept(net: ConsoleNetwork, code: str) -> list[KeptCheckpoint]:
    with net.consoles[code].desk.db() as s:
        return list(s.scalars(select(KeptCheckpoint).order_by(KeptCheckpoint.id)))


def hub_root(net: ConsoleNetwork, client: HubClient, size: int) -> bytes:
    _env, cp = net.run(client.get_log_checkpoint(size))
    return bytes(cp.root_hash)


def test_checkpoints_are_kept_and_proved_consistent(net: ConsoleNetwork) -> None:
    # (Every read is audited too, and the sweeper signs while time moves: sizes only grow.)
    audit = net.client("AUDIT")
    size, _root = checkpoint_after(net, audit, 0)
    b = browser(net, "AUDIT")
    page = b.get("/audit")
    assert page.status_code == 200
    [first] = kept(net, "AUDIT")
    assert first.verdict == "first" and first.tree_size >= size
    assert first.root_hash == hub_root(net, audit, first.tree_size)
    assert f'<dd id="tree-size">{first.tree_size}</dd>' in page.text
    assert first.root_hash.hex() in page.text
    # The log grows; the new checkpoint is proved an extension of the kept one.
    new_case_with_stop(net, net.client("BANKA"), net.client("CENTRE"))
    checkpoint_after(net, audit, first.tree_size)
    page = b.get("/audit", params={"verify": "now"})
    assert 'data-verdict="consistent"' in page.text, page.text
    rows = kept(net, "AUDIT")
    assert [(k.verdict, k.checked_against) for k in rows] == [
        ("first", None),
        ("consistent", first.tree_size),
    ]
    assert rows[1].tree_size > first.tree_size
    assert rows[1].root_hash == hub_root(net, audit, rows[1].tree_size)
    # Seen again with time standing still: nothing new, or one more proved consistent.
    again = b.get("/audit").text
    assert 'data-verdict="unchanged"' in again or 'data-verdict="consistent"' in again
    assert {k.verdict for k in kept(net, "AUDIT")} == {"first", "consistent"}


def test_a_rolled_back_or_forked_log_is_a_red_finding(net: ConsoleNetwork) -> None:
    reg = net.client("REG")
    size, _root = checkpoint_after(net, reg, 0)
    b = browser(net, "REG")
    assert 'data-verdict="first"' in b.get("/audit").text or kept(net, "REG")
    db = net.consoles["REG"].desk.db
    # A checkpoint larger than the hub's latest was kept: the hub now shows less. ROLLBACK.
    with db() as s:
        largest = s.scalars(select(KeptCheckpoint).order_by(KeptCheckpoint.id.desc())).first()
        assert largest is not None
        s.add(
            KeptCheckpoint(
                tree_size=largest.tree_size + 1000,
                root_hash=b"\x11" * 32,
                signed_at=largest.signed_at,
                key_id=largest.key_id,
                envelope=largest.envelope,
                seen_at=largest.seen_at,
                verdict="consistent",
                checked_against=largest.tree_size,
                problem="",
            )
        )
    page = b.get("/audit", params={"verify": "now"})
    assert page.status_code == 200
    assert 'data-verdict="rollback"' in page.text and "ROLLBACK" in page.text
    with db() as s:
        s.execute(delete(KeptCheckpoint).where(KeptCheckpoint.root_hash == b"\x11" * 32))
        # The kept checkpoint's root is not the hub's: a different log of the same size. FORK.
        s.execute(
            update(KeptCheckpoint)
            .where(KeptCheckpoint.verdict.in_(("first", "consistent")))
            .values(root_hash=b"\x22" * 32)
        )
    page = b.get("/audit", params={"verify": "now"})
    assert 'data-verdict="fork"' in page.text and "FORK" in page.text
    # And once the log grew past every kept checkpoint, the consistency proof itself fails
    # against the forged root.
    with db() as s:
        biggest = max(s.scalars(select(KeptCheckpoint.tree_size)))
    new_case_with_stop(net, net.client("BANKA"), net.client("CENTRE"))
    checkpoint_after(net, reg, max(size, biggest))
    page = b.get("/audit", params={"verify": "now"})
    assert 'data-verdict="fork"' in page.text and "consistency proof fails" in page.text
    verdicts = [k.verdict for k in kept(net, "REG")]
    assert verdicts.count("rollback") == 1 and verdicts.count("fork") >= 1
    # The findings stay on the page, and the journal says who verified.
    assert 'id="earlier-findings"' in b.get("/audit").text
    with db() as s:
        journal = list(s.scalars(select(JournalEntry).where(JournalEntry.action == "audit_verify")))
    assert {j.outcome for j in journal} == {"failed"} and journal[0].person == "watch"
