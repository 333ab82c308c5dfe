"""End to end: a real container's agent reaches the fake LLM only through the credential proxy.

Host networking: the container reaches the proxy on 127.0.0.1, where it listens.
"""
from __future__ import annotations

import json

import pytest
import trio

from conftest import docker_settings, start_server
from docker_support import agent_image, docker_engine  # noqa: F401  (fixtures)
from fakes.anthropic import serve_fake_anthropic

pytestmark = pytest.mark.usefixtures("docker_engine")

REAL_KEY = "sk-ant-real-key-only-the-host-knows-1234"
FINISHED = {"success", "error", "timeout", "cancelled"}


async def test_a_container_run_reaches_the_llm_through_the_proxy_with_the_real_key(nursery, tmp_path, agent_image):
    with trio.fail_after(120):
        # The fake LLM answers 401 to any other key: only the proxy can talk to it.
        fake_llm = await nursery.start(lambda task_status: serve_fake_anthropic(api_key=REAL_KEY,
                                                                                task_status=task_status))
        settings = docker_settings(tmp_path, agent_image)
        server = await start_server(nursery, settings)
        client = server.client
        r = await client.post("/container/credential-proxy/mappings", json={
            "name": "anthropic", "upstreamUrl": fake_llm.url, "credentialType": "api_key", "credential": REAL_KEY})
        assert r.status_code == 201
        assert (await client.post("/container/credential-proxy/start")).json()["running"] is True
        # No ANTHROPIC_* in the group's own env: the container gets them from the proxy only.
        r = await client.post("/container/namespaces", json={"name": "proxied", "containerConfig": {"idleTimeoutSecs": 5}})
        assert r.status_code == 201

        r = await client.post("/container/runs", json={"group": "proxied", "prompt": "what is 2+2?"})
        assert r.status_code == 202
        run_id = r.json()["runId"]
        while (run := (await client.get(f"/container/runs/{run_id}")).json())["status"] not in FINISHED:
            await trio.sleep(0.05)  # bounded polling: a real container runs in real time

        assert run["status"] == "success", run
        assert run["results"] == ["2+2 = 4"]
        [request] = fake_llm.messages_requests
        assert request.headers["x-api-key"] == REAL_KEY
        assert "CREDENTIAL_PROXY_PLACEHOLDER" not in json.dumps(request.headers)
        # The run's token died with it.
        assert server.services.proxy.statistics().live_runs == 0
        await server.services.proxy.wait_idle()
        entries = (await client.get("/container/audit-log", params={"group": "proxied"})).json()["entries"]
        proxied = [e for e in entries if e["category"] == "credential-proxy"]
        assert [(e["details"]["method"], e["details"]["path"], e["details"]["status"]) for e in proxied] == [
            ("POST", "/v1/messages", 200)]
        assert REAL_KEY not in json.dumps(entries)
        await client.aclose()
