"""Telegram against a fake Bot API on 127.0.0.1: connect, polling, routing, sending."""
from __future__ import annotations

import logging

import pytest
import trio

from channel_support import notified, stored, tg, timed_server  # noqa: F401  (fixtures)
from conftest import make_settings, start_server
from fakes.telegram import BOT, TOKEN
from nanoclaw.secrets import RedactingFilter

GROUP_CHAT = -1001234
BAD_TOKEN = "999999:nope-this-is-not-a-token"


@pytest.fixture
async def settings(tmp_path, tg):
    return make_settings(tmp_path, telegram_api_base=tg.url)


async def connect(client) -> dict:
    r = await client.post("/channels/telegram/connect", json={"token": TOKEN})
    assert r.status_code == 200, r.text
    return r.json()


async def make_group(client, name="support", chat_jids=(f"tg:{GROUP_CHAT}",), **fields):
    r = await client.post("/container/namespaces", json={"name": name, "chatJids": list(chat_jids), **fields})
    assert r.status_code == 201, r.text


async def handled(tg, update: dict) -> None:
    """Wait until the server confirmed the update: it polls past it only once it is stored."""
    await tg.wait_for(lambda: tg.confirmed > update["update_id"])


# -- validate / connect / disconnect ---------------------------------------------


# -- inbound ------------------------------------------------------------------


async def test_an_untriggered_message_is_context_for_the_next_triggered_one(server, tg, notified):
    await make_group(server.client)
    await connect(server.client)
    chatter = tg.push_message(GROUP_CHAT, "the build is red again", first_name="Carol")
    await handled(tg, chatter)
    assert notified == []
    assert await server.services.feed.pending("support") is None
    ask = tg.push_message(GROUP_CHAT, "@andy can you look?", first_name="Dave")
    await handled(tg, ask)
    assert notified == ["support"]
    batch = await server.services.feed.pending("support")
    assert batch.chat_jid == f"tg:{GROUP_CHAT}"
    assert batch.prompt.index("the build is red again") < batch.prompt.index("@andy can you look?")
    assert 'sender="Carol"' in batch.prompt and 'sender="Dave"' in batch.prompt
    assert [m["content"] for m in await stored(server, f"tg:{GROUP_CHAT}")] == [
        "@andy can you look?", "the build is red again"]


async def test_a_word_that_only_contains_the_trigger_does_not_trigger(server, tg, notified):
    await make_group(server.client)
    await connect(server.client)
    await handled(tg, tg.push_message(GROUP_CHAT, "ping @Andyx and andy@example.com"))
    assert notified == []


async def test_an_at_mention_of_the_bot_triggers_in_a_group(server, tg, notified):
    await make_group(server.client)
    await connect(server.client)
    await handled(tg, tg.push_message(GROUP_CHAT, f"hey @{BOT['username']} status?"))
    assert notified == ["support"]


async def test_a_direct_message_always_triggers(server, tg, notified):
    await make_group(server.client, chat_jids=["tg:42"])
    await connect(server.client)
    await handled(tg, tg.push_message(42, "hello there", chat_type="private"))
    assert notified == ["support"]
    assert "hello there" in (await server.services.feed.pending("support")).prompt


async def test_a_sender_not_on_the_allowlist_is_dropped_and_audited(server, tg, notified):
    await make_group(server.client)
    r = await server.client.put("/channels/sender-allowlist",
                                json={"enabled": True, "entries": [{"chatJid": "tg:42", "label": "Alice"}]})
    assert r.status_code == 200
    await connect(server.client)
    await handled(tg, tg.push_message(GROUP_CHAT, "@Andy let me in", sender_id=666, first_name="Mallory"))
    await handled(tg, tg.push_message(GROUP_CHAT, "@Andy hi", sender_id=42, first_name="Alice"))
    assert [m["sender"] for m in await stored(server, f"tg:{GROUP_CHAT}")] == ["tg:42"]
    assert notified == ["support"]
    audit = (await server.client.get("/container/audit-log", params={"severity": "warning"})).json()["entries"]
    assert any("tg:666" in e["message"] and "allowlist" in e["message"] for e in audit)


async def test_the_same_message_delivered_twice_is_stored_once(server, tg, notified):
    await make_group(server.client)
    await connect(server.client)
    first = tg.push_message(GROUP_CHAT, "@Andy once")
    await handled(tg, first)
    again = {"update_id": first["update_id"] + 100, "message": first["message"]}
    tg.updates.append(again)
    tg._touch()
    await handled(tg, again)
    assert [m["content"] for m in await stored(server, f"tg:{GROUP_CHAT}")] == ["@Andy once"]
    assert notified == ["support"]


async def test_a_restart_in_the_middle_of_a_poll_neither_loses_nor_repeats_an_update(nursery, settings, tg):
    async with trio.open_nursery() as first_life:
        server = await start_server(first_life, settings)
        await connect(server.client)
        first = tg.push_message(GROUP_CHAT, "before the restart")
        await handled(tg, first)
        # The poll that confirmed `first` is now waiting for more: stop the server under it.
        await server.client.aclose()
        first_life.cancel_scope.cancel()
    second = tg.push_message(GROUP_CHAT, "while the server was down")
    polls_before = len(tg.calls_of("getUpdates"))
    server = await start_server(nursery, settings)
    await handled(tg, second)
    assert tg.calls_of("getUpdates")[polls_before].params["offset"] == first["update_id"] + 1
    assert [m["content"] for m in await stored(server, f"tg:{GROUP_CHAT}")] == [
        "while the server was down", "before the restart"]
    await server.client.aclose()


async def test_a_group_migrated_to_a_supergroup_moves_its_jid_everywhere(server, tg, notified):
    old, new = -555, -1009999
    await make_group(server.client, chat_jids=[f"tg:{old}"])
    await connect(server.client)
    await handled(tg, tg.push_message(old, "history"))
    await handled(tg, tg.push_message(old, None, migrate_to_chat_id=new))
    await handled(tg, tg.push_message(new, "@Andy after the move"))
    ns = (await server.client.get("/container/namespaces/support")).json()
    assert ns["chatJids"] == [f"tg:{new}"]
    assert [m["content"] for m in await stored(server, f"tg:{new}")] == ["@Andy after the move", "history"]
    assert await stored(server, f"tg:{old}") == []
    chats = (await server.client.get("/channels/chats", params={"channel": "telegram"})).json()["chats"]
    assert [c["jid"] for c in chats] == [f"tg:{new}"]
    assert notified == ["support"]


async def test_polling_with_a_revoked_token_reports_reconnecting(timed_server, tg, autojump_clock):
    server = timed_server
    await connect(server.client)
    await tg.wait_for(lambda: len(tg.calls_of("getUpdates")) >= 1)
    del tg.tokens[TOKEN]
    tg.updates.append({"update_id": 99, "message": None})  # ends the poll in flight
    tg._touch()
    # The next getMe is the reconnect attempt: the status was set before it.
    await tg.wait_for(lambda: len(tg.calls_of("getMe")) >= 3, timeout=15)
    details = (await server.client.get("/channels/telegram")).json()
    assert details["connected"] is False
    assert details["statusMessage"] == "Reconnecting: 401 Unauthorized"
    assert details["lastError"] == "401 Unauthorized"
    await server.client.aclose()


# -- outbound -------------------------------------------------------------------


async def test_internal_notes_are_removed_and_bot_messages_never_trigger(server, tg, notified):
    await make_group(server.client)
    await connect(server.client)
    r = await server.client.post("/channels/messages", json={
        "chatJid": f"tg:{GROUP_CHAT}", "content": "<internal>thinking about @Andy</internal>@Andy says hi"})
    assert r.status_code == 201
    assert r.json()["content"] == "@Andy says hi" and r.json()["isFromBot"] is True
    assert [m["text"] for m in tg.sent] == ["@Andy says hi"]
    assert notified == []
    assert await server.services.feed.pending("support") is None


async def test_sending_to_an_unknown_prefix_is_400(server):
    r = await server.client.post("/channels/messages", json={"chatJid": "irc:#python", "content": "hi"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "UNKNOWN_CHANNEL"


async def test_sending_through_a_channel_that_is_not_connected_is_409(server):
    r = await server.client.post("/channels/messages", json={"chatJid": "tg:1", "content": "hi"})
    assert r.status_code == 409


async def test_poll_failures_back_off_exponentially_with_jitter(timed_server, tg, autojump_clock):
    server = timed_server
    await connect(server.client)
    tg.fail_next("getUpdates", 500, times=6)
    await tg.wait_for(lambda: len(tg.calls_of("getUpdates")) >= 7, timeout=600)
    reconnects = [c.at for c in tg.calls_of("getMe")][1:]  # the first is connect's own check
    gaps = [b - a for a, b in zip(reconnects, reconnects[1:])]
    assert len(gaps) == 6
    for attempt, gap in enumerate(gaps):
        assert 0.5 * 2 ** attempt <= gap <= 2 ** attempt + 0.01, gaps
    details = (await server.client.get("/channels/telegram")).json()
    assert details["statusMessage"] == "Connected as @andy_test_bot"  # the seventh poll went through
    await server.client.aclose()


async def test_a_malformed_update_is_skipped_and_the_next_one_handled(server, tg):
    await connect(server.client)
    broken = {"update_id": next(tg._ids), "message": {"text": "no chat, no id"}}
    tg.updates.append(broken)
    tg._touch()
    await handled(tg, broken)
    await handled(tg, tg.push_message(GROUP_CHAT, "still listening"))
    assert [m["content"] for m in await stored(server, f"tg:{GROUP_CHAT}")] == ["still listening"]
    assert (await server.client.get("/channels/telegram")).json()["connected"] is True


async def test_a_rate_limited_poll_waits_retry_after_before_polling_again(timed_server, tg, autojump_clock):
    server = timed_server
    tg.fail_next("getUpdates", 429, "Too Many Requests: retry after 12", retry_after=12)
    await connect(server.client)
    await tg.wait_for(lambda: len(tg.calls_of("getUpdates")) >= 2, timeout=60)
    limited, next_poll = tg.calls_of("getUpdates")[:2]
    assert 12 <= next_poll.at - limited.at < 13
    assert len(tg.calls_of("getMe")) == 2  # no reconnect: the channel just waited
    await server.client.aclose()


async def test_tokens_never_reach_the_log(server, tg, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")  # the server keeps it at WARNING; here every URL is seen
    await server.client.post("/channels/telegram/validate", json={"token": BAD_TOKEN})
    await connect(server.client)
    await handled(tg, tg.push_message(GROUP_CHAT, "hello"))
    # The filter the server's log handler applies (nanoclaw.main.setup_logging).
    scrub = RedactingFilter(server.services.secrets)
    records = [r for r in caplog.records if scrub.filter(r)]
    assert any("/getUpdates" in r.getMessage() for r in records)  # httpx logs each request URL
    for record in records:
        assert TOKEN not in record.getMessage() and BAD_TOKEN not in record.getMessage()
