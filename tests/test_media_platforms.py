"""Issue 14 on Slack, Discord and WhatsApp against their fakes: files in (downloaded with the
platform's credentials into the group's media folder), files out through each platform's upload
protocol (from an IPC send_file of a live fake container), Discord typing, splitting."""
from __future__ import annotations

import json
import os

import pytest
import trio

from channel_support import DISCORD, SLACK, WHATSAPP, discord, inline, slack, wa  # noqa: F401  (fixtures)
from conftest import make_settings, start_server
from fake_runtime import FakeRuntime
from fakes.slack import BOT_TOKEN, message_event
from fakes.whatsapp import media_delivery
from nanoclaw.text import split_text
from nanoclaw.clock import Clock
from nanoclaw.supervisor import Work

CUSTOMER = "15551230000"


async def open_server(nursery, tmp_path, fake_runtime: bool, **settings):
    kwargs = {}
    if fake_runtime:
        kwargs = dict(runtime=FakeRuntime(nursery), clock=Clock(start=1_800_000_000), offload=inline)
    return await start_server(nursery, make_settings(tmp_path, **settings), **kwargs)


async def make_group(server, jid: str) -> None:
    r = await server.client.post("/container/namespaces", json={"name": "team", "chatJids": [jid]})
    assert r.status_code == 201, r.text


async def stored(server, jid: str, count: int = 1) -> list[dict]:
    with trio.fail_after(10):
        while len(rows := (await server.client.get(f"/channels/chats/{jid}/messages")).json()["messages"]) < count:
            await trio.sleep(0.01)
    return rows


def media_file(server, attachment: dict) -> bytes:
    assert attachment["path"].startswith("/workspace/media/")
    return (server.settings.media_dir / "team" / attachment["path"].removeprefix("/workspace/media/")).read_bytes()


async def send_file_from_container(server, jid: str, name: str, data: bytes, caption: str | None) -> None:
    """Start a fake container for the group and have it ask (over IPC) to send a file."""
    await server.services.supervisor.submit("team", Work("work 0"))
    with trio.fail_after(30):
        while server.services.supervisor.live_run("team") is None:
            await trio.sleep(0.05)
    (server.settings.groups_dir / "team" / name).write_bytes(data)
    run = server.services.supervisor.live_run("team")
    (run.ipc_dir / "messages" / "1-f.json").write_text(json.dumps(
        {"type": "send_file", "chatJid": jid, "path": f"/workspace/group/{name}", "caption": caption}))


# -- Slack -----------------------------------------------------------------------------


async def test_slack_file_share_is_downloaded_with_the_bot_token(nursery, tmp_path, slack):
    server = await open_server(nursery, tmp_path, False, slack_api_base=slack.api_url)
    await SLACK.connect(server, slack)
    await make_group(server, "slack:D1")
    data = os.urandom(5000)
    file = slack.add_file(data, "scan.png", "image/png")
    await slack.push_event(message_event(channel="D1", text="", subtype="file_share", files=[file],
                                         ts="1700000001.000100"))
    [message] = await stored(server, "slack:D1")
    [attachment] = message["attachments"]
    assert attachment | {"path": None} == {"kind": "image", "name": "scan.png", "mimeType": "image/png",
                                           "size": 5000, "path": None}
    assert media_file(server, attachment) == data
    assert slack.downloads == [(file["url_private"].removeprefix(slack.url), f"Bearer {BOT_TOKEN}")]


async def test_slack_send_file_uses_the_external_upload(nursery, tmp_path, slack):
    server = await open_server(nursery, tmp_path, True, slack_api_base=slack.api_url)
    await SLACK.connect(server, slack)
    await make_group(server, "slack:C9")
    await send_file_from_container(server, "slack:C9", "notes.txt", b"meeting notes", "as promised")
    await slack.wait_for(lambda: slack.shared)
    [url_call] = slack.calls_of("files.getUploadURLExternal")
    assert url_call.params == {"filename": "notes.txt", "length": "13"}
    assert slack.shared == [{"channel_id": "C9", "initial_comment": "as promised",
                             "files": [("notes.txt", "text/plain", b"meeting notes")]}]


async def test_slack_gets_mrkdwn(nursery, tmp_path, slack):
    server = await open_server(nursery, tmp_path, False, slack_api_base=slack.api_url)
    await SLACK.connect(server, slack)
    r = await server.client.post("/channels/messages", json={
        "chatJid": "slack:C1", "content": "# Plan\n**ship** it, _today_ <@U0ALICE> a<b [docs](https://x.y/d)"})
    assert r.status_code == 201, r.text
    assert slack.posted == [{"channel": "C1",
                             "text": "*Plan*\n*ship* it, _today_ <@U0ALICE> a&lt;b <https://x.y/d|docs>"}]


# -- Discord ---------------------------------------------------------------------------


async def test_discord_attachments_are_downloaded(nursery, tmp_path, discord):
    server = await open_server(nursery, tmp_path, False, discord_api_base=discord.api_url)
    await DISCORD.connect(server, discord)
    await make_group(server, "dc:321")
    data = b"voice" * 1000
    attachment = discord.add_attachment(data, "memo.ogg", "audio/ogg")
    await discord.dispatch_message(channel_id="321", content="", guild_id=None, attachments=[attachment])
    [message] = await stored(server, "dc:321")
    assert [(a["kind"], a["name"], a["size"]) for a in message["attachments"]] == [("audio", "memo.ogg", 5000)]
    assert media_file(server, message["attachments"][0]) == data


async def test_discord_send_file_is_a_multipart_message(nursery, tmp_path, discord, autojump_clock):
    server = await open_server(nursery, tmp_path, True, discord_api_base=discord.api_url)
    await DISCORD.connect(server, discord)
    await make_group(server, "dc:321")
    await send_file_from_container(server, "dc:321", "plot.png", b"\x89PNG plot", "here")
    await discord.wait_for(lambda: discord.uploads)
    assert discord.uploads == [{"channel_id": "321",
                                "payload": {"content": "here", "attachments": [{"id": 0, "filename": "plot.png"}]},
                                "files": {"files[0]": ("plot.png", "image/png", b"\x89PNG plot")}}]


async def test_discord_typing_is_renewed_every_8_s_until_the_answer(nursery, tmp_path, discord, autojump_clock):
    server = await open_server(nursery, tmp_path, True, discord_api_base=discord.api_url)
    await DISCORD.connect(server, discord)
    await make_group(server, "dc:321")
    await discord.dispatch_message(channel_id="321", content="work 20", guild_id=None)
    await discord.wait_for(lambda: discord.sent, timeout=60)
    answered = trio.current_time()
    await trio.sleep(30)
    started = server.services.supervisor.runtime.containers[0].started_at
    times = [at for at, channel in discord.typing if channel == "321"]
    assert times[0] - started <= 1
    assert all(7.9 <= b - a <= 8.5 for a, b in zip(times, times[1:]))
    assert len(times) == 3 and times[-1] < answered  # at 0, 8 and 16 s of a 20 s turn


async def test_discord_streamed_reply_is_edited_with_patch(nursery, tmp_path, discord, autojump_clock):
    server = await open_server(nursery, tmp_path, True, discord_api_base=discord.api_url)
    await DISCORD.connect(server, discord)
    r = await server.client.post("/container/namespaces", json={
        "name": "team", "chatJids": ["dc:321"], "containerConfig": {"streamReplies": True}})
    assert r.status_code == 201, r.text
    await discord.dispatch_message(channel_id="321", content="stream 20", guild_id=None)
    final = " ".join(f"word{i}" for i in range(20))
    await discord.wait_for(lambda: discord.edits and discord.edits[-1][2] == final, timeout=60)
    await trio.sleep(5)
    [first] = discord.sent
    assert final.startswith(first["content"]) and len(discord.sent) == 1
    times = [at for at, _, _ in discord.edits]
    assert all(b - a >= 0.999 for a, b in zip(times, times[1:]))
    assert {message_id for _, message_id, _ in discord.edits} == {discord.edits[0][1]}


# -- WhatsApp --------------------------------------------------------------------------


async def test_whatsapp_media_goes_from_id_to_url_to_the_media_folder(nursery, tmp_path, wa):
    server = await open_server(nursery, tmp_path, False, whatsapp_api_base=wa.api_url)
    await WHATSAPP.connect(server, wa)
    await make_group(server, f"wa:{CUSTOMER}")
    data = b"%PDF invoice"
    media = wa.add_media(data, "application/pdf", "invoice.pdf")
    r = await wa.deliver(server.api + "/channels/whatsapp/webhook",
                         media_delivery(CUSTOMER, "document", media, "wamid.M1", caption="my invoice"))
    assert r.status_code == 200, r.text
    [message] = await stored(server, f"wa:{CUSTOMER}")
    assert message["content"] == "my invoice"
    [attachment] = message["attachments"]
    assert (attachment["kind"], attachment["name"], attachment["mimeType"]) == (
        "document", "invoice.pdf", "application/pdf")
    assert media_file(server, attachment) == data
    assert wa.downloads == [media["id"]]


async def test_whatsapp_send_file_uploads_media_then_sends_it(nursery, tmp_path, wa):
    server = await open_server(nursery, tmp_path, True, whatsapp_api_base=wa.api_url)
    await WHATSAPP.connect(server, wa)
    await make_group(server, f"wa:{CUSTOMER}")
    await send_file_from_container(server, f"wa:{CUSTOMER}", "report.pdf", b"%PDF report", None)
    with trio.fail_after(10):
        while not any(m.get("type") == "document" for m in wa.sent):
            await trio.sleep(0.05)
    [upload] = wa.uploads
    assert upload["form"] == {"messaging_product": "whatsapp", "type": "application/pdf"}
    assert upload["file"] == ("report.pdf", "application/pdf", b"%PDF report")
    [message] = [m for m in wa.sent if m["type"] == "document"]
    assert message["document"] == {"id": upload["id"], "filename": "report.pdf"} and message["to"] == CUSTOMER


async def test_whatsapp_gets_its_own_bold_and_links(nursery, tmp_path, wa):
    server = await open_server(nursery, tmp_path, False, whatsapp_api_base=wa.api_url)
    await WHATSAPP.connect(server, wa)
    r = await server.client.post("/channels/messages", json={
        "chatJid": f"wa:{CUSTOMER}", "content": "**Paid** ~~late~~ see [invoice](https://x.y/i)"})
    assert r.status_code == 201, r.text
    assert [m["text"]["body"] for m in wa.sent] == ["*Paid* ~late~ see invoice (https://x.y/i)"]


# -- splitting -----------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [4096, 2000, 40000])
def test_long_answers_split_on_paragraphs_then_lines(limit):
    paragraphs = ["\n".join(f"p{p} line {i} " + "z" * 60 for i in range(limit // 400)) for p in range(12)]
    text = "\n\n".join(paragraphs)
    pieces = split_text(text, limit)
    assert len(pieces) > 1 and all(len(p) <= limit for p in pieces)
    # Every cut falls between paragraphs: each piece is whole paragraphs.
    assert all(set(piece.split("\n\n")) <= set(paragraphs) for piece in pieces)
    assert "\n\n".join(pieces) == text
