"""Group commit: the writes that arrive together share one transaction and one commit.

Every mutating request is a transaction that ends in a durable commit: an fsync of SQLite's
WAL or PostgreSQL's. Done one request at a time, the hub spends its time opening and
committing transactions and waiting its turn for SQLite's single write lock. Here the
threads that have work to write hand it to whichever of them is writing at the moment (the
leader, no extra thread); the leader runs every piece of work waiting, each inside its own
savepoint of one transaction, and commits once. A piece that fails rolls back to its
savepoint alone (and may record its refusal in the outer transaction); the others commit.
(The first piece's savepoint is the transaction itself, which saves a lone request two round
trips; and a batch takes no more pieces once its pieces have worked WORK_BUDGET, so that
none waits long for its neighbours' work before its commit: ADR 26.)
Nothing is answered before the commit that holds it.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from hub.service.ports import Conflict, StoreUnavailable, UnitOfWork, UnitOfWorkFactory

log = logging.getLogger(__name__)

T = TypeVar("T")

# A batch larger than this waits for the next commit: it bounds how long the first request
# in a batch waits for the others.
MAX_BATCH = 64
# Once the pieces of a batch have worked this long, the rest wait for the next transaction:
# a piece's commit, and the stop order in it, waits at most about this long for its
# neighbours' work (ADR 26). Cheap pieces (acknowledgements, resends) still share commits.
WORK_BUDGET = 0.005


@dataclass(eq=False)
class Batch:
    """One shared transaction, with room for what its pieces compute once for all."""

    uow: UnitOfWork
    shared: dict[str, Any] = field(default_factory=dict)
    # Whether any piece wrote something: a batch of resends (answered from the inbound log)
    # has nothing to commit.
    changed: bool = False


@dataclass(eq=False)
class _Job(Generic[T]):
    work: Callable[[Batch], T]
    # Runs in the outer transaction after the piece's savepoint was rolled back, e.g. to keep
    # the refusal in the audit log; its own failure is logged, never raised.
    refused: Callable[[Batch, Exception], None] | None
    result: Any = None
    error: Exception | None = None
    done: bool = False
    conflicts: int = 0
    # The submitting request's context: its work may run on the leader's thread, and what it
    # logs there must carry its own ids (hub.observability.logs), not the leader's.
    context: contextvars.Context = field(default_factory=contextvars.copy_context)


class GroupCommit:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        *,
        retry_delays: Sequence[float] = (),
        max_batch: int = MAX_BATCH,
        work_budget: float = WORK_BUDGET,
    ) -> None:
        self.uow = uow
        self.retry_delays = tuple(retry_delays)
        self.max_batch = max_batch
        self.work_budget = work_budget
        self._cv = threading.Condition()
        self._queue: list[_Job[Any]] = []
        self._writing = False
        self._leader: int | None = None
        # Counters for benchmarks and tests: how many batches, how many pieces in them.
        self.batches = 0
        self.pieces = 0

    def run(
        self,
        work: Callable[[Batch], T],
        refused: Callable[[Batch, Exception], None] | None = None,
    ) -> T:
        """Run `work` in a savepoint of a shared transaction; return its result once that
        transaction committed, or raise what it raised (its changes rolled back). Raises
        StoreUnavailable when the database stayed away through every retry."""
        job: _Job[T] = _Job(work, refused)
        if self._leader == threading.get_ident():
            # Work started from inside a batch (a hook, a nested call) cannot wait for the
            # batch around it: it gets a transaction of its own, as another hub's would be.
            while not job.done:
                self._commit([job])
            return self._outcome(job)
        with self._cv:
            self._queue.append(job)
        while True:
            with self._cv:
                while not job.done and self._writing:
                    self._cv.wait()
                if job.done:
                    break
                self._writing = True
                self._leader = threading.get_ident()
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
            again: list[_Job[Any]] = []
            try:
                again = self._commit(batch)
            except BaseException as exc:
                # Whatever escaped (an interrupt) must not leave the others waiting forever.
                for other in batch:
                    if not other.done:
                        other.error = RuntimeError(f"the batch was interrupted: {exc!r}")
                        other.done = True
                raise
            finally:
                with self._cv:
                    # Pieces that met a twin committed by another hub run again, first.
                    self._queue[:0] = again
                    self._writing = False
                    self._leader = None
                    self._cv.notify_all()
        return self._outcome(job)

    @staticmethod
    def _outcome(job: _Job[T]) -> T:
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[no-any-return]

    def _commit(self, jobs: list[_Job[Any]]) -> list[_Job[Any]]:
        """Run `jobs` in one transaction; mark them done, except those to run again."""
        waits = iter(self.retry_delays)
        while True:
            for job in jobs:
                job.result, job.error = None, None
            try:
                again, ran = self._attempt(jobs)
            except StoreUnavailable as err:
                # The transaction committed entirely or not at all; if the commit landed
                # before the connection broke, each resend finds its answer in the inbound log.
                wait = next(waits, None)
                if wait is None:
                    log.warning("database unavailable, %d request(s) refused for now", len(jobs))
                    self._finish(jobs, err)
                    return []
                log.info("database unavailable; %d request(s) again in %.2fs", len(jobs), wait)
                time.sleep(wait)
                continue
            except Exception as err:
                if len(jobs) > 1:
                    # The commit itself failed for a reason no savepoint caught: no piece may
                    # sink the others, so each runs again alone.
                    log.warning("a batch of %d failed to commit (%s); each alone", len(jobs), err)
                    return self._alone(jobs)
                job = jobs[0]
                if isinstance(err, Conflict):
                    job.conflicts += 1
                    if job.conflicts < 2:
                        continue
                self._finish(jobs, err)
                return []
            self.batches += 1
            self.pieces += ran
            for job in jobs:
                if job not in again:
                    job.done = True
            return again

    def _alone(self, jobs: list[_Job[Any]]) -> list[_Job[Any]]:
        again: list[_Job[Any]] = []
        for job in jobs:
            again += self._commit([job])
        return again

    def _attempt(self, jobs: list[_Job[Any]]) -> tuple[list[_Job[Any]], int]:
        """Run `jobs` in one transaction; the pieces to run again, and how many ran."""
        again: list[_Job[Any]] = []
        ran = len(jobs)
        with self.uow() as uow:
            batch = Batch(uow)
            started = time.perf_counter()
            for i, job in enumerate(jobs):
                if i and time.perf_counter() - started >= self.work_budget:
                    again += jobs[i:]  # not run: first in the next transaction, in order
                    ran = i
                    break
                try:
                    with uow.savepoint():
                        job.result = job.context.run(job.work, batch)
                except StoreUnavailable:
                    raise
                except Conflict as err:
                    # Another transaction (another hub) committed the same row first; the
                    # next run finds it, as any resend would. Twice is not a race.
                    job.conflicts += 1
                    if job.conflicts < 2:
                        again.append(job)
                        continue
                    job.error = err
                except Exception as err:
                    job.error = err
                    if job.refused is not None:
                        self._refused(batch, job, err)
            if batch.changed:
                uow.commit()
        return again, ran

    @staticmethod
    def _refused(batch: Batch, job: _Job[Any], err: Exception) -> None:
        assert job.refused is not None
        try:
            with batch.uow.savepoint():
                job.context.run(job.refused, batch, err)
            batch.changed = True
        except StoreUnavailable:
            raise
        except Exception:
            log.exception("could not record a refusal")

    def _finish(self, jobs: list[_Job[Any]], err: Exception) -> None:
        for job in jobs:
            job.error = err
            job.done = True
