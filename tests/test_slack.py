"""Slack through the real server against a fake Slack (Web API + Socket Mode) on 127.0.0.1 (issue 7)."""
from __future__ import annotations

import pytest

from channel_support import SLACK, slack, stored  # noqa: F401  (fixture)
from checks import assert_error
from conftest import make_settings
from fakes.slack import APP_TOKEN, BOT_TOKEN, BOT_USER, message_event


@pytest.fixture
def settings(tmp_path, slack):
    return make_settings(tmp_path, slack_api_base=slack.api_url)


async def test_tokens_of_the_wrong_kind_are_refused_before_asking_slack(server, slack):
    answer = await server.client.post("/channels/slack/validate", json={"botToken": APP_TOKEN,
                                                                       "appToken": BOT_TOKEN})
    assert_error(answer, 400, "VALIDATION_ERROR")
    assert slack.calls == []


async def test_every_envelope_is_acknowledged_and_only_peoples_new_messages_are_stored(server, slack):
    await SLACK.connect(server, slack)
    envelopes = [
        await slack.push_event(message_event(channel="C1", text="hello there", ts="1700000001.000100")),
        await slack.push_event(message_event(channel="C1", text="a bot says", bot_id="B999", ts="1700000002.0001")),
        await slack.push_event(message_event(channel="C1", text="bot message", subtype="bot_message",
                                            ts="1700000003.0001")),
        await slack.push_event(message_event(channel="C1", text="my own", user=BOT_USER, ts="1700000004.0001")),
        await slack.push_event(message_event(channel="C1", text="edited", subtype="message_changed",
                                            ts="1700000005.0001")),
        await slack.push_event(message_event(channel="C1", text="last one", ts="1700000006.000100")),
    ]
    await slack.wait_for(lambda: set(envelopes) <= set(slack.acks))
    rows = await stored(server, "slack:C1", 2)
    assert [r["content"] for r in rows] == ["last one", "hello there"]
    assert rows[1]["sender"] == "slack:U0ALICE" and rows[1]["isFromBot"] is False
    assert slack.unacked == {}


async def test_a_mention_delivered_as_message_and_app_mention_is_stored_once(server, slack):
    await SLACK.connect(server, slack)
    text = f"<@{BOT_USER}> what time is it?"
    await slack.push_event(message_event(channel="C2", text=text, ts="1700000010.000200"))
    await slack.push_event(message_event(channel="C2", text=text, ts="1700000010.000200", kind="app_mention"))
    await slack.wait_for(lambda: len(slack.acks) == 2)
    await slack.push_event(message_event(channel="C2", text="after", ts="1700000011.000200"))
    rows = await stored(server, "slack:C2", 2)
    assert [r["content"] for r in rows] == ["after", text]
    # The message event came first and was kept: its text naming the bot is what addressed it
    # (the contract suite's mentions come as app_mention events).
    rows = await server.services.db.fetchall("SELECT content, addressed FROM messages ORDER BY id")
    assert [tuple(r) for r in rows] == [(text, 1), ("after", 0)]


async def test_a_disconnect_frame_leads_to_a_new_connection_and_no_event_is_lost(server, slack):
    await SLACK.connect(server, slack)
    first = slack.sockets[0]
    opened = len(slack.calls_of("apps.connections.open"))
    before = await slack.push_event(message_event(channel="C3", text="before", ts="1700000020.000100"))
    await slack.wait_for(lambda: before in slack.acks)
    await slack.send_disconnect()
    # Slack may still push on the old connection until it closes; unacknowledged
    # envelopes are delivered again on the next one.
    during = await slack.push_event(message_event(channel="C3", text="during", ts="1700000021.000100"))
    await slack.wait_for(lambda: len(slack.sockets) == 2 and first.closed)
    after = await slack.push_event(message_event(channel="C3", text="after", ts="1700000022.000100"))
    await slack.wait_for(lambda: {before, during, after} <= set(slack.acks))
    rows = await stored(server, "slack:C3", 3)
    assert [r["content"] for r in rows] == ["after", "during", "before"]
    assert first.close_code == 1000
    assert len(slack.calls_of("apps.connections.open")) == opened + 1
    assert (await server.client.get("/channels/slack")).json()["connected"] is True
