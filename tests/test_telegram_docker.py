"""End to end with a real Docker engine: a Telegram message becomes a container run whose
answer reaches the fake Bot API's sendMessage."""
from __future__ import annotations

import json

import pytest
import trio

from conftest import docker_settings, start_server
from docker_support import agent_image, docker_engine  # noqa: F401  (fixtures)
from fakes.anthropic import serve_fake_anthropic, text_reply
from fakes.telegram import TOKEN, serve_fake_telegram

pytestmark = pytest.mark.usefixtures("docker_engine")

GROUP_CHAT = -1004242


async def test_a_triggered_message_runs_the_agent_and_its_answer_reaches_the_chat(nursery, tmp_path, agent_image):
    tg = await nursery.start(serve_fake_telegram)
    llm = await nursery.start(serve_fake_anthropic)
    settings = docker_settings(tmp_path, agent_image, telegram_api_base=tg.url)
    server = await start_server(nursery, settings)
    client = server.client
    r = await client.post("/container/namespaces", json={
        "name": "support", "chatJids": [f"tg:{GROUP_CHAT}"],
        "containerConfig": {"env": [f"ANTHROPIC_BASE_URL={llm.url}", "ANTHROPIC_API_KEY=sk-test"],
                            "idleTimeoutSecs": 5},
    })
    assert r.status_code == 201, r.text
    r = await client.post("/channels/telegram/connect", json={"token": TOKEN})
    assert r.status_code == 200, r.text
    llm.queue(text_reply("<internal>checking the CI</internal>The build is green again."))

    context = tg.push_message(GROUP_CHAT, "the build is red", first_name="Carol")
    await tg.wait_for(lambda: tg.confirmed > context["update_id"])
    tg.push_message(GROUP_CHAT, "@Andy what is going on?", first_name="Dave")
    await tg.wait_for(lambda: len(tg.sent) >= 1, timeout=120)

    assert tg.sent == [{"chat_id": str(GROUP_CHAT), "text": "The build is green again."}]
    [request] = llm.messages_requests
    asked = json.dumps(request.body["messages"])
    assert "the build is red" in asked and "@Andy what is going on?" in asked
    # The answer is stored right after the platform took it: wait for that (bounded).
    with trio.fail_after(10):
        while len(messages := (await client.get(f"/channels/chats/tg:{GROUP_CHAT}/messages")).json()["messages"]) < 3:
            await trio.sleep(0.05)
    assert [(m["content"], m["isFromBot"]) for m in messages] == [
        ("The build is green again.", True), ("@Andy what is going on?", False), ("the build is red", False)]
    [run] = await server.services.db.fetchall("SELECT kind, container_name, results FROM run_history")
    assert run["kind"] == "message" and run["container_name"].startswith("nanoclaw-support-")
    assert json.loads(run["results"]) == ["The build is green again."]
    # The answer reached the user, so the cursor moved: nothing is left to wake the agent.
    assert await server.services.feed.pending("support") is None
    await client.aclose()
