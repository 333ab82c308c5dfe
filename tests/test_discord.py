"""Discord through the real server against a fake Discord (REST + Gateway) on 127.0.0.1 (issue 7).

Tests that involve gateway time (heartbeats, the pause after Invalid Session) run under
autojump_clock, with the store offloaded inline so the clock only jumps when all is idle.
"""
from __future__ import annotations

import json

import pytest
import trio

from checks import assert_error
from conftest import make_settings, start_server
from fakes.anthropic import serve_fake_anthropic, text_reply
from fakes.discord import BOT, HEARTBEAT_INTERVAL_MS, TOKEN, serve_fake_discord
from nanoclaw.clock import Clock

INTERVAL = HEARTBEAT_INTERVAL_MS / 1000
INTENTS = (1 << 9) | (1 << 12) | (1 << 15)


async def inline(fn, *args):
    return fn(*args)


@pytest.fixture
async def fake(nursery):
    return await nursery.start(serve_fake_discord)


@pytest.fixture
async def discord_server(nursery, tmp_path, fake):
    server = await start_server(nursery, make_settings(tmp_path, discord_api_base=fake.api_url))
    yield server
    await server.client.aclose()


@pytest.fixture
async def timed_server(nursery, tmp_path, fake):
    """For tests under autojump_clock."""
    server = await start_server(nursery, make_settings(tmp_path, discord_api_base=fake.api_url),
                                clock=Clock(start=1_700_000_000), offload=inline)
    yield server
    await server.client.aclose()


async def connect(server, fake):
    answer = await server.client.post("/channels/discord/connect", json={"token": TOKEN})
    assert answer.status_code == 200, answer.text
    await fake.wait_for(lambda: fake.session is not None and fake.live() is not None)
    await wait_status(server, connected=True)
    return answer.json()


async def wait_status(server, *, connected: bool) -> dict:
    with trio.fail_after(10):
        while (status := (await server.client.get("/channels/discord")).json())["connected"] != connected:
            await trio.sleep(0.01)
    return status


async def wait_stored(server, jid, count):
    with trio.fail_after(10):
        while len(rows := (await server.client.get(f"/channels/chats/{jid}/messages")).json()["messages"]) < count:
            await trio.sleep(0.01)
    return rows


async def test_validate_with_a_good_token_names_the_bot(discord_server, fake):
    answer = await discord_server.client.post("/channels/discord/validate", json={"token": TOKEN})
    assert answer.json() == {"valid": True, "accountName": "@andy", "message": "Valid: @andy"}
    assert (await discord_server.client.get("/channels/discord")).json()["configured"] is False
    assert fake.connections == []


async def test_validate_with_a_bad_token_says_why(discord_server):
    answer = await discord_server.client.post("/channels/discord/validate", json={"token": "nope"})
    assert answer.json() == {"valid": False, "accountName": None, "message": "401: Unauthorized"}


async def test_connect_with_a_bad_token_is_a_400_and_stores_nothing(discord_server, fake):
    answer = await discord_server.client.post("/channels/discord/connect", json={"token": "wrong-token"})
    error = assert_error(answer, 400, "INVALID_CREDENTIALS")
    assert "401: Unauthorized" in error["message"] and "wrong-token" not in answer.text
    assert await discord_server.services.db.fetchall("SELECT * FROM channel_configs") == []
    assert (await discord_server.client.get("/channels/discord")).json()["statusMessage"] == "Not configured"
    assert fake.connections == []


async def test_connect_identifies_with_the_message_intents(discord_server, fake):
    details = await connect(discord_server, fake)
    assert details["accountName"] == "@andy" and TOKEN not in json.dumps(details)
    gateway = fake.connections[0]
    assert gateway.path == "/" and gateway.query == {"v": ["10"], "encoding": ["json"]}
    [identify] = gateway.ops(2)
    assert identify["d"]["token"] == TOKEN and identify["d"]["intents"] == INTENTS
    listed = (await discord_server.client.get("/channels")).json()["channels"]
    assert {"name": "discord", "connected": True, "statusMessage": "Connected as @andy"} in listed
    row = await discord_server.services.db.fetchone("SELECT credentials FROM channel_configs")
    assert TOKEN not in row["credentials"]


async def test_people_messages_are_stored_and_bot_messages_never(discord_server, fake):
    await connect(discord_server, fake)
    await fake.dispatch_message(channel_id="111", content="from alice")
    await fake.dispatch_message(channel_id="111", content="my own answer", author_id=BOT["id"], username="andy")
    await fake.dispatch_message(channel_id="111", content="another bot", author_id="555", bot=True)
    await fake.dispatch_message(channel_id="111", content="from alice again")
    rows = await wait_stored(discord_server, "dc:111", 2)
    assert [r["content"] for r in rows] == ["from alice again", "from alice"]
    assert rows[0]["sender"] == "dc:700000000000000042" and rows[0]["senderName"] == "Alice"
    chats = (await discord_server.client.get("/channels/chats", params={"channel": "discord"})).json()["chats"]
    assert [(c["jid"], c["isGroup"]) for c in chats] == [("dc:111", True)]


async def test_direct_messages_and_mentions_are_addressed_to_the_bot(discord_server, fake):
    await connect(discord_server, fake)
    await fake.dispatch_message(channel_id="121", content="just chatting")
    await fake.dispatch_message(channel_id="121", content=f"<@{BOT['id']}> hello", mention_bot=True)
    await fake.dispatch_message(channel_id="131", content="a direct message", guild_id=None)
    await wait_stored(discord_server, "dc:131", 1)
    rows = await discord_server.services.db.fetchall("SELECT chat_jid, content, addressed FROM messages ORDER BY id")
    assert [tuple(r) for r in rows] == [("dc:121", "just chatting", 0), ("dc:121", f"<@{BOT['id']}> hello", 1),
                                       ("dc:131", "a direct message", 1)]
    chats = (await discord_server.client.get("/channels/chats", params={"channel": "discord"})).json()["chats"]
    assert {c["jid"]: c["isGroup"] for c in chats} == {"dc:121": True, "dc:131": False}


async def test_heartbeats_keep_time(timed_server, fake, autojump_clock):
    with trio.fail_after(300):
        await connect(timed_server, fake)
        gateway = fake.connections[0]
        await fake.wait_for(lambda: len(gateway.times(1)) >= 4, timeout=200)
    beats = gateway.times(1)
    # The first beat comes at a random point of the first interval, then one every interval.
    assert gateway.hello_at <= beats[0] <= gateway.hello_at + INTERVAL
    assert all(abs((b - a) - INTERVAL) < 0.1 for a, b in zip(beats, beats[1:]))
    # Each beat carries the last sequence number (READY was 1).
    assert [f["d"] for f in gateway.ops(1)] == [1] * len(beats)
    assert len(fake.connections) == 1


async def test_a_missed_heartbeat_ack_ends_in_a_resume(timed_server, fake, autojump_clock):
    with trio.fail_after(300):
        await connect(timed_server, fake)
        first = fake.connections[0]
        session_id = fake.session.session_id
        fake.withhold_acks = True
        await fake.wait_for(lambda: first.closed, timeout=200)
        fake.withhold_acks = False
        await fake.wait_for(lambda: len(fake.connections) == 2 and fake.connections[1].ops(6))
        await wait_status(timed_server, connected=True)
    # The connection is left when the next beat is due and the last one was never acknowledged.
    assert abs(first.closed_at - first.times(1)[-1] - INTERVAL) < 0.1
    # 1000 would end the session on Discord; a resumable close code keeps it.
    assert first.close_code == 4000
    second = fake.connections[1]
    assert second.path == "/resume/"
    [resume] = second.ops(6)
    assert resume["d"] == {"token": TOKEN, "session_id": session_id, "seq": 1}
    assert second.ops(2) == []


async def test_a_socket_the_server_closes_ends_in_a_resume_without_losing_messages(timed_server, fake,
                                                                                     autojump_clock):
    with trio.fail_after(60):
        await connect(timed_server, fake)
        await fake.dispatch_message(channel_id="222", content="before the drop")
        await wait_stored(timed_server, "dc:222", 1)
        await fake.close_socket(4000)
        # Sent while the client is away: the RESUME replays it.
        await fake.dispatch_message(channel_id="222", content="while away")
        await fake.wait_for(lambda: len(fake.connections) == 2 and fake.connections[1].ops(6))
        rows = await wait_stored(timed_server, "dc:222", 2)
        await wait_status(timed_server, connected=True)
    assert [r["content"] for r in rows] == ["while away", "before the drop"]
    [resume] = fake.connections[1].ops(6)
    assert resume["d"]["seq"] == 2 and resume["d"]["session_id"] == fake.session.session_id
    assert fake.connections[1].ops(2) == []


async def test_op7_reconnect_resumes_on_a_new_connection(timed_server, fake, autojump_clock):
    with trio.fail_after(60):
        await connect(timed_server, fake)
        await fake.request_reconnect()
        await fake.wait_for(lambda: len(fake.connections) == 2 and fake.connections[1].ops(6))
        await wait_status(timed_server, connected=True)
    assert fake.connections[0].close_code == 4000
    assert fake.connections[1].path == "/resume/" and fake.connections[1].ops(2) == []


async def test_invalid_session_leads_to_a_new_identify(timed_server, fake, autojump_clock):
    with trio.fail_after(60):
        await connect(timed_server, fake)
        gateway = fake.connections[0]
        invalidated_at = trio.current_time()
        await fake.invalid_session()
        await fake.wait_for(lambda: len(gateway.ops(2)) == 2 and fake.session is not None)
        await fake.dispatch_message(channel_id="333", content="after the new session")
        await wait_stored(timed_server, "dc:333", 1)
    # Discord asks for a pause of 1 to 5 s before identifying again, on the same connection.
    assert 1 <= gateway.times(2)[1] - invalidated_at <= 5.1
    assert len(fake.connections) == 1 and gateway.ops(6) == []


async def test_a_2500_character_answer_arrives_as_two_messages(discord_server, fake):
    await connect(discord_server, fake)
    text = "\n".join(f"{i:03d} " + "y" * 96 for i in range(25))  # 2,524 characters
    answer = await discord_server.client.post("/channels/messages", json={"chatJid": "dc:444", "content": text})
    assert answer.status_code == 201, answer.text
    assert [m["channel_id"] for m in fake.sent] == ["444", "444"]
    assert all(len(m["content"]) <= 2000 for m in fake.sent)
    assert "\n".join(m["content"] for m in fake.sent) == text


async def test_a_429_on_send_waits_for_retry_after(timed_server, fake, autojump_clock):
    with trio.fail_after(60):
        await connect(timed_server, fake)
        fake.fail_next("messages", 429, {"message": "You are being rate limited.", "retry_after": 6.5,
                                         "global": False})
        started = trio.current_time()
        answer = await timed_server.client.post("/channels/messages", json={"chatJid": "dc:555", "content": "hi"})
    assert answer.status_code == 201, answer.text
    assert fake.sent == [{"channel_id": "555", "content": "hi"}]
    assert 6.5 <= trio.current_time() - started < 7.5


async def test_disconnect_stops_the_task_and_closes_the_socket(discord_server, fake):
    await connect(discord_server, fake)
    gateway = fake.connections[0]
    with trio.fail_after(1):
        answer = await discord_server.client.post("/channels/discord/disconnect")
    assert answer.status_code == 200 and answer.json()["connected"] is False
    await fake.wait_for(lambda: gateway.closed, timeout=1)
    assert gateway.close_code == 1000
    assert (await discord_server.client.get("/channels/discord")).json()["statusMessage"] == "Not configured"
    assert len(fake.connections) == 1


async def test_server_shutdown_closes_the_socket(tmp_path, fake):
    settings = make_settings(tmp_path, discord_api_base=fake.api_url)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, settings)
            await connect(server, fake)
            await server.client.aclose()
            nursery.cancel_scope.cancel()
            cancelled_at = trio.current_time()
    assert trio.current_time() - cancelled_at < 1
    await fake.wait_for(lambda: fake.connections[0].closed, timeout=1)
    assert fake.connections[0].close_code == 1000


async def test_a_mention_in_a_routed_channel_is_answered_by_the_agent(nursery, tmp_path, fake, docker_engine,
                                                                      agent_image):
    llm = await nursery.start(serve_fake_anthropic)
    llm.queue(text_reply("42, of course."))
    settings = make_settings(tmp_path, discord_api_base=fake.api_url, container_runtime="docker",
                             container_network="host", agent_image=agent_image)
    server = await start_server(nursery, settings)
    env = [f"ANTHROPIC_BASE_URL={llm.url}", "ANTHROPIC_API_KEY=x"]
    answer = await server.client.post("/container/namespaces", json={
        "name": "guild", "chatJids": ["dc:777"], "containerConfig": {"env": env, "idleTimeoutSecs": 5}})
    assert answer.status_code == 201, answer.text
    await connect(server, fake)
    await fake.dispatch_message(channel_id="777", content=f"<@{BOT['id']}> what is 6*7?", mention_bot=True)
    await fake.wait_for(lambda: fake.sent, timeout=120)
    assert fake.sent == [{"channel_id": "777", "content": "42, of course."}]
    assert "6*7" in json.dumps(llm.messages_requests[0].body["messages"])
    history = (await server.client.get("/container/run-history", params={"group": "guild"})).json()["runs"]
    assert len(history) == 1
    rows = await wait_stored(server, "dc:777", 2)
    assert rows[0]["isFromBot"] is True and rows[0]["content"] == "42, of course."
    await server.client.aclose()
