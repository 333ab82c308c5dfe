"""Issue 11 item 1: nothing a container writes into its IPC folder crashes the host or reaches past it.

Real files, a real server and the IPC watcher; containers are FakeRuntime tasks (the Docker
versions of these attacks are in test_boundary_docker.py).
"""
from __future__ import annotations

import json
import os

import pytest
import trio

from boundary_support import audit_rows, live_server, make_canary, snapshot, still_serving
from nanoclaw.supervisor._output import FrameParser


@pytest.fixture
async def live(nursery, tmp_path):
    server = await live_server(nursery, tmp_path)
    yield server
    await server.client.aclose()


@pytest.fixture
def canary(tmp_path):
    return make_canary(tmp_path)


def run_dir(server, group="team"):
    return server.services.supervisor.live_run(group).ipc_dir


def quarantined(server) -> list:
    errors = server.settings.ipc_dir / "errors"
    return sorted(errors.iterdir()) if errors.exists() else []


async def test_1000_nested_brackets_are_quarantined_and_the_watcher_goes_on(live, autojump_clock):
    deep = b"[" * 1000 + b"]" * 1000
    (run_dir(live) / "messages" / "100-deep.json").write_bytes(deep)
    await trio.sleep(0.5)
    [kept] = quarantined(live)
    assert kept.name.startswith("team-messages-") and kept.read_bytes() == deep
    assert not (run_dir(live) / "messages" / "100-deep.json").exists()
    [row] = await audit_rows(live.services)
    assert row[0] == "warning" and "nested deeper than 32" in row[2]
    # The same group goes on being served.
    (run_dir(live) / "messages" / "101-ok.json").write_text(json.dumps({"type": "message", "text": "fine"}))
    await trio.sleep(0.5)
    assert live.services.messages.sent == [("tg:2", "fine")]
    await still_serving(live)


@pytest.mark.parametrize("kind", ["messages", "tasks"])
async def test_a_folder_swapped_for_a_link_to_a_host_folder_is_never_followed(live, canary, autojump_clock, kind):
    before = snapshot(canary)
    folder = run_dir(live) / kind
    os.rmdir(folder)
    folder.symlink_to(canary)
    await trio.sleep(0.5)
    assert snapshot(canary) == before
    assert folder.is_dir() and not folder.is_symlink()  # made again as a real folder
    assert live.services.messages.sent == []
    assert await live.services.scheduler.list() == ([], 0)
    assert quarantined(live) == []
    rows = await audit_rows(live.services, severity="violation")
    assert rows == [("violation", "team", f"IPC folder of team: {kind} was a symbolic link; "
                                          "removed and made a folder again")]
    if kind == "messages":  # the folder works again
        (folder / "200-ok.json").write_text(json.dumps({"type": "message", "text": "after"}))
        await trio.sleep(0.5)
        assert live.services.messages.sent == [("tg:2", "after")]
    await still_serving(live)


@pytest.mark.parametrize("target", ["/dev/shm", "/proc/self", "/proc"])
async def test_a_link_to_another_file_system_does_not_crash_the_watcher(live, autojump_clock, target):
    for kind in ("messages", "tasks"):
        folder = run_dir(live) / kind
        os.rmdir(folder)
        folder.symlink_to(target)
    await trio.sleep(0.5)
    for kind in ("messages", "tasks"):
        assert (run_dir(live) / kind).is_dir() and not (run_dir(live) / kind).is_symlink()
    assert len(await audit_rows(live.services, severity="violation")) == 2
    await still_serving(live)


async def test_a_folder_swapped_for_a_file_is_made_again(live, autojump_clock):
    folder = run_dir(live) / "messages"
    os.rmdir(folder)
    folder.write_text("not a folder")
    await trio.sleep(0.5)
    assert folder.is_dir()
    [row] = await audit_rows(live.services, severity="violation")
    assert "messages was a file" in row[2]
    await still_serving(live)


async def test_links_fifos_and_folders_under_a_json_name_are_removed_unread(live, canary, autojump_clock):
    before = snapshot(canary)
    messages = run_dir(live) / "messages"
    (messages / "1-link.json").symlink_to(canary / "a.json")
    (messages / "2-dirlink.json").symlink_to(canary)
    os.mkfifo(messages / "3-fifo.json")
    (messages / "4-dir.json").mkdir()
    (messages / "4-dir.json" / "inner").symlink_to(canary / "secret.txt")
    (messages / "5-big.json").write_bytes(b" " * (300 * 1024))
    await trio.sleep(0.5)
    assert sorted(os.listdir(messages)) == []
    assert snapshot(canary) == before
    assert live.services.messages.sent == []
    reasons = [row[2] for row in await audit_rows(live.services, severity="warning")]
    assert len(reasons) == 5
    assert sum("symbolic link" in r for r in reasons) == 2
    assert any("is a folder" in r for r in reasons) and any("larger than" in r for r in reasons)
    # None had bytes worth keeping (a file past the cap is not read to its end).
    assert quarantined(live) == []
    await still_serving(live)


async def test_follow_up_and_close_into_an_input_link_stay_inside_the_data_dir(live, canary, autojump_clock):
    before = snapshot(canary)
    client = live.client
    target = {"group": "boss", "sessionId": "s-attack"}
    assert (await client.post("/container/ipc/directories", json=target)).status_code == 201
    inbox = live.settings.ipc_dir / "boss" / "s-attack" / "input"
    os.rmdir(inbox)
    inbox.symlink_to(canary)
    r = await client.post("/container/ipc/follow-up", json={**target, "content": "hello"})
    assert r.status_code == 200, r.text
    assert inbox.is_dir() and not inbox.is_symlink()
    assert os.listdir(inbox) == [r.json()["file"]]
    os.rename(inbox, inbox.with_name("gone"))
    inbox.symlink_to(canary)
    assert (await client.post("/container/ipc/close", json=target)).status_code == 200
    assert (inbox / "_close").is_file() and not inbox.is_symlink()
    assert snapshot(canary) == before
    assert len(await audit_rows(live.services, severity="violation")) == 2


async def test_a_folder_planted_as_close_is_replaced_by_the_sentinel(live, autojump_clock):
    target = {"group": "boss", "sessionId": "s-dir"}
    await live.client.post("/container/ipc/directories", json=target)
    planted = live.settings.ipc_dir / "boss" / "s-dir" / "input" / "_close"
    planted.mkdir()
    assert (await live.client.post("/container/ipc/close", json=target)).status_code == 200
    assert planted.is_file()


async def test_the_sweep_after_a_run_does_not_follow_links(live, canary, autojump_clock):
    before = snapshot(canary)
    folder = run_dir(live) / "tasks"
    (run_dir(live) / "input" / "_close").write_text("")
    os.rmdir(folder)
    folder.symlink_to(canary)
    await trio.sleep(1)
    assert live.services.supervisor.live_run("team") is None
    assert snapshot(canary) == before
    assert not folder.is_symlink()
    await still_serving(live)


def test_a_runner_frame_nested_1000_deep_is_an_error_frame_not_a_crash():
    parser = FrameParser()
    frames = parser.feed(b"---NANOCLAW_OUTPUT_START---\n" + b"[" * 1000 + b"]" * 1000
                         + b"\n---NANOCLAW_OUTPUT_END---\n")
    assert frames == [{"status": "error", "result": None,
                       "error": "unreadable result frame: nested deeper than 32 levels"}]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a folder to another user")
async def test_a_folder_made_again_keeps_the_session_folders_owner(live, canary, autojump_clock):
    session = run_dir(live)
    os.chown(session, 1000, 1000)
    os.rmdir(session / "tasks")
    (session / "tasks").symlink_to(canary)
    await trio.sleep(0.5)
    info = (session / "tasks").lstat()
    assert (info.st_uid, info.st_gid) == (1000, 1000) and (session / "tasks").is_dir()


async def test_purging_a_namespace_removes_links_not_their_targets(live, canary, autojump_clock):
    before = snapshot(canary)
    assert (await live.client.post("/container/namespaces", json={"name": "gone"})).status_code == 201
    (live.settings.groups_dir / "gone" / "link").symlink_to(canary)
    session = live.settings.ipc_dir / "gone" / "s1"
    session.mkdir(parents=True)
    (session / "messages").symlink_to(canary)
    assert (await live.client.delete("/container/namespaces/gone", params={"purge": "true"})).status_code == 204
    assert not (live.settings.groups_dir / "gone").exists() and not session.exists()
    assert snapshot(canary) == before
