"""Telegram Bot API: getUpdates long polling in, sendMessage out. JIDs are tg:<chat id>."""
from __future__ import annotations

import logging
import re
from typing import Any

import httpx
import trio
from pydantic import Field

from nanoclaw.channels._base import TOKEN_CHARS, Adapter, Inbound, Link, PlatformError, call_json, number, with_code
from nanoclaw.channels._format import telegram_html
from nanoclaw.channels._media import Download, MediaRef, TooLarge
from nanoclaw.groupfiles import OutFile
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
    typing_interval = 4.0  # a chat action shows for about 5 s
    can_edit = True

    async def call(self, http: httpx.AsyncClient, token: str, method: str, params: dict | None = None, *,
                   timeout: float | None = None, files: dict | None = None) -> Any:
        """One Bot API method; the `result` on success, PlatformError otherwise. With `files`
        the call is a multipart form."""
        body: dict[str, Any] = {"json": params or {}} if files is None else {"data": params or {}, "files": files}
        if timeout is not None:
            body["timeout"] = httpx.Timeout(timeout, connect=10.0)
        answer = await call_json(http, "POST", f"{self.api_base}/bot{token}/{method}", platform="Telegram",
                                 refusal=_refusal, secrets=(token,), **body)
        return answer.get("result")

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
        text = message.get("text") or message.get("caption") or ""
        sender = message.get("from") or {}
        media = _media(message)
        if not (text or media) or sender.get("id") == me["id"]:
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
            media=media,
        )

    def format_refused(self, exc: PlatformError) -> bool:
        return exc.status == 400 and "parse" in exc.reason.lower()

    def _text(self, chat_jid: str, text: str, plain: bool) -> dict[str, Any]:
        if plain:
            return {"chat_id": self.chat_id(chat_jid), "text": text}
        return {"chat_id": self.chat_id(chat_jid), "text": telegram_html(text), "parse_mode": "HTML"}

    async def send(self, http: httpx.AsyncClient, credentials: dict[str, Any], chat_jid: str, text: str, *,
                   plain: bool = False) -> str | None:
        sent = await self.call(http, credentials["token"], "sendMessage", self._text(chat_jid, text, plain))
        return str(sent["message_id"]) if isinstance(sent, dict) and "message_id" in sent else None

    async def edit(self, http: httpx.AsyncClient, credentials: dict[str, Any], chat_jid: str, message_id: str,
                   text: str, *, plain: bool = False) -> None:
        try:
            await self.call(http, credentials["token"], "editMessageText",
                            self._text(chat_jid, text, plain) | {"message_id": int(message_id)})
        except PlatformError as exc:
            if not (exc.status == 400 and "not modified" in exc.reason):
                raise

    async def typing(self, http: httpx.AsyncClient, credentials: dict[str, Any], chat_jid: str) -> None:
        await self.call(http, credentials["token"], "sendChatAction",
                        {"chat_id": self.chat_id(chat_jid), "action": "typing"})

    async def media_source(self, http: httpx.AsyncClient, credentials: dict[str, Any], media: MediaRef) -> Download:
        token = credentials["token"]
        try:
            found = await self.call(http, token, "getFile", {"file_id": media.ref})
        except PlatformError as exc:
            if "too big" in exc.reason:  # the Bot API hands out files up to 20 MB only
                raise TooLarge() from None
            raise
        path = found.get("file_path") if isinstance(found, dict) else None
        if not isinstance(path, str) or not path:
            raise PlatformError("getFile gave no file_path (the file may be over the Bot API's 20 MB)", status=400)
        return Download(f"{self.api_base}/file/bot{token}/{path.lstrip('/')}", secrets=(token,))

    async def send_file(self, http: httpx.AsyncClient, credentials: dict[str, Any], chat_jid: str, file: OutFile,
                        caption: str | None) -> None:
        method, field = ("sendPhoto", "photo") if file.kind == "image" else ("sendDocument", "document")
        params = {"chat_id": self.chat_id(chat_jid), **({"caption": caption} if caption else {})}
        await self.call(http, credentials["token"], method, params,
                        files={field: (file.name, file.data, file.mime_type)})


def _refusal(response: httpx.Response, answer: Any) -> PlatformError | None:
    """Bot API answers are {ok, result} or {ok: false, error_code, description, parameters.retry_after}."""
    if not isinstance(answer, dict):
        return PlatformError(f"{response.status_code} {response.reason_phrase}: not a Bot API answer",
                             status=response.status_code)
    if answer.get("ok"):
        return None
    code = answer.get("error_code") or response.status_code
    return PlatformError(with_code(code, str(answer.get("description") or response.reason_phrase)), status=code,
                         retry_after=number((answer.get("parameters") or {}).get("retry_after")))


def _media(message: dict) -> list[MediaRef]:
    """The file a message carries (Telegram messages carry at most one)."""
    if message.get("photo"):
        largest = max(message["photo"], key=lambda p: p.get("width", 0) * p.get("height", 0))
        return [MediaRef("image", largest["file_id"], "photo.jpg", "image/jpeg")]
    defaults = {"document": ("document", None), "voice": ("voice", "voice.ogg"), "audio": ("audio", None),
                "video": ("video", "video.mp4"), "video_note": ("video", "video.mp4"),
                "animation": ("video", "animation.mp4")}
    for field, (kind, name) in defaults.items():
        item = message.get(field)
        if isinstance(item, dict) and item.get("file_id"):
            mime = item.get("mime_type")
            if kind == "document" and isinstance(mime, str) and mime.startswith("image/"):
                kind = "image"
            return [MediaRef(kind, str(item["file_id"]), item.get("file_name") or name, mime)]
    return []
