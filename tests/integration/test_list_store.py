"""The blacklist on a real database (SQLite and PostgreSQL): versions stay gapless when two
hubs publish at once, the state's digest is the digest of what a snapshot returns, a snapshot
pinned at a version ignores later changes, and the sweep expires entries as numbered changes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import select

from hub.crypto.listkey import ListKey
from hub.domain.blacklist import ListDigest
from hub.domain.errors import FailedPrecondition
from hub.service import lists
from hub.service.commands import appeal as ap
from hub.service.commands.blacklist import PUBLISH_LIST_ENTRY, REMOVE_LIST_ENTRY
from hub.service.commands.case import CREATE_REPORT
from hub.service.lists import ListSyncer, expire_due, prune_changes
from hub.service.pipeline import Hub
from hub.service.ports import ListState
from hub.store.tables import list_changes
from stophub.v1 import appeal_pb2, blacklist_pb2, case_pb2
from tests.e2e.test_blacklist import leaf
from tests.unit.test_handlers import MULE_B, report_body

from .test_hub_on_db import Net, net  # noqa: F401  (the fixture)

KEY = ListKey.generate()


def publish(net: Net, hub: Hub, case_id: str, i: int) -> blacklist_pb2.ListEntryRecord:  # noqa: F811
    body = blacklist_pb2.PublishListEntryBody(
        person=blacklist_pb2.ListedPerson(id_number=f"110105194912{i:06d}", name=f"P{i}"),
        basis=blacklist_pb2.LIST_BASIS_ACCOUNT_TRADER,
        reason="account seller",
        source_case_id=case_id,
    )
    answer = hub.handle(PUBLISH_LIST_ENTRY, net.envelope("CENTRE", body))
    return blacklist_pb2.ListEntryRecord.FromString(answer.body)


def snapshot_digest(hub: Hub, version: int) -> tuple[set[str], ListDigest]:
    syncer = ListSyncer(hub)
    state = syncer.state()
    pinned = ListState(version, state.count, 0, 0, state.list_key_id)
    ids, digest = set(), ListDigest()
    for part in syncer.snapshot(pinned, tokens=False):
        msg = blacklist_pb2.SyncListResponse.FromString(part.data)
        for e in msg.entries.entries if msg.HasField("entries") else ():
            ids.add(e.entry_id)
            digest.add_hash(leaf(e))
    return ids, digest


def test_two_hubs_publish_gapless_and_a_snapshot_is_pinned(net: Net) -> None:  # noqa: F811
    net.hub.list_key = KEY
    other = net.replica()
    other.list_key = KEY
    case = net.call("BANKA", CREATE_REPORT, report_body((MULE_B, 100_000)), case_pb2.Case)

    with ThreadPoolExecutor(4) as pool:
        records = list(
            pool.map(lambda i: publish(net, (net.hub, other)[i % 2], case.case_id, i), range(24))
        )
    versions = sorted(r.added_version for r in records)
    assert versions == list(range(1, 25))
    with net.store.read_engine.connect() as conn:
        stmt = select(list_changes.c.version).order_by(list_changes.c.version)
        logged = [r[0] for r in conn.execute(stmt)]
    assert logged == versions

    at_24 = ListSyncer(net.hub).state()
    ids, digest = snapshot_digest(net.hub, 24)
    assert (len(ids), digest.value) == (at_24.count, at_24.clear_digest) == (24, digest.value)

    # Later changes do not leak into a snapshot pinned at 24.
    removed = records[0].entry.entry_id
    net.send(
        REMOVE_LIST_ENTRY,
        net.envelope("CENTRE", blacklist_pb2.RemoveListEntryBody(entry_id=removed, reason="x")),
        blacklist_pb2.ListEntryRecord,
    )
    publish(net, net.hub, case.case_id, 99)
    again, digest_again = snapshot_digest(net.hub, 24)
    assert again == ids and digest_again.value == at_24.clear_digest
    now_ids, now_digest = snapshot_digest(net.hub, 26)
    state = ListSyncer(net.hub).state()
    assert removed not in now_ids and len(now_ids) == 24 == state.count
    assert now_digest.value == state.clear_digest

    # Two years on, both hubs' sweeps at once end them all, each once, as numbered changes.
    net.clock.set(net.clock.now() + timedelta(days=731))
    with ThreadPoolExecutor(2) as pool:
        assert sum(pool.map(expire_due, (net.hub, other))) == 24
    state = ListSyncer(net.hub).state()
    assert (state.version, state.count, state.clear_digest, state.token_digest) == (50, 0, 0, 0)
    ops = [p for p in ListSyncer(net.hub).changes(26, 50, tokens=True)]
    page = blacklist_pb2.SyncListResponse.FromString(ops[0].data).changes.changes
    assert {c.op for c in page} == {blacklist_pb2.LIST_CHANGE_OP_EXPIRE} and len(page) == 24


def test_two_hubs_deciding_one_appeal_decide_it_once(net: Net) -> None:  # noqa: F811
    net.hub.list_key = KEY
    other = net.replica()
    other.list_key = KEY
    case = net.call("BANKA", CREATE_REPORT, report_body((MULE_B, 100_000)), case_pb2.Case)
    listed = net.call(
        "CENTRE",
        PUBLISH_LIST_ENTRY,
        blacklist_pb2.PublishListEntryBody(
            account=MULE_B,
            basis=blacklist_pb2.LIST_BASIS_ACCOUNT_TRADER,
            reason="account seller",
            source_case_id=case.case_id,
        ),
        blacklist_pb2.ListEntryRecord,
    )
    appeal = net.call(
        "BANKB",
        ap.FILE_APPEAL,
        appeal_pb2.FileAppealBody(reference=listed.entry.entry_id, grounds="deceived"),
        appeal_pb2.Appeal,
    )
    body = appeal_pb2.DecideAppealBody(
        appeal_id=appeal.appeal_id, decision=appeal_pb2.APPEAL_DECISION_UPHOLD, reason="yes"
    )

    def decide(hub: Hub) -> str:
        try:
            hub.handle(ap.DECIDE_APPEAL, net.envelope("CENTRE", body))
        except FailedPrecondition as err:
            return err.reason
        return "decided"

    with ThreadPoolExecutor(2) as pool:
        outcomes = sorted(pool.map(decide, (net.hub, other)))
    assert outcomes == ["APPEAL_DECIDED", "decided"]
    state = ListSyncer(net.hub).state()
    assert (state.version, state.count) == (2, 0), "removed once"


def remove(net: Net, entry_id: str) -> None:  # noqa: F811
    net.send(
        REMOVE_LIST_ENTRY,
        net.envelope("CENTRE", blacklist_pb2.RemoveListEntryBody(entry_id=entry_id, reason="x")),
        blacklist_pb2.ListEntryRecord,
    )


def test_changes_no_sync_can_replay_are_pruned(
    net: Net,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A copy more than max(entries, a page) changes behind gets a snapshot, so older changes
    are dead weight: the sweep deletes them once an hour of case time, keeping a page of
    slack; every change a sync may still replay stays, and a sync that started before a
    prune and reaches the pruned part ends with LIST_HISTORY_PRUNED instead of skipping it."""
    monkeypatch.setattr(lists, "CHANGE_PAGE", 4)
    net.hub.list_key = KEY
    case = net.call("BANKA", CREATE_REPORT, report_body((MULE_B, 100_000)), case_pb2.Case)
    records = [publish(net, net.hub, case.case_id, i) for i in range(6)]  # versions 1-6
    for r in records[:5]:
        remove(net, r.entry.entry_id)  # 7-11
    for i in range(6, 9):
        publish(net, net.hub, case.case_id, i)  # 12-14
    syncer = ListSyncer(net.hub)
    state = syncer.state()
    assert (state.version, state.count) == (14, 4)
    before = list(syncer.changes(2, 14, tokens=False))  # read before the prune: whole

    net.hub.sweep()  # the first sweep prunes: below 14 - max(4, 4) - 4 + 1 = 7
    with net.store.read_engine.connect() as conn:
        kept = [r[0] for r in conn.execute(select(list_changes.c.version))]
    assert sorted(kept) == list(range(7, 15))
    assert prune_changes(net.hub) == 0

    # A copy behind the line gets a snapshot; every copy inside it gets its changes, whole.
    assert syncer.needs_snapshot(5, state)
    for version in range(state.version - max(state.count, lists.CHANGE_PAGE), state.version):
        assert not syncer.needs_snapshot(version, state), version
        pages = [
            blacklist_pb2.SyncListResponse.FromString(p.data).changes.changes
            for p in syncer.changes(version, state.version, tokens=False)
        ]
        assert [c.version for page in pages for c in page] == list(range(version + 1, 15))
    # What was read before the prune was whole; the same sync now ends, naming why.
    assert [p.version for p in before][-1] == 14
    with pytest.raises(FailedPrecondition) as refused:
        list(syncer.changes(2, 14, tokens=False))
    assert refused.value.reason == "LIST_HISTORY_PRUNED"

    # The next prune waits for an hour of case time, however many sweeps run.
    for i in range(9, 14):
        publish(net, net.hub, case.case_id, i)  # 15-19, 9 entries now
    net.hub.sweep()
    assert net.count(list_changes) == 13
    net.clock.advance(timedelta(hours=1))
    net.hub.sweep()  # below 19 - max(9, 4) - 4 + 1 = 7: nothing more yet
    assert net.count(list_changes) == 13
    for r in records[5:]:
        remove(net, r.entry.entry_id)  # 20
    for i in range(14, 24):
        publish(net, net.hub, case.case_id, i)  # 21-30, 18 entries
    net.clock.advance(timedelta(hours=1))
    net.hub.sweep()  # below 30 - 18 - 4 + 1 = 9
    with net.store.read_engine.connect() as conn:
        assert min(r[0] for r in conn.execute(select(list_changes.c.version))) == 9
