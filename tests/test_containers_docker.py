"""The supervisor against a real Docker engine and the real agent image.

Containers use host networking and reach the fake LLM on 127.0.0.1.
"""
from __future__ import annotations

import datetime as dt
import json
import subprocess

import pytest
import trio

from conftest import docker_settings, start_server
from docker_support import agent_image, build_script_image, docker_engine  # noqa: F401  (fixtures)
from fakes.anthropic import serve_fake_anthropic, tool_reply
from test_supervisor_queue import ListMessages

pytestmark = pytest.mark.usefixtures("docker_engine")

MISBEHAVING_TAG = "nanoclaw-misbehaving:test"
MISBEHAVING = r"""
import os, sys, time
mode = os.environ.get("MODE", "sleep")
sys.stdin.read()
if mode == "flood":
    chunk = b"x" * 65536
    for _ in range(50 * 16):
        sys.stdout.buffer.write(chunk)
    sys.stdout.flush()
if mode == "slow":
    time.sleep(float(os.environ["SLEEP"]))
    print("---NANOCLAW_OUTPUT_START---\n" '{"status": "success", "result": "slept"}' "\n---NANOCLAW_OUTPUT_END---")
    sys.exit(0)
time.sleep(3600)
"""


@pytest.fixture(scope="session")
def misbehaving_image(docker_engine, tmp_path_factory):
    """An image whose container floods stdout or just sleeps, never answering."""
    return build_script_image(docker_engine, tmp_path_factory.mktemp("misbehaving"), MISBEHAVING_TAG, MISBEHAVING)


def _seconds(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def containers_of(instance: str, *, all_states: bool = False) -> list[str]:
    args = ["docker", "ps", "--filter", f"label=nanoclaw.instance={instance}", "--format", "{{.Names}}"]
    if all_states:
        args.insert(2, "-a")
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()


async def wait_run(client, run_id: str, *, until=("success", "error", "timeout", "cancelled"), timeout=60):
    """Poll the run until its status is one of `until` (bounded: containers run in real time)."""
    with trio.fail_after(timeout):
        while True:
            run = (await client.get(f"/container/runs/{run_id}")).json()
            if run["status"] in until:
                return run
            await trio.sleep(0.05)


async def wait_for(predicate, timeout=30):
    with trio.fail_after(timeout):
        while not await predicate():
            await trio.sleep(0.05)


@pytest.fixture
async def fake_llm(nursery):
    return await nursery.start(serve_fake_anthropic)


async def make_group(client, name, fake_llm=None, chat_jids=(), **config):
    env = [f"ANTHROPIC_BASE_URL={fake_llm.url}", "ANTHROPIC_API_KEY=sk-test"] if fake_llm else []
    body = {"name": name, "chatJids": list(chat_jids), "containerConfig": {"env": env, **config}}
    r = await client.post("/container/namespaces", json=body)
    assert r.status_code == 201, r.text


async def test_a_run_result_comes_back(docker_server, fake_llm):
    client = docker_server.client
    await make_group(client, "math", fake_llm, idleTimeoutSecs=5)
    r = await client.post("/container/runs", json={"group": "math", "prompt": "what is 2+2?"})
    assert r.status_code == 202
    run = await wait_run(client, r.json()["runId"])
    assert run["status"] == "success"
    assert run["results"] == ["2+2 = 4"]
    assert run["containerName"].startswith("nanoclaw-math-")
    request = fake_llm.messages_requests[0]
    assert request.headers["x-api-key"] == "sk-test"
    assert "what is 2+2?" in json.dumps(request.body["messages"])
    history = (await client.get("/container/run-history", params={"group": "math"})).json()["runs"]
    assert [h["runId"] for h in history] == [run["runId"]]


def chat_messages(server) -> ListMessages:
    """A chat's container stays live for follow-ups (an on-demand one closes once it answered)."""
    messages = server.services.supervisor.feed = ListMessages()
    return messages


async def test_follow_up_reaches_live_container_and_close_ends_it(docker_server, fake_llm):
    client = docker_server.client
    await make_group(client, "talk", fake_llm, idleTimeoutSecs=120)
    messages = chat_messages(docker_server)
    messages.add("talk", "hello")
    docker_server.services.supervisor.notify("talk")

    async def answered(count):
        return len(messages.sent) >= count

    await wait_for(lambda: answered(1))
    state = (await client.get("/container/queue/groups/talk")).json()
    assert state["active"] and state["containerKind"] == "message"
    [run] = (await client.get("/container/run-history", params={"group": "talk"})).json()["runs"]
    run_id = run["runId"]
    target = {"group": "talk", "sessionId": state["sessionId"]}
    r = await client.post("/container/ipc/follow-up", json={**target, "content": "what is 3*5?"})
    assert r.json()["containerAttached"] is True
    await wait_for(lambda: answered(2))
    r = await client.post("/container/ipc/close", json=target)
    assert r.json()["containerAttached"] is True
    run = await wait_run(client, run_id, timeout=30)
    assert run["status"] == "success"
    assert run["results"] == ["You said: hello", "3*5 = 15"]
    # The second call carried the conversation so far.
    assert len(fake_llm.messages_requests[1].body["messages"]) == 3


async def test_idle_timeout_closes_the_container(docker_server, fake_llm):
    client = docker_server.client
    await make_group(client, "idle", fake_llm, idleTimeoutSecs=5)
    started = trio.current_time()
    messages = chat_messages(docker_server)
    messages.add("idle", "hi")
    docker_server.services.supervisor.notify("idle")

    async def answered():
        return bool(messages.sent)

    await wait_for(answered)
    [run] = (await client.get("/container/run-history", params={"group": "idle"})).json()["runs"]
    run = await wait_run(client, run["runId"], timeout=60)
    assert run["status"] == "success" and run["exitCode"] == 0
    assert 5 <= trio.current_time() - started < 30
    assert containers_of(docker_server.services.supervisor.instance_id) == []


@pytest.mark.parametrize("group, config, wait, status, error", [
    pytest.param("hang", {"timeoutSecs": 10}, 60, "timeout", "outlived its 10 s",
                 id="hard-timeout-stops-the-container"),
    pytest.param("flood", {"env": ["MODE=flood"], "timeoutSecs": 600}, 120, "error", "stdout passed 10 MiB",
                 id="printing-50-mib-is-capped-and-stopped"),
])
async def test_a_misbehaving_container_is_stopped_and_removed(docker_server, misbehaving_image,
                                                              group, config, wait, status, error):
    client = docker_server.client
    await make_group(client, group, image=misbehaving_image, **config)
    run_id = (await client.post("/container/runs", json={"group": group, "prompt": "x"})).json()["runId"]
    run = await wait_run(client, run_id, timeout=wait)
    assert run["status"] == status
    assert error in run["error"]
    instance = docker_server.services.supervisor.instance_id
    assert containers_of(instance) == []
    await wait_for(lambda: _count_is(instance, 0, all_states=True), timeout=15)


async def test_stopping_the_server_stops_every_container(nursery, tmp_path, agent_image, misbehaving_image):
    settings = docker_settings(tmp_path, misbehaving_image)
    async with trio.open_nursery() as inner:
        server = await start_server(inner, settings)
        for name in ("s1", "s2", "s3"):
            await make_group(server.client, name)
            await server.client.post("/container/runs", json={"group": name, "prompt": "x"})
        instance = server.services.supervisor.instance_id
        await wait_for(lambda: _count_is(instance, 3))
        await server.client.aclose()
        inner.cancel_scope.cancel()
    assert containers_of(instance) == []  # stopped before the server returned
    await wait_for(lambda: _count_is(instance, 0, all_states=True), timeout=15)  # and removed (--rm)


async def _count_is(instance, n, all_states=False):
    return len(await trio.to_thread.run_sync(lambda: containers_of(instance, all_states=all_states))) == n


async def test_orphans_of_an_earlier_life_are_removed_at_start(nursery, tmp_path, misbehaving_image):
    settings = docker_settings(tmp_path)
    async with trio.open_nursery() as first:
        server = await start_server(first, settings)
        instance = server.services.supervisor.instance_id
        await server.client.aclose()
        first.cancel_scope.cancel()
    # What a server killed with -9 leaves behind: a labelled container nobody supervises.
    subprocess.run(["docker", "run", "-d", "--rm", "--name", f"nanoclaw-orphan-{instance}",
                    "--label", f"nanoclaw.instance={instance}", "--entrypoint", "sleep",
                    misbehaving_image, "600"], check=True, capture_output=True)
    assert containers_of(instance) == [f"nanoclaw-orphan-{instance}"]
    server = await start_server(nursery, settings)
    assert server.services.supervisor.instance_id == instance
    assert containers_of(instance, all_states=True) == []
    audit = (await server.client.get("/container/audit-log", params={"severity": "warning"})).json()["entries"]
    assert any("orphan" in e["message"] for e in audit)
    await server.client.aclose()


async def test_unauthorised_ipc_message_from_a_non_main_group_is_refused(docker_server, fake_llm):
    client = docker_server.client
    await make_group(client, "victim", chat_jids=["tg:1001"])
    await make_group(client, "sneaky", fake_llm, idleTimeoutSecs=5, chat_jids=["tg:2002"])
    fake_llm.queue(tool_reply("send_message", {"chatJid": "tg:1001", "text": "spam"}))
    run_id = (await client.post("/container/runs", json={"group": "sneaky", "prompt": "go"})).json()["runId"]
    await wait_run(client, run_id)
    entries = (await client.get("/container/audit-log",
                                params={"severity": "violation", "group": "sneaky"})).json()["entries"]
    assert any("may only message its own chats" in e["message"] for e in entries)
    errors = docker_server.settings.ipc_dir / "errors"
    quarantined = list(errors.iterdir())
    assert len(quarantined) == 1 and quarantined[0].name.startswith("sneaky-messages-")
    assert json.loads(quarantined[0].read_text())["text"] == "spam"


async def _running_of(instance):
    return len(await trio.to_thread.run_sync(containers_of, instance))


async def six_slow_runs(client, image: str, prefix: str, seconds: int) -> list[str]:
    """With max-concurrent 2, six groups each ask for a run whose container sleeps `seconds`
    before answering; returns the run ids, in order."""
    await client.put("/container/queue/max-concurrent", json={"maxConcurrent": 2})
    groups = [f"{prefix}{i}" for i in range(6)]
    for name in groups:
        await make_group(client, name, image=image, env=["MODE=slow", f"SLEEP={seconds}"])
    return [(await client.post("/container/runs", json={"group": g, "prompt": "x"})).json()["runId"] for g in groups]


async def test_max_concurrent_2_with_6_groups_never_runs_more_and_never_idles(docker_server, misbehaving_image):
    client = docker_server.client
    ids = await six_slow_runs(client, misbehaving_image, "c", 2)
    instance = docker_server.services.supervisor.instance_id
    seen = []
    with trio.fail_after(120):
        while True:
            counts = (await client.get("/container/queue/counts")).json()
            engine = await _running_of(instance)
            seen.append((counts["running"], counts["queued"], engine))
            if counts["total"] == 0:
                break
            await trio.sleep(0.05)
    assert max(engine for _, _, engine in seen) == 2
    assert max(running for running, _, _ in seen) == 2
    runs = [(await client.get(f"/container/runs/{i}")).json() for i in ids]
    assert [r["status"] for r in runs] == ["success"] * 6
    # FIFO: each group started in the order it was queued...
    starts = [_seconds(r["startedAt"]) for r in runs]
    assert starts == sorted(starts)
    # ...and the k-th start (from the third on) follows the (k-2)-th slot given back at once.
    ends = sorted(_seconds(r["finishedAt"]) for r in runs)
    assert all(0 <= starts[k] - ends[k - 2] < 0.5 for k in range(2, 6)), list(zip(starts, ends))


async def test_raising_the_limit_starts_waiting_groups_at_once(docker_server, misbehaving_image):
    client = docker_server.client
    await six_slow_runs(client, misbehaving_image, "r", 30)
    instance = docker_server.services.supervisor.instance_id
    await wait_for(lambda: _count_is(instance, 2))
    assert (await client.get("/container/queue/counts")).json() == {"queued": 4, "running": 2, "total": 6}
    raised = trio.current_time()
    assert (await client.put("/container/queue/max-concurrent", json={"maxConcurrent": 6})).status_code == 200
    await wait_for(lambda: _count_is(instance, 6), timeout=20)
    assert trio.current_time() - raised < 10
    assert (await client.get("/container/queue/counts")).json() == {"queued": 0, "running": 6, "total": 6}
