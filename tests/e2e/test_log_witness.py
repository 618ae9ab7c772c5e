"""The network is the witness (docs/witness.md): a real hub on a SQLite file hands its newest
signed log checkpoint to members on the delivery stream and in every answer's trailing
metadata; the SDK keeps the newest it saw and raises LogForkAlarm when the hub's database is
rolled back (ROLLBACK) or rolled back and extended with other entries (FORK), and never across
a plain restart."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from adapters.sdk import HubClient, LogForkAlarm
from adapters.sdk.witness import FORK, ROLLBACK
from hub.bootstrap import serve
from hub.crypto import checkpoint as checkpoints
from hub.domain.merkle import verify_consistency
from hub.system.clock import ManualClock
from stophub.v1 import audit_pb2, audit_pb2_grpc, envelope_pb2
from tests.e2e.conftest import Network, start_network
from tests.e2e.wire_helpers import RawStream, report, sign

CHECKPOINT_METADATA = "stophub-log-checkpoint-bin"
# The idle interval of the test's hub (two minutes in production).
EVERY = 1.0


@pytest.fixture
async def net(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Network]:
    network = await start_network(tmp_path, clock, checkpoint_every=EVERY)
    try:
        yield network
    finally:
        await network.server.stop(0.5)
        network.store.dispose()


def db_file(net: Network) -> Path:
    return Path(net.database_url.removeprefix("sqlite:///"))


def snapshot(net: Network, to: Path) -> None:
    """A consistent copy of the live hub's database (SQLite's online backup)."""
    with sqlite3.connect(db_file(net)) as src, sqlite3.connect(to) as dst:
        src.backup(dst)


def replace_database(live: Path, earlier: Path) -> None:
    # SQLite's backup writes the copy over every page of the live file (and its journal).
    with sqlite3.connect(earlier) as src, sqlite3.connect(live) as dst:
        src.backup(dst)


async def restart(net: Network, *, database: Path | None = None) -> None:
    """Stop the hub and start it again on the same port and keys; with `database`, on that
    copy of an earlier database instead (what someone with the database files can do)."""
    port = net.server.port
    await net.server.stop(0.5)
    net.store.dispose()
    if database is not None:
        replace_database(db_file(net), database)
    for attempt in range(50):
        try:
            net.server, net.store = await serve(
                net.database_url,
                net.hub_key,
                f"127.0.0.1:{port}",
                clock=net.clock,
                ack_timeout=1.0,
                workers=4,
                tls=net.hub_tls,
                list_key=net.list_key,
                checkpoint_every=EVERY,
            )
            return
        except OSError:  # the port is not free again yet
            await asyncio.sleep(0.1 * (attempt + 1))
    raise AssertionError(f"port {port} did not come free")


async def grow(client: HubClient, net: Network, reports: int = 2) -> None:
    for _ in range(reports):
        await client.create_report(report(net.clock.now(), (500_000,)))


async def signed_now(client: HubClient) -> audit_pb2.LogCheckpoint:
    _, cp = await client.get_log_checkpoint(fresh=True)
    return cp


def kept_size(client: HubClient) -> int:
    assert client.witness is not None and client.witness.kept is not None
    return client.witness.kept.tree_size


async def next_alarm(stream: object, timeout: float = 20.0) -> LogForkAlarm:
    async def run() -> LogForkAlarm:
        try:
            async for _ in stream:  # type: ignore[attr-defined]
                pass
        except LogForkAlarm as alarm:
            return alarm
        raise AssertionError("the stream ended without an alarm")

    return await asyncio.wait_for(run(), timeout)


async def test_rollback_of_the_database_raises_the_alarm_on_the_stream(
    net: Network, tmp_path: Path
) -> None:
    kept_file = tmp_path / "banka" / "log-checkpoint.json"
    bank = net.client("BANKA", log_checkpoint_file=kept_file)
    try:
        await grow(bank, net)
        early = await signed_now(bank)
        snapshot(net, tmp_path / "early.db")
        await grow(bank, net)
        later = await signed_now(bank)
        assert later.tree_size > early.tree_size
        assert kept_size(bank) == later.tree_size
        assert checkpoints.read_file(kept_file, bank._hub_key).tree_size == later.tree_size

        stream = bank.deliveries("primary", initial_backoff=0.05, max_backoff=0.2)
        stream.start()
        await asyncio.wait_for(stream.connected.wait(), 10)

        # A plain restart: the stream reconnects, the same log goes on, no alarm.
        await restart(net)
        await asyncio.wait_for(stream.connected.wait(), 20)
        await grow(bank, net, 1)
        grown = await signed_now(bank)
        assert kept_size(bank) == grown.tree_size > later.tree_size
        assert bank.witness is not None and bank.witness.alarm is None

        # The database files replaced by the earlier copy: the hub serves a shorter log.
        await restart(net, database=tmp_path / "early.db")
        alarm = await next_alarm(stream)
        assert alarm.kind == ROLLBACK
        assert (alarm.kept.tree_size, alarm.seen.tree_size) == (grown.tree_size, early.tree_size)
        assert alarm.evidence is not None and alarm.evidence.parent == kept_file.parent
        # The kept checkpoint is the newer one still, in the file too.
        assert checkpoints.read_file(kept_file, bank._hub_key).tree_size == grown.tree_size

        # Every later call raises the alarm until the application acknowledges it.
        with pytest.raises(LogForkAlarm):
            await bank.get_institution("BANKA")
        assert bank.acknowledge_log_alarm() is alarm
        # Acknowledged, the kept checkpoint stays: the hub still serves the shorter log, and
        # its next checkpoint raises again.
        with pytest.raises(LogForkAlarm) as again:
            await bank.get_institution("BANKA")
        assert again.value.kind == ROLLBACK
        # Only starting over (the operators decided) keeps the hub's checkpoint from then on.
        bank.acknowledge_log_alarm(start_over=True)
        await bank.get_institution("BANKA")
        assert kept_size(bank) == early.tree_size
        assert checkpoints.read_file(kept_file, bank._hub_key).tree_size == early.tree_size
    finally:
        await bank.close()


async def test_a_fork_raises_the_alarm_on_the_call_that_brings_it(
    net: Network, tmp_path: Path
) -> None:
    kept_file = tmp_path / "banka" / "log-checkpoint.json"
    bank = net.client("BANKA", log_checkpoint_file=kept_file)
    await grow(bank, net)
    await signed_now(bank)
    snapshot(net, tmp_path / "early.db")
    await grow(bank, net)
    kept = await signed_now(bank)
    await bank.close()

    # Rolled back to the copy, then extended with other entries beyond the kept size.
    await restart(net, database=tmp_path / "early.db")
    # Another of the bank's programs, one that does not witness.
    other = net.client("BANKA", witness=False)
    try:
        while (await signed_now(other)).tree_size <= kept.tree_size:
            await grow(other, net, 1)
    finally:
        await other.close()

    # The bank comes back with the checkpoint it kept in its file.
    bank = net.client("BANKA", log_checkpoint_file=kept_file)
    try:
        assert kept_size(bank) == kept.tree_size
        with pytest.raises(LogForkAlarm) as raised:
            await bank.get_institution("BANKA")  # its answer carries the forked checkpoint
        assert raised.value.kind == FORK
        assert raised.value.seen.tree_size > kept.tree_size
        with pytest.raises(LogForkAlarm):
            await bank.list_cases()
        assert kept_size(bank) == kept.tree_size
    finally:
        await bank.close()


async def test_checkpoints_on_the_stream_and_in_trailing_metadata(net: Network) -> None:
    bank = net.client("BANKA", witness=False)
    try:
        await grow(bank, net)
        first = await signed_now(bank)
    finally:
        await bank.close()

    stream = await RawStream(net, "BANKB").open()
    try:
        # Right after the subscription: sequence 0, no envelope, the latest checkpoint.
        opening = await stream.next(checkpoints=True)
        assert opening.sequence == 0 and not opening.HasField("envelope")
        cp = checkpoints.open_checkpoint(opening.log_checkpoint, lambda _: net.hub_public_key)
        assert cp.tree_size == first.tree_size
        # An acknowledgement of sequence 0 acknowledges nothing and breaks nothing.
        await stream.ack(0)
        # Idle: the checkpoint comes again about every EVERY seconds.
        beats = [await stream.next(timeout=EVERY * 3, checkpoints=True) for _ in range(2)]
        assert all(b.sequence == 0 and b.HasField("log_checkpoint") for b in beats)
    finally:
        await stream.close()

    # Every unary answer, success and refusal, carries it as trailing metadata.
    async with net.channel("BANKA") as channel:
        audit = audit_pb2_grpc.AuditServiceStub(channel)
        now = net.clock.now()
        body = audit_pb2.GetLogCheckpointBody()
        call = audit.GetLogCheckpoint(
            audit_pb2.GetLogCheckpointRequest(envelope=sign(net.keys["BANKA"], "BANKA", body, now))
        )
        await call
        trailers = dict(await call.trailing_metadata())
        carried = envelope_pb2.Envelope.FromString(trailers[CHECKPOINT_METADATA])
        assert checkpoints.open_checkpoint(carried, lambda _: net.hub_public_key).tree_size == (
            first.tree_size
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await audit.ListAuditEntries(
                audit_pb2.ListAuditEntriesRequest(
                    envelope=sign(net.keys["BANKA"], "BANKA", audit_pb2.ListAuditEntriesBody(), now)
                )
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert (
            dict(refused.value.trailing_metadata())[CHECKPOINT_METADATA]
            == trailers[CHECKPOINT_METADATA]
        )

        # A member proves any size against a checkpoint: 1 .. the checkpoint's size.
        async def prove(first_size: int, second_size: int) -> audit_pb2.ConsistencyProof:
            body = audit_pb2.GetConsistencyProofBody(first_size=first_size, second_size=second_size)
            answer = await audit.GetConsistencyProof(
                audit_pb2.GetConsistencyProofRequest(
                    envelope=sign(net.keys["BANKA"], "BANKA", body, net.clock.now())
                )
            )
            return audit_pb2.ConsistencyProof.FromString(answer.envelope.body)

        proof = await prove(1, first.tree_size)
        assert proof.first_size == 1 and proof.second_size == first.tree_size
        page = net.store  # the first leaf, read from the hub's own database
        with page(read_only=True) as uow:
            leaf0 = uow.audit.leaves(1)[0]
        assert verify_consistency(1, first.tree_size, list(proof.hashes), leaf0, first.root_hash)
        for bad, code in (
            (0, grpc.StatusCode.INVALID_ARGUMENT),
            (-3, grpc.StatusCode.INVALID_ARGUMENT),
            (first.tree_size + 1, grpc.StatusCode.OUT_OF_RANGE),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as wrong:
                await prove(bad, first.tree_size)
            assert wrong.value.code() == code, bad
            assert str(bad) in (wrong.value.details() or "")

    # A changed checkpoint rides on the next delivery.
    stream = await RawStream(net, "CENTRE").open()
    try:
        opening = await stream.next(checkpoints=True)
        assert opening.sequence == 0
        bank = net.client("BANKA", witness=False)
        try:
            await grow(bank, net, 1)  # a new report: a delivery to the centre
            second = await signed_now(bank)
            await grow(bank, net, 1)
        finally:
            await bank.close()
        delivery = await stream.next(timeout=10)
        while not delivery.HasField("log_checkpoint"):
            await stream.ack(delivery.sequence)
            delivery = await stream.next(timeout=10)
        assert delivery.sequence > 0 and delivery.HasField("envelope")
        carried_cp = checkpoints.open_checkpoint(
            delivery.log_checkpoint, lambda _: net.hub_public_key
        )
        assert carried_cp.tree_size == second.tree_size > first.tree_size
    finally:
        await stream.close()


async def test_sdk_stream_skips_checkpoint_messages_and_keeps_the_newest(net: Network) -> None:
    bank = net.client("BANKA")
    centre = net.client("CENTRE")
    try:
        await grow(bank, net, 1)
        cp = await signed_now(bank)
        async with centre.deliveries("primary") as stream:
            delivery = await asyncio.wait_for(anext(stream), 10)
            assert delivery.sequence > 0  # the checkpoint-only message is not a delivery
            assert centre.witness is not None and centre.witness.kept is not None
            assert centre.witness.kept.tree_size >= cp.tree_size
            await stream.ack(delivery.sequence)
    finally:
        await bank.close()
        await centre.close()
