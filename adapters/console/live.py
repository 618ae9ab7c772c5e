"""Live updates: what the console hears from the hub goes to every open browser at once, by
server-sent events (adapters/console/static/console.js shows and sounds it)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Event:
    # delivery | breach | link | proposal
    kind: str
    title: str
    case_id: str = ""
    url: str = ""
    # Whether the browser sounds the alarm (a new order, a breach) or only shows it.
    alarm: bool = False
    sequence: int = 0

    def sse(self) -> str:
        return f"event: {self.kind}\ndata: {json.dumps(asdict(self), ensure_ascii=False)}\n\n"


class Broadcaster:
    """Fan-out to the browsers' event streams; a slow browser loses old events, never blocks
    the others or the delivery loop."""

    def __init__(self, depth: int = 100) -> None:
        self._queues: set[asyncio.Queue[Event]] = set()
        self._depth = depth

    def subscribe(self) -> asyncio.Queue[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue(self._depth)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        self._queues.discard(queue)

    def publish(self, event: Event) -> None:
        for queue in list(self._queues):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

    @property
    def listeners(self) -> int:
        return len(self._queues)
