"""CaseService.ListCases' filters over a real hub (docs/cases.md): by institution, account,
victim (through the blind index), creation time, in deadline order, each scoped by who asks;
Case.next_deadline in ListCases and GetCase; the refusals of bad input."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from adapters.sdk import HubClient, HubError
from stophub.v1 import account_pb2, case_pb2
from tests.e2e.conftest import Network
from tests.e2e.test_case_rules import stop_of
from tests.e2e.wire_helpers import MULE, VICTIM, report

WALLET = account_pb2.AccountRef(
    institution_code="PAYX", account_number="PAYX-0000-0042", holder_name="Wang Wu"
)


def payx_report(network: Network) -> case_pb2.Report:
    pb = report(network.clock.now(), (700_000,))
    pb.victim.name = "Wang  Wu "
    pb.victim.id_number = "11010519491231002x"
    for t in pb.transactions:
        t.payer.CopyFrom(WALLET)
    return pb


async def world(network: Network, clients: dict[str, HubClient]) -> tuple[str, str]:
    """BANKA's case (victim Zhang San, money to BANKB's mule, a stop at BANKB), then a minute
    later PAYX's case (victim Wang Wu, money to the same mule, no order)."""
    one = await clients["BANKA"].create_report(report(network.clock.now()))
    await clients["BANKA"].verify_report(one.case_id)
    await clients["CENTRE"].issue_order(stop_of(one.case_id, 1_000_000, network))
    network.clock.advance(timedelta(minutes=1))
    two = await clients["PAYX"].create_report(payx_report(network))
    return one.case_id, two.case_id


def ids(cases: list[case_pb2.Case]) -> list[str]:
    return [c.case_id for c in cases]


async def test_each_filter(network: Network, clients: dict[str, HubClient]) -> None:
    one, two = await world(network, clients)
    reg = clients["REG"]
    assert ids(await reg.list_cases()) == [two, one], "newest first, as always"

    assert ids(await reg.list_cases(institution_code="BANKB")) == [one], "holds the stop"
    assert ids(await reg.list_cases(institution_code="PAYX")) == [two], "reported it"
    assert ids(await reg.list_cases(institution_code="BANKC")) == []

    assert ids(await reg.list_cases(account=MULE)) == [two, one], "a payee of both"
    assert ids(await reg.list_cases(account=VICTIM)) == [one], "a payer"
    assert ids(await reg.list_cases(account=WALLET)) == [two]
    other = account_pb2.AccountRef(institution_code="BANKA", account_number=MULE.account_number)
    assert ids(await reg.list_cases(account=other)) == [], "a number is one institution's"

    # Exact match after normalisation: width, case, spaces, hyphens, the X check digit.
    assert ids(await reg.list_cases(victim_name="  zhang   SAN ")) == [one]
    assert ids(await reg.list_cases(victim_name="Ｚｈａｎｇ Ｓａｎ")) == [one]  # full-width
    assert ids(await reg.list_cases(victim_name="Zhang")) == [], "no partial match"
    assert ids(await reg.list_cases(victim_id_number="110101-1990 0101 1234")) == [one]
    assert ids(await reg.list_cases(victim_id_number="11010519491231002X")) == [two]
    assert ids(await reg.list_cases(victim_name="wang wu", victim_id_number="x")) == []

    start = network.clock.now()
    assert ids(await reg.list_cases(create_time_from=start)) == [two]
    assert ids(await reg.list_cases(create_time_to=start)) == [one], "half-open: to excluded"
    assert ids(
        await reg.list_cases(create_time_from=start - timedelta(hours=1), create_time_to=start)
    ) == [one]

    assert ids(await reg.list_cases(state=case_pb2.CASE_STATE_REPORTED, account=MULE)) == [two]


async def test_scoping_by_who_asks(network: Network, clients: dict[str, HubClient]) -> None:
    one, two = await world(network, clients)
    # BANKB holds an order in BANKA's case: it lists it, without the victim.
    (held,) = await clients["BANKB"].list_cases()
    assert held.case_id == one and not held.report.HasField("victim") and held.orders
    assert await clients["BANKB"].list_cases(victim_name="Zhang San") == [], "not its report"
    assert await clients["BANKB"].list_cases(account=WALLET) == [], "not its case"
    # Reporters see their own cases whole, and find their own victims.
    (own,) = await clients["BANKA"].list_cases()
    assert own.case_id == one and own.report.victim.name == "Zhang San"
    assert ids(await clients["BANKA"].list_cases(victim_id_number="110101199001011234")) == [one]
    assert ids(await clients["PAYX"].list_cases()) == [two]
    assert await clients["PAYX"].list_cases(victim_name="Zhang San") == []
    # The centre sees everything, the victims included.
    everything = await clients["CENTRE"].list_cases()
    assert ids(everything) == [two, one] and all(c.report.victim.name for c in everything)


async def test_deadline_order_and_next_deadline(
    network: Network, clients: dict[str, HubClient]
) -> None:
    one, two = await world(network, clients)
    network.clock.advance(timedelta(minutes=1))
    three = await clients["BANKA"].create_report(report(network.clock.now()))
    await clients["BANKA"].verify_report(three.case_id)
    reg = clients["REG"]
    by_deadline = await reg.list_cases(order_by=case_pb2.CASE_ORDER_DEADLINE)
    deadlines = {c.case_id: c.next_deadline for c in by_deadline}
    assert set(deadlines) == {one, two, three.case_id}
    clocks = {c.clock_id: c for c in await reg.list_clocks(open_only=True)}
    for case_id, deadline in deadlines.items():
        running = [c for c in clocks.values() if c.case_id == case_id]
        if not running:
            assert not deadline.clock_id
            continue
        nearest = min(running, key=lambda c: (c.deadline_time.ToDatetime(), c.clock_id))
        assert deadline.clock_id == nearest.clock_id
        assert deadline.clock == nearest.clock and deadline.responsible == nearest.responsible
        assert deadline.deadline_time == nearest.deadline_time
        assert deadline.start_time == nearest.start_time
        assert deadline.order_id == nearest.order_id
    times = [
        c.next_deadline.deadline_time.ToDatetime() for c in by_deadline if c.next_deadline.clock_id
    ]
    assert times == sorted(times)
    with_deadline = [c.next_deadline.clock_id != "" for c in by_deadline]
    assert with_deadline == sorted(with_deadline, reverse=True), "no running clock: last"

    # Paging in deadline order gives the same sequence, one case at a time.
    token, paged = "", []
    while True:
        page, token = await reg.list_cases_page(
            order_by=case_pb2.CASE_ORDER_DEADLINE, page_size=1, page_token=token
        )
        paged += ids(page)
        if not token:
            break
    assert paged == ids(by_deadline)

    case = await reg.get_case(one)
    assert case.next_deadline.clock_id == deadlines[one].clock_id


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (case_pb2.ListCasesBody(page_size=201), "page_size"),
        (case_pb2.ListCasesBody(page_size=-1), "page_size"),
        (
            case_pb2.ListCasesBody(account=account_pb2.AccountRef(account_number="6222")),
            "account.institution_code",
        ),
        (
            case_pb2.ListCasesBody(account=account_pb2.AccountRef(institution_code="BANKB")),
            "account.account_number",
        ),
        (case_pb2.ListCasesBody(order_by=7), "order_by"),
        (case_pb2.ListCasesBody(page_token="bm90IGEgdG9rZW4="), "page_token"),
    ],
)
async def test_bad_input(
    network: Network, clients: dict[str, HubClient], body: case_pb2.ListCasesBody, field: str
) -> None:
    with pytest.raises(HubError) as refused:
        await clients["REG"].call("ListCases", body)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.field == field


async def test_an_empty_or_inverted_time_range_is_refused(
    network: Network, clients: dict[str, HubClient]
) -> None:
    now = network.clock.now()
    for to in (now, now - timedelta(seconds=1)):
        with pytest.raises(HubError) as refused:
            await clients["REG"].list_cases(create_time_from=now, create_time_to=to)
        assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.field == "create_time_to"
