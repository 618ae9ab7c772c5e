"""Appeals over gRPC: the holder's institution contests a stop and a listing; the centre
rejects one (the reason goes back) and upholds the other (the hold is released by an order to
the bank, the entry leaves every copy); the refusals; and the appeal clock."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import grpc
import pytest
from click.testing import CliRunner

from adapters.sdk import HubClient, HubError
from hub.cli import main
from stophub.v1 import appeal_pb2, blacklist_pb2, delivery_pb2, order_pb2, sla_pb2
from tests.e2e.conftest import Network
from tests.e2e.test_blacklist import Copy
from tests.e2e.wire_helpers import report

DOC = ("bank statement.pdf", hashlib.sha256(b"statement").digest())


async def notices(client: HubClient, kind: int, count: int) -> list[delivery_pb2.Notice]:
    found = []
    async with client.deliveries("appeals") as stream:
        async for delivery in stream:
            await stream.ack(delivery.sequence)
            if delivery.notice.kind == kind:
                found.append(delivery.notice)
                if len(found) == count:
                    return found
    return found


async def test_appeals_against_a_stop_and_a_listing(
    clients: dict[str, HubClient], network: Network
) -> None:
    centre, bank_a, bank_b = clients["CENTRE"], clients["BANKA"], clients["BANKB"]
    await centre.set_auto_stop_rule(
        order_pb2.AutoStopRule(rule_id="R1", enabled=True, max_amount_fen=10_000_000)
    )
    case = await bank_a.create_report(report(network.clock.now(), (500_000,)))
    case = await bank_a.verify_report(case.case_id, confirmed=True)
    [stop] = case.orders
    await bank_b.answer_order(
        order_pb2.ExecutionResult(
            order_id=stop.order_id,
            status=order_pb2.EXECUTION_STATUS_EXECUTED,
            amount_held_fen=500_000,
        )
    )
    entry = await centre.publish_list_entry(
        account=("BANKB", "6222020000000002", "Li Si"),
        basis=blacklist_pb2.LIST_BASIS_ACCOUNT_TRADER,
        reason="account seller",
        source_case_id=case.case_id,
    )
    copy = Copy()
    await copy.sync(clients["PAYX"])
    assert entry.entry.entry_id in copy.entries

    # Refusals: a reference that does not exist, and one that is not the appellant's.
    with pytest.raises(HubError) as missing:
        await bank_b.file_appeal("C20990101-NOPE-O001", "wrong", [DOC])
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
    assert missing.value.reason == "REFERENCE_NOT_FOUND"
    with pytest.raises(HubError) as not_mine:
        await bank_a.file_appeal(stop.order_id, "not ours", [DOC])
    assert not_mine.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert not_mine.value.reason == "NOT_YOUR_ACCOUNT"
    with pytest.raises(HubError) as bad_hash:
        await bank_b.file_appeal(stop.order_id, "wrong", [("doc", b"short")])
    assert bad_hash.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_hash.value.field == "documents[0].sha256"
    with pytest.raises(HubError) as centre_files:
        await centre.file_appeal(stop.order_id, "x")
    assert centre_files.value.code == grpc.StatusCode.PERMISSION_DENIED

    # The stop: filed, a clock runs for the centre, and a rejection goes back with its reason.
    first = await bank_b.file_appeal(stop.order_id, "salary account, unrelated money", [DOC])
    assert first.state == appeal_pb2.APPEAL_STATE_FILED and first.reference_kind == "stop"
    assert first.documents[0].sha256 == DOC[1]
    with pytest.raises(HubError) as twice:
        await bank_b.file_appeal(stop.order_id, "again")
    assert twice.value.code == grpc.StatusCode.ALREADY_EXISTS
    clocks = await centre.list_clocks(case_id=case.case_id)
    [clock] = [c for c in clocks if c.clock == "appeal"]
    assert clock.order_id == first.appeal_id and clock.state == sla_pb2.CLOCK_STATE_OPEN
    [filed] = await notices(centre, delivery_pb2.NOTICE_KIND_APPEAL, 1)
    assert filed.appeal.appeal_id == first.appeal_id

    with pytest.raises(HubError) as bank_decides:
        await bank_b.decide_appeal(first.appeal_id, True, "mine")
    assert bank_decides.value.code == grpc.StatusCode.PERMISSION_DENIED
    rejected = await centre.decide_appeal(first.appeal_id, False, "the money traces to the victim")
    assert rejected.state == appeal_pb2.APPEAL_STATE_REJECTED
    [told] = await notices(bank_b, delivery_pb2.NOTICE_KIND_APPEAL, 1)
    assert told.appeal.reason == "the money traces to the victim"
    with pytest.raises(HubError) as again:
        await centre.decide_appeal(first.appeal_id, True, "changed my mind")
    assert again.value.reason == "APPEAL_DECIDED"
    with pytest.raises(HubError) as others:
        await bank_a.get_appeal(first.appeal_id)
    assert others.value.code == grpc.StatusCode.NOT_FOUND
    assert (await bank_b.get_appeal(first.appeal_id)).state == appeal_pb2.APPEAL_STATE_REJECTED

    # The listing: upheld. The stop on the account is released by an order to Bank B, and the
    # entry leaves the copy as a REMOVE change.
    network.clock.advance(timedelta(hours=1))
    second = await bank_b.file_appeal(entry.entry.entry_id, "the holder was a victim too")
    assert second.reference_kind == "listing"
    upheld = await centre.decide_appeal(second.appeal_id, True, "the holder was deceived")
    assert upheld.state == appeal_pb2.APPEAL_STATE_UPHELD
    assert list(upheld.removed_entry_ids) == [entry.entry.entry_id]
    [release_id] = upheld.release_order_ids
    case_now = await centre.get_case(case.case_id)
    release = next(o for o in case_now.orders if o.order_id == release_id)
    assert release.addressed_to == "BANKB"
    assert release.instruction.release.target_order_id == stop.order_id
    await copy.sync(clients["PAYX"])
    assert entry.entry.entry_id not in copy.entries
    clocks = await centre.list_clocks(case_id=case.case_id)
    assert all(c.state != sla_pb2.CLOCK_STATE_OPEN for c in clocks if c.clock == "appeal")

    # An operator at the hub sees both appeals and what is left of the list.
    db = ["--db", network.database_url]
    shown = CliRunner().invoke(main, ["appeal", "list", *db])
    assert shown.exit_code == 0, shown.output
    assert first.appeal_id in shown.output and "rejected" in shown.output
    assert second.appeal_id in shown.output and "upheld" in shown.output
    assert "no open" not in CliRunner().invoke(main, ["appeal", "list", "--open", *db]).output
    listed = CliRunner().invoke(main, ["list", "show", *db])
    assert listed.exit_code == 0, listed.output
    assert "list version 2, 0 live entries" in listed.output
