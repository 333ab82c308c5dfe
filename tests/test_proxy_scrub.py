"""The proxy never hands the credential back, and a mapping serves only its groups and paths.

A loopback upstream that echoes every request header into its response headers and body,
in chunks cut inside the credential, plays the hostile (or careless) API.
"""
from __future__ import annotations

import gzip
import json

import httpx
import pytest
import trio

from checks import assert_error
from conftest import make_settings, start_server
from fakes import serve_on_loopback
from nanoclaw.lifespan import answer_lifespan
from nanoclaw.proxy._redact import MARKER

SECRET = "sk-real-secret-9d8c7b6a5f4e3d2c1b0a"
QUOTED_SECRET = 'sk-"quoted\\secret-0123456789'
MAPPINGS = "/container/credential-proxy/mappings"


async def echo_upstream(scope, receive, send):
    """Echoes the request headers: as response headers, then as a body in 7-byte chunks
    (so the credential is split across chunks); /gzip answers gzip-compressed."""
    if scope["type"] == "lifespan":
        await answer_lifespan(receive, send)
        return
    while (await receive()).get("more_body"):
        pass
    headers = [(k.decode(), v.decode()) for k, v in scope["headers"]]
    body = json.dumps({"path": scope["path"], "headers": headers}).encode()
    echoed = [(b"x-echo-" + k, v) for k, v in scope["headers"] if k in (b"x-api-key", b"authorization")]
    if scope["path"] == "/gzip":
        body = gzip.compress(body)
        echoed.append((b"content-encoding", b"gzip"))
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *echoed]})
    for offset in range(0, len(body), 7):
        await send({"type": "http.response.body", "body": body[offset:offset + 7],
                    "more_body": offset + 7 < len(body)})
        await trio.sleep(0)


@pytest.fixture
async def setup(nursery, tmp_path):
    upstream = await serve_on_loopback(nursery, echo_upstream, graceful_timeout=0.1)
    server = await start_server(nursery, make_settings(tmp_path))
    async with httpx.AsyncClient(timeout=10) as proxy_client:
        yield server, upstream, proxy_client
    await server.client.aclose()


async def add(client, **fields) -> dict:
    r = await client.post(MAPPINGS, json=fields)
    assert r.status_code == 201, r.text
    return r.json()


@pytest.mark.parametrize("credential_type,credential", [("api_key", SECRET), ("bearer", SECRET),
                                                        ("api_key", QUOTED_SECRET)])
async def test_an_echoing_upstream_never_returns_the_real_credential(setup, credential_type, credential):
    server, upstream, proxy_client = setup
    with trio.fail_after(20):
        await add(server.client, name="echo", upstreamUrl=upstream, credentialType=credential_type,
                  credential=credential)
        assert (await server.client.post("/container/credential-proxy/start")).json()["running"]
        proxy = server.services.proxy
        env = proxy.container_env(proxy.register_run("team-a"), "127.0.0.1")
        key = env["ECHO_API_KEY"]
        for path in ("/v1/echo", "/gzip"):
            r = await proxy_client.get(env["ECHO_BASE_URL"] + path,
                                       headers={"x-api-key": key, "accept-encoding": "gzip"})
            assert r.status_code == 200
            raw = json.dumps(list(r.headers.multi_items())) + r.text
            # The upstream saw it (the echo proves it) but nothing of it came back, in any form.
            for form in (credential, json.dumps(credential)[1:-1]):
                assert form not in raw
            assert MARKER.decode() in raw
            echoed = dict(map(tuple, r.json()["headers"]))
            assert echoed["accept-encoding"] == "identity"
            assert MARKER.decode() in (echoed.get("x-api-key") or echoed["authorization"])
            if path == "/v1/echo":
                # Masked to the same length: the upstream's Content-Length still holds.
                assert int(r.headers["content-length"]) == len(r.content)


async def test_groups_and_allowed_paths_limit_a_mapping_and_refusals_are_audited(setup):
    server, upstream, proxy_client = setup
    client = server.client
    with trio.fail_after(20):
        created = await add(client, name="scoped", upstreamUrl=upstream, credentialType="api_key",
                            credential=SECRET, groups=["team-a"], allowedPaths=["/v1/messages", "/v1/models/"])
        [info] = (await client.get(MAPPINGS)).json()["mappings"]
        assert info["id"] == created["id"]
        assert info["groups"] == ["team-a"] and info["allowedPaths"] == ["/v1/messages", "/v1/models/"]
        assert (await client.post("/container/credential-proxy/start")).json()["running"]
        proxy = server.services.proxy
        env_a = proxy.container_env(proxy.register_run("team-a"), "127.0.0.1")
        token_b = proxy.register_run("team-b")
        # Another group's run is not even told about the mapping.
        assert proxy.container_env(token_b, "127.0.0.1") == {}
        base, key = env_a["SCOPED_BASE_URL"], env_a["SCOPED_API_KEY"]

        async def get(path, token_key=key):
            return await proxy_client.get(base + path, headers={"x-api-key": token_key})

        assert (await get("/v1/messages")).status_code == 200
        assert (await get("/v1/messages/batches")).status_code == 200
        assert (await get("/v1/models/x")).status_code == 200
        for path in ("/v1/messagesX", "/v1/other", "/v1/%6Dessages", "/"):
            r = await get(path)
            assert_error(r, 403)
            assert "does not serve this path" in r.json()["error"]["message"]
        r = await get("/v1/messages", token_key="CREDENTIAL_PROXY_PLACEHOLDER." + token_b)
        assert_error(r, 403)
        assert "does not serve this group" in r.json()["error"]["message"]

        await proxy.wait_idle()
        entries = (await client.get("/container/audit-log", params={"severity": "violation"})).json()["entries"]
        refused = [e["message"] for e in entries if e["category"] == "credential-proxy"]
        assert sum("does not serve this path" in m for m in refused) == 4
        assert sum("does not serve this group" in m for m in refused) == 1
        assert {e["group"] for e in entries if "does not serve" in e["message"]} == {"team-a", "team-b"}


async def test_scopes_survive_a_restart_and_bad_scopes_get_400(nursery, tmp_path):
    settings = make_settings(tmp_path)
    server = await start_server(nursery, settings)
    base = dict(upstreamUrl="http://127.0.0.1:9", credentialType="api_key", credential=SECRET)
    for bad in ({"groups": ["../x"]}, {"groups": []}, {"allowedPaths": ["v1"]}, {"allowedPaths": ["/v1/../admin"]},
                {"allowedPaths": ["/v1?x=1"]}, {"allowedPaths": "/v1"}):
        assert_error(await server.client.post(MAPPINGS, json={"name": "bad", **base, **bad}), 400)
    await add(server.client, name="kept", groups=["g1", "g2"], allowedPaths=["/v1"], **base)
    await add(server.client, name="open", **base)
    await server.client.aclose()

    again = await start_server(nursery, make_settings(tmp_path / "unused", data_dir=settings.data_dir,
                                                      config_dir=settings.config_dir))
    mappings = {m["name"]: m for m in (await again.client.get(MAPPINGS)).json()["mappings"]}
    assert (mappings["kept"]["groups"], mappings["kept"]["allowedPaths"]) == (["g1", "g2"], ["/v1"])
    assert (mappings["open"]["groups"], mappings["open"]["allowedPaths"]) == (None, None)
    await again.client.aclose()
