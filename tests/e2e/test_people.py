"""The people inside a signed message (envelope fields 10 and 11) over a real hub: a stop
made under `HubClient.acting` names its operator and approver in the case timeline and in the
audit log; the gate refuses an approver without an operator, an approver who is the
operator, and an unusable id; a forwarded order that names its people verifies at the bank."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from adapters.sdk import HubClient, HubError
from stophub.v1 import case_pb2
from tests.e2e.conftest import Network
from tests.e2e.test_case_rules import stop_of
from tests.e2e.wire_helpers import report


async def verified_case(clients: dict[str, HubClient], network: Network) -> str:
    case = await clients["BANKA"].create_report(report(network.clock.now()))
    await clients["BANKA"].verify_report(case.case_id)
    return case.case_id


async def test_a_stop_made_acting_names_its_people_in_timeline_and_audit(
    network: Network, clients: dict[str, HubClient]
) -> None:
    centre = clients["CENTRE"]
    case_id = await verified_case(clients, network)
    with centre.acting("li.wei", "zhang.min"):
        await asyncio.sleep(0)  # the people hold across awaits in the same task
        order = await centre.issue_order(stop_of(case_id, 1_000_000, network))
    # Outside the block nobody is named again.
    assert centre.seal(case_pb2.GetCaseBody(case_id=case_id)).operator == ""

    case = await centre.get_case(case_id)
    issued = [e for e in case.events if e.actor == "CENTRE"]
    assert issued, [(e.kind, e.actor) for e in case.events]
    assert all((e.operator, e.approver) == ("li.wei", "zhang.min") for e in issued)
    # The bank's own steps (report, verification) named nobody; the hub's never do.
    assert all(e.operator == "" for e in case.events if e.actor != "CENTRE")

    await clients["REG"].get_log_checkpoint(fresh=True)  # places every entry in the log
    page = await clients["REG"].list_audit_entries(0, 500)
    received = [e for e in page.entries if e.kind == "received" and e.actor == "CENTRE"]
    assert len(received) == 1
    assert "by li.wei (approved by zhang.min)" in received[0].detail
    from stophub.v1 import envelope_pb2

    payload = envelope_pb2.Envelope.FromString(received[0].payload)
    assert (payload.operator, payload.approver) == ("li.wei", "zhang.min")
    steps = [e for e in page.entries if e.kind == "transition" and e.actor == "CENTRE"]
    assert steps and all("by li.wei (approved by zhang.min)" in e.detail for e in steps)

    # The bank the stop is addressed to gets the centre's envelope with its people as the
    # notice's origin, and verifies it with them.
    async with clients["BANKB"].deliveries(reconnect=False) as stream:
        async for delivery in stream:
            if delivery.notice.order.order_id == order.order_id:
                break
    assert delivery.notice.origin.operator == "li.wei"
    assert delivery.origin_verified, delivery.problems


async def test_acting_is_per_task(network: Network, clients: dict[str, HubClient]) -> None:
    centre = clients["CENTRE"]
    seen: dict[str, str] = {}

    async def as_person(name: str) -> None:
        with centre.acting(name):
            await asyncio.sleep(0.01)
            seen[name] = centre.seal(case_pb2.GetCaseBody(case_id="x")).operator

    await asyncio.gather(as_person("a.one"), as_person("b.two"))
    assert seen == {"a.one": "a.one", "b.two": "b.two"}
    # seal's own keywords win over the block's.
    with centre.acting("li.wei", "zhang.min"):
        env = centre.seal(case_pb2.GetCaseBody(case_id="x"), operator="wang.fang")
    assert (env.operator, env.approver) == ("wang.fang", "")


@pytest.mark.parametrize(
    ("operator", "approver", "reason", "field"),
    [
        ("", "zhang.min", "APPROVER_WITHOUT_OPERATOR", "approver"),
        ("li.wei", "li.wei", "APPROVER_IS_OPERATOR", "approver"),
        ("x" * 65, "", "INVALID_PERSON", "operator"),
        ("li.wei", "zhang\nmin", "INVALID_PERSON", "approver"),
        ("张" * 22, "", "INVALID_PERSON", "operator"),  # 66 bytes in UTF-8
    ],
)
async def test_the_gate_refuses_unusable_people(
    network: Network,
    clients: dict[str, HubClient],
    operator: str,
    approver: str,
    reason: str,
    field: str,
) -> None:
    bank = clients["BANKA"]
    env = bank.seal(report(network.clock.now()), operator=operator, approver=approver)
    with pytest.raises(HubError) as refused:
        await bank.send("CreateReport", env)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.reason == reason
    assert refused.value.field == field
    assert await clients["REG"].list_cases() == []


async def test_at_most_64_bytes_is_fine(network: Network, clients: dict[str, HubClient]) -> None:
    bank = clients["BANKA"]
    with bank.acting("x" * 64, "张" * 21):  # 64 and 63 bytes
        case = await bank.create_report(report(network.clock.now()))
    assert case.events[0].operator == "x" * 64
    assert case.events[0].approver == "张" * 21
