"""A fake WhatsApp Cloud API (Graph API) on 127.0.0.1, and a webhook sender that signs like Meta.

Inside a trio test::

    fake = await nursery.start(serve_fake_whatsapp)
    ... point NANOCLAW_WHATSAPP_API_BASE at fake.api_url ...
    await fake.deliver(webhook_url, text_delivery("15551230000", "hi", "wamid.1"))

Graph API: `GET /v21.0/<phoneNumberId>` (the number, with a Bearer token) and
`POST /v21.0/<phoneNumberId>/messages` (text, or image/document by media id; recorded in
`sent`; `fail_next` scripts an error), `POST /v21.0/<phoneNumberId>/media` (multipart upload, in `uploads`), `GET
/v21.0/<media-id>` (the media's download URL; `add_media` adds one) and that URL (Bearer
token required). Wrong tokens get Meta's OAuthException 401; unknown ids a 400
GraphMethodException.
"""
from __future__ import annotations

import hashlib
import hmac
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio
from quart import request
from quart_trio import QuartTrio
from . import PlatformFake, serve_fake

PHONE_NUMBER_ID = "106540352242922"
ACCESS_TOKEN = "EAAG-good-access-token"
VERIFY_TOKEN = "verify-me-please"
APP_SECRET = "app-secret-0123456789"
BUSINESS_NUMBER = "+1 555-010-0000"


def sign(body: bytes, secret: str = APP_SECRET) -> str:
    """The X-Hub-Signature-256 value Meta sends: sha256=<hex HMAC-SHA256 of the raw body>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def text_delivery(sender: str, text: str, message_id: str, *, name: str = "Bob",
                  phone_number_id: str = PHONE_NUMBER_ID, timestamp: int = 1_700_000_000) -> dict:
    """A webhook body carrying one text message, shaped like Meta's."""
    return {
        "object": "whatsapp_business_account",
        "entry": [{
            "id": "WHATSAPP_BUSINESS_ACCOUNT_ID",
            "changes": [{
                "field": "messages",
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "15550100000", "phone_number_id": phone_number_id},
                    "contacts": [{"profile": {"name": name}, "wa_id": sender}],
                    "messages": [{"from": sender, "id": message_id, "timestamp": str(timestamp),
                                  "type": "text", "text": {"body": text}}],
                },
            }],
        }],
    }


def media_delivery(sender: str, kind: str, media: dict, message_id: str, *, caption: str | None = None) -> dict:
    """A webhook body carrying one image/document/audio/video message (media from `add_media`)."""
    body = text_delivery(sender, "", message_id)
    message = body["entry"][0]["changes"][0]["value"]["messages"][0]
    del message["text"]
    message["type"] = kind
    message[kind] = {**media, **({"caption": caption} if caption else {})}
    return body


@dataclass
class FakeWhatsApp(PlatformFake):
    numbers: dict[str, str] = field(default_factory=lambda: {PHONE_NUMBER_ID: BUSINESS_NUMBER})
    token: str = ACCESS_TOKEN
    sent: list[dict] = field(default_factory=list)
    # media id -> (mime type, bytes), served through GET /<media-id> and its URL
    media: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    downloads: list[str] = field(default_factory=list)
    uploads: list[dict] = field(default_factory=list)  # {"id", "form", "file": (name, type, bytes)}
    # (trio.current_time(), method, path) of every Graph API call
    calls: list[tuple[float, str, str]] = field(default_factory=list)
    # (error, status) to answer the next sends with, first first
    failures: list[tuple[dict, int]] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    api_path = "/v21.0"

    def fail_next(self, status: int, error: dict) -> None:
        """Answer the next send (POST <number>/messages) with this Graph API error object."""
        self.failures.append((error, status))

    def add_media(self, data: bytes, mime_type: str, filename: str | None = None) -> dict:
        """Media a user sent; returns the object a delivery carries for it."""
        media_id = str(7000 + next(self._ids))
        self.media[media_id] = (mime_type, data)
        return {"id": media_id, "mime_type": mime_type, "sha256": "x", **({"filename": filename} if filename else {})}

    async def deliver(self, webhook_url: str, payload: dict, *, secret: str | None = APP_SECRET,
                      signature: str | None = None) -> httpx.Response:
        """POST a delivery to the server's webhook the way Meta does (signed with `secret`;
        secret=None sends no signature, `signature` overrides it)."""
        raw = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        if signature is not None:
            headers["X-Hub-Signature-256"] = signature
        elif secret is not None:
            headers["X-Hub-Signature-256"] = sign(raw, secret)
        async with httpx.AsyncClient(timeout=10) as http:
            return await http.post(webhook_url, content=raw, headers=headers)

    def _auth_error(self) -> tuple[dict, int] | None:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return {"error": {"message": "Invalid OAuth access token - Cannot parse access token",
                              "type": "OAuthException", "code": 190, "fbtrace_id": "AbCdEf"}}, 401
        return None

    def _unknown(self, number_id: str) -> tuple[dict, int]:
        return {"error": {"message": f"Unsupported get request. Object with ID '{number_id}' does not exist",
                          "type": "GraphMethodException", "code": 100, "error_subcode": 33}}, 400


def _app(fake: FakeWhatsApp) -> QuartTrio:
    app = QuartTrio("fake_whatsapp")

    @app.before_request
    async def record() -> None:
        fake.calls.append((trio.current_time(), request.method, request.path))

    @app.get("/<version>/<number_id>")
    async def phone_number(version: str, number_id: str):
        if (error := fake._auth_error()) is not None:
            return error
        if number_id in fake.media:
            mime, data = fake.media[number_id]
            return {"messaging_product": "whatsapp", "url": f"{fake.url}/media-download/{number_id}?hash=1",
                    "mime_type": mime, "sha256": "x", "file_size": len(data), "id": number_id}
        if number_id not in fake.numbers:
            return fake._unknown(number_id)
        return {"verified_name": "Test Business", "display_phone_number": fake.numbers[number_id],
                "id": number_id, "quality_rating": "GREEN"}

    @app.post("/<version>/<number_id>/messages")
    async def messages(version: str, number_id: str):
        if (error := fake._auth_error()) is not None:
            return error
        if number_id not in fake.numbers:
            return fake._unknown(number_id)
        if fake.failures:
            error, status = fake.failures.pop(0)
            return {"error": error}, status
        body = await request.get_json()
        kind = body.get("type")
        uploaded = {u["id"] for u in fake.uploads}
        if body.get("messaging_product") != "whatsapp" or kind not in ("text", "image", "document") or (
                kind != "text" and (body.get(kind) or {}).get("id") not in uploaded):
            return {"error": {"message": "(#100) Invalid parameter", "type": "OAuthException", "code": 100}}, 400
        fake.sent.append(body)
        fake._touch()
        return {"messaging_product": "whatsapp", "contacts": [{"input": body["to"], "wa_id": body["to"]}],
                "messages": [{"id": f"wamid.out{next(fake._ids)}"}]}

    @app.post("/<version>/<number_id>/media")
    async def upload(version: str, number_id: str):
        if (error := fake._auth_error()) is not None:
            return error
        form, files = await request.form, await request.files
        if form.get("messaging_product") != "whatsapp" or "file" not in files:
            return {"error": {"message": "(#100) Invalid parameter", "type": "OAuthException", "code": 100}}, 400
        f = files["file"]
        media_id = str(9000 + next(fake._ids))
        fake.uploads.append({"id": media_id, "form": dict(form), "file": (f.filename, f.content_type, f.read())})
        return {"id": media_id}

    @app.get("/media-download/<media_id>")
    async def download(media_id: str):
        fake.downloads.append(media_id)
        if (error := fake._auth_error()) is not None:
            return error
        mime, data = fake.media[media_id]
        return data, 200, {"Content-Type": mime}

    return app


async def serve_fake_whatsapp(*, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve a FakeWhatsApp on 127.0.0.1:<free port> (nursery.start gives the FakeWhatsApp)."""
    fake = FakeWhatsApp()
    await serve_fake(fake, _app(fake), task_status=task_status)
