"""The member as a witness of the hub's audit log (docs/witness.md).

The hub hands its newest signed log checkpoint to every member: on the delivery stream and
in the trailing metadata of every answer. A `LogWitness` keeps the newest one it has seen (in
memory, and in a file in the format of hub/crypto/checkpoint.py) and accepts a newer one only
once the hub proves it an extension of the kept one (an RFC 9162 consistency proof). A tree
that shrank (ROLLBACK) or a different tree (FORK) raises `LogForkAlarm`: someone with the
hub's database rewrote history that this member already saw signed. The alarm stays raised,
on every later call, until the application acknowledges it.

Only a changed checkpoint costs anything: the same bytes again are one comparison.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import tempfile
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Final, NoReturn, Protocol

from hub.crypto import checkpoint as checkpoints
from hub.crypto.checkpoint import CheckpointError, SignedCheckpoint
from hub.domain.merkle import verify_consistency

log = logging.getLogger(__name__)

# The kept checkpoint's file name in an identity directory (adapters/sdk/identity.py).
DEFAULT_FILE: Final = "log-checkpoint.json"
EVIDENCE_FORMAT: Final = "stophub-log-fork/1"
ROLLBACK: Final = "ROLLBACK"
FORK: Final = "FORK"
# Checkpoints already judged (older ones proved a prefix of the kept one): not asked again.
_JUDGED_MEMORY: Final = 64


class Clock(Protocol):
    def now(self) -> datetime: ...


class ProofUnavailable(Exception):
    """The hub could not answer a proof request now (unreachable, busy): nothing is decided,
    the checkpoint is looked at again when it comes next."""


class ProofRefused(Exception):
    """The hub answered a proof request with a refusal: it cannot prove what it signed."""


# (first_size, second_size) -> the proof's hashes; raises ProofUnavailable or ProofRefused.
Prover = Callable[[int, int], Awaitable[Sequence[bytes]]]


class LogForkAlarm(Exception):
    """The hub's log is not an extension of the checkpoint this member kept: it shrank
    (`kind` ROLLBACK) or holds another history (FORK). `kept` is the checkpoint this member
    kept, `seen` the one that contradicts it (both hub-signed: together they are evidence),
    `evidence` the file they were written to. Raised by the call or stream that brought
    `seen`, and by every call after it until `HubClient.acknowledge_log_alarm()`."""

    def __init__(
        self,
        kind: str,
        reason: str,
        kept: SignedCheckpoint,
        seen: SignedCheckpoint,
        evidence: Path | None,
    ) -> None:
        self.kind = kind
        self.reason = reason
        self.kept = kept
        self.seen = seen
        self.evidence = evidence
        where = f"; evidence in {evidence}" if evidence is not None else ""
        super().__init__(
            f"{kind}: the hub's audit log is not an extension of the checkpoint this member "
            f"kept ({kept.tree_size} entries, root {kept.root_hash.hex()[:16]}…): {reason}"
            f"{where}"
        )


class LogWitness:
    """Keeps the newest verified checkpoint and judges each one met (`see`)."""

    def __init__(
        self,
        hub_keys: Callable[[str], bytes | None],
        prove: Prover,
        clock: Clock,
        *,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.hub_keys = hub_keys
        self.prove = prove
        self.clock = clock
        self.path = Path(path) if path is not None else None
        self.kept: SignedCheckpoint | None = None
        self.alarm: LogForkAlarm | None = None
        self._judged: OrderedDict[bytes, None] = OrderedDict()
        # One judgement at a time: concurrent calls bringing the same new checkpoint ask
        # one proof, not one each.
        self._lock = asyncio.Lock()
        if self.path is not None and self.path.exists():
            try:
                self.kept = checkpoints.read_file(self.path, hub_keys)
            except CheckpointError as e:
                # Never overwritten: it may be the only evidence of what the hub once signed.
                raise ValueError(
                    f"the kept log checkpoint does not verify ({e}): pin the hub key that "
                    f"signed it, or move {self.path} aside to start witnessing anew"
                ) from None

    def check(self) -> None:
        """Raise the standing alarm, if any."""
        if self.alarm is not None:
            raise self.alarm

    def acknowledge(self, *, start_over: bool = False) -> LogForkAlarm | None:
        """The application has dealt with the alarm (returned): calls go on. The kept
        checkpoint stays, so a hub still serving the other log raises again at its next
        checkpoint; `start_over` forgets it (its file is renamed beside the evidence) and the
        next checkpoint that verifies is kept: only once the network's operators have
        decided which log is the real one."""
        alarm, self.alarm = self.alarm, None
        if start_over and self.kept is not None:
            if self.path is not None and self.path.exists():
                aside = self.path.with_name(f"{self.path.stem}-{self._stamp()}-before-restart.json")
                os.replace(self.path, aside)
                log.warning("log witness starts over; the kept checkpoint moved to %s", aside)
            self.kept = None
            self._judged.clear()
        return alarm

    async def see(self, envelope: bytes) -> None:
        """Judge a checkpoint the hub sent (a serialized Envelope): keep it when it extends
        the kept one, ignore it when it does not verify, raise LogForkAlarm when it
        contradicts it."""
        if self.kept is not None and envelope == self.kept.envelope:
            return  # the hot path: nothing changed
        async with self._lock:
            self.check()  # a judgement made while this one waited
            await self._judge(envelope)

    async def _judge(self, envelope: bytes) -> None:
        kept = self.kept
        if kept is not None and envelope == kept.envelope:
            return
        if envelope in self._judged:
            return
        try:
            seen = checkpoints.open_checkpoint(envelope, self.hub_keys)
        except CheckpointError as e:
            log.warning("log checkpoint from the hub ignored: %s", e)
            return
        if kept is None:
            self._keep(seen)
            return
        if seen.tree_size == kept.tree_size:
            if seen.root_hash != kept.root_hash:
                self._raise(FORK, "a checkpoint of the same size with another root", kept, seen)
            self._remember(envelope)  # the same tree signed again
            return
        if seen.tree_size > kept.tree_size:
            hashes = await self._proof(kept.tree_size, seen.tree_size, kept, seen, FORK)
            if hashes is None:
                return
            if not verify_consistency(
                kept.tree_size, seen.tree_size, hashes, kept.root_hash, seen.root_hash
            ):
                self._raise(FORK, "the hub's consistency proof fails", kept, seen, hashes)
            self._keep(seen)
            return
        # Smaller: an older checkpoint (a hub whose cache is a second behind another's) only
        # if the hub still proves it a prefix of the kept one; otherwise the tree shrank.
        hashes = await self._proof(seen.tree_size, kept.tree_size, kept, seen, ROLLBACK)
        if hashes is None:
            return
        if not verify_consistency(
            seen.tree_size, kept.tree_size, hashes, seen.root_hash, kept.root_hash
        ):
            self._raise(
                ROLLBACK, "an older checkpoint that is no prefix of the kept one", kept, seen
            )
        self._remember(envelope)

    async def _proof(
        self, first: int, second: int, kept: SignedCheckpoint, seen: SignedCheckpoint, kind: str
    ) -> list[bytes] | None:
        try:
            return list(await self.prove(first, second))
        except ProofUnavailable as e:
            log.warning(
                "log checkpoint of %d entries not judged yet (no proof from the hub: %s)",
                seen.tree_size,
                e,
            )
            return None
        except ProofRefused as e:
            reason = (
                f"the tree shrank to {seen.tree_size} entries; the hub cannot prove the kept "
                f"tree: {e}"
                if kind == ROLLBACK
                else f"the hub does not prove its tree of {seen.tree_size} entries extends "
                f"the kept one: {e}"
            )
            self._raise(kind, reason, kept, seen)

    def _remember(self, envelope: bytes) -> None:
        self._judged[envelope] = None
        while len(self._judged) > _JUDGED_MEMORY:
            self._judged.popitem(last=False)

    def _keep(self, checkpoint: SignedCheckpoint) -> None:
        if self.path is not None:
            try:
                _write_atomically(self.path, checkpoints.dump(checkpoint))
            except OSError as e:
                # The member's calls go on: the file keeps an older checkpoint of the same
                # log, which a restart still checks the hub against.
                log.error(
                    "log witness: cannot write %s (%s); the checkpoint of %d entries is kept "
                    "in memory only",
                    self.path,
                    e,
                    checkpoint.tree_size,
                )
        self.kept = checkpoint
        self._judged.clear()

    def _stamp(self) -> str:
        return self.clock.now().strftime("%Y%m%dT%H%M%S%fZ")

    def _raise(
        self,
        kind: str,
        reason: str,
        kept: SignedCheckpoint,
        seen: SignedCheckpoint,
        hashes: Sequence[bytes] = (),
    ) -> NoReturn:
        evidence: Path | None = None
        if self.path is not None:
            evidence = self.path.with_name(f"log-{kind.lower()}-{self._stamp()}.json")
            try:
                _write_atomically(evidence, evidence_document(kind, reason, kept, seen, hashes))
            except OSError as e:
                log.error("log witness: cannot write the alarm's evidence %s (%s)", evidence, e)
                evidence = None
        alarm = LogForkAlarm(kind, reason, kept, seen, evidence)
        log.critical("LOG FORK ALARM %s", alarm)
        self.alarm = alarm
        raise alarm


def evidence_document(
    kind: str,
    reason: str,
    kept: SignedCheckpoint,
    seen: SignedCheckpoint,
    hashes: Sequence[bytes],
) -> str:
    """The alarm's evidence, JSON: both signed checkpoints (each as its own checkpoint file
    would hold it) and the proof the hub gave, if any."""
    return (
        json.dumps(
            {
                "format": EVIDENCE_FORMAT,
                "kind": kind,
                "reason": reason,
                "kept": json.loads(checkpoints.dump(kept)),
                "seen": json.loads(checkpoints.dump(seen)),
                "proof": {
                    "first_size": min(kept.tree_size, seen.tree_size),
                    "second_size": max(kept.tree_size, seen.tree_size),
                    "hashes": [base64.b64encode(h).decode("ascii") for h in hashes],
                },
            },
            indent=2,
        )
        + "\n"
    )


def _write_atomically(path: Path, text: str) -> None:
    """Write beside the target, flush to disk, then rename over it: a crash leaves the old
    file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
