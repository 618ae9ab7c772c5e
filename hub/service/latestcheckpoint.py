"""The newest signed checkpoint of the audit log, as the hub hands it to every member: on
each delivery stream and in the trailing metadata of each answer (docs/witness.md).

Every answer needs it, so it is read from the database at most once per `max_age` seconds
(the newest row of audit_checkpoints), and replaced at once when this hub signs one. It is
what the database holds, not what this hub remembers: if the database were rolled back, the
members are the ones to notice (they keep the newest checkpoint they saw)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from hub.service.ports import LogCheckpointRow, UnitOfWorkFactory

log = logging.getLogger(__name__)

# How old the cached checkpoint may be before a reader looks at the database again.
MAX_AGE = 1.0


class LatestCheckpoint:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        *,
        max_age: float = MAX_AGE,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.uow = uow
        self.max_age = max_age
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._envelope: bytes | None = None
        self._read_at: float | None = None

    def peek(self) -> bytes | None:
        """The cached signed envelope, without reading the database."""
        return self._envelope

    def read_before(self) -> bool:
        """Whether the database was read at least once (peek() then says what it held)."""
        return self._read_at is not None

    def stale(self) -> bool:
        read_at = self._read_at
        return read_at is None or self._monotonic() - read_at >= self.max_age

    def get(self) -> bytes | None:
        """The newest signed checkpoint's envelope (serialized), reading the database when
        the cached one is older than `max_age`; blocking, so call it off the event loop when
        `stale()`. A database that cannot be read keeps the cached one: an answer is never
        refused for the sake of the checkpoint it carries."""
        if not self.stale():
            return self._envelope
        with self._lock:
            if not self.stale():  # another thread read it meanwhile
                return self._envelope
            try:
                with self.uow(read_only=True) as uow:
                    row = uow.audit.latest_checkpoint()
            except Exception as err:
                log.debug("latest log checkpoint not read (%s); sending the cached one", err)
                row = None
                if self._envelope is not None:
                    self._read_at = self._monotonic()
                    return self._envelope
            self._envelope = None if row is None else row.envelope
            self._read_at = self._monotonic()
            return self._envelope

    def signed(self, row: LogCheckpointRow) -> None:
        """This hub just signed `row`: members get it from now on, without waiting for the
        next read."""
        with self._lock:
            self._envelope = row.envelope
            self._read_at = self._monotonic()
