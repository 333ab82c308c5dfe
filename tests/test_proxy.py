"""Credential proxy: a real proxy in front of a real recording upstream on 127.0.0.1."""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import socket
import sqlite3
import stat
from dataclasses import dataclass, field

import httpx
import pytest
import trio

from conftest import make_settings, start_server
from fakes import serve_on_loopback
from nanoclaw.lifespan import answer_lifespan

SECRET = "sk-real-secret-7f3a9c1e5b2d"
CHUNK = 64 * 1024
MIB = 1024 * 1024
TIME_LIMIT = 20


def bounded(test):
    """Give the test an absolute time limit."""
    @functools.wraps(test)
    async def wrapper(*args, **kwargs):
        with trio.fail_after(TIME_LIMIT):
            await test(*args, **kwargs)
    return wrapper


def pattern(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


@dataclass
class Received:
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body_length: int
    body_sha256: str

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name]
        return values[0] if values else None


@dataclass
class RecordingUpstream:
    """ASGI app recording every request it gets. Paths:
    /v1/echo: JSON summary of the request; /v1/download?size=N: N bytes in 64 KiB chunks;
    /v1/stream: SSE, one event per `release` event set by the test;
    /v1/slow: first chunk, then the rest once `finish_slow` is set."""

    requests: list[Received] = field(default_factory=list)
    release: list[trio.Event] = field(default_factory=lambda: [trio.Event() for _ in range(3)])
    finish_slow: trio.Event = field(default_factory=trio.Event)
    url: str = ""

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        digest, length = hashlib.sha256(), 0
        while True:
            message = await receive()
            body = message.get("body", b"")
            digest.update(body)
            length += len(body)
            if not message.get("more_body"):
                break
        record = Received(scope["method"], scope["path"], scope["query_string"].decode(),
                          [(k.decode(), v.decode()) for k, v in scope["headers"]], length, digest.hexdigest())
        self.requests.append(record)
        path = scope["path"]
        if path == "/v1/stream":
            await self._start(send, 200, b"text/event-stream")
            for i, event in enumerate(self.release):
                await send({"type": "http.response.body", "more_body": True,
                            "body": f"event: delta\ndata: {{\"n\": {i}}}\n\n".encode()})
                await event.wait()
            await send({"type": "http.response.body", "body": b"event: done\ndata: {}\n\n"})
        elif path == "/v1/slow":
            await self._start(send, 200, b"text/plain")
            await send({"type": "http.response.body", "body": b"first;", "more_body": True})
            await self.finish_slow.wait()
            await send({"type": "http.response.body", "body": b"last"})
        elif path == "/v1/download":
            size = int(scope["query_string"].decode().partition("=")[2])
            data = pattern(size)
            await self._start(send, 200, b"application/octet-stream", size)
            for offset in range(0, size, CHUNK):
                await send({"type": "http.response.body", "body": data[offset:offset + CHUNK],
                            "more_body": offset + CHUNK < size})
        else:
            body = json.dumps({"method": record.method, "path": path, "query": record.query,
                               "bodyLength": length, "bodySha256": record.body_sha256}).encode()
            await self._start(send, 200, b"application/json", len(body),
                              extra=[(b"connection", b"keep-alive, x-upstream-hop"), (b"x-upstream-hop", b"1"),
                                     (b"x-upstream-kept", b"yes")])
            await send({"type": "http.response.body", "body": body})

    @staticmethod
    async def _start(send, status, content_type, length=None, extra=()):
        headers = [(b"content-type", content_type), *extra]
        if length is not None:
            headers.append((b"content-length", str(length).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})


async def start_upstream(nursery) -> RecordingUpstream:
    upstream = RecordingUpstream()
    upstream.url = await serve_on_loopback(nursery, upstream, graceful_timeout=0.1)
    return upstream


@dataclass
class Setup:
    server: object
    upstream: RecordingUpstream
    proxy_client: httpx.AsyncClient

    @property
    def proxy(self):
        return self.server.services.proxy

    def run(self, group: str = "team-a") -> tuple[str, dict[str, str]]:
        """What the supervisor does for a container run: a token and the container's env."""
        token = self.proxy.register_run(group)
        return token, self.proxy.container_env(token, "127.0.0.1")


async def add_mapping(client, name="upstream", url=None, credential_type="api_key", credential=SECRET):
    r = await client.post("/container/credential-proxy/mappings", json={
        "name": name, "upstreamUrl": url, "credentialType": credential_type, "credential": credential})
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture
async def setup(nursery, tmp_path):
    server = await start_server(nursery, make_settings(tmp_path))
    upstream = await start_upstream(nursery)
    await add_mapping(server.client, url=upstream.url)
    r = await server.client.post("/container/credential-proxy/start")
    assert r.status_code == 200 and r.json()["running"] is True
    async with httpx.AsyncClient(timeout=10) as proxy_client:
        yield Setup(server, upstream, proxy_client)
    await server.client.aclose()


async def port_accepts(port: int) -> bool:
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return False
    await stream.aclose()
    return True


# -- substitution ---------------------------------------------------------------


@bounded
async def test_real_credential_reaches_upstream_and_placeholder_never_does(setup):
    token, env = setup.run()
    r = await setup.proxy_client.post(
        env["UPSTREAM_BASE_URL"] + "/v1/echo?x=1", content=b"hello",
        headers={"x-api-key": env["UPSTREAM_API_KEY"], "Authorization": "Bearer " + env["UPSTREAM_API_KEY"],
                 "Connection": "keep-alive, x-client-hop", "x-client-hop": "1", "x-kept": "yes",
                 "Proxy-Authorization": "Basic abc"})
    assert r.status_code == 200, r.text
    assert r.json() == {"method": "POST", "path": "/v1/echo", "query": "x=1", "bodyLength": 5,
                        "bodySha256": hashlib.sha256(b"hello").hexdigest()}
    [got] = setup.upstream.requests
    assert got.header("x-api-key") == SECRET
    assert got.header("authorization") is None
    assert got.header("x-kept") == "yes"
    assert got.header("x-client-hop") is None and got.header("proxy-authorization") is None
    assert got.header("host") == setup.upstream.url.removeprefix("http://")
    assert not any("CREDENTIAL_PROXY_PLACEHOLDER" in v or token in v for _, v in got.headers)
    # Hop-by-hop headers of the upstream's answer stop at the proxy too.
    assert r.headers["x-upstream-kept"] == "yes" and "x-upstream-hop" not in r.headers


@bounded
async def test_bearer_and_custom_header_mappings_carry_their_credential(setup):
    client = setup.server.client
    await add_mapping(client, name="bearer-api", url=setup.upstream.url, credential_type="bearer",
                      credential="bearer-secret-123456")
    await add_mapping(client, name="goog", url=setup.upstream.url, credential_type="header:X-Goog-Api-Key",
                      credential="goog-secret-123456")
    token, env = setup.run()
    r1 = await setup.proxy_client.get(env["BEARER_API_BASE_URL"] + "/v1/echo",
                                      headers={"Authorization": "Bearer " + env["BEARER_API_API_KEY"]})
    r2 = await setup.proxy_client.get(env["GOOG_BASE_URL"] + "/v1/echo",
                                      headers={"X-Goog-Api-Key": env["GOOG_API_KEY"]})
    r3 = await setup.proxy_client.get(env["GOOG_BASE_URL"] + "/v1/echo",
                                      headers={"X-Nanoclaw-Run-Token": token})
    assert [r.status_code for r in (r1, r2, r3)] == [200, 200, 200]
    bearer, goog, by_run_header = setup.upstream.requests
    assert bearer.header("authorization") == "Bearer bearer-secret-123456"
    assert goog.header("x-goog-api-key") == "goog-secret-123456"
    assert by_run_header.header("x-goog-api-key") == "goog-secret-123456"
    assert by_run_header.header("x-nanoclaw-run-token") is None


@bounded
async def test_a_mapping_with_an_empty_secret_sends_no_credential_upstream(setup):
    """A local model server (Ollama, vLLM, llama.cpp) that needs no key."""
    await add_mapping(setup.server.client, name="local", url=setup.upstream.url, credential_type="bearer",
                      credential="")
    token, env = setup.run()
    r = await setup.proxy_client.get(env["LOCAL_BASE_URL"] + "/v1/echo",
                                     headers={"Authorization": "Bearer " + env["LOCAL_API_KEY"]})
    assert r.status_code == 200, r.text
    [got] = setup.upstream.requests
    assert got.header("authorization") is None
    assert not any("CREDENTIAL_PROXY_PLACEHOLDER" in v or token in v for _, v in got.headers)


# -- streaming --------------------------------------------------------------------


@bounded
async def test_sse_events_reach_the_client_before_the_upstream_has_finished(setup):
    _, env = setup.run()
    async with setup.proxy_client.stream("POST", env["UPSTREAM_BASE_URL"] + "/v1/stream", json={"stream": True},
                                         headers={"x-api-key": env["UPSTREAM_API_KEY"]}) as r:
        assert r.headers["content-type"] == "text/event-stream"
        seen = b""
        chunks = r.aiter_raw()
        for i, release in enumerate(setup.upstream.release):
            # The upstream waits for `release` before its next event: what we read now went through alone.
            while f'"n": {i}'.encode() not in seen:
                seen += await chunks.__anext__()
            assert b"event: done" not in seen
            release.set()
        async for chunk in chunks:
            seen += chunk
    assert seen.endswith(b"event: done\ndata: {}\n\n")


@bounded
async def test_client_hanging_up_mid_stream_ends_the_exchange_and_is_audited(setup):
    _, env = setup.run("team-c")
    async with setup.proxy_client.stream("POST", env["UPSTREAM_BASE_URL"] + "/v1/stream",
                                         headers={"x-api-key": env["UPSTREAM_API_KEY"]}) as r:
        assert b'"n": 0' in await r.aiter_raw().__anext__()
    # Closing an unfinished response closes the connection. The upstream would hold its
    # stream open forever: the proxy must notice the hang-up and let go by itself.
    await setup.proxy.wait_idle()
    [entry] = (await setup.server.client.get("/container/audit-log", params={"group": "team-c"})).json()["entries"]
    assert entry["severity"] == "warning"
    assert entry["details"]["outcome"] == "client disconnected"


@bounded
async def test_ten_mib_upload_and_download_pass_intact(setup):
    _, env = setup.run()
    data = os.urandom(10 * MIB)

    async def upload():
        for offset in range(0, len(data), CHUNK):
            yield data[offset:offset + CHUNK]

    headers = {"x-api-key": env["UPSTREAM_API_KEY"]}
    r = await setup.proxy_client.put(env["UPSTREAM_BASE_URL"] + "/v1/echo", content=upload(), headers=headers)
    assert r.status_code == 200
    assert r.json()["bodyLength"] == 10 * MIB
    assert r.json()["bodySha256"] == hashlib.sha256(data).hexdigest()

    r = await setup.proxy_client.get(env["UPSTREAM_BASE_URL"] + f"/v1/download?size={10 * MIB}", headers=headers)
    assert r.status_code == 200
    assert r.headers["content-length"] == str(10 * MIB)
    assert r.content == pattern(10 * MIB)


# -- only live runs ----------------------------------------------------------------


@bounded
async def test_requests_without_a_live_run_token_are_refused_and_audited(setup):
    token, env = setup.run("team-a")
    url = env["UPSTREAM_BASE_URL"] + "/v1/echo"
    setup.proxy.unregister_run(token)
    attempts = [
        {},
        {"x-api-key": "CREDENTIAL_PROXY_PLACEHOLDER.not-a-token"},
        {"Authorization": "Bearer CREDENTIAL_PROXY_PLACEHOLDER"},
        {"x-api-key": env["UPSTREAM_API_KEY"]},  # the run has finished
        {"X-Nanoclaw-Run-Token": token},
    ]
    for headers in attempts:
        r = await setup.proxy_client.get(url, headers=headers)
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "FORBIDDEN"
    assert setup.upstream.requests == []
    r = await setup.server.client.get("/container/audit-log", params={"severity": "violation"})
    refused = [e for e in r.json()["entries"] if e["category"] == "credential-proxy"]
    assert len(refused) == len(attempts)
    assert refused[0]["details"]["path"] == "/v1/echo" and refused[0]["details"]["mapping"] == "upstream"


@bounded
async def test_every_proxied_request_is_audited_for_its_group_without_header_values(setup):
    token, env = setup.run("team-b")
    proxied = await setup.proxy_client.post(env["UPSTREAM_BASE_URL"] + "/v1/echo?secret-query=1",
                                            content=b"12345", headers={"x-api-key": env["UPSTREAM_API_KEY"]})
    assert proxied.status_code == 200
    await setup.proxy.wait_idle()
    r = await setup.server.client.get("/container/audit-log", params={"group": "team-b"})
    [entry] = r.json()["entries"]
    details = entry["details"]
    assert entry["severity"] == "info" and entry["category"] == "credential-proxy"
    assert {k: details[k] for k in ("method", "mapping", "path", "status", "requestBytes")} == {
        "method": "POST", "mapping": "upstream", "path": "/v1/echo", "status": 200, "requestBytes": 5}
    assert details["responseBytes"] == len(proxied.content)
    assert details["durationMs"] >= 0
    text = json.dumps(entry)
    assert token not in text and SECRET not in text and "secret-query" not in text


# -- live control -----------------------------------------------------------------


@bounded
async def test_port_change_lets_the_request_in_flight_finish_and_moves_new_ones(setup):
    client = setup.server.client
    old_port = (await client.get("/container/credential-proxy/status")).json()["port"]
    _, env = setup.run()
    headers = {"x-api-key": env["UPSTREAM_API_KEY"]}
    async with setup.proxy_client.stream("GET", env["UPSTREAM_BASE_URL"] + "/v1/slow", headers=headers) as slow:
        chunks = slow.aiter_raw()
        assert await chunks.__anext__() == b"first;"

        r = await client.put("/container/credential-proxy/port", json={"port": 0})
        assert r.status_code == 200
        new_port = r.json()["port"]
        assert new_port != old_port and r.json()["running"] is True

        _, new_env = setup.run()
        assert f":{new_port}/" in new_env["UPSTREAM_BASE_URL"]
        r = await setup.proxy_client.get(new_env["UPSTREAM_BASE_URL"] + "/v1/echo",
                                         headers={"x-api-key": new_env["UPSTREAM_API_KEY"]})
        assert r.status_code == 200
        while await port_accepts(old_port):  # the old listener closes within a few scheduler ticks
            await trio.sleep(0)

        setup.upstream.finish_slow.set()
        assert b"".join([c async for c in chunks]) == b"last"


@bounded
async def test_port_already_in_use_is_refused_and_changes_nothing(setup):
    client = setup.server.client
    before = (await client.get("/container/credential-proxy/status")).json()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        r = await client.put("/container/credential-proxy/port", json={"port": busy.getsockname()[1]})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "PORT_UNAVAILABLE"
    assert (await client.get("/container/credential-proxy/status")).json() == before
    for bad in ({"port": 70000}, {"port": -1}, {"port": "x"}, {"prt": 1}):
        r = await client.put("/container/credential-proxy/port", json=bad)
        assert r.status_code == 400
    assert (await client.get("/container/credential-proxy/status")).json() == before


@bounded
async def test_stop_and_start(setup):
    client = setup.server.client
    port = (await client.get("/container/credential-proxy/status")).json()["port"]
    r = await client.post("/container/credential-proxy/stop")
    assert r.status_code == 200
    # Stopped, it shows the port start will use: the configured one (0 here: any free port).
    assert r.json() == {"running": False, "port": 0, "mappingCount": 1, "bindHost": "127.0.0.1",
                        "extraBindHosts": []}
    token = setup.proxy.register_run("team-a")
    assert setup.proxy.container_env(token, "127.0.0.1") == {}
    while await port_accepts(port):
        await trio.sleep(0)
    # The API itself is untouched.
    assert (await client.get("/container/credential-proxy/status")).status_code == 200

    r = await client.post("/container/credential-proxy/start")
    assert r.status_code == 200 and r.json()["running"] is True
    env = setup.proxy.container_env(token, "127.0.0.1")
    r = await setup.proxy_client.get(env["UPSTREAM_BASE_URL"] + "/v1/echo", headers={"x-api-key": env["UPSTREAM_API_KEY"]})
    assert r.status_code == 200
    # Starting twice is harmless.
    assert (await client.post("/container/credential-proxy/start")).json()["running"] is True


# -- failures -----------------------------------------------------------------------


@bounded
async def test_upstream_down_gives_502_envelope(setup):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    await add_mapping(setup.server.client, name="down", url=f"http://127.0.0.1:{dead_port}")
    _, env = setup.run()
    r = await setup.proxy_client.get(env["DOWN_BASE_URL"] + "/v1/echo", headers={"x-api-key": env["DOWN_API_KEY"]})
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "BAD_GATEWAY"
    assert "down" in r.json()["error"]["message"]


@bounded
async def test_unknown_mapping_gives_404_envelope(setup):
    _, env = setup.run()
    base = env["UPSTREAM_BASE_URL"].rsplit("/", 1)[0]
    r = await setup.proxy_client.get(base + "/nope/v1/echo", headers={"x-api-key": env["UPSTREAM_API_KEY"]})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "NOT_FOUND"
    assert setup.upstream.requests == []


@bounded
async def test_paths_that_climb_out_of_the_upstream_base_are_refused(setup):
    _, env = setup.run()
    port = int(env["UPSTREAM_BASE_URL"].split(":")[2].split("/")[0])
    for target in ("/upstream/v1/../admin", "/upstream/v1/%2e%2e/admin", "/upstream/./v1/echo"):
        # By hand: HTTP clients remove dot segments before sending.
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(f"GET {target} HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n"
                              f"x-api-key: {env['UPSTREAM_API_KEY']}\r\n\r\n".encode())
        answer = b""
        while chunk := await stream.receive_some():
            answer += chunk
        await stream.aclose()
        assert answer.startswith(b"HTTP/1.1 400 "), (target, answer)
        assert b'"BAD_REQUEST"' in answer
    assert setup.upstream.requests == []


# -- mappings ------------------------------------------------------------------------


@bounded
async def test_mapping_lifecycle_and_bad_input(setup):
    client = setup.server.client
    before = (await client.get("/container/credential-proxy/mappings")).json()
    good = {"name": "other", "upstreamUrl": "https://example.test/v1", "credentialType": "api_key",
            "credential": "other-secret-123456"}
    bad_bodies = [
        good | {"upstreamUrl": "ftp://example.test"},
        good | {"upstreamUrl": "https://user:pw@example.test"},
        good | {"upstreamUrl": "not a url"},
        good | {"credentialType": "cookie"},
        good | {"credentialType": "header:Host"},
        good | {"credential": "two\nlines-secret"},
        good | {"name": "bad/name"},
        good | {"name": "upstream"},  # taken
        good | {"name": "UPSTREAM"},  # same variables as "upstream"
        good | {"extra": 1},
        {k: v for k, v in good.items() if k != "credential"},
    ]
    for body in bad_bodies:
        r = await client.post("/container/credential-proxy/mappings", json=body)
        assert r.status_code in (400, 409), (body, r.text)
        assert "error" in r.json()
    assert (await client.get("/container/credential-proxy/mappings")).json() == before

    created = await add_mapping(client, name="Other API", url="https://example.test/v1/")
    assert set(created) == {"id", "name", "placeholder"}
    assert created["placeholder"] == "CREDENTIAL_PROXY_PLACEHOLDER"
    listed = (await client.get("/container/credential-proxy/mappings")).json()["mappings"]
    assert [m["name"] for m in listed] == ["upstream", "Other API"]
    assert listed[1]["upstreamUrl"] == "https://example.test/v1"
    assert (await client.get("/container/credential-proxy/status")).json()["mappingCount"] == 2
    _, env = setup.run()
    assert env["OTHER_API_BASE_URL"].endswith("/Other%20API")

    assert (await client.delete(f"/container/credential-proxy/mappings/{created['id']}")).status_code == 204
    assert (await client.delete(f"/container/credential-proxy/mappings/{created['id']}")).status_code == 404
    assert (await client.get("/container/credential-proxy/mappings")).json() == before
    _, env = setup.run()
    assert "OTHER_API_BASE_URL" not in env


@bounded
async def test_container_env_sets_anthropic_variables_for_the_well_known_mapping(setup):
    await add_mapping(setup.server.client, name="Anthropic API", url="https://api.anthropic.com",
                      credential="sk-ant-secret-123456")
    token, env = setup.run()
    port = (await setup.server.client.get("/container/credential-proxy/status")).json()["port"]
    key = f"CREDENTIAL_PROXY_PLACEHOLDER.{token}"
    assert env == {
        "UPSTREAM_BASE_URL": f"http://127.0.0.1:{port}/upstream", "UPSTREAM_API_KEY": key,
        "ANTHROPIC_API_BASE_URL": f"http://127.0.0.1:{port}/Anthropic%20API", "ANTHROPIC_API_API_KEY": key,
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}/Anthropic%20API", "ANTHROPIC_API_KEY": key,
    }


@bounded
async def test_secrets_never_appear_in_answers_audit_log_or_server_log(setup, caplog):
    caplog.set_level(logging.DEBUG)
    client = setup.server.client
    answers = []
    answers.append(await client.post("/container/credential-proxy/mappings", json={
        "name": "upstream", "upstreamUrl": setup.upstream.url, "credentialType": "api_key", "credential": SECRET}))
    answers.append(await client.post("/container/credential-proxy/mappings", json={
        "name": "x", "upstreamUrl": "https://example.test", "credentialType": "api_key",
        "credential": SECRET + "\n"}))
    answers.append(await client.post("/container/credential-proxy/mappings", json={
        "name": "y", "upstreamUrl": f"https://u:{SECRET}@example.test", "credentialType": "api_key",
        "credential": "abcdefgh12345"}))
    for path in ("mappings", "status"):
        answers.append(await client.get(f"/container/credential-proxy/{path}"))
    _, env = setup.run()
    answers.append(await setup.proxy_client.get(env["UPSTREAM_BASE_URL"] + "/v1/echo",
                                                headers={"x-api-key": env["UPSTREAM_API_KEY"]}))
    answers.append(await setup.proxy_client.get(env["UPSTREAM_BASE_URL"] + "/v1/echo"))
    await setup.proxy.wait_idle()
    answers.append(await client.get("/container/audit-log", params={"limit": 500}))
    answers.append(await client.get("/openapi.json"))
    assert [r.status_code for r in answers] == [409, 400, 400, 200, 200, 200, 403, 200, 200]
    assert setup.upstream.requests[0].header("x-api-key") == SECRET  # it was in use all along
    for r in answers:
        assert SECRET not in r.text
        assert SECRET not in json.dumps(dict(r.headers))
    assert "****" + SECRET[-4:] in answers[3].text
    assert caplog.records and SECRET not in caplog.text
    with sqlite3.connect(setup.server.settings.database_path) as conn:
        dump = "\n".join(conn.iterdump())
    assert SECRET not in dump
    key_file = setup.server.settings.config_dir / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


@bounded
async def test_proxy_starts_on_boot_when_a_mapping_exists(tmp_path):
    settings = make_settings(tmp_path)
    async with trio.open_nursery() as nursery:
        upstream = await start_upstream(nursery)
        async with trio.open_nursery() as first:
            server = await start_server(first, settings)
            assert (await server.client.get("/container/credential-proxy/status")).json()["running"] is False
            await add_mapping(server.client, url=upstream.url)
            await server.client.aclose()
            first.cancel_scope.cancel()
        async with trio.open_nursery() as second:
            server = await start_server(second, settings)
            status = (await server.client.get("/container/credential-proxy/status")).json()
            assert status["running"] is True and status["mappingCount"] == 1
            token = server.services.proxy.register_run("team-a")
            env = server.services.proxy.container_env(token, "127.0.0.1")
            async with httpx.AsyncClient() as proxy_client:
                r = await proxy_client.get(env["UPSTREAM_BASE_URL"] + "/v1/echo",
                                           headers={"x-api-key": env["UPSTREAM_API_KEY"]})
            assert r.status_code == 200
            assert upstream.requests[0].header("x-api-key") == SECRET  # decrypted after the restart
            await server.client.aclose()
            second.cancel_scope.cancel()
        nursery.cancel_scope.cancel()
