"""AppealService.ListAppeals over a real hub: newest first, by state and institution; the
centre and the regulator see every appeal, a bank its own; `stophub appeal list` draws them
through the function a remote path can call with the wire form."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import grpc
import pytest

from adapters.sdk import HubClient, HubError
from hub.cli.appeal import appeals_table
from hub.domain.wording import Disclosure
from stophub.v1 import appeal_pb2, order_pb2
from tests.e2e.conftest import Network
from tests.e2e.test_sla_cli import stophub
from tests.e2e.wire_helpers import report

DOC = ("statement.pdf", hashlib.sha256(b"statement").digest())


async def held_stop(clients: dict[str, HubClient], network: Network) -> str:
    case = await clients["BANKA"].create_report(report(network.clock.now(), (500_000,)))
    case = await clients["BANKA"].verify_report(case.case_id, confirmed=True)
    [stop] = case.orders
    await clients["BANKB"].answer_order(
        order_pb2.ExecutionResult(
            order_id=stop.order_id,
            status=order_pb2.EXECUTION_STATUS_EXECUTED,
            amount_held_fen=500_000,
        )
    )
    return stop.order_id


async def test_list_appeals(
    clients: dict[str, HubClient], network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    centre = clients["CENTRE"]
    await centre.set_auto_stop_rule(
        order_pb2.AutoStopRule(rule_id="R1", enabled=True, max_amount_fen=10_000_000)
    )
    first = await clients["BANKB"].file_appeal(await held_stop(clients, network), "salary", [DOC])
    network.clock.advance(timedelta(minutes=1))
    second = await clients["BANKB"].file_appeal(await held_stop(clients, network), "pension")
    await centre.decide_appeal(second.appeal_id, False, "traced")

    everything = await clients["REG"].list_appeals()
    assert [a.appeal_id for a in everything] == [second.appeal_id, first.appeal_id]
    assert [a.appeal_id for a in await centre.list_appeals(page_size=1)] == [
        second.appeal_id,
        first.appeal_id,
    ], "paging"
    filed = await centre.list_appeals(state=appeal_pb2.APPEAL_STATE_FILED)
    assert [a.appeal_id for a in filed] == [first.appeal_id]
    assert [a.appeal_id for a in await centre.list_appeals(institution_code="BANKB")] == [
        second.appeal_id,
        first.appeal_id,
    ]
    assert await centre.list_appeals(institution_code="BANKA") == []

    # A bank sees its own appeals only; naming another institution finds none.
    assert len(await clients["BANKB"].list_appeals()) == 2
    assert await clients["BANKA"].list_appeals() == []
    assert await clients["BANKA"].list_appeals(institution_code="BANKB") == []

    with pytest.raises(HubError) as refused:
        await centre.call("ListAppeals", appeal_pb2.ListAppealsBody(page_size=201))
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.field == "page_size"

    # The CLI's table, from the local database and from the wire form alike.
    monkeypatch.setenv("STOPHUB_TZ", "UTC")
    monkeypatch.setenv("COLUMNS", "200")
    text = stophub(network, "appeal", "list")
    assert "rejected" in text and "filed" in text and "BANKB" in text
    listed = json.loads(stophub(network, "appeal", "list", "--json"))
    assert [a["appeal_id"] for a in listed["appeals"]] == [second.appeal_id, first.appeal_id]
    table = appeals_table(everything, Disclosure(False))
    assert table.row_count == 2
