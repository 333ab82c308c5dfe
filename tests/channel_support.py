"""The four chat platforms behind one driver each, for the channel contract suite
(test_channel_contract.py), and the channel fixtures several test modules share.

A driver knows how to serve its platform's fake, connect the server to it, push an inbound
message into it, script a rate limit, and read what the fake was sent. Everything else a
contract case does goes through the server's public API.
"""
from __future__ import annotations

import itertools
from typing import Any

import pytest
import trio

from conftest import make_settings, start_server
from fakes.discord import BOT as DISCORD_BOT
from fakes.discord import TOKEN as DISCORD_TOKEN
from fakes.discord import serve_fake_discord
from fakes.slack import APP_TOKEN, BOT_TOKEN, BOT_USER, message_event, serve_fake_slack
from fakes.telegram import BOT as TELEGRAM_BOT
from fakes.telegram import TOKEN as TELEGRAM_TOKEN
from fakes.telegram import serve_fake_telegram
from fakes.whatsapp import ACCESS_TOKEN, APP_SECRET, PHONE_NUMBER_ID, VERIFY_TOKEN, serve_fake_whatsapp, \
    text_delivery
from nanoclaw.clock import Clock
from nanoclaw.config import Settings

DISCORD_INTENTS = (1 << 9) | (1 << 12) | (1 << 15)
WHATSAPP_CREDENTIALS = {"phoneNumberId": PHONE_NUMBER_ID, "accessToken": ACCESS_TOKEN,
                        "webhookVerifyToken": VERIFY_TOKEN, "appSecret": APP_SECRET}


async def inline(fn, *args):
    """The store's offload for tests under autojump_clock: run in the event loop, so the clock
    only jumps when all is idle."""
    return fn(*args)


def webhook_url(server) -> str:
    return server.api + "/channels/whatsapp/webhook"


async def stored(server, jid: str, count: int = 0) -> list[dict]:
    """A chat's stored messages, newest first; with `count`, once there are at least that many."""
    with trio.fail_after(10):
        while len(rows := (await server.client.get(f"/channels/chats/{jid}/messages")).json()["messages"]) < count:
            await trio.sleep(0.01)
    return rows


# -- fixtures (import them by name into a test module) ----------------------------------------


@pytest.fixture
async def tg(nursery):
    return await nursery.start(serve_fake_telegram)


@pytest.fixture
async def slack(nursery):
    return await nursery.start(serve_fake_slack)


@pytest.fixture
async def discord(nursery):
    return await nursery.start(serve_fake_discord)


@pytest.fixture
async def wa(nursery):
    return await nursery.start(serve_fake_whatsapp)


@pytest.fixture
async def timed_server(nursery, settings):
    """The server for tests under autojump_clock (its clock is trio's, its store offloaded inline)."""
    server = await start_server(nursery, settings, clock=Clock(start=1_700_000_000), offload=inline)
    yield server
    await server.client.aclose()


@pytest.fixture
def webhook(server) -> str:
    return webhook_url(server)


@pytest.fixture
def notified(server):
    """Groups the router told the supervisor about (the real notify runs as well)."""
    supervisor = server.services.supervisor
    calls, real = [], supervisor.notify

    def record(group: str) -> None:
        calls.append(group)
        real(group)

    supervisor.notify = record
    return calls


# -- drivers ------------------------------------------------------------------------------------


class Driver:
    """One platform as the contract suite sees it. Chat ids are the platform's own (the part
    of a JID after the prefix)."""

    name: str
    prefix: str
    serve_fake: Any  # the fake's serve function, a staticmethod
    setting: str  # the Settings field of the platform's API base
    credentials: dict[str, Any]
    account: str
    masked: dict[str, Any]  # the credentials as answers show them
    bad_validate: tuple[dict[str, Any], str]  # credentials, and the exact reason validate gives
    bad_connect: tuple[dict[str, Any], tuple[str, ...]]  # credentials, and what connect's 400 says
    max_length: int
    long_lines: int  # lines of 100 characters in a text that takes exactly two messages
    group: str  # a chat the bot shares with others
    direct: str | None  # a one-to-one chat, None when the platform has no groups to tell apart
    mention: str  # how a message addresses the bot in a group
    retry_after: float | None  # seconds a scripted 429 on send asks for; None: the fake cannot

    def __repr__(self) -> str:
        return self.name

    def jid(self, chat: str) -> str:
        return f"{self.prefix}:{chat}"

    async def serve(self, nursery: trio.Nursery) -> Any:
        return await nursery.start(self.serve_fake)

    def settings(self, tmp_path, fake, **overrides) -> Settings:
        return make_settings(tmp_path, **{self.setting: fake.api_url}, **overrides)

    async def connect(self, server, fake) -> dict:
        """Connect the server with good credentials; returns once the platform link is up."""
        answer = await server.client.post(f"/channels/{self.name}/connect", json=self.credentials)
        assert answer.status_code == 200, answer.text
        await self.ready(fake)
        await self.wait_connected(server)
        return answer.json()

    async def wait_connected(self, server) -> None:
        with trio.fail_after(10):
            while not (await server.client.get(f"/channels/{self.name}")).json()["connected"]:
                await trio.sleep(0.01)

    async def ready(self, fake) -> None:
        """Wait until the server talks to the platform (polls, a live socket)."""

    async def relinked(self, server, fake, opened: int) -> None:
        """Wait until the server opened its link to the platform again (`opened` times before) and
        says it is connected."""
        await fake.wait_for(lambda: self.opened(fake) > opened)
        await self.wait_connected(server)

    async def drop(self, fake) -> None:
        """Have the platform break the link (the socket closes, a poll fails); returns once it broke."""
        raise NotImplementedError

    async def push(self, server, fake, chat: str, text: str, *, direct: bool = False, mention: bool = False) -> str:
        """Have a person send `text` (led by the bot's mention with `mention`) to a chat; returns
        the text once the server stored it."""
        text = f"{self.mention} {text}" if mention else text
        before = len(await stored(server, self.jid(chat)))
        await self._push(server, fake, chat, text, direct=direct, mention=mention)
        await stored(server, self.jid(chat), before + 1)
        return text

    async def _push(self, server, fake, chat: str, text: str, *, direct: bool, mention: bool) -> None:
        raise NotImplementedError

    def sent(self, fake) -> list[tuple[str, str]]:
        """(chat id, text) of every text message the platform was asked to send."""
        raise NotImplementedError

    def opened(self, fake) -> int:
        """How many times the server opened its link to the platform (polls, sockets)."""
        return 0

    def fail_send(self, fake, seconds: float) -> None:
        """Answer the next send with 429, asking for `seconds` of patience."""
        raise NotImplementedError

    def refuse_send(self, fake, reason: str) -> None:
        """Refuse the next send for good (a 4xx), saying `reason` the platform's way."""
        raise NotImplementedError

    def unavailable(self, fake, times: int) -> None:
        """Answer the next `times` sends with the platform's way of saying "try again later" (5xx)."""
        raise NotImplementedError

    def send_times(self, fake) -> list[float]:
        """trio.current_time() of every send call the platform saw."""
        raise NotImplementedError

    def after_validate(self, fake) -> None:
        """What validating good credentials asked of the platform."""

    def after_connect(self, fake) -> None:
        """What connecting opened on the platform."""

    async def closed_cleanly(self, fake) -> None:
        """After a disconnect or a shutdown: the link to the platform was closed as it should be."""

    async def after_disconnect(self, server, fake) -> None:
        """After a disconnect: nothing reaches the server from the platform any more."""


class TelegramDriver(Driver):
    name, prefix, setting = "telegram", "tg", "telegram_api_base"
    serve_fake = staticmethod(serve_fake_telegram)
    credentials = {"token": TELEGRAM_TOKEN}
    account = "@andy_test_bot"
    masked = {"token": "****" + TELEGRAM_TOKEN[-4:]}
    bad_validate = ({"token": "999999:nope-this-is-not-a-token"}, "401 Unauthorized")
    bad_connect = ({"token": "999999:nope-this-is-not-a-token"}, ("401 Unauthorized",))
    max_length, long_lines = 4096, 50
    group, direct, mention = "-1001234", "42", f"@{TELEGRAM_BOT['username']}"
    retry_after = 7

    async def ready(self, fake) -> None:
        await fake.wait_for(lambda: len(fake.calls_of("getUpdates")) >= 1)

    async def _push(self, server, fake, chat, text, *, direct, mention) -> None:
        fake.push_message(int(chat), text, chat_type="private" if direct else "group")

    def sent(self, fake):
        return [(m["chat_id"], m["text"]) for m in fake.sent]

    def opened(self, fake) -> int:
        return len(fake.calls_of("getUpdates"))

    def fail_send(self, fake, seconds):
        fake.fail_next("sendMessage", 429, f"Too Many Requests: retry after {seconds}", retry_after=seconds)

    def refuse_send(self, fake, reason):
        fake.fail_next("sendMessage", 400, f"Bad Request: {reason}")

    def unavailable(self, fake, times):
        fake.fail_next("sendMessage", 502, times=times)

    async def drop(self, fake) -> None:
        polls = len(fake.calls_of("getUpdates"))
        fake.fail_next("getUpdates", 500)
        fake.push_update(edited_message={})  # ends the poll in flight; the next one fails
        await fake.wait_for(lambda: len(fake.calls_of("getUpdates")) > polls)

    def send_times(self, fake):
        return [c.at for c in fake.calls_of("sendMessage")]

    def after_validate(self, fake) -> None:
        assert fake.calls_of("getMe")[0].token == TELEGRAM_TOKEN


class SlackDriver(Driver):
    name, prefix, setting = "slack", "slack", "slack_api_base"
    serve_fake = staticmethod(serve_fake_slack)
    credentials = {"botToken": BOT_TOKEN, "appToken": APP_TOKEN}
    account = "@andy (Test Team)"
    masked = {"botToken": "****" + BOT_TOKEN[-4:], "appToken": "****" + APP_TOKEN[-4:]}
    bad_validate = ({"botToken": "xoxb-wrong", "appToken": APP_TOKEN}, "invalid_auth (auth.test)")
    bad_connect = ({"botToken": BOT_TOKEN, "appToken": "xapp-1-wrong"}, ("invalid_auth", "apps.connections.open"))
    max_length, long_lines = 40000, 450
    group, direct, mention = "C7", "D7", f"<@{BOT_USER}>"
    retry_after = 7

    def __init__(self) -> None:
        self._ts = itertools.count(1)

    async def ready(self, fake) -> None:
        await fake.wait_for(lambda: fake.live_socket() is not None)

    async def _push(self, server, fake, chat, text, *, direct, mention) -> None:
        # A mention comes as the app_mention event an app subscribes to.
        event = message_event(channel=chat, text=text, ts=f"{1_700_000_000 + next(self._ts)}.000100",
                              kind="app_mention" if mention else "message")
        envelope = await fake.push_event(event)
        await fake.wait_for(lambda: envelope in fake.acks)

    def sent(self, fake):
        return [(p["channel"], p["text"]) for p in fake.posted]

    def opened(self, fake) -> int:
        return len(fake.sockets)

    def fail_send(self, fake, seconds):
        fake.fail_next("chat.postMessage", 429, {"ok": False, "error": "ratelimited"},
                       headers={"Retry-After": str(seconds)})

    def refuse_send(self, fake, reason):
        fake.fail_next("chat.postMessage", 200, {"ok": False, "error": reason})

    def unavailable(self, fake, times):
        for _ in range(times):  # Slack says it with HTTP 200 and an error
            fake.fail_next("chat.postMessage", 200, {"ok": False, "error": "service_unavailable"})

    async def drop(self, fake) -> None:
        socket = fake.live_socket()
        await fake.close_socket(1001)
        await fake.wait_for(lambda: socket.closed)

    def send_times(self, fake):
        return [c.at for c in fake.calls_of("chat.postMessage")]

    def after_validate(self, fake) -> None:
        assert [c.method for c in fake.calls] == ["auth.test", "apps.connections.open"]
        assert [c.token for c in fake.calls] == [BOT_TOKEN, APP_TOKEN]

    def after_connect(self, fake) -> None:
        assert len(fake.sockets) == 1

    async def closed_cleanly(self, fake) -> None:
        await fake.wait_for(lambda: fake.sockets[0].closed, timeout=1)
        assert fake.sockets[0].close_code == 1000

    async def after_disconnect(self, server, fake) -> None:
        # disconnect returned after the task ended: nothing connects again.
        assert len(fake.sockets) == 1 and fake.tickets == {"ticket-1"}


class DiscordDriver(Driver):
    name, prefix, setting = "discord", "dc", "discord_api_base"
    serve_fake = staticmethod(serve_fake_discord)
    credentials = {"token": DISCORD_TOKEN}
    account = "@andy"
    masked = {"token": "****" + DISCORD_TOKEN[-4:]}
    bad_validate = ({"token": "nope"}, "401: Unauthorized")
    bad_connect = ({"token": "wrong-token"}, ("401: Unauthorized",))
    max_length, long_lines = 2000, 25
    group, direct, mention = "121", "131", f"<@{DISCORD_BOT['id']}>"
    retry_after = 6.5

    async def ready(self, fake) -> None:
        await fake.wait_for(lambda: fake.session is not None and fake.live() is not None)

    async def _push(self, server, fake, chat, text, *, direct, mention) -> None:
        extra = {"guild_id": None} if direct else {}
        await fake.dispatch_message(channel_id=chat, content=text, mention_bot=mention, **extra)

    def sent(self, fake):
        return [(m["channel_id"], m["content"]) for m in fake.sent]

    def opened(self, fake) -> int:
        return len(fake.connections)

    def fail_send(self, fake, seconds):
        fake.fail_next("messages", 429, {"message": "You are being rate limited.", "retry_after": seconds,
                                         "global": False})

    def refuse_send(self, fake, reason):
        fake.fail_next("messages", 400, {"message": reason, "code": 10003})

    def unavailable(self, fake, times):
        for _ in range(times):
            fake.fail_next("messages", 502, {"message": "502: Bad Gateway", "code": 0})

    async def drop(self, fake) -> None:
        connection = fake.live()
        await fake.close_socket(4000)
        await fake.wait_for(lambda: connection.closed)

    def send_times(self, fake):
        return [at for at, method, path in fake.calls if method == "POST" and path.endswith("/messages")]

    def after_validate(self, fake) -> None:
        assert fake.connections == []

    def after_connect(self, fake) -> None:
        gateway = fake.connections[0]
        assert gateway.path == "/" and gateway.query == {"v": ["10"], "encoding": ["json"]}
        [identify] = gateway.ops(2)
        assert identify["d"]["token"] == DISCORD_TOKEN and identify["d"]["intents"] == DISCORD_INTENTS

    async def closed_cleanly(self, fake) -> None:
        await fake.wait_for(lambda: fake.connections[0].closed, timeout=1)
        assert fake.connections[0].close_code == 1000

    async def after_disconnect(self, server, fake) -> None:
        assert len(fake.connections) == 1


class WhatsAppDriver(Driver):
    name, prefix, setting = "whatsapp", "wa", "whatsapp_api_base"
    serve_fake = staticmethod(serve_fake_whatsapp)
    credentials = WHATSAPP_CREDENTIALS
    account = "Test Business (+1 555-010-0000)"
    masked = {"phoneNumberId": PHONE_NUMBER_ID, "accessToken": "****" + ACCESS_TOKEN[-4:],
              "webhookVerifyToken": "****" + VERIFY_TOKEN[-4:], "appSecret": "****" + APP_SECRET[-4:]}
    bad_validate = (WHATSAPP_CREDENTIALS | {"accessToken": "EAAG-wrong"},
                    "401 Invalid OAuth access token - Cannot parse access token")
    bad_connect = (WHATSAPP_CREDENTIALS | {"accessToken": "EAAG-wrong"}, ("Invalid OAuth access token",))
    max_length, long_lines = 4096, 50
    # The Cloud API has one-to-one chats only, every message addressed to the bot.
    group, direct, mention = "15551230000", None, ""
    retry_after = None

    def __init__(self) -> None:
        self._ids = itertools.count(1)

    async def _push(self, server, fake, chat, text, *, direct, mention) -> None:
        answer = await fake.deliver(webhook_url(server), text_delivery(chat, text, f"wamid.C{next(self._ids)}"))
        assert answer.status_code == 200, answer.text

    def sent(self, fake):
        return [(m["to"], m["text"]["body"]) for m in fake.sent if m["type"] == "text"]

    async def relinked(self, server, fake, opened: int) -> None:
        await self.wait_connected(server)  # deliveries come to the webhook: there is no link to open

    def refuse_send(self, fake, reason):
        fake.fail_next(400, {"message": f"(#100) {reason}", "type": "OAuthException", "code": 100})

    def unavailable(self, fake, times):
        for _ in range(times):
            fake.fail_next(503, {"message": "(#2) Service temporarily unavailable", "type": "OAuthException",
                                 "code": 2})

    def send_times(self, fake):
        return [at for at, method, path in fake.calls if method == "POST" and path.endswith("/messages")]

    async def after_disconnect(self, server, fake) -> None:
        # The webhook is closed: a delivery is refused and nothing is stored.
        answer = await fake.deliver(webhook_url(server), text_delivery(self.group, "hello?", "wamid.A1"))
        assert answer.status_code == 403
        assert await stored(server, self.jid(self.group)) == []


TELEGRAM, SLACK, DISCORD, WHATSAPP = DRIVERS = [TelegramDriver(), SlackDriver(), DiscordDriver(), WhatsAppDriver()]
