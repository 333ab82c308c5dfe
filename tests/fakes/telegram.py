"""A fake Telegram Bot API on 127.0.0.1, speaking the real wire protocol.

Inside a trio test::

    fake = await nursery.start(serve_fake_telegram)
    fake.push_message(chat_id=-100, text="@Andy hi")
    fake.fail_next("sendMessage", 429, retry_after=5)
    ... point NANOCLAW_TELEGRAM_API_BASE at fake.url ...
    await fake.wait_for(lambda: len(fake.sent) == 1)

`/bot<token>/<method>` (GET or POST; parameters from the query string, a JSON body
or a form, multipart files in `uploads`) for getMe, getUpdates, sendMessage,
editMessageText, sendChatAction, getFile, sendPhoto and sendDocument; files added with
`add_file` are served at `/file/bot<token>/<file_path>` as Telegram does. Unknown tokens get 401
Unauthorized. getUpdates follows Telegram: an update stays until a call with a
higher offset confirms it; with no pending update the call waits up to `timeout`
seconds for one. Every call is recorded with trio.current_time().
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import trio
from quart import request
from quart_trio import QuartTrio
from . import PlatformFake, serve_fake

TOKEN = "123456:TEST-token-good"
BOT = {"id": 123456, "is_bot": True, "first_name": "Andy", "username": "andy_test_bot"}


@dataclass
class Call:
    method: str
    token: str
    params: dict[str, Any]
    at: float


@dataclass
class FakeTelegram(PlatformFake):
    tokens: dict[str, dict] = field(default_factory=lambda: {TOKEN: BOT})
    updates: list[dict] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    sent: list[dict] = field(default_factory=list)
    # method -> errors to answer its next calls with, first first
    failures: dict[str, list[dict]] = field(default_factory=dict)
    # The highest offset a getUpdates call confirmed.
    confirmed: int = 0
    # file_id -> (file_path, bytes) for getFile and the download URL
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    downloads: list[str] = field(default_factory=list)
    # (method, fields, {field: (filename, content type, bytes)}) of multipart uploads
    uploads: list[tuple[str, dict, dict]] = field(default_factory=list)
    edits: list[Call] = field(default_factory=list)
    # Refuse parse_mode HTML with Telegram's "can't parse entities" error.
    refuse_html: bool = False
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _message_ids: Any = field(default_factory=lambda: itertools.count(1))

    def push_message(self, chat_id: int, text: str, *, sender_id: int = 42, first_name: str = "Alice",
                     chat_type: str = "group", title: str = "Test group", **extra: Any) -> dict:
        """Queue an update carrying a message; returns the update."""
        chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
        if chat_type == "private":
            chat["first_name"] = first_name
        else:
            chat["title"] = title
        message_id = next(self._message_ids)
        message = {
            "message_id": message_id,
            "from": {"id": sender_id, "is_bot": False, "first_name": first_name},
            "chat": chat,
            "date": 1_700_000_000 + message_id,
            **({"text": text} if text is not None else {}),
            **extra,
        }
        return self.push_update(message=message)

    def push_update(self, **fields: Any) -> dict:
        """Queue an update of any kind (the next update_id and these fields); returns it."""
        update = {"update_id": next(self._ids), **fields}
        self.updates.append(update)
        self._touch()
        return update

    def add_file(self, data: bytes, file_path: str = "photos/file_1.jpg") -> str:
        file_id = f"FILE{len(self.files) + 1}"
        self.files[file_id] = (file_path, data)
        return file_id

    def fail_next(self, method: str, status: int, description: str | None = None, *,
                  retry_after: int | None = None, times: int = 1) -> None:
        error: dict[str, Any] = {"ok": False, "error_code": status,
                                 "description": description or _DESCRIPTIONS.get(status, "Error")}
        if retry_after is not None:
            error["parameters"] = {"retry_after": retry_after}
        self.failures.setdefault(method, []).extend([error] * times)

    def calls_of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    # -- the API ------------------------------------------------------------

    async def handle(self, token: str, method: str, params: dict[str, Any]) -> tuple[dict, int]:
        self.calls.append(Call(method, token, params, trio.current_time()))
        self._touch()
        bot = self.tokens.get(token)
        if bot is None:
            return {"ok": False, "error_code": 401, "description": "Unauthorized"}, 401
        pending_errors = self.failures.get(method)
        if pending_errors:
            error = pending_errors.pop(0)
            return error, error["error_code"]
        if method == "getMe":
            return {"ok": True, "result": bot}, 200
        if method == "getUpdates":
            return {"ok": True, "result": await self._get_updates(params)}, 200
        if method in ("sendMessage", "editMessageText") and params.get("parse_mode") and self.refuse_html:
            return {"ok": False, "error_code": 400,
                    "description": "Bad Request: can't parse entities: unsupported start tag"}, 400
        if method == "editMessageText":
            self.edits.append(Call(method, token, params, trio.current_time()))
            self._touch()
            return {"ok": True, "result": {"message_id": int(params["message_id"]), "text": params.get("text")}}, 200
        if method == "sendChatAction":
            return {"ok": True, "result": True}, 200
        if method == "getFile":
            found = self.files.get(str(params.get("file_id")))
            if found is None:
                return {"ok": False, "error_code": 400, "description": "Bad Request: invalid file_id"}, 400
            return {"ok": True, "result": {"file_id": params["file_id"], "file_path": found[0],
                                           "file_size": 1}}, 200
        if method in ("sendPhoto", "sendDocument"):
            message = {"message_id": next(self._message_ids), "from": bot, "date": 1_700_000_000,
                       "chat": {"id": int(params["chat_id"]), "type": "group"}}
            return {"ok": True, "result": message}, 200
        if method == "sendMessage":
            text = str(params.get("text", ""))
            if not text.strip():
                return {"ok": False, "error_code": 400, "description": "Bad Request: message text is empty"}, 400
            if len(text) > 4096:
                return {"ok": False, "error_code": 400, "description": "Bad Request: message is too long"}, 400
            self.sent.append({"chat_id": str(params.get("chat_id")), "text": text})
            self._touch()
            message = {"message_id": next(self._message_ids), "from": bot, "date": 1_700_000_000,
                       "chat": {"id": int(params["chat_id"]), "type": "group"}, "text": text}
            return {"ok": True, "result": message}, 200
        return {"ok": False, "error_code": 404, "description": "Not Found"}, 404

    async def _get_updates(self, params: dict[str, Any]) -> list[dict]:
        offset = int(params.get("offset") or 0)
        if offset:
            self.confirmed = max(self.confirmed, offset)
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
            self._touch()
        timeout = float(params.get("timeout") or 0)
        with trio.move_on_after(timeout):
            while not self.updates:
                await self._changed.wait()
        return [u for u in self.updates if u["update_id"] >= offset][:100]


_DESCRIPTIONS = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden: bot was blocked by the user",
    404: "Not Found", 409: "Conflict", 429: "Too Many Requests", 500: "Internal Server Error",
    502: "Bad Gateway",
}


def _app(fake: FakeTelegram) -> QuartTrio:
    app = QuartTrio("fake_telegram")

    @app.route("/bot<token>/<method>", methods=["GET", "POST"])
    async def bot_api(token: str, method: str):
        params: dict[str, Any] = dict(request.args)
        if request.method == "POST":
            if request.is_json:
                params.update(await request.get_json() or {})
            else:
                params.update(dict(await request.form))
                files = await request.files
                if files:
                    fake.uploads.append((method, dict(await request.form), {
                        name: (f.filename, f.content_type, f.read()) for name, f in files.items()}))
        if isinstance(params.get("allowed_updates"), str):
            params["allowed_updates"] = json.loads(params["allowed_updates"])
        body, status = await fake.handle(token, method, params)
        return body, status

    @app.route("/file/bot<token>/<path:file_path>")
    async def download(token: str, file_path: str):
        fake.downloads.append(file_path)
        fake._touch()
        if token not in fake.tokens:
            return {"ok": False, "error_code": 401, "description": "Unauthorized"}, 401
        for path, data in fake.files.values():
            if path == file_path:
                return data, 200, {"Content-Type": "application/octet-stream"}
        return {"ok": False, "error_code": 404, "description": "Not Found"}, 404

    return app


async def serve_fake_telegram(*, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve a FakeTelegram on 127.0.0.1:<free port> (nursery.start gives the FakeTelegram)."""
    fake = FakeTelegram()
    await serve_fake(fake, _app(fake), task_status=task_status)
