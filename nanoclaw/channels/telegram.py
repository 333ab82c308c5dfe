"""Telegram Bot API: getUpdates long polling in, sendMessage out. JIDs are tg:<chat id>."""
from __future__ import annotations

import logging
import re
from typing import Any

import httpx
import trio
from pydantic import Field

from nanoclaw.channels._base import TOKEN_CHARS, Adapter, Inbound, Link, PlatformError, network_error
from nanoclaw.models import Strict

log = logging.getLogger("nanoclaw.channels.telegram")

POLL_TIMEOUT = 30
# The HTTP read timeout of a long poll: the poll itself plus time for the answer.
POLL_READ_TIMEOUT = POLL_TIMEOUT + 15


class TelegramCredentials(Strict):
    token: str = Field(min_length=1, max_length=200, pattern=f"^{TOKEN_CHARS}$", description="Bot token from @BotFather")


class Telegram(Adapter):
    name = "telegram"
    prefix = "tg"
    max_length = 4096
    credentials_model = TelegramCredentials

    def __init__(self, api_base: str) -> None:
        self.api_base = api_base.rstrip("/")

    async def call(self, http: httpx.AsyncClient, token: str, method: str, params: dict | None = None, *,
                   timeout: float | None = None) -> Any:
        """One Bot API method; the `result` on success, PlatformError otherwise."""
        url = f"{self.api_base}/bot{token}/{method}"
        try:
            if timeout is None:
                response = await http.post(url, json=params or {})
            else:
                response = await http.post(url, json=params or {}, timeout=httpx.Timeout(timeout, connect=10.0))
        except httpx.HTTPError as exc:
            raise network_error("Telegram", exc, token) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise PlatformError(f"{response.status_code} {response.reason_phrase}: not a Bot API answer",
                                status=response.status_code)
        if body.get("ok"):
            return body.get("result")
        code = body.get("error_code") or response.status_code
        description = str(body.get("description") or response.reason_phrase)
        if not description.startswith(str(code)):
            description = f"{code} {description}"
        retry_after = (body.get("parameters") or {}).get("retry_after")
        raise PlatformError(description.replace(token, "****"), status=code,
                            retry_after=float(retry_after) if isinstance(retry_after, (int, float)) else None)

    async def validate(self, http: httpx.AsyncClient, credentials: dict[str, Any]) -> str:
        me = await self.call(http, credentials["token"], "getMe")
        return f"@{me['username']}"

    async def run(self, http: httpx.AsyncClient, credentials: dict[str, Any], link: Link) -> None:
        token = credentials["token"]
        me = await self.call(http, token, "getMe")
        await link.connected(f"@{me['username']}")
        mention = re.compile(rf"(?<!\w)@{re.escape(me['username'])}(?!\w)", re.IGNORECASE)
        offset = int(await link.load("offset") or 0)
        while True:
            try:
                updates = await self.call(
                    http, token, "getUpdates",
                    {"offset": offset, "timeout": POLL_TIMEOUT, "allowed_updates": ["message"]},
                    timeout=POLL_READ_TIMEOUT,
                )
            except PlatformError as exc:
                if exc.status == 429 and exc.retry_after is not None:
                    await trio.sleep(exc.retry_after)
                    continue
                raise
            link.healthy()
            for update in updates:
                try:
                    event = self._read(update, me, mention)
                except (KeyError, TypeError, ValueError, AttributeError):
                    # Retrying cannot fix it: skip it rather than stall the chat behind it.
                    log.warning("skipped a malformed Telegram update %s", update.get("update_id"))
                    event = None
                if isinstance(event, Inbound):
                    await link.deliver(event)
                elif event is not None:
                    await link.move_chat(*event)
                # Only after the message is stored: a restart before this line gets it again
                # (and the store's dedupe ignores it), one after it never sees it twice.
                offset = update["update_id"] + 1
                await link.save("offset", str(offset))

    def _read(self, update: dict, me: dict, mention: re.Pattern) -> Inbound | tuple[str, str] | None:
        """An update as an inbound message, a chat move (old JID, new JID), or None to ignore."""
        message = update.get("message")
        if message is None:
            return None
        chat = message["chat"]
        jid = f"tg:{chat['id']}"
        if message.get("migrate_to_chat_id") is not None:
            return jid, f"tg:{message['migrate_to_chat_id']}"
        if message.get("migrate_from_chat_id") is not None:
            return f"tg:{message['migrate_from_chat_id']}", jid
        text = message.get("text") or message.get("caption")
        sender = message.get("from") or {}
        if not text or sender.get("id") == me["id"]:
            return None
        private = chat.get("type") == "private"
        reply_to = (message.get("reply_to_message") or {}).get("from") or {}
        name = " ".join(p for p in (sender.get("first_name"), sender.get("last_name")) if p)
        return Inbound(
            channel=self.name,
            chat_jid=jid,
            sender_jid=f"tg:{sender.get('id', chat['id'])}",
            sender_name=name or sender.get("username") or str(sender.get("id", "")),
            text=str(text),
            timestamp=float(message.get("date", 0)),
            external_id=f"{chat['id']}:{message['message_id']}",
            chat_name=chat.get("title") or name or None,
            is_group=not private,
            addressed=private or bool(mention.search(text)) or reply_to.get("id") == me["id"],
        )

    async def send(self, http: httpx.AsyncClient, credentials: dict[str, Any], chat_jid: str, text: str) -> None:
        await self.call(http, credentials["token"], "sendMessage", {"chat_id": self.chat_id(chat_jid), "text": text})
