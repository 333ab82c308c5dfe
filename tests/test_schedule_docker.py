"""A schedule's run in a real container (Docker engine, real agent image, fake LLM on loopback)."""
from __future__ import annotations

import datetime as dt

import pytest
import trio

from docker_support import agent_image, docker_engine  # noqa: F401  (fixtures)
from fakes.anthropic import serve_fake_anthropic

pytestmark = pytest.mark.usefixtures("docker_engine")


async def test_a_schedule_run_is_logged_and_linked_to_its_run_history_entry(docker_server, nursery):
    client = docker_server.client
    fake_llm = await nursery.start(serve_fake_anthropic)
    env = [f"ANTHROPIC_BASE_URL={fake_llm.url}", "ANTHROPIC_API_KEY=sk-test"]
    r = await client.post("/container/namespaces",
                          json={"name": "daily", "containerConfig": {"env": env, "idleTimeoutSecs": 5}})
    assert r.status_code == 201, r.text
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    r = await client.post("/container/schedules", json={
        "name": "sum", "group": "daily", "prompt": "what is 2+2?", "schedule": {"type": "once", "value": now}})
    assert r.status_code == 201, r.text
    schedule_id = r.json()["id"]

    # The container runs in real time: poll the log (bounded) until the run has finished.
    with trio.fail_after(90):
        while True:
            logs = (await client.get(f"/container/schedules/{schedule_id}/logs")).json()["logs"]
            if logs and logs[0]["status"] != "running":
                break
            await trio.sleep(0.1)

    [entry] = logs
    assert (entry["status"], entry["result"]) == ("success", "2+2 = 4"), entry
    run = (await client.get(f"/container/runs/{entry['runId']}")).json()
    assert (run["kind"], run["scheduleId"], run["status"], run["results"]) == (
        "task", schedule_id, "success", ["2+2 = 4"])
    history = (await client.get("/container/run-history", params={"group": "daily"})).json()["runs"]
    assert [h["runId"] for h in history] == [entry["runId"]]
    schedule = (await client.get(f"/container/schedules/{schedule_id}")).json()
    assert (schedule["status"], schedule["lastResult"]) == ("completed", "2+2 = 4")
