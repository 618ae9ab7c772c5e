"""The SDK's log witness (adapters/sdk/witness.py, docs/witness.md): a newer checkpoint is
kept only once the hub proves it extends the kept one; a fork or a rollback raises
LogForkAlarm, which stays until acknowledged; a checkpoint that does not verify is ignored."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from adapters.sdk.witness import (
    FORK,
    ROLLBACK,
    LogForkAlarm,
    LogWitness,
    ProofRefused,
    ProofUnavailable,
)
from hub.crypto import checkpoint as checkpoints
from hub.crypto.envelope import seal_message
from hub.crypto.keys import PrivateKey
from hub.domain.merkle import consistency_proof, leaf_hash, root_of
from hub.service.wire import ts
from hub.system.clock import ManualClock
from stophub.v1 import audit_pb2
from tests.conftest import T0

HUB_KEY = PrivateKey.generate()
OTHER_KEY = PrivateKey.generate()


def leaves(n: int, tag: bytes = b"a") -> list[bytes]:
    return [leaf_hash(tag + str(i).encode()) for i in range(n)]


def signed(tree: Sequence[bytes], key: PrivateKey = HUB_KEY, minutes: int = 0) -> bytes:
    body = audit_pb2.LogCheckpoint(
        tree_size=len(tree),
        root_hash=root_of(tree),
        checkpoint_time=ts(T0 + timedelta(minutes=minutes)),
    )
    return seal_message(
        key,
        sender="HUB",
        recipient="AUDIT",
        message_id=f"checkpoint-{len(tree)}",
        create_time=T0 + timedelta(minutes=minutes),
        message=body,
    ).SerializeToString()


class Hub:
    """Proves consistency over the tree it holds now, as the hub does; counts requests."""

    def __init__(self, tree: list[bytes]) -> None:
        self.tree = tree
        self.asked: list[tuple[int, int]] = []
        self.refuse: Exception | None = None

    async def prove(self, first: int, second: int) -> list[bytes]:
        self.asked.append((first, second))
        if self.refuse is not None:
            raise self.refuse
        if second > len(self.tree):
            raise ProofRefused(f"NOT_FOUND: no checkpoint of {second} entries")
        return consistency_proof(first, self.tree[:second])


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def keys(kid: str) -> bytes | None:
    return HUB_KEY.public_key if kid == HUB_KEY.key_id else None


def witness(hub: Hub, path: Path | None) -> LogWitness:
    return LogWitness(keys, hub.prove, ManualClock(T0), path=path)


async def test_first_checkpoint_is_kept_and_written(tmp_path: Path) -> None:
    hub = Hub(leaves(5))
    w = witness(hub, tmp_path / "log-checkpoint.json")
    await w.see(signed(hub.tree))
    assert w.kept is not None and w.kept.tree_size == 5
    assert hub.asked == []  # nothing to prove against yet
    again = checkpoints.read_file(tmp_path / "log-checkpoint.json", keys)
    assert again.envelope == signed(hub.tree)
    # No temporary file is left beside it.
    assert names(tmp_path) == ["log-checkpoint.json"]


async def test_newer_consistent_checkpoint_replaces_the_kept_one(tmp_path: Path) -> None:
    hub = Hub(leaves(5))
    path = tmp_path / "kept.json"
    w = witness(hub, path)
    await w.see(signed(hub.tree))
    hub.tree = leaves(13)  # grew, keeping its first 5 leaves
    await w.see(signed(hub.tree, minutes=1))
    assert hub.asked == [(5, 13)]
    assert w.kept is not None and w.kept.tree_size == 13
    assert checkpoints.read_file(path, keys).tree_size == 13
    # A witness started from the file goes on from 13.
    w2 = witness(hub, path)
    assert w2.kept is not None and w2.kept.tree_size == 13


async def test_the_same_checkpoint_costs_no_proof() -> None:
    hub = Hub(leaves(8))
    w = witness(hub, None)
    cp = signed(hub.tree)
    for _ in range(100):
        await w.see(cp)
    assert hub.asked == []
    # The same tree signed again (another time) is no alarm and no proof either.
    await w.see(signed(hub.tree, minutes=3))
    assert hub.asked == [] and w.alarm is None


async def test_same_size_other_root_is_a_fork(tmp_path: Path) -> None:
    hub = Hub(leaves(8))
    w = witness(hub, tmp_path / "kept.json")
    await w.see(signed(hub.tree))
    forked = signed(leaves(8, b"z"), minutes=1)
    with pytest.raises(LogForkAlarm) as raised:
        await w.see(forked)
    assert raised.value.kind == FORK
    assert raised.value.kept.tree_size == 8 and raised.value.seen.envelope == forked
    # The kept checkpoint is not replaced, in memory or on disk.
    assert w.kept is not None and w.kept.envelope == signed(hub.tree)
    assert checkpoints.read_file(tmp_path / "kept.json", keys).envelope == signed(hub.tree)


async def test_larger_tree_with_a_failing_proof_is_a_fork(tmp_path: Path) -> None:
    hub = Hub(leaves(6))
    w = witness(hub, tmp_path / "kept.json")
    await w.see(signed(hub.tree))
    # The database was rolled back to 4 entries and extended with others to 10.
    hub.tree = leaves(4) + leaves(6, b"other")
    with pytest.raises(LogForkAlarm) as raised:
        await w.see(signed(hub.tree, minutes=2))
    alarm = raised.value
    assert alarm.kind == FORK and "proof fails" in alarm.reason
    assert hub.asked == [(6, 10)]
    assert alarm.evidence is not None and alarm.evidence.parent == tmp_path
    evidence = json.loads(alarm.evidence.read_text())
    assert evidence["kind"] == FORK
    assert evidence["kept"]["tree_size"] == 6 and evidence["seen"]["tree_size"] == 10
    assert (evidence["proof"]["first_size"], evidence["proof"]["second_size"]) == (6, 10)
    assert evidence["proof"]["hashes"]  # the proof the hub gave, kept as evidence
    # Both signed checkpoints in the evidence verify on their own.
    for side in ("kept", "seen"):
        checkpoints.load(json.dumps(evidence[side]), keys)


async def test_smaller_tree_is_a_rollback_unless_the_hub_proves_it_a_prefix(
    tmp_path: Path,
) -> None:
    hub = Hub(leaves(9))
    w = witness(hub, tmp_path / "kept.json")
    await w.see(signed(hub.tree))
    # An older checkpoint of the same log (a second hub's cache lags): proved, ignored.
    await w.see(signed(hub.tree[:4], minutes=-1))
    assert hub.asked == [(4, 9)] and w.alarm is None
    assert w.kept is not None and w.kept.tree_size == 9
    # The database is rolled back to 4 entries: the hub cannot prove 9 any more.
    hub.tree = hub.tree[:4]
    with pytest.raises(LogForkAlarm) as raised:
        await w.see(signed(hub.tree, minutes=5))
    assert raised.value.kind == ROLLBACK
    assert w.kept.tree_size == 9


async def test_alarm_is_sticky_until_acknowledged() -> None:
    hub = Hub(leaves(3))
    w = witness(hub, None)
    await w.see(signed(hub.tree))
    with pytest.raises(LogForkAlarm):
        await w.see(signed(leaves(3, b"x")))
    # Everything after raises the same alarm, even the kept checkpoint itself coming again
    # would not clear it: only the application does.
    with pytest.raises(LogForkAlarm):
        w.check()
    with pytest.raises(LogForkAlarm):
        await w.see(signed(leaves(3, b"y")))
    first = w.acknowledge()
    assert first is not None and first.kind == FORK
    w.check()  # calls go on
    # The kept checkpoint stayed: the other log raises again.
    with pytest.raises(LogForkAlarm):
        await w.see(signed(leaves(3, b"x")))
    w.acknowledge(start_over=True)
    assert w.kept is None
    await w.see(signed(leaves(3, b"x")))
    assert w.kept is not None and w.kept.root_hash == root_of(leaves(3, b"x"))


async def test_checkpoint_that_does_not_verify_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hub = Hub(leaves(4))
    w = witness(hub, tmp_path / "kept.json")
    caplog.set_level(logging.WARNING)
    await w.see(signed(hub.tree, key=OTHER_KEY))
    assert w.kept is None and not (tmp_path / "kept.json").exists()
    assert "ignored" in caplog.text and "not one you trust" in caplog.text
    await w.see(b"\xff\x00not an envelope")
    assert w.kept is None
    await w.see(signed(hub.tree))
    # A forged larger one is ignored too, and costs no proof.
    await w.see(signed(leaves(40), key=OTHER_KEY))
    assert w.kept is not None and w.kept.tree_size == 4 and hub.asked == []
    assert w.alarm is None


async def test_unavailable_proof_decides_nothing() -> None:
    hub = Hub(leaves(4))
    w = witness(hub, None)
    await w.see(signed(hub.tree))
    hub.tree = leaves(7)
    hub.refuse = ProofUnavailable("UNAVAILABLE: the hub is restarting")
    await w.see(signed(hub.tree))
    assert w.alarm is None and w.kept is not None and w.kept.tree_size == 4
    hub.refuse = None
    await w.see(signed(hub.tree))
    assert w.kept.tree_size == 7


async def test_refused_proof_of_a_larger_tree_is_a_fork() -> None:
    hub = Hub(leaves(4))
    w = witness(hub, None)
    await w.see(signed(hub.tree))
    hub.refuse = ProofRefused("OUT_OF_RANGE: no")
    with pytest.raises(LogForkAlarm) as raised:
        await w.see(signed(leaves(7)))
    assert raised.value.kind == FORK


def test_kept_file_that_does_not_verify_is_refused_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "kept.json"
    other = checkpoints.open_checkpoint(
        signed(leaves(2), key=OTHER_KEY), lambda _: OTHER_KEY.public_key
    )
    path.write_text(checkpoints.dump(other))
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"move .* aside"):
        witness(Hub([]), path)
    assert path.read_bytes() == before


async def test_a_write_that_fails_leaves_the_old_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    hub = Hub(leaves(5))
    path = tmp_path / "kept.json"
    w = witness(hub, path)
    await w.see(signed(hub.tree))
    before = path.read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("adapters.sdk.witness.os.fsync", disk_full)
    hub.tree = leaves(11)
    caplog.set_level(logging.ERROR)
    # The member's call goes on; the file keeps the older checkpoint, whole.
    await w.see(signed(hub.tree))
    assert path.read_bytes() == before
    assert names(tmp_path) == ["kept.json"]
    assert "cannot write" in caplog.text and "No space" in caplog.text
    assert w.kept is not None and w.kept.tree_size == 11
    # A restart reads the older checkpoint, of the same log: still no alarm.
    monkeypatch.undo()
    w2 = witness(hub, path)
    assert w2.kept is not None and w2.kept.tree_size == 5
    await w2.see(signed(hub.tree))
    assert w2.kept.tree_size == 11 and w2.alarm is None


async def test_a_refused_envelope_is_signed_again_never_taken_for_a_refused_proof(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """UNAUTHENTICATED judges the request's envelope (a clock that moved on between signing
    and arrival: the demo's 30-day jump did it), not the proof: the SDK asks once more with a
    fresh envelope, and a second refusal means no proof now, never a fork."""
    from adapters.sdk.client import HubClient, HubError
    from adapters.sdk.witness import ProofRefused, ProofUnavailable

    client = HubClient(
        "127.0.0.1:1",
        institution="BANKA",
        key=PrivateKey.generate(),
        hub_public_key=PrivateKey.generate().public_key,
        witness=False,
    )
    answers: list[object] = []
    sent: list[str] = []

    async def send(rpc: str, envelope: object, **_: object) -> tuple[None, object]:
        sent.append(envelope.message_id)  # type: ignore[attr-defined]
        answer = answers.pop(0)
        if isinstance(answer, HubError):
            raise answer
        return None, answer

    expired = HubError(
        grpc.StatusCode.UNAUTHENTICATED, "envelope expired", reason="ENVELOPE_EXPIRED"
    )
    proof = audit_pb2.ConsistencyProof(first_size=3, second_size=5, hashes=[bytes(32)])
    monkeypatch.setattr(client, "_send", send)
    try:
        answers[:] = [expired, proof]
        assert await client._prove(3, 5) == [bytes(32)]
        assert len(set(sent)) == 2  # signed anew, not the same envelope again
        answers[:] = [expired, expired]
        with pytest.raises(ProofUnavailable):
            await client._prove(3, 5)
        answers[:] = [HubError(grpc.StatusCode.OUT_OF_RANGE, "not in tree", reason="NOT_IN_TREE")]
        with pytest.raises(ProofRefused):
            await client._prove(3, 5)
    finally:
        await client.close()
