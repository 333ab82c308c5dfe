"""The whole flow with real parts: Telegram chat -> agent container -> LLM through the proxy -> chat.

Fake Telegram Bot API and fake Anthropic API on 127.0.0.1; a real Docker engine runs
the real agent image with host networking; the credential proxy holds the only key the
fake LLM accepts.
"""
from __future__ import annotations

import datetime as dt
import json
import subprocess

import pytest
import trio

from conftest import docker_settings, start_server
from docker_support import agent_image, docker_engine  # noqa: F401  (fixtures)
from fakes.anthropic import serve_fake_anthropic
from fakes.telegram import TOKEN, serve_fake_telegram

pytestmark = pytest.mark.usefixtures("docker_engine")

REAL_KEY = "sk-ant-e2e-real-secret-9f8e7d6c5b4a"
GROUP = -1001234


def container_env(name: str) -> list[str]:
    out = subprocess.run(["docker", "inspect", "--format", "{{json .Config.Env}}", name],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


async def proxied_telegram_server(nursery, tmp_path, image: str, serve_llm, real_key: str):
    """A server on the real engine with a fake Telegram and a fake LLM that takes only `real_key`,
    reached through the started credential proxy's `anthropic` mapping: (server, tg, llm)."""
    tg = await nursery.start(serve_fake_telegram)
    llm = await nursery.start(lambda task_status: serve_llm(api_key=real_key, task_status=task_status))
    settings = docker_settings(tmp_path, image, telegram_api_base=tg.url)
    server = await start_server(nursery, settings)
    r = await server.client.post("/container/credential-proxy/mappings", json={
        "name": "anthropic", "upstreamUrl": llm.url, "credentialType": "api_key", "credential": real_key})
    assert r.status_code == 201, r.text
    assert (await server.client.post("/container/credential-proxy/start")).json()["running"] is True
    return server, tg, llm


async def test_a_telegram_group_talks_to_its_agent_end_to_end(nursery, tmp_path, agent_image):
    server, tg, llm = await proxied_telegram_server(nursery, tmp_path, agent_image, serve_fake_anthropic, REAL_KEY)
    client = server.client
    r = await client.post("/container/namespaces", json={
        "name": "family", "chatJids": [f"tg:{GROUP}"], "containerConfig": {"idleTimeoutSecs": 120}})
    assert r.status_code == 201, r.text
    assert (await client.post("/channels/telegram/connect", json={"token": TOKEN})).status_code == 200

    with trio.fail_after(240):
        # 1. A question in the group reaches the agent, whose answer comes back.
        tg.push_message(GROUP, "@Andy what is 2+2?", first_name="Alice")
        await tg.wait_for(lambda: len(tg.sent) >= 1, timeout=120)
        assert tg.sent[0] == {"chat_id": str(GROUP), "text": "2+2 = 4"}

        # The container holds only the placeholder and its run token, never the key.
        live = server.services.supervisor.live_run("family")
        env = container_env(live.container_name)
        assert REAL_KEY not in json.dumps(env)
        assert any(e.startswith("ANTHROPIC_API_KEY=CREDENTIAL_PROXY_PLACEHOLDER.") for e in env)

        # 2. A follow-up in the same chat reaches the same live container through IPC.
        tg.push_message(GROUP, "@Andy and what is 3*5?", first_name="Alice")
        await tg.wait_for(lambda: len(tg.sent) >= 2, timeout=60)
        assert tg.sent[1] == {"chat_id": str(GROUP), "text": "3*5 = 15"}
        assert server.services.supervisor.live_run("family").container_name == live.container_name

        # 3. A schedule for the group fires; the idle chat container makes way for it.
        when = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)).isoformat()
        r = await client.post("/container/schedules", json={
            "name": "answer", "group": "family", "prompt": "what is 6*7?",
            "schedule": {"type": "once", "value": when}, "contextMode": "isolated"})
        assert r.status_code == 201, r.text
        schedule_id = r.json()["id"]
        await tg.wait_for(lambda: len(tg.sent) >= 3, timeout=120)
        assert tg.sent[2] == {"chat_id": str(GROUP), "text": "6*7 = 42"}
        while (logs := (await client.get(f"/container/schedules/{schedule_id}/logs")).json()["logs"]) == [] \
                or logs[0]["status"] == "running":
            await trio.sleep(0.1)  # bounded by fail_after: the run ends in real time

    # The real credential reached the LLM on every call, the placeholder never did.
    calls = llm.messages_requests
    assert len(calls) == 3 and all(c.headers["x-api-key"] == REAL_KEY for c in calls)
    assert not any("PLACEHOLDER" in json.dumps(c.headers) for c in calls)

    # Run history, schedule log, chat and audit log tell the same story.
    runs = (await client.get("/container/run-history", params={"group": "family"})).json()["runs"]
    task_run, chat_run = runs
    assert (chat_run["kind"], chat_run["status"], chat_run["results"]) == ("message", "success",
                                                                           ["2+2 = 4", "3*5 = 15"])
    assert chat_run["containerName"] == live.container_name
    assert (task_run["kind"], task_run["scheduleId"], task_run["results"]) == ("task", schedule_id, ["6*7 = 42"])
    [log] = logs
    assert (log["status"], log["runId"], log["result"]) == ("success", task_run["runId"], "6*7 = 42")
    messages = (await client.get(f"/channels/chats/tg:{GROUP}/messages")).json()["messages"]
    # Telegram dates have one-second resolution, so only the set is compared, not the order.
    assert sorted((m["content"], m["isFromBot"]) for m in messages) == sorted([
        ("@Andy what is 2+2?", False), ("2+2 = 4", True), ("@Andy and what is 3*5?", False),
        ("3*5 = 15", True), ("6*7 = 42", True)])
    await server.services.proxy.wait_idle()
    audit = (await client.get("/container/audit-log", params={"group": "family", "limit": 500})).json()["entries"]
    proxied = [e for e in audit if e["category"] == "credential-proxy"]
    assert len(proxied) == 3 and all(e["details"]["status"] == 200 for e in proxied)
    assert REAL_KEY not in json.dumps(audit)
    await client.aclose()
