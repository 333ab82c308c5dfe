"""Slack through the real server against a fake Slack (Web API + Socket Mode) on 127.0.0.1 (issue 7)."""
from __future__ import annotations

import json

import pytest
import trio

from checks import assert_error
from conftest import make_settings, start_server
from fakes.anthropic import serve_fake_anthropic, text_reply
from fakes.slack import APP_TOKEN, BOT_TOKEN, BOT_USER, message_event, serve_fake_slack
from nanoclaw.clock import Clock

GOOD = {"botToken": BOT_TOKEN, "appToken": APP_TOKEN}


async def inline(fn, *args):
    return fn(*args)


@pytest.fixture
async def fake(nursery):
    return await nursery.start(serve_fake_slack)


@pytest.fixture
async def slack_server(nursery, tmp_path, fake):
    server = await start_server(nursery, make_settings(tmp_path, slack_api_base=fake.api_url))
    yield server
    await server.client.aclose()


async def connect(server, fake):
    answer = await server.client.post("/channels/slack/connect", json=GOOD)
    assert answer.status_code == 200, answer.text
    await fake.wait_for(lambda: fake.live_socket() is not None)
    await wait_connected(server)
    return answer.json()


async def wait_connected(server):
    with trio.fail_after(10):
        while not (await server.client.get("/channels/slack")).json()["connected"]:
            await trio.sleep(0.01)


async def stored(server, jid):
    return (await server.client.get(f"/channels/chats/{jid}/messages")).json()["messages"]


async def wait_stored(server, jid, count):
    with trio.fail_after(10):
        while len(rows := await stored(server, jid)) < count:
            await trio.sleep(0.01)
    return rows


async def test_validate_with_good_tokens_names_the_bot_and_stores_nothing(slack_server, fake):
    answer = await slack_server.client.post("/channels/slack/validate", json=GOOD)
    assert answer.status_code == 200
    assert answer.json() == {"valid": True, "accountName": "@andy (Test Team)", "message": "Valid: @andy (Test Team)"}
    assert [c.method for c in fake.calls] == ["auth.test", "apps.connections.open"]
    assert [c.token for c in fake.calls] == [BOT_TOKEN, APP_TOKEN]
    assert (await slack_server.client.get("/channels/slack")).json()["configured"] is False


async def test_validate_with_a_bad_bot_token_gives_slacks_error(slack_server):
    answer = await slack_server.client.post("/channels/slack/validate", json={**GOOD, "botToken": "xoxb-wrong"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["valid"] is False and "invalid_auth" in body["message"] and "auth.test" in body["message"]


async def test_tokens_of_the_wrong_kind_are_refused_before_asking_slack(slack_server, fake):
    answer = await slack_server.client.post("/channels/slack/validate", json={"botToken": APP_TOKEN,
                                                                             "appToken": BOT_TOKEN})
    assert_error(answer, 400, "VALIDATION_ERROR")
    assert fake.calls == []


async def test_connect_with_a_bad_app_token_is_a_400_and_stores_nothing(slack_server, fake):
    answer = await slack_server.client.post("/channels/slack/connect", json={**GOOD, "appToken": "xapp-1-wrong"})
    error = assert_error(answer, 400, "INVALID_CREDENTIALS")
    assert "invalid_auth" in error["message"] and "apps.connections.open" in error["message"]
    assert "xapp-1-wrong" not in answer.text
    assert await slack_server.services.db.fetchall("SELECT * FROM channel_configs") == []
    status = (await slack_server.client.get("/channels/slack")).json()
    assert status["configured"] is False and status["statusMessage"] == "Not configured"
    assert fake.sockets == []


async def test_connect_opens_socket_mode_and_reports_the_account(slack_server, fake):
    details = await connect(slack_server, fake)
    assert details["connected"] is True and details["accountName"] == "@andy (Test Team)"
    assert BOT_TOKEN not in json.dumps(details) and APP_TOKEN not in json.dumps(details)
    listed = (await slack_server.client.get("/channels")).json()["channels"]
    assert {"name": "slack", "connected": True, "statusMessage": "Connected as @andy (Test Team)"} in listed
    row = await slack_server.services.db.fetchone("SELECT credentials FROM channel_configs WHERE name = 'slack'")
    assert BOT_TOKEN not in row["credentials"] and APP_TOKEN not in row["credentials"]
    assert len(fake.sockets) == 1


async def test_every_envelope_is_acknowledged_and_only_peoples_new_messages_are_stored(slack_server, fake):
    await connect(slack_server, fake)
    envelopes = [
        await fake.push_event(message_event(channel="C1", text="hello there", ts="1700000001.000100")),
        await fake.push_event(message_event(channel="C1", text="a bot says", bot_id="B999", ts="1700000002.0001")),
        await fake.push_event(message_event(channel="C1", text="bot message", subtype="bot_message",
                                            ts="1700000003.0001")),
        await fake.push_event(message_event(channel="C1", text="my own", user=BOT_USER, ts="1700000004.0001")),
        await fake.push_event(message_event(channel="C1", text="edited", subtype="message_changed",
                                            ts="1700000005.0001")),
        await fake.push_event(message_event(channel="C1", text="last one", ts="1700000006.000100")),
    ]
    await fake.wait_for(lambda: set(envelopes) <= set(fake.acks))
    rows = await wait_stored(slack_server, "slack:C1", 2)
    assert [r["content"] for r in rows] == ["last one", "hello there"]
    assert rows[1]["sender"] == "slack:U0ALICE" and rows[1]["isFromBot"] is False
    assert fake.unacked == {}


async def test_a_mention_delivered_as_message_and_app_mention_is_stored_once(slack_server, fake):
    await connect(slack_server, fake)
    text = f"<@{BOT_USER}> what time is it?"
    await fake.push_event(message_event(channel="C2", text=text, ts="1700000010.000200"))
    await fake.push_event(message_event(channel="C2", text=text, ts="1700000010.000200", kind="app_mention"))
    await fake.wait_for(lambda: len(fake.acks) == 2)
    await fake.push_event(message_event(channel="C2", text="after", ts="1700000011.000200"))
    rows = await wait_stored(slack_server, "slack:C2", 2)
    assert [r["content"] for r in rows] == ["after", text]


async def test_direct_messages_and_mentions_are_addressed_to_the_bot(slack_server, fake):
    await connect(slack_server, fake)
    await fake.push_event(message_event(channel="C7", text="just chatting", ts="1700000040.000100"))
    await fake.push_event(message_event(channel="C7", text=f"hey <@{BOT_USER}>", ts="1700000041.000100"))
    await fake.push_event(message_event(channel="D7", text="hi bot", ts="1700000042.000100"))
    await fake.wait_for(lambda: len(fake.acks) == 3)
    await wait_stored(slack_server, "slack:D7", 1)
    rows = await slack_server.services.db.fetchall("SELECT chat_jid, content, addressed FROM messages ORDER BY ts")
    assert [tuple(r) for r in rows] == [("slack:C7", "just chatting", 0), ("slack:C7", f"hey <@{BOT_USER}>", 1),
                                       ("slack:D7", "hi bot", 1)]
    chats = (await slack_server.client.get("/channels/chats", params={"channel": "slack"})).json()["chats"]
    assert {c["jid"]: c["isGroup"] for c in chats} == {"slack:C7": True, "slack:D7": False}


async def test_a_disconnect_frame_leads_to_a_new_connection_and_no_event_is_lost(slack_server, fake):
    await connect(slack_server, fake)
    first = fake.sockets[0]
    opened = len(fake.calls_of("apps.connections.open"))
    before = await fake.push_event(message_event(channel="C3", text="before", ts="1700000020.000100"))
    await fake.wait_for(lambda: before in fake.acks)
    await fake.send_disconnect()
    # Slack may still push on the old connection until it closes; unacknowledged
    # envelopes are delivered again on the next one.
    during = await fake.push_event(message_event(channel="C3", text="during", ts="1700000021.000100"))
    await fake.wait_for(lambda: len(fake.sockets) == 2 and first.closed)
    after = await fake.push_event(message_event(channel="C3", text="after", ts="1700000022.000100"))
    await fake.wait_for(lambda: {before, during, after} <= set(fake.acks))
    rows = await wait_stored(slack_server, "slack:C3", 3)
    assert [r["content"] for r in rows] == ["after", "during", "before"]
    assert first.close_code == 1000
    assert len(fake.calls_of("apps.connections.open")) == opened + 1
    assert (await slack_server.client.get("/channels/slack")).json()["connected"] is True


async def test_a_socket_the_server_drops_is_opened_again(slack_server, fake):
    await connect(slack_server, fake)
    await fake.close_socket(1001)
    await fake.wait_for(lambda: len(fake.sockets) == 2 and not fake.sockets[1].closed)
    event = await fake.push_event(message_event(channel="C4", text="still here", ts="1700000030.000100"))
    await fake.wait_for(lambda: event in fake.acks)
    assert [r["content"] for r in await wait_stored(slack_server, "slack:C4", 1)] == ["still here"]


async def test_long_text_is_sent_as_several_messages(slack_server, fake):
    await connect(slack_server, fake)
    text = "\n".join(f"line {i:04d} " + "x" * 90 for i in range(450))  # about 45,000 characters
    answer = await slack_server.client.post("/channels/messages", json={"chatJid": "slack:C5", "content": text})
    assert answer.status_code == 201, answer.text
    assert len(fake.posted) == 2
    assert all(p["channel"] == "C5" and len(p["text"]) <= 40000 for p in fake.posted)
    assert "\n".join(p["text"] for p in fake.posted) == text


async def test_a_429_on_post_message_waits_for_retry_after(nursery, tmp_path, fake, autojump_clock):
    settings = make_settings(tmp_path, slack_api_base=fake.api_url)
    server = await start_server(nursery, settings, clock=Clock(start=1_700_000_000), offload=inline)
    with trio.fail_after(120):
        await connect(server, fake)
        fake.fail_next("chat.postMessage", 429, {"ok": False, "error": "ratelimited"}, headers={"Retry-After": "7"})
        answer = await server.client.post("/channels/messages", json={"chatJid": "slack:C6", "content": "hi"})
    assert answer.status_code == 201, answer.text
    first, second = fake.calls_of("chat.postMessage")
    assert 7 <= second.at - first.at < 8
    assert fake.posted == [{"channel": "C6", "text": "hi"}]
    await server.client.aclose()


async def test_disconnect_stops_promptly_and_closes_the_socket_cleanly(slack_server, fake):
    await connect(slack_server, fake)
    socket = fake.sockets[0]
    with trio.fail_after(1):
        answer = await slack_server.client.post("/channels/slack/disconnect")
    assert answer.status_code == 200
    assert answer.json()["connected"] is False and answer.json()["configured"] is False
    await fake.wait_for(lambda: socket.closed, timeout=1)
    assert socket.close_code == 1000
    assert await slack_server.services.db.fetchall("SELECT * FROM channel_configs") == []
    # disconnect returned after the task ended: nothing connects again.
    assert len(fake.sockets) == 1 and fake.tickets == {"ticket-1"}


async def test_server_shutdown_closes_the_socket_cleanly(tmp_path, fake):
    settings = make_settings(tmp_path, slack_api_base=fake.api_url)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, settings)
            await connect(server, fake)
            await server.client.aclose()
            nursery.cancel_scope.cancel()
            cancelled_at = trio.current_time()
    assert trio.current_time() - cancelled_at < 1
    await fake.wait_for(lambda: fake.sockets[0].closed, timeout=1)
    assert fake.sockets[0].close_code == 1000


async def test_an_app_mention_in_a_routed_channel_is_answered_by_the_agent(nursery, tmp_path, fake, docker_engine,
                                                                          agent_image):
    llm = await nursery.start(serve_fake_anthropic)
    llm.queue(text_reply("Four, of course."))
    settings = make_settings(tmp_path, slack_api_base=fake.api_url, container_runtime="docker",
                             container_network="host", agent_image=agent_image)
    server = await start_server(nursery, settings)
    env = [f"ANTHROPIC_BASE_URL={llm.url}", "ANTHROPIC_API_KEY=x"]
    answer = await server.client.post("/container/namespaces", json={
        "name": "team", "chatJids": ["slack:C9"], "containerConfig": {"env": env, "idleTimeoutSecs": 5}})
    assert answer.status_code == 201, answer.text
    await connect(server, fake)
    await fake.push_event(message_event(channel="C9", text=f"<@{BOT_USER}> what is 2+2?", kind="app_mention"))
    await fake.wait_for(lambda: fake.posted, timeout=120)
    assert fake.posted == [{"channel": "C9", "text": "Four, of course."}]
    assert "what is 2+2?" in json.dumps(llm.messages_requests[0].body["messages"])
    history = (await server.client.get("/container/run-history", params={"group": "team"})).json()["runs"]
    assert len(history) == 1
    rows = await wait_stored(server, "slack:C9", 2)
    assert rows[0]["isFromBot"] is True and rows[0]["content"] == "Four, of course."
    await server.client.aclose()
