"""A fake OpenAI-compatible Chat Completions API on 127.0.0.1, speaking the real wire protocol.

The shape Ollama, vLLM, llama.cpp and LM Studio serve. Inside a trio test::

    fake = await nursery.start(serve_fake_openai)
    fake.queue(tool_reply("bash", {"command": "echo hi"}), text_reply("done"))
    ... point OPENAI_BASE_URL at fake.url + "/v1" ...

`POST /v1/chat/completions` (or `/chat/completions`) answers queued replies first, then a
deterministic default from the last message (tool results -> "Tool result: ...", arithmetic
-> "2+2 = 4", otherwise "You said: ..."). `"stream": true` gets `data:` chunks ending with
`data: [DONE]`, and a usage chunk when `stream_options.include_usage` is set. Every request
is recorded.
"""
from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

import trio

from . import serve_on_loopback
from .anthropic import Recorded, RecordingLlm, default_answer

_call_ids = itertools.count(1)


@dataclass
class Reply:
    text: str = ""
    calls: list[dict] = field(default_factory=list)  # [{id, name, arguments (JSON text)}]
    status: int = 200
    error: dict | None = None
    usage: dict | None = None  # overrides {prompt_tokens, completion_tokens, ...}
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def text_reply(text: str, *, usage: dict | None = None) -> Reply:
    return Reply(text=text, usage=usage)


def tool_reply(name: str, arguments: dict | str, *, id: str | None = None, text: str = "",
               usage: dict | None = None) -> Reply:
    """An assistant turn calling one function; `arguments` as a dict, or raw text (maybe not JSON)."""
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return Reply(text=text, calls=[{"id": id or f"call_fake_{next(_call_ids):04d}", "name": name,
                                    "arguments": raw}], usage=usage)


def error_reply(status: int, message: str = "fake upstream error", *, retry_after: float | None = None) -> Reply:
    headers = [(b"retry-after", str(retry_after).encode())] if retry_after is not None else []
    return Reply(status=status, headers=headers,
                 error={"error": {"message": message, "type": "server_error" if status >= 500 else
                                  "invalid_request_error", "code": None}})


def default_text(messages: list) -> str:
    tail = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        tail.insert(0, str(message.get("content")))
    if tail:
        return "Tool result: " + " | ".join(tail)
    last = messages[-1].get("content") if messages else ""
    if isinstance(last, list):
        last = " ".join(p.get("text", "") for p in last if isinstance(p, dict) and p.get("type") == "text")
    return default_answer([{"role": "user", "content": last or ""}])


class FakeOpenAI(RecordingLlm):
    """The fake OpenAI-compatible server's state (`.url`, `.requests`, `.queue(...)`); an ASGI app."""

    @property
    def completions(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    async def _answer(self, scope, headers: dict, body: Any, send) -> None:
        if scope["method"] != "POST" or scope["path"] not in ("/v1/chat/completions", "/chat/completions"):
            return await _send_json(send, 404, error_reply(404, f"{scope['path']} not found").error)
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            return await _send_json(send, 401, error_reply(401, "invalid api key").error)
        if not isinstance(body, dict) or "model" not in body or not isinstance(body.get("messages"), list):
            return await _send_json(send, 400, error_reply(400, "model and messages are required").error)
        reply = self.replies.pop(0) if self.replies else text_reply(default_text(body["messages"]))
        if reply.error is not None:
            return await _send_json(send, reply.status, reply.error, reply.headers)
        self._count += 1
        usage = reply.usage or {"prompt_tokens": len(json.dumps(body["messages"])) // 4,
                                "completion_tokens": max(1, (len(reply.text) + len(json.dumps(reply.calls))) // 4)}
        usage = dict(usage, total_tokens=usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0))
        finish = "tool_calls" if reply.calls else "stop"
        base = {"id": f"chatcmpl-fake{self._count:04d}", "created": 1_700_000_000, "model": body["model"]}
        if not (body.get("stream") and self.streaming):
            message = {"role": "assistant", "content": reply.text or None}
            if reply.calls:
                message["tool_calls"] = [{"id": c["id"], "type": "function",
                                          "function": {"name": c["name"], "arguments": c["arguments"]}}
                                         for c in reply.calls]
            return await _send_json(send, 200, dict(base, object="chat.completion", usage=usage, choices=[
                {"index": 0, "message": message, "finish_reason": finish}]))
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})

        async def chunk(delta: dict | None, finish_reason: str | None = None, **extra) -> None:
            value = dict(base, object="chat.completion.chunk", **extra)
            value.setdefault("choices", [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason}])
            await send({"type": "http.response.body", "body": f"data: {json.dumps(value)}\n\n".encode(),
                        "more_body": True})

        await chunk({"role": "assistant", "content": ""})
        for piece in re.findall(r"\S+\s*|\s+", reply.text):
            await chunk({"content": piece})
        for index, call in enumerate(reply.calls):
            await chunk({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                         "function": {"name": call["name"], "arguments": ""}}]})
            args = call["arguments"]
            for i in range(0, len(args), 16):
                await chunk({"tool_calls": [{"index": index, "function": {"arguments": args[i:i + 16]}}]})
        await chunk({}, finish)
        if (body.get("stream_options") or {}).get("include_usage"):
            await chunk(None, choices=[], usage=usage)
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


async def _send_json(send, status: int, value: dict, headers: list | None = None) -> None:
    data = json.dumps(value).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


async def serve_fake_openai(*, port: int = 0, api_key: str | None = None,
                            task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve a FakeOpenAI on 127.0.0.1 until cancelled (`fake = await nursery.start(serve_fake_openai)`)."""
    fake = FakeOpenAI(api_key)
    async with trio.open_nursery() as nursery:
        fake.url = await serve_on_loopback(nursery, fake, port=port)
        task_status.started(fake)
