"""A fake Anthropic Messages API on 127.0.0.1, speaking the real wire protocol.

Inside a trio test::

    fake = await nursery.start(serve_fake_anthropic)
    fake.queue(tool_reply("send_message", {"text": "hi"}), text_reply("done"))
    ... point ANTHROPIC_BASE_URL at fake.url ...
    assert fake.requests[0].headers["x-api-key"] == "sk-test"

`POST /v1/messages` answers queued replies first, then a deterministic default derived
from the last user message ("what is 2+2?" -> "2+2 = 4", otherwise "You said: ...").
`"stream": true` gets Server-Sent Events. Every request is recorded, rejected ones too.

From a plain process (the benchmark): ``python -m tests.fakes.anthropic --port 8765``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import re
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

from nanoclaw.lifespan import answer_lifespan
from . import Observable, serve_on_loopback

ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 529: "overloaded_error",
}
# Not inside dates or ids ("2026-11-22" is no subtraction).
ARITHMETIC = re.compile(r"(?<![\w-])(-?\d+)\s*([-+*/x])\s*(-?\d+)(?![\w-])")
_tool_ids = itertools.count(1)


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    raw: bytes
    body: Any  # parsed JSON, or None when the body was not JSON


@dataclass
class Reply:
    """One scripted answer. Build it with text_reply, tool_reply or error_reply."""
    content: list[dict] = field(default_factory=list)
    status: int = 200
    error: dict | None = None
    # Streaming only: after the first content delta, wait for this event before the rest.
    pause: trio.Event | None = None
    # Overrides the usage the fake reports (input_tokens, output_tokens, cache_*_input_tokens).
    usage: dict | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # extra response headers (errors)
    # Streaming only: stop the stream after the first content delta, without message_stop.
    broken: bool = False


def text_reply(text: str, *, pause: trio.Event | None = None, usage: dict | None = None,
               broken: bool = False) -> Reply:
    return Reply(content=[{"type": "text", "text": text}], pause=pause, usage=usage, broken=broken)


def tool_reply(name: str, input: dict, *, id: str | None = None, text: str | None = None,
               usage: dict | None = None) -> Reply:
    """An assistant turn that calls one tool (optionally preceded by some text)."""
    block = {"type": "tool_use", "id": id or f"toolu_fake_{next(_tool_ids):04d}", "name": name, "input": input}
    return Reply(content=([{"type": "text", "text": text}] if text else []) + [block], usage=usage)


def error_reply(status: int, message: str = "fake upstream error", type: str | None = None, *,
                retry_after: float | None = None) -> Reply:
    error_type = type or ERROR_TYPES.get(status, "api_error")
    headers = [(b"retry-after", str(retry_after).encode())] if retry_after is not None else []
    return Reply(status=status, error={"type": "error", "error": {"type": error_type, "message": message}},
                 headers=headers)


def default_answer(messages: list) -> str:
    """The deterministic answer to the last user message."""
    last = messages[-1].get("content") if messages and isinstance(messages[-1], dict) else None
    if isinstance(last, list):  # content blocks: text and/or tool results
        results = [b for b in last if isinstance(b, dict) and b.get("type") == "tool_result"]
        if results:
            return "Tool result: " + " | ".join(_block_text(b.get("content")) for b in results)
        last = " ".join(b.get("text", "") for b in last if isinstance(b, dict) and b.get("type") == "text")
    text = last if isinstance(last, str) else ""
    # The last question asked wins (a prompt may carry earlier messages as context).
    match = list(ARITHMETIC.finditer(text))[-1] if ARITHMETIC.search(text) else None
    if match:
        a, op, b = int(match[1]), match[2], int(match[3])
        value = {"+": a + b, "-": a - b, "*": a * b, "x": a * b, "/": a / b if b else "undefined"}[op]
        return f"{a}{op}{b} = {value}"
    return f"You said: {text}"


def _block_text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(b.get("text", "") for b in content if isinstance(b, dict))
    return str(content)


class RecordingLlm(Observable):
    """What the fake LLM servers share: `.url`, `.requests` (every one recorded), `.queue(...)`
    of replies, and the ASGI entry point; a subclass answers in `_answer`."""

    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key  # when set, requests with another key get 401
        self.url = ""
        self.requests: list[Recorded] = []
        self.replies: list = []
        self.streaming = True  # False: answer JSON even when the request asks for a stream
        self._count = 0
        self._changed = trio.Event()

    def queue(self, *replies) -> None:
        self.replies.extend(replies)

    async def wait_for_requests(self, count: int) -> list[Recorded]:
        """Wait until at least `count` requests were received (bound it with trio.fail_after)."""
        while len(self.requests) < count:
            await self._changed.wait()
        return self.requests

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self.requests.append(Recorded(scope["method"], scope["path"], scope["query_string"].decode(),
                                      headers, raw, body))
        self._touch()
        await self._answer(scope, headers, body, send)

    async def _answer(self, scope, headers: dict, body: Any, send) -> None:
        raise NotImplementedError


class FakeAnthropic(RecordingLlm):
    """The fake's state: `.url`, `.requests`, `.queue(...)`. Also an ASGI app."""

    @property
    def messages_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path == "/v1/messages"]

    async def _answer(self, scope, headers: dict, body: Any, send) -> None:
        if scope["path"] != "/v1/messages" or scope["method"] != "POST":
            return await _send_error(send, error_reply(404, f"{scope['method']} {scope['path']} not found"))
        if self.api_key is not None and headers.get("x-api-key") != self.api_key:
            return await _send_error(send, error_reply(401, "invalid x-api-key"))
        if "anthropic-version" not in headers:
            return await _send_error(send, error_reply(400, "anthropic-version: header is required"))
        if not isinstance(body, dict):
            return await _send_error(send, error_reply(400, "request body is not a JSON object"))
        for key in ("model", "max_tokens", "messages"):
            if key not in body:
                return await _send_error(send, error_reply(400, f"{key}: Field required"))
        reply = self.replies.pop(0) if self.replies else text_reply(default_answer(body["messages"]))
        if reply.error is not None:
            return await _send_error(send, reply)
        self._count += 1
        message = {
            "id": f"msg_fake_{self._count:04d}", "type": "message", "role": "assistant",
            "model": body["model"], "content": reply.content,
            "stop_reason": "tool_use" if any(b["type"] == "tool_use" for b in reply.content) else "end_turn",
            "stop_sequence": None,
            "usage": reply.usage or {"input_tokens": len(json.dumps(body["messages"])) // 4,
                                     "output_tokens": max(1, len(json.dumps(reply.content)) // 4)},
        }
        if body.get("stream") and self.streaming:
            await _stream(send, message, reply.pause, reply.broken)
        else:
            await _send_json(send, 200, message)


async def _send_json(send, status: int, value: dict, headers: list | None = None) -> None:
    data = json.dumps(value).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
        (b"request-id", b"req_fake"), *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


async def _send_error(send, reply: Reply) -> None:
    await _send_json(send, reply.status, reply.error, reply.headers)


def _event(name: str, data: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


async def _stream(send, message: dict, pause: trio.Event | None, broken: bool = False) -> None:
    """The Messages API streaming sequence, one ASGI body chunk per event."""
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"request-id", b"req_fake")]})

    async def emit(name: str, data: dict) -> None:
        await send({"type": "http.response.body", "body": _event(name, data), "more_body": True})

    start_usage = {k: v for k, v in message["usage"].items() if k != "output_tokens"}
    start = dict(message, content=[], stop_reason=None, usage=dict(start_usage, output_tokens=1))
    await emit("message_start", {"type": "message_start", "message": start})
    await emit("ping", {"type": "ping"})
    first_delta = True
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            await emit("content_block_start", {"type": "content_block_start", "index": index,
                                               "content_block": {"type": "text", "text": ""}})
            pieces = re.findall(r"\S+\s*|\s+", block["text"]) or [""]
            deltas = [{"type": "text_delta", "text": piece} for piece in pieces]
        else:
            await emit("content_block_start", {"type": "content_block_start", "index": index,
                                               "content_block": dict(block, input={})})
            encoded = json.dumps(block["input"])
            deltas = [{"type": "input_json_delta", "partial_json": encoded[i:i + 16]}
                      for i in range(0, len(encoded), 16)]
        for delta in deltas:
            await emit("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            if first_delta and pause is not None:
                await pause.wait()
            if broken:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            first_delta = False
        await emit("content_block_stop", {"type": "content_block_stop", "index": index})
    await emit("message_delta", {"type": "message_delta",
                                 "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                                 "usage": {"output_tokens": message["usage"]["output_tokens"]}})
    await send({"type": "http.response.body",
                "body": _event("message_stop", {"type": "message_stop"}), "more_body": False})


async def serve_fake_anthropic(*, port: int = 0, api_key: str | None = None, kind: type[FakeAnthropic] = FakeAnthropic,
                               task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve a FakeAnthropic (or a subclass, `kind`) on 127.0.0.1 until cancelled.

    Supports the nursery start protocol: `fake = await nursery.start(serve_fake_anthropic)`.
    """
    fake = kind(api_key)
    async with trio.open_nursery() as nursery:
        fake.url = await serve_on_loopback(nursery, fake, port=port)
        task_status.started(fake)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the fake Anthropic Messages API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--api-key", default=None, help="only accept this x-api-key")
    args = parser.parse_args(argv)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            fake = await nursery.start(partial(serve_fake_anthropic, port=args.port, api_key=args.api_key))
            print(f"fake Anthropic API on {fake.url}", flush=True)

    trio.run(run)


if __name__ == "__main__":
    main()
