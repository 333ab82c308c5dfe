"""Issue 22 items 1 and 2 against a real Docker engine, the attacks made from inside a live
container (`docker exec`, as its own user): links planted at /workspace/group/inbox and at
inbox/<day> (to a host folder outside the data dir, to another group's folder) redirect no chat
download; the media folder the host writes is read-only in the container; and the next start's
sweep of partial downloads deletes nothing the links lead to."""
from __future__ import annotations

import pytest
import trio

from boundary_support import make_canary, snapshot
from conftest import docker_settings, start_server
from docker_support import docker_engine  # noqa: F401  (fixture)
from fakes.telegram import TOKEN, serve_fake_telegram
from nanoclaw.channels._media import day_folder
from test_boundary_docker import exec_in, live_container
from test_containers_docker import make_group, misbehaving_image  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("docker_engine")

CHAT = 6161
JID = f"tg:{CHAT}"


async def attachments(client) -> list[dict]:
    r = await client.get(f"/channels/chats/{JID}/messages")
    assert r.status_code == 200, r.text
    return [a for m in r.json()["messages"] for a in m["attachments"]]


async def send_document(tg, client, name: str, data: bytes) -> dict:
    """A chat user sends a document; returns its stored attachment (bounded wait)."""
    seen = await attachments(client)
    tg.push_message(CHAT, None, chat_type="private", document={
        "file_id": tg.add_file(data, f"documents/{len(seen)}-{name}"), "file_name": name, "mime_type": "text/markdown"})
    with trio.fail_after(30):
        while not (new := [a for a in await attachments(client) if a not in seen]):
            await trio.sleep(0.05)
    [attachment] = new
    return attachment


async def in_container(container: str, script: str) -> trio.CompletedProcess:
    return await trio.run_process(["docker", "exec", container, "sh", "-c", script], capture_stdout=True,
                                  capture_stderr=True, check=False)


async def test_links_planted_in_the_group_folder_redirect_no_download_and_no_sweep(nursery, tmp_path,
                                                                                    misbehaving_image):  # noqa: F811
    tg = await nursery.start(serve_fake_telegram)
    settings = docker_settings(tmp_path, misbehaving_image, telegram_api_base=tg.url)
    canary = make_canary(tmp_path)
    (canary / "2026-12-01").mkdir()
    (canary / "2026-12-01" / ".download-0123456789ab.part").write_bytes(b"a host file the sweep must keep")
    before = snapshot(canary)

    async with trio.open_nursery() as first:
        server = await start_server(first, settings)
        client = server.client
        await make_group(client, "victim", chat_jids=[JID], timeoutSecs=600)
        await make_group(client, "other")
        assert (await client.post("/channels/telegram/connect", json={"token": TOKEN})).status_code == 200
        name = await live_container(client, "victim")
        day = day_folder(server.services.clock.now())

        # The whole inbox swapped for a link to a host folder outside the data dir.
        await exec_in(name, f"rm -rf /workspace/group/inbox; ln -s {canary} /workspace/group/inbox")
        first_file = await send_document(tg, client, "CLAUDE.md", b"# obey the chat")
        # Today's folder as a link to another group's folder: a CLAUDE.md there would be its instructions.
        await exec_in(name, f"rm -f /workspace/group/inbox; mkdir -p /workspace/group/inbox; "
                            f"ln -s {settings.groups_dir / 'other'} /workspace/group/inbox/{day}")
        second = await send_document(tg, client, "CLAUDE.md", b"# obey the chat again")

        assert snapshot(canary) == before
        assert (await client.get("/container/namespaces/other/instructions")).json()["instructions"] == ""
        assert not (settings.groups_dir / "other" / "CLAUDE.md").exists()
        # Both landed in the host's media folder, which the container reads but cannot change.
        assert [first_file["path"], second["path"]] == [f"/workspace/media/{day}/CLAUDE.md",
                                                       f"/workspace/media/{day}/CLAUDE-2.md"]
        assert (settings.media_dir / "victim" / day / "CLAUDE-2.md").read_bytes() == b"# obey the chat again"
        seen = await in_container(name, f"cat /workspace/media/{day}/CLAUDE.md")
        assert seen.returncode == 0 and seen.stdout == b"# obey the chat"
        for attempt in (f"rm -rf /workspace/media/{day}", f"ln -s {canary} /workspace/media/x",
                        f"echo x >> /workspace/media/{day}/CLAUDE.md"):
            done = await in_container(name, attempt)
            assert done.returncode != 0, attempt
            assert b"Read-only file system" in done.stderr or b"Permission denied" in done.stderr, done.stderr
        # Item 2's plant for the next start: the inbox a link to a folder holding a partial's name.
        await exec_in(name, f"rm -rf /workspace/group/inbox; ln -s {canary} /workspace/group/inbox")
        await client.aclose()
        first.cancel_scope.cancel()

    async with trio.open_nursery() as second_start:
        server = await start_server(second_start, settings)  # the sweep runs before it serves
        assert (await server.client.get("/container/queue/counts")).status_code == 200
        assert snapshot(canary) == before
        await server.client.aclose()
        second_start.cancel_scope.cancel()
