"""The host side of the agent against a real Docker engine: the agent config reaches the
container's stdin, usage reaches the run record, and on-demand runs close once answered."""
from __future__ import annotations

import json
import subprocess

import pytest
import trio

from docker_support import AGENT_TAG, agent_image, build_script_image, docker_engine  # noqa: F401  (fixtures)
from test_containers_docker import fake_llm, make_group, wait_run  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("docker_engine")

PROBE_TAG = AGENT_TAG.replace("nanoclaw-agent", "nanoclaw-stdin-probe")
PROBE = r"""
import json, sys
request = sys.stdin.readline()
open("/workspace/group/stdin.json", "w").write(request)
frame = {"status": "success", "result": "probed", "model": "probe-model",
         "usage": {"inputTokens": 7, "outputTokens": 3, "cacheReadTokens": 2, "cacheCreationTokens": 1}}
print("---NANOCLAW_OUTPUT_START---\n" + json.dumps(frame) + "\n---NANOCLAW_OUTPUT_END---", flush=True)
"""


@pytest.fixture(scope="session")
def probe_image(docker_engine, tmp_path_factory):
    """An image whose container keeps the stdin JSON in its group folder and answers once with usage."""
    yield build_script_image(docker_engine, tmp_path_factory.mktemp("probe"), PROBE_TAG, PROBE)
    subprocess.run([docker_engine, "rmi", "-f", PROBE_TAG], capture_output=True)


async def test_the_agent_config_reaches_the_containers_stdin(docker_server, probe_image):
    client = docker_server.client
    agent = {"provider": "openai", "model": "llama3.1", "mapping": "ollama", "maxSteps": 7,
             "mcpServers": {"web": {"url": "http://127.0.0.1:9/mcp"}}}
    await make_group(client, "probe", image=probe_image, agent=agent)
    run_id = (await client.post("/container/runs", json={"group": "probe", "prompt": "hi"})).json()["runId"]
    run = await wait_run(client, run_id, timeout=60)
    assert run["status"] == "success" and run["results"] == ["probed"]
    assert run["usage"] == {"inputTokens": 7, "outputTokens": 3, "cacheReadTokens": 2, "cacheCreationTokens": 1,
                            "totalTokens": 13}
    assert run["model"] == "probe-model"
    stdin = json.loads((docker_server.settings.groups_dir / "probe" / "stdin.json").read_text())
    assert stdin["prompt"] == "hi" and stdin["sessionId"] == run["sessionId"]
    assert stdin["agent"] == {"provider": "openai", "model": "llama3.1", "mapping": "ollama", "maxSteps": 7,
                              "maxTokens": 8192, "maxContextTokens": 100_000, "vision": True,
                              "mcpServers": {"web": {"url": "http://127.0.0.1:9/mcp"}}}


async def test_two_on_demand_runs_in_a_row_close_once_answered(docker_server, fake_llm):
    client = docker_server.client
    await make_group(client, "quick", fake_llm, idleTimeoutSecs=300)
    started = trio.current_time()
    ids = [(await client.post("/container/runs", json={"group": "quick", "prompt": f"say {i}"})).json()["runId"]
           for i in range(2)]
    runs = [await wait_run(client, run_id, timeout=60) for run_id in ids]
    elapsed = trio.current_time() - started
    assert [r["status"] for r in runs] == ["success", "success"]
    assert [r["exitCode"] for r in runs] == [0, 0]  # closed, not stopped
    assert elapsed < 15  # a few seconds, far from one idle timeout (300 s)
    assert runs[0]["sessionId"] != runs[1]["sessionId"]
