"""Issue 11 item 6: quotas per group (schedules, IPC files per minute, group folder size)."""
from __future__ import annotations

import json
import os

import pytest
import trio

from boundary_support import audit_rows, live_server, make_canary, still_serving
from checks import assert_error

EVERY_MINUTE = {"type": "cron", "value": "* * * * *"}


@pytest.fixture
async def live(nursery, tmp_path):
    server = await live_server(nursery, tmp_path)
    yield server
    await server.client.aclose()


def drop(server, group: str, kind: str, count: int, make, start: int = 0) -> None:
    folder = server.services.supervisor.live_run(group).ipc_dir / kind
    for i in range(start, start + count):
        (folder / f"{i:06d}.json").write_text(json.dumps(make(i)))


def schedule_task(i: int) -> dict:
    return {"type": "schedule_task", "prompt": f"task {i}", "schedule": EVERY_MINUTE}


def message(i: int) -> dict:
    return {"type": "message", "text": f"m{i}"}


async def test_500_schedule_task_files_make_only_50_schedules(live, autojump_clock):
    drop(live, "team", "tasks", 500, schedule_task)
    await trio.sleep(5)
    schedules, total = await live.services.scheduler.list(group="team")
    assert total == 50
    assert sorted(s.prompt for s in schedules) == sorted(f"task {i}" for i in range(50))
    refused = await audit_rows(live.services, category="quota")
    assert len(refused) == 70 and all("already has 50 schedules" in r[2] for r in refused)
    # 120 files were taken this minute (50 created, 70 over the quota); the other 380 wait for no one.
    assert os.listdir(live.services.supervisor.live_run("team").ipc_dir / "tasks") == []
    await still_serving(live)


async def test_the_api_refuses_the_51st_schedule_of_a_group(live, autojump_clock):
    body = {"name": "n", "group": "boss", "prompt": "p", "schedule": EVERY_MINUTE}
    for _ in range(50):
        assert (await live.client.post("/container/schedules", json=body)).status_code == 201
    error = assert_error(await live.client.post("/container/schedules", json=body), 409, "QUOTA_EXCEEDED")
    assert "already has 50 schedules" in error["message"]
    # Other groups have their own quota.
    assert (await live.client.post("/container/schedules", json=body | {"group": "team"})).status_code == 201
    assert [r[1] for r in await audit_rows(live.services, category="quota")] == ["boss"]


async def test_an_ipc_flood_is_cut_at_120_files_a_minute_with_one_audit_entry_per_burst(live, autojump_clock):
    drop(live, "team", "messages", 300, message)
    await trio.sleep(5)
    sent = live.services.messages.sent
    assert len(sent) == 120 and sent[0] == ("tg:2", "m0") and sent[-1] == ("tg:2", "m119")
    errors = os.listdir(live.settings.ipc_dir / "errors")
    assert len(errors) == 180
    flood = [r for r in await audit_rows(live.services, severity="violation") if "more than 120" in r[2]]
    assert len(flood) == 1
    # A new minute: the group is served again, and the next burst is one more entry.
    await trio.sleep(60)
    drop(live, "team", "messages", 200, message, start=1000)
    await trio.sleep(5)
    assert len(live.services.messages.sent) == 240
    flood = [r for r in await audit_rows(live.services, severity="violation") if "more than 120" in r[2]]
    assert len(flood) == 2
    await still_serving(live)


async def test_a_group_folder_over_max_disk_is_refused_a_run(live, tmp_path, autojump_clock):
    client, services = live.client, live.services
    r = await client.post("/container/namespaces", json={"name": "full", "chatJids": ["tg:7"],
                                                          "containerConfig": {"maxDiskMb": 1}})
    assert r.status_code == 201, r.text
    folder = live.settings.groups_dir / "full"
    (folder / "big.bin").write_bytes(b"x" * (2 * 1024 * 1024))
    started = len(services.supervisor.runtime.containers)
    run_id = (await client.post("/container/runs", json={"group": "full", "prompt": "work 0"})).json()["runId"]
    await trio.sleep(1)
    run = (await client.get(f"/container/runs/{run_id}")).json()
    assert run["status"] == "error"
    assert "(group, sessions, IPC, media) hold 2 MiB, over its quota of 1 MiB (containerConfig.maxDiskMb)" in run["error"]
    assert len(services.supervisor.runtime.containers) == started  # no container was started
    state = (await client.get("/container/queue/groups/full")).json()
    assert state["diskMb"] == 2.0
    [row] = await audit_rows(services, category="quota")
    assert row[:2] == ("warning", "full") and "run refused" in row[2]
    # A chat message run tells the chat once, however often it is retried.
    services.messages.add("full", "hello")
    services.supervisor.notify("full")
    await trio.sleep(300)
    notices = [text for jid, text in services.messages.sent if jid == "tg:full"]  # ListMessages: tg:<group>
    assert len(notices) == 1 and notices[0].startswith("I cannot run now: the folders of full (group, sessions, IPC, media) hold 2 MiB")
    # Freed space: runs go again.
    (folder / "big.bin").unlink()
    run_id = (await client.post("/container/runs", json={"group": "full", "prompt": "once 0"})).json()["runId"]
    await trio.sleep(1)
    assert (await client.get(f"/container/runs/{run_id}")).json()["status"] == "success"


async def test_links_in_the_group_folder_are_not_followed_when_measuring(live, tmp_path, autojump_clock):
    canary = make_canary(tmp_path)
    (canary / "huge.bin").write_bytes(b"x" * (3 * 1024 * 1024))
    folder = live.settings.groups_dir / "team"
    (folder / "link-to-file").symlink_to(canary / "huge.bin")
    (folder / "link-to-dir").symlink_to(canary)
    (folder / "proc").symlink_to("/proc")
    (folder / "own.bin").write_bytes(b"y" * (512 * 1024))
    state = (await live.client.get("/container/queue/groups/team")).json()
    assert state["diskMb"] == 0.5
