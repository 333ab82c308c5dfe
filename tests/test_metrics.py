"""GET /metrics: Prometheus text format, guarded by the API key, moving with real runs."""
from __future__ import annotations

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from conftest import make_settings, start_server
from fake_runtime import FakeRuntime
from nanoclaw.clock import Clock

START = 1_800_000_000.0


async def inline(fn, *args):
    return fn(*args)


def samples(text: str) -> dict:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


@pytest.fixture
async def fake_server(nursery, tmp_path):
    runtime = FakeRuntime(nursery)
    return await start_server(nursery, make_settings(tmp_path), clock=Clock(start=START), offload=inline,
                              runtime=runtime)


async def test_metrics_parse_and_move_when_runs_happen(fake_server, autojump_clock):
    client = fake_server.client
    url = fake_server.url + "/metrics"
    before = samples((await client.get(url)).text)
    assert before[("nanoclaw_running_containers", ())] == 0
    assert before[("nanoclaw_max_concurrent", ())] == 5
    assert not any(name == "nanoclaw_runs_total" for name, _ in before)
    await client.post("/container/namespaces", json={"name": "g"})
    ids = [(await client.post("/container/runs", json={"group": "g", "prompt": p})).json()["runId"]
           for p in ("once 10", "fail", "once 5")]
    await trio.sleep(2)
    during = samples((await client.get(url)).text)
    assert during[("nanoclaw_running_containers", ())] == 1
    with trio.fail_after(300):
        while (await client.get(f"/container/runs/{ids[-1]}")).json()["status"] in {"queued", "running"}:
            await trio.sleep(1)
    after = samples((await client.get(url)).text)
    assert after[("nanoclaw_runs_total", (("group", "g"), ("kind", "adhoc"), ("outcome", "success")))] == 2
    assert after[("nanoclaw_runs_total", (("group", "g"), ("kind", "adhoc"), ("outcome", "error")))] == 1
    assert after[("nanoclaw_container_lifetime_seconds_count", (("kind", "adhoc"),))] == 3
    assert after[("nanoclaw_container_lifetime_seconds_sum", (("kind", "adhoc"),))] == pytest.approx(15, abs=1)
    assert after[("nanoclaw_turn_duration_seconds_count", (("kind", "adhoc"),))] == 2
    assert after[("nanoclaw_running_containers", ())] == 0
    assert ("nanoclaw_event_loop_lag_seconds", ()) in after
    assert ("nanoclaw_channel_messages_total", (("channel", "telegram"), ("direction", "in"))) in after


async def test_tokens_are_counted_from_the_finished_event_usage(fake_server):
    from nanoclaw.supervisor import RunEvent

    usage = {"inputTokens": 120, "outputTokens": 30, "cacheReadTokens": 0, "cacheCreationTokens": "x"}
    fake_server.services.metrics._on_run(RunEvent("finished", "r1", "g", "adhoc", None,
                                                  {"status": "success", "usage": usage, "model": "m-1"}))
    text = (await fake_server.client.get(fake_server.url + "/metrics")).text
    got = samples(text)
    assert got[("nanoclaw_tokens_total", (("group", "g"), ("model", "m-1"), ("type", "input")))] == 120
    assert got[("nanoclaw_tokens_total", (("group", "g"), ("model", "m-1"), ("type", "output")))] == 30
    assert not any(k[0] == "nanoclaw_tokens_total" and ("type", "cache_creation") in k[1] for k in got)


async def test_metrics_need_the_key_as_x_api_key_or_bearer(tmp_path, nursery):
    from serverproc import create_api_key

    _, key = await create_api_key(tmp_path)
    server = await start_server(nursery, make_settings(tmp_path))
    url = server.url + "/metrics"
    r = await server.client.get(url)
    assert r.status_code == 401 and r.json()["error"]["code"]
    assert (await server.client.get(url, headers={"Authorization": "Bearer nope"})).status_code == 401
    r = await server.client.get(url, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert (await server.client.get(url, headers={"X-API-Key": key})).status_code == 200
