"""The blacklist on a real database (SQLite and PostgreSQL): versions stay gapless when two
hubs publish at once, the state's digest is the digest of what a snapshot returns, a snapshot
pinned at a version ignores later changes, and the sweep expires entries as numbered changes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import select

from hub.crypto.listkey import ListKey
from hub.domain.blacklist import ListDigest
from hub.domain.errors import FailedPrecondition
from hub.service import appeals as ap
from hub.service import handlers as h
from hub.service import listing as ls
from hub.store.tables import list_changes
from stophub.v1 import appeal_pb2, blacklist_pb2, case_pb2
from tests.e2e.test_blacklist import leaf
from tests.unit.test_handlers import MULE_B, report_body

from .test_hub_on_db import Net, net  # noqa: F401  (the fixture)

KEY = ListKey.generate()


def publish(net: Net, hub: h.Hub, case_id: str, i: int) -> blacklist_pb2.ListEntryRecord:  # noqa: F811
    body = blacklist_pb2.PublishListEntryBody(
        person=blacklist_pb2.ListedPerson(id_number=f"110105194912{i:06d}", name=f"P{i}"),
        basis=blacklist_pb2.LIST_BASIS_ACCOUNT_TRADER,
        reason="account seller",
        source_case_id=case_id,
    )
    answer = hub.handle(ls.PUBLISH_LIST_ENTRY, net.envelope("CENTRE", body))
    return blacklist_pb2.ListEntryRecord.FromString(answer.body)


def snapshot_digest(hub: h.Hub, version: int) -> tuple[set[str], ListDigest]:
    syncer = ls.ListSyncer(hub)
    state = syncer.state()
    pinned = ls.ListState(version, state.count, 0, 0, state.list_key_id)
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
    case = net.call("BANKA", h.CREATE_REPORT, report_body((MULE_B, 100_000)), case_pb2.Case)

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

    at_24 = ls.ListSyncer(net.hub).state()
    ids, digest = snapshot_digest(net.hub, 24)
    assert (len(ids), digest.value) == (at_24.count, at_24.clear_digest) == (24, digest.value)

    # Later changes do not leak into a snapshot pinned at 24.
    removed = records[0].entry.entry_id
    net.send(
        ls.REMOVE_LIST_ENTRY,
        net.envelope("CENTRE", blacklist_pb2.RemoveListEntryBody(entry_id=removed, reason="x")),
        blacklist_pb2.ListEntryRecord,
    )
    publish(net, net.hub, case.case_id, 99)
    again, digest_again = snapshot_digest(net.hub, 24)
    assert again == ids and digest_again.value == at_24.clear_digest
    now_ids, now_digest = snapshot_digest(net.hub, 26)
    state = ls.ListSyncer(net.hub).state()
    assert removed not in now_ids and len(now_ids) == 24 == state.count
    assert now_digest.value == state.clear_digest

    # Two years on, both hubs' sweeps at once end them all, each once, as numbered changes.
    net.clock.set(net.clock.now() + timedelta(days=731))
    with ThreadPoolExecutor(2) as pool:
        assert sum(pool.map(ls.expire_due, (net.hub, other))) == 24
    state = ls.ListSyncer(net.hub).state()
    assert (state.version, state.count, state.clear_digest, state.token_digest) == (50, 0, 0, 0)
    ops = [p for p in ls.ListSyncer(net.hub).changes(26, 50, tokens=True)]
    page = blacklist_pb2.SyncListResponse.FromString(ops[0].data).changes.changes
    assert {c.op for c in page} == {blacklist_pb2.LIST_CHANGE_OP_EXPIRE} and len(page) == 24


def test_two_hubs_deciding_one_appeal_decide_it_once(net: Net) -> None:  # noqa: F811
    net.hub.list_key = KEY
    other = net.replica()
    other.list_key = KEY
    case = net.call("BANKA", h.CREATE_REPORT, report_body((MULE_B, 100_000)), case_pb2.Case)
    listed = net.call(
        "CENTRE",
        ls.PUBLISH_LIST_ENTRY,
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

    def decide(hub: h.Hub) -> str:
        try:
            hub.handle(ap.DECIDE_APPEAL, net.envelope("CENTRE", body))
        except FailedPrecondition as err:
            return err.reason
        return "decided"

    with ThreadPoolExecutor(2) as pool:
        outcomes = sorted(pool.map(decide, (net.hub, other)))
    assert outcomes == ["APPEAL_DECIDED", "decided"]
    state = ls.ListSyncer(net.hub).state()
    assert (state.version, state.count) == (2, 0), "removed once"
