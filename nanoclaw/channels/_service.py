"""The Channels service: one long-lived task per connected channel, its credentials, and
what the platforms send us (handed to the Router)."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any, NoReturn

import trio

from nanoclaw.audit import Audit
from nanoclaw.channels._base import CHANNEL_NAMES, Adapter, Inbound, Link, PlatformError, backoff
from nanoclaw.channels._inbox import fetch_media
from nanoclaw.channels._media import remove_partial_downloads
from nanoclaw.channels._outbox import ChannelState, Outbox
from nanoclaw.channels._router import Router
from nanoclaw.channels._store import ChatStore
from nanoclaw.clock import Clock, iso
from nanoclaw.errors import Invalid, NotFound, UpstreamError
from nanoclaw.events import Listeners
from nanoclaw.secrets import SecretBox, mask

log = logging.getLogger("nanoclaw.channels")

RECONNECT_CAP = 300.0


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


class _ChannelLink(Link):
    def __init__(self, channels: Channels, state: ChannelState, credentials: dict[str, Any]) -> None:
        self.channels = channels
        self.state = state
        self.credentials = credentials
        self.made_progress = False

    async def connected(self, account: str) -> None:
        state = self.state
        if not state.connected or state.account != account:
            state.connected_at = self.channels.clock.now()
        was_connected = state.connected
        state.connected, state.account, state.last_error = True, account, None
        state.status_message = self.channels.connected_message(state.name, account, self.credentials)
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
        outbox = channels.outbox
        return await fetch_media(channels.adapters[self.state.name], outbox.http_client(), self.credentials,
                                 message, channels.media_dir, group or None, channels.clock.now(), channels.offload,
                                 lambda jid, text: outbox.send(jid, text, answer=False),
                                 lambda reason: channels.audit.record("violation", "media", reason, group=group))

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


class Channels:
    """Connected channels, each kept alive by its own task; sending goes through the Outbox.

    `await nursery.start(channels.run)` starts every stored channel again (after the outbox).
    """

    def __init__(self, store: ChatStore, router: Router, outbox: Outbox, secrets: SecretBox, audit: Audit,
                 clock: Clock, *, media_dir: Path, offload=None) -> None:
        self.media_dir = media_dir
        self.offload = offload or trio.to_thread.run_sync
        self.store = store
        self.router = router
        self.outbox = outbox
        self.namespaces = router.namespaces
        self.secrets = secrets
        self.audit = audit
        self.clock = clock
        self.adapters = outbox.adapters
        self.states = outbox.states
        # Channels to keep connected: _start sends them here, run() starts a task for each.
        self._starts, self._to_start = trio.open_memory_channel[
            tuple[ChannelState, dict[str, Any], trio.CancelScope, trio.Event]](math.inf)
        # connect/disconnect one at a time, so a channel never ends up with two tasks
        self._config_lock = trio.Lock()
        # Called with (type, data): connected / disconnected / error (live events).
        self.listeners = Listeners()

    # -- lifecycle ------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._start_sent, nursery)
            for name in await self.offload(remove_partial_downloads, self.media_dir):
                log.warning("removed %s, a download cut short when the server stopped", name)
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
            await trio.sleep_forever()

    def _start(self, state: ChannelState, credentials: dict[str, Any]) -> None:
        state.credentials = credentials
        state.scope, state.stopped = trio.CancelScope(), trio.Event()
        if not state.connected:
            state.status_message = "Connecting"
        self._starts.send_nowait((state, credentials, state.scope, state.stopped))

    async def _start_sent(self, nursery: trio.Nursery) -> None:
        async for state, credentials, scope, stopped in self._to_start:
            nursery.start_soon(self._keep_connected, state, credentials, scope, stopped)

    async def _keep_connected(self, state: ChannelState, credentials: dict[str, Any], scope: trio.CancelScope,
                              stopped: trio.Event) -> None:
        adapter = self.adapters[state.name]
        attempt = 0
        try:
            with scope:
                while True:
                    link = _ChannelLink(self, state, credentials)
                    try:
                        await adapter.run(self.outbox.http_client(), credentials, link)
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
            assert state.stopped is not None  # set with the scope
            await state.stopped.wait()
        state.scope = state.stopped = None

    # -- connect / disconnect / validate --------------------------------------

    def adapter(self, name: str) -> Adapter:
        if name not in self.adapters:
            raise NotFound(f"No channel named {name!r}" if name not in CHANNEL_NAMES
                           else f"The {name} channel is not available in this server")
        return self.adapters[name]

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
        return await adapter.validate(self.outbox.http_client(), credentials)

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

    async def receive(self, name: str, credentials: dict[str, Any], messages: list[Inbound]) -> None:
        """Route messages a platform pushed to us (webhooks, verified with credentials) as if the
        channel's task got them."""
        link = _ChannelLink(self, self.states[name], credentials)
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

def _context(name: str) -> str:
    return f"channel:{name}"
