"""Issue 12, items 6-10: bad input gets one JSON envelope (or a documented transport answer)."""
from __future__ import annotations

import pytest

from checks import assert_error
from nanoclaw.jsondepth import MAX_DEPTH, TooDeep, check_depth


# -- item 6: nesting cap --------------------------------------------------------------

def test_check_depth_counts_brackets_outside_strings_only():
    check_depth("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    check_depth('{"a": "' + "[" * 1000 + '"}')
    check_depth(b'["\\"[[[[", {"b": [1]}]', max_depth=3)
    with pytest.raises(TooDeep):
        check_depth("[" * (MAX_DEPTH + 1))
    with pytest.raises(ValueError):  # TooDeep is a ValueError
        check_depth(b'{"a": {"b": [[]]}}', max_depth=3)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 100_000])
async def test_a_body_nested_deeper_than_the_cap_is_a_400_envelope(client, depth):
    raw = "[" * depth + "]" * depth
    for method, path in [("POST", "/container/namespaces"), ("PUT", "/container/mount/allowlist")]:
        answer = await client.request(method, path, content=raw, headers={"Content-Type": "application/json"})
        error = assert_error(answer, 400, "MALFORMED_JSON")
        assert str(MAX_DEPTH) in error["message"]


async def test_a_body_at_the_cap_reaches_validation(client):
    raw = '{"name": "deep", "containerConfig": ' + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "}"
    answer = await client.post("/container/namespaces", content=raw, headers={"Content-Type": "application/json"})
    assert_error(answer, 400, "VALIDATION_ERROR")


# -- item 7: upstreamUrl ---------------------------------------------------------------

MAPPING = {"name": "up", "credentialType": "api_key", "credential": "sk-secret-123456"}


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:1/\r\nX: y", "http://127.0.0.1:1/a b", "http://127.0.0.1:1/\t", "http://exa mple.test",
    "http://exa<mple.test/", "http://127.0.0.1:1/\x00", "http://bücher.test/", "javascript:alert(1)", "http:///x",
])
async def test_an_upstream_url_with_control_characters_or_a_bad_host_is_refused(client, url):
    answer = await client.post("/container/credential-proxy/mappings", json=MAPPING | {"upstreamUrl": url})
    assert_error(answer, 400)
    assert (await client.get("/container/credential-proxy/mappings")).json()["mappings"] == []


async def test_a_stored_mapping_whose_url_cannot_be_used_gives_an_audited_502_not_a_500(tmp_path):
    import sqlite3

    import httpx

    from serverproc import make_settings, running_server

    settings = make_settings(tmp_path)
    async with running_server(settings) as server:
        answer = await server.client.post("/container/credential-proxy/mappings",
                                          json=MAPPING | {"upstreamUrl": "http://127.0.0.1:1"})
        assert answer.status_code == 201, answer.text
    # As a mapping stored before the strict check would be.
    with sqlite3.connect(settings.database_path) as conn:
        conn.execute("UPDATE credential_mappings SET upstream_url = ?", ("http://127.0.0.1:1/\r\nX: y",))
    async with running_server(settings) as server:
        proxy = server.services.proxy
        env = proxy.container_env(proxy.register_run("team"), "127.0.0.1")
        async with httpx.AsyncClient() as http:
            answer = await http.get(env["UP_BASE_URL"] + "/v1/x", headers={"x-api-key": env["UP_API_KEY"]})
        error = assert_error(answer, 502, "BAD_GATEWAY")
        assert "upstreamUrl" in error["message"]
        await proxy.wait_idle()
        entries = (await server.client.get("/container/audit-log")).json()["entries"]
        assert any(e["category"] == "credential-proxy" and e["details"].get("status") == 502
                   and e["details"].get("outcome") == "not forwarded" for e in entries), entries


# -- item 8: early answers and keep-alive ----------------------------------------------

@pytest.mark.parametrize("size", [10, 200_000, 2_000_000])
async def test_a_keep_alive_client_survives_an_early_answer(keyed_server, size):
    """401 (no key), 415 (not JSON) and 413 (too large) come before the body is read."""
    import httpx

    server, key = keyed_server
    body = b"x" * size
    cases = [({"Content-Type": "application/json"}, 401),
             ({"X-API-Key": key, "Content-Type": "text/plain"}, 415)]
    if size > 1 << 20:
        cases.append(({"X-API-Key": key, "Content-Type": "application/json"}, 413))
    async with httpx.AsyncClient(base_url=server.api, timeout=30) as http:  # keep-alive pool
        for headers, status in cases:
            answer = await http.post("/container/namespaces", content=body, headers=headers)
            assert_error(answer, status)
            # The next request on the same client works.
            after = await http.get("/container/namespaces", headers={"X-API-Key": key})
            assert after.status_code == 200, after.text


@pytest.mark.parametrize("auth,content_type,status", [
    (False, "application/json", 401), (True, "text/plain", 415), (True, "application/json", 413)])
async def test_an_answer_given_before_the_body_arrived_says_connection_close(keyed_server, auth, content_type,
                                                                             status):
    import trio

    server, key = keyed_server
    host, port = server.url.removeprefix("http://").split(":")
    length = 2 << 20 if status == 413 else 1000
    head = (f"POST /api/v1/container/namespaces HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {length}\r\n" + (f"X-API-Key: {key}\r\n" if auth else "") + "\r\n")
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(head.encode() + b"x" * 10)  # the rest of the body never comes
    answer = b""
    with trio.fail_after(10):
        while b"\r\n\r\n" not in answer:
            answer += await stream.receive_some(65536)
    await stream.aclose()
    status_line, *headers = answer.split(b"\r\n\r\n")[0].decode().split("\r\n")
    assert status_line.startswith(f"HTTP/1.1 {status} "), answer
    assert "connection: close" in [h.lower() for h in headers], answer


@pytest.fixture
async def keyed_server(server):
    _, raw = await server.services.api_keys.create("tests")
    return server, raw


# -- item 9: non-ASCII bytes in the request target -------------------------------------

async def _raw_request(server, target: bytes) -> bytes:
    import trio

    host, port = server.url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = b""
    with trio.fail_after(10):
        while chunk := await stream.receive_some(65536):
            answer += chunk
    await stream.aclose()
    return answer


async def _asgi_get(app, path: str, raw_path: bytes, query: bytes = b"") -> tuple[int, dict, bytes]:
    """One GET straight through the ASGI interface, as any ASGI server may pass it."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": raw_path, "query_string": query, "root_path": "",
             "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80)}
    sent = []
    requested = False

    async def receive():
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        import trio

        await trio.sleep_forever()

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, body


@pytest.mark.parametrize("path,raw", [
    ("/api/v1/container/namespaces/\u00e9", b"/api/v1/container/namespaces/\xc3\xa9"),
    ("/api/v1/\u00e9t\u00e9", b"/api/v1/\xc3\xa9t\xc3\xa9"),
    ("/\u00ff", b"/\xff"),
    ("/api/v1/container/namespaces/\udcff", b"/api/v1/container/namespaces/\xff"),
    ("/api/v1/\ud800", b"/api/v1/\xed\xa0\x80"),
])
async def test_every_answer_the_app_gives_to_a_non_ascii_path_is_a_json_envelope(server, path, raw):
    import json

    from nanoclaw.app import create_app

    status, headers, body = await _asgi_get(create_app(server.services), path, raw, query="q=\u00e9".encode())
    assert 400 <= status < 500
    assert headers["content-type"].startswith("application/json")
    assert list(json.loads(body)) == ["error"]


async def test_hypercorn_refuses_raw_non_ascii_before_the_app_and_percent_encoding_works(server):
    # Documented in docs/troubleshooting.md: h11 answers an empty 400 and closes.
    refused = await _raw_request(server, b"/api/v1/container/namespaces/\xc3\xa9")
    assert refused.startswith(b"HTTP/1.1 400 ") and refused.endswith(b"\r\n\r\n")
    encoded = await _raw_request(server, b"/api/v1/container/namespaces/%C3%A9")
    assert encoded.startswith(b"HTTP/1.1 404 ") and b'"NOT_FOUND"' in encoded
