"""The chat shows the agent working: typing indicators while a turn runs, and (with the
namespace's containerConfig.streamReplies) one reply message edited as the text streams in.

Driven by the supervisor's RunEvents: `on_run_event` is the (synchronous) listener; it
only queues the event for the task `run`, which owns every typing and streaming task.
"""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import trio

from nanoclaw.channels._base import PlatformError
from nanoclaw.errors import NanoclawError
from nanoclaw.supervisor import RunEvent

if TYPE_CHECKING:
    from nanoclaw.channels._outbox import Outbox

log = logging.getLogger("nanoclaw.channels")

# A streamed reply is edited at most once per this many seconds.
EDIT_INTERVAL = 1.0
QUEUE = 1000


class Stream:
    """One reply message edited as the agent's text grows."""

    def __init__(self, outbox: Outbox, chat_jid: str) -> None:
        self.outbox = outbox
        self.chat_jid = chat_jid
        self.message_id: str | None = None
        self.latest = ""
        self.shown = ""
        self.edits = 0
        self.next_at = -math.inf  # trio time before which no edit may go out
        self.changed = trio.Event()
        self.lock = trio.Lock()
        self.scope = trio.CancelScope()
        self.closed = False

    def update(self, text: str) -> None:
        self.latest = text
        self.changed.set()

    async def run(self) -> None:
        with self.scope:
            while True:
                await self.changed.wait()
                self.changed = trio.Event()
                await trio.sleep_until(self.next_at)
                async with self.lock:
                    if self.closed:
                        return
                    # A send in flight must finish: its message id is what `finish` edits.
                    with trio.CancelScope(shield=True):
                        try:
                            await self._show(self.latest, plain=True)
                        except (PlatformError, NanoclawError) as exc:
                            log.warning("streamed reply to %s not updated: %s", self.chat_jid, exc)

    async def _show(self, text: str, *, plain: bool) -> None:
        adapter, _, credentials = self.outbox.route(self.chat_jid)
        text = text[:adapter.max_length]
        if not text.strip() or text == self.shown:
            return
        http = self.outbox.http_client()
        try:
            if self.message_id is None:
                self.message_id = await adapter.send(http, credentials, self.chat_jid, text, plain=plain)
            else:
                await adapter.edit(http, credentials, self.chat_jid, self.message_id, text, plain=plain)
                self.edits += 1
        except PlatformError as exc:
            if exc.status == 429:
                self.next_at = trio.current_time() + (exc.retry_after or EDIT_INTERVAL)
                self.changed.set()  # try again once the platform allows
            raise
        self.shown = text
        self.next_at = trio.current_time() + EDIT_INTERVAL

    async def finish(self, text: str) -> bool:
        """Make the streamed message say `text` (formatted); False when there is no message to
        edit (the caller sends it as new)."""
        self.closed = True
        self.scope.cancel()
        async with self.lock:
            if self.message_id is None:
                return False
            adapter, _, _ = self.outbox.route(self.chat_jid)
            for plain in (False, True):
                try:
                    await self.outbox.retrying(adapter, self.chat_jid, self._paced(text, plain))
                    return True
                except PlatformError as exc:
                    if plain or not adapter.format_refused(exc):
                        log.warning("streamed reply to %s not finished: %s", self.chat_jid, exc.reason)
                        return False
            return False

    def _paced(self, text: str, plain: bool):
        async def call():
            await trio.sleep_until(self.next_at)
            self.shown = ""  # the final edit goes out even when the plain text matched
            await self._show(text, plain=plain)
        return call


class Activity:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self._in, self._out = trio.open_memory_channel[tuple[int, RunEvent]](QUEUE)
        # chat -> results seen so far. Set as the supervisor emits (before it sends the
        # answer), so text still queued from before an answer is known to be stale.
        self._answers: dict[str, int] = {}
        self._typing: dict[str, trio.CancelScope] = {}
        self._streams: dict[str, Stream] = {}
        # run id -> chat, for runs between started and finished
        self._runs: dict[str, str] = {}

    def on_run_event(self, event: RunEvent) -> None:
        if event.kind != "message" or not event.chat_jid:
            return
        if event.type == "result":
            self._answers[event.chat_jid] = self._answers.get(event.chat_jid, 0) + 1
        try:
            self._in.send_nowait((self._answers.get(event.chat_jid, 0), event))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            log.warning("dropped a run event for %s (activity queue full or closed)", event.chat_jid)

    def follow_up(self, jid: str) -> None:
        """A triggering message came for a chat: if a run for it is live, the agent gets it as a
        follow-up and works on it; show typing (queued like a progress event of that run)."""
        run_id = next((run for run, chat in self._runs.items() if chat == jid), None)
        if run_id is not None:
            self.on_run_event(RunEvent("progress", run_id, "", "message", jid, {"kind": "follow_up"}))

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            async for answers, event in self._out:
                try:
                    await self._handle(nursery, event, answers)
                except Exception:  # a bug here must not stop typing for every chat
                    log.exception("handling %s for %s failed", event.type, event.chat_jid)

    def _stale(self, jid: str, answers: int) -> bool:
        """An answer went out to the chat since the event was queued."""
        return answers != self._answers.get(jid, 0)

    async def _handle(self, nursery: trio.Nursery, event: RunEvent, answers: int) -> None:
        jid = event.chat_jid
        assert jid is not None  # on_run_event queues only events with a chat
        stale = self._stale(jid, answers)
        if event.type == "started":
            self._runs[event.run_id] = jid
            if not stale:  # an answer already went out: the turn is over
                self._start_typing(nursery, jid)
        elif event.type == "progress" and event.run_id in self._runs and not stale:
            text = event.data.get("text")
            if event.data.get("kind") == "text" and isinstance(text, str):
                await self._stream(nursery, jid, text, answers)
            else:
                self._start_typing(nursery, jid)
        elif event.type == "result":
            self.stop_typing(jid)
        elif event.type == "finished":
            self._runs.pop(event.run_id, None)
            self.stop_typing(jid)
            stream = self._streams.pop(jid, None)
            if stream is not None:
                stream.scope.cancel()

    def _start_typing(self, nursery: trio.Nursery, jid: str) -> None:
        adapter = self.outbox.by_prefix.get(jid.partition(":")[0])
        if adapter is None or adapter.typing_interval is None or jid in self._typing:
            return
        scope = trio.CancelScope()
        self._typing[jid] = scope
        nursery.start_soon(self._type, jid, adapter, scope)

    async def _type(self, jid: str, adapter, scope: trio.CancelScope) -> None:
        try:
            with scope:
                while True:
                    delay = adapter.typing_interval
                    try:
                        _, _, credentials = self.outbox.route(jid)
                        await adapter.typing(self.outbox.http_client(), credentials, jid)
                    except PlatformError as exc:
                        delay = max(delay, exc.retry_after or 0)
                        log.debug("typing in %s: %s", jid, exc.reason)
                    except NanoclawError:
                        return  # the channel is not connected
                    await trio.sleep(delay)
        finally:
            if self._typing.get(jid) is scope:
                del self._typing[jid]

    def stop_typing(self, jid: str) -> None:
        scope = self._typing.pop(jid, None)
        if scope is not None:
            scope.cancel()

    def typing(self, jid: str) -> bool:
        return jid in self._typing

    async def _stream(self, nursery: trio.Nursery, jid: str, text: str, answers: int) -> None:
        stream = self._streams.get(jid)
        if stream is None:
            adapter = self.outbox.by_prefix.get(jid.partition(":")[0])
            ns = await self.outbox.namespaces.by_jid(jid)
            if self._stale(jid, answers):
                return
            if adapter is None or not adapter.can_edit or ns is None or not ns.containerConfig.streamReplies:
                self._start_typing(nursery, jid)
                return
            stream = self._streams[jid] = Stream(self.outbox, jid)
            nursery.start_soon(stream.run)
            self.stop_typing(jid)
        stream.update(text)

    def take_stream(self, jid: str) -> Stream | None:
        """The chat's streamed reply, handed over to the final send."""
        return self._streams.pop(jid, None)
