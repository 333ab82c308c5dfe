"""The Channels service: one long-lived task per connected channel, and the one
path every outgoing message takes."""
from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any, NoReturn

import httpx
import trio

from nanoclaw.audit import Audit
from nanoclaw.channels._base import CHANNEL_NAMES, Adapter, Inbound, Link, PlatformError, backoff
from nanoclaw.channels._router import Router
from nanoclaw.channels._store import ChatStore
from nanoclaw.clock import Clock, iso
from nanoclaw.errors import Conflict, Invalid, NotFound, Unavailable, UpstreamError
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
        state.connected, state.account, state.last_error = True, account, None
        state.status_message = f"Connected as {account}"

    def healthy(self) -> None:
        self.made_progress = True

    async def deliver(self, message: Inbound) -> None:
        self.state.last_event_at = self.channels.clock.now()
        if await self.channels.router.deliver(message):
            self.state.messages_in += 1

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
                 adapters: list[Adapter]) -> None:
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

    # -- lifecycle ------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http, trio.open_nursery() as nursery:
            self.http, self._nursery = http, nursery
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
            if key not in adapter.public_fields:
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
            state.last_error, state.status_message = None, f"Connected as {account}"
            self._start(state, credentials)
        await self.audit.record("info", "channel", f"{name} connected as {account}")
        return self.details(name)

    async def disconnect(self, name: str) -> dict[str, Any]:
        """Stop the channel's task and forget its credentials."""
        self.adapter(name)
        async with self._config_lock:
            await self._stop(self.states[name])
            forgotten = await self.store.delete_config(name)
            self.states[name] = ChannelState(name)
        if forgotten:
            await self.audit.record("info", "channel", f"{name} disconnected")
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

    async def send(self, chat_jid: str, text: str) -> dict[str, Any] | None:
        """Send text to a chat through the channel owning its JID prefix, then store it as a
        bot message. None when nothing was left to send after removing <internal> notes."""
        prefix = chat_jid.partition(":")[0]
        adapter = self.by_prefix.get(prefix)
        if adapter is None or ":" not in chat_jid:
            known = ", ".join(f"{p}:" for p in self.by_prefix)
            raise Invalid(f"{chat_jid!r} has no known channel prefix (known: {known})", code="UNKNOWN_CHANNEL")
        state = self.states[adapter.name]
        if not state.connected or state.credentials is None:
            raise Conflict(f"The {adapter.name} channel is not connected ({state.status_message})",
                           code="CHANNEL_NOT_CONNECTED")
        text = strip_internal(text)
        if not text:
            return None
        for piece in split_text(text, adapter.max_length):
            await self._send_piece(adapter, state, chat_jid, piece)
        state.messages_out += 1
        return await self.store.add_outbound(adapter.name, chat_jid, text, state.account or "bot")

    async def _send_piece(self, adapter: Adapter, state: ChannelState, chat_jid: str, piece: str) -> None:
        for attempt in range(SEND_ATTEMPTS):
            try:
                await adapter.send(self._http(), state.credentials, chat_jid, piece)
                return
            except PlatformError as exc:
                if not exc.transient or attempt == SEND_ATTEMPTS - 1:
                    what = "refused" if not exc.transient else f"failed {SEND_ATTEMPTS} times to take"
                    message = f"{adapter.name} {what} a message to {chat_jid}: {exc.reason}"
                    log.error("%s", message)
                    await self.audit.record("error", "channel", message)
                    raise UpstreamError(message, code="SEND_FAILED") from None
                delay = exc.retry_after if exc.retry_after is not None else backoff(attempt)
                log.warning("%s send to %s: %s; retrying in %.1f s", adapter.name, chat_jid, exc.reason, delay)
                await trio.sleep(delay)

    # -- MessageSource ----------------------------------------------------------

    async def pending(self, group: str) -> MessageBatch | None:
        return await self.router.pending(group)

    async def advance(self, group: str, cursor: object) -> None:
        await self.router.advance(group, cursor)


def _context(name: str) -> str:
    return f"channel:{name}"
