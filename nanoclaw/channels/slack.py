"""Slack: Socket Mode (a WebSocket we open, so no public URL) in, chat.postMessage out.
JIDs are slack:<channel id>; senders slack:<user id>."""
from __future__ import annotations

import json
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import Field
from trio_websocket import ConnectionClosed

from nanoclaw.channels._base import TOKEN_CHARS, Adapter, Inbound, Link, PlatformError, call_json, header_seconds
from nanoclaw.channels._format import slack_mrkdwn
from nanoclaw.channels._media import Download, MediaRef, media_kind
from nanoclaw.groupfiles import OutFile
from nanoclaw.channels._websocket import close_code, open_socket
from nanoclaw.models import Strict

# Web API errors (answered with HTTP 200) that say "try again later", not "you are wrong".
TRANSIENT_ERRORS = {"internal_error", "fatal_error", "service_unavailable", "request_timeout", "ratelimited"}
# Message subtypes that still carry a person's new text; every other subtype (edits,
# deletions, joins, bot messages) is not a message to answer.
TEXT_SUBTYPES = {None, "thread_broadcast", "file_share"}


class SlackCredentials(Strict):
    botToken: str = Field(max_length=500, pattern=f"^xoxb-{TOKEN_CHARS}$", description="Bot User OAuth Token (xoxb-...)")
    appToken: str = Field(max_length=500, pattern=f"^xapp-{TOKEN_CHARS}$",
                          description="App-level token with connections:write, for Socket Mode (xapp-...)")


class Slack(Adapter):
    name = "slack"
    prefix = "slack"
    # chat.postMessage truncates text past 40,000 characters.
    max_length = 40000
    credentials_model = SlackCredentials

    async def call(self, http: httpx.AsyncClient, token: str, method: str, params: dict | None = None, *,
                   form: bool = False) -> dict:
        """One Web API method (a form post when `form`); the answer when it says ok, PlatformError otherwise."""
        body = {"data": params or {}} if form else {"json": params or {}}
        return await call_json(http, "POST", f"{self.api_base}/{method}", platform="Slack",
                               refusal=partial(_refusal, method), secrets=(token,),
                               headers={"Authorization": f"Bearer {token}"}, **body)

    async def validate(self, http: httpx.AsyncClient, credentials: dict[str, Any]) -> str:
        me = await self.call(http, credentials["botToken"], "auth.test")
        # Proves the app token can open Socket Mode connections (the URL is left unused).
        await self.call(http, credentials["appToken"], "apps.connections.open")
        return _account(me)

    async def run(self, http: httpx.AsyncClient, credentials: dict[str, Any], link: Link) -> None:
        me = await self.call(http, credentials["botToken"], "auth.test")
        while True:
            # Every connection needs a fresh URL; an envelope not acknowledged on the old
            # one is delivered again on the new one, so nothing is lost in between.
            opened = await self.call(http, credentials["appToken"], "apps.connections.open")
            await self._connection(opened["url"], me, link)

    async def _connection(self, url: str, me: dict, link: Link) -> None:
        """Handle frames until Slack asks us to reconnect; PlatformError when the socket drops."""
        async with open_socket(url, "the Slack socket") as ws:
            try:
                while True:
                    frame = json.loads(await ws.get_message())
                    if frame.get("envelope_id"):
                        # Slack redelivers what is not acknowledged within 3 s: first the ack.
                        await ws.send_message(json.dumps({"envelope_id": frame["envelope_id"]}))
                    kind = frame.get("type")
                    if kind == "hello":
                        await link.connected(_account(me))
                        link.healthy()
                    elif kind == "disconnect":
                        return
                    elif kind == "events_api":
                        event = (frame.get("payload") or {}).get("event") or {}
                        if event.get("type") in ("message", "app_mention"):
                            await self._message(event, me["user_id"], link)
            except ConnectionClosed as exc:
                raise PlatformError(f"Slack closed the socket (code {close_code(exc)})") from None

    async def _message(self, event: dict, bot_user: str, link: Link) -> None:
        user, text, channel = event.get("user"), event.get("text") or "", event.get("channel")
        media = [MediaRef(media_kind(f.get("mimetype")), str(f["url_private"]), f.get("name"), f.get("mimetype"))
                 for f in event.get("files") or [] if isinstance(f, dict) and f.get("url_private")]
        if (event.get("bot_id") or event.get("subtype") not in TEXT_SUBTYPES or not user or user == bot_user
                or not channel or not (text.strip() or media)):
            return
        direct = event.get("channel_type") == "im" or channel.startswith("D")
        profile = event.get("user_profile") or {}
        await link.deliver(Inbound(
            channel=self.name,
            chat_jid=f"slack:{channel}",
            sender_jid=f"slack:{user}",
            sender_name=profile.get("display_name") or profile.get("real_name") or user,
            text=text,
            timestamp=float(event["ts"]),
            # A mention arrives twice (message and app_mention) with the same ts: stored once.
            external_id=f"{channel}:{event['ts']}",
            is_group=not direct,
            addressed=event["type"] == "app_mention" or direct or f"<@{bot_user}>" in text,
            media=media,
        ))

    async def send(self, http: httpx.AsyncClient, credentials: dict[str, Any], chat_jid: str, text: str, *,
                   plain: bool = False) -> str | None:
        sent = await self.call(http, credentials["botToken"], "chat.postMessage",
                               {"channel": self.chat_id(chat_jid), "text": text if plain else slack_mrkdwn(text)})
        return sent.get("ts")

    async def media_source(self, http: httpx.AsyncClient, credentials: dict[str, Any], media: MediaRef) -> Download:
        # The bot token goes only to Slack's own hosts (or wherever the API itself is).
        host = urlsplit(media.ref).hostname or ""
        if not (host == "slack.com" or host.endswith(".slack.com") or host == urlsplit(self.api_base).hostname):
            raise PlatformError(f"a file URL outside Slack ({host}) was not fetched", status=400)
        token = credentials["botToken"]
        return Download(media.ref, {"Authorization": f"Bearer {token}"}, (token,))

    async def send_file(self, http: httpx.AsyncClient, credentials: dict[str, Any], chat_jid: str, file: OutFile,
                        caption: str | None) -> None:
        token = credentials["botToken"]
        slot = await self.call(http, token, "files.getUploadURLExternal",
                               {"filename": file.name, "length": str(len(file.data))}, form=True)
        await call_json(http, "POST", slot["upload_url"], platform="Slack", refusal=_upload_refusal,
                        secrets=(token,), files={"file": (file.name, file.data, file.mime_type)})
        await self.call(http, token, "files.completeUploadExternal", {
            "files": [{"id": slot["file_id"], "title": file.name}], "channel_id": self.chat_id(chat_jid),
            **({"initial_comment": caption} if caption else {})})


def _refusal(method: str, response: httpx.Response, answer: Any) -> PlatformError | None:
    """Web API answers are {ok, ...} or {ok: false, error} (with HTTP 200); a 429 says Retry-After."""
    if response.status_code == 429:
        return PlatformError(f"{method}: 429 rate limited", status=429, retry_after=header_seconds(response))
    if not isinstance(answer, dict):
        return PlatformError(f"{method}: {response.status_code} {response.reason_phrase}: not a Web API answer",
                             status=response.status_code)
    if answer.get("ok"):
        return None
    error = str(answer.get("error") or "unknown_error")
    status = 503 if error in TRANSIENT_ERRORS else max(response.status_code, 400)
    return PlatformError(f"{error} ({method})", status=status)


def _upload_refusal(response: httpx.Response, answer: Any) -> PlatformError | None:
    """The upload URL answers plain text ("OK - 1"); only its status says how it went."""
    if response.is_success:
        return None
    return PlatformError(f"the file upload answered {response.status_code} {response.reason_phrase}",
                         status=response.status_code)


def _account(me: dict) -> str:
    return f"@{me['user']} ({me['team']})" if me.get("team") else f"@{me['user']}"
