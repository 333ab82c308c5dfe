"""A fake Discord (REST plus the Gateway) on 127.0.0.1, speaking the real wire protocol.

Inside a trio test::

    fake = await nursery.start(serve_fake_discord)
    ... point NANOCLAW_DISCORD_API_BASE at fake.api_url, connect with TOKEN ...
    await fake.wait_for(lambda: fake.session is not None)
    await fake.dispatch_message(channel_id="C1", content="<@BOT> hi", mention_bot=True)
    fake.withhold_acks = True        # a zombie connection
    await fake.close_socket(4000)     # the server drops the connection
    await fake.invalid_session()      # op 9
    await fake.request_reconnect()    # op 7

REST (`Authorization: Bot <token>`, 401 `{"message": "401: Unauthorized", "code": 0}`
otherwise): GET /users/@me, GET /gateway/bot, POST /channels/<id>/messages (at most
2,000 characters; `fail_next` scripts a 429 with `retry_after`; multipart with
payload_json + files[0] lands in `uploads`), PATCH /channels/<id>/messages/<id> (`edits`),
POST /channels/<id>/typing (`typing`). `add_attachment` serves a file at a CDN-like URL.

Gateway (`?v=10&encoding=json`): op 10 Hello on connect; op 1 heartbeats answered by op 11
(unless `withhold_acks`); op 2 IDENTIFY -> READY with a new session; op 6 RESUME ->
the missed dispatches, then RESUMED (op 9 when the session is unknown). Every
connection's frames (with trio.current_time()) and close code are recorded.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trio
from quart import request
from quart_trio import QuartTrio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest
from . import PlatformFake, serve_fake

TOKEN = "MTIzNDU2Nzg5.fake.discord-token"
BOT = {"id": "900000000000000001", "username": "andy", "global_name": "Andy", "discriminator": "0", "bot": True}
HEARTBEAT_INTERVAL_MS = 41250


@dataclass
class Connection:
    path: str
    query: dict[str, list[str]]
    ws: WebSocketConnection
    hello_at: float
    # (trio.current_time(), frame) of every frame the client sent
    received: list[tuple[float, dict]] = field(default_factory=list)
    # The close code the client sent (None while open, 1006 when it vanished without one).
    close_code: int | None = None
    closed: bool = False
    closed_at: float | None = None

    def ops(self, op: int) -> list[dict]:
        return [frame for _, frame in self.received if frame.get("op") == op]

    def times(self, op: int) -> list[float]:
        return [at for at, frame in self.received if frame.get("op") == op]


@dataclass
class Session:
    session_id: str
    seq: int = 0
    # Every dispatch sent in this session (for replay on RESUME), as (seq, frame).
    log: list[tuple[int, dict]] = field(default_factory=list)


@dataclass
class FakeDiscord(PlatformFake):
    connections: list[Connection] = field(default_factory=list)
    session: Session | None = None
    sent: list[dict] = field(default_factory=list)  # {"channel_id", "content"}
    withhold_acks: bool = False
    uploads: list[dict] = field(default_factory=list)  # {"channel_id", "payload", "files": {field: (name, type, bytes)}}
    edits: list[tuple[float, str, str]] = field(default_factory=list)  # (time, message id, content)
    typing: list[tuple[float, str]] = field(default_factory=list)  # (time, channel id)
    cdn: dict[str, bytes] = field(default_factory=dict)
    downloads: list[str] = field(default_factory=list)
    # route -> (body, status) to answer its next calls with
    failures: dict[str, list[tuple[dict, int]]] = field(default_factory=dict)
    # (time, method, path) of every REST call
    calls: list[tuple[float, str, str]] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    api_path = "/api/v10"

    def live(self) -> Connection | None:
        return next((c for c in reversed(self.connections) if not c.closed), None)

    def fail_next(self, route: str, status: int, body: dict) -> None:
        """route: "messages" or "users/@me"."""
        self.failures.setdefault(route, []).append((body, status))

    # -- scripting the gateway ----------------------------------------------------------

    async def dispatch(self, kind: str, data: dict) -> int:
        """Send an op 0 Dispatch on the live connection (or only log it for a RESUME); returns its seq."""
        assert self.session is not None, "no gateway session yet"
        self.session.seq += 1
        frame = {"op": 0, "t": kind, "s": self.session.seq, "d": data}
        self.session.log.append((self.session.seq, frame))
        connection = self.live()
        if connection is not None:
            try:
                await connection.ws.send_message(json.dumps(frame))
            except ConnectionClosed:
                pass
        return self.session.seq

    def add_attachment(self, data: bytes, filename: str, content_type: str) -> dict:
        """An attachment object as a message carries it, its URL served by this fake."""
        attachment_id = str(820000000000000000 + next(self._ids))
        path = f"attachments/{attachment_id}/{filename}"
        self.cdn[path] = data
        return {"id": attachment_id, "filename": filename, "content_type": content_type, "size": len(data),
                "url": f"{self.url}/cdn/{path}?ex=1&is=2&hm=3",
                "proxy_url": "unused"}

    async def dispatch_message(self, *, channel_id: str, content: str, author_id: str = "700000000000000042",
                               username: str = "alice", guild_id: str | None = "600000000000000001",
                               mention_bot: bool = False, bot: bool = False, attachments: list | None = None) -> str:
        """A MESSAGE_CREATE as Discord sends it; returns the message id."""
        message_id = str(800000000000000000 + next(self._ids))
        author = {"id": author_id, "username": username, "global_name": username.title(), "discriminator": "0"}
        if bot:
            author["bot"] = True
        data = {
            "id": message_id, "type": 0, "channel_id": channel_id, "author": author, "content": content,
            "timestamp": "2024-05-01T12:00:00.000000+00:00", "edited_timestamp": None, "tts": False,
            "mention_everyone": False, "mentions": [BOT] if mention_bot else [], "mention_roles": [],
            "attachments": attachments or [], "embeds": [], "pinned": False,
        }
        if guild_id is not None:
            data["guild_id"] = guild_id
            data["member"] = {"roles": [], "joined_at": "2024-01-01T00:00:00.000000+00:00"}
        await self.dispatch("MESSAGE_CREATE", data)
        return message_id

    async def close_socket(self, code: int = 4000) -> None:
        connection = self.live()
        assert connection is not None, "no live gateway connection"
        await connection.ws.aclose(code)

    async def invalid_session(self) -> None:
        """op 9 with d=false: the session is gone, the client must IDENTIFY again."""
        self.session = None
        await self._send_live({"op": 9, "d": False})

    async def request_reconnect(self) -> None:
        await self._send_live({"op": 7, "d": None})

    async def _send_live(self, frame: dict) -> None:
        connection = self.live()
        assert connection is not None, "no live gateway connection"
        await connection.ws.send_message(json.dumps(frame))

    # -- the gateway --------------------------------------------------------------

    async def _serve_gateway(self, req: WebSocketRequest) -> None:
        split = urlsplit(req.path)
        ws = await req.accept()
        connection = Connection(split.path, parse_qs(split.query), ws, hello_at=trio.current_time())
        self.connections.append(connection)
        self._touch()
        try:
            await ws.send_message(json.dumps({"op": 10, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}}))
            while True:
                frame = json.loads(await ws.get_message())
                connection.received.append((trio.current_time(), frame))
                await self._handle(connection, frame)
                self._touch()
        except ConnectionClosed as exc:
            connection.close_code = exc.reason.code if exc.reason else None
        finally:
            connection.closed, connection.closed_at = True, trio.current_time()
            self._touch()

    async def _handle(self, connection: Connection, frame: dict) -> None:
        ws, op, data = connection.ws, frame.get("op"), frame.get("d")
        if op == 1:
            if not self.withhold_acks:
                await ws.send_message(json.dumps({"op": 11}))
        elif op == 2:
            if data.get("token") != TOKEN:
                await ws.aclose(4004, "Authentication failed.")
                return
            self.session = Session(session_id=f"session-{next(self._ids)}")
            await self.dispatch("READY", {
                "v": 10, "user": BOT, "guilds": [], "session_id": self.session.session_id,
                "resume_gateway_url": f"{self.ws_url}/resume", "application": {"id": BOT["id"], "flags": 0},
            })
        elif op == 6:
            session = self.session
            if data.get("token") != TOKEN or session is None or data.get("session_id") != session.session_id:
                await ws.send_message(json.dumps({"op": 9, "d": False}))
                return
            for seq, missed in session.log:
                if seq > (data.get("seq") or 0):
                    await ws.send_message(json.dumps(missed))
            session.seq += 1
            await ws.send_message(json.dumps({"op": 0, "t": "RESUMED", "s": session.seq, "d": {}}))

    # -- REST -----------------------------------------------------------------------

    def handle(self, method: str, path: str, token: str | None, body: Any) -> tuple[dict | list, int]:
        self.calls.append((trio.current_time(), method, path))
        if token != TOKEN:
            return {"message": "401: Unauthorized", "code": 0}, 401
        route = "messages" if path.startswith("channels/") and path.endswith("/messages") else path
        pending = self.failures.get(route)
        if pending:
            return pending.pop(0)
        if method == "GET" and path == "users/@me":
            return BOT, 200
        if method == "GET" and path == "gateway/bot":
            return {"url": self.ws_url, "shards": 1, "session_start_limit": {
                "total": 1000, "remaining": 999, "reset_after": 14400000, "max_concurrency": 1}}, 200
        if method == "POST" and path.startswith("channels/") and path.endswith("/typing"):
            self.typing.append((trio.current_time(), path.split("/")[1]))
            self._touch()
            return {}, 204
        if method == "PATCH" and path.startswith("channels/") and "/messages/" in path:
            self.edits.append((trio.current_time(), path.split("/")[3], (body or {}).get("content") or ""))
            self._touch()
            return {"id": path.split("/")[3], "content": (body or {}).get("content")}, 200
        if method == "POST" and route == "messages" and isinstance(body, dict) and "files" in body:
            channel_id = path.split("/")[1]
            self.uploads.append({"channel_id": channel_id, **body})
            self._touch()
            return {"id": str(810000000000000000 + next(self._ids)), "channel_id": channel_id, "type": 0}, 200
        if method == "POST" and route == "messages":
            content = (body or {}).get("content") or ""
            if not content.strip():
                return {"message": "Cannot send an empty message", "code": 50006}, 400
            if len(content) > 2000:
                return {"message": "Invalid Form Body", "code": 50035, "errors": {"content": {"_errors": [
                    {"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}]}}}, 400
            channel_id = path.split("/")[1]
            self.sent.append({"channel_id": channel_id, "content": content})
            self._touch()
            return {"id": str(810000000000000000 + next(self._ids)), "channel_id": channel_id, "content": content,
                    "author": BOT, "type": 0}, 200
        return {"message": "404: Not Found", "code": 0}, 404


def _app(fake: FakeDiscord) -> QuartTrio:
    app = QuartTrio("fake_discord")

    @app.route("/api/v10/<path:path>", methods=["GET", "POST", "PATCH"])
    async def rest(path: str):
        auth = request.headers.get("Authorization", "")
        token = auth[len("Bot "):] if auth.startswith("Bot ") else None
        body = await request.get_json(silent=True) if request.method in ("POST", "PATCH") else None
        files = await request.files if request.method == "POST" and not request.is_json else None
        if files:
            form = await request.form
            body = {"payload": json.loads(form.get("payload_json") or "{}"),
                    "files": {name: (f.filename, f.content_type, f.read()) for name, f in files.items()}}
        answer, status = fake.handle(request.method, path, token, body)
        if status == 204:
            return "", 204
        return json.dumps(answer), status, {"Content-Type": "application/json"}

    @app.get("/cdn/<path:path>")
    async def cdn(path: str):
        fake.downloads.append(path)
        fake._touch()
        if path not in fake.cdn:
            return "not found", 404
        return fake.cdn[path], 200, {"Content-Type": "application/octet-stream"}

    return app


async def serve_fake_discord(*, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve a FakeDiscord on 127.0.0.1 (nursery.start gives the FakeDiscord): REST at
    `api_url`, the Gateway on its own port."""
    fake = FakeDiscord()
    await serve_fake(fake, _app(fake), websocket=fake._serve_gateway, task_status=task_status)
