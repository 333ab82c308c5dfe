"""The fake Anthropic server itself: what other tests (the credential proxy's) rely on."""
from __future__ import annotations

import json
from functools import partial

import httpx
import trio

from fakes.anthropic import serve_fake_anthropic, text_reply, tool_reply

HEADERS = {"x-api-key": "sk-real", "anthropic-version": "2023-06-01"}


def body(**extra) -> dict:
    return {"model": "claude-test", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}], **extra}


def parse_sse(lines: list[str]) -> list[tuple[str, dict]]:
    events, name = [], None
    for line in lines:
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[len("data: "):])))
    return events


async def test_stream_events_rebuild_the_same_message_as_the_plain_answer(nursery):
    fake = await nursery.start(serve_fake_anthropic)
    fake.queue(tool_reply("send_message", {"text": "a fairly long message to split"}, id="toolu_1", text="Sure, "))
    async with httpx.AsyncClient(base_url=fake.url) as client:
        async with client.stream("POST", "/v1/messages", json=body(stream=True), headers=HEADERS) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = parse_sse([line async for line in response.aiter_lines()])

    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    blocks: dict[int, dict] = {}
    partial_json: dict[int, str] = {}
    for name, data in events:
        assert data["type"] == name
        if name == "content_block_start":
            blocks[data["index"]] = data["content_block"]
        elif name == "content_block_delta" and data["delta"]["type"] == "text_delta":
            blocks[data["index"]]["text"] += data["delta"]["text"]
        elif name == "content_block_delta":
            partial_json[data["index"]] = partial_json.get(data["index"], "") + data["delta"]["partial_json"]
    blocks[1]["input"] = json.loads(partial_json[1])
    assert [blocks[0], blocks[1]] == [
        {"type": "text", "text": "Sure, "},
        {"type": "tool_use", "id": "toolu_1", "name": "send_message", "input": {"text": "a fairly long message to split"}},
    ]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert fake.requests[0].body["stream"] is True


async def test_paused_stream_delivers_its_first_delta_before_the_rest_is_sent(nursery):
    fake = await nursery.start(serve_fake_anthropic)
    release = trio.Event()
    fake.queue(text_reply("one two three", pause=release))
    async with httpx.AsyncClient(base_url=fake.url) as client:
        async with client.stream("POST", "/v1/messages", json=body(stream=True), headers=HEADERS) as response:
            lines = response.aiter_lines()
            seen = []
            with trio.fail_after(10):
                while "text_delta" not in (line := await anext(lines)):
                    seen.append(line)
            assert "one " in line and not any("message_stop" in s for s in seen)
            release.set()
            rest = [line async for line in lines]
    assert any("message_stop" in line for line in rest)


async def test_api_key_and_version_header_are_checked_like_the_real_api(nursery):
    fake = await nursery.start(partial(serve_fake_anthropic, api_key="sk-real"))
    async with httpx.AsyncClient(base_url=fake.url) as client:
        wrong_key = await client.post("/v1/messages", json=body(), headers=dict(HEADERS, **{"x-api-key": "sk-x"}))
        no_version = await client.post("/v1/messages", json=body(), headers={"x-api-key": "sk-real"})
        good = await client.post("/v1/messages", json=body(messages=[{"role": "user", "content": "what is 6*7"}]),
                                 headers=HEADERS)

    assert wrong_key.status_code == 401
    assert wrong_key.json() == {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}
    assert no_version.status_code == 400 and no_version.json()["error"]["type"] == "invalid_request_error"
    assert good.status_code == 200 and good.json()["content"] == [{"type": "text", "text": "6*7 = 42"}]
    assert [r.headers["x-api-key"] for r in fake.requests] == ["sk-x", "sk-real", "sk-real"]
