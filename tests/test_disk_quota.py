"""Issue 22 item 4: the disk quota counts every tree a group's containers can write (groups/<g>,
sessions/<g>, ipc/<g>), bounded and without following links; a live run past it is stopped at the
next check; what a run leaves in IPC and sessions is removed, the resumable sessions kept."""
from __future__ import annotations

import os

import pytest
import trio

from boundary_support import audit_rows, live_server, make_canary, snapshot
from nanoclaw import safefs

MIB = 1024 * 1024


@pytest.fixture
async def live(nursery, tmp_path):
    server = await live_server(nursery, tmp_path, disk_check_secs=10)
    yield server
    await server.client.aclose()


async def make_group(live, name: str, **config) -> None:
    r = await live.client.post("/container/namespaces", json={"name": name, "containerConfig": config})
    assert r.status_code == 201, r.text


async def adhoc(live, group: str, prompt: str) -> dict:
    run_id = (await live.client.post("/container/runs", json={"group": group, "prompt": prompt})).json()["runId"]
    await trio.sleep(1)
    return (await live.client.get(f"/container/runs/{run_id}")).json()


async def test_sessions_and_ipc_count_toward_the_quota(live, autojump_clock):
    await make_group(live, "full", maxDiskMb=1)
    sessions = live.settings.sessions_dir / "full"
    sessions.mkdir(parents=True)
    (sessions / "s1.json").write_bytes(b"x" * (MIB // 2 + MIB // 4))
    stale = live.settings.ipc_dir / "full" / "old-session"
    stale.mkdir(parents=True)
    (stale / "blob").write_bytes(b"y" * (MIB // 2))
    assert (await live.client.get("/container/queue/groups/full")).json()["diskMb"] == 1.3
    run = await adhoc(live, "full", "once 0")
    assert run["status"] == "error"
    assert "the folders of full (group, sessions, IPC, media) hold 1.3 MiB, over its quota of 1 MiB" in run["error"]
    # The refused run's IPC leftovers went with it; the session a later run resumes stays, counted.
    assert (await live.client.get("/container/queue/groups/full")).json()["diskMb"] == 0.8


async def test_a_tree_too_deep_or_too_large_to_measure_is_over_the_quota(live, tmp_path, autojump_clock):
    await make_group(live, "deep")
    os.makedirs(os.path.join(live.settings.sessions_dir, "deep", *["d"] * (safefs.MAX_TREE_DEPTH + 2)))
    run = await adhoc(live, "deep", "once 0")
    assert run["status"] == "error"
    assert "sessions/deep holds folders nested more than 128 deep" in run["error"]
    wide = tmp_path / "wide"
    wide.mkdir()
    for i in range(150):
        (wide / str(i)).write_bytes(b"z")
    with pytest.raises(safefs.TreeTooLarge, match="more than 100 files and folders"):
        safefs.tree_bytes(wide, max_entries=100)
    assert safefs.tree_bytes(wide, max_entries=150) >= 150


async def test_a_live_run_past_the_quota_is_stopped_at_the_next_check(live, autojump_clock):
    await make_group(live, "filler", maxDiskMb=1)
    live.services.messages.add("filler", "work 0")  # a chat run: it waits for follow-ups
    live.services.supervisor.notify("filler")
    await trio.sleep(1)
    active = live.services.supervisor.live_run("filler")
    (active.ipc_dir / "blob").write_bytes(b"x" * (2 * MIB))
    await trio.sleep(7)  # the check at 10 s after the start has not come yet
    assert live.services.supervisor.live_run("filler") is active
    await trio.sleep(3)
    assert live.services.supervisor.live_run("filler") is None
    container = live.services.supervisor.runtime.containers[-1]
    assert container.stopped
    row = await live.services.db.fetchone("SELECT status, error FROM run_history WHERE id = ?", (active.run_id,))
    assert row["status"] == "error" and "hold 2 MiB, over its quota of 1 MiB" in row["error"]
    assert row["error"].endswith("; the container was stopped")
    [stopped] = [r for r in await audit_rows(live.services, category="quota") if "run stopped" in r[2]]
    assert stopped[:2] == ("warning", "filler")
    told = [text for jid, text in live.services.messages.sent if text.startswith("I had to stop")]
    assert len(told) == 1 and "over its quota of 1 MiB" in told[0]
    # What the run left in IPC is gone: the next run may start again.
    assert os.listdir(live.settings.ipc_dir / "filler") == []


async def test_a_run_leaves_its_resumable_sessions_and_nothing_else(live, tmp_path, autojump_clock):
    canary = make_canary(tmp_path)
    before = snapshot(canary)
    await make_group(live, "tidy")
    sessions = live.settings.sessions_dir / "tidy"
    (sessions / "claude" / "projects").mkdir(parents=True)
    (sessions / "claude" / "projects" / "t.jsonl").write_text("{}")
    (sessions / "abc_1.json").write_text("{}")
    (sessions / "junk.bin").write_bytes(b"j" * MIB)
    (sessions / ".abc_1.json.0123456789ab.tmp").write_text("{")
    (sessions / "other").mkdir()
    (sessions / "other" / "x").write_text("x")
    (sessions / "to-canary").symlink_to(canary)
    (sessions / "link.json").symlink_to(canary / "secret.txt")
    run = await adhoc(live, "tidy", "once 0")
    assert run["status"] == "success"
    assert sorted(os.listdir(sessions)) == ["abc_1.json", "claude"]
    assert os.listdir(sessions / "claude" / "projects") == ["t.jsonl"]
    assert os.listdir(live.settings.ipc_dir / "tidy") == []
    assert snapshot(canary) == before
