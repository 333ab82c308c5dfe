"""A fake Slack (Web API plus Socket Mode) on 127.0.0.1, speaking the real wire protocol.

Inside a trio test::

    fake = await nursery.start(serve_fake_slack)
    ... point NANOCLAW_SLACK_API_BASE at fake.api_url, connect with BOT_TOKEN / APP_TOKEN ...
    await fake.wait_for(lambda: fake.live_socket() is not None)
    envelope_id = await fake.push_event(app_mention(channel="C1", text="<@UBOT> hi"))
    await fake.send_disconnect()
    await fake.wait_for(lambda: envelope_id in fake.acks)

Web API: `POST /api/<method>` with `Authorization: Bearer <token>`, answering
`{"ok": true, ...}` or `{"ok": false, "error": ...}` like Slack: auth.test (bot
token), apps.connections.open (app token; a bot token gets not_allowed_token_type),
chat.postMessage (bot token; `fail_next` scripts a 429 with Retry-After),
files.getUploadURLExternal (form) + POST to its upload_url + files.completeUploadExternal
(what was shared lands in `shared`). Files added with `add_file` are served at their
`url_private` to the bot token only.

Socket Mode: apps.connections.open hands out a one-use `ws://127.0.0.1:<port>/link/?ticket=...`.
A connection gets `hello`, then every envelope not yet acknowledged (Slack retries
those), then whatever `push_event` sends. Acknowledgements are recorded in `acks`.
"""
from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trio
from quart import request
from quart_trio import QuartTrio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest
from . import PlatformFake, serve_fake

BOT_TOKEN = "xoxb-1111-2222-goodbot"
APP_TOKEN = "xapp-1-A111-3333-goodapp"
BOT_USER = "UBOT1"
TEAM = "Test Team"


@dataclass
class Call:
    method: str
    token: str
    params: dict
    at: float  # trio.current_time()


@dataclass
class Socket:
    ticket: str
    ws: WebSocketConnection
    received: list[dict] = field(default_factory=list)
    # The close code the client sent (None while open, 1006 when it vanished without one).
    close_code: int | None = None
    closed: bool = False


@dataclass
class FakeSlack(PlatformFake):
    calls: list[Call] = field(default_factory=list)
    posted: list[dict] = field(default_factory=list)
    sockets: list[Socket] = field(default_factory=list)
    acks: list[str] = field(default_factory=list)
    # envelope_id -> envelope, until acknowledged
    unacked: dict[str, dict] = field(default_factory=dict)
    tickets: set[str] = field(default_factory=set)
    # method -> (body, status, headers) to answer its next calls with
    failures: dict[str, list[tuple[dict, int, dict]]] = field(default_factory=dict)
    # url path -> bytes, served at url_private with the bot token
    files: dict[str, bytes] = field(default_factory=dict)
    downloads: list[tuple[str, str]] = field(default_factory=list)  # (path, Authorization)
    uploads: dict[str, tuple[str, str, bytes]] = field(default_factory=dict)  # file id -> (name, type, bytes)
    shared: list[dict] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    api_path = "/api"

    def add_file(self, data: bytes, name: str = "photo.png", mimetype: str = "image/png") -> dict:
        """A file object as a message event's `files` carries it."""
        file_id = f"F{next(self._ids)}"
        path = f"/files-pri/T111-{file_id}/{name}"
        self.files[path] = data
        return {"id": file_id, "name": name, "mimetype": mimetype, "size": len(data),
                "url_private": self.url + path}

    def live_socket(self) -> Socket | None:
        """The newest connection still open, if any."""
        return next((s for s in reversed(self.sockets) if not s.closed), None)

    def calls_of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def fail_next(self, method: str, status: int, body: dict, *, headers: dict | None = None) -> None:
        self.failures.setdefault(method, []).append((body, status, headers or {}))

    # -- Socket Mode --------------------------------------------------------------

    async def push_event(self, event: dict) -> str:
        """Wrap a Slack event in an events_api envelope and send it on the live connection
        (or keep it for the next one); returns the envelope id."""
        envelope_id = f"env-{next(self._ids)}"
        envelope = {
            "envelope_id": envelope_id,
            "type": "events_api",
            "accept_response_payload": False,
            "retry_attempt": 0,
            "retry_reason": "",
            "payload": {
                "token": "verification-token", "team_id": "T111", "api_app_id": "A111",
                "type": "event_callback", "event_id": f"Ev{envelope_id}", "event_time": int(time.time()),
                "event": event,
            },
        }
        self.unacked[envelope_id] = envelope
        socket = self.live_socket()
        if socket is not None:
            try:
                await socket.ws.send_message(json.dumps(envelope))
            except ConnectionClosed:
                pass  # still unacknowledged: the next connection gets it
        return envelope_id

    async def send_disconnect(self, reason: str = "refresh_requested") -> None:
        """Slack's warning that this connection is going away: the client should open a new one."""
        socket = self.live_socket()
        assert socket is not None, "no live Socket Mode connection"
        await socket.ws.send_message(json.dumps(
            {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-fake"}}))

    async def close_socket(self, code: int = 1001) -> None:
        socket = self.live_socket()
        assert socket is not None, "no live Socket Mode connection"
        await socket.ws.aclose(code)

    async def _serve_socket(self, req: WebSocketRequest) -> None:
        ticket = (parse_qs(urlsplit(req.path).query).get("ticket") or [""])[0]
        if ticket not in self.tickets:
            await req.reject(401, body=b"invalid ticket")
            return
        self.tickets.discard(ticket)
        ws = await req.accept()
        socket = Socket(ticket, ws)
        self.sockets.append(socket)
        self._touch()
        try:
            await ws.send_message(json.dumps({
                "type": "hello", "num_connections": 1,
                "debug_info": {"host": "applink-fake", "approximate_connection_time": 18060},
                "connection_info": {"app_id": "A111"},
            }))
            for envelope in list(self.unacked.values()):
                envelope = {**envelope, "retry_attempt": envelope["retry_attempt"] + 1, "retry_reason": "timeout"}
                await ws.send_message(json.dumps(envelope))
            while True:
                frame = json.loads(await ws.get_message())
                socket.received.append(frame)
                if "envelope_id" in frame:
                    self.acks.append(frame["envelope_id"])
                    self.unacked.pop(frame["envelope_id"], None)
                self._touch()
        except ConnectionClosed as exc:
            socket.close_code = exc.reason.code if exc.reason else None
        finally:
            socket.closed = True
            self._touch()

    # -- Web API ------------------------------------------------------------------

    def handle(self, method: str, token: str, params: dict) -> tuple[dict, int, dict]:
        self.calls.append(Call(method, token, params, trio.current_time()))
        self._touch()
        if not token:
            return {"ok": False, "error": "not_authed"}, 200, {}
        if token not in (BOT_TOKEN, APP_TOKEN):
            return {"ok": False, "error": "invalid_auth"}, 200, {}
        pending = self.failures.get(method)
        if pending:
            return pending.pop(0)
        if method == "apps.connections.open":
            if token != APP_TOKEN:
                return {"ok": False, "error": "not_allowed_token_type"}, 200, {}
            ticket = f"ticket-{next(self._ids)}"
            self.tickets.add(ticket)
            return {"ok": True, "url": f"{self.ws_url}/link/?ticket={ticket}&app_id=A111"}, 200, {}
        if token != BOT_TOKEN:
            return {"ok": False, "error": "not_allowed_token_type"}, 200, {}
        if method == "auth.test":
            return {"ok": True, "url": "https://test-team.slack.com/", "team": TEAM, "user": "andy",
                    "team_id": "T111", "user_id": BOT_USER, "bot_id": "B111", "is_enterprise_install": False}, 200, {}
        if method == "files.getUploadURLExternal":
            if not params.get("filename") or not str(params.get("length", "")).isdigit():
                return {"ok": False, "error": "invalid_arguments"}, 200, {}
            file_id = f"F{next(self._ids)}"
            return {"ok": True, "upload_url": f"{self.url}/upload/{file_id}", "file_id": file_id}, 200, {}
        if method == "files.completeUploadExternal":
            files = params.get("files")
            if not isinstance(files, list) or not all(f.get("id") in self.uploads for f in files):
                return {"ok": False, "error": "file_not_found"}, 200, {}
            self.shared.append({"channel_id": params.get("channel_id"), "initial_comment": params.get("initial_comment"),
                                "files": [self.uploads[f["id"]] for f in files]})
            self._touch()
            return {"ok": True, "files": [{"id": f["id"]} for f in files]}, 200, {}
        if method == "chat.postMessage":
            text = params.get("text") or ""
            if not params.get("channel"):
                return {"ok": False, "error": "channel_not_found"}, 200, {}
            if not text.strip():
                return {"ok": False, "error": "no_text"}, 200, {}
            ts = f"{1_700_000_000 + len(self.posted)}.000100"
            self.posted.append({"channel": params["channel"], "text": text})
            self._touch()
            return {"ok": True, "channel": params["channel"], "ts": ts,
                    "message": {"type": "message", "text": text, "user": BOT_USER, "bot_id": "B111", "ts": ts}}, 200, {}
        return {"ok": False, "error": "unknown_method"}, 200, {}


def message_event(*, channel: str, text: str, user: str = "U0ALICE", ts: str | None = None,
                  kind: str = "message", **extra: Any) -> dict:
    """A `message` (or with kind="app_mention", an `app_mention`) event as Slack sends it."""
    event = {"type": kind, "channel": channel, "user": user, "text": text,
             "ts": ts or f"{time.time():.6f}", "team": "T111", "event_ts": ts or f"{time.time():.6f}"}
    if kind == "message":
        event["channel_type"] = "im" if channel.startswith("D") else "channel"
    event.update(extra)
    return event


def _app(fake: FakeSlack) -> QuartTrio:
    app = QuartTrio("fake_slack")

    @app.post("/api/<method>")
    async def web_api(method: str):
        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
        params: dict[str, Any] = dict(request.args)
        if request.is_json:
            params.update(await request.get_json() or {})
        else:
            params.update(dict(await request.form))
        body, status, headers = fake.handle(method, token, params)
        return body, status, headers

    @app.get("/files-pri/<path:rest>")
    async def private_file(rest: str):
        path = f"/files-pri/{rest}"
        auth = request.headers.get("Authorization", "")
        fake.downloads.append((path, auth))
        fake._touch()
        if auth != f"Bearer {BOT_TOKEN}" or path not in fake.files:
            return "not found", 404
        return fake.files[path], 200, {"Content-Type": "application/octet-stream"}

    @app.post("/upload/<file_id>")
    async def upload(file_id: str):
        upload = (await request.files).get("file")
        if upload is None:
            return "no file", 400
        fake.uploads[file_id] = (upload.filename, upload.content_type, upload.read())
        fake._touch()
        return "OK - 1", 200

    return app


async def serve_fake_slack(*, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve a FakeSlack on 127.0.0.1 (nursery.start gives the FakeSlack): the Web API at
    `api_url`, Socket Mode on its own port."""
    fake = FakeSlack()
    await serve_fake(fake, _app(fake), websocket=fake._serve_socket, task_status=task_status)
