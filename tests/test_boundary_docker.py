"""Issue 11 items 1, 2 and 6 against a real Docker engine: each attack is made from inside a live
container (`docker exec`), then the server must still serve, the canary folder outside the data dir
must be untouched and the audit log must hold the violation."""
from __future__ import annotations

import json
import subprocess

import pytest
import trio

from boundary_support import make_canary, snapshot
from conftest import docker_settings
from docker_support import docker_engine  # noqa: F401  (fixture)
from test_containers_docker import make_group, misbehaving_image, wait_for, wait_run  # noqa: F401

pytestmark = pytest.mark.usefixtures("docker_engine")

TASK = {"type": "schedule_task", "prompt": "p", "schedule": {"type": "cron", "value": "* * * * *"}}


@pytest.fixture
def settings(tmp_path, misbehaving_image):
    """conftest's `server` runs the misbehaving image in Docker."""
    return docker_settings(tmp_path, misbehaving_image)


async def exec_in(container: str, script: str, *, python: bool = False) -> None:
    """Run a shell (or Python) script inside the container, as its own user: what a prompt-injected
    agent can do."""
    command = ["python3", "-"] if python else ["sh", "-c", script]
    done = await trio.run_process(["docker", "exec", "-i", container, *command], capture_stdout=True,
                                  capture_stderr=True, check=False, stdin=script.encode() if python else b"")
    assert done.returncode == 0, done.stderr.decode()


async def swap_for_link(container: str, path: str, target) -> None:
    """Replace a folder by a link from inside. The host re-makes a missing IPC folder within a scan,
    so between `rm` and `ln` it may come back (and `ln` would then link inside it): retry until the
    entry itself is the link."""
    await exec_in(container, f"until [ -L {path} ]; do rm -rf {path}; ln -sn {target} {path}; done")


async def until(check, timeout: float = 30) -> None:
    """Poll a plain predicate (bounded: the container runs in real time)."""
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(0.05)


async def live_container(client, group: str) -> str:
    """Start a run of group; returns its container's name once the engine runs it."""
    await client.post("/container/runs", json={"group": group, "prompt": "x"})
    return await running_container(client, group)


async def running_container(client, group: str) -> str:
    async def running():
        state = (await client.get(f"/container/queue/groups/{group}")).json()
        if not state["active"]:
            return False
        found = subprocess.run(["docker", "ps", "-q", "--filter", f"name={state['containerName']}"],
                               capture_output=True, text=True).stdout.strip()
        return bool(found)

    await wait_for(running, timeout=60)
    return (await client.get(f"/container/queue/groups/{group}")).json()["containerName"]


async def audit(client, group: str, severity: str | None = None) -> list[dict]:
    params = {"group": group, "limit": 1000} | ({"severity": severity} if severity else {})
    answer = await client.get("/container/audit-log", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()["entries"]


async def test_ipc_and_instructions_attacks_from_a_live_container(server, tmp_path):
    client = server.client
    canary = make_canary(tmp_path)
    before = snapshot(canary)

    async def unharmed():
        assert (await client.get("/container/queue/counts")).status_code == 200
        assert snapshot(canary) == before

    await make_group(client, "victim", timeoutSecs=600)
    name = await live_container(client, "victim")
    ipc = server.services.supervisor.live_run("victim").ipc_dir
    errors = server.settings.ipc_dir / "errors"

    # 1,000 nested [ in messages/: quarantined and audited.
    await exec_in(name, "import os\nopen('/workspace/ipc/messages/.d', 'w').write('[' * 1000)\n"
                        "os.rename('/workspace/ipc/messages/.d', '/workspace/ipc/messages/deep.json')", python=True)
    await until(lambda: errors.exists() and any(p.name.startswith("victim-messages-") for p in errors.iterdir()))
    assert any("nested deeper than 32" in e["message"] for e in await audit(client, "victim", "warning"))
    await unharmed()

    # tasks/ and messages/ swapped for links: to the canary, to another file system.
    for kind, target in (("tasks", canary), ("messages", canary), ("tasks", "/dev/shm"), ("messages", "/proc")):
        await swap_for_link(name, f"/workspace/ipc/{kind}", target)
        await until(lambda: _is_folder(ipc / kind))
        await unharmed()
    violations = [e["message"] for e in await audit(client, "victim", "violation")]
    assert sum("was a symbolic link; removed and made a folder again" in m for m in violations) == 4

    # input/ swapped for a link to the canary, then a follow-up and a close from the API.
    await swap_for_link(name, "/workspace/ipc/input", canary)
    session = {"group": "victim", "sessionId": ipc.name}
    assert (await client.post("/container/ipc/follow-up", json={**session, "content": "hi"})).status_code == 200
    assert _is_folder(ipc / "input")
    await unharmed()

    # CLAUDE.md as a link to a host file.
    await exec_in(name, f"ln -s {canary}/secret.txt /workspace/group/CLAUDE.md")
    answer = await client.get("/container/namespaces/victim/instructions")
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "INSTRUCTIONS_LINK"
    assert "secret" not in answer.text
    assert any(e["category"] == "instructions" for e in await audit(client, "victim", "violation"))
    await unharmed()

    # 500 schedule_task files at once: 50 schedules, the flood cut at 120 files with one audit entry.
    await exec_in(name, f"import os\nos.chdir('/workspace/ipc/tasks')\nfor i in range(500):\n"
                        f"    open('.t', 'w').write({json.dumps(TASK)!r}); os.rename('.t', '%04d.json' % i)\n",
                  python=True)
    await until(lambda: not list((ipc / "tasks").iterdir()), timeout=120)
    schedules = (await client.get("/container/schedules", params={"group": "victim", "limit": 500})).json()
    assert schedules["total"] == 50
    floods = [e for e in await audit(client, "victim", "violation") if "IPC files in a minute" in e["message"]]
    assert len(floods) == 1
    assert any("already has 50 schedules" in e["message"] for e in await audit(client, "victim", "warning"))
    await unharmed()


async def test_a_group_folder_filled_from_inside_refuses_the_next_run(server):
    client = server.client
    await make_group(client, "filler", env=["MODE=slow", "SLEEP=8"], maxDiskMb=1)
    run_id = (await client.post("/container/runs", json={"group": "filler", "prompt": "x"})).json()["runId"]
    name = await running_container(client, "filler")
    await exec_in(name, "head -c 3145728 /dev/zero > /workspace/group/big.bin")
    assert (await wait_run(client, run_id))["status"] == "success"
    run_id = (await client.post("/container/runs", json={"group": "filler", "prompt": "x"})).json()["runId"]
    run = await wait_run(client, run_id)
    assert run["status"] == "error" and "over its quota of 1 MiB" in run["error"]
    assert run["containerName"] and not _container_exists(run["containerName"])
    state = (await client.get("/container/queue/groups/filler")).json()
    assert state["diskMb"] == 3.0
    entries = await audit(client, "filler", "warning")
    assert any(e["category"] == "quota" and "run refused" in e["message"] for e in entries)


def _is_folder(path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _container_exists(name: str) -> bool:
    return bool(subprocess.run(["docker", "ps", "-aq", "--filter", f"name={name}"],
                               capture_output=True, text=True).stdout.strip())
