"""The Channels service: one long-lived task per connected channel, and the one
path every outgoing message takes."""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, NoReturn

import httpx
import trio

from nanoclaw.audit import Audit
from nanoclaw.channels._base import CHANNEL_NAMES, Adapter, Inbound, Link, PlatformError, backoff
from nanoclaw.channels._activity import Activity
from nanoclaw.channels._inbox import fetch_media
from nanoclaw.channels._media import OutFile, remove_partial_downloads
from nanoclaw.channels._router import Router
from nanoclaw.channels._store import ChatStore
from nanoclaw.clock import Clock, iso
from nanoclaw.errors import Conflict, Invalid, NotFound, Unavailable, UpstreamError
from nanoclaw.events import Listeners
from nanoclaw.secrets import SecretBox, mask
from nanoclaw.text import split_text, strip_internal
from nanoclaw.supervisor import MessageBatch, MessageSource

log = logging.getLogger("nanoclaw.channels")

# Tries of one outgoing piece on 429/5xx/network errors before giving up.
SEND_ATTEMPTS = 5
RECONNECT_CAP = 300.0
HTTP_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


@dataclasses.dataclass(frozen=True)
class ChannelCounts:
    name: str
    connected: bool
    messages_in: int
    messages_out: int
    reconnects: int


@dataclasses.dataclass(frozen=True)
class ChannelStatistics:
    channels: tuple[ChannelCounts, ...]


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


class _ChannelLink(Link):
    def __init__(self, channels: Channels, state: ChannelState) -> None:
        self.channels = channels
        self.state = state
        self.made_progress = False

    async def connected(self, account: str) -> None:
        state = self.state
        if not state.connected or state.account != account:
            state.connected_at = self.channels.clock.now()
        was_connected = state.connected
        state.connected, state.account, state.last_error = True, account, None
        state.status_message = self.channels.connected_message(state.name, account, state.credentials)
        if not was_connected:
            self.channels.listeners("connected", {"channel": state.name, "account": account})

    def healthy(self) -> None:
        self.made_progress = True

    async def deliver(self, message: Inbound) -> None:
        self.state.last_event_at = self.channels.clock.now()
        if await self.channels.router.deliver(message, self._fetch):
            self.state.messages_in += 1

    async def _fetch(self, message: Inbound, group: str | None):
        channels = self.channels
        group_dir = channels.groups_dir / group if group and channels.groups_dir else None
        return await fetch_media(channels.adapters[self.state.name], channels._http(), self.state.credentials,
                                 message, group_dir, channels.clock.now(), channels.offload,
                                 lambda jid, text: channels.send(jid, text, answer=False))

    async def move_chat(self, old_jid: str, new_jid: str) -> None:
        if await self.channels.store.move_chat(old_jid, new_jid):
            await self.channels.audit.record("info", "channel", f"chat {old_jid} is now {new_jid}",
                                             details={"channel": self.state.name})
            for listener in self.channels.namespaces.listeners:
                await listener()

    async def load(self, key: str) -> str | None:
        return await self.channels.store.load_state(self.state.name, key)

    async def save(self, key: str, value: str) -> None:
        await self.channels.store.save_state(self.state.name, key, value)


class Channels(MessageSource):
    """Connected channels, each kept alive by its own task; also the supervisor's MessageSource.

    `await nursery.start(channels.run)` starts every stored channel again.
    """

    def __init__(self, store: ChatStore, router: Router, secrets: SecretBox, audit: Audit, clock: Clock,
                 adapters: list[Adapter], *, groups_dir: Path | None = None, offload=None) -> None:
        self.groups_dir = groups_dir
        self.offload = offload or trio.to_thread.run_sync
        self.store = store
        self.router = router
        self.namespaces = router.namespaces
        self.secrets = secrets
        self.audit = audit
        self.clock = clock
        self.adapters = {a.name: a for a in adapters}
        self.by_prefix = {a.prefix: a for a in adapters}
        self.states = {name: ChannelState(name) for name in CHANNEL_NAMES}
        self.http: httpx.AsyncClient | None = None
        self._nursery: trio.Nursery | None = None
        # connect/disconnect one at a time, so a channel never ends up with two tasks
        self._config_lock = trio.Lock()
        self.activity = Activity(self)
        # The supervisor's RunEvent listener (typing indicators, streamed replies).
        self.on_run_event = self.activity.on_run_event
        router.triggered = self.activity.follow_up
        # Called with (type, data): connected / disconnected / error (live events).
        self.listeners = Listeners()

    # -- lifecycle ------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http, trio.open_nursery() as nursery:
            self.http, self._nursery = http, nursery
            nursery.start_soon(self.activity.run)
            if self.groups_dir is not None:
                await self.offload(remove_partial_downloads, self.groups_dir)
            for row in await self.store.configs():
                state = self.states.get(row["name"])
                if state is None or row["name"] not in self.adapters:
                    continue
                try:
                    credentials = json.loads(self.secrets.decrypt(row["credentials"], context=_context(row["name"])))
                except ValueError:
                    state.status_message = state.last_error = "Stored credentials cannot be decrypted; connect again"
                    await self.audit.record("error", "channel", f"{row['name']}: {state.last_error}")
                    continue
                # Register every secret field for redaction, not just the sealed JSON string:
                # request URLs carry single values (Telegram's /bot<token>/).
                self._remember_secrets(self.adapters[row["name"]], credentials)
                state.account = row["account"]
                self._start(state, credentials)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self.http = self._nursery = None

    def _start(self, state: ChannelState, credentials: dict[str, Any]) -> None:
        assert self._nursery is not None
        state.credentials = credentials
        state.scope, state.stopped = trio.CancelScope(), trio.Event()
        if not state.connected:
            state.status_message = "Connecting"
        self._nursery.start_soon(self._keep_connected, state, state.scope, state.stopped)

    async def _keep_connected(self, state: ChannelState, scope: trio.CancelScope, stopped: trio.Event) -> None:
        adapter = self.adapters[state.name]
        attempt = 0
        try:
            with scope:
                while True:
                    link = _ChannelLink(self, state)
                    try:
                        await adapter.run(self.http, state.credentials, link)
                        reason = "the connection ended"
                    except PlatformError as exc:
                        reason = exc.reason
                    except Exception as exc:  # a bug in one channel must not stop the server
                        log.exception("channel %s failed", state.name)
                        reason = f"internal error: {type(exc).__name__}: {exc}"
                    if link.made_progress:
                        attempt = 0
                    if reason != state.last_error:
                        await self.audit.record("warning", "channel", f"{state.name} disconnected: {reason}")
                    log.warning("channel %s: %s (reconnecting)", state.name, reason)
                    self.listeners("error", {"channel": state.name, "error": reason})
                    state.connected, state.last_error = False, reason
                    state.status_message = f"Reconnecting: {reason}"
                    state.reconnects += 1
                    await trio.sleep(backoff(attempt, cap=RECONNECT_CAP))
                    attempt += 1
        finally:
            state.connected = False
            stopped.set()

    async def _stop(self, state: ChannelState) -> None:
        if state.scope is not None:
            state.scope.cancel()
            await state.stopped.wait()
        state.scope = state.stopped = None

    # -- connect / disconnect / validate --------------------------------------

    def adapter(self, name: str) -> Adapter:
        if name not in self.adapters:
            raise NotFound(f"No channel named {name!r}" if name not in CHANNEL_NAMES
                           else f"The {name} channel is not available in this server")
        return self.adapters[name]

    def _http(self) -> httpx.AsyncClient:
        if self.http is None:
            raise Unavailable("The channel service is not running")
        return self.http

    def _remember_secrets(self, adapter: Adapter, credentials: dict[str, Any]) -> None:
        # Request URLs may carry a token (Telegram's do): make the log filter scrub them
        # even when the credentials are only being validated.
        for key, value in credentials.items():
            if key not in adapter.public_fields and value is not None:
                self.secrets.remember(str(value))

    async def validate(self, name: str, credentials: dict[str, Any]) -> str:
        """The account name the platform knows these credentials by; PlatformError says why not."""
        adapter = self.adapter(name)
        self._remember_secrets(adapter, credentials)
        return await adapter.validate(self._http(), credentials)

    async def connect(self, name: str, credentials: dict[str, Any]) -> dict[str, Any]:
        """Validate, store (encrypted) and start; replaces an earlier connection."""
        try:
            account = await self.validate(name, credentials)
        except PlatformError as exc:
            if exc.transient:
                raise UpstreamError(f"{name} could not check the credentials: {exc.reason}",
                                    code="PLATFORM_UNAVAILABLE") from None
            raise Invalid(f"{name} refused the credentials: {exc.reason}", code="INVALID_CREDENTIALS") from None
        async with self._config_lock:
            state = self.states[name]
            await self._stop(state)
            sealed = self.secrets.encrypt(json.dumps(credentials), context=_context(name))
            await self.store.save_config(name, sealed, account)
            state.connected, state.account, state.connected_at = True, account, self.clock.now()
            state.last_error = None
            state.status_message = self.connected_message(name, account, credentials)
            self._start(state, credentials)
        await self.audit.record("info", "channel", f"{name} connected as {account}")
        self.listeners("connected", {"channel": name, "account": account})
        return self.details(name)

    def connected_message(self, name: str, account: str, credentials: dict[str, Any] | None) -> str:
        return f"Connected as {account}" + self.adapters[name].notice(credentials or {})

    async def validate_stored(self, name: str) -> str:
        """validate() with the stored credentials; Invalid when there are none."""
        credentials = self.credentials(name) if name in self.adapters else None
        if credentials is None:
            self.adapter(name)
            raise Invalid(f"{name} has no stored credentials: send them in the body, or connect first",
                          code="NOT_CONFIGURED")
        return await self.validate(name, credentials)

    async def disconnect(self, name: str) -> dict[str, Any]:
        """Stop the channel's task and forget its credentials."""
        self.adapter(name)
        async with self._config_lock:
            await self._stop(self.states[name])
            forgotten = await self.store.delete_config(name)
            self.states[name] = ChannelState(name)
        if forgotten:
            await self.audit.record("info", "channel", f"{name} disconnected")
            self.listeners("disconnected", {"channel": name})
        return self.details(name)

    def credentials(self, name: str) -> dict[str, Any] | None:
        """The stored credentials of a configured channel (for webhook checks), else None."""
        return self.states[name].credentials

    async def receive(self, name: str, messages: list[Inbound]) -> None:
        """Route messages a platform pushed to us (webhooks) as if the channel's task got them."""
        link = _ChannelLink(self, self.states[name])
        for message in messages:
            await link.deliver(message)

    # -- status ---------------------------------------------------------------

    def summary(self, name: str) -> dict[str, Any]:
        state = self.states[name]
        return {"name": name, "connected": state.connected, "statusMessage": state.status_message}

    def details(self, name: str) -> dict[str, Any]:
        if name not in self.states:
            raise NotFound(f"No channel named {name!r}; channels are {', '.join(CHANNEL_NAMES)}")
        state = self.states[name]
        adapter = self.adapters.get(name)
        credentials = None
        if state.credentials is not None and adapter is not None:
            credentials = {k: v if k in adapter.public_fields else mask(str(v))
                           for k, v in state.credentials.items()}
        return self.summary(name) | {
            "configured": state.credentials is not None,
            "jidPrefix": adapter.prefix if adapter else None,
            "accountName": state.account,
            "connectedAt": iso(state.connected_at),
            "lastEventAt": iso(state.last_event_at),
            "lastError": state.last_error,
            "messagesIn": state.messages_in,
            "messagesOut": state.messages_out,
            "credentials": credentials,
        }

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(tuple(
            ChannelCounts(name, s.connected, s.messages_in, s.messages_out, s.reconnects)
            for name, s in self.states.items()
        ))

    # -- outgoing -------------------------------------------------------------

    async def send(self, chat_jid: str, text: str, *, answer: bool = True) -> dict[str, Any] | None:
        """Send text to a chat through the channel owning its JID prefix, then store it as a
        bot message. None when nothing was left to send after removing <internal> notes.
        answer=False (the server's own notes): leaves a streamed reply and typing alone."""
        adapter, state = self._route(chat_jid)
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
            await self._send_piece(adapter, state, chat_jid, piece)
        if answer:
            self.activity.stop_typing(chat_jid)
        state.messages_out += 1
        return await self.store.add_outbound(adapter.name, chat_jid, text, state.account or "bot")

    async def send_file(self, chat_jid: str, file: OutFile, caption: str | None) -> dict[str, Any]:
        """Send a file (already read and checked) to a chat, then store it as a bot message
        with the file as its attachment."""
        adapter, state = self._route(chat_jid)
        caption = strip_internal(caption or "")[:1024] or None
        try:
            await self._retrying(adapter, chat_jid, lambda: adapter.send_file(
                self._http(), state.credentials, chat_jid, file, caption))
        except PlatformError as exc:
            raise await self._send_failed(adapter, chat_jid, exc, "a file") from None
        state.messages_out += 1
        return await self.store.add_outbound(adapter.name, chat_jid, caption or "", state.account or "bot", [
            {"kind": file.kind, "name": file.name, "mimeType": file.mime_type, "size": len(file.data),
             "path": file.path}])

    def _route(self, chat_jid: str) -> tuple[Adapter, ChannelState]:
        prefix = chat_jid.partition(":")[0]
        adapter = self.by_prefix.get(prefix)
        if adapter is None or ":" not in chat_jid:
            known = ", ".join(f"{p}:" for p in self.by_prefix)
            raise Invalid(f"{chat_jid!r} has no known channel prefix (known: {known})", code="UNKNOWN_CHANNEL")
        state = self.states[adapter.name]
        if not state.connected or state.credentials is None:
            raise Conflict(f"The {adapter.name} channel is not connected ({state.status_message})",
                           code="CHANNEL_NOT_CONNECTED")
        return adapter, state

    async def _send_piece(self, adapter: Adapter, state: ChannelState, chat_jid: str, piece: str) -> str | None:
        """Send one piece in the platform's format, and as plain text if the platform refuses
        the formatting. Returns the platform's message id when it gives one."""
        for plain in (False, True):
            try:
                return await self._retrying(adapter, chat_jid, lambda: adapter.send(
                    self._http(), state.credentials, chat_jid, piece, plain=plain))
            except PlatformError as exc:
                if plain or not adapter.format_refused(exc):
                    raise await self._send_failed(adapter, chat_jid, exc, "a message") from None
                log.warning("%s refused the formatted text (%s); sending it as plain text", adapter.name, exc.reason)
        return None

    async def _retrying(self, adapter: Adapter, chat_jid: str, call):
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

    # -- MessageSource ----------------------------------------------------------

    async def pending(self, group: str) -> MessageBatch | None:
        return await self.router.pending(group)

    async def advance(self, group: str, cursor: object) -> None:
        await self.router.advance(group, cursor)


def _context(name: str) -> str:
    return f"channel:{name}"
