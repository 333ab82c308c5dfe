"""IPC: the HTTP endpoints that write host -> container files, and the watcher of container -> host files."""
from __future__ import annotations

import json
import os

import pytest
import trio
import trio.testing

from conftest import make_settings
from fake_runtime import FakeRuntime
from nanoclaw.clock import Clock
from nanoclaw.services import build
from test_supervisor_queue import START, ListMessages, inline


class FirstChats(ListMessages):
    """boss's and team's messages come from their first chat (others' from tg:<group>)."""

    def chat(self, group):
        return {"boss": "tg:1", "team": "tg:2"}.get(group, super().chat(group))


async def test_directories_are_created_for_a_known_group(client, server):
    await client.post("/container/namespaces", json={"name": "ops"})
    r = await client.post("/container/ipc/directories", json={"group": "ops", "sessionId": "s-1"})
    assert r.status_code == 201
    base = server.settings.ipc_dir / "ops" / "s-1"
    assert r.json()["input"] == str(base / "input")
    assert all((base / sub).is_dir() for sub in ("input", "messages", "tasks"))


@pytest.mark.parametrize("body, status", [
    ({"group": "nobody", "sessionId": "s1"}, 404),
    ({"group": "ops", "sessionId": "../escape"}, 400),
    ({"group": "ops", "sessionId": ""}, 400),
    ({"group": "../ops", "sessionId": "s1"}, 400),
])
async def test_bad_targets_are_refused_and_nothing_is_written(client, server, body, status):
    await client.post("/container/namespaces", json={"name": "ops"})
    for path in ("directories", "follow-up", "close"):
        r = await client.post(f"/container/ipc/{path}", json={**body, "content": "x"} if path == "follow-up" else body)
        assert r.status_code == status, (path, r.text)
        assert r.json()["error"]["code"]
    assert not server.settings.ipc_dir.exists() or not any(server.settings.ipc_dir.rglob("*.json"))


async def test_follow_up_writes_one_atomic_message_file(client, server):
    await client.post("/container/namespaces", json={"name": "ops"})
    r = await client.post("/container/ipc/follow-up",
                          json={"group": "ops", "sessionId": "s1", "content": "look at auth first"})
    assert r.status_code == 200
    assert r.json()["containerAttached"] is False
    inbox = server.settings.ipc_dir / "ops" / "s1" / "input"
    files = os.listdir(inbox)
    assert files == [r.json()["file"]]
    assert json.loads((inbox / files[0]).read_text()) == {"type": "message", "text": "look at auth first"}


async def test_close_writes_the_sentinel(client, server):
    await client.post("/container/namespaces", json={"name": "ops"})
    r = await client.post("/container/ipc/close", json={"group": "ops", "sessionId": "s1"})
    assert r.status_code == 200 and r.json()["file"] == "_close"
    assert (server.settings.ipc_dir / "ops" / "s1" / "input" / "_close").read_bytes() == b""


@pytest.fixture
async def live(nursery, tmp_path):
    """A server whose groups 'boss' (main) and 'team' each have a live container."""
    runtime = FakeRuntime(nursery)
    messages = FirstChats()
    services = build(make_settings(tmp_path), clock=Clock(start=START), offload=inline, runtime=runtime,
                     feed=messages, outbox=messages)
    await nursery.start(services.serve)
    await services.namespaces.create({"name": "boss", "isMain": True, "chatJids": ["tg:1"]})
    await services.namespaces.create({"name": "team", "chatJids": ["tg:2", "tg:3"]})
    await services.namespaces.create({"name": "other", "chatJids": ["tg:9"]})
    for group in ("boss", "team"):  # chat containers stay live for follow-ups (on-demand ones close)
        messages.add(group, "work 0")
        services.supervisor.notify(group)
    await trio.sleep(1)
    messages.sent.clear()
    services.messages = messages
    return services


def drop(services, group: str, kind: str, payload, name: str = "100-a.json"):
    folder = services.supervisor.live_run(group).ipc_dir / kind
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    (folder / name).write_bytes(raw)
    return folder / name


async def test_a_group_may_message_its_own_chats(live, autojump_clock):
    path = drop(live, "team", "messages", {"type": "message", "chatJid": "tg:3", "text": "status: green"})
    written = trio.current_time()
    while path.exists():
        await trio.sleep(0.01)
    assert trio.current_time() - written <= 0.25
    assert live.messages.sent == [("tg:3", "status: green")]


async def test_without_a_chat_jid_the_message_goes_to_the_runs_chat(live, autojump_clock):
    drop(live, "team", "messages", {"type": "message", "text": "hello"})
    await trio.sleep(0.3)
    assert live.messages.sent == [("tg:2", "hello")]


async def test_main_may_message_any_chat(live, autojump_clock):
    drop(live, "boss", "messages", {"type": "message", "chatJid": "tg:9", "text": "heads up"})
    await trio.sleep(0.3)
    assert live.messages.sent == [("tg:9", "heads up")]


async def test_a_non_main_group_may_not_message_another_groups_chat(live, autojump_clock):
    drop(live, "team", "messages", {"type": "message", "chatJid": "tg:9", "text": "spam"})
    await trio.sleep(0.3)
    assert live.messages.sent == []
    errors = list((live.settings.ipc_dir / "errors").iterdir())
    assert [p.name.split("-")[:2] for p in errors] == [["team", "messages"]]
    rows = await live.db.fetchall("SELECT severity, group_name, message FROM audit_log WHERE category = 'ipc'")
    assert [(r[0], r[1]) for r in rows] == [("violation", "team")]
    assert "may only message its own chats" in rows[0][2]


@pytest.mark.parametrize("raw, reason", [
    (b"{not json", "unreadable"),
    (b"[1, 2]", "not a JSON object"),
    (json.dumps({"type": "shout", "text": "x"}).encode(), "unknown message type"),
    (json.dumps({"type": "message", "text": "  "}).encode(), "non-empty text"),
])
async def test_bad_files_move_to_errors_with_an_audit_event(live, autojump_clock, raw, reason):
    drop(live, "team", "messages", raw)
    await trio.sleep(0.3)
    errors = list((live.settings.ipc_dir / "errors").iterdir())
    assert len(errors) == 1 and errors[0].read_bytes() == raw
    row = await live.db.fetchone("SELECT severity, message FROM audit_log WHERE category = 'ipc'")
    assert row[0] == "warning" and reason in row[1]
    assert live.messages.sent == []


async def test_a_message_written_right_before_close_is_not_lost(live, autojump_clock):
    run = live.supervisor.live_run("team")
    (run.ipc_dir / "messages" / "200-z.json").write_text(json.dumps({"type": "message", "text": "bye"}))
    (run.ipc_dir / "input" / "_close").write_text("")
    await trio.sleep(1)
    assert live.supervisor.live_run("team") is None
    assert ("tg:2", "bye") in live.messages.sent
