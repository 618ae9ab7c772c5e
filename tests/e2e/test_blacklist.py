"""The blacklist over gRPC, as the centre and a platform meet it: publishing, a copy's sync
from nothing and from its version with a signed checkpoint it can prove itself against, a
live change on a following stream, the batch check, expiry, and the refusals."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from datetime import timedelta

import grpc
import pytest
from click.testing import CliRunner

from adapters.sdk import HubClient, HubError
from hub.cli import main
from hub.crypto.envelope import seal_message
from hub.domain.blacklist import ListDigest, clear_leaf_hash, token_leaf_hash
from hub.observability import logs
from hub.service.commands.blacklist import PUBLISH_LIST_ENTRY
from hub.service.pipeline import Hub
from stophub.v1 import account_pb2, blacklist_pb2, case_pb2, delivery_pb2
from tests.e2e.conftest import Network
from tests.e2e.wire_helpers import report

TRADER = blacklist_pb2.LIST_BASIS_ACCOUNT_TRADER
CONVICTED = blacklist_pb2.LIST_BASIS_CONVICTED


def leaf(entry: blacklist_pb2.ListEntry) -> int:
    """The leaf hash as docs/blacklist.md defines it, from the wire alone."""
    kind = "account" if entry.kind == blacklist_pb2.LIST_ENTRY_KIND_ACCOUNT else "person"
    basis = "account_trader" if entry.basis == TRADER else "convicted"
    listed, expires = entry.listed_time.ToMicroseconds(), entry.expire_time.ToMicroseconds()
    if entry.subject_token:
        return token_leaf_hash(
            entry.entry_id, kind, entry.subject_token, basis, entry.source_case_id, listed, expires
        )
    if kind == "account":
        key = f"{entry.account.institution_code}/{entry.account.account_number}"
        name = entry.account.holder_name
    else:
        key, name = entry.person.id_number, entry.person.name
    return clear_leaf_hash(
        entry.entry_id, kind, key, name, basis, entry.reason, entry.source_case_id, listed, expires
    )


def cp_now_hex(copy: Copy) -> str:
    return copy.checkpoints[-1].digest.hex()


class Copy:
    """The least a copy does: apply parts, and prove itself against each checkpoint."""

    def __init__(self) -> None:
        self.entries: dict[str, int] = {}
        self.version = 0
        self.checkpoints: list[blacklist_pb2.ListCheckpoint] = []
        self.snapshots = 0

    def apply(self, client: HubClient, part: blacklist_pb2.SyncListResponse) -> bool:
        which = part.WhichOneof("part")
        if which == "snapshot":
            self.entries.clear()
            self.snapshots += 1
        elif which == "entries":
            for e in part.entries.entries:
                self.entries[e.entry_id] = leaf(e)
        elif which == "changes":
            for c in part.changes.changes:
                if c.op == blacklist_pb2.LIST_CHANGE_OP_ADD:
                    self.entries[c.entry_id] = leaf(c.entry)
                else:
                    del self.entries[c.entry_id]
        else:
            cp = client.open_checkpoint(part.checkpoint)
            digest = ListDigest()
            for h in self.entries.values():
                digest.add_hash(h)
            assert (cp.entry_count, cp.digest) == (digest.count, digest.digest_bytes)
            self.version = cp.version
            self.checkpoints.append(cp)
            return True
        return False

    async def sync(self, client: HubClient, form: int = blacklist_pb2.LIST_FORM_CLEAR) -> None:
        async for part in client.sync_list(self.version, form):
            self.apply(client, part)


async def open_case(clients: dict[str, HubClient], network: Network) -> case_pb2.Case:
    case = await clients["BANKA"].create_report(report(network.clock.now(), (500_000,)))
    return await clients["BANKA"].verify_report(case.case_id, confirmed=True)


async def test_a_copy_syncs_proves_itself_and_follows_live_changes(
    clients: dict[str, HubClient], network: Network
) -> None:
    centre, payx = clients["CENTRE"], clients["PAYX"]
    case = await open_case(clients, network)
    mule = await centre.publish_list_entry(
        account=("BANKB", "6222020000000002", "Li Si"),
        basis=TRADER,
        reason="sold the account to the fraud ring",
        source_case_id=case.case_id,
    )
    assert mule.state == blacklist_pb2.LIST_ENTRY_STATE_LISTED and mule.added_version == 1
    listed = mule.entry.listed_time.ToDatetime()
    assert mule.entry.expire_time.ToDatetime() - listed >= timedelta(days=730)
    person = await centre.publish_list_entry(
        person=("11010519491231002X", "Ｌｉ Ｓｉ"),  # full-width: folded to one form
        basis=CONVICTED,
        reason="convicted",
        source_case_id=case.case_id,
    )
    assert person.entry.person.name == "Li Si"

    # From nothing: a snapshot, its entries and a checkpoint the copy matches.
    copy = Copy()
    await copy.sync(payx)
    assert copy.snapshots == 1 and copy.version == 2 and len(copy.entries) == 2
    assert copy.checkpoints[-1].form == blacklist_pb2.LIST_FORM_CLEAR

    # From its version: only the changes.
    await centre.remove_list_entry(person.entry.entry_id, "identity theft: not the convict")
    await copy.sync(payx)
    assert copy.snapshots == 1 and copy.version == 3 and set(copy.entries) == {mule.entry.entry_id}

    # TOKENS: no names, no numbers; the platform computes its customer's token.
    tokens = Copy()
    await tokens.sync(payx, blacklist_pb2.LIST_FORM_TOKENS)
    cp = tokens.checkpoints[-1]
    assert cp.form == blacklist_pb2.LIST_FORM_TOKENS
    assert network.list_key is not None and cp.list_key_id == network.list_key.key_id
    assert tokens.entries and tokens.version == 3

    # Live: a following copy sees a change within a second of its publication.
    follower = Copy()
    caught_up, seen = asyncio.Event(), asyncio.Event()

    async def follow() -> None:
        async for part in payx.sync_list(0, follow=True):
            if follower.apply(payx, part):
                caught_up.set()
                if follower.version >= 4:
                    seen.set()
                    return

    task = asyncio.create_task(follow())
    await asyncio.wait_for(caught_up.wait(), 5)
    started = time.monotonic()
    await centre.publish_list_entry(
        account=("PAYX", "PX88000003", "Wang Wu"),
        basis=TRADER,
        reason="rented the wallet out",
        source_case_id=case.case_id,
    )
    await asyncio.wait_for(seen.wait(), 5)
    took = time.monotonic() - started
    await task
    assert took < 1.0, f"a following copy took {took:.2f}s to see the change"
    assert len(follower.entries) == 2

    # The operator's view from the hub's database: the same version and digest, and the
    # numbers masked unless asked for.
    shown = CliRunner().invoke(main, ["list", "show", "--db", network.database_url])
    assert shown.exit_code == 0, shown.output
    assert "list version 4, 2 live entries" in shown.output
    assert f"clear digest  {cp_now_hex(follower)}" in shown.output
    assert "6222020000000002" not in shown.output and "BANKB/************0002" in shown.output
    full = ["list", "show", "--personal-data", "--db", network.database_url]
    assert "BANKB/6222020000000002" in CliRunner().invoke(main, full).output

    # The account's institution is told, to tell its holder how to appeal.
    async with clients["PAYX"].deliveries("listing") as stream:
        async for delivery in stream:
            if delivery.notice.kind == delivery_pb2.NOTICE_KIND_LISTING:
                assert delivery.notice.list_entry.entry.account.account_number == "PX88000003"
                break


async def test_check_expiry_and_refusals(clients: dict[str, HubClient], network: Network) -> None:
    centre, bank = clients["CENTRE"], clients["BANKA"]
    case = await open_case(clients, network)
    entry = await centre.publish_list_entry(
        account=("BANKB", "6222020000000002", "Li Si"),
        basis=TRADER,
        reason="sold the account",
        source_case_id=case.case_id,
    )
    assert network.list_key is not None
    token = network.list_key.token("BANKB/6222020000000002")
    result = await bank.check_list(
        [
            blacklist_pb2.ListSubject(
                account=account_pb2.AccountRef(
                    institution_code="bankb", account_number=" 6222020000000002 "
                )
            ),
            blacklist_pb2.ListSubject(id_number="110105194912310021"),
            blacklist_pb2.ListSubject(token=token),
        ]
    )
    assert [h.listed for h in result.hits] == [True, False, True]
    assert result.hits[0].entry.account.holder_name == "Li Si"
    assert result.hits[2].entry.subject_token == token and not result.hits[2].entry.reason

    with pytest.raises(HubError) as too_many:
        await bank.check_list([blacklist_pb2.ListSubject(id_number="110105194912310021")] * 1001)
    assert too_many.value.code == grpc.StatusCode.INVALID_ARGUMENT

    with pytest.raises(HubError) as twice:
        await centre.publish_list_entry(
            account=("BANKB", "6222020000000002", "Li Si"),
            basis=TRADER,
            reason="again",
            source_case_id=case.case_id,
        )
    assert twice.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert twice.value.reason == "ALREADY_LISTED"

    with pytest.raises(HubError) as not_centre:
        await bank.publish_list_entry(
            person=("110105194912310021", "Zhao Liu"),
            basis=TRADER,
            reason="x",
            source_case_id=case.case_id,
        )
    assert not_centre.value.code == grpc.StatusCode.PERMISSION_DENIED

    with pytest.raises(HubError) as no_case:
        await centre.publish_list_entry(
            person=("110105194912310021", "Zhao Liu"),
            basis=TRADER,
            reason="x",
            source_case_id="C20260101-NOPE",
        )
    assert no_case.value.code == grpc.StatusCode.NOT_FOUND

    # A version the hub never issued: OUT_OF_RANGE, and the copy is told what to do. The
    # hub's line about it names the stream's sender, as a unary call's lines do.
    written = io.StringIO()
    handler = logs.json_handler(written)
    lists_log = logging.getLogger("hub.api.lists")
    lists_log.addHandler(handler)
    level, lists_log.level = lists_log.level, logging.INFO
    try:
        with pytest.raises(HubError) as ahead:
            async for _ in clients["PAYX"].sync_list(99):
                pass
    finally:
        lists_log.removeHandler(handler)
        lists_log.setLevel(level)
    assert ahead.value.code == grpc.StatusCode.OUT_OF_RANGE
    assert ahead.value.reason == "VERSION_NOT_ISSUED"
    [line] = [json.loads(x) for x in written.getvalue().splitlines() if "refused SyncList" in x]
    assert line["institution"] == "PAYX" and line["message_id"]

    # Two years on, the sweep ends the entry as a numbered EXPIRE change.
    copy = Copy()
    await copy.sync(clients["PAYX"])
    network.clock.advance(timedelta(days=731))
    assert await asyncio.get_running_loop().run_in_executor(None, network.server.hub.sweep) >= 1
    changes: list[int] = []
    async for part in clients["PAYX"].sync_list(copy.version):
        if part.WhichOneof("part") == "changes":
            changes += [c.op for c in part.changes.changes]
        copy.apply(clients["PAYX"], part)
    assert changes == [blacklist_pb2.LIST_CHANGE_OP_EXPIRE] and not copy.entries
    result = await bank.check_list([blacklist_pb2.ListSubject(token=token)])
    assert not result.hits[0].listed
    del entry


async def test_a_change_another_hub_made_reaches_a_follower_with_its_checkpoint(
    clients: dict[str, HubClient], network: Network
) -> None:
    """A second hub on the same database publishes; this server's watcher is not told and
    looks rarely. The follower's next heartbeat must bring the change before its checkpoint
    (a checkpoint past the copy's changes would make a good copy refuse itself)."""
    lists = network.server.lists
    assert lists is not None
    lists.watcher.poll = 60.0
    lists.heartbeat = 0.2
    case = await open_case(clients, network)
    other = Hub(network.store, network.clock, network.hub_key, _Quiet(), list_key=network.list_key)
    follower = Copy()
    seen = asyncio.Event()

    async def follow() -> None:
        async for part in clients["PAYX"].sync_list(0, follow=True):
            if follower.apply(clients["PAYX"], part) and follower.version >= 1:
                seen.set()
                return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.1)
    body = blacklist_pb2.PublishListEntryBody(
        person=blacklist_pb2.ListedPerson(id_number="11010519491231002X", name="Zhao Liu"),
        basis=CONVICTED,
        reason="convicted",
        source_case_id=case.case_id,
    )
    envelope = seal_message(
        network.keys["CENTRE"],
        sender="CENTRE",
        recipient="HUB",
        message_id="CENTRE-other-hub-1",
        create_time=network.clock.now(),
        message=body,
    )
    await asyncio.to_thread(other.handle, PUBLISH_LIST_ENTRY, envelope)
    await asyncio.wait_for(seen.wait(), 5)
    await task
    assert len(follower.entries) == 1


class _Quiet:
    def notify(self, recipients: object, deliveries: object = ()) -> None:
        pass
