"""The event hub: a bounded ring buffer of recent events and one bounded channel per client.

publish() is synchronous and never blocks: a client whose channel is full is dropped
(its stream ends; it reconnects with Last-Event-ID and catches up from the buffer).
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import json
import logging
from typing import Any

import trio

from nanoclaw.clock import Clock

log = logging.getLogger("nanoclaw.events")
BUFFER_SIZE = 1000
CLIENT_BUFFER = 256
# An event's JSON above this size is replaced by a stub (progress events carry container output).
MAX_EVENT_BYTES = 64 * 1024


@dataclasses.dataclass(frozen=True)
class Event:
    id: int
    type: str
    ts: float
    data: dict[str, Any]

    @functools.cached_property
    def sse(self) -> bytes:
        """The event as one Server-Sent Events message (serialised once for every client)."""
        body = json.dumps({"id": self.id, "type": self.type, "ts": self.ts, "data": self.data},
                          separators=(",", ":"), default=str)
        if len(body) > MAX_EVENT_BYTES:
            body = json.dumps({"id": self.id, "type": self.type, "ts": self.ts,
                               "data": {"truncated": True, "bytes": len(body)}})
        return f"id: {self.id}\nevent: {self.type}\ndata: {body}\n\n".encode()


class Subscription:
    """One client's view: `replay` (what it missed, in order), then live events from `receive`.

    `gap` is set when the client asked to resume from an id the buffer no longer holds
    (or one this process never issued): it missed events and should reload its state.
    """

    def __init__(self, hub: EventHub, replay: list[Event], gap: dict[str, Any] | None,
                 send: trio.MemorySendChannel, receive: trio.MemoryReceiveChannel) -> None:
        self.hub = hub
        self.replay = replay
        self.gap = gap
        self.dropped = False
        self._send = send
        self.receive = receive

    def close(self) -> None:
        self.hub._clients.discard(self)
        self._send.close()
        self.receive.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class EventHub:
    def __init__(self, clock: Clock, *, buffer_size: int = BUFFER_SIZE, client_buffer: int = CLIENT_BUFFER) -> None:
        self.clock = clock
        self.client_buffer = client_buffer
        self._buffer: collections.deque[Event] = collections.deque(maxlen=buffer_size)
        self._last_id = 0
        self._clients: set[Subscription] = set()
        self.dropped_clients = 0

    @property
    def last_id(self) -> int:
        return self._last_id

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def publish(self, type_: str, data: dict[str, Any] | None = None) -> Event:
        """Record an event and hand it to every client; never blocks, never raises for a client."""
        self._last_id += 1
        event = Event(self._last_id, type_, self._now(), dict(data or {}))
        self._buffer.append(event)
        for client in list(self._clients):
            try:
                client._send.send_nowait(event)
            except trio.WouldBlock:
                self._drop(client)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._clients.discard(client)
        return event

    def _drop(self, client: Subscription) -> None:
        client.dropped = True
        self._clients.discard(client)
        client._send.close()  # the client's stream ends once it reads what it has
        self.dropped_clients += 1
        log.info("events: dropped a client that fell %d events behind", self.client_buffer)

    def _now(self) -> float:
        try:
            return self.clock.now()
        except RuntimeError:  # outside Trio (sync callers in tools and tests)
            import time

            return time.time()

    def subscribe(self, last_event_id: int | None = None) -> Subscription:
        """A new client, resuming after last_event_id when given. Synchronous: no event can
        slip between the replay snapshot and the live channel."""
        replay: list[Event] = []
        gap = None
        if last_event_id is not None:
            oldest = self._buffer[0].id if self._buffer else self._last_id + 1
            if last_event_id > self._last_id or last_event_id < oldest - 1:
                gap = {"lastEventId": last_event_id, "oldestAvailable": oldest if self._buffer else None,
                       "latest": self._last_id,
                       "reason": "the server restarted" if last_event_id > self._last_id
                       else "the events since lastEventId are no longer buffered"}
                replay = list(self._buffer)
            else:
                replay = [e for e in self._buffer if e.id > last_event_id]
        send, receive = trio.open_memory_channel(self.client_buffer)
        subscription = Subscription(self, replay, gap, send, receive)
        self._clients.add(subscription)
        return subscription
