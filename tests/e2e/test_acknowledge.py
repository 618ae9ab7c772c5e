"""SlaService.AcknowledgeBreach over a real hub: a person at the responsible bank (or the
centre) acknowledges a breached clock once; the clock, the SLA log, the audit log and the
escalation inbox (ListClocks unacknowledged_only) show it; each refusal changes nothing."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from adapters.sdk import HubClient, HubError
from stophub.v1 import sla_pb2
from tests.e2e.conftest import Network
from tests.e2e.test_sla import advance_and_sweep, by_kind, new_case


async def breached_verify_clock(network: Network, clients: dict[str, HubClient]) -> str:
    """A case whose verify clock (BANKA's, 5 minutes) has breached."""
    case_id = await new_case(clients, network.clock)
    advance_and_sweep(network, timedelta(minutes=4, seconds=1))
    advance_and_sweep(network, timedelta(minutes=1))
    verify = by_kind(await clients["REG"].list_clocks(case_id=case_id))["verify"]
    assert verify.breached
    return verify.clock_id


async def refused(call: object) -> HubError:
    with pytest.raises(HubError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def test_the_responsible_bank_acknowledges_a_breach_once(
    network: Network, clients: dict[str, HubClient]
) -> None:
    clock_id = await breached_verify_clock(network, clients)
    bank, reg = clients["BANKA"], clients["REG"]
    inbox = await reg.list_clocks(unacknowledged_only=True)
    assert [c.clock_id for c in inbox] == [clock_id]

    with bank.acting("li.wei"):
        clock = await bank.acknowledge_breach(clock_id, "customer unreachable; calling again")
    assert clock.clock_id == clock_id and clock.breached
    assert clock.acknowledged_by == "BANKA"
    assert clock.acknowledged_operator == "li.wei"
    assert clock.acknowledge_note == "customer unreachable; calling again"
    assert clock.acknowledge_time.ToDatetime(tzinfo=network.clock.now().tzinfo) == (
        network.clock.now()
    )
    assert clock.events[-1].event == "acknowledged"
    assert clock.events[-1].detail == "acknowledged by BANKA"
    # The escalation inbox is empty now; the clock itself shows who acknowledged.
    assert await reg.list_clocks(unacknowledged_only=True) == []
    listed = by_kind(await reg.list_clocks(breached_only=True))["verify"]
    assert listed.acknowledged_operator == "li.wei"

    # Audited as any accepted message, naming the person.
    await reg.get_log_checkpoint(fresh=True)
    page = await reg.list_audit_entries(0, 500)
    received = [e for e in page.entries if e.detail.startswith("AcknowledgeBreach accepted")]
    assert len(received) == 1 and "by li.wei" in received[0].detail
    assert any(
        e.kind == "clock" and f"clock {clock_id} acknowledged" in e.detail for e in page.entries
    )

    # A second acknowledgement, even by the centre, changes nothing and says who and when.
    with clients["CENTRE"].acting("wang.fang"):
        again = await refused(clients["CENTRE"].acknowledge_breach(clock_id, "me too"))
    assert again.code is grpc.StatusCode.FAILED_PRECONDITION
    assert again.reason == "ALREADY_ACKNOWLEDGED"
    assert "li.wei" in again.message and "BANKA" in again.message
    assert network.clock.now().isoformat() in again.message
    after = by_kind(await reg.list_clocks(case_id=clock.case_id))["verify"]
    assert after.acknowledged_operator == "li.wei" and len(after.events) == len(clock.events)


async def test_a_resend_gets_the_original_answer(
    network: Network, clients: dict[str, HubClient]
) -> None:
    clock_id = await breached_verify_clock(network, clients)
    centre = clients["CENTRE"]
    with centre.acting("wang.fang", "zhao.lei"):
        first = await centre.acknowledge_breach(clock_id, message_id="ack-1")
        second = await centre.acknowledge_breach(clock_id, message_id="ack-1")
    assert first == second
    assert first.acknowledged_by == "CENTRE" and first.acknowledged_operator == "wang.fang"


async def test_each_refusal(network: Network, clients: dict[str, HubClient]) -> None:
    clock_id = await breached_verify_clock(network, clients)
    bank = clients["BANKA"]

    nobody = await refused(bank.acknowledge_breach(clock_id))
    assert nobody.code is grpc.StatusCode.INVALID_ARGUMENT
    assert (nobody.reason, nobody.field) == ("OPERATOR_REQUIRED", "operator")

    with clients["BANKB"].acting("chen.jing"):
        other = await refused(clients["BANKB"].acknowledge_breach(clock_id))
    assert other.code is grpc.StatusCode.PERMISSION_DENIED and other.reason == "NOT_RESPONSIBLE"

    for reader in ("REG",):
        with clients[reader].acting("auditor.one"):
            kind = await refused(clients[reader].acknowledge_breach(clock_id))
        assert kind.code is grpc.StatusCode.PERMISSION_DENIED
        assert kind.reason == "KIND_NOT_ALLOWED"

    with bank.acting("li.wei"):
        unknown = await refused(bank.acknowledge_breach("KNOSUCHCLOCK"))
    assert unknown.code is grpc.StatusCode.NOT_FOUND and unknown.reason == "CLOCK_NOT_FOUND"

    # The centre's stop_issue clock has not breached: nothing to acknowledge.
    case_id = await new_case(clients, network.clock)
    await bank.verify_report(case_id)
    stop_issue = by_kind(await clients["CENTRE"].list_clocks(case_id=case_id))["stop_issue"]
    with clients["CENTRE"].acting("wang.fang"):
        early = await refused(clients["CENTRE"].acknowledge_breach(stop_issue.clock_id))
    assert early.code is grpc.StatusCode.FAILED_PRECONDITION and early.reason == "NOT_BREACHED"

    # Nothing any refusal touched changed: the breach still waits in the inbox.
    inbox = await clients["REG"].list_clocks(unacknowledged_only=True)
    assert clock_id in [c.clock_id for c in inbox]
    assert all(not c.acknowledged_by for c in inbox)
    assert isinstance(inbox[0], sla_pb2.ClockView)


async def test_stophub_sla_shows_an_acknowledged_breach(
    network: Network, clients: dict[str, HubClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from tests.e2e.test_sla_cli import stophub

    monkeypatch.setenv("STOPHUB_TZ", "UTC")
    monkeypatch.setenv("COLUMNS", "200")
    clock_id = await breached_verify_clock(network, clients)
    before = json.loads(stophub(network, "sla", "--breaches", "--json"))
    assert [c["acknowledged"] for c in before["clocks"]] == [None]
    assert "acknowledged breach" not in stophub(network, "sla", "--breaches")

    with clients["BANKA"].acting("li.wei"):
        await clients["BANKA"].acknowledge_breach(clock_id, "called back")
    text = stophub(network, "sla", "--breaches")
    assert "1 acknowledged breach(es)" in text
    row = next(line for line in text.splitlines() if clock_id in line and "li.wei" in line)
    assert "BANKA li.wei" in row and "called back" in row
    doc = json.loads(stophub(network, "sla", "--breaches", "--json"))
    (acked,) = doc["clocks"]
    assert acked["acknowledged"]["operator"] == "li.wei"
    assert acked["acknowledged"]["by"] == "BANKA"
    assert acked["acknowledged"]["note"] == "called back"
