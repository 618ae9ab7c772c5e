"""SlaService.ListClocks on a real hub: who sees which clocks, the SLA log each carries after
the sweep fired its reminder and breach, the filters, and paging."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from adapters.sdk import HubClient, HubError
from hub.service.paging import encode_token as _encode_token
from hub.system.clock import ManualClock
from stophub.v1 import sla_pb2
from tests.conftest import T0
from tests.e2e.conftest import Network
from tests.e2e.wire_helpers import report, sign

OPEN = sla_pb2.CLOCK_STATE_OPEN
MET = sla_pb2.CLOCK_STATE_MET
MISSED = sla_pb2.CLOCK_STATE_MISSED


async def new_case(clients: dict[str, HubClient], clock: ManualClock) -> str:
    case = await clients["BANKA"].create_report(report(clock.now()))
    return case.case_id


def advance_and_sweep(network: Network, delta: timedelta) -> None:
    network.clock.advance(delta)
    network.server.hub.sweep()


def by_kind(clocks: list[sla_pb2.ClockView]) -> dict[str, sla_pb2.ClockView]:
    return {c.clock: c for c in clocks}


async def page(
    client: HubClient, body: sla_pb2.ListClocksBody
) -> tuple[list[sla_pb2.ClockView], str]:
    _, answer = await client.call("ListClocks", body)
    assert isinstance(answer, sla_pb2.ClockList)
    return list(answer.clocks), answer.next_page_token


async def test_regulator_sees_the_verify_clock_breach_with_its_sla_log(
    network: Network, clients: dict[str, HubClient]
) -> None:
    case_id = await new_case(clients, network.clock)
    reg = clients["REG"]

    clocks = await reg.list_clocks(case_id=case_id)
    assert [c.clock for c in clocks] == ["verify", "record"], "running clocks come first"
    verify, record = clocks
    assert verify.state == OPEN and verify.responsible == "BANKA" and not verify.breached
    assert verify.deadline_time.ToDatetime(tzinfo=T0.tzinfo) == T0 + timedelta(minutes=5)
    assert verify.next_step == "reminder"
    assert verify.next_step_time.ToDatetime(tzinfo=T0.tzinfo) == T0 + timedelta(minutes=4)
    assert [e.event for e in verify.events] == ["started"]
    assert record.state == MET and record.responsible == "HUB"
    assert [e.event for e in record.events] == ["started", "met"]

    advance_and_sweep(network, timedelta(minutes=4, seconds=1))  # 80%: the reminder
    advance_and_sweep(network, timedelta(minutes=1))  # 100%: the breach

    verify = by_kind(await reg.list_clocks(case_id=case_id))["verify"]
    assert verify.state == OPEN and verify.breached
    assert [e.event for e in verify.events] == ["started", "reminder", "breach"]
    reminder, breach = verify.events[1], verify.events[2]
    assert reminder.event_time.ToDatetime(tzinfo=T0.tzinfo) == T0 + timedelta(minutes=4, seconds=1)
    assert "BANKA" in reminder.detail
    assert breach.responsible == "BANKA" and "CENTRE" in breach.detail
    assert breach.late.ToTimedelta() == timedelta(0), "fired within a second: on time"
    assert verify.next_step == "regulator"
    assert verify.next_step_time.ToDatetime(tzinfo=T0.tzinfo) == T0 + timedelta(minutes=10)

    # Verifying now stops it after its deadline: missed, with how late in the log.
    await clients["BANKA"].verify_report(case_id)
    clocks = by_kind(await reg.list_clocks(case_id=case_id))
    verify = clocks["verify"]
    assert verify.state == MISSED and verify.stopped_by == "report.verified"
    assert [e.event for e in verify.events][-1] == "missed"
    assert verify.events[-1].late.ToTimedelta() == timedelta(seconds=1)
    assert clocks["stop_issue"].state == OPEN and clocks["stop_issue"].responsible == "CENTRE"
    assert clocks["stop_issue"].events[0].event == "started"


async def test_a_bank_sees_only_the_clocks_it_is_responsible_for(
    network: Network, clients: dict[str, HubClient]
) -> None:
    case_id = await new_case(clients, network.clock)
    await clients["BANKA"].verify_report(case_id)  # stop_issue starts, the centre's

    everything = await clients["CENTRE"].list_clocks()
    assert {(c.clock, c.responsible) for c in everything} == {
        ("record", "HUB"),
        ("verify", "BANKA"),
        ("stop_issue", "CENTRE"),
    }
    assert {c.clock_id for c in await clients["REG"].list_clocks()} == {
        c.clock_id for c in everything
    }

    mine = await clients["BANKA"].list_clocks()
    assert [(c.clock, c.responsible) for c in mine] == [("verify", "BANKA")]
    assert mine[0].state == MET and [e.event for e in mine[0].events] == ["started", "met"]
    assert await clients["BANKA"].list_clocks(institution="BANKA") == mine
    assert await clients["BANKB"].list_clocks() == []
    assert await clients["BANKB"].list_clocks(institution="BANKB") == []
    assert await clients["PAYX"].list_clocks(case_id=case_id) == []

    with pytest.raises(HubError) as caught:
        await clients["BANKB"].list_clocks(institution="BANKA")
    err = caught.value
    assert err.code is grpc.StatusCode.PERMISSION_DENIED and err.signed
    assert err.reason == "NOT_RESPONSIBLE"
    assert "BANKB may list only the clocks it is responsible for" in err.message
    assert "BANKA" in err.message

    # The centre and the regulator may narrow to any institution.
    centre_view = await clients["REG"].list_clocks(institution="CENTRE")
    assert [(c.clock, c.responsible) for c in centre_view] == [("stop_issue", "CENTRE")]


async def test_filters_order_and_paging(network: Network, clients: dict[str, HubClient]) -> None:
    cases = []
    for _ in range(3):  # verify deadlines at +5, +6 and +7 minutes
        cases.append(await new_case(clients, network.clock))
        network.clock.advance(timedelta(minutes=1))
    network.clock.set(T0 + timedelta(minutes=5, seconds=30))
    network.server.hub.sweep()
    reg = clients["REG"]

    running = await reg.list_clocks(open_only=True)
    assert [(c.case_id, c.clock) for c in running] == [(c, "verify") for c in cases]
    deadlines = [c.deadline_time.ToDatetime() for c in running]
    assert deadlines == sorted(deadlines)

    breached = await reg.list_clocks(breached_only=True)
    assert [(c.case_id, c.clock) for c in breached] == [(cases[0], "verify")]
    assert [e.event for e in breached[0].events] == ["started", "reminder", "breach"]
    assert [e.event for e in by_kind(running[1:2])["verify"].events] == ["started", "reminder"]
    assert [e.event for e in running[2].events] == ["started"]

    only_case = await reg.list_clocks(case_id=cases[1])
    assert {c.case_id for c in only_case} == {cases[1]} and len(only_case) == 2
    assert await reg.list_clocks(case_id=cases[1], open_only=True, breached_only=True) == []
    assert await reg.list_clocks(case_id="C-NO-SUCH-CASE") == []

    # Six clocks (three running verify clocks, then three met record clocks), two a page.
    everything = await reg.list_clocks()
    assert [c.state for c in everything] == [OPEN] * 3 + [MET] * 3
    seen: list[sla_pb2.ClockView] = []
    token = ""
    pages = 0
    while True:
        found, token = await page(reg, sla_pb2.ListClocksBody(page_size=2, page_token=token))
        assert len(found) == 2
        seen.extend(found)
        pages += 1
        if not token:
            break
    assert pages == 3
    assert [c.clock_id for c in seen] == [c.clock_id for c in everything]
    assert len(await reg.list_clocks(page_size=1)) == 6

    # A page of a filtered list keeps to the filter.
    first, token = await page(reg, sla_pb2.ListClocksBody(page_size=2, open_only=True))
    rest, last = await page(
        reg, sla_pb2.ListClocksBody(page_size=2, open_only=True, page_token=token)
    )
    assert [c.case_id for c in first + rest] == cases and last == ""


@pytest.mark.parametrize(
    "body",
    [
        sla_pb2.ListClocksBody(page_token="not-a-token"),
        sla_pb2.ListClocksBody(page_token=_encode_token("BANKA")),
        sla_pb2.ListClocksBody(page_token=_encode_token({"offset": -1})),
        sla_pb2.ListClocksBody(page_token=_encode_token({"offset": True})),
        sla_pb2.ListClocksBody(page_token=_encode_token({"offset": 10**30})),
        sla_pb2.ListClocksBody(page_size=-1),
    ],
)
async def test_bad_paging_is_invalid_argument(
    network: Network, clients: dict[str, HubClient], body: sla_pb2.ListClocksBody
) -> None:
    with pytest.raises(HubError) as caught:
        await clients["REG"].call("ListClocks", body)
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.field in ("page_token", "page_size")


async def test_list_clocks_on_the_raw_wire_is_hub_signed_and_reflected(network: Network) -> None:
    from hub.crypto.envelope import verify_envelope
    from stophub.v1 import sla_pb2_grpc

    body = sla_pb2.ListClocksBody(open_only=True)
    envelope = sign(network.keys["REG"], "REG", body, network.clock.now())
    async with network.channel("REG") as channel:
        answer = await sla_pb2_grpc.SlaServiceStub(channel).ListClocks(
            sla_pb2.ListClocksRequest(envelope=envelope)
        )
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        names = set()
        async for r in reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        ):
            names |= {s.name for s in r.list_services_response.service}
    assert "stophub.v1.SlaService" in names
    env = answer.envelope
    assert env.sender == "HUB" and env.recipient == "REG"
    assert env.body_type == "stophub.v1.ClockList"
    assert verify_envelope(env, network.hub_public_key)
    assert list(sla_pb2.ClockList.FromString(env.body).clocks) == []


async def test_a_clock_met_late_counts_as_breached(
    network: Network, clients: dict[str, HubClient]
) -> None:
    # Signed two minutes before the hub got it (say the link was down): the record clock
    # (1 minute, the hub's) starts at the signing and stops at receipt, past its deadline.
    signed_at = network.clock.now() - timedelta(minutes=2)
    envelope = sign(network.keys["BANKA"], "BANKA", report(network.clock.now()), signed_at)
    await clients["BANKA"].send("CreateReport", envelope)
    record = by_kind(await clients["REG"].list_clocks())["record"]
    assert record.state == MISSED
    assert record.events[-1].late.ToTimedelta() == timedelta(minutes=1)
    assert record.breached
    assert [c.clock for c in await clients["REG"].list_clocks(breached_only=True)] == ["record"]
