"""WhatsApp Cloud API: signed webhook deliveries in, Graph API messages out.
JIDs are wa:<phone number> (the Cloud API has one-to-one chats only)."""
from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import httpx
import trio
from pydantic import Field

from nanoclaw.channels._base import TOKEN_CHARS, Adapter, Inbound, Link, PlatformError, call_json, header_seconds
from nanoclaw.channels._format import whatsapp_text
from nanoclaw.channels._media import Download, MediaRef
from nanoclaw.groupfiles import OutFile
from nanoclaw.jsondepth import check_depth
from nanoclaw.models import Strict

SIGNATURE_HEADER = "X-Hub-Signature-256"
# Message types that carry a file, and what we call them.
MEDIA_TYPES = {"image": "image", "document": "document", "audio": "audio", "video": "video", "sticker": "image"}


class WhatsAppCredentials(Strict):
    phoneNumberId: str = Field(pattern=r"^[0-9]{1,30}$", description="The business phone number's id")
    accessToken: str = Field(min_length=1, max_length=1000, pattern=f"^{TOKEN_CHARS}$")
    webhookVerifyToken: str = Field(min_length=1, max_length=200, pattern=f"^{TOKEN_CHARS}$", description="Meta sends it back when subscribing")
    appSecret: str | None = Field(default=None, min_length=1, max_length=200, pattern=f"^{TOKEN_CHARS}$",
                                  description="Verifies the signature of each delivery; without it sending "
                                              "and webhook verification work, but deliveries are refused")


class BadSignature(Exception):
    pass


class NoAppSecret(BadSignature):
    """Connected without appSecret: no delivery can be verified."""


class WhatsApp(Adapter):
    name = "whatsapp"
    prefix = "wa"
    max_length = 4096
    credentials_model = WhatsAppCredentials
    public_fields = ("phoneNumberId",)

    def notice(self, credentials: dict[str, Any]) -> str:
        if credentials.get("appSecret"):
            return ""
        return ("; inbound messages are refused: no appSecret to verify them "
                "(connect again with appSecret from the Meta app's Basic settings)")

    async def _request(self, http: httpx.AsyncClient, credentials: dict[str, Any], method: str, path: str,
                       body: dict | None = None, *, file: OutFile | None = None) -> dict:
        """One Graph API call; with `file`, a multipart form of body's fields and the file."""
        token = credentials["accessToken"]
        content: dict[str, Any] = {"json": body}
        if file is not None:
            content = {"data": body, "files": {"file": (file.name, file.data, file.mime_type)}}
        return await call_json(http, method, f"{self.api_base}/{path}", platform="the WhatsApp Cloud API",
                               refusal=_refusal, secrets=(token,), headers={"Authorization": f"Bearer {token}"},
                               **content)

    async def validate(self, http: httpx.AsyncClient, credentials: dict[str, Any]) -> str:
        number = await self._request(http, credentials, "GET",
                                     f"{credentials['phoneNumberId']}?fields=display_phone_number,verified_name")
        name, phone = number.get("verified_name"), number.get("display_phone_number")
        return f"{name} ({phone})" if name and phone else str(name or phone or credentials["phoneNumberId"])

    async def run(self, http: httpx.AsyncClient, credentials: dict[str, Any], link: Link) -> None:
        # Deliveries come in through the webhook endpoint; this task only confirms the
        # number is still usable, so the status says the truth after a restart.
        await link.connected(await self.validate(http, credentials))
        link.healthy()
        await trio.sleep_forever()

    async def send(self, http: httpx.AsyncClient, credentials: dict[str, Any], chat_jid: str, text: str, *,
                   plain: bool = False) -> str | None:
        sent = await self._message(http, credentials, chat_jid, "text",
                                   {"body": text if plain else whatsapp_text(text)})
        ids = sent.get("messages") or [{}]
        return ids[0].get("id")

    async def _message(self, http: httpx.AsyncClient, credentials: dict[str, Any], chat_jid: str, kind: str,
                       content: dict) -> dict:
        return await self._request(http, credentials, "POST", f"{credentials['phoneNumberId']}/messages", {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": self.chat_id(chat_jid),
            "type": kind,
            kind: content,
        })

    async def media_source(self, http: httpx.AsyncClient, credentials: dict[str, Any], media: MediaRef) -> Download:
        if not media.ref.isdigit():
            raise PlatformError(f"not a WhatsApp media id: {media.ref[:40]!r}", status=400)
        found = await self._request(http, credentials, "GET", media.ref)
        if not isinstance(found.get("url"), str):
            raise PlatformError("the Graph API gave no URL for the media", status=400)
        token = credentials["accessToken"]
        return Download(found["url"], {"Authorization": f"Bearer {token}"}, (token,), found.get("mime_type"))

    async def send_file(self, http: httpx.AsyncClient, credentials: dict[str, Any], chat_jid: str, file: OutFile,
                        caption: str | None) -> None:
        uploaded = await self._request(http, credentials, "POST", f"{credentials['phoneNumberId']}/media",
                                       {"messaging_product": "whatsapp", "type": file.mime_type}, file=file)
        content = {"id": uploaded["id"], **({"caption": caption} if caption else {})}
        if file.kind != "image":
            content["filename"] = file.name
        await self._message(http, credentials, chat_jid, file.kind, content)

    # -- webhook ----------------------------------------------------------------

    @staticmethod
    def challenge(credentials: dict[str, Any], mode: str | None, token: str | None, challenge: str | None) -> str | None:
        """The text to answer a subscription check with, or None to refuse it."""
        if mode != "subscribe" or token is None or challenge is None:
            return None
        if not hmac.compare_digest(token.encode(), credentials["webhookVerifyToken"].encode()):
            return None
        return challenge

    @staticmethod
    def verify(credentials: dict[str, Any], raw: bytes, signature: str | None) -> None:
        """Raise BadSignature unless `signature` is Meta's HMAC-SHA256 of the raw body."""
        if not credentials.get("appSecret"):
            raise NoAppSecret("WhatsApp is connected without appSecret, so deliveries cannot be verified: "
                              "connect again with appSecret")
        if not signature or not signature.startswith("sha256="):
            raise BadSignature(f"missing {SIGNATURE_HEADER} header")
        expected = hmac.new(credentials["appSecret"].encode(), raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature[len("sha256="):].lower().encode(), expected.encode()):
            raise BadSignature(f"{SIGNATURE_HEADER} does not match the body")

    def parse(self, credentials: dict[str, Any], raw: bytes) -> list[Inbound]:
        """The text messages of a delivery to our number; ValueError when it is not a delivery."""
        check_depth(raw)  # a signed body can still nest deep enough to exhaust the parser
        body = json.loads(raw)
        if not isinstance(body, dict) or not isinstance(body.get("entry"), list):
            raise ValueError("not a WhatsApp webhook delivery (no 'entry' list)")
        found = []
        for entry in body["entry"]:
            for change in entry.get("changes") or []:
                value = change.get("value") or {}
                if (value.get("metadata") or {}).get("phone_number_id") != credentials["phoneNumberId"]:
                    continue
                names = {c.get("wa_id"): (c.get("profile") or {}).get("name") for c in value.get("contacts") or []}
                # Status updates (sent/delivered/read) carry no "messages": nothing echoes back.
                for message in value.get("messages") or []:
                    kind = message.get("type")
                    media: list[MediaRef] = []
                    if kind in MEDIA_TYPES and isinstance(message.get(kind), dict) and message[kind].get("id"):
                        item = message[kind]
                        if kind == "audio" and item.get("voice"):
                            kind = "voice"
                        media = [MediaRef(MEDIA_TYPES.get(kind, kind), str(item["id"]), item.get("filename"),
                                          item.get("mime_type"))]
                        text = str(item.get("caption") or "")
                    elif kind == "text":
                        text = str((message.get("text") or {}).get("body") or "")
                    else:
                        continue
                    number = str(message["from"])
                    found.append(Inbound(
                        channel=self.name,
                        chat_jid=f"wa:{number}",
                        sender_jid=f"wa:{number}",
                        sender_name=names.get(number) or number,
                        text=text,
                        timestamp=float(message.get("timestamp") or 0),
                        external_id=str(message["id"]),
                        chat_name=names.get(number),
                        addressed=True,
                        media=media,
                    ))
        return [m for m in found if m.text or m.media]


def _refusal(response: httpx.Response, answer: Any) -> PlatformError | None:
    """Graph API errors are {error: {message, code, ...}}; a 429 may say Retry-After."""
    if response.is_success and isinstance(answer, dict):
        return None
    error = answer.get("error") if isinstance(answer, dict) else None
    reason = error.get("message") if isinstance(error, dict) else None
    return PlatformError(f"{response.status_code} {reason or response.reason_phrase}", status=response.status_code,
                         retry_after=header_seconds(response))
