"""Two `stophub serve` replicas on one PostgreSQL database, and members given both addresses.

A member streams its deliveries from replica A while another member's reports go through the
same two addresses, and the Node.js bank (examples/node-bank) streams from A too. A is
SIGKILLed mid-flow: the stream moves to B by itself, every report the reporter had answered
is stored once and reaches the stream once (acted on once, counted at the member); the Node
bank moves to B as well and answers a stop sent after the kill. A comes back; then B is
SIGTERMed while a burst of reports is under way: each of them is answered, both streams move
back to A at once (the drained replica ends them with UNAVAILABLE HUB_DRAINING), and no error
reaches either application (docs/failover.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from adapters.sdk.client import (
    Delivery,
    DeliveryStream,
    HubCertificateError,
    HubClient,
    HubError,
)
from hub.crypto import pki
from hub.crypto.keys import PrivateKey, save_private_key
from hub.domain.institutions import InstitutionKind
from hub.service.admin import NewKey, Registry
from hub.store.sql import SqlStore
from hub.store.tables import cases
from hub.system.clock import SystemClock
from hub.system.policy import DEFAULT_POLICY
from stophub.v1 import case_pb2, delivery_pb2, order_pb2
from tests.e2e.conftest import Network, contacts
from tests.e2e.test_node_bank import (
    BANK_DIR,
    CODE,
    NODE,
    NodeBank,
    fraud_report,
    node_bank,
    node_bank_command,
    stop_instruction,
)
from tests.e2e.test_restart import Hub, register_members
from tests.e2e.wire_helpers import report

BEFORE_KILL = 8
AFTER_KILL = 12
BURST = 16


def stored_reports(db_url: str) -> Counter[str]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(cases.c.report_message_id))
            return Counter(row.report_message_id for row in rows)
    finally:
        engine.dispose()


def two_replicas(
    directory: Path, db_url: str, hub_key: PrivateKey, args: tuple[str, ...] = ()
) -> tuple[Hub, Hub]:
    """Two replicas of one hub (one signing key, one certificate) on `db_url`, not started.
    bench/failover.py uses them too."""
    for name in "ab":
        (directory / name).mkdir()
        save_private_key(hub_key, directory / name / "hub.key")
    a, b = (Hub(directory / n, db_url, DEFAULT_POLICY, args=args) for n in "ab")
    b.pki_dir = a.pki_dir
    return a, b


def replica_client(
    hubs: tuple[Hub, ...], code: str, key: PrivateKey, hub_key: PrivateKey
) -> HubClient:
    """Member `code` given every replica's address, in order."""
    return HubClient(
        [h.target for h in hubs],
        institution=code,
        key=key,
        hub_public_key=hub_key.public_key,
        tls=hubs[0].tls(code),
        timeout=10,
    )


class Member:
    """A centre consuming its stream: every report notice acted on (counted, its first
    arrival timed) and then acknowledged. bench/failover.py uses it too."""

    def __init__(self, stream: DeliveryStream) -> None:
        self.stream = stream
        self.acts: Counter[str] = Counter()
        self.arrived: dict[str, float] = {}
        self.task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        delivery: Delivery
        async for delivery in self.stream:
            if delivery.notice.kind == delivery_pb2.NOTICE_KIND_REPORT_RECEIVED:
                case_id = delivery.notice.case_id
                self.acts[case_id] += 1
                self.arrived.setdefault(case_id, time.monotonic())
            await self.stream.ack(delivery.sequence)

    async def until_acted(self, case_ids: set[str], timeout: float, what: str) -> float:
        """Seconds until every case in `case_ids` was acted on."""
        started = time.monotonic()
        while not case_ids <= set(self.acts):
            assert not self.task.done(), f"the stream ended: {self.task}"
            missing = sorted(case_ids - set(self.acts))
            assert time.monotonic() - started < timeout, f"{what}: never delivered {missing}"
            await asyncio.sleep(0.05)
        return time.monotonic() - started


async def send_report(client: HubClient, message_id: str, *, resend: bool) -> str:
    """The case id of one report; with `resend`, the same signed bytes are sent again after a
    transient failure, as docs/errors.md says (the hub answers a resend with its first
    answer)."""
    envelope = client.seal(report(datetime.now(UTC)), message_id=message_id)
    while True:
        try:
            _, case = await client.send("CreateReport", envelope)
        except HubError as err:
            if not (resend and err.transient):
                raise
            await asyncio.sleep(0.1)
            continue
        return str(case.case_id)  # type: ignore[attr-defined]


def register_node_bank(db_url: str) -> PrivateKey:
    key = PrivateKey.generate()
    store = SqlStore(db_url)
    try:
        Registry(store, SystemClock()).add_institution(
            CODE,
            "Node Bank",
            InstitutionKind.BANK,
            [NewKey(key.algorithm, key.public_key)],
            contacts(CODE),
        )
    finally:
        store.dispose()
    return key


@contextlib.asynccontextmanager
async def maybe_node_bank(command: list[str] | None) -> AsyncIterator[NodeBank | None]:
    """The Node bank when node and its packages are here (`make test` installs them)."""
    if command is None:
        yield None
        return
    async with node_bank(command) as bank:
        yield bank


async def node_events(bank: NodeBank, name: str, count: int = 1) -> None:
    async with asyncio.timeout(30):
        while len(bank.events(name)) < count:
            assert bank.process.returncode is None, f"Node bank exited:\n{bank.output}"
            await asyncio.sleep(0.05)


async def stop_at_node_bank(banka: HubClient, centre: HubClient, credited: datetime) -> None:
    """BANKA reports a fraud paying NODEBANK's mule, the centre stops it, and the Node bank
    holds the money and answers: through whichever replicas the members are on."""
    case = await banka.create_report(fraud_report(datetime.now(UTC), credited))
    verified = await banka.verify_report(case.case_id)
    assert verified.state == case_pb2.CASE_STATE_VERIFIED
    order = await centre.issue_order(stop_instruction(case.case_id, credited))
    async with asyncio.timeout(30):
        while True:
            seen = await centre.get_case(case.case_id)
            if any(
                o.order_id == order.order_id and o.state == order_pb2.ORDER_STATE_HOLDING
                for o in seen.orders
            ):
                return
            await asyncio.sleep(0.1)


async def test_members_fail_over_between_two_replicas(tmp_path: Path, postgres_url: str) -> None:
    hub_key = PrivateKey.generate()
    keys = register_members(postgres_url)
    node_ready = NODE is not None and (BANK_DIR / "node_modules").is_dir()
    node_key = register_node_bank(postgres_url) if node_ready else None
    a, b = two_replicas(tmp_path, postgres_url, hub_key, ("--drain-seconds", "10"))
    a.start()
    b.start()
    addresses = [a.target, b.target]

    def client(code: str) -> HubClient:
        return replica_client((a, b), code, keys[code], hub_key)

    credited = datetime.now(UTC) - timedelta(minutes=20)
    command = None
    if node_key is not None:
        (tmp_path / "node").mkdir()
        command = node_bank_command(
            tmp_path / "node",
            node_key,
            a.tls(CODE),
            hub_public_key=hub_key.public_key,
            credited=credited,
            target=",".join(addresses),
        )
    centre, banka = client("CENTRE"), client("BANKA")
    stream = centre.deliveries("ops", initial_backoff=0.1, max_backoff=1.0)
    member = Member(stream)
    try:
        async with maybe_node_bank(command) as bank:
            await asyncio.wait_for(stream.connected.wait(), 15)
            if bank is not None:
                await node_events(bank, "subscribed")
            answered = {
                f"before-{i}": await send_report(banka, f"before-{i}", resend=False)
                for i in range(BEFORE_KILL)
            }
            await member.until_acted(set(answered.values()), 15, "before the kill")

            # SIGKILL A while reports keep coming: neither member is told anything.
            reporting = asyncio.ensure_future(
                asyncio.gather(
                    *(send_report(banka, f"after-{i}", resend=True) for i in range(AFTER_KILL))
                )
            )
            await asyncio.sleep(0.02)
            a.kill()
            after = await asyncio.wait_for(reporting, 60)
            answered |= {f"after-{i}": case_id for i, case_id in enumerate(after)}
            # B learns of rows queued on A only from its outbox tick: a generous bound.
            await member.until_acted(set(answered.values()), 30, "after the kill")
            assert stream.reconnects >= 1
            assert b.proc is not None and b.proc.poll() is None, b.output()
            if bank is not None:
                # The Node bank was on A too: it moved by itself and answers through B.
                await node_events(bank, "subscribed", 2)
                await stop_at_node_bank(banka, centre, credited)

            # A comes back on its address; B drains while a burst of reports is under way.
            a.start(same_address=True)
            reconnects = stream.reconnects
            burst = asyncio.ensure_future(
                asyncio.gather(
                    *(send_report(banka, f"burst-{i}", resend=False) for i in range(BURST))
                )
            )
            await asyncio.sleep(0.05)
            assert b.proc is not None
            b.proc.send_signal(signal.SIGTERM)
            during = await asyncio.wait_for(burst, 30)
            answered |= {f"burst-{i}": case_id for i, case_id in enumerate(during)}
            assert b.proc.wait(timeout=15) == 0, b.output()
            assert "draining" in b.output()
            await member.until_acted(set(answered.values()), 30, "after the drain")
            assert stream.reconnects > reconnects
            assert not member.task.done()
            if bank is not None:
                await node_events(bank, "stream-moved")
                await node_events(bank, "subscribed", 3)
                assert not bank.events("FATAL") and not bank.events("SECURITY-STOP"), bank.output
    finally:
        await stream.close()
        await centre.close()
        await banka.close()
        for hub in (a, b):
            if hub.proc is not None and hub.proc.poll() is None:
                hub.kill()

    # Acted on once each; stored once each, under the message id the reporter sent.
    assert set(member.acts) >= set(answered.values())
    assert set(member.acts.values()) == {1}, member.acts
    assert len(set(answered.values())) == len(answered)
    stored = stored_reports(postgres_url)
    assert {m: stored[m] for m in answered} == dict.fromkeys(answered, 1)


async def test_a_list_of_names_reaches_the_hub_and_a_misfit_certificate_is_named(
    network: Network,
) -> None:
    """Names in a list are resolved once and the certificate is checked against the first
    (docs/failover.md); a certificate that does not fit is still said in one line."""
    port = network.target.rsplit(":", 1)[1]
    names = [f"localhost:{port}", f"127.0.0.1:{port}"]

    def client(tls: pki.TlsConfig) -> HubClient:
        return HubClient(
            names,
            institution="BANKA",
            key=network.keys["BANKA"],
            hub_public_key=network.hub_public_key,
            clock=network.clock,
            tls=tls,
        )

    async with client(network.tls_of("BANKA")) as banka:
        await banka.connect(10)
        assert (await banka.get_institution("BANKA")).code == "BANKA"
    misfit = dataclasses.replace(network.tls_of("BANKA"), server_name="wrong.example")
    async with client(misfit) as lost:
        with pytest.raises(HubCertificateError, match=r"not for 'wrong\.example'"):
            await lost.connect(10)
