"""The one path every outgoing message takes: each chat JID's channel, its retries and
formatting fallback, the stored copy; and the chat's activity (typing, streamed replies)."""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, NoReturn

import httpx
import trio

from nanoclaw.audit import Audit
from nanoclaw.channels._activity import Activity
from nanoclaw.channels._base import CHANNEL_NAMES, Adapter, PlatformError, backoff
from nanoclaw.groupfiles import OutFile
from nanoclaw.channels._store import ChatStore
from nanoclaw.errors import Conflict, Invalid, Unavailable, UpstreamError
from nanoclaw.namespaces import Namespaces
from nanoclaw.text import split_text, strip_internal

log = logging.getLogger("nanoclaw.channels")

# Tries of one outgoing piece on 429/5xx/network errors before giving up.
SEND_ATTEMPTS = 5
HTTP_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


@dataclasses.dataclass
class ChannelState:
    name: str
    credentials: dict[str, Any] | None = None
    account: str | None = None
    connected: bool = False
    connected_at: float | None = None
    last_event_at: float | None = None
    last_error: str | None = None
    status_message: str = "Not configured"
    messages_in: int = 0
    messages_out: int = 0
    reconnects: int = 0
    scope: trio.CancelScope | None = None
    stopped: trio.Event | None = None


class Outbox:
    """Sends to chats through the channel owning each JID prefix. Holds every channel's state
    (the Channels service connects and updates them) and the HTTP client all platform calls use.

    `await nursery.start(outbox.run)` opens the client and runs the chats' Activity; `aclose()`
    closes the client after every service that sends through it has stopped.
    """

    def __init__(self, store: ChatStore, namespaces: Namespaces, audit: Audit, adapters: list[Adapter]) -> None:
        self.store = store
        self.namespaces = namespaces
        self.audit = audit
        self.adapters = {a.name: a for a in adapters}
        self.by_prefix = {a.prefix: a for a in adapters}
        self.states = {name: ChannelState(name) for name in CHANNEL_NAMES}
        self.http: httpx.AsyncClient | None = None
        self.activity = Activity(self)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        # Closed by aclose() once every service stopped: the channels, the supervisor's last
        # results and the scheduler all send through it while they wind down.
        self.http = httpx.AsyncClient(timeout=HTTP_TIMEOUT)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.activity.run)
            task_status.started()
            await trio.sleep_forever()

    async def aclose(self) -> None:
        http, self.http = self.http, None
        if http is not None:
            with trio.CancelScope(shield=True):
                await http.aclose()

    def http_client(self) -> httpx.AsyncClient:
        if self.http is None:
            raise Unavailable("The channel service is not running")
        return self.http

    async def send(self, chat_jid: str, text: str, *, answer: bool = True) -> dict[str, Any] | None:
        """Send text to a chat through the channel owning its JID prefix, then store it as a
        bot message. None when nothing was left to send after removing <internal> notes.
        answer=False (the server's own notes): leaves a streamed reply and typing alone."""
        adapter, state, credentials = self.route(chat_jid)
        text = strip_internal(text)
        if not text:
            return None
        pieces = split_text(text, adapter.max_length)
        stream = self.activity.take_stream(chat_jid) if answer else None
        if stream is not None and pieces:
            # A streamed reply: its message becomes the first piece.
            if await stream.finish(pieces[0]):
                pieces = pieces[1:]
        for piece in pieces:
            await self._send_piece(adapter, credentials, chat_jid, piece)
        if answer:
            self.activity.stop_typing(chat_jid)
        state.messages_out += 1
        return await self.store.add_outbound(adapter.name, chat_jid, text, state.account or "bot")

    async def send_file(self, chat_jid: str, file: OutFile, caption: str | None) -> dict[str, Any]:
        """Send a file (already read and checked) to a chat, then store it as a bot message
        with the file as its attachment."""
        adapter, state, credentials = self.route(chat_jid)
        caption = strip_internal(caption or "")[:1024] or None
        try:
            await self.retrying(adapter, chat_jid, lambda: adapter.send_file(
                self.http_client(), credentials, chat_jid, file, caption))
        except PlatformError as exc:
            raise await self._send_failed(adapter, chat_jid, exc, "a file") from None
        state.messages_out += 1
        return await self.store.add_outbound(adapter.name, chat_jid, caption or "", state.account or "bot", [
            {"kind": file.kind, "name": file.name, "mimeType": file.mime_type, "size": len(file.data),
             "path": file.path}])

    def route(self, chat_jid: str) -> tuple[Adapter, ChannelState, dict[str, Any]]:
        """The adapter of a chat's channel, its state and its credentials; refused when it is not connected."""
        prefix = chat_jid.partition(":")[0]
        adapter = self.by_prefix.get(prefix)
        if adapter is None or ":" not in chat_jid:
            known = ", ".join(f"{p}:" for p in self.by_prefix)
            raise Invalid(f"{chat_jid!r} has no known channel prefix (known: {known})", code="UNKNOWN_CHANNEL")
        state = self.states[adapter.name]
        if not state.connected or state.credentials is None:
            raise Conflict(f"The {adapter.name} channel is not connected ({state.status_message})",
                           code="CHANNEL_NOT_CONNECTED")
        return adapter, state, state.credentials

    async def _send_piece(self, adapter: Adapter, credentials: dict[str, Any], chat_jid: str, piece: str) -> str | None:
        """Send one piece in the platform's format, and as plain text if the platform refuses
        the formatting. Returns the platform's message id when it gives one."""
        for plain in (False, True):
            try:
                return await self.retrying(adapter, chat_jid, lambda: adapter.send(
                    self.http_client(), credentials, chat_jid, piece, plain=plain))
            except PlatformError as exc:
                if plain or not adapter.format_refused(exc):
                    raise await self._send_failed(adapter, chat_jid, exc, "a message") from None
                log.warning("%s refused the formatted text (%s); sending it as plain text", adapter.name, exc.reason)
        return None

    async def retrying(self, adapter: Adapter, chat_jid: str, call):
        """call() again on 429/5xx/network errors, waiting as the platform asks; PlatformError otherwise."""
        for attempt in range(SEND_ATTEMPTS):
            try:
                return await call()
            except PlatformError as exc:
                if not exc.transient or attempt == SEND_ATTEMPTS - 1:
                    raise
                delay = exc.retry_after if exc.retry_after is not None else backoff(attempt)
                log.warning("%s send to %s: %s; retrying in %.1f s", adapter.name, chat_jid, exc.reason, delay)
                await trio.sleep(delay)

    async def _send_failed(self, adapter: Adapter, chat_jid: str, exc: PlatformError, what: str) -> UpstreamError:
        how = "refused" if not exc.transient else f"failed {SEND_ATTEMPTS} times to take"
        message = f"{adapter.name} {how} {what} to {chat_jid}: {exc.reason}"
        log.error("%s", message)
        await self.audit.record("error", "channel", message)
        return UpstreamError(message, code="SEND_FAILED")
