"""The channel layer's endpoints, store reads and the supervisor's feed of chat batches."""
from __future__ import annotations

import json

import pytest

from channel_support import tg  # noqa: F401  (fixture)
from conftest import make_settings
from fakes.telegram import TOKEN
from nanoclaw.text import split_text

CHAT = "tg:-100777"


@pytest.fixture
async def settings(tmp_path, tg):
    return make_settings(tmp_path, telegram_api_base=tg.url)


async def deliver(server, tg, text: str, chat_id: int = -100777, **kwargs) -> dict:
    update = tg.push_message(chat_id, text, **kwargs)
    await tg.wait_for(lambda: tg.confirmed > update["update_id"])
    return update


@pytest.fixture
async def live(server, tg):
    """A server with Telegram connected and a group 'ops' routed to CHAT."""
    r = await server.client.post("/channels/telegram/connect", json={"token": TOKEN})
    assert r.status_code == 200, r.text
    r = await server.client.post("/container/namespaces", json={"name": "ops", "chatJids": [CHAT]})
    assert r.status_code == 201, r.text
    return server


async def test_every_channel_is_listed_with_a_status_a_person_understands(client):
    r = await client.get("/channels")
    assert r.status_code == 200
    assert r.json() == {"channels": [
        {"name": name, "connected": False, "statusMessage": "Not configured"}
        for name in ("telegram", "slack", "discord", "whatsapp")]}


async def test_channel_details_and_unknown_names(client):
    r = await client.get("/channels/slack")
    assert r.status_code == 200
    assert r.json()["configured"] is False and r.json()["messagesIn"] == 0
    r = await client.get("/channels/irc")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "NOT_FOUND"


async def test_static_channel_paths_are_not_taken_for_channel_names(client):
    assert (await client.get("/channels/chats")).json() == {"chats": []}
    assert (await client.get("/channels/sender-allowlist")).json() == {"enabled": False, "entries": []}
    r = await client.get("/channels/messages")  # POST only: GET reads as an unknown channel
    assert r.status_code == 404 and "telegram, slack, discord, whatsapp" in r.json()["error"]["message"]


async def test_send_message_bodies_are_validated(live):
    for body in ({"chatJid": CHAT}, {"chatJid": CHAT, "content": ""},
                 {"chatJid": CHAT, "content": "hi", "extra": 1}, {"chatJid": 12, "content": "hi"}):
        r = await live.client.post("/channels/messages", json=body)
        assert r.status_code == 400, body
        assert r.json()["error"]["code"] == "VALIDATION_ERROR"
    r = await live.client.post("/channels/messages", json={"chatJid": CHAT, "content": "<internal>x</internal>"})
    assert r.status_code == 400
    assert await live.services.db.fetchall("SELECT * FROM messages") == []


async def test_details_count_messages_in_and_out(live, tg):
    await deliver(live, tg, "hello")
    await live.client.post("/channels/messages", json={"chatJid": CHAT, "content": "hi back"})
    details = (await live.client.get("/channels/telegram")).json()
    assert (details["messagesIn"], details["messagesOut"]) == (1, 1)
    assert details["lastEventAt"] is not None and details["connectedAt"] is not None
    assert details["accountName"] == "@andy_test_bot" and details["jidPrefix"] == "tg"


async def test_chats_are_listed_newest_first_with_their_namespace(live, tg):
    await deliver(live, tg, "in ops")
    await deliver(live, tg, "in a DM", chat_id=42, chat_type="private", first_name="Alice")
    chats = (await live.client.get("/channels/chats")).json()["chats"]
    assert [(c["jid"], c["namespace"], c["isGroup"], c["name"]) for c in chats] == [
        ("tg:42", None, False, "Alice"), (CHAT, "ops", True, "Test group")]
    assert len((await live.client.get("/channels/chats", params={"limit": 1})).json()["chats"]) == 1
    assert (await live.client.get("/channels/chats", params={"channel": "whatsapp"})).json() == {"chats": []}
    assert (await live.client.get("/channels/chats", params={"channel": "irc"})).status_code == 400


async def test_chat_messages_page_backwards_with_before_and_limit(live, tg):
    for i in range(5):
        await deliver(live, tg, f"m{i}")  # the fake dates them 1_700_000_000 + i + 1
    r = await live.client.get(f"/channels/chats/{CHAT}/messages", params={"limit": 2})
    assert [m["content"] for m in r.json()["messages"]] == ["m4", "m3"]
    r = await live.client.get(f"/channels/chats/{CHAT}/messages", params={"before": 1_700_000_004})
    assert [m["content"] for m in r.json()["messages"]] == ["m2", "m1", "m0"]
    first = r.json()["messages"][-1]
    assert first["timestamp"] == "2023-11-14T22:13:21.000Z" and first["sender"] == "tg:42"
    r = await live.client.get(f"/channels/chats/{CHAT}/messages", params={"limit": "many"})
    assert r.status_code == 400


async def test_advance_moves_the_cursor_past_the_batch(live, tg):
    channels = live.services.feed
    await deliver(live, tg, "@Andy first")
    batch = await channels.pending("ops")
    await channels.advance("ops", batch)
    assert await channels.pending("ops") is None
    await deliver(live, tg, "just chatting")
    assert await channels.pending("ops") is None
    await deliver(live, tg, "@andy second")
    batch = await channels.pending("ops")
    assert "first" not in batch.prompt
    assert "just chatting" in batch.prompt and "@andy second" in batch.prompt


async def test_a_message_in_an_unrouted_chat_is_stored_but_wakes_no_group(live, tg):
    supervisor = live.services.supervisor
    calls = []
    real = supervisor.notify
    supervisor.notify = lambda group: (calls.append(group), real(group))
    await deliver(live, tg, "@Andy anyone?", chat_id=-999)
    assert calls == []
    assert [m["content"] for m in (await live.client.get("/channels/chats/tg:-999/messages")).json()["messages"]] == [
        "@Andy anyone?"]


async def test_a_main_group_and_requires_trigger_false_need_no_trigger(live, tg):
    channels = live.services.feed
    await live.client.post("/container/namespaces", json={"name": "main", "chatJids": ["tg:-1"], "isMain": True})
    await live.client.post("/container/namespaces",
                           json={"name": "chatty", "chatJids": ["tg:-2"], "requiresTrigger": False})
    await live.client.put("/container/namespaces/ops", json={"trigger": "@Bob"})
    await deliver(live, tg, "no trigger here", chat_id=-1)
    await deliver(live, tg, "nor here", chat_id=-2)
    await deliver(live, tg, "hey @andy", chat_id=-100777)
    assert "no trigger here" in (await channels.pending("main")).prompt
    assert "nor here" in (await channels.pending("chatty")).prompt
    assert await channels.pending("ops") is None  # its trigger is @Bob now


async def test_an_ipc_send_message_goes_out_through_the_channel(live, tg, tmp_path):
    folder = live.settings.ipc_dir / "ops" / "session-1"
    (folder / "messages").mkdir(parents=True)
    (folder / "messages" / "1.json").write_text(json.dumps(
        {"type": "message", "chatJid": CHAT, "text": "from the agent<internal>scratch</internal>"}))
    assert await live.services.ipc.sweep([("ops", folder, False, CHAT)]) == 1
    assert tg.sent == [{"chat_id": "-100777", "text": "from the agent"}]
    messages = (await live.client.get(f"/channels/chats/{CHAT}/messages")).json()["messages"]
    assert [(m["content"], m["isFromBot"]) for m in messages] == [("from the agent", True)]


async def test_the_webhook_is_open_but_the_rest_needs_an_api_key(server):
    await server.services.api_keys.create("ops")
    assert (await server.client.get("/channels")).status_code == 401
    r = await server.client.get("/channels/whatsapp/webhook", params={"hub.mode": "subscribe"})
    assert r.status_code == 403  # answered by the webhook itself (WhatsApp is not connected)


def test_split_text_cuts_at_line_ends_and_hard_cuts_long_lines():
    assert split_text("aaa\nbbb\nccc", 8) == ["aaa\nbbb", "ccc"]
    assert split_text("x" * 10, 4) == ["xxxx", "xxxx", "xx"]
    assert split_text("short", 4096) == ["short"]


async def test_new_after_the_trigger_starts_a_fresh_session_and_never_reaches_the_agent(live, tg):
    from nanoclaw.channels._router import NEW_SESSION_TEXT

    channels, db = live.services.feed, live.services.db
    await db.execute("INSERT INTO group_sessions VALUES ('ops', 'old-session', 0)")
    await deliver(live, tg, "@Andy /new")
    await tg.wait_for(lambda: tg.sent)
    assert tg.sent == [{"chat_id": "-100777", "text": NEW_SESSION_TEXT}]
    assert await db.fetchone("SELECT * FROM group_sessions") is None
    assert await channels.pending("ops") is None  # nothing for the agent
    await deliver(live, tg, "@Andy hello again")
    batch = await channels.pending("ops")
    assert "hello again" in batch.prompt and "/new" not in batch.prompt


def test_new_is_recognised_after_the_trigger_or_a_mention_only_on_its_own():
    from nanoclaw.channels._router import is_new_command
    from nanoclaw.namespaces import Namespace

    ns = Namespace(id="1", name="ops", trigger="@Andy", createdAt="", updatedAt="")
    for text in ("@Andy /new", "@andy, /NEW", "/new", " @Andy  /new! ", "@andy_bot /new", "/new@andy_bot"):
        assert is_new_command(ns, text), text
    for text in ("@Andy /new please", "@Andy what is /new?", "/newer", "@Andy new"):
        assert not is_new_command(ns, text), text
