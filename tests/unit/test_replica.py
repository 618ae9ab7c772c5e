"""The blacklist replica (adapters/blacklist) driven by fabricated SyncList streams.

A fake hub keeps its list with the domain (hub.domain.blacklist) and signs its checkpoints
with a hub key; the fake source hands its parts to the replica and opens checkpoints with the
SDK's real verification. The replica's own hashing is checked against the domain's here too.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from adapters.blacklist import (
    CheckpointRefused,
    CopyMismatch,
    Form,
    HistoryPruned,
    ListKeyMismatch,
    Replica,
    ReplicaError,
    VersionNotIssued,
)
from adapters.blacklist.replica import Row, _clear_rows, _token_rows
from adapters.sdk.client import HubClient, HubError
from hub.crypto.envelope import seal_message
from hub.crypto.keys import PrivateKey
from hub.crypto.listkey import ListKey
from hub.domain.blacklist import (
    Basis,
    Entry,
    EntryKind,
    ListDigest,
    Subject,
    Terms,
    list_entry,
)
from hub.domain.errors import InvalidArgument
from hub.system.clock import ManualClock
from stophub.v1 import account_pb2, blacklist_pb2, delivery_pb2, envelope_pb2
from tests.support import Watch

ME = "PAYX"
HUB_KEY = PrivateKey.generate()
LIST_KEY = ListKey.generate()
KINDS = {
    EntryKind.ACCOUNT: blacklist_pb2.LIST_ENTRY_KIND_ACCOUNT,
    EntryKind.PERSON: blacklist_pb2.LIST_ENTRY_KIND_PERSON,
}
BASES = {
    Basis.ACCOUNT_TRADER: blacklist_pb2.LIST_BASIS_ACCOUNT_TRADER,
    Basis.CONVICTED: blacklist_pb2.LIST_BASIS_CONVICTED,
}
MULE = Subject.account("BANKB", "6222020000000002", "Li Si")
WALLET = Subject.account("PAYX", "W-88000001", "Ｗａｎｇ Ｗｕ")
TRADER = Subject.person("11010119900101123x", "Zhao Liu")
CONVICT = Subject.person("110101198001011234", "Sun Qi")


def pb_entry(e: Entry, form: Form, key: ListKey = LIST_KEY) -> blacklist_pb2.ListEntry:
    """The entry as the hub sends it in `form` (docs/blacklist.md)."""
    pb = blacklist_pb2.ListEntry(
        entry_id=e.entry_id,
        kind=KINDS[e.kind],
        basis=BASES[e.basis],
        source_case_id=e.source_case_id,
    )
    if form is Form.TOKENS:
        pb.subject_token = key.token(e.subject_key)
    else:
        pb.reason = e.reason
        if e.kind is EntryKind.ACCOUNT:
            institution, number = e.subject_key.split("/", 1)
            pb.account.CopyFrom(
                account_pb2.AccountRef(
                    institution_code=institution, account_number=number, holder_name=e.name
                )
            )
        else:
            pb.person.CopyFrom(blacklist_pb2.ListedPerson(id_number=e.subject_key, name=e.name))
    pb.listed_time.FromDatetime(e.listed_at)
    pb.expire_time.FromDatetime(e.expires_at)
    return pb


class FakeHub:
    """The hub's side of the list, kept with the domain: entries, numbered changes, and
    checkpoints signed with the hub's key and digested with the domain's leaf hashes."""

    def __init__(self, clock: ManualClock, key: ListKey = LIST_KEY) -> None:
        self.clock = clock
        self.key = key
        self.live: dict[str, Entry] = {}
        self.version = 0
        self.log: list[blacklist_pb2.ListChange] = []
        self.changes: list[tuple[int, str, Entry]] = []
        self._ids = 0

    def publish(self, subject: Subject, basis: Basis = Basis.ACCOUNT_TRADER) -> Entry:
        self._ids += 1
        entry = list_entry(
            f"LE{self._ids:06d}",
            subject,
            basis,
            "sold bank cards to a fraud ring",
            "C20260302-0001",
            history=[],
            now=self.clock.now(),
            listed_by="CENTRE",
            terms=Terms(),
        )
        self.version += 1
        self.live[entry.entry_id] = entry
        self.changes.append((self.version, "add", entry))
        return entry

    def end(self, entry_id: str, op: str = "remove") -> None:
        self.version += 1
        self.changes.append((self.version, op, self.live.pop(entry_id)))

    def leaf(self, e: Entry, form: Form) -> int:
        return (
            e.token_hash(self.key.token(e.subject_key)) if form is Form.TOKENS else e.clear_hash()
        )

    def digest(self, form: Form) -> ListDigest:
        d = ListDigest()
        for e in self.live.values():
            d.add_hash(self.leaf(e, form))
        return d

    def checkpoint(
        self,
        form: Form,
        *,
        version: int | None = None,
        count: int | None = None,
        digest: bytes | None = None,
        list_key_id: str | None = None,
        signer: PrivateKey = HUB_KEY,
        recipient: str = ME,
    ) -> blacklist_pb2.SyncListResponse:
        d = self.digest(form)
        cp = blacklist_pb2.ListCheckpoint(
            version=self.version if version is None else version,
            entry_count=d.count if count is None else count,
            digest=d.digest_bytes if digest is None else digest,
            form=form.wire,
            list_key_id=(self.key.key_id if form is Form.TOKENS else "")
            if list_key_id is None
            else list_key_id,
        )
        cp.checkpoint_time.FromDatetime(self.clock.now())
        env = seal_message(
            signer,
            sender="HUB",
            recipient=recipient,
            message_id=f"hub-cp-{cp.version}",
            create_time=self.clock.now(),
            message=cp,
        )
        return blacklist_pb2.SyncListResponse(checkpoint=env)

    def snapshot(self, form: Form, page: int = 2) -> list[blacklist_pb2.SyncListResponse]:
        entries = [pb_entry(e, form, self.key) for e in self.live.values()]
        parts = [
            blacklist_pb2.SyncListResponse(
                snapshot=blacklist_pb2.ListSnapshot(version=self.version, entry_count=len(entries))
            )
        ]
        for i in range(0, len(entries), page):
            parts.append(
                blacklist_pb2.SyncListResponse(
                    entries=blacklist_pb2.ListEntryPage(entries=entries[i : i + page])
                )
            )
        return [*parts, self.checkpoint(form)]

    def change_page(self, since: int, form: Form) -> blacklist_pb2.SyncListResponse:
        ops = {
            "add": blacklist_pb2.LIST_CHANGE_OP_ADD,
            "remove": blacklist_pb2.LIST_CHANGE_OP_REMOVE,
            "expire": blacklist_pb2.LIST_CHANGE_OP_EXPIRE,
        }
        page = blacklist_pb2.ListChangePage()
        for version, op, e in self.changes:
            if version > since:
                change = page.changes.add(version=version, op=ops[op], entry_id=e.entry_id)
                if op == "add":
                    change.entry.CopyFrom(pb_entry(e, form, self.key))
        return blacklist_pb2.SyncListResponse(changes=page)

    def answer(self, since: int, form: Form) -> list[blacklist_pb2.SyncListResponse]:
        """What the hub sends a copy at `since`: a snapshot from 0, else the changes."""
        if since == 0:
            return self.snapshot(form)
        return [self.change_page(since, form), self.checkpoint(form)]


Script = Sequence[
    blacklist_pb2.SyncListResponse | BaseException | asyncio.Event | Callable[[], object]
]


@dataclass
class Call:
    from_version: int
    form: int
    follow: bool


class FakeSource:
    """A ListSource: each sync_list plays the next queued script, or the hub's natural
    answer. In a script an Exception is raised, an Event waited for, and a callable called
    (once the replica has applied the parts before it)."""

    def __init__(self, hub: FakeHub, client: HubClient) -> None:
        self.hub = hub
        self.client = client
        self.calls: list[Call] = []
        self.scripts: deque[Script] = deque()

    async def sync_list(
        self,
        from_version: int,
        form: blacklist_pb2.ListForm.ValueType = blacklist_pb2.LIST_FORM_CLEAR,
        follow: bool = False,
    ) -> AsyncIterator[blacklist_pb2.SyncListResponse]:
        self.calls.append(Call(from_version, form, follow))
        script: Script
        if self.scripts:
            script = self.scripts.popleft()
        else:
            f = Form.TOKENS if form == blacklist_pb2.LIST_FORM_TOKENS else Form.CLEAR
            script = list(self.hub.answer(from_version, f))
        for item in script:
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, asyncio.Event):
                await item.wait()
                continue
            if callable(item):
                item()
                continue
            # As off the wire: the replica never shares objects with the hub.
            yield blacklist_pb2.SyncListResponse.FromString(item.SerializeToString())

    def open_checkpoint(self, envelope: envelope_pb2.Envelope) -> blacklist_pb2.ListCheckpoint:
        return self.client.open_checkpoint(envelope)


@pytest.fixture
async def client() -> AsyncIterator[HubClient]:
    c = HubClient(
        "127.0.0.1:1", institution=ME, key=PrivateKey.generate(), hub_public_key=HUB_KEY.public_key
    )
    yield c
    await c.close()


@pytest.fixture
def hub(clock: ManualClock) -> FakeHub:
    return FakeHub(clock)


@pytest.fixture
def source(hub: FakeHub, client: HubClient) -> FakeSource:
    return FakeSource(hub, client)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "list.db"


@pytest.fixture
def replica(path: Path, source: FakeSource, clock: ManualClock) -> Iterator[Replica]:
    r = Replica(path, source, Form.CLEAR, clock=clock)
    yield r
    r.close()


def listed_ids(r: Replica) -> list[str]:
    return [e.entry_id for e in r.entries()]


def files_of(directory: Path, name: str) -> bytes:
    """The database file and its WAL, as bytes."""
    return b"".join(f.read_bytes() for f in sorted(directory.glob(f"{name}*")))


# ---- the leaf hashes ----------------------------------------------------------------------------


def test_page_hashing_gives_the_domains_leaves_even_for_long_fields(clock: ManualClock) -> None:
    hub = FakeHub(clock)
    for subject in (MULE, WALLET, TRADER):
        hub.publish(subject)
    long_reason = hub.publish(CONVICT, Basis.CONVICTED)
    long_reason.reason = "没收" * 3000  # 18,000 bytes: past the prefix table
    clear = [pb_entry(e, Form.CLEAR) for e in hub.live.values()]
    rows: list[Row] = []
    assert _clear_rows(clear, rows) == sum(e.clear_hash() for e in hub.live.values())
    assert rows[1][2] == "PAYX/W-88000001" and rows[1][4] == "Wang Wu"
    tokens = [pb_entry(e, Form.TOKENS) for e in hub.live.values()]
    assert _token_rows(tokens, []) == sum(hub.leaf(e, Form.TOKENS) for e in hub.live.values())


# ---- syncing ------------------------------------------------------------------------------------


async def test_a_snapshot_then_changes_make_the_hubs_copy(
    replica: Replica, hub: FakeHub, source: FakeSource, clock: ManualClock
) -> None:
    mule, wallet, trader = hub.publish(MULE), hub.publish(WALLET), hub.publish(TRADER)
    convict = hub.publish(CONVICT, Basis.CONVICTED)
    assert replica.version == 0 and replica.is_listed_account("BANKB", "6222020000000002") is None

    status = await replica.sync_once()
    assert source.calls[-1] == Call(0, blacklist_pb2.LIST_FORM_CLEAR, False)
    assert (status.version, status.entry_count) == (4, 4)
    assert status.digest == hub.digest(Form.CLEAR).digest_bytes
    assert status.lag.versions == 0 and status.lag.seconds == 0.0 and not status.resync
    found = replica.is_listed_account(" bankb ", " 6222020000000002 ")
    assert found is not None and found.entry_id == mule.entry_id
    assert (found.kind, found.name, found.basis) == (
        EntryKind.ACCOUNT,
        "Li Si",
        Basis.ACCOUNT_TRADER,
    )
    assert found.expires_at == mule.expires_at and found.token is None
    person = replica.is_listed_person("11010119900101123x")
    assert person is not None and person.entry_id == trader.entry_id
    assert replica.is_listed_account("BANKB", "6222020000000003") is None
    with pytest.raises(InvalidArgument):
        replica.is_listed_person("1101011990")
    with pytest.raises(InvalidArgument, match="account_number"):
        replica.is_listed_account("BANKB", "6222 0200")
    with pytest.raises(InvalidArgument, match="institution_code"):
        replica.is_listed_account("BANK B", "6222020000000002")

    clock.advance(timedelta(minutes=5))
    hub.end(wallet.entry_id, "remove")
    added = hub.publish(Subject.account("BANKA", "6222010000000009", "Qian Ba"))
    hub.end(convict.entry_id, "expire")
    status = await replica.sync_once()
    assert source.calls[-1].from_version == 4, "changes from the copy's version, not a snapshot"
    assert (status.version, status.entry_count) == (7, 3)
    assert status.digest == hub.digest(Form.CLEAR).digest_bytes
    assert listed_ids(replica) == sorted([mule.entry_id, trader.entry_id, added.entry_id])
    assert replica.is_listed_account("PAYX", "W-88000001") is None
    assert replica.is_listed_person("110101198001011234") is None
    assert replica.synced_at == clock.now()
    assert replica.verify_local().ok


async def test_a_copy_resumes_from_its_version_after_a_restart(
    path: Path, hub: FakeHub, source: FakeSource, clock: ManualClock
) -> None:
    first = hub.publish(MULE)
    hub.publish(TRADER)
    with Replica(path, source, Form.CLEAR, clock=clock) as r:
        await r.sync_once()
        digest = r.digest
    hub.publish(WALLET)
    hub.end(first.entry_id)

    with Replica(path, source, "clear", clock=clock) as again:
        assert (again.version, again.entry_count, again.digest) == (2, 2, digest)
        assert again.is_listed_account("BANKB", "6222020000000002") is not None, "no sync needed"
        clock.advance(timedelta(seconds=90))
        assert again.lag.seconds == 90.0
        await again.sync_once()
        assert source.calls[-1].from_version == 2
        assert (again.version, again.entry_count) == (4, 2)
        assert again.is_listed_account("BANKB", "6222020000000002") is None
        assert again.is_listed_account("PAYX", "W-88000001") is not None


async def test_a_wrong_digest_is_refused_the_good_copy_kept_and_the_next_sync_is_from_zero(
    path: Path, replica: Replica, hub: FakeHub, source: FakeSource, clock: ManualClock
) -> None:
    mule = hub.publish(MULE)
    await replica.sync_once()
    good = (replica.version, replica.entry_count, replica.digest)

    added = hub.publish(WALLET)
    page = hub.change_page(1, Form.CLEAR)
    # Altered on the way: the holder's name is not the one the hub listed.
    page.changes.changes[0].entry.account.holder_name = "Somebody Else"
    source.scripts.append([page, hub.checkpoint(Form.CLEAR)])
    with pytest.raises(CopyMismatch) as refused:
        await replica.sync_once()
    err = refused.value
    assert err.version == 2 and err.expected_count == err.got_count == 2
    assert err.expected_digest == hub.digest(Form.CLEAR).digest_bytes != err.got_digest
    assert "version 2" in str(err) and err.expected_digest.hex() in str(err)
    assert (replica.version, replica.entry_count, replica.digest) == good
    assert replica.is_listed_account("PAYX", "W-88000001") is None, "rolled back"
    assert replica.is_listed_account("BANKB", "6222020000000002") is not None
    assert replica.status().resync

    # The refusal is remembered across a restart: the next sync is a full snapshot.
    replica.close()
    with Replica(path, source, Form.CLEAR, clock=clock) as again:
        assert again.status().resync and again.version == 1
        await again.sync_once()
        assert source.calls[-1].from_version == 0
        assert (again.version, again.entry_count) == (2, 2) and not again.status().resync
        assert {e.entry_id for e in again.entries()} == {mule.entry_id, added.entry_id}
        assert again.verify_local().ok


async def test_a_bad_snapshot_is_refused_and_the_copy_in_use_is_untouched(
    replica: Replica, hub: FakeHub, source: FakeSource
) -> None:
    mule = hub.publish(MULE)
    await replica.sync_once()
    hub.publish(TRADER)
    hub.publish(WALLET)
    parts = hub.snapshot(Form.CLEAR, page=1)
    del parts[2]  # one entry page lost: a copy of two entries, a checkpoint of three
    source.scripts.append(parts)
    replica.resync()  # as after an earlier refusal: a snapshot from 0
    with pytest.raises(CopyMismatch, match="the hub counts 3 entries, the copy 2"):
        await replica.sync_once()
    assert listed_ids(replica) == [mule.entry_id] and replica.version == 1
    assert replica.is_listed_account("BANKB", "6222020000000002") is not None
    assert replica.verify_local().ok, "the staging table never replaced the copy"


async def test_a_change_the_copy_cannot_apply_is_a_mismatch(
    replica: Replica, hub: FakeHub, source: FakeSource
) -> None:
    hub.publish(MULE)
    await replica.sync_once()
    hub.version += 1
    page = blacklist_pb2.ListChangePage()
    page.changes.add(version=2, op=blacklist_pb2.LIST_CHANGE_OP_REMOVE, entry_id="LE999999")
    source.scripts.append(
        [blacklist_pb2.SyncListResponse(changes=page), hub.checkpoint(Form.CLEAR)]
    )
    with pytest.raises(CopyMismatch, match="LE999999"):
        await replica.sync_once()
    assert replica.version == 1 and replica.status().resync


async def test_an_entry_added_twice_is_a_mismatch(
    replica: Replica, hub: FakeHub, source: FakeSource
) -> None:
    hub.publish(MULE)
    await replica.sync_once()
    again = hub.change_page(0, Form.CLEAR)  # the ADD of LE000001 the copy applied already
    again.changes.changes[0].version = 2
    hub.version = 2
    source.scripts.append([again, hub.checkpoint(Form.CLEAR)])
    with pytest.raises(CopyMismatch, match=r"LE000001.*holds already"):
        await replica.sync_once()
    assert replica.version == 1 and listed_ids(replica) == ["LE000001"]


async def test_a_page_with_a_subject_not_in_normal_form_is_refused(
    replica: Replica, hub: FakeHub, source: FakeSource
) -> None:
    """The hub sends subjects in normal form and the digest is of that form: a copy keys
    and hashes exactly what it received, so an altered subject cannot pass."""
    hub.publish(MULE)
    parts = hub.snapshot(Form.CLEAR)
    account = parts[1].entries.entries[0].account
    account.institution_code, account.account_number = " bankb", "6222020000000002 "
    source.scripts.append(parts)
    with pytest.raises(CopyMismatch):
        await replica.sync_once()
    assert replica.version == 0 and replica.is_listed_account("BANKB", "6222020000000002") is None


async def test_a_checkpoint_that_does_not_verify_is_refused(
    replica: Replica, hub: FakeHub, source: FakeSource
) -> None:
    hub.publish(MULE)
    await replica.sync_once()
    hub.publish(TRADER)
    forged = hub.checkpoint(Form.CLEAR)
    body = blacklist_pb2.ListCheckpoint.FromString(forged.checkpoint.body)
    body.entry_count = 7  # changed after the hub signed it
    forged.checkpoint.body = body.SerializeToString()
    stranger = hub.checkpoint(Form.CLEAR, signer=PrivateKey.generate())
    elsewhere = hub.checkpoint(Form.CLEAR, recipient="BANKA")
    for bad, why in ((forged, "does not verify"), (stranger, "trusts are"), (elsewhere, "BANKA")):
        source.scripts.append([hub.change_page(1, Form.CLEAR), bad])
        with pytest.raises(CheckpointRefused, match=why) as refused:
            await replica.sync_once()
        assert not isinstance(refused.value, CopyMismatch)
        assert replica.version == 1 and listed_ids(replica) == ["LE000001"]
    await replica.sync_once()
    assert source.calls[-1].from_version == 1, "the copy itself was right: no snapshot"
    assert replica.version == 2


async def test_a_checkpoint_older_than_the_copy_is_refused(
    replica: Replica, hub: FakeHub, source: FakeSource
) -> None:
    hub.publish(MULE)
    old = hub.checkpoint(Form.CLEAR)
    hub.publish(TRADER)
    await replica.sync_once()
    source.scripts.append([old])
    with pytest.raises(CheckpointRefused, match="older than the copy's version 2"):
        await replica.sync_once()
    assert replica.version == 2


async def test_a_tokens_copy_matches_by_the_computed_token(
    tmp_path: Path, hub: FakeHub, source: FakeSource, clock: ManualClock
) -> None:
    mule, trader = hub.publish(MULE), hub.publish(TRADER)
    with Replica(tmp_path / "t.db", source, Form.TOKENS, list_key=LIST_KEY, clock=clock) as r:
        status = await r.sync_once()
        assert source.calls[-1].form == blacklist_pb2.LIST_FORM_TOKENS
        assert status.digest == hub.digest(Form.TOKENS).digest_bytes
        assert status.digest != hub.digest(Form.CLEAR).digest_bytes
        found = r.is_listed_account("bankb", "6222020000000002")
        assert found is not None and found.entry_id == mule.entry_id
        assert found.token == LIST_KEY.token("BANKB/6222020000000002")
        assert (found.subject_key, found.name, found.reason) == ("", "", "")
        person = r.is_listed_person("11010119900101123X")
        assert person is not None and person.entry_id == trader.entry_id
        assert r.is_listed_account("BANKB", "6222020000000003") is None
        assert r.verify_local().ok
        # No account number, ID number or name is anywhere in the files.
        raw = files_of(tmp_path, "t.db")
        for secret in (b"6222020000000002", b"11010119900101123X", b"Li Si", b"Zhao Liu"):
            assert secret not in raw

        hub.publish(WALLET)
        source.scripts.append(
            [hub.change_page(2, Form.TOKENS), hub.checkpoint(Form.TOKENS, list_key_id="lk-other")]
        )
        with pytest.raises(ListKeyMismatch, match="lk-other"):
            await r.sync_once()
        assert r.version == 2
    with pytest.raises(ReplicaError, match="TOKENS form"):
        Replica(tmp_path / "t.db", source, Form.CLEAR, clock=clock)
    with pytest.raises(ListKeyMismatch):
        Replica(tmp_path / "t.db", source, Form.TOKENS, list_key=ListKey.generate(), clock=clock)
    with pytest.raises(ValueError, match="list key"):
        Replica(tmp_path / "u.db", source, Form.TOKENS, clock=clock)


async def test_an_entry_past_its_term_is_not_listed_before_the_hub_expires_it(
    replica: Replica, hub: FakeHub, clock: ManualClock
) -> None:
    mule = hub.publish(MULE)
    await replica.sync_once()
    clock.set(mule.expires_at - timedelta(microseconds=1))
    assert replica.is_listed_account("BANKB", "6222020000000002") is not None
    clock.set(mule.expires_at)
    assert replica.is_listed_account("BANKB", "6222020000000002") is None
    assert listed_ids(replica) == [mule.entry_id], "still in the copy until EXPIRE arrives"
    # A new listing of the same account after the term: the live one is found.
    again = hub.publish(MULE)
    await replica.sync_once()
    found = replica.is_listed_account("BANKB", "6222020000000002")
    assert found is not None and found.entry_id == again.entry_id
    hub.end(mule.entry_id, "expire")
    await replica.sync_once()
    assert listed_ids(replica) == [again.entry_id]


async def test_verify_local_catches_a_row_altered_in_the_file(
    path: Path, replica: Replica, hub: FakeHub, source: FakeSource
) -> None:
    hub.publish(MULE)
    hub.publish(TRADER)
    await replica.sync_once()
    check = replica.verify_local()
    assert check.ok and check.got_count == 2 and check.got_digest == replica.digest

    with closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE entries SET expires_us = expires_us + 1 WHERE kind = 'person'")
    check = replica.verify_local()
    assert not check.ok and check.got_count == 2 and check.got_digest != check.expected_digest
    assert "digest" in check.why and replica.status().resync
    await replica.sync_once()
    assert source.calls[-1].from_version == 0
    assert replica.verify_local().ok

    with closing(sqlite3.connect(path)) as db, db:
        db.execute("DELETE FROM entries WHERE kind = 'account'")
    check = replica.verify_local()
    assert not check.ok and (check.expected_count, check.got_count) == (2, 1)

    with closing(sqlite3.connect(path)) as db, db:  # the state row doctored to match the damage
        db.execute("UPDATE state SET entry_count = 1")
    assert "differs from its stored checkpoint" in replica.verify_local().why


async def test_a_version_the_hub_never_issued_keeps_the_copy_and_resyncs_from_zero(
    replica: Replica, hub: FakeHub, source: FakeSource
) -> None:
    hub.publish(MULE)
    hub.publish(TRADER)
    await replica.sync_once()
    # The hub was restored from a backup taken at version 1.
    hub.live.pop("LE000002")
    hub.version = 1
    source.scripts.append(
        [
            HubError(
                grpc.StatusCode.OUT_OF_RANGE,
                "version 2 was never issued; the list is at version 1",
                reason="VERSION_NOT_ISSUED",
            )
        ]
    )
    watch = Watch(replica)
    with pytest.raises(VersionNotIssued, match="never issued version 2") as refused:
        await replica.sync_once()
    assert refused.value.local_version == 2
    assert replica.version == 2 and replica.entry_count == 2, "the copy is kept"
    assert watch.kinds == ["refused"] and watch.events[0].status.resync
    await replica.sync_once()
    assert source.calls[-1].from_version == 0
    assert replica.version == 1 and listed_ids(replica) == ["LE000001"]
    assert replica.verify_local().ok


async def test_run_follows_and_resumes_from_its_version_after_the_stream_is_lost(
    replica: Replica, hub: FakeHub, source: FakeSource
) -> None:
    hub.publish(MULE)
    more = asyncio.Event()
    first = hub.snapshot(Form.CLEAR)
    hub.publish(TRADER)
    later: Script = [more, hub.change_page(1, Form.CLEAR), hub.checkpoint(Form.CLEAR)]
    source.scripts.append([*first, *later, HubError(grpc.StatusCode.UNAVAILABLE, "hub restarts")])
    hub.publish(WALLET)
    forever = asyncio.Event()
    source.scripts.append([hub.change_page(2, Form.CLEAR), hub.checkpoint(Form.CLEAR), forever])
    watch = Watch(replica)
    task = asyncio.create_task(replica.run(initial_backoff=0.01, max_backoff=0.02))
    try:
        await watch.until(lambda: replica.version >= 1)
        assert replica.entry_count == 1 and source.calls[0].follow
        more.set()
        await watch.until(lambda: replica.version >= 3)
        assert [c.from_version for c in source.calls] == [0, 2]
        assert watch.kinds == ["checkpoint", "checkpoint", "lost", "checkpoint"]
        lost = watch.events[2]
        assert isinstance(lost.error, HubError) and lost.retry_in is not None
        assert lost.status.version == 2
        assert replica.entry_count == 3 and replica.lag.versions == 0
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_copy_found_altered_while_following_is_replaced_by_a_snapshot(
    path: Path, replica: Replica, hub: FakeHub, source: FakeSource
) -> None:
    hub.publish(MULE)
    hub.publish(TRADER)
    altered, forever = asyncio.Event(), asyncio.Event()
    heartbeat = hub.checkpoint(Form.CLEAR)
    source.scripts.append([*hub.snapshot(Form.CLEAR), altered, heartbeat, forever])
    source.scripts.append([*hub.snapshot(Form.CLEAR), forever])
    watch = Watch(replica)
    task = asyncio.create_task(replica.run(initial_backoff=0.01, max_backoff=0.02))
    try:
        await watch.until(lambda: replica.commits == 1)
        with closing(sqlite3.connect(path)) as db, db:
            db.execute("UPDATE entries SET name = 'Somebody Else' WHERE kind = 'account'")
        assert not replica.verify_local().ok
        altered.set()  # the heartbeat checkpoint: the session ends, a snapshot follows at once
        await watch.until(lambda: replica.commits == 3)
        assert [c.from_version for c in source.calls] == [0, 0]
        assert watch.kinds == ["checkpoint", "checkpoint", "checkpoint"]
        assert replica.verify_local().ok and not replica.status().resync
        found = replica.is_listed_account("BANKB", "6222020000000002")
        assert found is not None and found.name == "Li Si"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_changes_pruned_while_syncing_keep_the_copy_and_the_next_sync_takes_a_snapshot(
    replica: Replica, hub: FakeHub, source: FakeSource
) -> None:
    """A signed FAILED_PRECONDITION LIST_HISTORY_PRUNED ends the sync, as a real hub sends it
    when it deleted changes the sync was replaying: the copy stays at its version, `run`
    tries again (it is no refusal of the copy), and the hub's snapshot replaces the copy."""
    hub.publish(MULE)
    await replica.sync_once()
    hub.publish(TRADER)
    hub.publish(WALLET)
    pruned = HubError(
        grpc.StatusCode.FAILED_PRECONDITION,
        "list change 2 is no longer kept",
        reason="LIST_HISTORY_PRUNED",
        # Signed, as the hub refuses: a signed refusal is not transient by itself.
        rejection=delivery_pb2.Rejection(code="FAILED_PRECONDITION", reason="LIST_HISTORY_PRUNED"),
    )
    assert not pruned.transient
    source.scripts.append([pruned])
    with pytest.raises(HistoryPruned, match="after version 1") as ended:
        await replica.sync_once()
    assert ended.value.local_version == 1
    assert replica.version == 1 and replica.entry_count == 1, "the copy is kept"
    assert not replica.status().resync, "the copy is right: no resync from 0 is needed"

    forever = asyncio.Event()
    source.scripts.append([pruned])
    source.scripts.append([*hub.snapshot(Form.CLEAR), forever])
    watch = Watch(replica)
    task = asyncio.create_task(replica.run(initial_backoff=0.01, max_backoff=0.02))
    try:
        await watch.until(lambda: replica.version >= 3)
        assert [c.from_version for c in source.calls[-2:]] == [1, 1]
        assert watch.kinds == ["lost", "checkpoint"]
        assert isinstance(watch.events[0].error, HistoryPruned)
        assert replica.entry_count == 3 and replica.verify_local().ok
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_run_stops_on_a_refusal_no_retry_can_cure(
    replica: Replica, hub: FakeHub, source: FakeSource
) -> None:
    source.scripts.append([HubError(grpc.StatusCode.PERMISSION_DENIED, "not a member")])
    with pytest.raises(HubError, match="PERMISSION_DENIED"):
        await asyncio.wait_for(replica.run(initial_backoff=0.01, max_backoff=0.02), 5)
    hub.publish(MULE)
    source.scripts.append([hub.change_page(0, Form.CLEAR)])  # no snapshot for a sync from 0
    await asyncio.wait_for(replica.run(follow=False, initial_backoff=0.01, max_backoff=0.02), 5)
    assert [c.from_version for c in source.calls] == [0, 0, 0] and replica.version == 1


async def test_lookups_from_other_threads_see_committed_copies_only(
    replica: Replica, hub: FakeHub, source: FakeSource
) -> None:
    hub.publish(MULE)
    await replica.sync_once()
    hub.publish(TRADER)
    applied, halt = asyncio.Event(), asyncio.Event()
    source.scripts.append(
        [hub.change_page(1, Form.CLEAR), applied.set, halt, hub.checkpoint(Form.CLEAR)]
    )
    syncing = asyncio.create_task(replica.sync_once())
    await applied.wait()
    seen: list[object] = []
    worker = threading.Thread(
        target=lambda: seen.extend(
            [
                replica.is_listed_person("11010119900101123X"),
                replica.is_listed_account("BANKB", "6222020000000002") is not None,
            ]
        )
    )
    worker.start()
    worker.join()
    assert seen == [None, True], "the uncommitted change is not visible"
    halt.set()
    await syncing
    assert replica.is_listed_person("11010119900101123X") is not None


def test_the_copy_file_is_wal_and_starts_empty(path: Path, source: FakeSource) -> None:
    with Replica(path, source, Form.CLEAR) as r:
        assert (r.version, r.entry_count, r.digest) == (0, 0, bytes(32))
        assert r.lag.seconds is None and r.status().resync
        assert r.verify_local().ok
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        indexes = {row[1] for row in db.execute("PRAGMA index_list(entries)")}
        assert indexes == {"entries_by_id", "entries_by_subject"}


def test_statuses_read_as_a_line(replica: Replica) -> None:
    line = replica.status().line()
    assert line.startswith("version 0, 0 entries, digest " + "00" * 32)
    assert "never synced" in line
