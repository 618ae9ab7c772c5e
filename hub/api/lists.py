"""ListService over gRPC, registered by hand for its SyncList stream, and the watcher that
wakes following copies (docs/blacklist.md). Its handlers are in
hub/service/commands/blacklist.py; the reading side of a sync in hub/service/lists.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc

from hub.api.decoding import Undecodable
from hub.api.errors import draining_status
from hub.api.runner import Runner
from hub.domain.errors import DomainError
from hub.observability import logs
from hub.service import lists
from hub.service.commands import blacklist
from hub.service.pipeline import Hub
from hub.service.ports import ListState, StoreUnavailable
from stophub.v1 import blacklist_pb2

log = logging.getLogger(__name__)

T = TypeVar("T")
SERVICE = blacklist_pb2.DESCRIPTOR.services_by_name["ListService"].full_name
# A following copy hears from the hub at least this often: a fresh checkpoint when nothing
# changed, so it can tell a quiet list from a dead link.
HEARTBEAT = 15.0
# How often the watcher looks for changes another hub made (changes of this process wake the
# followers at once; on PostgreSQL so do other replicas' and this is the safety net, ADR 22).
POLL = 0.25


class ListWatcher:
    """One task per server that learns of new list versions and wakes every follower: one
    query a tick however many copies follow, and none while nobody follows."""

    def __init__(self, runner: Runner, poll: float = POLL) -> None:
        self.runner = runner
        self.poll = poll
        self.latest = -1
        self._changed = asyncio.Event()
        self._poked = asyncio.Event()
        self._followers = 0
        self.closing = False
        self._task: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        runner.hub.on_list_change(self.poke)

    def poke(self) -> None:
        """Look at the list's version now (from any thread): a commit here or, through
        hub.store.wakeups, on another replica changed it."""
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._poked.set)

    async def _version(self) -> int:
        state: ListState = await self.runner.call(lists.ListSyncer(self.runner.hub).state)
        return state.version

    async def _run(self) -> None:
        while self._followers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poked.wait(), self.poll)
            self._poked.clear()
            try:
                version = await self._version()
            except StoreUnavailable:
                continue  # the followers' heartbeats say so; the next tick tries again
            except Exception:
                log.exception("list watcher could not read the list's version")
                continue
            if version > self.latest:
                self.latest = version
                changed, self._changed = self._changed, asyncio.Event()
                changed.set()

    async def wait_beyond(self, version: int, timeout: float) -> bool:
        """Until the list passes `version` (True) or `timeout` passes or the watcher closes
        (False)."""
        if self.closing:
            return False
        self._followers += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        try:
            deadline = self._loop.time() + timeout
            while self.latest <= version:
                left = deadline - self._loop.time()
                if left <= 0 or self.closing:
                    return False
                try:
                    await asyncio.wait_for(self._changed.wait(), left)
                except TimeoutError:
                    return False
            return True
        finally:
            self._followers -= 1

    async def close(self) -> None:
        """Stop watching, and wake the followers: the hub is stopping (they see `closing`)."""
        self.closing = True
        self._changed.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


def _raw(data: bytes) -> bytes:
    return data


class ListServicer:
    """ListService; registered by hand so SyncList can send stored entry bytes as they are,
    without decoding and re-encoding a million messages."""

    def __init__(self, runner: Runner, executor: ThreadPoolExecutor) -> None:
        self.r = runner
        self.hub: Hub = runner.hub
        self.executor = executor
        self.syncer = lists.ListSyncer(self.hub)
        self.watcher = ListWatcher(runner)
        self.heartbeat = HEARTBEAT

    def handler(self) -> grpc.GenericRpcHandler:  # type: ignore[type-arg]
        def unary(command: Any, request: type[Any], response: type[Any]) -> Any:
            async def behavior(req: Any, context: Any) -> Any:
                return await self.r.run(command, req, context, response)

            return grpc.unary_unary_rpc_method_handler(
                behavior,
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "PublishListEntry": unary(
                    blacklist.PUBLISH_LIST_ENTRY,
                    blacklist_pb2.PublishListEntryRequest,
                    blacklist_pb2.PublishListEntryResponse,
                ),
                "RemoveListEntry": unary(
                    blacklist.REMOVE_LIST_ENTRY,
                    blacklist_pb2.RemoveListEntryRequest,
                    blacklist_pb2.RemoveListEntryResponse,
                ),
                "CheckList": unary(
                    blacklist.CHECK_LIST,
                    blacklist_pb2.CheckListRequest,
                    blacklist_pb2.CheckListResponse,
                ),
                "SyncList": grpc.unary_stream_rpc_method_handler(
                    self.sync_list,
                    request_deserializer=blacklist_pb2.SyncListRequest.FromString,
                    response_serializer=_raw,
                ),
            },
        )

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _drain(self, parts: Iterator[lists.Part]) -> AsyncIterator[bytes]:
        """A generator of parts that reads the database, driven on the worker threads."""
        while True:
            part = await self._call(next, parts, None)
            if part is None:
                return
            yield part.data

    async def sync_list(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        if isinstance(request, Undecodable):
            await self.r.abort(context, request.error, None)
            return
        envelope = request.envelope
        # Lines about this stream name its sender, as a unary call's do (hub.observability.logs).
        logs.enter(institution=envelope.sender, message_id=envelope.message_id)
        try:
            peer = await self.r.peer(context, envelope)
            sender, admitted = await self._call(self.hub.admit, blacklist.SYNC_LIST, envelope, peer)
        except DomainError as err:
            log.info("refused SyncList from %s: %s %s", envelope.sender, err.code, err.reason)
            await self.r.abort(context, err, envelope)
            return
        body: blacklist_pb2.SyncListBody = admitted
        tokens = body.form == blacklist_pb2.LIST_FORM_TOKENS
        code = sender.code
        try:
            state: ListState = await self._call(self.syncer.state)
            if await self._call(self.syncer.needs_snapshot, body.from_version, state):
                async for data in self._drain(self.syncer.snapshot(state, tokens)):
                    yield data
            else:
                changes = self.syncer.changes(body.from_version, state.version, tokens)
                async for data in self._drain(changes):
                    yield data
            yield await self._call(self.syncer.checkpoint, state, code, tokens)
            version = state.version
            while body.follow:
                await self.watcher.wait_beyond(version, self.heartbeat)
                if self.watcher.closing:
                    # The hub is draining: the copy resumes from its version elsewhere now.
                    await context.abort(*draining_status())
                state = await self._call(self.syncer.state)
                # Whether woken or not: a heartbeat may find changes another hub made before
                # the watcher's next look, and its checkpoint must follow them.
                if state.version > version:
                    changes = self.syncer.changes(version, state.version, tokens)
                    async for data in self._drain(changes):
                        yield data
                    version = state.version
                yield await self._call(self.syncer.checkpoint, state, code, tokens)
        except StoreUnavailable as err:
            # The copy keeps what it had and resumes from its version on a new stream.
            await self.r.abort(context, err, envelope)
        except DomainError as err:
            # LIST_HISTORY_PRUNED: the copy keeps what it had; its next sync gets a snapshot.
            log.info("ended SyncList of %s: %s %s", code, err.code, err.reason)
            await self.r.abort(context, err, envelope)
