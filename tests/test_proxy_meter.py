"""Issue 22 item 5: the credential proxy meters tokens from the upstream's own answers and
refuses model calls before the upstream once the group's month is spent."""
from __future__ import annotations

import json

import httpx
import pytest

from conftest import make_settings, start_server
from fakes import serve_on_loopback
from nanoclaw.lifespan import answer_lifespan
from test_proxy import add_mapping

ANTHROPIC_JSON = {"type": "message", "content": [], "usage": {
    "input_tokens": 10, "output_tokens": 20, "cache_creation_input_tokens": 3, "cache_read_input_tokens": 4}}
ANTHROPIC_SSE = (
    b'event: message_start\ndata: {"type": "message_start", "message": {"usage": {"input_tokens": 7, '
    b'"cache_read_input_tokens": 2, "output_tokens": 1}}}\n\n'
    b'data: {not json\n\ndata: [1, 2]\n\ndata: {"usage": "x"}\n\ndata: {"usage": {"output_tokens": true}}\n\n'
    b'data: ' + b'[' * 5000 + b'\n\n'
    b'event: message_delta\ndata: {"type": "message_delta", "usage": {"output_tokens": 15}}\n\n'
    b'event: message_stop\ndata: {"type": "message_stop"}\n\n')
OPENAI_JSON = {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}}
OPENAI_SSE = (b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\n'
              b'data: {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 6}}\n\ndata: [DONE]\n\n')


class ModelUpstream:
    """Answers /v1/messages and /v1/chat/completions as JSON or, when the body asks, a stream."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.url = ""

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(body)
        self.bodies.append(request)
        anthropic = scope["path"].endswith("/messages")
        if request.get("stream"):
            kind, answer = b"text/event-stream", ANTHROPIC_SSE if anthropic else OPENAI_SSE
        else:
            kind, answer = b"application/json", json.dumps(ANTHROPIC_JSON if anthropic else OPENAI_JSON).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", kind)]})
        for offset in range(0, len(answer), 7):  # small chunks: frames split anywhere
            await send({"type": "http.response.body", "body": answer[offset:offset + 7], "more_body": True})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
async def env(nursery, tmp_path):
    server = await start_server(nursery, make_settings(tmp_path))
    upstream = ModelUpstream()
    upstream.url = await serve_on_loopback(nursery, upstream, graceful_timeout=0.1)
    await add_mapping(server.client, url=upstream.url)
    assert (await server.client.post("/container/credential-proxy/start")).status_code == 200
    async with httpx.AsyncClient(timeout=10) as client:
        yield server, upstream, client
    await server.client.aclose()


async def call(server, client, token, path, body):
    env = server.services.proxy.container_env(token, "127.0.0.1")
    return await client.post(env["UPSTREAM_BASE_URL"] + path, json=body,
                             headers={"x-api-key": env["UPSTREAM_API_KEY"]})


async def metered(server):
    await server.services.proxy.wait_idle()
    rows = await server.services.db.fetchall(
        "SELECT run_id, group_name, mapping, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens "
        "FROM metered_usage ORDER BY id")
    return [tuple(row) for row in rows]


async def test_json_and_streamed_answers_of_both_apis_are_metered(env):
    server, upstream, client = env
    token = server.services.proxy.register_run("team-a", "run-1", None)
    for path, body in (("/v1/messages", {}), ("/v1/messages", {"stream": True}),
                       ("/v1/chat/completions", {}), ("/v1/chat/completions", {"stream": True})):
        r = await call(server, client, token, path, body)
        assert r.status_code == 200
    assert r.text == OPENAI_SSE.decode()  # the stream passes through intact
    assert await metered(server) == [
        ("run-1", "team-a", "upstream", 10, 20, 4, 3), ("run-1", "team-a", "upstream", 7, 15, 2, 0),
        ("run-1", "team-a", "upstream", 11, 5, 0, 0), ("run-1", "team-a", "upstream", 9, 6, 0, 0)]
    # A streamed chat completion is asked for its usage; the client's other options stay.
    assert upstream.bodies[3] == {"stream": True, "stream_options": {"include_usage": True}}


async def test_hostile_frames_do_not_break_the_stream(env):
    server, upstream, client = env
    token = server.services.proxy.register_run("team-a", "run-1", None)
    r = await call(server, client, token, "/v1/messages", {"stream": True})
    assert r.status_code == 200 and r.content == ANTHROPIC_SSE
    assert (await metered(server))[0][3:] == (7, 15, 2, 0)


async def test_calls_are_refused_before_the_upstream_once_the_month_is_spent(env):
    server, upstream, client = env
    token = server.services.proxy.register_run("team-a", "run-1", 60)
    answers = [await call(server, client, token, "/v1/messages", {}) for _ in range(5)]
    assert [r.status_code for r in answers] == [200, 200, 429, 429, 429]
    assert answers[2].json()["error"]["type"] == "rate_limit_error"
    assert "monthlyTokenBudget" in answers[2].json()["error"]["message"]
    assert len(upstream.bodies) == 2  # nothing reached the upstream after the budget was spent
    assert len(await metered(server)) == 2
    other = server.services.proxy.register_run("team-b", "run-2", 60)  # another group is not refused
    assert (await call(server, client, other, "/v1/messages", {})).status_code == 200
    entries = await server.services.db.fetchall(
        "SELECT message FROM audit_log WHERE message LIKE '%budget spent%'")
    assert len(entries) == 3
