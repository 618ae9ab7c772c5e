"""A bank written in Node.js (examples/node-bank) against a real hub over mutual TLS.

The Node bank implements docs/signing.md with node:crypto (and sm-crypto-v2 for sm2-sm3),
independently of the Python code. Here it is registered like any member (its own key of each
algorithm in turn, a client certificate from the network's CA; once more in a network where
every signature, the hub's and the centre's too, is SM2), started as a subprocess, and sent
a stop by the centre through the Python SDK; the hub must record its signed answer, the
centre must be able to verify that signature with the key the hub registered, and the
delivery must end up acknowledged. A second run gives the Node bank the wrong hub key: it
must refuse the delivery and answer nothing. The Node bank's own test suite (`npm test`: the
vectors of docs/signing.md, forged hub signatures, SM2 against the openssl command line)
runs here too, so that `make test` covers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from adapters.sdk import DeliveryStream, HubClient
from hub.crypto import pki
from hub.crypto.envelope import digest_of, verify_envelope
from hub.crypto.keys import PrivateKey
from hub.crypto.public import public_key_to_pem
from hub.domain.institutions import InstitutionKind
from hub.service.admin import NewKey, Registry
from hub.store.tables import deliveries
from hub.system.clock import ManualClock
from hub.system.policy import DEFAULT_POLICY
from stophub.v1 import account_pb2, case_pb2, delivery_pb2, order_pb2
from tests.e2e.conftest import Network, contacts, start_network
from tests.e2e.test_sdk_agent import report_paying

ROOT = Path(__file__).resolve().parents[2]
BANK_DIR = ROOT / "examples" / "node-bank"
NODE = shutil.which("node")
CODE = "NODEBANK"

pytestmark = pytest.mark.skipif(
    NODE is None or not (BANK_DIR / "node_modules").is_dir(),
    reason=(
        "needs node on PATH and examples/node-bank/node_modules "
        "(`npm ci --prefix examples/node-bank`, which `make test` runs first)"
    ),
)

MULE = account_pb2.AccountRef(
    institution_code=CODE, account_number="6217000000000042", holder_name="Li Si"
)
CREDITS = (3_000_000, 2_000_000)  # fen: the victim's two transfers into the mule account
AMOUNT = sum(CREDITS)
BALANCE = 6_000_000  # the mule account holds more than the stop's amount


@pytest.fixture
def clock() -> ManualClock:
    # The Node bank signs with the wall clock, and the hub accepts an envelope only within
    # 5 minutes before and 1 minute after its own clock: run the hub's clock at real time.
    return ManualClock(datetime.now(UTC))


@dataclass
class NodeBank:
    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.lines:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event") == name:
                    found.append(event)
        return found

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


def register_node_bank(
    network: Network,
    directory: Path,
    *,
    hub_public_key: bytes,
    credited: datetime,
    algorithm: str = "ed25519",
    hub_algorithm: str = "ed25519",
) -> list[str]:
    """Register NODEBANK with a fresh signing key (Ed25519 unless told) and a client
    certificate; write its files; the command line that starts it."""
    key = PrivateKey.generate(algorithm)
    network.keys[CODE] = key
    Registry(network.store, network.clock).add_institution(
        CODE,
        "Node Bank",
        InstitutionKind.BANK,
        [NewKey(key.algorithm, key.public_key)],
        contacts(CODE),
    )
    return node_bank_command(
        directory,
        key,
        network.tls_of(CODE),
        hub_public_key=hub_public_key,
        credited=credited,
        target=network.target,
        hub_algorithm=hub_algorithm,
    )


def node_bank_command(
    directory: Path,
    key: PrivateKey,
    tls: pki.TlsConfig,
    *,
    hub_public_key: bytes,
    credited: datetime,
    target: str,
    hub_algorithm: str = "ed25519",
) -> list[str]:
    """Write NODEBANK's files (its registered `key`, its TLS pair, the hub's key, its
    accounts) into `directory`; the command line that starts it against `target`."""
    files = {
        "bank.key": key.to_pem(),
        "hub.pub": public_key_to_pem(hub_algorithm, hub_public_key),
        "ca.pem": tls.ca,
        "nodebank-tls.pem": tls.cert,
        "nodebank-tls.key": tls.key,
    }
    for name, data in files.items():
        path = directory / name
        path.write_bytes(data)
        path.chmod(0o600)
    (directory / "accounts.json").write_text(json.dumps(accounts(credited)))
    assert NODE is not None
    return [
        NODE,
        str(BANK_DIR / "src" / "bank.js"),
        "--target",
        target,
        "--institution",
        CODE,
        "--key",
        str(directory / "bank.key"),
        "--hub-key",
        str(directory / "hub.pub"),
        "--ca",
        str(directory / "ca.pem"),
        "--cert",
        str(directory / "nodebank-tls.pem"),
        "--tls-key",
        str(directory / "nodebank-tls.key"),
        "--accounts",
        str(directory / "accounts.json"),
    ]


def credit_times(credited: datetime) -> list[datetime]:
    # Microseconds on purpose: the Node bank must match them to the digit.
    base = credited.replace(microsecond=123_456)
    return [base, base + timedelta(minutes=1, microseconds=654_321)]


def accounts(credited: datetime) -> dict[str, Any]:
    return {
        "accounts": [
            {
                "account_number": MULE.account_number,
                "holder_name": MULE.holder_name,
                "balance_fen": BALANCE,
                "credits": [
                    {"time": at.isoformat(), "amount_fen": fen}
                    for at, fen in zip(credit_times(credited), CREDITS, strict=True)
                ],
            }
        ]
    }


@contextlib.asynccontextmanager
async def node_bank(command: list[str]) -> AsyncIterator[NodeBank]:
    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    bank = NodeBank(process)

    async def pump() -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            bank.lines.append(raw.decode(errors="replace").rstrip("\n"))

    reader = asyncio.create_task(pump())
    try:
        yield bank
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()
        await asyncio.wait_for(reader, 5)


async def eventually(
    network: Network, check: Callable[[], Awaitable[bool]], what: str, bank: NodeBank
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not await check():
        # Keep the hub's clock with the Node bank's (the wall clock).
        network.clock.set(max(network.clock.now(), datetime.now(UTC)))
        assert loop.time() < deadline, f"{what} not within 30 s; Node bank said:\n{bank.output}"
        await asyncio.sleep(0.1)


def fraud_report(now: datetime, credited: datetime) -> case_pb2.Report:
    return report_paying(MULE, zip(credit_times(credited), CREDITS, strict=True), now)


def stop_instruction(case_id: str, credited: datetime) -> order_pb2.OrderInstruction:
    instruction = order_pb2.OrderInstruction(case_id=case_id, note="stop the mule account")
    instruction.stop.account.CopyFrom(MULE)
    instruction.stop.amount_fen = AMOUNT
    for at, fen in zip(credit_times(credited), CREDITS, strict=True):
        fact = instruction.stop.transactions.add(amount_fen=fen)
        fact.transaction_time.FromDatetime(at)
    return instruction


async def file_case_and_stop(
    network: Network, banka: HubClient, centre: HubClient, credited: datetime
) -> tuple[str, str]:
    """BANKA reports and confirms the fraud; the centre stops the mule account at NODEBANK.
    (case id, the stop's order id)."""
    now = network.clock.now()
    case = await banka.create_report(fraud_report(now, credited))
    verified = await banka.verify_report(case.case_id)
    assert verified.state == case_pb2.CASE_STATE_VERIFIED
    order = await centre.issue_order(stop_instruction(case.case_id, credited))
    assert order.state == order_pb2.ORDER_STATE_PENDING
    assert order.addressed_to == CODE
    return case.case_id, order.order_id


def node_bank_deliveries(network: Network) -> list[tuple[int, str, bool]]:
    """(sequence, kind, acknowledged) of everything the hub queued for NODEBANK."""
    engine = sa.create_engine(network.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(deliveries.c.sequence, deliveries.c.kind, deliveries.c.acked_at)
                .where(deliveries.c.recipient == CODE)
                .order_by(deliveries.c.sequence)
            )
            return [(int(s), str(k), a is not None) for s, k, a in rows]
    finally:
        engine.dispose()


async def next_answered(stream: DeliveryStream) -> Any:
    async with asyncio.timeout(30):
        while True:
            delivery = await anext(stream)
            await stream.ack(delivery.sequence)
            if delivery.notice.kind == delivery_pb2.NOTICE_KIND_ORDER_ANSWERED:
                return delivery


@pytest.mark.parametrize("algorithm", ["ed25519", "ecdsa-p256-sha256", "sm2-sm3"])
async def test_node_bank_answers_a_stop_with_its_own_signature(
    network: Network, tmp_path: Path, algorithm: str
) -> None:
    await answer_a_stop(network, tmp_path, algorithm)


async def test_an_sm2_node_bank_in_a_network_that_requires_sm2(
    tmp_path: Path, clock: ManualClock
) -> None:
    """Every signature SM2: the hub's (checked by the Node bank on every delivery and answer),
    the centre's on the order (checked by the Node bank against the registry), the Node
    bank's answer (checked by the hub and by the Python SDK of the centre)."""
    policy = tmp_path / "policy.toml"
    policy.write_text(
        DEFAULT_POLICY.read_text(encoding="utf-8")
        + '\n[signing]\nallowed_algorithms = ["sm2-sm3"]\n',
        encoding="utf-8",
    )
    network = await start_network(
        tmp_path,
        clock,
        hub_key=PrivateKey.generate("sm2"),
        algorithm="sm2-sm3",
        policy_file=policy,
    )
    try:
        await answer_a_stop(network, tmp_path, "sm2-sm3")
    finally:
        await network.server.stop(0.5)
        network.store.dispose()


async def answer_a_stop(network: Network, tmp_path: Path, algorithm: str) -> None:
    """NODEBANK, with a key of `algorithm`, holds and answers a stop the centre issues."""
    credited = network.clock.now() - timedelta(minutes=20)
    command = register_node_bank(
        network,
        tmp_path,
        hub_public_key=network.hub_public_key,
        credited=credited,
        algorithm=algorithm,
        hub_algorithm=network.hub_key.algorithm,
    )
    async with (
        node_bank(command) as bank,
        network.client("BANKA") as banka,
        network.client("CENTRE") as centre,
        centre.deliveries("ops") as centre_stream,
    ):

        async def subscribed() -> bool:
            assert bank.process.returncode is None, f"Node bank exited:\n{bank.output}"
            return bool(bank.events("subscribed"))

        await eventually(network, subscribed, "the Node bank's subscription", bank)
        assert bank.events("subscribed")[0]["as"] == CODE

        case_id, order_id = await file_case_and_stop(network, banka, centre, credited)

        async def holding() -> bool:
            case = await centre.get_case(case_id)
            return any(
                o.order_id == order_id and o.state == order_pb2.ORDER_STATE_HOLDING
                for o in case.orders
            )

        await eventually(network, holding, "the Node bank's answer", bank)

        # The hub recorded the Node bank's answer...
        case = await centre.get_case(case_id)
        [held] = [o for o in case.orders if o.order_id == order_id]
        assert held.held_fen == AMOUNT
        assert held.result.status == order_pb2.EXECUTION_STATUS_EXECUTED
        assert held.result.amount_held_fen == AMOUNT
        assert held.result.available_balance_fen == BALANCE - AMOUNT
        answers = [(e.actor, e.message_id) for e in case.events if e.kind == "order.answered"]
        assert answers == [(CODE, f"answer-{order_id}")]

        # ...signed by the Node bank: the centre gets it forwarded unchanged and the Python
        # implementation verifies it with the key the hub registered for NODEBANK.
        notice = await next_answered(centre_stream)
        assert notice.origin_verified, notice.problems
        origin = notice.notice.origin
        assert (origin.sender, origin.message_id) == (CODE, f"answer-{order_id}")
        assert origin.body_type == "stophub.v1.ExecutionResult"
        assert origin.algorithm == algorithm
        assert verify_envelope(origin, network.keys[CODE].public_key)
        signed = order_pb2.ExecutionResult.FromString(origin.body)
        assert (signed.order_id, signed.amount_held_fen) == (order_id, AMOUNT)

        # Both implementations compute the same message digest of that envelope.
        async def logged() -> bool:
            return bool(bank.events("answered"))

        await eventually(network, logged, "the Node bank's log of its answer", bank)
        [answered] = bank.events("answered")
        assert answered["digest"] == digest_of(origin).hex()
        assert answered["order"] == order_id

        # The Node bank acknowledged the order's delivery, as the protocol requires.
        async def acknowledged() -> bool:
            rows = node_bank_deliveries(network)
            return bool(rows) and all(acked for _, _, acked in rows)

        await eventually(network, acknowledged, "the acknowledgement", bank)
        kinds = [kind for _, kind, _ in node_bank_deliveries(network)]
        assert "order" in kinds, kinds
        assert not bank.events("SECURITY"), bank.output

    assert bank.process.returncode == 0, bank.output
    assert bank.events("stopped"), bank.output


async def test_node_bank_refuses_a_hub_signature_it_cannot_verify(
    network: Network, tmp_path: Path
) -> None:
    # The Node bank is told to trust another hub key: every delivery's signature fails.
    wrong = PrivateKey.generate()
    credited = network.clock.now() - timedelta(minutes=20)
    command = register_node_bank(
        network, tmp_path, hub_public_key=wrong.public_key, credited=credited
    )
    async with (
        node_bank(command) as bank,
        network.client("BANKA") as banka,
        network.client("CENTRE") as centre,
    ):
        case_id, order_id = await file_case_and_stop(network, banka, centre, credited)

        async def exited() -> bool:
            # Its last line read too, not only its exit seen.
            return bank.process.returncode is not None and bool(bank.events("SECURITY-STOP"))

        await eventually(network, exited, "the Node bank's security stop", bank)
        assert bank.process.returncode == 3, bank.output
        [event] = bank.events("SECURITY-STOP")
        assert "not a hub key this bank trusts" in event["error"]
        assert bank.events("SECURITY")
        assert not bank.events("answered") and not bank.events("executed")

        [order] = [o for o in (await centre.get_case(case_id)).orders if o.order_id == order_id]
        assert order.state == order_pb2.ORDER_STATE_PENDING
        assert not order.HasField("result")
        # Refused and never acknowledged: the hub still holds the order for the bank.
        assert [(k, acked) for _, k, acked in node_bank_deliveries(network)] == [("order", False)]


def test_node_bank_test_suite_passes() -> None:
    """`npm test` in examples/node-bank: the vectors read from docs/signing.md, the startup
    self-test, forged and tampered hub signatures refused."""
    assert NODE is not None
    tests = sorted(str(p) for p in (BANK_DIR / "test").glob("*.test.js"))
    assert tests
    result = subprocess.run(
        [NODE, "--test", *tests],
        cwd=BANK_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for name in (
        "vector ed25519-basic from docs/signing.md",
        "vector ecdsa-p256-basic from docs/signing.md",
        "vector ed25519-negative-message-id from docs/signing.md",
        "a forged hub signature is refused",
    ):
        assert re.search(rf"^ok \d+ - {re.escape(name)}$", result.stdout, re.M), name
    assert "# fail 0" in result.stdout


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


async def test_node_bank_raises_the_fork_alarm_when_the_hub_database_is_rolled_back(
    network: Network, tmp_path: Path
) -> None:
    """The Node bank keeps the newest log checkpoint in its file; its next connection, to a
    hub whose database was replaced by an earlier copy, meets a smaller tree: it logs
    LOG-FORK-ALARM (ROLLBACK) with the evidence and exits 5 (docs/witness.md)."""
    from tests.e2e.test_log_witness import restart, snapshot

    credited = network.clock.now() - timedelta(minutes=20)
    command = register_node_bank(
        network, tmp_path, hub_public_key=network.hub_public_key, credited=credited
    )
    async with network.client("BANKA", witness=False) as banka:
        await banka.create_report(fraud_report(network.clock.now(), credited))
        _, early = await banka.get_log_checkpoint(fresh=True)
        snapshot(network, tmp_path / "early.db")
        await banka.create_report(fraud_report(network.clock.now(), credited))
        _, later = await banka.get_log_checkpoint(fresh=True)
    assert later.tree_size > early.tree_size

    async with node_bank(command) as bank:

        async def kept() -> bool:
            assert bank.process.returncode is None, f"Node bank exited:\n{bank.output}"
            return any(e["tree_size"] == later.tree_size for e in bank.events("log-checkpoint"))

        await eventually(network, kept, "the Node bank's kept checkpoint", bank)
    assert bank.process.returncode == 0, bank.output
    kept_file = tmp_path / "log-checkpoint.json"
    assert read_json(kept_file)["tree_size"] == later.tree_size

    await restart(network, database=tmp_path / "early.db")
    async with node_bank(command) as bank:

        async def alarmed() -> bool:
            return bank.process.returncode is not None and bool(bank.events("LOG-FORK-ALARM"))

        await eventually(network, alarmed, "the Node bank's fork alarm", bank)
        assert bank.process.returncode == 5, bank.output
        [started] = bank.events("started")
        assert started["kept_tree_size"] == later.tree_size
        [alarm] = bank.events("LOG-FORK-ALARM")
        assert alarm["kind"] == "ROLLBACK", alarm
        evidence = read_json(Path(alarm["evidence"]))
        assert evidence["kept"]["tree_size"] == later.tree_size
        assert evidence["seen"]["tree_size"] == early.tree_size
    # The kept checkpoint is not replaced by the smaller one.
    assert read_json(kept_file)["tree_size"] == later.tree_size
