"""Discord through the real server against a fake Discord (REST + Gateway) on 127.0.0.1 (issue 7).

Tests that involve gateway time (heartbeats, the pause after Invalid Session) run under
autojump_clock, with the store offloaded inline so the clock only jumps when all is idle.
"""
from __future__ import annotations

import pytest
import trio

from channel_support import DISCORD, discord, stored, timed_server  # noqa: F401  (fixtures)
from conftest import make_settings
from fakes.discord import BOT, HEARTBEAT_INTERVAL_MS, TOKEN

INTERVAL = HEARTBEAT_INTERVAL_MS / 1000


@pytest.fixture
def settings(tmp_path, discord):
    return make_settings(tmp_path, discord_api_base=discord.api_url)


async def wait_status(server, *, connected: bool) -> dict:
    with trio.fail_after(10):
        while (status := (await server.client.get("/channels/discord")).json())["connected"] != connected:
            await trio.sleep(0.01)
    return status


async def test_people_messages_are_stored_and_bot_messages_never(server, discord):
    await DISCORD.connect(server, discord)
    await discord.dispatch_message(channel_id="111", content="from alice")
    await discord.dispatch_message(channel_id="111", content="my own answer", author_id=BOT["id"], username="andy")
    await discord.dispatch_message(channel_id="111", content="another bot", author_id="555", bot=True)
    await discord.dispatch_message(channel_id="111", content="from alice again")
    rows = await stored(server, "dc:111", 2)
    assert [r["content"] for r in rows] == ["from alice again", "from alice"]
    assert rows[0]["sender"] == "dc:700000000000000042" and rows[0]["senderName"] == "Alice"
    chats = (await server.client.get("/channels/chats", params={"channel": "discord"})).json()["chats"]
    assert [(c["jid"], c["isGroup"]) for c in chats] == [("dc:111", True)]


async def test_heartbeats_keep_time(timed_server, discord, autojump_clock):
    with trio.fail_after(300):
        await DISCORD.connect(timed_server, discord)
        gateway = discord.connections[0]
        await discord.wait_for(lambda: len(gateway.times(1)) >= 4, timeout=200)
    beats = gateway.times(1)
    # The first beat comes at a random point of the first interval, then one every interval.
    assert gateway.hello_at <= beats[0] <= gateway.hello_at + INTERVAL
    assert all(abs((b - a) - INTERVAL) < 0.1 for a, b in zip(beats, beats[1:]))
    # Each beat carries the last sequence number (READY was 1).
    assert [f["d"] for f in gateway.ops(1)] == [1] * len(beats)
    assert len(discord.connections) == 1


async def test_a_missed_heartbeat_ack_ends_in_a_resume(timed_server, discord, autojump_clock):
    with trio.fail_after(300):
        await DISCORD.connect(timed_server, discord)
        first = discord.connections[0]
        session_id = discord.session.session_id
        discord.withhold_acks = True
        await discord.wait_for(lambda: first.closed, timeout=200)
        discord.withhold_acks = False
        await discord.wait_for(lambda: len(discord.connections) == 2 and discord.connections[1].ops(6))
        await wait_status(timed_server, connected=True)
    # The connection is left when the next beat is due and the last one was never acknowledged.
    assert abs(first.closed_at - first.times(1)[-1] - INTERVAL) < 0.1
    # 1000 would end the session on Discord; a resumable close code keeps it.
    assert first.close_code == 4000
    second = discord.connections[1]
    assert second.path == "/resume/"
    [resume] = second.ops(6)
    assert resume["d"] == {"token": TOKEN, "session_id": session_id, "seq": 1}
    assert second.ops(2) == []


async def test_a_socket_the_server_closes_ends_in_a_resume_without_losing_messages(timed_server, discord,
                                                                                     autojump_clock):
    with trio.fail_after(60):
        await DISCORD.connect(timed_server, discord)
        await discord.dispatch_message(channel_id="222", content="before the drop")
        await stored(timed_server, "dc:222", 1)
        await discord.close_socket(4000)
        # Sent while the client is away: the RESUME replays it.
        await discord.dispatch_message(channel_id="222", content="while away")
        await discord.wait_for(lambda: len(discord.connections) == 2 and discord.connections[1].ops(6))
        rows = await stored(timed_server, "dc:222", 2)
        await wait_status(timed_server, connected=True)
    assert [r["content"] for r in rows] == ["while away", "before the drop"]
    [resume] = discord.connections[1].ops(6)
    assert resume["d"]["seq"] == 2 and resume["d"]["session_id"] == discord.session.session_id
    assert discord.connections[1].ops(2) == []


async def test_op7_reconnect_resumes_on_a_new_connection(timed_server, discord, autojump_clock):
    with trio.fail_after(60):
        await DISCORD.connect(timed_server, discord)
        await discord.request_reconnect()
        await discord.wait_for(lambda: len(discord.connections) == 2 and discord.connections[1].ops(6))
        await wait_status(timed_server, connected=True)
    assert discord.connections[0].close_code == 4000
    assert discord.connections[1].path == "/resume/" and discord.connections[1].ops(2) == []


async def test_invalid_session_leads_to_a_new_identify(timed_server, discord, autojump_clock):
    with trio.fail_after(60):
        await DISCORD.connect(timed_server, discord)
        gateway = discord.connections[0]
        invalidated_at = trio.current_time()
        await discord.invalid_session()
        await discord.wait_for(lambda: len(gateway.ops(2)) == 2 and discord.session is not None)
        await discord.dispatch_message(channel_id="333", content="after the new session")
        await stored(timed_server, "dc:333", 1)
    # Discord asks for a pause of 1 to 5 s before identifying again, on the same connection.
    assert 1 <= gateway.times(2)[1] - invalidated_at <= 5.1
    assert len(discord.connections) == 1 and gateway.ops(6) == []
