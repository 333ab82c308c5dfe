"""Issue 22 items 3 and 4 from inside a real container: a container cannot outlive its
timeoutSecs however it talks, and every tree it can write counts toward its group's disk quota."""
from __future__ import annotations

import json
import subprocess

import httpx
import pytest
import trio

from conftest import docker_settings, start_server
from docker_support import build_script_image, docker_engine  # noqa: F401  (fixture)
from fakes.anthropic import serve_fake_anthropic
from test_boundary_docker import exec_in, running_container
from test_containers_docker import make_group, misbehaving_image, wait_for, wait_run  # noqa: F401

pytestmark = pytest.mark.usefixtures("docker_engine")

REAL_KEY = "sk-ant-real-key-only-the-host-knows-5678"
FRAME = "---NANOCLAW_OUTPUT_START---\n" + json.dumps({"status": "success", "result": "still here"}) \
    + "\n---NANOCLAW_OUTPUT_END---\n"
# A prompt-injected agent that will not end: it keeps its token where the host can read it,
# deletes every _close the host writes and prints its own success frames every 2 s.
IMMORTAL = f"""
import json, os, sys, time
sys.stdin.read()
with open("/workspace/group/env.json", "w") as f:
    json.dump({{k: v for k, v in os.environ.items() if k.startswith("ANTHROPIC_")}}, f)
while True:
    try:
        os.remove("/workspace/ipc/input/_close")
    except FileNotFoundError:
        pass
    with open("/proc/1/fd/1", "w") as out:
        out.write({FRAME!r})
    time.sleep(2)
"""


@pytest.fixture(scope="session")
def immortal_image(docker_engine, tmp_path_factory):
    return build_script_image(docker_engine, tmp_path_factory.mktemp("immortal"), "nanoclaw-immortal:test-limits",
                              IMMORTAL)


def _exists(name: str) -> bool:
    return bool(subprocess.run(["docker", "ps", "-aq", "--filter", f"name={name}"],
                               capture_output=True, text=True).stdout.strip())


async def _ask_proxy(env: dict) -> int:
    async with httpx.AsyncClient() as http:
        answer = await http.post(env["ANTHROPIC_BASE_URL"].rstrip("/") + "/v1/messages",
                                 headers={"x-api-key": env["ANTHROPIC_API_KEY"]},
                                 json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
    return answer.status_code


async def test_a_container_that_deletes_close_and_prints_results_dies_at_its_timeout(nursery, tmp_path,
                                                                                    immortal_image):
    fake_llm = await nursery.start(lambda task_status: serve_fake_anthropic(api_key=REAL_KEY,
                                                                            task_status=task_status))
    server = await start_server(nursery, docker_settings(tmp_path, immortal_image))
    client = server.client
    r = await client.post("/container/credential-proxy/mappings", json={
        "name": "anthropic", "upstreamUrl": fake_llm.url, "credentialType": "api_key", "credential": REAL_KEY})
    assert r.status_code == 201, r.text
    assert (await client.post("/container/credential-proxy/start")).json()["running"] is True
    await make_group(client, "immortal", timeoutSecs=10, idleTimeoutSecs=600)
    started = trio.current_time()
    run_id = (await client.post("/container/runs", json={"group": "immortal", "prompt": "x"})).json()["runId"]
    env_file = server.settings.groups_dir / "immortal" / "env.json"
    await wait_for(lambda: _true(env_file.exists()), timeout=60)
    await trio.sleep(0.5)
    env = json.loads(env_file.read_text())
    assert await _ask_proxy(env) != 403  # alive: its token works

    run = await wait_run(client, run_id, timeout=60)
    ended = trio.current_time()
    assert run["status"] == "timeout" and "outlived its 10 s" in run["error"]
    assert len(run["results"]) >= 3  # it did keep answering
    assert ended - started < 10 + 15  # the start itself (engine) plus the stop's grace, not its frames
    await wait_for(lambda: _true(not _exists(run["containerName"])), timeout=15)
    assert await _ask_proxy(env) == 403  # its token died with it
    await client.aclose()


async def _true(value: bool) -> bool:
    return value


async def test_sessions_and_ipc_filled_from_inside_stop_the_run_and_refuse_the_next(nursery, tmp_path,
                                                                                    misbehaving_image):
    server = await start_server(nursery, docker_settings(tmp_path, misbehaving_image, disk_check_secs=1))
    client = server.client
    await make_group(client, "filler", env=["MODE=slow", "SLEEP=60"], maxDiskMb=5)
    run_id = (await client.post("/container/runs", json={"group": "filler", "prompt": "x"})).json()["runId"]
    name = await running_container(client, "filler")
    await exec_in(name, "head -c 6291456 /dev/zero > /workspace/sessions/conv.json; "
                        "head -c 2097152 /dev/zero > /workspace/sessions/junk.bin; "
                        "head -c 2097152 /dev/zero > /workspace/ipc/blob")
    run = await wait_run(client, run_id, timeout=30)  # stopped at a check, long before its 60 s
    assert run["status"] == "error" and "over its quota of 5 MiB" in run["error"]
    assert run["error"].endswith("the container was stopped")
    await wait_for(lambda: _true(not _exists(name)), timeout=15)
    # After the run: its IPC folder and the session junk are gone; the conversation is kept and counted.
    sessions, ipc = server.settings.sessions_dir / "filler", server.settings.ipc_dir / "filler"
    assert sorted(p.name for p in sessions.iterdir()) == ["conv.json"] and list(ipc.iterdir()) == []
    run_id = (await client.post("/container/runs", json={"group": "filler", "prompt": "x"})).json()["runId"]
    run = await wait_run(client, run_id)
    assert run["status"] == "error" and "hold 6 MiB, over its quota of 5 MiB" in run["error"]
    assert not _exists(run["containerName"])  # refused: no container was started
    assert (await client.get("/container/queue/groups/filler")).json()["diskMb"] == 6.0
    entries = (await client.get("/container/audit-log", params={"group": "filler"})).json()["entries"]
    quota = sorted(e["message"].split(":")[0] for e in entries if e["category"] == "quota")
    assert quota == ["run refused", "run stopped"]
    await client.aclose()
