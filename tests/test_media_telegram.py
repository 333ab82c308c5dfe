"""Issue 14 on Telegram against the fake Bot API: files in and out, typing, streamed replies,
formatting with a plain-text fallback."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import trio

from channel_support import inline, tg  # noqa: F401  (fixture)
from conftest import make_settings, start_server
from fake_runtime import FakeRuntime
from fakes.telegram import TOKEN
from nanoclaw.clock import Clock

CHAT = 4242  # a private chat: every message is addressed to the bot
JID = f"tg:{CHAT}"
START = 1_800_000_000.0
MiB = 1024 * 1024


@pytest.fixture
async def settings(tmp_path, tg):
    return make_settings(tmp_path, telegram_api_base=tg.url)


async def setup(server, **config) -> None:
    r = await server.client.post("/channels/telegram/connect", json={"token": TOKEN})
    assert r.status_code == 200, r.text
    r = await server.client.post("/container/namespaces", json={
        "name": "support", "chatJids": [JID], **({"containerConfig": config} if config else {})})
    assert r.status_code == 201, r.text


async def stored(server) -> list[dict]:
    r = await server.client.get(f"/channels/chats/{JID}/messages")
    assert r.status_code == 200, r.text
    return r.json()["messages"]


def host_path(server, container_path: str) -> Path:
    assert container_path.startswith("/workspace/media/")
    return server.settings.media_dir / "support" / container_path.removeprefix("/workspace/media/")


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if not p.is_dir()] if folder.exists() else []


# -- media in ---------------------------------------------------------------------


async def test_a_photo_without_caption_is_stored_with_its_file_in_the_groups_media_folder(server, tg):
    await setup(server)
    photo = os.urandom(300_000)
    small, big = tg.add_file(b"thumb", "photos/thumb.jpg"), tg.add_file(photo, "photos/file_7.jpg")
    update = tg.push_message(CHAT, None, chat_type="private", photo=[
        {"file_id": small, "width": 90, "height": 60}, {"file_id": big, "width": 1280, "height": 853}])
    await tg.wait_for(lambda: tg.confirmed > update["update_id"])

    [message] = await stored(server)
    [attachment] = message["attachments"]
    assert attachment | {"path": None} == {"kind": "image", "name": "photo.jpg", "mimeType": "image/jpeg",
                                           "size": len(photo), "path": None}
    # Downloaded from Telegram's file URL for the largest size only.
    assert tg.downloads == ["photos/file_7.jpg"]
    assert host_path(server, attachment["path"]).read_bytes() == photo
    assert re.fullmatch(r"/workspace/media/\d{4}-\d{2}-\d{2}/photo\.jpg", attachment["path"])
    # The agent's prompt lists the container path, and the batch carries the attachment.
    batch = await server.services.feed.pending("support")
    assert attachment["path"] in batch.prompt and batch.attachments == [attachment]


async def test_a_25_mib_document_is_refused_with_a_note_and_nothing_is_left(server, tg):
    await setup(server)
    file_id = tg.add_file(b"\0" * (25 * MiB), "documents/big.pdf")
    update = tg.push_message(CHAT, None, chat_type="private", document={
        "file_id": file_id, "file_name": "big.pdf", "mime_type": "application/pdf", "file_size": 1000})
    await tg.wait_for(lambda: tg.confirmed > update["update_id"])

    [note] = [m for m in await stored(server) if m["isFromBot"]]
    assert "big.pdf was not received" in note["content"] and "20.0 MiB" in note["content"]
    assert [m["text"] for m in tg.sent] == [note["content"]]
    [message] = [m for m in await stored(server) if not m["isFromBot"]]
    assert message["attachments"] == []
    assert "big.pdf not saved: larger than the 20.0 MiB limit" in message["content"]
    assert files_under(server.settings.media_dir / "support") == []


async def test_a_download_cut_short_by_a_kill_is_removed_at_start_up(nursery, settings):
    inbox = settings.media_dir / "support" / "2026-12-01"
    inbox.mkdir(parents=True)
    (inbox / ".download-0123456789ab.part").write_bytes(b"half")
    (inbox / "kept.jpg").write_bytes(b"whole")
    server = await start_server(nursery, settings)
    assert [p.name for p in inbox.iterdir()] == ["kept.jpg"]
    await server.client.aclose()


async def test_a_document_name_cannot_escape_the_media_folder(server, tg):
    await setup(server)
    file_id = tg.add_file(b"hello", "documents/x")
    update = tg.push_message(CHAT, "see file", chat_type="private", document={
        "file_id": file_id, "file_name": "../../.bashrc", "mime_type": "text/plain"})
    await tg.wait_for(lambda: tg.confirmed > update["update_id"])
    [message] = await stored(server)
    [attachment] = message["attachments"]
    assert attachment["name"] == "bashrc.txt" and host_path(server, attachment["path"]).read_bytes() == b"hello"
    # The same name again gets a new file, never overwriting the first.
    file_id = tg.add_file(b"again", "documents/y")
    update = tg.push_message(CHAT, None, chat_type="private", document={
        "file_id": file_id, "file_name": "bashrc", "mime_type": "text/plain"})
    await tg.wait_for(lambda: tg.confirmed > update["update_id"])
    names = sorted(p.name for p in files_under(server.settings.media_dir / "support"))
    assert names == ["bashrc-2.txt", "bashrc.txt"]


async def test_a_file_telegram_will_not_hand_out_is_refused_with_the_same_note(server, tg):
    await setup(server)
    tg.fail_next("getFile", 400, "Bad Request: file is too big")
    update = tg.push_message(CHAT, "the video", chat_type="private", video={"file_id": "BIG", "mime_type": "video/mp4"})
    await tg.wait_for(lambda: tg.confirmed > update["update_id"])
    [note] = [m["text"] for m in tg.sent]
    assert note.startswith("video.mp4 was not received")
    [message] = [m for m in await stored(server) if not m["isFromBot"]]
    assert message["content"] == "the video\n[video video.mp4 not saved: larger than the 20.0 MiB limit]"


# -- formatting -----------------------------------------------------------------------


async def test_markdown_is_sent_as_telegram_html(server, tg):
    await setup(server)
    r = await server.client.post("/channels/messages", json={"chatJid": JID, "content": "**Done** <now> `a<b`"})
    assert r.status_code == 201, r.text
    assert tg.sent == [{"chat_id": str(CHAT), "text": "<b>Done</b> &lt;now&gt; <code>a&lt;b</code>"}]
    assert tg.calls_of("sendMessage")[0].params["parse_mode"] == "HTML"
    assert r.json()["content"] == "**Done** <now> `a<b`"


async def test_a_markdown_answer_the_platform_refuses_is_resent_as_plain_text(server, tg):
    await setup(server)
    tg.refuse_html = True
    r = await server.client.post("/channels/messages", json={"chatJid": JID, "content": "**Done** <now>"})
    assert r.status_code == 201, r.text
    assert tg.sent == [{"chat_id": str(CHAT), "text": "**Done** <now>"}]
    assert [c.params.get("parse_mode") for c in tg.calls_of("sendMessage")] == ["HTML", None]


# -- with a (fake) container: send_file, typing, streaming ------------------------------


@pytest.fixture
async def timed(nursery, tmp_path, tg):
    """A server with fake containers, for tests under autojump_clock."""
    runtime = FakeRuntime(nursery)
    server = await start_server(nursery, make_settings(tmp_path, telegram_api_base=tg.url),
                                clock=Clock(start=START), offload=inline, runtime=runtime)
    server.runtime = runtime
    yield server
    await server.client.aclose()


async def say(tg, text: str) -> float:
    """A user's message in the private chat; returns when Telegram handed it over."""
    update = tg.push_message(CHAT, text, chat_type="private")
    await tg.wait_for(lambda: tg.confirmed > update["update_id"])
    return trio.current_time()


async def test_typing_starts_within_a_second_and_stops_when_the_answer_is_sent(timed, tg, autojump_clock):
    await setup(timed)
    await say(tg, "work 10")
    await tg.wait_for(lambda: tg.sent, timeout=60)
    answered = tg.calls_of("sendMessage")[0].at
    await trio.sleep(30)  # the container idles on; no more typing
    started = timed.runtime.containers[0].started_at
    actions = [c.at for c in tg.calls_of("sendChatAction")]
    assert all(c.params == {"chat_id": str(CHAT), "action": "typing"} for c in tg.calls_of("sendChatAction"))
    assert actions[0] - started <= 1
    assert all(3.9 <= b - a <= 4.5 for a, b in zip(actions, actions[1:]))
    assert actions[-1] < answered and len(actions) == 3  # at 0, 4, 8 s of a 10 s turn
    assert tg.sent[0]["text"].startswith("done: ")


async def test_typing_shows_again_for_a_follow_up_to_a_live_container(timed, tg, autojump_clock):
    await setup(timed)
    await say(tg, "work 0")
    await tg.wait_for(lambda: tg.sent, timeout=60)
    await trio.sleep(5)
    before = len(tg.calls_of("sendChatAction"))
    asked = await say(tg, "one more thing")
    await tg.wait_for(lambda: len(tg.sent) == 2, timeout=60)
    answered = tg.calls_of("sendMessage")[1].at
    assert tg.sent[1]["text"].startswith("re: ")
    [action] = [c.at for c in tg.calls_of("sendChatAction")[before:]]
    assert asked <= action <= answered
    await trio.sleep(20)
    assert len(tg.calls_of("sendChatAction")) == before + 1


async def test_typing_stops_when_the_turn_fails(timed, tg, autojump_clock):
    await setup(timed)
    await say(tg, "fail")
    await trio.sleep(4.5)  # the supervisor retries after 5 s
    failed = timed.runtime.containers[0].ended_at
    assert [c.at - failed <= 0 for c in tg.calls_of("sendChatAction")] == [True]
    assert not timed.services.outbox.activity.typing(JID)


async def test_a_streamed_answer_is_one_message_edited_at_most_once_a_second(timed, tg, autojump_clock):
    await setup(timed, streamReplies=True)
    await say(tg, "stream 30")
    final = " ".join(f"word{i}" for i in range(30))
    await tg.wait_for(lambda: tg.edits and tg.edits[-1].params["text"] == final, timeout=60)
    await trio.sleep(5)
    assert len(tg.sent) == 1  # one message, then edits
    times = [c.at for c in tg.calls_of("sendMessage") + tg.edits]
    assert all(b - a >= 0.999 for a, b in zip(times, times[1:]))
    assert 4 <= len(tg.edits) <= 7  # about 6 s of streaming
    assert tg.edits[-1].params["text"] == final
    [reply] = [m for m in await stored(timed) if m["isFromBot"]]
    assert reply["content"] == final


async def test_text_still_queued_when_the_answer_goes_out_starts_no_second_message(timed, tg, autojump_clock):
    await setup(timed, streamReplies=True)
    await say(tg, "burst 30")
    await tg.wait_for(lambda: tg.sent, timeout=60)
    await trio.sleep(10)
    final = " ".join(f"word{i}" for i in range(30))
    # One message, showing the final text (sent so, or edited to it).
    assert len(tg.sent) == 1
    assert (tg.edits[-1].params["text"] if tg.edits else tg.sent[0]["text"]) == final


async def test_a_streamed_edit_honours_retry_after(timed, tg, autojump_clock):
    await setup(timed, streamReplies=True)
    tg.fail_next("editMessageText", 429, retry_after=3)
    await say(tg, "stream 30")
    final = " ".join(f"word{i}" for i in range(30))
    await tg.wait_for(lambda: tg.edits and tg.edits[-1].params["text"] == final, timeout=60)
    refused = [c.at for c in tg.calls_of("editMessageText")][0]
    assert tg.edits[0].at - refused >= 3


async def test_attachments_reach_the_runner_on_stdin_and_in_follow_ups(timed, tg, autojump_clock):
    await setup(timed)
    first = tg.add_file(b"first photo", "photos/a.jpg")
    tg.push_message(CHAT, "work 0", chat_type="private", photo=[{"file_id": first, "width": 10, "height": 10}])
    await tg.wait_for(lambda: tg.sent, timeout=60)
    [container] = timed.runtime.containers
    [attachment] = container.stdin["attachments"]
    assert attachment["kind"] == "image" and attachment["path"] in container.stdin["prompt"]
    second = tg.add_file(b"second", "photos/b.jpg")
    tg.push_message(CHAT, "and this", chat_type="private", photo=[{"file_id": second, "width": 10, "height": 10}])
    with trio.fail_after(30):
        while not container.inputs:
            await trio.sleep(0.1)
    [follow_up] = container.inputs
    assert follow_up["type"] == "message" and [a["size"] for a in follow_up["attachments"]] == [6]
    assert follow_up["attachments"][0]["path"] in follow_up["text"]


def drop_ipc(server, payload: dict) -> Path:
    run = server.services.supervisor.live_run("support")
    path = run.ipc_dir / "messages" / f"{len(os.listdir(run.ipc_dir / 'messages'))}-f.json"
    path.write_text(json.dumps(payload))
    return path


async def test_send_file_uploads_a_document_and_a_photo(timed, tg, autojump_clock):
    await setup(timed)
    await say(tg, "work 0")
    await tg.wait_for(lambda: tg.sent, timeout=60)
    group = timed.settings.groups_dir / "support"
    (group / "out").mkdir()
    (group / "out" / "report.pdf").write_bytes(b"%PDF-1.4 report")
    (group / "chart.png").write_bytes(b"\x89PNG chart")
    drop_ipc(timed, {"type": "send_file", "chatJid": JID, "path": "/workspace/group/out/report.pdf",
                     "caption": "the report"})
    drop_ipc(timed, {"type": "send_file", "path": "chart.png"})
    await tg.wait_for(lambda: len(tg.uploads) == 2)
    (m1, form1, files1), (m2, form2, files2) = tg.uploads
    assert (m1, form1, files1) == ("sendDocument", {"chat_id": str(CHAT), "caption": "the report"},
                                   {"document": ("report.pdf", "application/pdf", b"%PDF-1.4 report")})
    assert (m2, form2, files2) == ("sendPhoto", {"chat_id": str(CHAT)},
                                   {"photo": ("chart.png", "image/png", b"\x89PNG chart")})
    await trio.sleep(1)
    sent = [m for m in await stored(timed) if m["attachments"]]
    assert [m["attachments"][0]["path"] for m in reversed(sent)] == [
        "/workspace/group/out/report.pdf", "/workspace/group/chart.png"]
    audit = await timed.services.db.fetchall("SELECT message FROM audit_log WHERE category = 'ipc'")
    assert any("sent the file /workspace/group/out/report.pdf" in r[0] for r in audit)


@pytest.mark.parametrize("make, path", [
    (lambda g, o: os.symlink(o / "secret.txt", g / "link.txt"), "/workspace/group/link.txt"),
    (lambda g, o: os.symlink(o, g / "dir"), "/workspace/group/dir/secret.txt"),
    (lambda g, o: None, "/workspace/group/../outside/secret.txt"),
    (lambda g, o: None, "/etc/passwd"),
    (lambda g, o: os.mkfifo(g / "pipe"), "/workspace/group/pipe"),
    (lambda g, o: (g / "huge.bin").write_bytes(b"\0" * (20 * MiB + 1)), "/workspace/group/huge.bin"),
])
async def test_send_file_refuses_links_escapes_and_large_files(timed, tg, autojump_clock, make, path):
    await setup(timed)
    await say(tg, "work 0")
    await tg.wait_for(lambda: tg.sent, timeout=60)
    group = timed.settings.groups_dir / "support"
    outside = timed.settings.groups_dir / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    make(group, outside)
    drop_ipc(timed, {"type": "send_file", "chatJid": JID, "path": path})
    await trio.sleep(1)
    assert tg.uploads == []
    assert len(list((timed.settings.ipc_dir / "errors").iterdir())) == 1
    row = await timed.services.db.fetchone("SELECT message FROM audit_log WHERE category = 'ipc'")
    assert "send_file refused" in row[0]


async def test_a_group_may_not_send_a_file_to_another_groups_chat(timed, tg, autojump_clock):
    await setup(timed)
    await timed.client.post("/container/namespaces", json={"name": "other", "chatJids": ["tg:999"]})
    await say(tg, "work 0")
    await tg.wait_for(lambda: tg.sent, timeout=60)
    (timed.settings.groups_dir / "support" / "a.txt").write_text("x")
    drop_ipc(timed, {"type": "send_file", "chatJid": "tg:999", "path": "/workspace/group/a.txt"})
    await trio.sleep(1)
    assert tg.uploads == []
    row = await timed.services.db.fetchone("SELECT severity FROM audit_log WHERE category = 'ipc'")
    assert row[0] == "violation"
