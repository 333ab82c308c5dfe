"""End to end with a real Docker engine: a Telegram photo is downloaded by the host into the
group's media folder (read-only in the container), the container finds it at the path its stdin names, and its send_file IPC
request reaches the fake Bot API with the same bytes.

The first test runs a small script in place of the agent runner: it reads the attachment, finds
it cannot write there (the media folder is read-only in the container) and asks the host to send
it back from where it is (sendPhoto). The second runs the real
agent image: the fake model sees the photo as an image block, writes a report with write_file
and sends it with the send_file tool (sendDocument), then sends a copy of the photo (sendPhoto).
"""
from __future__ import annotations

import base64
import os
import subprocess

import pytest
import trio

from conftest import docker_settings, start_server
from docker_support import AGENT_TAG, agent_image, build_script_image, docker_engine  # noqa: F401  (fixtures)
from fakes.anthropic import serve_fake_anthropic, text_reply, tool_reply
from fakes.telegram import TOKEN, serve_fake_telegram
from test_end_to_end import proxied_telegram_server

pytestmark = pytest.mark.usefixtures("docker_engine")

CHAT = 5151
REAL_KEY = "sk-real-key-only-the-host-knows-9090"
SCRIPT = r'''
import json, os, sys
request = json.loads(sys.stdin.readline())
[attachment] = request["attachments"]
assert attachment["path"] in request["prompt"]
assert attachment["path"].startswith("/workspace/media/")
data = open(attachment["path"], "rb").read()
writable = "read-only" if os.statvfs(attachment["path"]).f_flag & os.ST_RDONLY else "writable"
message = {"type": "send_file", "chatJid": request["chatJid"], "path": attachment["path"],
           "caption": "got %d bytes, %s" % (len(data), writable)}
with open("/workspace/ipc/messages/.send.tmp", "w") as fh:
    json.dump(message, fh)
os.rename("/workspace/ipc/messages/.send.tmp", "/workspace/ipc/messages/1-send.json")
print("---NANOCLAW_OUTPUT_START---")
print(json.dumps({"status": "success", "result": "sent it", "newSessionId": None}))
print("---NANOCLAW_OUTPUT_END---", flush=True)
'''


@pytest.fixture(scope="module")
def echo_image(docker_engine, tmp_path_factory):  # noqa: F811
    tag = AGENT_TAG.replace("nanoclaw-agent", "nanoclaw-media-echo")
    yield build_script_image(docker_engine, tmp_path_factory.mktemp("echo-image"), tag, SCRIPT)
    subprocess.run([docker_engine, "image", "rm", tag], capture_output=True)


async def test_a_photo_reaches_the_container_and_its_send_file_reaches_telegram(nursery, tmp_path, echo_image):
    tg = await nursery.start(serve_fake_telegram)
    settings = docker_settings(tmp_path, echo_image, telegram_api_base=tg.url)
    server = await start_server(nursery, settings)
    r = await server.client.post("/container/namespaces", json={
        "name": "photos", "chatJids": [f"tg:{CHAT}"], "containerConfig": {"idleTimeoutSecs": 5}})
    assert r.status_code == 201, r.text
    r = await server.client.post("/channels/telegram/connect", json={"token": TOKEN})
    assert r.status_code == 200, r.text

    photo = os.urandom(200_000)
    file_id = tg.add_file(photo, "photos/file_1.jpg")
    tg.push_message(CHAT, None, chat_type="private", photo=[{"file_id": file_id, "width": 800, "height": 600}])
    await tg.wait_for(lambda: tg.uploads, timeout=120)

    [(method, form, files)] = tg.uploads
    assert method == "sendPhoto" and form == {"chat_id": str(CHAT),
                                           "caption": f"got {len(photo)} bytes, read-only"}
    assert files == {"photo": ("photo.jpg", "image/jpeg", photo)}
    await tg.wait_for(lambda: tg.sent)
    assert tg.sent == [{"chat_id": str(CHAT), "text": "sent it"}]
    # Audited right after the platform took the file: wait for that (bounded).
    with trio.fail_after(10):
        while not any("sent the file /workspace/media/" in row[0] for row in
                      await server.services.db.fetchall("SELECT message FROM audit_log WHERE category = 'ipc'")):
            await trio.sleep(0.05)
    await server.client.aclose()


REPORT = "Photo report\nsize: {size} bytes\n"


async def test_the_real_agent_sees_a_photo_and_sends_a_file_back(nursery, tmp_path, agent_image):  # noqa: F811
    """The real runner in the agent image: a caption-less Telegram photo reaches the fake model
    as an image block (through the credential proxy), and the model's send_file tool calls come
    back to the fake Bot API as sendDocument (a report it wrote) and sendPhoto (the photo) with
    the files' exact bytes."""
    server, tg, llm = await proxied_telegram_server(nursery, tmp_path, agent_image, serve_fake_anthropic, REAL_KEY)
    settings, client = server.settings, server.client
    r = await client.post("/container/namespaces", json={
        "name": "vision", "chatJids": [f"tg:{CHAT}"], "requiresTrigger": False,
        "containerConfig": {"idleTimeoutSecs": 5}})
    assert r.status_code == 201, r.text
    r = await client.post("/channels/telegram/connect", json={"token": TOKEN})
    assert r.status_code == 200, r.text

    photo = b"\xff\xd8\xff\xe0" + os.urandom(150_000)
    report = REPORT.format(size=len(photo))
    llm.queue(tool_reply("write_file", {"path": "report.txt", "content": report}),
              tool_reply("send_file", {"path": "report.txt", "caption": "your report"}),
              tool_reply("bash", {"command": "cp /workspace/media/*/* back.jpg"}),
              tool_reply("send_file", {"path": "/workspace/group/back.jpg"}),
              text_reply("I looked at your photo and sent a report."))
    file_id = tg.add_file(photo, "photos/file_7.jpg")
    tg.push_message(CHAT, None, chat_type="private", photo=[{"file_id": file_id, "width": 640, "height": 480}])
    await tg.wait_for(lambda: len(tg.uploads) == 2 and tg.sent, timeout=180)  # a real container runs in real time

    # The host saved the photo in the group's media folder, byte for byte.
    [saved] = (settings.media_dir / "vision").glob("*/*")
    assert saved.read_bytes() == photo
    container_path = f"/workspace/media/{saved.parent.name}/{saved.name}"
    # The model's first request carries the photo as an image block and the prompt names its path.
    first = llm.messages_requests[0]
    assert first.headers["x-api-key"] == REAL_KEY
    [user] = first.body["messages"]
    [text] = [b for b in user["content"] if b["type"] == "text"]
    [image] = [b for b in user["content"] if b["type"] == "image"]
    assert container_path in text["text"]
    assert image["source"]["type"] == "base64" and image["source"]["media_type"] == "image/jpeg"
    assert base64.b64decode(image["source"]["data"]) == photo
    # The send_file tool calls arrived at Telegram with the exact bytes (a document, then the photo), then the answer.
    [(method, form, files), (method_2, form_2, files_2)] = tg.uploads
    assert method == "sendDocument" and form == {"chat_id": str(CHAT), "caption": "your report"}
    [(name, _content_type, data)] = files.values()
    assert list(files) == ["document"] and name == "report.txt" and data == report.encode()
    assert method_2 == "sendPhoto" and form_2 == {"chat_id": str(CHAT)}
    assert files_2 == {"photo": ("back.jpg", "image/jpeg", photo)}
    assert tg.sent == [{"chat_id": str(CHAT), "text": "I looked at your photo and sent a report."}]
    assert len(llm.messages_requests) == 5
    [run] = await server.services.db.fetchall("SELECT kind, container_name, results FROM run_history")
    assert run["kind"] == "message" and run["container_name"].startswith("nanoclaw-vision-")
    await client.aclose()
