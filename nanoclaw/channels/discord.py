"""Discord: the Gateway (a WebSocket we open) in, REST channel messages out.
JIDs are dc:<channel id>; senders dc:<user id>."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import random
from typing import Any

import httpx
import trio
from pydantic import Field
from trio_websocket import ConnectionClosed, WebSocketConnection

from nanoclaw.channels._base import TOKEN_CHARS, Adapter, Inbound, Link, PlatformError, call_json, number, with_code
from nanoclaw.channels._media import Download, MediaRef, media_kind
from nanoclaw.groupfiles import OutFile
from nanoclaw.channels._websocket import close_code, close_socket, open_socket
from nanoclaw.models import Strict

# Gateway opcodes.
DISPATCH, HEARTBEAT, IDENTIFY, RESUME, RECONNECT, INVALID_SESSION, HELLO, HEARTBEAT_ACK = 0, 1, 2, 6, 7, 9, 10, 11
INTENTS = (1 << 9) | (1 << 12) | (1 << 15)  # GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT
# Closing with 1000/1001 ends the Discord session; any other code keeps it resumable.
RESUMABLE_CLOSE = 4000
# Close codes after which connecting again with the same token cannot help.
FATAL_CLOSE_CODES = {
    4004: "authentication failed",
    4010: "invalid shard",
    4011: "sharding required",
    4012: "invalid API version",
    4013: "invalid intents",
    4014: "disallowed intents (enable the Message Content intent in the Developer Portal)",
}
# Close codes after which the session cannot be resumed (a fresh IDENTIFY is needed).
SESSION_LOST_CLOSE_CODES = {4007, 4009}


class DiscordCredentials(Strict):
    token: str = Field(min_length=1, max_length=200, pattern=f"^{TOKEN_CHARS}$",
                       description="Bot token from the Developer Portal")


@dataclasses.dataclass
class _Session:
    """What a dropped connection needs to RESUME instead of starting over."""

    gateway_url: str
    bot_id: str
    session_id: str | None = None
    resume_url: str | None = None
    seq: int | None = None
    # READY or RESUMED came on the current connection.
    up: bool = False

    def forget(self) -> None:
        self.session_id = self.resume_url = self.seq = None
        self.up = False


class Discord(Adapter):
    name = "discord"
    prefix = "dc"
    max_length = 2000
    credentials_model = DiscordCredentials
    typing_interval = 8.0  # a typing trigger shows for about 10 s
    can_edit = True

    async def _api(self, http: httpx.AsyncClient, token: str, method: str, path: str, body: dict | None = None, *,
                   file: OutFile | None = None) -> Any:
        """One REST call; with `file`, a multipart message (payload_json + files[0])."""
        content: dict[str, Any] = {"json": body}
        if file is not None:
            content = {"data": {"payload_json": json.dumps(body)},
                       "files": {"files[0]": (file.name, file.data, file.mime_type)}}
        return await call_json(http, method, f"{self.api_base}/{path}", platform="Discord", refusal=_refusal,
                               secrets=(token,), headers={"Authorization": f"Bot {token}"}, **content)

    async def validate(self, http: httpx.AsyncClient, credentials: dict[str, Any]) -> str:
        return _account(await self._api(http, credentials["token"], "GET", "users/@me"))

    async def run(self, http: httpx.AsyncClient, credentials: dict[str, Any], link: Link) -> None:
        token = credentials["token"]
        me = await self._api(http, token, "GET", "users/@me")
        gateway = await self._api(http, token, "GET", "gateway/bot")
        session = _Session(gateway_url=gateway["url"], bot_id=str(me["id"]))
        while True:
            await self._connection(token, session, _account(me), link)

    async def _connection(self, token: str, session: _Session, account: str, link: Link) -> None:
        """One gateway connection. Returns when it ended after the session was up (the caller
        connects again at once, resuming); PlatformError when it ended before or for good."""
        resuming = session.session_id is not None
        base = session.resume_url if resuming and session.resume_url else session.gateway_url
        url = base.rstrip("/") + "/?v=10&encoding=json"
        session.up = False
        async with open_socket(url, "the Discord gateway") as ws:
            try:
                reason = await self._converse(ws, token, session, resuming, account, link)
            except ConnectionClosed as exc:
                code = close_code(exc)
                if code in FATAL_CLOSE_CODES:
                    raise PlatformError(f"Discord closed the gateway: {code} {FATAL_CLOSE_CODES[code]}") from None
                if code in SESSION_LOST_CLOSE_CODES:
                    session.forget()
                reason = f"Discord closed the gateway (code {code})"
        if not session.up:
            raise PlatformError(reason)

    async def _converse(self, ws: WebSocketConnection, token: str, session: _Session, resuming: bool,
                        account: str, link: Link) -> str:
        """Hello, IDENTIFY or RESUME, then heartbeats and dispatches until the connection should
        be left; returns why."""
        hello = await _receive(ws)
        if hello.get("op") != HELLO:
            raise PlatformError(f"the Discord gateway opened with op {hello.get('op')} instead of Hello")
        interval = hello["d"]["heartbeat_interval"] / 1000
        # The first beat comes at a random point of the first interval, so that many
        # clients reconnecting at once do not beat in step.
        next_beat = trio.current_time() + interval * random.random()
        acked = True
        identify_at = math.inf
        if resuming:
            await _send(ws, RESUME, {"token": token, "session_id": session.session_id, "seq": session.seq})
        else:
            await _send(ws, IDENTIFY, _identify(token))
        while True:
            event = None
            with trio.move_on_at(min(next_beat, identify_at)):
                event = await _receive(ws)
            now = trio.current_time()
            if now >= identify_at:
                identify_at = math.inf
                await _send(ws, IDENTIFY, _identify(token))
            if now >= next_beat:
                if not acked:
                    # A zombie connection: leave it and resume on a new one.
                    await close_socket(ws, RESUMABLE_CLOSE)
                    return "the Discord gateway stopped acknowledging heartbeats"
                acked = False
                await _send(ws, HEARTBEAT, session.seq)
                next_beat = now + interval
            if event is None:
                continue
            op = event.get("op")
            if op == DISPATCH:
                session.seq = event.get("s") or session.seq
                await self._dispatch(event.get("t"), event.get("d") or {}, session, account, link)
            elif op == HEARTBEAT:
                await _send(ws, HEARTBEAT, session.seq)
            elif op == HEARTBEAT_ACK:
                acked = True
            elif op == RECONNECT:
                await close_socket(ws, RESUMABLE_CLOSE)
                return "the Discord gateway asked us to reconnect"
            elif op == INVALID_SESSION:
                # Discord asks for a pause of 1-5 s before identifying again.
                session.forget()
                identify_at = now + random.uniform(1, 5)

    async def _dispatch(self, kind: str | None, data: dict, session: _Session, account: str, link: Link) -> None:
        if kind == "READY":
            session.session_id, session.resume_url = data["session_id"], data["resume_gateway_url"]
        if kind in ("READY", "RESUMED"):
            session.up = True
            await link.connected(account)
            link.healthy()
        elif kind == "MESSAGE_CREATE":
            await self._message(data, session.bot_id, link)

    async def _message(self, data: dict, bot_id: str, link: Link) -> None:
        author = data.get("author") or {}
        text = data.get("content") or ""
        media = [MediaRef(media_kind(a.get("content_type")), str(a["url"]), a.get("filename"), a.get("content_type"))
                 for a in data.get("attachments") or [] if isinstance(a, dict) and a.get("url")]
        if author.get("bot") or str(author.get("id")) == bot_id or not (text.strip() or media):
            return
        guild = data.get("guild_id")
        mentioned = any(str(user.get("id")) == bot_id for user in data.get("mentions") or [])
        await link.deliver(Inbound(
            channel=self.name,
            chat_jid=f"dc:{data['channel_id']}",
            sender_jid=f"dc:{author['id']}",
            sender_name=(data.get("member") or {}).get("nick") or author.get("global_name")
            or author.get("username") or str(author["id"]),
            text=text,
            timestamp=dt.datetime.fromisoformat(data["timestamp"]).timestamp(),
            external_id=str(data["id"]),
            is_group=guild is not None,
            addressed=guild is None or mentioned,
            media=media,
        ))

    # Discord shows Markdown as it is: `plain` changes nothing.
    async def send(self, http: httpx.AsyncClient, credentials: dict[str, Any], chat_jid: str, text: str, *,
                   plain: bool = False) -> str | None:
        sent = await self._api(http, credentials["token"], "POST", f"channels/{self.chat_id(chat_jid)}/messages",
                               {"content": text})
        return str(sent["id"]) if isinstance(sent, dict) and "id" in sent else None

    async def edit(self, http: httpx.AsyncClient, credentials: dict[str, Any], chat_jid: str, message_id: str,
                   text: str, *, plain: bool = False) -> None:
        await self._api(http, credentials["token"], "PATCH",
                        f"channels/{self.chat_id(chat_jid)}/messages/{message_id}", {"content": text})

    async def typing(self, http: httpx.AsyncClient, credentials: dict[str, Any], chat_jid: str) -> None:
        await self._api(http, credentials["token"], "POST", f"channels/{self.chat_id(chat_jid)}/typing")

    async def media_source(self, http: httpx.AsyncClient, credentials: dict[str, Any], media: MediaRef) -> Download:
        return Download(media.ref)  # attachment URLs are signed; the bot token is not sent

    async def send_file(self, http: httpx.AsyncClient, credentials: dict[str, Any], chat_jid: str, file: OutFile,
                        caption: str | None) -> None:
        await self._api(http, credentials["token"], "POST", f"channels/{self.chat_id(chat_jid)}/messages",
                        {"content": caption or "", "attachments": [{"id": 0, "filename": file.name}]}, file=file)


def _refusal(response: httpx.Response, answer: Any) -> PlatformError | None:
    """REST errors are 4xx/5xx with {message, code}; a 429 carries retry_after in the body."""
    if response.is_success:
        return None
    answer = answer if isinstance(answer, dict) else {}
    return PlatformError(with_code(response.status_code, str(answer.get("message") or response.reason_phrase)),
                         status=response.status_code, retry_after=number(answer.get("retry_after")))


def _account(me: dict) -> str:
    return f"@{me['username']}"


def _identify(token: str) -> dict:
    return {"token": token, "intents": INTENTS,
            "properties": {"os": "linux", "browser": "nanoclaw", "device": "nanoclaw"}}


async def _receive(ws: WebSocketConnection) -> dict:
    return json.loads(await ws.get_message())


async def _send(ws: WebSocketConnection, op: int, data: Any) -> None:
    await ws.send_message(json.dumps({"op": op, "d": data}))
