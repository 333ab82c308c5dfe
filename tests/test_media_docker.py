"""End to end with a real Docker engine: a Telegram photo is downloaded by the host into the
group's inbox, the container finds it at the path its stdin names, and its send_file IPC
request reaches the fake Bot API as a sendPhoto with the same bytes.

The container runs a small test script in place of the agent runner (the runner's own
send_file tool and image blocks are tested with the runner): it copies the attachment to
/workspace/group/out/ and asks the host to send that copy.
"""
from __future__ import annotations

import os
import subprocess

import pytest
import trio

from conftest import make_settings, start_server
from docker_support import AGENT_TAG, BASE_IMAGE, docker_engine  # noqa: F401  (fixture)
from fakes.telegram import TOKEN, serve_fake_telegram

pytestmark = pytest.mark.usefixtures("docker_engine")

CHAT = 5151
SCRIPT = r'''
import json, os, sys
request = json.loads(sys.stdin.readline())
[attachment] = request["attachments"]
assert attachment["path"] in request["prompt"]
data = open(attachment["path"], "rb").read()
os.makedirs("/workspace/group/out", exist_ok=True)
with open("/workspace/group/out/echo.jpg", "wb") as fh:
    fh.write(data)
message = {"type": "send_file", "chatJid": request["chatJid"], "path": "/workspace/group/out/echo.jpg",
           "caption": "got %d bytes" % len(data)}
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
    context = tmp_path_factory.mktemp("echo-image")
    (context / "echo.py").write_text(SCRIPT)
    (context / "Dockerfile").write_text(f'FROM {BASE_IMAGE}\nCOPY echo.py /echo.py\nENTRYPOINT ["python3", "/echo.py"]\n')
    build = subprocess.run([docker_engine, "build", "--pull=false", "-t", tag, str(context)],
                           capture_output=True, text=True, timeout=600)
    if build.returncode != 0:
        pytest.fail(f"building {tag} failed:\n{(build.stdout + build.stderr)[-4000:]}")
    yield tag
    subprocess.run([docker_engine, "image", "rm", tag], capture_output=True)


async def test_a_photo_reaches_the_container_and_its_send_file_reaches_telegram(nursery, tmp_path, echo_image):
    tg = await nursery.start(serve_fake_telegram)
    settings = make_settings(tmp_path, container_runtime="docker", container_network="host",
                             agent_image=echo_image, telegram_api_base=tg.url)
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
    assert method == "sendPhoto" and form == {"chat_id": str(CHAT), "caption": f"got {len(photo)} bytes"}
    assert files == {"photo": ("echo.jpg", "image/jpeg", photo)}
    await tg.wait_for(lambda: tg.sent)
    assert tg.sent == [{"chat_id": str(CHAT), "text": "sent it"}]
    # Audited right after the platform took the file: wait for that (bounded).
    with trio.fail_after(10):
        while not any("sent the file /workspace/group/out/echo.jpg" in row[0] for row in
                      await server.services.db.fetchall("SELECT message FROM audit_log WHERE category = 'ipc'")):
            await trio.sleep(0.05)
    await server.client.aclose()
